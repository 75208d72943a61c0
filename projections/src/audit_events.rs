//! `audit_events`: the Telnyx-compatible audit log behind `GET /v2/audit_events`, derived
//! from the log. Each event of an organization's own, user and Verify-configuration streams
//! is one entry: who made the change (`user_id`, `change_made_by`), what changed
//! (`change_type` = the event type) and how (`changes`, one `{field, from, to}` per payload
//! field, with `from` the field's previous shown value for that resource).
//!
//! The projector never opens a sealed value: sealed values and digests are stored as
//! `"[REDACTED]"`, so this read model holds no secret and no personal data in plaintext,
//! and a rebuild after a person was forgotten yields exactly the same rows. Verification
//! streams (one per code sent to a phone) are traffic, not account changes, and are left
//! out.

use async_trait::async_trait;
use serde_json::{json, Map, Value};
use sqlx::{AnyConnection, AnyPool, Row};
use warden_domain::chain::format_time;
use warden_domain::RecordedEvent;

use crate::{ProjectionError, Projector};

/// How a sealed value or a digest is shown.
pub const REDACTED: &str = "[REDACTED]";

/// Stream types whose events are audit entries.
const AUDITED: &[&str] = &["organization", "user", "verify_profile", "verify_template"];

/// Payload fields that name a sub-resource (the entry's `resource_id` instead of the
/// stream's own id).
const SUB_RESOURCE_FIELDS: &[&str] = &["group_id", "invitation_id", "key_id", "template_id"];

pub struct AuditEventsProjector;

#[async_trait]
impl Projector for AuditEventsProjector {
    fn name(&self) -> &'static str {
        "audit_events"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["audit_events", "audit_field_values", "audit_streams"]
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        let stream_type = event.stream_type.as_str();
        if !AUDITED.contains(&stream_type) {
            return Ok(());
        }
        let stream_uuid = event
            .stream_id
            .split_once('-')
            .map(|(_, id)| id.to_owned())
            .unwrap_or_default();
        let payload = event.payload.as_object().cloned().unwrap_or_default();
        remember_stream(conn, event, stream_type, &stream_uuid, &payload).await?;
        let Some((organization_id, owner)) = stream_owner(conn, &event.stream_id).await? else {
            return Ok(());
        };

        // The sub-resource the change is about, if any (a member removed from the
        // organization is that user).
        let sub = SUB_RESOURCE_FIELDS
            .iter()
            .copied()
            .chain((stream_type == "organization").then_some("user_id"))
            .find_map(|f| {
                payload
                    .get(f)
                    .and_then(Value::as_str)
                    .map(|v| (f, v.to_owned()))
            });
        let resource_id = sub
            .as_ref()
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| stream_uuid.clone());
        let resource_key = format!("{}/{resource_id}", event.stream_id);

        let scope = field_scope(&event.event_type);
        let mut fields = Vec::new();
        for (name, raw) in &payload {
            if sub.as_ref().is_some_and(|(f, _)| f == name) || raw.is_null() {
                continue;
            }
            let field = match scope {
                Some(scope) => format!("{scope}.{name}"),
                None => name.clone(),
            };
            fields.push((field, shown(name, raw.clone())));
        }
        // One read of the previous values and one write of the new ones, whatever the
        // number of fields.
        let previous = get_values(conn, &resource_key, &fields).await?;
        set_values(conn, &resource_key, &fields).await?;
        let changes: Vec<Value> = fields
            .into_iter()
            .zip(previous)
            .map(|((field, to), from)| json!({ "field": field, "from": from, "to": to }))
            .collect();

        let (user_id, made_by) = who(event, stream_type, &stream_uuid, owner.as_deref());
        sqlx::query(
            "INSERT INTO audit_events (event_id, global_position, organization_id, created_at, \
             change_type, resource_id, alternate_resource_id, user_id, change_made_by, changes) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(event.event_id.to_string())
        .bind(event.global_position)
        .bind(organization_id)
        .bind(format_time(event.recorded_at))
        .bind(&event.event_type)
        .bind(resource_id)
        .bind(&event.stream_id)
        .bind(user_id)
        .bind(made_by)
        .bind(Value::Array(changes).to_string())
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

/// The part of a user a family of events describes, prefixed to their fields (dot
/// notation, as Telnyx allows), so that e.g. a pending enrollment's `method` is not taken
/// for the enabled second factor's `two_factor.method`.
fn field_scope(event_type: &str) -> Option<&'static str> {
    Some(match event_type {
        "user.two_factor_enabled"
        | "user.two_factor_method_changed"
        | "user.two_factor_disabled"
        | "user.two_factor_reset"
        | "user.backup_codes_regenerated" => "two_factor",
        "user.two_factor_enrollment_started" | "user.two_factor_enrollment_failed" => {
            "two_factor_enrollment"
        }
        "user.two_factor_challenge_started"
        | "user.two_factor_challenge_failed"
        | "user.two_factor_challenge_passed"
        | "user.recovery_code_sent" => "two_factor_challenge",
        "user.two_factor_code_sent" | "user.email_code_sent" => "code",
        "user.session_started" | "user.session_ended" => "session",
        "user.two_factor_step_up_failed" => "step_up",
        _ => return None,
    })
}

