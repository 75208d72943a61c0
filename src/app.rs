//! Wiring: open the store, keys, command handlers, read models and the bus from
//! [`Settings`], then serve HTTP until told to stop. `Application::build` binds first and
//! exposes the port, so tests run the real server on port 0.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::Duration as ChronoDuration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use warden_commands::accounts::{Accounts, SessionPolicy};
use warden_commands::members::Members;
use warden_commands::two_factor::TwoFactorCommands;
use warden_commands::verify::VerifyCommands;
use warden_commands::webhooks::WebhookEndpoints;
use warden_commands::{Clock, EventStore, Pipeline, Secrets};
use warden_infra::db::{Backend, Database};
use warden_projections::audit_events::AuditEventsProjector;
use warden_projections::members::MembersProjector;
use warden_projections::organizations::OrganizationsProjector;
use warden_projections::sessions::SessionsProjector;
use warden_projections::users::UsersProjector;
use warden_projections::verify::VerifyProjector;
use warden_projections::webhook_endpoints::WebhookEndpointsProjector;
use warden_projections::webhooks::VerifyWebhooksProjector;
use warden_projections::EachEvent;
use warden_projections::{Projections, Projector};

use crate::api;
use crate::config::Settings;

/// How long a command waits for the caller's read models to show its write.
pub const READ_YOUR_WRITES_WAIT: Duration = Duration::from_secs(10);

/// Everything a request handler may use. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub settings: Settings,
    pub db: Database,
    pub store: Arc<dyn EventStore>,
    pub secrets: Arc<dyn Secrets>,
    pub clock: Arc<dyn Clock>,
    pub pipeline: Pipeline,
    pub accounts: Accounts,
    pub two_factor: TwoFactorCommands,
    pub members: Members,
    pub verify: VerifyCommands,
    pub webhooks: WebhookEndpoints,
    pub projections: Projections,
    /// What bearer tokens open, evicted by the projection runner (see `api::auth_cache`).
    pub auth_cache: Arc<api::auth_cache::AuthCache>,
    pub relay_wake: Arc<Notify>,
    /// Nudges the webhook dispatcher once read models (and so the delivery queue) moved.
    pub webhook_wake: Arc<Notify>,
    /// How far the relay has durably published.
    pub relayed: watch::Receiver<i64>,
    /// The in-process bus, when there is no NATS.
    pub bus: Option<warden_infra::bus::InProcessBus>,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Waits until the read models include `position` (read-your-writes), and nudges the relay.
    pub async fn caught_up(&self, position: Option<i64>) -> Result<(), api::error::ApiError> {
        let Some(position) = position else {
            return Ok(());
        };
        self.relay_wake.notify_one();
        self.projections
            .wait_for(position, READ_YOUR_WRITES_WAIT)
            .await?;
        Ok(())
    }

    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }
}

/// The core services, without HTTP: what the CLI's maintenance commands need too.
pub struct Core {
    pub db: Database,
    pub store: Arc<dyn EventStore>,
    pub secrets: Arc<dyn Secrets>,
    pub projections: Projections,
}

impl Core {
    pub async fn open(settings: &crate::config::StorageSettings) -> anyhow::Result<Self> {
        let db = Database::connect(settings.database_url.as_deref(), &settings.data_dir)
            .await
            .context("opening the database")?;
        db.migrate().await.context("applying migrations")?;
        let master = warden_infra::vault::load_master_key(
            settings.master_key.as_deref(),
            &settings.data_dir,
        )
        .context("loading the master key")?;
        let secrets: Arc<dyn Secrets> =
            Arc::new(warden_infra::vault::Vault::new(db.clone(), master));
        let store = warden_infra::store::open_store(&db);
        let projectors: Vec<Arc<dyn Projector>> = vec![
            Arc::new(UsersProjector::new(secrets.clone())),
            Arc::new(EachEvent(SessionsProjector)),
            Arc::new(EachEvent(OrganizationsProjector::new(secrets.clone()))),
            Arc::new(EachEvent(MembersProjector::new(secrets.clone()))),
            Arc::new(VerifyProjector::new(secrets.clone())),
            Arc::new(VerifyWebhooksProjector::new(store.clone(), secrets.clone())),
            Arc::new(WebhookEndpointsProjector::default()),
            Arc::new(AuditEventsProjector),
        ];
        let projections = Projections::new(db.pool.clone(), store.clone(), projectors)
            .with_write_gate(db.writes.shared());
        let projections = match db.backend {
            Backend::Sqlite => projections.with_dialect("BEGIN IMMEDIATE", ""),
            Backend::Postgres => {
                let projections = projections
                    .with_dialect("BEGIN", " FOR UPDATE")
                    .with_shadow_rebuilds(true);
                match &db.log_reads {
                    Some(pool) => projections.with_bulk_copies((*pool.connect_options()).clone()),
                    None => projections,
                }
            }
        };
        Ok(Self {
            db,
            store,
            secrets,
            projections,
        })
    }
}

