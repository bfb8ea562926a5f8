//! The DingTalk (钉钉) part of the simulator: a stand-in for `oapi.dingtalk.com` (gettoken,
//! chat/get) and for the Stream-mode gateway of `api.dingtalk.com` (connections/open and the
//! WebSocket it hands out), driven by an admin API under `/sim/dingtalk/`.
//!
//! Like the rest of `sim`, it imports nothing from the service: it is written from the vendor
//! notes (`protocols.md` §4, `protocols-2.md` part A, seed 002), so that a misreading shared with
//! the service's DingTalk client cannot cancel out in tests.
//!
//! - [`api`]: gettoken and chat/get (HTTP 200, `errcode` in the body), connections/open (HTTP
//!   statuses with `{"requestid","code","message"}`, the `api.dingtalk.com` error shape).
//! - [`stream`]: the WebSocket at `/connect?ticket=`: EVENT frames, SYSTEM ping/disconnect, ACKs,
//!   redelivery.
//! - [`events`]: the six group events, in camelCase (Stream, current docs) or PascalCase (legacy
//!   HTTP callbacks and real captures).
//! - [`admin`]: chat changes (optionally pushing the matching event), raw pushes, faults,
//!   settings, stats, the event log.
//! - [`client`]: `SimClient` methods for all of the admin API.

mod admin;
mod api;
mod client;
mod events;
mod stream;

pub use admin::{DingtalkEventView, DingtalkFaultAnswer};
pub use client::DingtalkPush;
pub use events::DingtalkCasing;

use super::{take_one, Errcode, Pending, SharedSim, SimClient, SimClientError, SimError};
use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

/// What `GET /sim/state` shows instead of a secret.
pub(super) const MASK: &str = "***";
/// Previous chat states kept per chat; only the latest one is ever served (by `stale_fetches`).
const HISTORY_MAX: usize = 16;
/// Events kept per app for the event log, `redeliver` and ACK matching; the oldest settled
/// (ACKed or abandoned) ones go first.
const EVENTS_MAX: usize = 512;

// ---------------------------------------------------------------------------------------------
// State file
// ---------------------------------------------------------------------------------------------

/// A DingTalk app (企业内部应用) in the state file: its AppKey/AppSecret (= the Stream
/// clientId/clientSecret) and the chats its token can read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimDingtalkApp {
    pub app_key: String,
    /// Masked (`***`) by `GET /sim/state`.
    pub app_secret: String,
    /// The corp the app belongs to (`eventCorpId`, `corpId`); derived from `app_key` if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corp_id: Option<String>,
    #[serde(default)]
    pub chats: Vec<SimDingtalkChat>,
}

/// A group chat, in chat/get's `chat_info` field names (so a real answer can be pasted in) plus
/// `openConversationId`, the second name DingTalk gives a chat (`chat_update_owner` events carry
/// only that one). chat/get never shows `openConversationId`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SimDingtalkChat {
    pub chatid: String,
    pub open_conversation_id: String,
    pub name: String,
    /// The owner's userid.
    pub owner: String,
    #[serde(default)]
    pub useridlist: Vec<String>,
    /// 1 normal, 2 dismissed (解散). Seed 002's example answer has no `status`, so a chat without
    /// one is answered without one; dismissing sets 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<i64>,
    /// The avatar's mediaId.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icon: Option<String>,
    /// 2 = 企业群, the only value documented.
    #[serde(default = "enterprise_group")]
    pub conversation_tag: i64,
    #[serde(default)]
    pub chat_banned_type: i64,
    #[serde(default)]
    pub searchable: i64,
    #[serde(default)]
    pub validation_type: i64,
    #[serde(default)]
    pub mention_all_authority: i64,
    #[serde(default)]
    pub management_type: i64,
    #[serde(default)]
    pub show_history_type: i64,
}

fn enterprise_group() -> i64 {
    2
}

pub(super) const STATUS_NORMAL: i64 = 1;
pub(super) const STATUS_DISMISSED: i64 = 2;

