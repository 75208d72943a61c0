//! Who may call what: one table for every route, checked by one middleware before any
//! handler runs. A route missing from the table is refused (fail closed) and logged.
//! Handlers never check route permissions themselves; the one field-level rule (changing
//! the two-factor policy through `PATCH /v2/organization` needs `security:manage` too) is
//! enforced where that field is read.

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use warden_domain::permissions::Permission;

use super::error::ApiError;
use super::extract::Principal;
use crate::app::AppState;

/// What a route asks of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (sign-up, sign-in, challenges, accepting an invitation, operations).
    Public,
    /// Any signed-in user or API key, about themselves.
    SignedIn,
    /// A signed-in user or API key holding this permission in their organization.
    Needs(Permission),
}

/// The access rule of a route (its matched path pattern and method).
pub fn access(method: &Method, route: &str) -> Option<Access> {
    use Access::{Needs, Public, SignedIn};
    use Permission as P;
    let read = method == Method::GET;
    Some(match route {
        "/healthz" | "/readyz" | "/metrics" | "/openapi.json" | "/asyncapi.json" | "/docs"
        | "/docs/" => Public,
        r if r.starts_with("/docs/") => Public,
        "/v2/accounts" | "/v2/sessions" | "/v2/invitations/actions/accept" => Public,
        "/v2/two_factor_challenges/{id}/actions/send"
        | "/v2/two_factor_challenges/{id}/actions/verify"
        | "/v2/two_factor_challenges/{id}/actions/send_recovery_code"
        | "/v2/two_factor_challenges/{id}/actions/recover" => Public,
        "/v2/sessions/current" | "/v2/permissions" => SignedIn,
        r if r == "/v2/users/me" || r.starts_with("/v2/users/me/") => SignedIn,
        "/v2/organization" => Needs(if read {
            P::OrganizationRead
        } else {
            P::OrganizationManage
        }),
        "/v2/organization/security_passphrase"
        | "/v2/organization/security_passphrase/actions/verify"
        | "/v2/organization/port_out_pin"
        | "/v2/organization/port_out_pin/actions/verify" => Needs(P::SecurityManage),
        "/v2/organization/permission_groups" | "/v2/organization/permission_groups/{id}" => {
            Needs(if read {
                P::PermissionGroupsRead
            } else {
                P::PermissionGroupsManage
            })
        }
        "/v2/organization/invitations"
        | "/v2/organization/invitations/{id}"
        | "/v2/organization/invitations/{id}/actions/resend"
        | "/v2/organizations/users"
        | "/v2/organizations/users/users_groups_report"
        | "/v2/organizations/users/{id}"
        | "/v2/organizations/users/{id}/permission_groups"
        | "/v2/organizations/users/{id}/actions/{action}" => {
            Needs(if read { P::UsersRead } else { P::UsersManage })
        }
        "/v2/api_keys" | "/v2/api_keys/{id}" | "/v2/api_keys/{id}/actions/rotate" => {
            Needs(P::ApiKeysManage)
        }
        "/v2/audit/streams/{stream_id}/events"
        | "/v2/audit/streams/{stream_id}/state"
        | "/v2/audit/streams/{stream_id}/verify"
        | "/v2/audit_events" => Needs(P::AuditRead),
        "/v2/verify_profiles"
        | "/v2/verify_profiles/{id}"
        | "/v2/verify_profiles/templates"
        | "/v2/verify_profiles/templates/{id}"
        | "/v2/verifications/sms"
        | "/v2/verifications/call"
        | "/v2/verifications/flashcall"
        | "/v2/verifications/{id}"
        | "/v2/verifications/{id}/actions/verify"
        | "/v2/verifications/by_phone_number/{phone}"
        | "/v2/verifications/by_phone_number/{phone}/actions/verify"
        | "/v2/public_key" => Needs(if read { P::VerifyRead } else { P::VerifyManage }),
        "/v2/webhook_endpoints"
        | "/v2/webhook_endpoints/{id}"
        | "/v2/webhook_endpoints/{id}/actions/rotate_secret"
        | "/v2/webhook_endpoints/{id}/actions/redeliver"
        | "/v2/webhook_deliveries"
        | "/v2/webhook_deliveries/{id}"
        | "/v2/webhook_deliveries/{id}/actions/redeliver" => Needs(if read {
            P::WebhooksRead
        } else {
            P::WebhooksManage
        }),
        _ => return None,
    })
}

pub async fn middleware(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(route) = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
    else {
        // No route matched: the fallback answers 404.
        return next.run(request).await;
    };
    let rule = access(request.method(), &route);
    let (mut parts, body) = request.into_parts();
    match rule {
        Some(Access::Public) => {}
        Some(Access::SignedIn) => {
            if let Err(e) = Principal::from_request_parts(&mut parts, &state).await {
                return e.into_response();
            }
        }
        Some(Access::Needs(permission)) => {
            let principal = match Principal::from_request_parts(&mut parts, &state).await {
                Ok(p) => p,
                Err(e) => return e.into_response(),
            };
            if let Err(e) = principal.require(permission) {
                return e.into_response();
            }
        }
        None => {
            tracing::error!(%route, method = %parts.method, "route has no access rule; refused");
            return ApiError::forbidden("This route is not available.").into_response();
        }
    }
    next.run(Request::from_parts(parts, body)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_routes_fail_closed() {
        assert_eq!(access(&Method::GET, "/v2/secret_admin"), None);
    }

    #[test]
    fn reads_and_writes_need_different_permissions() {
        assert_eq!(
            access(&Method::GET, "/v2/organizations/users"),
            Some(Access::Needs(Permission::UsersRead))
        );
        assert_eq!(
            access(
                &Method::POST,
                "/v2/organizations/users/{id}/actions/{action}"
            ),
            Some(Access::Needs(Permission::UsersManage))
        );
        assert_eq!(
            access(&Method::PATCH, "/v2/organization"),
            Some(Access::Needs(Permission::OrganizationManage))
        );
    }
}
