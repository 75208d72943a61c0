//! The projector runtime. Each projector applies events to its tables and advances its
//! checkpoint in the same transaction, so a crash never applies an event twice or skips one.
//! Positions are gapless and commit-ordered (see the event store), so following the log is
//! just `global_position > checkpoint`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::{AnyConnection, AnyPool, Row};
use tokio::sync::{watch, Notify};
use warden_commands::{EventStore, StoreError};
use warden_domain::RecordedEvent;

use crate::bulk::Bulk;

const BATCH: i64 = 500;
/// Events per read during a rebuild.
const REBUILD_BATCH: i64 = 2_000;
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

/// What one pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// Nothing to apply.
    Idle,
    /// Applied fewer events than a batch: caught up as of its read.
    Short,
    /// Applied a whole batch: more may be waiting.
    Full,
}

/// One read model: a name, the tables it owns, and how events change them.
#[async_trait]
pub trait Projector: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    /// Tables emptied on rebuild.
    fn tables(&self) -> &'static [&'static str];

    /// Applies consecutive events, in order, inside the caller's transaction. Events it
    /// doesn't care about are ignored. A live pass hands over the few events since the
    /// last one, a rebuild thousands at a time: a projector whose events read what earlier
    /// ones wrote keeps that state in memory for the batch and writes it in a few
    /// multi-row statements. One whose events each stand alone is an [`EventProjector`].
    async fn apply_batch(
        &self,
        conn: &mut AnyConnection,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError>;

    /// Tables whose rows are only ever inserted, one per event at most, and never read
    /// back while applying: a Postgres rebuild fills them with `COPY` on a connection of
    /// their own ([`Bulk`]), through [`Self::rebuild_batch`].
    fn bulk_tables(&self) -> &'static [&'static str] {
        &[]
    }

    /// A rebuild's batch: [`Self::apply_batch`], except that the rows of
    /// [`Self::bulk_tables`] go to `bulk` when there is one.
    async fn rebuild_batch(
        &self,
        conn: &mut AnyConnection,
        events: &[RecordedEvent],
        _bulk: Option<&mut Bulk>,
    ) -> Result<(), ProjectionError> {
        self.apply_batch(conn, events).await
    }

    /// Whether it queued webhook deliveries since it was last asked. The runner asks after
    /// each commit and wakes the dispatcher if any did, so deliveries go out at once and an
    /// idle dispatcher is not woken by every command.
    fn take_queued_deliveries(&self) -> bool {
        false
    }
}

/// A read model whose events each change its tables on their own, in a statement or two,
/// with nothing kept from one event to the next. [`EachEvent`] makes it a [`Projector`].
#[async_trait]
pub trait EventProjector: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    /// Tables emptied on rebuild.
    fn tables(&self) -> &'static [&'static str];
    /// Applies one event inside the caller's transaction. Events it doesn't care about
    /// are ignored.
    async fn apply(
        &self,
        conn: &mut AnyConnection,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError>;
}

/// An [`EventProjector`] applying a batch one event at a time.
pub struct EachEvent<P>(pub P);

#[async_trait]
impl<P: EventProjector> Projector for EachEvent<P> {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn tables(&self) -> &'static [&'static str] {
        self.0.tables()
    }

    async fn apply_batch(
        &self,
        conn: &mut AnyConnection,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        for event in events {
            self.0.apply(conn, event).await?;
        }
        Ok(())
    }
}

/// Something in this process that must hear of every event the read models take in, in
/// log order, whichever instance applied it: an in-memory cache that evicts what an event
/// changes. It hears of an event before the runner reports that position as reached, so a
/// request that waited for its write (read-your-writes) never meets a stale entry.
pub trait Observer: Send + Sync + 'static {
    fn observe(&self, event: &RecordedEvent);
}

