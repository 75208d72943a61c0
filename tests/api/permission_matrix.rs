//! The permission matrix: every organization endpoint, called by the owner, by a sub-user
//! holding exactly the permission it needs, by a sub-user holding every permission except
//! that one, and by another organization's owner.

use std::collections::HashMap;

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{spawn_app_with_sink, Backend, MessageSink, TestApp, PASSWORD};
use crate::members::{accept, group, invite, sub_user};

const SUB_PASSWORD: &str = "a sub-user's own long passphrase";

const ALL: [&str; 13] = [
    "organization:read",
    "organization:manage",
    "security:manage",
    "users:read",
    "users:manage",
    "permission_groups:read",
    "permission_groups:manage",
    "api_keys:manage",
    "webhooks:read",
    "webhooks:manage",
    "verify:read",
    "verify:manage",
    "audit:read",
];

/// The permission that implies `p` (holding it would also grant `p`).
fn stronger(p: &str) -> Option<&'static str> {
    match p {
        "organization:read" => Some("organization:manage"),
        "users:read" => Some("users:manage"),
        "permission_groups:read" => Some("permission_groups:manage"),
        "webhooks:read" => Some("webhooks:manage"),
        "verify:read" => Some("verify:manage"),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Owner,
    With,
    Without,
    OtherOrg,
}

struct Caller {
    token: String,
    password: &'static str,
}

/// Organization A with its owner and, per permission, the two sub-users; and B's owner.
struct World {
    app: TestApp,
    sink: MessageSink,
    owner: Caller,
    other: Caller,
    subs: HashMap<(&'static str, bool), Caller>,
}

impl World {
    async fn sub(&mut self, permission: &'static str, with: bool) -> &Caller {
        if !self.subs.contains_key(&(permission, with)) {
            let granted: Vec<&str> = if with {
                vec![permission]
            } else {
                ALL.iter()
                    .copied()
                    .filter(|p| *p != permission && Some(*p) != stronger(permission))
                    .collect()
            };
            let name = format!("{permission} {with}");
            let g = group(&self.app, &self.owner.token, &name, &granted).await;
            let (_, _, token) = sub_user(&self.app, &self.sink, &self.owner.token, &[&g]).await;
            self.subs.insert(
                (permission, with),
                Caller {
                    token,
                    password: SUB_PASSWORD,
                },
            );
        }
        &self.subs[&(permission, with)]
    }

    async fn caller(&mut self, who: Who, permission: &'static str) -> (String, &'static str) {
        let c = match who {
            Who::Owner => &self.owner,
            Who::OtherOrg => &self.other,
            Who::With => self.sub(permission, true).await,
            Who::Without => self.sub(permission, false).await,
        };
        (c.token.clone(), c.password)
    }

