//! Message senders: how SMS codes, voice-call codes and emails leave Warden.
//!
//! - [`ConsoleSender`] logs each message, code included, on the tracing target
//!   `warden::console_sender`. Development only: [`from_settings`] refuses it in production
//!   (as does the settings validation).
//! - [`HttpSender`] POSTs every message as `{"channel","to","message","code","purpose"}` to a
//!   URL (`WARDEN_SENDER_URL`): test harnesses and custom gateways.
//! - [`LiveSender`] sends email over SMTP (`WARDEN_SMTP_URL`) and SMS and calls through the
//!   Telnyx v2 API (`WARDEN_TELNYX_*`).
//!
//! Logs and errors never carry a code, a message body, an API key or an SMTP password; URLs
//! are not echoed either (a webhook URL may hold a token).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use rand::Rng;
use reqwest::{StatusCode, Url};
use serde::Serialize;
use warden_commands::sender::{mask_recipient, Channel, OutboundMessage, SendError, Sender};

/// The tracing target of the console sender's lines.
pub const CONSOLE_TARGET: &str = "warden::console_sender";
/// Telnyx's API root, used when `WARDEN_TELNYX_BASE_URL` is unset.
pub const DEFAULT_TELNYX_BASE_URL: &str = "https://api.telnyx.com/v2";
/// The From of every email when `WARDEN_MAIL_FROM` is unset.
pub const DEFAULT_MAIL_FROM: &str = "Warden <no-reply@localhost>";

const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
const SMTP_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------------

/// Which sender to build (`WARDEN_SENDER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SenderKind {
    Console,
    Http,
    Live,
}

impl FromStr for SenderKind {
    type Err = SenderConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "console" => Ok(Self::Console),
            "http" => Ok(Self::Http),
            "live" => Ok(Self::Live),
            _ => Err(SenderConfigError::UnknownKind),
        }
    }
}

/// Everything the senders read from the environment. Debug hides the API key and the SMTP
/// URL (it may hold a password) and the webhook URL (it may hold a token).
#[derive(Clone, Default)]
pub struct SenderEnv {
    /// `WARDEN_ENV=production`: the console sender is refused.
    pub production: bool,
    /// `WARDEN_SENDER_URL`: where the http sender POSTs.
    pub sender_url: Option<String>,
    /// `WARDEN_SMTP_URL`: `smtp://user:pass@host:587` (STARTTLS required, except to a
    /// loopback host, which is plain), `smtps://user:pass@host:465` (TLS from the start), or
    /// with an explicit `?tls=required|opportunistic`.
    pub smtp_url: Option<String>,
    /// `WARDEN_MAIL_FROM`: default [`DEFAULT_MAIL_FROM`].
    pub mail_from: Option<String>,
    /// `WARDEN_TELNYX_API_KEY`.
    pub telnyx_api_key: Option<String>,
    /// `WARDEN_TELNYX_BASE_URL`: default [`DEFAULT_TELNYX_BASE_URL`].
    pub telnyx_base_url: Option<String>,
    /// `WARDEN_TELNYX_FROM`: the number (or alphanumeric sender id) SMS and calls come from.
    pub telnyx_from: Option<String>,
    /// `WARDEN_TELNYX_CONNECTION_ID`: the Call Control connection; without it calls fail.
    pub telnyx_connection_id: Option<String>,
}

impl SenderEnv {
    /// Reads the `WARDEN_*` variables above from the process environment. Blank values count
    /// as unset, here and in [`from_settings`].
    /// `production` is left false: the caller knows the environment from its settings.
    pub fn from_process_env() -> Self {
        let var = |name: &str| std::env::var(name).ok();
        Self {
            production: false,
            sender_url: var("WARDEN_SENDER_URL"),
            smtp_url: var("WARDEN_SMTP_URL"),
            mail_from: var("WARDEN_MAIL_FROM"),
            telnyx_api_key: var("WARDEN_TELNYX_API_KEY"),
            telnyx_base_url: var("WARDEN_TELNYX_BASE_URL"),
            telnyx_from: var("WARDEN_TELNYX_FROM"),
            telnyx_connection_id: var("WARDEN_TELNYX_CONNECTION_ID"),
        }
    }
}

