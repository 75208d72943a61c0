//! The senders against loopback fakes: a webhook receiver, a fake Telnyx, a fake SMTP server,
//! and captured tracing output for the console sender.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use warden_commands::sender::{Channel, OutboundMessage, SendError, Sender};
use warden_infra::sender::{
    from_settings, ConsoleSender, HttpSender, LiveSender, RetryPolicy, SenderConfigError,
    SenderEnv, SenderKind, CONSOLE_TARGET,
};

const CODE: &str = "482913";
const BODY: &str = "Your Warden code is 482913";
const PHONE: &str = "+15551234567";

fn sms() -> OutboundMessage {
    OutboundMessage::new(
        Channel::Sms,
        PHONE,
        BODY,
        Some(CODE.into()),
        "two_factor_sign_in",
    )
}

fn fast() -> RetryPolicy {
    RetryPolicy {
        attempts: 3,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(40),
    }
}

fn assert_no_secret(err: &SendError) {
    let text = format!("{err} {err:?}");
    assert!(!text.contains(CODE), "{text}");
    assert!(!text.contains(BODY), "{text}");
}

// ---------------------------------------------------------------------------------------------
// A loopback HTTP receiver: records every request, answers from a script (then 200).
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Hit {
    path: String,
    authorization: Option<String>,
    content_type: Option<String>,
    body: Value,
}

#[derive(Clone, Default)]
struct Receiver {
    hits: Arc<Mutex<Vec<Hit>>>,
    script: Arc<Mutex<VecDeque<u16>>>,
}

impl Receiver {
    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }
}

async fn record(
    State(r): State<Receiver>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    r.hits.lock().unwrap().push(Hit {
        path: uri.path().to_owned(),
        authorization: header("authorization"),
        content_type: header("content-type"),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    });
    let status = r.script.lock().unwrap().pop_front().unwrap_or(200);
    StatusCode::from_u16(status).unwrap()
}

/// Starts a receiver answering `script` in order, then 200. Returns its base URL.
async fn receiver(script: &[u16]) -> (String, Receiver) {
    let r = Receiver::default();
    r.script.lock().unwrap().extend(script.iter().copied());
    let app = axum::Router::new()
        .fallback(axum::routing::any(record))
        .with_state(r.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), r)
}

/// A loopback URL nothing listens on.
async fn dead_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}/hook")
}

// ---------------------------------------------------------------------------------------------
// HttpSender
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn http_posts_the_contract_json() {
    let (base, r) = receiver(&[]).await;
    let sender = HttpSender::new(&format!("{base}/hook"))
        .unwrap()
        .with_retry(fast());
    sender.send(&sms()).await.unwrap();
    let email = OutboundMessage::new(
        Channel::Email,
        "alice@example.com",
        "You were invited to Acme.",
        None,
        "invitation",
    );
    sender.send(&email).await.unwrap();
    let call = OutboundMessage::new(
        Channel::Call,
        PHONE,
        "4 8 2 9 1 3",
        Some(CODE.into()),
        "two_factor_enrollment",
    );
    sender.send(&call).await.unwrap();

    let hits = r.hits();
    assert_eq!(hits.len(), 3);
    assert_eq!(hits[0].path, "/hook");
    assert_eq!(hits[0].content_type.as_deref(), Some("application/json"));
    assert_eq!(hits[0].authorization, None);
    assert_eq!(
        hits[0].body,
        json!({
            "channel": "sms",
            "to": PHONE,
            "message": BODY,
            "code": CODE,
            "purpose": "two_factor_sign_in",
        })
    );
    assert_eq!(
        hits[1].body,
        json!({
            "channel": "email",
            "to": "alice@example.com",
            "message": "You were invited to Acme.",
            "code": null,
            "purpose": "invitation",
        })
    );
    assert_eq!(hits[2].body["channel"], "call");
    assert_eq!(hits[2].body["code"], CODE);
}

#[tokio::test]
async fn http_retries_transient_failures_then_delivers_once() {
    let (base, r) = receiver(&[503, 500]).await;
    let sender = HttpSender::new(&base).unwrap().with_retry(fast());
    sender.send(&sms()).await.unwrap();
    let hits = r.hits();
    assert_eq!(hits.len(), 3, "two failures, then the delivery");
    assert!(hits.iter().all(|h| h.body["code"] == CODE));
}

