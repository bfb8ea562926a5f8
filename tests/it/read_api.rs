//! The read API on the ops listener, over both stores: the snapshot equals the simulator's
//! group, `/events` equals what a consumer read from RabbitMQ byte for byte, the members index
//! follows joins, leaves and dismissals, auth and error answers, retention, the command line.

use crate::common::*;
use groupwatch::sim::{SimGroup, WecomMember};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

with_both_stores!(
    snapshot_events_and_members_index_follow_a_scenario,
    auth_and_error_answers,
    retention_removes_old_events_and_never_a_snapshot,
    the_command_line_answers_as_the_api_does,
    the_members_index_is_built_for_snapshots_stored_before_it,
);

pub const API_TOKEN: &str = "test-read-token-0123456789";
const OTHER_CHAT: &str = "wrOgQhDgAAMYQiS5ol9G7gK9JVBBBB";

/// The pipeline's test configuration with the read API on.
pub fn api_config(exchange: &str, store: &TestStore, api_base: &str) -> String {
    pipeline_config(exchange, store, api_base)
        .replace("[worker]", &format!("[api]\ntokens = [\"another-token-0123456789\", \"{API_TOKEN}\"]\n\n[worker]"))
}

/// GETs `path` on the ops listener with the token; returns the status and the JSON body.
pub async fn api_get(app: &TestApp, path: &str) -> (u16, Value) {
    let r = reqwest::Client::new().get(app.ops_url(path)).bearer_auth(API_TOKEN).send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {status} {text:?}: {e}")))
}

async fn ok(app: &TestApp, path: &str) -> Value {
    let (status, body) = api_get(app, path).await;
    assert_eq!(status, 200, "{path}: {body}");
    let schema = match path.split('?').next().unwrap().split('/').filter(|s| !s.is_empty()).count() {
        _ if path.starts_with("/v1/members/") => "MemberGroups",
        _ if path.contains("/events") => "Events",
        4 => "Groups",
        _ => "Group",
    };
    assert_openapi(schema, &body);
    body
}

/// Panics unless `answer` matches `components.schemas.{schema}` of `schema/api.openapi.yaml`.
pub fn assert_openapi(schema: &str, answer: &Value) {
    let doc: Value =
        serde_norway::from_str(include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/schema/api.openapi.yaml")))
            .expect("the OpenAPI description is YAML");
    let root = json!({"$ref": format!("#/components/schemas/{schema}"), "components": doc["components"]});
    let validator = jsonschema::draft202012::new(&root).expect("the OpenAPI schemas compile");
    let errors: Vec<String> = validator.iter_errors(answer).map(|e| format!("{}: {e}", e.instance_path())).collect();
    assert!(
        errors.is_empty(),
        "answer does not match {schema} of schema/api.openapi.yaml:\n  {}\n{answer:#}",
        errors.join("\n  ")
    );
}

/// The simulator's group as the read API should show it.
fn expected_group(g: &SimGroup) -> Value {
    let ne = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
    let role = |userid: &str| {
        if userid == g.owner {
            "owner"
        } else if g.admin_list.iter().any(|a| a.userid == userid) {
            "admin"
        } else {
            "member"
        }
    };
    let member = |m: &WecomMember| {
        json!({"userid": m.userid, "type": m.member_type, "unionid": ne(&m.unionid), "join_time": m.join_time,
               "join_scene": m.join_scene, "invitor": m.invitor.as_ref().map(|i| &i.userid),
               "group_nickname": ne(&m.group_nickname), "name": ne(&m.name), "state": ne(&m.state),
               "role": role(&m.userid)})
    };
    let mut members: Vec<&WecomMember> = g.member_list.iter().collect();
    members.sort_by(|a, b| a.userid.cmp(&b.userid));
    json!({
        "chat_id": g.chat_id, "name": g.name, "owner": g.owner, "notice": g.notice, "create_time": g.create_time,
        "admins": g.admin_list.iter().map(|a| &a.userid).collect::<Vec<_>>(),
        "member_version": g.member_version, "member_count": members.len(),
        "members": members.into_iter().map(member).collect::<Vec<_>>(),
    })
}

async fn sim_group(h: &Harness, chat: &str) -> SimGroup {
    let state = h.simc.state().await.unwrap();
    state.corps[0].groups.iter().find(|g| g.chat_id == chat).expect("chat in the simulator").clone()
}

/// Every event of a chat through `/events`, paging `limit` at a time: (seq, id, body bytes).
async fn all_events(app: &TestApp, chat: &str, limit: usize) -> Vec<(i64, String, String)> {
    #[derive(serde::Deserialize)]
    struct Page<'a> {
        #[serde(borrow)]
        events: Vec<&'a RawValue>,
        next_after_seq: Option<i64>,
    }
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let path = format!("/v1/groups/wecom/{TENANT}/{chat}/events?after_seq={after}&limit={limit}");
        let r = reqwest::Client::new().get(app.ops_url(&path)).bearer_auth(API_TOKEN).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let text = r.text().await.unwrap();
        let page: Page = serde_json::from_str(&text).unwrap();
        assert!(page.events.len() <= limit, "{path}: a page holds at most limit events");
        for raw in &page.events {
            let e: Value = serde_json::from_str(raw.get()).unwrap();
            out.push((e["seq"].as_i64().unwrap(), e["id"].as_str().unwrap().to_owned(), raw.get().to_owned()));
        }
        match page.next_after_seq {
            Some(next) => {
                assert_eq!(Some(next), out.last().map(|e| e.0), "next_after_seq is the page's last seq");
                after = next;
            }
            None => return out,
        }
    }
}

