//! The read API's answers, built from the store: the HTTP routes and the `members` / `groups-of`
//! commands print the same JSON.

use serde::Serialize;
use serde_json::value::RawValue;
use std::sync::Arc;

use crate::core::model::{GroupKey, Member, Provider};
use crate::store::{SnapshotStore, StoreError};

/// A page of the lists and of `/events` holds at most this many entries; larger `limit`s are
/// capped.
pub const MAX_LIMIT: i64 = 1000;
/// The page size when no `limit` is given.
pub const DEFAULT_LIMIT: i64 = 100;

/// `GET /v1/groups/{provider}/{tenant}/{chat_id}`: the stored snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct GroupView {
    pub provider: Provider,
    pub tenant: String,
    pub chat_id: String,
    pub name: String,
    pub owner: String,
    pub notice: String,
    pub create_time: i64,
    pub admins: Vec<String>,
    pub member_version: Option<String>,
    pub member_count: usize,
    /// Sorted by userid; empty once the group is dismissed (its leaves were published). As
    /// stored: each is an event `member` object already, so it is served without a round trip
    /// through `Member`.
    pub members: Box<RawValue>,
    /// The `seq` of the chat's last stored event.
    pub last_seq: i64,
    /// Unix milliseconds of the snapshot's last save.
    pub updated_at: i64,
    pub dismissed: bool,
}

/// `GET /v1/groups/{provider}/{tenant}/{chat_id}/events`.
#[derive(Debug, Serialize)]
pub struct EventsView {
    pub provider: Provider,
    pub tenant: String,
    pub chat_id: String,
    /// Each event's JSON body, byte for byte as published.
    pub events: Vec<Box<RawValue>>,
    /// The `after_seq` of the next page; null when this page reached the end.
    pub next_after_seq: Option<i64>,
}

