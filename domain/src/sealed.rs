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

/// Sealed values (`{key_id, nonce, ciphertext}`) become `"<sealed>"` and any field whose
/// name ends in `digest` becomes `"<redacted>"`: whoever reads the result (an auditor, a
/// webhook subscriber) sees what exists and when it changed, never material an attacker
/// could use offline.
pub fn redact(value: serde_json::Value) -> serde_json::Value {
    use serde_json::{Map, Value};
    match value {
        Value::Object(map) => {
            let sealed = map.len() == 3
                && map.contains_key("key_id")
                && map.contains_key("nonce")
                && map.contains_key("ciphertext");
            if sealed {
                return Value::String("<sealed>".into());
            }
            let mut out = Map::with_capacity(map.len());
            for (k, v) in map {
                let v = if k.ends_with("digest") && !v.is_null() {
                    Value::String("<redacted>".into())
                } else {
                    redact(v)
                };
                out.insert(k, v);
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.into_iter().map(redact).collect()),
        other => other,
    }
}
