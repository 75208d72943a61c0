//! `POST /v2/accounts`: sign-up, creating an organization and its owner.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::ToSchema;
use warden_commands::accounts::{SignUp, SERVICE_NAME};
use warden_domain::values::{CurrencyCode, EmailAddress, Password, Text};

use super::error::ApiResult;
use super::extract::{all_valid, Json, RequestMeta};
use super::views;
use crate::app::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/v2/accounts", post(sign_up))
}

#[derive(Deserialize, ToSchema)]
pub struct SignUpRequest {
    pub email: String,
    /// At least 15 characters; no composition rules; common passwords are refused.
    pub password: String,
    pub first_name: String,
    pub last_name: String,
    pub company_name: Option<String>,
    /// ISO 4217, fixed for the life of the organization.
    pub billing_currency: String,
}

super::extract::redacted_debug!(SignUpRequest);

/// Create an account: an organization with its owner. No sign-in needed.
#[utoipa::path(post, path = "/v2/accounts", tag = "Accounts", request_body = SignUpRequest,
    responses((status = 201, description = "The organization with its owner"),
              (status = 409, description = "Email already in use"),
              (status = 422, description = "Invalid field")))]
pub async fn sign_up(
    State(state): State<AppState>,
    meta: RequestMeta,
    Json(body): Json<SignUpRequest>,
) -> ApiResult<(StatusCode, axum::Json<Value>)> {
    let email = EmailAddress::parse("/email", &body.email);
    let local = email
        .as_ref()
        .map(|e| e.local_part().to_owned())
        .unwrap_or_default();
    let password = Password::parse("/password", &body.password, &[SERVICE_NAME, &local]);
    let first_name = Text::parse("/first_name", &body.first_name, 100);
    let last_name = Text::parse("/last_name", &body.last_name, 100);
    let company_name = body
        .company_name
        .as_deref()
        .filter(|s| !s.trim().is_empty())
        .map(|s| Text::parse("/company_name", s, 200))
        .transpose();
    let currency = CurrencyCode::parse("/billing_currency", &body.billing_currency);
    all_valid([
        email.as_ref().err().cloned(),
        password.as_ref().err().cloned(),
        first_name.as_ref().err().cloned(),
        last_name.as_ref().err().cloned(),
        company_name.as_ref().err().cloned(),
        currency.as_ref().err().cloned(),
    ])?;
    let (
        Ok(email),
        Ok(password),
        Ok(first_name),
        Ok(last_name),
        Ok(company_name),
        Ok(billing_currency),
    ) = (
        email,
        password,
        first_name,
        last_name,
        company_name,
        currency,
    )
    else {
        return Err(super::error::ApiError::internal(&"validation mismatch"));
    };
    let signed_up = state
        .accounts
        .sign_up(
            SignUp {
                email,
                password,
                first_name,
                last_name,
                company_name,
                billing_currency,
            },
            &meta.anonymous(),
        )
        .await?;
    state.caught_up(signed_up.position).await?;
    let org = views::organization(&state, signed_up.organization_id).await?;
    let owner = views::user(&state, signed_up.user_id).await?;
    let mut data = org;
    if let Some(obj) = data.as_object_mut() {
        obj.insert("owner".into(), owner);
    }
    Ok((StatusCode::CREATED, axum::Json(json!({ "data": data }))))
}
