//! Tencent Cloud IM as the simulator plays it: the REST API under `/v4/group_open_http_svc/`
//! (get_group_info, get_group_member_info, get_appid_group_list), UserSig checked on every call,
//! the group after-callbacks sent to an app's callback URL when the admin API changes a group, and
//! the admin API under `/sim/tim/`.
//!
//! Like the rest of `sim/`, it imports nothing from the crate: UserSigs are verified with the code
//! in [`sig`], never with the service's generator, so that one bug cannot hide in both. Its DTOs
//! are strict on purpose (unknown keys, bad roles and unknown filter names are refused); the
//! service's client is meant to be lenient.
//!
//! Groups and members use Tencent's own field names (`GroupId`, `Owner_Account`, `MemberList`,
//! `Member_Account`, ...), so that a `GroupInfo` entry of a real get_group_info answer can be
//! pasted into a state file.

mod admin;
mod api;
mod callback;
mod client;
mod sig;

pub use client::{TimCallbackReport, TimChange, TimEventTime, TimExitType, TimJoinType, TimNotify};

use super::*;
use api::{TimApi, TimFaults, TimPending};

/// What `GET /sim/state` shows instead of `secret_key` and `callback_token`.
pub const MASKED: &str = "***";

/// Tencent's group types: the classic names and the newer Work/Meeting/Community.
const GROUP_TYPES: &[&str] =
    &["Private", "Public", "ChatRoom", "AVChatRoom", "BChatRoom", "Work", "Meeting", "Community"];
const ROLES: &[&str] = &["Owner", "Admin", "Member"];

/// `stats.get_group_info_batches` keeps the group ids of this many calls, then stops recording
/// (the call counters go on), so a long demo cannot grow it without bound.
const BATCHES_KEPT: usize = 10_000;

// ---------------------------------------------------------------------------------------------
// State file
// ---------------------------------------------------------------------------------------------

/// One Tencent Cloud IM app (SDKAppID) in the state file.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimTimApp {
    pub sdk_app_id: u64,
    /// The App admin account REST calls must be made as.
    pub identifier: String,
    /// The key UserSigs are signed with. `GET /sim/state` shows it as `"***"`.
    pub secret_key: String,
    /// Callback auth token (`Sign` = hex(sha256(token + RequestTime))); empty sends no `Sign` and
    /// `RequestTime`, as Tencent does when callback auth is off. Masked in `GET /sim/state`.
    pub callback_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    #[serde(default)]
    pub groups: Vec<TimGroup>,
}

impl std::fmt::Debug for SimTimApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimTimApp")
            .field("sdk_app_id", &self.sdk_app_id)
            .field("identifier", &self.identifier)
            .field("secret_key", &"<redacted>")
            .field("callback_token", &"<redacted>")
            .field("callback_url", &self.callback_url)
            .field("groups", &self.groups)
            .finish()
    }
}

