//! DingTalk's CPU work per event. `http`: verify + decrypt + parse + map of one HTTP push through
//! the tenant's codec (the encrypted `success` answer included, as the route builds it).
//! `stream`: parse + map of one Stream EVENT frame (no crypto in Stream mode: TLS does it).
//! Run: `cargo bench --bench dingtalk`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use groupwatch::provider::dingtalk::codec::{sign, DingtalkCodec};
use groupwatch::provider::dingtalk::config::DingtalkTenant;
use groupwatch::provider::dingtalk::events::{decode, object, Envelope};
use groupwatch::provider::{CallbackCodec, CallbackRequest, Method};
use serde_json::{json, Value};
use std::hint::black_box;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const APP: &str = "ding6ccabc44d2c8d38b";

/// chat_add_member as the current HTTP push sends it (protocols-2 A3.3), naming `users`.
fn add_member(users: usize) -> Value {
    let user_ids: Vec<String> = (0..users).map(|i| format!("user{i:06}")).collect();
    let union_ids: Vec<String> = (0..users).map(|i| format!("3rBUxxxQ{i:06}iEiE")).collect();
    json!({"EventType": "chat_add_member", "EventTime": 1663143335567i64, "CorpId": "ding9f50b15bxxxx16741",
        "BizId": "1663135567", "eventId": "c7c7120f2c07419aebdba0318c8", "timeStamp": 1608027106990i64,
        "unionId": union_ids, "chatId": "chat28367b03e4b4ca4b5074e1dbfb5d6088", "corpId": "dinge8a56572f80bxxxx",
        "operatorUnionId": "iis6fGqqqt87xxxxiEiE", "eventType": "chat_add_member", "userId": user_ids,
        "openConversationId": "cidOuTaLz7/D7zkkM/5PlrQQA==", "operator": "10203029011219896"})
}

fn tenant() -> DingtalkTenant {
    let toml = format!(
        "tenant = \"acme-dt\"\napp_key = \"{APP}\"\napp_secret = \"s\"\nmode = \"http\"\ntoken = \"mryue\"\n\
         aes_key = \"Yue0EfdN5900c1ce5cf6A152c63DDe1808a60c5ecd7\"\nallow_documented_test_key = true\n"
    );
    toml::from_str(&toml).unwrap()
}

fn bench_dingtalk(c: &mut Criterion) {
    let tenant = tenant();
    let crypt = tenant.crypt().unwrap();
    let codec = DingtalkCodec::new(&tenant, None).unwrap();
    let mut group = c.benchmark_group("dingtalk");
    group.throughput(Throughput::Elements(1));
    for (name, users) in [("typical", 1), ("large_120_members", 120)] {
        let plaintext = add_member(users).to_string();
        let signed = sign(&crypt, plaintext.as_bytes(), 1_700_000_000_000);
        let query: String = signed.query.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
        eprintln!("{name}: {} byte body", signed.body.len());
        group.bench_function(format!("http/verify_decrypt_parse/{name}"), |b| {
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
        let data = plaintext.clone();
        group.bench_function(format!("stream/parse/{name}"), |b| {
            b.iter(|| {
                let envelope = Envelope {
                    event_type: Some("chat_add_member"),
                    event_id: Some("c7c7120f2c07419aebdba0318c8"),
                    born_ms: None,
                };
                let map = object(black_box(&data)).unwrap();
                black_box(decode("acme-dt", envelope, &map, 0).unwrap())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_dingtalk);
criterion_main!(benches);
