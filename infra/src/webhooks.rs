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
//! `standard_webhooks` (account-level endpoints, <https://www.standardwebhooks.com>) — the
//! stored body is sent byte for byte, with `webhook-id` (the event id, the same on every
//! retry and redelivery), `webhook-timestamp` (this attempt) and `webhook-signature`
//! (`v1,<base64 HMAC-SHA256("{id}.{timestamp}.{body}")>` under the endpoint's secret, and
//! under the previous secret too while a rotation's 24 hours run). The endpoint's current
//! URL and secrets are read at each attempt; a deleted or disabled endpoint's pending
//! deliveries fail without a request. Each endpoint's failure streak is kept in
//! `webhook_endpoint_health` for the disabling rule.
//!
//! The schedule is computed here rather than with a retry crate: retries are durable rows
//! picked up by any node, not a loop in one process.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as STANDARD_B64;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use ed25519_dalek::{Signer as _, SigningKey};
use hmac::{Hmac, Mac};
use rand::Rng;
use serde_json::{json, Value};
use sqlx::{AnyPool, FromRow};
use tokio::sync::{watch, Notify};
use uuid::Uuid;
use warden_commands::{Clock, Secrets};
use warden_domain::chain::format_time;
use warden_domain::Sealed;
use zeroize::Zeroizing;

use crate::db::{Backend, Database};

/// Attempts (each trying the URL, then the failover URL) before a delivery is given up.
pub const MAX_ATTEMPTS: i64 = 8;
/// Telnyx-style: pause before retry n (1-based), before jitter: 5 s, 30 s, 2 min, 10 min,
/// 30 min, 1 h, 2 h.
const BACKOFF_SECS: [i64; 7] = [5, 30, 120, 600, 1800, 3600, 7200];
/// Standard Webhooks: after the immediate first attempt, 5 s, 5 min, 30 min, 2 h, 5 h,
/// 10 h, 10 h (the spec's example schedule, cut at eight attempts; about 28 h in all).
const STANDARD_BACKOFF_SECS: [i64; 7] = [5, 300, 1800, 7200, 18_000, 36_000, 36_000];
/// Scheme names (as `warden_projections::webhooks` writes them).
const TELNYX: &str = "telnyx_ed25519";
const STANDARD: &str = "standard_webhooks";
const BATCH: i64 = 20;
const POLL: Duration = Duration::from_millis(250);
/// Attempts one dispatcher runs at once.
const IN_FLIGHT: usize = 8;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a claimed row stays hidden from other dispatchers: one attempt (the URL and the
/// failover URL, each bounded by [`REQUEST_TIMEOUT`]) plus a margin. Unless more than
/// [`attempt_budget`] of it is left, the lease is renewed (compare-and-set on
/// `locked_until`) right before an attempt, so a batch that takes longer never attempts a
/// row another node has taken over, and the rows of a node that died become due again
/// within this time.
const LEASE_SECS: i64 = 25;

/// The longest one attempt can take (its URL and the failover, each up to the request
/// timeout) plus room to record it. A row whose lease has more than this left is attempted
/// without renewing first: no other node can take it over before the attempt is recorded,
/// so the renewal would only cost a write (one per delivery, most of the dispatcher's).
fn attempt_budget() -> chrono::Duration {
    let timeout = i64::try_from(REQUEST_TIMEOUT.as_secs()).unwrap_or(i64::MAX / 4);
    chrono::Duration::seconds(2 * timeout + 2)
}

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
    STANDARD_B64.encode(
        telnyx_signing_key(secrets, organization_id)
            .verifying_key()
            .to_bytes(),
    )
}

#[derive(Debug, Clone, FromRow)]
struct Due {
    delivery_id: String,
    organization_id: String,
    event_id: String,
    scheme: String,
    url: String,
    failover_url: Option<String>,
    data: String,
    attempts: i64,
    endpoint_id: Option<String>,
}

/// What a delivery must stay in order with: the same URL and the same resource (the
/// event's stream for Standard Webhooks, the verification for Telnyx's envelope).
fn ordering_key(row: &Due) -> String {
    let data: Value = serde_json::from_str(&row.data).unwrap_or(Value::Null);
    let resource = data
        .pointer("/data/stream_id")
        .or_else(|| data.pointer("/payload/id"))
        .and_then(Value::as_str)
        .unwrap_or(&row.event_id);
    format!("{} {resource}", row.url)
}

