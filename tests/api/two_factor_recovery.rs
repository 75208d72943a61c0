//! Lost-device recovery: an owner with no factor and no backup code proves the
//! organization's security passphrase plus a code sent to their email; the reset is an
//! event, they are told by email, and they must enroll again.

use reqwest::Method;
use serde_json::json;

use crate::helpers::*;

const PASSPHRASE: &str = "correct horse battery staple, twice";

#[tokio::test]
async fn an_owner_recovers_with_the_passphrase_and_an_email_code() {
    let (app, sink) = spawn_app_with_sink(Backend::Sqlite).await;
    let (email, token) = app.owner().await;
    let r = app
        .request(
            Method::PUT,
            "/v2/organization/security_passphrase",
            Some(&token),
            Some(json!({ "passphrase": PASSPHRASE, "current_password": PASSWORD })),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    enable_totp(&app, &token).await;
    let bound = sink.all().last().cloned().unwrap();
    assert_eq!(bound["purpose"], "notice", "binding a factor is announced");
    assert_eq!(bound["to"], email.as_str());

    // The phone is gone: a challenge the owner cannot answer.
    let r = app.sign_in_with(&email, PASSWORD).await;
    assert_eq!(r.data()["record_type"], "two_factor_challenge");
    let challenge = r.data()["challenge_id"].as_str().unwrap().to_owned();
    let action = |a: &str| format!("/v2/two_factor_challenges/{challenge}/actions/{a}");
    let r = app
        .post(&action("send_recovery_code"), None, json!({}))
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let message = sink.all().last().cloned().unwrap();
    assert_eq!(message["channel"], "email");
    assert_eq!(message["to"], email.as_str());
    assert_eq!(message["purpose"], "two_factor_recovery");
    let code = message["code"].as_str().unwrap().to_owned();

    // Either proof wrong: refused and counted.
    let before = app.event_count().await;
    for body in [
        json!({ "security_passphrase": "not the passphrase at all", "email_code": code }),
        json!({ "security_passphrase": PASSPHRASE, "email_code": "000000" }),
    ] {
        let r = app.post(&action("recover"), None, body).await;
        assert_eq!(r.status, 422, "{}", r.text);
        assert_eq!(r.code(), "invalid_code");
    }
    let written = app.event_types_after(before).await;
    assert_eq!(
        written
            .iter()
            .filter(|t| *t == "user.two_factor_challenge_failed")
            .count(),
        2,
        "{written:?}"
    );

    // Both right: the factor is reset and the session may only enroll.
    let r = app
        .post(
            &action("recover"),
            None,
            json!({ "security_passphrase": PASSPHRASE, "email_code": code }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.data()["two_factor_setup_required"], true);
    let session = r.data()["token"].as_str().unwrap().to_owned();
    assert_eq!(
        app.get("/v2/organization", &session).await.code(),
        "two_factor_setup_required"
    );
    let r = app.get("/v2/users/me/two_factor", &session).await;
    assert_eq!(r.data()["enabled"], false, "{}", r.text);
    let notice = sink.all().last().cloned().unwrap();
    assert_eq!(notice["purpose"], "notice");
    assert_eq!(notice["to"], email.as_str());
    let reset = app
        .state
        .store
        .read_all(0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.event_type == "user.two_factor_reset")
        .expect("the reset is an event");
    assert_eq!(reset.payload["reason"], "lost_device");
    assert_eq!(reset.metadata.actor.as_deref(), Some("anonymous"));
    // The client's address is recorded, sealed for the person (never in plaintext).
    assert!(reset.metadata.ip.is_none());
    assert!(reset
        .metadata
        .client
        .as_ref()
        .is_some_and(|c| c.key_id.starts_with("user-")));

    // The challenge is spent; the next sign-in must enroll again.
    let r = app
        .post(
            &action("recover"),
            None,
            json!({ "security_passphrase": PASSPHRASE, "email_code": code }),
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
    let r = app.sign_in_with(&email, PASSWORD).await;
    assert_eq!(r.data()["record_type"], "session");
    assert_eq!(r.data()["two_factor_setup_required"], true);
}

#[tokio::test]
async fn sub_users_cannot_recover_by_themselves() {
    let (app, sink) = spawn_app_with_sink(Backend::Sqlite).await;
    let (_, owner) = app.owner().await;
    let (_, email, sub) = crate::members::sub_user(&app, &sink, &owner, &[]).await;
    enable_totp(&app, &sub).await;
    let r = app
        .sign_in_with(&email, "a sub-user's own long passphrase")
        .await;
    let challenge = r.data()["challenge_id"].as_str().unwrap().to_owned();
    let before = app.event_count().await;
    let r = app
        .post(
            &format!("/v2/two_factor_challenges/{challenge}/actions/send_recovery_code"),
            None,
            json!({}),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(r.code(), "recovery_not_allowed");
    assert_eq!(app.event_count().await, before);
}
