//! DingTalk's six group-conversation events mapped to provider-neutral reports, for both
//! channels: the decrypted JSON of an HTTP push and the `data` of a Stream EVENT frame.
//!
//! DingTalk has spelled the same fields `chatId` and `ChatId` (protocols-2 A3.4/A3.5), and the
//! current HTTP push mixes PascalCase envelope fields with camelCase business fields, so keys
//! are matched without regard to case. Lenient where the notes are unsure (`userId` may be one
//! string; times may be strings), strict where a wrong guess would invent a change (a quit
//! without its leaver, an event naming no chat).

use serde_json::{Map, Value};
use std::fmt::Write;

use crate::core::ids::HashWriter;
use crate::core::model::Provider;
use crate::core::report::{ChangeReport, ReportKind};
use crate::provider::{Change, ChatRef, Decoded};

/// The group events groupwatch maps; any other type is answered and counted, never queued.
pub const GROUP_EVENTS: [&str; 6] =
    ["chat_add_member", "chat_remove_member", "chat_quit", "chat_update_title", "chat_update_owner", "chat_disband"];

/// Why a signed, well-formed payload is not an event groupwatch can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("not a JSON object: {0}")]
    NotJson(String),
    #[error("no event type (EventType in the payload or eventType in the headers)")]
    NoType,
    #[error("{0}: names no chat (chatId or openConversationId)")]
    NoChat(String),
    #[error("{0}: field {1} has the wrong type")]
    BadField(String, &'static str),
    #[error("chat_quit without operator (the member who left)")]
    NoLeaver,
}

/// The fields groupwatch reads, found case-insensitively.
#[derive(Default)]
struct Fields<'a> {
    event_type: Option<&'a Value>,
    event_id: Option<&'a Value>,
    chat_id: Option<&'a Value>,
    open_conversation_id: Option<&'a Value>,
    user_id: Option<&'a Value>,
    operator: Option<&'a Value>,
    time_stamp: Option<&'a Value>,
    event_time: Option<&'a Value>,
    title: Option<&'a Value>,
    owner: Option<&'a Value>,
}

impl<'a> Fields<'a> {
    fn of(object: &'a Map<String, Value>) -> Self {
        let mut f = Self::default();
        for (key, value) in object {
            if value.is_null() {
                continue;
            }
            let slot = match key.to_ascii_lowercase().as_str() {
                "eventtype" => &mut f.event_type,
                "eventid" => &mut f.event_id,
                "chatid" => &mut f.chat_id,
                "openconversationid" => &mut f.open_conversation_id,
                "userid" => &mut f.user_id,
                "operator" => &mut f.operator,
                "timestamp" => &mut f.time_stamp,
                "eventtime" => &mut f.event_time,
                "title" => &mut f.title,
                "owner" => &mut f.owner,
                _ => continue,
            };
            // Both spellings in one payload (`EventType` and `eventType`): the first one wins.
            slot.get_or_insert(value);
        }
        f
    }
}

/// A string field; numbers are accepted as their decimal text (ids are opaque strings).
fn text(kind: &str, value: Option<&Value>, name: &'static str) -> Result<Option<String>, EventError> {
    match value {
        None => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(EventError::BadField(kind.to_owned(), name)),
    }
}

/// Milliseconds, as a number or a string of digits.
fn millis(kind: &str, value: Option<&Value>, name: &'static str) -> Result<Option<i64>, EventError> {
    match value {
        None => Ok(None),
        Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(|| EventError::BadField(kind.to_owned(), name)),
        Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| EventError::BadField(kind.to_owned(), name)),
        Some(_) => Err(EventError::BadField(kind.to_owned(), name)),
    }
}

/// `userId`: an array of userids, or (one plugin's experience) a single one.
fn user_ids(kind: &str, value: Option<&Value>) -> Result<Vec<String>, EventError> {
    let bad = || EventError::BadField(kind.to_owned(), "userId");
    match value {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(if s.is_empty() { Vec::new() } else { vec![s.clone()] }),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) if !s.is_empty() => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                _ => Err(bad()),
            })
            .collect(),
        Some(_) => Err(bad()),
    }
}

/// Parses a payload as a JSON object (the HTTP plaintext, or a Stream frame's `data`).
pub fn object(payload: &str) -> Result<Map<String, Value>, EventError> {
    match serde_json::from_str::<Value>(payload) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(EventError::NotJson("not an object".into())),
        Err(e) => Err(EventError::NotJson(e.to_string())),
    }
}

/// The event type a payload names itself (`EventType`, or `eventType`), if any.
pub fn payload_type(object: &Map<String, Value>) -> Option<&str> {
    Fields::of(object).event_type.and_then(Value::as_str)
}

