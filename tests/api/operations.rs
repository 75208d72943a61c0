//! Health, readiness, metrics, the OpenAPI document and docs; rebuilds equal live read
//! models; audit verification catches a changed byte.

use std::sync::Arc;

use serde_json::json;
use warden_projections::{organizations, sessions, users};

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

#[tokio::test]
async fn a_rebuilt_read_model_equals_the_live_one() {
    let app = spawn_app().await;
    for _ in 0..3 {
        let (_, token) = app.owner().await;
        let r = app
            .request(
                reqwest::Method::PATCH,
                "/v2/users/me",
                Some(&token),
                Some(json!({ "last_name": "Byron", "phone_number": "+15555550100" })),
            )
            .await;
        assert_eq!(r.status, 200);
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
    let live = (
        users::all(pool).await.unwrap(),
        sessions::all(pool).await.unwrap(),
        organizations::all(pool).await.unwrap(),
    );
    for name in app.state.projections.names() {
        let mut calls = 0;
        app.state
            .projections
            .rebuild(name, |_, _| calls += 1)
            .await
            .unwrap();
        assert!(calls > 0, "progress is reported");
    }
    let rebuilt = (
        users::all(pool).await.unwrap(),
        sessions::all(pool).await.unwrap(),
        organizations::all(pool).await.unwrap(),
    );
    assert_eq!(live, rebuilt);
    assert_eq!(live.0.len(), 3);
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
