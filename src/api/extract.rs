//! Request extractors: JSON bodies with field pointers in their errors, the caller's
//! identity from a bearer token, and the request facts every event records.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use serde::de::DeserializeOwned;
use uuid::Uuid;
use warden_commands::members::Caller;
use warden_commands::pipeline::Meta;
use warden_commands::store::IdempotencyLease;
use warden_domain::chain::format_time;
use warden_domain::permissions::{Permission, PermissionSet};
use warden_domain::values::ValidationError;
use warden_domain::EventMetadata;
use warden_projections::{members, sessions, users};

use super::auth_cache::{Credential, Resolved};
use super::error::ApiError;
use crate::app::AppState;

/// The scope of a session that may only enroll a second factor.
const SETUP_SCOPE: &str = "two_factor_setup";

/// What an enrollment-only session may do: read itself, enroll, sign out.
fn setup_may_use(parts: &Parts) -> bool {
    let path = parts.uri.path();
    path.starts_with("/v2/users/me/two_factor")
        || path == "/v2/sessions/current"
        || (path == "/v2/users/me" && parts.method == axum::http::Method::GET)
}

/// How often a session's last use is written.
const ACTIVITY_GRANULARITY_SECS: i64 = 60;

/// `Debug` for a request body that carries a secret (a password, passphrase, PIN, code or
/// token): the type's name only, so no log line or panic message can show the secret.
macro_rules! redacted_debug {
    ($($ty:ty),+ $(,)?) => {$(
        impl std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(concat!(stringify!($ty), " { <redacted> }"))
            }
        }
    )+};
}
pub(crate) use redacted_debug;

/// Largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;

/// A JSON body: syntax errors are 400 `malformed_json`; a missing or mistyped field is 422
/// with `source.pointer` naming it.
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|_| ApiError::malformed_json("The request body could not be read."))?;
        parse_json(&bytes).map(Json)
    }
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::malformed_json(format!("The request body is not valid JSON: {e}."))
    })?;
    if !value.is_object() {
        return Err(ApiError::malformed_json(
            "The request body must be a JSON object.",
        ));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let mut pointer = String::new();
        for segment in e.path().iter() {
            use serde_path_to_error::Segment;
            match segment {
                Segment::Map { key } | Segment::Enum { variant: key } => {
                    pointer.push('/');
                    pointer.push_str(key);
                }
                Segment::Seq { index } => {
                    pointer.push('/');
                    pointer.push_str(&index.to_string());
                }
                Segment::Unknown => {}
            }
        }
        let message = e.inner().to_string();
        if let Some(field) = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next())
        {
            pointer.push('/');
            pointer.push_str(field);
            return ValidationError::new(pointer, "required", "is required").into();
        }
        let detail = message
            .split(" at line ")
            .next()
            .unwrap_or(&message)
            .to_owned();
        ValidationError::new(
            if pointer.is_empty() {
                "/".into()
            } else {
                pointer
            },
            "invalid_value",
            detail,
        )
        .into()
    })
}

/// Fails with every validation error at once, or passes.
pub fn all_valid(
    errors: impl IntoIterator<Item = Option<ValidationError>>,
) -> Result<(), ApiError> {
    let errors: Vec<ValidationError> = errors.into_iter().flatten().collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::validation(errors))
    }
}

/// Who is calling: a signed-in user (session token) or an API key acting as its user, with
/// the permissions they hold right now.
#[derive(Clone)]
pub struct Principal {
    pub user_id: Uuid,
    pub organization_id: Uuid,
    pub role: String,
    pub session_id: Option<Uuid>,
    pub api_key_id: Option<Uuid>,
    pub permissions: PermissionSet,
    /// The caller's user row, as read when the request was authenticated.
    pub user: Arc<users::UserRow>,
}

/// Ids and rights only: the user row's personal data stays out of any log line.
impl std::fmt::Debug for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Principal")
            .field("user_id", &self.user_id)
            .field("organization_id", &self.organization_id)
            .field("role", &self.role)
            .field("session_id", &self.session_id)
            .field("api_key_id", &self.api_key_id)
            .field("permissions", &self.permissions)
            .finish_non_exhaustive()
    }
}

