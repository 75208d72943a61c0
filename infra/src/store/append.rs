//! The append transaction. Everything that may conflict comes first (claim releases and
//! takes, the idempotency mark, the expected-version checks), then the append lock as its
//! own statement, then `max(global_position) + n` and the inserts — so positions are
//! gapless and in commit order, and a failed append writes nothing.

use std::collections::{BTreeSet, HashMap};

use sqlx::{Any, Row, Transaction};
use uuid::Uuid;
use warden_commands::store::{AppendOutcome, AppendRequest, StoreError, StreamAppend};
use warden_domain::chain::{compute_hash, format_time, RawEvent, GENESIS};
use warden_domain::RecordedEvent;

use super::errors::{db_error, is_unique_violation, violates_stream_version};
use super::rows::parse_time;
use super::SqlEventStore;

/// Rows per multi-row `INSERT INTO events` (12 parameters each).
const INSERT_CHUNK: usize = 40;
/// Streams per batched head read.
const HEADS_PER_STATEMENT: usize = 500;
const EVENT_PARAMS: usize = 12;

/// Why an append stopped inside its transaction.
pub(super) enum Failure {
    Store(StoreError),
    /// A concurrent writer took one of our versions between the check and the insert; the
    /// actual version is read after the rollback.
    Raced {
        stream_id: String,
        expected: i64,
    },
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

/// One event, hashed and ready to insert once its position is known.
struct Pending {
    raw: RawEvent,
    event_id: Uuid,
    payload: serde_json::Value,
}

/// A request's events, version-checked and hashed, waiting for their positions.
pub(super) struct Prepared<'r> {
    streams: Vec<(&'r StreamAppend, Vec<Pending>)>,
    /// The streams' heads after this request (for a later request in the same batch).
    heads: HashMap<String, (i64, String)>,
}

impl Prepared<'_> {
    pub(super) fn has_events(&self) -> bool {
        self.streams.iter().any(|(_, pending)| !pending.is_empty())
    }
}

impl SqlEventStore {
    pub(super) async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        match self.group_sender() {
            Some(sender) => super::group::submit(self, &sender, request).await,
            None => self.append_alone(request).await,
        }
    }

    /// One append in its own transaction.
    pub(super) async fn append_alone(
        &self,
        request: AppendRequest,
    ) -> Result<AppendOutcome, StoreError> {
        let mut tx = self.begin_write().await?;
        let result = self.append_in(&mut tx, &request).await;
        match result {
            Ok(outcome) => {
                tx.commit().await.map_err(db_error)?;
                Ok(outcome)
            }
            Err(failure) => {
                if let Err(e) = tx.rollback().await {
                    // The connection is closed rather than reused when a rollback fails.
                    tracing::warn!(error = %db_error(e), "append rollback failed");
                }
                self.settle(failure).await
            }
        }
    }

    /// The error a failed append reports (a lost race reads the actual version).
    pub(super) async fn settle(&self, failure: Failure) -> Result<AppendOutcome, StoreError> {
        match failure {
            Failure::Store(e) => Err(e),
            Failure::Raced {
                stream_id,
                expected,
            } => {
                let actual = self.stream_version(&stream_id).await?;
                Err(StoreError::VersionConflict {
                    stream_id,
                    expected,
                    actual,
                })
            }
        }
    }

    async fn append_in(
        &self,
        tx: &mut Transaction<'static, Any>,
        request: &AppendRequest,
    ) -> Result<AppendOutcome, Failure> {
        let prepared = prepare(tx, request, &HashMap::new()).await?;
        if !prepared.has_events() {
            // Claims only: no position to assign, so no lock to take.
            let head = head_in(tx).await?;
            return Ok(AppendOutcome {
                events: Vec::new(),
                last_position: head,
            });
        }
        self.take_append_lock(tx).await?;
        let mut position = head_in(tx).await?;
        let events = insert_prepared(tx, request, prepared, &mut position, INSERT_CHUNK).await?;
        Ok(AppendOutcome {
            events,
            last_position: position,
        })
    }
}

