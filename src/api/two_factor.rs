//! Two-factor authentication over HTTP: status, enrollment (authenticator app, SMS, voice
//! call) and confirmation, backup codes, sent codes, and answering the sign-in challenge.

use axum::body::Bytes;
use axum::extract::State;
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
use warden_domain::two_factor::{Method, BACKUP_CODES_LOW};
use warden_domain::values::{PhoneNumber, ValidationError};
use warden_projections::{sessions, users};

use super::error::{ApiError, ApiResult};
use super::extract::{Json, PathId, Principal, RequestMeta};
use crate::app::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v2/users/me/two_factor", get(status).delete(disable))
        .route("/v2/users/me/two_factor/enrollments", post(enroll))
        .route(
            "/v2/users/me/two_factor/enrollments/{id}/actions/confirm",
            post(confirm),
        )
        .route("/v2/users/me/two_factor/backup_codes", post(regenerate))
        .route("/v2/users/me/two_factor/codes", post(send_step_up_code))
        .route(
            "/v2/two_factor_challenges/{id}/actions/send",
            post(send_challenge_code),
        )
        .route(
            "/v2/two_factor_challenges/{id}/actions/verify",
            post(verify_challenge),
        )
        .route(
            "/v2/two_factor_challenges/{id}/actions/send_recovery_code",
            post(send_recovery_code),
        )
        .route(
            "/v2/two_factor_challenges/{id}/actions/recover",
            post(recover),
        )
}

fn method_name(method: Method) -> &'static str {
    match method {
        Method::Totp => "totp",
        Method::Sms => "sms",
        Method::Call => "call",
    }
}

fn parse_method(raw: &str) -> Result<Method, ApiError> {
    match raw {
        "totp" => Ok(Method::Totp),
        "sms" => Ok(Method::Sms),
        "call" => Ok(Method::Call),
        _ => Err(ValidationError::new(
            "/method",
            "invalid_method",
            "must be one of: totp, sms, call",
        )
        .into()),
    }
}

fn parse_channel(raw: &str) -> Result<Method, ApiError> {
    match raw {
        "sms" => Ok(Method::Sms),
        "call" => Ok(Method::Call),
        _ => Err(
            ValidationError::new("/channel", "invalid_channel", "must be one of: sms, call").into(),
        ),
    }
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
        "phone_number": row.two_factor_phone,
        "backup_codes_remaining": row.backup_codes_remaining,
        "backup_codes_low": enabled && row.backup_codes_remaining <= i64::from(BACKUP_CODES_LOW),
    }})))
}

#[derive(Deserialize, ToSchema)]
pub struct EnrollRequest {
    /// `totp` (authenticator app), `sms` or `call`.
    pub method: String,
    /// E.164, for `sms` and `call`.
    pub phone_number: Option<String>,
    /// With 2FA already on: a current code (authenticator, or a code sent by
    /// `POST /v2/users/me/two_factor/codes`)…
    pub current_code: Option<String>,
    /// …or a backup code…
    pub backup_code: Option<String>,
    /// …or, when only the phone number of an SMS/voice factor changes, a code sent to the
    /// account's email (`POST /v2/users/me/two_factor/codes` with channel `email`).
    pub email_code: Option<String>,
}

super::extract::redacted_debug!(EnrollRequest);

/// Start enrolling a second factor. For `totp` the response carries the secret, an
/// otpauth URI and QR codes; for `sms`/`call` a code is sent to the number. With 2FA
/// already on, a current factor must be given (`current_code` or `backup_code`).
#[utoipa::path(post, path = "/v2/users/me/two_factor/enrollments", tag = "Two-factor authentication",
    request_body = EnrollRequest,
    responses((status = 201, description = "The enrollment (for totp with secret, otpauth_uri, qr_code_png, qr_code_svg)"),
              (status = 422, description = "Invalid field, or current_factor_required"),
              (status = 429, description = "too_many_requests (code sends)")),
    security(("bearer" = [])))]
