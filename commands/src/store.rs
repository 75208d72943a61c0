//! The event store port. Two implementations live in `warden-infra` (Postgres, SQLite); both
//! pass one conformance suite.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;
use warden_domain::chain::{ChainReport, RawEvent};
use warden_domain::{EventMetadata, RecordedEvent};

/// Events per statement when a long stream is read page by page (loads, chain checks,
/// replays).
pub const STREAM_PAGE: i64 = 1_000;

/// Feeds a stream's events after `after_version` to `fold`, in version order, a page of
/// [`STREAM_PAGE`] at a time (only one page is held), until the stream ends or `fold`
/// answers false.
pub async fn fold_stream<E: From<StoreError>>(
    store: &dyn EventStore,
    stream_id: &str,
    after_version: i64,
    mut fold: impl FnMut(&[RecordedEvent]) -> Result<bool, E> + Send,
) -> Result<(), E> {
    let mut after = after_version;
    loop {
        let page = store
            .read_stream_page(stream_id, after, STREAM_PAGE)
            .await?;
        let more = fold(&page)?;
        match page.last() {
            Some(last) if more && page.len() as i64 >= STREAM_PAGE => after = last.version,
            _ => return Ok(()),
        }
    }
}

/// One event to append.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: i32,
    pub payload: Value,
}

/// Events for one stream, with the version the stream must be at (0: must not exist yet).
#[derive(Debug, Clone, PartialEq)]
pub struct StreamAppend {
    pub stream_id: String,
    pub stream_type: String,
    pub expected_version: i64,
    pub events: Vec<NewEvent>,
}

/// A uniqueness claim (e.g. `email:<digest>`) owned by a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub key: String,
    pub owner_stream_id: String,
}

/// Identifies an idempotency record: who asked (`scope`) and their key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey {
    pub scope: String,
    pub key: String,
}

/// An idempotency record as held by the one request that started it (or took it over):
/// its key and the fresh owner token [`EventStore::idempotency_begin`] stored in it.
/// Finishing, abandoning and the append's commit mark take effect only while the record
/// still carries this token, so a request whose record was taken over changes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyLease {
    pub key: IdempotencyKey,
    pub owner: String,
}

/// Everything one command writes, in one transaction: all or nothing.
#[derive(Debug, Clone, Default)]
pub struct AppendRequest {
    pub streams: Vec<StreamAppend>,
    pub metadata: EventMetadata,
    pub recorded_at: DateTime<Utc>,
    /// Claims to take. Taking a claim already owned by the same stream is a no-op; owned by
    /// another stream, the whole append fails with [`StoreError::ClaimTaken`].
    pub claims: Vec<Claim>,
    /// Claim keys to give up (only those owned by a stream in this request are released).
    pub released_claims: Vec<String>,
    /// Marks this idempotency record as having committed its effect, atomically with it.
    /// The append fails with [`StoreError::IdempotencyLeaseLost`] (writing nothing) unless
    /// the record still belongs to this lease and no other owner committed it.
    pub idempotency: Option<IdempotencyLease>,
}

#[derive(Debug, Clone)]
pub struct AppendOutcome {
    /// The stored events, in global order.
    pub events: Vec<RecordedEvent>,
    /// The global position of the last event written (unchanged head if none).
    pub last_position: i64,
}

/// A cached aggregate state at a stream version. Rebuildable from events; never required.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub stream_id: String,
    /// The aggregate's `SNAPSHOT_VERSION` when it was taken.
    pub schema_version: i32,
    pub version: i64,
    pub state: Value,
}

/// A response saved for an idempotent POST. The body is stored sealed by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

/// What to do with a request that carries an `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyBegin {
    /// First time (or the first request was abandoned long ago): run it under this lease;
    /// the record is now in flight.
    Started(IdempotencyLease),
    /// The first request with this key is still running (it may have committed already).
    InFlight,
    /// Finished before: answer with this.
    Replay(SavedResponse),
    /// The same key came with a different body.
    Mismatch,
    /// The first request committed its effect but its response was lost (it stopped between
    /// commit and save, and its record is older than `stale_after`): it must not run again.
    CommittedWithoutResponse,
}

