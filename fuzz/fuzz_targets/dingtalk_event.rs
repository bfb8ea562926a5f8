//! DingTalk's parsers on any input. The first byte picks what the rest is:
//! - 0: an HTTP body for `parse_envelope` (`{"encrypt":…}`);
//! - 1: a decrypted HTTP push, or a Stream frame's `data`, for the event mapping;
//! - 2: the same as `data` of a Stream EVENT frame whose headers name `chat_add_member`;
//! - 3: a plaintext the codec signs and encrypts, then accepts as a POST (the whole HTTP path).
//!
//! Never a panic; a change always names a chat and has one report and a 32-hex-digit key; a
//! plaintext accepted once is accepted the same way again.
#![no_main]

use groupwatch::provider::dingtalk::codec::{parse_envelope, DingtalkCodec};
use groupwatch::provider::dingtalk::config::DingtalkTenant;
use groupwatch::provider::dingtalk::events::{decode, object, Envelope};
use groupwatch::provider::{CallbackCodec, CallbackRequest, ChatRef, Decoded, Method};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn codec() -> &'static DingtalkCodec {
    static CODEC: OnceLock<DingtalkCodec> = OnceLock::new();
    CODEC.get_or_init(|| {
        let tenant: DingtalkTenant = toml_tenant();
        DingtalkCodec::new(&tenant, Some(300)).expect("valid test tenant")
    })
}

/// The official DingTalk test vector's token, key and owner key.
fn toml_tenant() -> DingtalkTenant {
    serde_json::from_value(serde_json::json!({
        "tenant": "fuzz", "app_key": "ding6ccabc44d2c8d38b", "app_secret": "s", "mode": "http",
        "token": "mryue", "aes_key": "Yue0EfdN5900c1ce5cf6A152c63DDe1808a60c5ecd7",
        "allow_documented_test_key": true,
    }))
    .expect("valid tenant")
}

fn check(decoded: &Decoded) {
    if let Decoded::Change(change) = decoded {
        match &change.chat {
            ChatRef::Id(id) | ChatRef::Alias(id) => assert!(!id.is_empty()),
        }
        assert_eq!(change.reports.len(), 1);
        assert!(change.key.len() == 32 && change.key.bytes().all(|b| b.is_ascii_hexdigit()), "{}", change.key);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    match selector % 4 {
        0 => {
            if let Ok(encrypt) = parse_envelope(rest) {
                assert!(!encrypt.is_empty());
            }
        }
        1 | 2 => {
            let Ok(text) = std::str::from_utf8(rest) else { return };
            let Ok(map) = object(text) else { return };
            let envelope = if selector % 4 == 2 {
                Envelope { event_type: Some("chat_add_member"), event_id: Some("ev"), born_ms: Some(1) }
            } else {
                Envelope::default()
            };
            if let Ok(decoded) = decode("fuzz", envelope, &map, 0) {
                check(&decoded);
                assert_eq!(decode("fuzz", envelope, &map, 0).as_ref(), Ok(&decoded), "deterministic");
            }
        }
        _ => {
            let now = 1_700_000_000_000;
            let signed = codec().encode(rest, now);
            let query: String =
                signed.query.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
            let request = CallbackRequest { method: Method::Post, query: Some(&query), body: &signed.body, now_ms: now };
            if let Ok(accepted) = codec().accept(&request) {
                check(&accepted.decoded);
            }
        }
    }
});
