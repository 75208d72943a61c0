//! Settings for `warden serve`: every option is a flag and an environment variable, and
//! every one has a working default (embedded SQLite, in-process bus, generated key file).

use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Environment {
    Development,
    Production,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SenderKind {
    /// Log each message (development only).
    Console,
    /// POST each message as JSON to WARDEN_SENDER_URL.
    Http,
    /// Email over SMTP, SMS and calls through the Telnyx API.
    Live,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where Warden keeps its data and how it talks to the world.
#[derive(Debug, Clone, clap::Args)]
pub struct StorageSettings {
    /// Directory for the embedded database and the generated master key file.
    #[arg(long, env = "WARDEN_DATA_DIR", default_value = "./warden-data")]
    pub data_dir: PathBuf,
    /// postgres://… for Postgres; unset for embedded SQLite in the data directory.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Base64 of 32 bytes. Unset: a key file is generated in the data directory (development only).
    #[arg(long, env = "WARDEN_MASTER_KEY", hide_env_values = true)]
    pub master_key: Option<String>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// Address to listen on.
    #[arg(long, env = "WARDEN_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub storage: StorageSettings,
    /// nats://… to broadcast events on JetStream; unset for an in-process bus.
    #[arg(long, env = "NATS_URL")]
    pub nats_url: Option<String>,
    /// JetStream stream the relay publishes to.
    #[arg(long, env = "WARDEN_NATS_STREAM", default_value = "WARDEN_EVENTS")]
    pub nats_stream: String,
    /// Subject prefix: events go to `<prefix>.<stream_type>.<event_type>`.
    #[arg(
        long,
        env = "WARDEN_NATS_SUBJECT_PREFIX",
        default_value = "warden.events"
    )]
    pub nats_subject_prefix: String,
    #[arg(long, env = "WARDEN_ENV", value_enum, default_value = "development")]
    pub env: Environment,
    /// How SMS, calls and email are sent.
    #[arg(long, env = "WARDEN_SENDER", value_enum, default_value = "console")]
    pub sender: SenderKind,
    /// Where the `http` sender POSTs messages.
    #[arg(long, env = "WARDEN_SENDER_URL")]
    pub sender_url: Option<String>,
    /// `live` sender: SMTP server for email, `smtp://user:pass@host:587` or `smtps://…`.
    #[arg(long, env = "WARDEN_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,
    /// `live` sender: the From address of emails.
    #[arg(long, env = "WARDEN_MAIL_FROM")]
    pub mail_from: Option<String>,
    /// `live` sender: Telnyx API key for SMS and calls.
    #[arg(long, env = "WARDEN_TELNYX_API_KEY", hide_env_values = true)]
    pub telnyx_api_key: Option<String>,
    /// `live` sender: Telnyx API base URL.
    #[arg(long, env = "WARDEN_TELNYX_BASE_URL")]
    pub telnyx_base_url: Option<String>,
    /// `live` sender: the number SMS and calls come from.
    #[arg(long, env = "WARDEN_TELNYX_FROM")]
    pub telnyx_from: Option<String>,
    /// `live` sender: the Telnyx Call Control connection for voice codes.
    #[arg(long, env = "WARDEN_TELNYX_CONNECTION_ID")]
    pub telnyx_connection_id: Option<String>,
    /// Hard session lifetime in seconds.
    #[arg(long, env = "WARDEN_SESSION_LIFETIME_SECS", default_value_t = 24 * 3600)]
    pub session_lifetime_secs: i64,
    /// Idle session timeout in seconds.
    #[arg(long, env = "WARDEN_SESSION_IDLE_SECS", default_value_t = 3600)]
    pub session_idle_secs: i64,
    /// Log line format.
    #[arg(long, env = "WARDEN_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Verify: codes sent to one number per verify profile per hour.
    #[arg(long, env = "WARDEN_VERIFY_SENDS_PER_NUMBER", default_value_t = 5)]
    pub verify_sends_per_number: usize,
    /// Verify: codes sent per verify profile per hour.
    #[arg(long, env = "WARDEN_VERIFY_SENDS_PER_PROFILE", default_value_t = 1000)]
    pub verify_sends_per_profile: usize,
    /// Verify: codes requested from one client address per verify profile per hour.
    #[arg(long, env = "WARDEN_VERIFY_SENDS_PER_CLIENT", default_value_t = 300)]
    pub verify_sends_per_client: usize,
    /// Verify: price of an SMS verification in USD (counts toward daily_spend_limit).
    #[arg(long, env = "WARDEN_VERIFY_PRICE_SMS", default_value_t = 0.05)]
    pub verify_price_sms: f64,
    /// Verify: price of a call verification in USD.
    #[arg(long, env = "WARDEN_VERIFY_PRICE_CALL", default_value_t = 0.09)]
    pub verify_price_call: f64,
    /// Verify: price of a flash-call verification in USD.
    #[arg(long, env = "WARDEN_VERIFY_PRICE_FLASHCALL", default_value_t = 0.045)]
    pub verify_price_flashcall: f64,
    /// Development only: webhook retry pauses in percent of the normal schedule (5 s, 30 s,
    /// 2 min, ...), so fault tests see a receiver's outage end within seconds.
    #[arg(long, env = "WARDEN_WEBHOOK_BACKOFF_PERCENT", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub webhook_backoff_percent: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(
        "WARDEN_SENDER=console only logs messages and is refused in production; use http or live"
    )]
    ConsoleSenderInProduction,
    #[error("production needs WARDEN_MASTER_KEY; a generated key file is for development only")]
    GeneratedKeyInProduction,
    #[error("WARDEN_SENDER=http needs WARDEN_SENDER_URL")]
    MissingSenderUrl,
    #[error("session lifetimes must be positive")]
    BadSessionLifetime,
    #[error("Verify prices must be US dollar amounts from 0 to 1000000")]
    BadVerifyPrice,
    #[error("WARDEN_WEBHOOK_BACKOFF_PERCENT is for development only; production retries on the full schedule")]
    ShortWebhookBackoffInProduction,
}

