//! One attempt at a chat's pending work: publish what the outbox still holds → load → fetch →
//! judge → diff → commit (snapshot and events in one transaction, conditional on the revision
//! loaded) → publish → record the mark "published" (written in the background, see
//! [`crate::worker::marks`]).
//!
//! Nothing is published before it is stored, and what is published is what was stored: a crash
//! anywhere re-publishes the stored events (same ids, same `seq`), and a retry after a failed
//! commit stores the very events it computed, never a re-diff of a newer fetch against an old
//! snapshot. A fetch that cannot be shown to be current changes nothing until a later read
//! confirms it (see [`crate::core::consistency`]).

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::core::clock::now_ms;
use crate::core::consistency::{apply_named, as_reported, fingerprint, read_id, Judge, Verdict};
use crate::core::diff::{self, Observed};
use crate::core::model::{GroupEvent, GroupKey, GroupSnapshot, Replaced, StoredGroup};
use crate::core::report::{target_version, ChangeReport, ReportKind};
use crate::provider::registry::Registry;
use crate::provider::{ApiError, GroupSource};
use crate::queue::publish::Publisher;
use crate::store::{OutboxEvent, SnapshotStore, StoreError};
use crate::worker::marks::Marks;

/// Most memberships a chat remembers having left behind.
const REPLACED_MAX: usize = 32;
/// How long to wait before retrying when the store or the broker is unavailable.
const UNAVAILABLE_BACKOFF: Duration = Duration::from_secs(1);

/// Consistency and retry settings, from `[worker]`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub coalesce: Duration,
    pub retry_delays: Vec<Duration>,
    /// A read that nothing proves current is believed once a read this much later agrees.
    pub confirm_delay: Duration,
    /// A membership the chat left behind less than this long ago is a stale read.
    pub stale_horizon: Duration,
    /// Fetch a quiet chat's first change at once instead of after `coalesce`.
    pub leading_edge: bool,
}

/// What one attempt is asked to do.
#[derive(Debug, Clone, Copy)]
pub struct Work<'a> {
    /// The reports of the pending notifications.
    pub reports: &'a [ChangeReport],
    /// Look at the group even without reports (resync, or confirming leftovers).
    pub reconcile: bool,
    /// Earlier tries of this same work that spent the retry budget.
    pub attempt: usize,
    /// The inbound items the reports came from, recorded with the commit.
    pub items: &'a [String],
}

/// A read that could not be believed yet: what it showed, and when it was first seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sighting {
    pub read: String,
    pub at_ms: i64,
}

/// A commit computed but not stored: the store was unavailable. Stored as it is on the next
/// try, so what was computed is what gets published.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub group: StoredGroup,
    pub events: Vec<OutboxEvent>,
    items: Vec<String>,
    leftovers: bool,
}

/// What became of one attempt.
#[derive(Debug)]
pub enum Outcome {
    /// Stored and published (or nothing to do): acknowledge the work. `leftovers`: the fetch
    /// showed changes no report named; a later read should confirm them.
    Done { events: usize, fetched: bool, leftovers: bool },
    /// Try again after the delay, spending the retry budget (not yet consistent, a failed
    /// fetch, a chat whose data the store refuses).
    RetryAfter(Duration),
    /// Try again after the delay without spending the budget: rate limited, or the broker is
    /// unavailable. Nothing was stored that is not also safe in the outbox.
    Wait(Duration),
    /// The store is unavailable: store this commit as it is after the delay.
    Unstored(Box<Prepared>, Duration),
    /// Another writer saved the chat since it was loaded: start again from what is stored.
    Conflict,
    /// Retrying cannot help, or the budget is spent: park the work in the dead-letter queue.
    Poison(String),
    /// A reconciliation that could not be confirmed: nothing changes, the work is done.
    GaveUp,
    /// Test hook fired: stop dead, as a crash would.
    Crashed,
}

/// Where a test can make the worker stop dead, as a crash would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CrashPoint {
    /// After the commit, before anything is published.
    AfterCommit = 1,
    /// After publishing, before the events are marked published and the work acked.
    AfterPublish = 2,
}

/// Test-only fault injection: the next attempt to reach `point` stops dead there.
#[derive(Default)]
pub struct Halt {
    pub armed: AtomicBool,
    point: AtomicU8,
    pub fired: tokio::sync::Notify,
}

impl Halt {
    pub fn at(point: CrashPoint) -> Self {
        let halt = Self::default();
        halt.arm(point);
        halt
    }

