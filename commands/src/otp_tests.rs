use std::collections::HashSet;

use chrono::{DateTime, TimeZone, Utc};

use super::*;

/// RFC 6238 Appendix B SHA-1 seed.
const RFC_SEED: &[u8] = b"12345678901234567890";

fn rfc_secret() -> TotpSecret {
    TotpSecret::from_bytes(RFC_SEED.to_vec()).unwrap()
}

fn at(unix: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(unix, 0).unwrap()
}

// ---------- RFC vectors ----------

#[test]
fn rfc6238_appendix_b_sha1_vectors() {
    let secret = rfc_secret();
    let vectors: [(u64, &str); 6] = [
        (59, "94287082"),
        (1_111_111_109, "07081804"),
        (1_111_111_111, "14050471"),
        (1_234_567_890, "89005924"),
        (2_000_000_000, "69279037"),
        (20_000_000_000, "65353130"),
    ];
    for (unix, expected8) in vectors {
        assert_eq!(totp_8_digits_at_unix(&secret, unix), expected8, "t={unix}");
        // The 6-digit code is the last six digits of the same value (value mod 10^6).
        let step = i64::try_from(unix / TOTP_STEP_SECS).unwrap();
        assert_eq!(totp_at(&secret, step), expected8[2..], "t={unix}");
        // And totp_match accepts it at that time, as the current step.
        assert_eq!(
            totp_match(&secret, &expected8[2..], at(unix as i64)),
            Some(step)
        );
    }
}

#[test]
fn rfc4226_appendix_d_hotp_vectors() {
    // totp_at(step) is HOTP(step): RFC 4226 Appendix D, same seed, 6 digits.
    let secret = rfc_secret();
    let expected = [
        "755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583", "399871",
        "520489",
    ];
    for (count, code) in expected.iter().enumerate() {
        assert_eq!(totp_at(&secret, count as i64), *code, "count={count}");
    }
}

#[test]
fn step_boundaries() {
    assert_eq!(totp_step(at(0)), 0);
    assert_eq!(totp_step(at(29)), 0);
    assert_eq!(totp_step(at(30)), 1);
    assert_eq!(totp_step(at(59)), 1);
    assert_eq!(totp_step(at(-1)), -1);
    // Beyond 2038 (RFC 6238 §4: T must not be 32-bit).
    assert_eq!(totp_step(at(20_000_000_000)), 666_666_666);
}

// ---------- totp_match ----------

#[test]
fn totp_match_accepts_current_previous_and_next_step() {
    let secret = new_totp_secret();
    let now = at(1_700_000_015);
    let t = totp_step(now);
    for delta in [0, -1, 1] {
        let code = totp_at(&secret, t + delta);
        // A random secret may give two windows the same code (p ≈ 1e-6): then the first in
        // the order T, T-1, T+1 wins, which is what we assert.
        let first = [t, t - 1, t + 1]
            .into_iter()
            .find(|s| totp_at(&secret, *s) == code)
            .unwrap();
        assert_eq!(
            totp_match(&secret, &code, now),
            Some(first),
            "delta={delta}"
        );
    }
}

#[test]
fn totp_match_order_and_window_with_fixed_secret() {
    let secret = rfc_secret();
    let now = at(1_111_111_111);
    let t = totp_step(now);
    let codes: Vec<String> = (-3..=3).map(|d| totp_at(&secret, t + d)).collect();
    // The fixed seed has distinct codes over this window, so each assertion is exact.
    assert_eq!(codes.iter().collect::<HashSet<_>>().len(), codes.len());
    assert_eq!(totp_match(&secret, &codes[3], now), Some(t));
    assert_eq!(totp_match(&secret, &codes[2], now), Some(t - 1));
    assert_eq!(totp_match(&secret, &codes[4], now), Some(t + 1));
    for far in [0, 1, 5, 6] {
        assert_eq!(totp_match(&secret, &codes[far], now), None, "index {far}");
    }
}

#[test]
fn totp_match_rejects_malformed_codes() {
    let secret = rfc_secret();
    let now = at(59);
    let good = totp_at(&secret, totp_step(now));
    assert_eq!(good, "287082");
    assert_eq!(totp_match(&secret, &good, now), Some(1));
    for bad in [
        "",
        "28708",
        "2870820",
        "94287082",
        " 287082",
        "287082 ",
        "287 082",
        "+87082",
        "-87082",
        "28708a",
        "２８７０８２", // full-width digits
        "287082\n",
    ] {
        assert_eq!(totp_match(&secret, bad, now), None, "{bad:?}");
    }
}

