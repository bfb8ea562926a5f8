//! Tencent IM's group after-callbacks (protocols.md §5.2, protocols-2 B2) mapped to
//! provider-neutral reports. Lenient on what does not matter (unknown keys, `EventTime` as a
//! number or a string, a missing `Type`), strict on what does (a `GroupId`, a usable time).

use serde::de::{self, Deserializer};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::fmt::Write;

use crate::core::ids::HashWriter;
use crate::core::model::Provider;
use crate::core::report::{ChangeReport, ReportKind};

pub const NEW_MEMBER_JOIN: &str = "Group.CallbackAfterNewMemberJoin";
pub const MEMBER_EXIT: &str = "Group.CallbackAfterMemberExit";
pub const CREATE_GROUP: &str = "Group.CallbackAfterCreateGroup";
pub const GROUP_INFO_CHANGED: &str = "Group.CallbackAfterGroupInfoChanged";
pub const GROUP_DESTROYED: &str = "Group.CallbackAfterGroupDestroyed";

/// The commands that become reports; every other command is answered and counted only.
pub const COMMANDS: [&str; 5] = [NEW_MEMBER_JOIN, MEMBER_EXIT, CREATE_GROUP, GROUP_INFO_CHANGED, GROUP_DESTROYED];

/// Why a body is not a usable group callback.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("body is not a JSON object: {0}")]
    Json(String),
    #[error("{command}: {reason}")]
    Field { command: String, reason: String },
    #[error("CallbackCommand {body:?} in the body differs from {query:?} in the query")]
    CommandMismatch { query: String, body: String },
}

/// What one callback says about one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupCallback {
    pub command: &'static str,
    pub group_id: String,
    /// Milliseconds, as sent.
    pub event_time_ms: i64,
    pub reports: Vec<ChangeReport>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Callback {
    Group(GroupCallback),
    /// Another command (`Group.CallbackAfterSendMsg`, `State.StateChange`, ...).
    Other {
        command: String,
    },
}

#[derive(Deserialize)]
struct Account {
    #[serde(rename = "Member_Account")]
    member_account: String,
}

/// The union of the five bodies' fields; which are required depends on the command.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Body {
    #[serde(rename = "CallbackCommand")]
    callback_command: Option<String>,
    #[serde(rename = "GroupId")]
    group_id: Option<String>,
    #[serde(rename = "EventTime", deserialize_with = "event_time")]
    event_time: Option<i64>,
    #[serde(rename = "NewMemberList")]
    new_member_list: Option<Vec<Account>>,
    #[serde(rename = "ExitMemberList")]
    exit_member_list: Option<Vec<Account>>,
    #[serde(rename = "ExitType")]
    exit_type: Option<String>,
    #[serde(rename = "MemberList")]
    member_list: Option<Vec<Account>>,
    #[serde(rename = "Owner_Account")]
    owner_account: Option<String>,
    #[serde(rename = "Name")]
    name: Option<String>,
    #[serde(rename = "Notification")]
    notification: Option<String>,
    #[serde(rename = "Introduction")]
    introduction: Option<String>,
    #[serde(rename = "FaceUrl")]
    face_url: Option<String>,
}

/// `EventTime`: milliseconds, a number (Chinese docs) or a decimal string (English docs).
fn event_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(i64),
        Text(String),
        Null(()),
    }
    match Raw::deserialize(d)? {
        Raw::Number(ms) => Ok(Some(ms)),
        Raw::Text(s) => {
            s.trim().parse().map(Some).map_err(|_| de::Error::custom(format!("EventTime {s:?} is not a number")))
        }
        Raw::Null(()) => Ok(None),
    }
}

fn accounts(list: Option<Vec<Account>>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for a in list.unwrap_or_default() {
        if !a.member_account.is_empty() && !out.contains(&a.member_account) {
            out.push(a.member_account);
        }
    }
    out
}

