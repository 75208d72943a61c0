//! Request bodies as the server reads them (`parse_json`: JSON, then the typed request with
//! a JSON-pointer error), for the main request types; then the domain parsers on what
//! deserialized. Nothing panics; every refusal is a client error (4xx).
#![no_main]

use libfuzzer_sys::fuzz_target;
use warden::api::error::ApiError;
use warden::api::extract::parse_json;
use warden::api::{accounts, sessions, verifications};
use warden_domain::values::{EmailAddress, PhoneNumber};
use warden_domain::verify::values::{CustomCode, Extension, TimeoutSecs};

fn client_error<T>(r: &Result<T, ApiError>) {
    if let Err(e) = r {
        assert!(e.status.is_client_error(), "{}", e.status);
    }
}

fuzz_target!(|data: &[u8]| {
    let trigger = parse_json::<verifications::TriggerRequest>(data);
    client_error(&trigger);
    if let Ok(t) = trigger {
        let _ = PhoneNumber::parse("/phone_number", &t.phone_number);
        if let Some(c) = &t.custom_code {
            let _ = CustomCode::parse("/custom_code", c);
        }
        if let Some(s) = t.timeout_secs {
            let _ = TimeoutSecs::parse("/timeout_secs", s);
        }
        if let Some(e) = &t.extension {
            let _ = Extension::parse("/extension", e);
        }
    }
    let by_phone = parse_json::<verifications::VerifyByPhoneRequest>(data);
    client_error(&by_phone);
    if let Ok(v) = by_phone {
        let _ = CustomCode::parse("/code", &v.code);
    }
    client_error(&parse_json::<verifications::VerifyByIdRequest>(data));
    let sign_up = parse_json::<accounts::SignUpRequest>(data);
    client_error(&sign_up);
    let sign_in = parse_json::<sessions::SignInRequest>(data);
    client_error(&sign_in);
    if let Ok(s) = sign_in {
        let _ = EmailAddress::parse("/email", &s.email);
    }
});
