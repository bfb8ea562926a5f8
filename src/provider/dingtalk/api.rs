//! DingTalk's server API as groupwatch uses it: `gettoken` and `chat/get` (oapi: HTTP 200 with
//! an `errcode`). Each (api_base, app_key) is one [`Account`] keyed `dingtalk:<app_key>`: one
//! token (refreshed before its 7200 s end, and when DingTalk calls it invalid or expired, after
//! which the call is retried once), one rate, one pause.

use async_trait::async_trait;
use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use super::config::DingtalkTenant;
use crate::config::Secret;
use crate::core::consistency::Consistency;
use crate::core::model::{GroupSnapshot, Member, Provider};
use crate::provider::account::{Account, Budget};
use crate::provider::answer::transport;
use crate::provider::wecom::ApiLimits;
use crate::provider::{ApiError, GroupLister, GroupSource};
use crate::store::SnapshotStore;

const TOKEN_MARGIN: Duration = Duration::from_secs(300);
/// 40001 invalid token, 40014 不合法的access_token, 42001 access_token超时.
const TOKEN_ERRCODES: [i64; 3] = [40001, 40014, 42001];
/// 40016 无效的chatid: what chat/get answers for a chat that is gone (or never was this app's).
const GROUP_GONE: i64 = 40016;
/// chat/get's `status` of a dismissed (已解散) group.
const STATUS_DISMISSED: i64 = 2;
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(86_400);
const MAX_ANSWER_BYTES: usize = 8 * 1024 * 1024;

struct AppApi {
    api_base: String,
    app_key: String,
    app_secret: Secret,
    account: Arc<Account>,
}

/// The `chat/get` client of every DingTalk tenant.
#[derive(Clone)]
pub struct DingtalkClient {
    http: reqwest::Client,
    rate_limit_pause: Duration,
    tenants: Arc<HashMap<String, Arc<AppApi>>>,
}

#[derive(Deserialize)]
struct Status {
    #[serde(default)]
    errcode: i64,
    #[serde(default)]
    errmsg: String,
    /// The egress-IP ban's answer (`{"status":1111,"wait":5,...}`, protocols-2 A5.6) has no
    /// errcode, only this.
    #[serde(default)]
    wait: Option<u64>,
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
struct ChatGetResponse {
    chat_info: ChatInfo,
}

#[derive(Deserialize)]
struct ChatInfo {
    #[serde(default)]
    chatid: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    owner: String,
    #[serde(default)]
    useridlist: Vec<String>,
    /// 1 normal, 2 dismissed; absent in the documented sample.
    #[serde(default)]
    status: Option<i64>,
}

impl ChatInfo {
    fn into_snapshot(self, asked: &str) -> GroupSnapshot {
        let chat_id = if self.chatid.is_empty() { asked.to_owned() } else { self.chatid };
        GroupSnapshot {
            name: self.name,
            owner: self.owner,
            // chat/get knows members by userid only; the role follows from `owner`.
            members: self.useridlist.iter().map(|u| Member::unknown(u)).collect(),
            ..GroupSnapshot::empty(&chat_id)
        }
        .with_roles()
        .normalised()
    }
}

/// Classifies a non-zero errcode.
fn classify(errcode: i64, errmsg: String, rate_limit_pause: Duration) -> ApiError {
    match errcode {
        // -1 系统繁忙; 90002 is DingTalk's global per-API limit, shared with every other app:
        // pausing this account would not lift it, retrying later does.
        -1 | 90002 => ApiError::Transient(format!("errcode {errcode}: {errmsg}")),
        // Per-app frequency limits (90005 per second, 90006 per minute, 90018 QPS).
        90005 | 90006 | 90018 => ApiError::RateLimited { errcode, wait: rate_limit_pause },
        GROUP_GONE => ApiError::Gone { errcode },
        _ => ApiError::Permanent { errcode, errmsg },
    }
}

async fn read_answer(resp: reqwest::Response, api_name: &str) -> Result<serde_json::Value, ApiError> {
    crate::provider::answer::read_json(resp, api_name, MAX_ANSWER_BYTES).await
}

fn count_call(api: &'static str) {
    metrics::counter!("groupwatch_dingtalk_api_calls_total", "provider" => "dingtalk", "api" => api).increment(1);
}

impl DingtalkClient {
    pub fn new(tenants: &[DingtalkTenant], limits: ApiLimits) -> Self {
        let http = reqwest::Client::builder()
            .timeout(limits.timeout)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("a TLS backend is compiled in");
        let budget = Budget {
            per_minute: limits.per_minute,
            concurrency: limits.concurrency,
            token_fetch_timeout: limits.timeout,
        };
        // Two tenants of one app share its token and its limits.
        let mut apps: HashMap<(String, String), Arc<AppApi>> = HashMap::new();
        let mut by_tenant = HashMap::new();
        for t in tenants {
            let api_base = t.api_base.trim_end_matches('/').to_owned();
            let api = apps
                .entry((api_base.clone(), t.app_key.clone()))
                .or_insert_with(|| {
                    Arc::new(AppApi {
                        api_base,
                        app_key: t.app_key.clone(),
                        app_secret: t.app_secret.clone(),
                        account: Account::new(format!("dingtalk:{}", t.app_key), budget),
                    })
                })
                .clone();
            by_tenant.insert(t.tenant.clone(), api);
        }
        Self { http, rate_limit_pause: limits.rate_limit_pause, tenants: Arc::new(by_tenant) }
    }