/// One entry of `GET /v1/members/{provider}/{tenant}/{userid}/groups`.
#[derive(Debug, Clone, Serialize)]
pub struct MemberGroupView {
    pub chat_id: String,
    pub name: String,
    pub owner: String,
    pub join_time: Option<i64>,
    pub last_seq: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct MemberGroupsView {
    pub provider: Provider,
    pub tenant: String,
    pub userid: String,
    pub groups: Vec<MemberGroupView>,
    /// The `cursor` of the next page; null when this page reached the end.
    pub next_cursor: Option<String>,
}

/// One entry of `GET /v1/groups/{provider}/{tenant}`.
#[derive(Debug, Clone, Serialize)]
pub struct GroupHeadView {
    pub chat_id: String,
    pub name: String,
    pub owner: String,
    pub member_version: Option<String>,
    pub last_seq: i64,
    pub updated_at: i64,
    pub dismissed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupsView {
    pub provider: Provider,
    pub tenant: String,
    pub groups: Vec<GroupHeadView>,
    pub next_cursor: Option<String>,
}

/// Why a view could not be built, by what the caller should do.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// Retry later: the store is unreachable or busy.
    #[error("store unavailable")]
    Unavailable(#[source] StoreError),
    /// Not the caller's doing, and retrying will not help.
    #[error("store error")]
    Failed(#[source] StoreError),
}

impl From<StoreError> for ViewError {
    fn from(e: StoreError) -> Self {
        if e.is_unavailable() {
            ViewError::Unavailable(e)
        } else {
            ViewError::Failed(e)
        }
    }
}

/// The stored snapshot of one group; `None` when it is not stored.
pub async fn group(store: &Arc<dyn SnapshotStore>, key: &GroupKey) -> Result<Option<GroupView>, ViewError> {
    let Some(s) = store.snapshot_text(key).await? else { return Ok(None) };
    let corrupt = |source| ViewError::Failed(StoreError::Corrupt { chat_id: key.chat_id.clone(), source });
    let members = if s.dismissed { "[]".to_owned() } else { s.members };
    Ok(Some(GroupView {
        provider: key.provider,
        tenant: key.tenant.clone(),
        chat_id: key.chat_id.clone(),
        name: s.name,
        owner: s.owner,
        notice: s.notice,
        create_time: s.create_time,
        admins: serde_json::from_str(&s.admins).map_err(corrupt)?,
        member_version: s.member_version,
        member_count: count_members(&members),
        members: RawValue::from_string(members).map_err(corrupt)?,
        last_seq: s.last_seq,
        updated_at: s.updated_at_ms,
        dismissed: s.dismissed,
    }))
}

/// The members of a stored `members` array, without parsing it: each member object is written
/// starting with its `userid` key (`Member`'s first field), and inside a JSON string a quote is
/// always escaped, so `{"userid":` can only be the start of a member.
fn count_members(members: &str) -> usize {
    members.matches(r#"{"userid":"#).count()
}

impl GroupView {
    /// The members, parsed (for the command line's table).
    pub fn member_list(&self) -> Result<Vec<Member>, serde_json::Error> {
        serde_json::from_str(self.members.get())
    }
}

/// The chat's published events after `after_seq`; `None` when the chat is not stored.
pub async fn events(
    store: &Arc<dyn SnapshotStore>,
    key: &GroupKey,
    after_seq: i64,
    limit: i64,
) -> Result<Option<EventsView>, ViewError> {
    let limit = limit.clamp(1, MAX_LIMIT);
    // One more than asked tells whether there is a next page.
    let Some(mut rows) = store.history(key, after_seq, limit + 1).await? else { return Ok(None) };
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_after_seq = if more { rows.last().map(|e| e.seq) } else { None };
    let events = rows
        .into_iter()
        .map(|e| {
            RawValue::from_string(e.body)
                .map_err(|source| ViewError::Failed(StoreError::Corrupt { chat_id: key.chat_id.clone(), source }))
        })
        .collect::<Result<_, _>>()?;
    Ok(Some(EventsView {
        provider: key.provider,
        tenant: key.tenant.clone(),
        chat_id: key.chat_id.clone(),
        events,
        next_after_seq,
    }))
}

/// The groups `userid` is in now, a page of them after `cursor`.
pub async fn member_groups(
    store: &Arc<dyn SnapshotStore>,
    provider: Provider,
    tenant: &str,
    userid: &str,
    cursor: &str,
    limit: i64,
) -> Result<MemberGroupsView, ViewError> {
    let limit = limit.clamp(1, MAX_LIMIT);
    let mut rows = store.member_groups(provider, tenant, userid, cursor, limit + 1).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = if more { rows.last().map(|g| g.chat_id.clone()) } else { None };
    Ok(MemberGroupsView {
        provider,
        tenant: tenant.to_owned(),
        userid: userid.to_owned(),
        groups: rows
            .into_iter()
            .map(|g| MemberGroupView {
                chat_id: g.chat_id,
                name: g.name,
                owner: g.owner,
                join_time: g.join_time,
                last_seq: g.last_seq,
            })
            .collect(),
        next_cursor,
    })
}

/// Every group `userid` is in now, all pages (for the command line).
pub async fn all_member_groups(
    store: &Arc<dyn SnapshotStore>,
    provider: Provider,
    tenant: &str,
    userid: &str,
) -> Result<MemberGroupsView, ViewError> {
    let mut all = member_groups(store, provider, tenant, userid, "", MAX_LIMIT).await?;
    while let Some(cursor) = all.next_cursor.take() {
        let page = member_groups(store, provider, tenant, userid, &cursor, MAX_LIMIT).await?;
        all.groups.extend(page.groups);
        all.next_cursor = page.next_cursor;
    }
    Ok(all)
}

/// A page of the stored groups of one provider+tenant after `cursor`.
pub async fn groups(
    store: &Arc<dyn SnapshotStore>,
    provider: Provider,
    tenant: &str,
    cursor: &str,
    limit: i64,
) -> Result<GroupsView, ViewError> {
    let limit = limit.clamp(1, MAX_LIMIT);
    let mut rows = store.groups(provider, tenant, cursor, limit + 1).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = if more { rows.last().map(|g| g.chat_id.clone()) } else { None };
    Ok(GroupsView {
        provider,
        tenant: tenant.to_owned(),
        groups: rows
            .into_iter()
            .map(|g| GroupHeadView {
                chat_id: g.chat_id,
                name: g.name,
                owner: g.owner,
                member_version: g.member_version,
                last_seq: g.last_seq,
                updated_at: g.updated_at_ms,
                dismissed: g.dismissed,
            })
            .collect(),
        next_cursor,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_counted_without_parsing() {
        let mut tricky = Member::unknown("a");
        tricky.name = Some(r#"{"userid":"x"} and "quotes""#.into());
        let members = vec![tricky, Member::unknown("b"), Member::unknown("{\"userid\":")];
        let text = serde_json::to_string(&members).unwrap();
        assert_eq!(count_members(&text), 3, "{text}");
        assert_eq!(count_members("[]"), 0);
    }
}
