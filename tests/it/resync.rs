//! Reconciliation against the simulator: changes made behind the service's back (no callback)
//! are found and published with `occurred_at: null`; first-seen groups are baselines. `resync`
//! queues its requests to the inbound shards; a running `serve` worker processes them.

use crate::common::*;
use groupwatch::app::resync_once;
use groupwatch::config::Config;
use groupwatch::core::model::EventType;
use groupwatch::sim::{self, SimClient, SimState};
use serde_json::json;
use std::time::Duration;

fn group(chat_id: &str, owner: &str, members: &[&str]) -> serde_json::Value {
    json!({
        "chat_id": chat_id, "name": format!("群 {chat_id}"), "owner": owner, "create_time": 1600000000,
        "member_list": members.iter().enumerate().map(|(i, u)| json!({
            "userid": u, "type": 2, "join_time": 1600000000 + i as i64, "join_scene": 1, "name": format!("客户 {u}")
        })).collect::<Vec<_>>(),
    })
}

/// Five groups, owned by owner_000, owner_001, owner_002, owner_120 and owner_149.
fn state() -> SimState {
    let groups = vec![
        group("wrGROUP0", "owner_000", &["alice", "bob"]),
        group("wrGROUP1", "owner_001", &["carol"]),
        group("wrGROUP2", "owner_002", &["dave"]),
        group("wrGROUP3", "owner_120", &["erin"]),
        group("wrGROUP4", "owner_149", &["frank", "grace"]),
    ];
    serde_json::from_value(json!({"corps": [{"corp_id": CORP_ID, "secret": "test-secret", "groups": groups}]})).unwrap()
}

fn config_toml(exchange: &str, dir: &tempfile::TempDir, api_base: &str, page_size: u32) -> String {
    let store = format!("sqlite://{}", dir.path().join("gw.db").display());
    TestConfig::new(exchange, &store)
        .with_worker()
        .worker_value("coalesce_ms", 50)
        .worker_value("confirm_delay_ms", 150)
        .wecom_api(api_base)
        .section(&format!("[resync]\npage_size = {page_size}\n"))
        .toml()
}

fn config(exchange: &str, dir: &tempfile::TempDir, api_base: &str, page_size: u32) -> Config {
    Config::from_toml(&config_toml(exchange, dir, api_base, page_size), std::iter::empty()).unwrap()
}

