//! Two-factor authentication on the user stream: enrollment (authenticator app, SMS or
//! voice call) and confirmation, method changes, backup codes, sent codes, and the sign-in
//! challenge. Keeping it on the user's own stream means optimistic concurrency makes every
//! one-time proof one-time: two requests racing with the same TOTP code, backup code or
//! sent code cannot both commit, and the loser re-decides against the winner's event.
//!
//! Proofs arrive already checked by the shell (which opens sealed secrets and hashes): a
//! TOTP code as the time step it matched, a backup code as the index it matched, a sent
//! code as its keyed digest. The domain decides whether that may still be used.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::sealed::{Digest, Sealed};

mod decide;
pub use decide::*;

/// An unconfirmed enrollment lives this long.
pub const ENROLLMENT_TTL_SECS: i64 = 10 * 60;
/// A sign-in challenge lives this long.
pub const CHALLENGE_TTL_SECS: i64 = 10 * 60;
/// Wrong codes one challenge (or enrollment) tolerates.
pub const MAX_FAILURES_PER_CHALLENGE: u32 = 5;
/// Consecutive wrong second factors, across challenges, that block second-factor sign-in
/// until an administrator resets it (NIST SP 800-63B-4 §3.2.2).
pub const CONSECUTIVE_FAILURE_LIMIT: u32 = 100;
/// `backup_codes_low` fires when this many or fewer remain.
pub const BACKUP_CODES_LOW: u32 = 3;
/// An SMS or voice code is valid this long.
pub const CODE_TTL_SECS: i64 = 5 * 60;
/// Codes sent to one user per rolling 24 hours.
pub const CODE_SENDS_PER_DAY: usize = 10;
/// Wrong current factors (to authorize a change) allowed per rolling window.
pub const STEP_UP_FAILURES_ALLOWED: usize = 5;
/// The rolling window for [`STEP_UP_FAILURES_ALLOWED`].
pub const STEP_UP_WINDOW_SECS: i64 = 15 * 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Totp,
    Sms,
    Call,
}

/// The kind of second factor a proof used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Factor {
    Totp,
    BackupCode,
    /// A code sent by SMS or voice call.
    Code,
    /// Lost-device recovery: the organization's security passphrase plus a code sent to
    /// the account's email.
    Recovery,
    /// A code sent to the account's email, standing in for the current factor when only
    /// the phone number changes.
    EmailCode,
}

/// What a sent code is for; it only works there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CodePurpose {
    Enrollment,
    SignIn,
    /// Proving the current factor before a change (new method, new backup codes).
    StepUp,
}

/// A code that was sent: only its keyed digest, and until when it works.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentCode {
    pub code_digest: Digest,
    pub expires_at: DateTime<Utc>,
}

/// A second factor as checked by the shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proof {
    /// A TOTP code; `Some(step)` when it matched that time step of the enrolled secret.
    Totp(Option<i64>),
    /// A backup code; `Some(index)` when it matched that code of the current set.
    BackupCode(Option<u32>),
    /// The keyed digest of a typed SMS/voice code, compared with the code sent for the
    /// context it is used in.
    Code(Digest),
    /// The keyed digest of a typed code that was sent to the account's email.
    EmailCode(Digest),
}

impl Proof {
    pub fn factor(&self) -> Factor {
        match self {
            Proof::Totp(_) => Factor::Totp,
            Proof::BackupCode(_) => Factor::BackupCode,
            Proof::Code(_) => Factor::Code,
            Proof::EmailCode(_) => Factor::EmailCode,
        }
    }

