//! The signed-in user: `GET/PATCH /v2/users/me`, change email, change password.

use axum::extract::State;
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::ToSchema;
use warden_commands::accounts::{ProfileChanges, SERVICE_NAME};
use warden_domain::values::{EmailAddress, Password, PhoneNumber, Text};

use super::error::{ApiError, ApiResult};
use super::extract::{all_valid, Json, Principal, RequestMeta};
use super::views;
use crate::app::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v2/users/me", get(get_me).patch(patch_me))
        .route("/v2/users/me/actions/change_email", post(change_email))
        .route(
            "/v2/users/me/actions/change_password",
            post(change_password),
        )
}

/// The signed-in user, with their two-factor status.
#[utoipa::path(get, path = "/v2/users/me", tag = "Users",
    responses((status = 200, description = "The user"), (status = 401, description = "Not signed in")),
    security(("bearer" = [])))]
pub async fn get_me(principal: Principal) -> ApiResult<axum::Json<Value>> {
    // The row the request was authenticated with: read for this request (or cached and
    // evicted by any event on this user's stream, see `auth_cache`).
    Ok(axum::Json(
        json!({ "data": views::user_row(&principal.user) }),
    ))
}

/// The caller as the read models show them after their own command (read again: the row
/// the request was authenticated with predates it).
async fn me_after_change(state: &AppState, principal: &Principal) -> ApiResult<axum::Json<Value>> {
    Ok(axum::Json(
        json!({ "data": views::user(state, principal.user_id).await? }),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct PatchMeRequest {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    /// E.164.
    pub phone_number: Option<String>,
}

/// Change your name or phone number.
#[utoipa::path(patch, path = "/v2/users/me", tag = "Users", request_body = PatchMeRequest,
    responses((status = 200, description = "The updated user"), (status = 422, description = "Invalid field")),
    security(("bearer" = [])))]
pub async fn patch_me(
    State(state): State<AppState>,
    principal: Principal,
    meta: RequestMeta,
    Json(body): Json<PatchMeRequest>,
) -> ApiResult<axum::Json<Value>> {
    let first_name = body
        .first_name
        .as_deref()
        .map(|s| Text::parse("/first_name", s, 100))
        .transpose();
    let last_name = body
        .last_name
        .as_deref()
        .map(|s| Text::parse("/last_name", s, 100))
        .transpose();
    let phone_number = body
        .phone_number
        .as_deref()
        .map(|s| PhoneNumber::parse("/phone_number", s))
        .transpose();
    all_valid([
        first_name.as_ref().err().cloned(),
        last_name.as_ref().err().cloned(),
        phone_number.as_ref().err().cloned(),
    ])?;
    let (Ok(first_name), Ok(last_name), Ok(phone_number)) = (first_name, last_name, phone_number)
    else {
        return Err(ApiError::internal(&"validation mismatch"));
    };
    let position = state
        .accounts
        .update_profile(
            principal.user_id,
            ProfileChanges {
                first_name,
                last_name,
                phone_number,
            },
            &meta.by(&principal),
        )
        .await?;
    state.caught_up(position).await?;
    me_after_change(&state, &principal).await
}

#[derive(Deserialize, ToSchema)]
pub struct ChangeEmailRequest {
    pub new_email: String,
    pub current_password: String,
}

super::extract::redacted_debug!(ChangeEmailRequest);

/// Move the account to a new email address (current password required).
#[utoipa::path(post, path = "/v2/users/me/actions/change_email", tag = "Users", request_body = ChangeEmailRequest,
    responses((status = 200, description = "The updated user"), (status = 403, description = "Wrong password"),
              (status = 409, description = "Email already in use"),
              (status = 429, description = "Too many wrong current passwords; wait a minute")),
    security(("bearer" = [])))]
pub async fn change_email(
    State(state): State<AppState>,
    principal: Principal,
    meta: RequestMeta,
    Json(body): Json<ChangeEmailRequest>,
) -> ApiResult<axum::Json<Value>> {
    let new_email = EmailAddress::parse("/new_email", &body.new_email)?;
    let position = state
        .accounts
        .change_email(
            principal.user_id,
            new_email,
            &body.current_password,
            &meta.by(&principal),
        )
        .await?;
    state.caught_up(position).await?;
    me_after_change(&state, &principal).await
}

#[derive(Deserialize, ToSchema)]
pub struct ChangePasswordRequest {
    pub current_password: String,
    pub new_password: String,
}

super::extract::redacted_debug!(ChangePasswordRequest);

/// Set a new password (current password required); every other session ends.
#[utoipa::path(post, path = "/v2/users/me/actions/change_password", tag = "Users", request_body = ChangePasswordRequest,
    responses((status = 200, description = "The user"), (status = 403, description = "Wrong password"),
              (status = 422, description = "Password refused"),
              (status = 429, description = "Too many wrong current passwords; wait a minute")),
    security(("bearer" = [])))]
pub async fn change_password(
    State(state): State<AppState>,
    principal: Principal,
    meta: RequestMeta,
    Json(body): Json<ChangePasswordRequest>,
) -> ApiResult<axum::Json<Value>> {
    let email = views::user(&state, principal.user_id).await?;
    let local = email
        .get("email")
        .and_then(Value::as_str)
        .and_then(|e| e.split('@').next())
        .unwrap_or_default()
        .to_owned();
    let new_password =
        Password::parse("/new_password", &body.new_password, &[SERVICE_NAME, &local])?;
    let position = state
        .accounts
        .change_password(
            principal.user_id,
            principal.session_id,
            &body.current_password,
            new_password,
            &meta.by(&principal),
        )
        .await?;
    state.caught_up(position).await?;
    me_after_change(&state, &principal).await
}
