//! Warden's read side: the projector runtime (checkpoints committed with each read-model
//! change, read-your-writes waiting, rebuild from zero) and one module per read model with
//! its query functions.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

pub mod audit_events;
pub mod bulk;
pub mod members;
pub mod organizations;
pub mod runtime;
pub mod sessions;
mod shadow;
mod sql;
pub mod users;
pub mod verify;
pub mod webhook_endpoints;
pub mod webhooks;

pub use bulk::Bulk;
pub use runtime::{EachEvent, EventProjector, ProjectionError, Projections, Projector};

/// Opens a sealed field for a read model; a destroyed key yields `None` (shown as absent).
pub(crate) async fn open_text(
    secrets: &dyn warden_commands::Secrets,
    sealed: &warden_domain::Sealed,
) -> Result<Option<String>, ProjectionError> {
    let bytes = secrets
        .open(sealed)
        .await
        .map_err(|e| ProjectionError::Secrets(e.to_string()))?;
    Ok(bytes.map(|b| String::from_utf8_lossy(&b).into_owned()))
}