impl fmt::Debug for SenderEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |v: &Option<String>| if v.is_some() { "<set>" } else { "<unset>" };
        f.debug_struct("SenderEnv")
            .field("production", &self.production)
            .field("sender_url", &set(&self.sender_url))
            .field("smtp_url", &set(&self.smtp_url))
            .field("mail_from", &self.mail_from)
            .field("telnyx_api_key", &set(&self.telnyx_api_key))
            .field("telnyx_base_url", &self.telnyx_base_url)
            .field("telnyx_from", &self.telnyx_from)
            .field("telnyx_connection_id", &self.telnyx_connection_id)
            .finish()
    }
}

/// A sender that cannot be built from the settings. Texts name variables, never their values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SenderConfigError {
    #[error("WARDEN_SENDER must be console, http or live")]
    UnknownKind,
    #[error(
        "WARDEN_SENDER=console only logs messages and is refused in production; use http or live"
    )]
    ConsoleInProduction,
    #[error("{0} is required for WARDEN_SENDER={1}")]
    Missing(&'static str, &'static str),
    #[error("{0} is not valid: {1}")]
    Invalid(&'static str, String),
}

/// Builds the sender `WARDEN_SENDER` names. Called once at start-up.
pub fn from_settings(
    kind: SenderKind,
    env: &SenderEnv,
) -> Result<Arc<dyn Sender>, SenderConfigError> {
    match kind {
        SenderKind::Console if env.production => Err(SenderConfigError::ConsoleInProduction),
        SenderKind::Console => Ok(Arc::new(ConsoleSender)),
        SenderKind::Http => {
            let url = nonblank(&env.sender_url)
                .ok_or(SenderConfigError::Missing("WARDEN_SENDER_URL", "http"))?;
            Ok(Arc::new(HttpSender::new(url)?))
        }
        SenderKind::Live => Ok(Arc::new(LiveSender::from_env(env)?)),
    }
}

/// A setting's trimmed value; blank counts as unset.
fn nonblank(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

// ---------------------------------------------------------------------------------------------
// Retry
// ---------------------------------------------------------------------------------------------

/// Bounded exponential backoff with full jitter. A tiny loop rather than a crate: the policy
/// is a dozen lines, and this way it shares the one `rand` the workspace already has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all, the first included (at least 1).
    pub attempts: u32,
    /// The cap of the first pause; doubles each retry.
    pub base_delay: Duration,
    /// No pause is longer than this.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// 4 tries, pauses of at most 200 ms, 400 ms, 800 ms: under 2 s added in the worst case.
    fn default() -> Self {
        Self {
            attempts: 4,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// The pause before retry number `retry` (1-based): uniform in [cap/2, cap] where cap is
    /// `base_delay * 2^(retry-1)` bounded by `max_delay`.
    fn delay(&self, retry: u32) -> Duration {
        let factor = 1u32 << retry.saturating_sub(1).min(16);
        let cap = self.base_delay.saturating_mul(factor).min(self.max_delay);
        let cap_ms = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX);
        if cap_ms == 0 {
            return Duration::ZERO;
        }
        let ms = rand::thread_rng().gen_range(cap_ms / 2..=cap_ms);
        Duration::from_millis(ms)
    }
}

/// The outcome of one try.
enum Attempt {
    /// Transient (connection error, timeout, 408, 429, 5xx): try again.
    Retry(String),
    /// Final (4xx, invalid message): give up now.
    Reject(String),
}

async fn with_retry<F, Fut>(
    policy: RetryPolicy,
    what: &str,
    mut attempt: F,
) -> Result<(), SendError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), Attempt>>,
{
    let attempts = policy.attempts.max(1);
    let mut last = String::new();
    for n in 1..=attempts {
        if n > 1 {
            tokio::time::sleep(policy.delay(n - 1)).await;
        }
        match attempt().await {
            Ok(()) => return Ok(()),
            Err(Attempt::Reject(why)) => return Err(SendError::Rejected(why)),
            Err(Attempt::Retry(why)) => {
                tracing::debug!(target: "warden::sender", what, attempt = n, reason = %why, "send failed; retrying");
                last = why;
            }
        }
    }
    Err(SendError::Unavailable(format!(
        "{what}: {last} (after {attempts} attempts)"
    )))
}

/// Describes a reqwest failure without its URL (which may hold a token) or body.
fn describe_transport_error(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "could not connect".to_owned()
    } else if e.is_request() {
        "request failed".to_owned()
    } else if e.is_body() || e.is_decode() {
        "bad response body".to_owned()
    } else {
        "transport error".to_owned()
    }
}

