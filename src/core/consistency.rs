//! How much of a fetched group to believe.
//!
//! Vendors' group APIs lag their notifications: WeCom says so ("wait, e.g., 2 s"), and any API
//! can answer from a replica that has not caught up. A stale answer must never change history:
//! diffed whole, it would publish a leave for a member who just joined, and the real state would
//! then come back as a second join. So a fetch is judged before it is diffed:
//!
//! - **Current**: provably at least as new as everything known. WeCom: its `member_version` is
//!   the newest `CurMemVer` of the pending callbacks. Any provider: it shows exactly the stored
//!   group plus the changes the pending reports name. Diffed whole.
//! - **NamedOnly**: it shows every change the reports name, and more. The more may be newer
//!   changes whose notifications are on their way, or a stale artefact: only the named changes are
//!   applied now, and the rest waits to be confirmed by a later read.
//! - **Stale**: its membership is one the chat left behind less than the stale horizon ago, one a
//!   pending report says it moved away from, or exactly the stored one while the reports say more
//!   happened. Never used.
//! - **Unconfirmed**: nothing proves it either way (a reconciliation without notifications, or a
//!   fetch that contradicts a report). It is believed only when a later read, at least the
//!   confirmation delay after the first, shows the same group; one that contradicts a report
//!   also needs the retry budget spent first.

use std::collections::BTreeMap;

use crate::core::ids::short_hash;
use crate::core::model::{GroupSnapshot, Member, StoredGroup};
use crate::core::report::{named_presence, target_version, ChangeReport, ReportKind};

/// The rule a provider's fetches are judged by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// The API returns a membership version that notifications name (WeCom `member_version`,
    /// `CurMemVer`).
    MemberVersion,
    /// No version: a fetch is consistent when it shows every change the reports name (DingTalk,
    /// Tencent IM).
    NamedMembers,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Current,
    NamedOnly,
    Stale,
    /// `contradicts`: the fetch does not show a change a report names.
    Unconfirmed {
        contradicts: bool,
    },
}

/// What a snapshot says about membership, as a short string: the provider's version under
/// [`Consistency::MemberVersion`], else a hash of the members and their join times.
pub fn fingerprint(rule: Consistency, snapshot: &GroupSnapshot) -> String {
    match (rule, &snapshot.member_version) {
        (Consistency::MemberVersion, Some(version)) => version.clone(),
        _ => {
            let mut parts: Vec<String> = Vec::with_capacity(snapshot.members.len());
            for m in &snapshot.members {
                parts.push(format!("{}@{}", m.userid, m.join_time.map_or_else(|| "-".into(), |t| t.to_string())));
            }
            let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
            format!("m:{}", short_hash(&parts))
        }
    }
}

/// Identifies everything a read showed (members with their details, version, name, owner,
/// notice): two reads with the same id agree.
pub fn read_id(snapshot: &GroupSnapshot) -> String {
    let json = serde_json::to_string(snapshot).expect("snapshots serialise");
    short_hash(&[&json])
}

/// Judges fetches for one provider.
#[derive(Debug, Clone, Copy)]
pub struct Judge {
    pub rule: Consistency,
    /// A membership the chat left behind less than this long ago is a stale read when a fetch
    /// shows it again.
    pub stale_horizon_ms: i64,
}

fn attributes(s: &GroupSnapshot) -> (&str, &str, &str) {
    (&s.name, &s.owner, &s.notice)
}

fn memberships(s: &GroupSnapshot) -> Vec<(&str, Option<i64>)> {
    s.members.iter().map(|m| (m.userid.as_str(), m.join_time)).collect()
}

