//! The WeCom API simulator: a real HTTP stand-in for `qyapi.weixin.qq.com`, which development
//! and CI machines cannot reach.
//!
//! It plays the three endpoints groupwatch calls (gettoken, groupchat/list, groupchat/get) from
//! an in-memory state loaded from a JSON file ([`SimState`]), and offers an admin API under
//! `/sim/` to change groups and inject faults while a test or demo runs ([`SimClient`] wraps it).
//!
//! As on WeCom, API errors are HTTP 200 with `errcode` in the body; only injected `http_status`
//! faults answer another status. Admin errors are plain HTTP statuses with `{"error": "…"}`.
//!
//! It also plays WeCom's customer-group administration (`wecom_admin`): transfers, join ways,
//! statistics and app group chats (`appchat/get`), and records the request bodies of every WeCom
//! API call (`GET /sim/requests`) so that tests can assert what WeCom would have seen.
//!
//! It also plays Tencent Cloud IM (`tim`): the group REST API, UserSig checks and the group
//! after-callbacks, with its own admin API under `/sim/tim/`.

mod admin;
mod client;
mod dingtalk;
mod tim;
mod wecom;
mod wecom_admin;

use admin::*;
pub use client::{SimClient, SimClientError};
pub use dingtalk::{
    DingtalkCasing, DingtalkEventView, DingtalkFaultAnswer, DingtalkPush, DingtalkSettings, DingtalkStats,
    SimDingtalkApp, SimDingtalkChat,
};
pub use tim::{
    SimTimApp, TimCallbackReport, TimChange, TimEventTime, TimExitType, TimGroup, TimJoinType, TimKeyValue, TimMember,
    TimNotify, TimStats,
};
use wecom::*;
pub use wecom_admin::{RecordedRequest, SimAppChat, SimJoinWay};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use base64::Engine as _;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use rand::distributions::{Alphanumeric, DistString};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The state `groupwatch sim` starts with when no `--state` file is given.
const BUNDLED_STATE: &str = include_str!("../../fixtures/sim/state.json");

/// What `GET /sim/state` shows in place of a secret.
pub const MASKED_SECRET: &str = "***";

/// WeCom's token lifetime.
const TOKEN_TTL: Duration = Duration::from_secs(7200);
/// WeCom's documented bounds for groupchat/list.
const LIST_LIMIT_MAX: i64 = 1000;
const OWNER_FILTER_MAX: usize = 100;
/// Only the latest previous member state is ever served (by `stale_fetches`); a few more are
/// kept so that the history stays inspectable in a debugger without growing without bound.
const HISTORY_MAX: usize = 16;

// ---------------------------------------------------------------------------------------------
// State file
// ---------------------------------------------------------------------------------------------

/// The simulator's state file, and what `GET /sim/state` answers (secrets masked there). Groups and members use
/// WeCom's own JSON shapes, so a real groupchat/get answer can be pasted in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimState {
    pub corps: Vec<SimCorp>,
    /// DingTalk apps and their chats (see `dingtalk`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dingtalk: Vec<SimDingtalkApp>,
    /// Tencent Cloud IM apps (see `tim`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tim: Vec<SimTimApp>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimCorp {
    pub corp_id: String,
    pub secret: String,
    /// Plays an app whose visible range has more than 1000 people: WeCom then refuses
    /// groupchat/list without an `owner_filter` (81017).
    #[serde(default)]
    pub large_visible_range: bool,
    #[serde(default)]
    pub groups: Vec<SimGroup>,
    /// Group chats created by an app (`appchat`), served by `appchat/get`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub appchats: Vec<SimAppChat>,
    /// Join ways (「加入群聊」) configured through `add_join_way`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub join_ways: Vec<SimJoinWay>,
}

/// A customer group, serialised exactly as groupchat/get's `group_chat` (field order included).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimGroup {
    pub chat_id: String,
    #[serde(default)]
    pub name: String,
    pub owner: String,
    pub create_time: i64,
    #[serde(default)]
    pub notice: String,
    #[serde(default)]
    pub member_list: Vec<WecomMember>,
    #[serde(default)]
    pub admin_list: Vec<UserRef>,
    /// Optional in a state file (one is generated); always set once loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_version: Option<String>,
    /// Simulator-only: a dismissed group is neither listed nor answered by groupchat/get.
    #[serde(default, skip_serializing_if = "is_false")]
    pub dismissed: bool,
    /// Simulator-only (groupchat/list reports it, groupchat/get does not): 0 owner in service,
    /// 1 owner resigned, 2 inheritance in progress, 3 inherited.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub status: i64,
}

