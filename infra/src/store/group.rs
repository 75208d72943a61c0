//! Group commit (Postgres and SQLite): concurrent appends queue for one committer task,
//! which runs whatever has queued as ONE transaction — one append lock, one commit, one
//! WAL flush for the whole batch — instead of one each.
//!
//! Every request still gets its own checks and its own answer: each is prepared (claims,
//! idempotency mark, expected versions, hash chain) in turn, inside a savepoint when it
//! writes anything before its checks end, so a request that fails (`VersionConflict`,
//! `ClaimTaken`, `IdempotencyLeaseLost`) is rolled back alone and the others go on. A later
//! request of the batch sees the heads left by earlier ones, exactly as if they had
//! committed first. Positions are assigned under the append lock in queue order, so they
//! stay gapless and commit-ordered. Anything unexpected before the commit (a database
//! error, a race with another instance) rolls the whole batch back, and its requests are
//! then run one by one in their own transactions, so no request sees another's failure.

use std::sync::{Arc, OnceLock};

use sqlx::{Any, Transaction};
use tokio::sync::{mpsc, oneshot};
use warden_commands::store::{AppendOutcome, AppendRequest, StoreError};

use super::append::{head_in, insert_all, prepare, stream_heads, Failure, Prepared};
use super::errors::db_error;
use super::SqlEventStore;
use crate::db::queued_batch;

/// The most requests one batch takes.
const MAX_BATCH: usize = 64;
/// Rows per multi-row INSERT in a batch (12 parameters each; Postgres allows 65,535).
const BATCH_INSERT_CHUNK: usize = 400;

pub(super) struct Job {
    request: AppendRequest,
    reply: oneshot::Sender<Result<AppendOutcome, StoreError>>,
}

/// The committer's queue, started by the first append (it needs a runtime).
#[derive(Debug, Default)]
pub(super) struct GroupCommit {
    sender: OnceLock<mpsc::UnboundedSender<Job>>,
}

impl SqlEventStore {
    pub(super) fn group_sender(&self) -> Option<mpsc::UnboundedSender<Job>> {
        let group: &Arc<GroupCommit> = self.group.as_ref()?;
        let sender = group.sender.get_or_init(|| {
            let (sender, receiver) = mpsc::unbounded_channel();
            // The committer holds the pool but not the queue: when the last store handle
            // goes, the queue closes and the committer ends.
            let committer = SqlEventStore {
                pool: self.pool.clone(),
                backend: self.backend,
                group: None,
                writes: self.writes.clone(),
                log_reads: None,
            };
            tokio::spawn(committer.commit_loop(receiver));
            sender
        });
        Some(sender.clone())
    }

    async fn commit_loop(self, mut queue: mpsc::UnboundedReceiver<Job>) {
        while let Some(first) = queue.recv().await {
            // The gate first, then the queue: whatever arrived while this waited for
            // the other writers joins the batch.
            let _write = self.writes.enter().await;
            let jobs = queued_batch(first, &mut queue, MAX_BATCH);
            if jobs.len() == 1 {
                for job in jobs {
                    let result = self.append_alone(job.request).await;
                    let _ = job.reply.send(result);
                }
                continue;
            }
            self.commit_batch(jobs).await;
        }
    }

