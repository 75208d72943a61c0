//! The event store on Postgres and on SQLite: one SQL core over sqlx's `AnyPool`, two thin
//! named types. Appends assign gapless, commit-ordered global positions under an append lock
//! (DESIGN.md "Storage"), so every follower reads with a plain `global_position > cursor`.

mod append;
mod errors;
mod group;
mod idempotency;
mod rows;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{Any, AnyPool, PgPool, Row, Transaction};
use warden_commands::store::{
    AppendOutcome, AppendRequest, EventStore, IdempotencyAbandon, IdempotencyBegin, IdempotencyKey,
    IdempotencyLease, SavedResponse, Snapshot, StoreError,
};
use warden_domain::chain::RawEvent;
use warden_domain::RecordedEvent;

use crate::db::{Backend, Database, WriteGate};
use errors::db_error;
use rows::{raw_event, recorded_event, EventRowSource, EVENT_COLUMNS};

/// The event store on Postgres (production).
#[derive(Debug, Clone)]
pub struct PostgresEventStore {
    core: SqlEventStore,
}

impl PostgresEventStore {
    /// Wraps a pool opened on a migrated Postgres database.
    pub fn new(pool: AnyPool) -> Self {
        Self {
            core: SqlEventStore {
                pool,
                backend: Backend::Postgres,
                group: Some(Arc::default()),
                writes: WriteGate::default(),
                log_reads: None,
            },
        }
    }

    /// Reads the log in order through `pool`, sqlx's own Postgres driver on the same
    /// database (see [`Database::log_reads`]).
    pub fn with_log_reads(mut self, pool: PgPool) -> Self {
        self.core.log_reads = Some(pool);
        self
    }
}

/// The event store on an embedded SQLite file (the zero-setup default).
#[derive(Debug, Clone)]
pub struct SqliteEventStore {
    core: SqlEventStore,
}

impl SqliteEventStore {
    /// Wraps a pool opened on a migrated SQLite database (WAL, with a busy timeout).
    pub fn new(pool: AnyPool) -> Self {
        Self {
            core: SqlEventStore {
                pool,
                backend: Backend::Sqlite,
                // Group commit here too: SQLite has one writer and fsyncs every commit, so
                // appends that arrive together share one write lock and one fsync.
                group: Some(Arc::default()),
                writes: WriteGate::queued(),
                log_reads: None,
            },
        }
    }

    /// Appends and snapshot saves queue at `writes` with the process's other writers.
    pub fn with_write_gate(mut self, writes: WriteGate) -> Self {
        self.core.writes = writes;
        self
    }
}

/// The event store for whichever backend `db` talks to.
pub fn open_store(db: &Database) -> Arc<dyn EventStore> {
    match db.backend {
        Backend::Postgres => {
            let store = PostgresEventStore::new(db.pool.clone());
            Arc::new(match &db.log_reads {
                Some(pool) => store.with_log_reads(pool.clone()),
                None => store,
            })
        }
        Backend::Sqlite => {
            Arc::new(SqliteEventStore::new(db.pool.clone()).with_write_gate(db.writes.clone()))
        }
    }
}

/// The shared implementation; the only dialect differences are how a write transaction
/// starts and how the append lock is taken.
#[derive(Debug, Clone)]
struct SqlEventStore {
    pool: AnyPool,
    backend: Backend,
    /// Concurrent appends share one transaction (see `group`); `None` only for the
    /// committer's own handle.
    group: Option<Arc<group::GroupCommit>>,
    /// Where this process's writers queue (SQLite).
    writes: WriteGate,
    /// Where `read_all` reads, if not through `pool` (Postgres).
    log_reads: Option<PgPool>,
}

/// Rows of the events table as recorded events.
fn recorded<R: EventRowSource>(rows: &[R]) -> Result<Vec<RecordedEvent>, StoreError> {
    rows.iter().map(recorded_event).collect()
}

/// Streams named per statement by `read_streams` (one bind each).
const STREAMS_PER_READ: usize = 200;

/// The advisory lock key that serializes position assignment on Postgres ("WARDEN" + 1).
/// Per database, so parallel test databases on one cluster do not contend. Public so tools
/// and tests can hold writers back (`pg_advisory_xact_lock(APPEND_LOCK_KEY)`).
pub const APPEND_LOCK_KEY: i64 = 0x5741_5244_454e_0001;