/// Records which organization a stream belongs to (and an organization's owner) from the
/// events that say so.
async fn remember_stream(
    conn: &mut AnyConnection,
    event: &RecordedEvent,
    stream_type: &str,
    stream_uuid: &str,
    payload: &Map<String, Value>,
) -> Result<(), ProjectionError> {
    let owner = payload.get("owner_user_id").and_then(Value::as_str);
    let organization = if stream_type == "organization" {
        Some(stream_uuid)
    } else {
        payload.get("organization_id").and_then(Value::as_str)
    };
    let Some(organization) = organization else {
        return Ok(());
    };
    sqlx::query(
        "INSERT INTO audit_streams (stream_id, organization_id, owner_user_id) VALUES ($1, $2, $3) \
         ON CONFLICT (stream_id) DO UPDATE SET \
         owner_user_id = COALESCE(excluded.owner_user_id, audit_streams.owner_user_id)",
    )
    .bind(&event.stream_id)
    .bind(organization)
    .bind(owner)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The stream's organization and that organization's owner.
async fn stream_owner(
    conn: &mut AnyConnection,
    stream_id: &str,
) -> Result<Option<(String, Option<String>)>, ProjectionError> {
    let row = sqlx::query(
        "SELECT s.organization_id, o.owner_user_id FROM audit_streams s \
         LEFT JOIN audit_streams o ON o.stream_id = 'organization-' || s.organization_id \
         WHERE s.stream_id = $1",
    )
    .bind(stream_id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(match row {
        Some(row) => Some((row.try_get(0)?, row.try_get(1)?)),
        None => None,
    })
}

/// Who made the change: the acting user (an API key acts for its user), and whether they
/// are the organization's owner, one of its members, or Warden itself (`telnyx`, as the
/// Telnyx schema names changes made on the customer's behalf). An anonymous request on a
/// user's own stream (signing up, signing in) is that user.
fn who(
    event: &RecordedEvent,
    stream_type: &str,
    stream_uuid: &str,
    owner: Option<&str>,
) -> (Option<String>, &'static str) {
    let actor = event.metadata.actor.as_deref().unwrap_or("anonymous");
    // `user:<id>`, or `user:<id>/api_key:<key id>` for a user's API key.
    let user = match actor.split_once(':') {
        Some(("user", rest)) => Some(rest.split('/').next().unwrap_or(rest).to_owned()),
        _ if actor == "anonymous" && stream_type == "user" => Some(stream_uuid.to_owned()),
        _ => None,
    };
    let made_by = match (&user, owner) {
        (None, _) => "telnyx",
        (Some(u), Some(o)) if u == o => "account_owner",
        (Some(_), _) => "organization_member",
    };
    (user, made_by)
}

/// The shown values `fields` had before (`null` for a first value), in their order.
async fn get_values(
    conn: &mut AnyConnection,
    resource_key: &str,
    fields: &[(String, Value)],
) -> Result<Vec<Value>, ProjectionError> {
    if fields.is_empty() {
        return Ok(Vec::new());
    }
    let list = (0..fields.len())
        .map(|i| format!("${}", i + 2))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT field, value FROM audit_field_values WHERE resource_key = $1 AND field IN ({list})"
    );
    let mut query = sqlx::query(&sql).bind(resource_key);
    for (field, _) in fields {
        query = query.bind(field);
    }
    let mut previous = vec![Value::Null; fields.len()];
    for row in query.fetch_all(&mut *conn).await? {
        let field: String = row.try_get(0)?;
        let slot = fields
            .iter()
            .position(|(f, _)| *f == field)
            .and_then(|i| previous.get_mut(i));
        if let Some(slot) = slot {
            *slot = serde_json::from_str(&row.try_get::<String, _>(1)?).unwrap_or(Value::Null);
        }
    }
    Ok(previous)
}

/// Records the new shown values of `fields`, in one statement.
async fn set_values(
    conn: &mut AnyConnection,
    resource_key: &str,
    fields: &[(String, Value)],
) -> Result<(), ProjectionError> {
    if fields.is_empty() {
        return Ok(());
    }
    let rows = (0..fields.len())
        .map(|i| format!("($1, ${}, ${})", 2 * i + 2, 2 * i + 3))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "INSERT INTO audit_field_values (resource_key, field, value) VALUES {rows} \
         ON CONFLICT (resource_key, field) DO UPDATE SET value = excluded.value"
    );
    let mut query = sqlx::query(&sql).bind(resource_key);
    for (field, value) in fields {
        query = query.bind(field).bind(value.to_string());
    }
    query.execute(&mut *conn).await?;
    Ok(())
}

