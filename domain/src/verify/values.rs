//! Value objects of the Verify API, parsed once at the edge: channels, code lengths,
//! timeouts, custom codes, app names, call extensions, destination allowlists, webhook URLs
//! and money.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::values::ValidationError;

/// How a verification code reaches the phone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifyChannel {
    Sms,
    Call,
    Flashcall,
}

impl VerifyChannel {
    /// The wire name, as in the Telnyx `Verification.type` enum.
    pub fn as_str(self) -> &'static str {
        match self {
            VerifyChannel::Sms => "sms",
            VerifyChannel::Call => "call",
            VerifyChannel::Flashcall => "flashcall",
        }
    }
}

/// Digits in a generated code: 4 to 10, 6 by default (NIST SP 800-63B and ASVS 6.5.4 ask for
/// at least six; Telnyx's default of five is not followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CodeLength(u8);

impl CodeLength {
    pub const MIN: u8 = 4;
    pub const MAX: u8 = 10;
    pub const DEFAULT: CodeLength = CodeLength(6);

    pub fn parse(pointer: &str, raw: i64) -> Result<Self, ValidationError> {
        if (i64::from(Self::MIN)..=i64::from(Self::MAX)).contains(&raw) {
            Ok(Self(raw as u8))
        } else {
            Err(ValidationError::new(
                pointer,
                "invalid_code_length",
                format!("must be from {} to {}", Self::MIN, Self::MAX),
            ))
        }
    }

    pub fn get(self) -> usize {
        usize::from(self.0)
    }
}

impl Default for CodeLength {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// How long a code works, in seconds: 1 s to 24 h, 300 s by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TimeoutSecs(u32);

impl TimeoutSecs {
    pub const MAX: i64 = 86_400;
    pub const DEFAULT: TimeoutSecs = TimeoutSecs(300);

