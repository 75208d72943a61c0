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
        let plans = TablePlan::read(conn, tables, &schema).await?;
        // All the copies in one round trip: a rebuild copies every table of every read
        // model, and one statement at a time this was most of its start.
        let mut script = format!("CREATE SCHEMA {schema};\n");
        for plan in &plans {
            for statement in plan.create.iter().chain(&plan.keys) {
                script.push_str(statement);
                script.push_str(";\n");
            }
        }
        script.push_str(&format!(
            "SET LOCAL search_path TO {schema}, {search_path};"
        ));
        execute_script(conn, &script).await?;
        Ok(Self {
            schema,
            search_path,
            tables: plans
                .into_iter()
                .map(|plan| ShadowTable {
                    name: plan.name,
                    home: plan.home,
                    deferred_indexes: plan.deferred,
                })
                .collect(),
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
    /// Reads the live `tables` (wherever the search path finds them), in one statement,
    /// and plans their copies in `schema` (quoted).
    pub async fn read(
        conn: &mut AnyConnection,
        tables: &[&str],
        schema: &str,
    ) -> Result<Vec<Self>, ProjectionError> {
        let names = serde_json::to_string(tables).map_err(catalog)?;
        // Per table: its schema, its keys and unique constraints (name and definition),
        // and its other indexes (name, unique, definition), as JSON.
        let found: Option<String> = sqlx::query(
            "SELECT CAST(json_agg(json_build_array(t.name, \
               (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                WHERE c.oid = to_regclass(quote_ident(t.name))), \
               (SELECT COALESCE(json_agg(json_build_array(k.conname, pg_get_constraintdef(k.oid)) \
                  ORDER BY k.conname), '[]') FROM pg_constraint k \
                WHERE k.conrelid = to_regclass(quote_ident(t.name)) AND k.contype IN ('p', 'u', 'x')), \
               (SELECT COALESCE(json_agg(json_build_array(c.relname, i.indisunique, \
                  pg_get_indexdef(i.indexrelid)) ORDER BY c.relname), '[]') \
                FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
                WHERE i.indrelid = to_regclass(quote_ident(t.name)) \
                AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)) \
             ) ORDER BY t.place) AS TEXT) \
             FROM json_array_elements_text(CAST($1 AS json)) WITH ORDINALITY AS t(name, place)",
        )
        .bind(names)
        .fetch_one(&mut *conn)
        .await?
        .try_get(0)?;
        type Found = (
            String,
            Option<String>,
            Vec<(String, String)>,
            Vec<(String, bool, String)>,
        );
        let found: Vec<Found> = match found {
            Some(text) => serde_json::from_str(&text).map_err(catalog)?,
            None => Vec::new(),
        };
        found
            .into_iter()
            .map(|(table, home, constraints, indexes)| {
                Self::plan(&table, home, constraints, indexes, schema)
            })
            .collect()
    }

    fn plan(
        table: &str,
        home: Option<String>,
        constraints: Vec<(String, String)>,
        indexes: Vec<(String, bool, String)>,
        schema: &str,
    ) -> Result<Self, ProjectionError> {
        let name = quote(table);
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
        let mut keys: Vec<String> = constraints
            .into_iter()
            .map(|(constraint, definition)| {
                format!(
                    "ALTER TABLE {copy} ADD CONSTRAINT {} {definition}",
                    quote(&constraint)
                )
            })
            .collect();
        // Other indexes: unique ones with the keys, the rest after the fill.
        let mut deferred = Vec::new();
        for (index, unique, definition) in indexes {
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

fn catalog(e: serde_json::Error) -> ProjectionError {
    ProjectionError::Db(sqlx::Error::Protocol(format!(
        "unexpected answer from the catalog: {e}"
    )))
}

/// Runs several `;`-separated statements in one round trip (the simple query protocol).
async fn execute_script(conn: &mut AnyConnection, script: &str) -> Result<(), ProjectionError> {
    sqlx::raw_sql(script).execute(&mut *conn).await?;
    Ok(())
}

async fn execute(conn: &mut AnyConnection, sql: &str) -> Result<(), ProjectionError> {
    sqlx::query(sql).execute(&mut *conn).await?;
    Ok(())
}

/// An identifier, quoted for Postgres.
pub(crate) fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}
