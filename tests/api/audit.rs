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
    let r = app.confirm_enrollment(&token, &id, &sink.last_code()).await;
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

#[tokio::test]
async fn a_long_stream_is_paged_replayed_and_verified_a_page_at_a_time() {
    let app = spawn_app_on(Backend::Postgres).await;
    let (_, token) = app.owner().await;
    let stream = app.user_stream(&token).await;
    // 2,400 more events, 500 a second: longer than one page of the store's reads.
    let mut version = 0;
    let mut ends = Vec::new();
    for count in [500, 500, 500, 500, 400] {
        app.clock.advance(Duration::seconds(1));
        version = app.append_profile_updates(&stream, count).await;
        ends.push((app.clock.now(), version));
    }
    let total = version;

    let page = |n: i64| {
        let path = format!("/v2/audit/streams/{stream}/events?page[size]=250&page[number]={n}");
        let (app, token) = (&app, token.clone());
        async move {
            let r = app.get(&path, &token).await;
            assert_eq!(r.status, 200, "{}", r.text);
            r
        }
    };
    let r = page(5).await;
    let versions: Vec<i64> = r
        .data()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["version"].as_i64().unwrap())
        .collect();
    assert_eq!(versions, (1001..=1250).collect::<Vec<_>>());
    assert_eq!(r.body["meta"]["total_results"], total);
    assert_eq!(r.body["meta"]["total_pages"], (total + 249) / 250);
    let last_page = (total + 249) / 250;
    let r = page(last_page).await;
    let data = r.data().as_array().unwrap();
    assert_eq!(data.last().unwrap()["version"], total);
    assert_eq!(data.first().unwrap()["version"], (last_page - 1) * 250 + 1);
    assert_eq!(
        page(last_page + 1).await.data().as_array().unwrap().len(),
        0
    );

    // The state as of the third second is at the version the third append ended on,
    // past the first page of the replay's reads.
    let (third, at_third) = ends[2];
    let path = format!(
        "/v2/audit/streams/{stream}/state?as_of={}",
        third
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            .replace('+', "%2B")
    );
    let r = app.get(&path, &token).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["version"], at_third);
    let r = app
        .get(&format!("/v2/audit/streams/{stream}/state"), &token)
        .await;
    assert_eq!(r.data()["version"], total, "{}", r.text);

    let r = app
        .get(&format!("/v2/audit/streams/{stream}/verify"), &token)
        .await;
    assert_eq!(r.data()["valid"], true, "{}", r.text);
    assert_eq!(r.data()["events"], total);
}

/// The entries of `GET /v2/audit_events?{query}` as `token`.
async fn audit_events(app: &TestApp, token: &str, query: &str) -> crate::helpers::Reply {
    let r = app.get(&format!("/v2/audit_events?{query}"), token).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r
}

fn change<'a>(entry: &'a serde_json::Value, field: &str) -> &'a serde_json::Value {
    entry["changes"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["field"] == field))
        .unwrap_or_else(|| panic!("no change of {field} in {entry}"))
}

