//! The relay against a real nats-server with JetStream (`WARDEN_TEST_NATS`, default
//! `nats://127.0.0.1:4222`) and the in-process bus. Each test uses its own stream
//! (`WT_<uuid>` on `wt.<uuid>.>`) and deletes it at the end, so tests run in parallel.
//!
//! Most tests drive the relay from a small in-memory `EventStore`; one uses the real SQLite
//! store, and one runs two relays on a throwaway Postgres database (`WARDEN_TEST_PG`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`) to check the leader lock.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::header::NATS_MESSAGE_ID;
use async_nats::jetstream;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{Connection, Executor};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use warden_commands::store::{
    AppendOutcome, AppendRequest, EventStore, IdempotencyAbandon, IdempotencyBegin, IdempotencyKey,
    IdempotencyLease, NewEvent, SavedResponse, Snapshot, StoreError, StreamAppend,
};
use warden_domain::chain::RawEvent;
use warden_domain::{EventMetadata, RecordedEvent};
use warden_infra::bus::{Continuity, InProcessBus, NatsConfig, NatsPublisher, Publisher};
use warden_infra::db::{Backend, Database};
use warden_infra::relay::{Relay, RelayConfig};

const DEFAULT_PG: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const WAIT: Duration = Duration::from_secs(20);

