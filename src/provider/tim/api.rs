//! Tencent IM's REST group API: `get_group_info` (up to 50 groups per call),
//! `get_group_member_info` (paging groups larger than one answer) and `get_appid_group_list`
//! (resync), each `POST {api_base}/v4/group_open_http_svc/{command}?sdkappid=&identifier=
//! &usersig=&random=&contenttype=json` (protocols.md §5.3–5.5, protocols-2 B1).
//!
//! Each app (api_base, SDKAppID) is one [`Account`] (`tim:<sdk_app_id>`): its rate (200 calls/s by
//! default, Tencent's limit), calls in flight and pauses. The UserSig is made locally from the
//! secret key and cached until well before it expires; a call refused for its sig is retried once
//! with a fresh one.

use async_trait::async_trait;
use rand::Rng;
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::config::TimTenant;
use super::usersig::{UserSigCache, DEFAULT_EXPIRE_SECS};
use crate::core::clock::now_ms;
use crate::core::consistency::Consistency;
use crate::core::model::{GroupSnapshot, Member, Role};
use crate::provider::account::{Account, Budget};
use crate::provider::answer::transport;
use crate::provider::{ApiError, GroupLister, GroupSource};

/// get_group_info takes at most 50 groups (protocols.md §5.4).
pub const GROUP_INFO_BATCH: usize = 50;
/// Tencent's default REST limit per app: 200 calls/s.
pub const DEFAULT_CALLS_PER_SECOND: u32 = 200;
/// get_group_member_info page size: ≤ 200 allowed, 100 recommended.
const MEMBER_PAGE: usize = 100;
/// Tencent's limits are per second: a second's pause clears them.
const RATE_LIMIT_PAUSE: Duration = Duration::from_secs(1);
/// Most get_group_member_info pages read for one group (100 000 members), so a looping `Next`
/// cannot keep a fetch going for ever.
const MAX_MEMBER_PAGES: usize = 1_000;
/// The largest answer read: Tencent caps answers at 1 MB (10018); leave room.
const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// Codes of the group API (protocols.md §5.5 and the REST public codes).
const INTERNAL_ERROR: i64 = 10002;
const FREQUENCY_LIMIT: i64 = 10006;
const REST_FREQUENCY_LIMIT: i64 = 60007;
const GROUP_DESTROYED: i64 = 10010;
const GROUP_NOT_FOUND: i64 = 10015;
/// The UserSig was refused (expired, unparsable, failed verification): make a new one, once.
const USERSIG_ERRORS: [i64; 3] = [70001, 70003, 70009];

/// Classifies a non-zero `ErrorCode`.
pub fn classify(code: i64, info: String) -> ApiError {
    match code {
        INTERNAL_ERROR => ApiError::Transient(format!("ErrorCode {code}: {info}")),
        FREQUENCY_LIMIT | REST_FREQUENCY_LIMIT => ApiError::RateLimited { errcode: code, wait: RATE_LIMIT_PAUSE },
        GROUP_DESTROYED | GROUP_NOT_FOUND => ApiError::Gone { errcode: code },
        _ => ApiError::Permanent { errcode: code, errmsg: info },
    }
}

/// One app: where to call, as whom, and its budget.
struct AppApi {
    api_base: String,
    sdk_app_id: u64,
    identifier: String,
    usersig: Mutex<UserSigCache>,
    account: Arc<Account>,
}

/// Client-side limits, from `[worker]`.
#[derive(Debug, Clone, Copy)]
pub struct TimLimits {
    pub calls_per_second: u32,
    pub concurrency: u32,
    pub timeout: Duration,
}

impl TimLimits {
    pub fn of(worker: &crate::config::WorkerConfig) -> Self {
        Self {
            calls_per_second: DEFAULT_CALLS_PER_SECOND,
            concurrency: worker.api_concurrency,
            timeout: Duration::from_millis(worker.api_timeout_ms),
        }
    }
}

#[derive(Clone)]
pub struct TimClient {
    http: reqwest::Client,
    tenants: Arc<HashMap<String, Arc<AppApi>>>,
    calls: Arc<AtomicU64>,
    list_page: u32,
}