#[tokio::test]
async fn http_retries_408_and_429() {
    let (base, r) = receiver(&[429, 408]).await;
    let sender = HttpSender::new(&base).unwrap().with_retry(fast());
    sender.send(&sms()).await.unwrap();
    assert_eq!(r.hits().len(), 3);
}

#[tokio::test]
async fn http_400_is_rejected_without_retry() {
    let (base, r) = receiver(&[400]).await;
    let sender = HttpSender::new(&base).unwrap().with_retry(fast());
    let err = sender.send(&sms()).await.unwrap_err();
    assert!(matches!(err, SendError::Rejected(_)), "{err:?}");
    assert!(err.to_string().contains("400"), "{err}");
    assert_no_secret(&err);
    assert_eq!(r.hits().len(), 1, "no retry after a 4xx");
}

#[tokio::test]
async fn http_persistent_5xx_is_unavailable_after_all_attempts() {
    let (base, r) = receiver(&[500, 502, 503, 504]).await;
    let sender = HttpSender::new(&base).unwrap().with_retry(fast());
    let err = sender.send(&sms()).await.unwrap_err();
    assert!(matches!(err, SendError::Unavailable(_)), "{err:?}");
    assert_no_secret(&err);
    assert_eq!(r.hits().len(), 3, "attempts = 3");
}

#[tokio::test]
async fn http_unreachable_is_unavailable_and_hides_the_url() {
    let url = dead_url().await;
    let with_token = url.replace("/hook", "/hook?token=sekrit-token");
    let sender = HttpSender::new(&with_token).unwrap().with_retry(fast());
    let err = sender.send(&sms()).await.unwrap_err();
    assert!(matches!(err, SendError::Unavailable(_)), "{err:?}");
    assert_no_secret(&err);
    assert!(!err.to_string().contains("sekrit-token"), "{err}");
    assert!(!format!("{sender:?}").contains("sekrit-token"));
}

