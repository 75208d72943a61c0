//! `verify`: verify profiles, message templates and verifications as the Telnyx-compatible
//! API shows them — the models behind `/v2/verify_profiles` and `/v2/verifications`, and the
//! expiry scheduler's list of pending verifications.

use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::{json, Value};
use sqlx::{AnyConnection, AnyPool, FromRow};
use warden_commands::Secrets;
use warden_domain::chain::format_time;
use warden_domain::verify::profile::{ChannelSettings, ProfileSettings, VerifyProfileEvent};
use warden_domain::verify::template::VerifyTemplateEvent;
use warden_domain::verify::verification::{VerificationEvent, MAX_FAILED_ATTEMPTS};
use warden_domain::RecordedEvent;

use crate::sql::{rows, ROWS_PER_STATEMENT};
use crate::{open_text, ProjectionError, Projector};

pub struct VerifyProjector {
    secrets: Arc<dyn Secrets>,
}

impl VerifyProjector {
    pub fn new(secrets: Arc<dyn Secrets>) -> Self {
        Self { secrets }
    }
}

/// The API's JSON of one channel's settings.
fn channel_view(c: &ChannelSettings, with_code: bool, with_sender: bool) -> Value {
    let mut v = serde_json::Map::new();
    v.insert("app_name".into(), json!(c.app_name));
    v.insert(
        "default_verification_timeout_secs".into(),
        json!(c.default_verification_timeout_secs),
    );
    v.insert(
        "whitelisted_destinations".into(),
        json!(Vec::<String>::from(c.whitelisted_destinations.clone())),
    );
    if with_code {
        v.insert("code_length".into(), json!(c.code_length));
        v.insert(
            "messaging_template_id".into(),
            json!(c.messaging_template_id),
        );
    }
    if with_sender {
        v.insert("alpha_sender".into(), json!(c.alpha_sender));
    }
    Value::Object(v)
}

/// The API's JSON of a profile's settings (Telnyx `VerifyProfile` fields).
pub fn settings_view(s: &ProfileSettings) -> Value {
    json!({
        "name": s.name,
        "webhook_url": s.webhook_url,
        "webhook_failover_url": s.webhook_failover_url,
        "language": s.language,
        "daily_spend_limit": s.daily_spend_limit.map(|m| m.dollars()),
        "daily_spend_limit_enabled": s.daily_spend_limit_enabled,
        "sms": channel_view(&s.sms, true, true),
        "call": channel_view(&s.call, true, false),
        "flashcall": channel_view(&s.flashcall, false, false),
    })
}

#[async_trait]
impl Projector for VerifyProjector {
    fn name(&self) -> &'static str {
        "verify"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["verify_profiles", "verify_templates", "verifications"]
    }

    /// Every verification event changes one row, so a batch folds its verification events
    /// into the rows they leave behind and writes them in two multi-row statements: one
    /// INSERT of the verifications the batch started, one UPDATE of the others. Profiles
    /// and templates (rare) are written as they come; no statement reads another's table.
    async fn apply_batch(
        &self,
        conn: &mut AnyConnection,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        let mut rows = VerificationRows::default();
        for event in events {
            let at = format_time(event.recorded_at);
            match event.stream_type.as_str() {
                "verify_profile" => {
                    let id = event.stream_id.trim_start_matches("verify_profile-");
                    let e: VerifyProfileEvent = event
                        .decode()
                        .map_err(|e| ProjectionError::decode(event, e))?;
                    apply_profile(conn, id, &at, e).await?;
                }
                "verify_template" => {
                    let id = event.stream_id.trim_start_matches("verify_template-");
                    let e: VerifyTemplateEvent = event
                        .decode()
                        .map_err(|e| ProjectionError::decode(event, e))?;
                    apply_template(conn, id, &at, e).await?;
                }
                "verification" => {
                    let id = event.stream_id.trim_start_matches("verification-");
                    let e: VerificationEvent = event
                        .decode()
                        .map_err(|e| ProjectionError::decode(event, e))?;
                    rows.apply(self.secrets.as_ref(), id, at, e).await?;
                }
                _ => {}
            }
        }
        rows.write(conn).await
    }
}