    /// A fresh resource of organization A for a destructive call.
    async fn fresh(&self, kind: Fixture, caller_token: &str, who: Who) -> String {
        let app = &self.app;
        let owner = &self.owner.token;
        match kind {
            Fixture::None => String::new(),
            Fixture::Group => {
                group(
                    app,
                    owner,
                    &format!("g-{}", uuid::Uuid::new_v4().simple()),
                    &[],
                )
                .await
            }
            Fixture::Invitation => {
                let email = format!("inv-{}@example.com", uuid::Uuid::new_v4().simple());
                invite(app, &self.sink, owner, &email, &[]).await.0
            }
            Fixture::Member => sub_user(app, &self.sink, owner, &[]).await.0,
            Fixture::OrgStream => {
                let r = app.get("/v2/organization", owner).await;
                format!(
                    "organization-{}",
                    r.data()["id"].as_str().unwrap_or_default()
                )
            }
            Fixture::VerifyProfile => {
                let r = app
                    .post(
                        "/v2/verify_profiles",
                        Some(owner),
                        json!({ "name": format!("p-{}", uuid::Uuid::new_v4().simple()) }),
                    )
                    .await;
                assert_eq!(r.status, 200, "{}", r.text);
                r.data()["id"].as_str().unwrap_or_default().to_owned()
            }
            Fixture::WebhookEndpoint => {
                let r = app
                    .post(
                        "/v2/webhook_endpoints",
                        Some(owner),
                        json!({ "url": "http://127.0.0.1:9/hook", "event_types": ["*"] }),
                    )
                    .await;
                assert_eq!(r.status, 201, "{}", r.text);
                r.data()["id"].as_str().unwrap_or_default().to_owned()
            }
            Fixture::WebhookDelivery => {
                // A second endpoint's creation is an event the first one receives.
                for _ in 0..2 {
                    let r = app
                        .post(
                            "/v2/webhook_endpoints",
                            Some(owner),
                            json!({ "url": "http://127.0.0.1:9/hook", "event_types": ["*"] }),
                        )
                        .await;
                    assert_eq!(r.status, 201, "{}", r.text);
                }
                let r = app.get("/v2/webhook_deliveries", owner).await;
                assert_eq!(r.status, 200, "{}", r.text);
                r.data()[0]["id"].as_str().unwrap_or_default().to_owned()
            }
            Fixture::ApiKey => {
                // The caller's own key when they may have one; A's owner's otherwise.
                let token = if matches!(who, Who::Owner | Who::With) {
                    caller_token
                } else {
                    owner
                };
                let r = app
                    .post("/v2/api_keys", Some(token), json!({ "name": "matrix" }))
                    .await;
                assert_eq!(r.status, 201, "{}", r.text);
                r.data()["id"].as_str().unwrap_or_default().to_owned()
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Fixture {
    None,
    Group,
    Invitation,
    Member,
    ApiKey,
    VerifyProfile,
    /// The organization's own stream id.
    OrgStream,
    WebhookEndpoint,
    /// A delivery of organization A's (to an endpoint that never answers).
    WebhookDelivery,
}

struct Row {
    method: Method,
    /// `{id}` is replaced by the fixture's id.
    path: &'static str,
    fixture: Fixture,
    permission: &'static str,
    /// Success for the owner and for the sub-user with the permission.
    ok: u16,
    /// What another organization's owner gets: their own organization's answer for
    /// collections, 404 for A's resources.
    other: u16,
    body: fn(&'static str) -> Option<Value>,
}

fn none(_: &'static str) -> Option<Value> {
    None
}
fn empty(_: &'static str) -> Option<Value> {
    Some(json!({}))
}

fn rows() -> Vec<Row> {
    use Fixture as F;
    let r = |method: Method,
             path: &'static str,
             fixture: Fixture,
             permission: &'static str,
             ok: u16,
             other: u16,
             body: fn(&'static str) -> Option<Value>| Row {
        method,
        path,
        fixture,
        permission,
        ok,
        other,
        body,
    };
    vec![
        r(
            Method::GET,
            "/v2/organization",
            F::None,
            "organization:read",
            200,
            200,
            none,
        ),
        r(
            Method::PATCH,
            "/v2/organization",
            F::None,
            "organization:manage",
            200,
            200,
            |_| Some(json!({ "company_name": "Renamed" })),
        ),
        r(
            Method::PUT,
            "/v2/organization/security_passphrase",
            F::None,
            "security:manage",
            204,
            204,
            |pw| {
                Some(json!({ "passphrase": "a long security passphrase", "current_password": pw }))
            },
        ),
        r(
            Method::POST,
            "/v2/organization/security_passphrase/actions/verify",
            F::None,
            "security:manage",
            200,
            200,
            |_| Some(json!({ "passphrase": "a long security passphrase" })),
        ),
        r(
            Method::PUT,
            "/v2/organization/port_out_pin",
            F::None,
            "security:manage",
            204,
            204,
            |pw| Some(json!({ "pin": "482913", "current_password": pw })),
        ),
        r(
            Method::POST,
            "/v2/organization/port_out_pin/actions/verify",
            F::None,
            "security:manage",
            200,
            200,
            |_| Some(json!({ "pin": "482913" })),
        ),
        r(
            Method::GET,
            "/v2/organization/permission_groups",
            F::None,
            "permission_groups:read",
            200,
            200,
            none,
        ),
        r(
            Method::POST,
            "/v2/organization/permission_groups",
            F::None,
            "permission_groups:manage",
            201,
            201,
            |_| Some(json!({ "name": format!("new {}", uuid::Uuid::new_v4()), "permissions": [] })),
        ),
        r(
            Method::GET,
            "/v2/organization/permission_groups/{id}",
            F::Group,
            "permission_groups:read",
            200,
            404,
            none,
        ),
        r(
            Method::PATCH,
            "/v2/organization/permission_groups/{id}",
            F::Group,
            "permission_groups:manage",
            200,
            404,
            |_| Some(json!({ "name": format!("renamed {}", uuid::Uuid::new_v4()) })),
        ),
        r(
            Method::DELETE,
            "/v2/organization/permission_groups/{id}",
            F::Group,
            "permission_groups:manage",
            200,
            404,
            none,
        ),
        r(
            Method::GET,
            "/v2/organization/invitations",
            F::None,
            "users:read",
            200,
            200,
            none,
        ),
        r(
            Method::POST,
            "/v2/organization/invitations",
            F::None,
            "users:manage",
            201,
            201,
            |_| {
                Some(json!({ "email": format!("m-{}@example.com", uuid::Uuid::new_v4().simple()) }))
            },
        ),
        r(
            Method::GET,
            "/v2/organization/invitations/{id}",
            F::Invitation,
            "users:read",
            200,
            404,
            none,
        ),
        r(
            Method::DELETE,
            "/v2/organization/invitations/{id}",
            F::Invitation,
            "users:manage",
            200,
            404,
            none,
        ),
        r(
            Method::POST,
            "/v2/organization/invitations/{id}/actions/resend",
            F::Invitation,
            "users:manage",
            200,
            404,
            empty,
        ),
        r(
            Method::GET,
            "/v2/organizations/users",
            F::None,
            "users:read",
            200,
            200,
            none,
        ),
        r(
            Method::GET,
            "/v2/organizations/users/users_groups_report",
            F::None,
            "users:read",
            200,
            200,
            none,
        ),
        r(
            Method::GET,
            "/v2/organizations/users/{id}",
            F::Member,
            "users:read",
            200,
            404,
            none,
        ),
        r(
            Method::PUT,
            "/v2/organizations/users/{id}/permission_groups",
            F::Member,
            "users:manage",
            200,
            404,
            |_| Some(json!({ "permission_group_ids": [] })),
        ),
        r(
            Method::POST,
            "/v2/organizations/users/{id}/actions/disable",
            F::Member,
            "users:manage",
            200,
            404,
            empty,
        ),
        r(
            Method::POST,
            "/v2/organizations/users/{id}/actions/enable",
            F::Member,
            "users:manage",
            200,
            404,
            empty,
        ),
        r(
            Method::POST,
            "/v2/organizations/users/{id}/actions/reset_two_factor",
            F::Member,
            "users:manage",
            200,
            404,
            empty,
        ),
        r(
            Method::POST,
            "/v2/organizations/users/{id}/actions/unblock_two_factor",
            F::Member,
            "users:manage",
            200,
            404,
            empty,
        ),
        r(
            Method::POST,
            "/v2/organizations/users/{id}/actions/remove",
            F::Member,
            "users:manage",
            200,
            404,
            empty,
        ),
        r(
            Method::POST,
            "/v2/organizations/users/{id}/actions/forget",
            F::Member,
            "users:manage",
            200,
            404,
            empty,
        ),
        r(
            Method::GET,
            "/v2/api_keys",
            F::None,
            "api_keys:manage",
            200,
            200,
            none,
        ),
        r(
            Method::POST,
            "/v2/api_keys",
            F::None,
            "api_keys:manage",
            201,
            201,
            |_| Some(json!({ "name": "k" })),
        ),
        r(
            Method::POST,
            "/v2/api_keys/{id}/actions/rotate",
            F::ApiKey,
            "api_keys:manage",
            200,
            404,
            empty,
        ),
        r(
            Method::DELETE,
            "/v2/api_keys/{id}",
            F::ApiKey,
            "api_keys:manage",
            200,
            404,
            none,
        ),
        r(
            Method::GET,
            "/v2/verify_profiles",
            F::None,
            "verify:read",
            200,
            200,
            none,
        ),
        r(
            Method::POST,
            "/v2/verify_profiles",
            F::None,
            "verify:manage",
            200,
            200,
            |_| Some(json!({ "name": format!("v {}", uuid::Uuid::new_v4().simple()) })),
        ),
        r(
            Method::GET,
            "/v2/verify_profiles/{id}",
            F::VerifyProfile,
            "verify:read",
            200,
            404,
            none,
        ),
        r(
            Method::PATCH,
            "/v2/verify_profiles/{id}",
            F::VerifyProfile,
            "verify:manage",
            200,
            404,
            |_| Some(json!({ "name": "renamed" })),
        ),
        r(
            Method::DELETE,
            "/v2/verify_profiles/{id}",
            F::VerifyProfile,
            "verify:manage",
            200,
            404,
            none,
        ),
        r(
            Method::GET,
            "/v2/verify_profiles/templates",
            F::None,
            "verify:read",
            200,
            200,
            none,
        ),
        r(
            Method::GET,
            "/v2/public_key",
            F::None,
            "verify:read",
            200,
            200,
            none,
        ),
        r(
            Method::GET,
            "/v2/webhook_endpoints",
            F::None,
            "webhooks:read",
            200,
            200,
            none,
        ),
        r(
            Method::POST,
            "/v2/webhook_endpoints",
            F::None,
            "webhooks:manage",
            201,
            201,
            |_| Some(json!({ "url": "http://127.0.0.1:9/hook", "event_types": ["user.enabled"] })),
        ),
        r(
            Method::GET,
            "/v2/webhook_endpoints/{id}",
            F::WebhookEndpoint,
            "webhooks:read",
            200,
            404,
            none,
        ),
        r(
            Method::PATCH,
            "/v2/webhook_endpoints/{id}",
            F::WebhookEndpoint,
            "webhooks:manage",
            200,
            404,
            |_| Some(json!({ "description": "renamed" })),
        ),
        r(
            Method::DELETE,
            "/v2/webhook_endpoints/{id}",
            F::WebhookEndpoint,
            "webhooks:manage",
            200,
            404,
            none,
        ),
        r(
            Method::POST,
            "/v2/webhook_endpoints/{id}/actions/rotate_secret",
            F::WebhookEndpoint,
            "webhooks:manage",
            200,
            404,
            empty,
        ),
        r(
            Method::POST,
            "/v2/webhook_endpoints/{id}/actions/redeliver",
            F::WebhookEndpoint,
            "webhooks:manage",
            202,
            404,
            |_| Some(json!({ "from_position": 1 })),
        ),
        r(
            Method::GET,
            "/v2/webhook_deliveries",
            F::None,
            "webhooks:read",
            200,
            200,
            none,
        ),
        r(
            Method::GET,
            "/v2/webhook_deliveries/{id}",
            F::WebhookDelivery,
            "webhooks:read",
            200,
            404,
            none,
        ),
        r(
            Method::POST,
            "/v2/webhook_deliveries/{id}/actions/redeliver",
            F::WebhookDelivery,
            "webhooks:manage",
            202,
            404,
            empty,
        ),
        r(
            Method::GET,
            "/v2/audit_events",
            F::None,
            "audit:read",
            200,
            200,
            none,
        ),
        r(
            Method::GET,
            "/v2/audit/streams/{id}/events",
            F::OrgStream,
            "audit:read",
            200,
            404,
            none,
        ),
        r(
            Method::GET,
            "/v2/audit/streams/{id}/state",
            F::OrgStream,
            "audit:read",
            200,
            404,
            none,
        ),
        r(
            Method::GET,
            "/v2/audit/streams/{id}/verify",
            F::OrgStream,
            "audit:read",
            200,
            404,
            none,
        ),
    ]
}

#[tokio::test]
async fn every_endpoint_by_every_kind_of_caller() {
    let (app, sink) = spawn_app_with_sink(Backend::Sqlite).await;
    let (_, owner) = app.owner().await;
    let (_, other) = app.owner().await;
    let mut world = World {
        app,
        sink,
        owner: Caller {
            token: owner,
            password: PASSWORD,
        },
        other: Caller {
            token: other,
            password: PASSWORD,
        },
        subs: HashMap::new(),
    };
    let mut failures = Vec::new();
    for row in rows() {
        for who in [Who::Without, Who::OtherOrg, Who::With, Who::Owner] {
            let (token, password) = world.caller(who, row.permission).await;
            let id = world.fresh(row.fixture, &token, who).await;
            let path = row.path.replace("{id}", &id);
            let expected = match who {
                Who::Owner | Who::With => row.ok,
                Who::Without => 403,
                Who::OtherOrg => row.other,
            };
            let r = world
                .app
                .request(
                    row.method.clone(),
                    &path,
                    Some(&token),
                    (row.body)(password),
                )
                .await;
            if r.status.as_u16() != expected {
                failures.push(format!(
                    "{who:?} {} {path} ({}): expected {expected}, got {} {}",
                    row.method, row.permission, r.status, r.text
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Endpoints about oneself need no permission.
    let (token, _) = world.caller(Who::Without, "users:read").await;
    for path in ["/v2/users/me", "/v2/permissions", "/v2/users/me/two_factor"] {
        assert_eq!(world.app.get(path, &token).await.status, 200, "{path}");
    }
    // The two-factor policy is a security setting even on the organization's PATCH.
    let (token, _) = world.caller(Who::With, "organization:manage").await;
    let r = world
        .app
        .request(
            Method::PATCH,
            "/v2/organization",
            Some(&token),
            Some(json!({ "two_factor_policy": { "required": true } })),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
    // An accepted invitation token is no credential.
    let (_, invitation_token) = invite(
        &world.app,
        &world.sink,
        &world.owner.token,
        "tok@example.com",
        &[],
    )
    .await;
    assert_eq!(
        world
            .app
            .get("/v2/users/me", &invitation_token)
            .await
            .status,
        401
    );
    assert_eq!(accept(&world.app, &invitation_token).await.status, 201);
}
