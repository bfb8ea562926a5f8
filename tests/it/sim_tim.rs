//! The Tencent Cloud IM simulator, driven over real HTTP: UserSig checks, the three REST APIs,
//! callbacks received by a small server in the test, faults, stats, state masking; and the
//! fixtures in `fixtures/tim`.
//!
//! UserSigs come from the service's generator (`provider::tim::usersig`) and are checked by the
//! simulator's own verifier: the two implementations must agree.

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::routing::post;
use axum::Router;
use groupwatch::provider::tim::usersig::gen_usersig;
use groupwatch::sim::{
    self, SharedSim, SimServer, SimState, TimEventTime, TimExitType, TimJoinType, TimNotify, TimStats,
};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The app of Tencent's get_group_info sample (its `Appid`), so the answer can equal it.
const APP: u64 = 1_400_001_001;
const ADMIN: &str = "administrator";
const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const TOKEN: &str = "tim-callback-token";
/// A second app, holding the seed's variants of the sample groups.
const OTHER_APP: u64 = 1_400_000_002;
const OTHER_KEY: &str = "another-secret-key";

const DOC: &str = "@TGS#2J4SZEAEL";
const BIG: &str = "@TGS#2BIGGROUP";
const DESTROYED: &str = "@TGS#2DESTROYED";
const AVCHAT: &str = "@TGS#aLIVEROOM";
const COMMUNITY: &str = "@TGS#_MyCommunity01";
const BIG_SIZE: usize = 250;

