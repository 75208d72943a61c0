//! Warden: account security, organizations and phone verification, event-sourced.
//! This crate is the `warden` binary's library: configuration, wiring, the HTTP API and
//! the CLI's maintenance commands.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

pub mod api;
pub mod app;
pub mod audit;
pub mod bench;
pub mod bus;
pub mod cli;
pub mod config;
pub mod telemetry;
pub mod verify_expiry;
pub mod webhook_health;

pub use app::{AppState, Application};
pub use config::Settings;
