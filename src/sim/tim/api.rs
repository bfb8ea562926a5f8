//! The REST API: `POST /v4/group_open_http_svc/{command}?sdkappid=&identifier=&usersig=&random=&contenttype=json`.
//!
//! As on Tencent IM, answers are HTTP 200 with `ActionStatus`, `ErrorInfo`, `ErrorCode` in the
//! body; only injected `http_status` faults answer another status. Which code for what:
//!
//! | case | code | source |
//! |---|---|---|
//! | `sdkappid` missing or not a number | 60012 | REST public codes ("REST 接口需要带 SDKAppID") |
//! | `identifier` or `usersig` missing | 60004 | REST public codes ("账号或签名错误"); chosen |
//! | `random` not a u32, `contenttype` not `json` | 60002 | REST public codes ("HTTP 解析错误"); chosen |
//! | unknown `sdkappid` | 70020 | REST public codes ("SDKAppID 不存在") |
//! | bad / expired / mismatched UserSig | 70003, 70009, 70001, 70013, 70014 | see [`super::sig`] |
//! | valid sig of an account that is not the app admin | 60010 | REST public codes ("需要 App 管理员权限") |
//! | body is not JSON | 60003 | REST public codes ("JSON 解析错误") |
//! | body has a missing, mistyped or unknown key, or a bad value | 10004 | group API private codes ("参数非法") |
//! | another group_open_http_svc command | 10003 | group API private codes ("请求命令非法") |
//! | unknown group (its entry in get_group_info) | 10015 | group API private codes ("群组 ID 非法") |
//! | destroyed group (its entry in get_group_info) | 10010 | group API private codes ("群组不存在…已经被解散") |
//! | member list of an AVChatRoom / BChatRoom | 10007 | chosen ("操作权限不足"); Tencent documents "not supported" only |
//! | answer over 1 MB | 10018 | group API private codes |
//!
//! Injected faults may answer any code; 10006 (操作频率限制) and 10002 (内部错误，请重试) are the
//! ones the service must handle.

use super::*;

/// get_group_info takes at most this many groups (protocols.md §5.4).
const GROUP_INFO_MAX_IDS: usize = 50;
/// get_group_info answers at most this many members per group, in join order; `MemberNum` is
/// always the whole count. Tencent documents no such cap, but does cap every answer at 1 MB
/// (10018) and points to get_group_member_info for member paging (contract, protocols.md §5.4);
/// the simulator chooses this cap so that a client must page big groups with
/// get_group_member_info instead of trusting get_group_info's list.
pub(super) const GROUP_INFO_MEMBER_MAX: usize = 100;
/// get_group_member_info's `Limit` bound (the current 269/1617 page: "不得超过200，建议100").
const MEMBER_LIMIT_MAX: i64 = 200;
/// get_group_member_info without `Limit`: the older page said "all members", the current one says
/// nothing; chosen: the recommended page size, so a client that leaves Limit out is caught.
const MEMBER_LIMIT_DEFAULT: i64 = 100;
/// get_appid_group_list's `Limit` bound and default (269/1614).
const LIST_LIMIT_MAX: i64 = 10_000;
/// Tencent's maximum answer size (10018).
const MAX_ANSWER_BYTES: usize = 1 << 20;

const BASE_FIELDS: &[&str] = &[
    "Type",
    "Name",
    "Appid",
    "Introduction",
    "Notification",
    "FaceUrl",
    "Owner_Account",
    "CreateTime",
    "InfoSeq",
    "LastInfoTime",
    "LastMsgTime",
    "NextMsgSeq",
    "MemberNum",
    "MaxMemberNum",
    "ApplyJoinOption",
    "ShutUpAllMember",
];
/// `Account` is what the get_group_info page's own example uses for `Member_Account`.
const MEMBER_FIELDS: &[&str] = &[
    "Member_Account",
    "Account",
    "Role",
    "JoinTime",
    "MsgSeq",
    "MsgFlag",
    "LastSendMsgTime",
    "NameCard",
    "ShutUpUntil",
];

/// The commands played, named in faults as Tencent names them (`get_group_info`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum TimApi {
    #[serde(rename = "get_group_info")]
    GroupInfo,
    #[serde(rename = "get_group_member_info")]
    GroupMemberInfo,
    #[serde(rename = "get_appid_group_list")]
    AppidGroupList,
}

