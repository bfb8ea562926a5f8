//! Tencent IM: UserSig generation (HMAC-SHA256, zlib, base64: made once per 180 days in service,
//! measured in case a deployment renews often), the callback parser, and the whole codec (Sign
//! check, parse, dedupe key) on the documented callbacks.
//! Run: `cargo bench --bench tim`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use groupwatch::provider::tim::callback::parse;
use groupwatch::provider::tim::codec::TimCodec;
use groupwatch::provider::tim::config::TimTenant;
use groupwatch::provider::tim::usersig::{gen_usersig, DEFAULT_EXPIRE_SECS};
use groupwatch::provider::{CallbackCodec, CallbackRequest, Method};
use std::hint::black_box;

const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const NOW_MS: i64 = 1_700_000_000_000;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/fixtures/tim/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn bench_tim(c: &mut Criterion) {
    c.bench_function("tim/usersig_generate", |b| {
        b.iter(|| {
            gen_usersig(black_box(1_400_000_000), black_box("administrator"), KEY, 1_700_000_000, DEFAULT_EXPIRE_SECS)
        })
    });

    let join = fixture("after_new_member_join.json");
    let mut g = c.benchmark_group("tim/callback_parse");
    for name in ["after_new_member_join.json", "after_member_exit.event_time_string.json", "after_group_destroyed.json"]
    {
        let body = fixture(name);
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(name.trim_end_matches(".json"), |b| b.iter(|| parse(black_box(&body), None).unwrap()));
    }
    g.finish();

    let tenant: TimTenant = serde_json::from_value(serde_json::json!({
        "tenant": "bench", "sdk_app_id": 1_400_000_000u64, "identifier": "administrator",
        "secret_key": KEY, "callback_token": "tim-callback-token"
    }))
    .unwrap();
    let codec = TimCodec::new(&tenant, Some(300));
    let signed = codec.encode(&join, NOW_MS);
    let query: String = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(&signed.query).finish();
    c.bench_function("tim/codec_accept_join", |b| {
        b.iter(|| {
            codec
                .accept(&CallbackRequest {
                    method: Method::Post,
                    query: Some(&query),
                    body: black_box(&join),
                    now_ms: NOW_MS,
                })
                .unwrap()
        })
    });
}

criterion_group!(benches, bench_tim);
criterion_main!(benches);
