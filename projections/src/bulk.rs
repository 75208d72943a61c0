//! Postgres rebuilds write the rows of insert-only tables with `COPY`, on a connection of
//! their own, while the rest of the log is replayed on the rebuild's connection. Such a
//! table (the audit log: one entry per event, never read back by its projector) is most of
//! a rebuild's writing, and written through the rebuild's connection it was a serial wait
//! of every batch.
//!
//! The copier's transaction creates the tables in a schema of its own (`warden_copies_…`)
//! with their keys, fills them, builds their other indexes (as the shadow copies do: one
//! pass over the filled table, not an insert into the index per row), and commits only
//! when the rebuild has replayed everything. The rebuild's transaction then moves them into
//! place in its swap and drops the schema. Until that commit nothing of it is visible: a
//! failed or cancelled rebuild leaves nothing. A crash in the moment between the two
//! commits leaves an unused schema, which the next rebuild (holding the rebuild lock, so no
//! other is running) drops before it starts.

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{AnyConnection, Connection, Executor, Row};
use tokio::sync::mpsc;

use crate::shadow::{quote, TablePlan};
use crate::ProjectionError;

/// The prefix of the copier's schemas.
const SCHEMA_PREFIX: &str = "warden_copies_";

/// Bytes of `COPY` text sent to the copier at a time (one `COPY` statement each): small
/// enough that what it still has to take after the replay's last batch is short.
const CHUNK: usize = 1 << 18;

/// Chunks waiting for the copier: enough to keep it busy, few enough to bound memory.
const QUEUED_CHUNKS: usize = 4;

/// One chunk of `COPY` text rows for one table.
struct Chunk {
    table: &'static str,
    columns: &'static [&'static str],
    data: Vec<u8>,
}

