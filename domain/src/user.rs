//! The user aggregate: credentials, sessions and profile of one person in one organization.
//! Stream `user-<uuid>`.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::aggregate::{Aggregate, Ctx};
use crate::event::DomainEvent;
use crate::sealed::{Digest, Sealed};
use crate::two_factor::{
    self as tf, ChallengePassed, CodePurpose, CodeSent, Enabled, EnrollmentStarted, Factor, Method,
    MethodChanged, Proof, TwoFactor, TwoFactorError,
};

/// Failed password sign-ins allowed per rolling window before 429.
pub const SIGN_IN_FAILURES_ALLOWED: usize = 5;
/// The rolling window for [`SIGN_IN_FAILURES_ALLOWED`].
pub const SIGN_IN_FAILURE_WINDOW_SECS: i64 = 60;
/// API keys one user may hold at once.
pub const MAX_API_KEYS: usize = 50;
/// Longest API key name, in characters.
pub const MAX_API_KEY_NAME: usize = 100;

/// Whether a user may act at all. Removed is final.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserStatus {
    #[default]
    Enabled,
    Disabled,
    Removed,
}

/// Why a user's second factor was reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TwoFactorResetReason {
    /// The owner (or a member with `users:manage`) reset it.
    Administrator,
    /// The owner lost their factor and proved the passphrase plus an email code.
    LostDevice,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    OrganizationOwner,
    OrganizationSubUser,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionEndReason {
    SignedOut,
    PasswordChanged,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event_type", content = "payload")]
pub enum UserEvent {
    #[serde(rename = "user.registered")]
    Registered {
        user_id: Uuid,
        organization_id: Uuid,
        role: Role,
        email: Sealed,
        first_name: Sealed,
        last_name: Sealed,
        password_hash: Sealed,
    },
    /// A password was verified and a session issued. Only the token's digest is kept.
    #[serde(rename = "user.session_started")]
    SessionStarted {
        session_id: Uuid,
        token_digest: Digest,
        expires_at: DateTime<Utc>,
        idle_timeout_secs: i64,
        /// `two_factor_setup`: the organization requires 2FA and its deadline passed, so
        /// this session may only enroll a second factor.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scope: Option<String>,
    },
    #[serde(rename = "user.sign_in_failed")]
    SignInFailed { reason: String },
    #[serde(rename = "user.session_ended")]
    SessionEnded {
        session_id: Uuid,
        reason: SessionEndReason,
    },
    #[serde(rename = "user.profile_updated")]
    ProfileUpdated {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        first_name: Option<Sealed>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_name: Option<Sealed>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        phone_number: Option<Sealed>,
    },
    #[serde(rename = "user.email_changed")]
    EmailChanged { email: Sealed },
    #[serde(rename = "user.password_changed")]
    PasswordChanged { password_hash: Sealed },
    #[serde(rename = "user.two_factor_enrollment_started")]
    TwoFactorEnrollmentStarted(EnrollmentStarted),
    /// A wrong code was given to confirm an enrollment.
    #[serde(rename = "user.two_factor_enrollment_failed")]
    TwoFactorEnrollmentFailed { enrollment_id: Uuid },
    #[serde(rename = "user.two_factor_enabled")]
    TwoFactorEnabled(Enabled),
    /// An SMS or voice code was sent (only its keyed digest is kept).
    #[serde(rename = "user.two_factor_code_sent")]
    TwoFactorCodeSent(CodeSent),
    #[serde(rename = "user.two_factor_method_changed")]
    TwoFactorMethodChanged(MethodChanged),
    /// A new backup-code set replaced the old one, proven by a current second factor.
    #[serde(rename = "user.backup_codes_regenerated")]
    BackupCodesRegenerated {
        factor: Factor,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        totp_step: Option<i64>,
        backup_codes: Sealed,
        backup_code_count: u32,
    },
    /// The password was right and 2FA is on: a second factor is now required.
    #[serde(rename = "user.two_factor_challenge_started")]
    TwoFactorChallengeStarted {
        challenge_id: Uuid,
        expires_at: DateTime<Utc>,
    },
    #[serde(rename = "user.two_factor_challenge_failed")]
    TwoFactorChallengeFailed { challenge_id: Uuid, factor: Factor },
    #[serde(rename = "user.two_factor_challenge_passed")]
    TwoFactorChallengePassed(ChallengePassed),
    /// One backup code was used; it never works again.
    #[serde(rename = "user.backup_code_consumed")]
    BackupCodeConsumed { index: u32, remaining: u32 },
    /// Few backup codes remain (so a webhook can warn the user).
    #[serde(rename = "user.backup_codes_low")]
    BackupCodesLow { remaining: u32 },
    /// A wrong current factor was given to authorize a change; it counts toward the limits.
    #[serde(rename = "user.two_factor_step_up_failed")]
    TwoFactorStepUpFailed { factor: Factor },
    /// 2FA was turned off (allowed by the organization's policy, proven by a current factor).
    #[serde(rename = "user.two_factor_disabled")]
    TwoFactorDisabled {
        factor: Factor,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        totp_step: Option<i64>,
    },
    /// The second factor and backup codes are gone and the failure count is cleared; the
    /// user must enroll again at next sign-in. Who did it is in the metadata.
    #[serde(rename = "user.two_factor_reset")]
    TwoFactorReset { reason: TwoFactorResetReason },
    /// The consecutive-failure block was lifted; the factor stays.
    /// A code was emailed to stand in for the current factor (phone number change).
    #[serde(rename = "user.email_code_sent")]
    EmailCodeSent(tf::EmailCodeSent),
    /// A lost-device recovery code was emailed (only its keyed digest is kept).
    #[serde(rename = "user.recovery_code_sent")]
    RecoveryCodeSent(tf::RecoveryCodeSent),
    #[serde(rename = "user.two_factor_unblocked")]
    TwoFactorUnblocked {},
    /// Every session ends and API keys stop working until the user is enabled again.
    #[serde(rename = "user.disabled")]
    Disabled {},
    #[serde(rename = "user.enabled")]
    Enabled {},
    /// The sub-user left the organization: sessions and API keys end for good.
    #[serde(rename = "user.removed")]
    Removed {},
    /// The person was forgotten: their data key is destroyed, so every value sealed for
    /// them (email, names, phone numbers, secrets) is unreadable everywhere from now on.
    /// The history keeps *that* things happened. Who did it is in the metadata.
    #[serde(rename = "user.forgotten")]
    Forgotten {},
    /// Only the key's digest and a display prefix are kept.
    #[serde(rename = "user.api_key_created")]
    ApiKeyCreated {
        key_id: Uuid,
        name: String,
        prefix: String,
        key_digest: Digest,
    },
    /// A fresh secret replaced the key's old one, which stops working at once.
    #[serde(rename = "user.api_key_rotated")]
    ApiKeyRotated {
        key_id: Uuid,
        prefix: String,
        key_digest: Digest,
    },
    #[serde(rename = "user.api_key_revoked")]
    ApiKeyRevoked { key_id: Uuid },
}

impl DomainEvent for UserEvent {
    fn event_types() -> &'static [&'static str] {
        &[
            "user.registered",
            "user.session_started",
            "user.sign_in_failed",
            "user.session_ended",
            "user.profile_updated",
            "user.email_changed",
            "user.password_changed",
            "user.two_factor_enrollment_started",
            "user.two_factor_enrollment_failed",
            "user.two_factor_enabled",
            "user.two_factor_code_sent",
            "user.two_factor_method_changed",
            "user.backup_codes_regenerated",
            "user.two_factor_challenge_started",
            "user.two_factor_challenge_failed",
            "user.two_factor_challenge_passed",
            "user.backup_code_consumed",
            "user.backup_codes_low",
            "user.two_factor_step_up_failed",
            "user.two_factor_disabled",
            "user.two_factor_reset",
            "user.email_code_sent",
            "user.recovery_code_sent",
            "user.two_factor_unblocked",
            "user.disabled",
            "user.enabled",
            "user.removed",
            "user.forgotten",
            "user.api_key_created",
            "user.api_key_rotated",
            "user.api_key_revoked",
        ]
    }
}

