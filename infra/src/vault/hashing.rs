//! argon2id for passwords, passphrases and PINs: pinned OWASP parameters, run on the
//! blocking pool, at most one hash per CPU at a time (each takes 19 MiB), so a burst of
//! sign-ins queues instead of exhausting memory or starving the async runtime.
//!
//! While hashes queue, each works in a 19 MiB buffer the previous one left
//! ([`with_memory`]): allocating it afresh maps it, faults it in page by page and unmaps it
//! after, which under a sign-in load cost two thirds as much CPU as argon2 itself (`perf`:
//! page faults and munmap 29 % of all CPU, argon2's compression 43 %). When no other hash
//! is waiting the buffer is freed, so an idle server does not keep it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use argon2::password_hash::{Output, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use rand::rngs::OsRng;
use rand::RngCore;
use tokio::sync::Semaphore;
use warden_commands::ports::SecretsError;
use zeroize::{Zeroize, Zeroizing};

/// Memory cost in KiB (19 MiB): OWASP Password Storage Cheat Sheet, ASVS 5.0 App. C.
pub const M_COST_KIB: u32 = 19_456;
/// Iterations.
pub const T_COST: u32 = 2;
/// Lanes.
pub const P_COST: u32 = 1;

/// The most a stored PHC string may ask of `verify_secret` (256 MiB, 16 passes, 8 lanes):
/// room to raise the cost later, but a corrupted or planted hash cannot make one sign-in
/// allocate gigabytes.
const MAX_M_COST_KIB: u32 = 262_144;
const MAX_T_COST: u32 = 16;
const MAX_P_COST: u32 = 8;

/// Bounded argon2id hashing.
#[derive(Clone)]
pub(crate) struct Hasher {
    permits: Arc<Semaphore>,
}

impl Hasher {
    pub(crate) fn new() -> Self {
        Self {
            permits: Arc::new(Semaphore::new(cpus())),
        }
    }

    /// Starts computing the dummy hash for [`Hasher::burn`] in the background, if there is a
    /// runtime, so the first unknown-account sign-in does not pay for it.
    pub(crate) fn warm_up() {
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            drop(handle.spawn_blocking(|| {
                let _ = dummy_phc();
            }));
        }
    }

    pub(crate) fn permits(&self) -> usize {
        self.permits.available_permits()
    }

    pub(crate) async fn hash(&self, secret: &str) -> Result<String, SecretsError> {
        let secret = Zeroizing::new(secret.to_owned());
        self.run(move || hash_blocking(secret.as_bytes())).await?
    }

    pub(crate) async fn verify(&self, phc: &str, candidate: &str) -> Result<bool, SecretsError> {
        // Parse before queueing: a malformed string costs nothing.
        check_phc(phc)?;
        let phc = phc.to_owned();
        let candidate = Zeroizing::new(candidate.to_owned());
        self.run(move || verify_blocking(&phc, candidate.as_bytes()))
            .await?
    }

    pub(crate) async fn burn(&self, candidate: &str) {
        let candidate = Zeroizing::new(candidate.to_owned());
        let _ = self
            .run(move || match dummy_phc() {
                Some(phc) => {
                    let _ = verify_blocking(phc, candidate.as_bytes());
                }
                // Hashing failed at start-up (it cannot with these constants): do the same
                // amount of work another way.
                None => {
                    let _ = hash_blocking(candidate.as_bytes());
                }
            })
            .await;
    }

    async fn run<T, F>(&self, work: F) -> Result<T, SecretsError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let _demand = Demand::enter();
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| SecretsError::Hashing("the hashing pool is closed".into()))?;
        tokio::task::spawn_blocking(move || {
            let out = work();
            drop(permit);
            out
        })
        .await
        .map_err(|_| SecretsError::Hashing("the hashing task did not finish".into()))
    }
}

/// Hashes that may run at once: one per CPU (read once; the standard library asks the
/// kernel and the cgroup files each time).
fn cpus() -> usize {
    static CPUS: OnceLock<usize> = OnceLock::new();
    *CPUS.get_or_init(|| {
        std::thread::available_parallelism()
            .map(std::num::NonZeroUsize::get)
            .unwrap_or(2)
    })
}

fn params() -> Result<Params, SecretsError> {
    Params::new(M_COST_KIB, T_COST, P_COST, None)
        .map_err(|e| SecretsError::Hashing(format!("invalid argon2 parameters: {e}")))
}

