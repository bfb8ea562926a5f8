//! Never invent, never lose: the transactional outbox, `seq`, one writer per chat and stale
//! reads, against the simulator's faults, the real RabbitMQ and both stores.

use crate::common::proxy::Proxy;
use crate::common::*;
use groupwatch::core::model::{EventType, GroupEvent};
use groupwatch::queue::inbound::{InboundBatch, InboundEvent, Work};
use groupwatch::worker::pipeline::{CrashPoint, Halt};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

with_both_stores!(
    stale_reads_after_a_join_publish_no_leave,
    a_crash_after_the_commit_publishes_the_stored_events,
    resync_racing_a_callback_never_overwrites_it,
    a_member_who_leaves_and_rejoins_with_the_same_join_time_gets_new_ids,
    unwritten_marks_never_republish_and_are_written_at_last,
    marks_keep_the_highest_seq_and_write_at_most_500_chats_at_a_time,
);

/// The members a consumer believes each chat has, from the events (deduplicated by id) applied
/// in `seq` order.
pub fn rebuild(events: &[GroupEvent]) -> BTreeMap<String, BTreeSet<String>> {
    let mut distinct: BTreeMap<(String, i64), &GroupEvent> = BTreeMap::new();
    for e in events {
        distinct.entry((e.chat_id.clone(), e.seq)).or_insert(e);
    }
    let mut members: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for ((chat, _), e) in distinct {
        let set = members.entry(chat).or_default();
        match (e.event_type, &e.member) {
            (EventType::MemberJoin, Some(m)) => {
                set.insert(m.userid.clone());
            }
            (EventType::MemberLeave, Some(m)) => {
                set.remove(&m.userid);
            }
            _ => {}
        }
    }
    members
}

/// The simulator's members of one chat.
pub async fn sim_members(simc: &groupwatch::sim::SimClient, chat: &str) -> BTreeSet<String> {
    let state = simc.state().await.unwrap();
    let group = state.corps[0].groups.iter().find(|g| g.chat_id == chat).expect("chat in the simulator");
    if group.dismissed {
        return BTreeSet::new();
    }
    group.member_list.iter().map(|m| m.userid.clone()).collect()
}

async fn stale_reads_after_a_join_publish_no_leave(store: TestStore) {
    let h = Harness::start(store).await;
    let mut events = h.created().await;
    let v = h.simc.add_member(CORP_ID, CHAT, external("wmJOINED", 1700000001)).await.unwrap();
    h.callback(&callback_xml(1700000002, "update", Some("add_member"), &["wmJOINED"], Some(&v))).await;
    events.extend(h.tap.expect(1, WAIT).await);

    // WeCom's detail lags: the next reads show the group from before the join. A resync must
    // not take them for the truth (961b6d7 published a leave here, then the join again under
    // the first join's id).
    h.simc.fault(json!({"stale_fetches": 3})).await.unwrap();
    let summary = h.resync().await;
    assert_eq!(summary.groups_failed, 0, "{summary}");
    assert!(h.tap.collect(Duration::from_millis(800)).await.is_empty(), "a stale read published something");
    // Nor the callback path: a join whose detail stays stale for a while.
    h.simc.fault(json!({"stale_fetches": 2})).await.unwrap();
    let v = h.simc.add_member(CORP_ID, CHAT, external("wmLATE", 1700000003)).await.unwrap();
    h.callback(&callback_xml(1700000004, "update", Some("add_member"), &["wmLATE"], Some(&v))).await;
    let late = h.tap.expect(1, WAIT).await;
    assert_eq!(kinds(&late), [(EventType::MemberJoin, Some("wmLATE"), Some(1700000004))]);
    events.extend(late);
    // The real leave comes through, once.
    let v = h.simc.remove_member(CORP_ID, CHAT, "wmJOINED").await.unwrap();
    h.callback(&callback_xml(1700000005, "update", Some("del_member"), &["wmJOINED"], Some(&v))).await;
    events.extend(h.tap.expect(1, WAIT).await);
    h.resync().await;
    assert!(h.tap.collect(Duration::from_millis(800)).await.is_empty());

    let expected =
        expected_changes_create_then_joins(&[("wmJOINED".into(), 1700000001), ("wmLATE".into(), 1700000003)])
            .into_iter()
            .chain([(CHAT.to_owned(), EventType::MemberLeave, Some("wmJOINED".to_owned()), Some(1700000001))])
            .collect();
    assert_published_exactly(&events, &expected);
    assert_eq!(rebuild(&events)[CHAT], sim_members(&h.simc, CHAT).await);
    h.finish().await;
}

