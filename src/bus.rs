//! Starts the event relay: every committed event, in global order, to NATS JetStream
//! (`WARDEN_EVENTS`) when `NATS_URL` is set, else to the in-process bus. The relay resumes
//! from its checkpoint after any outage, so an unreachable NATS delays events, never loses
//! them.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use warden_infra::bus::{InProcessBus, NatsConfig, NatsPublisher, Publisher};
use warden_infra::relay::{Relay, RelayConfig};

use crate::app::Core;
use crate::config::Settings;

/// The running relay: its task, how far it has relayed, and the in-process bus if that is
/// what it feeds.
pub struct RelayHandle {
    pub task: JoinHandle<()>,
    pub position: watch::Receiver<i64>,
    pub in_process: Option<InProcessBus>,
}

pub fn spawn_relay(
    settings: &Settings,
    core: &Core,
    wake: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) -> RelayHandle {
    let (publisher, in_process): (Arc<dyn Publisher>, _) = match &settings.nats_url {
        Some(url) => {
            let mut config = NatsConfig::new(url.clone());
            config.stream_name = settings.nats_stream.clone();
            config.subject_prefix = settings.nats_subject_prefix.clone();
            (Arc::new(NatsPublisher::new(config)), None)
        }
        None => {
            let bus = InProcessBus::default();
            (Arc::new(bus.clone()), Some(bus))
        }
    };
    let relay = Relay::new(
        core.store.clone(),
        core.db.clone(),
        publisher,
        RelayConfig {
            // One commit every few batches instead of one per batch (a write to the
            // database that competes with the requests' own).
            checkpoint_interval: Duration::from_millis(250),
            ..RelayConfig::default()
        },
    )
    .with_waker(wake);
    let position = relay.position();
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                break;
            }
        }
        cancel.cancel();
    });
    RelayHandle {
        task: tokio::spawn(relay.run(token)),
        position,
        in_process,
    }
}
