//! Checking codes: by verification id or by phone number and profile. A wrong, late,
//! spent or missing code is answered "rejected" the same way (200, as Telnyx does), so an
//! answer never tells whether a number was verified before. Also the customer's own
//! outcome reports for `custom_code` verifications, and expiry.

use uuid::Uuid;
use warden_domain::values::PhoneNumber;
use warden_domain::verify::verification::{
    self, Verification, VerificationCommand, VerificationEvent,
};
use warden_domain::Aggregate;

use super::{Result, VerifyCommands, VerifyError};
use crate::pipeline::Meta;

/// What a check concluded, and where its events landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckOutcome {
    pub accepted: bool,
    pub position: Option<i64>,
}

/// Longest code looked at; anything longer cannot be right and is not hashed.
const MAX_CODE_LEN: usize = 64;

impl VerifyCommands {
    async fn run(
        &self,
        verification_id: Uuid,
        cmd: VerificationCommand,
        meta: &Meta,
    ) -> Result<CheckOutcome> {
        let executed = self
            .pipeline
            .execute::<Verification, VerifyError, _>(
                &Verification::stream_id(verification_id),
                meta,
                |state, ctx| verification::decide(state, cmd.clone(), ctx).map_err(Into::into),
            )
            .await?;
        let accepted = executed.events.iter().any(|e| {
            matches!(
                e.decode::<VerificationEvent>(),
                Ok(VerificationEvent::Accepted { .. })
            )
        });
        Ok(CheckOutcome {
            accepted,
            position: executed.position,
        })
    }

    fn check_command(&self, verification_id: Uuid, code: &str) -> VerificationCommand {
        let code = code.trim();
        let code_digest = if code.len() > MAX_CODE_LEN {
            // Cannot match any stored digest; still counts as a wrong attempt.
            self.secrets.keyed_digest("verify_code", "")
        } else {
            self.code_digest(verification_id, code)
        };
        VerificationCommand::Check { code_digest }
    }

    /// Checks `code` against one verification. Returns the outcome and the number it was for.
    pub async fn check_by_id(
        &self,
        organization_id: Uuid,
        verification_id: Uuid,
        code: &str,
        meta: &Meta,
    ) -> Result<(CheckOutcome, String)> {
        let loaded = self
            .visible_verification(organization_id, verification_id)
            .await?;
        let phone = self.phone_of(&loaded.state).await?;
        let outcome = self
            .run(
                verification_id,
                self.check_command(verification_id, code),
                meta,
            )
            .await?;
        Ok((outcome, phone))
    }

    /// Checks `code` against the newest verification of this number for this profile.
    pub async fn check_by_phone(
        &self,
        organization_id: Uuid,
        profile_id: Uuid,
        phone: &PhoneNumber,
        code: &str,
        meta: &Meta,
    ) -> Result<CheckOutcome> {
        let profile = self.visible_profile(organization_id, profile_id).await?;
        let digest = self.phone_digest(phone.as_str());
        let Some(verification_id) = profile.state.latest_for(&digest) else {
            return Ok(CheckOutcome {
                accepted: false,
                position: None,
            });
        };
        self.run(
            verification_id,
            self.check_command(verification_id, code),
            meta,
        )
        .await
    }

    /// The customer reports the outcome of their own `custom_code`.
    pub async fn report(
        &self,
        organization_id: Uuid,
        verification_id: Uuid,
        accepted: bool,
        meta: &Meta,
    ) -> Result<(CheckOutcome, String)> {
        let loaded = self
            .visible_verification(organization_id, verification_id)
            .await?;
        let phone = self.phone_of(&loaded.state).await?;
        let outcome = self
            .run(
                verification_id,
                VerificationCommand::Report { accepted },
                meta,
            )
            .await?;
        Ok((
            CheckOutcome {
                accepted: outcome.accepted,
                position: outcome.position,
            },
            phone,
        ))
    }

    /// Expires a verification whose time ran out (the scheduler's command; a no-op when it
    /// is no longer pending or not yet due).
    pub async fn expire(&self, verification_id: Uuid, meta: &Meta) -> Result<Option<i64>> {
        Ok(self
            .run(verification_id, VerificationCommand::Expire, meta)
            .await?
            .position)
    }

    async fn phone_of(&self, v: &Verification) -> Result<String> {
        let Some(sent) = &v.sent else {
            return Ok(String::new());
        };
        Ok(self
            .secrets
            .open(&sent.phone_number)
            .await?
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default())
    }
}