pub async fn enroll(
    State(state): State<AppState>,
    principal: Principal,
    meta: RequestMeta,
    Json(body): Json<EnrollRequest>,
) -> ApiResult<(StatusCode, axum::Json<Value>)> {
    let method = parse_method(&body.method)?;
    let given = [&body.current_code, &body.backup_code, &body.email_code]
        .iter()
        .filter(|f| f.is_some())
        .count();
    if given > 1 {
        return Err(ValidationError::new(
            "/backup_code",
            "conflicting_fields",
            "give one of current_code, backup_code or email_code",
        )
        .into());
    }
    let current = match (body.current_code, body.backup_code) {
        (None, None) if body.email_code.is_some() => {
            let code = body.email_code.unwrap_or_default().trim().to_owned();
            if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ValidationError::new(
                    "/email_code",
                    "invalid_code_format",
                    "must be 6 digits",
                )
                .into());
            }
            Some(Presented::EmailCode(code))
        }
        (Some(code), None) => Some(presented(
            CodeRequest {
                code: Some(code),
                backup_code: None,
            },
            false,
        )?),
        (None, Some(code)) => Some(presented(
            CodeRequest {
                code: None,
                backup_code: Some(code),
            },
            true,
        )?),
        (None, None) => None,
        (Some(_), Some(_)) => {
            return Err(ValidationError::new(
                "/backup_code",
                "conflicting_fields",
                "give current_code or backup_code, not both",
            )
            .into())
        }
    };
    let meta = meta.by(&principal);
    let enrollment = match method {
        Method::Totp => {
            state
                .two_factor
                .start_totp(principal.user_id, current.as_ref(), &meta)
                .await?
        }
        Method::Sms | Method::Call => {
            let raw = body.phone_number.as_deref().ok_or_else(|| {
                ApiError::from(ValidationError::new(
                    "/phone_number",
                    "required",
                    "is required for sms and call",
                ))
            })?;
            let phone = PhoneNumber::parse("/phone_number", raw)?;
            state
                .two_factor
                .start_phone(principal.user_id, method, &phone, current.as_ref(), &meta)
                .await?
        }
    };
    state.caught_up(enrollment.position).await?;
    let mut data = json!({
        "record_type": "two_factor_enrollment",
        "enrollment_id": enrollment.enrollment_id,
        "method": method_name(enrollment.method),
        "expires_at": format_time(enrollment.expires_at),
    });
    if let (Some(totp), Some(obj)) = (enrollment.totp, data.as_object_mut()) {
        obj.insert("secret".into(), json!(totp.secret_base32));
        obj.insert("otpauth_uri".into(), json!(totp.otpauth_uri));
        obj.insert(
            "qr_code_png".into(),
            json!(base64::engine::general_purpose::STANDARD.encode(&totp.qr_png)),
        );
        obj.insert("qr_code_svg".into(), json!(totp.qr_svg));
    }
    Ok((StatusCode::CREATED, axum::Json(json!({ "data": data }))))
}

#[derive(Deserialize, ToSchema)]
pub struct CodeRequest {
    /// A current code: from the authenticator app, or sent by SMS or call.
    pub code: Option<String>,
    /// Or one of the backup codes (where accepted).
    pub backup_code: Option<String>,
}

super::extract::redacted_debug!(CodeRequest);

/// Malformed codes are bad input (422, nothing recorded); well-formed wrong ones are
/// recorded failures.
fn presented(body: CodeRequest, allow_backup: bool) -> Result<Presented, ApiError> {
    match (body.code, body.backup_code) {
        (Some(code), None) => {
            let code = code.trim().to_owned();
            if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ValidationError::new(
                    "/code",
                    "invalid_code_format",
                    "must be 6 digits",
                )
                .into());
            }
            Ok(Presented::Code(code))
        }
        (None, Some(code)) if allow_backup => {
            if warden_commands::otp::normalize_backup_code(&code).is_none() {
                return Err(ValidationError::new(
                    "/backup_code",
                    "invalid_code_format",
                    "must be a backup code like abcd-efgh-jkmn",
                )
                .into());
            }
            Ok(Presented::BackupCode(code))
        }
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

/// Confirm an enrollment with a code from the new factor. The first time, 2FA turns on and
/// 10 backup codes are shown once; when switching method, the backup codes stay.
#[utoipa::path(post, path = "/v2/users/me/two_factor/enrollments/{id}/actions/confirm",
    params(("id" = Uuid, Path, description = "The enrollment id")),
    tag = "Two-factor authentication", request_body = CodeRequest,
    responses((status = 200, description = "{enabled, method, backup_codes (first enablement only)}"),
              (status = 422, description = "invalid_code")),
    security(("bearer" = [])))]