/// Working buffers of the current parameters' size, at most one per CPU (the hasher's
/// permits bound how many hashes run at once), kept only while hashes are waiting.
static MEMORY: Mutex<Vec<Vec<Block>>> = Mutex::new(Vec::new());

/// Hashes asked of the hasher and not finished (waiting for a permit or running).
static DEMAND: AtomicUsize = AtomicUsize::new(0);

/// Counts one hash in [`DEMAND`] while it lives.
struct Demand;

impl Demand {
    fn enter() -> Self {
        DEMAND.fetch_add(1, Ordering::AcqRel);
        Self
    }
}

impl Drop for Demand {
    fn drop(&mut self) {
        if DEMAND.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Nothing is waiting: free the kept buffers (two that finished at once may
            // both have kept theirs).
            let kept = std::mem::take(&mut *MEMORY.lock().unwrap_or_else(PoisonError::into_inner));
            drop(kept);
        }
    }
}

/// Runs `work` in a buffer of `block_count` argon2 blocks: a kept one when it has the
/// current parameters' size, else a new one. The buffer is zeroed after use, so nothing
/// derived from a password stays in memory between hashes, and kept only if another hash
/// is waiting or running; the last one out empties the pool.
fn with_memory<T>(block_count: usize, work: impl FnOnce(&mut [Block]) -> T) -> T {
    let current = params().map(|p| p.block_count()).ok();
    let reusable = current == Some(block_count);
    let kept = if reusable {
        MEMORY.lock().unwrap_or_else(PoisonError::into_inner).pop()
    } else {
        None
    };
    let mut blocks = kept.unwrap_or_else(|| vec![Block::default(); block_count]);
    let out = work(&mut blocks);
    for block in &mut blocks {
        block.zeroize();
    }
    let others = DEMAND.load(Ordering::Acquire) > 1;
    let mut pool = MEMORY.lock().unwrap_or_else(PoisonError::into_inner);
    if !others {
        pool.clear();
    } else if reusable && pool.len() < cpus() {
        pool.push(blocks);
    }
    out
}

/// argon2id of `secret` with `salt` (raw bytes) and `params`, into `out`.
fn compute(
    params: Params,
    version: Version,
    secret: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> Result<(), SecretsError> {
    let argon = Argon2::new(Algorithm::Argon2id, version, params);
    with_memory(argon.params().block_count(), |blocks| {
        argon.hash_password_into_with_memory(secret, salt, out, blocks)
    })
    .map_err(|e| SecretsError::Hashing(format!("argon2 failed: {e}")))
}

fn hash_blocking(secret: &[u8]) -> Result<String, SecretsError> {
    // 16 random bytes of salt (the PHC recommended length; NIST asks for at least 4).
    let mut raw = [0u8; 16];
    OsRng.fill_bytes(&mut raw);
    let salt = SaltString::encode_b64(&raw)
        .map_err(|e| SecretsError::Hashing(format!("salt encoding failed: {e}")))?;
    let params = params()?;
    let mut out = Zeroizing::new([0u8; Params::DEFAULT_OUTPUT_LEN]);
    compute(params.clone(), Version::V0x13, secret, &raw, out.as_mut())?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: (&params)
            .try_into()
            .map_err(|e| SecretsError::Hashing(format!("argon2 parameters: {e}")))?,
        salt: Some(salt.as_salt()),
        hash: Some(
            Output::new(out.as_ref())
                .map_err(|e| SecretsError::Hashing(format!("argon2 output: {e}")))?,
        ),
    };
    Ok(phc.to_string())
}

/// Validates a PHC string without doing any hashing: argon2id, salt and hash present, and
/// parameters within bounds.
fn check_phc(phc: &str) -> Result<(), SecretsError> {
    parse_phc(phc).map(|_| ())
}

fn parse_phc(phc: &str) -> Result<PasswordHash<'_>, SecretsError> {
    let parsed = PasswordHash::new(phc)
        .map_err(|e| SecretsError::Hashing(format!("not a PHC string: {e}")))?;
    if parsed.algorithm != Algorithm::Argon2id.ident() {
        return Err(SecretsError::Hashing("not an argon2id hash".into()));
    }
    if parsed.salt.is_none() || parsed.hash.is_none() {
        return Err(SecretsError::Hashing(
            "the PHC string has no salt or no hash".into(),
        ));
    }
    let params = Params::try_from(&parsed)
        .map_err(|e| SecretsError::Hashing(format!("bad argon2 parameters: {e}")))?;
    if params.m_cost() > MAX_M_COST_KIB
        || params.t_cost() > MAX_T_COST
        || params.p_cost() > MAX_P_COST
    {
        return Err(SecretsError::Hashing(
            "argon2 parameters exceed the allowed maximum".into(),
        ));
    }
    Ok(parsed)
}

