//! Two-factor authentication commands: TOTP enrollment and confirmation (EnableTwoFactor),
//! backup-code regeneration, and answering a sign-in challenge with a TOTP code or a backup
//! code (ConsumeBackupCode). The shell opens sealed secrets and checks codes; the domain
//! decides whether a matched step or code may still be used, so one-time holds under races.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;
use warden_domain::two_factor::{self as tf, Proof, TwoFactorError};
use warden_domain::user::{
    self, NewSession as SessionSpec, User, UserCommand, UserError, UserEvent,
};
use warden_domain::{Aggregate, Sealed};

use crate::accounts::{NewSession, SessionPolicy};
use crate::error::CommandError;
use crate::otp::{self, TotpSecret};
use crate::pipeline::{Meta, Pipeline};
use crate::ports::{Secrets, SecretsError};

pub type Result<T> = std::result::Result<T, CommandError<UserError>>;

/// A second factor as typed by the user.
#[derive(Clone)]
pub enum Presented {
    Code(String),
    BackupCode(String),
}

impl std::fmt::Debug for Presented {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Presented::Code(_) => "Code(<redacted>)",
            Presented::BackupCode(_) => "BackupCode(<redacted>)",
        })
    }
}

/// What a new TOTP enrollment shows the user once.
pub struct TotpEnrollment {
    pub enrollment_id: Uuid,
    pub expires_at: DateTime<Utc>,
    pub secret_base32: String,
    pub otpauth_uri: String,
    pub qr_png: Vec<u8>,
    pub qr_svg: String,
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
    policy: SessionPolicy,
}

fn domain(e: TwoFactorError) -> CommandError<UserError> {
    CommandError::Domain(UserError::TwoFactor(e))
}

fn secrets_err(e: SecretsError) -> CommandError<UserError> {
    CommandError::Secrets(e)
}

impl TwoFactorCommands {
    pub fn new(pipeline: Pipeline, secrets: Arc<dyn Secrets>, policy: SessionPolicy) -> Self {
        Self {
            pipeline,
            secrets,
            policy,
        }
    }