/// 408, 429 and 5xx are worth retrying; other 4xx are final. (Other non-2xx, like a 3xx we
/// did not follow, count as transient.)
fn classify_status(status: StatusCode, detail: &str) -> Attempt {
    let why = if detail.is_empty() {
        format!("HTTP {}", status.as_u16())
    } else {
        format!("HTTP {} ({detail})", status.as_u16())
    };
    if status.is_client_error()
        && status != StatusCode::REQUEST_TIMEOUT
        && status != StatusCode::TOO_MANY_REQUESTS
    {
        Attempt::Reject(why)
    } else {
        Attempt::Retry(why)
    }
}

fn http_client() -> Result<reqwest::Client, SenderConfigError> {
    reqwest::Client::builder()
        .timeout(HTTP_TIMEOUT)
        .connect_timeout(HTTP_TIMEOUT)
        // Never follow a redirect with a bearer token or a code to somewhere else.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| SenderConfigError::Invalid("http client", describe_transport_error(&e)))
}

fn parse_http_url(name: &'static str, raw: &str) -> Result<Url, SenderConfigError> {
    let url = Url::parse(raw.trim())
        .map_err(|e| SenderConfigError::Invalid(name, format!("not a URL ({e})")))?;
    match url.scheme() {
        "http" | "https" if url.host_str().is_some() => Ok(url),
        _ => Err(SenderConfigError::Invalid(
            name,
            "must be an http:// or https:// URL".to_owned(),
        )),
    }
}

/// `scheme://host[:port]`, for Debug output: no user info, path or query.
fn origin(url: &Url) -> String {
    url.origin().ascii_serialization()
}

// ---------------------------------------------------------------------------------------------
// Console
// ---------------------------------------------------------------------------------------------

/// Logs each message (development only): one `warn` line per message on the target
/// [`CONSOLE_TARGET`], with the channel, masked recipient, purpose, and — its whole point —
/// the code and message (fields `code` and `body`) so a developer can sign in without a
/// phone.
#[derive(Debug, Default, Clone, Copy)]
pub struct ConsoleSender;

#[async_trait]
impl Sender for ConsoleSender {
    async fn send(&self, message: &OutboundMessage) -> Result<(), SendError> {
        tracing::warn!(
            target: CONSOLE_TARGET,
            channel = message.channel.as_str(),
            to = %mask_recipient(&message.to),
            purpose = %message.purpose,
            code = message.code.as_deref().unwrap_or(""),
            body = %message.message,
            "development sender: message not delivered, logged instead"
        );
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

/// The JSON the http sender POSTs (the API.md contract).
#[derive(Serialize)]
struct HttpPayload<'a> {
    channel: Channel,
    to: &'a str,
    message: &'a str,
    code: Option<&'a str>,
    purpose: &'a str,
}

/// POSTs every message to one URL as `{"channel","to","message","code","purpose"}` (`code`
/// is `null` when the message carries none). Any 2xx is delivery; 408, 429, 5xx and
/// connection errors are retried with backoff, then [`SendError::Unavailable`]; other 4xx
/// are [`SendError::Rejected`] at once.
#[derive(Clone)]
pub struct HttpSender {
    url: Url,
    client: reqwest::Client,
    retry: RetryPolicy,
}

impl HttpSender {
    pub fn new(url: &str) -> Result<Self, SenderConfigError> {
        Ok(Self {
            url: parse_http_url("WARDEN_SENDER_URL", url)?,
            client: http_client()?,
            retry: RetryPolicy::default(),
        })
    }

    /// Replaces the retry policy (tests use short pauses).
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }
}

impl fmt::Debug for HttpSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpSender")
            .field("url", &origin(&self.url))
            .field("retry", &self.retry)
            .finish()
    }
}

#[async_trait]
impl Sender for HttpSender {
    async fn send(&self, message: &OutboundMessage) -> Result<(), SendError> {
        let payload = HttpPayload {
            channel: message.channel,
            to: &message.to,
            message: &message.message,
            code: message.code.as_deref(),
            purpose: &message.purpose,
        };
        with_retry(self.retry, "http sender", || async {
            let response = self
                .client
                .post(self.url.clone())
                .json(&payload)
                .send()
                .await
                .map_err(|e| Attempt::Retry(describe_transport_error(&e)))?;
            let status = response.status();
            if status.is_success() {
                Ok(())
            } else {
                // The receiver's body is not ours to log: it might echo the message.
                Err(classify_status(status, ""))
            }
        })
        .await
    }
}

