//! The one place where errors become HTTP: the envelope
//! `{"errors":[{"code","title","detail","source":{"pointer"}}]}` with stable codes.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use warden_commands::accounts::AccountsError;
use warden_commands::members::MembersError;
use warden_commands::ports::SecretsError;
use warden_commands::{CommandError, StoreError};
use warden_domain::members::TeamError;
use warden_domain::organization::OrganizationError;
use warden_domain::permissions::Permission;
use warden_domain::two_factor::TwoFactorError;
use warden_domain::user::UserError;
use warden_domain::values::ValidationError;
use warden_domain::webhook_endpoint::WebhookEndpointError;
use warden_projections::ProjectionError;

/// Exact texts clients and tests rely on (API.md).
pub const LOGIN_ATTEMPTS_DETAIL: &str =
    "You have exceeded the number of log in attempts allowed. Please wait a minute then try again.";
pub const TOO_MANY_REQUESTS_DETAIL: &str =
    "You have exceeded the maximum number of allowed requests.";

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ErrorItem {
    pub code: &'static str,
    pub title: &'static str,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Source {
    pub pointer: String,
}

/// An HTTP error: a status and one or more envelope items.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub errors: Vec<ErrorItem>,
    pub retry_after_secs: Option<i64>,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        code: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            status,
            errors: vec![ErrorItem {
                code,
                title,
                detail: detail.into(),
                source: None,
            }],
            retry_after_secs: None,
        }
    }

    pub fn malformed_json(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            "Malformed JSON",
            detail,
        )
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Authentication required",
            "Missing, invalid or expired credentials.",
        )
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", "Not permitted", detail)
    }

    /// 403 naming the permission the caller lacks.
    pub fn missing_permission(permission: Permission) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Not permitted",
            format!("This needs the permission {permission}, which you do not hold."),
        )
    }

    fn conflict(code: &'static str, title: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, title, detail)
    }

    pub fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "Not found",
            "The requested resource does not exist.",
        )
    }

    pub fn too_many(code: &'static str, detail: &str, retry_after_secs: i64) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            code,
            "Too many requests",
            detail,
        );
        e.retry_after_secs = Some(retry_after_secs.max(1));
        e
    }

    /// 409: another request with this Idempotency-Key is being processed.
    pub fn idempotency_key_in_use() -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "idempotency_key_in_use",
            "Idempotency key in use",
            "A request with this Idempotency-Key is still being processed.",
        )
    }

    pub fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            "Service unavailable",
            "A backing service is unavailable; try again shortly.",
        )
    }

    /// A 500 that logs the cause and tells the client nothing about it.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "Internal error",
            "Something went wrong on our side.",
        )
    }

    pub fn validation(errors: Vec<ValidationError>) -> Self {
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            errors: errors
                .into_iter()
                .map(|e| ErrorItem {
                    code: e.code,
                    title: "Invalid value",
                    detail: e.detail,
                    source: Some(Source { pointer: e.pointer }),
                })
                .collect(),
            retry_after_secs: None,
        }
    }

    pub fn code(&self) -> &'static str {
        self.errors.first().map(|e| e.code).unwrap_or("error")
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        Self::validation(vec![e])
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "errors": self.errors });
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<UserError> for ApiError {
    fn from(e: UserError) -> Self {
        match e {
            UserError::AlreadyRegistered => Self::new(
                StatusCode::CONFLICT,
                "already_exists",
                "Already exists",
                e.to_string(),
            ),
            UserError::NotFound | UserError::SessionNotFound => Self::not_found(),
            UserError::WrongPassword => Self::new(
                StatusCode::FORBIDDEN,
                "invalid_password",
                "Wrong password",
                "The current password is not correct.",
            ),
            UserError::TooManySignInAttempts { retry_after_secs } => Self::too_many(
                "too_many_login_attempts",
                LOGIN_ATTEMPTS_DETAIL,
                retry_after_secs,
            ),
            UserError::TwoFactor(e) => e.into(),
            // Acting on a disabled or removed user is like acting on nobody.
            UserError::Inactive | UserError::ApiKeyNotFound => Self::not_found(),
            UserError::TooManyApiKeys => {
                Self::conflict("too_many_api_keys", "Too many API keys", e.to_string())
            }
            UserError::InvalidApiKeyName => {
                ValidationError::new("/name", "invalid_value", e.to_string()).into()
            }
        }
    }
}

