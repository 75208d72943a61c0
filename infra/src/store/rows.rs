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

/// The `events` columns, in the order [`raw_event`] and [`recorded_event`] reads them: every read of
/// events selects exactly these.
pub(super) const EVENT_COLUMNS: &str = "global_position, event_id, stream_id, stream_type, \
     version, event_type, schema_version, recorded_at, payload, metadata, prev_hash, hash";

/// A row `events` rows can be read from: the `Any` driver's, or the Postgres driver's
/// (for the log read in order, see `Database::log_reads`).
/// Columns are read by their place in [`EVENT_COLUMNS`] (a look-up by name hashed each
/// name for each of a rebuild's rows).
pub(super) trait EventRowSource {
    fn int(&self, column: usize) -> Result<i64, sqlx::Error>;
    fn text(&self, column: usize) -> Result<&str, sqlx::Error>;
}

impl EventRowSource for AnyRow {
    fn int(&self, column: usize) -> Result<i64, sqlx::Error> {
        self.try_get(column)
    }

    fn text(&self, column: usize) -> Result<&str, sqlx::Error> {
        self.try_get(column)
    }
}

impl EventRowSource for PgRow {
    fn int(&self, column: usize) -> Result<i64, sqlx::Error> {
        self.try_get(column)
    }

    fn text(&self, column: usize) -> Result<&str, sqlx::Error> {
        self.try_get(column)
    }
}

/// The texts of one stored event, as they were hashed.
pub(super) fn raw_event(row: &impl EventRowSource) -> Result<RawEvent, StoreError> {
    let global_position = row.int(0).map_err(db_error)?;
    let text = |column| row.text(column).map(str::to_owned).map_err(db_error);
    Ok(RawEvent {
        event_id: text(1)?,
        stream_id: text(2)?,
        stream_type: text(3)?,
        version: row.int(4).map_err(db_error)?,
        event_type: text(5)?,
        schema_version: schema_version(row, global_position)?,
        recorded_at: text(7)?,
        payload: text(8)?,
        metadata: text(9)?,
        prev_hash: text(10)?,
        hash: text(11)?,
    })
}

/// Parses a row straight from the texts it holds (the ones parsed further, the id, the time,
/// the payload and the metadata, are never copied out). The error names the position and the
/// field, never content.
pub(super) fn recorded_event(row: &impl EventRowSource) -> Result<RecordedEvent, StoreError> {
    let position = row.int(0).map_err(db_error)?;
    let text = |column| row.text(column).map_err(db_error);
    let event_id =
        Uuid::parse_str(text(1)?).map_err(|_| corrupt(position, "event_id is not a UUID"))?;
    let recorded_at =
        parse_time(text(7)?).ok_or_else(|| corrupt(position, "recorded_at is not a time"))?;
    let payload =
        serde_json::from_str(text(8)?).map_err(|_| corrupt(position, "payload is not JSON"))?;
    let metadata: EventMetadata = serde_json::from_str(text(9)?)
        .map_err(|_| corrupt(position, "metadata is not valid event metadata"))?;
    Ok(RecordedEvent {
        event_id,
        stream_id: text(2)?.to_owned(),
        stream_type: text(3)?.to_owned(),
        version: row.int(4).map_err(db_error)?,
        global_position: position,
        event_type: text(5)?.to_owned(),
        schema_version: schema_version(row, position)?,
        recorded_at,
        payload,
        metadata,
        prev_hash: text(10)?.to_owned(),
        hash: text(11)?.to_owned(),
    })
}

fn schema_version(row: &impl EventRowSource, position: i64) -> Result<i32, StoreError> {
    let version = row.int(6).map_err(db_error)?;
    i32::try_from(version).map_err(|_| corrupt(position, "schema_version is out of range"))
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
