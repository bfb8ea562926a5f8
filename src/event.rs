//! Parsing of WeCom callback XML: the encrypted envelope and the decrypted event.
//!
//! WeCom's XML is loose: element order varies, text may or may not be CDATA, optional fields appear
//! on change types they do not belong to, and `MemChangeList` comes either as `<Item>` children or
//! as one comma-separated string. Everything is parsed by element name and leniently; only what we
//! cannot do without (`ChatId`, `ChangeType`, a timestamp) is required.

use serde::{Deserialize, Serialize};
use std::borrow::Cow;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("malformed XML: {0}")]
    Xml(String),
    #[error("missing element <{0}>")]
    Missing(&'static str),
    #[error("element <{element}> has an invalid value {value:?}")]
    Invalid { element: &'static str, value: String },
}

fn xml_error(e: quick_xml::DeError) -> ParseError {
    ParseError::Xml(e.to_string())
}

/// The POST body: only `Encrypt` is signed, so it is the only element we read.
#[derive(Debug, Deserialize)]
struct RawEnvelope<'a> {
    #[serde(rename = "Encrypt", borrow, default)]
    encrypt: Option<Cow<'a, str>>,
}

/// Extracts the `Encrypt` text from the envelope `<xml>…<Encrypt>…</Encrypt>…</xml>`.
pub fn parse_envelope(body: &str) -> Result<Cow<'_, str>, ParseError> {
    let raw: RawEnvelope = quick_xml::de::from_str(body).map_err(xml_error)?;
    match raw.encrypt {
        Some(e) if !e.trim().is_empty() => Ok(e),
        _ => Err(ParseError::Missing("Encrypt")),
    }
}

