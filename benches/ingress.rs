//! verify + decrypt + parse of one callback, the CPU work on the HTTP path.
//! Run: `cargo bench --bench ingress`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use groupwatch::crypto::WxCrypt;
use groupwatch::event::{parse_callback, parse_envelope};
use groupwatch::replay::sign_event;
use std::hint::black_box;

const TYPICAL: &str = include_str!("../fixtures/wecom/update_add_member.xml");

fn bench_ingress(c: &mut Criterion) {
    let crypt = WxCrypt::new("QDG6eK", "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C", "ww1234567890abcdef").unwrap();
    let signed = sign_event(&crypt, TYPICAL.as_bytes(), 1_700_000_000);
    let (sig, ts, nonce) = (&signed.query[0].1, &signed.query[1].1, &signed.query[2].1);
    let mut group = c.benchmark_group("ingress");
    group.throughput(Throughput::Elements(1));
    eprintln!("typical body: {} bytes", signed.body.len());
    group.bench_function("verify_decrypt_parse/typical", |b| {
        b.iter(|| {
            let encrypted = parse_envelope(black_box(&signed.body)).unwrap();
            let plain = crypt.verify_and_decrypt(sig, ts, nonce, &encrypted).unwrap();
            black_box(parse_callback(&plain).unwrap())
        })
    });
    group.finish();
}

criterion_group!(benches, bench_ingress);
criterion_main!(benches);
