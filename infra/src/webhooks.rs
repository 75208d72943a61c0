//! The webhook dispatcher: sends due rows of the durable delivery queue
//! (`webhook_deliveries`), signed by their scheme, to their URL and then their failover URL,
//! records every attempt (`webhook_attempts`) and retries with growing, jittered pauses
//! until delivered or out of attempts. Generic: a producer chooses the scheme.
//!
//! Schemes: `telnyx_ed25519` — body `{"data": <event>, "meta": {"attempt", "delivered_to"}}`,
//! headers `telnyx-signature-ed25519` (base64 Ed25519 over `"{timestamp}|{body}"`) and
//! `telnyx-timestamp`. The organization's signing key is derived from the server pepper
//! (HMAC-SHA256 keyed by it, domain-separated), so no key is stored or logged and every node
//! derives the same one.
//!
//! The schedule is computed here rather than with a retry crate: retries are durable rows
//! picked up by any node, not a loop in one process.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use ed25519_dalek::{Signer as _, SigningKey};
use rand::Rng;
use serde_json::{json, Value};
use sqlx::{AnyPool, FromRow};
use tokio::sync::watch;
use uuid::Uuid;
use warden_commands::{Clock, Secrets};
use warden_domain::chain::format_time;
use zeroize::Zeroizing;

use crate::db::{Backend, Database};

/// Attempts (each trying the URL, then the failover URL) before a delivery is given up.
pub const MAX_ATTEMPTS: i64 = 8;
/// Pause before retry n (1-based), before jitter: 5 s, 30 s, 2 min, 10 min, 30 min, 1 h, 2 h.
const BACKOFF_SECS: [i64; 7] = [5, 30, 120, 600, 1800, 3600, 7200];
const BATCH: i64 = 20;
const POLL: Duration = Duration::from_millis(250);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a claimed row stays hidden from other dispatchers: one attempt (the URL and the
/// failover URL, each bounded by [`REQUEST_TIMEOUT`]) plus a margin. The lease is renewed
/// (compare-and-set on `locked_until`) right before each attempt, so a batch that takes
/// longer never attempts a row another node has taken over, and the rows of a node that
/// died become due again within this time.
const LEASE_SECS: i64 = 25;

/// The organization's Telnyx-style signing key, derived from the server pepper.
pub fn telnyx_signing_key(secrets: &dyn Secrets, organization_id: Uuid) -> SigningKey {
    let digest = Zeroizing::new(
        secrets
            .keyed_digest("webhook_signing_key_ed25519", &organization_id.to_string())
            .0,
    );
    let mut seed = Zeroizing::new([0u8; 32]);
    // A keyed digest is 64 hex digits, so this always fills the seed.
    let _ = hex::decode_to_slice(digest.as_bytes(), seed.as_mut());
    SigningKey::from_bytes(&seed)
}

/// Base64 of the organization's 32-byte Ed25519 public key (`GET /v2/public_key`).
pub fn telnyx_public_key(secrets: &dyn Secrets, organization_id: Uuid) -> String {
    STANDARD.encode(
        telnyx_signing_key(secrets, organization_id)
            .verifying_key()
            .to_bytes(),
    )
}

#[derive(Debug, Clone, FromRow)]
struct Due {
    delivery_id: String,
    organization_id: String,
    scheme: String,
    url: String,
    failover_url: Option<String>,
    data: String,
    attempts: i64,
}

/// One request of an attempt: (url, status, error, when).
type Tried<'a> = (&'a str, Option<i64>, Option<String>, DateTime<Utc>);

/// What one attempt found, to be written.
struct Recorded<'a> {
    delivery_id: &'a str,
    attempt: i64,
    tried: &'a [Tried<'a>],
    status: &'static str,
    next: String,
    delivered_to: Option<&'a str>,
    last: &'a Outcome,
    now: String,
    lease: &'a str,
}

/// One HTTP request of an attempt.
struct Outcome {
    status: Option<i64>,
    error: Option<String>,
}