/// An account-level endpoint as an attempt needs it.
#[derive(Debug, Clone, FromRow)]
struct Endpoint {
    url: String,
    enabled: i64,
    secret: String,
    previous_secret: Option<String>,
    previous_valid_until: Option<String>,
}

/// Where an attempt goes and what signs it.
enum Target {
    Send {
        urls: Vec<String>,
        /// HMAC keys (Standard Webhooks), newest first; empty for other schemes.
        keys: Vec<Zeroizing<Vec<u8>>>,
    },
    /// Nothing to send to any more (endpoint deleted or disabled): fail now, no retry.
    Gone(&'static str),
}

/// One request of an attempt: (url, status, error, when).
type Tried<'a> = (&'a str, Option<i64>, Option<String>, DateTime<Utc>);

/// What one attempt found, to be written.
struct Recorded<'a> {
    delivery_id: &'a str,
    attempt: i64,
    /// (url, status, error, when) of each request made.
    tried: &'a [Tried<'a>],
    status: &'static str,
    next: String,
    delivered_to: Option<&'a str>,
    last: &'a Outcome,
    now: String,
    /// When the delivery reached a final status (delivered or failed).
    finished: Option<String>,
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

/// A claim's lease: `locked_until` as written, and as a time.
struct Lease {
    text: String,
    until: DateTime<Utc>,
}

