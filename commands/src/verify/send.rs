//! SendVerification: one atomic commit reserves the send on the profile (allowlist, rate
//! limits, daily spend), supersedes the number's previous verification and records the new
//! one with only its code's digest; then the code goes out through the sender port. A
//! refused send writes nothing and sends nothing.

use rand::rngs::OsRng;
use rand::Rng;
use uuid::Uuid;
use warden_domain::values::PhoneNumber;
use warden_domain::verify::country::country_of;
use warden_domain::verify::profile::{self, SendReserved, VerifyProfile, VerifyProfileCommand};
use warden_domain::verify::template::{TemplateText, DEFAULT_TEMPLATE};
use warden_domain::verify::values::{CustomCode, Extension, TimeoutSecs, VerifyChannel};
use warden_domain::verify::verification::{
    self, Sent, Verification, VerificationCommand, VerificationEvent,
};
use warden_domain::{Aggregate, Sealed};
use zeroize::Zeroizing;

use super::{domain, Result, VerifyCommands, VerifyError};
use crate::error::CommandError;
use crate::pipeline::{Loaded, Meta, Plan, MAX_ATTEMPTS};
use crate::sender::{Channel, OutboundMessage};

/// A request to send a verification code.
#[derive(Debug)]
pub struct SendVerification {
    pub organization_id: Uuid,
    pub profile_id: Uuid,
    pub channel: VerifyChannel,
    pub phone: PhoneNumber,
    pub custom_code: Option<CustomCode>,
    pub timeout: Option<TimeoutSecs>,
    pub extension: Option<Extension>,
    /// The calling client's address, for the per-client send limit.
    pub client_ip: Option<String>,
}

#[derive(Debug, Clone, Copy)]
pub struct SentVerification {
    pub verification_id: Uuid,
    pub position: Option<i64>,
}

/// `digits` random decimal digits from the OS CSPRNG (uniform, leading zeros kept). Unlike
/// `otp::new_numeric_code` it honours the profile's length, which may be 4 or 5 (Telnyx
/// allows it; Warden's default is 6).
fn new_code(digits: usize) -> Zeroizing<String> {
    let mut rng = OsRng;
    Zeroizing::new(
        (0..digits)
            .map(|_| char::from(b'0' + rng.gen_range(0..10u8)))
            .collect(),
    )
}

fn spaced(code: &str) -> String {
    code.chars().map(String::from).collect::<Vec<_>>().join(" ")
}

