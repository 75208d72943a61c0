//! Value objects parsed once at the edge. After `parse` succeeds, code never re-checks.

use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;

/// A field that failed validation: which one (a JSON pointer), and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{pointer}: {detail}")]
pub struct ValidationError {
    /// JSON pointer into the request body, e.g. `/email`.
    pub pointer: String,
    /// Stable snake_case code, e.g. `invalid_email`.
    pub code: &'static str,
    pub detail: String,
}

impl ValidationError {
    pub fn new(pointer: impl Into<String>, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            pointer: pointer.into(),
            code,
            detail: detail.into(),
        }
    }
}

/// An email address, trimmed, with a lower-cased domain. `normalized()` (all lower case) is
/// what uniqueness is decided on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailAddress(String);

impl EmailAddress {
    pub fn parse(pointer: &str, raw: &str) -> Result<Self, ValidationError> {
        let s = raw.trim();
        let bad =
            || ValidationError::new(pointer, "invalid_email", "must be a valid email address");
        if s.len() > 254 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad());
        }
        let (local, domain) = s.rsplit_once('@').ok_or_else(bad)?;
        let domain_ok = domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..")
            && domain
                .chars()
                .all(|c| c.is_alphanumeric() || c == '-' || c == '.');
        if local.is_empty() || local.len() > 64 || local.contains('@') || !domain_ok {
            return Err(bad());
        }
        Ok(Self(format!("{local}@{}", domain.to_lowercase())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The form uniqueness claims are keyed on.
    pub fn normalized(&self) -> String {
        self.0.to_lowercase()
    }

    pub fn local_part(&self) -> &str {
        self.0.split('@').next().unwrap_or_default()
    }
}

/// A password that meets NIST SP 800-63B-4 §3.1.1.2: NFC-normalized, 15 to 256 characters
/// (code points), no composition rules, not on the blocklist, not built from context words.
/// Never `Debug`-printed.
#[derive(Clone)]
pub struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

pub const PASSWORD_MIN_CHARS: usize = 15;
pub const PASSWORD_MAX_CHARS: usize = 256;

impl Password {
    /// Parses a new password. `context` holds words a guesser would try first (the
    /// service name, the email's local part).
    pub fn parse(pointer: &str, raw: &str, context: &[&str]) -> Result<Self, ValidationError> {
        let nfc: String = raw.nfc().collect();
        let chars = nfc.chars().count();
        if chars < PASSWORD_MIN_CHARS {
            return Err(ValidationError::new(
                pointer,
                "password_too_short",
                format!("must be at least {PASSWORD_MIN_CHARS} characters long; a passphrase of several words is easiest to remember"),
            ));
        }
        if chars > PASSWORD_MAX_CHARS {
            return Err(ValidationError::new(
                pointer,
                "password_too_long",
                format!("must be at most {PASSWORD_MAX_CHARS} characters long"),
            ));
        }
        if crate::values::blocklist::is_blocked(&nfc, context) {
            return Err(ValidationError::new(
                pointer,
                "password_too_common",
                "is too common or too easy to guess (it is on the list of common passwords or built from your email or the service name); choose another",
            ));
        }
        Ok(Self(nfc))
    }

    /// A password as typed at sign-in: normalized the same way, never length-checked (the
    /// check against the stored hash decides).
    pub fn for_verification(raw: &str) -> Self {
        Self(raw.nfc().collect())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// A phone number in E.164: `+`, country code, 7 to 15 digits in all.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PhoneNumber(String);

impl PhoneNumber {
    pub fn parse(pointer: &str, raw: &str) -> Result<Self, ValidationError> {
        let digits = raw.strip_prefix('+').unwrap_or("");
        let ok = (7..=15).contains(&digits.len())
            && digits.chars().all(|c| c.is_ascii_digit())
            && !digits.starts_with('0');
        if !ok {
            return Err(ValidationError::new(
                pointer,
                "invalid_phone_number",
                "must be a phone number in E.164 format, e.g. +13035551234",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `+1303*****34`: enough to recognize, not to dial.
    pub fn masked(&self) -> String {
        let n = self.0.len();
        self.0
            .char_indices()
            .map(|(i, c)| if i >= 5 && i + 2 < n { '*' } else { c })
            .collect()
    }
}

/// An ISO 4217 currency code, upper case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrencyCode(String);

const ISO_4217: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT",
    "BGN", "BHD", "BIF", "BMD", "BND", "BOB", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD",
    "CDF", "CHF", "CLP", "CNY", "COP", "CRC", "CUP", "CVE", "CZK", "DJF", "DKK", "DOP", "DZD",
    "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP", "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ",
    "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IQD", "IRR", "ISK", "JMD", "JOD",
    "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD", "KYD", "KZT", "LAK", "LBP", "LKR",
    "LRD", "LSL", "LYD", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR",
    "MWK", "MXN", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN",
    "PGK", "PHP", "PKR", "PLN", "PYG", "QAR", "RON", "RSD", "RUB", "RWF", "SAR", "SBD", "SCR",
    "SDG", "SEK", "SGD", "SHP", "SLE", "SOS", "SRD", "SSP", "STN", "SVC", "SYP", "SZL", "THB",
    "TJS", "TMT", "TND", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "UGX", "USD", "UYU", "UZS",
    "VES", "VND", "VUV", "WST", "XAF", "XCD", "XOF", "XPF", "YER", "ZAR", "ZMW", "ZWL",
];

impl CurrencyCode {
    pub fn parse(pointer: &str, raw: &str) -> Result<Self, ValidationError> {
        let up = raw.trim().to_ascii_uppercase();
        if raw.trim().len() == 3 && ISO_4217.contains(&up.as_str()) {
            Ok(Self(up))
        } else {
            Err(ValidationError::new(
                pointer,
                "invalid_currency",
                "must be an ISO 4217 currency code, e.g. USD",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A non-empty, trimmed, single-line text of bounded length (names, company names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Text(String);

impl Text {
    pub fn parse(pointer: &str, raw: &str, max_chars: usize) -> Result<Self, ValidationError> {
        let s = raw.trim();
        if s.is_empty() {
            return Err(ValidationError::new(
                pointer,
                "required",
                "must not be blank",
            ));
        }
        if s.chars().count() > max_chars || s.chars().any(char::is_control) {
            return Err(ValidationError::new(
                pointer,
                "invalid_text",
                format!("must be a single line of at most {max_chars} characters"),
            ));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A numeric port-out PIN: 4 to 10 digits.
#[derive(Clone)]
pub struct PortOutPin(String);

impl std::fmt::Debug for PortOutPin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PortOutPin(<redacted>)")
    }
}

impl PortOutPin {
    pub fn parse(pointer: &str, raw: &str) -> Result<Self, ValidationError> {
        if (4..=10).contains(&raw.len()) && raw.chars().all(|c| c.is_ascii_digit()) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(ValidationError::new(
                pointer,
                "invalid_pin",
                "must be 4 to 10 digits",
            ))
        }
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// A security passphrase: 8 to 256 characters, NFC-normalized.
#[derive(Clone)]
pub struct Passphrase(String);

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase(<redacted>)")
    }
}

impl Passphrase {
    pub fn parse(pointer: &str, raw: &str) -> Result<Self, ValidationError> {
        let nfc: String = raw.nfc().collect();
        let n = nfc.chars().count();
        if (8..=256).contains(&n) {
            Ok(Self(nfc))
        } else {
            Err(ValidationError::new(
                pointer,
                "invalid_passphrase",
                "must be 8 to 256 characters long",
            ))
        }
    }

    pub fn for_verification(raw: &str) -> Self {
        Self(raw.nfc().collect())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

pub mod blocklist {
    //! The common-password blocklist shipped with Warden, and context-word checks.

    use std::collections::HashSet;
    use std::sync::OnceLock;

    static LIST: &str = include_str!("../data/password-blocklist.txt");

    fn set() -> &'static HashSet<String> {
        static SET: OnceLock<HashSet<String>> = OnceLock::new();
        SET.get_or_init(|| {
            LIST.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_lowercase)
                .collect()
        })
    }

    /// Whole-password comparison (case-insensitive) against the list, plus passwords that are
    /// only repetitions of one short unit or of a context word.
    pub fn is_blocked(password: &str, context: &[&str]) -> bool {
        let lower = password.to_lowercase();
        if set().contains(&lower) {
            return true;
        }
        if is_repetition(&lower) {
            return true;
        }
        let squeezed: String = lower.chars().filter(|c| c.is_alphanumeric()).collect();
        context
            .iter()
            .map(|w| {
                w.to_lowercase()
                    .chars()
                    .filter(|c| c.is_alphanumeric())
                    .collect::<String>()
            })
            .filter(|w| w.chars().count() >= 3)
            .any(|w| {
                let rest = squeezed.replace(&w, "");
                rest.chars().count() <= 4 || is_repetition(&rest)
            })
    }

    /// `abcabcabcabcabc`, `111111111111111`, `1234567890123456…`.
    fn is_repetition(s: &str) -> bool {
        let chars: Vec<char> = s.chars().collect();
        let n = chars.len();
        if n == 0 {
            return true;
        }
        let periodic = (1..=n / 3).any(|p| {
            chars
                .iter()
                .enumerate()
                .skip(p)
                .all(|(i, c)| chars.get(i - p) == Some(c))
        });
        let sequential = chars.windows(2).all(
            |w| matches!(w, [a, b] if (*b as u32) == (*a as u32) + 1 || (*a == '9' && *b == '0')),
        );
        periodic || sequential
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_length_is_counted_in_characters_after_nfc() {
        assert!(Password::parse(
            "/password",
            "violet lanterns drift over quiet harbours",
            &[]
        )
        .is_ok());
        // xkcd 936 made this one famous: it is on the list.
        assert!(Password::parse("/password", "Correct Horse Battery Staple", &[]).is_err());
        let err = Password::parse("/password", "fourteen chars", &[]).unwrap_err();
        assert_eq!(err.code, "password_too_short");
        // 15 emoji are 15 characters.
        assert!(Password::parse("/password", "🦀🐍🐘🦊🐙🦉🐢🦋🐝🐞🐬🐳🦒🦓🦔", &[]).is_ok());
        // é as one code point and as e + combining accent normalize to the same password.
        let a = Password::for_verification("caf\u{e9} au lait sans sucre");
        let b = Password::for_verification("cafe\u{301} au lait sans sucre");
        assert_eq!(a.expose(), b.expose());
    }

    #[test]
    fn common_and_context_passwords_are_refused() {
        for p in [
            "passwordpassword",
            "aaaaaaaaaaaaaaaa",
            "123456789012345",
            "abcabcabcabcabcabc",
        ] {
            let err = Password::parse("/password", p, &[]).unwrap_err();
            assert_eq!(err.code, "password_too_common", "{p}");
        }
        let err =
            Password::parse("/password", "jane.doe.jane.doe", &["jane.doe", "warden"]).unwrap_err();
        assert_eq!(err.code, "password_too_common");
        assert!(Password::parse("/password", "wardenwarden2024", &["warden"]).is_err());
    }

    #[test]
    fn phone_numbers_must_be_e164() {
        assert!(PhoneNumber::parse("/p", "+13035551234").is_ok());
        for bad in [
            "13035551234",
            "+0123456789",
            "+1",
            "+1303555123456789",
            "+1303-555-1234",
        ] {
            assert!(PhoneNumber::parse("/p", bad).is_err(), "{bad}");
        }
        assert_eq!(
            PhoneNumber::parse("/p", "+13035551234").unwrap().masked(),
            "+1303*****34"
        );
    }

    #[test]
    fn emails_and_currencies_parse() {
        let e = EmailAddress::parse("/email", " Jane.Doe@Example.COM ").unwrap();
        assert_eq!(e.as_str(), "Jane.Doe@example.com");
        assert_eq!(e.normalized(), "jane.doe@example.com");
        for bad in ["", "no-at", "a@b", "a b@c.com", "@x.com", "a@.com"] {
            assert!(EmailAddress::parse("/email", bad).is_err(), "{bad}");
        }
        assert_eq!(CurrencyCode::parse("/c", "usd").unwrap().as_str(), "USD");
        assert!(CurrencyCode::parse("/c", "XYZ").is_err());
    }
}
