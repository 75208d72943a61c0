//! The vault: Warden's implementation of the [`Secrets`] port.
//!
//! - **Sealing** (XChaCha20-Poly1305, AAD = subject): one random 32-byte data key per subject
//!   (user or organization), kept in `data_keys` wrapped under a key-wrapping key that is
//!   derived from the master key. Destroying a subject's data key makes everything sealed
//!   for it unreadable at once (crypto-shredding), and the subject can never get a new one.
//! - **Hashing**: argon2id with pinned OWASP parameters, off the async runtime, at most one
//!   per CPU at a time ([`hashing`]).
//! - **Digests and tokens**: HMAC-SHA256 with a pepper derived from the master key, SHA-256
//!   of high-entropy tokens, 256-bit URL-safe tokens from the OS CSPRNG.
//!
//! Key material lives in zeroizing buffers; `Debug`, errors and logs never show a key, a
//! plaintext or a secret.

mod hashing;
mod master_key;
mod new_keys;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest as _, Sha256};
use sqlx::Row;
use warden_commands::ports::{Secrets, SecretsError};
use warden_domain::{Digest, Sealed};
use zeroize::Zeroizing;

use crate::db::{Backend, Database};

pub use hashing::{M_COST_KIB, P_COST, T_COST};
pub use master_key::{load_master_key, MasterKey, VaultError, MASTER_KEY_FILE};

const KEY_LEN: usize = master_key::KEY_LEN;
const NONCE_LEN: usize = 24;
/// First byte of a wrapped data key: the format (and the wrapping key derivation) version.
const WRAP_FORMAT_V1: u8 = 1;
/// Version byte + nonce + encrypted key + Poly1305 tag.
const WRAPPED_LEN: usize = 1 + NONCE_LEN + KEY_LEN + 16;

/// How many unwrapped data keys stay in memory, and for how long. The TTL bounds how long
/// another Warden process that shares the database keeps using a key destroyed here.
const CACHE_CAPACITY: usize = 10_000;
const CACHE_TTL: Duration = Duration::from_secs(300);

type DataKey = Arc<Zeroizing<[u8; KEY_LEN]>>;

/// Warden's key store, sealing, hashing and digests. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct Vault {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    wrapping_key: Zeroizing<[u8; KEY_LEN]>,
    pepper: Zeroizing<[u8; KEY_LEN]>,
    cache: RwLock<KeyCache>,
    hasher: hashing::Hasher,
    new_keys: new_keys::KeyWriter,
}

/// Unwrapped data keys by subject. `epoch` moves on every destruction, so a key read from
/// the database before a concurrent `destroy_key` is never put back into the cache after it.
#[derive(Default)]
struct KeyCache {
    keys: HashMap<String, (DataKey, Instant)>,
    epoch: u64,
}

/// What the `data_keys` table says about a subject.
enum Stored {
    Missing,
    Destroyed,
    Live(DataKey),
}

impl Vault {
    /// Builds the vault over an open (and migrated) database. Derives the key-wrapping key
    /// and the digest pepper from `master`, which is then dropped (and zeroized).
    /// Starts computing, in the background, the dummy hash that an unknown account's
    /// sign-in is checked against, so the first such sign-in does not pay for it. For the
    /// server; a one-off command (a rebuild, an export) never signs anyone in.
    pub fn warm_up_hashing() {
        hashing::Hasher::warm_up();
    }

    pub fn new(db: Database, master: MasterKey) -> Self {
        let wrapping_key = master.derive(master_key::LABEL_WRAPPING);
        let pepper = master.derive(master_key::LABEL_PEPPER);
        drop(master);
        Self {
            inner: Arc::new(Inner {
                db,
                wrapping_key,
                pepper,
                cache: RwLock::new(KeyCache::default()),
                hasher: hashing::Hasher::new(),
                new_keys: new_keys::KeyWriter::default(),
            }),
        }
    }

    fn cached(&self, subject: &str) -> Option<DataKey> {
        let cache = self.inner.cache.read().unwrap_or_else(|p| p.into_inner());
        cache
            .keys
            .get(subject)
            .filter(|(_, at)| at.elapsed() < CACHE_TTL)
            .map(|(key, _)| Arc::clone(key))
    }

    fn epoch(&self) -> u64 {
        self.inner
            .cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .epoch
    }

    /// Caches `key` unless a key was destroyed since `epoch` was read.
    fn remember(&self, subject: &str, key: &DataKey, epoch: u64) {
        let mut cache = self.inner.cache.write().unwrap_or_else(|p| p.into_inner());
        if cache.epoch != epoch {
            return;
        }
        if cache.keys.len() >= CACHE_CAPACITY && !cache.keys.contains_key(subject) {
            cache.keys.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
            if cache.keys.len() >= CACHE_CAPACITY {
                if let Some(victim) = cache.keys.keys().next().cloned() {
                    cache.keys.remove(&victim);
                }
            }
        }
        cache
            .keys
            .insert(subject.to_owned(), (Arc::clone(key), Instant::now()));
    }

