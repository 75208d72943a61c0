//! Multi-row statements for set-based projection batches: both backends take the same
//! `$n` placeholders, and every statement stays well under their bind limits.

use sqlx::AnyConnection;

use crate::ProjectionError;

/// Rows per multi-row statement (at most 16 binds a row: 3,200 per statement, well under
/// every bind limit).
pub(crate) const ROWS_PER_STATEMENT: usize = 200;

/// The rows of `select` (ending in the key column) whose key is one of `keys`, in
/// statements of at most [`ROWS_PER_STATEMENT`] binds.
pub(crate) async fn rows_in(
    conn: &mut AnyConnection,
    select: &str,
    keys: &[String],
) -> Result<Vec<sqlx::any::AnyRow>, ProjectionError> {
    let mut rows = Vec::new();
    for chunk in keys.chunks(ROWS_PER_STATEMENT) {
        let sql = format!("{select} IN ({})", placeholders(chunk.len()));
        let mut query = sqlx::query(&sql);
        for key in chunk {
            query = query.bind(key);
        }
        rows.extend(query.fetch_all(&mut *conn).await?);
    }
    Ok(rows)
}

/// `$1, $2, …, $n`.
pub(crate) fn placeholders(n: usize) -> String {
    (1..=n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `n` rows of `width` binds each: `($1, $2, $3), ($4, $5, $6), …`.
pub(crate) fn rows(n: usize, width: usize) -> String {
    (0..n)
        .map(|r| {
            let binds = (1..=width)
                .map(|c| format!("${}", r * width + c))
                .collect::<Vec<_>>()
                .join(", ");
            format!("({binds})")
        })
        .collect::<Vec<_>>()
        .join(", ")
}