impl From<TwoFactorError> for ApiError {
    fn from(e: TwoFactorError) -> Self {
        let detail = e.to_string();
        match e {
            TwoFactorError::AlreadyEnabled => Self::new(
                StatusCode::CONFLICT,
                "two_factor_already_enabled",
                "Already enabled",
                detail,
            ),
            TwoFactorError::NotEnabled => Self::new(
                StatusCode::CONFLICT,
                "two_factor_not_enabled",
                "Not enabled",
                detail,
            ),
            TwoFactorError::EnrollmentNotFound | TwoFactorError::ChallengeNotFound => {
                Self::not_found()
            }
            TwoFactorError::EnrollmentExpired => Self::new(
                StatusCode::GONE,
                "enrollment_expired",
                "Enrollment expired",
                detail,
            ),
            TwoFactorError::ChallengeExpired => Self::new(
                StatusCode::GONE,
                "challenge_expired",
                "Challenge expired",
                detail,
            ),
            TwoFactorError::ChallengeLocked => Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "challenge_locked",
                "Too many wrong codes",
                detail,
            ),
            TwoFactorError::SecondFactorBlocked => Self::new(
                StatusCode::FORBIDDEN,
                "second_factor_blocked",
                "Second factor blocked",
                detail,
            ),
            TwoFactorError::CurrentFactorRequired => {
                let mut err = Self::validation(vec![ValidationError::new(
                    "/current_code",
                    "current_factor_required",
                    detail,
                )]);
                if let Some(item) = err.errors.first_mut() {
                    item.title = "Current second factor required";
                }
                err
            }
            TwoFactorError::TooManyStepUpFailures { retry_after_secs } => Self::too_many(
                "too_many_requests",
                TOO_MANY_REQUESTS_DETAIL,
                retry_after_secs,
            ),
            TwoFactorError::CannotBeDisabled => Self::new(
                StatusCode::FORBIDDEN,
                "two_factor_cannot_be_disabled",
                "Two-factor authentication cannot be disabled",
                detail,
            ),
            TwoFactorError::NoPhoneEnrolled => Self::new(
                StatusCode::CONFLICT,
                "no_phone_enrolled",
                "No phone enrolled",
                detail,
            ),
            TwoFactorError::TooManyCodeSends { retry_after_secs } => Self::too_many(
                "too_many_requests",
                TOO_MANY_REQUESTS_DETAIL,
                retry_after_secs,
            ),
            TwoFactorError::EmailCodeOnlyForPhoneChange => {
                ValidationError::new("/email_code", "email_code_not_allowed", detail).into()
            }
            TwoFactorError::RecoveryNotAllowed => Self::new(
                StatusCode::FORBIDDEN,
                "recovery_not_allowed",
                "Recovery not allowed",
                detail,
            ),
            TwoFactorError::InvalidCode => {
                let mut err =
                    Self::validation(vec![ValidationError::new("/code", "invalid_code", detail)]);
                if let Some(item) = err.errors.first_mut() {
                    item.title = "Invalid code";
                }
                err
            }
        }
    }
}

impl From<OrganizationError> for ApiError {
    fn from(e: OrganizationError) -> Self {
        match e {
            OrganizationError::AlreadyCreated => Self::new(
                StatusCode::CONFLICT,
                "already_exists",
                "Already exists",
                e.to_string(),
            ),
            OrganizationError::NotFound => Self::not_found(),
            OrganizationError::BillingCurrencyImmutable => {
                let mut err = Self::validation(vec![ValidationError::new(
                    "/billing_currency",
                    "billing_currency_immutable",
                    "The billing currency is fixed at sign-up and cannot be changed.",
                )]);
                if let Some(item) = err.errors.first_mut() {
                    item.title = "Billing currency is immutable";
                }
                err
            }
            OrganizationError::WrongPassword => UserError::WrongPassword.into(),
            OrganizationError::TooManyChecks { retry_after_secs } => Self::too_many(
                "too_many_requests",
                TOO_MANY_REQUESTS_DETAIL,
                retry_after_secs,
            ),
            OrganizationError::NotOwner => {
                Self::forbidden("Only the organization owner may do this.")
            }
            OrganizationError::Team(e) => e.into(),
        }
    }
}

