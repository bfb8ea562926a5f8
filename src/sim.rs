//! The WeCom API simulator: a real HTTP stand-in for `qyapi.weixin.qq.com`, which development
//! and CI machines cannot reach.
//!
//! It plays the three endpoints groupwatch calls (gettoken, groupchat/list, groupchat/get) from
//! an in-memory state loaded from a JSON file ([`SimState`]), and offers an admin API under
//! `/sim/` to change groups and inject faults while a test or demo runs ([`SimClient`] wraps it).
//!
//! As on WeCom, API errors are HTTP 200 with `errcode` in the body; only injected `http_status`
//! faults answer another status. Admin errors are plain HTTP statuses with `{"error": "…"}`.

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
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The state `groupwatch sim` starts with when no `--state` file is given.
const BUNDLED_STATE: &str = include_str!("../fixtures/sim/state.json");

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

/// The simulator's state file, and what `GET /sim/state` answers. Groups and members use
/// WeCom's own JSON shapes, so a real groupchat/get answer can be pasted in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimState {
    pub corps: Vec<SimCorp>,
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

struct Sim {
    corps: BTreeMap<String, Corp>,
    /// Every token ever issued, so that old ones answer "expired" (42001) rather than "invalid"
    /// (40014), as they do on WeCom.
    tokens: HashMap<String, Token>,
    faults: Faults,
    stats: SimStats,
    versions: VersionGen,
}

struct Corp {
    secret: String,
    large_visible_range: bool,
    /// WeCom hands out the same token again while it is valid.
    current_token: Option<String>,
    /// Ordered by chat_id, which is what list cursors page over.
    groups: BTreeMap<String, Group>,
}

struct Group {
    /// `now.member_version` is always `Some`.
    now: SimGroup,
    /// Member states before each membership change, oldest first.
    history: Vec<MemberState>,
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
        Self { now: group, history: Vec::new() }
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
                if groups.insert(chat_id.clone(), Group::new(group, &mut versions)).is_some() {
                    return Err(SimError::Invalid(format!("corp {} has chat {chat_id} twice", corp.corp_id)));
                }
            }
            let entry = Corp {
                secret: corp.secret,
                large_visible_range: corp.large_visible_range,
                current_token: None,
                groups,
            };
            if corps.insert(corp.corp_id.clone(), entry).is_some() {
                return Err(SimError::Invalid(format!("corp {} appears twice", corp.corp_id)));
            }
        }
        let sim =
            Sim { corps, tokens: HashMap::new(), faults: Faults::default(), stats: SimStats::default(), versions };
        Ok(Self(Arc::new(Mutex::new(sim))))
    }

    /// The current state, in the state-file format (dismissed groups included, flagged).
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
            })
            .collect();
        SimState { corps }
    }

    pub fn stats(&self) -> SimStats {
        self.lock().stats
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
}

// ---------------------------------------------------------------------------------------------
// Router
// ---------------------------------------------------------------------------------------------

