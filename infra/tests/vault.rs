//! The vault against a fresh SQLite file and a fresh Postgres database: sealing, crypto-
//! shredding, concurrency of key creation, argon2id, digests, tokens and the master key.
//!
//! Postgres: a throwaway `warden_vault_<uuid>` database is created through the maintenance
//! URL in `WARDEN_TEST_PG` (default `postgres://postgres@127.0.0.1:5432/postgres`) and dropped
//! afterwards.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sqlx::{Connection, Executor, Row};
use warden_commands::ports::{Secrets, SecretsError};
use warden_domain::Sealed;
use warden_infra::db::{Backend, Database};
use warden_infra::vault::{load_master_key, MasterKey, Vault, VaultError};

const DEFAULT_PG: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A migrated database that cleans up after itself (Postgres: dropped on `finish`).
struct TestDb {
    db: Database,
    dir: tempfile::TempDir,
    pg: Option<(String, String)>, // (maintenance url, database name)
}

impl TestDb {
    async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::connect(None, dir.path()).await.unwrap();
        db.migrate().await.unwrap();
        Self { db, dir, pg: None }
    }

    async fn postgres() -> Self {
        let maintenance = std::env::var("WARDEN_TEST_PG").unwrap_or_else(|_| DEFAULT_PG.into());
        let name = format!("warden_vault_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&maintenance)
            .await
            .unwrap_or_else(|e| {
                panic!("cannot reach Postgres at {maintenance} (set WARDEN_TEST_PG): {e}")
            });
        conn.execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap();
        conn.close().await.unwrap();
        let base = maintenance.split('?').next().unwrap();
        let (server, _) = base.rsplit_once('/').unwrap();
        let url = format!("{server}/{name}");
        let dir = tempfile::tempdir().unwrap();
        let db = Database::connect(Some(&url), dir.path()).await.unwrap();
        assert_eq!(db.backend, Backend::Postgres);
        db.migrate().await.unwrap();
        Self {
            db,
            dir,
            pg: Some((maintenance, name)),
        }
    }

    fn vault(&self, master: [u8; 32]) -> Vault {
        Vault::new(self.db.clone(), MasterKey::from_bytes(master))
    }

    async fn finish(self) {
        self.db.pool.close().await;
        if let Some((maintenance, name)) = self.pg {
            if let Ok(mut conn) = sqlx::PgConnection::connect(&maintenance).await {
                let _ = conn
                    .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                    .await;
            }
        }
    }
}

const MASTER: [u8; 32] = [0x42; 32];

async fn row_of(db: &Database, subject: &str) -> Option<(Option<Vec<u8>>, Option<String>)> {
    sqlx::query("SELECT wrapped_key, destroyed_at FROM data_keys WHERE subject = $1")
        .bind(subject)
        .fetch_optional(&db.pool)
        .await
        .unwrap()
        .map(|r| (r.try_get(0).unwrap(), r.try_get(1).unwrap()))
}

async fn count_keys(db: &Database, subject: &str) -> i64 {
    sqlx::query("SELECT COUNT(*) FROM data_keys WHERE subject = $1")
        .bind(subject)
        .fetch_one(&db.pool)
        .await
        .unwrap()
        .try_get(0)
        .unwrap()
}

