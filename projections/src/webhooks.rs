//! Webhooks fed from the log. The generic part is the durable delivery queue
//! (`webhook_deliveries`, `webhook_attempts`): any producer enqueues an event object for a
//! URL under a signing `scheme`, and the dispatcher (in `warden-infra`) sends, signs, retries
//! and records. The Verify producer is a projector, so it follows the log from its own
//! checkpoint and enqueues each delivery exactly once, in the same transaction.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use sqlx::{AnyConnection, AnyPool, FromRow, Row};
use uuid::Uuid;
use warden_commands::{EventStore, Secrets};
use warden_domain::chain::format_time;
use warden_domain::verify::profile::VerifyProfileEvent;
use warden_domain::verify::verification::{Verification, VerificationEvent};
use warden_domain::{Aggregate, RecordedEvent};

use crate::sql::{rows, rows_in, ROWS_PER_STATEMENT};
use crate::{open_text, ProjectionError, Projector};

/// Telnyx's signature: Ed25519 over `"{timestamp}|{body}"`.
pub const SCHEME_TELNYX_ED25519: &str = "telnyx_ed25519";
/// Standard Webhooks: HMAC-SHA256 over `"{id}.{timestamp}.{body}"` with the endpoint's secret.
pub const SCHEME_STANDARD_WEBHOOKS: &str = "standard_webhooks";

/// A delivery to enqueue.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub organization_id: String,
    /// Who subscribed (`verify_profile:<id>`, `endpoint:<id>`): one delivery per event each.
    pub subscription: String,
    pub event_id: String,
    pub event_type: String,
    pub scheme: &'static str,
    pub url: String,
    pub failover_url: Option<String>,
    /// The event object; the scheme wraps it in its envelope per attempt.
    pub data: Value,
    pub at: DateTime<Utc>,
    /// The account-level endpoint it is for (`standard_webhooks`), if any.
    pub endpoint_id: Option<String>,
    /// The event's position in the log.
    pub global_position: Option<i64>,
}

/// Enqueues a delivery unless this event already has one for this subscription.
pub async fn enqueue(conn: &mut AnyConnection, d: NewDelivery) -> Result<(), sqlx::Error> {
    enqueue_all(conn, std::slice::from_ref(&d)).await
}

/// Whether a projector queued deliveries since the runner last asked
/// ([`crate::Projector::take_queued_deliveries`]).
#[derive(Debug, Default)]
pub struct Queued(std::sync::atomic::AtomicBool);

impl Queued {
    pub fn mark(&self, queued: bool) {
        if queued {
            self.0.store(true, std::sync::atomic::Ordering::Release);
        }
    }

    pub fn take(&self) -> bool {
        self.0.swap(false, std::sync::atomic::Ordering::AcqRel)
    }
}

