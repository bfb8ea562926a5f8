//! WeCom's customer-group administration as the simulator plays it (seed 003, seed 004,
//! protocols-2 §C): `groupchat/transfer` and `onjob_transfer`, the join-way CRUD, the two
//! statistics calls and `appchat/get`; plus the admin routes that go with them (join through a
//! join way, app chats, the request log).
//!
//! Where WeCom documents an errcode for a case, the simulator answers it; where it does not, the
//! code is the simulator's choice, and the comment at that place says so.

use super::*;

/// Seconds of WeCom's local time zone (UTC+8) ahead of UTC: its days start at 16:00 UTC.
const LOCAL_OFFSET: i64 = 8 * 3600;
const DAY: i64 = 86_400;
/// Chats per transfer call (seed 003: 1 ~ 100).
const TRANSFER_MAX: usize = 100;
/// Chats per join way (seed 003: "支持5个").
const JOIN_WAY_CHATS_MAX: usize = 5;
/// `state` and `remark`: at most 30 UTF-8 characters; `room_base_name` at most 40.
const STATE_MAX: usize = 30;
const REMARK_MAX: usize = 30;
const ROOM_BASE_NAME_MAX: usize = 40;
/// Statistics: at most a 30-day span, within the last 180 days, up to yesterday.
const STAT_SPAN_DAYS: i64 = 30;
const STAT_KEPT_DAYS: i64 = 180;
const STAT_LIMIT_MAX: i64 = 1000;
const STAT_LIMIT_DEFAULT: i64 = 500;
/// onjob_transfer: "90个自然日内，在职成员的每个客户群仅可被转接2次".
const ONJOB_TRANSFERS_MAX: u32 = 2;
/// The request log keeps this many, newest last.
const REQUESTS_MAX: usize = 1000;

/// An app group chat as `appchat/get`'s `chat_info` shows it (seed 004's `ChatInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimAppChat {
    pub chatid: String,
    #[serde(default)]
    pub name: String,
    pub owner: String,
    #[serde(default)]
    pub userlist: Vec<String>,
}

/// A join way, serialised as `get_join_way`'s `join_way` object (field order included).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimJoinWay {
    pub config_id: String,
    pub scene: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remark: Option<String>,
    pub auto_create_room: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_base_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_base_id: Option<i64>,
    pub chat_id_list: Vec<String>,
    /// Only for the QR-code scene (2), as on WeCom.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qr_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

/// One WeCom API request as the simulator received it: the API path after `/cgi-bin/` and the
/// JSON body (for a GET, its query parameters; the access token is never recorded).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedRequest {
    pub api: String,
    pub body: serde_json::Value,
}

impl SharedSim {
    /// Adds a request to the log. A body that is not JSON is kept as a string.
    pub(super) fn record(&self, api: &str, query: &Option<String>, body: &[u8]) {
        let body = if body.is_empty() {
            let params = query.as_deref().map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .filter(|(k, _)| k != "access_token")
                    .map(|(k, v)| (k.into_owned(), serde_json::Value::String(v.into_owned())))
                    .collect::<serde_json::Map<_, _>>()
            });
            serde_json::Value::Object(params.unwrap_or_default())
        } else {
            serde_json::from_slice(body)
                .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(body).into_owned()))
        };
        let mut sim = self.lock();
        if sim.requests.len() == REQUESTS_MAX {
            sim.requests.remove(0);
        }
        sim.requests.push(RecordedRequest { api: api.to_owned(), body });
    }
}

pub(super) fn api_routes() -> Router<SharedSim> {
    Router::new()
        .route("/cgi-bin/externalcontact/groupchat/transfer", post(transfer))
        .route("/cgi-bin/externalcontact/groupchat/onjob_transfer", post(onjob_transfer))
        .route("/cgi-bin/externalcontact/groupchat/add_join_way", post(add_join_way))
        .route("/cgi-bin/externalcontact/groupchat/get_join_way", post(get_join_way))
        .route("/cgi-bin/externalcontact/groupchat/update_join_way", post(update_join_way))
        .route("/cgi-bin/externalcontact/groupchat/del_join_way", post(del_join_way))
        .route("/cgi-bin/externalcontact/groupchat/statistic", post(statistic))
        .route("/cgi-bin/externalcontact/groupchat/statistic_group_by_day", post(statistic_by_day))
        .route("/cgi-bin/appchat/get", get(appchat_get))
}