/// Every byte of the SQLite database, WAL included.
fn sqlite_bytes(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for name in ["warden.db", "warden.db-wal"] {
        if let Ok(bytes) = std::fs::read(dir.join(name)) {
            all.extend(bytes);
        }
    }
    all
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn flip_first_byte(b64: &str) -> String {
    let mut bytes = STANDARD.decode(b64).unwrap();
    bytes[0] ^= 0x01;
    STANDARD.encode(bytes)
}

// ---------------------------------------------------------------------------------------
// Scenarios run on both backends.

async fn round_trip(t: &TestDb) {
    let vault = t.vault(MASTER);
    let a = vault.seal("user-1", b"JBSWY3DPEHPK3PXP").await.unwrap();
    let b = vault.seal("user-1", b"JBSWY3DPEHPK3PXP").await.unwrap();
    assert_eq!(a.key_id, "user-1");
    assert_eq!(STANDARD.decode(&a.nonce).unwrap().len(), 24);
    assert_eq!(STANDARD.decode(&a.ciphertext).unwrap().len(), 16 + 16);
    assert_ne!(a.nonce, b.nonce, "a fresh nonce every time");
    assert_ne!(a.ciphertext, b.ciphertext, "ciphertext differs every time");
    assert_eq!(vault.open(&a).await.unwrap().unwrap(), b"JBSWY3DPEHPK3PXP");
    assert_eq!(vault.open(&b).await.unwrap().unwrap(), b"JBSWY3DPEHPK3PXP");

    // Empty plaintext round-trips too.
    let empty = vault.seal("user-1", b"").await.unwrap();
    assert_eq!(vault.open(&empty).await.unwrap().unwrap(), b"");

    // A new process (no cache) with the same master key opens it; one key row per subject.
    let restarted = t.vault(MASTER);
    assert_eq!(
        restarted.open(&a).await.unwrap().unwrap(),
        b"JBSWY3DPEHPK3PXP"
    );
    assert_eq!(count_keys(&t.db, "user-1").await, 1);

    // The data key is stored wrapped, never in the clear, and nothing sealed is stored.
    let (wrapped, destroyed) = row_of(&t.db, "user-1").await.unwrap();
    assert_eq!(wrapped.unwrap().len(), 1 + 24 + 32 + 16);
    assert!(destroyed.is_none());

    // A different master key cannot unwrap the stored data key.
    let wrong = t.vault([0x43; 32]);
    assert_eq!(wrong.open(&a).await, Err(SecretsError::Tampered));

    // A subject that never had a key: nothing to open.
    let never = Sealed {
        key_id: "user-never".into(),
        ..a.clone()
    };
    assert_eq!(vault.open(&never).await.unwrap(), None);
    assert_eq!(
        count_keys(&t.db, "user-never").await,
        0,
        "open never creates keys"
    );
}

async fn tampering(t: &TestDb) {
    let vault = t.vault(MASTER);
    let sealed = vault.seal("user-2", b"secret").await.unwrap();

    let bad_ct = Sealed {
        ciphertext: flip_first_byte(&sealed.ciphertext),
        ..sealed.clone()
    };
    assert_eq!(vault.open(&bad_ct).await, Err(SecretsError::Tampered));

    let bad_nonce = Sealed {
        nonce: flip_first_byte(&sealed.nonce),
        ..sealed.clone()
    };
    assert_eq!(vault.open(&bad_nonce).await, Err(SecretsError::Tampered));

    let short_nonce = Sealed {
        nonce: STANDARD.encode([0u8; 12]),
        ..sealed.clone()
    };
    assert_eq!(vault.open(&short_nonce).await, Err(SecretsError::Tampered));

    let not_b64 = Sealed {
        ciphertext: "%%%".into(),
        ..sealed.clone()
    };
    assert_eq!(vault.open(&not_b64).await, Err(SecretsError::Tampered));

    // Moved to another subject's key: the AAD and the key differ.
    vault.seal("user-3", b"other").await.unwrap();
    let moved = Sealed {
        key_id: "user-3".into(),
        ..sealed.clone()
    };
    assert_eq!(vault.open(&moved).await, Err(SecretsError::Tampered));

    // A wrapped key copied onto another subject's row does not unwrap (AAD = subject).
    let (wrapped2, _) = row_of(&t.db, "user-2").await.unwrap();
    sqlx::query("UPDATE data_keys SET wrapped_key = $1 WHERE subject = $2")
        .bind(wrapped2.unwrap())
        .bind("user-3")
        .execute(&t.db.pool)
        .await
        .unwrap();
    let fresh = t.vault(MASTER);
    assert_eq!(fresh.open(&moved).await, Err(SecretsError::Tampered));

    // The original is still fine.
    assert_eq!(vault.open(&sealed).await.unwrap().unwrap(), b"secret");
}

async fn crypto_shredding(t: &TestDb) {
    let vault = t.vault(MASTER);
    let plaintext = b"port-out PIN hash $argon2id$v=19$zzzz";
    let sealed = vault.seal("user-4", plaintext).await.unwrap();
    let other = vault.seal("user-5", b"unrelated").await.unwrap();
    assert!(vault.open(&sealed).await.unwrap().is_some()); // now cached
    let (wrapped, _) = row_of(&t.db, "user-4").await.unwrap();
    let wrapped = wrapped.unwrap();

    vault.destroy_key("user-4").await.unwrap();
    assert_eq!(
        vault.open(&sealed).await.unwrap(),
        None,
        "the cache was evicted"
    );
    assert_eq!(t.vault(MASTER).open(&sealed).await.unwrap(), None);

    let (after, destroyed_at) = row_of(&t.db, "user-4").await.unwrap();
    assert!(after.is_none(), "the wrapped key is gone");
    let destroyed_at = destroyed_at.unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(&destroyed_at).is_ok());

    // Idempotent, and the first destruction time stays.
    vault.destroy_key("user-4").await.unwrap();
    assert_eq!(
        row_of(&t.db, "user-4").await.unwrap().1.unwrap(),
        destroyed_at
    );

    // A forgotten subject gets no new data.
    let err = vault.seal("user-4", b"new").await.unwrap_err();
    assert_eq!(err, SecretsError::Forgotten);
    let err = t.vault(MASTER).seal("user-4", b"new").await.unwrap_err();
    assert_eq!(err, SecretsError::Forgotten);

    // Forgetting a subject that never had a key also bars it from getting one.
    vault.destroy_key("user-6").await.unwrap();
    assert!(row_of(&t.db, "user-6").await.unwrap().0.is_none());
    assert!(vault.seal("user-6", b"x").await.is_err());

    // Others are untouched.
    assert_eq!(vault.open(&other).await.unwrap().unwrap(), b"unrelated");

    // On SQLite the old wrapped key is not left behind in free pages or the WAL, and no
    // plaintext ever reached the file.
    if t.db.backend == Backend::Sqlite {
        let bytes = sqlite_bytes(t.dir.path());
        assert!(!bytes.is_empty());
        assert!(
            !contains(&bytes, &wrapped),
            "wrapped key still in the database file"
        );
        assert!(!contains(&bytes, plaintext));
        assert!(!contains(&bytes, b"unrelated"));
    }
}