const WAIT: Option<Duration> = Some(Duration::from_secs(20));

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resync_publishes_exactly_the_changes_made_behind_the_services_back() {
    let sim = sim::spawn(state(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let simc = SimClient::new(sim.base_url());
    let exchange = unique_exchange();
    let dir = tempfile::tempdir().unwrap();
    let config = config(&exchange, &dir, &sim.base_url(), 2);
    let app = spawn_app(&config_toml(&exchange, &dir, &sim.base_url(), 2)).await;
    let tenants = vec![TENANT.to_string()];

    // First resync: every group is new, so each is a baseline and nothing is published.
    let first = resync_once(&config, None, &tenants, &[], WAIT).await.unwrap();
    assert_eq!((first[0].groups_scanned, first[0].events_published, first[0].groups_failed), (5, 0, 0));
    let conn = amqp().await;
    let tap = Tap::new(&conn, &exchange).await;

    // Changes made through WeCom's API send no callback.
    simc.add_member(CORP_ID, "wrGROUP0", json!({"userid": "zoe", "type": 2, "join_time": 1700000000, "join_scene": 3}))
        .await
        .unwrap();
    simc.remove_member(CORP_ID, "wrGROUP0", "alice").await.unwrap();
    simc.patch_group(CORP_ID, "wrGROUP2", json!({"name": "renamed"})).await.unwrap();
    simc.reset_stats().await.unwrap();

    let second = resync_once(&config, None, &tenants, &[], WAIT).await.unwrap();
    assert_eq!((second[0].groups_scanned, second[0].events_published), (5, 3));
    let mut events = tap.expect(3, Duration::from_secs(10)).await;
    events.sort_by_key(|e| (e.chat_id.clone(), e.event_type.as_str()));
    let seen: Vec<_> = events
        .iter()
        .map(|e| (e.chat_id.as_str(), e.event_type, e.member.as_ref().map(|m| m.userid.as_str()), e.occurred_at))
        .collect();
    assert_eq!(
        seen,
        [
            ("wrGROUP0", EventType::MemberJoin, Some("zoe"), None),
            ("wrGROUP0", EventType::MemberLeave, Some("alice"), None),
            ("wrGROUP2", EventType::GroupUpdate, None, None),
        ]
    );
    assert_eq!(events[1].member.as_ref().unwrap().name.as_deref(), Some("客户 alice"), "last-known details");
    // Numbered in each chat's history after the baseline: wrGROUP0's leave (1), then its join (2).
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 1, 1]);
    // 5 groups in pages of 2: three list calls; five gets, and a second, confirming read of each
    // group that showed a change nothing had reported (wrGROUP0, wrGROUP2).
    let stats = simc.stats().await.unwrap();
    assert_eq!((stats.groupchat_list, stats.groupchat_get), (3, 7));
    assert_eq!(second[0].api_calls, stats.groupchat_list + stats.gettoken, "the listing's calls");

    // Nothing changed since: a third resync publishes nothing.
    let third = resync_once(&config, None, &tenants, &[], WAIT).await.unwrap();
    assert_eq!((third[0].groups_scanned, third[0].events_published), (5, 0));
    assert!(tap.collect(Duration::from_millis(500)).await.is_empty());
    app.stop().await;
    cleanup(&conn, &groupwatch::queue::broker::Topology::from_config(&config.amqp)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_filter_is_sent_in_batches_of_at_most_100() {
    let sim = sim::spawn(state(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let simc = SimClient::new(sim.base_url());
    let exchange = unique_exchange();
    let dir = tempfile::tempdir().unwrap();
    let config = config(&exchange, &dir, &sim.base_url(), 1000);
    // 150 owners: two batches (100 + 50). owner_002 is left out on purpose.
    let owners: Vec<String> = (0..150).filter(|i| *i != 2).map(|i| format!("owner_{i:03}")).collect();
    // Without a worker to wait for: the requests are queued, nothing more.
    let summaries = resync_once(&config, None, &[TENANT.to_string()], &owners, None).await.unwrap();
    assert_eq!(summaries[0].groups_scanned, 4, "the groups of the listed owners only");
    let stats = simc.stats().await.unwrap();
    assert_eq!(stats.groupchat_list, 2, "one call per batch of 100 owners");
    let conn = amqp().await;
    cleanup(&conn, &groupwatch::queue::broker::Topology::from_config(&config.amqp)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resync_command_prints_a_summary() {
    let sim = sim::spawn(state(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let exchange = unique_exchange();
    let dir = tempfile::tempdir().unwrap();
    let toml = config_toml(&exchange, &dir, &sim.base_url(), 1000);
    let app = spawn_app(&toml).await;
    let path = dir.path().join("groupwatch.toml");
    std::fs::write(&path, &toml).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_groupwatch"))
        .args(["resync", "--tenant", TENANT, "--config"])
        .arg(&path)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.starts_with("resync acme: 5 groups scanned, 0 events published, 0 failed, "), "{stdout}");
    app.stop().await;
    let conn = amqp().await;
    let config = Config::from_toml(&toml, std::iter::empty()).unwrap();
    cleanup(&conn, &groupwatch::queue::broker::Topology::from_config(&config.amqp)).await;
}

/// A periodic resync whose listing fails gives its turn back: the tenant is listed again at the
/// next tick (a quarter interval later), not one whole interval later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_periodic_listing_is_tried_again_at_the_next_tick() {
    const INTERVAL_MS: i64 = 8_000;
    let h = Harness::start_custom(TestStore::sqlite().await, Default::default(), |exchange, store, api_base| {
        pipeline_test_config(exchange, store, api_base)
            .section(&format!("[resync]\ninterval_secs = {}\n", INTERVAL_MS / 1000))
            .toml()
    })
    .await;
    // The first listing, one interval after start, is refused (no permission: not retried within
    // the listing).
    h.simc.fault(json!({"errcode": 48002, "count": 1})).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_millis(3 * INTERVAL_MS as u64);
    let listed = loop {
        let listed = h.simc.call_times().await.unwrap().groupchat_list;
        if listed.len() >= 2 {
            break listed;
        }
        assert!(std::time::Instant::now() < deadline, "listed {} time(s)", listed.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let gap = listed[1] - listed[0];
    assert!(
        gap < INTERVAL_MS * 3 / 4,
        "listed again {gap} ms after the refused listing; the next tick is {} ms later, the next interval {INTERVAL_MS}",
        INTERVAL_MS / 4
    );
    h.finish().await;
}
