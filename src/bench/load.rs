//! The load generator: N concurrent workers, each running one operation after another
//! (closed loop) or on a fixed schedule (paced), for a fixed time; every operation's
//! latency is kept so percentiles are exact.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a run produced.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Units of work done (commands, requests, rows): an operation may count several.
    pub units: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    /// One entry per successful operation.
    pub latencies: Vec<Duration>,
}

impl Stats {
    /// Units per second.
    pub fn rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.units as f64 / secs
        } else {
            0.0
        }
    }

    /// The `q` quantile (0..=1) of the latencies.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        quantile(&self.latencies, q)
    }
}

/// The `q` quantile (nearest rank) of unsorted samples.
pub fn quantile(samples: &[Duration], q: f64) -> Option<Duration> {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let last = sorted.len().checked_sub(1)?;
    let rank = ((last as f64) * q.clamp(0.0, 1.0)).round() as usize;
    sorted.get(rank.min(last)).copied()
}

/// How operations are issued.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// Each worker starts its next operation as soon as the previous one ends.
    Closed,
    /// The workers together start `rate` operations per second, evenly spaced.
    Paced { rate: f64 },
}

/// Runs `op(worker, iteration)` on `workers` concurrent tasks for `duration`. An
/// operation returns how many units it did, or an error (counted, not retried).
pub async fn run<F, Fut>(workers: usize, duration: Duration, mode: Mode, op: F) -> Stats
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<u64, String>> + Send + 'static,
{
    let op = Arc::new(op);
    let shared = Arc::new(Mutex::new(Stats::default()));
    let start = Instant::now();
    let deadline = start + duration;
    let interval = match mode {
        Mode::Closed => None,
        Mode::Paced { rate } if rate > 0.0 => Some(Duration::from_secs_f64(workers as f64 / rate)),
        Mode::Paced { .. } => Some(duration),
    };
    let mut tasks = Vec::with_capacity(workers);
    for worker in 0..workers {
        let op = Arc::clone(&op);
        let shared = Arc::clone(&shared);
        tasks.push(tokio::spawn(async move {
            let mut local = Stats::default();
            // Paced workers are staggered across one interval.
            let offset = interval
                .map(|i| i.mul_f64(worker as f64 / workers.max(1) as f64))
                .unwrap_or_default();
            let mut iteration = 0u64;
            loop {
                if let Some(interval) = interval {
                    let due = start + offset + interval.mul_f64(iteration as f64);
                    if due >= deadline {
                        break;
                    }
                    tokio::time::sleep_until(due.into()).await;
                } else if Instant::now() >= deadline {
                    break;
                }
                let began = Instant::now();
                match op(worker, iteration).await {
                    Ok(units) => {
                        local.units += units;
                        local.latencies.push(began.elapsed());
                    }
                    Err(e) => {
                        local.errors += 1;
                        local.first_error.get_or_insert(e);
                    }
                }
                iteration += 1;
            }
            let mut all = shared.lock().unwrap_or_else(|p| p.into_inner());
            all.units += local.units;
            all.errors += local.errors;
            if all.first_error.is_none() {
                all.first_error = local.first_error;
            }
            all.latencies.extend(local.latencies);
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let mut stats = std::mem::take(&mut *shared.lock().unwrap_or_else(|p| p.into_inner()));
    stats.elapsed = start.elapsed();
    stats
}
