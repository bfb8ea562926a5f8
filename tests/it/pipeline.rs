//! End to end: callbacks POSTed over HTTP as WeCom would, the simulator as WeCom's API, the real
//! RabbitMQ and a real store (SQLite file and PostgreSQL). Each scenario asserts the exact
//! events published.

use crate::common::*;
use groupwatch::core::model::{EventType, GroupEvent};
use groupwatch::worker::pipeline::{CrashPoint, Halt};
use serde_json::json;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

with_both_stores!(
    create_then_joins,
    leave_carries_previous_details,
    dismiss_publishes_leaves_then_dismiss,
    name_owner_notice_changes,
    stale_detail_is_retried_until_consistent,
    change_without_callback_is_found_by_the_next_diff,
    duplicate_callbacks_publish_no_new_ids,
    burst_of_joins_is_coalesced,
    a_burst_to_a_chat_never_seen_publishes_every_join,
    restart_after_publish_before_ack_republishes_same_ids,
);

async fn create_then_joins(store: TestStore) {
    let h = Harness::start(store).await;
    let created = h.created().await;
    assert_eq!(
        kinds(&created),
        [
            (EventType::GroupCreate, None, Some(1572505490)),
            (EventType::MemberJoin, Some("abel"), Some(1572505490)),
            (EventType::MemberJoin, Some("wmOgQhDgAAuXFJGwbve4g4iXknfOAAAA"), Some(1572505490)),
        ]
    );
    let abel = created[1].member.as_ref().unwrap();
    assert_eq!(abel.name.as_deref(), Some("张三丰"));
    assert_eq!(abel.invitor.as_deref(), Some("jack"));
    assert_eq!(created[0].group.member_count, 2);
    assert_eq!(created[0].tenant, TENANT);

    let v = h.simc.add_member(CORP_ID, CHAT, external("wmNEW1", 1700000000)).await.unwrap();
    h.callback(&callback_xml(1700000001, "update", Some("add_member"), &["wmNEW1"], Some(&v))).await;
    let joined = h.tap.expect(1, WAIT).await;
    assert_eq!(kinds(&joined), [(EventType::MemberJoin, Some("wmNEW1"), Some(1700000001))]);
    assert_eq!(joined[0].group.member_count, 3);
    assert_eq!(joined[0].group.member_version.as_deref(), Some(v.as_str()));
    assert_eq!(joined[0].routing_key(), format!("wecom.{TENANT}.member.join"));

    // The default member.join queue got the same joins.
    let ch = h.conn.create_channel().await.unwrap();
    let default_q = get_events(&ch, &format!("{}.member.join", h.exchange), 3, WAIT).await;
    assert_eq!(default_q.iter().map(|e| &e.id).collect::<Vec<_>>(), [&created[1].id, &created[2].id, &joined[0].id]);
    h.finish().await;
}

async fn leave_carries_previous_details(store: TestStore) {
    let h = Harness::start(store).await;
    let created = h.created().await;
    let v = h.simc.remove_member(CORP_ID, CHAT, "wmOgQhDgAAuXFJGwbve4g4iXknfOAAAA").await.unwrap();
    h.callback(&callback_xml(
        1700000100,
        "update",
        Some("del_member"),
        &["wmOgQhDgAAuXFJGwbve4g4iXknfOAAAA"],
        Some(&v),
    ))
    .await;
    let left = h.tap.expect(1, WAIT).await;
    assert_eq!(kinds(&left), [(EventType::MemberLeave, Some("wmOgQhDgAAuXFJGwbve4g4iXknfOAAAA"), Some(1700000100))]);
    assert_eq!(left[0].member, created[2].member, "last-known details");
    assert_eq!(left[0].quit_scene, Some(1));
    assert_eq!(left[0].group.member_count, 1);
    let ch = h.conn.create_channel().await.unwrap();
    let q = get_events(&ch, &format!("{}.member.leave", h.exchange), 1, WAIT).await;
    assert_eq!(q[0].id, left[0].id);
    h.finish().await;
}

