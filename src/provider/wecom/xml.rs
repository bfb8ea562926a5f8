//! Parsing of WeCom callback XML: the encrypted envelope and the decrypted event.
//!
//! WeCom's XML is loose: element order varies, text may or may not be CDATA, optional fields appear
//! on change types they do not belong to, and `MemChangeList` comes either as `<Item>` children or
//! as one comma-separated string. Everything is parsed by element name and leniently; only what we
//! cannot do without (`ChatId`, `ChangeType`, a timestamp) is required.

use quick_xml::events::Event;
use quick_xml::Reader;
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

fn xml_error(e: impl std::fmt::Display) -> ParseError {
    ParseError::Xml(e.to_string())
}

/// Extracts the `Encrypt` text from the envelope `<xml>…<Encrypt>…</Encrypt>…</xml>`. Only
/// `Encrypt` is signed, so it is the only element we read; it is borrowed from the body.
pub fn parse_envelope(body: &str) -> Result<Cow<'_, str>, ParseError> {
    match read_fields(body)?.take(Field::Encrypt) {
        Some(e) if !e.trim().is_empty() => Ok(e),
        _ => Err(ParseError::Missing("Encrypt")),
    }
}

/// The children of the root element that groupwatch reads, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Encrypt,
    ToUserName,
    CreateTime,
    MsgType,
    Event,
    InfoType,
    TimeStamp,
    SuiteId,
    AuthCorpId,
    ChatId,
    ChangeType,
    UpdateDetail,
    JoinScene,
    QuitScene,
    MemChangeCnt,
    MemChangeList,
    LastMemVer,
    CurMemVer,
}

const FIELDS: usize = Field::CurMemVer as usize + 1;

impl Field {
    fn from_name(name: &[u8]) -> Option<Self> {
        Some(match name {
            b"Encrypt" => Self::Encrypt,
            b"ToUserName" => Self::ToUserName,
            b"CreateTime" => Self::CreateTime,
            b"MsgType" => Self::MsgType,
            b"Event" => Self::Event,
            b"InfoType" => Self::InfoType,
            b"TimeStamp" => Self::TimeStamp,
            b"SuiteId" => Self::SuiteId,
            b"AuthCorpId" => Self::AuthCorpId,
            b"ChatId" => Self::ChatId,
            b"ChangeType" => Self::ChangeType,
            b"UpdateDetail" => Self::UpdateDetail,
            b"JoinScene" => Self::JoinScene,
            b"QuitScene" => Self::QuitScene,
            b"MemChangeCnt" => Self::MemChangeCnt,
            b"MemChangeList" => Self::MemChangeList,
            b"LastMemVer" => Self::LastMemVer,
            b"CurMemVer" => Self::CurMemVer,
            _ => return None,
        })
    }
}

/// What [`read_fields`] found: the text of each known child of the root (text and CDATA pieces
/// joined, borrowed from the input where it needs no unescaping) and the `MemChangeList`
/// members in document order, whether `<Item>` children or comma-separated text.
struct Fields<'a> {
    text: [Option<Cow<'a, str>>; FIELDS],
    members: Vec<Cow<'a, str>>,
}

impl<'a> Fields<'a> {
    fn take(&mut self, field: Field) -> Option<Cow<'a, str>> {
        self.text[field as usize].take()
    }

    /// The trimmed text of `field`, or `None` when it is absent or blank: WeCom sends `<X></X>`
    /// and `<X><![CDATA[]]></X>`.
    fn text(&mut self, field: Field) -> Option<String> {
        self.take(field).map(|t| t.trim().to_owned()).filter(|t| !t.is_empty())
    }
}

fn append<'a>(slot: &mut Cow<'a, str>, piece: Cow<'a, str>) {
    if slot.is_empty() {
        *slot = piece;
    } else {
        slot.to_mut().push_str(&piece);
    }
}

/// One pass of quick-xml's pull parser over the document. A pull parser rather than serde:
/// the callback path parses two documents per request, and this is several times faster than
/// `quick_xml::de` for these flat, loosely shaped messages. Unknown and deeper elements are
/// skipped; a later duplicate of a child replaces the earlier one.
fn read_fields(xml: &str) -> Result<Fields<'_>, ParseError> {
    let mut reader = Reader::from_str(xml);
    let mut found = Fields { text: [const { None }; FIELDS], members: Vec::new() };
    let mut depth = 0usize;
    let mut roots = 0usize;
    // The root child being read (if it is one we keep) and the `<Item>` being read in it.
    let mut field: Option<Field> = None;
    let mut item: Option<Cow<'_, str>> = None;
    loop {
        let piece = match reader.read_event().map_err(xml_error)? {
            Event::Start(e) => {
                depth += 1;
                match depth {
                    1 => roots += 1,
                    2 => {
                        field = Field::from_name(e.local_name().as_ref());
                        if let Some(f) = field {
                            found.text[f as usize] = Some(Cow::Borrowed(""));
                        }
                    }
                    3 if field == Some(Field::MemChangeList) && e.local_name().as_ref() == b"Item" => {
                        item = Some(Cow::Borrowed(""));
                    }
                    _ => {}
                }
                continue;
            }
            Event::Empty(e) => {
                match depth {
                    0 => roots += 1,
                    1 => {
                        if let Some(f) = Field::from_name(e.local_name().as_ref()) {
                            found.text[f as usize] = Some(Cow::Borrowed(""));
                        }
                    }
                    _ => {}
                }
                continue;
            }
            Event::End(_) => {
                match depth {
                    3 => found.members.extend(item.take()),
                    2 => field = None,
                    _ => {}
                }
                depth = depth.saturating_sub(1);
                continue;
            }
            Event::Text(t) => t.unescape().map_err(xml_error)?,
            Event::CData(c) => c.decode().map_err(xml_error)?,
            Event::Eof => break,
            _ => continue, // declaration, comment, processing instruction, doctype
        };
        match (depth, field) {
            (2, Some(Field::MemChangeList)) => {
                // The older shape: one comma-separated string (also the whitespace between items).
                found.members.extend(piece.split(',').map(|m| Cow::Owned(m.to_owned())));
            }
            (2, Some(f)) => append(found.text[f as usize].get_or_insert(Cow::Borrowed("")), piece),
            (3, _) => {
                if let Some(item) = item.as_mut() {
                    append(item, piece);
                }
            }
            _ => {}
        }
    }
    if roots != 1 {
        return Err(ParseError::Xml(format!("expected one root element, found {roots}")));
    }
    if depth != 0 {
        return Err(ParseError::Xml("unclosed element".into()));
    }
    Ok(found)
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

