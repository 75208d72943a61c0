//! Health, readiness, metrics, the OpenAPI document and docs; rebuilds equal live read
//! models; audit verification catches a changed byte.

use std::sync::Arc;

use serde_json::json;
use warden_projections::{
    audit_events, members, organizations, sessions, users, verify, webhook_endpoints,
};

use crate::helpers::*;

#[tokio::test]
async fn health_readiness_metrics_openapi_and_docs_answer() {
    let app = spawn_app().await;
    let get = |path: &'static str| {
        let app = &app;
        async move {
            app.client
                .get(format!("{}{path}", app.address))
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(get("/healthz").await.status(), 200);
    assert_eq!(get("/readyz").await.status(), 200);
    let _ = app.sign_up("m@example.com").await;
    let metrics = get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("http_requests_total"), "{metrics}");
    let spec: serde_json::Value = get("/openapi.json").await.json().await.unwrap();
    assert!(spec["paths"]["/v2/accounts"]["post"].is_object());
    assert!(spec["paths"]["/v2/users/me"]["get"].is_object());
    let docs = get("/docs").await;
    assert_eq!(docs.status(), 200);
    assert!(docs.text().await.unwrap().contains("swagger-ui-bundle.js"));
    let init = get("/docs/assets/docs-init.js").await.text().await.unwrap();
    assert!(init.contains("/openapi.json"));
    let r = app
        .request(reqwest::Method::GET, "/v2/nothing-here", None, None)
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (404, "not_found"));
}

/// Every read model the live runner built (one small batch per pass) equals the one a
/// rebuild makes from the whole log (thousand-event batches, which the audit and webhook
/// projectors fold in memory), on both backends.
#[tokio::test]
async fn a_rebuilt_read_model_equals_the_live_one() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        rebuilt_equals_live(spawn_app_on(backend).await).await;
    }
}

/// The users model folds a rebuild's batch in memory (one read and one upsert per batch):
/// an SMS enrollment's number waits in the row until it is confirmed, profile changes pile
/// up, and the result is what the live runner wrote one command at a time.
#[tokio::test]
async fn a_rebuilt_users_model_carries_each_users_events_through_the_batch() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let (app, sink) = spawn_app_with_sink(backend).await;
        let mut tokens = Vec::new();
        for (phone, confirm) in [("+13035550111", true), ("+13035550122", false)] {
            let (_, token) = app.owner().await;
            for body in [
                json!({ "first_name": "Ada" }),
                json!({ "last_name": "Byron" }),
            ] {
                let r = app.patch_me(&token, body).await;
                assert_eq!(r.status, 200, "{}", r.text);
            }
            let r = app
                .post(
                    "/v2/users/me/two_factor/enrollments",
                    Some(&token),
                    json!({ "method": "sms", "phone_number": phone }),
                )
                .await;
            assert_eq!(r.status, 201, "{}", r.text);
            if confirm {
                let id = r.data()["enrollment_id"].as_str().unwrap().to_owned();
                let r = app.confirm_enrollment(&token, &id, &sink.last_code()).await;
                assert_eq!(r.status, 200, "{}", r.text);
            }
            tokens.push(token);
        }
        let pool = &app.state.db.pool;
        let pending = || async {
            sqlx::query_as::<_, (String, Option<String>)>(
                "SELECT user_id, two_factor_pending_phone FROM users ORDER BY user_id",
            )
            .fetch_all(pool)
            .await
            .unwrap()
        };
        let live = (users::all(pool).await.unwrap(), pending().await);
        app.state
            .projections
            .rebuild("users", |_, _| {})
            .await
            .unwrap();
        assert_eq!(live, (users::all(pool).await.unwrap(), pending().await));

        // What the live rows say, so the comparison covers each kind of change.
        let rows = &live.0;
        assert_eq!(rows.len(), 2, "{rows:?}");
        let enabled = rows
            .iter()
            .find(|r| r.two_factor_enabled == 1)
            .expect("the confirmed user");
        assert_eq!(enabled.two_factor_method.as_deref(), Some("sms"));
        assert!(
            enabled
                .two_factor_phone
                .as_deref()
                .is_some_and(|p| p.starts_with("+1303") && p.contains('*') && p.ends_with("11")),
            "{enabled:?}"
        );
        assert!(enabled.backup_codes_remaining > 0, "{enabled:?}");
        for row in rows {
            assert_eq!(
                (row.first_name.as_deref(), row.last_name.as_deref()),
                (Some("Ada"), Some("Byron")),
                "{row:?}"
            );
        }
        let waiting: Vec<&Option<String>> = live
            .1
            .iter()
            .map(|(_, phone)| phone)
            .filter(|p| p.is_some())
            .collect();
        assert_eq!(waiting.len(), 1, "{:?}", live.1);
        assert!(
            waiting[0].as_deref().is_some_and(|p| p.ends_with("22")),
            "{waiting:?}"
        );
    }
}