pub fn router(state: SharedSim) -> Router {
    let wecom = Router::new()
        .route("/cgi-bin/gettoken", get(gettoken))
        .route("/cgi-bin/externalcontact/groupchat/get", post(groupchat_get))
        .route("/cgi-bin/externalcontact/groupchat/list", post(groupchat_list));
    let admin = Router::new()
        .route("/sim/state", get(admin_state))
        .route(
            "/sim/corps/{corp}/groups/{chat_id}",
            put(admin_put_group).patch(admin_patch_group).delete(admin_dismiss),
        )
        .route("/sim/corps/{corp}/groups/{chat_id}/members", post(admin_add_member))
        .route("/sim/corps/{corp}/groups/{chat_id}/members/{userid}", delete(admin_remove_member))
        .route("/sim/faults", get(admin_faults).post(admin_set_faults).delete(admin_clear_faults))
        .route("/sim/stats", get(admin_stats).delete(admin_reset_stats));
    wecom.merge(admin).layer(middleware::from_fn(log_request)).with_state(state)
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
// WeCom API
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Api {
    GetToken,
    GroupchatGet,
    GroupchatList,
}

/// Why a WeCom API call did not succeed.
#[derive(Debug)]
enum ApiError {
    Wecom {
        errcode: i64,
        errmsg: Cow<'static, str>,
    },
    /// An injected transport-level failure.
    Http(StatusCode),
}

impl ApiError {
    fn code(errcode: i64) -> Self {
        Self::Wecom { errcode, errmsg: Cow::Borrowed(errmsg_for(errcode)) }
    }
}

/// Short texts in the spirit of WeCom's; clients must key on `errcode`, never on these.
fn errmsg_for(errcode: i64) -> &'static str {
    match errcode {
        -1 => "system busy",
        40001 => "invalid credential",
        40013 => "invalid corpid",
        40014 => "invalid access_token",
        40058 => "invalid Request Parameter",
        41001 => "access_token missing",
        41002 => "corpid missing",
        41004 => "corpsecret missing",
        42001 => "access_token expired",
        45009 => "api freq out of limit",
        45033 => "api concurrent out of limit",
        47001 => "data format error",
        81017 => "too many visible users, owner_filter required",
        _ => "simulated error",
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Wecom { errcode, errmsg } => {
                let mut response = Json(ErrorAnswer { errcode, errmsg: &errmsg }).into_response();
                response.extensions_mut().insert(Errcode(errcode));
                response
            }
            ApiError::Http(status) => (status, format!("{status} (injected by the WeCom simulator)\n")).into_response(),
        }
    }
}

#[derive(Serialize)]
struct ErrorAnswer<'a> {
    errcode: i64,
    errmsg: &'a str,
}

/// A successful WeCom answer: `errcode` and `errmsg` first, then the payload's fields. Answers
/// are typed structs rather than `json!` values because `serde_json::Value` sorts its keys, and
/// the field order should match WeCom's.
fn wecom_ok(payload: impl Serialize) -> Response {
    #[derive(Serialize)]
    struct Success<T> {
        errcode: i64,
        errmsg: &'static str,
        #[serde(flatten)]
        payload: T,
    }
    let mut response = Json(Success { errcode: 0, errmsg: "ok", payload }).into_response();
    response.extensions_mut().insert(Errcode(0));
    response
}

/// A query parameter; WeCom treats an empty value as a missing one.
fn query_param(query: &Option<String>, key: &str) -> Option<String> {
    let query = query.as_deref()?;
    url::form_urlencoded::parse(query.as_bytes()).find(|(k, v)| k == key && !v.is_empty()).map(|(_, v)| v.into_owned())
}

impl SharedSim {
    /// What every API call goes through first: counting, latency, then injected failures.
    /// Injected errcodes and HTTP statuses hit groupchat/get and groupchat/list only, so that a
    /// test's "next N calls fail" means the calls it is watching, not an interleaved gettoken.
    async fn begin_call(&self, api: Api) -> Result<(), ApiError> {
        let latency_ms = {
            let mut sim = self.lock();
            match api {
                Api::GetToken => sim.stats.gettoken += 1,
                Api::GroupchatGet => sim.stats.groupchat_get += 1,
                Api::GroupchatList => sim.stats.groupchat_list += 1,
            }
            sim.faults.latency_ms
        };
        if latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(latency_ms)).await;
        }
        if matches!(api, Api::GetToken) {
            return Ok(());
        }
        let mut sim = self.lock();
        if let Some(status) = take_one(&mut sim.faults.http_status) {
            return Err(ApiError::Http(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY)));
        }
        if let Some(errcode) = take_one(&mut sim.faults.errcode) {
            return Err(ApiError::code(errcode));
        }
        Ok(())
    }
}

