//! The HTTP API: one module per resource, each exporting `router()`, merged here with the
//! shared middleware (request ids, tracing, metrics, idempotency, body limits, panics → 500).

pub mod accounts;
pub mod api_keys;
pub mod asyncapi;
pub mod audit;
pub mod auth_cache;
pub mod authz;
pub mod docs;
pub mod error;
pub mod extract;
pub mod idempotency;
pub mod members;
pub mod metrics;
pub mod ops;
pub mod organization;
pub mod paging;
pub mod sessions;
pub mod two_factor;
pub mod users;
pub mod verifications;
pub mod verify_profiles;
pub mod views;
pub mod webhooks;

use axum::http::{HeaderName, Request};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::app::AppState;
use error::DocumentedErrors;

#[derive(OpenApi)]
#[openapi(
    info(title = "Warden", description = "Account security, organizations and phone verification. Event-sourced."),
    paths(
        accounts::sign_up,
        sessions::sign_in, sessions::sign_out,
        users::get_me, users::patch_me, users::change_email, users::change_password,
        organization::get_org, organization::patch_org, organization::set_passphrase,
        organization::verify_passphrase, organization::set_pin, organization::verify_pin,
        two_factor::status, two_factor::disable, two_factor::enroll, two_factor::confirm, two_factor::regenerate,
        two_factor::verify_challenge, two_factor::send_challenge_code, two_factor::send_recovery_code, two_factor::recover, two_factor::send_step_up_code,
        members::permissions, members::list_groups, members::create_group, members::get_group,
        members::update_group, members::delete_group, members::invite, members::list_invitations,
        members::get_invitation, members::revoke_invitation, members::resend_invitation,
        members::accept_invitation, members::list_members, members::groups_report, members::get_member,
        members::set_member_groups, members::member_action,
        api_keys::create, api_keys::list, api_keys::revoke, api_keys::rotate,
        audit::events, audit::state_as_of, audit::verify, audit::audit_events,
        verify_profiles::create_profile, verify_profiles::list_profiles, verify_profiles::get_profile,
        verify_profiles::update_profile, verify_profiles::delete_profile, verify_profiles::list_templates,
        verify_profiles::create_template, verify_profiles::update_template,
        verifications::trigger_sms, verifications::trigger_call, verifications::trigger_flashcall,
        verifications::get_verification, verifications::list_by_phone_number,
        verifications::verify_by_phone_number, verifications::verify_by_id, verifications::public_key,
        webhooks::create_endpoint, webhooks::list_endpoints, webhooks::get_endpoint,
        webhooks::update_endpoint, webhooks::delete_endpoint, webhooks::rotate_secret,
        webhooks::redeliver_endpoint, webhooks::list_deliveries, webhooks::get_delivery,
        webhooks::redeliver_delivery,
    ),
    components(schemas(
        accounts::SignUpRequest, sessions::SignInRequest, users::PatchMeRequest,
        users::ChangeEmailRequest, users::ChangePasswordRequest,
        organization::PatchOrganizationRequest, organization::SetPassphraseRequest,
        organization::SetPinRequest, organization::VerifyPassphraseRequest, organization::VerifyPinRequest,
        two_factor::EnrollRequest, two_factor::RecoverRequest, two_factor::CodeRequest, two_factor::SendCodeRequest, organization::TwoFactorPolicyRequest,
        members::GroupRequest, members::InviteRequest, members::AcceptRequest, members::MemberGroupsRequest,
        api_keys::CreateApiKeyRequest,
        verifications::TriggerRequest, verifications::VerifyByPhoneRequest, verifications::VerifyByIdRequest,
        webhooks::CreateEndpointRequest, webhooks::RedeliverFromRequest,
    )),
    modifiers(&BearerAuth, &DocumentedErrors),
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

#[derive(Clone, Default)]
struct UuidRequestId;

impl MakeRequestId for UuidRequestId {
    fn make_request_id<B>(&mut self, _request: &Request<B>) -> Option<RequestId> {
        uuid::Uuid::now_v7()
            .to_string()
            .parse()
            .ok()
            .map(RequestId::new)
    }
}

pub fn router(state: AppState) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    Router::new()
        .merge(accounts::router())
        .merge(sessions::router())
        .merge(users::router())
        .merge(organization::router())
        .merge(two_factor::router())
        .merge(members::router())
        .merge(api_keys::router())
        .merge(audit::router())
        .merge(verify_profiles::router())
        .merge(verifications::router())
        .merge(webhooks::router())
        .merge(ops::router())
        .merge(asyncapi::router())
        .merge(docs::router())
        .merge(metrics::router(state.metrics.clone()))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), authz::middleware))
        .fallback(|| async { error::ApiError::not_found() })
        .layer(axum::middleware::from_fn_with_state(state.clone(), idempotency::middleware))
        .layer(axum::middleware::from_fn(metrics::track))
        .layer(RequestBodyLimitLayer::new(extract::MAX_BODY))
        .layer(CatchPanicLayer::custom(|_| {
            use axum::response::IntoResponse;
            error::ApiError::internal(&"handler panicked").into_response()
        }))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
                let id = req
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                let path = verifications::loggable_path(req.uri().path());
                tracing::info_span!("request", method = %req.method(), path = %path, request_id = %id)
            }),
        )
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, UuidRequestId))
        .with_state(state)
}