async fn concurrent_first_seals(t: &TestDb) {
    // Separate vaults (as separate processes would be): no shared cache to hide a race.
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(16));
    let mut tasks = Vec::new();
    for i in 0..16u8 {
        let vault = t.vault(MASTER);
        let start = std::sync::Arc::clone(&start);
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            vault.seal("org-race", &[i; 8]).await.unwrap()
        }));
    }
    let mut sealed = Vec::new();
    for task in tasks {
        sealed.push(task.await.unwrap());
    }
    assert_eq!(count_keys(&t.db, "org-race").await, 1);
    let reader = t.vault(MASTER);
    for (i, s) in sealed.iter().enumerate() {
        assert_eq!(
            reader.open(s).await.unwrap().unwrap(),
            vec![i as u8; 8],
            "every task used the one stored key"
        );
    }
}

async fn first_seals_queued_together_in_one_vault(t: &TestDb) {
    // One vault, so new keys queue for its one writer and share inserts: a subject named
    // several times in one batch must be stored once, and only the request whose row went
    // in may use its own key (the others must load the stored one). An open transaction
    // holding a row the writer needs keeps it busy while the rest pile up behind it.
    let vault = t.vault(MASTER);
    let begin = match t.db.backend {
        Backend::Postgres => "BEGIN",
        Backend::Sqlite => "BEGIN IMMEDIATE",
    };
    let mut blocker = t.db.pool.begin_with(begin).await.unwrap();
    sqlx::query(
        "INSERT INTO data_keys (subject, wrapped_key, created_at, destroyed_at) \
         VALUES ('org-first', $1, '2026-01-01T00:00:00Z', NULL)",
    )
    .bind(vec![0u8; 8])
    .execute(&mut *blocker)
    .await
    .unwrap();
    let seal = |subject: String, byte: u8| {
        let vault = vault.clone();
        tokio::spawn(async move { (subject.clone(), vault.seal(&subject, &[byte; 8]).await) })
    };
    let mut tasks = vec![seal("org-first".into(), 0)];
    tokio::time::sleep(Duration::from_millis(100)).await;
    for i in 1..=32u8 {
        let subject = if i % 2 == 0 {
            "org-shared".to_owned()
        } else {
            format!("org-own-{i}")
        };
        tasks.push(seal(subject, i));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    blocker.rollback().await.unwrap();

    let reader = t.vault(MASTER);
    for (i, task) in tasks.into_iter().enumerate() {
        let (subject, sealed) = task.await.unwrap();
        let sealed = sealed.unwrap();
        assert_eq!(count_keys(&t.db, &subject).await, 1);
        assert_eq!(
            reader.open(&sealed).await,
            Ok(Some(vec![i as u8; 8])),
            "value {i} was sealed under the stored key of {subject}"
        );
    }
}

/// The key writer is a task on the runtime that first needed it; a vault used after that
/// runtime has ended (a CLI step, a test) writes its new keys alone instead of failing.
#[test]
fn a_vault_outlives_the_runtime_its_key_writer_started_on() {
    let first = tokio::runtime::Runtime::new().unwrap();
    let (t, vault) = first.block_on(async {
        let t = TestDb::sqlite().await;
        let vault = t.vault(MASTER);
        vault.seal("org-before", b"one").await.unwrap();
        (t, vault)
    });
    drop(first);
    let second = tokio::runtime::Runtime::new().unwrap();
    second.block_on(async {
        let sealed = vault.seal("org-after", b"two").await.unwrap();
        assert_eq!(vault.open(&sealed).await, Ok(Some(b"two".to_vec())));
        assert_eq!(count_keys(&t.db, "org-after").await, 1);
        t.finish().await;
    });
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let t = super::TestDb::sqlite().await;
                    super::$name(&t).await;
                    t.finish().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let t = super::TestDb::postgres().await;
                    super::$name(&t).await;
                    t.finish().await;
                }
            )*
        }
    };
}