/// The set of projectors, their runner, and the position they have all reached.
#[derive(Clone)]
pub struct Projections {
    pool: AnyPool,
    store: Arc<dyn EventStore>,
    projectors: Arc<Vec<Arc<dyn Projector>>>,
    /// Each projector's checkpoint row name, aligned with `projectors`.
    checkpoint_names: Arc<Vec<String>>,
    wake: Arc<Notify>,
    observers: Arc<Vec<Arc<dyn Observer>>>,
    /// The position observers have heard of (only the runner moves it; -1 before the
    /// first pass).
    observed: Arc<std::sync::atomic::AtomicI64>,
    /// The checkpoints as this process's passes last found or left them (`None` before the
    /// first pass), so a pass need not read them before it reads the log: the locked read
    /// inside its transaction tells if another instance or a rebuild moved them since.
    known: Arc<std::sync::Mutex<Option<Vec<i64>>>>,
    /// Rung after a pass whose projectors queued webhook deliveries.
    deliveries_queued: Option<Arc<Notify>>,
    reached_tx: Arc<watch::Sender<i64>>,
    reached: watch::Receiver<i64>,
    /// The statement that opens a projector's write transaction. SQLite needs
    /// `BEGIN IMMEDIATE`: a deferred transaction that reads first cannot later upgrade to a
    /// write once another connection has committed (SQLITE_BUSY_SNAPSHOT, no busy wait).
    begin: &'static str,
    /// Appended to the checkpoint read inside a projector's transaction: `FOR UPDATE` on
    /// Postgres, so two instances never apply the same batch (SQLite has one writer anyway).
    lock_checkpoint: &'static str,
    /// Where this process's SQLite writers queue (the store's `WriteGate`); `None` on
    /// Postgres.
    writes: Option<Arc<tokio::sync::Mutex<()>>>,
    /// Whether a rebuild fills shadow copies of the tables and swaps them in (Postgres; see
    /// [`crate::shadow`]) instead of emptying and refilling them in place.
    shadow_rebuilds: bool,
    /// Where a shadow rebuild's copier connects to fill the projectors' bulk tables (see
    /// [`crate::bulk`]); `None`: they are written like the others.
    bulk_copies: Option<sqlx::postgres::PgConnectOptions>,
}

impl Projections {
    pub fn new(
        pool: AnyPool,
        store: Arc<dyn EventStore>,
        projectors: Vec<Arc<dyn Projector>>,
    ) -> Self {
        let (tx, rx) = watch::channel(0);
        let checkpoint_names = projectors
            .iter()
            .map(|p| checkpoint_name(p.name()))
            .collect();
        Self {
            pool,
            store,
            projectors: Arc::new(projectors),
            checkpoint_names: Arc::new(checkpoint_names),
            wake: Arc::new(Notify::new()),
            observers: Arc::new(Vec::new()),
            observed: Arc::new(std::sync::atomic::AtomicI64::new(-1)),
            known: Arc::new(std::sync::Mutex::new(None)),
            deliveries_queued: None,
            reached_tx: Arc::new(tx),
            reached: rx,
            begin: "BEGIN",
            lock_checkpoint: "",
            writes: None,
            shadow_rebuilds: false,
            bulk_copies: None,
        }
    }

    /// Write transactions queue behind `writes` (SQLite: one writer per database, and a
    /// writer that finds the lock taken sleeps instead of waiting in line).
    pub fn with_write_gate(mut self, writes: Option<Arc<tokio::sync::Mutex<()>>>) -> Self {
        self.writes = writes;
        self
    }