impl TimApi {
    fn from_command(command: &str) -> Option<Self> {
        match command {
            "get_group_info" => Some(Self::GroupInfo),
            "get_group_member_info" => Some(Self::GroupMemberInfo),
            "get_appid_group_list" => Some(Self::AppidGroupList),
            _ => None,
        }
    }
}

/// Why a call did not succeed.
#[derive(Debug)]
pub(super) enum TimError {
    Tim {
        code: i64,
        info: Cow<'static, str>,
    },
    /// An injected transport-level failure.
    Http(StatusCode),
}

impl TimError {
    pub(super) fn code(code: i64) -> Self {
        Self::Tim { code, info: Cow::Borrowed(error_info_for(code)) }
    }

    fn with_info(code: i64, info: impl Into<String>) -> Self {
        Self::Tim { code, info: Cow::Owned(info.into()) }
    }
}

/// Short texts after Tencent's error tables; clients must key on `ErrorCode`.
pub(super) fn error_info_for(code: i64) -> &'static str {
    match code {
        10002 => "internal server error, please retry",
        10003 => "invalid command",
        10004 => "invalid parameter",
        10006 => "operation frequency limit, reduce the call rate",
        10007 => "insufficient permission",
        10010 => "group does not exist or has been destroyed",
        10015 => "group id not found",
        10018 => "response exceeds 1 MB",
        60002 => "HTTP parse error, check the request URL",
        60003 => "HTTP request JSON parse error",
        60004 => "account or signature error in the request URL",
        60007 => "REST API call frequency over limit",
        60010 => "the request needs App admin permission",
        60012 => "the REST API needs an SDKAppID",
        70001 => "UserSig expired, generate a new one",
        70003 => "UserSig parse failed",
        70009 => "UserSig verification failed",
        70013 => "identifier in the request differs from the one in the UserSig",
        70014 => "SDKAppID in the request differs from the one in the UserSig",
        70020 => "SDKAppID not found",
        _ => "simulated error",
    }
}

#[derive(Serialize)]
struct ErrorAnswer<'a> {
    #[serde(rename = "ActionStatus")]
    action_status: &'static str,
    #[serde(rename = "ErrorInfo")]
    error_info: &'a str,
    #[serde(rename = "ErrorCode")]
    error_code: i64,
}

impl IntoResponse for TimError {
    fn into_response(self) -> Response {
        match self {
            TimError::Tim { code, info } => {
                let mut response =
                    Json(ErrorAnswer { action_status: "FAIL", error_info: &info, error_code: code }).into_response();
                response.extensions_mut().insert(Errcode(code));
                response
            }
            TimError::Http(status) => {
                (status, format!("{status} (injected by the Tencent IM simulator)\n")).into_response()
            }
        }
    }
}

/// A successful answer: `ActionStatus`, `ErrorInfo`, `ErrorCode` first, then the payload's
/// fields, as Tencent orders them. Refused with 10018 when over 1 MB, as Tencent does.
fn tim_ok(payload: impl Serialize) -> Result<Response, TimError> {
    #[derive(Serialize)]
    struct Success<T> {
        #[serde(rename = "ActionStatus")]
        action_status: &'static str,
        #[serde(rename = "ErrorInfo")]
        error_info: &'static str,
        #[serde(rename = "ErrorCode")]
        error_code: i64,
        #[serde(flatten)]
        payload: T,
    }
    let body = serde_json::to_vec(&Success { action_status: "OK", error_info: "", error_code: 0, payload })
        .map_err(|_| TimError::code(10002))?;
    if body.len() > MAX_ANSWER_BYTES {
        return Err(TimError::code(10018));
    }
    let mut response = ([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response();
    response.extensions_mut().insert(Errcode(0));
    Ok(response)
}

/// Strict body parsing: JSON syntax errors are 60003, shape errors 10004 naming the key.
fn parse_request<T: DeserializeOwned>(body: &[u8]) -> Result<T, TimError> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|_| TimError::code(60003))?;
    serde_path_to_error::deserialize(value).map_err(|e| TimError::with_info(10004, format!("invalid parameter: {e}")))
}

