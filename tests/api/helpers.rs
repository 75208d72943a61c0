//! `spawn_app` and typed request helpers, so each test reads as a short story.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use chrono::{TimeZone, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::{Connection, Executor, Row};
use warden::config::Settings;
use warden::{AppState, Application};
use warden_commands::ManualClock;

pub const PASSWORD: &str = "violet lanterns drift over quiet harbours";

/// Every log line any test app wrote, for the secret scan.
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&log_buffer().lock().unwrap_or_else(|p| p.into_inner())).into_owned()
}

fn log_buffer() -> &'static Arc<Mutex<Vec<u8>>> {
    static BUF: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUF.get_or_init(|| Arc::new(Mutex::new(Vec::new())))
}

#[derive(Clone)]
struct CaptureWriter;

impl Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        log_buffer()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        if std::env::var_os("TEST_LOG").is_some() {
            std::io::stderr().write_all(buf)?;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn init_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("debug,sqlx=debug,hyper=info,h2=info,reqwest=info,async_nats=info")
            .with_writer(|| CaptureWriter)
            .with_ansi(false)
            .try_init();
    });
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub clock: Arc<ManualClock>,
    pub state: AppState,
    pub settings: Settings,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

pub fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("warden-test-{}", uuid::Uuid::new_v4().simple()));
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// A fresh, empty Postgres database for one test.
pub async fn fresh_postgres() -> String {
    let base = std::env::var("WARDEN_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let name = format!("warden_api_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&format!("{base}/postgres"))
        .await
        .expect("postgres is running");
    admin
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .expect("create database");
    format!("{base}/{name}")
}

pub async fn spawn_app() -> TestApp {
    spawn_app_on(Backend::Sqlite).await
}

pub async fn spawn_app_on(backend: Backend) -> TestApp {
    let mut settings = Settings::for_test(temp_dir());
    if backend == Backend::Postgres {
        settings.storage.database_url = Some(fresh_postgres().await);
    }
    spawn_with(settings).await
}

pub fn start_time() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0)
        .single()
        .unwrap_or_default()
}

pub async fn spawn_with(settings: Settings) -> TestApp {
    spawn_with_clock(settings, Arc::new(ManualClock::new(start_time()))).await
}

pub async fn spawn_with_clock(settings: Settings, clock: Arc<ManualClock>) -> TestApp {
    init_logs();
    let app = Application::build(settings.clone(), clock.clone())
        .await
        .expect("app builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let state = app.state();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let _ = app
            .run_until(async move {
                let _ = stopped.await;
            })
            .await;
    });
    TestApp {
        address,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
        clock,
        state,
        settings,
        stop: Some(stop),
        server: Some(server),
    }
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    pub fn data(&self) -> &Value {
        &self.body["data"]
    }
    pub fn code(&self) -> &str {
        self.body["errors"][0]["code"].as_str().unwrap_or_default()
    }
    pub fn pointer(&self) -> &str {
        self.body["errors"][0]["source"]["pointer"]
            .as_str()
            .unwrap_or_default()
    }
}

