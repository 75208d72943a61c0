//! Two-factor authentication commands: enrollment by authenticator app, SMS or voice call
//! and its confirmation (EnableTwoFactor), method changes, backup-code regeneration, codes
//! sent for challenges and step-ups, and answering a sign-in challenge with a code or a
//! backup code (ConsumeBackupCode). The shell opens sealed secrets, checks codes and sends
//! messages; the domain decides whether a proof may still be used, so one-time holds under
//! races. A code is sent only after the decision to send it was checked, so a refused send
//! records nothing.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;
use warden_domain::organization::Organization;
use warden_domain::two_factor::{self as tf, CodePurpose, Method, Proof, TwoFactorError};
use warden_domain::user::{
    self, NewSession as SessionSpec, User, UserCommand, UserError, UserEvent,
};
use warden_domain::values::PhoneNumber;
use warden_domain::{Aggregate, Digest, Sealed};

use crate::accounts::{NewSession, SessionPolicy};
use crate::error::CommandError;
use crate::otp::{self, TotpSecret};
use crate::pipeline::{Meta, Pipeline};
use crate::ports::{Secrets, SecretsError};
use crate::sender::{Channel, OutboundMessage, Sender};

/// Digits in an SMS or voice code.
pub const CODE_DIGITS: usize = 6;

pub type Result<T> = std::result::Result<T, CommandError<UserError>>;

/// A second factor as typed by the user.
#[derive(Clone)]
pub enum Presented {
    /// A code: from the authenticator app, or sent by SMS or call (whichever is enrolled).
    Code(String),
    BackupCode(String),
    /// A code sent to the account's email (stands in only when the phone number changes).
    EmailCode(String),
}

impl std::fmt::Debug for Presented {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Presented::Code(_) => "Code(<redacted>)",
            Presented::BackupCode(_) => "BackupCode(<redacted>)",
            Presented::EmailCode(_) => "EmailCode(<redacted>)",
        })
    }
}

/// What a new enrollment shows the user once: for TOTP the secret and QR codes; for SMS
/// and calls nothing secret (the code went to the phone).
pub struct NewEnrollment {
    pub enrollment_id: Uuid,
    pub method: Method,
    pub expires_at: DateTime<Utc>,
    pub totp: Option<TotpDetails>,
    pub position: Option<i64>,
}

pub struct TotpDetails {
    pub secret_base32: String,
    pub otpauth_uri: String,
    pub qr_png: Vec<u8>,
    pub qr_svg: String,
}

/// A confirmed enrollment: the method now in force, and the backup codes on first
/// enablement (a method change keeps the old set).
pub struct Confirmed {
    pub method: Method,
    pub backup_codes: Option<Vec<String>>,
    pub position: Option<i64>,
}

/// New backup codes, shown once.
pub struct BackupCodes {
    pub codes: Vec<String>,
    pub position: Option<i64>,
}

pub struct TwoFactorCommands {
    pipeline: Pipeline,
    secrets: Arc<dyn Secrets>,
    sender: Arc<dyn Sender>,
    policy: SessionPolicy,
}

fn domain(e: TwoFactorError) -> CommandError<UserError> {
    CommandError::Domain(UserError::TwoFactor(e))
}

fn internal(e: impl std::fmt::Display) -> CommandError<UserError> {
    CommandError::Secrets(SecretsError::Hashing(e.to_string()))
}

impl TwoFactorCommands {
    pub fn new(
        pipeline: Pipeline,
        secrets: Arc<dyn Secrets>,
        sender: Arc<dyn Sender>,
        policy: SessionPolicy,
    ) -> Self {
        Self {
            pipeline,
            secrets,
            sender,
            policy,
        }
    }

    async fn load(&self, user_id: Uuid) -> Result<User> {
        Ok(self.load_at(user_id).await?.0)
    }

    /// The user and the stream version their state is at.
    async fn load_at(&self, user_id: Uuid) -> Result<(User, i64)> {
        let loaded = self
            .pipeline
            .load::<User, UserError>(&User::stream_id(user_id))
            .await?;
        if loaded.state.id.is_none() {
            return Err(CommandError::Domain(UserError::NotFound));
        }
        Ok((Arc::unwrap_or_clone(loaded.state), loaded.version))
    }