#[derive(Deserialize)]
struct Status {
    #[serde(rename = "ActionStatus", default)]
    action_status: String,
    #[serde(rename = "ErrorCode", default)]
    error_code: i64,
    #[serde(rename = "ErrorInfo", default)]
    error_info: String,
}

#[derive(Deserialize)]
struct GroupInfoAnswer {
    #[serde(rename = "GroupInfo", default)]
    group_info: Vec<GroupInfo>,
}

#[derive(Deserialize)]
struct GroupInfo {
    #[serde(rename = "GroupId")]
    group_id: String,
    #[serde(rename = "ErrorCode", default)]
    error_code: i64,
    #[serde(rename = "ErrorInfo", default)]
    error_info: String,
    #[serde(rename = "Type", default)]
    group_type: String,
    #[serde(rename = "Name", default)]
    name: String,
    #[serde(rename = "Notification", default)]
    notification: String,
    #[serde(rename = "Owner_Account", default)]
    owner_account: String,
    #[serde(rename = "CreateTime", default)]
    create_time: i64,
    #[serde(rename = "MemberNum", default)]
    member_num: Option<u64>,
    #[serde(rename = "MemberList", default)]
    member_list: Option<Vec<TimMember>>,
}

#[derive(Deserialize)]
struct TimMember {
    #[serde(rename = "Member_Account", alias = "Account")]
    member_account: String,
    #[serde(rename = "Role", default)]
    role: Option<String>,
    #[serde(rename = "JoinTime", default)]
    join_time: Option<i64>,
}

#[derive(Deserialize)]
struct MemberInfoAnswer {
    #[serde(rename = "MemberNum", default)]
    member_num: Option<u64>,
    #[serde(rename = "MemberList", default)]
    member_list: Vec<TimMember>,
    /// Community groups only.
    #[serde(rename = "Next", default)]
    next: Option<String>,
}

#[derive(Deserialize)]
struct GroupListAnswer {
    #[serde(rename = "GroupIdList", default)]
    group_id_list: Vec<ListedGroup>,
    #[serde(rename = "Next", default)]
    next: u64,
}

#[derive(Deserialize)]
struct ListedGroup {
    #[serde(rename = "GroupId")]
    group_id: String,
}

/// Owner/Admin/Member; Tencent's own sample has `"Member "`, so trimmed.
fn role(text: Option<&str>) -> Option<Role> {
    match text.map(str::trim) {
        Some("Owner") => Some(Role::Owner),
        Some("Admin") => Some(Role::Admin),
        Some("Member") => Some(Role::Member),
        _ => None,
    }
}

impl From<TimMember> for Member {
    fn from(m: TimMember) -> Self {
        Member {
            join_time: m.join_time.filter(|t| *t > 0),
            role: role(m.role.as_deref()),
            ..Member::unknown(&m.member_account)
        }
    }
}

/// A group's snapshot from its get_group_info entry and its full member list.
fn snapshot(g: GroupInfo, members: Vec<TimMember>) -> GroupSnapshot {
    let members: Vec<Member> = members.into_iter().map(Member::from).collect();
    let admins = members.iter().filter(|m| m.role == Some(Role::Admin)).map(|m| m.userid.clone()).collect();
    GroupSnapshot {
        chat_id: g.group_id,
        name: g.name,
        owner: g.owner_account,
        notice: g.notification,
        create_time: g.create_time,
        admins,
        member_version: None,
        members,
    }
    .normalised()
}

/// Reads an answer, refusing bodies over [`MAX_ANSWER_BYTES`] without buffering them.
async fn read_answer(resp: reqwest::Response, command: &str) -> Result<serde_json::Value, ApiError> {
    crate::provider::answer::read_json(resp, command, MAX_ANSWER_BYTES).await
}

fn unexpected(command: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::Transient(format!("{command}: unexpected answer: {e}"))
}

