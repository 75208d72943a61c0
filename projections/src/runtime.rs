//! The projector runtime. Each projector applies events to its tables and advances its
//! checkpoint in the same transaction, so a crash never applies an event twice or skips one.
//! Positions are gapless and commit-ordered (see the event store), so following the log is
//! just `global_position > checkpoint`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::{AnyConnection, AnyPool, Row};
use tokio::sync::{watch, Notify};
use warden_commands::EventStore;
use warden_domain::RecordedEvent;

const BATCH: i64 = 500;
const POLL: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("read-model database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("event store error: {0}")]
    Store(#[from] warden_commands::StoreError),
    #[error("event {event_type} at position {position} could not be decoded: {reason}")]
    Decode {
        event_type: String,
        position: i64,
        reason: String,
    },
    #[error("secrets error: {0}")]
    Secrets(String),
    #[error("no projection named {0}")]
    Unknown(String),
    #[error("read models did not catch up within the wait")]
    Timeout,
}

impl ProjectionError {
    pub fn decode(event: &RecordedEvent, e: impl std::fmt::Display) -> Self {
        Self::Decode {
            event_type: event.event_type.clone(),
            position: event.global_position,
            reason: e.to_string(),
        }
    }
}

/// One read model: a name, the tables it owns, and how each event changes them.
#[async_trait]
pub trait Projector: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    /// Tables emptied on rebuild.
    fn tables(&self) -> &'static [&'static str];
    /// Applies one event inside the caller's transaction. Events it doesn't care about are
    /// ignored.
    async fn apply(
        &self,
        conn: &mut AnyConnection,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError>;
}

/// The set of projectors, their runner, and the position they have all reached.
#[derive(Clone)]
pub struct Projections {
    pool: AnyPool,
    store: Arc<dyn EventStore>,
    projectors: Arc<Vec<Arc<dyn Projector>>>,
    wake: Arc<Notify>,
    reached_tx: Arc<watch::Sender<i64>>,
    reached: watch::Receiver<i64>,
    /// The statement that opens a projector's write transaction. SQLite needs
    /// `BEGIN IMMEDIATE`: a deferred transaction that reads first cannot later upgrade to a
    /// write once another connection has committed (SQLITE_BUSY_SNAPSHOT, no busy wait).
    begin: &'static str,
    /// Appended to the checkpoint read inside a projector's transaction: `FOR UPDATE` on
    /// Postgres, so two instances never apply the same batch (SQLite has one writer anyway).
    lock_checkpoint: &'static str,
}

impl Projections {
    pub fn new(
        pool: AnyPool,
        store: Arc<dyn EventStore>,
        projectors: Vec<Arc<dyn Projector>>,
    ) -> Self {
        let (tx, rx) = watch::channel(0);
        Self {
            pool,
            store,
            projectors: Arc::new(projectors),
            wake: Arc::new(Notify::new()),
            reached_tx: Arc::new(tx),
            reached: rx,
            begin: "BEGIN",
            lock_checkpoint: "",
        }
    }

    /// Dialect: the statement opening a write transaction, and the suffix that row-locks the
    /// checkpoint inside it.
    pub fn with_dialect(mut self, begin: &'static str, lock_checkpoint: &'static str) -> Self {
        self.begin = begin;
        self.lock_checkpoint = lock_checkpoint;
        self
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.projectors.iter().map(|p| p.name()).collect()
    }

    /// Tells the runner new events were committed.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The position every projector has reached.
    pub fn position(&self) -> i64 {
        *self.reached.borrow()
    }

