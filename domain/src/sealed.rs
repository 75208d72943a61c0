//! Opaque carriers for secrets inside events: a sealed box (XChaCha20-Poly1305 under a
//! per-subject data key) and a keyed digest. The domain never opens them.

use serde::{Deserialize, Serialize};

/// Ciphertext under the data key of `key_id` (a user or organization id). Opening it is the
/// key store's job; once that key is destroyed, nobody can.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// Whose data key sealed this (`user-…` / `org-…` subject).
    pub key_id: String,
    /// Base64 (standard) 24-byte nonce.
    pub nonce: String,
    /// Base64 (standard) ciphertext with its 16-byte tag.
    pub ciphertext: String,
}

/// Hex HMAC-SHA256 (server pepper) or SHA-256 of a token: enough to recognize a value,
/// useless for recovering it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Digest(pub String);

impl Digest {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
