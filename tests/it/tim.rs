//! Tencent Cloud IM end to end: the simulator changes groups and sends its after-callbacks to the
//! running app, which fetches the groups back from the simulator's REST API (UserSig checked),
//! stores them (SQLite and PostgreSQL) and publishes to the real RabbitMQ.

use crate::common::tim::*;
use crate::common::*;
use groupwatch::core::model::{EventType, Provider, Role};
use groupwatch::sim::{TimEventTime, TimExitType, TimJoinType, TimNotify};
use serde_json::json;
use std::time::Duration;

with_both_stores!(
    lifecycle_create_join_quit_kicked_info_destroy,
    destroy_of_a_group_never_seen_takes_its_member_list,
    duplicate_callbacks_publish_one_id,
    bad_callbacks_are_refused_and_publish_nothing,
    burst_over_60_chats_costs_at_most_4_group_info_calls,
    resync_finds_changes_that_sent_no_callback,
    big_group_is_paged_and_api_faults_are_retried,
    stale_read_is_not_believed_and_an_expired_usersig_is_renewed,
);

/// A callback query, as [`tim_query`] builds it.
type Query = Vec<(&'static str, String)>;

fn cb() -> TimNotify {
    TimNotify::callback()
}

async fn lifecycle_create_join_quit_kicked_info_destroy(store: TestStore) {
    let h = TimHarness::start(store, vec![]).await;
    let sim = &h.simc;

    // Created with the owner and two members: group.create, then a join each.
    let group = tim_group(GROUP, "leckie", &["bob", "peter"]);
    let created = sent(&sim.tim_put_group(TIM_APP, GROUP, group, &cb()).await.unwrap());
    let at = event_secs(&created);
    let events = h.tap.expect(4, WAIT).await;
    assert_eq!(
        kinds(&events),
        [
            (EventType::GroupCreate, None, Some(at)),
            (EventType::MemberJoin, Some("bob"), Some(at)),
            (EventType::MemberJoin, Some("leckie"), Some(at)),
            (EventType::MemberJoin, Some("peter"), Some(at)),
        ]
    );
    assert!(events.iter().all(|e| e.provider == Provider::Tim && e.tenant == TIM_TENANT && e.chat_id == GROUP));
    assert_eq!(events[0].routing_key(), format!("tim.{TIM_TENANT}.group.create"));
    assert_eq!((events[0].group.name.as_str(), events[0].group.owner.as_str()), ("group @TGS#2J4SZEAEL", "leckie"));
    assert_eq!(events[0].group.member_count, 3);
    let leckie = events[2].member.as_ref().unwrap();
    assert_eq!((leckie.role, leckie.join_time), (Some(Role::Owner), Some(GROUP_CREATE_TIME)));
    assert_eq!(events[1].member.as_ref().unwrap().role, Some(Role::Member));

    // A join, EventTime as a string.
    let change = sim
        .tim_add_members(
            TIM_APP,
            GROUP,
            json!([{"Member_Account": "jared", "JoinTime": 1_700_000_000}, {"Member_Account": "tommy", "Role": "Admin"}]),
            TimJoinType::Invited,
            &cb().event_time(TimEventTime::String),
        )
        .await
        .unwrap();
    let body = sent(&change);
    assert!(body["EventTime"].is_string());
    let joined = h.tap.expect(2, WAIT).await;
    let at = event_secs(&body);
    assert_eq!(
        kinds(&joined),
        [(EventType::MemberJoin, Some("jared"), Some(at)), (EventType::MemberJoin, Some("tommy"), Some(at))]
    );
    assert_eq!(joined[0].member.as_ref().unwrap().join_time, Some(1_700_000_000));
    assert_eq!(joined[1].member.as_ref().unwrap().role, Some(Role::Admin));
    assert_eq!(joined[1].group.member_count, 5);

    // Quit → quit_scene 0; Kicked → quit_scene 1.
    let quit = sent(&sim.tim_remove_members(TIM_APP, GROUP, &["jared"], TimExitType::Quit, &cb()).await.unwrap());
    let left = h.tap.expect(1, WAIT).await;
    assert_eq!(kinds(&left), [(EventType::MemberLeave, Some("jared"), Some(event_secs(&quit)))]);
    assert_eq!(left[0].quit_scene, Some(0));
    assert_eq!(left[0].member.as_ref().unwrap().join_time, Some(1_700_000_000), "the last-known details");
    let kick =
        sent(&sim.tim_remove_members(TIM_APP, GROUP, &["bob", "tommy"], TimExitType::Kicked, &cb()).await.unwrap());
    let kicked = h.tap.expect(2, WAIT).await;
    let at = event_secs(&kick);
    assert_eq!(
        kinds(&kicked),
        [(EventType::MemberLeave, Some("bob"), Some(at)), (EventType::MemberLeave, Some("tommy"), Some(at))]
    );
    assert!(kicked.iter().all(|e| e.quit_scene == Some(1)));

    // Name and notification: one group.update naming both; an introduction alone publishes nothing.
    let info = sent(
        &sim.tim_patch_group(TIM_APP, GROUP, json!({"Name": "renamed", "Notification": "be nice"}), &cb())
            .await
            .unwrap(),
    );
    let updated = h.tap.expect(1, WAIT).await;
    assert_eq!(kinds(&updated), [(EventType::GroupUpdate, None, Some(event_secs(&info)))]);
    assert_eq!(updated[0].changes.as_deref(), Some(&["name".to_owned(), "notice".to_owned()][..]));
    assert_eq!(updated[0].group.name, "renamed");
    sent(&sim.tim_patch_group(TIM_APP, GROUP, json!({"Introduction": "about us"}), &cb()).await.unwrap());
    assert!(h.tap.collect(Duration::from_secs(1)).await.is_empty(), "an introduction is not published");

    // Destroyed: a leave per remaining member (leckie, peter), then group.dismiss.
    let destroyed = sent(&sim.tim_destroy_group(TIM_APP, GROUP, &cb()).await.unwrap());
    let at = event_secs(&destroyed);
    let gone = h.tap.expect(3, WAIT).await;
    assert_eq!(
        kinds(&gone),
        [
            (EventType::MemberLeave, Some("leckie"), Some(at)),
            (EventType::MemberLeave, Some("peter"), Some(at)),
            (EventType::GroupDismiss, None, Some(at)),
        ]
    );
    let seqs: Vec<i64> = gone.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [11, 12, 13], "the chat's events are numbered without a gap");
    h.finish().await;
}