impl SqlEventStore {
    /// Starts a write transaction: READ COMMITTED on Postgres (so each statement after the
    /// lock sees the latest commits), `BEGIN IMMEDIATE` on SQLite (the write lock up front).
    async fn begin_write(&self) -> Result<Transaction<'static, Any>, StoreError> {
        let begin = match self.backend {
            Backend::Postgres => "BEGIN ISOLATION LEVEL READ COMMITTED",
            Backend::Sqlite => "BEGIN IMMEDIATE",
        };
        self.pool.begin_with(begin).await.map_err(db_error)
    }

    /// A stream's rows with `version > after_version`, in version order; at most `limit`.
    async fn stream_rows(
        &self,
        stream_id: &str,
        after_version: i64,
        limit: Option<i64>,
    ) -> Result<Vec<sqlx::any::AnyRow>, StoreError> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = $1 AND version > $2 \
             ORDER BY version{}",
            if limit.is_some() { " LIMIT $3" } else { "" }
        );
        let mut query = sqlx::query(&sql).bind(stream_id).bind(after_version);
        if let Some(limit) = limit {
            query = query.bind(limit.max(0));
        }
        query.fetch_all(&self.pool).await.map_err(db_error)
    }

    /// Serializes the tail of concurrent appends. Must be its own statement, taken after
    /// everything that may conflict. SQLite already holds its write lock.
    async fn take_append_lock(&self, tx: &mut Transaction<'static, Any>) -> Result<(), StoreError> {
        if self.backend == Backend::Postgres {
            // `pg_advisory_xact_lock` returns `void`, which the Any driver cannot decode:
            // project a constant instead.
            sqlx::query("SELECT CAST(1 AS BIGINT) FROM pg_advisory_xact_lock($1)")
                .bind(APPEND_LOCK_KEY)
                .execute(&mut **tx)
                .await
                .map_err(db_error)?;
        }
        Ok(())
    }

    async fn read_stream(
        &self,
        stream_id: &str,
        after_version: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        recorded(&self.stream_rows(stream_id, after_version, None).await?)
    }

    async fn read_stream_page(
        &self,
        stream_id: &str,
        after_version: i64,
        limit: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        recorded(
            &self
                .stream_rows(stream_id, after_version, Some(limit))
                .await?,
        )
    }

    async fn read_streams(&self, stream_ids: &[String]) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut events = Vec::new();
        for chunk in stream_ids.chunks(STREAMS_PER_READ) {
            let marks = (1..=chunk.len())
                .map(|i| format!("${i}"))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE stream_id IN ({marks}) \
                 ORDER BY stream_id, version"
            );
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query.bind(id);
            }
            let rows = query.fetch_all(&self.pool).await.map_err(db_error)?;
            for row in &rows {
                events.push(recorded_event(row)?);
            }
        }
        Ok(events)
    }

    async fn read_stream_raw(
        &self,
        stream_id: &str,
        after_version: i64,
        limit: i64,
    ) -> Result<Vec<RawEvent>, StoreError> {
        self.stream_rows(stream_id, after_version, Some(limit))
            .await?
            .iter()
            .map(raw_event)
            .collect()
    }

    async fn read_all(&self, after: i64, limit: i64) -> Result<Vec<RecordedEvent>, StoreError> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE global_position > $1 \
             ORDER BY global_position LIMIT $2"
        );
        if let Some(pool) = &self.log_reads {
            let rows = sqlx::query(&sql)
                .bind(after)
                .bind(limit.max(0))
                .fetch_all(pool)
                .await
                .map_err(db_error)?;
            return recorded(&rows);
        }
        let rows = sqlx::query(&sql)
            .bind(after)
            .bind(limit.max(0))
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        recorded(&rows)
    }

    async fn stream_version(&self, stream_id: &str) -> Result<i64, StoreError> {
        sqlx::query("SELECT COALESCE(MAX(version), 0) AS head FROM events WHERE stream_id = $1")
            .bind(stream_id)
            .fetch_one(&self.pool)
            .await
            .and_then(|row| row.try_get::<i64, _>("head"))
            .map_err(db_error)
    }

    async fn head_position(&self) -> Result<i64, StoreError> {
        sqlx::query("SELECT COALESCE(MAX(global_position), 0) AS head FROM events")
            .fetch_one(&self.pool)
            .await
            .and_then(|row| row.try_get::<i64, _>("head"))
            .map_err(db_error)
    }

    async fn claim_owner(&self, key: &str) -> Result<Option<String>, StoreError> {
        sqlx::query("SELECT owner_stream_id FROM claims WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .and_then(|row| {
                row.map(|r| r.try_get::<String, _>("owner_stream_id"))
                    .transpose()
            })
            .map_err(db_error)
    }

    async fn load_snapshot(&self, stream_id: &str) -> Result<Option<Snapshot>, StoreError> {
        let row = sqlx::query(
            "SELECT schema_version, version, state FROM snapshots WHERE stream_id = $1",
        )
        .bind(stream_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let schema_version: i64 = row.try_get("schema_version").map_err(db_error)?;
        let version: i64 = row.try_get("version").map_err(db_error)?;
        let state: String = row.try_get("state").map_err(db_error)?;
        let parsed = i32::try_from(schema_version)
            .ok()
            .zip(serde_json::from_str(&state).ok());
        match parsed {
            Some((schema_version, state)) => Ok(Some(Snapshot {
                stream_id: stream_id.to_owned(),
                schema_version,
                version,
                state,
            })),
            None => {
                // A snapshot is only a cache: an unreadable one is as good as none.
                tracing::warn!(stream_id, "ignoring an unreadable snapshot");
                Ok(None)
            }
        }
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        let state = serde_json::to_string(&snapshot.state)
            .map_err(|e| StoreError::Backend(format!("snapshot state not serializable: {e}")))?;
        let _write = self.writes.enter().await;
        // Only ever forward: a newer stream version, or a newer snapshot schema at no older
        // version (after an aggregate's SNAPSHOT_VERSION changed).
        sqlx::query(
            "INSERT INTO snapshots (stream_id, schema_version, version, state) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (stream_id) DO UPDATE SET \
                 schema_version = excluded.schema_version, \
                 version = excluded.version, \
                 state = excluded.state \
             WHERE excluded.version > snapshots.version \
                OR (excluded.version = snapshots.version \
                    AND excluded.schema_version > snapshots.schema_version)",
        )
        .bind(snapshot.stream_id)
        .bind(i64::from(snapshot.schema_version))
        .bind(snapshot.version)
        .bind(state)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT CAST(1 AS BIGINT)")
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(())
    }
}

