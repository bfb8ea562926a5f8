//! WeCom's customer-group administration (seed 003, `externalcontact/groupchat`): transfers of
//! in-service and resigned owners' groups, join ways (「加入群聊」), statistics, and the group list
//! filtered by follow-up status.
//!
//! Every call goes through `WecomClient::call`, so it shares the group fetches' token cache,
//! rate limiter, 45009 pause and errcode classes. Every request type checks WeCom's documented
//! limits when it is built: invalid input is an [`AdminError::Invalid`] before anything is sent.
//! Per-chat failures of a transfer are data ([`TransferOutcome::failed`]), not an error.

use serde::{Deserialize, Serialize};
use serde_json::json;
use std::fmt;

use super::api::{ListedChat, WecomClient};
use crate::provider::ApiError;

/// Chats per transfer: "取值范围: 1 ~ 100".
pub const TRANSFER_MAX: usize = 100;
/// Chats per join way: "支持5个".
pub const JOIN_WAY_CHATS_MAX: usize = 5;
/// `state`: "不超过30个UTF-8字符".
pub const STATE_MAX_CHARS: usize = 30;
/// `remark`: "超过30个字符将被截断".
pub const REMARK_MAX_CHARS: usize = 30;
/// `room_base_name`: "最长40个utf8字符".
pub const ROOM_BASE_NAME_MAX_CHARS: usize = 40;
/// `owner_filter.userid_list`: "最多100个".
pub const OWNER_FILTER_MAX: usize = 100;
/// Statistics: "支持的最大查询跨度为30天".
pub const STAT_SPAN_MAX_DAYS: i64 = 30;
/// Statistics: "取值范围：昨天至前180天".
pub const STAT_KEPT_DAYS: i64 = 180;
/// `groupchat/list` and `groupchat/statistic` pages: "取值范围 1 ~ 1000".
const PAGE_MAX: u32 = 1000;

/// Why an administration call did not happen or failed as a whole, by what the caller should do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    /// The input breaks a limit WeCom documents: nothing was sent; fix the input. `field` is
    /// WeCom's name of the offending field.
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// WeCom refused the whole call or could not be reached; classified as for group fetches
    /// (transient, rate limited, permanent).
    #[error(transparent)]
    Api(#[from] ApiError),
}

fn invalid(field: &'static str, reason: impl Into<String>) -> AdminError {
    AdminError::Invalid { field, reason: reason.into() }
}

fn check_ids(field: &'static str, ids: &[String], min: usize, max: usize) -> Result<(), AdminError> {
    if ids.len() < min || ids.len() > max {
        return Err(invalid(field, format!("needs {min} to {max} entries, got {}", ids.len())));
    }
    if let Some(i) = ids.iter().position(|id| id.trim().is_empty()) {
        return Err(invalid(field, format!("entry {} is empty", i + 1)));
    }
    if let Some((i, id)) = ids.iter().enumerate().find(|(i, id)| ids[..*i].contains(id)) {
        return Err(invalid(field, format!("{id:?} is given twice (entry {})", i + 1)));
    }
    Ok(())
}

fn check_chars(field: &'static str, value: Option<&str>, max: usize) -> Result<(), AdminError> {
    match value.map(|v| v.chars().count()) {
        Some(n) if n > max => Err(invalid(field, format!("at most {max} characters, got {n}"))),
        _ => Ok(()),
    }
}

fn check_owners(owners: &[String]) -> Result<(), AdminError> {
    check_ids("owner_filter.userid_list", owners, 0, OWNER_FILTER_MAX)
}

// ---------------------------------------------------------------------------------------------
// Transfers
// ---------------------------------------------------------------------------------------------

/// Which transfer API: the owners' employment decides, WeCom refuses the other one per chat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferKind {
    /// `groupchat/onjob_transfer`: the owner is in service.
    OnJob,
    /// `groupchat/transfer`: the owner has resigned (groups in status 1).
    Resigned,
}

impl TransferKind {
    pub fn api(self) -> &'static str {
        match self {
            TransferKind::OnJob => "groupchat/onjob_transfer",
            TransferKind::Resigned => "groupchat/transfer",
        }
    }

    fn path(self) -> &'static str {
        match self {
            TransferKind::OnJob => "/cgi-bin/externalcontact/groupchat/onjob_transfer",
            TransferKind::Resigned => "/cgi-bin/externalcontact/groupchat/transfer",
        }
    }

    fn metric(self) -> &'static str {
        match self {
            TransferKind::OnJob => "groupchat_onjob_transfer",
            TransferKind::Resigned => "groupchat_transfer",
        }
    }
}

