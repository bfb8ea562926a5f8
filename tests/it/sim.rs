//! The WeCom API simulator, driven over real HTTP as groupwatch's WeCom client will drive it.

use groupwatch::sim::{self, SimServer, SimState, SimStats};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const CORP: &str = "ww1234567890abcdef";
const SECRET: &str = "demo-secret";
/// A corp whose app sees more than 1000 people, so list needs an owner_filter.
const BIG_CORP: &str = "wwbigcorp0000000001";
const BIG_SECRET: &str = "big-secret";
const DOC_CHAT: &str = "wrOgQhDgAAMYQiS5ol9G7gK9JVAAAA";

/// The groupchat/get example of WeCom's documentation (need_name=1), compacted.
const DOC_ANSWER: &str = r#"{"errcode":0,"errmsg":"ok","group_chat":{"chat_id":"wrOgQhDgAAMYQiS5ol9G7gK9JVAAAA","name":"销售客服群","owner":"ZhuShengBen","create_time":1572505490,"notice":"文明沟通，拒绝脏话","member_list":[{"userid":"abel","type":1,"join_time":1572505491,"join_scene":1,"invitor":{"userid":"jack"},"group_nickname":"客服小张","name":"张三丰"},{"userid":"wmOgQhDgAAuXFJGwbve4g4iXknfOAAAA","type":2,"unionid":"ozynqsulJFCZ2z1aYeS8h-nuasdAAA","join_time":1572505491,"join_scene":1,"group_nickname":"顾客老王","name":"王语嫣"}],"admin_list":[{"userid":"sam"},{"userid":"pony"}],"member_version":"71217227bbd112ecfe3a49c482195cb4"}}"#;

fn small_group(chat_id: &str, owner: &str) -> Value {
    json!({
        "chat_id": chat_id, "name": format!("群 {chat_id}"), "owner": owner, "create_time": 1600000000,
        "member_list": [{"userid": owner, "type": 1, "join_time": 1600000000, "join_scene": 1}],
    })
}

fn test_state() -> SimState {
    let doc_group = json!({
        "chat_id": DOC_CHAT, "name": "销售客服群", "owner": "ZhuShengBen", "create_time": 1572505490,
        "notice": "文明沟通，拒绝脏话",
        "member_list": [
            {"userid": "abel", "type": 1, "join_time": 1572505491, "join_scene": 1,
             "invitor": {"userid": "jack"}, "group_nickname": "客服小张", "name": "张三丰"},
            {"userid": "wmOgQhDgAAuXFJGwbve4g4iXknfOAAAA", "type": 2, "unionid": "ozynqsulJFCZ2z1aYeS8h-nuasdAAA",
             "join_time": 1572505491, "join_scene": 1, "group_nickname": "顾客老王", "name": "王语嫣"}
        ],
        "admin_list": [{"userid": "sam"}, {"userid": "pony"}],
        "member_version": "71217227bbd112ecfe3a49c482195cb4"
    });
    let mut dismissed = small_group("wrDismissed00000000000000AAAA", "abel");
    dismissed["dismissed"] = json!(true);
    serde_json::from_value(json!({"corps": [
        {"corp_id": CORP, "secret": SECRET, "groups": [
            doc_group,
            small_group("wrAbel1", "abel"),
            small_group("wrAbel2", "abel"),
            small_group("wrJack1", "jack"),
            dismissed,
        ]},
        {"corp_id": BIG_CORP, "secret": BIG_SECRET, "large_visible_range": true, "groups": [
            small_group("wrBig1", "lucy"),
        ]},
    ]}))
    .expect("test state is valid")
}

/// The simulator plus a plain HTTP client speaking WeCom's API to it.
struct Harness {
    server: SimServer,
    http: reqwest::Client,
}

async fn start() -> Harness {
    let server = sim::spawn(test_state(), "127.0.0.1:0".parse().unwrap()).await.expect("simulator starts");
    Harness { server, http: reqwest::Client::builder().no_proxy().build().unwrap() }
}