pub struct Application {
    listener: TcpListener,
    state: AppState,
    port: u16,
    shutdown_tx: watch::Sender<bool>,
    workers: Vec<JoinHandle<()>>,
}

impl Application {
    pub async fn build(settings: Settings, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        settings.validate()?;
        let mut core = Core::open(&settings.storage).await?;
        warden_infra::vault::Vault::warm_up_hashing();
        let auth_cache = api::auth_cache::AuthCache::new();
        // The dispatcher is woken by the passes that queue deliveries, not by every command.
        let webhook_wake = Arc::new(Notify::new());
        core.projections = core
            .projections
            .with_observer(auth_cache.clone())
            .with_deliveries_wake(webhook_wake.clone());
        let pipeline =
            Pipeline::new(core.store.clone(), clock.clone()).with_secrets(core.secrets.clone());
        let policy = SessionPolicy {
            lifetime: ChronoDuration::seconds(settings.session_lifetime_secs),
            idle_timeout: ChronoDuration::seconds(settings.session_idle_secs),
        };
        let accounts = Accounts::new(pipeline.clone(), core.secrets.clone(), policy);
        let sender = settings
            .sender()
            .context("configuring the message sender")?;
        let two_factor = TwoFactorCommands::new(
            pipeline.clone(),
            core.secrets.clone(),
            sender.clone(),
            policy,
        );
        let members = Members::new(
            pipeline.clone(),
            core.secrets.clone(),
            sender.clone(),
            policy,
        );
        let verify = VerifyCommands::new(
            pipeline.clone(),
            core.secrets.clone(),
            sender.clone(),
            settings.verify_config()?,
        );
        let webhooks = WebhookEndpoints::new(pipeline.clone(), core.secrets.clone(), sender);
        let metrics = api::metrics::install()
            .map_err(|e| anyhow::anyhow!("installing the metrics recorder: {e}"))?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let relay_wake = Arc::new(Notify::new());
        let mut workers = Vec::new();
        workers.push(tokio::spawn(
            core.projections.clone().run(shutdown_rx.clone()),
        ));
        workers.push(tokio::spawn(purge_idempotency(
            core.store.clone(),
            clock.clone(),
            shutdown_rx.clone(),
        )));
        workers.push(tokio::spawn(
            warden_infra::webhooks::Dispatcher::new(
                &core.db,
                core.secrets.clone(),
                clock.clone(),
                settings.env != crate::config::Environment::Production,
            )
            .with_retry_scale(settings.webhook_retry_scale)
            .with_wake(webhook_wake.clone())
            .run(shutdown_rx.clone()),
        ));
        let relay =
            crate::bus::spawn_relay(&settings, &core, relay_wake.clone(), shutdown_rx.clone());
        workers.push(relay.task);
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("binding {}", settings.listen))?;
        let port = listener.local_addr()?.port();
        let expiry_shutdown = shutdown_rx.clone();
        let health_shutdown = shutdown_rx.clone();
        let state = AppState(Arc::new(Inner {
            settings,
            db: core.db,
            store: core.store,
            secrets: core.secrets,
            clock,
            pipeline,
            accounts,
            two_factor,
            members,
            verify,
            webhooks,
            projections: core.projections,
            auth_cache,
            relay_wake,
            webhook_wake,
            relayed: relay.position,
            bus: relay.in_process,
            metrics,
        }));
        workers.push(tokio::spawn(crate::verify_expiry::run(
            state.clone(),
            expiry_shutdown,
        )));
        workers.push(tokio::spawn(crate::webhook_health::run(
            state.clone(),
            health_shutdown,
        )));
        Ok(Self {
            listener,
            state,
            port,
            shutdown_tx,
            workers,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn state(&self) -> AppState {
        self.state.clone()
    }

    /// Serves until `signal` resolves, finishing in-flight requests, then stops the workers.
    pub async fn run_until(
        self,
        signal: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let router = api::router(self.state.clone());
        tracing::info!(port = self.port, "warden is serving");
        axum::serve(
            self.listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(signal)
        .await?;
        let _ = self.shutdown_tx.send(true);
        for worker in self.workers {
            let _ = tokio::time::timeout(Duration::from_secs(10), worker).await;
        }
        tracing::info!("warden stopped");
        Ok(())
    }
}

/// Drops idempotency records past their 24 h retention, hourly.
async fn purge_idempotency(
    store: Arc<dyn EventStore>,
    clock: Arc<dyn Clock>,
    mut shutdown: watch::Receiver<bool>,
) {
    let retention = ChronoDuration::hours(api::idempotency::RETENTION_HOURS);
    loop {
        match store.idempotency_purge(clock.now() - retention).await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "expired idempotency records purged"),
            Err(e) => tracing::warn!(error = %e, "idempotency purge failed; will retry"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
            _ = shutdown.changed() => return,
        }
    }
}
