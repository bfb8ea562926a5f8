//! `SimClient` methods for the DingTalk admin API.

use super::events::DingtalkCasing;
use super::*;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::{json, Value};

/// Asks a change to push its event: in which spelling, and by whom (default: the owner).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DingtalkPush {
    pub casing: DingtalkCasing,
    pub operator: Option<String>,
}

impl DingtalkPush {
    /// camelCase `data`, as Stream mode sends it today.
    pub fn camel() -> Self {
        Self::default()
    }

    /// PascalCase `data`, as legacy callbacks (and 2021 captures) have it.
    pub fn pascal() -> Self {
        Self { casing: DingtalkCasing::Pascal, operator: None }
    }

    /// The acting userid.
    pub fn by(mut self, operator: impl Into<String>) -> Self {
        self.operator = Some(operator.into());
        self
    }

    /// Adds the push options to a change body.
    fn apply(push: Option<&DingtalkPush>, mut body: Value) -> Value {
        if let (Some(push), Some(object)) = (push, body.as_object_mut()) {
            object.insert("push".into(), true.into());
            object.insert("casing".into(), json!(push.casing));
            if let Some(operator) = &push.operator {
                object.insert("operator".into(), operator.clone().into());
            }
        }
        body
    }
}

#[derive(Deserialize)]
struct ChangeAnswer {
    event_ids: Vec<String>,
}

