//! Several instances on one broker and one store: each heartbeats into the store, and the live
//! workers split the inbound shards among themselves by rendezvous hashing, so processing spreads
//! over them. When an instance stops heartbeating, its shards go to the others at their next
//! tick, within `worker.rebalance_secs`.
//!
//! Ownership only decides who *subscribes* to a shard. RabbitMQ's single-active-consumer still
//! lets one consumer at a time receive a shard's messages, and saves are conditional on the
//! revision loaded, so two instances that briefly both believe they own a shard (their views of
//! the live set differ for a tick) can neither process a chat at once nor overwrite each other.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::core::clock::now_ms;
use crate::core::ids::short_hash;
use crate::provider::account::Shared;
use crate::store::coordination::{Coordination, InstanceInfo, InstanceRow};
use crate::store::SnapshotStore;

/// An instance silent for this long is dropped from the table (it is dead long before).
const FORGET_AFTER: Duration = Duration::from_secs(24 * 3600);

/// This instance in the cluster.
pub struct Membership {
    store: Arc<dyn SnapshotStore>,
    pub instance_id: String,
    started_at_ms: i64,
    worker: bool,
    shards: u16,
    rebalance: Duration,
    /// `None` until the first heartbeat has decided.
    owned: watch::Sender<Option<Vec<u16>>>,
    live_workers: watch::Sender<usize>,
    /// The vendor budgets the instances share.
    pub shared: Arc<Shared>,
    /// Leases this instance holds for turns of once-per-period work: name → until (epoch ms).
    turns: Mutex<HashMap<String, i64>>,
}

/// The instance among `instances` that owns `shard`: the highest score of hash(instance, shard).
/// Every instance computes the same answer from the same live set, and a change of the set moves
/// only the shards of the instance that came or went.
pub fn rendezvous(instances: &[String], shard: u16) -> Option<&str> {
    instances.iter().max_by_key(|i| short_hash(&[i.as_str(), &shard.to_string()])).map(String::as_str)
}