impl Judge {
    /// The verdict on `fetched`, given what is stored and the reports that are pending.
    pub fn judge(
        &self,
        previous: Option<&StoredGroup>,
        fetched: &GroupSnapshot,
        reports: &[ChangeReport],
        now_ms: i64,
    ) -> Verdict {
        let fp = fingerprint(self.rule, fetched);
        if self.rule == Consistency::MemberVersion && target_version(reports) == Some(fp.as_str()) {
            return Verdict::Current;
        }
        let named_ok =
            named_presence(reports).into_iter().all(|(userid, present)| fetched.member(userid).is_some() == present);
        let Some(previous) = previous.filter(|p| !p.dismissed) else {
            // Nothing stored to contradict: a create, or a baseline that publishes only what the
            // reports name, which must then be in the fetch.
            return if named_ok { Verdict::Current } else { Verdict::Unconfirmed { contradicts: true } };
        };
        if previous.replaced.iter().any(|r| r.fingerprint == fp && now_ms - r.at_ms < self.stale_horizon_ms) {
            return Verdict::Stale;
        }
        // The membership a report says it moved away from (WeCom `LastMemVer`) is older than
        // that report; and a fetch that shows exactly what is stored while reports say more
        // happened has not caught up with them.
        let before_a_report = reports.iter().any(|r| {
            r.previous_version.as_deref() == Some(fp.as_str()) && r.member_version.as_deref() != Some(fp.as_str())
        });
        if before_a_report || (!named_ok && fp == fingerprint(self.rule, &previous.snapshot)) {
            return Verdict::Stale;
        }
        if !named_ok {
            return Verdict::Unconfirmed { contradicts: true };
        }
        let expected = apply_named(&previous.snapshot, fetched, reports, None);
        if memberships(&expected) == memberships(fetched) && attributes(&expected) == attributes(fetched) {
            return Verdict::Current;
        }
        let names_something = reports.iter().any(|r| {
            !r.members.is_empty()
                || matches!(r.kind, ReportKind::NameChanged | ReportKind::OwnerChanged | ReportKind::NoticeChanged)
        });
        if names_something {
            Verdict::NamedOnly
        } else {
            Verdict::Unconfirmed { contradicts: false }
        }
    }
}

/// The previous snapshot with exactly the changes the reports name: members the reports name
/// as in (with the fetch's details) or out, name/owner/notice where a report says they changed;
/// labelled `version` (default: the previous one). Members a report names as in but the fetch
/// lacks are kept as they were.
pub fn apply_named(
    previous: &GroupSnapshot,
    fetched: &GroupSnapshot,
    reports: &[ChangeReport],
    version: Option<&str>,
) -> GroupSnapshot {
    let mut members: BTreeMap<&str, Member> = previous.members.iter().map(|m| (m.userid.as_str(), m.clone())).collect();
    for (userid, present) in named_presence(reports) {
        match (present, fetched.member(userid)) {
            (true, Some(now)) => {
                members.insert(userid, now.clone());
            }
            (false, _) => {
                members.remove(userid);
            }
            (true, None) => {}
        }
    }
    let reported = |kind: ReportKind| reports.iter().any(|r| r.kind == kind);
    let pick = |kind, old: &String, new: &String| if reported(kind) { new.clone() } else { old.clone() };
    GroupSnapshot {
        chat_id: previous.chat_id.clone(),
        name: pick(ReportKind::NameChanged, &previous.name, &fetched.name),
        owner: pick(ReportKind::OwnerChanged, &previous.owner, &fetched.owner),
        notice: pick(ReportKind::NoticeChanged, &previous.notice, &fetched.notice),
        create_time: previous.create_time,
        admins: fetched.admins.clone(),
        member_version: version.map(str::to_owned).or_else(|| previous.member_version.clone()),
        members: members.into_values().collect(),
    }
    .normalised()
}