impl VerifyCommands {
    pub async fn send(&self, cmd: SendVerification, meta: &Meta) -> Result<SentVerification> {
        let verification_id = Uuid::now_v7();
        let phone_digest = self.phone_digest(cmd.phone.as_str());
        let reservation = SendReserved {
            verification_id,
            channel: cmd.channel,
            phone_digest: phone_digest.clone(),
            client_digest: cmd
                .client_ip
                .as_deref()
                .map(|ip| self.secrets.keyed_digest("verify_client", ip)),
            cost: self.config.prices.of(cmd.channel),
        };
        let country = country_of(&cmd.phone);
        let reserve = || VerifyProfileCommand::ReserveSend {
            reservation: reservation.clone(),
            country,
            limits: self.config.limits,
        };
        // Refuse early, before a data key is made for a number that gets nothing.
        let refusal = |loaded: &Loaded<VerifyProfile>| -> Result<()> {
            if !loaded.state.visible_to(cmd.organization_id) || loaded.state.settings.is_none() {
                return Err(domain(profile::VerifyProfileError::NotFound));
            }
            profile::decide(&loaded.state, reserve(), &self.pipeline.ctx())
                .map(|_| ())
                .map_err(domain)
        };
        let profile_stream = VerifyProfile::stream_id(cmd.profile_id);
        // The profile as this process kept it: the commit below names its version, so a
        // stale one conflicts and is loaded. A refusal is only given from a loaded one.
        let (mut first, checked) = self
            .pipeline
            .recall::<VerifyProfile, VerifyError>(&profile_stream)
            .await?;
        if let Err(refused) = refusal(&first) {
            if checked {
                return Err(refused);
            }
            first = self
                .pipeline
                .load::<VerifyProfile, VerifyError>(&profile_stream)
                .await?;
            refusal(&first)?;
        }
        let Some(settings) = first.state.settings.clone() else {
            return Err(domain(profile::VerifyProfileError::NotFound));
        };
        let channel_settings = settings.channel(cmd.channel).clone();

        let code = match &cmd.custom_code {
            Some(custom) => Zeroizing::new(custom.expose().to_owned()),
            None => new_code(channel_settings.code_length.get()),
        };
        let code_digest = self.code_digest(verification_id, &code);
        let phone_sealed: Sealed = self
            .secrets
            .seal(
                &Self::phone_subject(&phone_digest),
                cmd.phone.as_str().as_bytes(),
            )
            .await?;
        let timeout = cmd
            .timeout
            .unwrap_or(channel_settings.default_verification_timeout_secs)
            .get();

        let stream = Verification::stream_id(verification_id);
        let mut position = None;
        // The new verification as committed: what recording its delivery decides on.
        let mut written = None;
        // The first attempt decides on the profile as loaded above; a retry reloads it.
        let mut first = Some(first);
        for attempt in 0..MAX_ATTEMPTS {
            let loaded = match first.take() {
                Some(loaded) => loaded,
                None => {
                    self.pipeline
                        .load::<VerifyProfile, VerifyError>(&profile_stream)
                        .await?
                }
            };
            if !loaded.state.visible_to(cmd.organization_id) {
                return Err(domain(profile::VerifyProfileError::NotFound));
            }
            let ctx = self.pipeline.ctx();
            let profile_events = profile::decide(&loaded.state, reserve(), &ctx).map_err(domain)?;
            let mut plan = Plan::new();
            plan.push::<VerifyProfile>(&profile_stream, loaded.version, &profile_events)?;
            if let Some(previous) = loaded.state.latest_for(&phone_digest) {
                let stream = Verification::stream_id(previous);
                let old = self
                    .pipeline
                    .load::<Verification, VerifyError>(&stream)
                    .await?;
                let events = verification::decide(
                    &old.state,
                    VerificationCommand::Supersede {
                        by: verification_id,
                    },
                    &ctx,
                )
                .map_err(domain)?;
                plan.push::<Verification>(&stream, old.version, &events)?;
            }
            let sent = Sent {
                verification_id,
                organization_id: cmd.organization_id,
                profile_id: cmd.profile_id,
                channel: cmd.channel,
                phone_number: phone_sealed.clone(),
                phone_digest: phone_digest.clone(),
                code_digest: code_digest.clone(),
                custom_code: cmd.custom_code.is_some(),
                timeout_secs: timeout,
                expires_at: verification::expiry(ctx.now, timeout),
                extension: cmd.extension.as_ref().map(|e| e.as_str().to_owned()),
            };
            plan.push::<Verification>(&stream, 0, &[VerificationEvent::Sent(sent)])?;
            match self
                .pipeline
                .commit::<VerifyError>(plan, meta, ctx.now)
                .await
            {
                Ok((recorded, p)) => {
                    position = p;
                    let mut state = Verification::default();
                    let mut version = 0;
                    for e in recorded.iter().filter(|e| e.stream_id == stream) {
                        state.apply(&e.decode::<VerificationEvent>()?, e.recorded_at);
                        version = e.version;
                    }
                    written = Some(Loaded {
                        state: state.into(),
                        version,
                        snapshot_version: 0,
                    });
                    break;
                }
                Err(CommandError::Conflict) => {
                    let pause = rand::thread_rng().gen_range(1..=2 * (attempt as u64 + 1));
                    tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
                }
                Err(e) => return Err(e),
            }
        }
        let Some(written) = written else {
            return Err(CommandError::Conflict);
        };

        let app_name = channel_settings
            .app_name
            .as_ref()
            .map_or(settings.name.as_str(), |a| a.as_str())
            .to_owned();
        let template = match channel_settings.messaging_template_id {
            Some(id) => self
                .template_text(cmd.organization_id, id)
                .await?
                .unwrap_or_else(|| DEFAULT_TEMPLATE.to_owned()),
            None => DEFAULT_TEMPLATE.to_owned(),
        };
        let (channel, text, purpose) = match cmd.channel {
            VerifyChannel::Sms => (
                Channel::Sms,
                TemplateText::render(&template, &app_name, &code),
                "verification",
            ),
            VerifyChannel::Call => {
                let spoken = spaced(&code);
                let text = TemplateText::render(&template, &app_name, &spoken);
                (
                    Channel::Call,
                    format!("{text} Again: {spoken}."),
                    "verification",
                )
            }
            VerifyChannel::Flashcall => (
                Channel::Call,
                format!(
                    "{app_name}: a missed call from a number ending in {}.",
                    &*code
                ),
                "verification_flashcall",
            ),
        };
        let message = OutboundMessage::new(
            channel,
            cmd.phone.as_str(),
            text,
            Some(code.to_string()),
            purpose,
        );
        let outcome = self.sender.send(&message).await;
        let record = match &outcome {
            Ok(()) => VerificationCommand::RecordDelivery,
            Err(e) => {
                tracing::warn!(%verification_id, error = %e, "verification code not sent");
                VerificationCommand::RecordDeliveryFailure {
                    reason: e.to_string(),
                }
            }
        };
        let executed = self
            .pipeline
            .execute_from::<Verification, VerifyError, _>(&stream, meta, written, |state, ctx| {
                verification::decide(state, record.clone(), ctx).map_err(Into::into)
            })
            .await?;
        if outcome.is_err() {
            return Err(domain(VerifyError::DeliveryFailed));
        }
        Ok(SentVerification {
            verification_id,
            position: executed.position.or(position),
        })
    }
}
