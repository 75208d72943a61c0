//! The auditors' view: a stream's envelopes, its state as of any instant, its hash chain.

use chrono::Duration;
use reqwest::Method;
use serde_json::json;
use warden_commands::{otp, Clock};

use crate::helpers::*;

const PHONE: &str = "+13035550147";

#[tokio::test]
async fn state_as_of_before_between_and_after_enabling_2fa_and_changing_method() {
    let (app, sink) = spawn_app_with_sink(Backend::Sqlite).await;
    let (_, token) = app.owner().await;
    let user_id = app.get("/v2/users/me", &token).await.data()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let stream = format!("user-{user_id}");

    let before = app.clock.now();
    app.clock.advance(Duration::seconds(10));
    let (secret, _) = enable_totp(&app, &token).await;
    let between = app.clock.now();
    app.clock.advance(Duration::seconds(10));
    let code = otp::totp_at(&secret, otp::totp_step(app.clock.now()));
    let r = app
        .post(
            "/v2/users/me/two_factor/enrollments",
            Some(&token),
            json!({ "method": "sms", "phone_number": PHONE, "current_code": code }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.data()["enrollment_id"].as_str().unwrap().to_owned();
    let r = app
        .post(
            &format!("/v2/users/me/two_factor/enrollments/{id}/actions/confirm"),
            Some(&token),
            json!({ "code": sink.last_code() }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    app.clock.advance(Duration::seconds(1));
    let after = app.clock.now();

    let state_at = |t: chrono::DateTime<chrono::Utc>| {
        let path = format!(
            "/v2/audit/streams/{stream}/state?as_of={}",
            t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                .replace('+', "%2B")
        );
        let app = &app;
        let token = token.clone();
        async move {
            let r = app.get(&path, &token).await;
            assert_eq!(r.status, 200, "{}", r.text);
            r
        }
    };
    let r = state_at(before).await;
    assert_eq!(
        r.data()["state"]["two_factor"]["enabled"],
        false,
        "{}",
        r.text
    );
    let r = state_at(between).await;
    assert_eq!(
        r.data()["state"]["two_factor"]["enabled"],
        true,
        "{}",
        r.text
    );
    assert_eq!(r.data()["state"]["two_factor"]["method"], "totp");
    let r = state_at(after).await;
    assert_eq!(
        r.data()["state"]["two_factor"]["method"],
        "sms",
        "{}",
        r.text
    );
    assert!(r.data()["version"].as_i64().unwrap() > 3);
    // Sealed values and digests are redacted in replayed state.
    assert_eq!(r.data()["state"]["email"], "<sealed>");
    assert!(!r.text.contains("ciphertext"), "{}", r.text);

    // The raw envelopes keep sealed fields sealed.
    let r = app
        .get(
            &format!("/v2/audit/streams/{stream}/events?page[size]=250"),
            &token,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let first = &r.data()[0];
    assert_eq!(first["event_type"], "user.registered");
    assert_eq!(first["version"], 1);
    assert!(first["payload"]["email"]["ciphertext"].is_string());
    assert!(first["hash"].is_string());
    assert!(!r.text.contains(PHONE));

    // Bad input and other tenants.
    let r = app
        .get(
            &format!("/v2/audit/streams/{stream}/state?as_of=yesterday"),
            &token,
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    let (_, other) = app.owner().await;
    for what in ["events", "state", "verify"] {
        let r = app
            .get(&format!("/v2/audit/streams/{stream}/{what}"), &other)
            .await;
        assert_eq!(r.status, 404, "{what}: {}", r.text);
    }
    let r = app
        .get(
            "/v2/audit/streams/user-00000000-0000-0000-0000-000000000000/state",
            &token,
        )
        .await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn verify_over_http_names_the_tampered_version() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let app = spawn_app_on(backend).await;
        let (_, token) = app.owner().await;
        let r = app
            .request(
                Method::PATCH,
                "/v2/users/me",
                Some(&token),
                Some(json!({ "first_name": "Ada" })),
            )
            .await;
        assert_eq!(r.status, 200);
        let user_id = app.get("/v2/users/me", &token).await.data()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let stream = format!("user-{user_id}");
        let path = format!("/v2/audit/streams/{stream}/verify");
        let r = app.get(&path, &token).await;
        assert_eq!(r.data()["valid"], true, "{}", r.text);
        sqlx::query(
            "UPDATE events SET payload = REPLACE(payload, 'session_id', 'sessiom_id') \
             WHERE stream_id = $1 AND version = 2",
        )
        .bind(&stream)
        .execute(&app.state.db.pool)
        .await
        .unwrap();
        let r = app.get(&path, &token).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.data()["valid"], false, "{}", r.text);
        assert_eq!(r.data()["first_broken_version"], 2);
    }
}
