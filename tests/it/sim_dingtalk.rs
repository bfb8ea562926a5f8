//! The DingTalk part of the simulator, driven over real HTTP and a real WebSocket client, as
//! groupwatch's DingTalk client will drive it.

use futures_util::{SinkExt, StreamExt};
use groupwatch::sim::{self, DingtalkPush, DingtalkStats, SimServer, SimState};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::{self, Message};

const APP: &str = "dingtestappkey0001";
const SECRET: &str = "dingtalk-test-secret";
const CORP: &str = "dingc7c5220402493357f2c783f7214b6d69";
const OTHER_APP: &str = "dingotherappkey002";
const OTHER_SECRET: &str = "other-dingtalk-secret";
const WECOM_SECRET: &str = "wecom-test-secret";
/// Seed 002's example chat.
const DOC_CHAT: &str = "chate39f540dxxxx";
const DOC_CID: &str = "cidOuTaLz7/D7zkkM/5PlrQQA==";
const TEAM_CHAT: &str = "chat691a41db53b100115bec3603472d78a9";
const GONE_CHAT: &str = "chat6418e0c8c141114e18491ea2603c09be";

/// Seed 002's example answer, compacted: chat/get must answer exactly this for DOC_CHAT.
const DOC_ANSWER: &str = r#"{"errcode":0,"errmsg":"ok","chat_info":{"owner":"manager4220","mentionAllAuthority":0,"showHistoryType":0,"chatid":"chate39f540dxxxx","conversationTag":2,"validationType":0,"useridlist":["user123","manager4220"],"icon":"@lADPDfJ6Q7LLejDNAljNAlg","name":"全员群","searchable":0,"chatBannedType":0,"managementType":0}}"#;

fn test_state() -> SimState {
    serde_json::from_value(json!({
        "corps": [{"corp_id": "ww1234567890abcdef", "secret": WECOM_SECRET, "groups": []}],
        "dingtalk": [
            {"app_key": APP, "app_secret": SECRET, "corp_id": CORP, "chats": [
                {"chatid": DOC_CHAT, "openConversationId": DOC_CID, "name": "全员群", "owner": "manager4220",
                 "useridlist": ["user123", "manager4220"], "icon": "@lADPDfJ6Q7LLejDNAljNAlg"},
                {"chatid": TEAM_CHAT, "openConversationId": "cid740SMooADFxmWX3DvIyp4g==", "name": "项目群",
                 "owner": "user123", "useridlist": ["user123", "user456", "manager4220"], "status": 1},
                {"chatid": GONE_CHAT, "openConversationId": "cidGone==", "name": "旧群", "owner": "user123",
                 "useridlist": ["user123"], "status": 2},
            ]},
            {"app_key": OTHER_APP, "app_secret": OTHER_SECRET, "chats": []},
        ],
    }))
    .expect("test state is valid")
}

fn fixture(name: &str) -> Value {
    let path = format!("{}/fixtures/dingtalk/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The simulator, a plain HTTP client speaking DingTalk's API to it, and its admin client.
struct Harness {
    server: SimServer,
    http: reqwest::Client,
    admin: sim::SimClient,
}

async fn start() -> Harness {
    let server = sim::spawn(test_state(), "127.0.0.1:0".parse().unwrap()).await.expect("simulator starts");
    let admin = server.client();
    Harness { server, http: reqwest::Client::builder().no_proxy().build().unwrap(), admin }
}

impl Harness {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.base_url())
    }

    async fn gettoken(&self, appkey: &str, appsecret: &str) -> Value {
        let response = self
            .http
            .get(self.url("/gettoken"))
            .query(&[("appkey", appkey), ("appsecret", appsecret)])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "oapi answers errors with HTTP 200");
        response.json().await.unwrap()
    }

    async fn token(&self) -> String {
        let answer = self.gettoken(APP, SECRET).await;
        assert_eq!(answer["errcode"], 0, "{answer}");
        answer["access_token"].as_str().expect("access_token is a string").to_owned()
    }

    async fn chat_get(&self, token: &str, chatid: &str) -> Value {
        let query = [("access_token", token), ("chatid", chatid)];
        let response = self.http.get(self.url("/chat/get")).query(&query).send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    async fn open(&self, body: &Value) -> reqwest::Response {
        let request = self.http.post(self.url("/v1.0/gateway/connections/open"));
        request.header("Accept", "application/json").json(body).send().await.unwrap()
    }

    /// A fresh (endpoint, ticket) for APP.
    async fn ticket(&self) -> (String, String) {
        let response = self.open(&open_body(APP, SECRET)).await;
        assert_eq!(response.status(), 200);
        let answer: Value = response.json().await.unwrap();
        (answer["endpoint"].as_str().unwrap().to_owned(), answer["ticket"].as_str().unwrap().to_owned())
    }

    /// Opens a Stream connection for APP and waits until the simulator counts it.
    async fn connect(&self) -> Ws {
        let before = self.admin.dingtalk_stats().await.unwrap().live_connections;
        let (endpoint, ticket) = self.ticket().await;
        let (socket, _) =
            tokio_tungstenite::connect_async(format!("{endpoint}?ticket={ticket}")).await.expect("connects");
        self.wait_stats(|s| s.live_connections > before).await;
        Ws { socket }
    }

    /// Polls the DingTalk stats until `ready` holds (5 s at most).
    async fn wait_stats(&self, ready: impl Fn(&DingtalkStats) -> bool) -> DingtalkStats {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let stats = self.admin.dingtalk_stats().await.unwrap();
            if ready(&stats) {
                return stats;
            }
            assert!(Instant::now() < deadline, "stats never got there: {stats:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn open_body(client_id: &str, client_secret: &str) -> Value {
    json!({
        "clientId": client_id, "clientSecret": client_secret,
        "subscriptions": [{"type": "EVENT", "topic": "*"}],
        "ua": "groupwatch-test/0.1", "localIp": "127.0.0.1",
    })
}

fn camel() -> Option<&'static DingtalkPush> {
    static CAMEL: std::sync::OnceLock<DingtalkPush> = std::sync::OnceLock::new();
    Some(CAMEL.get_or_init(DingtalkPush::camel))
}

fn pascal() -> Option<&'static DingtalkPush> {
    static PASCAL: std::sync::OnceLock<DingtalkPush> = std::sync::OnceLock::new();
    Some(PASCAL.get_or_init(DingtalkPush::pascal))
}