async fn a_crash_after_the_commit_publishes_the_stored_events(store: TestStore) {
    let halt = Arc::new(Halt::at(CrashPoint::AfterCommit));
    let mut h = Harness::start_with(store, groupwatch::app::Hooks { halt: Some(halt.clone()) }).await;
    h.callback(&callback_xml(1572505490, "create", None, &[], None)).await;
    tokio::time::timeout(WAIT, halt.fired.notified()).await.expect("the worker committed and stopped dead");
    assert!(h.tap.collect(Duration::from_millis(500)).await.is_empty(), "nothing published before the crash");
    // Meanwhile the group changed: a re-diff of a newer fetch would now see a third member. The
    // stored events are published as they were, then the change on its own.
    let v = h.simc.add_member(CORP_ID, CHAT, external("wmAFTER", 1700000100)).await.unwrap();
    h.restart(Default::default()).await;
    let first = h.tap.expect(3, WAIT).await;
    assert_eq!(first.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(first.iter().all(|e| e.member.as_ref().is_none_or(|m| m.userid != "wmAFTER")));
    h.callback(&callback_xml(1700000101, "update", Some("add_member"), &["wmAFTER"], Some(&v))).await;
    let after = h.tap.expect(1, WAIT).await;
    assert_eq!((after[0].seq, after[0].occurred_at), (4, Some(1700000101)));
    h.finish().await;
}

async fn resync_racing_a_callback_never_overwrites_it(store: TestStore) {
    let h = Harness::start(store).await;
    let mut events = h.created().await;
    // The resync's read is taken while abel is still in the group and arrives late; meanwhile
    // abel leaves and the leave's callback is queued. At 961b6d7 the resync, processing on its
    // own, saved its older read over the leave.
    h.simc.fault(json!({"answer_delay_ms": 1500, "count": 1})).await.unwrap();
    let config = h.typed_config();
    let resync = tokio::spawn(async move {
        groupwatch::app::resync_once(&config, None, &[TENANT.to_owned()], &[], Some(WAIT)).await.unwrap()
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let v = h.simc.remove_member(CORP_ID, CHAT, "abel").await.unwrap();
    h.callback(&callback_xml(1700000200, "update", Some("del_member"), &["abel"], Some(&v))).await;
    let summary = resync.await.unwrap().remove(0);
    assert_eq!(summary.groups_failed, 0);
    events.extend(h.tap.collect(Duration::from_secs(3)).await);
    let leaves: Vec<_> = events.iter().filter(|e| e.event_type == EventType::MemberLeave).collect();
    assert_eq!(leaves.len(), 1, "one leave: {events:#?}");
    assert_eq!(leaves[0].occurred_at, Some(1700000200));
    // And the store agrees: another resync finds nothing to publish.
    h.resync().await;
    events.extend(h.tap.collect(Duration::from_millis(800)).await);
    assert_eq!(events.len(), 4, "{events:#?}");
    assert_eq!(rebuild(&events)[CHAT], sim_members(&h.simc, CHAT).await);
    assert_gapless(events.iter());
    h.finish().await;
}

async fn a_member_who_leaves_and_rejoins_with_the_same_join_time_gets_new_ids(store: TestStore) {
    let h = Harness::start(store).await;
    let mut events = h.created().await;
    let mut ids = Vec::new();
    for round in 0..2 {
        let v = h.simc.add_member(CORP_ID, CHAT, external("wmBACK", 1700000300)).await.unwrap();
        h.callback(&callback_xml(1700000301 + round * 10, "update", Some("add_member"), &["wmBACK"], Some(&v))).await;
        let joined = h.tap.expect(1, WAIT).await;
        let v = h.simc.remove_member(CORP_ID, CHAT, "wmBACK").await.unwrap();
        h.callback(&callback_xml(1700000302 + round * 10, "update", Some("del_member"), &["wmBACK"], Some(&v))).await;
        let left = h.tap.expect(1, WAIT).await;
        ids.push((joined[0].id.clone(), left[0].id.clone()));
        events.extend(joined.into_iter().chain(left));
    }
    assert_ne!(ids[0].0, ids[1].0, "the second join is a new event, although WeCom kept the join_time");
    assert_ne!(ids[0].1, ids[1].1);
    assert!(!rebuild(&events)[CHAT].contains("wmBACK"), "a consumer deduplicating by id ends with the truth");
    assert_gapless(events.iter());
    h.finish().await;
}

/// Makes the store refuse to mark events published (or lets it again).
async fn refuse_marks(store: &TestStore, refuse: bool) {
    match (store, refuse) {
        (TestStore::Sqlite(_), true) => {
            store
                .exec(
                    "CREATE TRIGGER refuse_marks BEFORE UPDATE OF published_at_ms ON group_events \
                     BEGIN SELECT RAISE(ABORT, 'marks refused by the test'); END",
                )
                .await;
        }
        (TestStore::Postgres(_), true) => {
            store
                .exec(
                    "CREATE FUNCTION refuse_marks() RETURNS trigger LANGUAGE plpgsql AS \
                     $$ BEGIN RAISE EXCEPTION 'marks refused by the test'; END $$",
                )
                .await;
            store
                .exec(
                    "CREATE TRIGGER refuse_marks BEFORE UPDATE OF published_at_ms ON group_events \
                     FOR EACH ROW EXECUTE FUNCTION refuse_marks()",
                )
                .await;
        }
        (TestStore::Sqlite(_), false) => {
            store.exec("DROP TRIGGER refuse_marks").await;
        }
        (TestStore::Postgres(_), false) => {
            store.exec("DROP TRIGGER refuse_marks ON group_events").await;
        }
    }
}

/// Events the broker confirmed are marked published in the background. While the store refuses
/// the marks, this process publishes none of those events a second time (a later change of the
/// chat publishes only its own events); marks still unwritten when the worker stops are written
/// before it does.
async fn unwritten_marks_never_republish_and_are_written_at_last(store: TestStore) {
    let mut h = Harness::start(store).await;
    let mut events = h.created().await;
    let key = groupwatch::core::model::GroupKey::new(groupwatch::core::model::Provider::Wecom, TENANT, CHAT);
    let reader = groupwatch::store::connect(&h.store.url()).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !reader.unpublished(&key).await.unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the creation events were never marked published");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    refuse_marks(&h.store, true).await;
    for (i, user) in ["wmMARK1", "wmMARK2", "wmMARK3"].into_iter().enumerate() {
        let at = 1700000700 + i as i64;
        let v = h.simc.add_member(CORP_ID, CHAT, external(user, at)).await.unwrap();
        h.callback(&callback_xml(at, "update", Some("add_member"), &[user], Some(&v))).await;
        let got = h.tap.expect(1, WAIT).await;
        assert_eq!(kinds(&got), [(EventType::MemberJoin, Some(user), Some(at))]);
        events.extend(got);
    }
    events.extend(h.tap.collect(Duration::from_millis(500)).await);
    assert_gapless(events.iter());
    let unmarked = reader.unpublished(&key).await.unwrap();
    assert_eq!(unmarked.iter().map(|e| e.seq).collect::<Vec<_>>(), [4, 5, 6], "the store refused the marks");

    // Allowed again, and stopped before the marker's next try: the stop writes them.
    refuse_marks(&h.store, false).await;
    h.app.take().unwrap().stop().await;
    assert!(reader.unpublished(&key).await.unwrap().is_empty(), "marks written before the worker stopped");
    assert!(h.tap.collect(Duration::from_millis(200)).await.is_empty(), "nothing published twice");
    h.finish().await;
}

/// A chat's mark is the highest seq recorded; one write takes at most 500 chats, the rest the
/// next; a written mark is forgotten.
async fn marks_keep_the_highest_seq_and_write_at_most_500_chats_at_a_time(store: TestStore) {
    use groupwatch::core::model::{GroupKey, Provider};
    use groupwatch::worker::marks::Marks;
    let db = groupwatch::store::connect(&store.url()).await.unwrap();
    let marks = Marks::new();
    let keys: Vec<GroupKey> =
        (0..501).map(|i| GroupKey::new(Provider::Wecom, TENANT, format!("wr-mark-{i}"))).collect();
    for key in &keys {
        marks.record(key, 2);
    }
    marks.record(&keys[0], 5);
    marks.record(&keys[0], 3);
    assert_eq!(marks.published_through(&keys[0]), Some(5), "the highest seq wins");
    assert_eq!(marks.write(db.as_ref()).await, Ok(500));
    let left: Vec<_> = keys.iter().filter(|k| marks.published_through(k).is_some()).collect();
    assert_eq!(left.len(), 1, "one chat waits for the next write");
    marks.record(left[0], 7);
    assert_eq!(marks.write(db.as_ref()).await, Ok(1));
    assert_eq!(marks.write(db.as_ref()).await, Ok(0), "nothing left");
    assert!(keys.iter().all(|k| marks.published_through(k).is_none()));
    store.drop_database().await;
}

/// SQLite busy past its timeout (the test holds the write lock) while a member joins and leaves:
/// the commit computed for the join is retried as computed, so the join and then the leave are
/// published. At 961b6d7 the join was published before the save failed, the retry re-diffed a
/// newer fetch, and the leave was never published (a phantom member).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_sqlite_store_delays_but_never_drops_a_change() {
    use sqlx::Connection;
    let h = Harness::start(TestStore::sqlite().await).await;
    let mut events = h.created().await;
    let mut lock = sqlx::SqliteConnection::connect(&h.store.url()).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE").execute(&mut lock).await.unwrap();

    let v = h.simc.add_member(CORP_ID, CHAT, external("wmPHANTOM", 1700000400)).await.unwrap();
    h.callback(&callback_xml(1700000401, "update", Some("add_member"), &["wmPHANTOM"], Some(&v))).await;
    // Longer than the store's 5 s busy timeout: the first commit fails.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(h.tap.collect(Duration::from_millis(100)).await.is_empty(), "nothing published before it is stored");
    let v = h.simc.remove_member(CORP_ID, CHAT, "wmPHANTOM").await.unwrap();
    h.callback(&callback_xml(1700000402, "update", Some("del_member"), &["wmPHANTOM"], Some(&v))).await;
    sqlx::query("ROLLBACK").execute(&mut lock).await.unwrap();

    let got = h.tap.expect(2, WAIT).await;
    assert_eq!(
        kinds(&got),
        [
            (EventType::MemberJoin, Some("wmPHANTOM"), Some(1700000401)),
            (EventType::MemberLeave, Some("wmPHANTOM"), Some(1700000402))
        ]
    );
    events.extend(got);
    assert_gapless(events.iter());
    assert_eq!(rebuild(&events)[CHAT], sim_members(&h.simc, CHAT).await);
    h.finish().await;
}

/// Two renames in one second carry the same dedupe key (same time, same versions, no members);
/// the second must be processed all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_renames_in_one_second_are_both_applied() {
    let h = Harness::start(TestStore::sqlite().await).await;
    h.created().await;
    for name in ["第一个名字", "第二个名字"] {
        h.simc.patch_group(CORP_ID, CHAT, json!({ "name": name })).await.unwrap();
        h.callback(&callback_xml(
            1700000500,
            "update",
            Some("change_name"),
            &[],
            Some("71217227bbd112ecfe3a49c482195cb4"),
        ))
        .await;
        let ev = h.tap.expect(1, WAIT).await;
        assert_eq!((ev[0].event_type, ev[0].group.name.as_str()), (EventType::GroupUpdate, name));
    }
    h.finish().await;
}

/// A dismiss is believed once a fetch shows the group gone; one that WeCom's API never confirms
/// is parked with its reason, and nothing is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dismiss_is_confirmed_by_a_fetch() {
    let h = Harness::start(TestStore::sqlite().await).await;
    h.created().await;
    h.callback(&callback_xml(1700000600, "dismiss", None, &[], None)).await;
    let dead = h.topology.dead_letter_queue();
    let deadline = tokio::time::Instant::now() + WAIT;
    while queue_len(&h.conn, &dead).await == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the unconfirmed dismiss reached {dead}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(h.tap.collect(Duration::from_millis(300)).await.is_empty(), "an unconfirmed dismiss publishes nothing");
    let reason = dead_letter_reason(&h.conn, &dead).await;
    assert!(reason.contains("still exists"), "{reason}");

    h.simc.dismiss_group(CORP_ID, CHAT).await.unwrap();
    h.callback(&callback_xml(1700000601, "dismiss", None, &[], None)).await;
    let ev = h.tap.expect(3, WAIT).await;
    assert_eq!(ev[2].event_type, EventType::GroupDismiss);
    assert_eq!(ev.iter().map(|e| e.seq).collect::<Vec<_>>(), [4, 5, 6]);
    h.finish().await;
}

