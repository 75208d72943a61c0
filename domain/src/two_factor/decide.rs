//! Two-factor decisions, called from `user::decide`. Each returns the user events to
//! record; a wrong code is a recorded failure (an event), not an error, so limits hold.

use uuid::Uuid;

use super::*;
use crate::aggregate::Ctx;
use crate::user::{NewSession, User, UserError, UserEvent};

/// How a change was authorized: the factor (none while 2FA is off), the TOTP step it
/// spent, and the events that use it up.
struct Authorized {
    factor: Option<Factor>,
    totp_step: Option<i64>,
    events: Vec<UserEvent>,
}

/// The outcome of checking a current factor: granted, or a failure to record (which counts
/// toward the step-up and consecutive-failure limits) instead of the change.
enum Authorization {
    Granted(Authorized),
    Failed(Vec<UserEvent>),
}

/// With 2FA on, a change needs a current factor (TOTP, backup code, or a step-up code).
fn authorize_change(
    tf: &TwoFactor,
    proof: Option<&Proof>,
    now: DateTime<Utc>,
) -> Result<Authorization, UserError> {
    authorize(tf, proof, false, now)
}

/// [`authorize_change`], where an emailed code may stand in when `email_allowed` (a new
/// phone number for an SMS/voice factor).
fn authorize(
    tf: &TwoFactor,
    proof: Option<&Proof>,
    email_allowed: bool,
    now: DateTime<Utc>,
) -> Result<Authorization, UserError> {
    if !tf.enabled {
        return Ok(Authorization::Granted(Authorized {
            factor: None,
            totp_step: None,
            events: vec![],
        }));
    }
    let proof = proof.ok_or(TwoFactorError::CurrentFactorRequired)?;
    if matches!(proof, Proof::EmailCode(_)) && !email_allowed {
        return Err(TwoFactorError::EmailCodeOnlyForPhoneChange.into());
    }
    check_step_up_allowed(tf, now)?;
    if !tf.accepts(proof, tf.step_up.as_ref(), now) {
        return Ok(Authorization::Failed(vec![
            UserEvent::TwoFactorStepUpFailed {
                factor: proof.factor(),
            },
        ]));
    }
    Ok(Authorization::Granted(Authorized {
        factor: Some(proof.factor()),
        totp_step: proof.totp_step(),
        events: spend_backup_code(tf, proof),
    }))
}

/// A used backup code: consumed, and a warning when few remain.
fn spend_backup_code(tf: &TwoFactor, proof: &Proof) -> Vec<UserEvent> {
    let Proof::BackupCode(Some(index)) = proof else {
        return vec![];
    };
    let remaining = tf.backup_codes_remaining().saturating_sub(1);
    let mut events = vec![UserEvent::BackupCodeConsumed {
        index: *index,
        remaining,
    }];
    if remaining <= BACKUP_CODES_LOW {
        events.push(UserEvent::BackupCodesLow { remaining });
    }
    events
}

/// A new enrollment. For SMS/voice, `phone` carries the sealed number and the digest of
/// the code being sent to it.
pub fn start_enrollment(
    user: &User,
    enrollment_id: Uuid,
    method: Method,
    totp_secret: Option<Sealed>,
    phone: Option<(Sealed, Digest)>,
    proof: Option<&Proof>,
    ctx: &Ctx,
) -> Result<Vec<UserEvent>, UserError> {
    let tf = &user.two_factor;
    if phone.is_some() {
        check_send_allowed(tf, ctx.now)?;
    }
    let Authorized {
        factor: verified_with,
        totp_step,
        mut events,
    } = match authorize(tf, proof, phone_change(tf, method), ctx.now)? {
        Authorization::Granted(a) => a,
        Authorization::Failed(events) => return Ok(events),
    };
    let (phone_number, code_digest) = match phone {
        Some((number, digest)) => (Some(number), Some(digest)),
        None => (None, None),
    };
    events.push(UserEvent::TwoFactorEnrollmentStarted(EnrollmentStarted {
        enrollment_id,
        method,
        totp_secret,
        phone_number,
        expires_at: enrollment_expiry(ctx.now),
        verified_with,
        totp_step,
    }));
    if let Some(code_digest) = code_digest {
        events.push(UserEvent::TwoFactorCodeSent(CodeSent {
            purpose: CodePurpose::Enrollment,
            target_id: enrollment_id,
            channel: method,
            code_digest,
            expires_at: code_expiry(ctx.now),
        }));
    }
    Ok(events)
}