pub struct Dispatcher {
    pool: AnyPool,
    backend: Backend,
    secrets: Arc<dyn Secrets>,
    clock: Arc<dyn Clock>,
    http: reqwest::Client,
    /// Development only: webhooks may reach loopback and private addresses.
    allow_private: bool,
    /// Multiplies every retry pause (development only; 1 in production).
    retry_scale: f64,
    /// Rung when new deliveries may be queued, so they go out without waiting for a poll.
    wake: Arc<Notify>,
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
            retry_scale: 1.0,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Scales every retry pause (`WARDEN_WEBHOOK_RETRY_SCALE`, development only: the
    /// settings refuse anything but 1 in production), so local checks need not wait minutes.
    pub fn with_retry_scale(mut self, scale: f64) -> Self {
        if scale.is_finite() && scale > 0.0 {
            self.retry_scale = scale;
        }
        self
    }

    /// Shares a wake-up: ringing it makes an idle dispatcher look for due rows at once.
    pub fn with_wake(mut self, wake: Arc<Notify>) -> Self {
        self.wake = wake;
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
                _ = self.wake.notified() => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// Claims and attempts one batch of due deliveries; returns how many.
    ///
    /// Deliveries about one resource (a verification, a user, an endpoint) to one URL go
    /// in the order their events happened, one after another; different resources go at
    /// once, up to [`IN_FLIGHT`] at a time, so one slow receiver does not hold up the
    /// others and the dispatcher keeps up with a busy log (one attempt at a time capped it
    /// near 200 deliveries/s, measured with `warden bench`). A retried delivery may still
    /// arrive after later ones, as Telnyx and Standard Webhooks both warn.
    pub async fn deliver_due(&self) -> Result<usize, sqlx::Error> {
        use futures::stream::{FuturesUnordered, StreamExt};
        let (lease, mut due) = self.claim().await?;
        // Event ids are UUIDv7: in the order the events were recorded.
        due.sort_by(|a, b| a.event_id.cmp(&b.event_id));
        let mut chains: Vec<(String, Vec<&Due>)> = Vec::new();
        for row in &due {
            let key = ordering_key(row);
            match chains.iter_mut().find(|(k, _)| *k == key) {
                Some((_, chain)) => chain.push(row),
                None => chains.push((key, vec![row])),
            }
        }
        let mut chains = chains.into_iter().map(|(_, chain)| chain);
        let mut in_flight = FuturesUnordered::new();
        let mut first_error = None;
        loop {
            while in_flight.len() < IN_FLIGHT {
                let Some(chain) = chains.next() else { break };
                in_flight.push(self.deliver_chain(chain, &lease));
            }
            match in_flight.next().await {
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                None => break,
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(due.len()),
        }
    }

    /// Deliveries that must keep their order, one after another.
    async fn deliver_chain(&self, chain: Vec<&Due>, lease: &Lease) -> Result<(), sqlx::Error> {
        for row in chain {
            self.deliver_one(row, lease).await?;
        }
        Ok(())
    }

    /// One claimed row: renew its lease first (if it ran out while earlier rows were
    /// attempted and another node claimed the row, skip it), then attempt it.
    async fn deliver_one(&self, row: &Due, lease: &Lease) -> Result<(), sqlx::Error> {
        let fresh = lease.until - self.clock.now() > attempt_budget();
        let lease = if fresh {
            Some(lease.text.clone())
        } else {
            self.renew(&row.delivery_id, &lease.text).await?
        };
        if let Some(lease) = lease {
            self.attempt(row, &lease).await?;
        }
        Ok(())
    }

    /// Leases due rows (`FOR UPDATE SKIP LOCKED` on Postgres, so dispatchers on several
    /// nodes never take the same row; SQLite has a single writer).
    /// Returns the lease (the `locked_until` written) with the rows.
    async fn claim(&self) -> Result<(Lease, Vec<Due>), sqlx::Error> {
        let now = self.clock.now();
        let until = now + chrono::Duration::seconds(LEASE_SECS);
        let lease = Lease {
            text: format_time(until),
            until,
        };
        let skip_locked = match self.backend {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        sqlx::query_as::<_, Due>(&format!(
            "UPDATE webhook_deliveries SET locked_until = $2 WHERE delivery_id IN (\
               SELECT delivery_id FROM webhook_deliveries WHERE status = 'pending' \
               AND next_attempt_at <= $1 AND (locked_until IS NULL OR locked_until <= $1) \
               ORDER BY next_attempt_at LIMIT $3{skip_locked}) \
             RETURNING delivery_id, organization_id, event_id, scheme, url, failover_url, data, \
             attempts, endpoint_id"
        ))
        .bind(format_time(now))
        .bind(&lease.text)
        .bind(BATCH)
        .fetch_all(&self.pool)
        .await
        .map(|rows| (lease, rows))
    }

    /// The URLs (and keys) this attempt uses: for an account-level endpoint, its current
    /// URL and secrets; otherwise the row's own URLs.
    async fn target(&self, row: &Due, now: DateTime<Utc>) -> Result<Target, sqlx::Error> {
        if row.scheme != STANDARD {
            let urls = std::iter::once(row.url.clone())
                .chain(row.failover_url.clone())
                .collect();
            return Ok(Target::Send { urls, keys: vec![] });
        }
        let endpoint = sqlx::query_as::<_, Endpoint>(
            "SELECT url, enabled, secret, previous_secret, previous_valid_until \
             FROM webhook_endpoints WHERE endpoint_id = $1",
        )
        .bind(row.endpoint_id.as_deref().unwrap_or_default())
        .fetch_optional(&self.pool)
        .await?;
        let Some(endpoint) = endpoint else {
            return Ok(Target::Gone("the webhook endpoint was deleted"));
        };
        if endpoint.enabled == 0 {
            return Ok(Target::Gone("the webhook endpoint is disabled"));
        }
        let previous_valid = endpoint
            .previous_valid_until
            .as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .is_some_and(|t| now < t);
        let mut keys = Vec::new();
        let mut sealed = vec![endpoint.secret.clone()];
        if previous_valid {
            sealed.extend(endpoint.previous_secret.clone());
        }
        for text in &sealed {
            let Ok(sealed) = serde_json::from_str::<Sealed>(text) else {
                continue;
            };
            match self.secrets.open(&sealed).await {
                Ok(Some(bytes)) => keys.push(Zeroizing::new(bytes)),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "webhook secret could not be opened"),
            }
        }
        if keys.is_empty() {
            return Ok(Target::Gone("the webhook endpoint has no usable secret"));
        }
        Ok(Target::Send {
            urls: vec![endpoint.url],
            keys,
        })
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
        let mut last = Outcome {
            status: None,
            error: None,
        };
        let mut delivered_to = None;
        let (urls, keys, gone) = match self.target(row, self.clock.now()).await? {
            Target::Send { urls, keys } => (urls, keys, false),
            Target::Gone(why) => {
                last.error = Some(why.to_owned());
                (vec![row.url.clone()], vec![], true)
            }
        };
        let mut tried = Vec::with_capacity(2);
        for url in &urls {
            let now = self.clock.now();
            if !gone {
                last = self.post(row, &data, &keys, attempt, url, now).await;
            }
            tried.push((url.as_str(), last.status, last.error.clone(), now));
            if last.ok() {
                delivered_to = Some(url.clone());
                break;
            }
            if gone {
                break;
            }
        }
        let now = self.clock.now();
        let (status, next) = match &delivered_to {
            Some(_) => ("delivered", now),
            None if gone || attempt >= MAX_ATTEMPTS => ("failed", now),
            None => (
                "pending",
                now + scaled(backoff(&row.scheme, attempt), self.retry_scale),
            ),
        };
        if delivered_to.is_none() {
            tracing::info!(delivery_id = %row.delivery_id, attempt, status, "webhook not delivered");
        }
        let finished = (status != "pending").then(|| format_time(now));
        let outcome = Recorded {
            delivery_id: &row.delivery_id,
            attempt,
            tried: &tried,
            status,
            next: format_time(next),
            delivered_to: delivered_to.as_deref(),
            last: &last,
            now: format_time(now),
            finished,
            lease,
        };
        // The receiver has answered: record it even if the database is briefly away (a
        // restart), or the delivery would be sent again once the lease ran out.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(LEASE_SECS as u64);
        loop {
            match self.record(&outcome).await {
                Ok(true) => break,
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
        if let (Some(endpoint_id), false) = (&row.endpoint_id, gone) {
            self.record_health(endpoint_id, delivered_to.is_some(), &last, now)
                .await?;
        }
        Ok(())
    }

    /// Keeps the endpoint's failure streak: cleared by a success, started by the first failure.
    async fn record_health(
        &self,
        endpoint_id: &str,
        delivered: bool,
        last: &Outcome,
        now: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        if delivered {
            sqlx::query("DELETE FROM webhook_endpoint_health WHERE endpoint_id = $1")
                .bind(endpoint_id)
                .execute(&self.pool)
                .await?;
            return Ok(());
        }
        let error = match (last.status, &last.error) {
            (Some(status), _) => format!("HTTP {status}"),
            (None, Some(e)) => e.clone(),
            (None, None) => "no response".to_owned(),
        };
        sqlx::query(
            "INSERT INTO webhook_endpoint_health (endpoint_id, failing_since, last_error) \
             VALUES ($1, $2, $3) ON CONFLICT (endpoint_id) DO UPDATE SET last_error = excluded.last_error",
        )
        .bind(endpoint_id)
        .bind(format_time(now))
        .bind(error)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Writes an attempt's requests and the delivery's new state in one transaction, only
    /// while this node still holds the lease (a node whose lease ran out must not overwrite
    /// the outcome of the node that took the row over). Returns whether it held it.
    async fn record(&self, r: &Recorded<'_>) -> Result<bool, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let saved = sqlx::query(
            "UPDATE webhook_deliveries SET status = $2, attempts = $3, next_attempt_at = $4, \
             locked_until = NULL, delivered_to = $5, last_status = $6, last_error = $7, updated_at = $8, \
             finished_at = $10 WHERE delivery_id = $1 AND locked_until = $9",
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
        .bind(r.finished.as_deref())
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
        keys: &[Zeroizing<Vec<u8>>],
        attempt: i64,
        url: &str,
        now: DateTime<Utc>,
    ) -> Outcome {
        let signed = match row.scheme.as_str() {
            TELNYX => Uuid::parse_str(&row.organization_id)
                .map(|org| self.telnyx(org, data, attempt, url, now))
                .map_err(|e| e.to_string()),
            STANDARD => Ok(standard_webhooks(&row.event_id, &row.data, keys, now)),
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
        let signature = STANDARD_B64.encode(key.sign(&message).to_bytes());
        (
            body,
            vec![
                ("telnyx-signature-ed25519", signature),
                ("telnyx-timestamp", timestamp),
            ],
        )
    }
}

/// The Standard Webhooks body and headers of one attempt: the stored body byte for byte,
/// signed with every key (newest first), space-separated.
pub fn standard_webhooks(
    event_id: &str,
    body: &str,
    keys: &[Zeroizing<Vec<u8>>],
    now: DateTime<Utc>,
) -> (String, Vec<(&'static str, String)>) {
    let timestamp = now.timestamp().to_string();
    let signatures: Vec<String> = keys
        .iter()
        .filter_map(|key| {
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).ok()?;
            mac.update(event_id.as_bytes());
            mac.update(b".");
            mac.update(timestamp.as_bytes());
            mac.update(b".");
            mac.update(body.as_bytes());
            Some(format!(
                "v1,{}",
                STANDARD_B64.encode(mac.finalize().into_bytes())
            ))
        })
        .collect();
    (
        body.to_owned(),
        vec![
            ("webhook-id", event_id.to_owned()),
            ("webhook-timestamp", timestamp),
            ("webhook-signature", signatures.join(" ")),
        ],
    )
}

/// The pause after failed attempt `attempt` of a delivery of `scheme`, with up to 20%
/// jitter so retries spread out.
fn backoff(scheme: &str, attempt: i64) -> chrono::Duration {
    let schedule: &[i64] = if scheme == STANDARD {
        &STANDARD_BACKOFF_SECS
    } else {
        &BACKOFF_SECS
    };
    let index = usize::try_from(attempt.saturating_sub(1)).unwrap_or(0);
    let base = schedule
        .get(index)
        .or(schedule.last())
        .copied()
        .unwrap_or(60);
    let jitter_ms = rand::thread_rng().gen_range(0..=base * 200);
    chrono::Duration::milliseconds(base * 1000 + jitter_ms)
}

/// A pause multiplied by the retry scale (development only), at least a millisecond.
fn scaled(pause: chrono::Duration, scale: f64) -> chrono::Duration {
    if scale == 1.0 {
        return pause;
    }
    let ms = (pause.num_milliseconds() as f64 * scale).round().max(1.0);
    chrono::Duration::milliseconds(ms as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_bounded() {
        assert!((5..=6).contains(&backoff(TELNYX, 1).num_seconds()));
        assert!(backoff(TELNYX, 3).num_seconds() >= 120);
        assert!(backoff(TELNYX, 50).num_seconds() <= 7200 * 6 / 5);
    }

    #[test]
    fn standard_webhooks_follow_the_spec_schedule() {
        let secs: Vec<i64> = (1..=7)
            .map(|a| backoff(STANDARD, a).num_seconds())
            .collect();
        for (got, base) in secs.iter().zip(STANDARD_BACKOFF_SECS) {
            assert!((base..=base * 6 / 5).contains(got), "{got} vs {base}");
        }
        assert_eq!(
            scaled(chrono::Duration::seconds(300), 0.001),
            chrono::Duration::milliseconds(300)
        );
    }

    /// The known-answer vector of the Standard Webhooks reference libraries.
    #[test]
    fn standard_webhooks_signature_matches_the_reference_vector() {
        use base64::Engine as _;
        let key = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode("C2FVsBQIhrscChlQIMV+b5sSYspob7oD")
                .unwrap_or_default(),
        );
        let now = DateTime::from_timestamp(1_649_367_553, 0).unwrap_or_default();
        let (_, headers) = standard_webhooks(
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            r#"{"email":"test@example.com","username":"test_user"}"#,
            &[key.clone(), key],
            now,
        );
        let sig = &headers[2].1;
        assert_eq!(
            sig,
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw= v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
        assert_eq!(headers[1].1, "1649367553");
    }

    #[test]
    fn scaled_backoff_is_a_fraction_of_the_schedule() {
        let pause = chrono::Duration::seconds(5);
        assert_eq!(scaled(pause, 1.0), pause);
        assert_eq!(scaled(pause, 0.02).num_milliseconds(), 100);
    }
}