impl From<TeamError> for ApiError {
    fn from(e: TeamError) -> Self {
        let detail = e.to_string();
        match e {
            TeamError::GroupNotFound { group_id } => Self::validation(vec![ValidationError::new(
                "/permission_group_ids",
                "unknown_permission_group",
                format!("There is no permission group {group_id} in this organization."),
            )]),
            TeamError::GroupNameTaken => {
                Self::conflict("permission_group_name_taken", "Name already in use", detail)
            }
            TeamError::InvalidGroupName => {
                ValidationError::new("/name", "invalid_value", detail).into()
            }
            TeamError::TooManyGroups => Self::conflict(
                "too_many_permission_groups",
                "Too many permission groups",
                detail,
            ),
            TeamError::PermissionNotHeld { permission } => Self::missing_permission(permission),
            TeamError::InvitationNotFound | TeamError::MemberNotFound => Self::not_found(),
            TeamError::InvitationInvalid => Self::new(
                StatusCode::NOT_FOUND,
                "invitation_invalid",
                "Invitation invalid",
                "This invitation token is invalid, was replaced, or has expired.",
            ),
            TeamError::AlreadyInvited => Self {
                status: StatusCode::CONFLICT,
                errors: vec![ErrorItem {
                    code: "already_invited",
                    title: "Already invited",
                    detail,
                    source: Some(Source {
                        pointer: "/email".into(),
                    }),
                }],
                retry_after_secs: None,
            },
            TeamError::TooManyInvitations => {
                Self::conflict("too_many_invitations", "Too many invitations", detail)
            }
            TeamError::CannotActOnOwner => Self::forbidden(
                "Nobody can remove, disable, regroup or reset the organization owner.",
            ),
        }
    }
}

impl From<MembersError> for ApiError {
    fn from(e: MembersError) -> Self {
        match e {
            MembersError::NotAMember => Self::unauthorized(),
            MembersError::EmailTaken => AccountsError::EmailTaken.into(),
            MembersError::Organization(e) => e.into(),
            MembersError::User(e) => e.into(),
        }
    }
}

impl From<AccountsError> for ApiError {
    fn from(e: AccountsError) -> Self {
        match e {
            AccountsError::EmailTaken => Self {
                status: StatusCode::CONFLICT,
                errors: vec![ErrorItem {
                    code: "email_taken",
                    title: "Email already in use",
                    detail: "An account with this email address already exists.".into(),
                    source: Some(Source {
                        pointer: "/email".into(),
                    }),
                }],
                retry_after_secs: None,
            },
            AccountsError::InvalidCredentials => Self::new(
                StatusCode::UNAUTHORIZED,
                "invalid_credentials",
                "Invalid credentials",
                "The email address or password is incorrect.",
            ),
            AccountsError::TooManyLoginAttempts { retry_after_secs } => Self::too_many(
                "too_many_login_attempts",
                LOGIN_ATTEMPTS_DETAIL,
                retry_after_secs,
            ),
            AccountsError::User(e) => e.into(),
            AccountsError::Organization(e) => e.into(),
        }
    }
}

impl From<WebhookEndpointError> for ApiError {
    fn from(e: WebhookEndpointError) -> Self {
        match e {
            WebhookEndpointError::NotFound => Self::not_found(),
            WebhookEndpointError::AlreadyExists => {
                Self::conflict("already_exists", "Already exists", e.to_string())
            }
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => {
                tracing::warn!(error = %e, "event store unavailable");
                Self::unavailable()
            }
            StoreError::VersionConflict { .. } => Self::new(
                StatusCode::CONFLICT,
                "conflict",
                "Conflict",
                "The resource was changed concurrently; try again.",
            ),
            StoreError::ClaimTaken { .. } => Self::new(
                StatusCode::CONFLICT,
                "conflict",
                "Conflict",
                "The value is already taken.",
            ),
            // This request ran so long that a retry with its Idempotency-Key took the
            // record over; that retry is the one that runs, so this one changed nothing.
            StoreError::IdempotencyLeaseLost => Self::idempotency_key_in_use(),
            other => Self::internal(&other),
        }
    }
}

impl From<SecretsError> for ApiError {
    fn from(e: SecretsError) -> Self {
        match e {
            SecretsError::Forgotten => Self::new(
                StatusCode::GONE,
                "subject_forgotten",
                "Forgotten",
                "This person's data was erased at their request.",
            ),
            SecretsError::Unavailable(_) => {
                tracing::warn!(error = %e, "key store unavailable");
                Self::unavailable()
            }
            other => Self::internal(&other),
        }
    }
}

impl<E> From<CommandError<E>> for ApiError
where
    E: std::error::Error + Into<ApiError> + 'static,
{
    fn from(e: CommandError<E>) -> Self {
        match e {
            CommandError::Domain(e) => e.into(),
            CommandError::Invalid(v) => v.into(),
            CommandError::Conflict => StoreError::VersionConflict {
                stream_id: String::new(),
                expected: 0,
                actual: 0,
            }
            .into(),
            CommandError::ClaimTaken(_) => Self::new(
                StatusCode::CONFLICT,
                "conflict",
                "Conflict",
                "The value is already taken.",
            ),
            CommandError::Store(e) => e.into(),
            CommandError::Secrets(e) => e.into(),
            CommandError::Codec(e) => Self::internal(&e),
        }
    }
}

