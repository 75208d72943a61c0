//! The JSON shapes of resources, built from read models (one function per resource).

use serde_json::{json, Value};
use uuid::Uuid;
use warden_projections::{organizations, users};

use super::error::{ApiError, ApiResult};
use crate::app::AppState;

/// A user as `GET /v2/users/me` shows it.
pub async fn user(state: &AppState, user_id: Uuid) -> ApiResult<Value> {
    let row = users::get(&state.db.pool, &user_id.to_string())
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(user_row(&row))
}

/// A user row as `GET /v2/users/me` shows it.
pub fn user_row(row: &users::UserRow) -> Value {
    json!({
        "record_type": row.role,
        "id": row.user_id,
        "organization_id": row.organization_id,
        "email": row.email,
        "first_name": row.first_name,
        "last_name": row.last_name,
        "phone_number": row.phone_number,
        "user_status": row.status,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "last_sign_in_at": row.last_sign_in_at,
        "two_factor": {
            "enabled": row.two_factor_enabled != 0,
            "method": row.two_factor_method,
            "phone_number": null,
            "backup_codes_remaining": row.backup_codes_remaining,
        },
    })
}

/// The organization as `GET /v2/organization` shows it.
pub async fn organization(state: &AppState, organization_id: Uuid) -> ApiResult<Value> {
    let row = organizations::get(&state.db.pool, &organization_id.to_string())
        .await?
        .ok_or_else(ApiError::not_found)?;
    let parse = |text: Option<String>| -> Value {
        text.and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null)
    };
    Ok(json!({
        "record_type": "organization",
        "id": row.organization_id,
        "owner_user_id": row.owner_user_id,
        "company_name": row.company_name,
        "billing_currency": row.billing_currency,
        "address": parse(row.address),
        "contact": parse(row.contact),
        "security_passphrase_set": row.security_passphrase_set != 0,
        "port_out_pin_set": row.port_out_pin_set != 0,
        "two_factor_policy": row
            .two_factor_policy
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .unwrap_or_else(|| json!({ "required": false, "allow_disable": false })),
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }))
}
