//! Verify profile decisions (allowlist, send limits, daily spend) and the pinned JSON of
//! every verify profile and template event type.

use chrono::TimeZone;

use super::*;
use crate::event::{decode, encode};
use crate::verify::template::{TemplateText, VerifyTemplateEvent};

fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_780_000_000 + secs, 0)
        .single()
        .unwrap_or_default()
}

fn uid(n: u128) -> Uuid {
    Uuid::from_u128(0x0190a000_0000_7000_8000_000000000000 + n)
}

fn settings(limit: Option<i64>) -> ProfileSettings {
    ProfileSettings {
        name: "Acme sign-in".into(),
        webhook_url: Some(WebhookUrl::parse("/", "https://example.com/hook").unwrap()),
        webhook_failover_url: None,
        language: "en-US".into(),
        daily_spend_limit: limit.map(MicroUsd),
        daily_spend_limit_enabled: limit.is_some(),
        sms: ChannelSettings {
            app_name: Some(AppName::parse("/", "Acme").unwrap()),
            whitelisted_destinations: Destinations::parse("/", &["US".into(), "CA".into()])
                .unwrap(),
            ..ChannelSettings::default()
        },
        call: ChannelSettings::default(),
        flashcall: ChannelSettings::default(),
    }
}

fn reservation(n: u128, phone: &str, client: &str, cost: i64) -> SendReserved {
    SendReserved {
        verification_id: uid(100 + n),
        channel: VerifyChannel::Sms,
        phone_digest: Digest(format!("phone-{phone}")),
        client_digest: Some(Digest(format!("client-{client}"))),
        cost: MicroUsd(cost),
    }
}

fn given(limit: Option<i64>) -> VerifyProfile {
    let mut p = VerifyProfile::default();
    p.apply(
        &VerifyProfileEvent::Created {
            profile_id: uid(1),
            organization_id: uid(2),
            settings: settings(limit),
        },
        t(0),
    );
    p
}

const LIMITS: SendLimits = SendLimits {
    per_number: 3,
    per_profile: 5,
    per_client: 4,
};

fn reserve(
    p: &mut VerifyProfile,
    r: SendReserved,
    now: DateTime<Utc>,
) -> Result<Vec<VerifyProfileEvent>, VerifyProfileError> {
    let events = decide(
        p,
        VerifyProfileCommand::ReserveSend {
            reservation: r,
            country: Some("US"),
            limits: LIMITS,
        },
        &Ctx { now },
    )?;
    for e in &events {
        p.apply(e, now);
    }
    Ok(events)
}

#[test]
fn every_verify_profile_and_template_event_type_is_pinned() {
    let events = [
        VerifyProfileEvent::Created {
            profile_id: uid(1),
            organization_id: uid(2),
            settings: settings(Some(1_000_000)),
        },
        VerifyProfileEvent::Updated {
            settings: settings(None),
        },
        VerifyProfileEvent::Deleted {},
        VerifyProfileEvent::SendReserved(reservation(1, "a", "b", 50_000)),
        VerifyProfileEvent::SpendThresholdReached {
            day: t(0).date_naive(),
            percent: 80,
            spent: MicroUsd(800_000),
            limit: MicroUsd(1_000_000),
        },
    ];
    let encoded: Vec<_> = events.iter().map(|e| encode(e).unwrap()).collect();
    let types: Vec<&str> = encoded.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, VerifyProfileEvent::event_types());
    for e in &encoded {
        insta::assert_json_snapshot!(format!("{}.v{}", e.event_type, e.schema_version), e.payload);
        let back: VerifyProfileEvent = decode(&e.event_type, e.schema_version, &e.payload).unwrap();
        assert_eq!(encode(&back).unwrap().payload, e.payload);
    }
    let templates = [
        VerifyTemplateEvent::Created {
            template_id: uid(3),
            organization_id: uid(2),
            text: TemplateText::parse("/", "{{code}} is your {{app_name}} code").unwrap(),
        },
        VerifyTemplateEvent::Updated {
            text: TemplateText::parse("/", "Code: {{code}}").unwrap(),
        },
    ];
    let encoded: Vec<_> = templates.iter().map(|e| encode(e).unwrap()).collect();
    let types: Vec<&str> = encoded.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, VerifyTemplateEvent::event_types());
    for e in &encoded {
        insta::assert_json_snapshot!(format!("{}.v{}", e.event_type, e.schema_version), e.payload);
    }
}