async fn rebuilt_equals_live(app: TestApp) {
    let mut organizations_seen = Vec::new();
    for i in 0..3 {
        let (_, token) = app.owner().await;
        // An endpoint on the first organization: later events are enqueued for it.
        if i == 0 {
            let r = app
                .post(
                    "/v2/webhook_endpoints",
                    Some(&token),
                    json!({ "url": "http://127.0.0.1:9/hook", "event_types": ["*"] }),
                )
                .await;
            assert_eq!(r.status, 201, "{}", r.text);
            // A verification with Telnyx-style webhooks: each carries the verification's
            // state after its event (a rejected code counts as a failed attempt). The
            // profile's name, shown in its audit entry, has what `COPY` text must escape
            // (its JSON has backslashes).
            let r = app
                .post(
                    "/v2/verify_profiles",
                    Some(&token),
                    json!({ "name": "Hooks \"Q\" \\ slash", "webhook_url": "http://127.0.0.1:9/verify",
                            "sms": { "app_name": "Hooks", "whitelisted_destinations": ["US"] } }),
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.text);
            let profile = r.data()["id"].as_str().unwrap().to_owned();
            let phone = "+13035551234";
            let r = app
                .post(
                    "/v2/verifications/sms",
                    Some(&token),
                    json!({ "phone_number": phone, "verify_profile_id": profile, "custom_code": "123456" }),
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.text);
            for code in ["000000", "123456"] {
                let r = app
                    .post(
                        &format!("/v2/verifications/by_phone_number/{phone}/actions/verify"),
                        Some(&token),
                        json!({ "code": code, "verify_profile_id": profile }),
                    )
                    .await;
                assert_eq!(r.status, 200, "{}", r.text);
            }
        }
        // The same field changed twice: the audit entries' `from` follows the chain.
        for name in ["Engines Ltd", "Difference Engines plc"] {
            let r = app
                .request(
                    reqwest::Method::PATCH,
                    "/v2/organization",
                    Some(&token),
                    Some(json!({ "company_name": name })),
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.text);
        }
        let r = app
            .request(
                reqwest::Method::PATCH,
                "/v2/users/me",
                Some(&token),
                Some(json!({ "last_name": "Byron", "phone_number": "+15555550100" })),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        let me = app.get("/v2/users/me", &token).await;
        organizations_seen.push(me.data()["organization_id"].as_str().unwrap().to_owned());
        let _ = app
            .request(
                reqwest::Method::DELETE,
                "/v2/sessions/current",
                Some(&token),
                None,
            )
            .await;
    }
    let pool = &app.state.db.pool;
    let snapshot = || async {
        let mut endpoints = Vec::new();
        for org in &organizations_seen {
            endpoints.push(format!(
                "{:?}",
                webhook_endpoints::endpoints(pool, org, 100, 0)
                    .await
                    .unwrap()
            ));
        }
        let deliveries: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT event_id, subscription, data FROM webhook_deliveries \
             ORDER BY event_id, subscription",
        )
        .fetch_all(pool)
        .await
        .unwrap();
        let verifications: Vec<verify::VerificationRow> = sqlx::query_as(
            "SELECT verification_id, organization_id, profile_id, phone_number, type, status, \
             delivery_status, failed_attempts, timeout_secs, custom_code, expires_at, \
             created_at, updated_at FROM verifications ORDER BY verification_id",
        )
        .fetch_all(pool)
        .await
        .unwrap();
        (
            users::all(pool).await.unwrap(),
            sessions::all(pool).await.unwrap(),
            organizations::all(pool).await.unwrap(),
            audit_events::all(pool).await.unwrap(),
            format!("{:?}", members::dump(pool).await.unwrap()),
            endpoints,
            deliveries,
            verifications,
        )
    };
    let live = snapshot().await;
    let catalog_before = catalog(&app).await;
    if app.settings.storage.database_url.is_some() {
        // A schema named after the user comes first on Postgres' default search path
        // (`"$user", public`) while the tables stay in `public`: a rebuild must copy and
        // replace the tables where the search path finds them, not in `current_schema()`.
        sqlx::query("CREATE SCHEMA IF NOT EXISTS \"postgres\"")
            .execute(pool)
            .await
            .unwrap();
        let current: String = sqlx::query_scalar("SELECT CAST(current_schema() AS TEXT)")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(current, "postgres");
    }
    // Deliveries are not emptied by a rebuild (re-enqueueing is a no-op); emptied here, the
    // rebuild must enqueue exactly the same ones again.
    sqlx::query("DELETE FROM webhook_deliveries")
        .execute(pool)
        .await
        .unwrap();
    for name in app.state.projections.names() {
        let mut calls = 0;
        app.state
            .projections
            .rebuild(name, |_, _| calls += 1)
            .await
            .unwrap();
        assert!(calls > 0, "progress is reported");
    }
    let rebuilt = snapshot().await;
    assert_eq!(live, rebuilt);
    // On Postgres the rebuilt tables replaced the live ones: the same columns, keys and
    // indexes under the same names, and no shadow schema left behind.
    assert_eq!(catalog_before, catalog(&app).await);
    // The pool's connections go on with the swapped-in tables.
    let (_, token) = app.owner().await;
    let r = app.patch_me(&token, json!({ "first_name": "After" })).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        app.get("/v2/users/me", &token).await.data()["first_name"],
        "After"
    );
    assert_eq!(live.0.len(), 3);
    // The comparison covers what the batched projectors build.
    let changes: Vec<&serde_json::Value> = live
        .3
        .iter()
        .flat_map(|e| e["changes"].as_array().unwrap())
        .filter(|c| c["field"] == "company_name")
        .collect();
    assert_eq!(changes.len(), 9, "{changes:?}");
    assert_eq!(
        changes
            .iter()
            .filter(|c| c["from"] == "Engines Ltd" && c["to"] == "Difference Engines plc")
            .count(),
        3,
        "{changes:?}"
    );
    assert!(
        !live.6.is_empty(),
        "deliveries were enqueued for the endpoint"
    );
    assert!(
        live.3.iter().any(|e| e["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["to"]["name"] == "Hooks \"Q\" \\ slash")),
        "the profile's name is in its audit entry as it was given"
    );
    // The verification's row carries every event's change: sent, delivered, one rejected
    // code, accepted.
    let [v] = live.7.as_slice() else {
        panic!("one verification: {:?}", live.7);
    };
    assert_eq!(
        (
            v.status.as_str(),
            v.delivery_status.as_str(),
            v.failed_attempts
        ),
        ("accepted", "delivered", 1),
        "{v:?}"
    );
}

