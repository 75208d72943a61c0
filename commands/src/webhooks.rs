//! Account-level webhook endpoints: create (with a fresh `whsec_` secret, sealed under the
//! organization's data key and shown to the caller once), update by merge, rotate the
//! secret, delete, and the system's own disabling of an endpoint that keeps failing, with a
//! notice to the organization's owner.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use rand::rngs::OsRng;
use rand::RngCore;
use uuid::Uuid;
use warden_domain::organization::Organization;
use warden_domain::webhook_endpoint::{
    self, EndpointPatch, EndpointSettings, WebhookEndpoint, WebhookEndpointCommand,
    WebhookEndpointError,
};
use warden_domain::Aggregate;
use zeroize::Zeroizing;

use crate::error::CommandError;
use crate::pipeline::{Meta, Pipeline};
use crate::ports::Secrets;
use crate::sender::Sender;

pub type Result<T> = std::result::Result<T, CommandError<WebhookEndpointError>>;

/// Bytes of a signing secret (Standard Webhooks asks for 24 to 64).
pub const SECRET_BYTES: usize = 32;
/// The prefix of a signing secret as shown to its subscriber.
pub const SECRET_PREFIX: &str = "whsec_";

/// A signing secret in its one-time display form (`whsec_` + base64). Never logged:
/// `Debug` shows nothing, and the memory is wiped on drop.
pub struct ShownSecret(Zeroizing<String>);

impl ShownSecret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ShownSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ShownSecret(<redacted>)")
    }
}

pub struct WebhookEndpoints {
    pipeline: Pipeline,
    secrets: Arc<dyn Secrets>,
    sender: Arc<dyn Sender>,
}

fn not_found() -> CommandError<WebhookEndpointError> {
    CommandError::Domain(WebhookEndpointError::NotFound)
}

impl WebhookEndpoints {
    pub fn new(pipeline: Pipeline, secrets: Arc<dyn Secrets>, sender: Arc<dyn Sender>) -> Self {
        Self {
            pipeline,
            secrets,
            sender,
        }
    }

    /// A new secret: 32 bytes from the OS CSPRNG, sealed under the organization's key.
    async fn new_secret(
        &self,
        organization_id: Uuid,
    ) -> Result<(warden_domain::Sealed, ShownSecret)> {
        let mut bytes = Zeroizing::new([0u8; SECRET_BYTES]);
        OsRng.fill_bytes(bytes.as_mut());
        let sealed = self
            .secrets
            .seal(&Organization::stream_id(organization_id), bytes.as_ref())
            .await?;
        let shown = ShownSecret(Zeroizing::new(format!(
            "{SECRET_PREFIX}{}",
            STANDARD.encode(bytes.as_ref())
        )));
        Ok((sealed, shown))
    }

    /// An endpoint of the organization's (404 for another's or a deleted one).
    async fn visible(&self, organization_id: Uuid, endpoint_id: Uuid) -> Result<()> {
        let loaded = self
            .pipeline
            .load::<WebhookEndpoint, WebhookEndpointError>(&WebhookEndpoint::stream_id(endpoint_id))
            .await?;
        if loaded.state.visible_to(organization_id) {
            Ok(())
        } else {
            Err(not_found())
        }
    }

    pub async fn create(
        &self,
        organization_id: Uuid,
        settings: EndpointSettings,
        meta: &Meta,
    ) -> Result<(Uuid, ShownSecret, Option<i64>)> {
        let endpoint_id = Uuid::now_v7();
        let (secret, shown) = self.new_secret(organization_id).await?;
        let executed = self
            .pipeline
            .execute::<WebhookEndpoint, WebhookEndpointError, _>(
                &WebhookEndpoint::stream_id(endpoint_id),
                meta,
                |state, ctx| {
                    webhook_endpoint::decide(
                        state,
                        WebhookEndpointCommand::Create {
                            endpoint_id,
                            organization_id,
                            settings: settings.clone(),
                            secret: secret.clone(),
                        },
                        ctx,
                    )
                },
            )
            .await?;
        Ok((endpoint_id, shown, executed.position))
    }

