//! Organization decisions and the pinned JSON of every organization event type.

use chrono::TimeZone;

use super::*;
use crate::event::encode;
use crate::members::{Actor, TeamCommand, TeamError};
use crate::permissions::{Permission, PermissionSet};
use crate::sealed::Digest;

fn sealed(tag: &str) -> Sealed {
    Sealed {
        key_id: "organization-0190a000-0000-7000-8000-000000000002".into(),
        nonce: format!("nonce-{tag}"),
        ciphertext: format!("ciphertext-{tag}"),
    }
}

fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_780_000_000 + secs, 0)
        .single()
        .unwrap_or_default()
}

fn uid(n: u128) -> Uuid {
    Uuid::from_u128(0x0190a000_0000_7000_8000_000000000000 + n)
}

fn created() -> OrganizationEvent {
    OrganizationEvent::Created {
        organization_id: uid(2),
        owner_user_id: uid(1),
        company_name: Some("Acme Telecom".into()),
        billing_currency: "USD".into(),
    }
}

fn given(events: &[OrganizationEvent]) -> Organization {
    let mut org = Organization::default();
    for (i, e) in events.iter().enumerate() {
        org.apply(e, t(i as i64));
    }
    org
}

#[test]
fn every_organization_event_type_is_pinned() {
    let events = [
        created(),
        OrganizationEvent::Updated {
            company_name: Some("Acme".into()),
            address: Some(sealed("address")),
            contact: None,
        },
        OrganizationEvent::SecurityPassphraseSet {
            passphrase_hash: sealed("pp"),
        },
        OrganizationEvent::PortOutPinSet {
            pin_hash: sealed("pin"),
        },
        OrganizationEvent::SecretChecked {
            secret: OrgSecret::PortOutPin,
            valid: false,
        },
        OrganizationEvent::TwoFactorPolicyChanged(TwoFactorPolicy {
            required: true,
            enforce_after: Some(t(86_400)),
            allow_disable: false,
        }),
        OrganizationEvent::PermissionGroupCreated(GroupCreated {
            group_id: uid(10),
            name: "Support".into(),
            permissions: [Permission::UsersRead, Permission::VerifyManage]
                .into_iter()
                .collect(),
        }),
        OrganizationEvent::PermissionGroupUpdated(GroupUpdated {
            group_id: uid(10),
            name: Some("Support desk".into()),
            permissions: None,
        }),
        OrganizationEvent::PermissionGroupDeleted { group_id: uid(10) },
        OrganizationEvent::SubuserInvited(SubuserInvited {
            invitation_id: uid(20),
            email: sealed("invitee"),
            email_digest: "ee".repeat(32),
            permission_group_ids: [uid(10)].into_iter().collect(),
            token_digest: Digest("aa".repeat(32)),
            expires_at: t(7 * 86_400),
        }),
        OrganizationEvent::InvitationResent(InvitationResent {
            invitation_id: uid(20),
            token_digest: Digest("bb".repeat(32)),
            expires_at: t(8 * 86_400),
        }),
        OrganizationEvent::InvitationRevoked {
            invitation_id: uid(20),
        },
        OrganizationEvent::InvitationAccepted(InvitationAccepted {
            invitation_id: uid(21),
            user_id: uid(3),
            permission_group_ids: [uid(10)].into_iter().collect(),
        }),
        OrganizationEvent::MemberGroupsChanged(MemberGroupsChanged {
            user_id: uid(3),
            permission_group_ids: [uid(10), uid(11)].into_iter().collect(),
        }),
        OrganizationEvent::MemberRemoved { user_id: uid(3) },
    ];
    let encoded: Vec<_> = events.iter().map(|e| encode(e).unwrap()).collect();
    let types: Vec<&str> = encoded.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, OrganizationEvent::event_types());
    for e in &encoded {
        insta::assert_json_snapshot!(format!("{}.v{}", e.event_type, e.schema_version), e.payload);
        let back: OrganizationEvent =
            crate::event::decode(&e.event_type, e.schema_version, &e.payload).unwrap();
        assert_eq!(encode(&back).unwrap().payload, e.payload);
    }
}

#[test]
fn the_billing_currency_cannot_change() {
    let org = given(&[created()]);
    let update = |currency: &str| OrganizationCommand::Update {
        company_name: None,
        address: None,
        contact: None,
        billing_currency: Some(currency.into()),
    };
    let now = Ctx { now: t(10) };
    assert_eq!(
        decide(&org, update("EUR"), &now),
        Err(OrganizationError::BillingCurrencyImmutable)
    );
    assert_eq!(decide(&org, update("USD"), &now), Ok(vec![]));
}

