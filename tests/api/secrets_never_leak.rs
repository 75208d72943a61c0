//! The plaintext secrets a test used never appear in the events table or the logs.

use reqwest::Method;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn no_password_passphrase_pin_or_token_in_events_or_logs() {
    let app = spawn_app().await;
    let password = format!("leak canary password {}", uuid::Uuid::new_v4().simple());
    let passphrase = format!("leak canary phrase {}", uuid::Uuid::new_v4().simple());
    let pin = format!("{}", 1_000_000 + rand::random::<u32>() % 8_000_000);
    let email = format!("canary-{}@example.com", uuid::Uuid::new_v4().simple());
    let r = app
        .post(
            "/v2/accounts",
            None,
            json!({ "email": email, "password": password, "first_name": "Canary",
        "last_name": "Bird", "billing_currency": "USD" }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = app.sign_in_with(&email, &password).await;
    let token = r.data()["token"].as_str().unwrap().to_owned();
    let _ = app
        .sign_in_with(&email, "a wrong password for the log")
        .await;
    let put = |path: &'static str, body: serde_json::Value| {
        let app = &app;
        let token = token.clone();
        async move {
            app.request(Method::PUT, path, Some(&token), Some(body))
                .await
        }
    };
    assert_eq!(
        put(
            "/v2/organization/security_passphrase",
            json!({ "passphrase": passphrase, "current_password": password })
        )
        .await
        .status,
        204
    );
    assert_eq!(
        put(
            "/v2/organization/port_out_pin",
            json!({ "pin": pin, "current_password": password })
        )
        .await
        .status,
        204
    );
    let _ = app
        .post(
            "/v2/organization/port_out_pin/actions/verify",
            Some(&token),
            json!({ "pin": pin }),
        )
        .await;
    let _ = app
        .post(
            "/v2/organization/security_passphrase/actions/verify",
            Some(&token),
            json!({ "passphrase": passphrase }),
        )
        .await;

    let events = app.events_table_text().await;
    let logs = captured_logs();
    assert!(!events.is_empty() && !logs.is_empty());
    for secret in [
        password.as_str(),
        passphrase.as_str(),
        token.as_str(),
        email.as_str(),
        "Canary",
    ] {
        assert!(!events.contains(secret), "events hold {secret}");
    }
    for secret in [password.as_str(), passphrase.as_str(), token.as_str()] {
        assert!(!logs.contains(secret), "logs hold {secret}");
    }
    // The PIN is short: look for it as a JSON value or a key=value pair, not any digit run.
    for needle in [format!("\"{pin}\""), format!("={pin}"), format!(": {pin}")] {
        assert!(
            !events.contains(&needle) && !logs.contains(&needle),
            "PIN leaked as {needle}"
        );
    }
}
