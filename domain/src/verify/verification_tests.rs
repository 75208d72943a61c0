//! Verification decisions (one-time codes, five wrong tries, expiry, supersession, reports)
//! and the pinned JSON of every verification event type.

use chrono::TimeZone;

use super::*;
use crate::event::{decode, encode};

fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_780_000_000 + secs, 0)
        .single()
        .unwrap_or_default()
}

fn uid(n: u128) -> Uuid {
    Uuid::from_u128(0x0190a000_0000_7000_8000_000000000000 + n)
}

fn sent(custom_code: bool) -> Sent {
    Sent {
        verification_id: uid(10),
        organization_id: uid(2),
        profile_id: uid(1),
        channel: VerifyChannel::Sms,
        phone_number: Sealed {
            key_id: "verify_phone-digest".into(),
            nonce: "nonce".into(),
            ciphertext: "ciphertext".into(),
        },
        phone_digest: Digest("phone-digest".into()),
        code_digest: Digest("right".into()),
        custom_code,
        timeout_secs: 300,
        expires_at: t(300),
        extension: None,
    }
}

fn given(custom_code: bool) -> Verification {
    let mut v = Verification::default();
    v.apply(&VerificationEvent::Sent(sent(custom_code)), t(0));
    v
}

fn run(v: &mut Verification, cmd: VerificationCommand, now: i64) -> Vec<VerificationEvent> {
    let events = decide(v, cmd, &Ctx { now: t(now) }).unwrap();
    for e in &events {
        v.apply(e, t(now));
    }
    events
}

fn check(code: &str) -> VerificationCommand {
    VerificationCommand::Check {
        code_digest: Digest(code.into()),
    }
}

#[test]
fn every_verification_event_type_is_pinned() {
    let events = [
        VerificationEvent::Sent(sent(false)),
        VerificationEvent::Delivered {},
        VerificationEvent::DeliveryFailed {
            reason: "the sender is unavailable".into(),
        },
        VerificationEvent::Accepted { reported: false },
        VerificationEvent::CodeRejected { failed_attempts: 1 },
        VerificationEvent::Invalidated {
            reason: InvalidReason::Superseded,
            superseded_by: Some(uid(11)),
        },
        VerificationEvent::Expired {},
    ];
    let encoded: Vec<_> = events.iter().map(|e| encode(e).unwrap()).collect();
    let types: Vec<&str> = encoded.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, VerificationEvent::event_types());
    for e in &encoded {
        insta::assert_json_snapshot!(format!("{}.v{}", e.event_type, e.schema_version), e.payload);
        let back: VerificationEvent = decode(&e.event_type, e.schema_version, &e.payload).unwrap();
        assert_eq!(encode(&back).unwrap().payload, e.payload);
    }
}

#[test]
fn a_right_code_works_exactly_once() {
    let mut v = given(false);
    assert_eq!(
        run(&mut v, check("right"), 10),
        vec![VerificationEvent::Accepted { reported: false }]
    );
    assert_eq!(v.status, VerificationStatus::Accepted);
    assert!(run(&mut v, check("right"), 11).is_empty());
}

#[test]
fn five_wrong_codes_end_it() {
    let mut v = given(false);
    for i in 1..MAX_FAILED_ATTEMPTS {
        assert_eq!(
            run(&mut v, check("wrong"), i64::from(i)),
            vec![VerificationEvent::CodeRejected { failed_attempts: i }]
        );
    }
    let last = run(&mut v, check("wrong"), 9);
    assert_eq!(last.len(), 2);
    assert_eq!(v.status, VerificationStatus::Invalid);
    assert!(run(&mut v, check("right"), 10).is_empty(), "dead for good");
}

#[test]
fn a_late_code_expires_the_verification() {
    let mut v = given(false);
    assert_eq!(
        run(&mut v, check("right"), 300),
        vec![VerificationEvent::Expired {}]
    );
    assert_eq!(v.status, VerificationStatus::Expired);
    let mut v = given(false);
    assert!(run(&mut v, VerificationCommand::Expire, 299).is_empty());
    assert_eq!(
        run(&mut v, VerificationCommand::Expire, 301),
        vec![VerificationEvent::Expired {}]
    );
}

#[test]
fn a_newer_verification_supersedes_a_pending_one() {
    let mut v = given(false);
    run(&mut v, VerificationCommand::Supersede { by: uid(11) }, 5);
    assert_eq!(v.status, VerificationStatus::Invalid);
    assert!(run(&mut v, check("right"), 6).is_empty());
}

#[test]
fn only_custom_codes_may_be_reported() {
    let v = given(false);
    assert_eq!(
        decide(
            &v,
            VerificationCommand::Report { accepted: true },
            &Ctx { now: t(1) }
        ),
        Err(VerificationError::NotCustomCode)
    );
    let mut v = given(true);
    run(&mut v, VerificationCommand::Report { accepted: false }, 1);
    assert_eq!(v.status, VerificationStatus::Invalid);
}

#[test]
fn a_failed_delivery_is_an_error() {
    let mut v = given(false);
    run(
        &mut v,
        VerificationCommand::RecordDeliveryFailure {
            reason: "down".into(),
        },
        1,
    );
    assert_eq!(v.status, VerificationStatus::Error);
    assert!(run(&mut v, check("right"), 2).is_empty());
}