// ---------------------------------------------------------------------------------------------
// Faults, counting, authentication
// ---------------------------------------------------------------------------------------------

/// Faults waiting to be served, as `GET`/`POST /sim/tim/faults` answer them.
#[derive(Debug, Clone, Default, Serialize)]
pub(super) struct TimFaults {
    /// The next N successful get_group_info / get_group_member_info calls answer every group as
    /// it was before its latest change (one per call, however many groups it asks for).
    pub(super) stale_fetches: u32,
    pub(super) error_code: Option<TimPending<i64>>,
    pub(super) http_status: Option<TimPending<u16>>,
    pub(super) latency_ms: u64,
    /// UserSigs with `TLS.time` before this (Unix seconds) are refused as expired (70001).
    pub(super) expire_usersig_before: Option<i64>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub(super) struct TimPending<T> {
    pub(super) value: T,
    pub(super) count: u32,
    /// Only calls of this API take the fault; `None`: any of the three.
    pub(super) api: Option<TimApi>,
}

/// Takes one use of a counted fault if it applies to `api`.
fn take_for<T: Copy>(slot: &mut Option<TimPending<T>>, api: TimApi) -> Option<T> {
    let pending = slot.as_mut().filter(|p| p.api.is_none_or(|a| a == api))?;
    let value = pending.value;
    pending.count -= 1;
    if pending.count == 0 {
        *slot = None;
    }
    Some(value)
}

impl SharedSim {
    /// Counting, latency, then injected failures. Other commands are counted, never faulted.
    async fn tim_begin_call(&self, api: Option<TimApi>) -> Result<(), TimError> {
        let latency_ms = {
            let mut sim = self.lock();
            let stats = &mut sim.tim.stats;
            match api {
                Some(TimApi::GroupInfo) => stats.get_group_info += 1,
                Some(TimApi::GroupMemberInfo) => stats.get_group_member_info += 1,
                Some(TimApi::AppidGroupList) => stats.get_appid_group_list += 1,
                None => stats.other += 1,
            }
            sim.tim.faults.latency_ms
        };
        if latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(latency_ms)).await;
        }
        let Some(api) = api else { return Ok(()) };
        let mut sim = self.lock();
        let faults = &mut sim.tim.faults;
        if let Some(status) = take_for(&mut faults.http_status, api) {
            return Err(TimError::Http(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY)));
        }
        if let Some(code) = take_for(&mut faults.error_code, api) {
            return Err(TimError::code(code));
        }
        Ok(())
    }
}

impl TimSim {
    /// The app the call is for, once its query and UserSig pass.
    fn authenticate(&self, query: &Option<String>, now: i64) -> Result<u64, TimError> {
        let sdk_app_id =
            query_param(query, "sdkappid").and_then(|v| v.parse::<u64>().ok()).ok_or(TimError::code(60012))?;
        let identifier = query_param(query, "identifier").ok_or(TimError::code(60004))?;
        let usersig = query_param(query, "usersig").ok_or(TimError::code(60004))?;
        if query_param(query, "random").and_then(|v| v.parse::<u32>().ok()).is_none() {
            return Err(TimError::with_info(60002, "random must be a 32-bit unsigned integer"));
        }
        if query_param(query, "contenttype").as_deref() != Some("json") {
            return Err(TimError::with_info(60002, "contenttype must be json"));
        }
        let app = self.apps.get(&sdk_app_id).ok_or(TimError::code(70020))?;
        let check = sig::SigCheck {
            sdk_app_id,
            identifier: &identifier,
            secret_key: &app.secret_key,
            now,
            not_before: self.faults.expire_usersig_before,
        };
        sig::verify(&usersig, &check).map_err(|e| TimError::code(e.code()))?;
        if identifier != app.identifier {
            return Err(TimError::code(60010));
        }
        Ok(sdk_app_id)
    }
}

