//! The organization aggregate: the customer account that owns everything, its profile,
//! billing currency (fixed at sign-up) and security settings. Stream `organization-<uuid>`.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::aggregate::{Aggregate, Ctx};
use crate::event::DomainEvent;
use crate::members::{
    self, GroupCreated, GroupUpdated, InvitationAccepted, InvitationResent, MemberGroupsChanged,
    SubuserInvited, Team, TeamCommand, TeamError, TeamEvent,
};
use crate::sealed::Sealed;

/// Failed passphrase / PIN checks allowed per rolling window before 429.
pub const SECRET_CHECK_FAILURES_ALLOWED: usize = 5;
/// The rolling window for [`SECRET_CHECK_FAILURES_ALLOWED`].
pub const SECRET_CHECK_WINDOW_SECS: i64 = 15 * 60;

/// Which organization secret a check was about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrgSecret {
    SecurityPassphrase,
    PortOutPin,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event_type", content = "payload")]
pub enum OrganizationEvent {
    #[serde(rename = "organization.created")]
    Created {
        organization_id: Uuid,
        owner_user_id: Uuid,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        company_name: Option<String>,
        billing_currency: String,
    },
    /// Profile fields that changed. Address and contact details are personal data, so they
    /// travel sealed (a JSON object inside).
    #[serde(rename = "organization.updated")]
    Updated {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        company_name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        address: Option<Sealed>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        contact: Option<Sealed>,
    },
    #[serde(rename = "organization.security_passphrase_set")]
    SecurityPassphraseSet { passphrase_hash: Sealed },
    #[serde(rename = "organization.port_out_pin_set")]
    PortOutPinSet { pin_hash: Sealed },
    /// Someone checked a passphrase or PIN; failures count towards the rate limit.
    #[serde(rename = "organization.secret_checked")]
    SecretChecked { secret: OrgSecret, valid: bool },
    /// Whether members must use two-factor authentication, from when, and whether they may
    /// turn it off.
    #[serde(rename = "organization.two_factor_policy_changed")]
    TwoFactorPolicyChanged(TwoFactorPolicy),
    #[serde(rename = "organization.permission_group_created")]
    PermissionGroupCreated(GroupCreated),
    #[serde(rename = "organization.permission_group_updated")]
    PermissionGroupUpdated(GroupUpdated),
    /// The group is gone, and with it its members' permissions from it.
    #[serde(rename = "organization.permission_group_deleted")]
    PermissionGroupDeleted { group_id: Uuid },
    #[serde(rename = "organization.subuser_invited")]
    SubuserInvited(SubuserInvited),
    #[serde(rename = "organization.invitation_resent")]
    InvitationResent(InvitationResent),
    #[serde(rename = "organization.invitation_revoked")]
    InvitationRevoked { invitation_id: Uuid },
    /// The invitee became a sub-user (their `user.registered` is in the same commit).
    #[serde(rename = "organization.invitation_accepted")]
    InvitationAccepted(InvitationAccepted),
    #[serde(rename = "organization.member_groups_changed")]
    MemberGroupsChanged(MemberGroupsChanged),
    /// The sub-user left the organization (their `user.removed` is in the same commit).
    #[serde(rename = "organization.member_removed")]
    MemberRemoved { user_id: Uuid },
}

impl From<TeamEvent> for OrganizationEvent {
    fn from(e: TeamEvent) -> Self {
        match e {
            TeamEvent::GroupCreated(e) => Self::PermissionGroupCreated(e),
            TeamEvent::GroupUpdated(e) => Self::PermissionGroupUpdated(e),
            TeamEvent::GroupDeleted { group_id } => Self::PermissionGroupDeleted { group_id },
            TeamEvent::SubuserInvited(e) => Self::SubuserInvited(e),
            TeamEvent::InvitationResent(e) => Self::InvitationResent(e),
            TeamEvent::InvitationRevoked { invitation_id } => {
                Self::InvitationRevoked { invitation_id }
            }
            TeamEvent::InvitationAccepted(e) => Self::InvitationAccepted(e),
            TeamEvent::MemberGroupsChanged(e) => Self::MemberGroupsChanged(e),
            TeamEvent::MemberRemoved { user_id } => Self::MemberRemoved { user_id },
        }
    }
}

/// The organization's two-factor rules.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TwoFactorPolicy {
    /// Members without 2FA are asked to set it up at sign-in.
    pub required: bool,
    /// After this instant, members without 2FA can only enroll (no skipping).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforce_after: Option<DateTime<Utc>>,
    /// Members may turn 2FA off (never while it is required).
    pub allow_disable: bool,
}

impl TwoFactorPolicy {
    /// `Some(true)` when set-up is required and can no longer be skipped, `Some(false)`
    /// when it is required but skippable, `None` when not required.
    pub fn setup_required(&self, now: DateTime<Utc>) -> Option<bool> {
        self.required
            .then(|| self.enforce_after.is_some_and(|deadline| now >= deadline))
    }