on_both_backends!(
    round_trip,
    tampering,
    crypto_shredding,
    concurrent_first_seals,
    first_seals_queued_together_in_one_vault
);

// ---------------------------------------------------------------------------------------
// Hashing, digests, tokens: no database work, SQLite suffices for the constructor.

#[tokio::test]
async fn argon2id_with_pinned_owasp_parameters() {
    let t = TestDb::sqlite().await;
    let vault = t.vault(MASTER);
    let phc = vault
        .hash_secret("correct horse battery staple")
        .await
        .unwrap();
    assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
    // 16-byte salt: 22 base64 characters.
    let salt = phc.split('$').nth(4).unwrap();
    assert_eq!(salt.len(), 22);
    assert!(vault
        .verify_secret(&phc, "correct horse battery staple")
        .await
        .unwrap());
    assert!(!vault
        .verify_secret(&phc, "correct horse battery stapler")
        .await
        .unwrap());
    // Same secret, different salt.
    let again = vault
        .hash_secret("correct horse battery staple")
        .await
        .unwrap();
    assert_ne!(phc, again);

    for bad in [
        "",
        "not a hash",
        "$argon2id$v=19$m=19456,t=2,p=1$",
        "$argon2i$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA",
        "$argon2id$v=19$m=4194304,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA",
        "$bcrypt$xyz",
    ] {
        assert!(
            matches!(vault.verify_secret(bad, "x").await, Err(SecretsError::Hashing(_))),
            "{bad:?}"
        );
    }
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burn_verify_costs_what_a_failed_verify_costs() {
    let t = TestDb::sqlite().await;
    let vault = t.vault(MASTER);
    let phc = vault.hash_secret("the real password here").await.unwrap();
    vault.burn_verify("warm-up").await; // the dummy hash exists from here on

    let mut real = Duration::MAX;
    let mut burn = Duration::MAX;
    for _ in 0..3 {
        let start = Instant::now();
        assert!(!vault.verify_secret(&phc, "a wrong guess").await.unwrap());
        real = real.min(start.elapsed());
        let start = Instant::now();
        vault.burn_verify("a wrong guess").await;
        burn = burn.min(start.elapsed());
    }
    assert!(
        burn * 3 >= real && burn <= real * 3,
        "burn_verify {burn:?} vs failed verify {real:?}"
    );
    assert!(
        burn >= Duration::from_millis(5),
        "burn_verify did no real work: {burn:?}"
    );
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashing_bursts_queue() {
    let t = TestDb::sqlite().await;
    let vault = t.vault(MASTER);
    let mut tasks = Vec::new();
    for i in 0..6 {
        let v = vault.clone();
        tasks.push(tokio::spawn(async move {
            v.hash_secret(&format!("password {i}")).await
        }));
    }
    for task in tasks {
        assert!(task.await.unwrap().unwrap().starts_with("$argon2id$"));
    }
    t.finish().await;
}

#[tokio::test]
async fn digests_and_tokens() {
    let t = TestDb::sqlite().await;
    let vault = t.vault(MASTER);

    let d = vault.keyed_digest("email", "ada@example.com");
    assert_eq!(d.as_str().len(), 64);
    assert!(d
        .as_str()
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    assert_eq!(d, vault.keyed_digest("email", "ada@example.com"));
    assert_eq!(d, t.vault(MASTER).keyed_digest("email", "ada@example.com"));
    assert_ne!(
        d,
        vault.keyed_digest("code", "ada@example.com"),
        "purposes are separated"
    );
    assert_ne!(
        vault.keyed_digest("ab", "c"),
        vault.keyed_digest("a", "bc"),
        "purpose and value cannot slide into each other"
    );
    assert_ne!(
        d,
        t.vault([1; 32]).keyed_digest("email", "ada@example.com"),
        "peppered"
    );
    // Not a plain hash, and not HMAC under the master key itself.
    let plain = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        b"email\0ada@example.com",
    ));
    assert_ne!(d.as_str(), plain);
    {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&MASTER).unwrap();
        mac.update(b"email\0ada@example.com");
        assert_ne!(d.as_str(), hex::encode(mac.finalize().into_bytes()));
    }

    // SHA-256 test vector.
    assert_eq!(
        vault.token_digest("abc").as_str(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );

    let a = vault.new_token("wsk_");
    let b = vault.new_token("wsk_");
    assert_ne!(a, b);
    let body = a.strip_prefix("wsk_").unwrap();
    assert_eq!(body.len(), 43, "32 bytes, base64url without padding");
    assert!(body
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    t.finish().await;
}

// ---------------------------------------------------------------------------------------
// The master key.

#[test]
fn master_key_file_is_created_private_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("nested/data");
    let first = load_master_key(None, &data_dir).unwrap();
    let path = data_dir.join("master.key");
    let contents = std::fs::read_to_string(&path).unwrap();
    assert_eq!(STANDARD.decode(contents.trim()).unwrap().len(), 32);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "mode {mode:o}");
    }
    // No temporary files left behind.
    assert_eq!(std::fs::read_dir(&data_dir).unwrap().count(), 1);

    let second = load_master_key(None, &data_dir).unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        contents,
        "never overwritten"
    );
    // Same key: same derived pepper.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let t = TestDb::sqlite().await;
        let a = Vault::new(t.db.clone(), first).keyed_digest("p", "v");
        let b = Vault::new(t.db.clone(), second).keyed_digest("p", "v");
        assert_eq!(a, b);
        let env = Vault::new(
            t.db.clone(),
            load_master_key(Some(contents.trim()), dir.path()).unwrap(),
        )
        .keyed_digest("p", "v");
        assert_eq!(
            a, env,
            "the file holds the same base64 the env variable takes"
        );
        t.finish().await;
    });

    // A malformed file is an error, and is left alone.
    std::fs::write(&path, "garbage").unwrap();
    assert!(matches!(
        load_master_key(None, &data_dir),
        Err(VaultError::MalformedFile { .. })
    ));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "garbage");
}

