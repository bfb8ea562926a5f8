//! Any decrypted message: `parse_callback` never panics, and a parsed `change_external_chat`
//! survives a serde_json round trip unchanged (it is what the inbound queue carries).
#![no_main]

use groupwatch::provider::wecom::xml::{parse_callback, Callback, ChangeExternalChat};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(xml) = std::str::from_utf8(data) else { return };
    if let Ok(Callback::ChangeExternalChat(e)) = parse_callback(xml) {
        let e = *e;
        assert!(!e.chat_id.is_empty());
        let json = serde_json::to_string(&e).expect("serialises");
        let back: ChangeExternalChat =
            serde_json::from_str(&json).unwrap_or_else(|err| panic!("{json} does not deserialise: {err}"));
        assert_eq!(back, e, "json round trip changed the event: {json}");
    }
});
