//! Warden's adapters: the Postgres and SQLite event stores, the key store and sealing,
//! password hashing, the NATS relay and in-process bus, and message senders.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

pub mod bus;
pub mod db;
pub mod relay;
pub mod sender;
pub mod ssrf;
pub mod store;
pub mod vault;
pub mod webhooks;
