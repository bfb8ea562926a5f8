//! The callback front door, end to end: real HTTP, real RabbitMQ.

use crate::common::*;
use groupwatch::provider::wecom::xml::{parse_callback, Callback};
use groupwatch::provider::wxbiz::WxCrypt;
use groupwatch::tools::replay::Replayer;
use std::path::PathBuf;
use std::time::Duration;

fn fixtures() -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/wecom"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "xml"))
        .collect();
    files.sort();
    assert!(files.len() >= 9, "fixtures are present");
    files
}

#[tokio::test]
async fn every_fixture_replayed_over_http_lands_in_the_inbound_queue() {
    let exchange = unique_exchange();
    let app = spawn_app(&test_config(&exchange, "")).await;
    let conn = amqp().await;
    let replayer = Replayer::wecom(app.config.tenant(TENANT).unwrap(), &app.callback_url(TENANT)).unwrap();

    let mut expected = Vec::new();
    for file in fixtures() {
        let status = replayer.post_file(&file).await.unwrap();
        assert_eq!(status, 200, "{}", file.display());
        let xml = std::fs::read_to_string(&file).unwrap();
        if let Callback::ChangeExternalChat(ev) = parse_callback(&xml).unwrap() {
            expected.push((ev.chat_id.clone(), vec![groupwatch::provider::wecom::report_of(&ev)]));
        }
    }
    assert_eq!(expected.len(), fixtures().len() - 1, "all but the unknown event type are queued");

    let found = drain_inbound(&conn, &app.topology).await;
    // Neutral reports cross the queue, never the WeCom shape.
    let mut got: Vec<_> = found.iter().map(|(_, ev)| (ev.chat_id.clone(), ev.reports.clone())).collect();
    let order = |(chat, reports): &(String, Vec<groupwatch::core::report::ChangeReport>)| {
        (reports[0].occurred_at, chat.clone())
    };
    got.sort_by_key(order);
    expected.sort_by_key(order);
    assert_eq!(got, expected);
    for (queue, ev) in &found {
        assert_eq!(ev.tenant, TENANT);
        assert_eq!(queue, &app.topology.inbound_queue(app.topology.shard_for(&ev.chat_id)));
    }
    cleanup(&conn, &app.topology).await;
    app.stop().await;
}

#[tokio::test]
async fn url_verification_answers_the_exact_plaintext_of_the_official_vector() {
    // The vector was signed in 2014: switch the replay window off to check the crypto alone.
    let config = test_config(&unique_exchange(), "")
        .replace("[http]\n", "[http]\ntimestamp_window_secs = 0\nallow_replay = true\n");
    let app = spawn_app(&config).await;
    let url = format!(
        "{}?msg_signature=5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3&timestamp=1409659589&nonce=263014780&echostr={}",
        app.callback_url("vector_a"),
        "P9nAzCzyDtyTWESHep1vC5X9xho%2FqYX3Zpb4yKa9SKld1DsH3Iyt3tP3zNdtp%2B4RPcs8TgAE7OaBO%2BFZXvnaqQ%3D%3D"
    );
    let resp = reqwest::get(&url).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), b"1616140317555161061");

    // The same request with one signature character changed is refused.
    let bad = url.replace("msg_signature=5c45", "msg_signature=6c45");
    assert_eq!(reqwest::get(&bad).await.unwrap().status(), 401);
    let conn = amqp().await;
    cleanup(&conn, &app.topology).await;
    app.stop().await;
}

