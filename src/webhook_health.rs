//! The disabling rule for account-level webhook endpoints: one whose every delivery attempt
//! has failed for [`DISABLE_AFTER_DAYS`] days is turned off (`webhook_endpoint.disabled`,
//! with the reason) and the organization's owner gets an email notice. The dispatcher keeps
//! each endpoint's failure streak; this loop asks which streaks are old enough. Any number
//! of nodes may run it: the event store's version check and the aggregate (already off →
//! no event) keep it once.

use std::time::Duration;

use tokio::sync::watch;
use uuid::Uuid;
use warden_commands::pipeline::Meta;
use warden_domain::EventMetadata;
use warden_projections::webhook_endpoints;

use crate::app::AppState;

/// How long an endpoint may fail continuously before it is disabled.
pub const DISABLE_AFTER_DAYS: i64 = 5;
const POLL: Duration = Duration::from_millis(500);

pub async fn run(state: AppState, mut shutdown: watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow() {
            return;
        }
        if let Err(e) = disable_failing(&state).await {
            tracing::warn!(error = %e, "webhook endpoint health check failed; retrying");
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Disables every enabled endpoint failing for the whole period; returns how many.
pub async fn disable_failing(state: &AppState) -> anyhow::Result<usize> {
    let cutoff = state.now() - chrono::Duration::days(DISABLE_AFTER_DAYS);
    let due = webhook_endpoints::failing_since_before(&state.db.pool, cutoff).await?;
    let mut disabled = 0;
    for (id, since, last_error) in &due {
        let (Ok(endpoint_id), Ok(since)) = (
            Uuid::parse_str(id),
            chrono::DateTime::parse_from_rfc3339(since),
        ) else {
            continue;
        };
        let meta = Meta {
            metadata: EventMetadata {
                actor: Some("system".into()),
                correlation_id: Uuid::now_v7(),
                ..EventMetadata::default()
            },
            idempotency: None,
            subject: None,
        };
        let position = state
            .webhooks
            .disable(
                endpoint_id,
                since.with_timezone(&chrono::Utc),
                last_error.as_deref(),
                &meta,
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if position.is_some() {
            disabled += 1;
            tracing::warn!(%endpoint_id, "webhook endpoint disabled after failing for days");
        }
        state
            .caught_up(position)
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    Ok(disabled)
}