    /// Waits until every read model has applied `position` (read-your-writes), polling the
    /// stored checkpoints too, so another instance's progress counts.
    pub async fn wait_for(&self, position: i64, timeout: Duration) -> Result<(), ProjectionError> {
        self.wake();
        let mut rx = self.reached.clone();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if *rx.borrow_and_update() >= position {
                return Ok(());
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return if self.min_checkpoint().await? >= position {
                    Ok(())
                } else {
                    Err(ProjectionError::Timeout)
                };
            }
            let step = POLL.min(deadline - now);
            match tokio::time::timeout(step, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => tokio::time::sleep(step).await,
                Err(_) => {
                    if self.min_checkpoint().await? >= position {
                        return Ok(());
                    }
                }
            }
        }
    }

    async fn min_checkpoint(&self) -> Result<i64, ProjectionError> {
        let mut min = i64::MAX;
        let mut conn = self.pool.acquire().await?;
        for p in self.projectors.iter() {
            min = min.min(checkpoint(&mut conn, p.name(), "").await?);
        }
        Ok(if min == i64::MAX { 0 } else { min })
    }

    /// Follows the log until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut failing = false;
        loop {
            if *shutdown.borrow() {
                return;
            }
            match self.catch_up_all().await {
                Ok(progressed) => {
                    if failing {
                        tracing::info!("projections recovered");
                        failing = false;
                    }
                    if progressed {
                        continue;
                    }
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "projections stalled; retrying");
                        failing = true;
                    }
                }
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// One pass: every projector applies up to a batch. Returns whether anything moved.
    ///
    /// The batch is read once, from the lowest checkpoint, and every projector applies its
    /// part of it in ONE transaction that also moves every checkpoint: one commit per pass
    /// instead of one per projector, and read models never disagree with each other. Each
    /// checkpoint is row-locked in projector order (Postgres), so two instances never apply
    /// the same batch and never deadlock; one that finds a checkpoint moved since it looked
    /// starts over from there.
    pub async fn catch_up_all(&self) -> Result<bool, ProjectionError> {
        // Look first without a write transaction: an idle poll takes no lock.
        let seen = {
            let mut conn = self.pool.acquire().await?;
            let mut seen = Vec::with_capacity(self.projectors.len());
            for p in self.projectors.iter() {
                seen.push(checkpoint(&mut conn, p.name(), "").await?);
            }
            seen
        };
        let from = seen.iter().copied().min().unwrap_or(0);
        let events = self.store.read_all(from, BATCH).await?;
        let Some(last) = events.last().map(|e| e.global_position) else {
            let reached = if self.projectors.is_empty() {
                self.store.head_position().await?
            } else {
                from
            };
            self.publish_reached(reached);
            return Ok(false);
        };
        for (p, at) in self.projectors.iter().zip(&seen) {
            if *at == 0 {
                // The row must exist for the lock below to hold anything.
                sqlx::query(
                    "INSERT INTO checkpoints (name, position, updated_at) VALUES ($1, 0, $2) \
                     ON CONFLICT (name) DO NOTHING",
                )
                .bind(checkpoint_name(p.name()))
                .bind(warden_domain::chain::format_time(chrono::Utc::now()))
                .execute(&self.pool)
                .await?;
            }
        }
        let mut tx = self.pool.begin_with(self.begin).await?;
        let mut reached = i64::MAX;
        for (p, at) in self.projectors.iter().zip(&seen) {
            let current = checkpoint(&mut tx, p.name(), self.lock_checkpoint).await?;
            if current != *at {
                // Someone else (another instance, a rebuild) moved it: start over.
                tx.rollback().await?;
                return Ok(true);
            }
            if current >= last {
                reached = reached.min(current);
                continue;
            }
            for event in events.iter().filter(|e| e.global_position > current) {
                p.apply(&mut tx, event).await?;
            }
            save_checkpoint(&mut tx, p.name(), last).await?;
            metrics_position(p.name(), last);
            reached = reached.min(last);
        }
        tx.commit().await?;
        self.publish_reached(reached);
        Ok(true)
    }

    fn publish_reached(&self, reached: i64) {
        self.reached_tx.send_if_modified(|v| {
            let changed = *v != reached;
            *v = reached;
            changed
        });
    }

    /// Empties a read model and replays the whole log into it in one transaction, so
    /// readers see either the old model or the complete new one. `progress` gets
    /// (applied, total) after each batch.
    pub async fn rebuild(
        &self,
        name: &str,
        mut progress: impl FnMut(i64, i64) + Send,
    ) -> Result<i64, ProjectionError> {
        let p = self
            .projectors
            .iter()
            .find(|p| p.name() == name)
            .cloned()
            .ok_or_else(|| ProjectionError::Unknown(name.to_owned()))?;
        let total = self.store.head_position().await?;
        let mut tx = self.pool.begin_with(self.begin).await?;
        save_checkpoint(&mut tx, p.name(), 0).await?;
        checkpoint(&mut tx, p.name(), self.lock_checkpoint).await?;
        for table in p.tables() {
            sqlx::query(&format!("DELETE FROM {table}"))
                .execute(&mut *tx)
                .await?;
        }
        let mut at = 0;
        let mut applied = 0;
        progress(0, total);
        loop {
            let events = self.store.read_all(at, BATCH).await?;
            let Some(last) = events.last().map(|e| e.global_position) else {
                break;
            };
            for event in &events {
                p.apply(&mut tx, event).await?;
            }
            applied += events.len() as i64;
            at = last;
            progress(applied, total.max(at));
        }
        save_checkpoint(&mut tx, p.name(), at).await?;
        tx.commit().await?;
        Ok(applied)
    }
}

fn metrics_position(name: &'static str, position: i64) {
    tracing::trace!(projection = name, position, "projected");
}

async fn checkpoint(
    conn: &mut AnyConnection,
    name: &str,
    lock: &str,
) -> Result<i64, ProjectionError> {
    let row = sqlx::query(&format!(
        "SELECT position FROM checkpoints WHERE name = $1{lock}"
    ))
    .bind(checkpoint_name(name))
    .fetch_optional(&mut *conn)
    .await?;
    Ok(match row {
        Some(r) => r.try_get::<i64, _>(0)?,
        None => 0,
    })
}

async fn save_checkpoint(
    conn: &mut AnyConnection,
    name: &str,
    position: i64,
) -> Result<(), ProjectionError> {
    sqlx::query(
        "INSERT INTO checkpoints (name, position, updated_at) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at",
    )
    .bind(checkpoint_name(name))
    .bind(position)
    .bind(warden_domain::chain::format_time(chrono::Utc::now()))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

fn checkpoint_name(projector: &str) -> String {
    format!("projection:{projector}")
}