/// A Stream client, as bare as the protocol: text frames of JSON.
struct Ws {
    socket: Socket,
}

#[derive(Debug)]
enum End {
    /// The server sent a WebSocket Close frame.
    CloseFrame,
    /// The connection ended without one.
    NoFrame,
}

impl Ws {
    /// The next text frame within `within`, parsed; `None` on timeout. Panics if the connection
    /// ends.
    async fn next_within(&mut self, within: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let next = tokio::time::timeout_at(deadline, self.socket.next()).await.ok()?;
            match next {
                Some(Ok(Message::Text(text))) => {
                    return Some(serde_json::from_str(text.as_str()).expect("frames are JSON"));
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("the connection ended: {other:?}"),
            }
        }
    }

    async fn next(&mut self) -> Value {
        self.next_within(Duration::from_secs(5)).await.expect("a frame within 5 s")
    }

    /// The next EVENT frame, skipping (unanswered) SYSTEM pings.
    async fn next_event(&mut self) -> Value {
        loop {
            let frame = self.next().await;
            if frame["type"] == "EVENT" {
                return frame;
            }
            assert_eq!(frame["headers"]["topic"], "ping", "unexpected frame {frame}");
        }
    }

    async fn assert_silent(&mut self, for_: Duration) {
        if let Some(frame) = self.next_within(for_).await {
            panic!("expected no frame, got {frame}");
        }
    }

    async fn send(&mut self, frame: Value) {
        self.socket.send(Message::text(frame.to_string())).await.unwrap();
    }

    /// ACKs as the protocol doc shows it (code 200, `status` in a JSON-string `data`).
    async fn ack(&mut self, frame: &Value, code: i64, status: &str) {
        let message_id = frame["headers"]["messageId"].as_str().unwrap();
        let data = json!({"status": status, "message": status.to_lowercase()}).to_string();
        self.send(json!({
            "code": code, "headers": {"contentType": "application/json", "messageId": message_id},
            "message": "OK", "data": data,
        }))
        .await;
    }

    /// Waits (5 s at most) for the connection to end; says whether a Close frame came first.
    async fn end(&mut self) -> End {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            match tokio::time::timeout_at(deadline, self.socket.next()).await.expect("the connection ends") {
                Some(Ok(Message::Close(_))) => return End::CloseFrame,
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return End::NoFrame,
            }
        }
    }
}

/// A frame's `data`, parsed (it is a string containing JSON).
fn data_of(frame: &Value) -> Value {
    let text = frame["data"].as_str().unwrap_or_else(|| panic!("data is a JSON string: {frame}"));
    serde_json::from_str(text).unwrap_or_else(|e| panic!("data holds JSON ({e}): {frame}"))
}

fn keys(object: &Value) -> BTreeSet<String> {
    object.as_object().unwrap_or_else(|| panic!("an object: {object}")).keys().cloned().collect()
}

fn is_millis(text: &Value) -> bool {
    text.as_str().is_some_and(|t| t.len() == 13 && t.bytes().all(|b| b.is_ascii_digit()))
}

// ---------------------------------------------------------------------------------------------
// gettoken and chat/get
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn gettoken_answers_like_dingtalk_and_reuses_a_valid_token() {
    let h = start().await;
    let response =
        h.http.get(h.url("/gettoken")).query(&[("appkey", APP), ("appsecret", SECRET)]).send().await.unwrap();
    let text = response.text().await.unwrap();
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(keys(&answer), keys(&fixture("gettoken.json")), "{text}");
    assert!(text.starts_with(r#"{"errcode":0,"access_token":""#), "field order as DingTalk sends it: {text}");
    assert_eq!(answer["errmsg"], "ok");
    assert_eq!(answer["expires_in"], 7200);
    let token = answer["access_token"].as_str().unwrap();
    assert!(token.len() >= 32, "{token}");
    assert_eq!(h.token().await, token, "a valid token is handed out again");

    assert_eq!(h.gettoken(APP, "wrong").await, fixture("gettoken_bad_secret.json"));
    assert_eq!(h.gettoken("dingnosuchapp", SECRET).await["errcode"], 40096);
    assert_eq!(h.gettoken(APP, OTHER_SECRET).await["errcode"], 40096, "one app's secret does not open another");
    let missing: Value =
        h.http.get(h.url("/gettoken")).query(&[("appkey", APP)]).send().await.unwrap().json().await.unwrap();
    assert_eq!(missing["errcode"], 40035);
}

#[tokio::test]
async fn tokens_expire_unless_fetched_again_and_can_be_revoked() {
    let h = start().await;
    h.admin.dingtalk_settings(json!({"token_ttl_ms": 400})).await.unwrap();
    let answer = h.gettoken(APP, SECRET).await;
    assert_eq!(answer["expires_in"], 1, "a 400 ms lifetime says 1 s");
    let first = answer["access_token"].as_str().unwrap().to_owned();

    // Fetching it again within its lifetime renews it (自动续期).
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(h.token().await, first);
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(h.chat_get(&first, DOC_CHAT).await["errcode"], 0, "renewed 250 ms ago, so still valid");

    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(h.chat_get(&first, DOC_CHAT).await, json!({"errcode": 42001, "errmsg": "access_token超时"}));
    let second = h.token().await;
    assert_ne!(second, first, "an expired token is not handed out again");
    assert_eq!(h.chat_get(&second, DOC_CHAT).await["errcode"], 0);

    h.admin.dingtalk_settings(json!({"token_ttl_ms": 7_200_000})).await.unwrap();
    let third = h.token().await;
    h.admin.dingtalk_fault(json!({"expire_tokens": true})).await.unwrap();
    assert_eq!(h.chat_get(&third, DOC_CHAT).await, json!({"errcode": 40014, "errmsg": "不合法的access_token"}));
    let fourth = h.token().await;
    assert_ne!(fourth, third);
    assert_eq!(h.chat_get(&fourth, DOC_CHAT).await["errcode"], 0, "tokens issued after the fault work");
}

#[tokio::test]
async fn chat_get_is_byte_for_byte_seed_002() {
    let h = start().await;
    let token = h.token().await;
    let query = [("access_token", token.as_str()), ("chatid", DOC_CHAT)];
    let response = h.http.get(h.url("/chat/get")).query(&query).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert_eq!(text, DOC_ANSWER);
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), fixture("chat_get.json"));
}

