//! The promise as a property: over random interleavings of callbacks (some lost, some repeated),
//! stale reads, resyncs and crashes at any point of an attempt, a consumer that deduplicates the
//! published events by id ends with the simulator's membership, every chat's `seq` is gapless,
//! a duplicate is the same event, and nothing was invented (no member was published joining or
//! leaving more often than they really did).

use crate::common::*;
use crate::outbox::{rebuild, sim_members};
use groupwatch::core::model::{EventType, GroupEvent};
use groupwatch::worker::pipeline::{CrashPoint, Halt};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

const USERS: usize = 4;

fn userid(i: usize) -> String {
    format!("wmPROP{i}")
}

/// Re-joins keep the join time, as WeCom sometimes does.
fn join_time(i: usize) -> i64 {
    1_700_000_000 + i as i64
}

#[derive(Debug, Clone)]
enum Op {
    /// The member joins; WeCom sends the callback, or loses it.
    Join {
        user: usize,
        callback: bool,
    },
    Leave {
        user: usize,
        callback: bool,
    },
    /// For the next this many milliseconds, group reads show the group as it was before its
    /// latest change: a replica lagging by a bounded time, shorter than the confirmation delay
    /// (300 ms in the test configuration), as the pipeline's confirmation assumes.
    Stale(u64),
    /// WeCom sends the last callback again.
    Repeat,
    Resync,
    /// The worker stops dead at this point of its next attempt; the process is restarted.
    Crash(CrashPoint),
    Pause(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..USERS, prop::bool::weighted(0.8)).prop_map(|(user, callback)| Op::Join { user, callback }),
        3 => (0..USERS, prop::bool::weighted(0.8)).prop_map(|(user, callback)| Op::Leave { user, callback }),
        2 => (50u64..=250).prop_map(Op::Stale),
        1 => Just(Op::Repeat),
        1 => Just(Op::Resync),
        1 => prop_oneof![Just(CrashPoint::AfterCommit), Just(CrashPoint::AfterPublish)].prop_map(Op::Crash),
        2 => (50u64..400).prop_map(Op::Pause),
    ]
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap())
}

/// How often each member really joined and left (as the simulator applied it).
#[derive(Default, Debug)]
struct Truth {
    joins: BTreeMap<String, usize>,
    leaves: BTreeMap<String, usize>,
}

async fn run(ops: Vec<Op>) {
    let mut halt = Arc::new(Halt::default());
    let mut h =
        Harness::start_with(TestStore::sqlite().await, groupwatch::app::Hooks { halt: Some(halt.clone()) }).await;
    let mut events: Vec<GroupEvent> = h.created().await;
    let mut truth = Truth::default();
    for (u, _) in INITIAL_MEMBERS {
        *truth.joins.entry(u.to_owned()).or_default() += 1;
    }
    let mut time = 1_700_001_000;
    let mut last_callback: Option<String> = None;
    let mut crashes = 0;
    let shown = format!("{ops:?}");
    for op in ops {
        time += 1;
        let present = sim_members(&h.simc, CHAT).await;
        match op {
            Op::Join { user, callback } => {
                if present.contains(&userid(user)) {
                    continue;
                }
                let v = h.simc.add_member(CORP_ID, CHAT, external(&userid(user), join_time(user))).await.unwrap();
                *truth.joins.entry(userid(user)).or_default() += 1;
                let xml = callback_xml(time, "update", Some("add_member"), &[&userid(user)], Some(&v));
                if callback {
                    h.callback(&xml).await;
                }
                last_callback = Some(xml);
            }
            Op::Leave { user, callback } => {
                if !present.contains(&userid(user)) {
                    continue;
                }
                let v = h.simc.remove_member(CORP_ID, CHAT, &userid(user)).await.unwrap();
                *truth.leaves.entry(userid(user)).or_default() += 1;
                let xml = callback_xml(time, "update", Some("del_member"), &[&userid(user)], Some(&v));
                if callback {
                    h.callback(&xml).await;
                }
                last_callback = Some(xml);
            }
            Op::Stale(ms) => h.simc.fault(serde_json::json!({ "stale_for_ms": ms })).await.unwrap(),
            Op::Repeat => {
                if let Some(xml) = &last_callback {
                    h.callback(xml).await;
                }
            }
            Op::Resync => {
                let config = h.typed_config();
                groupwatch::app::resync_once(&config, None, &[TENANT.to_owned()], &[], None).await.unwrap();
            }
            Op::Crash(point) => halt.arm(point),
            Op::Pause(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
        }
        events.extend(h.tap.collect(Duration::from_millis(50)).await);
        if tokio::time::timeout(Duration::from_millis(300), halt.fired.notified()).await.is_ok() {
            events.extend(h.tap.collect(Duration::from_millis(100)).await);
            crashes += 1;
            halt = Arc::new(Halt::default());
            h.restart(groupwatch::app::Hooks { halt: Some(halt.clone()) }).await;
        }
    }
    // Settle: no more faults; resync until what a consumer rebuilt is the truth.
    h.simc.clear_faults().await.unwrap();
    halt.armed.store(false, std::sync::atomic::Ordering::SeqCst);
    let want = sim_members(&h.simc, CHAT).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        events.extend(h.tap.collect(Duration::from_millis(500)).await);
        if rebuild(&events).get(CHAT).cloned().unwrap_or_default() == want {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rebuilt membership never reached the simulator's: {:?} vs {want:?}; truth {truth:?}; events {:#?}",
            rebuild(&events),
            events
                .iter()
                .map(|e| (e.seq, e.event_type, e.member.as_ref().map(|m| m.userid.clone())))
                .collect::<Vec<_>>()
        );
        h.resync().await;
    }
    events.extend(h.tap.collect(Duration::from_millis(500)).await);

    // Duplicates are the same event; seq is gapless; membership is the truth.
    let mut by_id: BTreeMap<&str, &GroupEvent> = BTreeMap::new();
    for e in &events {
        if let Some(first) = by_id.insert(&e.id, e) {
            assert_eq!(first, e, "a duplicate id with another body");
        }
    }
    assert_gapless(by_id.values().copied());
    assert_eq!(rebuild(&events)[CHAT], want);
    // Nothing invented: nobody published joining or leaving more often than they did.
    let mut published: BTreeMap<(EventType, String), usize> = BTreeMap::new();
    for e in by_id.values() {
        if let Some(m) = &e.member {
            *published.entry((e.event_type, m.userid.clone())).or_default() += 1;
        }
    }
    for ((kind, user), n) in &published {
        let real = match kind {
            EventType::MemberJoin => truth.joins.get(user),
            _ => truth.leaves.get(user),
        }
        .copied()
        .unwrap_or(0);
        assert!(*n <= real, "{user} published {kind:?} {n} times, happened {real} times; truth {truth:?}");
    }
    println!("{} events ({} distinct), {crashes} crashes, truth {truth:?}: {shown}", events.len(), by_id.len());
    h.finish().await;
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("GROUPWATCH_PROP_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(6),
        max_shrink_iters: 8,
        failure_persistence: None,
        .. ProptestConfig::default()
    })]
    #[test]
    fn the_rebuilt_membership_is_the_truth_whatever_the_interleaving(ops in prop::collection::vec(op(), 6..16)) {
        runtime().block_on(run(ops));
    }
}