#[test]
fn totp_match_with_another_secret_fails() {
    let now = at(1_234_567_890);
    let code = totp_at(&rfc_secret(), totp_step(now));
    let other = TotpSecret::from_bytes(b"abcdefghijklmnopqrst".to_vec()).unwrap();
    assert_eq!(totp_match(&other, &code, now), None);
}

#[test]
fn totp_match_near_epoch_skips_negative_steps() {
    let secret = rfc_secret();
    let now = at(5); // T = 0; T-1 = -1 is not checked.
    assert_eq!(totp_match(&secret, &totp_at(&secret, 0), now), Some(0));
    assert_eq!(totp_match(&secret, &totp_at(&secret, 1), now), Some(1));
    assert_eq!(totp_match(&secret, &totp_at(&secret, -1), now), None);
}

// ---------- secrets ----------

#[test]
fn new_secret_is_160_bits_and_random() {
    let a = new_totp_secret();
    let b = new_totp_secret();
    assert_eq!(a.as_bytes().len(), 20);
    assert_ne!(a.as_bytes(), b.as_bytes());
    assert_ne!(a.as_bytes(), &[0u8; 20]);
}

#[test]
fn secret_length_bounds() {
    assert_eq!(
        TotpSecret::from_bytes(vec![1; 15]).unwrap_err(),
        OtpError::SecretLength { len: 15 }
    );
    assert!(TotpSecret::from_bytes(vec![1; 16]).is_ok());
    assert!(TotpSecret::from_bytes(vec![1; 64]).is_ok());
    assert!(TotpSecret::from_bytes(vec![1; 65]).is_err());
    assert!(TotpSecret::from_bytes(Vec::new()).is_err());
    // Every accepted length also passes totp-rs's own checks (totp_at never falls back to "").
    for len in [16, 20, 32, 64] {
        let secret = TotpSecret::from_bytes(vec![7; len]).unwrap();
        let code = totp_at(&secret, 1);
        assert_eq!(code.len(), 6, "len {len}");
        assert_eq!(totp_match(&secret, &code, at(45)), Some(1));
    }
}

#[test]
fn secret_debug_is_redacted() {
    let secret = rfc_secret();
    let debug = format!("{secret:?}");
    assert_eq!(debug, "TotpSecret(<redacted 20 bytes>)");
    assert!(!debug.contains("1234"));
    assert!(!debug.contains(&secret.base32()));
}

#[test]
fn base32_is_rfc4648_unpadded_and_round_trips() {
    // RFC 4648 §10 style check on the RFC 6238 seed.
    assert_eq!(rfc_secret().base32(), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
    // 16 bytes → 26 characters, no '=' padding.
    let s16 = TotpSecret::from_bytes(vec![0xA5; 16]).unwrap();
    assert_eq!(s16.base32().len(), 26);
    assert!(!s16.base32().contains('='));
    let secret = new_totp_secret();
    let encoded = secret.base32();
    assert_eq!(encoded.len(), 32);
    assert!(encoded
        .bytes()
        .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)));
    let decoded = base32::decode(base32::Alphabet::Rfc4648 { padding: false }, &encoded).unwrap();
    assert_eq!(decoded, secret.as_bytes());
}

// ---------- otpauth URI ----------

#[test]
fn otpauth_uri_exact_format() {
    let uri = otpauth_uri(&rfc_secret(), "alice@example.com");
    assert_eq!(
        uri,
        "otpauth://totp/Warden:alice%40example.com\
         ?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Warden\
         &algorithm=SHA1&digits=6&period=30"
    );
}

#[test]
fn otpauth_uri_percent_encodes_account() {
    let secret = new_totp_secret();
    let uri = otpauth_uri(&secret, "a+b@example.com");
    assert!(
        uri.starts_with("otpauth://totp/Warden:a%2Bb%40example.com?secret="),
        "{uri}"
    );
    // Characters that would break the label or the query are all encoded.
    let nasty = otpauth_uri(&secret, "x:y/z?w#v&u=t %é");
    assert!(
        nasty.starts_with("otpauth://totp/Warden:x%3Ay%2Fz%3Fw%23v%26u%3Dt%20%25%C3%A9?secret="),
        "{nasty}"
    );
    // The secret parameter decodes back to the 20 bytes.
    let b32 = uri
        .split_once("secret=")
        .unwrap()
        .1
        .split('&')
        .next()
        .unwrap();
    let decoded = base32::decode(base32::Alphabet::Rfc4648 { padding: false }, b32).unwrap();
    assert_eq!(decoded, secret.as_bytes());
}

