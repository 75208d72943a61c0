//! Pure helpers for two-factor authentication: TOTP secrets (RFC 6238, SHA-1, 6 digits, 30 s),
//! the `otpauth://` enrolment URI and its QR code, numeric one-time codes for SMS/voice, and
//! backup codes.
//!
//! Nothing here reads the clock, touches storage or keeps state: time comes in as an argument
//! and randomness comes from the operating system's CSPRNG ([`OsRng`]; ASVS 6.5.3). Replay
//! protection is the caller's job: [`totp_match`] returns the time step it matched, and the
//! domain accepts a step only if it is newer than the last accepted one (RFC 6238 §5.2,
//! NIST 63B §3.1.4.2, ASVS 6.5.1). Rate limiting is likewise the caller's (NIST 63B §3.2.2).
//! Backup codes are returned in clear for display once; hashing them (argon2id, per NIST 63B
//! §3.1.2.2 / ASVS 6.5.2, since 60 bits < 112) is done by the caller on the
//! [`normalize_backup_code`] form.

use std::fmt;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use qrcode::{EcLevel, QrCode};
use rand::rngs::OsRng;
use rand::{Rng, RngCore};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Digits in a TOTP code (RFC 4226 §5.3 minimum; NIST 63B §3.1.4.1 allows six).
pub const TOTP_DIGITS: usize = 6;
/// TOTP time step in seconds (RFC 6238 §5.2 default; ASVS 6.5.5).
pub const TOTP_STEP_SECS: u64 = 30;
/// Steps accepted either side of the current one for clock skew and entry delay (RFC 6238
/// §5.2 recommends at most one).
pub const TOTP_SKEW_STEPS: i64 = 1;
/// Length of a freshly generated TOTP secret: 160 bits (RFC 4226 §4 R6 recommendation).
pub const TOTP_SECRET_LEN: usize = 20;
/// Shortest secret accepted by [`TotpSecret::from_bytes`]: 128 bits (RFC 4226 §4 R6 "MUST").
pub const TOTP_SECRET_MIN_LEN: usize = 16;
/// Longest secret accepted by [`TotpSecret::from_bytes`] (the SHA-512 block size; anything
/// longer is hashed down by HMAC anyway and only indicates a caller bug).
pub const TOTP_SECRET_MAX_LEN: usize = 64;
/// Issuer shown by authenticator apps and prefixed to the otpauth label.
pub const TOTP_ISSUER: &str = "Warden";

/// Fewest digits [`new_numeric_code`] produces (NIST 63B §3.1.3.2, ASVS 6.5.4: ≥ 6 digits).
pub const MIN_NUMERIC_CODE_DIGITS: usize = 6;

/// How many backup codes a set holds.
pub const BACKUP_CODE_COUNT: usize = 10;
/// Characters in a backup code (without the display hyphens).
pub const BACKUP_CODE_LEN: usize = 12;
/// Characters per display group: `xxxx-xxxx-xxxx`.
pub const BACKUP_CODE_GROUP: usize = 4;
/// Crockford base32 alphabet, lower-case (no i, l, o, u).
pub const BACKUP_CODE_ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
/// Entropy of one backup code: 12 characters × 5 bits.
pub const BACKUP_CODE_ENTROPY_BITS: u32 = BACKUP_CODE_LEN as u32 * 5;

/// Side, in pixels, below which the QR PNG/SVG is never rendered (phone cameras need it).
pub const QR_MIN_PIXELS: u32 = 256;

/// Longest typed backup code [`normalize_backup_code`] looks at (generous for spaces).
const BACKUP_CODE_MAX_INPUT: usize = 64;

/// Errors from the two-factor helpers. Messages never contain secret material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OtpError {
    /// A TOTP secret outside 16..=64 bytes.
    #[error("TOTP secret must be {min} to {max} bytes, got {len}", min = TOTP_SECRET_MIN_LEN, max = TOTP_SECRET_MAX_LEN)]
    SecretLength { len: usize },
    /// totp-rs refused the parameters (cannot happen with the constants above).
    #[error("TOTP parameters rejected: {0}")]
    Totp(String),
    /// The data does not fit in a QR code (e.g. an absurdly long account name).
    #[error("QR code could not be built: {0}")]
    Qr(String),
    /// PNG encoding failed.
    #[error("QR image could not be encoded: {0}")]
    Image(String),
}

/// A TOTP shared secret (raw bytes, not base32). Zeroized on drop; `Debug` is redacted.
#[derive(Clone)]
pub struct TotpSecret(Vec<u8>);

impl Drop for TotpSecret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl ZeroizeOnDrop for TotpSecret {}

impl TotpSecret {
    /// Wraps raw secret bytes (e.g. after unsealing from the vault). 16 to 64 bytes.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, OtpError> {
        let bytes = Zeroizing::new(bytes);
        let len = bytes.len();
        if !(TOTP_SECRET_MIN_LEN..=TOTP_SECRET_MAX_LEN).contains(&len) {
            return Err(OtpError::SecretLength { len });
        }
        Ok(Self(bytes.to_vec()))
    }

    /// The raw secret bytes (for sealing into the vault).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// RFC 4648 base32, upper-case, no padding: the manual-entry key and the `secret=` value.
    pub fn base32(&self) -> String {
        base32::encode(base32::Alphabet::Rfc4648 { padding: false }, &self.0)
    }
}

