//! The DingTalk admin API under `/sim/dingtalk/`: change chats (and push the matching event when
//! asked), push raw events, inject faults, change settings, read stats and the event log.
//!
//! Admin errors are plain HTTP statuses with `{"error": "…"}`, as for WeCom. Change endpoints
//! answer `{"event_ids": [...]}`: the events pushed (empty unless `"push": true`).

use super::api::DtApi;
use super::events::{self, ChatEvent, DingtalkCasing, EventFacts};
use super::stream::NewEvent;
use super::*;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;

#[derive(Debug)]
pub(super) struct AdminError {
    status: StatusCode,
    message: String,
}

impl AdminError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }

    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        (self.status, Json(serde_json::json!({ "error": self.message }))).into_response()
    }
}

/// Parses an admin body without insisting on a content type; an empty body is `{}`.
fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, AdminError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) { b"{}".as_slice() } else { body };
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| AdminError::bad(e.to_string()))
}

#[derive(Serialize)]
pub(super) struct ChangeAnswer {
    event_ids: Vec<String>,
}

/// The push options every change endpoint takes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PushOptions {
    /// Push the matching event to the app's live connection(s).
    #[serde(default)]
    push: bool,
    #[serde(default)]
    casing: DingtalkCasing,
    /// The acting userid; default: the chat's owner (before the change).
    operator: Option<String>,
}

/// Applies `change` to a live (not dismissed) chat after recording its state, then pushes the
/// events it names if asked. `change` returns the events as (kind, operator, users, value).
fn change_chat(
    sim: &SharedSim,
    app_key: &str,
    chatid: &str,
    push: &PushOptions,
    change: impl FnOnce(&mut SimDingtalkChat, &str) -> Result<Vec<Change>, AdminError>,
) -> Result<Json<ChangeAnswer>, AdminError> {
    let mut guard = sim.lock();
    let dt = &mut guard.dingtalk;
    let app = dt.apps.get_mut(app_key).ok_or_else(|| no_app(app_key))?;
    let corp_id = app.corp_id.clone();
    let chat = app
        .chats
        .get_mut(chatid)
        .filter(|c| !c.now.is_dismissed())
        .ok_or_else(|| AdminError::new(StatusCode::NOT_FOUND, format!("no live chat {chatid} in app {app_key}")))?;
    let operator = push.operator.clone().unwrap_or_else(|| chat.now.owner.clone());
    let mut next = chat.now.clone();
    let changes = change(&mut next, &operator)?;
    chat.record();
    chat.now = next;
    let now = chat.now.clone();
    let mut event_ids = Vec::new();
    if push.push {
        let time_stamp = now_ms();
        for c in changes {
            let facts = EventFacts {
                kind: c.kind,
                time_stamp,
                chatid: &now.chatid,
                open_conversation_id: &now.open_conversation_id,
                corp_id: &corp_id,
                operator: &c.operator,
                users: &c.users,
                value: &c.value,
            };
            let event = NewEvent {
                event_type: c.kind.event_type().to_owned(),
                data: events::data(&facts, push.casing),
                event_id: None,
                extra_headers: Vec::new(),
            };
            event_ids.extend(dt.push(sim, app_key, event));
        }
    }
    Ok(Json(ChangeAnswer { event_ids }))
}

struct Change {
    kind: ChatEvent,
    operator: String,
    users: Vec<String>,
    value: String,
}

impl Change {
    fn new(kind: ChatEvent, operator: &str) -> Self {
        Self { kind, operator: operator.to_owned(), users: Vec::new(), value: String::new() }
    }
}

fn no_app(app_key: &str) -> AdminError {
    AdminError::new(StatusCode::NOT_FOUND, format!("no dingtalk app {app_key}"))
}

fn conflict(message: impl Into<String>) -> AdminError {
    AdminError::new(StatusCode::CONFLICT, message)
}

