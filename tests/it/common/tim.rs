//! The Tencent IM side of a scenario: the simulator's app and groups, the app configured with a
//! `[[tim]]` tenant calling it, the simulator's callbacks pointed at the app, and callbacks signed
//! here (not by the service's codec, so that one bug cannot hide in both).

use super::*;
use groupwatch::sim::{SimState, TimChange};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub const TIM_TENANT: &str = "acme-im";
pub const TIM_APP: u64 = 1_400_000_123;
pub const TIM_ADMIN: &str = "administrator";
pub const TIM_KEY: &str = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";
pub const TIM_TOKEN: &str = "tim-callback-token";
pub const GROUP: &str = "@TGS#2J4SZEAEL";
pub const GROUP_CREATE_TIME: i64 = 1_600_000_000;

pub fn tim_member(account: &str, role: &str, join_time: i64) -> Value {
    json!({"Member_Account": account, "Role": role, "JoinTime": join_time})
}

/// A Public group owned by `owner` with `others` as members (joined one second apart).
pub fn tim_group(id: &str, owner: &str, others: &[&str]) -> Value {
    let mut members = vec![tim_member(owner, "Owner", GROUP_CREATE_TIME)];
    members.extend(others.iter().enumerate().map(|(i, a)| tim_member(a, "Member", GROUP_CREATE_TIME + 1 + i as i64)));
    json!({"GroupId": id, "Type": "Public", "Name": format!("group {id}"), "Owner_Account": owner,
           "Notification": "welcome", "CreateTime": GROUP_CREATE_TIME, "MemberList": members})
}

/// The simulator with one TIM app holding `groups`.
pub fn tim_state(groups: Vec<Value>) -> SimState {
    serde_json::from_value(json!({"corps": [], "tim": [
        {"sdk_app_id": TIM_APP, "identifier": TIM_ADMIN, "secret_key": TIM_KEY, "callback_token": TIM_TOKEN,
         "groups": groups}
    ]}))
    .expect("valid TIM state")
}

/// The worker on, the TIM tenant calling the simulator at `api_base`.
pub fn tim_config(exchange: &str, store: &TestStore, api_base: &str) -> String {
    pipeline_test_config(exchange, store, api_base)
        .tenant(
            "tim",
            &format!(
                "tenant = \"{TIM_TENANT}\"\nsdk_app_id = {TIM_APP}\nidentifier = \"{TIM_ADMIN}\"\n\
                 secret_key = \"{TIM_KEY}\"\ncallback_token = \"{TIM_TOKEN}\"\napi_base = \"{api_base}\""
            ),
        )
        .toml()
}

/// `hex(sha256(token + RequestTime))`.
pub fn tim_sign(token: &str, request_time: i64) -> String {
    hex::encode(Sha256::digest(format!("{token}{request_time}").as_bytes()))
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// The query Tencent appends to the callback URL, signed at `request_time`.
pub fn tim_query(command: &str, request_time: i64) -> Vec<(&'static str, String)> {
    vec![
        ("SdkAppid", TIM_APP.to_string()),
        ("CallbackCommand", command.to_owned()),
        ("contenttype", "json".into()),
        ("ClientIP", "127.0.0.1".into()),
        ("OptPlatform", "RESTAPI".into()),
        ("Sign", tim_sign(TIM_TOKEN, request_time)),
        ("RequestTime", request_time.to_string()),
    ]
}

/// The scenario harness with the simulator's TIM callbacks sent to the app.
pub struct TimHarness {
    pub h: Harness,
    pub http: reqwest::Client,
}

impl std::ops::Deref for TimHarness {
    type Target = Harness;
    fn deref(&self) -> &Harness {
        &self.h
    }
}

impl TimHarness {
    pub async fn start(store: TestStore, groups: Vec<Value>) -> TimHarness {
        let h = Harness::start_with_state(store, Default::default(), tim_state(groups), tim_config).await;
        let url = h.app().url(&format!("/tim/{TIM_TENANT}/callback"));
        h.simc.tim_set_callback_url(TIM_APP, Some(&url)).await.unwrap();
        TimHarness { h, http: reqwest::Client::builder().no_proxy().build().unwrap() }
    }

    pub fn callback_url(&self) -> String {
        self.app().url(&format!("/tim/{TIM_TENANT}/callback"))
    }

    /// POSTs `body` with `query`; the status and body answered.
    pub async fn post(&self, query: &[(&str, String)], body: &[u8]) -> (u16, String) {
        let resp = self
            .http
            .post(self.callback_url())
            .query(query)
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    /// POSTs a callback body signed now, with the command its body names.
    pub async fn post_signed(&self, body: &Value) -> (u16, String) {
        let command = body["CallbackCommand"].as_str().unwrap_or_default().to_owned();
        self.post(&tim_query(&command, unix_now()), body.to_string().as_bytes()).await
    }

    pub async fn finish(self) {
        self.h.finish().await
    }
}

/// The callback a simulator change sent: it must have been answered 200 with Tencent's OK.
pub fn sent(change: &TimChange) -> Value {
    let cb = change.callback.as_ref().expect("the simulator sent a callback");
    assert_eq!(cb.status, Some(200), "{cb:?}");
    assert_eq!(cb.response_body.as_deref(), Some(r#"{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}"#));
    serde_json::from_str(&cb.request_body).unwrap()
}

/// `EventTime` (ms, number or string) of a sent callback, in seconds.
pub fn event_secs(body: &Value) -> i64 {
    let ms = match &body["EventTime"] {
        Value::Number(n) => n.as_i64().unwrap(),
        Value::String(s) => s.parse().unwrap(),
        other => panic!("EventTime {other}"),
    };
    ms / 1000
}
