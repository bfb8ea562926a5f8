//! The admin API under `/sim/tim/`: change groups (optionally sending Tencent's callback for the
//! change), inject faults, read the call counts.
//!
//! Every change route takes the query `callback=true` (send the matching callback to the app's
//! `callback_url`; default false), `event_time=number|string` (the form of `EventTime`; default
//! number) and `operator=ACCOUNT` (`Operator_Account`; default the app admin, or the member
//! itself for a `Quit`). It answers `{"group": <the group now>, "callback": <report or null>}`.
//! Admin errors are plain HTTP statuses with `{"error": "…"}`; a change that asks for a callback
//! when the app has no `callback_url` is refused (409) before anything changes.

use super::*;
use callback::*;

#[derive(Debug)]
pub(super) struct AdminFail {
    status: StatusCode,
    message: String,
}

fn fail(status: StatusCode, message: impl Into<String>) -> AdminFail {
    AdminFail { status, message: message.into() }
}

impl IntoResponse for AdminFail {
    fn into_response(self) -> Response {
        (self.status, Json(serde_json::json!({ "error": self.message }))).into_response()
    }
}

/// Parses admin bodies without insisting on a content type, so plain `curl -d` works.
fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, AdminFail> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| fail(StatusCode::BAD_REQUEST, e.to_string()))
}

fn app_id(app: &str) -> Result<u64, AdminFail> {
    app.parse().map_err(|_| fail(StatusCode::BAD_REQUEST, format!("{app:?} is not an SDKAppID")))
}

fn app_mut(tim: &mut TimSim, sdk_app_id: u64) -> Result<&mut App, AdminFail> {
    tim.apps.get_mut(&sdk_app_id).ok_or_else(|| fail(StatusCode::NOT_FOUND, format!("no tim app {sdk_app_id}")))
}

fn live_group_mut<'a>(app: &'a mut App, group_id: &str) -> Result<&'a mut Group, AdminFail> {
    app.groups
        .get_mut(group_id)
        .filter(|g| !g.now.destroyed)
        .ok_or_else(|| fail(StatusCode::NOT_FOUND, format!("no live group {group_id}")))
}

/// The callback options of a change, from its query string.
struct Notify {
    callback: bool,
    event_time: TimEventTime,
    operator: Option<String>,
}

impl Notify {
    fn parse(query: &Option<String>) -> Result<Self, AdminFail> {
        let mut notify = Notify { callback: false, event_time: TimEventTime::Number, operator: None };
        let pairs = url::form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes());
        for (key, value) in pairs {
            match (&*key, &*value) {
                ("callback", "true" | "1") => notify.callback = true,
                ("callback", "false" | "0") => notify.callback = false,
                ("event_time", "number") => notify.event_time = TimEventTime::Number,
                ("event_time", "string") => notify.event_time = TimEventTime::String,
                ("operator", op) if !op.is_empty() => notify.operator = Some(op.to_owned()),
                _ => return Err(fail(StatusCode::BAD_REQUEST, format!("bad query parameter {key}={value}"))),
            }
        }
        Ok(notify)
    }

    fn event_time(&self) -> EventTimeValue {
        let ms = unix_now_ms();
        match self.event_time {
            TimEventTime::Number => EventTimeValue::Number(ms),
            TimEventTime::String => EventTimeValue::Text(ms),
        }
    }

    /// Refuses before any change if a callback is asked for and cannot be sent.
    fn check(&self, app: &App, sdk_app_id: u64) -> Result<(), AdminFail> {
        if self.callback && app.callback_url.is_none() {
            return Err(fail(
                StatusCode::CONFLICT,
                format!("tim app {sdk_app_id} has no callback_url; PUT /sim/tim/apps/{sdk_app_id}/callback_url first"),
            ));
        }
        Ok(())
    }
}