/// Everything of an append that may conflict, before the lock: claim releases and takes,
/// the idempotency mark, the expected-version checks, then the hash chain. `known` holds
/// heads already read in this transaction: a batch's streams as they stood, moved on by
/// its earlier requests (a stream not in it is read here).
pub(super) async fn prepare<'r>(
    tx: &mut Transaction<'static, Any>,
    request: &'r AppendRequest,
    known: &HashMap<String, (i64, String)>,
) -> Result<Prepared<'r>, Failure> {
    let metadata_text = serde_json::to_string(&request.metadata)
        .map_err(|e| StoreError::Backend(format!("metadata not serializable: {e}")))?;
    let recorded_at_text = format_time(request.recorded_at);
    release_claims(tx, request).await?;
    take_claims(tx, request, &recorded_at_text).await?;
    if let Some(lease) = &request.idempotency {
        // Only the record's current owner commits, and only once its record is not
        // finished: a request whose record was taken over (or committed by another
        // owner) fails here and writes nothing. The row lock this takes is held to the
        // end, so a concurrent takeover waits and then sees `committed`.
        let marked = sqlx::query(
            "UPDATE idempotency_keys SET state = 'committed' \
             WHERE scope = $1 AND key = $2 AND owner_token = $3 \
               AND state IN ('in_flight', 'committed')",
        )
        .bind(lease.key.scope.as_str())
        .bind(lease.key.key.as_str())
        .bind(lease.owner.as_str())
        .execute(&mut **tx)
        .await
        .map_err(db_error)?
        .rows_affected();
        if marked == 0 {
            return Err(Failure::Store(StoreError::IdempotencyLeaseLost));
        }
    }

    // Version checks and the hash chain. A stream named twice in one request continues
    // from its first part.
    let mut heads: HashMap<String, (i64, String)> = HashMap::new();
    let mut streams: Vec<(&StreamAppend, Vec<Pending>)> = Vec::with_capacity(request.streams.len());
    for stream in &request.streams {
        let id = stream.stream_id.as_str();
        let (current, mut prev_hash) = match heads.get(id).or_else(|| known.get(id)) {
            Some(head) => head.clone(),
            None => stream_head(tx, id).await?,
        };
        if current != stream.expected_version {
            return Err(Failure::Store(StoreError::VersionConflict {
                stream_id: stream.stream_id.clone(),
                expected: stream.expected_version,
                actual: current,
            }));
        }
        let mut pending = Vec::with_capacity(stream.events.len());
        let mut version = current;
        for event in &stream.events {
            version += 1;
            let payload = serde_json::to_string(&event.payload)
                .map_err(|e| StoreError::Backend(format!("payload not serializable: {e}")))?;
            let mut raw = RawEvent {
                event_id: event.event_id.to_string(),
                stream_id: stream.stream_id.clone(),
                stream_type: stream.stream_type.clone(),
                version,
                event_type: event.event_type.clone(),
                schema_version: event.schema_version,
                recorded_at: recorded_at_text.clone(),
                payload,
                metadata: metadata_text.clone(),
                prev_hash: prev_hash.clone(),
                hash: String::new(),
            };
            raw.hash = compute_hash(&prev_hash, &raw);
            prev_hash = raw.hash.clone();
            pending.push(Pending {
                raw,
                event_id: event.event_id,
                payload: event.payload.clone(),
            });
        }
        heads.insert(stream.stream_id.clone(), (version, prev_hash));
        streams.push((stream, pending));
    }
    Ok(Prepared { streams, heads })
}

impl Prepared<'_> {
    pub(super) fn heads(&self) -> &HashMap<String, (i64, String)> {
        &self.heads
    }
}

/// Inserts a prepared request's events at `position + 1`, … (under the append lock) and
/// returns them as recorded; `position` ends at the last one.
pub(super) async fn insert_prepared(
    tx: &mut Transaction<'static, Any>,
    request: &AppendRequest,
    prepared: Prepared<'_>,
    position: &mut i64,
    chunk_rows: usize,
) -> Result<Vec<RecordedEvent>, Failure> {
    let recorded_at = parse_time(&format_time(request.recorded_at))
        .ok_or_else(|| StoreError::Backend("recorded_at cannot be formatted".into()))?;
    let mut events = Vec::new();
    for (stream, pending) in prepared.streams {
        for chunk in pending.chunks(chunk_rows.max(1)) {
            let first = *position + 1;
            *position += chunk.len() as i64;
            insert_events(tx, chunk, first).await.map_err(|e| match e {
                e if is_unique_violation(&e) && violates_stream_version(&e) => Failure::Raced {
                    stream_id: stream.stream_id.clone(),
                    expected: stream.expected_version,
                },
                e => Failure::Store(db_error(e)),
            })?;
        }
        let first = *position - pending.len() as i64 + 1;
        for (global_position, p) in (first..).zip(pending) {
            events.push(recorded_event(p, global_position, recorded_at, request));
        }
    }
    Ok(events)
}