fn fixture(name: &str) -> Value {
    let path = format!("{}/fixtures/tim/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn fixture_text(name: &str) -> String {
    std::fs::read_to_string(format!("{}/fixtures/tim/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn member(account: &str, role: &str, join_time: i64) -> Value {
    json!({"Member_Account": account, "Role": role, "JoinTime": join_time})
}

fn group(id: &str, group_type: &str, owner: &str, others: &[&str]) -> Value {
    let mut members = vec![member(owner, "Owner", 1_600_000_000)];
    members.extend(others.iter().enumerate().map(|(i, a)| member(a, "Member", 1_600_000_001 + i as i64)));
    json!({"GroupId": id, "Type": group_type, "Name": format!("group {id}"), "Owner_Account": owner,
           "CreateTime": 1_600_000_000, "MemberList": members})
}

/// The seed's variant of the sample group: two app-defined keys everywhere.
fn seed_group() -> Value {
    let data = json!([{"Key": "MemberDefined1", "Value": "ModifyDefined1"}, {"Key": "MemberDefined2", "Value": "ModifyDefined2"}]);
    let mut g = fixture("get_group_info.json")["GroupInfo"][0].clone();
    g["AppDefinedData"] =
        json!([{"Key": "GroupTestData1", "Value": "xxxx"}, {"Key": "GroupTestData2", "Value": "abc\u{0}\u{1}"}]);
    g["Appid"] = json!(OTHER_APP);
    for m in g["MemberList"].as_array_mut().unwrap() {
        m["AppMemberDefinedData"] = data.clone();
    }
    g
}

/// The group of the get_group_member_info sample, its `"Member "` role pasted as is.
fn member_doc_group() -> Value {
    let answer = fixture("get_group_member_info.json");
    json!({"GroupId": "@TGS#1NVTZEAE4", "Type": "Public", "Name": "member doc", "Owner_Account": "bob",
           "CreateTime": 1_425_976_000, "MemberNum": 2, "MemberList": answer["MemberList"]})
}

fn test_state() -> SimState {
    // Tencent's own answer, pasted: ErrorCode, ErrorInfo, Appid and MemberNum are accepted.
    let doc = fixture("get_group_info.json")["GroupInfo"][0].clone();
    let big_members: Vec<String> = (1..BIG_SIZE).map(|i| format!("user{i:03}")).collect();
    let big_refs: Vec<&str> = big_members.iter().map(String::as_str).collect();
    let mut destroyed = group(DESTROYED, "Public", "leckie", &["peter"]);
    destroyed["SimDestroyed"] = json!(true);
    let mut big = group(BIG, "Public", "user000", &big_refs);
    // An admin in the middle, for the role filter.
    big["MemberList"][120]["Role"] = json!("Admin");
    serde_json::from_value(json!({"corps": [], "tim": [
        {"sdk_app_id": APP, "identifier": ADMIN, "secret_key": KEY, "callback_token": TOKEN, "groups": [
            doc,
            big,
            destroyed,
            group(AVCHAT, "AVChatRoom", "host", &["viewer1", "viewer2"]),
            group(COMMUNITY, "Community", "founder", &["c1", "c2", "c3", "c4"]),
            group("@TGS#1SMALL01", "Private", "bob", &["alice"]),
            group("@TGS#1SMALL02", "Private", "bob", &["carol"]),
        ]},
        {"sdk_app_id": OTHER_APP, "identifier": "admin", "secret_key": OTHER_KEY, "callback_token": "", "groups": [
            seed_group(),
            member_doc_group(),
        ]},
    ]}))
    .expect("test state is valid")
}

const LIVE_GROUPS: [&str; 6] = [DOC, BIG, AVCHAT, COMMUNITY, "@TGS#1SMALL01", "@TGS#1SMALL02"];

struct Harness {
    server: SimServer,
    http: reqwest::Client,
}

async fn start() -> Harness {
    let server = sim::spawn(test_state(), "127.0.0.1:0".parse().unwrap()).await.expect("simulator starts");
    Harness { server, http: reqwest::Client::builder().no_proxy().build().unwrap() }
}

fn sig_for(app: u64, identifier: &str, key: &str) -> String {
    gen_usersig(app, identifier, key, now(), 86_400)
}

type Query = Vec<(&'static str, String)>;

fn query(app: u64, identifier: &str, usersig: &str) -> Query {
    vec![
        ("sdkappid", app.to_string()),
        ("identifier", identifier.to_owned()),
        ("usersig", usersig.to_owned()),
        ("random", "99999999".to_owned()),
        ("contenttype", "json".to_owned()),
    ]
}

impl Harness {
    async fn raw(&self, command: &str, query: &[(&str, String)], body: &str) -> reqwest::Response {
        let url = format!("{}/v4/group_open_http_svc/{command}", self.server.base_url());
        self.http.post(url).query(query).body(body.to_owned()).send().await.unwrap()
    }

    async fn call_with(&self, command: &str, query: &[(&str, String)], body: &Value) -> Value {
        let response = self.raw(command, query, &body.to_string()).await;
        assert_eq!(response.status(), 200, "Tencent answers errors with HTTP 200");
        response.json().await.unwrap()
    }

    /// As the app admin of APP with a valid sig.
    async fn call(&self, command: &str, body: Value) -> Value {
        self.call_with(command, &query(APP, ADMIN, &sig_for(APP, ADMIN, KEY)), &body).await
    }

    async fn call_other(&self, command: &str, body: Value) -> Value {
        self.call_with(command, &query(OTHER_APP, "admin", &sig_for(OTHER_APP, "admin", OTHER_KEY)), &body).await
    }

    async fn info(&self, ids: &[&str]) -> Value {
        self.call("get_group_info", json!({ "GroupIdList": ids })).await
    }

    async fn members(&self, body: Value) -> Value {
        self.call("get_group_member_info", body).await
    }
}

fn ok(answer: &Value) {
    assert_eq!(answer["ActionStatus"], "OK", "{answer}");
    assert_eq!(answer["ErrorCode"], 0, "{answer}");
}

fn fails(answer: &Value, code: i64) {
    assert_eq!(answer["ActionStatus"], "FAIL", "{answer}");
    assert_eq!(answer["ErrorCode"], code, "{answer}");
    assert!(answer["ErrorInfo"].as_str().is_some_and(|i| !i.is_empty()), "{answer}");
    assert_eq!(answer.as_object().unwrap().len(), 3, "an error answer has nothing else: {answer}");
}

fn accounts(list: &Value) -> Vec<String> {
    list.as_array().unwrap().iter().map(|m| m["Member_Account"].as_str().unwrap().to_owned()).collect()
}

/// Every object key of a JSON text, in the order written (nested ones included).
fn keys_in_order(text: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '"' {
            continue;
        }
        let mut s = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => break,
                c => s.push(c),
            }
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek() == Some(&':') {
            keys.push(s);
        }
    }
    keys
}

// ---------------------------------------------------------------------------------------------
// UserSig and the query
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_valid_usersig_gets_the_documented_answer_byte_for_byte_in_order() {
    let h = start().await;
    let response = h
        .raw(
            "get_group_info",
            &query(APP, ADMIN, &sig_for(APP, ADMIN, KEY)),
            &json!({"GroupIdList": [DOC]}).to_string(),
        )
        .await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer, fixture("get_group_info.json"));
    assert_eq!(keys_in_order(&text), keys_in_order(&fixture_text("get_group_info.json")), "field order as documented");
}

#[tokio::test]
async fn bad_expired_and_mismatched_usersigs_are_refused_with_tencents_codes() {
    let h = start().await;
    let body = json!({"GroupIdList": [DOC]});
    let cases: Vec<(&str, Query, i64)> = vec![
        ("signed with another key", query(APP, ADMIN, &sig_for(APP, ADMIN, OTHER_KEY)), 70009),
        ("expired", query(APP, ADMIN, &gen_usersig(APP, ADMIN, KEY, now() - 1000, 10)), 70001),
        ("sig of another identifier", query(APP, ADMIN, &sig_for(APP, "bob", KEY)), 70013),
        ("sig of another app", query(APP, ADMIN, &sig_for(OTHER_APP, ADMIN, KEY)), 70014),
        ("not a usersig", query(APP, ADMIN, "eJyrVkrNS8ksSizJzM9TsgJSBQ__"), 70003),
        ("truncated", query(APP, ADMIN, &sig_for(APP, ADMIN, KEY)[..40]), 70003),
        ("unknown app", query(1_400_999_999, ADMIN, &sig_for(1_400_999_999, ADMIN, KEY)), 70020),
        ("valid sig, not the app admin", query(APP, "bob", &sig_for(APP, "bob", KEY)), 60010),
        ("no usersig", query(APP, ADMIN, ""), 60004),
        ("'+', '/', '=' left unsubstituted", query(APP, ADMIN, &unsubstituted_sig()), 70003),
    ];
    let refused = cases.len() as u64;
    for (what, q, code) in cases {
        let answer = h.call_with("get_group_info", &q, &body).await;
        assert_eq!(answer["ErrorCode"], code, "{what}: {answer}");
        fails(&answer, code);
    }
    let mut no_app = query(APP, ADMIN, &sig_for(APP, ADMIN, KEY));
    no_app.remove(0);
    fails(&h.call_with("get_group_info", &no_app, &body).await, 60012);
    let mut bad_random = query(APP, ADMIN, &sig_for(APP, ADMIN, KEY));
    bad_random[3].1 = "4294967296".into();
    fails(&h.call_with("get_group_info", &bad_random, &body).await, 60002);

    let stats = h.server.client().tim_stats().await.unwrap();
    assert_eq!(stats.auth_refused, refused + 2);
    assert_eq!(stats.get_group_info, refused + 2, "refused calls are counted");
    assert!(stats.get_group_info_batches.is_empty(), "no refused call reached the groups");
    ok(&h.info(&[DOC]).await);
}

/// A valid sig with TLSSigAPIv2's step-5 substitution undone.
fn unsubstituted_sig() -> String {
    (86_400..)
        .map(|expire| gen_usersig(APP, ADMIN, KEY, now(), expire))
        .map(|sig| sig.replace('*', "+").replace('-', "/").replace('_', "="))
        .find(|sig| sig.contains(['+', '/', '=']))
        .unwrap()
}

#[tokio::test]
async fn expire_usersig_before_refuses_older_sigs_until_cleared() {
    let h = start().await;
    let admin = h.server.client();
    let issued_now = sig_for(APP, ADMIN, KEY);
    let q = query(APP, ADMIN, &issued_now);
    admin.tim_fault(json!({"expire_usersig_before": now() + 5})).await.unwrap();
    fails(&h.call_with("get_group_info", &q, &json!({"GroupIdList": [DOC]})).await, 70001);
    let later = gen_usersig(APP, ADMIN, KEY, now() + 5, 86_400);
    ok(&h.call_with("get_group_info", &query(APP, ADMIN, &later), &json!({"GroupIdList": [DOC]})).await);
    admin.tim_clear_faults().await.unwrap();
    ok(&h.call_with("get_group_info", &q, &json!({"GroupIdList": [DOC]})).await);
}

#[tokio::test]
async fn malformed_bodies_and_unknown_commands_are_refused() {
    let h = start().await;
    let q = query(APP, ADMIN, &sig_for(APP, ADMIN, KEY));
    let not_json = h.raw("get_group_info", &q, "{\"GroupIdList\": [").await.json::<Value>().await.unwrap();
    fails(&not_json, 60003);
    fails(&h.call("get_group_info", json!({})).await, 10004);
    let typo = h.call("get_group_info", json!({"GroupIdList": [DOC], "ResponseFilters": {}})).await;
    fails(&typo, 10004);
    assert!(typo["ErrorInfo"].as_str().unwrap().contains("ResponseFilters"), "{typo}");
    fails(&h.call("get_group_info", json!({"GroupIdList": DOC})).await, 10004);
    fails(&h.call("create_group", json!({})).await, 10003);
    assert_eq!(h.server.client().tim_stats().await.unwrap().other, 1);
}

// ---------------------------------------------------------------------------------------------
// get_group_info
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn get_group_info_takes_1_to_50_groups() {
    let h = start().await;
    let fifty: Vec<String> = (0..50).map(|i| format!("@TGS#n{i}")).collect();
    let mut fifty_one = fifty.clone();
    fifty_one.push(DOC.into());
    let refused = h.call("get_group_info", json!({ "GroupIdList": fifty_one })).await;
    fails(&refused, 10004);
    assert!(refused.get("GroupInfo").is_none());
    fails(&h.call("get_group_info", json!({"GroupIdList": []})).await, 10004);
    let answered = h.call("get_group_info", json!({ "GroupIdList": fifty })).await;
    ok(&answered);
    let entries = answered["GroupInfo"].as_array().unwrap();
    assert_eq!(entries.len(), 50);
    assert!(entries.iter().all(|e| e["ErrorCode"] == 10015), "unknown groups each answer 10015");
}

#[tokio::test]
async fn each_group_has_its_own_error_code_and_the_others_are_answered() {
    let h = start().await;
    let answer = h.info(&["@TGS#1SMALL01", "@TGS#NOSUCH", DESTROYED, DOC]).await;
    ok(&answer);
    let entries = answer["GroupInfo"].as_array().unwrap();
    let ids: Vec<&str> = entries.iter().map(|e| e["GroupId"].as_str().unwrap()).collect();
    assert_eq!(ids, ["@TGS#1SMALL01", "@TGS#NOSUCH", DESTROYED, DOC], "in request order");
    assert_eq!(entries[0]["ErrorCode"], 0);
    assert_eq!(accounts(&entries[0]["MemberList"]), ["bob", "alice"]);
    for (entry, code) in [(&entries[1], 10015), (&entries[2], 10010)] {
        assert_eq!(entry["ErrorCode"], code, "{entry}");
        let keys: BTreeSet<&str> = entry.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, BTreeSet::from(["ErrorCode", "ErrorInfo", "GroupId"]), "{entry}");
    }
    assert_eq!(entries[3]["MemberNum"], 2);

    h.server.client().tim_destroy_group(APP, "@TGS#1SMALL01", &TimNotify::default()).await.unwrap();
    assert_eq!(h.info(&["@TGS#1SMALL01"]).await["GroupInfo"][0]["ErrorCode"], 10010);
    let members = h.members(json!({"GroupId": "@TGS#1SMALL01"})).await;
    fails(&members, 10010);
    fails(&h.members(json!({"GroupId": "@TGS#NOSUCH"})).await, 10015);
}

