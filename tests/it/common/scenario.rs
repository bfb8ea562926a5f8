//! The WeCom side of a scenario: the simulator's starting state, callbacks shaped as WeCom sends
//! them, and the expected events computed independently of the running service.

use groupwatch::core::diff::{self, Observed};
use groupwatch::core::model::{GroupEvent, GroupKey, GroupSnapshot, Member, Provider, StoredGroup};
use groupwatch::core::report::{ChangeReport, ReportKind};
use groupwatch::sim::SimState;
use serde_json::json;
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use super::{Tap, CORP_ID, TENANT};

pub const CHAT: &str = "wrOgQhDgAAMYQiS5ol9G7gK9JVAAAA";
pub const CHAT_CREATE_TIME: i64 = 1572505490;
/// The members the group starts with in [`sim_state`]: (userid, join_time).
pub const INITIAL_MEMBERS: [(&str, i64); 2] = [("abel", 1572505491), ("wmOgQhDgAAuXFJGwbve4g4iXknfOAAAA", 1572505491)];

pub fn sim_state() -> SimState {
    sim_state_with_chats(&[CHAT])
}

/// [`sim_state`] with one identical group (initial members and all) per chat id.
pub fn sim_state_with_chats(chats: &[&str]) -> SimState {
    let mut state = sim_state_json();
    let template = state["corps"][0]["groups"][0].clone();
    state["corps"][0]["groups"] = chats
        .iter()
        .map(|chat| {
            let mut group = template.clone();
            group["chat_id"] = json!(chat);
            group
        })
        .collect();
    serde_json::from_value(state).unwrap()
}

fn sim_state_json() -> serde_json::Value {
    json!({
        "corps": [{
            "corp_id": CORP_ID,
            "secret": "test-secret",
            "groups": [{
                "chat_id": CHAT,
                "name": "销售客服群",
                "owner": "ZhuShengBen",
                "create_time": CHAT_CREATE_TIME,
                "notice": "文明沟通，拒绝脏话",
                "member_list": [
                    {"userid": "abel", "type": 1, "join_time": 1572505491, "join_scene": 1,
                     "invitor": {"userid": "jack"}, "group_nickname": "客服小张", "name": "张三丰"},
                    {"userid": "wmOgQhDgAAuXFJGwbve4g4iXknfOAAAA", "type": 2, "unionid": "ozynqsulJFCZ2z1aYeS8h-nuasdAAA",
                     "join_time": 1572505491, "join_scene": 1, "group_nickname": "顾客老王", "name": "王语嫣"}
                ],
                "admin_list": [{"userid": "sam"}],
                "member_version": "71217227bbd112ecfe3a49c482195cb4"
            }]
        }]
    })
}

/// A decrypted `change_external_chat` callback, shaped as WeCom sends it.
pub fn callback_xml(
    time: i64,
    change_type: &str,
    detail: Option<&str>,
    members: &[&str],
    cur_ver: Option<&str>,
) -> String {
    callback_xml_for(CHAT, time, change_type, detail, members, cur_ver)
}

/// [`callback_xml`] for any chat.
pub fn callback_xml_for(
    chat: &str,
    time: i64,
    change_type: &str,
    detail: Option<&str>,
    members: &[&str],
    cur_ver: Option<&str>,
) -> String {
    let mut xml = format!(
        "<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>\
         <CreateTime>{time}</CreateTime><MsgType><![CDATA[event]]></MsgType>\
         <Event><![CDATA[change_external_chat]]></Event><ChatId><![CDATA[{chat}]]></ChatId>\
         <ChangeType><![CDATA[{change_type}]]></ChangeType>"
    );
    if let Some(d) = detail {
        xml += &format!("<UpdateDetail><![CDATA[{d}]]></UpdateDetail>");
        if d == "del_member" {
            xml += "<QuitScene>1</QuitScene>";
        } else if d == "add_member" {
            xml += "<JoinScene>3</JoinScene>";
        }
    }
    if !members.is_empty() {
        xml += &format!("<MemChangeCnt>{}</MemChangeCnt><MemChangeList>", members.len());
        for m in members {
            xml += &format!("<Item><![CDATA[{m}]]></Item>");
        }
        xml += "</MemChangeList>";
    }
    if let Some(v) = cur_ver {
        xml += &format!("<CurMemVer><![CDATA[{v}]]></CurMemVer>");
    }
    xml + "</xml>"
}

/// An external contact as the simulator's `POST .../members` takes it.
pub fn external(userid: &str, join_time: i64) -> serde_json::Value {
    json!({"userid": userid, "type": 2, "join_time": join_time, "join_scene": 3,
           "invitor": {"userid": "abel"}, "group_nickname": "", "name": format!("客户{userid}")})
}

fn model_member(userid: &str, join_time: i64) -> Member {
    Member { join_time: Some(join_time), ..Member::unknown(userid) }
}

fn model_snapshot(chat: &str, members: &[(String, i64)]) -> GroupSnapshot {
    GroupSnapshot {
        chat_id: chat.into(),
        name: "销售客服群".into(),
        owner: "ZhuShengBen".into(),
        notice: "文明沟通，拒绝脏话".into(),
        create_time: CHAT_CREATE_TIME,
        admins: vec!["sam".into()],
        member_version: None,
        members: members.iter().map(|(u, t)| model_member(u, *t)).collect(),
    }
    .normalised()
}

