//! The admin API under `/sim/`: change groups, inject faults, read the call counts.

use super::*;

#[derive(Debug)]
pub(super) struct AdminError {
    status: StatusCode,
    message: String,
}

impl AdminError {
    pub(super) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        (self.status, Json(serde_json::json!({ "error": self.message }))).into_response()
    }
}

/// Parses admin bodies without insisting on a content type, so plain `curl -d` works.
pub(super) fn parse_admin_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, AdminError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| AdminError::new(StatusCode::BAD_REQUEST, e.to_string()))
}

#[derive(Serialize)]
pub(super) struct VersionAnswer {
    member_version: String,
}

// Free functions over `corps` rather than `Sim` methods, so that callers can borrow
// `Sim::versions` alongside the group.
pub(super) fn corp_mut<'a>(corps: &'a mut BTreeMap<String, Corp>, corp_id: &str) -> Result<&'a mut Corp, AdminError> {
    corps.get_mut(corp_id).ok_or_else(|| AdminError::new(StatusCode::NOT_FOUND, format!("no corp {corp_id}")))
}

/// A group that still exists: dismissed groups cannot be changed, only re-created by PUT.
pub(super) fn live_group_mut<'a>(
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

/// The state file, secrets masked (`***`).
pub(super) async fn admin_state(State(sim): State<SharedSim>) -> Json<SimState> {
    Json(sim.snapshot().masked())
}

/// Creates, replaces or re-creates (if dismissed) a group. The body is WeCom's `group_chat`
/// object; `chat_id` may be left out, and any `member_version` in it is replaced by a fresh one.
pub(super) async fn admin_put_group(
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
pub(super) struct GroupPatch {
    name: Option<String>,
    owner: Option<String>,
    notice: Option<String>,
    /// The follow-up status groupchat/list reports (0..=3), e.g. 1 when the owner resigns.
    status: Option<i64>,
}

/// Changes group attributes; like on WeCom, that leaves `member_version` alone.
pub(super) async fn admin_patch_group(
    State(sim): State<SharedSim>,
    Path((corp_id, chat_id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<SimGroup>, AdminError> {
    let patch: GroupPatch = parse_admin_body(&body)?;
    if patch.status.is_some_and(|s| !(0..=3).contains(&s)) {
        return Err(AdminError::new(StatusCode::BAD_REQUEST, "status must be within 0..=3"));
    }
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
    if let Some(status) = patch.status {
        group.status = status;
    }
    Ok(Json(group.clone()))
}

/// Dismisses the group. Dismissing a dismissed group is not an error, so retries are safe.
pub(super) async fn admin_dismiss(
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

pub(super) async fn admin_add_member(
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

pub(super) async fn admin_remove_member(
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

pub(super) async fn admin_faults(State(sim): State<SharedSim>) -> Json<Faults> {
    Json(sim.lock().faults.clone())
}

/// Sets the faults named in the body, leaving the others as they are; answers all pending faults.
pub(super) async fn admin_set_faults(State(sim): State<SharedSim>, body: Bytes) -> Result<Json<Faults>, AdminError> {
    let request: FaultRequest = parse_admin_body(&body)?;
    let count = request.count.unwrap_or(1);
    if request.errcode == Some(0) {
        return Err(AdminError::new(StatusCode::BAD_REQUEST, "errcode 0 is success, not a fault"));
    }
    if request.http_status.is_some_and(|s| !(400..=599).contains(&s)) {
        return Err(AdminError::new(StatusCode::BAD_REQUEST, "http_status must be within 400..=599"));
    }
    if request.oversized_answer_bytes.is_some_and(|n| n > MAX_OVERSIZED_ANSWER) {
        return Err(AdminError::new(StatusCode::BAD_REQUEST, "oversized_answer_bytes must be at most 64 MiB"));
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
    if let Some(ms) = request.answer_delay_ms {
        sim.faults.answer_delay = (count > 0 && ms > 0).then_some(Pending { value: ms, count });
    }
    if let Some(n) = request.wrong_chat_id {
        sim.faults.wrong_chat_id = n;
    }
    if let Some(ms) = request.stale_for_ms {
        sim.faults.stale_until = Some(Instant::now() + Duration::from_millis(ms));
    }
    if let Some(secs) = request.token_expires_in {
        sim.faults.token_expires_in = (secs > 0).then_some(secs);
    }
    if let Some(repeat) = request.repeat_cursor {
        sim.faults.repeat_cursor = repeat;
    }
    if let Some(bytes) = request.oversized_answer_bytes {
        sim.faults.oversized_answer_bytes = (bytes > 0).then_some(bytes);
    }
    // A one-off action rather than a standing fault: tokens issued afterwards work.
    if request.expire_tokens == Some(true) {
        sim.tokens.values_mut().for_each(|t| t.revoked = true);
    }
    Ok(Json(sim.faults.clone()))
}

pub(super) async fn admin_clear_faults(State(sim): State<SharedSim>) -> StatusCode {
    sim.lock().faults = Faults::default();
    StatusCode::NO_CONTENT
}

pub(super) async fn admin_stats(State(sim): State<SharedSim>) -> Json<SimStats> {
    Json(sim.stats())
}

pub(super) async fn admin_reset_stats(State(sim): State<SharedSim>) -> StatusCode {
    let mut sim = sim.lock();
    sim.stats = SimStats::default();
    sim.call_times = SimCallTimes::default();
    StatusCode::NO_CONTENT
}

pub(super) async fn admin_call_times(State(sim): State<SharedSim>) -> Json<SimCallTimes> {
    Json(sim.call_times())
}