impl fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TotpSecret(<redacted {} bytes>)", self.0.len())
    }
}

/// A fresh 160-bit TOTP secret: 20 bytes from the OS CSPRNG.
pub fn new_totp_secret() -> TotpSecret {
    let mut bytes = vec![0u8; TOTP_SECRET_LEN];
    OsRng.fill_bytes(&mut bytes);
    TotpSecret(bytes)
}

/// Characters kept literally in the otpauth label and query values: RFC 3986 unreserved
/// (`A-Z a-z 0-9 - . _ ~`). Everything else, including `@ + : / ? # & = %` and spaces, is
/// percent-encoded as UTF-8.
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The Key URI for authenticator apps:
/// `otpauth://totp/Warden:<account>?secret=<base32>&issuer=Warden&algorithm=SHA1&digits=6&period=30`.
/// The account is percent-encoded (an email `a+b@x` becomes `a%2Bb%40x`), so a `:` in it
/// cannot be mistaken for the issuer separator. (Google's Key URI format forbids a colon in
/// the account even so, and some apps show such an account oddly; Warden accounts are email
/// addresses, which in practice have none.)
pub fn otpauth_uri(secret: &TotpSecret, account: &str) -> String {
    let issuer = utf8_percent_encode(TOTP_ISSUER, URI_COMPONENT);
    format!(
        "otpauth://totp/{issuer}:{account}?secret={secret}&issuer={issuer}\
         &algorithm=SHA1&digits={digits}&period={period}",
        account = utf8_percent_encode(account, URI_COMPONENT),
        secret = secret.base32(),
        digits = TOTP_DIGITS,
        period = TOTP_STEP_SECS,
    )
}

/// Builds the QR code for `uri` (error correction M: readable off a screen, still compact).
fn qr_code(uri: &str) -> Result<QrCode, OtpError> {
    QrCode::with_error_correction_level(uri.as_bytes(), EcLevel::M)
        .map_err(|e| OtpError::Qr(e.to_string()))
}

/// The QR code of `uri` as PNG bytes: grey-scale, black on white, at least 256×256 px,
/// with the 4-module quiet zone.
pub fn qr_png(uri: &str) -> Result<Vec<u8>, OtpError> {
    let image = qr_code(uri)?
        .render::<image::Luma<u8>>()
        .quiet_zone(true)
        .min_dimensions(QR_MIN_PIXELS, QR_MIN_PIXELS)
        .build();
    let mut png = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| OtpError::Image(e.to_string()))?;
    Ok(png)
}

/// [`qr_png`] as a `data:image/png;base64,…` URI, ready for an `<img src>`.
pub fn qr_png_data_uri(uri: &str) -> Result<String, OtpError> {
    let png = qr_png(uri)?;
    Ok(format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(png)
    ))
}

/// The QR code of `uri` as a standalone SVG document (`<?xml …?><svg …>`), at least
/// 256×256 user units, with the quiet zone.
pub fn qr_svg(uri: &str) -> Result<String, OtpError> {
    Ok(qr_code(uri)?
        .render::<qrcode::render::svg::Color<'_>>()
        .quiet_zone(true)
        .min_dimensions(QR_MIN_PIXELS, QR_MIN_PIXELS)
        .build())
}

/// HOTP (RFC 4226) over `counter` with `digits` digits, via totp-rs with a 1-second step so
/// that the "time" it divides is exactly the counter.
fn hotp(secret: &TotpSecret, counter: u64, digits: u8) -> Result<String, OtpError> {
    let totp = totp_rs::Builder::new()
        .with_algorithm(totp_rs::Algorithm::SHA1)
        .with_digits(digits)
        .with_skew(0)
        .with_step_duration(1)
        .with_secret(secret.as_bytes())
        .build()
        .map_err(|e| OtpError::Totp(e.to_string()))?;
    Ok(totp.generate(counter).to_string())
}

/// The 8-digit RFC 6238 value at a unix time, for checking against Appendix B only.
#[cfg(test)]
fn totp_8_digits_at_unix(secret: &TotpSecret, unix: u64) -> String {
    hotp(secret, unix / TOTP_STEP_SECS, 8).unwrap()
}

/// The 6-digit TOTP code for time step `step` (= floor(unix time / 30)).
///
/// Steps before the epoch (negative) do not exist in RFC 6238 and are never accepted by
/// [`totp_match`]; for them the counter is the step's 64-bit two's-complement encoding.
/// Returns an empty string only if totp-rs refused the fixed parameters, which the tests rule
/// out; an empty string never matches.
pub fn totp_at(secret: &TotpSecret, step: i64) -> String {
    // Two's-complement reinterpretation is intended (RFC 4226 counters are 8 raw bytes).
    #[allow(clippy::cast_sign_loss)]
    let counter = step as u64;
    hotp(secret, counter, TOTP_DIGITS as u8).unwrap_or_default()
}