#[tokio::test]
async fn response_filter_returns_only_what_it_names() {
    let h = start().await;
    let filtered = h
        .call(
            "get_group_info",
            json!({"GroupIdList": [DOC], "ResponseFilter": {
                "GroupBaseInfoFilter": ["Name", "Owner_Account", "InfoSeq"],
                "MemberInfoFilter": ["Role"],
            }}),
        )
        .await;
    ok(&filtered);
    let entry = filtered["GroupInfo"][0].as_object().unwrap();
    let keys: Vec<&str> = entry.keys().map(String::as_str).collect();
    let expected = ["ErrorCode", "ErrorInfo", "GroupId", "InfoSeq", "MemberList", "Name", "Owner_Account"];
    assert_eq!(BTreeSet::from_iter(keys), BTreeSet::from(expected), "{entry:?}");
    assert_eq!(
        entry["MemberList"],
        json!([{"Member_Account": "leckie", "Role": "Owner"}, {"Member_Account": "peter", "Role": "Member"}])
    );

    let base_only = h
        .call("get_group_info", json!({"GroupIdList": [DOC], "ResponseFilter": {"GroupBaseInfoFilter": ["MemberNum"]}}))
        .await;
    assert_eq!(base_only["GroupInfo"][0]["MemberNum"], 2);
    assert!(base_only["GroupInfo"][0].get("MemberList").is_none(), "no MemberInfoFilter, no members");

    let bad = h
        .call("get_group_info", json!({"GroupIdList": [DOC], "ResponseFilter": {"GroupBaseInfoFilter": ["Notice"]}}))
        .await;
    fails(&bad, 10004);
    assert!(bad["ErrorInfo"].as_str().unwrap().contains("Notice"), "{bad}");
    fails(
        &h.call("get_group_info", json!({"GroupIdList": [DOC], "ResponseFilter": {"MemberInfoFilter": ["Nick"]}}))
            .await,
        10004,
    );
}

#[tokio::test]
async fn the_seeds_filter_example_gets_the_seeds_answer() {
    let h = start().await;
    let request = json!({"GroupIdList": [DOC], "ResponseFilter": {
        "GroupBaseInfoFilter": ["Type", "Name", "Introduction", "Notification"],
        "MemberInfoFilter": ["Account", "Role"],
        "AppDefinedDataFilter_Group": ["GroupTestData1", "GroupTestData2"],
        "AppDefinedDataFilter_GroupMember": ["MemberDefined2", "MemberDefined1"],
    }});
    assert_eq!(h.call_other("get_group_info", request).await, fixture("get_group_info_filtered.json"));
    let one_key = json!({"GroupIdList": [DOC], "ResponseFilter": {"AppDefinedDataFilter_Group": ["GroupTestData2"]}});
    let answer = h.call_other("get_group_info", one_key).await;
    assert_eq!(answer["GroupInfo"][0]["AppDefinedData"], json!([{"Key": "GroupTestData2", "Value": "abc\u{0}\u{1}"}]));
}