impl TimClient {
    pub fn new(tenants: &[TimTenant], limits: TimLimits) -> Self {
        let http = reqwest::Client::builder()
            .timeout(limits.timeout)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("a TLS backend is compiled in");
        let budget = Budget {
            per_minute: limits.calls_per_second.saturating_mul(60),
            concurrency: limits.concurrency,
            token_fetch_timeout: limits.timeout,
        };
        let mut apps: HashMap<(String, u64), Arc<AppApi>> = HashMap::new();
        let mut by_tenant = HashMap::new();
        for t in tenants {
            let api_base = t.api_base.trim_end_matches('/').to_owned();
            let api = apps
                .entry((api_base.clone(), t.sdk_app_id))
                .or_insert_with(|| {
                    Arc::new(AppApi {
                        api_base,
                        sdk_app_id: t.sdk_app_id,
                        identifier: t.identifier.clone(),
                        usersig: Mutex::new(UserSigCache::new(
                            t.sdk_app_id,
                            t.identifier.clone(),
                            t.secret_key.expose(),
                            DEFAULT_EXPIRE_SECS,
                        )),
                        account: Account::new(format!("tim:{}", t.sdk_app_id), budget),
                    })
                })
                .clone();
            by_tenant.insert(t.tenant.clone(), api);
        }
        Self { http, tenants: Arc::new(by_tenant), calls: Default::default(), list_page: 1000 }
    }

    /// Lists groups for resync in pages of `size` (1..=10 000).
    pub fn with_list_page(mut self, size: u32) -> Self {
        self.list_page = size.clamp(1, 10_000);
        self
    }

    /// Every account this client spends, to join them to the cluster's shared budget.
    pub fn accounts(&self) -> Vec<Arc<Account>> {
        let mut seen = std::collections::HashSet::new();
        self.tenants.values().filter(|a| seen.insert(a.account.key().to_owned())).map(|a| a.account.clone()).collect()
    }

