//! Any body, UTF-8 or not: `parse_envelope` returns Ok or Err, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(body) = std::str::from_utf8(data) {
        if let Ok(encrypt) = groupwatch::provider::wecom::xml::parse_envelope(body) {
            // What it returns is non-blank text taken from the body.
            assert!(!encrypt.trim().is_empty());
        }
    }
});
