//! Every fixture in `fixtures/wecom` parses to exactly the struct it describes.

use groupwatch::provider::wecom::xml::{parse_callback, Callback, ChangeExternalChat, ChangeType, UpdateDetail};

fn parse(name: &str) -> Callback {
    let path = format!("{}/fixtures/wecom/{name}", env!("CARGO_MANIFEST_DIR"));
    parse_callback(&std::fs::read_to_string(&path).unwrap()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn event(name: &str) -> ChangeExternalChat {
    match parse(name) {
        Callback::ChangeExternalChat(e) => *e,
        other => panic!("{name}: {other:?}"),
    }
}

const CHAT: &str = "wrOgQhDgAAMYQiS5ol9G7gK9JVAAAA";
const CORP: &str = "ww1234567890abcdef";

fn base(create_time: i64, change_type: ChangeType) -> ChangeExternalChat {
    ChangeExternalChat {
        create_time,
        to_user_name: Some(CORP.into()),
        suite_id: None,
        auth_corp_id: None,
        chat_id: CHAT.into(),
        change_type,
        update_detail: None,
        join_scene: None,
        quit_scene: None,
        mem_change_cnt: None,
        mem_change_list: vec![],
        last_mem_ver: None,
        cur_mem_ver: None,
    }
}

#[test]
fn create_and_dismiss() {
    assert_eq!(event("create.xml"), base(1572505490, ChangeType::Create));
    assert_eq!(event("dismiss.xml"), base(1572506100, ChangeType::Dismiss));
}

#[test]
fn add_member() {
    assert_eq!(
        event("update_add_member.xml"),
        ChangeExternalChat {
            update_detail: Some(UpdateDetail::AddMember),
            join_scene: Some(3),
            quit_scene: Some(0),
            mem_change_cnt: Some(1),
            mem_change_list: vec!["wmOgQhDgAAuXFJGwbve4g4iXknfOBBBB".into()],
            last_mem_ver: Some("9c3f97c2ada667dfb5f6d03308d963e1".into()),
            cur_mem_ver: Some("71217227bbd112ecfe3a49c482195cb4".into()),
            ..base(1572505600, ChangeType::Update)
        }
    );
}

#[test]
fn del_member_with_items_and_as_csv() {
    assert_eq!(
        event("update_del_member.xml"),
        ChangeExternalChat {
            update_detail: Some(UpdateDetail::DelMember),
            quit_scene: Some(1),
            mem_change_cnt: Some(1),
            mem_change_list: vec!["wmOgQhDgAAuXFJGwbve4g4iXknfOAAAA".into()],
            last_mem_ver: Some("71217227bbd112ecfe3a49c482195cb4".into()),
            cur_mem_ver: Some("5e2b9d7a0c4f4e1b8d3a6c9f0e1d2c3b".into()),
            ..base(1572505700, ChangeType::Update)
        }
    );
    let csv = event("update_del_member_csv.xml");
    assert_eq!(csv.mem_change_list, ["wmEJ1sDgAAkzfMCgTGqRSr4XgAAAAA", "wmEJ1sDgAAkzfMCgTGqRSr4XgBBBBB"]);
    assert_eq!(csv.quit_scene, Some(0));
    assert_eq!(csv.mem_change_cnt, Some(2));
}

#[test]
fn owner_name_notice_changes() {
    assert_eq!(
        event("update_change_owner.xml"),
        ChangeExternalChat { update_detail: Some(UpdateDetail::ChangeOwner), ..base(1572505800, ChangeType::Update) }
    );
    // A change_name capture carries member-change fields too; they are kept, not rejected.
    assert_eq!(
        event("update_change_name.xml"),
        ChangeExternalChat {
            update_detail: Some(UpdateDetail::ChangeName),
            join_scene: Some(0),
            mem_change_cnt: Some(2),
            last_mem_ver: Some("5e2b9d7a0c4f4e1b8d3a6c9f0e1d2c3b".into()),
            cur_mem_ver: Some("5e2b9d7a0c4f4e1b8d3a6c9f0e1d2c3b".into()),
            ..base(1572505900, ChangeType::Update)
        }
    );
    assert_eq!(
        event("update_change_notice.xml"),
        ChangeExternalChat { update_detail: Some(UpdateDetail::ChangeNotice), ..base(1572506000, ChangeType::Update) }
    );
}

#[test]
fn third_party_shape() {
    assert_eq!(
        event("third_party_update.xml"),
        ChangeExternalChat {
            create_time: 1403610513,
            to_user_name: None,
            suite_id: Some("ww4asffe99e54c0f4c".into()),
            auth_corp_id: Some("ww1234567890abcdef".into()),
            chat_id: "wrOgQhDgAAcwMTB7YmDkbeBsAAAA".into(),
            change_type: ChangeType::Update,
            update_detail: Some(UpdateDetail::AddMember),
            join_scene: Some(1),
            quit_scene: Some(0),
            mem_change_cnt: Some(10),
            mem_change_list: vec![],
            last_mem_ver: None,
            cur_mem_ver: None,
        }
    );
}

#[test]
fn unknown_event_type_is_not_an_error() {
    assert_eq!(parse("unknown_event.xml"), Callback::Other { kind: "change_external_contact".into() });
}
