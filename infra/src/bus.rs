//! Where the relay ([`crate::relay::Relay`]) sends the event log: NATS JetStream when
//! `NATS_URL` is set ([`NatsPublisher`]), otherwise an in-process broadcast
//! ([`InProcessBus`]). Both sit behind one object-safe [`Publisher`] trait, so the relay has
//! one loop for both (DESIGN.md "Read side").
//!
//! JetStream contract (API.md "NATS"): stream `WARDEN_EVENTS` on `warden.events.>`, one
//! message per event on `warden.events.<stream_type>.<event_type>` (the event type is dotted,
//! so `user.registered` of a `user` stream goes to `warden.events.user.user.registered`), the
//! body is the [`RecordedEvent`] JSON, headers `Nats-Msg-Id: <event_id>` (the server drops a
//! repeat within the duplicate window) and `Warden-Global-Position: <n>` (lets the relay
//! resume from the stream itself, so correctness does not rest on the window alone).
//!
//! Only features of nats-server 2.9 are used (no multi-subject filters, per-message TTL or
//! batch publish).

use std::sync::Arc;
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::{self, context::Publish, stream};
use async_trait::async_trait;
use tokio::sync::{broadcast, Mutex};
use uuid::Uuid;
use warden_domain::RecordedEvent;

/// The header carrying the event's global position.
pub const POSITION_HEADER: &str = "Warden-Global-Position";
/// The JetStream de-duplication header (set to the event id).
pub const MSG_ID_HEADER: &str = "Nats-Msg-Id";
/// The default stream name.
pub const DEFAULT_STREAM: &str = "WARDEN_EVENTS";
/// The default subject prefix.
pub const DEFAULT_SUBJECT_PREFIX: &str = "warden.events";
/// The default capacity of the in-process bus.
pub const DEFAULT_BUS_CAPACITY: usize = 4096;

#[derive(Debug, Clone, thiserror::Error)]
pub enum BusError {
    #[error("cannot connect to NATS: {0}")]
    Connect(String),
    #[error("cannot set up the JetStream stream: {0}")]
    Stream(String),
    #[error("publishing to JetStream failed: {0}")]
    Publish(String),
    #[error("an event could not be encoded: {0}")]
    Encode(String),
}

/// The last message a publisher durably holds, as far as it can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastPublished {
    /// Its `Warden-Global-Position` header (`None`: not a message the relay wrote).
    pub position: Option<i64>,
    /// Its `Nats-Msg-Id` header, if it parses as a UUID.
    pub event_id: Option<Uuid>,
    /// Its sequence in the stream.
    pub sequence: u64,
}

/// What one [`Publisher::publish`] call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublishReport {
    /// Messages handed over (and, for JetStream, acknowledged).
    pub published: usize,
    /// Of those, how many the server reported as duplicates (already stored).
    pub duplicates: usize,
    /// Whether the last one was a duplicate (if not, it is now the stream's last message).
    pub last_was_duplicate: bool,
}

/// A sink for the event log, fed in global order by the relay.
#[async_trait]
pub trait Publisher: Send + Sync + 'static {
    /// A short name for logs (`nats`, `in_process`).
    fn kind(&self) -> &'static str;

    /// The `checkpoints` row the relay keeps for this sink.
    fn checkpoint_name(&self) -> &'static str;

    /// Whether one relay per deployment feeds this sink (a shared broker: the relay takes the
    /// Postgres leader lock) rather than one per process (an in-process bus).
    fn shared(&self) -> bool;

    /// Makes the sink ready (connects, creates or updates the stream). Cheap when already
    /// ready; the relay calls it at the start of every round.
    async fn prepare(&self) -> Result<(), BusError>;

    /// The last message the sink durably holds, if it can tell (`None` when empty or unknown).
    async fn last_published(&self) -> Result<Option<LastPublished>, BusError>;

    /// Publishes `events` in order and returns once all are durably accepted. With
    /// [`Continuity::Chained`], a sink that can (JetStream) refuses to store an event whose
    /// predecessor is not its last message, so the stream stays a gap-free, ordered prefix of
    /// the log even if stale publishes from an interrupted attempt arrive late. On error
    /// nothing is known: the caller retries from its checkpoint (repeats are de-duplicated by
    /// event id).
    async fn publish(
        &self,
        events: &[Arc<RecordedEvent>],
        continuity: Continuity,
    ) -> Result<PublishReport, BusError>;
}