#[tokio::test]
async fn big_groups_list_only_their_first_members_in_get_group_info() {
    let h = start().await;
    let answer = h.info(&[BIG]).await;
    let entry = &answer["GroupInfo"][0];
    assert_eq!(entry["MemberNum"], BIG_SIZE);
    let listed = accounts(&entry["MemberList"]);
    assert_eq!(listed.len(), 100, "the rest must be paged with get_group_member_info");
    assert_eq!(listed[0], "user000");
    assert_eq!(listed[99], "user099");
}

#[tokio::test]
async fn avchatrooms_have_no_member_list() {
    let h = start().await;
    let entry = h.info(&[AVCHAT]).await["GroupInfo"][0].clone();
    assert_eq!(entry["ErrorCode"], 0);
    assert_eq!(entry["Type"], "AVChatRoom");
    assert!(entry.get("MemberNum").is_none() && entry.get("MemberList").is_none(), "{entry}");
    fails(&h.members(json!({"GroupId": AVCHAT})).await, 10007);
}

// ---------------------------------------------------------------------------------------------
// get_group_member_info
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn member_paging_covers_a_big_group_exactly_once() {
    let h = start().await;
    let mut seen = Vec::new();
    let mut pages = Vec::new();
    for offset in (0..).step_by(100) {
        let page = h.members(json!({"GroupId": BIG, "Limit": 100, "Offset": offset})).await;
        ok(&page);
        assert_eq!(page["MemberNum"], BIG_SIZE, "the whole count on every page");
        assert!(page.get("Next").is_none(), "only Community answers carry Next");
        let accounts = accounts(&page["MemberList"]);
        pages.push(accounts.len());
        if accounts.is_empty() {
            break;
        }
        seen.extend(accounts);
    }
    assert_eq!(pages, [100, 100, 50, 0]);
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!((seen.len(), unique.len()), (BIG_SIZE, BIG_SIZE));

    fails(&h.members(json!({"GroupId": BIG, "Limit": 201})).await, 10004);
    fails(&h.members(json!({"GroupId": BIG, "Limit": 0})).await, 10004);
    fails(&h.members(json!({"GroupId": BIG, "Offset": -1})).await, 10004);
    fails(&h.members(json!({"GroupId": BIG, "Next": ""})).await, 10004);
    assert_eq!(h.members(json!({"GroupId": BIG, "Limit": 200})).await["MemberList"].as_array().unwrap().len(), 200);
    let default = h.members(json!({"GroupId": BIG})).await;
    assert_eq!(default["MemberList"].as_array().unwrap().len(), 100, "no Limit: 100 (chosen)");
}

#[tokio::test]
async fn member_filters_pick_fields_and_roles() {
    let h = start().await;
    let admins = h.members(json!({"GroupId": BIG, "MemberRoleFilter": ["Owner", "Admin"]})).await;
    assert_eq!(admins["MemberNum"], BIG_SIZE);
    assert_eq!(accounts(&admins["MemberList"]), ["user000", "user120"]);
    let fields = h.members(json!({"GroupId": BIG, "MemberInfoFilter": ["JoinTime", "NameCard"], "Limit": 1})).await;
    assert_eq!(fields["MemberList"], json!([{"Member_Account": "user000", "JoinTime": 1_600_000_000, "NameCard": ""}]));
    fails(&h.members(json!({"GroupId": BIG, "MemberRoleFilter": ["Boss"]})).await, 10004);
}

#[tokio::test]
async fn get_group_member_info_answers_the_documented_shape() {
    let h = start().await;
    let response = h
        .raw(
            "get_group_member_info",
            &query(OTHER_APP, "admin", &sig_for(OTHER_APP, "admin", OTHER_KEY)),
            &json!({"GroupId": "@TGS#1NVTZEAE4", "Limit": 100, "Offset": 0}).to_string(),
        )
        .await;
    let text = response.text().await.unwrap();
    let mut expected = fixture("get_group_member_info.json");
    // The doc's "Member " is trimmed on load; the simulator answers clean roles.
    expected["MemberList"][1]["Role"] = json!("Member");
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), expected);
    assert_eq!(keys_in_order(&text), keys_in_order(&fixture_text("get_group_member_info.json")));
}

#[tokio::test]
async fn community_members_page_with_next() {
    let h = start().await;
    fails(&h.members(json!({"GroupId": COMMUNITY, "Offset": 0})).await, 10004);
    let mut next = String::new();
    let mut seen = Vec::new();
    for _ in 0..10 {
        let page = h.members(json!({"GroupId": COMMUNITY, "Limit": 2, "Next": next})).await;
        ok(&page);
        assert_eq!(page["MemberNum"], 5);
        seen.extend(accounts(&page["MemberList"]));
        next = page["Next"].as_str().expect("Community answers carry Next").to_owned();
        if next.is_empty() {
            break;
        }
        assert!(next.len() > 10 && next.bytes().all(|b| b.is_ascii_digit()), "{next}");
    }
    assert_eq!(seen, ["founder", "c1", "c2", "c3", "c4"]);
    fails(&h.members(json!({"GroupId": COMMUNITY, "Next": "12"})).await, 10004);
}

// ---------------------------------------------------------------------------------------------
// get_appid_group_list
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn group_list_pages_with_next_over_live_groups() {
    let h = start().await;
    let mut next = 0u64;
    let mut pages = Vec::new();
    loop {
        let page = h.call("get_appid_group_list", json!({"Limit": 4, "Next": next})).await;
        ok(&page);
        assert_eq!(page["TotalCount"], LIVE_GROUPS.len(), "Limit and Next do not change TotalCount");
        let ids: Vec<String> =
            page["GroupIdList"].as_array().unwrap().iter().map(|g| g["GroupId"].as_str().unwrap().to_owned()).collect();
        assert!(page["GroupIdList"].as_array().unwrap().iter().all(|g| g.as_object().unwrap().len() == 1));
        pages.push(ids);
        next = page["Next"].as_u64().expect("Next is an integer");
        if next == 0 {
            break;
        }
        assert!(pages.len() < 5, "paging ends");
    }
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [4, 2]);
    assert_eq!(pages.concat(), LIVE_GROUPS, "creation order, the destroyed group left out");

    let all = h.call("get_appid_group_list", json!({})).await;
    assert_eq!(all["GroupIdList"].as_array().unwrap().len(), LIVE_GROUPS.len(), "Limit defaults to 10000");
    assert_eq!(all["Next"], 0);
    let private = h.call("get_appid_group_list", json!({"GroupType": "Private"})).await;
    assert_eq!(private["TotalCount"], 2, "TotalCount counts the type asked for");
    fails(&h.call("get_appid_group_list", json!({"Limit": 10_001})).await, 10004);
    fails(&h.call("get_appid_group_list", json!({"GroupType": "Secret"})).await, 10004);
}

