//! Starts the event relay: to NATS JetStream when `NATS_URL` is set, else the in-process bus.
//! (Wired to `warden_infra::relay` once it lands.)

use std::sync::Arc;

use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::app::Core;
use crate::config::Settings;

pub async fn spawn_relay(
    _settings: &Settings,
    _core: &Core,
    _wake: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<JoinHandle<()>> {
    Ok(tokio::spawn(async move {
        let _ = shutdown.changed().await;
    }))
}