pub(super) async fn rest(
    State(sim): State<SharedSim>,
    Path(command): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, TimError> {
    let api = TimApi::from_command(&command);
    sim.tim_begin_call(api).await?;
    let mut guard = sim.lock();
    let tim = &mut guard.tim;
    let sdk_app_id = match tim.authenticate(&query, unix_now()) {
        Ok(id) => id,
        Err(e) => {
            tim.stats.auth_refused += 1;
            return Err(e);
        }
    };
    match api {
        Some(TimApi::GroupInfo) => get_group_info(tim, sdk_app_id, &body),
        Some(TimApi::GroupMemberInfo) => get_group_member_info(tim, sdk_app_id, &body),
        Some(TimApi::AppidGroupList) => get_appid_group_list(tim, sdk_app_id, &body),
        None => Err(TimError::with_info(10003, format!("invalid command: group_open_http_svc/{command}"))),
    }
}

// ---------------------------------------------------------------------------------------------
// Field selection (ResponseFilter, MemberInfoFilter)
// ---------------------------------------------------------------------------------------------

/// Which fields an answer carries.
enum Pick {
    /// No filter: the default fields.
    Default,
    /// A filter: these and nothing else.
    Only(HashSet<String>),
}

impl Pick {
    fn checked(names: Vec<String>, allowed: &[&str], what: &str) -> Result<Self, TimError> {
        if let Some(bad) = names.iter().find(|n| !allowed.contains(&n.as_str())) {
            return Err(TimError::with_info(10004, format!("invalid parameter: {what} has unknown field {bad:?}")));
        }
        Ok(Pick::Only(names.into_iter().collect()))
    }

    fn keys(names: Vec<String>) -> Self {
        Pick::Only(names.into_iter().collect())
    }

    /// Base-info fields: the default leaves out `InfoSeq`, which no documented answer shows.
    fn base(&self, field: &str) -> bool {
        match self {
            Pick::Default => field != "InfoSeq",
            Pick::Only(set) => set.contains(field),
        }
    }

    fn member(&self, field: &str) -> bool {
        match self {
            Pick::Default => true,
            Pick::Only(set) => set.contains(field),
        }
    }

    /// App-defined data: everything by default, else only the named keys; `None` when empty.
    fn data<'a>(pick: Option<&Pick>, data: &'a [TimKeyValue]) -> Option<Vec<&'a TimKeyValue>> {
        let kept: Vec<&TimKeyValue> = match pick? {
            Pick::Default => data.iter().collect(),
            Pick::Only(keys) => data.iter().filter(|kv| keys.contains(&kv.key)).collect(),
        };
        (!kept.is_empty()).then_some(kept)
    }
}

/// What a member entry carries: `None` fields are left out.
struct MemberPick {
    fields: Pick,
    data: Option<Pick>,
}

#[derive(Serialize)]
struct MemberEntry<'a> {
    #[serde(rename = "Member_Account")]
    member_account: &'a str,
    #[serde(rename = "Role", skip_serializing_if = "Option::is_none")]
    role: Option<&'a str>,
    #[serde(rename = "JoinTime", skip_serializing_if = "Option::is_none")]
    join_time: Option<i64>,
    #[serde(rename = "MsgSeq", skip_serializing_if = "Option::is_none")]
    msg_seq: Option<u64>,
    #[serde(rename = "MsgFlag", skip_serializing_if = "Option::is_none")]
    msg_flag: Option<&'a str>,
    #[serde(rename = "LastSendMsgTime", skip_serializing_if = "Option::is_none")]
    last_send_msg_time: Option<i64>,
    #[serde(rename = "NameCard", skip_serializing_if = "Option::is_none")]
    name_card: Option<&'a str>,
    #[serde(rename = "ShutUpUntil", skip_serializing_if = "Option::is_none")]
    shut_up_until: Option<i64>,
    #[serde(rename = "AppMemberDefinedData", skip_serializing_if = "Option::is_none")]
    app_member_defined_data: Option<Vec<&'a TimKeyValue>>,
}