    /// REST calls made so far by this client.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    fn api(&self, tenant: &str) -> Result<&Arc<AppApi>, ApiError> {
        self.tenants
            .get(tenant)
            .ok_or_else(|| ApiError::Permanent { errcode: 0, errmsg: format!("unknown tenant {tenant:?}") })
    }

    /// One REST call within the app's budget; a non-zero `ErrorCode` is classified. A refused
    /// UserSig is replaced and the call retried once.
    pub async fn call(
        &self,
        tenant: &str,
        command: &'static str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, ApiError> {
        let api = self.api(tenant)?;
        let _permit = api.account.admit().await?;
        let mut renewed = false;
        loop {
            let usersig = api.usersig.lock().expect("usersig lock").get(now_ms() / 1000);
            api.account.pace().await;
            self.calls.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("groupwatch_tim_api_calls_total", "api" => command).increment(1);
            let random = rand::thread_rng().gen::<u32>().to_string();
            let sdk_app_id = api.sdk_app_id.to_string();
            let resp = self
                .http
                .post(format!("{}/v4/group_open_http_svc/{command}", api.api_base))
                .query(&[
                    ("sdkappid", sdk_app_id.as_str()),
                    ("identifier", api.identifier.as_str()),
                    ("usersig", usersig.as_str()),
                    ("random", random.as_str()),
                    ("contenttype", "json"),
                ])
                .json(body)
                .send()
                .await
                .map_err(transport)?;
            let status = resp.status();
            if status.is_server_error() || status.as_u16() == 429 {
                return Err(ApiError::Transient(format!("{command}: HTTP {status}")));
            }
            if !status.is_success() {
                return Err(ApiError::Permanent {
                    errcode: -i64::from(status.as_u16()),
                    errmsg: format!("{command}: HTTP {status}"),
                });
            }
            let value = read_answer(resp, command).await?;
            let st: Status = serde_json::from_value(value.clone()).map_err(|e| unexpected(command, e))?;
            if st.error_code == 0 && st.action_status != "FAIL" {
                return Ok(value);
            }
            if USERSIG_ERRORS.contains(&st.error_code) && !renewed {
                tracing::info!(provider = "tim", tenant, errcode = st.error_code, "UserSig refused; making a new one");
                api.usersig.lock().expect("usersig lock").invalidate();
                renewed = true;
                continue;
            }
            let err = classify(st.error_code, st.error_info);
            if let ApiError::RateLimited { wait, .. } = &err {
                api.account.pause(*wait).await;
            }
            tracing::warn!(provider = "tim", tenant, api = command, errcode = st.error_code, error = %err, "Tencent IM API error");
            return Err(err);
        }
    }

    /// get_group_info for up to [`GROUP_INFO_BATCH`] groups; each id's own outcome, in order.
    async fn group_info_batch(&self, tenant: &str, ids: &[String]) -> Vec<Result<GroupSnapshot, ApiError>> {
        let body = json!({
            "GroupIdList": ids,
            "ResponseFilter": {
                "GroupBaseInfoFilter": ["Type", "Name", "Notification", "Owner_Account", "CreateTime", "MemberNum"],
                "MemberInfoFilter": ["Role", "JoinTime"],
            },
        });
        let answer = match self.call(tenant, "get_group_info", &body).await {
            Ok(value) => serde_json::from_value::<GroupInfoAnswer>(value).map_err(|e| unexpected("get_group_info", e)),
            Err(e) => Err(e),
        };
        let entries = match answer {
            Ok(a) => a.group_info,
            Err(e) => return ids.iter().map(|_| Err(e.clone())).collect(),
        };
        let mut by_id: HashMap<String, GroupInfo> = entries.into_iter().map(|g| (g.group_id.clone(), g)).collect();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(g) = by_id.remove(id) else {
                out.push(Err(ApiError::Transient(format!("get_group_info: no entry for group {id:?}"))));
                continue;
            };
            if g.error_code != 0 {
                out.push(Err(classify(g.error_code, g.error_info)));
                continue;
            }
            out.push(self.complete(tenant, g).await);
        }
        out
    }

    /// The group with its whole member list: get_group_info's may be cut short.
    async fn complete(&self, tenant: &str, mut g: GroupInfo) -> Result<GroupSnapshot, ApiError> {
        let listed = g.member_list.as_ref().map_or(0, Vec::len) as u64;
        // A count above what was listed (or a count without a list) is paged: an empty list
        // taken at its word would publish everyone's leave.
        let members = match (g.member_list.take(), g.member_num) {
            (_, Some(num)) if num > listed => {
                tracing::debug!(provider = "tim", tenant, chat_id = %g.group_id, listed, num, "paging the member list");
                self.all_members(tenant, &g.group_id, g.group_type == "Community").await?
            }
            (list, _) => list.unwrap_or_default(),
        };
        Ok(snapshot(g, members))
    }

    /// Every member through get_group_member_info: Limit/Offset, or Limit/Next for Community
    /// groups.
    async fn all_members(&self, tenant: &str, group_id: &str, community: bool) -> Result<Vec<TimMember>, ApiError> {
        let mut members: Vec<TimMember> = Vec::new();
        let mut next = String::new();
        for _ in 0..MAX_MEMBER_PAGES {
            let mut body = json!({
                "GroupId": group_id,
                "Limit": MEMBER_PAGE,
                "MemberInfoFilter": ["Role", "JoinTime"],
            });
            if community {
                body["Next"] = json!(next);
            } else {
                body["Offset"] = json!(members.len());
            }
            let value = self.call(tenant, "get_group_member_info", &body).await?;
            let page: MemberInfoAnswer =
                serde_json::from_value(value).map_err(|e| unexpected("get_group_member_info", e))?;
            let got = page.member_list.len();
            members.extend(page.member_list);
            let done = if community {
                next = page.next.unwrap_or_default();
                next.is_empty()
            } else {
                got < MEMBER_PAGE || page.member_num.is_some_and(|n| members.len() as u64 >= n)
            };
            if done || got == 0 {
                return Ok(members);
            }
        }
        Err(ApiError::Transient(format!("get_group_member_info: more than {MAX_MEMBER_PAGES} pages for {group_id}")))
    }
}

#[async_trait]
impl GroupSource for TimClient {
    fn consistency(&self) -> Consistency {
        Consistency::NamedMembers
    }

