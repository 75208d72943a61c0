//! The relay: follows the event log in global order and hands every event to a
//! [`Publisher`] — NATS JetStream, or the in-process bus when `NATS_URL` is unset
//! (DESIGN.md "Read side"; es-engineering §3).
//!
//! One loop for both sinks:
//! 1. On Postgres, a relay for a shared sink (JetStream) runs only while it holds a
//!    session-level advisory lock on a dedicated connection; other instances stand by and
//!    retry every couple of seconds. SQLite is single-instance; the in-process bus is
//!    per-process: neither takes the lock.
//! 2. Every round starts from `max(checkpoint row, Warden-Global-Position of the stream's last
//!    message)` — the latter only if that message really is the event at that position in
//!    this log — so a crash between PubAck and checkpoint write republishes nothing, whatever
//!    the duplicate window.
//! 3. `read_all(checkpoint, batch)`, publish the batch (pipelined, acks awaited in order),
//!    then advance the checkpoint row (never backwards). Every message after the first of a
//!    round carries `Nats-Expected-Last-Msg-Id` = its predecessor's event id, so the stream
//!    stays a gap-free, ordered prefix of the log even if stale publishes from an interrupted
//!    attempt reach the server late.
//! 4. Any failure (NATS down, store error): one `warn!` per outage, exponential back-off with
//!    jitter (capped at ~5 s), and a new round from the checkpoint. Nothing is lost; repeats
//!    are dropped by `Nats-Msg-Id`.
//! 5. Idle: wait for the [`Notify`] (call `notify_one()` after a commit) or poll.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use sqlx::{AnyConnection, Connection};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use warden_commands::store::{EventStore, StoreError};
use warden_domain::RecordedEvent;

use crate::bus::{BusError, Continuity, Publisher};
use crate::db::{Backend, Database};

/// The advisory-lock key of the JetStream relay ("WRDN" + 1).
pub const RELAY_LOCK_KEY: i64 = 0x5752_444E_0000_0001;

#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// The `checkpoints` row; `None`: the publisher's own (`nats_relay`, `in_process_bus`).
    pub checkpoint_name: Option<String>,
    /// Events read and published per batch.
    pub batch_size: i64,
    /// How often to look for new events when nobody wakes the relay.
    pub poll_interval: Duration,
    /// First back-off delay after a failure.
    pub retry_min: Duration,
    /// Back-off cap.
    pub retry_max: Duration,
    /// How often a standby instance tries to take the leader lock.
    pub standby_interval: Duration,
    /// The Postgres advisory-lock key.
    pub lock_key: i64,
    /// Under steady load the checkpoint row is written at most this often (and once the
    /// log has been quiet for a poll interval); zero: after every batch. A stale row costs nothing: a new
    /// round starts after the sink's last message when that is ahead (JetStream), and a
    /// restarted process's in-process subscribers have seen nothing yet.
    pub checkpoint_interval: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            checkpoint_name: None,
            batch_size: 500,
            poll_interval: Duration::from_millis(200),
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_secs(5),
            standby_interval: Duration::from_secs(2),
            lock_key: RELAY_LOCK_KEY,
            checkpoint_interval: Duration::ZERO,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("database error: {0}")]
    Database(String),
}

fn db_err(e: sqlx::Error) -> RelayError {
    RelayError::Database(e.to_string())
}