#[test]
fn otpauth_uri_parses_back_with_totp_rs() {
    // An independent parser (totp-rs's own otpauth reader) gets every field back.
    let secret = new_totp_secret();
    for account in ["a+b@example.com", "x:y/z?w#v&u=t %é", "plain"] {
        let uri = otpauth_uri(&secret, account);
        // totp-rs's checked parser refuses a `:` in the account (the Key URI format forbids
        // one even encoded), so that case goes through its unchecked parser.
        let parsed = if account.contains(':') {
            totp_rs::Totp::from_url_unchecked(&uri).unwrap()
        } else {
            totp_rs::Totp::from_url(&uri).unwrap()
        };
        assert_eq!(parsed.account_name(), account);
        assert_eq!(parsed.issuer(), Some("Warden"));
        assert_eq!(parsed.digits(), 6);
        assert_eq!(parsed.step(), 30);
        assert_eq!(parsed.algorithm(), totp_rs::Algorithm::SHA1);
        assert_eq!(parsed.secret().as_bytes(), secret.as_bytes());
        // And it computes the same codes as we do.
        let unix: u64 = 1_700_000_000;
        assert_eq!(
            parsed.generate(unix).to_string(),
            totp_at(&secret, (unix / 30) as i64)
        );
    }
}

// ---------- QR ----------

fn decode_qr(img: image::GrayImage) -> String {
    let mut prepared = rqrr::PreparedImage::prepare(img);
    let grids = prepared.detect_grids();
    assert_eq!(grids.len(), 1, "expected exactly one QR code");
    let (_meta, content) = grids[0].decode().unwrap();
    content
}

#[test]
fn qr_png_is_a_readable_png_of_the_uri() {
    let uri = otpauth_uri(&new_totp_secret(), "a+b@example.com");
    let png = qr_png(&uri).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
    let img = image::load_from_memory_with_format(&png, image::ImageFormat::Png)
        .unwrap()
        .to_luma8();
    assert_eq!(img.width(), img.height());
    assert!(img.width() >= QR_MIN_PIXELS, "{}", img.width());
    assert!(img.width() <= 2048, "{}", img.width());
    // Quiet zone: the outer border is white.
    for x in 0..img.width() {
        assert_eq!(img.get_pixel(x, 0).0, [255]);
        assert_eq!(img.get_pixel(x, img.height() - 1).0, [255]);
    }
    assert_eq!(decode_qr(img), uri);
}

#[test]
fn qr_png_data_uri_wraps_the_png() {
    let uri = otpauth_uri(&rfc_secret(), "alice@example.com");
    let data = qr_png_data_uri(&uri).unwrap();
    let b64 = data.strip_prefix("data:image/png;base64,").unwrap();
    let png = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    assert_eq!(png, qr_png(&uri).unwrap());
}

#[test]
fn qr_svg_is_an_svg_of_the_same_code() {
    let uri = otpauth_uri(&rfc_secret(), "alice@example.com");
    let svg = qr_svg(&uri).unwrap();
    assert!(svg.starts_with("<?xml") || svg.starts_with("<svg"));
    assert!(svg.contains("<svg"));
    assert!(svg.trim_end().ends_with("</svg>"));
    // Width attribute at least the minimum.
    let width: u32 = svg
        .split_once("width=\"")
        .unwrap()
        .1
        .split('"')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(width >= QR_MIN_PIXELS, "{width}");
    // Same module matrix as the PNG: it is the same QrCode rendered twice.
    assert!(svg.contains("fill=\"#000\""));
}

#[test]
fn qr_rejects_data_too_long() {
    let huge = "x".repeat(10_000);
    assert!(matches!(qr_png(&huge), Err(OtpError::Qr(_))));
    assert!(matches!(qr_svg(&huge), Err(OtpError::Qr(_))));
}

// ---------- numeric codes ----------

#[test]
fn numeric_codes_have_the_requested_length_and_only_digits() {
    for digits in [6, 7, 8, 10] {
        for _ in 0..100 {
            let code = new_numeric_code(digits);
            assert_eq!(code.len(), digits);
            assert!(code.bytes().all(|b| b.is_ascii_digit()), "{code}");
        }
    }
    // Never weaker than six digits.
    assert_eq!(new_numeric_code(0).len(), 6);
    assert_eq!(new_numeric_code(4).len(), 6);
}