impl SimDingtalkChat {
    fn is_dismissed(&self) -> bool {
        self.status == Some(STATUS_DISMISSED)
    }
}

/// Hides every app secret, for `GET /sim/state`.
pub(super) fn mask(apps: &mut [SimDingtalkApp]) {
    for app in apps {
        app.app_secret = MASK.into();
    }
}

// ---------------------------------------------------------------------------------------------
// Settings and stats
// ---------------------------------------------------------------------------------------------

/// Timings and policies of the simulated platform, as `GET|POST /sim/dingtalk/settings` show
/// them. The defaults follow the notes where they say something (cited per field) and are
/// simulator choices otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DingtalkSettings {
    /// Access-token lifetime; DingTalk's is 7200 s.
    pub token_ttl_ms: u64,
    /// Ticket lifetime; "ticket的有效期为90秒且只能用来建立一条连接" (protocols-2 A1.3).
    pub ticket_ttl_ms: u64,
    /// SYSTEM `ping` period per connection, 0 = no pings. DingTalk's own period is
    /// undocumented; 30 s is a simulator choice.
    pub ping_interval_ms: u64,
    /// A connection that leaves this many pings in a row unanswered is closed (without a frame);
    /// 0 = never. Undocumented on DingTalk; a simulator choice.
    pub ping_miss_limit: u32,
    /// How long an EVENT may stay un-ACKed (or answered `LATER`) before it is pushed again.
    /// 60 s per the Node SDK comment and an issue report (protocols-2 A2.7); not documented.
    pub redelivery_delay_ms: u64,
    /// Deliveries after which an un-ACKed event is given up (`abandoned`); 0 = never. DingTalk's
    /// retry count is unknown.
    pub max_deliveries: u32,
    /// Whether a redelivery gets a fresh `messageId`. By default it keeps the first one (the
    /// Python SDK dedupes on messageId, which implies that; protocols-2 A2.7 \[I\]).
    pub new_message_id_on_redelivery: bool,
    /// How long after a SYSTEM `disconnect` the socket is closed: "服务端在静默10s之后会主动断开
    /// tcp 连接" (protocols-2 A2.5).
    pub disconnect_grace_ms: u64,
}

impl Default for DingtalkSettings {
    fn default() -> Self {
        Self {
            token_ttl_ms: 7_200_000,
            ticket_ttl_ms: 90_000,
            ping_interval_ms: 30_000,
            ping_miss_limit: 3,
            redelivery_delay_ms: 60_000,
            max_deliveries: 0,
            new_message_id_on_redelivery: false,
            disconnect_grace_ms: 10_000,
        }
    }
}

/// What `GET /sim/dingtalk/stats` reports. API calls are counted faulted ones included.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DingtalkStats {
    pub gettoken: u64,
    pub chat_get: u64,
    pub connections_open: u64,
    /// WebSocket upgrades refused for an unknown, used or expired ticket.
    pub tickets_refused: u64,
    /// Connections open now (not a counter; not reset).
    pub live_connections: u64,
    /// First deliveries of EVENT frames.
    pub events_pushed: u64,
    /// Later deliveries: un-ACKed or `LATER` events pushed again, and `redeliver` faults.
    pub redeliveries: u64,
    pub acks_success: u64,
    /// ACKs with status `LATER` (or any ACK whose code is not 200).
    pub acks_later: u64,
    /// Replies to an EVENT that do not follow the ACK shape; they count as no ACK.
    pub acks_malformed: u64,
    pub pings_sent: u64,
    /// Correct answers to pings (same messageId, the opaque echoed).
    pub pongs: u64,
    /// Pings still unanswered when the next one was due.
    pub pings_missed: u64,
    pub disconnects_sent: u64,
    /// Client frames that answer nothing the simulator sent (unknown messageId, not JSON, ...).
    pub unknown_frames: u64,
    /// Why the latest malformed or unknown client frame was not taken, for test failures.
    pub last_frame_error: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Runtime state