async fn dismiss_publishes_leaves_then_dismiss(store: TestStore) {
    let h = Harness::start(store).await;
    h.created().await;
    h.simc.dismiss_group(CORP_ID, CHAT).await.unwrap();
    h.simc.reset_stats().await.unwrap();
    h.callback(&callback_xml(1700000200, "dismiss", None, &[], None)).await;
    let ev = h.tap.expect(3, WAIT).await;
    assert_eq!(
        kinds(&ev),
        [
            (EventType::MemberLeave, Some("abel"), Some(1700000200)),
            (EventType::MemberLeave, Some("wmOgQhDgAAuXFJGwbve4g4iXknfOAAAA"), Some(1700000200)),
            (EventType::GroupDismiss, None, Some(1700000200)),
        ]
    );
    assert_eq!(ev[2].group.name, "销售客服群");
    assert_eq!(h.simc.stats().await.unwrap().groupchat_get, 1, "one fetch confirms the dismiss");
    h.finish().await;
}

async fn name_owner_notice_changes(store: TestStore) {
    let h = Harness::start(store).await;
    h.created().await;
    for (field, value, detail, time) in [
        ("name", "VIP 客服群", "change_name", 1700000300),
        ("owner", "sam", "change_owner", 1700000301),
        ("notice", "新公告", "change_notice", 1700000302),
    ] {
        h.simc.patch_group(CORP_ID, CHAT, json!({ field: value })).await.unwrap();
        h.callback(&callback_xml(time, "update", Some(detail), &[], None)).await;
        let ev = h.tap.expect(1, WAIT).await;
        assert_eq!(kinds(&ev), [(EventType::GroupUpdate, None, Some(time))]);
        assert_eq!(ev[0].changes.as_deref(), Some(&[field.to_string()][..]));
        match field {
            "name" => assert_eq!(ev[0].group.name, value),
            "owner" => assert_eq!(ev[0].group.owner, value),
            _ => {}
        }
    }
    h.finish().await;
}

async fn stale_detail_is_retried_until_consistent(store: TestStore) {
    let h = Harness::start(store).await;
    h.created().await;
    let v = h.simc.add_member(CORP_ID, CHAT, external("wmLATE", 1700000400)).await.unwrap();
    h.simc.fault(json!({"stale_fetches": 2})).await.unwrap();
    h.simc.reset_stats().await.unwrap();
    h.callback(&callback_xml(1700000401, "update", Some("add_member"), &["wmLATE"], Some(&v))).await;
    let ev = h.tap.expect(1, WAIT).await;
    assert_eq!(kinds(&ev), [(EventType::MemberJoin, Some("wmLATE"), Some(1700000401))]);
    assert_eq!(ev[0].group.member_version.as_deref(), Some(v.as_str()));
    assert_eq!(h.simc.stats().await.unwrap().groupchat_get, 3, "two stale fetches, then the consistent one");
    h.finish().await;
}

async fn change_without_callback_is_found_by_the_next_diff(store: TestStore) {
    let h = Harness::start(store).await;
    h.created().await;
    // X joins, but its callback is lost; then Y joins with a callback.
    h.simc.add_member(CORP_ID, CHAT, external("wmLOST", 1700000500)).await.unwrap();
    let v = h.simc.add_member(CORP_ID, CHAT, external("wmSEEN", 1700000501)).await.unwrap();
    h.callback(&callback_xml(1700000502, "update", Some("add_member"), &["wmSEEN"], Some(&v))).await;
    let mut ev = h.tap.expect(2, WAIT).await;
    ev.sort_by(|a, b| a.member.as_ref().unwrap().userid.cmp(&b.member.as_ref().unwrap().userid));
    assert_eq!(
        kinds(&ev),
        [(EventType::MemberJoin, Some("wmLOST"), None), (EventType::MemberJoin, Some("wmSEEN"), Some(1700000502))]
    );
    h.finish().await;
}

async fn duplicate_callbacks_publish_no_new_ids(store: TestStore) {
    let h = Harness::start(store).await;
    h.created().await;
    let v = h.simc.add_member(CORP_ID, CHAT, external("wmDUP", 1700000600)).await.unwrap();
    let xml = callback_xml(1700000601, "update", Some("add_member"), &["wmDUP"], Some(&v));
    h.simc.reset_stats().await.unwrap();
    h.callback(&xml).await;
    let first = h.tap.expect(1, WAIT).await;
    // WeCom retries: the same payload twice more, after the first was fully processed.
    h.callback(&xml).await;
    h.callback(&xml).await;
    let later = h.tap.collect(Duration::from_secs(2)).await;
    let ids: HashSet<_> = first.iter().chain(&later).map(|e| e.id.clone()).collect();
    assert_eq!(ids.len(), 1, "duplicates carry the same id: {later:#?}");
    assert_eq!(h.simc.stats().await.unwrap().groupchat_get, 1, "retries of an applied callback cost no fetch");
    h.finish().await;
}