/// The TOTP time step containing `now`: floor(unix seconds / 30).
pub fn totp_step(now: DateTime<Utc>) -> i64 {
    now.timestamp().div_euclid(TOTP_STEP_SECS as i64)
}

/// Whether `code` is exactly [`TOTP_DIGITS`] ASCII digits.
fn is_totp_shaped(code: &str) -> bool {
    code.len() == TOTP_DIGITS && code.bytes().all(|b| b.is_ascii_digit())
}

/// Checks `code` against the steps T = floor(now / 30), T − 1 and T + 1, in that order, and
/// returns the first step whose code equals it. All three candidates are always computed and
/// compared in constant time. Anything other than exactly six ASCII digits is rejected
/// without comparison. `now` must be the server's trusted clock (ASVS 6.5.8).
///
/// The caller must still refuse a step that is not newer than the last accepted step (replay)
/// and count failures (rate limiting).
pub fn totp_match(secret: &TotpSecret, code: &str, now: DateTime<Utc>) -> Option<i64> {
    if !is_totp_shaped(code) {
        return None;
    }
    let t = totp_step(now);
    let candidates = [
        Some(t),
        t.checked_sub(TOTP_SKEW_STEPS),
        t.checked_add(TOTP_SKEW_STEPS),
    ];
    let mut matched = None;
    for step in candidates.into_iter().flatten().filter(|s| *s >= 0) {
        let expected = Zeroizing::new(totp_at(secret, step));
        let equal: bool = expected.as_bytes().ct_eq(code.as_bytes()).into();
        if equal && matched.is_none() {
            matched = Some(step);
        }
    }
    matched
}

/// A random numeric one-time code for SMS/voice: each digit drawn uniformly from 0–9 by the OS
/// CSPRNG (`gen_range`, so no modulo bias; leading zeros kept). `digits` below
/// [`MIN_NUMERIC_CODE_DIGITS`] is raised to 6 rather than issuing a weaker code.
pub fn new_numeric_code(digits: usize) -> String {
    let digits = digits.max(MIN_NUMERIC_CODE_DIGITS);
    let mut rng = OsRng;
    (0..digits)
        .map(|_| char::from(b'0' + rng.gen_range(0..10u8)))
        .collect()
}

/// One random backup code in canonical form (12 Crockford base32 characters, no hyphens).
fn new_canonical_backup_code(rng: &mut OsRng) -> String {
    (0..BACKUP_CODE_LEN)
        .filter_map(|_| {
            BACKUP_CODE_ALPHABET
                .get(rng.gen_range(0..BACKUP_CODE_ALPHABET.len()))
                .map(|b| char::from(*b))
        })
        .collect()
}

/// Groups a canonical code for display: `xxxx-xxxx-xxxx`.
fn display_backup_code(canonical: &str) -> String {
    let mut out = String::with_capacity(BACKUP_CODE_LEN + BACKUP_CODE_LEN / BACKUP_CODE_GROUP);
    for (i, c) in canonical.chars().enumerate() {
        if i > 0 && i % BACKUP_CODE_GROUP == 0 {
            out.push('-');
        }
        out.push(c);
    }
    out
}

/// [`BACKUP_CODE_COUNT`] distinct backup codes for display, each 60 bits from the OS CSPRNG,
/// lower-case Crockford base32 grouped as `xxxx-xxxx-xxxx`. Store only hashes of
/// [`normalize_backup_code`]`(code)`.
pub fn new_backup_codes() -> Vec<String> {
    let mut rng = OsRng;
    let mut canonical: Vec<String> = Vec::with_capacity(BACKUP_CODE_COUNT);
    while canonical.len() < BACKUP_CODE_COUNT {
        let code = new_canonical_backup_code(&mut rng);
        if code.len() == BACKUP_CODE_LEN && !canonical.contains(&code) {
            canonical.push(code);
        }
    }
    canonical.iter().map(|c| display_backup_code(c)).collect()
}

/// The canonical form of a typed backup code: whitespace and hyphens removed, lower-cased,
/// Crockford look-alikes mapped (`i`, `l` → `1`; `o` → `0`). `None` unless the result is
/// exactly 12 characters of the Crockford alphabet (so `u` and non-ASCII are rejected).
pub fn normalize_backup_code(input: &str) -> Option<String> {
    if input.len() > BACKUP_CODE_MAX_INPUT {
        return None;
    }
    let mut out = String::with_capacity(BACKUP_CODE_LEN);
    for c in input.chars() {
        if c == '-' || c.is_whitespace() {
            continue;
        }
        let c = match c.to_ascii_lowercase() {
            'i' | 'l' => '1',
            'o' => '0',
            c => c,
        };
        if !c.is_ascii() || !BACKUP_CODE_ALPHABET.contains(&(c as u8)) {
            return None;
        }
        out.push(c);
    }
    (out.len() == BACKUP_CODE_LEN).then_some(out)
}

#[cfg(test)]
#[path = "otp_tests.rs"]
mod tests;
