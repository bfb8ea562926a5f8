//! Tencent IM callbacks: whatever the query and body, `TimCodec::accept` and the callback parser
//! never panic; what they accept is consistent; and a body signed by `encode` is refused only for
//! what is wrong with the body itself.
//!
//! The input is `query NUL body` (no NUL: all body, no query). Seeds: `fuzz/seeds/tim_callback`
//! (each fixture body, with and without a query).
#![no_main]

use groupwatch::provider::tim::callback::{dedupable, dedupe_key, parse, Callback};
use groupwatch::provider::tim::codec::TimCodec;
use groupwatch::provider::tim::config::TimTenant;
use groupwatch::provider::{CallbackCodec, CallbackError, CallbackRequest, Decoded, Method};
use libfuzzer_sys::fuzz_target;

const NOW_MS: i64 = 1_700_000_000_000;

fn codec() -> TimCodec {
    let tenant: TimTenant = serde_json::from_value(serde_json::json!({
        "tenant": "fuzz", "sdk_app_id": 1_400_000_000u64, "identifier": "administrator",
        "secret_key": "key", "callback_token": "xxxxyyyy"
    }))
    .expect("valid tenant");
    TimCodec::new(&tenant, Some(300))
}

fuzz_target!(|data: &[u8]| {
    let (query, body) = match data.iter().position(|b| *b == 0) {
        Some(i) => (Some(String::from_utf8_lossy(&data[..i]).into_owned()), &data[i + 1..]),
        None => (None, data),
    };
    // The parser alone: a group callback always names its group, has reports, and keeps
    // EventTime's seconds.
    if let Ok(Callback::Group(g)) = parse(body, None) {
        assert!(!g.group_id.is_empty());
        assert!(!g.reports.is_empty());
        assert!(g.reports.iter().all(|r| r.occurred_at == g.event_time_ms / 1000));
        let key = dedupe_key("fuzz", &g);
        assert_eq!(key.len(), 32);
        assert_eq!(key, dedupe_key("fuzz", &g));
        let _ = dedupable(&g);
    }
    let c = codec();
    // The fuzzed request as it came: never a panic.
    let _ = c.accept(&CallbackRequest { method: Method::Post, query: query.as_deref(), body, now_ms: NOW_MS });
    // The body as Tencent would sign it: only the body can be at fault.
    let signed = c.encode(body, NOW_MS);
    let q: String = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(&signed.query).finish();
    match c.accept(&CallbackRequest { method: Method::Post, query: Some(&q), body: &signed.body, now_ms: NOW_MS }) {
        Ok(accepted) => {
            assert!(accepted.replay_id.is_some());
            if let Decoded::Change(change) = accepted.decoded {
                assert!(!change.reports.is_empty());
            }
        }
        Err(CallbackError::Malformed(_) | CallbackError::BadEvent(_)) => {}
        Err(e) => panic!("a correctly signed request refused for {e:?}"),
    }
});
