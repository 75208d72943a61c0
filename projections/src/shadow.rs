//! Postgres rebuilds into shadow tables. Re-inserting a read model into the table the same
//! transaction has just emptied makes every unique-index insert step over the dead row of
//! the same key, and leaves the table twice its size until a vacuum; filling fresh copies
//! and swapping them in does neither. The copies live in a schema of their own, put first
//! on the transaction's `search_path`, so the projectors' SQL reaches them unchanged while
//! every other table (the log, the checkpoints, other read models) is still found where it
//! is. Unique indexes and keys are built before the fill (`ON CONFLICT` needs them), the
//! others after it, in one pass each. The swap happens in the rebuild's transaction:
//! readers see the old tables until it commits, and a failed rebuild leaves nothing.

use sqlx::{AnyConnection, Row};

use crate::ProjectionError;

/// The copies of a rebuild's tables, and what is left to do before they replace them.
pub struct Shadow {
    /// The schema holding the copies (quoted).
    schema: String,
    /// The transaction's `search_path` before the copies went first on it.
    search_path: String,
    tables: Vec<ShadowTable>,
}

struct ShadowTable {
    /// Quoted.
    name: String,
    /// The schema of the live table, the one `search_path` finds (quoted).
    home: String,
    /// `CREATE INDEX` statements to run once the copy is filled.
    deferred_indexes: Vec<String>,
}

impl Shadow {
    /// Creates an empty copy of each of `tables` (columns, defaults, checks, keys and
    /// unique indexes, with the live names) in a new schema, and puts that schema first on
    /// the transaction's `search_path`.
    pub async fn create(
        conn: &mut AnyConnection,
        tables: &[&str],
    ) -> Result<Self, ProjectionError> {
        let search_path: String =
            sqlx::query("SELECT CAST(current_setting('search_path') AS TEXT)")
                .fetch_one(&mut *conn)
                .await?
                .try_get(0)?;
        let schema = quote(&format!("warden_rebuild_{}", uuid::Uuid::new_v4().simple()));
        execute(conn, &format!("CREATE SCHEMA {schema}")).await?;
        let mut shadow = Self {
            schema,
            search_path,
            tables: Vec::with_capacity(tables.len()),
        };
        for table in tables {
            let table = shadow.copy(conn, table).await?;
            shadow.tables.push(table);
        }
        execute(
            conn,
            &format!(
                "SET LOCAL search_path TO {}, {}",
                shadow.schema, shadow.search_path
            ),
        )
        .await?;
        Ok(shadow)
    }

    async fn copy(
        &self,
        conn: &mut AnyConnection,
        table: &str,
    ) -> Result<ShadowTable, ProjectionError> {
        let plan = TablePlan::read(conn, table, &self.schema).await?;
        for statement in plan.create.iter().chain(&plan.keys) {
            execute(conn, statement).await?;
        }
        Ok(ShadowTable {
            name: plan.name,
            home: plan.home,
            deferred_indexes: plan.deferred,
        })
    }

    /// Builds the deferred indexes, restores the `search_path`, and replaces each live
    /// table with its copy (same names for the table, its keys and its indexes).
    pub async fn swap(self, conn: &mut AnyConnection) -> Result<(), ProjectionError> {
        for table in &self.tables {
            for create in &table.deferred_indexes {
                execute(conn, create).await?;
            }
        }
        execute(
            conn,
            &format!("SET LOCAL search_path TO {}", self.search_path),
        )
        .await?;
        for table in &self.tables {
            execute(conn, &format!("DROP TABLE {}.{}", table.home, table.name)).await?;
            execute(
                conn,
                &format!(
                    "ALTER TABLE {}.{} SET SCHEMA {}",
                    self.schema, table.name, table.home
                ),
            )
            .await?;
        }
        execute(conn, &format!("DROP SCHEMA {}", self.schema)).await
    }
}

/// The statements that make an empty copy of a live table in another schema: the same
/// columns, defaults and checks, keys and indexes under the live names.
pub(crate) struct TablePlan {
    /// The table's name (quoted).
    pub name: String,
    /// The schema of the live table, the one `search_path` finds (quoted).
    pub home: String,
    /// `CREATE TABLE … (LIKE …)`.
    pub create: Vec<String>,
    /// Keys, unique constraints and unique indexes (`ON CONFLICT` needs them during a fill).
    pub keys: Vec<String>,
    /// The other indexes, cheaper to build once the copy is filled.
    pub deferred: Vec<String>,
}

impl TablePlan {
    /// Reads the live `table` (wherever the search path finds it) and plans its copy in
    /// `schema` (quoted).
    pub async fn read(
        conn: &mut AnyConnection,
        table: &str,
        schema: &str,
    ) -> Result<Self, ProjectionError> {
        let name = quote(table);
        let home: Option<String> = sqlx::query(
            "SELECT CAST(n.nspname AS TEXT) FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass($1)",
        )
        .bind(&name)
        .fetch_optional(&mut *conn)
        .await?
        .map(|row| row.try_get(0))
        .transpose()?;
        let home = quote(&home.ok_or_else(|| {
            ProjectionError::Db(sqlx::Error::Protocol(format!(
                "no table {table} on the search path to rebuild"
            )))
        })?);
        let (live, copy) = (format!("{home}.{name}"), format!("{schema}.{name}"));
        let create = vec![format!(
            "CREATE TABLE {copy} (LIKE {live} INCLUDING ALL EXCLUDING INDEXES)"
        )];
        // Keys and unique constraints, under their live names.
        let constraints = sqlx::query(
            "SELECT CAST(conname AS TEXT), pg_get_constraintdef(oid) FROM pg_constraint \
             WHERE conrelid = CAST($1 AS regclass) AND contype IN ('p', 'u', 'x') \
             ORDER BY conname",
        )
        .bind(&live)
        .fetch_all(&mut *conn)
        .await?;
        let mut keys = Vec::new();
        for row in constraints {
            let (constraint, definition): (String, String) = (row.try_get(0)?, row.try_get(1)?);
            keys.push(format!(
                "ALTER TABLE {copy} ADD CONSTRAINT {} {definition}",
                quote(&constraint)
            ));
        }
        // Other indexes: unique ones with the keys, the rest after the fill.
        let indexes = sqlx::query(
            "SELECT CAST(c.relname AS TEXT), i.indisunique, pg_get_indexdef(i.indexrelid) \
             FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             WHERE i.indrelid = CAST($1 AS regclass) \
             AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid) \
             ORDER BY c.relname",
        )
        .bind(&live)
        .fetch_all(&mut *conn)
        .await?;
        let mut deferred = Vec::new();
        for row in indexes {
            let (index, unique, definition): (String, bool, String) =
                (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            // `CREATE [UNIQUE] INDEX name ON table USING method (columns) [WHERE …]`.
            let Some((_, using)) = definition.split_once(" USING ") else {
                return Err(ProjectionError::Db(sqlx::Error::Protocol(format!(
                    "unexpected definition of index {index}: {definition}"
                ))));
            };
            let create = format!(
                "CREATE {}INDEX {} ON {copy} USING {using}",
                if unique { "UNIQUE " } else { "" },
                quote(&index)
            );
            if unique {
                keys.push(create);
            } else {
                deferred.push(create);
            }
        }
        Ok(Self {
            name,
            home,
            create,
            keys,
            deferred,
        })
    }
}

async fn execute(conn: &mut AnyConnection, sql: &str) -> Result<(), ProjectionError> {
    sqlx::query(sql).execute(&mut *conn).await?;
    Ok(())
}

/// An identifier, quoted for Postgres.
pub(crate) fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}