impl Principal {
    pub fn is_owner(&self) -> bool {
        self.role == "organization_owner"
    }

    pub fn actor(&self) -> String {
        match self.api_key_id {
            Some(key) => format!("user:{}/api_key:{key}", self.user_id),
            None => format!("user:{}", self.user_id),
        }
    }

    /// 403 unless the caller holds `permission`.
    pub fn require(&self, permission: Permission) -> Result<(), ApiError> {
        if self.permissions.allows(permission) {
            Ok(())
        } else {
            Err(ApiError::missing_permission(permission))
        }
    }

    pub fn caller(&self) -> Caller {
        Caller {
            user_id: self.user_id,
            organization_id: self.organization_id,
        }
    }
}

/// The bearer token of a request, if it carries one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// The live session or unrevoked API key a token opens, with its user (if enabled) and
/// the permissions they hold: from the [`AuthCache`](super::auth_cache::AuthCache) when it
/// has a fresh entry, else from the read models (and then cached). Expiry, the idle
/// timeout and the user's status are checked on every call.
pub async fn authenticate(state: &AppState, token: &str) -> Result<Option<Resolved>, ApiError> {
    let digest = state.secrets.token_digest(token);
    let now = state.now();
    let resolved = match state.auth_cache.get(digest.as_str()) {
        Some(hit) => hit,
        None => {
            // Both are read BEFORE the look-up: keeping its result is only safe if the
            // runner was already observing when it began (so every later event reaches the
            // cache), and it is dropped if anything was evicted meanwhile.
            let observing = state.projections.observing();
            let generation = state.auth_cache.generation();
            let Some(found) = resolve(state, digest.as_str(), now).await? else {
                return Ok(None);
            };
            if observing {
                state
                    .auth_cache
                    .insert(digest.as_str(), found.clone(), generation);
            }
            found
        }
    };
    if resolved.user.status != "enabled" {
        return Ok(None);
    }
    if let Credential::Session { session, last_used } = &resolved.credential {
        let expired = parse_time(&session.expires_at)? <= now;
        let idle = *last_used + chrono::Duration::seconds(session.idle_timeout_secs) <= now;
        if session.ended_at.is_some() || expired || idle {
            return Ok(None);
        }
    }
    // Use is recorded at most once a minute: the idle timeout is exact to a minute and a
    // burst of reads costs no writes.
    let (last_used, id) = match &resolved.credential {
        Credential::Session { session, last_used } => (Some(*last_used), &session.session_id),
        Credential::ApiKey { key, last_used } => (*last_used, &key.key_id),
    };
    let stale = last_used
        .is_none_or(|last| now - last >= chrono::Duration::seconds(ACTIVITY_GRANULARITY_SECS));
    if stale {
        let now_text = format_time(now);
        let write = state.db.writes.enter().await;
        match &resolved.credential {
            Credential::Session { .. } => sessions::touch(&state.db.pool, id, &now_text).await?,
            Credential::ApiKey { .. } => {
                members::touch_api_key(&state.db.pool, id, &now_text).await?
            }
        }
        drop(write);
        state.auth_cache.touched(digest.as_str(), now);
    }
    Ok(Some(resolved))
}