/// Sends the callback (outside the lock) and answers the change.
async fn finish(sim: &SharedSim, group: TimGroup, outgoing: Option<Outgoing>) -> Json<TimChange> {
    let callback = match outgoing {
        Some(outgoing) => {
            let report = outgoing.deliver().await;
            sim.lock().tim.stats.callbacks_sent += 1;
            Some(report)
        }
        None => None,
    };
    Json(TimChange { group, callback })
}

// ---------------------------------------------------------------------------------------------
// Apps and groups
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CallbackUrlBody {
    url: Option<String>,
}

/// `PUT /sim/tim/apps/{app}/callback_url` with `{"url": "http://…"}` or `{"url": null}`.
pub(super) async fn set_callback_url(
    State(sim): State<SharedSim>,
    Path(app): Path<String>,
    body: Bytes,
) -> Result<StatusCode, AdminFail> {
    let sdk_app_id = app_id(&app)?;
    let request: CallbackUrlBody = parse_body(&body)?;
    if let Some(url) = &request.url {
        check_url(url).map_err(|e| fail(StatusCode::BAD_REQUEST, e))?;
    }
    let mut sim = sim.lock();
    app_mut(&mut sim.tim, sdk_app_id)?.callback_url = request.url;
    Ok(StatusCode::NO_CONTENT)
}

