//! The per-stream hash chain: `hash = SHA-256(prev_hash ‖ canonical bytes)`, where the
//! canonical bytes are the envelope without `global_position` and `hash`, built from the
//! exact texts that were stored. Sealed fields are hashed as ciphertext, so destroying a
//! data key never breaks the chain.

use serde::Serialize;
use sha2::{Digest as _, Sha256};

/// `prev_hash` of a stream's first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The stored form of one event, exactly as hashed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RawEvent {
    pub event_id: String,
    pub stream_id: String,
    pub stream_type: String,
    pub version: i64,
    pub event_type: String,
    pub schema_version: i32,
    /// `YYYY-MM-DDTHH:MM:SS.ffffffZ`, as stored.
    pub recorded_at: String,
    /// Payload JSON text, as stored.
    pub payload: String,
    /// Metadata JSON text, as stored.
    pub metadata: String,
    pub prev_hash: String,
    pub hash: String,
}

/// Length-prefixed fields, so no two different envelopes share canonical bytes.
pub fn canonical_bytes(e: &RawEvent) -> Vec<u8> {
    let version = e.version.to_string();
    let schema = e.schema_version.to_string();
    let fields: [&str; 9] = [
        &e.event_id,
        &e.stream_id,
        &e.stream_type,
        &version,
        &e.event_type,
        &schema,
        &e.recorded_at,
        &e.payload,
        &e.metadata,
    ];
    let mut out = Vec::with_capacity(fields.iter().map(|f| f.len() + 9).sum());
    for f in fields {
        out.extend_from_slice(&(f.len() as u64).to_be_bytes());
        out.extend_from_slice(f.as_bytes());
        out.push(b'\n');
    }
    out
}

/// The hash an event must carry, given its predecessor's.
pub fn compute_hash(prev_hash: &str, e: &RawEvent) -> String {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(canonical_bytes(e));
    hex::encode(h.finalize())
}

/// The result of checking one stream's chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainReport {
    pub valid: bool,
    pub events: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_broken_version: Option<i64>,
}

/// Walks a stream in version order and names the first event whose version, link or
/// hash does not hold.
pub fn verify(events: &[RawEvent]) -> ChainReport {
    let mut walk = ChainWalk::default();
    walk.push(events);
    walk.report()
}

/// A chain check fed a stream page by page, in version order, so a long stream is checked
/// without holding all of it. After the first broken event it only counts.
#[derive(Debug, Clone)]
pub struct ChainWalk {
    prev: String,
    events: i64,
    first_broken_version: Option<i64>,
}

impl Default for ChainWalk {
    fn default() -> Self {
        Self {
            prev: GENESIS.to_owned(),
            events: 0,
            first_broken_version: None,
        }
    }
}

impl ChainWalk {
    /// Checks the next events of the stream.
    pub fn push(&mut self, events: &[RawEvent]) {
        for e in events {
            self.events += 1;
            if self.first_broken_version.is_some() {
                continue;
            }
            let expected_version = self.events;
            if e.version != expected_version
                || e.prev_hash != self.prev
                || compute_hash(&self.prev, e) != e.hash
            {
                self.first_broken_version = Some(expected_version.min(e.version.max(1)));
                continue;
            }
            self.prev.clone_from(&e.hash);
        }
    }

    pub fn report(&self) -> ChainReport {
        ChainReport {
            valid: self.first_broken_version.is_none(),
            events: self.events,
            first_broken_version: self.first_broken_version,
        }
    }
}

/// The fixed text form of `recorded_at` that is stored and hashed:
/// `%Y-%m-%dT%H:%M:%S%.6fZ`. Written digit by digit (chrono's formatter re-parses the
/// pattern on every call, and `write!` costs as much again; projectors call this for every
/// event they replay); years outside 0..=9999 and leap seconds take chrono's own path, so
/// the text is the same.
pub fn format_time(t: chrono::DateTime<chrono::Utc>) -> String {
    use chrono::{Datelike, Timelike};
    let (year, nanos) = (t.year(), t.nanosecond());
    let (Ok(year), true) = (u32::try_from(year), nanos < 1_000_000_000) else {
        return t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    };
    if year > 9999 {
        return t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    }
    let mut out = String::with_capacity(27);
    push_digits(&mut out, year, 4);
    out.push('-');
    push_digits(&mut out, t.month(), 2);
    out.push('-');
    push_digits(&mut out, t.day(), 2);
    out.push('T');
    push_digits(&mut out, t.hour(), 2);
    out.push(':');
    push_digits(&mut out, t.minute(), 2);
    out.push(':');
    push_digits(&mut out, t.second(), 2);
    out.push('.');
    push_digits(&mut out, nanos / 1_000, 6);
    out.push('Z');
    out
}

/// The last `width` decimal digits of `value`, zero-padded.
fn push_digits(out: &mut String, value: u32, width: u32) {
    for place in (0..width).rev() {
        let digit = (value / 10u32.pow(place)) % 10;
        out.push(char::from_digit(digit, 10).unwrap_or('0'));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_time_writes_what_the_chrono_pattern_writes() {
        use chrono::{TimeZone, Utc};
        let chrono_text = |t: chrono::DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
        let mut seconds: i64 = -62_167_219_200; // 0000-01-01
        let mut nanos: u32 = 0;
        // A walk over 10,000 years with odd steps, so every field takes many values.
        while seconds < 253_402_300_800 {
            let t = Utc.timestamp_opt(seconds, nanos).single().unwrap();
            assert_eq!(format_time(t), chrono_text(t));
            seconds += 31_622_407 + i64::from(nanos % 997);
            nanos = (nanos + 123_456_789) % 1_000_000_000;
        }
        for t in [
            Utc.with_ymd_and_hms(2026, 12, 6, 3, 4, 5).unwrap(),
            Utc.timestamp_opt(0, 999_999_999).unwrap(),
            Utc.with_ymd_and_hms(10_000, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(-1, 12, 31, 23, 59, 59).unwrap(),
            Utc.timestamp_opt(1_483_228_799, 1_500_000_000).unwrap(), // a leap second
        ] {
            assert_eq!(format_time(t), chrono_text(t));
        }
        assert_eq!(
            format_time(Utc.timestamp_opt(1_765_000_000, 1_234_567).unwrap()),
            "2025-12-06T05:46:40.001234Z"
        );
    }

    fn event(version: i64, prev: &str) -> RawEvent {
        let mut e = RawEvent {
            event_id: format!("00000000-0000-7000-8000-00000000000{version}"),
            stream_id: "user-1".into(),
            stream_type: "user".into(),
            version,
            event_type: "user.registered".into(),
            schema_version: 1,
            recorded_at: "2026-01-01T00:00:00.000000Z".into(),
            payload: r#"{"a":1}"#.into(),
            metadata: r#"{"correlation_id":"x"}"#.into(),
            prev_hash: prev.into(),
            hash: String::new(),
        };
        e.hash = compute_hash(prev, &e);
        e
    }

    #[test]
    fn an_untouched_chain_verifies_and_one_changed_byte_is_named() {
        let e1 = event(1, GENESIS);
        let e2 = event(2, &e1.hash);
        let e3 = event(3, &e2.hash);
        let mut chain = vec![e1, e2, e3];
        assert!(verify(&chain).valid);
        if let Some(e) = chain.get_mut(1) {
            e.payload = r#"{"a":2}"#.into();
        }
        let report = verify(&chain);
        assert!(!report.valid);
        assert_eq!(report.first_broken_version, Some(2));
    }
}
