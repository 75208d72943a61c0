//! The master key: where it comes from (`WARDEN_MASTER_KEY`, else a generated
//! `<data_dir>/master.key`) and the sub-keys derived from it. The master key itself is never
//! used to encrypt or MAC anything: HKDF-SHA256 turns it into one key per purpose.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

/// Length of the master key and of every derived key, in bytes.
pub const KEY_LEN: usize = 32;

/// Name of the generated key file inside the data directory.
pub const MASTER_KEY_FILE: &str = "master.key";

/// HKDF salt: fixed and public, it only separates Warden's derivations from anyone else's.
const HKDF_SALT: &[u8; 25] = b"warden/vault/hkdf-salt/v1";
/// HKDF `info` for the key that wraps per-subject data keys.
pub(crate) const LABEL_WRAPPING: &[u8] = b"warden/vault/data-key-wrapping/v1";
/// HKDF `info` for the pepper of keyed digests.
pub(crate) const LABEL_PEPPER: &[u8] = b"warden/vault/digest-pepper/v1";

/// The 32-byte root secret. Zeroized on drop; `Debug` never shows it; not `Clone`, so there
/// is one copy in memory and its owner decides where it goes.
pub struct MasterKey(Zeroizing<[u8; KEY_LEN]>);

impl MasterKey {
    /// Wraps raw key bytes (tests, or callers with their own KMS). The caller's copy is
    /// zeroized.
    pub fn from_bytes(mut bytes: [u8; KEY_LEN]) -> Self {
        let key = Self(Zeroizing::new(bytes));
        bytes.zeroize();
        key
    }

    /// A fresh key from the OS CSPRNG.
    pub fn generate() -> Self {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        OsRng.fill_bytes(key.as_mut());
        Self(key)
    }

