//! The caller's organization: profile (`GET/PATCH /v2/organization`), security passphrase
//! and port-out PIN (set with the current password; verify, rate limited).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use utoipa::ToSchema;
use warden_commands::accounts::OrganizationChanges;
use warden_domain::organization::{OrgSecret, TwoFactorPolicy};
use warden_domain::permissions::Permission;
use warden_domain::values::{
    CurrencyCode, EmailAddress, Passphrase, PhoneNumber, PortOutPin, Text, ValidationError,
};

use super::error::{ApiError, ApiResult};
use super::extract::{all_valid, Json, Principal, RequestMeta};
use super::views;
use crate::app::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v2/organization", get(get_org).patch(patch_org))
        .route("/v2/organization/security_passphrase", put(set_passphrase))
        .route(
            "/v2/organization/security_passphrase/actions/verify",
            post(verify_passphrase),
        )
        .route("/v2/organization/port_out_pin", put(set_pin))
        .route(
            "/v2/organization/port_out_pin/actions/verify",
            post(verify_pin),
        )
}

/// The caller's organization.
#[utoipa::path(get, path = "/v2/organization", tag = "Organization",
    responses((status = 200, description = "The organization")), security(("bearer" = [])))]
pub async fn get_org(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<axum::Json<Value>> {
    Ok(axum::Json(
        json!({ "data": views::organization(&state, principal.organization_id).await? }),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct PatchOrganizationRequest {
    pub company_name: Option<String>,
    /// `{line1, line2, city, state, postal_code, country}`.
    pub address: Option<Map<String, Value>>,
    /// `{first_name, last_name, email, phone_number}`.
    pub contact: Option<Map<String, Value>>,
    /// Immutable: any value other than the current one is refused.
    pub billing_currency: Option<String>,
    /// Whether members must use 2FA (`required`), from when it can no longer be skipped
    /// (`enforce_after`, RFC 3339), and whether members may turn it off (`allow_disable`).
    pub two_factor_policy: Option<TwoFactorPolicyRequest>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct TwoFactorPolicyRequest {
    pub required: bool,
    pub enforce_after: Option<String>,
    #[serde(default)]
    pub allow_disable: bool,
}

const ADDRESS_FIELDS: &[&str] = &["line1", "line2", "city", "state", "postal_code", "country"];
const CONTACT_FIELDS: &[&str] = &["first_name", "last_name", "email", "phone_number"];

/// Checks an object of optional short strings with known keys, and the contact's email and
/// phone formats.
fn parse_object(pointer: &str, obj: &Map<String, Value>, allowed: &[&str]) -> Vec<ValidationError> {
    let mut errors = Vec::new();
    for (k, v) in obj {
        let at = format!("{pointer}/{k}");
        if !allowed.contains(&k.as_str()) {
            errors.push(ValidationError::new(
                at,
                "unknown_field",
                format!("must be one of: {}", allowed.join(", ")),
            ));
            continue;
        }
        match v {
            Value::Null => {}
            Value::String(s) => {
                let checked = match k.as_str() {
                    "email" => EmailAddress::parse(&at, s).err(),
                    "phone_number" => PhoneNumber::parse(&at, s).err(),
                    _ => Text::parse(&at, s, 200).err(),
                };
                errors.extend(checked);
            }
            _ => errors.push(ValidationError::new(
                at,
                "invalid_value",
                "must be a string or null",
            )),
        }
    }
    errors
}

/// Update the organization profile. The billing currency cannot change.
#[utoipa::path(patch, path = "/v2/organization", tag = "Organization", request_body = PatchOrganizationRequest,
    responses((status = 200, description = "The organization"),
              (status = 422, description = "Invalid field, or billing_currency_immutable")),
    security(("bearer" = [])))]
pub async fn patch_org(
    State(state): State<AppState>,
    principal: Principal,
    meta: RequestMeta,
    Json(body): Json<PatchOrganizationRequest>,
) -> ApiResult<axum::Json<Value>> {
    // The route needs organization:manage (see authz); the policy is a security setting.
    if body.two_factor_policy.is_some() {
        principal.require(Permission::SecurityManage)?;
    }
    let company_name = body
        .company_name
        .as_deref()
        .map(|s| Text::parse("/company_name", s, 200))
        .transpose();
    let currency = body
        .billing_currency
        .as_deref()
        .map(|s| CurrencyCode::parse("/billing_currency", s))
        .transpose();
    let mut errors: Vec<Option<ValidationError>> = vec![
        company_name.as_ref().err().cloned(),
        currency.as_ref().err().cloned(),
    ];
    if let Some(a) = &body.address {
        errors.extend(
            parse_object("/address", a, ADDRESS_FIELDS)
                .into_iter()
                .map(Some),
        );
    }
    if let Some(c) = &body.contact {
        errors.extend(
            parse_object("/contact", c, CONTACT_FIELDS)
                .into_iter()
                .map(Some),
        );
    }
    all_valid(errors)?;
    let (Ok(company_name), Ok(billing_currency)) = (company_name, currency) else {
        return Err(ApiError::internal(&"validation mismatch"));
    };
    let policy = body
        .two_factor_policy
        .map(|p| -> Result<TwoFactorPolicy, ApiError> {
            let enforce_after = p
                .enforce_after
                .as_deref()
                .map(|t| {
                    chrono::DateTime::parse_from_rfc3339(t)
                        .map(|t| t.with_timezone(&chrono::Utc))
                        .map_err(|_| {
                            ValidationError::new(
                                "/two_factor_policy/enforce_after",
                                "invalid_time",
                                "must be an RFC 3339 time",
                            )
                        })
                })
                .transpose()?;
            Ok(TwoFactorPolicy {
                required: p.required,
                enforce_after,
                allow_disable: p.allow_disable,
            })
        })
        .transpose()?;
    let meta = meta.by(&principal);
    let position = state
        .accounts
        .update_organization(
            principal.organization_id,
            OrganizationChanges {
                company_name,
                address: body.address.map(Value::Object),
                contact: body.contact.map(Value::Object),
                billing_currency,
            },
            &meta,
        )
        .await?;
    state.caught_up(position).await?;
    if let Some(policy) = policy {
        let position = state
            .accounts
            .set_two_factor_policy(principal.organization_id, policy, &meta)
            .await?;
        state.caught_up(position).await?;
    }
    get_org(State(state), principal).await
}

#[derive(Deserialize, ToSchema)]
pub struct SetPassphraseRequest {
    pub passphrase: String,
    pub current_password: String,
}

super::extract::redacted_debug!(SetPassphraseRequest);

/// Set the organization's security passphrase (current password required).
#[utoipa::path(put, path = "/v2/organization/security_passphrase", tag = "Organization", request_body = SetPassphraseRequest,
    responses((status = 204, description = "Set"), (status = 403, description = "Wrong password"),
              (status = 429, description = "Too many wrong current passwords; wait a minute")),
    security(("bearer" = [])))]
pub async fn set_passphrase(
    State(state): State<AppState>,
    principal: Principal,
    meta: RequestMeta,
    Json(body): Json<SetPassphraseRequest>,
) -> ApiResult<StatusCode> {
    let passphrase = Passphrase::parse("/passphrase", &body.passphrase)?;
    set_secret(
        &state,
        &principal,
        meta,
        OrgSecret::SecurityPassphrase,
        passphrase.expose(),
        &body.current_password,
    )
    .await
}

#[derive(Deserialize, ToSchema)]
pub struct SetPinRequest {
    /// 4 to 10 digits.
    pub pin: String,
    pub current_password: String,
}

super::extract::redacted_debug!(SetPinRequest);

/// Set the organization's port-out PIN (current password required).
#[utoipa::path(put, path = "/v2/organization/port_out_pin", tag = "Organization", request_body = SetPinRequest,
    responses((status = 204, description = "Set"), (status = 403, description = "Wrong password"),
              (status = 429, description = "Too many wrong current passwords; wait a minute")),
    security(("bearer" = [])))]