/// A user's state as far as decisions need it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub id: Option<Uuid>,
    pub organization_id: Option<Uuid>,
    pub role: Option<Role>,
    pub email: Option<Sealed>,
    pub password_hash: Option<Sealed>,
    /// Open sessions: id → hard expiry.
    pub sessions: BTreeMap<Uuid, DateTime<Utc>>,
    /// Times of the most recent failed sign-ins (at most [`SIGN_IN_FAILURES_ALLOWED`]).
    pub recent_sign_in_failures: Vec<DateTime<Utc>>,
    #[serde(default)]
    pub two_factor: TwoFactor,
    #[serde(default)]
    pub status: UserStatus,
    /// Live API keys: id → display prefix.
    #[serde(default)]
    pub api_keys: BTreeMap<Uuid, String>,
    /// The second factor was reset: the next sign-in may only enroll one.
    #[serde(default)]
    pub must_enroll: bool,
    /// The person was forgotten (crypto-shredded); final.
    #[serde(default)]
    pub forgotten: bool,
}

impl Aggregate for User {
    const STREAM_TYPE: &'static str = "user";
    const SNAPSHOT_VERSION: i32 = 3;
    type Event = UserEvent;

    fn apply(&mut self, event: &UserEvent, recorded_at: DateTime<Utc>) {
        match event {
            UserEvent::Registered {
                user_id,
                organization_id,
                role,
                email,
                password_hash,
                ..
            } => {
                self.id = Some(*user_id);
                self.organization_id = Some(*organization_id);
                self.role = Some(*role);
                self.email = Some(email.clone());
                self.password_hash = Some(password_hash.clone());
            }
            UserEvent::SessionStarted {
                session_id,
                expires_at,
                ..
            } => {
                self.sessions.retain(|_, exp| *exp > recorded_at);
                self.sessions.insert(*session_id, *expires_at);
                self.recent_sign_in_failures.clear();
            }
            UserEvent::SignInFailed { .. } => {
                self.recent_sign_in_failures.push(recorded_at);
                let excess = self
                    .recent_sign_in_failures
                    .len()
                    .saturating_sub(SIGN_IN_FAILURES_ALLOWED);
                self.recent_sign_in_failures.drain(..excess);
            }
            UserEvent::SessionEnded { session_id, .. } => {
                self.sessions.remove(session_id);
            }
            UserEvent::ProfileUpdated { .. } => {}
            UserEvent::EmailChanged { email } => self.email = Some(email.clone()),
            UserEvent::PasswordChanged { password_hash } => {
                self.password_hash = Some(password_hash.clone())
            }
            UserEvent::TwoFactorEnrollmentStarted(e) => {
                tf::apply_enrollment_started(&mut self.two_factor, e)
            }
            UserEvent::TwoFactorEnrollmentFailed { .. } => {
                tf::apply_enrollment_failed(&mut self.two_factor)
            }
            UserEvent::TwoFactorEnabled(e) => {
                tf::apply_enabled(&mut self.two_factor, e);
                self.must_enroll = false;
            }
            UserEvent::TwoFactorCodeSent(e) => {
                tf::apply_code_sent(&mut self.two_factor, e, recorded_at)
            }
            UserEvent::TwoFactorMethodChanged(e) => {
                tf::apply_method_changed(&mut self.two_factor, e)
            }
            UserEvent::BackupCodesRegenerated {
                factor,
                totp_step,
                backup_codes,
                backup_code_count,
            } => {
                tf::spend(&mut self.two_factor, Some(*factor), *totp_step);
                tf::replace_backup_codes(&mut self.two_factor, backup_codes, *backup_code_count);
            }
            UserEvent::TwoFactorChallengeStarted {
                challenge_id,
                expires_at,
            } => {
                self.recent_sign_in_failures.clear();
                tf::apply_challenge_started(
                    &mut self.two_factor,
                    *challenge_id,
                    *expires_at,
                    recorded_at,
                )
            }
            UserEvent::TwoFactorChallengeFailed { challenge_id, .. } => {
                tf::apply_challenge_failed(&mut self.two_factor, *challenge_id)
            }
            UserEvent::TwoFactorChallengePassed(e) => {
                tf::apply_challenge_passed(&mut self.two_factor, e)
            }
            UserEvent::BackupCodeConsumed { index, .. } => {
                self.two_factor.backup_codes_used.insert(*index);
            }
            UserEvent::BackupCodesLow { .. } => {}
            UserEvent::TwoFactorStepUpFailed { .. } => {
                tf::apply_step_up_failed(&mut self.two_factor, recorded_at)
            }
            UserEvent::TwoFactorDisabled { totp_step, .. } => {
                tf::apply_disabled(&mut self.two_factor, *totp_step)
            }
            UserEvent::TwoFactorReset { .. } => {
                self.two_factor = TwoFactor {
                    // Steps accepted before stay spent.
                    last_totp_step: self.two_factor.last_totp_step,
                    code_sends: std::mem::take(&mut self.two_factor.code_sends),
                    ..TwoFactor::default()
                };
                self.must_enroll = true;
            }
            UserEvent::EmailCodeSent(e) => {
                tf::apply_email_code_sent(&mut self.two_factor, e, recorded_at)
            }
            UserEvent::RecoveryCodeSent(e) => {
                tf::apply_recovery_code_sent(&mut self.two_factor, e, recorded_at)
            }
            UserEvent::TwoFactorUnblocked {} => self.two_factor.consecutive_failures = 0,
            UserEvent::Disabled {} => {
                self.status = UserStatus::Disabled;
                self.sessions.clear();
            }
            UserEvent::Enabled {} => self.status = UserStatus::Enabled,
            UserEvent::Removed {} => {
                self.status = UserStatus::Removed;
                self.sessions.clear();
                self.api_keys.clear();
            }
            UserEvent::Forgotten {} => {
                self.status = UserStatus::Removed;
                self.sessions.clear();
                self.api_keys.clear();
                self.email = None;
                self.password_hash = None;
                self.two_factor = TwoFactor::default();
                self.must_enroll = false;
                self.forgotten = true;
            }
            UserEvent::ApiKeyCreated { key_id, prefix, .. }
            | UserEvent::ApiKeyRotated { key_id, prefix, .. } => {
                self.api_keys.insert(*key_id, prefix.clone());
            }
            UserEvent::ApiKeyRevoked { key_id } => {
                self.api_keys.remove(key_id);
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("this user already exists")]
    AlreadyRegistered,
    #[error("no such user")]
    NotFound,
    #[error("the current password is wrong")]
    WrongPassword,
    #[error("too many failed sign-in attempts")]
    TooManySignInAttempts { retry_after_secs: i64 },
    #[error("no such session")]
    SessionNotFound,
    #[error("this user is disabled or removed")]
    Inactive,
    #[error("a user may hold at most {MAX_API_KEYS} API keys")]
    TooManyApiKeys,
    #[error("an API key name must be 1 to {MAX_API_KEY_NAME} characters")]
    InvalidApiKeyName,
    #[error("no such API key")]
    ApiKeyNotFound,
    #[error(transparent)]
    TwoFactor(#[from] TwoFactorError),
}

/// What a user can be asked to do. Secrets arrive sealed or digested, and secret checks
/// (argon2) arrive as their outcome: the shell did the I/O and CPU work.
#[derive(Debug, Clone)]
pub enum UserCommand {
    Register {
        user_id: Uuid,
        organization_id: Uuid,
        role: Role,
        email: Sealed,
        first_name: Sealed,
        last_name: Sealed,
        password_hash: Sealed,
    },
    /// Start a session after the password was checked (`password_ok`); when 2FA is on,
    /// start challenge `challenge_id` instead.
    SignIn {
        password_ok: bool,
        challenge_id: Uuid,
        session_id: Uuid,
        token_digest: Digest,
        session_lifetime: Duration,
        idle_timeout: Duration,
        /// The organization requires 2FA, the user has none, and skipping is over: the
        /// session may only enroll.
        setup_only: bool,
    },
    SignOut {
        session_id: Uuid,
    },
    /// A signed-in user gave a wrong current password (counts like a failed sign-in).
    RecordPasswordFailure,
    UpdateProfile {
        first_name: Option<Sealed>,
        last_name: Option<Sealed>,
        phone_number: Option<Sealed>,
    },
    ChangeEmail {
        current_password_ok: bool,
        email: Sealed,
    },
    ChangePassword {
        current_password_ok: bool,
        password_hash: Sealed,
        /// The session making the change survives; every other one ends.
        keep_session: Option<Uuid>,
    },
    /// Begin TOTP enrollment with a fresh (sealed) secret. With 2FA on, `proof` is the
    /// current factor that authorizes the change.
    StartTotpEnrollment {
        enrollment_id: Uuid,
        totp_secret: Sealed,
        proof: Option<Proof>,
    },
    /// Begin SMS or voice enrollment: the number (sealed) and the digest of the code sent.
    StartPhoneEnrollment {
        enrollment_id: Uuid,
        method: Method,
        phone_number: Sealed,
        code_digest: Digest,
        proof: Option<Proof>,
    },
    /// Confirm an enrollment with a code from the new factor: 2FA turns on with these
    /// backup codes, or (already on) moves to the new method keeping the old codes.
    EnableTwoFactor {
        enrollment_id: Uuid,
        proof: Proof,
        backup_codes: Sealed,
        backup_code_count: u32,
    },
    /// Replace the backup codes, proven by a current second factor.
    RegenerateBackupCodes {
        proof: Proof,
        backup_codes: Sealed,
        backup_code_count: u32,
    },
    /// Record a code sent by SMS or call for an enrollment, a challenge or a step-up.
    SendTwoFactorCode {
        purpose: CodePurpose,
        target_id: Uuid,
        channel: Method,
        code_digest: Digest,
    },
    /// Answer a sign-in challenge with a TOTP code.
    VerifyTotp {
        challenge_id: Uuid,
        totp_step: Option<i64>,
        session: NewSession,
    },
    /// Answer a sign-in challenge with a code sent by SMS or call.
    VerifySentCode {
        challenge_id: Uuid,
        code_digest: Digest,
        session: NewSession,
    },
    /// Answer a sign-in challenge with a backup code, using it up.
    ConsumeBackupCode {
        challenge_id: Uuid,
        index: Option<u32>,
        session: NewSession,
    },
    /// Turn 2FA off: `allowed` by the organization's policy, proven by a current factor.
    DisableTwoFactor {
        allowed: bool,
        proof: Proof,
    },
    /// Record a wrong current factor found before any other work (still wrong now).
    RecordStepUpFailure {
        proof: Proof,
    },
    ResetTwoFactor {
        reason: TwoFactorResetReason,
    },
    UnblockTwoFactor,
    /// Email a code that stands in for the current factor when the phone number changes.
    SendEmailCode {
        code_digest: Digest,
    },
    /// Lost-device recovery: email a code for this challenge.
    SendRecoveryCode {
        challenge_id: Uuid,
        code_digest: Digest,
    },
    /// Lost-device recovery: the passphrase's check and the typed email code.
    Recover {
        challenge_id: Uuid,
        passphrase_ok: bool,
        code_digest: Digest,
        session: NewSession,
    },
    Disable,
    Enable,
    Remove,
    /// Forget the person: removed (if not yet) and forgotten. Nothing if already forgotten.
    Forget,
    CreateApiKey {
        key_id: Uuid,
        name: String,
        prefix: String,
        key_digest: Digest,
    },
    RotateApiKey {
        key_id: Uuid,
        prefix: String,
        key_digest: Digest,
    },
    RevokeApiKey {
        key_id: Uuid,
    },
}

/// The session a passed challenge opens.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub session_id: Uuid,
    pub token_digest: Digest,
    pub lifetime: Duration,
    pub idle_timeout: Duration,
}

impl NewSession {
    pub(crate) fn started(&self, now: DateTime<Utc>) -> UserEvent {
        UserEvent::SessionStarted {
            session_id: self.session_id,
            token_digest: self.token_digest.clone(),
            expires_at: now + self.lifetime,
            scope: None,
            idle_timeout_secs: self.idle_timeout.num_seconds(),
        }
    }
}

/// Refuses a sign-in before any password work when the account is throttled.
pub fn check_sign_in_allowed(user: &User, now: DateTime<Utc>) -> Result<(), UserError> {
    let window = Duration::seconds(SIGN_IN_FAILURE_WINDOW_SECS);
    let recent: Vec<_> = user
        .recent_sign_in_failures
        .iter()
        .filter(|t| now - **t < window)
        .collect();
    match recent.first() {
        Some(oldest) if recent.len() >= SIGN_IN_FAILURES_ALLOWED => {
            Err(UserError::TooManySignInAttempts {
                retry_after_secs: (window - (now - **oldest)).num_seconds().max(1),
            })
        }
        _ => Ok(()),
    }
}

pub fn decide(user: &User, cmd: UserCommand, ctx: &Ctx) -> Result<Vec<UserEvent>, UserError> {
    if user.id.is_none() && !matches!(cmd, UserCommand::Register { .. }) {
        return Err(UserError::NotFound);
    }
    if let UserCommand::Forget = cmd {
        return Ok(match (user.forgotten, user.status) {
            (true, _) => vec![],
            (false, UserStatus::Removed) => vec![UserEvent::Forgotten {}],
            (false, _) => vec![UserEvent::Removed {}, UserEvent::Forgotten {}],
        });
    }
    if user.status == UserStatus::Removed
        || (user.status == UserStatus::Disabled
            && !matches!(
                cmd,
                UserCommand::Enable | UserCommand::Disable | UserCommand::Remove
            ))
    {
        return Err(UserError::Inactive);
    }
    match cmd {
        UserCommand::Register {
            user_id,
            organization_id,
            role,
            email,
            first_name,
            last_name,
            password_hash,
        } => {
            if user.id.is_some() {
                return Err(UserError::AlreadyRegistered);
            }
            Ok(vec![UserEvent::Registered {
                user_id,
                organization_id,
                role,
                email,
                first_name,
                last_name,
                password_hash,
            }])
        }
        UserCommand::SignIn {
            password_ok,
            challenge_id,
            session_id,
            token_digest,
            session_lifetime,
            idle_timeout,
            setup_only,
        } => {
            check_sign_in_allowed(user, ctx.now)?;
            if !password_ok {
                return Ok(vec![UserEvent::SignInFailed {
                    reason: "wrong_password".into(),
                }]);
            }
            if user.two_factor.enabled {
                if user.two_factor.locked() {
                    return Err(TwoFactorError::SecondFactorBlocked.into());
                }
                return Ok(vec![UserEvent::TwoFactorChallengeStarted {
                    challenge_id,
                    expires_at: tf::challenge_expiry(ctx.now),
                }]);
            }
            Ok(vec![UserEvent::SessionStarted {
                session_id,
                token_digest,
                expires_at: ctx.now + session_lifetime,
                idle_timeout_secs: idle_timeout.num_seconds(),
                scope: (setup_only || user.must_enroll).then(|| "two_factor_setup".to_owned()),
            }])
        }
        UserCommand::RecordPasswordFailure => {
            check_sign_in_allowed(user, ctx.now)?;
            Ok(vec![UserEvent::SignInFailed {
                reason: "wrong_current_password".into(),
            }])
        }
        UserCommand::SignOut { session_id } => {
            if !user.sessions.contains_key(&session_id) {
                return Err(UserError::SessionNotFound);
            }
            Ok(vec![UserEvent::SessionEnded {
                session_id,
                reason: SessionEndReason::SignedOut,
            }])
        }
        UserCommand::UpdateProfile {
            first_name,
            last_name,
            phone_number,
        } => {
            if first_name.is_none() && last_name.is_none() && phone_number.is_none() {
                return Ok(vec![]);
            }
            Ok(vec![UserEvent::ProfileUpdated {
                first_name,
                last_name,
                phone_number,
            }])
        }
        UserCommand::ChangeEmail {
            current_password_ok,
            email,
        } => {
            if !current_password_ok {
                return Err(UserError::WrongPassword);
            }
            Ok(vec![UserEvent::EmailChanged { email }])
        }
        UserCommand::ChangePassword {
            current_password_ok,
            password_hash,
            keep_session,
        } => {
            if !current_password_ok {
                return Err(UserError::WrongPassword);
            }
            let mut events = vec![UserEvent::PasswordChanged { password_hash }];
            events.extend(
                user.sessions
                    .iter()
                    .filter(|(id, exp)| Some(**id) != keep_session && **exp > ctx.now)
                    .map(|(id, _)| UserEvent::SessionEnded {
                        session_id: *id,
                        reason: SessionEndReason::PasswordChanged,
                    }),
            );
            Ok(events)
        }
        UserCommand::StartTotpEnrollment {
            enrollment_id,
            totp_secret,
            proof,
        } => tf::start_enrollment(
            user,
            enrollment_id,
            Method::Totp,
            Some(totp_secret),
            None,
            proof.as_ref(),
            ctx,
        ),
        UserCommand::StartPhoneEnrollment {
            enrollment_id,
            method,
            phone_number,
            code_digest,
            proof,
        } => tf::start_enrollment(
            user,
            enrollment_id,
            method,
            None,
            Some((phone_number, code_digest)),
            proof.as_ref(),
            ctx,
        ),
        UserCommand::EnableTwoFactor {
            enrollment_id,
            proof,
            backup_codes,
            backup_code_count,
        } => tf::confirm_enrollment(
            user,
            enrollment_id,
            &proof,
            backup_codes,
            backup_code_count,
            ctx,
        ),
        UserCommand::RegenerateBackupCodes {
            proof,
            backup_codes,
            backup_code_count,
        } => tf::regenerate_backup_codes(user, &proof, backup_codes, backup_code_count, ctx),
        UserCommand::SendTwoFactorCode {
            purpose,
            target_id,
            channel,
            code_digest,
        } => tf::send_code(user, purpose, target_id, channel, code_digest, ctx),
        UserCommand::VerifyTotp {
            challenge_id,
            totp_step,
            session,
        } => tf::answer_challenge(user, challenge_id, &Proof::Totp(totp_step), &session, ctx),
        UserCommand::VerifySentCode {
            challenge_id,
            code_digest,
            session,
        } => tf::answer_challenge(user, challenge_id, &Proof::Code(code_digest), &session, ctx),
        UserCommand::DisableTwoFactor { allowed, proof } => tf::disable(user, allowed, &proof, ctx),
        UserCommand::RecordStepUpFailure { proof } => tf::record_step_up_failure(user, &proof, ctx),
        UserCommand::ConsumeBackupCode {
            challenge_id,
            index,
            session,
        } => tf::answer_challenge(user, challenge_id, &Proof::BackupCode(index), &session, ctx),
        UserCommand::ResetTwoFactor { reason } => {
            if !user.two_factor.enabled && user.two_factor.enrollment.is_none() && user.must_enroll
            {
                return Ok(vec![]);
            }
            Ok(vec![UserEvent::TwoFactorReset { reason }])
        }
        UserCommand::UnblockTwoFactor => Ok(if user.two_factor.consecutive_failures == 0 {
            vec![]
        } else {
            vec![UserEvent::TwoFactorUnblocked {}]
        }),
        UserCommand::SendEmailCode { code_digest } => tf::send_email_code(user, code_digest, ctx),
        UserCommand::SendRecoveryCode {
            challenge_id,
            code_digest,
        } => tf::send_recovery_code(user, challenge_id, code_digest, ctx),
        UserCommand::Recover {
            challenge_id,
            passphrase_ok,
            code_digest,
            session,
        } => tf::recover(
            user,
            challenge_id,
            passphrase_ok,
            &code_digest,
            &session,
            ctx,
        ),
        UserCommand::Disable => Ok(if user.status == UserStatus::Disabled {
            vec![]
        } else {
            vec![UserEvent::Disabled {}]
        }),
        UserCommand::Enable => Ok(if user.status == UserStatus::Enabled {
            vec![]
        } else {
            vec![UserEvent::Enabled {}]
        }),
        UserCommand::Remove => Ok(vec![UserEvent::Removed {}]),
        UserCommand::Forget => Ok(vec![]),
        UserCommand::CreateApiKey {
            key_id,
            name,
            prefix,
            key_digest,
        } => {
            let name = name.trim().to_owned();
            if name.is_empty()
                || name.chars().count() > MAX_API_KEY_NAME
                || name.chars().any(char::is_control)
            {
                return Err(UserError::InvalidApiKeyName);
            }
            if user.api_keys.len() >= MAX_API_KEYS {
                return Err(UserError::TooManyApiKeys);
            }
            Ok(vec![UserEvent::ApiKeyCreated {
                key_id,
                name,
                prefix,
                key_digest,
            }])
        }
        UserCommand::RotateApiKey {
            key_id,
            prefix,
            key_digest,
        } => {
            if !user.api_keys.contains_key(&key_id) {
                return Err(UserError::ApiKeyNotFound);
            }
            Ok(vec![UserEvent::ApiKeyRotated {
                key_id,
                prefix,
                key_digest,
            }])
        }
        UserCommand::RevokeApiKey { key_id } => {
            if !user.api_keys.contains_key(&key_id) {
                return Err(UserError::ApiKeyNotFound);
            }
            Ok(vec![UserEvent::ApiKeyRevoked { key_id }])
        }
    }
}

#[cfg(test)]
#[path = "user_tests.rs"]
mod tests;
