//! WeCom's server API: `gettoken`, `externalcontact/groupchat/get` and `/list`, `appchat/get`;
//! `WecomClient::call` is the one way to call WeCom (the administration calls of
//! [`super::admin`] go through it too).
//!
//! Each (api_base, corp, secret) is one [`Account`]: its token is refreshed by one caller at a
//! time (across instances when they share a store), a few minutes before it expires and whenever
//! WeCom says a token is invalid (40001/40014/42001), after which the call is retried once.

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use crate::config::Secret;
use crate::core::consistency::Consistency;
use crate::core::ids::short_hash;
use crate::core::model::{GroupSnapshot, Member};
use crate::provider::account::{Account, Budget};
use crate::provider::answer::transport;
use crate::provider::wecom::config::WecomTenant;
use crate::provider::{ApiError, GroupLister, GroupSource};

/// Refresh this long before WeCom's stated expiry, so no call races the deadline.
const TOKEN_MARGIN: Duration = Duration::from_secs(300);
const TOKEN_ERRCODES: [i64; 3] = [40001, 40014, 42001];
/// The answer to `groupchat/get` for a chat that no longer exists.
const GROUP_GONE: i64 = 40050;
/// `groupchat/list` accepts at most 100 owners per call.
pub const OWNER_BATCH: usize = 100;
/// WeCom's tokens live 7200 s. A longer stated lifetime is not believed (and a huge one would
/// overflow the refresh instant).
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(86_400);
/// The largest API answer read. groupchat/get of a full group (2000 members) is well under
/// 1 MiB; past this the answer is refused rather than buffered without end.
pub const MAX_ANSWER_BYTES: usize = 8 * 1024 * 1024;

/// One (api_base, corp, secret): its base URL, its credentials and its budget (token, rate
/// limit, calls in flight against 45033, pause after 45009).
struct CorpApi {
    api_base: String,
    corp_id: String,
    secret: Secret,
    account: Arc<Account>,
}

/// Client-side limits per corp, from `[worker]`.
#[derive(Debug, Clone, Copy)]
pub struct ApiLimits {
    pub per_minute: u32,
    pub concurrency: u32,
    pub timeout: Duration,
    /// WeCom's per-minute limit clears after its window: pause that long on 45009.
    pub rate_limit_pause: Duration,
}

impl ApiLimits {
    /// The limits `[worker]` configures, for clients outside the worker (the `wecom` commands).
    pub fn of(worker: &crate::config::WorkerConfig) -> Self {
        Self {
            per_minute: worker.api_rate_per_minute,
            concurrency: worker.api_concurrency,
            timeout: Duration::from_millis(worker.api_timeout_ms),
            rate_limit_pause: Duration::from_millis(worker.api_rate_limit_pause_ms),
        }
    }
}

#[derive(Clone)]
pub struct WecomClient {
    http: reqwest::Client,
    rate_limit_pause: Duration,
    /// Every WeCom API call made by this client, gettoken included (for resync's summary).
    calls: Arc<std::sync::atomic::AtomicU64>,
    tenants: Arc<HashMap<String, Arc<CorpApi>>>,
    /// Per tenant, the chat ids configured as app group chats: fetched with `appchat/get`.
    appchats: Arc<HashMap<String, HashSet<String>>>,
    /// `limit` of each `groupchat/list` page when listing for resync.
    list_page: u32,
}

/// How a call carries its parameters.
#[derive(Clone, Copy)]
enum Payload<'a> {
    /// POST with a JSON body (every `externalcontact` call).
    Json(&'a serde_json::Value),
    /// GET with query parameters (`appchat/get`).
    Query(&'a [(&'a str, &'a str)]),
}

#[derive(Deserialize)]
struct Status {
    #[serde(default)]
    errcode: i64,
    #[serde(default)]
    errmsg: String,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default = "default_expiry")]
    expires_in: u64,
}

fn default_expiry() -> u64 {
    7200
}

#[derive(Deserialize)]
struct GroupChatResponse {
    group_chat: WecomGroupChat,
}

#[derive(Deserialize)]
struct WecomGroupChat {
    chat_id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    owner: String,
    #[serde(default)]
    create_time: i64,
    #[serde(default)]
    notice: String,
    #[serde(default)]
    member_list: Vec<WecomMember>,
    #[serde(default)]
    admin_list: Vec<UserRef>,
    #[serde(default)]
    member_version: Option<String>,
}

#[derive(Deserialize)]
struct UserRef {
    userid: String,
}