#[test]
fn numeric_codes_are_roughly_uniform() {
    // 20,000 codes × 6 positions: chi-square over the 10 digits, per position and overall.
    // 9 degrees of freedom; 40 is far beyond p = 1e-5, so this only fails on real bias.
    const N: usize = 20_000;
    let mut per_pos = [[0u32; 10]; 6];
    let mut distinct = HashSet::new();
    for _ in 0..N {
        let code = new_numeric_code(6);
        for (pos, b) in code.bytes().enumerate() {
            per_pos[pos][(b - b'0') as usize] += 1;
        }
        distinct.insert(code);
    }
    let chi2 = |counts: &[u32; 10], n: f64| {
        let expected = n / 10.0;
        counts
            .iter()
            .map(|&c| (f64::from(c) - expected).powi(2) / expected)
            .sum::<f64>()
    };
    let mut total = [0u32; 10];
    for counts in &per_pos {
        assert!(chi2(counts, N as f64) < 40.0, "{counts:?}");
        for (t, c) in total.iter_mut().zip(counts) {
            *t += c;
        }
    }
    assert!(chi2(&total, (N * 6) as f64) < 40.0, "{total:?}");
    // Leading zeros occur (no dropped zero) and collisions are rare (birthday: ~200 expected).
    assert!(per_pos[0][0] > 0);
    assert!(distinct.len() > N - 1_000, "{}", distinct.len());
}

// ---------- backup codes ----------

#[test]
fn backup_code_entropy_is_at_least_50_bits() {
    assert_eq!(BACKUP_CODE_ALPHABET.len(), 32);
    assert_eq!(BACKUP_CODE_ENTROPY_BITS, 60);
    const { assert!(BACKUP_CODE_ENTROPY_BITS >= 50) };
    // Alphabet: Crockford base32, distinct characters, no i l o u.
    let set: HashSet<u8> = BACKUP_CODE_ALPHABET.iter().copied().collect();
    assert_eq!(set.len(), 32);
    for c in b"ilou" {
        assert!(!set.contains(c));
    }
}

fn is_display_format(code: &str) -> bool {
    let groups: Vec<&str> = code.split('-').collect();
    groups.len() == 3
        && groups.iter().all(|g| {
            g.len() == 4
                && g.bytes().all(|b| {
                    (b.is_ascii_digit() || b.is_ascii_lowercase())
                        && BACKUP_CODE_ALPHABET.contains(&b)
                })
        })
}

#[test]
fn backup_codes_are_ten_distinct_well_formed_codes() {
    let codes = new_backup_codes();
    assert_eq!(codes.len(), BACKUP_CODE_COUNT);
    assert_eq!(
        codes.iter().collect::<HashSet<_>>().len(),
        BACKUP_CODE_COUNT
    );
    for code in &codes {
        assert_eq!(code.len(), 14, "{code}");
        assert!(is_display_format(code), "{code}");
    }
    // Two sets share nothing.
    let again = new_backup_codes();
    assert!(codes.iter().all(|c| !again.contains(c)));
}

#[test]
fn backup_codes_use_the_whole_alphabet() {
    // 50 sets × 10 codes × 12 chars = 6000 draws over 32 symbols: every symbol appears.
    let mut seen = HashSet::new();
    for _ in 0..50 {
        for code in new_backup_codes() {
            seen.extend(code.bytes().filter(|b| *b != b'-'));
        }
    }
    assert_eq!(seen.len(), 32);
}

#[test]
fn normalize_round_trips_generated_codes() {
    for code in new_backup_codes() {
        let canonical = normalize_backup_code(&code).unwrap();
        assert_eq!(canonical, code.replace('-', ""));
        assert_eq!(canonical.len(), BACKUP_CODE_LEN);
        // Idempotent, and insensitive to case, spacing and grouping.
        assert_eq!(
            normalize_backup_code(&canonical).as_deref(),
            Some(&*canonical)
        );
        assert_eq!(
            normalize_backup_code(&code.to_uppercase()).as_deref(),
            Some(&*canonical)
        );
        let spaced = format!(" {} ", code.replace('-', " "));
        assert_eq!(normalize_backup_code(&spaced).as_deref(), Some(&*canonical));
    }
}

#[test]
fn normalize_maps_crockford_look_alikes() {
    assert_eq!(
        normalize_backup_code("IL0O-ilo0-abcd").as_deref(),
        Some("11001100abcd")
    );
    assert_eq!(
        normalize_backup_code("o1i2-L3l4-5678").as_deref(),
        Some("011213145678")
    );
}

#[test]
fn normalize_rejects_bad_input() {
    for bad in [
        "",
        "abcd-efgh-jkm",      // 11 chars
        "abcd-efgh-jkmnp",    // 13 chars
        "abcd-efgh-jkmu",     // u is not Crockford
        "abcd-efgh-jk!n",     // punctuation
        "abcd_efgh_jkmn",     // underscores are not separators
        "abcd-efgh-jkmé",     // non-ASCII
        "ａｂｃｄ-efgh-jkmn", // full-width
    ] {
        assert_eq!(normalize_backup_code(bad), None, "{bad:?}");
    }
    assert_eq!(normalize_backup_code(&"-".repeat(1_000)), None);
    assert_eq!(
        normalize_backup_code(&format!("abcdefghjkmn{}", " ".repeat(100))),
        None
    );
}