/// Enqueues deliveries, in order, in multi-row statements; each is skipped if its event
/// already has one for its subscription.
pub async fn enqueue_all(conn: &mut AnyConnection, all: &[NewDelivery]) -> Result<(), sqlx::Error> {
    for chunk in all.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO webhook_deliveries (delivery_id, organization_id, subscription, event_id, \
             event_type, scheme, url, failover_url, data, status, attempts, next_attempt_at, \
             created_at, updated_at, endpoint_id, global_position) VALUES {} \
             ON CONFLICT (event_id, subscription) DO NOTHING",
            rows(chunk.len(), 16)
        );
        let mut query = sqlx::query(&sql);
        for d in chunk {
            let at = format_time(d.at);
            query = query
                .bind(Uuid::now_v7().to_string())
                .bind(d.organization_id.as_str())
                .bind(d.subscription.as_str())
                .bind(d.event_id.as_str())
                .bind(d.event_type.as_str())
                .bind(d.scheme)
                .bind(d.url.as_str())
                .bind(d.failover_url.as_deref())
                .bind(d.data.to_string())
                .bind("pending")
                .bind(0_i64)
                .bind(at.clone())
                .bind(at.clone())
                .bind(at)
                .bind(d.endpoint_id.as_deref())
                .bind(d.global_position);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// A row of `webhook_deliveries`.
#[derive(Debug, Clone, PartialEq, Eq, FromRow, Serialize)]
pub struct DeliveryRow {
    pub delivery_id: String,
    pub organization_id: String,
    pub event_id: String,
    pub event_type: String,
    pub scheme: String,
    pub url: String,
    pub failover_url: Option<String>,
    pub data: String,
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: String,
    pub delivered_to: Option<String>,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub subscription: String,
    pub endpoint_id: Option<String>,
    pub finished_at: Option<String>,
}

pub const DELIVERY_COLUMNS: &str =
    "delivery_id, organization_id, event_id, event_type, scheme, url, failover_url, data, status, \
     attempts, next_attempt_at, delivered_to, last_status, last_error, created_at, updated_at, \
     subscription, endpoint_id, finished_at";

/// The organization's deliveries, newest first.
pub async fn deliveries(
    pool: &AnyPool,
    organization_id: &str,
    limit: i64,
) -> Result<Vec<DeliveryRow>, sqlx::Error> {
    sqlx::query_as::<_, DeliveryRow>(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE organization_id = $1 \
         ORDER BY created_at DESC, delivery_id DESC LIMIT $2"
    ))
    .bind(organization_id)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Enqueues Verify's webhooks (`verify.sent`, `verify.delivered`, `verify.failed`,
/// `verify.accepted`, `verify.expired`, `verify.spend_threshold_reached`) for profiles with a `webhook_url`, keeping its own
/// table of where each profile's webhooks go.
pub struct VerifyWebhooksProjector {
    store: Arc<dyn EventStore>,
    secrets: Arc<dyn Secrets>,
    queued: Queued,
}

impl VerifyWebhooksProjector {
    pub fn new(store: Arc<dyn EventStore>, secrets: Arc<dyn Secrets>) -> Self {
        Self {
            store,
            secrets,
            queued: Queued::default(),
        }
    }

    /// The verification as it stood right after `event`, folded from its stream in the log
    /// (for an event whose stream the batch could not fold).
    async fn state_at(&self, event: &RecordedEvent) -> Result<Verification, ProjectionError> {
        let mut state = Verification::default();
        for e in self.store.read_stream(&event.stream_id, 0).await? {
            if e.version > event.version {
                break;
            }
            let decoded: VerificationEvent =
                e.decode().map_err(|err| ProjectionError::decode(&e, err))?;
            state.apply(&decoded, e.recorded_at);
        }
        Ok(state)
    }

    /// For each event of the batch, the webhook it raises and the verification's state
    /// after it (`None` for events that raise none). States are folded in memory: from the
    /// batch itself, and for the streams the batch goes on with (started before it), from
    /// their earlier events, all read in one statement.
    async fn raised(&self, events: &[RecordedEvent]) -> Result<Vec<Raised>, ProjectionError> {
        let mut first: HashMap<&str, i64> = HashMap::new();
        for e in events.iter().filter(|e| e.stream_type == "verification") {
            first.entry(e.stream_id.as_str()).or_insert(e.version);
        }
        let going_on: Vec<String> = first
            .iter()
            .filter(|(_, version)| **version > 1)
            .map(|(id, _)| (*id).to_owned())
            .collect();
        let mut states: HashMap<String, (i64, Verification)> = HashMap::new();
        if !going_on.is_empty() {
            for e in self.store.read_streams(&going_on).await? {
                if first
                    .get(e.stream_id.as_str())
                    .is_none_or(|from| e.version >= *from)
                {
                    continue;
                }
                let decoded: VerificationEvent =
                    e.decode().map_err(|err| ProjectionError::decode(&e, err))?;
                let (at, state) = states.entry(e.stream_id.clone()).or_default();
                if e.version == *at + 1 {
                    state.apply(&decoded, e.recorded_at);
                    *at = e.version;
                }
            }
        }
        let mut raised = Vec::with_capacity(events.len());
        for event in events {
            if event.stream_type != "verification" {
                raised.push(None);
                continue;
            }
            let e: VerificationEvent = event
                .decode()
                .map_err(|err| ProjectionError::decode(event, err))?;
            let state = match states.remove(&event.stream_id) {
                Some((version, mut state)) if version + 1 == event.version => {
                    state.apply(&e, event.recorded_at);
                    state
                }
                _ if event.version == 1 => {
                    let mut state = Verification::default();
                    state.apply(&e, event.recorded_at);
                    state
                }
                _ => self.state_at(event).await?,
            };
            raised.push(webhook_type(&e).map(|kind| (kind, state.clone())));
            states.insert(event.stream_id.clone(), (event.version, state));
        }
        Ok(raised)
    }
}

/// The webhook an event raises and the verification's state after it.
type Raised = Option<(&'static str, Verification)>;

/// The webhook a verification event raises, if any.
fn webhook_type(e: &VerificationEvent) -> Option<&'static str> {
    match e {
        VerificationEvent::Sent(_) => Some("verify.sent"),
        VerificationEvent::Delivered {} => Some("verify.delivered"),
        VerificationEvent::DeliveryFailed { .. } => Some("verify.failed"),
        VerificationEvent::Accepted { .. } => Some("verify.accepted"),
        VerificationEvent::Expired {} => Some("verify.expired"),
        VerificationEvent::CodeRejected { .. } | VerificationEvent::Invalidated { .. } => None,
    }
}

#[async_trait]
impl Projector for VerifyWebhooksProjector {
    fn name(&self) -> &'static str {
        "verify_webhooks"
    }

    /// Only its own routing table: deliveries are never deleted, and re-enqueueing an event
    /// after a rebuild is a no-op.
    fn tables(&self) -> &'static [&'static str] {
        &["verify_webhook_targets"]
    }

    /// A verification's webhook carries its state after the event and goes to its
    /// profile's target. A batch folds the states in memory ([`Self::raised`]), reads the
    /// targets of every profile it needs in one statement, and enqueues its deliveries
    /// together; a profile's own event changes its target in log order.
    async fn apply_batch(
        &self,
        conn: &mut AnyConnection,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        let raised = self.raised(events).await?;
        let mut profiles: Vec<String> = raised
            .iter()
            .flatten()
            .filter_map(|(_, state)| state.sent.as_ref())
            .map(|sent| sent.profile_id.to_string())
            .collect();
        profiles.sort_unstable();
        profiles.dedup();
        let mut targets = targets_of(conn, &profiles).await?;
        let mut deliveries = Vec::new();
        for (event, raised) in events.iter().zip(raised) {
            match (event.stream_type.as_str(), raised) {
                ("verify_profile", _) => {
                    self.apply_profile(conn, event, &mut targets, &mut deliveries)
                        .await?
                }
                ("verification", Some((event_type, state))) => {
                    self.verification_delivery(
                        conn,
                        event,
                        event_type,
                        &state,
                        &mut targets,
                        &mut deliveries,
                    )
                    .await?
                }
                _ => {}
            }
        }
        enqueue_all(conn, &deliveries).await?;
        self.queued.mark(!deliveries.is_empty());
        Ok(())
    }

    fn take_queued_deliveries(&self) -> bool {
        self.queued.take()
    }
}