/// What a decrypted callback turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Callback {
    ChangeExternalChat(Box<ChangeExternalChat>),
    /// Any other event or message type: answered 200 and counted, never queued.
    Other {
        kind: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeType {
    Create,
    Update,
    Dismiss,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateDetail {
    AddMember,
    DelMember,
    ChangeOwner,
    ChangeName,
    ChangeNotice,
    /// A detail WeCom may add later: kept verbatim, handled like a generic change.
    #[serde(untagged)]
    Other(String),
}

impl UpdateDetail {
    fn parse(s: &str) -> Self {
        match s {
            "add_member" => Self::AddMember,
            "del_member" => Self::DelMember,
            "change_owner" => Self::ChangeOwner,
            "change_name" => Self::ChangeName,
            "change_notice" => Self::ChangeNotice,
            other => Self::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::AddMember => "add_member",
            Self::DelMember => "del_member",
            Self::ChangeOwner => "change_owner",
            Self::ChangeName => "change_name",
            Self::ChangeNotice => "change_notice",
            Self::Other(s) => s,
        }
    }
}

/// A `change_external_chat` event, self-built (`Event`/`CreateTime`/`ToUserName`) or third-party
/// (`InfoType`/`TimeStamp`/`SuiteId`/`AuthCorpId`) shaped, normalised into one struct.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeExternalChat {
    /// `CreateTime` (self-built) or `TimeStamp` (third-party), unix seconds.
    pub create_time: i64,
    /// `ToUserName`: the corp id, self-built apps only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_user_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suite_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_corp_id: Option<String>,
    pub chat_id: String,
    pub change_type: ChangeType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_detail: Option<UpdateDetail>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_scene: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quit_scene: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_change_cnt: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mem_change_list: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_mem_ver: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cur_mem_ver: Option<String>,
}

/// `MemChangeList` holds `<Item>` children, or (older shape) a single comma-separated string.
#[derive(Debug, Default, Deserialize)]
struct RawMemChangeList {
    #[serde(rename = "$value", default)]
    parts: Vec<RawMemPart>,
}

#[derive(Debug, Deserialize)]
enum RawMemPart {
    Item(String),
    #[serde(rename = "$text")]
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawEvent {
    #[serde(default)]
    to_user_name: Option<String>,
    #[serde(default)]
    create_time: Option<String>,
    #[serde(default)]
    msg_type: Option<String>,
    #[serde(default)]
    event: Option<String>,
    #[serde(default)]
    info_type: Option<String>,
    #[serde(default)]
    time_stamp: Option<String>,
    #[serde(default)]
    suite_id: Option<String>,
    #[serde(default)]
    auth_corp_id: Option<String>,
    #[serde(default)]
    chat_id: Option<String>,
    #[serde(default)]
    change_type: Option<String>,
    #[serde(default)]
    update_detail: Option<String>,
    #[serde(default)]
    join_scene: Option<String>,
    #[serde(default)]
    quit_scene: Option<String>,
    #[serde(default)]
    mem_change_cnt: Option<String>,
    #[serde(default)]
    mem_change_list: Option<RawMemChangeList>,
    #[serde(default)]
    last_mem_ver: Option<String>,
    #[serde(default)]
    cur_mem_ver: Option<String>,
}

pub const CHANGE_EXTERNAL_CHAT: &str = "change_external_chat";

/// Trims and turns empty text into `None`: WeCom sends `<X></X>` and `<X><![CDATA[]]></X>`.
fn non_empty(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

fn number<T: std::str::FromStr>(element: &'static str, v: Option<String>) -> Result<Option<T>, ParseError> {
    match non_empty(v) {
        None => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|_| ParseError::Invalid { element, value: s }),
    }
}

/// Parses a decrypted callback message.
pub fn parse_callback(xml: &str) -> Result<Callback, ParseError> {
    let raw: RawEvent = quick_xml::de::from_str(xml).map_err(xml_error)?;
    let kind = non_empty(raw.event.clone())
        .or_else(|| non_empty(raw.info_type.clone()))
        .or_else(|| non_empty(raw.msg_type.clone()))
        .ok_or(ParseError::Missing("Event"))?;
    if kind != CHANGE_EXTERNAL_CHAT {
        return Ok(Callback::Other { kind });
    }
    let create_time = number::<i64>("CreateTime", raw.create_time)?
        .or(number::<i64>("TimeStamp", raw.time_stamp)?)
        .ok_or(ParseError::Missing("CreateTime"))?;
    let chat_id = non_empty(raw.chat_id).ok_or(ParseError::Missing("ChatId"))?;
    let change_type = match non_empty(raw.change_type).ok_or(ParseError::Missing("ChangeType"))?.as_str() {
        "create" => ChangeType::Create,
        "update" => ChangeType::Update,
        "dismiss" => ChangeType::Dismiss,
        other => {
            return Err(ParseError::Invalid { element: "ChangeType", value: other.to_owned() });
        }
    };
    let mem_change_list = raw
        .mem_change_list
        .unwrap_or_default()
        .parts
        .into_iter()
        .flat_map(|part| match part {
            RawMemPart::Item(s) => vec![s],
            RawMemPart::Text(s) => s.split(',').map(str::to_owned).collect(),
        })
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    Ok(Callback::ChangeExternalChat(Box::new(ChangeExternalChat {
        create_time,
        to_user_name: non_empty(raw.to_user_name),
        suite_id: non_empty(raw.suite_id),
        auth_corp_id: non_empty(raw.auth_corp_id),
        chat_id,
        change_type,
        update_detail: non_empty(raw.update_detail).map(|s| UpdateDetail::parse(&s)),
        join_scene: number("JoinScene", raw.join_scene)?,
        quit_scene: number("QuitScene", raw.quit_scene)?,
        mem_change_cnt: number("MemChangeCnt", raw.mem_change_cnt)?,
        mem_change_list,
        last_mem_ver: non_empty(raw.last_mem_ver),
        cur_mem_ver: non_empty(raw.cur_mem_ver),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_any_order_and_whitespace() {
        let a = "<xml><ToUserName><![CDATA[ww1]]></ToUserName>\n<Encrypt><![CDATA[abc+/=]]></Encrypt>\n<AgentID><![CDATA[1]]></AgentID>\n</xml>";
        let b = "<xml>\n  <AgentID>1</AgentID>\n  <Encrypt>abc+/=</Encrypt>\n  <ToUserName>ww1</ToUserName>\n</xml>";
        assert_eq!(parse_envelope(a).unwrap(), "abc+/=");
        assert_eq!(parse_envelope(b).unwrap(), "abc+/=");
    }

    #[test]
    fn envelope_errors() {
        assert_eq!(parse_envelope("<xml><ToUserName>x</ToUserName></xml>"), Err(ParseError::Missing("Encrypt")));
        assert_eq!(parse_envelope("<xml><Encrypt></Encrypt></xml>"), Err(ParseError::Missing("Encrypt")));
        assert!(matches!(parse_envelope("<xml><Encrypt>abc</xml>"), Err(ParseError::Xml(_))));
        assert!(parse_envelope("not xml at all").is_err());
    }

    #[test]
    fn mem_change_list_as_csv_string() {
        let xml = "<xml><Event>change_external_chat</Event><CreateTime>1</CreateTime><ChatId>c</ChatId><ChangeType>update</ChangeType><UpdateDetail>del_member</UpdateDetail><MemChangeList><![CDATA[wmA, wmB,wmC]]></MemChangeList></xml>";
        let Callback::ChangeExternalChat(e) = parse_callback(xml).unwrap() else { panic!() };
        let e = *e;
        assert_eq!(e.mem_change_list, ["wmA", "wmB", "wmC"]);
        assert_eq!(e.update_detail, Some(UpdateDetail::DelMember));
    }

    #[test]
    fn pretty_printed_items_are_trimmed() {
        let xml = "<xml>\n <Event>change_external_chat</Event>\n <CreateTime>1</CreateTime>\n <ChatId>c</ChatId>\n <ChangeType>update</ChangeType>\n <MemChangeList>\n    <Item>Jack</Item>\n    <Item><![CDATA[Rose]]></Item>\n </MemChangeList>\n</xml>";
        let Callback::ChangeExternalChat(e) = parse_callback(xml).unwrap() else { panic!() };
        let e = *e;
        assert_eq!(e.mem_change_list, ["Jack", "Rose"]);
    }

    #[test]
    fn invalid_numbers_and_missing_fields() {
        let base = |extra: &str| {
            format!("<xml><Event>change_external_chat</Event><ChangeType>update</ChangeType>{extra}</xml>")
        };
        assert_eq!(parse_callback(&base("<CreateTime>1</CreateTime>")), Err(ParseError::Missing("ChatId")));
        assert_eq!(parse_callback(&base("<ChatId>c</ChatId>")), Err(ParseError::Missing("CreateTime")));
        assert_eq!(
            parse_callback(&base("<ChatId>c</ChatId><CreateTime>soon</CreateTime>")),
            Err(ParseError::Invalid { element: "CreateTime", value: "soon".into() })
        );
        assert!(matches!(
            parse_callback("<xml><Event>change_external_chat</Event><ChatId>c</ChatId><CreateTime>1</CreateTime><ChangeType>explode</ChangeType></xml>"),
            Err(ParseError::Invalid { element: "ChangeType", .. })
        ));
        assert_eq!(parse_callback("<xml><ChatId>c</ChatId></xml>"), Err(ParseError::Missing("Event")));
    }

    #[test]
    fn other_event_types() {
        let xml = "<xml><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_external_contact]]></Event></xml>";
        assert_eq!(parse_callback(xml).unwrap(), Callback::Other { kind: "change_external_contact".into() });
        let text = "<xml><MsgType>text</MsgType><Content>hi</Content></xml>";
        assert_eq!(parse_callback(text).unwrap(), Callback::Other { kind: "text".into() });
    }

    #[test]
    fn unknown_update_detail_is_kept() {
        let xml = "<xml><Event>change_external_chat</Event><CreateTime>1</CreateTime><ChatId>c</ChatId><ChangeType>update</ChangeType><UpdateDetail>change_avatar</UpdateDetail></xml>";
        let Callback::ChangeExternalChat(e) = parse_callback(xml).unwrap() else { panic!() };
        let e = *e;
        assert_eq!(e.update_detail, Some(UpdateDetail::Other("change_avatar".into())));
        let json = serde_json::to_string(&e).unwrap();
        let back: ChangeExternalChat = serde_json::from_str(&json).unwrap();
        assert_eq!(back, e);
    }
}
