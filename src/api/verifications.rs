//! Verifications, wire-compatible with Telnyx (`/v2/verifications/…`): trigger by SMS, call
//! or flash call, read by id or by phone number, check a code by phone number or by id
//! (`response_code` accepted | rejected; a wrong code is a 200 "rejected"), and the public
//! key that verifies webhook signatures (`/v2/public_key`). Also the one mapping of Verify's
//! errors to the error envelope.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;
use warden_commands::verify::{SendVerification, VerifyError};
use warden_domain::values::{PhoneNumber, ValidationError};
use warden_domain::verify::profile::VerifyProfileError;
use warden_domain::verify::template::VerifyTemplateError;
use warden_domain::verify::values::{CustomCode, Extension, TimeoutSecs, VerifyChannel};
use warden_domain::verify::verification::VerificationError;
use warden_projections::verify;

use super::error::{ApiError, ApiResult, ErrorItem, Source, TOO_MANY_REQUESTS_DETAIL};
use super::extract::{Json, Principal, RequestMeta};
use crate::app::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v2/verifications/sms", post(trigger_sms))
        .route("/v2/verifications/call", post(trigger_call))
        .route("/v2/verifications/flashcall", post(trigger_flashcall))
        .route("/v2/verifications/{id}", get(get_verification))
        .route("/v2/verifications/{id}/actions/verify", post(verify_by_id))
        .route(
            "/v2/verifications/by_phone_number/{phone}",
            get(list_by_phone_number),
        )
        .route(
            "/v2/verifications/by_phone_number/{phone}/actions/verify",
            post(verify_by_phone_number),
        )
        .route("/v2/public_key", get(public_key))
        .layer(axum::middleware::map_response(no_retry_on_429))
}

/// The Telnyx SDK retries 429s by itself; a refused send will not succeed on retry, so say so.
pub async fn no_retry_on_429(mut response: Response) -> Response {
    if response.status() == StatusCode::TOO_MANY_REQUESTS {
        response
            .headers_mut()
            .insert("x-should-retry", HeaderValue::from_static("false"));
    }
    response
}

/// A request path as logs may show it: the phone number of `by_phone_number/{phone}` is
/// masked (personal data never reaches the logs in clear).
pub fn loggable_path(path: &str) -> std::borrow::Cow<'_, str> {
    const MARK: &str = "/by_phone_number/";
    let Some(start) = path.find(MARK).map(|i| i + MARK.len()) else {
        return path.into();
    };
    let rest = path.get(start..).unwrap_or_default();
    let end = rest.find('/').unwrap_or(rest.len());
    let phone = rest.get(..end).unwrap_or_default();
    let masked = warden_commands::sender::mask_recipient(phone);
    format!(
        "{}{masked}{}",
        path.get(..start).unwrap_or_default(),
        rest.get(end..).unwrap_or_default()
    )
    .into()
}

/// A path id that is not a UUID cannot name anything: 404.
pub fn path_id(raw: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(raw).map_err(|_| ApiError::not_found())
}

/// `page[number]` (from 1) and `page[size]` (default 20, at most 250).
pub fn page(query: &HashMap<String, String>) -> ApiResult<(i64, i64)> {
    let read = |key: &str, default: i64, max: i64| -> Result<i64, ValidationError> {
        match query.get(key) {
            None => Ok(default),
            Some(v) => v
                .parse::<i64>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| {
                    ValidationError::new(
                        format!("/{key}"),
                        "invalid_page",
                        format!("must be an integer from 1 to {max}"),
                    )
                }),
        }
    };
    Ok((
        read("page[number]", 1, 1_000_000)?,
        read("page[size]", 20, 250)?,
    ))
}

pub fn page_meta(number: i64, size: i64, total: i64) -> Value {
    json!({
        "page_number": number,
        "page_size": size,
        "total_pages": (total + size - 1) / size,
        "total_results": total,
    })
}

fn too_many(code: &'static str, detail: String, retry_after_secs: i64) -> ApiError {
    let mut e = ApiError::too_many(code, TOO_MANY_REQUESTS_DETAIL, retry_after_secs);
    if let Some(item) = e.errors.first_mut() {
        item.detail = detail;
    }
    e
}