pub(super) fn admin_routes() -> Router<SharedSim> {
    Router::new()
        .route("/sim/requests", get(admin_requests).delete(admin_clear_requests))
        .route("/sim/corps/{corp}/join_ways/{config_id}/join", post(admin_join_via_join_way))
        .route("/sim/corps/{corp}/appchats/{chatid}", put(admin_put_appchat))
        .route("/sim/corps/{corp}/appchats/{chatid}/members", post(admin_add_appchat_member))
        .route("/sim/corps/{corp}/appchats/{chatid}/members/{userid}", delete(admin_remove_appchat_member))
}

/// The common start of every administration call: logged, counted, faults applied, token
/// checked, body parsed. Answers the corp id and the request.
async fn begin<T: DeserializeOwned>(
    sim: &SharedSim,
    api: &str,
    query: &Option<String>,
    body: &[u8],
) -> Result<(String, T), ApiError> {
    sim.record(api, query, body);
    sim.begin_call(Api::Admin).await?;
    let corp_id = sim.lock().authorize(query)?;
    Ok((corp_id, parse_api_body(body)?))
}

fn invalid(errmsg: &'static str) -> ApiError {
    ApiError::Wecom { errcode: 40058, errmsg: Cow::Borrowed(errmsg) }
}

// ---------------------------------------------------------------------------------------------
// Transfers
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct TransferRequest {
    #[serde(default)]
    chat_id_list: Vec<String>,
    #[serde(default)]
    new_owner: String,
}

#[derive(Serialize)]
struct FailedChat {
    chat_id: String,
    errcode: i64,
    errmsg: &'static str,
}