/// One `member_list` entry. Absent optional fields stay absent on the wire, as on WeCom (which
/// omits `unionid` and `invitor` when they do not apply), never `null`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WecomMember {
    pub userid: String,
    #[serde(rename = "type")]
    pub member_type: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unionid: Option<String>,
    pub join_time: i64,
    pub join_scene: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invitor: Option<UserRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_nickname: Option<String>,
    /// Only sent when the request has `need_name: 1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The `state` of the join way the member came through, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

/// WeCom's `{"userid": "…"}`, used by `invitor` and `admin_list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserRef {
    pub userid: String,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("bad simulator state in {origin}: {source}")]
    Parse { origin: String, source: serde_path_to_error::Error<serde_json::Error> },
    #[error("bad simulator state: {0}")]
    Invalid(String),
}

impl SimState {
    pub fn load(path: impl AsRef<FsPath>) -> Result<Self, SimError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| SimError::Read { path: path.into(), source })?;
        Self::from_json(&text, &path.display().to_string())
    }

    /// The example state shipped in `fixtures/sim/state.json`.
    pub fn bundled() -> Result<Self, SimError> {
        Self::from_json(BUNDLED_STATE, "fixtures/sim/state.json (bundled)")
    }

    /// `origin` only names the source in error messages.
    pub fn from_json(text: &str, origin: &str) -> Result<Self, SimError> {
        let de = &mut serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|source| SimError::Parse { origin: origin.into(), source })
    }

    /// The state with every secret replaced by `***`, as `GET /sim/state` shows it.
    pub fn masked(mut self) -> Self {
        for corp in &mut self.corps {
            corp.secret = MASKED_SECRET.into();
        }
        dingtalk::mask(&mut self.dingtalk);
        self
    }
}

// ---------------------------------------------------------------------------------------------
// Runtime state
// ---------------------------------------------------------------------------------------------

/// The simulator's live state, shared by the router and by tests that want to peek at it.
#[derive(Clone)]
pub struct SharedSim(Arc<Mutex<Sim>>);

/// What the `/sim/stats` endpoint reports: API calls per endpoint, faulted ones included.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimStats {
    pub gettoken: u64,
    pub groupchat_get: u64,
    pub groupchat_list: u64,
}

/// When each counted WeCom API call arrived (epoch ms, oldest first, the last
/// `MAX_CALL_TIMES` of each), for `GET /sim/call-times`: tests check rates with it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimCallTimes {
    pub gettoken: VecDeque<i64>,
    pub groupchat_get: VecDeque<i64>,
    pub groupchat_list: VecDeque<i64>,
    /// `gettoken` calls per `corpid` asked for (unknown corps included).
    pub gettoken_per_corp: BTreeMap<String, u64>,
}

const MAX_CALL_TIMES: usize = 100_000;

impl SimCallTimes {
    fn record(log: &mut VecDeque<i64>) {
        if log.len() == MAX_CALL_TIMES {
            log.pop_front();
        }
        log.push_back(crate::core::clock::now_ms());
    }
}

struct Sim {
    corps: BTreeMap<String, Corp>,
    call_times: SimCallTimes,
    /// Every token ever issued, so that old ones answer "expired" (42001) rather than "invalid"
    /// (40014), as they do on WeCom.
    tokens: HashMap<String, Token>,
    faults: Faults,
    stats: SimStats,
    versions: VersionGen,
    /// WeCom API requests as received (newest last, bounded), for `GET /sim/requests`.
    requests: Vec<RecordedRequest>,
    dingtalk: dingtalk::Dingtalk,
    tim: tim::TimSim,
}

struct Corp {
    secret: String,
    large_visible_range: bool,
    /// WeCom hands out the same token again while it is valid.
    current_token: Option<String>,
    /// Ordered by chat_id, which is what list cursors page over.
    groups: BTreeMap<String, Group>,
    appchats: BTreeMap<String, SimAppChat>,
    /// By config_id.
    join_ways: BTreeMap<String, SimJoinWay>,
}

struct Group {
    /// `now.member_version` is always `Some`.
    now: SimGroup,
    /// Member states before each membership change, oldest first.
    history: Vec<MemberState>,
    /// Successful `onjob_transfer`s of this group (WeCom allows 2 per 90 days).
    onjob_transfers: u32,
}

struct MemberState {
    member_list: Vec<WecomMember>,
    member_version: String,
}

struct Token {
    corp_id: String,
    expires_at: Instant,
    /// Set by the `expire_tokens` fault.
    revoked: bool,
}

