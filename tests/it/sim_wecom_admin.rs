//! The simulator's WeCom administration calls over real HTTP: transfers and their per-chat
//! errcodes, join ways, statistics computed from its state, groupchat/list by status,
//! appchat/get, the request log and `state` on members who came through a join way.

use groupwatch::provider::wecom::admin::LocalDay;
use groupwatch::sim::{self, SimClient, SimServer, SimState};
use serde_json::{json, Value};

const CORP: &str = "ww1234567890abcdef";
const SECRET: &str = "demo-secret";
const BIG_CORP: &str = "wwbigcorp0000000001";
const BIG_SECRET: &str = "big-secret";

fn day(offset: i64) -> i64 {
    LocalDay::today().plus(offset).midnight()
}

fn group(chat_id: &str, owner: &str, status: i64, created: i64, joins: &[i64]) -> Value {
    let members: Vec<Value> = joins
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"userid": format!("{chat_id}-m{i}"), "type": 2, "join_time": t, "join_scene": 3}))
        .collect();
    json!({"chat_id": chat_id, "name": format!("群 {chat_id}"), "owner": owner, "create_time": created,
           "member_list": members, "status": status})
}

/// Groups of owners abel and jack with creation and join times on known days before today.
fn state() -> SimState {
    serde_json::from_value(json!({"corps": [
        {"corp_id": CORP, "secret": SECRET, "groups": [
            group("wrAbelOld", "abel", 0, day(-10), &[day(-10), day(-3) + 100, day(-2) + 5]),
            group("wrAbelNew", "abel", 0, day(-3) + 3600, &[day(-3) + 3600, day(-1) + 7]),
            group("wrJack", "jack", 1, day(-20), &[day(-20), day(-2) + 99]),
            group("wrJack2", "jack", 1, day(-20), &[day(-20)]),
            group("wrInheriting", "lucy", 2, day(-20), &[day(-20)]),
            group("wrInherited", "mike", 3, day(-20), &[day(-20)]),
        ],
        "appchats": [{"chatid": "APPCHAT1", "name": "值班群", "owner": "abel", "userlist": ["abel", "jack"]}]},
        {"corp_id": BIG_CORP, "secret": BIG_SECRET, "large_visible_range": true, "groups": []},
    ]}))
    .unwrap()
}

struct Sim {
    server: SimServer,
    simc: SimClient,
    http: reqwest::Client,
    token: String,
}