/// What a consumer read from RabbitMQ for `chat`, in arrival order: (seq, id, body bytes).
fn consumed(raw: &[RawEvent], chat: &str) -> Vec<(i64, String, String)> {
    raw.iter()
        .filter_map(|r| {
            let e: Value = serde_json::from_str(&r.body).unwrap();
            assert_eq!(e["id"].as_str(), Some(r.message_id.as_str()), "id = message_id");
            (e["chat_id"] == chat).then(|| (e["seq"].as_i64().unwrap(), r.message_id.clone(), r.body.clone()))
        })
        .collect()
}

async fn groups_of(app: &TestApp, userid: &str) -> Vec<String> {
    let body = ok(app, &format!("/v1/members/wecom/{TENANT}/{userid}/groups")).await;
    assert_eq!(body["userid"], userid);
    body["groups"].as_array().unwrap().iter().map(|g| g["chat_id"].as_str().unwrap().to_owned()).collect()
}

async fn snapshot_events_and_members_index_follow_a_scenario(store: TestStore) {
    let h = Harness::start_with_state(store, Default::default(), sim_state_with_chats(&[CHAT, OTHER_CHAT]), api_config)
        .await;
    let app = h.app();
    let mut raw = Vec::new();
    for chat in [CHAT, OTHER_CHAT] {
        h.callback(&callback_xml_for(chat, CHAT_CREATE_TIME, "create", None, &[], None)).await;
        raw.extend(h.tap.expect_raw(3, WAIT).await);
    }
    let v = h.simc.add_member(CORP_ID, CHAT, external("wmJOINED", 1700000001)).await.unwrap();
    h.callback(&callback_xml(1700000002, "update", Some("add_member"), &["wmJOINED"], Some(&v))).await;
    raw.extend(h.tap.expect_raw(1, WAIT).await);
    let leaver = INITIAL_MEMBERS[1].0;
    let v = h.simc.remove_member(CORP_ID, CHAT, leaver).await.unwrap();
    h.callback(&callback_xml(1700000003, "update", Some("del_member"), &[leaver], Some(&v))).await;
    raw.extend(h.tap.expect_raw(1, WAIT).await);

    // The snapshot is the simulator's group.
    let group = ok(app, &format!("/v1/groups/wecom/{TENANT}/{CHAT}")).await;
    let mut shown = group.clone();
    for field in ["provider", "tenant", "last_seq", "updated_at", "dismissed"] {
        shown.as_object_mut().unwrap().remove(field);
    }
    assert_eq!(shown, expected_group(&sim_group(&h, CHAT).await), "snapshot = simulator");
    assert_eq!((group["provider"].as_str(), group["tenant"].as_str()), (Some("wecom"), Some(TENANT)));
    assert_eq!((group["last_seq"].as_i64(), group["dismissed"].as_bool()), (Some(5), Some(false)));
    assert!(group["updated_at"].as_i64().unwrap() > 1_700_000_000_000, "{group}");

    // /events is what the consumer read, byte for byte, whatever the page size.
    let read = consumed(&raw, CHAT);
    assert_eq!(read.iter().map(|e| e.0).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    for limit in [1, 2, 100] {
        assert_eq!(all_events(app, CHAT, limit).await, read, "limit {limit}");
    }
    assert_eq!(all_events(app, OTHER_CHAT, 100).await, consumed(&raw, OTHER_CHAT));
    let tail = ok(app, &format!("/v1/groups/wecom/{TENANT}/{CHAT}/events?after_seq=4")).await;
    assert_eq!(tail["events"].as_array().unwrap().len(), 1);
    assert_eq!(tail["next_after_seq"], Value::Null);

    // The members index: joins, leaves, one member in two groups, paged.
    assert_eq!(groups_of(app, "wmJOINED").await, [CHAT]);
    assert_eq!(groups_of(app, leaver).await, [OTHER_CHAT], "a leave leaves the index for that chat only");
    assert_eq!(groups_of(app, "abel").await, [CHAT, OTHER_CHAT]);
    let first = ok(app, &format!("/v1/members/wecom/{TENANT}/abel/groups?limit=1")).await;
    assert_eq!(first["groups"][0]["chat_id"], CHAT);
    assert_eq!(first["groups"][0]["join_time"], INITIAL_MEMBERS[0].1);
    assert_eq!(first["groups"][0]["name"], "销售客服群");
    let cursor = first["next_cursor"].as_str().expect("a next page");
    let second = ok(app, &format!("/v1/members/wecom/{TENANT}/abel/groups?limit=1&cursor={cursor}")).await;
    assert_eq!(second["groups"][0]["chat_id"], OTHER_CHAT);
    assert_eq!(second["next_cursor"], Value::Null);

    // The stored groups, keyset-paged.
    let page = ok(app, &format!("/v1/groups/wecom/{TENANT}?limit=1")).await;
    assert_eq!(page["groups"][0]["chat_id"], CHAT);
    assert_eq!(page["groups"][0]["last_seq"], 5);
    let cursor = page["next_cursor"].as_str().unwrap();
    let page = ok(app, &format!("/v1/groups/wecom/{TENANT}?limit=1&cursor={cursor}")).await;
    assert_eq!(page["groups"][0]["chat_id"], OTHER_CHAT);
    assert_eq!(page["next_cursor"], Value::Null);
    assert!(ok(app, "/v1/groups/dingtalk/acme").await["groups"].as_array().unwrap().is_empty());

    // A dismissal empties the group and its index entries; its history stays readable.
    h.simc.dismiss_group(CORP_ID, CHAT).await.unwrap();
    h.callback(&callback_xml(1700000004, "dismiss", None, &[], None)).await;
    raw.extend(h.tap.expect_raw(3, WAIT).await);
    let group = ok(app, &format!("/v1/groups/wecom/{TENANT}/{CHAT}")).await;
    assert_eq!(group["dismissed"], true);
    assert_eq!((group["members"].as_array().unwrap().len(), group["member_count"].as_i64()), (0, Some(0)));
    assert_eq!(group["last_seq"], 8);
    assert!(groups_of(app, "wmJOINED").await.is_empty());
    assert_eq!(groups_of(app, "abel").await, [OTHER_CHAT]);
    assert_eq!(all_events(app, CHAT, 3).await, consumed(&raw, CHAT));
    h.finish().await;
}

async fn auth_and_error_answers(store: TestStore) {
    let h = Harness::start_custom(store, Default::default(), api_config).await;
    h.created().await;
    let app = h.app();
    let client = reqwest::Client::new();
    let group = format!("/v1/groups/wecom/{TENANT}/{CHAT}");
    let unknown = format!("/v1/groups/wecom/{TENANT}/wrNOSUCHCHAT");

    // 401 before anything else: without a token nothing tells whether a group exists.
    for path in [&group, &unknown, &format!("/v1/groups/slack/{TENANT}"), &format!("{group}/events?limit=0")] {
        let bare = client.get(app.ops_url(path)).send().await.unwrap();
        assert_eq!(bare.status(), 401, "{path}");
        assert_eq!(bare.headers()["www-authenticate"], "Bearer");
        for header in ["Bearer wrong-token-0123456789", "Bearer ", "Basic dGVzdDp0ZXN0", API_TOKEN] {
            let r = client.get(app.ops_url(path)).header("authorization", header).send().await.unwrap();
            assert_eq!(r.status(), 401, "{path} with {header:?}");
            assert_eq!(r.json::<Value>().await.unwrap()["error"], "a valid bearer token is required");
        }
    }
    let r = client.get(app.ops_url(&group)).bearer_auth("another-token-0123456789").send().await.unwrap();
    assert_eq!(r.status(), 200, "every configured token is accepted");

    let cases: &[(String, u16, &str)] = &[
        (unknown.clone(), 404, "no such group"),
        (format!("{unknown}/events"), 404, "no such group"),
        (format!("/v1/groups/slack/{TENANT}/{CHAT}"), 404, "unknown provider (expected wecom, dingtalk or tim)"),
        (format!("/v1/groups/wecom/{TENANT}/{CHAT}/nope"), 404, ""),
        (format!("/v1/groups/wecom/Not_A_Tenant/{CHAT}"), 400, "tenant must match [a-z0-9_-]{1,64}"),
        (format!("{group}/events?after_seq=-1"), 400, "after_seq must be an integer >= 0"),
        (format!("{group}/events?limit=0"), 400, "limit must be an integer >= 1"),
        (format!("{group}/events?limit=%3Cscript%3E"), 400, "limit must be an integer >= 1"),
        (format!("{group}/events?after=1"), 400, "unknown query parameter (allowed: after_seq, limit)"),
        (format!("/v1/groups/wecom/{TENANT}?after_seq=1"), 400, "unknown query parameter (allowed: cursor, limit)"),
        (format!("/v1/members/wecom/{TENANT}/abel/groups?cursor={}", "x".repeat(300)), 400, "cursor is too long"),
        (format!("/v1/members/wecom/{TENANT}/{}/groups", "x".repeat(300)), 400, "userid must be 1 to 256 bytes"),
    ];
    for (path, want, error) in cases {
        let r = client.get(app.ops_url(path)).bearer_auth(API_TOKEN).send().await.unwrap();
        assert_eq!(r.status().as_u16(), *want, "{path}");
        if !error.is_empty() {
            let body: Value = r.json().await.unwrap();
            assert_openapi("Error", &body);
            assert_eq!(body["error"], *error, "{path}: one fixed line, nothing echoed");
        }
    }
    // Limits above the maximum are capped, not refused.
    let capped = ok(app, &format!("{group}/events?limit=100000")).await;
    assert_eq!(capped["events"].as_array().unwrap().len(), 3);
    assert!(ok(app, &format!("/v1/groups/wecom/{TENANT}?limit=100000")).await["groups"].is_array());
    // A member in no group: an empty list, not an error.
    assert!(groups_of(app, "wmNOBODY").await.is_empty());
    h.finish().await;

    // No token configured: the read API is off.
    let off = spawn_app(&test_config(&unique_exchange(), "")).await;
    let r = client.get(off.ops_url(&format!("/v1/groups/wecom/{TENANT}"))).bearer_auth(API_TOKEN).send().await;
    assert_eq!(r.unwrap().status(), 404);
    cleanup(&amqp().await, &off.topology).await;
    off.stop().await;
}

/// The chat's stored event seqs, published or not.
async fn stored_seqs(store: &TestStore) -> Vec<i64> {
    use sqlx::Connection;
    let sql = format!("SELECT seq FROM group_events WHERE chat_id = '{CHAT}' ORDER BY seq");
    match store {
        TestStore::Sqlite(_) => {
            let mut c = sqlx::SqliteConnection::connect(&store.url()).await.unwrap();
            sqlx::query_scalar(&sql).fetch_all(&mut c).await.unwrap()
        }
        TestStore::Postgres(_) => {
            let mut c = sqlx::PgConnection::connect(&store.url()).await.unwrap();
            sqlx::query_scalar(&sql).fetch_all(&mut c).await.unwrap()
        }
    }
}

const FORTY_DAYS_MS: i64 = 40 * 86_400_000;

async fn retention_removes_old_events_and_never_a_snapshot(store: TestStore) {
    let mut h = Harness::start_custom(store, Default::default(), api_config).await;
    h.created().await;
    let v = h.simc.add_member(CORP_ID, CHAT, external("wmJOINED", 1700000001)).await.unwrap();
    h.callback(&callback_xml(1700000002, "update", Some("add_member"), &["wmJOINED"], Some(&v))).await;
    h.tap.expect(1, WAIT).await;
    h.app.take().unwrap().stop().await;
    let before = groupwatch::store::connect(&h.store.url()).await.unwrap();
    let key = groupwatch::core::model::GroupKey::new(groupwatch::core::model::Provider::Wecom, TENANT, CHAT);
    let snapshot = before.load(&key).await.unwrap().expect("stored");

    // Seq 1-3 forty days old, seq 2 of them still unpublished; seq 4 recent.
    let aged = h
        .store
        .exec(&format!("UPDATE group_events SET created_at_ms = created_at_ms - {FORTY_DAYS_MS} WHERE seq <= 3"))
        .await;
    assert_eq!(aged, 3);
    h.store.exec("UPDATE group_events SET published_at_ms = NULL WHERE seq = 2").await;
    let cutoff = groupwatch::core::clock::now_ms() - 30 * 86_400_000;
    let stop = tokio_util::sync::CancellationToken::new();
    // One event per statement: several small batches, never one long transaction.
    let deleted = groupwatch::api::retention::prune(&before, cutoff, 1, &stop).await.unwrap();
    assert_eq!(deleted, 2);
    assert_eq!(stored_seqs(&h.store).await, [2, 4], "the old published events went; the unpublished one stays");
    let after = before.load(&key).await.unwrap().expect("the snapshot stays");
    assert_eq!(after, snapshot, "the snapshot is untouched");
    assert_eq!(groupwatch::api::retention::prune(&before, cutoff, 1, &stop).await.unwrap(), 0);

    // In the background: `serve` prunes shortly after start-up with store.history_days.
    h.store
        .exec(&format!("UPDATE group_events SET created_at_ms = created_at_ms - {FORTY_DAYS_MS} WHERE seq = 4"))
        .await;
    h.config = h.config.replace("[store]\n", "[store]\nhistory_days = 30\n");
    h.restart(Default::default()).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while stored_seqs(&h.store).await != [2] {
        assert!(tokio::time::Instant::now() < deadline, "not pruned: {:?}", stored_seqs(&h.store).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let app = h.app();
    let group = ok(app, &format!("/v1/groups/wecom/{TENANT}/{CHAT}")).await;
    assert_eq!((group["last_seq"].as_i64(), group["member_count"].as_i64()), (Some(4), Some(3)), "{group}");
    assert_eq!(groups_of(app, "wmJOINED").await, [CHAT]);
    // Numbering goes on after the pruned history, and the event the outbox still owed (kept
    // through every pass) is delivered with the next change.
    let v = h.simc.add_member(CORP_ID, CHAT, external("wmLATER", 1700000003)).await.unwrap();
    h.callback(&callback_xml(1700000004, "update", Some("add_member"), &["wmLATER"], Some(&v))).await;
    let mut seqs: Vec<i64> = h.tap.expect(2, WAIT).await.iter().map(|e| e.seq).collect();
    seqs.sort();
    assert_eq!(seqs, [2, 5]);
    h.finish().await;
}

/// `groupwatch members` and `groups-of`: `--json` prints what the HTTP routes answer; the table
/// has a row per member or group; mistakes exit 2, an unknown group 1.
async fn the_command_line_answers_as_the_api_does(store: TestStore) {
    let h = Harness::start_custom(store, Default::default(), api_config).await;
    h.created().await;
    let app = h.app();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gw.toml");
    std::fs::write(&config, &h.config).unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_groupwatch"))
            .args(args)
            .arg("--config")
            .arg(&config)
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
    };
    let (code, json_out, err) = run(&["members", "--tenant", TENANT, "--json", CHAT]);
    assert_eq!(code, Some(0), "{err}");
    let http = ok(app, &format!("/v1/groups/wecom/{TENANT}/{CHAT}")).await;
    assert_eq!(serde_json::from_str::<Value>(&json_out).unwrap(), http);
    let (code, table, _) = run(&["members", "--tenant", TENANT, "--provider", "wecom", CHAT]);
    assert_eq!(code, Some(0));
    println!("{table}");
    assert!(table.lines().any(|l| l.starts_with("USERID")), "{table}");
    for (userid, _) in INITIAL_MEMBERS {
        assert!(table.lines().any(|l| l.starts_with(userid)), "{userid} in\n{table}");
    }

    let (code, json_out, err) = run(&["groups-of", "--tenant", TENANT, "--json", "abel"]);
    assert_eq!(code, Some(0), "{err}");
    let http = ok(app, &format!("/v1/members/wecom/{TENANT}/abel/groups")).await;
    assert_eq!(serde_json::from_str::<Value>(&json_out).unwrap(), http);
    let (_, table, _) = run(&["groups-of", "--tenant", TENANT, "abel"]);
    println!("{table}");
    assert_eq!(table.lines().count(), 2, "header and one group:\n{table}");
    assert!(table.lines().nth(1).unwrap().starts_with(CHAT), "{table}");

    let (code, _, err) = run(&["members", "--tenant", TENANT, "wrNOSUCHCHAT"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no group \"wrNOSUCHCHAT\""), "{err}");
    let (code, _, err) = run(&["members", "--tenant", TENANT, "--provider", "slack", CHAT]);
    assert_eq!((code, err.lines().count()), (Some(2), 1), "{err}");
    assert!(err.contains("--provider"), "{err}");
    let (code, _, err) = run(&["groups-of", "--tenant", "nobody", "abel"]);
    assert_eq!(code, Some(2), "{err}");
    h.finish().await;
}

/// Snapshots stored before the members index existed are indexed by its migration.
async fn the_members_index_is_built_for_snapshots_stored_before_it(store: TestStore) {
    let mut h = Harness::start_custom(store, Default::default(), api_config).await;
    h.created().await;
    h.app.take().unwrap().stop().await;
    // Back to the schema before migration 3.
    h.store.exec("DROP TABLE group_members").await;
    h.store.exec("DROP INDEX group_events_age").await;
    if matches!(h.store, TestStore::Sqlite(_)) {
        h.store.exec("DROP INDEX group_snapshots_heads").await;
    }
    assert_eq!(h.store.exec("DELETE FROM _sqlx_migrations WHERE version = 3").await, 1);
    h.restart(Default::default()).await;
    let app = h.app();
    let mut found = BTreeMap::new();
    for (userid, _) in INITIAL_MEMBERS {
        found.insert(userid, groups_of(app, userid).await);
    }
    assert!(found.values().all(|chats| chats == &[CHAT.to_owned()]), "{found:?}");
    let first = ok(app, &format!("/v1/members/wecom/{TENANT}/abel/groups")).await;
    assert_eq!(first["groups"][0]["join_time"], INITIAL_MEMBERS[0].1);
    h.finish().await;
}

/// On SQLite the members index is a WITHOUT ROWID table (one B-tree in key order, so a member's
/// groups sit together), and migration 6 carries the rows of the rowid table before it over.
#[tokio::test]
async fn the_sqlite_members_index_is_kept_in_key_order_and_its_rows_survive_migration_6() {
    use groupwatch::core::model::{GroupKey, GroupSnapshot, Member, Provider, StoredGroup};
    let store = TestStore::sqlite().await;
    let writer = groupwatch::store::connect(&store.url()).await.unwrap();
    let mut member = Member::unknown("abel");
    member.join_time = Some(1_600_000_123);
    for chat in ["wrAAAA", "wrBBBB"] {
        let mut snapshot = GroupSnapshot::empty(chat);
        snapshot.members = vec![member.clone(), Member::unknown("zoe")];
        let key = GroupKey::new(Provider::Wecom, TENANT, chat);
        writer.commit(&key, &StoredGroup::new(snapshot), &[], &[]).await.unwrap();
    }
    let groups_of_abel = |store| async move {
        let s: std::sync::Arc<dyn groupwatch::store::SnapshotStore> = store;
        let rows = s.member_groups(Provider::Wecom, TENANT, "abel", "", 10).await.unwrap();
        rows.into_iter().map(|g| (g.chat_id, g.join_time)).collect::<Vec<_>>()
    };
    let expected = vec![("wrAAAA".to_owned(), Some(1_600_000_123)), ("wrBBBB".to_owned(), Some(1_600_000_123))];
    assert_eq!(groups_of_abel(writer.clone()).await, expected);
    let has_rowid = || async {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(&store.url()).await.unwrap();
        sqlx::query("SELECT rowid FROM group_members").fetch_all(&mut c).await.is_ok()
    };
    assert!(!has_rowid().await, "the members index has rowids: each member's group costs a second lookup");
    drop(writer);

    // Back to the rowid table of migration 3, rows and all.
    store.exec("CREATE TABLE old_members AS SELECT * FROM group_members").await;
    store.exec("DROP TABLE group_members").await;
    store
        .exec(
            "CREATE TABLE group_members (provider TEXT NOT NULL, tenant TEXT NOT NULL, userid TEXT NOT NULL, \
             chat_id TEXT NOT NULL, join_time INTEGER, PRIMARY KEY (provider, tenant, userid, chat_id))",
        )
        .await;
    assert_eq!(store.exec("INSERT INTO group_members SELECT * FROM old_members").await, 4);
    store.exec("DROP TABLE old_members").await;
    assert!(has_rowid().await);
    assert_eq!(store.exec("DELETE FROM _sqlx_migrations WHERE version = 6").await, 1);

    let migrated = groupwatch::store::connect(&store.url()).await.unwrap();
    assert!(!has_rowid().await, "migration 6 did not rebuild the table");
    assert_eq!(groups_of_abel(migrated).await, expected);
}

/// The read API's pool is its own, and read-only on SQLite: it can never write, nor hold the
/// single writer's lock.
#[tokio::test]
async fn the_read_pool_is_read_only_on_sqlite() {
    use groupwatch::core::model::{GroupKey, GroupSnapshot, Provider, StoredGroup};
    let store = TestStore::sqlite().await;
    let writer = groupwatch::store::connect(&store.url()).await.unwrap();
    let reader = groupwatch::store::connect_reader(&store.url()).await.unwrap();
    let key = GroupKey::new(Provider::Wecom, TENANT, CHAT);
    let group = StoredGroup::new(GroupSnapshot::empty(CHAT));
    let refused = reader.commit(&key, &group, &[], &[]).await.unwrap_err();
    assert!(refused.to_string().contains("readonly"), "{refused}");
    writer.commit(&key, &group, &[], &[]).await.unwrap();
    let listed = reader.groups(Provider::Wecom, TENANT, "", 10).await.unwrap();
    assert_eq!(listed.iter().map(|g| g.chat_id.as_str()).collect::<Vec<_>>(), [CHAT]);
}
