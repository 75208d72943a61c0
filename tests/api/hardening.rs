//! Guards found missing in review, each as a story: wrong current factors and current
//! passwords count and are limited; the SMS cap holds under concurrency; a dead session
//! cannot replay a saved response; a taken address leaves no key behind.

use std::sync::Arc;

use chrono::Duration;
use reqwest::Method;
use serde_json::json;
use warden_commands::otp;
use warden_commands::Clock;

use crate::helpers::*;

async fn totp_user(app: &TestApp) -> (String, String, otp::TotpSecret) {
    let (email, token) = app.owner().await;
    let (secret, _) = enable_totp(app, &token).await;
    (email, token, secret)
}

async fn event_types(app: &TestApp) -> Vec<String> {
    app.state
        .store
        .read_all(0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_type)
        .collect()
}

#[tokio::test]
async fn wrong_current_factors_are_recorded_and_limited() {
    let app = spawn_app().await;
    let (_, token, secret) = totp_user(&app).await;
    for _ in 0..5 {
        let r = app
            .post(
                "/v2/users/me/two_factor/backup_codes",
                Some(&token),
                json!({ "code": "000000" }),
            )
            .await;
        assert_eq!((r.status.as_u16(), r.code()), (422, "invalid_code"));
    }
    let failures = event_types(&app)
        .await
        .iter()
        .filter(|t| *t == "user.two_factor_step_up_failed")
        .count();
    assert_eq!(failures, 5, "each wrong factor is an event");
    let right = otp::totp_at(&secret, otp::totp_step(app.clock.now()));
    let r = app
        .post(
            "/v2/users/me/two_factor/backup_codes",
            Some(&token),
            json!({ "code": right }),
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (429, "too_many_requests"),
        "even the right code waits"
    );
    let r = app
        .post(
            "/v2/users/me/two_factor/enrollments",
            Some(&token),
            json!({ "method": "totp", "current_code": right }),
        )
        .await;
    assert_eq!(
        r.status, 429,
        "every change that needs the factor is limited"
    );
    app.clock.advance(Duration::minutes(15));
    let right = otp::totp_at(&secret, otp::totp_step(app.clock.now()));
    let r = app
        .post(
            "/v2/users/me/two_factor/backup_codes",
            Some(&token),
            json!({ "code": right }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
}

#[tokio::test]
async fn wrong_current_passwords_count_like_failed_sign_ins() {
    let app = spawn_app().await;
    let (email, token) = app.owner().await;
    for _ in 0..5 {
        let r = app
            .post("/v2/users/me/actions/change_password", Some(&token),
                json!({ "current_password": "guessing guessing guessing", "new_password": "a brand new long passphrase" }))
            .await;
        assert_eq!(r.status, 403);
    }
    let r = app
        .post(
            "/v2/users/me/actions/change_email",
            Some(&token),
            json!({ "new_email": "x@example.com", "current_password": PASSWORD }),
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (429, "too_many_login_attempts")
    );
    assert_eq!(
        app.sign_in_with(&email, PASSWORD).await.status,
        429,
        "one throttle for the account"
    );
}

#[tokio::test]
async fn the_daily_sms_cap_holds_under_concurrent_requests() {
    let (app, sink) = spawn_app_with_sink(Backend::Postgres).await;
    let app = Arc::new(app);
    let (_, token) = app.owner().await;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let app = Arc::clone(&app);
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            app.post(
                "/v2/users/me/two_factor/enrollments",
                Some(&token),
                json!({ "method": "sms", "phone_number": "+13035550199" }),
            )
            .await
            .status
            .as_u16()
        }));
    }
    let mut accepted = 0;
    for t in tasks {
        let status = t.await.unwrap();
        assert!(matches!(status, 201 | 409 | 429), "{status}");
        accepted += usize::from(status == 201);
    }
    assert!(accepted <= 10);
    assert_eq!(sink.all().len(), accepted, "only accepted sends went out");
}

#[tokio::test]
async fn a_dead_session_cannot_replay_a_saved_response() {
    let app = spawn_app().await;
    let (_, token) = app.owner().await;
    let auth = format!("Bearer {token}");
    let headers = [
        ("idempotency-key", "enroll-1"),
        ("authorization", auth.as_str()),
    ];
    let body = json!({ "method": "totp" }).to_string();
    let first = app
        .raw(
            Method::POST,
            "/v2/users/me/two_factor/enrollments",
            &headers,
            &body,
        )
        .await;
    assert_eq!(first.status, 201, "{}", first.text);
    assert_eq!(
        app.request(Method::DELETE, "/v2/sessions/current", Some(&token), None)
            .await
            .status,
        204
    );
    let replay = app
        .raw(
            Method::POST,
            "/v2/users/me/two_factor/enrollments",
            &headers,
            &body,
        )
        .await;
    assert_eq!(replay.status, 401);
    assert!(
        !replay.text.contains("otpauth"),
        "the secret is not shown again"
    );
}

#[tokio::test]
async fn a_taken_address_leaves_no_key_behind_and_sms_users_are_offered_codes() {
    let (app, sink) = spawn_app_with_sink(Backend::Sqlite).await;
    let (email, token) = app.owner().await;
    let keys = || async {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM data_keys")
            .fetch_one(&app.state.db.pool)
            .await
            .unwrap()
    };
    let before = keys().await;
    assert_eq!(app.sign_up(&email).await.status, 409);
    assert_eq!(keys().await, before);

    let r = app
        .post(
            "/v2/users/me/two_factor/enrollments",
            Some(&token),
            json!({ "method": "sms", "phone_number": "+13035550123" }),
        )
        .await;
    let id = r.data()["enrollment_id"].as_str().unwrap().to_owned();
    let r = app.confirm_enrollment(&token, &id, &sink.last_code()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = app.sign_in_with(&email, PASSWORD).await;
    assert_eq!(r.data()["methods"], json!(["sms", "call", "backup_code"]));
}
