//! `warden serve` as a child process: a fresh database, its own data directory and log
//! file, a free loopback port; peak RSS read from `/proc/<pid>/status`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sqlx::Connection;
use tokio::process::{Child, Command};

/// Environment every child gets: the sender posts to the harness, and Verify's hourly
/// abuse limits are lifted (the harness sends thousands of codes from one address).
pub struct ServerConfig {
    pub exe: PathBuf,
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
    pub sender_url: String,
    /// (url, stream, subject prefix)
    pub nats: Option<(String, String, String)>,
}

impl ServerConfig {
    fn apply(&self, cmd: &mut Command) {
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("WARDEN_DATA_DIR", &self.data_dir)
            .env("WARDEN_SENDER", "http")
            .env("WARDEN_SENDER_URL", &self.sender_url)
            .env("WARDEN_VERIFY_SENDS_PER_NUMBER", "1000000")
            .env("WARDEN_VERIFY_SENDS_PER_PROFILE", "100000000")
            .env("WARDEN_VERIFY_SENDS_PER_CLIENT", "100000000");
        if let Some(url) = &self.database_url {
            cmd.env("DATABASE_URL", url);
        }
        if let Some((url, stream, prefix)) = &self.nats {
            cmd.env("NATS_URL", url)
                .env("WARDEN_NATS_STREAM", stream)
                .env("WARDEN_NATS_SUBJECT_PREFIX", prefix);
        }
    }

    fn log_file(&self, name: &str) -> anyhow::Result<std::fs::File> {
        std::fs::create_dir_all(&self.data_dir)?;
        let path = self.data_dir.join(name);
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))
    }
}

/// A running `warden serve`.
pub struct Server {
    child: Child,
    pub pid: u32,
    pub base: String,
}

impl Server {
    pub async fn start(config: &ServerConfig) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let log = config.log_file("serve.log")?;
        let mut cmd = Command::new(&config.exe);
        config.apply(&mut cmd);
        cmd.arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        let child = cmd.spawn().context("starting warden serve")?;
        let pid = child.id().context("warden serve exited at once")?;
        let server = Self {
            child,
            pid,
            base: format!("http://127.0.0.1:{port}"),
        };
        let client = reqwest::Client::new();
        let started = Instant::now();
        loop {
            let ready = client
                .get(format!("{}/readyz", server.base))
                .send()
                .await
                .map(|r| r.status().is_success())
                .unwrap_or(false);
            if ready {
                return Ok(server);
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!(
                    "warden serve did not become ready; see {}",
                    config.data_dir.join("serve.log").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Peak resident set size so far, in KiB (`VmHWM`).
    pub fn peak_rss_kib(&self) -> Option<u64> {
        peak_rss_kib(self.pid)
    }

    /// SIGTERM, then SIGKILL if it has not exited within 10 s.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()
            .await;
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            self.child.kill().await?;
        }
        Ok(())
    }
}

/// `VmHWM` of a process, in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Runs `warden projections rebuild` on the config's database; returns its wall time.
pub async fn rebuild(config: &ServerConfig) -> anyhow::Result<Duration> {
    let log = config.log_file("rebuild.log")?;
    let mut cmd = Command::new(&config.exe);
    config.apply(&mut cmd);
    cmd.arg("projections")
        .arg("rebuild")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let started = Instant::now();
    let status = cmd.status().await.context("running projections rebuild")?;
    if !status.success() {
        bail!("projections rebuild failed: {status}");
    }
    Ok(started.elapsed())
}

/// A fresh, empty Postgres database on the server at `base` (…:5432, no database name).
pub async fn create_database(base: &str) -> anyhow::Result<(String, String)> {
    let name = format!("warden_bench_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&format!("{base}/postgres"))
        .await
        .context("connecting to Postgres")?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await?;
    Ok((format!("{base}/{name}"), name))
}

pub async fn drop_database(base: &str, name: &str) {
    if let Ok(mut admin) = sqlx::PgConnection::connect(&format!("{base}/postgres")).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut admin)
            .await;
    }
}

/// A fresh scratch directory under the system temp dir.
pub fn scratch_dir(label: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "warden-bench-{label}-{}",
        uuid::Uuid::new_v4().simple()
    ))
}

pub fn remove_dir(path: &Path) {
    let _ = std::fs::remove_dir_all(path);
}