/// Creates, replaces or re-creates (if destroyed) a group. The body is a `GroupInfo` entry
/// (`GroupId` may be left out). Creating may send `Group.CallbackAfterCreateGroup`; replacing is
/// no Tencent operation and sends nothing (asking for a callback is refused).
pub(super) async fn put_group(
    State(sim): State<SharedSim>,
    Path((app, group_id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Json<TimChange>, AdminFail> {
    let sdk_app_id = app_id(&app)?;
    let notify = Notify::parse(&query)?;
    let mut value: serde_json::Value = parse_body(&body)?;
    if let Some(object) = value.as_object_mut() {
        object.entry("GroupId").or_insert_with(|| group_id.clone().into());
    }
    let mut group: TimGroup = parse_body(value.to_string().as_bytes())?;
    if group.group_id != group_id {
        return Err(fail(StatusCode::BAD_REQUEST, "GroupId in the body differs from the path"));
    }
    if group.destroyed {
        return Err(fail(StatusCode::BAD_REQUEST, "destroy a group with DELETE, not SimDestroyed"));
    }
    group.normalise(sdk_app_id).map_err(|e| fail(StatusCode::BAD_REQUEST, e))?;
    let (answer, outgoing) = put_group_locked(&sim, sdk_app_id, group, &notify)?;
    Ok(finish(&sim, answer, outgoing).await)
}

fn put_group_locked(
    sim: &SharedSim,
    sdk_app_id: u64,
    group: TimGroup,
    notify: &Notify,
) -> Result<(TimGroup, Option<Outgoing>), AdminFail> {
    let group_id = group.group_id.clone();
    let mut guard = sim.lock();
    let tim = &mut guard.tim;
    let seq = tim.next_seq + 1;
    let http = tim.http.clone();
    let app = app_mut(tim, sdk_app_id)?;
    notify.check(app, sdk_app_id)?;
    if let Some(existing) = app.groups.get_mut(&group_id).filter(|g| !g.now.destroyed) {
        if notify.callback {
            return Err(fail(
                StatusCode::BAD_REQUEST,
                "replacing a group sends no callback; use PATCH or the member routes",
            ));
        }
        existing.change(|now| *now = group);
        return Ok((existing.now.clone(), None));
    }
    let outgoing = if notify.callback {
        let operator = notify.operator.as_deref().unwrap_or(&app.identifier);
        let body = CreateGroup {
            callback_command: "Group.CallbackAfterCreateGroup",
            group_id: &group.group_id,
            operator_account: operator,
            owner_account: &group.owner_account,
            group_type: &group.group_type,
            name: &group.name,
            member_list: accounts(
                group.member_list.iter().map(|m| m.member_account.as_str()).filter(|a| *a != group.owner_account),
            ),
            event_time: notify.event_time(),
        };
        app.outgoing(sdk_app_id, body.callback_command, &body, &http)
    } else {
        None
    };
    let answer = group.clone();
    app.groups.insert(group_id, Group { seq, now: group, history: Vec::new() });
    guard.tim.next_seq = seq;
    Ok((answer, outgoing))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GroupPatch {
    #[serde(rename = "Name")]
    name: Option<String>,
    #[serde(rename = "Introduction")]
    introduction: Option<String>,
    #[serde(rename = "Notification")]
    notification: Option<String>,
    #[serde(rename = "FaceUrl")]
    face_url: Option<String>,
    /// Must be a member; the old owner becomes a `Member`.
    #[serde(rename = "Owner_Account")]
    owner_account: Option<String>,
}

/// Changes name, introduction, notification, face URL or owner. Sends
/// `Group.CallbackAfterGroupInfoChanged` with the changed fields among the first four; an owner
/// change alone sends no callback, as on Tencent (protocols-2 B2.2).
pub(super) async fn patch_group(
    State(sim): State<SharedSim>,
    Path((app, group_id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Json<TimChange>, AdminFail> {
    let sdk_app_id = app_id(&app)?;
    let notify = Notify::parse(&query)?;
    let patch: GroupPatch = parse_body(&body)?;
    let info_changed = patch.name.is_some()
        || patch.introduction.is_some()
        || patch.notification.is_some()
        || patch.face_url.is_some();
    if !info_changed && patch.owner_account.is_none() {
        return Err(fail(StatusCode::BAD_REQUEST, "the patch changes nothing"));
    }
    let (answer, outgoing) = patch_group_locked(&sim, sdk_app_id, &group_id, &patch, info_changed, &notify)?;
    Ok(finish(&sim, answer, outgoing).await)
}

fn patch_group_locked(
    sim: &SharedSim,
    sdk_app_id: u64,
    group_id: &str,
    patch: &GroupPatch,
    info_changed: bool,
    notify: &Notify,
) -> Result<(TimGroup, Option<Outgoing>), AdminFail> {
    let mut guard = sim.lock();
    let tim = &mut guard.tim;
    let http = tim.http.clone();
    let app = app_mut(tim, sdk_app_id)?;
    notify.check(app, sdk_app_id)?;
    let identifier = app.identifier.clone();
    let group = live_group_mut(app, group_id)?;
    if let Some(owner) = &patch.owner_account {
        if !group.now.member_list.iter().any(|m| &m.member_account == owner) {
            return Err(fail(StatusCode::BAD_REQUEST, format!("new owner {owner} is not a member")));
        }
    }
    let now = unix_now();
    group.change(|g| {
        if let Some(name) = &patch.name {
            g.name = name.clone();
        }
        if let Some(introduction) = &patch.introduction {
            g.introduction = introduction.clone();
        }
        if let Some(notification) = &patch.notification {
            g.notification = notification.clone();
        }
        if let Some(face_url) = &patch.face_url {
            g.face_url = face_url.clone();
        }
        if let Some(owner) = &patch.owner_account {
            for m in &mut g.member_list {
                if &m.member_account == owner {
                    m.role = "Owner".into();
                } else if m.role == "Owner" {
                    m.role = "Member".into();
                }
            }
            g.owner_account = owner.clone();
        }
        g.info_seq += 1;
        g.last_info_time = now;
    });
    let answer = group.now.clone();
    let outgoing = if notify.callback && info_changed {
        let body = GroupInfoChanged {
            callback_command: "Group.CallbackAfterGroupInfoChanged",
            group_id: &answer.group_id,
            group_type: &answer.group_type,
            operator_account: notify.operator.as_deref().unwrap_or(&identifier),
            name: patch.name.as_deref(),
            introduction: patch.introduction.as_deref(),
            notification: patch.notification.as_deref(),
            face_url: patch.face_url.as_deref(),
            event_time: notify.event_time(),
        };
        app.outgoing(sdk_app_id, body.callback_command, &body, &http)
    } else {
        None
    };
    Ok((answer, outgoing))
}

/// Destroys the group; may send `Group.CallbackAfterGroupDestroyed` (with `MemberList` unless
/// the group is a Community). Destroying a destroyed group changes and sends nothing, so retries
/// are safe.
pub(super) async fn destroy_group(
    State(sim): State<SharedSim>,
    Path((app, group_id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Json<TimChange>, AdminFail> {
    let sdk_app_id = app_id(&app)?;
    let notify = Notify::parse(&query)?;
    let (answer, outgoing) = destroy_group_locked(&sim, sdk_app_id, &group_id, &notify)?;
    Ok(finish(&sim, answer, outgoing).await)
}

fn destroy_group_locked(
    sim: &SharedSim,
    sdk_app_id: u64,
    group_id: &str,
    notify: &Notify,
) -> Result<(TimGroup, Option<Outgoing>), AdminFail> {
    let mut guard = sim.lock();
    let tim = &mut guard.tim;
    let http = tim.http.clone();
    let app = app_mut(tim, sdk_app_id)?;
    notify.check(app, sdk_app_id)?;
    let identifier = app.identifier.clone();
    let group =
        app.groups.get_mut(group_id).ok_or_else(|| fail(StatusCode::NOT_FOUND, format!("no group {group_id}")))?;
    if group.now.destroyed {
        return Ok((group.now.clone(), None));
    }
    group.change(|g| g.destroyed = true);
    let answer = group.now.clone();
    let outgoing = if notify.callback {
        let g = &answer;
        let body = GroupDestroyed {
            callback_command: "Group.CallbackAfterGroupDestroyed",
            operator_account: notify.operator.as_deref().unwrap_or(&identifier),
            group_id: &g.group_id,
            group_type: &g.group_type,
            owner_account: &g.owner_account,
            name: &g.name,
            member_list: (!g.is_community()).then(|| accounts(g.member_list.iter().map(|m| m.member_account.as_str()))),
            event_time: notify.event_time(),
        };
        app.outgoing(sdk_app_id, body.callback_command, &body, &http)
    } else {
        None
    };
    Ok((answer, outgoing))
}

// ---------------------------------------------------------------------------------------------
// Members
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AddMembers {
    /// `MemberList` entries; `JoinTime` 0 or absent means now, `Role` defaults to `Member`.
    members: Vec<TimMember>,
    #[serde(default)]
    join_type: Option<TimJoinType>,
}

/// `POST …/members` with `{"members": [...], "join_type": "Invited"|"Apply"}`; may send
/// `Group.CallbackAfterNewMemberJoin` (default `JoinType` Invited).
pub(super) async fn add_members(
    State(sim): State<SharedSim>,
    Path((app, group_id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Json<TimChange>, AdminFail> {
    let sdk_app_id = app_id(&app)?;
    let notify = Notify::parse(&query)?;
    let request: AddMembers = parse_body(&body)?;
    let join_type = request.join_type.unwrap_or(TimJoinType::Invited);
    let mut members = request.members;
    if members.is_empty() {
        return Err(fail(StatusCode::BAD_REQUEST, "no members to add"));
    }
    let now = unix_now();
    let mut seen = HashSet::new();
    for m in &mut members {
        m.role = m.role.trim().to_owned();
        if m.member_account.is_empty() || !seen.insert(m.member_account.clone()) {
            return Err(fail(
                StatusCode::BAD_REQUEST,
                format!("empty or repeated Member_Account {:?}", m.member_account),
            ));
        }
        if !matches!(m.role.as_str(), "Admin" | "Member") {
            return Err(fail(
                StatusCode::BAD_REQUEST,
                format!("Role {:?}: add Admins or Members; PATCH Owner_Account", m.role),
            ));
        }
        if m.join_time == 0 {
            m.join_time = now;
        }
    }
    let (answer, outgoing) = add_members_locked(&sim, sdk_app_id, &group_id, members, join_type, &notify)?;
    Ok(finish(&sim, answer, outgoing).await)
}

fn add_members_locked(
    sim: &SharedSim,
    sdk_app_id: u64,
    group_id: &str,
    members: Vec<TimMember>,
    join_type: TimJoinType,
    notify: &Notify,
) -> Result<(TimGroup, Option<Outgoing>), AdminFail> {
    let mut guard = sim.lock();
    let tim = &mut guard.tim;
    let http = tim.http.clone();
    let app = app_mut(tim, sdk_app_id)?;
    notify.check(app, sdk_app_id)?;
    let identifier = app.identifier.clone();
    let group = live_group_mut(app, group_id)?;
    if let Some(m) = members.iter().find(|m| group.now.member_list.iter().any(|o| o.member_account == m.member_account))
    {
        return Err(fail(StatusCode::CONFLICT, format!("{} is already a member", m.member_account)));
    }
    let accounts_added: Vec<String> = members.iter().map(|m| m.member_account.clone()).collect();
    group.change(|g| {
        g.member_list.extend(members);
        g.next_msg_seq += 1;
    });
    let answer = group.now.clone();
    let outgoing = if notify.callback {
        let body = NewMemberJoin {
            callback_command: "Group.CallbackAfterNewMemberJoin",
            group_id: &answer.group_id,
            group_type: &answer.group_type,
            join_type: join_type.as_str(),
            operator_account: notify.operator.as_deref().unwrap_or(&identifier),
            new_member_list: accounts(accounts_added.iter().map(String::as_str)),
            event_time: notify.event_time(),
        };
        app.outgoing(sdk_app_id, body.callback_command, &body, &http)
    } else {
        None
    };
    Ok((answer, outgoing))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RemoveMembers {
    accounts: Vec<String>,
    #[serde(default)]
    exit_type: Option<TimExitType>,
}

/// `DELETE …/members` with `{"accounts": [...], "exit_type": "Kicked"|"Quit"}`; may send
/// `Group.CallbackAfterMemberExit` (default `ExitType` Kicked). A `Quit` names one member, who is
/// also the default operator. The owner cannot be removed (transfer ownership first).
pub(super) async fn remove_members(
    State(sim): State<SharedSim>,
    Path((app, group_id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Json<TimChange>, AdminFail> {
    let sdk_app_id = app_id(&app)?;
    let notify = Notify::parse(&query)?;
    let request: RemoveMembers = parse_body(&body)?;
    let exit_type = request.exit_type.unwrap_or(TimExitType::Kicked);
    let leaving = request.accounts;
    let unique: HashSet<&String> = leaving.iter().collect();
    if leaving.is_empty() || unique.len() != leaving.len() {
        return Err(fail(StatusCode::BAD_REQUEST, "accounts must be non-empty and without repeats"));
    }
    if exit_type == TimExitType::Quit && leaving.len() != 1 {
        return Err(fail(StatusCode::BAD_REQUEST, "a Quit is one member leaving by themselves"));
    }
    let (answer, outgoing) = remove_members_locked(&sim, sdk_app_id, &group_id, &leaving, exit_type, &notify)?;
    Ok(finish(&sim, answer, outgoing).await)
}

fn remove_members_locked(
    sim: &SharedSim,
    sdk_app_id: u64,
    group_id: &str,
    leaving: &[String],
    exit_type: TimExitType,
    notify: &Notify,
) -> Result<(TimGroup, Option<Outgoing>), AdminFail> {
    let unique: HashSet<&String> = leaving.iter().collect();
    let mut guard = sim.lock();
    let tim = &mut guard.tim;
    let http = tim.http.clone();
    let app = app_mut(tim, sdk_app_id)?;
    notify.check(app, sdk_app_id)?;
    let identifier = app.identifier.clone();
    let group = live_group_mut(app, group_id)?;
    for account in leaving {
        if !group.now.member_list.iter().any(|m| &m.member_account == account) {
            return Err(fail(StatusCode::NOT_FOUND, format!("{account} is not a member")));
        }
        if *account == group.now.owner_account {
            return Err(fail(StatusCode::BAD_REQUEST, format!("{account} owns the group; PATCH Owner_Account first")));
        }
    }
    group.change(|g| {
        g.member_list.retain(|m| !unique.contains(&m.member_account));
        g.next_msg_seq += 1;
    });
    let answer = group.now.clone();
    let outgoing = if notify.callback {
        let default_operator = match exit_type {
            TimExitType::Quit => leaving[0].as_str(),
            TimExitType::Kicked => identifier.as_str(),
        };
        let body = MemberExit {
            callback_command: "Group.CallbackAfterMemberExit",
            group_id: &answer.group_id,
            group_type: &answer.group_type,
            exit_type: exit_type.as_str(),
            operator_account: notify.operator.as_deref().unwrap_or(default_operator),
            exit_member_list: accounts(leaving.iter().map(String::as_str)),
            event_time: notify.event_time(),
        };
        app.outgoing(sdk_app_id, body.callback_command, &body, &http)
    } else {
        None
    };
    Ok((answer, outgoing))
}

// ---------------------------------------------------------------------------------------------
// Faults and stats
// ---------------------------------------------------------------------------------------------

/// `POST /sim/tim/faults`. Unknown keys are refused so that a typo does not silently inject
/// nothing.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TimFaultRequest {
    stale_fetches: Option<u32>,
    /// Answered instead of the call, e.g. 10006 (frequency limit) or 10002 (internal, retry).
    error_code: Option<i64>,
    http_status: Option<u16>,
    /// How many calls `error_code` / `http_status` affect; default 1, 0 clears them.
    count: Option<u32>,
    /// Restricts `error_code` / `http_status` to one API (`get_group_info`, ...).
    api: Option<TimApi>,
    latency_ms: Option<u64>,
    /// Unix seconds: sigs issued before are refused as expired (70001); 0 clears.
    expire_usersig_before: Option<i64>,
}

pub(super) async fn faults(State(sim): State<SharedSim>) -> Json<TimFaults> {
    Json(sim.lock().tim.faults.clone())
}

/// Sets the faults named in the body, leaving the others as they are; answers all pending faults.
pub(super) async fn set_faults(State(sim): State<SharedSim>, body: Bytes) -> Result<Json<TimFaults>, AdminFail> {
    let request: TimFaultRequest = parse_body(&body)?;
    let count = request.count.unwrap_or(1);
    if request.error_code == Some(0) {
        return Err(fail(StatusCode::BAD_REQUEST, "error_code 0 is success, not a fault"));
    }
    if request.http_status.is_some_and(|s| !(400..=599).contains(&s)) {
        return Err(fail(StatusCode::BAD_REQUEST, "http_status must be within 400..=599"));
    }
    if request.api.is_some() && request.error_code.is_none() && request.http_status.is_none() {
        return Err(fail(StatusCode::BAD_REQUEST, "api narrows error_code or http_status; give one"));
    }
    let mut sim = sim.lock();
    let faults = &mut sim.tim.faults;
    if let Some(n) = request.stale_fetches {
        faults.stale_fetches = n;
    }
    if let Some(code) = request.error_code {
        faults.error_code = (count > 0).then_some(TimPending { value: code, count, api: request.api });
    }
    if let Some(status) = request.http_status {
        faults.http_status = (count > 0).then_some(TimPending { value: status, count, api: request.api });
    }
    if let Some(ms) = request.latency_ms {
        faults.latency_ms = ms;
    }
    if let Some(before) = request.expire_usersig_before {
        faults.expire_usersig_before = (before > 0).then_some(before);
    }
    Ok(Json(faults.clone()))
}

pub(super) async fn clear_faults(State(sim): State<SharedSim>) -> StatusCode {
    sim.lock().tim.faults = TimFaults::default();
    StatusCode::NO_CONTENT
}

pub(super) async fn stats(State(sim): State<SharedSim>) -> Json<TimStats> {
    Json(sim.tim_stats())
}

pub(super) async fn reset_stats(State(sim): State<SharedSim>) -> StatusCode {
    sim.lock().tim.stats = TimStats::default();
    StatusCode::NO_CONTENT
}
