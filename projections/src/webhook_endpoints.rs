//! Account-level webhooks fed from the log: the `webhook_endpoints` read model (what the API
//! shows and where deliveries go), which organization every stream belongs to, and one
//! durable `standard_webhooks` delivery per (event, subscribed endpoint), enqueued in the
//! same transaction as the checkpoint, so each is enqueued exactly once.
//!
//! An event belongs to the organization its stream belongs to, and every stream's first
//! event names its organization (`organization.created`, `user.registered`,
//! `verify_profile.created`, `verification.sent`, `verify_template.created`,
//! `webhook_endpoint.created`), which is how the audit view decides ownership too. So the
//! organization's own stream, its members' user streams, its Verify streams and its
//! endpoints' streams all reach its subscribers; nothing of another organization does.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use sqlx::{AnyConnection, AnyPool, FromRow, Row};
use uuid::Uuid;
use warden_commands::EventStore;
use warden_domain::chain::format_time;
use warden_domain::sealed::redact;
use warden_domain::webhook_endpoint::{EventFilter, WebhookEndpointEvent};
use warden_domain::RecordedEvent;

use crate::sql::{rows, rows_in, ROWS_PER_STATEMENT};
use crate::webhooks::{enqueue, enqueue_all, NewDelivery, Queued, SCHEME_STANDARD_WEBHOOKS};
use crate::{ProjectionError, Projector};

/// The body a subscriber receives (`{type, timestamp, data}`), the same on every attempt
/// and redelivery. Sealed values and digests are redacted; the request's address and user
/// agent stay out (personal data the subscriber does not need).
pub fn standard_body(event: &RecordedEvent, organization_id: &str) -> Value {
    json!({
        "type": event.event_type,
        "timestamp": format_time(event.recorded_at),
        "data": {
            "event_id": event.event_id,
            "event_type": event.event_type,
            "stream_id": event.stream_id,
            "stream_type": event.stream_type,
            "version": event.version,
            "global_position": event.global_position,
            "schema_version": event.schema_version,
            "organization_id": organization_id,
            "occurred_at": format_time(event.recorded_at),
            "actor": event.metadata.actor,
            "correlation_id": event.metadata.correlation_id,
            "payload": redact(event.payload.clone()),
        },
    })
}

/// Follows the log: endpoint read model, stream owners, deliveries.
#[derive(Debug, Default)]
pub struct WebhookEndpointsProjector {
    queued: Queued,
}