impl Membership {
    pub fn new(store: Arc<dyn SnapshotStore>, worker: bool, shards: u16, rebalance: Duration) -> Arc<Self> {
        let host = hostname();
        let instance_id = format!("{host}-{}-{}", std::process::id(), &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let live_workers = watch::channel(1).0;
        let coordination: Arc<dyn Coordination> = store.clone();
        let shared = Shared::new(coordination, instance_id.clone(), live_workers.subscribe());
        Arc::new(Self {
            store,
            instance_id,
            started_at_ms: now_ms(),
            worker,
            shards,
            rebalance,
            owned: watch::channel(None).0,
            live_workers,
            shared,
            turns: Mutex::new(HashMap::new()),
        })
    }

    /// The shards this instance consumes (`None` until first decided); changes as instances
    /// come and go.
    pub fn owned(&self) -> watch::Receiver<Option<Vec<u16>>> {
        self.owned.subscribe()
    }

    /// How many workers are alive (at least 1: this one), for splitting per-account budgets.
    pub fn live_workers(&self) -> watch::Receiver<usize> {
        self.live_workers.subscribe()
    }

    /// Whether this instance takes the next turn of work that must run once per `period` across
    /// the instances (`name`, e.g. `resync:wecom:acme`): it does when it wins the lease for the
    /// next `period`. A holder does not renew before its turn ends, so the work runs once per
    /// period wherever it runs; a dead holder's turn goes to whoever asks first after it ends.
    /// Callers ask a few times per period so that the spacing stays close to `period`.
    pub async fn claim_turn(&self, name: &str, period: Duration) -> bool {
        let now = now_ms();
        if self.turns.lock().expect("turns lock").get(name).is_some_and(|until| now < *until) {
            return false;
        }
        let until = now + period.as_millis() as i64;
        match self.store.try_lease(name, &self.instance_id, until, now).await {
            Ok(true) => {
                self.turns.lock().expect("turns lock").insert(name.to_owned(), until);
                true
            }
            Ok(false) => false,
            Err(e) => {
                tracing::warn!(lease = name, error = %e, "cannot take a turn; another instance may");
                false
            }
        }
    }

    /// Gives back a turn whose work failed (a listing the vendor refused, requests the broker
    /// did not take), so that the next ask, here or on another instance, takes it again instead
    /// of the work waiting out the whole period.
    pub async fn give_back_turn(&self, name: &str) {
        self.turns.lock().expect("turns lock").remove(name);
        if let Err(e) = self.store.release_lease(name, &self.instance_id).await {
            tracing::warn!(lease = name, error = %e, "cannot give a turn back; it ends with its period");
        }
    }

    /// An instance that has not heartbeat for this long is dead.
    fn expiry(&self) -> Duration {
        self.rebalance / 2
    }

    /// How often to heartbeat and rebalance: four times per `rebalance`, so a dead instance's
    /// shards move within it.
    fn tick(&self) -> Duration {
        (self.rebalance / 4).max(Duration::from_millis(100))
    }

    /// Heartbeats and rebalances until `stop`, then leaves the cluster.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        loop {
            if let Err(e) = self.beat().await {
                tracing::warn!(error = %e, "cluster heartbeat failed; keeping the shards owned so far");
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(self.tick()) => {}
            }
        }
        if let Err(e) = self.store.leave(&self.instance_id).await {
            tracing::warn!(error = %e, "could not leave the cluster cleanly; the others will notice by the heartbeat");
        }
    }

    /// One heartbeat and rebalance: the live set as the store has it (this instance included),
    /// the shards that makes this instance's, then the heartbeat that tells the others (and
    /// `groupwatch status`) so.
    pub async fn beat(&self) -> Result<(), crate::store::StoreError> {
        let now = now_ms();
        let since = now - self.expiry().as_millis() as i64;
        let mut workers: Vec<String> =
            self.store.instances(since).await?.into_iter().filter(|i| i.worker).map(|i| i.instance_id).collect();
        if self.worker && !workers.contains(&self.instance_id) {
            workers.push(self.instance_id.clone());
        }
        workers.sort();
        let owned: Vec<u16> = if self.worker {
            (0..self.shards).filter(|s| rendezvous(&workers, *s) == Some(self.instance_id.as_str())).collect()
        } else {
            Vec::new()
        };
        let me = InstanceRow {
            instance_id: self.instance_id.clone(),
            started_at_ms: self.started_at_ms,
            heartbeat_at_ms: now,
            worker: self.worker,
            info: InstanceInfo {
                host: hostname(),
                pid: std::process::id(),
                shards: owned.clone(),
                calls_per_minute: self.shared.usage(),
            },
        };
        self.store.heartbeat(&me).await?;
        // Rows of instances killed long ago would only clutter `groupwatch status`.
        self.store.forget_instances(now - FORGET_AFTER.as_millis() as i64).await?;
        self.live_workers.send_if_modified(|n| {
            let changed = *n != workers.len().max(1);
            *n = workers.len().max(1);
            changed
        });
        metrics::gauge!("groupwatch_live_workers").set(workers.len() as f64);
        metrics::gauge!("groupwatch_shards_owned").set(owned.len() as f64);
        self.owned.send_if_modified(|current| {
            if current.as_ref() == Some(&owned) {
                return false;
            }
            tracing::info!(instance = %self.instance_id, shards = ?owned, workers = workers.len(), "inbound shards rebalanced");
            *current = Some(owned);
            true
        });
        Ok(())
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "groupwatch".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendezvous_spreads_shards_and_moves_only_the_gone_instances() {
        let three: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let owners: Vec<&str> = (0..64).map(|s| rendezvous(&three, s).unwrap()).collect();
        for i in &three {
            let n = owners.iter().filter(|o| **o == i.as_str()).count();
            assert!((10..=35).contains(&n), "{i} owns {n} of 64");
        }
        let two: Vec<String> = ["a", "c"].map(String::from).to_vec();
        for (s, owner) in owners.iter().enumerate() {
            let now = rendezvous(&two, s as u16).unwrap();
            if *owner != "b" {
                assert_eq!(now, *owner, "shard {s} moved although its owner stayed");
            }
        }
        assert_eq!(rendezvous(&[], 0), None);
    }
}
