//! verify + decrypt + parse of one callback through the provider's codec, and the replay cache's
//! check and commit of it: the CPU work on the HTTP path. Run: `cargo bench --bench ingress`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use groupwatch::provider::wecom::codec::{sign, WecomCodec};
use groupwatch::provider::wecom::config::WecomTenant;
use groupwatch::provider::{CallbackCodec, CallbackRequest, Method};
use std::hint::black_box;

// The allocator `serve` runs with (see src/main.rs), so the figure is the server's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CORP: &str = "ww1234567890abcdef";

/// A typical add_member callback (one member), compact as WeCom sends it: ~900-byte body.
fn typical() -> String {
    format!(
        "<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>\
         <CreateTime>1700000000</CreateTime><MsgType><![CDATA[event]]></MsgType>\
         <Event><![CDATA[change_external_chat]]></Event><ChatId><![CDATA[wrOgQhDgAAMYQiS5ol9G7gK9JVAAAA]]></ChatId>\
         <ChangeType><![CDATA[update]]></ChangeType><UpdateDetail><![CDATA[add_member]]></UpdateDetail>\
         <JoinScene>3</JoinScene><MemChangeCnt>1</MemChangeCnt>\
         <MemChangeList><Item><![CDATA[wmOgQhDgAAuXFJGwbve4g4iXknfOAAAA]]></Item></MemChangeList>\
         <LastMemVer><![CDATA[9c3f97c2ada667dfb5f6d03308d963e1]]></LastMemVer>\
         <CurMemVer><![CDATA[71217227bbd112ecfe3a49c482195cb4]]></CurMemVer></xml>"
    )
}

/// A callback naming 120 members (a mass join).
fn large() -> String {
    let items: String = (0..120).map(|i| format!("<Item><![CDATA[wmOgQhDgAAuXFJGwbve4g4iX{i:08}]]></Item>")).collect();
    typical()
        .replace("<MemChangeCnt>1</MemChangeCnt>", "<MemChangeCnt>120</MemChangeCnt>")
        .replace("<Item><![CDATA[wmOgQhDgAAuXFJGwbve4g4iXknfOAAAA]]></Item>", &items)
}

fn wecom_tenant() -> WecomTenant {
    let toml = format!(
        "tenant = \"acme\"\ncorp_id = \"{CORP}\"\ntoken = \"QDG6eK\"\n\
         encoding_aes_key = \"jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C\"\nsecret = \"s\"\nallow_documented_test_key = true\n"
    );
    toml::from_str(&toml).unwrap()
}

fn bench_ingress(c: &mut Criterion) {
    let tenant = wecom_tenant();
    let crypt = tenant.crypt().unwrap();
    let codec = WecomCodec::new(&tenant, None).unwrap();
    let mut group = c.benchmark_group("ingress");
    group.throughput(Throughput::Elements(1));
    for (name, xml) in [("typical", typical()), ("large_120_members", large())] {
        let signed = sign(&crypt, xml.as_bytes(), 1_700_000_000);
        let query: String = signed.query.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
        eprintln!("{name}: {} byte body", signed.body.len());
        group.bench_function(format!("wecom/verify_decrypt_parse/{name}"), |b| {
            b.iter(|| {
                let request = CallbackRequest {
                    method: Method::Post,
                    query: Some(black_box(&query)),
                    body: black_box(&signed.body),
                    now_ms: 1_700_000_000_000,
                };
                black_box(codec.accept(&request).unwrap())
            })
        });
    }
    group.finish();
}

/// Distinct digests, as signatures are.
fn digest(n: u64) -> [u8; 20] {
    let mut out = [0u8; 20];
    let mut x = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for chunk in out.chunks_mut(8) {
        x ^= x >> 31;
        x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    out
}

/// One accepted callback's cost in the replay cache at its default size, full (so each new entry
/// evicts the oldest): the check that reserves it and, 32 callbacks later (the hand-off's wait),
/// the commit.
fn bench_replay_cache(c: &mut Criterion) {
    use groupwatch::ingress::replay::{ReplayCache, Seen};
    use std::collections::VecDeque;
    const ENTRIES: usize = 100_000;
    let cache = ReplayCache::new(std::time::Duration::from_secs(300), ENTRIES);
    let mut n = 0u64;
    let mut fresh = |cache: &std::sync::Arc<ReplayCache>| {
        n += 1;
        match cache.check(1, digest(n)) {
            Seen::New(reservation) => reservation,
            _ => panic!("every digest is new"),
        }
    };
    for _ in 0..ENTRIES {
        fresh(&cache).commit();
    }
    let mut waiting: VecDeque<_> = (0..32).map(|_| fresh(&cache)).collect();
    let mut group = c.benchmark_group("ingress");
    group.throughput(Throughput::Elements(1));
    group.bench_function("replay_cache/check_and_commit/100000_full", |b| {
        b.iter(|| {
            waiting.push_back(fresh(&cache));
            waiting.pop_front().expect("32 waiting").commit();
        })
    });
    group.finish();
}

criterion_group!(benches, bench_ingress, bench_replay_cache);
criterion_main!(benches);