async fn apply_profile(
    conn: &mut AnyConnection,
    id: &str,
    at: &str,
    e: VerifyProfileEvent,
) -> Result<(), ProjectionError> {
    match e {
        VerifyProfileEvent::Created {
            organization_id,
            settings,
            ..
        } => {
            sqlx::query(
                "INSERT INTO verify_profiles (profile_id, organization_id, name, settings, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $5)",
            )
            .bind(id)
            .bind(organization_id.to_string())
            .bind(&settings.name)
            .bind(settings_view(&settings).to_string())
            .bind(at)
            .execute(&mut *conn)
            .await?;
        }
        VerifyProfileEvent::Updated { settings } => {
            sqlx::query(
                "UPDATE verify_profiles SET name = $2, settings = $3, updated_at = $4 WHERE profile_id = $1",
            )
            .bind(id)
            .bind(&settings.name)
            .bind(settings_view(&settings).to_string())
            .bind(at)
            .execute(&mut *conn)
            .await?;
        }
        VerifyProfileEvent::Deleted {} => {
            sqlx::query("DELETE FROM verify_profiles WHERE profile_id = $1")
                .bind(id)
                .execute(&mut *conn)
                .await?;
        }
        VerifyProfileEvent::SendReserved(_) | VerifyProfileEvent::SpendThresholdReached { .. } => {}
    }
    Ok(())
}