#[derive(Deserialize)]
struct WecomMember {
    userid: String,
    #[serde(rename = "type", default)]
    member_type: Option<i64>,
    #[serde(default)]
    unionid: Option<String>,
    #[serde(default)]
    join_time: Option<i64>,
    #[serde(default)]
    join_scene: Option<i64>,
    #[serde(default)]
    invitor: Option<UserRef>,
    #[serde(default)]
    group_nickname: Option<String>,
    #[serde(default)]
    name: Option<String>,
    /// Set only for members who joined through a join way configured with a `state`
    /// (protocols-2 §C.1).
    #[serde(default)]
    state: Option<String>,
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

impl From<WecomGroupChat> for GroupSnapshot {
    fn from(g: WecomGroupChat) -> Self {
        GroupSnapshot {
            chat_id: g.chat_id,
            name: g.name,
            owner: g.owner,
            notice: g.notice,
            create_time: g.create_time,
            admins: g.admin_list.into_iter().map(|a| a.userid).collect(),
            member_version: non_empty(g.member_version),
            members: g
                .member_list
                .into_iter()
                .map(|m| Member {
                    userid: m.userid,
                    member_type: m.member_type,
                    unionid: non_empty(m.unionid),
                    join_time: m.join_time,
                    join_scene: m.join_scene,
                    invitor: m.invitor.map(|i| i.userid).filter(|s| !s.is_empty()),
                    group_nickname: non_empty(m.group_nickname),
                    name: non_empty(m.name),
                    state: non_empty(m.state),
                    role: None,
                })
                .collect(),
        }
        .with_roles()
        .normalised()
    }
}

#[derive(Deserialize)]
struct AppChatResponse {
    chat_info: AppChatInfo,
}

/// Seed 004's `ChatInfo`: an app group chat knows its members by userid only.
#[derive(Deserialize)]
struct AppChatInfo {
    chatid: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    owner: String,
    #[serde(default)]
    userlist: Vec<String>,
}

impl From<AppChatInfo> for GroupSnapshot {
    fn from(c: AppChatInfo) -> Self {
        GroupSnapshot {
            name: c.name,
            owner: c.owner,
            members: c.userlist.iter().map(|u| Member::unknown(u)).collect(),
            ..GroupSnapshot::empty(&c.chatid)
        }
        .with_roles()
        .normalised()
    }
}

#[derive(Deserialize)]
struct ListResponse {
    #[serde(default)]
    group_chat_list: Vec<ListedChat>,
    #[serde(default)]
    next_cursor: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ListedChat {
    pub chat_id: String,
    #[serde(default)]
    pub status: i64,
}

/// Classifies a non-zero errcode of an API call.
fn classify(errcode: i64, errmsg: String, rate_limit_pause: Duration) -> ApiError {
    match errcode {
        -1 | 45033 => ApiError::Transient(format!("errcode {errcode}: {errmsg}")),
        45009 => ApiError::RateLimited { errcode, wait: rate_limit_pause },
        // WeCom does not document its answer for a dismissed customer group; 40050 ("chatid
        // 不存在") is the documented code for a chat that does not exist, and the simulator's.
        GROUP_GONE => ApiError::Gone { errcode },
        _ => ApiError::Permanent { errcode, errmsg },
    }
}

/// Reads an answer's JSON body, refusing bodies over [`MAX_ANSWER_BYTES`] (transient: a proxy
/// or WeCom having a bad moment) without buffering them.
async fn read_answer(resp: reqwest::Response, api_name: &str) -> Result<serde_json::Value, ApiError> {
    crate::provider::answer::read_json(resp, api_name, MAX_ANSWER_BYTES).await
}

impl WecomClient {
    pub fn new(tenants: &[WecomTenant], limits: ApiLimits) -> Self {
        let http = reqwest::Client::builder()
            .timeout(limits.timeout)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("a TLS backend is compiled in");
        let mut shared: HashMap<(String, String, String), Arc<CorpApi>> = HashMap::new();
        let budget = Budget {
            per_minute: limits.per_minute,
            concurrency: limits.concurrency,
            token_fetch_timeout: limits.timeout,
        };
        let secrets_per_corp = |corp: &str| {
            tenants
                .iter()
                .filter(|t| t.corp_id == corp)
                .map(|t| (t.api_base.as_str(), t.secret.expose()))
                .collect::<HashSet<_>>()
                .len()
        };
        let mut by_tenant = HashMap::new();
        let mut appchats = HashMap::new();
        for t in tenants {
            if !t.appchats.is_empty() {
                appchats.insert(t.tenant.clone(), t.appchats.iter().cloned().collect::<HashSet<_>>());
            }
            let api_base = t.api_base.trim_end_matches('/').to_owned();
            let id = (api_base.clone(), t.corp_id.clone(), t.secret.expose().to_owned());
            let api = shared
                .entry(id)
                .or_insert_with(|| {
                    // Two apps of one corp have two tokens: the key tells them apart without
                    // naming the secret.
                    let key = if secrets_per_corp(&t.corp_id) > 1 {
                        format!("wecom:{}:{}", t.corp_id, &short_hash(&[&api_base, t.secret.expose()])[..8])
                    } else {
                        format!("wecom:{}", t.corp_id)
                    };
                    Arc::new(CorpApi {
                        api_base,
                        corp_id: t.corp_id.clone(),
                        secret: t.secret.clone(),
                        account: Account::new(key, budget),
                    })
                })
                .clone();
            by_tenant.insert(t.tenant.clone(), api);
        }
        Self {
            http,
            rate_limit_pause: limits.rate_limit_pause,
            calls: Default::default(),
            tenants: Arc::new(by_tenant),
            appchats: Arc::new(appchats),
            list_page: 1000,
        }
    }

