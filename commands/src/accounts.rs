//! The first slice: sign-up (organization + owner), password sign-in and sessions, the
//! profile, changing email and password, and the organization's settings and secrets.
//! Each function parses nothing (inputs are value objects), does the I/O and hashing the
//! domain must not, and runs the pure decision through the pipeline.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;
use warden_domain::organization::{
    self, OrgSecret, Organization, OrganizationCommand, OrganizationError,
};
use warden_domain::user::{self, Role, User, UserCommand, UserError};
use warden_domain::values::{CurrencyCode, EmailAddress, Password, Text};
use warden_domain::{Aggregate, Sealed};

use crate::error::CommandError;
use crate::pipeline::{Meta, Pipeline, Plan};
use crate::ports::Secrets;

/// The service name, a context word no password may be built from.
pub const SERVICE_NAME: &str = "warden";

/// Session lifetimes (API.md: 24 h overall, 1 h idle; configurable).
#[derive(Debug, Clone, Copy)]
pub struct SessionPolicy {
    pub lifetime: Duration,
    pub idle_timeout: Duration,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        Self {
            lifetime: Duration::hours(24),
            idle_timeout: Duration::hours(1),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountsError {
    #[error("an account with this email address already exists")]
    EmailTaken,
    #[error("the email address or password is wrong")]
    InvalidCredentials,
    #[error("too many failed sign-in attempts")]
    TooManyLoginAttempts { retry_after_secs: i64 },
    #[error(transparent)]
    User(#[from] UserError),
    #[error(transparent)]
    Organization(#[from] OrganizationError),
}

pub type Result<T> = std::result::Result<T, CommandError<AccountsError>>;

/// The email uniqueness claim key: a keyed digest, never the address.
pub fn email_claim(secrets: &dyn Secrets, email: &EmailAddress) -> String {
    format!(
        "email:{}",
        secrets.keyed_digest("email", &email.normalized()).0
    )
}

pub struct SignUp {
    pub email: EmailAddress,
    pub password: Password,
    pub first_name: Text,
    pub last_name: Text,
    pub company_name: Option<Text>,
    pub billing_currency: CurrencyCode,
}

#[derive(Debug, Clone)]
pub struct SignedUp {
    pub organization_id: Uuid,
    pub user_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub position: Option<i64>,
}

/// What a correct password leads to: a session, or (2FA on) a challenge to answer.
#[derive(Debug, Clone)]
pub enum SignInOutcome {
    Session(NewSession),
    Challenge {
        challenge_id: Uuid,
        user_id: Uuid,
        expires_at: DateTime<Utc>,
        /// The enrolled second-factor method (backup codes always work too).
        method: Option<warden_domain::two_factor::Method>,
        position: Option<i64>,
    },
}

/// A freshly issued session. `token` is shown to the caller once and stored nowhere.
#[derive(Clone)]
pub struct NewSession {
    pub token: String,
    pub session_id: Uuid,
    pub user_id: Uuid,
    pub expires_at: DateTime<Utc>,
    pub position: Option<i64>,
    /// The organization wants this user to set up 2FA (see the session's scope).
    pub two_factor_setup_required: bool,
}

impl std::fmt::Debug for NewSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewSession")
            .field("session_id", &self.session_id)
            .field("user_id", &self.user_id)
            .finish_non_exhaustive()
    }
}

/// Profile fields to change; `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct ProfileChanges {
    pub first_name: Option<Text>,
    pub last_name: Option<Text>,
    pub phone_number: Option<warden_domain::values::PhoneNumber>,
}

/// Organization fields to change; address and contact are JSON objects (validated by the
/// API layer) sealed as personal data.
#[derive(Debug, Default)]
pub struct OrganizationChanges {
    pub company_name: Option<Text>,
    pub address: Option<serde_json::Value>,
    pub contact: Option<serde_json::Value>,
    pub billing_currency: Option<CurrencyCode>,
}

pub struct Accounts {
    pipeline: Pipeline,
    secrets: Arc<dyn Secrets>,
    policy: SessionPolicy,
    /// Failed sign-ins for addresses with no account, so they throttle exactly like real
    /// ones (no enumeration through 429s). Per node; real accounts' limits are in events.
    unknown_failures: Mutex<HashMap<String, Vec<DateTime<Utc>>>>,
}

impl Accounts {
    pub fn new(pipeline: Pipeline, secrets: Arc<dyn Secrets>, policy: SessionPolicy) -> Self {
        Self {
            pipeline,
            secrets,
            policy,
            unknown_failures: Mutex::new(HashMap::new()),
        }
    }

