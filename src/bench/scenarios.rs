//! The scenarios, each next to the baseline it is judged against.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use futures::StreamExt;
use serde_json::json;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{QueryBuilder, Row as _};

use super::api::{phone, Api, PASSWORD};
use super::load::{self, Mode, Stats};
use super::receivers::{since, Receivers};
use super::server::{self, Server, ServerConfig};
use super::{mib, ms, per_sec, BenchArgs, Row};

/// How long a code may take to reach the sink.
const CODE_WAIT: Duration = Duration::from_secs(10);

fn ratio(value: f64, baseline: f64) -> f64 {
    if baseline > 0.0 {
        value / baseline
    } else {
        0.0
    }
}

fn check_errors(name: &str, stats: &Stats) -> anyhow::Result<()> {
    if stats.errors > 0 {
        eprintln!(
            "  {name}: {} failed operations (first: {})",
            stats.errors,
            stats.first_error.as_deref().unwrap_or("?")
        );
    }
    if stats.units == 0 {
        bail!(
            "{name}: nothing succeeded ({})",
            stats.first_error.as_deref().unwrap_or("no error recorded")
        );
    }
    Ok(())
}

fn throughput_row(
    scenario: &str,
    stats: &Stats,
    unit: &str,
    baseline: &Stats,
    baseline_label: &str,
    target: f64,
) -> Row {
    let r = ratio(stats.rate(), baseline.rate());
    Row {
        scenario: scenario.into(),
        throughput: per_sec(stats.rate(), unit),
        p50: ms(stats.quantile(0.5)),
        p99: ms(stats.quantile(0.99)),
        baseline: format!("{} {baseline_label}", per_sec(baseline.rate(), "")),
        ratio: format!("{r:.2}"),
        target: format!(">= {target}"),
        pass: Some(r >= target),
        ..Row::default()
    }
}

fn rss_row(scenario: &str, kib: Option<u64>) -> Row {
    Row {
        scenario: scenario.into(),
        rss: mib(kib),
        target: "<= 150 MiB".into(),
        pass: kib.map(|k| k <= 150 * 1024),
        ..Row::default()
    }
}

/// One Verify round: send a code by SMS, take it from the sink, check it. Two commands.
async fn send_and_check(
    api: &Api,
    receivers: &Receivers,
    token: &str,
    profile: &str,
    number: String,
) -> Result<u64, String> {
    api.post(
        "/v2/verifications/sms",
        Some(token),
        json!({ "phone_number": number, "verify_profile_id": profile }),
        200,
    )
    .await?;
    let code = receivers
        .take_code(&number, CODE_WAIT)
        .await
        .ok_or_else(|| format!("no code reached the sink for {number}"))?;
    let r = api
        .post(
            &format!("/v2/verifications/by_phone_number/{number}/actions/verify"),
            Some(token),
            json!({ "code": code, "verify_profile_id": profile }),
            200,
        )
        .await?;
    if r.pointer("/data/response_code")
        .unwrap_or(&serde_json::Value::Null)
        != "accepted"
    {
        return Err(format!("the right code was not accepted: {r}"));
    }
    Ok(2)
}

#[allow(clippy::too_many_arguments)] // one load shape, many knobs
async fn verify_load(
    api: &Api,
    receivers: &Receivers,
    token: &str,
    profiles: &[String],
    salt: usize,
    workers: usize,
    phase: Duration,
    mode: Mode,
) -> Stats {
    let (api, receivers) = (api.clone(), receivers.clone());
    let token = token.to_owned();
    let profiles: Arc<Vec<String>> = Arc::new(profiles.to_vec());
    load::run(workers, phase, mode, move |w, i| {
        let (api, receivers) = (api.clone(), receivers.clone());
        let token = token.clone();
        let profile = profiles
            .get(w % profiles.len().max(1))
            .cloned()
            .unwrap_or_default();
        async move { send_and_check(&api, &receivers, &token, &profile, phone(salt, w, i)).await }
    })
    .await
}

/// `count` Verify profiles of one organization (each send reserves on its profile's
/// stream, so one profile per connection keeps the connections off each other's streams).
async fn profiles(
    api: &Api,
    token: &str,
    count: usize,
    webhook_url: Option<&str>,
) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::with_capacity(count);
    for _ in 0..count.max(1) {
        ids.push(
            api.verify_profile(token, webhook_url)
                .await
                .map_err(|e| anyhow!(e))?,
        );
    }
    Ok(ids)
}

