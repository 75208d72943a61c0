//! Warden's domain: aggregates, their commands and events, and the value objects that
//! make bad input unrepresentable. Pure: no I/O, no async, no clock or RNG reads — time,
//! randomness and the results of secret checks come in as arguments.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

pub mod aggregate;
pub mod chain;
pub mod event;
pub mod members;
pub mod organization;
pub mod permissions;
pub mod sealed;
pub mod two_factor;
pub mod user;
pub mod values;
pub mod verify;
pub mod webhook_endpoint;

pub use aggregate::{Aggregate, Ctx};
pub use event::{DomainEvent, EventMetadata, RecordedEvent};
pub use sealed::{Digest, Sealed};
