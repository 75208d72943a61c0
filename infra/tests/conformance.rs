//! The event-store conformance suite: every case runs against SQLite and Postgres, each on
//! its own fresh database, so the two backends are held to one contract.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::json;
use sqlx::{Connection, Executor, Row};
use uuid::Uuid;
use warden_commands::pipeline::{Meta, Pipeline};
use warden_commands::store::{
    AppendOutcome, AppendRequest, Claim, EventStore, IdempotencyAbandon, IdempotencyBegin,
    IdempotencyKey, IdempotencyLease, NewEvent, SavedResponse, Snapshot, StoreError, StreamAppend,
};
use warden_commands::{Clock, ManualClock};
use warden_domain::chain::{format_time, GENESIS};
use warden_domain::verify::values::VerifyChannel;
use warden_domain::verify::verification::{
    self, DeliveryStatus, Sent, Verification, VerificationCommand, VerificationError,
};
use warden_domain::{Aggregate, Digest, EventMetadata, Sealed};
use warden_infra::db::{Backend, Database};
use warden_infra::store::{open_store, APPEND_LOCK_KEY};

// ---------------------------------------------------------------------------------------
// Harness: one fresh database per test.

struct TestDb {
    db: Database,
    store: Arc<dyn EventStore>,
    cleanup: Cleanup,
}

enum Cleanup {
    Sqlite(PathBuf),
    Postgres { admin_url: String, name: String },
}

async fn sqlite_db() -> TestDb {
    let dir = std::env::temp_dir().join(format!("warden-conformance-{}", Uuid::new_v4().simple()));
    let db = Database::connect(None, &dir).await.expect("open sqlite");
    db.migrate().await.expect("migrate sqlite");
    TestDb {
        store: open_store(&db),
        db,
        cleanup: Cleanup::Sqlite(dir),
    }
}

async fn postgres_db() -> TestDb {
    sqlx::any::install_default_drivers();
    let admin_url = std::env::var("WARDEN_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let name = format!("warden_test_{}", Uuid::new_v4().simple());
    let mut admin = sqlx::AnyConnection::connect(&admin_url)
        .await
        .expect("connect to the Postgres maintenance database");
    // CREATE DATABASE fails while another session sits on template1; try again briefly.
    let mut attempt = 0;
    loop {
        match admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
        {
            Ok(_) => break,
            Err(e) if attempt < 20 => {
                attempt += 1;
                eprintln!("CREATE DATABASE {name} failed ({e}); retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("CREATE DATABASE {name}: {e}"),
        }
    }
    let _ = admin.close().await;
    let url = database_url(&admin_url, &name);
    let db = Database::connect(Some(&url), &std::env::temp_dir())
        .await
        .expect("open the test database");
    db.migrate().await.expect("migrate postgres");
    TestDb {
        store: open_store(&db),
        db,
        cleanup: Cleanup::Postgres { admin_url, name },
    }
}

/// The same server URL with another database name (any query string is kept).
fn database_url(admin_url: &str, name: &str) -> String {
    let (base, query) = match admin_url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (admin_url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let server = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{server}/{name}?{query}"),
        None => format!("{server}/{name}"),
    }
}

impl TestDb {
    async fn finish(self) {
        self.db.pool.close().await;
        match self.cleanup {
            Cleanup::Sqlite(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Cleanup::Postgres { admin_url, name } => {
                if let Ok(mut admin) = sqlx::AnyConnection::connect(&admin_url).await {
                    let _ = admin
                        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                        .await;
                    let _ = admin.close().await;
                }
            }
        }
    }
}

/// Runs a case, catching its panic so the database is dropped even when it fails.
async fn run(case: impl std::future::Future<Output = ()>) -> std::thread::Result<()> {
    use futures::FutureExt as _;
    std::panic::AssertUnwindSafe(case).catch_unwind().await
}

/// Instantiates every case for both backends: `sqlite::<case>` and `postgres::<case>`.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let t = super::sqlite_db().await;
                    let outcome = super::run(super::$case(&t)).await;
                    t.finish().await;
                    outcome.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let t = super::postgres_db().await;
                    let outcome = super::run(super::$case(&t)).await;
                    t.finish().await;
                    outcome.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                }
            )*
        }
    };
}

conformance!(
    appended_events_read_back_with_versions_positions_and_a_valid_chain,
    a_wrong_expected_version_conflicts_and_writes_nothing,
    a_conflict_in_a_later_stream_rolls_back_the_whole_request,
    a_reused_event_id_fails_and_writes_nothing,
    claims_are_exclusive_and_released_claims_become_free,
    concurrent_appends_get_gapless_commit_ordered_positions,
    a_tampered_payload_byte_is_named_by_verify,
    an_unreadable_row_is_corrupt_not_a_panic,
    snapshots_only_move_forward,
    idempotency_records_walk_their_state_machine,
    a_taken_over_idempotency_record_is_lost_to_its_old_owner,
    read_all_pages_in_global_order_and_head_follows,
    an_append_waits_for_a_slower_writer_holding_the_append_lock,
    appends_queued_together_each_get_their_own_result,
    pipelines_on_one_store_load_what_the_log_says,
    a_refusal_decided_on_a_kept_state_is_decided_again_on_the_log,
    a_long_stream_is_read_and_loaded_in_pages,
);

// ---------------------------------------------------------------------------------------
// Builders.

fn t0() -> DateTime<Utc> {
    // Sub-microsecond digits are cut by `format_time`; stored times keep microseconds.
    Utc.with_ymd_and_hms(2026, 3, 14, 15, 9, 26)
        .single()
        .unwrap()
        + chrono::Duration::nanoseconds(535_897_932)
}

fn event(n: i64) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: "test.something_happened".into(),
        schema_version: 1,
        payload: json!({ "n": n, "text": "héllo \"world\"\n", "nested": { "z": [1, 2.5, null], "a": true } }),
    }
}

fn events(first: i64, count: i64) -> Vec<NewEvent> {
    (first..first + count).map(event).collect()
}

fn stream(id: &str, expected_version: i64, events: Vec<NewEvent>) -> StreamAppend {
    StreamAppend {
        stream_id: id.into(),
        stream_type: "test".into(),
        expected_version,
        events,
    }
}

fn request(streams: Vec<StreamAppend>) -> AppendRequest {
    AppendRequest {
        streams,
        metadata: EventMetadata {
            actor: Some(format!("user:{}", Uuid::now_v7())),
            correlation_id: Uuid::now_v7(),
            causation_id: Some(Uuid::now_v7()),
            idempotency_key: Some("key-1".into()),
            ip: Some("203.0.113.7".into()),
            user_agent: Some("conformance/1.0".into()),
            client: None,
        },
        recorded_at: t0(),
        ..Default::default()
    }
}

fn claim(key: &str, owner: &str) -> Claim {
    Claim {
        key: key.into(),
        owner_stream_id: owner.into(),
    }
}

