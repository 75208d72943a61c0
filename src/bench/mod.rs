//! `warden bench`: starts `warden serve` (this same binary) as a child process against a
//! fresh Postgres database and, separately, the embedded SQLite, drives it over loopback
//! HTTP from its own load generator, and prints one table: each scenario's throughput,
//! p50/p99 latency, the server's peak RSS, the baseline measured in the same run on the
//! same machine, the ratio, the target and PASS/MISS. Every target is a ratio (or a bound
//! measured under load), because the machines are small and noisy.

mod api;
mod load;
mod receivers;
mod scenarios;
mod server;

use std::path::PathBuf;
use std::time::Duration;

pub use load::{quantile, Mode, Stats};

/// `warden bench` options.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Concurrent connections for the throughput scenarios.
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Seconds each measured phase runs.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Smoke mode: 1-second phases and a 1,000-event long stream.
    #[arg(long)]
    pub quick: bool,
    /// Events on the long stream of the snapshot scenario.
    #[arg(long, default_value_t = 100_000)]
    pub long_stream_events: i64,
    /// Postgres server (no database name): a fresh database is created and dropped.
    #[arg(
        long,
        env = "WARDEN_BENCH_POSTGRES",
        default_value = "postgres://postgres@127.0.0.1:5432"
    )]
    pub postgres: String,
    /// NATS server for the append → publish scenario (a fresh JetStream stream per run).
    #[arg(
        long,
        env = "WARDEN_BENCH_NATS",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,
    /// Skip the NATS scenario (the Postgres server then uses the in-process bus).
    #[arg(long)]
    pub no_nats: bool,
    /// Skip the Postgres scenarios.
    #[arg(long)]
    pub skip_postgres: bool,
    /// Skip the Postgres throughput and latency scenarios: of Postgres, run only the long
    /// stream and the rebuild.
    #[arg(long)]
    pub skip_postgres_load: bool,
    /// Skip the embedded SQLite scenario.
    #[arg(long)]
    pub skip_sqlite: bool,
    /// The `warden` binary to start (default: this one).
    #[arg(long)]
    pub warden_bin: Option<PathBuf>,
    /// Keep the databases and data directories (their paths are printed).
    #[arg(long)]
    pub keep: bool,
}

impl BenchArgs {
    pub fn phase(&self) -> Duration {
        let secs = if self.quick {
            self.seconds.min(1.0)
        } else {
            self.seconds
        };
        Duration::from_secs_f64(secs.max(0.1))
    }

    pub fn long_stream(&self) -> i64 {
        if self.quick {
            self.long_stream_events.min(1_000)
        } else {
            self.long_stream_events
        }
        .max(20)
    }
}

/// One line of the report.
#[derive(Debug, Clone, Default)]
pub struct Row {
    pub scenario: String,
    pub throughput: String,
    pub p50: String,
    pub p99: String,
    pub rss: String,
    pub baseline: String,
    pub ratio: String,
    pub target: String,
    /// None: informational only.
    pub pass: Option<bool>,
}

impl Row {
    /// The same figures, shown for information (`why`) instead of judged against a target.
    pub fn informational(self, why: &str) -> Self {
        Self {
            target: format!("info: {why}"),
            pass: None,
            ..self
        }
    }
}

pub fn ms(d: Option<Duration>) -> String {
    d.map(|d| format!("{:.1} ms", d.as_secs_f64() * 1000.0))
        .unwrap_or_else(|| "-".into())
}

pub fn per_sec(rate: f64, unit: &str) -> String {
    format!("{rate:.0} {unit}/s")
}

pub fn mib(kib: Option<u64>) -> String {
    kib.map(|k| format!("{:.0} MiB", k as f64 / 1024.0))
        .unwrap_or_else(|| "-".into())
}

/// Prints the table as Markdown, so it pastes into docs/performance.md as is.
pub fn print_table(rows: &[Row]) {
    let header = [
        "scenario",
        "throughput",
        "p50",
        "p99",
        "server peak RSS",
        "baseline (same run)",
        "ratio",
        "target",
        "result",
    ];
    println!("| {} |", header.join(" | "));
    println!("|{}", "---|".repeat(header.len()));
    for r in rows {
        let result = match r.pass {
            Some(true) => "PASS",
            Some(false) => "MISS",
            None => "info",
        };
        let cells = [
            &r.scenario,
            &r.throughput,
            &r.p50,
            &r.p99,
            &r.rss,
            &r.baseline,
            &r.ratio,
            &r.target,
        ]
        .map(|c| if c.is_empty() { "-" } else { c.as_str() });
        println!("| {} | {result} |", cells.join(" | "));
    }
}

/// Runs every scenario and prints the table. Exit code 0 even when a target is missed
/// (the table says so); an error means the harness itself could not run.
pub async fn run(args: BenchArgs) -> anyhow::Result<i32> {
    let exe = match &args.warden_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()?,
    };
    eprintln!(
        "warden bench: {} connections, {:.1} s phases, long stream {} events, binary {}",
        args.connections,
        args.phase().as_secs_f64(),
        args.long_stream(),
        exe.display()
    );
    let receivers = receivers::Receivers::start().await?;
    let mut rows = Vec::new();
    if !args.skip_postgres {
        if !args.skip_postgres_load {
            rows.extend(scenarios::postgres_main(&args, &exe, &receivers).await?);
        }
        rows.extend(scenarios::postgres_long_stream(&args, &exe, &receivers).await?);
    }
    if !args.skip_sqlite {
        rows.extend(scenarios::sqlite(&args, &exe, &receivers).await?);
    }
    print_table(&rows);
    let missed = rows.iter().filter(|r| r.pass == Some(false)).count();
    eprintln!(
        "{} targets checked, {missed} missed",
        rows.iter().filter(|r| r.pass.is_some()).count()
    );
    Ok(0)
}