    async fn commit_batch(&self, jobs: Vec<Job>) {
        let requests: Vec<&AppendRequest> = jobs.iter().map(|j| &j.request).collect();
        let outcome = self.try_batch(&requests).await;
        drop(requests);
        match outcome {
            Ok(results) => {
                for (job, result) in jobs.into_iter().zip(results) {
                    let _ = job.reply.send(result);
                }
            }
            Err(Abort::Failed(e)) => {
                for job in jobs {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
            Err(Abort::OneByOne(why)) => {
                tracing::debug!(error = %why, "batch rolled back; appending one by one");
                for job in jobs {
                    let result = self.append_alone(job.request).await;
                    let _ = job.reply.send(result);
                }
            }
        }
    }

    /// One transaction for the whole batch. `Ok` holds each request's own result.
    async fn try_batch(
        &self,
        requests: &[&AppendRequest],
    ) -> Result<Vec<Result<AppendOutcome, StoreError>>, Abort> {
        let mut tx = self.begin_write().await.map_err(Abort::Failed)?;
        match self.batch_in(&mut tx, requests).await {
            Ok(results) => {
                // A failed commit may or may not have committed: every request hears so,
                // none is run again.
                tx.commit().await.map_err(|e| Abort::Failed(db_error(e)))?;
                Ok(results)
            }
            Err(why) => {
                if let Err(e) = tx.rollback().await {
                    tracing::warn!(error = %db_error(e), "batch rollback failed");
                }
                Err(Abort::OneByOne(why))
            }
        }
    }

    /// Prepares every request (each failure its own), then takes the lock once and inserts
    /// the survivors' events in queue order.
    async fn batch_in<'r>(
        &self,
        tx: &mut Transaction<'static, Any>,
        requests: &[&'r AppendRequest],
    ) -> Result<Vec<Result<AppendOutcome, StoreError>>, StoreError> {
        // Every stream's head in one read, instead of one per request.
        let mut stream_ids: Vec<&str> = requests
            .iter()
            .flat_map(|r| r.streams.iter().map(|s| s.stream_id.as_str()))
            .collect();
        stream_ids.sort_unstable();
        stream_ids.dedup();
        let mut known = stream_heads(tx, &stream_ids).await?;
        let mut prepared: Vec<Result<Prepared<'r>, StoreError>> =
            Vec::with_capacity(requests.len());
        for request in requests {
            let writes_first = !request.claims.is_empty()
                || !request.released_claims.is_empty()
                || request.idempotency.is_some();
            if writes_first {
                savepoint(tx, "SAVEPOINT warden_append").await?;
            }
            match prepare(tx, request, &known).await {
                Ok(p) => {
                    if writes_first {
                        savepoint(tx, "RELEASE SAVEPOINT warden_append").await?;
                    }
                    known.extend(p.heads().iter().map(|(k, v)| (k.clone(), v.clone())));
                    prepared.push(Ok(p));
                }
                Err(Failure::Store(
                    e @ (StoreError::VersionConflict { .. }
                    | StoreError::ClaimTaken { .. }
                    | StoreError::IdempotencyLeaseLost),
                )) => {
                    if writes_first {
                        savepoint(tx, "ROLLBACK TO SAVEPOINT warden_append").await?;
                    }
                    prepared.push(Err(e));
                }
                Err(Failure::Store(e)) => return Err(e),
                Err(Failure::Raced { stream_id, .. }) => {
                    return Err(StoreError::Backend(format!("raced on {stream_id}")))
                }
            }
        }

        let any_events = prepared
            .iter()
            .any(|p| p.as_ref().is_ok_and(Prepared::has_events));
        if any_events {
            self.take_append_lock(tx).await?;
        }
        let head = head_in(tx).await.map_err(failure_text)?;
        let mut ready: Vec<(&AppendRequest, Prepared<'r>)> = Vec::with_capacity(requests.len());
        let mut failures: Vec<Option<StoreError>> = Vec::with_capacity(requests.len());
        for (request, p) in requests.iter().zip(prepared) {
            match p {
                Ok(p) => {
                    ready.push((*request, p));
                    failures.push(None);
                }
                Err(e) => failures.push(Some(e)),
            }
        }
        let mut recorded = insert_all(tx, ready, head, BATCH_INSERT_CHUNK)
            .await?
            .into_iter();
        let mut at = head;
        let mut results = Vec::with_capacity(requests.len());
        for failed in failures {
            match failed {
                Some(e) => results.push(Err(e)),
                None => {
                    let events = recorded.next().unwrap_or_default();
                    at += events.len() as i64;
                    results.push(Ok(AppendOutcome {
                        events,
                        last_position: at,
                    }));
                }
            }
        }
        Ok(results)
    }
}

/// Why a batch did not commit as one.
enum Abort {
    /// Nothing was written: run each request alone.
    OneByOne(StoreError),
    /// The transaction could not start or its commit failed: every request gets this.
    Failed(StoreError),
}

fn failure_text(f: Failure) -> StoreError {
    match f {
        Failure::Store(e) => e,
        Failure::Raced { stream_id, .. } => StoreError::Backend(format!("raced on {stream_id}")),
    }
}

async fn savepoint(tx: &mut Transaction<'static, Any>, sql: &str) -> Result<(), StoreError> {
    sqlx::query(sql)
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
    Ok(())
}

/// Queues `request` for the committer and waits for its own result. If the committer is
/// gone (its runtime ended), the request is appended alone.
pub(super) async fn submit(
    store: &SqlEventStore,
    sender: &mpsc::UnboundedSender<Job>,
    request: AppendRequest,
) -> Result<AppendOutcome, StoreError> {
    let (reply, answer) = oneshot::channel();
    match sender.send(Job { request, reply }) {
        Ok(()) => answer.await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "the append committer stopped before answering".into(),
            ))
        }),
        Err(mpsc::error::SendError(job)) => store.append_alone(job.request).await,
    }
}