    pub fn disable_allowed(&self) -> bool {
        self.allow_disable && !self.required
    }
}

impl DomainEvent for OrganizationEvent {
    fn event_types() -> &'static [&'static str] {
        &[
            "organization.created",
            "organization.updated",
            "organization.security_passphrase_set",
            "organization.port_out_pin_set",
            "organization.secret_checked",
            "organization.two_factor_policy_changed",
            "organization.permission_group_created",
            "organization.permission_group_updated",
            "organization.permission_group_deleted",
            "organization.subuser_invited",
            "organization.invitation_resent",
            "organization.invitation_revoked",
            "organization.invitation_accepted",
            "organization.member_groups_changed",
            "organization.member_removed",
        ]
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Organization {
    pub id: Option<Uuid>,
    pub owner_user_id: Option<Uuid>,
    pub billing_currency: Option<String>,
    pub passphrase_hash: Option<Sealed>,
    pub pin_hash: Option<Sealed>,
    /// Recent failed checks per secret, newest last, at most the allowance.
    pub passphrase_failures: Vec<DateTime<Utc>>,
    pub pin_failures: Vec<DateTime<Utc>>,
    #[serde(default)]
    pub two_factor_policy: TwoFactorPolicy,
    #[serde(default)]
    pub team: Team,
}

impl Organization {
    /// The caller as the team rules see them: the owner holds every permission, a sub-user
    /// their groups' union; anyone else is no one here.
    pub fn actor(&self, user_id: Uuid) -> Option<members::Actor> {
        let permissions = if self.owner_user_id == Some(user_id) {
            crate::permissions::PermissionSet::all()
        } else if self.team.members.contains_key(&user_id) {
            self.team.permissions_of(user_id)
        } else {
            return None;
        };
        Some(members::Actor {
            user_id,
            permissions,
        })
    }

    pub fn failures(&self, secret: OrgSecret) -> &[DateTime<Utc>] {
        match secret {
            OrgSecret::SecurityPassphrase => &self.passphrase_failures,
            OrgSecret::PortOutPin => &self.pin_failures,
        }
    }

    pub fn hash_of(&self, secret: OrgSecret) -> Option<&Sealed> {
        match secret {
            OrgSecret::SecurityPassphrase => self.passphrase_hash.as_ref(),
            OrgSecret::PortOutPin => self.pin_hash.as_ref(),
        }
    }
}

impl Aggregate for Organization {
    const STREAM_TYPE: &'static str = "organization";
    const SNAPSHOT_VERSION: i32 = 2;
    type Event = OrganizationEvent;

    fn apply(&mut self, event: &OrganizationEvent, recorded_at: DateTime<Utc>) {
        match event {
            OrganizationEvent::Created {
                organization_id,
                owner_user_id,
                billing_currency,
                ..
            } => {
                self.id = Some(*organization_id);
                self.owner_user_id = Some(*owner_user_id);
                self.billing_currency = Some(billing_currency.clone());
            }
            OrganizationEvent::Updated { .. } => {}
            OrganizationEvent::SecurityPassphraseSet { passphrase_hash } => {
                self.passphrase_hash = Some(passphrase_hash.clone());
                self.passphrase_failures.clear();
            }
            OrganizationEvent::PortOutPinSet { pin_hash } => {
                self.pin_hash = Some(pin_hash.clone());
                self.pin_failures.clear();
            }
            OrganizationEvent::TwoFactorPolicyChanged(policy) => {
                self.two_factor_policy = policy.clone();
            }
            OrganizationEvent::PermissionGroupCreated(e) => {
                members::apply_group_created(&mut self.team, e)
            }
            OrganizationEvent::PermissionGroupUpdated(e) => {
                members::apply_group_updated(&mut self.team, e)
            }
            OrganizationEvent::PermissionGroupDeleted { group_id } => {
                members::apply_group_deleted(&mut self.team, *group_id)
            }
            OrganizationEvent::SubuserInvited(e) => members::apply_invited(&mut self.team, e),
            OrganizationEvent::InvitationResent(e) => members::apply_resent(&mut self.team, e),
            OrganizationEvent::InvitationRevoked { invitation_id } => {
                self.team.invitations.remove(invitation_id);
            }
            OrganizationEvent::InvitationAccepted(e) => members::apply_accepted(&mut self.team, e),
            OrganizationEvent::MemberGroupsChanged(e) => {
                if let Some(member) = self.team.members.get_mut(&e.user_id) {
                    member.groups = e.permission_group_ids.clone();
                }
            }
            OrganizationEvent::MemberRemoved { user_id } => {
                self.team.members.remove(user_id);
            }
            OrganizationEvent::SecretChecked { secret, valid } => {
                let list = match secret {
                    OrgSecret::SecurityPassphrase => &mut self.passphrase_failures,
                    OrgSecret::PortOutPin => &mut self.pin_failures,
                };
                if *valid {
                    list.clear();
                } else {
                    list.push(recorded_at);
                    let excess = list.len().saturating_sub(SECRET_CHECK_FAILURES_ALLOWED);
                    list.drain(..excess);
                }
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrganizationError {
    #[error("this organization already exists")]
    AlreadyCreated,
    #[error("no such organization")]
    NotFound,
    #[error("the billing currency is fixed at sign-up and cannot change")]
    BillingCurrencyImmutable,
    #[error("the current password is wrong")]
    WrongPassword,
    #[error("too many failed checks")]
    TooManyChecks { retry_after_secs: i64 },
    #[error("only the organization owner may do this")]
    NotOwner,
    #[error(transparent)]
    Team(#[from] TeamError),
}

#[derive(Debug, Clone)]
pub enum OrganizationCommand {
    Create {
        organization_id: Uuid,
        owner_user_id: Uuid,
        company_name: Option<String>,
        billing_currency: String,
    },
    Update {
        company_name: Option<String>,
        address: Option<Sealed>,
        contact: Option<Sealed>,
        /// Present when the client tried to change it: refused unless equal.
        billing_currency: Option<String>,
    },
    SetSecret {
        secret: OrgSecret,
        current_password_ok: bool,
        hash: Sealed,
    },
    /// Record the outcome of checking a passphrase or PIN (`valid` is `None` when none is set).
    CheckSecret {
        secret: OrgSecret,
        valid: bool,
    },
    SetTwoFactorPolicy(TwoFactorPolicy),
    /// Permission groups, invitations and members.
    Team(TeamCommand),
}

/// Refuses a check before any hashing work when the secret is throttled.
pub fn check_secret_check_allowed(
    org: &Organization,
    secret: OrgSecret,
    now: DateTime<Utc>,
) -> Result<(), OrganizationError> {
    let window = Duration::seconds(SECRET_CHECK_WINDOW_SECS);
    let recent: Vec<_> = org
        .failures(secret)
        .iter()
        .filter(|t| now - **t < window)
        .collect();
    match recent.first() {
        Some(oldest) if recent.len() >= SECRET_CHECK_FAILURES_ALLOWED => {
            Err(OrganizationError::TooManyChecks {
                retry_after_secs: (window - (now - **oldest)).num_seconds().max(1),
            })
        }
        _ => Ok(()),
    }
}

pub fn decide(
    org: &Organization,
    cmd: OrganizationCommand,
    ctx: &Ctx,
) -> Result<Vec<OrganizationEvent>, OrganizationError> {
    if org.id.is_none() && !matches!(cmd, OrganizationCommand::Create { .. }) {
        return Err(OrganizationError::NotFound);
    }
    match cmd {
        OrganizationCommand::Create {
            organization_id,
            owner_user_id,
            company_name,
            billing_currency,
        } => {
            if org.id.is_some() {
                return Err(OrganizationError::AlreadyCreated);
            }
            Ok(vec![OrganizationEvent::Created {
                organization_id,
                owner_user_id,
                company_name,
                billing_currency,
            }])
        }
        OrganizationCommand::Update {
            company_name,
            address,
            contact,
            billing_currency,
        } => {
            if let Some(requested) = billing_currency {
                if org.billing_currency.as_deref() != Some(requested.as_str()) {
                    return Err(OrganizationError::BillingCurrencyImmutable);
                }
            }
            if company_name.is_none() && address.is_none() && contact.is_none() {
                return Ok(vec![]);
            }
            Ok(vec![OrganizationEvent::Updated {
                company_name,
                address,
                contact,
            }])
        }
        OrganizationCommand::SetSecret {
            secret,
            current_password_ok,
            hash,
        } => {
            if !current_password_ok {
                return Err(OrganizationError::WrongPassword);
            }
            Ok(vec![match secret {
                OrgSecret::SecurityPassphrase => OrganizationEvent::SecurityPassphraseSet {
                    passphrase_hash: hash,
                },
                OrgSecret::PortOutPin => OrganizationEvent::PortOutPinSet { pin_hash: hash },
            }])
        }
        OrganizationCommand::CheckSecret { secret, valid } => {
            check_secret_check_allowed(org, secret, ctx.now)?;
            Ok(vec![OrganizationEvent::SecretChecked { secret, valid }])
        }
        OrganizationCommand::SetTwoFactorPolicy(policy) => {
            if policy == org.two_factor_policy {
                return Ok(vec![]);
            }
            Ok(vec![OrganizationEvent::TwoFactorPolicyChanged(policy)])
        }
        OrganizationCommand::Team(cmd) => {
            Ok(members::decide(&org.team, org.owner_user_id, cmd, ctx)?
                .into_iter()
                .map(OrganizationEvent::from)
                .collect())
        }
    }
}

#[cfg(test)]
#[path = "organization_tests.rs"]
mod tests;
