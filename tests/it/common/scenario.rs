//! The WeCom side of a scenario: the simulator's starting state, callbacks shaped as WeCom sends
//! them, and the expected events computed independently of the running service.

use groupwatch::core::model::{EventType, GroupEvent};
use groupwatch::sim::SimState;
use serde_json::json;
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use super::{Tap, CORP_ID};

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

/// What identifies one change in the stream, independently of when it was published: the chat,
/// the event type, and for member events the member and their join time.
pub type Change = (String, EventType, Option<String>, Option<i64>);

pub fn change_of(e: &GroupEvent) -> Change {
    (
        e.chat_id.clone(),
        e.event_type,
        e.member.as_ref().map(|m| m.userid.clone()),
        e.member.as_ref().and_then(|m| m.join_time),
    )
}

/// The changes of "the group is created (with [`INITIAL_MEMBERS`]), then `joins` (userid,
/// join_time) join one by one".
pub fn expected_changes_create_then_joins(joins: &[(String, i64)]) -> HashSet<Change> {
    expected_changes_create_then_joins_in(CHAT, joins)
}

/// [`expected_changes_create_then_joins`] for a chat of [`sim_state_with_chats`].
pub fn expected_changes_create_then_joins_in(chat: &str, joins: &[(String, i64)]) -> HashSet<Change> {
    let mut changes: HashSet<Change> = HashSet::new();
    changes.insert((chat.to_owned(), EventType::GroupCreate, None, None));
    for (userid, join_time) in INITIAL_MEMBERS.iter().map(|(u, t)| (u.to_string(), *t)).chain(joins.iter().cloned()) {
        changes.insert((chat.to_owned(), EventType::MemberJoin, Some(userid), Some(join_time)));
    }
    changes
}

/// Adds events from the tap to `events` until every change in `wanted` is among them (panics
/// after `timeout`), then keeps collecting for `grace` to catch late extras.
pub async fn collect_until(
    tap: &Tap,
    events: &mut Vec<GroupEvent>,
    wanted: &HashSet<Change>,
    timeout: Duration,
    grace: Duration,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let seen: HashSet<Change> = events.iter().map(change_of).collect();
        let missing = wanted.iter().filter(|c| !seen.contains(*c)).count();
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
    events
        .iter()
        .map(|e| format!("{} #{} {:?} {:?}", e.id, e.seq, e.event_type, e.member.as_ref().map(|m| &m.userid)))
        .collect()
}

/// At-least-once with stable ids, as a consumer that deduplicates by id sees it:
/// - the distinct events are exactly the `expected` changes, each once (nothing lost, nothing
///   invented, no change published twice under two ids);
/// - a duplicate (same id) is the same event, body for body;
/// - per chat, the distinct events are numbered 1, 2, 3, ... with no gap and no repeat.
///
/// Returns the number of duplicates.
pub fn assert_published_exactly(events: &[GroupEvent], expected: &HashSet<Change>) -> usize {
    let mut by_id: BTreeMap<&str, &GroupEvent> = BTreeMap::new();
    let mut duplicates = 0;
    for e in events {
        match by_id.get(e.id.as_str()) {
            Some(first) => {
                duplicates += 1;
                assert_eq!(*first, e, "a duplicate id with another body");
            }
            None => {
                by_id.insert(&e.id, e);
            }
        }
    }
    let mut published: Vec<Change> = by_id.values().map(|e| change_of(e)).collect();
    published.sort();
    let distinct: HashSet<Change> = published.iter().cloned().collect();
    assert_eq!(distinct.len(), published.len(), "a change published under two ids: {:#?}", summarise(events));
    let lost: Vec<_> = expected.difference(&distinct).collect();
    let invented: Vec<_> = distinct.difference(expected).collect();
    assert!(
        lost.is_empty() && invented.is_empty(),
        "lost {lost:?}, invented {invented:?}; published: {:#?}",
        summarise(events)
    );
    assert_gapless(by_id.values().copied());
    duplicates
}

/// Per chat, the seqs of the distinct events are 1..=n.
pub fn assert_gapless<'a>(distinct: impl Iterator<Item = &'a GroupEvent>) {
    let mut seqs: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for e in distinct {
        seqs.entry(&e.chat_id).or_default().push(e.seq);
    }
    for (chat, mut s) in seqs {
        s.sort();
        let want: Vec<i64> = (1..=s.len() as i64).collect();
        assert_eq!(s, want, "seq of chat {chat} has a gap or a repeat");
    }
}

/// A signed, encrypted POST as WeCom sends it, built here rather than by the service's codec, so
/// that a bug in one cannot cancel out in the other.
pub struct SignedCallback {
    pub query: Vec<(&'static str, String)>,
    pub body: String,
}

/// WeCom's POST for a plaintext event, signed at `timestamp` (unix seconds).
pub fn sign_event(crypt: &groupwatch::provider::wxbiz::WxCrypt, plaintext: &[u8], timestamp: i64) -> SignedCallback {
    use rand::Rng;
    let encrypted = crypt.encrypt(plaintext);
    let timestamp = timestamp.to_string();
    let nonce = rand::thread_rng().gen_range(1_000_000_000u64..10_000_000_000).to_string();
    let signature = crypt.signature(&timestamp, &nonce, &encrypted);
    let body = format!(
        "<xml><ToUserName><![CDATA[{}]]></ToUserName><Encrypt><![CDATA[{encrypted}]]></Encrypt><AgentID><![CDATA[]]></AgentID></xml>",
        crypt.receive_id()
    );
    SignedCallback { query: vec![("msg_signature", signature), ("timestamp", timestamp), ("nonce", nonce)], body }
}