impl Settings {
    /// Refuses combinations that are unsafe or cannot work.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.env == Environment::Production {
            if self.sender == SenderKind::Console {
                return Err(SettingsError::ConsoleSenderInProduction);
            }
            if self.storage.master_key.is_none() {
                return Err(SettingsError::GeneratedKeyInProduction);
            }
            if self.webhook_backoff_percent != 100 {
                return Err(SettingsError::ShortWebhookBackoffInProduction);
            }
        }
        if self.sender == SenderKind::Http && self.sender_url.is_none() {
            return Err(SettingsError::MissingSenderUrl);
        }
        if self.session_lifetime_secs <= 0 || self.session_idle_secs <= 0 {
            return Err(SettingsError::BadSessionLifetime);
        }
        self.verify_config()?;
        Ok(())
    }

    /// Defaults for tests and embedding: port 0 on loopback, everything else default.
    pub fn for_test(data_dir: PathBuf) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            storage: StorageSettings {
                data_dir,
                database_url: None,
                master_key: None,
            },
            nats_url: None,
            nats_stream: "WARDEN_EVENTS".into(),
            nats_subject_prefix: "warden.events".into(),
            env: Environment::Development,
            sender: SenderKind::Console,
            sender_url: None,
            smtp_url: None,
            mail_from: None,
            telnyx_api_key: None,
            telnyx_base_url: None,
            telnyx_from: None,
            telnyx_connection_id: None,
            session_lifetime_secs: 24 * 3600,
            session_idle_secs: 3600,
            log_format: LogFormat::Text,
            verify_sends_per_number: 5,
            verify_sends_per_profile: 1000,
            verify_sends_per_client: 300,
            verify_price_sms: 0.05,
            verify_price_call: 0.09,
            verify_price_flashcall: 0.045,
            webhook_backoff_percent: 100,
        }
    }

    /// Verify's send limits and prices.
    pub fn verify_config(&self) -> Result<warden_commands::verify::VerifyConfig, SettingsError> {
        use warden_domain::verify::profile::SendLimits;
        use warden_domain::verify::values::MicroUsd;
        let price = |usd: f64| MicroUsd::parse("/", usd).map_err(|_| SettingsError::BadVerifyPrice);
        Ok(warden_commands::verify::VerifyConfig {
            limits: SendLimits {
                per_number: self.verify_sends_per_number,
                per_profile: self.verify_sends_per_profile,
                per_client: self.verify_sends_per_client,
            },
            prices: warden_commands::verify::Prices {
                sms: price(self.verify_price_sms)?,
                call: price(self.verify_price_call)?,
                flashcall: price(self.verify_price_flashcall)?,
            },
        })
    }
}

impl Settings {
    /// The sender configured by these settings.
    pub fn sender(
        &self,
    ) -> Result<
        std::sync::Arc<dyn warden_commands::sender::Sender>,
        warden_infra::sender::SenderConfigError,
    > {
        use warden_infra::sender::{from_settings, SenderEnv, SenderKind as Kind};
        let env = SenderEnv {
            production: self.env == Environment::Production,
            sender_url: self.sender_url.clone(),
            smtp_url: self.smtp_url.clone(),
            mail_from: self.mail_from.clone(),
            telnyx_api_key: self.telnyx_api_key.clone(),
            telnyx_base_url: self.telnyx_base_url.clone(),
            telnyx_from: self.telnyx_from.clone(),
            telnyx_connection_id: self.telnyx_connection_id.clone(),
        };
        let kind = match self.sender {
            SenderKind::Console => Kind::Console,
            SenderKind::Http => Kind::Http,
            SenderKind::Live => Kind::Live,
        };
        from_settings(kind, &env)
    }
}
