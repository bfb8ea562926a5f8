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
        }
    }
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