/// The body of both transfer APIs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TransferRequest {
    chat_id_list: Vec<String>,
    new_owner: String,
}

impl TransferRequest {
    /// 1 to 100 distinct chat ids and a new owner.
    pub fn new(chat_ids: Vec<String>, new_owner: impl Into<String>) -> Result<Self, AdminError> {
        let new_owner = new_owner.into();
        if new_owner.trim().is_empty() {
            return Err(invalid("new_owner", "must not be empty"));
        }
        check_ids("chat_id_list", &chat_ids, 1, TRANSFER_MAX)?;
        Ok(Self { chat_id_list: chat_ids, new_owner })
    }

    pub fn chat_ids(&self) -> &[String] {
        &self.chat_id_list
    }

    pub fn new_owner(&self) -> &str {
        &self.new_owner
    }
}

/// A chat WeCom did not transfer, with its errcode (90500 owner not resigned, 90501 not a
/// customer group, 90502 owner resigned, 90504 same owner, 90507 inheritance in progress, 90508
/// already inherited, ...) and WeCom's message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedChat {
    pub chat_id: String,
    pub errcode: i64,
    #[serde(default)]
    pub errmsg: String,
}

#[derive(Deserialize)]
struct TransferAnswer {
    #[serde(default)]
    failed_chat_list: Vec<FailedChat>,
}

/// What became of each chat of a transfer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TransferOutcome {
    /// The chats now owned by the new owner, in request order.
    pub transferred: Vec<String>,
    pub failed: Vec<FailedChat>,
}

// ---------------------------------------------------------------------------------------------
// Join ways
// ---------------------------------------------------------------------------------------------

/// Scene of a join way.
pub const SCENE_MINI_PROGRAM: i64 = 1;
pub const SCENE_QR_CODE: i64 = 2;

/// What `add_join_way` and `update_join_way` take (the latter replaces every field).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JoinWaySpec {
    scene: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    remark: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    auto_create_room: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    room_base_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    room_base_id: Option<i64>,
    chat_id_list: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<String>,
}

/// The optional fields of a join way, as a builder for [`JoinWaySpec::new`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JoinWayOptions {
    pub remark: Option<String>,
    pub auto_create_room: Option<i64>,
    pub room_base_name: Option<String>,
    pub room_base_id: Option<i64>,
    pub state: Option<String>,
}

impl JoinWaySpec {
    /// Checks the documented limits: scene 1 or 2, 1 to 5 distinct chats, `state` at most 30
    /// characters, `room_base_name` at most 40, `auto_create_room` 0 or 1 and the room fields
    /// only with automatic rooms. A `remark` over 30 characters is refused rather than cut by
    /// WeCom without a word.
    pub fn new(scene: i64, chat_ids: Vec<String>, options: JoinWayOptions) -> Result<Self, AdminError> {
        if !matches!(scene, SCENE_MINI_PROGRAM | SCENE_QR_CODE) {
            return Err(invalid("scene", format!("must be 1 (mini-program button) or 2 (QR code), got {scene}")));
        }
        check_ids("chat_id_list", &chat_ids, 1, JOIN_WAY_CHATS_MAX)?;
        check_chars("state", options.state.as_deref(), STATE_MAX_CHARS)?;
        if options.state.as_deref() == Some("") {
            return Err(invalid("state", "must not be empty (leave it out instead)"));
        }
        check_chars("remark", options.remark.as_deref(), REMARK_MAX_CHARS)?;
        check_chars("room_base_name", options.room_base_name.as_deref(), ROOM_BASE_NAME_MAX_CHARS)?;
        match options.auto_create_room {
            None | Some(1) => {}
            Some(0) => {
                if options.room_base_name.is_some() || options.room_base_id.is_some() {
                    let field = if options.room_base_name.is_some() { "room_base_name" } else { "room_base_id" };
                    return Err(invalid(field, "only applies when auto_create_room is 1"));
                }
            }
            Some(other) => return Err(invalid("auto_create_room", format!("must be 0 or 1, got {other}"))),
        }
        if options.room_base_id.is_some_and(|id| id < 0) {
            return Err(invalid("room_base_id", "must not be negative"));
        }
        Ok(Self {
            scene,
            remark: options.remark,
            auto_create_room: options.auto_create_room,
            room_base_name: options.room_base_name,
            room_base_id: options.room_base_id,
            chat_id_list: chat_ids,
            state: options.state,
        })
    }
}