    pub fn arm(&self, point: CrashPoint) {
        self.point.store(point as u8, Ordering::SeqCst);
        self.armed.store(true, Ordering::SeqCst);
    }

    fn fires_at(&self, point: CrashPoint) -> bool {
        let at_point = self.point.load(Ordering::SeqCst) == point as u8;
        at_point && self.armed.swap(false, Ordering::SeqCst)
    }
}

pub struct Pipeline {
    /// Each provider's group source and its consistency rule.
    pub registry: Arc<Registry>,
    pub store: Arc<dyn SnapshotStore>,
    pub publisher: Publisher,
    /// Which published events are still to be marked so in the store.
    pub marks: Arc<Marks>,
    pub settings: Settings,
    pub halt: Option<Arc<Halt>>,
}

/// What the attempt believes the group looks like now, and how it got there.
enum Belief {
    /// Diff previous → this.
    Group {
        snapshot: GroupSnapshot,
        leftovers: bool,
    },
    /// A confirmed read that contradicts reports: previous → as reported → this.
    Contradicted {
        as_reported: GroupSnapshot,
        snapshot: GroupSnapshot,
    },
    Dismissed,
    /// Nothing to change.
    Unchanged,
}

impl Pipeline {
    fn delay(&self, attempt: usize) -> Option<Duration> {
        self.settings.retry_delays.get(attempt).copied()
    }

    /// Spends the retry budget on `reason`, or parks the work when it is spent.
    fn retry_or_poison(&self, key: &GroupKey, attempt: usize, reason: String) -> Outcome {
        match self.delay(attempt) {
            Some(delay) => Outcome::RetryAfter(delay),
            None => {
                tracing::error!(tenant = %key.tenant, chat_id = %key.chat_id, attempts = attempt + 1, reason,
                    "giving up on this chat's pending work");
                Outcome::Poison(reason)
            }
        }
    }

    fn store_failed(&self, key: &GroupKey, e: StoreError, attempt: usize) -> Outcome {
        if e.is_unavailable() {
            tracing::warn!(tenant = %key.tenant, chat_id = %key.chat_id, error = %e, "store unavailable; will retry");
            return Outcome::Wait(UNAVAILABLE_BACKOFF);
        }
        tracing::warn!(tenant = %key.tenant, chat_id = %key.chat_id, error = %e, "the store refused this chat");
        self.retry_or_poison(key, attempt, e.to_string())
    }

    fn crash(&self, point: CrashPoint, key: &GroupKey) -> bool {
        let Some(halt) = &self.halt else { return false };
        if !halt.fires_at(point) {
            return false;
        }
        tracing::warn!(chat_id = %key.chat_id, ?point, "test hook: stopping dead");
        halt.fired.notify_one();
        true
    }

