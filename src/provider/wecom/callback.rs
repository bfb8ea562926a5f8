//! The WeCom `change_external_chat` callback mapped to provider-neutral reports.

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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