impl From<VerifyError> for ApiError {
    fn from(e: VerifyError) -> Self {
        let detail = e.to_string();
        match e {
            VerifyError::Profile(VerifyProfileError::NotFound)
            | VerifyError::Verification(VerificationError::NotFound)
            | VerifyError::Template(VerifyTemplateError::NotFound) => ApiError::not_found(),
            VerifyError::Profile(VerifyProfileError::AlreadyExists)
            | VerifyError::Verification(VerificationError::AlreadyExists)
            | VerifyError::Template(VerifyTemplateError::AlreadyExists) => ApiError::new(
                StatusCode::CONFLICT,
                "already_exists",
                "Already exists",
                detail,
            ),
            VerifyError::Profile(VerifyProfileError::DestinationNotAllowed { .. }) => ApiError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                errors: vec![ErrorItem {
                    code: "destination_not_allowed",
                    title: "Destination not allowed",
                    detail: format!(
                        "{detail}: add its country to the profile's whitelisted_destinations."
                    ),
                    source: Some(Source {
                        pointer: "/phone_number".into(),
                    }),
                }],
                retry_after_secs: None,
            },
            VerifyError::Profile(VerifyProfileError::TooManySendsToNumber { retry_after_secs }) => {
                too_many("too_many_sends_to_number", detail, retry_after_secs)
            }
            VerifyError::Profile(VerifyProfileError::TooManySendsForProfile {
                retry_after_secs,
            }) => too_many("too_many_sends_for_profile", detail, retry_after_secs),
            VerifyError::Profile(VerifyProfileError::TooManySendsFromClient {
                retry_after_secs,
            }) => too_many("too_many_sends_from_client", detail, retry_after_secs),
            VerifyError::Profile(VerifyProfileError::DailySpendLimitReached {
                retry_after_secs,
            }) => too_many(
                "daily_spend_limit_reached",
                format!("{detail}; sends resume at 00:00 UTC or when the limit is raised."),
                retry_after_secs,
            ),
            VerifyError::Verification(VerificationError::NotCustomCode) => {
                ValidationError::new("/status", "status_not_permitted", detail).into()
            }
            VerifyError::DeliveryFailed => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "delivery_failed",
                "Delivery failed",
                detail,
            ),
        }
    }
}

/// A verification as the API shows it (Telnyx `Verification`).
fn verification_view(row: verify::VerificationRow) -> Value {
    json!({
        "id": row.verification_id,
        "record_type": "verification",
        "type": row.kind,
        "phone_number": row.phone_number,
        "verify_profile_id": row.profile_id,
        "custom_code": Value::Null,
        "timeout_secs": row.timeout_secs,
        "status": row.status,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    })
}

async fn verification_data(state: &AppState, org: Uuid, id: Uuid) -> ApiResult<Value> {
    let row = verify::verification(&state.db.pool, &org.to_string(), &id.to_string())
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(verification_view(row))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct TriggerRequest {
    pub phone_number: String,
    pub verify_profile_id: String,
    pub custom_code: Option<String>,
    pub timeout_secs: Option<i64>,
    pub extension: Option<String>,
}

async fn trigger(
    state: AppState,
    principal: Principal,
    meta: RequestMeta,
    channel: VerifyChannel,
    body: TriggerRequest,
) -> ApiResult<axum::Json<Value>> {
    let phone = PhoneNumber::parse("/phone_number", &body.phone_number);
    let profile_id = Uuid::parse_str(&body.verify_profile_id)
        .map_err(|_| ValidationError::new("/verify_profile_id", "invalid_id", "must be a UUID"));
    let custom_code = match (&body.custom_code, channel) {
        (Some(_), VerifyChannel::Flashcall) => Some(Err(ValidationError::new(
            "/custom_code",
            "not_permitted",
            "flash calls do not take a custom_code",
        ))),
        (Some(c), _) => Some(CustomCode::parse("/custom_code", c)),
        (None, _) => None,
    }
    .transpose();
    let timeout = body
        .timeout_secs
        .map(|t| TimeoutSecs::parse("/timeout_secs", t))
        .transpose();
    let extension = match (&body.extension, channel) {
        (Some(e), VerifyChannel::Call) => Some(Extension::parse("/extension", e)),
        (Some(_), _) => Some(Err(ValidationError::new(
            "/extension",
            "not_permitted",
            "only call verifications take an extension",
        ))),
        (None, _) => None,
    }
    .transpose();
    let errors: Vec<ValidationError> = [
        phone.as_ref().err(),
        profile_id.as_ref().err(),
        custom_code.as_ref().err(),
        timeout.as_ref().err(),
        extension.as_ref().err(),
    ]
    .into_iter()
    .flatten()
    .cloned()
    .collect();
    let (Ok(phone), Ok(profile_id), Ok(custom_code), Ok(timeout), Ok(extension)) =
        (phone, profile_id, custom_code, timeout, extension)
    else {
        return Err(ApiError::validation(errors));
    };
    let meta = meta.by(&principal);
    let client_ip = meta.metadata.ip.clone();
    let sent = state
        .verify
        .send(
            SendVerification {
                organization_id: principal.organization_id,
                profile_id,
                channel,
                phone,
                custom_code,
                timeout,
                extension,
                client_ip,
            },
            &meta,
        )
        .await?;
    state.caught_up(sent.position).await?;
    Ok(axum::Json(json!({
        "data": verification_data(&state, principal.organization_id, sent.verification_id).await?
    })))
}

/// Send a code by SMS.
#[utoipa::path(post, path = "/v2/verifications/sms", tag = "Verify", request_body = TriggerRequest,
    responses((status = 200, description = "The verification"), (status = 422, description = "Invalid field"),
              (status = 429, description = "A send limit or the daily spend limit")),
    security(("bearer" = [])))]
