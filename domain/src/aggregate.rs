//! The shape every aggregate shares: plain state evolved by its own events. Decisions are
//! free functions per aggregate (`user::decide`), called by the command pipeline.

use chrono::{DateTime, Utc};
use serde::{de::DeserializeOwned, Serialize};

use crate::event::DomainEvent;

/// An event-sourced aggregate: the state one stream's events fold into.
///
/// `Serialize`/`Deserialize` make snapshots possible; state holds only sealed secrets, never
/// plaintext ones, so a snapshot is as safe to store as the events it summarizes.
pub trait Aggregate:
    Default + Clone + Serialize + DeserializeOwned + Send + Sync + 'static
{
    /// `stream_type` in the envelope and the prefix of every stream id (`user-…`).
    const STREAM_TYPE: &'static str;
    /// Bumped whenever the state's shape changes, so stale snapshots are ignored.
    const SNAPSHOT_VERSION: i32 = 1;
    type Event: DomainEvent;

    /// Folds one event into the state. Never fails: events are facts.
    fn apply(&mut self, event: &Self::Event, recorded_at: DateTime<Utc>);

    /// The stream id of the aggregate with this id.
    fn stream_id(id: uuid::Uuid) -> String {
        format!("{}-{}", Self::STREAM_TYPE, id)
    }
}

/// What a decision may know about the world: the time, given by the shell.
#[derive(Debug, Clone, Copy)]
pub struct Ctx {
    pub now: DateTime<Utc>,
}