/// The relay. Build it with [`Relay::new`], keep [`Relay::waker`] and [`Relay::position`],
/// then spawn [`Relay::run`].
pub struct Relay {
    store: Arc<dyn EventStore>,
    db: Database,
    publisher: Arc<dyn Publisher>,
    config: RelayConfig,
    checkpoint_name: String,
    wake: Arc<Notify>,
    position: watch::Sender<i64>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("publisher", &self.publisher.kind())
            .field("checkpoint", &self.checkpoint_name)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Relay {
    pub fn new(
        store: Arc<dyn EventStore>,
        db: Database,
        publisher: Arc<dyn Publisher>,
        config: RelayConfig,
    ) -> Self {
        let checkpoint_name = config
            .checkpoint_name
            .clone()
            .unwrap_or_else(|| publisher.checkpoint_name().to_owned());
        let (position, _) = watch::channel(0);
        Self {
            store,
            db,
            publisher,
            config,
            checkpoint_name,
            wake: Arc::new(Notify::new()),
            position,
        }
    }

    /// Uses `wake` (e.g. one shared with the projectors) instead of the relay's own.
    pub fn with_waker(mut self, wake: Arc<Notify>) -> Self {
        self.wake = wake;
        self
    }

    /// Call `notify_one()` on it after a commit to relay at once instead of at the next poll.
    pub fn waker(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }

    /// The global position up to which events have been durably handed over (0 until the
    /// relay has read its checkpoint). Use `wait_for(|p| *p >= n)` to wait for an event.
    pub fn position(&self) -> watch::Receiver<i64> {
        self.position.subscribe()
    }

    /// Runs until `shutdown` is cancelled. Never fails: errors are logged and retried.
    pub async fn run(self, shutdown: CancellationToken) {
        let span = tracing::info_span!(
            "relay",
            publisher = self.publisher.kind(),
            checkpoint = %self.checkpoint_name
        );
        self.run_inner(shutdown).instrument(span).await;
    }

    async fn run_inner(self, shutdown: CancellationToken) {
        let mut health = Health::new(&self.config);
        let mut standing_by = false;
        loop {
            let attempt = tokio::select! {
                () = shutdown.cancelled() => return,
                attempt = self.try_lead() => attempt,
            };
            match attempt {
                Ok(Some(mut leader)) => {
                    standing_by = false;
                    tracing::info!("relay started");
                    let outcome = tokio::select! {
                        () = shutdown.cancelled() => None,
                        outcome = self.lead(&mut leader, &mut health) => Some(outcome),
                    };
                    leader.release(self.config.lock_key).await;
                    match outcome {
                        None => {
                            tracing::info!("relay stopped");
                            return;
                        }
                        Some(LostLeadership) => {
                            tracing::warn!("relay lost its leader lock; standing by");
                        }
                    }
                }
                Ok(None) => {
                    if !standing_by {
                        tracing::info!("another instance runs the relay; standing by");
                        standing_by = true;
                    }
                    if sleep_or_cancel(self.config.standby_interval, &shutdown).await {
                        return;
                    }
                }
                Err(error) => {
                    let delay = health.failed(&error);
                    if sleep_or_cancel(delay, &shutdown).await {
                        return;
                    }
                }
            }
        }
    }

    /// The leader lock if this instance should run, `None` if another instance holds it.
    async fn try_lead(&self) -> Result<Option<Leader>, RelayError> {
        if self.db.backend != Backend::Postgres || !self.publisher.shared() {
            return Ok(Some(Leader::Unlocked));
        }
        // A dedicated connection, out of the pool: the session lock lives exactly as long.
        let mut conn = self.db.pool.acquire().await.map_err(db_err)?.detach();
        let got: i64 = sqlx::query_scalar(
            "SELECT CAST(CASE WHEN pg_try_advisory_lock($1) THEN 1 ELSE 0 END AS BIGINT)",
        )
        .bind(self.config.lock_key)
        .fetch_one(&mut conn)
        .await
        .map_err(db_err)?;
        if got == 1 {
            Ok(Some(Leader::Locked(conn)))
        } else {
            let _ = conn.close().await;
            Ok(None)
        }
    }

    /// Rounds until the leader lock is lost (never returns otherwise; cancelled on shutdown).
    async fn lead(&self, leader: &mut Leader, health: &mut Health) -> LostLeadership {
        loop {
            match self.round(leader, health).await {
                Ok(lost) => return lost,
                Err(error) => {
                    let delay = health.failed(&error);
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// One round: resume, then publish batches until something fails.
    async fn round(
        &self,
        leader: &mut Leader,
        health: &mut Health,
    ) -> Result<LostLeadership, RelayError> {
        self.publisher.prepare().await?;
        let Resume {
            mut checkpoint,
            chain,
        } = self.resume_point().await?;
        self.position.send_replace(checkpoint);
        // The first message of a round carries no expectation (the server may have restarted
        // and forgotten its last id); every later one names its predecessor — unless the
        // stream's tail is not ours: then re-sent events may be duplicates, which the server
        // acknowledges without making them its last id, so a chain would never match.
        let mut continuity = if chain {
            Continuity::Chained(None)
        } else {
            Continuity::Unchecked
        };
        // The position published but not yet written to the checkpoint row.
        let mut unsaved = None;
        let mut saved_at = tokio::time::Instant::now();
        // Whether the last read may have left events behind (a full batch): read again at
        // once. After a short batch the relay is caught up as of its read, and waits.
        let mut more = true;
        loop {
            if !more {
                health.ok();
                let woken = tokio::select! {
                    () = self.wake.notified() => true,
                    () = tokio::time::sleep(self.config.poll_interval) => false,
                };
                // The log went quiet (or the interval passed) with a published position not
                // yet written: write it now. Under steady load wakes keep coming and the row
                // is written once per interval, below.
                if let Some(position) = unsaved {
                    if !woken || saved_at.elapsed() >= self.config.checkpoint_interval {
                        self.save_checkpoint(position).await?;
                        saved_at = tokio::time::Instant::now();
                        unsaved = None;
                    }
                }
            }
            let events = self
                .store
                .read_all(checkpoint, self.config.batch_size.max(1))
                .await?;
            more = events.len() as i64 >= self.config.batch_size.max(1);
            let Some(last) = events.last() else {
                continue;
            };
            let (from, to, last_id) = (checkpoint, last.global_position, last.event_id);
            if !leader.still_held().await {
                return Ok(LostLeadership);
            }
            let events: Vec<Arc<RecordedEvent>> = events.into_iter().map(Arc::new).collect();
            let report = self.publisher.publish(&events, continuity).await?;
            if saved_at.elapsed() >= self.config.checkpoint_interval {
                self.save_checkpoint(to).await?;
                saved_at = tokio::time::Instant::now();
                unsaved = None;
            } else {
                unsaved = Some(to);
            }
            checkpoint = to;
            // After an unchecked batch whose last event was stored anew, that event is the
            // stream's last message: chain from here on.
            if continuity != Continuity::Unchecked || !report.last_was_duplicate {
                continuity = Continuity::Chained(Some(last_id));
            }
            self.position.send_replace(checkpoint);
            health.ok();
            tracing::debug!(
                from,
                to,
                batch = events.len(),
                duplicates = report.duplicates,
                "relayed"
            );
        }
    }

    /// `max(checkpoint row, position of the sink's last message)`, trusting the sink only if
    /// its last message is the event at that position in this log.
    async fn resume_point(&self) -> Result<Resume, RelayError> {
        // What this process published counts even if the row was not written yet.
        let stored = self.load_checkpoint().await?.max(*self.position.borrow());
        let Some(tail) = self.publisher.last_published().await? else {
            return Ok(Resume {
                checkpoint: stored,
                chain: true,
            });
        };
        let ours = match tail.position {
            Some(position) if position > 0 => self
                .store
                .read_all(position - 1, 1)
                .await?
                .first()
                .is_some_and(|e| {
                    e.global_position == position && Some(e.event_id) == tail.event_id
                }),
            _ => false,
        };
        match tail.position {
            Some(position) if ours && position > stored => {
                tracing::info!(
                    checkpoint = stored,
                    stream_position = position,
                    "the stream is ahead of the checkpoint; resuming after its last message"
                );
                self.save_checkpoint(position).await?;
                Ok(Resume {
                    checkpoint: position,
                    chain: true,
                })
            }
            // At or behind the checkpoint: nothing after the checkpoint is in the stream.
            Some(_) if ours => Ok(Resume {
                checkpoint: stored,
                chain: true,
            }),
            _ => {
                tracing::warn!(
                    stream_position = tail.position,
                    stream_sequence = tail.sequence,
                    checkpoint = stored,
                    "the stream's last message is not an event of this log; resuming from the \
                     checkpoint (re-sent events are dropped by Nats-Msg-Id)"
                );
                Ok(Resume {
                    checkpoint: stored,
                    chain: false,
                })
            }
        }
    }

    async fn load_checkpoint(&self) -> Result<i64, RelayError> {
        let position: Option<i64> =
            sqlx::query_scalar("SELECT position FROM checkpoints WHERE name = $1")
                .bind(&self.checkpoint_name)
                .fetch_optional(&self.db.pool)
                .await
                .map_err(db_err)?;
        Ok(position.unwrap_or(0))
    }

    /// Advances the checkpoint row (never moves it backwards).
    async fn save_checkpoint(&self, position: i64) -> Result<(), RelayError> {
        sqlx::query(
            "INSERT INTO checkpoints (name, position, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET position = excluded.position, \
             updated_at = excluded.updated_at WHERE checkpoints.position < excluded.position",
        )
        .bind(&self.checkpoint_name)
        .bind(position)
        .bind(warden_domain::chain::format_time(chrono::Utc::now()))
        .execute(&self.db.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }
}

/// Where a round starts, and whether its messages may name their predecessor.
struct Resume {
    checkpoint: i64,
    chain: bool,
}

/// This instance may run the relay.
enum Leader {
    /// No lock needed (SQLite, or a per-process sink).
    Unlocked,
    /// Holding the session advisory lock on this connection.
    Locked(AnyConnection),
}

struct LostLeadership;

impl Leader {
    async fn still_held(&mut self) -> bool {
        match self {
            Self::Unlocked => true,
            Self::Locked(conn) => conn.ping().await.is_ok(),
        }
    }

    async fn release(self, key: i64) {
        if let Self::Locked(mut conn) = self {
            let _ = sqlx::query_scalar::<_, i64>(
                "SELECT CAST(CASE WHEN pg_advisory_unlock($1) THEN 1 ELSE 0 END AS BIGINT)",
            )
            .bind(key)
            .fetch_one(&mut conn)
            .await;
            let _ = conn.close().await;
        }
    }
}

/// Outage tracking: one warning per outage, exponential back-off with jitter.
struct Health {
    failing: bool,
    next_delay: Duration,
    min: Duration,
    max: Duration,
}

impl Health {
    fn new(config: &RelayConfig) -> Self {
        Self {
            failing: false,
            next_delay: config.retry_min,
            min: config.retry_min,
            max: config.retry_max.max(config.retry_min),
        }
    }

    /// Records a failure; returns how long to wait before retrying.
    fn failed(&mut self, error: &RelayError) -> Duration {
        if self.failing {
            tracing::debug!(error = %error, "relay still failing");
        } else {
            self.failing = true;
            tracing::warn!(
                error = %error,
                "relay paused: publishing failed; retrying from the checkpoint"
            );
        }
        let delay = self.next_delay;
        self.next_delay = delay.saturating_mul(2).min(self.max);
        // Full delay minus up to half of it, so instances don't retry in lockstep.
        let half = u64::try_from(delay.as_millis() / 2).unwrap_or(u64::MAX);
        let jitter = rand::thread_rng().gen_range(0..=half);
        delay.saturating_sub(Duration::from_millis(jitter))
    }

    fn ok(&mut self) {
        if self.failing {
            tracing::info!("relay recovered");
        }
        self.failing = false;
        self.next_delay = self.min;
    }
}

/// Sleeps; true if cancelled meanwhile.
async fn sleep_or_cancel(delay: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => true,
        () = tokio::time::sleep(delay) => false,
    }
}