    /// Every account this client spends, to join them to the cluster's shared budget.
    pub fn accounts(&self) -> Vec<Arc<Account>> {
        let mut seen = HashSet::new();
        self.tenants.values().filter(|a| seen.insert(a.account.key().to_owned())).map(|a| a.account.clone()).collect()
    }

    fn api(&self, tenant: &str) -> Result<&Arc<AppApi>, ApiError> {
        self.tenants
            .get(tenant)
            .ok_or_else(|| ApiError::Permanent { errcode: 0, errmsg: format!("unknown dingtalk tenant {tenant:?}") })
    }

    async fn fetch_token(&self, api: &AppApi) -> Result<(String, Duration), ApiError> {
        count_call("gettoken");
        let resp = self
            .http
            .get(format!("{}/gettoken", api.api_base))
            .query(&[("appkey", api.app_key.as_str()), ("appsecret", api.app_secret.expose())])
            .send()
            .await
            .map_err(transport)?;
        if !resp.status().is_success() {
            return Err(ApiError::Transient(format!("gettoken: HTTP {}", resp.status())));
        }
        let body = read_answer(resp, "gettoken").await?;
        let status: Status = serde_json::from_value(body.clone())
            .map_err(|e| ApiError::Transient(format!("gettoken: unexpected answer: {e}")))?;
        if status.errcode != 0 {
            tracing::warn!(app_key = %api.app_key, errcode = status.errcode, errmsg = %status.errmsg, "dingtalk gettoken failed");
            return Err(classify(status.errcode, format!("gettoken: {}", status.errmsg), self.rate_limit_pause));
        }
        let token: TokenResponse = serde_json::from_value(body)
            .map_err(|e| ApiError::Transient(format!("gettoken: unexpected answer: {e}")))?;
        let stated = Duration::from_secs(token.expires_in).min(MAX_TOKEN_LIFETIME);
        Ok((token.access_token, stated.saturating_sub(TOKEN_MARGIN).max(Duration::from_secs(60))))
    }

    /// `GET {api_base}{path}?access_token=…&params`, within the app's budget; refreshes the
    /// token and retries once when DingTalk refuses it.
    async fn get(
        &self,
        tenant: &str,
        api_name: &'static str,
        path: &str,
        params: &[(&str, &str)],
    ) -> Result<serde_json::Value, ApiError> {
        let api = self.api(tenant)?;
        let _permit = api.account.admit().await?;
        let mut stale: Option<String> = None;
        loop {
            let token = api.account.token(stale.as_deref(), || self.fetch_token(api)).await?;
            api.account.pace().await;
            count_call(api_name);
            let resp = self
                .http
                .get(format!("{}{path}", api.api_base))
                .query(params)
                .query(&[("access_token", token.as_str())])
                .send()
                .await
                .map_err(transport)?;
            if !resp.status().is_success() {
                return Err(ApiError::Transient(format!("{api_name}: HTTP {}", resp.status())));
            }
            let value = read_answer(resp, api_name).await?;
            let status: Status = serde_json::from_value(value.clone())
                .map_err(|e| ApiError::Transient(format!("{api_name}: unexpected answer: {e}")))?;
            if let Some(wait) = status.wait.filter(|_| value.get("errcode").is_none()) {
                let err = ApiError::RateLimited { errcode: 0, wait: Duration::from_secs(wait.max(1)) };
                api.account.pause(Duration::from_secs(wait.max(1))).await;
                return Err(err);
            }
            match status.errcode {
                0 => return Ok(value),
                code if TOKEN_ERRCODES.contains(&code) && stale.is_none() => {
                    tracing::info!(provider = "dingtalk", tenant, errcode = code, "access token rejected; refreshing");
                    stale = Some(token);
                }
                code => {
                    let err = classify(code, status.errmsg, self.rate_limit_pause);
                    if let ApiError::RateLimited { wait, .. } = &err {
                        api.account.pause(*wait).await;
                    }
                    if !matches!(err, ApiError::Gone { .. }) {
                        tracing::warn!(provider = "dingtalk", tenant, api = api_name, errcode = code, error = %err, "DingTalk API error");
                    }
                    return Err(err);
                }
            }
        }
    }

