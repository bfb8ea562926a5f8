//! The pure heart of groupwatch: previous snapshot + what was observed + what the callbacks said
//! → the events to publish. No I/O, no provider formats; every rule of the contract lives here.
//!
//! Rules (see `docs/contract.md`):
//! - a member in the group now and not before → `member.join`; before and not now →
//!   `member.leave` carrying the last-known details. Identity is `userid`; a different
//!   `join_time` means the member left and came back: a leave of the old membership and a join.
//! - a group first seen through a `create` report → `group.create`, then a join per member.
//! - a group first seen through any other report is a baseline: only members that the reports
//!   name as changed are published, never the whole membership; and members whose join time is
//!   not before the first join report (the rest of a burst, whose own reports would otherwise
//!   find them stored and publish nothing).
//! - dismissed → a leave per last-known member (for a group never stored: per member the dismiss
//!   report names), then `group.dismiss`.
//! - name/owner/notice changes → one `group.update` listing them in `changes`.
//! - `occurred_at`: the time of the report that names the member; else of a membership report
//!   without a member list (old-style callbacks: the changes its fetch found take its time);
//!   else `None` (found only by comparing snapshots).
//! - the events of a chat are numbered (`seq`) after the chat's last stored event: 1, 2, 3, ...
//!   with no gap. An id hashes what identifies the change (chat, userid, join_time, ...) and its
//!   `seq`, so a member who leaves and comes back with the same join time still gets new ids,
//!   while an event stored once and published again keeps its id.

use crate::core::ids::event_id;
use crate::core::model::{EventType, GroupEvent, GroupKey, GroupSnapshot, GroupSummary, Member, StoredGroup};
use crate::core::report::{ChangeReport, ReportKind};

/// What the provider says the group looks like now.
#[derive(Debug, Clone, Copy)]
pub enum Observed<'a> {
    Group(&'a GroupSnapshot),
    Dismissed,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Join,
    Leave,
}

impl ReportKind {
    fn is_membership(&self, dir: Direction) -> bool {
        match dir {
            Direction::Join => matches!(self, ReportKind::MembersJoined | ReportKind::Create),
            Direction::Leave => matches!(self, ReportKind::MembersLeft),
        }
    }
}

/// The occurred_at and quit_scene to attach to one member change.
fn attribute(reports: &[ChangeReport], userid: &str, dir: Direction) -> (Option<i64>, Option<i64>) {
    let latest = |f: &dyn Fn(&ChangeReport) -> bool| reports.iter().filter(|r| f(r)).max_by_key(|r| r.occurred_at);
    let named = latest(&|r| r.members.iter().any(|m| m == userid) && r.kind != ReportKind::Dismiss);
    let report = named.or_else(|| latest(&|r| r.members.is_empty() && r.kind.is_membership(dir)));
    match report {
        Some(r) => (Some(r.occurred_at), if dir == Direction::Leave { r.quit_scene } else { None }),
        None => (None, None),
    }
}

fn opt_num(v: Option<i64>) -> String {
    v.map_or_else(|| "-".to_owned(), |n| n.to_string())
}

struct Builder<'a> {
    key: &'a GroupKey,
    summary: GroupSummary,
    out: Vec<GroupEvent>,
}

impl Builder<'_> {
    fn push(
        &mut self,
        event_type: EventType,
        id_parts: &[&str],
        occurred_at: Option<i64>,
        member: Option<Member>,
        quit_scene: Option<i64>,
        changes: Option<Vec<String>>,
    ) {
        let mut parts = vec![event_type.as_str(), self.key.provider.as_str(), &self.key.tenant, &self.key.chat_id];
        parts.extend_from_slice(id_parts);
        self.out.push(GroupEvent {
            id: event_id(&parts),
            event_type,
            provider: self.key.provider,
            tenant: self.key.tenant.clone(),
            chat_id: self.key.chat_id.clone(),
            seq: 0,
            occurred_at,
            group: self.summary.clone(),
            member,
            quit_scene,
            changes,
        });
    }

    fn join(&mut self, member: &Member, reports: &[ChangeReport]) {
        let (at, _) = attribute(reports, &member.userid, Direction::Join);
        self.push(
            EventType::MemberJoin,
            &[&member.userid, &opt_num(member.join_time)],
            at,
            Some(member.clone()),
            None,
            None,
        );
    }

    /// `marker` tells apart leaves of members whose join time groupwatch never knew.
    fn leave(&mut self, member: &Member, reports: &[ChangeReport], marker: &str) {
        let (at, quit_scene) = attribute(reports, &member.userid, Direction::Leave);
        let membership = member.join_time.map_or_else(|| marker.to_owned(), |t| t.to_string());
        self.push(EventType::MemberLeave, &[&member.userid, &membership], at, Some(member.clone()), quit_scene, None);
    }
}

