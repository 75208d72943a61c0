//! The organization's people over HTTP: the permission catalogue, permission groups,
//! invitations (InviteSubuser, resend, revoke, accept) and members — the member endpoints
//! are wire-compatible with Telnyx's `/v2/organizations/users`. Who may call each route is
//! decided in `authz`; everything here is scoped to the caller's organization, so another
//! tenant's ids are simply not found.

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::ToSchema;
use uuid::Uuid;
use warden_domain::chain::format_time;
use warden_domain::permissions::{Permission, PermissionSet};
use warden_domain::two_factor::CONSECUTIVE_FAILURE_LIMIT;
use warden_domain::values::{EmailAddress, Text, ValidationError};
use warden_projections::members as model;
use warden_projections::users::{self, UserRow};

use super::error::{ApiError, ApiResult};
use super::extract::{all_valid, Json, Principal, RequestMeta};
use super::paging::Page;
use crate::app::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v2/permissions", get(permissions))
        .route(
            "/v2/organization/permission_groups",
            get(list_groups).post(create_group),
        )
        .route(
            "/v2/organization/permission_groups/{id}",
            get(get_group).patch(update_group).delete(delete_group),
        )
        .route(
            "/v2/organization/invitations",
            get(list_invitations).post(invite),
        )
        .route(
            "/v2/organization/invitations/{id}",
            get(get_invitation).delete(revoke_invitation),
        )
        .route(
            "/v2/organization/invitations/{id}/actions/resend",
            post(resend_invitation),
        )
        .route("/v2/invitations/actions/accept", post(accept_invitation))
        .route("/v2/organizations/users", get(list_members))
        .route(
            "/v2/organizations/users/users_groups_report",
            get(groups_report),
        )
        .route("/v2/organizations/users/{id}", get(get_member))
        .route(
            "/v2/organizations/users/{id}/permission_groups",
            put(set_member_groups),
        )
        .route(
            "/v2/organizations/users/{id}/actions/{action}",
            post(member_action),
        )
}

/// A path id that is not a UUID names nothing.
fn path_id(raw: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(raw).map_err(|_| ApiError::not_found())
}

// ---- permission catalogue --------------------------------------------------------------

/// The permissions a permission group can grant.
#[utoipa::path(get, path = "/v2/permissions", tag = "Permission groups",
    responses((status = 200, description = "The catalogue")), security(("bearer" = [])))]
pub async fn permissions() -> axum::Json<Value> {
    let data: Vec<Value> = Permission::ALL
        .iter()
        .map(|p| {
            json!({
                "record_type": "permission",
                "id": p.as_str(),
                "description": p.description(),
            })
        })
        .collect();
    let total = data.len();
    axum::Json(json!({
        "data": data,
        "meta": { "page_number": 1, "page_size": total, "total_pages": 1, "total_results": total },
    }))
}

// ---- permission groups -----------------------------------------------------------------

fn group_view(row: &model::GroupRow, member_count: usize) -> Value {
    json!({
        "record_type": "permission_group",
        "id": row.group_id,
        "name": row.name,
        "permissions": serde_json::from_str::<Value>(&row.permissions).unwrap_or_else(|_| json!([])),
        "member_count": member_count,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    })
}

async fn group_json(state: &AppState, organization_id: Uuid, group_id: Uuid) -> ApiResult<Value> {
    let org = organization_id.to_string();
    let row = model::group(&state.db.pool, &org, &group_id.to_string())
        .await?
        .ok_or_else(ApiError::not_found)?;
    let members = model::memberships(&state.db.pool, &org)
        .await?
        .into_iter()
        .filter(|m| m.group_id == row.group_id)
        .count();
    Ok(group_view(&row, members))
}

#[utoipa::path(get, path = "/v2/organization/permission_groups", tag = "Permission groups",
    responses((status = 200, description = "The organization's groups")), security(("bearer" = [])))]