#[tokio::test]
async fn chat_get_errors_and_dismissed_chats() {
    let h = start().await;
    let token = h.token().await;
    let get = |query: Vec<(&'static str, String)>| {
        let request = h.http.get(h.url("/chat/get")).query(&query);
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    assert_eq!(h.chat_get(&token, "chatNoSuchChat").await, fixture("chat_get_invalid_chatid.json"));
    assert_eq!(h.chat_get("not-a-token", DOC_CHAT).await["errcode"], 40014);
    assert_eq!(get(vec![("chatid", DOC_CHAT.into())]).await["errcode"], 41001);
    assert_eq!(get(vec![("access_token", token.clone())]).await, json!({"errcode": 49000, "errmsg": "需要参数chatid"}));

    // A chat of another app is an invalid chatid for this token.
    let other = h.gettoken(OTHER_APP, OTHER_SECRET).await["access_token"].as_str().unwrap().to_owned();
    assert_eq!(h.chat_get(&other, DOC_CHAT).await["errcode"], 40016);

    let gone = h.chat_get(&token, GONE_CHAT).await;
    assert_eq!(gone["errcode"], 0, "{gone}");
    assert_eq!(gone["chat_info"]["status"], 2);
    let team = h.chat_get(&token, TEAM_CHAT).await;
    assert_eq!(team["chat_info"]["status"], 1);
    assert!(team["chat_info"].get("openConversationId").is_none(), "chat/get never shows it: {team}");
    assert!(h.chat_get(&token, DOC_CHAT).await["chat_info"].get("status").is_none(), "absent as in seed 002");
}

#[tokio::test]
async fn stale_fetches_serve_the_chat_before_its_latest_change() {
    let h = start().await;
    let token = h.token().await;
    let before = h.chat_get(&token, DOC_CHAT).await;
    h.admin.dingtalk_add_members(APP, DOC_CHAT, &["newbie"], None).await.unwrap();
    h.admin.dingtalk_fault(json!({"stale_fetches": 2})).await.unwrap();
    for i in 0..2 {
        assert_eq!(h.chat_get(&token, DOC_CHAT).await, before, "stale fetch {i}");
    }
    let now = h.chat_get(&token, DOC_CHAT).await;
    assert_eq!(now["chat_info"]["useridlist"], json!(["user123", "manager4220", "newbie"]));

    h.admin.dingtalk_patch_chat(APP, DOC_CHAT, json!({"name": "改名了"}), None).await.unwrap();
    h.admin.dingtalk_fault(json!({"stale_fetches": 1})).await.unwrap();
    assert_eq!(h.chat_get(&token, DOC_CHAT).await, now, "the state before the rename");
    assert_eq!(h.chat_get(&token, DOC_CHAT).await["chat_info"]["name"], "改名了");
}

#[tokio::test]
async fn errcode_http_and_latency_faults_hit_the_named_api() {
    let h = start().await;
    let token = h.token().await;
    h.admin.dingtalk_fault(json!({"errcode": 90002, "count": 2})).await.unwrap();
    assert_eq!(h.gettoken(APP, SECRET).await["errcode"], 0, "chat/get is the default target");
    for _ in 0..2 {
        let answer = h.chat_get(&token, DOC_CHAT).await;
        assert_eq!(answer["errcode"], 90002);
        assert!(answer.get("chat_info").is_none());
    }
    assert_eq!(h.chat_get(&token, DOC_CHAT).await["errcode"], 0);

    h.admin.dingtalk_fault(json!({"errcode": -1, "on": "gettoken"})).await.unwrap();
    assert_eq!(h.gettoken(APP, SECRET).await, json!({"errcode": -1, "errmsg": "系统繁忙"}));
    assert_eq!(h.gettoken(APP, SECRET).await["errcode"], 0);

    h.admin.dingtalk_fault(json!({"http_status": 503, "on": "connections_open"})).await.unwrap();
    let refused = h.open(&open_body(APP, SECRET)).await;
    assert_eq!(refused.status(), 503);
    assert_eq!(h.open(&open_body(APP, SECRET)).await.status(), 200);
    assert!(h.admin.dingtalk_fault(json!({"errcode": 40014, "on": "connections_open"})).await.is_err());
    assert!(h.admin.dingtalk_fault(json!({"errcod": 1})).await.is_err(), "typos are refused");

    h.admin.dingtalk_fault(json!({"latency_ms": 250})).await.unwrap();
    let started = Instant::now();
    assert_eq!(h.chat_get(&token, DOC_CHAT).await["errcode"], 0);
    assert!(started.elapsed() >= Duration::from_millis(250), "{:?}", started.elapsed());
    h.admin.dingtalk_clear_faults().await.unwrap();
    let started = Instant::now();
    assert_eq!(h.chat_get(&token, DOC_CHAT).await["errcode"], 0);
    assert!(started.elapsed() < Duration::from_millis(250), "{:?}", started.elapsed());

    let stats = h.admin.dingtalk_stats().await.unwrap();
    assert_eq!((stats.gettoken, stats.chat_get, stats.connections_open), (4, 5, 2), "{stats:?}");
}

// ---------------------------------------------------------------------------------------------
// connections/open and tickets
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn connections_open_checks_credentials_and_subscriptions() {
    let h = start().await;
    let response = h.open(&open_body(APP, SECRET)).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(keys(&answer), keys(&fixture("stream/connections_open_response.json")));
    assert_eq!(answer["endpoint"], format!("ws://{}/connect", h.server.addr));
    assert_eq!(answer["ticket"].as_str().unwrap().len(), 36, "{answer}");

    for (client_id, secret) in [(APP, "wrong"), ("dingnosuchapp", SECRET), (OTHER_APP, SECRET)] {
        let response = h.open(&open_body(client_id, secret)).await;
        assert_eq!(response.status(), 401, "{client_id}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(keys(&body), keys(&fixture("stream/connections_open_auth_failed.json")));
        assert_eq!((&body["code"], &body["message"]), (&json!("authFailed"), &json!("鉴权失败")));
        assert!(!body["requestid"].as_str().unwrap().is_empty());
    }

    let mut bad_topic = open_body(APP, SECRET);
    bad_topic["subscriptions"] = json!([{"type": "EVENT", "topic": "chat_add_member"}]);
    let mut no_subscriptions = open_body(APP, SECRET);
    no_subscriptions["subscriptions"] = json!([]);
    let mut unknown_field = open_body(APP, SECRET);
    unknown_field["client_id"] = json!(APP);
    for body in [bad_topic, no_subscriptions, unknown_field] {
        let response = h.open(&body).await;
        assert_eq!(response.status(), 400, "{body}");
        assert!(response.json::<Value>().await.unwrap()["code"].is_string());
    }

    let mut go_sdk = open_body(APP, SECRET);
    go_sdk["extras"] = json!({"k": "v"});
    go_sdk["subscriptions"] =
        json!([{"type": "EVENT", "topic": "*"}, {"type": "CALLBACK", "topic": "/v1.0/im/bot/messages/get"}]);
    assert_eq!(h.open(&go_sdk).await.status(), 200, "the Go SDK's extras are accepted");

    // Without Accept: application/json DingTalk answers XML.
    let url = h.url("/v1.0/gateway/connections/open");
    let xml = h.http.post(url).json(&open_body(APP, SECRET)).send().await.unwrap();
    assert_eq!(xml.status(), 200);
    assert!(xml.headers()["content-type"].to_str().unwrap().contains("xml"));
    let text = xml.text().await.unwrap();
    assert!(serde_json::from_str::<Value>(&text).is_err() && text.contains("<ticket>"), "{text}");
}

#[tokio::test]
async fn tickets_are_single_use_and_expire() {
    let h = start().await;
    let (endpoint, ticket) = h.ticket().await;
    let url = format!("{endpoint}?ticket={ticket}");
    let (_first, _) = tokio_tungstenite::connect_async(&url).await.expect("a fresh ticket connects");

    let refused = |result: Result<_, tungstenite::Error>| match result {
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("refused with an HTTP status, not {other}"),
        Ok(_) => panic!("the ticket was accepted"),
    };
    assert_eq!(refused(tokio_tungstenite::connect_async(&url).await.map(|_| ())), 401, "a ticket opens one connection");
    let garbage = format!("{endpoint}?ticket=7724109a-ea43-4aa2-b803-87d82c5aaee6");
    assert_eq!(refused(tokio_tungstenite::connect_async(&garbage).await.map(|_| ())), 401);
    assert_eq!(refused(tokio_tungstenite::connect_async(endpoint.as_str()).await.map(|_| ())), 401);

    h.admin.dingtalk_settings(json!({"ticket_ttl_ms": 100})).await.unwrap();
    let (endpoint, ticket) = h.ticket().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let late = tokio_tungstenite::connect_async(format!("{endpoint}?ticket={ticket}")).await;
    assert_eq!(refused(late.map(|_| ())), 401, "tickets expire");

    let stats = h.admin.dingtalk_stats().await.unwrap();
    assert_eq!((stats.tickets_refused, stats.live_connections), (4, 1), "{stats:?}");
}

// ---------------------------------------------------------------------------------------------
// Events, ACKs, redelivery
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_admin_change_pushes_an_event_frame_with_string_headers() {
    let h = start().await;
    let mut ws = h.connect().await;
    let ids = h.admin.dingtalk_add_members(APP, DOC_CHAT, &["newbie", "other"], camel()).await.unwrap();
    assert_eq!(ids.len(), 1);

    let frame = ws.next_event().await;
    assert_eq!(frame["specVersion"], "1.0");
    assert_eq!(frame["type"], "EVENT");
    let headers = frame["headers"].as_object().unwrap();
    assert!(headers.values().all(Value::is_string), "every header is a string: {frame}");
    for key in [
        "topic",
        "messageId",
        "contentType",
        "time",
        "eventType",
        "eventId",
        "eventCorpId",
        "eventBornTime",
        "eventUnifiedAppId",
    ] {
        assert!(headers.contains_key(key), "{key} in {frame}");
    }
    assert_eq!(headers["eventType"], "chat_add_member");
    assert_eq!(headers["eventId"], ids[0].as_str());
    assert_eq!(headers["eventCorpId"], CORP);
    assert_eq!(headers["contentType"], "application/json");
    assert!(is_millis(&headers["time"]) && is_millis(&headers["eventBornTime"]), "{frame}");

    let data = data_of(&frame);
    assert_eq!(data["userId"], json!(["newbie", "other"]));
    assert_eq!(data["unionId"].as_array().unwrap().len(), 2);
    assert_eq!(data["chatId"], DOC_CHAT);
    assert_eq!(data["openConversationId"], DOC_CID);
    assert_eq!(data["corpId"], CORP);
    assert_eq!(data["operator"], "manager4220", "the owner by default");
    assert_eq!(data["eventType"], "chat_add_member");
    assert!(data["timeStamp"].is_u64(), "timeStamp is a number: {data}");

    let token = h.token().await;
    assert_eq!(
        h.chat_get(&token, DOC_CHAT).await["chat_info"]["useridlist"],
        json!(["user123", "manager4220", "newbie", "other"])
    );
    assert!(h.admin.dingtalk_add_members(APP, DOC_CHAT, &["newbie"], camel()).await.is_err(), "already a member");
}

#[tokio::test]
async fn every_change_pushes_its_event_in_either_casing() {
    let h = start().await;
    let mut ws = h.connect().await;
    let mut seen = Vec::new();
    for (casing, push) in [("camel", camel()), ("pascal", pascal())] {
        let chatid = format!("chat-{casing}");
        let chat = json!({"openConversationId": format!("cid-{casing}=="), "name": "原名", "owner": "boss",
                          "useridlist": ["boss", "m1", "m2"]});
        h.admin.dingtalk_put_chat(APP, &chatid, chat).await.unwrap();
        h.admin.dingtalk_add_members(APP, &chatid, &["x"], push).await.unwrap();
        h.admin.dingtalk_remove_members(APP, &chatid, &["x"], push).await.unwrap();
        h.admin.dingtalk_quit(APP, &chatid, "m1", push).await.unwrap();
        h.admin.dingtalk_patch_chat(APP, &chatid, json!({"name": "新名"}), push).await.unwrap();
        h.admin.dingtalk_patch_chat(APP, &chatid, json!({"owner": "m2"}), push).await.unwrap();
        h.admin.dingtalk_dismiss_chat(APP, &chatid, push).await.unwrap();
        for _ in 0..6 {
            let frame = ws.next_event().await;
            ws.ack(&frame, 200, "SUCCESS").await;
            seen.push((casing, frame["headers"]["eventType"].as_str().unwrap().to_owned(), data_of(&frame)));
        }
    }
    let types = [
        "chat_add_member",
        "chat_remove_member",
        "chat_quit",
        "chat_update_title",
        "chat_update_owner",
        "chat_disband",
    ];
    for (i, (casing, event_type, data)) in seen.iter().enumerate() {
        assert_eq!(event_type, types[i % 6], "{casing}");
        // The generated fields are the documented ones: exactly those of the doc samples in
        // camelCase; in PascalCase those of the legacy samples, plus the captured union ids.
        let generated = keys(data);
        if *casing == "camel" {
            assert_eq!(generated, keys(&fixture(&format!("{event_type}.camel.json"))["data"]), "{event_type}");
        } else {
            let documented = keys(&fixture(&format!("{event_type}.pascal.json")));
            assert!(documented.is_subset(&generated), "{event_type}: {documented:?} ⊄ {generated:?}");
            let extra: BTreeSet<String> = generated.difference(&documented).cloned().collect();
            assert!(extra.iter().all(|k| k == "UnionId" || k == "OperatorUnionId"), "{event_type}: {extra:?}");
        }
    }
    let camel_of = |t: &str| &seen.iter().find(|(c, e, _)| *c == "camel" && e == t).unwrap().2;
    let pascal_of = |t: &str| &seen.iter().find(|(c, e, _)| *c == "pascal" && e == t).unwrap().2;
    assert_eq!(camel_of("chat_quit")["operator"], "m1", "the leaver is the operator");
    assert_eq!(camel_of("chat_update_title")["title"], "新名");
    assert_eq!(camel_of("chat_update_owner")["owner"], "m2");
    assert_eq!(camel_of("chat_update_owner")["openConversationId"], "cid-camel==");
    assert_eq!(camel_of("chat_remove_member")["userId"], json!(["x"]));
    assert_eq!(pascal_of("chat_quit")["Operator"], "m1");
    assert_eq!(pascal_of("chat_update_owner")["Owner"], "m2");
    assert_eq!(pascal_of("chat_update_title")["Title"], "新名");
    assert_eq!(pascal_of("chat_add_member")["UserId"], json!(["x"]));
    assert_eq!(pascal_of("chat_disband")["ChatId"], "chat-pascal");

    let token = h.token().await;
    let gone = h.chat_get(&token, "chat-camel").await;
    assert_eq!((&gone["chat_info"]["status"], &gone["chat_info"]["owner"]), (&json!(2), &json!("m2")));
    assert!(h.admin.dingtalk_add_members(APP, "chat-camel", &["y"], None).await.is_err(), "a dismissed chat is frozen");
    assert_eq!(h.wait_stats(|s| s.acks_success == 12).await.events_pushed, 12);
}

#[tokio::test]
async fn an_ack_settles_the_event() {
    let h = start().await;
    h.admin.dingtalk_settings(json!({"redelivery_delay_ms": 300})).await.unwrap();
    let mut ws = h.connect().await;
    let ids = h.admin.dingtalk_patch_chat(APP, DOC_CHAT, json!({"name": "新名字"}), camel()).await.unwrap();
    let frame = ws.next_event().await;
    assert_eq!(frame["headers"]["eventId"], ids[0].as_str());
    ws.ack(&frame, 200, "SUCCESS").await;
    h.wait_stats(|s| s.acks_success == 1).await;
    ws.assert_silent(Duration::from_millis(700)).await;

    let stats = h.admin.dingtalk_stats().await.unwrap();
    assert_eq!((stats.events_pushed, stats.redeliveries, stats.acks_later), (1, 0, 0), "{stats:?}");
    assert!(h.admin.dingtalk_pending().await.unwrap().is_empty());
    let events = h.admin.dingtalk_events().await.unwrap();
    assert_eq!(events.len(), 1);
    assert!(events[0].acked && events[0].deliveries == 1, "{events:?}");
    assert_eq!(events[0].last_status.as_deref(), Some("SUCCESS"));
}

#[tokio::test]
async fn an_unacked_event_is_redelivered_with_the_same_event_id() {
    let h = start().await;
    h.admin.dingtalk_settings(json!({"redelivery_delay_ms": 300})).await.unwrap();
    let mut ws = h.connect().await;
    let ids = h.admin.dingtalk_remove_members(APP, TEAM_CHAT, &["user456"], camel()).await.unwrap();
    let first = ws.next_event().await;
    let pending = h.admin.dingtalk_pending().await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!((pending[0].event_id.as_str(), pending[0].event_type.as_str()), (ids[0].as_str(), "chat_remove_member"));

    let again = ws.next_event().await;
    assert_eq!(again["headers"]["eventId"], first["headers"]["eventId"]);
    assert_eq!(again["headers"]["messageId"], first["headers"]["messageId"], "same messageId by default");
    assert_eq!(again["data"], first["data"], "the same event");
    ws.ack(&again, 200, "SUCCESS").await;
    h.wait_stats(|s| s.acks_success == 1).await;
    assert!(h.admin.dingtalk_pending().await.unwrap().is_empty());

    // With fresh messageIds, the redelivery is told apart by messageId but not by eventId.
    h.admin.dingtalk_settings(json!({"new_message_id_on_redelivery": true})).await.unwrap();
    h.admin.dingtalk_add_members(APP, TEAM_CHAT, &["user789"], camel()).await.unwrap();
    let first = ws.next_event().await;
    let again = ws.next_event().await;
    assert_eq!(again["headers"]["eventId"], first["headers"]["eventId"]);
    assert_ne!(again["headers"]["messageId"], first["headers"]["messageId"]);
    ws.ack(&again, 200, "SUCCESS").await;
    let stats = h.wait_stats(|s| s.acks_success == 2).await;
    assert_eq!((stats.events_pushed, stats.redeliveries), (2, 2), "{stats:?}");
}

#[tokio::test]
async fn later_is_redelivered_whatever_the_code() {
    let h = start().await;
    h.admin.dingtalk_settings(json!({"redelivery_delay_ms": 300})).await.unwrap();
    let mut ws = h.connect().await;
    h.admin.dingtalk_quit(APP, TEAM_CHAT, "user456", pascal()).await.unwrap();
    let first = ws.next_event().await;
    ws.ack(&first, 500, "LATER").await; // the Go SDK's form
    h.wait_stats(|s| s.acks_later == 1).await;
    let second = ws.next_event().await;
    assert_eq!(second["headers"]["eventId"], first["headers"]["eventId"]);
    ws.ack(&second, 200, "LATER").await; // the Java SDK's form
    h.wait_stats(|s| s.acks_later == 2).await;
    let third = ws.next_event().await;
    assert_eq!(third["headers"]["eventId"], first["headers"]["eventId"]);
    ws.ack(&third, 200, "SUCCESS").await;
    h.wait_stats(|s| s.acks_success == 1).await;
    ws.assert_silent(Duration::from_millis(700)).await;
    let events = h.admin.dingtalk_events().await.unwrap();
    assert_eq!((events[0].deliveries, events[0].acked), (3, true), "{events:?}");
}

#[tokio::test]
async fn an_event_is_abandoned_after_max_deliveries() {
    let h = start().await;
    h.admin.dingtalk_settings(json!({"redelivery_delay_ms": 100, "max_deliveries": 2})).await.unwrap();
    let mut ws = h.connect().await;
    h.admin.dingtalk_dismiss_chat(APP, TEAM_CHAT, camel()).await.unwrap();
    let first = ws.next_event().await;
    let second = ws.next_event().await;
    assert_eq!(second["headers"]["eventId"], first["headers"]["eventId"]);
    ws.assert_silent(Duration::from_millis(400)).await;
    assert!(h.admin.dingtalk_pending().await.unwrap().is_empty(), "given up, so no longer pending");
    let events = h.admin.dingtalk_events().await.unwrap();
    assert_eq!((events[0].deliveries, events[0].abandoned, events[0].acked), (2, true, false), "{events:?}");
}

#[tokio::test]
async fn a_malformed_ack_counts_as_none() {
    let h = start().await;
    h.admin.dingtalk_settings(json!({"redelivery_delay_ms": 200})).await.unwrap();
    let mut ws = h.connect().await;
    h.admin.dingtalk_patch_chat(APP, DOC_CHAT, json!({"owner": "user123"}), camel()).await.unwrap();
    let frame = ws.next_event().await;
    let message_id = frame["headers"]["messageId"].clone();
    // data as an object rather than a JSON string
    ws.send(json!({"code": 200, "headers": {"contentType": "application/json", "messageId": message_id},
                   "message": "OK", "data": {"status": "SUCCESS"}}))
        .await;
    // no contentType
    ws.send(json!({"code": 200, "headers": {"messageId": message_id}, "message": "OK",
                   "data": "{\"status\":\"SUCCESS\"}"}))
        .await;
    // the Python SDK's echo of the event data, without status
    ws.send(json!({"code": 200, "headers": {"contentType": "application/json", "messageId": message_id},
                   "message": "OK", "data": frame["data"]}))
        .await;
    let stats = h.wait_stats(|s| s.acks_malformed == 3).await;
    assert!(stats.last_frame_error.is_some(), "{stats:?}");
    assert_eq!(stats.acks_success, 0);
    let again = ws.next_event().await;
    assert_eq!(again["headers"]["eventId"], frame["headers"]["eventId"], "still un-ACKed, so pushed again");

    ws.send(json!({"code": 200, "headers": {"contentType": "application/json", "messageId": "nobody"},
                   "message": "OK", "data": "{\"status\":\"SUCCESS\"}"}))
        .await;
    ws.socket.send(Message::text("not json")).await.unwrap();
    h.wait_stats(|s| s.unknown_frames == 2).await;
}

#[tokio::test]
async fn events_wait_for_a_connection_and_skip_callback_only_ones() {
    let h = start().await;
    let ids = h.admin.dingtalk_add_members(APP, DOC_CHAT, &["early"], camel()).await.unwrap();
    let pending = h.admin.dingtalk_pending().await.unwrap();
    assert!(pending[0].waiting && pending[0].deliveries == 0, "{pending:?}");

    // A connection without the EVENT subscription gets no events.
    let mut body = open_body(APP, SECRET);
    body["subscriptions"] = json!([{"type": "CALLBACK", "topic": "/v1.0/im/bot/messages/get"}]);
    let answer: Value = h.open(&body).await.json().await.unwrap();
    let url = format!("{}?ticket={}", answer["endpoint"].as_str().unwrap(), answer["ticket"].as_str().unwrap());
    let (socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let mut callbacks = Ws { socket };
    h.wait_stats(|s| s.live_connections == 1).await;
    callbacks.assert_silent(Duration::from_millis(200)).await;
    assert_eq!(h.admin.dingtalk_stats().await.unwrap().events_pushed, 0);

    let mut ws = h.connect().await;
    let frame = ws.next_event().await;
    assert_eq!(frame["headers"]["eventId"], ids[0].as_str());
    assert_eq!(h.admin.dingtalk_stats().await.unwrap().events_pushed, 1);
}

#[tokio::test]
async fn a_raw_push_sends_the_event_as_given() {
    let h = start().await;
    let mut ws = h.connect().await;
    let data = json!({"EventType": "chat_update_title", "ChatId": "chatX", "Title": "t", "TimeStamp": "1608027247528"});
    let id = h
        .admin
        .dingtalk_push_event(
            APP,
            json!({"eventType": "chat_update_title", "eventId": "dup-1", "data": data,
                                          "headers": {"topic": "dingTalk", "x-extra": "1"}}),
        )
        .await
        .unwrap();
    assert_eq!(id, "dup-1");
    let frame = ws.next_event().await;
    assert_eq!(frame["headers"]["eventId"], "dup-1");
    assert_eq!(frame["headers"]["topic"], "dingTalk", "headers can be overridden");
    assert_eq!(frame["headers"]["x-extra"], "1");
    assert_eq!(data_of(&frame), data);

    h.admin
        .dingtalk_push_event(APP, json!({"eventType": "chat_quit", "eventId": "dup-1", "data": "{not json"}))
        .await
        .unwrap();
    let frame = ws.next_event().await;
    assert_eq!(frame["data"], "{not json", "string data is sent verbatim");
    assert_eq!(h.admin.dingtalk_events().await.unwrap().len(), 2, "a repeated eventId is a second event");
}

#[tokio::test]
async fn the_redeliver_fault_pushes_the_last_events_again() {
    let h = start().await;
    let mut ws = h.connect().await;
    let first = h.admin.dingtalk_add_members(APP, DOC_CHAT, &["a"], camel()).await.unwrap();
    let second = h.admin.dingtalk_add_members(APP, DOC_CHAT, &["b"], camel()).await.unwrap();
    for _ in 0..2 {
        let frame = ws.next_event().await;
        ws.ack(&frame, 200, "SUCCESS").await;
    }
    h.wait_stats(|s| s.acks_success == 2).await;
    let answer = h.admin.dingtalk_fault(json!({"redeliver": 1})).await.unwrap();
    assert_eq!(answer.redelivered, second);
    let frame = ws.next_event().await;
    assert_eq!(frame["headers"]["eventId"], second[0].as_str(), "not {first:?}");
    ws.assert_silent(Duration::from_millis(200)).await;
    assert_eq!(h.admin.dingtalk_stats().await.unwrap().redeliveries, 1);
}

// ---------------------------------------------------------------------------------------------
// SYSTEM frames, disconnects, drops
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn pings_expect_the_opaque_echoed() {
    let h = start().await;
    h.admin.dingtalk_settings(json!({"ping_interval_ms": 100, "ping_miss_limit": 0})).await.unwrap();
    let mut ws = h.connect().await;
    let ping = ws.next().await;
    assert_eq!((&ping["type"], &ping["headers"]["topic"]), (&json!("SYSTEM"), &json!("ping")), "{ping}");
    assert!(ping["headers"].as_object().unwrap().values().all(Value::is_string), "{ping}");
    let opaque = data_of(&ping)["opaque"].as_str().unwrap().to_owned();
    let answer = |data: String| {
        json!({"code": 200, "headers": {"contentType": "application/json", "messageId": ping["headers"]["messageId"]},
               "message": "OK", "data": data})
    };
    ws.send(answer(json!({"opaque": "wrong"}).to_string())).await;
    let stats = h.wait_stats(|s| s.last_frame_error.is_some()).await;
    assert_eq!(stats.pongs, 0, "a wrong opaque is no answer");
    ws.send(answer(json!({"opaque": opaque}).to_string())).await;
    h.wait_stats(|s| s.pongs == 1).await;

    // Not answering is counted, and closes the connection once the limit is reached.
    h.admin.dingtalk_settings(json!({"ping_interval_ms": 60, "ping_miss_limit": 2})).await.unwrap();
    let stats = h.wait_stats(|s| s.live_connections == 0).await;
    assert!(stats.pings_missed >= 2 && stats.pings_sent >= 3, "{stats:?}");
    assert!(matches!(ws.end().await, End::NoFrame));
}

#[tokio::test]
async fn disconnect_sends_a_system_frame_then_closes_and_events_go_elsewhere() {
    let h = start().await;
    h.admin.dingtalk_settings(json!({"disconnect_grace_ms": 300})).await.unwrap();
    let mut ws = h.connect().await;
    let answer = h.admin.dingtalk_fault(json!({"disconnect": true})).await.unwrap();
    assert_eq!(answer.disconnected, 1);
    let frame = ws.next().await;
    assert_eq!((&frame["type"], &frame["headers"]["topic"]), (&json!("SYSTEM"), &json!("disconnect")), "{frame}");
    assert_eq!(data_of(&frame), json!({"reason": "connection is expired"}));
    // Go and Python ACK it; that is not noise.
    let message_id = frame["headers"]["messageId"].clone();
    ws.send(json!({"code": 200, "headers": {"contentType": "application/json", "messageId": message_id},
                   "message": "OK", "data": "{}"}))
        .await;

    let ids = h.admin.dingtalk_add_members(APP, DOC_CHAT, &["late"], camel()).await.unwrap();
    assert!(matches!(ws.end().await, End::NoFrame), "closed after the grace period, no event on the way");
    let stats = h.wait_stats(|s| s.live_connections == 0).await;
    assert_eq!((stats.disconnects_sent, stats.unknown_frames, stats.events_pushed), (1, 0, 0), "{stats:?}");

    let mut fresh = h.connect().await;
    assert_eq!(fresh.next_event().await["headers"]["eventId"], ids[0].as_str());
}

#[tokio::test]
async fn drop_closes_sockets_without_a_frame() {
    let h = start().await;
    let mut a = h.connect().await;
    let mut b = h.connect().await;
    let answer = h.admin.dingtalk_fault(json!({"drop": true, "app_key": APP})).await.unwrap();
    assert_eq!(answer.dropped, 2);
    assert!(matches!(a.end().await, End::NoFrame));
    assert!(matches!(b.end().await, End::NoFrame));
    h.wait_stats(|s| s.live_connections == 0).await;
    assert!(h.admin.dingtalk_fault(json!({"drop": true, "app_key": "nosuchapp"})).await.is_err());
}

#[tokio::test]
async fn shutdown_ends_stream_connections() {
    let h = start().await;
    let mut ws = h.connect().await;
    h.server.shutdown().await.unwrap();
    ws.end().await;
}

// ---------------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_state_never_shows_secrets() {
    let h = start().await;
    let text = h.http.get(h.url("/sim/state")).send().await.unwrap().text().await.unwrap();
    for secret in [SECRET, OTHER_SECRET, WECOM_SECRET] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
    let state: SimState = serde_json::from_str(&text).unwrap();
    assert!(state.dingtalk.iter().all(|a| a.app_secret == "***"), "{text}");
    assert!(state.corps.iter().all(|c| c.secret == "***"), "{text}");
    let app = state.dingtalk.iter().find(|a| a.app_key == APP).unwrap();
    assert_eq!(app.corp_id.as_deref(), Some(CORP));
    assert_eq!(app.chats.len(), 3);
    let other = state.dingtalk.iter().find(|a| a.app_key == OTHER_APP).unwrap();
    assert!(other.corp_id.as_deref().is_some_and(|c| c.starts_with("ding")), "a corp id is derived");

    // The in-process snapshot keeps the secrets, so it round-trips through a state file.
    h.admin.dingtalk_add_members(APP, TEAM_CHAT, &["saved"], None).await.unwrap();
    let snapshot = serde_json::to_string(&h.server.sim().snapshot()).unwrap();
    let again =
        sim::spawn(SimState::from_json(&snapshot, "snapshot").unwrap(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let again = Harness { admin: again.client(), server: again, http: h.http.clone() };
    let token = again.token().await;
    let team = again.chat_get(&token, TEAM_CHAT).await;
    assert_eq!(team["chat_info"]["useridlist"], json!(["user123", "user456", "manager4220", "saved"]));
}

#[tokio::test]
async fn the_bundled_state_serves_a_dingtalk_app() {
    let state = SimState::bundled().unwrap();
    let app = state.dingtalk.first().expect("the demo has a DingTalk app").clone();
    assert!(!app.chats.is_empty());
    let server = sim::spawn(state, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let h = Harness { admin: server.client(), server, http: reqwest::Client::builder().no_proxy().build().unwrap() };
    let token = h.gettoken(&app.app_key, &app.app_secret).await["access_token"].as_str().unwrap().to_owned();
    for chat in &app.chats {
        let answer = h.chat_get(&token, &chat.chatid).await;
        assert_eq!(answer["chat_info"]["owner"], chat.owner.as_str(), "{answer}");
    }
    assert_eq!(h.open(&open_body(&app.app_key, &app.app_secret)).await.status(), 200);
}

#[test]
fn the_crypto_vector_fixture_verifies() {
    use aes::cipher::{block_padding::NoPadding, BlockDecryptMut, KeyIvInit};
    use base64::Engine as _;
    use sha1::Digest as _;
    let v = fixture("crypto_vector.json");
    let s = |k: &str| v[k].as_str().unwrap().to_owned();
    let mut parts = [s("token"), s("timeStamp"), s("nonce"), s("encrypt")];
    parts.sort();
    assert_eq!(hex::encode(sha1::Sha1::digest(parts.concat())), s("signature"));

    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
    );
    let key = engine.decode(format!("{}=", s("aes_key"))).unwrap();
    let mut buf = base64::engine::general_purpose::STANDARD.decode(s("encrypt")).unwrap();
    assert_eq!(buf.len() as u64, v["ciphertext_len"].as_u64().unwrap());
    let plain = cbc::Decryptor::<aes::Aes256>::new(key[..].into(), key[..16].into())
        .decrypt_padded_mut::<NoPadding>(&mut buf)
        .unwrap();
    let pad = *plain.last().unwrap() as usize;
    assert_eq!(pad as u64, v["pad"].as_u64().unwrap());
    let plain = &plain[..plain.len() - pad];
    assert_eq!(&plain[..16], s("random").as_bytes());
    let len = u32::from_be_bytes(plain[16..20].try_into().unwrap()) as usize;
    assert_eq!(&plain[20..20 + len], s("plaintext").as_bytes());
    assert_eq!(&plain[20 + len..], s("owner_key").as_bytes());
}

#[test]
fn every_dingtalk_fixture_is_json() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/dingtalk");
    let mut count = 0;
    for sub in ["", "stream/"] {
        for entry in std::fs::read_dir(format!("{dir}/{sub}")).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if name.ends_with(".json") {
                let frame = fixture(&format!("{sub}{name}"));
                if name.ends_with(".frame.json") {
                    assert!(frame["headers"].as_object().unwrap().values().all(Value::is_string), "{name}");
                    data_of(&frame);
                }
                count += 1;
            }
        }
    }
    assert!(count >= 30, "{count}");
}