/// A join way as `get_join_way` answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinWayInfo {
    pub config_id: String,
    pub scene: i64,
    #[serde(default)]
    pub remark: Option<String>,
    #[serde(default)]
    pub auto_create_room: Option<i64>,
    #[serde(default)]
    pub room_base_name: Option<String>,
    #[serde(default)]
    pub room_base_id: Option<i64>,
    #[serde(default)]
    pub chat_id_list: Vec<String>,
    /// Only for the QR-code scene.
    #[serde(default)]
    pub qr_code: Option<String>,
    #[serde(default)]
    pub state: Option<String>,
}

fn check_config_id(config_id: &str) -> Result<(), AdminError> {
    if config_id.trim().is_empty() {
        return Err(invalid("config_id", "must not be empty"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Group list by follow-up status
// ---------------------------------------------------------------------------------------------

/// `groupchat/list`'s `status_filter` (seed 004: 0 all, 1 owner resigned, 2 inheritance in
/// progress, 3 inherited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    All = 0,
    Resigned = 1,
    Inheriting = 2,
    Inherited = 3,
}

/// What a listed group's `status` means.
pub fn status_label(status: i64) -> &'static str {
    match status {
        0 => "owner in service",
        1 => "owner resigned",
        2 => "inheriting",
        3 => "inherited",
        _ => "unknown",
    }
}

// ---------------------------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------------------------

/// Seconds of WeCom's local time (UTC+8) ahead of UTC: its statistics days begin at 16:00 UTC.
const LOCAL_OFFSET_SECS: i64 = 8 * 3600;
const DAY_SECS: i64 = 86_400;

/// A calendar day in WeCom's time zone (UTC+8), the unit of the statistics APIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LocalDay {
    /// Days since 1970-01-01.
    days: i64,
}

impl LocalDay {
    /// `YYYY-MM-DD`.
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.split('-');
        let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || y.len() != 4 || m.len() != 2 || d.len() != 2 {
            return None;
        }
        let (y, m, d): (i64, u32, u32) = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
        let day = Self { days: days_from_civil(y, m, d) };
        // Rejects 2024-02-30 and friends: the day must read back as written.
        (day.civil() == (y, m, d)).then_some(day)
    }

    /// The local day containing the Unix time `t`.
    pub fn of_unix(t: i64) -> Self {
        Self { days: (t + LOCAL_OFFSET_SECS).div_euclid(DAY_SECS) }
    }

    pub fn today() -> Self {
        Self::of_unix(crate::core::clock::now_ms() / 1000)
    }

    /// Unix seconds of the day's local midnight: what WeCom's `day_begin_time` and
    /// `day_end_time` take and `stat_time` answers.
    pub fn midnight(self) -> i64 {
        self.days * DAY_SECS - LOCAL_OFFSET_SECS
    }

    pub fn plus(self, days: i64) -> Self {
        Self { days: self.days + days }
    }

    /// Days from `self` to `later`.
    pub fn days_until(self, later: Self) -> i64 {
        later.days - self.days
    }

    fn civil(self) -> (i64, u32, u32) {
        civil_from_days(self.days)
    }
}

impl fmt::Display for LocalDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = self.civil();
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let (m, d) = (i64::from(m), i64::from(d));
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The days `[from, to]` of a statistics request, both included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatRange {
    pub from: LocalDay,
    pub to: LocalDay,
}

impl StatRange {
    /// Checks the documented window against `today`: `from` ≤ `to`, at most a 30-day span, no
    /// later than yesterday (WeCom answers 600018 for today) and no earlier than 180 days ago.
    pub fn new(from: LocalDay, to: LocalDay, today: LocalDay) -> Result<Self, AdminError> {
        if to < from {
            return Err(invalid("day_end_time", format!("{to} is before {from}")));
        }
        if from.days_until(to) > STAT_SPAN_MAX_DAYS {
            return Err(invalid(
                "day_end_time",
                format!("{from} to {to} spans {} days; WeCom allows at most {STAT_SPAN_MAX_DAYS}", from.days_until(to)),
            ));
        }
        if to >= today {
            return Err(invalid("day_end_time", format!("{to} is not over yet; the last day WeCom has is yesterday")));
        }
        let oldest = today.plus(-STAT_KEPT_DAYS);
        if from < oldest {
            return Err(invalid("day_begin_time", format!("{from} is older than WeCom keeps ({oldest} or later)")));
        }
        Ok(Self { from, to })
    }