pub async fn list_groups(
    State(state): State<AppState>,
    principal: Principal,
    Query(query): Query<BTreeMap<String, String>>,
) -> ApiResult<axum::Json<Value>> {
    let page = Page::from_query(&query)?;
    let org = principal.organization_id.to_string();
    let memberships = model::memberships(&state.db.pool, &org).await?;
    let rows: Vec<Value> = model::groups(&state.db.pool, &org)
        .await?
        .iter()
        .map(|g| {
            let count = memberships
                .iter()
                .filter(|m| m.group_id == g.group_id)
                .count();
            group_view(g, count)
        })
        .collect();
    Ok(axum::Json(page.list(rows)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupRequest {
    pub name: Option<String>,
    /// Permission names from `GET /v2/permissions`.
    pub permissions: Option<Vec<String>>,
}

fn parse_permissions(raw: &[String]) -> ApiResult<PermissionSet> {
    let mut errors = Vec::new();
    let mut set = Vec::new();
    for (i, name) in raw.iter().enumerate() {
        match Permission::parse(name) {
            Some(p) => set.push(p),
            None => errors.push(ValidationError::new(
                format!("/permissions/{i}"),
                "unknown_permission",
                format!("`{name}` is not a permission; see GET /v2/permissions"),
            )),
        }
    }
    if errors.is_empty() {
        Ok(set.into_iter().collect())
    } else {
        Err(ApiError::validation(errors))
    }
}

#[utoipa::path(post, path = "/v2/organization/permission_groups", tag = "Permission groups",
    request_body = GroupRequest,
    responses((status = 201, description = "The new group"), (status = 403, description = "Grants a permission the caller lacks"),
              (status = 409, description = "Name in use")), security(("bearer" = [])))]
pub async fn create_group(
    State(state): State<AppState>,
    principal: Principal,
    meta: RequestMeta,
    Json(body): Json<GroupRequest>,
) -> ApiResult<(StatusCode, axum::Json<Value>)> {
    let name = body
        .name
        .ok_or_else(|| ValidationError::new("/name", "required", "is required"))?;
    let permissions = parse_permissions(&body.permissions.unwrap_or_default())?;
    let (group_id, position) = state
        .members
        .create_group(principal.caller(), &name, permissions, &meta.by(&principal))
        .await?;
    state.caught_up(position).await?;
    let data = group_json(&state, principal.organization_id, group_id).await?;
    Ok((StatusCode::CREATED, axum::Json(json!({ "data": data }))))
}

#[utoipa::path(get, path = "/v2/organization/permission_groups/{id}", tag = "Permission groups",
    responses((status = 200, description = "The group"), (status = 404, description = "No such group here")),
    security(("bearer" = [])))]
pub async fn get_group(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    let data = group_json(&state, principal.organization_id, path_id(&id)?).await?;
    Ok(axum::Json(json!({ "data": data })))
}

#[utoipa::path(patch, path = "/v2/organization/permission_groups/{id}", tag = "Permission groups",
    request_body = GroupRequest,
    responses((status = 200, description = "The group"), (status = 404, description = "No such group here")),
    security(("bearer" = [])))]
pub async fn update_group(
    State(state): State<AppState>,
    principal: Principal,
    meta: RequestMeta,
    Path(id): Path<String>,
    Json(body): Json<GroupRequest>,
) -> ApiResult<axum::Json<Value>> {
    let group_id = path_id(&id)?;
    let permissions = body
        .permissions
        .as_deref()
        .map(parse_permissions)
        .transpose()?;
    let position = state
        .members
        .update_group(
            principal.caller(),
            group_id,
            body.name.as_deref(),
            permissions,
            &meta.by(&principal),
        )
        .await
        .map_err(not_found_for_unknown_group)?;
    state.caught_up(position).await?;
    let data = group_json(&state, principal.organization_id, group_id).await?;
    Ok(axum::Json(json!({ "data": data })))
}

#[utoipa::path(delete, path = "/v2/organization/permission_groups/{id}", tag = "Permission groups",
    responses((status = 200, description = "The deleted group"), (status = 404, description = "No such group here")),
    security(("bearer" = [])))]
pub async fn delete_group(
    State(state): State<AppState>,
    principal: Principal,
    meta: RequestMeta,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    let group_id = path_id(&id)?;
    let before = group_json(&state, principal.organization_id, group_id).await?;
    let position = state
        .members
        .delete_group(principal.caller(), group_id, &meta.by(&principal))
        .await
        .map_err(not_found_for_unknown_group)?;
    state.caught_up(position).await?;
    Ok(axum::Json(json!({ "data": before })))
}