/// A rebuild's copier: rows go in through [`Bulk::row`], and [`Bulk::finish`] commits them.
pub struct Bulk {
    /// The copier's schema (quoted).
    schema: String,
    /// The tables it fills: (name, home schema), both quoted.
    tables: Vec<(String, String)>,
    chunks: Option<mpsc::Sender<Chunk>>,
    copier: Option<tokio::task::JoinHandle<Result<(), ProjectionError>>>,
    /// Rows not yet sent, all of `pending_table`.
    pending: Vec<u8>,
    pending_table: Option<(&'static str, &'static [&'static str])>,
}

impl Bulk {
    /// Drops the schemas of copiers whose rebuilds died between the copier's commit and
    /// their own. The caller holds the rebuild lock, so no other rebuild is running.
    pub(crate) async fn drop_leftovers(conn: &mut AnyConnection) -> Result<(), ProjectionError> {
        let pattern = format!("{}%", SCHEMA_PREFIX.replace('_', "\\_"));
        let schemas = sqlx::query(
            "SELECT CAST(nspname AS TEXT) FROM pg_namespace WHERE nspname LIKE $1 ORDER BY 1",
        )
        .bind(pattern)
        .fetch_all(&mut *conn)
        .await?;
        for row in schemas {
            let schema: String = row.try_get(0)?;
            tracing::warn!(schema, "dropping a rebuild's leftover copies");
            sqlx::query(&format!("DROP SCHEMA {} CASCADE", quote(&schema)))
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }

    /// Plans the copies of `tables` (read on the rebuild's connection, before it changes
    /// its search path) and starts the copier on a new connection made with `options`.
    pub(crate) async fn start(
        conn: &mut AnyConnection,
        tables: &[&str],
        options: PgConnectOptions,
    ) -> Result<Self, ProjectionError> {
        let schema = quote(&format!("{SCHEMA_PREFIX}{}", uuid::Uuid::new_v4().simple()));
        let plans = TablePlan::read(conn, tables, &schema).await?;
        let names = plans
            .iter()
            .map(|p| (p.name.clone(), p.home.clone()))
            .collect();
        let (chunks, receiver) = mpsc::channel(QUEUED_CHUNKS);
        let copier = tokio::spawn(copy(options, schema.clone(), plans, receiver));
        Ok(Self {
            schema,
            tables: names,
            chunks: Some(chunks),
            copier: Some(copier),
            pending: Vec::with_capacity(CHUNK + 4096),
            pending_table: None,
        })
    }

    /// One row of `table`: `values` in the order of `columns`, `None` for NULL.
    pub async fn row(
        &mut self,
        table: &'static str,
        columns: &'static [&'static str],
        values: &[Option<&str>],
    ) -> Result<(), ProjectionError> {
        if self.pending_table.is_some_and(|(t, _)| t != table) {
            self.send().await?;
        }
        self.pending_table = Some((table, columns));
        push_row(&mut self.pending, values);
        if self.pending.len() >= CHUNK {
            self.send().await?;
        }
        Ok(())
    }

    async fn send(&mut self) -> Result<(), ProjectionError> {
        let Some((table, columns)) = self.pending_table.take() else {
            return Ok(());
        };
        let data = std::mem::replace(&mut self.pending, Vec::with_capacity(CHUNK + 4096));
        let sent = match &self.chunks {
            Some(chunks) => chunks
                .send(Chunk {
                    table,
                    columns,
                    data,
                })
                .await
                .is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        // The copier stopped: its error says why.
        self.chunks = None;
        self.join().await?;
        Err(copier_gone())
    }

    async fn join(&mut self) -> Result<(), ProjectionError> {
        match self.copier.take() {
            Some(copier) => match copier.await {
                Ok(result) => result,
                Err(e) => Err(ProjectionError::Db(sqlx::Error::Protocol(format!(
                    "the rebuild's copier did not finish: {e}"
                )))),
            },
            None => Err(copier_gone()),
        }
    }

    /// Sends what is left, waits for the copier to build the tables' keys and indexes and
    /// commit, then moves the tables into place on the rebuild's connection (whose
    /// transaction holds the read models' checkpoints, so no live pass writes them).
    pub(crate) async fn finish(mut self, conn: &mut AnyConnection) -> Result<(), ProjectionError> {
        self.send().await?;
        self.chunks = None;
        self.join().await?;
        for (name, home) in &self.tables {
            for statement in [
                format!("DROP TABLE {home}.{name}"),
                format!("ALTER TABLE {}.{name} SET SCHEMA {home}", self.schema),
            ] {
                sqlx::query(&statement).execute(&mut *conn).await?;
            }
        }
        sqlx::query(&format!("DROP SCHEMA {}", self.schema))
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}

impl Drop for Bulk {
    /// A rebuild that stops early stops its copier; closing its connection rolls its
    /// transaction back.
    fn drop(&mut self) {
        if let Some(copier) = self.copier.take() {
            copier.abort();
        }
    }
}

fn copier_gone() -> ProjectionError {
    ProjectionError::Db(sqlx::Error::Protocol(
        "the rebuild's copier stopped".to_owned(),
    ))
}

/// The copier: one transaction that creates the tables with their keys, takes every chunk
/// in a `COPY` statement of its own, then builds the other indexes and commits. Kept up
/// row by row during the fill, the audit log's index by organization and time was half the
/// copier's CPU, and the copier held up the replay.
async fn copy(
    options: PgConnectOptions,
    schema: String,
    plans: Vec<TablePlan>,
    mut chunks: mpsc::Receiver<Chunk>,
) -> Result<(), ProjectionError> {
    let mut conn = PgConnection::connect_with(&options).await?;
    conn.execute("BEGIN").await?;
    conn.execute(format!("CREATE SCHEMA {schema}").as_str())
        .await?;
    for plan in &plans {
        for statement in plan.create.iter().chain(&plan.keys) {
            conn.execute(statement.as_str()).await?;
        }
    }
    while let Some(chunk) = chunks.recv().await {
        let columns: Vec<String> = chunk.columns.iter().map(|c| quote(c)).collect();
        let statement = format!(
            "COPY {schema}.{} ({}) FROM STDIN",
            quote(chunk.table),
            columns.join(", ")
        );
        let mut copy = conn.copy_in_raw(&statement).await?;
        copy.send(chunk.data).await?;
        copy.finish().await?;
    }
    for plan in &plans {
        for statement in &plan.deferred {
            conn.execute(statement.as_str()).await?;
        }
    }
    conn.execute("COMMIT").await?;
    conn.close().await?;
    Ok(())
}

/// Appends one row in `COPY`'s text format: tab-separated, `\N` for NULL, and a backslash
/// before each backslash, tab, newline and carriage return in a value.
fn push_row(out: &mut Vec<u8>, values: &[Option<&str>]) {
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            out.push(b'\t');
        }
        let Some(value) = value else {
            out.extend_from_slice(b"\\N");
            continue;
        };
        if !value
            .bytes()
            .any(|b| matches!(b, b'\\' | b'\t' | b'\n' | b'\r'))
        {
            out.extend_from_slice(value.as_bytes());
            continue;
        }
        for byte in value.bytes() {
            match byte {
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'\t' => out.extend_from_slice(b"\\t"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                other => out.push(other),
            }
        }
    }
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_escapes_what_would_split_a_value_and_marks_nulls() {
        let mut out = Vec::new();
        push_row(
            &mut out,
            &[
                Some("a\tb"),
                None,
                Some("line\nbreak\r"),
                Some(r#"{"q":"\"\\"}"#),
                Some(""),
            ],
        );
        push_row(&mut out, &[Some("\\N"), Some("\\.")]);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "a\\tb\t\\N\tline\\nbreak\\r\t{\"q\":\"\\\\\"\\\\\\\\\"}\t\n\\\\N\t\\\\.\n"
        );
    }
}
