//! The NATS broadcast: with Postgres and a real JetStream, every event lands exactly once per
//! `event_id`, including events written while NATS was down; no secret travels in a message.

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

/// A private nats-server this test may stop and restart without disturbing others.
struct Nats {
    port: u16,
    dir: std::path::PathBuf,
    child: Option<Child>,
}

impl Nats {
    fn start(port: u16, dir: std::path::PathBuf) -> Self {
        let mut nats = Self {
            port,
            dir,
            child: None,
        };
        nats.up();
        nats
    }

    fn up(&mut self) {
        let child = Command::new("/usr/sbin/nats-server")
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server runs");
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("nats-server did not start");
    }

    fn down(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.down();
    }
}

pub async fn wait_relayed(app: &TestApp, timeout: Duration) -> i64 {
    let head = app.event_count().await;
    let mut relayed = app.state.relayed.clone();
    let _ = tokio::time::timeout(timeout, relayed.wait_for(|p| *p >= head)).await;
    let at = *relayed.borrow();
    at
}

pub async fn stream_messages(url: &str, stream: &str) -> Vec<(String, Value)> {
    let client = async_nats::connect(url).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let mut s = js.get_stream(stream).await.expect("stream exists");
    let last = s.info().await.expect("info").state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        let msg = s.get_raw_message(seq).await.expect("message");
        let id = msg
            .headers
            .get(async_nats::header::NATS_MESSAGE_ID)
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        out.push((id, serde_json::from_slice(&msg.payload).expect("json")));
    }
    out
}

#[tokio::test]
async fn every_event_reaches_jetstream_once_even_across_a_nats_outage() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut nats = Nats::start(port, temp_dir());
    let stream = format!("WT_{}", uuid::Uuid::new_v4().simple());
    let mut settings = warden::Settings::for_test(temp_dir());
    settings.storage.database_url = Some(fresh_postgres().await);
    settings.nats_url = Some(nats.url());
    settings.nats_stream = stream.clone();
    settings.nats_subject_prefix = format!("wt.{}", uuid::Uuid::new_v4().simple());
    let app = spawn_with(settings).await;

    let (email, token) = app.owner().await;
    let passphrase = format!("canary phrase {}", uuid::Uuid::new_v4().simple());
    let pin = "80264917";
    for (path, body) in [
        (
            "/v2/organization/security_passphrase",
            json!({ "passphrase": passphrase, "current_password": PASSWORD }),
        ),
        (
            "/v2/organization/port_out_pin",
            json!({ "pin": pin, "current_password": PASSWORD }),
        ),
    ] {
        assert_eq!(
            app.request(Method::PUT, path, Some(&token), Some(body))
                .await
                .status,
            204
        );
    }
    let r = app
        .post(
            "/v2/organization/port_out_pin/actions/verify",
            Some(&token),
            json!({ "pin": pin }),
        )
        .await;
    assert_eq!(r.data()["valid"], true);
    let head = app.event_count().await;
    assert_eq!(wait_relayed(&app, Duration::from_secs(20)).await, head);

    // NATS goes away; writes go on.
    nats.down();
    for _ in 0..3 {
        assert_eq!(app.sign_in_with(&email, PASSWORD).await.status, 201);
    }
    let r = app
        .request(
            Method::PATCH,
            "/v2/users/me",
            Some(&token),
            Some(json!({ "first_name": "Grace" })),
        )
        .await;
    assert_eq!(r.status, 200);
    let head = app.event_count().await;
    assert!(
        *app.state.relayed.borrow() < head,
        "nothing relayed while NATS is down"
    );

    // NATS comes back: everything arrives, once.
    nats.up();
    assert_eq!(wait_relayed(&app, Duration::from_secs(30)).await, head);
    let messages = stream_messages(&nats.url(), &stream).await;
    assert_eq!(messages.len() as i64, head, "one message per event");
    let ids: HashSet<&str> = messages.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids.len() as i64, head, "each event_id once");
    let events = app.state.store.read_all(0, 1000).await.unwrap();
    for (event, (id, body)) in events.iter().zip(&messages) {
        assert_eq!(event.event_id.to_string(), *id);
        assert_eq!(body["event_id"], event.event_id.to_string());
        assert_eq!(body["global_position"], event.global_position);
        assert_eq!(body["hash"], event.hash.as_str());
    }

    // No secret in any message.
    let all = messages
        .iter()
        .map(|(_, b)| b.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    for secret in [
        PASSWORD,
        token.as_str(),
        email.as_str(),
        passphrase.as_str(),
        pin,
    ] {
        assert!(!all.contains(secret), "a NATS message holds {secret}");
    }
    app.stop().await;
}