impl Token {
    fn is_valid(&self, now: Instant) -> bool {
        !self.revoked && now < self.expires_at
    }
}

/// Member versions look like WeCom's (32 lowercase hex) and never repeat: a counter hashed with a
/// per-instance random seed, so two simulators (or a restarted one) do not collide either.
struct VersionGen {
    seed: [u8; 16],
    counter: u64,
}

impl VersionGen {
    fn new() -> Self {
        Self { seed: rand::random(), counter: 0 }
    }

    fn next(&mut self) -> String {
        self.counter += 1;
        let digest = Sha256::new().chain_update(self.seed).chain_update(self.counter.to_be_bytes()).finalize();
        hex::encode(&digest[..16])
    }
}

impl Group {
    fn new(mut group: SimGroup, versions: &mut VersionGen) -> Self {
        if group.member_version.is_none() {
            group.member_version = Some(versions.next());
        }
        Self { now: group, history: Vec::new(), onjob_transfers: 0 }
    }

    fn member_version(&self) -> &str {
        self.now.member_version.as_deref().unwrap_or_default()
    }

    /// Applies a membership change under a new version, remembering the state before it.
    fn change_members(&mut self, versions: &mut VersionGen, change: impl FnOnce(&mut Vec<WecomMember>)) -> String {
        let version = versions.next();
        let before =
            MemberState { member_list: self.now.member_list.clone(), member_version: self.member_version().to_owned() };
        if self.history.len() == HISTORY_MAX {
            self.history.remove(0);
        }
        self.history.push(before);
        change(&mut self.now.member_list);
        self.now.member_version = Some(version.clone());
        version
    }

    /// The group as a lagging WeCom replica would answer it: current name, owner and notice,
    /// but the members and version from before the latest membership change.
    fn stale_view(&self) -> SimGroup {
        let mut group = self.now.clone();
        if let Some(before) = self.history.last() {
            group.member_list = before.member_list.clone();
            group.member_version = Some(before.member_version.clone());
        }
        group
    }
}

impl SharedSim {
    /// Validates the state (unique, non-empty ids) and fills in missing member versions.
    pub fn new(state: SimState) -> Result<Self, SimError> {
        let mut versions = VersionGen::new();
        let mut corps = BTreeMap::new();
        for corp in state.corps {
            if corp.corp_id.is_empty() {
                return Err(SimError::Invalid("a corp has an empty corp_id".into()));
            }
            let mut groups = BTreeMap::new();
            for group in corp.groups {
                if group.chat_id.is_empty() {
                    return Err(SimError::Invalid(format!("corp {} has a group with an empty chat_id", corp.corp_id)));
                }
                let chat_id = group.chat_id.clone();
                if !(0..=3).contains(&group.status) {
                    return Err(SimError::Invalid(format!("chat {chat_id}: status must be 0..=3")));
                }
                if groups.insert(chat_id.clone(), Group::new(group, &mut versions)).is_some() {
                    return Err(SimError::Invalid(format!("corp {} has chat {chat_id} twice", corp.corp_id)));
                }
            }
            let mut appchats = BTreeMap::new();
            for chat in corp.appchats {
                let chatid = chat.chatid.clone();
                if chatid.is_empty() || appchats.insert(chatid.clone(), chat).is_some() {
                    return Err(SimError::Invalid(format!(
                        "corp {}: app chat {chatid:?} empty or twice",
                        corp.corp_id
                    )));
                }
            }
            let mut join_ways = BTreeMap::new();
            for way in corp.join_ways {
                let config_id = way.config_id.clone();
                if config_id.is_empty() || join_ways.insert(config_id.clone(), way).is_some() {
                    return Err(SimError::Invalid(format!(
                        "corp {}: join way {config_id:?} empty or twice",
                        corp.corp_id
                    )));
                }
            }
            let entry = Corp {
                secret: corp.secret,
                large_visible_range: corp.large_visible_range,
                current_token: None,
                groups,
                appchats,
                join_ways,
            };
            if corps.insert(corp.corp_id.clone(), entry).is_some() {
                return Err(SimError::Invalid(format!("corp {} appears twice", corp.corp_id)));
            }
        }
        let dingtalk = dingtalk::Dingtalk::new(state.dingtalk)?;
        let tim = tim::TimSim::new(state.tim)?;
        let sim = Sim {
            corps,
            tokens: HashMap::new(),
            faults: Faults::default(),
            stats: SimStats::default(),
            versions,
            requests: Vec::new(),
            call_times: SimCallTimes::default(),
            dingtalk,
            tim,
        };
        Ok(Self(Arc::new(Mutex::new(sim))))
    }