    pub fn days(&self) -> impl Iterator<Item = LocalDay> {
        let from = self.from;
        (0..=from.days_until(self.to)).map(move |i| from.plus(i))
    }
}

/// One `data` object of the statistics answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatData {
    #[serde(default)]
    pub new_chat_cnt: i64,
    #[serde(default)]
    pub chat_total: i64,
    #[serde(default)]
    pub chat_has_msg: i64,
    #[serde(default)]
    pub new_member_cnt: i64,
    #[serde(default)]
    pub member_total: i64,
    #[serde(default)]
    pub member_has_msg: i64,
    #[serde(default)]
    pub msg_total: i64,
    /// Returned to education corps only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migrate_trainee_chat_cnt: Option<i64>,
}

impl StatData {
    /// Adds another owner batch's figures for the same day: every figure is a count over the
    /// owners' groups, so batches add up.
    pub fn add(&mut self, other: &StatData) {
        self.new_chat_cnt += other.new_chat_cnt;
        self.chat_total += other.chat_total;
        self.chat_has_msg += other.chat_has_msg;
        self.new_member_cnt += other.new_member_cnt;
        self.member_total += other.member_total;
        self.member_has_msg += other.member_has_msg;
        self.msg_total += other.msg_total;
        self.migrate_trainee_chat_cnt = match (self.migrate_trainee_chat_cnt, other.migrate_trainee_chat_cnt) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
        };
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerStat {
    pub owner: String,
    pub data: StatData,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayStat {
    /// Unix seconds of the day's local midnight.
    pub stat_time: i64,
    pub data: StatData,
}

#[derive(Deserialize)]
struct OwnerStatPage {
    #[serde(default)]
    total: i64,
    #[serde(default)]
    next_offset: i64,
    #[serde(default)]
    items: Vec<OwnerStat>,
}

#[derive(Deserialize)]
struct DayStatAnswer {
    #[serde(default)]
    items: Vec<DayStat>,
}

fn stat_body(range: &StatRange, owners: &[String]) -> serde_json::Value {
    let mut body = json!({
        "day_begin_time": range.from.midnight(),
        "day_end_time": range.to.midnight(),
    });
    // Without a filter WeCom takes every owner the app sees (81017 above 1000 people).
    if !owners.is_empty() {
        body["owner_filter"] = json!({ "userid_list": owners });
    }
    body
}

// ---------------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------------

/// The administration calls, over a [`WecomClient`] (shared limits and token cache).
#[derive(Clone)]
pub struct WecomAdmin {
    client: WecomClient,
}

impl WecomAdmin {
    pub fn new(client: WecomClient) -> Self {
        Self { client }
    }

    /// Transfers the chats to the new owner. Chats WeCom refuses are listed in the outcome; an
    /// error means the call as a whole failed (and nothing is known to have moved).
    pub async fn transfer(
        &self,
        tenant: &str,
        kind: TransferKind,
        request: &TransferRequest,
    ) -> Result<TransferOutcome, AdminError> {
        let body = serde_json::to_value(request).expect("serialisable");
        let answer: TransferAnswer = self.client.call(tenant, kind.metric(), kind.path(), &body).await?;
        let transferred = request
            .chat_id_list
            .iter()
            .filter(|chat| !answer.failed_chat_list.iter().any(|f| &f.chat_id == *chat))
            .cloned()
            .collect();
        Ok(TransferOutcome { transferred, failed: answer.failed_chat_list })
    }

    /// `add_join_way`: the new join way's `config_id`.
    pub async fn add_join_way(&self, tenant: &str, spec: &JoinWaySpec) -> Result<String, AdminError> {
        #[derive(Deserialize)]
        struct Answer {
            config_id: String,
        }
        let body = serde_json::to_value(spec).expect("serialisable");
        let answer: Answer = self
            .client
            .call(tenant, "groupchat_add_join_way", "/cgi-bin/externalcontact/groupchat/add_join_way", &body)
            .await?;
        Ok(answer.config_id)
    }

    pub async fn get_join_way(&self, tenant: &str, config_id: &str) -> Result<JoinWayInfo, AdminError> {
        check_config_id(config_id)?;
        #[derive(Deserialize)]
        struct Answer {
            join_way: JoinWayInfo,
        }
        let body = json!({ "config_id": config_id });
        let answer: Answer = self
            .client
            .call(tenant, "groupchat_get_join_way", "/cgi-bin/externalcontact/groupchat/get_join_way", &body)
            .await?;
        Ok(answer.join_way)
    }

    /// `update_join_way` replaces every field of the join way with `spec`'s.
    pub async fn update_join_way(&self, tenant: &str, config_id: &str, spec: &JoinWaySpec) -> Result<(), AdminError> {
        check_config_id(config_id)?;
        let mut body = serde_json::to_value(spec).expect("serialisable");
        body["config_id"] = json!(config_id);
        let _: serde_json::Value = self
            .client
            .call(tenant, "groupchat_update_join_way", "/cgi-bin/externalcontact/groupchat/update_join_way", &body)
            .await?;
        Ok(())
    }

    pub async fn delete_join_way(&self, tenant: &str, config_id: &str) -> Result<(), AdminError> {
        check_config_id(config_id)?;
        let body = json!({ "config_id": config_id });
        let _: serde_json::Value = self
            .client
            .call(tenant, "groupchat_del_join_way", "/cgi-bin/externalcontact/groupchat/del_join_way", &body)
            .await?;
        Ok(())
    }

    /// The groups in `status` (of up to 100 `owners`; none: every owner the app sees), following
    /// the cursor to the end.
    pub async fn list_groups(
        &self,
        tenant: &str,
        status: StatusFilter,
        owners: &[String],
    ) -> Result<Vec<ListedChat>, AdminError> {
        check_owners(owners)?;
        let mut chats = Vec::new();
        let mut cursor = String::new();
        loop {
            let mut body = json!({ "status_filter": status as i64, "cursor": cursor, "limit": PAGE_MAX });
            if !owners.is_empty() {
                body["owner_filter"] = json!({ "userid_list": owners });
            }
            #[derive(Deserialize)]
            struct Page {
                #[serde(default)]
                group_chat_list: Vec<ListedChat>,
                #[serde(default)]
                next_cursor: String,
            }
            let page: Page =
                self.client.call(tenant, "groupchat_list", "/cgi-bin/externalcontact/groupchat/list", &body).await?;
            chats.extend(page.group_chat_list);
            if page.next_cursor.is_empty() {
                return Ok(chats);
            }
            cursor = page.next_cursor;
        }
    }

    /// `groupchat/statistic`: per owner (of up to 100 `owners`), over the range, paged to the end.
    pub async fn statistic_by_owner(
        &self,
        tenant: &str,
        range: &StatRange,
        owners: &[String],
    ) -> Result<Vec<OwnerStat>, AdminError> {
        check_owners(owners)?;
        let mut items = Vec::new();
        let mut offset = 0;
        loop {
            let mut body = stat_body(range, owners);
            body["offset"] = json!(offset);
            body["limit"] = json!(PAGE_MAX);
            let page: OwnerStatPage = self
                .client
                .call(tenant, "groupchat_statistic", "/cgi-bin/externalcontact/groupchat/statistic", &body)
                .await?;
            let got = page.items.len();
            items.extend(page.items);
            // "当next_offset和total相等时，说明已经取完所有"; an empty page ends it too, so a
            // miscounting answer cannot loop forever.
            if got == 0 || page.next_offset >= page.total || page.next_offset <= offset {
                return Ok(items);
            }
            offset = page.next_offset;
        }
    }

    /// `groupchat/statistic_group_by_day`: per day of the range, over up to 100 `owners`.
    pub async fn statistic_by_day(
        &self,
        tenant: &str,
        range: &StatRange,
        owners: &[String],
    ) -> Result<Vec<DayStat>, AdminError> {
        check_owners(owners)?;
        let body = stat_body(range, owners);
        let answer: DayStatAnswer = self
            .client
            .call(
                tenant,
                "groupchat_statistic_group_by_day",
                "/cgi-bin/externalcontact/groupchat/statistic_group_by_day",
                &body,
            )
            .await?;
        Ok(answer.items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("wrChat{i}")).collect()
    }

    fn field(e: AdminError) -> &'static str {
        match e {
            AdminError::Invalid { field, .. } => field,
            other => panic!("not invalid input: {other:?}"),
        }
    }

    #[test]
    fn transfers_take_1_to_100_distinct_chats_and_an_owner() {
        assert!(TransferRequest::new(ids(1), "sam").is_ok());
        assert!(TransferRequest::new(ids(100), "sam").is_ok());
        assert_eq!(field(TransferRequest::new(ids(0), "sam").unwrap_err()), "chat_id_list");
        assert_eq!(field(TransferRequest::new(ids(101), "sam").unwrap_err()), "chat_id_list");
        assert_eq!(field(TransferRequest::new(vec!["a".into(), "a".into()], "sam").unwrap_err()), "chat_id_list");
        assert_eq!(field(TransferRequest::new(vec![" ".into()], "sam").unwrap_err()), "chat_id_list");
        assert_eq!(field(TransferRequest::new(ids(1), "").unwrap_err()), "new_owner");
        let body = serde_json::to_value(TransferRequest::new(ids(2), "zhangsan").unwrap()).unwrap();
        assert_eq!(body, json!({"chat_id_list": ["wrChat0", "wrChat1"], "new_owner": "zhangsan"}));
    }

    #[test]
    fn join_ways_are_checked_against_the_documented_limits() {
        let ok = |o: JoinWayOptions| JoinWaySpec::new(2, ids(1), o);
        assert!(JoinWaySpec::new(1, ids(5), Default::default()).is_ok());
        assert_eq!(field(JoinWaySpec::new(3, ids(1), Default::default()).unwrap_err()), "scene");
        assert_eq!(field(JoinWaySpec::new(2, ids(6), Default::default()).unwrap_err()), "chat_id_list");
        assert_eq!(field(JoinWaySpec::new(2, ids(0), Default::default()).unwrap_err()), "chat_id_list");
        // 30 characters of CJK are 90 bytes: the limit counts characters.
        assert!(ok(JoinWayOptions { state: Some("渠".repeat(30)), ..Default::default() }).is_ok());
        let long = JoinWayOptions { state: Some("渠".repeat(31)), ..Default::default() };
        assert_eq!(field(ok(long).unwrap_err()), "state");
        assert_eq!(
            field(ok(JoinWayOptions { state: Some(String::new()), ..Default::default() }).unwrap_err()),
            "state"
        );
        assert_eq!(
            field(ok(JoinWayOptions { remark: Some("r".repeat(31)), ..Default::default() }).unwrap_err()),
            "remark"
        );
        let name = JoinWayOptions { room_base_name: Some("群".repeat(41)), ..Default::default() };
        assert_eq!(field(ok(name).unwrap_err()), "room_base_name");
        let rooms = JoinWayOptions { auto_create_room: Some(2), ..Default::default() };
        assert_eq!(field(ok(rooms).unwrap_err()), "auto_create_room");
        let no_rooms = JoinWayOptions { auto_create_room: Some(0), room_base_id: Some(10), ..Default::default() };
        assert_eq!(field(ok(no_rooms).unwrap_err()), "room_base_id");
        // The documented example body, field for field.
        let spec = JoinWaySpec::new(
            2,
            vec!["wrOgQhDgAAH2Yy-CTZ6POca8mlBEdaaa".into(), "wrOgQhDgAALPUthpRAKvl7mgiQRwAAA".into()],
            JoinWayOptions {
                remark: Some("aa_remark".into()),
                auto_create_room: Some(1),
                room_base_name: Some("销售客服群".into()),
                room_base_id: Some(10),
                state: Some("klsdup3kj3s1".into()),
            },
        )
        .unwrap();
        assert_eq!(
            serde_json::to_value(spec).unwrap(),
            json!({"scene": 2, "remark": "aa_remark", "auto_create_room": 1, "room_base_name": "销售客服群",
                   "room_base_id": 10, "chat_id_list": ["wrOgQhDgAAH2Yy-CTZ6POca8mlBEdaaa", "wrOgQhDgAALPUthpRAKvl7mgiQRwAAA"],
                   "state": "klsdup3kj3s1"})
        );
    }

    #[test]
    fn local_days_are_utc_plus_8_midnights() {
        // The documented example: 1554220800 is Wed Apr 3 00:00:00 CST 2019.
        let day = LocalDay::parse("2019-04-03").unwrap();
        assert_eq!(day.midnight(), 1554220800);
        assert_eq!(LocalDay::of_unix(1554296400), day);
        assert_eq!(LocalDay::of_unix(1554220799), day.plus(-1));
        assert_eq!(day.to_string(), "2019-04-03");
        // The seed's example pair is two days apart.
        assert_eq!(LocalDay::of_unix(1600272000).days_until(LocalDay::of_unix(1600444800)), 2);
        assert_eq!(LocalDay::parse("2024-02-29").unwrap().plus(1).to_string(), "2024-03-01");
        for bad in ["2023-02-29", "2019-4-3", "2019-04-03x", "20190403", "2019-13-01", ""] {
            assert_eq!(LocalDay::parse(bad), None, "{bad}");
        }
        assert_eq!(LocalDay::parse("1970-01-01").unwrap().midnight(), -8 * 3600);
    }

    #[test]
    fn statistics_ranges_are_checked() {
        let today = LocalDay::parse("2024-06-30").unwrap();
        let day = |s| LocalDay::parse(s).unwrap();
        assert!(StatRange::new(day("2024-06-29"), day("2024-06-29"), today).is_ok());
        assert!(StatRange::new(day("2024-05-30"), day("2024-06-29"), today).is_ok(), "30 days");
        assert_eq!(field(StatRange::new(day("2024-05-29"), day("2024-06-29"), today).unwrap_err()), "day_end_time");
        assert_eq!(field(StatRange::new(day("2024-06-29"), day("2024-06-28"), today).unwrap_err()), "day_end_time");
        assert_eq!(field(StatRange::new(day("2024-06-29"), day("2024-06-30"), today).unwrap_err()), "day_end_time");
        assert_eq!(field(StatRange::new(today.plus(-181), today.plus(-170), today).unwrap_err()), "day_begin_time");
        assert!(StatRange::new(today.plus(-180), today.plus(-170), today).is_ok());
        let range = StatRange::new(day("2024-06-27"), day("2024-06-29"), today).unwrap();
        assert_eq!(range.days().map(|d| d.to_string()).collect::<Vec<_>>(), ["2024-06-27", "2024-06-28", "2024-06-29"]);
        let owners: Vec<String> = (0..101).map(|i| format!("u{i}")).collect();
        assert_eq!(field(check_owners(&owners).unwrap_err()), "owner_filter.userid_list");
        assert_eq!(
            stat_body(&range, &["zhangsan".into()]),
            json!({"day_begin_time": day("2024-06-27").midnight(), "day_end_time": day("2024-06-29").midnight(),
                   "owner_filter": {"userid_list": ["zhangsan"]}})
        );
    }

    #[test]
    fn the_documented_answers_parse() {
        let owner: OwnerStatPage = serde_json::from_value(json!({"errcode": 0, "errmsg": "ok", "total": 2, "next_offset": 2,
            "items": [{"owner": "zhangsan", "data": {"new_chat_cnt": 2, "chat_total": 2, "chat_has_msg": 0, "new_member_cnt": 0,
            "member_total": 6, "member_has_msg": 0, "msg_total": 0, "migrate_trainee_chat_cnt": 3}}]}))
        .unwrap();
        assert_eq!(owner.items[0].data.member_total, 6);
        assert_eq!(owner.items[0].data.migrate_trainee_chat_cnt, Some(3));
        let way: JoinWayInfo = serde_json::from_value(json!({"config_id": "9ad7fa5cdaa6511298498f979c472aaa", "scene": 2,
            "remark": "aa_remark", "auto_create_room": 1, "room_base_name": "销售客服群", "room_base_id": 10,
            "chat_id_list": ["wrOgQhDgAAH2Yy-CTZ6POca8mlBEdaaa"], "qr_code": "http://p.qpic.cn/wwhead/x/0", "state": "klsdup3kj3s1"}))
        .unwrap();
        assert_eq!(way.state.as_deref(), Some("klsdup3kj3s1"));
        let mut sum = owner.items[0].data;
        sum.add(&owner.items[0].data);
        assert_eq!((sum.member_total, sum.migrate_trainee_chat_cnt), (12, Some(6)));
    }
}
