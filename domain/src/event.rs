//! Events on the wire and in the store: the envelope, its metadata, and the codec that
//! turns a typed domain event into `(event_type, schema_version, payload)` and back.

use chrono::{DateTime, Utc};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// A domain event enum. Implementations are serde *adjacently tagged*
/// (`#[serde(tag = "event_type", content = "payload")]`), each variant renamed to its dotted
/// wire name (`user.password_changed`), so the codec below needs no per-type code.
pub trait DomainEvent:
    Serialize + DeserializeOwned + Clone + std::fmt::Debug + Send + Sync
{
    /// The schema version written for new events of `event_type`.
    fn schema_version(_event_type: &str) -> i32 {
        1
    }

    /// Rewrites an old payload to the current schema before decoding. Pure; identity by
    /// default. Old events stay as they were stored forever.
    fn upcast(_event_type: &str, _schema_version: i32, payload: Value) -> Value {
        payload
    }

    /// Every wire name this enum can carry, for documentation and snapshot tests.
    fn event_types() -> &'static [&'static str];
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("event could not be encoded: {0}")]
    Encode(String),
    #[error("stored event {event_type} v{schema_version} could not be decoded: {reason}")]
    Decode {
        event_type: String,
        schema_version: i32,
        reason: String,
    },
}

/// An event ready to append: its wire name, schema version and JSON payload.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedEvent {
    pub event_type: String,
    pub schema_version: i32,
    pub payload: Value,
}

pub fn encode<E: DomainEvent>(event: &E) -> Result<EncodedEvent, CodecError> {
    let tagged = serde_json::to_value(event).map_err(|e| CodecError::Encode(e.to_string()))?;
    let Value::Object(mut map) = tagged else {
        return Err(CodecError::Encode("event is not adjacently tagged".into()));
    };
    let event_type = match map.remove("event_type") {
        Some(Value::String(t)) => t,
        _ => return Err(CodecError::Encode("event has no event_type tag".into())),
    };
    let payload = map
        .remove("payload")
        .unwrap_or(Value::Object(Default::default()));
    Ok(EncodedEvent {
        schema_version: E::schema_version(&event_type),
        event_type,
        payload,
    })
}

pub fn decode<E: DomainEvent>(
    event_type: &str,
    schema_version: i32,
    payload: &Value,
) -> Result<E, CodecError> {
    let payload = E::upcast(event_type, schema_version, payload.clone());
    let tagged = serde_json::json!({ "event_type": event_type, "payload": payload });
    serde_json::from_value(tagged).map_err(|e| CodecError::Decode {
        event_type: event_type.to_owned(),
        schema_version,
        reason: e.to_string(),
    })
}

/// Who did it, and in answer to what. Never carries a secret.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EventMetadata {
    /// `user:<uuid>`, `api_key:<uuid>`, `system`, or `anonymous`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    pub correlation_id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Plaintext client address: only in events recorded before the client facts were
    /// sealed (new events carry [`Self::client`] instead).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// Plaintext user agent: only in older events, like [`Self::ip`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// The request's client facts (`{"ip", "user_agent"}` as JSON), personal data of the
    /// person who made the request, so sealed under their data key: forgetting them makes
    /// these unreadable too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<crate::sealed::Sealed>,
}

/// A stored event: the envelope of DESIGN.md "Events".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedEvent {
    pub event_id: Uuid,
    pub stream_id: String,
    pub stream_type: String,
    pub version: i64,
    pub global_position: i64,
    pub event_type: String,
    pub schema_version: i32,
    pub recorded_at: DateTime<Utc>,
    pub payload: Value,
    pub metadata: EventMetadata,
    pub prev_hash: String,
    pub hash: String,
}

impl RecordedEvent {
    /// Decodes the payload as this aggregate's event type.
    pub fn decode<E: DomainEvent>(&self) -> Result<E, CodecError> {
        decode(&self.event_type, self.schema_version, &self.payload)
    }
}