/// How a batch relates to what the sink already holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Continuity {
    /// Every event names its predecessor (`Nats-Expected-Last-Msg-Id`); the first names this
    /// id, or nothing when `None` (the first batch of a round: the server may have restarted
    /// and forgotten its last id).
    Chained(Option<Uuid>),
    /// No expectation: some events may already be stored (the server acknowledges those as
    /// duplicates without making them its last id, so a chain could never match).
    Unchecked,
}

// ---------------------------------------------------------------------------------------------
// NATS JetStream

/// How to reach NATS and which stream to feed.
#[derive(Clone)]
pub struct NatsConfig {
    /// `nats://[user:pass@]host:port[,…]`. Never logged as is.
    pub url: String,
    /// The JetStream stream (`WARDEN_EVENTS`).
    pub stream_name: String,
    /// The subject prefix (`warden.events`); the stream captures `<prefix>.>`.
    pub subject_prefix: String,
    /// How long the server remembers message ids. Must outlast the relay's retry horizon.
    pub duplicate_window: Duration,
    /// How long to wait for a PubAck (and other JetStream API replies).
    pub ack_timeout: Duration,
    /// How long one connection attempt may take.
    pub connect_timeout: Duration,
    /// At most this many publishes are in flight before their acks are awaited.
    pub max_in_flight: usize,
    /// Refuse deleting single messages and purging the stream (the stream is an audit feed).
    pub protect_stream: bool,
}

impl NatsConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            stream_name: DEFAULT_STREAM.to_owned(),
            subject_prefix: DEFAULT_SUBJECT_PREFIX.to_owned(),
            duplicate_window: Duration::from_secs(2 * 60 * 60),
            ack_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            max_in_flight: 256,
            protect_stream: true,
        }
    }

    /// The stream configuration created or updated at start.
    pub fn stream_config(&self) -> stream::Config {
        stream::Config {
            name: self.stream_name.clone(),
            subjects: vec![format!("{}.>", self.subject_prefix)],
            storage: stream::StorageType::File,
            duplicate_window: self.duplicate_window,
            deny_delete: self.protect_stream,
            deny_purge: self.protect_stream,
            ..Default::default()
        }
    }

    /// `<prefix>.<stream_type>.<event_type>`, every token restricted to `[A-Za-z0-9_-]`.
    pub fn subject_for(&self, event: &RecordedEvent) -> String {
        subject(&self.subject_prefix, &event.stream_type, &event.event_type)
    }
}

/// `<prefix>.<stream_type>.<event_type's dotted parts>`, each token made subject-safe.
pub fn subject(prefix: &str, stream_type: &str, event_type: &str) -> String {
    let mut subject = prefix.to_owned();
    for token in std::iter::once(stream_type).chain(event_type.split('.')) {
        subject.push('.');
        subject.push_str(&subject_token(token));
    }
    subject
}

impl std::fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsConfig")
            .field("url", &redact_url(&self.url))
            .field("stream_name", &self.stream_name)
            .field("subject_prefix", &self.subject_prefix)
            .field("duplicate_window", &self.duplicate_window)
            .field("ack_timeout", &self.ack_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_in_flight", &self.max_in_flight)
            .field("protect_stream", &self.protect_stream)
            .finish()
    }
}

fn subject_token(token: &str) -> String {
    if token.is_empty() {
        return "_".to_owned();
    }
    token
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The URL without credentials, for logs.
pub fn redact_url(url: &str) -> String {
    url.split(',')
        .map(|server| match server.split_once("://") {
            Some((scheme, rest)) => match rest.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://***@{host}"),
                None => server.to_owned(),
            },
            None => match server.rsplit_once('@') {
                Some((_, host)) => format!("***@{host}"),
                None => server.to_owned(),
            },
        })
        .collect::<Vec<_>>()
        .join(",")
}

struct NatsConn {
    client: async_nats::Client,
    js: jetstream::Context,
    /// Set once the stream is known to exist with our configuration; cleared after a failure.
    stream: Option<stream::Stream>,
}

