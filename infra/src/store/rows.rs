//! One `events` row as stored, and its two readings: the raw form that was hashed, and the
//! parsed [`RecordedEvent`]. Unparseable rows are `Corrupt`, never a panic.

use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;
use sqlx::postgres::PgRow;
use sqlx::Row;
use uuid::Uuid;
use warden_commands::store::StoreError;
use warden_domain::chain::RawEvent;
use warden_domain::{EventMetadata, RecordedEvent};

use super::errors::db_error;

/// The `events` columns, in the order [`EventRow::decode`] reads them: every read of
/// events selects exactly these.
pub(super) const EVENT_COLUMNS: &str = "global_position, event_id, stream_id, stream_type, \
     version, event_type, schema_version, recorded_at, payload, metadata, prev_hash, hash";

/// The texts of one stored event.
#[derive(Debug, Clone)]
pub(super) struct EventRow {
    pub global_position: i64,
    pub raw: RawEvent,
}

/// A row `events` rows can be read from: the `Any` driver's, or the Postgres driver's
/// (for the log read in order, see `Database::log_reads`).
/// Columns are read by their place in [`EVENT_COLUMNS`] (a look-up by name hashed each
/// name for each of a rebuild's rows).
pub(super) trait EventRowSource {
    fn int(&self, column: usize) -> Result<i64, sqlx::Error>;
    fn text(&self, column: usize) -> Result<String, sqlx::Error>;
}

impl EventRowSource for AnyRow {
    fn int(&self, column: usize) -> Result<i64, sqlx::Error> {
        self.try_get(column)
    }

    fn text(&self, column: usize) -> Result<String, sqlx::Error> {
        self.try_get(column)
    }
}

impl EventRowSource for PgRow {
    fn int(&self, column: usize) -> Result<i64, sqlx::Error> {
        self.try_get(column)
    }

    fn text(&self, column: usize) -> Result<String, sqlx::Error> {
        self.try_get(column)
    }
}

impl EventRow {
    pub fn decode(row: &impl EventRowSource) -> Result<Self, StoreError> {
        let global_position = row.int(0).map_err(db_error)?;
        let schema_version = row.int(6).map_err(db_error)?;
        let schema_version = i32::try_from(schema_version)
            .map_err(|_| corrupt(global_position, "schema_version is out of range"))?;
        Ok(Self {
            global_position,
            raw: RawEvent {
                event_id: row.text(1).map_err(db_error)?,
                stream_id: row.text(2).map_err(db_error)?,
                stream_type: row.text(3).map_err(db_error)?,
                version: row.int(4).map_err(db_error)?,
                event_type: row.text(5).map_err(db_error)?,
                schema_version,
                recorded_at: row.text(7).map_err(db_error)?,
                payload: row.text(8).map_err(db_error)?,
                metadata: row.text(9).map_err(db_error)?,
                prev_hash: row.text(10).map_err(db_error)?,
                hash: row.text(11).map_err(db_error)?,
            },
        })
    }

    pub fn into_raw(self) -> RawEvent {
        self.raw
    }

    /// Parses the stored texts. The error names the position and the field, never content.
    pub fn into_recorded(self) -> Result<RecordedEvent, StoreError> {
        let position = self.global_position;
        let raw = self.raw;
        let event_id = Uuid::parse_str(&raw.event_id)
            .map_err(|_| corrupt(position, "event_id is not a UUID"))?;
        let recorded_at = parse_time(&raw.recorded_at)
            .ok_or_else(|| corrupt(position, "recorded_at is not a time"))?;
        let payload = serde_json::from_str(&raw.payload)
            .map_err(|_| corrupt(position, "payload is not JSON"))?;
        let metadata: EventMetadata = serde_json::from_str(&raw.metadata)
            .map_err(|_| corrupt(position, "metadata is not valid event metadata"))?;
        Ok(RecordedEvent {
            event_id,
            stream_id: raw.stream_id,
            stream_type: raw.stream_type,
            version: raw.version,
            global_position: position,
            event_type: raw.event_type,
            schema_version: raw.schema_version,
            recorded_at,
            payload,
            metadata,
            prev_hash: raw.prev_hash,
            hash: raw.hash,
        })
    }
}

/// Reads a `format_time` text back.
pub(super) fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn corrupt(position: i64, what: &str) -> StoreError {
    StoreError::Corrupt(format!("event at global position {position}: {what}"))
}