#[async_trait]
impl Projector for WebhookEndpointsProjector {
    fn name(&self) -> &'static str {
        "webhook_endpoints"
    }

    /// Deliveries are never deleted, and re-enqueueing an event after a rebuild is a no-op.
    fn tables(&self) -> &'static [&'static str] {
        &["webhook_endpoints", "webhook_stream_owners"]
    }

    /// Every event looks up its stream's organization and that organization's endpoints.
    /// Within a batch the answers are kept, per stream and per organization: only an
    /// endpoint's own event changes an organization's routes (all are dropped after one),
    /// and a stream's organization is fixed by its first event.
    async fn apply_batch(
        &self,
        conn: &mut AnyConnection,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        // The streams the batch goes on with (not started in it) in one read up front.
        let started: HashSet<&str> = events
            .iter()
            .filter(|e| e.version == 1)
            .map(|e| e.stream_id.as_str())
            .collect();
        let going_on: HashSet<&str> = events
            .iter()
            .filter(|e| {
                e.stream_type != "webhook_endpoint" && !started.contains(e.stream_id.as_str())
            })
            .map(|e| e.stream_id.as_str())
            .collect();
        let mut going_on: Vec<String> = going_on.into_iter().map(str::to_owned).collect();
        going_on.sort_unstable();
        let mut found = stream_routes(conn, &going_on).await?;
        let mut known: HashMap<String, Option<Routes>> = going_on
            .into_iter()
            .map(|id| {
                let routes = found.remove(&id);
                (id, routes)
            })
            .collect();
        let mut by_org: HashMap<String, Routes> = HashMap::new();
        // Written together: new streams' owners (before anything reads the table again)
        // and the deliveries (nothing in the batch reads them).
        let mut owners = NewOwners::default();
        let mut deliveries = Vec::new();
        for event in events {
            if !known.contains_key(&event.stream_id) {
                let found = if event.version == 1 || event.stream_type == "webhook_endpoint" {
                    match owner(conn, &mut owners, event).await? {
                        None => None,
                        Some(org) => Some(match by_org.get(&org) {
                            Some(routes) => routes.clone(),
                            None => {
                                let routes = Routes {
                                    list: Arc::new(routes_of(conn, &org).await?),
                                    organization_id: org.clone(),
                                };
                                by_org.insert(org, routes.clone());
                                routes
                            }
                        }),
                    }
                } else {
                    // Only after an endpoint's event: the stream's organization and its
                    // routes.
                    owners.write(conn).await?;
                    let id = std::slice::from_ref(&event.stream_id);
                    stream_routes(conn, id).await?.remove(&event.stream_id)
                };
                known.insert(event.stream_id.clone(), found);
            }
            let Some(Some(routes)) = known.get(&event.stream_id) else {
                continue;
            };
            // Enqueue first, so an endpoint's own creation goes to the others, not to itself.
            deliveries.extend(for_subscribers(event, routes));
            if event.stream_type == "webhook_endpoint" {
                let org = routes.organization_id.clone();
                let e: WebhookEndpointEvent = event
                    .decode()
                    .map_err(|e| ProjectionError::decode(event, e))?;
                apply_endpoint(conn, event, &org, e).await?;
                // The organization's routes may have changed: look everything up again.
                known.clear();
                by_org.clear();
            }
        }
        owners.write(conn).await?;
        enqueue_all(conn, &deliveries).await?;
        self.queued.mark(!deliveries.is_empty());
        Ok(())
    }

    fn take_queued_deliveries(&self) -> bool {
        self.queued.take()
    }
}

/// `webhook_stream_owners` rows of the batch's new streams, not yet written.
#[derive(Default)]
struct NewOwners(Vec<(String, String)>);

impl NewOwners {
    /// Writes the pending rows in multi-row statements; a stream's first owner stays.
    async fn write(&mut self, conn: &mut AnyConnection) -> Result<(), ProjectionError> {
        for chunk in self.0.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO webhook_stream_owners (stream_id, organization_id) VALUES {} \
                 ON CONFLICT (stream_id) DO NOTHING",
                rows(chunk.len(), 2)
            );
            let mut query = sqlx::query(&sql);
            for (stream_id, org) in chunk {
                query = query.bind(stream_id).bind(org);
            }
            query.execute(&mut *conn).await?;
        }
        self.0.clear();
        Ok(())
    }
}

/// The organization of the event's stream, recording it from the stream's first event.
async fn owner(
    conn: &mut AnyConnection,
    owners: &mut NewOwners,
    event: &RecordedEvent,
) -> Result<Option<String>, ProjectionError> {
    if event.version == 1 {
        let named = event
            .payload
            .get("organization_id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| {
                event
                    .stream_id
                    .strip_prefix("organization-")
                    .map(str::to_owned)
            });
        if let Some(org) = named {
            owners.0.push((event.stream_id.clone(), org.clone()));
            return Ok(Some(org));
        }
    }
    owners.write(conn).await?;
    Ok(sqlx::query_scalar::<_, String>(
        "SELECT organization_id FROM webhook_stream_owners WHERE stream_id = $1",
    )
    .bind(&event.stream_id)
    .fetch_optional(&mut *conn)
    .await?)
}

/// An organization and its enabled endpoints, shared by the batch's streams of it.
#[derive(Debug, Clone)]
struct Routes {
    organization_id: String,
    list: Arc<Vec<Route>>,
}

/// An enabled endpoint, its filter read once with its row.
#[derive(Debug)]
struct Route {
    endpoint_id: String,
    url: String,
    /// `None`: a stored filter that does not parse, which subscribes to nothing.
    filter: Option<EventFilter>,
}