    pub fn policy(&self) -> SessionPolicy {
        self.policy
    }

    async fn seal_text(&self, subject: &str, text: &str) -> Result<Sealed> {
        Ok(self.secrets.seal(subject, text.as_bytes()).await?)
    }

    async fn hash_sealed(&self, subject: &str, secret: &str) -> Result<Sealed> {
        let phc = self.secrets.hash_secret(secret).await?;
        self.seal_text(subject, &phc).await
    }

    /// Verifies a candidate against a sealed argon2 hash. A destroyed key never verifies.
    async fn verify_sealed(&self, sealed: Option<&Sealed>, candidate: &str) -> Result<bool> {
        let Some(sealed) = sealed else {
            self.secrets.burn_verify(candidate).await;
            return Ok(false);
        };
        match self.secrets.open(sealed).await? {
            Some(phc) => Ok(self
                .secrets
                .verify_secret(&String::from_utf8_lossy(&phc), candidate)
                .await?),
            None => {
                self.secrets.burn_verify(candidate).await;
                Ok(false)
            }
        }
    }

    /// Creates an organization and its owner in one transaction, claiming the email.
    pub async fn sign_up(&self, cmd: SignUp, meta: &Meta) -> Result<SignedUp> {
        let organization_id = Uuid::now_v7();
        let user_id = Uuid::now_v7();
        let user_stream = User::stream_id(user_id);
        let org_stream = Organization::stream_id(organization_id);
        // A taken address is refused before any key or hash is made for the new user.
        let claim = email_claim(self.secrets.as_ref(), &cmd.email);
        if self.pipeline.store().claim_owner(&claim).await?.is_some() {
            return Err(CommandError::Domain(AccountsError::EmailTaken));
        }
        let password_hash = self
            .hash_sealed(&user_stream, cmd.password.expose())
            .await?;
        let ctx = self.pipeline.ctx();
        let user_events = user::decide(
            &User::default(),
            UserCommand::Register {
                user_id,
                organization_id,
                role: Role::OrganizationOwner,
                email: self.seal_text(&user_stream, cmd.email.as_str()).await?,
                first_name: self
                    .seal_text(&user_stream, cmd.first_name.as_str())
                    .await?,
                last_name: self.seal_text(&user_stream, cmd.last_name.as_str()).await?,
                password_hash,
            },
            &ctx,
        )
        .map_err(|e| CommandError::Domain(e.into()))?;
        let org_events = organization::decide(
            &Organization::default(),
            OrganizationCommand::Create {
                organization_id,
                owner_user_id: user_id,
                company_name: cmd.company_name.map(|t| t.as_str().to_owned()),
                billing_currency: cmd.billing_currency.as_str().to_owned(),
            },
            &ctx,
        )
        .map_err(|e| CommandError::Domain(e.into()))?;
        let mut plan = Plan::new();
        plan.push::<Organization>(&org_stream, 0, &org_events)?
            .push::<User>(&user_stream, 0, &user_events)?
            .claim(email_claim(self.secrets.as_ref(), &cmd.email), &user_stream);
        let (_, position) =
            self.pipeline
                .commit(plan, meta, ctx.now)
                .await
                .map_err(|e| match e {
                    CommandError::ClaimTaken(_) => CommandError::Domain(AccountsError::EmailTaken),
                    other => other,
                })?;
        Ok(SignedUp {
            organization_id,
            user_id,
            created_at: ctx.now,
            position,
        })
    }