/// A group, with get_group_info's `GroupInfo` field names and order.
///
/// Loading fills in what a pasted answer may lack: `LastInfoTime` and members' `JoinTime` default
/// to `CreateTime`, roles are trimmed (Tencent's own sample has `"Member "`). `MemberNum`, if
/// given, must equal the length of `MemberList`, and is kept up to date afterwards. `ErrorCode`
/// (must be 0), `ErrorInfo` and `Appid` (must be the app's) are accepted and dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimGroup {
    #[serde(rename = "GroupId")]
    pub group_id: String,
    #[serde(rename = "ErrorCode", default, skip_serializing)]
    pub error_code: Option<i64>,
    #[serde(rename = "ErrorInfo", default, skip_serializing)]
    pub error_info: Option<String>,
    #[serde(rename = "Type")]
    pub group_type: String,
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Appid", default, skip_serializing)]
    pub appid: Option<u64>,
    #[serde(rename = "Introduction", default)]
    pub introduction: String,
    #[serde(rename = "Notification", default)]
    pub notification: String,
    #[serde(rename = "FaceUrl", default)]
    pub face_url: String,
    /// Empty for an ownerless group (then no member has Role `Owner`).
    #[serde(rename = "Owner_Account", default)]
    pub owner_account: String,
    #[serde(rename = "CreateTime")]
    pub create_time: i64,
    /// Bumped by every change of the group's own data (name, notification, owner, ...).
    #[serde(rename = "InfoSeq", default)]
    pub info_seq: u64,
    #[serde(rename = "LastInfoTime", default)]
    pub last_info_time: i64,
    #[serde(rename = "LastMsgTime", default)]
    pub last_msg_time: i64,
    /// Bumped by every join and exit too: they are system messages (protocols-2 B3.2).
    #[serde(rename = "NextMsgSeq", default)]
    pub next_msg_seq: u64,
    #[serde(rename = "MemberNum", default, skip_serializing_if = "Option::is_none")]
    pub member_num: Option<u64>,
    #[serde(rename = "MaxMemberNum", default = "default_max_member_num")]
    pub max_member_num: u64,
    #[serde(rename = "ApplyJoinOption", default = "default_apply_join_option")]
    pub apply_join_option: String,
    #[serde(rename = "ShutUpAllMember", default = "default_shut_up_all_member")]
    pub shut_up_all_member: String,
    #[serde(rename = "AppDefinedData", default, skip_serializing_if = "Vec::is_empty")]
    pub app_defined_data: Vec<TimKeyValue>,
    /// In join order, which is the order get_group_member_info pages over.
    #[serde(rename = "MemberList", default)]
    pub member_list: Vec<TimMember>,
    /// Simulator-only (not a Tencent field): a destroyed group answers 10010 and is not listed.
    #[serde(rename = "SimDestroyed", default, skip_serializing_if = "is_false")]
    pub destroyed: bool,
}

fn default_max_member_num() -> u64 {
    2000
}

fn default_apply_join_option() -> String {
    "NeedPermission".into()
}

fn default_shut_up_all_member() -> String {
    "Off".into()
}

/// A `MemberList` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimMember {
    #[serde(rename = "Member_Account")]
    pub member_account: String,
    /// `Owner`, `Admin` or `Member`.
    #[serde(rename = "Role", default = "default_role")]
    pub role: String,
    /// Seconds. 0 (or absent) means: `CreateTime` in a state file, now in the admin API.
    #[serde(rename = "JoinTime", default)]
    pub join_time: i64,
    #[serde(rename = "MsgSeq", default)]
    pub msg_seq: u64,
    #[serde(rename = "MsgFlag", default = "default_msg_flag")]
    pub msg_flag: String,
    #[serde(rename = "LastSendMsgTime", default)]
    pub last_send_msg_time: i64,
    /// Answered when not empty, or when a MemberInfoFilter asks for it.
    #[serde(rename = "NameCard", default, skip_serializing_if = "String::is_empty")]
    pub name_card: String,
    #[serde(rename = "ShutUpUntil", default)]
    pub shut_up_until: i64,
    #[serde(rename = "AppMemberDefinedData", default, skip_serializing_if = "Vec::is_empty")]
    pub app_member_defined_data: Vec<TimKeyValue>,
}

fn default_role() -> String {
    "Member".into()
}

fn default_msg_flag() -> String {
    "AcceptAndNotify".into()
}

/// Tencent's `{"Key": …, "Value": …}` of app-defined data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimKeyValue {
    #[serde(rename = "Key")]
    pub key: String,
    #[serde(rename = "Value")]
    pub value: String,
}

