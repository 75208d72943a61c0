//! Account-level webhooks: endpoints (`/v2/webhook_endpoints`: a URL subscribed to event
//! types, Standard Webhooks signing with a `whsec_` secret shown only on create and
//! rotate), the Telnyx-compatible delivery log (`/v2/webhook_deliveries`, Verify's
//! deliveries included) and redelivery, one delivery or an endpoint's events from a
//! position or instant onward. Everything belongs to the caller's organization; another's
//! is 404.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;
use warden_commands::webhooks::ShownSecret;
use warden_domain::values::{Text, ValidationError};
use warden_domain::verify::values::WebhookUrl;
use warden_domain::webhook_endpoint::{EndpointPatch, EndpointSettings, EventFilter};
use warden_projections::webhook_endpoints::{self as endpoints, EndpointRow, ReplayFrom};
use warden_projections::webhooks::{self as deliveries, DeliveryFilter, DeliveryRow};

use super::error::{ApiError, ApiResult};
use super::extract::{parse_json, Principal, RequestMeta};
use super::verifications::{page, page_meta, path_id};
use crate::app::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v2/webhook_endpoints",
            get(list_endpoints).post(create_endpoint),
        )
        .route(
            "/v2/webhook_endpoints/{id}",
            get(get_endpoint)
                .patch(update_endpoint)
                .delete(delete_endpoint),
        )
        .route(
            "/v2/webhook_endpoints/{id}/actions/rotate_secret",
            post(rotate_secret),
        )
        .route(
            "/v2/webhook_endpoints/{id}/actions/redeliver",
            post(redeliver_endpoint),
        )
        .route("/v2/webhook_deliveries", get(list_deliveries))
        .route("/v2/webhook_deliveries/{id}", get(get_delivery))
        .route(
            "/v2/webhook_deliveries/{id}/actions/redeliver",
            post(redeliver_delivery),
        )
}

// --- endpoints ---------------------------------------------------------------------------

fn endpoint_view(row: EndpointRow) -> Value {
    let event_types = serde_json::from_str::<Value>(&row.event_types).unwrap_or(Value::Null);
    json!({
        "id": row.endpoint_id,
        "record_type": "webhook_endpoint",
        "url": row.url,
        "event_types": event_types,
        "description": row.description,
        "enabled": row.enabled == 1,
        "disabled_reason": row.disabled_reason,
        "previous_secret_valid_until": row.previous_valid_until,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    })
}

async fn own_endpoint(state: &AppState, principal: &Principal, id: Uuid) -> ApiResult<EndpointRow> {
    endpoints::endpoint(
        &state.db.pool,
        &principal.organization_id.to_string(),
        &id.to_string(),
    )
    .await?
    .ok_or_else(ApiError::not_found)
}

/// The endpoint's view plus its secret, shown this once.
async fn with_secret(
    state: &AppState,
    principal: &Principal,
    id: Uuid,
    secret: &ShownSecret,
) -> ApiResult<Value> {
    let mut view = endpoint_view(own_endpoint(state, principal, id).await?);
    if let Some(obj) = view.as_object_mut() {
        obj.insert("secret".into(), json!(secret.expose()));
    }
    Ok(view)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpointRequest {
    /// An absolute http or https URL (public addresses only in production).
    pub url: String,
    /// Warden event types (see `/asyncapi.json`), or `["*"]` for every one.
    pub event_types: Vec<String>,
    pub description: Option<String>,
    /// Default true.
    pub enabled: Option<bool>,
}

/// In production, endpoint URLs must reach the public internet (SSRF guard); the
/// dispatcher checks the resolved address again at every delivery.
fn parse_url(state: &AppState, raw: &str) -> Result<String, ValidationError> {
    let url = WebhookUrl::parse("/url", raw)?;
    if state.settings.env == crate::config::Environment::Production
        && warden_infra::ssrf::check_url_text(url.as_str()).is_err()
    {
        return Err(ValidationError::new(
            "/url",
            "webhook_url_not_public",
            "must point at a public address (not loopback, private or link-local)",
        ));
    }
    Ok(url.as_str().to_owned())
}

fn parse_description(raw: &str) -> Result<String, ValidationError> {
    Text::parse("/description", raw, 255).map(|t| t.as_str().to_owned())
}

fn invalid(errors: Vec<ValidationError>) -> ApiResult<()> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::validation(errors))
    }
}

