//! Connecting to the database Warden runs on: Postgres when `DATABASE_URL` says so,
//! otherwise an embedded SQLite file in the data directory. Both sit behind one `AnyPool`,
//! so read models and operational tables share their SQL; the few dialect differences
//! (write locks, error codes) are named by [`Backend`]. Migrations are embedded.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AnyPool, ConnectOptions, Executor};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// A connection pool and which backend it talks to.
#[derive(Debug, Clone)]
pub struct Database {
    pub pool: AnyPool,
    pub backend: Backend,
    /// Queues this process's writers on SQLite (see [`WriteGate`]).
    pub writes: WriteGate,
    /// Postgres only: the same database through sqlx's own Postgres driver, for reads of
    /// the log in order (rebuilds, projection passes, the relay). The `Any` driver copies
    /// every row it returns into its own form: 13 % of a rebuild's client CPU went to that
    /// copy.
    pub log_reads: Option<PgPool>,
}

/// SQLite has one writer. A writer that finds the write lock taken sleeps in SQLite's busy
/// handler (1, 2, 5, 10, … ms) and does not wake when the lock is released, so under load
/// the lock sat idle while writers slept (`strace`: about one 6 ms sleep per command; 40 %
/// idle CPU). The writers a request waits for (the append committer, the projection
/// runner, new data keys, snapshots, activity touches) now queue here in order, and each
/// is woken the moment the one before is done. Background writers (the webhook dispatcher,
/// the relay's checkpoint) stay outside on purpose: their busy waits keep them out of the
/// requests' way (queueing them here too measured 612 → 525 commands/s). Other processes
/// (a CLI rebuild) still meet SQLite's busy wait. On Postgres the gate is open.
#[derive(Debug, Clone, Default)]
pub struct WriteGate(Option<Arc<tokio::sync::Mutex<()>>>);

impl WriteGate {
    /// A gate that queues writers (SQLite).
    pub fn queued() -> Self {
        Self(Some(Arc::default()))
    }

    /// Waits for this process's other writers; the write may start while the guard lives.
    /// Take it before a pool connection, never while holding another guard.
    pub async fn enter(&self) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        match &self.0 {
            Some(gate) => Some(Arc::clone(gate).lock_owned().await),
            None => None,
        }
    }

    /// The shared lock itself, for crates that do not know this type (the projections).
    pub fn shared(&self) -> Option<Arc<tokio::sync::Mutex<()>>> {
        self.0.clone()
    }
}

/// A batching writer's next batch: `first`, then whatever else is queued already, up to
/// `max` in all. Take it after the gate, so what arrived during the wait joins in.
pub(crate) fn queued_batch<T>(
    first: T,
    queue: &mut tokio::sync::mpsc::UnboundedReceiver<T>,
    max: usize,
) -> Vec<T> {
    let mut batch = vec![first];
    while batch.len() < max {
        match queue.try_recv() {
            Ok(item) => batch.push(item),
            Err(_) => break,
        }
    }
    batch
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot open the database: {0}")]
    Connect(String),
    #[error("cannot apply migrations: {0}")]
    Migrate(String),
    #[error("unsupported database URL (use postgres:// or sqlite://)")]
    UnsupportedUrl,
}

static PG_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

impl Database {
    /// Opens `database_url` if given, else `<data_dir>/warden.db` (created if missing).
    pub async fn connect(database_url: Option<&str>, data_dir: &Path) -> Result<Self, DbError> {
        sqlx::any::install_default_drivers();
        match database_url {
            Some(url) if url.starts_with("postgres:") || url.starts_with("postgresql:") => {
                Self::connect_postgres(url).await
            }
            Some(url) if url.starts_with("sqlite:") => Self::connect_sqlite(url).await,
            Some(_) => Err(DbError::UnsupportedUrl),
            None => {
                std::fs::create_dir_all(data_dir).map_err(|e| DbError::Connect(e.to_string()))?;
                let path = data_dir.join("warden.db");
                Self::connect_sqlite(&format!("sqlite://{}?mode=rwc", path.display())).await
            }
        }
    }

    async fn connect_postgres(url: &str) -> Result<Self, DbError> {
        let options = AnyConnectOptions::from_str(url)
            .map_err(|e| DbError::Connect(e.to_string()))?
            .log_statements(tracing::log::LevelFilter::Trace);
        // A short acquire timeout: while Postgres is down (restart, failover) sqlx keeps
        // retrying the connect until it runs out, so this is how long a request waits before
        // its 503; with a healthy server a 2 s wait for a free connection means overload,
        // where shedding load with a 503 is the right answer too.
        let pool = AnyPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(2))
            .connect_with(options)
            .await
            .map_err(|e| DbError::Connect(e.to_string()))?;
        // Connected when first used, with the same acquire timeout (a read of the log during
        // an outage fails as fast as a request does). Six: a rebuild reads three batches
        // ahead, beside the relay's and the projection runner's reads.
        let log_reads = PgPoolOptions::new()
            .max_connections(6)
            .acquire_timeout(Duration::from_secs(2))
            .connect_lazy_with(
                PgConnectOptions::from_str(url)
                    .map_err(|e| DbError::Connect(e.to_string()))?
                    .log_statements(tracing::log::LevelFilter::Trace),
            );
        Ok(Self {
            pool,
            backend: Backend::Postgres,
            writes: WriteGate::default(),
            log_reads: Some(log_reads),
        })
    }

    async fn connect_sqlite(url: &str) -> Result<Self, DbError> {
        let options = AnyConnectOptions::from_str(url)
            .map_err(|e| DbError::Connect(e.to_string()))?
            .log_statements(tracing::log::LevelFilter::Trace);
        // Many connections, because a SQLite writer queues on `busy_timeout` while HOLDING a
        // pool connection, and the transaction that holds the write lock may need one more
        // connection to finish (a projector opening a sealed value reads the key store). With
        // 8 connections, 16 concurrent sends filled the pool with queued writers and stalled
        // the lock holder until the 10 s busy timeout (measured with `warden bench`).
        // Connections to a local file are cheap; the lasting fix is that nothing holding the
        // write lock ever waits for the pool.
        // No ping before handing out a connection (sqlx's default): a connection to a local
        // file cannot go stale, and the ping is one more hop to the connection's worker
        // thread on every statement run on the pool (3.9 % of the server's CPU under load).
        let pool = AnyPoolOptions::new()
            .max_connections(64)
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(|conn, _| {
                Box::pin(async move {
                    // WAL lets readers run beside the one writer; FULL sync so an
                    // acknowledged write survives a power cut; busy_timeout makes writers
                    // queue instead of failing.
                    conn.execute(
                        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                         PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;",
                    )
                    .await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(|e| DbError::Connect(e.to_string()))?;
        Ok(Self {
            pool,
            backend: Backend::Sqlite,
            writes: WriteGate::queued(),
            log_reads: None,
        })
    }

    /// Applies the embedded migrations for this backend.
    pub async fn migrate(&self) -> Result<(), DbError> {
        let migrator = match self.backend {
            Backend::Postgres => &PG_MIGRATIONS,
            Backend::Sqlite => &SQLITE_MIGRATIONS,
        };
        migrator
            .run(&self.pool)
            .await
            .map_err(|e| DbError::Migrate(e.to_string()))
    }
}
