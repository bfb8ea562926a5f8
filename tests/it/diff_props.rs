//! Property tests of `diff`: the published events replay the membership change exactly, ids
//! are deterministic and unique, and dismiss / create have their fixed shape.

use std::collections::{BTreeMap, HashSet};

use groupwatch::core::diff::{diff, Observed};
use groupwatch::core::model::{EventType, GroupEvent, GroupKey, GroupSnapshot, Member, Provider, StoredGroup};
use groupwatch::core::report::{ChangeReport, ReportKind};
use proptest::prelude::*;

/// Small alphabet: previous and new member sets overlap most of the time.
const USERIDS: [&str; 6] = ["a", "b", "c", "wmJack", "wmRose", "张三"];

fn key() -> GroupKey {
    GroupKey::new(Provider::Wecom, "acme", "wrChat")
}

/// One membership is `userid` + `join_time`.
type Membership = (String, Option<i64>);

fn membership(m: &Member) -> Membership {
    (m.userid.clone(), m.join_time)
}

/// A join time from a small range (so equal times happen), occasionally unknown.
fn join_time() -> impl Strategy<Value = Option<i64>> {
    prop_oneof![9 => (1i64..6).prop_map(Some), 1 => Just(None)]
}

fn member(userid: &'static str) -> impl Strategy<Value = Member> {
    (
        join_time(),
        prop::option::of(1i64..3),
        prop::option::of(1i64..4),
        prop::option::of("[a-z]{1,4}"),
        prop::option::of("[a-z ]{0,6}"),
        prop::option::of("\\PC{0,4}"),
    )
        .prop_map(move |(join_time, member_type, join_scene, invitor, group_nickname, name)| Member {
            userid: userid.to_owned(),
            member_type,
            unionid: None,
            join_time,
            join_scene,
            invitor,
            group_nickname,
            name,
            state: None,
            role: None,
        })
}

/// What happens to one userid between the two snapshots.
#[derive(Debug, Clone)]
enum Fate {
    Absent,
    /// Same membership; the other details may have been refreshed.
    Stays,
    /// Left and came back: same userid, a join time it did not have before.
    Rejoins(i64),
    /// An independently drawn member (may or may not collide with the previous one).
    Fresh(Member),
}

fn slot(userid: &'static str) -> impl Strategy<Value = (Option<Member>, Option<Member>)> {
    let fate = prop_oneof![
        Just(Fate::Absent),
        Just(Fate::Stays),
        (1i64..1000).prop_map(Fate::Rejoins),
        member(userid).prop_map(Fate::Fresh),
    ];
    (prop::option::of(member(userid)), fate, member(userid)).prop_map(|(prev, fate, details)| {
        let next = match (fate, &prev) {
            (Fate::Absent, _) => None,
            (Fate::Stays, Some(p)) => Some(Member { join_time: p.join_time, ..details }),
            (Fate::Rejoins(delta), Some(p)) => {
                Some(Member { join_time: Some(p.join_time.unwrap_or(0) + delta), ..details })
            }
            (Fate::Stays | Fate::Rejoins(_), None) => Some(details),
            (Fate::Fresh(m), _) => Some(m),
        };
        (prev, next)
    })
}

fn snapshot(members: Vec<Member>, name: &str, version: &str) -> GroupSnapshot {
    GroupSnapshot {
        chat_id: "wrChat".into(),
        name: name.into(),
        owner: "owner".into(),
        notice: "notice".into(),
        create_time: 1000,
        admins: vec![],
        member_version: Some(version.into()),
        members,
    }
    .normalised()
}

fn report() -> impl Strategy<Value = ChangeReport> {
    let kind = prop_oneof![
        Just(ReportKind::MembersJoined),
        Just(ReportKind::MembersLeft),
        Just(ReportKind::NameChanged),
        Just(ReportKind::OtherUpdate),
    ];
    (1i64..100, kind, prop::collection::vec(prop::sample::select(&USERIDS[..]), 0..3), prop::option::of(0i64..2))
        .prop_map(|(occurred_at, kind, members, quit_scene)| ChangeReport {
            occurred_at,
            kind,
            members: members.into_iter().map(str::to_owned).collect(),
            quit_scene,
            member_version: None,
            previous_version: None,
        })
}

/// A previous snapshot, the new one, and the reports that came with the change.
fn change() -> impl Strategy<Value = (GroupSnapshot, GroupSnapshot, Vec<ChangeReport>)> {
    let slots: Vec<_> = USERIDS.iter().map(|u| slot(u)).collect();
    (slots, any::<bool>(), prop::collection::vec(report(), 0..4)).prop_map(|(slots, renamed, reports)| {
        let (prev, next): (Vec<_>, Vec<_>) = slots.into_iter().unzip();
        let prev = snapshot(prev.into_iter().flatten().collect(), "group", "v1");
        let next = snapshot(next.into_iter().flatten().collect(), if renamed { "renamed" } else { "group" }, "v2");
        (prev, next, reports)
    })
}

fn stored(snapshot: GroupSnapshot) -> StoredGroup {
    StoredGroup::new(snapshot)
}