// ---------------------------------------------------------------------------------------------
// Live: SMTP + Telnyx
// ---------------------------------------------------------------------------------------------

/// Email over SMTP, SMS and calls through Telnyx.
///
/// - Email: `lettre` over rustls to `WARDEN_SMTP_URL`, From `WARDEN_MAIL_FROM`, plain text,
///   the subject chosen by purpose. 5xx replies are rejections; 4xx and connection problems
///   are retried.
/// - SMS: `POST {base}/messages` with `{"from", "to", "text"}`, bearer `WARDEN_TELNYX_API_KEY`.
/// - Call: not available yet. Speaking the code needs a Call Control webhook (on
///   `call.answered`, `speak`, then hang up), which Warden does not run yet; until then a
///   voice send fails as unavailable rather than dialing a silent call.
///
/// Telnyx requests are retried like the http sender's. A retried timeout may, rarely, send
/// an SMS twice; a duplicate code is better than none.
pub struct LiveSender {
    smtp: AsyncSmtpTransport<Tokio1Executor>,
    mail_from: Mailbox,
    telnyx: TelnyxClient,
    retry: RetryPolicy,
}

struct TelnyxClient {
    client: reqwest::Client,
    base: Url,
    api_key: String,
    from: String,
    connection_id: Option<String>,
}

impl LiveSender {
    /// Builds from `WARDEN_SMTP_URL`, `WARDEN_MAIL_FROM`, `WARDEN_TELNYX_API_KEY`,
    /// `WARDEN_TELNYX_BASE_URL`, `WARDEN_TELNYX_FROM` and `WARDEN_TELNYX_CONNECTION_ID`.
    pub fn from_env(env: &SenderEnv) -> Result<Self, SenderConfigError> {
        let smtp_url =
            nonblank(&env.smtp_url).ok_or(SenderConfigError::Missing("WARDEN_SMTP_URL", "live"))?;
        let smtp = smtp_transport(smtp_url)?;
        let mail_from = nonblank(&env.mail_from)
            .unwrap_or(DEFAULT_MAIL_FROM)
            .trim()
            .parse::<Mailbox>()
            .map_err(|_| {
                SenderConfigError::Invalid(
                    "WARDEN_MAIL_FROM",
                    "must be an address like `Warden <no-reply@example.com>`".to_owned(),
                )
            })?;
        let api_key = nonblank(&env.telnyx_api_key)
            .ok_or(SenderConfigError::Missing("WARDEN_TELNYX_API_KEY", "live"))?;
        let from = nonblank(&env.telnyx_from)
            .ok_or(SenderConfigError::Missing("WARDEN_TELNYX_FROM", "live"))?;
        let base = parse_http_url(
            "WARDEN_TELNYX_BASE_URL",
            nonblank(&env.telnyx_base_url).unwrap_or(DEFAULT_TELNYX_BASE_URL),
        )?;
        Ok(Self {
            smtp,
            mail_from,
            telnyx: TelnyxClient {
                client: http_client()?,
                base,
                api_key: api_key.to_owned(),
                from: from.to_owned(),
                connection_id: nonblank(&env.telnyx_connection_id).map(str::to_owned),
            },
            retry: RetryPolicy::default(),
        })
    }

    /// Replaces the retry policy (tests use short pauses).
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    async fn send_email(&self, message: &OutboundMessage) -> Result<(), SendError> {
        let to = message.to.trim().parse::<Mailbox>().map_err(|_| {
            SendError::Rejected("the recipient is not a valid email address".to_owned())
        })?;
        let email = lettre::Message::builder()
            .from(self.mail_from.clone())
            .to(to)
            .subject(subject_for(&message.purpose))
            .header(ContentType::TEXT_PLAIN)
            .body(message.message.clone())
            .map_err(|_| SendError::Rejected("the email could not be built".to_owned()))?;
        with_retry(self.retry, "smtp", || async {
            self.smtp
                .send(email.clone())
                .await
                .map(|_| ())
                .map_err(|e| classify_smtp_error(&e))
        })
        .await
    }

