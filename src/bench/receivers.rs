//! What the harness serves to Warden: the `http` sender's sink (codes arrive here, so the
//! check can use them) and a Verify webhook receiver that records append → delivery
//! latency from each delivery's `occurred_at`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::Value;

#[derive(Default)]
struct Shared {
    /// Newest code per destination number.
    codes: HashMap<String, String>,
    /// Webhook deliveries seen once per event id, with their latency.
    deliveries: HashMap<String, Duration>,
    recording: bool,
}

/// The running receivers.
#[derive(Clone)]
pub struct Receivers {
    pub sender_url: String,
    pub webhook_url: String,
    shared: Arc<Mutex<Shared>>,
}

impl Receivers {
    pub async fn start() -> anyhow::Result<Self> {
        let shared: Arc<Mutex<Shared>> = Arc::default();
        let sink = Arc::clone(&shared);
        let hooks = Arc::clone(&shared);
        let app = axum::Router::new()
            .route(
                "/messages",
                axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
                    let sink = Arc::clone(&sink);
                    async move {
                        if let (Some(to), Some(code)) = (
                            body.pointer("/to")
                                .unwrap_or(&serde_json::Value::Null)
                                .as_str(),
                            body.pointer("/code")
                                .unwrap_or(&serde_json::Value::Null)
                                .as_str(),
                        ) {
                            lock(&sink).codes.insert(to.to_owned(), code.to_owned());
                        }
                        StatusCode::NO_CONTENT
                    }
                }),
            )
            .route(
                "/hook",
                axum::routing::post(move |body: String| {
                    let hooks = Arc::clone(&hooks);
                    async move {
                        record_delivery(&hooks, &body);
                        StatusCode::OK
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            sender_url: format!("http://{addr}/messages"),
            webhook_url: format!("http://{addr}/hook"),
            shared,
        })
    }

    /// Waits for the code sent to `phone` (and forgets it).
    pub async fn take_code(&self, phone: &str, timeout: Duration) -> Option<String> {
        let started = Instant::now();
        loop {
            if let Some(code) = lock(&self.shared).codes.remove(phone) {
                return Some(code);
            }
            if started.elapsed() > timeout {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Starts (and clears) or stops recording webhook latencies.
    pub fn record_webhooks(&self, on: bool) {
        let mut shared = lock(&self.shared);
        if on {
            shared.deliveries.clear();
        }
        shared.recording = on;
    }

    pub fn webhook_latencies(&self) -> Vec<Duration> {
        lock(&self.shared).deliveries.values().copied().collect()
    }
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

fn record_delivery(shared: &Mutex<Shared>, body: &str) {
    let Ok(v) = serde_json::from_str::<Value>(body) else {
        return;
    };
    let (Some(id), Some(at)) = (
        v.pointer("/data/id")
            .unwrap_or(&serde_json::Value::Null)
            .as_str(),
        v.pointer("/data/occurred_at")
            .unwrap_or(&serde_json::Value::Null)
            .as_str(),
    ) else {
        return;
    };
    let Some(latency) = since(at) else {
        return;
    };
    let mut shared = lock(shared);
    if shared.recording {
        // At-least-once delivery: the first arrival counts.
        shared.deliveries.entry(id.to_owned()).or_insert(latency);
    }
}

/// Wall time elapsed since an RFC 3339 instant (zero if it is in the future).
pub fn since(at: &str) -> Option<Duration> {
    let at = chrono::DateTime::parse_from_rfc3339(at).ok()?;
    let elapsed = chrono::Utc::now().signed_duration_since(at.with_timezone(&chrono::Utc));
    Some(elapsed.to_std().unwrap_or_default())
}
