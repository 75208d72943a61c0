//! Verify profiles and message templates, wire-compatible with Telnyx
//! (`/v2/verify_profiles`, `/v2/verify_profiles/templates`): successes are 200, lists carry
//! the full `meta`, PATCH merges deeply. Everything belongs to the caller's organization.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::routing::{get, patch};
use axum::Router;
use serde_json::{json, Map, Value};
use uuid::Uuid;
use warden_domain::values::{Text, ValidationError};
use warden_domain::verify::profile::{ChannelPatch, ProfilePatch};
use warden_domain::verify::template::{TemplateText, BUILT_IN};
use warden_domain::verify::values::{
    AppName, CodeLength, Destinations, MicroUsd, TimeoutSecs, WebhookUrl,
};
use warden_projections::verify;

use super::error::{ApiError, ApiResult};
use super::extract::{parse_json, Principal, RequestMeta};
use super::verifications::{no_retry_on_429, page, page_meta, path_id};
use crate::app::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v2/verify_profiles",
            get(list_profiles).post(create_profile),
        )
        .route(
            "/v2/verify_profiles/templates",
            get(list_templates).post(create_template),
        )
        .route("/v2/verify_profiles/templates/{id}", patch(update_template))
        .route(
            "/v2/verify_profiles/{id}",
            get(get_profile)
                .patch(update_profile)
                .delete(delete_profile),
        )
        .layer(axum::middleware::map_response(no_retry_on_429))
}

/// A profile as the API shows it.
pub async fn profile_view(state: &AppState, org: Uuid, id: Uuid) -> ApiResult<Value> {
    let row = verify::profile(&state.db.pool, &org.to_string(), &id.to_string())
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(row_view(row))
}

fn row_view(row: verify::ProfileRow) -> Value {
    let mut v = match serde_json::from_str::<Value>(&row.settings) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    v.insert("id".into(), json!(row.profile_id));
    v.insert("record_type".into(), json!("verification_profile"));
    v.insert("created_at".into(), json!(row.created_at));
    v.insert("updated_at".into(), json!(row.updated_at));
    Value::Object(v)
}

/// Reads the request body as a JSON object, collecting every field error.
struct Fields<'a> {
    obj: &'a Map<String, Value>,
    prefix: String,
    errors: Vec<ValidationError>,
}

impl<'a> Fields<'a> {
    fn new(obj: &'a Map<String, Value>, prefix: &str) -> Self {
        Self {
            obj,
            prefix: prefix.to_owned(),
            errors: Vec::new(),
        }
    }

    fn pointer(&self, key: &str) -> String {
        format!("{}/{key}", self.prefix)
    }

    fn wrong(&mut self, key: &str, what: &str) {
        let p = self.pointer(key);
        self.errors.push(ValidationError::new(
            p,
            "invalid_value",
            format!("must be {what}"),
        ));
    }

    /// A present, non-null value of `key`.
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    fn parse<T>(
        &mut self,
        key: &str,
        f: impl FnOnce(&str, &'a Value) -> Option<Result<T, ValidationError>>,
        what: &str,
    ) -> Option<T> {
        let v = self.get(key)?;
        match f(&self.pointer(key), v) {
            Some(Ok(t)) => Some(t),
            Some(Err(e)) => {
                self.errors.push(e);
                None
            }
            None => {
                self.wrong(key, what);
                None
            }
        }
    }

    fn string<T>(
        &mut self,
        key: &str,
        f: impl FnOnce(&str, &str) -> Result<T, ValidationError>,
    ) -> Option<T> {
        self.parse(key, |p, v| v.as_str().map(|s| f(p, s)), "a string")
    }

    fn int<T>(
        &mut self,
        key: &str,
        f: impl FnOnce(&str, i64) -> Result<T, ValidationError>,
    ) -> Option<T> {
        self.parse(key, |p, v| v.as_i64().map(|n| f(p, n)), "an integer")
    }

    /// `Some(None)` for an explicit null (clears the field).
    fn nullable_url(&mut self, key: &str) -> Option<Option<WebhookUrl>> {
        match self.obj.get(key) {
            None => None,
            Some(Value::Null) => Some(None),
            Some(_) => self.string(key, WebhookUrl::parse).map(Some),
        }
    }

    fn channel(&mut self, key: &str, with_code: bool) -> Option<ChannelPatch> {
        let v = self.get(key)?;
        let Some(obj) = v.as_object() else {
            self.wrong(key, "an object");
            return None;
        };
        let mut f = Fields::new(obj, &self.pointer(key));
        let patch = ChannelPatch {
            app_name: f.string("app_name", AppName::parse),
            code_length: if with_code {
                f.int("code_length", CodeLength::parse)
            } else {
                None
            },
            default_verification_timeout_secs: f
                .int("default_verification_timeout_secs", TimeoutSecs::parse),
            messaging_template_id: f.string("messaging_template_id", |p, s| {
                Uuid::parse_str(s)
                    .map_err(|_| ValidationError::new(p, "invalid_id", "must be a UUID"))
            }),
            whitelisted_destinations: f.parse(
                "whitelisted_destinations",
                |p, v| {
                    let list: Option<Vec<String>> = v
                        .as_array()?
                        .iter()
                        .map(|c| c.as_str().map(str::to_owned))
                        .collect();
                    list.map(|l| Destinations::parse(p, &l))
                },
                "a list of country codes",
            ),
            alpha_sender: match obj.get("alpha_sender") {
                None => None,
                Some(Value::Null) => Some(None),
                Some(_) => f
                    .string("alpha_sender", |p, s| {
                        let ok = (1..=11).contains(&s.len())
                            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == ' ');
                        ok.then(|| s.to_owned()).ok_or_else(|| {
                            ValidationError::new(
                                p,
                                "invalid_alpha_sender",
                                "must be 1 to 11 letters, digits or spaces",
                            )
                        })
                    })
                    .map(Some),
            },
        };
        self.errors.append(&mut f.errors);
        Some(patch)
    }
}