#[test]
fn http_url_must_be_http() {
    for bad in ["", "ftp://example.com/x", "not a url", "file:///etc/passwd"] {
        let err = HttpSender::new(bad).unwrap_err();
        assert!(
            matches!(err, SenderConfigError::Invalid("WARDEN_SENDER_URL", _)),
            "{bad}: {err}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// ConsoleSender
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn console_logs_one_warn_line_with_masked_recipient() {
    let out = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(out.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    ConsoleSender.send(&sms()).await.unwrap();
    let email = OutboundMessage::new(
        Channel::Email,
        "alice@example.com",
        "Click to verify",
        None,
        "verification",
    );
    ConsoleSender.send(&email).await.unwrap();

    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    let sms_line = &lines[0];
    assert_eq!(sms_line["target"], CONSOLE_TARGET);
    assert_eq!(sms_line["level"], "WARN");
    assert_eq!(sms_line["fields"]["channel"], "sms");
    assert_eq!(sms_line["fields"]["to"], "***67");
    assert_eq!(sms_line["fields"]["purpose"], "two_factor_sign_in");
    // Development only, and that is its point: the code is there to copy.
    assert_eq!(sms_line["fields"]["code"], CODE);
    assert_eq!(sms_line["fields"]["body"], BODY);
    assert!(
        !text.contains(PHONE),
        "the full number never appears: {text}"
    );

    let email_line = &lines[1];
    assert_eq!(email_line["target"], CONSOLE_TARGET);
    assert_eq!(email_line["fields"]["to"], "a***@example.com");
    assert!(!text.contains("alice@"), "{text}");
}

#[test]
fn console_is_refused_in_production() {
    let env = SenderEnv {
        production: true,
        ..SenderEnv::default()
    };
    assert_eq!(
        from_settings(SenderKind::Console, &env).err(),
        Some(SenderConfigError::ConsoleInProduction)
    );
    assert!(from_settings(SenderKind::Console, &SenderEnv::default()).is_ok());
}

#[test]
fn kinds_parse() {
    assert_eq!(
        "console".parse::<SenderKind>().unwrap(),
        SenderKind::Console
    );
    assert_eq!("HTTP".parse::<SenderKind>().unwrap(), SenderKind::Http);
    assert_eq!("live".parse::<SenderKind>().unwrap(), SenderKind::Live);
    assert!("smoke-signals".parse::<SenderKind>().is_err());
}

#[test]
fn http_needs_a_url() {
    assert_eq!(
        from_settings(SenderKind::Http, &SenderEnv::default()).err(),
        Some(SenderConfigError::Missing("WARDEN_SENDER_URL", "http"))
    );
    let env = SenderEnv {
        sender_url: Some("http://127.0.0.1:9/hook".into()),
        ..SenderEnv::default()
    };
    assert!(from_settings(SenderKind::Http, &env).is_ok());
}

// ---------------------------------------------------------------------------------------------
// LiveSender: configuration
// ---------------------------------------------------------------------------------------------

fn live_env(telnyx_base: &str, smtp: &str) -> SenderEnv {
    SenderEnv {
        production: true,
        smtp_url: Some(smtp.into()),
        telnyx_api_key: Some("KEY0123-test-secret".into()),
        telnyx_base_url: Some(telnyx_base.into()),
        telnyx_from: Some("+15550001111".into()),
        telnyx_connection_id: Some("conn-42".into()),
        ..SenderEnv::default()
    }
}

#[test]
fn live_requires_its_settings_and_hides_secrets() {
    let full = live_env(
        "http://127.0.0.1:9/v2",
        "smtps://mailer:hunter2@mail.example.com",
    );
    assert!(from_settings(SenderKind::Live, &full).is_ok());
    let live = LiveSender::from_env(&full).unwrap();
    let dbg = format!("{live:?} {full:?}");
    assert!(!dbg.contains("KEY0123"), "{dbg}");
    assert!(!dbg.contains("hunter2"), "{dbg}");

    let missing = |edit: fn(&mut SenderEnv)| {
        let mut env = full.clone();
        edit(&mut env);
        LiveSender::from_env(&env).unwrap_err()
    };
    assert_eq!(
        missing(|e| e.smtp_url = None),
        SenderConfigError::Missing("WARDEN_SMTP_URL", "live")
    );
    assert_eq!(
        missing(|e| e.telnyx_api_key = None),
        SenderConfigError::Missing("WARDEN_TELNYX_API_KEY", "live")
    );
    assert_eq!(
        missing(|e| e.telnyx_from = None),
        SenderConfigError::Missing("WARDEN_TELNYX_FROM", "live")
    );
    assert!(matches!(
        missing(|e| e.mail_from = Some("not an address".into())),
        SenderConfigError::Invalid("WARDEN_MAIL_FROM", _)
    ));
    assert!(matches!(
        missing(|e| e.telnyx_base_url = Some("telnyx".into())),
        SenderConfigError::Invalid("WARDEN_TELNYX_BASE_URL", _)
    ));
    let bad_smtp = missing(|e| e.smtp_url = Some("imap://mailer:hunter2@mail.example.com".into()));
    assert!(
        matches!(bad_smtp, SenderConfigError::Invalid("WARDEN_SMTP_URL", _)),
        "{bad_smtp}"
    );
    assert!(!bad_smtp.to_string().contains("hunter2"));

    // No (or a blank) base URL → Telnyx's own; no connection id is fine until a call is
    // attempted. Blank values count as unset.
    let mut env = full.clone();
    env.telnyx_base_url = Some("  ".into());
    env.telnyx_connection_id = None;
    env.mail_from = Some(String::new());
    assert_eq!(
        missing(|e| e.telnyx_api_key = Some(" ".into())),
        SenderConfigError::Missing("WARDEN_TELNYX_API_KEY", "live")
    );
    let live = LiveSender::from_env(&env).unwrap();
    assert!(format!("{live:?}").contains("https://api.telnyx.com"));
}

// ---------------------------------------------------------------------------------------------
// LiveSender: Telnyx against a fake
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn live_sms_goes_to_telnyx_messages_with_bearer() {
    let (base, r) = receiver(&[]).await;
    let live = LiveSender::from_env(&live_env(&format!("{base}/v2"), "smtp://127.0.0.1:9"))
        .unwrap()
        .with_retry(fast());
    live.send(&sms()).await.unwrap();
    let hits = r.hits();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].path, "/v2/messages");
    assert_eq!(
        hits[0].authorization.as_deref(),
        Some("Bearer KEY0123-test-secret")
    );
    assert_eq!(hits[0].content_type.as_deref(), Some("application/json"));
    assert_eq!(
        hits[0].body,
        json!({"from": "+15550001111", "to": PHONE, "text": BODY})
    );
}

#[tokio::test]
async fn live_voice_is_unavailable_rather_than_a_silent_call() {
    let (base, r) = receiver(&[]).await;
    let live = LiveSender::from_env(&live_env(&format!("{base}/v2/"), "smtp://127.0.0.1:9"))
        .unwrap()
        .with_retry(fast());
    let call = OutboundMessage::new(
        Channel::Call,
        PHONE,
        "Your code is 4 8 2 9 1 3",
        Some(CODE.into()),
        "two_factor_sign_in",
    );
    assert!(matches!(
        live.send(&call).await,
        Err(SendError::Unavailable(_))
    ));
    assert!(
        r.hits().is_empty(),
        "no call is dialed that could not speak the code"
    );
}

#[tokio::test]
async fn live_telnyx_422_is_rejected_and_503_retried() {
    let (base, r) = receiver(&[422]).await;
    let live = LiveSender::from_env(&live_env(&base, "smtp://127.0.0.1:9"))
        .unwrap()
        .with_retry(fast());
    let err = live.send(&sms()).await.unwrap_err();
    assert!(matches!(err, SendError::Rejected(_)), "{err:?}");
    assert_no_secret(&err);
    assert!(!err.to_string().contains("KEY0123"));
    assert_eq!(r.hits().len(), 1);

    let (base, r) = receiver(&[503]).await;
    let live = LiveSender::from_env(&live_env(&base, "smtp://127.0.0.1:9"))
        .unwrap()
        .with_retry(fast());
    live.send(&sms()).await.unwrap();
    assert_eq!(r.hits().len(), 2);
}

// ---------------------------------------------------------------------------------------------
// LiveSender: SMTP against a fake server
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default, Clone)]
struct Mail {
    auth: Option<String>,
    mail_from: String,
    rcpt_to: Vec<String>,
    data: String,
}

