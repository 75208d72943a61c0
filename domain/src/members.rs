//! The organization's people: permission groups, invitations and sub-users' group
//! memberships. This is part of the organization aggregate (the same stream), kept here the
//! way `two_factor` is kept apart from `user`.
//!
//! The rules that stop privilege escalation live here: nobody acts on the owner, and a
//! sub-user can neither create a group with, nor hand anyone, a permission they do not hold.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::aggregate::Ctx;
use crate::permissions::{Permission, PermissionSet};
use crate::sealed::{Digest, Sealed};

/// How long an invitation may be accepted.
pub const INVITATION_TTL_DAYS: i64 = 7;
/// Open (unaccepted, unrevoked) invitations an organization may have at once.
pub const MAX_OPEN_INVITATIONS: usize = 200;
/// Permission groups per organization.
pub const MAX_GROUPS: usize = 100;
/// Longest group name, in characters.
pub const MAX_GROUP_NAME: usize = 100;

/// The people-related part of an organization's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Team {
    pub groups: BTreeMap<Uuid, Group>,
    /// Sub-users (never the owner) and their groups.
    pub members: BTreeMap<Uuid, Member>,
    /// Invitations not yet accepted or revoked (possibly expired).
    pub invitations: BTreeMap<Uuid, Invitation>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub name: String,
    pub permissions: PermissionSet,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub groups: BTreeSet<Uuid>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Invitation {
    /// The address, sealed under the invitation's own key (for resending).
    pub email: Sealed,
    /// Keyed digest of the normalized address: finds duplicates without the address.
    pub email_digest: String,
    pub groups: BTreeSet<Uuid>,
    pub token_digest: Digest,
    pub expires_at: DateTime<Utc>,
}

impl Team {
    /// The permissions a sub-user holds: the union of their groups'.
    pub fn permissions_of(&self, user_id: Uuid) -> PermissionSet {
        let mut set = PermissionSet::default();
        if let Some(member) = self.members.get(&user_id) {
            for group in member.groups.iter().filter_map(|g| self.groups.get(g)) {
                set.extend(&group.permissions);
            }
        }
        set
    }

    fn permissions_of_groups(&self, groups: &BTreeSet<Uuid>) -> PermissionSet {
        let mut set = PermissionSet::default();
        for group in groups.iter().filter_map(|g| self.groups.get(g)) {
            set.extend(&group.permissions);
        }
        set
    }
}

// ---- events ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupCreated {
    pub group_id: Uuid,
    pub name: String,
    pub permissions: PermissionSet,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupUpdated {
    pub group_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<PermissionSet>,
}

/// InviteSubuser: the address travels sealed (personal data, under the invitation's own
/// key), the token only as its digest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubuserInvited {
    pub invitation_id: Uuid,
    pub email: Sealed,
    pub email_digest: String,
    pub permission_group_ids: BTreeSet<Uuid>,
    pub token_digest: Digest,
    pub expires_at: DateTime<Utc>,
}

