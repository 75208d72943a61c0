//! The auditors' view over HTTP (`audit:read`): one stream's raw envelopes (sealed fields
//! stay sealed), its state as of any instant (secrets redacted), and its hash-chain check.
//! A stream of another organization, or no stream at all, is 404. And the organization's
//! Telnyx-compatible audit log, `GET /v2/audit_events`.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use warden_domain::chain::format_time;
use warden_domain::values::ValidationError;
use warden_projections::audit_events::AuditQuery;

use super::error::{ApiError, ApiResult};
use super::extract::Principal;
use super::paging::Page;
use crate::app::AppState;
use crate::audit::{replay, replay_stored, ReplayError, Replayed};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v2/audit/streams/{stream_id}/events", get(events))
        .route("/v2/audit/streams/{stream_id}/state", get(state_as_of))
        .route("/v2/audit/streams/{stream_id}/verify", get(verify))
        .route("/v2/audit_events", get(audit_events))
}

fn parse_time(query: &BTreeMap<String, String>, name: &str) -> ApiResult<Option<String>> {
    match query.get(name) {
        Some(raw) => Ok(Some(format_time(
            chrono::DateTime::parse_from_rfc3339(raw.trim())
                .map(|t| t.with_timezone(&chrono::Utc))
                .map_err(|_| {
                    ValidationError::new(name, "invalid_time", "must be an RFC 3339 time")
                })?,
        ))),
        None => Ok(None),
    }
}

/// The organization's audit log, Telnyx-compatible: one entry per change recorded in the
/// log (its own, its users' and its Verify configuration's streams), with who made it and
/// each changed field's `from` and `to`; sealed values and digests show as `"[REDACTED]"`.
/// Newest first unless `sort` is `created_at` (or `asc`).
#[utoipa::path(get, path = "/v2/audit_events", tag = "Audit",
    params(("filter[created_after]" = Option<String>, Query, description = "RFC 3339; entries strictly after"),
           ("filter[created_before]" = Option<String>, Query, description = "RFC 3339; entries strictly before"),
           ("sort" = Option<String>, Query, description = "-created_at (default) | created_at | desc | asc"),
           ("page[number]" = Option<usize>, Query, description = "From 1"),
           ("page[size]" = Option<usize>, Query, description = "1 to 250, default 20")),
    responses((status = 200, description = "{data: [audit_event], meta}"),
              (status = 422, description = "A filter, sort or page value is invalid")),
    security(("bearer" = [])))]
pub async fn audit_events(
    State(state): State<AppState>,
    principal: Principal,
    Query(query): Query<BTreeMap<String, String>>,
) -> ApiResult<axum::Json<Value>> {
    let page = Page::from_query(&query)?;
    let created_after = parse_time(&query, "filter[created_after]")?;
    let created_before = parse_time(&query, "filter[created_before]")?;
    let newest_first = match query.get("sort").map(|s| s.trim()) {
        None | Some("-created_at") | Some("desc") => true,
        Some("created_at") | Some("asc") => false,
        Some(_) => {
            return Err(ValidationError::new(
                "sort",
                "invalid_value",
                "must be created_at, -created_at, asc or desc",
            )
            .into())
        }
    };
    let offset = page.offset();
    let q = AuditQuery {
        organization_id: principal.organization_id.to_string(),
        created_after,
        created_before,
        newest_first,
        offset: i64::try_from(offset).unwrap_or(i64::MAX),
        limit: i64::try_from(page.size).unwrap_or(i64::MAX),
    };
    let (data, total) = warden_projections::audit_events::list(&state.db.pool, &q).await?;
    let total = usize::try_from(total).unwrap_or_default();
    Ok(axum::Json(json!({
        "data": data,
        "meta": {
            "page_number": page.number,
            "page_size": page.size,
            "total_pages": total.div_ceil(page.size),
            "total_results": total,
        },
    })))
}

/// Checks that the stream exists and belongs to the caller's organization. Ownership comes
/// from the stream's first event (its creation), so a later unreadable or tampered event
/// does not hide the stream from its own auditors; if even the first is unreadable, the
/// read models answer for user and organization streams. Only that event is read: a
/// stream may be long.
async fn own_stream(state: &AppState, principal: &Principal, stream_id: &str) -> ApiResult<()> {
    let first = state.store.read_stream_page(stream_id, 0, 1).await?;
    let Some(first) = first.first() else {
        return Err(ApiError::not_found());
    };
    let owner = match replay(stream_id, std::slice::from_ref(first), None) {
        Ok(Replayed {
            organization_id, ..
        }) => organization_id,
        Err(_) => match stream_id.split_once('-') {
            Some(("organization", id)) => uuid::Uuid::parse_str(id).ok(),
            Some(("user", id)) => warden_projections::users::get(&state.db.pool, id)
                .await?
                .and_then(|u| uuid::Uuid::parse_str(&u.organization_id).ok()),
            _ => None,
        },
    };
    if owner != Some(principal.organization_id) {
        return Err(ApiError::not_found());
    }
    Ok(())
}