#[tokio::test]
async fn bad_input_gets_its_status_and_queues_nothing() {
    let exchange = unique_exchange();
    let app = spawn_app(&test_config(&exchange, "")).await;
    let conn = amqp().await;
    let http = reqwest::Client::new();
    let event = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/wecom/update_add_member.xml")).unwrap();
    let crypt = WxCrypt::new(TOKEN, AES_KEY, CORP_ID).unwrap();
    let now = groupwatch::core::clock::now_ms() / 1000;

    let post = |tenant: &str, query: Vec<(&'static str, String)>, body: String| {
        let mut url = url::Url::parse(&app.callback_url(tenant)).unwrap();
        url.query_pairs_mut().extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        http.post(url).body(body).send()
    };
    let good = sign_event(&crypt, &event, now);

    // Unknown tenant.
    let r = post("nobody", good.query.clone(), good.body.clone()).await.unwrap();
    assert_eq!(r.status(), 404);

    // Bad signature, and no signature at all.
    let mut q = good.query.clone();
    q[0].1 = "0".repeat(40);
    assert_eq!(post(TENANT, q, good.body.clone()).await.unwrap().status(), 401);
    assert_eq!(post(TENANT, vec![], good.body.clone()).await.unwrap().status(), 401);

    // Signed with the right token and key, but for another corp (receive id).
    let other_corp = WxCrypt::new(TOKEN, AES_KEY, "wwSOMEOTHERCORP").unwrap();
    let wrong = sign_event(&other_corp, &event, now);
    assert_eq!(post(TENANT, wrong.query, wrong.body).await.unwrap().status(), 400);

    // Garbage instead of XML.
    assert_eq!(post(TENANT, good.query.clone(), "}{ not xml".into()).await.unwrap().status(), 400);

    // Well-formed envelope and a valid signature over a ciphertext that is not one.
    let garbage = "bm90IGEgY2lwaGVydGV4dA==";
    let sig = crypt.signature(&good.query[1].1, &good.query[2].1, garbage);
    let q = vec![("msg_signature", sig), good.query[1].clone(), good.query[2].clone()];
    let body = format!("<xml><Encrypt><![CDATA[{garbage}]]></Encrypt></xml>");
    assert_eq!(post(TENANT, q, body).await.unwrap().status(), 400);

    // A signed, decryptable message that is not a valid event.
    let not_event = sign_event(&crypt, b"<xml><Event>change_external_chat</Event></xml>", now);
    assert_eq!(post(TENANT, not_event.query, not_event.body).await.unwrap().status(), 400);

    // A correctly signed callback, captured and replayed ten minutes later.
    let old = sign_event(&crypt, &event, now - 600);
    assert_eq!(post(TENANT, old.query, old.body).await.unwrap().status(), 401);
    let future = sign_event(&crypt, &event, now + 600);
    assert_eq!(post(TENANT, future.query, future.body).await.unwrap().status(), 401);

    // Oversized body.
    let huge = format!("<xml><Encrypt>{}</Encrypt></xml>", "A".repeat(app.config.http.max_body_bytes + 1));
    assert_eq!(post(TENANT, good.query.clone(), huge).await.unwrap().status(), 413);

    assert_eq!(inbound_len(&conn, &app.topology).await, 0, "nothing was queued");

    // The good request still works afterwards, and is the only thing queued.
    assert_eq!(post(TENANT, good.query, good.body).await.unwrap().status(), 200);
    assert_eq!(inbound_len(&conn, &app.topology).await, 1);
    cleanup(&conn, &app.topology).await;
    app.stop().await;
}

#[tokio::test]
async fn broker_unreachable_answers_503_so_wecom_retries() {
    // Port 9 (discard) has no AMQP server: the hand-off cannot be confirmed.
    let config = test_config(&unique_exchange(), "").replace(&amqp_url(), "amqp://guest:guest@127.0.0.1:9/%2f");
    let app = spawn_app_with(&config, false).await;
    let crypt = WxCrypt::new(TOKEN, AES_KEY, CORP_ID).unwrap();
    let event = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/wecom/create.xml")).unwrap();
    let signed = sign_event(&crypt, &event, groupwatch::core::clock::now_ms() / 1000);
    let mut url = url::Url::parse(&app.callback_url(TENANT)).unwrap();
    url.query_pairs_mut().extend_pairs(signed.query.iter().map(|(k, v)| (*k, v.as_str())));
    let r = reqwest::Client::new().post(url).body(signed.body).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(reqwest::get(app.ops_url("/readyz")).await.unwrap().status(), 503);
    assert_eq!(reqwest::get(app.ops_url("/healthz")).await.unwrap().status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn replay_command_prints_a_status_line_per_fixture() {
    let exchange = unique_exchange();
    let app = spawn_app(&test_config(&exchange, "")).await;
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("groupwatch.toml");
    std::fs::write(&config_path, test_config(&exchange, "")).unwrap();
    let fixtures = [
        concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/wecom/create.xml"),
        concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/wecom/unknown_event.xml"),
    ];
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_groupwatch"))
        .args(["replay", "--config"])
        .arg(&config_path)
        .args(["--tenant", TENANT, "--url", &app.callback_url(TENANT)])
        .args(fixtures)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<_> = stdout.lines().collect();
    assert_eq!(lines, [format!("{} 200", fixtures[0]), format!("{} 200", fixtures[1])]);

    // An unknown tenant is bad usage: exit 2 with one line naming the flag.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_groupwatch"))
        .args(["replay", "--config"])
        .arg(&config_path)
        .args(["--tenant", "nobody", "--url", &app.callback_url(TENANT), fixtures[0]])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tenant"));

    let conn = amqp().await;
    assert_eq!(inbound_len(&conn, &app.topology).await, 1);
    cleanup(&conn, &app.topology).await;
    app.stop().await;
}

#[tokio::test]
async fn serve_with_bad_config_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, test_config("gw", "").replace(AES_KEY, "tooshort")).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_groupwatch"))
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("wecom[0].encoding_aes_key"), "{stderr}");
}

