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
    let mut out = String::with_capacity(n * 6);
    for i in 1..=n {
        if i > 1 {
            out.push_str(", ");
        }
        push_bind(&mut out, i);
    }
    out
}

/// `n` rows of `width` binds each: `($1, $2, $3), ($4, $5, $6), …`. Written into one
/// string: a rebuild builds one of these (up to 3,200 binds) per statement.
pub(crate) fn rows(n: usize, width: usize) -> String {
    let mut out = String::with_capacity(n * (width * 7 + 4));
    for r in 0..n {
        if r > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for c in 1..=width {
            if c > 1 {
                out.push_str(", ");
            }
            push_bind(&mut out, r * width + c);
        }
        out.push(')');
    }
    out
}

fn push_bind(out: &mut String, i: usize) {
    use std::fmt::Write;
    let _ = write!(out, "${i}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_and_rows_number_binds_in_order() {
        assert_eq!(placeholders(0), "");
        assert_eq!(placeholders(3), "$1, $2, $3");
        assert_eq!(rows(1, 1), "($1)");
        assert_eq!(rows(2, 3), "($1, $2, $3), ($4, $5, $6)");
        let many = rows(200, 16);
        assert!(many.starts_with("($1, $2, "), "{many}");
        assert!(many.ends_with(", $3199, $3200)"), "{many}");
        assert_eq!(many.matches('$').count(), 3_200);
    }
}