/// The events that take the group from `previous` to `observed`, numbered after the chat's last
/// stored event: [`diff`], then [`sequence`].
pub fn events(
    key: &GroupKey,
    previous: Option<&StoredGroup>,
    observed: Observed<'_>,
    reports: &[ChangeReport],
) -> Vec<GroupEvent> {
    let mut out = diff(key, previous, observed, reports);
    sequence(&mut out, previous.map_or(0, |p| p.last_seq));
    out
}

/// Gives `events` their places in the chat's history after `last_seq`, and ids that include
/// them: the id of a change is the hash of its content id and its `seq`.
pub fn sequence(events: &mut [GroupEvent], last_seq: i64) {
    for (i, e) in events.iter_mut().enumerate() {
        e.seq = last_seq + i as i64 + 1;
        e.id = event_id(&[&e.id, "seq", &e.seq.to_string()]);
    }
}

/// Computes the events that take the group from `previous` to `observed`, given the reports
/// that triggered the observation (oldest first or in any order). Their ids identify the change
/// by content only and `seq` is 0: [`sequence`] places them in the chat's history.
pub fn diff(
    key: &GroupKey,
    previous: Option<&StoredGroup>,
    observed: Observed<'_>,
    reports: &[ChangeReport],
) -> Vec<GroupEvent> {
    let prev = previous.filter(|p| !p.dismissed).map(|p| &p.snapshot);
    match observed {
        Observed::Dismissed => dismissed(key, previous, prev, reports),
        Observed::Group(now) => match prev {
            Some(prev) => changed(key, prev, now, reports),
            None if reports.iter().any(|r| r.kind == ReportKind::Create) => created(key, now, reports),
            None => baseline(key, now, reports),
        },
    }
}

fn dismissed(
    key: &GroupKey,
    previous: Option<&StoredGroup>,
    prev: Option<&GroupSnapshot>,
    reports: &[ChangeReport],
) -> Vec<GroupEvent> {
    if previous.is_some_and(|p| p.dismissed) {
        return Vec::new(); // already published
    }
    let at = reports.iter().filter(|r| r.kind == ReportKind::Dismiss).map(|r| r.occurred_at).max();
    let summary = prev.map(GroupSummary::from).unwrap_or(GroupSummary {
        name: String::new(),
        owner: String::new(),
        member_version: None,
        member_count: 0,
    });
    let mut b = Builder { key, summary, out: Vec::new() };
    let created = prev.map(|p| p.create_time.to_string()).unwrap_or_else(|| "-".into());
    // The last-known members; for a group never stored, those the dismiss report names (Tencent
    // IM's destroy callback lists them), known by id only.
    let named: Vec<Member> = match prev {
        Some(_) => Vec::new(),
        None => {
            let mut ids: Vec<&str> = reports
                .iter()
                .filter(|r| r.kind == ReportKind::Dismiss)
                .flat_map(|r| r.members.iter().map(String::as_str))
                .collect();
            ids.sort_unstable();
            ids.dedup();
            ids.into_iter().map(Member::unknown).collect()
        }
    };
    for m in prev.map(|p| p.members.as_slice()).unwrap_or(&named) {
        let membership = opt_num(m.join_time);
        b.push(EventType::MemberLeave, &[&m.userid, &membership], at, Some(m.clone()), None, None);
    }
    b.push(EventType::GroupDismiss, &[&created], at, None, None, None);
    b.out
}