async fn assert_stream_is_empty(store: &dyn EventStore, stream_id: &str) {
    assert!(
        store.read_stream(stream_id, 0).await.unwrap().is_empty(),
        "{stream_id} must be empty"
    );
}

// ---------------------------------------------------------------------------------------
// Cases.

async fn appended_events_read_back_with_versions_positions_and_a_valid_chain(t: &TestDb) {
    let store = t.store.as_ref();
    store.ping().await.unwrap();
    assert_eq!(store.head_position().await.unwrap(), 0);

    let req = request(vec![stream("user-a", 0, events(1, 3))]);
    let sent = req.clone();
    let outcome = store.append(req).await.unwrap();
    assert_eq!(outcome.last_position, 3);
    assert_eq!(outcome.events.len(), 3);

    let read = store.read_stream("user-a", 0).await.unwrap();
    assert_eq!(
        read, outcome.events,
        "what append returns is what is stored"
    );
    for (i, (e, new)) in read.iter().zip(&sent.streams[0].events).enumerate() {
        let n = i as i64 + 1;
        assert_eq!(e.version, n);
        assert_eq!(e.global_position, n);
        assert_eq!(e.event_id, new.event_id);
        assert_eq!(e.event_type, new.event_type);
        assert_eq!(e.schema_version, 1);
        assert_eq!(e.payload, new.payload);
        assert_eq!(e.metadata, sent.metadata);
        assert_eq!(e.stream_type, "test");
        assert_eq!(format_time(e.recorded_at), format_time(sent.recorded_at));
    }
    assert_eq!(read[0].prev_hash, GENESIS);
    assert_eq!(read[1].prev_hash, read[0].hash);
    assert_eq!(read[2].prev_hash, read[1].hash);

    let raw = store.read_stream_raw("user-a", 0, i64::MAX).await.unwrap();
    assert_eq!(raw.len(), 3);
    assert_eq!(raw[0].recorded_at, format_time(sent.recorded_at));
    assert_eq!(
        raw[0].payload,
        serde_json::to_string(&sent.streams[0].events[0].payload).unwrap()
    );
    assert_eq!(
        raw[0].metadata,
        serde_json::to_string(&sent.metadata).unwrap()
    );

    // Later versions only; then a continuation, and a stream named twice in one request.
    let later = store.read_stream("user-a", 2).await.unwrap();
    assert_eq!(later.iter().map(|e| e.version).collect::<Vec<_>>(), vec![3]);
    let outcome = store
        .append(request(vec![
            stream("user-a", 3, events(4, 1)),
            stream("user-b", 0, events(1, 1)),
            stream("user-b", 1, events(2, 2)),
        ]))
        .await
        .unwrap();
    assert_eq!(outcome.last_position, 7);
    assert_eq!(
        outcome
            .events
            .iter()
            .map(|e| (e.stream_id.as_str(), e.version, e.global_position))
            .collect::<Vec<_>>(),
        vec![
            ("user-a", 4, 4),
            ("user-b", 1, 5),
            ("user-b", 2, 6),
            ("user-b", 3, 7)
        ]
    );
    for (id, count) in [("user-a", 4), ("user-b", 3)] {
        let report = store.verify_stream(id).await.unwrap();
        assert!(report.valid, "{id}: {report:?}");
        assert_eq!(report.events, count);
    }
    assert_eq!(store.head_position().await.unwrap(), 7);
    let unknown = store.verify_stream("user-nobody").await.unwrap();
    assert!(unknown.valid && unknown.events == 0);

    // Several streams in one read: each whole and in version order, unknown ones empty.
    let names = |ids: &[&str]| ids.iter().map(|id| id.to_string()).collect::<Vec<_>>();
    let both = store
        .read_streams(&names(&["user-b", "user-nobody", "user-a"]))
        .await
        .unwrap();
    let mut expected = store.read_stream("user-a", 0).await.unwrap();
    expected.extend(store.read_stream("user-b", 0).await.unwrap());
    let mut got = both.clone();
    got.sort_by(|x, y| (&x.stream_id, x.version).cmp(&(&y.stream_id, y.version)));
    assert_eq!(got, expected);
    for id in ["user-a", "user-b"] {
        let versions: Vec<i64> = both
            .iter()
            .filter(|e| e.stream_id == id)
            .map(|e| e.version)
            .collect();
        assert!(
            versions.windows(2).all(|w| w[0] < w[1]),
            "{id}: {versions:?}"
        );
    }
    assert!(store.read_streams(&[]).await.unwrap().is_empty());
    // More streams than one statement names.
    let many: Vec<String> = (0..450).map(|i| format!("many-{i}")).collect();
    store
        .append(request(
            many.iter().map(|id| stream(id, 0, events(1, 1))).collect(),
        ))
        .await
        .unwrap();
    let read = store.read_streams(&many).await.unwrap();
    let mut ids: Vec<&str> = read.iter().map(|e| e.stream_id.as_str()).collect();
    ids.sort_unstable();
    let mut want: Vec<&str> = many.iter().map(String::as_str).collect();
    want.sort_unstable();
    assert_eq!(ids, want);
}

async fn a_wrong_expected_version_conflicts_and_writes_nothing(t: &TestDb) {
    let store = t.store.as_ref();
    store
        .append(request(vec![stream("s1", 0, events(1, 2))]))
        .await
        .unwrap();

    for expected in [0, 1, 5] {
        let mut req = request(vec![stream("s1", expected, events(10, 1))]);
        req.claims.push(claim("email:conflict", "s1"));
        let err = store.append(req).await.unwrap_err();
        assert_eq!(
            err,
            StoreError::VersionConflict {
                stream_id: "s1".into(),
                expected,
                actual: 2
            }
        );
    }
    assert_eq!(store.read_stream("s1", 0).await.unwrap().len(), 2);
    assert_eq!(store.head_position().await.unwrap(), 2);
    assert_eq!(store.claim_owner("email:conflict").await.unwrap(), None);

    // The right version still works afterwards, at the next position.
    let outcome = store
        .append(request(vec![stream("s1", 2, events(3, 1))]))
        .await
        .unwrap();
    assert_eq!(outcome.last_position, 3);
    assert!(store.verify_stream("s1").await.unwrap().valid);
}

async fn a_conflict_in_a_later_stream_rolls_back_the_whole_request(t: &TestDb) {
    let store = t.store.as_ref();
    store
        .append(request(vec![stream("s1", 0, events(1, 1))]))
        .await
        .unwrap();
    let mut req = request(vec![
        stream("s2", 0, events(1, 2)),
        stream("s1", 0, events(2, 1)),
    ]);
    req.claims.push(claim("phone:+15550100", "s2"));
    let key = IdempotencyKey {
        scope: "user:x".into(),
        key: "k".into(),
    };
    req.idempotency = Some(started(
        store
            .idempotency_begin(&key, "h", t0(), chrono::Duration::seconds(60))
            .await
            .unwrap(),
    ));
    let err = store.append(req.clone()).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::VersionConflict { stream_id, expected: 0, actual: 1 } if stream_id == "s1"),
        "{err:?}"
    );
    assert_stream_is_empty(store, "s2").await;
    assert_eq!(store.claim_owner("phone:+15550100").await.unwrap(), None);
    assert_eq!(store.head_position().await.unwrap(), 1);
    // The idempotency mark was rolled back with it: the record is still in flight.
    assert_eq!(
        store
            .idempotency_begin(&key, "h", t0(), chrono::Duration::seconds(60))
            .await
            .unwrap(),
        IdempotencyBegin::InFlight
    );
}

