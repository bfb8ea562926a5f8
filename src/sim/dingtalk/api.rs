//! The DingTalk HTTP APIs: `GET /gettoken`, `GET /chat/get` (oapi: HTTP 200 with `errcode`) and
//! `POST /v1.0/gateway/connections/open` (api.dingtalk.com: HTTP statuses with
//! `{"requestid","code","message"}`).

use super::*;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::borrow::Cow;

/// The APIs faults can target (`"on"` in `POST /sim/dingtalk/faults`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum DtApi {
    Gettoken,
    #[default]
    ChatGet,
    ConnectionsOpen,
}

/// Why a call did not succeed.
#[derive(Debug)]
pub(super) enum ApiError {
    /// oapi style: HTTP 200, `{"errcode","errmsg"}`.
    Oapi { errcode: i64, errmsg: Cow<'static, str> },
    /// api.dingtalk.com style: an HTTP status and `{"requestid","code","message"}`.
    Gateway { status: StatusCode, code: &'static str, message: Cow<'static, str> },
    /// An injected transport-level failure (plain text body).
    Http(StatusCode),
}

impl ApiError {
    pub(super) fn code(errcode: i64) -> Self {
        Self::Oapi { errcode, errmsg: Cow::Borrowed(errmsg_for(errcode)) }
    }
}

/// Texts as DingTalk writes them where the notes quote one; clients must key on `errcode`.
pub(super) fn errmsg_for(errcode: i64) -> &'static str {
    match errcode {
        -1 => "系统繁忙",
        // Answered by gettoken when appkey/appsecret is absent (a 2026 probe of the real API,
        // which also showed that the doc's `curl -d` example gets this answer).
        40035 => "缺少参数 corpid or appkey",
        // A wrong appkey or appsecret. Not in DingTalk's global table (which has 40089 for the
        // corpid/corpsecret pair), but what the real gettoken answers: several independent SDK
        // comments and test doubles quote `{"errcode":40096,"errmsg":"不合法的appKey或appSecret"}`.
        40096 => "不合法的appKey或appSecret",
        40014 => "不合法的access_token",
        40016 => "无效的chatid",
        41001 => "缺少access_token参数",
        42001 => "access_token超时",
        43007 => "没有调用权限",
        49000 => "需要参数chatid",
        70001 => "企业不存在",
        // 90002 is the global per-API limit (protocols-2 A5.6); its text is not quoted anywhere
        // in the notes.
        90002 => "接口调用超过限制",
        _ => "simulated error",
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Oapi { errcode, errmsg } => {
                let mut response = Json(OapiError { errcode, errmsg: &errmsg }).into_response();
                response.extensions_mut().insert(Errcode(errcode));
                response
            }
            ApiError::Gateway { status, code, message } => {
                let requestid = uuid::Uuid::new_v4().hyphenated().to_string().to_uppercase();
                (status, Json(GatewayError { requestid, code, message: &message })).into_response()
            }
            ApiError::Http(status) => {
                (status, format!("{status} (injected by the DingTalk simulator)\n")).into_response()
            }
        }
    }
}

#[derive(Serialize)]
struct OapiError<'a> {
    errcode: i64,
    errmsg: &'a str,
}

/// The api.dingtalk.com error body, as captured from connections/open with bad credentials:
/// `{"requestid":"ED203550-…","code":"authFailed","message":"鉴权失败"}` (HTTP 401).
#[derive(Serialize)]
struct GatewayError<'a> {
    requestid: String,
    code: &'static str,
    message: &'a str,
}

/// A successful oapi answer: `errcode`, `errmsg`, then the payload's fields.
fn oapi_ok(payload: impl Serialize) -> Response {
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

impl SharedSim {
    /// Every call goes through this first: counting, latency, then injected failures for this
    /// API (`http_status` before `errcode`).
    async fn dingtalk_begin(&self, api: DtApi) -> Result<(), ApiError> {
        let latency_ms = self.dingtalk(|dt| {
            match api {
                DtApi::Gettoken => dt.stats.gettoken += 1,
                DtApi::ChatGet => dt.stats.chat_get += 1,
                DtApi::ConnectionsOpen => dt.stats.connections_open += 1,
            }
            dt.faults.latency_ms
        });
        if latency_ms > 0 {
            tokio::time::sleep(ms(latency_ms)).await;
        }
        self.dingtalk(|dt| {
            if let Some(status) = take_one(dt.faults.http_status.slot(api)) {
                return Err(ApiError::Http(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY)));
            }
            if let Some(errcode) = take_one(dt.faults.errcode.slot(api)) {
                return Err(ApiError::code(errcode));
            }
            Ok(())
        })
    }
}

