//! Sign-up and the first-slice profile flows, and bad input writing nothing.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn sign_up_creates_an_organization_with_its_owner() {
    let app = spawn_app().await;
    let r = app.sign_up("ada@example.com").await;
    assert_eq!(r.status, 201, "{}", r.text);
    let org = r.data();
    assert_eq!(org["record_type"], "organization");
    assert_eq!(org["billing_currency"], "GBP");
    assert_eq!(org["company_name"], "Analytical Engines");
    assert_eq!(org["owner"]["record_type"], "organization_owner");
    assert_eq!(org["owner"]["email"], "ada@example.com");
    assert_eq!(org["owner"]["organization_id"], org["id"]);
    assert_eq!(org["owner_user_id"], org["owner"]["id"]);
}

#[tokio::test]
async fn a_duplicate_email_is_409_and_writes_nothing() {
    let app = spawn_app().await;
    assert_eq!(app.sign_up("ada@example.com").await.status, 201);
    let before = app.event_count().await;
    let r = app.sign_up("ADA@example.com").await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert_eq!(r.code(), "email_taken");
    assert_eq!(r.pointer(), "/email");
    assert_eq!(app.event_count().await, before);
}

#[tokio::test]
async fn malformed_json_is_400_and_bad_fields_are_422_with_pointers() {
    let app = spawn_app().await;
    let r = app
        .raw(reqwest::Method::POST, "/v2/accounts", &[], "{\"email\": ")
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.code(), "malformed_json");

    let r = app
        .post("/v2/accounts", None, json!({ "password": PASSWORD }))
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.code(), "required");
    assert_eq!(r.pointer(), "/email");

    let r = app
        .post(
            "/v2/accounts",
            None,
            json!({ "email": "not-an-email", "password": "short", "first_name": "A", "last_name": " ",
                    "billing_currency": "XXX" }),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    let pointers: Vec<&str> = r.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["source"]["pointer"].as_str().unwrap())
        .collect();
    assert_eq!(
        pointers,
        ["/email", "/password", "/last_name", "/billing_currency"]
    );

    let r = app
        .post(
            "/v2/accounts",
            None,
            json!({ "email": 5, "password": PASSWORD, "first_name": "A",
            "last_name": "B", "billing_currency": "USD" }),
        )
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.pointer(), "/email");
    assert_eq!(app.event_count().await, 0, "bad input writes nothing");
}

#[tokio::test]
async fn passwords_follow_nist_rules() {
    let app = spawn_app().await;
    let try_pw = |email: &'static str, pw: String| {
        let app = &app;
        async move {
            app.post(
                "/v2/accounts",
                None,
                json!({ "email": email, "password": pw, "first_name": "A",
                "last_name": "B", "billing_currency": "USD" }),
            )
            .await
        }
    };
    let r = try_pw("a@example.com", "fourteen chars".into()).await;
    assert_eq!((r.status.as_u16(), r.code()), (422, "password_too_short"));
    let r = try_pw("b@example.com", "passwordpassword".into()).await;
    assert_eq!((r.status.as_u16(), r.code()), (422, "password_too_common"));
    let r = try_pw(
        "grace.hopper@example.com",
        "grace.hopper.grace.hopper".into(),
    )
    .await;
    assert_eq!((r.status.as_u16(), r.code()), (422, "password_too_common"));
    // 15 characters, no composition rules; 64 and 128 characters; unicode. A phrase that
    // only repeats itself is refused like any other guessable password.
    let r = try_pw("r@example.com", "long passphrase ".repeat(8)).await;
    assert_eq!((r.status.as_u16(), r.code()), (422, "password_too_common"));
    const LONG: &str =
        "the quick brown fox jumps over the lazy dog while seven wizards box and jolly \
        quartz judges vex my sphinx of black quartz okay!!";
    assert_eq!(LONG.chars().count(), 128);
    for (email, pw) in [
        ("c@example.com", "fifteen chars!!".to_owned()),
        ("d@example.com", "x".repeat(40) + &"y".repeat(24)),
        ("e@example.com", LONG.to_owned()),
        ("f@example.com", "čaj s mlékem a medem".to_owned()),
    ] {
        let r = try_pw(email, pw.clone()).await;
        assert_eq!(r.status, 201, "{pw}: {}", r.text);
        assert_eq!(app.sign_in_with(email, &pw).await.status, 201);
    }
    // No truncation: one more character is a different password.
    let pw = LONG;
    assert_eq!(
        app.sign_in_with("e@example.com", &format!("{pw}x"))
            .await
            .status,
        401
    );
    // NFC: é typed as e + combining accent signs in to the same account.
    assert_eq!(
        app.sign_in_with("f@example.com", "čaj s mle\u{301}kem a medem")
            .await
            .status,
        201
    );
}