/// Confirms an enrollment with a code from the new factor: 2FA turns on (with the given
/// backup codes) or, if it was on, moves to the new method and keeps the backup codes.
pub fn confirm_enrollment(
    user: &User,
    enrollment_id: Uuid,
    proof: &Proof,
    backup_codes: Sealed,
    backup_code_count: u32,
    ctx: &Ctx,
) -> Result<Vec<UserEvent>, UserError> {
    let tf = &user.two_factor;
    let enrollment = usable_enrollment(tf, enrollment_id, ctx.now)?;
    let ok = match (enrollment.method, proof) {
        (Method::Totp, Proof::Totp(_)) => tf.accepts(proof, None, ctx.now),
        (Method::Sms | Method::Call, Proof::Code(_)) => {
            tf.accepts(proof, enrollment.code.as_ref(), ctx.now)
        }
        _ => false,
    };
    if !ok {
        return Ok(vec![UserEvent::TwoFactorEnrollmentFailed { enrollment_id }]);
    }
    if tf.enabled {
        return Ok(vec![UserEvent::TwoFactorMethodChanged(MethodChanged {
            enrollment_id,
            method: enrollment.method,
            totp_step: proof.totp_step(),
        })]);
    }
    Ok(vec![UserEvent::TwoFactorEnabled(Enabled {
        enrollment_id,
        method: enrollment.method,
        totp_step: proof.totp_step(),
        backup_codes,
        backup_code_count,
    })])
}

/// A new backup-code set, proven by a current factor; the old set stops working.
pub fn regenerate_backup_codes(
    user: &User,
    proof: &Proof,
    backup_codes: Sealed,
    backup_code_count: u32,
    ctx: &Ctx,
) -> Result<Vec<UserEvent>, UserError> {
    let tf = &user.two_factor;
    if !tf.enabled {
        return Err(TwoFactorError::NotEnabled.into());
    }
    let Authorized {
        factor,
        totp_step,
        mut events,
    } = match authorize_change(tf, Some(proof), ctx.now)? {
        Authorization::Granted(a) => a,
        Authorization::Failed(events) => return Ok(events),
    };
    events.push(UserEvent::BackupCodesRegenerated {
        factor: factor.unwrap_or(Factor::Totp),
        totp_step,
        backup_codes,
        backup_code_count,
    });
    Ok(events)
}

/// A code sent to the enrolled (or enrolling) phone, bound to one purpose and target.
pub fn send_code(
    user: &User,
    purpose: CodePurpose,
    target_id: Uuid,
    channel: Method,
    code_digest: Digest,
    ctx: &Ctx,
) -> Result<Vec<UserEvent>, UserError> {
    let tf = &user.two_factor;
    if channel == Method::Totp {
        return Err(TwoFactorError::NoPhoneEnrolled.into());
    }
    match purpose {
        CodePurpose::Enrollment => {
            let enrollment = usable_enrollment(tf, target_id, ctx.now)?;
            if enrollment.phone_number.is_none() {
                return Err(TwoFactorError::NoPhoneEnrolled.into());
            }
        }
        CodePurpose::SignIn => {
            usable_challenge(tf, target_id, ctx.now)?;
            if tf.phone_number.is_none() {
                return Err(TwoFactorError::NoPhoneEnrolled.into());
            }
        }
        CodePurpose::StepUp => {
            if !tf.enabled {
                return Err(TwoFactorError::NotEnabled.into());
            }
            if tf.phone_number.is_none() {
                return Err(TwoFactorError::NoPhoneEnrolled.into());
            }
        }
    }
    check_send_allowed(tf, ctx.now)?;
    Ok(vec![UserEvent::TwoFactorCodeSent(CodeSent {
        purpose,
        target_id,
        channel,
        code_digest,
        expires_at: code_expiry(ctx.now),
    })])
}

/// A challenge answered: a usable proof opens a session (using up a backup code); anything
/// else is a recorded failure that counts toward the per-challenge and per-user limits.
pub fn answer_challenge(
    user: &User,
    challenge_id: Uuid,
    proof: &Proof,
    session: &NewSession,
    ctx: &Ctx,
) -> Result<Vec<UserEvent>, UserError> {
    let tf = &user.two_factor;
    let challenge = usable_challenge(tf, challenge_id, ctx.now)?;
    if !tf.accepts(proof, challenge.code.as_ref(), ctx.now) {
        return Ok(vec![UserEvent::TwoFactorChallengeFailed {
            challenge_id,
            factor: proof.factor(),
        }]);
    }
    let mut events = vec![UserEvent::TwoFactorChallengePassed(ChallengePassed {
        challenge_id,
        factor: proof.factor(),
        totp_step: proof.totp_step(),
    })];
    events.extend(spend_backup_code(tf, proof));
    events.push(session.started(ctx.now));
    Ok(events)
}

