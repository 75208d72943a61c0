//! E.164 phone numbers from request bodies and paths: parsing never panics; what parses is
//! `+` and 7 to 15 digits, masks to the same length, and maps to at most one country.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warden_domain::values::PhoneNumber;
use warden_domain::verify::country::country_of;

fuzz_target!(|data: &[u8]| {
    let raw = String::from_utf8_lossy(data);
    let Ok(phone) = PhoneNumber::parse("/phone_number", &raw) else {
        return;
    };
    let text = phone.as_str();
    let digits = text.strip_prefix('+').expect("a parsed number starts with +");
    assert!((7..=15).contains(&digits.len()), "{text}");
    assert!(digits.bytes().all(|b| b.is_ascii_digit()), "{text}");
    assert_eq!(phone.masked().chars().count(), text.chars().count());
    assert_eq!(PhoneNumber::parse("/p", text).ok().as_ref(), Some(&phone));
    if let Some(country) = country_of(&phone) {
        assert_eq!(country.len(), 2, "{country}");
    }
});
