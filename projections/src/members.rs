//! `members`: permission groups, who is in which group, invitations and API keys — the
//! models behind the member, group, invitation and API key endpoints, and behind every
//! request's permission check (`group_permissions`) and API key authentication.

use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use sqlx::{AnyConnection, AnyPool, FromRow};
use warden_commands::Secrets;
use warden_domain::chain::format_time;
use warden_domain::organization::OrganizationEvent;
use warden_domain::user::UserEvent;
use warden_domain::RecordedEvent;

use crate::{open_text, EventProjector, ProjectionError};

pub struct MembersProjector {
    secrets: Arc<dyn Secrets>,
}

impl MembersProjector {
    pub fn new(secrets: Arc<dyn Secrets>) -> Self {
        Self { secrets }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, FromRow, Serialize)]
pub struct GroupRow {
    pub group_id: String,
    pub organization_id: String,
    pub name: String,
    /// JSON array of permission names.
    pub permissions: String,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, FromRow, Serialize)]
pub struct InvitationRow {
    pub invitation_id: String,
    pub organization_id: String,
    pub email: Option<String>,
    /// JSON array of group ids.
    pub permission_group_ids: String,
    pub status: String,
    pub expires_at: String,
    pub created_at: String,
    pub updated_at: String,
    pub user_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, FromRow, Serialize)]
pub struct ApiKeyRow {
    pub key_id: String,
    pub user_id: String,
    pub name: String,
    pub prefix: String,
    pub key_digest: String,
    pub created_at: String,
    pub updated_at: String,
    pub revoked_at: Option<String>,
}

/// A group a member belongs to.
#[derive(Debug, Clone, PartialEq, Eq, FromRow, Serialize)]
pub struct MembershipRow {
    pub user_id: String,
    pub group_id: String,
    pub name: String,
}

fn json_ids<'a>(ids: impl IntoIterator<Item = &'a uuid::Uuid>) -> String {
    serde_json::to_string(&ids.into_iter().map(|u| u.to_string()).collect::<Vec<_>>())
        .unwrap_or_else(|_| "[]".into())
}

#[async_trait]
impl EventProjector for MembersProjector {
    fn name(&self) -> &'static str {
        "members"
    }

    fn tables(&self) -> &'static [&'static str] {
        &[
            "permission_groups",
            "member_groups",
            "invitations",
            "api_keys",
        ]
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        let at = format_time(event.recorded_at);
        match event.stream_type.as_str() {
            "organization" => {
                let org = event.stream_id.trim_start_matches("organization-");
                let e: OrganizationEvent = event
                    .decode()
                    .map_err(|e| ProjectionError::decode(event, e))?;
                self.apply_org(conn, org, &at, e).await
            }
            "user" => {
                let user = event.stream_id.trim_start_matches("user-");
                let e: UserEvent = event
                    .decode()
                    .map_err(|e| ProjectionError::decode(event, e))?;
                apply_user(conn, user, &at, e).await
            }
            _ => Ok(()),
        }
    }
}

