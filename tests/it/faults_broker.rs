//! Broker outages: the app's AMQP connection goes through a TCP proxy the test controls and is
//! cut mid-stream. WeCom keeps retrying what was refused; afterwards the published events must be
//! exactly the expected ones (ids computed independently with `diff::diff`), nothing lost,
//! nothing invented.

use crate::common::proxy::Proxy;
use crate::common::*;
use groupwatch::sim::{self, SimClient};
use groupwatch::tools::replay::Replayer;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const JOINS: i64 = 30;
/// The stream is cut after this many joins were accepted.
const CUT_AFTER: usize = 10;
const FIRST_JOIN_TIME: i64 = 1700002000;

fn faults_config(exchange: &str, store: &TestStore, api_base: &str, amqp_url: &str) -> String {
    TestConfig::new(exchange, &store.url())
        .with_worker()
        .wecom_api(api_base)
        .amqp_url(amqp_url)
        .amqp_value("confirm_timeout_ms", 1500)
        .toml()
}

async fn status(url: &str) -> u16 {
    match reqwest::get(url).await {
        Ok(r) => r.status().as_u16(),
        Err(e) => panic!("GET {url}: {e}"),
    }
}

/// Polls `url` until it answers `want` (panics after `timeout`); returns how long it took.
async fn wait_status(url: &str, want: u16, timeout: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let got = status(url).await;
        if got == want {
            return started.elapsed();
        }
        assert!(started.elapsed() < timeout, "{url} still answers {got} (want {want}) after {timeout:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// POSTs a callback as WeCom would: a 503 (or no answer) is retried until 200, for at most 30 s.
/// Counts the 503s in `refused` as they happen.
async fn deliver(replayer: &Replayer, xml: &str, refused: &AtomicUsize) {
    let started = Instant::now();
    loop {
        match replayer.post(xml.as_bytes()).await {
            Ok(s) if s == 200 => return,
            Ok(s) if s == 503 => {
                refused.fetch_add(1, Ordering::SeqCst);
            }
            Ok(s) => panic!("callback answered {s}, expected 200 or 503"),
            Err(e) => panic!("callback got no answer from a running app: {e}"),
        }
        assert!(started.elapsed() < Duration::from_secs(30), "callback still refused after 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_cut_mid_stream_loses_and_invents_nothing() {
    let started = Instant::now();
    let store = TestStore::sqlite().await;
    let sim = sim::spawn(sim_state(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let simc = SimClient::new(sim.base_url());
    let proxy = Proxy::start("127.0.0.1:5672".parse().unwrap()).await;
    let exchange = unique_exchange();
    let app = spawn_app(&faults_config(&exchange, &store, &sim.base_url(), &proxy.amqp_url())).await;
    // The test's own connection goes straight to the broker.
    let conn = amqp().await;
    let tap = Tap::new(&conn, &exchange).await;
    let replayer = Arc::new(Replayer::wecom(app.config.tenant(TENANT).unwrap(), &app.callback_url(TENANT)).unwrap());
    assert_eq!(status(&app.ops_url("/readyz")).await, 200);
    assert_eq!(proxy.forwarded(), 1, "the app's one AMQP connection goes through the proxy");

    let create = callback_xml(CHAT_CREATE_TIME, "create", None, &[], None);
    let none = AtomicUsize::new(0);
    deliver(&replayer, &create, &none).await;
    assert_eq!(none.load(Ordering::SeqCst), 0, "no 503 before the cut");

    // The stream: each member is added to WeCom, then its callback delivered (retried on 503).
    let joins: Vec<(String, i64)> = (0..JOINS).map(|i| (format!("wmCUT{i:02}"), FIRST_JOIN_TIME + i)).collect();
    let accepted = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let stream = {
        let (joins, simc, replayer) = (joins.clone(), simc.clone(), replayer.clone());
        let (accepted, refused) = (accepted.clone(), refused.clone());
        tokio::spawn(async move {
            for (userid, join_time) in joins {
                let v = simc.add_member(CORP_ID, CHAT, external(&userid, join_time)).await.unwrap();
                let xml = callback_xml(join_time + 1, "update", Some("add_member"), &[&userid], Some(&v));
                deliver(&replayer, &xml, &refused).await;
                accepted.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        })
    };

    let deadline = Instant::now() + Duration::from_secs(20);
    while accepted.load(Ordering::SeqCst) < CUT_AFTER {
        assert!(Instant::now() < deadline, "the stream is too slow before the cut");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    proxy.cut();
    let cut_at = Instant::now();
    let noticed = wait_status(&app.ops_url("/readyz"), 503, Duration::from_secs(10)).await;
    // While cut: a callback (WeCom's retry of the create, already accepted once) is refused
    // with 503 so that WeCom retries, and the stream itself gets refused.
    assert_eq!(replayer.post(create.as_bytes()).await.unwrap(), 503, "callbacks answer 503 while the broker is cut");
    let deadline = Instant::now() + Duration::from_secs(10);
    while refused.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the stream never saw a 503 while the broker was cut");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(status(&app.ops_url("/readyz")).await, 503, "still not ready while cut");
    assert_eq!(status(&app.ops_url("/healthz")).await, 200, "alive while the broker is down");
    let accepted_while_cut = accepted.load(Ordering::SeqCst);
    assert!(proxy.refused() > 0, "the supervisor kept trying to reconnect while cut");
    proxy.restore();
    let cut_for = cut_at.elapsed();
    let reconnect = wait_status(&app.ops_url("/readyz"), 200, Duration::from_secs(20)).await;
    assert!(proxy.forwarded() >= 2, "the app reconnected through the proxy");

    tokio::time::timeout(Duration::from_secs(45), stream).await.expect("the stream finishes").unwrap();
    assert_eq!(accepted.load(Ordering::SeqCst), JOINS as usize);

    let expected = expected_changes_create_then_joins(&joins);
    assert_eq!(expected.len(), 3 + JOINS as usize);
    let mut events = Vec::new();
    collect_until(&tap, &mut events, &expected, Duration::from_secs(30), Duration::from_secs(2)).await;
    let duplicates = assert_published_exactly(&events, &expected);
    println!(
        "broker cut: readyz 503 after {noticed:?}, cut for {cut_for:?} ({} reconnect attempts refused), \
         readyz 200 again {reconnect:?} after restore; {} callbacks refused with 503 and retried; \
         {accepted_while_cut} joins accepted before the stream stalled; {} events, {} distinct, {duplicates} duplicates; \
         total {:?}",
        proxy.refused(),
        refused.load(Ordering::SeqCst),
        events.len(),
        expected.len(),
        started.elapsed()
    );

    let topology = app.topology.clone();
    app.stop().await;
    cleanup(&conn, &topology).await;
    drop(sim);
}

/// Instances on one exchange with different `amqp.inbound_shards` would hash one chat to
/// different queues. The count is recorded on the broker (the shard marker exchange), so the
/// second instance's declaration is refused and `serve` exits non-zero with one line saying
/// why, while the first one goes on undisturbed.
#[tokio::test]
async fn a_second_instance_with_another_shard_count_fails_at_start_up() {
    use crate::common::serve::{free_port, Serve};
    let exchange = unique_exchange();
    let first = spawn_app(&test_config(&exchange, "")).await;
    assert_eq!(first.config.amqp.inbound_shards, 16, "the default");
    let conn = amqp().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = test_config(&exchange, "")
        .replace("listen = \"127.0.0.1:0\"", &format!("listen = \"127.0.0.1:{port}\""))
        .replace(&format!("exchange = \"{exchange}\""), &format!("exchange = \"{exchange}\"\ninbound_shards = 2"));
    let mut second = Serve::start(dir.path(), "second", &config, port);
    let (status, took) = second.wait_exit(Duration::from_secs(20)).await;
    let log = second.log();
    assert!(!status.success(), "the second instance runs on:\n{log}");
    assert!(took < Duration::from_secs(15), "{took:?}");
    let last = log.lines().last().unwrap_or_default();
    println!("{last}");
    assert!(last.starts_with("groupwatch: amqp.inbound_shards = 2 differs"), "one clear line last: {last:?}\n{log}");
    assert!(last.contains(&exchange) && last.contains("PRECONDITION_FAILED"), "{last}");
    assert!(last.contains("differs from the 16 shards recorded") && last.contains("groupwatch reshard"), "{last}");

    // The first instance still takes callbacks.
    let crypt = groupwatch::provider::wxbiz::WxCrypt::new(TOKEN, AES_KEY, CORP_ID).unwrap();
    let xml = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/wecom/create.xml")).unwrap();
    let signed = sign_event(&crypt, &xml, groupwatch::core::clock::now_ms() / 1000);
    let mut url = url::Url::parse(&first.callback_url(TENANT)).unwrap();
    url.query_pairs_mut().extend_pairs(signed.query.iter().map(|(k, v)| (*k, v.as_str())));
    assert_eq!(reqwest::Client::new().post(url).body(signed.body).send().await.unwrap().status(), 200);
    cleanup(&conn, &first.topology).await;
    first.stop().await;
}

/// `groupwatch reshard` moves a stopped deployment's queued work from 4 shards to 16: every item
/// lands in its chat's queue under the new count, each chat's items in the order they were
/// accepted; the broker then refuses the old count; and it refuses to run while an instance
/// still consumes (a worker its shards, an ingest-only instance the intake).
#[tokio::test]
async fn reshard_moves_queued_work_to_the_new_count_in_order_and_refuses_a_running_instance() {
    use groupwatch::queue::broker::{BrokerError, Topology};
    let exchange = unique_exchange();
    let store = TestStore::sqlite().await;
    let old = TestConfig::new(&exchange, &store.url()).amqp_value("inbound_shards", 4);
    let front = spawn_app(&old.toml()).await;
    let replayer = Replayer::wecom(front.config.tenant(TENANT).unwrap(), &front.callback_url(TENANT)).unwrap();
    let chats: Vec<String> = (0..12).map(|i| format!("wrOgQhDgAAMYQiS5ol9G7gK9JVRS{i:02}")).collect();
    let mut accepted = 0;
    for round in 0..3i64 {
        for chat in &chats {
            let xml = callback_xml_for(chat, CHAT_CREATE_TIME + round, "update", Some("change_name"), &[], None);
            assert_eq!(replayer.post(xml.as_bytes()).await.unwrap(), 200);
            accepted += 1;
        }
    }
    front.stop().await;
    let conn = amqp().await;

    let dir = tempfile::tempdir().unwrap();
    let new_config = TestConfig::new(&exchange, &store.url()).amqp_value("inbound_shards", 16).toml();
    let path = dir.path().join("gw.toml");
    std::fs::write(&path, &new_config).unwrap();
    let reshard = |from: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_groupwatch"))
            .args(["reshard", "--config", path.to_str().unwrap(), "--from", from])
            .output()
            .unwrap()
    };
    let wrong = reshard("8");
    assert_eq!(wrong.status.code(), Some(2), "{wrong:?}");
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("--from 8 is not the shard count"), "{wrong:?}");
    let done = reshard("4");
    assert!(done.status.success(), "{done:?}");
    let said = String::from_utf8_lossy(&done.stdout);
    println!("{said}");
    assert!(said.contains("resharded 4 -> 16: 36 items"), "{said}");

    let new =
        Topology::from_config(&groupwatch::config::Config::from_toml(&new_config, std::iter::empty()).unwrap().amqp);
    let found = drain_inbound(&conn, &new).await;
    assert_eq!(found.len(), accepted, "nothing lost, nothing doubled");
    let mut per_chat: std::collections::HashMap<&str, Vec<i64>> = Default::default();
    for (queue, item) in &found {
        assert_eq!(queue, &new.inbound_queue(new.shard_for(&item.chat_id)), "{} in its new queue", item.chat_id);
        per_chat.entry(chats.iter().find(|c| **c == item.chat_id).unwrap()).or_default().push(item.received_at_ms);
    }
    for (chat, times) in per_chat {
        assert_eq!(times.len(), 3, "{chat}");
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{chat}'s items keep their order: {times:?}");
    }
    let old_topology = Topology { inbound_shards: 4, ..new.clone() };
    let ch = conn.create_channel().await.unwrap();
    match old_topology.declare_marker(&ch).await {
        Err(BrokerError::TopologyMismatch { recorded, .. }) => assert_eq!(recorded, Some(16)),
        other => panic!("the old count must be refused now: {other:?}"),
    }

    // With an instance consuming, nothing is touched.
    let running =
        spawn_app(&TestConfig::new(&exchange, &store.url()).with_worker().amqp_value("inbound_shards", 16).toml())
            .await;
    let refused = reshard("4");
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("consumer(s): stop every groupwatch instance"),
        "{refused:?}"
    );
    running.stop().await;
    // An ingest-only instance consumes no shard, but its forwarder routes the intake by its count.
    let ingest = spawn_app(&TestConfig::new(&exchange, &store.url()).amqp_value("inbound_shards", 16).toml()).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let refused = reshard("4");
        let said = String::from_utf8_lossy(&refused.stderr).to_string();
        if refused.status.code() == Some(2) && said.contains(&format!("{} still has", new.intake_queue())) {
            break;
        }
        // The previous instance's consumers may still be going away.
        assert!(std::time::Instant::now() < deadline, "reshard must name the intake's consumer: {refused:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ingest.stop().await;
    cleanup(&conn, &new).await;
}
