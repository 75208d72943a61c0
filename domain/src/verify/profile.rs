//! The verify profile aggregate: a customer's Verify configuration (channels, allowlists,
//! webhooks, daily spend limit) and the gate every send passes through. Stream
//! `verify_profile-<uuid>`.
//!
//! Each send reserves its place on this stream (`verify_profile.send_reserved`), so the
//! per-number, per-profile and per-client-address limits and the daily spend limit hold
//! under concurrency: two sends racing for the last unit of budget cannot both commit.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::values::{
    AppName, CodeLength, Destinations, MicroUsd, TimeoutSecs, VerifyChannel, WebhookUrl,
};
use crate::aggregate::{Aggregate, Ctx};
use crate::event::DomainEvent;
use crate::sealed::Digest;

/// Spend thresholds (percent of the daily limit) that raise an event when crossed.
pub const SPEND_THRESHOLDS: [u8; 2] = [80, 100];
/// The rolling window of every send limit.
pub const SEND_WINDOW_SECS: i64 = 3600;
/// How long a number's latest verification is remembered (the longest timeout, twice).
const NUMBER_MEMORY_SECS: i64 = 2 * TimeoutSecs::MAX;

/// One channel's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_name: Option<AppName>,
    /// Digits of generated codes (SMS and call; flash calls always use the default).
    #[serde(default)]
    pub code_length: CodeLength,
    #[serde(default)]
    pub default_verification_timeout_secs: TimeoutSecs,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messaging_template_id: Option<Uuid>,
    #[serde(default)]
    pub whitelisted_destinations: Destinations,
    /// SMS only: the alphanumeric sender id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha_sender: Option<String>,
}

impl Default for ChannelSettings {
    fn default() -> Self {
        Self {
            app_name: None,
            code_length: CodeLength::DEFAULT,
            default_verification_timeout_secs: TimeoutSecs::DEFAULT,
            messaging_template_id: None,
            whitelisted_destinations: Destinations::All,
            alpha_sender: None,
        }
    }
}

/// A profile's whole configuration, as every create and update event carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileSettings {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<WebhookUrl>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_failover_url: Option<WebhookUrl>,
    pub language: String,
    #[serde(
        default,
        rename = "daily_spend_limit_micro_usd",
        skip_serializing_if = "Option::is_none"
    )]
    pub daily_spend_limit: Option<MicroUsd>,
    #[serde(default)]
    pub daily_spend_limit_enabled: bool,
    pub sms: ChannelSettings,
    pub call: ChannelSettings,
    pub flashcall: ChannelSettings,
}

impl ProfileSettings {
    pub fn channel(&self, channel: VerifyChannel) -> &ChannelSettings {
        match channel {
            VerifyChannel::Sms => &self.sms,
            VerifyChannel::Call => &self.call,
            VerifyChannel::Flashcall => &self.flashcall,
        }
    }

    /// The enforced daily limit, if any.
    pub fn enforced_limit(&self) -> Option<MicroUsd> {
        self.daily_spend_limit
            .filter(|_| self.daily_spend_limit_enabled)
    }
}

/// A send reserved on the profile: what it costs and whom it counts against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendReserved {
    pub verification_id: Uuid,
    pub channel: VerifyChannel,
    /// Keyed digest of the destination number (never the number).
    pub phone_digest: Digest,
    /// Keyed digest of the calling client's address, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_digest: Option<Digest>,
    #[serde(rename = "cost_micro_usd")]
    pub cost: MicroUsd,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event_type", content = "payload")]
pub enum VerifyProfileEvent {
    #[serde(rename = "verify_profile.created")]
    Created {
        profile_id: Uuid,
        organization_id: Uuid,
        settings: ProfileSettings,
    },
    /// The settings after the change (whole, so a reader needs no earlier event).
    #[serde(rename = "verify_profile.updated")]
    Updated { settings: ProfileSettings },
    #[serde(rename = "verify_profile.deleted")]
    Deleted {},
    #[serde(rename = "verify_profile.send_reserved")]
    SendReserved(SendReserved),
    /// The day's spend reached `percent` of the enforced daily limit.
    #[serde(rename = "verify_profile.spend_threshold_reached")]
    SpendThresholdReached {
        day: NaiveDate,
        percent: u8,
        #[serde(rename = "spent_micro_usd")]
        spent: MicroUsd,
        #[serde(rename = "limit_micro_usd")]
        limit: MicroUsd,
    },
}

impl DomainEvent for VerifyProfileEvent {
    fn event_types() -> &'static [&'static str] {
        &[
            "verify_profile.created",
            "verify_profile.updated",
            "verify_profile.deleted",
            "verify_profile.send_reserved",
            "verify_profile.spend_threshold_reached",
        ]
    }
}

