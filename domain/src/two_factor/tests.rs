//! Given/when/then for two-factor decisions: one-time TOTP steps and backup codes, the
//! challenge's limits, and enrollment.

use chrono::{DateTime, Duration, TimeZone, Utc};
use uuid::Uuid;

use crate::aggregate::{Aggregate, Ctx};
use crate::sealed::{Digest, Sealed};
use crate::two_factor::*;
use crate::user::{decide, NewSession, Role, User, UserCommand, UserError, UserEvent};

fn sealed(tag: &str) -> Sealed {
    Sealed {
        key_id: "user-x".into(),
        nonce: tag.into(),
        ciphertext: tag.into(),
    }
}

fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_780_000_000 + secs, 0).single().unwrap()
}

fn uid(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

fn run(user: &mut User, cmd: UserCommand, at: i64) -> Result<Vec<UserEvent>, UserError> {
    let events = decide(user, cmd, &Ctx { now: t(at) })?;
    for e in &events {
        user.apply(e, t(at));
    }
    Ok(events)
}

fn session(n: u128) -> NewSession {
    NewSession {
        session_id: uid(1000 + n),
        token_digest: Digest(format!("digest-{n}")),
        lifetime: Duration::hours(24),
        idle_timeout: Duration::hours(1),
    }
}

/// A user with TOTP enabled at step 100 and 10 backup codes.
fn enrolled() -> User {
    let mut user = User::default();
    user.apply(
        &UserEvent::Registered {
            user_id: uid(1),
            organization_id: uid(2),
            role: Role::OrganizationOwner,
            email: sealed("e"),
            first_name: sealed("f"),
            last_name: sealed("l"),
            password_hash: sealed("p"),
        },
        t(0),
    );
    run(
        &mut user,
        UserCommand::StartTotpEnrollment {
            enrollment_id: uid(5),
            totp_secret: sealed("s"),
            proof: None,
        },
        1,
    )
    .unwrap();
    run(
        &mut user,
        UserCommand::EnableTwoFactor {
            enrollment_id: uid(5),
            proof: Proof::Totp(Some(100)),
            backup_codes: sealed("b"),
            backup_code_count: 10,
        },
        2,
    )
    .unwrap();
    user
}

fn challenge(user: &mut User, id: u128, at: i64) {
    let events = run(
        user,
        UserCommand::SignIn {
            password_ok: true,
            challenge_id: uid(id),
            session_id: uid(9999),
            token_digest: Digest("never".into()),
            session_lifetime: Duration::hours(24),
            idle_timeout: Duration::hours(1),
            setup_only: false,
        },
        at,
    )
    .unwrap();
    assert!(
        matches!(
            events.as_slice(),
            [UserEvent::TwoFactorChallengeStarted { .. }]
        ),
        "no session before the second factor"
    );
}

#[test]
fn enabling_needs_a_fresh_code_and_gives_backup_codes() {
    let user = enrolled();
    assert!(user.two_factor.enabled);
    assert_eq!(user.two_factor.method, Some(Method::Totp));
    assert_eq!(user.two_factor.totp_secret, Some(sealed("s")));
    assert_eq!(user.two_factor.backup_codes_remaining(), 10);
    assert_eq!(user.two_factor.last_totp_step, Some(100));
}

#[test]
fn a_wrong_confirmation_code_is_recorded_and_five_kill_the_enrollment() {
    let mut user = enrolled();
    user.two_factor = TwoFactor::default();
    run(
        &mut user,
        UserCommand::StartTotpEnrollment {
            enrollment_id: uid(6),
            totp_secret: sealed("s2"),
            proof: None,
        },
        10,
    )
    .unwrap();
    let confirm = |step| UserCommand::EnableTwoFactor {
        enrollment_id: uid(6),
        proof: Proof::Totp(step),
        backup_codes: sealed("b"),
        backup_code_count: 10,
    };
    for i in 0..5 {
        let events = run(&mut user, confirm(None), 11 + i).unwrap();
        assert!(matches!(
            events.as_slice(),
            [UserEvent::TwoFactorEnrollmentFailed { .. }]
        ));
    }
    assert_eq!(
        run(&mut user, confirm(Some(200)), 20),
        Err(TwoFactorError::EnrollmentExpired.into())
    );
}

#[test]
fn an_enrollment_expires_after_ten_minutes() {
    let mut user = enrolled();
    user.two_factor = TwoFactor::default();
    run(
        &mut user,
        UserCommand::StartTotpEnrollment {
            enrollment_id: uid(7),
            totp_secret: sealed("s"),
            proof: None,
        },
        0,
    )
    .unwrap();
    let confirm = UserCommand::EnableTwoFactor {
        enrollment_id: uid(7),
        proof: Proof::Totp(Some(5)),
        backup_codes: sealed("b"),
        backup_code_count: 10,
    };
    assert_eq!(
        run(&mut user, confirm, 601),
        Err(TwoFactorError::EnrollmentExpired.into())
    );
}

#[test]
fn a_totp_step_is_accepted_once_across_confirmation_and_sign_in() {
    let mut user = enrolled();
    challenge(&mut user, 40, 10);
    // The step that confirmed the enrollment is spent.
    let events = run(
        &mut user,
        UserCommand::VerifyTotp {
            challenge_id: uid(40),
            totp_step: Some(100),
            session: session(1),
        },
        11,
    )
    .unwrap();
    assert!(matches!(
        events.as_slice(),
        [UserEvent::TwoFactorChallengeFailed { .. }]
    ));
    let events = run(
        &mut user,
        UserCommand::VerifyTotp {
            challenge_id: uid(40),
            totp_step: Some(101),
            session: session(1),
        },
        12,
    )
    .unwrap();
    assert!(matches!(
        events.as_slice(),
        [
            UserEvent::TwoFactorChallengePassed(_),
            UserEvent::SessionStarted { .. }
        ]
    ));
    // The same code again, on a new challenge: refused.
    challenge(&mut user, 41, 13);
    let events = run(
        &mut user,
        UserCommand::VerifyTotp {
            challenge_id: uid(41),
            totp_step: Some(101),
            session: session(2),
        },
        14,
    )
    .unwrap();
    assert!(matches!(
        events.as_slice(),
        [UserEvent::TwoFactorChallengeFailed { .. }]
    ));
    // A passed challenge cannot be answered again.
    assert_eq!(
        run(
            &mut user,
            UserCommand::VerifyTotp {
                challenge_id: uid(40),
                totp_step: Some(102),
                session: session(3)
            },
            15
        ),
        Err(TwoFactorError::ChallengeNotFound.into())
    );
}

#[test]
fn each_backup_code_works_exactly_once_and_few_left_is_announced() {
    let mut user = enrolled();
    for index in 0..10u32 {
        challenge(&mut user, 100 + u128::from(index), 10);
        let events = run(
            &mut user,
            UserCommand::ConsumeBackupCode {
                challenge_id: uid(100 + u128::from(index)),
                index: Some(index),
                session: session(index.into()),
            },
            11,
        )
        .unwrap();
        let remaining = 9 - index;
        assert!(events.contains(&UserEvent::BackupCodeConsumed { index, remaining }));
        assert_eq!(
            events.contains(&UserEvent::BackupCodesLow { remaining }),
            remaining <= BACKUP_CODES_LOW
        );
    }
    challenge(&mut user, 200, 12);
    let events = run(
        &mut user,
        UserCommand::ConsumeBackupCode {
            challenge_id: uid(200),
            index: Some(4),
            session: session(50),
        },
        13,
    )
    .unwrap();
    assert!(
        matches!(
            events.as_slice(),
            [UserEvent::TwoFactorChallengeFailed { .. }]
        ),
        "a used code never works again"
    );
}

#[test]
fn a_challenge_takes_five_wrong_codes_and_lives_ten_minutes() {
    let mut user = enrolled();
    challenge(&mut user, 50, 0);
    for i in 0..5 {
        run(
            &mut user,
            UserCommand::VerifyTotp {
                challenge_id: uid(50),
                totp_step: None,
                session: session(1),
            },
            1 + i,
        )
        .unwrap();
    }
    assert_eq!(
        run(
            &mut user,
            UserCommand::VerifyTotp {
                challenge_id: uid(50),
                totp_step: Some(500),
                session: session(1)
            },
            7
        ),
        Err(TwoFactorError::ChallengeLocked.into())
    );
    challenge(&mut user, 51, 10);
    assert_eq!(
        run(
            &mut user,
            UserCommand::VerifyTotp {
                challenge_id: uid(51),
                totp_step: Some(500),
                session: session(1)
            },
            611
        ),
        Err(TwoFactorError::ChallengeExpired.into())
    );
}

#[test]
fn a_hundred_consecutive_failures_block_second_factor_sign_in_across_challenges() {
    let mut user = enrolled();
    for c in 0..20u128 {
        challenge(&mut user, 300 + c, 0);
        for _ in 0..5 {
            run(
                &mut user,
                UserCommand::ConsumeBackupCode {
                    challenge_id: uid(300 + c),
                    index: None,
                    session: session(1),
                },
                1,
            )
            .unwrap();
        }
    }
    assert_eq!(
        user.two_factor.consecutive_failures,
        CONSECUTIVE_FAILURE_LIMIT
    );
    let blocked = decide(
        &user,
        UserCommand::SignIn {
            password_ok: true,
            challenge_id: uid(999),
            session_id: uid(998),
            token_digest: Digest("x".into()),
            session_lifetime: Duration::hours(1),
            idle_timeout: Duration::hours(1),
            setup_only: false,
        },
        &Ctx { now: t(5) },
    );
    assert_eq!(blocked, Err(TwoFactorError::SecondFactorBlocked.into()));
}

#[test]
fn regenerating_backup_codes_needs_a_current_factor_and_voids_the_old_set() {
    let mut user = enrolled();
    challenge(&mut user, 60, 0);
    run(
        &mut user,
        UserCommand::ConsumeBackupCode {
            challenge_id: uid(60),
            index: Some(0),
            session: session(1),
        },
        1,
    )
    .unwrap();
    assert_eq!(
        run(
            &mut user,
            UserCommand::RegenerateBackupCodes {
                proof: Proof::Totp(Some(100)),
                backup_codes: sealed("n"),
                backup_code_count: 10
            },
            2
        ),
        Ok(vec![UserEvent::TwoFactorStepUpFailed {
            factor: Factor::Totp
        }]),
        "a spent step is no proof"
    );
    run(
        &mut user,
        UserCommand::RegenerateBackupCodes {
            proof: Proof::Totp(Some(120)),
            backup_codes: sealed("n"),
            backup_code_count: 10,
        },
        3,
    )
    .unwrap();
    assert_eq!(user.two_factor.backup_codes_remaining(), 10);
    assert_eq!(user.two_factor.backup_codes, Some(sealed("n")));
}

fn phone_user(method: Method) -> User {
    let mut user = enrolled();
    user.two_factor = TwoFactor::default();
    run(
        &mut user,
        UserCommand::StartPhoneEnrollment {
            enrollment_id: uid(70),
            method,
            phone_number: sealed("phone"),
            code_digest: Digest("d1".into()),
            proof: None,
        },
        0,
    )
    .unwrap();
    run(
        &mut user,
        UserCommand::EnableTwoFactor {
            enrollment_id: uid(70),
            proof: Proof::Code(Digest("d1".into())),
            backup_codes: sealed("b"),
            backup_code_count: 10,
        },
        10,
    )
    .unwrap();
    user
}

#[test]
fn an_sms_enrollment_is_confirmed_with_the_code_sent_to_it() {
    let user = phone_user(Method::Sms);
    assert!(user.two_factor.enabled);
    assert_eq!(user.two_factor.method, Some(Method::Sms));
    assert_eq!(user.two_factor.phone_number, Some(sealed("phone")));
    assert_eq!(user.two_factor.code_sends.len(), 1);
}

#[test]
fn a_sent_code_works_for_its_own_challenge_within_five_minutes() {
    let mut user = phone_user(Method::Call);
    challenge(&mut user, 80, 100);
    challenge(&mut user, 81, 100);
    let send = |id, digest: &str| UserCommand::SendTwoFactorCode {
        purpose: CodePurpose::SignIn,
        target_id: uid(id),
        channel: Method::Sms,
        code_digest: Digest(digest.into()),
    };
    run(&mut user, send(80, "c80"), 101).unwrap();
    run(&mut user, send(81, "c81"), 101).unwrap();
    let answer = |id, digest: &str, n| UserCommand::VerifySentCode {
        challenge_id: uid(id),
        code_digest: Digest(digest.into()),
        session: session(n),
    };
    // Another challenge's code is no good here.
    let events = run(&mut user, answer(80, "c81", 1), 102).unwrap();
    assert!(matches!(
        events.as_slice(),
        [UserEvent::TwoFactorChallengeFailed { .. }]
    ));
    // Past five minutes, the code is dead.
    let events = run(&mut user, answer(81, "c81", 2), 101 + CODE_TTL_SECS).unwrap();
    assert!(matches!(
        events.as_slice(),
        [UserEvent::TwoFactorChallengeFailed { .. }]
    ));
    // A resend replaces the code but keeps the failures.
    run(&mut user, send(80, "c80b"), 103).unwrap();
    assert_eq!(
        user.two_factor.challenges.get(&uid(80)).map(|c| c.failures),
        Some(1)
    );
    let events = run(&mut user, answer(80, "c80", 3), 104).unwrap();
    assert!(
        matches!(
            events.as_slice(),
            [UserEvent::TwoFactorChallengeFailed { .. }]
        ),
        "the replaced code"
    );
    let events = run(&mut user, answer(80, "c80b", 4), 105).unwrap();
    assert!(matches!(
        events.as_slice(),
        [
            UserEvent::TwoFactorChallengePassed(_),
            UserEvent::SessionStarted { .. }
        ]
    ));
}

#[test]
fn ten_code_sends_a_day_then_wait() {
    let mut user = phone_user(Method::Sms);
    challenge(&mut user, 90, 0);
    // One send already happened at enrollment (t=0); nine more fill the day.
    for i in 0..9 {
        run(
            &mut user,
            UserCommand::SendTwoFactorCode {
                purpose: CodePurpose::SignIn,
                target_id: uid(90),
                channel: Method::Sms,
                code_digest: Digest(format!("c{i}")),
            },
            1 + i,
        )
        .unwrap();
    }
    let eleventh = UserCommand::SendTwoFactorCode {
        purpose: CodePurpose::StepUp,
        target_id: uid(91),
        channel: Method::Sms,
        code_digest: Digest("x".into()),
    };
    assert!(matches!(
        decide(&user, eleventh.clone(), &Ctx { now: t(20) }),
        Err(UserError::TwoFactor(
            TwoFactorError::TooManyCodeSends { .. }
        ))
    ));
    assert!(
        decide(
            &user,
            eleventh,
            &Ctx {
                now: t(24 * 3600 + 1)
            }
        )
        .is_ok(),
        "a day after the first send"
    );
}

#[test]
fn switching_method_needs_the_current_factor_and_keeps_the_backup_codes() {
    let mut user = enrolled();
    let start = |proof| UserCommand::StartPhoneEnrollment {
        enrollment_id: uid(95),
        method: Method::Sms,
        phone_number: sealed("new-phone"),
        code_digest: Digest("e1".into()),
        proof,
    };
    assert_eq!(
        run(&mut user, start(None), 10),
        Err(TwoFactorError::CurrentFactorRequired.into())
    );
    assert_eq!(
        run(&mut user, start(Some(Proof::Totp(Some(100)))), 10),
        Ok(vec![UserEvent::TwoFactorStepUpFailed {
            factor: Factor::Totp
        }]),
        "a spent step is a recorded failure, not a change"
    );
    run(&mut user, start(Some(Proof::Totp(Some(150)))), 10).unwrap();
    let events = run(
        &mut user,
        UserCommand::EnableTwoFactor {
            enrollment_id: uid(95),
            proof: Proof::Code(Digest("e1".into())),
            backup_codes: sealed("ignored"),
            backup_code_count: 10,
        },
        11,
    )
    .unwrap();
    assert!(matches!(
        events.as_slice(),
        [UserEvent::TwoFactorMethodChanged(_)]
    ));
    assert_eq!(user.two_factor.method, Some(Method::Sms));
    assert_eq!(
        user.two_factor.backup_codes,
        Some(sealed("b")),
        "backup codes kept"
    );
    assert_eq!(user.two_factor.phone_number, Some(sealed("new-phone")));
    assert_eq!(user.two_factor.totp_secret, None);
}

#[test]
fn wrong_current_factors_count_and_five_in_fifteen_minutes_are_refused() {
    let mut user = enrolled();
    let regenerate = |step| UserCommand::RegenerateBackupCodes {
        proof: Proof::Totp(step),
        backup_codes: sealed("n"),
        backup_code_count: 10,
    };
    for i in 0..5 {
        let events = run(&mut user, regenerate(None), 10 + i).unwrap();
        assert_eq!(
            events,
            vec![UserEvent::TwoFactorStepUpFailed {
                factor: Factor::Totp
            }]
        );
    }
    assert_eq!(
        user.two_factor.consecutive_failures, 5,
        "they count toward the 100 lock"
    );
    assert!(matches!(
        run(&mut user, regenerate(Some(500)), 20),
        Err(UserError::TwoFactor(
            TwoFactorError::TooManyStepUpFailures { .. }
        ))
    ));
    // Fifteen minutes after the first failure, a right factor works.
    run(&mut user, regenerate(Some(500)), 10 + STEP_UP_WINDOW_SECS).unwrap();
    assert_eq!(user.two_factor.backup_codes, Some(sealed("n")));
}