    /// Password sign-in. Unknown address and wrong password look the same, take the same
    /// time, and throttle the same way.
    pub async fn sign_in(&self, email: &str, password: &str, meta: &Meta) -> Result<SignInOutcome> {
        let now = self.pipeline.now();
        let password = Password::for_verification(password);
        let owner = match EmailAddress::parse("/email", email) {
            Ok(email) => {
                let claim = email_claim(self.secrets.as_ref(), &email);
                self.pipeline.store().claim_owner(&claim).await?
            }
            Err(_) => None,
        };
        let Some(stream_id) = owner else {
            return Err(self.fail_unknown(email, password.expose(), now).await);
        };
        let loaded = self
            .pipeline
            .load::<User, AccountsError>(&stream_id)
            .await?;
        let setup = self.setup_required(&loaded.state, now).await?;
        user::check_sign_in_allowed(&loaded.state, now)
            .map_err(|e| CommandError::Domain(throttled(e)))?;
        let password_ok = self
            .verify_sealed(loaded.state.password_hash.as_ref(), password.expose())
            .await?;
        // The password was checked against this hash; if it changed meanwhile, it proves
        // nothing (the decision below runs on fresh state).
        let checked_hash = loaded.state.password_hash.clone();
        let token = self.secrets.new_token("wdn_s_");
        let token_digest = self.secrets.token_digest(&token);
        let session_id = Uuid::now_v7();
        let challenge_id = Uuid::now_v7();
        let policy = self.policy;
        let executed = self
            .pipeline
            .execute::<User, UserError, _>(&stream_id, meta, |state, ctx| {
                user::decide(
                    state,
                    UserCommand::SignIn {
                        password_ok: password_ok && state.password_hash == checked_hash,
                        challenge_id,
                        session_id,
                        token_digest: token_digest.clone(),
                        session_lifetime: policy.lifetime,
                        idle_timeout: policy.idle_timeout,
                        setup_only: setup == Some(true),
                    },
                    ctx,
                )
            })
            .await
            .map_err(|e| e.map_domain(throttled))?;
        let opened = executed.state.sessions.contains_key(&session_id)
            || executed
                .state
                .two_factor
                .challenges
                .contains_key(&challenge_id);
        if !password_ok || !opened {
            return Err(CommandError::Domain(AccountsError::InvalidCredentials));
        }
        if let Some(challenge) = executed.state.two_factor.challenges.get(&challenge_id) {
            return Ok(SignInOutcome::Challenge {
                challenge_id,
                user_id: executed.state.id.unwrap_or_default(),
                expires_at: challenge.expires_at,
                method: executed.state.two_factor.method,
                position: executed.position,
            });
        }
        Ok(SignInOutcome::Session(NewSession {
            token,
            session_id,
            user_id: executed.state.id.unwrap_or_default(),
            expires_at: executed
                .state
                .sessions
                .get(&session_id)
                .copied()
                .unwrap_or(now + policy.lifetime),
            position: executed.position,
            // Required by the organization, or the user's factor was reset.
            two_factor_setup_required: setup.is_some() || executed.state.must_enroll,
        }))
    }

    /// Whether the organization wants this user to set up 2FA: `Some(true)` when it can no
    /// longer be skipped. `None` when not required or already on.
    async fn setup_required(&self, user: &User, now: DateTime<Utc>) -> Result<Option<bool>> {
        if user.two_factor.enabled {
            return Ok(None);
        }
        let Some(org_id) = user.organization_id else {
            return Ok(None);
        };
        let org = self
            .pipeline
            .load::<Organization, AccountsError>(&Organization::stream_id(org_id))
            .await?;
        Ok(org.state.two_factor_policy.setup_required(now))
    }

    /// Sets the organization's two-factor policy.
    pub async fn set_two_factor_policy(
        &self,
        organization_id: Uuid,
        policy: organization::TwoFactorPolicy,
        meta: &Meta,
    ) -> Result<Option<i64>> {
        self.on_org(
            organization_id,
            meta,
            OrganizationCommand::SetTwoFactorPolicy(policy),
        )
        .await
        .map(|(p, _)| p)
    }

    async fn fail_unknown(
        &self,
        email: &str,
        password: &str,
        now: DateTime<Utc>,
    ) -> CommandError<AccountsError> {
        let key = self
            .secrets
            .keyed_digest("email", &email.trim().to_lowercase())
            .0;
        let window = Duration::seconds(user::SIGN_IN_FAILURE_WINDOW_SECS);
        let throttled_for = {
            let mut map = self
                .unknown_failures
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            map.retain(|_, times| times.iter().any(|t| now - *t < window));
            let times = map.entry(key).or_default();
            times.retain(|t| now - *t < window);
            if times.len() >= user::SIGN_IN_FAILURES_ALLOWED {
                times
                    .first()
                    .map(|oldest| (window - (now - *oldest)).num_seconds().max(1))
            } else {
                times.push(now);
                None
            }
        };
        if let Some(retry_after_secs) = throttled_for {
            return CommandError::Domain(AccountsError::TooManyLoginAttempts { retry_after_secs });
        }
        self.secrets.burn_verify(password).await;
        CommandError::Domain(AccountsError::InvalidCredentials)
    }

    pub async fn sign_out(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        meta: &Meta,
    ) -> Result<Option<i64>> {
        self.on_user(user_id, meta, UserCommand::SignOut { session_id })
            .await
    }