/// The group in the path (not a body field) is unknown: 404.
fn not_found_for_unknown_group(
    e: warden_commands::CommandError<warden_commands::members::MembersError>,
) -> ApiError {
    use warden_commands::members::MembersError;
    use warden_domain::members::TeamError;
    use warden_domain::organization::OrganizationError;
    match e {
        warden_commands::CommandError::Domain(MembersError::Organization(
            OrganizationError::Team(TeamError::GroupNotFound { .. }),
        )) => ApiError::not_found(),
        other => other.into(),
    }
}

// ---- invitations -------------------------------------------------------------------------

fn invitation_view(row: &model::InvitationRow, now: &str) -> Value {
    let status = if row.status == "pending" && row.expires_at.as_str() <= now {
        "expired"
    } else {
        row.status.as_str()
    };
    json!({
        "record_type": "invitation",
        "id": row.invitation_id,
        "email": row.email,
        "status": status,
        "permission_group_ids": serde_json::from_str::<Value>(&row.permission_group_ids).unwrap_or_else(|_| json!([])),
        "expires_at": row.expires_at,
        "user_id": row.user_id,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    })
}

async fn invitation_json(state: &AppState, organization_id: Uuid, id: Uuid) -> ApiResult<Value> {
    let row = model::invitation(
        &state.db.pool,
        &organization_id.to_string(),
        &id.to_string(),
    )
    .await?
    .ok_or_else(ApiError::not_found)?;
    Ok(invitation_view(&row, &format_time(state.now())))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InviteRequest {
    pub email: String,
    #[serde(default)]
    pub permission_group_ids: Vec<String>,
}

fn parse_group_ids(raw: &[String]) -> ApiResult<BTreeSet<Uuid>> {
    let mut errors = Vec::new();
    let mut ids = BTreeSet::new();
    for (i, id) in raw.iter().enumerate() {
        match Uuid::parse_str(id) {
            Ok(id) => {
                ids.insert(id);
            }
            Err(_) => errors.push(ValidationError::new(
                format!("/permission_group_ids/{i}"),
                "invalid_value",
                "must be a permission group id (UUID)",
            )),
        }
    }
    if errors.is_empty() {
        Ok(ids)
    } else {
        Err(ApiError::validation(errors))
    }
}

/// InviteSubuser: the invitee gets an email with a single-use token (valid 7 days).
#[utoipa::path(post, path = "/v2/organization/invitations", tag = "Members", request_body = InviteRequest,
    responses((status = 201, description = "The pending invitation"),
              (status = 409, description = "The address has an account or a pending invitation")),
    security(("bearer" = [])))]
pub async fn invite(
    State(state): State<AppState>,
    principal: Principal,
    meta: RequestMeta,
    Json(body): Json<InviteRequest>,
) -> ApiResult<(StatusCode, axum::Json<Value>)> {
    let email = EmailAddress::parse("/email", &body.email);
    let groups = parse_group_ids(&body.permission_group_ids);
    all_valid([email.as_ref().err().cloned()])?;
    let (Ok(email), groups) = (email, groups?) else {
        return Err(ApiError::internal(&"validation mismatch"));
    };
    let issued = state
        .members
        .invite(principal.caller(), &email, groups, &meta.by(&principal))
        .await?;
    state.caught_up(issued.position).await?;
    let data = invitation_json(&state, principal.organization_id, issued.invitation_id).await?;
    Ok((StatusCode::CREATED, axum::Json(json!({ "data": data }))))
}

#[utoipa::path(get, path = "/v2/organization/invitations", tag = "Members",
    responses((status = 200, description = "Invitations, newest first")), security(("bearer" = [])))]
pub async fn list_invitations(
    State(state): State<AppState>,
    principal: Principal,
    Query(query): Query<BTreeMap<String, String>>,
) -> ApiResult<axum::Json<Value>> {
    let page = Page::from_query(&query)?;
    let now = format_time(state.now());
    let rows: Vec<Value> =
        model::invitations(&state.db.pool, &principal.organization_id.to_string())
            .await?
            .iter()
            .map(|r| invitation_view(r, &now))
            .collect();
    Ok(axum::Json(page.list(rows)))
}

#[utoipa::path(get, path = "/v2/organization/invitations/{id}", tag = "Members",
    responses((status = 200, description = "The invitation")), security(("bearer" = [])))]
pub async fn get_invitation(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    let data = invitation_json(&state, principal.organization_id, path_id(&id)?).await?;
    Ok(axum::Json(json!({ "data": data })))
}

