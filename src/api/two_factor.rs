//! Two-factor authentication over HTTP: status, TOTP enrollment and confirmation, backup
//! codes, and answering the sign-in challenge.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::ToSchema;
use uuid::Uuid;
use warden_commands::two_factor::Presented;
use warden_domain::chain::format_time;
use warden_domain::two_factor::BACKUP_CODES_LOW;
use warden_domain::values::ValidationError;
use warden_projections::{sessions, users};

use super::error::{ApiError, ApiResult};
use super::extract::{Json, Principal, RequestMeta};
use crate::app::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v2/users/me/two_factor", get(status))
        .route("/v2/users/me/two_factor/enrollments", post(enroll))
        .route(
            "/v2/users/me/two_factor/enrollments/{id}/actions/confirm",
            post(confirm),
        )
        .route("/v2/users/me/two_factor/backup_codes", post(regenerate))
        .route(
            "/v2/two_factor_challenges/{id}/actions/verify",
            post(verify_challenge),
        )
}

/// The caller's two-factor status.
#[utoipa::path(get, path = "/v2/users/me/two_factor", tag = "Two-factor authentication",
    responses((status = 200, description = "{enabled, method, phone_number, backup_codes_remaining, backup_codes_low}")),
    security(("bearer" = [])))]
pub async fn status(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<axum::Json<Value>> {
    let row = users::get(&state.db.pool, &principal.user_id.to_string())
        .await?
        .ok_or_else(ApiError::not_found)?;
    let enabled = row.two_factor_enabled != 0;
    Ok(axum::Json(json!({ "data": {
        "record_type": "two_factor",
        "enabled": enabled,
        "method": row.two_factor_method,
        "phone_number": null,
        "backup_codes_remaining": row.backup_codes_remaining,
        "backup_codes_low": enabled && row.backup_codes_remaining <= i64::from(BACKUP_CODES_LOW),
    }})))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct EnrollRequest {
    /// `totp` (authenticator app). SMS and voice-call enrollment are not available yet.
    pub method: String,
}

/// Start enrolling an authenticator app: returns the secret, an otpauth URI and QR codes.
#[utoipa::path(post, path = "/v2/users/me/two_factor/enrollments", tag = "Two-factor authentication",
    request_body = EnrollRequest,
    responses((status = 201, description = "The enrollment, with secret, otpauth_uri, qr_code_png, qr_code_svg"),
              (status = 409, description = "two_factor_already_enabled")),
    security(("bearer" = [])))]
pub async fn enroll(
    State(state): State<AppState>,
    principal: Principal,
    meta: RequestMeta,
    Json(body): Json<EnrollRequest>,
) -> ApiResult<(StatusCode, axum::Json<Value>)> {
    match body.method.as_str() {
        "totp" => {}
        "sms" | "call" => {
            return Err(ValidationError::new(
                "/method",
                "method_unavailable",
                "SMS and voice-call enrollment are not available yet; use totp",
            )
            .into())
        }
        _ => {
            return Err(ValidationError::new(
                "/method",
                "invalid_method",
                "must be one of: totp, sms, call",
            )
            .into())
        }
    }
    let enrollment = state
        .two_factor
        .start_totp(principal.user_id, &meta.by(&principal))
        .await?;
    state.caught_up(enrollment.position).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({ "data": {
            "record_type": "two_factor_enrollment",
            "enrollment_id": enrollment.enrollment_id,
            "method": "totp",
            "expires_at": format_time(enrollment.expires_at),
            "secret": enrollment.secret_base32,
            "otpauth_uri": enrollment.otpauth_uri,
            "qr_code_png": base64::engine::general_purpose::STANDARD.encode(&enrollment.qr_png),
            "qr_code_svg": enrollment.qr_svg,
        }})),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CodeRequest {
    /// A current code from the authenticator app.
    pub code: Option<String>,
    /// Or one of the backup codes (where accepted).
    pub backup_code: Option<String>,
}