/// What the Stream frame's headers add to its `data`: the type and the event's identity.
#[derive(Debug, Clone, Copy, Default)]
pub struct Envelope<'a> {
    pub event_type: Option<&'a str>,
    pub event_id: Option<&'a str>,
    /// `eventBornTime` (ms), when the data has no time of its own.
    pub born_ms: Option<i64>,
}

/// Maps one event to what it says about its chat. `now_ms` dates an event that carries no time
/// at all (never seen, but `occurred_at` must be something).
pub fn decode(
    tenant: &str,
    envelope: Envelope<'_>,
    object: &Map<String, Value>,
    now_ms: i64,
) -> Result<Decoded, EventError> {
    let f = Fields::of(object);
    // Stream routes on the header; the payload's own field is the HTTP push's only one.
    let kind = match envelope.event_type.filter(|t| !t.is_empty()) {
        Some(t) => t.to_owned(),
        None => text("event", f.event_type, "EventType")?.ok_or(EventError::NoType)?,
    };
    let kind = kind.as_str();
    if !GROUP_EVENTS.contains(&kind) {
        return Ok(Decoded::Ignored { kind: kind.to_owned() });
    }
    let chat_id = text(kind, f.chat_id, "chatId")?;
    let open_id = text(kind, f.open_conversation_id, "openConversationId")?;
    let at_ms = match millis(kind, f.time_stamp, "timeStamp")? {
        Some(ms) => ms,
        None => millis(kind, f.event_time, "EventTime")?.or(envelope.born_ms).unwrap_or(now_ms),
    };
    let mut report = ChangeReport::new(ReportKind::OtherUpdate, at_ms.div_euclid(1000), &[]);
    match kind {
        "chat_add_member" => {
            report.kind = ReportKind::MembersJoined;
            report.members = user_ids(kind, f.user_id)?;
        }
        "chat_remove_member" => {
            report.kind = ReportKind::MembersLeft;
            report.members = user_ids(kind, f.user_id)?;
            report.quit_scene = Some(1);
        }
        "chat_quit" => {
            report.kind = ReportKind::MembersLeft;
            report.members = vec![text(kind, f.operator, "operator")?.ok_or(EventError::NoLeaver)?];
            report.quit_scene = Some(0);
        }
        "chat_update_title" => report.kind = ReportKind::NameChanged,
        "chat_update_owner" => report.kind = ReportKind::OwnerChanged,
        _ => report.kind = ReportKind::Dismiss,
    }
    let (chat, aliases) = match (chat_id, open_id) {
        (Some(id), Some(alias)) => (ChatRef::Id(id), vec![alias]),
        (Some(id), None) => (ChatRef::Id(id), Vec::new()),
        // chat_update_owner names the chat by openConversationId only (A3.2).
        (None, Some(alias)) => (ChatRef::Alias(alias), Vec::new()),
        (None, None) => return Err(EventError::NoChat(kind.to_owned())),
    };
    let event_id = match envelope.event_id.filter(|id| !id.is_empty()) {
        Some(id) => Some(id.to_owned()),
        None => text(kind, f.event_id, "eventId")?,
    };
    let extra = [text(kind, f.operator, "operator")?, text(kind, f.title, "title")?, text(kind, f.owner, "owner")?];
    let key = dedupe_key(tenant, kind, &chat, event_id.as_deref(), at_ms, &report.members, &extra);
    // Every key names one change: DingTalk's eventId, or (legacy payloads without one) the
    // event's millisecond time with everything it says.
    Ok(Decoded::Change(Change { chat, aliases, reports: vec![report], key, dedupe: true }))
}