pub async fn confirm(
    State(state): State<AppState>,
    principal: Principal,
    PathId(id): PathId,
    meta: RequestMeta,
    Json(body): Json<CodeRequest>,
) -> ApiResult<axum::Json<Value>> {
    let Presented::Code(code) = presented(body, false)? else {
        return Err(ApiError::internal(&"backup codes are refused above"));
    };
    let confirmed = state
        .two_factor
        .confirm(principal.user_id, id, &code, &meta.by(&principal))
        .await?;
    state.caught_up(confirmed.position).await?;
    let mut data = json!({
        "record_type": "two_factor",
        "enabled": true,
        "method": method_name(confirmed.method),
    });
    if let (Some(codes), Some(obj)) = (confirmed.backup_codes, data.as_object_mut()) {
        obj.insert("backup_codes".into(), json!(codes));
    }
    Ok(axum::Json(json!({ "data": data })))
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

#[derive(Debug, Deserialize, ToSchema)]
pub struct SendCodeRequest {
    /// `sms` or `call`, to the enrolled number.
    pub channel: String,
}

/// Send a code for a sign-in challenge to the enrolled number.
#[utoipa::path(post, path = "/v2/two_factor_challenges/{id}/actions/send",
    params(("id" = Uuid, Path, description = "The challenge id")), tag = "Two-factor authentication",
    request_body = SendCodeRequest,
    responses((status = 202, description = "Sent"), (status = 429, description = "too_many_requests")))]
pub async fn send_challenge_code(
    State(state): State<AppState>,
    PathId(id): PathId,
    meta: RequestMeta,
    Json(body): Json<SendCodeRequest>,
) -> ApiResult<StatusCode> {
    let channel = parse_channel(&body.channel)?;
    let user_id = challenge_user(&state, id).await?;
    let position = state
        .two_factor
        .send_challenge_code(user_id, id, channel, &meta.anonymous())
        .await?;
    state.caught_up(position).await?;
    Ok(StatusCode::ACCEPTED)
}

/// Send a code to the enrolled number to prove the current factor before a change.
#[utoipa::path(post, path = "/v2/users/me/two_factor/codes", tag = "Two-factor authentication",
    request_body = SendCodeRequest,
    responses((status = 202, description = "Sent"), (status = 429, description = "too_many_requests")),
    security(("bearer" = [])))]
pub async fn send_step_up_code(
    State(state): State<AppState>,
    principal: Principal,
    meta: RequestMeta,
    Json(body): Json<SendCodeRequest>,
) -> ApiResult<StatusCode> {
    let meta = meta.by(&principal);
    let position = if body.channel == "email" {
        state
            .two_factor
            .send_email_step_up_code(principal.user_id, &meta)
            .await?
    } else {
        let channel = parse_channel(&body.channel)?;
        state
            .two_factor
            .send_step_up_code(principal.user_id, channel, &meta)
            .await?
    };
    state.caught_up(position).await?;
    Ok(StatusCode::ACCEPTED)
}

async fn challenge_user(state: &AppState, id: Uuid) -> Result<Uuid, ApiError> {
    let owner = sessions::challenge_owner(&state.db.pool, &id.to_string())
        .await?
        .ok_or_else(ApiError::not_found)?;
    Uuid::parse_str(&owner).map_err(|e| ApiError::internal(&e))
}

/// Answer a sign-in challenge with an authenticator code, a sent code, or a backup code.
#[utoipa::path(post, path = "/v2/two_factor_challenges/{id}/actions/verify",
    params(("id" = Uuid, Path, description = "The challenge id")), tag = "Two-factor authentication",
    request_body = CodeRequest,
    responses((status = 201, description = "A session"), (status = 422, description = "invalid_code"),
              (status = 410, description = "challenge_expired"), (status = 429, description = "challenge_locked")))]