/// A minimal SMTP server: EHLO (AUTH PLAIN), MAIL, RCPT (550 for a recipient containing `reject_rcpt`),
/// DATA, QUIT. Records each accepted message.
async fn fake_smtp(reject_rcpt: Option<&'static str>) -> (u16, Arc<Mutex<Vec<Mail>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mails = Arc::new(Mutex::new(Vec::new()));
    let store = mails.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let store = store.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                write.write_all(b"220 fake.test ESMTP\r\n").await.unwrap();
                let mut mail = Mail::default();
                while let Ok(Some(line)) = lines.next_line().await {
                    let upper = line.to_ascii_uppercase();
                    let reply: &[u8] = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
                        b"250-fake.test\r\n250-AUTH PLAIN\r\n250 8BITMIME\r\n"
                    } else if upper.starts_with("AUTH PLAIN") {
                        mail.auth = Some(line["AUTH PLAIN ".len()..].to_owned());
                        b"235 2.7.0 accepted\r\n"
                    } else if upper.starts_with("MAIL FROM:") {
                        mail.mail_from = line["MAIL FROM:".len()..].to_owned();
                        b"250 ok\r\n"
                    } else if upper.starts_with("RCPT TO:") {
                        let to = line["RCPT TO:".len()..].to_owned();
                        if reject_rcpt.is_some_and(|r| to.contains(r)) {
                            b"550 5.1.1 no such user\r\n"
                        } else {
                            mail.rcpt_to.push(to);
                            b"250 ok\r\n"
                        }
                    } else if upper == "DATA" {
                        write.write_all(b"354 go ahead\r\n").await.unwrap();
                        while let Ok(Some(l)) = lines.next_line().await {
                            if l == "." {
                                break;
                            }
                            mail.data.push_str(&l);
                            mail.data.push('\n');
                        }
                        store.lock().unwrap().push(std::mem::take(&mut mail));
                        b"250 queued\r\n"
                    } else if upper == "RSET" || upper == "NOOP" {
                        b"250 ok\r\n"
                    } else if upper == "QUIT" {
                        write.write_all(b"221 bye\r\n").await.unwrap();
                        break;
                    } else {
                        b"502 not implemented\r\n"
                    };
                    write.write_all(reply).await.unwrap();
                }
            });
        }
    });
    (port, mails)
}

