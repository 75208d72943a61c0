//! Verify (issue 6): profiles, SMS / call / flash-call verifications, checks, one-time under
//! concurrency, expiry on time, abuse and spend controls, bad input, signed webhooks.

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

const PHONE: &str = "+13035551234";

async fn profile(app: &TestApp, token: &str, body: Value) -> String {
    let r = app.post("/v2/verify_profiles", Some(token), body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["record_type"], "verification_profile");
    r.data()["id"].as_str().unwrap().to_owned()
}

async fn send(app: &TestApp, token: &str, channel: &str, profile_id: &str, phone: &str) -> Reply {
    app.post(
        &format!("/v2/verifications/{channel}"),
        Some(token),
        json!({ "phone_number": phone, "verify_profile_id": profile_id }),
    )
    .await
}

async fn check(app: &TestApp, token: &str, profile_id: &str, phone: &str, code: &str) -> String {
    let r = app
        .post(
            &format!("/v2/verifications/by_phone_number/{phone}/actions/verify"),
            Some(token),
            json!({ "code": code, "verify_profile_id": profile_id }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["phone_number"], phone);
    r.data()["response_code"].as_str().unwrap().to_owned()
}

async fn a_code_works_once_and_wrong_codes_are_rejected(backend: Backend) {
    let (app, sink) = spawn_app_with_sink(backend).await;
    let (_, token) = app.owner().await;
    let id = profile(
        &app,
        &token,
        json!({ "name": "Acme", "sms": { "app_name": "Acme Bank", "whitelisted_destinations": ["US"] } }),
    )
    .await;
    let r = send(&app, &token, "sms", &id, PHONE).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["status"], "pending");
    assert_eq!(r.data()["type"], "sms");
    assert_eq!(r.data()["timeout_secs"], 300);
    let code = sink.last_code();
    assert_eq!(code.len(), 6, "six digits by default");
    let message = sink.all().last().cloned().unwrap();
    assert_eq!(message["to"], PHONE);
    assert_eq!(
        message["message"],
        format!("Your Acme Bank verification code is: {code}.")
    );
    let wrong = if code == "000000" { "000001" } else { "000000" };
    assert_eq!(check(&app, &token, &id, PHONE, wrong).await, "rejected");
    assert_eq!(check(&app, &token, &id, PHONE, &code).await, "accepted");
    assert_eq!(check(&app, &token, &id, PHONE, &code).await, "rejected");
    let vid = r.data()["id"].as_str().unwrap();
    let r = app.get(&format!("/v2/verifications/{vid}"), &token).await;
    assert_eq!(r.data()["status"], "accepted");
    let r = app
        .get(
            &format!("/v2/verifications/by_phone_number/{PHONE}"),
            &token,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["meta"]["total_results"], 1);
    assert_eq!(r.body["meta"]["total_pages"], 1);
    // Neither the code nor the number is in any event.
    let events = app.events_table_text().await;
    assert!(!events.contains(PHONE) && !events.contains(&format!("\"{code}\"")));
}