/// Reads the reason header of the first dead letter (and leaves it there).
async fn dead_letter_reason(conn: &lapin::Connection, dead: &str) -> String {
    let ch = conn.create_channel().await.unwrap();
    let msg = ch.basic_get(dead, lapin::options::BasicGetOptions::default()).await.unwrap().unwrap();
    let headers = msg.delivery.properties.headers().clone().unwrap();
    let reason = match headers.inner().get("x-groupwatch-reason") {
        Some(lapin::types::AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        other => panic!("reason header: {other:?}"),
    };
    msg.delivery.acker.nack(lapin::options::BasicNackOptions { requeue: true, ..Default::default() }).await.unwrap();
    reason
}

async fn wait_dead_letter(h: &Harness) -> String {
    let dead = h.topology.dead_letter_queue();
    let deadline = tokio::time::Instant::now() + WAIT;
    while queue_len(&h.conn, &dead).await == 0 {
        assert!(tokio::time::Instant::now() < deadline, "nothing reached {dead}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    dead_letter_reason(&h.conn, &dead).await
}

/// Work for a tenant this deployment does not serve is parked, not processed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_for_an_unknown_tenant_is_parked() {
    let h = Harness::start(TestStore::sqlite().await).await;
    let item = InboundEvent::request(Work::Reconcile, groupwatch::core::model::Provider::Wecom, "ghost", CHAT, 1);
    let body = serde_json::to_vec(&InboundBatch::new(vec![item])).unwrap();
    let ch = h.conn.create_channel().await.unwrap();
    let queue = h.topology.inbound_queue(h.topology.shard_for(CHAT));
    ch.basic_publish("", &queue, Default::default(), &body, Default::default()).await.unwrap().await.unwrap();
    let reason = wait_dead_letter(&h).await;
    assert!(reason.contains("\"ghost\" is not configured"), "{reason}");
    assert_eq!(h.simc.stats().await.unwrap().groupchat_get, 0, "no API call for it");
    h.finish().await;
}

/// An inbound message queued by the previous release (WeCom's parsed callback, no `v`) is still
/// processed after an upgrade.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_queued_by_the_previous_release_is_processed() {
    let h = Harness::start(TestStore::sqlite().await).await;
    let body = json!({"events": [{
        "provider": "wecom", "tenant": TENANT, "received_at_ms": 1, "key": "0123456789abcdef0123456789abcdef",
        "event": {"create_time": 1572505490, "chat_id": CHAT, "change_type": "create"}
    }]});
    let ch = h.conn.create_channel().await.unwrap();
    let queue = h.topology.inbound_queue(h.topology.shard_for(CHAT));
    let body = serde_json::to_vec(&body).unwrap();
    ch.basic_publish("", &queue, Default::default(), &body, Default::default()).await.unwrap().await.unwrap();
    let ev = h.tap.expect(3, WAIT).await;
    assert_eq!(ev[0].event_type, EventType::GroupCreate);
    h.finish().await;
}

/// A chat whose data the store refuses for good (PostgreSQL takes no NUL byte in text) spends
/// the retry budget and is parked with the reason; other chats carry on. Likewise an API answer
/// about another chat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_the_store_refuses_is_parked_and_others_carry_on() {
    let h = Harness::start(TestStore::postgres().await).await;
    h.created().await;
    h.simc.patch_group(CORP_ID, CHAT, json!({"name": "bad\u{0}name"})).await.unwrap();
    h.callback(&callback_xml(1700000700, "update", Some("change_name"), &[], None)).await;
    let reason = wait_dead_letter(&h).await;
    assert!(reason.contains("store"), "{reason}");
    assert!(h.tap.collect(Duration::from_millis(300)).await.is_empty());
    // A wrong answer: the API names another chat.
    h.simc.patch_group(CORP_ID, CHAT, json!({"name": "good name"})).await.unwrap();
    h.simc.fault(json!({"wrong_chat_id": 100})).await.unwrap();
    h.callback(&callback_xml(1700000701, "update", Some("change_name"), &[], None)).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while queue_len(&h.conn, &h.topology.dead_letter_queue()).await < 2 {
        assert!(tokio::time::Instant::now() < deadline, "the wrong answer was parked");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    h.simc.clear_faults().await.unwrap();
    h.callback(&callback_xml(1700000702, "update", Some("change_name"), &[], None)).await;
    let ev = h.tap.expect(1, WAIT).await;
    assert_eq!(ev[0].group.name, "good name");
    h.finish().await;
}

/// A deleted inbound queue is declared again: intake and processing resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_inbound_queue_is_declared_again() {
    let h = Harness::start(TestStore::sqlite().await).await;
    h.created().await;
    let ch = h.conn.create_channel().await.unwrap();
    let queue = h.topology.inbound_queue(h.topology.shard_for(CHAT));
    ch.queue_delete(&queue, Default::default()).await.unwrap();
    let v = h.simc.add_member(CORP_ID, CHAT, external("wmAGAIN", 1700000800)).await.unwrap();
    h.callback(&callback_xml(1700000801, "update", Some("add_member"), &["wmAGAIN"], Some(&v))).await;
    let ev = h.tap.expect(1, WAIT).await;
    assert_eq!(kinds(&ev), [(EventType::MemberJoin, Some("wmAGAIN"), Some(1700000801))]);
    // Every shard has its consumer again.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let ready = reqwest::get(h.app().ops_url("/readyz")).await.unwrap();
        if ready.status() == 200 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "/readyz: {}", ready.text().await.unwrap());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    h.finish().await;
}