impl Sim {
    /// The corp the token was issued to.
    fn authorize(&self, query: &Option<String>) -> Result<String, ApiError> {
        let token = query_param(query, "access_token").ok_or(ApiError::code(41001))?;
        let token = self.tokens.get(&token).ok_or(ApiError::code(40014))?;
        if !token.is_valid(Instant::now()) {
            return Err(ApiError::code(42001));
        }
        Ok(token.corp_id.clone())
    }
}

/// WeCom answers malformed bodies with 47001 rather than an HTTP error.
fn parse_api_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|_| ApiError::code(47001))
}

async fn gettoken(State(sim): State<SharedSim>, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    sim.begin_call(Api::GetToken).await?;
    let corp_id = query_param(&query, "corpid").ok_or(ApiError::code(41002))?;
    let secret = query_param(&query, "corpsecret").ok_or(ApiError::code(41004))?;
    let mut guard = sim.lock();
    let Sim { corps, tokens, .. } = &mut *guard;
    let corp = corps.get_mut(&corp_id).ok_or(ApiError::code(40013))?;
    if corp.secret != secret {
        return Err(ApiError::code(40001));
    }
    let now = Instant::now();
    let reusable = corp.current_token.as_ref().filter(|t| tokens.get(*t).is_some_and(|t| t.is_valid(now)));
    let token = match reusable {
        Some(token) => token.clone(),
        None => {
            let token = Alphanumeric.sample_string(&mut rand::thread_rng(), 96);
            tokens.insert(token.clone(), Token { corp_id, expires_at: now + TOKEN_TTL, revoked: false });
            corp.current_token = Some(token.clone());
            token
        }
    };
    let remaining = tokens.get(&token).map_or(TOKEN_TTL, |t| t.expires_at.saturating_duration_since(now));
    // Rounded up, so that a fresh token says 7200 like WeCom's.
    let expires_in = remaining.as_secs() + u64::from(remaining.subsec_nanos() > 0);
    Ok(wecom_ok(TokenAnswer { access_token: token, expires_in }))
}

#[derive(Serialize)]
struct TokenAnswer {
    access_token: String,
    expires_in: u64,
}

#[derive(Deserialize)]
struct GetRequest {
    chat_id: String,
    #[serde(default)]
    need_name: i64,
}

async fn groupchat_get(
    State(sim): State<SharedSim>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    sim.begin_call(Api::GroupchatGet).await?;
    let mut sim = sim.lock();
    let corp_id = sim.authorize(&query)?;
    let request: GetRequest = parse_api_body(&body)?;
    // WeCom's code for an unknown or dismissed chat is undocumented (see protocols.md §3.4 and
    // §6.2); 40050 ("chatid不存在", the appchat meaning) is the closest documented one.
    let unknown_chat = || ApiError::Wecom { errcode: 40050, errmsg: Cow::Borrowed("chat_id not found") };
    let group = sim
        .corps
        .get(&corp_id)
        .and_then(|corp| corp.groups.get(&request.chat_id))
        .filter(|g| !g.now.dismissed)
        .ok_or_else(unknown_chat)?;
    let mut answer = if sim.faults.stale_fetches > 0 { group.stale_view() } else { group.now.clone() };
    // Only answered groups use up a stale fetch: an error is not a stale answer.
    sim.faults.stale_fetches = sim.faults.stale_fetches.saturating_sub(1);
    if request.need_name != 1 {
        answer.member_list.iter_mut().for_each(|m| m.name = None);
    }
    Ok(wecom_ok(GetAnswer { group_chat: answer }))
}

#[derive(Serialize)]
struct GetAnswer {
    group_chat: SimGroup,
}

#[derive(Deserialize)]
struct ListRequest {
    /// 0 all; 1–3 are the owner-resignation states, which simulated groups never are in.
    #[serde(default)]
    status_filter: i64,
    #[serde(default)]
    owner_filter: Option<OwnerFilter>,
    #[serde(default)]
    cursor: String,
    limit: Option<i64>,
}