#[test]
fn concurrent_first_loads_agree() {
    let dir = tempfile::tempdir().unwrap();
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let d = dir.path().to_path_buf();
            std::thread::spawn(move || {
                load_master_key(None, &d).unwrap();
                std::fs::read_to_string(d.join("master.key")).unwrap()
            })
        })
        .collect();
    let seen: std::collections::HashSet<String> =
        handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(seen.len(), 1);
}

#[test]
fn env_master_key_is_validated() {
    let dir = tempfile::tempdir().unwrap();
    let good = STANDARD.encode([9u8; 32]);
    assert!(load_master_key(Some(&good), dir.path()).is_ok());
    assert!(load_master_key(Some(good.trim_end_matches('=')), dir.path()).is_ok());
    assert!(
        !dir.path().join("master.key").exists(),
        "no file when the env is set"
    );

    for bad in [
        "",
        "   ",
        "not base64 at all!",
        &STANDARD.encode([9u8; 16]),
        &STANDARD.encode([9u8; 33]),
    ] {
        let err = load_master_key(Some(bad), dir.path()).unwrap_err();
        assert!(matches!(err, VaultError::MalformedKey(_)), "{bad:?}");
        let msg = err.to_string();
        assert!(msg.contains("WARDEN_MASTER_KEY"), "{msg}");
        if bad.trim().len() > 3 {
            assert!(
                !msg.contains(bad.trim()),
                "the error repeats the value: {msg}"
            );
        }
    }
}

