//! `Idempotency-Key` on POST (API.md): the same key and body within 24 h replays the first
//! final answer and writes nothing; another body is 422 `idempotency_key_reused`; while the
//! first is running, 409 `idempotency_key_in_use`. The record is keyed by who asks (the
//! bearer token's digest, or `anonymous`), its effect is marked in the same transaction as
//! the events, and the saved response is sealed at rest (it may hold a token).
//!
//! Each run holds the record under a fresh owner token (its lease): if it runs so long that
//! a retry takes the record over, its own commit, save or release fails and changes nothing.
//!
//! A 5xx that wrote nothing releases the key, so a retry runs afresh. A 5xx after the effect
//! committed (the read models lagged, a code could not be sent) must not run again, and
//! replaying a 5xx would only invite endless retries: the key's final answer becomes 409
//! `idempotency_key_committed`, which says the request took effect and its response was
//! lost, so read the resource instead. A request whose owner stopped between commit and
//! save gets the same answer once its record is stale.

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Duration;
use sha2::{Digest as _, Sha256};
use warden_commands::store::{
    IdempotencyAbandon, IdempotencyBegin, IdempotencyKey, IdempotencyLease, SavedResponse,
};
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
    let lease = match begin {
        IdempotencyBegin::Started(lease) => lease,
        IdempotencyBegin::Replay(saved) => return replay(&state, saved).await,
        IdempotencyBegin::Mismatch => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "Idempotency key reused",
                "This Idempotency-Key was already used with a different request.",
            ))
        }
        IdempotencyBegin::InFlight => return Err(ApiError::idempotency_key_in_use()),
        IdempotencyBegin::CommittedWithoutResponse => return Err(committed_without_response()),
    };
    let mut request = Request::from_parts(parts, Body::from(bytes));
    request.extensions_mut().insert(lease.clone());
    let response = next.run(request).await;
    let status = response.status();
    if status.is_server_error() {
        if state.store.idempotency_abandon(&lease).await? == IdempotencyAbandon::Committed {
            // The effect is written; only its answer failed. Retries must learn that.
            let (parts, body) = committed_without_response().into_response().into_parts();
            let body = to_bytes(body, MAX_RESPONSE)
                .await
                .map_err(|e| ApiError::internal(&e))?;
            save(&state, &lease, parts.status, &body).await?;
        }
        return Ok(response);
    }
    let (parts, body) = response.into_parts();
    let body = to_bytes(body, MAX_RESPONSE)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    save(&state, &lease, status, &body).await?;
    Ok(Response::from_parts(parts, Body::from(body)))
}

/// Seals and saves the key's final answer.
async fn save(
    state: &AppState,
    lease: &IdempotencyLease,
    status: StatusCode,
    body: &[u8],
) -> Result<(), ApiError> {
    let sealed = state.secrets.seal(SUBJECT, body).await?;
    let stored = serde_json::to_vec(&sealed).map_err(|e| ApiError::internal(&e))?;
    state
        .store
        .idempotency_finish(
            lease,
            SavedResponse {
                status: status.as_u16(),
                body: stored,
            },
        )
        .await?;
    Ok(())
}

/// 409 for a key whose request took effect but whose response was lost: final, not "retry".
fn committed_without_response() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "idempotency_key_committed",
        "Idempotency key already committed",
        "The original request with this Idempotency-Key took effect, but its response was \
         lost. Do not retry it: read the resource's current state instead.",
    )
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

/// After a person is forgotten: every saved answer that shows any of `values` (their
/// address, names, phone numbers) becomes the final 409 `idempotency_key_committed`, so a
/// replay can no longer hand their data out (the answer was sealed under the system key,
/// not theirs). The record stays, so a retry still cannot run the request twice. Returns
/// how many answers were replaced.
pub async fn forget_saved_answers(state: &AppState, values: &[String]) -> Result<u64, ApiError> {
    let values: Vec<&[u8]> = values
        .iter()
        .filter(|v| !v.is_empty())
        .map(|v| v.as_bytes())
        .collect();
    if values.is_empty() {
        return Ok(0);
    }
    let rows = sqlx::query("SELECT scope, key, body FROM idempotency_keys WHERE body IS NOT NULL")
        .fetch_all(&state.db.pool)
        .await?;
    let (parts, body) = committed_without_response().into_response().into_parts();
    let replacement = to_bytes(body, MAX_RESPONSE)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let mut replaced = 0;
    for row in rows {
        use sqlx::Row;
        let scope: String = row.try_get("scope")?;
        let key: String = row.try_get("key")?;
        let stored: Vec<u8> = row.try_get("body")?;
        let Ok(sealed) = serde_json::from_slice::<Sealed>(&stored) else {
            continue;
        };
        let Some(body) = state.secrets.open(&sealed).await? else {
            continue;
        };
        if !values
            .iter()
            .any(|v| body.windows(v.len()).any(|w| w == *v))
        {
            continue;
        }
        let sealed = state.secrets.seal(SUBJECT, &replacement).await?;
        let stored = serde_json::to_vec(&sealed).map_err(|e| ApiError::internal(&e))?;
        sqlx::query(
            "UPDATE idempotency_keys SET status = $3, body = $4 WHERE scope = $1 AND key = $2",
        )
        .bind(scope)
        .bind(key)
        .bind(i64::from(parts.status.as_u16()))
        .bind(stored)
        .execute(&state.db.pool)
        .await?;
        replaced += 1;
    }
    Ok(replaced)
}