    /// Runs a command whose proof was checked against the user's state at `version`, on
    /// exactly that state. `None` when the stream moved in between (a concurrent sign-in,
    /// a new secret or backup-code set): the caller proves again, so a proof never meets
    /// credentials it was not checked against.
    async fn run_at(
        &self,
        user_id: Uuid,
        version: i64,
        cmd: &UserCommand,
        meta: &Meta,
    ) -> Result<Option<crate::Executed<User>>> {
        let outcome = self
            .pipeline
            .execute_with::<User, UserError, _, ()>(
                &User::stream_id(user_id),
                meta,
                |state, ctx, plan, at| {
                    if at != version {
                        return Err(CommandError::Conflict);
                    }
                    let events =
                        user::decide(state, cmd.clone(), ctx).map_err(CommandError::Domain)?;
                    Ok((events, plan, ()))
                },
            )
            .await;
        match outcome {
            Ok((executed, ())) => Ok(Some(executed)),
            Err(CommandError::Conflict) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn open_text(&self, sealed: Option<&Sealed>) -> Result<Option<String>> {
        let Some(sealed) = sealed else {
            return Ok(None);
        };
        Ok(self
            .secrets
            .open(sealed)
            .await?
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    async fn totp_secret(&self, sealed: Option<&Sealed>) -> Result<Option<TotpSecret>> {
        let Some(sealed) = sealed else {
            return Ok(None);
        };
        match self.secrets.open(sealed).await? {
            Some(bytes) => Ok(TotpSecret::from_bytes(bytes).ok()),
            None => Ok(None),
        }
    }

    fn code_digest(&self, code: &str) -> Digest {
        self.secrets.keyed_digest("two_factor_code", code.trim())
    }

    async fn run(
        &self,
        user_id: Uuid,
        cmd: &UserCommand,
        meta: &Meta,
    ) -> Result<crate::Executed<User>> {
        self.pipeline
            .execute::<User, UserError, _>(&User::stream_id(user_id), meta, |state, ctx| {
                user::decide(state, cmd.clone(), ctx)
            })
            .await
    }

    /// Proves `presented` (if any) against the user's current state and runs the command
    /// built from the proof on that same state, proving again if the stream moved in
    /// between. Returns the state the proof was checked against and the outcome.
    async fn run_proved(
        &self,
        user_id: Uuid,
        presented: Option<&Presented>,
        meta: &Meta,
        build: impl Fn(Option<Proof>) -> UserCommand,
    ) -> Result<(User, crate::Executed<User>)> {
        self.run_proved_from(user_id, presented, None, meta, build)
            .await
    }

    /// [`Self::run_proved`], starting from a proof already made against the state at a
    /// version (so a caller that had to prove first does not pay for it twice).
    async fn run_proved_from(
        &self,
        user_id: Uuid,
        presented: Option<&Presented>,
        mut first: Option<(User, i64, Proof)>,
        meta: &Meta,
        build: impl Fn(Option<Proof>) -> UserCommand,
    ) -> Result<(User, crate::Executed<User>)> {
        for _ in 0..crate::pipeline::MAX_ATTEMPTS {
            let (user, version, proof) = match first.take() {
                Some((user, version, proof)) => (user, version, Some(proof)),
                None => {
                    let (user, version) = self.load_at(user_id).await?;
                    let proof = match presented {
                        Some(p) => Some(self.prove(&user, p).await?),
                        None => None,
                    };
                    (user, version, proof)
                }
            };
            if let Some(executed) = self.run_at(user_id, version, &build(proof), meta).await? {
                return Ok((user, executed));
            }
        }
        Err(CommandError::Conflict)
    }

    /// Commits `cmd` (which records the code's digest and counts the send), then sends
    /// `code` to `to`. Committing first makes the daily cap hold under concurrent requests:
    /// only a committed reservation is ever sent. A refused command sends nothing; a send
    /// that fails after the commit is reported (503) and still counts.
    #[allow(clippy::too_many_arguments)]
    async fn commit_then_send(
        &self,
        user_id: Uuid,
        cmd: UserCommand,
        channel: Method,
        to: &str,
        code: String,
        purpose: &str,
        meta: &Meta,
    ) -> Result<crate::Executed<User>> {
        let executed = self.run(user_id, &cmd, meta).await?;
        refuse_failed_step_up(&executed)?;
        self.send_committed(channel, to, code, purpose).await?;
        Ok(executed)
    }

    /// Sends a code whose reservation has committed.
    async fn send_committed(
        &self,
        channel: Method,
        to: &str,
        code: String,
        purpose: &str,
    ) -> Result<()> {
        let (channel, text) = match channel {
            Method::Call => {
                let spoken = spaced(&code);
                (
                    Channel::Call,
                    format!("Your Warden code is {spoken}. Again: {spoken}."),
                )
            }
            _ => (
                Channel::Sms,
                format!("Your Warden code is {code}. It expires in 5 minutes. Never share it."),
            ),
        };
        self.sender
            .send(&OutboundMessage::new(
                channel,
                to,
                text,
                Some(code),
                purpose,
            ))
            .await
            .map_err(|e| e.after_commit("the code"))
    }

    /// Starts TOTP enrollment: a fresh 160-bit secret, sealed in the event, shown once.
    /// With 2FA on, `current` must prove the current factor.
    pub async fn start_totp(
        &self,
        user_id: Uuid,
        current: Option<&Presented>,
        meta: &Meta,
    ) -> Result<NewEnrollment> {
        let secret = otp::new_totp_secret();
        let sealed = self
            .secrets
            .seal(&User::stream_id(user_id), secret.as_bytes())
            .await?;
        let enrollment_id = Uuid::now_v7();
        let (user, executed) = self
            .run_proved(user_id, current, meta, |proof| {
                UserCommand::StartTotpEnrollment {
                    enrollment_id,
                    totp_secret: sealed.clone(),
                    proof,
                }
            })
            .await?;
        refuse_failed_step_up(&executed)?;
        let account = self
            .open_text(user.email.as_ref())
            .await?
            .unwrap_or_default();
        let uri = otp::otpauth_uri(&secret, &account);
        Ok(NewEnrollment {
            enrollment_id,
            method: Method::Totp,
            expires_at: self.enrollment_expiry(&executed.state),
            totp: Some(TotpDetails {
                secret_base32: secret.base32(),
                qr_png: otp::qr_png(&uri).map_err(internal)?,
                qr_svg: otp::qr_svg(&uri).map_err(internal)?,
                otpauth_uri: uri,
            }),
            position: executed.position,
        })
    }

    /// Starts SMS or voice enrollment: a code goes to the new number.
    pub async fn start_phone(
        &self,
        user_id: Uuid,
        method: Method,
        phone: &PhoneNumber,
        current: Option<&Presented>,
        meta: &Meta,
    ) -> Result<NewEnrollment> {
        let sealed = self
            .secrets
            .seal(&User::stream_id(user_id), phone.as_str().as_bytes())
            .await?;
        let code = otp::new_numeric_code(CODE_DIGITS);
        let code_digest = self.code_digest(&code);
        let enrollment_id = Uuid::now_v7();
        let (_, executed) = self
            .run_proved(user_id, current, meta, |proof| {
                UserCommand::StartPhoneEnrollment {
                    enrollment_id,
                    method,
                    phone_number: sealed.clone(),
                    code_digest: code_digest.clone(),
                    proof,
                }
            })
            .await?;
        refuse_failed_step_up(&executed)?;
        self.send_committed(method, phone.as_str(), code, "two_factor_enrollment")
            .await?;
        Ok(NewEnrollment {
            enrollment_id,
            method,
            expires_at: self.enrollment_expiry(&executed.state),
            totp: None,
            position: executed.position,
        })
    }

    fn enrollment_expiry(&self, state: &User) -> DateTime<Utc> {
        state
            .two_factor
            .enrollment
            .as_ref()
            .map(|e| e.expires_at)
            .unwrap_or_else(|| tf::enrollment_expiry(self.pipeline.now()))
    }

    /// Sends a code for a sign-in challenge to the enrolled number.
    pub async fn send_challenge_code(
        &self,
        user_id: Uuid,
        challenge_id: Uuid,
        channel: Method,
        meta: &Meta,
    ) -> Result<Option<i64>> {
        self.send_code(
            user_id,
            CodePurpose::SignIn,
            challenge_id,
            channel,
            "two_factor_sign_in",
            meta,
        )
        .await
    }

    /// Sends a step-up code (to prove the current factor before a change).
    pub async fn send_step_up_code(
        &self,
        user_id: Uuid,
        channel: Method,
        meta: &Meta,
    ) -> Result<Option<i64>> {
        self.send_code(
            user_id,
            CodePurpose::StepUp,
            Uuid::now_v7(),
            channel,
            "two_factor_step_up",
            meta,
        )
        .await
    }

    async fn send_code(
        &self,
        user_id: Uuid,
        purpose: CodePurpose,
        target_id: Uuid,
        channel: Method,
        label: &str,
        meta: &Meta,
    ) -> Result<Option<i64>> {
        let user = self.load(user_id).await?;
        let phone = self
            .open_text(user.two_factor.phone_number.as_ref())
            .await?
            .ok_or_else(|| domain(TwoFactorError::NoPhoneEnrolled))?;
        let code = otp::new_numeric_code(CODE_DIGITS);
        let cmd = UserCommand::SendTwoFactorCode {
            purpose,
            target_id,
            channel,
            code_digest: self.code_digest(&code),
        };
        let executed = self
            .commit_then_send(user_id, cmd, channel, &phone, code, label, meta)
            .await?;
        Ok(executed.position)
    }

    /// Fresh backup codes: shown once, stored as argon2id hashes (sealed), one salt each.
    async fn new_backup_codes(&self, subject: &str) -> Result<(Vec<String>, Sealed, u32)> {
        let codes = otp::new_backup_codes();
        let mut hashes = Vec::with_capacity(codes.len());
        for code in &codes {
            let canonical = otp::normalize_backup_code(code).unwrap_or_default();
            hashes.push(self.secrets.hash_secret(&canonical).await?);
        }
        let json = serde_json::to_vec(&hashes).map_err(internal)?;
        let sealed = self.secrets.seal(subject, &json).await?;
        Ok((codes, sealed, hashes.len() as u32))
    }

    /// Confirms an enrollment with a code from the new factor: 2FA turns on and the first
    /// backup codes are returned; or, with 2FA already on, the method changes and the
    /// backup codes stay (none returned). A wrong code is recorded (five end the enrollment).
    pub async fn confirm(
        &self,
        user_id: Uuid,
        enrollment_id: Uuid,
        code: &str,
        meta: &Meta,
    ) -> Result<Confirmed> {
        let user = self.load(user_id).await?;
        let now = self.pipeline.now();
        let enrollment =
            tf::usable_enrollment(&user.two_factor, enrollment_id, now).map_err(domain)?;
        let proof = match enrollment.method {
            Method::Totp => Proof::Totp(
                match self.totp_secret(enrollment.totp_secret.as_ref()).await? {
                    Some(secret) => otp::totp_match(&secret, code, now),
                    None => None,
                },
            ),
            Method::Sms | Method::Call => Proof::Code(self.code_digest(code)),
        };
        let stream_id = User::stream_id(user_id);
        let (codes, sealed, count) = self.new_backup_codes(&stream_id).await?;
        let cmd = UserCommand::EnableTwoFactor {
            enrollment_id,
            proof,
            backup_codes: sealed,
            backup_code_count: count,
        };
        let executed = self.run(user_id, &cmd, meta).await?;
        let enabled = executed
            .events
            .iter()
            .any(|e| e.event_type == "user.two_factor_enabled");
        let changed = executed
            .events
            .iter()
            .any(|e| e.event_type == "user.two_factor_method_changed");
        if !enabled && !changed {
            return Err(domain(TwoFactorError::InvalidCode));
        }
        self.notify(
            &executed.state,
            if enabled {
                "Two-factor authentication is now on for your Warden account. Keep your backup \
                 codes somewhere safe. If this was not you, contact your organization's owner."
            } else {
                "The second factor of your Warden account was changed to a new authenticator or \
                 phone number. If this was not you, contact your organization's owner."
            },
        )
        .await;
        Ok(Confirmed {
            method: executed.state.two_factor.method.unwrap_or(Method::Totp),
            backup_codes: enabled.then_some(codes),
            position: executed.position,
        })
    }

    /// Checks a presented factor against the user's secrets: the matched TOTP step, the
    /// backup-code index, or the digest of a sent code (compared by the domain with the
    /// code sent for where it is used).
    async fn prove(&self, user: &User, presented: &Presented) -> Result<Proof> {
        let two_factor = &user.two_factor;
        match presented {
            Presented::Code(code) if two_factor.method == Some(Method::Totp) => {
                let step = match self.totp_secret(two_factor.totp_secret.as_ref()).await? {
                    Some(secret) => otp::totp_match(&secret, code, self.pipeline.now()),
                    None => None,
                };
                Ok(Proof::Totp(step))
            }
            Presented::Code(code) => Ok(Proof::Code(self.code_digest(code))),
            Presented::EmailCode(code) => Ok(Proof::EmailCode(self.code_digest(code))),
            Presented::BackupCode(code) => {
                let Some(canonical) = otp::normalize_backup_code(code) else {
                    return Ok(Proof::BackupCode(None));
                };
                let hashes: Vec<String> =
                    match self.open_text(two_factor.backup_codes.as_ref()).await? {
                        Some(json) => serde_json::from_str(&json).unwrap_or_default(),
                        None => Vec::new(),
                    };
                for (index, phc) in hashes.iter().enumerate() {
                    let index = index as u32;
                    if two_factor.backup_codes_used.contains(&index) {
                        continue;
                    }
                    if self.secrets.verify_secret(phc, &canonical).await? {
                        return Ok(Proof::BackupCode(Some(index)));
                    }
                }
                Ok(Proof::BackupCode(None))
            }
        }
    }

    /// Replaces the backup codes; needs a current second factor.
    pub async fn regenerate_backup_codes(
        &self,
        user_id: Uuid,
        presented: &Presented,
        meta: &Meta,
    ) -> Result<BackupCodes> {
        let (user, version) = self.load_at(user_id).await?;
        if !user.two_factor.enabled {
            return Err(domain(TwoFactorError::NotEnabled));
        }
        // Decide before hashing: a wrong factor is recorded and costs no argon2 work. The
        // proof made here is used as it is unless the account moves meanwhile.
        let proof = self.prove(&user, presented).await?;
        let now = self.pipeline.now();
        let two_factor = &user.two_factor;
        let wrong = tf::check_step_up_allowed(two_factor, now).is_err()
            || !two_factor.accepts(&proof, two_factor.step_up.as_ref(), now);
        let first = Some((user, version, proof));
        if wrong {
            let (_, executed) = self
                .run_proved_from(user_id, Some(presented), first, meta, |proof| {
                    UserCommand::RecordStepUpFailure {
                        proof: proof.unwrap_or(Proof::Totp(None)),
                    }
                })
                .await?;
            refuse_failed_step_up(&executed)?;
            return Err(domain(TwoFactorError::InvalidCode));
        }
        let (codes, sealed, count) = self.new_backup_codes(&User::stream_id(user_id)).await?;
        let (_, executed) = self
            .run_proved_from(user_id, Some(presented), first, meta, |proof| {
                UserCommand::RegenerateBackupCodes {
                    proof: proof.unwrap_or(Proof::Totp(None)),
                    backup_codes: sealed.clone(),
                    backup_code_count: count,
                }
            })
            .await?;
        refuse_failed_step_up(&executed)?;
        Ok(BackupCodes {
            codes,
            position: executed.position,
        })
    }

    /// Answers a sign-in challenge. A usable factor opens a session; anything else is a
    /// recorded failure and an `InvalidCode` error.
    pub async fn answer_challenge(
        &self,
        user_id: Uuid,
        challenge_id: Uuid,
        presented: &Presented,
        meta: &Meta,
    ) -> Result<NewSession> {
        let user = self.load(user_id).await?;
        tf::usable_challenge(&user.two_factor, challenge_id, self.pipeline.now())
            .map_err(domain)?;
        if matches!(presented, Presented::EmailCode(_)) {
            return Err(domain(TwoFactorError::EmailCodeOnlyForPhoneChange));
        }
        let token = self.secrets.new_token("wdn_s_");
        let session = SessionSpec {
            session_id: Uuid::now_v7(),
            token_digest: self.secrets.token_digest(&token),
            lifetime: self.policy.lifetime,
            idle_timeout: self.policy.idle_timeout,
        };
        let (_, executed) = self
            .run_proved(user_id, Some(presented), meta, |proof| {
                match proof.unwrap_or(Proof::Totp(None)) {
                    Proof::Totp(totp_step) => UserCommand::VerifyTotp {
                        challenge_id,
                        totp_step,
                        session: session.clone(),
                    },
                    Proof::BackupCode(index) => UserCommand::ConsumeBackupCode {
                        challenge_id,
                        index,
                        session: session.clone(),
                    },
                    Proof::Code(code_digest) | Proof::EmailCode(code_digest) => {
                        UserCommand::VerifySentCode {
                            challenge_id,
                            code_digest,
                            session: session.clone(),
                        }
                    }
                }
            })
            .await?;
        let started = executed.events.iter().any(|e| {
            matches!(e.decode::<UserEvent>(), Ok(UserEvent::SessionStarted { session_id, .. }) if session_id == session.session_id)
        });
        if !started {
            return Err(domain(TwoFactorError::InvalidCode));
        }
        Ok(NewSession {
            token,
            session_id: session.session_id,
            user_id,
            expires_at: executed
                .state
                .sessions
                .get(&session.session_id)
                .copied()
                .unwrap_or_else(|| self.pipeline.now() + self.policy.lifetime),
            position: executed.position,
            two_factor_setup_required: false,
        })
    }

    /// Best effort: an email notice about a change already committed (logged if it fails).
    async fn notify(&self, user: &User, text: &str) {
        let email = match self.open_text(user.email.as_ref()).await {
            Ok(Some(email)) => email,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(user_id = ?user.id, error = %e, "notice not sent");
                return;
            }
        };
        let notice = OutboundMessage::new(Channel::Email, email, text, None, "notice");
        if let Err(e) = self.sender.send(&notice).await {
            tracing::warn!(user_id = ?user.id, error = %e, "notice not sent");
        }
    }

    /// Emails a code that can stand in for the current factor when the phone number of an
    /// SMS/voice factor changes (the old phone may be lost). Counts toward the daily limit.
    pub async fn send_email_step_up_code(&self, user_id: Uuid, meta: &Meta) -> Result<Option<i64>> {
        let user = self.load(user_id).await?;
        let email = self
            .open_text(user.email.as_ref())
            .await?
            .ok_or_else(|| domain(TwoFactorError::EmailCodeOnlyForPhoneChange))?;
        let code = otp::new_numeric_code(CODE_DIGITS);
        let cmd = UserCommand::SendEmailCode {
            code_digest: self.code_digest(&code),
        };
        let executed = self.run(user_id, &cmd, meta).await?;
        let text = format!(
            "Your Warden code to change the phone number of your second factor is {code}. It \
             expires in 5 minutes. If you did not ask for it, change your password now."
        );
        self.sender
            .send(&OutboundMessage::new(
                Channel::Email,
                email,
                text,
                Some(code),
                "two_factor_step_up",
            ))
            .await
            .map_err(|e| e.after_commit("the code"))?;
        Ok(executed.position)
    }

    /// Lost-device recovery, step one (owners only): a code to the account's email, bound
    /// to the waiting sign-in challenge. It counts toward the daily send limit.
    pub async fn send_recovery_code(
        &self,
        user_id: Uuid,
        challenge_id: Uuid,
        meta: &Meta,
    ) -> Result<Option<i64>> {
        let user = self.load(user_id).await?;
        let email = self
            .open_text(user.email.as_ref())
            .await?
            .ok_or_else(|| domain(TwoFactorError::RecoveryNotAllowed))?;
        let code = otp::new_numeric_code(CODE_DIGITS);
        let cmd = UserCommand::SendRecoveryCode {
            challenge_id,
            code_digest: self.code_digest(&code),
        };
        let executed = self.run(user_id, &cmd, meta).await?;
        let text = format!(
            "Someone, hopefully you, is recovering your Warden account after losing its second \
             factor. Your recovery code is {code}. It expires in 5 minutes. If this was not you, \
             change your password and your organization's security passphrase now."
        );
        self.sender
            .send(&OutboundMessage::new(
                Channel::Email,
                email,
                text,
                Some(code),
                "two_factor_recovery",
            ))
            .await
            .map_err(|e| e.after_commit("the code"))?;
        Ok(executed.position)
    }

    /// Lost-device recovery, step two: `passphrase_ok` is the outcome of checking the
    /// organization's security passphrase (rate limited by the organization); with the
    /// emailed code it resets the second factor and opens a session that may only enroll a
    /// new one. The owner is told by email.
    pub async fn recover(
        &self,
        user_id: Uuid,
        challenge_id: Uuid,
        passphrase_ok: bool,
        email_code: &str,
        meta: &Meta,
    ) -> Result<NewSession> {
        let token = self.secrets.new_token("wdn_s_");
        let session = SessionSpec {
            session_id: Uuid::now_v7(),
            token_digest: self.secrets.token_digest(&token),
            lifetime: self.policy.lifetime,
            idle_timeout: self.policy.idle_timeout,
        };
        let cmd = UserCommand::Recover {
            challenge_id,
            passphrase_ok,
            code_digest: self.code_digest(email_code),
            session: session.clone(),
        };
        let executed = self.run(user_id, &cmd, meta).await?;
        let Some(expires_at) = executed.state.sessions.get(&session.session_id).copied() else {
            return Err(domain(TwoFactorError::InvalidCode));
        };
        self.notify(
            &executed.state,
            "Two-factor authentication on your Warden account was reset by lost-device \
             recovery (security passphrase and email code). Set up a new second factor now. \
             If this was not you, contact support immediately.",
        )
        .await;
        Ok(NewSession {
            token,
            session_id: session.session_id,
            user_id,
            expires_at,
            position: executed.position,
            two_factor_setup_required: true,
        })
    }

    /// Whether the user's organization lets members turn 2FA off.
    pub async fn disable_allowed(&self, user_id: Uuid) -> Result<bool> {
        let user = self.load(user_id).await?;
        let Some(org_id) = user.organization_id else {
            return Ok(false);
        };
        Ok(self
            .pipeline
            .load::<Organization, UserError>(&Organization::stream_id(org_id))
            .await?
            .state
            .two_factor_policy
            .disable_allowed())
    }

    /// Turns 2FA off, where the organization's policy allows it, with a current factor.
    pub async fn disable(
        &self,
        user_id: Uuid,
        presented: &Presented,
        meta: &Meta,
    ) -> Result<Option<i64>> {
        let allowed = self.disable_allowed(user_id).await?;
        if !allowed {
            return Err(domain(TwoFactorError::CannotBeDisabled));
        }
        let (_, executed) = self
            .run_proved(user_id, Some(presented), meta, |proof| {
                UserCommand::DisableTwoFactor {
                    allowed,
                    proof: proof.unwrap_or(Proof::Totp(None)),
                }
            })
            .await?;
        refuse_failed_step_up(&executed)?;
        Ok(executed.position)
    }
}

/// Digits separated for a voice to read one by one.
fn spaced(code: &str) -> String {
    code.chars().map(String::from).collect::<Vec<_>>().join(" ")
}

/// A change refused for a wrong current factor was recorded (it counts toward the limits);
/// the caller gets `InvalidCode`.
fn refuse_failed_step_up(executed: &crate::Executed<User>) -> Result<()> {
    if executed
        .events
        .iter()
        .any(|e| e.event_type == "user.two_factor_step_up_failed")
    {
        return Err(domain(TwoFactorError::InvalidCode));
    }
    Ok(())
}
