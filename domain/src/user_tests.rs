//! Given events → when a command → then events or an error; and every event type's JSON,
//! pinned by insta.

use chrono::{TimeZone, Utc};

use super::*;
use crate::event::encode;

fn sealed(tag: &str) -> Sealed {
    Sealed {
        key_id: "user-0190a000-0000-7000-8000-000000000001".into(),
        nonce: format!("nonce-{tag}"),
        ciphertext: format!("ciphertext-{tag}"),
    }
}

fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_780_000_000 + secs, 0)
        .single()
        .unwrap_or_default()
}

fn ctx(secs: i64) -> Ctx {
    Ctx { now: t(secs) }
}

fn uid(n: u128) -> Uuid {
    Uuid::from_u128(0x0190a000_0000_7000_8000_000000000000 + n)
}

fn registered() -> UserEvent {
    UserEvent::Registered {
        user_id: uid(1),
        organization_id: uid(2),
        role: Role::OrganizationOwner,
        email: sealed("email"),
        first_name: sealed("first"),
        last_name: sealed("last"),
        password_hash: sealed("hash"),
    }
}

fn given(events: &[UserEvent]) -> User {
    let mut user = User::default();
    for (i, e) in events.iter().enumerate() {
        user.apply(e, t(i as i64));
    }
    user
}

fn sign_in(ok: bool, session: u128) -> UserCommand {
    UserCommand::SignIn {
        password_ok: ok,
        challenge_id: uid(900 + session),
        session_id: uid(session),
        token_digest: Digest("ab".repeat(32)),
        session_lifetime: Duration::hours(24),
        idle_timeout: Duration::hours(1),
        setup_only: false,
    }
}

