//! Load (snapshot + tail) → pure decide → append with the expected version, retrying a
//! bounded number of times when another writer got there first.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;
use warden_domain::event::encode;
use warden_domain::{Aggregate, Ctx, DomainEvent, EventMetadata, RecordedEvent};

use crate::error::CommandError;
use crate::ports::Clock;
use crate::state_cache::{StateCache, STATES_KEPT};
use crate::store::{
    fold_stream, AppendRequest, Claim, EventStore, IdempotencyLease, NewEvent, Snapshot,
    StoreError, StreamAppend,
};

/// How many times a command is decided afresh after losing a version race. Each retry
/// waits a short, growing, jittered pause so contenders on one stream spread out.
pub const MAX_ATTEMPTS: usize = 10;
/// A snapshot is written once a stream has grown this many events past the last one.
pub const SNAPSHOT_EVERY: i64 = 100;

/// An aggregate as loaded: its state and the version it is at (0: no stream yet).
#[derive(Debug, Clone)]
pub struct Loaded<A> {
    /// Shared with the pipeline's kept states: cloned only when a command changes it.
    pub state: Arc<A>,
    pub version: i64,
    /// Version of the snapshot the load started from (0: none).
    pub snapshot_version: i64,
}

/// What a successful command wrote.
#[derive(Debug, Clone)]
pub struct Executed<A> {
    pub state: A,
    pub events: Vec<RecordedEvent>,
    /// Global position of the last event written; read models must reach it before the
    /// caller is answered (read-your-writes). `None` when nothing was written.
    pub position: Option<i64>,
}

/// Several streams' events, claims and releases, committed together.
#[derive(Debug, Default)]
pub struct Plan {
    request: AppendRequest,
}

impl Plan {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an aggregate's new events at the version it was loaded at.
    pub fn push<A: Aggregate>(
        &mut self,
        stream_id: &str,
        expected_version: i64,
        events: &[A::Event],
    ) -> Result<&mut Self, warden_domain::event::CodecError> {
        let events = encode_all(events)?;
        self.request.streams.push(StreamAppend {
            stream_id: stream_id.to_owned(),
            stream_type: A::STREAM_TYPE.to_owned(),
            expected_version,
            events,
        });
        Ok(self)
    }

    pub fn claim(&mut self, key: impl Into<String>, owner_stream_id: &str) -> &mut Self {
        self.request.claims.push(Claim {
            key: key.into(),
            owner_stream_id: owner_stream_id.to_owned(),
        });
        self
    }

    pub fn release(&mut self, key: impl Into<String>) -> &mut Self {
        self.request.released_claims.push(key.into());
        self
    }

    fn is_empty(&self) -> bool {
        self.request.streams.iter().all(|s| s.events.is_empty())
            && self.request.claims.is_empty()
            && self.request.released_claims.is_empty()
    }
}

/// Request-scoped facts every event records.
#[derive(Debug, Clone, Default)]
pub struct Meta {
    pub metadata: EventMetadata,
    pub idempotency: Option<IdempotencyLease>,
    /// Whose data key seals the request's client facts (`user-<uuid>`); when unset, the
    /// first user stream the command writes to (an anonymous sign-up or sign-in).
    pub subject: Option<String>,
}

#[derive(Clone)]
pub struct Pipeline {
    store: Arc<dyn EventStore>,
    clock: Arc<dyn Clock>,
    secrets: Option<Arc<dyn crate::ports::Secrets>>,
    /// Shared by every clone: loads of one stream go on from the last one.
    states: Arc<StateCache>,
}

