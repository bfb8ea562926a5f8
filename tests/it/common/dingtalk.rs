//! The DingTalk side of the integration tests: the simulator as DingTalk (its apps and chats),
//! the app with a `[[dingtalk]]` tenant in Stream or HTTP mode, and a way to make a change in
//! the simulator and have its event reach the app the mode's way: pushed over the simulator's
//! Stream WebSocket, or taken from the simulator's event log, signed, encrypted and POSTed as
//! DingTalk's HTTP push would be.

use super::*;
use groupwatch::provider::wxbiz::WxCrypt;
use groupwatch::sim::{self, DingtalkPush, SimClient, SimServer, SimState};
use serde_json::{json, Map, Value};

pub const DT_TENANT: &str = "acme-dt";
pub const DT_APP: &str = "dingtestappkey0001";
pub const DT_SECRET: &str = "dingtalk-test-secret";
pub const DT_TOKEN: &str = "dt-callback-token";
pub const DT_AES: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
/// The chat every scenario works on, as in the 2021 capture of chat_remove_member.
pub const DT_CHAT: &str = "chat691a41db53b100115bec3603472d78a9";
pub const DT_CID: &str = "cid740SMooADFxmWX3DvIyp4g==";
/// Its members at the start; the owner is `user123`.
pub const DT_MEMBERS: [&str; 3] = ["user123", "user456", "manager4220"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtMode {
    Stream,
    Http,
}

pub fn dt_sim_state() -> SimState {
    serde_json::from_value(json!({
        "corps": [],
        "dingtalk": [{"app_key": DT_APP, "app_secret": DT_SECRET, "corp_id": "dingc7c5220402493357f2c783f7214b6d69", "chats": [
            {"chatid": DT_CHAT, "openConversationId": DT_CID, "name": "项目群", "owner": "user123",
             "useridlist": DT_MEMBERS, "status": 1},
        ]}],
    }))
    .expect("valid DingTalk simulator state")
}

/// The `[[dingtalk]]` table for the simulator at `sim`.
pub fn dt_tenant(mode: DtMode, sim: &str) -> String {
    let mode = match mode {
        DtMode::Stream => "stream",
        DtMode::Http => "http",
    };
    format!(
        "tenant = \"{DT_TENANT}\"\napp_key = \"{DT_APP}\"\napp_secret = \"{DT_SECRET}\"\nmode = \"{mode}\"\n\
         token = \"{DT_TOKEN}\"\naes_key = \"{DT_AES}\"\napi_base = \"{sim}\"\nstream_base = \"{sim}\""
    )
}

pub struct DtHarness {
    pub mode: DtMode,
    pub app: Option<TestApp>,
    pub sim: SimServer,
    pub simc: SimClient,
    pub tap: Tap,
    pub conn: lapin::Connection,
    pub store: TestStore,
    pub topology: groupwatch::queue::broker::Topology,
    pub config: String,
    /// How the simulator spells pushed events.
    pub push: DingtalkPush,
    http: reqwest::Client,
    crypt: WxCrypt,
}

impl DtHarness {
    pub async fn start(store: TestStore, mode: DtMode) -> DtHarness {
        Self::start_with(store, mode, |c| c).await
    }

    /// With `tweak` applied to the test configuration (the worker on, the tenant added).
    pub async fn start_with(store: TestStore, mode: DtMode, tweak: impl Fn(TestConfig) -> TestConfig) -> DtHarness {
        let sim = sim::spawn(dt_sim_state(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
        let simc = SimClient::new(sim.base_url());
        let exchange = unique_exchange();
        let config = TestConfig::new(&exchange, &store.url())
            .with_worker()
            .tenant("dingtalk", &dt_tenant(mode, &sim.base_url()));
        let config = tweak(config).toml();
        // Ready means connected, in stream mode (the harness waits for /readyz).
        let app = spawn_app(&config).await;
        let conn = amqp().await;
        let tap = Tap::new(&conn, &exchange).await;
        let topology = app.topology.clone();
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let crypt = WxCrypt::new(DT_TOKEN, DT_AES, DT_APP).unwrap();
        DtHarness {
            mode,
            app: Some(app),
            sim,
            simc,
            tap,
            conn,
            store,
            topology,
            config,
            push: DingtalkPush::camel(),
            http,
            crypt,
        }
    }

    pub fn app(&self) -> &TestApp {
        self.app.as_ref().expect("app running")
    }

    pub fn callback_url(&self) -> String {
        self.app().url(&format!("/dingtalk/{DT_TENANT}/callback"))
    }

    /// Delivers the simulator's events `ids` the mode's way (Stream: the simulator pushed them
    /// already).
    pub async fn deliver(&self, ids: &[String]) {
        if self.mode == DtMode::Stream {
            return;
        }
        let log = self.simc.dingtalk_events().await.unwrap();
        for id in ids {
            let event = log.iter().rev().find(|e| &e.event_id == id).expect("the simulator logged the event");
            let plaintext = http_plaintext(&event.event_type, &event.event_id, &event.data);
            let response = self.post(plaintext.as_bytes()).await;
            assert_eq!(response.status(), 200, "{}", response.text().await.unwrap_or_default());
            let reply: Value = response.json().await.unwrap();
            let success = self
                .crypt
                .verify_and_decrypt(
                    reply["msg_signature"].as_str().unwrap(),
                    reply["timeStamp"].as_str().unwrap(),
                    reply["nonce"].as_str().unwrap(),
                    reply["encrypt"].as_str().unwrap(),
                )
                .expect("the answer is signed and encrypted for the app");
            assert_eq!(success, "success");
        }
    }

    /// POSTs `plaintext` signed and encrypted as DingTalk would, now.
    pub async fn post(&self, plaintext: &[u8]) -> reqwest::Response {
        let signed = groupwatch::provider::dingtalk::codec::sign(&self.crypt, plaintext, now_ms());
        self.post_raw(&signed.query, signed.body).await
    }

    pub async fn post_raw(&self, query: &[(String, String)], body: Vec<u8>) -> reqwest::Response {
        self.http
            .post(self.callback_url())
            .query(query)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
    }

    fn push(&self) -> Option<&DingtalkPush> {
        Some(&self.push)
    }

    pub async fn add(&self, users: &[&str]) -> Vec<String> {
        let ids = self.simc.dingtalk_add_members(DT_APP, DT_CHAT, users, self.push()).await.unwrap();
        self.deliver(&ids).await;
        ids
    }

    pub async fn remove(&self, users: &[&str]) -> Vec<String> {
        let ids = self.simc.dingtalk_remove_members(DT_APP, DT_CHAT, users, self.push()).await.unwrap();
        self.deliver(&ids).await;
        ids
    }

    pub async fn quit(&self, user: &str) -> Vec<String> {
        let ids = self.simc.dingtalk_quit(DT_APP, DT_CHAT, user, self.push()).await.unwrap();
        self.deliver(&ids).await;
        ids
    }

    pub async fn rename(&self, name: &str) -> Vec<String> {
        let ids = self.simc.dingtalk_patch_chat(DT_APP, DT_CHAT, json!({ "name": name }), self.push()).await.unwrap();
        self.deliver(&ids).await;
        ids
    }

    pub async fn set_owner(&self, owner: &str) -> Vec<String> {
        let ids = self.simc.dingtalk_patch_chat(DT_APP, DT_CHAT, json!({ "owner": owner }), self.push()).await.unwrap();
        self.deliver(&ids).await;
        ids
    }

    pub async fn disband(&self) -> Vec<String> {
        let ids = self.simc.dingtalk_dismiss_chat(DT_APP, DT_CHAT, self.push()).await.unwrap();
        self.deliver(&ids).await;
        ids
    }

    /// Nothing more published, nothing waiting in the inbound queues.
    pub async fn assert_quiet(&self) {
        let extra = self.tap.collect(std::time::Duration::from_millis(800)).await;
        assert!(extra.is_empty(), "unexpected events: {extra:#?}");
    }

    pub async fn finish(mut self) {
        if let Some(app) = self.app.take() {
            app.stop().await;
        }
        cleanup(&self.conn, &self.topology).await;
        self.store.drop_database().await;
        drop(self.sim);
    }
}

/// The decrypted body of DingTalk's current HTTP push for a Stream `data`: the same fields,
/// with `EventType` (and `eventId` where the payload is camelCase, as the current docs show;
/// legacy PascalCase payloads have none).
pub fn http_plaintext(event_type: &str, event_id: &str, data: &str) -> String {
    let mut object: Map<String, Value> = serde_json::from_str(data).unwrap();
    if !object.keys().any(|k| k.eq_ignore_ascii_case("eventtype")) {
        object.insert("EventType".into(), event_type.into());
    }
    if object.contains_key("timeStamp") {
        object.insert("eventId".into(), event_id.into());
    }
    Value::Object(object).to_string()
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}