/// Publishes to JetStream. Connects lazily (in [`Publisher::prepare`]); after the first
/// connection the client reconnects by itself, and the relay retries from its checkpoint.
pub struct NatsPublisher {
    config: NatsConfig,
    conn: Mutex<Option<NatsConn>>,
}

impl std::fmt::Debug for NatsPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsPublisher")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl NatsPublisher {
    /// Does not connect yet: the relay's first round does (and retries while NATS is down).
    pub fn new(config: NatsConfig) -> Self {
        Self {
            config,
            conn: Mutex::new(None),
        }
    }

    pub fn config(&self) -> &NatsConfig {
        &self.config
    }

    /// The stream handle, connecting and creating the stream if needed.
    async fn ready_stream(&self) -> Result<(jetstream::Context, stream::Stream), BusError> {
        let mut guard = self.conn.lock().await;
        if guard.is_none() {
            let client = async_nats::ConnectOptions::new()
                .name("warden-relay")
                .connection_timeout(self.config.connect_timeout)
                .connect(self.config.url.as_str())
                .await
                .map_err(|e| BusError::Connect(e.to_string()))?;
            let mut js = jetstream::new(client.clone());
            js.set_timeout(self.config.ack_timeout);
            *guard = Some(NatsConn {
                client,
                js,
                stream: None,
            });
        }
        let Some(conn) = guard.as_mut() else {
            return Err(BusError::Connect("no connection".into()));
        };
        if conn.client.connection_state() != State::Connected {
            // The client is reconnecting on its own; don't queue publishes behind it.
            conn.stream = None;
            return Err(BusError::Connect("disconnected, reconnecting".into()));
        }
        if conn.stream.is_none() {
            conn.js
                .create_or_update_stream(self.config.stream_config())
                .await
                .map_err(|e| BusError::Stream(e.to_string()))?;
            let stream = conn
                .js
                .get_stream(&self.config.stream_name)
                .await
                .map_err(|e| BusError::Stream(e.to_string()))?;
            conn.stream = Some(stream);
        }
        match &conn.stream {
            Some(stream) => Ok((conn.js.clone(), stream.clone())),
            None => Err(BusError::Stream("stream not ready".into())),
        }
    }

    /// After a failure, check the stream again before the next round.
    async fn invalidate(&self) {
        if let Some(conn) = self.conn.lock().await.as_mut() {
            conn.stream = None;
        }
    }

    async fn publish_inner(
        &self,
        events: &[Arc<RecordedEvent>],
        continuity: Continuity,
    ) -> Result<PublishReport, BusError> {
        let (js, _) = self.ready_stream().await?;
        let mut report = PublishReport::default();
        let chained = continuity != Continuity::Unchecked;
        let mut previous = match continuity {
            Continuity::Chained(previous) => previous,
            Continuity::Unchecked => None,
        };
        for chunk in events.chunks(self.config.max_in_flight.max(1)) {
            let mut acks = Vec::with_capacity(chunk.len());
            for event in chunk {
                let body = serde_json::to_vec(event.as_ref())
                    .map_err(|e| BusError::Encode(e.to_string()))?;
                let mut message = Publish::build()
                    .payload(body.into())
                    .message_id(event.event_id.to_string())
                    .header(POSITION_HEADER, event.global_position.to_string())
                    .expected_stream(self.config.stream_name.as_str());
                if let Some(previous) = previous {
                    message = message.expected_last_message_id(previous.to_string());
                }
                let ack = js
                    .send_publish(self.config.subject_for(event), message)
                    .await
                    .map_err(|e| BusError::Publish(e.to_string()))?;
                acks.push((event.global_position, ack));
                if chained {
                    previous = Some(event.event_id);
                }
            }
            for (position, ack) in acks {
                let ack = ack
                    .await
                    .map_err(|e| BusError::Publish(format!("position {position}: {e}")))?;
                if ack.stream != self.config.stream_name {
                    return Err(BusError::Publish(format!(
                        "position {position} was stored by stream {}",
                        ack.stream
                    )));
                }
                report.published += 1;
                report.last_was_duplicate = ack.duplicate;
                if ack.duplicate {
                    report.duplicates += 1;
                }
            }
        }
        Ok(report)
    }
}

