//! The auditors' view of one stream: its aggregate rebuilt from the log up to any instant,
//! with sealed fields and digests redacted, and the organization it belongs to.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;
use warden_commands::store::fold_stream;
use warden_commands::{EventStore, StoreError};
use warden_domain::organization::Organization;
use warden_domain::user::User;
use warden_domain::verify::profile::VerifyProfile;
use warden_domain::verify::template::VerifyTemplate;
use warden_domain::verify::verification::Verification;
use warden_domain::webhook_endpoint::WebhookEndpoint;
use warden_domain::{Aggregate, RecordedEvent};

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("stream type {0} cannot be replayed")]
    UnknownStreamType(String),
    #[error("a stored event is unreadable: {0}")]
    Unreadable(String),
}

/// A stream's state as of an instant.
#[derive(Debug, Clone, Serialize)]
pub struct Replayed {
    pub stream_id: String,
    pub stream_type: String,
    /// The version the state is at (0: nothing had happened yet).
    pub version: i64,
    /// When the last event folded in was recorded.
    pub last_event_at: Option<DateTime<Utc>>,
    #[serde(skip)]
    pub organization_id: Option<Uuid>,
    /// The aggregate, with sealed values and digests replaced by markers.
    pub state: Value,
}

/// One aggregate's fold, fed page by page.
struct Fold<A> {
    state: A,
    version: i64,
    last: Option<DateTime<Utc>>,
    organization_id: fn(&A) -> Option<Uuid>,
}

/// A [`Fold`] of whichever aggregate the stream holds.
trait Folding: Send {
    /// Folds the events recorded at or before `as_of`; false once one after it was met.
    fn push(
        &mut self,
        events: &[RecordedEvent],
        as_of: Option<DateTime<Utc>>,
    ) -> Result<bool, AuditError>;
    /// The state reached, redacted, with the version and the organization it belongs to.
    fn finish(&self) -> (Value, i64, Option<DateTime<Utc>>, Option<Uuid>);
}

impl<A: Aggregate + Send> Folding for Fold<A> {
    fn push(
        &mut self,
        events: &[RecordedEvent],
        as_of: Option<DateTime<Utc>>,
    ) -> Result<bool, AuditError> {
        for recorded in events {
            if as_of.is_some_and(|t| recorded.recorded_at > t) {
                return Ok(false);
            }
            let event: A::Event = recorded
                .decode()
                .map_err(|e| AuditError::Unreadable(e.to_string()))?;
            self.state.apply(&event, recorded.recorded_at);
            self.version = recorded.version;
            self.last = Some(recorded.recorded_at);
        }
        Ok(true)
    }

    fn finish(&self) -> (Value, i64, Option<DateTime<Utc>>, Option<Uuid>) {
        (
            redact(serde_json::to_value(&self.state).unwrap_or(Value::Null)),
            self.version,
            self.last,
            (self.organization_id)(&self.state),
        )
    }
}

fn folding<A: Aggregate + Send + 'static>(
    organization_id: fn(&A) -> Option<Uuid>,
) -> Box<dyn Folding> {
    Box::new(Fold {
        state: A::default(),
        version: 0,
        last: None,
        organization_id,
    })
}

/// A stream's replay, fed its events in version order, page by page, so a long stream is
/// replayed without holding all of it.
pub struct Replay {
    stream_id: String,
    stream_type: String,
    as_of: Option<DateTime<Utc>>,
    fold: Box<dyn Folding>,
}

impl Replay {
    /// A replay of `stream_id`, whose events are of `stream_type`, up to `as_of` (all
    /// when `None`).
    pub fn new(
        stream_id: &str,
        stream_type: &str,
        as_of: Option<DateTime<Utc>>,
    ) -> Result<Self, AuditError> {
        let fold = match stream_type {
            "user" => folding::<User>(|u| u.organization_id),
            "organization" => folding::<Organization>(|o| o.id),
            "verify_profile" => folding::<VerifyProfile>(|p| p.organization_id),
            "verify_template" => folding::<VerifyTemplate>(|t| t.organization_id),
            "verification" => folding::<Verification>(Verification::organization_id),
            "webhook_endpoint" => folding::<WebhookEndpoint>(|e| e.organization_id),
            other => return Err(AuditError::UnknownStreamType(other.to_owned())),
        };
        Ok(Self {
            stream_id: stream_id.to_owned(),
            stream_type: stream_type.to_owned(),
            as_of,
            fold,
        })
    }

    /// Folds the next events; false once an event after `as_of` was met (the rest of the
    /// stream is not needed).
    pub fn push(&mut self, events: &[RecordedEvent]) -> Result<bool, AuditError> {
        self.fold.push(events, self.as_of)
    }

    pub fn finish(self) -> Replayed {
        let (state, version, last_event_at, organization_id) = self.fold.finish();
        Replayed {
            stream_id: self.stream_id,
            stream_type: self.stream_type,
            version,
            last_event_at,
            organization_id,
            state,
        }
    }
}

/// Rebuilds the aggregate of `events` (one stream, in version order) from the events
/// recorded at or before `as_of` (all when `None`).
pub fn replay(
    stream_id: &str,
    events: &[RecordedEvent],
    as_of: Option<DateTime<Utc>>,
) -> Result<Replayed, AuditError> {
    // Stream ids are `<type>-<uuid>`; types have no hyphen.
    let stream_type = events
        .first()
        .map(|e| e.stream_type.clone())
        .or_else(|| stream_id.split_once('-').map(|(t, _)| t.to_owned()))
        .unwrap_or_default();
    let mut replay = Replay::new(stream_id, &stream_type, as_of)?;
    replay.push(events)?;
    Ok(replay.finish())
}

/// Replays a stored stream page by page; `None` if it has no events.
pub async fn replay_stored(
    store: &dyn EventStore,
    stream_id: &str,
    as_of: Option<DateTime<Utc>>,
) -> Result<Option<Replayed>, ReplayError> {
    let mut replay: Option<Replay> = None;
    fold_stream(store, stream_id, 0, |page| {
        let Some(first) = page.first() else {
            return Ok(false);
        };
        let replay = match &mut replay {
            Some(r) => r,
            None => replay.insert(Replay::new(stream_id, &first.stream_type, as_of)?),
        };
        Ok::<_, ReplayError>(replay.push(page)?)
    })
    .await?;
    Ok(replay.map(Replay::finish))
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Audit(#[from] AuditError),
}

/// Sealed values become `"<sealed>"` and digests `"<redacted>"` (shared with the webhook
/// payloads: [`warden_domain::sealed::redact`]).
pub fn redact(value: Value) -> Value {
    warden_domain::sealed::redact(value)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn sealed_values_and_digests_are_redacted_and_the_rest_kept() {
        let v = json!({
            "email": { "key_id": "user-1", "nonce": "n", "ciphertext": "c" },
            "token_digest": "abcdef",
            "sessions": [{ "code_digest": "x", "expires_at": "2026-01-01T00:00:00Z" }],
            "status": "enabled",
            "empty_digest": null,
        });
        assert_eq!(
            redact(v),
            json!({
                "email": "<sealed>",
                "token_digest": "<redacted>",
                "sessions": [{ "code_digest": "<redacted>", "expires_at": "2026-01-01T00:00:00Z" }],
                "status": "enabled",
                "empty_digest": null,
            })
        );
    }
}
