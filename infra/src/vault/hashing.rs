//! argon2id for passwords, passphrases and PINs: pinned OWASP parameters, run on the
//! blocking pool, at most one hash per CPU at a time (each takes 19 MiB), so a burst of
//! sign-ins queues instead of exhausting memory or starving the async runtime.

use std::sync::{Arc, OnceLock};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::rngs::OsRng;
use rand::RngCore;
use tokio::sync::Semaphore;
use warden_commands::ports::SecretsError;
use zeroize::Zeroizing;

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
        let cpus = std::thread::available_parallelism()
            .map(std::num::NonZeroUsize::get)
            .unwrap_or(2);
        Self {
            permits: Arc::new(Semaphore::new(cpus)),
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

fn argon2() -> Result<Argon2<'static>, SecretsError> {
    let params = Params::new(M_COST_KIB, T_COST, P_COST, None)
        .map_err(|e| SecretsError::Hashing(format!("invalid argon2 parameters: {e}")))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

fn hash_blocking(secret: &[u8]) -> Result<String, SecretsError> {
    // 16 random bytes of salt (the PHC recommended length; NIST asks for at least 4).
    let mut raw = [0u8; 16];
    OsRng.fill_bytes(&mut raw);
    let salt = SaltString::encode_b64(&raw)
        .map_err(|e| SecretsError::Hashing(format!("salt encoding failed: {e}")))?;
    argon2()?
        .hash_password(secret, &salt)
        .map(|h| h.to_string())
        .map_err(|e| SecretsError::Hashing(format!("argon2 failed: {e}")))
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
    match argon2()?.verify_password(candidate, &parsed) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::Password) => Ok(false),
        Err(e) => Err(SecretsError::Hashing(format!("argon2 failed: {e}"))),
    }
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
