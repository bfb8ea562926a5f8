//! The WeCom `change_external_chat` callback mapped to provider-neutral reports.

use sha2::{Digest, Sha256};
use std::fmt::Write;

use crate::core::ids::HashWriter;
use crate::core::model::Provider;
use crate::core::report::{ChangeReport, ReportKind};
use crate::provider::wecom::xml::{ChangeExternalChat, ChangeType, UpdateDetail};

/// Maps a callback to what the diff needs to know.
pub fn report_of(e: &ChangeExternalChat) -> ChangeReport {
    let kind = match (e.change_type, &e.update_detail) {
        (ChangeType::Create, _) => ReportKind::Create,
        (ChangeType::Dismiss, _) => ReportKind::Dismiss,
        (ChangeType::Update, Some(UpdateDetail::AddMember)) => ReportKind::MembersJoined,
        (ChangeType::Update, Some(UpdateDetail::DelMember)) => ReportKind::MembersLeft,
        (ChangeType::Update, Some(UpdateDetail::ChangeName)) => ReportKind::NameChanged,
        (ChangeType::Update, Some(UpdateDetail::ChangeOwner)) => ReportKind::OwnerChanged,
        (ChangeType::Update, Some(UpdateDetail::ChangeNotice)) => ReportKind::NoticeChanged,
        (ChangeType::Update, _) => ReportKind::OtherUpdate,
    };
    // QuitScene is only meaningful on a leave; WeCom sends `0` on other types too.
    let quit_scene = if kind == ReportKind::MembersLeft { e.quit_scene.map(i64::from) } else { None };
    // The member version is only a consistency target for membership changes; a name change
    // carrying CurMemVer (seen in real captures) must still compare equal, so keep it as sent.
    ChangeReport {
        occurred_at: e.create_time,
        kind,
        members: e.mem_change_list.clone(),
        quit_scene,
        member_version: e.cur_mem_ver.clone(),
        previous_version: e.last_mem_ver.clone(),
    }
}

/// Whether the callback's [`dedupe_key`] names its change alone: a membership change naming its
/// members, or moving the member version from one value to another. Two renames in one second
/// have the same key (same time, same versions, no members), so attribute changes, creations
/// and dismissals are never skipped as repeats; processing one twice costs a fetch and
/// publishes nothing new.
pub fn dedupable(e: &ChangeExternalChat) -> bool {
    let membership = matches!(e.update_detail, Some(UpdateDetail::AddMember | UpdateDetail::DelMember));
    let moved = e.last_mem_ver.is_some() && e.cur_mem_ver.is_some() && e.last_mem_ver != e.cur_mem_ver;
    membership && (!e.mem_change_list.is_empty() || moved)
}

/// A hash of everything that tells two change reports apart. WeCom's own advice
/// (FromUserName + CreateTime) would merge distinct changes in one second, so the change
/// type, detail, member versions and changed members are all part of the key.
pub fn dedupe_key(tenant: &str, e: &ChangeExternalChat) -> String {
    let provider = Provider::Wecom;
    // Formatted straight into the hash: no temporary strings per callback. The bytes are
    // those of the fields' `Debug`/`Display` forms, separated by 0x1f; they must not change,
    // or a retry that straddles an upgrade would not be recognised.
    let mut h = HashWriter(Sha256::new());
    let _ = write!(
        h,
        "{}\x1f{tenant}\x1f{}\x1f{:?}\x1f{}\x1f{}\x1f{}\x1f{}\x1f",
        provider.as_str(),
        e.chat_id,
        e.change_type,
        e.update_detail.as_ref().map_or("", |d| d.as_str()),
        e.create_time,
        e.last_mem_ver.as_deref().unwrap_or(""),
        e.cur_mem_ver.as_deref().unwrap_or(""),
    );
    for (i, member) in e.mem_change_list.iter().enumerate() {
        let _ = write!(h, "{}{member}", if i == 0 { "" } else { "," });
    }
    let _ = write!(h, "\x1f");
    hex::encode(&h.0.finalize()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::wecom::xml::{parse_callback, Callback};

    #[test]
    fn reports_from_callbacks() {
        let xml = include_str!("../../../fixtures/wecom/update_del_member.xml");
        let crate::provider::wecom::xml::Callback::ChangeExternalChat(e) =
            crate::provider::wecom::xml::parse_callback(xml).unwrap()
        else {
            panic!()
        };
        let r = report_of(&e);
        assert_eq!(r.kind, ReportKind::MembersLeft);
        assert_eq!(r.quit_scene, Some(1));
        assert_eq!(r.members, ["wmOgQhDgAAuXFJGwbve4g4iXknfOAAAA"]);
        assert_eq!(r.member_version.as_deref(), Some("5e2b9d7a0c4f4e1b8d3a6c9f0e1d2c3b"));
        assert_eq!(r.occurred_at, 1572505700);
    }

    /// The key as first written, with a temporary string per field: the streaming version must
    /// hash exactly the same bytes.
    fn reference_key(provider: Provider, tenant: &str, e: &ChangeExternalChat) -> String {
        let mut h = Sha256::new();
        for part in [
            provider.as_str(),
            tenant,
            &e.chat_id,
            &format!("{:?}", e.change_type),
            e.update_detail.as_ref().map_or("", |d| d.as_str()),
            &e.create_time.to_string(),
            e.last_mem_ver.as_deref().unwrap_or(""),
            e.cur_mem_ver.as_deref().unwrap_or(""),
            &e.mem_change_list.join(","),
        ] {
            h.update(part.as_bytes());
            h.update([0x1f]);
        }
        hex::encode(&h.finalize()[..16])
    }

    #[test]
    fn dedupe_key_hashes_the_same_bytes_as_the_reference() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/wecom");
        let mut checked = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let xml = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            let Ok(Callback::ChangeExternalChat(mut e)) = parse_callback(&xml) else { continue };
            for members in [vec![], vec!["wm1".to_owned()], vec!["wm1".to_owned(), "wm2".to_owned(), "wm3".to_owned()]]
            {
                e.mem_change_list = members;
                assert_eq!(dedupe_key("acme", &e), reference_key(Provider::Wecom, "acme", &e));
                checked += 1;
            }
        }
        assert!(checked >= 18, "fixtures checked: {checked}");
    }

    #[test]
    fn only_membership_changes_are_skipped_as_repeats() {
        let parse = |name: &str| {
            let xml = std::fs::read_to_string(format!("{}/fixtures/wecom/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap();
            match parse_callback(&xml).unwrap() {
                Callback::ChangeExternalChat(e) => *e,
                other => panic!("{other:?}"),
            }
        };
        assert!(dedupable(&parse("update_add_member.xml")));
        assert!(dedupable(&parse("update_del_member.xml")));
        for name in ["update_change_name.xml", "create.xml", "dismiss.xml"] {
            assert!(!dedupable(&parse(name)), "{name}");
        }
    }
}
