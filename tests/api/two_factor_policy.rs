//! The organization's two-factor policy: set-up required at sign-in (skippable until the
//! deadline, enrollment-only after it), and 2FA that cannot be turned off unless allowed.

use chrono::Duration;
use reqwest::Method;
use serde_json::json;
use warden_commands::otp;
use warden_commands::Clock;

use crate::helpers::*;

async fn set_policy(app: &TestApp, token: &str, policy: serde_json::Value) {
    let r = app
        .request(
            Method::PATCH,
            "/v2/organization",
            Some(token),
            Some(json!({ "two_factor_policy": policy })),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn members_without_2fa_must_set_it_up_skippable_until_the_deadline() {
    let app = spawn_app().await;
    let (email, token) = app.owner().await;
    assert_eq!(
        app.sign_in_with(&email, PASSWORD).await.data()["two_factor_setup_required"],
        false
    );
    let deadline = app.clock.now() + Duration::days(7);
    set_policy(
        &app,
        &token,
        json!({ "required": true, "enforce_after": deadline.to_rfc3339() }),
    )
    .await;
    let org = app.get("/v2/organization", &token).await;
    assert_eq!(org.data()["two_factor_policy"]["required"], true);

    // Before the deadline: a full session, with the flag.
    let r = app.sign_in_with(&email, PASSWORD).await;
    assert_eq!(r.data()["two_factor_setup_required"], true);
    let skipping = r.data()["token"].as_str().unwrap().to_owned();
    assert_eq!(app.get("/v2/organization", &skipping).await.status, 200);

    // After it: the session may only enroll.
    app.clock.advance(Duration::days(8));
    let r = app.sign_in_with(&email, PASSWORD).await;
    assert_eq!(r.data()["two_factor_setup_required"], true);
    let limited = r.data()["token"].as_str().unwrap().to_owned();
    let r = app.get("/v2/organization", &limited).await;
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (403, "two_factor_setup_required")
    );
    assert_eq!(app.get("/v2/users/me", &limited).await.status, 200);
    let _ = enable_totp(&app, &limited).await;
    // With 2FA on, sign-in asks for the second factor and no set-up.
    let r = app.sign_in_with(&email, PASSWORD).await;
    assert_eq!(r.data()["record_type"], "two_factor_challenge");
}

#[tokio::test]
async fn two_factor_cannot_be_disabled_unless_the_policy_allows_it() {
    let app = spawn_app().await;
    let (_, token) = app.owner().await;
    let (secret, _) = enable_totp(&app, &token).await;
    let code = || otp::totp_at(&secret, otp::totp_step(app.clock.now()));
    let r = app
        .request(
            Method::DELETE,
            "/v2/users/me/two_factor",
            Some(&token),
            Some(json!({ "code": code() })),
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (403, "two_factor_cannot_be_disabled")
    );
    let r = app
        .request(
            Method::DELETE,
            "/v2/users/me/two_factor",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (403, "two_factor_cannot_be_disabled")
    );

    set_policy(
        &app,
        &token,
        json!({ "required": false, "allow_disable": true }),
    )
    .await;
    let before = app.event_count().await;
    let r = app
        .request(
            Method::DELETE,
            "/v2/users/me/two_factor",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.pointer()),
        (422, "/code"),
        "a current factor is needed"
    );
    let r = app
        .request(
            Method::DELETE,
            "/v2/users/me/two_factor",
            Some(&token),
            Some(json!({ "code": "000000" })),
        )
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (422, "invalid_code"));
    // The wrong code is recorded (it counts toward the limits); nothing else is written.
    assert_eq!(
        app.event_types_after(before).await,
        ["user.two_factor_step_up_failed"]
    );
    let r = app
        .request(
            Method::DELETE,
            "/v2/users/me/two_factor",
            Some(&token),
            Some(json!({ "code": code() })),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let status = app.get("/v2/users/me/two_factor", &token).await;
    assert_eq!(
        (
            status.data()["enabled"].as_bool(),
            status.data()["backup_codes_remaining"].as_i64()
        ),
        (Some(false), Some(0))
    );
}

#[tokio::test]
async fn a_bad_policy_is_refused_and_writes_nothing() {
    let app = spawn_app().await;
    let (_, token) = app.owner().await;
    let before = app.event_count().await;
    let r = app
        .request(Method::PATCH, "/v2/organization", Some(&token),
            Some(json!({ "two_factor_policy": { "required": true, "enforce_after": "next tuesday" } })))
        .await;
    assert_eq!(
        (r.status.as_u16(), r.pointer()),
        (422, "/two_factor_policy/enforce_after")
    );
    let r = app
        .request(
            Method::PATCH,
            "/v2/organization",
            Some(&token),
            Some(json!({ "two_factor_policy": { "required": "yes" } })),
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.pointer()),
        (422, "/two_factor_policy/required")
    );
    assert_eq!(app.event_count().await, before);
}