impl MembersProjector {
    async fn apply_org(
        &self,
        conn: &mut AnyConnection,
        org: &str,
        at: &str,
        e: OrganizationEvent,
    ) -> Result<(), ProjectionError> {
        match e {
            OrganizationEvent::PermissionGroupCreated(g) => {
                sqlx::query(
                    "INSERT INTO permission_groups (group_id, organization_id, name, permissions, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $5)",
                )
                .bind(g.group_id.to_string())
                .bind(org)
                .bind(g.name)
                .bind(serde_json::to_string(&g.permissions).unwrap_or_else(|_| "[]".into()))
                .bind(at)
                .execute(&mut *conn)
                .await?;
            }
            OrganizationEvent::PermissionGroupUpdated(g) => {
                if let Some(name) = g.name {
                    sqlx::query("UPDATE permission_groups SET name = $2, updated_at = $3 WHERE group_id = $1")
                        .bind(g.group_id.to_string())
                        .bind(name)
                        .bind(at)
                        .execute(&mut *conn)
                        .await?;
                }
                if let Some(permissions) = g.permissions {
                    sqlx::query("UPDATE permission_groups SET permissions = $2, updated_at = $3 WHERE group_id = $1")
                        .bind(g.group_id.to_string())
                        .bind(serde_json::to_string(&permissions).unwrap_or_else(|_| "[]".into()))
                        .bind(at)
                        .execute(&mut *conn)
                        .await?;
                }
            }
            OrganizationEvent::PermissionGroupDeleted { group_id } => {
                let id = group_id.to_string();
                sqlx::query("DELETE FROM permission_groups WHERE group_id = $1")
                    .bind(&id)
                    .execute(&mut *conn)
                    .await?;
                sqlx::query("DELETE FROM member_groups WHERE group_id = $1")
                    .bind(&id)
                    .execute(&mut *conn)
                    .await?;
            }
            OrganizationEvent::SubuserInvited(i) => {
                sqlx::query(
                    "INSERT INTO invitations (invitation_id, organization_id, email, permission_group_ids, status, \
                     expires_at, created_at, updated_at, user_id) VALUES ($1, $2, $3, $4, 'pending', $5, $6, $6, NULL)",
                )
                .bind(i.invitation_id.to_string())
                .bind(org)
                .bind(open_text(self.secrets.as_ref(), &i.email).await?)
                .bind(json_ids(&i.permission_group_ids))
                .bind(format_time(i.expires_at))
                .bind(at)
                .execute(&mut *conn)
                .await?;
                // A new invitation replaces an expired one for the same address.
                sqlx::query(
                    "UPDATE invitations SET status = 'replaced', updated_at = $3 \
                     WHERE organization_id = $1 AND status = 'pending' AND invitation_id <> $2 \
                     AND email = (SELECT email FROM invitations WHERE invitation_id = $2)",
                )
                .bind(org)
                .bind(i.invitation_id.to_string())
                .bind(at)
                .execute(&mut *conn)
                .await?;
            }
            OrganizationEvent::InvitationResent(i) => {
                sqlx::query(
                    "UPDATE invitations SET expires_at = $2, updated_at = $3 WHERE invitation_id = $1",
                )
                .bind(i.invitation_id.to_string())
                .bind(format_time(i.expires_at))
                .bind(at)
                .execute(&mut *conn)
                .await?;
            }
            OrganizationEvent::InvitationRevoked { invitation_id } => {
                sqlx::query(
                    "UPDATE invitations SET status = 'revoked', updated_at = $2 WHERE invitation_id = $1",
                )
                .bind(invitation_id.to_string())
                .bind(at)
                .execute(&mut *conn)
                .await?;
            }
            OrganizationEvent::InvitationAccepted(a) => {
                sqlx::query(
                    "UPDATE invitations SET status = 'accepted', user_id = $2, updated_at = $3 WHERE invitation_id = $1",
                )
                .bind(a.invitation_id.to_string())
                .bind(a.user_id.to_string())
                .bind(at)
                .execute(&mut *conn)
                .await?;
                set_groups(conn, &a.user_id.to_string(), &a.permission_group_ids).await?;
            }
            OrganizationEvent::MemberGroupsChanged(m) => {
                set_groups(conn, &m.user_id.to_string(), &m.permission_group_ids).await?;
            }
            OrganizationEvent::MemberRemoved { user_id } => {
                sqlx::query("DELETE FROM member_groups WHERE user_id = $1")
                    .bind(user_id.to_string())
                    .execute(&mut *conn)
                    .await?;
            }
            OrganizationEvent::Created { .. }
            | OrganizationEvent::Updated { .. }
            | OrganizationEvent::SecurityPassphraseSet { .. }
            | OrganizationEvent::PortOutPinSet { .. }
            | OrganizationEvent::SecretChecked { .. }
            | OrganizationEvent::TwoFactorPolicyChanged(_) => {}
        }
        Ok(())
    }
}

