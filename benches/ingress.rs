//! verify + decrypt + parse of one callback: the CPU work on the HTTP path.
//! Run: `cargo bench --bench ingress`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use groupwatch::provider::wecom::xml::{parse_callback, parse_envelope};
use groupwatch::provider::wxbiz::WxCrypt;
use groupwatch::tools::replay::{sign_event, SignedCallback};
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

fn bench_ingress(c: &mut Criterion) {
    let crypt = WxCrypt::new("QDG6eK", "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C", CORP).unwrap();
    let mut group = c.benchmark_group("ingress");
    group.throughput(Throughput::Elements(1));
    for (name, xml) in [("typical", typical()), ("large_120_members", large())] {
        let signed: SignedCallback = sign_event(&crypt, xml.as_bytes(), 1_700_000_000);
        let (sig, ts, nonce) = (&signed.query[0].1, &signed.query[1].1, &signed.query[2].1);
        eprintln!("{name}: {} byte body", signed.body.len());
        group.bench_function(format!("verify_decrypt_parse/{name}"), |b| {
            b.iter(|| {
                let encrypted = parse_envelope(black_box(&signed.body)).unwrap();
                let plain = crypt.verify_and_decrypt(sig, ts, nonce, &encrypted).unwrap();
                black_box(parse_callback(&plain).unwrap())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_ingress);
criterion_main!(benches);