impl Route {
    fn new(endpoint_id: String, url: String, event_types: &str) -> Self {
        Self {
            endpoint_id,
            url,
            filter: parse_filter(event_types),
        }
    }

    fn subscribes_to(&self, event_type: &str) -> bool {
        self.filter.as_ref().is_some_and(|f| f.matches(event_type))
    }
}

/// A stored `event_types` filter; `None` if it does not parse (it subscribes to nothing).
fn parse_filter(event_types: &str) -> Option<EventFilter> {
    serde_json::from_str(event_types).ok()
}

/// The enabled endpoints of an organization.
async fn routes_of(conn: &mut AnyConnection, org: &str) -> Result<Vec<Route>, ProjectionError> {
    let rows = sqlx::query(
        "SELECT endpoint_id, url, event_types FROM webhook_endpoints \
         WHERE organization_id = $1 AND enabled = 1",
    )
    .bind(org)
    .fetch_all(&mut *conn)
    .await?;
    let mut routes = Vec::with_capacity(rows.len());
    for row in &rows {
        routes.push(Route::new(
            row.try_get(0)?,
            row.try_get(1)?,
            row.try_get::<&str, _>(2)?,
        ));
    }
    Ok(routes)
}

/// The organization each known stream belongs to and its enabled endpoints, in one
/// statement per chunk of streams; a stream of no organization is left out.
async fn stream_routes(
    conn: &mut AnyConnection,
    stream_ids: &[String],
) -> Result<HashMap<String, Routes>, ProjectionError> {
    let rows = rows_in(
        conn,
        "SELECT o.stream_id, o.organization_id, e.endpoint_id, e.url, e.event_types \
         FROM webhook_stream_owners o LEFT JOIN webhook_endpoints e \
         ON e.organization_id = o.organization_id AND e.enabled = 1 \
         WHERE o.stream_id",
        stream_ids,
    )
    .await?;
    let mut found: HashMap<String, (String, Vec<Route>)> = HashMap::new();
    for row in &rows {
        let stream_id: String = row.try_get(0)?;
        let org: String = row.try_get(1)?;
        let (_, routes) = found.entry(stream_id).or_insert_with(|| (org, Vec::new()));
        if let Some(endpoint_id) = row.try_get::<Option<String>, _>(2)? {
            routes.push(Route::new(
                endpoint_id,
                row.try_get(3)?,
                row.try_get::<&str, _>(4)?,
            ));
        }
    }
    Ok(found
        .into_iter()
        .map(|(stream_id, (organization_id, list))| {
            let routes = Routes {
                organization_id,
                list: Arc::new(list),
            };
            (stream_id, routes)
        })
        .collect())
}

/// The deliveries of an event to the organization's endpoints that subscribe to it.
fn for_subscribers(event: &RecordedEvent, routes: &Routes) -> Vec<NewDelivery> {
    // An endpoint's own events (its disabling above all) are for the others.
    let own = event.stream_id.strip_prefix("webhook_endpoint-");
    let org = routes.organization_id.as_str();
    let mut body = None;
    let mut deliveries = Vec::new();
    for route in routes.list.iter() {
        if !route.subscribes_to(&event.event_type) || own == Some(route.endpoint_id.as_str()) {
            continue;
        }
        let data = body
            .get_or_insert_with(|| standard_body(event, org))
            .clone();
        deliveries.push(NewDelivery {
            organization_id: org.to_owned(),
            subscription: format!("endpoint:{}", route.endpoint_id),
            event_id: event.event_id.to_string(),
            event_type: event.event_type.clone(),
            scheme: SCHEME_STANDARD_WEBHOOKS,
            url: route.url.clone(),
            failover_url: None,
            data,
            at: event.recorded_at,
            endpoint_id: Some(route.endpoint_id.clone()),
            global_position: Some(event.global_position),
        });
    }
    deliveries
}