/// Gives up the released keys that belong to a stream of this request.
async fn release_claims(
    tx: &mut Transaction<'static, Any>,
    request: &AppendRequest,
) -> Result<(), Failure> {
    let owners: BTreeSet<&str> = request
        .streams
        .iter()
        .map(|s| s.stream_id.as_str())
        .collect();
    if owners.is_empty() {
        return Ok(());
    }
    let keys: BTreeSet<&str> = request.released_claims.iter().map(String::as_str).collect();
    let placeholders: Vec<String> = (0..owners.len()).map(|i| format!("${}", i + 2)).collect();
    let sql = format!(
        "DELETE FROM claims WHERE key = $1 AND owner_stream_id IN ({})",
        placeholders.join(", ")
    );
    for key in keys {
        let mut query = sqlx::query(&sql).bind(key);
        for owner in &owners {
            query = query.bind(*owner);
        }
        query.execute(&mut **tx).await.map_err(db_error)?;
    }
    Ok(())
}

/// Takes each claim, in key order (so two appends never wait on each other's claims in a
/// cycle). Owned by the same stream: a no-op; by another: `ClaimTaken`.
async fn take_claims(
    tx: &mut Transaction<'static, Any>,
    request: &AppendRequest,
    claimed_at: &str,
) -> Result<(), Failure> {
    let claims: BTreeSet<(&str, &str)> = request
        .claims
        .iter()
        .map(|c| (c.key.as_str(), c.owner_stream_id.as_str()))
        .collect();
    for (key, owner) in claims {
        let taken = |_| {
            Failure::Store(StoreError::ClaimTaken {
                key: key.to_owned(),
            })
        };
        // A row deleted between the insert and the read (a concurrent release) makes the
        // insert worth another try.
        let mut settled = false;
        for _ in 0..3 {
            let inserted = sqlx::query(
                "INSERT INTO claims (key, owner_stream_id, claimed_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (key) DO NOTHING",
            )
            .bind(key)
            .bind(owner)
            .bind(claimed_at)
            .execute(&mut **tx)
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    taken(())
                } else {
                    Failure::Store(db_error(e))
                }
            })?
            .rows_affected();
            if inserted > 0 {
                settled = true;
                break;
            }
            let current: Option<String> =
                sqlx::query("SELECT owner_stream_id FROM claims WHERE key = $1")
                    .bind(key)
                    .fetch_optional(&mut **tx)
                    .await
                    .and_then(|row| {
                        row.map(|r| r.try_get::<String, _>("owner_stream_id"))
                            .transpose()
                    })
                    .map_err(db_error)?;
            match current {
                Some(current) if current == owner => {
                    settled = true;
                    break;
                }
                Some(_) => return Err(taken(())),
                None => continue,
            }
        }
        if !settled {
            return Err(Failure::Store(StoreError::Backend(
                "a claim kept changing owner during the append".into(),
            )));
        }
    }
    Ok(())
}

/// A stream's current version and last hash (`0` and [`GENESIS`] when new).
async fn stream_head(
    tx: &mut Transaction<'static, Any>,
    stream_id: &str,
) -> Result<(i64, String), Failure> {
    let row = sqlx::query(
        "SELECT version, hash FROM events WHERE stream_id = $1 ORDER BY version DESC LIMIT 1",
    )
    .bind(stream_id)
    .fetch_optional(&mut **tx)
    .await
    .map_err(db_error)?;
    match row {
        None => Ok((0, GENESIS.to_owned())),
        Some(row) => {
            let version: i64 = row.try_get("version").map_err(db_error)?;
            let hash: String = row.try_get("hash").map_err(db_error)?;
            Ok((version, hash))
        }
    }
}

/// The heads of `stream_ids` in one statement (for a batch): streams without events are
/// left out, as [`stream_head`] would answer `0` and [`GENESIS`] for them.
pub(super) async fn stream_heads(
    tx: &mut Transaction<'static, Any>,
    stream_ids: &[&str],
) -> Result<HashMap<String, (i64, String)>, StoreError> {
    let mut heads = HashMap::with_capacity(stream_ids.len());
    for chunk in stream_ids.chunks(HEADS_PER_STATEMENT) {
        // Each stream's last event by one backward step of the (stream_id, version) index.
        // (A join on `GROUP BY stream_id` of the same streams had Postgres hash-join a
        // sequential scan of the whole table: 2.8 ms per batch at 5,000 events, growing
        // with the log.) `VALUES` names its column `column1` on both backends.
        let rows: Vec<String> = (1..=chunk.len()).map(|i| format!("(${i})")).collect();
        let sql = format!(
            "SELECT e.stream_id, e.version, e.hash FROM (VALUES {}) AS s \
             JOIN events e ON e.stream_id = s.column1 AND e.version = \
             (SELECT m.version FROM events m WHERE m.stream_id = s.column1 \
              ORDER BY m.version DESC LIMIT 1)",
            rows.join(", ")
        );
        let mut query = sqlx::query(&sql);
        for id in chunk {
            query = query.bind(*id);
        }
        for row in query.fetch_all(&mut **tx).await.map_err(db_error)? {
            let stream_id: String = row.try_get("stream_id").map_err(db_error)?;
            let version: i64 = row.try_get("version").map_err(db_error)?;
            let hash: String = row.try_get("hash").map_err(db_error)?;
            heads.insert(stream_id, (version, hash));
        }
    }
    for id in stream_ids {
        heads
            .entry((*id).to_owned())
            .or_insert_with(|| (0, GENESIS.to_owned()));
    }
    Ok(heads)
}

