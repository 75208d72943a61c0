//! `users`: who belongs to which organization, with their (unsealed) profile — the model
//! behind `GET /v2/users/me` and, later, the member list.

use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use sqlx::{AnyConnection, AnyPool, FromRow};
use warden_commands::Secrets;
use warden_domain::chain::format_time;
use warden_domain::user::UserEvent;
use warden_domain::RecordedEvent;

use crate::{open_text, ProjectionError, Projector};

pub struct UsersProjector {
    secrets: Arc<dyn Secrets>,
}

impl UsersProjector {
    pub fn new(secrets: Arc<dyn Secrets>) -> Self {
        Self { secrets }
    }
}

/// A row of `users`.
#[derive(Debug, Clone, PartialEq, Eq, FromRow, Serialize)]
pub struct UserRow {
    pub user_id: String,
    pub organization_id: String,
    pub role: String,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub phone_number: Option<String>,
    pub status: String,
    pub created_at: String,
    pub updated_at: String,
    pub last_sign_in_at: Option<String>,
    pub two_factor_enabled: i64,
    pub two_factor_method: Option<String>,
    pub backup_codes_remaining: i64,
    /// The enrolled phone number, masked.
    pub two_factor_phone: Option<String>,
    /// Consecutive wrong second factors.
    pub two_factor_failures: i64,
}

#[async_trait]
impl Projector for UsersProjector {
    fn name(&self) -> &'static str {
        "users"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["users"]
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        if event.stream_type != "user" {
            return Ok(());
        }
        let user_id = event.stream_id.trim_start_matches("user-").to_owned();
        let at = format_time(event.recorded_at);
        let secrets = self.secrets.as_ref();
        let e: UserEvent = event
            .decode()
            .map_err(|e| ProjectionError::decode(event, e))?;
        match e {
            UserEvent::Registered {
                organization_id,
                role,
                email,
                first_name,
                last_name,
                ..
            } => {
                let role = serde_json::to_value(role)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                sqlx::query(
                    "INSERT INTO users (user_id, organization_id, role, email, first_name, last_name, \
                     phone_number, status, created_at, updated_at, last_sign_in_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, NULL, 'enabled', $7, $7, NULL)",
                )
                .bind(&user_id)
                .bind(organization_id.to_string())
                .bind(role)
                .bind(open_text(secrets, &email).await?)
                .bind(open_text(secrets, &first_name).await?)
                .bind(open_text(secrets, &last_name).await?)
                .bind(&at)
                .execute(&mut *conn)
                .await?;
            }
            UserEvent::SessionStarted { .. } => {
                sqlx::query("UPDATE users SET last_sign_in_at = $2 WHERE user_id = $1")
                    .bind(&user_id)
                    .bind(&at)
                    .execute(&mut *conn)
                    .await?;
            }
            UserEvent::ProfileUpdated {
                first_name,
                last_name,
                phone_number,
            } => {
                for (column, value) in [
                    ("first_name", first_name),
                    ("last_name", last_name),
                    ("phone_number", phone_number),
                ] {
                    if let Some(sealed) = value {
                        sqlx::query(&format!(
                            "UPDATE users SET {column} = $2, updated_at = $3 WHERE user_id = $1"
                        ))
                        .bind(&user_id)
                        .bind(open_text(secrets, &sealed).await?)
                        .bind(&at)
                        .execute(&mut *conn)
                        .await?;
                    }
                }
            }
            UserEvent::EmailChanged { email } => {
                sqlx::query("UPDATE users SET email = $2, updated_at = $3 WHERE user_id = $1")
                    .bind(&user_id)
                    .bind(open_text(secrets, &email).await?)
                    .bind(&at)
                    .execute(&mut *conn)
                    .await?;
            }
            UserEvent::TwoFactorEnrollmentStarted(e) => {
                let pending = match &e.phone_number {
                    Some(sealed) => open_text(secrets, sealed).await?.map(|p| mask_phone(&p)),
                    None => None,
                };
                sqlx::query("UPDATE users SET two_factor_pending_phone = $2 WHERE user_id = $1")
                    .bind(&user_id)
                    .bind(pending)
                    .execute(&mut *conn)
                    .await?;
            }
            UserEvent::TwoFactorEnabled(e) => {
                sqlx::query(
                    "UPDATE users SET two_factor_enabled = 1, two_factor_method = $2, \
                     two_factor_phone = two_factor_pending_phone, two_factor_pending_phone = NULL, \
                     backup_codes_remaining = $3, updated_at = $4 WHERE user_id = $1",
                )
                .bind(&user_id)
                .bind(method_name(e.method))
                .bind(i64::from(e.backup_code_count))
                .bind(&at)
                .execute(&mut *conn)
                .await?;
            }
            UserEvent::TwoFactorMethodChanged(e) => {
                sqlx::query(
                    "UPDATE users SET two_factor_method = $2, two_factor_phone = two_factor_pending_phone, \
                     two_factor_pending_phone = NULL, updated_at = $3 WHERE user_id = $1",
                )
                .bind(&user_id)
                .bind(method_name(e.method))
                .bind(&at)
                .execute(&mut *conn)
                .await?;
            }
            UserEvent::BackupCodesRegenerated {
                backup_code_count: remaining,
                ..
            }
            | UserEvent::BackupCodeConsumed { remaining, .. } => {
                sqlx::query("UPDATE users SET backup_codes_remaining = $2, updated_at = $3 WHERE user_id = $1")
                    .bind(&user_id)
                    .bind(i64::from(remaining))
                    .bind(&at)
                    .execute(&mut *conn)
                    .await?;
            }
            UserEvent::TwoFactorDisabled { .. } => {
                sqlx::query(
                    "UPDATE users SET two_factor_enabled = 0, two_factor_method = NULL, two_factor_phone = NULL, \
                     two_factor_pending_phone = NULL, backup_codes_remaining = 0, updated_at = $2 WHERE user_id = $1",
                )
                .bind(&user_id)
                .bind(&at)
                .execute(&mut *conn)
                .await?;
            }
            UserEvent::TwoFactorReset { .. } => {
                sqlx::query(
                    "UPDATE users SET two_factor_enabled = 0, two_factor_method = NULL, two_factor_phone = NULL, \
                     two_factor_pending_phone = NULL, backup_codes_remaining = 0, two_factor_failures = 0, \
                     updated_at = $2 WHERE user_id = $1",
                )
                .bind(&user_id)
                .bind(&at)
                .execute(&mut *conn)
                .await?;
            }
            // The same count the aggregate keeps: wrong second factors since the last right one.
            UserEvent::TwoFactorChallengeFailed { .. }
            | UserEvent::TwoFactorStepUpFailed { .. } => {
                sqlx::query(
                    "UPDATE users SET two_factor_failures = two_factor_failures + 1 WHERE user_id = $1",
                )
                .bind(&user_id)
                .execute(&mut *conn)
                .await?;
            }
            UserEvent::TwoFactorChallengePassed(_) | UserEvent::TwoFactorUnblocked {} => {
                sqlx::query("UPDATE users SET two_factor_failures = 0 WHERE user_id = $1")
                    .bind(&user_id)
                    .execute(&mut *conn)
                    .await?;
            }
            UserEvent::Disabled {} | UserEvent::Enabled {} | UserEvent::Removed {} => {
                let status = match e {
                    UserEvent::Disabled {} => "disabled",
                    UserEvent::Enabled {} => "enabled",
                    _ => "removed",
                };
                sqlx::query("UPDATE users SET status = $2, updated_at = $3 WHERE user_id = $1")
                    .bind(&user_id)
                    .bind(status)
                    .bind(&at)
                    .execute(&mut *conn)
                    .await?;
            }
            // Their data key is gone: a rebuild opens nothing of theirs, and the live row
            // drops it all now, so both agree.
            UserEvent::Forgotten {} => {
                sqlx::query(
                    "UPDATE users SET status = 'removed', email = NULL, first_name = NULL, last_name = NULL, \
                     phone_number = NULL, two_factor_phone = NULL, two_factor_pending_phone = NULL, \
                     updated_at = $2 WHERE user_id = $1",
                )
                .bind(&user_id)
                .bind(&at)
                .execute(&mut *conn)
                .await?;
            }
            UserEvent::PasswordChanged { .. }
            | UserEvent::SignInFailed { .. }
            | UserEvent::SessionEnded { .. }
            | UserEvent::TwoFactorCodeSent(_)
            | UserEvent::TwoFactorEnrollmentFailed { .. }
            | UserEvent::TwoFactorChallengeStarted { .. }
            | UserEvent::BackupCodesLow { .. }
            | UserEvent::ApiKeyCreated { .. }
            | UserEvent::ApiKeyRotated { .. }
            | UserEvent::ApiKeyRevoked { .. }
            | UserEvent::RecoveryCodeSent(_)
            | UserEvent::EmailCodeSent(_) => {}
        }
        Ok(())
    }
}