    fn forget(&self, subject: &str) {
        let mut cache = self.inner.cache.write().unwrap_or_else(|p| p.into_inner());
        cache.keys.remove(subject);
        cache.epoch = cache.epoch.wrapping_add(1);
    }

    async fn load(&self, subject: &str) -> Result<Stored, SecretsError> {
        let row = sqlx::query("SELECT wrapped_key, destroyed_at FROM data_keys WHERE subject = $1")
            .bind(subject)
            .fetch_optional(&self.inner.db.pool)
            .await
            .map_err(db_err)?;
        let Some(row) = row else {
            return Ok(Stored::Missing);
        };
        let wrapped: Option<Vec<u8>> = row.try_get("wrapped_key").map_err(db_err)?;
        let destroyed_at: Option<String> = row.try_get("destroyed_at").map_err(db_err)?;
        match (wrapped, destroyed_at) {
            (Some(wrapped), None) => Ok(Stored::Live(self.unwrap_key(subject, &wrapped)?)),
            _ => Ok(Stored::Destroyed),
        }
    }

    /// The subject's live data key, from the cache or the database (`None` if it has none).
    async fn existing_key(&self, subject: &str) -> Result<Option<DataKey>, SecretsError> {
        if let Some(key) = self.cached(subject) {
            return Ok(Some(key));
        }
        let epoch = self.epoch();
        match self.load(subject).await? {
            Stored::Live(key) => {
                self.remember(subject, &key, epoch);
                Ok(Some(key))
            }
            Stored::Missing | Stored::Destroyed => Ok(None),
        }
    }

    /// The subject's data key, created on first use. Two callers racing on a new subject
    /// both insert, one insert wins, and both then use the key that was stored.
    async fn key_for_sealing(&self, subject: &str) -> Result<DataKey, SecretsError> {
        if let Some(key) = self.cached(subject) {
            return Ok(key);
        }
        let epoch = self.epoch();
        match self.load(subject).await? {
            Stored::Live(key) => {
                self.remember(subject, &key, epoch);
                return Ok(key);
            }
            Stored::Destroyed => return Err(SecretsError::Forgotten),
            Stored::Missing => {}
        }

        let mut fresh = Zeroizing::new([0u8; KEY_LEN]);
        OsRng.fill_bytes(fresh.as_mut());
        let wrapped = self.wrap_key(subject, &fresh)?;
        let inserted = self
            .inner
            .new_keys
            .insert(
                &self.inner.db,
                new_keys::NewKey {
                    subject: subject.to_owned(),
                    wrapped,
                    created_at: now(),
                },
            )
            .await?;
        if inserted {
            // Ours is the stored key.
            let key: DataKey = Arc::new(fresh);
            self.remember(subject, &key, epoch);
            return Ok(key);
        }

        // Another writer got there first: whichever insert won is the key.
        match self.load(subject).await? {
            Stored::Live(key) => {
                self.remember(subject, &key, epoch);
                Ok(key)
            }
            Stored::Destroyed => Err(SecretsError::Forgotten),
            Stored::Missing => Err(SecretsError::Unavailable(
                "the data key was not stored".into(),
            )),
        }
    }

    fn wrapping_cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(Key::from_slice(self.inner.wrapping_key.as_slice()))
    }

    /// `version || nonce || XChaCha20-Poly1305(wrapping key, nonce, key, AAD = subject)`.
    fn wrap_key(&self, subject: &str, key: &[u8; KEY_LEN]) -> Result<Vec<u8>, SecretsError> {
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let ciphertext = self
            .wrapping_cipher()
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: key,
                    aad: subject.as_bytes(),
                },
            )
            .map_err(|_| SecretsError::Unavailable("cannot wrap a data key".into()))?;
        let mut out = Vec::with_capacity(WRAPPED_LEN);
        out.push(WRAP_FORMAT_V1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        Ok(out)
    }

    /// Unwraps a stored data key. A row that does not authenticate under this master key
    /// (wrong `WARDEN_MASTER_KEY`, or a row copied to another subject) is
    /// [`SecretsError::Tampered`].
    fn unwrap_key(&self, subject: &str, wrapped: &[u8]) -> Result<DataKey, SecretsError> {
        if wrapped.len() != WRAPPED_LEN {
            return Err(SecretsError::Tampered);
        }
        let (version, rest) = wrapped.split_first().ok_or(SecretsError::Tampered)?;
        if *version != WRAP_FORMAT_V1 {
            return Err(SecretsError::Tampered);
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let plain = Zeroizing::new(
            self.wrapping_cipher()
                .decrypt(
                    XNonce::from_slice(nonce),
                    Payload {
                        msg: ciphertext,
                        aad: subject.as_bytes(),
                    },
                )
                .map_err(|_| SecretsError::Tampered)?,
        );
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        if plain.len() != KEY_LEN {
            return Err(SecretsError::Tampered);
        }
        key.copy_from_slice(&plain);
        Ok(Arc::new(key))
    }

    /// SQLite keeps overwritten row content in free pages and in the WAL; make the
    /// destruction reach the file: zero freed space on this connection, then checkpoint
    /// (best effort: a busy checkpoint is retried by SQLite's own auto-checkpoint later).
    async fn destroy_sqlite(&self, subject: &str) -> Result<(), SecretsError> {
        let mut conn = self.inner.db.pool.acquire().await.map_err(db_err)?;
        sqlx::query("PRAGMA secure_delete = ON")
            .execute(&mut *conn)
            .await
            .map_err(db_err)?;
        let result = sqlx::query(DESTROY_SQL)
            .bind(subject)
            .bind(now())
            .execute(&mut *conn)
            .await
            .map_err(db_err);
        if result.is_ok() {
            let _ = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&mut *conn)
                .await;
        }
        let _ = sqlx::query("PRAGMA secure_delete = OFF")
            .execute(&mut *conn)
            .await;
        result.map(|_| ())
    }
}