impl Outcome {
    fn ok(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

pub struct Dispatcher {
    pool: AnyPool,
    backend: Backend,
    secrets: Arc<dyn Secrets>,
    clock: Arc<dyn Clock>,
    http: reqwest::Client,
    /// Development only: webhooks may reach loopback and private addresses.
    allow_private: bool,
    /// Retry pauses in percent of [`BACKOFF_SECS`] (100 in production; fault tests use
    /// less so a receiver's outage ends within seconds).
    backoff_percent: u32,
}

impl Dispatcher {
    /// `allow_private` lets webhooks reach loopback and private addresses (development);
    /// otherwise only public addresses are ever connected to (SSRF guard).
    pub fn new(
        db: &Database,
        secrets: Arc<dyn Secrets>,
        clock: Arc<dyn Clock>,
        allow_private: bool,
    ) -> Self {
        let mut builder = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none());
        if !allow_private {
            builder = builder.dns_resolver(Arc::new(crate::ssrf::PublicOnlyResolver));
        }
        let http = builder.build().unwrap_or_default();
        Self {
            pool: db.pool.clone(),
            backend: db.backend,
            secrets,
            clock,
            http,
            allow_private,
            backoff_percent: 100,
        }
    }

    /// Scales the retry pauses to `percent` of the schedule (1..=100; development only).
    pub fn with_backoff_percent(mut self, percent: u32) -> Self {
        self.backoff_percent = percent.clamp(1, 100);
        self
    }

    /// Delivers due rows until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            if *shutdown.borrow() {
                return;
            }
            match self.deliver_due().await {
                Ok(n) if n > 0 => continue,
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "webhook dispatch failed; retrying"),
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// Claims and attempts one batch of due deliveries; returns how many.
    pub async fn deliver_due(&self) -> Result<usize, sqlx::Error> {
        let (lease, due) = self.claim().await?;
        for row in &due {
            // Renew this row's lease first: if it ran out while earlier rows of the batch
            // were attempted and another node claimed the row, skip it.
            if let Some(lease) = self.renew(&row.delivery_id, &lease).await? {
                self.attempt(row, &lease).await?;
            }
        }
        Ok(due.len())
    }