/// Inserts the events of several prepared requests at `head + 1`, … in queue order,
/// `chunk_rows` to a statement across request boundaries (a batch), and returns each
/// request's events as recorded. A unique violation here fails the whole batch, which is
/// then run one request at a time.
pub(super) async fn insert_all(
    tx: &mut Transaction<'static, Any>,
    prepared: Vec<(&AppendRequest, Prepared<'_>)>,
    head: i64,
    chunk_rows: usize,
) -> Result<Vec<Vec<RecordedEvent>>, StoreError> {
    let mut rows: Vec<Pending> = Vec::new();
    let mut counts = Vec::with_capacity(prepared.len());
    for (request, p) in prepared {
        let before = rows.len();
        for (_, pending) in p.streams {
            rows.extend(pending);
        }
        counts.push((request, rows.len() - before));
    }
    let first = head + 1;
    let chunk_rows = chunk_rows.max(1);
    for (n, chunk) in rows.chunks(chunk_rows).enumerate() {
        insert_events(tx, chunk, first + (n * chunk_rows) as i64)
            .await
            .map_err(db_error)?;
    }
    let mut recorded = (first..).zip(rows);
    let mut out = Vec::with_capacity(counts.len());
    for (request, count) in counts {
        let recorded_at = parse_time(&format_time(request.recorded_at))
            .ok_or_else(|| StoreError::Backend("recorded_at cannot be formatted".into()))?;
        let events = recorded
            .by_ref()
            .take(count)
            .map(|(global_position, p)| recorded_event(p, global_position, recorded_at, request))
            .collect();
        out.push(events);
    }
    Ok(out)
}

fn recorded_event(
    p: Pending,
    global_position: i64,
    recorded_at: chrono::DateTime<chrono::Utc>,
    request: &AppendRequest,
) -> RecordedEvent {
    RecordedEvent {
        event_id: p.event_id,
        stream_id: p.raw.stream_id,
        stream_type: p.raw.stream_type,
        version: p.raw.version,
        global_position,
        event_type: p.raw.event_type,
        schema_version: p.raw.schema_version,
        recorded_at,
        payload: p.payload,
        metadata: request.metadata.clone(),
        prev_hash: p.raw.prev_hash,
        hash: p.raw.hash,
    }
}

/// The highest committed position, as this transaction sees it.
pub(super) async fn head_in(tx: &mut Transaction<'static, Any>) -> Result<i64, Failure> {
    let head = sqlx::query("SELECT COALESCE(MAX(global_position), 0) AS head FROM events")
        .fetch_one(&mut **tx)
        .await
        .and_then(|row| row.try_get::<i64, _>("head"))
        .map_err(db_error)?;
    Ok(head)
}

/// Inserts consecutive events at positions `first`, `first + 1`, … in one statement.
async fn insert_events(
    tx: &mut Transaction<'static, Any>,
    chunk: &[Pending],
    first: i64,
) -> Result<(), sqlx::Error> {
    let mut sql = String::from(
        "INSERT INTO events (global_position, event_id, stream_id, stream_type, version, \
         event_type, schema_version, recorded_at, payload, metadata, prev_hash, hash) VALUES ",
    );
    for row in 0..chunk.len() {
        if row > 0 {
            sql.push_str(", ");
        }
        let params: Vec<String> = (1..=EVENT_PARAMS)
            .map(|col| format!("${}", row * EVENT_PARAMS + col))
            .collect();
        sql.push('(');
        sql.push_str(&params.join(", "));
        sql.push(')');
    }
    let mut query = sqlx::query(&sql);
    for (position, p) in (first..).zip(chunk) {
        let raw = &p.raw;
        query = query
            .bind(position)
            .bind(raw.event_id.as_str())
            .bind(raw.stream_id.as_str())
            .bind(raw.stream_type.as_str())
            .bind(raw.version)
            .bind(raw.event_type.as_str())
            .bind(i64::from(raw.schema_version))
            .bind(raw.recorded_at.as_str())
            .bind(raw.payload.as_str())
            .bind(raw.metadata.as_str())
            .bind(raw.prev_hash.as_str())
            .bind(raw.hash.as_str());
    }
    query.execute(&mut **tx).await?;
    Ok(())
}