#[test]
fn every_user_event_type_is_pinned() {
    let events = [
        registered(),
        UserEvent::SessionStarted {
            session_id: uid(10),
            token_digest: Digest("ab".repeat(32)),
            expires_at: t(86_400),
            idle_timeout_secs: 3600,
            scope: None,
        },
        UserEvent::SignInFailed {
            reason: "wrong_password".into(),
        },
        UserEvent::SessionEnded {
            session_id: uid(10),
            reason: SessionEndReason::SignedOut,
        },
        UserEvent::ProfileUpdated {
            first_name: Some(sealed("first2")),
            last_name: None,
            phone_number: Some(sealed("phone")),
        },
        UserEvent::EmailChanged {
            email: sealed("email2"),
        },
        UserEvent::PasswordChanged {
            password_hash: sealed("hash2"),
        },
        UserEvent::TwoFactorEnrollmentStarted(crate::two_factor::EnrollmentStarted {
            enrollment_id: uid(20),
            method: crate::two_factor::Method::Totp,
            totp_secret: Some(sealed("totp")),
            phone_number: None,
            expires_at: t(600),
            verified_with: None,
            totp_step: None,
        }),
        UserEvent::TwoFactorEnrollmentFailed {
            enrollment_id: uid(20),
        },
        UserEvent::TwoFactorEnabled(crate::two_factor::Enabled {
            enrollment_id: uid(20),
            method: crate::two_factor::Method::Totp,
            totp_step: Some(59_333_333),
            backup_codes: sealed("backup"),
            backup_code_count: 10,
        }),
        UserEvent::TwoFactorCodeSent(crate::two_factor::CodeSent {
            purpose: crate::two_factor::CodePurpose::SignIn,
            target_id: uid(30),
            channel: crate::two_factor::Method::Sms,
            code_digest: Digest("cd".repeat(32)),
            expires_at: t(300),
        }),
        UserEvent::TwoFactorMethodChanged(crate::two_factor::MethodChanged {
            enrollment_id: uid(21),
            method: crate::two_factor::Method::Call,
            totp_step: None,
        }),
        UserEvent::BackupCodesRegenerated {
            factor: crate::two_factor::Factor::Totp,
            totp_step: Some(59_333_334),
            backup_codes: sealed("backup2"),
            backup_code_count: 10,
        },
        UserEvent::TwoFactorChallengeStarted {
            challenge_id: uid(30),
            expires_at: t(600),
        },
        UserEvent::TwoFactorChallengeFailed {
            challenge_id: uid(30),
            factor: crate::two_factor::Factor::BackupCode,
        },
        UserEvent::TwoFactorChallengePassed(crate::two_factor::ChallengePassed {
            challenge_id: uid(30),
            factor: crate::two_factor::Factor::Totp,
            totp_step: Some(59_333_335),
        }),
        UserEvent::BackupCodeConsumed {
            index: 3,
            remaining: 9,
        },
        UserEvent::BackupCodesLow { remaining: 3 },
        UserEvent::TwoFactorStepUpFailed {
            factor: crate::two_factor::Factor::Totp,
        },
        UserEvent::TwoFactorDisabled {
            factor: crate::two_factor::Factor::BackupCode,
            totp_step: None,
        },
        UserEvent::TwoFactorReset {
            reason: TwoFactorResetReason::Administrator,
        },
        UserEvent::EmailCodeSent(crate::two_factor::EmailCodeSent {
            code_digest: Digest("ec".repeat(32)),
            expires_at: t(300),
        }),
        UserEvent::RecoveryCodeSent(crate::two_factor::RecoveryCodeSent {
            challenge_id: uid(30),
            code_digest: Digest("fe".repeat(32)),
            expires_at: t(300),
        }),
        UserEvent::TwoFactorUnblocked {},
        UserEvent::Disabled {},
        UserEvent::Enabled {},
        UserEvent::Removed {},
        UserEvent::Forgotten {},
        UserEvent::ApiKeyCreated {
            key_id: uid(40),
            name: "CI deploys".into(),
            prefix: "wdn_k_AbCdEf".into(),
            key_digest: Digest("ab".repeat(32)),
        },
        UserEvent::ApiKeyRotated {
            key_id: uid(40),
            prefix: "wdn_k_GhIjKl".into(),
            key_digest: Digest("ef".repeat(32)),
        },
        UserEvent::ApiKeyRevoked { key_id: uid(40) },
    ];
    let encoded: Vec<_> = events
        .iter()
        .map(|e| encode(e).map(|x| (x.event_type, x.schema_version, x.payload)))
        .collect::<Result<_, _>>()
        .unwrap();
    let types: Vec<&str> = encoded.iter().map(|(t, _, _)| t.as_str()).collect();
    assert_eq!(
        types,
        UserEvent::event_types(),
        "every variant is listed and pinned"
    );
    for (event_type, version, payload) in &encoded {
        insta::assert_json_snapshot!(format!("{event_type}.v{version}"), payload);
        let back: UserEvent = crate::event::decode(event_type, *version, payload).unwrap();
        assert_eq!(encode(&back).unwrap().payload, *payload);
    }
}

#[test]
fn a_user_registers_once() {
    let cmd = UserCommand::Register {
        user_id: uid(1),
        organization_id: uid(2),
        role: Role::OrganizationOwner,
        email: sealed("email"),
        first_name: sealed("first"),
        last_name: sealed("last"),
        password_hash: sealed("hash"),
    };
    assert_eq!(
        decide(&User::default(), cmd.clone(), &ctx(0)),
        Ok(vec![registered()])
    );
    assert_eq!(
        decide(&given(&[registered()]), cmd, &ctx(0)),
        Err(UserError::AlreadyRegistered)
    );
}

#[test]
fn commands_on_a_missing_user_are_refused() {
    assert_eq!(
        decide(&User::default(), sign_in(true, 10), &ctx(0)),
        Err(UserError::NotFound)
    );
}