/// What [`EventStore::idempotency_abandon`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdempotencyAbandon {
    /// Nothing had committed: the record is gone, so a retry runs afresh.
    Dropped,
    /// The request's effect had already committed: the record stays, so it never runs twice.
    Committed,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("stream {stream_id} is at version {actual}, expected {expected}")]
    VersionConflict {
        stream_id: String,
        expected: i64,
        actual: i64,
    },
    #[error("claim {key} is already taken")]
    ClaimTaken { key: String },
    #[error("the event store is unavailable: {0}")]
    Unavailable(String),
    #[error("the event store failed: {0}")]
    Backend(String),
    #[error("a stored event is unreadable: {0}")]
    Corrupt(String),
    /// The request no longer holds its idempotency record: a later request with the same
    /// key took it over (it looked abandoned), or another owner committed it. Nothing was
    /// written.
    #[error("the request no longer holds its idempotency record")]
    IdempotencyLeaseLost,
}

#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends atomically: version checks, claims, hash chain, gapless commit-ordered
    /// global positions, the idempotency mark.
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError>;

    /// A stream's events with `version > after_version`, in version order.
    async fn read_stream(
        &self,
        stream_id: &str,
        after_version: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// At most `limit` of a stream's events with `version > after_version`, in version
    /// order: how a long stream is folded without holding all of it in memory.
    async fn read_stream_page(
        &self,
        stream_id: &str,
        after_version: i64,
        limit: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Every event of the named streams (each stream in version order, streams in any
    /// order; unknown streams have none): what a batch that folds many streams needs, in
    /// one read instead of one per stream.
    async fn read_streams(&self, stream_ids: &[String]) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut all = Vec::new();
        for id in stream_ids {
            all.extend(self.read_stream(id, 0).await?);
        }
        Ok(all)
    }

    /// At most `limit` of a stream's events with `version > after_version`, exactly as
    /// stored and hashed, in version order: for chain verification.
    async fn read_stream_raw(
        &self,
        stream_id: &str,
        after_version: i64,
        limit: i64,
    ) -> Result<Vec<RawEvent>, StoreError>;

    /// The highest version of a stream (0: no such stream).
    async fn stream_version(&self, stream_id: &str) -> Result<i64, StoreError>;

    /// Recomputes one stream's hash chain, page by page.
    async fn verify_stream(&self, stream_id: &str) -> Result<ChainReport, StoreError> {
        let mut walk = warden_domain::chain::ChainWalk::default();
        let mut after = 0;
        loop {
            let page = self.read_stream_raw(stream_id, after, STREAM_PAGE).await?;
            walk.push(&page);
            match page.last() {
                Some(last) if page.len() as i64 >= STREAM_PAGE => after = last.version,
                _ => return Ok(walk.report()),
            }
        }
    }

    /// Events with `global_position > after`, in global order, at most `limit`.
    async fn read_all(&self, after: i64, limit: i64) -> Result<Vec<RecordedEvent>, StoreError>;

    /// The highest committed global position (0 when empty).
    async fn head_position(&self) -> Result<i64, StoreError>;

    /// The stream that owns a claim, if any.
    async fn claim_owner(&self, key: &str) -> Result<Option<String>, StoreError>;

    async fn load_snapshot(&self, stream_id: &str) -> Result<Option<Snapshot>, StoreError>;
    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError>;

    /// Claims an idempotency record (`INSERT … ON CONFLICT DO NOTHING`), or reports its state.
    /// An in-flight record older than `stale_after` that never committed is taken over. Either
    /// way the record gets a fresh random owner token, returned in the lease.
    async fn idempotency_begin(
        &self,
        key: &IdempotencyKey,
        request_hash: &str,
        now: DateTime<Utc>,
        stale_after: chrono::Duration,
    ) -> Result<IdempotencyBegin, StoreError>;
    /// Saves the final response of a started record; [`StoreError::IdempotencyLeaseLost`]
    /// if the lease no longer holds it (nothing is saved then).
    async fn idempotency_finish(
        &self,
        lease: &IdempotencyLease,
        response: SavedResponse,
    ) -> Result<(), StoreError>;
    /// Drops a started record that did not commit anything (a 5xx), so a retry may run; a
    /// record whose effect committed stays. [`StoreError::IdempotencyLeaseLost`] if the lease
    /// no longer holds it.
    async fn idempotency_abandon(
        &self,
        lease: &IdempotencyLease,
    ) -> Result<IdempotencyAbandon, StoreError>;
    /// Deletes records older than `before`; returns how many.
    async fn idempotency_purge(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;

    /// Reachability, for `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;
}