async fn a_reused_event_id_fails_and_writes_nothing(t: &TestDb) {
    let store = t.store.as_ref();
    let first = events(1, 1);
    store
        .append(request(vec![stream("s1", 0, first.clone())]))
        .await
        .unwrap();
    let err = store
        .append(request(vec![stream(
            "s2",
            0,
            vec![event(1), first[0].clone()],
        )]))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
    assert_stream_is_empty(store, "s2").await;
    assert_eq!(store.head_position().await.unwrap(), 1);
}

async fn claims_are_exclusive_and_released_claims_become_free(t: &TestDb) {
    let store = t.store.as_ref();
    let mut req = request(vec![stream("user-1", 0, events(1, 1))]);
    req.claims.push(claim("email:a", "user-1"));
    store.append(req).await.unwrap();
    assert_eq!(
        store.claim_owner("email:a").await.unwrap().as_deref(),
        Some("user-1")
    );
    assert_eq!(store.claim_owner("email:zzz").await.unwrap(), None);

    // Another stream cannot take it; nothing of that request is written.
    let mut req = request(vec![stream("user-2", 0, events(1, 1))]);
    req.claims.push(claim("email:b", "user-2"));
    req.claims.push(claim("email:a", "user-2"));
    assert_eq!(
        store.append(req).await.unwrap_err(),
        StoreError::ClaimTaken {
            key: "email:a".into()
        }
    );
    assert_stream_is_empty(store, "user-2").await;
    assert_eq!(store.claim_owner("email:b").await.unwrap(), None);
    assert_eq!(store.head_position().await.unwrap(), 1);

    // Taking one's own claim again is a no-op.
    let mut req = request(vec![stream("user-1", 1, events(2, 1))]);
    req.claims.push(claim("email:a", "user-1"));
    store.append(req).await.unwrap();
    assert_eq!(
        store.claim_owner("email:a").await.unwrap().as_deref(),
        Some("user-1")
    );

    // A stream outside the request cannot release someone else's claim.
    let mut req = request(vec![stream("user-3", 0, events(1, 1))]);
    req.released_claims.push("email:a".into());
    store.append(req).await.unwrap();
    assert_eq!(
        store.claim_owner("email:a").await.unwrap().as_deref(),
        Some("user-1")
    );

    // Changing address: release the old, take the new, in one append.
    let mut req = request(vec![stream("user-1", 2, events(3, 1))]);
    req.released_claims.push("email:a".into());
    req.claims.push(claim("email:c", "user-1"));
    store.append(req).await.unwrap();
    assert_eq!(store.claim_owner("email:a").await.unwrap(), None);
    assert_eq!(
        store.claim_owner("email:c").await.unwrap().as_deref(),
        Some("user-1")
    );

    // The freed claim can now be taken by another stream.
    let mut req = request(vec![stream("user-2", 0, events(1, 1))]);
    req.claims.push(claim("email:a", "user-2"));
    let outcome = store.append(req).await.unwrap();
    assert_eq!(
        store.claim_owner("email:a").await.unwrap().as_deref(),
        Some("user-2")
    );
    assert_eq!(outcome.last_position, 5);

    // Claims only (a stream with no events): no position moves.
    let mut req = request(vec![stream("user-2", 1, vec![])]);
    req.claims.push(claim("username:two", "user-2"));
    let outcome = store.append(req).await.unwrap();
    assert!(outcome.events.is_empty());
    assert_eq!(outcome.last_position, 5);
    assert_eq!(
        store.claim_owner("username:two").await.unwrap().as_deref(),
        Some("user-2")
    );
    assert_eq!(store.head_position().await.unwrap(), 5);
}

async fn concurrent_appends_get_gapless_commit_ordered_positions(t: &TestDb) {
    const WRITERS: usize = 16;
    const APPENDS: usize = 25;
    const STREAMS: usize = 4;

    let done = Arc::new(AtomicBool::new(false));
    let conflicts = Arc::new(AtomicU64::new(0));

    // A catch-up reader that must never see a gap or a position twice.
    let reader = {
        let store = t.store.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut cursor = 0_i64;
            let mut seen = Vec::new();
            loop {
                let finished = done.load(Ordering::SeqCst);
                let batch = store.read_all(cursor, 100).await.unwrap();
                for e in &batch {
                    assert_eq!(
                        e.global_position,
                        cursor + 1,
                        "reader saw a gap or a repeat"
                    );
                    cursor = e.global_position;
                    seen.push(e.event_id);
                }
                if batch.is_empty() {
                    if finished {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            (cursor, seen)
        })
    };

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = t.store.clone();
        let conflicts = conflicts.clone();
        writers.push(tokio::spawn(async move {
            let mut known: BTreeMap<String, i64> = BTreeMap::new();
            let mut written = Vec::new();
            for i in 0..APPENDS {
                // Mostly one stream, sometimes two at once (overlapping with other writers).
                let a = format!("conc-{}", (w + i) % STREAMS);
                let b = format!("conc-{}", (w + i + 1) % STREAMS);
                let names: Vec<String> = if i % 5 == 0 { vec![a, b] } else { vec![a] };
                loop {
                    let streams = names
                        .iter()
                        .map(|s| {
                            stream(
                                s,
                                *known.get(s).unwrap_or(&0),
                                events(i as i64, 1 + (i % 2) as i64),
                            )
                        })
                        .collect();
                    match store.append(request(streams)).await {
                        Ok(outcome) => {
                            for e in &outcome.events {
                                known.insert(e.stream_id.clone(), e.version);
                                written.push(e.event_id);
                            }
                            break;
                        }
                        Err(StoreError::VersionConflict {
                            stream_id, actual, ..
                        }) => {
                            conflicts.fetch_add(1, Ordering::Relaxed);
                            known.insert(stream_id, actual);
                        }
                        Err(e) => panic!("append failed: {e}"),
                    }
                }
            }
            written
        }));
    }
    let mut written = Vec::new();
    for w in writers {
        written.extend(w.await.unwrap());
    }
    done.store(true, Ordering::SeqCst);
    let (cursor, seen) = reader.await.unwrap();

    let store = t.store.as_ref();
    let total = written.len() as i64;
    assert_eq!(store.head_position().await.unwrap(), total);
    assert_eq!(cursor, total);
    assert_eq!(
        seen.len(),
        written.len(),
        "every committed event exactly once"
    );
    let seen_set: HashSet<Uuid> = seen.iter().copied().collect();
    assert_eq!(seen_set.len(), seen.len());
    assert_eq!(seen_set, written.iter().copied().collect::<HashSet<_>>());

    let all = store.read_all(0, total + 10).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.global_position).collect::<Vec<_>>(),
        (1..=total).collect::<Vec<_>>()
    );
    let mut per_stream = 0;
    for s in 0..STREAMS {
        let id = format!("conc-{s}");
        let versions: Vec<i64> = store
            .read_stream(&id, 0)
            .await
            .unwrap()
            .iter()
            .map(|e| e.version)
            .collect();
        assert_eq!(versions, (1..=versions.len() as i64).collect::<Vec<_>>());
        per_stream += versions.len();
        let report = store.verify_stream(&id).await.unwrap();
        assert!(report.valid, "{id}: {report:?}");
    }
    assert_eq!(per_stream as i64, total);
    eprintln!(
        "{:?}: {total} events committed by {WRITERS}×{APPENDS} appends, {} conflicts retried",
        t.db.backend,
        conflicts.load(Ordering::Relaxed)
    );
}