#[derive(Deserialize)]
struct OwnerFilter {
    #[serde(default)]
    userid_list: Vec<String>,
}

#[derive(Serialize)]
struct ListAnswer {
    group_chat_list: Vec<ListedChat>,
    next_cursor: String,
}

#[derive(Serialize)]
struct ListedChat {
    chat_id: String,
    status: i64,
}

async fn groupchat_list(
    State(sim): State<SharedSim>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    sim.begin_call(Api::GroupchatList).await?;
    let sim = sim.lock();
    let corp_id = sim.authorize(&query)?;
    let request: ListRequest = parse_api_body(&body)?;
    let limit = request.limit.filter(|l| (1..=LIST_LIMIT_MAX).contains(l)).ok_or(ApiError::code(40058))?;
    if !(0..=3).contains(&request.status_filter) {
        return Err(ApiError::code(40058));
    }
    let owners = request.owner_filter.map(|f| f.userid_list).unwrap_or_default();
    if owners.len() > OWNER_FILTER_MAX {
        return Err(ApiError::code(40058));
    }
    let corp = sim.corps.get(&corp_id).ok_or(ApiError::code(40014))?;
    // An empty userid_list filters nothing, so it counts as no filter.
    if owners.is_empty() && corp.large_visible_range {
        return Err(ApiError::code(81017));
    }
    let after = decode_cursor(&request.cursor).ok_or(ApiError::code(40058))?;
    let owners: HashSet<String> = owners.into_iter().collect();
    let mut page: Vec<&str> = corp
        .groups
        .values()
        .map(|g| &g.now)
        .filter(|g| !g.dismissed && request.status_filter == 0)
        .filter(|g| owners.is_empty() || owners.contains(&g.owner))
        .filter(|g| after.as_deref().is_none_or(|after| g.chat_id.as_str() > after))
        .map(|g| g.chat_id.as_str())
        .take(limit as usize + 1)
        .collect();
    let next_cursor = if page.len() > limit as usize {
        page.truncate(limit as usize);
        page.last().map(|last| encode_cursor(last)).unwrap_or_default()
    } else {
        String::new()
    };
    let group_chat_list =
        page.into_iter().map(|chat_id| ListedChat { chat_id: chat_id.to_owned(), status: 0 }).collect();
    Ok(wecom_ok(ListAnswer { group_chat_list, next_cursor }))
}

/// Cursors name the last chat_id of the previous page, so paging stays correct while groups are
/// added or dismissed between pages. Encoded only to keep clients from relying on the content.
fn encode_cursor(last_chat_id: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(last_chat_id)
}

/// `Some(None)` for the first page, `None` for a cursor this simulator never issued.
fn decode_cursor(cursor: &str) -> Option<Option<String>> {
    if cursor.is_empty() {
        return Some(None);
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor).ok()?;
    String::from_utf8(bytes).ok().map(Some)
}

// ---------------------------------------------------------------------------------------------
// Admin API
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct AdminError {
    status: StatusCode,
    message: String,
}

impl AdminError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        (self.status, Json(serde_json::json!({ "error": self.message }))).into_response()
    }
}

/// Parses admin bodies without insisting on a content type, so plain `curl -d` works.
fn parse_admin_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, AdminError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| AdminError::new(StatusCode::BAD_REQUEST, e.to_string()))
}

#[derive(Serialize)]
struct VersionAnswer {
    member_version: String,
}

// Free functions over `corps` rather than `Sim` methods, so that callers can borrow
// `Sim::versions` alongside the group.
fn corp_mut<'a>(corps: &'a mut BTreeMap<String, Corp>, corp_id: &str) -> Result<&'a mut Corp, AdminError> {
    corps.get_mut(corp_id).ok_or_else(|| AdminError::new(StatusCode::NOT_FOUND, format!("no corp {corp_id}")))
}

