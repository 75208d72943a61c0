//! The auditors' view of one stream: its aggregate rebuilt from the log up to any instant,
//! with sealed fields and digests redacted, and the organization it belongs to.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;
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

fn fold<A: Aggregate>(
    events: &[RecordedEvent],
    as_of: Option<DateTime<Utc>>,
) -> Result<(A, i64, Option<DateTime<Utc>>), AuditError> {
    let mut state = A::default();
    let mut version = 0;
    let mut last = None;
    for recorded in events {
        if as_of.is_some_and(|t| recorded.recorded_at > t) {
            break;
        }
        let event: A::Event = recorded
            .decode()
            .map_err(|e| AuditError::Unreadable(e.to_string()))?;
        state.apply(&event, recorded.recorded_at);
        version = recorded.version;
        last = Some(recorded.recorded_at);
    }
    Ok((state, version, last))
}

fn finish<A: Aggregate>(
    folded: (A, i64, Option<DateTime<Utc>>),
    organization_id: impl Fn(&A) -> Option<Uuid>,
    stream_id: &str,
    stream_type: &str,
) -> Replayed {
    let (state, version, last_event_at) = folded;
    Replayed {
        stream_id: stream_id.to_owned(),
        stream_type: stream_type.to_owned(),
        version,
        last_event_at,
        organization_id: organization_id(&state),
        state: redact(serde_json::to_value(&state).unwrap_or(Value::Null)),
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
    let t = stream_type.as_str();
    Ok(match t {
        "user" => finish(
            fold::<User>(events, as_of)?,
            |u| u.organization_id,
            stream_id,
            t,
        ),
        "organization" => finish(fold::<Organization>(events, as_of)?, |o| o.id, stream_id, t),
        "verify_profile" => finish(
            fold::<VerifyProfile>(events, as_of)?,
            |p| p.organization_id,
            stream_id,
            t,
        ),
        "verify_template" => finish(
            fold::<VerifyTemplate>(events, as_of)?,
            |p| p.organization_id,
            stream_id,
            t,
        ),
        "verification" => finish(
            fold::<Verification>(events, as_of)?,
            Verification::organization_id,
            stream_id,
            t,
        ),
        "webhook_endpoint" => finish(
            fold::<WebhookEndpoint>(events, as_of)?,
            |e| e.organization_id,
            stream_id,
            t,
        ),
        other => return Err(AuditError::UnknownStreamType(other.to_owned())),
    })
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
