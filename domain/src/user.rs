//! The user aggregate: credentials, sessions and profile of one person in one organization.
//! Stream `user-<uuid>`.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::aggregate::{Aggregate, Ctx};
use crate::event::DomainEvent;
use crate::sealed::{Digest, Sealed};

/// Failed password sign-ins allowed per rolling window before 429.
pub const SIGN_IN_FAILURES_ALLOWED: usize = 5;
/// The rolling window for [`SIGN_IN_FAILURES_ALLOWED`].
pub const SIGN_IN_FAILURE_WINDOW_SECS: i64 = 60;

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
}

impl Aggregate for User {
    const STREAM_TYPE: &'static str = "user";
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
    /// Start a session after the password was checked (`password_ok`).
    SignIn {
        password_ok: bool,
        session_id: Uuid,
        token_digest: Digest,
        session_lifetime: Duration,
        idle_timeout: Duration,
    },
    SignOut {
        session_id: Uuid,
    },
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
            session_id,
            token_digest,
            session_lifetime,
            idle_timeout,
        } => {
            check_sign_in_allowed(user, ctx.now)?;
            if !password_ok {
                return Ok(vec![UserEvent::SignInFailed {
                    reason: "wrong_password".into(),
                }]);
            }
            Ok(vec![UserEvent::SessionStarted {
                session_id,
                token_digest,
                expires_at: ctx.now + session_lifetime,
                idle_timeout_secs: idle_timeout.num_seconds(),
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
    }
}

#[cfg(test)]
#[path = "user_tests.rs"]
mod tests;