/// Parses a create (name required) or update body into a patch.
fn parse_profile(bytes: &[u8], create: bool) -> ApiResult<(Option<String>, ProfilePatch)> {
    let body: Map<String, Value> = parse_json(bytes)?;
    let mut f = Fields::new(&body, "");
    let name = f.string("name", |p, s| {
        Text::parse(p, s, 255).map(|t| t.as_str().to_owned())
    });
    if create && body.get("name").is_none_or(Value::is_null) {
        f.errors
            .push(ValidationError::new("/name", "required", "is required"));
    }
    let patch = ProfilePatch {
        name: name.clone(),
        webhook_url: f.nullable_url("webhook_url"),
        webhook_failover_url: f.nullable_url("webhook_failover_url"),
        language: f.string("language", |p, s| {
            let ok = (2..=35).contains(&s.len())
                && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
            ok.then(|| s.to_owned()).ok_or_else(|| {
                ValidationError::new(p, "invalid_language", "must be a language tag, e.g. en-US")
            })
        }),
        daily_spend_limit: f.parse(
            "daily_spend_limit",
            |p, v| v.as_f64().map(|d| MicroUsd::parse(p, d)),
            "a number",
        ),
        daily_spend_limit_enabled: f.parse(
            "daily_spend_limit_enabled",
            |_, v| v.as_bool().map(Ok),
            "true or false",
        ),
        sms: f.channel("sms", true),
        call: f.channel("call", true),
        flashcall: f.channel("flashcall", false),
    };
    if !f.errors.is_empty() {
        return Err(ApiError::validation(f.errors));
    }
    Ok((name, patch))
}

/// In production, webhook URLs must reach the public internet (SSRF guard); the
/// dispatcher checks the resolved address again at every delivery.
fn refuse_inward(state: &AppState, patch: &ProfilePatch) -> ApiResult<()> {
    if state.settings.env != crate::config::Environment::Production {
        return Ok(());
    }
    let mut errors = Vec::new();
    for (field, value) in [
        ("/webhook_url", &patch.webhook_url),
        ("/webhook_failover_url", &patch.webhook_failover_url),
    ] {
        if let Some(Some(url)) = value {
            let refused = warden_infra::ssrf::check_url_text(url.as_str());
            if refused.is_err() {
                errors.push(ValidationError::new(
                    field,
                    "webhook_url_not_public",
                    "must point at a public address (not loopback, private or link-local)",
                ));
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::validation(errors))
    }
}

/// Create a verify profile.
#[utoipa::path(post, path = "/v2/verify_profiles", tag = "Verify", request_body(content = Object, description = "Telnyx CreateVerifyProfile body"),
    responses((status = 200, description = "The profile"), (status = 422, description = "Invalid field")),
    security(("bearer" = [])))]
pub async fn create_profile(
    State(state): State<AppState>,
    principal: Principal,
    meta: RequestMeta,
    body: axum::body::Bytes,
) -> ApiResult<axum::Json<Value>> {
    let (name, patch) = parse_profile(&body, true)?;
    refuse_inward(&state, &patch)?;
    let meta = meta.by(&principal);
    let (id, position) = state
        .verify
        .create_profile(
            principal.organization_id,
            name.unwrap_or_default(),
            patch,
            &meta,
        )
        .await?;
    state.caught_up(position).await?;
    Ok(axum::Json(
        json!({ "data": profile_view(&state, principal.organization_id, id).await? }),
    ))
}

/// List the organization's verify profiles (`filter[name]`, `page[number]`, `page[size]`).
#[utoipa::path(get, path = "/v2/verify_profiles", tag = "Verify",
    responses((status = 200, description = "A page of profiles with meta")),
    security(("bearer" = [])))]
pub async fn list_profiles(
    State(state): State<AppState>,
    principal: Principal,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<axum::Json<Value>> {
    let (number, size) = page(&query)?;
    let (rows, total) = verify::profiles(
        &state.db.pool,
        &principal.organization_id.to_string(),
        query.get("filter[name]").map(String::as_str),
        size,
        (number - 1) * size,
    )
    .await?;
    let data: Vec<Value> = rows.into_iter().map(row_view).collect();
    Ok(axum::Json(
        json!({ "data": data, "meta": page_meta(number, size, total) }),
    ))
}

/// One verify profile.
#[utoipa::path(get, path = "/v2/verify_profiles/{id}", tag = "Verify",
    responses((status = 200, description = "The profile"), (status = 404, description = "No such profile")),
    security(("bearer" = [])))]
