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

    /// Rewrites an old payload to the current schema before decoding: `None` when the
    /// stored payload is already current (the default). Pure. Old events stay as they were
    /// stored forever.
    fn upcast(_event_type: &str, _schema_version: i32, _payload: &Value) -> Option<Value> {
        None
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

/// Decodes a stored payload. The enum is read straight from the borrowed payload, as if
/// from `{"event_type": …, "payload": …}`, without copying the payload into such an object
/// first (every projector decodes every event of its streams, so that copy was a
/// rebuild's largest single cost after reading the log).
pub fn decode<E: DomainEvent>(
    event_type: &str,
    schema_version: i32,
    payload: &Value,
) -> Result<E, CodecError> {
    let upcast = E::upcast(event_type, schema_version, payload);
    let tagged = Tagged {
        event_type,
        payload: upcast.as_ref().unwrap_or(payload),
    };
    E::deserialize(tagged).map_err(|e| CodecError::Decode {
        event_type: event_type.to_owned(),
        schema_version,
        reason: e.to_string(),
    })
}

/// An adjacently tagged event, `{"event_type": …, "payload": …}`, made of borrowed parts.
struct Tagged<'a> {
    event_type: &'a str,
    payload: &'a Value,
}

impl<'de> serde::Deserializer<'de> for Tagged<'de> {
    type Error = serde_json::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(
        self,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_map(TaggedFields {
            tagged: self,
            next: 0,
        })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map struct
        enum identifier ignored_any
    }
}

/// The two fields of [`Tagged`], the tag first (so the payload is read once, straight
/// into its variant).
struct TaggedFields<'a> {
    tagged: Tagged<'a>,
    /// Fields handed out so far.
    next: u8,
}

impl<'de> serde::de::MapAccess<'de> for TaggedFields<'de> {
    type Error = serde_json::Error;

    fn next_key_seed<K: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        let key = match self.next {
            0 => "event_type",
            1 => "payload",
            _ => return Ok(None),
        };
        seed.deserialize(serde::de::value::BorrowedStrDeserializer::new(key))
            .map(Some)
    }

    fn next_value_seed<V: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        self.next += 1;
        if self.next == 1 {
            seed.deserialize(serde::de::value::BorrowedStrDeserializer::new(
                self.tagged.event_type,
            ))
        } else {
            seed.deserialize(self.tagged.payload)
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(2usize.saturating_sub(usize::from(self.next)))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(tag = "event_type", content = "payload")]
    enum Sample {
        #[serde(rename = "sample.renamed")]
        Renamed { name: String, count: u32 },
        #[serde(rename = "sample.closed")]
        Closed {},
    }

    impl DomainEvent for Sample {
        fn schema_version(event_type: &str) -> i32 {
            if event_type == "sample.renamed" {
                2
            } else {
                1
            }
        }

        /// v1 of `sample.renamed` called the name `title`.
        fn upcast(event_type: &str, schema_version: i32, payload: &Value) -> Option<Value> {
            if event_type != "sample.renamed" || schema_version != 1 {
                return None;
            }
            let mut payload = payload.as_object()?.clone();
            let title = payload.remove("title")?;
            payload.insert("name".into(), title);
            Some(Value::Object(payload))
        }

        fn event_types() -> &'static [&'static str] {
            &["sample.renamed", "sample.closed"]
        }
    }

    fn decode_sample(event_type: &str, version: i32, payload: Value) -> Result<Sample, String> {
        decode::<Sample>(event_type, version, &payload).map_err(|e| e.to_string())
    }

    #[test]
    fn an_encoded_event_decodes_to_itself() {
        for event in [
            Sample::Renamed {
                name: "Ada \"L\"".into(),
                count: 3,
            },
            Sample::Closed {},
        ] {
            let encoded = encode(&event).unwrap();
            let back: Sample = decode(
                &encoded.event_type,
                encoded.schema_version,
                &encoded.payload,
            )
            .unwrap();
            assert_eq!(back, event);
        }
    }

    #[test]
    fn an_old_payload_is_upcast_before_it_is_decoded() {
        assert_eq!(
            decode_sample(
                "sample.renamed",
                1,
                serde_json::json!({"title": "A", "count": 1})
            ),
            Ok(Sample::Renamed {
                name: "A".into(),
                count: 1
            })
        );
        // The current version is read as stored.
        assert!(decode_sample(
            "sample.renamed",
            2,
            serde_json::json!({"title": "A", "count": 1})
        )
        .is_err());
    }

    #[test]
    fn an_unknown_type_or_an_ill_typed_payload_is_a_decode_error() {
        let unknown = decode_sample("sample.exploded", 1, serde_json::json!({})).unwrap_err();
        assert!(unknown.contains("sample.exploded v1"), "{unknown}");
        assert!(unknown.contains("unknown variant"), "{unknown}");
        let ill_typed = decode_sample(
            "sample.renamed",
            2,
            serde_json::json!({"name": "A", "count": "three"}),
        )
        .unwrap_err();
        assert!(ill_typed.contains("invalid type"), "{ill_typed}");
        let missing = decode_sample("sample.renamed", 2, serde_json::json!({"name": "A"}));
        assert!(missing.unwrap_err().contains("missing field `count`"));
        let not_an_object = decode_sample("sample.closed", 1, serde_json::json!([1]));
        assert!(not_an_object.is_err());
    }
}