    pub async fn update(
        &self,
        organization_id: Uuid,
        endpoint_id: Uuid,
        patch: EndpointPatch,
        meta: &Meta,
    ) -> Result<Option<i64>> {
        self.visible(organization_id, endpoint_id).await?;
        let executed = self
            .pipeline
            .execute::<WebhookEndpoint, WebhookEndpointError, _>(
                &WebhookEndpoint::stream_id(endpoint_id),
                meta,
                |state, ctx| {
                    let Some(current) = state.settings.clone() else {
                        return Err(WebhookEndpointError::NotFound);
                    };
                    let settings = patch.clone().apply_to(current);
                    webhook_endpoint::decide(
                        state,
                        WebhookEndpointCommand::Update { settings },
                        ctx,
                    )
                },
            )
            .await?;
        Ok(executed.position)
    }

    /// A new secret; the previous one keeps signing alongside it for 24 hours.
    pub async fn rotate_secret(
        &self,
        organization_id: Uuid,
        endpoint_id: Uuid,
        meta: &Meta,
    ) -> Result<(ShownSecret, Option<i64>)> {
        self.visible(organization_id, endpoint_id).await?;
        let (secret, shown) = self.new_secret(organization_id).await?;
        let executed = self
            .pipeline
            .execute::<WebhookEndpoint, WebhookEndpointError, _>(
                &WebhookEndpoint::stream_id(endpoint_id),
                meta,
                |state, ctx| {
                    webhook_endpoint::decide(
                        state,
                        WebhookEndpointCommand::RotateSecret {
                            secret: secret.clone(),
                        },
                        ctx,
                    )
                },
            )
            .await?;
        Ok((shown, executed.position))
    }

    pub async fn delete(
        &self,
        organization_id: Uuid,
        endpoint_id: Uuid,
        meta: &Meta,
    ) -> Result<Option<i64>> {
        self.visible(organization_id, endpoint_id).await?;
        let executed = self
            .pipeline
            .execute::<WebhookEndpoint, WebhookEndpointError, _>(
                &WebhookEndpoint::stream_id(endpoint_id),
                meta,
                |state, ctx| webhook_endpoint::decide(state, WebhookEndpointCommand::Delete, ctx),
            )
            .await?;
        Ok(executed.position)
    }

    /// Turns off an endpoint that has failed continuously since `failing_since`, and tells
    /// the organization's owner by email (best effort). A no-op if it is already off.
    pub async fn disable(
        &self,
        endpoint_id: Uuid,
        failing_since: DateTime<Utc>,
        last_error: Option<&str>,
        meta: &Meta,
    ) -> Result<Option<i64>> {
        let reason = format!(
            "every delivery attempt failed since {}{}",
            failing_since.format("%Y-%m-%d %H:%M UTC"),
            last_error
                .map(|e| format!(" (last: {e})"))
                .unwrap_or_default()
        );
        let executed = self
            .pipeline
            .execute::<WebhookEndpoint, WebhookEndpointError, _>(
                &WebhookEndpoint::stream_id(endpoint_id),
                meta,
                |state, ctx| {
                    webhook_endpoint::decide(
                        state,
                        WebhookEndpointCommand::Disable {
                            reason: reason.clone(),
                            failing_since,
                        },
                        ctx,
                    )
                },
            )
            .await?;
        if executed.events.is_empty() {
            return Ok(None);
        }
        if let (Some(org), Some(settings)) =
            (executed.state.organization_id, &executed.state.settings)
        {
            let text = format!(
                "Warden disabled your webhook endpoint {endpoint_id} ({}) because {reason}. \
                 Fix the receiver, then turn the endpoint on again (PATCH \
                 /v2/webhook_endpoints/{endpoint_id} with enabled: true) and redeliver what it \
                 missed (POST /v2/webhook_endpoints/{endpoint_id}/actions/redeliver).",
                settings.url
            );
            self.notify_owner(org, &text).await;
        }
        Ok(executed.position)
    }

    /// Best effort: an email notice to the organization's owner (logged if it fails).
    async fn notify_owner(&self, organization_id: Uuid, text: &str) {
        let owner = match self
            .pipeline
            .load::<Organization, WebhookEndpointError>(&Organization::stream_id(organization_id))
            .await
        {
            Ok(org) => org.state.owner_user_id,
            Err(e) => {
                tracing::warn!(%organization_id, error = %e, "notice not sent: organization not loaded");
                return;
            }
        };
        let Some(owner) = owner else { return };
        crate::notice::email_user(
            &self.pipeline,
            self.secrets.as_ref(),
            self.sender.as_ref(),
            owner,
            text,
        )
        .await;
    }
}