impl MemberPick {
    fn entry<'a>(&self, m: &'a TimMember) -> MemberEntry<'a> {
        let f = |name: &str| self.fields.member(name);
        let name_card = match self.fields {
            Pick::Default => !m.name_card.is_empty(),
            Pick::Only(_) => f("NameCard"),
        };
        MemberEntry {
            member_account: &m.member_account,
            role: f("Role").then_some(m.role.as_str()),
            join_time: f("JoinTime").then_some(m.join_time),
            msg_seq: f("MsgSeq").then_some(m.msg_seq),
            msg_flag: f("MsgFlag").then_some(m.msg_flag.as_str()),
            last_send_msg_time: f("LastSendMsgTime").then_some(m.last_send_msg_time),
            name_card: name_card.then_some(m.name_card.as_str()),
            shut_up_until: f("ShutUpUntil").then_some(m.shut_up_until),
            app_member_defined_data: Pick::data(self.data.as_ref(), &m.app_member_defined_data),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// get_group_info
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupInfoRequest {
    #[serde(rename = "GroupIdList")]
    group_id_list: Vec<String>,
    #[serde(rename = "ResponseFilter", default)]
    response_filter: Option<ResponseFilter>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResponseFilter {
    #[serde(rename = "GroupBaseInfoFilter", default)]
    group_base_info_filter: Option<Vec<String>>,
    #[serde(rename = "MemberInfoFilter", default)]
    member_info_filter: Option<Vec<String>>,
    #[serde(rename = "AppDefinedDataFilter_Group", default)]
    app_defined_data_filter_group: Option<Vec<String>>,
    #[serde(rename = "AppDefinedDataFilter_GroupMember", default)]
    app_defined_data_filter_group_member: Option<Vec<String>>,
}

/// What get_group_info answers for each group. Without a `ResponseFilter`: all base info but
/// `InfoSeq`, all app-defined data, the member list. With one: only what its filters name (no
/// `MemberInfoFilter`, no `MemberList`), as the seed document says ("没有在过滤器中指明的字段将不被拉取").
struct InfoPick {
    base: Pick,
    group_data: Option<Pick>,
    members: Option<MemberPick>,
}

impl InfoPick {
    fn new(filter: Option<ResponseFilter>) -> Result<Self, TimError> {
        let Some(filter) = filter else {
            return Ok(Self {
                base: Pick::Default,
                group_data: Some(Pick::Default),
                members: Some(MemberPick { fields: Pick::Default, data: Some(Pick::Default) }),
            });
        };
        let base = match filter.group_base_info_filter {
            Some(names) => Pick::checked(names, BASE_FIELDS, "GroupBaseInfoFilter")?,
            None => Pick::Only(HashSet::new()),
        };
        let members = match filter.member_info_filter {
            Some(names) => Some(MemberPick {
                fields: Pick::checked(names, MEMBER_FIELDS, "MemberInfoFilter")?,
                data: filter.app_defined_data_filter_group_member.map(Pick::keys),
            }),
            None => None,
        };
        Ok(Self { base, group_data: filter.app_defined_data_filter_group.map(Pick::keys), members })
    }

    fn entry<'a>(&self, g: &'a TimGroup, sdk_app_id: u64) -> GroupInfoEntry<'a> {
        let b = |name: &str| self.base.base(name);
        let lists_members = g.has_member_list();
        GroupInfoEntry {
            group_id: &g.group_id,
            error_code: 0,
            error_info: "",
            group_type: b("Type").then_some(g.group_type.as_str()),
            name: b("Name").then_some(g.name.as_str()),
            appid: b("Appid").then_some(sdk_app_id),
            introduction: b("Introduction").then_some(g.introduction.as_str()),
            notification: b("Notification").then_some(g.notification.as_str()),
            face_url: b("FaceUrl").then_some(g.face_url.as_str()),
            owner_account: b("Owner_Account").then_some(g.owner_account.as_str()),
            create_time: b("CreateTime").then_some(g.create_time),
            info_seq: b("InfoSeq").then_some(g.info_seq),
            last_info_time: b("LastInfoTime").then_some(g.last_info_time),
            last_msg_time: b("LastMsgTime").then_some(g.last_msg_time),
            next_msg_seq: b("NextMsgSeq").then_some(g.next_msg_seq),
            // AVChatRoom: "仅支持拉取群详细资料(成员数量不支持)".
            member_num: (b("MemberNum") && lists_members).then_some(g.member_list.len() as u64),
            max_member_num: b("MaxMemberNum").then_some(g.max_member_num),
            apply_join_option: b("ApplyJoinOption").then_some(g.apply_join_option.as_str()),
            shut_up_all_member: b("ShutUpAllMember").then_some(g.shut_up_all_member.as_str()),
            app_defined_data: Pick::data(self.group_data.as_ref(), &g.app_defined_data),
            member_list: self
                .members
                .as_ref()
                .filter(|_| lists_members)
                .map(|pick| g.member_list.iter().take(GROUP_INFO_MEMBER_MAX).map(|m| pick.entry(m)).collect()),
        }
    }
}

