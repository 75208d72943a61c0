//! Verify commands: profiles and templates, SendVerification (reserve on the profile,
//! supersede the number's previous verification, record the code's digest, then send),
//! checks by id and by phone number, the customer's own outcome reports, and expiry.
//!
//! The shell generates codes with the OS CSPRNG, digests them with the keyed HMAC (bound to
//! the verification id), seals phone numbers, renders messages and talks to the sender; the
//! domain decides.

mod check;
mod profiles;
mod send;

use std::sync::Arc;

use uuid::Uuid;
use warden_domain::verify::profile::{SendLimits, VerifyProfile, VerifyProfileError};
use warden_domain::verify::template::VerifyTemplateError;
use warden_domain::verify::values::{MicroUsd, VerifyChannel};
use warden_domain::verify::verification::{Verification, VerificationError};
use warden_domain::{Aggregate, Digest};

use crate::error::CommandError;
use crate::pipeline::{Loaded, Pipeline};
use crate::ports::Secrets;
use crate::sender::Sender;

pub use check::CheckOutcome;
pub use send::{SendVerification, SentVerification};

/// What a Verify command can fail with, in Verify's terms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Profile(#[from] VerifyProfileError),
    #[error(transparent)]
    Verification(#[from] VerificationError),
    #[error(transparent)]
    Template(#[from] VerifyTemplateError),
    /// The message could not be sent; the verification is recorded as failed.
    #[error("the verification code could not be sent; try again later")]
    DeliveryFailed,
}

pub type Result<T> = std::result::Result<T, CommandError<VerifyError>>;

/// What each channel costs per send, for the daily spend limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prices {
    pub sms: MicroUsd,
    pub call: MicroUsd,
    pub flashcall: MicroUsd,
}

impl Prices {
    pub fn of(&self, channel: VerifyChannel) -> MicroUsd {
        match channel {
            VerifyChannel::Sms => self.sms,
            VerifyChannel::Call => self.call,
            VerifyChannel::Flashcall => self.flashcall,
        }
    }
}

/// Verify's operating limits and prices (configurable in `warden serve`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyConfig {
    pub limits: SendLimits,
    pub prices: Prices,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        Self {
            limits: SendLimits {
                per_number: 5,
                per_profile: 1000,
                per_client: 300,
            },
            prices: Prices {
                sms: MicroUsd(50_000),
                call: MicroUsd(90_000),
                flashcall: MicroUsd(45_000),
            },
        }
    }
}

pub struct VerifyCommands {
    pipeline: Pipeline,
    secrets: Arc<dyn Secrets>,
    sender: Arc<dyn Sender>,
    config: VerifyConfig,
}

fn domain(e: impl Into<VerifyError>) -> CommandError<VerifyError> {
    CommandError::Domain(e.into())
}

impl VerifyCommands {
    pub fn new(
        pipeline: Pipeline,
        secrets: Arc<dyn Secrets>,
        sender: Arc<dyn Sender>,
        config: VerifyConfig,
    ) -> Self {
        Self {
            pipeline,
            secrets,
            sender,
            config,
        }
    }

    pub fn config(&self) -> &VerifyConfig {
        &self.config
    }

    /// Keyed digest of a phone number: how verifications are found by number.
    pub fn phone_digest(&self, e164: &str) -> Digest {
        self.secrets.keyed_digest("verify_phone", e164)
    }

    /// Keyed digest of a code, bound to its verification (equal codes never look equal).
    fn code_digest(&self, verification_id: Uuid, code: &str) -> Digest {
        self.secrets
            .keyed_digest("verify_code", &format!("{verification_id}:{code}"))
    }

    /// The sealing subject of a phone number: forgetting it shreds every verification's copy.
    fn phone_subject(digest: &Digest) -> String {
        format!("verify_phone-{}", digest.as_str())
    }

    /// A profile the organization may use (404 for another organization's or a deleted one).
    async fn visible_profile(
        &self,
        organization_id: Uuid,
        profile_id: Uuid,
    ) -> Result<Loaded<VerifyProfile>> {
        let loaded = self
            .pipeline
            .load::<VerifyProfile, VerifyError>(&VerifyProfile::stream_id(profile_id))
            .await?;
        if !loaded.state.visible_to(organization_id) {
            return Err(domain(VerifyProfileError::NotFound));
        }
        Ok(loaded)
    }

    /// A verification of the organization's.
    async fn visible_verification(
        &self,
        organization_id: Uuid,
        verification_id: Uuid,
    ) -> Result<Loaded<Verification>> {
        let loaded = self
            .pipeline
            .load::<Verification, VerifyError>(&Verification::stream_id(verification_id))
            .await?;
        if loaded.state.organization_id() != Some(organization_id) {
            return Err(domain(VerificationError::NotFound));
        }
        Ok(loaded)
    }
}