/// Subscribe a URL to event types. The `whsec_` signing secret is in this response only.
#[utoipa::path(post, path = "/v2/webhook_endpoints", tag = "Webhooks", request_body = CreateEndpointRequest,
    responses((status = 201, description = "The endpoint, with its secret (shown once)"),
              (status = 422, description = "Invalid field")),
    security(("bearer" = [])))]
pub async fn create_endpoint(
    State(state): State<AppState>,
    principal: Principal,
    meta: RequestMeta,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, axum::Json<Value>)> {
    let body: CreateEndpointRequest = parse_json(&body)?;
    let mut errors = Vec::new();
    let url = parse_url(&state, &body.url)
        .map_err(|e| errors.push(e))
        .ok();
    let event_types = EventFilter::parse("/event_types", &body.event_types)
        .map_err(|e| errors.push(e))
        .ok();
    let description = match body.description.as_deref() {
        Some(d) => parse_description(d).map_err(|e| errors.push(e)).ok(),
        None => None,
    };
    invalid(errors)?;
    let (Some(url), Some(event_types)) = (url, event_types) else {
        return Err(ApiError::internal(&"validated fields missing"));
    };
    let settings = EndpointSettings {
        url,
        event_types,
        description,
        enabled: body.enabled.unwrap_or(true),
    };
    let meta = meta.by(&principal);
    let (id, secret, position) = state
        .webhooks
        .create(principal.organization_id, settings, &meta)
        .await?;
    state.caught_up(position).await?;
    let data = with_secret(&state, &principal, id, &secret).await?;
    Ok((StatusCode::CREATED, axum::Json(json!({ "data": data }))))
}

/// The organization's endpoints (`page[number]`, `page[size]`); secrets are never shown.
#[utoipa::path(get, path = "/v2/webhook_endpoints", tag = "Webhooks",
    responses((status = 200, description = "A page of endpoints with meta")),
    security(("bearer" = [])))]
pub async fn list_endpoints(
    State(state): State<AppState>,
    principal: Principal,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<axum::Json<Value>> {
    let (number, size) = page(&query)?;
    let (rows, total) = endpoints::endpoints(
        &state.db.pool,
        &principal.organization_id.to_string(),
        size,
        (number - 1) * size,
    )
    .await?;
    let data: Vec<Value> = rows.into_iter().map(endpoint_view).collect();
    Ok(axum::Json(
        json!({ "data": data, "meta": page_meta(number, size, total) }),
    ))
}

/// One endpoint (without its secret).
#[utoipa::path(get, path = "/v2/webhook_endpoints/{id}", tag = "Webhooks",
    responses((status = 200, description = "The endpoint"), (status = 404, description = "No such endpoint")),
    security(("bearer" = [])))]
pub async fn get_endpoint(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    let row = own_endpoint(&state, &principal, path_id(&id)?).await?;
    Ok(axum::Json(json!({ "data": endpoint_view(row) })))
}

/// Parses an update: any of url, event_types, description (null clears it), enabled.
fn parse_patch(state: &AppState, bytes: &[u8]) -> ApiResult<EndpointPatch> {
    let body: Map<String, Value> = parse_json(bytes)?;
    let mut errors = Vec::new();
    let mut patch = EndpointPatch::default();
    for (key, value) in &body {
        let pointer = format!("/{key}");
        let wrong =
            |what: &str| ValidationError::new(&pointer, "invalid_value", format!("must be {what}"));
        match (key.as_str(), value) {
            ("url", Value::String(s)) => match parse_url(state, s) {
                Ok(u) => patch.url = Some(u),
                Err(e) => errors.push(e),
            },
            ("event_types", Value::Array(items)) => {
                let names: Option<Vec<String>> = items
                    .iter()
                    .map(|v| v.as_str().map(str::to_owned))
                    .collect();
                match names.map(|n| EventFilter::parse("/event_types", &n)) {
                    Some(Ok(f)) => patch.event_types = Some(f),
                    Some(Err(e)) => errors.push(e),
                    None => errors.push(wrong("a list of event type names")),
                }
            }
            ("description", Value::Null) => patch.description = Some(None),
            ("description", Value::String(s)) => match parse_description(s) {
                Ok(d) => patch.description = Some(Some(d)),
                Err(e) => errors.push(e),
            },
            ("enabled", Value::Bool(b)) => patch.enabled = Some(*b),
            ("url", _) | ("description", _) => errors.push(wrong("a string")),
            ("event_types", _) => errors.push(wrong("a list of event type names")),
            ("enabled", _) => errors.push(wrong("true or false")),
            _ => errors.push(ValidationError::new(
                &pointer,
                "unknown_field",
                "is not a field of a webhook endpoint",
            )),
        }
    }
    invalid(errors)?;
    Ok(patch)
}

