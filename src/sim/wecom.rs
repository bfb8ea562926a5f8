//! The WeCom API as the simulator plays it: gettoken, groupchat/get and groupchat/list (the
//! administration calls are in `wecom_admin`).

use super::*;

#[derive(Debug, Clone, Copy)]
pub(super) enum Api {
    GetToken,
    GroupchatGet,
    GroupchatList,
    /// The administration calls of `wecom_admin` (not counted in [`SimStats`]).
    Admin,
}

/// Why a WeCom API call did not succeed.
#[derive(Debug)]
pub(super) enum ApiError {
    Wecom {
        errcode: i64,
        errmsg: Cow<'static, str>,
    },
    /// An injected transport-level failure.
    Http(StatusCode),
}

impl ApiError {
    pub(super) fn code(errcode: i64) -> Self {
        Self::Wecom { errcode, errmsg: Cow::Borrowed(errmsg_for(errcode)) }
    }
}

/// Short texts in the spirit of WeCom's; clients must key on `errcode`, never on these.
pub(super) fn errmsg_for(errcode: i64) -> &'static str {
    match errcode {
        -1 => "system busy",
        40001 => "invalid credential",
        40003 => "invalid userid",
        40013 => "invalid corpid",
        40014 => "invalid access_token",
        40050 => "chatid not found",
        40058 => "invalid Request Parameter",
        41001 => "access_token missing",
        41002 => "corpid missing",
        41004 => "corpsecret missing",
        42001 => "access_token expired",
        45009 => "api freq out of limit",
        45033 => "api concurrent out of limit",
        47001 => "data format error",
        81017 => "too many visible users, owner_filter required",
        40128 => "transfer too frequently",
        90500 => "the owner of this chat is not resigned",
        90501 => "chat is not external group chat",
        90502 => "the owner of this chat is resigned",
        90504 => "the new owner is the owner already",
        90507 => "the chat is being inherited",
        90508 => "the chat has been inherited",
        600018 => "invalid begin or end time",
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
pub(super) struct ErrorAnswer<'a> {
    errcode: i64,
    errmsg: &'a str,
}

/// A successful WeCom answer: `errcode` and `errmsg` first, then the payload's fields. Answers
/// are typed structs rather than `json!` values because `serde_json::Value` sorts its keys, and
/// the field order should match WeCom's.
pub(super) fn wecom_ok(payload: impl Serialize) -> Response {
    let mut response = Json(Success::new(payload)).into_response();
    response.extensions_mut().insert(Errcode(0));
    response
}

#[derive(Serialize)]
pub(super) struct Success<T> {
    errcode: i64,
    errmsg: &'static str,
    #[serde(flatten)]
    payload: T,
}

impl<T> Success<T> {
    pub(super) fn new(payload: T) -> Self {
        Self { errcode: 0, errmsg: "ok", payload }
    }
}

/// A query parameter; WeCom treats an empty value as a missing one.
pub(super) fn query_param(query: &Option<String>, key: &str) -> Option<String> {
    let query = query.as_deref()?;
    url::form_urlencoded::parse(query.as_bytes()).find(|(k, v)| k == key && !v.is_empty()).map(|(_, v)| v.into_owned())
}