impl TimGroup {
    /// Checks a group from a state file or the admin API and fills in what may be left out.
    fn normalise(&mut self, sdk_app_id: u64) -> Result<(), String> {
        let id = self.group_id.clone();
        if id.is_empty() {
            return Err("a group has an empty GroupId".into());
        }
        if !GROUP_TYPES.contains(&self.group_type.as_str()) {
            return Err(format!("group {id}: Type {:?} is none of {GROUP_TYPES:?}", self.group_type));
        }
        if self.error_code.is_some_and(|c| c != 0) {
            return Err(format!("group {id}: an entry with ErrorCode {} is not a group", self.error_code.unwrap_or(0)));
        }
        if self.appid.is_some_and(|a| a != sdk_app_id) {
            return Err(format!("group {id}: Appid {} is not this app's {sdk_app_id}", self.appid.unwrap_or(0)));
        }
        if self.member_num.is_some_and(|n| n != self.member_list.len() as u64) {
            return Err(format!(
                "group {id}: MemberNum {} but {} members in MemberList (paste the whole list)",
                self.member_num.unwrap_or(0),
                self.member_list.len()
            ));
        }
        let mut seen = HashSet::new();
        let mut owners = Vec::new();
        for member in &mut self.member_list {
            let account = member.member_account.clone();
            if account.is_empty() {
                return Err(format!("group {id}: a member has an empty Member_Account"));
            }
            if !seen.insert(account.clone()) {
                return Err(format!("group {id}: member {account} appears twice"));
            }
            member.role = member.role.trim().to_owned();
            if !ROLES.contains(&member.role.as_str()) {
                return Err(format!("group {id}: member {account} has Role {:?}, none of {ROLES:?}", member.role));
            }
            if member.role == "Owner" {
                owners.push(account);
            }
            if member.join_time == 0 {
                member.join_time = self.create_time;
            }
        }
        let owner_ok =
            if self.owner_account.is_empty() { owners.is_empty() } else { owners == [self.owner_account.clone()] };
        if !owner_ok {
            return Err(format!(
                "group {id}: Owner_Account {:?} must be the one member with Role Owner (owners: {owners:?})",
                self.owner_account
            ));
        }
        if self.last_info_time == 0 {
            self.last_info_time = self.create_time;
        }
        self.error_code = None;
        self.error_info = None;
        self.appid = None;
        self.sync();
        Ok(())
    }

    /// Keeps the derived fields in step with the member list.
    fn sync(&mut self) {
        self.member_num = Some(self.member_list.len() as u64);
    }

    fn has_member_list(&self) -> bool {
        !matches!(self.group_type.as_str(), "AVChatRoom" | "BChatRoom")
    }

    fn is_community(&self) -> bool {
        self.group_type == "Community"
    }
}

// ---------------------------------------------------------------------------------------------
// Runtime state
// ---------------------------------------------------------------------------------------------

/// The TIM part of the simulator's live state (a field of `Sim`, under the same lock).
pub(super) struct TimSim {
    apps: BTreeMap<u64, App>,
    faults: TimFaults,
    stats: TimStats,
    /// Creation order of groups, across apps; get_appid_group_list's `Next` pages over it.
    next_seq: u64,
    /// For callbacks; cloned out of the lock before sending.
    http: reqwest::Client,
}

struct App {
    identifier: String,
    secret_key: String,
    callback_token: String,
    callback_url: Option<String>,
    groups: BTreeMap<String, Group>,
}

struct Group {
    seq: u64,
    now: TimGroup,
    /// The group before each change, oldest first (`stale_fetches` serves the last one).
    history: Vec<TimGroup>,
}

impl Group {
    /// Applies a change, remembering the group as it was.
    fn change<T>(&mut self, change: impl FnOnce(&mut TimGroup) -> T) -> T {
        if self.history.len() == HISTORY_MAX {
            self.history.remove(0);
        }
        self.history.push(self.now.clone());
        let result = change(&mut self.now);
        self.now.sync();
        result
    }

    /// The group as a lagging replica would answer it: as it was before the latest change.
    fn stale(&self) -> &TimGroup {
        self.history.last().unwrap_or(&self.now)
    }
}

/// What `/sim/tim/stats` reports. Every call is counted, refused ones included.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimStats {
    pub get_group_info: u64,
    pub get_group_member_info: u64,
    pub get_appid_group_list: u64,
    /// Calls of other group_open_http_svc commands (answered 10003).
    pub other: u64,
    /// Calls refused for their query, UserSig or identifier (also counted above).
    pub auth_refused: u64,
    /// The `GroupIdList` of each get_group_info call that passed authentication and parsed, in
    /// call order (the first 10 000 calls).
    pub get_group_info_batches: Vec<Vec<String>>,
    /// Callbacks the admin API sent (whatever their answer).
    pub callbacks_sent: u64,
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