async fn destroy_of_a_group_never_seen_takes_its_member_list(store: TestStore) {
    let h = TimHarness::start(store, vec![tim_group(GROUP, "leckie", &["peter"])]).await;
    let destroyed = sent(&h.simc.tim_destroy_group(TIM_APP, GROUP, &cb()).await.unwrap());
    let at = event_secs(&destroyed);
    let listed: Vec<&str> =
        destroyed["MemberList"].as_array().unwrap().iter().map(|m| m["Member_Account"].as_str().unwrap()).collect();
    assert_eq!(listed.len(), 2, "{destroyed}");
    let gone = h.tap.expect(3, WAIT).await;
    assert_eq!(
        kinds(&gone),
        [
            (EventType::MemberLeave, Some("leckie"), Some(at)),
            (EventType::MemberLeave, Some("peter"), Some(at)),
            (EventType::GroupDismiss, None, Some(at)),
        ]
    );
    h.finish().await;
}

async fn duplicate_callbacks_publish_one_id(store: TestStore) {
    let h = TimHarness::start(store, vec![tim_group(GROUP, "leckie", &["peter"])]).await;
    // The member joins behind the callback's back (no callback), then the same callback comes
    // three times: twice the very same request, once re-signed a second later (a resend).
    h.simc
        .tim_add_members(
            TIM_APP,
            GROUP,
            json!([{"Member_Account": "jared"}]),
            TimJoinType::Apply,
            &TimNotify::default(),
        )
        .await
        .unwrap();
    let event_ms = unix_now() * 1000 + 123;
    let body = json!({"CallbackCommand": "Group.CallbackAfterNewMemberJoin", "GroupId": GROUP, "Type": "Public",
        "JoinType": "Apply", "Operator_Account": "jared", "NewMemberList": [{"Member_Account": "jared"}],
        "EventTime": event_ms});
    let query = tim_query("Group.CallbackAfterNewMemberJoin", unix_now());
    let ok = r#"{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}"#.to_owned();
    assert_eq!(h.post(&query, body.to_string().as_bytes()).await, (200, ok.clone()));
    assert_eq!(h.post(&query, body.to_string().as_bytes()).await, (200, ok.clone()), "a replay is answered too");
    let joined = h.tap.expect(1, WAIT).await;
    assert_eq!(kinds(&joined), [(EventType::MemberJoin, Some("jared"), Some(event_ms / 1000))]);
    let resent = tim_query("Group.CallbackAfterNewMemberJoin", unix_now() + 1);
    assert_eq!(h.post(&resent, body.to_string().as_bytes()).await, (200, ok));
    assert!(h.tap.collect(Duration::from_secs(2)).await.is_empty(), "a resend publishes no new id");
    h.finish().await;
}

