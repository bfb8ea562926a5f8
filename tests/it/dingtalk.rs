//! DingTalk end to end: the simulator as DingTalk, the app with a `[[dingtalk]]` tenant in
//! Stream and in HTTP mode, real RabbitMQ, SQLite and PostgreSQL.

use crate::common::dingtalk::*;
use crate::common::proxy::Proxy;
use crate::common::*;
use groupwatch::core::model::{EventType, GroupEvent, Provider, Role};
use serde_json::json;
use std::time::{Duration, Instant};

fn member(e: &GroupEvent) -> Option<&str> {
    e.member.as_ref().map(|m| m.userid.as_str())
}

fn summary(events: &[GroupEvent]) -> Vec<(EventType, Option<&str>, Option<i64>)> {
    events.iter().map(|e| (e.event_type, member(e), e.quit_scene)).collect()
}

/// Every DingTalk event the contract names, in order, on one chat: join (a chat first seen is a
/// baseline: only the named member), remove, quit, rename, owner change by
/// openConversationId only, a join whose first chat/get is stale, a redelivered event, disband.
async fn scenario(store: TestStore, mode: DtMode) {
    let h = DtHarness::start(store, mode).await;

    h.add(&["user789"]).await;
    let events = h.tap.expect(1, WAIT).await;
    assert_eq!(summary(&events), [(EventType::MemberJoin, Some("user789"), None)]);
    let join = &events[0];
    assert_eq!((join.provider, join.tenant.as_str(), join.chat_id.as_str()), (Provider::Dingtalk, DT_TENANT, DT_CHAT));
    assert_eq!(join.routing_key(), format!("dingtalk.{DT_TENANT}.member.join"));
    assert!(join.occurred_at.is_some_and(|t| t > 1_600_000_000), "{join:?}");
    assert_eq!(join.member.as_ref().unwrap().role, Some(Role::Member));
    assert_eq!((join.group.name.as_str(), join.group.owner.as_str()), ("项目群", "user123"));
    assert_eq!(join.group.member_version, None);

    h.remove(&["user456"]).await;
    let events = h.tap.expect(1, WAIT).await;
    assert_eq!(summary(&events), [(EventType::MemberLeave, Some("user456"), Some(1))]);

    h.quit("manager4220").await;
    let events = h.tap.expect(1, WAIT).await;
    assert_eq!(summary(&events), [(EventType::MemberLeave, Some("manager4220"), Some(0))]);

    h.rename("新项目群").await;
    let events = h.tap.expect(1, WAIT).await;
    assert_eq!(events[0].event_type, EventType::GroupUpdate);
    assert_eq!(events[0].changes.as_deref(), Some(&["name".to_owned()][..]));
    assert_eq!(events[0].group.name, "新项目群");

    // chat_update_owner names the chat by openConversationId alone: earlier events taught it.
    h.set_owner("user789").await;
    let events = h.tap.expect(1, WAIT).await;
    assert_eq!(events[0].event_type, EventType::GroupUpdate);
    assert_eq!(events[0].chat_id, DT_CHAT);
    assert_eq!(events[0].changes.as_deref(), Some(&["owner".to_owned()][..]));
    assert_eq!(events[0].group.owner, "user789");

    // The first chat/get after the join answers the chat as it was: the join still comes, once.
    h.simc.dingtalk_fault(json!({"stale_fetches": 1})).await.unwrap();
    let ids = h.add(&["user999"]).await;
    let events = h.tap.expect(1, WAIT).await;
    assert_eq!(summary(&events), [(EventType::MemberJoin, Some("user999"), None)]);
    assert_eq!(events[0].member.as_ref().unwrap().role, Some(Role::Member));

    // The same event again: DingTalk redelivers it (stream), or pushes it again (http).
    match mode {
        DtMode::Stream => {
            let redelivered = h.simc.dingtalk_fault(json!({"redeliver": 1})).await.unwrap().redelivered;
            assert_eq!(redelivered, ids);
            wait_acked(&h, 2).await;
        }
        DtMode::Http => h.deliver(&ids).await,
    }
    h.assert_quiet().await;

    h.disband().await;
    let events = h.tap.expect(4, WAIT).await;
    let mut leaves: Vec<_> = events[..3].iter().map(|e| (e.event_type, member(e).unwrap().to_owned())).collect();
    leaves.sort();
    assert_eq!(
        leaves,
        ["user123", "user789", "user999"].map(|u| (EventType::MemberLeave, u.to_owned())),
        "every last-known member leaves"
    );
    assert_eq!(events[3].event_type, EventType::GroupDismiss);
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [7, 8, 9, 10], "one gapless history");
    if mode == DtMode::Stream {
        let stats = h.simc.dingtalk_stats().await.unwrap();
        assert_eq!(stats.acks_later, 0, "{stats:?}");
        wait_no_pending(&h).await;
    }
    h.finish().await;
}