async fn a_tampered_payload_byte_is_named_by_verify(t: &TestDb) {
    let store = t.store.as_ref();
    store
        .append(request(vec![stream("victim", 0, events(1, 4))]))
        .await
        .unwrap();
    store
        .append(request(vec![stream("bystander", 0, events(1, 3))]))
        .await
        .unwrap();
    assert!(store.verify_stream("victim").await.unwrap().valid);

    let row = sqlx::query("SELECT payload FROM events WHERE stream_id = $1 AND version = 3")
        .bind("victim")
        .fetch_one(&t.db.pool)
        .await
        .unwrap();
    let payload: String = row.try_get("payload").unwrap();
    // One byte: "n":3 → "n":8, still valid JSON.
    let tampered = payload.replacen("\"n\":3", "\"n\":8", 1);
    assert_ne!(tampered, payload);
    assert_eq!(tampered.len(), payload.len());
    sqlx::query("UPDATE events SET payload = $1 WHERE stream_id = $2 AND version = 3")
        .bind(tampered)
        .bind("victim")
        .execute(&t.db.pool)
        .await
        .unwrap();

    let report = store.verify_stream("victim").await.unwrap();
    assert!(!report.valid);
    assert_eq!(report.first_broken_version, Some(3));
    assert_eq!(report.events, 4);
    assert!(store.verify_stream("bystander").await.unwrap().valid);
    // Still readable: tampering is a chain matter, not a parse error.
    assert_eq!(
        store.read_stream("victim", 0).await.unwrap()[2].payload["n"],
        8
    );
}

async fn an_unreadable_row_is_corrupt_not_a_panic(t: &TestDb) {
    let store = t.store.as_ref();
    store
        .append(request(vec![stream("s1", 0, events(1, 2))]))
        .await
        .unwrap();
    for (column, text) in [("payload", "{not json"), ("metadata", "[]")] {
        sqlx::query(&format!(
            "UPDATE events SET {column} = $1 WHERE stream_id = 's1' AND version = 2"
        ))
        .bind(text)
        .execute(&t.db.pool)
        .await
        .unwrap();
        assert!(matches!(
            store.read_stream("s1", 0).await,
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            store.read_all(0, 10).await,
            Err(StoreError::Corrupt(_))
        ));
        let message = store.read_stream("s1", 0).await.unwrap_err().to_string();
        assert!(
            !message.contains(text),
            "the error must not quote stored content"
        );
        // The version before it still reads, and verify names the broken one.
        assert_eq!(store.read_all(0, 1).await.unwrap().len(), 1);
        assert_eq!(
            store
                .verify_stream("s1")
                .await
                .unwrap()
                .first_broken_version,
            Some(2)
        );
    }
}

async fn snapshots_only_move_forward(t: &TestDb) {
    let store = t.store.as_ref();
    assert_eq!(store.load_snapshot("user-1").await.unwrap(), None);
    let snap = |schema_version, version, n| Snapshot {
        stream_id: "user-1".into(),
        schema_version,
        version,
        state: json!({ "n": n, "name": "Zoë", "list": [3, 1, 2] }),
    };
    store.save_snapshot(snap(1, 3, 3)).await.unwrap();
    assert_eq!(
        store.load_snapshot("user-1").await.unwrap(),
        Some(snap(1, 3, 3))
    );
    store.save_snapshot(snap(1, 2, 2)).await.unwrap();
    assert_eq!(
        store.load_snapshot("user-1").await.unwrap(),
        Some(snap(1, 3, 3)),
        "older is ignored"
    );
    store.save_snapshot(snap(1, 3, 99)).await.unwrap();
    assert_eq!(
        store.load_snapshot("user-1").await.unwrap(),
        Some(snap(1, 3, 3)),
        "same is ignored"
    );
    store.save_snapshot(snap(1, 7, 7)).await.unwrap();
    assert_eq!(
        store.load_snapshot("user-1").await.unwrap(),
        Some(snap(1, 7, 7))
    );
    // A newer snapshot schema at the same version replaces; an older one does not.
    store.save_snapshot(snap(2, 7, 70)).await.unwrap();
    assert_eq!(
        store.load_snapshot("user-1").await.unwrap(),
        Some(snap(2, 7, 70))
    );
    store.save_snapshot(snap(1, 7, 7)).await.unwrap();
    assert_eq!(
        store.load_snapshot("user-1").await.unwrap(),
        Some(snap(2, 7, 70))
    );
    assert_eq!(store.load_snapshot("user-2").await.unwrap(), None);

    // A snapshot is a cache: an unreadable one reads as none.
    sqlx::query("UPDATE snapshots SET state = '{oops' WHERE stream_id = 'user-1'")
        .execute(&t.db.pool)
        .await
        .unwrap();
    assert_eq!(store.load_snapshot("user-1").await.unwrap(), None);
}

/// The lease of a begin that started (or took over) its record.
fn started(begin: IdempotencyBegin) -> IdempotencyLease {
    match begin {
        IdempotencyBegin::Started(lease) => lease,
        other => panic!("expected Started, got {other:?}"),
    }
}

fn keyed(events: Vec<NewEvent>, version: i64, lease: &IdempotencyLease) -> AppendRequest {
    let mut req = request(vec![stream("s1", version, events)]);
    req.idempotency = Some(lease.clone());
    req
}

