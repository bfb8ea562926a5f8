//! The admin API over HTTP, for tests and demos that run the simulator in another process.

use super::*;

#[derive(Debug, thiserror::Error)]
pub enum SimClientError {
    #[error("request to the simulator failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("the simulator refused {what}: HTTP {status}: {body}")]
    Refused { what: String, status: u16, body: String },
}

/// The admin API over HTTP, for tests and demos that run the simulator in another process.
#[derive(Debug, Clone)]
pub struct SimClient {
    pub(super) base_url: String,
    pub(super) http: reqwest::Client,
}

impl SimClient {
    /// `base_url` as `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn new(base_url: impl Into<String>) -> Self {
        let http = reqwest::Client::builder().no_proxy().build().unwrap_or_default();
        Self { base_url: base_url.into().trim_end_matches('/').to_owned(), http }
    }

    fn group_url(&self, corp: &str, chat_id: &str) -> String {
        format!("{}/sim/corps/{}/groups/{}", self.base_url, segment(corp), segment(chat_id))
    }

    pub(super) async fn send(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<reqwest::Response, SimClientError> {
        let response = request.send().await?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        Err(SimClientError::Refused { what: what.to_owned(), status, body })
    }

    async fn version(&self, request: reqwest::RequestBuilder, what: &str) -> Result<String, SimClientError> {
        #[derive(Deserialize)]
        struct Answer {
            member_version: String,
        }
        let answer: Answer = self.send(request, what).await?.json().await?;
        Ok(answer.member_version)
    }

    /// Adds a member (WeCom `member_list` entry JSON); returns the new member_version.
    pub async fn add_member(
        &self,
        corp: &str,
        chat_id: &str,
        member: serde_json::Value,
    ) -> Result<String, SimClientError> {
        let url = format!("{}/members", self.group_url(corp, chat_id));
        self.version(self.http.post(url).json(&member), "add_member").await
    }

    /// Removes a member; returns the new member_version.
    pub async fn remove_member(&self, corp: &str, chat_id: &str, userid: &str) -> Result<String, SimClientError> {
        let url = format!("{}/members/{}", self.group_url(corp, chat_id), segment(userid));
        self.version(self.http.delete(url), "remove_member").await
    }

    /// Creates or replaces a group (WeCom `group_chat` JSON); returns the new member_version.
    pub async fn put_group(
        &self,
        corp: &str,
        chat_id: &str,
        group: serde_json::Value,
    ) -> Result<String, SimClientError> {
        self.version(self.http.put(self.group_url(corp, chat_id)).json(&group), "put_group").await
    }

    /// Changes any of `name`, `owner`, `notice`.
    pub async fn patch_group(&self, corp: &str, chat_id: &str, patch: serde_json::Value) -> Result<(), SimClientError> {
        self.send(self.http.patch(self.group_url(corp, chat_id)).json(&patch), "patch_group").await?;
        Ok(())
    }

    pub async fn dismiss_group(&self, corp: &str, chat_id: &str) -> Result<(), SimClientError> {
        self.send(self.http.delete(self.group_url(corp, chat_id)), "dismiss_group").await?;
        Ok(())
    }

    /// Injects faults, e.g. `json!({"errcode": 45009, "count": 2})`; see `POST /sim/faults`.
    pub async fn fault(&self, fault: serde_json::Value) -> Result<(), SimClientError> {
        self.send(self.http.post(format!("{}/sim/faults", self.base_url)).json(&fault), "fault").await?;
        Ok(())
    }

    pub async fn clear_faults(&self) -> Result<(), SimClientError> {
        self.send(self.http.delete(format!("{}/sim/faults", self.base_url)), "clear_faults").await?;
        Ok(())
    }

    pub async fn stats(&self) -> Result<SimStats, SimClientError> {
        Ok(self.send(self.http.get(format!("{}/sim/stats", self.base_url)), "stats").await?.json().await?)
    }

    /// When each counted WeCom API call arrived.
    pub async fn call_times(&self) -> Result<SimCallTimes, SimClientError> {
        Ok(self.send(self.http.get(format!("{}/sim/call-times", self.base_url)), "call_times").await?.json().await?)
    }

    pub async fn reset_stats(&self) -> Result<(), SimClientError> {
        self.send(self.http.delete(format!("{}/sim/stats", self.base_url)), "reset_stats").await?;
        Ok(())
    }

    /// The WeCom API requests received so far (oldest first), as WeCom would have seen them.
    pub async fn requests(&self) -> Result<Vec<RecordedRequest>, SimClientError> {
        Ok(self.send(self.http.get(format!("{}/sim/requests", self.base_url)), "requests").await?.json().await?)
    }

    pub async fn clear_requests(&self) -> Result<(), SimClientError> {
        self.send(self.http.delete(format!("{}/sim/requests", self.base_url)), "clear_requests").await?;
        Ok(())
    }

    /// A customer joins through a join way (`{"userid", "join_time", ...}`, optionally
    /// `"chat_id"`); returns the chat joined and its new member_version.
    pub async fn join_via_join_way(
        &self,
        corp: &str,
        config_id: &str,
        join: serde_json::Value,
    ) -> Result<(String, String), SimClientError> {
        #[derive(Deserialize)]
        struct Answer {
            chat_id: String,
            member_version: String,
        }
        let url = format!("{}/sim/corps/{}/join_ways/{}/join", self.base_url, segment(corp), segment(config_id));
        let answer: Answer = self.send(self.http.post(url).json(&join), "join_via_join_way").await?.json().await?;
        Ok((answer.chat_id, answer.member_version))
    }

    fn appchat_url(&self, corp: &str, chatid: &str) -> String {
        format!("{}/sim/corps/{}/appchats/{}", self.base_url, segment(corp), segment(chatid))
    }

    /// Creates or replaces an app group chat (`{"name", "owner", "userlist"}`).
    pub async fn put_appchat(&self, corp: &str, chatid: &str, chat: serde_json::Value) -> Result<(), SimClientError> {
        self.send(self.http.put(self.appchat_url(corp, chatid)).json(&chat), "put_appchat").await?;
        Ok(())
    }

    pub async fn add_appchat_member(&self, corp: &str, chatid: &str, userid: &str) -> Result<(), SimClientError> {
        let url = format!("{}/members", self.appchat_url(corp, chatid));
        let body = serde_json::json!({ "userid": userid });
        self.send(self.http.post(url).json(&body), "add_appchat_member").await?;
        Ok(())
    }

    pub async fn remove_appchat_member(&self, corp: &str, chatid: &str, userid: &str) -> Result<(), SimClientError> {
        let url = format!("{}/members/{}", self.appchat_url(corp, chatid), segment(userid));
        self.send(self.http.delete(url), "remove_appchat_member").await?;
        Ok(())
    }

    pub async fn state(&self) -> Result<SimState, SimClientError> {
        Ok(self.send(self.http.get(format!("{}/sim/state", self.base_url)), "state").await?.json().await?)
    }
}

fn segment(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}