#[derive(Serialize)]
struct TransferAnswer {
    failed_chat_list: Vec<FailedChat>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum TransferKind {
    /// `groupchat/transfer`: the owner has resigned.
    Resigned,
    /// `groupchat/onjob_transfer`: the owner is in service.
    OnJob,
}

async fn transfer(State(sim): State<SharedSim>, RawQuery(query): RawQuery, body: Bytes) -> Result<Response, ApiError> {
    transfer_call(sim, "externalcontact/groupchat/transfer", TransferKind::Resigned, query, body).await
}

async fn onjob_transfer(
    State(sim): State<SharedSim>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    transfer_call(sim, "externalcontact/groupchat/onjob_transfer", TransferKind::OnJob, query, body).await
}

async fn transfer_call(
    sim: SharedSim,
    api: &str,
    kind: TransferKind,
    query: Option<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (corp_id, request): (String, TransferRequest) = begin(&sim, api, &query, &body).await?;
    // The whole call's errcodes for a bad list or owner are undocumented; 40058 and 40003 are the
    // simulator's choice (WeCom's generic "invalid parameter" and "invalid userid").
    if request.chat_id_list.is_empty() || request.chat_id_list.len() > TRANSFER_MAX {
        return Err(invalid("chat_id_list must hold 1 to 100 chat ids"));
    }
    if request.new_owner.is_empty() {
        return Err(ApiError::code(40003));
    }
    let mut guard = sim.lock();
    let corp = guard.corps.get_mut(&corp_id).ok_or(ApiError::code(40014))?;
    let mut failed_chat_list = Vec::new();
    for chat_id in request.chat_id_list {
        match transfer_one(corp, &chat_id, &request.new_owner, kind) {
            Ok(()) => {}
            Err(errcode) => failed_chat_list.push(FailedChat { chat_id, errcode, errmsg: errmsg_for(errcode) }),
        }
    }
    Ok(wecom_ok(TransferAnswer { failed_chat_list }))
}

/// One chat of a transfer: the per-chat errcodes of protocols-2 §C.4.
fn transfer_one(corp: &mut Corp, chat_id: &str, new_owner: &str, kind: TransferKind) -> Result<(), i64> {
    // 90501 for an unknown chat is the documented onjob sample's code ("chat is not external
    // group chat"); for a dismissed chat it is the simulator's choice.
    let group = corp.groups.get_mut(chat_id).filter(|g| !g.now.dismissed).ok_or(90501)?;
    match (kind, group.now.status) {
        (TransferKind::Resigned, 0) => return Err(90500),
        (TransferKind::Resigned, 2) => return Err(90507),
        (TransferKind::Resigned, 3) => return Err(90508),
        (TransferKind::OnJob, s) if s != 0 => return Err(90502),
        _ => {}
    }
    if group.now.owner == new_owner {
        return Err(90504);
    }
    if kind == TransferKind::OnJob {
        // The simulator never forgets, so its whole life counts as one 90-day window; 40128 is
        // the code go-workwx gives for "转接过于频繁" (protocols-2 §C.4).
        if group.onjob_transfers >= ONJOB_TRANSFERS_MAX {
            return Err(40128);
        }
        group.onjob_transfers += 1;
    }
    group.now.owner = new_owner.to_owned();
    // A resigned owner's group counts as inherited once transferred (the simulator's reading of
    // "3 - 离职继承完成"; WeCom does not say whether a group passes through 2 first). Whether
    // WeCom also adds the new owner to the member list is undocumented: members stay as they are.
    if kind == TransferKind::Resigned {
        group.now.status = 3;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Join ways
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct JoinWayRequest {
    #[serde(default)]
    config_id: Option<String>,
    #[serde(default)]
    scene: i64,
    #[serde(default)]
    remark: Option<String>,
    #[serde(default)]
    auto_create_room: Option<i64>,
    #[serde(default)]
    room_base_name: Option<String>,
    #[serde(default)]
    room_base_id: Option<i64>,
    #[serde(default)]
    chat_id_list: Vec<String>,
    #[serde(default)]
    state: Option<String>,
}

#[derive(Deserialize)]
struct ConfigIdRequest {
    #[serde(default)]
    config_id: String,
}

/// The join way a request describes, checked against the corp's groups. Every refusal here is
/// 40058 except for a chat that is not a customer group (90501); both are the simulator's
/// choices, as WeCom documents no errcodes for join ways.
fn join_way_of(
    corp: &Corp,
    request: JoinWayRequest,
    config_id: String,
    qr_code: Option<String>,
) -> Result<SimJoinWay, ApiError> {
    if !matches!(request.scene, 1 | 2) {
        return Err(invalid("scene must be 1 (mini program) or 2 (QR code)"));
    }
    if request.chat_id_list.is_empty() || request.chat_id_list.len() > JOIN_WAY_CHATS_MAX {
        return Err(invalid("chat_id_list must hold 1 to 5 chat ids"));
    }
    let auto_create_room = request.auto_create_room.unwrap_or(1);
    if !matches!(auto_create_room, 0 | 1) {
        return Err(invalid("auto_create_room must be 0 or 1"));
    }
    if request.state.as_ref().is_some_and(|s| s.chars().count() > STATE_MAX) {
        return Err(invalid("state is longer than 30 characters"));
    }
    if request.room_base_name.as_ref().is_some_and(|s| s.chars().count() > ROOM_BASE_NAME_MAX) {
        return Err(invalid("room_base_name is longer than 40 characters"));
    }
    for chat_id in &request.chat_id_list {
        if corp.groups.get(chat_id).is_none_or(|g| g.now.dismissed) {
            return Err(ApiError::code(90501));
        }
    }
    let qr_code = match request.scene {
        2 => qr_code.or_else(|| Some(format!("https://sim.invalid/wework/joinway/{config_id}.png"))),
        _ => None,
    };
    Ok(SimJoinWay {
        config_id,
        scene: request.scene,
        // Documented: "超过30个字符将被截断".
        remark: request.remark.map(|r| r.chars().take(REMARK_MAX).collect()),
        auto_create_room,
        room_base_name: request.room_base_name,
        room_base_id: request.room_base_id,
        chat_id_list: request.chat_id_list,
        qr_code,
        state: request.state.filter(|s| !s.is_empty()),
    })
}

/// An unknown `config_id`: WeCom documents no code for it; 40058 is the simulator's choice.
fn unknown_config() -> ApiError {
    invalid("invalid config_id")
}

async fn add_join_way(
    State(sim): State<SharedSim>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (corp_id, request): (String, JoinWayRequest) =
        begin(&sim, "externalcontact/groupchat/add_join_way", &query, &body).await?;
    let mut guard = sim.lock();
    let corp = guard.corps.get_mut(&corp_id).ok_or(ApiError::code(40014))?;
    let config_id = hex::encode(rand::random::<[u8; 16]>());
    let way = join_way_of(corp, request, config_id.clone(), None)?;
    corp.join_ways.insert(config_id.clone(), way);
    #[derive(Serialize)]
    struct Answer {
        config_id: String,
    }
    Ok(wecom_ok(Answer { config_id }))
}

async fn get_join_way(
    State(sim): State<SharedSim>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (corp_id, request): (String, ConfigIdRequest) =
        begin(&sim, "externalcontact/groupchat/get_join_way", &query, &body).await?;
    let guard = sim.lock();
    let corp = guard.corps.get(&corp_id).ok_or(ApiError::code(40014))?;
    let join_way = corp.join_ways.get(&request.config_id).cloned().ok_or_else(unknown_config)?;
    #[derive(Serialize)]
    struct Answer {
        join_way: SimJoinWay,
    }
    Ok(wecom_ok(Answer { join_way }))
}

/// "使用覆盖的方式更新": every field is replaced, an absent one reset to its default.
async fn update_join_way(
    State(sim): State<SharedSim>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (corp_id, mut request): (String, JoinWayRequest) =
        begin(&sim, "externalcontact/groupchat/update_join_way", &query, &body).await?;
    let config_id = request.config_id.take().unwrap_or_default();
    let mut guard = sim.lock();
    let corp = guard.corps.get_mut(&corp_id).ok_or(ApiError::code(40014))?;
    let existing = corp.join_ways.get(&config_id).ok_or_else(unknown_config)?;
    let way = join_way_of(corp, request, config_id.clone(), existing.qr_code.clone())?;
    corp.join_ways.insert(config_id, way);
    Ok(wecom_ok(serde_json::Map::new()))
}

async fn del_join_way(
    State(sim): State<SharedSim>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (corp_id, request): (String, ConfigIdRequest) =
        begin(&sim, "externalcontact/groupchat/del_join_way", &query, &body).await?;
    let mut guard = sim.lock();
    let corp = guard.corps.get_mut(&corp_id).ok_or(ApiError::code(40014))?;
    corp.join_ways.remove(&request.config_id).ok_or_else(unknown_config)?;
    Ok(wecom_ok(serde_json::Map::new()))
}

// ---------------------------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct StatRequest {
    day_begin_time: Option<i64>,
    #[serde(default)]
    day_end_time: Option<i64>,
    #[serde(default)]
    owner_filter: Option<OwnerFilter>,
    #[serde(default)]
    order_by: Option<i64>,
    #[serde(default)]
    order_asc: Option<i64>,
    #[serde(default)]
    offset: Option<i64>,
    #[serde(default)]
    limit: Option<i64>,
}

/// The `data` object of both statistics answers. The simulator has no messages, so the message
/// counts are 0; `migrate_trainee_chat_cnt` is only returned to education corps, so never here.
#[derive(Debug, Clone, Copy, Default, Serialize)]
struct StatData {
    new_chat_cnt: i64,
    chat_total: i64,
    chat_has_msg: i64,
    new_member_cnt: i64,
    member_total: i64,
    member_has_msg: i64,
    msg_total: i64,
}

/// WeCom's local midnight at or before `t`: "当传入的时间不为0点时，会向下取整".
fn floor_to_day(t: i64) -> i64 {
    t - (t + LOCAL_OFFSET).rem_euclid(DAY)
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// The checked day range `[begin, end]` (local midnights) and owner filter of a request.
/// Documented: the end defaults to the begin, spans are at most 30 days, from yesterday back to
/// 180 days; 600018 "无效的起始结束时间" is go-workwx's code and the one a community report hit
/// for today's date (protocols-2 §C.6), so it answers every bad range here.
fn stat_scope(corp: &Corp, request: &StatRequest) -> Result<(i64, i64, Vec<String>), ApiError> {
    let begin = floor_to_day(request.day_begin_time.ok_or(ApiError::code(600018))?);
    let end = floor_to_day(request.day_end_time.unwrap_or(begin));
    let today = floor_to_day(unix_now());
    let bad =
        end < begin || (end - begin) / DAY > STAT_SPAN_DAYS || end >= today || begin < today - STAT_KEPT_DAYS * DAY;
    if bad {
        return Err(ApiError::code(600018));
    }
    let owners = request.owner_filter.as_ref().map(|f| f.userid_list.clone()).unwrap_or_default();
    if owners.len() > OWNER_FILTER_MAX {
        return Err(invalid("owner_filter.userid_list holds more than 100 owners"));
    }
    if owners.is_empty() && corp.large_visible_range {
        return Err(ApiError::code(81017));
    }
    Ok((begin, end, owners))
}

/// The statistics of `groups` for the days `[from, to]` (local midnights): new chats and new
/// members counted over the days, totals as of the end of `to` ("截至当天"). The simulator
/// keeps no history, so the totals count today's members by their join times and a group
/// transferred since counts for its owner now.
fn stat_data<'a>(groups: impl Iterator<Item = &'a SimGroup>, from: i64, to: i64) -> StatData {
    let end = to + DAY;
    let mut data = StatData::default();
    for g in groups {
        if g.create_time >= end {
            continue;
        }
        data.chat_total += 1;
        data.new_chat_cnt += i64::from(g.create_time >= from);
        for m in &g.member_list {
            if m.join_time < end {
                data.member_total += 1;
                data.new_member_cnt += i64::from(m.join_time >= from);
            }
        }
    }
    data
}

fn live_groups<'a>(corp: &'a Corp, owners: &'a [String]) -> impl Iterator<Item = &'a SimGroup> + 'a {
    corp.groups
        .values()
        .map(|g| &g.now)
        .filter(move |g| !g.dismissed && (owners.is_empty() || owners.contains(&g.owner)))
}

async fn statistic(State(sim): State<SharedSim>, RawQuery(query): RawQuery, body: Bytes) -> Result<Response, ApiError> {
    let (corp_id, request): (String, StatRequest) =
        begin(&sim, "externalcontact/groupchat/statistic", &query, &body).await?;
    let guard = sim.lock();
    let corp = guard.corps.get(&corp_id).ok_or(ApiError::code(40014))?;
    let (begin_day, end_day, owners) = stat_scope(corp, &request)?;
    let order_by = request.order_by.unwrap_or(1);
    let limit = request.limit.unwrap_or(STAT_LIMIT_DEFAULT);
    let offset = request.offset.unwrap_or(0);
    if !(1..=4).contains(&order_by) || !(1..=STAT_LIMIT_MAX).contains(&limit) || offset < 0 {
        return Err(invalid("order_by must be 1..=4, limit 1..=1000, offset at least 0"));
    }
    let mut by_owner: BTreeMap<&str, Vec<&SimGroup>> = BTreeMap::new();
    for g in live_groups(corp, &owners) {
        by_owner.entry(g.owner.as_str()).or_default().push(g);
    }
    #[derive(Serialize)]
    struct Item {
        owner: String,
        data: StatData,
    }
    let mut items: Vec<Item> = by_owner
        .into_iter()
        .map(|(owner, groups)| Item {
            owner: owner.to_owned(),
            data: stat_data(groups.into_iter(), begin_day, end_day),
        })
        .filter(|item| item.data.chat_total > 0)
        .collect();
    let key = |d: &StatData| match order_by {
        1 => d.new_chat_cnt,
        2 => d.chat_total,
        3 => d.new_member_cnt,
        _ => d.member_total,
    };
    // Ties keep the owners in userid order, whichever the direction.
    items.sort_by(|a, b| {
        let (ka, kb) = (key(&a.data), key(&b.data));
        let primary = if request.order_asc == Some(1) { ka.cmp(&kb) } else { kb.cmp(&ka) };
        primary.then_with(|| a.owner.cmp(&b.owner))
    });
    let total = items.len() as i64;
    let next_offset = (offset + limit).min(total);
    let items: Vec<Item> = items.into_iter().skip(offset as usize).take(limit as usize).collect();
    #[derive(Serialize)]
    struct Answer {
        total: i64,
        next_offset: i64,
        items: Vec<Item>,
    }
    Ok(wecom_ok(Answer { total, next_offset, items }))
}

async fn statistic_by_day(
    State(sim): State<SharedSim>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (corp_id, request): (String, StatRequest) =
        begin(&sim, "externalcontact/groupchat/statistic_group_by_day", &query, &body).await?;
    let guard = sim.lock();
    let corp = guard.corps.get(&corp_id).ok_or(ApiError::code(40014))?;
    let (begin_day, end_day, owners) = stat_scope(corp, &request)?;
    #[derive(Serialize)]
    struct Item {
        stat_time: i64,
        data: StatData,
    }
    let items: Vec<Item> = (0..=(end_day - begin_day) / DAY)
        .map(|i| begin_day + i * DAY)
        .map(|day| Item { stat_time: day, data: stat_data(live_groups(corp, &owners), day, day) })
        .collect();
    #[derive(Serialize)]
    struct Answer {
        items: Vec<Item>,
    }
    Ok(wecom_ok(Answer { items }))
}

// ---------------------------------------------------------------------------------------------
// App group chats
// ---------------------------------------------------------------------------------------------

/// `GET /cgi-bin/appchat/get?access_token=&chatid=`. 40050 ("chatid不存在") is WeCom's
/// documented code for an unknown chat id; 40058 for a missing one is the simulator's choice.
async fn appchat_get(State(sim): State<SharedSim>, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    sim.record("appchat/get", &query, &[]);
    sim.begin_call(Api::Admin).await?;
    let guard = sim.lock();
    let corp_id = guard.authorize(&query)?;
    let chatid = query_param(&query, "chatid").ok_or_else(|| invalid("chatid missing"))?;
    let chat = guard
        .corps
        .get(&corp_id)
        .and_then(|c| c.appchats.get(&chatid))
        .ok_or(ApiError::Wecom { errcode: 40050, errmsg: Cow::Borrowed(errmsg_for(40050)) })?;
    #[derive(Serialize)]
    struct ChatInfo<'a> {
        #[serde(flatten)]
        chat: &'a SimAppChat,
        /// 0: a group chat (the documented answer carries it).
        chat_type: i64,
    }
    #[derive(Serialize)]
    struct Answer<'a> {
        chat_info: ChatInfo<'a>,
    }
    Ok(wecom_ok(Answer { chat_info: ChatInfo { chat, chat_type: 0 } }))
}