impl TestApp {
    /// Stops the server (graceful) and waits for it.
    pub async fn stop(mut self) -> Settings {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
        self.settings.clone()
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut req = self
            .client
            .request(method, format!("{}{}", self.address, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        Self::reply(req.send().await.expect("request sent")).await
    }

    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Reply {
        let mut req = self
            .client
            .request(method, format!("{}{}", self.address, path))
            .header("content-type", "application/json")
            .body(body.to_owned());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Self::reply(req.send().await.expect("request sent")).await
    }

    async fn reply(resp: reqwest::Response) -> Reply {
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
            text,
        }
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Reply {
        self.request(Method::POST, path, token, Some(body)).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.request(Method::GET, path, Some(token), None).await
    }

    pub async fn sign_up(&self, email: &str) -> Reply {
        self.post(
            "/v2/accounts",
            None,
            json!({
                "email": email, "password": PASSWORD, "first_name": "Ada", "last_name": "Lovelace",
                "company_name": "Analytical Engines", "billing_currency": "GBP"
            }),
        )
        .await
    }

    pub async fn sign_in_with(&self, email: &str, password: &str) -> Reply {
        self.post(
            "/v2/sessions",
            None,
            json!({ "email": email, "password": password }),
        )
        .await
    }

    /// Signs up a fresh owner and returns (email, token).
    pub async fn owner(&self) -> (String, String) {
        let email = format!("owner-{}@example.com", uuid::Uuid::new_v4().simple());
        let r = self.sign_up(&email).await;
        assert_eq!(r.status, 201, "{}", r.text);
        let r = self.sign_in_with(&email, PASSWORD).await;
        assert_eq!(r.status, 201, "{}", r.text);
        let token = r.data()["token"].as_str().expect("token").to_owned();
        (email, token)
    }

    /// `PATCH /v2/users/me` with `body`.
    /// Confirms a second-factor enrollment with `code`.
    pub async fn confirm_enrollment(&self, token: &str, enrollment_id: &str, code: &str) -> Reply {
        self.post(
            &format!("/v2/users/me/two_factor/enrollments/{enrollment_id}/actions/confirm"),
            Some(token),
            json!({ "code": code }),
        )
        .await
    }

    pub async fn patch_me(&self, token: &str, body: Value) -> Reply {
        self.request(Method::PATCH, "/v2/users/me", Some(token), Some(body))
            .await
    }

    /// The signed-in user's stream id (`user-<id>`).
    pub async fn user_stream(&self, token: &str) -> String {
        let me = self.get("/v2/users/me", token).await;
        format!("user-{}", me.data()["id"].as_str().expect("user id"))
    }

    /// Appends `count` empty profile updates to a user's stream in one request, recorded
    /// now, straight to the store (a long stream without thousands of requests). Returns
    /// the stream's new version.
    pub async fn append_profile_updates(&self, stream: &str, count: usize) -> i64 {
        use warden_commands::store::{AppendRequest, StreamAppend};
        use warden_commands::Clock;
        use warden_domain::user::UserEvent;
        let store = &self.state.store;
        let version = store.stream_version(stream).await.expect("version");
        let events = vec![
            UserEvent::ProfileUpdated {
                first_name: None,
                last_name: None,
                phone_number: None,
            };
            count
        ];
        store
            .append(AppendRequest {
                streams: vec![StreamAppend {
                    stream_id: stream.to_owned(),
                    stream_type: "user".into(),
                    expected_version: version,
                    events: warden_commands::pipeline::encode_all(&events).expect("encode"),
                }],
                recorded_at: self.clock.now(),
                ..Default::default()
            })
            .await
            .expect("append");
        version + count as i64
    }

    /// How many events the store holds.
    pub async fn event_count(&self) -> i64 {
        self.state.store.head_position().await.expect("head")
    }

    /// Every stored event row's text, for scans.
    pub async fn events_table_text(&self) -> String {
        let rows = sqlx::query("SELECT payload, metadata, event_type, stream_id FROM events")
            .fetch_all(&self.state.db.pool)
            .await
            .expect("events");
        rows.iter()
            .map(|r| {
                (0..4)
                    .map(|i| r.try_get::<String, _>(i).unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A local receiver for the `http` sender: records every message Warden sends.
#[derive(Clone, Default)]
pub struct MessageSink {
    pub url: String,
    messages: Arc<Mutex<Vec<Value>>>,
}

impl MessageSink {
    pub async fn start() -> Self {
        let messages: Arc<Mutex<Vec<Value>>> = Arc::default();
        let store = Arc::clone(&messages);
        let app = axum::Router::new().route(
            "/messages",
            axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
                let store = Arc::clone(&store);
                async move {
                    store.lock().unwrap_or_else(|p| p.into_inner()).push(body);
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind sink");
        let url = format!("http://{}/messages", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, messages }
    }

    pub fn all(&self) -> Vec<Value> {
        self.messages
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The code of the newest message.
    pub fn last_code(&self) -> String {
        self.all()
            .last()
            .and_then(|m| m["code"].as_str().map(str::to_owned))
            .expect("a message with a code")
    }
}

/// An app whose SMS, calls and email go to a [`MessageSink`].
pub async fn spawn_app_with_sink(backend: Backend) -> (TestApp, MessageSink) {
    let sink = MessageSink::start().await;
    let mut settings = Settings::for_test(temp_dir());
    if backend == Backend::Postgres {
        settings.storage.database_url = Some(fresh_postgres().await);
    }
    settings.sender = warden::config::SenderKind::Http;
    settings.sender_url = Some(sink.url.clone());
    (spawn_with(settings).await, sink)
}

impl TestApp {
    /// The types of events written after `position`.
    pub async fn event_types_after(&self, position: i64) -> Vec<String> {
        self.state
            .store
            .read_all(position, 10_000)
            .await
            .expect("read")
            .into_iter()
            .map(|e| e.event_type)
            .collect()
    }

    /// Asserts that since `position` only failed-attempt records were written: the refused
    /// change itself wrote nothing.
    pub async fn only_failures_since(&self, position: i64) {
        for t in self.event_types_after(position).await {
            assert!(t.ends_with("_failed"), "a refused change wrote {t}");
        }
    }
}

/// Enrolls and confirms TOTP for the signed-in user; the clock then moves to the next
/// 30-second step (the confirming one is spent). Returns the secret and the backup codes.
pub async fn enable_totp(
    app: &TestApp,
    token: &str,
) -> (warden_commands::otp::TotpSecret, Vec<String>) {
    use warden_commands::{otp, Clock};
    let r = app
        .post(
            "/v2/users/me/two_factor/enrollments",
            Some(token),
            json!({ "method": "totp" }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let secret_b32 = r.data()["secret"].as_str().expect("secret");
    let bytes =
        base32::decode(base32::Alphabet::Rfc4648 { padding: false }, secret_b32).expect("base32");
    let secret = otp::TotpSecret::from_bytes(bytes).expect("secret length");
    let id = r.data()["enrollment_id"].as_str().expect("id").to_owned();
    let code = otp::totp_at(&secret, otp::totp_step(app.clock.now()));
    let r = app.confirm_enrollment(token, &id, &code).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let codes = r.data()["backup_codes"]
        .as_array()
        .expect("backup codes")
        .iter()
        .filter_map(|c| c.as_str().map(str::to_owned))
        .collect();
    app.clock.advance(chrono::Duration::seconds(30));
    (secret, codes)
}
