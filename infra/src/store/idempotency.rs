//! Idempotency-Key records: `in_flight` when a request starts, `committed` when its append
//! commits (set inside the append transaction), `done` once its response is saved.

use chrono::{DateTime, Utc};
use sqlx::Row;
use warden_commands::store::{IdempotencyBegin, IdempotencyKey, SavedResponse, StoreError};
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
        for _ in 0..3 {
            let inserted = sqlx::query(
                "INSERT INTO idempotency_keys \
                     (scope, key, request_hash, state, created_at, locked_at) \
                 VALUES ($1, $2, $3, 'in_flight', $4, $4) \
                 ON CONFLICT (scope, key) DO NOTHING",
            )
            .bind(key.scope.as_str())
            .bind(key.key.as_str())
            .bind(request_hash)
            .bind(now_text.as_str())
            .execute(&self.pool)
            .await
            .map_err(db_error)?
            .rows_affected();
            if inserted > 0 {
                return Ok(IdempotencyBegin::Started);
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
                "committed" => Ok(IdempotencyBegin::CommittedWithoutResponse),
                "in_flight" => {
                    let locked_at: String = row.try_get("locked_at").map_err(db_error)?;
                    if locked_at >= cutoff {
                        return Ok(IdempotencyBegin::InFlight);
                    }
                    // Abandoned by a crashed request: take it over, unless someone else
                    // just did (compare-and-set on `locked_at`).
                    let taken = sqlx::query(
                        "UPDATE idempotency_keys SET locked_at = $3 \
                         WHERE scope = $1 AND key = $2 AND state = 'in_flight' AND locked_at = $4",
                    )
                    .bind(key.scope.as_str())
                    .bind(key.key.as_str())
                    .bind(now_text.as_str())
                    .bind(locked_at.as_str())
                    .execute(&self.pool)
                    .await
                    .map_err(db_error)?
                    .rows_affected();
                    Ok(if taken > 0 {
                        IdempotencyBegin::Started
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
        key: &IdempotencyKey,
        response: SavedResponse,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE idempotency_keys SET state = 'done', status = $3, body = $4 \
             WHERE scope = $1 AND key = $2",
        )
        .bind(key.scope.as_str())
        .bind(key.key.as_str())
        .bind(i64::from(response.status))
        .bind(response.body)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    pub(super) async fn idempotency_abandon(&self, key: &IdempotencyKey) -> Result<(), StoreError> {
        // A committed effect must never run twice, so only a record still in flight goes.
        sqlx::query(
            "DELETE FROM idempotency_keys \
             WHERE scope = $1 AND key = $2 AND state = 'in_flight'",
        )
        .bind(key.scope.as_str())
        .bind(key.key.as_str())
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
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

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}