    async fn fetch_group(&self, tenant: &str, chat_id: &str) -> Result<GroupSnapshot, ApiError> {
        let mut out = self.group_info_batch(tenant, &[chat_id.to_owned()]).await;
        out.pop().unwrap_or_else(|| Err(ApiError::Transient("get_group_info: empty answer".into())))
    }

    async fn fetch_groups(&self, tenant: &str, chat_ids: &[String]) -> Vec<Result<GroupSnapshot, ApiError>> {
        let mut out = Vec::with_capacity(chat_ids.len());
        for chunk in chat_ids.chunks(GROUP_INFO_BATCH) {
            out.extend(self.group_info_batch(tenant, chunk).await);
        }
        out
    }
}

#[async_trait]
impl GroupLister for TimClient {
    async fn list_groups(&self, tenant: &str, _owners: &[String]) -> Result<Vec<String>, ApiError> {
        let mut groups = Vec::new();
        let mut next = 0u64;
        let mut seen = std::collections::HashSet::new();
        loop {
            let body = json!({ "Limit": self.list_page, "Next": next });
            let value = self.call(tenant, "get_appid_group_list", &body).await?;
            let page: GroupListAnswer =
                serde_json::from_value(value).map_err(|e| unexpected("get_appid_group_list", e))?;
            groups.extend(page.group_id_list.into_iter().map(|g| g.group_id));
            if page.next == 0 {
                return Ok(groups);
            }
            if !seen.insert(page.next) {
                return Err(ApiError::Transient("get_appid_group_list: Next repeats an earlier one".into()));
            }
            next = page.next;
        }
    }

    fn calls(&self) -> u64 {
        TimClient::calls(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> serde_json::Value {
        serde_json::from_str(
            &std::fs::read_to_string(format!("{}/fixtures/tim/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn get_group_info_fixture_maps_to_a_snapshot() {
        let answer: GroupInfoAnswer = serde_json::from_value(fixture("get_group_info.json")).unwrap();
        let g = answer.group_info.into_iter().next().unwrap();
        let members = g.member_list.as_ref().map_or(0, Vec::len);
        assert_eq!(g.member_num, Some(members as u64));
        let mut g = g;
        let list = g.member_list.take().unwrap();
        let s = snapshot(g, list);
        assert_eq!(s.chat_id, "@TGS#2J4SZEAEL");
        assert_eq!((s.name.as_str(), s.owner.as_str(), s.notice.as_str()), ("MyFirstGroup", "leckie", "TestGroup"));
        assert_eq!(s.create_time, 1_426_976_500);
        let m: Vec<_> = s.members.iter().map(|m| (m.userid.as_str(), m.role, m.join_time)).collect();
        assert_eq!(
            m,
            [("leckie", Some(Role::Owner), Some(1_425_976_500)), ("peter", Some(Role::Member), Some(1_425_976_500))]
        );
        assert_eq!(s.member_version, None);
    }

    #[test]
    fn member_info_fixture_trims_roles() {
        let answer: MemberInfoAnswer = serde_json::from_value(fixture("get_group_member_info.json")).unwrap();
        assert!(!answer.member_list.is_empty());
        for m in answer.member_list {
            assert!(role(m.role.as_deref()).is_some(), "{:?}", m.role);
        }
    }

    #[test]
    fn group_list_fixture() {
        let answer: GroupListAnswer = serde_json::from_value(fixture("get_appid_group_list.json")).unwrap();
        assert_eq!(answer.group_id_list.len(), 2);
        assert_eq!(answer.next, 4_454_685_361);
    }

    #[test]
    fn error_codes_are_classified() {
        assert!(matches!(classify(10002, "x".into()), ApiError::Transient(_)));
        assert_eq!(classify(10006, "x".into()), ApiError::RateLimited { errcode: 10006, wait: RATE_LIMIT_PAUSE });
        assert_eq!(classify(10010, "x".into()), ApiError::Gone { errcode: 10010 });
        assert_eq!(classify(10015, "x".into()), ApiError::Gone { errcode: 10015 });
        assert_eq!(classify(10007, "no".into()), ApiError::Permanent { errcode: 10007, errmsg: "no".into() });
    }
}