async fn start() -> Sim {
    let server = sim::spawn(state(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let simc = server.client();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let token = token(&http, &server, CORP, SECRET).await;
    Sim { server, simc, http, token }
}

async fn token(http: &reqwest::Client, server: &SimServer, corp: &str, secret: &str) -> String {
    let url = format!("{}/cgi-bin/gettoken", server.base_url());
    let answer: Value =
        http.get(url).query(&[("corpid", corp), ("corpsecret", secret)]).send().await.unwrap().json().await.unwrap();
    answer["access_token"].as_str().unwrap().to_owned()
}

impl Sim {
    async fn call_with(&self, token: &str, api: &str, body: Value) -> Value {
        let url = format!("{}/cgi-bin/externalcontact/groupchat/{api}", self.server.base_url());
        let response = self.http.post(url).query(&[("access_token", token)]).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    async fn call(&self, api: &str, body: Value) -> Value {
        self.call_with(&self.token, api, body).await
    }

    async fn owner_and_status(&self, chat: &str) -> (String, i64) {
        let state = self.simc.state().await.unwrap();
        let g = state.corps[0].groups.iter().find(|g| g.chat_id == chat).unwrap();
        (g.owner.clone(), g.status)
    }
}

fn failed(answer: &Value) -> Vec<(String, i64)> {
    assert_eq!(answer["errcode"], 0, "{answer}");
    answer["failed_chat_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            assert!(!f["errmsg"].as_str().unwrap().is_empty());
            (f["chat_id"].as_str().unwrap().to_owned(), f["errcode"].as_i64().unwrap())
        })
        .collect()
}

#[tokio::test]
async fn onjob_transfer_moves_in_service_groups_and_lists_the_others_with_their_errcodes() {
    let s = start().await;
    let answer =
        s.call("onjob_transfer", json!({"chat_id_list": ["wrAbelOld", "wrJack", "wrNope"], "new_owner": "sam"})).await;
    // wrJack's owner resigned (90502), wrNope is unknown (90501); wrAbelOld moved.
    assert_eq!(failed(&answer), [("wrJack".into(), 90502), ("wrNope".into(), 90501)]);
    assert_eq!(s.owner_and_status("wrAbelOld").await, ("sam".into(), 0));
    let same = s.call("onjob_transfer", json!({"chat_id_list": ["wrAbelOld"], "new_owner": "sam"})).await;
    assert_eq!(failed(&same), [("wrAbelOld".into(), 90504)]);
    // Two in-service transfers per chat (per 90 days); the third is refused.
    assert_eq!(
        failed(&s.call("onjob_transfer", json!({"chat_id_list": ["wrAbelOld"], "new_owner": "abel"})).await),
        []
    );
    let third = s.call("onjob_transfer", json!({"chat_id_list": ["wrAbelOld"], "new_owner": "sam"})).await;
    assert_eq!(failed(&third), [("wrAbelOld".into(), 40128)]);
    assert_eq!(s.owner_and_status("wrAbelOld").await, ("abel".into(), 0));
}

#[tokio::test]
async fn resigned_transfer_needs_a_resigned_owner_and_marks_the_group_inherited() {
    let s = start().await;
    let answer = s
        .call(
            "transfer",
            json!({"chat_id_list": ["wrJack", "wrAbelOld", "wrInheriting", "wrInherited"], "new_owner": "sam"}),
        )
        .await;
    assert_eq!(
        failed(&answer),
        [("wrAbelOld".into(), 90500), ("wrInheriting".into(), 90507), ("wrInherited".into(), 90508)]
    );
    assert_eq!(answer["failed_chat_list"][0]["errmsg"], "the owner of this chat is not resigned", "the seed's text");
    assert_eq!(s.owner_and_status("wrJack").await, ("sam".into(), 3));
    assert_eq!(s.owner_and_status("wrAbelOld").await, ("abel".into(), 0));
}

#[tokio::test]
async fn transfers_refuse_bad_lists_as_a_whole() {
    let s = start().await;
    let hundred_and_one: Vec<String> = (0..101).map(|i| format!("c{i}")).collect();
    for body in
        [json!({"chat_id_list": [], "new_owner": "sam"}), json!({"chat_id_list": hundred_and_one, "new_owner": "sam"})]
    {
        assert_eq!(s.call("transfer", body).await["errcode"], 40058);
    }
    assert_eq!(s.call("onjob_transfer", json!({"chat_id_list": ["wrAbelOld"]})).await["errcode"], 40003);
    assert_eq!(s.owner_and_status("wrAbelOld").await, ("abel".into(), 0), "nothing moved");
}

#[tokio::test]
async fn join_ways_round_trip_and_members_joining_through_them_carry_the_state() {
    let s = start().await;
    let spec = json!({"scene": 2, "remark": "r".repeat(35), "room_base_name": "销售客服群", "room_base_id": 10,
                      "chat_id_list": ["wrAbelOld", "wrAbelNew"], "state": "渠道A"});
    let added = s.call("add_join_way", spec).await;
    assert_eq!(added["errcode"], 0, "{added}");
    let config_id = added["config_id"].as_str().unwrap().to_owned();
    assert_eq!(config_id.len(), 32);
    let got = s.call("get_join_way", json!({"config_id": config_id})).await;
    let way = &got["join_way"];
    assert_eq!(way["remark"], "r".repeat(30), "WeCom cuts remarks at 30 characters");
    assert_eq!(way["auto_create_room"], 1, "the documented default");
    assert_eq!(way["state"], "渠道A");
    assert!(way["qr_code"].as_str().unwrap().starts_with("https://"), "scene 2 has a QR code");
    let keys: Vec<&str> = way.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 9, "{keys:?}");

    let (chat, version) = s
        .simc
        .join_via_join_way(CORP, &config_id, json!({"userid": "wmNew", "join_time": day(-1) + 50}))
        .await
        .unwrap();
    assert_eq!(chat, "wrAbelOld");
    let detail = s.call("get", json!({"chat_id": "wrAbelOld"})).await;
    assert_eq!(detail["group_chat"]["member_version"], version.as_str());
    let member =
        detail["group_chat"]["member_list"].as_array().unwrap().iter().find(|m| m["userid"] == "wmNew").unwrap();
    assert_eq!((member["state"].as_str(), member["join_scene"].as_i64()), (Some("渠道A"), Some(3)));
    let other = &detail["group_chat"]["member_list"][0];
    assert!(other.get("state").is_none(), "no state for members who came another way: {other}");

    // Update overwrites: no state any more, one chat, mini-program scene (no QR code).
    let update = json!({"config_id": config_id, "scene": 1, "chat_id_list": ["wrAbelNew"]});
    assert_eq!(s.call("update_join_way", update).await["errcode"], 0);
    let way = s.call("get_join_way", json!({"config_id": config_id})).await["join_way"].clone();
    assert_eq!(way, json!({"config_id": config_id, "scene": 1, "auto_create_room": 1, "chat_id_list": ["wrAbelNew"]}));
    assert_eq!(s.call("del_join_way", json!({"config_id": config_id})).await["errcode"], 0);
    for api in ["get_join_way", "del_join_way"] {
        assert_eq!(s.call(api, json!({"config_id": config_id})).await["errcode"], 40058, "{api} after delete");
    }
}

#[tokio::test]
async fn join_ways_refuse_what_the_documentation_forbids() {
    let s = start().await;
    let base = json!({"scene": 2, "chat_id_list": ["wrAbelOld"]});
    let with = |key: &str, value: Value| {
        let mut body = base.clone();
        body[key] = value;
        body
    };
    for (body, code) in [
        (with("scene", json!(3)), 40058),
        (
            with("chat_id_list", json!(["wrAbelOld", "wrAbelNew", "wrJack", "wrJack2", "wrInherited", "wrInheriting"])),
            40058,
        ),
        (with("chat_id_list", json!([])), 40058),
        (with("state", json!("s".repeat(31))), 40058),
        (with("room_base_name", json!("群".repeat(41))), 40058),
        (with("auto_create_room", json!(2)), 40058),
        (with("chat_id_list", json!(["wrNope"])), 90501),
    ] {
        assert_eq!(s.call("add_join_way", body.clone()).await["errcode"], code, "{body}");
    }
    assert!(s.simc.state().await.unwrap().corps[0].join_ways.is_empty());
}

#[tokio::test]
async fn list_filters_by_status_and_reports_it() {
    let s = start().await;
    let list = |status: i64| {
        let s = &s;
        async move {
            let answer = s.call("list", json!({"status_filter": status, "limit": 100})).await;
            assert_eq!(answer["errcode"], 0, "{answer}");
            answer["group_chat_list"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| (c["chat_id"].as_str().unwrap().to_owned(), c["status"].as_i64().unwrap()))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(list(1).await, [("wrJack".into(), 1), ("wrJack2".into(), 1)]);
    assert_eq!(list(2).await, [("wrInheriting".into(), 2)]);
    assert_eq!(list(3).await, [("wrInherited".into(), 3)]);
    assert_eq!(list(0).await.len(), 6, "0 filters nothing");
    s.simc.patch_group(CORP, "wrAbelOld", json!({"status": 1})).await.unwrap();
    assert_eq!(list(1).await.len(), 3);
    let detail = s.call("get", json!({"chat_id": "wrJack"})).await;
    assert!(detail["group_chat"].get("status").is_none(), "groupchat/get has no status: {detail}");
}

#[tokio::test]
async fn statistics_are_computed_from_the_groups() {
    let s = start().await;
    let by_owner = s
        .call("statistic", json!({"day_begin_time": day(-3), "day_end_time": day(-1), "owner_filter": {"userid_list": ["abel", "jack"]}, "order_by": 2}))
        .await;
    assert_eq!(by_owner["errcode"], 0, "{by_owner}");
    assert_eq!((by_owner["total"].as_i64(), by_owner["next_offset"].as_i64()), (Some(2), Some(2)));
    let item = |i: usize| (by_owner["items"][i]["owner"].as_str().unwrap(), by_owner["items"][i]["data"].clone());
    let (owner, data) = item(0);
    // abel: 2 groups (one new on day -3), 5 members of which 4 joined within days -3..-1.
    assert_eq!(owner, "abel");
    assert_eq!(
        (
            data["new_chat_cnt"].as_i64(),
            data["chat_total"].as_i64(),
            data["new_member_cnt"].as_i64(),
            data["member_total"].as_i64()
        ),
        (Some(1), Some(2), Some(4), Some(5))
    );
    assert_eq!(data["msg_total"], 0);
    let (owner, data) = item(1);
    assert_eq!(owner, "jack");
    assert_eq!(
        (data["chat_total"].as_i64(), data["new_member_cnt"].as_i64(), data["member_total"].as_i64()),
        (Some(2), Some(1), Some(3))
    );

    let by_day = s
        .call("statistic_group_by_day", json!({"day_begin_time": day(-3) + 7200, "day_end_time": day(-2), "owner_filter": {"userid_list": ["abel"]}}))
        .await;
    let items = by_day["items"].as_array().unwrap();
    let summary: Vec<(i64, i64, i64, i64)> = items
        .iter()
        .map(|i| {
            let d = &i["data"];
            (
                i["stat_time"].as_i64().unwrap(),
                d["new_chat_cnt"].as_i64().unwrap(),
                d["new_member_cnt"].as_i64().unwrap(),
                d["member_total"].as_i64().unwrap(),
            )
        })
        .collect();
    // Day -3 (the begin time floored to midnight): wrAbelNew created, 2 joins; day -2: 1 join.
    assert_eq!(summary, [(day(-3), 1, 2, 3), (day(-2), 0, 1, 4)]);
}

#[tokio::test]
async fn statistics_refuse_bad_ranges_and_filters() {
    let s = start().await;
    let owners = json!({"userid_list": ["abel"]});
    for body in [
        json!({"day_begin_time": day(0), "owner_filter": owners}),
        json!({"day_begin_time": day(-2), "day_end_time": day(-3), "owner_filter": owners}),
        json!({"day_begin_time": day(-40), "day_end_time": day(-9), "owner_filter": owners}),
        json!({"day_begin_time": day(-181), "owner_filter": owners}),
        json!({"owner_filter": owners}),
    ] {
        assert_eq!(s.call("statistic_group_by_day", body.clone()).await["errcode"], 600018, "{body}");
    }
    let too_many: Vec<String> = (0..101).map(|i| format!("u{i}")).collect();
    let answer =
        s.call("statistic", json!({"day_begin_time": day(-1), "owner_filter": {"userid_list": too_many}})).await;
    assert_eq!(answer["errcode"], 40058);
    let big = token(&s.http, &s.server, BIG_CORP, BIG_SECRET).await;
    assert_eq!(s.call_with(&big, "statistic", json!({"day_begin_time": day(-1)})).await["errcode"], 81017);
}

#[tokio::test]
async fn appchat_get_serves_app_chats_and_the_admin_api_changes_them() {
    let s = start().await;
    let get = |chatid: &'static str| {
        let s = &s;
        async move {
            let url = format!("{}/cgi-bin/appchat/get", s.server.base_url());
            let query = [("access_token", s.token.as_str()), ("chatid", chatid)];
            s.http.get(url).query(&query).send().await.unwrap().json::<Value>().await.unwrap()
        }
    };
    assert_eq!(
        get("APPCHAT1").await,
        json!({"errcode": 0, "errmsg": "ok", "chat_info": {"chatid": "APPCHAT1", "name": "值班群", "owner": "abel",
               "userlist": ["abel", "jack"], "chat_type": 0}})
    );
    s.simc.add_appchat_member(CORP, "APPCHAT1", "lucy").await.unwrap();
    s.simc.remove_appchat_member(CORP, "APPCHAT1", "jack").await.unwrap();
    assert_eq!(get("APPCHAT1").await["chat_info"]["userlist"], json!(["abel", "lucy"]));
    assert_eq!(get("NOPE").await["errcode"], 40050);
    s.simc.put_appchat(CORP, "APPCHAT2", json!({"name": "n", "owner": "o", "userlist": ["o"]})).await.unwrap();
    assert_eq!(get("APPCHAT2").await["chat_info"]["owner"], "o");
    assert!(s.simc.add_appchat_member(CORP, "APPCHAT2", "o").await.is_err(), "already a member");
}

#[tokio::test]
async fn requests_are_recorded_without_the_token_and_faults_reach_the_admin_calls() {
    let s = start().await;
    s.simc.clear_requests().await.unwrap();
    let body = json!({"chat_id_list": ["wrJack"], "new_owner": "sam"});
    s.call("transfer", body.clone()).await;
    let url = format!("{}/cgi-bin/appchat/get", s.server.base_url());
    s.http.get(url).query(&[("access_token", s.token.as_str()), ("chatid", "APPCHAT1")]).send().await.unwrap();
    let requests = s.simc.requests().await.unwrap();
    assert_eq!(requests.len(), 2);
    assert_eq!((requests[0].api.as_str(), &requests[0].body), ("externalcontact/groupchat/transfer", &body));
    assert_eq!((requests[1].api.as_str(), &requests[1].body), ("appchat/get", &json!({"chatid": "APPCHAT1"})));
    let log = serde_json::to_string(&requests).unwrap();
    assert!(!log.contains(&s.token), "the access token is not recorded");

    s.simc.fault(json!({"errcode": 45009, "count": 1})).await.unwrap();
    assert_eq!(
        s.call("onjob_transfer", json!({"chat_id_list": ["wrAbelOld"], "new_owner": "sam"})).await["errcode"],
        45009
    );
    assert_eq!(s.owner_and_status("wrAbelOld").await.0, "abel", "a refused call moves nothing");

    // The state shows join ways, app chats and statuses, and still no secret.
    s.call("add_join_way", json!({"scene": 2, "chat_id_list": ["wrAbelOld"], "state": "s1"})).await;
    let shown = serde_json::to_value(s.simc.state().await.unwrap()).unwrap();
    assert_eq!(shown["corps"][0]["secret"], "***");
    assert_eq!(shown["corps"][0]["join_ways"][0]["state"], "s1");
    assert_eq!(shown["corps"][0]["appchats"][0]["chatid"], "APPCHAT1");
    assert_eq!(shown["corps"][0]["groups"][2]["status"], 3, "wrJack, transferred");
    // And it loads again as a state file.
    let reloaded: SimState = serde_json::from_value(shown).unwrap();
    sim::SharedSim::new(reloaded).unwrap();
}