impl Dingtalk {
    /// The app the token was issued to. An unknown or revoked token is 40014 (不合法的
    /// access_token); one past its lifetime is 42001 (access_token超时), both from DingTalk's
    /// global table. Revocation (the `expire_tokens` fault) plays a token DingTalk no longer
    /// knows, hence 40014.
    fn authorize(&self, query: &Option<String>) -> Result<String, ApiError> {
        let token = query_param(query, "access_token").ok_or(ApiError::code(41001))?;
        let token = self.tokens.get(&token).filter(|t| !t.revoked).ok_or(ApiError::code(40014))?;
        if Instant::now() >= token.expires_at {
            return Err(ApiError::code(42001));
        }
        Ok(token.app_key.clone())
    }
}

/// `GET /gettoken?appkey=&appsecret=`. While the app's token is valid the same one is handed
/// out again and its lifetime restarts: "有效期内重复获取返回相同结果，并自动续期"
/// (protocols.md §4.3).
pub(super) async fn gettoken(State(sim): State<SharedSim>, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    sim.dingtalk_begin(DtApi::Gettoken).await?;
    let (Some(appkey), Some(appsecret)) = (query_param(&query, "appkey"), query_param(&query, "appsecret")) else {
        return Err(ApiError::code(40035));
    };
    let mut guard = sim.lock();
    let Dingtalk { apps, tokens, settings, .. } = &mut guard.dingtalk;
    let app = apps.get_mut(&appkey).filter(|a| a.secret == appsecret).ok_or(ApiError::code(40096))?;
    let now = Instant::now();
    let ttl = ms(settings.token_ttl_ms);
    let valid = |t: &Token| !t.revoked && now < t.expires_at;
    let reusable = app.current_token.as_ref().filter(|t| tokens.get(*t).is_some_and(valid)).cloned();
    let token = match reusable {
        Some(token) => {
            if let Some(t) = tokens.get_mut(&token) {
                t.expires_at = now + ttl;
            }
            token
        }
        None => {
            let token = uuid::Uuid::new_v4().simple().to_string();
            tokens.insert(token.clone(), Token { app_key: appkey, expires_at: now + ttl, revoked: false });
            app.current_token = Some(token.clone());
            token
        }
    };
    // Rounded up, so that the default lifetime says 7200 and a 300 ms test lifetime says 1.
    let expires_in = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    // Field order as real answers show it: {"errcode":0,"access_token":"…","errmsg":"ok","expires_in":7200}.
    #[derive(Serialize)]
    struct TokenAnswer {
        errcode: i64,
        access_token: String,
        errmsg: &'static str,
        expires_in: u64,
    }
    let mut response = Json(TokenAnswer { errcode: 0, access_token: token, errmsg: "ok", expires_in }).into_response();
    response.extensions_mut().insert(Errcode(0));
    Ok(response)
}

/// chat/get's `chat_info`, in the field order of seed 002's example answer; `status` (in the
/// field table, not in the example) goes last, and only when the chat has one.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ChatInfo<'a> {
    owner: &'a str,
    mention_all_authority: i64,
    show_history_type: i64,
    chatid: &'a str,
    conversation_tag: i64,
    validation_type: i64,
    useridlist: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    icon: Option<&'a str>,
    name: &'a str,
    searchable: i64,
    chat_banned_type: i64,
    management_type: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<i64>,
}

impl<'a> From<&'a SimDingtalkChat> for ChatInfo<'a> {
    fn from(c: &'a SimDingtalkChat) -> Self {
        Self {
            owner: &c.owner,
            mention_all_authority: c.mention_all_authority,
            show_history_type: c.show_history_type,
            chatid: &c.chatid,
            conversation_tag: c.conversation_tag,
            validation_type: c.validation_type,
            useridlist: &c.useridlist,
            icon: c.icon.as_deref(),
            name: &c.name,
            searchable: c.searchable,
            chat_banned_type: c.chat_banned_type,
            management_type: c.management_type,
            status: c.status,
        }
    }
}