async fn idempotency_records_walk_their_state_machine(t: &TestDb) {
    let store = t.store.as_ref();
    let stale = chrono::Duration::seconds(60);
    let at = |secs| t0() + chrono::Duration::seconds(secs);
    let key = |k: &str| IdempotencyKey {
        scope: "user:1".into(),
        key: k.into(),
    };
    let k = key("k1");

    let first = started(
        store
            .idempotency_begin(&k, "h1", at(0), stale)
            .await
            .unwrap(),
    );
    assert_eq!(first.key, k);
    assert_eq!(
        store
            .idempotency_begin(&k, "h1", at(1), stale)
            .await
            .unwrap(),
        IdempotencyBegin::InFlight
    );
    assert_eq!(
        store
            .idempotency_begin(&k, "h2", at(1), stale)
            .await
            .unwrap(),
        IdempotencyBegin::Mismatch
    );
    // The same key in another scope is another record.
    let other_scope = IdempotencyKey {
        scope: "user:2".into(),
        key: "k1".into(),
    };
    let other = started(
        store
            .idempotency_begin(&other_scope, "h2", at(1), stale)
            .await
            .unwrap(),
    );
    assert_ne!(
        other.owner, first.owner,
        "every start gets a fresh owner token"
    );

    // A crashed first attempt goes stale and is taken over, once, under a new owner.
    let lease = started(
        store
            .idempotency_begin(&k, "h1", at(120), stale)
            .await
            .unwrap(),
    );
    assert_ne!(lease.owner, first.owner);
    assert_eq!(
        store
            .idempotency_begin(&k, "h1", at(121), stale)
            .await
            .unwrap(),
        IdempotencyBegin::InFlight
    );

    // The append marks it committed atomically with its events. While its owner may still
    // be finishing, a retry is told it is in flight; once stale, that the response is lost.
    store.append(keyed(events(1, 1), 0, &lease)).await.unwrap();
    assert_eq!(
        store
            .idempotency_begin(&k, "h1", at(122), stale)
            .await
            .unwrap(),
        IdempotencyBegin::InFlight
    );
    // A second append of the same request (one command, two commits) is still its own.
    store.append(keyed(events(2, 1), 1, &lease)).await.unwrap();
    // Even long after: a committed effect never runs twice, and abandon keeps it.
    assert_eq!(
        store
            .idempotency_begin(&k, "h1", at(10_000), stale)
            .await
            .unwrap(),
        IdempotencyBegin::CommittedWithoutResponse
    );
    assert_eq!(
        store.idempotency_abandon(&lease).await.unwrap(),
        IdempotencyAbandon::Committed
    );
    assert_eq!(
        store
            .idempotency_begin(&k, "h1", at(123), stale)
            .await
            .unwrap(),
        IdempotencyBegin::InFlight
    );
    assert_eq!(
        store
            .idempotency_begin(&k, "h1", at(10_001), stale)
            .await
            .unwrap(),
        IdempotencyBegin::CommittedWithoutResponse
    );
    assert_eq!(
        store
            .idempotency_begin(&k, "h2", at(123), stale)
            .await
            .unwrap(),
        IdempotencyBegin::Mismatch
    );

    // Its owner saves the final answer (after a 5xx, the one that says so).
    let response = SavedResponse {
        status: 201,
        body: vec![0, 159, 146, 150, 255, b'{'],
    };
    store
        .idempotency_finish(&lease, response.clone())
        .await
        .unwrap();
    assert_eq!(
        store
            .idempotency_begin(&k, "h1", at(124), stale)
            .await
            .unwrap(),
        IdempotencyBegin::Replay(response.clone())
    );
    // A finished record takes no further effect, and keeps its answer.
    let head = store.head_position().await.unwrap();
    assert_eq!(
        store
            .append(keyed(events(3, 1), 2, &lease))
            .await
            .unwrap_err(),
        StoreError::IdempotencyLeaseLost
    );
    assert_eq!(store.head_position().await.unwrap(), head);
    assert_eq!(
        store
            .idempotency_finish(
                &lease,
                SavedResponse {
                    status: 200,
                    body: vec![],
                },
            )
            .await
            .unwrap_err(),
        StoreError::IdempotencyLeaseLost
    );
    assert_eq!(
        store
            .idempotency_begin(&k, "h1", at(125), stale)
            .await
            .unwrap(),
        IdempotencyBegin::Replay(response)
    );

    // A 5xx with nothing committed: abandon, and the retry runs.
    let k2 = key("k2");
    let lease2 = started(
        store
            .idempotency_begin(&k2, "h", at(200), stale)
            .await
            .unwrap(),
    );
    assert_eq!(
        store.idempotency_abandon(&lease2).await.unwrap(),
        IdempotencyAbandon::Dropped
    );
    started(
        store
            .idempotency_begin(&k2, "h", at(201), stale)
            .await
            .unwrap(),
    );

    // A finished response with an empty body replays as empty.
    let k3 = key("k3");
    let lease3 = started(
        store
            .idempotency_begin(&k3, "h", at(300), stale)
            .await
            .unwrap(),
    );
    store
        .idempotency_finish(
            &lease3,
            SavedResponse {
                status: 204,
                body: vec![],
            },
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .idempotency_begin(&k3, "h", at(301), stale)
            .await
            .unwrap(),
        IdempotencyBegin::Replay(SavedResponse {
            status: 204,
            body: vec![]
        })
    );

    // Purge goes by creation time: k1 and other_scope (t0+0/1) and k2 (t0+200) but not k3.
    assert_eq!(store.idempotency_purge(at(250)).await.unwrap(), 3);
    assert_eq!(store.idempotency_purge(at(250)).await.unwrap(), 0);
    started(
        store
            .idempotency_begin(&k, "h2", at(400), stale)
            .await
            .unwrap(),
    );
    assert!(matches!(
        store
            .idempotency_begin(&k3, "h", at(400), stale)
            .await
            .unwrap(),
        IdempotencyBegin::Replay(_)
    ));
}

