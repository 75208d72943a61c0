//! The webhook endpoint aggregate: an organization's subscription of one URL to Warden's
//! events (Standard Webhooks, signed with the endpoint's own `whsec_` secret). Stream
//! `webhook_endpoint-<uuid>`.
//!
//! Endpoints have their own streams rather than living on the organization's: a busy
//! subscriber's rotations and automatic disabling never contend with the organization's
//! own commands, the stream's first event names its organization (as every other stream's
//! does, which is how ownership is decided for webhooks and audits), and an auditor can
//! replay one endpoint's history on its own.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::aggregate::{Aggregate, Ctx};
use crate::event::DomainEvent;
use crate::sealed::Sealed;
use crate::values::ValidationError;

/// How long the previous secret keeps signing after a rotation.
pub const PREVIOUS_SECRET_VALID_HOURS: i64 = 24;

/// Which events an endpoint receives: every one (`["*"]`) or the named types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventFilter {
    All,
    Only(BTreeSet<String>),
}

impl EventFilter {
    /// Parses `["*"]` or a non-empty list of known event types.
    pub fn parse(pointer: &str, names: &[String]) -> Result<Self, ValidationError> {
        if names.is_empty() {
            return Err(ValidationError::new(
                pointer,
                "invalid_value",
                "must name at least one event type, or be [\"*\"]",
            ));
        }
        if names.iter().any(|n| n == "*") {
            return if names.len() == 1 {
                Ok(Self::All)
            } else {
                Err(ValidationError::new(
                    pointer,
                    "invalid_value",
                    "\"*\" stands alone: it already means every event type",
                ))
            };
        }
        let known = known_event_types();
        let mut set = BTreeSet::new();
        for (i, name) in names.iter().enumerate() {
            if !known.contains(&name.as_str()) {
                return Err(ValidationError::new(
                    format!("{pointer}/{i}"),
                    "unknown_event_type",
                    format!("`{name}` is not a Warden event type (see /asyncapi.json)"),
                ));
            }
            set.insert(name.clone());
        }
        Ok(Self::Only(set))
    }

    pub fn matches(&self, event_type: &str) -> bool {
        match self {
            Self::All => true,
            Self::Only(set) => set.contains(event_type),
        }
    }

    /// The wire form: `["*"]` or the sorted names.
    pub fn names(&self) -> Vec<String> {
        match self {
            Self::All => vec!["*".to_owned()],
            Self::Only(set) => set.iter().cloned().collect(),
        }
    }
}

impl Serialize for EventFilter {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.names().serialize(s)
    }
}

impl<'de> Deserialize<'de> for EventFilter {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Stored events are facts: a type that was known when written stays readable even
        // if it is ever retired, so no catalogue check here.
        let names = Vec::<String>::deserialize(d)?;
        Ok(if names.iter().any(|n| n == "*") {
            Self::All
        } else {
            Self::Only(names.into_iter().collect())
        })
    }
}

/// Every event type Warden writes, across all aggregates.
pub fn known_event_types() -> Vec<&'static str> {
    use crate::organization::OrganizationEvent;
    use crate::user::UserEvent;
    use crate::verify::profile::VerifyProfileEvent;
    use crate::verify::template::VerifyTemplateEvent;
    use crate::verify::verification::VerificationEvent;
    [
        UserEvent::event_types(),
        OrganizationEvent::event_types(),
        VerifyProfileEvent::event_types(),
        VerifyTemplateEvent::event_types(),
        VerificationEvent::event_types(),
        WebhookEndpointEvent::event_types(),
    ]
    .concat()
}

/// What a subscriber configures (whole in every create and update event).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointSettings {
    pub url: String,
    pub event_types: EventFilter,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub enabled: bool,
}

/// Changes to an endpoint's settings from an update request: `None` leaves a field as it
/// is; for the description, `Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct EndpointPatch {
    pub url: Option<String>,
    pub event_types: Option<EventFilter>,
    pub description: Option<Option<String>>,
    pub enabled: Option<bool>,
}