#[tokio::test]
async fn live_email_goes_over_smtp() {
    let (port, mails) = fake_smtp(None).await;
    let mut env = live_env(
        "http://127.0.0.1:9",
        &format!("smtp://mailer:hunter2@127.0.0.1:{port}"),
    );
    env.mail_from = Some("Acme Security <security@acme.test>".into());
    let live = LiveSender::from_env(&env).unwrap().with_retry(fast());
    let email = OutboundMessage::new(
        Channel::Email,
        "alice@example.com",
        "Your Warden code is 482913",
        Some(CODE.into()),
        "two_factor_sign_in",
    );
    live.send(&email).await.unwrap();

    let mails = mails.lock().unwrap().clone();
    assert_eq!(mails.len(), 1);
    let mail = &mails[0];
    // AUTH PLAIN "\0mailer\0hunter2" (loopback relay: plain is allowed).
    let auth = base64_decode(mail.auth.as_deref().unwrap());
    assert_eq!(auth, b"\0mailer\0hunter2");
    assert!(mail.mail_from.contains("<security@acme.test>"), "{mail:?}");
    assert_eq!(mail.rcpt_to, vec!["<alice@example.com>".to_owned()]);
    assert!(mail.data.contains("To: alice@example.com"), "{}", mail.data);
    assert!(
        mail.data
            .contains("From: \"Acme Security\" <security@acme.test>")
            || mail
                .data
                .contains("From: Acme Security <security@acme.test>"),
        "{}",
        mail.data
    );
    assert!(
        mail.data.contains("Subject: Your Warden security code"),
        "{}",
        mail.data
    );
    assert!(
        mail.data.contains("Content-Type: text/plain"),
        "{}",
        mail.data
    );
    assert!(mail.data.contains(BODY), "{}", mail.data);
}

#[tokio::test]
async fn live_email_permanent_refusal_is_rejected() {
    let (port, mails) = fake_smtp(Some("nobody@")).await;
    let live = LiveSender::from_env(&live_env(
        "http://127.0.0.1:9",
        &format!("smtp://127.0.0.1:{port}"),
    ))
    .unwrap()
    .with_retry(fast());
    let email = OutboundMessage::new(
        Channel::Email,
        "nobody@example.com",
        BODY,
        Some(CODE.into()),
        "verification",
    );
    let err = live.send(&email).await.unwrap_err();
    assert!(matches!(err, SendError::Rejected(_)), "{err:?}");
    assert!(err.to_string().contains("550"), "{err}");
    assert_no_secret(&err);
    assert!(mails.lock().unwrap().is_empty());

    let bad = OutboundMessage::new(Channel::Email, "not-an-address", BODY, None, "verification");
    assert!(matches!(live.send(&bad).await, Err(SendError::Rejected(_))));
}

#[tokio::test]
async fn live_email_unreachable_smtp_is_unavailable() {
    let dead = dead_url()
        .await
        .replace("http://", "smtp://")
        .replace("/hook", "");
    let live = LiveSender::from_env(&live_env("http://127.0.0.1:9", &dead))
        .unwrap()
        .with_retry(fast());
    let email = OutboundMessage::new(
        Channel::Email,
        "alice@example.com",
        BODY,
        Some(CODE.into()),
        "verification",
    );
    let err = live.send(&email).await.unwrap_err();
    assert!(matches!(err, SendError::Unavailable(_)), "{err:?}");
    assert_no_secret(&err);
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}