async fn set_groups(
    conn: &mut AnyConnection,
    user_id: &str,
    groups: &std::collections::BTreeSet<uuid::Uuid>,
) -> Result<(), ProjectionError> {
    sqlx::query("DELETE FROM member_groups WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    for group in groups {
        sqlx::query("INSERT INTO member_groups (user_id, group_id) VALUES ($1, $2)")
            .bind(user_id)
            .bind(group.to_string())
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

async fn apply_user(
    conn: &mut AnyConnection,
    user: &str,
    at: &str,
    e: UserEvent,
) -> Result<(), ProjectionError> {
    match e {
        UserEvent::ApiKeyCreated {
            key_id,
            name,
            prefix,
            key_digest,
        } => {
            sqlx::query(
                "INSERT INTO api_keys (key_id, user_id, name, prefix, key_digest, created_at, updated_at, revoked_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $6, NULL)",
            )
            .bind(key_id.to_string())
            .bind(user)
            .bind(name)
            .bind(prefix)
            .bind(key_digest.0)
            .bind(at)
            .execute(&mut *conn)
            .await?;
        }
        UserEvent::ApiKeyRotated {
            key_id,
            prefix,
            key_digest,
        } => {
            sqlx::query(
                "UPDATE api_keys SET prefix = $2, key_digest = $3, updated_at = $4 WHERE key_id = $1",
            )
            .bind(key_id.to_string())
            .bind(prefix)
            .bind(key_digest.0)
            .bind(at)
            .execute(&mut *conn)
            .await?;
        }
        UserEvent::ApiKeyRevoked { key_id } => {
            sqlx::query("UPDATE api_keys SET revoked_at = $2, updated_at = $2 WHERE key_id = $1")
                .bind(key_id.to_string())
                .bind(at)
                .execute(&mut *conn)
                .await?;
        }
        UserEvent::Removed {} | UserEvent::Forgotten {} => {
            sqlx::query(
                "UPDATE api_keys SET revoked_at = $2, updated_at = $2 WHERE user_id = $1 AND revoked_at IS NULL",
            )
            .bind(user)
            .bind(at)
            .execute(&mut *conn)
            .await?;
            if matches!(e, UserEvent::Forgotten {}) {
                // The invitation they accepted was sealed under its own (now destroyed) key.
                sqlx::query("UPDATE invitations SET email = NULL WHERE user_id = $1")
                    .bind(user)
                    .execute(&mut *conn)
                    .await?;
            }
        }
        _ => {}
    }
    Ok(())
}

// ---- queries ----------------------------------------------------------------------------

const GROUP_SELECT: &str =
    "SELECT group_id, organization_id, name, permissions, created_at, updated_at FROM permission_groups";

/// The permission lists (JSON arrays) of every group a user is in.
pub async fn group_permissions(pool: &AnyPool, user_id: &str) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT g.permissions FROM member_groups m JOIN permission_groups g ON g.group_id = m.group_id \
         WHERE m.user_id = $1",
    )
    .bind(user_id)
    .fetch_all(pool)
    .await
}

pub async fn groups(pool: &AnyPool, organization_id: &str) -> Result<Vec<GroupRow>, sqlx::Error> {
    sqlx::query_as::<_, GroupRow>(&format!(
        "{GROUP_SELECT} WHERE organization_id = $1 ORDER BY created_at, group_id"
    ))
    .bind(organization_id)
    .fetch_all(pool)
    .await
}

pub async fn group(
    pool: &AnyPool,
    organization_id: &str,
    group_id: &str,
) -> Result<Option<GroupRow>, sqlx::Error> {
    sqlx::query_as::<_, GroupRow>(&format!(
        "{GROUP_SELECT} WHERE organization_id = $1 AND group_id = $2"
    ))
    .bind(organization_id)
    .bind(group_id)
    .fetch_optional(pool)
    .await
}

/// Every membership in an organization, with group names.
pub async fn memberships(
    pool: &AnyPool,
    organization_id: &str,
) -> Result<Vec<MembershipRow>, sqlx::Error> {
    sqlx::query_as::<_, MembershipRow>(
        "SELECT m.user_id, m.group_id, g.name FROM member_groups m \
         JOIN permission_groups g ON g.group_id = m.group_id \
         WHERE g.organization_id = $1 ORDER BY g.name, g.group_id",
    )
    .bind(organization_id)
    .fetch_all(pool)
    .await
}