/// Postgres: a rebuild stopped half-way (here: cancelled) leaves the live tables as they
/// were and holds nothing: the next rebuild runs (and drops what a rebuild that died
/// between its copier's commit and its own would have left), and commands go on.
#[tokio::test]
async fn a_cancelled_postgres_rebuild_leaves_the_read_models_as_they_were() {
    let (app, token) = postgres_app_with_a_long_log(8_000).await;
    let head = app.event_count().await;
    let projections = &app.state.projections;
    let models = || users_and_audit(&app);
    let (before, catalog_before) = (models().await, catalog(&app).await);
    let names = projections.names();
    // Cancelled once it has applied a batch to its copies.
    let (batch_applied, cancel) = tokio::sync::oneshot::channel::<()>();
    let mut batch_applied = Some(batch_applied);
    let rebuild = projections.rebuild_many(&names, |applied, _| {
        if applied > 0 {
            if let Some(tx) = batch_applied.take() {
                let _ = tx.send(());
            }
        }
    });
    tokio::select! {
        r = rebuild => panic!("the rebuild ended before it was cancelled: {r:?}"),
        _ = cancel => {}
    }
    assert_eq!(before, models().await);
    // What a rebuild that died between its copier's commit and its own would leave: the
    // next one drops it.
    for statement in [
        "CREATE SCHEMA \"warden_copies_leftover\"",
        "CREATE TABLE \"warden_copies_leftover\".audit_events (event_id TEXT PRIMARY KEY)",
    ] {
        sqlx::query(statement)
            .execute(&app.state.db.pool)
            .await
            .unwrap();
    }
    let applied = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        projections.rebuild_many(&names, |_, _| {}),
    )
    .await
    .expect("the next rebuild is not held up by the cancelled one")
    .unwrap();
    assert!(applied >= head);
    assert_eq!(before, models().await);
    assert_eq!(catalog_before, catalog(&app).await);
    let r = app
        .patch_me(&token, json!({ "first_name": "Afterwards" }))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

