//! The `warden` command line: `serve`, and the maintenance commands that work on the same
//! store (`migrate`, `projections rebuild`, `audit verify`). Long jobs show progress.

use std::collections::BTreeSet;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use warden_commands::SystemClock;

use crate::app::{Application, Core};
use crate::config::{Settings, StorageSettings};

#[derive(Debug, Parser)]
#[command(
    name = "warden",
    version,
    about = "Account security, organizations and phone verification, event-sourced."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API, the projectors and the event relay.
    Serve(Box<Settings>),
    /// Apply database migrations and exit.
    Migrate(StorageSettings),
    /// Read-model maintenance.
    Projections {
        #[command(subcommand)]
        command: ProjectionsCommand,
    },
    /// Tamper evidence.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Print one stream's state as of an instant (sealed values and digests redacted).
    Replay {
        /// The stream id, e.g. user-0190…
        stream: String,
        /// RFC 3339 instant; the latest state when omitted.
        #[arg(long)]
        as_of: Option<String>,
        #[command(flatten)]
        storage: StorageSettings,
    },
    /// Benchmark: start `warden serve` on fresh databases, load it over loopback HTTP and
    /// print throughput, latency and peak RSS against baselines measured in the same run.
    Bench(Box<crate::bench::BenchArgs>),
}

#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// Empty a read model (or all) and replay the whole log into it.
    Rebuild {
        /// users, sessions, organizations; all when omitted.
        name: Option<String>,
        #[command(flatten)]
        storage: StorageSettings,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Write every event of one organization (its own stream, its users', its Verify
    /// streams) as NDJSON envelopes with their hashes, in global order, for offline checks.
    Export {
        /// The organization id.
        #[arg(long)]
        org: uuid::Uuid,
        /// The file to write; standard output when omitted.
        #[arg(long)]
        output: Option<std::path::PathBuf>,
        #[command(flatten)]
        storage: StorageSettings,
    },
    /// Recompute hash chains and name the first broken link. Exit code 1 if any is broken.
    Verify {
        /// One stream id (e.g. user-…); every stream when omitted.
        stream: Option<String>,
        #[command(flatten)]
        storage: StorageSettings,
    },
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(&format!(
        "{what:>12} [{{bar:40}}] {{pos}}/{{len}} ({{per_sec}}, eta {{eta}})"
    )) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Serve(settings) => {
            crate::telemetry::init(settings.log_format);
            let app = Application::build(*settings, Arc::new(SystemClock)).await?;
            app.run_until(shutdown_signal()).await?;
            Ok(0)
        }
        Command::Migrate(storage) => {
            crate::telemetry::init_for_tool();
            Core::open(&storage).await?;
            println!("migrations applied");
            Ok(0)
        }
        Command::Projections {
            command: ProjectionsCommand::Rebuild { name, storage },
        } => {
            crate::telemetry::init_for_tool();
            let core = Core::open(&storage).await?;
            let names: Vec<&str> = match &name {
                Some(n) => vec![n.as_str()],
                None => core.projections.names(),
            };
            // All of them in one pass over the log (one read per batch, one transaction).
            let label = names.join(", ");
            let progress = bar(
                0,
                if names.len() == 1 {
                    &label
                } else {
                    "read models"
                },
            );
            let applied = core
                .projections
                .rebuild_many(&names, |done, total| {
                    progress.set_length(total.max(0) as u64);
                    progress.set_position(done.max(0) as u64);
                })
                .await
                .with_context(|| format!("rebuilding {label}"))?;
            progress.finish();
            for name in &names {
                println!("{name}: rebuilt from {applied} events");
            }
            Ok(0)
        }
        Command::Audit {
            command: AuditCommand::Verify { stream, storage },
        } => {
            crate::telemetry::init_for_tool();
            let core = Core::open(&storage).await?;
            let streams = match stream {
                Some(s) => vec![s],
                None => all_streams(&core).await?,
            };
            let progress = bar(streams.len() as u64, "verify");
            let mut broken = 0;
            for s in &streams {
                let report = core.store.verify_stream(s).await?;
                if !report.valid {
                    broken += 1;
                    progress.println(format!(
                        "BROKEN {s}: first broken version {}",
                        report.first_broken_version.unwrap_or_default()
                    ));
                }
                progress.inc(1);
            }
            progress.finish();
            println!("{} streams verified, {broken} broken", streams.len());
            Ok(if broken == 0 { 0 } else { 1 })
        }
        Command::Audit {
            command:
                AuditCommand::Export {
                    org,
                    output,
                    storage,
                },
        } => {
            crate::telemetry::init_for_tool();
            let core = Core::open(&storage).await?;
            let written = match output {
                Some(path) => {
                    let file = std::fs::File::create(&path)
                        .with_context(|| format!("creating {}", path.display()))?;
                    export(&core, org, std::io::BufWriter::new(file)).await?
                }
                None => export(&core, org, std::io::BufWriter::new(std::io::stdout())).await?,
            };
            eprintln!("{written} events exported");
            Ok(0)
        }
        Command::Bench(args) => {
            crate::telemetry::init_for_tool();
            crate::bench::run(*args).await
        }
        Command::Replay {
            stream,
            as_of,
            storage,
        } => {
            crate::telemetry::init_for_tool();
            replay_stream(&stream, as_of.as_deref(), &storage).await
        }
    }
}