fn created(key: &GroupKey, now: &GroupSnapshot, reports: &[ChangeReport]) -> Vec<GroupEvent> {
    let at = reports.iter().filter(|r| r.kind == ReportKind::Create).map(|r| r.occurred_at).min();
    let mut b = Builder { key, summary: GroupSummary::from(now), out: Vec::new() };
    b.push(EventType::GroupCreate, &[&now.create_time.to_string()], at, None, None, None);
    for m in &now.members {
        b.join(m, reports);
    }
    b.out
}

fn baseline(key: &GroupKey, now: &GroupSnapshot, reports: &[ChangeReport]) -> Vec<GroupEvent> {
    let mut b = Builder { key, summary: GroupSummary::from(now), out: Vec::new() };
    let mut seen = std::collections::HashSet::new();
    for r in reports {
        for userid in &r.members {
            match (&r.kind, now.member(userid)) {
                (ReportKind::MembersJoined, Some(m)) if seen.insert(("join", userid)) => b.join(m, reports),
                (ReportKind::MembersLeft, None) if seen.insert(("leave", userid)) => {
                    let marker = format!("r{}:{}", r.occurred_at, r.member_version.as_deref().unwrap_or(""));
                    b.leave(&Member::unknown(userid), reports, &marker)
                }
                _ => {}
            }
        }
    }
    // Members who joined no earlier than the first join notification are part of the burst it
    // opened: their own notifications are on the way, and would find them already stored (so
    // never published) if the baseline kept them silent. Their joins are real (the provider
    // dates them), so publishing them invents nothing; members from before stay silent.
    let first_join = reports.iter().filter(|r| r.kind == ReportKind::MembersJoined).map(|r| r.occurred_at).min();
    if let Some(cutoff) = first_join {
        for m in &now.members {
            if m.join_time.is_some_and(|t| t >= cutoff) && seen.insert(("join", &m.userid)) {
                b.join(m, reports);
            }
        }
    }
    b.out
}