/// Plain single-row INSERTs (autocommit, so one fsync each) into a table shaped like the
/// events table, at the same concurrency.
async fn insert_baseline(pool: &PgPool, workers: usize, phase: Duration) -> anyhow::Result<Stats> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS bench_inserts (id TEXT PRIMARY KEY, stream_id TEXT NOT NULL, \
         version BIGINT NOT NULL, event_type TEXT NOT NULL, payload TEXT NOT NULL, \
         recorded_at TEXT NOT NULL, hash TEXT NOT NULL)",
    )
    .execute(pool)
    .await?;
    let pool = pool.clone();
    let stats = load::run(workers, phase, Mode::Closed, move |w, i| {
        let pool = pool.clone();
        async move {
            sqlx::query(
                "INSERT INTO bench_inserts (id, stream_id, version, event_type, payload, \
                 recorded_at, hash) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(uuid::Uuid::now_v7().to_string())
            .bind(format!("bench-{w}"))
            .bind(i as i64)
            .bind("bench.inserted")
            .bind(r#"{"phone_number":"+13035550100","status":"pending"}"#)
            .bind(warden_domain::chain::format_time(chrono::Utc::now()))
            .bind("0".repeat(64))
            .execute(&pool)
            .await
            .map(|_| 1)
            .map_err(|e| e.to_string())
        }
    })
    .await;
    check_errors("INSERT baseline", &stats)?;
    Ok(stats)
}

/// Raw argon2id verifications with the vault's pinned parameters, one thread per core:
/// the library's `verify_password` (a fresh 19 MiB buffer each time), or with
/// `kept_buffer` each thread's buffer reused, as the server does while sign-ins queue.
fn argon2_baseline(phase: Duration, kept_buffer: bool) -> anyhow::Result<Stats> {
    use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
    use argon2::{Algorithm, Argon2, Block, Params, Version};
    use warden_infra::vault::{M_COST_KIB, P_COST, T_COST};
    let params = Params::new(M_COST_KIB, T_COST, P_COST, None).map_err(|e| anyhow!("{e}"))?;
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let salt = SaltString::from_b64("YmVuY2hiZW5jaGJlbmNoYmVuY2g").map_err(|e| anyhow!("{e}"))?;
    let phc = argon
        .hash_password(PASSWORD.as_bytes(), &salt)
        .map_err(|e| anyhow!("{e}"))?
        .to_string();
    let cores = std::thread::available_parallelism()
        .map(std::num::NonZeroUsize::get)
        .unwrap_or(2);
    let started = Instant::now();
    let deadline = started + phase;
    let all: Mutex<Stats> = Mutex::default();
    std::thread::scope(|s| {
        for _ in 0..cores {
            s.spawn(|| {
                let mut local = Stats::default();
                let mut blocks = vec![Block::default(); argon.params().block_count()];
                let mut raw_salt = [0u8; 64];
                while Instant::now() < deadline {
                    let began = Instant::now();
                    let ok = PasswordHash::new(&phc)
                        .map(|h| {
                            if !kept_buffer {
                                return argon.verify_password(PASSWORD.as_bytes(), &h).is_ok();
                            }
                            let (Some(salt), Some(expected)) = (h.salt, h.hash) else {
                                return false;
                            };
                            let Ok(salt) = salt.decode_b64(&mut raw_salt) else {
                                return false;
                            };
                            let mut out = vec![0u8; expected.len()];
                            argon
                                .hash_password_into_with_memory(
                                    PASSWORD.as_bytes(),
                                    salt,
                                    &mut out,
                                    &mut blocks,
                                )
                                .is_ok()
                                && out == expected.as_bytes()
                        })
                        .unwrap_or(false);
                    if ok {
                        local.units += 1;
                        local.latencies.push(began.elapsed());
                    } else {
                        local.errors += 1;
                    }
                }
                let mut all = all.lock().unwrap_or_else(|p| p.into_inner());
                all.units += local.units;
                all.errors += local.errors;
                all.latencies.extend(local.latencies);
            });
        }
    });
    let mut stats = all.into_inner().unwrap_or_else(|p| p.into_inner());
    stats.elapsed = started.elapsed();
    Ok(stats)
}

/// Waits until the server's read models (and, with `relayed`, the relay) reached the head.
async fn wait_caught_up(
    api: &Api,
    pool: &PgPool,
    relayed: bool,
    limit: Duration,
) -> anyhow::Result<()> {
    let head: i64 = sqlx::query("SELECT COALESCE(MAX(global_position), 0) AS head FROM events")
        .fetch_one(pool)
        .await?
        .try_get("head")?;
    let started = Instant::now();
    loop {
        let (projected, relay) = api.positions().await.map_err(|e| anyhow!(e))?;
        if projected >= head && (!relayed || relay >= head) {
            return Ok(());
        }
        if started.elapsed() > limit {
            bail!("the server did not catch up with position {head} (projected {projected}, relayed {relay})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct PgRun {
    db_url: String,
    db_name: String,
    dir: std::path::PathBuf,
    pool: PgPool,
}

async fn pg_run(args: &BenchArgs, label: &str) -> anyhow::Result<PgRun> {
    let (db_url, db_name) = server::create_database(&args.postgres).await?;
    let dir = server::scratch_dir(label);
    // Warden runs its migrations on start; the harness's own pool is opened after that.
    let pool = PgPoolOptions::new()
        .max_connections(u32::try_from(args.connections.max(1)).unwrap_or(16))
        .connect_lazy(&db_url)?;
    Ok(PgRun {
        db_url,
        db_name,
        dir,
        pool,
    })
}

async fn pg_cleanup(args: &BenchArgs, run: PgRun) {
    run.pool.close().await;
    if args.keep {
        eprintln!("  kept database {} and {}", run.db_url, run.dir.display());
    } else {
        server::drop_database(&args.postgres, &run.db_name).await;
        server::remove_dir(&run.dir);
    }
}

/// Postgres with NATS: Verify throughput, the authenticated read, sign-in, then append →
/// NATS / webhook latency at half of the measured Verify peak.
pub async fn postgres_main(
    args: &BenchArgs,
    exe: &Path,
    receivers: &Receivers,
) -> anyhow::Result<Vec<Row>> {
    let n = args.connections.max(1);
    let run = pg_run(args, "pg").await?;
    let nats_stream = format!("BENCH_{}", uuid::Uuid::new_v4().simple());
    let nats_prefix = format!("bench{}.events", uuid::Uuid::new_v4().simple());
    let config = ServerConfig {
        exe: exe.to_owned(),
        data_dir: run.dir.clone(),
        database_url: Some(run.db_url.clone()),
        sender_url: receivers.sender_url.clone(),
        nats: (!args.no_nats).then(|| {
            (
                args.nats_url.clone(),
                nats_stream.clone(),
                nats_prefix.clone(),
            )
        }),
    };
    eprintln!("postgres: starting warden serve");
    let srv = Server::start(&config).await?;
    let api = Api::new(&srv.base, n)?;
    let result = postgres_main_on(args, &api, &run.pool, receivers, &nats_prefix).await;
    let rss = srv.peak_rss_kib();
    srv.stop().await?;
    if !args.no_nats {
        if let Ok(client) = async_nats::connect(&args.nats_url).await {
            let _ = async_nats::jetstream::new(client)
                .delete_stream(&nats_stream)
                .await;
        }
    }
    pg_cleanup(args, run).await;
    let mut rows = result?;
    rows.push(rss_row("Postgres server peak RSS (all loads above)", rss));
    Ok(rows)
}

async fn postgres_main_on(
    args: &BenchArgs,
    api: &Api,
    pool: &PgPool,
    receivers: &Receivers,
    nats_prefix: &str,
) -> anyhow::Result<Vec<Row>> {
    let n = args.connections.max(1);
    let phase = args.phase();
    let mut rows = Vec::new();
    eprintln!("postgres: signing up {n} owners");
    let mut owners = Vec::with_capacity(n);
    for i in 0..n {
        owners.push(api.owner(&i.to_string()).await.map_err(|e| anyhow!(e))?);
    }
    let token = owners.first().map(|(_, t)| t.clone()).context("no owner")?;
    let own_profiles = profiles(api, &token, n, None).await?;

    eprintln!("postgres: INSERT baseline");
    let inserts = insert_baseline(pool, n, phase).await?;
    eprintln!("postgres: SendVerification + check, one profile per connection");
    let verify = verify_load(
        api,
        receivers,
        &token,
        &own_profiles,
        0,
        n,
        phase,
        Mode::Closed,
    )
    .await;
    check_errors("SendVerification", &verify)?;
    rows.push(throughput_row(
        &format!("Postgres SendVerification + check, {n} conns, a profile each (commands)"),
        &verify,
        "cmd",
        &inserts,
        "single-row INSERTs",
        0.5,
    ));
    eprintln!("postgres: SendVerification + check, all on one profile");
    let shared = own_profiles.get(..1).unwrap_or_default();
    let hot = verify_load(api, receivers, &token, shared, 3, n, phase, Mode::Closed).await;
    check_errors("SendVerification (one profile)", &hot)?;
    rows.push(
        throughput_row(
            &format!("Postgres SendVerification + check, {n} conns, ONE shared profile (commands)"),
            &hot,
            "cmd",
            &inserts,
            "single-row INSERTs",
            0.5,
        )
        .informational("one profile stream"),
    );

    eprintln!("postgres: GET /healthz vs GET /v2/users/me");
    let a = api.clone();
    let health = load::run(n, phase, Mode::Closed, move |_, _| {
        let a = a.clone();
        async move { a.get("/healthz", None).await.map(|_| 1) }
    })
    .await;
    check_errors("healthz", &health)?;
    let tokens: Arc<Vec<String>> = Arc::new(owners.iter().map(|(_, t)| t.clone()).collect());
    let (a, t) = (api.clone(), Arc::clone(&tokens));
    let me = load::run(n, phase, Mode::Closed, move |w, _| {
        let (a, t) = (a.clone(), Arc::clone(&t));
        async move {
            let token = t.get(w % t.len().max(1)).cloned().unwrap_or_default();
            a.get("/v2/users/me", Some(&token)).await.map(|_| 1)
        }
    })
    .await;
    check_errors("users/me", &me)?;
    rows.push(throughput_row(
        &format!("Postgres GET /v2/users/me, {n} conns"),
        &me,
        "req",
        &health,
        "GET /healthz",
        0.5,
    ));

    eprintln!("postgres: argon2id baseline vs password sign-in");
    let argon = tokio::task::spawn_blocking(move || argon2_baseline(phase, false)).await??;
    let argon_kept = tokio::task::spawn_blocking(move || argon2_baseline(phase, true)).await??;
    let emails: Arc<Vec<String>> = Arc::new(owners.iter().map(|(e, _)| e.clone()).collect());
    let (a, e) = (api.clone(), Arc::clone(&emails));
    let sign_in = load::run(n, phase, Mode::Closed, move |w, _| {
        let (a, e) = (a.clone(), Arc::clone(&e));
        async move {
            let email = e.get(w % e.len().max(1)).cloned().unwrap_or_default();
            a.sign_in(&email).await.map(|_| 1)
        }
    })
    .await;
    check_errors("sign-in", &sign_in)?;
    rows.push(throughput_row(
        &format!("Postgres password sign-in, {n} conns"),
        &sign_in,
        "req",
        &argon,
        "raw argon2id verifies",
        0.8,
    ));
    // The server keeps its argon2 buffer while sign-ins queue; against the library call,
    // which maps a fresh one each time, that alone is worth a third. This row compares
    // like with like.
    rows.push(
        throughput_row(
            &format!("Postgres password sign-in, {n} conns (vs argon2id with a kept buffer)"),
            &sign_in,
            "req",
            &argon_kept,
            "raw argon2id verifies, buffer kept",
            0.8,
        )
        .informational("like for like"),
    );

    // Append → publish / deliver latency at half of the Verify peak.
    let op_rate = verify.rate() / 2.0; // two commands per round
    let half = (op_rate / 2.0).max(1.0);
    eprintln!("postgres: append -> NATS / webhook latency at {half:.0} rounds/s");
    let hook_profiles = profiles(api, &token, n, Some(&receivers.webhook_url)).await?;
    wait_caught_up(api, pool, !args.no_nats, Duration::from_secs(120)).await?;
    let nats_latencies: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let recording = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut subscriber_task = None;
    if !args.no_nats {
        let client = async_nats::connect(&args.nats_url).await?;
        let mut sub = client.subscribe(format!("{nats_prefix}.>")).await?;
        client.flush().await?;
        let (lat, rec) = (Arc::clone(&nats_latencies), Arc::clone(&recording));
        subscriber_task = Some(tokio::spawn(async move {
            let _client = client;
            while let Some(msg) = sub.next().await {
                if !rec.load(std::sync::atomic::Ordering::Relaxed) {
                    continue;
                }
                let at = serde_json::from_slice::<serde_json::Value>(&msg.payload)
                    .ok()
                    .and_then(|v| {
                        v.pointer("/recorded_at")
                            .unwrap_or(&serde_json::Value::Null)
                            .as_str()
                            .and_then(since)
                    });
                if let Some(at) = at {
                    lat.lock().unwrap_or_else(|p| p.into_inner()).push(at);
                }
            }
        }));
    }
    recording.store(true, std::sync::atomic::Ordering::Relaxed);
    receivers.record_webhooks(true);
    let paced = verify_load(
        api,
        receivers,
        &token,
        &hook_profiles,
        1,
        n,
        phase,
        Mode::Paced { rate: half },
    )
    .await;
    check_errors("paced SendVerification", &paced)?;
    // Let the last deliveries land.
    tokio::time::sleep(Duration::from_secs(2)).await;
    recording.store(false, std::sync::atomic::Ordering::Relaxed);
    receivers.record_webhooks(false);
    if let Some(task) = subscriber_task {
        task.abort();
    }
    let load_note = format!("{} at half peak", per_sec(paced.rate(), "cmd"));
    if !args.no_nats {
        let lat = nats_latencies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let p99 = super::quantile(&lat, 0.99);
        rows.push(Row {
            scenario: format!("Postgres append -> NATS publish ({} events)", lat.len()),
            throughput: load_note.clone(),
            p50: ms(super::quantile(&lat, 0.5)),
            p99: ms(p99),
            target: "p99 <= 50 ms".into(),
            pass: Some(!lat.is_empty() && p99.is_some_and(|p| p <= Duration::from_millis(50))),
            ..Row::default()
        });
    }
    let hooks = receivers.webhook_latencies();
    let p99 = super::quantile(&hooks, 0.99);
    rows.push(Row {
        scenario: format!(
            "Postgres append -> webhook delivered ({} events)",
            hooks.len()
        ),
        throughput: load_note,
        p50: ms(super::quantile(&hooks, 0.5)),
        p99: ms(p99),
        target: "p99 <= 250 ms".into(),
        pass: Some(!hooks.is_empty() && p99.is_some_and(|p| p <= Duration::from_millis(250))),
        ..Row::default()
    });
    Ok(rows)
}

/// Appends filler events to the user stream of the account `user_id` until it holds
/// `total` events, in one transaction under the store's append lock, continuing the hash
/// chain (so `warden audit verify` still passes) and the gapless global positions.
async fn seed_long_stream(pool: &PgPool, user_id: &str, total: i64) -> anyhow::Result<()> {
    use warden_domain::chain::{compute_hash, format_time, RawEvent};
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(warden_infra::store::APPEND_LOCK_KEY)
        .execute(&mut *tx)
        .await?;
    let stream_id: String = sqlx::query(
        "SELECT stream_id FROM events WHERE event_type = 'user.registered' AND stream_id LIKE $1",
    )
    .bind(format!("%{user_id}"))
    .fetch_one(&mut *tx)
    .await
    .context("finding the user stream")?
    .try_get("stream_id")?;
    let head = sqlx::query(
        "SELECT stream_type, version, hash, metadata FROM events WHERE stream_id = $1 \
         ORDER BY version DESC LIMIT 1",
    )
    .bind(&stream_id)
    .fetch_one(&mut *tx)
    .await?;
    let stream_type: String = head.try_get("stream_type")?;
    let mut version: i64 = head.try_get("version")?;
    let mut prev_hash: String = head.try_get("hash")?;
    let metadata: String = head.try_get("metadata")?;
    let mut position: i64 =
        sqlx::query("SELECT COALESCE(MAX(global_position), 0) AS head FROM events")
            .fetch_one(&mut *tx)
            .await?
            .try_get("head")?;
    let recorded_at = format_time(chrono::Utc::now());
    while version < total {
        let mut chunk = Vec::new();
        while version < total && chunk.len() < 4_000 {
            version += 1;
            position += 1;
            let mut raw = RawEvent {
                event_id: uuid::Uuid::now_v7().to_string(),
                stream_id: stream_id.clone(),
                stream_type: stream_type.clone(),
                version,
                event_type: "user.profile_updated".into(),
                schema_version: 1,
                recorded_at: recorded_at.clone(),
                payload: "{}".into(),
                metadata: metadata.clone(),
                prev_hash: prev_hash.clone(),
                hash: String::new(),
            };
            raw.hash = compute_hash(&prev_hash, &raw);
            prev_hash = raw.hash.clone();
            chunk.push((position, raw));
        }
        let mut q = QueryBuilder::new(
            "INSERT INTO events (global_position, event_id, stream_id, stream_type, version, \
             event_type, schema_version, recorded_at, payload, metadata, prev_hash, hash) ",
        );
        q.push_values(chunk, |mut b, (pos, raw)| {
            b.push_bind(pos)
                .push_bind(raw.event_id)
                .push_bind(raw.stream_id)
                .push_bind(raw.stream_type)
                .push_bind(raw.version)
                .push_bind(raw.event_type)
                .push_bind(i64::from(raw.schema_version))
                .push_bind(raw.recorded_at)
                .push_bind(raw.payload)
                .push_bind(raw.metadata)
                .push_bind(raw.prev_hash)
                .push_bind(raw.hash);
        });
        q.build().execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Sequential `PATCH /v2/users/me` on one account for one phase.
async fn patch_loop(api: &Api, token: &str, phase: Duration) -> Stats {
    let (a, t) = (api.clone(), token.to_owned());
    load::run(1, phase, Mode::Closed, move |_, i| {
        let (a, t) = (a.clone(), t.clone());
        async move {
            a.call(
                reqwest::Method::PATCH,
                "/v2/users/me",
                Some(&t),
                Some(json!({ "first_name": format!("Ada{}", i % 97) })),
                200,
            )
            .await
            .map(|_| 1)
        }
    })
    .await
}

/// Postgres, in-process bus: a command on a long stream vs a short one (snapshots), then
/// `warden projections rebuild` vs a raw sequential read of the events table.
pub async fn postgres_long_stream(
    args: &BenchArgs,
    exe: &Path,
    receivers: &Receivers,
) -> anyhow::Result<Vec<Row>> {
    let run = pg_run(args, "pg-long").await?;
    let config = ServerConfig {
        exe: exe.to_owned(),
        data_dir: run.dir.clone(),
        database_url: Some(run.db_url.clone()),
        sender_url: receivers.sender_url.clone(),
        nats: None,
    };
    let result = long_stream_on(args, &config, &run.pool).await;
    pg_cleanup(args, run).await;
    result
}

async fn long_stream_on(
    args: &BenchArgs,
    config: &ServerConfig,
    pool: &PgPool,
) -> anyhow::Result<Vec<Row>> {
    let phase = args.phase();
    let total = args.long_stream();
    eprintln!("postgres: seeding a {total}-event stream");
    let srv = Server::start(config).await?;
    let api = Api::new(&srv.base, 2)?;
    let (_, long_token) = api.owner("long").await.map_err(|e| anyhow!(e))?;
    let (_, short_token) = api.owner("short").await.map_err(|e| anyhow!(e))?;
    let me = api
        .get("/v2/users/me", Some(&long_token))
        .await
        .map_err(|e| anyhow!(e))?;
    let user_id = me
        .pointer("/data/id")
        .unwrap_or(&serde_json::Value::Null)
        .as_str()
        .context("users/me without an id")?
        .to_owned();
    // Ten events on the short stream, like a fresh account's.
    for i in 0..4 {
        api.call(
            reqwest::Method::PATCH,
            "/v2/users/me",
            Some(&short_token),
            Some(json!({ "first_name": format!("Short{i}") })),
            200,
        )
        .await
        .map_err(|e| anyhow!(e))?;
    }
    let seeding = Instant::now();
    seed_long_stream(pool, &user_id, total).await?;
    eprintln!(
        "  seeded in {:.1} s; waiting for the read models",
        seeding.elapsed().as_secs_f64()
    );
    wait_caught_up(&api, pool, false, Duration::from_secs(600)).await?;
    // The first command on the long stream replays it once and leaves a snapshot.
    let warm = Instant::now();
    for token in [&long_token, &short_token] {
        let _ = patch_loop(&api, token, Duration::from_millis(1)).await;
    }
    eprintln!(
        "  first commands (snapshot written) in {:.1} s",
        warm.elapsed().as_secs_f64()
    );
    let short = patch_loop(&api, &short_token, phase).await;
    check_errors("short-stream command", &short)?;
    let long = patch_loop(&api, &long_token, phase).await;
    check_errors("long-stream command", &long)?;
    let (p_long, p_short) = (long.quantile(0.5), short.quantile(0.5));
    let r = match (p_long, p_short) {
        (Some(l), Some(s)) if !s.is_zero() => l.as_secs_f64() / s.as_secs_f64(),
        _ => f64::INFINITY,
    };
    let mut rows = vec![Row {
        scenario: format!("Postgres PATCH /v2/users/me on a {total}-event stream (p50)"),
        throughput: per_sec(long.rate(), "cmd"),
        p50: ms(p_long),
        p99: ms(long.quantile(0.99)),
        baseline: format!("p50 {} on a ~10-event stream", ms(p_short)),
        ratio: format!("{r:.2}"),
        target: "<= 1.5".into(),
        pass: Some(r <= 1.5),
        ..Row::default()
    }];
    let rss = srv.peak_rss_kib();
    srv.stop().await?;
    rows.push(rss_row("Postgres server peak RSS (long stream)", rss));

    eprintln!("postgres: raw read vs projections rebuild");
    let head: i64 = sqlx::query("SELECT COALESCE(MAX(global_position), 0) AS head FROM events")
        .fetch_one(pool)
        .await?
        .try_get("head")?;
    let read_started = Instant::now();
    let mut rows_read = 0u64;
    {
        let mut stream = sqlx::query("SELECT * FROM events ORDER BY global_position").fetch(pool);
        while let Some(row) = stream.next().await {
            let row = row?;
            let _payload: String = row.try_get("payload")?;
            rows_read += 1;
        }
    }
    let raw = Stats {
        units: rows_read,
        elapsed: read_started.elapsed(),
        ..Stats::default()
    };
    let took = server::rebuild(config).await?;
    let rebuild = Stats {
        units: u64::try_from(head).unwrap_or(0),
        elapsed: took,
        ..Stats::default()
    };
    let r = ratio(rebuild.rate(), raw.rate());
    rows.push(Row {
        scenario: format!("Postgres `warden projections rebuild` (all read models, {head} events)"),
        throughput: per_sec(rebuild.rate(), "events"),
        baseline: format!("{} raw sequential read", per_sec(raw.rate(), "rows")),
        ratio: format!("{r:.2}"),
        target: ">= 0.25".into(),
        pass: Some(r >= 0.25),
        ..Row::default()
    });
    Ok(rows)
}

/// Embedded SQLite: Verify throughput and peak RSS.
pub async fn sqlite(
    args: &BenchArgs,
    exe: &Path,
    receivers: &Receivers,
) -> anyhow::Result<Vec<Row>> {
    let n = args.connections.max(1);
    let dir = server::scratch_dir("sqlite");
    let config = ServerConfig {
        exe: exe.to_owned(),
        data_dir: dir.clone(),
        database_url: None,
        sender_url: receivers.sender_url.clone(),
        nats: None,
    };
    eprintln!("sqlite: starting warden serve");
    let srv = Server::start(&config).await?;
    let result = async {
        let api = Api::new(&srv.base, n)?;
        let (_, token) = api.owner("sqlite").await.map_err(|e| anyhow!(e))?;
        let own_profiles = profiles(&api, &token, n, None).await?;
        eprintln!("sqlite: SendVerification + check");
        let stats = verify_load(
            &api,
            receivers,
            &token,
            &own_profiles,
            2,
            n,
            args.phase(),
            Mode::Closed,
        )
        .await;
        check_errors("SQLite SendVerification", &stats)?;
        Ok::<_, anyhow::Error>(Row {
            scenario: format!(
                "SQLite SendVerification + check, {n} conns, a profile each (commands)"
            ),
            throughput: per_sec(stats.rate(), "cmd"),
            p50: ms(stats.quantile(0.5)),
            p99: ms(stats.quantile(0.99)),
            target: ">= 1000 cmd/s".into(),
            pass: Some(stats.rate() >= 1000.0),
            ..Row::default()
        })
    }
    .await;
    let rss = srv.peak_rss_kib();
    srv.stop().await?;
    if args.keep {
        eprintln!("  kept {}", dir.display());
    } else {
        server::remove_dir(&dir);
    }
    Ok(vec![
        result?,
        rss_row("SQLite server peak RSS (under load)", rss),
    ])
}