/// A group that still exists: dismissed groups cannot be changed, only re-created by PUT.
fn live_group_mut<'a>(
    corps: &'a mut BTreeMap<String, Corp>,
    corp_id: &str,
    chat_id: &str,
) -> Result<&'a mut Group, AdminError> {
    corp_mut(corps, corp_id)?
        .groups
        .get_mut(chat_id)
        .filter(|g| !g.now.dismissed)
        .ok_or_else(|| AdminError::new(StatusCode::NOT_FOUND, format!("no live group {chat_id} in corp {corp_id}")))
}

async fn admin_state(State(sim): State<SharedSim>) -> Json<SimState> {
    Json(sim.snapshot())
}

/// Creates, replaces or re-creates (if dismissed) a group. The body is WeCom's `group_chat`
/// object; `chat_id` may be left out, and any `member_version` in it is replaced by a fresh one.
async fn admin_put_group(
    State(sim): State<SharedSim>,
    Path((corp_id, chat_id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<VersionAnswer>, AdminError> {
    let mut value: serde_json::Value = parse_admin_body(&body)?;
    if let Some(object) = value.as_object_mut() {
        object.entry("chat_id").or_insert_with(|| chat_id.clone().into());
    }
    let mut group: SimGroup = parse_admin_body(value.to_string().as_bytes())?;
    if group.chat_id != chat_id {
        return Err(AdminError::new(StatusCode::BAD_REQUEST, "chat_id in the body differs from the path"));
    }
    let mut guard = sim.lock();
    let Sim { corps, versions, .. } = &mut *guard;
    let corp = corp_mut(corps, &corp_id)?;
    let member_version = match corp.groups.get_mut(&chat_id) {
        // Replacing is a membership change on the existing group, so that the old members enter
        // the history and a stale fetch can still serve them.
        Some(existing) => {
            let new_members = std::mem::take(&mut group.member_list);
            let old = std::mem::replace(&mut existing.now, group);
            existing.now.member_list = old.member_list;
            existing.now.member_version = old.member_version;
            existing.change_members(versions, |list| *list = new_members)
        }
        None => {
            group.member_version = None;
            let created = Group::new(group, versions);
            let version = created.member_version().to_owned();
            corp.groups.insert(chat_id, created);
            version
        }
    };
    Ok(Json(VersionAnswer { member_version }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupPatch {
    name: Option<String>,
    owner: Option<String>,
    notice: Option<String>,
}

/// Changes group attributes; like on WeCom, that leaves `member_version` alone.
async fn admin_patch_group(
    State(sim): State<SharedSim>,
    Path((corp_id, chat_id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<SimGroup>, AdminError> {
    let patch: GroupPatch = parse_admin_body(&body)?;
    let mut sim = sim.lock();
    let group = &mut live_group_mut(&mut sim.corps, &corp_id, &chat_id)?.now;
    if let Some(name) = patch.name {
        group.name = name;
    }
    if let Some(owner) = patch.owner {
        group.owner = owner;
    }
    if let Some(notice) = patch.notice {
        group.notice = notice;
    }
    Ok(Json(group.clone()))
}

/// Dismisses the group. Dismissing a dismissed group is not an error, so retries are safe.
async fn admin_dismiss(
    State(sim): State<SharedSim>,
    Path((corp_id, chat_id)): Path<(String, String)>,
) -> Result<StatusCode, AdminError> {
    let mut sim = sim.lock();
    let group = corp_mut(&mut sim.corps, &corp_id)?
        .groups
        .get_mut(&chat_id)
        .ok_or_else(|| AdminError::new(StatusCode::NOT_FOUND, format!("no group {chat_id} in corp {corp_id}")))?;
    group.now.dismissed = true;
    Ok(StatusCode::NO_CONTENT)
}

async fn admin_add_member(
    State(sim): State<SharedSim>,
    Path((corp_id, chat_id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<VersionAnswer>, AdminError> {
    let member: WecomMember = parse_admin_body(&body)?;
    let mut guard = sim.lock();
    let Sim { corps, versions, .. } = &mut *guard;
    let group = live_group_mut(corps, &corp_id, &chat_id)?;
    if group.now.member_list.iter().any(|m| m.userid == member.userid) {
        return Err(AdminError::new(StatusCode::CONFLICT, format!("{} is already a member", member.userid)));
    }
    let member_version = group.change_members(versions, |list| list.push(member));
    Ok(Json(VersionAnswer { member_version }))
}

async fn admin_remove_member(
    State(sim): State<SharedSim>,
    Path((corp_id, chat_id, userid)): Path<(String, String, String)>,
) -> Result<Json<VersionAnswer>, AdminError> {
    let mut guard = sim.lock();
    let Sim { corps, versions, .. } = &mut *guard;
    let group = live_group_mut(corps, &corp_id, &chat_id)?;
    if !group.now.member_list.iter().any(|m| m.userid == userid) {
        return Err(AdminError::new(StatusCode::NOT_FOUND, format!("{userid} is not a member")));
    }
    let member_version = group.change_members(versions, |list| list.retain(|m| m.userid != userid));
    Ok(Json(VersionAnswer { member_version }))
}

async fn admin_faults(State(sim): State<SharedSim>) -> Json<Faults> {
    Json(sim.lock().faults.clone())
}

/// Sets the faults named in the body, leaving the others as they are; answers all pending faults.
async fn admin_set_faults(State(sim): State<SharedSim>, body: Bytes) -> Result<Json<Faults>, AdminError> {
    let request: FaultRequest = parse_admin_body(&body)?;
    let count = request.count.unwrap_or(1);
    if request.errcode == Some(0) {
        return Err(AdminError::new(StatusCode::BAD_REQUEST, "errcode 0 is success, not a fault"));
    }
    if request.http_status.is_some_and(|s| !(400..=599).contains(&s)) {
        return Err(AdminError::new(StatusCode::BAD_REQUEST, "http_status must be within 400..=599"));
    }
    let mut sim = sim.lock();
    let sim = &mut *sim;
    if let Some(n) = request.stale_fetches {
        sim.faults.stale_fetches = n;
    }
    if let Some(errcode) = request.errcode {
        sim.faults.errcode = (count > 0).then_some(Pending { value: errcode, count });
    }
    if let Some(status) = request.http_status {
        sim.faults.http_status = (count > 0).then_some(Pending { value: status, count });
    }
    if let Some(ms) = request.latency_ms {
        sim.faults.latency_ms = ms;
    }
    // A one-off action rather than a standing fault: tokens issued afterwards work.
    if request.expire_tokens == Some(true) {
        sim.tokens.values_mut().for_each(|t| t.revoked = true);
    }
    Ok(Json(sim.faults.clone()))
}

async fn admin_clear_faults(State(sim): State<SharedSim>) -> StatusCode {
    sim.lock().faults = Faults::default();
    StatusCode::NO_CONTENT
}

async fn admin_stats(State(sim): State<SharedSim>) -> Json<SimStats> {
    Json(sim.stats())
}

async fn admin_reset_stats(State(sim): State<SharedSim>) -> StatusCode {
    sim.lock().stats = SimStats::default();
    StatusCode::NO_CONTENT
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
        match self.task.take() {
            Some(task) => task.await.map_err(std::io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        self.stop.cancel();
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
    tracing::info!(addr = %listener.local_addr()?, state = %source, "WeCom simulator listening");
    axum::serve(listener, router(sim)).with_graceful_shutdown(shutdown).await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Admin client
// ---------------------------------------------------------------------------------------------

#[derive(Debug, thiserror::Error)]
pub enum SimClientError {
    #[error("request to the simulator failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("the simulator refused {what}: HTTP {status}: {body}")]
    Refused { what: String, status: u16, body: String },
}

/// The admin API over HTTP, for tests and demos that run the simulator in another process.
#[derive(Debug, Clone)]
pub struct SimClient {
    base_url: String,
    http: reqwest::Client,
}

impl SimClient {
    /// `base_url` as `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn new(base_url: impl Into<String>) -> Self {
        let http = reqwest::Client::builder().no_proxy().build().unwrap_or_default();
        Self { base_url: base_url.into().trim_end_matches('/').to_owned(), http }
    }

    fn group_url(&self, corp: &str, chat_id: &str) -> String {
        format!("{}/sim/corps/{}/groups/{}", self.base_url, segment(corp), segment(chat_id))
    }

    async fn send(&self, request: reqwest::RequestBuilder, what: &str) -> Result<reqwest::Response, SimClientError> {
        let response = request.send().await?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        Err(SimClientError::Refused { what: what.to_owned(), status, body })
    }

    async fn version(&self, request: reqwest::RequestBuilder, what: &str) -> Result<String, SimClientError> {
        #[derive(Deserialize)]
        struct Answer {
            member_version: String,
        }
        let answer: Answer = self.send(request, what).await?.json().await?;
        Ok(answer.member_version)
    }

    /// Adds a member (WeCom `member_list` entry JSON); returns the new member_version.
    pub async fn add_member(
        &self,
        corp: &str,
        chat_id: &str,
        member: serde_json::Value,
    ) -> Result<String, SimClientError> {
        let url = format!("{}/members", self.group_url(corp, chat_id));
        self.version(self.http.post(url).json(&member), "add_member").await
    }

    /// Removes a member; returns the new member_version.
    pub async fn remove_member(&self, corp: &str, chat_id: &str, userid: &str) -> Result<String, SimClientError> {
        let url = format!("{}/members/{}", self.group_url(corp, chat_id), segment(userid));
        self.version(self.http.delete(url), "remove_member").await
    }

    /// Creates or replaces a group (WeCom `group_chat` JSON); returns the new member_version.
    pub async fn put_group(
        &self,
        corp: &str,
        chat_id: &str,
        group: serde_json::Value,
    ) -> Result<String, SimClientError> {
        self.version(self.http.put(self.group_url(corp, chat_id)).json(&group), "put_group").await
    }

    /// Changes any of `name`, `owner`, `notice`.
    pub async fn patch_group(&self, corp: &str, chat_id: &str, patch: serde_json::Value) -> Result<(), SimClientError> {
        self.send(self.http.patch(self.group_url(corp, chat_id)).json(&patch), "patch_group").await?;
        Ok(())
    }

    pub async fn dismiss_group(&self, corp: &str, chat_id: &str) -> Result<(), SimClientError> {
        self.send(self.http.delete(self.group_url(corp, chat_id)), "dismiss_group").await?;
        Ok(())
    }

    /// Injects faults, e.g. `json!({"errcode": 45009, "count": 2})`; see `POST /sim/faults`.
    pub async fn fault(&self, fault: serde_json::Value) -> Result<(), SimClientError> {
        self.send(self.http.post(format!("{}/sim/faults", self.base_url)).json(&fault), "fault").await?;
        Ok(())
    }

    pub async fn clear_faults(&self) -> Result<(), SimClientError> {
        self.send(self.http.delete(format!("{}/sim/faults", self.base_url)), "clear_faults").await?;
        Ok(())
    }

    pub async fn stats(&self) -> Result<SimStats, SimClientError> {
        Ok(self.send(self.http.get(format!("{}/sim/stats", self.base_url)), "stats").await?.json().await?)
    }

    pub async fn reset_stats(&self) -> Result<(), SimClientError> {
        self.send(self.http.delete(format!("{}/sim/stats", self.base_url)), "reset_stats").await?;
        Ok(())
    }

    pub async fn state(&self) -> Result<SimState, SimClientError> {
        Ok(self.send(self.http.get(format!("{}/sim/state", self.base_url)), "state").await?.json().await?)
    }
}

fn segment(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
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
