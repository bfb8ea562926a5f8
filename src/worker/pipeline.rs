//! Per-chat processing: fetch the group until it is consistent with the newest callback,
//! diff it against the stored snapshot, publish what changed, save the snapshot.
//!
//! Order matters for "nothing lost": publish and confirm → save snapshot → ack inbound. A crash
//! anywhere in between re-processes the same callbacks against the same stored snapshot, which
//! yields the same events with the same ids.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::core::diff::{self, Observed};
use crate::core::model::{GroupKey, GroupSnapshot, StoredGroup};
use crate::core::report::{ChangeReport, ReportKind};
use crate::provider::{FetchError, GroupSource};
use crate::queue::publish::Publisher;
use crate::store::SnapshotStore;

/// Consistency and retry settings, from `[worker]`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub coalesce: Duration,
    pub retry_delays: Vec<Duration>,
}

/// What became of one attempt at a chat's pending reports.
#[derive(Debug)]
pub enum Outcome {
    /// Published and saved: acknowledge every report of the attempt.
    Done { events: usize, fetched: bool },
    /// Try again after the delay (the group is not yet consistent, or a fetch failed).
    RetryAfter(Duration),
    /// The corp is over its API rate limit: try again after the pause, without spending the
    /// retry budget (being throttled is not the reports' fault).
    Paused(Duration),
    /// The fetch keeps failing or cannot succeed: park the reports in the dead-letter queue.
    Poison(String),
    /// The broker lost the events; the inbound messages will be redelivered, so drop them.
    Abandon(String),
    /// Test hook fired: stop dead, as a crash between publish and save would.
    Halted,
}

/// Test-only fault injection: simulate a worker that dies right after publishing, before it
/// saves the snapshot and acks the inbound message.
#[derive(Default)]
pub struct Halt {
    pub armed: std::sync::atomic::AtomicBool,
    pub fired: tokio::sync::Notify,
}

pub struct Pipeline {
    pub source: Arc<dyn GroupSource>,
    pub store: Arc<dyn SnapshotStore>,
    pub publisher: Publisher,
    pub settings: Settings,
    pub halt: Option<Arc<Halt>>,
}

/// The newest report that carries a member version: the state the fetch must reach.
fn target_version(reports: &[ChangeReport]) -> Option<&str> {
    reports
        .iter()
        .enumerate()
        .filter(|(_, r)| r.member_version.is_some())
        .max_by_key(|(i, r)| (r.occurred_at, *i))
        .and_then(|(_, r)| r.member_version.as_deref())
}

/// True when the snapshot already shows every membership change the reports name, with the
/// latest report about a member deciding whether it should be in or out. WeCom's member
/// versions are opaque hashes, so during a burst a fetch that is *newer* than the newest
/// callback never equals its `CurMemVer`; this recognises it as consistent instead of waiting
/// out the retry schedule. Reports that name no members cannot be checked this way.
fn reflects_every_named_change(snapshot: &GroupSnapshot, reports: &[ChangeReport]) -> bool {
    let mut expected: std::collections::HashMap<&str, (i64, usize, bool)> = std::collections::HashMap::new();
    for (arrival, r) in reports.iter().enumerate() {
        let present = match r.kind {
            ReportKind::MembersJoined => true,
            ReportKind::MembersLeft => false,
            _ => continue,
        };
        if r.members.is_empty() {
            return false;
        }
        for userid in &r.members {
            let entry = expected.entry(userid).or_insert((r.occurred_at, arrival, present));
            if (r.occurred_at, arrival) >= (entry.0, entry.1) {
                *entry = (r.occurred_at, arrival, present);
            }
        }
    }
    !expected.is_empty()
        && expected.iter().all(|(userid, (_, _, present))| snapshot.member(userid).is_some() == *present)
}

/// The previous snapshot with exactly the changes the reports name applied (member details,
/// name, owner and notice from the fetch), stamped with the reports' newest member version.
fn apply_named_changes(
    previous: &GroupSnapshot,
    fetched: &GroupSnapshot,
    reports: &[ChangeReport],
    target: Option<&str>,
) -> GroupSnapshot {
    let mut members: std::collections::BTreeMap<&str, crate::core::model::Member> =
        previous.members.iter().map(|m| (m.userid.as_str(), m.clone())).collect();
    for r in reports {
        for userid in &r.members {
            match fetched.member(userid) {
                Some(now) => members.insert(userid, now.clone()),
                None => members.remove(userid.as_str()),
            };
        }
    }
    GroupSnapshot {
        member_version: target.map(str::to_owned),
        members: members.into_values().collect(),
        ..fetched.clone()
    }
    .normalised()
}

impl Pipeline {
    fn delay(&self, attempt: usize) -> Option<Duration> {
        self.settings.retry_delays.get(attempt).copied()
    }