/// `GET /chat/get?access_token=&chatid=`.
///
/// - An unknown chatid, or one of another app, is 40016 无效的chatid ("请确认access_token和chatid
///   来自同一个企业", seed 002).
/// - A dismissed chat is answered normally with `status: 2`: seed 002's field table documents
///   "2：已解散" for chat/get, which only makes sense if chat/get answers dismissed chats. Whether
///   the real API answers 40016 instead is unverified (protocols-2 "Still unverified" 5).
pub(super) async fn chat_get(State(sim): State<SharedSim>, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    sim.dingtalk_begin(DtApi::ChatGet).await?;
    let mut guard = sim.lock();
    let dt = &mut guard.dingtalk;
    let app_key = dt.authorize(&query)?;
    let chatid = query_param(&query, "chatid").ok_or(ApiError::code(49000))?;
    let chat = dt.apps.get(&app_key).and_then(|a| a.chats.get(&chatid)).ok_or(ApiError::code(40016))?;
    let view = if dt.faults.stale_fetches > 0 { chat.stale_view() } else { &chat.now };
    #[derive(Serialize)]
    struct ChatAnswer<'a> {
        chat_info: ChatInfo<'a>,
    }
    let response = oapi_ok(ChatAnswer { chat_info: ChatInfo::from(view) });
    // Only answered chats use up a stale fetch: an error is not a stale answer.
    dt.faults.stale_fetches = dt.faults.stale_fetches.saturating_sub(1);
    Ok(response)
}

/// The connections/open body. Field names are exact; `extras` is what the Go SDK adds.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct OpenRequest {
    client_id: String,
    client_secret: String,
    subscriptions: Vec<Subscription>,
    #[serde(default)]
    #[allow(dead_code)]
    ua: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    local_ip: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    extras: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Subscription {
    #[serde(rename = "type")]
    kind: String,
    topic: String,
}

fn bad_request(message: impl Into<Cow<'static, str>>) -> ApiError {
    // DingTalk answers malformed requests with HTTP 400; the `code` value is a simulator choice.
    ApiError::Gateway { status: StatusCode::BAD_REQUEST, code: "invalidParameter", message: message.into() }
}

/// `POST /v1.0/gateway/connections/open`: checks the credentials and subscriptions and hands out
/// a one-use ticket for this simulator's own `/connect` WebSocket (at the Host the request was
/// sent to, so the endpoint works from wherever the simulator is reached).
///
/// Without `Accept: application/json` the answer is XML, as the Node SDK warns ("这个接口得加个
/// [Accept]，否则默认返回的会是xml", protocols-2 A1.1); the XML element names are invented.
pub(super) async fn connections_open(
    State(sim): State<SharedSim>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    sim.dingtalk_begin(DtApi::ConnectionsOpen).await?;
    let request: OpenRequest = serde_json::from_slice(&body).map_err(|e| bad_request(e.to_string()))?;
    let mut guard = sim.lock();
    let dt = &mut guard.dingtalk;
    let app = dt.apps.get(&request.client_id).filter(|a| a.secret == request.client_secret);
    if app.is_none() {
        return Err(ApiError::Gateway {
            status: StatusCode::UNAUTHORIZED,
            code: "authFailed",
            message: Cow::Borrowed("鉴权失败"),
        });
    }
    if request.subscriptions.is_empty() {
        return Err(bad_request("subscriptions must not be empty"));
    }
    let mut events = false;
    for subscription in &request.subscriptions {
        match subscription.kind.as_str() {
            // "注意：仅支持星号(*)" for EVENT (protocols-2 A1.2).
            "EVENT" if subscription.topic == "*" => events = true,
            "EVENT" => return Err(bad_request("the EVENT topic must be \"*\"")),
            "CALLBACK" | "SYSTEM" if !subscription.topic.is_empty() => {}
            other => return Err(bad_request(format!("bad subscription type {other:?} or empty topic"))),
        }
    }
    let ticket = uuid::Uuid::new_v4().hyphenated().to_string();
    let expires_at = Instant::now() + ms(dt.settings.ticket_ttl_ms);
    dt.tickets.retain(|_, t| t.expires_at > Instant::now());
    dt.tickets.insert(ticket.clone(), Ticket { app_key: request.client_id, expires_at, events });
    drop(guard);

    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1");
    let endpoint = format!("ws://{host}/connect");
    let wants_json = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("application/json"));
    if wants_json {
        #[derive(Serialize)]
        struct OpenAnswer {
            endpoint: String,
            ticket: String,
        }
        return Ok(Json(OpenAnswer { endpoint, ticket }).into_response());
    }
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><OpenConnectionResponse><endpoint>{endpoint}</endpoint>\
         <ticket>{ticket}</ticket></OpenConnectionResponse>"
    );
    Ok(([(header::CONTENT_TYPE, "application/xml;charset=utf-8")], xml).into_response())
}