/// A broker that stops confirming for longer than `amqp.confirm_timeout_ms` delays the events; it
/// does not tear down the connection (961b6d7 reconnected on every confirm timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirm_timeout_is_retried_on_the_same_connection() {
    let proxy = Proxy::start("127.0.0.1:5672".parse().unwrap()).await;
    let url = proxy.amqp_url();
    let h = Harness::start_custom(TestStore::sqlite().await, Default::default(), move |exchange, store, api_base| {
        pipeline_test_config(exchange, store, api_base).amqp_url(&url).amqp_value("confirm_timeout_ms", 500).toml()
    })
    .await;
    h.created().await;
    let connections = proxy.forwarded();
    // The worker is slow to fetch; the broker stops answering while it publishes.
    h.simc.fault(json!({"latency_ms": 600})).await.unwrap();
    let v = h.simc.add_member(CORP_ID, CHAT, external("wmSTALL", 1700000900)).await.unwrap();
    h.callback(&callback_xml(1700000901, "update", Some("add_member"), &["wmSTALL"], Some(&v))).await;
    proxy.stall();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    proxy.resume();
    let got = h.tap.collect(Duration::from_secs(5)).await;
    assert!(!got.is_empty() && got.iter().all(|e| e.member.as_ref().unwrap().userid == "wmSTALL"), "{got:#?}");
    assert!(got.iter().all(|e| e.id == got[0].id), "retries publish the stored event: one id");
    assert_eq!(proxy.forwarded(), connections, "no new connection to the broker");
    h.finish().await;
}