    async fn enter_writes(&self) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        match &self.writes {
            Some(gate) => Some(Arc::clone(gate).lock_owned().await),
            None => None,
        }
    }

    /// Dialect: the statement opening a write transaction, and the suffix that row-locks the
    /// checkpoint inside it.
    pub fn with_dialect(mut self, begin: &'static str, lock_checkpoint: &'static str) -> Self {
        self.begin = begin;
        self.lock_checkpoint = lock_checkpoint;
        self
    }

    /// Rebuilds fill shadow copies of the tables and swap them in (Postgres only).
    pub fn with_shadow_rebuilds(mut self, shadow: bool) -> Self {
        self.shadow_rebuilds = shadow;
        self
    }

    /// Shadow rebuilds fill the projectors' bulk tables with `COPY` on a connection made
    /// with `options` (Postgres).
    pub fn with_bulk_copies(mut self, options: sqlx::postgres::PgConnectOptions) -> Self {
        self.bulk_copies = Some(options);
        self
    }

    /// Rings `wake` (the webhook dispatcher's) after each pass that queued deliveries.
    pub fn with_deliveries_wake(mut self, wake: Arc<Notify>) -> Self {
        self.deliveries_queued = Some(wake);
        self
    }

    /// Adds an observer (before the runner starts). It hears of events from the current
    /// head on: what it may hold was loaded from read models that include everything before.
    pub fn with_observer(mut self, observer: Arc<dyn Observer>) -> Self {
        let mut observers: Vec<Arc<dyn Observer>> = self.observers.iter().cloned().collect();
        observers.push(observer);
        self.observers = Arc::new(observers);
        self
    }

    /// Whether observers are hearing of events yet (from the runner's first pass on).
    pub fn observing(&self) -> bool {
        self.observed.load(std::sync::atomic::Ordering::Acquire) >= 0
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.projectors.iter().map(|p| p.name()).collect()
    }

    /// The tables a read model owns (none for an unknown name).
    pub fn tables(&self, name: &str) -> Vec<&'static str> {
        self.projectors
            .iter()
            .filter(|p| p.name() == name)
            .flat_map(|p| p.tables().iter().copied())
            .collect()
    }

    /// Tells the runner new events were committed.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The position every projector has reached.
    pub fn position(&self) -> i64 {
        *self.reached.borrow()
    }

    /// Waits until every read model has applied `position` (read-your-writes), and this
    /// process's observers have heard of it. Another instance's progress counts: the
    /// runner notices it on its next pass (it is woken while we wait).
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
                // Without observers the stored checkpoints are the whole truth.
                return if self.observers.is_empty() && self.min_checkpoint().await? >= position {
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
                    if self.observers.is_empty() {
                        if self.min_checkpoint().await? >= position {
                            return Ok(());
                        }
                    } else {
                        self.wake();
                    }
                }
            }
        }
    }

    async fn min_checkpoint(&self) -> Result<i64, ProjectionError> {
        let mut conn = self.pool.acquire().await?;
        let seen = checkpoints(&mut conn, &self.checkpoint_names, "").await?;
        Ok(seen.into_iter().min().unwrap_or(0))
    }

    /// Follows the log until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut failing = false;
        loop {
            if *shutdown.borrow() {
                return;
            }
            match self.pass().await {
                Ok(pass) => {
                    if failing {
                        tracing::info!("projections recovered");
                        failing = false;
                    }
                    // A full batch may have left events behind: at once. After a short one
                    // the runner was caught up as of its read; a commit since has woken it
                    // (the wake is kept until it waits).
                    if pass == Pass::Full {
                        continue;
                    }
                }
                Err(e) => {
                    // What the checkpoints are is not known after a failed pass.
                    self.remember(None);
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
        Ok(self.pass().await? != Pass::Idle)
    }

    fn known(&self) -> Option<Vec<i64>> {
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn remember(&self, checkpoints: Option<Vec<i64>>) {
        *self
            .known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = checkpoints;
    }

    async fn pass(&self) -> Result<Pass, ProjectionError> {
        loop {
            // Where the checkpoints were when this process last looked (read them the first
            // time): an idle poll then costs one read of the log and takes no lock.
            let seen = match self.known() {
                Some(seen) => seen,
                None => {
                    let mut conn = self.pool.acquire().await?;
                    checkpoints(&mut conn, &self.checkpoint_names, "").await?
                }
            };
            let from = seen.iter().copied().min().unwrap_or(0);
            // The gate before the read: the batch then takes in whatever the writers ahead
            // of this pass committed (on SQLite, usually the append batch it was woken by).
            let write = self.enter_writes().await;
            let events = self.store.read_all(from, BATCH).await?;
            let Some(last) = events.last().map(|e| e.global_position) else {
                drop(write);
                // Nothing after the lowest checkpoint: every checkpoint is at the head.
                let reached = if self.projectors.is_empty() {
                    self.store.head_position().await?
                } else {
                    from
                };
                self.remember(Some(seen));
                self.observe_up_to(reached, &[]).await?;
                self.publish_reached(reached);
                return Ok(Pass::Idle);
            };
            if seen.contains(&0) {
                // The rows must exist for the lock below to hold anything.
                create_checkpoints(&self.pool, &self.checkpoint_names).await?;
            }
            let mut tx = self.pool.begin_with(self.begin).await?;
            let current =
                checkpoints(&mut tx, &self.checkpoint_names, self.lock_checkpoint).await?;
            if current != seen {
                // Someone else (another instance, a rebuild) moved one: start over from
                // where they are.
                tx.rollback().await?;
                drop(write);
                self.remember(Some(current));
                continue;
            }
            let mut moved = Vec::new();
            for ((p, at), name) in self
                .projectors
                .iter()
                .zip(&current)
                .zip(self.checkpoint_names.iter())
            {
                if *at >= last {
                    continue;
                }
                let unseen = events.partition_point(|e| e.global_position <= *at);
                p.apply_batch(&mut tx, events.get(unseen..).unwrap_or_default())
                    .await?;
                metrics_position(p.name(), last);
                moved.push(name.as_str());
            }
            save_checkpoints(&mut tx, &moved, last).await?;
            // Until the commit is known to have landed, the next pass reads them again.
            self.remember(None);
            tx.commit().await?;
            drop(write);
            let after: Vec<i64> = current.iter().map(|at| (*at).max(last)).collect();
            let reached = after.iter().copied().min().unwrap_or(last);
            self.remember(Some(after));
            self.wake_dispatcher();
            self.observe_up_to(reached, &events).await?;
            self.publish_reached(reached);
            return Ok(if events.len() as i64 >= BATCH {
                Pass::Full
            } else {
                Pass::Short
            });
        }
    }

    /// Tells the observers of every event up to `upto` they have not heard of: from
    /// `known` (events this pass read) where it covers them, else read from the log (events
    /// another instance applied).
    async fn observe_up_to(
        &self,
        upto: i64,
        known: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        use std::sync::atomic::Ordering;
        let mut at = self.observed.load(Ordering::Acquire);
        if self.observers.is_empty() || at < 0 {
            // Nothing to tell, or the first pass: observers start from the current head.
            self.observed.fetch_max(upto, Ordering::AcqRel);
            return Ok(());
        }
        while at < upto {
            let covered = known.first().is_some_and(|e| e.global_position <= at + 1)
                && known.last().is_some_and(|e| e.global_position > at);
            let read;
            let batch: &[RecordedEvent] = if covered {
                known
            } else {
                read = self.store.read_all(at, BATCH).await?;
                &read
            };
            let mut moved = false;
            let from = at;
            for event in batch
                .iter()
                .filter(|e| e.global_position > from && e.global_position <= upto)
            {
                for observer in self.observers.iter() {
                    observer.observe(event);
                }
                at = event.global_position;
                moved = true;
            }
            if !moved {
                break;
            }
            self.observed.store(at, Ordering::Release);
        }
        Ok(())
    }

    /// Rings the dispatcher if a projector queued deliveries (every flag is taken).
    fn wake_dispatcher(&self) {
        let mut queued = false;
        for p in self.projectors.iter() {
            queued |= p.take_queued_deliveries();
        }
        if let (true, Some(wake)) = (queued, &self.deliveries_queued) {
            wake.notify_one();
        }
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
        progress: impl FnMut(i64, i64) + Send,
    ) -> Result<i64, ProjectionError> {
        self.rebuild_many(&[name], progress).await
    }

    /// Rebuilds several read models in ONE pass over the log and one transaction: each
    /// batch is read once and every named model applies it, instead of one full read of
    /// the log per model. Readers see all the old models or all the new ones.
    ///
    /// In place (SQLite) the models' checkpoints are locked from the start, so the live
    /// projections wait for the whole rebuild. Into shadow tables (Postgres) the live
    /// projections go on while the log up to where every named model had already got is
    /// replayed; only then are the checkpoints locked, the events since replayed too, and
    /// the copies swapped in, so the models never move back and a command waits for its
    /// projection only during that last step.
    pub async fn rebuild_many(
        &self,
        names: &[&str],
        mut progress: impl FnMut(i64, i64) + Send,
    ) -> Result<i64, ProjectionError> {
        if let Some(unknown) = names
            .iter()
            .find(|n| !self.projectors.iter().any(|p| p.name() == **n))
        {
            return Err(ProjectionError::Unknown((*unknown).to_owned()));
        }
        // In registration order (the order live passes apply in); checkpoints are locked in
        // name order by the statement itself, as in a live pass, so the two never deadlock.
        let chosen: Vec<Arc<dyn Projector>> = self
            .projectors
            .iter()
            .filter(|p| names.contains(&p.name()))
            .cloned()
            .collect();
        let checkpoint_names: Vec<String> =
            chosen.iter().map(|p| checkpoint_name(p.name())).collect();
        let name_refs: Vec<&str> = checkpoint_names.iter().map(String::as_str).collect();
        let tables: Vec<&str> = chosen
            .iter()
            .flat_map(|p| p.tables().iter().copied())
            .collect();
        let total = self.store.head_position().await?;
        let _write = self.enter_writes().await;
        create_checkpoints(&self.pool, &checkpoint_names).await?;
        // The log is read ahead from the start, while the transaction below is set up; the
        // first replay continues these reads.
        let mut ahead = Some(ReadAhead::start(&self.store, 0));
        let mut tx = self.pool.begin_with(self.begin).await?;
        let mut bulk: Option<Bulk> = None;
        let mut replay = Replay {
            chosen: &chosen,
            at: 0,
            applied: 0,
            total,
        };
        progress(0, total);
        let shadow = if self.shadow_rebuilds {
            // One shadow rebuild at a time: another one's copies would hold the live
            // tables this one drops, while it waits for the checkpoints this one holds.
            // (`void` is not a type the Any driver decodes: project a constant.)
            sqlx::query("SELECT CAST(1 AS BIGINT) FROM pg_advisory_xact_lock($1)")
                .bind(REBUILD_LOCK_KEY)
                .execute(&mut *tx)
                .await?;
            // Every event up to here has been applied by each named model: the live
            // deliveries and owners it wrote are committed, so this transaction's
            // re-enqueueing of them neither waits for a live pass nor holds one up.
            let settled = checkpoints(&mut tx, &checkpoint_names, "")
                .await?
                .into_iter()
                .min()
                .unwrap_or(0);
            Bulk::drop_leftovers(&mut tx).await?;
            let bulk_tables: Vec<&str> = match &self.bulk_copies {
                Some(_) => chosen
                    .iter()
                    .flat_map(|p| p.bulk_tables().iter().copied())
                    .collect(),
                None => Vec::new(),
            };
            if let (Some(options), false) = (&self.bulk_copies, bulk_tables.is_empty()) {
                bulk = Some(Bulk::start(&mut tx, &bulk_tables, options.clone()).await?);
            }
            let copied: Vec<&str> = tables
                .iter()
                .copied()
                .filter(|t| !bulk_tables.contains(t))
                .collect();
            let shadow = crate::shadow::Shadow::create(&mut tx, &copied).await?;
            replay
                .run(
                    &self.store,
                    ahead.take(),
                    &mut tx,
                    bulk.as_mut(),
                    settled,
                    &mut progress,
                )
                .await?;
            checkpoints(&mut tx, &checkpoint_names, self.lock_checkpoint).await?;
            Some(shadow)
        } else {
            checkpoints(&mut tx, &checkpoint_names, self.lock_checkpoint).await?;
            save_checkpoints(&mut tx, &name_refs, 0).await?;
            for table in &tables {
                sqlx::query(&format!("DELETE FROM {table}"))
                    .execute(&mut *tx)
                    .await?;
            }
            None
        };
        // With the checkpoints locked: the rest of the log.
        replay
            .run(
                &self.store,
                ahead.take(),
                &mut tx,
                bulk.as_mut(),
                i64::MAX,
                &mut progress,
            )
            .await?;
        if let Some(shadow) = shadow {
            shadow.swap(&mut tx).await?;
        }
        if let Some(bulk) = bulk {
            bulk.finish(&mut tx).await?;
        }
        save_checkpoints(&mut tx, &name_refs, replay.at).await?;
        tx.commit().await?;
        Ok(replay.applied)
    }
}

/// The advisory lock that serializes shadow rebuilds (Postgres).
const REBUILD_LOCK_KEY: i64 = 0x5741_5244_454e_5242;

/// A rebuild's replay of the log into the named models, in batches.
struct Replay<'a> {
    chosen: &'a [Arc<dyn Projector>],
    /// The last position applied.
    at: i64,
    applied: i64,
    total: i64,
}

impl Replay<'_> {
    /// Applies the events after `self.at` up to `until`, continuing the reads `ahead` if
    /// they start there.
    async fn run(
        &mut self,
        store: &Arc<dyn EventStore>,
        ahead: Option<ReadAhead>,
        conn: &mut AnyConnection,
        mut bulk: Option<&mut Bulk>,
        until: i64,
        progress: &mut (impl FnMut(i64, i64) + Send),
    ) -> Result<(), ProjectionError> {
        if self.at >= until {
            return Ok(());
        }
        let mut ahead = match ahead {
            Some(ahead) if ahead.starts_after == self.at => ahead,
            _ => ReadAhead::start(store, self.at),
        };
        loop {
            let mut events = ahead.next().await?;
            let Some(last) = events.last().map(|e| e.global_position) else {
                return Ok(());
            };
            let done = last >= until;
            if done {
                events.truncate(events.partition_point(|e| e.global_position <= until));
            }
            if let Some(last) = events.last().map(|e| e.global_position) {
                // Projector by projector, as a live pass applies a batch (each owns its
                // tables).
                for p in self.chosen {
                    p.rebuild_batch(&mut *conn, &events, bulk.as_deref_mut())
                        .await?;
                }
                self.applied += events.len() as i64;
                self.at = last;
                progress(self.applied, self.total.max(self.at));
            }
            if done {
                return Ok(());
            }
        }
    }
}

