//! The aggregates this process loaded last, by stream, so the next load of a stream reads
//! only the events after them.
//!
//! A state at version `v` is the fold of the stream's first `v` events, and those never
//! change (the log is append-only, a stream's versions are unique), so a remembered state
//! stays right for as long as it is kept, whichever instance appends next: a load still
//! reads every event after it. A command's own new events are folded in with the time the
//! store recorded (rounded), so a kept state is exactly the fold of the log. Snapshots
//! remain what a cold load (another process, or a stream this one let go) starts from.
//!
//! A command's first attempt decides on a kept state without reading the store at all
//! (`Pipeline::recall`): its append names the version it decided on, so if another instance
//! wrote since, the append conflicts and the next attempt loads. A refusal or a no-op is
//! given only from a loaded state, since nothing would check it.

use std::any::Any;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError};

use lru::LruCache;
use warden_domain::Aggregate;

use crate::pipeline::Loaded;

/// How many streams' states are kept (the least recently loaded go first).
pub const STATES_KEPT: usize = 2048;

pub struct StateCache {
    entries: Mutex<LruCache<String, Entry>>,
}

struct Entry {
    /// An `Arc<A>`, shared with the loads that got it.
    state: Box<dyn Any + Send + Sync>,
    version: i64,
    snapshot_version: i64,
}

impl StateCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(LruCache::new(
                NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN),
            )),
        }
    }

    /// The stream's state as last kept, if it is kept as an `A`.
    pub fn get<A: Aggregate>(&self, stream_id: &str) -> Option<Loaded<A>> {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = entries.get(stream_id)?;
        let state = Arc::clone(entry.state.downcast_ref::<Arc<A>>()?);
        Some(Loaded {
            state,
            version: entry.version,
            snapshot_version: entry.snapshot_version,
        })
    }

    /// Keeps a state folded from stored events, unless a later one of the stream is kept.
    pub fn put<A: Aggregate>(&self, stream_id: &str, loaded: &Loaded<A>) {
        if loaded.version == 0 {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries
            .peek(stream_id)
            .is_some_and(|kept| kept.version > loaded.version)
        {
            return;
        }
        entries.put(
            stream_id.to_owned(),
            Entry {
                state: Box::new(Arc::clone(&loaded.state)),
                version: loaded.version,
                snapshot_version: loaded.snapshot_version,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warden_domain::verify::profile::VerifyProfile;

    fn loaded(version: i64, snapshot_version: i64) -> Loaded<VerifyProfile> {
        Loaded {
            state: Arc::new(VerifyProfile {
                deleted: version % 2 == 0,
                ..VerifyProfile::default()
            }),
            version,
            snapshot_version,
        }
    }

    #[test]
    fn a_kept_state_is_returned_only_as_its_own_type_and_never_goes_back() {
        let cache = StateCache::new(2);
        assert!(cache.get::<VerifyProfile>("p").is_none());
        cache.put("p", &loaded(0, 0));
        assert!(
            cache.get::<VerifyProfile>("p").is_none(),
            "no stream: not kept"
        );
        cache.put("p", &loaded(4, 0));
        cache.put("p", &loaded(3, 0));
        let got = cache.get::<VerifyProfile>("p").unwrap();
        assert_eq!((got.version, got.state.deleted), (4, true));
        assert!(cache
            .get::<warden_domain::verify::verification::Verification>("p")
            .is_none());
    }

    #[test]
    fn the_least_recently_loaded_stream_goes_first() {
        let cache = StateCache::new(2);
        cache.put("a", &loaded(1, 0));
        cache.put("b", &loaded(1, 0));
        assert!(cache.get::<VerifyProfile>("a").is_some());
        cache.put("c", &loaded(1, 0));
        assert!(cache.get::<VerifyProfile>("b").is_none());
        assert!(cache.get::<VerifyProfile>("a").is_some());
        assert!(cache.get::<VerifyProfile>("c").is_some());
    }
}
