//! Forgetting a person (crypto-shredding), on Postgres with a real JetStream: afterwards no
//! table of the database and no message of a fresh replay of the stream holds their
//! personal data in plaintext, the hash chains still verify (offline too), their stream
//! still replays (redacted), the audit log still lists what happened, and a rebuild of
//! every read model yields the same scrubbed rows.

use serde_json::{json, Value};
use sqlx::Row;
use warden_commands::Clock;

use crate::helpers::*;

/// Every row of every table of the app's Postgres database, as text (a row cast to text
/// shows BYTEA as hex, so each needle is looked for in hex too).
async fn database_text(app: &TestApp) -> String {
    let pool = &app.state.db.pool;
    let tables = sqlx::query(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .expect("tables");
    assert!(tables.len() > 20, "every table is scanned");
    let mut out = String::new();
    for t in tables {
        let name: String = t.try_get(0).expect("name");
        let rows = sqlx::query(&format!("SELECT t::text FROM \"{name}\" t"))
            .fetch_all(pool)
            .await
            .expect("rows");
        for row in rows {
            out.push_str(&name);
            out.push(' ');
            out.push_str(&row.try_get::<String, _>(0).unwrap_or_default());
            out.push('\n');
        }
    }
    out
}

fn assert_absent(haystack: &str, needles: &[&str], what: &str) {
    for needle in needles {
        assert!(
            !haystack.contains(needle),
            "{what} holds {needle} in plaintext"
        );
        let hex = hex::encode(needle.as_bytes());
        assert!(!haystack.contains(&hex), "{what} holds {needle} (as hex)");
    }
}

#[tokio::test]
async fn a_forgotten_person_is_gone_from_every_table_and_the_stream_but_history_verifies() {
    let sink = MessageSink::start().await;
    let stream = format!("WF_{}", uuid::Uuid::new_v4().simple());
    let dir = temp_dir();
    let mut settings = warden::Settings::for_test(dir.clone());
    let database_url = fresh_postgres().await;
    settings.storage.database_url = Some(database_url.clone());
    settings.sender = warden::config::SenderKind::Http;
    settings.sender_url = Some(sink.url.clone());
    settings.nats_url = Some("nats://127.0.0.1:4222".into());
    settings.nats_stream = stream.clone();
    settings.nats_subject_prefix = format!("wf.{}", uuid::Uuid::new_v4().simple());
    let app = spawn_with(settings).await;
    let (_, owner) = app.owner().await;

    // A person with an address, names, a profile phone number and SMS 2FA.
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let email = format!("forget-me-{tag}@example.com");
    let first = format!("Zebulon{}", &tag[..8]);
    let last = format!("Quixote{}", &tag[8..16]);
    let phone = "+13035550199";
    let profile_phone = "+13035550177";
    let (_, invitation_token) = crate::members::invite(&app, &sink, &owner, &email, &[]).await;
    let r = app
        .post(
            "/v2/invitations/actions/accept",
            None,
            json!({ "token": invitation_token, "password": "a forgettable long passphrase",
                    "first_name": first, "last_name": last }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let user_id = r.data()["id"].as_str().expect("id").to_owned();
    let token = r.data()["session"]["token"]
        .as_str()
        .expect("token")
        .to_owned();
    // Their client's user agent is personal data too (it travels sealed for them).
    let agent = format!("ForgetMeBrowser/{}", &tag[16..24]);
    let r = app
        .client
        .patch(format!("{}/v2/users/me", app.address))
        .bearer_auth(&token)
        .header("user-agent", &agent)
        .json(&json!({ "phone_number": profile_phone }))
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status(), 200);
    let r = app
        .post(
            "/v2/users/me/two_factor/enrollments",
            Some(&token),
            json!({ "method": "sms", "phone_number": phone }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let enrollment = r.data()["enrollment_id"].as_str().expect("id").to_owned();
    let r = app
        .confirm_enrollment(&token, &enrollment, &sink.last_code())
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = app
        .get(&format!("/v2/organizations/users/{user_id}"), &owner)
        .await;
    assert_eq!(r.data()["email"], email.as_str(), "{}", r.text);
    let before_forget = app.clock.now();
    app.clock.advance(chrono::Duration::seconds(5));

    // Nobody forgets the owner; an unknown action is still 404.
    let me = app.get("/v2/users/me", &owner).await;
    let owner_id = me.data()["id"].as_str().expect("id").to_owned();
    let r = app
        .post(
            &format!("/v2/organizations/users/{owner_id}/actions/forget"),
            Some(&owner),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text);

    let r = app
        .post(
            &format!("/v2/organizations/users/{user_id}/actions/forget"),
            Some(&owner),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["email"], Value::Null, "{}", r.text);
    // Forgetting again records nothing more.
    let head = app.event_count().await;
    let r = app
        .post(
            &format!("/v2/organizations/users/{user_id}/actions/forget"),
            Some(&owner),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(app.event_count().await, head);
    // Their session is over, and their address is free for a new sign-up.
    assert_eq!(app.get("/v2/users/me", &token).await.status, 401);
    let r = app.sign_up(&email).await;
    assert_eq!(r.status, 201, "the address was released: {}", r.text);
    let new_person = app.sign_in_with(&email, PASSWORD).await;
    assert_eq!(new_person.status, 201);

    // The history still shows that things happened, for that user.
    let r = app
        .get("/v2/audit_events?sort=created_at&page[size]=250", &owner)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let about_them: Vec<&Value> = r
        .data()
        .as_array()
        .expect("list")
        .iter()
        .filter(|e| e["alternate_resource_id"] == format!("user-{user_id}"))
        .collect();
    let types: Vec<&str> = about_them
        .iter()
        .filter_map(|e| e["change_type"].as_str())
        .collect();
    for t in [
        "user.registered",
        "user.profile_updated",
        "user.two_factor_enabled",
        "user.removed",
        "user.forgotten",
    ] {
        assert!(types.contains(&t), "{t} missing from {types:?}");
    }
    let forgotten = about_them
        .iter()
        .find(|e| e["change_type"] == "user.forgotten")
        .expect("forgotten");
    assert_eq!(forgotten["change_made_by"], "account_owner");
    assert_eq!(forgotten["user_id"], owner_id.as_str());

    // Every table and a fresh replay of the stream: none of their personal data.
    let needles = [
        email.as_str(),
        first.as_str(),
        last.as_str(),
        phone,
        profile_phone,
        "3035550199",
        "3035550177",
    ];
    app.state
        .projections
        .wait_for(app.event_count().await, std::time::Duration::from_secs(10))
        .await
        .expect("caught up");
    let db = database_text(&app).await;
    // The new sign-up with the same address is another person; drop its rows from the scan.
    let new_user_id = app
        .get(
            "/v2/users/me",
            new_person.data()["token"].as_str().expect("token"),
        )
        .await
        .data()["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let db: String = db
        .lines()
        .filter(|l| !l.contains(&new_user_id))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(db.contains(&user_id), "the scan sees their rows");
    assert_absent(&db, &needles, "the database");
    let head = app.event_count().await;
    assert_eq!(
        crate::broadcast::wait_relayed(&app, std::time::Duration::from_secs(20)).await,
        head
    );
    let messages = crate::broadcast::stream_messages("nats://127.0.0.1:4222", &stream).await;
    assert!(messages
        .iter()
        .any(|(_, m)| m["event_type"] == "user.forgotten"));
    let messages: String = messages
        .iter()
        .map(|(_, m)| m.to_string())
        .filter(|m| !m.contains(&new_user_id))
        .collect::<Vec<_>>()
        .join("\n");
    assert_absent(&messages, &needles, "the NATS stream");

    // The chains still verify, over HTTP and offline.
    let user_stream = format!("user-{user_id}");
    let r = app
        .get(&format!("/v2/audit/streams/{user_stream}/verify"), &owner)
        .await;
    assert_eq!(r.data()["valid"], true, "{}", r.text);
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["audit", "verify", "--data-dir"])
        .arg(&dir)
        .args(["--database-url", &database_url])
        .env_remove("WARDEN_MASTER_KEY")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("warden runs");
    assert!(status.success(), "warden audit verify");

    // Their client facts were sealed for them, never stored in plaintext.
    let r = app
        .get(
            &format!("/v2/audit/streams/{user_stream}/events?page[size]=250"),
            &owner,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let updated = r
        .data()
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["event_type"] == "user.profile_updated")
        .expect("profile update");
    assert!(
        updated["metadata"]["client"]["ciphertext"].is_string(),
        "{updated}"
    );
    assert_eq!(
        updated["metadata"]["client"]["key_id"],
        user_stream.as_str()
    );
    assert!(
        updated["metadata"].get("ip").is_none() && updated["metadata"].get("user_agent").is_none()
    );

    // Their stream replays: as of before the forget the sealed fields show as sealed, and
    // after it nothing of theirs is left.
    let as_of = warden_domain::chain::format_time(before_forget);
    let r = app
        .get(
            &format!("/v2/audit/streams/{user_stream}/state?as_of={as_of}"),
            &owner,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["state"]["email"], "<sealed>");
    assert_eq!(r.data()["state"]["two_factor"]["method"], "sms");
    let r = app
        .get(&format!("/v2/audit/streams/{user_stream}/state"), &owner)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["state"]["email"], Value::Null);
    assert_eq!(r.data()["state"]["forgotten"], true);
    assert_eq!(r.data()["state"]["status"], "removed");

    // A rebuild from the log (their sealed values can no longer be opened) yields the same
    // scrubbed read models.
    let pool = &app.state.db.pool;
    let users_before = warden_projections::users::all(pool).await.expect("users");
    let members_before = warden_projections::members::dump(pool)
        .await
        .expect("members");
    let audit_before = warden_projections::audit_events::all(pool)
        .await
        .expect("audit");
    for name in app.state.projections.names() {
        app.state
            .projections
            .rebuild(name, |_, _| {})
            .await
            .expect("rebuild");
    }
    assert_eq!(
        warden_projections::users::all(pool).await.expect("users"),
        users_before
    );
    assert_eq!(
        warden_projections::members::dump(pool)
            .await
            .expect("members"),
        members_before
    );
    assert_eq!(
        warden_projections::audit_events::all(pool)
            .await
            .expect("audit"),
        audit_before
    );
    let db = database_text(&app).await;
    let db: String = db
        .lines()
        .filter(|l| !l.contains(&new_user_id))
        .collect::<Vec<_>>()
        .join("\n");
    assert_absent(&db, &needles, "the rebuilt database");

    app.stop().await;
    if let Ok(client) = async_nats::connect("nats://127.0.0.1:4222").await {
        let _ = async_nats::jetstream::new(client)
            .delete_stream(&stream)
            .await;
    }
}
