//! Sign-in, sign-out, lifetimes and the sign-in attempt limit (time is driven, not slept).

use chrono::Duration;
use reqwest::Method;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn unknown_email_and_wrong_password_look_the_same() {
    let app = spawn_app().await;
    let (email, _) = app.owner().await;
    let wrong = app
        .sign_in_with(&email, "not the right password at all")
        .await;
    let unknown = app.sign_in_with("nobody@example.com", PASSWORD).await;
    assert_eq!(wrong.status, 401);
    assert_eq!(unknown.status, 401);
    assert_eq!(wrong.code(), "invalid_credentials");
    assert_eq!(wrong.text, unknown.text, "byte-identical bodies");
}

#[tokio::test]
async fn a_session_token_works_until_sign_out() {
    let app = spawn_app().await;
    let (_, token) = app.owner().await;
    assert_eq!(app.get("/v2/users/me", &token).await.status, 200);
    let r = app
        .request(Method::DELETE, "/v2/sessions/current", Some(&token), None)
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = app.get("/v2/users/me", &token).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.code(), "unauthorized");
    assert_eq!(app.get("/v2/users/me", "wdn_s_madeup").await.status, 401);
    assert_eq!(
        app.request(Method::GET, "/v2/users/me", None, None)
            .await
            .status,
        401
    );
}

#[tokio::test]
async fn sessions_end_after_an_idle_hour_and_after_a_day() {
    let app = spawn_app().await;
    let (email, token) = app.owner().await;
    app.clock.advance(Duration::minutes(59));
    assert_eq!(
        app.get("/v2/users/me", &token).await.status,
        200,
        "activity extends the idle timer"
    );
    app.clock.advance(Duration::minutes(59));
    assert_eq!(app.get("/v2/users/me", &token).await.status, 200);
    app.clock.advance(Duration::minutes(61));
    assert_eq!(
        app.get("/v2/users/me", &token).await.status,
        401,
        "idle for over an hour"
    );

    let token = app.sign_in_with(&email, PASSWORD).await.data()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    for _ in 0..25 {
        app.clock.advance(Duration::minutes(59));
        let _ = app.get("/v2/users/me", &token).await;
    }
    assert_eq!(
        app.get("/v2/users/me", &token).await.status,
        401,
        "past the 24 h lifetime"
    );
}

#[tokio::test]
async fn too_many_failed_sign_ins_are_throttled_for_a_minute() {
    let app = spawn_app().await;
    let (email, _) = app.owner().await;
    for _ in 0..5 {
        assert_eq!(
            app.sign_in_with(&email, "wrong wrong wrong wrong")
                .await
                .status,
            401
        );
    }
    let r = app.sign_in_with(&email, PASSWORD).await;
    assert_eq!(r.status, 429, "{}", r.text);
    assert_eq!(r.code(), "too_many_login_attempts");
    assert_eq!(
        r.body["errors"][0]["detail"],
        "You have exceeded the number of log in attempts allowed. Please wait a minute then try again."
    );
    assert!(r.headers.get("retry-after").is_some());
    app.clock.advance(Duration::seconds(61));
    assert_eq!(app.sign_in_with(&email, PASSWORD).await.status, 201);

    // Unknown addresses throttle the same way, so 429s reveal nothing.
    for _ in 0..5 {
        assert_eq!(
            app.sign_in_with("ghost@example.com", PASSWORD).await.status,
            401
        );
    }
    let r = app.sign_in_with("ghost@example.com", PASSWORD).await;
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (429, "too_many_login_attempts")
    );
}

#[tokio::test]
async fn changing_the_password_ends_other_sessions_and_needs_the_current_one() {
    let app = spawn_app().await;
    let (email, token) = app.owner().await;
    let other = app.sign_in_with(&email, PASSWORD).await.data()["token"]
        .as_str()
        .unwrap()
        .to_owned();

    let before = app.event_count().await;
    let r = app.post("/v2/users/me/actions/change_password", Some(&token),
        json!({ "current_password": "not it, not it at all", "new_password": "brand new long passphrase" })).await;
    assert_eq!((r.status.as_u16(), r.code()), (403, "invalid_password"));
    let r = app
        .post(
            "/v2/users/me/actions/change_password",
            Some(&token),
            json!({ "current_password": PASSWORD, "new_password": "short" }),
        )
        .await;
    assert_eq!((r.status.as_u16(), r.pointer()), (422, "/new_password"));
    app.only_failures_since(before).await;

    let r = app
        .post(
            "/v2/users/me/actions/change_password",
            Some(&token),
            json!({ "current_password": PASSWORD, "new_password": "brand new long passphrase" }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        app.get("/v2/users/me", &token).await.status,
        200,
        "the session that changed it lives"
    );
    assert_eq!(
        app.get("/v2/users/me", &other).await.status,
        401,
        "every other session ended"
    );
    assert_eq!(app.sign_in_with(&email, PASSWORD).await.status, 401);
    assert_eq!(
        app.sign_in_with(&email, "brand new long passphrase")
            .await
            .status,
        201
    );
}

/// Tokens are cached in memory per instance (`api::auth_cache`). A sign-out or a change
/// made through one instance reaches the other's cache through the other's projection
/// runner, which reads the events it did not apply and evicts what they touch. Checked on
/// the cache itself (entries are only ever removed by eviction, never by their 1 s TTL, so
/// this cannot pass by waiting), then over HTTP.
#[tokio::test]
async fn a_session_ended_on_one_instance_is_evicted_from_another_instances_cache() {
    let a = spawn_app_on(Backend::Postgres).await;
    let b = spawn_with_clock(a.settings.clone(), a.clock.clone()).await;
    let (_, token) = a.owner().await;
    let other = a.sign_in_with(&a.owner().await.0, PASSWORD).await;
    let other_token = other.data()["token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    // b's runner has made its first pass (it observes from then on): b caches both tokens.
    b.state
        .projections
        .catch_up_all()
        .await
        .expect("b's projection pass");
    for t in [&token, &other_token] {
        assert_eq!(b.get("/v2/users/me", t).await.status, 200);
    }
    assert_eq!(b.state.auth_cache.len(), 2, "b cached both tokens");

    let r = a
        .request(
            Method::PATCH,
            "/v2/users/me",
            Some(&other_token),
            Some(json!({ "first_name": "Grace" })),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = a
        .request(Method::DELETE, "/v2/sessions/current", Some(&token), None)
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(
        a.get("/v2/users/me", &token).await.status,
        401,
        "at once on a"
    );

    // One pass of b's runner (its own poll does the same within 200 ms) hears of a's
    // events and evicts both users' entries.
    b.state
        .projections
        .catch_up_all()
        .await
        .expect("b's projection pass");
    assert_eq!(b.state.auth_cache.len(), 0, "b evicted both entries");
    assert_eq!(b.get("/v2/users/me", &token).await.status, 401);
    assert_eq!(
        b.get("/v2/users/me", &other_token).await.data()["first_name"],
        "Grace"
    );
}