/// Batches a rebuild reads ahead of the one being applied.
const READ_AHEAD: usize = 3;

/// A read of up to a batch of the log after a position, in the background.
type ReadFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send>,
>;

/// Starts the read of the batch after a position.
type ReadBatch = Arc<dyn Fn(i64) -> ReadFuture + Send + Sync>;

/// The next rebuild batches, read (and decoded) in the background on other connections
/// while one is applied: the log is immutable, and reading it alone takes a quarter of a
/// rebuild's time. Positions are gapless, so the batch after one ending at `p` starts at `p + 1` and
/// several can be read at once. A batch that does not end where a full batch of a gapless
/// log would (a short batch at the head of the log) drops the reads queued after it, and
/// reading starts over from where the log was actually read to: a read queued past a gap
/// would apply events twice, one queued past the head would miss those appended since.
struct ReadAhead {
    read: ReadBatch,
    batch: i64,
    queued: std::collections::VecDeque<(i64, Prefetch)>,
    /// Where the next batch to queue starts (after this position).
    next_after: i64,
    /// Where the reads were started (after this position).
    starts_after: i64,
}

impl ReadAhead {
    fn start(store: &Arc<dyn EventStore>, after: i64) -> Self {
        let store = Arc::clone(store);
        let read: ReadBatch = Arc::new(move |after| {
            let store = Arc::clone(&store);
            Box::pin(async move { store.read_all(after, REBUILD_BATCH).await })
        });
        Self::with_reader(read, REBUILD_BATCH, after)
    }