/// 10,000 hostile requests of every kind: each gets a 4xx, the process stays up, nothing is queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_malformed_requests_are_all_rejected_and_nothing_is_queued() {
    use futures_util::StreamExt;
    use rand::{Rng, SeedableRng};

    let app = spawn_app(&test_config(&unique_exchange(), "")).await;
    let conn = amqp().await;
    let http = reqwest::Client::new();
    let crypt = WxCrypt::new(TOKEN, AES_KEY, CORP_ID).unwrap();
    let event = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/wecom/update_add_member.xml")).unwrap();
    let now = groupwatch::core::clock::now_ms() / 1000;
    let good = sign_event(&crypt, &event, now);
    let encrypted = {
        let start = good.body.find("<Encrypt><![CDATA[").unwrap() + 18;
        let end = good.body.find("]]></Encrypt>").unwrap();
        good.body[start..end].to_owned()
    };
    let limit = app.config.http.max_body_bytes;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    /// (tenant, signed query, body, what kind of bad input)
    type Hostile = (String, Vec<(&'static str, String)>, Vec<u8>, &'static str);
    let requests: Vec<Hostile> = (0..10_000)
        .map(|i| {
            let (ts, nonce) = (good.query[1].1.clone(), good.query[2].1.clone());
            match i % 7 {
                // Random bytes as the body, with a signature over nothing in particular.
                0 => {
                    let len = rng.gen_range(0..2048);
                    let body: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
                    (TENANT.into(), good.query.clone(), body, "random bytes")
                }
                // A good body with a wrong signature.
                1 => {
                    let mut q = good.query.clone();
                    q[0].1 = format!("{:040x}", rng.gen::<u128>());
                    (TENANT.into(), q, good.body.clone().into_bytes(), "bad signature")
                }
                // A truncated ciphertext, correctly signed.
                2 => {
                    let cut = rng.gen_range(1..encrypted.len() - 1);
                    let truncated = &encrypted[..cut];
                    let sig = crypt.signature(&ts, &nonce, truncated);
                    let body = format!("<xml><Encrypt><![CDATA[{truncated}]]></Encrypt></xml>");
                    (
                        TENANT.into(),
                        vec![("msg_signature", sig), ("timestamp", ts), ("nonce", nonce)],
                        body.into_bytes(),
                        "truncated",
                    )
                }
                // A body over the limit (one in 7 × 10: keep the traffic small).
                3 if i % 70 == 3 => {
                    (TENANT.into(), good.query.clone(), vec![b'A'; limit + 1 + rng.gen_range(0..1000)], "huge")
                }
                // An old timestamp, correctly signed.
                3 | 4 => {
                    let old = sign_event(&crypt, &event, now - rng.gen_range(301..100_000));
                    (TENANT.into(), old.query, old.body.into_bytes(), "old timestamp")
                }
                // An unknown tenant.
                5 => (
                    format!("t{}", rng.gen::<u32>()),
                    good.query.clone(),
                    good.body.clone().into_bytes(),
                    "unknown tenant",
                ),
                // A good envelope with the signature over different ciphertext.
                _ => {
                    let mut flipped = encrypted.clone().into_bytes();
                    let at = rng.gen_range(0..flipped.len() - 2);
                    flipped[at] = if flipped[at] == b'A' { b'B' } else { b'A' };
                    let flipped = String::from_utf8(flipped).unwrap();
                    let body = format!("<xml><Encrypt><![CDATA[{flipped}]]></Encrypt></xml>");
                    (TENANT.into(), good.query.clone(), body.into_bytes(), "tampered ciphertext")
                }
            }
        })
        .collect();

    let results: Vec<(u16, &str)> = futures_util::stream::iter(requests)
        .map(|(tenant, query, body, kind)| {
            let http = http.clone();
            let mut url = url::Url::parse(&app.callback_url(&tenant)).unwrap();
            url.query_pairs_mut().extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
            async move { (http.post(url).body(body).send().await.unwrap().status().as_u16(), kind) }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert_eq!(results.len(), 10_000);
    let mut by_kind: std::collections::BTreeMap<&str, std::collections::BTreeSet<u16>> = Default::default();
    for (status, kind) in &results {
        by_kind.entry(kind).or_default().insert(*status);
    }
    println!("statuses by kind: {by_kind:?}");
    assert!(results.iter().all(|(s, _)| (400..500).contains(s)), "{by_kind:?}");
    assert_eq!(by_kind["huge"], [413].into());
    assert_eq!(by_kind["unknown tenant"], [404].into());
    assert_eq!(by_kind["bad signature"], [401].into());
    assert_eq!(by_kind["old timestamp"], [401].into());

    assert_eq!(unsigned_get(&app).await, 401, "the callback listener is still alive");
    assert_eq!(inbound_len(&conn, &app.topology).await, 0, "nothing queued");
    // The good request still gets through afterwards.
    let mut url = url::Url::parse(&app.callback_url(TENANT)).unwrap();
    url.query_pairs_mut().extend_pairs(good.query.iter().map(|(k, v)| (*k, v.as_str())));
    assert_eq!(http.post(url).body(good.body.clone()).send().await.unwrap().status(), 200);
    assert_eq!(inbound_len(&conn, &app.topology).await, 1);
    cleanup(&conn, &app.topology).await;
    app.stop().await;
}

/// Concurrent callbacks share inbound messages (group commit), and every one of them is queued
/// in its chat's shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callbacks_are_group_committed_and_none_is_lost() {
    use futures_util::StreamExt;
    let config = test_config(&unique_exchange(), "");
    let app = spawn_app(&config).await;
    let conn = amqp().await;
    let crypt = WxCrypt::new(TOKEN, AES_KEY, CORP_ID).unwrap();
    let http = reqwest::Client::new();
    let now = groupwatch::core::clock::now_ms() / 1000;
    let statuses: Vec<u16> = futures_util::stream::iter(0..300)
        .map(|i| {
            let xml = format!(
                "<xml><ToUserName>{CORP_ID}</ToUserName><CreateTime>{}</CreateTime><MsgType>event</MsgType>\
                 <Event>change_external_chat</Event><ChatId>wrBATCH{}</ChatId><ChangeType>update</ChangeType>\
                 <UpdateDetail>add_member</UpdateDetail><MemChangeList><Item>wm{i}</Item></MemChangeList></xml>",
                1700000000 + i,
                i % 7
            );
            let signed = sign_event(&crypt, xml.as_bytes(), now);
            let mut url = url::Url::parse(&app.callback_url(TENANT)).unwrap();
            url.query_pairs_mut().extend_pairs(signed.query.iter().map(|(k, v)| (*k, v.as_str())));
            let http = http.clone();
            async move { http.post(url).body(signed.body).send().await.unwrap().status().as_u16() }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == 200));
    let messages = inbound_len(&conn, &app.topology).await;
    let events = drain_inbound(&conn, &app.topology).await;
    assert_eq!(events.len(), 300, "every accepted callback is queued");
    let keys: std::collections::HashSet<_> = events.iter().map(|(_, e)| e.key.clone()).collect();
    assert_eq!(keys.len(), 300, "and queued once");
    // One flush carries several shards; each event must still sit in its own chat's shard.
    for (queue, event) in &events {
        assert_eq!(queue, &app.topology.inbound_queue(app.topology.shard_for(&event.chat_id)));
    }
    let shards: std::collections::HashSet<_> = events.iter().map(|(q, _)| q.clone()).collect();
    assert!(shards.len() > 1, "seven chats spread over more than one shard");
    println!("300 callbacks in {messages} inbound messages");
    assert!((messages as usize) < 300, "callbacks shared messages: {messages}");
    cleanup(&conn, &app.topology).await;
    app.stop().await;
}

#[tokio::test]
async fn a_request_head_that_never_ends_is_cut_off_without_blocking_others() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let config = test_config(&unique_exchange(), "")
        .replace("listen = \"127.0.0.1:0\"\n", "listen = \"127.0.0.1:0\"\nrequest_timeout_ms = 500\n");
    let app = spawn_app(&config).await;
    // Slowloris: a head that is started and never finished.
    let mut slow = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    slow.write_all(b"POST /wecom/acme/callback HTTP/1.1\r\nHost: groupwatch\r\n").await.unwrap();
    let started = std::time::Instant::now();
    assert_eq!(unsigned_get(&app).await, 401, "others are served meanwhile");
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut answer)).await;
    assert!(closed.is_ok(), "connection still open 5 s after a 500 ms deadline for the request head");
    assert!(started.elapsed() >= Duration::from_millis(400), "cut off before the deadline: {:?}", started.elapsed());
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "answer to an unfinished head: {answer:?}");
    app.stop().await;
}