pub async fn set_pin(
    State(state): State<AppState>,
    principal: Principal,
    meta: RequestMeta,
    Json(body): Json<SetPinRequest>,
) -> ApiResult<StatusCode> {
    let pin = PortOutPin::parse("/pin", &body.pin)?;
    set_secret(
        &state,
        &principal,
        meta,
        OrgSecret::PortOutPin,
        pin.expose(),
        &body.current_password,
    )
    .await
}

async fn set_secret(
    state: &AppState,
    principal: &Principal,
    meta: RequestMeta,
    secret: OrgSecret,
    value: &str,
    current_password: &str,
) -> ApiResult<StatusCode> {
    let position = state
        .accounts
        .set_org_secret(
            principal.organization_id,
            principal.user_id,
            secret,
            value,
            current_password,
            &meta.by(principal),
        )
        .await?;
    state.caught_up(position).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
pub struct VerifyPassphraseRequest {
    pub passphrase: String,
}

super::extract::redacted_debug!(VerifyPassphraseRequest);

/// Check a security passphrase (rate limited: 5 failures per 15 minutes).
#[utoipa::path(post, path = "/v2/organization/security_passphrase/actions/verify", tag = "Organization",
    request_body = VerifyPassphraseRequest,
    responses((status = 200, description = "{valid}"), (status = 429, description = "too_many_requests")),
    security(("bearer" = [])))]
pub async fn verify_passphrase(
    State(state): State<AppState>,
    principal: Principal,
    meta: RequestMeta,
    Json(body): Json<VerifyPassphraseRequest>,
) -> ApiResult<axum::Json<Value>> {
    let candidate = Passphrase::for_verification(&body.passphrase);
    check_secret(
        &state,
        &principal,
        meta,
        OrgSecret::SecurityPassphrase,
        candidate.expose(),
    )
    .await
}

#[derive(Deserialize, ToSchema)]
pub struct VerifyPinRequest {
    pub pin: String,
}

super::extract::redacted_debug!(VerifyPinRequest);

/// Check a port-out PIN (rate limited: 5 failures per 15 minutes).
#[utoipa::path(post, path = "/v2/organization/port_out_pin/actions/verify", tag = "Organization",
    request_body = VerifyPinRequest,
    responses((status = 200, description = "{valid}"), (status = 429, description = "too_many_requests")),
    security(("bearer" = [])))]
pub async fn verify_pin(
    State(state): State<AppState>,
    principal: Principal,
    meta: RequestMeta,
    Json(body): Json<VerifyPinRequest>,
) -> ApiResult<axum::Json<Value>> {
    check_secret(&state, &principal, meta, OrgSecret::PortOutPin, &body.pin).await
}

async fn check_secret(
    state: &AppState,
    principal: &Principal,
    meta: RequestMeta,
    secret: OrgSecret,
    candidate: &str,
) -> ApiResult<axum::Json<Value>> {
    let (valid, position) = state
        .accounts
        .check_org_secret(
            principal.organization_id,
            secret,
            candidate,
            &meta.by(principal),
        )
        .await?;
    state.caught_up(position).await?;
    Ok(axum::Json(json!({ "data": { "valid": valid } })))
}