#[utoipa::path(delete, path = "/v2/organization/invitations/{id}", tag = "Members",
    responses((status = 200, description = "The revoked invitation"), (status = 404, description = "No open invitation with this id")),
    security(("bearer" = [])))]
pub async fn revoke_invitation(
    State(state): State<AppState>,
    principal: Principal,
    meta: RequestMeta,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    let id = path_id(&id)?;
    let position = state
        .members
        .revoke(principal.caller(), id, &meta.by(&principal))
        .await?;
    state.caught_up(position).await?;
    let data = invitation_json(&state, principal.organization_id, id).await?;
    Ok(axum::Json(json!({ "data": data })))
}

/// A fresh token (and 7 more days); the old token stops working.
#[utoipa::path(post, path = "/v2/organization/invitations/{id}/actions/resend", tag = "Members",
    responses((status = 200, description = "The invitation")), security(("bearer" = [])))]
pub async fn resend_invitation(
    State(state): State<AppState>,
    principal: Principal,
    meta: RequestMeta,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    let id = path_id(&id)?;
    let issued = state
        .members
        .resend(principal.caller(), id, &meta.by(&principal))
        .await?;
    state.caught_up(issued.position).await?;
    let data = invitation_json(&state, principal.organization_id, id).await?;
    Ok(axum::Json(json!({ "data": data })))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcceptRequest {
    pub token: String,
    pub password: String,
    pub first_name: String,
    pub last_name: String,
}

impl std::fmt::Debug for AcceptRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcceptRequest").finish_non_exhaustive()
    }
}

/// Accept an invitation with the emailed token: creates the sub-user with their own
/// password and signs them in.
#[utoipa::path(post, path = "/v2/invitations/actions/accept", tag = "Members", request_body = AcceptRequest,
    responses((status = 201, description = "The new sub-user, with a session"),
              (status = 404, description = "invitation_invalid: unknown, replaced, used or expired token")))]
pub async fn accept_invitation(
    State(state): State<AppState>,
    meta: RequestMeta,
    Json(body): Json<AcceptRequest>,
) -> ApiResult<(StatusCode, axum::Json<Value>)> {
    let first_name = Text::parse("/first_name", &body.first_name, 100);
    let last_name = Text::parse("/last_name", &body.last_name, 100);
    all_valid([
        first_name.as_ref().err().cloned(),
        last_name.as_ref().err().cloned(),
    ])?;
    let (Ok(first_name), Ok(last_name)) = (first_name, last_name) else {
        return Err(ApiError::internal(&"validation mismatch"));
    };
    let joined = state
        .members
        .accept(
            body.token.trim(),
            &body.password,
            &first_name,
            &last_name,
            &meta.anonymous(),
        )
        .await?;
    state.caught_up(joined.session.position).await?;
    let mut data = super::views::user(&state, joined.user_id).await?;
    if let Some(obj) = data.as_object_mut() {
        obj.insert(
            "session".into(),
            json!({
                "record_type": "session",
                "token": joined.session.token,
                "expires_at": format_time(joined.session.expires_at),
                "user_id": joined.user_id,
                "two_factor_setup_required": joined.session.two_factor_setup_required,
            }),
        );
    }
    Ok((StatusCode::CREATED, axum::Json(json!({ "data": data }))))
}

// ---- members -----------------------------------------------------------------------------

/// Telnyx's `user_status`: enabled, disabled, or blocked (second-factor sign-in blocked
/// after too many consecutive failures).
fn user_status(row: &UserRow) -> &str {
    if row.status == "enabled" && row.two_factor_failures >= i64::from(CONSECUTIVE_FAILURE_LIMIT) {
        "blocked"
    } else {
        row.status.as_str()
    }
}

/// A member as Telnyx's `OrganizationUser`, with Warden's extra fields.
fn member_view(row: &UserRow, groups: Option<&[&model::MembershipRow]>) -> Value {
    let mut v = json!({
        "record_type": row.role,
        "id": row.user_id,
        "email": row.email,
        "first_name": row.first_name,
        "last_name": row.last_name,
        "user_status": user_status(row),
        "created_at": row.created_at,
        "last_sign_in_at": row.last_sign_in_at,
        "organization_user_bypasses_sso": false,
        "two_factor": {
            "enabled": row.two_factor_enabled != 0,
            "method": row.two_factor_method,
        },
    });
    if let (Some(groups), Some(obj)) = (groups, v.as_object_mut()) {
        obj.insert(
            "groups".into(),
            groups
                .iter()
                .map(|g| json!({ "id": g.group_id, "name": g.name }))
                .collect(),
        );
    }
    v
}