async fn burst_of_joins_is_coalesced(store: TestStore) {
    let h = Harness::start(store).await;
    h.created().await;
    h.simc.reset_stats().await.unwrap();
    let started = std::time::Instant::now();
    for i in 0..50 {
        let userid = format!("wmBURST{i:02}");
        let v = h.simc.add_member(CORP_ID, CHAT, external(&userid, 1700001000 + i)).await.unwrap();
        h.callback(&callback_xml(1700001000 + i, "update", Some("add_member"), &[&userid], Some(&v))).await;
    }
    let posting = started.elapsed();
    let ev = h.tap.expect(50, WAIT).await;
    let ids: HashSet<_> = ev.iter().map(|e| e.id.clone()).collect();
    let users: HashSet<_> = ev.iter().map(|e| e.member.as_ref().unwrap().userid.clone()).collect();
    assert_eq!((ids.len(), users.len()), (50, 50));
    assert!(ev.iter().all(|e| e.event_type == EventType::MemberJoin && e.occurred_at.is_some()));
    let fetches = h.simc.stats().await.unwrap().groupchat_get;
    println!("burst: 50 joins posted in {posting:?}, {fetches} groupchat/get calls");
    assert!(fetches < 50 / 3, "coalescing: {fetches} fetches for 50 callbacks");
    h.finish().await;
}

