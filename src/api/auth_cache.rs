//! What a bearer token opens, cached in memory so an authenticated request costs no
//! database round trip in the common case.
//!
//! Correctness comes from the log, not from a guess at freshness: the cache is an
//! [`Observer`] of the projection runner, which tells it of every event the read models
//! take in (whichever instance applied it) *before* that position counts as reached. An
//! event on a user's stream (sign-out, password change, disabling, a revoked API key, a
//! 2FA reset, being forgotten) evicts that user's entries; an event on an organization's
//! stream (groups, memberships, policy) evicts the organization's. So a request that waited
//! for its own write (read-your-writes) never meets a stale entry on this instance.
//!
//! Another instance's write reaches this cache on the runner's next pass (it polls every
//! 200 ms); [`TTL`] bounds staleness even if this instance's runner were stalled. Entries
//! are only added while the runner is observing, and only if nothing was evicted between
//! the database read and the insert, so a read that raced an eviction is never kept.
//! Time-dependent checks (expiry, idle timeout, user status) are made on every request from
//! the cached rows. Failed look-ups are not cached.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use warden_domain::permissions::PermissionSet;
use warden_domain::RecordedEvent;
use warden_projections::runtime::Observer;
use warden_projections::{members, sessions, users};

/// The longest an entry is trusted without being read again.
pub const TTL: Duration = Duration::from_secs(1);
/// Entries kept at most; past it, expired ones go, then everything.
const CAPACITY: usize = 50_000;

/// What a token resolved to: its credential, its user and the permissions they hold.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub credential: Credential,
    pub user: Arc<users::UserRow>,
    pub permissions: PermissionSet,
}

/// What a bearer token opens.
#[derive(Debug, Clone)]
pub enum Credential {
    Session {
        session: sessions::SessionRow,
        last_used: chrono::DateTime<chrono::Utc>,
    },
    ApiKey {
        key: members::ApiKeyRow,
        last_used: Option<chrono::DateTime<chrono::Utc>>,
    },
}

impl Credential {
    pub fn user_id(&self) -> &str {
        match self {
            Credential::Session { session, .. } => &session.user_id,
            Credential::ApiKey { key, .. } => &key.user_id,
        }
    }
}

struct Entry {
    resolved: Resolved,
    loaded: Instant,
}

#[derive(Default)]
struct Inner {
    /// By token digest.
    entries: HashMap<String, Entry>,
    /// Moves on every eviction: an insert prepared before it is dropped.
    generation: u64,
}

/// The token cache. Cheap to share.
#[derive(Default)]
pub struct AuthCache {
    inner: RwLock<Inner>,
}

impl AuthCache {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The entry for a token digest, if fresh.
    pub fn get(&self, digest: &str) -> Option<Resolved> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        inner
            .entries
            .get(digest)
            .filter(|e| e.loaded.elapsed() < TTL)
            .map(|e| e.resolved.clone())
    }

    /// Read before the database look-up; hand back to [`AuthCache::insert`].
    pub fn generation(&self) -> u64 {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .generation
    }

    /// Keeps what a look-up found, unless something was evicted since `generation`.
    pub fn insert(&self, digest: &str, resolved: Resolved, generation: u64) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if inner.generation != generation {
            return;
        }
        if inner.entries.len() >= CAPACITY && !inner.entries.contains_key(digest) {
            inner.entries.retain(|_, e| e.loaded.elapsed() < TTL);
            if inner.entries.len() >= CAPACITY {
                inner.entries.clear();
            }
        }
        inner.entries.insert(
            digest.to_owned(),
            Entry {
                resolved,
                loaded: Instant::now(),
            },
        );
    }

    /// Records a use written to the database, so the next request does not write it again.
    pub fn touched(&self, digest: &str, at: chrono::DateTime<chrono::Utc>) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = inner.entries.get_mut(digest) {
            match &mut entry.resolved.credential {
                Credential::Session { last_used, .. } => *last_used = at,
                Credential::ApiKey { last_used, .. } => *last_used = Some(at),
            }
        }
    }

    fn evict(&self, matches: impl Fn(&Resolved) -> bool) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        inner.generation = inner.generation.wrapping_add(1);
        inner.entries.retain(|_, e| !matches(&e.resolved));
    }

    pub fn len(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .entries
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Observer for AuthCache {
    fn observe(&self, event: &RecordedEvent) {
        if let Some(user_id) = event.stream_id.strip_prefix("user-") {
            self.evict(|r| r.user.user_id == user_id);
        } else if let Some(org_id) = event.stream_id.strip_prefix("organization-") {
            self.evict(|r| r.user.organization_id == org_id);
        }
        // Other streams (Verify, webhook endpoints) change nothing a token opens.
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use serde_json::json;
    use uuid::Uuid;
    use warden_domain::EventMetadata;

    fn resolved(user_id: &str, org: &str) -> Resolved {
        Resolved {
            credential: Credential::Session {
                session: sessions::SessionRow {
                    session_id: "s".into(),
                    user_id: user_id.into(),
                    token_digest: "d".into(),
                    created_at: String::new(),
                    expires_at: String::new(),
                    idle_timeout_secs: 60,
                    ended_at: None,
                    scope: None,
                },
                last_used: Utc::now(),
            },
            user: Arc::new(users::UserRow {
                user_id: user_id.into(),
                organization_id: org.into(),
                role: "organization_owner".into(),
                email: None,
                first_name: None,
                last_name: None,
                phone_number: None,
                status: "enabled".into(),
                created_at: String::new(),
                updated_at: String::new(),
                last_sign_in_at: None,
                two_factor_enabled: 0,
                two_factor_method: None,
                backup_codes_remaining: 0,
                two_factor_phone: None,
                two_factor_failures: 0,
            }),
            permissions: PermissionSet::all(),
        }
    }

    fn event(stream_id: &str) -> RecordedEvent {
        RecordedEvent {
            global_position: 1,
            event_id: Uuid::now_v7(),
            stream_id: stream_id.into(),
            stream_type: stream_id.split('-').next().unwrap_or("").into(),
            version: 1,
            event_type: "x.happened".into(),
            schema_version: 1,
            recorded_at: Utc::now(),
            payload: json!({}),
            metadata: EventMetadata::default(),
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    #[test]
    fn a_users_event_evicts_that_user_only() {
        let cache = AuthCache::default();
        cache.insert("a", resolved("u1", "o1"), cache.generation());
        cache.insert("b", resolved("u2", "o1"), cache.generation());
        cache.observe(&event("user-u1"));
        assert!(cache.get("a").is_none());
        assert!(cache.get("b").is_some());
    }

    #[test]
    fn an_organizations_event_evicts_its_members() {
        let cache = AuthCache::default();
        cache.insert("a", resolved("u1", "o1"), cache.generation());
        cache.insert("b", resolved("u2", "o2"), cache.generation());
        cache.observe(&event("organization-o1"));
        assert!(cache.get("a").is_none());
        assert!(cache.get("b").is_some());
        cache.observe(&event("verification-v1"));
        assert!(cache.get("b").is_some());
    }

    #[test]
    fn a_lookup_that_raced_an_eviction_is_not_kept() {
        let cache = AuthCache::default();
        let before = cache.generation();
        cache.observe(&event("user-u9"));
        cache.insert("a", resolved("u1", "o1"), before);
        assert!(cache.get("a").is_none());
    }
}