fn verify_blocking(phc: &str, candidate: &[u8]) -> Result<bool, SecretsError> {
    let parsed = parse_phc(phc)?;
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return Ok(false);
    };
    // The stored hash's own parameters (checked against the maximum when parsed), so a
    // hash made with older parameters still verifies.
    let params = Params::try_from(&parsed)
        .map_err(|e| SecretsError::Hashing(format!("bad argon2 parameters: {e}")))?;
    let version = parsed
        .version
        .map(Version::try_from)
        .transpose()
        .map_err(|e| SecretsError::Hashing(format!("bad argon2 version: {e}")))?
        .unwrap_or_default();
    let mut salt_buf = [0u8; 64];
    let salt = salt
        .decode_b64(&mut salt_buf)
        .map_err(|e| SecretsError::Hashing(format!("bad salt: {e}")))?;
    let mut out = Zeroizing::new(vec![0u8; expected.len()]);
    compute(params, version, candidate, salt, out.as_mut())?;
    let computed =
        Output::new(&out).map_err(|e| SecretsError::Hashing(format!("argon2 output: {e}")))?;
    // `Output`'s equality is constant-time.
    Ok(computed == expected)
}

/// A hash of a random, forgotten password with the current parameters, computed once per
/// process. Verifying against it costs what verifying a real hash costs.
fn dummy_phc() -> Option<&'static str> {
    static DUMMY: OnceLock<Option<String>> = OnceLock::new();
    DUMMY
        .get_or_init(|| {
            let mut password = Zeroizing::new([0u8; 32]);
            OsRng.fill_bytes(password.as_mut());
            hash_blocking(password.as_slice()).ok()
        })
        .as_deref()
}

#[cfg(test)]
mod tests {
    use argon2::password_hash::{PasswordHasher, PasswordVerifier};

    use super::*;

    #[test]
    fn hashes_interoperate_with_the_library_in_both_directions() {
        let ours = hash_blocking(b"correct horse").unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        let library = Argon2::new(Algorithm::Argon2id, Version::V0x13, params().unwrap());
        assert!(library.verify_password(b"correct horse", &parsed).is_ok());
        assert!(library.verify_password(b"correct hors", &parsed).is_err());

        let salt = SaltString::encode_b64(b"sixteen byte slt").unwrap();
        let theirs = library
            .hash_password(b"battery staple", &salt)
            .unwrap()
            .to_string();
        assert!(verify_blocking(&theirs, b"battery staple").unwrap());
        assert!(!verify_blocking(&theirs, b"battery stapler").unwrap());
        assert!(verify_blocking(&ours, b"correct horse").unwrap());
        assert!(!verify_blocking(&ours, b"").unwrap());
    }

    #[test]
    fn a_hash_with_older_parameters_still_verifies() {
        let old = Params::new(8 * 1024, 1, 1, Some(24)).unwrap();
        let salt = SaltString::encode_b64(b"another 16 bytes").unwrap();
        let phc = Argon2::new(Algorithm::Argon2id, Version::V0x13, old)
            .hash_password(b"pin 4242", &salt)
            .unwrap()
            .to_string();
        assert!(verify_blocking(&phc, b"pin 4242").unwrap());
        assert!(!verify_blocking(&phc, b"pin 4243").unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_verifies_and_leaves_no_buffer_behind() {
        let hasher = Hasher::new();
        let phc = hasher.hash("queue of six").await.unwrap();
        let runs: Vec<_> = (0..6)
            .map(|i| {
                let (hasher, phc) = (hasher.clone(), phc.clone());
                let candidate = if i % 2 == 0 {
                    "queue of six"
                } else {
                    "queue of 6"
                };
                tokio::spawn(async move { hasher.verify(&phc, candidate).await.unwrap() })
            })
            .collect();
        let mut results = Vec::new();
        for run in runs {
            results.push(run.await.unwrap());
        }
        assert_eq!(results, [true, false, true, false, true, false]);
        assert_eq!(DEMAND.load(Ordering::Acquire), 0);
        assert!(
            MEMORY.lock().unwrap().is_empty(),
            "an idle hasher keeps no buffer"
        );
    }
}
