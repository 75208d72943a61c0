//! Account-level webhooks: endpoints and their once-shown secret, Standard Webhooks
//! signatures checked here with HMAC-SHA256, rotation signing with both secrets, retries
//! that land later on the driven clock, disabling after five days of failure (event and
//! notice), the delivery log, redelivery, tenant isolation, bad input and the SSRF guard.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{
    captured_logs, spawn_app, spawn_app_on, spawn_app_with_sink, spawn_with, temp_dir, Backend,
    MessageSink, TestApp, PASSWORD,
};

type Seen = Arc<Mutex<Vec<(axum::http::HeaderMap, String)>>>;

/// A local receiver answering with whatever status `status` holds at the time.
struct Receiver {
    url: String,
    seen: Seen,
    status: Arc<AtomicU16>,
}

impl Receiver {
    async fn start(status: u16) -> Self {
        let seen: Seen = Arc::default();
        let status = Arc::new(AtomicU16::new(status));
        let (store, answer) = (seen.clone(), status.clone());
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
                let (store, answer) = (store.clone(), answer.clone());
                async move {
                    store.lock().unwrap().push((headers, body));
                    axum::http::StatusCode::from_u16(answer.load(Ordering::SeqCst)).unwrap()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, seen, status }
    }

    fn requests(&self) -> Vec<(axum::http::HeaderMap, String)> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests arrived; returns them all.
    async fn wait_for(&self, n: usize) -> Vec<(axum::http::HeaderMap, String)> {
        for _ in 0..300 {
            let got = self.requests();
            if got.len() >= n {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "expected {n} webhook requests, got {}",
            self.requests().len()
        );
    }
}

async fn create_endpoint(app: &TestApp, token: &str, url: &str, types: Value) -> (String, String) {
    let r = app
        .post(
            "/v2/webhook_endpoints",
            Some(token),
            json!({ "url": url, "event_types": types, "description": "tests" }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.data()["id"].as_str().unwrap().to_owned();
    let secret = r.data()["secret"].as_str().unwrap().to_owned();
    (id, secret)
}

/// One event on the caller's own user stream (`user.profile_updated`).
async fn touch_profile(app: &TestApp, token: &str, name: &str) {
    let r = app
        .request(
            Method::PATCH,
            "/v2/users/me",
            Some(token),
            Some(json!({ "first_name": name })),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

/// The signatures of `webhook-signature` that `secret` (`whsec_…`) verifies.
fn verified_by(secret: &str, headers: &axum::http::HeaderMap, body: &str) -> usize {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let id = headers["webhook-id"].to_str().unwrap();
    let ts = headers["webhook-timestamp"].to_str().unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.{body}").as_bytes());
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    headers["webhook-signature"]
        .to_str()
        .unwrap()
        .split(' ')
        .filter(|s| *s == expected)
        .count()
}

/// One event on the organization's stream (`organization.updated`, the name in plaintext).
async fn rename_org(app: &TestApp, token: &str, name: &str) {
    let r = app
        .request(
            Method::PATCH,
            "/v2/organization",
            Some(token),
            Some(json!({ "company_name": name })),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

fn now(app: &TestApp) -> chrono::DateTime<chrono::Utc> {
    warden_commands::Clock::now(app.clock.as_ref())
}

fn body_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap()
}

#[tokio::test]
async fn endpoints_crud_and_the_secret_is_shown_only_once() {
    let app = spawn_app().await;
    let (_, token) = app.owner().await;
    let (id, secret) = create_endpoint(
        &app,
        &token,
        "https://hooks.example.com/a",
        json!(["user.profile_updated"]),
    )
    .await;
    assert!(secret.starts_with("whsec_"));
    assert_eq!(
        STANDARD.decode(&secret["whsec_".len()..]).unwrap().len(),
        32
    );
    let r = app
        .get(&format!("/v2/webhook_endpoints/{id}"), &token)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["record_type"], "webhook_endpoint");
    assert_eq!(r.data()["event_types"], json!(["user.profile_updated"]));
    assert_eq!(r.data()["enabled"], true);
    assert!(!r.text.contains(&secret) && r.data().get("secret").is_none());
    let r = app
        .request(
            Method::PATCH,
            &format!("/v2/webhook_endpoints/{id}"),
            Some(&token),
            Some(json!({ "event_types": ["*"], "description": null, "enabled": false })),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["event_types"], json!(["*"]));
    assert_eq!(r.data()["description"], Value::Null);
    assert_eq!(r.data()["enabled"], false);
    let list = app.get("/v2/webhook_endpoints", &token).await;
    assert_eq!(list.body["meta"]["total_results"], 1);
    assert!(!list.text.contains(&secret));
    // The secret is sealed in the log and never logged.
    assert!(!app
        .events_table_text()
        .await
        .contains(&secret["whsec_".len()..]));
    assert!(!captured_logs().contains(&secret["whsec_".len()..]));
    let r = app
        .request(
            Method::DELETE,
            &format!("/v2/webhook_endpoints/{id}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = app
        .get(&format!("/v2/webhook_endpoints/{id}"), &token)
        .await;
    assert_eq!(r.status, 404);
    // The endpoint's history is auditable like any stream of the organization.
    let r = app
        .get(
            &format!("/v2/audit/streams/webhook_endpoint-{id}/state"),
            &token,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["state"]["deleted"], true);
    assert_eq!(r.data()["state"]["secret"], "<sealed>");
}

#[tokio::test]
async fn bad_input_is_refused_and_writes_nothing() {
    let app = spawn_app().await;
    let (_, token) = app.owner().await;
    let (id, _) = create_endpoint(&app, &token, "https://h.example.com/", json!(["*"])).await;
    let before = app.event_count().await;
    for (body, pointer, code) in [
        (
            json!({ "url": "ftp://x.example.com", "event_types": ["*"] }),
            "/url",
            "invalid_url",
        ),
        (
            json!({ "url": "https://x.example.com", "event_types": ["user.flew"] }),
            "/event_types/0",
            "unknown_event_type",
        ),
        (
            json!({ "url": "https://x.example.com", "event_types": [] }),
            "/event_types",
            "invalid_value",
        ),
        (
            json!({ "url": "https://x.example.com", "event_types": ["*", "user.enabled"] }),
            "/event_types",
            "invalid_value",
        ),
        (json!({ "event_types": ["*"] }), "/url", "required"),
    ] {
        let r = app
            .post("/v2/webhook_endpoints", Some(&token), body.clone())
            .await;
        assert_eq!(r.status, 422, "{body}: {}", r.text);
        assert_eq!(r.pointer(), pointer, "{body}");
        assert_eq!(r.code(), code, "{body}");
    }
    for body in [
        json!({ "url": 5 }),
        json!({ "enabled": "yes" }),
        json!({ "secret": "whsec_mine" }),
        json!({ "event_types": ["nope.nope"] }),
    ] {
        let r = app
            .request(
                Method::PATCH,
                &format!("/v2/webhook_endpoints/{id}"),
                Some(&token),
                Some(body.clone()),
            )
            .await;
        assert_eq!(r.status, 422, "{body}: {}", r.text);
    }
    let r = app
        .post(
            &format!("/v2/webhook_endpoints/{id}/actions/redeliver"),
            Some(&token),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    let r = app
        .get("/v2/webhook_deliveries?filter[status][eq]=lost", &token)
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(app.event_count().await, before, "nothing written");
}

#[tokio::test]
async fn deliveries_are_signed_the_standard_way_and_carry_the_stream_version() {
    let app = spawn_app().await;
    let (_, token) = app.owner().await;
    let hook = Receiver::start(200).await;
    let (_, secret) = create_endpoint(&app, &token, &hook.url, json!(["*"])).await;
    touch_profile(&app, &token, "Ada").await;
    touch_profile(&app, &token, "Augusta").await;
    let r = app
        .request(
            Method::PATCH,
            "/v2/organization",
            Some(&token),
            Some(json!({ "company_name": "Difference Engines" })),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let got = hook.wait_for(3).await;
    let mut versions = Vec::new();
    for (headers, body) in &got {
        assert_eq!(verified_by(&secret, headers, body), 1, "{body}");
        assert_eq!(
            verified_by(
                &secret,
                headers,
                &body.replace("Difference", "Indifference")
            ),
            usize::from(!body.contains("Difference")),
            "a changed body fails"
        );
        let v = body_of(body);
        let ts: i64 = headers["webhook-timestamp"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(ts, now(&app).timestamp());
        assert_eq!(
            headers["webhook-id"].to_str().unwrap(),
            v["data"]["event_id"]
        );
        assert_eq!(v["type"], v["data"]["event_type"]);
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
        assert!(v["data"]["global_position"].as_i64().unwrap() > 0);
        assert!(v["data"]["stream_id"].is_string() && v["data"]["stream_type"].is_string());
        // Sealed values and digests never leave.
        assert!(
            !body.contains("ciphertext") && !body.contains("nonce"),
            "{body}"
        );
        if v["type"] == "user.profile_updated" {
            versions.push(v["data"]["version"].as_i64().unwrap());
        }
    }
    let types: Vec<String> = got
        .iter()
        .map(|(_, b)| body_of(b)["type"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        types.contains(&"organization.updated".to_owned()),
        "{types:?}"
    );
    assert!(got.iter().any(|(_, b)| b.contains("Difference Engines")));
    versions.sort();
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[1], versions[0] + 1, "stream versions, in order");
}

#[tokio::test]
async fn rotation_signs_with_both_secrets_for_a_day() {
    let app = spawn_app().await;
    let (email, token) = app.owner().await;
    let hook = Receiver::start(200).await;
    let (id, old) = create_endpoint(&app, &token, &hook.url, json!(["user.profile_updated"])).await;
    let r = app
        .post(
            &format!("/v2/webhook_endpoints/{id}/actions/rotate_secret"),
            Some(&token),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let new = r.data()["secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert!(r.data()["previous_secret_valid_until"].is_string());
    touch_profile(&app, &token, "Rotated").await;
    let got = hook.wait_for(1).await;
    let (headers, body) = &got[0];
    let signatures = headers["webhook-signature"].to_str().unwrap();
    assert_eq!(signatures.split(' ').count(), 2, "{signatures}");
    assert_eq!(verified_by(&new, headers, body), 1);
    assert_eq!(verified_by(&old, headers, body), 1);
    assert!(signatures.starts_with("v1,"));
    // A day later only the new secret signs.
    app.clock
        .advance(chrono::Duration::hours(24) + chrono::Duration::seconds(1));
    let token = app.sign_in_with(&email, PASSWORD).await.data()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    touch_profile(&app, &token, "Later").await;
    let got = hook.wait_for(2).await;
    let (headers, body) = &got[1];
    assert_eq!(
        headers["webhook-signature"]
            .to_str()
            .unwrap()
            .split(' ')
            .count(),
        1
    );
    assert_eq!(verified_by(&new, headers, body), 1);
    assert_eq!(verified_by(&old, headers, body), 0);
}

/// Whether the delivery's next attempt is set to after `t`.
fn retry_after(d: &Value, t: chrono::DateTime<chrono::Utc>) -> bool {
    d["next_attempt_at"]
        .as_str()
        .and_then(|n| chrono::DateTime::parse_from_rfc3339(n).ok())
        .is_some_and(|n| n > t)
}

/// Polls the delivery log until `check` holds for the first delivery.
async fn wait_delivery(app: &TestApp, token: &str, check: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..300 {
        let r = app.get("/v2/webhook_deliveries", token).await;
        assert_eq!(r.status, 200, "{}", r.text);
        if let Some(d) = r.data().as_array().and_then(|a| a.first()) {
            if check(d) {
                return d.clone();
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the delivery never reached the expected state");
}

#[tokio::test]
async fn failed_deliveries_are_retried_later_with_the_same_webhook_id() {
    let app = spawn_app_on(Backend::Postgres).await;
    let (_, token) = app.owner().await;
    let hook = Receiver::start(500).await;
    let (_, secret) =
        create_endpoint(&app, &token, &hook.url, json!(["organization.updated"])).await;
    rename_org(&app, &token, "Retry Ltd").await;
    // (Its attempt row is written just before the delivery's next time: wait for both.)
    let t0 = now(&app);
    let d = wait_delivery(&app, &token, |d| {
        d["attempts"].as_array().unwrap().len() == 1 && retry_after(d, t0)
    })
    .await;
    assert_eq!(d["status"], "pending");
    let next =
        chrono::DateTime::parse_from_rfc3339(d["next_attempt_at"].as_str().unwrap()).unwrap();
    let wait = next.with_timezone(&chrono::Utc) - now(&app);
    assert!((5..=6).contains(&wait.num_seconds()), "{wait}");
    // Nothing happens until the pause has passed on the clock.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(hook.requests().len(), 1);
    app.clock.advance(chrono::Duration::seconds(7));
    hook.wait_for(2).await;
    let t1 = now(&app);
    let d = wait_delivery(&app, &token, |d| {
        d["attempts"].as_array().unwrap().len() == 2
            && retry_after(d, t1 + chrono::Duration::seconds(60))
    })
    .await;
    let next =
        chrono::DateTime::parse_from_rfc3339(d["next_attempt_at"].as_str().unwrap()).unwrap();
    let wait = next.with_timezone(&chrono::Utc) - now(&app);
    assert!((300..=360).contains(&wait.num_seconds()), "{wait}");
    // The receiver comes back; the third attempt (5 minutes on) delivers.
    hook.status.store(200, Ordering::SeqCst);
    app.clock.advance(chrono::Duration::seconds(361));
    let d = wait_delivery(&app, &token, |d| d["status"] == "delivered").await;
    let attempts = d["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3);
    assert_eq!(attempts[0]["status"], "delivered", "newest first");
    assert_eq!(attempts[0]["http"]["response"]["status"], 200);
    assert_eq!(attempts[2]["http"]["response"]["status"], 500);
    assert_eq!(attempts[2]["http"]["request"]["url"], hook.url);
    assert_eq!(d["webhook"]["event_type"], "organization.updated");
    assert!(d["finished_at"].is_string());
    let got = hook.requests();
    assert_eq!(got.len(), 3);
    let ids: Vec<&str> = got
        .iter()
        .map(|(h, _)| h["webhook-id"].to_str().unwrap())
        .collect();
    assert!(ids.iter().all(|i| *i == ids[0]), "one webhook-id: {ids:?}");
    assert_eq!(ids[0], d["webhook"]["id"]);
    let stamps: Vec<i64> = got
        .iter()
        .map(|(h, _)| h["webhook-timestamp"].to_str().unwrap().parse().unwrap())
        .collect();
    assert!(stamps[0] < stamps[1] && stamps[1] < stamps[2], "{stamps:?}");
    for (h, b) in &got {
        assert_eq!(verified_by(&secret, h, b), 1);
    }
    // Filters.
    let r = app
        .get("/v2/webhook_deliveries?filter[status][eq]=failed", &token)
        .await;
    assert_eq!(r.body["meta"]["total_results"], 0);
    let r = app
        .get(
            "/v2/webhook_deliveries?filter[status][eq]=delivered&filter[webhook][contains]=Retry",
            &token,
        )
        .await;
    assert_eq!(r.body["meta"]["total_results"], 1, "{}", r.text);
    let r = app
        .get(
            "/v2/webhook_deliveries?filter[webhook][contains]=no%25such_thing",
            &token,
        )
        .await;
    assert_eq!(r.body["meta"]["total_results"], 0, "{}", r.text);
    let r = app
        .get(
            "/v2/webhook_deliveries?filter[started_at][gte]=2099-01-01T00:00:00Z",
            &token,
        )
        .await;
    assert_eq!(r.body["meta"]["total_results"], 0, "{}", r.text);
    let r = app
        .get(
            "/v2/webhook_deliveries?filter[event_type]=user.enabled,organization.updated",
            &token,
        )
        .await;
    assert_eq!(r.body["meta"]["total_results"], 1, "{}", r.text);
}

#[tokio::test]
async fn an_endpoint_failing_for_five_days_is_disabled_with_an_event_and_a_notice() {
    let (app, sink) = spawn_app_with_sink(Backend::Sqlite).await;
    let (email, token) = app.owner().await;
    let hook = Receiver::start(503).await;
    let (id, _) = create_endpoint(&app, &token, &hook.url, json!(["*"])).await;
    touch_profile(&app, &token, "Down").await;
    hook.wait_for(1).await;
    let position = app.event_count().await;
    // Four days of failure are not enough.
    app.clock.advance(chrono::Duration::days(4));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(!app
        .event_types_after(position)
        .await
        .contains(&"webhook_endpoint.disabled".to_owned()));
    app.clock
        .advance(chrono::Duration::days(1) + chrono::Duration::minutes(1));
    let mut disabled = false;
    for _ in 0..300 {
        if app
            .event_types_after(position)
            .await
            .contains(&"webhook_endpoint.disabled".to_owned())
        {
            disabled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(disabled, "the endpoint was disabled");
    let token = app.sign_in_with(&email, PASSWORD).await.data()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = app
        .get(&format!("/v2/webhook_endpoints/{id}"), &token)
        .await;
    assert_eq!(r.data()["enabled"], false, "{}", r.text);
    let reason = r.data()["disabled_reason"].as_str().unwrap();
    assert!(
        reason.contains("failed since") && reason.contains("HTTP 503"),
        "{reason}"
    );
    let notice = sink
        .all()
        .into_iter()
        .find(|m| m["purpose"] == "notice" && m["message"].as_str().unwrap().contains(&id))
        .expect("a notice email");
    assert_eq!(notice["to"], email);
    assert_eq!(notice["channel"], "email");
    // Only once, and nothing more is sent to it.
    let sent = hook.requests().len();
    touch_profile(&app, &token, "Still down").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(hook.requests().len(), sent);
    let disabled_events = app
        .event_types_after(0)
        .await
        .into_iter()
        .filter(|t| t == "webhook_endpoint.disabled")
        .count();
    assert_eq!(disabled_events, 1);
    // Turned on again, it receives events anew.
    hook.status.store(200, Ordering::SeqCst);
    let r = app
        .request(
            Method::PATCH,
            &format!("/v2/webhook_endpoints/{id}"),
            Some(&token),
            Some(json!({ "enabled": true })),
        )
        .await;
    assert_eq!(r.data()["enabled"], true, "{}", r.text);
    assert_eq!(r.data()["disabled_reason"], Value::Null);
    rename_org(&app, &token, "Back").await;
    let got = hook.wait_for(sent + 1).await;
    assert!(got.last().unwrap().1.contains("Back"));
}

#[tokio::test]
async fn deliveries_and_an_endpoints_events_can_be_redelivered() {
    let app = spawn_app().await;
    let (_, token) = app.owner().await;
    let hook = Receiver::start(200).await;
    let (id, secret) =
        create_endpoint(&app, &token, &hook.url, json!(["user.profile_updated"])).await;
    let from = app.event_count().await + 1;
    touch_profile(&app, &token, "One").await;
    touch_profile(&app, &token, "Two").await;
    let got = hook.wait_for(2).await;
    let first_ids: Vec<String> = got
        .iter()
        .map(|(h, _)| h["webhook-id"].to_str().unwrap().to_owned())
        .collect();
    let d = wait_delivery(&app, &token, |d| d["status"] == "delivered").await;
    let r = app
        .post(
            &format!(
                "/v2/webhook_deliveries/{}/actions/redeliver",
                d["id"].as_str().unwrap()
            ),
            Some(&token),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_ne!(r.data()["id"], d["id"]);
    let got = hook.wait_for(3).await;
    assert_eq!(got[2].0["webhook-id"].to_str().unwrap(), d["webhook"]["id"]);
    assert_eq!(
        got[2].1,
        got.iter()
            .find(|(h, _)| h["webhook-id"] == got[2].0["webhook-id"])
            .unwrap()
            .1
    );
    // Everything from a position on (a subscriber that lost data)…
    let r = app
        .post(
            &format!("/v2/webhook_endpoints/{id}/actions/redeliver"),
            Some(&token),
            json!({ "from_position": from }),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.data()["enqueued"], 2);
    let got = hook.wait_for(5).await;
    let again: Vec<String> = got[3..]
        .iter()
        .map(|(h, _)| h["webhook-id"].to_str().unwrap().to_owned())
        .collect();
    for id in &first_ids {
        assert!(again.contains(id), "{id} redelivered");
    }
    for (h, b) in &got {
        assert_eq!(verified_by(&secret, h, b), 1);
    }
    // …or from an instant on.
    let r = app
        .post(
            &format!("/v2/webhook_endpoints/{id}/actions/redeliver"),
            Some(&token),
            json!({ "from_time": "2000-01-01T00:00:00Z" }),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.data()["enqueued"], 2);
    let r = app
        .post(
            &format!("/v2/webhook_endpoints/{id}/actions/redeliver"),
            Some(&token),
            json!({ "from_time": "2999-01-01T00:00:00Z" }),
        )
        .await;
    assert_eq!(r.data()["enqueued"], 0);
}

#[tokio::test]
async fn an_endpoint_receives_only_the_event_types_it_subscribes_to() {
    let app = spawn_app().await;
    let (_, token) = app.owner().await;
    let profiles = Receiver::start(200).await;
    let names = Receiver::start(200).await;
    create_endpoint(&app, &token, &profiles.url, json!(["user.profile_updated"])).await;
    let (names_id, _) =
        create_endpoint(&app, &token, &names.url, json!(["organization.updated"])).await;
    touch_profile(&app, &token, "Ada").await;
    rename_org(&app, &token, "Engines").await;
    touch_profile(&app, &token, "Augusta").await;
    profiles.wait_for(2).await;
    names.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let types = |hook: &Receiver| -> Vec<String> {
        hook.requests()
            .iter()
            .map(|(_, b)| body_of(b)["type"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        types(&profiles),
        ["user.profile_updated", "user.profile_updated"]
    );
    assert_eq!(types(&names), ["organization.updated"]);
    // Redelivering everything goes through the same filter.
    let r = app
        .post(
            &format!("/v2/webhook_endpoints/{names_id}/actions/redeliver"),
            Some(&token),
            json!({ "from_position": 1 }),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.data()["enqueued"], 1);
}

#[tokio::test]
async fn organizations_see_and_receive_only_their_own() {
    let app = spawn_app().await;
    let (_, a) = app.owner().await;
    let (_, b) = app.owner().await;
    let hook_a = Receiver::start(200).await;
    let hook_b = Receiver::start(200).await;
    let (id_a, _) = create_endpoint(&app, &a, &hook_a.url, json!(["*"])).await;
    create_endpoint(&app, &b, &hook_b.url, json!(["*"])).await;
    rename_org(&app, &a, "From A").await;
    rename_org(&app, &b, "From B").await;
    let got_a = hook_a.wait_for(1).await;
    let got_b = hook_b.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(hook_a.requests().iter().all(|(_, b)| !b.contains("From B")));
    assert!(hook_b.requests().iter().all(|(_, b)| !b.contains("From A")));
    assert!(got_a.iter().any(|(_, b)| b.contains("From A")));
    assert!(got_b.iter().any(|(_, b)| b.contains("From B")));
    let d = wait_delivery(&app, &a, |d| d["status"] == "delivered").await;
    let delivery = d["id"].as_str().unwrap();
    for (method, path) in [
        (Method::GET, format!("/v2/webhook_endpoints/{id_a}")),
        (Method::PATCH, format!("/v2/webhook_endpoints/{id_a}")),
        (Method::DELETE, format!("/v2/webhook_endpoints/{id_a}")),
        (
            Method::POST,
            format!("/v2/webhook_endpoints/{id_a}/actions/rotate_secret"),
        ),
        (Method::GET, format!("/v2/webhook_deliveries/{delivery}")),
        (
            Method::POST,
            format!("/v2/webhook_deliveries/{delivery}/actions/redeliver"),
        ),
    ] {
        let r = app
            .request(
                method.clone(),
                &path,
                Some(&b),
                Some(json!({ "enabled": false })),
            )
            .await;
        assert_eq!(r.status, 404, "{method} {path}: {}", r.text);
    }
    let r = app.get("/v2/webhook_deliveries", &b).await;
    assert!(!r.text.contains(delivery) && !r.text.contains("From A"));
    let r = app.get("/v2/webhook_endpoints", &b).await;
    assert_eq!(r.body["meta"]["total_results"], 1);
    assert_ne!(r.data()[0]["id"], id_a.as_str());
}

/// SSRF guard: in production an endpoint URL must reach the public internet.
#[tokio::test]
async fn production_refuses_endpoint_urls_that_point_inward() {
    let sink = MessageSink::start().await;
    let mut settings = warden::Settings::for_test(temp_dir());
    settings.env = warden::config::Environment::Production;
    settings.storage.master_key = Some(STANDARD.encode([7u8; 32]));
    settings.sender = warden::config::SenderKind::Http;
    settings.sender_url = Some(sink.url.clone());
    let mut scaled = settings.clone();
    scaled.webhook_retry_scale = 0.001;
    assert!(scaled.validate().is_err(), "no retry scaling in production");
    let app = spawn_with(settings).await;
    let (_, token) = app.owner().await;
    let before = app.event_count().await;
    for url in [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "https://[::1]/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.7/hook",
    ] {
        let r = app
            .post(
                "/v2/webhook_endpoints",
                Some(&token),
                json!({ "url": url, "event_types": ["*"] }),
            )
            .await;
        assert_eq!(r.status, 422, "{url}: {}", r.text);
        assert_eq!(r.code(), "webhook_url_not_public");
        assert_eq!(r.pointer(), "/url");
    }
    assert_eq!(app.event_count().await, before, "nothing written");
    let (id, _) = create_endpoint(&app, &token, "https://hooks.example.com/w", json!(["*"])).await;
    let r = app
        .request(
            Method::PATCH,
            &format!("/v2/webhook_endpoints/{id}"),
            Some(&token),
            Some(json!({ "url": "http://127.0.0.1:9/hook" })),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
}