/// Postgres: a rebuild replays the log into its copies while the live projections go on,
/// so commands made meanwhile are answered before it ends (each waits for its own
/// projection), and they are in the models it swaps in. (Two worker threads, as the
/// server has at least: on one, the rebuild's decoding and folding, which no longer waits
/// on its writes, would keep the server's tasks from running at all, which a rebuild in
/// its own process never does.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_go_on_during_a_postgres_rebuild_and_land_in_its_models() {
    // A log long enough for the rebuild to take a while.
    let (app, token) = postgres_app_with_a_long_log(16_000).await;
    let store = app.state.store.clone();
    let head = store.head_position().await.unwrap();

    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
    // Commands answered so far, as seen by the rebuild after each batch it applied (before
    // it commits): in place, every batch comes after the checkpoints are locked, so none
    // can be answered in between; into shadow tables, most batches come before.
    let answered = AtomicUsize::new(0);
    let (first_batch, last_batch) = (AtomicUsize::new(usize::MAX), AtomicUsize::new(0));
    let done = AtomicBool::new(false);
    let names = app.state.projections.names();
    let rebuild = async {
        let applied = app
            .state
            .projections
            .rebuild_many(&names, |applied, _| {
                if applied > 0 {
                    let now = answered.load(SeqCst);
                    let _ = first_batch.compare_exchange(usize::MAX, now, SeqCst, SeqCst);
                    last_batch.store(now, SeqCst);
                }
            })
            .await
            .unwrap();
        done.store(true, SeqCst);
        applied
    };
    let commands = async {
        let mut sent = 0;
        while !done.load(SeqCst) && sent < 200 {
            let r = app
                .patch_me(&token, json!({ "first_name": format!("During{sent}") }))
                .await;
            assert_eq!(r.status, 200, "{}", r.text);
            answered.fetch_add(1, SeqCst);
            sent += 1;
        }
        sent
    };
    let (applied, sent) = tokio::join!(rebuild, commands);
    let during = last_batch
        .load(SeqCst)
        .saturating_sub(first_batch.load(SeqCst));
    assert!(applied >= head, "{applied} < {head}");
    assert!(
        during > 0,
        "no command was answered while the rebuild replayed ({sent} sent)"
    );
    let last = format!("During{}", sent - 1);
    assert_eq!(
        app.get("/v2/users/me", &token).await.data()["first_name"],
        last
    );

    // What the live projections and the rebuild left equals a rebuild with nothing running.
    let head = store.head_position().await.unwrap();
    app.state
        .projections
        .wait_for(head, std::time::Duration::from_secs(60))
        .await
        .unwrap();
    let models = || users_and_audit(&app);
    let after = models().await;
    assert!(
        after.1.len() >= 16_000 + sent,
        "an audit entry for each seeded event and command: {}",
        after.1.len()
    );
    app.state
        .projections
        .rebuild_many(&names, |_, _| {})
        .await
        .unwrap();
    assert_eq!(after, models().await);
}