/// Change an endpoint's URL, event types, description or enabled flag.
#[utoipa::path(patch, path = "/v2/webhook_endpoints/{id}", tag = "Webhooks", request_body(content = Object, description = "url, event_types, description, enabled"),
    responses((status = 200, description = "The endpoint"), (status = 404, description = "No such endpoint"),
              (status = 422, description = "Invalid field")),
    security(("bearer" = [])))]
pub async fn update_endpoint(
    State(state): State<AppState>,
    principal: Principal,
    meta: RequestMeta,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<axum::Json<Value>> {
    let id = path_id(&id)?;
    let patch = parse_patch(&state, &body)?;
    let meta = meta.by(&principal);
    let position = state
        .webhooks
        .update(principal.organization_id, id, patch, &meta)
        .await?;
    state.caught_up(position).await?;
    let row = own_endpoint(&state, &principal, id).await?;
    Ok(axum::Json(json!({ "data": endpoint_view(row) })))
}

/// Delete an endpoint: nothing more is sent to it, pending deliveries included.
#[utoipa::path(delete, path = "/v2/webhook_endpoints/{id}", tag = "Webhooks",
    responses((status = 200, description = "The endpoint as it was"), (status = 404, description = "No such endpoint")),
    security(("bearer" = [])))]
pub async fn delete_endpoint(
    State(state): State<AppState>,
    principal: Principal,
    meta: RequestMeta,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    let id = path_id(&id)?;
    let row = own_endpoint(&state, &principal, id).await?;
    let meta = meta.by(&principal);
    let position = state
        .webhooks
        .delete(principal.organization_id, id, &meta)
        .await?;
    state.caught_up(position).await?;
    Ok(axum::Json(json!({ "data": endpoint_view(row) })))
}

/// A new signing secret (in this response only). For 24 hours the previous one keeps
/// signing too: every delivery carries both signatures.
#[utoipa::path(post, path = "/v2/webhook_endpoints/{id}/actions/rotate_secret", tag = "Webhooks",
    responses((status = 200, description = "The endpoint, with its new secret (shown once)"),
              (status = 404, description = "No such endpoint")),
    security(("bearer" = [])))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    principal: Principal,
    meta: RequestMeta,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    let id = path_id(&id)?;
    let meta = meta.by(&principal);
    let (secret, position) = state
        .webhooks
        .rotate_secret(principal.organization_id, id, &meta)
        .await?;
    state.caught_up(position).await?;
    let data = with_secret(&state, &principal, id, &secret).await?;
    Ok(axum::Json(json!({ "data": data })))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedeliverFromRequest {
    /// Every matching event at this global position and later…
    pub from_position: Option<i64>,
    /// …or recorded at this RFC 3339 instant and later.
    pub from_time: Option<String>,
}

/// Queue again every event of the organization the endpoint subscribes to, from a
/// position or an instant on (each with its original `webhook-id`).
#[utoipa::path(post, path = "/v2/webhook_endpoints/{id}/actions/redeliver", tag = "Webhooks",
    request_body = RedeliverFromRequest,
    responses((status = 202, description = "{endpoint_id, enqueued}"), (status = 404, description = "No such endpoint"),
              (status = 422, description = "Neither or both of from_position and from_time")),
    security(("bearer" = [])))]