/// `GET .../chats/{chatid}`: the chat in the state-file format (dismissed ones too).
pub(super) async fn get_chat(
    State(sim): State<SharedSim>,
    Path((app_key, chatid)): Path<(String, String)>,
) -> Result<Json<SimDingtalkChat>, AdminError> {
    let guard = sim.lock();
    let app = guard.dingtalk.apps.get(&app_key).ok_or_else(|| no_app(&app_key))?;
    let chat = app
        .chats
        .get(&chatid)
        .ok_or_else(|| AdminError::new(StatusCode::NOT_FOUND, format!("no chat {chatid} in app {app_key}")))?;
    Ok(Json(chat.now.clone()))
}

/// `PUT .../chats/{chatid}`: creates, replaces or re-creates a chat from a state-file chat
/// (`chatid` may be left out). Replacing records the old state (for `stale_fetches`); it pushes
/// nothing, since DingTalk has no event for it.
pub(super) async fn put_chat(
    State(sim): State<SharedSim>,
    Path((app_key, chatid)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<SimDingtalkChat>, AdminError> {
    let mut value: serde_json::Value = parse_body(&body)?;
    if let Some(object) = value.as_object_mut() {
        object.entry("chatid").or_insert_with(|| chatid.clone().into());
    }
    let chat: SimDingtalkChat = parse_body(value.to_string().as_bytes())?;
    if chat.chatid != chatid {
        return Err(AdminError::bad("chatid in the body differs from the path"));
    }
    validate_chat(&app_key, &chat).map_err(|e| AdminError::bad(e.to_string()))?;
    let mut guard = sim.lock();
    let app = guard.dingtalk.apps.get_mut(&app_key).ok_or_else(|| no_app(&app_key))?;
    let clash =
        app.chats.values().any(|c| c.now.chatid != chatid && c.now.open_conversation_id == chat.open_conversation_id);
    if clash {
        return Err(conflict(format!("openConversationId {} belongs to another chat", chat.open_conversation_id)));
    }
    match app.chats.get_mut(&chatid) {
        Some(existing) => {
            existing.record();
            existing.now = chat.clone();
        }
        None => {
            app.chats.insert(chatid, Chat { now: chat.clone(), history: Vec::new() });
        }
    }
    Ok(Json(chat))
}

/// `PATCH .../chats/{chatid}`: `name` (pushes chat_update_title), `owner` (a member; pushes
/// chat_update_owner), and the settings that have no event (`icon`, `chatBannedType`, ...).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ChatPatch {
    name: Option<String>,
    owner: Option<String>,
    icon: Option<String>,
    conversation_tag: Option<i64>,
    chat_banned_type: Option<i64>,
    searchable: Option<i64>,
    validation_type: Option<i64>,
    mention_all_authority: Option<i64>,
    management_type: Option<i64>,
    show_history_type: Option<i64>,
    #[serde(default)]
    push: bool,
    #[serde(default)]
    casing: DingtalkCasing,
    operator: Option<String>,
}

pub(super) async fn patch_chat(
    State(sim): State<SharedSim>,
    Path((app_key, chatid)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<ChangeAnswer>, AdminError> {
    let patch: ChatPatch = parse_body(&body)?;
    let push = PushOptions { push: patch.push, casing: patch.casing, operator: patch.operator.clone() };
    change_chat(&sim, &app_key, &chatid, &push, |chat, operator| {
        let mut changes = Vec::new();
        if let Some(name) = patch.name {
            chat.name = name.clone();
            changes.push(Change { value: name, ..Change::new(ChatEvent::UpdateTitle, operator) });
        }
        if let Some(owner) = patch.owner {
            if !chat.useridlist.contains(&owner) {
                return Err(conflict(format!("the new owner {owner} is not a member")));
            }
            chat.owner = owner.clone();
            changes.push(Change { value: owner, ..Change::new(ChatEvent::UpdateOwner, operator) });
        }
        let settings = [
            (patch.conversation_tag, &mut chat.conversation_tag),
            (patch.chat_banned_type, &mut chat.chat_banned_type),
            (patch.searchable, &mut chat.searchable),
            (patch.validation_type, &mut chat.validation_type),
            (patch.mention_all_authority, &mut chat.mention_all_authority),
            (patch.management_type, &mut chat.management_type),
            (patch.show_history_type, &mut chat.show_history_type),
        ];
        for (new, slot) in settings {
            if let Some(new) = new {
                *slot = new;
            }
        }
        if let Some(icon) = patch.icon {
            chat.icon = Some(icon);
        }
        Ok(changes)
    })
}

/// `DELETE .../chats/{chatid}` (body optional: push options): status 2, pushes chat_disband.
/// Dismissed chats stay readable through chat/get (with `status: 2`).
pub(super) async fn dismiss_chat(
    State(sim): State<SharedSim>,
    Path((app_key, chatid)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<ChangeAnswer>, AdminError> {
    let push: PushOptions = parse_body(&body)?;
    change_chat(&sim, &app_key, &chatid, &push, |chat, operator| {
        chat.status = Some(STATUS_DISMISSED);
        Ok(vec![Change::new(ChatEvent::Disband, operator)])
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MembersRequest {
    userids: Vec<String>,
    #[serde(default)]
    push: bool,
    #[serde(default)]
    casing: DingtalkCasing,
    operator: Option<String>,
}

impl MembersRequest {
    fn split(self) -> Result<(Vec<String>, PushOptions), AdminError> {
        if self.userids.is_empty() || self.userids.iter().any(String::is_empty) {
            return Err(AdminError::bad("userids must name at least one user, none empty"));
        }
        Ok((self.userids, PushOptions { push: self.push, casing: self.casing, operator: self.operator }))
    }
}

/// `POST .../chats/{chatid}/members` `{"userids": [...]}`: pushes chat_add_member.
pub(super) async fn add_members(
    State(sim): State<SharedSim>,
    Path((app_key, chatid)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<ChangeAnswer>, AdminError> {
    let (userids, push) = parse_body::<MembersRequest>(&body)?.split()?;
    change_chat(&sim, &app_key, &chatid, &push, |chat, operator| {
        if let Some(present) = userids.iter().find(|u| chat.useridlist.contains(u)) {
            return Err(conflict(format!("{present} is already a member")));
        }
        chat.useridlist.extend(userids.iter().cloned());
        Ok(vec![Change { users: userids, ..Change::new(ChatEvent::AddMember, operator) }])
    })
}

/// `DELETE .../chats/{chatid}/members` `{"userids": [...]}`: pushes chat_remove_member. The
/// owner cannot be removed (change the owner first).
pub(super) async fn remove_members(
    State(sim): State<SharedSim>,
    Path((app_key, chatid)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<ChangeAnswer>, AdminError> {
    let (userids, push) = parse_body::<MembersRequest>(&body)?.split()?;
    change_chat(&sim, &app_key, &chatid, &push, |chat, operator| {
        if let Some(absent) = userids.iter().find(|u| !chat.useridlist.contains(u)) {
            return Err(AdminError::new(StatusCode::NOT_FOUND, format!("{absent} is not a member")));
        }
        if userids.contains(&chat.owner) {
            return Err(conflict(format!("{} owns the chat", chat.owner)));
        }
        chat.useridlist.retain(|u| !userids.contains(u));
        Ok(vec![Change { users: userids, ..Change::new(ChatEvent::RemoveMember, operator) }])
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QuitRequest {
    userid: String,
    #[serde(default)]
    push: bool,
    #[serde(default)]
    casing: DingtalkCasing,
}

/// `POST .../chats/{chatid}/quit` `{"userid": "…"}`: the member leaves by themselves; pushes
/// chat_quit, whose `operator` is the leaver.
pub(super) async fn quit(
    State(sim): State<SharedSim>,
    Path((app_key, chatid)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<ChangeAnswer>, AdminError> {
    let request: QuitRequest = parse_body(&body)?;
    let userid = request.userid;
    let push = PushOptions { push: request.push, casing: request.casing, operator: Some(userid.clone()) };
    change_chat(&sim, &app_key, &chatid, &push, |chat, operator| {
        if !chat.useridlist.contains(&userid) {
            return Err(AdminError::new(StatusCode::NOT_FOUND, format!("{userid} is not a member")));
        }
        if chat.owner == userid {
            return Err(conflict(format!("{userid} owns the chat")));
        }
        chat.useridlist.retain(|u| *u != userid);
        Ok(vec![Change::new(ChatEvent::Quit, operator)])
    })
}

/// `POST /sim/dingtalk/apps/{app}/events`: pushes a raw event. `data` is sent as given when it
/// is a string (so malformed JSON can be pushed too), as its JSON text otherwise; `headers` add
/// to or override the standard ones; `eventId` may repeat an earlier event's on purpose.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawEvent {
    event_type: String,
    data: serde_json::Value,
    event_id: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

pub(super) async fn push_event(
    State(sim): State<SharedSim>,
    Path(app_key): Path<String>,
    body: Bytes,
) -> Result<Json<ChangeAnswer>, AdminError> {
    let raw: RawEvent = parse_body(&body)?;
    let data = match raw.data {
        serde_json::Value::String(text) => text,
        other => other.to_string(),
    };
    let event = NewEvent {
        event_type: raw.event_type,
        data,
        event_id: raw.event_id,
        extra_headers: raw.headers.into_iter().collect(),
    };
    let handle = sim.clone();
    let event_id = sim.dingtalk(|dt| dt.push(&handle, &app_key, event)).ok_or_else(|| no_app(&app_key))?;
    Ok(Json(ChangeAnswer { event_ids: vec![event_id] }))
}

/// One event of the log (`GET /sim/dingtalk/events`, `/pending`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DingtalkEventView {
    pub app_key: String,
    pub event_id: String,
    pub event_type: String,
    /// The messageId of the latest delivery.
    pub message_id: String,
    /// The `data` string as sent.
    pub data: String,
    pub deliveries: u32,
    pub acked: bool,
    /// `SUCCESS` or `LATER`, from the latest ACK.
    pub last_status: Option<String>,
    /// Waiting for a live connection.
    pub waiting: bool,
    /// Given up after `max_deliveries`.
    pub abandoned: bool,
}

fn event_log(sim: &SharedSim, pending_only: bool) -> Vec<DingtalkEventView> {
    sim.dingtalk(|dt| {
        dt.apps
            .iter()
            .flat_map(|(app_key, app)| app.events.iter().map(move |e| (app_key, e)))
            .filter(|(_, e)| !pending_only || e.is_pending())
            .map(|(app_key, e)| DingtalkEventView {
                app_key: app_key.clone(),
                event_id: e.event_id.clone(),
                event_type: e.event_type.clone(),
                message_id: e.message_id.clone(),
                data: e.data.clone(),
                deliveries: e.deliveries,
                acked: e.acked,
                last_status: e.last_status.clone(),
                waiting: e.waiting,
                abandoned: e.abandoned,
            })
            .collect()
    })
}

/// `GET /sim/dingtalk/events`: every event kept, per app in push order.
pub(super) async fn events(State(sim): State<SharedSim>) -> Json<Vec<DingtalkEventView>> {
    Json(event_log(&sim, false))
}

/// `GET /sim/dingtalk/pending`: the events neither ACKed nor abandoned.
pub(super) async fn pending(State(sim): State<SharedSim>) -> Json<Vec<DingtalkEventView>> {
    Json(event_log(&sim, true))
}

// ---------------------------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------------------------

/// A counted fault per API.
#[derive(Debug, Clone, Default, Serialize)]
pub(super) struct PerApi<T> {
    #[serde(skip_serializing_if = "Option::is_none")]
    gettoken: Option<Pending<T>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    chat_get: Option<Pending<T>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    connections_open: Option<Pending<T>>,
}

impl<T> PerApi<T> {
    pub(super) fn slot(&mut self, api: DtApi) -> &mut Option<Pending<T>> {
        match api {
            DtApi::Gettoken => &mut self.gettoken,
            DtApi::ChatGet => &mut self.chat_get,
            DtApi::ConnectionsOpen => &mut self.connections_open,
        }
    }
}

/// Standing faults, as `GET /sim/dingtalk/faults` answers them.
#[derive(Debug, Clone, Default, Serialize)]
pub(super) struct Faults {
    pub(super) stale_fetches: u32,
    pub(super) errcode: PerApi<i64>,
    pub(super) http_status: PerApi<u16>,
    pub(super) latency_ms: u64,
}

/// `POST /sim/dingtalk/faults`. Unknown keys are refused so that a typo injects nothing silently.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultRequest {
    /// The next N chat/get answers show each chat as it was before its latest change.
    stale_fetches: Option<u32>,
    /// An oapi errcode (90002, -1, 40014, ...) for the next `count` calls of `on`.
    errcode: Option<i64>,
    /// An HTTP status (plain-text body) for the next `count` calls of `on`.
    http_status: Option<u16>,
    /// Calls `errcode`/`http_status` affect; default 1, 0 clears that fault.
    count: Option<u32>,
    /// `chat_get` (default), `gettoken` or `connections_open` (no errcode there).
    on: Option<DtApi>,
    latency_ms: Option<u64>,
    /// Revokes every token issued so far (they answer 40014); later ones work.
    expire_tokens: Option<bool>,
    /// Sends SYSTEM disconnect to the live connections.
    disconnect: Option<bool>,
    /// Closes the live connections without a frame.
    drop: Option<bool>,
    /// Pushes the last N events of each app again.
    redeliver: Option<u32>,
    /// Limits `disconnect`, `drop` and `redeliver` to one app.
    app_key: Option<String>,
}

/// What `POST /sim/dingtalk/faults` answers: the standing faults and what the actions did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DingtalkFaultAnswer {
    pub faults: serde_json::Value,
    pub disconnected: usize,
    pub dropped: usize,
    /// eventIds pushed again by `redeliver`.
    pub redelivered: Vec<String>,
}

pub(super) async fn faults(State(sim): State<SharedSim>) -> Json<Faults> {
    Json(sim.dingtalk(|dt| dt.faults.clone()))
}

pub(super) async fn set_faults(
    State(sim): State<SharedSim>,
    body: Bytes,
) -> Result<Json<DingtalkFaultAnswer>, AdminError> {
    let request: FaultRequest = parse_body(&body)?;
    let count = request.count.unwrap_or(1);
    let on = request.on.unwrap_or_default();
    if request.errcode == Some(0) {
        return Err(AdminError::bad("errcode 0 is success, not a fault"));
    }
    if request.errcode.is_some() && on == DtApi::ConnectionsOpen {
        return Err(AdminError::bad("connections/open answers HTTP statuses, not errcodes: use http_status"));
    }
    if request.http_status.is_some_and(|s| !(400..=599).contains(&s)) {
        return Err(AdminError::bad("http_status must be within 400..=599"));
    }
    let handle = sim.clone();
    let answer = sim.dingtalk(|dt| {
        if let Some(app_key) = &request.app_key {
            if !dt.apps.contains_key(app_key) {
                return Err(no_app(app_key));
            }
        }
        if let Some(n) = request.stale_fetches {
            dt.faults.stale_fetches = n;
        }
        if let Some(errcode) = request.errcode {
            *dt.faults.errcode.slot(on) = (count > 0).then_some(Pending { value: errcode, count });
        }
        if let Some(status) = request.http_status {
            *dt.faults.http_status.slot(on) = (count > 0).then_some(Pending { value: status, count });
        }
        if let Some(latency_ms) = request.latency_ms {
            dt.faults.latency_ms = latency_ms;
        }
        if request.expire_tokens == Some(true) {
            dt.tokens.values_mut().for_each(|t| t.revoked = true);
        }
        let only = request.app_key.as_deref();
        let disconnected = if request.disconnect == Some(true) { dt.disconnect(only) } else { 0 };
        let dropped = if request.drop == Some(true) { dt.drop_connections(only) } else { 0 };
        let redelivered = match request.redeliver {
            Some(n) if n > 0 => dt.redeliver_last(&handle, only, n),
            _ => Vec::new(),
        };
        let faults = serde_json::to_value(&dt.faults).unwrap_or_default();
        Ok(DingtalkFaultAnswer { faults, disconnected, dropped, redelivered })
    })?;
    Ok(Json(answer))
}

pub(super) async fn clear_faults(State(sim): State<SharedSim>) -> StatusCode {
    sim.dingtalk(|dt| dt.faults = Faults::default());
    StatusCode::NO_CONTENT
}

// ---------------------------------------------------------------------------------------------
// Settings and stats
// ---------------------------------------------------------------------------------------------

/// `POST /sim/dingtalk/settings`: changes the named settings, leaving the others.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsPatch {
    token_ttl_ms: Option<u64>,
    ticket_ttl_ms: Option<u64>,
    ping_interval_ms: Option<u64>,
    ping_miss_limit: Option<u32>,
    redelivery_delay_ms: Option<u64>,
    max_deliveries: Option<u32>,
    new_message_id_on_redelivery: Option<bool>,
    disconnect_grace_ms: Option<u64>,
}

pub(super) async fn settings(State(sim): State<SharedSim>) -> Json<DingtalkSettings> {
    Json(sim.dingtalk(|dt| dt.settings.clone()))
}

pub(super) async fn set_settings(
    State(sim): State<SharedSim>,
    body: Bytes,
) -> Result<Json<DingtalkSettings>, AdminError> {
    let patch: SettingsPatch = parse_body(&body)?;
    let nonzero = [("token_ttl_ms", patch.token_ttl_ms), ("ticket_ttl_ms", patch.ticket_ttl_ms)];
    if let Some((name, _)) = nonzero.iter().find(|(_, v)| *v == Some(0)) {
        return Err(AdminError::bad(format!("{name} must be positive")));
    }
    if patch.redelivery_delay_ms.is_some_and(|d| d < 10) {
        return Err(AdminError::bad("redelivery_delay_ms must be at least 10"));
    }
    if patch.ping_interval_ms.is_some_and(|p| p > 0 && p < 10) {
        return Err(AdminError::bad("ping_interval_ms must be 0 (off) or at least 10"));
    }
    let settings = sim.dingtalk(|dt| {
        let s = &mut dt.settings;
        s.token_ttl_ms = patch.token_ttl_ms.unwrap_or(s.token_ttl_ms);
        s.ticket_ttl_ms = patch.ticket_ttl_ms.unwrap_or(s.ticket_ttl_ms);
        s.ping_interval_ms = patch.ping_interval_ms.unwrap_or(s.ping_interval_ms);
        s.ping_miss_limit = patch.ping_miss_limit.unwrap_or(s.ping_miss_limit);
        s.redelivery_delay_ms = patch.redelivery_delay_ms.unwrap_or(s.redelivery_delay_ms);
        s.max_deliveries = patch.max_deliveries.unwrap_or(s.max_deliveries);
        s.new_message_id_on_redelivery = patch.new_message_id_on_redelivery.unwrap_or(s.new_message_id_on_redelivery);
        s.disconnect_grace_ms = patch.disconnect_grace_ms.unwrap_or(s.disconnect_grace_ms);
        dt.settings_changed.notify_waiters();
        dt.settings.clone()
    });
    Ok(Json(settings))
}

pub(super) async fn stats(State(sim): State<SharedSim>) -> Json<DingtalkStats> {
    Json(sim.dingtalk_stats())
}

pub(super) async fn reset_stats(State(sim): State<SharedSim>) -> StatusCode {
    sim.dingtalk(|dt| dt.stats = DingtalkStats::default());
    StatusCode::NO_CONTENT
}