    pub async fn update_profile(
        &self,
        user_id: Uuid,
        changes: ProfileChanges,
        meta: &Meta,
    ) -> Result<Option<i64>> {
        let subject = User::stream_id(user_id);
        let cmd = UserCommand::UpdateProfile {
            first_name: self
                .seal_opt(&subject, changes.first_name.as_ref().map(Text::as_str))
                .await?,
            last_name: self
                .seal_opt(&subject, changes.last_name.as_ref().map(Text::as_str))
                .await?,
            phone_number: self
                .seal_opt(&subject, changes.phone_number.as_ref().map(|p| p.as_str()))
                .await?,
        };
        self.on_user(user_id, meta, cmd).await
    }

    async fn seal_opt(&self, subject: &str, text: Option<&str>) -> Result<Option<Sealed>> {
        match text {
            Some(t) => Ok(Some(self.seal_text(subject, t).await?)),
            None => Ok(None),
        }
    }

    async fn on_user(&self, user_id: Uuid, meta: &Meta, cmd: UserCommand) -> Result<Option<i64>> {
        let executed = self
            .pipeline
            .execute::<User, UserError, _>(&User::stream_id(user_id), meta, |state, ctx| {
                user::decide(state, cmd.clone(), ctx)
            })
            .await
            .map_err(|e| e.map_domain(AccountsError::User))?;
        Ok(executed.position)
    }

    /// Checks the current password of a signed-in user before a sensitive change. It is
    /// throttled like sign-in, and a wrong one is recorded (so it counts), so a stolen
    /// session cannot guess the password.
    pub async fn check_password(
        &self,
        user_id: Uuid,
        candidate: &str,
        meta: &Meta,
    ) -> Result<bool> {
        let loaded = self
            .pipeline
            .load::<User, AccountsError>(&User::stream_id(user_id))
            .await?;
        if loaded.state.id.is_none() {
            return Err(CommandError::Domain(AccountsError::User(
                UserError::NotFound,
            )));
        }
        user::check_sign_in_allowed(&loaded.state, self.pipeline.now())
            .map_err(|e| CommandError::Domain(throttled(e)))?;
        let candidate = Password::for_verification(candidate);
        let ok = self
            .verify_sealed(loaded.state.password_hash.as_ref(), candidate.expose())
            .await?;
        if !ok {
            self.on_user(user_id, meta, UserCommand::RecordPasswordFailure)
                .await
                .map_err(|e| match e {
                    CommandError::Domain(AccountsError::User(e)) => {
                        CommandError::Domain(throttled(e))
                    }
                    other => other,
                })?;
        }
        Ok(ok)
    }

    /// Moves the account to a new address: the new one is claimed and the old released in
    /// the same transaction as the event.
    pub async fn change_email(
        &self,
        user_id: Uuid,
        new_email: EmailAddress,
        current_password: &str,
        meta: &Meta,
    ) -> Result<Option<i64>> {
        let ok = self.check_password(user_id, current_password, meta).await?;
        let stream_id = User::stream_id(user_id);
        let sealed = self.seal_text(&stream_id, new_email.as_str()).await?;
        let new_claim = email_claim(self.secrets.as_ref(), &new_email);
        let old_claim = self
            .current_email(user_id)
            .await?
            .map(|old| email_claim(self.secrets.as_ref(), &old));
        let result = self
            .pipeline
            .execute_with::<User, AccountsError, _, ()>(
                &stream_id,
                meta,
                |state, ctx, mut plan, _| {
                    let events = user::decide(
                        state,
                        UserCommand::ChangeEmail {
                            current_password_ok: ok,
                            email: sealed.clone(),
                        },
                        ctx,
                    )
                    .map_err(|e| CommandError::Domain(e.into()))?;
                    if let Some(old) = &old_claim {
                        if *old != new_claim {
                            plan.release(old.clone());
                        }
                    }
                    plan.claim(new_claim.clone(), &stream_id);
                    Ok((events, plan, ()))
                },
            )
            .await;
        match result {
            Ok((executed, ())) => Ok(executed.position),
            Err(CommandError::ClaimTaken(_)) => {
                Err(CommandError::Domain(AccountsError::EmailTaken))
            }
            Err(e) => Err(e),
        }
    }

    async fn current_email(&self, user_id: Uuid) -> Result<Option<EmailAddress>> {
        let loaded = self
            .pipeline
            .load::<User, AccountsError>(&User::stream_id(user_id))
            .await?;
        let Some(sealed) = &loaded.state.email else {
            return Ok(None);
        };
        let Some(bytes) = self.secrets.open(sealed).await? else {
            return Ok(None);
        };
        Ok(EmailAddress::parse("/email", &String::from_utf8_lossy(&bytes)).ok())
    }

