//! `users`: who belongs to which organization, with their (unsealed) profile — the model
//! behind `GET /v2/users/me` and, later, the member list.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use sqlx::{AnyConnection, AnyPool, FromRow, Row};
use warden_commands::Secrets;
use warden_domain::chain::format_time;
use warden_domain::user::UserEvent;
use warden_domain::RecordedEvent;

use crate::sql::{rows, rows_in, ROWS_PER_STATEMENT};
use crate::{open_text, ProjectionError, Projector};

/// The columns of a [`UserRow`].
macro_rules! select_columns {
    () => {
        "SELECT user_id, organization_id, role, email, first_name, last_name, phone_number, \
     status, created_at, updated_at, last_sign_in_at, two_factor_enabled, two_factor_method, \
     backup_codes_remaining, two_factor_phone, two_factor_failures"
    };
}

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

    /// The rows the batch touches are read in one statement, every event is folded into
    /// them in memory, and the changed ones are written back in one multi-row upsert: a
    /// user's events are otherwise one `UPDATE` each, one round trip per event in a rebuild.
    async fn apply_batch(
        &self,
        conn: &mut AnyConnection,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        let mut changes = Vec::new();
        for event in events.iter().filter(|e| e.stream_type == "user") {
            let e: UserEvent = event
                .decode()
                .map_err(|e| ProjectionError::decode(event, e))?;
            if changes_row(&e) {
                changes.push((event, e));
            }
        }
        if changes.is_empty() {
            return Ok(());
        }
        let mut ids: Vec<String> = changes.iter().map(|(event, _)| user_id(event)).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut rows = Rows::load(conn, &ids).await?;
        for (event, e) in changes {
            rows.apply(self.secrets.as_ref(), event, e).await?;
        }
        rows.write(conn).await
    }
}

fn user_id(event: &RecordedEvent) -> String {
    event.stream_id.trim_start_matches("user-").to_owned()
}

/// Whether the event changes the user's row (the others are left out before the rows are
/// read).
fn changes_row(e: &UserEvent) -> bool {
    match e {
        UserEvent::ProfileUpdated {
            first_name,
            last_name,
            phone_number,
        } => first_name.is_some() || last_name.is_some() || phone_number.is_some(),
        UserEvent::Registered { .. }
        | UserEvent::SessionStarted { .. }
        | UserEvent::EmailChanged { .. }
        | UserEvent::TwoFactorEnrollmentStarted(_)
        | UserEvent::TwoFactorEnabled(_)
        | UserEvent::TwoFactorMethodChanged(_)
        | UserEvent::BackupCodesRegenerated { .. }
        | UserEvent::BackupCodeConsumed { .. }
        | UserEvent::TwoFactorDisabled { .. }
        | UserEvent::TwoFactorReset { .. }
        | UserEvent::TwoFactorChallengeFailed { .. }
        | UserEvent::TwoFactorStepUpFailed { .. }
        | UserEvent::TwoFactorChallengePassed(_)
        | UserEvent::TwoFactorUnblocked {}
        | UserEvent::Disabled {}
        | UserEvent::Enabled {}
        | UserEvent::Removed {}
        | UserEvent::Forgotten {} => true,
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
        | UserEvent::EmailCodeSent(_) => false,
    }
}

/// A stored row of `users`: what queries see, plus the number an enrollment is waiting to
/// confirm.
#[derive(Debug, Clone)]
struct Stored {
    row: UserRow,
    pending_phone: Option<String>,
}

/// A batch's rows, by user id (`None`: no such user yet), and which of them changed.
#[derive(Default)]
struct Rows {
    by_id: HashMap<String, Option<Stored>>,
    changed: BTreeSet<String>,
}

impl Rows {
    async fn load(conn: &mut AnyConnection, ids: &[String]) -> Result<Self, ProjectionError> {
        let mut by_id: HashMap<String, Option<Stored>> =
            ids.iter().map(|id| (id.clone(), None)).collect();
        let select = concat!(
            select_columns!(),
            ", two_factor_pending_phone FROM users WHERE user_id"
        );
        for row in rows_in(conn, select, ids).await? {
            let stored = Stored {
                row: UserRow::from_row(&row)?,
                pending_phone: row.try_get("two_factor_pending_phone")?,
            };
            by_id.insert(stored.row.user_id.clone(), Some(stored));
        }
        Ok(Self {
            by_id,
            changed: BTreeSet::new(),
        })
    }