// ---------------------------------------------------------------------------------------------

/// The DingTalk part of the simulator's live state, inside `Sim` (and so under its lock).
pub(super) struct Dingtalk {
    apps: BTreeMap<String, App>,
    /// Every token ever issued, by token.
    tokens: HashMap<String, Token>,
    /// Unused tickets, by ticket.
    tickets: HashMap<String, Ticket>,
    faults: admin::Faults,
    settings: DingtalkSettings,
    stats: DingtalkStats,
    /// Connection ids and event sequence numbers; both never repeat.
    next_id: u64,
    /// Stops connection tasks and redelivery timers when the simulator stops.
    stop: CancellationToken,
    /// Wakes connection tasks when the ping interval changes.
    settings_changed: Arc<Notify>,
}

struct App {
    secret: String,
    corp_id: String,
    /// `eventUnifiedAppId` (a UUID on DingTalk), derived from the app key.
    unified_app_id: String,
    /// DingTalk hands out the same token again while it is valid, and renews it.
    current_token: Option<String>,
    chats: BTreeMap<String, Chat>,
    conns: BTreeMap<u64, Conn>,
    /// Pushed events, oldest first.
    events: VecDeque<EventRecord>,
    /// Every messageId an event was delivered under → the event's sequence number.
    message_ids: HashMap<String, u64>,
}

struct Chat {
    now: SimDingtalkChat,
    /// The chat before each change, oldest first.
    history: Vec<SimDingtalkChat>,
}

impl Chat {
    /// Remembers the current state before a change.
    fn record(&mut self) {
        if self.history.len() == HISTORY_MAX {
            self.history.remove(0);
        }
        self.history.push(self.now.clone());
    }

    /// The chat as a lagging replica would answer it: as it was before the latest change.
    fn stale_view(&self) -> &SimDingtalkChat {
        self.history.last().unwrap_or(&self.now)
    }
}

struct Token {
    app_key: String,
    expires_at: Instant,
    /// Set by the `expire_tokens` fault.
    revoked: bool,
}

struct Ticket {
    app_key: String,
    expires_at: Instant,
    /// Whether the connection subscribed to `{"type":"EVENT","topic":"*"}`.
    events: bool,
}

/// What a connection task is told to do.
#[derive(Debug)]
enum Outgoing {
    /// Send this text frame.
    Frame(String),
    /// Close the socket without a closing handshake (the `drop` fault, the end of a
    /// `disconnect`'s grace period, too many missed pings).
    Drop,
}

struct Conn {
    tx: mpsc::UnboundedSender<Outgoing>,
    events: bool,
    /// Sent a SYSTEM disconnect: no new pushes go here.
    draining: bool,
    /// Pings awaiting their answer: messageId → opaque.
    pings: HashMap<String, String>,
    missed_in_row: u32,
    /// messageIds of SYSTEM disconnect frames, which clients may ACK.
    system_ids: HashSet<String>,
}

impl Conn {
    fn takes_events(&self) -> bool {
        self.events && !self.draining && !self.tx.is_closed()
    }
}

struct EventRecord {
    /// Internal identity: raw pushes may reuse an `eventId` on purpose.
    seq: u64,
    event_id: String,
    event_type: String,
    /// The `data` string, exactly as sent.
    data: String,
    born_ms: u64,
    /// Headers added to (or overriding) the standard ones, from raw pushes.
    extra_headers: Vec<(String, String)>,
    /// The messageId of the latest delivery.
    message_id: String,
    deliveries: u32,
    acked: bool,
    /// `SUCCESS` or `LATER`, from the latest ACK.
    last_status: Option<String>,
    /// No live connection took the latest delivery: the next connection of the app gets it.
    waiting: bool,
    /// `max_deliveries` reached without an ACK.
    abandoned: bool,
}

impl EventRecord {
    fn is_pending(&self) -> bool {
        !self.acked && !self.abandoned
    }
}

