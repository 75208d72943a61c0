//! New data keys, written in batches. Every SendVerification to a new number needs a new
//! key, and on SQLite each single-row insert was one more write transaction queued behind
//! the write gate (under load, about one for every two commands). Requests now queue here;
//! one writer task takes the gate, then everything queued by then, and stores it with ONE
//! multi-row insert: one transaction, one commit for the whole batch. Each request still
//! hears whether its own row went in, so the race between two callers on one subject is
//! settled as before (the loser loads the winner's key).

use std::collections::HashSet;
use std::sync::OnceLock;

use tokio::sync::{mpsc, oneshot};
use warden_commands::ports::SecretsError;

use crate::db::{queued_batch, Database};

/// The most keys one insert takes (3 parameters each).
const MAX_BATCH: usize = 64;

#[derive(Clone)]
pub(super) struct NewKey {
    pub subject: String,
    pub wrapped: Vec<u8>,
    pub created_at: String,
}

struct Job {
    key: NewKey,
    /// Whether this row is the stored one (false: the subject already had a row).
    reply: oneshot::Sender<Result<bool, SecretsError>>,
}

/// The writer's queue, started by the first new key (it needs a runtime).
#[derive(Default)]
pub(super) struct KeyWriter {
    sender: OnceLock<mpsc::UnboundedSender<Job>>,
}

impl KeyWriter {
    /// Stores `key` unless its subject has a row already; says which happened.
    pub async fn insert(&self, db: &Database, key: NewKey) -> Result<bool, SecretsError> {
        let sender = self.sender.get_or_init(|| {
            let (sender, receiver) = mpsc::unbounded_channel();
            // The task holds the database but not the queue: when the vault goes, the
            // queue closes and the task ends.
            tokio::spawn(write_loop(db.clone(), receiver));
            sender
        });
        let (reply, answer) = oneshot::channel();
        let job = Job {
            key: key.clone(),
            reply,
        };
        if sender.send(job).is_ok() {
            if let Ok(stored) = answer.await {
                return stored;
            }
        }
        // The writer is gone (the runtime it was started on has ended): write alone. If it
        // had stored this row before it went, the insert finds it and the caller loads it.
        let _write = db.writes.enter().await;
        let stored = insert_batch(db, &[&key]).await.map_err(super::db_err)?;
        Ok(stored.first().copied().unwrap_or(false))
    }
}

async fn write_loop(db: Database, mut queue: mpsc::UnboundedReceiver<Job>) {
    while let Some(first) = queue.recv().await {
        // The gate first, then the queue: whatever arrived while this waited joins the batch.
        let _write = db.writes.enter().await;
        let jobs = queued_batch(first, &mut queue, MAX_BATCH);
        let keys: Vec<&NewKey> = jobs.iter().map(|j| &j.key).collect();
        let outcome = insert_batch(&db, &keys).await;
        drop(keys);
        match outcome {
            Ok(stored) => {
                for (job, stored) in jobs.into_iter().zip(stored) {
                    let _ = job.reply.send(Ok(stored));
                }
            }
            Err(e) => {
                let e = super::db_err(e);
                for job in jobs {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// One statement for the batch. A subject that appears twice goes in once: only its first
/// request can have stored its row.
async fn insert_batch(db: &Database, keys: &[&NewKey]) -> Result<Vec<bool>, sqlx::Error> {
    let mut seen = HashSet::new();
    let firsts: Vec<bool> = keys
        .iter()
        .map(|k| seen.insert(k.subject.as_str()))
        .collect();
    let rows: Vec<&NewKey> = keys
        .iter()
        .zip(&firsts)
        .filter(|(_, first)| **first)
        .map(|(k, _)| *k)
        .collect();
    let values: Vec<String> = (0..rows.len())
        .map(|i| format!("(${}, ${}, ${}, NULL)", 3 * i + 1, 3 * i + 2, 3 * i + 3))
        .collect();
    let sql = format!(
        "INSERT INTO data_keys (subject, wrapped_key, created_at, destroyed_at) VALUES {} \
         ON CONFLICT (subject) DO NOTHING RETURNING subject",
        values.join(", ")
    );
    let mut query = sqlx::query_scalar::<_, String>(&sql);
    for row in &rows {
        query = query
            .bind(row.subject.as_str())
            .bind(row.wrapped.as_slice())
            .bind(row.created_at.as_str());
    }
    let inserted: HashSet<String> = query.fetch_all(&db.pool).await?.into_iter().collect();
    Ok(keys
        .iter()
        .zip(firsts)
        .map(|(k, first)| first && inserted.contains(&k.subject))
        .collect())
}