/// A slow first request whose record went stale and was taken over by a retry cannot
/// finish, abandon or commit it any more: its append writes nothing, and the retry's
/// record is left as the retry made it.
async fn a_taken_over_idempotency_record_is_lost_to_its_old_owner(t: &TestDb) {
    let store = t.store.as_ref();
    let stale = chrono::Duration::seconds(60);
    let at = |secs| t0() + chrono::Duration::seconds(secs);
    let k = IdempotencyKey {
        scope: "user:1".into(),
        key: "slow".into(),
    };
    let response = |status| SavedResponse {
        status,
        body: vec![status as u8],
    };
    let old = started(
        store
            .idempotency_begin(&k, "h", at(0), stale)
            .await
            .unwrap(),
    );
    let new = started(
        store
            .idempotency_begin(&k, "h", at(61), stale)
            .await
            .unwrap(),
    );
    assert_ne!(old.owner, new.owner);

    // The old owner can no longer commit, save or release anything.
    let lost = StoreError::IdempotencyLeaseLost;
    assert_eq!(
        store
            .append(keyed(events(1, 1), 0, &old))
            .await
            .unwrap_err(),
        lost
    );
    assert_stream_is_empty(store, "s1").await;
    assert_eq!(store.head_position().await.unwrap(), 0);
    assert_eq!(
        store
            .idempotency_finish(&old, response(201))
            .await
            .unwrap_err(),
        lost
    );
    assert_eq!(store.idempotency_abandon(&old).await.unwrap_err(), lost);
    // … so the record is still the new owner's, in flight.
    assert_eq!(
        store
            .idempotency_begin(&k, "h", at(62), stale)
            .await
            .unwrap(),
        IdempotencyBegin::InFlight
    );

    // The new owner commits; the old one still cannot commit a second effect.
    store.append(keyed(events(1, 1), 0, &new)).await.unwrap();
    assert_eq!(
        store
            .append(keyed(events(2, 1), 1, &old))
            .await
            .unwrap_err(),
        lost
    );
    assert_eq!(store.head_position().await.unwrap(), 1);
    assert_eq!(store.idempotency_abandon(&old).await.unwrap_err(), lost);
    assert_eq!(
        store
            .idempotency_finish(&old, response(500))
            .await
            .unwrap_err(),
        lost
    );
    store.idempotency_finish(&new, response(201)).await.unwrap();
    assert_eq!(
        store
            .idempotency_begin(&k, "h", at(63), stale)
            .await
            .unwrap(),
        IdempotencyBegin::Replay(response(201))
    );

    // A record abandoned by its new owner is not the old owner's to finish either.
    let k2 = IdempotencyKey {
        scope: "user:1".into(),
        key: "slow-2".into(),
    };
    let old = started(
        store
            .idempotency_begin(&k2, "h", at(0), stale)
            .await
            .unwrap(),
    );
    let new = started(
        store
            .idempotency_begin(&k2, "h", at(61), stale)
            .await
            .unwrap(),
    );
    assert_eq!(
        store.idempotency_abandon(&new).await.unwrap(),
        IdempotencyAbandon::Dropped
    );
    assert_eq!(
        store
            .idempotency_finish(&old, response(201))
            .await
            .unwrap_err(),
        lost
    );
    assert_eq!(
        store
            .append(keyed(events(2, 1), 1, &old))
            .await
            .unwrap_err(),
        lost
    );
    assert_eq!(store.head_position().await.unwrap(), 1);
    started(
        store
            .idempotency_begin(&k2, "h", at(62), stale)
            .await
            .unwrap(),
    );
}

async fn read_all_pages_in_global_order_and_head_follows(t: &TestDb) {
    let store = t.store.as_ref();
    assert!(store.read_all(0, 100).await.unwrap().is_empty());
    assert_eq!(store.head_position().await.unwrap(), 0);

    let mut expected = Vec::new();
    let plan: [(&str, i64, i64); 4] = [("a", 0, 3), ("b", 0, 2), ("a", 3, 1), ("c", 0, 4)];
    for (id, version, count) in plan {
        let outcome = store
            .append(request(vec![stream(
                id,
                version,
                events(version + 1, count),
            )]))
            .await
            .unwrap();
        expected.extend(
            outcome
                .events
                .iter()
                .map(|e| (e.event_id, e.stream_id.clone(), e.version)),
        );
        assert_eq!(store.head_position().await.unwrap(), expected.len() as i64);
        assert_eq!(outcome.last_position, expected.len() as i64);
    }

    let mut cursor = 0;
    let mut pages = Vec::new();
    let mut got = Vec::new();
    loop {
        let page = store.read_all(cursor, 4).await.unwrap();
        if page.is_empty() {
            break;
        }
        pages.push(page.len());
        for e in page {
            assert_eq!(e.global_position, cursor + 1);
            cursor = e.global_position;
            got.push((e.event_id, e.stream_id, e.version));
        }
    }
    assert_eq!(pages, vec![4, 4, 2]);
    assert_eq!(got, expected);
    assert!(store.read_all(10, 4).await.unwrap().is_empty());
    assert!(store.read_all(0, 0).await.unwrap().is_empty());
    assert_eq!(store.read_all(7, 100).await.unwrap().len(), 3);
    assert_eq!(
        store
            .read_stream("a", 1)
            .await
            .unwrap()
            .iter()
            .map(|e| (e.version, e.global_position))
            .collect::<Vec<_>>(),
        vec![(2, 2), (3, 3), (4, 6)]
    );
}

/// The "slow A / fast B" case: a writer A holds the append lock and writes position 2 by
/// hand; B's append must wait for A's commit and then get position 3, so a reader never
/// sees 3 before 2.
async fn an_append_waits_for_a_slower_writer_holding_the_append_lock(t: &TestDb) {
    let store = t.store.clone();
    let first = store
        .append(request(vec![stream("a", 0, events(1, 1))]))
        .await
        .unwrap();
    assert_eq!(first.last_position, 1);
    let raw = store
        .read_stream_raw("a", 0, i64::MAX)
        .await
        .unwrap()
        .remove(0);

    let begin = match t.db.backend {
        Backend::Postgres => "BEGIN ISOLATION LEVEL READ COMMITTED",
        Backend::Sqlite => "BEGIN IMMEDIATE",
    };
    let mut slow = t.db.pool.begin_with(begin).await.unwrap();
    if t.db.backend == Backend::Postgres {
        sqlx::query("SELECT CAST(1 AS BIGINT) FROM pg_advisory_xact_lock($1)")
            .bind(APPEND_LOCK_KEY)
            .execute(&mut *slow)
            .await
            .unwrap();
    }
    // A's event: a copy of a/1 as stream "slow", version 1, at position 2 (not chained
    // properly; only its position matters here).
    sqlx::query(
        "INSERT INTO events (global_position, event_id, stream_id, stream_type, version, \
         event_type, schema_version, recorded_at, payload, metadata, prev_hash, hash) \
         VALUES (2, $1, 'slow', 'test', 1, $2, 1, $3, $4, $5, $6, $7)",
    )
    .bind(Uuid::now_v7().to_string())
    .bind(raw.event_type)
    .bind(raw.recorded_at)
    .bind(raw.payload)
    .bind(raw.metadata)
    .bind(raw.prev_hash)
    .bind(raw.hash)
    .execute(&mut *slow)
    .await
    .unwrap();

    let fast = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .append(request(vec![stream("b", 0, events(1, 1))]))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!fast.is_finished(), "B must wait for A's append lock");
    assert_eq!(store.head_position().await.unwrap(), 1);
    assert_eq!(store.read_all(1, 10).await.unwrap().len(), 0);

    slow.commit().await.unwrap();
    let outcome = fast.await.unwrap().unwrap();
    assert_eq!(outcome.last_position, 3);
    let order: Vec<(i64, String)> = store
        .read_all(0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.global_position, e.stream_id))
        .collect();
    assert_eq!(
        order,
        vec![
            (1, "a".to_owned()),
            (2, "slow".to_owned()),
            (3, "b".to_owned())
        ]
    );
}