#[tokio::test]
async fn debug_output_shows_no_key_material() {
    let key_bytes = [0xAB; 32];
    let key = MasterKey::from_bytes(key_bytes);
    let shown = format!("{key:?} {key:#?}");
    assert!(shown.contains("redacted"), "{shown}");
    for needle in ["171", "ab", "AB", &STANDARD.encode(key_bytes)] {
        assert!(!shown.contains(needle), "{shown}");
    }

    let t = TestDb::sqlite().await;
    let vault = Vault::new(t.db.clone(), key);
    vault.seal("user-7", b"plaintext-marker").await.unwrap(); // a key in the cache
    let shown = format!("{vault:?} {vault:#?}");
    assert!(shown.contains("Vault"), "{shown}");
    for needle in [
        "171",
        "0xab",
        "plaintext-marker",
        &STANDARD.encode(key_bytes),
    ] {
        assert!(!shown.contains(needle), "{shown}");
    }
    // Errors carry no secrets either.
    let forged = Sealed {
        key_id: "user-7".into(),
        nonce: STANDARD.encode([0u8; 24]),
        ciphertext: STANDARD.encode(b"plaintext-marker-and-more-bytes!"),
    };
    let shown = format!("{:?}", vault.open(&forged).await);
    assert_eq!(shown, "Err(Tampered)");
    t.finish().await;
}