impl EndpointPatch {
    pub fn apply_to(self, mut s: EndpointSettings) -> EndpointSettings {
        if let Some(v) = self.url {
            s.url = v;
        }
        if let Some(v) = self.event_types {
            s.event_types = v;
        }
        if let Some(v) = self.description {
            s.description = v;
        }
        if let Some(v) = self.enabled {
            s.enabled = v;
        }
        s
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event_type", content = "payload")]
pub enum WebhookEndpointEvent {
    /// The signing secret travels sealed under the organization's data key.
    #[serde(rename = "webhook_endpoint.created")]
    Created {
        endpoint_id: Uuid,
        organization_id: Uuid,
        settings: EndpointSettings,
        secret: Sealed,
    },
    /// The settings after the change (whole).
    #[serde(rename = "webhook_endpoint.updated")]
    Updated { settings: EndpointSettings },
    /// A new secret; the previous one keeps signing (alongside) until `previous_valid_until`.
    #[serde(rename = "webhook_endpoint.secret_rotated")]
    SecretRotated {
        secret: Sealed,
        previous_valid_until: DateTime<Utc>,
    },
    /// Warden turned the endpoint off after it failed continuously since `failing_since`.
    #[serde(rename = "webhook_endpoint.disabled")]
    Disabled {
        reason: String,
        failing_since: DateTime<Utc>,
    },
    #[serde(rename = "webhook_endpoint.deleted")]
    Deleted {},
}

impl DomainEvent for WebhookEndpointEvent {
    fn event_types() -> &'static [&'static str] {
        &[
            "webhook_endpoint.created",
            "webhook_endpoint.updated",
            "webhook_endpoint.secret_rotated",
            "webhook_endpoint.disabled",
            "webhook_endpoint.deleted",
        ]
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WebhookEndpoint {
    pub id: Option<Uuid>,
    pub organization_id: Option<Uuid>,
    pub settings: Option<EndpointSettings>,
    pub secret: Option<Sealed>,
    pub previous_secret: Option<Sealed>,
    pub previous_valid_until: Option<DateTime<Utc>>,
    pub deleted: bool,
}

impl WebhookEndpoint {
    /// Whether it exists, is not deleted and belongs to `organization_id`.
    pub fn visible_to(&self, organization_id: Uuid) -> bool {
        self.id.is_some() && !self.deleted && self.organization_id == Some(organization_id)
    }

    pub fn enabled(&self) -> bool {
        self.settings.as_ref().is_some_and(|s| s.enabled)
    }
}

impl Aggregate for WebhookEndpoint {
    const STREAM_TYPE: &'static str = "webhook_endpoint";
    type Event = WebhookEndpointEvent;

    fn apply(&mut self, event: &WebhookEndpointEvent, _at: DateTime<Utc>) {
        match event {
            WebhookEndpointEvent::Created {
                endpoint_id,
                organization_id,
                settings,
                secret,
            } => {
                self.id = Some(*endpoint_id);
                self.organization_id = Some(*organization_id);
                self.settings = Some(settings.clone());
                self.secret = Some(secret.clone());
            }
            WebhookEndpointEvent::Updated { settings } => self.settings = Some(settings.clone()),
            WebhookEndpointEvent::SecretRotated {
                secret,
                previous_valid_until,
            } => {
                self.previous_secret = self.secret.replace(secret.clone());
                self.previous_valid_until = Some(*previous_valid_until);
            }
            WebhookEndpointEvent::Disabled { .. } => {
                if let Some(s) = self.settings.as_mut() {
                    s.enabled = false;
                }
            }
            WebhookEndpointEvent::Deleted {} => self.deleted = true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookEndpointError {
    #[error("no such webhook endpoint")]
    NotFound,
    #[error("this webhook endpoint already exists")]
    AlreadyExists,
}

#[derive(Debug, Clone)]
pub enum WebhookEndpointCommand {
    Create {
        endpoint_id: Uuid,
        organization_id: Uuid,
        settings: EndpointSettings,
        secret: Sealed,
    },
    /// Replace the settings (the shell merged the patch into the current ones).
    Update {
        settings: EndpointSettings,
    },
    RotateSecret {
        secret: Sealed,
    },
    Disable {
        reason: String,
        failing_since: DateTime<Utc>,
    },
    Delete,
}

pub fn decide(
    endpoint: &WebhookEndpoint,
    cmd: WebhookEndpointCommand,
    ctx: &Ctx,
) -> Result<Vec<WebhookEndpointEvent>, WebhookEndpointError> {
    let live = endpoint.id.is_some() && !endpoint.deleted;
    match cmd {
        WebhookEndpointCommand::Create {
            endpoint_id,
            organization_id,
            settings,
            secret,
        } => {
            if endpoint.id.is_some() {
                return Err(WebhookEndpointError::AlreadyExists);
            }
            Ok(vec![WebhookEndpointEvent::Created {
                endpoint_id,
                organization_id,
                settings,
                secret,
            }])
        }
        _ if !live => Err(WebhookEndpointError::NotFound),
        WebhookEndpointCommand::Update { settings } => {
            if endpoint.settings.as_ref() == Some(&settings) {
                return Ok(vec![]);
            }
            Ok(vec![WebhookEndpointEvent::Updated { settings }])
        }
        WebhookEndpointCommand::RotateSecret { secret } => {
            Ok(vec![WebhookEndpointEvent::SecretRotated {
                secret,
                previous_valid_until: ctx.now + Duration::hours(PREVIOUS_SECRET_VALID_HOURS),
            }])
        }
        WebhookEndpointCommand::Disable {
            reason,
            failing_since,
        } => {
            if !endpoint.enabled() {
                return Ok(vec![]);
            }
            Ok(vec![WebhookEndpointEvent::Disabled {
                reason,
                failing_since,
            }])
        }
        WebhookEndpointCommand::Delete => Ok(vec![WebhookEndpointEvent::Deleted {}]),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::event::{decode, encode};

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_780_000_000 + secs, 0)
            .single()
            .unwrap_or_default()
    }

    fn uid(n: u128) -> Uuid {
        Uuid::from_u128(0x0190a000_0000_7000_8000_000000000000 + n)
    }

    fn sealed(tag: &str) -> Sealed {
        Sealed {
            key_id: "organization-0190a000-0000-7000-8000-000000000002".into(),
            nonce: format!("nonce-{tag}"),
            ciphertext: format!("ciphertext-{tag}"),
        }
    }

    fn settings(enabled: bool) -> EndpointSettings {
        EndpointSettings {
            url: "https://hooks.example.com/warden".into(),
            event_types: EventFilter::parse(
                "/event_types",
                &[
                    "user.two_factor_enabled".into(),
                    "user.password_changed".into(),
                ],
            )
            .unwrap_or(EventFilter::All),
            description: Some("Security alerts".into()),
            enabled,
        }
    }

    fn created() -> WebhookEndpointEvent {
        WebhookEndpointEvent::Created {
            endpoint_id: uid(1),
            organization_id: uid(2),
            settings: settings(true),
            secret: sealed("secret-1"),
        }
    }

    fn given(events: &[WebhookEndpointEvent]) -> WebhookEndpoint {
        let mut e = WebhookEndpoint::default();
        for (i, ev) in events.iter().enumerate() {
            e.apply(ev, t(i as i64));
        }
        e
    }

    #[test]
    fn every_webhook_endpoint_event_type_is_pinned() {
        let events = [
            created(),
            WebhookEndpointEvent::Updated {
                settings: EndpointSettings {
                    event_types: EventFilter::All,
                    description: None,
                    ..settings(false)
                },
            },
            WebhookEndpointEvent::SecretRotated {
                secret: sealed("secret-2"),
                previous_valid_until: t(86_400),
            },
            WebhookEndpointEvent::Disabled {
                reason: "failing since 2026-05-28T20:26:40Z (last: HTTP 500)".into(),
                failing_since: t(0),
            },
            WebhookEndpointEvent::Deleted {},
        ];
        let mut seen = Vec::new();
        for e in &events {
            let enc = encode(e).unwrap_or_else(|err| panic!("{err}"));
            let back: WebhookEndpointEvent =
                decode(&enc.event_type, enc.schema_version, &enc.payload)
                    .unwrap_or_else(|err| panic!("{err}"));
            assert_eq!(&back, e);
            insta::assert_json_snapshot!(
                format!("{}.v{}", enc.event_type, enc.schema_version),
                enc.payload
            );
            seen.push(enc.event_type);
        }
        assert_eq!(seen, WebhookEndpointEvent::event_types());
    }

    #[test]
    fn event_filters_accept_known_types_or_a_lone_star() {
        assert_eq!(
            EventFilter::parse("/e", &["*".into()]),
            Ok(EventFilter::All)
        );
        assert!(EventFilter::parse("/e", &[]).is_err());
        assert!(EventFilter::parse("/e", &["*".into(), "user.enabled".into()]).is_err());
        let err = EventFilter::parse("/e", &["user.enabled".into(), "user.flew".into()]);
        assert_eq!(err.map_err(|e| e.pointer), Err("/e/1".to_owned()));
        let only = EventFilter::parse("/e", &["verify_profile.created".into()]);
        assert!(only
            .as_ref()
            .is_ok_and(|f| f.matches("verify_profile.created")));
        assert!(only.is_ok_and(|f| !f.matches("user.enabled")));
        assert!(known_event_types().contains(&"webhook_endpoint.disabled"));
    }

    #[test]
    fn rotation_keeps_the_previous_secret_for_a_day() {
        let e = given(&[created()]);
        let ctx = Ctx { now: t(100) };
        let events = decide(
            &e,
            WebhookEndpointCommand::RotateSecret {
                secret: sealed("secret-2"),
            },
            &ctx,
        );
        let e = given(&[created(), events.unwrap_or_default().remove(0)]);
        assert_eq!(e.secret, Some(sealed("secret-2")));
        assert_eq!(e.previous_secret, Some(sealed("secret-1")));
        assert_eq!(e.previous_valid_until, Some(t(100 + 86_400)));
    }

    #[test]
    fn disabling_happens_once_and_deleted_endpoints_are_gone() {
        let ctx = Ctx { now: t(10) };
        let disable = || WebhookEndpointCommand::Disable {
            reason: "failing".into(),
            failing_since: t(0),
        };
        let e = given(&[created()]);
        let events = decide(&e, disable(), &ctx).unwrap_or_default();
        assert_eq!(events.len(), 1);
        let e = given(&[created(), events[0].clone()]);
        assert!(!e.enabled());
        assert_eq!(decide(&e, disable(), &ctx), Ok(vec![]));
        let e = given(&[created(), WebhookEndpointEvent::Deleted {}]);
        assert_eq!(
            decide(&e, WebhookEndpointCommand::Delete, &ctx),
            Err(WebhookEndpointError::NotFound)
        );
        assert!(!e.visible_to(uid(2)));
    }
}