/// The read-model look-up behind [`authenticate`].
async fn resolve(
    state: &AppState,
    digest: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Option<Resolved>, ApiError> {
    let pool = &state.db.pool;
    let credential = match sessions::find_live(pool, digest, &format_time(now)).await? {
        Some(session) => {
            let last_used = parse_time(&sessions::last_activity(pool, &session).await?)?;
            Credential::Session { session, last_used }
        }
        None => match members::find_api_key(pool, digest).await? {
            Some(key) => {
                let last_used = members::api_key_last_used(pool, &key.key_id)
                    .await?
                    .map(|t| parse_time(&t))
                    .transpose()?;
                Credential::ApiKey { key, last_used }
            }
            None => return Ok(None),
        },
    };
    let Some(user) = users::get(pool, credential.user_id()).await? else {
        return Ok(None);
    };
    let permissions = if user.role == "organization_owner" {
        PermissionSet::all()
    } else {
        let mut set = PermissionSet::default();
        for list in members::group_permissions(pool, &user.user_id).await? {
            let granted: PermissionSet =
                serde_json::from_str(&list).map_err(|e| ApiError::internal(&e))?;
            set.extend(&granted);
        }
        set
    };
    Ok(Some(Resolved {
        credential,
        user: Arc::new(user),
        permissions,
    }))
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(p) = parts.extensions.get::<Principal>() {
            return Ok(p.clone());
        }
        let token = bearer(&parts.headers).ok_or_else(ApiError::unauthorized)?;
        let resolved = authenticate(state, token)
            .await?
            .ok_or_else(ApiError::unauthorized)?;
        let (session_id, api_key_id) = match &resolved.credential {
            Credential::Session { session, .. } => {
                if session.scope.as_deref() == Some(SETUP_SCOPE) && !setup_may_use(parts) {
                    return Err(ApiError::new(
                        axum::http::StatusCode::FORBIDDEN,
                        "two_factor_setup_required",
                        "Two-factor set-up required",
                        "Your organization requires two-factor authentication: enroll a second factor, then sign in again.",
                    ));
                }
                (Some(parse_uuid(&session.session_id)?), None)
            }
            Credential::ApiKey { key, .. } => (None, Some(parse_uuid(&key.key_id)?)),
        };
        let user = resolved.user;
        let principal = Principal {
            user_id: parse_uuid(&user.user_id)?,
            organization_id: parse_uuid(&user.organization_id)?,
            role: user.role.clone(),
            session_id,
            api_key_id,
            permissions: resolved.permissions,
            user,
        };
        parts.extensions.insert(principal.clone());
        Ok(principal)
    }
}

fn parse_time(text: &str) -> Result<chrono::DateTime<chrono::Utc>, ApiError> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| ApiError::internal(&e))
}

fn parse_uuid(s: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(s).map_err(|e| ApiError::internal(&e))
}

/// The facts of this request that every event it causes records (no secrets).
#[derive(Debug, Clone)]
pub struct RequestMeta(pub Meta);

impl RequestMeta {
    pub fn by(mut self, principal: &Principal) -> Meta {
        self.0.metadata.actor = Some(principal.actor());
        self.0.subject = Some(format!("user-{}", principal.user_id));
        self.0
    }

    pub fn anonymous(mut self) -> Meta {
        self.0.metadata.actor = Some("anonymous".into());
        self.0
    }
}

/// The request id set by the tracing layer (`x-request-id`), reused as correlation id.
pub fn correlation_id(headers: &HeaderMap) -> Uuid {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Uuid::parse_str(v).ok())
        .unwrap_or_else(Uuid::now_v7)
}

impl<S: Send + Sync> FromRequestParts<S> for RequestMeta {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip().to_string());
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(512).collect());
        let idempotency = parts.extensions.get::<IdempotencyLease>().cloned();
        Ok(Self(Meta {
            metadata: EventMetadata {
                actor: None,
                correlation_id: correlation_id(&parts.headers),
                causation_id: None,
                idempotency_key: idempotency.as_ref().map(|l| l.key.key.clone()),
                ip,
                user_agent,
                client: None,
            },
            idempotency,
            subject: None,
        }))
    }
}

/// A UUID in the path (the route's one parameter). One that does not parse names nothing:
/// 404 in the error envelope, like an unknown id (axum's own rejection is a plain-text 400).
pub struct PathId(pub uuid::Uuid);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|_| ApiError::not_found())?;
        uuid::Uuid::parse_str(&raw)
            .map(PathId)
            .map_err(|_| ApiError::not_found())
    }
}

#[cfg(test)]
mod tests {
    #[derive(serde::Deserialize)]
    struct Secretive {
        #[allow(dead_code)]
        password: String,
    }
    redacted_debug!(Secretive);

    #[test]
    fn redacted_debug_shows_no_field() {
        let s = Secretive {
            password: "hunter2 hunter2 hunter2".into(),
        };
        let shown = format!("{s:?}");
        assert_eq!(shown, "Secretive { <redacted> }");
    }
}
