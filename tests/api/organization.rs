//! The organization: profile, fixed billing currency, passphrase and PIN.

use reqwest::Method;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn the_profile_changes_but_the_billing_currency_does_not() {
    let app = spawn_app().await;
    let (_, token) = app.owner().await;
    let org = app.get("/v2/organization", &token).await;
    assert_eq!(org.status, 200);
    assert_eq!(org.data()["billing_currency"], "GBP");

    let r = app
        .request(
            Method::PATCH,
            "/v2/organization",
            Some(&token),
            Some(json!({
                "company_name": "Engines Ltd",
                "address": { "line1": "12 St James's Square", "city": "London", "country": "GB" },
                "contact": { "email": "ops@example.com", "phone_number": "+442071234567" }
            })),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["company_name"], "Engines Ltd");
    assert_eq!(r.data()["address"]["city"], "London");
    assert_eq!(r.data()["contact"]["email"], "ops@example.com");

    let before = app.event_count().await;
    let r = app
        .request(
            Method::PATCH,
            "/v2/organization",
            Some(&token),
            Some(json!({ "billing_currency": "EUR" })),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.code(), "billing_currency_immutable");
    let r = app
        .request(
            Method::PATCH,
            "/v2/organization",
            Some(&token),
            Some(json!({ "contact": { "email": "nope" }, "address": { "planet": "Mars" } })),
        )
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(app.event_count().await, before);
}

#[tokio::test]
async fn the_passphrase_and_pin_are_set_with_the_password_and_checked_with_a_limit() {
    let app = spawn_app().await;
    let (_, token) = app.owner().await;
    let r = app.request(Method::PUT, "/v2/organization/security_passphrase", Some(&token),
        Some(json!({ "passphrase": "purple monkey dishwasher", "current_password": "wrong password here" }))).await;
    assert_eq!(r.status, 403);
    let r = app
        .request(
            Method::PUT,
            "/v2/organization/security_passphrase",
            Some(&token),
            Some(json!({ "passphrase": "purple monkey dishwasher", "current_password": PASSWORD })),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = app
        .request(
            Method::PUT,
            "/v2/organization/port_out_pin",
            Some(&token),
            Some(json!({ "pin": "12ab", "current_password": PASSWORD })),
        )
        .await;
    assert_eq!((r.status.as_u16(), r.pointer()), (422, "/pin"));
    let r = app
        .request(
            Method::PUT,
            "/v2/organization/port_out_pin",
            Some(&token),
            Some(json!({ "pin": "482913", "current_password": PASSWORD })),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(
        app.get("/v2/organization", &token).await.data()["port_out_pin_set"],
        true
    );

    let check = |path: &'static str, body: serde_json::Value| {
        let app = &app;
        let token = token.clone();
        async move { app.post(path, Some(&token), body).await }
    };
    let r = check(
        "/v2/organization/security_passphrase/actions/verify",
        json!({ "passphrase": "purple monkey dishwasher" }),
    )
    .await;
    assert_eq!(r.data()["valid"], true);
    let r = check(
        "/v2/organization/port_out_pin/actions/verify",
        json!({ "pin": "482913" }),
    )
    .await;
    assert_eq!(r.data()["valid"], true);
    for _ in 0..5 {
        let r = check(
            "/v2/organization/port_out_pin/actions/verify",
            json!({ "pin": "000000" }),
        )
        .await;
        assert_eq!(
            (r.status.as_u16(), r.data()["valid"].as_bool()),
            (200, Some(false))
        );
    }
    let r = check(
        "/v2/organization/port_out_pin/actions/verify",
        json!({ "pin": "482913" }),
    )
    .await;
    assert_eq!((r.status.as_u16(), r.code()), (429, "too_many_requests"));
    assert_eq!(
        r.body["errors"][0]["detail"],
        "You have exceeded the maximum number of allowed requests."
    );
    app.clock.advance(chrono::Duration::minutes(16));
    let r = check(
        "/v2/organization/port_out_pin/actions/verify",
        json!({ "pin": "482913" }),
    )
    .await;
    assert_eq!(r.data()["valid"], true);
}