pub async fn verify_challenge(
    State(state): State<AppState>,
    PathId(id): PathId,
    meta: RequestMeta,
    Json(body): Json<CodeRequest>,
) -> ApiResult<(StatusCode, axum::Json<Value>)> {
    let factor = presented(body, true)?;
    let user_id = challenge_user(&state, id).await?;
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

/// The owner of a challenged sign-in, or 403 for a sub-user (who asks their owner instead).
async fn owner_of_challenge(state: &AppState, id: Uuid) -> ApiResult<(Uuid, Uuid)> {
    let user_id = challenge_user(state, id).await?;
    let user = warden_projections::users::get(&state.db.pool, &user_id.to_string())
        .await?
        .ok_or_else(ApiError::not_found)?;
    if user.role != "organization_owner" {
        return Err(warden_domain::two_factor::TwoFactorError::RecoveryNotAllowed.into());
    }
    let organization_id =
        Uuid::parse_str(&user.organization_id).map_err(|e| ApiError::internal(&e))?;
    Ok((user_id, organization_id))
}

/// Lost-device recovery, step one (organization owners): email a recovery code for this
/// challenge. Counts toward the daily limit of sent codes.
#[utoipa::path(post, path = "/v2/two_factor_challenges/{id}/actions/send_recovery_code",
    params(("id" = Uuid, Path, description = "The challenge id")), tag = "Two-factor authentication",
    responses((status = 202, description = "Emailed"), (status = 403, description = "recovery_not_allowed (not the owner)"),
              (status = 429, description = "too_many_requests")))]
pub async fn send_recovery_code(
    State(state): State<AppState>,
    PathId(id): PathId,
    meta: RequestMeta,
) -> ApiResult<StatusCode> {
    let (user_id, _) = owner_of_challenge(&state, id).await?;
    let position = state
        .two_factor
        .send_recovery_code(user_id, id, &meta.anonymous())
        .await?;
    state.caught_up(position).await?;
    Ok(StatusCode::ACCEPTED)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecoverRequest {
    /// The organization's security passphrase.
    pub security_passphrase: String,
    /// The code from the recovery email.
    pub email_code: String,
}

impl std::fmt::Debug for RecoverRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecoverRequest").finish_non_exhaustive()
    }
}

/// Lost-device recovery, step two: the organization's security passphrase plus the emailed
/// code reset the second factor; the session may only enroll a new one.
#[utoipa::path(post, path = "/v2/two_factor_challenges/{id}/actions/recover",
    params(("id" = Uuid, Path, description = "The challenge id")), tag = "Two-factor authentication",
    request_body = RecoverRequest,
    responses((status = 201, description = "A session that may only enroll a second factor"),
              (status = 403, description = "recovery_not_allowed"), (status = 422, description = "invalid_code"),
              (status = 429, description = "too many passphrase checks")))]
pub async fn recover(
    State(state): State<AppState>,
    PathId(id): PathId,
    meta: RequestMeta,
    Json(body): Json<RecoverRequest>,
) -> ApiResult<(StatusCode, axum::Json<Value>)> {
    let (user_id, organization_id) = owner_of_challenge(&state, id).await?;
    let meta = meta.anonymous();
    let (passphrase_ok, _) = state
        .accounts
        .check_org_secret(
            organization_id,
            warden_domain::organization::OrgSecret::SecurityPassphrase,
            &body.security_passphrase,
            &meta,
        )
        .await?;
    let session = state
        .two_factor
        .recover(user_id, id, passphrase_ok, &body.email_code, &meta)
        .await?;
    state.caught_up(session.position).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({ "data": {
            "record_type": "session",
            "token": session.token,
            "expires_at": format_time(session.expires_at),
            "user_id": session.user_id,
            "two_factor_setup_required": true,
        }})),
    ))
}

/// Turn 2FA off. Refused (403 `two_factor_cannot_be_disabled`) unless the organization's
/// policy allows it; then a current factor is required in the body (`code` or
/// `backup_code`).
#[utoipa::path(delete, path = "/v2/users/me/two_factor", tag = "Two-factor authentication",
    request_body = CodeRequest,
    responses((status = 204, description = "Disabled"),
              (status = 403, description = "two_factor_cannot_be_disabled"),
              (status = 422, description = "invalid_code")),
    security(("bearer" = [])))]
pub async fn disable(
    State(state): State<AppState>,
    principal: Principal,
    meta: RequestMeta,
    body: Bytes,
) -> ApiResult<StatusCode> {
    // The policy answers first: a refusal needs no code.
    if !state.two_factor.disable_allowed(principal.user_id).await? {
        return Err(warden_domain::two_factor::TwoFactorError::CannotBeDisabled.into());
    }
    let body: CodeRequest = if body.is_empty() {
        CodeRequest {
            code: None,
            backup_code: None,
        }
    } else {
        super::extract::parse_json(&body)?
    };
    let factor = presented(body, true)?;
    let position = state
        .two_factor
        .disable(principal.user_id, &factor, &meta.by(&principal))
        .await?;
    state.caught_up(position).await?;
    Ok(StatusCode::NO_CONTENT)
}