impl SharedSim {
    /// What every API call goes through first: counting, latency, then injected failures.
    /// Injected errcodes and HTTP statuses hit every call but gettoken, so that a test's "next N
    /// calls fail" means the calls it is watching, not an interleaved gettoken.
    pub(super) async fn begin_call(&self, api: Api) -> Result<(), ApiError> {
        let latency_ms = {
            let mut sim = self.lock();
            match api {
                Api::GetToken => {
                    sim.stats.gettoken += 1;
                    SimCallTimes::record(&mut sim.call_times.gettoken);
                }
                Api::GroupchatGet => {
                    sim.stats.groupchat_get += 1;
                    SimCallTimes::record(&mut sim.call_times.groupchat_get);
                }
                Api::GroupchatList => {
                    sim.stats.groupchat_list += 1;
                    SimCallTimes::record(&mut sim.call_times.groupchat_list);
                }
                Api::Admin => {}
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
    pub(super) fn authorize(&self, query: &Option<String>) -> Result<String, ApiError> {
        let token = query_param(query, "access_token").ok_or(ApiError::code(41001))?;
        let token = self.tokens.get(&token).ok_or(ApiError::code(40014))?;
        if !token.is_valid(Instant::now()) {
            return Err(ApiError::code(42001));
        }
        Ok(token.corp_id.clone())
    }
}

/// WeCom answers malformed bodies with 47001 rather than an HTTP error.
pub(super) fn parse_api_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|_| ApiError::code(47001))
}

pub(super) async fn gettoken(State(sim): State<SharedSim>, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    sim.begin_call(Api::GetToken).await?;
    let corp_id = query_param(&query, "corpid").ok_or(ApiError::code(41002))?;
    let secret = query_param(&query, "corpsecret").ok_or(ApiError::code(41004))?;
    let mut guard = sim.lock();
    *guard.call_times.gettoken_per_corp.entry(corp_id.clone()).or_default() += 1;
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
    let expires_in = guard.faults.token_expires_in.unwrap_or(expires_in);
    Ok(wecom_ok(TokenAnswer { access_token: token, expires_in }))
}

#[derive(Serialize)]
pub(super) struct TokenAnswer {
    access_token: String,
    expires_in: u64,
}

#[derive(Deserialize)]
pub(super) struct GetRequest {
    chat_id: String,
    #[serde(default)]
    need_name: i64,
}

pub(super) async fn groupchat_get(
    State(sim): State<SharedSim>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    sim.record("externalcontact/groupchat/get", &query, &body);
    sim.begin_call(Api::GroupchatGet).await?;
    let (answer, delay) = {
        let mut sim = sim.lock();
        let answer = groupchat_get_answer(&mut sim, &query, &body)?;
        (answer, take_one(&mut sim.faults.answer_delay))
    };
    if let Some(ms) = delay {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    Ok(answer)
}

fn groupchat_get_answer(sim: &mut Sim, query: &Option<String>, body: &[u8]) -> Result<Response, ApiError> {
    let corp_id = sim.authorize(query)?;
    let request: GetRequest = parse_api_body(body)?;
    // WeCom's code for an unknown or dismissed chat is undocumented (see protocols.md §3.4 and
    // §6.2); 40050 ("chatid不存在", the appchat meaning) is the closest documented one.
    let unknown_chat = || ApiError::Wecom { errcode: 40050, errmsg: Cow::Borrowed("chat_id not found") };
    let group = sim
        .corps
        .get(&corp_id)
        .and_then(|corp| corp.groups.get(&request.chat_id))
        .filter(|g| !g.now.dismissed)
        .ok_or_else(unknown_chat)?;
    let lagging = sim.faults.stale_until.is_some_and(|until| Instant::now() < until);
    let mut answer = if sim.faults.stale_fetches > 0 || lagging { group.stale_view() } else { group.now.clone() };
    // groupchat/list reports the follow-up status; groupchat/get does not.
    answer.status = 0;
    // Only answered groups use up a stale fetch: an error is not a stale answer.
    sim.faults.stale_fetches = sim.faults.stale_fetches.saturating_sub(1);
    if request.need_name != 1 {
        answer.member_list.iter_mut().for_each(|m| m.name = None);
    }
    if sim.faults.wrong_chat_id > 0 {
        sim.faults.wrong_chat_id -= 1;
        answer.chat_id = format!("{}-other", answer.chat_id);
    }
    if let Some(padding) = sim.faults.oversized_answer_bytes {
        // Valid JSON still (trailing whitespace), only too large to be read.
        let mut body = serde_json::to_vec(&Success::new(GetAnswer { group_chat: answer })).unwrap_or_default();
        body.resize(body.len() + padding, b' ');
        return Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response());
    }
    Ok(wecom_ok(GetAnswer { group_chat: answer }))
}

#[derive(Serialize)]
pub(super) struct GetAnswer {
    group_chat: SimGroup,
}

#[derive(Deserialize)]
pub(super) struct ListRequest {
    /// 0 all (no filter); 1 owner resigned, 2 inheritance in progress, 3 inherited.
    #[serde(default)]
    status_filter: i64,
    #[serde(default)]
    owner_filter: Option<OwnerFilter>,
    #[serde(default)]
    cursor: String,
    limit: Option<i64>,
}

#[derive(Deserialize)]
pub(super) struct OwnerFilter {
    #[serde(default)]
    pub(super) userid_list: Vec<String>,
}

#[derive(Serialize)]
pub(super) struct ListAnswer {
    group_chat_list: Vec<ListedChat>,
    next_cursor: String,
}

#[derive(Serialize)]
pub(super) struct ListedChat {
    chat_id: String,
    status: i64,
}

pub(super) async fn groupchat_list(
    State(sim): State<SharedSim>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    sim.record("externalcontact/groupchat/list", &query, &body);
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
    let mut page: Vec<(&str, i64)> = corp
        .groups
        .values()
        .map(|g| &g.now)
        .filter(|g| !g.dismissed && (request.status_filter == 0 || g.status == request.status_filter))
        .filter(|g| owners.is_empty() || owners.contains(&g.owner))
        .filter(|g| after.as_deref().is_none_or(|after| g.chat_id.as_str() > after))
        .map(|g| (g.chat_id.as_str(), g.status))
        .take(limit as usize + 1)
        .collect();
    let next_cursor = if page.len() > limit as usize {
        page.truncate(limit as usize);
        page.last().map(|(last, _)| encode_cursor(last)).unwrap_or_default()
    } else {
        String::new()
    };
    let next_cursor = if sim.faults.repeat_cursor && !request.cursor.is_empty() { request.cursor } else { next_cursor };
    let group_chat_list =
        page.into_iter().map(|(chat_id, status)| ListedChat { chat_id: chat_id.to_owned(), status }).collect();
    Ok(wecom_ok(ListAnswer { group_chat_list, next_cursor }))
}

/// Cursors name the last chat_id of the previous page, so paging stays correct while groups are
/// added or dismissed between pages. Encoded only to keep clients from relying on the content.
pub(super) fn encode_cursor(last_chat_id: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(last_chat_id)
}

/// `Some(None)` for the first page, `None` for a cursor this simulator never issued.
pub(super) fn decode_cursor(cursor: &str) -> Option<Option<String>> {
    if cursor.is_empty() {
        return Some(None);
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor).ok()?;
    String::from_utf8(bytes).ok().map(Some)
}
