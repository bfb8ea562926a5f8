//! `schema/event.schema.json` against what groupwatch really publishes: every event that
//! `diff::diff` produces validates, and hand-made malformed bodies do not.

use crate::schema_support;

use groupwatch::core::diff::{events, Observed};
use groupwatch::core::model::{EventType, GroupEvent, GroupKey, GroupSnapshot, Member, Provider, StoredGroup};
use groupwatch::core::report::{ChangeReport, ReportKind};
use serde_json::{json, Value};
use std::collections::HashSet;

fn key() -> GroupKey {
    GroupKey::new(Provider::Wecom, "acme", "wrOgQhDgAAMYQiS5ol9G7gK9JVAAAA")
}

fn member(userid: &str, join_time: i64) -> Member {
    Member {
        userid: userid.into(),
        member_type: Some(2),
        unionid: Some(format!("ozynqsulJFCZ2z1aYeS8h-{userid}")),
        join_time: Some(join_time),
        join_scene: Some(3),
        invitor: Some("jack".into()),
        group_nickname: Some("客服小张".into()),
        name: Some(format!("name of {userid}")),
        state: None,
        role: None,
    }
}

fn group(members: &[(&str, i64)], version: Option<&str>) -> GroupSnapshot {
    GroupSnapshot {
        chat_id: key().chat_id,
        name: "销售客服群".into(),
        owner: "ZhuShengBen".into(),
        notice: "文明沟通".into(),
        create_time: 1_572_505_000,
        admins: vec!["sam".into()],
        member_version: version.map(str::to_owned),
        members: members.iter().map(|(u, t)| member(u, *t)).collect(),
    }
    .normalised()
}

fn stored(s: GroupSnapshot) -> StoredGroup {
    StoredGroup::new(s)
}

fn report(kind: ReportKind, at: i64, members: &[&str]) -> ChangeReport {
    ChangeReport::new(kind, at, members)
}

/// Events from every path through `diff`, labelled by the scenario that produced them.
fn real_events() -> Vec<(&'static str, GroupEvent)> {
    let k = key();
    let mut out = Vec::new();
    let mut add = |label: &'static str, events: Vec<GroupEvent>| {
        assert!(!events.is_empty(), "{label}: the scenario produced no event");
        out.extend(events.into_iter().map(|e| (label, e)));
    };

    // A group first seen through a create callback: group.create, then a join per member.
    let now =
        group(&[("abel", 1_572_505_491), ("wmExternal", 1_572_505_492)], Some("71217227bbd112ecfe3a49c482195cb4"));
    add("create", events(&k, None, Observed::Group(&now), &[report(ReportKind::Create, 1_572_505_491, &[])]));

    // A join named by its callback, and one whose callback was lost (occurred_at null).
    let prev = stored(group(&[("abel", 1)], Some("v1")));
    let now = group(&[("abel", 1), ("bob", 50), ("carol", 55)], Some("v3"));
    add("join", events(&k, Some(&prev), Observed::Group(&now), &[report(ReportKind::MembersJoined, 60, &["carol"])]));

    // A leave with the quit scene, and a leave + re-join of the same userid.
    let prev = stored(group(&[("abel", 1), ("bob", 50)], Some("v1")));
    let now = group(&[("abel", 500)], Some("v2"));
    let mut left = report(ReportKind::MembersLeft, 70, &["bob"]);
    left.quit_scene = Some(1);
    add("leave", events(&k, Some(&prev), Observed::Group(&now), &[left]));

    // Name, owner and notice changes (with and without a reporting callback).
    let prev = stored(group(&[("abel", 1)], Some("v1")));
    let mut now = prev.snapshot.clone();
    now.name = "新群名".into();
    now.notice = "new notice".into();
    let reports = [report(ReportKind::NameChanged, 30, &[]), report(ReportKind::NoticeChanged, 31, &[])];
    add("update", events(&k, Some(&prev), Observed::Group(&now), &reports));
    let mut owner = prev.snapshot.clone();
    owner.owner = "sam".into();
    add("update-owner", events(&k, Some(&prev), Observed::Group(&owner), &[]));

    // A member who came in through a join way with a state carries it (WeCom only).
    let prev = stored(group(&[("abel", 1)], Some("v1")));
    let mut now = group(&[("abel", 1), ("dora", 80)], Some("v2"));
    now.members.iter_mut().filter(|m| m.userid == "dora").for_each(|m| m.state = Some("klsdup3kj3s1".into()));
    add(
        "join-with-state",
        events(&k, Some(&prev), Observed::Group(&now), &[report(ReportKind::MembersJoined, 81, &["dora"])]),
    );

    // Dismissal of a known group (leaves, then group.dismiss) and of a group never seen.
    let prev = stored(group(&[("abel", 1), ("bob", 2)], None));
    add("dismiss", events(&k, Some(&prev), Observed::Dismissed, &[report(ReportKind::Dismiss, 99, &[])]));
    add("dismiss-unseen", events(&k, None, Observed::Dismissed, &[report(ReportKind::Dismiss, 99, &[])]));

    // First seen through an update callback: a baseline, publishing only the named members; the
    // leave of a member never seen carries a member with only a userid.
    let now = group(&[("abel", 1), ("bob", 2), ("carol", 3)], Some("v9"));
    let mut gone = report(ReportKind::MembersLeft, 21, &["zed"]);
    gone.member_version = Some("v9".into());
    add(
        "baseline",
        events(&k, None, Observed::Group(&now), &[report(ReportKind::MembersJoined, 20, &["carol"]), gone]),
    );

    out
}