    /// Which of `items` had their changes stored already: redelivered after a crash, they are
    /// done (their events are in the outbox, and [`Pipeline::drain`] publishes them).
    pub async fn applied(&self, key: &GroupKey, items: &[String]) -> Result<Vec<String>, Outcome> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        match self.store.applied(key, items).await {
            Ok(found) => Ok(found),
            Err(e) if e.is_unavailable() => Err(Outcome::Wait(UNAVAILABLE_BACKOFF)),
            Err(e) => Err(Outcome::Poison(format!("the chat's applied items are unreadable: {e}"))),
        }
    }

    /// Publishes the chat's stored events not yet published by anyone, in order, and records
    /// their marks.
    pub async fn drain(&self, key: &GroupKey) -> Result<usize, Outcome> {
        let mut pending = match self.store.unpublished(key).await {
            Ok(p) => p,
            Err(e) if e.is_unavailable() => return Err(Outcome::Wait(UNAVAILABLE_BACKOFF)),
            Err(e) => return Err(Outcome::Poison(format!("the chat's stored events are unreadable: {e}"))),
        };
        // Published by this process already, the mark not written yet.
        if let Some(through) = self.marks.published_through(key) {
            pending.retain(|e| e.seq > through);
        }
        if pending.is_empty() {
            return Ok(0);
        }
        self.publish(key, &pending).await?;
        Ok(pending.len())
    }

    async fn publish(&self, key: &GroupKey, events: &[OutboxEvent]) -> Result<(), Outcome> {
        let Some(last) = events.last() else { return Ok(()) };
        if let Err(e) = self.publisher.publish(key, events).await {
            tracing::warn!(tenant = %key.tenant, chat_id = %key.chat_id, error = %e,
                "publishing failed; the events stay in the outbox");
            return Err(Outcome::Wait(UNAVAILABLE_BACKOFF));
        }
        if self.crash(CrashPoint::AfterPublish, key) {
            return Err(Outcome::Crashed);
        }
        // Written in the background with other chats' marks; a mark lost to a crash only
        // means the events go out again later, with the same ids.
        self.marks.record(key, last.seq);
        Ok(())
    }

    /// Stores a computed commit, then publishes its events.
    pub async fn store(&self, key: &GroupKey, prepared: Prepared, attempt: usize) -> Outcome {
        match self.store.commit(key, &prepared.group, &prepared.events, &prepared.items).await {
            Ok(_) => {}
            Err(StoreError::Conflict { .. }) => {
                metrics::counter!("groupwatch_commit_conflicts_total", "provider" => key.provider.as_str())
                    .increment(1);
                tracing::info!(tenant = %key.tenant, chat_id = %key.chat_id, "another writer saved this chat first; starting again");
                return Outcome::Conflict;
            }
            Err(e) if e.is_unavailable() => {
                tracing::warn!(tenant = %key.tenant, chat_id = %key.chat_id, error = %e,
                    "store unavailable; the commit will be retried as computed");
                return Outcome::Unstored(Box::new(prepared), UNAVAILABLE_BACKOFF);
            }
            Err(e) => return self.store_failed(key, e, attempt),
        }
        if self.crash(CrashPoint::AfterCommit, key) {
            return Outcome::Crashed;
        }
        if let Err(outcome) = self.publish(key, &prepared.events).await {
            return outcome;
        }
        Outcome::Done { events: prepared.events.len(), fetched: true, leftovers: prepared.leftovers }
    }

    /// One attempt at `work` for the chat. `sighting` is the actor's memory of the last read that
    /// could not be believed yet.
    pub async fn process(&self, key: &GroupKey, work: Work<'_>, sighting: &mut Option<Sighting>) -> Outcome {
        let started = Instant::now();
        if let Err(outcome) = self.drain(key).await {
            return outcome;
        }
        if work.reports.is_empty() && !work.reconcile {
            return Outcome::Done { events: 0, fetched: false, leftovers: false };
        }
        let previous = match self.store.load(key).await {
            Ok(p) => p,
            Err(e) => return self.store_failed(key, e, work.attempt),
        };
        let reports = fresh_reports(previous.as_ref(), work.reports);
        if reports.is_empty() && !work.reconcile {
            metrics::counter!("groupwatch_fetches_skipped_total", "provider" => key.provider.as_str()).increment(1);
            return Outcome::Done { events: 0, fetched: false, leftovers: false };
        }
        let now = now_ms();
        let (belief, fetched) = match self.believe(key, previous.as_ref(), &reports, work, sighting, now).await {
            Ok(b) => b,
            Err(outcome) => return outcome,
        };
        let base = previous.clone().unwrap_or_else(|| StoredGroup::new(GroupSnapshot::empty(&key.chat_id)));
        let (events, snapshot, dismissed, leftovers) = match belief {
            Belief::Unchanged if !work.reconcile => return Outcome::Done { events: 0, fetched, leftovers: false },
            Belief::Unchanged => (Vec::new(), base.snapshot.clone(), base.dismissed, false),
            Belief::Dismissed => (
                diff::events(key, previous.as_ref(), Observed::Dismissed, &reports),
                base.snapshot.clone(),
                true,
                false,
            ),
            Belief::Group { snapshot, leftovers } => {
                let events = diff::events(key, previous.as_ref(), Observed::Group(&snapshot), &reports);
                if events.is_empty() && !work.reconcile && previous.as_ref().is_some_and(|p| p.snapshot == snapshot) {
                    return Outcome::Done { events: 0, fetched, leftovers };
                }
                (events, snapshot, false, leftovers)
            }
            Belief::Contradicted { as_reported, snapshot } => {
                let mut events = diff::diff(key, previous.as_ref(), Observed::Group(&as_reported), &reports);
                let step = StoredGroup::new(as_reported);
                events.extend(diff::diff(key, Some(&step), Observed::Group(&snapshot), &[]));
                diff::sequence(&mut events, base.last_seq);
                (events, snapshot, false, false)
            }
        };
        let group = StoredGroup {
            replaced: self.replaced(key, previous.as_ref(), &snapshot, &reports, now),
            snapshot,
            dismissed,
            updated_at_ms: now,
            last_seq: base.last_seq + events.len() as i64,
            revision: base.revision,
            checked_at_ms: if work.reconcile { now } else { base.checked_at_ms },
        };
        let prepared = Prepared {
            group,
            events: events.iter().map(OutboxEvent::of).collect(),
            items: work.items.to_vec(),
            leftovers,
        };
        let outcome = self.store(key, prepared, work.attempt).await;
        if let Outcome::Done { .. } = outcome {
            log_reconciled(key, &events, reports.len(), fetched, started);
        }
        match outcome {
            Outcome::Done { events, leftovers, .. } => Outcome::Done { events, fetched, leftovers },
            other => other,
        }
    }

    /// Fetches the group (unless the store already shows every report) and decides what to
    /// believe; an `Err` is the attempt's outcome.
    async fn believe(
        &self,
        key: &GroupKey,
        previous: Option<&StoredGroup>,
        reports: &[ChangeReport],
        work: Work<'_>,
        sighting: &mut Option<Sighting>,
        now: i64,
    ) -> Result<(Belief, bool), Outcome> {
        let dismiss = reports.iter().any(|r| r.kind == ReportKind::Dismiss);
        if !dismiss && !work.reconcile && already_current(previous, reports) {
            metrics::counter!("groupwatch_fetches_skipped_total", "provider" => key.provider.as_str()).increment(1);
            return Ok((Belief::Unchanged, false));
        }
        let source: &dyn GroupSource = match self.registry.source(key.provider) {
            Some(s) => s.as_ref(),
            None => return Err(Outcome::Poison(format!("no {} tenant is configured", key.provider))),
        };
        let judge =
            Judge { rule: source.consistency(), stale_horizon_ms: self.settings.stale_horizon.as_millis() as i64 };
        let fetched = match source.fetch_group(&key.tenant, &key.chat_id).await {
            Ok(snapshot) if snapshot.chat_id != key.chat_id => {
                let reason = format!("the API answered for chat {:?} instead", snapshot.chat_id);
                metrics::counter!("groupwatch_fetches_total", "provider" => key.provider.as_str(), "outcome" => "wrong_chat").increment(1);
                return Err(self.retry_or_poison(key, work.attempt, reason));
            }
            Ok(snapshot) => snapshot,
            Err(ApiError::Gone { .. }) if dismiss => {
                metrics::counter!("groupwatch_fetches_total", "provider" => key.provider.as_str(), "outcome" => "gone")
                    .increment(1);
                return Ok((Belief::Dismissed, true));
            }
            Err(ApiError::Gone { .. }) if previous.is_some_and(|p| p.dismissed) => {
                // A late notification for a group already dismissed.
                return Ok((Belief::Unchanged, true));
            }
            Err(e) => return Err(self.fetch_failed(key, e, work.attempt)),
        };
        if dismiss {
            // A dismiss is believed once the API no longer has the group.
            metrics::counter!("groupwatch_fetches_total", "provider" => key.provider.as_str(), "outcome" => "stale")
                .increment(1);
            return Err(self.retry_or_poison(key, work.attempt, "the group still exists after its dismiss".into()));
        }
        let budget_spent = self.delay(work.attempt).is_none();
        let verdict = judge.judge(previous, &fetched, reports, now);
        let outcome = match verdict {
            Verdict::Current => "consistent",
            Verdict::NamedOnly => "newer",
            Verdict::Stale => "stale",
            Verdict::Unconfirmed { .. } => "unconfirmed",
        };
        metrics::counter!("groupwatch_fetches_total", "provider" => key.provider.as_str(), "outcome" => outcome)
            .increment(1);
        match verdict {
            Verdict::Current => {
                *sighting = None;
                Ok((Belief::Group { snapshot: fetched, leftovers: false }, true))
            }
            Verdict::NamedOnly => {
                // Believe what the reports name now; what else the fetch shows waits for a later
                // read to agree.
                let previous = previous.map(|p| &p.snapshot).expect("NamedOnly needs a stored group");
                let version = target_version(reports).or(previous.member_version.as_deref()).map(str::to_owned);
                let applied = apply_named(previous, &fetched, reports, version.as_deref());
                *sighting = Some(Sighting { read: read_id(&fetched), at_ms: now });
                Ok((Belief::Group { snapshot: applied, leftovers: true }, true))
            }
            Verdict::Stale => {
                metrics::counter!("groupwatch_stale_reads_total", "provider" => key.provider.as_str()).increment(1);
                tracing::debug!(tenant = %key.tenant, chat_id = %key.chat_id, attempt = work.attempt,
                    "the group detail shows a membership already left behind; reading again later");
                Err(self.not_yet(key, reports, work, "the group detail stayed older than what is stored"))
            }
            Verdict::Unconfirmed { contradicts } => {
                let read = read_id(&fetched);
                let confirm_ms = self.settings.confirm_delay.as_millis() as i64;
                let agrees = sighting.as_ref().is_some_and(|s| s.read == read && now - s.at_ms >= confirm_ms);
                if agrees && (!contradicts || budget_spent) {
                    metrics::counter!("groupwatch_reads_confirmed_total", "provider" => key.provider.as_str())
                        .increment(1);
                    *sighting = None;
                    let belief = match previous.filter(|p| contradicts && !p.dismissed) {
                        Some(p) => {
                            tracing::warn!(tenant = %key.tenant, chat_id = %key.chat_id,
                                "a confirmed read contradicts the notifications; publishing what they reported and its reversal");
                            metrics::counter!("groupwatch_reports_contradicted_total", "provider" => key.provider.as_str()).increment(1);
                            Belief::Contradicted {
                                as_reported: as_reported(&p.snapshot, &fetched, reports),
                                snapshot: fetched,
                            }
                        }
                        None => Belief::Group { snapshot: fetched, leftovers: false },
                    };
                    return Ok((belief, true));
                }
                if sighting.as_ref().is_none_or(|s| s.read != read) {
                    *sighting = Some(Sighting { read, at_ms: now });
                }
                let waited = sighting.as_ref().map_or(0, |s| now - s.at_ms);
                let confirm_in = Duration::from_millis((confirm_ms - waited).max(0) as u64);
                metrics::counter!("groupwatch_consistency_retries_total", "provider" => key.provider.as_str())
                    .increment(1);
                match self.not_yet(
                    key,
                    reports,
                    work,
                    "the group detail never became consistent with the notifications",
                ) {
                    Outcome::RetryAfter(delay) => Err(Outcome::RetryAfter(delay.max(confirm_in))),
                    other => Err(other),
                }
            }
        }
    }

    /// A read that cannot be used: read again after the next delay; when the budget is spent,
    /// a reconciliation gives up quietly and reports are parked.
    fn not_yet(&self, key: &GroupKey, reports: &[ChangeReport], work: Work<'_>, reason: &str) -> Outcome {
        match self.delay(work.attempt) {
            Some(delay) => Outcome::RetryAfter(delay),
            None if reports.is_empty() => {
                metrics::counter!("groupwatch_consistency_giveups_total", "provider" => key.provider.as_str())
                    .increment(1);
                tracing::warn!(tenant = %key.tenant, chat_id = %key.chat_id, attempts = work.attempt + 1,
                    "could not confirm the group's state; leaving it as stored");
                Outcome::GaveUp
            }
            None => {
                metrics::counter!("groupwatch_consistency_giveups_total", "provider" => key.provider.as_str())
                    .increment(1);
                self.retry_or_poison(key, work.attempt, reason.to_owned())
            }
        }
    }

    /// The memberships the chat leaves behind with this commit: the previous one, and those the
    /// applied reports passed through (WeCom: `LastMemVer`, and `CurMemVer` short of the newest).
    fn replaced(
        &self,
        key: &GroupKey,
        previous: Option<&StoredGroup>,
        next: &GroupSnapshot,
        reports: &[ChangeReport],
        now: i64,
    ) -> Vec<Replaced> {
        let Some(previous) = previous else { return Vec::new() };
        let Some(rule) = self.registry.source(key.provider).map(|s| s.consistency()) else { return Vec::new() };
        let next_fp = fingerprint(rule, next);
        let mut replaced = previous.replaced.clone();
        let mut left: Vec<String> = vec![fingerprint(rule, &previous.snapshot)];
        for r in reports {
            left.extend(r.previous_version.iter().chain(&r.member_version).cloned());
        }
        for fp in left {
            if fp != next_fp && !replaced.iter().any(|r| r.fingerprint == fp) {
                replaced.push(Replaced { fingerprint: fp, at_ms: now });
            }
        }
        replaced.retain(|r| r.fingerprint != next_fp);
        let excess = replaced.len().saturating_sub(REPLACED_MAX);
        replaced.drain(..excess);
        replaced
    }

    fn fetch_failed(&self, key: &GroupKey, e: ApiError, attempt: usize) -> Outcome {
        let errcode = e.errcode().map(|c| c.to_string()).unwrap_or_else(|| "none".into());
        let outcome = match &e {
            ApiError::Transient(_) => "transient",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Permanent { .. } => "permanent",
            ApiError::Gone { .. } => "gone",
        };
        metrics::counter!("groupwatch_fetches_total", "provider" => key.provider.as_str(), "outcome" => outcome, "errcode" => errcode).increment(1);
        match (&e, self.delay(attempt)) {
            (ApiError::RateLimited { wait, .. }, _) => Outcome::Wait(*wait),
            (ApiError::Permanent { .. } | ApiError::Gone { .. }, _) | (ApiError::Transient(_), None) => {
                tracing::error!(tenant = %key.tenant, chat_id = %key.chat_id, error = %e, attempts = attempt + 1,
                    "giving up on the group fetch");
                Outcome::Poison(e.to_string())
            }
            (ApiError::Transient(_), Some(delay)) => {
                tracing::warn!(tenant = %key.tenant, chat_id = %key.chat_id, error = %e, retry_in = ?delay, "group fetch failed");
                Outcome::RetryAfter(delay)
            }
        }
    }
}