const INVITATION_SELECT: &str =
    "SELECT invitation_id, organization_id, email, permission_group_ids, status, expires_at, created_at, \
     updated_at, user_id FROM invitations";

pub async fn invitations(
    pool: &AnyPool,
    organization_id: &str,
) -> Result<Vec<InvitationRow>, sqlx::Error> {
    sqlx::query_as::<_, InvitationRow>(&format!(
        "{INVITATION_SELECT} WHERE organization_id = $1 AND status IN ('pending', 'accepted', 'revoked') \
         ORDER BY created_at DESC, invitation_id"
    ))
    .bind(organization_id)
    .fetch_all(pool)
    .await
}

pub async fn invitation(
    pool: &AnyPool,
    organization_id: &str,
    invitation_id: &str,
) -> Result<Option<InvitationRow>, sqlx::Error> {
    sqlx::query_as::<_, InvitationRow>(&format!(
        "{INVITATION_SELECT} WHERE organization_id = $1 AND invitation_id = $2"
    ))
    .bind(organization_id)
    .bind(invitation_id)
    .fetch_optional(pool)
    .await
}

const KEY_SELECT: &str =
    "SELECT key_id, user_id, name, prefix, key_digest, created_at, updated_at, revoked_at FROM api_keys";

/// The live (unrevoked) key with this digest.
pub async fn find_api_key(
    pool: &AnyPool,
    key_digest: &str,
) -> Result<Option<ApiKeyRow>, sqlx::Error> {
    sqlx::query_as::<_, ApiKeyRow>(&format!(
        "{KEY_SELECT} WHERE key_digest = $1 AND revoked_at IS NULL"
    ))
    .bind(key_digest)
    .fetch_optional(pool)
    .await
}

/// A user's live keys, newest first.
pub async fn api_keys(pool: &AnyPool, user_id: &str) -> Result<Vec<ApiKeyRow>, sqlx::Error> {
    sqlx::query_as::<_, ApiKeyRow>(&format!(
        "{KEY_SELECT} WHERE user_id = $1 AND revoked_at IS NULL ORDER BY created_at DESC, key_id"
    ))
    .bind(user_id)
    .fetch_all(pool)
    .await
}

pub async fn api_key(
    pool: &AnyPool,
    user_id: &str,
    key_id: &str,
) -> Result<Option<ApiKeyRow>, sqlx::Error> {
    sqlx::query_as::<_, ApiKeyRow>(&format!(
        "{KEY_SELECT} WHERE user_id = $1 AND key_id = $2 AND revoked_at IS NULL"
    ))
    .bind(user_id)
    .bind(key_id)
    .fetch_optional(pool)
    .await
}

/// When a key was last used (`None` if never).
pub async fn api_key_last_used(
    pool: &AnyPool,
    key_id: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT last_used_at FROM api_key_activity WHERE key_id = $1")
        .bind(key_id)
        .fetch_optional(pool)
        .await
}

/// Records use of a key.
pub async fn touch_api_key(pool: &AnyPool, key_id: &str, now: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO api_key_activity (key_id, last_used_at) VALUES ($1, $2) \
         ON CONFLICT (key_id) DO UPDATE SET last_used_at = excluded.last_used_at",
    )
    .bind(key_id)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(())
}

/// Every row of the members models, for rebuild comparisons.
pub async fn dump(
    pool: &AnyPool,
) -> Result<(Vec<GroupRow>, Vec<InvitationRow>, Vec<ApiKeyRow>), sqlx::Error> {
    let groups = sqlx::query_as::<_, GroupRow>(&format!("{GROUP_SELECT} ORDER BY group_id"))
        .fetch_all(pool)
        .await?;
    let invitations =
        sqlx::query_as::<_, InvitationRow>(&format!("{INVITATION_SELECT} ORDER BY invitation_id"))
            .fetch_all(pool)
            .await?;
    let keys = sqlx::query_as::<_, ApiKeyRow>(&format!("{KEY_SELECT} ORDER BY key_id"))
        .fetch_all(pool)
        .await?;
    Ok((groups, invitations, keys))
}