    async fn telnyx_post<B: Serialize + Sync>(
        &self,
        what: &str,
        path: &str,
        body: &B,
    ) -> Result<(), SendError> {
        let url = telnyx_url(&self.telnyx.base, path);
        with_retry(self.retry, what, || async {
            let response = self
                .telnyx
                .client
                .post(url.clone())
                .bearer_auth(&self.telnyx.api_key)
                .json(body)
                .send()
                .await
                .map_err(|e| Attempt::Retry(describe_transport_error(&e)))?;
            let status = response.status();
            if status.is_success() {
                return Ok(());
            }
            // Only Telnyx's numeric error codes: its details may echo the number or text.
            let codes = response
                .json::<serde_json::Value>()
                .await
                .ok()
                .map(|v| telnyx_error_codes(&v))
                .unwrap_or_default();
            Err(classify_status(status, &codes))
        })
        .await
    }
}

impl fmt::Debug for LiveSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveSender")
            .field("mail_from", &self.mail_from.to_string())
            .field("telnyx_base", &origin(&self.telnyx.base))
            .field("telnyx_api_key", &"<redacted>")
            .field("telnyx_from", &self.telnyx.from)
            .field("telnyx_connection_id", &self.telnyx.connection_id)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct TelnyxSms<'a> {
    from: &'a str,
    to: &'a str,
    text: &'a str,
}

#[async_trait]
impl Sender for LiveSender {
    async fn send(&self, message: &OutboundMessage) -> Result<(), SendError> {
        match message.channel {
            Channel::Email => self.send_email(message).await,
            Channel::Sms => {
                let body = TelnyxSms {
                    from: &self.telnyx.from,
                    to: message.to.trim(),
                    text: &message.message,
                };
                self.telnyx_post("telnyx sms", "messages", &body).await
            }
            // Speaking a code needs a Call Control webhook (on `call.answered`, `speak` the
            // text, then hang up), which Warden does not run yet. Dialing without speaking
            // would report a delivery that never happened, so voice is unavailable here.
            Channel::Call => Err(SendError::Unavailable(
                "voice delivery through Telnyx needs call control webhooks, which are not available yet"
                    .to_owned(),
            )),
        }
    }
}

/// `{base}/{path}`, keeping any path already in the base (`…/v2` + `messages`).
fn telnyx_url(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    let joined = format!("{}/{path}", base.path().trim_end_matches('/'));
    url.set_path(&joined);
    url
}

/// `errors[].code` of a Telnyx error body, comma-separated (`"40310,10015"`).
fn telnyx_error_codes(body: &serde_json::Value) -> String {
    body.get("errors")
        .and_then(serde_json::Value::as_array)
        .map(|errors| {
            errors
                .iter()
                .filter_map(|e| e.get("code"))
                .filter_map(|c| match c {
                    serde_json::Value::String(s)
                        if s.chars().all(|c| c.is_ascii_alphanumeric()) =>
                    {
                        Some(s.clone())
                    }
                    serde_json::Value::Number(n) => Some(n.to_string()),
                    _ => None,
                })
                .take(5)
                .collect::<Vec<_>>()
                .join(",")
        })
        .map(|codes| {
            if codes.is_empty() {
                codes
            } else {
                format!("telnyx error {codes}")
            }
        })
        .unwrap_or_default()
}

/// Builds the SMTP transport. `smtp://` to a non-loopback host means STARTTLS, required (so
/// `smtp://user:pass@host:587` never sends the password in the clear); to a loopback host it
/// is plain. `smtps://` is TLS from the first byte. An explicit `?tls=required` or
/// `?tls=opportunistic` is kept as given.
fn smtp_transport(raw: &str) -> Result<AsyncSmtpTransport<Tokio1Executor>, SenderConfigError> {
    let url = smtp_url(raw)?;
    // lettre's own errors here name the scheme or host only, but keep ours uniform.
    let builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.as_str()).map_err(|_| {
        SenderConfigError::Invalid(
            "WARDEN_SMTP_URL",
            "lettre could not use this URL".to_owned(),
        )
    })?;
    Ok(builder.timeout(Some(SMTP_TIMEOUT)).build())
}