    /// Lists groups for resync in pages of `size` (1..=1000).
    pub fn with_list_page(mut self, size: u32) -> Self {
        self.list_page = size.clamp(1, 1000);
        self
    }

    /// Whether `chat_id` is one of the tenant's configured app group chats.
    pub fn is_appchat(&self, tenant: &str, chat_id: &str) -> bool {
        self.appchats.get(tenant).is_some_and(|chats| chats.contains(chat_id))
    }

    fn count_call(&self, api: &'static str) {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        metrics::counter!("groupwatch_wecom_api_calls_total", "api" => api).increment(1);
    }

    /// WeCom API calls made so far by this client.
    pub fn calls(&self) -> u64 {
        self.calls.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn api(&self, tenant: &str) -> Result<&Arc<CorpApi>, ApiError> {
        self.tenants
            .get(tenant)
            .ok_or_else(|| ApiError::Permanent { errcode: 0, errmsg: format!("unknown tenant {tenant:?}") })
    }

    /// Every account this client spends, to join them to the cluster's shared budget.
    pub fn accounts(&self) -> Vec<Arc<Account>> {
        let mut seen = HashSet::new();
        self.tenants.values().filter(|a| seen.insert(a.account.key().to_owned())).map(|a| a.account.clone()).collect()
    }

    /// A valid token, fetching one if there is none or `stale` is the cached one.
    async fn token(&self, api: &CorpApi, stale: Option<&str>) -> Result<String, ApiError> {
        api.account.token(stale, || self.fetch_token(api)).await
    }

    /// `gettoken`: a new token and how long to use it.
    async fn fetch_token(&self, api: &CorpApi) -> Result<(String, Duration), ApiError> {
        self.count_call("gettoken");
        let resp = self
            .http
            .get(format!("{}/cgi-bin/gettoken", api.api_base))
            .query(&[("corpid", api.corp_id.as_str()), ("corpsecret", api.secret.expose())])
            .send()
            .await
            .map_err(transport)?;
        if resp.status().is_server_error() {
            return Err(ApiError::Transient(format!("gettoken: HTTP {}", resp.status())));
        }
        let body = read_answer(resp, "gettoken").await?;
        let status: Status =
            serde_json::from_value(body.clone()).unwrap_or(Status { errcode: -1, errmsg: String::new() });
        if status.errcode != 0 {
            tracing::warn!(corp_id = %api.corp_id, errcode = status.errcode, errmsg = %status.errmsg, "gettoken failed");
            return Err(classify(status.errcode, format!("gettoken: {}", status.errmsg), self.rate_limit_pause));
        }
        let token: TokenResponse = serde_json::from_value(body)
            .map_err(|e| ApiError::Transient(format!("gettoken: unexpected answer: {e}")))?;
        let stated = Duration::from_secs(token.expires_in).min(MAX_TOKEN_LIFETIME);
        let lifetime = stated.saturating_sub(TOKEN_MARGIN).max(Duration::from_secs(60));
        Ok((token.access_token, lifetime))
    }

    /// POSTs `body` to an API path with the tenant's token, within the corp's rate limit and
    /// concurrency bound; refreshes the token and retries once when WeCom says it is invalid or
    /// expired. A non-zero errcode is classified ([`ApiError`]).
    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        tenant: &str,
        api_name: &'static str,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<T, ApiError> {
        self.send(tenant, api_name, path, Payload::Json(body)).await
    }

