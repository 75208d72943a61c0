//! Codes and the other short values clients send: custom verification codes, code lengths
//! and timeouts, call extensions, app names, message templates (and their rendering),
//! webhook URLs, e-mail addresses, PINs and passphrases. Parsing never panics, and what
//! parses keeps its documented shape.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warden_domain::values::{CurrencyCode, EmailAddress, Passphrase, PortOutPin, Text};
use warden_domain::verify::template::TemplateText;
use warden_domain::verify::values::{
    AppName, CodeLength, CustomCode, Extension, TimeoutSecs, WebhookUrl,
};

fuzz_target!(|data: &[u8]| {
    let raw = String::from_utf8_lossy(data);
    let raw = raw.as_ref();
    if let Ok(code) = CustomCode::parse("/code", raw) {
        let c = code.expose();
        assert!((4..=10).contains(&c.len()) && c.bytes().all(|b| b.is_ascii_digit()));
    }
    if data.len() >= 8 {
        let mut n = [0u8; 8];
        n.copy_from_slice(&data[..8]);
        let n = i64::from_le_bytes(n);
        let _ = CodeLength::parse("/code_length", n);
        let _ = TimeoutSecs::parse("/timeout_secs", n);
    }
    let _ = Extension::parse("/extension", raw);
    if let Ok(app) = AppName::parse("/app_name", raw) {
        if let Ok(template) = TemplateText::parse("/text", raw) {
            let rendered = TemplateText::render(template.as_str(), app.as_str(), "123456");
            assert!(rendered.contains("123456"));
        }
    }
    if let Ok(template) = TemplateText::parse("/text", raw) {
        assert!(TemplateText::render(template.as_str(), "App", "4321").contains("4321"));
    }
    if let Ok(url) = WebhookUrl::parse("/webhook_url", raw) {
        assert!(url.as_str().starts_with("http://") || url.as_str().starts_with("https://"));
    }
    let _ = EmailAddress::parse("/email", raw);
    let _ = PortOutPin::parse("/pin", raw);
    let _ = Passphrase::parse("/passphrase", raw);
    let _ = CurrencyCode::parse("/billing_currency", raw);
    let _ = Text::parse("/name", raw, 100);
});