/// Waits until the event of the latest delivery has `n` deliveries and is ACKed.
async fn wait_acked(h: &DtHarness, deliveries: u32) {
    let deadline = Instant::now() + WAIT;
    loop {
        let log = h.simc.dingtalk_events().await.unwrap();
        if log.last().is_some_and(|e| e.deliveries >= deliveries && e.acked) {
            return;
        }
        assert!(Instant::now() < deadline, "never ACKed: {:?}", log.last());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the simulator has no event left un-ACKed.
async fn wait_no_pending(h: &DtHarness) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pending = h.simc.dingtalk_pending().await.unwrap();
        if pending.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "events never ACKed: {pending:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_mode_scenario_sqlite() {
    scenario(TestStore::sqlite().await, DtMode::Stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_mode_scenario_postgres() {
    scenario(TestStore::postgres().await, DtMode::Stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_mode_scenario_sqlite() {
    scenario(TestStore::sqlite().await, DtMode::Http).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_mode_scenario_postgres() {
    scenario(TestStore::postgres().await, DtMode::Http).await;
}

/// Legacy PascalCase payloads (no eventId) go through both channels the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pascal_case_events_in_both_modes() {
    for mode in [DtMode::Stream, DtMode::Http] {
        let mut h = DtHarness::start(TestStore::sqlite().await, mode).await;
        h.push = groupwatch::sim::DingtalkPush::pascal();
        h.add(&["u1", "u2"]).await;
        let events = h.tap.expect(2, WAIT).await;
        let mut joined: Vec<_> = events.iter().map(|e| member(e).unwrap()).collect();
        joined.sort();
        assert_eq!(joined, ["u1", "u2"], "{mode:?}");
        h.set_owner("u1").await;
        let events = h.tap.expect(1, WAIT).await;
        assert_eq!((events[0].event_type, events[0].group.owner.as_str()), (EventType::GroupUpdate, "u1"), "{mode:?}");
        h.finish().await;
    }
}

/// HTTP mode: the URL check is answered and queues nothing; bad input gets its 4xx and changes
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_mode_refuses_bad_input_and_publishes_nothing() {
    let h =
        DtHarness::start_with(TestStore::sqlite().await, DtMode::Http, |c| c.http_value("timestamp_window_secs", 300))
            .await;
    let check = h.post(br#"{"EventType":"check_url"}"#).await;
    assert_eq!(check.status(), 200);
    let reply: serde_json::Value = check.json().await.unwrap();
    assert!(reply["encrypt"].is_string() && reply["msg_signature"].is_string(), "{reply}");

    let event = http_plaintext(
        "chat_add_member",
        "ev-bad-1",
        r#"{"timeStamp":1700000000000,"chatId":"chat691a41db53b100115bec3603472d78a9","userId":["x"]}"#,
    );
    let crypt = groupwatch::provider::wxbiz::WxCrypt::new(DT_TOKEN, DT_AES, DT_APP).unwrap();
    let signed = groupwatch::provider::dingtalk::codec::sign(&crypt, event.as_bytes(), now_ms());

    // A signature off by one digit.
    let mut query = signed.query.clone();
    let sig = &mut query[0].1;
    let last = if sig.ends_with('0') { "1" } else { "0" };
    sig.replace_range(39.., last);
    assert_eq!(h.post_raw(&query, signed.body.clone()).await.status(), 401, "bad signature");
    // No signature at all.
    assert_eq!(h.post_raw(&signed.query[1..], signed.body.clone()).await.status(), 401, "missing signature");
    // Signed for another app (owner key).
    let other = groupwatch::provider::wxbiz::WxCrypt::new(DT_TOKEN, DT_AES, "dingsomeotherapp").unwrap();
    let wrong = groupwatch::provider::dingtalk::codec::sign(&other, event.as_bytes(), now_ms());
    assert_eq!(h.post_raw(&wrong.query, wrong.body).await.status(), 400, "wrong owner key");
    // Ten minutes old (milliseconds).
    let stale = groupwatch::provider::dingtalk::codec::sign(&crypt, event.as_bytes(), now_ms() - 600_000);
    assert_eq!(h.post_raw(&stale.query, stale.body).await.status(), 401, "stale timestamp");
    // Not the JSON envelope.
    assert_eq!(h.post_raw(&signed.query, b"{\"encrypt\":".to_vec()).await.status(), 400, "malformed envelope");
    // Signed and encrypted, but not JSON inside.
    let garbage = groupwatch::provider::dingtalk::codec::sign(&crypt, b"chat_add_member", now_ms());
    assert_eq!(h.post_raw(&garbage.query, garbage.body).await.status(), 400, "malformed event");
    // Another event type: answered, never queued.
    let ok = groupwatch::provider::dingtalk::codec::sign(
        &crypt,
        br#"{"EventType":"user_add_org","userId":["x"]}"#,
        now_ms(),
    );
    assert_eq!(h.post_raw(&ok.query, ok.body.clone()).await.status(), 200, "another event type is answered");

    assert_eq!(inbound_len(&h.conn, &h.topology).await, 0, "nothing queued");
    h.assert_quiet().await;
    h.finish().await;
}

/// A SYSTEM disconnect: a new connection is opened before the old one goes, and an event pushed
/// in between is not lost; a dropped socket is reconnected and the waiting event delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_disconnect_and_dropped_socket_lose_nothing() {
    let h = DtHarness::start(TestStore::sqlite().await, DtMode::Stream).await;
    h.simc.dingtalk_settings(json!({"disconnect_grace_ms": 1500})).await.unwrap();
    h.add(&["before"]).await;
    h.tap.expect(1, WAIT).await;
    let connects = h.simc.dingtalk_stats().await.unwrap().connections_open;

    // Ready throughout the rotation: the new connection is up before the old one goes.
    let readyz = h.app().ops_url("/readyz");
    let watch = tokio::spawn(async move {
        let until = Instant::now() + Duration::from_millis(2500);
        let mut seen = Vec::new();
        while Instant::now() < until {
            seen.push(reqwest::get(&readyz).await.unwrap().status().as_u16());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        seen
    });
    let told = h.simc.dingtalk_fault(json!({"disconnect": true})).await.unwrap().disconnected;
    assert_eq!(told, 1);
    h.add(&["during"]).await;
    let events = h.tap.expect(1, WAIT).await;
    assert_eq!(member(&events[0]), Some("during"));
    let stats = h.simc.dingtalk_stats().await.unwrap();
    assert!(stats.connections_open > connects, "a fresh ticket for the new connection: {stats:?}");
    let seen = watch.await.unwrap();
    assert!(seen.len() > 10 && seen.iter().all(|s| *s == 200), "/readyz during the rotation: {seen:?}");

    // Dropped without a frame: the event waits in DingTalk for the next connection.
    let dropped = h.simc.dingtalk_fault(json!({"drop": true})).await.unwrap().dropped;
    assert!(dropped >= 1);
    h.add(&["after"]).await;
    let events = h.tap.expect(1, WAIT).await;
    assert_eq!(member(&events[0]), Some("after"));
    h.app().wait_ready().await;
    let stats = h.simc.dingtalk_stats().await.unwrap();
    assert_eq!((stats.acks_later, stats.acks_malformed), (0, 0), "{stats:?}");
    let metrics = reqwest::get(h.app().ops_url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("groupwatch_dingtalk_stream_connects_total"), "metrics");
    assert!(metrics.contains("groupwatch_dingtalk_stream_disconnects_total"), "metrics");
    h.finish().await;
}

/// `/readyz` is 503 while the stream tenant has no live connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_waits_for_the_stream_connection() {
    let h = DtHarness::start(TestStore::sqlite().await, DtMode::Stream).await;
    // Connections refused from now on: a dropped socket cannot come back.
    h.simc.dingtalk_fault(json!({"http_status": 503, "count": 1000, "on": "connections_open"})).await.unwrap();
    h.simc.dingtalk_fault(json!({"drop": true})).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = reqwest::get(h.app().ops_url("/readyz")).await.unwrap();
        if status.status() == 503 {
            assert!(status.text().await.unwrap().contains("dingtalk/acme-dt"));
            break;
        }
        assert!(Instant::now() < deadline, "/readyz stayed 200 without a stream connection");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    h.simc.dingtalk_clear_faults().await.unwrap();
    h.app().wait_ready().await;
    h.finish().await;
}

/// Pings are answered with their opaque (the simulator checks it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_pings_are_answered() {
    let h = DtHarness::start(TestStore::sqlite().await, DtMode::Stream).await;
    h.simc.dingtalk_settings(json!({"ping_interval_ms": 100})).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = h.simc.dingtalk_stats().await.unwrap();
        if stats.pongs >= 3 {
            assert_eq!(stats.last_frame_error, None, "{stats:?}");
            break;
        }
        assert!(Instant::now() < deadline, "pings not answered: {stats:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    h.finish().await;
}

/// No SUCCESS ACK for an event the broker could not take: it is asked again (LATER), and its
/// redelivery, once the broker is back, is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_acks_only_after_the_hand_off() {
    let proxy = Proxy::start("127.0.0.1:5672".parse().unwrap()).await;
    let url = proxy.amqp_url();
    let h = DtHarness::start_with(TestStore::sqlite().await, DtMode::Stream, |c| c.amqp_url(&url)).await;
    h.simc.dingtalk_settings(json!({"redelivery_delay_ms": 500})).await.unwrap();
    h.add(&["first"]).await;
    h.tap.expect(1, WAIT).await;
    h.simc.dingtalk_reset_stats().await.unwrap();

    proxy.cut();
    let ids = h.add(&["while-cut"]).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = h.simc.dingtalk_stats().await.unwrap();
        if stats.acks_later >= 1 {
            assert_eq!(stats.acks_success, 0, "no SUCCESS while the broker is cut: {stats:?}");
            break;
        }
        assert!(Instant::now() < deadline, "no LATER while the broker was cut: {stats:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pending = h.simc.dingtalk_pending().await.unwrap();
    assert_eq!(pending.iter().map(|e| e.event_id.clone()).collect::<Vec<_>>(), ids, "the event is still DingTalk's");

    proxy.restore();
    let events = h.tap.expect(1, Duration::from_secs(40)).await;
    assert_eq!(member(&events[0]), Some("while-cut"));
    wait_no_pending(&h).await;
    h.finish().await;
}

/// Resync re-fetches the chats the store knows: a change DingTalk never announced is found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resync_refetches_known_chats() {
    let h = DtHarness::start(TestStore::postgres().await, DtMode::Stream).await;
    h.add(&["known"]).await;
    h.tap.expect(1, WAIT).await;
    // A member added without an event.
    h.simc.dingtalk_add_members(DT_APP, DT_CHAT, &["silent"], None).await.unwrap();
    let config = groupwatch::config::Config::from_toml(&h.config, std::iter::empty()).unwrap();
    let summaries =
        groupwatch::app::resync_once(&config, Some(Provider::Dingtalk), &[], &[], Some(WAIT)).await.unwrap();
    assert_eq!(summaries.len(), 1);
    assert_eq!(summaries[0].groups_scanned, 1, "{}", summaries[0]);
    let events = h.tap.expect(1, WAIT).await;
    assert_eq!(summary(&events), [(EventType::MemberJoin, Some("silent"), None)]);
    assert_eq!(events[0].occurred_at, None, "found by comparing snapshots");
    h.finish().await;
}

/// An owner change for a chat whose openConversationId no earlier event taught is parked with
/// its reason (and ACKed), never dropped silently; nothing is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_change_for_an_unknown_alias_is_parked() {
    let h = DtHarness::start(TestStore::sqlite().await, DtMode::Stream).await;
    let data = json!({"owner": "someone", "timeStamp": now_ms(), "corpId": "dingc7c5", "openConversationId": "cidNeverSeen=="});
    h.simc.dingtalk_push_event(DT_APP, json!({"eventType": "chat_update_owner", "data": data})).await.unwrap();
    let dead = h.topology.dead_letter_queue();
    let deadline = Instant::now() + WAIT;
    while queue_len(&h.conn, &dead).await < 1 {
        assert!(Instant::now() < deadline, "the unmapped owner change was not parked");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_no_pending(&h).await;
    h.assert_quiet().await;
    h.finish().await;
}

/// `groupwatch replay` plays DingTalk's HTTP push for a tenant in http mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_posts_dingtalk_fixtures() {
    let h = DtHarness::start(TestStore::sqlite().await, DtMode::Http).await;
    let replayer = groupwatch::tools::replay::Replayer::for_tenant(
        &h.app().config,
        Some(Provider::Dingtalk),
        DT_TENANT,
        &h.callback_url(),
    )
    .unwrap();
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/dingtalk/chat_remove_member.pascal.json");
    assert_eq!(replayer.post_file(&fixture).await.unwrap(), 200);
    let events = h.tap.expect(1, WAIT).await;
    assert_eq!(summary(&events), [(EventType::MemberLeave, Some("011505184066774889"), Some(1))]);
    assert_eq!(events[0].occurred_at, Some(1640601958), "the event's own time");
    h.finish().await;
}

/// `serve` at `RUST_LOG=trace`, connected over Stream and calling gettoken (whose query carries
/// the app secret) and chat/get: the app secret appears in no log line.
#[test]
fn the_app_secret_is_never_logged() {
    use std::process::{Command, Stdio};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sim = rt.block_on(groupwatch::sim::spawn(dt_sim_state(), "127.0.0.1:0".parse().unwrap())).unwrap();
    let simc = groupwatch::sim::SimClient::new(sim.base_url());
    let dir = tempfile::tempdir().unwrap();
    let exchange = unique_exchange();
    let store = format!("sqlite://{}", dir.path().join("gw.db").display());
    let config = TestConfig::new(&exchange, &store)
        .with_worker()
        .tenant("dingtalk", &dt_tenant(DtMode::Stream, &sim.base_url()))
        .section("[log]\nformat = \"json\"\n")
        .toml();
    let path = dir.path().join("groupwatch.toml");
    std::fs::write(&path, &config).unwrap();
    let log = dir.path().join("stderr.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_groupwatch"))
        .args(["serve", "--config"])
        .arg(&path)
        .env("RUST_LOG", "trace")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    let wait = |what: &str, done: &dyn Fn() -> bool| {
        let started = Instant::now();
        while !done() {
            assert!(started.elapsed() < Duration::from_secs(30), "{what}:\n{}", read());
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait("serve never connected over Stream", &|| read().contains("stream connected"));
    rt.block_on(simc.dingtalk_add_members(DT_APP, DT_CHAT, &["traced"], Some(&groupwatch::sim::DingtalkPush::camel())))
        .unwrap();
    wait("no chat/get", &|| rt.block_on(simc.dingtalk_stats()).unwrap().chat_get >= 1);
    std::thread::sleep(Duration::from_millis(500));
    Command::new("kill").args(["-s", "TERM", &child.id().to_string()]).status().unwrap();
    assert!(child.wait().unwrap().success());
    let parsed = groupwatch::config::Config::from_toml(&config, std::iter::empty()).unwrap();
    let topology = groupwatch::queue::broker::Topology::from_config(&parsed.amqp);
    rt.block_on(async { cleanup(&amqp().await, &topology).await });
    let text = read();
    assert!(text.lines().count() > 50 && text.contains("\"level\":\"TRACE\""), "trace is on:\n{text}");
    assert!(!text.contains(DT_SECRET), "the app secret was logged");
    assert!(!text.contains(DT_AES) && !text.contains(DT_TOKEN), "the callback key or token was logged");
    drop(sim);
}

/// What `demo` needs: the bundled simulator state and a `[[dingtalk]]` table with nothing but the
/// app's key and secret and the simulator's address (Stream mode is the default; no callback
/// crypto) is enough for events to flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minimal_stream_tenant_against_the_bundled_simulator() {
    let state = groupwatch::sim::SimState::bundled().unwrap();
    let dt = state.dingtalk.first().expect("the bundled state has a DingTalk app").clone();
    let chat = dt.chats.iter().find(|c| c.status != Some(2)).expect("a live chat").clone();
    let sim = groupwatch::sim::spawn(state, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let simc = groupwatch::sim::SimClient::new(sim.base_url());
    let store = TestStore::sqlite().await;
    let exchange = unique_exchange();
    let tenant = format!(
        "tenant = \"demo-dt\"\napp_key = \"{}\"\napp_secret = \"{}\"\napi_base = \"{}\"\nstream_base = \"{}\"",
        dt.app_key,
        dt.app_secret,
        sim.base_url(),
        sim.base_url()
    );
    let app =
        spawn_app(&TestConfig::new(&exchange, &store.url()).with_worker().tenant("dingtalk", &tenant).toml()).await;
    let conn = amqp().await;
    let tap = Tap::new(&conn, &exchange).await;
    simc.dingtalk_add_members(
        &dt.app_key,
        &chat.chatid,
        &["demo-joiner"],
        Some(&groupwatch::sim::DingtalkPush::camel()),
    )
    .await
    .unwrap();
    let events = tap.expect(1, WAIT).await;
    assert_eq!(summary(&events), [(EventType::MemberJoin, Some("demo-joiner"), None)]);
    assert_eq!(events[0].routing_key(), "dingtalk.demo-dt.member.join");
    // The HTTP route of a stream tenant without crypto takes nothing.
    let refused = reqwest::Client::new().post(app.url("/dingtalk/demo-dt/callback")).body("{}").send().await.unwrap();
    assert_eq!(refused.status(), 401);
    let topology = app.topology.clone();
    app.stop().await;
    cleanup(&conn, &topology).await;
}