    pub fn totp_step(&self) -> Option<i64> {
        match self {
            Proof::Totp(step) => *step,
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrollment {
    pub id: Uuid,
    pub method: Method,
    pub totp_secret: Option<Sealed>,
    pub phone_number: Option<Sealed>,
    pub code: Option<SentCode>,
    pub expires_at: DateTime<Utc>,
    pub failures: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    pub expires_at: DateTime<Utc>,
    pub failures: u32,
    /// The latest code sent for this challenge (a resend replaces it; failures stay).
    pub code: Option<SentCode>,
    /// The latest lost-device recovery code emailed for this challenge.
    #[serde(default)]
    pub recovery_code: Option<SentCode>,
}

/// The user's second-factor state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TwoFactor {
    pub enabled: bool,
    pub method: Option<Method>,
    pub totp_secret: Option<Sealed>,
    pub phone_number: Option<Sealed>,
    /// The current backup-code set (sealed JSON array of argon2id PHC strings).
    pub backup_codes: Option<Sealed>,
    pub backup_code_count: u32,
    pub backup_codes_used: BTreeSet<u32>,
    /// The newest TOTP step ever accepted; it and older steps are never accepted again.
    pub last_totp_step: Option<i64>,
    pub enrollment: Option<Enrollment>,
    /// Open challenges (expired and passed ones are pruned as new ones start).
    pub challenges: BTreeMap<Uuid, Challenge>,
    pub consecutive_failures: u32,
    /// When codes were sent, newest last (at most [`CODE_SENDS_PER_DAY`]).
    pub code_sends: Vec<DateTime<Utc>>,
    /// The latest step-up code (proving the current factor before a change).
    pub step_up: Option<SentCode>,
    /// Recent wrong current factors, newest last (at most [`STEP_UP_FAILURES_ALLOWED`]).
    #[serde(default)]
    pub step_up_failures: Vec<DateTime<Utc>>,
    /// The latest code sent to the account's email to stand in for the factor.
    #[serde(default)]
    pub email_step_up: Option<SentCode>,
}

impl TwoFactor {
    pub fn backup_codes_remaining(&self) -> u32 {
        self.backup_code_count
            .saturating_sub(self.backup_codes_used.len() as u32)
    }

    pub fn locked(&self) -> bool {
        self.consecutive_failures >= CONSECUTIVE_FAILURE_LIMIT
    }

    /// Whether a proof is still usable: a TOTP step newer than any accepted, an unused
    /// backup code of the current set, or the code `sent` for this context, unexpired.
    pub fn accepts(&self, proof: &Proof, sent: Option<&SentCode>, now: DateTime<Utc>) -> bool {
        match proof {
            Proof::Totp(Some(step)) => self.last_totp_step.is_none_or(|last| *step > last),
            Proof::BackupCode(Some(index)) => {
                *index < self.backup_code_count && !self.backup_codes_used.contains(index)
            }
            Proof::Code(digest) => {
                sent.is_some_and(|c| c.code_digest == *digest && c.expires_at > now)
            }
            Proof::EmailCode(digest) => self
                .email_step_up
                .as_ref()
                .is_some_and(|c| c.code_digest == *digest && c.expires_at > now),
            Proof::Totp(None) | Proof::BackupCode(None) => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnrollmentStarted {
    pub enrollment_id: Uuid,
    pub method: Method,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totp_secret: Option<Sealed>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<Sealed>,
    pub expires_at: DateTime<Utc>,
    /// With 2FA already on, the current factor that authorized this change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_with: Option<Factor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totp_step: Option<i64>,
}

/// A code was sent by SMS or voice call (only its keyed digest is kept).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CodeSent {
    pub purpose: CodePurpose,
    /// The enrollment or challenge it belongs to (a fresh id for a step-up code).
    pub target_id: Uuid,
    pub channel: Method,
    pub code_digest: Digest,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Enabled {
    pub enrollment_id: Uuid,
    pub method: Method,
    /// The TOTP step the confirming code used (never accepted again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totp_step: Option<i64>,
    pub backup_codes: Sealed,
    pub backup_code_count: u32,
}

/// The second factor moved to a newly confirmed method; the backup codes stay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodChanged {
    pub enrollment_id: Uuid,
    pub method: Method,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totp_step: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChallengePassed {
    pub challenge_id: Uuid,
    pub factor: Factor,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totp_step: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TwoFactorError {
    #[error("two-factor authentication is already enabled")]
    AlreadyEnabled,
    #[error("two-factor authentication is not enabled")]
    NotEnabled,
    #[error("no such enrollment")]
    EnrollmentNotFound,
    #[error("the enrollment expired; start a new one")]
    EnrollmentExpired,
    #[error("no such challenge")]
    ChallengeNotFound,
    #[error("the challenge expired; sign in again")]
    ChallengeExpired,
    #[error("too many wrong codes for this challenge; sign in again")]
    ChallengeLocked,
    #[error("second-factor sign-in is blocked after too many failures; ask an administrator to reset it")]
    SecondFactorBlocked,
    #[error("the code is not valid")]
    InvalidCode,
    #[error("two-factor authentication is on: prove the current factor to change it")]
    CurrentFactorRequired,
    #[error("no phone number is enrolled for codes")]
    NoPhoneEnrolled,
    #[error("too many codes were sent")]
    TooManyCodeSends { retry_after_secs: i64 },
    #[error("two-factor authentication cannot be disabled under your organization's policy")]
    CannotBeDisabled,
    #[error("too many wrong codes")]
    TooManyStepUpFailures { retry_after_secs: i64 },
    #[error("an email code stands in for the current factor only when the phone number changes")]
    EmailCodeOnlyForPhoneChange,
    #[error("only the organization owner can recover their own account; ask your owner to reset your two-factor authentication")]
    RecoveryNotAllowed,
}

pub(crate) fn apply_enrollment_started(tf: &mut TwoFactor, e: &EnrollmentStarted) {
    tf.enrollment = Some(Enrollment {
        id: e.enrollment_id,
        method: e.method,
        totp_secret: e.totp_secret.clone(),
        phone_number: e.phone_number.clone(),
        code: None,
        expires_at: e.expires_at,
        failures: 0,
    });
    spend(tf, e.verified_with, e.totp_step);
}

/// A factor used to authorize a change: its TOTP step or step-up code is spent.
pub(crate) fn spend(tf: &mut TwoFactor, factor: Option<Factor>, totp_step: Option<i64>) {
    note_step(tf, totp_step);
    if factor == Some(Factor::Code) {
        tf.step_up = None;
    }
    if factor == Some(Factor::EmailCode) {
        tf.email_step_up = None;
    }
}

pub(crate) fn apply_code_sent(tf: &mut TwoFactor, e: &CodeSent, at: DateTime<Utc>) {
    tf.code_sends.push(at);
    let excess = tf.code_sends.len().saturating_sub(CODE_SENDS_PER_DAY);
    tf.code_sends.drain(..excess);
    let code = SentCode {
        code_digest: e.code_digest.clone(),
        expires_at: e.expires_at,
    };
    match e.purpose {
        CodePurpose::Enrollment => {
            if let Some(en) = tf.enrollment.as_mut().filter(|en| en.id == e.target_id) {
                en.code = Some(code);
            }
        }
        CodePurpose::SignIn => {
            if let Some(c) = tf.challenges.get_mut(&e.target_id) {
                c.code = Some(code);
            }
        }
        CodePurpose::StepUp => tf.step_up = Some(code),
    }
}

pub(crate) fn apply_enrollment_failed(tf: &mut TwoFactor) {
    if let Some(enrollment) = tf.enrollment.as_mut() {
        enrollment.failures += 1;
    }
}

pub(crate) fn apply_enabled(tf: &mut TwoFactor, e: &Enabled) {
    let enrollment = tf.enrollment.take();
    tf.enabled = true;
    tf.method = Some(e.method);
    tf.totp_secret = enrollment.as_ref().and_then(|en| en.totp_secret.clone());
    tf.phone_number = enrollment.and_then(|en| en.phone_number);
    note_step(tf, e.totp_step);
    replace_backup_codes(tf, &e.backup_codes, e.backup_code_count);
}

pub(crate) fn apply_method_changed(tf: &mut TwoFactor, e: &MethodChanged) {
    let enrollment = tf.enrollment.take();
    tf.method = Some(e.method);
    tf.totp_secret = enrollment.as_ref().and_then(|en| en.totp_secret.clone());
    tf.phone_number = enrollment.and_then(|en| en.phone_number);
    note_step(tf, e.totp_step);
}

/// 2FA off: factors and backup codes are gone; what guards against replay and abuse
/// (spent TOTP steps, recent sends, consecutive failures) stays.
pub(crate) fn apply_disabled(tf: &mut TwoFactor, totp_step: Option<i64>) {
    note_step(tf, totp_step);
    *tf = TwoFactor {
        last_totp_step: tf.last_totp_step,
        code_sends: std::mem::take(&mut tf.code_sends),
        consecutive_failures: tf.consecutive_failures,
        ..TwoFactor::default()
    };
}

pub(crate) fn replace_backup_codes(tf: &mut TwoFactor, codes: &Sealed, count: u32) {
    tf.backup_codes = Some(codes.clone());
    tf.backup_code_count = count;
    tf.backup_codes_used.clear();
}

pub(crate) fn note_step(tf: &mut TwoFactor, step: Option<i64>) {
    if let Some(step) = step {
        tf.last_totp_step = Some(tf.last_totp_step.map_or(step, |last| last.max(step)));
    }
}

pub(crate) fn apply_challenge_started(
    tf: &mut TwoFactor,
    id: Uuid,
    expires_at: DateTime<Utc>,
    at: DateTime<Utc>,
) {
    tf.challenges.retain(|_, c| c.expires_at > at);
    tf.challenges.insert(
        id,
        Challenge {
            expires_at,
            failures: 0,
            code: None,
            recovery_code: None,
        },
    );
}

pub(crate) fn apply_step_up_failed(tf: &mut TwoFactor, at: DateTime<Utc>) {
    tf.consecutive_failures += 1;
    tf.step_up_failures.push(at);
    let excess = tf
        .step_up_failures
        .len()
        .saturating_sub(STEP_UP_FAILURES_ALLOWED);
    tf.step_up_failures.drain(..excess);
}

pub(crate) fn apply_challenge_failed(tf: &mut TwoFactor, id: Uuid) {
    if let Some(c) = tf.challenges.get_mut(&id) {
        c.failures += 1;
    }
    tf.consecutive_failures += 1;
}

pub(crate) fn apply_challenge_passed(tf: &mut TwoFactor, e: &ChallengePassed) {
    tf.challenges.remove(&e.challenge_id);
    tf.consecutive_failures = 0;
    tf.step_up_failures.clear();
    note_step(tf, e.totp_step);
}

/// An open challenge that may still take a code.
pub fn usable_challenge(
    tf: &TwoFactor,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<&Challenge, TwoFactorError> {
    let challenge = tf
        .challenges
        .get(&id)
        .ok_or(TwoFactorError::ChallengeNotFound)?;
    if challenge.expires_at <= now {
        return Err(TwoFactorError::ChallengeExpired);
    }
    if tf.locked() {
        return Err(TwoFactorError::SecondFactorBlocked);
    }
    if challenge.failures >= MAX_FAILURES_PER_CHALLENGE {
        return Err(TwoFactorError::ChallengeLocked);
    }
    Ok(challenge)
}

/// An open enrollment that may still take a code.
pub fn usable_enrollment(
    tf: &TwoFactor,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<&Enrollment, TwoFactorError> {
    let enrollment = tf
        .enrollment
        .as_ref()
        .filter(|e| e.id == id)
        .ok_or(TwoFactorError::EnrollmentNotFound)?;
    if enrollment.expires_at <= now || enrollment.failures >= MAX_FAILURES_PER_CHALLENGE {
        return Err(TwoFactorError::EnrollmentExpired);
    }
    Ok(enrollment)
}

pub fn challenge_expiry(now: DateTime<Utc>) -> DateTime<Utc> {
    now + Duration::seconds(CHALLENGE_TTL_SECS)
}

pub fn enrollment_expiry(now: DateTime<Utc>) -> DateTime<Utc> {
    now + Duration::seconds(ENROLLMENT_TTL_SECS)
}

pub fn code_expiry(now: DateTime<Utc>) -> DateTime<Utc> {
    now + Duration::seconds(CODE_TTL_SECS)
}

/// Refuses a step-up when it is blocked, or after too many recent wrong current factors.
pub fn check_step_up_allowed(tf: &TwoFactor, now: DateTime<Utc>) -> Result<(), TwoFactorError> {
    if tf.locked() {
        return Err(TwoFactorError::SecondFactorBlocked);
    }
    let window = Duration::seconds(STEP_UP_WINDOW_SECS);
    let recent: Vec<_> = tf
        .step_up_failures
        .iter()
        .filter(|t| now - **t < window)
        .collect();
    match recent.first() {
        Some(oldest) if recent.len() >= STEP_UP_FAILURES_ALLOWED => {
            Err(TwoFactorError::TooManyStepUpFailures {
                retry_after_secs: (window - (now - **oldest)).num_seconds().max(1),
            })
        }
        _ => Ok(()),
    }
}

/// Refuses a send when the user already had [`CODE_SENDS_PER_DAY`] in the last 24 hours.
pub fn check_send_allowed(tf: &TwoFactor, now: DateTime<Utc>) -> Result<(), TwoFactorError> {
    let day = Duration::hours(24);
    let recent: Vec<_> = tf.code_sends.iter().filter(|t| now - **t < day).collect();
    match recent.first() {
        Some(oldest) if recent.len() >= CODE_SENDS_PER_DAY => {
            Err(TwoFactorError::TooManyCodeSends {
                retry_after_secs: (day - (now - **oldest)).num_seconds().max(1),
            })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;

pub(crate) fn apply_recovery_code_sent(
    tf: &mut TwoFactor,
    e: &RecoveryCodeSent,
    at: DateTime<Utc>,
) {
    tf.code_sends.push(at);
    let excess = tf.code_sends.len().saturating_sub(CODE_SENDS_PER_DAY);
    tf.code_sends.drain(..excess);
    if let Some(c) = tf.challenges.get_mut(&e.challenge_id) {
        c.recovery_code = Some(SentCode {
            code_digest: e.code_digest.clone(),
            expires_at: e.expires_at,
        });
    }
}

/// A lost-device recovery code emailed to the account's address, bound to one challenge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryCodeSent {
    pub challenge_id: Uuid,
    pub code_digest: Digest,
    pub expires_at: DateTime<Utc>,
}

/// A code emailed to stand in for the current factor when the phone number changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailCodeSent {
    pub code_digest: Digest,
    pub expires_at: DateTime<Utc>,
}

pub(crate) fn apply_email_code_sent(tf: &mut TwoFactor, e: &EmailCodeSent, at: DateTime<Utc>) {
    tf.code_sends.push(at);
    let excess = tf.code_sends.len().saturating_sub(CODE_SENDS_PER_DAY);
    tf.code_sends.drain(..excess);
    tf.email_step_up = Some(SentCode {
        code_digest: e.code_digest.clone(),
        expires_at: e.expires_at,
    });
}