// ---------------------------------------------------------------------------------------------
// Admin routes
// ---------------------------------------------------------------------------------------------

async fn admin_requests(State(sim): State<SharedSim>) -> Json<Vec<RecordedRequest>> {
    Json(sim.lock().requests.clone())
}

async fn admin_clear_requests(State(sim): State<SharedSim>) -> StatusCode {
    sim.lock().requests.clear();
    StatusCode::NO_CONTENT
}

/// A customer coming in through a join way: `{"userid", "type"?, "unionid"?, "join_time",
/// "group_nickname"?, "name"?, "chat_id"?}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JoinViaJoinWay {
    userid: String,
    #[serde(rename = "type", default = "external_type")]
    member_type: i64,
    #[serde(default)]
    unionid: Option<String>,
    join_time: i64,
    #[serde(default)]
    group_nickname: Option<String>,
    #[serde(default)]
    name: Option<String>,
    /// Which of the way's chats; default its first live one.
    #[serde(default)]
    chat_id: Option<String>,
}

fn external_type() -> i64 {
    2
}

#[derive(Serialize)]
struct JoinedAnswer {
    chat_id: String,
    member_version: String,
}

/// Adds the member to one of the join way's chats with the way's `state`. WeCom documents no
/// `join_scene` for the mini-program button; 3 (scanned the group QR code) is used for both
/// scenes, without an invitor.
async fn admin_join_via_join_way(
    State(sim): State<SharedSim>,
    Path((corp_id, config_id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<JoinedAnswer>, AdminError> {
    let join: JoinViaJoinWay = parse_admin_body(&body)?;
    let mut guard = sim.lock();
    let Sim { corps, versions, .. } = &mut *guard;
    let corp = corp_mut(corps, &corp_id)?;
    let way =
        corp.join_ways.get(&config_id).cloned().ok_or_else(|| {
            AdminError::new(StatusCode::NOT_FOUND, format!("no join way {config_id} in corp {corp_id}"))
        })?;
    let chat_id = match join.chat_id {
        Some(chat) if way.chat_id_list.contains(&chat) => chat,
        Some(chat) => {
            return Err(AdminError::new(StatusCode::BAD_REQUEST, format!("join way {config_id} does not use {chat}")))
        }
        None => way
            .chat_id_list
            .iter()
            .find(|c| corp.groups.get(*c).is_some_and(|g| !g.now.dismissed))
            .cloned()
            .ok_or_else(|| AdminError::new(StatusCode::CONFLICT, "none of the join way's chats is live"))?,
    };
    let group = live_group_mut(corps, &corp_id, &chat_id)?;
    if group.now.member_list.iter().any(|m| m.userid == join.userid) {
        return Err(AdminError::new(StatusCode::CONFLICT, format!("{} is already a member", join.userid)));
    }
    let member = WecomMember {
        userid: join.userid,
        member_type: join.member_type,
        unionid: join.unionid,
        join_time: join.join_time,
        join_scene: 3,
        invitor: None,
        group_nickname: join.group_nickname,
        name: join.name,
        state: way.state.clone(),
    };
    let member_version = group.change_members(versions, |list| list.push(member));
    Ok(Json(JoinedAnswer { chat_id, member_version }))
}

/// Creates or replaces an app chat (`SimAppChat` JSON; `chatid` may be left out).
async fn admin_put_appchat(
    State(sim): State<SharedSim>,
    Path((corp_id, chatid)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<SimAppChat>, AdminError> {
    let mut value: serde_json::Value = parse_admin_body(&body)?;
    if let Some(object) = value.as_object_mut() {
        object.entry("chatid").or_insert_with(|| chatid.clone().into());
    }
    let chat: SimAppChat = parse_admin_body(value.to_string().as_bytes())?;
    if chat.chatid != chatid {
        return Err(AdminError::new(StatusCode::BAD_REQUEST, "chatid in the body differs from the path"));
    }
    let mut guard = sim.lock();
    corp_mut(&mut guard.corps, &corp_id)?.appchats.insert(chatid, chat.clone());
    Ok(Json(chat))
}

fn appchat_mut<'a>(
    corps: &'a mut BTreeMap<String, Corp>,
    corp_id: &str,
    chatid: &str,
) -> Result<&'a mut SimAppChat, AdminError> {
    corp_mut(corps, corp_id)?
        .appchats
        .get_mut(chatid)
        .ok_or_else(|| AdminError::new(StatusCode::NOT_FOUND, format!("no app chat {chatid} in corp {corp_id}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserIdBody {
    userid: String,
}

async fn admin_add_appchat_member(
    State(sim): State<SharedSim>,
    Path((corp_id, chatid)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<SimAppChat>, AdminError> {
    let UserIdBody { userid } = parse_admin_body(&body)?;
    let mut guard = sim.lock();
    let chat = appchat_mut(&mut guard.corps, &corp_id, &chatid)?;
    if chat.userlist.contains(&userid) {
        return Err(AdminError::new(StatusCode::CONFLICT, format!("{userid} is already a member")));
    }
    chat.userlist.push(userid);
    Ok(Json(chat.clone()))
}

async fn admin_remove_appchat_member(
    State(sim): State<SharedSim>,
    Path((corp_id, chatid, userid)): Path<(String, String, String)>,
) -> Result<Json<SimAppChat>, AdminError> {
    let mut guard = sim.lock();
    let chat = appchat_mut(&mut guard.corps, &corp_id, &chatid)?;
    let before = chat.userlist.len();
    chat.userlist.retain(|u| *u != userid);
    if chat.userlist.len() == before {
        return Err(AdminError::new(StatusCode::NOT_FOUND, format!("{userid} is not a member")));
    }
    Ok(Json(chat.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_start_at_local_midnight() {
        // 2019-04-03 21:00 CST floors to 2019-04-03 00:00 CST (the documented example).
        assert_eq!(floor_to_day(1554296400), 1554220800);
        assert_eq!(floor_to_day(1554220800), 1554220800);
        assert_eq!(floor_to_day(1554220799), 1554220800 - DAY);
    }

    #[test]
    fn stat_data_counts_new_over_the_days_and_totals_at_the_end() {
        let day = 1554220800;
        let member = |t| WecomMember {
            userid: format!("u{t}"),
            member_type: 2,
            unionid: None,
            join_time: t,
            join_scene: 3,
            invitor: None,
            group_nickname: None,
            name: None,
            state: None,
        };
        let group = |created, joins: &[i64]| SimGroup {
            chat_id: format!("c{created}"),
            name: String::new(),
            owner: "o".into(),
            create_time: created,
            notice: String::new(),
            member_list: joins.iter().map(|t| member(*t)).collect(),
            admin_list: vec![],
            member_version: None,
            dismissed: false,
            status: 0,
        };
        let groups = [group(day - 10, &[day - 10, day + 5, day + DAY + 5]), group(day + 100, &[day + 100])];
        let d = stat_data(groups.iter(), day, day);
        assert_eq!((d.new_chat_cnt, d.chat_total, d.new_member_cnt, d.member_total), (1, 2, 2, 3));
        let d = stat_data(groups.iter(), day - DAY, day + DAY);
        assert_eq!((d.new_chat_cnt, d.chat_total, d.new_member_cnt, d.member_total), (2, 2, 4, 4));
    }
}