    /// The current state, in the state-file format (dismissed groups included, flagged; TIM
    /// secrets masked).
    pub fn snapshot(&self) -> SimState {
        let sim = self.lock();
        let corps = sim
            .corps
            .iter()
            .map(|(corp_id, corp)| SimCorp {
                corp_id: corp_id.clone(),
                secret: corp.secret.clone(),
                large_visible_range: corp.large_visible_range,
                groups: corp.groups.values().map(|g| g.now.clone()).collect(),
                appchats: corp.appchats.values().cloned().collect(),
                join_ways: corp.join_ways.values().cloned().collect(),
            })
            .collect();
        SimState { corps, dingtalk: sim.dingtalk.snapshot(), tim: sim.tim.snapshot() }
    }

    pub fn stats(&self) -> SimStats {
        self.lock().stats
    }

    pub fn call_times(&self) -> SimCallTimes {
        self.lock().call_times.clone()
    }

    fn lock(&self) -> MutexGuard<'_, Sim> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters to a test double, so keep serving rather than poison every later request.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

// ---------------------------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------------------------

/// Faults waiting to be served, as `GET`/`POST /sim/faults` answer them.
#[derive(Debug, Clone, Default, Serialize)]
struct Faults {
    stale_fetches: u32,
    errcode: Option<Pending<i64>>,
    http_status: Option<Pending<u16>>,
    latency_ms: u64,
    /// groupchat/get answers computed at once but delivered this much later (a slow network on
    /// the way back): the answer shows the group as it was when asked.
    answer_delay: Option<Pending<u64>>,
    /// groupchat/get answers naming another chat id.
    wrong_chat_id: u32,
    /// Until then, every groupchat/get answer is stale (a replica lagging by a bounded time,
    /// unlike `stale_fetches`, which counts answers however late they come).
    #[serde(skip)]
    stale_until: Option<Instant>,
    /// gettoken states this lifetime instead of the real one.
    #[serde(skip_serializing_if = "Option::is_none")]
    token_expires_in: Option<u64>,
    /// groupchat/list answers a page asked for with a cursor with that same cursor again.
    #[serde(skip_serializing_if = "is_false")]
    repeat_cursor: bool,
    /// groupchat/get answers carry this many bytes of trailing whitespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    oversized_answer_bytes: Option<usize>,
}

#[derive(Debug, Clone, Copy, Serialize)]
struct Pending<T> {
    value: T,
    count: u32,
}

/// Takes one use of a counted fault; `count` is never 0 while the fault is set.
fn take_one<T: Copy>(slot: &mut Option<Pending<T>>) -> Option<T> {
    let pending = slot.as_mut()?;
    let value = pending.value;
    pending.count -= 1;
    if pending.count == 0 {
        *slot = None;
    }
    Some(value)
}

/// `POST /sim/faults`. Unknown keys are refused so that a typo does not silently inject nothing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultRequest {
    stale_fetches: Option<u32>,
    errcode: Option<i64>,
    http_status: Option<u16>,
    /// How many calls `errcode` / `http_status` affect; default 1, 0 clears them.
    count: Option<u32>,
    latency_ms: Option<u64>,
    expire_tokens: Option<bool>,
    /// Delay the next `count` groupchat/get answers by this much after computing them.
    answer_delay_ms: Option<u64>,
    wrong_chat_id: Option<u32>,
    /// Every groupchat/get answer in the next this many milliseconds is stale.
    stale_for_ms: Option<u64>,
    /// 0 clears it.
    token_expires_in: Option<u64>,
    repeat_cursor: Option<bool>,
    /// 0 clears it; at most [`MAX_OVERSIZED_ANSWER`].
    oversized_answer_bytes: Option<usize>,
}

/// The largest padding `oversized_answer_bytes` adds, so a typo cannot exhaust the memory.
const MAX_OVERSIZED_ANSWER: usize = 64 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Router
// ---------------------------------------------------------------------------------------------

pub fn router(state: SharedSim) -> Router {
    let wecom = Router::new()
        .route("/cgi-bin/gettoken", get(gettoken))
        .route("/cgi-bin/externalcontact/groupchat/get", post(groupchat_get))
        .route("/cgi-bin/externalcontact/groupchat/list", post(groupchat_list))
        .merge(wecom_admin::api_routes());
    let admin = Router::new()
        .route("/sim/state", get(admin_state))
        .route(
            "/sim/corps/{corp}/groups/{chat_id}",
            put(admin_put_group).patch(admin_patch_group).delete(admin_dismiss),
        )
        .route("/sim/corps/{corp}/groups/{chat_id}/members", post(admin_add_member))
        .route("/sim/corps/{corp}/groups/{chat_id}/members/{userid}", delete(admin_remove_member))
        .route("/sim/faults", get(admin_faults).post(admin_set_faults).delete(admin_clear_faults))
        .route("/sim/stats", get(admin_stats).delete(admin_reset_stats))
        .route("/sim/call-times", get(admin_call_times))
        .merge(wecom_admin::admin_routes());
    wecom
        .merge(admin)
        .merge(dingtalk::routes())
        .merge(tim::routes())
        .layer(middleware::from_fn(log_request))
        .with_state(state)
}