/// One `GroupInfo` entry, fields in the order of Tencent's sample (protocols-2 B1).
#[derive(Serialize)]
struct GroupInfoEntry<'a> {
    #[serde(rename = "GroupId")]
    group_id: &'a str,
    #[serde(rename = "ErrorCode")]
    error_code: i64,
    #[serde(rename = "ErrorInfo")]
    error_info: &'a str,
    #[serde(rename = "Type", skip_serializing_if = "Option::is_none")]
    group_type: Option<&'a str>,
    #[serde(rename = "Name", skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(rename = "Appid", skip_serializing_if = "Option::is_none")]
    appid: Option<u64>,
    #[serde(rename = "Introduction", skip_serializing_if = "Option::is_none")]
    introduction: Option<&'a str>,
    #[serde(rename = "Notification", skip_serializing_if = "Option::is_none")]
    notification: Option<&'a str>,
    #[serde(rename = "FaceUrl", skip_serializing_if = "Option::is_none")]
    face_url: Option<&'a str>,
    #[serde(rename = "Owner_Account", skip_serializing_if = "Option::is_none")]
    owner_account: Option<&'a str>,
    #[serde(rename = "CreateTime", skip_serializing_if = "Option::is_none")]
    create_time: Option<i64>,
    #[serde(rename = "InfoSeq", skip_serializing_if = "Option::is_none")]
    info_seq: Option<u64>,
    #[serde(rename = "LastInfoTime", skip_serializing_if = "Option::is_none")]
    last_info_time: Option<i64>,
    #[serde(rename = "LastMsgTime", skip_serializing_if = "Option::is_none")]
    last_msg_time: Option<i64>,
    #[serde(rename = "NextMsgSeq", skip_serializing_if = "Option::is_none")]
    next_msg_seq: Option<u64>,
    #[serde(rename = "MemberNum", skip_serializing_if = "Option::is_none")]
    member_num: Option<u64>,
    #[serde(rename = "MaxMemberNum", skip_serializing_if = "Option::is_none")]
    max_member_num: Option<u64>,
    #[serde(rename = "ApplyJoinOption", skip_serializing_if = "Option::is_none")]
    apply_join_option: Option<&'a str>,
    #[serde(rename = "ShutUpAllMember", skip_serializing_if = "Option::is_none")]
    shut_up_all_member: Option<&'a str>,
    #[serde(rename = "AppDefinedData", skip_serializing_if = "Option::is_none")]
    app_defined_data: Option<Vec<&'a TimKeyValue>>,
    #[serde(rename = "MemberList", skip_serializing_if = "Option::is_none")]
    member_list: Option<Vec<MemberEntry<'a>>>,
}

impl<'a> GroupInfoEntry<'a> {
    /// The entry of a group that could not be answered: id and error only.
    fn failed(group_id: &'a str, code: i64) -> Self {
        GroupInfoEntry {
            group_id,
            error_code: code,
            error_info: error_info_for(code),
            group_type: None,
            name: None,
            appid: None,
            introduction: None,
            notification: None,
            face_url: None,
            owner_account: None,
            create_time: None,
            info_seq: None,
            last_info_time: None,
            last_msg_time: None,
            next_msg_seq: None,
            member_num: None,
            max_member_num: None,
            apply_join_option: None,
            shut_up_all_member: None,
            app_defined_data: None,
            member_list: None,
        }
    }
}

#[derive(Serialize)]
struct GroupInfoAnswer<'a> {
    #[serde(rename = "GroupInfo")]
    group_info: Vec<GroupInfoEntry<'a>>,
}