#[tokio::test]
async fn group_list_paging_survives_changes_between_pages() {
    let h = start().await;
    let admin = h.server.client();
    let first = h.call("get_appid_group_list", json!({"Limit": 3})).await;
    let next = first["Next"].as_u64().unwrap();
    admin.tim_destroy_group(APP, DOC, &TimNotify::default()).await.unwrap();
    admin
        .tim_put_group(APP, "@TGS#1NEWONE", group("@TGS#1NEWONE", "Private", "zed", &[]), &TimNotify::default())
        .await
        .unwrap();
    let rest = h.call("get_appid_group_list", json!({"Limit": 100, "Next": next})).await;
    let ids: Vec<&str> =
        rest["GroupIdList"].as_array().unwrap().iter().map(|g| g["GroupId"].as_str().unwrap()).collect();
    assert_eq!(ids, [COMMUNITY, "@TGS#1SMALL01", "@TGS#1SMALL02", "@TGS#1NEWONE"]);
}

// ---------------------------------------------------------------------------------------------
// Callbacks
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct Received {
    query: HashMap<String, String>,
    query_keys: Vec<String>,
    content_type: String,
    body: String,
}

/// A stand-in for the service's callback endpoint: records what arrives, answers like a good
/// receiver.
async fn callback_receiver() -> (String, mpsc::UnboundedReceiver<Received>) {
    async fn receive(
        State(tx): State<mpsc::UnboundedSender<Received>>,
        RawQuery(query): RawQuery,
        headers: HeaderMap,
        body: Bytes,
    ) -> &'static str {
        let pairs: Vec<(String, String)> =
            url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()).into_owned().collect();
        let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        tx.send(Received {
            query_keys: pairs.iter().map(|(k, _)| k.clone()).collect(),
            query: pairs.into_iter().collect(),
            content_type,
            body: String::from_utf8(body.to_vec()).unwrap(),
        })
        .unwrap();
        r#"{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}"#
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route("/tim/acme/callback", post(receive)).with_state(tx);
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/tim/acme/callback"), rx)
}

async fn received(rx: &mut mpsc::UnboundedReceiver<Received>) -> Received {
    tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("a callback arrives").unwrap()
}

/// The envelope Tencent documents, with a Sign the test recomputes itself.
fn assert_envelope(r: &Received, command: &str) -> Value {
    assert_eq!(
        r.query_keys,
        ["SdkAppid", "CallbackCommand", "contenttype", "ClientIP", "OptPlatform", "Sign", "RequestTime"]
    );
    assert_eq!(r.query["SdkAppid"], APP.to_string());
    assert_eq!(r.query["CallbackCommand"], command);
    assert_eq!(r.query["contenttype"], "json");
    assert_eq!(r.query["OptPlatform"], "RESTAPI");
    assert!(r.query["ClientIP"].parse::<std::net::IpAddr>().is_ok());
    let request_time: i64 = r.query["RequestTime"].parse().unwrap();
    assert!((request_time - now()).abs() <= 60, "RequestTime is now, in seconds: {request_time}");
    let sign = hex::encode(Sha256::digest(format!("{TOKEN}{request_time}")));
    assert_eq!(r.query["Sign"], sign);
    assert!(r.content_type.starts_with("application/json"), "{}", r.content_type);
    let body: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(body["CallbackCommand"], command);
    body
}

/// The body's keys are the documented ones, in the documented order (the fixture may carry
/// optional keys the simulator never sends, such as `UserDefinedDataList`).
fn assert_shape(r: &Received, fixture_name: &str) {
    let sent = keys_in_order(&r.body);
    let documented: Vec<String> = keys_in_order(&fixture_text(fixture_name));
    let kept: Vec<String> = documented.iter().filter(|k| sent.contains(k)).cloned().collect();
    let sent_dedup: Vec<String> = sent.iter().fold(Vec::new(), |mut v, k| {
        if v.last() != Some(k) {
            v.push(k.clone());
        }
        v
    });
    let kept_dedup: Vec<String> = kept.iter().fold(Vec::new(), |mut v, k| {
        if v.last() != Some(k) {
            v.push(k.clone());
        }
        v
    });
    assert_eq!(sent_dedup, kept_dedup, "{fixture_name}: {}", r.body);
}

fn is_recent_ms(value: &Value) -> bool {
    let ms = match value {
        Value::Number(n) => n.as_i64().unwrap(),
        Value::String(s) => s.parse().unwrap(),
        _ => return false,
    };
    (ms - now() * 1000).abs() < 60_000
}

