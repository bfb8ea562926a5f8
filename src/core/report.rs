//! What a vendor's notification says happened to a group, in provider-neutral terms. Providers
//! translate their callbacks into these at the border; nothing past the queue sees a vendor shape.

use serde::{Deserialize, Serialize};

/// What one callback reported, in provider-neutral terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeReport {
    /// Unix seconds, from the callback.
    pub occurred_at: i64,
    pub kind: ReportKind,
    /// Members the callback names as changed (WeCom `MemChangeList`); may be empty.
    #[serde(default)]
    pub members: Vec<String>,
    #[serde(default)]
    pub quit_scene: Option<i64>,
    /// The member version after the change (WeCom `CurMemVer`), when the callback has one.
    #[serde(default)]
    pub member_version: Option<String>,
    /// The member version before the change (WeCom `LastMemVer`), when the callback has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_version: Option<String>,
}

impl ChangeReport {
    /// A report of `kind` at `occurred_at` naming `members`, without quit scene or version.
    pub fn new(kind: ReportKind, occurred_at: i64, members: &[&str]) -> Self {
        Self {
            occurred_at,
            kind,
            members: members.iter().map(|m| m.to_string()).collect(),
            quit_scene: None,
            member_version: None,
            previous_version: None,
        }
    }

    /// Whether the report says a member joined or left.
    pub fn is_membership(&self) -> bool {
        matches!(self.kind, ReportKind::MembersJoined | ReportKind::MembersLeft)
    }
}

/// The newest member version the reports name: the state a fetch must reach to be exact. Among
/// reports of the same second, the later arrival wins.
pub fn target_version(reports: &[ChangeReport]) -> Option<&str> {
    reports
        .iter()
        .enumerate()
        .filter(|(_, r)| r.member_version.is_some())
        .max_by_key(|(i, r)| (r.occurred_at, *i))
        .and_then(|(_, r)| r.member_version.as_deref())
}

/// For each member the reports name, whether the newest report about them says they are in
/// the group (`true`) or out of it. Reports are taken in (time, arrival) order.
pub fn named_presence(reports: &[ChangeReport]) -> std::collections::BTreeMap<&str, bool> {
    let mut order: Vec<(i64, usize, &ChangeReport)> =
        reports.iter().enumerate().map(|(i, r)| (r.occurred_at, i, r)).collect();
    order.sort_by_key(|(at, i, _)| (*at, *i));
    let mut presence = std::collections::BTreeMap::new();
    for (_, _, r) in order {
        let present = match r.kind {
            ReportKind::MembersJoined => true,
            ReportKind::MembersLeft => false,
            _ => continue,
        };
        for userid in &r.members {
            presence.insert(userid.as_str(), present);
        }
    }
    presence
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportKind {
    Create,
    MembersJoined,
    MembersLeft,
    NameChanged,
    OwnerChanged,
    NoticeChanged,
    /// An update of a kind groupwatch does not know; still triggers a fetch and a diff.
    OtherUpdate,
    Dismiss,
}