impl From<ProjectionError> for ApiError {
    fn from(e: ProjectionError) -> Self {
        match e {
            ProjectionError::Timeout => {
                tracing::warn!("read models did not catch up in time");
                Self::unavailable()
            }
            ProjectionError::Store(e) => e.into(),
            // A read model's database went away mid-request: 503 like the store, not 500.
            ProjectionError::Db(e) => e.into(),
            other => Self::internal(&other),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::Io(_)
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Tls(_) => {
                tracing::warn!(error = %e, "database unavailable");
                Self::unavailable()
            }
            // The server is shutting down or restarting, or the connection broke
            // (Postgres classes 08, 53, 57P; deadlock and serialization failures).
            sqlx::Error::Database(ref db)
                if db.code().is_some_and(|c| {
                    c.starts_with("08")
                        || c.starts_with("53")
                        || c.starts_with("57P")
                        || c == "40001"
                        || c == "40P01"
                }) =>
            {
                tracing::warn!(error = %e, "database unavailable");
                Self::unavailable()
            }
            other => Self::internal(&other),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Documents, on every operation of the OpenAPI document, the errors the shared layers can
/// answer with whatever the handler: 400 (malformed JSON or header), 401/403 (the
/// permission table, on secured operations), 404 (an id in the path that names nothing),
/// 409 (a concurrent change or an `Idempotency-Key` in use, on writes), 422 (a field, on
/// operations that take a body or query), 503 (the database or key store is away). Each
/// uses the error envelope. An operation's own description of a status is kept.
pub struct DocumentedErrors;

impl DocumentedErrors {
    fn envelope_schema() -> Option<utoipa::openapi::schema::Schema> {
        serde_json::from_value(serde_json::json!({
            "type": "object",
            "required": ["errors"],
            "properties": {
                "errors": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["code", "title", "detail"],
                        "properties": {
                            "code": { "type": "string" },
                            "title": { "type": "string" },
                            "detail": { "type": "string" },
                            "source": {
                                "type": "object",
                                "required": ["pointer"],
                                "properties": { "pointer": { "type": "string" } }
                            }
                        }
                    }
                }
            }
        }))
        .ok()
    }

    fn response(description: &str) -> Option<utoipa::openapi::Response> {
        serde_json::from_value(serde_json::json!({
            "description": description,
            "content": { "application/json": {
                "schema": { "$ref": "#/components/schemas/ErrorEnvelope" }
            } }
        }))
        .ok()
    }

    fn document(op: &mut utoipa::openapi::path::Operation, path: &str, write: bool) {
        use utoipa::openapi::path::ParameterIn;
        let params = op.parameters.as_deref().unwrap_or_default();
        let in_path = path.contains('{');
        let in_query = params.iter().any(|p| p.parameter_in == ParameterIn::Query);
        let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
        let mut add = vec![
            ("400", "Malformed request (JSON syntax, a header)"),
            ("503", "A backing service is unavailable; try again shortly"),
        ];
        if secured {
            add.push(("401", "Missing, invalid or expired credentials"));
            add.push(("403", "The caller lacks the permission"));
        }
        if in_path {
            add.push(("404", "Not found"));
        }
        if write {
            add.push(("409", "Conflict, or the Idempotency-Key is in use"));
        }
        if write || in_query || op.request_body.is_some() {
            add.push(("422", "A field is invalid (source.pointer names it)"));
        }
        for (status, description) in add {
            if op.responses.responses.contains_key(status) {
                continue;
            }
            if let Some(response) = Self::response(description) {
                op.responses
                    .responses
                    .insert(status.to_owned(), response.into());
            }
        }
    }
}

impl utoipa::Modify for DocumentedErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(schema) = Self::envelope_schema() {
            openapi
                .components
                .get_or_insert_with(Default::default)
                .schemas
                .insert("ErrorEnvelope".to_owned(), schema.into());
        }
        for (path, item) in openapi.paths.paths.iter_mut() {
            if let Some(op) = item.get.as_mut() {
                Self::document(op, path, false);
            }
            for op in [
                item.post.as_mut(),
                item.put.as_mut(),
                item.patch.as_mut(),
                item.delete.as_mut(),
            ]
            .into_iter()
            .flatten()
            {
                Self::document(op, path, true);
            }
        }
    }
}
