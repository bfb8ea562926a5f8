//! The group after-callbacks, sent as Tencent IM sends them (protocols.md §5.1–5.2,
//! protocols-2 B2): `POST {callback_url}?SdkAppid=&CallbackCommand=&contenttype=json&ClientIP=
//! &OptPlatform=RESTAPI&Sign=&RequestTime=` with a JSON body, `Sign` =
//! hex(sha256(callback_token + RequestTime)), `EventTime` in milliseconds.

use super::*;

/// Tencent documents no timeout for after-callbacks (protocols-2 B2.5); 2 s as for the
/// before-message ones.
pub(super) const CALLBACK_TIMEOUT: Duration = Duration::from_secs(2);

/// `ClientIP` of changes made through the admin API: the simulator's own loopback.
const CLIENT_IP: &str = "127.0.0.1";

/// The callback URL must be an absolute http(s) URL.
pub(super) fn check_url(url: &str) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("callback_url {url:?}: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("callback_url {url:?} is not http(s)"));
    }
    Ok(())
}

/// `EventTime` as a number (the Chinese docs) or a string (the English and Japanese docs).
#[derive(Debug, Clone, Copy)]
pub(super) enum EventTimeValue {
    Number(i64),
    Text(i64),
}

impl Serialize for EventTimeValue {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            EventTimeValue::Number(ms) => serializer.serialize_i64(*ms),
            EventTimeValue::Text(ms) => serializer.serialize_str(&ms.to_string()),
        }
    }
}

#[derive(Serialize)]
pub(super) struct Account<'a> {
    #[serde(rename = "Member_Account")]
    pub member_account: &'a str,
}

pub(super) fn accounts<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<Account<'a>> {
    names.into_iter().map(|member_account| Account { member_account }).collect()
}

// The bodies, fields in the order of Tencent's samples.

#[derive(Serialize)]
pub(super) struct NewMemberJoin<'a> {
    #[serde(rename = "CallbackCommand")]
    pub callback_command: &'static str,
    #[serde(rename = "GroupId")]
    pub group_id: &'a str,
    #[serde(rename = "Type")]
    pub group_type: &'a str,
    #[serde(rename = "JoinType")]
    pub join_type: &'a str,
    #[serde(rename = "Operator_Account")]
    pub operator_account: &'a str,
    #[serde(rename = "NewMemberList")]
    pub new_member_list: Vec<Account<'a>>,
    #[serde(rename = "EventTime")]
    pub event_time: EventTimeValue,
}

#[derive(Serialize)]
pub(super) struct MemberExit<'a> {
    #[serde(rename = "CallbackCommand")]
    pub callback_command: &'static str,
    #[serde(rename = "GroupId")]
    pub group_id: &'a str,
    #[serde(rename = "Type")]
    pub group_type: &'a str,
    #[serde(rename = "ExitType")]
    pub exit_type: &'a str,
    #[serde(rename = "Operator_Account")]
    pub operator_account: &'a str,
    #[serde(rename = "ExitMemberList")]
    pub exit_member_list: Vec<Account<'a>>,
    #[serde(rename = "EventTime")]
    pub event_time: EventTimeValue,
}

#[derive(Serialize)]
pub(super) struct CreateGroup<'a> {
    #[serde(rename = "CallbackCommand")]
    pub callback_command: &'static str,
    #[serde(rename = "GroupId")]
    pub group_id: &'a str,
    #[serde(rename = "Operator_Account")]
    pub operator_account: &'a str,
    #[serde(rename = "Owner_Account")]
    pub owner_account: &'a str,
    #[serde(rename = "Type")]
    pub group_type: &'a str,
    #[serde(rename = "Name")]
    pub name: &'a str,
    /// The initial members other than the owner, as in Tencent's sample (whether the owner is
    /// listed is undocumented, protocols-2 B2.1; the service should add `Owner_Account`).
    #[serde(rename = "MemberList")]
    pub member_list: Vec<Account<'a>>,
    #[serde(rename = "EventTime")]
    pub event_time: EventTimeValue,
}