async fn replay_stream(
    stream: &str,
    as_of: Option<&str>,
    storage: &StorageSettings,
) -> anyhow::Result<i32> {
    let as_of = as_of
        .map(|t| {
            chrono::DateTime::parse_from_rfc3339(t)
                .map(|t| t.with_timezone(&chrono::Utc))
                .with_context(|| format!("--as-of {t:?} is not an RFC 3339 time"))
        })
        .transpose()?;
    let core = Core::open(storage).await?;
    let Some(replayed) = crate::audit::replay_stored(core.store.as_ref(), stream, as_of).await?
    else {
        eprintln!("no stream {stream}");
        return Ok(1);
    };
    println!("{}", serde_json::to_string_pretty(&replayed)?);
    Ok(0)
}

/// Streams the log once, in global order, writing the events of streams that belong to
/// `org`. A stream's owner is read from its first event (its creation), which comes first
/// in global order.
async fn export(core: &Core, org: uuid::Uuid, mut out: impl std::io::Write) -> anyhow::Result<u64> {
    let head = core.store.head_position().await?;
    let progress = bar(head.max(0) as u64, "export");
    progress.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    let mut owners: std::collections::HashMap<String, bool> = std::collections::HashMap::new();
    let mut at = 0;
    let mut written = 0u64;
    loop {
        let batch = core.store.read_all(at, 1000).await?;
        let Some(last) = batch.last().map(|e| e.global_position) else {
            break;
        };
        for event in &batch {
            let ours = match owners.get(&event.stream_id) {
                Some(ours) => *ours,
                None => {
                    let ours =
                        crate::audit::replay(&event.stream_id, std::slice::from_ref(event), None)
                            .map(|r| r.organization_id == Some(org))
                            .unwrap_or(false);
                    owners.insert(event.stream_id.clone(), ours);
                    ours
                }
            };
            if ours {
                serde_json::to_writer(&mut out, event)?;
                out.write_all(b"\n")?;
                written += 1;
            }
        }
        progress.set_position(last.max(0) as u64);
        at = last;
    }
    out.flush()?;
    progress.finish_and_clear();
    Ok(written)
}

async fn all_streams(core: &Core) -> anyhow::Result<Vec<String>> {
    let mut streams = BTreeSet::new();
    let mut at = 0;
    loop {
        let batch = core.store.read_all(at, 1000).await?;
        let Some(last) = batch.last().map(|e| e.global_position) else {
            break;
        };
        streams.extend(batch.into_iter().map(|e| e.stream_id));
        at = last;
    }
    Ok(streams.into_iter().collect())
}

/// Ctrl-C or SIGTERM: stop accepting, finish in-flight requests, stop workers.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
    tracing::info!("shutting down");
}