fn report(kind: ReportKind, at: i64, members: &[&str]) -> ChangeReport {
    ChangeReport::new(kind, at, members)
}

/// The ids of the events for "the group is created, then `joins` (userid, join_time) join one
/// by one", computed with the pure [`diff::diff`] on snapshots built here, not by the service.
pub fn expected_ids_create_then_joins(joins: &[(String, i64)]) -> HashSet<String> {
    expected_ids_create_then_joins_in(CHAT, joins)
}

/// [`expected_ids_create_then_joins`] for a chat of [`sim_state_with_chats`].
pub fn expected_ids_create_then_joins_in(chat: &str, joins: &[(String, i64)]) -> HashSet<String> {
    let key = GroupKey::new(Provider::Wecom, TENANT, chat);
    let mut members: Vec<(String, i64)> = INITIAL_MEMBERS.iter().map(|(u, t)| (u.to_string(), *t)).collect();
    let mut current = model_snapshot(chat, &members);
    let mut ids: Vec<String> =
        diff::diff(&key, None, Observed::Group(&current), &[report(ReportKind::Create, CHAT_CREATE_TIME, &[])])
            .into_iter()
            .map(|e| e.id)
            .collect();
    assert_eq!(ids.len(), 1 + INITIAL_MEMBERS.len(), "group.create and a join per initial member");
    for (userid, join_time) in joins {
        members.push((userid.clone(), *join_time));
        let next = model_snapshot(chat, &members);
        let previous = StoredGroup { snapshot: current, dismissed: false, updated_at_ms: 0 };
        let events = diff::diff(
            &key,
            Some(&previous),
            Observed::Group(&next),
            &[report(ReportKind::MembersJoined, *join_time, &[userid])],
        );
        assert_eq!(events.len(), 1, "one join per added member");
        ids.extend(events.into_iter().map(|e| e.id));
        current = next;
    }
    let set: HashSet<String> = ids.iter().cloned().collect();
    assert_eq!(set.len(), ids.len(), "distinct changes have distinct ids");
    set
}

/// Adds events from the tap to `events` until every id in `wanted` is among them (panics after
/// `timeout`), then keeps collecting for `grace` to catch late extras.
pub async fn collect_until(
    tap: &Tap,
    events: &mut Vec<GroupEvent>,
    wanted: &HashSet<String>,
    timeout: Duration,
    grace: Duration,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let seen: HashSet<&String> = events.iter().map(|e: &GroupEvent| &e.id).collect();
        let missing = wanted.iter().filter(|id| !seen.contains(id)).count();
        if missing == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{missing} of {} expected events still missing after {timeout:?}; got {} events: {:#?}",
            wanted.len(),
            events.len(),
            summarise(events)
        );
        events.extend(tap.collect(Duration::from_millis(300)).await);
    }
    events.extend(tap.collect(grace).await);
}

fn summarise(events: &[GroupEvent]) -> Vec<String> {
    events.iter().map(|e| format!("{} {:?} {:?}", e.id, e.event_type, e.member.as_ref().map(|m| &m.userid))).collect()
}

/// At-least-once with stable ids: the set of published ids equals `expected` (nothing lost,
/// nothing invented), and every duplicate describes the same change as its first copy: same
/// type, chat, member (with the same details), quit_scene and changes. The `group` summary and
/// `occurred_at` may differ between copies (a re-processing after a crash fetches a newer group
/// and may see the member's callback this time), as the contract allows. Returns the number of
/// duplicates.
pub fn assert_published_exactly(events: &[GroupEvent], expected: &HashSet<String>) -> usize {
    let mut by_id: BTreeMap<&str, Vec<&GroupEvent>> = BTreeMap::new();
    for e in events {
        by_id.entry(&e.id).or_default().push(e);
    }
    let published: HashSet<String> = by_id.keys().map(|k| k.to_string()).collect();
    let lost: Vec<_> = expected.difference(&published).collect();
    let invented: Vec<_> = published.difference(expected).collect();
    assert!(
        lost.is_empty() && invented.is_empty(),
        "lost {lost:?}, invented {invented:?}; published: {:#?}",
        summarise(events)
    );
    let mut duplicates = 0;
    for copies in by_id.values() {
        let first = copies[0];
        for other in &copies[1..] {
            duplicates += 1;
            let same_change = (
                other.event_type,
                &other.provider,
                &other.tenant,
                &other.chat_id,
                &other.member,
                other.quit_scene,
                &other.changes,
            ) == (
                first.event_type,
                &first.provider,
                &first.tenant,
                &first.chat_id,
                &first.member,
                first.quit_scene,
                &first.changes,
            );
            assert!(same_change, "a duplicate id with a different change:\n{first:#?}\n{other:#?}");
            if *other != first {
                println!(
                    "duplicate {} differs only in group/occurred_at: {:?}/{:?} vs {:?}/{:?}",
                    first.id, first.group, first.occurred_at, other.group, other.occurred_at
                );
            }
        }
    }
    duplicates
}