fn log_reconciled(key: &GroupKey, events: &[GroupEvent], reports: usize, fetched: bool, started: Instant) {
    tracing::info!(tenant = %key.tenant, chat_id = %key.chat_id, events = events.len(),
        first_seq = events.first().map(|e| e.seq), reports, fetched,
        took_ms = started.elapsed().as_millis() as u64, "group reconciled");
}

/// The reports not already applied: a notification redelivered after the chat moved on names a
/// version the chat has left behind, and did not start from where the chat stands now.
fn fresh_reports(previous: Option<&StoredGroup>, reports: &[ChangeReport]) -> Vec<ChangeReport> {
    let Some(previous) = previous.filter(|p| !p.dismissed) else { return reports.to_vec() };
    let current = previous.snapshot.member_version.as_deref();
    reports
        .iter()
        .filter(|r| {
            let left_behind =
                r.member_version.as_ref().is_some_and(|v| previous.replaced.iter().any(|x| &x.fingerprint == v));
            !(left_behind && r.previous_version.as_deref() != current)
        })
        .cloned()
        .collect()
}

/// True when the stored snapshot already reflects every report: all are membership changes and
/// the store holds the newest member version they name (a retry of an applied notification).
fn already_current(previous: Option<&StoredGroup>, reports: &[ChangeReport]) -> bool {
    let Some(previous) = previous.filter(|p| !p.dismissed) else { return false };
    let target = target_version(reports);
    reports.iter().all(ChangeReport::is_membership)
        && target.is_some()
        && previous.snapshot.member_version.as_deref() == target
}