impl Dingtalk {
    pub(super) fn new(apps: Vec<SimDingtalkApp>) -> Result<Self, SimError> {
        let mut by_key = BTreeMap::new();
        for app in apps {
            if app.app_key.is_empty() {
                return Err(SimError::Invalid("a dingtalk app has an empty app_key".into()));
            }
            let mut chats = BTreeMap::new();
            let mut open_ids = HashSet::new();
            for chat in app.chats {
                validate_chat(&app.app_key, &chat)?;
                if !open_ids.insert(chat.open_conversation_id.clone()) {
                    return Err(SimError::Invalid(format!(
                        "dingtalk app {} has openConversationId {} twice",
                        app.app_key, chat.open_conversation_id
                    )));
                }
                let chatid = chat.chatid.clone();
                if chats.insert(chatid.clone(), Chat { now: chat, history: Vec::new() }).is_some() {
                    return Err(SimError::Invalid(format!("dingtalk app {} has chat {chatid} twice", app.app_key)));
                }
            }
            let corp_id = app.corp_id.unwrap_or_else(|| derived_corp_id(&app.app_key));
            let entry = App {
                secret: app.app_secret,
                corp_id,
                unified_app_id: derived_uuid(&app.app_key),
                current_token: None,
                chats,
                conns: BTreeMap::new(),
                events: VecDeque::new(),
                message_ids: HashMap::new(),
            };
            if by_key.insert(app.app_key.clone(), entry).is_some() {
                return Err(SimError::Invalid(format!("dingtalk app {} appears twice", app.app_key)));
            }
        }
        Ok(Self {
            apps: by_key,
            tokens: HashMap::new(),
            tickets: HashMap::new(),
            faults: admin::Faults::default(),
            settings: DingtalkSettings::default(),
            stats: DingtalkStats::default(),
            next_id: 0,
            stop: CancellationToken::new(),
            settings_changed: Arc::new(Notify::new()),
        })
    }

    /// The apps in the state-file format (secrets included; `GET /sim/state` masks them).
    pub(super) fn snapshot(&self) -> Vec<SimDingtalkApp> {
        self.apps
            .iter()
            .map(|(app_key, app)| SimDingtalkApp {
                app_key: app_key.clone(),
                app_secret: app.secret.clone(),
                corp_id: Some(app.corp_id.clone()),
                chats: app.chats.values().map(|c| c.now.clone()).collect(),
            })
            .collect()
    }

    pub(super) fn stats(&self) -> DingtalkStats {
        let mut stats = self.stats.clone();
        stats.live_connections = self.apps.values().map(|a| a.conns.len() as u64).sum();
        stats
    }

    /// Closes every connection and stops every timer (the simulator is stopping).
    pub(super) fn stop(&self) {
        self.stop.cancel();
    }

    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}

fn validate_chat(app_key: &str, chat: &SimDingtalkChat) -> Result<(), SimError> {
    if chat.chatid.is_empty() || chat.open_conversation_id.is_empty() {
        return Err(SimError::Invalid(format!(
            "dingtalk app {app_key} has a chat without chatid or openConversationId"
        )));
    }
    if chat.status.is_some_and(|s| s != STATUS_NORMAL && s != STATUS_DISMISSED) {
        return Err(SimError::Invalid(format!("dingtalk chat {}: status must be 1 or 2", chat.chatid)));
    }
    Ok(())
}

/// `ding` + 16 hex digits, the look of a DingTalk corpId.
fn derived_corp_id(app_key: &str) -> String {
    let digest = Sha256::new().chain_update(b"corp:").chain_update(app_key).finalize();
    format!("ding{}", hex::encode(&digest[..8]))
}

/// A stable UUID-looking id for an app (`eventUnifiedAppId`).
fn derived_uuid(app_key: &str) -> String {
    let digest = Sha256::new().chain_update(b"unified-app:").chain_update(app_key).finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid().hyphenated().to_string()
}

