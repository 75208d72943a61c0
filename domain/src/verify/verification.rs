//! The verification aggregate: one code sent to one phone number for one verify profile,
//! and what became of it. Stream `verification-<uuid>`.
//!
//! Status follows the Telnyx `Verification` type: `pending` until a right code arrives
//! (`accepted`), the time runs out (`expired`), five wrong codes, a newer verification for
//! the same number or the customer's own rejection end it (`invalid`), or delivery fails
//! (`error`). Every check appends to this stream with its expected version, so a code works
//! exactly once even when many checks race.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::values::VerifyChannel;
use crate::aggregate::{Aggregate, Ctx};
use crate::event::DomainEvent;
use crate::sealed::{Digest, Sealed};

/// Wrong codes a verification tolerates; the last one ends it.
pub const MAX_FAILED_ATTEMPTS: u32 = 5;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerificationStatus {
    #[default]
    Pending,
    Accepted,
    Invalid,
    Expired,
    Error,
}

impl VerificationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            VerificationStatus::Pending => "pending",
            VerificationStatus::Accepted => "accepted",
            VerificationStatus::Invalid => "invalid",
            VerificationStatus::Expired => "expired",
            VerificationStatus::Error => "error",
        }
    }
}

/// Why a verification became `invalid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvalidReason {
    /// [`MAX_FAILED_ATTEMPTS`] wrong codes.
    TooManyAttempts,
    /// A newer verification for the same number and profile replaced it.
    Superseded,
    /// The customer reported their own code as rejected.
    ReportedRejected,
}

/// A code was generated (or given by the customer) and is about to be sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sent {
    pub verification_id: Uuid,
    pub organization_id: Uuid,
    pub profile_id: Uuid,
    pub channel: VerifyChannel,
    /// The destination, sealed (personal data).
    pub phone_number: Sealed,
    /// Keyed digest of the destination, to find verifications by number.
    pub phone_digest: Digest,
    /// Keyed digest of the code, bound to this verification's id.
    pub code_digest: Digest,
    /// The customer supplied the code (`custom_code`); they may report the outcome.
    pub custom_code: bool,
    pub timeout_secs: u32,
    pub expires_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event_type", content = "payload")]
pub enum VerificationEvent {
    #[serde(rename = "verification.sent")]
    Sent(Sent),
    /// The sender took the message (SMS submitted, call placed).
    #[serde(rename = "verification.delivered")]
    Delivered {},
    /// The sender could not send it; the verification cannot be completed.
    #[serde(rename = "verification.delivery_failed")]
    DeliveryFailed { reason: String },
    /// The right code (or the customer's own report of success).
    #[serde(rename = "verification.accepted")]
    Accepted { reported: bool },
    /// A wrong code; `failed_attempts` counts them.
    #[serde(rename = "verification.code_rejected")]
    CodeRejected { failed_attempts: u32 },
    #[serde(rename = "verification.invalidated")]
    Invalidated {
        reason: InvalidReason,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        superseded_by: Option<Uuid>,
    },
    /// The code's time ran out before it was used.
    #[serde(rename = "verification.expired")]
    Expired {},
}

impl DomainEvent for VerificationEvent {
    fn event_types() -> &'static [&'static str] {
        &[
            "verification.sent",
            "verification.delivered",
            "verification.delivery_failed",
            "verification.accepted",
            "verification.code_rejected",
            "verification.invalidated",
            "verification.expired",
        ]
    }
}

/// How far the message got (the `delivery_status` of Telnyx webhooks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    #[default]
    Sent,
    Delivered,
    SendingFailed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::SendingFailed => "sending_failed",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    pub sent: Option<Sent>,
    pub status: VerificationStatus,
    pub delivery: DeliveryStatus,
    pub failed_attempts: u32,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

impl Verification {
    pub fn exists(&self) -> bool {
        self.sent.is_some()
    }

    pub fn organization_id(&self) -> Option<Uuid> {
        self.sent.as_ref().map(|s| s.organization_id)
    }
}

impl Aggregate for Verification {
    const STREAM_TYPE: &'static str = "verification";
    type Event = VerificationEvent;

