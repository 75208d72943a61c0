//! The organization's people: permission groups, invitations (InviteSubuser, resend,
//! revoke, accept), members (groups, disable, enable, remove, 2FA reset and unblock) and
//! API keys. The caller's rights are recomputed from the organization's own state inside
//! each decision, so a concurrent change of groups cannot be raced into an escalation.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;
use warden_domain::members::{self, Actor, SubuserInvited, TeamCommand, TeamError};
use warden_domain::organization::{self, Organization, OrganizationCommand, OrganizationError};
use warden_domain::permissions::PermissionSet;
use warden_domain::user::{self, Role, TwoFactorResetReason, User, UserCommand, UserError};
use warden_domain::values::{EmailAddress, Password, Text};
use warden_domain::{Aggregate, Ctx, Digest, Sealed};

use crate::accounts::{email_claim, NewSession, SessionPolicy};
use crate::error::CommandError;
use crate::pipeline::{Meta, Pipeline, Plan};
use crate::ports::Secrets;
use crate::sender::{Channel, OutboundMessage, Sender};
use crate::store::fold_stream;

/// The prefix of every API key (so secret scanners can recognize a leaked one).
pub const API_KEY_PREFIX: &str = "wdn_k_";
/// The prefix of invitation tokens.
pub const INVITATION_TOKEN_PREFIX: &str = "wdn_i_";
/// Characters of an API key kept for display (`wdn_k_` plus the first random ones).
const DISPLAY_PREFIX_CHARS: usize = 12;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembersError {
    #[error("you are not a member of this organization")]
    NotAMember,
    #[error("an account with this email address already exists")]
    EmailTaken,
    #[error(transparent)]
    Organization(#[from] OrganizationError),
    #[error(transparent)]
    User(#[from] UserError),
}

impl From<TeamError> for MembersError {
    fn from(e: TeamError) -> Self {
        MembersError::Organization(OrganizationError::Team(e))
    }
}

pub type Result<T> = std::result::Result<T, CommandError<MembersError>>;

/// Who asks (already authenticated and allowed by the API's permission table).
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub user_id: Uuid,
    pub organization_id: Uuid,
}

/// An invitation as created or resent. The token went to the invitee by email only.
#[derive(Debug, Clone)]
pub struct InvitationIssued {
    pub invitation_id: Uuid,
    pub expires_at: DateTime<Utc>,
    pub position: Option<i64>,
}

/// A new sub-user, signed in.
#[derive(Debug, Clone)]
pub struct Joined {
    pub user_id: Uuid,
    pub organization_id: Uuid,
    pub session: NewSession,
}

/// A freshly made API key secret: shown once, stored nowhere.
#[derive(Clone)]
pub struct NewApiKey {
    pub key_id: Uuid,
    pub secret: String,
    pub prefix: String,
    pub position: Option<i64>,
}

impl std::fmt::Debug for NewApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewApiKey")
            .field("key_id", &self.key_id)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

pub struct Members {
    pipeline: Pipeline,
    secrets: Arc<dyn Secrets>,
    sender: Arc<dyn Sender>,
    policy: SessionPolicy,
}

impl Members {
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

    /// Runs a team command as `caller`, whose rights come from the state it is decided on.
    async fn team(
        &self,
        caller: Caller,
        meta: &Meta,
        plan_extra: impl Fn(&Organization, &mut Plan) + Send + Sync,
        command: impl Fn(Actor) -> TeamCommand + Send + Sync,
    ) -> Result<(Option<i64>, Organization)> {
        let (executed, ()) = self
            .pipeline
            .execute_with::<Organization, MembersError, _, ()>(
                &Organization::stream_id(caller.organization_id),
                meta,
                |org, ctx, mut plan, _| {
                    let actor = org
                        .actor(caller.user_id)
                        .ok_or(CommandError::Domain(MembersError::NotAMember))?;
                    let events =
                        organization::decide(org, OrganizationCommand::Team(command(actor)), ctx)
                            .map_err(|e| CommandError::Domain(e.into()))?;
                    plan_extra(org, &mut plan);
                    Ok((events, plan, ()))
                },
            )
            .await?;
        Ok((executed.position, executed.state))
    }

    pub async fn create_group(
        &self,
        caller: Caller,
        name: &str,
        permissions: PermissionSet,
        meta: &Meta,
    ) -> Result<(Uuid, Option<i64>)> {
        let group_id = Uuid::now_v7();
        let (position, _) = self
            .team(
                caller,
                meta,
                |_, _| {},
                |actor| TeamCommand::CreateGroup {
                    group_id,
                    name: name.to_owned(),
                    permissions: permissions.clone(),
                    actor,
                },
            )
            .await?;
        Ok((group_id, position))
    }

    pub async fn update_group(
        &self,
        caller: Caller,
        group_id: Uuid,
        name: Option<&str>,
        permissions: Option<PermissionSet>,
        meta: &Meta,
    ) -> Result<Option<i64>> {
        self.team(
            caller,
            meta,
            |_, _| {},
            |actor| TeamCommand::UpdateGroup {
                group_id,
                name: name.map(str::to_owned),
                permissions: permissions.clone(),
                actor,
            },
        )
        .await
        .map(|(p, _)| p)
    }

    pub async fn delete_group(
        &self,
        caller: Caller,
        group_id: Uuid,
        meta: &Meta,
    ) -> Result<Option<i64>> {
        self.team(
            caller,
            meta,
            |_, _| {},
            |actor| TeamCommand::DeleteGroup { group_id, actor },
        )
        .await
        .map(|(p, _)| p)
    }

    /// InviteSubuser: a pending invitation (7 days) whose single-use token is emailed to
    /// the invitee and kept only as a digest. An address that already has an account is a
    /// conflict.
    pub async fn invite(
        &self,
        caller: Caller,
        email: &EmailAddress,
        group_ids: BTreeSet<Uuid>,
        meta: &Meta,
    ) -> Result<InvitationIssued> {
        if self
            .pipeline
            .store()
            .claim_owner(&email_claim(self.secrets.as_ref(), email))
            .await?
            .is_some()
        {
            return Err(CommandError::Domain(MembersError::EmailTaken));
        }
        let invitation_id = Uuid::now_v7();
        let sealed_email = self
            .secrets
            .seal(
                &invitation_subject(invitation_id),
                email.as_str().as_bytes(),
            )
            .await?;
        let email_digest = self.secrets.keyed_digest("email", &email.normalized()).0;
        let token = self.secrets.new_token(INVITATION_TOKEN_PREFIX);
        let token_digest = self.secrets.token_digest(&token);
        let expires_at = members::invitation_expiry(self.pipeline.now());
        let org_stream = Organization::stream_id(caller.organization_id);
        let (position, org) = self
            .team(
                caller,
                meta,
                |_, plan| {
                    plan.claim(invitation_claim(&token_digest), &org_stream);
                },
                |actor| TeamCommand::Invite {
                    invitation: SubuserInvited {
                        invitation_id,
                        email: sealed_email.clone(),
                        email_digest: email_digest.clone(),
                        permission_group_ids: group_ids.clone(),
                        token_digest: token_digest.clone(),
                        expires_at,
                    },
                    actor,
                },
            )
            .await?;
        let expires_at = org
            .team
            .invitations
            .get(&invitation_id)
            .map_or(expires_at, |i| i.expires_at);
        self.send_invitation(email.as_str(), &token, expires_at)
            .await?;
        Ok(InvitationIssued {
            invitation_id,
            expires_at,
            position,
        })
    }

    /// A fresh token for a pending (or expired) invitation; the old one stops working.
    pub async fn resend(
        &self,
        caller: Caller,
        invitation_id: Uuid,
        meta: &Meta,
    ) -> Result<InvitationIssued> {
        let token = self.secrets.new_token(INVITATION_TOKEN_PREFIX);
        let token_digest = self.secrets.token_digest(&token);
        let org_stream = Organization::stream_id(caller.organization_id);
        let (position, org) = self
            .team(
                caller,
                meta,
                |org, plan| {
                    if let Some(old) = org.team.invitations.get(&invitation_id) {
                        plan.release(invitation_claim(&old.token_digest));
                    }
                    plan.claim(invitation_claim(&token_digest), &org_stream);
                },
                |actor| TeamCommand::Resend {
                    invitation_id,
                    token_digest: token_digest.clone(),
                    actor,
                },
            )
            .await?;
        let invitation = org
            .team
            .invitations
            .get(&invitation_id)
            .ok_or(CommandError::Domain(TeamError::InvitationNotFound.into()))?;
        let email = self
            .secrets
            .open(&invitation.email)
            .await?
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .ok_or(CommandError::Domain(TeamError::InvitationNotFound.into()))?;
        self.send_invitation(&email, &token, invitation.expires_at)
            .await?;
        Ok(InvitationIssued {
            invitation_id,
            expires_at: invitation.expires_at,
            position,
        })
    }

    pub async fn revoke(
        &self,
        caller: Caller,
        invitation_id: Uuid,
        meta: &Meta,
    ) -> Result<Option<i64>> {
        self.team(
            caller,
            meta,
            |org, plan| {
                if let Some(old) = org.team.invitations.get(&invitation_id) {
                    plan.release(invitation_claim(&old.token_digest));
                }
            },
            |actor| TeamCommand::Revoke {
                invitation_id,
                actor,
            },
        )
        .await
        .map(|(p, _)| p)
    }

    /// Accepts an invitation with its emailed token: the sub-user is created with their own
    /// password, joins the invitation's groups and is signed in — all in one commit.
    pub async fn accept(
        &self,
        token: &str,
        password: &str,
        first_name: &Text,
        last_name: &Text,
        meta: &Meta,
    ) -> Result<Joined> {
        let invalid = || CommandError::Domain(MembersError::from(TeamError::InvitationInvalid));
        let token_digest = self.secrets.token_digest(token);
        let org_stream = self
            .pipeline
            .store()
            .claim_owner(&invitation_claim(&token_digest))
            .await?
            .ok_or_else(invalid)?;
        let org = self
            .pipeline
            .load::<Organization, MembersError>(&org_stream)
            .await?;
        let now = self.pipeline.now();
        let invitation = org
            .state
            .team
            .invitations
            .iter()
            .find(|(_, i)| i.token_digest == token_digest && i.expires_at > now)
            .map(|(id, i)| (*id, i.clone()));
        let (Some(organization_id), Some((invitation_id, invitation))) = (org.state.id, invitation)
        else {
            return Err(invalid());
        };
        let email = self
            .secrets
            .open(&invitation.email)
            .await?
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .ok_or_else(invalid)?;
        let email = EmailAddress::parse("/email", &email)?;
        let password = Password::parse(
            "/password",
            password,
            &[crate::accounts::SERVICE_NAME, email.local_part()],
        )?;
        let user_id = Uuid::now_v7();
        let user_stream = User::stream_id(user_id);
        let claim = email_claim(self.secrets.as_ref(), &email);
        if self.pipeline.store().claim_owner(&claim).await?.is_some() {
            return Err(CommandError::Domain(MembersError::EmailTaken));
        }
        let password_hash = self.seal_hash(&user_stream, password.expose()).await?;
        let sealed_email = self.seal(&user_stream, email.as_str()).await?;
        let sealed_first = self.seal(&user_stream, first_name.as_str()).await?;
        let sealed_last = self.seal(&user_stream, last_name.as_str()).await?;
        let session_token = self.secrets.new_token("wdn_s_");
        let session_digest = self.secrets.token_digest(&session_token);
        let session_id = Uuid::now_v7();
        let policy = self.policy;
        let (executed, setup) = self
            .pipeline
            .execute_with::<Organization, MembersError, _, bool>(
                &org_stream,
                meta,
                |org, ctx, mut plan, _| {
                    let events = organization::decide(
                        org,
                        OrganizationCommand::Team(TeamCommand::Accept {
                            invitation_id,
                            token_digest: token_digest.clone(),
                            user_id,
                        }),
                        ctx,
                    )
                    .map_err(|e| CommandError::Domain(e.into()))?;
                    let setup = org.two_factor_policy.setup_required(ctx.now);
                    let user_events = new_subuser_events(
                        NewSubuser {
                            user_id,
                            organization_id,
                            email: sealed_email.clone(),
                            first_name: sealed_first.clone(),
                            last_name: sealed_last.clone(),
                            password_hash: password_hash.clone(),
                            session_id,
                            session_digest: session_digest.clone(),
                            policy,
                            setup_only: setup == Some(true),
                        },
                        ctx,
                    )?;
                    plan.push::<User>(&user_stream, 0, &user_events)?
                        .claim(claim.clone(), &user_stream)
                        .release(invitation_claim(&token_digest));
                    Ok((events, plan, setup.is_some()))
                },
            )
            .await
            .map_err(|e| match e {
                CommandError::ClaimTaken(_) => CommandError::Domain(MembersError::EmailTaken),
                other => other,
            })?;
        Ok(Joined {
            user_id,
            organization_id,
            session: NewSession {
                token: session_token,
                session_id,
                user_id,
                expires_at: now + policy.lifetime,
                position: executed.position,
                two_factor_setup_required: setup,
            },
        })
    }

    pub async fn set_member_groups(
        &self,
        caller: Caller,
        user_id: Uuid,
        group_ids: BTreeSet<Uuid>,
        meta: &Meta,
    ) -> Result<Option<i64>> {
        self.team(
            caller,
            meta,
            |_, _| {},
            |actor| TeamCommand::SetMemberGroups {
                user_id,
                group_ids: group_ids.clone(),
                actor,
            },
        )
        .await
        .map(|(p, _)| p)
    }

    /// Removes a sub-user: their sessions and API keys end at once and their address is
    /// free again (for a new invitation or sign-up).
    pub async fn remove_member(
        &self,
        caller: Caller,
        user_id: Uuid,
        meta: &Meta,
    ) -> Result<Option<i64>> {
        let user_stream = User::stream_id(user_id);
        let claim = match self
            .pipeline
            .load::<User, MembersError>(&user_stream)
            .await?
            .state
            .email
            .clone()
        {
            Some(sealed) => self.email_claim_of(&sealed).await?,
            None => None,
        };
        let executed = self
            .pipeline
            .execute_pair::<Organization, User, MembersError, _>(
                &Organization::stream_id(caller.organization_id),
                &user_stream,
                meta,
                |org, user, ctx, plan| {
                    let actor = org
                        .actor(caller.user_id)
                        .ok_or(CommandError::Domain(MembersError::NotAMember))?;
                    let org_events = organization::decide(
                        org,
                        OrganizationCommand::Team(TeamCommand::RemoveMember { user_id, actor }),
                        ctx,
                    )
                    .map_err(|e| CommandError::Domain(e.into()))?;
                    let user_events = user::decide(user, UserCommand::Remove, ctx)
                        .map_err(|e| CommandError::Domain(e.into()))?;
                    if let Some(claim) = &claim {
                        plan.release(claim.clone());
                    }
                    Ok((org_events, user_events))
                },
            )
            .await?;
        Ok(executed.position)
    }

    /// Forgets a person of the caller's organization (never the owner) by crypto-shredding:
    /// they are removed (if not yet) and `user.forgotten` is recorded, their address is
    /// free again, and then their data key and the key of the invitation they accepted are
    /// destroyed, so everything sealed for them is unreadable everywhere. Safe to repeat: a
    /// second call records nothing and destroys the keys again.
    pub async fn forget_member(
        &self,
        caller: Caller,
        user_id: Uuid,
        meta: &Meta,
    ) -> Result<Option<i64>> {
        let user_stream = User::stream_id(user_id);
        let org_stream = Organization::stream_id(caller.organization_id);
        let user = self
            .pipeline
            .load::<User, MembersError>(&user_stream)
            .await?
            .state;
        if user.organization_id != Some(caller.organization_id) {
            return Err(CommandError::Domain(MembersError::User(
                UserError::NotFound,
            )));
        }
        if user.role == Some(Role::OrganizationOwner) {
            return Err(CommandError::Domain(TeamError::CannotActOnOwner.into()));
        }
        let claim = match &user.email {
            Some(sealed) => self.email_claim_of(sealed).await?,
            None => None,
        };
        let executed = self
            .pipeline
            .execute_pair::<Organization, User, MembersError, _>(
                &org_stream,
                &user_stream,
                meta,
                |org, user, ctx, plan| {
                    let actor = org
                        .actor(caller.user_id)
                        .ok_or(CommandError::Domain(MembersError::NotAMember))?;
                    if org.owner_user_id == Some(user_id) {
                        return Err(CommandError::Domain(TeamError::CannotActOnOwner.into()));
                    }
                    let org_events = if org.team.members.contains_key(&user_id) {
                        organization::decide(
                            org,
                            OrganizationCommand::Team(TeamCommand::RemoveMember { user_id, actor }),
                            ctx,
                        )
                        .map_err(|e| CommandError::Domain(e.into()))?
                    } else {
                        vec![]
                    };
                    let user_events = user::decide(user, UserCommand::Forget, ctx)
                        .map_err(|e| CommandError::Domain(e.into()))?;
                    if let Some(claim) = &claim {
                        plan.release(claim.clone());
                    }
                    Ok((org_events, user_events))
                },
            )
            .await?;
        // The event is recorded first, so a failure below leaves a forgotten user whose
        // keys a retry destroys; never destroyed keys without the record of why.
        self.secrets.destroy_key(&user_stream).await?;
        for invitation_id in self.accepted_invitations(&org_stream, user_id).await? {
            self.secrets
                .destroy_key(&invitation_subject(invitation_id))
                .await?;
        }
        Ok(executed.position)
    }

    /// The invitations `user_id` accepted in this organization (their address was sealed
    /// under each invitation's own key).
    async fn accepted_invitations(&self, org_stream: &str, user_id: Uuid) -> Result<Vec<Uuid>> {
        let user_id = user_id.to_string();
        let mut accepted = Vec::new();
        fold_stream(self.pipeline.store().as_ref(), org_stream, 0, |page| {
            accepted.extend(
                page.iter()
                    .filter(|e| e.event_type == "organization.invitation_accepted")
                    .filter(|e| e.payload.get("user_id").and_then(|v| v.as_str()) == Some(&user_id))
                    .filter_map(|e| {
                        e.payload
                            .get("invitation_id")?
                            .as_str()?
                            .parse::<Uuid>()
                            .ok()
                    }),
            );
            Ok::<_, CommandError<MembersError>>(true)
        })
        .await?;
        Ok(accepted)
    }

    /// Runs a user command on a sub-user of the caller's organization (never the owner).
    async fn on_member(
        &self,
        caller: Caller,
        user_id: Uuid,
        command: UserCommand,
        meta: &Meta,
    ) -> Result<(Option<i64>, Organization)> {
        let executed = self
            .pipeline
            .execute_pair::<Organization, User, MembersError, _>(
                &Organization::stream_id(caller.organization_id),
                &User::stream_id(user_id),
                meta,
                |org, user, ctx, _| {
                    org.actor(caller.user_id)
                        .ok_or(CommandError::Domain(MembersError::NotAMember))?;
                    members::member(&org.team, org.owner_user_id, user_id)
                        .map_err(|e| CommandError::Domain(e.into()))?;
                    let events = user::decide(user, command.clone(), ctx)
                        .map_err(|e| CommandError::Domain(e.into()))?;
                    Ok((vec![], events))
                },
            )
            .await?;
        Ok((executed.position, executed.first))
    }

    pub async fn disable_member(
        &self,
        caller: Caller,
        user_id: Uuid,
        meta: &Meta,
    ) -> Result<Option<i64>> {
        Ok(self
            .on_member(caller, user_id, UserCommand::Disable, meta)
            .await?
            .0)
    }

    pub async fn enable_member(
        &self,
        caller: Caller,
        user_id: Uuid,
        meta: &Meta,
    ) -> Result<Option<i64>> {
        Ok(self
            .on_member(caller, user_id, UserCommand::Enable, meta)
            .await?
            .0)
    }

    /// Resets a member's second factor: they must enroll at next sign-in; they and the
    /// owner are told by email.
    pub async fn reset_two_factor(
        &self,
        caller: Caller,
        user_id: Uuid,
        meta: &Meta,
    ) -> Result<Option<i64>> {
        let (position, org) = self
            .on_member(
                caller,
                user_id,
                UserCommand::ResetTwoFactor {
                    reason: TwoFactorResetReason::Administrator,
                },
                meta,
            )
            .await?;
        if position.is_some() {
            let text = "Two-factor authentication on your Warden account was reset by an \
                        administrator of your organization. You will be asked to set up a new \
                        second factor the next time you sign in. If you did not expect this, \
                        contact your organization's owner.";
            self.notify(user_id, text).await;
            if let Some(owner) = org.owner_user_id {
                self.notify(
                    owner,
                    "Two-factor authentication was reset for a member of your Warden organization.",
                )
                .await;
            }
        }
        Ok(position)
    }

    /// Lifts a member's consecutive-failure block on second-factor sign-in.
    pub async fn unblock_two_factor(
        &self,
        caller: Caller,
        user_id: Uuid,
        meta: &Meta,
    ) -> Result<Option<i64>> {
        Ok(self
            .on_member(caller, user_id, UserCommand::UnblockTwoFactor, meta)
            .await?
            .0)
    }

    /// A new API key for the caller. The secret is returned once; the key acts as its user.
    pub async fn create_api_key(
        &self,
        user_id: Uuid,
        name: &str,
        meta: &Meta,
    ) -> Result<NewApiKey> {
        let key_id = Uuid::now_v7();
        let (secret, prefix, key_digest) = self.new_api_key_secret();
        let position = self
            .on_self(
                user_id,
                UserCommand::CreateApiKey {
                    key_id,
                    name: name.to_owned(),
                    prefix: prefix.clone(),
                    key_digest,
                },
                meta,
            )
            .await?;
        Ok(NewApiKey {
            key_id,
            secret,
            prefix,
            position,
        })
    }

    /// A fresh secret for one of the caller's keys; the old secret stops working at once.
    pub async fn rotate_api_key(
        &self,
        user_id: Uuid,
        key_id: Uuid,
        meta: &Meta,
    ) -> Result<NewApiKey> {
        let (secret, prefix, key_digest) = self.new_api_key_secret();
        let position = self
            .on_self(
                user_id,
                UserCommand::RotateApiKey {
                    key_id,
                    prefix: prefix.clone(),
                    key_digest,
                },
                meta,
            )
            .await?;
        Ok(NewApiKey {
            key_id,
            secret,
            prefix,
            position,
        })
    }

    pub async fn revoke_api_key(
        &self,
        user_id: Uuid,
        key_id: Uuid,
        meta: &Meta,
    ) -> Result<Option<i64>> {
        self.on_self(user_id, UserCommand::RevokeApiKey { key_id }, meta)
            .await
    }

    async fn on_self(
        &self,
        user_id: Uuid,
        command: UserCommand,
        meta: &Meta,
    ) -> Result<Option<i64>> {
        let executed = self
            .pipeline
            .execute::<User, UserError, _>(&User::stream_id(user_id), meta, |user, ctx| {
                user::decide(user, command.clone(), ctx)
            })
            .await
            .map_err(|e| e.map_domain(MembersError::User))?;
        Ok(executed.position)
    }

    fn new_api_key_secret(&self) -> (String, String, Digest) {
        let secret = self.secrets.new_token(API_KEY_PREFIX);
        let prefix: String = secret.chars().take(DISPLAY_PREFIX_CHARS).collect();
        let digest = self.secrets.token_digest(&secret);
        (secret, prefix, digest)
    }

    async fn seal(&self, subject: &str, text: &str) -> Result<Sealed> {
        Ok(self.secrets.seal(subject, text.as_bytes()).await?)
    }

    async fn seal_hash(&self, subject: &str, secret: &str) -> Result<Sealed> {
        let phc = self.secrets.hash_secret(secret).await?;
        self.seal(subject, &phc).await
    }

    /// The email claim key of a sealed address (`None` once the address was forgotten).
    async fn email_claim_of(&self, sealed: &Sealed) -> Result<Option<String>> {
        let Some(bytes) = self.secrets.open(sealed).await? else {
            return Ok(None);
        };
        Ok(
            EmailAddress::parse("/email", &String::from_utf8_lossy(&bytes))
                .ok()
                .map(|email| email_claim(self.secrets.as_ref(), &email)),
        )
    }

    async fn send_invitation(
        &self,
        to: &str,
        token: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<()> {
        let text = format!(
            "You have been invited to join an organization on Warden. To accept, use this \
             invitation token before {}: {token}\nIf you did not expect this invitation, ignore \
             this email.",
            expires_at.format("%Y-%m-%d %H:%M UTC")
        );
        self.sender
            .send(&OutboundMessage::new(
                Channel::Email,
                to,
                text,
                Some(token.to_owned()),
                "invitation",
            ))
            .await
            .map_err(|e| e.after_commit("the invitation email"))
    }

    /// Best effort: an email notice to a user about a change already committed. A failed
    /// notice is logged, never undone.
    async fn notify(&self, user_id: Uuid, text: &str) {
        crate::notice::email_user(
            &self.pipeline,
            self.secrets.as_ref(),
            self.sender.as_ref(),
            user_id,
            text,
        )
        .await;
    }
}

/// Invitation addresses are sealed under their own key, so an invitee who never joins can
/// be forgotten on their own.
pub fn invitation_subject(invitation_id: Uuid) -> String {
    format!("invitation-{invitation_id}")
}

/// The claim that maps an invitation token's digest to its organization.
fn invitation_claim(token_digest: &Digest) -> String {
    format!("invitation:{}", token_digest.0)
}

struct NewSubuser {
    user_id: Uuid,
    organization_id: Uuid,
    email: Sealed,
    first_name: Sealed,
    last_name: Sealed,
    password_hash: Sealed,
    session_id: Uuid,
    session_digest: Digest,
    policy: SessionPolicy,
    setup_only: bool,
}

/// `user.registered` as a sub-user, then the first session.
fn new_subuser_events(
    s: NewSubuser,
    ctx: &Ctx,
) -> std::result::Result<Vec<user::UserEvent>, CommandError<MembersError>> {
    let domain = |e: UserError| CommandError::Domain(MembersError::User(e));
    let mut state = User::default();
    let mut events = user::decide(
        &state,
        UserCommand::Register {
            user_id: s.user_id,
            organization_id: s.organization_id,
            role: Role::OrganizationSubUser,
            email: s.email,
            first_name: s.first_name,
            last_name: s.last_name,
            password_hash: s.password_hash,
        },
        ctx,
    )
    .map_err(domain)?;
    for e in &events {
        state.apply(e, ctx.now);
    }
    events.extend(
        user::decide(
            &state,
            UserCommand::SignIn {
                password_ok: true,
                challenge_id: Uuid::now_v7(),
                session_id: s.session_id,
                token_digest: s.session_digest,
                session_lifetime: s.policy.lifetime,
                idle_timeout: s.policy.idle_timeout,
                setup_only: s.setup_only,
            },
            ctx,
        )
        .map_err(domain)?,
    );
    Ok(events)
}