const SELECT: &str =
    "SELECT user_id, organization_id, role, email, first_name, last_name, phone_number, \
     status, created_at, updated_at, last_sign_in_at, two_factor_enabled, two_factor_method, \
     backup_codes_remaining, two_factor_phone, two_factor_failures FROM users";

pub async fn get(pool: &AnyPool, user_id: &str) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as::<_, UserRow>(&format!("{SELECT} WHERE user_id = $1"))
        .bind(user_id)
        .fetch_optional(pool)
        .await
}

/// An organization's members (owner first, then sub-users by joining time); removed ones
/// are gone.
pub async fn members(pool: &AnyPool, organization_id: &str) -> Result<Vec<UserRow>, sqlx::Error> {
    sqlx::query_as::<_, UserRow>(&format!(
        "{SELECT} WHERE organization_id = $1 AND status <> 'removed' \
         ORDER BY CASE WHEN role = 'organization_owner' THEN 0 ELSE 1 END, created_at, user_id"
    ))
    .bind(organization_id)
    .fetch_all(pool)
    .await
}

/// Every row, in a stable order (for rebuild comparisons and exports).
pub async fn all(pool: &AnyPool) -> Result<Vec<UserRow>, sqlx::Error> {
    sqlx::query_as::<_, UserRow>(&format!("{SELECT} ORDER BY user_id"))
        .fetch_all(pool)
        .await
}

fn method_name(method: warden_domain::two_factor::Method) -> &'static str {
    use warden_domain::two_factor::Method;
    match method {
        Method::Totp => "totp",
        Method::Sms => "sms",
        Method::Call => "call",
    }
}

/// `+1303*****34`: read models never hold a full second-factor number.
fn mask_phone(raw: &str) -> String {
    warden_domain::values::PhoneNumber::parse("/", raw)
        .map(|p| p.masked())
        .unwrap_or_else(|_| "*".repeat(raw.len()))
}
