//! Turning sqlx errors into [`StoreError`]s without leaking bound values: only the error
//! kind, code and the server's message (which names constraints and columns, never values).

use sqlx::error::{DatabaseError, ErrorKind};
use warden_commands::store::StoreError;

/// Maps an sqlx error: unreachable or overloaded backends are `Unavailable`, the rest
/// `Backend`.
pub(super) fn db_error(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_) => StoreError::Unavailable(e.to_string()),
        sqlx::Error::Database(db) => {
            let text = describe(db.as_ref());
            if is_transient(db.as_ref()) {
                StoreError::Unavailable(text)
            } else {
                StoreError::Backend(text)
            }
        }
        other => StoreError::Backend(other.to_string()),
    }
}

/// `"<code>: <message>"`. Postgres keeps the offending values in `detail`, which is left out.
pub(super) fn describe(db: &dyn DatabaseError) -> String {
    match db.code() {
        Some(code) => format!("{code}: {}", db.message()),
        None => db.message().to_owned(),
    }
}

pub(super) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.kind() == ErrorKind::UniqueViolation)
}

/// Whether a unique violation is the one on `(stream_id, version)` (a concurrent writer),
/// as opposed to a re-used `event_id`.
pub(super) fn violates_stream_version(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            db.constraint() == Some("events_stream_version_key")
                || db.message().contains("events.stream_id, events.version")
        }
        _ => false,
    }
}

/// Errors that say "try again later" rather than "this request is wrong": Postgres
/// connection, shutdown and resource classes, deadlocks and serialization failures; SQLite
/// BUSY and LOCKED (the busy timeout ran out).
fn is_transient(db: &dyn DatabaseError) -> bool {
    let Some(code) = db.code() else {
        return false;
    };
    let code = code.as_ref();
    if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        // SQLite reports its (extended) result code; the primary code is the low byte.
        return code.parse::<i64>().is_ok_and(|c| matches!(c & 0xff, 5 | 6));
    }
    code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("57P")
        || code == "40001"
        || code == "40P01"
}
