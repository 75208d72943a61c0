//! Black-box tests: the real server on port 0 over HTTP, against a fresh SQLite file or a
//! fresh Postgres database each, and the real NATS where a test says so. One binary.

mod helpers;

mod accounts;
mod audit;
mod bench;
mod binary;
mod broadcast;
mod forget;
mod hardening;
mod idempotency;
mod members;
mod operations;
mod organization;
mod permission_matrix;
mod secrets_never_leak;
mod sessions;
mod two_factor;
mod two_factor_codes;
mod two_factor_policy;
mod two_factor_recovery;
mod verify;
mod webhooks;
