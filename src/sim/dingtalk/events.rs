//! The six group-conversation events, as the simulator writes their `data`.
//!
//! Two spellings, because DingTalk has sent both (protocols-2 A3):
//!
//! - **camelCase**: the Stream `data` of the current event pages (mirror of open.dingtalk.com,
//!   `0104`–`0109`), field order as in their samples. `chat_add_member` alone carries
//!   `eventType` inside `data`; `chat_update_owner` has no `chatId` and no `operator`.
//! - **PascalCase**: the legacy HTTP-callback bodies (`0259`) and the 2021 captures
//!   (zhaoyunxing92/dingtalk tests): `EventType` always present, `UnionId`/`OperatorUnionId` as
//!   captured. The legacy page gives no sample for `chat_quit`, `chat_update_owner` and
//!   `chat_update_title`; those follow its field table (`Owner`, `Title`, `Operator` = the
//!   leaver). `chat_update_owner` names the chat by `OpenConversationId` only, as in camelCase.

use super::union_id;
use serde::{Deserialize, Serialize};

/// How an event's `data` is spelled; a per-push option of the admin API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DingtalkCasing {
    /// `chatId`, `userId`, ... (Stream mode, current docs).
    #[default]
    Camel,
    /// `ChatId`, `UserId`, `EventType`, ... (legacy callbacks, real 2021 captures).
    Pascal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ChatEvent {
    AddMember,
    RemoveMember,
    Quit,
    UpdateTitle,
    UpdateOwner,
    Disband,
}

impl ChatEvent {
    pub(super) fn event_type(self) -> &'static str {
        match self {
            ChatEvent::AddMember => "chat_add_member",
            ChatEvent::RemoveMember => "chat_remove_member",
            ChatEvent::Quit => "chat_quit",
            ChatEvent::UpdateTitle => "chat_update_title",
            ChatEvent::UpdateOwner => "chat_update_owner",
            ChatEvent::Disband => "chat_disband",
        }
    }
}

/// What one event says. `operator` is the acting userid (for `chat_quit`, the leaver).
pub(super) struct EventFacts<'a> {
    pub kind: ChatEvent,
    pub time_stamp: u64,
    pub chatid: &'a str,
    pub open_conversation_id: &'a str,
    pub corp_id: &'a str,
    pub operator: &'a str,
    /// The members added or removed (add/remove only).
    pub users: &'a [String],
    /// The new title (update_title) or owner (update_owner).
    pub value: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CamelData<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<&'a str>,
    time_stamp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    union_id: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    chat_id: Option<&'a str>,
    corp_id: &'a str,
    operator_union_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    title: Option<&'a str>,
    open_conversation_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    operator: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct PascalData<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    operator: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    title: Option<&'a str>,
    open_conversation_id: &'a str,
    corp_id: &'a str,
    event_type: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    union_id: Option<Vec<String>>,
    operator_union_id: String,
    time_stamp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    chat_id: Option<&'a str>,
}

/// The event's `data` string.
pub(super) fn data(facts: &EventFacts<'_>, casing: DingtalkCasing) -> String {
    use ChatEvent::*;
    let kind = facts.kind;
    let members = matches!(kind, AddMember | RemoveMember);
    let users = members.then_some(facts.users);
    let union_ids = members.then(|| facts.users.iter().map(|u| union_id(u)).collect::<Vec<_>>());
    let chat_id = (kind != UpdateOwner).then_some(facts.chatid);
    let operator = (kind != UpdateOwner).then_some(facts.operator);
    let owner = (kind == UpdateOwner).then_some(facts.value);
    let title = (kind == UpdateTitle).then_some(facts.value);
    let operator_union_id = union_id(facts.operator);
    let text = match casing {
        DingtalkCasing::Camel => serde_json::to_string(&CamelData {
            owner,
            time_stamp: facts.time_stamp,
            union_id: union_ids,
            chat_id,
            corp_id: facts.corp_id,
            operator_union_id,
            event_type: (kind == AddMember).then_some(kind.event_type()),
            user_id: users,
            title,
            open_conversation_id: facts.open_conversation_id,
            operator,
        }),
        DingtalkCasing::Pascal => serde_json::to_string(&PascalData {
            operator,
            owner,
            title,
            open_conversation_id: facts.open_conversation_id,
            corp_id: facts.corp_id,
            event_type: kind.event_type(),
            user_id: users,
            union_id: union_ids,
            operator_union_id,
            time_stamp: facts.time_stamp,
            chat_id,
        }),
    };
    text.unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn facts(kind: ChatEvent, users: &[String]) -> EventFacts<'_> {
        EventFacts {
            kind,
            time_stamp: 1608027106990,
            chatid: "chat28367b03e4b4ca4b5074e1dbfb5d6088",
            open_conversation_id: "cidmfWxxxx",
            corp_id: "dinge8a56572f80bxxxx",
            operator: "10203029011219896",
            users,
            value: "v",
        }
    }

    fn keys(text: &str) -> Vec<String> {
        let value: Value = serde_json::from_str(text).unwrap();
        value.as_object().unwrap().keys().cloned().collect()
    }

    #[test]
    fn camel_add_member_has_the_documented_fields_in_order() {
        let users = vec!["user456".to_owned()];
        let text = data(&facts(ChatEvent::AddMember, &users), DingtalkCasing::Camel);
        let order: Vec<&str> = [
            "timeStamp",
            "unionId",
            "chatId",
            "corpId",
            "operatorUnionId",
            "eventType",
            "userId",
            "openConversationId",
            "operator",
        ]
        .to_vec();
        let positions: Vec<usize> = order.iter().map(|k| text.find(&format!("\"{k}\"")).unwrap()).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
        assert_eq!(keys(&text).len(), order.len(), "{text}");
    }

    #[test]
    fn update_owner_names_the_chat_by_open_conversation_id_only() {
        for casing in [DingtalkCasing::Camel, DingtalkCasing::Pascal] {
            let text = data(&facts(ChatEvent::UpdateOwner, &[]), casing);
            let lower = text.to_lowercase();
            assert!(!lower.contains("\"chatid\"") && !lower.contains("\"operator\""), "{text}");
            assert!(lower.contains("\"openconversationid\"") && lower.contains("\"owner\":\"v\""), "{text}");
        }
    }

    #[test]
    fn pascal_always_carries_event_type() {
        for kind in [
            ChatEvent::AddMember,
            ChatEvent::RemoveMember,
            ChatEvent::Quit,
            ChatEvent::UpdateTitle,
            ChatEvent::UpdateOwner,
            ChatEvent::Disband,
        ] {
            let text = data(&facts(kind, &[]), DingtalkCasing::Pascal);
            let value: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(value["EventType"], kind.event_type());
            assert!(keys(&text).iter().all(|k| k.starts_with(|c: char| c.is_ascii_uppercase())), "{text}");
        }
    }
}