/// Marks a response with the WeCom errcode it carries, for the request log.
#[derive(Debug, Clone, Copy)]
struct Errcode(i64);

async fn log_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    // The path only: the query carries corpsecret and access_token.
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let errcode = response.extensions().get::<Errcode>().map(|e| e.0);
    tracing::debug!(%method, %path, status = response.status().as_u16(), errcode, "sim request");
    response
}

// ---------------------------------------------------------------------------------------------
// Serving
// ---------------------------------------------------------------------------------------------

/// A simulator running in the background, for tests. Dropping it stops the server.
pub struct SimServer {
    pub addr: SocketAddr,
    sim: SharedSim,
    stop: CancellationToken,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

/// Starts a simulator on `listen` (port 0 picks a free port).
pub async fn spawn(state: SimState, listen: SocketAddr) -> std::io::Result<SimServer> {
    let sim = SharedSim::new(state).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    let server = axum::serve(listener, router(sim.clone())).with_graceful_shutdown(stop.clone().cancelled_owned());
    let task = tokio::spawn(async move { server.await });
    Ok(SimServer { addr, sim, stop, task: Some(task) })
}

impl SimServer {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn client(&self) -> SimClient {
        SimClient::new(self.base_url())
    }

    /// The live state, for assertions that the HTTP API does not expose.
    pub fn sim(&self) -> &SharedSim {
        &self.sim
    }

    /// Stops accepting, lets in-flight requests finish, and waits for the server to end.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        self.stop.cancel();
        self.sim.lock().dingtalk.stop();
        match self.task.take() {
            Some(task) => task.await.map_err(std::io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        self.stop.cancel();
        // WebSocket connections outlive the HTTP server's graceful shutdown: end them too.
        self.sim.lock().dingtalk.stop();
        // Drop cannot wait for a graceful end; kill the task so no test leaks a server.
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// `groupwatch sim --listen ADDR [--state FILE]`: serves until `shutdown` resolves.
pub async fn run(
    listen: SocketAddr,
    state_path: Option<PathBuf>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let state = match &state_path {
        Some(path) => SimState::load(path)?,
        None => SimState::bundled()?,
    };
    let sim = SharedSim::new(state)?;
    let listener = TcpListener::bind(listen).await.map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let source = state_path.as_deref().map_or("bundled fixtures/sim/state.json".into(), |p| p.display().to_string());
    tracing::info!(addr = %listener.local_addr()?, state = %source, "WeCom and DingTalk simulator listening");
    let streams = sim.clone();
    let shutdown = async move {
        shutdown.await;
        streams.lock().dingtalk.stop();
    };
    axum::serve(listener, router(sim)).with_graceful_shutdown(shutdown).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_state_loads() {
        let state = SimState::bundled().expect("bundled state parses");
        SharedSim::new(state).expect("bundled state is valid");
    }

    #[test]
    fn member_versions_look_like_wecom_and_never_repeat() {
        let mut versions = VersionGen::new();
        let a = versions.next();
        let b = versions.next();
        assert_ne!(a, b);
        for v in [&a, &b] {
            assert_eq!(v.len(), 32);
            assert!(v.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()), "{v}");
        }
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        assert_eq!(decode_cursor(""), Some(None));
        let cursor = encode_cursor("wrOgQhDgAAcwMTB7YmDkbeBsAAAA");
        assert_eq!(decode_cursor(&cursor), Some(Some("wrOgQhDgAAcwMTB7YmDkbeBsAAAA".to_owned())));
        assert_eq!(decode_cursor("not base64!"), None);
    }

    #[test]
    fn duplicate_chat_ids_are_refused() {
        let group = serde_json::json!({"chat_id": "c", "owner": "o", "create_time": 1});
        let state: SimState = serde_json::from_value(serde_json::json!({
            "corps": [{"corp_id": "ww1", "secret": "s", "groups": [group, group]}]
        }))
        .unwrap();
        assert!(matches!(SharedSim::new(state), Err(SimError::Invalid(_))));
    }
}
