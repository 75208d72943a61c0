//! `Idempotency-Key` on POST (API.md): the same key and body within 24 h replays the first
//! final answer and writes nothing; another body is 422 `idempotency_key_reused`; while the
//! first is running, 409 `idempotency_key_in_use`. The record is keyed by who asks (the
//! bearer token's digest, or `anonymous`), its effect is marked in the same transaction as
//! the events, and the saved response is sealed at rest (it may hold a token).

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Duration;
use sha2::{Digest as _, Sha256};
use warden_commands::store::{IdempotencyBegin, IdempotencyKey, SavedResponse};
use warden_domain::Sealed;

use super::error::ApiError;
use super::extract::{authenticate, bearer, MAX_BODY};
use crate::app::AppState;

/// How long a record is kept.
pub const RETENTION_HOURS: i64 = 24;
/// An in-flight record this old whose request never committed may be retried.
const STALE_AFTER_SECS: i64 = 60;
/// The largest saved response.
const MAX_RESPONSE: usize = 1024 * 1024;
const SUBJECT: &str = "system-idempotency";

pub async fn middleware(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match handle(state, request, next).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn handle(state: AppState, request: Request, next: Next) -> Result<Response, ApiError> {
    if request.method() != Method::POST {
        return Ok(next.run(request).await);
    }
    let Some(raw_key) = request.headers().get("idempotency-key") else {
        return Ok(next.run(request).await);
    };
    let key = raw_key
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| (0x21..0x7f).contains(&b)))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_idempotency_key",
                "Invalid Idempotency-Key",
                "The Idempotency-Key header must be 1 to 255 visible ASCII characters.",
            )
        })?
        .to_owned();
    // Keys are per caller: a bearer token (which must still be live, so a dead session
    // cannot replay a response that held a secret), or an anonymous client's address.
    let scope = match bearer(request.headers()) {
        Some(token) => {
            if authenticate(&state, token).await?.is_none() {
                return Err(ApiError::unauthorized());
            }
            format!("token:{}", state.secrets.token_digest(token).0)
        }
        None => {
            let ip = request
                .extensions()
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip().to_string())
                .unwrap_or_default();
            format!("anonymous:{ip}")
        }
    };
    let (parts, body) = request.into_parts();
    let bytes = to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| ApiError::malformed_json("The request body is too large or unreadable."))?;
    let mut hasher = Sha256::new();
    hasher.update(parts.method.as_str().as_bytes());
    hasher.update([0]);
    hasher.update(parts.uri.path().as_bytes());
    hasher.update([0]);
    hasher.update(&bytes);
    let request_hash = hex::encode(hasher.finalize());
    let id = IdempotencyKey { scope, key };
    let begin = state
        .store
        .idempotency_begin(
            &id,
            &request_hash,
            state.now(),
            Duration::seconds(STALE_AFTER_SECS),
        )
        .await?;
    match begin {
        IdempotencyBegin::Started => {}
        IdempotencyBegin::Replay(saved) => return replay(&state, saved).await,
        IdempotencyBegin::Mismatch => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "Idempotency key reused",
                "This Idempotency-Key was already used with a different request.",
            ))
        }
        IdempotencyBegin::InFlight | IdempotencyBegin::CommittedWithoutResponse => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_key_in_use",
                "Idempotency key in use",
                "A request with this Idempotency-Key is still being processed.",
            ))
        }
    }
    let mut request = Request::from_parts(parts, Body::from(bytes));
    request.extensions_mut().insert(id.clone());
    let response = next.run(request).await;
    let status = response.status();
    if status.is_server_error() {
        state.store.idempotency_abandon(&id).await?;
        return Ok(response);
    }
    let (parts, body) = response.into_parts();
    let body = to_bytes(body, MAX_RESPONSE)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let sealed = state.secrets.seal(SUBJECT, &body).await?;
    let stored = serde_json::to_vec(&sealed).map_err(|e| ApiError::internal(&e))?;
    state
        .store
        .idempotency_finish(
            &id,
            SavedResponse {
                status: status.as_u16(),
                body: stored,
            },
        )
        .await?;
    Ok(Response::from_parts(parts, Body::from(body)))
}

async fn replay(state: &AppState, saved: SavedResponse) -> Result<Response, ApiError> {
    let sealed: Sealed = serde_json::from_slice(&saved.body).map_err(|e| ApiError::internal(&e))?;
    let body = state
        .secrets
        .open(&sealed)
        .await?
        .ok_or_else(|| ApiError::internal(&"saved response key missing"))?;
    let status = StatusCode::from_u16(saved.status).map_err(|e| ApiError::internal(&e))?;
    let empty = body.is_empty();
    let mut response = (status, body).into_response();
    if !empty {
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
    }
    response.headers_mut().insert(
        "idempotent-replayed",
        header::HeaderValue::from_static("true"),
    );
    Ok(response)
}
