//! The provider-neutral core model: what a group and its members look like to the pipeline,
//! independent of HTTP, XML or AMQP.

use serde::{Deserialize, Serialize};

/// Where a group lives. Routing keys and stored snapshots are keyed by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Wecom,
    Dingtalk,
    Tim,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Wecom => "wecom",
            Provider::Dingtalk => "dingtalk",
            Provider::Tim => "tim",
        }
    }

    pub const ALL: [Provider; 3] = [Provider::Wecom, Provider::Dingtalk, Provider::Tim];

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "wecom" => Some(Provider::Wecom),
            "dingtalk" => Some(Provider::Dingtalk),
            "tim" => Some(Provider::Tim),
            _ => None,
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
    /// WeCom: 1 corp member, 2 external contact. `None` only for a member groupwatch never saw
    /// (a leave reported for a group first seen through that very callback).
    #[serde(rename = "type")]
    pub member_type: Option<i64>,
    pub unionid: Option<String>,
    /// Unix seconds. With `userid`, identifies one membership: a re-join has a new join time.
    pub join_time: Option<i64>,
    /// WeCom: 1 direct invite, 2 invite link, 3 QR code.
    pub join_scene: Option<i64>,
    pub invitor: Option<String>,
    pub group_nickname: Option<String>,
    pub name: Option<String>,
    /// WeCom: the `state` of the join way (「加入群聊」) that brought the member in; null for
    /// members who came another way, and on every other provider. Defaulted, so snapshots stored
    /// before it existed still load.
    #[serde(default)]
    pub state: Option<String>,
    /// The member's role in the group when the provider tells it; defaulted, so snapshots stored
    /// before it existed still load.
    #[serde(default)]
    pub role: Option<Role>,
}

/// A member's role in a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Owner,
    Admin,
    Member,
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

impl Member {
    /// A member known only by id.
    pub fn unknown(userid: &str) -> Self {
        Self {
            userid: userid.to_owned(),
            member_type: None,
            unionid: None,
            join_time: None,
            join_scene: None,
            invitor: None,
            group_nickname: None,
            name: None,
            state: None,
            role: None,
        }
    }
}

impl GroupSnapshot {
    /// A group known by id only (dismissed before groupwatch ever saw it).
    pub fn empty(chat_id: &str) -> Self {
        Self {
            chat_id: chat_id.to_owned(),
            name: String::new(),
            owner: String::new(),
            notice: String::new(),
            create_time: 0,
            admins: vec![],
            member_version: None,
            members: vec![],
        }
    }

    /// Sorts members by userid so that snapshots compare and diff deterministically.
    pub fn normalised(mut self) -> Self {
        self.members.sort_by(|a, b| a.userid.cmp(&b.userid));
        self.members.dedup_by(|a, b| a.userid == b.userid);
        self
    }

    /// Gives every member the role the group's `owner` and `admins` imply, for providers whose
    /// member lists carry no role of their own.
    pub fn with_roles(mut self) -> Self {
        for m in &mut self.members {
            m.role = Some(if m.userid == self.owner {
                Role::Owner
            } else if self.admins.contains(&m.userid) {
                Role::Admin
            } else {
                Role::Member
            });
        }
        self
    }

    pub fn member(&self, userid: &str) -> Option<&Member> {
        self.members.binary_search_by(|m| m.userid.as_str().cmp(userid)).ok().map(|i| &self.members[i])
    }
}

/// What the store keeps per group: the last snapshot, whether the group was dismissed (so a late
/// callback for a dismissed group does not resurrect it as a new baseline), where the chat's event
/// history stands, and which membership states it has recently left behind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredGroup {
    pub snapshot: GroupSnapshot,
    pub dismissed: bool,
    /// Unix milliseconds of the last save.
    pub updated_at_ms: i64,
    /// The `seq` of the chat's last event; 0 before the first.
    pub last_seq: i64,
    /// Bumped by every save; a save only succeeds from the revision it loaded (one writer per
    /// chat). 0 for a group that is not stored yet.
    pub revision: i64,
    /// Membership fingerprints the chat moved away from, newest last (bounded): a fetch showing
    /// one of them again, soon after, is a stale read.
    pub replaced: Vec<Replaced>,
    /// Unix milliseconds of the last reconciliation (a resync's look at the group), 0 if none.
    pub checked_at_ms: i64,
}

/// A membership state the chat left behind, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replaced {
    pub fingerprint: String,
    pub at_ms: i64,
}

impl StoredGroup {
    /// A group as first stored: no history, no events yet.
    pub fn new(snapshot: GroupSnapshot) -> Self {
        Self {
            snapshot,
            dismissed: false,
            updated_at_ms: 0,
            last_seq: 0,
            revision: 0,
            replaced: Vec::new(),
            checked_at_ms: 0,
        }
    }
}

/// The kinds of event groupwatch publishes; the routing key is `{provider}.{tenant}.{type}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum EventType {
    #[serde(rename = "member.join")]
    MemberJoin,
    #[serde(rename = "member.leave")]
    MemberLeave,
    #[serde(rename = "group.create")]
    GroupCreate,
    #[serde(rename = "group.update")]
    GroupUpdate,
    #[serde(rename = "group.dismiss")]
    GroupDismiss,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::MemberJoin => "member.join",
            EventType::MemberLeave => "member.leave",
            EventType::GroupCreate => "group.create",
            EventType::GroupUpdate => "group.update",
            EventType::GroupDismiss => "group.dismiss",
        }
    }
}

/// The group as described in every published event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSummary {
    pub name: String,
    pub owner: String,
    pub member_version: Option<String>,
    pub member_count: usize,
}

impl From<&GroupSnapshot> for GroupSummary {
    fn from(s: &GroupSnapshot) -> Self {
        Self {
            name: s.name.clone(),
            owner: s.owner.clone(),
            member_version: s.member_version.clone(),
            member_count: s.members.len(),
        }
    }
}

/// One published event: the JSON body of the AMQP message (see `docs/contract.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupEvent {
    /// Deterministic: the same change always yields the same id. Equals the AMQP `message_id`.
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub provider: Provider,
    pub tenant: String,
    pub chat_id: String,
    /// The event's place in the chat's history: 1, 2, 3, ... with no gap and no repeat.
    pub seq: i64,
    /// The reporting callback's time; `None` when the change was found only by comparing snapshots.
    pub occurred_at: Option<i64>,
    pub group: GroupSummary,
    pub member: Option<Member>,
    pub quit_scene: Option<i64>,
    pub changes: Option<Vec<String>>,
}

impl GroupEvent {
    pub fn routing_key(&self) -> String {
        format!("{}.{}.{}", self.provider, self.tenant, self.event_type.as_str())
    }
}