    fn with_reader(read: ReadBatch, batch: i64, after: i64) -> Self {
        let mut ahead = Self {
            read,
            batch,
            queued: std::collections::VecDeque::with_capacity(READ_AHEAD),
            next_after: after,
            starts_after: after,
        };
        ahead.fill();
        ahead
    }

    fn fill(&mut self) {
        while self.queued.len() < READ_AHEAD {
            let read = Prefetch(tokio::spawn((self.read)(self.next_after)));
            self.queued.push_back((self.next_after, read));
            self.next_after += self.batch;
        }
    }

    /// The next batch in log order (empty at the end of the log).
    async fn next(&mut self) -> Result<Vec<RecordedEvent>, ProjectionError> {
        let Some((after, mut read)) = self.queued.pop_front() else {
            return Ok(Vec::new());
        };
        let events = read.events().await?;
        match events.last().map(|e| e.global_position) {
            Some(last) if last == after + self.batch => self.fill(),
            Some(last) => {
                self.queued.clear();
                self.next_after = last;
                self.fill();
            }
            None => self.queued.clear(),
        }
        Ok(events)
    }
}

/// A read of a rebuild batch, running in the background; dropped, it is cancelled.
struct Prefetch(tokio::task::JoinHandle<Result<Vec<RecordedEvent>, StoreError>>);

