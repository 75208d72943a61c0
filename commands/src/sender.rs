//! The sender port: how SMS codes, voice-call codes and emails leave Warden.
//!
//! Handlers build an [`OutboundMessage`] and hand it to a [`Sender`]; infrastructure decides
//! whether it is logged (development), POSTed to a webhook (`http`) or delivered for real
//! (`live`: SMTP and Telnyx). Nothing here may leak the one-time code or the message body:
//! `Debug` redacts both (and masks the recipient), and [`SendError`] texts never carry them.

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// How a message reaches its recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Sms,
    Call,
    Email,
}

impl Channel {
    /// The wire name (`sms`, `call`, `email`), as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Sms => "sms",
            Channel::Call => "call",
            Channel::Email => "email",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One message to deliver.
///
/// `code` is the one-time code it carries (if any), kept apart so the http sender can hand it
/// to test harnesses and so nothing else has to parse it out of `message`. `Debug` redacts
/// `code` and `message` and masks `to`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboundMessage {
    pub channel: Channel,
    /// E.164 phone number for SMS and calls, an email address for email.
    pub to: String,
    /// The full text: SMS body, words to speak, or the email body (plain text).
    pub message: String,
    pub code: Option<String>,
    /// Why it is sent: `two_factor_enrollment`, `two_factor_sign_in`, `verification`,
    /// `invitation`, `notice`…
    pub purpose: String,
}

impl OutboundMessage {
    pub fn new(
        channel: Channel,
        to: impl Into<String>,
        message: impl Into<String>,
        code: Option<String>,
        purpose: impl Into<String>,
    ) -> Self {
        Self {
            channel,
            to: to.into(),
            message: message.into(),
            code,
            purpose: purpose.into(),
        }
    }

    /// The recipient as it may appear in logs and debug output (see [`mask_recipient`]).
    pub fn masked_to(&self) -> String {
        mask_recipient(&self.to)
    }
}

impl fmt::Debug for OutboundMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboundMessage")
            .field("channel", &self.channel)
            .field("to", &self.masked_to())
            .field("message", &"<redacted>")
            .field("code", &self.code.as_ref().map(|_| "<redacted>"))
            .field("purpose", &self.purpose)
            .finish()
    }
}

/// Masks a recipient for logs: an email keeps its first character and its domain
/// (`a***@example.com`), anything else (a phone number) keeps only its last two characters
/// (`***67`). Short or odd values are masked entirely.
pub fn mask_recipient(to: &str) -> String {
    let to = to.trim();
    if let Some((local, domain)) = to.rsplit_once('@') {
        let first: String = local.chars().take(1).collect();
        if first.is_empty() || domain.is_empty() {
            return "***".to_owned();
        }
        return format!("{first}***@{domain}");
    }
    let count = to.chars().count();
    if count < 6 {
        return "***".to_owned();
    }
    let tail: String = to.chars().skip(count.saturating_sub(2)).collect();
    format!("***{tail}")
}

/// Why a message could not be sent. The texts never contain the code or the message body.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Worth trying again later: the provider or network is down, or the sender is not set up
    /// for this channel.
    #[error("the sender is unavailable: {0}")]
    Unavailable(String),
    /// The provider refused this message (bad recipient, bad request): retrying won't help.
    #[error("the message was refused: {0}")]
    Rejected(String),
}

impl SendError {
    /// A send that failed after its reservation committed: reported as 503 (a backing
    /// service is unavailable) while the reservation still counts.
    pub fn after_commit<E: std::error::Error + 'static>(
        self,
        what: &str,
    ) -> crate::CommandError<E> {
        let why = match self {
            SendError::Unavailable(m) | SendError::Rejected(m) => m,
        };
        crate::CommandError::Secrets(crate::ports::SecretsError::Unavailable(format!(
            "{what} could not be sent: {why}"
        )))
    }
}

/// Delivers messages. Implementations: console (development), http, live.
#[async_trait]
pub trait Sender: Send + Sync + 'static {
    async fn send(&self, message: &OutboundMessage) -> Result<(), SendError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_code_and_body_and_masks_recipient() {
        let m = OutboundMessage::new(
            Channel::Sms,
            "+15551234567",
            "Your Warden code is 482913",
            Some("482913".into()),
            "two_factor_sign_in",
        );
        let dbg = format!("{m:?}");
        assert!(!dbg.contains("482913"), "{dbg}");
        assert!(!dbg.contains("Your Warden"), "{dbg}");
        assert!(!dbg.contains("+15551234567"), "{dbg}");
        assert!(dbg.contains("***67"), "{dbg}");
        assert!(dbg.contains("two_factor_sign_in"), "{dbg}");
    }

    #[test]
    fn channel_serializes_snake_case() {
        assert_eq!(serde_json::to_string(&Channel::Sms).unwrap(), "\"sms\"");
        assert_eq!(serde_json::to_string(&Channel::Call).unwrap(), "\"call\"");
        assert_eq!(serde_json::to_string(&Channel::Email).unwrap(), "\"email\"");
    }

    #[test]
    fn masks() {
        assert_eq!(mask_recipient("alice@example.com"), "a***@example.com");
        assert_eq!(mask_recipient("+15551234567"), "***67");
        assert_eq!(mask_recipient("@x"), "***");
        assert_eq!(mask_recipient("123"), "***");
        assert_eq!(mask_recipient("é@ü"), "é***@ü");
    }
}