#[test]
fn schema_is_a_valid_draft_2020_12_schema() {
    let schema = schema_support::event_schema_json();
    assert_eq!(schema["$schema"], "https://json-schema.org/draft/2020-12/schema");
    jsonschema::meta::validate(&schema).expect("the schema itself is valid");
    schema_support::event_schema(); // compiles
}

#[test]
fn every_event_diff_produces_is_valid() {
    let events = real_events();
    let mut types = HashSet::new();
    for (label, event) in &events {
        let body = serde_json::to_value(event).unwrap();
        let errors = schema_support::event_errors(&body);
        assert!(errors.is_empty(), "{label}: {errors:?}\n{body:#}");
        types.insert(event.event_type);
    }
    let all = [
        EventType::MemberJoin,
        EventType::MemberLeave,
        EventType::GroupCreate,
        EventType::GroupUpdate,
        EventType::GroupDismiss,
    ];
    for t in all {
        assert!(types.contains(&t), "no scenario produced {t:?}");
    }
    // The paths that put nulls in unusual places were covered.
    let bodies: Vec<Value> = events.iter().map(|(_, e)| serde_json::to_value(e).unwrap()).collect();
    assert!(bodies.iter().any(|b| b["occurred_at"].is_null()));
    assert!(bodies.iter().any(|b| b["quit_scene"] == 1));
    assert!(bodies.iter().any(|b| b["group"]["member_version"].is_null()));
    assert!(bodies.iter().any(|b| b["type"] == "member.leave" && b["member"]["join_time"].is_null()));
    assert!(bodies.iter().any(|b| b["member"]["state"] == "klsdup3kj3s1"));
    assert!(bodies.iter().any(|b| b["type"] == "member.join" && b["member"]["state"].is_null()));
}

#[test]
fn the_contract_example_is_valid() {
    let example = json!({
        "id": "0b3c3b7e-5d4e-4f9a-8c1d-2a6f0e9b7c11",
        "type": "member.join",
        "provider": "wecom",
        "tenant": "acme",
        "chat_id": "wrOgQhDgAAMYQiS5ol9G7gK9JVAAAA",
        "seq": 1,
        "occurred_at": 1403610513,
        "group": {"name": "销售客服群", "owner": "ZhuShengBen", "member_version": "71217227bbd112ecfe3a49c482195cb4", "member_count": 2},
        "member": {"userid": "abel", "type": 1, "unionid": null, "join_time": 1572505491,
                   "join_scene": 1, "invitor": "jack", "group_nickname": "客服小张", "name": "张三丰",
                   "state": null, "role": "member"},
        "quit_scene": null,
        "changes": null
    });
    schema_support::assert_valid_event(&example);
    // And it round-trips through the model unchanged: the schema and `GroupEvent` agree on keys.
    let parsed: GroupEvent = serde_json::from_value(example.clone()).unwrap();
    assert_eq!(serde_json::to_value(&parsed).unwrap(), example);
}

/// A valid member.join body to break one way at a time.
fn valid_join() -> Value {
    let (_, event) = real_events().into_iter().find(|(_, e)| e.event_type == EventType::MemberJoin).unwrap();
    let body = serde_json::to_value(event).unwrap();
    schema_support::assert_valid_event(&body);
    body
}

fn valid_of(t: EventType) -> Value {
    let (_, event) = real_events().into_iter().find(|(_, e)| e.event_type == t).unwrap();
    serde_json::to_value(event).unwrap()
}