    /// `chat/get`: the group, or [`ApiError::Gone`] when it is dismissed (`status` 2, or 40016).
    pub async fn chat(&self, tenant: &str, chat_id: &str) -> Result<GroupSnapshot, ApiError> {
        let value = self.get(tenant, "chat_get", "/chat/get", &[("chatid", chat_id)]).await?;
        let resp: ChatGetResponse = serde_json::from_value(value)
            .map_err(|e| ApiError::Transient(format!("chat_get: unexpected answer: {e}")))?;
        if resp.chat_info.status == Some(STATUS_DISMISSED) {
            return Err(ApiError::Gone { errcode: 0 });
        }
        Ok(resp.chat_info.into_snapshot(chat_id))
    }
}

#[async_trait]
impl GroupSource for DingtalkClient {
    fn consistency(&self) -> Consistency {
        Consistency::NamedMembers
    }

    async fn fetch_group(&self, tenant: &str, chat_id: &str) -> Result<GroupSnapshot, ApiError> {
        self.chat(tenant, chat_id).await
    }
}

/// DingTalk has no API that lists an app's chats (protocols-2 A5): resync re-fetches the chats
/// the store already knows for the tenant, the ones earlier events taught.
pub struct KnownChats {
    pub store: Arc<dyn SnapshotStore>,
}

#[async_trait]
impl GroupLister for KnownChats {
    async fn list_groups(&self, tenant: &str, _owners: &[String]) -> Result<Vec<String>, ApiError> {
        self.store
            .chat_ids(Provider::Dingtalk, tenant)
            .await
            .map_err(|e| ApiError::Transient(format!("reading the known chats: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::Role;

    #[test]
    fn the_documented_answer_maps_to_a_snapshot_with_roles() {
        let doc = include_str!("../../../fixtures/dingtalk/chat_get.json");
        let resp: ChatGetResponse = serde_json::from_str(doc).unwrap();
        let s = resp.chat_info.into_snapshot("x");
        assert_eq!(
            (s.chat_id.as_str(), s.name.as_str(), s.owner.as_str()),
            ("chate39f540dxxxx", "全员群", "manager4220")
        );
        assert_eq!(s.member_version, None);
        let members: Vec<_> = s.members.iter().map(|m| (m.userid.as_str(), m.role)).collect();
        assert_eq!(members, [("manager4220", Some(Role::Owner)), ("user123", Some(Role::Member))]);
    }

    #[test]
    fn errcodes_are_classified() {
        let pause = Duration::from_secs(60);
        assert!(matches!(classify(-1, "busy".into(), pause), ApiError::Transient(_)));
        assert!(matches!(classify(90002, "".into(), pause), ApiError::Transient(_)));
        assert_eq!(classify(90018, "".into(), pause), ApiError::RateLimited { errcode: 90018, wait: pause });
        assert_eq!(classify(40016, "无效的chatid".into(), pause), ApiError::Gone { errcode: 40016 });
        assert!(matches!(classify(43007, "no".into(), pause), ApiError::Permanent { errcode: 43007, .. }));
        let invalid: Status =
            serde_json::from_str(include_str!("../../../fixtures/dingtalk/chat_get_invalid_chatid.json")).unwrap();
        assert_eq!(classify(invalid.errcode, invalid.errmsg, pause), ApiError::Gone { errcode: 40016 });
    }
}