fn get_group_info(tim: &mut TimSim, sdk_app_id: u64, body: &[u8]) -> Result<Response, TimError> {
    let request: GroupInfoRequest = parse_request(body)?;
    let count = request.group_id_list.len();
    if !(1..=GROUP_INFO_MAX_IDS).contains(&count) {
        return Err(TimError::with_info(
            10004,
            format!("invalid parameter: GroupIdList has {count} groups, allowed 1..={GROUP_INFO_MAX_IDS}"),
        ));
    }
    let TimSim { apps, faults, stats, .. } = tim;
    if stats.get_group_info_batches.len() < BATCHES_KEPT {
        stats.get_group_info_batches.push(request.group_id_list.clone());
    }
    let pick = InfoPick::new(request.response_filter)?;
    let stale = faults.stale_fetches > 0;
    let app = apps.get(&sdk_app_id).ok_or(TimError::code(70020))?;
    let group_info = request
        .group_id_list
        .iter()
        .map(|id| match app.groups.get(id) {
            None => GroupInfoEntry::failed(id, 10015),
            Some(g) if g.now.destroyed => GroupInfoEntry::failed(id, 10010),
            Some(g) => pick.entry(if stale { g.stale() } else { &g.now }, sdk_app_id),
        })
        .collect();
    let response = tim_ok(GroupInfoAnswer { group_info })?;
    faults.stale_fetches = faults.stale_fetches.saturating_sub(1);
    Ok(response)
}

// ---------------------------------------------------------------------------------------------
// get_group_member_info
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberInfoRequest {
    #[serde(rename = "GroupId")]
    group_id: String,
    #[serde(rename = "MemberInfoFilter", default)]
    member_info_filter: Option<Vec<String>>,
    #[serde(rename = "MemberRoleFilter", default)]
    member_role_filter: Option<Vec<String>>,
    #[serde(rename = "AppDefinedDataFilter_GroupMember", default)]
    app_defined_data_filter_group_member: Option<Vec<String>>,
    #[serde(rename = "Limit", default)]
    limit: Option<i64>,
    /// Not for Community groups.
    #[serde(rename = "Offset", default)]
    offset: Option<i64>,
    /// Community groups only: `""` first, then the answer's `Next`, until it is `""`.
    #[serde(rename = "Next", default)]
    next: Option<String>,
}

#[derive(Serialize)]
struct MemberInfoAnswer<'a> {
    /// "仅社群会返回该字段".
    #[serde(rename = "Next", skip_serializing_if = "Option::is_none")]
    next: Option<String>,
    #[serde(rename = "MemberNum")]
    member_num: u64,
    #[serde(rename = "MemberList")]
    member_list: Vec<MemberEntry<'a>>,
}

fn invalid(message: impl Into<String>) -> TimError {
    TimError::with_info(10004, format!("invalid parameter: {}", message.into()))
}

fn get_group_member_info(tim: &mut TimSim, sdk_app_id: u64, body: &[u8]) -> Result<Response, TimError> {
    let request: MemberInfoRequest = parse_request(body)?;
    let limit = request.limit.unwrap_or(MEMBER_LIMIT_DEFAULT);
    if !(1..=MEMBER_LIMIT_MAX).contains(&limit) {
        return Err(invalid(format!("Limit {limit} is outside 1..={MEMBER_LIMIT_MAX}")));
    }
    let roles = match request.member_role_filter {
        Some(roles) => {
            if let Some(bad) = roles.iter().find(|r| !ROLES.contains(&r.as_str())) {
                return Err(invalid(format!("MemberRoleFilter has unknown role {bad:?}")));
            }
            Some(roles.into_iter().collect::<HashSet<String>>())
        }
        None => None,
    };
    let pick = MemberPick {
        fields: match request.member_info_filter {
            Some(names) => Pick::checked(names, MEMBER_FIELDS, "MemberInfoFilter")?,
            None => Pick::Default,
        },
        data: Some(request.app_defined_data_filter_group_member.map_or(Pick::Default, Pick::keys)),
    };
    let TimSim { apps, faults, .. } = tim;
    let app = apps.get(&sdk_app_id).ok_or(TimError::code(70020))?;
    let group = app.groups.get(&request.group_id).ok_or(TimError::code(10015))?;
    if group.now.destroyed {
        return Err(TimError::code(10010));
    }
    let g = if faults.stale_fetches > 0 { group.stale() } else { &group.now };
    if !g.has_member_list() {
        return Err(TimError::with_info(10007, format!("{} groups have no member list", g.group_type)));
    }
    let start = if g.is_community() {
        if request.offset.is_some() {
            return Err(invalid("Community groups page with Next, not Offset"));
        }
        match request.next.as_deref().unwrap_or("") {
            "" => 0,
            next => decode_member_next(next).ok_or_else(|| invalid(format!("Next {next:?} was not issued")))?,
        }
    } else {
        if request.next.is_some() {
            return Err(invalid("Next is for Community groups; page with Offset"));
        }
        let offset = request.offset.unwrap_or(0);
        usize::try_from(offset).map_err(|_| invalid(format!("Offset {offset} is negative")))?
    };
    let selected: Vec<&TimMember> =
        g.member_list.iter().filter(|m| roles.as_ref().is_none_or(|r| r.contains(&m.role))).collect();
    let end = start.saturating_add(limit as usize).min(selected.len());
    let page = selected.get(start..end).unwrap_or_default();
    let next = g.is_community().then(|| if end < selected.len() { encode_member_next(end) } else { String::new() });
    let answer = MemberInfoAnswer {
        next,
        member_num: g.member_list.len() as u64,
        member_list: page.iter().map(|m| pick.entry(m)).collect(),
    };
    let response = tim_ok(answer)?;
    faults.stale_fetches = faults.stale_fetches.saturating_sub(1);
    Ok(response)
}