fn segment(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

impl SimClient {
    fn dingtalk_url(&self, path: &str) -> String {
        format!("{}/sim/dingtalk{path}", self.base_url)
    }

    fn dingtalk_chat_url(&self, app_key: &str, chatid: &str) -> String {
        self.dingtalk_url(&format!("/apps/{}/chats/{}", segment(app_key), segment(chatid)))
    }

    async fn dingtalk_change(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<Vec<String>, SimClientError> {
        let answer: ChangeAnswer = self.send(request, what).await?.json().await?;
        Ok(answer.event_ids)
    }

    /// Creates or replaces a chat (state-file JSON: `chatid`, `openConversationId`, `name`,
    /// `owner`, `useridlist`, ...); returns it as stored.
    pub async fn dingtalk_put_chat(
        &self,
        app_key: &str,
        chatid: &str,
        chat: Value,
    ) -> Result<SimDingtalkChat, SimClientError> {
        let request = self.http.put(self.dingtalk_chat_url(app_key, chatid)).json(&chat);
        Ok(self.send(request, "dingtalk_put_chat").await?.json().await?)
    }

    /// The chat as the simulator holds it now.
    pub async fn dingtalk_chat(&self, app_key: &str, chatid: &str) -> Result<SimDingtalkChat, SimClientError> {
        let request = self.http.get(self.dingtalk_chat_url(app_key, chatid));
        Ok(self.send(request, "dingtalk_chat").await?.json().await?)
    }

    /// Changes `name` (→ chat_update_title), `owner` (→ chat_update_owner) and/or settings
    /// (`icon`, `chatBannedType`, ...); returns the pushed eventIds.
    pub async fn dingtalk_patch_chat(
        &self,
        app_key: &str,
        chatid: &str,
        patch: Value,
        push: Option<&DingtalkPush>,
    ) -> Result<Vec<String>, SimClientError> {
        let request = self.http.patch(self.dingtalk_chat_url(app_key, chatid)).json(&DingtalkPush::apply(push, patch));
        self.dingtalk_change(request, "dingtalk_patch_chat").await
    }

    /// Dismisses the chat (status 2, → chat_disband).
    pub async fn dingtalk_dismiss_chat(
        &self,
        app_key: &str,
        chatid: &str,
        push: Option<&DingtalkPush>,
    ) -> Result<Vec<String>, SimClientError> {
        let body = DingtalkPush::apply(push, json!({}));
        let request = self.http.delete(self.dingtalk_chat_url(app_key, chatid)).json(&body);
        self.dingtalk_change(request, "dingtalk_dismiss_chat").await
    }

    /// Adds members (→ chat_add_member).
    pub async fn dingtalk_add_members(
        &self,
        app_key: &str,
        chatid: &str,
        userids: &[&str],
        push: Option<&DingtalkPush>,
    ) -> Result<Vec<String>, SimClientError> {
        let body = DingtalkPush::apply(push, json!({ "userids": userids }));
        let url = format!("{}/members", self.dingtalk_chat_url(app_key, chatid));
        self.dingtalk_change(self.http.post(url).json(&body), "dingtalk_add_members").await
    }

    /// Removes members (→ chat_remove_member).
    pub async fn dingtalk_remove_members(
        &self,
        app_key: &str,
        chatid: &str,
        userids: &[&str],
        push: Option<&DingtalkPush>,
    ) -> Result<Vec<String>, SimClientError> {
        let body = DingtalkPush::apply(push, json!({ "userids": userids }));
        let url = format!("{}/members", self.dingtalk_chat_url(app_key, chatid));
        self.dingtalk_change(self.http.delete(url).json(&body), "dingtalk_remove_members").await
    }

    /// A member leaves by themselves (→ chat_quit; the push's operator is always the leaver).
    pub async fn dingtalk_quit(
        &self,
        app_key: &str,
        chatid: &str,
        userid: &str,
        push: Option<&DingtalkPush>,
    ) -> Result<Vec<String>, SimClientError> {
        let mut body = DingtalkPush::apply(push, json!({ "userid": userid }));
        if let Some(object) = body.as_object_mut() {
            object.remove("operator");
        }
        let url = format!("{}/quit", self.dingtalk_chat_url(app_key, chatid));
        self.dingtalk_change(self.http.post(url).json(&body), "dingtalk_quit").await
    }

    /// Pushes a raw event: `{"eventType": "…", "data": {…} or "text", "eventId"?: "…",
    /// "headers"?: {"k": "v"}}`; returns its eventId.
    pub async fn dingtalk_push_event(&self, app_key: &str, event: Value) -> Result<String, SimClientError> {
        let url = self.dingtalk_url(&format!("/apps/{}/events", segment(app_key)));
        let ids = self.dingtalk_change(self.http.post(url).json(&event), "dingtalk_push_event").await?;
        Ok(ids.into_iter().next().unwrap_or_default())
    }

    /// Injects faults or runs actions, e.g. `json!({"errcode": 90002, "count": 2})`,
    /// `json!({"disconnect": true})`, `json!({"redeliver": 1})`; see `POST /sim/dingtalk/faults`.
    pub async fn dingtalk_fault(&self, fault: Value) -> Result<DingtalkFaultAnswer, SimClientError> {
        let request = self.http.post(self.dingtalk_url("/faults")).json(&fault);
        Ok(self.send(request, "dingtalk_fault").await?.json().await?)
    }

    pub async fn dingtalk_clear_faults(&self) -> Result<(), SimClientError> {
        self.send(self.http.delete(self.dingtalk_url("/faults")), "dingtalk_clear_faults").await?;
        Ok(())
    }

    /// Changes settings, e.g. `json!({"ping_interval_ms": 100, "redelivery_delay_ms": 200})`;
    /// returns all of them.
    pub async fn dingtalk_settings(&self, settings: Value) -> Result<DingtalkSettings, SimClientError> {
        let request = self.http.post(self.dingtalk_url("/settings")).json(&settings);
        Ok(self.send(request, "dingtalk_settings").await?.json().await?)
    }

    pub async fn dingtalk_stats(&self) -> Result<DingtalkStats, SimClientError> {
        Ok(self.send(self.http.get(self.dingtalk_url("/stats")), "dingtalk_stats").await?.json().await?)
    }

    pub async fn dingtalk_reset_stats(&self) -> Result<(), SimClientError> {
        self.send(self.http.delete(self.dingtalk_url("/stats")), "dingtalk_reset_stats").await?;
        Ok(())
    }

    /// Every event kept, ACKed or not.
    pub async fn dingtalk_events(&self) -> Result<Vec<DingtalkEventView>, SimClientError> {
        Ok(self.send(self.http.get(self.dingtalk_url("/events")), "dingtalk_events").await?.json().await?)
    }

    /// The events neither ACKed nor abandoned.
    pub async fn dingtalk_pending(&self) -> Result<Vec<DingtalkEventView>, SimClientError> {
        Ok(self.send(self.http.get(self.dingtalk_url("/pending")), "dingtalk_pending").await?.json().await?)
    }
}