/// Tombstones the subject: creates the row if it never had a key (so it cannot get one
/// later), nulls the wrapped key, and keeps the first destruction time.
const DESTROY_SQL: &str = "INSERT INTO data_keys (subject, wrapped_key, created_at, destroyed_at) \
     VALUES ($1, NULL, $2, $2) \
     ON CONFLICT (subject) DO UPDATE SET wrapped_key = NULL, \
     destroyed_at = COALESCE(data_keys.destroyed_at, excluded.destroyed_at)";

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Database errors become `Unavailable` with the driver's message, which names tables and
/// constraints but never bound values.
fn db_err(e: sqlx::Error) -> SecretsError {
    tracing::warn!(error = %e, "key store query failed");
    SecretsError::Unavailable(format!("key store: {e}"))
}

fn data_cipher(key: &DataKey) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new(Key::from_slice(key.as_slice()))
}

#[async_trait]
impl Secrets for Vault {
    async fn seal(&self, subject: &str, plaintext: &[u8]) -> Result<Sealed, SecretsError> {
        if subject.is_empty() {
            return Err(SecretsError::Unavailable(
                "cannot seal for an empty subject".into(),
            ));
        }
        let key = self.key_for_sealing(subject).await?;
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let ciphertext = data_cipher(&key)
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: subject.as_bytes(),
                },
            )
            .map_err(|_| SecretsError::Unavailable("encryption failed".into()))?;
        Ok(Sealed {
            key_id: subject.to_owned(),
            nonce: STANDARD.encode(nonce),
            ciphertext: STANDARD.encode(ciphertext),
        })
    }

    async fn open(&self, sealed: &Sealed) -> Result<Option<Vec<u8>>, SecretsError> {
        // Malformed carriers fail like forged ones, before any database work.
        let nonce = STANDARD
            .decode(&sealed.nonce)
            .map_err(|_| SecretsError::Tampered)?;
        if nonce.len() != NONCE_LEN {
            return Err(SecretsError::Tampered);
        }
        let ciphertext = STANDARD
            .decode(&sealed.ciphertext)
            .map_err(|_| SecretsError::Tampered)?;
        let Some(key) = self.existing_key(&sealed.key_id).await? else {
            return Ok(None);
        };
        data_cipher(&key)
            .decrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &ciphertext,
                    aad: sealed.key_id.as_bytes(),
                },
            )
            .map(Some)
            .map_err(|_| SecretsError::Tampered)
    }

    async fn destroy_key(&self, subject: &str) -> Result<(), SecretsError> {
        self.forget(subject);
        let result = match self.inner.db.backend {
            Backend::Sqlite => {
                let _write = self.inner.db.writes.enter().await;
                self.destroy_sqlite(subject).await
            }
            Backend::Postgres => sqlx::query(DESTROY_SQL)
                .bind(subject)
                .bind(now())
                .execute(&self.inner.db.pool)
                .await
                .map(|_| ())
                .map_err(db_err),
        };
        // Evict again (and move the epoch) now that the row is gone, so a read that started
        // before the update cannot leave the key in the cache.
        self.forget(subject);
        result
    }

    async fn hash_secret(&self, secret: &str) -> Result<String, SecretsError> {
        self.inner.hasher.hash(secret).await
    }

    async fn verify_secret(&self, phc: &str, candidate: &str) -> Result<bool, SecretsError> {
        self.inner.hasher.verify(phc, candidate).await
    }

    async fn burn_verify(&self, candidate: &str) {
        self.inner.hasher.burn(candidate).await;
    }

    fn keyed_digest(&self, purpose: &str, value: &str) -> Digest {
        let mac = master_key::hmac_sha256(
            &self.inner.pepper,
            &[purpose.as_bytes(), &[0u8], value.as_bytes()],
        );
        Digest(hex::encode(mac.as_slice()))
    }

    fn token_digest(&self, token: &str) -> Digest {
        Digest(hex::encode(Sha256::digest(token.as_bytes())))
    }

    fn new_token(&self, prefix: &str) -> String {
        let mut bytes = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(bytes.as_mut());
        format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes.as_slice()))
    }
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cached = self
            .inner
            .cache
            .read()
            .map(|c| c.keys.len())
            .unwrap_or_default();
        f.debug_struct("Vault")
            .field("backend", &self.inner.db.backend)
            .field("keys", &"<redacted>")
            .field("cached_data_keys", &cached)
            .field("free_hashing_slots", &self.inner.hasher.permits())
            .finish()
    }
}
