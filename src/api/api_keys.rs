//! API keys: each acts as its user, with that user's permissions, whatever their 2FA
//! state. The secret is in the 201 response only; Warden keeps its digest and a display
//! prefix. A caller manages their own keys.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::ToSchema;
use uuid::Uuid;
use warden_commands::members::NewApiKey;
use warden_projections::members as model;

use super::error::{ApiError, ApiResult};
use super::extract::{Json, Principal, RequestMeta};
use super::paging::Page;
use crate::app::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v2/api_keys", get(list).post(create))
        .route("/v2/api_keys/{id}", delete(revoke))
        .route("/v2/api_keys/{id}/actions/rotate", post(rotate))
}

async fn view(state: &AppState, row: &model::ApiKeyRow) -> ApiResult<Value> {
    let last_used = model::api_key_last_used(&state.db.pool, &row.key_id).await?;
    Ok(json!({
        "record_type": "api_key",
        "id": row.key_id,
        "name": row.name,
        "prefix": row.prefix,
        "user_id": row.user_id,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "last_used_at": last_used,
        "revoked_at": row.revoked_at,
    }))
}

async fn own_key(state: &AppState, principal: &Principal, id: &str) -> ApiResult<model::ApiKeyRow> {
    let id = Uuid::parse_str(id).map_err(|_| ApiError::not_found())?;
    model::api_key(
        &state.db.pool,
        &principal.user_id.to_string(),
        &id.to_string(),
    )
    .await?
    .ok_or_else(ApiError::not_found)
}

/// The key's view plus its secret, shown this once.
async fn with_secret(state: &AppState, principal: &Principal, key: &NewApiKey) -> ApiResult<Value> {
    state.caught_up(key.position).await?;
    let row = own_key(state, principal, &key.key_id.to_string()).await?;
    let mut data = view(state, &row).await?;
    if let Some(obj) = data.as_object_mut() {
        obj.insert("secret".into(), json!(key.secret));
    }
    Ok(data)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKeyRequest {
    pub name: String,
}

/// A new key for the caller; `secret` is shown in this response only.
#[utoipa::path(post, path = "/v2/api_keys", tag = "API keys", request_body = CreateApiKeyRequest,
    responses((status = 201, description = "The key, with its secret")), security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    meta: RequestMeta,
    Json(body): Json<CreateApiKeyRequest>,
) -> ApiResult<(StatusCode, axum::Json<Value>)> {
    let key = state
        .members
        .create_api_key(principal.user_id, &body.name, &meta.by(&principal))
        .await?;
    let data = with_secret(&state, &principal, &key).await?;
    Ok((StatusCode::CREATED, axum::Json(json!({ "data": data }))))
}

/// The caller's live keys (prefix and last use; never the secret).
#[utoipa::path(get, path = "/v2/api_keys", tag = "API keys",
    responses((status = 200, description = "Keys")), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Query(query): Query<BTreeMap<String, String>>,
) -> ApiResult<axum::Json<Value>> {
    let page = Page::from_query(&query)?;
    let mut rows = Vec::new();
    for row in model::api_keys(&state.db.pool, &principal.user_id.to_string()).await? {
        rows.push(view(&state, &row).await?);
    }
    Ok(axum::Json(page.list(rows)))
}

/// Revoke a key: it stops working at once.
#[utoipa::path(delete, path = "/v2/api_keys/{id}", tag = "API keys",
    responses((status = 200, description = "The revoked key"), (status = 404, description = "No such key of yours")),
    security(("bearer" = [])))]
pub async fn revoke(
    State(state): State<AppState>,
    principal: Principal,
    meta: RequestMeta,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    let row = own_key(&state, &principal, &id).await?;
    let key_id = Uuid::parse_str(&row.key_id).map_err(|e| ApiError::internal(&e))?;
    let position = state
        .members
        .revoke_api_key(principal.user_id, key_id, &meta.by(&principal))
        .await?;
    state.caught_up(position).await?;
    let mut data = view(&state, &row).await?;
    if let Some(obj) = data.as_object_mut() {
        obj.insert(
            "revoked_at".into(),
            json!(warden_domain::chain::format_time(state.now())),
        );
    }
    Ok(axum::Json(json!({ "data": data })))
}

/// A fresh secret for the key (shown once); the old secret stops working at once.
#[utoipa::path(post, path = "/v2/api_keys/{id}/actions/rotate", tag = "API keys",
    responses((status = 200, description = "The key, with its new secret")), security(("bearer" = [])))]
pub async fn rotate(
    State(state): State<AppState>,
    principal: Principal,
    meta: RequestMeta,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    let row = own_key(&state, &principal, &id).await?;
    let key_id = Uuid::parse_str(&row.key_id).map_err(|e| ApiError::internal(&e))?;
    let key = state
        .members
        .rotate_api_key(principal.user_id, key_id, &meta.by(&principal))
        .await?;
    let data = with_secret(&state, &principal, &key).await?;
    Ok(axum::Json(json!({ "data": data })))
}