    async fn load(&self, user_id: Uuid) -> Result<User> {
        let loaded = self
            .pipeline
            .load::<User, UserError>(&User::stream_id(user_id))
            .await?;
        if loaded.state.id.is_none() {
            return Err(CommandError::Domain(UserError::NotFound));
        }
        Ok(loaded.state)
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

    /// Starts TOTP enrollment: a fresh 160-bit secret, sealed in the event, shown once.
    pub async fn start_totp(&self, user_id: Uuid, meta: &Meta) -> Result<TotpEnrollment> {
        let user = self.load(user_id).await?;
        if user.two_factor.enabled {
            return Err(domain(TwoFactorError::AlreadyEnabled));
        }
        let account = self
            .open_text(user.email.as_ref())
            .await?
            .unwrap_or_default();
        let secret = otp::new_totp_secret();
        let stream_id = User::stream_id(user_id);
        let sealed = self.secrets.seal(&stream_id, secret.as_bytes()).await?;
        let enrollment_id = Uuid::now_v7();
        let executed = self
            .pipeline
            .execute::<User, UserError, _>(&stream_id, meta, |state, ctx| {
                user::decide(
                    state,
                    UserCommand::StartTotpEnrollment {
                        enrollment_id,
                        totp_secret: sealed.clone(),
                    },
                    ctx,
                )
            })
            .await?;
        let uri = otp::otpauth_uri(&secret, &account);
        let render = |e: otp::OtpError| secrets_err(SecretsError::Hashing(e.to_string()));
        Ok(TotpEnrollment {
            enrollment_id,
            expires_at: executed
                .state
                .two_factor
                .enrollment
                .as_ref()
                .map(|e| e.expires_at)
                .unwrap_or_else(|| tf::enrollment_expiry(self.pipeline.now())),
            secret_base32: secret.base32(),
            qr_png: otp::qr_png(&uri).map_err(render)?,
            qr_svg: otp::qr_svg(&uri).map_err(render)?,
            otpauth_uri: uri,
            position: executed.position,
        })
    }

    /// Fresh backup codes: shown once, stored as argon2id hashes (sealed), one salt each.
    async fn new_backup_codes(&self, subject: &str) -> Result<(Vec<String>, Sealed, u32)> {
        let codes = otp::new_backup_codes();
        let mut hashes = Vec::with_capacity(codes.len());
        for code in &codes {
            let canonical = otp::normalize_backup_code(code).unwrap_or_default();
            hashes.push(self.secrets.hash_secret(&canonical).await?);
        }
        let json = serde_json::to_vec(&hashes)
            .map_err(|e| secrets_err(SecretsError::Hashing(e.to_string())))?;
        let sealed = self.secrets.seal(subject, &json).await?;
        Ok((codes, sealed, hashes.len() as u32))
    }

    /// Confirms an enrollment with a current code: 2FA turns on and the first backup codes
    /// are returned. A wrong code is recorded (five end the enrollment) and refused.
    pub async fn confirm(
        &self,
        user_id: Uuid,
        enrollment_id: Uuid,
        code: &str,
        meta: &Meta,
    ) -> Result<BackupCodes> {
        let user = self.load(user_id).await?;
        let now = self.pipeline.now();
        let enrollment =
            tf::usable_enrollment(&user.two_factor, enrollment_id, now).map_err(domain)?;
        let step = match self.totp_secret(enrollment.totp_secret.as_ref()).await? {
            Some(secret) => otp::totp_match(&secret, code, now),
            None => None,
        };
        let stream_id = User::stream_id(user_id);
        let (codes, sealed, count) = self.new_backup_codes(&stream_id).await?;
        let executed = self
            .pipeline
            .execute::<User, UserError, _>(&stream_id, meta, |state, ctx| {
                user::decide(
                    state,
                    UserCommand::EnableTwoFactor {
                        enrollment_id,
                        totp_step: step,
                        backup_codes: sealed.clone(),
                        backup_code_count: count,
                    },
                    ctx,
                )
            })
            .await?;
        if !executed.state.two_factor.enabled {
            return Err(domain(TwoFactorError::InvalidCode));
        }
        Ok(BackupCodes {
            codes,
            position: executed.position,
        })
    }

    /// Checks a presented factor against the user's secrets: the matched TOTP step or
    /// backup-code index, if any. Used codes are skipped (the domain refuses them anyway).
    async fn prove(&self, user: &User, presented: &Presented) -> Result<Proof> {
        let two_factor = &user.two_factor;
        match presented {
            Presented::Code(code) => {
                let step = match self.totp_secret(two_factor.totp_secret.as_ref()).await? {
                    Some(secret) => otp::totp_match(&secret, code, self.pipeline.now()),
                    None => None,
                };
                Ok(Proof::Totp(step))
            }
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
        let user = self.load(user_id).await?;
        if !user.two_factor.enabled {
            return Err(domain(TwoFactorError::NotEnabled));
        }
        let proof = self.prove(&user, presented).await?;
        let stream_id = User::stream_id(user_id);
        let (codes, sealed, count) = self.new_backup_codes(&stream_id).await?;
        let executed = self
            .pipeline
            .execute::<User, UserError, _>(&stream_id, meta, |state, ctx| {
                user::decide(
                    state,
                    UserCommand::RegenerateBackupCodes {
                        proof,
                        backup_codes: sealed.clone(),
                        backup_code_count: count,
                    },
                    ctx,
                )
            })
            .await?;
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
        let proof = self.prove(&user, presented).await?;
        let token = self.secrets.new_token("wdn_s_");
        let spec = SessionSpec {
            session_id: Uuid::now_v7(),
            token_digest: self.secrets.token_digest(&token),
            lifetime: self.policy.lifetime,
            idle_timeout: self.policy.idle_timeout,
        };
        let executed = self
            .pipeline
            .execute::<User, UserError, _>(&User::stream_id(user_id), meta, |state, ctx| {
                let cmd = match proof {
                    Proof::Totp(totp_step) => UserCommand::VerifyTotp {
                        challenge_id,
                        totp_step,
                        session: spec.clone(),
                    },
                    Proof::BackupCode(index) => UserCommand::ConsumeBackupCode {
                        challenge_id,
                        index,
                        session: spec.clone(),
                    },
                };
                user::decide(state, cmd, ctx)
            })
            .await?;
        let started = executed.events.iter().any(|e| {
            e.event_type == "user.session_started"
                && matches!(e.decode::<UserEvent>(), Ok(UserEvent::SessionStarted { session_id, .. }) if session_id == spec.session_id)
        });
        if !started {
            return Err(domain(TwoFactorError::InvalidCode));
        }
        Ok(NewSession {
            token,
            session_id: spec.session_id,
            user_id,
            expires_at: executed
                .state
                .sessions
                .get(&spec.session_id)
                .copied()
                .unwrap_or_else(|| self.pipeline.now() + self.policy.lifetime),
            position: executed.position,
        })
    }
}
