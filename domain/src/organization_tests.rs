//! Organization decisions and the pinned JSON of every organization event type.

use chrono::TimeZone;

use super::*;
use crate::event::encode;

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