fn include_groups(query: &BTreeMap<String, String>) -> ApiResult<bool> {
    match query.get("include_groups").map(String::as_str) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => {
            Err(
                ValidationError::new("include_groups", "invalid_value", "must be true or false")
                    .into(),
            )
        }
    }
}

/// A member of the caller's organization (a removed one is gone).
async fn member_row(state: &AppState, principal: &Principal, id: &str) -> ApiResult<UserRow> {
    let id = path_id(id)?;
    users::get(&state.db.pool, &id.to_string())
        .await?
        .filter(|u| {
            u.organization_id == principal.organization_id.to_string() && u.status != "removed"
        })
        .ok_or_else(ApiError::not_found)
}

async fn member_json(
    state: &AppState,
    principal: &Principal,
    row: &UserRow,
    with_groups: bool,
) -> ApiResult<Value> {
    if !with_groups {
        return Ok(member_view(row, None));
    }
    let memberships =
        model::memberships(&state.db.pool, &principal.organization_id.to_string()).await?;
    let mine: Vec<&model::MembershipRow> = memberships
        .iter()
        .filter(|m| m.user_id == row.user_id)
        .collect();
    Ok(member_view(row, Some(&mine)))
}

/// Members (owner and sub-users), Telnyx-compatible: `filter[email]` (partial,
/// case-insensitive), `filter[user_status]`, `include_groups`, `page[number]`, `page[size]`.
#[utoipa::path(get, path = "/v2/organizations/users", tag = "Members",
    responses((status = 200, description = "Members")), security(("bearer" = [])))]
pub async fn list_members(
    State(state): State<AppState>,
    principal: Principal,
    Query(query): Query<BTreeMap<String, String>>,
) -> ApiResult<axum::Json<Value>> {
    let page = Page::from_query(&query)?;
    let with_groups = include_groups(&query)?;
    let email = query.get("filter[email]").map(|e| e.trim().to_lowercase());
    let status = match query.get("filter[user_status]").map(String::as_str) {
        None => None,
        Some(s @ ("enabled" | "disabled" | "blocked")) => Some(s.to_owned()),
        Some(_) => {
            return Err(ValidationError::new(
                "filter[user_status]",
                "invalid_value",
                "must be enabled, disabled or blocked",
            )
            .into())
        }
    };
    let org = principal.organization_id.to_string();
    let memberships = if with_groups {
        model::memberships(&state.db.pool, &org).await?
    } else {
        Vec::new()
    };
    let rows: Vec<Value> = users::members(&state.db.pool, &org)
        .await?
        .iter()
        .filter(|u| {
            email.as_deref().is_none_or(|needle| {
                u.email
                    .as_deref()
                    .is_some_and(|e| e.to_lowercase().contains(needle))
            })
        })
        .filter(|u| status.as_deref().is_none_or(|s| user_status(u) == s))
        .map(|u| {
            if with_groups {
                let mine: Vec<&model::MembershipRow> = memberships
                    .iter()
                    .filter(|m| m.user_id == u.user_id)
                    .collect();
                member_view(u, Some(&mine))
            } else {
                member_view(u, None)
            }
        })
        .collect();
    Ok(axum::Json(page.list(rows)))
}

/// Every member with their groups (Telnyx's `users_groups_report`).
#[utoipa::path(get, path = "/v2/organizations/users/users_groups_report", tag = "Members",
    responses((status = 200, description = "Members with groups")), security(("bearer" = [])))]
pub async fn groups_report(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<axum::Json<Value>> {
    let org = principal.organization_id.to_string();
    let memberships = model::memberships(&state.db.pool, &org).await?;
    let data: Vec<Value> = users::members(&state.db.pool, &org)
        .await?
        .iter()
        .map(|u| {
            let mine: Vec<&model::MembershipRow> = memberships
                .iter()
                .filter(|m| m.user_id == u.user_id)
                .collect();
            member_view(u, Some(&mine))
        })
        .collect();
    Ok(axum::Json(json!({ "data": data })))
}

#[utoipa::path(get, path = "/v2/organizations/users/{id}", tag = "Members",
    responses((status = 200, description = "The member"), (status = 404, description = "No such member here")),
    security(("bearer" = [])))]