#[test]
fn five_failed_pin_checks_in_fifteen_minutes_throttle_the_sixth() {
    let mut org = given(&[
        created(),
        OrganizationEvent::PortOutPinSet {
            pin_hash: sealed("pin"),
        },
    ]);
    for i in 0..5 {
        let events = decide(
            &org,
            OrganizationCommand::CheckSecret {
                secret: OrgSecret::PortOutPin,
                valid: false,
            },
            &Ctx { now: t(100 + i) },
        )
        .unwrap();
        for e in &events {
            org.apply(e, t(100 + i));
        }
    }
    let sixth = decide(
        &org,
        OrganizationCommand::CheckSecret {
            secret: OrgSecret::PortOutPin,
            valid: true,
        },
        &Ctx { now: t(200) },
    );
    assert!(matches!(
        sixth,
        Err(OrganizationError::TooManyChecks { .. })
    ));
    // The passphrase has its own allowance.
    assert!(check_secret_check_allowed(&org, OrgSecret::SecurityPassphrase, t(200)).is_ok());
    // Fifteen minutes after the first failure, checks are allowed again.
    assert!(check_secret_check_allowed(&org, OrgSecret::PortOutPin, t(100 + 15 * 60)).is_ok());
}

#[test]
fn setting_a_secret_needs_the_current_password() {
    let org = given(&[created()]);
    let cmd = |ok| OrganizationCommand::SetSecret {
        secret: OrgSecret::SecurityPassphrase,
        current_password_ok: ok,
        hash: sealed("pp"),
    };
    let now = Ctx { now: t(10) };
    assert_eq!(
        decide(&org, cmd(false), &now),
        Err(OrganizationError::WrongPassword)
    );
    assert_eq!(
        decide(&org, cmd(true), &now),
        Ok(vec![OrganizationEvent::SecurityPassphraseSet {
            passphrase_hash: sealed("pp")
        }])
    );
}

#[test]
fn the_two_factor_policy_says_when_set_up_is_required_and_skippable() {
    let policy = TwoFactorPolicy {
        required: true,
        enforce_after: Some(t(100)),
        allow_disable: true,
    };
    assert_eq!(policy.setup_required(t(99)), Some(false));
    assert_eq!(policy.setup_required(t(100)), Some(true));
    assert!(!policy.disable_allowed(), "never while required");
    assert_eq!(TwoFactorPolicy::default().setup_required(t(0)), None);
    let org = given(&[created()]);
    let same = decide(
        &org,
        OrganizationCommand::SetTwoFactorPolicy(TwoFactorPolicy::default()),
        &Ctx { now: t(1) },
    );
    assert_eq!(same, Ok(vec![]), "an unchanged policy writes nothing");
}

// ---- the team: groups, invitations, members ------------------------------------------

fn perms(list: &[Permission]) -> PermissionSet {
    list.iter().copied().collect()
}

/// An organization whose owner is uid(1), with group uid(10) = {users:manage} and
/// group uid(11) = {audit:read}, and sub-user uid(3) in group uid(10).
fn team_org() -> Organization {
    given(&[
        created(),
        OrganizationEvent::PermissionGroupCreated(GroupCreated {
            group_id: uid(10),
            name: "Admins".into(),
            permissions: perms(&[Permission::UsersManage]),
        }),
        OrganizationEvent::PermissionGroupCreated(GroupCreated {
            group_id: uid(11),
            name: "Auditors".into(),
            permissions: perms(&[Permission::AuditRead]),
        }),
        OrganizationEvent::InvitationAccepted(InvitationAccepted {
            invitation_id: uid(20),
            user_id: uid(3),
            permission_group_ids: [uid(10)].into_iter().collect(),
        }),
    ])
}

fn team(org: &Organization, cmd: TeamCommand) -> Result<Vec<OrganizationEvent>, OrganizationError> {
    decide(org, OrganizationCommand::Team(cmd), &Ctx { now: t(100) })
}

fn actor(org: &Organization, user: Uuid) -> Actor {
    org.actor(user).unwrap()
}

#[test]
fn the_owner_holds_everything_and_a_sub_user_their_groups() {
    let org = team_org();
    assert_eq!(actor(&org, uid(1)).permissions, PermissionSet::all());
    let sub = actor(&org, uid(3)).permissions;
    assert!(sub.allows(Permission::UsersManage));
    assert!(sub.allows(Permission::UsersRead));
    assert!(!sub.allows(Permission::AuditRead));
    assert!(org.actor(uid(99)).is_none(), "strangers are no one here");
}