/// `WARDEN_SMTP_URL` with the TLS mode made explicit (see [`smtp_transport`]).
fn smtp_url(raw: &str) -> Result<Url, SenderConfigError> {
    const NAME: &str = "WARDEN_SMTP_URL";
    let mut url = Url::parse(raw.trim())
        .map_err(|e| SenderConfigError::Invalid(NAME, format!("not a URL ({e})")))?;
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| SenderConfigError::Invalid(NAME, "has no host".to_owned()))?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    let tls = url
        .query_pairs()
        .find(|(k, _)| k == "tls")
        .map(|(_, v)| v.into_owned());
    match (url.scheme(), tls.as_deref()) {
        ("smtp", None) if !loopback => {
            url.query_pairs_mut().append_pair("tls", "required");
        }
        ("smtp", None | Some("required" | "opportunistic")) | ("smtps", None) => {}
        _ => {
            return Err(SenderConfigError::Invalid(
                NAME,
                "must be smtp://… or smtps://…, with tls=required|opportunistic if any".to_owned(),
            ))
        }
    }
    Ok(url)
}

/// 5xx replies are final; 4xx replies, timeouts, connection and TLS trouble are retried.
/// Only the reply code goes in the error, never the server's text.
fn classify_smtp_error(e: &lettre::transport::smtp::Error) -> Attempt {
    let code = e.status().map(|c| c.to_string());
    if e.is_permanent() {
        Attempt::Reject(format!("smtp reply {}", code.unwrap_or_default()))
    } else if e.is_transient() {
        Attempt::Retry(format!("smtp reply {}", code.unwrap_or_default()))
    } else if e.is_timeout() {
        Attempt::Retry("smtp timed out".to_owned())
    } else if e.is_tls() {
        Attempt::Retry("smtp tls failure".to_owned())
    } else if e.is_client() {
        // E.g. no common authentication mechanism: a misconfiguration.
        Attempt::Retry("smtp client error (check WARDEN_SMTP_URL)".to_owned())
    } else {
        Attempt::Retry("smtp connection failed".to_owned())
    }
}

/// The email subject for a purpose.
fn subject_for(purpose: &str) -> &'static str {
    match purpose {
        "two_factor_enrollment" | "two_factor_sign_in" => "Your Warden security code",
        "verification" => "Verify your email address",
        "invitation" => "You have been invited",
        _ => "A message from Warden",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn telnyx_url_keeps_base_path() {
        let base = Url::parse("https://api.telnyx.com/v2").unwrap();
        assert_eq!(
            telnyx_url(&base, "messages").as_str(),
            "https://api.telnyx.com/v2/messages"
        );
        let base = Url::parse("http://127.0.0.1:9/v2/").unwrap();
        assert_eq!(
            telnyx_url(&base, "calls").as_str(),
            "http://127.0.0.1:9/v2/calls"
        );
    }

    #[test]
    fn retry_delay_is_bounded() {
        let p = RetryPolicy {
            attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(500),
        };
        for retry in 1..40 {
            let d = p.delay(retry);
            assert!(d <= Duration::from_millis(500), "{d:?}");
        }
        assert!(p.delay(1) >= Duration::from_millis(50));
    }

    #[test]
    fn smtp_url_tls_modes() {
        let tls = |raw: &str| {
            smtp_url(raw)
                .unwrap()
                .query_pairs()
                .find(|(k, _)| k == "tls")
                .map(|(_, v)| v.into_owned())
        };
        // Remote smtp:// means STARTTLS, required: the password never goes in the clear.
        assert_eq!(
            tls("smtp://u:p@mail.example.com:587").as_deref(),
            Some("required")
        );
        assert_eq!(
            tls("smtp://mail.example.com?tls=opportunistic").as_deref(),
            Some("opportunistic")
        );
        // Loopback relays stay plain; smtps is TLS from the start.
        assert_eq!(tls("smtp://127.0.0.1:2525"), None);
        assert_eq!(tls("smtp://localhost:25"), None);
        assert_eq!(tls("smtp://[::1]:25"), None);
        assert_eq!(tls("smtps://u:p@mail.example.com"), None);
        for bad in [
            "http://mail.example.com",
            "smtp://mail.example.com?tls=none",
            "smtps://x?tls=required",
            "not a url",
        ] {
            let err = smtp_url(bad).unwrap_err();
            assert!(
                matches!(err, SenderConfigError::Invalid("WARDEN_SMTP_URL", _)),
                "{bad}: {err}"
            );
        }
        let err = smtp_url("ftp://user:hunter2@mail.example.com")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn telnyx_codes_only() {
        let v = serde_json::json!({"errors":[{"code":"40310","title":"x","detail":"+15551234567 hello 123456"}]});
        assert_eq!(telnyx_error_codes(&v), "telnyx error 40310");
        assert_eq!(telnyx_error_codes(&serde_json::json!({})), "");
    }
}
