//! Organizations with sub-users: invitations, permission groups with enforced permissions,
//! member management, API keys, tenant isolation.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{spawn_app_with_sink, Backend, MessageSink, TestApp, PASSWORD};

const SUB_PASSWORD: &str = "a sub-user's own long passphrase";

/// Creates a permission group as `token`; returns its id.
pub async fn group(app: &TestApp, token: &str, name: &str, permissions: &[&str]) -> String {
    let r = app
        .post(
            "/v2/organization/permission_groups",
            Some(token),
            json!({ "name": name, "permissions": permissions }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.data()["id"].as_str().expect("id").to_owned()
}

/// Invites `email` into `groups` as `token` and returns (invitation id, emailed token).
pub async fn invite(
    app: &TestApp,
    sink: &MessageSink,
    token: &str,
    email: &str,
    groups: &[&str],
) -> (String, String) {
    let r = app
        .post(
            "/v2/organization/invitations",
            Some(token),
            json!({ "email": email, "permission_group_ids": groups }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.data()["status"], "pending");
    let message = sink.all().last().cloned().expect("an invitation email");
    assert_eq!(message["channel"], "email");
    assert_eq!(message["to"], email);
    assert_eq!(message["purpose"], "invitation");
    let invitation_token = message["code"].as_str().expect("token").to_owned();
    assert!(message["message"]
        .as_str()
        .unwrap_or_default()
        .contains(&invitation_token));
    (
        r.data()["id"].as_str().expect("id").to_owned(),
        invitation_token,
    )
}

pub async fn accept(app: &TestApp, invitation_token: &str) -> crate::helpers::Reply {
    app.post(
        "/v2/invitations/actions/accept",
        None,
        json!({ "token": invitation_token, "password": SUB_PASSWORD,
                "first_name": "Grace", "last_name": "Hopper" }),
    )
    .await
}

/// Invites and accepts a fresh sub-user in `groups`; returns (user id, email, session token).
pub async fn sub_user(
    app: &TestApp,
    sink: &MessageSink,
    owner: &str,
    groups: &[&str],
) -> (String, String, String) {
    let email = format!("sub-{}@example.com", uuid::Uuid::new_v4().simple());
    let (_, invitation_token) = invite(app, sink, owner, &email, groups).await;
    let r = accept(app, &invitation_token).await;
    assert_eq!(r.status, 201, "{}", r.text);
    (
        r.data()["id"].as_str().expect("id").to_owned(),
        email,
        r.data()["session"]["token"]
            .as_str()
            .expect("token")
            .to_owned(),
    )
}

async fn api_key(app: &TestApp, token: &str) -> (String, String) {
    let r = app
        .post("/v2/api_keys", Some(token), json!({ "name": "deploys" }))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    (
        r.data()["id"].as_str().expect("id").to_owned(),
        r.data()["secret"].as_str().expect("secret").to_owned(),
    )
}

async fn whole_flow(backend: Backend) {
    let (app, sink) = spawn_app_with_sink(backend).await;
    let (_, owner) = app.owner().await;
    let support = group(&app, &owner, "Support", &["users:read"]).await;

    // Invite → the token arrives by email → accept: a signed-in sub-user.
    let email = "grace@example.com";
    let (invitation_id, invitation_token) = invite(&app, &sink, &owner, email, &[&support]).await;
    let r = accept(&app, &invitation_token).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.data()["record_type"], "organization_sub_user");
    assert_eq!(r.data()["email"], email);
    let sub_id = r.data()["id"].as_str().unwrap().to_owned();
    let sub = r.data()["session"]["token"].as_str().unwrap().to_owned();
    let r = accept(&app, &invitation_token).await;
    assert_eq!(r.status, 404, "single use: {}", r.text);
    assert_eq!(r.code(), "invitation_invalid");
    let r = app
        .get(
            &format!("/v2/organization/invitations/{invitation_id}"),
            &owner,
        )
        .await;
    assert_eq!(r.data()["status"], "accepted");
    assert_eq!(r.data()["user_id"], sub_id.as_str());

    // The sub-user can sign in with their own password and sees only what Support allows.
    let r = app.sign_in_with(email, SUB_PASSWORD).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = app.get("/v2/organizations/users", &sub).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["meta"]["total_results"], 2);
    assert_eq!(r.data()[0]["record_type"], "organization_owner");
    let r = app
        .post(
            "/v2/organization/invitations",
            Some(&sub),
            json!({ "email": "x@example.com" }),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(app.get("/v2/organization", &sub).await.status, 403);
    assert_eq!(
        app.post("/v2/api_keys", Some(&sub), json!({ "name": "k" }))
            .await
            .status,
        403
    );

    // The owner widens their groups: the next request has the new rights.
    let admins = group(&app, &owner, "Admins", &["users:manage", "api_keys:manage"]).await;
    let auditors = group(&app, &owner, "Auditors", &["audit:read"]).await;
    let r = app
        .request(
            Method::PUT,
            &format!("/v2/organizations/users/{sub_id}/permission_groups"),
            Some(&owner),
            Some(json!({ "permission_group_ids": [support, admins] })),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["groups"].as_array().map(Vec::len), Some(2));
    let (_, other_invite) = invite(&app, &sink, &sub, "linus@example.com", &[&support]).await;
    assert!(!other_invite.is_empty());
    let (key_id, key) = api_key(&app, &sub).await;

    // …but cannot give themselves more than they hold, nor touch the owner.
    let r = app
        .request(
            Method::PUT,
            &format!("/v2/organizations/users/{sub_id}/permission_groups"),
            Some(&sub),
            Some(json!({ "permission_group_ids": [support, admins, auditors] })),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
    let r = app
        .post(
            "/v2/organization/permission_groups",
            Some(&sub),
            json!({ "name": "Mine", "permissions": ["audit:read"] }),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
    let owner_id = app.get("/v2/users/me", &owner).await.data()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = app
        .post(
            &format!("/v2/organizations/users/{owner_id}/actions/remove"),
            Some(&sub),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text);

    // The API key acts as its user; its use is recorded.
    let r = app.get("/v2/users/me", &key).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["id"], sub_id.as_str());
    let r = app.get("/v2/api_keys", &sub).await;
    assert_eq!(r.data()[0]["id"], key_id.as_str());
    assert!(r.data()[0]["last_used_at"].is_string(), "{}", r.text);
    assert!(r.data()[0].get("secret").is_none());

    // Groups removed: the very next request is refused.
    let r = app
        .request(
            Method::PUT,
            &format!("/v2/organizations/users/{sub_id}/permission_groups"),
            Some(&owner),
            Some(json!({ "permission_group_ids": [] })),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(app.get("/v2/organizations/users", &sub).await.status, 403);
    assert_eq!(app.get("/v2/organizations/users", &key).await.status, 403);

    // Removal ends the session and the key at once, and the sign-in.
    let r = app
        .post(
            &format!("/v2/organizations/users/{sub_id}/actions/remove"),
            Some(&owner),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(app.get("/v2/users/me", &sub).await.status, 401);
    assert_eq!(app.get("/v2/users/me", &key).await.status, 401);
    let r = app.sign_in_with(email, SUB_PASSWORD).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.code(), "invalid_credentials");
    let r = app
        .get(&format!("/v2/organizations/users/{sub_id}"), &owner)
        .await;
    assert_eq!(r.status, 404);
    // The address is free again.
    let (_, again) = invite(&app, &sink, &owner, email, &[]).await;
    assert_eq!(accept(&app, &again).await.status, 201);

    // The members read model rebuilt from the log equals the live one.
    let pool = &app.state.db.pool;
    let live = warden_projections::members::dump(pool).await.unwrap();
    assert!(!live.0.is_empty() && !live.1.is_empty() && !live.2.is_empty());
    app.state
        .projections
        .rebuild("members", |_, _| {})
        .await
        .unwrap();
    assert_eq!(warden_projections::members::dump(pool).await.unwrap(), live);
}

#[tokio::test]
async fn invite_accept_permissions_and_removal_on_sqlite() {
    whole_flow(Backend::Sqlite).await;
}

#[tokio::test]
async fn invite_accept_permissions_and_removal_on_postgres() {
    whole_flow(Backend::Postgres).await;
}

#[tokio::test]
async fn invitations_conflict_resend_revoke_and_expire() {
    let (app, sink) = spawn_app_with_sink(Backend::Sqlite).await;
    let (owner_email, owner) = app.owner().await;

    // An address with an account, or with a pending invitation, is a clear 409.
    let r = app
        .post(
            "/v2/organization/invitations",
            Some(&owner),
            json!({ "email": owner_email }),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert_eq!(r.code(), "email_taken");
    let (id, first) = invite(&app, &sink, &owner, "pat@example.com", &[]).await;
    let r = app
        .post(
            "/v2/organization/invitations",
            Some(&owner),
            json!({ "email": "PAT@example.com" }),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert_eq!(r.code(), "already_invited");

    // Resend: a fresh token; the old one is void.
    let r = app
        .post(
            &format!("/v2/organization/invitations/{id}/actions/resend"),
            Some(&owner),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let second = sink.last_code();
    assert_ne!(first, second);
    assert_eq!(accept(&app, &first).await.code(), "invitation_invalid");

    // Revoke: no token works.
    let r = app
        .request(
            Method::DELETE,
            &format!("/v2/organization/invitations/{id}"),
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["status"], "revoked");
    assert_eq!(accept(&app, &second).await.code(), "invitation_invalid");

    // Expiry after 7 days, driven by the clock.
    let (id, token) = invite(&app, &sink, &owner, "sam@example.com", &[]).await;
    app.clock
        .advance(chrono::Duration::days(7) + chrono::Duration::seconds(1));
    let r = accept(&app, &token).await;
    assert_eq!(r.status, 404);
    let owner = {
        let r = app.sign_in_with(&owner_email, PASSWORD).await;
        r.data()["token"].as_str().unwrap().to_owned()
    };
    let r = app
        .get(&format!("/v2/organization/invitations/{id}"), &owner)
        .await;
    assert_eq!(r.data()["status"], "expired");
    // An expired invitation may be sent again, and then works.
    let (_, token) = invite(&app, &sink, &owner, "sam@example.com", &[]).await;
    assert_eq!(accept(&app, &token).await.status, 201);

    // Bad input writes nothing.
    let before = app.event_count().await;
    for body in [
        json!({ "email": "not-an-address" }),
        json!({ "email": "ok@example.com", "permission_group_ids": ["nope"] }),
        json!({ "email": "ok@example.com", "permission_group_ids": [uuid::Uuid::now_v7()] }),
    ] {
        let r = app
            .post("/v2/organization/invitations", Some(&owner), body)
            .await;
        assert_eq!(r.status, 422, "{}", r.text);
    }
    let r = app
        .post(
            "/v2/invitations/actions/accept",
            None,
            json!({ "token": "wdn_i_unknown", "password": SUB_PASSWORD, "first_name": "A", "last_name": "B" }),
        )
        .await;
    assert_eq!(r.status, 404);
    let r = app
        .post(
            "/v2/organization/permission_groups",
            Some(&owner),
            json!({ "name": "X", "permissions": ["users:fly"] }),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.pointer(), "/permissions/0");
    assert_eq!(app.event_count().await, before, "refusals wrote nothing");
}

#[tokio::test]
async fn a_weak_password_is_refused_on_acceptance_and_the_invitation_stays_usable() {
    let (app, sink) = spawn_app_with_sink(Backend::Sqlite).await;
    let (_, owner) = app.owner().await;
    let (_, token) = invite(&app, &sink, &owner, "weak@example.com", &[]).await;
    let r = app
        .post(
            "/v2/invitations/actions/accept",
            None,
            json!({ "token": token, "password": "short", "first_name": "A", "last_name": "B" }),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.pointer(), "/password");
    assert_eq!(accept(&app, &token).await.status, 201);
}

#[tokio::test]
async fn another_organization_sees_nothing_and_changes_nothing() {
    let (app, sink) = spawn_app_with_sink(Backend::Sqlite).await;
    let (_, owner_a) = app.owner().await;
    let (_, owner_b) = app.owner().await;
    let group_a = group(&app, &owner_a, "A team", &["users:read"]).await;
    let (sub_a, sub_email, sub_token) = sub_user(&app, &sink, &owner_a, &[&group_a]).await;
    let (invitation_a, _) = invite(&app, &sink, &owner_a, "pending@example.com", &[]).await;
    let (key_a, _) = api_key(&app, &owner_a).await;
    let before = app.event_count().await;

    let cases: Vec<(Method, String, Option<Value>)> = vec![
        (
            Method::GET,
            format!("/v2/organizations/users/{sub_a}"),
            None,
        ),
        (
            Method::PUT,
            format!("/v2/organizations/users/{sub_a}/permission_groups"),
            Some(json!({ "permission_group_ids": [] })),
        ),
        (
            Method::POST,
            format!("/v2/organizations/users/{sub_a}/actions/remove"),
            Some(json!({})),
        ),
        (
            Method::POST,
            format!("/v2/organizations/users/{sub_a}/actions/reset_two_factor"),
            Some(json!({})),
        ),
        (
            Method::GET,
            format!("/v2/organization/permission_groups/{group_a}"),
            None,
        ),
        (
            Method::PATCH,
            format!("/v2/organization/permission_groups/{group_a}"),
            Some(json!({ "name": "mine now" })),
        ),
        (
            Method::DELETE,
            format!("/v2/organization/permission_groups/{group_a}"),
            None,
        ),
        (
            Method::GET,
            format!("/v2/organization/invitations/{invitation_a}"),
            None,
        ),
        (
            Method::DELETE,
            format!("/v2/organization/invitations/{invitation_a}"),
            None,
        ),
        (
            Method::POST,
            format!("/v2/organization/invitations/{invitation_a}/actions/resend"),
            Some(json!({})),
        ),
        (Method::DELETE, format!("/v2/api_keys/{key_a}"), None),
        (
            Method::POST,
            format!("/v2/api_keys/{key_a}/actions/rotate"),
            Some(json!({})),
        ),
    ];
    for (method, path, body) in cases {
        let r = app
            .request(method.clone(), &path, Some(&owner_b), body)
            .await;
        assert_eq!(r.status, 404, "{method} {path}: {}", r.text);
    }
    // Lists show only B's own organization.
    let r = app.get("/v2/organizations/users", &owner_b).await;
    assert_eq!(r.body["meta"]["total_results"], 1, "{}", r.text);
    assert!(!r.text.contains(&sub_email));
    let r = app
        .get("/v2/organization/permission_groups", &owner_b)
        .await;
    assert_eq!(r.body["meta"]["total_results"], 0);
    let r = app.get("/v2/organization/invitations", &owner_b).await;
    assert_eq!(r.body["meta"]["total_results"], 0);
    // B cannot put A's group on B's own members.
    let group_b = group(&app, &owner_b, "B team", &[]).await;
    let (sub_b, _, _) = sub_user(&app, &sink, &owner_b, &[&group_b]).await;
    let r = app
        .request(
            Method::PUT,
            &format!("/v2/organizations/users/{sub_b}/permission_groups"),
            Some(&owner_b),
            Some(json!({ "permission_group_ids": [group_a] })),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.code(), "unknown_permission_group");
    // A's data is untouched.
    assert_eq!(app.get("/v2/users/me", &sub_token).await.status, 200);
    let after: Vec<String> = app
        .event_types_after(before)
        .await
        .into_iter()
        .filter(|t| !t.starts_with("organization.permission_group") && !t.contains("invit"))
        .filter(|t| !t.starts_with("user.registered") && !t.starts_with("user.session"))
        .collect();
    assert!(after.is_empty(), "B changed A: {after:?}");
}

#[tokio::test]
async fn disabled_members_are_locked_out_until_enabled() {
    let (app, sink) = spawn_app_with_sink(Backend::Sqlite).await;
    let (_, owner) = app.owner().await;
    let keys = group(&app, &owner, "Keys", &["api_keys:manage"]).await;
    let (sub_id, email, sub) = sub_user(&app, &sink, &owner, &[&keys]).await;
    let (_, key) = api_key(&app, &sub).await;
    let action = |a: &str| format!("/v2/organizations/users/{sub_id}/actions/{a}");

    let r = app.post(&action("disable"), Some(&owner), json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["user_status"], "disabled");
    assert_eq!(app.get("/v2/users/me", &sub).await.status, 401);
    assert_eq!(app.get("/v2/users/me", &key).await.status, 401);
    assert_eq!(app.sign_in_with(&email, SUB_PASSWORD).await.status, 401);
    let r = app
        .get(
            "/v2/organizations/users?filter[user_status]=disabled",
            &owner,
        )
        .await;
    assert_eq!(r.body["meta"]["total_results"], 1, "{}", r.text);

    let r = app.post(&action("enable"), Some(&owner), json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(app.get("/v2/users/me", &key).await.status, 200);
    assert_eq!(
        app.get("/v2/users/me", &sub).await.status,
        401,
        "sessions ended by disabling stay ended"
    );
    assert_eq!(app.sign_in_with(&email, SUB_PASSWORD).await.status, 201);
    let r = app.post(&action("fly"), Some(&owner), json!({})).await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn api_keys_rotate_and_revoke_and_ignore_two_factor() {
    let (app, _sink) = spawn_app_with_sink(Backend::Sqlite).await;
    let (email, owner) = app.owner().await;
    let (key_id, old) = api_key(&app, &owner).await;
    crate::helpers::enable_totp(&app, &owner).await;
    // 2FA on: a password alone no longer signs in, but the key still works.
    let r = app.sign_in_with(&email, PASSWORD).await;
    assert_eq!(r.data()["record_type"], "two_factor_challenge");
    assert_eq!(app.get("/v2/users/me", &old).await.status, 200);

    let r = app
        .post(
            &format!("/v2/api_keys/{key_id}/actions/rotate"),
            Some(&owner),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let new = r.data()["secret"].as_str().unwrap().to_owned();
    assert!(new.starts_with("wdn_k_"));
    assert!(new.starts_with(r.data()["prefix"].as_str().unwrap()));
    assert_eq!(app.get("/v2/users/me", &old).await.status, 401);
    assert_eq!(app.get("/v2/users/me", &new).await.status, 200);

    let r = app
        .request(
            Method::DELETE,
            &format!("/v2/api_keys/{key_id}"),
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(app.get("/v2/users/me", &new).await.status, 401);
    let r = app.get("/v2/api_keys", &owner).await;
    assert_eq!(r.body["meta"]["total_results"], 0);
    let r = app
        .post("/v2/api_keys", Some(&owner), json!({ "name": " " }))
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
}

#[tokio::test]
async fn the_owner_resets_a_members_two_factor_and_both_are_told() {
    let (app, sink) = spawn_app_with_sink(Backend::Sqlite).await;
    let (owner_email, owner) = app.owner().await;
    let (sub_id, email, sub) = sub_user(&app, &sink, &owner, &[]).await;
    crate::helpers::enable_totp(&app, &sub).await;
    let sent_before = sink.all().len();

    let r = app
        .post(
            &format!("/v2/organizations/users/{sub_id}/actions/reset_two_factor"),
            Some(&owner),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["two_factor"]["enabled"], false);
    let notices: Vec<String> = sink.all()[sent_before..]
        .iter()
        .filter(|m| m["purpose"] == "notice")
        .map(|m| m["to"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(notices.contains(&email), "{notices:?}");
    assert!(notices.contains(&owner_email), "{notices:?}");

    // Next sign-in: a session that may only enroll.
    let r = app.sign_in_with(&email, SUB_PASSWORD).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.data()["record_type"], "session");
    assert_eq!(r.data()["two_factor_setup_required"], true);
    let token = r.data()["token"].as_str().unwrap().to_owned();
    let r = app.get("/v2/organizations/users", &token).await;
    assert_eq!(r.code(), "two_factor_setup_required");
    crate::helpers::enable_totp(&app, &token).await;
    let r = app.sign_in_with(&email, SUB_PASSWORD).await;
    assert_eq!(r.data()["record_type"], "two_factor_challenge");

    // Nobody resets the owner this way.
    let owner_id = app.get("/v2/users/me", &owner).await.data()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = app
        .post(
            &format!("/v2/organizations/users/{owner_id}/actions/reset_two_factor"),
            Some(&owner),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
    let _ = sub;
}

#[tokio::test]
async fn a_member_blocked_after_100_wrong_codes_is_unblocked_by_the_owner() {
    let (app, sink) = spawn_app_with_sink(Backend::Sqlite).await;
    let (_, owner) = app.owner().await;
    let (sub_id, email, sub) = sub_user(&app, &sink, &owner, &[]).await;
    let (secret, _) = crate::helpers::enable_totp(&app, &sub).await;
    let mut failures = 0;
    while failures < 100 {
        let r = app.sign_in_with(&email, SUB_PASSWORD).await;
        assert_eq!(r.status, 201, "{}", r.text);
        let challenge = r.data()["challenge_id"].as_str().unwrap().to_owned();
        for _ in 0..5 {
            if failures == 100 {
                break;
            }
            let r = app
                .post(
                    &format!("/v2/two_factor_challenges/{challenge}/actions/verify"),
                    None,
                    json!({ "code": "000000" }),
                )
                .await;
            assert!(r.status.is_client_error(), "{}", r.text);
            failures += 1;
        }
    }
    let r = app.sign_in_with(&email, SUB_PASSWORD).await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(r.code(), "second_factor_blocked");
    // Failed answers return before the read models catch up; the list is eventually right.
    let head = app.event_count().await;
    app.state.caught_up(Some(head)).await.expect("caught up");
    let r = app
        .get(
            "/v2/organizations/users?filter[user_status]=blocked",
            &owner,
        )
        .await;
    assert_eq!(r.body["meta"]["total_results"], 1, "{}", r.text);

    let r = app
        .post(
            &format!("/v2/organizations/users/{sub_id}/actions/unblock_two_factor"),
            Some(&owner),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["user_status"], "enabled");
    let r = app.sign_in_with(&email, SUB_PASSWORD).await;
    let challenge = r.data()["challenge_id"].as_str().unwrap().to_owned();
    use warden_commands::{otp, Clock};
    let code = otp::totp_at(&secret, otp::totp_step(app.clock.now()));
    let r = app
        .post(
            &format!("/v2/two_factor_challenges/{challenge}/actions/verify"),
            None,
            json!({ "code": code }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
}

#[tokio::test]
async fn members_list_filters_pages_and_includes_groups() {
    let (app, sink) = spawn_app_with_sink(Backend::Sqlite).await;
    let (_, owner) = app.owner().await;
    let g = group(&app, &owner, "Ops", &["verify:read"]).await;
    for _ in 0..3 {
        sub_user(&app, &sink, &owner, &[&g]).await;
    }
    let r = app
        .get(
            "/v2/organizations/users?page[size]=2&page[number]=2&include_groups=true",
            &owner,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["meta"]["total_results"], 4);
    assert_eq!(r.body["meta"]["total_pages"], 2);
    assert_eq!(r.data().as_array().map(Vec::len), Some(2));
    assert_eq!(r.data()[0]["groups"][0]["name"], "Ops");
    assert_eq!(r.data()[0]["groups"][0]["id"], g.as_str());
    let r = app
        .get("/v2/organizations/users?filter[email]=SUB-", &owner)
        .await;
    assert_eq!(r.body["meta"]["total_results"], 3);
    assert!(r.data()[0].get("groups").is_none());
    for bad in [
        "page[size]=251",
        "page[number]=0",
        "filter[user_status]=gone",
        "include_groups=maybe",
    ] {
        let r = app
            .get(&format!("/v2/organizations/users?{bad}"), &owner)
            .await;
        assert_eq!(r.status, 422, "{bad}: {}", r.text);
    }
    let r = app.get("/v2/permissions", &owner).await;
    assert!(r.data().as_array().map(Vec::len).unwrap_or(0) >= 8);
}
