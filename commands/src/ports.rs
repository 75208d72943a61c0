//! Ports other than the store: secrets (sealing, hashing, digests, tokens) and the clock.

use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use warden_domain::{Digest, Sealed};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretsError {
    #[error("the key store is unavailable: {0}")]
    Unavailable(String),
    /// Ciphertext that fails authentication: tampering or a wrong key. Never a secret in here.
    #[error("sealed data failed authentication")]
    Tampered,
    #[error("secret hashing failed: {0}")]
    Hashing(String),
    /// The subject was forgotten (its data key destroyed): nothing new may be sealed for it.
    #[error("the subject was forgotten")]
    Forgotten,
}

/// Everything Warden does with secrets, behind one port so no handler holds key material.
#[async_trait]
pub trait Secrets: Send + Sync + 'static {
    /// Seals under the data key of `subject` (`user-…`, `organization-…`), creating the key
    /// on first use.
    async fn seal(&self, subject: &str, plaintext: &[u8]) -> Result<Sealed, SecretsError>;
    /// Opens a sealed value. `Ok(None)` when its data key was destroyed (the subject was
    /// forgotten): callers show a tombstone, never fail a projection.
    async fn open(&self, sealed: &Sealed) -> Result<Option<Vec<u8>>, SecretsError>;
    /// Destroys a subject's data key (crypto-shredding). Idempotent.
    async fn destroy_key(&self, subject: &str) -> Result<(), SecretsError>;

    /// argon2id PHC string of a password, passphrase or PIN (runs off the async runtime).
    async fn hash_secret(&self, secret: &str) -> Result<String, SecretsError>;
    /// Checks a candidate against a PHC string (off the async runtime, bounded concurrency).
    async fn verify_secret(&self, phc: &str, candidate: &str) -> Result<bool, SecretsError>;
    /// Does the same work as a failed [`Secrets::verify_secret`], so an unknown account
    /// takes as long to refuse as a wrong password.
    async fn burn_verify(&self, candidate: &str);

    /// HMAC-SHA256 with the server pepper, domain-separated by `purpose` (`email`, `code`…).
    fn keyed_digest(&self, purpose: &str, value: &str) -> Digest;
    /// SHA-256 of a high-entropy token (session token, API key).
    fn token_digest(&self, token: &str) -> Digest;
    /// A new opaque token: `prefix` + 256 bits from the OS CSPRNG, URL-safe.
    fn new_token(&self, prefix: &str) -> String;
}

/// Where "now" comes from. Tests drive a [`ManualClock`] instead of sleeping.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        Self(Mutex::new(start))
    }

    pub fn advance(&self, by: chrono::Duration) {
        let mut t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *t += by;
    }

    pub fn set(&self, to: DateTime<Utc>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}