    fn apply(&mut self, event: &VerificationEvent, at: DateTime<Utc>) {
        self.updated_at = Some(at);
        match event {
            VerificationEvent::Sent(sent) => {
                self.sent = Some(sent.clone());
                self.created_at = Some(at);
            }
            VerificationEvent::Delivered {} => self.delivery = DeliveryStatus::Delivered,
            VerificationEvent::DeliveryFailed { .. } => {
                self.delivery = DeliveryStatus::SendingFailed;
                self.status = VerificationStatus::Error;
            }
            VerificationEvent::Accepted { .. } => self.status = VerificationStatus::Accepted,
            VerificationEvent::CodeRejected { failed_attempts } => {
                self.failed_attempts = *failed_attempts
            }
            VerificationEvent::Invalidated { .. } => self.status = VerificationStatus::Invalid,
            VerificationEvent::Expired {} => self.status = VerificationStatus::Expired,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerificationError {
    #[error("no such verification")]
    NotFound,
    #[error("this verification already exists")]
    AlreadyExists,
    #[error("only a verification with a custom_code may have its status reported")]
    NotCustomCode,
}

#[derive(Debug, Clone)]
pub enum VerificationCommand {
    /// SendVerification: record the code (its digest) before it is sent.
    Send(Sent),
    RecordDelivery,
    RecordDeliveryFailure {
        reason: String,
    },
    /// Check a code, given as its keyed digest. A wrong, late or spent code is recorded
    /// where it matters and answered as "rejected" by the shell.
    Check {
        code_digest: Digest,
    },
    /// The customer reports the outcome of their own `custom_code`.
    Report {
        accepted: bool,
    },
    /// A newer verification for the same number and profile replaces this one.
    Supersede {
        by: Uuid,
    },
    /// The expiry scheduler found it past its time.
    Expire,
}

pub fn decide(
    v: &Verification,
    cmd: VerificationCommand,
    ctx: &Ctx,
) -> Result<Vec<VerificationEvent>, VerificationError> {
    let Some(sent) = &v.sent else {
        return match cmd {
            VerificationCommand::Send(sent) => Ok(vec![VerificationEvent::Sent(sent)]),
            _ => Err(VerificationError::NotFound),
        };
    };
    let pending = v.status == VerificationStatus::Pending;
    let late = ctx.now >= sent.expires_at;
    match cmd {
        VerificationCommand::Send(_) => Err(VerificationError::AlreadyExists),
        VerificationCommand::RecordDelivery if pending => Ok(vec![VerificationEvent::Delivered {}]),
        VerificationCommand::RecordDeliveryFailure { reason } if pending => {
            Ok(vec![VerificationEvent::DeliveryFailed { reason }])
        }
        VerificationCommand::RecordDelivery | VerificationCommand::RecordDeliveryFailure { .. } => {
            Ok(vec![])
        }
        VerificationCommand::Check { .. } if !pending => Ok(vec![]),
        VerificationCommand::Check { .. } if late => Ok(vec![VerificationEvent::Expired {}]),
        VerificationCommand::Check { code_digest } => {
            if code_digest == sent.code_digest {
                return Ok(vec![VerificationEvent::Accepted { reported: false }]);
            }
            let failed_attempts = v.failed_attempts + 1;
            let mut events = vec![VerificationEvent::CodeRejected { failed_attempts }];
            if failed_attempts >= MAX_FAILED_ATTEMPTS {
                events.push(VerificationEvent::Invalidated {
                    reason: InvalidReason::TooManyAttempts,
                    superseded_by: None,
                });
            }
            Ok(events)
        }
        VerificationCommand::Report { .. } if !sent.custom_code => {
            Err(VerificationError::NotCustomCode)
        }
        VerificationCommand::Report { .. } if !pending => Ok(vec![]),
        VerificationCommand::Report { .. } if late => Ok(vec![VerificationEvent::Expired {}]),
        VerificationCommand::Report { accepted: true } => {
            Ok(vec![VerificationEvent::Accepted { reported: true }])
        }
        VerificationCommand::Report { accepted: false } => {
            Ok(vec![VerificationEvent::Invalidated {
                reason: InvalidReason::ReportedRejected,
                superseded_by: None,
            }])
        }
        VerificationCommand::Supersede { by } if pending => {
            Ok(vec![VerificationEvent::Invalidated {
                reason: InvalidReason::Superseded,
                superseded_by: Some(by),
            }])
        }
        VerificationCommand::Expire if pending && late => Ok(vec![VerificationEvent::Expired {}]),
        VerificationCommand::Supersede { .. } | VerificationCommand::Expire => Ok(vec![]),
    }
}

/// When a verification sent now with `timeout_secs` expires.
pub fn expiry(now: DateTime<Utc>, timeout_secs: u32) -> DateTime<Utc> {
    now + Duration::seconds(i64::from(timeout_secs))
}

#[cfg(test)]
#[path = "verification_tests.rs"]
mod tests;
