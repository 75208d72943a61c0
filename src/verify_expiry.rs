//! The expiry scheduler: verifications expire on time even if nobody checks them. It asks
//! the `verifications` read model which pending ones are past due and runs the Expire
//! command on each, which records `verification.expired` (a no-op if a check got there
//! first). Any number of nodes may run it: the event store's version check keeps it once.

use std::time::Duration;

use tokio::sync::watch;
use uuid::Uuid;
use warden_commands::pipeline::Meta;
use warden_domain::chain::format_time;
use warden_domain::EventMetadata;
use warden_projections::verify;

use crate::app::AppState;

const POLL: Duration = Duration::from_millis(500);
const BATCH: i64 = 100;

pub async fn run(state: AppState, mut shutdown: watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow() {
            return;
        }
        if let Err(e) = expire_due(&state).await {
            tracing::warn!(error = %e, "verification expiry failed; retrying");
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Expires every pending verification past its time; returns how many it looked at.
pub async fn expire_due(state: &AppState) -> anyhow::Result<usize> {
    let due = verify::due_for_expiry(&state.db.pool, &format_time(state.now()), BATCH).await?;
    for id in &due {
        let Ok(verification_id) = Uuid::parse_str(id) else {
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
            .verify
            .expire(verification_id, &meta)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        state
            .caught_up(position)
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    Ok(due.len())
}