/// A chat groupwatch has never stored, and a burst of joins to it: the fetch the first callback
/// causes already shows members whose own callbacks are still on the way. They must not be
/// stored silently as part of the baseline (their callbacks would then find them known and
/// publish nothing): every join of the burst is published once; the members from before stay
/// silent.
async fn a_burst_to_a_chat_never_seen_publishes_every_join(store: TestStore) {
    let h = Harness::start(store).await;
    let users: Vec<String> = (0..6).map(|i| format!("wmFIRST{i}")).collect();
    let mut versions = Vec::new();
    for (i, userid) in users.iter().enumerate() {
        versions.push(h.simc.add_member(CORP_ID, CHAT, external(userid, 1700002000 + i as i64)).await.unwrap());
    }
    // The callbacks arrive after every join happened, the first one alone first.
    for (i, userid) in users.iter().enumerate() {
        let time = 1700002000 + i as i64;
        h.callback(&callback_xml(time, "update", Some("add_member"), &[userid], Some(&versions[i]))).await;
        if i == 0 {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    let ev = h.tap.expect(users.len(), WAIT).await;
    let joined: HashSet<_> = ev.iter().map(|e| e.member.as_ref().unwrap().userid.clone()).collect();
    assert_eq!(joined, users.iter().cloned().collect::<HashSet<_>>());
    assert!(ev.iter().all(|e| e.event_type == EventType::MemberJoin));
    // Nothing for the members from before the burst, nothing twice.
    let extra = h.tap.collect(Duration::from_millis(1500)).await;
    assert!(extra.is_empty(), "unexpected: {extra:#?}");
    h.finish().await;
}

async fn restart_after_publish_before_ack_republishes_same_ids(store: TestStore) {
    let halt = Arc::new(Halt::at(CrashPoint::AfterPublish));
    let mut h = Harness::start_with(store, groupwatch::app::Hooks { halt: Some(halt.clone()) }).await;
    h.callback(&callback_xml(1572505490, "create", None, &[], None)).await;
    tokio::time::timeout(WAIT, halt.fired.notified()).await.expect("the worker published and halted");
    let first = h.tap.expect(3, WAIT).await;
    // The worker "died" before marking the events published and acking; stop the process,
    // start a new one.
    h.app.take().unwrap().stop().await;
    h.app = Some(spawn_app_hooked(&h.config, Default::default()).await);
    let again = h.tap.expect(3, WAIT).await;
    let ids = |ev: &[GroupEvent]| ev.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&first), ids(&again), "same events, same ids, same order");
    // Now saved and acked: nothing left to redeliver.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(inbound_len(&h.conn, &h.app().topology).await, 0);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wecom_api_faults_mid_stream_lose_nothing_and_invent_nothing() {
    let h = Harness::start_custom(TestStore::sqlite().await, Default::default(), fault_config).await;
    let mut events = h.created().await;
    let (simc, replayer) = (&h.simc, h.replayer());

    let mut added = Vec::new();
    for i in 0..20i64 {
        match i {
            3 => simc.fault(json!({"errcode": -1, "count": 2})).await.unwrap(),
            6 => simc.fault(json!({"errcode": 45009, "count": 1})).await.unwrap(),
            9 => simc.fault(json!({"http_status": 502, "count": 2})).await.unwrap(),
            12 => simc.fault(json!({"latency_ms": 600})).await.unwrap(), // over api_timeout_ms
            14 => simc.fault(json!({"latency_ms": 0})).await.unwrap(),
            16 => simc.fault(json!({"expire_tokens": true})).await.unwrap(), // 42001 on the next call
            _ => {}
        }
        let userid = format!("wmFAULT{i:02}");
        let v = simc.add_member(CORP_ID, CHAT, external(&userid, 1700002000 + i)).await.unwrap();
        let xml = callback_xml(1700002000 + i, "update", Some("add_member"), &[&userid], Some(&v));
        assert_eq!(replayer.post(xml.as_bytes()).await.unwrap(), 200);
        added.push((userid, 1700002000 + i));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let expected = expected_changes_create_then_joins(&added);
    collect_until(&h.tap, &mut events, &expected, Duration::from_secs(40), Duration::from_millis(800)).await;
    assert_published_exactly(&events, &expected);
    assert!(simc.stats().await.unwrap().gettoken >= 2, "the expired token was refreshed");
    assert_eq!(queue_len(&h.conn, &h.topology.dead_letter_queue()).await, 0, "no fault was permanent");
    h.finish().await;
}

/// Runs `groupwatch replay --dead-letters` with `config`; returns what it printed.
async fn replay_dead_letters(config: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("groupwatch.toml");
    std::fs::write(&config_path, config).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_groupwatch"))
        .args(["replay", "--dead-letters", "--config"])
        .arg(&config_path)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_event_goes_to_the_dead_letter_queue_and_is_replayed_after_the_fix() {
    let h = Harness::start_custom(TestStore::sqlite().await, Default::default(), fault_config).await;
    h.created().await;
    let (simc, replayer, conn, tap) = (&h.simc, h.replayer(), &h.conn, &h.tap);

    // The app lost its permission (48002): retrying cannot help.
    simc.fault(json!({"errcode": 48002, "count": 1000})).await.unwrap();
    let v = simc.add_member(CORP_ID, CHAT, external("wmPOISON", 1700003000)).await.unwrap();
    let xml = callback_xml(1700003001, "update", Some("add_member"), &["wmPOISON"], Some(&v));
    assert_eq!(replayer.post(xml.as_bytes()).await.unwrap(), 200);

    let dead = h.topology.dead_letter_queue();
    let deadline = tokio::time::Instant::now() + WAIT;
    while queue_len(conn, &dead).await == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the poison event reached {dead}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ch = conn.create_channel().await.unwrap();
    let msg = ch.basic_get(&dead, lapin::options::BasicGetOptions::default()).await.unwrap().unwrap();
    let headers = msg.delivery.properties.headers().clone().unwrap();
    let reason = match headers.inner().get("x-groupwatch-reason") {
        Some(lapin::types::AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        other => panic!("reason header: {other:?}"),
    };
    assert!(reason.contains("48002"), "{reason}");
    msg.delivery.acker.nack(lapin::options::BasicNackOptions { requeue: true, ..Default::default() }).await.unwrap();
    assert!(tap.collect(Duration::from_millis(500)).await.is_empty(), "nothing published for the poison event");

    // Fixed: the permission is back. Replay the dead letters with the command.
    simc.clear_faults().await.unwrap();
    let said = replay_dead_letters(&h.config).await;
    assert!(said.contains("re-injected 1 events from 1 dead letters"), "{said}");

    let ev = tap.expect(1, WAIT).await;
    assert_eq!(kinds(&ev), [(EventType::MemberJoin, Some("wmPOISON"), Some(1700003001))], "it keeps its time");
    let all = expected_changes_create_then_joins(&[("wmPOISON".into(), 1700003000)]);
    assert!(all.contains(&change_of(&ev[0])));
    assert_eq!(queue_len(conn, &dead).await, 0);
    h.finish().await;
}

/// A shard message gathers the items of many callbacks; one the worker cannot read (here written
/// by a "newer release" with a kind of work this one does not know) is parked alone, as a
/// one-item message with its chat in the headers, and its neighbour in the same message is
/// processed and published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_the_worker_cannot_read_is_parked_alone_and_its_neighbours_go_on() {
    use groupwatch::queue::inbound::{self, InboundEvent, Work};
    use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
    let mut h = Harness::start(TestStore::sqlite().await).await;
    h.created().await;
    // The group changed without a callback; a reconcile item finds the new member.
    h.simc.add_member(CORP_ID, CHAT, external("wmNEIGHBOUR", 1700004000)).await.unwrap();
    let good = InboundEvent::request(Work::Reconcile, groupwatch::core::model::Provider::Wecom, TENANT, CHAT, 1);
    let bad = format!(
        r#"{{"id":"newer","provider":"wecom","tenant":"{TENANT}","chat_id":"{CHAT}","received_at_ms":1,"key":"k","work":"teleport"}}"#
    );
    let good_json = String::from_utf8(inbound::encode(std::slice::from_ref(&good))).unwrap();
    let good_item = good_json.strip_prefix(r#"{"v":2,"events":["#).unwrap().strip_suffix("]}").unwrap();
    let body = format!(r#"{{"v":2,"events":[{bad},{good_item}]}}"#);
    let ch = h.conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let shard = h.topology.inbound_queue(h.topology.shard_for(CHAT));
    let confirm = ch
        .basic_publish("", &shard, BasicPublishOptions::default(), body.as_bytes(), Default::default())
        .await
        .unwrap();
    assert!(confirm.await.unwrap().is_ack());

    let ev = h.tap.expect(1, WAIT).await;
    assert_eq!(kinds(&ev), [(EventType::MemberJoin, Some("wmNEIGHBOUR"), None)], "the neighbour went on");
    let dead = h.topology.dead_letter_queue();
    let deadline = tokio::time::Instant::now() + WAIT;
    while queue_len(&h.conn, &dead).await == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the unreadable item reached {dead}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(queue_len(&h.conn, &dead).await, 1, "only the unreadable item is parked");
    let msg = ch.basic_get(&dead, Default::default()).await.unwrap().unwrap();
    assert_eq!(String::from_utf8(msg.delivery.data.clone()).unwrap(), format!(r#"{{"v":2,"events":[{bad}]}}"#));
    let headers = msg.delivery.properties.headers().clone().unwrap();
    let header = |name: &str| match headers.inner().get(name) {
        Some(lapin::types::AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        other => panic!("{name}: {other:?}"),
    };
    assert_eq!(header("x-groupwatch-chat-id"), CHAT);
    assert!(header("x-groupwatch-reason").contains("teleport"), "{}", header("x-groupwatch-reason"));
    msg.delivery.acker.nack(lapin::options::BasicNackOptions { requeue: true, ..Default::default() }).await.unwrap();
    // Unacked messages go back to their queue when the worker's channel closes.
    h.app.take().expect("running").stop().await;
    assert_eq!(queue_len(&h.conn, &shard).await, 0, "the shard message was acked");

    // This release still cannot read it: the redrive leaves it parked rather than loop on it.
    let said = replay_dead_letters(&h.config).await;
    assert!(said.contains("re-injected 0 events from 0 dead letters; 1 left"), "{said}");
    assert_eq!(queue_len(&h.conn, &dead).await, 1);
    h.finish().await;
}

/// A change to a quiet chat is fetched at once (leading edge); with `worker.leading_edge = false`
/// it waits out `worker.coalesce_ms` first. A 10 s window tells the two apart without timing
/// anything finer than seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_change_is_fetched_at_once_unless_leading_edge_is_off() {
    for leading_edge in [true, false] {
        let h =
            Harness::start_custom(TestStore::sqlite().await, Default::default(), move |exchange, store, api_base| {
                pipeline_test_config(exchange, store, api_base)
                    .worker_value("coalesce_ms", 10_000)
                    .worker_value("leading_edge", leading_edge)
                    .toml()
            })
            .await;
        h.callback(&callback_xml(1572505490, "create", None, &[], None)).await;
        let early = h.tap.collect(Duration::from_secs(5)).await;
        if leading_edge {
            assert_eq!(early.len(), 3, "published long before the 10 s window ends");
        } else {
            assert!(early.is_empty(), "waits out the window: {early:#?}");
            assert_eq!(h.tap.expect(3, Duration::from_secs(15)).await.len(), 3);
        }
        h.finish().await;
    }
}