#[test]
fn malformed_events_are_invalid() {
    type Breakage = (&'static str, Box<dyn Fn(&mut Value)>);
    type TypedBreakage = (&'static str, EventType, Box<dyn Fn(&mut Value)>);
    let join_cases: Vec<Breakage> = vec![
        (
            "missing id",
            Box::new(|v| {
                v.as_object_mut().unwrap().remove("id");
            }),
        ),
        (
            "missing changes",
            Box::new(|v| {
                v.as_object_mut().unwrap().remove("changes");
            }),
        ),
        (
            "missing seq",
            Box::new(|v| {
                v.as_object_mut().unwrap().remove("seq");
            }),
        ),
        ("seq 0", Box::new(|v| v["seq"] = json!(0))),
        ("seq as a string", Box::new(|v| v["seq"] = json!("1"))),
        ("unknown type", Box::new(|v| v["type"] = json!("member.kick"))),
        ("unknown provider", Box::new(|v| v["provider"] = json!("slack"))),
        ("extra top-level key", Box::new(|v| v["extra"] = json!(1))),
        ("extra member key", Box::new(|v| v["member"]["avatar"] = json!("x"))),
        ("extra group key", Box::new(|v| v["group"]["notice"] = json!("x"))),
        ("member.join with null member", Box::new(|v| v["member"] = Value::Null)),
        (
            "member without userid",
            Box::new(|v| {
                v["member"].as_object_mut().unwrap().remove("userid");
            }),
        ),
        ("id not a uuid", Box::new(|v| v["id"] = json!("not-a-uuid"))),
        ("id in upper case", Box::new(|v| v["id"] = json!(v["id"].as_str().unwrap().to_uppercase()))),
        ("tenant with capitals", Box::new(|v| v["tenant"] = json!("Acme"))),
        ("occurred_at as a string", Box::new(|v| v["occurred_at"] = json!("1403610513"))),
        ("negative member_count", Box::new(|v| v["group"]["member_count"] = json!(-1))),
        ("join_scene as a string", Box::new(|v| v["member"]["join_scene"] = json!("1"))),
        ("changes on a member event", Box::new(|v| v["changes"] = json!(["name"]))),
        (
            "member without state",
            Box::new(|v| {
                v["member"].as_object_mut().unwrap().remove("state");
            }),
        ),
        ("state as a number", Box::new(|v| v["member"]["state"] = json!(1))),
    ];
    for (what, breakage) in &join_cases {
        let mut body = valid_join();
        breakage(&mut body);
        assert!(!schema_support::event_errors(&body).is_empty(), "{what} should be invalid:\n{body:#}");
    }

    let other_cases: Vec<TypedBreakage> = vec![
        ("member.leave with null member", EventType::MemberLeave, Box::new(|v| v["member"] = Value::Null)),
        ("group.update with null changes", EventType::GroupUpdate, Box::new(|v| v["changes"] = Value::Null)),
        ("group.update with an unknown change", EventType::GroupUpdate, Box::new(|v| v["changes"] = json!(["avatar"]))),
        ("group.update with empty changes", EventType::GroupUpdate, Box::new(|v| v["changes"] = json!([]))),
        (
            "group.create with a member",
            EventType::GroupCreate,
            Box::new(
                |v| v["member"] = json!({"userid": "x", "type": null, "unionid": null, "join_time": null, "join_scene": null, "invitor": null, "group_nickname": null, "name": null, "state": null, "role": null}),
            ),
        ),
        (
            "group.dismiss with a member",
            EventType::GroupDismiss,
            Box::new(
                |v| v["member"] = json!({"userid": "x", "type": null, "unionid": null, "join_time": null, "join_scene": null, "invitor": null, "group_nickname": null, "name": null, "state": null, "role": null}),
            ),
        ),
    ];
    for (what, t, breakage) in &other_cases {
        let mut body = valid_of(*t);
        schema_support::assert_valid_event(&body);
        breakage(&mut body);
        assert!(!schema_support::event_errors(&body).is_empty(), "{what} should be invalid:\n{body:#}");
    }
}

/// Each version is archived next to the current one, so a consumer pinned to it can still read
/// what it promised: version 4 added `member.role` (and the providers dingtalk and tim), version 3
/// `member.state`.
#[test]
fn each_new_key_is_a_new_version_and_the_old_ones_are_archived() {
    let current = schema_support::event_schema_json();
    assert!(
        current["$comment"].as_str().unwrap().starts_with("Version 4: adds member.role"),
        "{}",
        current["$comment"]
    );
    let archived = |text: &str| {
        let schema: Value = serde_json::from_str(text).unwrap();
        jsonschema::meta::validate(&schema).expect("the archived schema is valid");
        (
            schema["$comment"].as_str().unwrap().to_owned(),
            jsonschema::draft202012::options().should_validate_formats(true).build(&schema).unwrap(),
        )
    };
    let (v3_comment, v3) = archived(include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/schema/event.v3.schema.json")));
    let (v2_comment, v2) = archived(include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/schema/event.v2.schema.json")));
    assert!(v3_comment.starts_with("Version 3: adds member.state."), "{v3_comment}");
    assert!(v2_comment.starts_with("Version 2: adds seq."), "{v2_comment}");
    // What a v3 reader sees: member.role, which it does not know (it is strict).
    let mut body = valid_join();
    assert!(!v3.is_valid(&body), "v3 refuses member.role");
    body["member"].as_object_mut().unwrap().remove("role");
    assert!(v3.is_valid(&body), "{:?}", v3.iter_errors(&body).map(|e| e.to_string()).collect::<Vec<_>>());
    assert!(!schema_support::event_errors(&body).is_empty(), "v4 requires member.role");
    // And a v2 reader does not know member.state either.
    assert!(!v2.is_valid(&body), "v2 refuses member.state");
    body["member"].as_object_mut().unwrap().remove("state");
    assert!(v2.is_valid(&body));
}
