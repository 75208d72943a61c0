//! SMS and voice-call second factors through the real `http` sender: enrollment, sign-in
//! codes, the 24-hour send limit, switching method with the current factor, bad input.

use chrono::Duration;
use reqwest::Method;
use serde_json::json;
use warden_commands::otp;
use warden_commands::Clock;

use crate::helpers::*;

const PHONE: &str = "+13035550147";

/// An owner with SMS (or call) 2FA on. Returns (email, token, backup codes).
async fn phone_enrolled(
    app: &TestApp,
    sink: &MessageSink,
    method: &str,
) -> (String, String, Vec<String>) {
    let (email, token) = app.owner().await;
    let r = app
        .post(
            "/v2/users/me/two_factor/enrollments",
            Some(&token),
            json!({ "method": method, "phone_number": PHONE }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(r.data().get("secret").is_none());
    let message = sink.all().last().cloned().unwrap();
    assert_eq!(message["channel"], method);
    assert_eq!(message["to"], PHONE);
    assert_eq!(message["purpose"], "two_factor_enrollment");
    let code = message["code"].as_str().unwrap().to_owned();
    assert_eq!(code.len(), 6);
    assert!(message["message"].as_str().unwrap().contains(&code[..1]));
    let id = r.data()["enrollment_id"].as_str().unwrap().to_owned();
    let r = app.confirm_enrollment(&token, &id, &code).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["method"], method);
    let codes = r.data()["backup_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    (email, token, codes)
}

async fn challenge(app: &TestApp, email: &str) -> String {
    let r = app.sign_in_with(email, PASSWORD).await;
    assert_eq!(
        r.data()["record_type"],
        "two_factor_challenge",
        "{}",
        r.text
    );
    r.data()["challenge_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn sms_and_call_codes_sign_in_through_the_http_sender() {
    let (app, sink) = spawn_app_with_sink(Backend::Sqlite).await;
    for method in ["sms", "call"] {
        let (email, token, _) = phone_enrolled(&app, &sink, method).await;
        let status = app.get("/v2/users/me/two_factor", &token).await;
        assert_eq!(status.data()["method"], method);
        assert_eq!(status.data()["phone_number"], "+1303*****47");

        let id = challenge(&app, &email).await;
        let r = app
            .post(
                &format!("/v2/two_factor_challenges/{id}/actions/send"),
                None,
                json!({ "channel": method }),
            )
            .await;
        assert_eq!(r.status, 202, "{}", r.text);
        let sent = sink.all().last().cloned().unwrap();
        assert_eq!(
            (sent["purpose"].as_str(), sent["to"].as_str()),
            (Some("two_factor_sign_in"), Some(PHONE))
        );
        let code = sink.last_code();
        let r = app
            .post(
                &format!("/v2/two_factor_challenges/{id}/actions/verify"),
                None,
                json!({ "code": code }),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        assert_eq!(r.data()["record_type"], "session");
        // Used once: a new challenge cannot reuse it.
        let id = challenge(&app, &email).await;
        let r = app
            .post(
                &format!("/v2/two_factor_challenges/{id}/actions/verify"),
                None,
                json!({ "code": code }),
            )
            .await;
        assert_eq!((r.status.as_u16(), r.code()), (422, "invalid_code"));
    }
}

#[tokio::test]
async fn a_sent_code_expires_after_five_minutes() {
    let (app, sink) = spawn_app_with_sink(Backend::Sqlite).await;
    let (email, _, _) = phone_enrolled(&app, &sink, "sms").await;
    let id = challenge(&app, &email).await;
    app.post(
        &format!("/v2/two_factor_challenges/{id}/actions/send"),
        None,
        json!({ "channel": "sms" }),
    )
    .await;
    app.clock
        .advance(Duration::minutes(5) + Duration::seconds(1));
    let r = app
        .post(
            &format!("/v2/two_factor_challenges/{id}/actions/verify"),
            None,
            json!({ "code": sink.last_code() }),
        )
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (422, "invalid_code"));
}

#[tokio::test]
async fn more_than_ten_code_sends_a_day_are_refused_and_write_nothing() {
    let (app, sink) = spawn_app_with_sink(Backend::Sqlite).await;
    let (email, _, _) = phone_enrolled(&app, &sink, "sms").await; // send 1
    let id = challenge(&app, &email).await;
    for _ in 0..9 {
        let r = app
            .post(
                &format!("/v2/two_factor_challenges/{id}/actions/send"),
                None,
                json!({ "channel": "sms" }),
            )
            .await;
        assert_eq!(r.status, 202, "{}", r.text);
    }
    let (sent, events) = (sink.all().len(), app.event_count().await);
    let r = app
        .post(
            &format!("/v2/two_factor_challenges/{id}/actions/send"),
            None,
            json!({ "channel": "call" }),
        )
        .await;
    assert_eq!(r.status, 429, "{}", r.text);
    assert_eq!(r.code(), "too_many_requests");
    assert_eq!(
        r.body["errors"][0]["detail"],
        "You have exceeded the maximum number of allowed requests."
    );
    assert!(r.headers.get("retry-after").is_some());
    assert_eq!(sink.all().len(), sent, "nothing sent");
    assert_eq!(app.event_count().await, events, "no code_sent event");
    // A day later the allowance is back.
    app.clock.advance(Duration::hours(24));
    let id = challenge(&app, &email).await;
    let r = app
        .post(
            &format!("/v2/two_factor_challenges/{id}/actions/send"),
            None,
            json!({ "channel": "sms" }),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
}

#[tokio::test]
async fn switching_from_totp_to_sms_needs_the_current_factor_and_keeps_backup_codes() {
    let (app, sink) = spawn_app_with_sink(Backend::Sqlite).await;
    let (_, token) = app.owner().await;
    let r = app
        .post(
            "/v2/users/me/two_factor/enrollments",
            Some(&token),
            json!({ "method": "totp" }),
        )
        .await;
    let secret_b32 = r.data()["secret"].as_str().unwrap().to_owned();
    let secret = otp::TotpSecret::from_bytes(
        base32::decode(base32::Alphabet::Rfc4648 { padding: false }, &secret_b32).unwrap(),
    )
    .unwrap();
    let id = r.data()["enrollment_id"].as_str().unwrap().to_owned();
    let code = otp::totp_at(&secret, otp::totp_step(app.clock.now()));
    let r = app.confirm_enrollment(&token, &id, &code).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let backup: Vec<String> = r.data()["backup_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();

    let before = app.event_count().await;
    let r = app
        .post(
            "/v2/users/me/two_factor/enrollments",
            Some(&token),
            json!({ "method": "sms", "phone_number": PHONE }),
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (422, "current_factor_required")
    );
    assert_eq!(app.event_count().await, before);
    assert!(
        sink.all().iter().all(|m| m["purpose"] == "notice"),
        "no code sent without the current factor"
    );

    app.clock.advance(Duration::seconds(30));
    let current = otp::totp_at(&secret, otp::totp_step(app.clock.now()));
    let r = app
        .post(
            "/v2/users/me/two_factor/enrollments",
            Some(&token),
            json!({ "method": "sms", "phone_number": PHONE, "current_code": current }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.data()["enrollment_id"].as_str().unwrap().to_owned();
    let r = app.confirm_enrollment(&token, &id, &sink.last_code()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["method"], "sms");
    assert!(
        r.data().get("backup_codes").is_none(),
        "backup codes are kept, not reissued"
    );
    let status = app.get("/v2/users/me/two_factor", &token).await;
    assert_eq!(
        (
            status.data()["method"].as_str(),
            status.data()["backup_codes_remaining"].as_i64()
        ),
        (Some("sms"), Some(10))
    );
    // The old backup codes still work as a current factor (step-up for new codes).
    let r = app
        .post(
            "/v2/users/me/two_factor/backup_codes",
            Some(&token),
            json!({ "backup_code": backup[0] }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    // And an SMS user can prove the factor with a step-up code.
    let r = app
        .post(
            "/v2/users/me/two_factor/codes",
            Some(&token),
            json!({ "channel": "sms" }),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(sink.all().last().unwrap()["purpose"], "two_factor_step_up");
    let r = app
        .post(
            "/v2/users/me/two_factor/backup_codes",
            Some(&token),
            json!({ "code": sink.last_code() }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
}

#[tokio::test]
async fn bad_input_is_a_clear_4xx_and_writes_nothing() {
    let (app, sink) = spawn_app_with_sink(Backend::Sqlite).await;
    let (email, token, _) = phone_enrolled(&app, &sink, "sms").await;
    let id = challenge(&app, &email).await;
    let before = app.event_count().await;
    let cases = [
        (
            "/v2/users/me/two_factor/enrollments",
            json!({ "method": "sms", "phone_number": "3035550147" }),
            422,
            "/phone_number",
        ),
        (
            "/v2/users/me/two_factor/enrollments",
            json!({ "method": "fax" }),
            422,
            "/method",
        ),
        (
            "/v2/users/me/two_factor/enrollments",
            json!({ "method": "sms" }),
            422,
            "/phone_number",
        ),
    ];
    for (path, body, status, pointer) in cases {
        let r = app.post(path, Some(&token), body).await;
        assert_eq!(
            (r.status.as_u16(), r.pointer()),
            (status, pointer),
            "{}",
            r.text
        );
    }
    let verify = format!("/v2/two_factor_challenges/{id}/actions/verify");
    for body in [
        json!({ "code": "12345" }),
        json!({ "code": "1234567" }),
        json!({ "code": "12a456" }),
        json!({ "backup_code": "nope" }),
    ] {
        let r = app.post(&verify, None, body).await;
        assert_eq!(
            (r.status.as_u16(), r.code()),
            (422, "invalid_code_format"),
            "{}",
            r.text
        );
    }
    let r = app
        .post(
            &format!(
                "/v2/two_factor_challenges/{}/actions/verify",
                uuid::Uuid::new_v4()
            ),
            None,
            json!({ "code": "123456" }),
        )
        .await;
    assert_eq!(r.status, 404);
    let r = app
        .post(
            &format!("/v2/two_factor_challenges/{id}/actions/send"),
            None,
            json!({ "channel": "pigeon" }),
        )
        .await;
    assert_eq!((r.status.as_u16(), r.pointer()), (422, "/channel"));
    assert_eq!(app.event_count().await, before, "nothing written");
    app.clock.advance(Duration::minutes(11));
    let r = app.post(&verify, None, json!({ "code": "123456" })).await;
    assert_eq!((r.status.as_u16(), r.code()), (410, "challenge_expired"));
    assert_eq!(
        app.event_count().await,
        before,
        "an expired challenge writes nothing"
    );
}

#[tokio::test]
async fn sent_codes_never_reach_events_or_logs() {
    let (app, sink) = spawn_app_with_sink(Backend::Sqlite).await;
    let (email, _, _) = phone_enrolled(&app, &sink, "sms").await;
    let id = challenge(&app, &email).await;
    app.post(
        &format!("/v2/two_factor_challenges/{id}/actions/send"),
        None,
        json!({ "channel": "sms" }),
    )
    .await;
    let events = app.events_table_text().await;
    let logs = captured_logs();
    // Notices carry no code.
    for m in sink.all().iter().filter(|m| m["purpose"] != "notice") {
        let code = m["code"].as_str().unwrap();
        assert!(
            !events.contains(&format!("\"{code}\"")),
            "events hold code {code}"
        );
        assert!(
            !logs.contains(&format!("\"{code}\"")) && !logs.contains(&format!("={code}")),
            "logs hold code {code}"
        );
    }
    assert!(
        !events.contains(PHONE),
        "the phone number is sealed in events"
    );
    let _ = Method::GET;
}

/// The old phone is lost: a code sent to the account's email stands in for the current
/// factor when only the number changes — and nowhere else.
#[tokio::test]
async fn an_email_code_stands_in_for_the_factor_when_the_phone_number_changes() {
    let (app, sink) = spawn_app_with_sink(Backend::Sqlite).await;
    let (email, token, _) = phone_enrolled(&app, &sink, "sms").await;
    let r = app
        .post(
            "/v2/users/me/two_factor/codes",
            Some(&token),
            json!({ "channel": "email" }),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let message = sink.all().last().cloned().unwrap();
    assert_eq!(message["channel"], "email");
    assert_eq!(message["to"], email.as_str());
    let email_code = message["code"].as_str().unwrap().to_owned();

    // Not for backup codes, nor for a switch to an authenticator app.
    let before = app.event_count().await;
    let r = app
        .post(
            "/v2/users/me/two_factor/enrollments",
            Some(&token),
            json!({ "method": "totp", "email_code": email_code }),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.code(), "email_code_not_allowed");
    assert_eq!(app.event_count().await, before, "nothing written");

    // A wrong one is a recorded failure.
    let r = app
        .post(
            "/v2/users/me/two_factor/enrollments",
            Some(&token),
            json!({ "method": "sms", "phone_number": "+13035550199", "email_code": "000000" }),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    app.only_failures_since(before).await;

    // The right one starts the new number's enrollment; confirming it moves the factor.
    let r = app
        .post(
            "/v2/users/me/two_factor/enrollments",
            Some(&token),
            json!({ "method": "call", "phone_number": "+13035550199", "email_code": email_code }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.data()["enrollment_id"].as_str().unwrap().to_owned();
    let sent = sink.all().last().cloned().unwrap();
    assert_eq!(sent["to"], "+13035550199");
    let r = app
        .confirm_enrollment(&token, &id, sent["code"].as_str().unwrap())
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["method"], "call");
    assert!(r.data()["backup_codes"].is_null(), "backup codes are kept");

    // Used once: the same email code does not work again.
    let r = app
        .post(
            "/v2/users/me/two_factor/enrollments",
            Some(&token),
            json!({ "method": "sms", "phone_number": PHONE, "email_code": email_code }),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
}