pub async fn get_member(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
) -> ApiResult<axum::Json<Value>> {
    let with_groups = include_groups(&query)?;
    let row = member_row(&state, &principal, &id).await?;
    let data = member_json(&state, &principal, &row, with_groups).await?;
    Ok(axum::Json(json!({ "data": data })))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberGroupsRequest {
    pub permission_group_ids: Vec<String>,
}

/// Replace a sub-user's groups; the change applies to their next request.
#[utoipa::path(put, path = "/v2/organizations/users/{id}/permission_groups", tag = "Members",
    request_body = MemberGroupsRequest,
    responses((status = 200, description = "The member with groups"),
              (status = 403, description = "A group grants a permission the caller lacks, or the target is the owner")),
    security(("bearer" = [])))]
pub async fn set_member_groups(
    State(state): State<AppState>,
    principal: Principal,
    meta: RequestMeta,
    Path(id): Path<String>,
    Json(body): Json<MemberGroupsRequest>,
) -> ApiResult<axum::Json<Value>> {
    let row = member_row(&state, &principal, &id).await?;
    let groups = parse_group_ids(&body.permission_group_ids)?;
    let position = state
        .members
        .set_member_groups(
            principal.caller(),
            path_id(&row.user_id)?,
            groups,
            &meta.by(&principal),
        )
        .await?;
    state.caught_up(position).await?;
    let row = member_row(&state, &principal, &id).await?;
    let data = member_json(&state, &principal, &row, true).await?;
    Ok(axum::Json(json!({ "data": data })))
}

/// `remove` (sessions and API keys end at once), `disable`, `enable`, `reset_two_factor`
/// (the member must enroll again; they and the owner are emailed), `unblock_two_factor`,
/// `forget` (removed if not yet, then crypto-shredded: their data key is destroyed, so
/// their email, names and phone numbers are unreadable everywhere; the history keeps that
/// things happened; a removed member can be forgotten too).
#[utoipa::path(post, path = "/v2/organizations/users/{id}/actions/{action}", tag = "Members",
    params(("action" = String, Path, description = "remove | disable | enable | reset_two_factor | unblock_two_factor | forget")),
    responses((status = 200, description = "The member"),
              (status = 403, description = "The target is the owner"),
              (status = 404, description = "No such member or action")),
    security(("bearer" = [])))]
pub async fn member_action(
    State(state): State<AppState>,
    principal: Principal,
    meta: RequestMeta,
    Path((id, action)): Path<(String, String)>,
) -> ApiResult<axum::Json<Value>> {
    let row = if action == "forget" {
        // A member removed earlier can still be forgotten.
        let id = path_id(&id)?;
        users::get(&state.db.pool, &id.to_string())
            .await?
            .filter(|u| u.organization_id == principal.organization_id.to_string())
            .ok_or_else(ApiError::not_found)?
    } else {
        member_row(&state, &principal, &id).await?
    };
    let user_id = path_id(&row.user_id)?;
    let caller = principal.caller();
    let meta = meta.by(&principal);
    let members = &state.members;
    let position = match action.as_str() {
        "remove" => members.remove_member(caller, user_id, &meta).await?,
        "forget" => {
            // What the read model shows of them now, to find saved answers holding it.
            let shown: Vec<String> = [
                &row.email,
                &row.first_name,
                &row.last_name,
                &row.phone_number,
            ]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
            let position = members.forget_member(caller, user_id, &meta).await?;
            super::idempotency::forget_saved_answers(&state, &shown).await?;
            position
        }
        "disable" => members.disable_member(caller, user_id, &meta).await?,
        "enable" => members.enable_member(caller, user_id, &meta).await?,
        "reset_two_factor" => members.reset_two_factor(caller, user_id, &meta).await?,
        "unblock_two_factor" => members.unblock_two_factor(caller, user_id, &meta).await?,
        _ => return Err(ApiError::not_found()),
    };
    state.caught_up(position).await?;
    let row = users::get(&state.db.pool, &row.user_id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(axum::Json(json!({ "data": member_view(&row, None) })))
}