    /// Processes all `reports` pending for one chat. `attempt` counts earlier tries of this
    /// same set (consistency retries and failed fetches alike).
    pub async fn process(&self, key: &GroupKey, reports: &[ChangeReport], attempt: usize) -> Outcome {
        let started = Instant::now();
        let previous = match self.store.load(key).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(tenant = %key.tenant, chat_id = %key.chat_id, error = %e, "snapshot store unavailable");
                return Outcome::RetryAfter(self.delay(attempt).unwrap_or(Duration::from_secs(5)));
            }
        };
        let dismissed = reports.iter().any(|r| r.kind == ReportKind::Dismiss);
        let target = target_version(reports);
        let fetched;
        let observed_snapshot: Option<GroupSnapshot>;
        if dismissed {
            // The chat is gone; the stored snapshot is all there is to know.
            fetched = false;
            observed_snapshot = None;
        } else if let Some(current) = self.already_current(previous.as_ref(), reports, target) {
            // A retry of a callback already applied: nothing to fetch, nothing to publish.
            metrics::counter!("groupwatch_fetches_skipped_total").increment(1);
            fetched = false;
            observed_snapshot = Some(current);
        } else {
            fetched = true;
            let snapshot = match self.source.fetch_group(&key.tenant, &key.chat_id).await {
                Ok(s) => s,
                Err(e) => return self.fetch_failed(key, e, attempt),
            };
            let exact = target.is_none_or(|t| snapshot.member_version.as_deref() == Some(t));
            let previous_group = previous.as_ref().filter(|p| !p.dismissed);
            if exact {
                metrics::counter!("groupwatch_fetches_total", "outcome" => "consistent").increment(1);
                observed_snapshot = Some(snapshot);
            } else if let (Some(prev), true) = (previous_group, reflects_every_named_change(&snapshot, reports)) {
                // Newer than the newest callback (a burst in progress): apply only what the
                // callbacks name, as of their version. Changes whose callbacks are still on the
                // way stay for the next fetch, so they keep their own callback's time.
                metrics::counter!("groupwatch_fetches_total", "outcome" => "newer").increment(1);
                observed_snapshot = Some(apply_named_changes(&prev.snapshot, &snapshot, reports, target));
            } else if let Some(delay) = self.delay(attempt) {
                metrics::counter!("groupwatch_fetches_total", "outcome" => "stale").increment(1);
                metrics::counter!("groupwatch_consistency_retries_total").increment(1);
                tracing::debug!(tenant = %key.tenant, chat_id = %key.chat_id, attempt, retry_in = ?delay,
                    "group detail not yet consistent with the callback");
                return Outcome::RetryAfter(delay);
            } else {
                // A later change may have moved the version on: the latest fetch is the truth.
                metrics::counter!("groupwatch_fetches_total", "outcome" => "stale").increment(1);
                metrics::counter!("groupwatch_consistency_giveups_total").increment(1);
                tracing::warn!(tenant = %key.tenant, chat_id = %key.chat_id, attempts = attempt + 1,
                    "group never matched the callback's member version; taking the latest fetch");
                observed_snapshot = Some(snapshot);
            }
        }

        let observed = match &observed_snapshot {
            Some(s) => Observed::Group(s),
            None => Observed::Dismissed,
        };
        let events = diff::diff(key, previous.as_ref(), observed, reports);
        if let Err(e) = self.publisher.publish(&events).await {
            return Outcome::Abandon(format!("publish failed: {e}"));
        }
        if let Some(halt) = &self.halt {
            if halt.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
                tracing::warn!(chat_id = %key.chat_id, "test hook: halting after publish, before save and ack");
                halt.fired.notify_one();
                return Outcome::Halted;
            }
        }
        let saved = StoredGroup {
            snapshot: match observed_snapshot {
                Some(s) => s,
                None => {
                    previous.as_ref().map(|p| p.snapshot.clone()).unwrap_or_else(|| GroupSnapshot::empty(&key.chat_id))
                }
            },
            dismissed: dismissed || previous.as_ref().is_some_and(|p| p.dismissed && !fetched),
            updated_at_ms: crate::core::clock::now_ms(),
        };
        if let Err(e) = self.store.save(key, &saved).await {
            // Events are out; re-processing publishes them again with the same ids.
            tracing::warn!(tenant = %key.tenant, chat_id = %key.chat_id, error = %e, "snapshot save failed; will retry");
            return Outcome::RetryAfter(self.delay(attempt).unwrap_or(Duration::from_secs(5)));
        }
        tracing::info!(tenant = %key.tenant, chat_id = %key.chat_id, events = events.len(), reports = reports.len(),
            fetched, took_ms = started.elapsed().as_millis() as u64, "group reconciled");
        Outcome::Done { events: events.len(), fetched }
    }

    /// The stored snapshot, when it already reflects every report: all are membership changes
    /// and the store holds the newest member version they name.
    fn already_current(
        &self,
        previous: Option<&StoredGroup>,
        reports: &[ChangeReport],
        target: Option<&str>,
    ) -> Option<GroupSnapshot> {
        let previous = previous.filter(|p| !p.dismissed)?;
        let membership_only =
            reports.iter().all(|r| matches!(r.kind, ReportKind::MembersJoined | ReportKind::MembersLeft));
        (membership_only && target.is_some() && previous.snapshot.member_version.as_deref() == target)
            .then(|| previous.snapshot.clone())
    }

    fn fetch_failed(&self, key: &GroupKey, e: FetchError, attempt: usize) -> Outcome {
        let errcode = e.errcode().map(|c| c.to_string()).unwrap_or_else(|| "none".into());
        let outcome = match &e {
            FetchError::Transient(_) => "transient",
            FetchError::RateLimited { .. } => "rate_limited",
            FetchError::Permanent { .. } => "permanent",
        };
        metrics::counter!("groupwatch_fetches_total", "outcome" => outcome, "errcode" => errcode).increment(1);
        match (&e, self.delay(attempt)) {
            (FetchError::RateLimited { wait, .. }, _) => Outcome::Paused(*wait),
            (FetchError::Permanent { .. }, _) | (FetchError::Transient(_), None) => {
                tracing::error!(tenant = %key.tenant, chat_id = %key.chat_id, error = %e, attempts = attempt + 1,
                    "giving up on the group fetch");
                Outcome::Poison(e.to_string())
            }
            (FetchError::Transient(_), Some(delay)) => {
                tracing::warn!(tenant = %key.tenant, chat_id = %key.chat_id, error = %e, retry_in = ?delay, "group fetch failed");
                Outcome::RetryAfter(delay)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(at: i64, ver: Option<&str>) -> ChangeReport {
        ChangeReport {
            occurred_at: at,
            kind: ReportKind::MembersJoined,
            members: vec![],
            quit_scene: None,
            member_version: ver.map(str::to_owned),
        }
    }

    fn snapshot(members: &[&str], version: &str) -> GroupSnapshot {
        GroupSnapshot {
            member_version: Some(version.into()),
            members: members.iter().map(|u| crate::core::model::Member::unknown(u)).collect(),
            ..GroupSnapshot::empty("c")
        }
        .normalised()
    }

    fn named(kind: ReportKind, at: i64, members: &[&str]) -> ChangeReport {
        ChangeReport { members: members.iter().map(|s| s.to_string()).collect(), kind, ..r(at, Some("x")) }
    }

    #[test]
    fn a_newer_fetch_that_shows_every_named_change_is_consistent() {
        let joined = [named(ReportKind::MembersJoined, 1, &["a", "b"])];
        assert!(reflects_every_named_change(&snapshot(&["a", "b", "z"], "newer"), &joined));
        assert!(!reflects_every_named_change(&snapshot(&["a"], "older"), &joined), "b not there yet");
        // Joined then left: the latest report decides.
        let both = [named(ReportKind::MembersJoined, 1, &["a"]), named(ReportKind::MembersLeft, 2, &["a"])];
        assert!(reflects_every_named_change(&snapshot(&[], "v"), &both));
        assert!(!reflects_every_named_change(&snapshot(&["a"], "v"), &both));
        // A report without a member list cannot be checked: only the version can tell.
        assert!(!reflects_every_named_change(&snapshot(&["a"], "v"), &[named(ReportKind::MembersJoined, 1, &[])]));
        assert!(!reflects_every_named_change(&snapshot(&["a"], "v"), &[named(ReportKind::NameChanged, 1, &[])]));
    }

    #[test]
    fn only_named_changes_are_applied_from_a_newer_fetch() {
        let previous = snapshot(&["a", "gone"], "v1");
        let fetched = snapshot(&["a", "b", "later"], "v9");
        let reports = [named(ReportKind::MembersJoined, 1, &["b"]), named(ReportKind::MembersLeft, 2, &["gone"])];
        let applied = apply_named_changes(&previous, &fetched, &reports, Some("v3"));
        let ids: Vec<_> = applied.members.iter().map(|m| m.userid.as_str()).collect();
        assert_eq!(ids, ["a", "b"], "`later` waits for its own callback");
        assert_eq!(applied.member_version.as_deref(), Some("v3"));
    }

    #[test]
    fn target_is_the_newest_reported_version() {
        assert_eq!(target_version(&[r(1, Some("a")), r(3, Some("c")), r(2, Some("b"))]), Some("c"));
        assert_eq!(target_version(&[r(1, Some("a")), r(5, None)]), Some("a"));
        assert_eq!(target_version(&[r(1, None)]), None);
        // Same second: the later arrival wins.
        assert_eq!(target_version(&[r(1, Some("a")), r(1, Some("b"))]), Some("b"));
    }
}