/// Each profile's webhook target (`None`: none), as far as the batch has looked them up.
type Targets = HashMap<String, Option<Target>>;

/// The targets of `profiles`, read in one statement (those without a row: `None`).
async fn targets_of(
    conn: &mut AnyConnection,
    profiles: &[String],
) -> Result<Targets, ProjectionError> {
    let mut targets: Targets = profiles.iter().map(|p| (p.clone(), None)).collect();
    let rows = rows_in(
        conn,
        "SELECT profile_id, organization_id, url, failover_url FROM verify_webhook_targets \
         WHERE profile_id",
        profiles,
    )
    .await?;
    for row in &rows {
        targets.insert(
            row.try_get("profile_id")?,
            Some(Target {
                organization_id: row.try_get("organization_id")?,
                url: row.try_get("url")?,
                failover_url: row.try_get("failover_url")?,
            }),
        );
    }
    Ok(targets)
}

impl VerifyWebhooksProjector {
    /// A profile's event: its spend alert's webhook, or a change of where its webhooks go.
    async fn apply_profile(
        &self,
        conn: &mut AnyConnection,
        event: &RecordedEvent,
        targets: &mut Targets,
        deliveries: &mut Vec<NewDelivery>,
    ) -> Result<(), ProjectionError> {
        let id = event.stream_id.trim_start_matches("verify_profile-");
        let e: VerifyProfileEvent = event
            .decode()
            .map_err(|e| ProjectionError::decode(event, e))?;
        // Only these change where its webhooks go (a send's reservation, the usual event
        // of a busy profile, does not).
        if matches!(
            e,
            VerifyProfileEvent::Created { .. }
                | VerifyProfileEvent::Updated { .. }
                | VerifyProfileEvent::Deleted {}
        ) {
            targets.remove(id);
        }
        if let VerifyProfileEvent::SpendThresholdReached {
            day,
            percent,
            spent,
            limit,
        } = &e
        {
            let payload = json!({
                "profile_id": id,
                "record_type": "verify_profile_spend",
                "day": day.to_string(),
                "percent": percent,
                "spent": spent.dollars(),
                "daily_spend_limit": limit.dollars(),
            });
            let target = target_of(conn, id, targets).await?;
            deliveries.extend(delivery_for_profile(
                event,
                id,
                target,
                "verify.spend_threshold_reached",
                payload,
            ));
            return Ok(());
        }
        route(conn, id, e).await
    }
}

