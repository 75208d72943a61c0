//! `organizations`: the organization profile and which security settings are set — the
//! model behind `GET /v2/organization`.

use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use sqlx::{AnyConnection, AnyPool, FromRow};
use warden_commands::Secrets;
use warden_domain::chain::format_time;
use warden_domain::organization::OrganizationEvent;
use warden_domain::RecordedEvent;

use crate::{open_text, EventProjector, ProjectionError};

pub struct OrganizationsProjector {
    secrets: Arc<dyn Secrets>,
}

impl OrganizationsProjector {
    pub fn new(secrets: Arc<dyn Secrets>) -> Self {
        Self { secrets }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, FromRow, Serialize)]
pub struct OrganizationRow {
    pub organization_id: String,
    pub owner_user_id: String,
    pub company_name: Option<String>,
    pub billing_currency: String,
    /// JSON object text, unsealed.
    pub address: Option<String>,
    /// JSON object text, unsealed.
    pub contact: Option<String>,
    pub security_passphrase_set: i64,
    pub port_out_pin_set: i64,
    /// JSON of the two-factor policy, once set.
    pub two_factor_policy: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

#[async_trait]
impl EventProjector for OrganizationsProjector {
    fn name(&self) -> &'static str {
        "organizations"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["organizations"]
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        if event.stream_type != "organization" {
            return Ok(());
        }
        let id = event
            .stream_id
            .trim_start_matches("organization-")
            .to_owned();
        let at = format_time(event.recorded_at);
        let secrets = self.secrets.as_ref();
        match event
            .decode::<OrganizationEvent>()
            .map_err(|e| ProjectionError::decode(event, e))?
        {
            OrganizationEvent::Created {
                owner_user_id,
                company_name,
                billing_currency,
                ..
            } => {
                sqlx::query(
                    "INSERT INTO organizations (organization_id, owner_user_id, company_name, billing_currency, \
                     address, contact, security_passphrase_set, port_out_pin_set, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, NULL, NULL, 0, 0, $5, $5)",
                )
                .bind(&id)
                .bind(owner_user_id.to_string())
                .bind(company_name)
                .bind(billing_currency)
                .bind(&at)
                .execute(&mut *conn)
                .await?;
            }
            OrganizationEvent::Updated {
                company_name,
                address,
                contact,
            } => {
                if let Some(name) = company_name {
                    set(conn, &id, "company_name", Some(name), &at).await?;
                }
                if let Some(sealed) = address {
                    set(
                        conn,
                        &id,
                        "address",
                        open_text(secrets, &sealed).await?,
                        &at,
                    )
                    .await?;
                }
                if let Some(sealed) = contact {
                    set(
                        conn,
                        &id,
                        "contact",
                        open_text(secrets, &sealed).await?,
                        &at,
                    )
                    .await?;
                }
            }
            OrganizationEvent::SecurityPassphraseSet { .. } => {
                sqlx::query("UPDATE organizations SET security_passphrase_set = 1, updated_at = $2 WHERE organization_id = $1")
                    .bind(&id)
                    .bind(&at)
                    .execute(&mut *conn)
                    .await?;
            }
            OrganizationEvent::PortOutPinSet { .. } => {
                sqlx::query("UPDATE organizations SET port_out_pin_set = 1, updated_at = $2 WHERE organization_id = $1")
                    .bind(&id)
                    .bind(&at)
                    .execute(&mut *conn)
                    .await?;
            }
            // People and groups are the members model's.
            OrganizationEvent::SecretChecked { .. }
            | OrganizationEvent::PermissionGroupCreated(_)
            | OrganizationEvent::PermissionGroupUpdated(_)
            | OrganizationEvent::PermissionGroupDeleted { .. }
            | OrganizationEvent::SubuserInvited(_)
            | OrganizationEvent::InvitationResent(_)
            | OrganizationEvent::InvitationRevoked { .. }
            | OrganizationEvent::InvitationAccepted(_)
            | OrganizationEvent::MemberGroupsChanged(_)
            | OrganizationEvent::MemberRemoved { .. } => {}
            OrganizationEvent::TwoFactorPolicyChanged(policy) => {
                let json = serde_json::to_string(&policy).ok();
                set(conn, &id, "two_factor_policy", json, &at).await?;
            }
        }
        Ok(())
    }
}

async fn set(
    conn: &mut AnyConnection,
    id: &str,
    column: &'static str,
    value: Option<String>,
    at: &str,
) -> Result<(), ProjectionError> {
    sqlx::query(&format!(
        "UPDATE organizations SET {column} = $2, updated_at = $3 WHERE organization_id = $1"
    ))
    .bind(id)
    .bind(value)
    .bind(at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

const SELECT: &str =
    "SELECT organization_id, owner_user_id, company_name, billing_currency, address, contact, \
     security_passphrase_set, port_out_pin_set, two_factor_policy, created_at, updated_at FROM organizations";

pub async fn get(
    pool: &AnyPool,
    organization_id: &str,
) -> Result<Option<OrganizationRow>, sqlx::Error> {
    sqlx::query_as::<_, OrganizationRow>(&format!("{SELECT} WHERE organization_id = $1"))
        .bind(organization_id)
        .fetch_optional(pool)
        .await
}

pub async fn all(pool: &AnyPool) -> Result<Vec<OrganizationRow>, sqlx::Error> {
    sqlx::query_as::<_, OrganizationRow>(&format!("{SELECT} ORDER BY organization_id"))
        .fetch_all(pool)
        .await
}
