//! Sign-in and sign-out: `POST /v2/sessions`, `DELETE /v2/sessions/current`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use warden_commands::accounts::SignInOutcome;
use warden_domain::chain::format_time;
use warden_domain::two_factor::Method;

use super::error::{ApiError, ApiResult};
use super::extract::{Json, Principal, RequestMeta};
use crate::app::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v2/sessions", post(sign_in))
        .route("/v2/sessions/current", delete(sign_out))
}

#[derive(Deserialize, ToSchema)]
pub struct SignInRequest {
    pub email: String,
    pub password: String,
}

super::extract::redacted_debug!(SignInRequest);

/// Sign in with email and password. Unknown email and wrong password both give 401
/// `invalid_credentials`.
#[utoipa::path(post, path = "/v2/sessions", tag = "Sessions", request_body = SignInRequest,
    responses((status = 201, description = "A session (token shown once)"),
              (status = 401, description = "invalid_credentials"),
              (status = 429, description = "too_many_login_attempts")))]
pub async fn sign_in(
    State(state): State<AppState>,
    meta: RequestMeta,
    Json(body): Json<SignInRequest>,
) -> ApiResult<(StatusCode, axum::Json<Value>)> {
    let outcome = state
        .accounts
        .sign_in(&body.email, &body.password, &meta.anonymous())
        .await?;
    let data = match outcome {
        SignInOutcome::Session(session) => {
            state.caught_up(session.position).await?;
            json!({
                "record_type": "session",
                "token": session.token,
                "expires_at": format_time(session.expires_at),
                "user_id": session.user_id,
                "two_factor_setup_required": session.two_factor_setup_required,
            })
        }
        SignInOutcome::Challenge {
            challenge_id,
            expires_at,
            method,
            position,
            ..
        } => {
            state.caught_up(position).await?;
            json!({
                "record_type": "two_factor_challenge",
                "challenge_id": challenge_id,
                "methods": match method {
                    Some(Method::Totp) => json!(["totp", "backup_code"]),
                    Some(Method::Sms | Method::Call) => json!(["sms", "call", "backup_code"]),
                    None => json!(["backup_code"]),
                },
                "expires_at": format_time(expires_at),
            })
        }
    };
    Ok((StatusCode::CREATED, axum::Json(json!({ "data": data }))))
}

/// End the session whose token made this request.
#[utoipa::path(delete, path = "/v2/sessions/current", tag = "Sessions",
    responses((status = 204, description = "Signed out"), (status = 401, description = "Not signed in")),
    security(("bearer" = [])))]
pub async fn sign_out(
    State(state): State<AppState>,
    principal: Principal,
    meta: RequestMeta,
) -> ApiResult<StatusCode> {
    let session_id = principal.session_id.ok_or_else(ApiError::not_found)?;
    let position = state
        .accounts
        .sign_out(principal.user_id, session_id, &meta.by(&principal))
        .await?;
    state.caught_up(position).await?;
    Ok(StatusCode::NO_CONTENT)
}