/// Parses a callback body. `query_command` is the `CallbackCommand` of the query; the body's own,
/// when present, must agree with it.
pub fn parse(body: &[u8], query_command: Option<&str>) -> Result<Callback, ParseError> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| ParseError::Json(e.to_string()))?;
    if !value.is_object() {
        return Err(ParseError::Json("not an object".into()));
    }
    let body_command = value.get("CallbackCommand").and_then(|c| c.as_str()).map(str::to_owned);
    let command = match (query_command.filter(|c| !c.is_empty()), body_command) {
        (Some(q), Some(b)) if q != b => return Err(ParseError::CommandMismatch { query: q.into(), body: b }),
        (_, Some(b)) => b,
        (Some(q), None) => q.to_owned(),
        (None, None) => {
            return Err(ParseError::Field { command: "?".into(), reason: "no CallbackCommand".into() });
        }
    };
    let Some(&command) = COMMANDS.iter().find(|c| **c == command) else {
        return Ok(Callback::Other { command });
    };
    let field = |reason: String| ParseError::Field { command: command.into(), reason };
    let b: Body = serde_json::from_value(value).map_err(|e| field(e.to_string()))?;
    let group_id = b.group_id.clone().filter(|g| !g.is_empty()).ok_or_else(|| field("no GroupId".into()))?;
    let event_time_ms = b.event_time.filter(|t| *t > 0).ok_or_else(|| field("no usable EventTime".into()))?;
    let at = event_time_ms / 1000;
    let report = |kind: ReportKind, members: Vec<String>| ChangeReport {
        occurred_at: at,
        kind,
        members,
        quit_scene: None,
        member_version: None,
        previous_version: None,
    };
    let reports = match command {
        NEW_MEMBER_JOIN => {
            let members = accounts(b.new_member_list);
            if members.is_empty() {
                return Err(field("empty NewMemberList".into()));
            }
            vec![report(ReportKind::MembersJoined, members)]
        }
        MEMBER_EXIT => {
            let members = accounts(b.exit_member_list);
            if members.is_empty() {
                return Err(field("empty ExitMemberList".into()));
            }
            let quit_scene = match b.exit_type.as_deref() {
                Some("Quit") => Some(0),
                Some("Kicked") => Some(1),
                _ => None,
            };
            vec![ChangeReport { quit_scene, ..report(ReportKind::MembersLeft, members) }]
        }
        CREATE_GROUP => {
            // Whether the owner is in MemberList is undocumented (protocols-2 B2.1): add it.
            let mut members = accounts(b.member_list);
            if let Some(owner) = b.owner_account.filter(|o| !o.is_empty() && !members.contains(o)) {
                members.insert(0, owner);
            }
            let mut reports = vec![report(ReportKind::Create, Vec::new())];
            if !members.is_empty() {
                reports.push(report(ReportKind::MembersJoined, members));
            }
            reports
        }
        GROUP_INFO_CHANGED => {
            let mut reports = Vec::new();
            if b.name.is_some() {
                reports.push(report(ReportKind::NameChanged, Vec::new()));
            }
            if b.notification.is_some() {
                reports.push(report(ReportKind::NoticeChanged, Vec::new()));
            }
            // Introduction and FaceUrl are not published, but still worth a fresh look.
            if reports.is_empty() || b.introduction.is_some() || b.face_url.is_some() {
                reports.push(report(ReportKind::OtherUpdate, Vec::new()));
            }
            reports
        }
        GROUP_DESTROYED => {
            // The dismiss report names the members the callback lists (none for Community groups);
            // the diff uses them only for a group it never stored.
            vec![report(ReportKind::Dismiss, accounts(b.member_list))]
        }
        _ => unreachable!("COMMANDS is matched exhaustively"),
    };
    Ok(Callback::Group(GroupCallback { command, group_id, event_time_ms, reports }))
}

/// Whether a repeat of the callback's [`dedupe_key`] may be skipped: membership changes name
/// their members, so the key names the change alone. Creations, attribute changes and destroys
/// are processed again (a fetch, nothing new published).
pub fn dedupable(c: &GroupCallback) -> bool {
    c.reports.iter().all(|r| r.is_membership() && !r.members.is_empty())
}

