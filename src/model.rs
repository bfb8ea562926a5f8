//! The provider-neutral core model: what a group and its members look like to the pipeline,
//! independent of HTTP, XML or AMQP.

use serde::{Deserialize, Serialize};

/// Where a group lives. Routing keys and stored snapshots are keyed by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Wecom,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Wecom => "wecom",
        }
    }
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identifies one group across providers and tenants.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GroupKey {
    pub provider: Provider,
    pub tenant: String,
    pub chat_id: String,
}

impl GroupKey {
    pub fn new(provider: Provider, tenant: impl Into<String>, chat_id: impl Into<String>) -> Self {
        Self { provider, tenant: tenant.into(), chat_id: chat_id.into() }
    }
}

/// One member of a group, with everything the provider tells about them. Serialises exactly as
/// the `member` object of a published event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Identity of the member within the group (WeCom: userid or external userid).
    pub userid: String,
    /// WeCom: 1 corp member, 2 external contact.
    #[serde(rename = "type")]
    pub member_type: i64,
    pub unionid: Option<String>,
    /// Unix seconds. With `userid`, identifies one membership: a re-join has a new join time.
    pub join_time: i64,
    /// WeCom: 1 direct invite, 2 invite link, 3 QR code.
    pub join_scene: i64,
    pub invitor: Option<String>,
    pub group_nickname: Option<String>,
    pub name: Option<String>,
}

/// The state of a group at one moment, as fetched from the provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSnapshot {
    pub chat_id: String,
    pub name: String,
    pub owner: String,
    pub notice: String,
    pub create_time: i64,
    pub admins: Vec<String>,
    /// WeCom's `member_version`; equals the `CurMemVer` of the last change it includes.
    pub member_version: Option<String>,
    /// Sorted by `userid`.
    pub members: Vec<Member>,
}

impl GroupSnapshot {
    /// Sorts members by userid so that snapshots compare and diff deterministically.
    pub fn normalised(mut self) -> Self {
        self.members.sort_by(|a, b| a.userid.cmp(&b.userid));
        self.members.dedup_by(|a, b| a.userid == b.userid);
        self
    }

    pub fn member(&self, userid: &str) -> Option<&Member> {
        self.members.binary_search_by(|m| m.userid.as_str().cmp(userid)).ok().map(|i| &self.members[i])
    }
}

/// What the store keeps per group: the last snapshot, and whether the group was dismissed
/// (so a late callback for a dismissed group does not resurrect it as a new baseline).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredGroup {
    pub snapshot: GroupSnapshot,
    pub dismissed: bool,
    /// Unix milliseconds of the last save.
    pub updated_at_ms: i64,
}