pub async fn get_profile(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    let id = path_id(&id)?;
    Ok(axum::Json(
        json!({ "data": profile_view(&state, principal.organization_id, id).await? }),
    ))
}

/// Update a verify profile (fields merge; nested channel settings merge too).
#[utoipa::path(patch, path = "/v2/verify_profiles/{id}", tag = "Verify", request_body(content = Object, description = "Telnyx UpdateVerifyProfile body"),
    responses((status = 200, description = "The profile"), (status = 404, description = "No such profile")),
    security(("bearer" = [])))]
pub async fn update_profile(
    State(state): State<AppState>,
    principal: Principal,
    meta: RequestMeta,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<axum::Json<Value>> {
    let id = path_id(&id)?;
    let (_, patch) = parse_profile(&body, false)?;
    refuse_inward(&state, &patch)?;
    let meta = meta.by(&principal);
    let position = state
        .verify
        .update_profile(principal.organization_id, id, patch, &meta)
        .await?;
    state.caught_up(position).await?;
    Ok(axum::Json(
        json!({ "data": profile_view(&state, principal.organization_id, id).await? }),
    ))
}

/// Delete a verify profile; the answer is the deleted record (as Telnyx does).
#[utoipa::path(delete, path = "/v2/verify_profiles/{id}", tag = "Verify",
    responses((status = 200, description = "The deleted profile"), (status = 404, description = "No such profile")),
    security(("bearer" = [])))]
pub async fn delete_profile(
    State(state): State<AppState>,
    principal: Principal,
    meta: RequestMeta,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    let id = path_id(&id)?;
    let before = profile_view(&state, principal.organization_id, id).await?;
    let meta = meta.by(&principal);
    let position = state
        .verify
        .delete_profile(principal.organization_id, id, &meta)
        .await?;
    state.caught_up(position).await?;
    Ok(axum::Json(json!({ "data": before })))
}

fn parse_template(bytes: &[u8]) -> ApiResult<TemplateText> {
    let body: Map<String, Value> = parse_json(bytes)?;
    match body.get("text") {
        Some(Value::String(s)) => Ok(TemplateText::parse("/text", s)?),
        None | Some(Value::Null) => {
            Err(ValidationError::new("/text", "required", "is required").into())
        }
        Some(_) => Err(ValidationError::new("/text", "invalid_value", "must be a string").into()),
    }
}

/// The message templates: Telnyx's built-in ones, then the organization's own.
#[utoipa::path(get, path = "/v2/verify_profiles/templates", tag = "Verify",
    responses((status = 200, description = "Templates")), security(("bearer" = [])))]
pub async fn list_templates(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<axum::Json<Value>> {
    let mut data: Vec<Value> = BUILT_IN
        .iter()
        .map(|(id, text)| json!({ "id": id, "text": text }))
        .collect();
    for row in verify::templates(&state.db.pool, &principal.organization_id.to_string()).await? {
        data.push(json!({ "id": row.template_id, "text": row.text }));
    }
    Ok(axum::Json(json!({ "data": data })))
}

/// Create a message template (`{{code}}` required, `{{app_name}}` optional).
#[utoipa::path(post, path = "/v2/verify_profiles/templates", tag = "Verify", request_body(content = Object, description = "{text}"),
    responses((status = 200, description = "The template"), (status = 422, description = "Invalid text")),
    security(("bearer" = [])))]
pub async fn create_template(
    State(state): State<AppState>,
    principal: Principal,
    meta: RequestMeta,
    body: axum::body::Bytes,
) -> ApiResult<axum::Json<Value>> {
    let text = parse_template(&body)?;
    let meta = meta.by(&principal);
    let (id, position) = state
        .verify
        .create_template(principal.organization_id, text.clone(), &meta)
        .await?;
    state.caught_up(position).await?;
    Ok(axum::Json(
        json!({ "data": { "id": id, "text": text.as_str() } }),
    ))
}

/// Change one of the organization's templates (built-in ones cannot change).
#[utoipa::path(patch, path = "/v2/verify_profiles/templates/{id}", tag = "Verify", request_body(content = Object, description = "{text}"),
    responses((status = 200, description = "The template"), (status = 404, description = "No such template")),
    security(("bearer" = [])))]
pub async fn update_template(
    State(state): State<AppState>,
    principal: Principal,
    meta: RequestMeta,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<axum::Json<Value>> {
    let id = path_id(&id)?;
    let text = parse_template(&body)?;
    let meta = meta.by(&principal);
    let position = state
        .verify
        .update_template(principal.organization_id, id, text, &meta)
        .await?;
    state.caught_up(position).await?;
    let row = verify::template(
        &state.db.pool,
        &principal.organization_id.to_string(),
        &id.to_string(),
    )
    .await?
    .ok_or_else(ApiError::not_found)?;
    Ok(axum::Json(
        json!({ "data": { "id": row.template_id, "text": row.text } }),
    ))
}