fn presented(body: CodeRequest, allow_backup: bool) -> Result<Presented, ApiError> {
    match (body.code, body.backup_code) {
        (Some(code), None) => Ok(Presented::Code(code)),
        (None, Some(code)) if allow_backup => Ok(Presented::BackupCode(code)),
        (None, Some(_)) => Err(ValidationError::new(
            "/backup_code",
            "not_allowed",
            "a backup code cannot be used here",
        )
        .into()),
        _ => Err(ValidationError::new(
            "/code",
            "required",
            if allow_backup {
                "give exactly one of code or backup_code"
            } else {
                "is required"
            },
        )
        .into()),
    }
}

/// Confirm an enrollment with a current code: 2FA turns on and 10 backup codes are shown once.
#[utoipa::path(post, path = "/v2/users/me/two_factor/enrollments/{id}/actions/confirm",
    tag = "Two-factor authentication", request_body = CodeRequest,
    responses((status = 200, description = "{enabled, method, backup_codes}"),
              (status = 422, description = "invalid_code")),
    security(("bearer" = [])))]
pub async fn confirm(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
    meta: RequestMeta,
    Json(body): Json<CodeRequest>,
) -> ApiResult<axum::Json<Value>> {
    let Presented::Code(code) = presented(body, false)? else {
        return Err(ApiError::internal(
            &"unreachable: backup codes refused above",
        ));
    };
    let codes = state
        .two_factor
        .confirm(principal.user_id, id, &code, &meta.by(&principal))
        .await?;
    state.caught_up(codes.position).await?;
    Ok(axum::Json(json!({ "data": {
        "record_type": "two_factor",
        "enabled": true,
        "method": "totp",
        "backup_codes": codes.codes,
    }})))
}

/// Replace the backup codes (the old set stops working); needs a current second factor.
#[utoipa::path(post, path = "/v2/users/me/two_factor/backup_codes", tag = "Two-factor authentication",
    request_body = CodeRequest,
    responses((status = 201, description = "{backup_codes}"), (status = 422, description = "invalid_code")),
    security(("bearer" = [])))]
pub async fn regenerate(
    State(state): State<AppState>,
    principal: Principal,
    meta: RequestMeta,
    Json(body): Json<CodeRequest>,
) -> ApiResult<(StatusCode, axum::Json<Value>)> {
    let factor = presented(body, true)?;
    let codes = state
        .two_factor
        .regenerate_backup_codes(principal.user_id, &factor, &meta.by(&principal))
        .await?;
    state.caught_up(codes.position).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(
            json!({ "data": { "record_type": "backup_codes", "backup_codes": codes.codes } }),
        ),
    ))
}

/// Answer a sign-in challenge with an authenticator code or a backup code.
#[utoipa::path(post, path = "/v2/two_factor_challenges/{id}/actions/verify", tag = "Two-factor authentication",
    request_body = CodeRequest,
    responses((status = 201, description = "A session"), (status = 422, description = "invalid_code"),
              (status = 410, description = "challenge_expired"), (status = 429, description = "challenge_locked")))]
pub async fn verify_challenge(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    meta: RequestMeta,
    Json(body): Json<CodeRequest>,
) -> ApiResult<(StatusCode, axum::Json<Value>)> {
    let factor = presented(body, true)?;
    let owner = sessions::challenge_owner(&state.db.pool, &id.to_string())
        .await?
        .ok_or_else(ApiError::not_found)?;
    let user_id = Uuid::parse_str(&owner).map_err(|e| ApiError::internal(&e))?;
    let session = state
        .two_factor
        .answer_challenge(user_id, id, &factor, &meta.anonymous())
        .await?;
    state.caught_up(session.position).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({ "data": {
            "record_type": "session",
            "token": session.token,
            "expires_at": format_time(session.expires_at),
            "user_id": session.user_id,
            "two_factor_setup_required": false,
        }})),
    ))
}