#[tokio::test]
async fn the_profile_can_be_read_and_changed() {
    let app = spawn_app().await;
    let (email, token) = app.owner().await;
    let me = app.get("/v2/users/me", &token).await;
    assert_eq!(me.status, 200);
    assert_eq!(me.data()["email"], email.as_str());
    assert_eq!(me.data()["record_type"], "organization_owner");
    assert_eq!(me.data()["two_factor"]["enabled"], false);

    let r = app
        .request(
            reqwest::Method::PATCH,
            "/v2/users/me",
            Some(&token),
            Some(json!({ "first_name": "Augusta", "phone_number": "+442071234567" })),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["first_name"], "Augusta");
    assert_eq!(r.data()["last_name"], "Lovelace");
    assert_eq!(r.data()["phone_number"], "+442071234567");

    let before = app.event_count().await;
    let r = app
        .request(
            reqwest::Method::PATCH,
            "/v2/users/me",
            Some(&token),
            Some(json!({ "phone_number": "2071234567" })),
        )
        .await;
    assert_eq!((r.status.as_u16(), r.pointer()), (422, "/phone_number"));
    assert_eq!(app.event_count().await, before);
}

#[tokio::test]
async fn changing_email_needs_the_current_password_and_moves_the_claim() {
    let app = spawn_app().await;
    let (email, token) = app.owner().await;
    let other = format!("other-{email}");
    assert_eq!(app.sign_up(&other).await.status, 201);

    let before = app.event_count().await;
    let r = app.post("/v2/users/me/actions/change_email", Some(&token),
        json!({ "new_email": "new@example.com", "current_password": "wrong password entirely" })).await;
    assert_eq!(r.status, 403, "{}", r.text);
    let r = app
        .post(
            "/v2/users/me/actions/change_email",
            Some(&token),
            json!({ "new_email": other, "current_password": PASSWORD }),
        )
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (409, "email_taken"));
    app.only_failures_since(before).await;

    let r = app
        .post(
            "/v2/users/me/actions/change_email",
            Some(&token),
            json!({ "new_email": "new@example.com", "current_password": PASSWORD }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["email"], "new@example.com");
    assert_eq!(
        app.sign_in_with("new@example.com", PASSWORD).await.status,
        201
    );
    assert_eq!(app.sign_in_with(&email, PASSWORD).await.status, 401);
    // The old address is free again.
    assert_eq!(app.sign_up(&email).await.status, 201);
}

#[tokio::test]
async fn data_survives_a_restart_on_the_embedded_default() {
    let app = spawn_app().await;
    let (email, _) = app.owner().await;
    let settings = app.stop().await;
    let app = spawn_with(settings).await;
    let r = app.sign_in_with(&email, PASSWORD).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let token = r.data()["token"].as_str().unwrap().to_owned();
    assert_eq!(
        app.get("/v2/users/me", &token).await.data()["email"],
        email.as_str()
    );
}

#[tokio::test]
async fn the_same_flows_work_on_postgres() {
    let app = spawn_app_on(Backend::Postgres).await;
    let (email, token) = app.owner().await;
    assert_eq!(
        app.get("/v2/users/me", &token).await.data()["email"],
        email.as_str()
    );
    assert_eq!(app.sign_up(&email).await.status, 409);
    let r = app
        .post(
            "/v2/users/me/actions/change_password",
            Some(&token),
            json!({ "current_password": PASSWORD, "new_password": "a different long passphrase" }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        app.sign_in_with(&email, "a different long passphrase")
            .await
            .status,
        201
    );
}