#[async_trait]
impl Publisher for NatsPublisher {
    fn kind(&self) -> &'static str {
        "nats"
    }

    fn checkpoint_name(&self) -> &'static str {
        "nats_relay"
    }

    fn shared(&self) -> bool {
        true
    }

    async fn prepare(&self) -> Result<(), BusError> {
        self.ready_stream().await.map(|_| ())
    }

    async fn last_published(&self) -> Result<Option<LastPublished>, BusError> {
        let (_, mut stream) = self.ready_stream().await?;
        let last_sequence = stream
            .info()
            .await
            .map_err(|e| BusError::Stream(e.to_string()))?
            .state
            .last_sequence;
        if last_sequence == 0 {
            return Ok(None);
        }
        let message = match stream.get_raw_message(last_sequence).await {
            Ok(message) => message,
            Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => return Ok(None),
            Err(e) => return Err(BusError::Stream(e.to_string())),
        };
        let position = message
            .headers
            .get(POSITION_HEADER)
            .and_then(|v| v.as_str().trim().parse::<i64>().ok());
        let event_id = message
            .headers
            .get(async_nats::header::NATS_MESSAGE_ID)
            .and_then(|v| Uuid::parse_str(v.as_str().trim()).ok());
        Ok(Some(LastPublished {
            position,
            event_id,
            sequence: message.sequence,
        }))
    }

    async fn publish(
        &self,
        events: &[Arc<RecordedEvent>],
        continuity: Continuity,
    ) -> Result<PublishReport, BusError> {
        let result = self.publish_inner(events, continuity).await;
        if result.is_err() {
            self.invalidate().await;
        }
        result
    }
}

// ---------------------------------------------------------------------------------------------
// In-process bus

/// The in-process event bus used when `NATS_URL` is unset: a bounded
/// [`tokio::sync::broadcast`] of events in global order, fed by the relay.
///
/// Delivery is best effort and in-memory only. A subscriber that falls more than the
/// capacity behind gets [`broadcast::error::RecvError::Lagged`] and has missed messages: it
/// must resync from the event store (`read_all` from its own last position) and carry on.
/// Subscribers should track the last `global_position` they handled and skip anything at or
/// below it, the same de-duplication JetStream consumers do with `event_id`.
#[derive(Debug, Clone)]
pub struct InProcessBus {
    sender: broadcast::Sender<Arc<RecordedEvent>>,
}

impl Default for InProcessBus {
    fn default() -> Self {
        Self::new(DEFAULT_BUS_CAPACITY)
    }
}

impl InProcessBus {
    /// A bus that keeps up to `capacity` (at least 1) events for slow subscribers.
    pub fn new(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity.max(1));
        Self { sender }
    }

    /// A new subscriber, receiving events relayed from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<RecordedEvent>> {
        self.sender.subscribe()
    }

    pub fn subscriber_count(&self) -> usize {
        self.sender.receiver_count()
    }
}

#[async_trait]
impl Publisher for InProcessBus {
    fn kind(&self) -> &'static str {
        "in_process"
    }

    fn checkpoint_name(&self) -> &'static str {
        "in_process_bus"
    }

    fn shared(&self) -> bool {
        false
    }

    async fn prepare(&self) -> Result<(), BusError> {
        Ok(())
    }

    async fn last_published(&self) -> Result<Option<LastPublished>, BusError> {
        Ok(None)
    }

    async fn publish(
        &self,
        events: &[Arc<RecordedEvent>],
        _continuity: Continuity,
    ) -> Result<PublishReport, BusError> {
        for event in events {
            // No subscriber is not an error: the event stays in the store.
            let _ = self.sender.send(Arc::clone(event));
        }
        Ok(PublishReport {
            published: events.len(),
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_credentials() {
        assert_eq!(
            redact_url("nats://u:p@h:4222,nats://h2:4222"),
            "nats://***@h:4222,nats://h2:4222"
        );
        assert_eq!(redact_url("tok@h:1"), "***@h:1");
    }

    #[test]
    fn subject_tokens_are_safe() {
        assert_eq!(subject_token("user.x"), "user_x");
        assert_eq!(subject_token("a b*>"), "a_b__");
        assert_eq!(subject_token(""), "_");
    }
}
