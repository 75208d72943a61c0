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

/// Invitation tokens, API keys, session tokens and the invitee's address travel nowhere in
/// the clear: not in the events, not in the NATS messages, not in the logs.
#[tokio::test]
async fn no_invitation_token_or_api_key_in_events_nats_messages_or_logs() {
    let sink = MessageSink::start().await;
    let stream = format!("WL_{}", uuid::Uuid::new_v4().simple());
    let mut settings = warden::Settings::for_test(temp_dir());
    settings.sender = warden::config::SenderKind::Http;
    settings.sender_url = Some(sink.url.clone());
    settings.nats_url = Some("nats://127.0.0.1:4222".into());
    settings.nats_stream = stream.clone();
    settings.nats_subject_prefix = format!("wl.{}", uuid::Uuid::new_v4().simple());
    let app = spawn_with(settings).await;
    let (_, owner) = app.owner().await;

    let invitee = format!("invitee-{}@example.com", uuid::Uuid::new_v4().simple());
    let (_, first_token) = crate::members::invite(&app, &sink, &owner, &invitee, &[]).await;
    let r = app.get("/v2/organization/invitations", &owner).await;
    let id = r.data()[0]["id"].as_str().unwrap().to_owned();
    let r = app
        .post(
            &format!("/v2/organization/invitations/{id}/actions/resend"),
            Some(&owner),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let invitation_token = sink.last_code();
    let r = crate::members::accept(&app, &invitation_token).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let sub_session = r.data()["session"]["token"].as_str().unwrap().to_owned();
    let r = app
        .post("/v2/api_keys", Some(&owner), json!({ "name": "canary" }))
        .await;
    let key_id = r.data()["id"].as_str().unwrap().to_owned();
    let first_key = r.data()["secret"].as_str().unwrap().to_owned();
    let r = app
        .post(
            &format!("/v2/api_keys/{key_id}/actions/rotate"),
            Some(&owner),
            json!({}),
        )
        .await;
    let second_key = r.data()["secret"].as_str().unwrap().to_owned();
    assert_eq!(app.get("/v2/users/me", &second_key).await.status, 200);
    assert_eq!(app.get("/v2/users/me", &first_key).await.status, 401);

    let head = app.event_count().await;
    assert_eq!(
        crate::broadcast::wait_relayed(&app, std::time::Duration::from_secs(20)).await,
        head
    );
    let messages = crate::broadcast::stream_messages("nats://127.0.0.1:4222", &stream)
        .await
        .iter()
        .map(|(_, b)| b.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    let events = app.events_table_text().await;
    let logs = captured_logs();
    assert!(!messages.is_empty() && !events.is_empty());
    for secret in [
        first_token.as_str(),
        invitation_token.as_str(),
        sub_session.as_str(),
        first_key.as_str(),
        second_key.as_str(),
        owner.as_str(),
    ] {
        assert!(!events.contains(secret), "events hold {secret}");
        assert!(!messages.contains(secret), "a NATS message holds {secret}");
        assert!(!logs.contains(secret), "logs hold {secret}");
    }
    assert!(!events.contains(&invitee) && !messages.contains(&invitee));
    app.stop().await;
    if let Ok(client) = async_nats::connect("nats://127.0.0.1:4222").await {
        let _ = async_nats::jetstream::new(client)
            .delete_stream(&stream)
            .await;
    }
}