/// Turns 2FA off: only where the organization allows it, and only with a current factor.
pub fn disable(
    user: &User,
    allowed: bool,
    proof: &Proof,
    ctx: &Ctx,
) -> Result<Vec<UserEvent>, UserError> {
    let tf = &user.two_factor;
    if !tf.enabled {
        return Err(TwoFactorError::NotEnabled.into());
    }
    if !allowed {
        return Err(TwoFactorError::CannotBeDisabled.into());
    }
    let Authorized {
        factor,
        totp_step,
        mut events,
    } = match authorize_change(tf, Some(proof), ctx.now)? {
        Authorization::Granted(a) => a,
        Authorization::Failed(events) => return Ok(events),
    };
    events.retain(|e| !matches!(e, UserEvent::BackupCodesLow { .. }));
    events.push(UserEvent::TwoFactorDisabled {
        factor: factor.unwrap_or(Factor::Totp),
        totp_step,
    });
    Ok(events)
}

/// A wrong current factor, recorded on its own (the change it was for is not attempted).
/// If the proof has become acceptable meanwhile, nothing is recorded.
pub fn record_step_up_failure(
    user: &User,
    proof: &Proof,
    ctx: &Ctx,
) -> Result<Vec<UserEvent>, UserError> {
    match authorize_change(&user.two_factor, Some(proof), ctx.now)? {
        Authorization::Failed(events) => Ok(events),
        Authorization::Granted(_) => Ok(vec![]),
    }
}

/// Lost-device recovery, step one: a code to the account's email, for an owner whose
/// sign-in is waiting at this challenge. Sub-users ask their owner for a reset instead.
pub fn send_recovery_code(
    user: &User,
    challenge_id: Uuid,
    code_digest: Digest,
    ctx: &Ctx,
) -> Result<Vec<UserEvent>, UserError> {
    if user.role != Some(crate::user::Role::OrganizationOwner) {
        return Err(TwoFactorError::RecoveryNotAllowed.into());
    }
    let tf = &user.two_factor;
    usable_challenge(tf, challenge_id, ctx.now)?;
    check_send_allowed(tf, ctx.now)?;
    Ok(vec![UserEvent::RecoveryCodeSent(super::RecoveryCodeSent {
        challenge_id,
        code_digest,
        expires_at: code_expiry(ctx.now),
    })])
}

/// Lost-device recovery, step two: the organization's passphrase (checked by the shell)
/// and the emailed code. Both right: the factor is reset and a session that may only
/// enroll a new one opens. Either wrong: a failure, counted like a wrong code.
pub fn recover(
    user: &User,
    challenge_id: Uuid,
    passphrase_ok: bool,
    code_digest: &Digest,
    session: &NewSession,
    ctx: &Ctx,
) -> Result<Vec<UserEvent>, UserError> {
    if user.role != Some(crate::user::Role::OrganizationOwner) {
        return Err(TwoFactorError::RecoveryNotAllowed.into());
    }
    let challenge = usable_challenge(&user.two_factor, challenge_id, ctx.now)?;
    let code_ok = challenge
        .recovery_code
        .as_ref()
        .is_some_and(|sent| sent.expires_at > ctx.now && sent.code_digest == *code_digest);
    if !(passphrase_ok && code_ok) {
        return Ok(vec![UserEvent::TwoFactorChallengeFailed {
            challenge_id,
            factor: Factor::Recovery,
        }]);
    }
    let mut started = session.started(ctx.now);
    if let UserEvent::SessionStarted { scope, .. } = &mut started {
        *scope = Some("two_factor_setup".to_owned());
    }
    Ok(vec![
        UserEvent::TwoFactorChallengePassed(ChallengePassed {
            challenge_id,
            factor: Factor::Recovery,
            totp_step: None,
        }),
        UserEvent::TwoFactorReset {
            reason: crate::user::TwoFactorResetReason::LostDevice,
        },
        started,
    ])
}

/// Only the number changes: SMS/voice stays SMS/voice.
fn phone_change(tf: &TwoFactor, new_method: Method) -> bool {
    matches!(new_method, Method::Sms | Method::Call)
        && matches!(tf.method, Some(Method::Sms | Method::Call))
}

/// A code to the account's email that can stand in for the current factor when the
/// phone number changes (the old phone may be the one that is gone).
pub fn send_email_code(
    user: &User,
    code_digest: Digest,
    ctx: &Ctx,
) -> Result<Vec<UserEvent>, UserError> {
    let tf = &user.two_factor;
    if !tf.enabled {
        return Err(TwoFactorError::NotEnabled.into());
    }
    if !matches!(tf.method, Some(Method::Sms | Method::Call)) {
        return Err(TwoFactorError::EmailCodeOnlyForPhoneChange.into());
    }
    check_send_allowed(tf, ctx.now)?;
    Ok(vec![UserEvent::EmailCodeSent(super::EmailCodeSent {
        code_digest,
        expires_at: code_expiry(ctx.now),
    })])
}