pub async fn trigger_sms(
    State(state): State<AppState>,
    principal: Principal,
    meta: RequestMeta,
    Json(body): Json<TriggerRequest>,
) -> ApiResult<axum::Json<Value>> {
    trigger(state, principal, meta, VerifyChannel::Sms, body).await
}

/// Send a code by voice call (with an optional DTMF `extension`).
#[utoipa::path(post, path = "/v2/verifications/call", tag = "Verify", request_body = TriggerRequest,
    responses((status = 200, description = "The verification")), security(("bearer" = [])))]
pub async fn trigger_call(
    State(state): State<AppState>,
    principal: Principal,
    meta: RequestMeta,
    Json(body): Json<TriggerRequest>,
) -> ApiResult<axum::Json<Value>> {
    trigger(state, principal, meta, VerifyChannel::Call, body).await
}

/// Verify by flash call: the code is the end of the calling number.
#[utoipa::path(post, path = "/v2/verifications/flashcall", tag = "Verify", request_body = TriggerRequest,
    responses((status = 200, description = "The verification")), security(("bearer" = [])))]
pub async fn trigger_flashcall(
    State(state): State<AppState>,
    principal: Principal,
    meta: RequestMeta,
    Json(body): Json<TriggerRequest>,
) -> ApiResult<axum::Json<Value>> {
    trigger(state, principal, meta, VerifyChannel::Flashcall, body).await
}

/// One verification.
#[utoipa::path(get, path = "/v2/verifications/{id}", tag = "Verify",
    responses((status = 200, description = "The verification"), (status = 404, description = "No such verification")),
    security(("bearer" = [])))]
pub async fn get_verification(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    let id = path_id(&id)?;
    Ok(axum::Json(json!({
        "data": verification_data(&state, principal.organization_id, id).await?
    })))
}

fn path_phone(raw: &str) -> ApiResult<PhoneNumber> {
    PhoneNumber::parse("/phone_number", raw).map_err(|e| {
        let mut err = ApiError::from(e);
        err.status = StatusCode::BAD_REQUEST;
        err
    })
}

/// The organization's verifications of one phone number, newest first, with `meta`.
#[utoipa::path(get, path = "/v2/verifications/by_phone_number/{phone}", tag = "Verify",
    responses((status = 200, description = "Verifications with meta")), security(("bearer" = [])))]