pub const CHANGE_EXTERNAL_CHAT: &str = "change_external_chat";

fn number<T: std::str::FromStr>(element: &'static str, text: Option<String>) -> Result<Option<T>, ParseError> {
    text.map(|s| s.parse().map_err(|_| ParseError::Invalid { element, value: s })).transpose()
}

/// Parses a decrypted callback message.
pub fn parse_callback(xml: &str) -> Result<Callback, ParseError> {
    let mut raw = read_fields(xml)?;
    let kind = raw
        .text(Field::Event)
        .or_else(|| raw.text(Field::InfoType))
        .or_else(|| raw.text(Field::MsgType))
        .ok_or(ParseError::Missing("Event"))?;
    if kind != CHANGE_EXTERNAL_CHAT {
        return Ok(Callback::Other { kind });
    }
    let create_time = number::<i64>("CreateTime", raw.text(Field::CreateTime))?
        .or(number::<i64>("TimeStamp", raw.text(Field::TimeStamp))?)
        .ok_or(ParseError::Missing("CreateTime"))?;
    let chat_id = raw.text(Field::ChatId).ok_or(ParseError::Missing("ChatId"))?;
    let change_type = match raw.text(Field::ChangeType).ok_or(ParseError::Missing("ChangeType"))?.as_str() {
        "create" => ChangeType::Create,
        "update" => ChangeType::Update,
        "dismiss" => ChangeType::Dismiss,
        other => {
            return Err(ParseError::Invalid { element: "ChangeType", value: other.to_owned() });
        }
    };
    let mem_change_list = raw.members.iter().map(|m| m.trim()).filter(|m| !m.is_empty()).map(str::to_owned).collect();
    Ok(Callback::ChangeExternalChat(Box::new(ChangeExternalChat {
        create_time,
        to_user_name: raw.text(Field::ToUserName),
        suite_id: raw.text(Field::SuiteId),
        auth_corp_id: raw.text(Field::AuthCorpId),
        chat_id,
        change_type,
        update_detail: raw.text(Field::UpdateDetail).map(|s| UpdateDetail::parse(&s)),
        join_scene: number("JoinScene", raw.text(Field::JoinScene))?,
        quit_scene: number("QuitScene", raw.text(Field::QuitScene))?,
        mem_change_cnt: number("MemChangeCnt", raw.text(Field::MemChangeCnt))?,
        mem_change_list,
        last_mem_ver: raw.text(Field::LastMemVer),
        cur_mem_ver: raw.text(Field::CurMemVer),
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

    #[test]
    fn pull_parser_edges() {
        let ev = |body: &str| {
            format!("<xml><Event>change_external_chat</Event><CreateTime>1</CreateTime><ChangeType>update</ChangeType>{body}</xml>")
        };
        // Entities are unescaped; text and CDATA pieces of one element are joined; unknown and
        // nested elements are skipped, however deep.
        let xml = ev("<Extra><Deep><ChatId>no</ChatId></Deep></Extra><ChatId>wr&amp;<![CDATA[<x>]]></ChatId><MemChangeList><Item>a</Item><Other><Item>no</Item></Other></MemChangeList>");
        let Callback::ChangeExternalChat(e) = parse_callback(&xml).unwrap() else { panic!() };
        assert_eq!(e.chat_id, "wr&<x>");
        assert_eq!(e.mem_change_list, ["a"]);
        // A later duplicate replaces the earlier one.
        let Callback::ChangeExternalChat(e) = parse_callback(&ev("<ChatId>a</ChatId><ChatId>b</ChatId>")).unwrap()
        else {
            panic!()
        };
        assert_eq!(e.chat_id, "b");
        // Not one well-formed document: errors, never a partial event.
        for bad in
            ["", "plain text", "<a/><b/>", "<xml><ChatId>c</ChatId>", "<xml><ChatId>c</xml>", "<xml>&bogus;</xml>"]
        {
            assert!(matches!(parse_callback(bad), Err(ParseError::Xml(_))), "{bad:?}: {:?}", parse_callback(bad));
        }
        assert_eq!(parse_envelope("<xml><Encrypt>a&#43;b</Encrypt></xml>").unwrap(), "a+b");
    }
}