/// A userid's unionId: stable, and shaped like DingTalk's (they end in `iEiE`).
pub(super) fn union_id(userid: &str) -> String {
    let digest = Sha256::new().chain_update(b"union:").chain_update(userid).finalize();
    format!("{}iEiE", hex::encode(&digest[..11]))
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

/// A query parameter; an empty value counts as a missing one.
fn query_param(query: &Option<String>, key: &str) -> Option<String> {
    let query = query.as_deref()?;
    url::form_urlencoded::parse(query.as_bytes()).find(|(k, v)| k == key && !v.is_empty()).map(|(_, v)| v.into_owned())
}

impl SharedSim {
    /// Runs `f` on the DingTalk state under the simulator's lock.
    fn dingtalk<R>(&self, f: impl FnOnce(&mut Dingtalk) -> R) -> R {
        f(&mut self.lock().dingtalk)
    }

    /// The DingTalk counters, as `GET /sim/dingtalk/stats` reports them.
    pub fn dingtalk_stats(&self) -> DingtalkStats {
        self.dingtalk(|dt| dt.stats())
    }
}

// ---------------------------------------------------------------------------------------------
// Router
// ---------------------------------------------------------------------------------------------

/// The DingTalk API, gateway, WebSocket and admin routes, merged into `sim::router`.
pub(super) fn routes() -> Router<SharedSim> {
    let api = Router::new()
        .route("/gettoken", get(api::gettoken))
        .route("/chat/get", get(api::chat_get))
        .route("/v1.0/gateway/connections/open", post(api::connections_open))
        .route("/connect", get(stream::connect));
    let chat = "/sim/dingtalk/apps/{app}/chats/{chatid}";
    let admin = Router::new()
        .route(chat, get(admin::get_chat).put(admin::put_chat).patch(admin::patch_chat).delete(admin::dismiss_chat))
        .route(&format!("{chat}/members"), post(admin::add_members).delete(admin::remove_members))
        .route(&format!("{chat}/quit"), post(admin::quit))
        .route("/sim/dingtalk/apps/{app}/events", post(admin::push_event))
        .route("/sim/dingtalk/events", get(admin::events))
        .route("/sim/dingtalk/pending", get(admin::pending))
        .route("/sim/dingtalk/faults", get(admin::faults).post(admin::set_faults).delete(admin::clear_faults))
        .route("/sim/dingtalk/settings", get(admin::settings).post(admin::set_settings))
        .route("/sim/dingtalk/stats", get(admin::stats).delete(admin::reset_stats));
    api.merge(admin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_look_like_dingtalk_and_are_stable() {
        let corp = derived_corp_id("dingappkey");
        assert!(corp.starts_with("ding") && corp.len() == 20, "{corp}");
        assert_eq!(corp, derived_corp_id("dingappkey"));
        assert_ne!(corp, derived_corp_id("other"));
        let uuid = derived_uuid("dingappkey");
        assert_eq!(uuid.len(), 36, "{uuid}");
        assert!(union_id("user123").ends_with("iEiE"));
        assert_ne!(union_id("a"), union_id("b"));
    }

    #[test]
    fn duplicate_chats_and_bad_status_are_refused() {
        let chat = |id: &str, cid: &str| serde_json::json!({"chatid": id, "openConversationId": cid, "name": "n", "owner": "o"});
        let app = |chats: Vec<serde_json::Value>| -> Vec<SimDingtalkApp> {
            serde_json::from_value(serde_json::json!([{"app_key": "k", "app_secret": "s", "chats": chats}])).unwrap()
        };
        assert!(Dingtalk::new(app(vec![chat("a", "cid1"), chat("a", "cid2")])).is_err());
        assert!(Dingtalk::new(app(vec![chat("a", "cid1"), chat("b", "cid1")])).is_err());
        let mut bad = chat("a", "cid1");
        bad["status"] = 3.into();
        assert!(Dingtalk::new(app(vec![bad])).is_err());
        assert!(Dingtalk::new(app(vec![chat("a", "cid1"), chat("b", "cid2")])).is_ok());
    }
}
