//! A thin HTTP client for the handful of calls the scenarios make.

use reqwest::Method;
use serde_json::{json, Value};

/// The password every bench account uses.
pub const PASSWORD: &str = "violet lanterns drift over quiet harbours";

#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    pub base: String,
}

impl Api {
    pub fn new(base: &str, connections: usize) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(connections.max(1) * 2)
            .timeout(std::time::Duration::from_secs(30))
            .build()?;
        Ok(Self {
            http,
            base: base.to_owned(),
        })
    }

    /// One request; `Err` unless the status is `expect`.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        expect: u16,
    ) -> Result<Value, String> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.map_err(|e| format!("{path}: {e}"))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| format!("{path}: {e}"))?;
        if status != expect {
            let head: String = text.chars().take(300).collect();
            return Err(format!("{path}: HTTP {status}: {head}"));
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: Value,
        expect: u16,
    ) -> Result<Value, String> {
        self.call(Method::POST, path, token, Some(body), expect)
            .await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Result<Value, String> {
        self.call(Method::GET, path, token, None, 200).await
    }

    /// Signs up a fresh organization owner; returns (email, session token).
    pub async fn owner(&self, label: &str) -> Result<(String, String), String> {
        let email = format!(
            "bench-{label}-{}@example.com",
            uuid::Uuid::new_v4().simple()
        );
        self.post(
            "/v2/accounts",
            None,
            json!({
                "email": email, "password": PASSWORD, "first_name": "Ada",
                "last_name": "Lovelace", "company_name": "Bench Ltd", "billing_currency": "USD"
            }),
            201,
        )
        .await?;
        let token = self.sign_in(&email).await?;
        Ok((email, token))
    }

    pub async fn sign_in(&self, email: &str) -> Result<String, String> {
        let r = self
            .post(
                "/v2/sessions",
                None,
                json!({ "email": email, "password": PASSWORD }),
                201,
            )
            .await?;
        r.pointer("/data/token")
            .unwrap_or(&serde_json::Value::Null)
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| "sign-in answered without a token".to_owned())
    }

    /// A Verify profile for US numbers, optionally with a webhook; returns its id.
    pub async fn verify_profile(
        &self,
        token: &str,
        webhook_url: Option<&str>,
    ) -> Result<String, String> {
        let mut body = json!({
            "name": format!("Bench {}", uuid::Uuid::new_v4().simple()),
            "sms": { "app_name": "Bench", "whitelisted_destinations": ["US"] }
        });
        if let (Some(url), Some(obj)) = (webhook_url, body.as_object_mut()) {
            obj.insert("webhook_url".into(), json!(url));
        }
        let r = self
            .post("/v2/verify_profiles", Some(token), body, 200)
            .await?;
        r.pointer("/data/id")
            .unwrap_or(&serde_json::Value::Null)
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| "profile answered without an id".to_owned())
    }

    /// The server's projected and relayed positions (`/readyz`).
    pub async fn positions(&self) -> Result<(i64, i64), String> {
        let r = self.get("/readyz", None).await?;
        Ok((
            r.pointer("/projected_position")
                .unwrap_or(&serde_json::Value::Null)
                .as_i64()
                .unwrap_or(0),
            r.pointer("/relayed_position")
                .unwrap_or(&serde_json::Value::Null)
                .as_i64()
                .unwrap_or(0),
        ))
    }
}

/// A distinct US number per (salt, worker, iteration).
pub fn phone(salt: usize, worker: usize, iteration: u64) -> String {
    const AREAS: [&str; 6] = ["303", "720", "970", "719", "415", "212"];
    let area = AREAS.get(salt % AREAS.len()).copied().unwrap_or("303");
    format!(
        "+1{area}{:03}{:04}",
        200 + (worker % 700),
        iteration % 10_000
    )
}
