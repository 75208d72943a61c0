//! Warden's command side: the ports infrastructure implements (event store, secrets, clock,
//! senders), the load → decide → append pipeline with bounded retry, and one handler module
//! per feature.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

pub mod accounts;
pub mod error;
pub mod members;
mod notice;
pub mod otp;
pub mod pipeline;
pub mod ports;
pub mod sender;
pub mod state_cache;
pub mod store;
pub mod two_factor;
pub mod verify;
pub mod webhooks;

pub use error::CommandError;
pub use pipeline::{Executed, Meta, Pipeline, Plan};
pub use ports::{Clock, ManualClock, Secrets, SystemClock};
pub use store::{EventStore, StoreError};