#[test]
fn destinations_outside_the_allowlist_are_refused() {
    let p = given(None);
    let refused = decide(
        &p,
        VerifyProfileCommand::ReserveSend {
            reservation: reservation(1, "gb", "c", 0),
            country: Some("GB"),
            limits: LIMITS,
        },
        &Ctx { now: t(1) },
    );
    assert_eq!(
        refused,
        Err(VerifyProfileError::DestinationNotAllowed {
            country: Some("GB")
        })
    );
}

#[test]
fn sends_per_number_per_client_and_per_profile_are_limited() {
    let mut p = given(None);
    for i in 0..3 {
        reserve(
            &mut p,
            reservation(i, "n1", &format!("c{i}"), 0),
            t(10 + i as i64),
        )
        .unwrap();
    }
    assert!(matches!(
        reserve(&mut p, reservation(3, "n1", "c9", 0), t(20)),
        Err(VerifyProfileError::TooManySendsToNumber { .. })
    ));
    // Another number from the same client is fine until the client's own limit.
    reserve(&mut p, reservation(4, "n2", "c0", 0), t(21)).unwrap();
    reserve(&mut p, reservation(5, "n3", "c0", 0), t(22)).unwrap();
    assert!(matches!(
        reserve(&mut p, reservation(6, "n4", "c9", 0), t(23)),
        Err(VerifyProfileError::TooManySendsForProfile { .. })
    ));
    // An hour later the windows are empty again.
    reserve(
        &mut p,
        reservation(7, "n1", "c9", 0),
        t(10 + SEND_WINDOW_SECS),
    )
    .unwrap();
    assert_eq!(p.latest_for(&Digest("phone-n1".into())), Some(uid(107)));
}

#[test]
fn the_daily_spend_limit_refuses_past_it_and_reports_80_and_100_percent() {
    let mut p = given(Some(100_000));
    let first = reserve(&mut p, reservation(1, "a", "x", 40_000), t(1)).unwrap();
    assert_eq!(first.len(), 1);
    let second = reserve(&mut p, reservation(2, "b", "y", 40_000), t(2)).unwrap();
    assert!(matches!(
        second.as_slice(),
        [
            VerifyProfileEvent::SendReserved(_),
            VerifyProfileEvent::SpendThresholdReached { percent: 80, .. }
        ]
    ));
    let third = reserve(&mut p, reservation(3, "c", "z", 20_000), t(3)).unwrap();
    assert!(matches!(
        third.as_slice(),
        [
            VerifyProfileEvent::SendReserved(_),
            VerifyProfileEvent::SpendThresholdReached { percent: 100, .. }
        ]
    ));
    assert!(matches!(
        reserve(&mut p, reservation(4, "d", "w", 1), t(4)),
        Err(VerifyProfileError::DailySpendLimitReached { .. })
    ));
    // The next UTC day starts from zero.
    let tomorrow = t(86_400 * 2);
    assert_eq!(
        reserve(&mut p, reservation(5, "d", "w", 40_000), tomorrow)
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn a_deleted_profile_is_gone() {
    let mut p = given(None);
    let events = decide(&p, VerifyProfileCommand::Delete, &Ctx { now: t(1) }).unwrap();
    for e in &events {
        p.apply(e, t(1));
    }
    assert!(!p.visible_to(uid(2)));
    assert_eq!(
        decide(&p, VerifyProfileCommand::Delete, &Ctx { now: t(2) }),
        Err(VerifyProfileError::NotFound)
    );
}