impl Harness {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.base_url())
    }

    async fn gettoken(&self, corp: &str, secret: &str) -> Value {
        let url = self.url("/cgi-bin/gettoken");
        let response = self.http.get(url).query(&[("corpid", corp), ("corpsecret", secret)]).send().await.unwrap();
        assert_eq!(response.status(), 200, "WeCom answers errors with HTTP 200");
        response.json().await.unwrap()
    }

    async fn token(&self) -> String {
        let answer = self.gettoken(CORP, SECRET).await;
        assert_eq!(answer["errcode"], 0, "{answer}");
        answer["access_token"].as_str().expect("access_token is a string").to_owned()
    }

    async fn post(&self, api: &str, token: Option<&str>, body: Value) -> reqwest::Response {
        let mut request = self.http.post(self.url(&format!("/cgi-bin/externalcontact/groupchat/{api}")));
        if let Some(token) = token {
            request = request.query(&[("access_token", token)]);
        }
        request.json(&body).send().await.unwrap()
    }

    async fn get_group(&self, token: &str, chat_id: &str, need_name: i64) -> Value {
        let response = self.post("get", Some(token), json!({"chat_id": chat_id, "need_name": need_name})).await;
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    async fn list(&self, token: &str, body: Value) -> Value {
        let response = self.post("list", Some(token), body).await;
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// Follows next_cursor to the end; returns every page's chat ids.
    async fn list_all_pages(&self, token: &str, mut body: Value) -> Vec<Vec<String>> {
        let mut pages = Vec::new();
        loop {
            let answer = self.list(token, body.clone()).await;
            assert_eq!(answer["errcode"], 0, "{answer}");
            let ids = answer["group_chat_list"].as_array().unwrap();
            for chat in ids {
                assert_eq!(chat["status"], 0, "{chat}");
            }
            pages.push(ids.iter().map(|c| c["chat_id"].as_str().unwrap().to_owned()).collect());
            let next = answer["next_cursor"].as_str().unwrap().to_owned();
            if next.is_empty() {
                return pages;
            }
            assert!(pages.len() < 20, "paging does not end");
            body["cursor"] = json!(next);
        }
    }
}

fn member_ids(group_answer: &Value) -> BTreeSet<String> {
    group_answer["group_chat"]["member_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["userid"].as_str().unwrap().to_owned())
        .collect()
}

fn version_of(group_answer: &Value) -> String {
    group_answer["group_chat"]["member_version"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn gettoken_checks_corp_and_secret() {
    let h = start().await;
    let good = h.gettoken(CORP, SECRET).await;
    assert_eq!(good["errcode"], 0);
    assert_eq!(good["errmsg"], "ok");
    assert_eq!(good["expires_in"], 7200);
    let token = good["access_token"].as_str().unwrap();
    assert!(token.len() >= 32, "{token}");
    assert_eq!(h.get_group(token, DOC_CHAT, 0).await["errcode"], 0);
    // The secret of one corp does not open another.
    assert_eq!(h.gettoken(CORP, BIG_SECRET).await["errcode"], 40001);
    assert_eq!(h.gettoken("wwnosuchcorp", SECRET).await["errcode"], 40013);
}

#[tokio::test]
async fn api_calls_check_the_token() {
    let h = start().await;
    let body = json!({"chat_id": DOC_CHAT});
    let missing: Value = h.post("get", None, body.clone()).await.json().await.unwrap();
    assert_eq!(missing["errcode"], 41001);
    let unknown: Value = h.post("get", Some("not-a-token"), body).await.json().await.unwrap();
    assert_eq!(unknown["errcode"], 40014);
    assert_eq!(h.list(&h.token().await, json!({"limit": 10})).await["errcode"], 0);
}

#[tokio::test]
async fn get_with_names_is_byte_for_byte_the_documented_answer() {
    let h = start().await;
    let token = h.token().await;
    let response = h.post("get", Some(&token), json!({"chat_id": DOC_CHAT, "need_name": 1})).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), DOC_ANSWER);
}

#[tokio::test]
async fn get_without_need_name_leaves_names_out_and_nothing_else() {
    let h = start().await;
    let token = h.token().await;
    let mut expected: Value = serde_json::from_str(DOC_ANSWER).unwrap();
    for member in expected["group_chat"]["member_list"].as_array_mut().unwrap() {
        member.as_object_mut().unwrap().remove("name");
    }
    assert_eq!(h.get_group(&token, DOC_CHAT, 0).await, expected);
    let default: Value = h.post("get", Some(&token), json!({"chat_id": DOC_CHAT})).await.json().await.unwrap();
    assert_eq!(default, expected, "need_name defaults to 0");
}

#[tokio::test]
async fn optional_member_fields_stay_absent() {
    let h = start().await;
    let answer = h.get_group(&h.token().await, "wrAbel1", 1).await;
    let member = answer["group_chat"]["member_list"][0].as_object().unwrap().clone();
    let keys: Vec<&str> = member.keys().map(String::as_str).collect();
    assert_eq!(keys, ["join_scene", "join_time", "type", "userid"], "no null placeholders: {member:?}");
}

#[tokio::test]
async fn unknown_and_dismissed_chats_answer_40050() {
    let h = start().await;
    let token = h.token().await;
    let unknown = h.get_group(&token, "wrNoSuchChat", 0).await;
    assert_eq!(unknown, json!({"errcode": 40050, "errmsg": "chat_id not found"}));
    assert_eq!(h.get_group(&token, "wrDismissed00000000000000AAAA", 0).await["errcode"], 40050);

    h.server.client().dismiss_group(CORP, "wrJack1").await.unwrap();
    assert_eq!(h.get_group(&token, "wrJack1", 0).await["errcode"], 40050);
    let listed: BTreeSet<String> =
        h.list_all_pages(&token, json!({"limit": 1000})).await.into_iter().flatten().collect();
    assert!(!listed.contains("wrJack1"), "{listed:?}");
    assert!(!listed.contains("wrDismissed00000000000000AAAA"), "{listed:?}");
}

#[tokio::test]
async fn list_pages_through_every_live_group() {
    let h = start().await;
    let token = h.token().await;
    let pages = h.list_all_pages(&token, json!({"status_filter": 0, "cursor": "", "limit": 1})).await;
    assert!(pages.iter().all(|p| p.len() == 1), "{pages:?}");
    let all: Vec<String> = pages.into_iter().flatten().collect();
    let expected: BTreeSet<String> =
        [DOC_CHAT, "wrAbel1", "wrAbel2", "wrJack1"].into_iter().map(String::from).collect();
    assert_eq!(all.len(), expected.len(), "no chat twice: {all:?}");
    assert_eq!(all.into_iter().collect::<BTreeSet<_>>(), expected);

    let pages = h.list_all_pages(&token, json!({"limit": 3})).await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [3, 1]);
}

#[tokio::test]
async fn list_owner_filter_keeps_only_those_owners() {
    let h = start().await;
    let token = h.token().await;
    let body = json!({"owner_filter": {"userid_list": ["abel", "nobody"]}, "limit": 1});
    let pages = h.list_all_pages(&token, body).await;
    assert_eq!(pages, [vec!["wrAbel1".to_owned()], vec!["wrAbel2".to_owned()]]);
}

#[tokio::test]
async fn list_refuses_bad_parameters() {
    let h = start().await;
    let token = h.token().await;
    for limit in [0, 1001, -1] {
        assert_eq!(h.list(&token, json!({"limit": limit})).await["errcode"], 40058, "limit {limit}");
    }
    assert_eq!(h.list(&token, json!({})).await["errcode"], 40058, "limit is required");
    assert_eq!(h.list(&token, json!({"limit": 1000})).await["errcode"], 0);
    let owners: Vec<String> = (0..101).map(|i| format!("user{i}")).collect();
    let too_many = json!({"owner_filter": {"userid_list": owners}, "limit": 10});
    assert_eq!(h.list(&token, too_many).await["errcode"], 40058);
    let hundred = json!({"owner_filter": {"userid_list": owners[..100]}, "limit": 10});
    assert_eq!(h.list(&token, hundred).await["errcode"], 0);
    assert_eq!(h.list(&token, json!({"cursor": "%%%", "limit": 10})).await["errcode"], 40058);
}

#[tokio::test]
async fn list_needs_owner_filter_when_the_visible_range_is_large() {
    let h = start().await;
    let big = h.gettoken(BIG_CORP, BIG_SECRET).await;
    let token = big["access_token"].as_str().unwrap();
    assert_eq!(h.list(token, json!({"limit": 10})).await["errcode"], 81017);
    let empty_filter = json!({"owner_filter": {"userid_list": []}, "limit": 10});
    assert_eq!(h.list(token, empty_filter).await["errcode"], 81017);
    let filtered = h.list(token, json!({"owner_filter": {"userid_list": ["lucy"]}, "limit": 10})).await;
    assert_eq!(filtered["errcode"], 0, "{filtered}");
    assert_eq!(filtered["group_chat_list"], json!([{"chat_id": "wrBig1", "status": 0}]));
    // The small corp's token sees only the small corp's groups.
    assert_eq!(h.list(&h.token().await, json!({"limit": 10})).await["group_chat_list"].as_array().unwrap().len(), 4);
}

fn is_member_version(v: &str) -> bool {
    v.len() == 32 && v.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[tokio::test]
async fn membership_changes_bump_member_version_and_attribute_changes_do_not() {
    let h = start().await;
    let admin = h.server.client();
    let token = h.token().await;
    let v0 = version_of(&h.get_group(&token, DOC_CHAT, 0).await);

    let newcomer = json!({"userid": "wmNewcomer", "type": 2, "join_time": 1700000000, "join_scene": 3});
    let v1 = admin.add_member(CORP, DOC_CHAT, newcomer).await.unwrap();
    assert!(is_member_version(&v1), "{v1}");
    assert_ne!(v1, v0);
    let after_add = h.get_group(&token, DOC_CHAT, 0).await;
    assert_eq!(version_of(&after_add), v1);
    assert!(member_ids(&after_add).contains("wmNewcomer"));

    let v2 = admin.remove_member(CORP, DOC_CHAT, "abel").await.unwrap();
    assert!(is_member_version(&v2), "{v2}");
    assert!(v2 != v0 && v2 != v1);
    let after_remove = h.get_group(&token, DOC_CHAT, 0).await;
    assert_eq!(version_of(&after_remove), v2);
    assert_eq!(
        member_ids(&after_remove),
        ["wmNewcomer", "wmOgQhDgAAuXFJGwbve4g4iXknfOAAAA"].into_iter().map(String::from).collect()
    );

    admin.patch_group(CORP, DOC_CHAT, json!({"name": "新群名", "notice": "新公告"})).await.unwrap();
    let after_patch = h.get_group(&token, DOC_CHAT, 0).await;
    assert_eq!(after_patch["group_chat"]["name"], "新群名");
    assert_eq!(after_patch["group_chat"]["notice"], "新公告");
    assert_eq!(version_of(&after_patch), v2);

    // Admin refusals are plain HTTP errors.
    assert!(admin.remove_member(CORP, DOC_CHAT, "abel").await.is_err(), "abel is gone already");
    assert!(admin
        .add_member(CORP, "wrNoSuchChat", json!({"userid": "x", "type": 1, "join_time": 1, "join_scene": 1}))
        .await
        .is_err());
}

#[tokio::test]
async fn put_group_creates_a_fetchable_group() {
    let h = start().await;
    let admin = h.server.client();
    let token = h.token().await;
    let group = json!({"name": "新建群", "owner": "jack", "create_time": 1700000000, "member_list": [
        {"userid": "jack", "type": 1, "join_time": 1700000000, "join_scene": 1}
    ]});
    let version = admin.put_group(CORP, "wrFresh", group).await.unwrap();
    assert!(is_member_version(&version), "{version}");
    let answer = h.get_group(&token, "wrFresh", 1).await;
    assert_eq!(answer["group_chat"]["name"], "新建群");
    assert_eq!(version_of(&answer), version);
    assert_eq!(answer["group_chat"]["admin_list"], json!([]));

    let state = admin.state().await.unwrap();
    let corp = state.corps.iter().find(|c| c.corp_id == CORP).unwrap();
    assert!(corp.groups.iter().any(|g| g.chat_id == "wrFresh"));
}

#[tokio::test]
async fn stale_fetches_serve_the_previous_members_exactly_n_times() {
    let h = start().await;
    let admin = h.server.client();
    let token = h.token().await;
    let before = h.get_group(&token, "wrAbel1", 0).await;
    let fresh = json!({"userid": "wmLate", "type": 2, "join_time": 1700000000, "join_scene": 2});
    let new_version = admin.add_member(CORP, "wrAbel1", fresh).await.unwrap();

    admin.fault(json!({"stale_fetches": 2})).await.unwrap();
    for i in 0..2 {
        let stale = h.get_group(&token, "wrAbel1", 0).await;
        assert_eq!(stale, before, "stale fetch {i}");
    }
    let current = h.get_group(&token, "wrAbel1", 0).await;
    assert_eq!(version_of(&current), new_version);
    assert!(member_ids(&current).contains("wmLate"));
}

#[tokio::test]
async fn errcode_fault_answers_the_next_n_calls() {
    let h = start().await;
    let admin = h.server.client();
    let token = h.token().await;
    admin.fault(json!({"errcode": 45009, "count": 2})).await.unwrap();
    let first = h.get_group(&token, DOC_CHAT, 0).await;
    assert_eq!(first["errcode"], 45009);
    assert!(first.get("group_chat").is_none());
    assert_eq!(h.list(&token, json!({"limit": 10})).await["errcode"], 45009);
    assert_eq!(h.get_group(&token, DOC_CHAT, 0).await["errcode"], 0);

    admin.fault(json!({"errcode": -1})).await.unwrap();
    assert_eq!(h.list(&token, json!({"limit": 10})).await["errcode"], -1);
    assert_eq!(h.list(&token, json!({"limit": 10})).await["errcode"], 0, "count defaults to 1");

    admin.fault(json!({"errcode": 45033, "count": 5})).await.unwrap();
    admin.clear_faults().await.unwrap();
    assert_eq!(h.get_group(&token, DOC_CHAT, 0).await["errcode"], 0);
}

#[tokio::test]
async fn http_status_fault_answers_that_status_with_a_text_body() {
    let h = start().await;
    let admin = h.server.client();
    let token = h.token().await;
    admin.fault(json!({"http_status": 502, "count": 1})).await.unwrap();
    let response = h.post("get", Some(&token), json!({"chat_id": DOC_CHAT})).await;
    assert_eq!(response.status(), 502);
    let body = response.text().await.unwrap();
    assert!(serde_json::from_str::<Value>(&body).is_err(), "not a WeCom JSON answer: {body}");
    assert_eq!(h.get_group(&token, DOC_CHAT, 0).await["errcode"], 0);
    assert!(admin.fault(json!({"http_status": 200})).await.is_err(), "a 200 is no fault");
    assert!(admin.fault(json!({"htp_status": 502})).await.is_err(), "typos are refused");
}

#[tokio::test]
async fn latency_fault_delays_every_call_until_reset() {
    let h = start().await;
    let admin = h.server.client();
    let token = h.token().await;
    admin.fault(json!({"latency_ms": 300})).await.unwrap();
    let started = Instant::now();
    assert_eq!(h.get_group(&token, DOC_CHAT, 0).await["errcode"], 0);
    assert_eq!(h.gettoken(CORP, SECRET).await["errcode"], 0);
    assert!(started.elapsed() >= Duration::from_millis(600), "{:?}", started.elapsed());

    admin.fault(json!({"latency_ms": 0})).await.unwrap();
    let started = Instant::now();
    assert_eq!(h.get_group(&token, DOC_CHAT, 0).await["errcode"], 0);
    assert!(started.elapsed() < Duration::from_millis(300), "{:?}", started.elapsed());
}

#[tokio::test]
async fn expired_tokens_answer_42001_until_a_new_one_is_fetched() {
    let h = start().await;
    let old = h.token().await;
    assert_eq!(h.token().await, old, "a valid token is handed out again, as WeCom does");
    h.server.client().fault(json!({"expire_tokens": true})).await.unwrap();
    assert_eq!(h.get_group(&old, DOC_CHAT, 0).await["errcode"], 42001);
    assert_eq!(h.list(&old, json!({"limit": 10})).await["errcode"], 42001);
    let new = h.token().await;
    assert_ne!(new, old);
    assert_eq!(h.get_group(&new, DOC_CHAT, 0).await["errcode"], 0);
}

#[tokio::test]
async fn stats_count_every_api_call_including_failures() {
    let h = start().await;
    let admin = h.server.client();
    assert_eq!(admin.stats().await.unwrap(), SimStats::default());
    let token = h.token().await;
    assert_eq!(h.gettoken(CORP, "wrong").await["errcode"], 40001);
    admin.fault(json!({"errcode": 45009})).await.unwrap();
    h.get_group(&token, DOC_CHAT, 0).await;
    h.get_group(&token, DOC_CHAT, 0).await;
    h.get_group(&token, "wrNoSuchChat", 0).await;
    for _ in 0..2 {
        h.list(&token, json!({"limit": 10})).await;
    }
    let stats = admin.stats().await.unwrap();
    assert_eq!(stats, SimStats { gettoken: 2, groupchat_get: 3, groupchat_list: 2 });
    assert_eq!(h.server.sim().stats(), stats);

    admin.reset_stats().await.unwrap();
    assert_eq!(admin.stats().await.unwrap(), SimStats::default());
}

#[tokio::test]
async fn shutdown_stops_the_server() {
    let h = start().await;
    let url = h.url("/sim/stats");
    assert!(h.http.get(&url).send().await.is_ok());
    h.server.shutdown().await.unwrap();
    assert!(h.http.get(&url).send().await.is_err(), "nothing listens after shutdown");
}

#[tokio::test]
async fn state_snapshot_round_trips_through_a_state_file() {
    let h = start().await;
    let admin = h.server.client();
    let fresh = json!({"userid": "wmSaved", "type": 2, "join_time": 1700000000, "join_scene": 3});
    let version = admin.add_member(CORP, "wrJack1", fresh).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let mut state = admin.state().await.unwrap();
    // `/sim/state` masks the secrets: a state file made from it needs them put back.
    for corp in &mut state.corps {
        assert_eq!(corp.secret, sim::MASKED_SECRET);
        corp.secret = if corp.corp_id == CORP { SECRET } else { BIG_SECRET }.to_owned();
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&state).unwrap()).unwrap();

    let loaded = SimState::load(&path).unwrap();
    let again = Harness { server: sim::spawn(loaded, "127.0.0.1:0".parse().unwrap()).await.unwrap(), http: h.http };
    let token = again.token().await;
    let answer = again.get_group(&token, "wrJack1", 0).await;
    assert_eq!(version_of(&answer), version);
    assert!(member_ids(&answer).contains("wmSaved"));
    assert_eq!(again.get_group(&token, "wrDismissed00000000000000AAAA", 0).await["errcode"], 40050);
}

#[tokio::test]
async fn run_refuses_a_missing_state_file_and_stops_on_shutdown() {
    let any_port = "127.0.0.1:0".parse().unwrap();
    let missing = sim::run(any_port, Some("/nonexistent/sim-state.json".into()), async {}).await;
    assert!(missing.is_err());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(sim::run(any_port, None, async {
        stopped.await.ok();
    }));
    stop.send(()).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(5), server).await.expect("run ends on shutdown");
    result.unwrap().expect("the bundled state serves");
}

/// `GET /sim/state` needs no authentication, so it shows no secret.
#[tokio::test]
async fn state_masks_every_corp_secret() {
    let h = start().await;
    let text = h.http.get(h.url("/sim/state")).send().await.unwrap().text().await.unwrap();
    assert!(!text.contains(SECRET) && !text.contains(BIG_SECRET), "{text}");
    let state: SimState = serde_json::from_str(&text).unwrap();
    assert_eq!(state.corps.len(), 2);
    assert!(state.corps.iter().all(|c| c.secret == sim::MASKED_SECRET));
    // The secrets still work where they belong.
    assert_eq!(h.gettoken(CORP, SECRET).await["errcode"], 0);
}