/// The notification's identity: equal for DingTalk's redeliveries of it. DingTalk's `eventId`
/// when there is one ("无论是否正确的ACK了，都需要考虑到收到重复事件的可能性"); legacy payloads
/// have none, and are keyed by their whole content at millisecond resolution.
fn dedupe_key(
    tenant: &str,
    kind: &str,
    chat: &ChatRef,
    event_id: Option<&str>,
    at_ms: i64,
    members: &[String],
    extra: &[Option<String>],
) -> String {
    let mut h = HashWriter(sha2::Sha256::new());
    let _ = write!(h, "{}\x1f{tenant}\x1f", Provider::Dingtalk.as_str());
    if let Some(id) = event_id {
        let _ = write!(h, "event\x1f{id}\x1f");
    } else {
        let chat = match chat {
            ChatRef::Id(id) => format!("id:{id}"),
            ChatRef::Alias(alias) => format!("alias:{alias}"),
        };
        let _ = write!(h, "{kind}\x1f{chat}\x1f{at_ms}\x1f{}\x1f", members.join(","));
        for value in extra {
            let _ = write!(h, "{}\x1f", value.as_deref().unwrap_or(""));
        }
    }
    use sha2::Digest;
    hex::encode(&h.0.finalize()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Value {
        let path = format!("{}/fixtures/dingtalk/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    }

    /// A `{event}.camel.json` fixture: the docs' flattened header fields plus `data`.
    fn camel(name: &str) -> Change {
        let doc = fixture(&format!("{name}.camel.json"));
        let envelope = Envelope {
            event_type: doc["eventType"].as_str(),
            event_id: doc["eventId"].as_str(),
            born_ms: doc["eventBornTime"].as_i64(),
        };
        change(decode("acme-dt", envelope, doc["data"].as_object().unwrap(), 0).unwrap())
    }

    fn pascal(name: &str) -> Change {
        let doc = fixture(&format!("{name}.pascal.json"));
        change(decode("acme-dt", Envelope::default(), doc.as_object().unwrap(), 0).unwrap())
    }

    fn change(decoded: Decoded) -> Change {
        match decoded {
            Decoded::Change(c) => c,
            other => panic!("expected a change, got {other:?}"),
        }
    }

    fn stream(name: &str) -> Change {
        let frame = fixture(&format!("stream/{name}.frame.json"));
        let headers = &frame["headers"];
        let envelope = Envelope {
            event_type: headers["eventType"].as_str(),
            event_id: headers["eventId"].as_str(),
            born_ms: headers["eventBornTime"].as_str().and_then(|s| s.parse().ok()),
        };
        let data = object(frame["data"].as_str().expect("data is a JSON string")).unwrap();
        change(decode("acme-dt", envelope, &data, 0).unwrap())
    }

    #[test]
    fn add_and_remove_name_their_members_in_both_casings() {
        for c in [camel("chat_add_member"), pascal("chat_add_member"), stream("chat_add_member")] {
            let r = &c.reports[0];
            assert_eq!(
                (r.kind.clone(), r.members.clone(), r.quit_scene),
                (ReportKind::MembersJoined, vec!["user456".into()], None)
            );
            assert_eq!(r.occurred_at, 1608027106);
        }
        let c = camel("chat_add_member");
        assert_eq!(c.chat, ChatRef::Id("chat28367b03e4b4ca4b5074e1dbfb5d6088".into()));
        assert_eq!(c.aliases, ["iis6fGqqqt87xxxxiEiE"]);
        let p = pascal("chat_remove_member");
        assert_eq!(p.chat, ChatRef::Id("chat691a41db53b100115bec3603472d78a9".into()));
        assert_eq!(p.aliases, ["cidOuTaLz7/D7zkkM/5PlrQQA=="]);
        assert_eq!(p.reports[0].kind, ReportKind::MembersLeft);
        assert_eq!(p.reports[0].members, ["011505184066774889"]);
        assert_eq!(p.reports[0].quit_scene, Some(1));
        for c in [camel("chat_remove_member"), stream("chat_remove_member")] {
            assert_eq!((c.reports[0].kind.clone(), c.reports[0].quit_scene), (ReportKind::MembersLeft, Some(1)));
        }
    }

    #[test]
    fn the_leaver_of_a_quit_is_the_operator() {
        for c in [camel("chat_quit"), pascal("chat_quit"), stream("chat_quit")] {
            let r = &c.reports[0];
            assert_eq!(r.kind, ReportKind::MembersLeft);
            assert_eq!(r.members, ["user456"]);
            assert_eq!(r.quit_scene, Some(0));
            assert_eq!(c.chat, ChatRef::Id("chat676e50a07xxxx".into()));
        }
    }

    #[test]
    fn owner_change_names_the_chat_by_alias() {
        for c in [camel("chat_update_owner"), pascal("chat_update_owner"), stream("chat_update_owner")] {
            assert_eq!(c.chat, ChatRef::Alias("cidmfWxxxx".into()));
            assert!(c.aliases.is_empty());
            assert_eq!(c.reports[0].kind, ReportKind::OwnerChanged);
            assert_eq!(c.reports[0].occurred_at, 1608026611);
        }
    }

    #[test]
    fn title_and_disband() {
        for c in [camel("chat_update_title"), pascal("chat_update_title"), stream("chat_update_title")] {
            assert_eq!(c.reports[0].kind, ReportKind::NameChanged);
            assert_eq!(c.aliases, ["cidmfWxxxx"]);
        }
        for c in [camel("chat_disband"), pascal("chat_disband"), stream("chat_disband")] {
            assert_eq!(c.reports[0].kind, ReportKind::Dismiss);
        }
        let captured = fixture("chat_update_title.captured.json");
        let envelope = Envelope {
            event_type: captured["headers"]["eventType"].as_str(),
            event_id: captured["headers"]["eventId"].as_str(),
            born_ms: None,
        };
        let c = change(decode("t", envelope, captured["data"].as_object().unwrap(), 0).unwrap());
        assert_eq!((c.chat, c.reports[0].occurred_at), (ChatRef::Id("chat7924d****5ca45d".into()), 1694658968));
    }

    #[test]
    fn the_current_http_push_mixes_casings() {
        let doc = fixture("chat_add_member.http.json");
        let c = change(decode("t", Envelope::default(), doc.as_object().unwrap(), 0).unwrap());
        assert_eq!(c.reports[0].members, ["user456"]);
        // Its eventId is its identity: the camel fixture of the same event has the same key.
        let same = camel("chat_add_member");
        let again = decode(
            "t",
            Envelope { event_id: doc["eventId"].as_str(), ..Default::default() },
            doc.as_object().unwrap(),
            0,
        );
        assert_eq!(change(again.unwrap()).key, c.key);
        assert_ne!(same.key, c.key, "keys are per tenant");
    }

    #[test]
    fn keys_follow_the_event_id_and_else_the_content() {
        let a = camel("chat_add_member");
        assert_eq!(a.key, camel("chat_add_member").key);
        assert!(a.dedupe);
        // The fixtures share one masked eventId: same key, as DingTalk's redelivery would have.
        assert_eq!(a.key, camel("chat_remove_member").key);
        // Without one, the content decides.
        assert_ne!(pascal("chat_add_member").key, pascal("chat_remove_member").key);
        assert_eq!(pascal("chat_quit").key, pascal("chat_quit").key);
    }

    #[test]
    fn every_fixture_file_decodes() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/dingtalk");
        let mut changes = 0;
        for entry in std::fs::read_dir(dir).unwrap().chain(std::fs::read_dir(format!("{dir}/stream")).unwrap()) {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if !name.starts_with("chat_") || name.starts_with("chat_get") {
                continue;
            }
            let doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let (envelope, data) = if name.ends_with(".frame.json") {
                (
                    Envelope { event_type: doc["headers"]["eventType"].as_str(), ..Default::default() },
                    object(doc["data"].as_str().unwrap()).unwrap(),
                )
            } else if doc.get("data").is_some() {
                let t = doc["eventType"].as_str().or(doc["headers"]["eventType"].as_str());
                (Envelope { event_type: t, ..Default::default() }, doc["data"].as_object().unwrap().clone())
            } else {
                (Envelope::default(), doc.as_object().unwrap().clone())
            };
            match decode("t", envelope, &data, 0) {
                Ok(Decoded::Change(_)) => changes += 1,
                other => panic!("{name}: {other:?}"),
            }
        }
        assert_eq!(changes, 6 * 3 + 2, "camel, pascal and frame of six events, the http push and the capture");
    }

    #[test]
    fn other_types_are_ignored_and_broken_events_refused() {
        let ignored =
            decode("t", Envelope::default(), &object(r#"{"EventType":"user_add_org","UserId":["a"]}"#).unwrap(), 0);
        assert_eq!(ignored, Ok(Decoded::Ignored { kind: "user_add_org".into() }));
        let stream = Envelope { event_type: Some("user_add_org"), ..Default::default() };
        assert!(matches!(decode("t", stream, &object("{}").unwrap(), 0), Ok(Decoded::Ignored { .. })));
        let no_type = decode("t", Envelope::default(), &object(r#"{"ChatId":"c"}"#).unwrap(), 0);
        assert_eq!(no_type, Err(EventError::NoType));
        let quit = object(r#"{"EventType":"chat_quit","ChatId":"c","TimeStamp":1}"#).unwrap();
        assert_eq!(decode("t", Envelope::default(), &quit, 0), Err(EventError::NoLeaver));
        let nochat = object(r#"{"EventType":"chat_disband","TimeStamp":1}"#).unwrap();
        assert!(matches!(decode("t", Envelope::default(), &nochat, 0), Err(EventError::NoChat(_))));
        let bad_users = object(r#"{"EventType":"chat_add_member","ChatId":"c","UserId":{"a":1}}"#).unwrap();
        assert!(matches!(decode("t", Envelope::default(), &bad_users, 0), Err(EventError::BadField(..))));
        assert!(object("[1]").is_err() && object("{").is_err());
    }

    #[test]
    fn lenient_where_the_notes_are_unsure() {
        let one = object(r#"{"eventType":"chat_add_member","chatId":"c","userId":"u1","timeStamp":"1608027106990"}"#)
            .unwrap();
        let c = change(decode("t", Envelope::default(), &one, 0).unwrap());
        assert_eq!((c.reports[0].members.clone(), c.reports[0].occurred_at), (vec!["u1".to_owned()], 1608027106));
        let untimed = object(r#"{"EventType":"chat_disband","ChatId":"c"}"#).unwrap();
        let c = change(decode("t", Envelope { born_ms: Some(5_000), ..Default::default() }, &untimed, 0).unwrap());
        assert_eq!(c.reports[0].occurred_at, 5);
    }
}