    /// Folds one event into its user's row, as the statement it stands for would change
    /// it: an event for a user with no row changes nothing.
    async fn apply(
        &mut self,
        secrets: &dyn Secrets,
        event: &RecordedEvent,
        e: UserEvent,
    ) -> Result<(), ProjectionError> {
        let id = user_id(event);
        let at = format_time(event.recorded_at);
        let slot = self.by_id.entry(id.clone()).or_default();
        if let UserEvent::Registered {
            organization_id,
            role,
            email,
            first_name,
            last_name,
            ..
        } = e
        {
            if slot.is_some() {
                return Err(ProjectionError::decode(
                    event,
                    "the user is already registered",
                ));
            }
            let role = serde_json::to_value(role)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            *slot = Some(Stored {
                row: UserRow {
                    user_id: id.clone(),
                    organization_id: organization_id.to_string(),
                    role,
                    email: open_text(secrets, &email).await?,
                    first_name: open_text(secrets, &first_name).await?,
                    last_name: open_text(secrets, &last_name).await?,
                    phone_number: None,
                    status: "enabled".into(),
                    created_at: at.clone(),
                    updated_at: at,
                    last_sign_in_at: None,
                    two_factor_enabled: 0,
                    two_factor_method: None,
                    backup_codes_remaining: 0,
                    two_factor_phone: None,
                    two_factor_failures: 0,
                },
                pending_phone: None,
            });
            self.changed.insert(id);
            return Ok(());
        }
        let Some(user) = slot.as_mut() else {
            return Ok(());
        };
        let row = &mut user.row;
        match e {
            UserEvent::SessionStarted { .. } => row.last_sign_in_at = Some(at),
            UserEvent::ProfileUpdated {
                first_name,
                last_name,
                phone_number,
            } => {
                for (column, value) in [
                    (&mut row.first_name, first_name),
                    (&mut row.last_name, last_name),
                    (&mut row.phone_number, phone_number),
                ] {
                    if let Some(sealed) = value {
                        *column = open_text(secrets, &sealed).await?;
                        row.updated_at.clone_from(&at);
                    }
                }
            }
            UserEvent::EmailChanged { email } => {
                row.email = open_text(secrets, &email).await?;
                row.updated_at = at;
            }
            UserEvent::TwoFactorEnrollmentStarted(e) => {
                user.pending_phone = match &e.phone_number {
                    Some(sealed) => open_text(secrets, sealed).await?.map(|p| mask_phone(&p)),
                    None => None,
                };
            }
            UserEvent::TwoFactorEnabled(e) => {
                row.two_factor_enabled = 1;
                row.two_factor_method = Some(method_name(e.method).to_owned());
                row.two_factor_phone = user.pending_phone.take();
                row.backup_codes_remaining = i64::from(e.backup_code_count);
                row.updated_at = at;
            }
            UserEvent::TwoFactorMethodChanged(e) => {
                row.two_factor_method = Some(method_name(e.method).to_owned());
                row.two_factor_phone = user.pending_phone.take();
                row.updated_at = at;
            }
            UserEvent::BackupCodesRegenerated {
                backup_code_count: remaining,
                ..
            }
            | UserEvent::BackupCodeConsumed { remaining, .. } => {
                row.backup_codes_remaining = i64::from(remaining);
                row.updated_at = at;
            }
            UserEvent::TwoFactorDisabled { .. } | UserEvent::TwoFactorReset { .. } => {
                if matches!(e, UserEvent::TwoFactorReset { .. }) {
                    row.two_factor_failures = 0;
                }
                row.two_factor_enabled = 0;
                row.two_factor_method = None;
                row.two_factor_phone = None;
                user.pending_phone = None;
                row.backup_codes_remaining = 0;
                row.updated_at = at;
            }
            // The same count the aggregate keeps: wrong second factors since the last right one.
            UserEvent::TwoFactorChallengeFailed { .. }
            | UserEvent::TwoFactorStepUpFailed { .. } => row.two_factor_failures += 1,
            UserEvent::TwoFactorChallengePassed(_) | UserEvent::TwoFactorUnblocked {} => {
                row.two_factor_failures = 0;
            }
            UserEvent::Disabled {} | UserEvent::Enabled {} | UserEvent::Removed {} => {
                row.status = match e {
                    UserEvent::Disabled {} => "disabled",
                    UserEvent::Enabled {} => "enabled",
                    _ => "removed",
                }
                .into();
                row.updated_at = at;
            }
            // Their data key is gone: a rebuild opens nothing of theirs, and the live row
            // drops it all now, so both agree.
            UserEvent::Forgotten {} => {
                row.status = "removed".into();
                row.email = None;
                row.first_name = None;
                row.last_name = None;
                row.phone_number = None;
                row.two_factor_phone = None;
                user.pending_phone = None;
                row.updated_at = at;
            }
            // Registered is folded above; the others leave the row as it is (and
            // `changes_row` has already left them out). Named one by one, so that a new
            // event is a decision here and not a silent no-op.
            UserEvent::Registered { .. }
            | UserEvent::PasswordChanged { .. }
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
            | UserEvent::EmailCodeSent(_) => return Ok(()),
        }
        self.changed.insert(id);
        Ok(())
    }