/// A fresh token replaced the old one (which no longer works).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvitationResent {
    pub invitation_id: Uuid,
    pub token_digest: Digest,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvitationAccepted {
    pub invitation_id: Uuid,
    pub user_id: Uuid,
    pub permission_group_ids: BTreeSet<Uuid>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberGroupsChanged {
    pub user_id: Uuid,
    pub permission_group_ids: BTreeSet<Uuid>,
}

pub fn apply_group_created(team: &mut Team, e: &GroupCreated) {
    team.groups.insert(
        e.group_id,
        Group {
            name: e.name.clone(),
            permissions: e.permissions.clone(),
        },
    );
}

pub fn apply_group_updated(team: &mut Team, e: &GroupUpdated) {
    if let Some(group) = team.groups.get_mut(&e.group_id) {
        if let Some(name) = &e.name {
            group.name = name.clone();
        }
        if let Some(permissions) = &e.permissions {
            group.permissions = permissions.clone();
        }
    }
}

pub fn apply_group_deleted(team: &mut Team, group_id: Uuid) {
    team.groups.remove(&group_id);
    for member in team.members.values_mut() {
        member.groups.remove(&group_id);
    }
    for invitation in team.invitations.values_mut() {
        invitation.groups.remove(&group_id);
    }
}

pub fn apply_invited(team: &mut Team, e: &SubuserInvited) {
    // A new invitation for the same address replaces an expired one.
    team.invitations
        .retain(|_, i| i.email_digest != e.email_digest);
    team.invitations.insert(
        e.invitation_id,
        Invitation {
            email: e.email.clone(),
            email_digest: e.email_digest.clone(),
            groups: e.permission_group_ids.clone(),
            token_digest: e.token_digest.clone(),
            expires_at: e.expires_at,
        },
    );
}

pub fn apply_resent(team: &mut Team, e: &InvitationResent) {
    if let Some(invitation) = team.invitations.get_mut(&e.invitation_id) {
        invitation.token_digest = e.token_digest.clone();
        invitation.expires_at = e.expires_at;
    }
}

pub fn apply_accepted(team: &mut Team, e: &InvitationAccepted) {
    team.invitations.remove(&e.invitation_id);
    team.members.insert(
        e.user_id,
        Member {
            groups: e.permission_group_ids.clone(),
        },
    );
}

// ---- decisions ------------------------------------------------------------------------

/// Who is acting, as far as the rules need it. `permissions` are the caller's effective
/// permissions (all of them for the owner).
#[derive(Debug, Clone)]
pub struct Actor {
    pub user_id: Uuid,
    pub permissions: PermissionSet,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TeamError {
    #[error("no such permission group")]
    GroupNotFound { group_id: Uuid },
    #[error("a permission group with this name already exists")]
    GroupNameTaken,
    #[error("a permission group name must be 1 to {MAX_GROUP_NAME} characters")]
    InvalidGroupName,
    #[error("an organization may have at most {MAX_GROUPS} permission groups")]
    TooManyGroups,
    #[error("you cannot grant the permission {permission}, which you do not hold")]
    PermissionNotHeld { permission: Permission },
    #[error("no such invitation")]
    InvitationNotFound,
    #[error("this invitation is invalid or has expired")]
    InvitationInvalid,
    #[error("this address already has a pending invitation")]
    AlreadyInvited,
    #[error("an organization may have at most {MAX_OPEN_INVITATIONS} open invitations")]
    TooManyInvitations,
    #[error("no such member")]
    MemberNotFound,
    #[error("nobody can do this to the organization owner")]
    CannotActOnOwner,
}

#[derive(Debug, Clone)]
pub enum TeamCommand {
    CreateGroup {
        group_id: Uuid,
        name: String,
        permissions: PermissionSet,
        actor: Actor,
    },
    UpdateGroup {
        group_id: Uuid,
        name: Option<String>,
        permissions: Option<PermissionSet>,
        actor: Actor,
    },
    DeleteGroup {
        group_id: Uuid,
        actor: Actor,
    },
    /// InviteSubuser.
    Invite {
        invitation: SubuserInvited,
        actor: Actor,
    },
    Resend {
        invitation_id: Uuid,
        token_digest: Digest,
        actor: Actor,
    },
    Revoke {
        invitation_id: Uuid,
        actor: Actor,
    },
    /// The invitee proves the (current) token; `user_id` is the sub-user to create.
    Accept {
        invitation_id: Uuid,
        token_digest: Digest,
        user_id: Uuid,
    },
    SetMemberGroups {
        user_id: Uuid,
        group_ids: BTreeSet<Uuid>,
        actor: Actor,
    },
    RemoveMember {
        user_id: Uuid,
        actor: Actor,
    },
}

/// The events of one team command; `owner` is the organization's owner.
pub fn decide(
    team: &Team,
    owner: Option<Uuid>,
    cmd: TeamCommand,
    ctx: &Ctx,
) -> Result<Vec<TeamEvent>, TeamError> {
    match cmd {
        TeamCommand::CreateGroup {
            group_id,
            name,
            permissions,
            actor,
        } => {
            let name = group_name(&name)?;
            if team.groups.len() >= MAX_GROUPS {
                return Err(TeamError::TooManyGroups);
            }
            name_free(team, &name, None)?;
            may_grant(&actor, &permissions)?;
            Ok(vec![TeamEvent::GroupCreated(GroupCreated {
                group_id,
                name,
                permissions,
            })])
        }
        TeamCommand::UpdateGroup {
            group_id,
            name,
            permissions,
            actor,
        } => {
            let group = team
                .groups
                .get(&group_id)
                .ok_or(TeamError::GroupNotFound { group_id })?;
            // Changing a group changes what its members hold: the caller must hold what
            // the group grants, before and after.
            may_grant(&actor, &group.permissions)?;
            let name = name.map(|n| group_name(&n)).transpose()?;
            if let Some(name) = &name {
                name_free(team, name, Some(group_id))?;
            }
            if let Some(permissions) = &permissions {
                may_grant(&actor, permissions)?;
            }
            let name = name.filter(|n| *n != group.name);
            let permissions = permissions.filter(|p| *p != group.permissions);
            if name.is_none() && permissions.is_none() {
                return Ok(vec![]);
            }
            Ok(vec![TeamEvent::GroupUpdated(GroupUpdated {
                group_id,
                name,
                permissions,
            })])
        }
        TeamCommand::DeleteGroup { group_id, actor } => {
            let group = team
                .groups
                .get(&group_id)
                .ok_or(TeamError::GroupNotFound { group_id })?;
            may_grant(&actor, &group.permissions)?;
            Ok(vec![TeamEvent::GroupDeleted { group_id }])
        }
        TeamCommand::Invite { invitation, actor } => {
            groups_exist(team, &invitation.permission_group_ids)?;
            may_grant(
                &actor,
                &team.permissions_of_groups(&invitation.permission_group_ids),
            )?;
            let open: Vec<&Invitation> = team.invitations.values().collect();
            if open
                .iter()
                .any(|i| i.email_digest == invitation.email_digest && i.expires_at > ctx.now)
            {
                return Err(TeamError::AlreadyInvited);
            }
            if open.len() >= MAX_OPEN_INVITATIONS {
                return Err(TeamError::TooManyInvitations);
            }
            Ok(vec![TeamEvent::SubuserInvited(invitation)])
        }
        TeamCommand::Resend {
            invitation_id,
            token_digest,
            actor,
        } => {
            let invitation = team
                .invitations
                .get(&invitation_id)
                .ok_or(TeamError::InvitationNotFound)?;
            may_grant(&actor, &team.permissions_of_groups(&invitation.groups))?;
            Ok(vec![TeamEvent::InvitationResent(InvitationResent {
                invitation_id,
                token_digest,
                expires_at: invitation_expiry(ctx.now),
            })])
        }
        TeamCommand::Revoke {
            invitation_id,
            actor: _,
        } => {
            if !team.invitations.contains_key(&invitation_id) {
                return Err(TeamError::InvitationNotFound);
            }
            Ok(vec![TeamEvent::InvitationRevoked { invitation_id }])
        }
        TeamCommand::Accept {
            invitation_id,
            token_digest,
            user_id,
        } => {
            let invitation = team
                .invitations
                .get(&invitation_id)
                .filter(|i| i.token_digest == token_digest && i.expires_at > ctx.now)
                .ok_or(TeamError::InvitationInvalid)?;
            Ok(vec![TeamEvent::InvitationAccepted(InvitationAccepted {
                invitation_id,
                user_id,
                permission_group_ids: invitation.groups.clone(),
            })])
        }
        TeamCommand::SetMemberGroups {
            user_id,
            group_ids,
            actor,
        } => {
            let member = member(team, owner, user_id)?;
            groups_exist(team, &group_ids)?;
            // Both what is given and what is taken away must be within the caller's reach.
            may_grant(&actor, &team.permissions_of_groups(&group_ids))?;
            may_grant(&actor, &team.permissions_of_groups(&member.groups))?;
            if member.groups == group_ids {
                return Ok(vec![]);
            }
            Ok(vec![TeamEvent::MemberGroupsChanged(MemberGroupsChanged {
                user_id,
                permission_group_ids: group_ids,
            })])
        }
        TeamCommand::RemoveMember { user_id, actor: _ } => {
            member(team, owner, user_id)?;
            Ok(vec![TeamEvent::MemberRemoved { user_id }])
        }
    }
}

/// A sub-user of this organization that a command may act on (never the owner).
pub fn member(team: &Team, owner: Option<Uuid>, user_id: Uuid) -> Result<&Member, TeamError> {
    if owner == Some(user_id) {
        return Err(TeamError::CannotActOnOwner);
    }
    team.members.get(&user_id).ok_or(TeamError::MemberNotFound)
}

/// What a team command produces; wrapped into organization events by the aggregate.
#[derive(Debug, Clone, PartialEq)]
pub enum TeamEvent {
    GroupCreated(GroupCreated),
    GroupUpdated(GroupUpdated),
    GroupDeleted { group_id: Uuid },
    SubuserInvited(SubuserInvited),
    InvitationResent(InvitationResent),
    InvitationRevoked { invitation_id: Uuid },
    InvitationAccepted(InvitationAccepted),
    MemberGroupsChanged(MemberGroupsChanged),
    MemberRemoved { user_id: Uuid },
}

pub fn invitation_expiry(now: DateTime<Utc>) -> DateTime<Utc> {
    now + Duration::days(INVITATION_TTL_DAYS)
}

fn group_name(raw: &str) -> Result<String, TeamError> {
    let name = raw.trim();
    if name.is_empty()
        || name.chars().count() > MAX_GROUP_NAME
        || name.chars().any(char::is_control)
    {
        return Err(TeamError::InvalidGroupName);
    }
    Ok(name.to_owned())
}

fn name_free(team: &Team, name: &str, except: Option<Uuid>) -> Result<(), TeamError> {
    let taken = team
        .groups
        .iter()
        .any(|(id, g)| Some(*id) != except && g.name.to_lowercase() == name.to_lowercase());
    if taken {
        Err(TeamError::GroupNameTaken)
    } else {
        Ok(())
    }
}

fn groups_exist(team: &Team, groups: &BTreeSet<Uuid>) -> Result<(), TeamError> {
    match groups.iter().find(|g| !team.groups.contains_key(g)) {
        Some(group_id) => Err(TeamError::GroupNotFound {
            group_id: *group_id,
        }),
        None => Ok(()),
    }
}

fn may_grant(actor: &Actor, permissions: &PermissionSet) -> Result<(), TeamError> {
    match permissions.iter().find(|p| !actor.permissions.allows(*p)) {
        Some(permission) => Err(TeamError::PermissionNotHeld { permission }),
        None => Ok(()),
    }
}