/// What the profile remembers about one destination number.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NumberState {
    /// Recent sends, oldest first (within [`SEND_WINDOW_SECS`]).
    pub sends: Vec<DateTime<Utc>>,
    /// The newest verification for this number: the only one that can still be checked.
    pub latest: Option<Uuid>,
    pub latest_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VerifyProfile {
    pub id: Option<Uuid>,
    pub organization_id: Option<Uuid>,
    pub settings: Option<ProfileSettings>,
    pub deleted: bool,
    /// The UTC day the spend counter is for, and what was spent on it.
    pub spend_day: Option<NaiveDate>,
    pub spent: MicroUsd,
    pub thresholds_reached: Vec<u8>,
    /// Recent sends of the whole profile, oldest first.
    pub sends: Vec<DateTime<Utc>>,
    pub numbers: BTreeMap<Digest, NumberState>,
    pub clients: BTreeMap<Digest, Vec<DateTime<Utc>>>,
}

fn prune(times: &mut Vec<DateTime<Utc>>, now: DateTime<Utc>) {
    let window = Duration::seconds(SEND_WINDOW_SECS);
    times.retain(|t| now - *t < window);
}

impl VerifyProfile {
    /// Whether the profile exists, is not deleted and belongs to `organization_id`.
    pub fn visible_to(&self, organization_id: Uuid) -> bool {
        self.id.is_some() && !self.deleted && self.organization_id == Some(organization_id)
    }

    /// The newest verification sent to this number, if it is still remembered.
    pub fn latest_for(&self, phone_digest: &Digest) -> Option<Uuid> {
        self.numbers.get(phone_digest).and_then(|n| n.latest)
    }

    /// Spent so far on `day` (zero when the counter is for another day).
    pub fn spent_on(&self, day: NaiveDate) -> MicroUsd {
        if self.spend_day == Some(day) {
            self.spent
        } else {
            MicroUsd(0)
        }
    }
}

impl Aggregate for VerifyProfile {
    const STREAM_TYPE: &'static str = "verify_profile";
    type Event = VerifyProfileEvent;

