//! `sessions`: open and ended sessions by token digest — what authenticates a bearer token.
//! Activity (for the idle timeout) is kept beside it in `session_activity`, written by the
//! API on use; it is operational state, not history, so it is not event-sourced.

use async_trait::async_trait;
use serde::Serialize;
use sqlx::{AnyConnection, AnyPool, FromRow};
use warden_domain::chain::format_time;
use warden_domain::user::UserEvent;
use warden_domain::RecordedEvent;

use crate::{EventProjector, ProjectionError};

pub struct SessionsProjector;

#[derive(Debug, Clone, PartialEq, Eq, FromRow, Serialize)]
pub struct SessionRow {
    pub session_id: String,
    pub user_id: String,
    pub token_digest: String,
    pub created_at: String,
    pub expires_at: String,
    pub idle_timeout_secs: i64,
    pub ended_at: Option<String>,
    /// `two_factor_setup` for a session that may only enroll a second factor.
    pub scope: Option<String>,
}

#[async_trait]
impl EventProjector for SessionsProjector {
    fn name(&self) -> &'static str {
        "sessions"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["sessions", "two_factor_challenges"]
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        if event.stream_type != "user" {
            return Ok(());
        }
        let user_id = event.stream_id.trim_start_matches("user-");
        match event
            .decode::<UserEvent>()
            .map_err(|e| ProjectionError::decode(event, e))?
        {
            UserEvent::SessionStarted {
                session_id,
                token_digest,
                expires_at,
                idle_timeout_secs,
                scope,
            } => {
                sqlx::query(
                    "INSERT INTO sessions (session_id, user_id, token_digest, created_at, expires_at, \
                     idle_timeout_secs, ended_at, scope) VALUES ($1, $2, $3, $4, $5, $6, NULL, $7)",
                )
                .bind(session_id.to_string())
                .bind(user_id)
                .bind(token_digest.0)
                .bind(format_time(event.recorded_at))
                .bind(format_time(expires_at))
                .bind(idle_timeout_secs)
                .bind(scope)
                .execute(&mut *conn)
                .await?;
            }
            UserEvent::TwoFactorChallengeStarted {
                challenge_id,
                expires_at,
            } => {
                sqlx::query(
                    "INSERT INTO two_factor_challenges (challenge_id, user_id, expires_at) VALUES ($1, $2, $3)",
                )
                .bind(challenge_id.to_string())
                .bind(user_id)
                .bind(format_time(expires_at))
                .execute(&mut *conn)
                .await?;
            }
            UserEvent::SessionEnded { session_id, .. } => {
                sqlx::query(
                    "UPDATE sessions SET ended_at = $2 WHERE session_id = $1 AND ended_at IS NULL",
                )
                .bind(session_id.to_string())
                .bind(format_time(event.recorded_at))
                .execute(&mut *conn)
                .await?;
            }
            UserEvent::Disabled {} | UserEvent::Removed {} | UserEvent::Forgotten {} => {
                sqlx::query(
                    "UPDATE sessions SET ended_at = $2 WHERE user_id = $1 AND ended_at IS NULL",
                )
                .bind(user_id)
                .bind(format_time(event.recorded_at))
                .execute(&mut *conn)
                .await?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// A session that may authenticate a request: not ended, not past its hard expiry.
/// The caller checks the idle timeout against [`last_activity`].
pub async fn find_live(
    pool: &AnyPool,
    token_digest: &str,
    now: &str,
) -> Result<Option<SessionRow>, sqlx::Error> {
    sqlx::query_as::<_, SessionRow>(
        "SELECT session_id, user_id, token_digest, created_at, expires_at, idle_timeout_secs, ended_at, scope \
         FROM sessions WHERE token_digest = $1 AND ended_at IS NULL AND expires_at > $2",
    )
    .bind(token_digest)
    .bind(now)
    .fetch_optional(pool)
    .await
}

/// When the session was last used (its start if never).
pub async fn last_activity(pool: &AnyPool, session: &SessionRow) -> Result<String, sqlx::Error> {
    let seen: Option<String> =
        sqlx::query_scalar("SELECT last_used_at FROM session_activity WHERE session_id = $1")
            .bind(&session.session_id)
            .fetch_optional(pool)
            .await?;
    Ok(seen.unwrap_or_else(|| session.created_at.clone()))
}

/// Records use of a session (for the idle timeout).
pub async fn touch(pool: &AnyPool, session_id: &str, now: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO session_activity (session_id, last_used_at) VALUES ($1, $2) \
         ON CONFLICT (session_id) DO UPDATE SET last_used_at = excluded.last_used_at",
    )
    .bind(session_id)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn all(pool: &AnyPool) -> Result<Vec<SessionRow>, sqlx::Error> {
    sqlx::query_as::<_, SessionRow>(
        "SELECT session_id, user_id, token_digest, created_at, expires_at, idle_timeout_secs, ended_at, scope \
         FROM sessions ORDER BY session_id",
    )
    .fetch_all(pool)
    .await
}

/// The user a sign-in challenge belongs to.
pub async fn challenge_owner(
    pool: &AnyPool,
    challenge_id: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT user_id FROM two_factor_challenges WHERE challenge_id = $1")
        .bind(challenge_id)
        .fetch_optional(pool)
        .await
}