/// What the reports say happened, taken at their word where a confirmed fetch contradicts them:
/// the previous snapshot with every named change applied, members named as in but absent from
/// the fetch added as known by id only. Diffing previous → this → the fetch publishes the
/// reported change and then its reversal, so neither is lost.
pub fn as_reported(previous: &GroupSnapshot, fetched: &GroupSnapshot, reports: &[ChangeReport]) -> GroupSnapshot {
    let mut applied = apply_named(previous, fetched, reports, None);
    for (userid, present) in named_presence(reports) {
        if present && applied.member(userid).is_none() {
            applied.members.push(Member::unknown(userid));
        }
    }
    applied.normalised()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::Replaced;

    const HORIZON: i64 = 600_000;

    fn judge(rule: Consistency) -> Judge {
        Judge { rule, stale_horizon_ms: HORIZON }
    }

    fn snapshot(members: &[&str], version: Option<&str>) -> GroupSnapshot {
        GroupSnapshot {
            member_version: version.map(str::to_owned),
            members: members.iter().map(|u| Member { join_time: Some(1), ..Member::unknown(u) }).collect(),
            ..GroupSnapshot::empty("c")
        }
        .normalised()
    }

    fn stored(members: &[&str], version: Option<&str>, replaced: &[(&str, i64)]) -> StoredGroup {
        StoredGroup {
            replaced: replaced.iter().map(|(f, at)| Replaced { fingerprint: f.to_string(), at_ms: *at }).collect(),
            revision: 1,
            ..StoredGroup::new(snapshot(members, version))
        }
    }

    fn report(kind: ReportKind, members: &[&str], version: Option<&str>) -> ChangeReport {
        ChangeReport { member_version: version.map(str::to_owned), ..ChangeReport::new(kind, 10, members) }
    }

    #[test]
    fn the_callbacks_version_makes_a_fetch_current() {
        let j = judge(Consistency::MemberVersion);
        let prev = stored(&["a"], Some("v1"), &[]);
        let r = [report(ReportKind::MembersJoined, &["b"], Some("v2"))];
        assert_eq!(j.judge(Some(&prev), &snapshot(&["a", "b"], Some("v2")), &r, 0), Verdict::Current);
        // Older than the callback: does not show b yet.
        assert_eq!(
            j.judge(Some(&prev), &snapshot(&["a"], Some("v1x")), &r, 0),
            Verdict::Unconfirmed { contradicts: true }
        );
        // Still at the stored version, or at the one the callback says it moved away from.
        assert_eq!(j.judge(Some(&prev), &snapshot(&["a"], Some("v1")), &r, 0), Verdict::Stale);
        let moved = [ChangeReport { previous_version: Some("v0".into()), ..r[0].clone() }];
        assert_eq!(j.judge(Some(&prev), &snapshot(&["a"], Some("v0")), &moved, 0), Verdict::Stale);
        // Newer: shows b and more.
        assert_eq!(j.judge(Some(&prev), &snapshot(&["a", "b", "c"], Some("v3")), &r, 0), Verdict::NamedOnly);
    }

    #[test]
    fn a_membership_left_behind_is_stale_within_the_horizon() {
        for rule in [Consistency::MemberVersion, Consistency::NamedMembers] {
            let j = judge(rule);
            let old = snapshot(&["a"], Some("v1"));
            let prev = stored(&["a", "b"], Some("v2"), &[(&fingerprint(rule, &old), 1_000)]);
            assert_eq!(j.judge(Some(&prev), &old, &[], 2_000), Verdict::Stale, "{rule:?}");
            // Long after, the same membership may be real again: only unconfirmed.
            assert_eq!(
                j.judge(Some(&prev), &old, &[], 1_000 + HORIZON),
                Verdict::Unconfirmed { contradicts: false },
                "{rule:?}"
            );
        }
    }

    #[test]
    fn a_reconciliation_believes_nothing_new_without_confirmation() {
        let j = judge(Consistency::MemberVersion);
        let prev = stored(&["a"], Some("v1"), &[]);
        assert_eq!(j.judge(Some(&prev), &snapshot(&["a"], Some("v1")), &[], 0), Verdict::Current, "no change");
        assert_eq!(
            j.judge(Some(&prev), &snapshot(&["a", "z"], Some("v9")), &[], 0),
            Verdict::Unconfirmed { contradicts: false }
        );
        // An attribute that changed with no report about it needs confirming too.
        let renamed = GroupSnapshot { name: "new".into(), ..snapshot(&["a"], Some("v1")) };
        assert_eq!(j.judge(Some(&prev), &renamed, &[], 0), Verdict::Unconfirmed { contradicts: false });
        // ... but not when a report says so.
        let r = [ChangeReport::new(ReportKind::NameChanged, 5, &[])];
        assert_eq!(j.judge(Some(&prev), &renamed, &r, 0), Verdict::Current);
    }

    #[test]
    fn named_members_rule_checks_the_named_changes() {
        let j = judge(Consistency::NamedMembers);
        let prev = stored(&["a", "b"], None, &[]);
        let left = [report(ReportKind::MembersLeft, &["b"], None)];
        assert_eq!(j.judge(Some(&prev), &snapshot(&["a"], None), &left, 0), Verdict::Current);
        assert_eq!(j.judge(Some(&prev), &snapshot(&["a", "b"], None), &left, 0), Verdict::Stale, "as stored");
        assert_eq!(
            j.judge(Some(&prev), &snapshot(&["a", "b", "c"], None), &left, 0),
            Verdict::Unconfirmed { contradicts: true }
        );
        assert_eq!(j.judge(Some(&prev), &snapshot(&["a", "c"], None), &left, 0), Verdict::NamedOnly);
    }

    #[test]
    fn first_seen_groups_need_the_named_changes() {
        let j = judge(Consistency::MemberVersion);
        let joined = [report(ReportKind::MembersJoined, &["b"], Some("v2"))];
        assert_eq!(j.judge(None, &snapshot(&["a", "b"], Some("v3")), &joined, 0), Verdict::Current);
        assert_eq!(
            j.judge(None, &snapshot(&["a"], Some("v1")), &joined, 0),
            Verdict::Unconfirmed { contradicts: true }
        );
        assert_eq!(j.judge(None, &snapshot(&["a"], Some("v1")), &[], 0), Verdict::Current);
    }

    #[test]
    fn apply_named_takes_only_what_the_reports_say() {
        let prev = GroupSnapshot { name: "old".into(), ..snapshot(&["a", "gone"], Some("v1")) };
        let fetched =
            GroupSnapshot { name: "new".into(), owner: "o2".into(), ..snapshot(&["a", "b", "later"], Some("v9")) };
        let reports = [
            report(ReportKind::MembersJoined, &["b"], Some("v2")),
            report(ReportKind::MembersLeft, &["gone"], Some("v3")),
            ChangeReport::new(ReportKind::NameChanged, 11, &[]),
        ];
        let applied = apply_named(&prev, &fetched, &reports, Some("v3"));
        let ids: Vec<_> = applied.members.iter().map(|m| m.userid.as_str()).collect();
        assert_eq!(ids, ["a", "b"], "`later` waits for its own report or a confirmation");
        assert_eq!((applied.name.as_str(), applied.owner.as_str()), ("new", ""));
        assert_eq!(applied.member_version.as_deref(), Some("v3"));
    }

    #[test]
    fn as_reported_keeps_a_contradicted_join() {
        let prev = snapshot(&["a"], None);
        let fetched = snapshot(&["a"], None);
        let r = [report(ReportKind::MembersJoined, &["x"], None)];
        let applied = as_reported(&prev, &fetched, &r);
        assert_eq!(applied.member("x"), Some(&Member::unknown("x")));
    }

    #[test]
    fn fingerprints() {
        let a = snapshot(&["a", "b"], Some("v1"));
        assert_eq!(fingerprint(Consistency::MemberVersion, &a), "v1");
        let named = fingerprint(Consistency::NamedMembers, &a);
        assert!(named.starts_with("m:"));
        let rejoined =
            GroupSnapshot { members: vec![Member { join_time: Some(2), ..Member::unknown("a") }], ..a.clone() };
        assert_ne!(fingerprint(Consistency::NamedMembers, &rejoined), named);
        assert_ne!(read_id(&a), read_id(&GroupSnapshot { notice: "n".into(), ..a.clone() }));
    }
}