#[test]
fn a_sub_user_cannot_grant_what_they_do_not_hold() {
    let org = team_org();
    let sub = actor(&org, uid(3));
    // Not by creating a group…
    let create = team(
        &org,
        TeamCommand::CreateGroup {
            group_id: uid(12),
            name: "Sneaky".into(),
            permissions: perms(&[Permission::AuditRead]),
            actor: sub.clone(),
        },
    );
    assert_eq!(
        create,
        Err(OrganizationError::Team(TeamError::PermissionNotHeld {
            permission: Permission::AuditRead
        }))
    );
    // …nor by joining themselves to a group that has it…
    let join = team(
        &org,
        TeamCommand::SetMemberGroups {
            user_id: uid(3),
            group_ids: [uid(10), uid(11)].into_iter().collect(),
            actor: sub.clone(),
        },
    );
    assert!(matches!(
        join,
        Err(OrganizationError::Team(TeamError::PermissionNotHeld { .. }))
    ));
    // …nor by widening a group, nor by inviting someone into it.
    let widen = team(
        &org,
        TeamCommand::UpdateGroup {
            group_id: uid(10),
            name: None,
            permissions: Some(perms(&[Permission::UsersManage, Permission::AuditRead])),
            actor: sub.clone(),
        },
    );
    assert!(widen.is_err());
    let invite = team(
        &org,
        TeamCommand::Invite {
            invitation: SubuserInvited {
                invitation_id: uid(21),
                email: sealed("x"),
                email_digest: "x".into(),
                permission_group_ids: [uid(11)].into_iter().collect(),
                token_digest: Digest("t".into()),
                expires_at: t(1000),
            },
            actor: sub,
        },
    );
    assert!(invite.is_err());
    // The owner can do all of it.
    let owner = actor(&org, uid(1));
    assert!(team(
        &org,
        TeamCommand::SetMemberGroups {
            user_id: uid(3),
            group_ids: [uid(10), uid(11)].into_iter().collect(),
            actor: owner,
        },
    )
    .is_ok());
}

#[test]
fn nobody_acts_on_the_owner() {
    let org = team_org();
    for who in [uid(1), uid(3)] {
        let remove = team(
            &org,
            TeamCommand::RemoveMember {
                user_id: uid(1),
                actor: actor(&org, who),
            },
        );
        assert_eq!(
            remove,
            Err(OrganizationError::Team(TeamError::CannotActOnOwner))
        );
    }
}

#[test]
fn an_invitation_is_accepted_once_with_its_current_token_before_it_expires() {
    let org = given(&[
        created(),
        OrganizationEvent::SubuserInvited(SubuserInvited {
            invitation_id: uid(20),
            email: sealed("invitee"),
            email_digest: "e".into(),
            permission_group_ids: Default::default(),
            token_digest: Digest("old".into()),
            expires_at: t(7 * 86_400),
        }),
        OrganizationEvent::InvitationResent(InvitationResent {
            invitation_id: uid(20),
            token_digest: Digest("new".into()),
            expires_at: t(7 * 86_400),
        }),
    ]);
    let accept = |token: &str, at: i64| {
        decide(
            &org,
            OrganizationCommand::Team(TeamCommand::Accept {
                invitation_id: uid(20),
                token_digest: Digest(token.into()),
                user_id: uid(3),
            }),
            &Ctx { now: t(at) },
        )
    };
    let invalid = Err(OrganizationError::Team(TeamError::InvitationInvalid));
    assert_eq!(
        accept("old", 10),
        invalid,
        "a resent invitation voids the old token"
    );
    assert_eq!(accept("new", 8 * 86_400), invalid, "expired");
    let events = accept("new", 10).unwrap();
    let mut after = org.clone();
    for e in &events {
        after.apply(e, t(10));
    }
    assert!(after.team.members.contains_key(&uid(3)));
    let again = decide(
        &after,
        OrganizationCommand::Team(TeamCommand::Accept {
            invitation_id: uid(20),
            token_digest: Digest("new".into()),
            user_id: uid(4),
        }),
        &Ctx { now: t(11) },
    );
    assert_eq!(again, invalid, "single use");
}

#[test]
fn a_pending_address_cannot_be_invited_twice_but_an_expired_one_can() {
    let invited = OrganizationEvent::SubuserInvited(SubuserInvited {
        invitation_id: uid(20),
        email: sealed("invitee"),
        email_digest: "same".into(),
        permission_group_ids: Default::default(),
        token_digest: Digest("a".into()),
        expires_at: t(1000),
    });
    let org = given(&[created(), invited]);
    let again = |at: i64| {
        decide(
            &org,
            OrganizationCommand::Team(TeamCommand::Invite {
                invitation: SubuserInvited {
                    invitation_id: uid(21),
                    email: sealed("invitee"),
                    email_digest: "same".into(),
                    permission_group_ids: Default::default(),
                    token_digest: Digest("b".into()),
                    expires_at: t(at + 1000),
                },
                actor: org.actor(uid(1)).unwrap(),
            }),
            &Ctx { now: t(at) },
        )
    };
    assert_eq!(
        again(10),
        Err(OrganizationError::Team(TeamError::AlreadyInvited))
    );
    assert!(again(2000).is_ok());
}

#[test]
fn deleting_a_group_takes_its_permissions_from_its_members() {
    let mut org = team_org();
    org.apply(
        &OrganizationEvent::PermissionGroupDeleted { group_id: uid(10) },
        t(50),
    );
    assert!(!actor(&org, uid(3))
        .permissions
        .allows(Permission::UsersRead));
}