#[tokio::test]
async fn member_changes_send_signed_callbacks_with_the_documented_bodies() {
    let h = start().await;
    let admin = h.server.client();
    let (url, mut rx) = callback_receiver().await;
    admin.tim_set_callback_url(APP, Some(&url)).await.unwrap();

    let change = admin
        .tim_add_members(
            APP,
            DOC,
            json!([{"Member_Account": "jared"}, {"Member_Account": "tommy"}]),
            TimJoinType::Apply,
            &TimNotify::callback().operator("leckie"),
        )
        .await
        .unwrap();
    let report = change.callback.expect("a callback was sent");
    assert_eq!(report.status, Some(200));
    assert_eq!(report.response_body.as_deref(), Some(r#"{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}"#));
    assert_eq!(report.command, "Group.CallbackAfterNewMemberJoin");
    assert_eq!(change.group.member_num, Some(4));
    let r = received(&mut rx).await;
    assert_eq!(report.request_body, r.body);
    let body = assert_envelope(&r, "Group.CallbackAfterNewMemberJoin");
    assert_shape(&r, "after_new_member_join.json");
    assert!(body["EventTime"].is_i64() && is_recent_ms(&body["EventTime"]), "{body}");
    let mut expected = fixture("after_new_member_join.json");
    expected["EventTime"] = body["EventTime"].clone();
    assert_eq!(body, expected, "the documented sample, EventTime aside");

    let notify = TimNotify::callback().event_time(TimEventTime::String);
    admin.tim_remove_members(APP, DOC, &["jared"], TimExitType::Quit, &notify).await.unwrap();
    let r = received(&mut rx).await;
    let body = assert_envelope(&r, "Group.CallbackAfterMemberExit");
    assert_shape(&r, "after_member_exit.event_time_string.json");
    assert!(body["EventTime"].is_string() && is_recent_ms(&body["EventTime"]), "{body}");
    let mut expected = fixture("after_member_exit.event_time_string.json");
    expected["EventTime"] = body["EventTime"].clone();
    assert_eq!(body, expected, "a Quit is operated by the member itself");

    admin.tim_remove_members(APP, DOC, &["tommy", "peter"], TimExitType::Kicked, &TimNotify::callback()).await.unwrap();
    let body = assert_envelope(&received(&mut rx).await, "Group.CallbackAfterMemberExit");
    assert_eq!(body["ExitType"], "Kicked");
    assert_eq!(body["Operator_Account"], ADMIN, "the app admin by default");
    assert_eq!(accounts(&body["ExitMemberList"]), ["tommy", "peter"]);
    assert_eq!(accounts(&h.info(&[DOC]).await["GroupInfo"][0]["MemberList"]), ["leckie"]);
    assert_eq!(admin.tim_stats().await.unwrap().callbacks_sent, 3);
}

#[tokio::test]
async fn group_lifecycle_callbacks_match_the_documented_bodies() {
    let h = start().await;
    let admin = h.server.client();
    let (url, mut rx) = callback_receiver().await;
    admin.tim_set_callback_url(APP, Some(&url)).await.unwrap();

    let created = group("@TGS#2NEWGROUP", "Public", "leckie", &["bob", "peter"]);
    admin.tim_put_group(APP, "@TGS#2NEWGROUP", created, &TimNotify::callback().operator("group_root")).await.unwrap();
    let r = received(&mut rx).await;
    let body = assert_envelope(&r, "Group.CallbackAfterCreateGroup");
    assert_shape(&r, "after_create_group.json");
    assert_eq!(body["Owner_Account"], "leckie");
    assert_eq!(body["Operator_Account"], "group_root");
    assert_eq!(accounts(&body["MemberList"]), ["bob", "peter"], "the owner is not listed, as in the sample");
    ok(&h.info(&["@TGS#2NEWGROUP"]).await);

    let patch = json!({"Name": "MyNewName", "Notification": "NewNotification"});
    let change =
        admin.tim_patch_group(APP, "@TGS#2NEWGROUP", patch, &TimNotify::callback().operator("leckie")).await.unwrap();
    assert_eq!(change.group.info_seq, 1);
    let r = received(&mut rx).await;
    let body = assert_envelope(&r, "Group.CallbackAfterGroupInfoChanged");
    assert_shape(&r, "after_group_info_changed.json");
    let mut expected = fixture("after_group_info_changed.json");
    expected["GroupId"] = json!("@TGS#2NEWGROUP");
    expected["EventTime"] = body["EventTime"].clone();
    assert_eq!(body, expected, "only the changed fields");

    // An owner change has no Tencent callback.
    let owner = admin
        .tim_patch_group(APP, "@TGS#2NEWGROUP", json!({"Owner_Account": "bob"}), &TimNotify::callback())
        .await
        .unwrap();
    assert!(owner.callback.is_none());
    let roles: Vec<(&str, &str)> =
        owner.group.member_list.iter().map(|m| (m.member_account.as_str(), m.role.as_str())).collect();
    assert_eq!(roles, [("leckie", "Member"), ("bob", "Owner"), ("peter", "Member")]);

    admin.tim_destroy_group(APP, "@TGS#2NEWGROUP", &TimNotify::callback()).await.unwrap();
    let r = received(&mut rx).await;
    let body = assert_envelope(&r, "Group.CallbackAfterGroupDestroyed");
    assert_shape(&r, "after_group_destroyed.json");
    assert_eq!(body["Owner_Account"], "bob");
    assert_eq!(accounts(&body["MemberList"]), ["leckie", "bob", "peter"]);

    admin.tim_destroy_group(APP, COMMUNITY, &TimNotify::callback().event_time(TimEventTime::String)).await.unwrap();
    let r = received(&mut rx).await;
    let body = assert_envelope(&r, "Group.CallbackAfterGroupDestroyed");
    assert_shape(&r, "after_group_destroyed.event_time_string.json");
    assert!(body.get("MemberList").is_none(), "no MemberList for a Community: {body}");
    assert!(rx.try_recv().is_err(), "nothing else was sent");
}

#[tokio::test]
async fn callbacks_need_a_url_and_report_failures() {
    let h = start().await;
    let admin = h.server.client();
    let refused = admin
        .tim_add_members(APP, DOC, json!([{"Member_Account": "x"}]), TimJoinType::Invited, &TimNotify::callback())
        .await;
    assert!(format!("{:?}", refused.unwrap_err()).contains("409"));
    assert_eq!(h.info(&[DOC]).await["GroupInfo"][0]["MemberNum"], 2, "nothing changed");

    // Nothing listens there: the change happens, the report says why no answer came.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_url = format!("http://{}/cb", dead.local_addr().unwrap());
    drop(dead);
    admin.tim_set_callback_url(APP, Some(&dead_url)).await.unwrap();
    let change = admin
        .tim_add_members(APP, DOC, json!([{"Member_Account": "x"}]), TimJoinType::Invited, &TimNotify::callback())
        .await
        .unwrap();
    let report = change.callback.unwrap();
    assert_eq!(report.status, None);
    assert!(report.error.is_some(), "{report:?}");
    assert_eq!(h.info(&[DOC]).await["GroupInfo"][0]["MemberNum"], 3);

    // Without `callback`, nothing is sent even with a URL.
    let quiet = admin.tim_remove_members(APP, DOC, &["x"], TimExitType::Kicked, &TimNotify::default()).await.unwrap();
    assert!(quiet.callback.is_none());
    assert!(admin.tim_set_callback_url(APP, Some("ftp://example.com/")).await.is_err());
    admin.tim_set_callback_url(APP, None).await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Stale reads, faults, stats
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn stale_fetches_serve_the_group_before_its_latest_change() {
    let h = start().await;
    let admin = h.server.client();
    let before = h.info(&[DOC, "@TGS#1SMALL02"]).await;
    admin
        .tim_add_members(APP, DOC, json!([{"Member_Account": "late"}]), TimJoinType::Invited, &TimNotify::default())
        .await
        .unwrap();
    admin.tim_patch_group(APP, "@TGS#1SMALL02", json!({"Name": "renamed"}), &TimNotify::default()).await.unwrap();

    admin.tim_fault(json!({"stale_fetches": 2})).await.unwrap();
    assert_eq!(h.info(&[DOC, "@TGS#1SMALL02"]).await, before, "one stale call serves every group stale");
    let stale_members = h.members(json!({"GroupId": DOC})).await;
    assert_eq!(accounts(&stale_members["MemberList"]), ["leckie", "peter"]);
    assert_eq!(stale_members["MemberNum"], 2);

    let fresh = h.info(&[DOC, "@TGS#1SMALL02"]).await;
    assert_eq!(accounts(&fresh["GroupInfo"][0]["MemberList"]), ["leckie", "peter", "late"]);
    assert_eq!(fresh["GroupInfo"][0]["NextMsgSeq"], 1235, "a join is a system message");
    assert_eq!(fresh["GroupInfo"][1]["Name"], "renamed");
}

#[tokio::test]
async fn injected_error_codes_and_statuses_answer_the_next_calls() {
    let h = start().await;
    let admin = h.server.client();
    admin.tim_fault(json!({"error_code": 10006, "count": 2})).await.unwrap();
    fails(&h.info(&[DOC]).await, 10006);
    fails(&h.call("get_appid_group_list", json!({})).await, 10006);
    ok(&h.info(&[DOC]).await);

    admin.tim_fault(json!({"error_code": 10002, "api": "get_group_member_info"})).await.unwrap();
    ok(&h.info(&[DOC]).await);
    fails(&h.members(json!({"GroupId": DOC})).await, 10002);
    ok(&h.members(json!({"GroupId": DOC})).await);

    admin.tim_fault(json!({"http_status": 502})).await.unwrap();
    let response = h
        .raw(
            "get_group_info",
            &query(APP, ADMIN, &sig_for(APP, ADMIN, KEY)),
            &json!({"GroupIdList": [DOC]}).to_string(),
        )
        .await;
    assert_eq!(response.status(), 502);
    assert!(serde_json::from_str::<Value>(&response.text().await.unwrap()).is_err(), "not a Tencent answer");
    ok(&h.info(&[DOC]).await);

    admin.tim_fault(json!({"latency_ms": 250})).await.unwrap();
    let started = Instant::now();
    ok(&h.info(&[DOC]).await);
    assert!(started.elapsed() >= Duration::from_millis(250), "{:?}", started.elapsed());
    admin.tim_clear_faults().await.unwrap();

    assert!(admin.tim_fault(json!({"error_code": 0})).await.is_err(), "0 is no fault");
    assert!(admin.tim_fault(json!({"errcode": 10006})).await.is_err(), "typos are refused");
    assert!(admin.tim_fault(json!({"api": "get_group_info"})).await.is_err(), "api alone injects nothing");
    // The WeCom faults are separate.
    admin.fault(json!({"errcode": 45009})).await.unwrap();
    ok(&h.info(&[DOC]).await);
}

#[tokio::test]
async fn stats_count_calls_per_api_and_record_each_batch() {
    let h = start().await;
    let admin = h.server.client();
    assert_eq!(admin.tim_stats().await.unwrap(), TimStats::default());
    // A burst over 60 groups, batched as the service should: 50 + 10.
    let ids: Vec<String> = (0..60).map(|i| format!("@TGS#burst{i:02}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    for batch in refs.chunks(50) {
        ok(&h.info(batch).await);
    }
    h.members(json!({"GroupId": DOC})).await;
    h.call("get_appid_group_list", json!({})).await;
    let stats = admin.tim_stats().await.unwrap();
    assert_eq!((stats.get_group_info, stats.get_group_member_info, stats.get_appid_group_list), (2, 1, 1));
    assert_eq!(stats.get_group_info_batches.iter().map(Vec::len).collect::<Vec<_>>(), [50, 10]);
    assert_eq!(stats.get_group_info_batches.concat(), ids);
    let in_process: SharedSim = h.server.sim().clone();
    assert_eq!(in_process.tim_stats(), stats);
    admin.tim_reset_stats().await.unwrap();
    assert_eq!(admin.tim_stats().await.unwrap(), TimStats::default());
    assert_eq!(admin.stats().await.unwrap(), sim::SimStats::default(), "WeCom counters untouched");
}

// ---------------------------------------------------------------------------------------------
// State, admin refusals, fixtures
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_state_never_shows_secrets_and_a_masked_state_does_not_load() {
    let h = start().await;
    let text = h.http.get(format!("{}/sim/state", h.server.base_url())).send().await.unwrap().text().await.unwrap();
    for secret in [KEY, OTHER_KEY, TOKEN] {
        assert!(!text.contains(secret), "{secret} leaked");
    }
    let state: SimState = serde_json::from_str(&text).unwrap();
    let app = state.tim.iter().find(|a| a.sdk_app_id == APP).unwrap();
    assert_eq!((app.secret_key.as_str(), app.callback_token.as_str()), ("***", "***"));
    assert_eq!(app.groups.len(), 7, "destroyed groups are kept, flagged");
    assert!(app.groups.iter().any(|g| g.group_id == DESTROYED && g.destroyed));
    assert!(!format!("{app:?}").contains(KEY));
    let error = sim::SharedSim::new(state).err().expect("a masked state is refused");
    assert!(error.to_string().contains("***"), "{error}");
}

#[tokio::test]
async fn a_state_round_trips_once_the_secrets_are_put_back() {
    let h = start().await;
    let admin = h.server.client();
    admin
        .tim_add_members(
            APP,
            "@TGS#1SMALL01",
            json!([{"Member_Account": "kept", "NameCard": "K"}]),
            TimJoinType::Invited,
            &TimNotify::default(),
        )
        .await
        .unwrap();
    let mut state = admin.state().await.unwrap();
    for app in &mut state.tim {
        (app.secret_key, app.callback_token) =
            if app.sdk_app_id == APP { (KEY.into(), TOKEN.into()) } else { (OTHER_KEY.into(), String::new()) };
    }
    let again =
        Harness { server: sim::spawn(state, "127.0.0.1:0".parse().unwrap()).await.unwrap(), http: h.http.clone() };
    let entry = again.info(&["@TGS#1SMALL01"]).await["GroupInfo"][0].clone();
    assert_eq!(accounts(&entry["MemberList"]), ["bob", "alice", "kept"]);
    assert_eq!(entry["MemberList"][2]["NameCard"], "K");
    assert_eq!(again.info(&[DESTROYED]).await["GroupInfo"][0]["ErrorCode"], 10010);
    assert_eq!(
        again.call("get_appid_group_list", json!({})).await["GroupIdList"],
        h.call("get_appid_group_list", json!({})).await["GroupIdList"]
    );
}

#[tokio::test]
async fn admin_changes_refuse_what_tencent_would_not_do() {
    let h = start().await;
    let admin = h.server.client();
    let none = TimNotify::default();
    let cases = [
        admin.tim_add_members(APP, DOC, json!([{"Member_Account": "peter"}]), TimJoinType::Invited, &none).await.err(),
        admin
            .tim_add_members(APP, DOC, json!([{"Member_Account": "z", "Role": "Owner"}]), TimJoinType::Invited, &none)
            .await
            .err(),
        admin.tim_remove_members(APP, DOC, &["leckie"], TimExitType::Kicked, &none).await.err(),
        admin.tim_remove_members(APP, DOC, &["nobody"], TimExitType::Kicked, &none).await.err(),
        admin.tim_remove_members(APP, BIG, &["user001", "user002"], TimExitType::Quit, &none).await.err(),
        admin.tim_patch_group(APP, DOC, json!({"Owner_Account": "stranger"}), &none).await.err(),
        admin.tim_patch_group(APP, DOC, json!({"Notice": "x"}), &none).await.err(),
        admin.tim_patch_group(APP, DESTROYED, json!({"Name": "x"}), &none).await.err(),
        admin
            .tim_put_group(
                APP,
                "@TGS#x",
                json!({"GroupId": "@TGS#y", "Type": "Public", "Name": "n", "CreateTime": 1}),
                &none,
            )
            .await
            .err(),
        admin.tim_put_group(APP, "@TGS#x", json!({"Type": "Secret", "Name": "n", "CreateTime": 1}), &none).await.err(),
        admin.tim_put_group(APP, DOC, group(DOC, "Public", "leckie", &[]), &TimNotify::callback()).await.err(),
        admin.tim_destroy_group(1_400_999_999, DOC, &none).await.err(),
    ];
    for (i, case) in cases.iter().enumerate() {
        assert!(case.is_some(), "case {i} was accepted");
    }
    let unchanged = h.info(&[DOC]).await;
    assert_eq!(unchanged, fixture("get_group_info.json"), "no refused change touched the group");
    // Destroying twice is not an error, and sends nothing the second time.
    admin.tim_destroy_group(APP, DOC, &none).await.unwrap();
    assert!(admin.tim_destroy_group(APP, DOC, &none).await.unwrap().group.destroyed);
}

#[tokio::test]
async fn the_bundled_state_serves_its_tim_app() {
    let server = sim::spawn(SimState::bundled().unwrap(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let h = Harness { server, http: reqwest::Client::builder().no_proxy().build().unwrap() };
    let app = 1_400_000_000;
    let q = query(app, ADMIN, &sig_for(app, ADMIN, KEY));
    let list = h.call_with("get_appid_group_list", &q, &json!({})).await;
    ok(&list);
    assert!(list["TotalCount"].as_u64().unwrap() >= 2, "{list}");
    let info = h.call_with("get_group_info", &q, &json!({"GroupIdList": ["@TGS#1NVTZEAE4"]})).await;
    assert_eq!(info["GroupInfo"][0]["ErrorCode"], 0);
    assert_eq!(info["GroupInfo"][0]["MemberList"][1]["NameCard"], "Alice (PM)");
}

#[test]
fn fixtures_are_the_documented_shapes() {
    let vector = fixture("usersig_vector.json");
    let sig = groupwatch::provider::tim::usersig::hmac_sig(
        vector["sdk_app_id"].as_u64().unwrap(),
        vector["identifier"].as_str().unwrap(),
        vector["secret_key"].as_str().unwrap(),
        vector["time"].as_i64().unwrap(),
        vector["expire"].as_i64().unwrap(),
    );
    assert_eq!(sig, vector["sig"].as_str().unwrap());
    let content = format!(
        "TLS.identifier:{}\nTLS.sdkappid:{}\nTLS.time:{}\nTLS.expire:{}\n",
        vector["identifier"].as_str().unwrap(),
        vector["sdk_app_id"],
        vector["time"],
        vector["expire"]
    );
    assert_eq!(content, vector["content"].as_str().unwrap());

    for (stem, command, list) in [
        ("after_new_member_join", "Group.CallbackAfterNewMemberJoin", Some("NewMemberList")),
        ("after_member_exit", "Group.CallbackAfterMemberExit", Some("ExitMemberList")),
        ("after_create_group", "Group.CallbackAfterCreateGroup", Some("MemberList")),
        ("after_group_info_changed", "Group.CallbackAfterGroupInfoChanged", None),
        ("after_group_destroyed", "Group.CallbackAfterGroupDestroyed", Some("MemberList")),
    ] {
        let number = fixture(&format!("{stem}.json"));
        let string = fixture(&format!("{stem}.event_time_string.json"));
        for (body, numeric) in [(&number, true), (&string, false)] {
            assert_eq!(body["CallbackCommand"], command);
            assert!(body["GroupId"].as_str().unwrap().starts_with("@TGS#"));
            assert_eq!(body["EventTime"].is_number(), numeric, "{stem}: {body}");
            assert_eq!(body["EventTime"].as_str().map(|s| s.parse::<i64>().is_ok()), (!numeric).then_some(true));
        }
        if let Some(list) = list {
            assert!(number[list].as_array().is_some_and(|l| !l.is_empty()), "{stem}");
        }
    }
    for (name, keys) in [
        ("get_group_info.json", &["GroupInfo"][..]),
        ("get_group_info_filtered.json", &["GroupInfo"][..]),
        ("get_group_member_info.json", &["MemberNum", "MemberList"][..]),
        ("get_appid_group_list.json", &["TotalCount", "GroupIdList", "Next"][..]),
    ] {
        let answer = fixture(name);
        assert_eq!((answer["ActionStatus"].as_str(), answer["ErrorCode"].as_i64()), (Some("OK"), Some(0)), "{name}");
        for key in keys {
            assert!(answer.get(*key).is_some(), "{name} lacks {key}");
        }
    }
}