    /// [`WecomClient::call`] for the APIs that WeCom serves as GET with query parameters.
    pub(crate) async fn call_get<T: DeserializeOwned>(
        &self,
        tenant: &str,
        api_name: &'static str,
        path: &str,
        params: &[(&str, &str)],
    ) -> Result<T, ApiError> {
        self.send(tenant, api_name, path, Payload::Query(params)).await
    }

    async fn send<T: DeserializeOwned>(
        &self,
        tenant: &str,
        api_name: &'static str,
        path: &str,
        payload: Payload<'_>,
    ) -> Result<T, ApiError> {
        let api = self.api(tenant)?;
        let _permit = api.account.admit().await?;
        let mut stale: Option<String> = None;
        loop {
            let token = self.token(api, stale.as_deref()).await?;
            api.account.pace().await;
            self.count_call(api_name);
            let url = format!("{}{path}", api.api_base);
            let request = match payload {
                Payload::Json(body) => self.http.post(url).json(body),
                Payload::Query(params) => self.http.get(url).query(params),
            };
            let resp = request.query(&[("access_token", token.as_str())]).send().await.map_err(transport)?;
            if !resp.status().is_success() {
                return Err(ApiError::Transient(format!("{api_name}: HTTP {}", resp.status())));
            }
            let value = read_answer(resp, api_name).await?;
            let status: Status = serde_json::from_value(value.clone())
                .map_err(|e| ApiError::Transient(format!("{api_name}: unexpected answer: {e}")))?;
            match status.errcode {
                0 => {
                    return serde_json::from_value(value)
                        .map_err(|e| ApiError::Transient(format!("{api_name}: unexpected answer: {e}")))
                }
                code if TOKEN_ERRCODES.contains(&code) && stale.is_none() => {
                    tracing::info!(tenant, errcode = code, "access token rejected; refreshing");
                    stale = Some(token);
                }
                code => {
                    let err = classify(code, status.errmsg, self.rate_limit_pause);
                    if let ApiError::RateLimited { wait, .. } = &err {
                        api.account.pause(*wait).await;
                    }
                    if matches!(err, ApiError::Gone { .. }) {
                        // How a dismissal is confirmed: expected, not a fault.
                        tracing::info!(tenant, api = api_name, errcode = code, "WeCom says the group is gone");
                    } else {
                        tracing::warn!(tenant, api = api_name, errcode = code, error = %err, "WeCom API error");
                    }
                    return Err(err);
                }
            }
        }
    }

    pub async fn group_chat(&self, tenant: &str, chat_id: &str) -> Result<GroupSnapshot, ApiError> {
        let body = json!({ "chat_id": chat_id, "need_name": 1 });
        let resp: GroupChatResponse =
            self.call(tenant, "groupchat_get", "/cgi-bin/externalcontact/groupchat/get", &body).await?;
        Ok(resp.group_chat.into())
    }

    /// An app group chat (`appchat/get`): no member version, members known by userid only.
    pub async fn app_chat(&self, tenant: &str, chat_id: &str) -> Result<GroupSnapshot, ApiError> {
        let resp: AppChatResponse =
            self.call_get(tenant, "appchat_get", "/cgi-bin/appchat/get", &[("chatid", chat_id)]).await?;
        Ok(resp.chat_info.into())
    }

    /// Every chat visible to the tenant's app, optionally only those of `owners` (batched by
    /// 100, as WeCom requires), following cursors to the end.
    pub async fn list_chats(
        &self,
        tenant: &str,
        owners: &[String],
        page_size: u32,
    ) -> Result<Vec<ListedChat>, ApiError> {
        let batches: Vec<Option<&[String]>> =
            if owners.is_empty() { vec![None] } else { owners.chunks(OWNER_BATCH).map(Some).collect() };
        let mut chats = Vec::new();
        for batch in batches {
            let mut cursor = String::new();
            // A cursor WeCom already gave would page through the same groups for ever.
            let mut seen = std::collections::HashSet::new();
            loop {
                let mut body = json!({ "status_filter": 0, "cursor": cursor, "limit": page_size.clamp(1, 1000) });
                if let Some(owners) = batch {
                    body["owner_filter"] = json!({ "userid_list": owners });
                }
                let page: ListResponse =
                    self.call(tenant, "groupchat_list", "/cgi-bin/externalcontact/groupchat/list", &body).await?;
                chats.extend(page.group_chat_list);
                if page.next_cursor.is_empty() {
                    break;
                }
                if !seen.insert(page.next_cursor.clone()) {
                    return Err(ApiError::Transient(format!(
                        "groupchat_list: next_cursor repeats an earlier one after {} pages; stopped listing",
                        seen.len() + 1
                    )));
                }
                cursor = page.next_cursor;
            }
        }
        Ok(chats)
    }
}

#[async_trait]
impl GroupSource for WecomClient {
    fn consistency(&self) -> Consistency {
        Consistency::MemberVersion
    }