/// Community `Next` values look like Tencent's (a long decimal); they carry the next position.
const MEMBER_NEXT_BASE: u64 = 144_115_188_075_855_872; // 2^57

fn encode_member_next(position: usize) -> String {
    (MEMBER_NEXT_BASE + position as u64).to_string()
}

fn decode_member_next(next: &str) -> Option<usize> {
    next.parse::<u64>().ok()?.checked_sub(MEMBER_NEXT_BASE).and_then(|p| usize::try_from(p).ok())
}

// ---------------------------------------------------------------------------------------------
// get_appid_group_list
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupListRequest {
    #[serde(rename = "Limit", default)]
    limit: Option<i64>,
    /// 0 for the first page, then the answer's `Next`.
    #[serde(rename = "Next", default)]
    next: Option<u64>,
    #[serde(rename = "GroupType", default)]
    group_type: Option<String>,
}

#[derive(Serialize)]
struct GroupListAnswer<'a> {
    /// Live groups (of `GroupType`, if given), whatever `Limit` and `Next` say.
    #[serde(rename = "TotalCount")]
    total_count: u64,
    #[serde(rename = "GroupIdList")]
    group_id_list: Vec<ListedGroup<'a>>,
    /// 0 when this was the last page.
    #[serde(rename = "Next")]
    next: u64,
}

#[derive(Serialize)]
struct ListedGroup<'a> {
    #[serde(rename = "GroupId")]
    group_id: &'a str,
}

/// `Next` is the creation number of the last group listed, so paging stays right while groups
/// are created or destroyed between pages.
fn get_appid_group_list(tim: &mut TimSim, sdk_app_id: u64, body: &[u8]) -> Result<Response, TimError> {
    let request: GroupListRequest = parse_request(body)?;
    let limit = request.limit.unwrap_or(LIST_LIMIT_MAX);
    if !(1..=LIST_LIMIT_MAX).contains(&limit) {
        return Err(invalid(format!("Limit {limit} is outside 1..={LIST_LIMIT_MAX}")));
    }
    if let Some(t) = request.group_type.as_deref().filter(|t| !GROUP_TYPES.contains(t)) {
        return Err(invalid(format!("GroupType {t:?} is none of {GROUP_TYPES:?}")));
    }
    let after = request.next.unwrap_or(0);
    let app = tim.apps.get(&sdk_app_id).ok_or(TimError::code(70020))?;
    let mut groups: Vec<&Group> = app
        .groups
        .values()
        .filter(|g| !g.now.destroyed)
        .filter(|g| request.group_type.as_deref().is_none_or(|t| g.now.group_type == t))
        .collect();
    let total_count = groups.len() as u64;
    groups.sort_by_key(|g| g.seq);
    groups.retain(|g| g.seq > after);
    let more = groups.len() > limit as usize;
    groups.truncate(limit as usize);
    let next = if more { groups.last().map_or(0, |g| g.seq) } else { 0 };
    let group_id_list = groups.iter().map(|g| ListedGroup { group_id: &g.now.group_id }).collect();
    tim_ok(GroupListAnswer { total_count, group_id_list, next })
}
