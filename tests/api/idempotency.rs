//! `Idempotency-Key`: one effect per key, the first answer replayed, a new body refused.

use serde_json::json;

use crate::helpers::*;

fn sign_up_body(email: &str) -> String {
    json!({ "email": email, "password": PASSWORD, "first_name": "A", "last_name": "B",
            "billing_currency": "USD" })
    .to_string()
}

#[tokio::test]
async fn the_same_key_and_body_replays_the_first_answer_and_writes_nothing() {
    let app = spawn_app().await;
    let key = [("idempotency-key", "signup-1")];
    let first = app
        .raw(
            reqwest::Method::POST,
            "/v2/accounts",
            &key,
            &sign_up_body("i@example.com"),
        )
        .await;
    assert_eq!(first.status, 201, "{}", first.text);
    let after_first = app.event_count().await;
    let again = app
        .raw(
            reqwest::Method::POST,
            "/v2/accounts",
            &key,
            &sign_up_body("i@example.com"),
        )
        .await;
    assert_eq!(again.status, 201);
    assert_eq!(again.text, first.text, "byte-identical replay");
    assert_eq!(app.event_count().await, after_first, "nothing written");

    let other = app
        .raw(
            reqwest::Method::POST,
            "/v2/accounts",
            &key,
            &sign_up_body("j@example.com"),
        )
        .await;
    assert_eq!(other.status, 422);
    assert_eq!(other.code(), "idempotency_key_reused");
    assert_eq!(app.event_count().await, after_first);
}

#[tokio::test]
async fn a_4xx_answer_is_replayed_too_and_keys_are_validated() {
    let app = spawn_app().await;
    let key = [("idempotency-key", "bad-1")];
    let first = app
        .raw(
            reqwest::Method::POST,
            "/v2/accounts",
            &key,
            "{\"email\":\"x\"}",
        )
        .await;
    assert_eq!(first.status, 422);
    let again = app
        .raw(
            reqwest::Method::POST,
            "/v2/accounts",
            &key,
            "{\"email\":\"x\"}",
        )
        .await;
    assert_eq!((again.status, again.text), (first.status, first.text));

    let long = "k".repeat(256);
    let r = app
        .raw(
            reqwest::Method::POST,
            "/v2/accounts",
            &[("idempotency-key", &long)],
            &sign_up_body("k@example.com"),
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (400, "invalid_idempotency_key")
    );
}

#[tokio::test]
async fn keys_of_different_callers_are_independent() {
    let app = spawn_app().await;
    let (_, a) = app.owner().await;
    let (_, b) = app.owner().await;
    let body = json!({ "passphrase": "whatever it is", }).to_string();
    let auth_a = format!("Bearer {a}");
    let auth_b = format!("Bearer {b}");
    let path = "/v2/organization/security_passphrase/actions/verify";
    let r1 = app
        .raw(
            reqwest::Method::POST,
            path,
            &[("idempotency-key", "same"), ("authorization", &auth_a)],
            &body,
        )
        .await;
    let r2 = app
        .raw(
            reqwest::Method::POST,
            path,
            &[("idempotency-key", "same"), ("authorization", &auth_b)],
            &body,
        )
        .await;
    assert_eq!(r1.status, 200, "{}", r1.text);
    assert_eq!(r2.status, 200, "{}", r2.text);
    assert!(r2.headers.get("idempotent-replayed").is_none());
}

/// A 5xx after the effect committed (here the code's reservation committed, then the sender
/// refused the message) must not leave the key "in use" for its whole life: every retry gets
/// one final answer saying the request took effect, and nothing runs twice.
#[tokio::test]
async fn a_5xx_after_the_effect_committed_gets_a_final_committed_answer() {
    // A receiver that answers 404 to every message: each send is refused at once.
    let sink = MessageSink::start().await;
    let mut settings = warden::config::Settings::for_test(temp_dir());
    settings.sender = warden::config::SenderKind::Http;
    settings.sender_url = Some(sink.url.replace("/messages", "/nowhere"));
    let app = spawn_with(settings).await;
    let (_, token) = app.owner().await;
    let auth = format!("Bearer {token}");
    let headers = [
        ("idempotency-key", "enroll-sms-1"),
        ("authorization", auth.as_str()),
    ];
    let path = "/v2/users/me/two_factor/enrollments";
    let body = json!({ "method": "sms", "phone_number": "+13035550147" }).to_string();
    let before = app.event_count().await;
    let first = app.raw(reqwest::Method::POST, path, &headers, &body).await;
    assert_eq!(first.status, 503, "{}", first.text);
    let after_first = app.event_count().await;
    assert!(
        after_first > before,
        "the reservation committed before the send"
    );

    for _ in 0..2 {
        let again = app.raw(reqwest::Method::POST, path, &headers, &body).await;
        assert_eq!(
            (again.status.as_u16(), again.code()),
            (409, "idempotency_key_committed"),
            "{}",
            again.text
        );
        assert_eq!(
            again
                .headers
                .get("idempotent-replayed")
                .and_then(|v| v.to_str().ok()),
            Some("true")
        );
        assert_eq!(app.event_count().await, after_first, "nothing ran twice");
    }
    assert!(sink.all().is_empty());
}