/// Idle chats release their actors: the map of actors does not grow with every chat ever seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_chats_release_their_actors() {
    let chats: Vec<String> = (0..12).map(|i| format!("wrIDLE{i:02}")).collect();
    let chat_refs: Vec<&str> = chats.iter().map(String::as_str).collect();
    let sim = groupwatch::sim::spawn(sim_state_with_chats(&chat_refs), "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let exchange = unique_exchange();
    let store = TestStore::sqlite().await;
    let config = pipeline_test_config(&exchange, &store, &sim.base_url()).worker_value("actor_idle_secs", 1).toml();
    let app = spawn_app(&config).await;
    let conn = amqp().await;
    let tap = Tap::new(&conn, &exchange).await;
    let replayer =
        groupwatch::tools::replay::Replayer::wecom(app.config.tenant(TENANT).unwrap(), &app.callback_url(TENANT))
            .unwrap();
    let actors = || async {
        let text = reqwest::get(app.ops_url("/metrics")).await.unwrap().text().await.unwrap();
        text.lines()
            .find(|l| l.starts_with("groupwatch_chat_actors "))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let before = actors().await;
    for chat in &chats {
        let xml = callback_xml_for(chat, 1572505490, "create", None, &[], None);
        assert_eq!(replayer.post(xml.as_bytes()).await.unwrap(), 200);
    }
    tap.expect(36, WAIT).await;
    assert!(actors().await >= before + 1.0, "actors were running");
    // The gauge is process-wide (other tests run alongside): wait until ours are gone.
    let deadline = tokio::time::Instant::now() + WAIT;
    while actors().await > before {
        assert!(tokio::time::Instant::now() < deadline, "idle actors still held: {}", actors().await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    app.stop().await;
    cleanup(&conn, &app_topology(&config)).await;
    drop(sim);
}

fn app_topology(config: &str) -> groupwatch::queue::broker::Topology {
    groupwatch::queue::broker::Topology::from_config(
        &groupwatch::config::Config::from_toml(config, std::iter::empty()).unwrap().amqp,
    )
}