/// POSTs `body` to the tenant's callback URL with the given signed query.
async fn post_signed(app: &TestApp, tenant: &str, query: &[(&'static str, String)], body: String) -> reqwest::Response {
    let mut url = url::Url::parse(&app.callback_url(tenant)).unwrap();
    url.query_pairs_mut().extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
    reqwest::Client::new().post(url).body(body).send().await.unwrap()
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/wecom")).join(name)).unwrap()
}

fn now_secs() -> i64 {
    groupwatch::core::clock::now_ms() / 1000
}

/// WeCom signs in lower-case hex: the right digest in upper case is not its signature.
#[tokio::test]
async fn an_upper_case_signature_is_refused() {
    let app = spawn_app(&test_config(&unique_exchange(), "")).await;
    let conn = amqp().await;
    let crypt = WxCrypt::new(TOKEN, AES_KEY, CORP_ID).unwrap();
    let mut signed = sign_event(&crypt, &fixture("update_add_member.xml"), now_secs());
    while !signed.query[0].1.bytes().any(|b| b.is_ascii_alphabetic()) {
        signed = sign_event(&crypt, &fixture("update_add_member.xml"), now_secs());
    }
    let mut upper = signed.query.clone();
    upper[0].1 = upper[0].1.to_ascii_uppercase();
    assert_eq!(post_signed(&app, TENANT, &upper, signed.body.clone()).await.status(), 401);
    assert_eq!(inbound_len(&conn, &app.topology).await, 0, "nothing was queued");
    assert_eq!(post_signed(&app, TENANT, &signed.query, signed.body).await.status(), 200);
    cleanup(&conn, &app.topology).await;
    app.stop().await;
}

fn encrypt_of(body: &str) -> String {
    let start = body.find("<Encrypt><![CDATA[").unwrap() + 18;
    let end = body.find("]]></Encrypt>").unwrap();
    body[start..end].to_owned()
}

/// GET verification is not a decryption service: a captured POST's signed `Encrypt`, sent as
/// `echostr`, is refused with a fixed answer that quotes nothing of the plaintext.
#[tokio::test]
async fn get_verification_does_not_decrypt_a_captured_event() {
    let app = spawn_app(&test_config(&unique_exchange(), "")).await;
    let crypt = WxCrypt::new(TOKEN, AES_KEY, CORP_ID).unwrap();
    let event = fixture("update_add_member.xml");
    let captured = sign_event(&crypt, &event, now_secs());
    let mut url = url::Url::parse(&app.callback_url(TENANT)).unwrap();
    url.query_pairs_mut()
        .extend_pairs(captured.query.iter().map(|(k, v)| (*k, v.as_str())))
        .append_pair("echostr", &encrypt_of(&captured.body));
    let resp = reqwest::get(url).await.unwrap();
    assert_eq!(resp.status(), 400);
    let body = resp.text().await.unwrap();
    for secret in ["wrOgQhDgAAMYQiS5ol9G7gK9JVAAAA", "change_external_chat", "<xml>", "Jack"] {
        assert!(!body.contains(secret), "the answer quotes the plaintext: {body:?}");
    }
    assert_eq!(body, "not a verification request");

    // A real verification request (a short decimal echostr) still answers it exactly.
    let echostr = crypt.encrypt(b"8231930270341672941");
    let (ts, nonce) = (now_secs().to_string(), "424242".to_owned());
    let mut url = url::Url::parse(&app.callback_url(TENANT)).unwrap();
    url.query_pairs_mut()
        .append_pair("msg_signature", &crypt.signature(&ts, &nonce, &echostr))
        .append_pair("timestamp", &ts)
        .append_pair("nonce", &nonce)
        .append_pair("echostr", &echostr);
    let resp = reqwest::get(url).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "8231930270341672941");
    cleanup(&amqp().await, &app.topology).await;
    app.stop().await;
}

/// Error answers are fixed strings: neither the request body (quick-xml quotes it in its errors)
/// nor a decrypted field comes back.
#[tokio::test]
async fn error_answers_quote_neither_the_body_nor_decrypted_fields() {
    let app = spawn_app(&test_config(&unique_exchange(), "")).await;
    let conn = amqp().await;
    let crypt = WxCrypt::new(TOKEN, AES_KEY, CORP_ID).unwrap();
    let good = sign_event(&crypt, &fixture("update_add_member.xml"), now_secs());

    let body = "<xml><Encrypt>&ATTACKER-CHOSEN-ENTITY;</Encrypt></xml>".to_owned();
    let resp = post_signed(&app, TENANT, &good.query, body).await;
    assert_eq!(resp.status(), 400);
    let text = resp.text().await.unwrap();
    assert!(!text.contains("ATTACKER-CHOSEN"), "the envelope error quotes the body: {text:?}");

    let event = String::from_utf8(fixture("update_add_member.xml"))
        .unwrap()
        .replace("<![CDATA[update]]>", "<![CDATA[DECRYPTED-SECRET-VALUE]]>");
    assert!(event.contains("DECRYPTED-SECRET-VALUE"));
    let signed = sign_event(&crypt, event.as_bytes(), now_secs());
    let resp = post_signed(&app, TENANT, &signed.query, signed.body).await;
    assert_eq!(resp.status(), 400);
    let text = resp.text().await.unwrap();
    assert!(!text.contains("DECRYPTED-SECRET-VALUE"), "the event error quotes a decrypted field: {text:?}");
    assert_eq!(inbound_len(&conn, &app.topology).await, 0);
    cleanup(&conn, &app.topology).await;
    app.stop().await;
}

/// A captured POST sent again within the timestamp window is answered `success` but not handed
/// off a second time, and counted as `replayed`.
#[tokio::test]
async fn a_replayed_callback_is_answered_but_not_handed_off_again() {
    let app = spawn_app(&test_config(&unique_exchange(), "")).await;
    let conn = amqp().await;
    let crypt = WxCrypt::new(TOKEN, AES_KEY, CORP_ID).unwrap();
    let signed = sign_event(&crypt, &fixture("update_add_member.xml"), now_secs());
    let metric = |text: &str| {
        text.lines()
            .find(|l| {
                l.starts_with("groupwatch_callbacks_total{")
                    && l.contains("outcome=\"replayed\"")
                    && l.contains("tenant=\"acme\"")
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let before = metric(&reqwest::get(app.ops_url("/metrics")).await.unwrap().text().await.unwrap());
    for _ in 0..3 {
        let resp = post_signed(&app, TENANT, &signed.query, signed.body.clone()).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.unwrap(), "success");
    }
    let events = drain_inbound(&conn, &app.topology).await;
    assert_eq!(events.len(), 1, "one hand-off for three identical requests: {events:?}");
    let after = metric(&reqwest::get(app.ops_url("/metrics")).await.unwrap().text().await.unwrap());
    assert!(after >= before + 2, "two replays counted: {before} -> {after}");

    // The same event signed anew (another nonce) is another callback, as a WeCom resend is.
    let again = sign_event(&crypt, &fixture("update_add_member.xml"), now_secs());
    assert_eq!(post_signed(&app, TENANT, &again.query, again.body).await.status(), 200);
    assert_eq!(drain_inbound(&conn, &app.topology).await.len(), 1);
    cleanup(&conn, &app.topology).await;
    app.stop().await;
}

/// A connection with the smallest receive buffer the kernel allows, so that answers pile up fast.
async fn tiny_reader(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(1).unwrap();
    socket.set_send_buffer_size(1).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Pipelines small requests on `stream` and never reads an answer. Returns once a write is
/// refused (the server closed the connection), or `None` if writes are still possible, or
/// blocked, after `limit`. `blocked` is notified when a write first stalls for 300 ms, that is
/// when the server has stopped reading because it cannot write its answers.
async fn pipeline_never_reading(
    mut stream: tokio::net::TcpStream,
    limit: Duration,
    blocked: Option<tokio::sync::oneshot::Sender<()>>,
) -> Option<std::io::Error> {
    use tokio::io::AsyncWriteExt;
    let request = b"GET /wecom/acme/callback HTTP/1.1\r\nHost: groupwatch\r\n\r\n".repeat(16);
    let mut blocked = blocked;
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let write = stream.write_all(&request);
        match tokio::time::timeout(Duration::from_millis(300), write).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Some(e),
            Err(_) => {
                if let Some(tx) = blocked.take() {
                    let _ = tx.send(());
                }
                // Keep writing: on a loaded machine a write can stall for 300 ms and then go on,
                // and only an error says the server closed the connection.
                loop {
                    let rest = deadline.saturating_duration_since(tokio::time::Instant::now());
                    match tokio::time::timeout(rest, stream.write_all(&request)).await {
                        Ok(Err(e)) => return Some(e),
                        Ok(Ok(())) if tokio::time::Instant::now() < deadline => continue,
                        _ => return None,
                    }
                }
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
    }
}

/// A client that pipelines requests and never reads its answers is cut off once the answers
/// stop moving for `http.request_timeout_ms`, instead of holding its connection for ever.
#[tokio::test]
async fn a_client_that_never_reads_its_answers_is_cut_off() {
    let config = test_config(&unique_exchange(), "")
        .replace("listen = \"127.0.0.1:0\"\n", "listen = \"127.0.0.1:0\"\nrequest_timeout_ms = 500\n");
    let app = spawn_app(&config).await;
    let stream = tiny_reader(app.addr).await;
    let started = std::time::Instant::now();
    let error = pipeline_never_reading(stream, Duration::from_secs(20), None).await;
    let error = error.expect("the connection is still open 20 s after a 500 ms write deadline");
    println!("cut off after {:?}: {error}", started.elapsed());
    assert!(matches!(error.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe), "{error:?}");
    assert_eq!(unsigned_get(&app).await, 401, "the callback listener is fine");
    cleanup(&amqp().await, &app.topology).await;
    app.stop().await;
}

/// Shutdown does not wait for ever on a pinned connection: after `http.shutdown_grace_ms` the
/// remaining connections are closed, and the application (workers included) still stops cleanly.
#[tokio::test]
async fn shutdown_closes_a_pinned_connection_after_the_grace_period() {
    let config = test_config(&unique_exchange(), "")
        .replace(
            "listen = \"127.0.0.1:0\"\n",
            "listen = \"127.0.0.1:0\"\nrequest_timeout_ms = 60000\nshutdown_grace_ms = 500\n",
        )
        .replace("[worker]\nenabled = false", "[worker]\nenabled = true");
    let app = spawn_app(&config).await;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let pinned = tokio::spawn(pipeline_never_reading(tiny_reader(app.addr).await, Duration::from_secs(30), Some(tx)));
    tokio::time::timeout(Duration::from_secs(20), rx).await.expect("the pipeline stalls").unwrap();
    let started = std::time::Instant::now();
    let conn = amqp().await;
    let topology = app.topology.clone();
    tokio::time::timeout(Duration::from_secs(5), app.stop()).await.expect("stops within 5 s with a pinned connection");
    println!("stopped in {:?}", started.elapsed());
    assert!(pinned.await.unwrap().is_some(), "the pinned connection was closed");
    cleanup(&conn, &topology).await;
}

/// At most `http.max_connections` are served at once; the next client waits for a free slot.
#[tokio::test]
async fn connections_beyond_the_cap_wait_for_a_free_slot() {
    let config = test_config(&unique_exchange(), "").replace(
        "listen = \"127.0.0.1:0\"\n",
        "listen = \"127.0.0.1:0\"\nrequest_timeout_ms = 1500\nmax_connections = 2\n",
    );
    let app = spawn_app(&config).await;
    // Two idle connections take both slots until the idle deadline closes them.
    let _a = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let _b = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    let status = unsigned_get(&app).await;
    let waited = started.elapsed();
    assert_eq!(status, 401);
    assert!(waited >= Duration::from_millis(1000), "served at once despite the cap: {waited:?}");
    cleanup(&amqp().await, &app.topology).await;
    app.stop().await;
}

/// The configuration mistakes that used to start a service quietly: each stops `serve` with
/// exit code 2 and one line naming the key.
#[tokio::test]
async fn serve_refuses_unsafe_or_unbounded_configuration() {
    let base = test_config("gw", "");
    let cases = [
        (
            base.replace("[worker]\nenabled = false", "[worker]\nenabled = false\ncoalesce_ms = 9223372036854775807"),
            "worker.coalesce_ms",
        ),
        (
            base.replace(
                "[worker]\nenabled = false",
                "[worker]\nenabled = false\nretry_delays_ms = [1000, 100000000000]",
            ),
            "worker.retry_delays_ms[1]",
        ),
        (base.replace("[http]\n", "[http]\nrequest_timeout_ms = 86400000\n"), "http.request_timeout_ms"),
        (base.replace("[http]\n", "[http]\ntimestamp_window_secs = 0\n"), "http.timestamp_window_secs"),
        (base.replace("[http]\n", "[http]\ntimestamp_window_secs = 86400\n"), "http.timestamp_window_secs"),
        (
            base.replace("api_base = \"http://127.0.0.1:9\"", "api_base = \"http://qyapi.weixin.qq.com\""),
            "wecom[0].api_base",
        ),
        (
            base.replace("secret = \"test-secret\"\napi_base", "secret = \"test-secret\"\nreceive_id = \"\"\napi_base"),
            "wecom[0].receive_id",
        ),
        (base.replacen("allow_documented_test_key = true\n", "", 1), "wecom[0].encoding_aes_key"),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (i, (text, key)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_groupwatch"))
            .args(["serve", "--config"])
            .arg(&path)
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(2), "{key}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(&format!("config: {key}:")), "{key}: {stderr}");
    }
}

/// A third-party (suite) callback is signed with the suite's keys, which every corp that
/// installed the suite shares: its `AuthCorpId` must be the tenant's corp.
#[tokio::test]
async fn a_suite_callback_for_another_corp_is_refused() {
    let app = spawn_app(&test_config(&unique_exchange(), "")).await;
    let conn = amqp().await;
    let crypt = WxCrypt::new(TOKEN, AES_KEY, CORP_ID).unwrap();
    let own = String::from_utf8(fixture("third_party_update.xml")).unwrap();
    assert!(own.contains(&format!("<AuthCorpId><![CDATA[{CORP_ID}]]></AuthCorpId>")));
    let other = own.replace(CORP_ID, "wwSOMEOTHERCORP0000");
    let signed = sign_event(&crypt, other.as_bytes(), now_secs());
    let resp = post_signed(&app, TENANT, &signed.query, signed.body).await;
    assert_eq!(resp.status(), 400);
    assert!(!resp.text().await.unwrap().contains("wwSOMEOTHERCORP"));
    assert_eq!(inbound_len(&conn, &app.topology).await, 0, "nothing was queued");
    let signed = sign_event(&crypt, own.as_bytes(), now_secs());
    assert_eq!(post_signed(&app, TENANT, &signed.query, signed.body).await.status(), 200);
    assert_eq!(inbound_len(&conn, &app.topology).await, 1);
    cleanup(&conn, &app.topology).await;
    app.stop().await;
}

/// A request the callback listener answers at once without touching anything (401: unsigned),
/// to see that the listener itself is serving.
async fn unsigned_get(app: &TestApp) -> u16 {
    reqwest::get(app.callback_url(TENANT)).await.unwrap().status().as_u16()
}