    /// Leases due rows (`FOR UPDATE SKIP LOCKED` on Postgres, so dispatchers on several
    /// nodes never take the same row; SQLite has a single writer).
    /// Returns the lease (the `locked_until` written) with the rows.
    async fn claim(&self) -> Result<(String, Vec<Due>), sqlx::Error> {
        let now = self.clock.now();
        let lease = format_time(now + chrono::Duration::seconds(LEASE_SECS));
        let skip_locked = match self.backend {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        sqlx::query_as::<_, Due>(&format!(
            "UPDATE webhook_deliveries SET locked_until = $2 WHERE delivery_id IN (\
               SELECT delivery_id FROM webhook_deliveries WHERE status = 'pending' \
               AND next_attempt_at <= $1 AND (locked_until IS NULL OR locked_until <= $1) \
               ORDER BY next_attempt_at LIMIT $3{skip_locked}) \
             RETURNING delivery_id, organization_id, scheme, url, failover_url, data, attempts"
        ))
        .bind(format_time(now))
        .bind(&lease)
        .bind(BATCH)
        .fetch_all(&self.pool)
        .await
        .map(|rows| (lease, rows))
    }

    /// Extends this node's lease on a row, if it still holds it (`locked_until` unchanged
    /// since it wrote it). Returns the new lease, or `None` when another node took the row
    /// over or it is no longer pending.
    async fn renew(&self, delivery_id: &str, lease: &str) -> Result<Option<String>, sqlx::Error> {
        let renewed = format_time(self.clock.now() + chrono::Duration::seconds(LEASE_SECS));
        let done = sqlx::query(
            "UPDATE webhook_deliveries SET locked_until = $3 \
             WHERE delivery_id = $1 AND locked_until = $2 AND status = 'pending'",
        )
        .bind(delivery_id)
        .bind(lease)
        .bind(&renewed)
        .execute(&self.pool)
        .await?;
        Ok((done.rows_affected() == 1).then_some(renewed))
    }

    async fn attempt(&self, row: &Due, lease: &str) -> Result<(), sqlx::Error> {
        let attempt = row.attempts + 1;
        let data: Value = serde_json::from_str(&row.data).unwrap_or(Value::Null);
        let urls = std::iter::once(row.url.as_str()).chain(row.failover_url.as_deref());
        let mut last = Outcome {
            status: None,
            error: None,
        };
        let mut delivered_to = None;
        let mut tried = Vec::with_capacity(2);
        for url in urls {
            let now = self.clock.now();
            last = self.post(row, &data, attempt, url, now).await;
            tried.push((url, last.status, last.error.clone(), now));
            if last.ok() {
                delivered_to = Some(url.to_owned());
                break;
            }
        }
        let now = self.clock.now();
        let (status, next) = match &delivered_to {
            Some(_) => ("delivered", now),
            None if attempt >= MAX_ATTEMPTS => ("failed", now),
            None => (
                "pending",
                now + scaled(backoff(attempt), self.backoff_percent),
            ),
        };
        if delivered_to.is_none() {
            tracing::info!(delivery_id = %row.delivery_id, attempt, status, "webhook not delivered");
        }
        let outcome = Recorded {
            delivery_id: &row.delivery_id,
            attempt,
            tried: &tried,
            status,
            next: format_time(next),
            delivered_to: delivered_to.as_deref(),
            last: &last,
            now: format_time(now),
            lease,
        };
        // The receiver has answered: record it even if the database is briefly away (a
        // restart), or the delivery would be sent again once the lease ran out.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(LEASE_SECS as u64);
        loop {
            match self.record(&outcome).await {
                Ok(true) => return Ok(()),
                Ok(false) => {
                    tracing::warn!(delivery_id = %row.delivery_id, "webhook lease lost during an attempt; outcome left to the node holding it");
                    return Ok(());
                }
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(error = %e, "recording a webhook attempt failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes an attempt's requests and the delivery's new state in one transaction, only
    /// while this node still holds the lease (a node whose lease ran out must not overwrite
    /// the outcome of the node that took the row over). Returns whether it held it.
    async fn record(&self, r: &Recorded<'_>) -> Result<bool, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let saved = sqlx::query(
            "UPDATE webhook_deliveries SET status = $2, attempts = $3, next_attempt_at = $4, \
             locked_until = NULL, delivered_to = $5, last_status = $6, last_error = $7, updated_at = $8 \
             WHERE delivery_id = $1 AND locked_until = $9",
        )
        .bind(r.delivery_id)
        .bind(r.status)
        .bind(r.attempt)
        .bind(&r.next)
        .bind(r.delivered_to)
        .bind(r.last.status)
        .bind(r.last.error.as_deref())
        .bind(&r.now)
        .bind(r.lease)
        .execute(&mut *tx)
        .await?;
        if saved.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        for (url, status, error, at) in r.tried {
            sqlx::query(
                "INSERT INTO webhook_attempts (delivery_id, attempt, url, status_code, error, attempted_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (delivery_id, attempt, url) DO NOTHING",
            )
            .bind(r.delivery_id)
            .bind(r.attempt)
            .bind(*url)
            .bind(*status)
            .bind(error.as_deref())
            .bind(format_time(*at))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn post(
        &self,
        row: &Due,
        data: &Value,
        attempt: i64,
        url: &str,
        now: DateTime<Utc>,
    ) -> Outcome {
        let signed = match row.scheme.as_str() {
            "telnyx_ed25519" => Uuid::parse_str(&row.organization_id)
                .map(|org| self.telnyx(org, data, attempt, url, now))
                .map_err(|e| e.to_string()),
            other => Err(format!("unknown signing scheme {other}")),
        };
        let (body, headers) = match signed {
            Ok(s) => s,
            Err(error) => {
                return Outcome {
                    status: None,
                    error: Some(error),
                }
            }
        };
        if !self.allow_private {
            if let Err(e) = crate::ssrf::check_url_text(url) {
                return Outcome {
                    status: None,
                    error: Some(e.to_string()),
                };
            }
        }
        let mut request = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .body(body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        match request.send().await {
            Ok(response) => Outcome {
                status: Some(i64::from(response.status().as_u16())),
                error: None,
            },
            Err(e) => Outcome {
                status: None,
                // reqwest's text names the URL, never a body or a key.
                error: Some(e.without_url().to_string()),
            },
        }
    }

    /// The Telnyx envelope for this attempt and its signature headers.
    fn telnyx(
        &self,
        organization_id: Uuid,
        data: &Value,
        attempt: i64,
        url: &str,
        now: DateTime<Utc>,
    ) -> (String, Vec<(&'static str, String)>) {
        let body = json!({
            "data": data,
            "meta": { "attempt": attempt, "delivered_to": url },
        })
        .to_string();
        let timestamp = now.timestamp().to_string();
        let key = telnyx_signing_key(self.secrets.as_ref(), organization_id);
        let mut message = Vec::with_capacity(timestamp.len() + 1 + body.len());
        message.extend_from_slice(timestamp.as_bytes());
        message.push(b'|');
        message.extend_from_slice(body.as_bytes());
        let signature = STANDARD.encode(key.sign(&message).to_bytes());
        (
            body,
            vec![
                ("telnyx-signature-ed25519", signature),
                ("telnyx-timestamp", timestamp),
            ],
        )
    }
}

/// The pause after failed attempt `attempt`, with up to 20% jitter so retries spread out.
fn backoff(attempt: i64) -> chrono::Duration {
    let index = usize::try_from(attempt.saturating_sub(1)).unwrap_or(0);
    let base = BACKOFF_SECS
        .get(index)
        .or(BACKOFF_SECS.last())
        .copied()
        .unwrap_or(60);
    let jitter = rand::thread_rng().gen_range(0..=base * 200) / 1000;
    chrono::Duration::seconds(base + jitter)
}

/// `pause` scaled to `percent` (100 = unchanged), at millisecond resolution.
fn scaled(pause: chrono::Duration, percent: u32) -> chrono::Duration {
    if percent >= 100 {
        return pause;
    }
    chrono::Duration::milliseconds(pause.num_milliseconds() * i64::from(percent) / 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_bounded() {
        assert!((5..=6).contains(&backoff(1).num_seconds()));
        assert!(backoff(3).num_seconds() >= 120);
        assert!(backoff(50).num_seconds() <= 7200 * 6 / 5);
    }

    #[test]
    fn scaled_backoff_is_a_fraction_of_the_schedule() {
        let pause = chrono::Duration::seconds(5);
        assert_eq!(scaled(pause, 100), pause);
        assert_eq!(scaled(pause, 2).num_milliseconds(), 100);
    }
}