    /// Sets a new password; every other session of the user ends.
    pub async fn change_password(
        &self,
        user_id: Uuid,
        keep_session: Option<Uuid>,
        current_password: &str,
        new_password: Password,
        meta: &Meta,
    ) -> Result<Option<i64>> {
        let ok = self.check_password(user_id, current_password, meta).await?;
        if !ok {
            return Err(CommandError::Domain(AccountsError::User(
                UserError::WrongPassword,
            )));
        }
        let hash = self
            .hash_sealed(&User::stream_id(user_id), new_password.expose())
            .await?;
        self.on_user(
            user_id,
            meta,
            UserCommand::ChangePassword {
                current_password_ok: ok,
                password_hash: hash,
                keep_session,
            },
        )
        .await
    }

    pub async fn update_organization(
        &self,
        organization_id: Uuid,
        changes: OrganizationChanges,
        meta: &Meta,
    ) -> Result<Option<i64>> {
        let subject = Organization::stream_id(organization_id);
        let address = match &changes.address {
            Some(v) => Some(self.seal_text(&subject, &v.to_string()).await?),
            None => None,
        };
        let contact = match &changes.contact {
            Some(v) => Some(self.seal_text(&subject, &v.to_string()).await?),
            None => None,
        };
        let cmd = OrganizationCommand::Update {
            company_name: changes.company_name.map(|t| t.as_str().to_owned()),
            address,
            contact,
            billing_currency: changes.billing_currency.map(|c| c.as_str().to_owned()),
        };
        self.on_org(organization_id, meta, cmd)
            .await
            .map(|(p, _)| p)
    }

    async fn on_org(
        &self,
        organization_id: Uuid,
        meta: &Meta,
        cmd: OrganizationCommand,
    ) -> Result<(Option<i64>, Organization)> {
        let executed = self
            .pipeline
            .execute::<Organization, OrganizationError, _>(
                &Organization::stream_id(organization_id),
                meta,
                |state, ctx| organization::decide(state, cmd.clone(), ctx),
            )
            .await
            .map_err(|e| e.map_domain(AccountsError::Organization))?;
        Ok((executed.position, executed.state))
    }

    /// Sets the security passphrase or port-out PIN, after checking the caller's password.
    pub async fn set_org_secret(
        &self,
        organization_id: Uuid,
        user_id: Uuid,
        secret: OrgSecret,
        value: &str,
        current_password: &str,
        meta: &Meta,
    ) -> Result<Option<i64>> {
        let ok = self.check_password(user_id, current_password, meta).await?;
        if !ok {
            return Err(CommandError::Domain(AccountsError::Organization(
                OrganizationError::WrongPassword,
            )));
        }
        let hash = self
            .hash_sealed(&Organization::stream_id(organization_id), value)
            .await?;
        self.on_org(
            organization_id,
            meta,
            OrganizationCommand::SetSecret {
                secret,
                current_password_ok: ok,
                hash,
            },
        )
        .await
        .map(|(p, _)| p)
    }

    /// Checks a passphrase or PIN; every check is recorded, failures are rate limited.
    pub async fn check_org_secret(
        &self,
        organization_id: Uuid,
        secret: OrgSecret,
        candidate: &str,
        meta: &Meta,
    ) -> Result<(bool, Option<i64>)> {
        let stream_id = Organization::stream_id(organization_id);
        let loaded = self
            .pipeline
            .load::<Organization, AccountsError>(&stream_id)
            .await?;
        organization::check_secret_check_allowed(&loaded.state, secret, self.pipeline.now())
            .map_err(|e| CommandError::Domain(e.into()))?;
        let valid = self
            .verify_sealed(loaded.state.hash_of(secret), candidate)
            .await?;
        let (position, _) = self
            .on_org(
                organization_id,
                meta,
                OrganizationCommand::CheckSecret { secret, valid },
            )
            .await?;
        Ok((valid, position))
    }
}

fn throttled(e: UserError) -> AccountsError {
    match e {
        UserError::TooManySignInAttempts { retry_after_secs } => {
            AccountsError::TooManyLoginAttempts { retry_after_secs }
        }
        // A disabled or removed user signs in no more than a stranger does, and learns no more.
        UserError::Inactive => AccountsError::InvalidCredentials,
        other => AccountsError::User(other),
    }
}