async fn apply_template(
    conn: &mut AnyConnection,
    id: &str,
    at: &str,
    e: VerifyTemplateEvent,
) -> Result<(), ProjectionError> {
    match e {
        VerifyTemplateEvent::Created {
            organization_id,
            text,
            ..
        } => {
            sqlx::query(
                "INSERT INTO verify_templates (template_id, organization_id, text, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $4)",
            )
            .bind(id)
            .bind(organization_id.to_string())
            .bind(text.as_str())
            .bind(at)
            .execute(&mut *conn)
            .await?;
        }
        VerifyTemplateEvent::Updated { text } => {
            sqlx::query(
                "UPDATE verify_templates SET text = $2, updated_at = $3 WHERE template_id = $1",
            )
            .bind(id)
            .bind(text.as_str())
            .bind(at)
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}

/// A batch's verification rows: the ones it started, whole, and the columns it changed of
/// the others (`None`: left as stored).
#[derive(Default)]
struct VerificationRows {
    new: Vec<NewVerification>,
    changed: Vec<Change>,
    /// Where each verification is in `new` (`Ok`) or `changed` (`Err`).
    index: std::collections::HashMap<String, Result<usize, usize>>,
}

struct NewVerification {
    verification_id: String,
    organization_id: String,
    profile_id: String,
    phone_number: String,
    kind: &'static str,
    timeout_secs: i64,
    custom_code: i64,
    expires_at: String,
    created_at: String,
    columns: Columns,
}

struct Change {
    verification_id: String,
    status: Option<&'static str>,
    delivery_status: Option<&'static str>,
    failed_attempts: Option<i64>,
    updated_at: String,
}

/// The columns later events change.
struct Columns {
    status: &'static str,
    delivery_status: &'static str,
    failed_attempts: i64,
    updated_at: String,
}

impl VerificationRows {
    async fn apply(
        &mut self,
        secrets: &dyn Secrets,
        id: &str,
        at: String,
        e: VerificationEvent,
    ) -> Result<(), ProjectionError> {
        let (status, delivery_status, failed_attempts) = match e {
            VerificationEvent::Sent(sent) => {
                let phone_number = open_text(secrets, &sent.phone_number)
                    .await?
                    .unwrap_or_default();
                self.index.insert(id.to_owned(), Ok(self.new.len()));
                self.new.push(NewVerification {
                    verification_id: id.to_owned(),
                    organization_id: sent.organization_id.to_string(),
                    profile_id: sent.profile_id.to_string(),
                    phone_number,
                    kind: sent.channel.as_str(),
                    timeout_secs: i64::from(sent.timeout_secs),
                    custom_code: i64::from(sent.custom_code),
                    expires_at: format_time(sent.expires_at),
                    created_at: at.clone(),
                    columns: Columns {
                        status: "pending",
                        delivery_status: "sent",
                        failed_attempts: 0,
                        updated_at: at,
                    },
                });
                return Ok(());
            }
            VerificationEvent::CodeRejected { failed_attempts } => (
                None,
                None,
                Some(i64::from(failed_attempts.min(MAX_FAILED_ATTEMPTS))),
            ),
            VerificationEvent::Delivered {} => (None, Some("delivered"), None),
            VerificationEvent::DeliveryFailed { .. } => {
                (Some("error"), Some("sending_failed"), None)
            }
            VerificationEvent::Accepted { .. } => (Some("accepted"), None, None),
            VerificationEvent::Invalidated { .. } => (Some("invalid"), None, None),
            VerificationEvent::Expired {} => (Some("expired"), None, None),
        };
        match self.index.get(id).copied() {
            Some(Ok(i)) => {
                if let Some(row) = self.new.get_mut(i) {
                    let c = &mut row.columns;
                    c.status = status.unwrap_or(c.status);
                    c.delivery_status = delivery_status.unwrap_or(c.delivery_status);
                    c.failed_attempts = failed_attempts.unwrap_or(c.failed_attempts);
                    c.updated_at = at;
                }
            }
            Some(Err(i)) => {
                if let Some(change) = self.changed.get_mut(i) {
                    change.status = status.or(change.status);
                    change.delivery_status = delivery_status.or(change.delivery_status);
                    change.failed_attempts = failed_attempts.or(change.failed_attempts);
                    change.updated_at = at;
                }
            }
            None => {
                self.index.insert(id.to_owned(), Err(self.changed.len()));
                self.changed.push(Change {
                    verification_id: id.to_owned(),
                    status,
                    delivery_status,
                    failed_attempts,
                    updated_at: at,
                });
            }
        }
        Ok(())
    }

    async fn write(self, conn: &mut AnyConnection) -> Result<(), ProjectionError> {
        for chunk in self.new.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO verifications (verification_id, organization_id, profile_id, \
                 phone_number, type, status, delivery_status, failed_attempts, timeout_secs, \
                 custom_code, expires_at, created_at, updated_at) VALUES {}",
                rows(chunk.len(), 13)
            );
            let mut query = sqlx::query(&sql);
            for v in chunk {
                query = query
                    .bind(v.verification_id.as_str())
                    .bind(v.organization_id.as_str())
                    .bind(v.profile_id.as_str())
                    .bind(v.phone_number.as_str())
                    .bind(v.kind)
                    .bind(v.columns.status)
                    .bind(v.columns.delivery_status)
                    .bind(v.columns.failed_attempts)
                    .bind(v.timeout_secs)
                    .bind(v.custom_code)
                    .bind(v.expires_at.as_str())
                    .bind(v.created_at.as_str())
                    .bind(v.columns.updated_at.as_str());
            }
            query.execute(&mut *conn).await?;
        }
        // VALUES names its columns column1, column2, … on both backends; NULL keeps the
        // stored value.
        for chunk in self.changed.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "UPDATE verifications SET status = COALESCE(v.column2, status), \
                 delivery_status = COALESCE(v.column3, delivery_status), \
                 failed_attempts = COALESCE(v.column4, failed_attempts), updated_at = v.column5 \
                 FROM (VALUES {}) AS v WHERE verification_id = v.column1",
                rows(chunk.len(), 5)
            );
            let mut query = sqlx::query(&sql);
            for c in chunk {
                query = query
                    .bind(c.verification_id.as_str())
                    .bind(c.status)
                    .bind(c.delivery_status)
                    .bind(c.failed_attempts)
                    .bind(c.updated_at.as_str());
            }
            query.execute(&mut *conn).await?;
        }
        Ok(())
    }
}

/// A row of `verify_profiles`.
#[derive(Debug, Clone, PartialEq, Eq, FromRow, Serialize)]
pub struct ProfileRow {
    pub profile_id: String,
    pub organization_id: String,
    pub name: String,
    pub settings: String,
    pub created_at: String,
    pub updated_at: String,
}

const PROFILE_SELECT: &str =
    "SELECT profile_id, organization_id, name, settings, created_at, updated_at FROM verify_profiles";

/// One of the organization's profiles.
pub async fn profile(
    pool: &AnyPool,
    organization_id: &str,
    profile_id: &str,
) -> Result<Option<ProfileRow>, sqlx::Error> {
    sqlx::query_as::<_, ProfileRow>(&format!(
        "{PROFILE_SELECT} WHERE organization_id = $1 AND profile_id = $2"
    ))
    .bind(organization_id)
    .bind(profile_id)
    .fetch_optional(pool)
    .await
}