#[test]
fn a_wrong_password_is_recorded_and_five_in_a_minute_throttle() {
    let mut user = given(&[registered()]);
    for i in 0..5 {
        let events = decide(&user, sign_in(false, 10), &ctx(10 + i)).unwrap();
        assert!(matches!(
            events.as_slice(),
            [UserEvent::SignInFailed { .. }]
        ));
        for e in &events {
            user.apply(e, t(10 + i));
        }
    }
    // The sixth try, even with the right password, waits.
    assert!(matches!(
        decide(&user, sign_in(true, 11), &ctx(20)),
        Err(UserError::TooManySignInAttempts { retry_after_secs }) if retry_after_secs > 0 && retry_after_secs <= 60
    ));
    // A minute after the first failure, it works again.
    let events = decide(&user, sign_in(true, 11), &ctx(71)).unwrap();
    assert!(matches!(
        events.as_slice(),
        [UserEvent::SessionStarted { .. }]
    ));
}

#[test]
fn changing_the_password_ends_every_other_session() {
    let started = |id| UserEvent::SessionStarted {
        session_id: uid(id),
        token_digest: Digest(format!("{id}")),
        expires_at: t(86_400),
        idle_timeout_secs: 3600,
        scope: None,
    };
    let user = given(&[registered(), started(10), started(11), started(12)]);
    let events = decide(
        &user,
        UserCommand::ChangePassword {
            current_password_ok: true,
            password_hash: sealed("new"),
            keep_session: Some(uid(11)),
        },
        &ctx(100),
    )
    .unwrap();
    assert_eq!(
        events,
        vec![
            UserEvent::PasswordChanged {
                password_hash: sealed("new")
            },
            UserEvent::SessionEnded {
                session_id: uid(10),
                reason: SessionEndReason::PasswordChanged
            },
            UserEvent::SessionEnded {
                session_id: uid(12),
                reason: SessionEndReason::PasswordChanged
            },
        ]
    );
    let refused = decide(
        &user,
        UserCommand::ChangePassword {
            current_password_ok: false,
            password_hash: sealed("new"),
            keep_session: None,
        },
        &ctx(100),
    );
    assert_eq!(refused, Err(UserError::WrongPassword));
}

#[test]
fn signing_out_an_unknown_session_is_refused() {
    let user = given(&[registered()]);
    assert_eq!(
        decide(
            &user,
            UserCommand::SignOut {
                session_id: uid(99)
            },
            &ctx(0)
        ),
        Err(UserError::SessionNotFound)
    );
}

#[test]
fn an_empty_profile_update_writes_nothing() {
    let user = given(&[registered()]);
    let cmd = UserCommand::UpdateProfile {
        first_name: None,
        last_name: None,
        phone_number: None,
    };
    assert_eq!(decide(&user, cmd, &ctx(0)), Ok(vec![]));
}

#[test]
fn forgetting_removes_once_forgets_once_and_nothing_works_after() {
    let user = given(&[registered()]);
    assert_eq!(
        decide(&user, UserCommand::Forget, &ctx(10)).unwrap(),
        vec![UserEvent::Removed {}, UserEvent::Forgotten {}]
    );
    let removed = given(&[registered(), UserEvent::Removed {}]);
    assert_eq!(
        decide(&removed, UserCommand::Forget, &ctx(10)).unwrap(),
        vec![UserEvent::Forgotten {}]
    );
    let forgotten = given(&[registered(), UserEvent::Removed {}, UserEvent::Forgotten {}]);
    assert!(forgotten.forgotten && forgotten.email.is_none());
    assert_eq!(forgotten.status, UserStatus::Removed);
    assert_eq!(
        decide(&forgotten, UserCommand::Forget, &ctx(10)).unwrap(),
        vec![]
    );
    assert_eq!(
        decide(&forgotten, UserCommand::Enable, &ctx(10)),
        Err(UserError::Inactive)
    );
    assert_eq!(
        decide(&User::default(), UserCommand::Forget, &ctx(10)),
        Err(UserError::NotFound)
    );
}