/// A Postgres app whose owner's stream holds `events` more events (empty profile updates,
/// straight to the store), all projected; and the owner's token.
async fn postgres_app_with_a_long_log(events: usize) -> (TestApp, String) {
    let app = spawn_app_on(Backend::Postgres).await;
    let (_, token) = app.owner().await;
    let stream = app.user_stream(&token).await;
    for _ in 0..events / 500 {
        app.append_profile_updates(&stream, 500).await;
    }
    app.state
        .projections
        .wait_for(app.event_count().await, std::time::Duration::from_secs(60))
        .await
        .unwrap();
    (app, token)
}

/// The users and audit-log read models, for comparisons.
async fn users_and_audit(app: &TestApp) -> (Vec<users::UserRow>, Vec<serde_json::Value>) {
    let pool = &app.state.db.pool;
    (
        users::all(pool).await.unwrap(),
        audit_events::all(pool).await.unwrap(),
    )
}

/// Postgres: the read-model tables' columns, constraints and indexes (names and
/// definitions), and the schemas; empty on SQLite.
async fn catalog(app: &TestApp) -> Vec<String> {
    if app.settings.storage.database_url.is_none() {
        return Vec::new();
    }
    let pool = &app.state.db.pool;
    let mut tables: Vec<&str> = Vec::new();
    for name in app.state.projections.names() {
        tables.extend(app.state.projections.tables(name));
    }
    let mut lines: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(nspname AS TEXT) FROM pg_namespace \
         WHERE nspname LIKE 'warden_rebuild%' OR nspname LIKE 'warden_copies%'",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    for table in tables {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT 'in schema ' || CAST(n.nspname AS TEXT) FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = CAST($1 AS regclass) \
             UNION ALL SELECT CAST(a.attname AS TEXT) || ' ' || format_type(a.atttypid, a.atttypmod) \
             || ' ' || CAST(a.attnotnull AS TEXT) || ' ' || COALESCE(pg_get_expr(d.adbin, d.adrelid), '') \
             FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
             WHERE a.attrelid = CAST($1 AS regclass) AND a.attnum > 0 AND NOT a.attisdropped \
             UNION ALL SELECT CAST(conname AS TEXT) || ' ' || pg_get_constraintdef(oid) \
             FROM pg_constraint WHERE conrelid = CAST($1 AS regclass) \
             UNION ALL SELECT CAST(c.relname AS TEXT) || ' ' || pg_get_indexdef(i.indexrelid) \
             FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             WHERE i.indrelid = CAST($1 AS regclass) \
             ORDER BY 1",
        )
        .bind(table)
        .fetch_all(pool)
        .await
        .unwrap();
        assert!(!rows.is_empty(), "{table}");
        lines.push(format!("{table}: {rows:#?}"));
    }
    lines
}

#[tokio::test]
async fn verify_names_the_first_changed_event_on_both_backends() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let app = spawn_app_on(backend).await;
        let (email, token) = app.owner().await;
        let _ = app
            .request(
                reqwest::Method::PATCH,
                "/v2/users/me",
                Some(&token),
                Some(json!({ "first_name": "Ada" })),
            )
            .await;
        let me = app.get("/v2/users/me", &token).await;
        let stream = format!("user-{}", me.data()["id"].as_str().unwrap());
        let store = Arc::clone(&app.state.store);
        let report = store.verify_stream(&stream).await.unwrap();
        assert!(report.valid, "{email}: {report:?}");
        assert!(report.events >= 3);
        // One byte of the second event, changed behind Warden's back.
        sqlx::query("UPDATE events SET payload = REPLACE(payload, 'session_id', 'sessiom_id') WHERE stream_id = $1 AND version = 2")
            .bind(&stream)
            .execute(&app.state.db.pool)
            .await
            .unwrap();
        let report = store.verify_stream(&stream).await.unwrap();
        assert!(!report.valid);
        assert_eq!(report.first_broken_version, Some(2), "{backend:?}");
    }
}