    pub fn parse(pointer: &str, raw: i64) -> Result<Self, ValidationError> {
        if (1..=Self::MAX).contains(&raw) {
            Ok(Self(raw as u32))
        } else {
            Err(ValidationError::new(
                pointer,
                "invalid_timeout",
                format!("must be from 1 to {} seconds", Self::MAX),
            ))
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl Default for TimeoutSecs {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A code the customer generated themselves (`custom_code`): 4 to 10 digits. Never
/// `Debug`-printed; only its keyed digest is stored.
#[derive(Clone, PartialEq, Eq)]
pub struct CustomCode(String);

impl std::fmt::Debug for CustomCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CustomCode(<redacted>)")
    }
}

impl CustomCode {
    pub fn parse(pointer: &str, raw: &str) -> Result<Self, ValidationError> {
        let n = raw.len();
        if (usize::from(CodeLength::MIN)..=usize::from(CodeLength::MAX)).contains(&n)
            && raw.bytes().all(|b| b.is_ascii_digit())
        {
            Ok(Self(raw.to_owned()))
        } else {
            Err(ValidationError::new(
                pointer,
                "invalid_custom_code",
                format!("must be {} to {} digits", CodeLength::MIN, CodeLength::MAX),
            ))
        }
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// The application name shown in messages: `^[A-Za-z0-9 -]{1,30}$` (Telnyx's pattern).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AppName(String);

impl AppName {
    pub fn parse(pointer: &str, raw: &str) -> Result<Self, ValidationError> {
        let ok = (1..=30).contains(&raw.len())
            && raw
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == ' ' || c == '-');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(ValidationError::new(
                pointer,
                "invalid_app_name",
                "must be 1 to 30 letters, digits, spaces or hyphens",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// DTMF digits dialled after a call is answered: `0-9 A-D * #`, `w` (0.5 s) and `W` (1 s).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Extension(String);

impl Extension {
    pub fn parse(pointer: &str, raw: &str) -> Result<Self, ValidationError> {
        let ok = (1..=32).contains(&raw.len())
            && raw
                .chars()
                .all(|c| c.is_ascii_digit() || matches!(c, 'A'..='D' | '*' | '#' | 'w' | 'W'));
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(ValidationError::new(
                pointer,
                "invalid_extension",
                "must be 1 to 32 of 0-9, A-D, *, #, w and W",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where codes may be sent: every country (`["*"]`) or a set of ISO 3166-1 alpha-2 codes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "Vec<String>", try_from = "Vec<String>")]
pub enum Destinations {
    All,
    Countries(BTreeSet<String>),
}

impl Default for Destinations {
    /// Telnyx: the allowlist is optional; without one, every destination is allowed.
    fn default() -> Self {
        Destinations::All
    }
}

impl From<Destinations> for Vec<String> {
    fn from(d: Destinations) -> Self {
        match d {
            Destinations::All => vec!["*".to_owned()],
            Destinations::Countries(set) => set.into_iter().collect(),
        }
    }
}

impl TryFrom<Vec<String>> for Destinations {
    type Error = String;
    fn try_from(v: Vec<String>) -> Result<Self, String> {
        Destinations::parse("/", &v).map_err(|e| e.detail)
    }
}

impl Destinations {
    pub fn parse(pointer: &str, raw: &[String]) -> Result<Self, ValidationError> {
        if raw.iter().any(|c| c == "*") {
            return if raw.len() == 1 {
                Ok(Destinations::All)
            } else {
                Err(ValidationError::new(
                    pointer,
                    "invalid_destinations",
                    "\"*\" allows every destination and cannot be combined with country codes",
                ))
            };
        }
        let mut set = BTreeSet::new();
        for (i, c) in raw.iter().enumerate() {
            if c.len() != 2 || !c.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(ValidationError::new(
                    format!("{pointer}/{i}"),
                    "invalid_country_code",
                    "must be an ISO 3166-1 alpha-2 country code in upper case, e.g. US, or \"*\"",
                ));
            }
            set.insert(c.clone());
        }
        Ok(Destinations::Countries(set))
    }

    /// Whether a number in `country` (None: unknown country) may receive codes.
    pub fn allows(&self, country: Option<&str>) -> bool {
        match self {
            Destinations::All => true,
            Destinations::Countries(set) => country.is_some_and(|c| set.contains(c)),
        }
    }
}

/// A webhook URL: absolute `http` or `https`, no spaces, at most 2048 characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WebhookUrl(String);

impl WebhookUrl {
    pub fn parse(pointer: &str, raw: &str) -> Result<Self, ValidationError> {
        let rest = raw
            .strip_prefix("https://")
            .or_else(|| raw.strip_prefix("http://"));
        let ok = raw.len() <= 2048
            && rest.is_some_and(|r| {
                let host = r.split(['/', '?', '#']).next().unwrap_or_default();
                !host.is_empty() && !r.chars().any(|c| c.is_whitespace() || c.is_control())
            });
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(ValidationError::new(
                pointer,
                "invalid_url",
                "must be an absolute http or https URL",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An amount of US dollars in millionths, so sums are exact.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MicroUsd(pub i64);

impl MicroUsd {
    /// At most a million dollars a day; negative or non-finite amounts are refused.
    pub fn parse(pointer: &str, dollars: f64) -> Result<Self, ValidationError> {
        if dollars.is_finite() && (0.0..=1_000_000.0).contains(&dollars) {
            Ok(Self((dollars * 1_000_000.0).round() as i64))
        } else {
            Err(ValidationError::new(
                pointer,
                "invalid_amount",
                "must be a number of US dollars from 0 to 1000000",
            ))
        }
    }

    pub fn dollars(self) -> f64 {
        self.0 as f64 / 1_000_000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_at_the_edge() {
        assert!(CodeLength::parse("/c", 3).is_err());
        assert_eq!(CodeLength::parse("/c", 10).unwrap().get(), 10);
        assert!(CustomCode::parse("/c", "12a45").is_err());
        assert!(CustomCode::parse("/c", "123").is_err());
        assert!(CustomCode::parse("/c", "4361").is_ok());
        assert!(AppName::parse("/a", "Acme Bank-2").is_ok());
        assert!(AppName::parse("/a", "Acme!").is_err());
        assert!(Extension::parse("/e", "1www2WABCDw9").is_ok());
        assert!(Extension::parse("/e", "1x").is_err());
        assert_eq!(
            Destinations::parse("/d", &["*".into()]).unwrap(),
            Destinations::All
        );
        assert!(Destinations::parse("/d", &["us".into()]).is_err());
        assert!(Destinations::parse("/d", &["*".into(), "US".into()]).is_err());
        let us = Destinations::parse("/d", &["US".into()]).unwrap();
        assert!(us.allows(Some("US")) && !us.allows(Some("GB")) && !us.allows(None));
        assert!(WebhookUrl::parse("/w", "https://example.com/hook").is_ok());
        assert!(WebhookUrl::parse("/w", "ftp://example.com").is_err());
        assert!(WebhookUrl::parse("/w", "https://").is_err());
        assert_eq!(MicroUsd::parse("/m", 1.5).unwrap(), MicroUsd(1_500_000));
        assert!(MicroUsd::parse("/m", -1.0).is_err());
    }
}