impl Pipeline {
    pub fn new(store: Arc<dyn EventStore>, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            clock,
            secrets: None,
            states: Arc::new(StateCache::new(STATES_KEPT)),
        }
    }

    /// Seals every event's client facts (ip, user agent) under the data key of the person
    /// they describe, so they are personal data that forgetting that person shreds.
    pub fn with_secrets(mut self, secrets: Arc<dyn crate::ports::Secrets>) -> Self {
        self.secrets = Some(secrets);
        self
    }

    /// Moves the plaintext ip and user agent into one value sealed for `subject` (or the
    /// first user stream written). Without a subject, or once that person is forgotten,
    /// they are not recorded at all: never in plaintext.
    async fn seal_client(
        &self,
        metadata: &mut EventMetadata,
        subject: Option<&str>,
        request: &AppendRequest,
    ) -> Result<(), crate::ports::SecretsError> {
        let ip = metadata.ip.take();
        let user_agent = metadata.user_agent.take();
        if ip.is_none() && user_agent.is_none() {
            return Ok(());
        }
        let Some(secrets) = &self.secrets else {
            metadata.ip = ip;
            metadata.user_agent = user_agent;
            return Ok(());
        };
        let subject = subject.map(str::to_owned).or_else(|| {
            request
                .streams
                .iter()
                .find(|s| s.stream_type == "user")
                .map(|s| s.stream_id.clone())
        });
        let Some(subject) = subject else {
            return Ok(());
        };
        let facts = serde_json::json!({ "ip": ip, "user_agent": user_agent }).to_string();
        match secrets.seal(&subject, facts.as_bytes()).await {
            Ok(sealed) => metadata.client = Some(sealed),
            Err(crate::ports::SecretsError::Forgotten) => {}
            Err(e) => return Err(e),
        }
        Ok(())
    }

    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    pub fn ctx(&self) -> Ctx {
        Ctx { now: self.now() }
    }

    /// Loads an aggregate: from the state this process loaded last (see [`StateCache`]),
    /// else from its latest usable snapshot, plus the events after it.
    pub async fn load<A: Aggregate, E: std::error::Error + 'static>(
        &self,
        stream_id: &str,
    ) -> Result<Loaded<A>, CommandError<E>> {
        let (mut loaded, kept) = match self.states.get::<A>(stream_id) {
            Some(kept) => (kept, true),
            None => (self.snapshot_or_empty(stream_id).await?, false),
        };
        let after = loaded.version;
        // Page by page: a stream without a usable snapshot may be long, and only the folded
        // state needs to stay in memory.
        fold_stream(self.store.as_ref(), stream_id, after, |page| {
            for recorded in page {
                let event: A::Event = recorded.decode()?;
                Arc::make_mut(&mut loaded.state).apply(&event, recorded.recorded_at);
                loaded.version = recorded.version;
            }
            Ok::<_, CommandError<E>>(true)
        })
        .await?;
        if !kept || loaded.version > after {
            self.states.put(stream_id, &loaded);
        }
        Ok(loaded)
    }

    /// The stream's latest usable snapshot (the empty state at version 0 if none).
    async fn snapshot_or_empty<A: Aggregate>(
        &self,
        stream_id: &str,
    ) -> Result<Loaded<A>, StoreError> {
        let (state, version) = match self.store.load_snapshot(stream_id).await? {
            Some(s) if s.schema_version == A::SNAPSHOT_VERSION => {
                match serde_json::from_value::<A>(s.state) {
                    Ok(state) => (state, s.version),
                    Err(e) => {
                        tracing::warn!(stream_id, error = %e, "ignoring unreadable snapshot");
                        (A::default(), 0)
                    }
                }
            }
            _ => (A::default(), 0),
        };
        Ok(Loaded {
            state: Arc::new(state),
            version,
            snapshot_version: version,
        })
    }

    /// Runs one command against one aggregate: load, decide, append; on a lost race, again.
    /// `decide` must be pure: it is called once per attempt.
    pub async fn execute<A, E, F>(
        &self,
        stream_id: &str,
        meta: &Meta,
        decide: F,
    ) -> Result<Executed<A>, CommandError<E>>
    where
        A: Aggregate,
        E: std::error::Error + 'static,
        F: FnMut(&A, &Ctx) -> Result<Vec<A::Event>, E>,
    {
        self.execute_on(stream_id, meta, None, decide).await
    }

    /// Like [`Pipeline::execute`], but the first attempt decides on `first`, a state the
    /// caller already holds (a stream it has just written), instead of loading it again. If
    /// the stream moved on since, the append conflicts and the next attempt loads it.
    pub async fn execute_from<A, E, F>(
        &self,
        stream_id: &str,
        meta: &Meta,
        first: Loaded<A>,
        decide: F,
    ) -> Result<Executed<A>, CommandError<E>>
    where
        A: Aggregate,
        E: std::error::Error + 'static,
        F: FnMut(&A, &Ctx) -> Result<Vec<A::Event>, E>,
    {
        self.execute_on(stream_id, meta, Some(first), decide).await
    }

    /// `execute` with an optional first state (see [`Pipeline::execute_from`]).
    async fn execute_on<A, E, F>(
        &self,
        stream_id: &str,
        meta: &Meta,
        first: Option<Loaded<A>>,
        mut decide: F,
    ) -> Result<Executed<A>, CommandError<E>>
    where
        A: Aggregate,
        E: std::error::Error + 'static,
        F: FnMut(&A, &Ctx) -> Result<Vec<A::Event>, E>,
    {
        self.run(stream_id, meta, first, |state, ctx, plan, id| {
            let events = decide(state, ctx).map_err(CommandError::Domain)?;
            Ok((events, plan, id))
        })
        .await
        .map(|(executed, _)| executed)
    }

    /// Like [`Pipeline::execute`], but `decide` may also add claims, releases and other
    /// streams' events to the plan (given the loaded version of this stream).
    pub async fn execute_with<A, E, F, T>(
        &self,
        stream_id: &str,
        meta: &Meta,
        decide: F,
    ) -> Result<(Executed<A>, T), CommandError<E>>
    where
        A: Aggregate,
        E: std::error::Error + 'static,
        F: FnMut(&A, &Ctx, Plan, i64) -> Result<(Vec<A::Event>, Plan, T), CommandError<E>>,
    {
        self.run(stream_id, meta, None, decide).await
    }

    /// The loop behind every single-stream command. The first attempt decides on the state
    /// this process kept of the stream, without reading the store: the append names the
    /// version decided on, so if another instance wrote since, it conflicts and the next
    /// attempt loads the stream. An answer that writes nothing on that stream (a refusal, a
    /// no-op) is not checked by any append, so it is given only from a loaded state.
    async fn run<A, E, F, T>(
        &self,
        stream_id: &str,
        meta: &Meta,
        mut first: Option<Loaded<A>>,
        mut decide: F,
    ) -> Result<(Executed<A>, T), CommandError<E>>
    where
        A: Aggregate,
        E: std::error::Error + 'static,
        F: FnMut(&A, &Ctx, Plan, i64) -> Result<(Vec<A::Event>, Plan, T), CommandError<E>>,
    {
        let mut attempt = 0usize;
        // Whether the next attempt may decide on a state not read from the store.
        let mut may_recall = true;
        while attempt < MAX_ATTEMPTS {
            let (loaded, checked) = match (first.take(), may_recall) {
                (Some(held), _) => (held, false),
                (None, true) => self.recall::<A, E>(stream_id).await?,
                (None, false) => (self.load::<A, E>(stream_id).await?, true),
            };
            may_recall = false;
            let ctx = self.ctx();
            let decided = decide(&loaded.state, &ctx, Plan::new(), loaded.version);
            if !checked && !matches!(&decided, Ok((events, _, _)) if !events.is_empty()) {
                // Decided on a state that may be stale, with nothing to check it: again, on
                // the stream as it is.
                continue;
            }
            let (events, mut plan, extra) = decided?;
            plan.push::<A>(stream_id, loaded.version, &events)?;
            match self.commit(plan, meta, ctx.now).await {
                Ok((recorded, position)) => {
                    let mut after = Loaded {
                        version: loaded.version + events.len() as i64,
                        ..loaded
                    };
                    // The time as stored (rounded), so the state is the fold of the log.
                    let stored = recorded
                        .iter()
                        .find(|r| r.stream_id == stream_id && r.version == after.version);
                    let at = stored.map_or(ctx.now, |r| r.recorded_at);
                    let state = Arc::make_mut(&mut after.state);
                    for e in &events {
                        state.apply(e, at);
                    }
                    if after.version - after.snapshot_version >= SNAPSHOT_EVERY
                        && self
                            .snapshot(stream_id, after.state.as_ref(), after.version)
                            .await
                    {
                        after.snapshot_version = after.version;
                    }
                    if stored.is_some() {
                        self.states.put(stream_id, &after);
                    }
                    let state = Arc::unwrap_or_clone(after.state);
                    return Ok((
                        Executed {
                            state,
                            events: recorded,
                            position,
                        },
                        extra,
                    ));
                }
                // A kept state another instance has moved past: load it, without a pause.
                Err(CommandError::Conflict) if !checked => {}
                Err(CommandError::Conflict) => {
                    attempt += 1;
                    back_off(attempt).await;
                }
                Err(e) => return Err(e),
            }
        }
        Err(CommandError::Conflict)
    }

    /// The stream's state as this process kept it, without reading the store (`false`: not
    /// checked against the log), else loaded (`true`). Only for a decision whose append
    /// names the version it was decided on: if another instance wrote since, the append
    /// conflicts. A refusal or a no-op decided on it must be decided again on a load.
    pub async fn recall<A: Aggregate, E: std::error::Error + 'static>(
        &self,
        stream_id: &str,
    ) -> Result<(Loaded<A>, bool), CommandError<E>> {
        match self.states.get::<A>(stream_id) {
            Some(kept) => Ok((kept, false)),
            None => Ok((self.load::<A, E>(stream_id).await?, true)),
        }
    }

    /// Runs one command that changes two aggregates at once (an organization and one of its
    /// users): both are loaded, `decide` sees both, and both appends commit together with
    /// their expected versions, or the whole command is decided again.
    pub async fn execute_pair<A, B, E, F>(
        &self,
        a_stream: &str,
        b_stream: &str,
        meta: &Meta,
        mut decide: F,
    ) -> Result<PairExecuted<A, B>, CommandError<E>>
    where
        A: Aggregate,
        B: Aggregate,
        E: std::error::Error + 'static,
        F: FnMut(
            &A,
            &B,
            &Ctx,
            &mut Plan,
        ) -> Result<(Vec<A::Event>, Vec<B::Event>), CommandError<E>>,
    {
        for attempt in 1..=MAX_ATTEMPTS {
            let a = self.load::<A, E>(a_stream).await?;
            let b = self.load::<B, E>(b_stream).await?;
            let ctx = self.ctx();
            let mut plan = Plan::new();
            let (a_events, b_events) = decide(&a.state, &b.state, &ctx, &mut plan)?;
            plan.push::<A>(a_stream, a.version, &a_events)?
                .push::<B>(b_stream, b.version, &b_events)?;
            match self.commit(plan, meta, ctx.now).await {
                Ok((_, position)) => {
                    let (mut a_state, mut b_state) =
                        (Arc::unwrap_or_clone(a.state), Arc::unwrap_or_clone(b.state));
                    for e in &a_events {
                        a_state.apply(e, ctx.now);
                    }
                    for e in &b_events {
                        b_state.apply(e, ctx.now);
                    }
                    return Ok(PairExecuted {
                        first: a_state,
                        second: b_state,
                        position,
                    });
                }
                Err(CommandError::Conflict) => back_off(attempt).await,
                Err(e) => return Err(e),
            }
        }
        Err(CommandError::Conflict)
    }

    /// Commits a plan as one transaction. Returns the stored events and the last position.
    pub async fn commit<E: std::error::Error + 'static>(
        &self,
        plan: Plan,
        meta: &Meta,
        now: DateTime<Utc>,
    ) -> Result<(Vec<RecordedEvent>, Option<i64>), CommandError<E>> {
        if plan.is_empty() {
            return Ok((vec![], None));
        }
        let mut request = plan.request;
        request.streams.retain(|s| !s.events.is_empty());
        let mut metadata = meta.metadata.clone();
        self.seal_client(&mut metadata, meta.subject.as_deref(), &request)
            .await
            .map_err(CommandError::from)?;
        request.metadata = metadata;
        request.recorded_at = now;
        request.idempotency = meta.idempotency.clone();
        let outcome = self.store.append(request).await?;
        let position = (!outcome.events.is_empty()).then_some(outcome.last_position);
        Ok((outcome.events, position))
    }

    /// Saves a snapshot of the stream; whether it was saved.
    async fn snapshot<A: Aggregate>(&self, stream_id: &str, state: &A, version: i64) -> bool {
        let Ok(state) = serde_json::to_value(state) else {
            return false;
        };
        let snapshot = Snapshot {
            stream_id: stream_id.to_owned(),
            schema_version: A::SNAPSHOT_VERSION,
            version,
            state,
        };
        match self.store.save_snapshot(snapshot).await {
            Ok(()) => true,
            // A snapshot is only a cache: the next load simply reads more events.
            Err(e) => {
                tracing::warn!(stream_id, error = %e, "snapshot not saved");
                false
            }
        }
    }
}

/// A short, growing, jittered pause before deciding again after a lost race.
async fn back_off(attempt: usize) {
    let pause = rand::Rng::gen_range(&mut rand::thread_rng(), 1..=2 * attempt as u64);
    tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
}

/// The outcome of [`Pipeline::execute_pair`]: both states after the command.
#[derive(Debug, Clone)]
pub struct PairExecuted<A, B> {
    pub first: A,
    pub second: B,
    pub position: Option<i64>,
}

/// Encodes events for tests and tools that build requests by hand.
pub fn encode_all<E: DomainEvent>(
    events: &[E],
) -> Result<Vec<NewEvent>, warden_domain::event::CodecError> {
    events
        .iter()
        .map(|e| {
            encode(e).map(|enc| NewEvent {
                event_id: Uuid::now_v7(),
                event_type: enc.event_type,
                schema_version: enc.schema_version,
                payload: enc.payload,
            })
        })
        .collect()
}