impl Prefetch {
    async fn events(&mut self) -> Result<Vec<RecordedEvent>, ProjectionError> {
        match (&mut self.0).await {
            Ok(read) => Ok(read?),
            Err(e) => Err(ProjectionError::Store(StoreError::Backend(format!(
                "the read of the next batch did not finish: {e}"
            )))),
        }
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn metrics_position(name: &'static str, position: i64) {
    tracing::trace!(projection = name, position, "projected");
}

/// The positions of `names` (checkpoint row names, sorted), in that order; 0 for a
/// missing row. One statement; `lock` row-locks them in name order.
async fn checkpoints(
    conn: &mut AnyConnection,
    names: &[String],
    lock: &str,
) -> Result<Vec<i64>, ProjectionError> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let list = crate::sql::placeholders(names.len());
    let sql = format!(
        "SELECT name, position FROM checkpoints WHERE name IN ({list}) ORDER BY name{lock}"
    );
    let mut query = sqlx::query(&sql);
    for name in names {
        query = query.bind(name);
    }
    let rows = query.fetch_all(&mut *conn).await?;
    let mut positions = vec![0; names.len()];
    for row in rows {
        let name: String = row.try_get(0)?;
        if let Some(i) = names.iter().position(|n| *n == name) {
            if let Some(slot) = positions.get_mut(i) {
                *slot = row.try_get::<i64, _>(1)?;
            }
        }
    }
    Ok(positions)
}

/// Makes sure a checkpoint row exists for each name (at 0 if new).
async fn create_checkpoints(pool: &AnyPool, names: &[String]) -> Result<(), ProjectionError> {
    if names.is_empty() {
        return Ok(());
    }
    let now = warden_domain::chain::format_time(chrono::Utc::now());
    let values: Vec<String> = (0..names.len())
        .map(|i| format!("(${}, 0, $1)", i + 2))
        .collect();
    let sql = format!(
        "INSERT INTO checkpoints (name, position, updated_at) VALUES {} \
         ON CONFLICT (name) DO NOTHING",
        values.join(", ")
    );
    let mut query = sqlx::query(&sql).bind(now);
    for name in names {
        query = query.bind(name);
    }
    query.execute(pool).await?;
    Ok(())
}

/// Moves every named checkpoint to `position`, in one statement.
async fn save_checkpoints(
    conn: &mut AnyConnection,
    names: &[&str],
    position: i64,
) -> Result<(), ProjectionError> {
    if names.is_empty() {
        return Ok(());
    }
    let values: Vec<String> = (0..names.len())
        .map(|i| format!("(${}, $1, $2)", i + 3))
        .collect();
    let sql = format!(
        "INSERT INTO checkpoints (name, position, updated_at) VALUES {} \
         ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at",
        values.join(", ")
    );
    let mut query = sqlx::query(&sql)
        .bind(position)
        .bind(warden_domain::chain::format_time(chrono::Utc::now()));
    for name in names {
        query = query.bind(*name);
    }
    query.execute(&mut *conn).await?;
    Ok(())
}

fn checkpoint_name(projector: &str) -> String {
    format!("projection:{projector}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(global_position: i64) -> RecordedEvent {
        RecordedEvent {
            event_id: uuid::Uuid::new_v4(),
            stream_id: "user-1".into(),
            stream_type: "user".into(),
            version: global_position,
            global_position,
            event_type: "user.profile_updated".into(),
            schema_version: 1,
            recorded_at: chrono::Utc::now(),
            payload: serde_json::json!({}),
            metadata: warden_domain::EventMetadata::default(),
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    /// Reads batches of ten ahead, from `after`, until the end of `log`: the positions seen.
    async fn read_through(log: &Arc<Vec<RecordedEvent>>, after: i64) -> Vec<i64> {
        let log = Arc::clone(log);
        let read: ReadBatch = Arc::new(move |after| {
            let log = Arc::clone(&log);
            Box::pin(async move {
                Ok(log
                    .iter()
                    .filter(|e| e.global_position > after)
                    .take(10)
                    .cloned()
                    .collect())
            })
        });
        let mut ahead = ReadAhead::with_reader(read, 10, after);
        let mut seen = Vec::new();
        loop {
            let batch = ahead.next().await.unwrap();
            if batch.is_empty() {
                return seen;
            }
            seen.extend(batch.iter().map(|e| e.global_position));
        }
    }

    /// Reads queued ahead assume a gapless log. Where a batch does not end where that
    /// assumes (a gap, or the head of the log), the reads queued after it start over from
    /// where it ended: every event is read once, in order.
    #[tokio::test]
    async fn reading_ahead_reads_each_event_once_across_gaps_and_up_to_the_head() {
        let log: Arc<Vec<RecordedEvent>> = Arc::new(
            (1..=95)
                .filter(|p| ![7, 40, 41].contains(p))
                .map(event)
                .collect(),
        );
        let all: Vec<i64> = log.iter().map(|e| e.global_position).collect();
        assert_eq!(read_through(&log, 0).await, all);
        let after_33: Vec<i64> = all.iter().copied().filter(|p| *p > 33).collect();
        assert_eq!(read_through(&log, 33).await, after_33);
        let gapless: Arc<Vec<RecordedEvent>> = Arc::new((1..=60).map(event).collect());
        assert_eq!(
            read_through(&gapless, 0).await,
            (1..=60).collect::<Vec<_>>()
        );
    }
}