async fn route(
    conn: &mut AnyConnection,
    profile_id: &str,
    e: VerifyProfileEvent,
) -> Result<(), ProjectionError> {
    let (organization_id, settings) = match e {
        VerifyProfileEvent::Created {
            organization_id,
            settings,
            ..
        } => (Some(organization_id.to_string()), settings),
        VerifyProfileEvent::Updated { settings } => (None, settings),
        VerifyProfileEvent::Deleted {} => {
            sqlx::query("DELETE FROM verify_webhook_targets WHERE profile_id = $1")
                .bind(profile_id)
                .execute(&mut *conn)
                .await?;
            return Ok(());
        }
        _ => return Ok(()),
    };
    let url = settings.webhook_url.map(|u| u.as_str().to_owned());
    let failover = settings.webhook_failover_url.map(|u| u.as_str().to_owned());
    match organization_id {
        Some(org) => {
            sqlx::query(
                "INSERT INTO verify_webhook_targets (profile_id, organization_id, url, failover_url) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(profile_id)
            .bind(org)
            .bind(url)
            .bind(failover)
            .execute(&mut *conn)
            .await?;
        }
        None => {
            sqlx::query(
                "UPDATE verify_webhook_targets SET url = $2, failover_url = $3 WHERE profile_id = $1",
            )
            .bind(profile_id)
            .bind(url)
            .bind(failover)
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}

#[derive(Clone)]
struct Target {
    organization_id: String,
    url: Option<String>,
    failover_url: Option<String>,
}

impl VerifyWebhooksProjector {
    /// The webhook a verification event raises, for its profile's target if it has one.
    async fn verification_delivery(
        &self,
        conn: &mut AnyConnection,
        event: &RecordedEvent,
        event_type: &'static str,
        state: &Verification,
        targets: &mut Targets,
        deliveries: &mut Vec<NewDelivery>,
    ) -> Result<(), ProjectionError> {
        let Some(sent) = &state.sent else {
            return Ok(());
        };
        let profile_id = sent.profile_id.to_string();
        let target = target_of(conn, &profile_id, targets).await?;
        // Without a URL there is nothing to send, and no phone number to open.
        if target.as_ref().is_none_or(|t| t.url.is_none()) {
            return Ok(());
        }
        let phone = open_text(self.secrets.as_ref(), &sent.phone_number).await?;
        let created_at = state.created_at.map(format_time);
        let payload = json!({
            "id": sent.verification_id,
            "record_type": "verification",
            "type": sent.channel.as_str(),
            "phone_number": phone,
            "profile_id": profile_id,
            "status": state.status.as_str(),
            "delivery_status": state.delivery.as_str(),
            "failed_attempts": state.failed_attempts,
            "timeout_secs": sent.timeout_secs,
            "custom_code": Value::Null,
            "extension": sent.extension,
            "mccmnc": Value::Null,
            "created_at": created_at,
            "updated_at": format_time(event.recorded_at),
        });
        deliveries.extend(delivery_for_profile(
            event,
            &profile_id,
            target,
            event_type,
            payload,
        ));
        Ok(())
    }
}

/// The profile's webhook target: from the batch's look-ups, else read (after a profile's
/// own event changed it).
async fn target_of(
    conn: &mut AnyConnection,
    profile_id: &str,
    targets: &mut Targets,
) -> Result<Option<Target>, ProjectionError> {
    if let Some(known) = targets.get(profile_id) {
        return Ok(known.clone());
    }
    let found = targets_of(conn, &[profile_id.to_owned()])
        .await?
        .remove(profile_id)
        .flatten();
    targets.insert(profile_id.to_owned(), found.clone());
    Ok(found)
}

/// One Telnyx-enveloped event for the profile's webhook URL, if it has one.
fn delivery_for_profile(
    event: &RecordedEvent,
    profile_id: &str,
    target: Option<Target>,
    event_type: &'static str,
    payload: Value,
) -> Option<NewDelivery> {
    let Some(Target {
        organization_id,
        url: Some(url),
        failover_url,
    }) = target
    else {
        return None;
    };
    let data = json!({
        "event_type": event_type,
        "id": event.event_id,
        "occurred_at": format_time(event.recorded_at),
        "payload": payload,
        "record_type": "event",
    });
    Some(NewDelivery {
        organization_id,
        subscription: format!("verify_profile:{profile_id}"),
        event_id: event.event_id.to_string(),
        event_type: event_type.to_owned(),
        scheme: SCHEME_TELNYX_ED25519,
        url,
        failover_url,
        data,
        at: event.recorded_at,
        endpoint_id: None,
        global_position: Some(event.global_position),
    })
}

/// Which deliveries a delivery-log query wants (Telnyx's `filter[…]` parameters).
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    /// `delivered`, `failed` or `pending`.
    pub status: Option<String>,
    /// Any of these event types (empty: all).
    pub event_types: Vec<String>,
    /// Text the delivered webhook contains.
    pub webhook_contains: Option<String>,
    /// Bounds on when the delivery started (was queued; its first attempt is immediate).
    pub started_gte: Option<DateTime<Utc>>,
    pub started_lte: Option<DateTime<Utc>>,
    /// Bounds on when the delivery finished.
    pub finished_gte: Option<DateTime<Utc>>,
    pub finished_lte: Option<DateTime<Utc>>,
}

/// `LIKE` pattern matching `text` anywhere, with `\` escaping the wildcards.
fn contains_pattern(text: &str) -> String {
    let mut p = String::with_capacity(text.len() + 2);
    p.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

/// A page of the organization's deliveries, newest first, and how many match.
pub async fn delivery_page(
    pool: &AnyPool,
    organization_id: &str,
    filter: &DeliveryFilter,
    limit: i64,
    offset: i64,
) -> Result<(Vec<DeliveryRow>, i64), sqlx::Error> {
    let mut clauses = vec!["organization_id = $1".to_owned()];
    let mut binds: Vec<String> = vec![organization_id.to_owned()];
    let mut push = |clause: &dyn Fn(usize) -> String, value: String| {
        binds.push(value);
        clauses.push(clause(binds.len()));
    };
    if let Some(status) = &filter.status {
        push(&|n| format!("status = ${n}"), status.clone());
    }
    if !filter.event_types.is_empty() {
        let first = binds.len() + 1;
        let marks: Vec<String> = (first..first + filter.event_types.len())
            .map(|n| format!("${n}"))
            .collect();
        binds.extend(filter.event_types.iter().cloned());
        clauses.push(format!("event_type IN ({})", marks.join(", ")));
    }
    let mut push = |clause: &dyn Fn(usize) -> String, value: String| {
        binds.push(value);
        clauses.push(clause(binds.len()));
    };
    if let Some(text) = &filter.webhook_contains {
        push(
            &|n| format!("data LIKE ${n} ESCAPE '\\'"),
            contains_pattern(text),
        );
    }
    for (bound, column, op) in [
        (filter.started_gte, "created_at", ">="),
        (filter.started_lte, "created_at", "<="),
        (filter.finished_gte, "finished_at", ">="),
        (filter.finished_lte, "finished_at", "<="),
    ] {
        if let Some(t) = bound {
            push(&|n| format!("{column} {op} ${n}"), format_time(t));
        }
    }
    let filter_sql = clauses.join(" AND ");
    let n = binds.len();
    let sql = format!(
        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE {filter_sql} \
         ORDER BY created_at DESC, delivery_id DESC LIMIT ${} OFFSET ${}",
        n + 1,
        n + 2
    );
    let mut query = sqlx::query_as::<_, DeliveryRow>(&sql);
    for b in &binds {
        query = query.bind(b.as_str());
    }
    let rows = query.bind(limit).bind(offset).fetch_all(pool).await?;
    let count_sql = format!("SELECT COUNT(*) FROM webhook_deliveries WHERE {filter_sql}");
    let mut count = sqlx::query_scalar::<_, i64>(&count_sql);
    for b in &binds {
        count = count.bind(b.as_str());
    }
    let total = count.fetch_one(pool).await?;
    Ok((rows, total))
}

/// One delivery of the organization's.
pub async fn delivery(
    pool: &AnyPool,
    organization_id: &str,
    delivery_id: &str,
) -> Result<Option<DeliveryRow>, sqlx::Error> {
    sqlx::query_as::<_, DeliveryRow>(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries \
         WHERE organization_id = $1 AND delivery_id = $2"
    ))
    .bind(organization_id)
    .bind(delivery_id)
    .fetch_optional(pool)
    .await
}

/// A row of `webhook_attempts`.
#[derive(Debug, Clone, PartialEq, Eq, FromRow, Serialize)]
pub struct AttemptRow {
    pub attempt: i64,
    pub url: String,
    pub status_code: Option<i64>,
    pub error: Option<String>,
    pub attempted_at: String,
}

/// A delivery's attempts, newest first (as Telnyx orders them).
pub async fn attempts(pool: &AnyPool, delivery_id: &str) -> Result<Vec<AttemptRow>, sqlx::Error> {
    sqlx::query_as::<_, AttemptRow>(
        "SELECT attempt, url, status_code, error, attempted_at FROM webhook_attempts \
         WHERE delivery_id = $1 ORDER BY attempt DESC, attempted_at DESC",
    )
    .bind(delivery_id)
    .fetch_all(pool)
    .await
}

/// Queues the delivery's event again for the same subscriber, as a new delivery (same
/// event, so the same `webhook-id`). Returns the new delivery's id.
pub async fn redeliver(
    pool: &AnyPool,
    original: &DeliveryRow,
    now: DateTime<Utc>,
) -> Result<String, sqlx::Error> {
    let id = Uuid::now_v7().to_string();
    let at = format_time(now);
    sqlx::query(
        "INSERT INTO webhook_deliveries (delivery_id, organization_id, subscription, event_id, \
         event_type, scheme, url, failover_url, data, status, attempts, next_attempt_at, \
         created_at, updated_at, endpoint_id, global_position) \
         SELECT $2, organization_id, $3, event_id, event_type, scheme, url, failover_url, data, \
         'pending', 0, $4, $4, $4, endpoint_id, global_position \
         FROM webhook_deliveries WHERE delivery_id = $1",
    )
    .bind(&original.delivery_id)
    .bind(&id)
    .bind(format!("{}:redelivery:{id}", original.subscription))
    .bind(at)
    .execute(pool)
    .await?;
    Ok(id)
}
