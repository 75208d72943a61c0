//! The broadcast contract as an AsyncAPI 3.0 document (`GET /asyncapi.json`): the JetStream
//! stream, one channel per event type with its exact NATS subject, and the envelope every
//! message carries (header `Nats-Msg-Id` = `event_id`).

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Map, Value};
use warden_domain::organization::OrganizationEvent;
use warden_domain::user::UserEvent;
use warden_domain::verify::profile::VerifyProfileEvent;
use warden_domain::verify::template::VerifyTemplateEvent;
use warden_domain::verify::verification::VerificationEvent;
use warden_domain::webhook_endpoint::WebhookEndpointEvent;
use warden_domain::DomainEvent;

use crate::app::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/asyncapi.json", get(document))
}

/// Every stream type with its event types.
fn catalogue() -> Vec<(&'static str, &'static [&'static str])> {
    vec![
        ("user", UserEvent::event_types()),
        ("organization", OrganizationEvent::event_types()),
        ("verify_profile", VerifyProfileEvent::event_types()),
        ("verify_template", VerifyTemplateEvent::event_types()),
        ("verification", VerificationEvent::event_types()),
        ("webhook_endpoint", WebhookEndpointEvent::event_types()),
    ]
}

fn envelope_schema() -> Value {
    let text = json!({ "type": "string" });
    let nullable_text = json!({ "type": ["string", "null"] });
    json!({
        "type": "object",
        "required": ["event_id", "stream_id", "stream_type", "version", "global_position",
                     "event_type", "schema_version", "recorded_at", "payload", "metadata",
                     "prev_hash", "hash"],
        "properties": {
            "event_id": { "type": "string", "format": "uuid", "description": "Also the Nats-Msg-Id header: de-duplicate on it." },
            "stream_id": text,
            "stream_type": text,
            "version": { "type": "integer", "description": "Position in its stream, from 1." },
            "global_position": { "type": "integer", "description": "Gapless, commit-ordered position in the whole log." },
            "event_type": text,
            "schema_version": { "type": "integer" },
            "recorded_at": { "type": "string", "format": "date-time" },
            "payload": { "type": "object", "description": "The event's fields; personal data and secrets travel sealed ({key_id, nonce, ciphertext}) or as digests." },
            "metadata": {
                "type": "object",
                "properties": {
                    "actor": nullable_text,
                    "correlation_id": { "type": "string", "format": "uuid" },
                    "causation_id": nullable_text,
                    "idempotency_key": nullable_text,
                    "ip": { "type": ["string", "null"], "description": "Only in events recorded before client facts were sealed." },
                    "user_agent": { "type": ["string", "null"], "description": "Only in events recorded before client facts were sealed." },
                    "client": { "type": ["object", "null"], "description": "The request's {ip, user_agent}, sealed ({key_id, nonce, ciphertext}) under the data key of the person who made it." },
                }
            },
            "prev_hash": { "type": "string", "description": "The previous event's hash in this stream (empty for version 1)." },
            "hash": { "type": "string", "description": "SHA-256 over the length-prefixed stored fields and prev_hash." },
        }
    })
}

/// The AsyncAPI document for this server's stream and subject prefix.
pub async fn document(State(state): State<AppState>) -> axum::Json<Value> {
    let prefix = &state.settings.nats_subject_prefix;
    let mut channels = Map::new();
    let mut operations = Map::new();
    for (stream_type, event_types) in catalogue() {
        for event_type in event_types {
            let key = event_type.replace('.', "_");
            channels.insert(
                key.clone(),
                json!({
                    "address": warden_infra::bus::subject(prefix, stream_type, event_type),
                    "title": event_type,
                    "messages": { "envelope": { "$ref": "#/components/messages/envelope" } },
                }),
            );
            operations.insert(
                format!("receive_{key}"),
                json!({ "action": "receive", "channel": { "$ref": format!("#/channels/{key}") } }),
            );
        }
    }
    axum::Json(json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "Warden event stream",
            "version": env!("CARGO_PKG_VERSION"),
            "description": format!(
                "Every committed event, in commit order, on the JetStream stream `{}`. Subjects are \
                 `{prefix}.<stream_type>.<event_type>`; subscribe to `{prefix}.>` for all. Delivery \
                 is at least once: de-duplicate on the `Nats-Msg-Id` header (the event_id).",
                state.settings.nats_stream
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "nats": {
                "host": "localhost:4222",
                "protocol": "nats",
                "description": "The NATS server given by NATS_URL (JetStream enabled).",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": {
                "envelope": {
                    "name": "envelope",
                    "title": "Event envelope",
                    "contentType": "application/json",
                    "headers": {
                        "type": "object",
                        "properties": { "Nats-Msg-Id": { "type": "string", "format": "uuid" } },
                    },
                    "payload": envelope_schema(),
                }
            }
        },
    }))
}