pub async fn list_by_phone_number(
    State(state): State<AppState>,
    principal: Principal,
    Path(phone): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<axum::Json<Value>> {
    let phone = path_phone(&phone)?;
    let (number, size) = page(&query)?;
    let (rows, total) = verify::by_phone_number(
        &state.db.pool,
        &principal.organization_id.to_string(),
        phone.as_str(),
        size,
        (number - 1) * size,
    )
    .await?;
    let data: Vec<Value> = rows.into_iter().map(verification_view).collect();
    Ok(axum::Json(
        json!({ "data": data, "meta": page_meta(number, size, total) }),
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct VerifyByPhoneRequest {
    pub code: String,
    pub verify_profile_id: String,
}

fn response_code(phone: &str, accepted: bool) -> Value {
    json!({ "data": {
        "phone_number": phone,
        "response_code": if accepted { "accepted" } else { "rejected" },
    }})
}

/// Check a code sent to a number for a profile.
#[utoipa::path(post, path = "/v2/verifications/by_phone_number/{phone}/actions/verify", tag = "Verify", request_body = VerifyByPhoneRequest,
    responses((status = 200, description = "response_code accepted or rejected"),
              (status = 404, description = "No such profile")),
    security(("bearer" = [])))]
pub async fn verify_by_phone_number(
    State(state): State<AppState>,
    principal: Principal,
    meta: RequestMeta,
    Path(phone): Path<String>,
    Json(body): Json<VerifyByPhoneRequest>,
) -> ApiResult<axum::Json<Value>> {
    let phone = path_phone(&phone)?;
    let profile_id = Uuid::parse_str(&body.verify_profile_id)
        .map_err(|_| ValidationError::new("/verify_profile_id", "invalid_id", "must be a UUID"))?;
    let meta = meta.by(&principal);
    let outcome = state
        .verify
        .check_by_phone(
            principal.organization_id,
            profile_id,
            &phone,
            &body.code,
            &meta,
        )
        .await?;
    state.caught_up(outcome.position).await?;
    Ok(axum::Json(response_code(phone.as_str(), outcome.accepted)))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct VerifyByIdRequest {
    pub code: Option<String>,
    pub status: Option<String>,
}

/// Check a code of one verification, or (for a `custom_code` one) report its outcome with
/// `status`.
#[utoipa::path(post, path = "/v2/verifications/{id}/actions/verify", tag = "Verify", request_body = VerifyByIdRequest,
    responses((status = 200, description = "response_code accepted or rejected"),
              (status = 404, description = "No such verification")),
    security(("bearer" = [])))]
pub async fn verify_by_id(
    State(state): State<AppState>,
    principal: Principal,
    meta: RequestMeta,
    Path(id): Path<String>,
    Json(body): Json<VerifyByIdRequest>,
) -> ApiResult<axum::Json<Value>> {
    let id = path_id(&id)?;
    let meta = meta.by(&principal);
    let org = principal.organization_id;
    let (outcome, phone) = match (body.status.as_deref(), body.code.as_deref()) {
        (Some(status @ ("accepted" | "rejected")), _) => {
            state
                .verify
                .report(org, id, status == "accepted", &meta)
                .await?
        }
        (Some(_), _) => {
            return Err(ValidationError::new(
                "/status",
                "invalid_value",
                "must be accepted or rejected",
            )
            .into())
        }
        (None, Some(code)) => state.verify.check_by_id(org, id, code, &meta).await?,
        (None, None) => return Err(ValidationError::new("/code", "required", "is required").into()),
    };
    state.caught_up(outcome.position).await?;
    Ok(axum::Json(response_code(&phone, outcome.accepted)))
}

/// The organization's Ed25519 public key for webhook signatures (base64 of 32 bytes).
#[utoipa::path(get, path = "/v2/public_key", tag = "Verify",
    responses((status = 200, description = "{data: {public_key}}")), security(("bearer" = [])))]
pub async fn public_key(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<axum::Json<Value>> {
    let key = warden_infra::webhooks::telnyx_public_key(
        state.secrets.as_ref(),
        principal.organization_id,
    );
    Ok(axum::Json(json!({ "data": {
        "public_key": key,
        "record_type": "public_key",
        "organization_id": principal.organization_id,
    }})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_paths_mask_phone_numbers() {
        assert_eq!(
            loggable_path("/v2/verifications/by_phone_number/+13035551234/actions/verify"),
            "/v2/verifications/by_phone_number/***34/actions/verify"
        );
        assert_eq!(
            loggable_path("/v2/verifications/abc"),
            "/v2/verifications/abc"
        );
    }
}