    async fn fetch_group(&self, tenant: &str, chat_id: &str) -> Result<GroupSnapshot, ApiError> {
        if self.is_appchat(tenant, chat_id) {
            return self.app_chat(tenant, chat_id).await;
        }
        self.group_chat(tenant, chat_id).await
    }
}

#[async_trait]
impl GroupLister for WecomClient {
    async fn list_groups(&self, tenant: &str, owners: &[String]) -> Result<Vec<String>, ApiError> {
        Ok(self.list_chats(tenant, owners, self.list_page).await?.into_iter().map(|c| c.chat_id).collect())
    }

    fn calls(&self) -> u64 {
        WecomClient::calls(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doc_example_maps_to_snapshot() {
        let doc = include_str!("../../../fixtures/wecom/groupchat_get.json");
        let resp: GroupChatResponse = serde_json::from_str(doc).unwrap();
        let s: GroupSnapshot = resp.group_chat.into();
        assert_eq!(s.chat_id, "wrOgQhDgAAMYQiS5ol9G7gK9JVAAAA");
        assert_eq!(s.owner, "ZhuShengBen");
        assert_eq!(s.admins, ["sam", "pony"]);
        assert_eq!(s.member_version.as_deref(), Some("71217227bbd112ecfe3a49c482195cb4"));
        assert_eq!(s.members[0].userid, "abel");
        assert_eq!(s.members[0].invitor.as_deref(), Some("jack"));
        assert_eq!(s.members[0].member_type, Some(1));
        assert_eq!(s.members[1].unionid.as_deref(), Some("ozynqsulJFCZ2z1aYeS8h-nuasdAAA"));
        assert_eq!(s.members[1].invitor, None);
        assert_eq!(s.members[1].name.as_deref(), Some("王语嫣"));
    }

    #[test]
    fn member_state_is_mapped_when_present() {
        let body = json!({"group_chat": {"chat_id": "wrC", "owner": "o", "member_list": [
            {"userid": "a", "type": 2, "join_time": 1, "join_scene": 3, "state": "klsdup3kj3s1"},
            {"userid": "b", "type": 2, "join_time": 1, "join_scene": 3, "state": ""},
            {"userid": "c", "type": 1, "join_time": 1, "join_scene": 1}
        ]}});
        let resp: GroupChatResponse = serde_json::from_value(body).unwrap();
        let s: GroupSnapshot = resp.group_chat.into();
        let states: Vec<_> = s.members.iter().map(|m| m.state.as_deref()).collect();
        assert_eq!(states, [Some("klsdup3kj3s1"), None, None]);
    }

    #[test]
    fn app_chat_info_maps_to_a_snapshot_of_userids() {
        use crate::core::model::Role;
        let body = json!({"errcode": 0, "errmsg": "ok", "chat_info": {"chatid": "CHATID", "name": "NAME",
            "owner": "userid2", "userlist": ["userid3", "userid1", "userid2"], "chat_type": 0}});
        let resp: AppChatResponse = serde_json::from_value(body).unwrap();
        let s: GroupSnapshot = resp.chat_info.into();
        assert_eq!((s.chat_id.as_str(), s.name.as_str(), s.owner.as_str()), ("CHATID", "NAME", "userid2"));
        assert_eq!(s.member_version, None);
        let ids: Vec<_> = s.members.iter().map(|m| (m.userid.as_str(), m.role)).collect();
        assert_eq!(
            ids,
            [("userid1", Some(Role::Member)), ("userid2", Some(Role::Owner)), ("userid3", Some(Role::Member))]
        );
    }

    #[test]
    fn errcodes_are_classified() {
        let pause = Duration::from_secs(60);
        assert!(matches!(classify(-1, "busy".into(), pause), ApiError::Transient(_)));
        assert!(matches!(classify(45033, "".into(), pause), ApiError::Transient(_)));
        assert_eq!(classify(45009, "".into(), pause), ApiError::RateLimited { errcode: 45009, wait: pause });
        assert_eq!(classify(48002, "no".into(), pause), ApiError::Permanent { errcode: 48002, errmsg: "no".into() });
    }
}