    /// Parses base64 (standard alphabet, padded or not) of exactly 32 bytes. The error never
    /// repeats any part of the input.
    pub fn from_base64(encoded: &str) -> Result<Self, VaultError> {
        let trimmed = encoded.trim();
        if trimmed.is_empty() {
            return Err(VaultError::MalformedKey("it is empty"));
        }
        let decoded = Zeroizing::new(
            STANDARD
                .decode(trimmed)
                .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(trimmed))
                .map_err(|_| VaultError::MalformedKey("it is not valid base64"))?,
        );
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        if decoded.len() != KEY_LEN {
            return Err(VaultError::MalformedKey(
                "it does not decode to exactly 32 bytes",
            ));
        }
        key.copy_from_slice(&decoded);
        Ok(Self(key))
    }

    /// HKDF-SHA256 (RFC 5869) with [`HKDF_SALT`], one 32-byte output block for `info`.
    ///
    /// Written with HMAC directly because every input here has a fixed length: keys of at
    /// most one SHA-256 block go through the infallible `KeyInit::new` (zero-padding a short
    /// HMAC key is exactly what HMAC itself does), so there is no error path to handle.
    pub(crate) fn derive(&self, info: &[u8]) -> Zeroizing<[u8; KEY_LEN]> {
        // Extract: PRK = HMAC(salt, IKM).
        let prk = hmac_sha256(HKDF_SALT, &[self.0.as_slice()]);
        // Expand, first block: T(1) = HMAC(PRK, info || 0x01).
        hmac_sha256(&prk, &[info, &[1u8]])
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

/// HMAC-SHA256 under a key of at most 64 bytes (one SHA-256 block, checked at compile time):
/// such a key is zero-padded to the block, exactly as HMAC itself specifies.
pub(crate) fn hmac_sha256<const N: usize>(
    key: &[u8; N],
    parts: &[&[u8]],
) -> Zeroizing<[u8; KEY_LEN]> {
    const { assert!(N <= 64, "HMAC keys in the vault fit one SHA-256 block") };
    let mut block = Zeroizing::new([0u8; 64]);
    for (dst, src) in block.iter_mut().zip(key.iter()) {
        *dst = *src;
    }
    let mut mac = <Hmac<Sha256> as KeyInit>::new(
        hmac::digest::generic_array::GenericArray::from_slice(block.as_slice()),
    );
    for part in parts {
        mac.update(part);
    }
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    out.copy_from_slice(&mac.finalize().into_bytes());
    out
}

/// Why the master key could not be loaded. No variant carries key material.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("WARDEN_MASTER_KEY is malformed: {0}; it must be the base64 (standard) encoding of 32 random bytes, e.g. the output of `openssl rand -base64 32`")]
    MalformedKey(&'static str),
    #[error("the master key file {path} is malformed: {reason}; it must hold the base64 of 32 bytes (it is never overwritten: restore it from a backup or remove it only if nothing was sealed with it)")]
    MalformedFile { path: PathBuf, reason: &'static str },
    #[error("cannot {action} the master key file {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Loads the master key: from `env_value` (the value of `WARDEN_MASTER_KEY`) when given,
/// otherwise from `<data_dir>/master.key`, creating that file with a fresh random key (mode
/// 0600, atomically, never overwriting an existing one) if it does not exist yet.
///
/// A generated key is fine for a laptop, not for production: a warning says so on every
/// start. The key itself is never logged.
pub fn load_master_key(env_value: Option<&str>, data_dir: &Path) -> Result<MasterKey, VaultError> {
    if let Some(value) = env_value {
        return MasterKey::from_base64(value);
    }
    let path = data_dir.join(MASTER_KEY_FILE);
    let (key, created) = load_or_create_file(data_dir, &path)?;
    tracing::warn!(
        path = %path.display(),
        created,
        "WARDEN_MASTER_KEY is not set: using a generated master key from the data directory. \
         Back this file up (losing it makes every sealed secret unreadable) and set \
         WARDEN_MASTER_KEY in production"
    );
    Ok(key)
}

fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> VaultError + 'a {
    move |source| VaultError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

fn load_or_create_file(data_dir: &Path, path: &Path) -> Result<(MasterKey, bool), VaultError> {
    match read_key_file(path) {
        Ok(key) => return Ok((key, false)),
        Err(VaultError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(data_dir).map_err(io_err("create the directory of", path))?;

    let key = MasterKey::generate();
    let encoded = Zeroizing::new(format!("{}\n", STANDARD.encode(key.0.as_slice())));

    // Write a private temporary file, then hard-link it into place: the link either creates
    // `master.key` complete and in one step, or fails because one already exists, in which
    // case the existing key wins (another process got there first) and ours is dropped.
    let mut suffix = [0u8; 8];
    OsRng.fill_bytes(&mut suffix);
    let tmp = data_dir.join(format!(".{MASTER_KEY_FILE}.{}.tmp", hex::encode(suffix)));
    let written = write_private(&tmp, encoded.as_bytes());
    let linked = written.and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            sync_dir(data_dir);
            Ok((key, true))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Ok((read_key_file(path)?, false))
        }
        Err(_) => {
            // A file system without hard links: fall back to an exclusive create of the final
            // name. Still never overwrites; a concurrent reader could see a partial file and
            // fail loudly rather than use a wrong key.
            match write_private(path, encoded.as_bytes()) {
                Ok(()) => {
                    sync_dir(data_dir);
                    Ok((key, true))
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    Ok((read_key_file(path)?, false))
                }
                Err(e) => Err(io_err("create", path)(e)),
            }
        }
    }
}

/// Creates `path` exclusively (mode 0600 on Unix), writes `bytes` and syncs it to disk.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

fn read_key_file(path: &Path) -> Result<MasterKey, VaultError> {
    let contents = Zeroizing::new(std::fs::read_to_string(path).map_err(io_err("read", path))?);
    #[cfg(unix)]
    if let Ok(meta) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                "the master key file is readable by other users; restrict it with chmod 600"
            );
        }
    }
    MasterKey::from_base64(&contents).map_err(|e| match e {
        VaultError::MalformedKey(reason) => VaultError::MalformedFile {
            path: path.to_path_buf(),
            reason,
        },
        other => other,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    #[test]
    fn derive_is_rfc5869_hkdf_sha256() {
        let master = [7u8; KEY_LEN];
        let key = MasterKey::from_bytes(master);
        for info in [LABEL_WRAPPING, LABEL_PEPPER, b"" as &[u8]] {
            let hk = hkdf::Hkdf::<Sha256>::new(Some(HKDF_SALT.as_slice()), &master);
            let mut expected = [0u8; KEY_LEN];
            hk.expand(info, &mut expected).unwrap();
            assert_eq!(key.derive(info).as_slice(), expected.as_slice());
        }
        assert_ne!(
            key.derive(LABEL_WRAPPING).as_slice(),
            key.derive(LABEL_PEPPER).as_slice()
        );
        assert_ne!(key.derive(LABEL_WRAPPING).as_slice(), master.as_slice());
    }

    #[test]
    fn hmac_matches_the_slice_api() {
        let key = b"a pepper of some length";
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
        mac.update(b"ab");
        mac.update(b"c");
        let expected = mac.finalize().into_bytes();
        assert_eq!(
            hmac_sha256(key, &[b"ab", b"c"]).as_slice(),
            expected.as_slice()
        );
    }
}