/// A page of the organization's profiles (optionally only those named `name`), oldest
/// first, and how many there are in all.
pub async fn profiles(
    pool: &AnyPool,
    organization_id: &str,
    name: Option<&str>,
    limit: i64,
    offset: i64,
) -> Result<(Vec<ProfileRow>, i64), sqlx::Error> {
    let filter = "WHERE organization_id = $1 AND ($2 = '' OR name = $2)";
    let rows = sqlx::query_as::<_, ProfileRow>(&format!(
        "{PROFILE_SELECT} {filter} ORDER BY created_at, profile_id LIMIT $3 OFFSET $4"
    ))
    .bind(organization_id)
    .bind(name.unwrap_or_default())
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await?;
    let total: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM verify_profiles {filter}"))
        .bind(organization_id)
        .bind(name.unwrap_or_default())
        .fetch_one(pool)
        .await?;
    Ok((rows, total))
}

#[derive(Debug, Clone, PartialEq, Eq, FromRow, Serialize)]
pub struct TemplateRow {
    pub template_id: String,
    pub text: String,
}

/// The organization's own templates, oldest first.
pub async fn templates(
    pool: &AnyPool,
    organization_id: &str,
) -> Result<Vec<TemplateRow>, sqlx::Error> {
    sqlx::query_as::<_, TemplateRow>(
        "SELECT template_id, text FROM verify_templates WHERE organization_id = $1 \
         ORDER BY created_at, template_id",
    )
    .bind(organization_id)
    .fetch_all(pool)
    .await
}

pub async fn template(
    pool: &AnyPool,
    organization_id: &str,
    template_id: &str,
) -> Result<Option<TemplateRow>, sqlx::Error> {
    sqlx::query_as::<_, TemplateRow>(
        "SELECT template_id, text FROM verify_templates WHERE organization_id = $1 AND template_id = $2",
    )
    .bind(organization_id)
    .bind(template_id)
    .fetch_optional(pool)
    .await
}

/// A row of `verifications`.
#[derive(Debug, Clone, PartialEq, Eq, FromRow, Serialize)]
pub struct VerificationRow {
    pub verification_id: String,
    pub organization_id: String,
    pub profile_id: String,
    pub phone_number: String,
    #[sqlx(rename = "type")]
    pub kind: String,
    pub status: String,
    pub delivery_status: String,
    pub failed_attempts: i64,
    pub timeout_secs: i64,
    pub custom_code: i64,
    pub expires_at: String,
    pub created_at: String,
    pub updated_at: String,
}

const VERIFICATION_SELECT: &str =
    "SELECT verification_id, organization_id, profile_id, phone_number, type, status, delivery_status, \
     failed_attempts, timeout_secs, custom_code, expires_at, created_at, updated_at FROM verifications";

pub async fn verification(
    pool: &AnyPool,
    organization_id: &str,
    verification_id: &str,
) -> Result<Option<VerificationRow>, sqlx::Error> {
    sqlx::query_as::<_, VerificationRow>(&format!(
        "{VERIFICATION_SELECT} WHERE organization_id = $1 AND verification_id = $2"
    ))
    .bind(organization_id)
    .bind(verification_id)
    .fetch_optional(pool)
    .await
}

/// A page of the organization's verifications of one number, newest first, and the total.
pub async fn by_phone_number(
    pool: &AnyPool,
    organization_id: &str,
    phone_number: &str,
    limit: i64,
    offset: i64,
) -> Result<(Vec<VerificationRow>, i64), sqlx::Error> {
    let rows = sqlx::query_as::<_, VerificationRow>(&format!(
        "{VERIFICATION_SELECT} WHERE organization_id = $1 AND phone_number = $2 \
         ORDER BY created_at DESC, verification_id DESC LIMIT $3 OFFSET $4"
    ))
    .bind(organization_id)
    .bind(phone_number)
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await?;
    let total: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM verifications WHERE organization_id = $1 AND phone_number = $2",
    )
    .bind(organization_id)
    .bind(phone_number)
    .fetch_one(pool)
    .await?;
    Ok((rows, total))
}

/// Pending verifications whose time ran out by `now` (for the expiry scheduler).
pub async fn due_for_expiry(
    pool: &AnyPool,
    now: &str,
    limit: i64,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT verification_id FROM verifications WHERE status = 'pending' AND expires_at <= $1 \
         ORDER BY expires_at LIMIT $2",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(pool)
    .await
}