/// Appends that queue up together (they commit as one group) still succeed or
/// fail one by one: a version conflict or a taken claim fails only its own request, which
/// writes nothing, and positions stay gapless.
async fn appends_queued_together_each_get_their_own_result(t: &TestDb) {
    let store = t.store.clone();
    // Hold writers back so the appends below pile up behind one another.
    let begin = match t.db.backend {
        Backend::Postgres => "BEGIN ISOLATION LEVEL READ COMMITTED",
        Backend::Sqlite => "BEGIN IMMEDIATE",
    };
    let mut slow = t.db.pool.begin_with(begin).await.unwrap();
    if t.db.backend == Backend::Postgres {
        sqlx::query("SELECT CAST(1 AS BIGINT) FROM pg_advisory_xact_lock($1)")
            .bind(APPEND_LOCK_KEY)
            .execute(&mut *slow)
            .await
            .unwrap();
    }
    let spawn = |req: AppendRequest| {
        let store = store.clone();
        tokio::spawn(async move { store.append(req).await })
    };
    let first = spawn(request(vec![stream("warm", 0, events(1, 2))]));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let goods: Vec<_> = (0..10)
        .map(|i| spawn(request(vec![stream(&format!("good-{i}"), 0, events(1, 2))])))
        .collect();
    let twins: Vec<_> = (0..2)
        .map(|_| spawn(request(vec![stream("twin", 0, events(1, 1))])))
        .collect();
    // A stream with events before the batch (its head is read: its last event, not zero or
    // its first), and one request naming two streams.
    let warm_again = spawn(request(vec![stream("warm", 2, events(3, 2))]));
    let pair = spawn(request(vec![
        stream("pair-a", 0, events(1, 1)),
        stream("pair-b", 0, events(1, 2)),
    ]));
    let claimers: Vec<_> = (0..2)
        .map(|i| {
            let owner = format!("claimer-{i}");
            let mut req = request(vec![stream(&owner, 0, events(1, 1))]);
            req.claims = vec![claim("shared-key", &owner)];
            spawn(req)
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    slow.commit().await.unwrap();

    // Each answer's events are where the log has them, and its last position is its own.
    let placed = |outcome: &AppendOutcome| {
        let positions: Vec<i64> = outcome.events.iter().map(|e| e.global_position).collect();
        assert_eq!(outcome.last_position, *positions.last().unwrap());
        assert!(positions.windows(2).all(|w| w[1] == w[0] + 1));
    };
    let outcome = first.await.unwrap().unwrap();
    assert_eq!(outcome.events.len(), 2);
    placed(&outcome);
    for g in goods {
        let outcome = g.await.unwrap().unwrap();
        assert_eq!(outcome.events.len(), 2);
        placed(&outcome);
    }
    let outcome = warm_again.await.unwrap().unwrap();
    assert_eq!(
        outcome.events.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![3, 4]
    );
    placed(&outcome);
    let outcome = pair.await.unwrap().unwrap();
    assert_eq!(
        outcome
            .events
            .iter()
            .map(|e| (e.stream_id.as_str(), e.version))
            .collect::<Vec<_>>(),
        vec![("pair-a", 1), ("pair-b", 1), ("pair-b", 2)]
    );
    placed(&outcome);
    let mut twin_ok = 0;
    for tw in twins {
        match tw.await.unwrap() {
            Ok(_) => twin_ok += 1,
            Err(StoreError::VersionConflict {
                stream_id,
                expected,
                actual,
            }) => {
                assert_eq!((stream_id.as_str(), expected, actual), ("twin", 0, 1));
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(twin_ok, 1, "exactly one of two same-version appends wins");
    let mut claim_ok = Vec::new();
    for (i, c) in claimers.into_iter().enumerate() {
        match c.await.unwrap() {
            Ok(_) => claim_ok.push(i),
            Err(StoreError::ClaimTaken { key }) => assert_eq!(key, "shared-key"),
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(claim_ok.len(), 1, "exactly one claimer wins");
    let winner = format!("claimer-{}", claim_ok[0]);
    let loser = format!("claimer-{}", 1 - claim_ok[0]);
    assert_stream_is_empty(store.as_ref(), &loser).await;
    assert_eq!(store.claim_owner("shared-key").await.unwrap(), Some(winner));

    let total = 2 + 10 * 2 + 1 + 2 + 3 + 1;
    assert_eq!(store.head_position().await.unwrap(), total);
    let all = store.read_all(0, 100).await.unwrap();
    let warm_third = all
        .iter()
        .find(|e| e.stream_id == "warm" && e.version == 3)
        .unwrap();
    assert_eq!(
        warm_third.prev_hash, all[1].hash,
        "the chain goes on from the stored head"
    );
    assert_eq!(
        all.iter().map(|e| e.global_position).collect::<Vec<_>>(),
        (1..=total).collect::<Vec<_>>()
    );
    for e in &all {
        assert!(store.verify_stream(&e.stream_id).await.unwrap().valid);
    }
}

// ---------------------------------------------------------------------------------------
// The command pipeline's kept states (two pipelines: two instances on one store).

fn sent(id: Uuid, now: DateTime<Utc>) -> Sent {
    Sent {
        verification_id: id,
        organization_id: Uuid::nil(),
        profile_id: Uuid::nil(),
        channel: VerifyChannel::Sms,
        phone_number: Sealed {
            key_id: "org-x".into(),
            nonce: "bm9uY2U=".into(),
            ciphertext: "Y2lwaGVy".into(),
        },
        phone_digest: Digest("phone".into()),
        code_digest: Digest("code".into()),
        custom_code: true,
        timeout_secs: 300,
        expires_at: now + chrono::Duration::seconds(300),
        extension: None,
    }
}

/// What a pipeline that has kept nothing loads: the fold of the log.
async fn from_the_log(t: &TestDb, clock: &Arc<ManualClock>, stream: &str) -> serde_json::Value {
    let fresh = Pipeline::new(t.store.clone(), clock.clone());
    let loaded = fresh
        .load::<Verification, VerificationError>(stream)
        .await
        .unwrap();
    json!({ "version": loaded.version, "state": loaded.state })
}

async fn pipelines_on_one_store_load_what_the_log_says(t: &TestDb) {
    // Nanoseconds the store rounds away: a kept state must hold the stored time.
    let clock = Arc::new(ManualClock::new(
        t0() + chrono::Duration::nanoseconds(123_456_789),
    ));
    let (one, two) = (
        Pipeline::new(t.store.clone(), clock.clone()),
        Pipeline::new(t.store.clone(), clock.clone()),
    );
    let id = Uuid::now_v7();
    let stream = Verification::stream_id(id);
    let meta = Meta::default();
    let sent = sent(id, clock.now());
    let run = |p: &Pipeline, cmd: VerificationCommand| {
        let (p, stream, meta) = (p.clone(), stream.clone(), meta.clone());
        async move {
            p.execute::<Verification, VerificationError, _>(&stream, &meta, move |state, ctx| {
                verification::decide(state, cmd.clone(), ctx)
            })
            .await
            .unwrap()
        }
    };
    run(&one, VerificationCommand::Send(sent)).await;
    let kept = one
        .load::<Verification, VerificationError>(&stream)
        .await
        .unwrap();
    assert_eq!(
        json!({ "version": kept.version, "state": kept.state }),
        from_the_log(t, &clock, &stream).await,
        "the state kept after a command is the log's"
    );
    // The other instance writes; the first one's next load goes on from what it kept.
    clock.advance(chrono::Duration::nanoseconds(1_000_000_001));
    run(&two, VerificationCommand::RecordDelivery).await;
    let seen = one
        .load::<Verification, VerificationError>(&stream)
        .await
        .unwrap();
    assert_eq!(seen.version, 2);
    assert_eq!(seen.state.delivery, DeliveryStatus::Delivered);
    // A command decided on a state the other instance has moved past conflicts, and is
    // decided again on the stream as it is: the second wrong code counts as the second.
    let wrong = || VerificationCommand::Check {
        code_digest: Digest("wrong".into()),
    };
    run(&two, wrong()).await;
    run(&one, wrong()).await;
    let last = one
        .load::<Verification, VerificationError>(&stream)
        .await
        .unwrap();
    assert_eq!((last.version, last.state.failed_attempts), (4, 2));
    for p in [&one, &two] {
        let loaded = p
            .load::<Verification, VerificationError>(&stream)
            .await
            .unwrap();
        assert_eq!(
            json!({ "version": loaded.version, "state": loaded.state }),
            from_the_log(t, &clock, &stream).await
        );
    }
}

/// A command's first attempt decides on the state its pipeline kept, without reading the
/// store: an append then names that version, but a refusal writes nothing that could
/// conflict, so it must be decided again on the stream as the log has it.
async fn a_refusal_decided_on_a_kept_state_is_decided_again_on_the_log(t: &TestDb) {
    use warden_domain::verify::profile::{
        self, ProfileSettings, SendLimits, SendReserved, VerifyProfile, VerifyProfileCommand,
        VerifyProfileError,
    };
    use warden_domain::verify::values::{Destinations, MicroUsd};
    let clock = Arc::new(ManualClock::new(t0()));
    let (one, two) = (
        Pipeline::new(t.store.clone(), clock.clone()),
        Pipeline::new(t.store.clone(), clock.clone()),
    );
    let profile_id = Uuid::now_v7();
    let stream = VerifyProfile::stream_id(profile_id);
    let settings = |countries: &[&str]| {
        let mut settings = ProfileSettings {
            name: "Conformance".into(),
            webhook_url: None,
            webhook_failover_url: None,
            language: "en-US".into(),
            daily_spend_limit: None,
            daily_spend_limit_enabled: false,
            sms: Default::default(),
            call: Default::default(),
            flashcall: Default::default(),
        };
        let countries: Vec<String> = countries.iter().map(|c| (*c).to_owned()).collect();
        settings.sms.whitelisted_destinations = Destinations::parse("/", &countries).unwrap();
        settings
    };
    let to_britain = || VerifyProfileCommand::ReserveSend {
        reservation: SendReserved {
            verification_id: Uuid::now_v7(),
            channel: VerifyChannel::Sms,
            phone_digest: Digest("phone-gb".into()),
            client_digest: None,
            cost: MicroUsd(0),
        },
        country: Some("GB"),
        limits: SendLimits {
            per_number: 5,
            per_profile: 5,
            per_client: 5,
        },
    };
    let meta = Meta::default();
    let run = |p: &Pipeline, cmd: VerifyProfileCommand| {
        let (p, stream, meta) = (p.clone(), stream.clone(), meta.clone());
        async move {
            p.execute::<VerifyProfile, VerifyProfileError, _>(&stream, &meta, move |s, ctx| {
                profile::decide(s, cmd.clone(), ctx)
            })
            .await
        }
    };
    let create = VerifyProfileCommand::Create {
        profile_id,
        organization_id: Uuid::now_v7(),
        settings: settings(&["US"]),
    };
    run(&one, create).await.expect("created");
    assert!(
        run(&one, to_britain()).await.is_err(),
        "Britain is not on the allowlist yet"
    );
    let update = VerifyProfileCommand::Update {
        settings: settings(&["US", "GB"]),
    };
    run(&two, update)
        .await
        .expect("the other instance allows Britain");
    // `one` still keeps version 1, where Britain is refused.
    let reserved = run(&one, to_britain())
        .await
        .expect("decided again on the log: Britain is allowed");
    assert_eq!(reserved.events.first().map(|e| e.version), Some(3));
}

async fn a_long_stream_is_read_and_loaded_in_pages(t: &TestDb) {
    let store = t.store.as_ref();
    store
        .append(request(vec![stream("user-a", 0, events(1, 5))]))
        .await
        .unwrap();
    let versions = |page: Vec<warden_domain::RecordedEvent>| {
        page.iter().map(|e| e.version).collect::<Vec<_>>()
    };
    for (after, limit, expected) in [
        (0, 2, vec![1, 2]),
        (2, 2, vec![3, 4]),
        (4, 2, vec![5]),
        (5, 2, vec![]),
        (1, 10, vec![2, 3, 4, 5]),
        (0, 0, vec![]),
    ] {
        let page = store
            .read_stream_page("user-a", after, limit)
            .await
            .unwrap();
        assert_eq!(versions(page), expected, "after {after}, limit {limit}");
    }

    // A stream longer than a load's page, with no snapshot: the load folds all of it.
    let user = "user-long";
    let total = 2_345;
    let email = |n: i64| Sealed {
        key_id: user.into(),
        nonce: format!("nonce-{n}"),
        ciphertext: format!("ciphertext-{n}"),
    };
    let mut version = 0;
    while version < total {
        let chunk: Vec<_> = (version + 1..=(version + 500).min(total))
            .map(|n| warden_domain::user::UserEvent::EmailChanged { email: email(n) })
            .collect();
        let mut append = stream(
            user,
            version,
            warden_commands::pipeline::encode_all(&chunk).unwrap(),
        );
        append.stream_type = "user".into();
        store.append(request(vec![append])).await.unwrap();
        version += chunk.len() as i64;
    }
    let pipeline = Pipeline::new(t.store.clone(), Arc::new(ManualClock::new(t0())));
    let loaded = pipeline
        .load::<warden_domain::user::User, warden_domain::user::UserError>(user)
        .await
        .unwrap();
    assert_eq!(loaded.version, total);
    assert_eq!(loaded.state.email, Some(email(total)));
    assert_eq!(store.stream_version(user).await.unwrap(), total);
    assert_eq!(store.stream_version("user-nobody").await.unwrap(), 0);

    // The chain check walks every page, and goes on counting past a broken link.
    let report = store.verify_stream(user).await.unwrap();
    assert_eq!((report.valid, report.events), (true, total));
    sqlx::query(
        "UPDATE events SET payload = REPLACE(payload, 'ciphertext-1500', 'ciphertext-1501') \
         WHERE stream_id = $1 AND version = 1500",
    )
    .bind(user)
    .execute(&t.db.pool)
    .await
    .unwrap();
    let report = store.verify_stream(user).await.unwrap();
    assert_eq!(
        (report.valid, report.first_broken_version, report.events),
        (false, Some(1500), total)
    );
}