    /// Writes the changed rows, whole, in multi-row upserts.
    async fn write(self, conn: &mut AnyConnection) -> Result<(), ProjectionError> {
        const WIDTH: usize = 17;
        let changed: Vec<&Stored> = self
            .changed
            .iter()
            .filter_map(|id| self.by_id.get(id).and_then(Option::as_ref))
            .collect();
        for chunk in changed.chunks(ROWS_PER_STATEMENT * 16 / WIDTH) {
            let sql = format!(
                "INSERT INTO users (user_id, organization_id, role, email, first_name, last_name, \
                 phone_number, status, created_at, updated_at, last_sign_in_at, \
                 two_factor_enabled, two_factor_method, backup_codes_remaining, two_factor_phone, \
                 two_factor_failures, two_factor_pending_phone) VALUES {} \
                 ON CONFLICT (user_id) DO UPDATE SET organization_id = excluded.organization_id, \
                 role = excluded.role, email = excluded.email, first_name = excluded.first_name, \
                 last_name = excluded.last_name, phone_number = excluded.phone_number, \
                 status = excluded.status, created_at = excluded.created_at, \
                 updated_at = excluded.updated_at, last_sign_in_at = excluded.last_sign_in_at, \
                 two_factor_enabled = excluded.two_factor_enabled, \
                 two_factor_method = excluded.two_factor_method, \
                 backup_codes_remaining = excluded.backup_codes_remaining, \
                 two_factor_phone = excluded.two_factor_phone, \
                 two_factor_failures = excluded.two_factor_failures, \
                 two_factor_pending_phone = excluded.two_factor_pending_phone",
                rows(chunk.len(), WIDTH)
            );
            let mut query = sqlx::query(&sql);
            for Stored { row, pending_phone } in chunk {
                query = query
                    .bind(row.user_id.as_str())
                    .bind(row.organization_id.as_str())
                    .bind(row.role.as_str())
                    .bind(row.email.as_deref())
                    .bind(row.first_name.as_deref())
                    .bind(row.last_name.as_deref())
                    .bind(row.phone_number.as_deref())
                    .bind(row.status.as_str())
                    .bind(row.created_at.as_str())
                    .bind(row.updated_at.as_str())
                    .bind(row.last_sign_in_at.as_deref())
                    .bind(row.two_factor_enabled)
                    .bind(row.two_factor_method.as_deref())
                    .bind(row.backup_codes_remaining)
                    .bind(row.two_factor_phone.as_deref())
                    .bind(row.two_factor_failures)
                    .bind(pending_phone.as_deref());
            }
            query.execute(&mut *conn).await?;
        }
        Ok(())
    }
}

const SELECT: &str = concat!(select_columns!(), " FROM users");

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
