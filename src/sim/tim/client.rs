//! The TIM admin API over HTTP ([`SimClient`] methods prefixed `tim_`), and the types its
//! answers use.

use super::*;

/// What a change route answers: the group after the change, and the callback sent for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimChange {
    pub group: TimGroup,
    pub callback: Option<TimCallbackReport>,
}

/// One callback the simulator sent, and what came back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimCallbackReport {
    /// `CallbackCommand`, e.g. `Group.CallbackAfterNewMemberJoin`.
    pub command: String,
    /// The full URL, query (with `Sign` and `RequestTime`) included.
    pub url: String,
    /// The JSON body sent.
    pub request_body: String,
    /// The HTTP status answered, if any answer came.
    pub status: Option<u16>,
    pub response_body: Option<String>,
    /// Connection refused, timeout, ...
    pub error: Option<String>,
}

/// The form of a callback's `EventTime` (milliseconds): both occur in Tencent's docs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimEventTime {
    /// `"EventTime": 1670574414123` (the Chinese docs).
    #[default]
    Number,
    /// `"EventTime": "1670574414123"` (the English and Japanese docs).
    String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TimJoinType {
    Invited,
    Apply,
}

impl TimJoinType {
    pub fn as_str(self) -> &'static str {
        match self {
            TimJoinType::Invited => "Invited",
            TimJoinType::Apply => "Apply",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TimExitType {
    Quit,
    Kicked,
}

impl TimExitType {
    pub fn as_str(self) -> &'static str {
        match self {
            TimExitType::Quit => "Quit",
            TimExitType::Kicked => "Kicked",
        }
    }
}

/// Whether and how a change is announced to the app's callback URL. The default sends nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimNotify {
    pub callback: bool,
    pub event_time: TimEventTime,
    /// `Operator_Account`; default the app admin (or the member, for a Quit).
    pub operator: Option<String>,
}

impl TimNotify {
    /// Send the callback, `EventTime` as a number.
    pub fn callback() -> Self {
        Self { callback: true, ..Self::default() }
    }

    pub fn event_time(mut self, form: TimEventTime) -> Self {
        self.event_time = form;
        self
    }

    pub fn operator(mut self, account: impl Into<String>) -> Self {
        self.operator = Some(account.into());
        self
    }

    fn query(&self) -> Vec<(&'static str, String)> {
        let mut query = Vec::new();
        if self.callback {
            query.push(("callback", "true".to_owned()));
        }
        if self.event_time == TimEventTime::String {
            query.push(("event_time", "string".to_owned()));
        }
        if let Some(operator) = &self.operator {
            query.push(("operator", operator.clone()));
        }
        query
    }
}

impl SimClient {
    fn tim_group_url(&self, sdk_app_id: u64, group_id: &str) -> String {
        format!(
            "{}/sim/tim/apps/{sdk_app_id}/groups/{}",
            self.base_url,
            utf8_percent_encode(group_id, NON_ALPHANUMERIC)
        )
    }

    async fn tim_change(&self, request: reqwest::RequestBuilder, what: &str) -> Result<TimChange, SimClientError> {
        Ok(self.send(request, what).await?.json().await?)
    }

    /// Sets (or with `None` clears) where the app's callbacks go.
    pub async fn tim_set_callback_url(&self, sdk_app_id: u64, url: Option<&str>) -> Result<(), SimClientError> {
        let endpoint = format!("{}/sim/tim/apps/{sdk_app_id}/callback_url", self.base_url);
        let body = serde_json::json!({ "url": url });
        self.send(self.http.put(endpoint).json(&body), "tim_set_callback_url").await?;
        Ok(())
    }

    /// Creates (may send CallbackAfterCreateGroup) or replaces a group (`GroupInfo` entry JSON).
    pub async fn tim_put_group(
        &self,
        sdk_app_id: u64,
        group_id: &str,
        group: serde_json::Value,
        notify: &TimNotify,
    ) -> Result<TimChange, SimClientError> {
        let request = self.http.put(self.tim_group_url(sdk_app_id, group_id)).query(&notify.query()).json(&group);
        self.tim_change(request, "tim_put_group").await
    }

    /// Changes any of `Name`, `Introduction`, `Notification`, `FaceUrl`, `Owner_Account`.
    pub async fn tim_patch_group(
        &self,
        sdk_app_id: u64,
        group_id: &str,
        patch: serde_json::Value,
        notify: &TimNotify,
    ) -> Result<TimChange, SimClientError> {
        let request = self.http.patch(self.tim_group_url(sdk_app_id, group_id)).query(&notify.query()).json(&patch);
        self.tim_change(request, "tim_patch_group").await
    }

    pub async fn tim_destroy_group(
        &self,
        sdk_app_id: u64,
        group_id: &str,
        notify: &TimNotify,
    ) -> Result<TimChange, SimClientError> {
        let request = self.http.delete(self.tim_group_url(sdk_app_id, group_id)).query(&notify.query());
        self.tim_change(request, "tim_destroy_group").await
    }

    /// Adds members (a JSON array of `MemberList` entries; `{"Member_Account": "x"}` suffices).
    pub async fn tim_add_members(
        &self,
        sdk_app_id: u64,
        group_id: &str,
        members: serde_json::Value,
        join_type: TimJoinType,
        notify: &TimNotify,
    ) -> Result<TimChange, SimClientError> {
        let url = format!("{}/members", self.tim_group_url(sdk_app_id, group_id));
        let body = serde_json::json!({ "members": members, "join_type": join_type });
        self.tim_change(self.http.post(url).query(&notify.query()).json(&body), "tim_add_members").await
    }

    pub async fn tim_remove_members(
        &self,
        sdk_app_id: u64,
        group_id: &str,
        accounts: &[&str],
        exit_type: TimExitType,
        notify: &TimNotify,
    ) -> Result<TimChange, SimClientError> {
        let url = format!("{}/members", self.tim_group_url(sdk_app_id, group_id));
        let body = serde_json::json!({ "accounts": accounts, "exit_type": exit_type });
        self.tim_change(self.http.delete(url).query(&notify.query()).json(&body), "tim_remove_members").await
    }

    /// Injects faults, e.g. `json!({"error_code": 10006, "count": 2, "api": "get_group_info"})`.
    pub async fn tim_fault(&self, fault: serde_json::Value) -> Result<(), SimClientError> {
        self.send(self.http.post(format!("{}/sim/tim/faults", self.base_url)).json(&fault), "tim_fault").await?;
        Ok(())
    }

    pub async fn tim_clear_faults(&self) -> Result<(), SimClientError> {
        self.send(self.http.delete(format!("{}/sim/tim/faults", self.base_url)), "tim_clear_faults").await?;
        Ok(())
    }

    pub async fn tim_stats(&self) -> Result<TimStats, SimClientError> {
        Ok(self.send(self.http.get(format!("{}/sim/tim/stats", self.base_url)), "tim_stats").await?.json().await?)
    }

    pub async fn tim_reset_stats(&self) -> Result<(), SimClientError> {
        self.send(self.http.delete(format!("{}/sim/tim/stats", self.base_url)), "tim_reset_stats").await?;
        Ok(())
    }
}
