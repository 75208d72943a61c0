//! Idempotency-Key records: `in_flight` when a request starts, `committed` when its append
//! commits (set inside the append transaction), `done` once its response is saved.
//!
//! Each start or takeover stores a fresh random owner token (`owner_token`), handed to the
//! request in its [`IdempotencyLease`]. Finishing, abandoning and the append's commit mark
//! all require it, so a slow request whose stale record was taken over by a retry can no
//! longer touch the record, nor commit a second effect.

use chrono::{DateTime, Utc};
use sqlx::Row;
use warden_commands::store::{
    IdempotencyAbandon, IdempotencyBegin, IdempotencyKey, IdempotencyLease, SavedResponse,
    StoreError,
};
use warden_domain::chain::format_time;

use super::errors::db_error;
use super::SqlEventStore;

impl SqlEventStore {
    pub(super) async fn idempotency_begin(
        &self,
        key: &IdempotencyKey,
        request_hash: &str,
        now: DateTime<Utc>,
        stale_after: chrono::Duration,
    ) -> Result<IdempotencyBegin, StoreError> {
        let now_text = format_time(now);
        // Times are fixed-width texts, so they compare as they sort. An out-of-range cutoff
        // (a huge `stale_after`) means nothing is ever stale.
        let cutoff = now
            .checked_sub_signed(stale_after)
            .map(format_time)
            .unwrap_or_default();
        // A record deleted between our insert and our read (an abandon, a purge) makes
        // the insert worth another try.
        let lease = IdempotencyLease {
            key: key.clone(),
            owner: new_owner_token(),
        };
        for _ in 0..3 {
            let inserted = sqlx::query(
                "INSERT INTO idempotency_keys \
                     (scope, key, request_hash, state, created_at, locked_at, owner_token) \
                 VALUES ($1, $2, $3, 'in_flight', $4, $4, $5) \
                 ON CONFLICT (scope, key) DO NOTHING",
            )
            .bind(key.scope.as_str())
            .bind(key.key.as_str())
            .bind(request_hash)
            .bind(now_text.as_str())
            .bind(lease.owner.as_str())
            .execute(&self.pool)
            .await
            .map_err(db_error)?
            .rows_affected();
            if inserted > 0 {
                return Ok(IdempotencyBegin::Started(lease));
            }
            let row = sqlx::query(
                "SELECT request_hash, state, status, body, locked_at FROM idempotency_keys \
                 WHERE scope = $1 AND key = $2",
            )
            .bind(key.scope.as_str())
            .bind(key.key.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
            let Some(row) = row else {
                continue;
            };
            let stored_hash: String = row.try_get("request_hash").map_err(db_error)?;
            if stored_hash != request_hash {
                return Ok(IdempotencyBegin::Mismatch);
            }
            let state: String = row.try_get("state").map_err(db_error)?;
            return match state.as_str() {
                "done" => {
                    let status: Option<i64> = row.try_get("status").map_err(db_error)?;
                    let body: Option<Vec<u8>> = row.try_get("body").map_err(db_error)?;
                    let status = status
                        .and_then(|s| u16::try_from(s).ok())
                        .ok_or_else(|| corrupt("a finished record has no valid status"))?;
                    Ok(IdempotencyBegin::Replay(SavedResponse {
                        status,
                        body: body.unwrap_or_default(),
                    }))
                }
                "committed" => {
                    // Its owner may still be finishing (waiting for read models, sending a
                    // code): only a record this old has lost its response for good.
                    let locked_at: String = row.try_get("locked_at").map_err(db_error)?;
                    Ok(if locked_at >= cutoff {
                        IdempotencyBegin::InFlight
                    } else {
                        IdempotencyBegin::CommittedWithoutResponse
                    })
                }
                "in_flight" => {
                    let locked_at: String = row.try_get("locked_at").map_err(db_error)?;
                    if locked_at >= cutoff {
                        return Ok(IdempotencyBegin::InFlight);
                    }
                    // Abandoned by a crashed (or very slow) request: take it over under a
                    // new owner token, unless someone else just did (compare-and-set on
                    // `locked_at`). The old owner's finish, abandon and commit now fail.
                    let taken = sqlx::query(
                        "UPDATE idempotency_keys SET locked_at = $3, owner_token = $5 \
                         WHERE scope = $1 AND key = $2 AND state = 'in_flight' AND locked_at = $4",
                    )
                    .bind(key.scope.as_str())
                    .bind(key.key.as_str())
                    .bind(now_text.as_str())
                    .bind(locked_at.as_str())
                    .bind(lease.owner.as_str())
                    .execute(&self.pool)
                    .await
                    .map_err(db_error)?
                    .rows_affected();
                    Ok(if taken > 0 {
                        IdempotencyBegin::Started(lease)
                    } else {
                        IdempotencyBegin::InFlight
                    })
                }
                _ => Err(corrupt("an idempotency record has an unknown state")),
            };
        }
        Err(StoreError::Backend(
            "an idempotency record kept disappearing".into(),
        ))
    }

    pub(super) async fn idempotency_finish(
        &self,
        lease: &IdempotencyLease,
        response: SavedResponse,
    ) -> Result<(), StoreError> {
        let saved = sqlx::query(
            "UPDATE idempotency_keys SET state = 'done', status = $4, body = $5 \
             WHERE scope = $1 AND key = $2 AND owner_token = $3 \
               AND state IN ('in_flight', 'committed')",
        )
        .bind(lease.key.scope.as_str())
        .bind(lease.key.key.as_str())
        .bind(lease.owner.as_str())
        .bind(i64::from(response.status))
        .bind(response.body)
        .execute(&self.pool)
        .await
        .map_err(db_error)?
        .rows_affected();
        if saved == 0 {
            return Err(StoreError::IdempotencyLeaseLost);
        }
        Ok(())
    }

    pub(super) async fn idempotency_abandon(
        &self,
        lease: &IdempotencyLease,
    ) -> Result<IdempotencyAbandon, StoreError> {
        // A committed effect must never run twice, so only a record still in flight goes.
        let dropped = sqlx::query(
            "DELETE FROM idempotency_keys \
             WHERE scope = $1 AND key = $2 AND owner_token = $3 AND state = 'in_flight'",
        )
        .bind(lease.key.scope.as_str())
        .bind(lease.key.key.as_str())
        .bind(lease.owner.as_str())
        .execute(&self.pool)
        .await
        .map_err(db_error)?
        .rows_affected();
        if dropped > 0 {
            return Ok(IdempotencyAbandon::Dropped);
        }
        // Not in flight under this owner: either it committed (only its owner moves it on
        // from there, so this read is stable), or it is no longer ours.
        let committed = sqlx::query(
            "SELECT CAST(1 AS BIGINT) AS one FROM idempotency_keys \
             WHERE scope = $1 AND key = $2 AND owner_token = $3 AND state = 'committed'",
        )
        .bind(lease.key.scope.as_str())
        .bind(lease.key.key.as_str())
        .bind(lease.owner.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        match committed {
            Some(_) => Ok(IdempotencyAbandon::Committed),
            None => Err(StoreError::IdempotencyLeaseLost),
        }
    }

    pub(super) async fn idempotency_purge(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let deleted = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
            .bind(format_time(before))
            .execute(&self.pool)
            .await
            .map_err(db_error)?
            .rows_affected();
        Ok(deleted)
    }
}

/// 128 random bits, hex: unguessable and, in practice, never repeated.
fn new_owner_token() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}
