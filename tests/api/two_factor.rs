//! Two-factor authentication over HTTP: enroll TOTP, confirm, sign in with a second factor;
//! every code is one-time, even under concurrency; nothing secret is stored in the clear.

use std::sync::Arc;

use chrono::Duration;
use reqwest::Method;
use serde_json::json;
use warden_commands::otp;
use warden_commands::Clock;

use crate::helpers::*;

struct Enrolled {
    email: String,
    token: String,
    secret: otp::TotpSecret,
    backup_codes: Vec<String>,
}

fn code_now(app: &TestApp, secret: &otp::TotpSecret) -> String {
    otp::totp_at(secret, otp::totp_step(app.clock.now()))
}

/// Signs up, enrolls TOTP and confirms it; the clock then moves to the next step.
async fn enrolled(app: &TestApp) -> Enrolled {
    let (email, token) = app.owner().await;
    let r = app
        .post(
            "/v2/users/me/two_factor/enrollments",
            Some(&token),
            json!({ "method": "totp" }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let data = r.data();
    let secret_b32 = data["secret"].as_str().unwrap();
    let bytes = base32::decode(base32::Alphabet::Rfc4648 { padding: false }, secret_b32).unwrap();
    assert_eq!(bytes.len(), 20, "160-bit secret");
    assert!(data["otpauth_uri"]
        .as_str()
        .unwrap()
        .starts_with("otpauth://totp/Warden:"));
    assert!(data["qr_code_svg"].as_str().unwrap().contains("<svg"));
    assert!(!data["qr_code_png"].as_str().unwrap().is_empty());
    let secret = otp::TotpSecret::from_bytes(bytes).unwrap();
    let id = data["enrollment_id"].as_str().unwrap().to_owned();

    let path = format!("/v2/users/me/two_factor/enrollments/{id}/actions/confirm");
    let wrong = app
        .post(&path, Some(&token), json!({ "code": "000000" }))
        .await;
    assert_eq!((wrong.status.as_u16(), wrong.code()), (422, "invalid_code"));
    let r = app
        .post(
            &path,
            Some(&token),
            json!({ "code": code_now(app, &secret) }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let backup_codes: Vec<String> = r.data()["backup_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(backup_codes.len(), 10);
    app.clock.advance(Duration::seconds(30));
    Enrolled {
        email,
        token,
        secret,
        backup_codes,
    }
}

async fn challenge(app: &TestApp, email: &str) -> String {
    let r = app.sign_in_with(email, PASSWORD).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        r.data()["record_type"],
        "two_factor_challenge",
        "no session before the second factor"
    );
    assert!(r.data().get("token").is_none());
    r.data()["challenge_id"].as_str().unwrap().to_owned()
}

async fn answer(app: &TestApp, challenge_id: &str, body: serde_json::Value) -> Reply {
    app.post(
        &format!("/v2/two_factor_challenges/{challenge_id}/actions/verify"),
        None,
        body,
    )
    .await
}

#[tokio::test]
async fn enroll_confirm_sign_out_and_sign_in_with_a_second_factor() {
    let app = spawn_app().await;
    let user = enrolled(&app).await;
    let status = app.get("/v2/users/me/two_factor", &user.token).await;
    assert_eq!(status.data()["enabled"], true);
    assert_eq!(status.data()["method"], "totp");
    assert_eq!(status.data()["backup_codes_remaining"], 10);
    assert_eq!(
        app.request(
            Method::DELETE,
            "/v2/sessions/current",
            Some(&user.token),
            None
        )
        .await
        .status,
        204
    );

    let id = challenge(&app, &user.email).await;
    let code = code_now(&app, &user.secret);
    let r = answer(&app, &id, json!({ "code": code })).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let token = r.data()["token"].as_str().unwrap().to_owned();
    assert_eq!(app.get("/v2/users/me", &token).await.status, 200);

    // The same code on a new challenge: refused, and recorded as a failure.
    let id = challenge(&app, &user.email).await;
    let r = answer(&app, &id, json!({ "code": code })).await;
    assert_eq!((r.status.as_u16(), r.code()), (422, "invalid_code"));
    // The next step's code works.
    app.clock.advance(Duration::seconds(30));
    assert_eq!(
        answer(&app, &id, json!({ "code": code_now(&app, &user.secret) }))
            .await
            .status,
        201
    );
}

#[tokio::test]
async fn each_backup_code_works_exactly_once() {
    let app = spawn_app().await;
    let user = enrolled(&app).await;
    for (i, code) in user.backup_codes.iter().take(3).enumerate() {
        let id = challenge(&app, &user.email).await;
        let r = answer(
            &app,
            &id,
            json!({ "backup_code": code.to_uppercase().replace('-', " ") }),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let token = r.data()["token"].as_str().unwrap();
        let left = app.get("/v2/users/me/two_factor", token).await;
        assert_eq!(left.data()["backup_codes_remaining"], 9 - i as i64);
        let again = challenge(&app, &user.email).await;
        let r = answer(&app, &again, json!({ "backup_code": code })).await;
        assert_eq!(
            (r.status.as_u16(), r.code()),
            (422, "invalid_code"),
            "a used backup code never works again"
        );
    }
    // Regenerating with a current factor voids the old set.
    let r = app
        .post(
            "/v2/users/me/two_factor/backup_codes",
            Some(&user.token),
            json!({ "code": code_now(&app, &user.secret) }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let fresh = r.data()["backup_codes"][0].as_str().unwrap().to_owned();
    let id = challenge(&app, &user.email).await;
    assert_eq!(
        answer(&app, &id, json!({ "backup_code": user.backup_codes[5] }))
            .await
            .status,
        422
    );
    assert_eq!(
        answer(&app, &id, json!({ "backup_code": fresh }))
            .await
            .status,
        201
    );
}

#[tokio::test]
async fn a_challenge_allows_five_wrong_codes_and_expires_after_ten_minutes() {
    let app = spawn_app().await;
    let user = enrolled(&app).await;
    let id = challenge(&app, &user.email).await;
    for _ in 0..5 {
        assert_eq!(
            answer(&app, &id, json!({ "code": "123456" })).await.status,
            422
        );
    }
    let r = answer(&app, &id, json!({ "code": code_now(&app, &user.secret) })).await;
    assert_eq!((r.status.as_u16(), r.code()), (429, "challenge_locked"));

    let id = challenge(&app, &user.email).await;
    app.clock
        .advance(Duration::minutes(10) + Duration::seconds(1));
    let r = answer(&app, &id, json!({ "code": code_now(&app, &user.secret) })).await;
    assert_eq!((r.status.as_u16(), r.code()), (410, "challenge_expired"));

    let r = answer(
        &app,
        &uuid::Uuid::new_v4().to_string(),
        json!({ "code": "123456" }),
    )
    .await;
    assert_eq!(r.status, 404);
    let r = answer(&app, &id, json!({})).await;
    assert_eq!((r.status.as_u16(), r.pointer()), (422, "/code"));
}

#[tokio::test]
async fn many_parallel_attempts_with_one_code_open_exactly_one_session() {
    let app = Arc::new(spawn_app_on(Backend::Postgres).await);
    let user = enrolled(&app).await;
    let mut challenges = Vec::new();
    for _ in 0..8 {
        challenges.push(challenge(&app, &user.email).await);
    }
    for (factor, value) in [
        ("code", code_now(&app, &user.secret)),
        ("backup_code", user.backup_codes[0].clone()),
    ] {
        let mut tasks = Vec::new();
        for id in challenges.clone() {
            let app = Arc::clone(&app);
            let body = json!({ factor: value });
            tasks.push(tokio::spawn(async move {
                answer(&app, &id, body).await.status.as_u16()
            }));
        }
        let mut statuses = Vec::new();
        for t in tasks {
            statuses.push(t.await.unwrap());
        }
        assert_eq!(
            statuses.iter().filter(|s| **s == 201).count(),
            1,
            "{factor}: {statuses:?}"
        );
        // The others are refused, or (under extreme contention) asked to retry.
        assert!(
            statuses.iter().all(|s| matches!(s, 201 | 422 | 409)),
            "{statuses:?}"
        );
        // Fresh challenges for the next round (the winner's challenge is spent).
        challenges.clear();
        for _ in 0..8 {
            challenges.push(challenge(&app, &user.email).await);
        }
    }
}

#[tokio::test]
async fn no_totp_secret_or_backup_code_is_stored_or_logged_in_the_clear() {
    let app = spawn_app().await;
    let user = enrolled(&app).await;
    let id = challenge(&app, &user.email).await;
    assert_eq!(
        answer(&app, &id, json!({ "backup_code": user.backup_codes[1] }))
            .await
            .status,
        201
    );
    let events = app.events_table_text().await;
    let logs = captured_logs();
    let secret_b32 = base32::encode(
        base32::Alphabet::Rfc4648 { padding: false },
        user.secret.as_bytes(),
    );
    let mut secrets = vec![secret_b32.clone(), secret_b32.to_lowercase()];
    secrets.extend(user.backup_codes.iter().cloned());
    secrets.extend(user.backup_codes.iter().map(|c| c.replace('-', "")));
    for s in &secrets {
        assert!(!events.contains(s.as_str()), "events hold {s}");
        assert!(!logs.contains(s.as_str()), "logs hold {s}");
    }
}