#[tokio::test]
async fn a_code_works_once_on_sqlite() {
    a_code_works_once_and_wrong_codes_are_rejected(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_code_works_once_on_postgres() {
    a_code_works_once_and_wrong_codes_are_rejected(Backend::Postgres).await;
}

#[tokio::test]
async fn many_parallel_checks_of_the_right_code_accept_exactly_one() {
    let (app, sink) = spawn_app_with_sink(Backend::Postgres).await;
    let (_, token) = app.owner().await;
    let id = profile(&app, &token, json!({ "name": "Race" })).await;
    assert_eq!(send(&app, &token, "sms", &id, PHONE).await.status, 200);
    let code = sink.last_code();
    let app = Arc::new(app);
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let (app, token, id, code) = (app.clone(), token.clone(), id.clone(), code.clone());
        tasks.push(tokio::spawn(async move {
            check(&app, &token, &id, PHONE, &code).await
        }));
    }
    let mut accepted = 0;
    for t in tasks {
        if t.await.unwrap() == "accepted" {
            accepted += 1;
        }
    }
    assert_eq!(accepted, 1);
}

#[tokio::test]
async fn five_wrong_codes_kill_it_and_a_new_send_supersedes_the_old() {
    let (app, sink) = spawn_app_with_sink(Backend::Sqlite).await;
    let (_, token) = app.owner().await;
    let id = profile(&app, &token, json!({ "name": "Tries" })).await;
    let first = send(&app, &token, "sms", &id, PHONE).await;
    let first_code = sink.last_code();
    let second = send(&app, &token, "sms", &id, PHONE).await;
    let second_code = sink.last_code();
    let r = app
        .get(
            &format!("/v2/verifications/{}", first.data()["id"].as_str().unwrap()),
            &token,
        )
        .await;
    assert_eq!(r.data()["status"], "invalid", "superseded");
    if first_code != second_code {
        assert_eq!(
            check(&app, &token, &id, PHONE, &first_code).await,
            "rejected"
        );
    }
    let vid = second.data()["id"].as_str().unwrap().to_owned();
    let wrong = if second_code == "999999" {
        "999998"
    } else {
        "999999"
    };
    for _ in 0..5 {
        let r = app
            .post(
                &format!("/v2/verifications/{vid}/actions/verify"),
                Some(&token),
                json!({ "code": wrong }),
            )
            .await;
        assert_eq!(r.data()["response_code"], "rejected");
    }
    assert_eq!(
        check(&app, &token, &id, PHONE, &second_code).await,
        "rejected"
    );
    let r = app.get(&format!("/v2/verifications/{vid}"), &token).await;
    assert_eq!(r.data()["status"], "invalid");
}

#[tokio::test]
async fn verifications_expire_on_time_without_a_check() {
    let (app, sink) = spawn_app_with_sink(Backend::Sqlite).await;
    let (_, token) = app.owner().await;
    let id = profile(&app, &token, json!({ "name": "Clock" })).await;
    let r = app
        .post(
            "/v2/verifications/call",
            Some(&token),
            json!({ "phone_number": PHONE, "verify_profile_id": id, "timeout_secs": 60, "extension": "1ww2" }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(sink.all().last().unwrap()["channel"], "call");
    let code = sink.last_code();
    let vid = r.data()["id"].as_str().unwrap().to_owned();
    app.clock.advance(chrono::Duration::seconds(61));
    let mut status = Value::Null;
    for _ in 0..50 {
        status = app
            .get(&format!("/v2/verifications/{vid}"), &token)
            .await
            .data()["status"]
            .clone();
        if status == "expired" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, "expired");
    assert_eq!(check(&app, &token, &id, PHONE, &code).await, "rejected");
    let types = app.event_types_after(0).await;
    assert_eq!(
        types
            .iter()
            .filter(|t| *t == "verification.expired")
            .count(),
        1
    );
}

#[tokio::test]
async fn allowlist_rate_and_spend_limits_refuse_and_write_nothing() {
    let sink = MessageSink::start().await;
    let mut settings = warden::Settings::for_test(temp_dir());
    settings.sender = warden::config::SenderKind::Http;
    settings.sender_url = Some(sink.url.clone());
    settings.verify_sends_per_number = 2;
    let app = spawn_with(settings).await;
    let (_, token) = app.owner().await;
    let id = profile(
        &app,
        &token,
        json!({ "name": "Guarded", "daily_spend_limit": 0.15, "daily_spend_limit_enabled": true,
                "sms": { "whitelisted_destinations": ["US", "CA"] } }),
    )
    .await;
    // Allowlist: a UK number is refused before anything is written or sent.
    let before = app.event_count().await;
    let r = send(&app, &token, "sms", &id, "+447700900123").await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.code(), "destination_not_allowed");
    assert_eq!(r.pointer(), "/phone_number");
    assert_eq!(app.event_count().await, before);
    assert!(sink.all().is_empty());
    // Per number: two sends, the third refused.
    assert_eq!(send(&app, &token, "sms", &id, PHONE).await.status, 200);
    assert_eq!(send(&app, &token, "sms", &id, PHONE).await.status, 200);
    let before = app.event_count().await;
    let r = send(&app, &token, "sms", &id, PHONE).await;
    assert_eq!(r.status, 429, "{}", r.text);
    assert_eq!(r.code(), "too_many_sends_to_number");
    assert!(r.headers.get("retry-after").is_some());
    assert_eq!(r.headers.get("x-should-retry").unwrap(), "false");
    assert_eq!(app.event_count().await, before);
    // Spend: 0.05 each against 0.15 — the third send reaches 100%, the fourth is refused.
    assert_eq!(
        send(&app, &token, "sms", &id, "+14165551234").await.status,
        200
    );
    let r = send(&app, &token, "sms", &id, "+14165551235").await;
    assert_eq!(r.status, 429, "{}", r.text);
    assert_eq!(r.code(), "daily_spend_limit_reached");
    let types = app.event_types_after(0).await;
    let thresholds = types
        .iter()
        .filter(|t| *t == "verify_profile.spend_threshold_reached")
        .count();
    assert_eq!(thresholds, 2, "80% and 100%: {types:?}");
    assert_eq!(
        types.iter().filter(|t| *t == "verification.sent").count(),
        3
    );
    assert_eq!(sink.all().len(), 3);
}

#[tokio::test]
async fn bad_input_is_refused_in_the_error_envelope_and_writes_nothing() {
    let (app, sink) = spawn_app_with_sink(Backend::Sqlite).await;
    let (_, token) = app.owner().await;
    let (_, other_token) = app.owner().await;
    let id = profile(&app, &token, json!({ "name": "Mine" })).await;
    let before = app.event_count().await;
    let r = send(&app, &token, "sms", &id, "3035551234").await;
    assert_eq!(r.status, 422);
    assert_eq!(r.pointer(), "/phone_number");
    let r = send(
        &app,
        &token,
        "sms",
        &uuid::Uuid::now_v7().to_string(),
        PHONE,
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.code(), "not_found");
    let r = send(&app, &other_token, "sms", &id, PHONE).await;
    assert_eq!(r.status, 404, "another organization's profile");
    let r = app
        .get(&format!("/v2/verify_profiles/{id}"), &other_token)
        .await;
    assert_eq!(r.status, 404);
    let r = app
        .post(
            "/v2/verifications/sms",
            Some(&token),
            json!({ "phone_number": PHONE, "verify_profile_id": id, "custom_code": "12ab" }),
        )
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.pointer(), "/custom_code");
    let r = app
        .post(
            "/v2/verify_profiles",
            Some(&token),
            json!({ "sms": { "code_length": 3 } }),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(
        r.body["errors"].as_array().unwrap().len() >= 2,
        "{}",
        r.text
    );
    assert_eq!(app.event_count().await, before);
    assert!(sink.all().is_empty());
}

#[tokio::test]
async fn profiles_list_update_templates_and_delete() {
    let app = spawn_app().await;
    let (_, token) = app.owner().await;
    let r = app
        .post(
            "/v2/verify_profiles/templates",
            Some(&token),
            json!({ "text": "{{code}} for {{app_name}}" }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let template = r.data()["id"].as_str().unwrap().to_owned();
    let id = profile(
        &app,
        &token,
        json!({ "name": "One", "sms": { "code_length": 8 } }),
    )
    .await;
    profile(&app, &token, json!({ "name": "Two" })).await;
    let r = app
        .request(
            Method::PATCH,
            &format!("/v2/verify_profiles/{id}"),
            Some(&token),
            Some(json!({ "sms": { "messaging_template_id": template, "app_name": "Uno" } })),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["sms"]["code_length"], 8, "deep merge keeps it");
    assert_eq!(r.data()["sms"]["messaging_template_id"], template);
    let r = app
        .get("/v2/verify_profiles?page[size]=1&page[number]=2", &token)
        .await;
    assert_eq!(r.body["meta"]["total_results"], 2);
    assert_eq!(r.body["meta"]["total_pages"], 2);
    assert_eq!(r.data()[0]["name"], "Two");
    let r = app
        .get("/v2/verify_profiles?filter[name]=One", &token)
        .await;
    assert_eq!(r.body["meta"]["total_results"], 1);
    let r = app.get("/v2/verify_profiles/templates", &token).await;
    assert!(r.data().as_array().unwrap().len() >= 4);
    let r = app
        .request(
            Method::DELETE,
            &format!("/v2/verify_profiles/{id}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.data()["id"], id);
    assert_eq!(
        app.get(&format!("/v2/verify_profiles/{id}"), &token)
            .await
            .status,
        404
    );
}

/// A webhook receiver that answers `status` and keeps (headers, body) of each request.
async fn receiver(status: u16) -> (String, Arc<Mutex<Vec<(axum::http::HeaderMap, String)>>>) {
    let seen: Arc<Mutex<Vec<(axum::http::HeaderMap, String)>>> = Arc::default();
    let store = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let store = store.clone();
            async move {
                store.lock().unwrap().push((headers, body));
                axum::http::StatusCode::from_u16(status).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, seen)
}

#[tokio::test]
async fn webhooks_are_signed_the_telnyx_way_and_fail_over() {
    let (app, sink) = spawn_app_with_sink(Backend::Sqlite).await;
    let (_, token) = app.owner().await;
    let (broken, broken_seen) = receiver(500).await;
    let (good, good_seen) = receiver(200).await;
    let id = profile(
        &app,
        &token,
        json!({ "name": "Hooks", "webhook_url": broken, "webhook_failover_url": good,
                "daily_spend_limit": 0.05, "daily_spend_limit_enabled": true }),
    )
    .await;
    assert_eq!(send(&app, &token, "sms", &id, PHONE).await.status, 200);
    assert_eq!(
        check(&app, &token, &id, PHONE, &sink.last_code()).await,
        "accepted"
    );
    let key = app.get("/v2/public_key", &token).await.data()["public_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let key_bytes: [u8; 32] = base64::engine::general_purpose::STANDARD
        .decode(&key)
        .unwrap()
        .try_into()
        .unwrap();
    let verifier = ed25519_dalek::VerifyingKey::from_bytes(&key_bytes).unwrap();
    // Delivery is at least once: count each event (by its id) once.
    let mut types = Vec::new();
    for _ in 0..200 {
        let mut seen = std::collections::BTreeMap::new();
        for (_, b) in good_seen.lock().unwrap().iter() {
            let v = serde_json::from_str::<Value>(b).unwrap();
            seen.insert(v["data"]["id"].to_string(), v["data"]["event_type"].clone());
        }
        types = seen.into_values().collect::<Vec<_>>();
        if types.len() >= 5 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    types.sort_by_key(|t| t.to_string());
    assert_eq!(
        types,
        vec![
            "verify.accepted",
            "verify.delivered",
            "verify.sent",
            "verify.spend_threshold_reached",
            "verify.spend_threshold_reached",
        ]
    );
    assert!(
        broken_seen.lock().unwrap().len() >= 5,
        "each tried the primary first"
    );
    for (headers, body) in good_seen.lock().unwrap().iter() {
        let ts = headers["telnyx-timestamp"].to_str().unwrap();
        let sig = base64::engine::general_purpose::STANDARD
            .decode(headers["telnyx-signature-ed25519"].to_str().unwrap())
            .unwrap();
        let sig = ed25519_dalek::Signature::from_slice(&sig).unwrap();
        let signed = format!("{ts}|{body}");
        assert!(verifier.verify_strict(signed.as_bytes(), &sig).is_ok());
        let tampered = format!("{ts}|{}", body.replace("verify.", "verify-"));
        assert!(verifier.verify_strict(tampered.as_bytes(), &sig).is_err());
        let v: Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["data"]["record_type"], "event");
        assert_eq!(v["data"]["payload"]["profile_id"], id);
        if v["data"]["event_type"] == "verify.spend_threshold_reached" {
            assert_eq!(v["data"]["payload"]["daily_spend_limit"], 0.05);
            continue;
        }
        if v["data"]["event_type"] == "verify.spend_threshold_reached" {
            assert_eq!(v["data"]["payload"]["daily_spend_limit"], 0.05);
            assert_eq!(v["meta"]["delivered_to"], good);
            continue;
        }
        assert_eq!(v["data"]["payload"]["phone_number"], PHONE);
        assert_eq!(v["meta"]["delivered_to"], good);
        assert_eq!(v["meta"]["attempt"], 1);
    }
    let rows = sqlx::query_scalar::<_, String>(
        "SELECT status FROM webhook_deliveries WHERE scheme = 'telnyx_ed25519'",
    )
    .fetch_all(&app.state.db.pool)
    .await
    .unwrap();
    assert_eq!(rows, vec!["delivered"; 5]);
}

#[tokio::test]
async fn verify_codes_and_numbers_never_reach_events_or_logs() {
    let (app, sink) = spawn_app_with_sink(Backend::Sqlite).await;
    let (_, token) = app.owner().await;
    let phone = format!("+1303{}", 1_000_000 + rand::random::<u32>() % 8_000_000);
    let id = profile(&app, &token, json!({ "name": "Canary" })).await;
    let custom = format!("{}", 10_000_000 + rand::random::<u32>() % 80_000_000);
    let r = app
        .post(
            "/v2/verifications/sms",
            Some(&token),
            json!({ "phone_number": phone, "verify_profile_id": id, "custom_code": custom }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(send(&app, &token, "call", &id, &phone).await.status, 200);
    let code = sink.last_code();
    assert_eq!(check(&app, &token, &id, &phone, &code).await, "accepted");
    let r = app
        .get(
            &format!("/v2/verifications/by_phone_number/{phone}"),
            &token,
        )
        .await;
    assert_eq!(r.status, 200);
    let events = app.events_table_text().await;
    let logs = captured_logs();
    for secret in [phone.as_str(), custom.as_str()] {
        assert!(!events.contains(secret), "events hold {secret}");
        assert!(!logs.contains(secret), "logs hold {secret}");
    }
    for needle in [
        format!("\"{code}\""),
        format!("={code}"),
        format!(": {code}"),
    ] {
        assert!(
            !events.contains(&needle) && !logs.contains(&needle),
            "code leaked as {needle}"
        );
    }
}

/// SSRF guard: in production a webhook URL must reach the public internet.
#[tokio::test]
async fn production_refuses_webhook_urls_that_point_inward() {
    let sink = MessageSink::start().await;
    let mut settings = warden::Settings::for_test(temp_dir());
    settings.env = warden::config::Environment::Production;
    settings.storage.master_key = Some(base64::engine::general_purpose::STANDARD.encode([7u8; 32]));
    settings.sender = warden::config::SenderKind::Http;
    settings.sender_url = Some(sink.url.clone());
    let app = spawn_with(settings).await;
    let (_, token) = app.owner().await;
    let before = app.event_count().await;
    for (field, url) in [
        ("webhook_url", "http://127.0.0.1:8080/hook"),
        ("webhook_url", "http://169.254.169.254/latest/meta-data"),
        ("webhook_failover_url", "https://[::1]/hook"),
        ("webhook_url", "http://localhost/hook"),
        ("webhook_url", "http://10.0.0.7/hook"),
    ] {
        let r = app
            .post(
                "/v2/verify_profiles",
                Some(&token),
                json!({ "name": "Inward", field: url }),
            )
            .await;
        assert_eq!(r.status, 422, "{url}: {}", r.text);
        assert_eq!(r.code(), "webhook_url_not_public");
        assert_eq!(r.pointer(), format!("/{field}"));
    }
    assert_eq!(app.event_count().await, before, "nothing written");
    let r = app
        .post(
            "/v2/verify_profiles",
            Some(&token),
            json!({ "name": "Public", "webhook_url": "https://hooks.example.com/verify" }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}