fn unix_now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl TimSim {
    pub(super) fn new(apps: Vec<SimTimApp>) -> Result<Self, SimError> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(callback::CALLBACK_TIMEOUT)
            .build()
            .map_err(|e| SimError::Invalid(format!("cannot build the TIM callback client: {e}")))?;
        let mut sim =
            Self { apps: BTreeMap::new(), faults: TimFaults::default(), stats: TimStats::default(), next_seq: 0, http };
        for app in apps {
            let id = app.sdk_app_id;
            if app.identifier.is_empty() {
                return Err(SimError::Invalid(format!("tim app {id} has an empty identifier")));
            }
            if app.secret_key.is_empty() || app.secret_key == MASKED || app.callback_token == MASKED {
                return Err(SimError::Invalid(format!(
                    "tim app {id}: secret_key must be set and neither it nor callback_token may be {MASKED:?} \
                     (GET /sim/state masks them; put the real values back)"
                )));
            }
            if app.callback_token.len() > 128 {
                return Err(SimError::Invalid(format!("tim app {id}: callback_token is longer than 128 characters")));
            }
            if let Some(url) = &app.callback_url {
                callback::check_url(url).map_err(|e| SimError::Invalid(format!("tim app {id}: {e}")))?;
            }
            let mut groups = BTreeMap::new();
            for mut group in app.groups {
                group.normalise(id).map_err(|e| SimError::Invalid(format!("tim app {id}: {e}")))?;
                let group_id = group.group_id.clone();
                sim.next_seq += 1;
                if groups
                    .insert(group_id.clone(), Group { seq: sim.next_seq, now: group, history: Vec::new() })
                    .is_some()
                {
                    return Err(SimError::Invalid(format!("tim app {id} has group {group_id} twice")));
                }
            }
            let entry = App {
                identifier: app.identifier,
                secret_key: app.secret_key,
                callback_token: app.callback_token,
                callback_url: app.callback_url,
                groups,
            };
            if sim.apps.insert(id, entry).is_some() {
                return Err(SimError::Invalid(format!("tim app {id} appears twice")));
            }
        }
        Ok(sim)
    }

    /// The apps in the state-file format, secrets masked, groups in creation order.
    pub(super) fn snapshot(&self) -> Vec<SimTimApp> {
        self.apps
            .iter()
            .map(|(&sdk_app_id, app)| {
                let mut groups: Vec<&Group> = app.groups.values().collect();
                groups.sort_by_key(|g| g.seq);
                SimTimApp {
                    sdk_app_id,
                    identifier: app.identifier.clone(),
                    secret_key: MASKED.into(),
                    callback_token: MASKED.into(),
                    callback_url: app.callback_url.clone(),
                    groups: groups.into_iter().map(|g| g.now.clone()).collect(),
                }
            })
            .collect()
    }
}

impl SharedSim {
    /// The TIM call counts and get_group_info batches, as `GET /sim/tim/stats` answers them.
    pub fn tim_stats(&self) -> TimStats {
        self.lock().tim.stats.clone()
    }
}

// ---------------------------------------------------------------------------------------------
// Router
// ---------------------------------------------------------------------------------------------

/// The TIM REST API and its admin API, merged into the simulator's router.
pub(super) fn routes() -> Router<SharedSim> {
    Router::new()
        .route("/v4/group_open_http_svc/{command}", post(api::rest))
        .route("/sim/tim/apps/{app}/callback_url", put(admin::set_callback_url))
        .route(
            "/sim/tim/apps/{app}/groups/{group_id}",
            put(admin::put_group).patch(admin::patch_group).delete(admin::destroy_group),
        )
        .route("/sim/tim/apps/{app}/groups/{group_id}/members", post(admin::add_members).delete(admin::remove_members))
        .route("/sim/tim/faults", get(admin::faults).post(admin::set_faults).delete(admin::clear_faults))
        .route("/sim/tim/stats", get(admin::stats).delete(admin::reset_stats))
}