#[cfg(test)]
mod tests {
    use super::*;

    fn versioned(kind: ReportKind, previous: &str, current: &str) -> ChangeReport {
        ChangeReport {
            member_version: Some(current.into()),
            previous_version: Some(previous.into()),
            ..ChangeReport::new(kind, 1, &["x"])
        }
    }

    fn stored_at(version: &str, replaced: &[&str]) -> StoredGroup {
        StoredGroup {
            replaced: replaced.iter().map(|f| Replaced { fingerprint: f.to_string(), at_ms: 0 }).collect(),
            ..StoredGroup::new(GroupSnapshot { member_version: Some(version.into()), ..GroupSnapshot::empty("c") })
        }
    }

    #[test]
    fn a_redelivered_notification_the_chat_has_moved_past_is_dropped() {
        // x joined (v1 → v2), then left (v2 → v3); the join arrives again.
        let stored = stored_at("v3", &["v1", "v2"]);
        let late_join = versioned(ReportKind::MembersJoined, "v1", "v2");
        assert!(fresh_reports(Some(&stored), &[late_join]).is_empty());
        // A change from where the chat stands is new, even back to a version seen before.
        let back = versioned(ReportKind::MembersLeft, "v3", "v2");
        assert_eq!(fresh_reports(Some(&stored), std::slice::from_ref(&back)), [back]);
    }

    #[test]
    fn a_retry_of_an_applied_membership_change_needs_no_fetch() {
        let stored = stored_at("v2", &[]);
        assert!(already_current(Some(&stored), &[versioned(ReportKind::MembersJoined, "v1", "v2")]));
        assert!(!already_current(Some(&stored), &[versioned(ReportKind::MembersJoined, "v2", "v3")]));
        let rename =
            ChangeReport { member_version: Some("v2".into()), ..ChangeReport::new(ReportKind::NameChanged, 1, &[]) };
        assert!(!already_current(Some(&stored), &[rename]), "attributes are not versioned");
    }
}