#[tokio::test]
async fn concurrent_sign_ins_all_land_and_the_projector_sees_each_once() {
    let app = Arc::new(spawn_app_on(Backend::Postgres).await);
    let (email, _) = app.owner().await;
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let app = Arc::clone(&app);
        let email = email.clone();
        tasks.push(tokio::spawn(async move {
            app.sign_in_with(&email, PASSWORD).await.status.as_u16()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 201);
    }
    let pool = &app.state.db.pool;
    let sessions = sessions::all(pool).await.unwrap();
    assert_eq!(
        sessions.len(),
        13,
        "one row per session_started, none twice"
    );
    let head = app.event_count().await;
    let positions: Vec<i64> =
        sqlx::query_scalar("SELECT global_position FROM events ORDER BY global_position")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(positions, (1..=head).collect::<Vec<_>>(), "gapless");
}

/// The broadcast contract is published: one channel per event type with its exact subject.
#[tokio::test]
async fn the_asyncapi_document_names_every_event_type_and_its_subject() {
    use warden_domain::DomainEvent;
    let app = spawn_app().await;
    let r = app
        .request(reqwest::Method::GET, "/asyncapi.json", None, None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["asyncapi"], "3.0.0");
    let channels = r.body["channels"].as_object().expect("channels");
    for (stream_type, types) in [
        ("user", warden_domain::user::UserEvent::event_types()),
        (
            "organization",
            warden_domain::organization::OrganizationEvent::event_types(),
        ),
        (
            "verification",
            warden_domain::verify::verification::VerificationEvent::event_types(),
        ),
    ] {
        for t in types {
            let channel = &channels[&t.replace('.', "_")];
            assert_eq!(
                channel["address"],
                format!("warden.events.{stream_type}.{t}"),
                "{t}"
            );
        }
    }
    let envelope = &r.body["components"]["messages"]["envelope"]["payload"]["properties"];
    for field in [
        "event_id",
        "global_position",
        "hash",
        "prev_hash",
        "metadata",
    ] {
        assert!(envelope.get(field).is_some(), "{field}");
    }
}

/// A read model that, when `queues`, says after each batch that it queued deliveries.
struct SaysItQueued {
    queues: bool,
    queued: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl warden_projections::Projector for SaysItQueued {
    fn name(&self) -> &'static str {
        if self.queues {
            "test_queues"
        } else {
            "test_queues_nothing"
        }
    }

    fn tables(&self) -> &'static [&'static str] {
        &[]
    }

    async fn apply_batch(
        &self,
        _conn: &mut sqlx::AnyConnection,
        _events: &[warden_domain::RecordedEvent],
    ) -> Result<(), warden_projections::ProjectionError> {
        if self.queues {
            self.queued
                .store(true, std::sync::atomic::Ordering::Release);
        }
        Ok(())
    }

    fn take_queued_deliveries(&self) -> bool {
        self.queued.swap(false, std::sync::atomic::Ordering::AcqRel)
    }
}

/// The dispatcher is woken by the projection passes that queued deliveries (requests no
/// longer wake it after every command), and only by those.
#[tokio::test]
async fn a_pass_that_queued_deliveries_wakes_the_dispatcher_and_no_other_does() {
    use futures::FutureExt;
    let app = spawn_app_on(Backend::Postgres).await;
    app.owner().await;
    for queues in [true, false] {
        let wake = Arc::new(tokio::sync::Notify::new());
        let projector = SaysItQueued {
            queues,
            queued: Default::default(),
        };
        let projections = warden_projections::Projections::new(
            app.state.db.pool.clone(),
            app.state.store.clone(),
            vec![Arc::new(projector)],
        )
        .with_deliveries_wake(wake.clone());
        assert!(projections.catch_up_all().await.expect("a pass"));
        assert_eq!(
            wake.notified().now_or_never().is_some(),
            queues,
            "queued: {queues}"
        );
    }
}