/// Implements [`EventStore`] for a named store by delegating to its SQL core.
macro_rules! delegate_event_store {
    ($store:ty) => {
        #[async_trait]
        impl EventStore for $store {
            async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
                self.core.append(request).await
            }

            async fn read_stream(
                &self,
                stream_id: &str,
                after_version: i64,
            ) -> Result<Vec<RecordedEvent>, StoreError> {
                self.core.read_stream(stream_id, after_version).await
            }

            async fn read_stream_page(
                &self,
                stream_id: &str,
                after_version: i64,
                limit: i64,
            ) -> Result<Vec<RecordedEvent>, StoreError> {
                self.core
                    .read_stream_page(stream_id, after_version, limit)
                    .await
            }

            async fn read_streams(
                &self,
                stream_ids: &[String],
            ) -> Result<Vec<RecordedEvent>, StoreError> {
                self.core.read_streams(stream_ids).await
            }

            async fn read_stream_raw(
                &self,
                stream_id: &str,
                after_version: i64,
                limit: i64,
            ) -> Result<Vec<RawEvent>, StoreError> {
                self.core
                    .read_stream_raw(stream_id, after_version, limit)
                    .await
            }

            async fn stream_version(&self, stream_id: &str) -> Result<i64, StoreError> {
                self.core.stream_version(stream_id).await
            }

            async fn read_all(
                &self,
                after: i64,
                limit: i64,
            ) -> Result<Vec<RecordedEvent>, StoreError> {
                self.core.read_all(after, limit).await
            }

            async fn head_position(&self) -> Result<i64, StoreError> {
                self.core.head_position().await
            }

            async fn claim_owner(&self, key: &str) -> Result<Option<String>, StoreError> {
                self.core.claim_owner(key).await
            }

            async fn load_snapshot(&self, stream_id: &str) -> Result<Option<Snapshot>, StoreError> {
                self.core.load_snapshot(stream_id).await
            }

            async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
                self.core.save_snapshot(snapshot).await
            }

            async fn idempotency_begin(
                &self,
                key: &IdempotencyKey,
                request_hash: &str,
                now: DateTime<Utc>,
                stale_after: chrono::Duration,
            ) -> Result<IdempotencyBegin, StoreError> {
                self.core
                    .idempotency_begin(key, request_hash, now, stale_after)
                    .await
            }

            async fn idempotency_finish(
                &self,
                lease: &IdempotencyLease,
                response: SavedResponse,
            ) -> Result<(), StoreError> {
                self.core.idempotency_finish(lease, response).await
            }

            async fn idempotency_abandon(
                &self,
                lease: &IdempotencyLease,
            ) -> Result<IdempotencyAbandon, StoreError> {
                self.core.idempotency_abandon(lease).await
            }

            async fn idempotency_purge(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
                self.core.idempotency_purge(before).await
            }

            async fn ping(&self) -> Result<(), StoreError> {
                self.core.ping().await
            }
        }
    };
}

delegate_event_store!(PostgresEventStore);
delegate_event_store!(SqliteEventStore);