async fn apply_endpoint(
    conn: &mut AnyConnection,
    event: &RecordedEvent,
    org: &str,
    e: WebhookEndpointEvent,
) -> Result<(), ProjectionError> {
    let id = event
        .stream_id
        .strip_prefix("webhook_endpoint-")
        .unwrap_or_default();
    let at = format_time(event.recorded_at);
    match e {
        WebhookEndpointEvent::Created {
            settings, secret, ..
        } => {
            sqlx::query(
                "INSERT INTO webhook_endpoints (endpoint_id, organization_id, url, event_types, \
                 description, enabled, secret, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
            )
            .bind(id)
            .bind(org)
            .bind(&settings.url)
            .bind(json_text(&settings.event_types))
            .bind(settings.description.clone())
            .bind(i64::from(settings.enabled))
            .bind(json_text(&secret))
            .bind(&at)
            .execute(&mut *conn)
            .await?;
        }
        WebhookEndpointEvent::Updated { settings } => {
            if settings.enabled {
                // Turned (back) on: its failure streak starts afresh.
                sqlx::query(
                    "DELETE FROM webhook_endpoint_health WHERE endpoint_id = $1 AND EXISTS \
                     (SELECT 1 FROM webhook_endpoints WHERE endpoint_id = $1 AND enabled = 0)",
                )
                .bind(id)
                .execute(&mut *conn)
                .await?;
            }
            sqlx::query(
                "UPDATE webhook_endpoints SET url = $2, event_types = $3, description = $4, \
                 enabled = $5, disabled_reason = CASE WHEN $5 = 1 THEN NULL ELSE disabled_reason END, \
                 updated_at = $6 WHERE endpoint_id = $1",
            )
            .bind(id)
            .bind(&settings.url)
            .bind(json_text(&settings.event_types))
            .bind(settings.description.clone())
            .bind(i64::from(settings.enabled))
            .bind(&at)
            .execute(&mut *conn)
            .await?;
        }
        WebhookEndpointEvent::SecretRotated {
            secret,
            previous_valid_until,
        } => {
            sqlx::query(
                "UPDATE webhook_endpoints SET previous_secret = secret, secret = $2, \
                 previous_valid_until = $3, updated_at = $4 WHERE endpoint_id = $1",
            )
            .bind(id)
            .bind(json_text(&secret))
            .bind(format_time(previous_valid_until))
            .bind(&at)
            .execute(&mut *conn)
            .await?;
        }
        WebhookEndpointEvent::Disabled { reason, .. } => {
            sqlx::query(
                "UPDATE webhook_endpoints SET enabled = 0, disabled_reason = $2, updated_at = $3 \
                 WHERE endpoint_id = $1",
            )
            .bind(id)
            .bind(reason)
            .bind(&at)
            .execute(&mut *conn)
            .await?;
        }
        WebhookEndpointEvent::Deleted {} => {
            sqlx::query("DELETE FROM webhook_endpoints WHERE endpoint_id = $1")
                .bind(id)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}

/// JSON text of a value for a TEXT column.
fn json_text<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// A row of `webhook_endpoints`.
#[derive(Debug, Clone, PartialEq, Eq, FromRow, Serialize)]
pub struct EndpointRow {
    pub endpoint_id: String,
    pub organization_id: String,
    pub url: String,
    pub event_types: String,
    pub description: Option<String>,
    pub enabled: i64,
    pub secret: String,
    pub previous_secret: Option<String>,
    pub previous_valid_until: Option<String>,
    pub disabled_reason: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

const ENDPOINT_SELECT: &str =
    "SELECT endpoint_id, organization_id, url, event_types, description, enabled, secret, \
     previous_secret, previous_valid_until, disabled_reason, created_at, updated_at \
     FROM webhook_endpoints";

/// One endpoint of the organization's.
pub async fn endpoint(
    pool: &AnyPool,
    organization_id: &str,
    endpoint_id: &str,
) -> Result<Option<EndpointRow>, sqlx::Error> {
    sqlx::query_as::<_, EndpointRow>(&format!(
        "{ENDPOINT_SELECT} WHERE organization_id = $1 AND endpoint_id = $2"
    ))
    .bind(organization_id)
    .bind(endpoint_id)
    .fetch_optional(pool)
    .await
}

/// A page of the organization's endpoints, oldest first, and how many there are.
pub async fn endpoints(
    pool: &AnyPool,
    organization_id: &str,
    limit: i64,
    offset: i64,
) -> Result<(Vec<EndpointRow>, i64), sqlx::Error> {
    let rows = sqlx::query_as::<_, EndpointRow>(&format!(
        "{ENDPOINT_SELECT} WHERE organization_id = $1 ORDER BY created_at, endpoint_id \
         LIMIT $2 OFFSET $3"
    ))
    .bind(organization_id)
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await?;
    let total: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM webhook_endpoints WHERE organization_id = $1")
            .bind(organization_id)
            .fetch_one(pool)
            .await?;
    Ok((rows, total))
}

/// Enabled endpoints whose every attempt has failed since at or before `cutoff`:
/// (endpoint id, failing since, last error).
pub async fn failing_since_before(
    pool: &AnyPool,
    cutoff: DateTime<Utc>,
) -> Result<Vec<(String, String, Option<String>)>, sqlx::Error> {
    sqlx::query_as::<_, (String, String, Option<String>)>(
        "SELECT h.endpoint_id, h.failing_since, h.last_error FROM webhook_endpoint_health h \
         JOIN webhook_endpoints e ON e.endpoint_id = h.endpoint_id \
         WHERE e.enabled = 1 AND h.failing_since <= $1 ORDER BY h.failing_since LIMIT 100",
    )
    .bind(format_time(cutoff))
    .fetch_all(pool)
    .await
}

/// Where a redelivery of an endpoint's events starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayFrom {
    /// Events at this global position and later.
    Position(i64),
    /// Events recorded at this instant and later.
    Time(DateTime<Utc>),
}

/// Enqueues every event of the endpoint's organization that it subscribes to, from `from`
/// on, as new deliveries (same `webhook-id`: the event id). Returns how many.
pub async fn redeliver_from(
    pool: &AnyPool,
    store: &dyn EventStore,
    endpoint: &EndpointRow,
    from: ReplayFrom,
    now: DateTime<Utc>,
) -> Result<i64, ProjectionError> {
    const BATCH: i64 = 500;
    let replay = Uuid::now_v7();
    let mut after = match from {
        ReplayFrom::Position(p) => p.saturating_sub(1).max(0),
        ReplayFrom::Time(_) => 0,
    };
    let head = store.head_position().await?;
    let mut count = 0;
    let filter = parse_filter(&endpoint.event_types);
    let mut conn = pool.acquire().await?;
    while after < head {
        let events = store.read_all(after, BATCH).await?;
        let Some(last) = events.last().map(|e| e.global_position) else {
            break;
        };
        for event in &events {
            if event.global_position > head {
                break;
            }
            if let ReplayFrom::Time(t) = from {
                if event.recorded_at < t {
                    continue;
                }
            }
            if !filter
                .as_ref()
                .is_some_and(|f| f.matches(&event.event_type))
            {
                continue;
            }
            let org = sqlx::query_scalar::<_, String>(
                "SELECT organization_id FROM webhook_stream_owners WHERE stream_id = $1",
            )
            .bind(&event.stream_id)
            .fetch_optional(&mut *conn)
            .await?;
            if org.as_deref() != Some(endpoint.organization_id.as_str()) {
                continue;
            }
            enqueue(
                &mut conn,
                NewDelivery {
                    organization_id: endpoint.organization_id.clone(),
                    subscription: format!("endpoint:{}:replay:{replay}", endpoint.endpoint_id),
                    event_id: event.event_id.to_string(),
                    event_type: event.event_type.clone(),
                    scheme: SCHEME_STANDARD_WEBHOOKS,
                    url: endpoint.url.clone(),
                    failover_url: None,
                    data: standard_body(event, &endpoint.organization_id),
                    at: now,
                    endpoint_id: Some(endpoint.endpoint_id.clone()),
                    global_position: Some(event.global_position),
                },
            )
            .await?;
            count += 1;
        }
        after = last;
    }
    Ok(count)
}