#[tokio::test]
async fn audit_events_show_who_changed_what_from_what_to_what_with_secrets_redacted() {
    let (app, sink) = spawn_app_with_sink(Backend::Sqlite).await;
    let (_, token) = app.owner().await;
    let me = app.get("/v2/users/me", &token).await;
    let user_id = me.data()["id"].as_str().unwrap().to_owned();
    let org_id = app.get("/v2/organization", &token).await.data()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let start = app.clock.now();

    for name in ["Engines Ltd", "Difference Engines plc"] {
        app.clock.advance(Duration::seconds(10));
        let r = app
            .request(
                Method::PATCH,
                "/v2/organization",
                Some(&token),
                Some(json!({ "company_name": name })),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    app.clock.advance(Duration::seconds(10));
    let middle = app.clock.now();
    let group = crate::members::group(&app, &token, "Auditors", &["audit:read"]).await;
    let r = app
        .request(
            Method::PATCH,
            &format!("/v2/organization/permission_groups/{group}"),
            Some(&token),
            Some(json!({ "permissions": ["audit:read", "users:read"] })),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    app.clock.advance(Duration::seconds(10));
    let (secret, _) = enable_totp(&app, &token).await;
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
    let r = app.confirm_enrollment(&token, &id, &sink.last_code()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    // A member who reads the log with an API key of theirs.
    let keys = crate::members::group(&app, &token, "Keys", &["api_keys:manage"]).await;
    let (member_id, _, member_token) =
        crate::members::sub_user(&app, &sink, &token, &[&group, &keys]).await;
    let r = app
        .post(
            "/v2/api_keys",
            Some(&member_token),
            json!({ "name": "audits" }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let member_key = r.data()["secret"].as_str().unwrap().to_owned();
    let r = app
        .post(
            "/v2/api_keys",
            Some(&member_key),
            json!({ "name": "made with a key" }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);

    let all = audit_events(&app, &member_key, "sort=created_at&page[size]=250").await;
    let entries = all.data().as_array().unwrap().clone();
    assert_eq!(all.body["meta"]["total_results"], entries.len());
    for e in &entries {
        assert_eq!(e["record_type"], "audit_event");
        assert_eq!(e["organization_id"], org_id.as_str());
        assert!(e["id"].is_string() && e["created_at"].is_string());
    }
    let created: Vec<&str> = entries
        .iter()
        .filter_map(|e| e["created_at"].as_str())
        .collect();
    assert!(created.windows(2).all(|w| w[0] <= w[1]), "ascending");
    let of = |t: &'static str| entries.iter().filter(move |e| e["change_type"] == t);

    // Organization name: real before and after values, by the owner.
    let renames: Vec<_> = of("organization.updated").collect();
    assert_eq!(renames.len(), 2);
    assert_eq!(
        change(renames[0], "company_name")["from"],
        "Analytical Engines"
    );
    assert_eq!(change(renames[0], "company_name")["to"], "Engines Ltd");
    assert_eq!(change(renames[1], "company_name")["from"], "Engines Ltd");
    assert_eq!(
        change(renames[1], "company_name")["to"],
        "Difference Engines plc"
    );
    assert_eq!(renames[1]["change_made_by"], "account_owner");
    assert_eq!(renames[1]["user_id"], user_id.as_str());
    assert_eq!(renames[1]["resource_id"], org_id.as_str());
    assert_eq!(
        renames[1]["alternate_resource_id"],
        format!("organization-{org_id}")
    );
    // Permission group permissions.
    let updated = of("organization.permission_group_updated").next().unwrap();
    assert_eq!(updated["resource_id"], group.as_str());
    assert_eq!(
        change(updated, "permissions")["from"],
        json!(["audit:read"])
    );
    assert_eq!(
        change(updated, "permissions")["to"],
        json!(["users:read", "audit:read"])
    );
    // Two-factor method: totp, then sms.
    let enabled: Vec<_> = of("user.two_factor_enabled").collect();
    assert_eq!(change(enabled[0], "two_factor.method")["to"], "totp");
    let changed = of("user.two_factor_method_changed").next().unwrap();
    assert_eq!(change(changed, "two_factor.method")["from"], "totp");
    assert_eq!(change(changed, "two_factor.method")["to"], "sms");
    assert_eq!(changed["resource_id"], user_id.as_str());
    // Secrets and sealed values are redacted, never ciphertext, digests or the phone.
    let registered = of("user.registered").next().unwrap();
    assert_eq!(change(registered, "email")["to"], "[REDACTED]");
    assert_eq!(change(registered, "password_hash")["to"], "[REDACTED]");
    assert_eq!(
        change(enabled[0], "two_factor.backup_codes")["to"],
        "[REDACTED]"
    );
    let started = of("user.session_started").next().unwrap();
    assert_eq!(change(started, "session.token_digest")["to"], "[REDACTED]");
    let enrolling = of("user.two_factor_enrollment_started")
        .next_back()
        .unwrap();
    assert_eq!(
        change(enrolling, "two_factor_enrollment.phone_number")["to"],
        "[REDACTED]"
    );
    assert!(!all.text.contains("ciphertext") && !all.text.contains("3035550147"));
    // A member's change through their API key is theirs.
    let by_key = entries
        .iter()
        .rev()
        .find(|e| e["change_type"] == "user.api_key_created")
        .unwrap();
    assert_eq!(by_key["user_id"], member_id.as_str());
    assert_eq!(by_key["change_made_by"], "organization_member");

    // Filters, newest first by default, paging.
    let after = middle.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let before =
        (middle + Duration::seconds(1)).to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let r = audit_events(
        &app,
        &token,
        &format!("filter[created_before]={}", after.replace('+', "%2B")),
    )
    .await;
    let early = r.data().as_array().unwrap();
    assert!(!early.is_empty());
    assert!(early
        .iter()
        .all(|e| e["created_at"].as_str().unwrap() < after.as_str()));
    assert!(early
        .iter()
        .any(|e| e["change_type"] == "organization.updated"));
    assert!(!early
        .iter()
        .any(|e| e["change_type"] == "user.two_factor_enabled"));
    let start = start.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let r = audit_events(
        &app,
        &token,
        &format!("filter[created_after]={start}&filter[created_before]={before}"),
    )
    .await;
    let window = r.data().as_array().unwrap();
    assert!(window.iter().all(|e| {
        let t = e["created_at"].as_str().unwrap();
        t > start.as_str() && t < before.as_str()
    }));
    assert_eq!(
        window
            .iter()
            .filter(|e| e["change_type"] == "organization.updated")
            .count(),
        2
    );
    assert!(!window.iter().any(|e| e["change_type"] == "user.registered"));
    let desc = audit_events(&app, &token, "page[size]=3").await;
    assert_eq!(desc.data().as_array().unwrap().len(), 3);
    assert_eq!(desc.data()[0]["id"], entries.last().unwrap()["id"]);
    assert_eq!(desc.body["meta"]["total_pages"], entries.len().div_ceil(3));
    let page2 = audit_events(&app, &token, "sort=created_at&page[size]=3&page[number]=2").await;
    assert_eq!(page2.data()[0]["id"], entries[3]["id"]);
    assert_eq!(page2.body["meta"]["page_number"], 2);

    // Bad input is refused; another organization sees none of it.
    for bad in [
        "sort=name",
        "filter[created_after]=yesterday",
        "page[size]=0",
    ] {
        let r = app.get(&format!("/v2/audit_events?{bad}"), &token).await;
        assert_eq!(r.status, 422, "{bad}: {}", r.text);
    }
    let (_, other) = app.owner().await;
    let theirs = audit_events(&app, &other, "page[size]=250").await;
    assert!(theirs
        .data()
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["organization_id"] != org_id.as_str()));
    assert!(!theirs.data().as_array().unwrap().is_empty());
}