pub async fn redeliver_endpoint(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, axum::Json<Value>)> {
    let id = path_id(&id)?;
    let body: RedeliverFromRequest = parse_json(&body)?;
    let from = match (body.from_position, body.from_time.as_deref()) {
        (Some(p), None) if p >= 1 => ReplayFrom::Position(p),
        (Some(_), None) => {
            return Err(ValidationError::new(
                "/from_position",
                "invalid_value",
                "must be a global position of at least 1",
            )
            .into())
        }
        (None, Some(t)) => ReplayFrom::Time(
            DateTime::parse_from_rfc3339(t)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| {
                    ValidationError::new("/from_time", "invalid_time", "must be an RFC 3339 time")
                })?,
        ),
        _ => {
            return Err(ValidationError::new(
                "/from_position",
                "required",
                "give exactly one of from_position and from_time",
            )
            .into())
        }
    };
    let endpoint = own_endpoint(&state, &principal, id).await?;
    let enqueued = endpoints::redeliver_from(
        &state.db.pool,
        state.store.as_ref(),
        &endpoint,
        from,
        state.now(),
    )
    .await?;
    state.webhook_wake.notify_one();
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({ "data": {
            "record_type": "webhook_redelivery",
            "endpoint_id": endpoint.endpoint_id,
            "enqueued": enqueued,
        }})),
    ))
}

// --- the delivery log --------------------------------------------------------------------

/// An attempt's outcome as Telnyx names it.
fn outcome(status_code: Option<i64>) -> &'static str {
    if status_code.is_some_and(|s| (200..300).contains(&s)) {
        "delivered"
    } else {
        "failed"
    }
}

/// The event a delivery carries, as Telnyx's `webhook` object.
fn webhook_object(row: &DeliveryRow) -> Value {
    let data: Value = serde_json::from_str(&row.data).unwrap_or(Value::Null);
    // Telnyx-scheme rows hold the Telnyx event object; Standard Webhooks rows the
    // `{type, timestamp, data}` body.
    let field = |k: &str| data.get(k).cloned().unwrap_or(Value::Null);
    let (occurred_at, payload) =
        if row.scheme == warden_projections::webhooks::SCHEME_TELNYX_ED25519 {
            (field("occurred_at"), field("payload"))
        } else {
            (field("timestamp"), field("data"))
        };
    json!({
        "id": row.event_id,
        "event_type": row.event_type,
        "occurred_at": occurred_at,
        "payload": payload,
        "record_type": "event",
    })
}

async fn delivery_view(state: &AppState, row: DeliveryRow, owner: &str) -> ApiResult<Value> {
    let attempts = deliveries::attempts(&state.db.pool, &row.delivery_id).await?;
    let started_at = attempts
        .iter()
        .map(|a| a.attempted_at.clone())
        .min()
        .unwrap_or_else(|| row.created_at.clone());
    let attempts: Vec<Value> = attempts
        .into_iter()
        .map(|a| {
            json!({
                "attempt": a.attempt,
                "status": outcome(a.status_code),
                "started_at": a.attempted_at,
                "finished_at": a.attempted_at,
                "http": {
                    "request": { "url": a.url },
                    "response": { "status": a.status_code },
                },
                "errors": [],
                "error_detail": a.error,
            })
        })
        .collect();
    Ok(json!({
        "id": row.delivery_id,
        "record_type": "webhook_delivery",
        "status": row.status,
        "webhook": webhook_object(&row),
        "started_at": started_at,
        "finished_at": row.finished_at,
        "attempts": attempts,
        "user_id": owner,
        "endpoint_id": row.endpoint_id,
        "next_attempt_at": (row.status == "pending").then_some(row.next_attempt_at),
    }))
}

/// Whom Telnyx calls the delivery's `user_id`: the organization's owner.
async fn owner_id(state: &AppState, principal: &Principal) -> ApiResult<String> {
    Ok(warden_projections::organizations::get(
        &state.db.pool,
        &principal.organization_id.to_string(),
    )
    .await?
    .map(|o| o.owner_user_id)
    .unwrap_or_default())
}