/// A hash of everything that tells two callbacks apart: Tencent sends no id, so the command,
/// group, `EventTime` (ms), the reports' kinds, quit scenes and members.
pub fn dedupe_key(tenant: &str, c: &GroupCallback) -> String {
    let mut h = HashWriter(Sha256::new());
    let _ = write!(
        h,
        "{}\x1f{tenant}\x1f{}\x1f{}\x1f{}\x1f",
        Provider::Tim.as_str(),
        c.group_id,
        c.command,
        c.event_time_ms
    );
    for r in &c.reports {
        let _ = write!(h, "{:?}\x1f{:?}\x1f", r.kind, r.quit_scene);
        for m in &r.members {
            let _ = write!(h, "{m}\x1e");
        }
        let _ = write!(h, "\x1f");
    }
    hex::encode(&h.0.finalize()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/fixtures/tim/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    fn group(name: &str) -> GroupCallback {
        match parse(&fixture(name), None).unwrap() {
            Callback::Group(g) => g,
            other => panic!("{name}: {other:?}"),
        }
    }

    fn kinds(g: &GroupCallback) -> Vec<(ReportKind, Vec<&str>, Option<i64>)> {
        g.reports
            .iter()
            .map(|r| (r.kind.clone(), r.members.iter().map(String::as_str).collect(), r.quit_scene))
            .collect()
    }

    #[test]
    fn every_fixture_parses_with_event_time_as_number_or_string() {
        for base in [
            "after_new_member_join",
            "after_member_exit",
            "after_create_group",
            "after_group_info_changed",
            "after_group_destroyed",
        ] {
            for name in [format!("{base}.json"), format!("{base}.event_time_string.json")] {
                let g = group(&name);
                assert_eq!(g.event_time_ms, 1_670_574_414_123, "{name}");
                assert!(g.reports.iter().all(|r| r.occurred_at == 1_670_574_414), "{name}: seconds");
                assert!(g.group_id.starts_with("@TGS#"), "{name}");
            }
        }
    }

    #[test]
    fn join() {
        let g = group("after_new_member_join.json");
        assert_eq!(g.command, NEW_MEMBER_JOIN);
        assert_eq!(g.group_id, "@TGS#2J4SZEAEL");
        assert_eq!(kinds(&g), [(ReportKind::MembersJoined, vec!["jared", "tommy"], None)]);
        assert!(dedupable(&g));
    }

    #[test]
    fn exit_kicked_and_quit() {
        assert_eq!(
            kinds(&group("after_member_exit.json")),
            [(ReportKind::MembersLeft, vec!["jared", "tommy"], Some(1))]
        );
        assert_eq!(
            kinds(&group("after_member_exit.event_time_string.json")),
            [(ReportKind::MembersLeft, vec!["jared"], Some(0))]
        );
    }

    #[test]
    fn create_adds_the_owner_to_the_joins() {
        let g = group("after_create_group.json");
        assert_eq!(
            kinds(&g),
            [(ReportKind::Create, vec![], None), (ReportKind::MembersJoined, vec!["leckie", "bob", "peter"], None)]
        );
        assert!(!dedupable(&g));
    }

    #[test]
    fn info_changed_names_what_changed() {
        assert_eq!(
            kinds(&group("after_group_info_changed.json")),
            [(ReportKind::NameChanged, vec![], None), (ReportKind::NoticeChanged, vec![], None)]
        );
        assert_eq!(
            kinds(&group("after_group_info_changed.event_time_string.json")),
            [(ReportKind::NoticeChanged, vec![], None)]
        );
        let intro = br#"{"CallbackCommand":"Group.CallbackAfterGroupInfoChanged","GroupId":"g","Introduction":"x","EventTime":5000}"#;
        let Callback::Group(g) = parse(intro, None).unwrap() else { panic!() };
        assert_eq!(kinds(&g), [(ReportKind::OtherUpdate, vec![], None)]);
    }

    #[test]
    fn destroyed_with_and_without_member_list() {
        assert_eq!(
            kinds(&group("after_group_destroyed.json")),
            [(ReportKind::Dismiss, vec!["leckie", "peter", "bob"], None)]
        );
        assert_eq!(
            kinds(&group("after_group_destroyed.event_time_string.json")),
            [(ReportKind::Dismiss, vec![], None)]
        );
    }

    #[test]
    fn other_commands_are_ignored() {
        let body = br#"{"CallbackCommand":"Group.CallbackAfterSendMsg","GroupId":"g","EventTime":1}"#;
        assert_eq!(parse(body, None).unwrap(), Callback::Other { command: "Group.CallbackAfterSendMsg".into() });
        assert_eq!(
            parse(b"{}", Some("State.StateChange")).unwrap(),
            Callback::Other { command: "State.StateChange".into() }
        );
    }

    #[test]
    fn bad_bodies_are_refused() {
        let cases: [(&[u8], Option<&str>); 9] = [
            (b"not json", Some(NEW_MEMBER_JOIN)),
            (b"[1]", Some(NEW_MEMBER_JOIN)),
            (b"{}", None),
            (br#"{"CallbackCommand":"Group.CallbackAfterNewMemberJoin","EventTime":1000,"NewMemberList":[{"Member_Account":"a"}]}"#, None),
            (br#"{"CallbackCommand":"Group.CallbackAfterNewMemberJoin","GroupId":"g","NewMemberList":[{"Member_Account":"a"}]}"#, None),
            (br#"{"CallbackCommand":"Group.CallbackAfterNewMemberJoin","GroupId":"g","EventTime":"soon","NewMemberList":[{"Member_Account":"a"}]}"#, None),
            (br#"{"CallbackCommand":"Group.CallbackAfterNewMemberJoin","GroupId":"g","EventTime":1000,"NewMemberList":[]}"#, None),
            (br#"{"CallbackCommand":"Group.CallbackAfterMemberExit","GroupId":"g","EventTime":1000,"ExitMemberList":"a"}"#, None),
            (br#"{"CallbackCommand":"Group.CallbackAfterMemberExit","GroupId":"g","EventTime":1000,"ExitMemberList":[{"Member_Account":"a"}]}"#, Some(NEW_MEMBER_JOIN)),
        ];
        for (body, q) in cases {
            assert!(parse(body, q).is_err(), "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn dedupe_key_tells_changes_apart_and_matches_repeats() {
        let a = group("after_new_member_join.json");
        let b = group("after_new_member_join.event_time_string.json");
        assert_eq!(dedupe_key("t", &a), dedupe_key("t", &group("after_new_member_join.json")));
        assert_eq!(dedupe_key("t", &a), dedupe_key("t", &b), "same callback, EventTime as a string");
        assert_ne!(dedupe_key("t", &a), dedupe_key("u", &a));
        let mut later = a.clone();
        later.event_time_ms += 1;
        assert_ne!(dedupe_key("t", &a), dedupe_key("t", &later));
        let kicked = group("after_member_exit.json");
        let mut quit = kicked.clone();
        quit.reports[0].quit_scene = Some(0);
        assert_ne!(dedupe_key("t", &kicked), dedupe_key("t", &quit));
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;
        use serde_json::{json, Value};

        const FIXTURES: [&str; 10] = [
            "after_new_member_join.json",
            "after_new_member_join.event_time_string.json",
            "after_member_exit.json",
            "after_member_exit.event_time_string.json",
            "after_create_group.json",
            "after_create_group.event_time_string.json",
            "after_group_info_changed.json",
            "after_group_info_changed.event_time_string.json",
            "after_group_destroyed.json",
            "after_group_destroyed.event_time_string.json",
        ];
        const KEYS: [&str; 12] = [
            "CallbackCommand",
            "GroupId",
            "EventTime",
            "NewMemberList",
            "ExitMemberList",
            "ExitType",
            "MemberList",
            "Owner_Account",
            "Name",
            "Notification",
            "Introduction",
            "FaceUrl",
        ];

        fn any_value() -> impl Strategy<Value = Value> {
            prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(|n| json!(n)),
                any::<f64>().prop_map(|f| json!(f)),
                ".{0,12}".prop_map(Value::String),
                "[0-9 -]{0,20}".prop_map(Value::String),
                proptest::collection::vec(".{0,6}", 0..4)
                    .prop_map(|v| Value::Array(v.into_iter().map(|a| json!({"Member_Account": a})).collect())),
                proptest::collection::vec(any::<i64>(), 0..3).prop_map(|v| json!(v)),
            ]
        }

        fn check(c: &Callback) {
            if let Callback::Group(g) = c {
                assert!(!g.group_id.is_empty());
                assert!(!g.reports.is_empty());
                assert!(g.event_time_ms > 0);
                assert!(g.reports.iter().all(|r| r.occurred_at == g.event_time_ms / 1000));
                assert!(g.reports.iter().all(|r| r.members.iter().all(|m| !m.is_empty())));
                assert_eq!(dedupe_key("t", g).len(), 32);
            }
        }

        proptest! {
            #[test]
            fn any_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..300)) {
                if let Ok(c) = parse(&body, None) {
                    check(&c);
                }
            }

            #[test]
            fn a_fixture_with_one_field_replaced_or_removed(
                which in 0..FIXTURES.len(),
                key in proptest::sample::select(KEYS.to_vec()),
                value in proptest::option::of(any_value()),
            ) {
                let mut doc: Value = serde_json::from_slice(&super::fixture(FIXTURES[which])).unwrap();
                match value {
                    Some(v) => { doc[key] = v; }
                    None => { doc.as_object_mut().unwrap().remove(key); }
                }
                if let Ok(c) = parse(doc.to_string().as_bytes(), None) {
                    check(&c);
                }
            }
        }
    }
}