async fn bad_callbacks_are_refused_and_publish_nothing(store: TestStore) {
    let h = TimHarness::start(store, vec![tim_group(GROUP, "leckie", &["peter"])]).await;
    let body = json!({"CallbackCommand": "Group.CallbackAfterMemberExit", "GroupId": GROUP, "Type": "Public",
        "ExitType": "Quit", "Operator_Account": "peter", "ExitMemberList": [{"Member_Account": "peter"}],
        "EventTime": unix_now() * 1000})
    .to_string();
    let command = "Group.CallbackAfterMemberExit";
    let now = unix_now();
    let set = |mut q: Query, key: &str, value: String| {
        q.iter_mut().find(|(k, _)| *k == key).unwrap().1 = value;
        q
    };
    let without =
        |q: Vec<(&'static str, String)>, key: &str| q.into_iter().filter(|(k, _)| *k != key).collect::<Vec<_>>();
    let cases: Vec<(&str, Query, String, u16)> = vec![
        ("bad Sign", set(tim_query(command, now), "Sign", tim_sign("another-token", now)), body.clone(), 401),
        ("no Sign", without(tim_query(command, now), "Sign"), body.clone(), 401),
        ("no RequestTime", without(tim_query(command, now), "RequestTime"), body.clone(), 401),
        ("stale RequestTime", tim_query(command, now - 120), body.clone(), 401),
        ("future RequestTime", tim_query(command, now + 120), body.clone(), 401),
        ("wrong SdkAppid", set(tim_query(command, now), "SdkAppid", (TIM_APP + 1).to_string()), body.clone(), 400),
        ("malformed JSON", tim_query(command, now), "{\"CallbackCommand\": ".into(), 400),
        ("no GroupId", tim_query(command, now), body.replace("\"GroupId\"", "\"Group\""), 400),
    ];
    for (what, query, body, status) in cases {
        let (got, answer) = h.post(&query, body.as_bytes()).await;
        assert_eq!(got, status, "{what}: {answer}");
        assert!(!answer.contains("ActionStatus"), "{what}: {answer}");
    }
    let unknown = h.http.post(h.app().url("/tim/nobody/callback")).query(&tim_query(command, now)).body(body.clone());
    assert_eq!(unknown.send().await.unwrap().status(), 404);
    // Another command: answered OK, never queued.
    let other =
        json!({"CallbackCommand": "Group.CallbackAfterSendMsg", "GroupId": GROUP, "EventTime": unix_now() * 1000});
    let (status, answer) = h.post_signed(&other).await;
    assert_eq!((status, answer.contains("\"OK\"")), (200, true));

    assert!(h.tap.collect(Duration::from_secs(2)).await.is_empty(), "nothing published");
    let stats = h.simc.tim_stats().await.unwrap();
    assert_eq!(stats.get_group_info, 0, "nothing was queued, so nothing was fetched");
    h.finish().await;
}

async fn burst_over_60_chats_costs_at_most_4_group_info_calls(store: TestStore) {
    let ids: Vec<String> = (0..60).map(|i| format!("@TGS#BURST{i:03}")).collect();
    let groups = ids.iter().map(|id| tim_group(id, "owner", &["first"])).collect();
    let h = TimHarness::start(store, groups).await;
    h.simc.tim_reset_stats().await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for id in &ids {
        let simc = h.simc.clone();
        let id = id.clone();
        tasks.spawn(async move {
            let change = simc
                .tim_add_members(TIM_APP, &id, json!([{"Member_Account": "newcomer"}]), TimJoinType::Invited, &cb())
                .await
                .unwrap();
            sent(&change);
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while events.len() < 60 && tokio::time::Instant::now() < deadline {
        events.extend(h.tap.collect(Duration::from_millis(300)).await);
    }
    events.extend(h.tap.collect(Duration::from_millis(500)).await);
    assert_eq!(events.len(), 60, "one join per chat: {:?}", kinds(&events));
    let chats: std::collections::BTreeSet<&str> = events.iter().map(|e| e.chat_id.as_str()).collect();
    assert_eq!(chats.len(), 60);
    assert!(events
        .iter()
        .all(|e| e.event_type == EventType::MemberJoin && e.member.as_ref().unwrap().userid == "newcomer"));
    let stats = h.simc.tim_stats().await.unwrap();
    let asked: usize = stats.get_group_info_batches.iter().map(Vec::len).sum();
    eprintln!(
        "get_group_info batch sizes: {:?}",
        stats.get_group_info_batches.iter().map(Vec::len).collect::<Vec<_>>()
    );
    assert!(
        stats.get_group_info <= 4,
        "{} get_group_info calls for 60 chats: {:?}",
        stats.get_group_info,
        stats.get_group_info_batches.iter().map(Vec::len).collect::<Vec<_>>()
    );
    assert!(asked >= 60 && stats.get_group_info_batches.iter().all(|b| b.len() <= 50), "{asked}");
    h.finish().await;
}

async fn resync_finds_changes_that_sent_no_callback(store: TestStore) {
    let h = TimHarness::start(store, vec![]).await;
    sent(&h.simc.tim_put_group(TIM_APP, GROUP, tim_group(GROUP, "leckie", &["peter"]), &cb()).await.unwrap());
    h.tap.expect(3, WAIT).await;
    // Behind the service's back: a join, a kick, a rename; and a group it never heard of.
    let quiet = TimNotify::default();
    h.simc
        .tim_add_members(
            TIM_APP,
            GROUP,
            json!([{"Member_Account": "ghost", "JoinTime": 1_700_000_500}]),
            TimJoinType::Apply,
            &quiet,
        )
        .await
        .unwrap();
    h.simc.tim_remove_members(TIM_APP, GROUP, &["peter"], TimExitType::Kicked, &quiet).await.unwrap();
    h.simc.tim_patch_group(TIM_APP, GROUP, json!({"Name": "quietly renamed"}), &quiet).await.unwrap();
    h.simc.tim_put_group(TIM_APP, "@TGS#UNSEEN", tim_group("@TGS#UNSEEN", "zed", &["amy"]), &quiet).await.unwrap();

    let config = h.typed_config();
    let summaries =
        groupwatch::app::resync_once(&config, Some(Provider::Tim), &[TIM_TENANT.to_owned()], &[], Some(WAIT))
            .await
            .unwrap();
    assert_eq!(summaries.len(), 1);
    assert_eq!(summaries[0].groups_scanned, 2, "{}", summaries[0]);
    assert_eq!(summaries[0].groups_failed, 0, "{}", summaries[0]);
    let mut events = h.tap.collect(Duration::from_secs(2)).await;
    events.sort_by_key(|e| (e.event_type as u8, e.member.as_ref().map(|m| m.userid.clone())));
    assert_eq!(
        kinds(&events),
        [
            (EventType::MemberJoin, Some("ghost"), None),
            (EventType::MemberLeave, Some("peter"), None),
            (EventType::GroupUpdate, None, None),
        ],
        "the unseen group is a baseline: nothing published for it"
    );
    assert!(events.iter().all(|e| e.chat_id == GROUP));
    assert_eq!(events[0].member.as_ref().unwrap().join_time, Some(1_700_000_500));
    assert_eq!(events[1].quit_scene, None, "no callback said how peter left");
    assert!(h.simc.tim_stats().await.unwrap().get_appid_group_list >= 1);
    h.finish().await;
}

async fn big_group_is_paged_and_api_faults_are_retried(store: TestStore) {
    // 250 members: more than get_group_info lists (the simulator's cap is 100), so the member list
    // comes from get_group_member_info pages.
    let others: Vec<String> = (1..250).map(|i| format!("user{i:03}")).collect();
    let refs: Vec<&str> = others.iter().map(String::as_str).collect();
    let h = TimHarness::start(store, vec![tim_group(GROUP, "user000", &refs)]).await;
    h.simc.tim_reset_stats().await.unwrap();
    // A frequency limit, then an internal error: both retried; neither loses the join.
    h.simc.tim_fault(json!({"error_code": 10006, "count": 1, "api": "get_group_info"})).await.unwrap();
    h.simc.tim_fault(json!({"error_code": 10002, "count": 1, "api": "get_group_member_info"})).await.unwrap();
    let body = sent(
        &h.simc
            .tim_add_members(TIM_APP, GROUP, json!([{"Member_Account": "late"}]), TimJoinType::Invited, &cb())
            .await
            .unwrap(),
    );
    let joined = h.tap.expect(1, WAIT).await;
    assert_eq!(kinds(&joined), [(EventType::MemberJoin, Some("late"), Some(event_secs(&body)))]);
    assert_eq!(joined[0].group.member_count, 251, "the whole list, not get_group_info's first 100");
    let stats = h.simc.tim_stats().await.unwrap();
    assert!(stats.get_group_info >= 2, "the rate-limited call was made again: {stats:?}");
    assert!(stats.get_group_member_info >= 3, "251 members in pages of 100: {stats:?}");
    assert_eq!(stats.auth_refused, 0, "every UserSig was accepted");
    h.finish().await;
}

/// `groupwatch replay` plays Tencent IM: every callback fixture, signed by the tenant's codec, is
/// accepted by the running app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_signs_tim_fixtures() {
    let h = TimHarness::start(TestStore::sqlite().await, vec![]).await;
    let config = h.typed_config();
    let replayer =
        groupwatch::tools::replay::Replayer::for_tenant(&config, Some(Provider::Tim), TIM_TENANT, &h.callback_url())
            .unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tim");
    let mut played = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !name.starts_with("after_") {
            continue;
        }
        assert_eq!(replayer.post_file(&path).await.unwrap(), 200, "{name}");
        played += 1;
    }
    assert_eq!(played, 10);
    let direct = groupwatch::tools::replay::Replayer::tim(&config.tim[0], &h.callback_url()).unwrap();
    let other = br#"{"CallbackCommand":"Group.CallbackAfterSendMsg","GroupId":"g","EventTime":1}"#;
    assert_eq!(direct.post(other).await.unwrap(), 200);
    h.finish().await;
}

async fn stale_read_is_not_believed_and_an_expired_usersig_is_renewed(store: TestStore) {
    let h = TimHarness::start(store, vec![]).await;
    sent(&h.simc.tim_put_group(TIM_APP, GROUP, tim_group(GROUP, "leckie", &["peter"]), &cb()).await.unwrap());
    h.tap.expect(3, WAIT).await;
    // The next read answers the group as it was before the join (a lagging replica): it must not
    // be diffed (it would show no join), only read again.
    h.simc.tim_fault(json!({"stale_fetches": 1})).await.unwrap();
    let body = sent(
        &h.simc
            .tim_add_members(TIM_APP, GROUP, json!([{"Member_Account": "jared"}]), TimJoinType::Apply, &cb())
            .await
            .unwrap(),
    );
    let joined = h.tap.expect(1, WAIT).await;
    assert_eq!(kinds(&joined), [(EventType::MemberJoin, Some("jared"), Some(event_secs(&body)))]);
    let stats = h.simc.tim_stats().await.unwrap();
    assert!(stats.get_group_info >= 3, "create, the stale read, the read again: {stats:?}");

    // Tencent now refuses every UserSig made before this second (70001): the client makes a new
    // one and the call goes through.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    h.simc.tim_fault(json!({"expire_usersig_before": unix_now()})).await.unwrap();
    let body = sent(&h.simc.tim_remove_members(TIM_APP, GROUP, &["peter"], TimExitType::Quit, &cb()).await.unwrap());
    let left = h.tap.expect(1, WAIT).await;
    assert_eq!(kinds(&left), [(EventType::MemberLeave, Some("peter"), Some(event_secs(&body)))]);
    assert_eq!(h.simc.tim_stats().await.unwrap().auth_refused, 1, "one refusal, then a fresh UserSig");
    h.finish().await;
}