fn time_filter(query: &HashMap<String, String>, key: &str) -> ApiResult<Option<DateTime<Utc>>> {
    match query.get(key) {
        None => Ok(None),
        Some(raw) => DateTime::parse_from_rfc3339(raw)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|_| {
                ValidationError::new(key, "invalid_time", "must be an RFC 3339 time").into()
            }),
    }
}

/// The organization's deliveries, newest first. Filters: `filter[status][eq]`
/// (delivered | failed | pending), `filter[event_type]` (comma-separated),
/// `filter[webhook][contains]`, `filter[started_at][gte|lte]`, `filter[finished_at][gte|lte]`.
#[utoipa::path(get, path = "/v2/webhook_deliveries", tag = "Webhooks",
    responses((status = 200, description = "A page of deliveries with meta"), (status = 422, description = "Bad filter")),
    security(("bearer" = [])))]
pub async fn list_deliveries(
    State(state): State<AppState>,
    principal: Principal,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<axum::Json<Value>> {
    let (number, size) = page(&query)?;
    let status = match query.get("filter[status][eq]").map(String::as_str) {
        None => None,
        Some(s @ ("delivered" | "failed" | "pending")) => Some(s.to_owned()),
        Some(_) => {
            return Err(ValidationError::new(
                "filter[status][eq]",
                "invalid_value",
                "must be delivered, failed or pending",
            )
            .into())
        }
    };
    let filter = DeliveryFilter {
        status,
        event_types: query
            .get("filter[event_type]")
            .map(|s| {
                s.split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
        webhook_contains: query
            .get("filter[webhook][contains]")
            .filter(|s| !s.is_empty())
            .cloned(),
        started_gte: time_filter(&query, "filter[started_at][gte]")?,
        started_lte: time_filter(&query, "filter[started_at][lte]")?,
        finished_gte: time_filter(&query, "filter[finished_at][gte]")?,
        finished_lte: time_filter(&query, "filter[finished_at][lte]")?,
    };
    let (rows, total) = deliveries::delivery_page(
        &state.db.pool,
        &principal.organization_id.to_string(),
        &filter,
        size,
        (number - 1) * size,
    )
    .await?;
    let owner = owner_id(&state, &principal).await?;
    let mut data = Vec::with_capacity(rows.len());
    for row in rows {
        data.push(delivery_view(&state, row, &owner).await?);
    }
    Ok(axum::Json(
        json!({ "data": data, "meta": page_meta(number, size, total) }),
    ))
}

async fn own_delivery(state: &AppState, principal: &Principal, id: &str) -> ApiResult<DeliveryRow> {
    let id = path_id(id)?;
    deliveries::delivery(
        &state.db.pool,
        &principal.organization_id.to_string(),
        &id.to_string(),
    )
    .await?
    .ok_or_else(ApiError::not_found)
}

/// One delivery with its attempts (newest first).
#[utoipa::path(get, path = "/v2/webhook_deliveries/{id}", tag = "Webhooks",
    responses((status = 200, description = "The delivery"), (status = 404, description = "No such delivery")),
    security(("bearer" = [])))]
pub async fn get_delivery(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    let row = own_delivery(&state, &principal, &id).await?;
    let owner = owner_id(&state, &principal).await?;
    Ok(axum::Json(
        json!({ "data": delivery_view(&state, row, &owner).await? }),
    ))
}

/// Send the delivery's event again, as a new delivery with the same `webhook-id`.
#[utoipa::path(post, path = "/v2/webhook_deliveries/{id}/actions/redeliver", tag = "Webhooks",
    responses((status = 202, description = "The new delivery"), (status = 404, description = "No such delivery")),
    security(("bearer" = [])))]
pub async fn redeliver_delivery(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, axum::Json<Value>)> {
    let original = own_delivery(&state, &principal, &id).await?;
    let new_id = deliveries::redeliver(&state.db.pool, &original, state.now()).await?;
    state.webhook_wake.notify_one();
    let row = own_delivery(&state, &principal, &new_id).await?;
    let owner = owner_id(&state, &principal).await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({ "data": delivery_view(&state, row, &owner).await? })),
    ))
}