    fn apply(&mut self, event: &VerifyProfileEvent, at: DateTime<Utc>) {
        match event {
            VerifyProfileEvent::Created {
                profile_id,
                organization_id,
                settings,
            } => {
                self.id = Some(*profile_id);
                self.organization_id = Some(*organization_id);
                self.settings = Some(settings.clone());
            }
            VerifyProfileEvent::Updated { settings } => self.settings = Some(settings.clone()),
            VerifyProfileEvent::Deleted {} => self.deleted = true,
            VerifyProfileEvent::SendReserved(r) => {
                let day = at.date_naive();
                if self.spend_day != Some(day) {
                    self.spend_day = Some(day);
                    self.spent = MicroUsd(0);
                    self.thresholds_reached.clear();
                }
                self.spent = MicroUsd(self.spent.0.saturating_add(r.cost.0));
                prune(&mut self.sends, at);
                self.sends.push(at);
                self.numbers.retain(|_, n| {
                    n.latest_at
                        .is_some_and(|t| at - t < Duration::seconds(NUMBER_MEMORY_SECS))
                });
                let number = self.numbers.entry(r.phone_digest.clone()).or_default();
                prune(&mut number.sends, at);
                number.sends.push(at);
                number.latest = Some(r.verification_id);
                number.latest_at = Some(at);
                self.clients.retain(|_, times| {
                    prune(times, at);
                    !times.is_empty()
                });
                if let Some(client) = &r.client_digest {
                    self.clients.entry(client.clone()).or_default().push(at);
                }
            }
            VerifyProfileEvent::SpendThresholdReached { day, percent, .. } => {
                if self.spend_day == Some(*day) && !self.thresholds_reached.contains(percent) {
                    self.thresholds_reached.push(*percent);
                }
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyProfileError {
    #[error("no such verify profile")]
    NotFound,
    #[error("this verify profile already exists")]
    AlreadyExists,
    #[error("the profile does not allow sending codes to {}", country.unwrap_or("this destination"))]
    DestinationNotAllowed { country: Option<&'static str> },
    #[error("too many codes were sent to this phone number; try again later")]
    TooManySendsToNumber { retry_after_secs: i64 },
    #[error("too many codes were sent for this verify profile; try again later")]
    TooManySendsForProfile { retry_after_secs: i64 },
    #[error("too many codes were requested from this address; try again later")]
    TooManySendsFromClient { retry_after_secs: i64 },
    #[error("the verify profile's daily spend limit is reached")]
    DailySpendLimitReached { retry_after_secs: i64 },
}

/// Sends allowed per [`SEND_WINDOW_SECS`], per destination number, per profile and per
/// calling client address. Configuration, passed in by the shell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendLimits {
    pub per_number: usize,
    pub per_profile: usize,
    pub per_client: usize,
}

#[derive(Debug, Clone)]
pub enum VerifyProfileCommand {
    Create {
        profile_id: Uuid,
        organization_id: Uuid,
        settings: ProfileSettings,
    },
    /// Replace the settings (the shell merged the patch into the current ones).
    Update {
        settings: ProfileSettings,
    },
    Delete,
    /// Reserve a send to a number in `country` (None: unknown), refusing it when the
    /// allowlist, a rate limit or the daily spend limit says no.
    ReserveSend {
        reservation: SendReserved,
        country: Option<&'static str>,
        limits: SendLimits,
    },
}

/// Seconds until the oldest of `times` leaves the window, when `times` is full.
fn throttled(times: &[DateTime<Utc>], allowed: usize, now: DateTime<Utc>) -> Option<i64> {
    let window = Duration::seconds(SEND_WINDOW_SECS);
    let recent: Vec<_> = times.iter().filter(|t| now - **t < window).collect();
    match recent.first() {
        Some(oldest) if recent.len() >= allowed => {
            Some((window - (now - **oldest)).num_seconds().max(1))
        }
        _ if allowed == 0 => Some(SEND_WINDOW_SECS),
        _ => None,
    }
}

fn seconds_to_midnight(now: DateTime<Utc>) -> i64 {
    let next = now
        .date_naive()
        .succ_opt()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc());
    next.map_or(86_400, |t| (t - now).num_seconds().max(1))
}

pub fn decide(
    profile: &VerifyProfile,
    cmd: VerifyProfileCommand,
    ctx: &Ctx,
) -> Result<Vec<VerifyProfileEvent>, VerifyProfileError> {
    let live = profile.id.is_some() && !profile.deleted;
    match cmd {
        VerifyProfileCommand::Create {
            profile_id,
            organization_id,
            settings,
        } => {
            if profile.id.is_some() {
                return Err(VerifyProfileError::AlreadyExists);
            }
            Ok(vec![VerifyProfileEvent::Created {
                profile_id,
                organization_id,
                settings,
            }])
        }
        _ if !live => Err(VerifyProfileError::NotFound),
        VerifyProfileCommand::Update { settings } => {
            if profile.settings.as_ref() == Some(&settings) {
                return Ok(vec![]);
            }
            Ok(vec![VerifyProfileEvent::Updated { settings }])
        }
        VerifyProfileCommand::Delete => Ok(vec![VerifyProfileEvent::Deleted {}]),
        VerifyProfileCommand::ReserveSend {
            reservation,
            country,
            limits,
        } => reserve_send(profile, reservation, country, limits, ctx.now),
    }
}

fn reserve_send(
    profile: &VerifyProfile,
    reservation: SendReserved,
    country: Option<&'static str>,
    limits: SendLimits,
    now: DateTime<Utc>,
) -> Result<Vec<VerifyProfileEvent>, VerifyProfileError> {
    let Some(settings) = &profile.settings else {
        return Err(VerifyProfileError::NotFound);
    };
    if !settings
        .channel(reservation.channel)
        .whitelisted_destinations
        .allows(country)
    {
        return Err(VerifyProfileError::DestinationNotAllowed { country });
    }
    let number_sends = profile
        .numbers
        .get(&reservation.phone_digest)
        .map(|n| n.sends.as_slice())
        .unwrap_or_default();
    if let Some(retry_after_secs) = throttled(number_sends, limits.per_number, now) {
        return Err(VerifyProfileError::TooManySendsToNumber { retry_after_secs });
    }
    if let Some(client) = &reservation.client_digest {
        let client_sends = profile
            .clients
            .get(client)
            .map(Vec::as_slice)
            .unwrap_or_default();
        if let Some(retry_after_secs) = throttled(client_sends, limits.per_client, now) {
            return Err(VerifyProfileError::TooManySendsFromClient { retry_after_secs });
        }
    }
    if let Some(retry_after_secs) = throttled(&profile.sends, limits.per_profile, now) {
        return Err(VerifyProfileError::TooManySendsForProfile { retry_after_secs });
    }
    let day = now.date_naive();
    let before = profile.spent_on(day);
    let after = MicroUsd(before.0.saturating_add(reservation.cost.0));
    let mut events = Vec::new();
    if let Some(limit) = settings.enforced_limit() {
        if after > limit {
            return Err(VerifyProfileError::DailySpendLimitReached {
                retry_after_secs: seconds_to_midnight(now),
            });
        }
        let reached = if profile.spend_day == Some(day) {
            profile.thresholds_reached.as_slice()
        } else {
            &[]
        };
        for percent in SPEND_THRESHOLDS {
            let mark = i128::from(limit.0) * i128::from(percent);
            if !reached.contains(&percent) && i128::from(after.0) * 100 >= mark && limit.0 > 0 {
                events.push(VerifyProfileEvent::SpendThresholdReached {
                    day,
                    percent,
                    spent: after,
                    limit,
                });
            }
        }
    }
    events.insert(0, VerifyProfileEvent::SendReserved(reservation));
    Ok(events)
}

#[cfg(test)]
#[path = "profile_tests.rs"]
mod tests;

/// Changes to a profile's settings, as parsed from a create or update request. `None`
/// leaves a field as it is; for the webhook URLs, `Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct ProfilePatch {
    pub name: Option<String>,
    pub webhook_url: Option<Option<WebhookUrl>>,
    pub webhook_failover_url: Option<Option<WebhookUrl>>,
    pub language: Option<String>,
    pub daily_spend_limit: Option<MicroUsd>,
    pub daily_spend_limit_enabled: Option<bool>,
    pub sms: Option<ChannelPatch>,
    pub call: Option<ChannelPatch>,
    pub flashcall: Option<ChannelPatch>,
}

/// Changes to one channel's settings (deep merge: unnamed fields stay).
#[derive(Debug, Clone, Default)]
pub struct ChannelPatch {
    pub app_name: Option<AppName>,
    pub code_length: Option<CodeLength>,
    pub default_verification_timeout_secs: Option<TimeoutSecs>,
    pub messaging_template_id: Option<Uuid>,
    pub whitelisted_destinations: Option<Destinations>,
    pub alpha_sender: Option<Option<String>>,
}

impl ChannelPatch {
    fn apply_to(self, mut c: ChannelSettings) -> ChannelSettings {
        if let Some(v) = self.app_name {
            c.app_name = Some(v);
        }
        if let Some(v) = self.code_length {
            c.code_length = v;
        }
        if let Some(v) = self.default_verification_timeout_secs {
            c.default_verification_timeout_secs = v;
        }
        if let Some(v) = self.messaging_template_id {
            c.messaging_template_id = Some(v);
        }
        if let Some(v) = self.whitelisted_destinations {
            c.whitelisted_destinations = v;
        }
        if let Some(v) = self.alpha_sender {
            c.alpha_sender = v;
        }
        c
    }

    /// Every template id the patch names, to check that it exists.
    pub fn template_id(&self) -> Option<Uuid> {
        self.messaging_template_id
    }
}

/// The language a new profile speaks unless told otherwise.
pub const DEFAULT_LANGUAGE: &str = "en-US";

impl ProfilePatch {
    /// The settings of a new profile (`name` is required by the API layer).
    pub fn into_new_settings(self, name: String) -> ProfileSettings {
        let base = ProfileSettings {
            name,
            webhook_url: None,
            webhook_failover_url: None,
            language: DEFAULT_LANGUAGE.to_owned(),
            daily_spend_limit: None,
            daily_spend_limit_enabled: false,
            sms: ChannelSettings::default(),
            call: ChannelSettings::default(),
            flashcall: ChannelSettings::default(),
        };
        self.apply_to(base)
    }

    /// The settings after this patch.
    pub fn apply_to(self, mut s: ProfileSettings) -> ProfileSettings {
        if let Some(v) = self.name {
            s.name = v;
        }
        if let Some(v) = self.webhook_url {
            s.webhook_url = v;
        }
        if let Some(v) = self.webhook_failover_url {
            s.webhook_failover_url = v;
        }
        if let Some(v) = self.language {
            s.language = v;
        }
        if let Some(v) = self.daily_spend_limit {
            s.daily_spend_limit = Some(v);
        }
        if let Some(v) = self.daily_spend_limit_enabled {
            s.daily_spend_limit_enabled = v;
        }
        if let Some(p) = self.sms {
            s.sms = p.apply_to(s.sms);
        }
        if let Some(p) = self.call {
            s.call = p.apply_to(s.call);
        }
        if let Some(p) = self.flashcall {
            s.flashcall = p.apply_to(s.flashcall);
        }
        s
    }

    /// The message template ids this patch names.
    pub fn template_ids(&self) -> Vec<Uuid> {
        [&self.sms, &self.call, &self.flashcall]
            .into_iter()
            .flatten()
            .filter_map(ChannelPatch::template_id)
            .collect()
    }
}