fn assert_unique_ids(events: &[GroupEvent]) -> Result<(), TestCaseError> {
    let ids: HashSet<_> = events.iter().map(|e| e.id.as_str()).collect();
    prop_assert_eq!(ids.len(), events.len(), "duplicate ids in {:#?}", events);
    Ok(())
}

proptest! {
    #[test]
    fn events_replay_the_membership_change((prev, next, reports) in change()) {
        let events = diff(&key(), Some(&stored(prev.clone())), Observed::Group(&next), &reports);
        let mut members: BTreeMap<Membership, Member> =
            prev.members.iter().map(|m| (membership(m), m.clone())).collect();
        for e in &events {
            match e.event_type {
                EventType::MemberLeave => {
                    let m = e.member.as_ref().expect("a leave names its member");
                    prop_assert!(members.remove(&membership(m)).is_some(), "leave of a membership not held: {:?}", m);
                }
                EventType::MemberJoin => {
                    let m = e.member.as_ref().expect("a join names its member");
                    prop_assert!(members.insert(membership(m), m.clone()).is_none(), "join of a membership held: {:?}", m);
                }
                EventType::GroupUpdate => prop_assert_eq!(&next.name, "renamed"),
                other => prop_assert!(false, "unexpected {:?} for an existing group", other),
            }
        }
        let expected: BTreeMap<Membership, &Member> = next.members.iter().map(|m| (membership(m), m)).collect();
        prop_assert_eq!(members.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>());
        // Whoever joined is published with the full details of the new snapshot.
        for e in events.iter().filter(|e| e.event_type == EventType::MemberJoin) {
            let m = e.member.as_ref().unwrap();
            prop_assert_eq!(expected[&membership(m)], m);
        }
        prop_assert_eq!(events.iter().filter(|e| e.event_type == EventType::GroupUpdate).count(), usize::from(next.name == "renamed"));
        assert_unique_ids(&events)?;
    }

    #[test]
    fn ids_are_stable_under_reprocessing_and_unrelated_changes(
        (prev, next, reports) in change(),
        extra in prop_oneof![Just(None), member("zz").prop_map(Some)],
        drop_one in any::<prop::sample::Index>(),
    ) {
        let previous = stored(prev.clone());
        let once = diff(&key(), Some(&previous), Observed::Group(&next), &reports);
        let again = diff(&key(), Some(&previous), Observed::Group(&next), &reports);
        prop_assert_eq!(&once, &again);

        // One more change that has nothing to do with the others: a new member "zz", or else
        // the departure of a member whose membership did not change.
        let mut more = next.clone();
        match extra {
            Some(zz) => more.members.push(zz),
            None => {
                let kept: Vec<_> = next.members.iter().filter(|m| prev.members.iter().any(|p| membership(p) == membership(m))).map(|m| m.userid.clone()).collect();
                if kept.is_empty() {
                    return Ok(());
                }
                let gone = drop_one.get(&kept).clone();
                more.members.retain(|m| m.userid != gone);
            }
        }
        let more = more.normalised();
        let with_extra = diff(&key(), Some(&previous), Observed::Group(&more), &reports);
        prop_assert_eq!(with_extra.len(), once.len() + 1);
        let ids: HashSet<_> = with_extra.iter().map(|e| e.id.as_str()).collect();
        for e in &once {
            prop_assert!(ids.contains(e.id.as_str()), "id of {:?} changed", e);
        }
        assert_unique_ids(&with_extra)?;
    }

    #[test]
    fn dismiss_is_a_leave_per_member_then_one_dismiss(
        (prev, _, reports) in change(),
        at in 1i64..100,
    ) {
        let mut reports = reports;
        reports.push(ChangeReport { occurred_at: at, kind: ReportKind::Dismiss, members: vec![], quit_scene: None, member_version: None, previous_version: None });
        let events = diff(&key(), Some(&stored(prev.clone())), Observed::Dismissed, &reports);
        prop_assert_eq!(events.len(), prev.members.len() + 1);
        let (last, leaves) = events.split_last().unwrap();
        prop_assert_eq!(last.event_type, EventType::GroupDismiss);
        prop_assert_eq!(last.member.as_ref(), None);
        for (e, m) in leaves.iter().zip(&prev.members) {
            prop_assert_eq!(e.event_type, EventType::MemberLeave);
            prop_assert_eq!(e.member.as_ref(), Some(m));
        }
        assert_unique_ids(&events)?;
    }

    #[test]
    fn create_is_the_group_then_a_join_per_member(
        (_, next, reports) in change(),
        at in 1i64..100,
    ) {
        let mut reports = reports;
        reports.push(ChangeReport { occurred_at: at, kind: ReportKind::Create, members: vec![], quit_scene: None, member_version: None, previous_version: None });
        let events = diff(&key(), None, Observed::Group(&next), &reports);
        prop_assert_eq!(events.len(), next.members.len() + 1);
        let (first, joins) = events.split_first().unwrap();
        prop_assert_eq!(first.event_type, EventType::GroupCreate);
        prop_assert_eq!(first.member.as_ref(), None);
        for (e, m) in joins.iter().zip(&next.members) {
            prop_assert_eq!(e.event_type, EventType::MemberJoin);
            prop_assert_eq!(e.member.as_ref(), Some(m));
        }
        assert_unique_ids(&events)?;
    }
}