fn nats_url() -> String {
    std::env::var("WARDEN_TEST_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

fn nats_addr() -> String {
    nats_url()
        .trim_start_matches("nats://")
        .rsplit('@')
        .next()
        .unwrap()
        .to_owned()
}

// ---------------------------------------------------------------------------------------------
// An in-memory event store (only what the relay uses).

#[derive(Default)]
struct MemStore {
    events: Mutex<Vec<RecordedEvent>>,
}

impl MemStore {
    /// Appends `n` events, alternating between a `user` and an `organization` stream.
    fn append_n(&self, n: usize) -> Vec<RecordedEvent> {
        let mut events = self.events.lock().unwrap();
        let mut added = Vec::new();
        for _ in 0..n {
            let position = events.len() as i64 + 1;
            let (stream_type, event_type) = if position % 3 == 0 {
                ("organization", "organization.member_added")
            } else {
                ("user", "user.registered")
            };
            let event = RecordedEvent {
                event_id: Uuid::now_v7(),
                stream_id: format!("{stream_type}-{}", position % 4),
                stream_type: stream_type.into(),
                version: position,
                global_position: position,
                event_type: event_type.into(),
                schema_version: 1,
                recorded_at: Utc::now(),
                payload: serde_json::json!({ "n": position }),
                metadata: EventMetadata {
                    correlation_id: Uuid::new_v4(),
                    ..Default::default()
                },
                prev_hash: String::new(),
                hash: format!("h{position}"),
            };
            events.push(event.clone());
            added.push(event);
        }
        added
    }

    fn all(&self) -> Vec<RecordedEvent> {
        self.events.lock().unwrap().clone()
    }
}

fn unsupported() -> StoreError {
    StoreError::Backend("not in the test store".into())
}

#[async_trait]
impl EventStore for MemStore {
    async fn append(&self, _request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        Err(unsupported())
    }
    async fn read_stream(&self, _: &str, _: i64) -> Result<Vec<RecordedEvent>, StoreError> {
        Err(unsupported())
    }
    async fn read_stream_page(
        &self,
        _: &str,
        _: i64,
        _: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        Err(unsupported())
    }
    async fn stream_version(&self, _: &str) -> Result<i64, StoreError> {
        Err(unsupported())
    }
    async fn read_stream_raw(&self, _: &str, _: i64, _: i64) -> Result<Vec<RawEvent>, StoreError> {
        Err(unsupported())
    }
    async fn read_all(&self, after: i64, limit: i64) -> Result<Vec<RecordedEvent>, StoreError> {
        Ok(self
            .events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.global_position > after)
            .take(limit as usize)
            .cloned()
            .collect())
    }
    async fn head_position(&self) -> Result<i64, StoreError> {
        Ok(self.events.lock().unwrap().len() as i64)
    }
    async fn claim_owner(&self, _: &str) -> Result<Option<String>, StoreError> {
        Err(unsupported())
    }
    async fn load_snapshot(&self, _: &str) -> Result<Option<Snapshot>, StoreError> {
        Err(unsupported())
    }
    async fn save_snapshot(&self, _: Snapshot) -> Result<(), StoreError> {
        Err(unsupported())
    }
    async fn idempotency_begin(
        &self,
        _: &IdempotencyKey,
        _: &str,
        _: DateTime<Utc>,
        _: chrono::Duration,
    ) -> Result<IdempotencyBegin, StoreError> {
        Err(unsupported())
    }
    async fn idempotency_finish(
        &self,
        _: &IdempotencyLease,
        _: SavedResponse,
    ) -> Result<(), StoreError> {
        Err(unsupported())
    }
    async fn idempotency_abandon(
        &self,
        _: &IdempotencyLease,
    ) -> Result<IdempotencyAbandon, StoreError> {
        Err(unsupported())
    }
    async fn idempotency_purge(&self, _: DateTime<Utc>) -> Result<u64, StoreError> {
        Err(unsupported())
    }
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Databases

struct TestDb {
    db: Database,
    _dir: tempfile::TempDir,
    pg: Option<(String, String)>,
}

async fn ensure_checkpoints(db: &Database) {
    db.pool
        .execute(
            "CREATE TABLE IF NOT EXISTS checkpoints (name TEXT PRIMARY KEY, \
             position BIGINT NOT NULL, updated_at TEXT)",
        )
        .await
        .unwrap();
}

impl TestDb {
    async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/x.db?mode=rwc", dir.path().display());
        let db = Database::connect(Some(&url), dir.path()).await.unwrap();
        db.migrate().await.unwrap();
        ensure_checkpoints(&db).await;
        Self {
            db,
            _dir: dir,
            pg: None,
        }
    }

    async fn postgres() -> Self {
        let maintenance = std::env::var("WARDEN_TEST_PG").unwrap_or_else(|_| DEFAULT_PG.into());
        let name = format!("warden_relay_{}", Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&maintenance)
            .await
            .unwrap_or_else(|e| {
                panic!("cannot reach Postgres at {maintenance} (set WARDEN_TEST_PG): {e}")
            });
        conn.execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap();
        conn.close().await.unwrap();
        let base = maintenance.split('?').next().unwrap();
        let (server, _) = base.rsplit_once('/').unwrap();
        let url = format!("{server}/{name}");
        let dir = tempfile::tempdir().unwrap();
        let db = Database::connect(Some(&url), dir.path()).await.unwrap();
        assert_eq!(db.backend, Backend::Postgres);
        db.migrate().await.unwrap();
        ensure_checkpoints(&db).await;
        Self {
            db,
            _dir: dir,
            pg: Some((maintenance, name)),
        }
    }

    async fn checkpoint(&self, name: &str) -> Option<i64> {
        sqlx::query_scalar("SELECT position FROM checkpoints WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.db.pool)
            .await
            .unwrap()
    }

    async fn set_checkpoint(&self, name: &str, position: i64) {
        sqlx::query("UPDATE checkpoints SET position = $1 WHERE name = $2")
            .bind(position)
            .bind(name)
            .execute(&self.db.pool)
            .await
            .unwrap();
    }

    async fn finish(self) {
        self.db.pool.close().await;
        if let Some((maintenance, name)) = self.pg {
            if let Ok(mut conn) = sqlx::PgConnection::connect(&maintenance).await {
                let _ = conn
                    .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                    .await;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// JetStream helpers

struct TestStream {
    config: NatsConfig,
    js: jetstream::Context,
}

impl TestStream {
    async fn new() -> Self {
        Self::with_url(nats_url()).await
    }

    async fn with_url(url: String) -> Self {
        let id = Uuid::new_v4().simple().to_string();
        let mut config = NatsConfig::new(url);
        config.stream_name = format!("WT_{id}");
        config.subject_prefix = format!("wt.{id}");
        config.ack_timeout = Duration::from_secs(2);
        config.connect_timeout = Duration::from_secs(1);
        let client = async_nats::connect(nats_url())
            .await
            .expect("nats-server with JetStream must run (see infra/tests/relay.rs)");
        Self {
            config,
            js: jetstream::new(client),
        }
    }

    fn publisher(&self) -> Arc<dyn Publisher> {
        Arc::new(NatsPublisher::new(self.config.clone()))
    }

    /// Every message in the stream, by sequence.
    async fn messages(&self) -> Vec<jetstream::message::StreamMessage> {
        let mut stream = self.js.get_stream(&self.config.stream_name).await.unwrap();
        let last = stream.info().await.unwrap().state.last_sequence;
        let mut out = Vec::new();
        for seq in 1..=last {
            out.push(stream.get_raw_message(seq).await.unwrap());
        }
        out
    }

    async fn message_count(&self) -> u64 {
        let mut stream = self.js.get_stream(&self.config.stream_name).await.unwrap();
        stream.info().await.unwrap().state.messages
    }

    /// Asserts the stream holds exactly `expected`, once each, in order, with the contract's
    /// subjects, headers and body.
    async fn assert_holds(&self, expected: &[RecordedEvent]) {
        let messages = self.messages().await;
        assert_eq!(messages.len(), expected.len(), "message count");
        assert_eq!(self.message_count().await, expected.len() as u64);
        for (message, event) in messages.iter().zip(expected) {
            assert_eq!(
                message.subject.as_str(),
                format!(
                    "{}.{}.{}",
                    self.config.subject_prefix, event.stream_type, event.event_type
                )
            );
            assert_eq!(
                message.headers.get(NATS_MESSAGE_ID).unwrap().as_str(),
                event.event_id.to_string()
            );
            assert_eq!(
                message
                    .headers
                    .get("Warden-Global-Position")
                    .unwrap()
                    .as_str(),
                event.global_position.to_string()
            );
            let body: RecordedEvent = serde_json::from_slice(&message.payload).unwrap();
            assert_eq!(&body, event);
        }
    }

    async fn delete(self) {
        let _ = self.js.delete_stream(&self.config.stream_name).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Running relays

fn fast_config() -> RelayConfig {
    RelayConfig {
        batch_size: 7,
        poll_interval: Duration::from_millis(50),
        retry_min: Duration::from_millis(50),
        retry_max: Duration::from_millis(500),
        standby_interval: Duration::from_millis(200),
        ..Default::default()
    }
}

struct Running {
    position: watch::Receiver<i64>,
    wake: Arc<tokio::sync::Notify>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Running {
    fn start(
        store: Arc<dyn EventStore>,
        db: &Database,
        publisher: Arc<dyn Publisher>,
        config: RelayConfig,
    ) -> Self {
        let relay = Relay::new(store, db.clone(), publisher, config);
        let position = relay.position();
        let wake = relay.waker();
        let stop = CancellationToken::new();
        let task = tokio::spawn(relay.run(stop.clone()));
        Self {
            position,
            wake,
            stop,
            task,
        }
    }

    async fn wait_for(&mut self, position: i64) {
        self.wake.notify_one();
        let reached = tokio::time::timeout(WAIT, self.position.wait_for(|p| *p >= position))
            .await
            .map(|r| r.is_ok());
        assert!(
            matches!(reached, Ok(true)),
            "relay did not reach {position} (at {})",
            *self.position.borrow()
        );
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("relay did not stop on shutdown")
            .unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn publishes_every_event_once_in_order_with_subject_and_headers() {
    let db = TestDb::sqlite().await;
    let store = Arc::new(MemStore::default());
    let stream = TestStream::new().await;
    store.append_n(25);

    let mut relay = Running::start(store.clone(), &db.db, stream.publisher(), fast_config());
    relay.wait_for(25).await;
    store.append_n(6);
    relay.wait_for(31).await;
    relay.stop().await;

    stream.assert_holds(&store.all()).await;
    assert_eq!(db.checkpoint("nats_relay").await, Some(31));
    stream.delete().await;
    db.finish().await;
}

#[tokio::test]
async fn stream_is_created_with_the_configured_settings_idempotently() {
    let stream = TestStream::new().await;
    let publisher = NatsPublisher::new(stream.config.clone());
    publisher.prepare().await.unwrap();
    // A second publisher (a restart) updates the same stream without error.
    NatsPublisher::new(stream.config.clone())
        .prepare()
        .await
        .unwrap();
    let mut js_stream = stream
        .js
        .get_stream(&stream.config.stream_name)
        .await
        .unwrap();
    let info = js_stream.info().await.unwrap();
    assert_eq!(
        info.config.subjects,
        vec![format!("{}.>", stream.config.subject_prefix)]
    );
    assert_eq!(
        info.config.duplicate_window,
        Duration::from_secs(2 * 60 * 60)
    );
    assert_eq!(info.config.storage, jetstream::stream::StorageType::File);
    stream.delete().await;
}

#[tokio::test]
async fn a_restarted_relay_republishes_nothing() {
    let db = TestDb::sqlite().await;
    let store = Arc::new(MemStore::default());
    let stream = TestStream::new().await;
    store.append_n(10);

    let mut first = Running::start(store.clone(), &db.db, stream.publisher(), fast_config());
    first.wait_for(10).await;
    first.stop().await;
    assert_eq!(db.checkpoint("nats_relay").await, Some(10));

    store.append_n(5);
    let mut second = Running::start(store.clone(), &db.db, stream.publisher(), fast_config());
    second.wait_for(15).await;
    second.stop().await;

    stream.assert_holds(&store.all()).await;
    assert_eq!(db.checkpoint("nats_relay").await, Some(15));
    stream.delete().await;
    db.finish().await;
}

/// With a checkpoint interval, batches under load are not each written to the row, but the
/// row catches up as soon as the relay does; a restart from a row left behind the stream
/// (as a kill between two writes leaves it) loses nothing and the stream still holds each
/// event once.
#[tokio::test]
async fn a_throttled_checkpoint_is_written_when_the_relay_catches_up() {
    let db = TestDb::sqlite().await;
    let store = Arc::new(MemStore::default());
    let stream = TestStream::new().await;
    let throttled = || RelayConfig {
        checkpoint_interval: Duration::from_secs(3600),
        ..fast_config()
    };
    store.append_n(20);
    let mut first = Running::start(store.clone(), &db.db, stream.publisher(), throttled());
    first.wait_for(20).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while db.checkpoint("nats_relay").await != Some(20) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "caught up, the relay writes its checkpoint"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.stop().await;

    db.set_checkpoint("nats_relay", 3).await;
    store.append_n(3);
    let mut second = Running::start(store.clone(), &db.db, stream.publisher(), throttled());
    second.wait_for(23).await;
    second.stop().await;
    stream.assert_holds(&store.all()).await;
    stream.delete().await;
    db.finish().await;
}

/// Under steady load (each batch followed by a wake before the log goes quiet) the
/// throttled row is not written on every catch-up: only once the interval passes, or the
/// log has been quiet for a poll interval. Writing it whenever the relay caught up cost the
/// server one checkpoint write per batch (measured: 233 a second under `warden bench`).
#[tokio::test]
async fn a_throttled_checkpoint_waits_for_the_log_to_go_quiet() {
    let db = TestDb::sqlite().await;
    let store = Arc::new(MemStore::default());
    let stream = TestStream::new().await;
    let config = RelayConfig {
        checkpoint_interval: Duration::from_secs(3600),
        poll_interval: Duration::from_secs(1),
        ..fast_config()
    };
    store.append_n(3);
    let mut relay = Running::start(store.clone(), &db.db, stream.publisher(), config);
    relay.wait_for(3).await;
    let mut head = 3;
    for _ in 0..10 {
        store.append_n(1);
        head += 1;
        relay.wait_for(head).await;
        // Time enough for a write after the catch-up, well inside the poll interval.
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_ne!(
            db.checkpoint("nats_relay").await,
            Some(head),
            "the row was written at a catch-up under load"
        );
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while db.checkpoint("nats_relay").await != Some(head) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the row is written once the log is quiet"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    relay.stop().await;
    stream.assert_holds(&store.all()).await;
    stream.delete().await;
    db.finish().await;
}

#[tokio::test]
async fn a_crash_between_ack_and_checkpoint_lands_no_duplicates() {
    let db = TestDb::sqlite().await;
    let store = Arc::new(MemStore::default());
    let stream = TestStream::new().await;
    store.append_n(12);

    let mut first = Running::start(store.clone(), &db.db, stream.publisher(), fast_config());
    first.wait_for(12).await;
    first.stop().await;
    // The crash: the messages are in the stream, the checkpoint write never happened.
    db.set_checkpoint("nats_relay", 2).await;

    store.append_n(3);
    let mut second = Running::start(store.clone(), &db.db, stream.publisher(), fast_config());
    second.wait_for(15).await;
    second.stop().await;

    stream.assert_holds(&store.all()).await;
    assert_eq!(db.checkpoint("nats_relay").await, Some(15));
    stream.delete().await;
    db.finish().await;
}

#[tokio::test]
async fn duplicates_are_dropped_by_msg_id_when_the_stream_tail_cannot_be_trusted() {
    // The stream's last message is not one of ours (no position header), so the relay
    // cannot resume from it; with a stale checkpoint it re-sends, and the server's
    // de-duplication by Nats-Msg-Id keeps the stream free of repeats.
    let db = TestDb::sqlite().await;
    let store = Arc::new(MemStore::default());
    let stream = TestStream::new().await;
    store.append_n(9);

    let mut first = Running::start(store.clone(), &db.db, stream.publisher(), fast_config());
    first.wait_for(9).await;
    first.stop().await;
    stream
        .js
        .publish(
            format!("{}.other.thing", stream.config.subject_prefix),
            "foreign".into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    db.set_checkpoint("nats_relay", 1).await;

    store.append_n(4);
    let mut second = Running::start(store.clone(), &db.db, stream.publisher(), fast_config());
    second.wait_for(13).await;
    // Having stored new events, the relay chains again from its own last message.
    store.append_n(3);
    second.wait_for(16).await;
    second.stop().await;

    let messages = stream.messages().await;
    assert_eq!(messages.len(), 9 + 1 + 4 + 3);
    let ids: Vec<String> = messages
        .iter()
        .filter_map(|m| {
            m.headers
                .get(NATS_MESSAGE_ID)
                .map(|v| v.as_str().to_owned())
        })
        .collect();
    let expected: Vec<String> = store.all().iter().map(|e| e.event_id.to_string()).collect();
    assert_eq!(ids, expected, "every event once, in order");
    stream.delete().await;
    db.finish().await;
}

/// A TCP forwarder to the real server that can be switched off and on.
struct Proxy {
    port: u16,
    task: Option<JoinHandle<()>>,
}

impl Proxy {
    async fn closed() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        Self { port, task: None }
    }

    async fn open(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.unwrap();
        let target = nats_addr();
        self.task = Some(tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let target = target.clone();
                connections.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
            // Dropping the JoinSet (when this task is aborted) cuts every connection.
        }));
    }

    async fn close(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

#[tokio::test]
async fn an_unreachable_nats_loses_nothing_and_delivers_once_reachable() {
    let db = TestDb::sqlite().await;
    let store = Arc::new(MemStore::default());
    let mut proxy = Proxy::closed().await;
    let stream = TestStream::with_url(format!("nats://127.0.0.1:{}", proxy.port)).await;
    store.append_n(5);

    let mut relay = Running::start(store.clone(), &db.db, stream.publisher(), fast_config());
    tokio::time::sleep(Duration::from_millis(800)).await;
    store.append_n(3);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        *relay.position.borrow(),
        0,
        "nothing relayed while NATS is down"
    );
    assert_eq!(db.checkpoint("nats_relay").await.unwrap_or(0), 0);
    assert!(!relay.task.is_finished(), "the relay keeps retrying");

    proxy.open().await;
    relay.wait_for(8).await;
    stream.assert_holds(&store.all()).await;

    // An outage after the connection was up: the client reconnects on its own.
    proxy.close().await;
    store.append_n(4);
    relay.wake.notify_one();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(*relay.position.borrow(), 8);
    assert_eq!(db.checkpoint("nats_relay").await, Some(8));
    proxy.open().await;
    relay.wait_for(12).await;
    relay.stop().await;

    stream.assert_holds(&store.all()).await;
    assert_eq!(db.checkpoint("nats_relay").await, Some(12));
    proxy.close().await;
    stream.delete().await;
    db.finish().await;
}

#[tokio::test]
async fn an_unreachable_nats_restarted_relay_resumes_from_the_checkpoint() {
    let db = TestDb::sqlite().await;
    let store = Arc::new(MemStore::default());
    let stream = TestStream::new().await;
    store.append_n(4);
    let mut good = Running::start(store.clone(), &db.db, stream.publisher(), fast_config());
    good.wait_for(4).await;
    good.stop().await;

    // Pointed at a closed port: keeps retrying, the checkpoint stays.
    let mut bad_config = stream.config.clone();
    bad_config.url = "nats://127.0.0.1:1".into();
    store.append_n(3);
    let bad = Running::start(
        store.clone(),
        &db.db,
        Arc::new(NatsPublisher::new(bad_config)),
        fast_config(),
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!bad.task.is_finished());
    assert_eq!(db.checkpoint("nats_relay").await, Some(4));
    bad.stop().await;

    let mut again = Running::start(store.clone(), &db.db, stream.publisher(), fast_config());
    again.wait_for(7).await;
    again.stop().await;
    stream.assert_holds(&store.all()).await;
    stream.delete().await;
    db.finish().await;
}

#[tokio::test]
async fn the_in_process_bus_delivers_every_event_in_order() {
    let db = TestDb::sqlite().await;
    let store = Arc::new(MemStore::default());
    let bus = InProcessBus::new(1024);
    let mut subscriber = bus.subscribe();
    store.append_n(10);

    let mut relay = Running::start(store.clone(), &db.db, Arc::new(bus.clone()), fast_config());
    relay.wait_for(10).await;
    for _ in 0..4 {
        store.append_n(5);
        relay.wake.notify_one();
    }
    relay.wait_for(30).await;
    relay.stop().await;

    let expected = store.all();
    for event in &expected {
        let got = tokio::time::timeout(WAIT, subscriber.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.as_ref(), event);
    }
    assert!(subscriber.try_recv().is_err(), "nothing more");
    assert_eq!(db.checkpoint("in_process_bus").await, Some(30));
    assert_eq!(db.checkpoint("nats_relay").await, None);

    // A restart resumes after the checkpoint: a new subscriber sees only new events.
    let mut later = bus.subscribe();
    let mut relay = Running::start(store.clone(), &db.db, Arc::new(bus.clone()), fast_config());
    store.append_n(2);
    relay.wait_for(32).await;
    relay.stop().await;
    for event in &store.all()[30..] {
        let got = later.recv().await.unwrap();
        assert_eq!(got.as_ref(), event);
    }
    assert!(later.try_recv().is_err());
    db.finish().await;
}

#[tokio::test]
async fn relays_the_real_sqlite_event_store() {
    let db = TestDb::sqlite().await;
    let store = warden_infra::store::open_store(&db.db);
    let stream = TestStream::new().await;
    for i in 0..4 {
        store
            .append(AppendRequest {
                streams: vec![StreamAppend {
                    stream_id: format!("user-{i}"),
                    stream_type: "user".into(),
                    expected_version: 0,
                    events: vec![
                        NewEvent {
                            event_id: Uuid::now_v7(),
                            event_type: "user.registered".into(),
                            schema_version: 1,
                            payload: serde_json::json!({ "i": i }),
                        },
                        NewEvent {
                            event_id: Uuid::now_v7(),
                            event_type: "user.email_verified".into(),
                            schema_version: 1,
                            payload: serde_json::json!({}),
                        },
                    ],
                }],
                metadata: EventMetadata {
                    correlation_id: Uuid::new_v4(),
                    ..Default::default()
                },
                recorded_at: Utc::now(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let head = store.head_position().await.unwrap();
    assert_eq!(head, 8);

    let mut relay = Running::start(store.clone(), &db.db, stream.publisher(), fast_config());
    relay.wait_for(head).await;
    relay.stop().await;
    stream
        .assert_holds(&store.read_all(0, 100).await.unwrap())
        .await;
    stream.delete().await;
    db.finish().await;
}

#[tokio::test]
async fn on_postgres_one_relay_leads_and_a_standby_takes_over() {
    let db = TestDb::postgres().await;
    let store = Arc::new(MemStore::default());
    let stream = TestStream::new().await;
    store.append_n(6);

    let mut a = Running::start(store.clone(), &db.db, stream.publisher(), fast_config());
    a.wait_for(6).await;
    let b = Running::start(store.clone(), &db.db, stream.publisher(), fast_config());
    store.append_n(6);
    a.wait_for(12).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(*b.position.borrow(), 0, "the standby does not relay");

    a.stop().await;
    store.append_n(5);
    let mut b = b;
    b.wait_for(17).await;
    b.stop().await;

    stream.assert_holds(&store.all()).await;
    assert_eq!(db.checkpoint("nats_relay").await, Some(17));
    stream.delete().await;
    db.finish().await;
}

#[tokio::test]
async fn an_event_whose_predecessor_is_not_the_streams_last_message_is_refused() {
    // What keeps a stale publish from an interrupted attempt (sent after a reconnect) from
    // landing out of order: every chained message names its predecessor.
    let db = TestDb::sqlite().await;
    let store = Arc::new(MemStore::default());
    let stream = TestStream::new().await;
    store.append_n(3);
    let mut relay = Running::start(store.clone(), &db.db, stream.publisher(), fast_config());
    relay.wait_for(3).await;
    relay.stop().await;

    let later = store.append_n(2);
    let publisher = stream.publisher();
    let stale = vec![Arc::new(later[1].clone())];
    let refused = publisher
        .publish(&stale, Continuity::Chained(Some(later[0].event_id)))
        .await;
    assert!(refused.is_err(), "event 5 must not land before event 4");
    assert_eq!(stream.message_count().await, 3);

    let mut relay = Running::start(store.clone(), &db.db, stream.publisher(), fast_config());
    relay.wait_for(5).await;
    relay.stop().await;
    stream.assert_holds(&store.all()).await;
    stream.delete().await;
    db.finish().await;
}