/// Only the changed fields among Name, Introduction, Notification, FaceUrl are present.
#[derive(Serialize)]
pub(super) struct GroupInfoChanged<'a> {
    #[serde(rename = "CallbackCommand")]
    pub callback_command: &'static str,
    #[serde(rename = "GroupId")]
    pub group_id: &'a str,
    #[serde(rename = "Type")]
    pub group_type: &'a str,
    #[serde(rename = "Operator_Account")]
    pub operator_account: &'a str,
    #[serde(rename = "Name", skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    #[serde(rename = "Introduction", skip_serializing_if = "Option::is_none")]
    pub introduction: Option<&'a str>,
    #[serde(rename = "Notification", skip_serializing_if = "Option::is_none")]
    pub notification: Option<&'a str>,
    #[serde(rename = "FaceUrl", skip_serializing_if = "Option::is_none")]
    pub face_url: Option<&'a str>,
    #[serde(rename = "EventTime")]
    pub event_time: EventTimeValue,
}

/// `MemberList` is left out for Community groups.
#[derive(Serialize)]
pub(super) struct GroupDestroyed<'a> {
    #[serde(rename = "CallbackCommand")]
    pub callback_command: &'static str,
    #[serde(rename = "Operator_Account")]
    pub operator_account: &'a str,
    #[serde(rename = "GroupId")]
    pub group_id: &'a str,
    #[serde(rename = "Type")]
    pub group_type: &'a str,
    #[serde(rename = "Owner_Account")]
    pub owner_account: &'a str,
    #[serde(rename = "Name")]
    pub name: &'a str,
    #[serde(rename = "MemberList", skip_serializing_if = "Option::is_none")]
    pub member_list: Option<Vec<Account<'a>>>,
    #[serde(rename = "EventTime")]
    pub event_time: EventTimeValue,
}

/// A callback built under the lock, sent after it is released.
pub(super) struct Outgoing {
    pub command: &'static str,
    pub url: String,
    pub body: String,
    pub http: reqwest::Client,
}

impl App {
    /// The callback for a change of this app's groups; `None` without a callback URL.
    pub(super) fn outgoing(
        &self,
        sdk_app_id: u64,
        command: &'static str,
        body: &impl Serialize,
        http: &reqwest::Client,
    ) -> Option<Outgoing> {
        let mut url = url::Url::parse(self.callback_url.as_deref()?).ok()?;
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("SdkAppid", &sdk_app_id.to_string())
                .append_pair("CallbackCommand", command)
                .append_pair("contenttype", "json")
                .append_pair("ClientIP", CLIENT_IP)
                .append_pair("OptPlatform", "RESTAPI");
            // Without a token, callback auth is off and Tencent sends neither.
            if !self.callback_token.is_empty() {
                let request_time = unix_now().to_string();
                query
                    .append_pair("Sign", &sign(&self.callback_token, &request_time))
                    .append_pair("RequestTime", &request_time);
            }
        }
        let body = serde_json::to_string(body).ok()?;
        Some(Outgoing { command, url: url.into(), body, http: http.clone() })
    }
}

/// `Sign` = lowercase hex of sha256(token + RequestTime): plain concatenation, no HMAC.
pub(super) fn sign(token: &str, request_time: &str) -> String {
    hex::encode(Sha256::new().chain_update(token).chain_update(request_time).finalize())
}

impl Outgoing {
    /// Sends it once (Tencent's retry policy for after-callbacks is undocumented) and reports
    /// what came back; a failure is reported, never retried.
    pub(super) async fn deliver(self) -> TimCallbackReport {
        let mut report = TimCallbackReport {
            command: self.command.to_owned(),
            url: self.url.clone(),
            request_body: self.body.clone(),
            status: None,
            response_body: None,
            error: None,
        };
        let sent = self
            .http
            .post(&self.url)
            .header(axum::http::header::CONTENT_TYPE, "application/json")
            .body(self.body)
            .send()
            .await;
        match sent {
            Ok(response) => {
                report.status = Some(response.status().as_u16());
                match response.text().await {
                    Ok(text) => report.response_body = Some(text),
                    Err(e) => report.error = Some(format!("reading the answer: {e}")),
                }
            }
            Err(e) => report.error = Some(e.to_string()),
        }
        tracing::debug!(command = %report.command, status = report.status, error = report.error, "sim TIM callback");
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_matches_the_documented_example() {
        // protocols.md §5.1, reproduced from Tencent's doc.
        assert_eq!(sign("xxxxyyyy", "1669872112"), "17773bc39a671d7b9aa835458704d2a6db81360a5940292b587d6d760d484061");
    }

    #[test]
    fn event_time_serialises_in_both_forms() {
        assert_eq!(serde_json::to_string(&EventTimeValue::Number(1670574414123)).unwrap(), "1670574414123");
        assert_eq!(serde_json::to_string(&EventTimeValue::Text(1670574414123)).unwrap(), "\"1670574414123\"");
    }
}