/// One stream's events exactly as stored (sealed fields stay sealed), in version order.
/// Page N holds versions (N − 1) × size + 1 to N × size, read from the store alone.
#[utoipa::path(get, path = "/v2/audit/streams/{stream_id}/events", tag = "Audit",
    responses((status = 200, description = "The envelopes, paged"), (status = 404, description = "No such stream here")),
    security(("bearer" = [])))]
pub async fn events(
    State(state): State<AppState>,
    principal: Principal,
    Path(stream_id): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
) -> ApiResult<axum::Json<Value>> {
    let page = Page::from_query(&query)?;
    own_stream(&state, &principal, &stream_id).await?;
    let total = state.store.stream_version(&stream_id).await?;
    let after = i64::try_from(page.offset()).unwrap_or(i64::MAX);
    let size = i64::try_from(page.size).unwrap_or(i64::MAX);
    let events = if after < total {
        state
            .store
            .read_stream_page(&stream_id, after, size)
            .await?
    } else {
        Vec::new()
    };
    let rows = events
        .iter()
        .map(|e| serde_json::to_value(e).map_err(|e| ApiError::internal(&e)))
        .collect::<ApiResult<Vec<Value>>>()?;
    Ok(axum::Json(
        page.window(rows, usize::try_from(total).unwrap_or(0)),
    ))
}

/// The stream's aggregate rebuilt from the events recorded at or before `as_of` (RFC 3339;
/// now when omitted), with sealed values and digests redacted.
#[utoipa::path(get, path = "/v2/audit/streams/{stream_id}/state", tag = "Audit",
    params(("as_of" = Option<String>, Query, description = "RFC 3339 instant")),
    responses((status = 200, description = "The state"), (status = 404, description = "No such stream here"),
              (status = 422, description = "as_of is not an RFC 3339 time")),
    security(("bearer" = [])))]
pub async fn state_as_of(
    State(state): State<AppState>,
    principal: Principal,
    Path(stream_id): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
) -> ApiResult<axum::Json<Value>> {
    let as_of = match query.get("as_of") {
        Some(raw) => Some(
            chrono::DateTime::parse_from_rfc3339(raw)
                .map(|t| t.with_timezone(&chrono::Utc))
                .map_err(|_| {
                    ValidationError::new("as_of", "invalid_time", "must be an RFC 3339 time")
                })?,
        ),
        None => None,
    };
    own_stream(&state, &principal, &stream_id).await?;
    let replayed = match replay_stored(state.store.as_ref(), &stream_id, as_of).await {
        Ok(Some(replayed)) => replayed,
        Ok(None) => return Err(ApiError::not_found()),
        Err(ReplayError::Store(e)) => return Err(e.into()),
        Err(ReplayError::Audit(e)) => {
            return Err(ApiError::new(
                axum::http::StatusCode::CONFLICT,
                "stream_unreadable",
                "Stream unreadable",
                format!("The stream cannot be replayed: {e}. Check it with its verify endpoint."),
            ))
        }
    };
    Ok(axum::Json(json!({ "data": {
        "record_type": "stream_state",
        "stream_id": replayed.stream_id,
        "stream_type": replayed.stream_type,
        "as_of": format_time(as_of.unwrap_or_else(|| state.now())),
        "version": replayed.version,
        "last_event_at": replayed.last_event_at.map(format_time),
        "state": replayed.state,
    }})))
}

/// Recomputes the stream's hash chain and names the first broken version.
#[utoipa::path(get, path = "/v2/audit/streams/{stream_id}/verify", tag = "Audit",
    responses((status = 200, description = "{valid, events, first_broken_version?}")),
    security(("bearer" = [])))]
pub async fn verify(
    State(state): State<AppState>,
    principal: Principal,
    Path(stream_id): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    own_stream(&state, &principal, &stream_id).await?;
    let report = state.store.verify_stream(&stream_id).await?;
    let mut data = serde_json::to_value(&report).map_err(|e| ApiError::internal(&e))?;
    if let Some(obj) = data.as_object_mut() {
        obj.insert("record_type".into(), json!("stream_verification"));
        obj.insert("stream_id".into(), json!(stream_id));
    }
    Ok(axum::Json(json!({ "data": data })))
}