/// A payload value as the audit log shows it: sealed values (`{key_id, nonce,
/// ciphertext}`) and fields named `…digest` become `"[REDACTED]"`, recursively.
pub fn shown(field: &str, value: Value) -> Value {
    if field.ends_with("digest") && !value.is_null() {
        return Value::String(REDACTED.into());
    }
    match value {
        Value::Object(map) => {
            let sealed = map.len() == 3
                && map.contains_key("key_id")
                && map.contains_key("nonce")
                && map.contains_key("ciphertext");
            if sealed {
                return Value::String(REDACTED.into());
            }
            Value::Object(
                map.into_iter()
                    .map(|(k, v)| {
                        let v = shown(&k, v);
                        (k, v)
                    })
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.into_iter().map(|v| shown("", v)).collect()),
        other => other,
    }
}

/// One row of `audit_events`, as the API shows it.
fn view(row: &sqlx::any::AnyRow) -> Result<Value, sqlx::Error> {
    let changes: String = row.try_get("changes")?;
    Ok(json!({
        "id": row.try_get::<String, _>("event_id")?,
        "record_type": "audit_event",
        "alternate_resource_id": row.try_get::<Option<String>, _>("alternate_resource_id")?,
        "change_made_by": row.try_get::<String, _>("change_made_by")?,
        "change_type": row.try_get::<String, _>("change_type")?,
        "changes": serde_json::from_str::<Value>(&changes).unwrap_or_else(|_| json!([])),
        "created_at": row.try_get::<String, _>("created_at")?,
        "organization_id": row.try_get::<String, _>("organization_id")?,
        "resource_id": row.try_get::<Option<String>, _>("resource_id")?,
        "user_id": row.try_get::<Option<String>, _>("user_id")?,
    }))
}

/// What `GET /v2/audit_events` asks for.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub organization_id: String,
    /// Strictly after this (a `format_time` text).
    pub created_after: Option<String>,
    /// Strictly before this (a `format_time` text).
    pub created_before: Option<String>,
    pub newest_first: bool,
    pub offset: i64,
    pub limit: i64,
}

/// One page of an organization's audit entries and the total that match.
pub async fn list(pool: &AnyPool, q: &AuditQuery) -> Result<(Vec<Value>, i64), sqlx::Error> {
    let filter = "WHERE organization_id = $1 AND ($2 = '' OR created_at > $2) \
                  AND ($3 = '' OR created_at < $3)";
    let after = q.created_after.clone().unwrap_or_default();
    let before = q.created_before.clone().unwrap_or_default();
    let total: i64 = sqlx::query(&format!("SELECT COUNT(*) FROM audit_events {filter}"))
        .bind(&q.organization_id)
        .bind(&after)
        .bind(&before)
        .fetch_one(pool)
        .await?
        .try_get(0)?;
    let order = if q.newest_first { "DESC" } else { "ASC" };
    let rows = sqlx::query(&format!(
        "SELECT * FROM audit_events {filter} \
         ORDER BY created_at {order}, global_position {order} LIMIT $4 OFFSET $5"
    ))
    .bind(&q.organization_id)
    .bind(&after)
    .bind(&before)
    .bind(q.limit)
    .bind(q.offset)
    .fetch_all(pool)
    .await?;
    let data = rows.iter().map(view).collect::<Result<Vec<_>, _>>()?;
    Ok((data, total))
}

/// Every row in a stable order (for rebuild comparisons).
pub async fn all(pool: &AnyPool) -> Result<Vec<Value>, sqlx::Error> {
    let rows = sqlx::query("SELECT * FROM audit_events ORDER BY global_position")
        .fetch_all(pool)
        .await?;
    rows.iter().map(view).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_and_digests_are_redacted_and_the_rest_kept() {
        let sealed = json!({ "key_id": "user-1", "nonce": "n", "ciphertext": "c" });
        assert_eq!(shown("email", sealed.clone()), json!(REDACTED));
        assert_eq!(shown("token_digest", json!("abc")), json!(REDACTED));
        assert_eq!(
            shown("x", json!({ "phone_number": sealed, "method": "sms" })),
            json!({ "phone_number": REDACTED, "method": "sms" })
        );
        assert_eq!(
            shown("permissions", json!(["users:read"])),
            json!(["users:read"])
        );
    }
}