fn changed(key: &GroupKey, prev: &GroupSnapshot, now: &GroupSnapshot, reports: &[ChangeReport]) -> Vec<GroupEvent> {
    let mut b = Builder { key, summary: GroupSummary::from(now), out: Vec::new() };
    for old in &prev.members {
        match now.member(&old.userid) {
            None => b.leave(old, reports, "-"),
            Some(new) if new.join_time != old.join_time => b.leave(old, reports, "-"),
            Some(_) => {}
        }
    }
    for new in &now.members {
        match prev.member(&new.userid) {
            Some(old) if old.join_time == new.join_time => {}
            _ => b.join(new, reports),
        }
    }
    let fields = [
        ("name", &prev.name, &now.name, ReportKind::NameChanged),
        ("owner", &prev.owner, &now.owner, ReportKind::OwnerChanged),
        ("notice", &prev.notice, &now.notice, ReportKind::NoticeChanged),
    ];
    let changed: Vec<_> = fields.iter().filter(|(_, old, new, _)| old != new).collect();
    if !changed.is_empty() {
        let at = reports
            .iter()
            .filter(|r| changed.iter().any(|(_, _, _, kind)| *kind == r.kind))
            .map(|r| r.occurred_at)
            .max();
        let names: Vec<String> = changed.iter().map(|(n, ..)| n.to_string()).collect();
        let mut id_parts: Vec<&str> = Vec::new();
        for (name, old, new, _) in &changed {
            id_parts.extend([*name, old.as_str(), new.as_str()]);
        }
        b.push(EventType::GroupUpdate, &id_parts, at, None, None, Some(names));
    }
    b.out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::Provider;

    fn key() -> GroupKey {
        GroupKey::new(Provider::Wecom, "acme", "wrChat")
    }

    fn member(userid: &str, join_time: i64) -> Member {
        Member {
            userid: userid.into(),
            member_type: Some(2),
            unionid: None,
            join_time: Some(join_time),
            join_scene: Some(3),
            invitor: Some("jack".into()),
            group_nickname: None,
            name: Some(format!("name of {userid}")),
            state: None,
            role: None,
        }
    }

    fn group(members: &[(&str, i64)], version: &str) -> GroupSnapshot {
        GroupSnapshot {
            chat_id: "wrChat".into(),
            name: "销售客服群".into(),
            owner: "ZhuShengBen".into(),
            notice: "文明沟通".into(),
            create_time: 1000,
            admins: vec![],
            member_version: Some(version.into()),
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

    fn summary(events: &[GroupEvent]) -> Vec<(EventType, Option<String>, Option<i64>)> {
        events.iter().map(|e| (e.event_type, e.member.as_ref().map(|m| m.userid.clone()), e.occurred_at)).collect()
    }

    #[test]
    fn join_is_attributed_to_the_report_naming_the_member() {
        let prev = stored(group(&[("a", 1)], "v1"));
        let now = group(&[("a", 1), ("b", 50)], "v2");
        let ev = diff(&key(), Some(&prev), Observed::Group(&now), &[report(ReportKind::MembersJoined, 60, &["b"])]);
        assert_eq!(summary(&ev), [(EventType::MemberJoin, Some("b".into()), Some(60))]);
        assert_eq!(ev[0].member.as_ref().unwrap(), &member("b", 50));
        assert_eq!(ev[0].group.member_count, 2);
        assert_eq!(ev[0].group.member_version.as_deref(), Some("v2"));
        assert_eq!(ev[0].routing_key(), "wecom.acme.member.join");
    }

    #[test]
    fn leave_carries_last_known_details_and_quit_scene() {
        let prev = stored(group(&[("a", 1), ("b", 50)], "v1"));
        let now = group(&[("a", 1)], "v2");
        let mut r = report(ReportKind::MembersLeft, 70, &["b"]);
        r.quit_scene = Some(1);
        let ev = diff(&key(), Some(&prev), Observed::Group(&now), &[r]);
        assert_eq!(summary(&ev), [(EventType::MemberLeave, Some("b".into()), Some(70))]);
        assert_eq!(ev[0].member.as_ref().unwrap(), &member("b", 50), "details from the previous snapshot");
        assert_eq!(ev[0].quit_scene, Some(1));
        assert_eq!(ev[0].group.member_count, 1);
    }

    #[test]
    fn change_without_its_own_callback_has_null_time() {
        let prev = stored(group(&[("a", 1)], "v1"));
        let now = group(&[("a", 1), ("b", 50), ("c", 55)], "v3");
        // Only c's join was reported; b's callback was lost.
        let ev = diff(&key(), Some(&prev), Observed::Group(&now), &[report(ReportKind::MembersJoined, 60, &["c"])]);
        assert_eq!(
            summary(&ev),
            [(EventType::MemberJoin, Some("b".into()), None), (EventType::MemberJoin, Some("c".into()), Some(60))]
        );
    }

    #[test]
    fn old_style_callback_without_member_list_gives_its_time_to_what_its_fetch_found() {
        let prev = stored(group(&[("a", 1)], "v1"));
        let now = group(&[("b", 50)], "v2");
        let reports = [report(ReportKind::MembersJoined, 60, &[]), report(ReportKind::MembersLeft, 61, &[])];
        let ev = diff(&key(), Some(&prev), Observed::Group(&now), &reports);
        assert_eq!(
            summary(&ev),
            [(EventType::MemberLeave, Some("a".into()), Some(61)), (EventType::MemberJoin, Some("b".into()), Some(60))]
        );
        // A name change says nothing about members: a join found alongside it has no time.
        let ev = diff(&key(), Some(&prev), Observed::Group(&now), &[report(ReportKind::NameChanged, 62, &[])]);
        assert!(ev.iter().all(|e| e.occurred_at.is_none()));
    }

    #[test]
    fn create_publishes_group_then_every_member() {
        let now = group(&[("a", 1), ("b", 2)], "v1");
        let ev = diff(&key(), None, Observed::Group(&now), &[report(ReportKind::Create, 10, &[])]);
        assert_eq!(
            summary(&ev),
            [
                (EventType::GroupCreate, None, Some(10)),
                (EventType::MemberJoin, Some("a".into()), Some(10)),
                (EventType::MemberJoin, Some("b".into()), Some(10)),
            ]
        );
    }

    #[test]
    fn first_seen_through_update_is_a_baseline() {
        let now = group(&[("a", 1), ("b", 2), ("c", 3)], "v9");
        let reports = [report(ReportKind::MembersJoined, 20, &["c"]), report(ReportKind::MembersLeft, 21, &["z"])];
        let ev = diff(&key(), None, Observed::Group(&now), &reports);
        assert_eq!(
            summary(&ev),
            [(EventType::MemberJoin, Some("c".into()), Some(20)), (EventType::MemberLeave, Some("z".into()), Some(21))]
        );
        assert_eq!(ev[1].member.as_ref().unwrap(), &Member::unknown("z"));
        // Nothing named: nothing published, not the whole membership.
        assert!(diff(&key(), None, Observed::Group(&now), &[report(ReportKind::NameChanged, 5, &[])]).is_empty());
    }

    #[test]
    fn a_baseline_in_a_burst_publishes_the_members_who_joined_since_the_first_report() {
        // a and b were there before; c's callback opened a burst that d and e are part of: their
        // callbacks come later and would find them stored.
        let now = group(&[("a", 1), ("b", 2), ("c", 20), ("d", 21), ("e", 22)], "v9");
        let reports = [report(ReportKind::MembersJoined, 20, &["c"])];
        let ev = diff(&key(), None, Observed::Group(&now), &reports);
        let joined: Vec<_> = ev.iter().map(|e| e.member.as_ref().unwrap().userid.as_str()).collect();
        assert_eq!(joined, ["c", "d", "e"]);
        assert!(ev.iter().all(|e| e.event_type == EventType::MemberJoin));
        // Then d's own callback finds d stored: nothing more.
        let stored_now = stored(now.clone());
        let later = [report(ReportKind::MembersJoined, 21, &["d"])];
        assert!(diff(&key(), Some(&stored_now), Observed::Group(&now), &later).is_empty());
    }

    #[test]
    fn dismiss_publishes_leaves_then_dismiss() {
        let prev = stored(group(&[("a", 1), ("b", 2)], "v1"));
        let ev = diff(&key(), Some(&prev), Observed::Dismissed, &[report(ReportKind::Dismiss, 99, &[])]);
        assert_eq!(
            summary(&ev),
            [
                (EventType::MemberLeave, Some("a".into()), Some(99)),
                (EventType::MemberLeave, Some("b".into()), Some(99)),
                (EventType::GroupDismiss, None, Some(99)),
            ]
        );
        assert_eq!(ev[2].group.name, "销售客服群");
        // Dismissed once is enough: a redelivered dismiss publishes nothing new.
        let gone = StoredGroup { dismissed: true, ..prev };
        assert!(diff(&key(), Some(&gone), Observed::Dismissed, &[report(ReportKind::Dismiss, 99, &[])]).is_empty());
        // Dismiss of a group never seen: just the dismiss.
        let ev = diff(&key(), None, Observed::Dismissed, &[report(ReportKind::Dismiss, 99, &[])]);
        assert_eq!(summary(&ev), [(EventType::GroupDismiss, None, Some(99))]);
        // ... unless the dismiss names its members (Tencent IM): a leave for each, by id only.
        let ev = diff(&key(), None, Observed::Dismissed, &[report(ReportKind::Dismiss, 99, &["y", "x"])]);
        assert_eq!(
            summary(&ev),
            [
                (EventType::MemberLeave, Some("x".into()), Some(99)),
                (EventType::MemberLeave, Some("y".into()), Some(99)),
                (EventType::GroupDismiss, None, Some(99)),
            ]
        );
        // A stored group's own members win over the list.
        let prev = stored(group(&[("a", 1), ("b", 2)], "v1"));
        let ev = diff(&key(), Some(&prev), Observed::Dismissed, &[report(ReportKind::Dismiss, 99, &["z"])]);
        assert_eq!(ev.len(), 3);
        assert!(ev.iter().all(|e| e.member.as_ref().is_none_or(|m| m.userid != "z")));
    }

    #[test]
    fn name_owner_notice_changes() {
        let prev = stored(group(&[("a", 1)], "v1"));
        let mut now = prev.snapshot.clone();
        now.name = "新群名".into();
        now.notice = "new notice".into();
        let reports = [report(ReportKind::NameChanged, 30, &[]), report(ReportKind::NoticeChanged, 31, &[])];
        let ev = diff(&key(), Some(&prev), Observed::Group(&now), &reports);
        assert_eq!(summary(&ev), [(EventType::GroupUpdate, None, Some(31))]);
        assert_eq!(ev[0].changes.as_deref(), Some(&["name".to_string(), "notice".to_string()][..]));
        assert_eq!(ev[0].group.name, "新群名");
        let mut owner = prev.snapshot.clone();
        owner.owner = "sam".into();
        let ev = diff(&key(), Some(&prev), Observed::Group(&owner), &[]);
        assert_eq!(ev[0].changes.as_deref(), Some(&["owner".to_string()][..]));
        assert_eq!(ev[0].occurred_at, None);
    }

    #[test]
    fn leave_and_rejoin_is_a_new_join_with_a_new_id() {
        let prev = stored(group(&[("a", 1)], "v1"));
        let now = group(&[("a", 500)], "v3");
        let ev = diff(&key(), Some(&prev), Observed::Group(&now), &[]);
        assert_eq!(
            summary(&ev),
            [(EventType::MemberLeave, Some("a".into()), None), (EventType::MemberJoin, Some("a".into()), None)]
        );
        let first_join =
            diff(&key(), None, Observed::Group(&group(&[("a", 1)], "v1")), &[report(ReportKind::Create, 1, &[])]);
        assert_ne!(first_join[1].id, ev[1].id, "a re-join is a new membership");
    }

    #[test]
    fn ids_are_stable_under_reprocessing_and_distinct_across_changes() {
        let prev = stored(group(&[("a", 1)], "v1"));
        let now = group(&[("a", 1), ("b", 50)], "v2");
        let r = [report(ReportKind::MembersJoined, 60, &["b"])];
        let once = diff(&key(), Some(&prev), Observed::Group(&now), &r);
        let again = diff(&key(), Some(&prev), Observed::Group(&now), &r);
        assert_eq!(once, again);
        // A later fetch that also found another change keeps b's id.
        let later = group(&[("a", 1), ("b", 50), ("c", 70)], "v3");
        let more = diff(&key(), Some(&prev), Observed::Group(&later), &r);
        assert_eq!(more[0].id, once[0].id);
        let ids: std::collections::HashSet<_> = more.iter().map(|e| &e.id).collect();
        assert_eq!(ids.len(), more.len());
        // Same userid in another chat or tenant: another id.
        let other = GroupKey::new(Provider::Wecom, "beta", "wrChat");
        assert_ne!(diff(&other, Some(&prev), Observed::Group(&now), &r)[0].id, once[0].id);
        assert_eq!(once[0].id.len(), 36);
    }

    #[test]
    fn no_change_no_event() {
        let prev = stored(group(&[("a", 1), ("b", 2)], "v1"));
        let now = prev.snapshot.clone();
        assert!(diff(&key(), Some(&prev), Observed::Group(&now), &[report(ReportKind::MembersJoined, 5, &["b"])])
            .is_empty());
    }

    #[test]
    fn sequence_numbers_after_the_last_event_and_ids_include_seq() {
        let prev = StoredGroup { last_seq: 7, ..stored(group(&[("a", 1)], "v1")) };
        let now = group(&[("a", 1), ("b", 50), ("c", 51)], "v2");
        let ev = events(&key(), Some(&prev), Observed::Group(&now), &[]);
        assert_eq!(ev.iter().map(|e| e.seq).collect::<Vec<_>>(), [8, 9]);
        let content = diff(&key(), Some(&prev), Observed::Group(&now), &[]);
        assert_ne!(ev[0].id, content[0].id, "the id includes the seq");
        // The same change at another place in the history is another event.
        let later = StoredGroup { last_seq: 20, ..prev.clone() };
        assert_ne!(events(&key(), Some(&later), Observed::Group(&now), &[])[0].id, ev[0].id);
        assert_eq!(events(&key(), Some(&prev), Observed::Group(&now), &[]), ev, "deterministic");
    }
}
