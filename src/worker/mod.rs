//! The worker: consumes the inbound shard queues with manual acks and runs one actor per chat.
//!
//! - One actor per chat processes everything about that chat (notifications, resync requests,
//!   outbox drains) in order, never two at once; different chats run in parallel. A chat waiting
//!   for its vendor to become consistent waits on its own timer, holding its inbound messages
//!   unacked, and blocks nobody else. An idle actor removes itself, so the map of actors holds
//!   only chats with recent work.
//! - Reports arriving within `coalesce` of each other share one fetch.
//! - A message is acked only when every item in it has been stored and published (or parked in
//!   the dead-letter queue). Anything not acked is redelivered after a crash or reconnect.
//! - Each broker connection is one "generation": when the link is lost, the generation's actors
//!   stop (those still busy after a grace period are aborted) before the next generation
//!   consumes, so two generations never process one chat at once; their unacked work is
//!   redelivered to the next one. Saves are conditional on the revision loaded, so even a
//!   writer outside this process cannot be overwritten.

pub mod appchat;
pub mod cluster;
pub mod marks;
pub mod pipeline;
pub mod resync;

use futures_util::StreamExt;
use lapin::acker::Acker;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::core::clock::now_ms;
use crate::core::model::{GroupKey, Provider};
use crate::core::report::ChangeReport;
use crate::ingress::aliases::Aliases;
use crate::queue::broker::{Broker, Link};
use crate::queue::dead;
use crate::queue::inbound::{self, Inbound, InboundEvent, Work};
use crate::store::SnapshotStore;
use crate::worker::pipeline::{Outcome, Pipeline, Prepared, Sighting};

/// How long a stopping generation waits for busy actors before aborting them.
const STOP_GRACE: Duration = Duration::from_secs(20);
/// How long the store remembers which inbound items it applied: far longer than a redelivery
/// takes (seconds to minutes after a crash).
const APPLIED_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Pause between attempts to consume a shard whose consumer was cancelled.
const RECONSUME_BACKOFF: Duration = Duration::from_secs(1);

/// Acks an inbound message once every item in it is done.
struct DeliveryAck {
    acker: Acker,
    remaining: AtomicUsize,
    /// The messages of its shard still in flight on this instance.
    flight: Arc<InFlight>,
}

impl DeliveryAck {
    async fn done(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            // A failed ack means the channel is gone; the broker will redeliver, ids are stable.
            if let Err(e) = self.acker.ack(BasicAckOptions::default()).await {
                tracing::debug!(error = %e, "ack failed; message will be redelivered");
            }
            self.flight.finish();
        }
    }
}

/// Messages of one shard taken from the broker and not yet acked, so that a shard handed to
/// another instance is let go only once its work here is done.
#[derive(Default)]
struct InFlight {
    count: AtomicUsize,
    idle: tokio::sync::Notify,
}

impl InFlight {
    fn start(&self) {
        self.count.fetch_add(1, Ordering::AcqRel);
    }

    fn finish(&self) {
        if self.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }

    /// Waits until nothing is in flight, or `limit`; returns whether it got there.
    async fn settled(&self, limit: Duration) -> bool {
        tokio::time::timeout(limit, async {
            loop {
                let idle = self.idle.notified();
                if self.count.load(Ordering::Acquire) == 0 {
                    return;
                }
                idle.await;
            }
        })
        .await
        .is_ok()
    }
}

struct Pending {
    item: InboundEvent,
    ack: Arc<DeliveryAck>,
}

/// Which inbound shards this instance owns and whether each owned one has a live consumer, for
/// `/readyz`. Until ownership is first known (the first cluster heartbeat), nothing is ready.
pub struct ShardHealth {
    alive: Vec<AtomicBool>,
    owned: Vec<AtomicBool>,
    known: AtomicBool,
}

impl ShardHealth {
    pub fn new(shards: u16) -> Self {
        Self {
            alive: (0..shards).map(|_| AtomicBool::new(false)).collect(),
            owned: (0..shards).map(|_| AtomicBool::new(false)).collect(),
            known: AtomicBool::new(false),
        }
    }

    fn set(&self, shard: usize, alive: bool) {
        if let Some(a) = self.alive.get(shard) {
            a.store(alive, Ordering::Relaxed);
        }
        metrics::gauge!("groupwatch_shard_consumer_up", "shard" => shard.to_string()).set(if alive {
            1.0
        } else {
            0.0
        });
    }

    fn own(&self, shard: usize, owned: bool) {
        if let Some(o) = self.owned.get(shard) {
            o.store(owned, Ordering::Relaxed);
        }
    }

    fn ownership_known(&self) {
        self.known.store(true, Ordering::Relaxed);
    }

    /// The shards this instance consumes.
    pub fn owned(&self) -> Vec<usize> {
        self.owned.iter().enumerate().filter(|(_, o)| o.load(Ordering::Relaxed)).map(|(i, _)| i).collect()
    }

    /// The owned shards without a live consumer; every shard while ownership is not yet known.
    pub fn down(&self) -> Vec<usize> {
        if !self.known.load(Ordering::Relaxed) {
            return (0..self.alive.len()).collect();
        }
        self.owned().into_iter().filter(|s| !self.alive.get(*s).is_some_and(|a| a.load(Ordering::Relaxed))).collect()
    }
}

pub struct Worker {
    pipeline: Arc<Pipeline>,
    broker: Broker,
    /// To forward work that named its chat by an alias to the chat's own shard.
    inbound: Inbound,
    aliases: Arc<Aliases>,
    prefetch: u16,
    actor_idle: Duration,
    recent: RecentKeys,
    /// The configured (provider, tenant) pairs: work for any other is parked, not processed.
    tenants: HashSet<(Provider, String)>,
    pub health: Arc<ShardHealth>,
    /// Which shards this instance consumes.
    membership: Arc<cluster::Membership>,
}

/// Keys of notifications fully processed within the dedupe window: a vendor's retries of them
/// are acked without another fetch. Expiry is in arrival order, so each key costs O(1)
/// amortised, and the number of keys is bounded.
struct RecentKeys {
    window: Duration,
    max: usize,
    inner: Mutex<Recent>,
}

#[derive(Default)]
struct Recent {
    /// Entries in the order remembered, each with a serial number.
    order: VecDeque<(Instant, u64, String)>,
    /// Each key's latest entry.
    seen: HashMap<String, (Instant, u64)>,
    serial: u64,
}

impl RecentKeys {
    fn new(window: Duration, max: usize) -> Self {
        Self { window, max, inner: Mutex::new(Recent::default()) }
    }

    fn contains(&self, key: &str) -> bool {
        let recent = self.inner.lock().expect("recent keys lock");
        recent.seen.get(key).is_some_and(|(at, _)| at.elapsed() < self.window)
    }

    fn remember<'a>(&self, keys: impl Iterator<Item = &'a str>) {
        if self.window.is_zero() {
            return;
        }
        let mut recent = self.inner.lock().expect("recent keys lock");
        let now = Instant::now();
        for k in keys {
            recent.serial += 1;
            let serial = recent.serial;
            recent.seen.insert(k.to_owned(), (now, serial));
            recent.order.push_back((now, serial, k.to_owned()));
        }
        while let Some((at, _, _)) = recent.order.front() {
            if at.elapsed() < self.window && recent.seen.len() <= self.max {
                break;
            }
            let (_, serial, key) = recent.order.pop_front().expect("front exists");
            // A key remembered again later has a newer entry further back; keep that one.
            if recent.seen.get(&key).is_some_and(|(_, latest)| *latest == serial) {
                recent.seen.remove(&key);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().unwrap().seen.len()
    }
}

/// Counts a live actor in `groupwatch_chat_actors` for as long as it is held, however the actor
/// ends (finished, idle, aborted).
struct LiveActor;

impl LiveActor {
    fn new() -> Self {
        metrics::gauge!("groupwatch_chat_actors").increment(1.0);
        LiveActor
    }
}

impl Drop for LiveActor {
    fn drop(&mut self) {
        metrics::gauge!("groupwatch_chat_actors").decrement(1.0);
    }
}

/// Everything the actors of one broker connection share.
struct Generation {
    worker: Arc<Worker>,
    link: Link,
    chats: Mutex<HashMap<GroupKey, mpsc::UnboundedSender<Pending>>>,
    tasks: Mutex<JoinSet<()>>,
    cancel: CancellationToken,
    /// The consuming channel, closed at the end so that the connection closes cleanly.
    channel: std::sync::OnceLock<lapin::Channel>,
}

/// Worker settings, from `[worker]`.
pub struct WorkerSettings {
    pub prefetch: u16,
    /// A chat with nothing to do for this long ends its actor (a new item starts a new one).
    pub actor_idle: Duration,
    pub dedupe_window: Duration,
    pub dedupe_max: usize,
}

impl Worker {
    pub fn new(
        pipeline: Arc<Pipeline>,
        broker: Broker,
        inbound: Inbound,
        aliases: Arc<Aliases>,
        settings: WorkerSettings,
        tenants: HashSet<(Provider, String)>,
        membership: Arc<cluster::Membership>,
    ) -> Self {
        let health = Arc::new(ShardHealth::new(broker.topology().inbound_shards));
        Self {
            membership,
            pipeline,
            broker,
            inbound,
            aliases,
            prefetch: settings.prefetch,
            actor_idle: settings.actor_idle,
            recent: RecentKeys::new(settings.dedupe_window, settings.dedupe_max),
            tenants,
            health,
        }
    }

    /// Runs until `shutdown`: one generation per broker connection, the next starting only
    /// once the previous one's actors are done. The marks of what they published are written
    /// meanwhile, and what is left of them once the last generation is done.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let marks_stop = CancellationToken::new();
        let marker = tokio::spawn(self.pipeline.marks.clone().run(self.pipeline.store.clone(), marks_stop.clone()));
        self.generations(shutdown).await;
        marks_stop.cancel();
        let _ = marker.await;
    }

    async fn generations(self: Arc<Self>, shutdown: CancellationToken) {
        let mut links = self.broker.watch();
        loop {
            let link = tokio::select! {
                _ = shutdown.cancelled() => return,
                l = links.wait_for(|l| l.is_some()) => match l {
                    Ok(l) => l.clone().expect("checked by wait_for"),
                    Err(_) => return,
                },
            };
            let generation = Arc::new(Generation {
                worker: self.clone(),
                link,
                chats: Mutex::new(HashMap::new()),
                tasks: Mutex::new(JoinSet::new()),
                cancel: shutdown.child_token(),
                channel: std::sync::OnceLock::new(),
            });
            if let Err(e) = generation.clone().start().await {
                tracing::warn!(error = %e, "cannot start consuming; waiting for a new broker connection");
                generation.link.mark_broken();
            }
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = links.changed() => {}
            }
            generation.stop().await;
            if shutdown.is_cancelled() {
                return;
            }
        }
    }
}

impl Generation {
    async fn start(self: Arc<Self>) -> Result<(), lapin::Error> {
        let channel = self.link.connection.create_channel().await?;
        channel.basic_qos(self.worker.prefetch, BasicQosOptions::default()).await?;
        let _ = self.channel.set(channel.clone());
        let generation = self.clone();
        self.spawn(async move { generation.follow_ownership(channel).await });
        Ok(())
    }

    /// Consumes the shards this instance owns, as ownership changes: a shard gained is
    /// subscribed to (RabbitMQ keeps the previous owner's consumer active until it leaves), a
    /// shard lost is unsubscribed from (its in-flight work still finishes and is acked).
    async fn follow_ownership(self: Arc<Self>, channel: lapin::Channel) {
        let mut owned = self.worker.membership.owned();
        let mut consuming: HashMap<u16, CancellationToken> = HashMap::new();
        loop {
            let decided: Option<HashSet<u16>> = owned.borrow_and_update().as_ref().map(|o| o.iter().copied().collect());
            let Some(wanted) = decided else {
                tokio::select! {
                    _ = self.cancel.cancelled() => return,
                    changed = owned.changed() => if changed.is_err() { return },
                }
                continue;
            };
            consuming.retain(|shard, stop| {
                let keep = wanted.contains(shard);
                if !keep {
                    stop.cancel();
                    self.worker.health.own(*shard as usize, false);
                }
                keep
            });
            for shard in wanted {
                if consuming.contains_key(&shard) {
                    continue;
                }
                let stop = self.cancel.child_token();
                consuming.insert(shard, stop.clone());
                self.worker.health.own(shard as usize, true);
                let queue = self.worker.broker.topology().inbound_queue(shard);
                let (generation, channel) = (self.clone(), channel.clone());
                self.spawn(async move { generation.consume(shard as usize, queue, channel, stop).await });
            }
            self.worker.health.ownership_known();
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                changed = owned.changed() => if changed.is_err() { return },
            }
        }
    }

    /// Consumes one shard until the generation ends. A consumer the broker cancels (its queue
    /// was deleted) is re-declared and consumed again, so intake and processing resume.
    async fn consume(self: Arc<Self>, shard: usize, queue: String, channel: lapin::Channel, stop: CancellationToken) {
        let health = self.worker.health.clone();
        loop {
            let consumer =
                match channel.basic_consume(&queue, "", BasicConsumeOptions::default(), FieldTable::default()).await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(queue, error = %e, "cannot consume an inbound shard");
                        health.set(shard, false);
                        self.link.mark_broken();
                        return;
                    }
                };
            health.set(shard, true);
            let mut consumer = consumer;
            let flight = Arc::new(InFlight::default());
            loop {
                let next = tokio::select! {
                    _ = stop.cancelled() => {
                        if !self.cancel.is_cancelled() {
                            self.hand_over(&queue, &channel, consumer, &flight).await;
                        }
                        // (A generation that ends closes the channel: everything unacked goes
                        // back to the queue.)
                        health.set(shard, false);
                        return;
                    }
                    d = consumer.next() => d,
                };
                match next {
                    Some(Ok(delivery)) => self.clone().accept(delivery, flight.clone()).await,
                    Some(Err(e)) => {
                        tracing::warn!(queue, error = %e, "consumer failed");
                        health.set(shard, false);
                        self.link.mark_broken();
                        return;
                    }
                    None => break,
                }
            }
            health.set(shard, false);
            metrics::counter!("groupwatch_consumer_cancellations_total").increment(1);
            tracing::error!(
                queue,
                "the broker cancelled the consumer of an inbound shard (queue deleted?); \
                re-declaring the topology and consuming again"
            );
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(RECONSUME_BACKOFF) => {}
                }
                match self.worker.broker.topology().declare(&channel).await {
                    Ok(()) => break,
                    Err(e) => tracing::warn!(queue, error = %e, "re-declaring the topology failed; will retry"),
                }
            }
        }
    }

    /// Lets go of a shard another instance now owns: takes nothing new from it, lets the work in
    /// flight finish and be acked, and only then cancels the consumer, at which point RabbitMQ
    /// makes the new owner's consumer the active one. So the two never process the shard's
    /// chats at once (unless the work here outlasts [`STOP_GRACE`]; the store's conditional
    /// commits still keep them from overwriting each other). Messages the broker had already
    /// sent ahead (the prefetch) go back to the queue unprocessed.
    async fn hand_over(&self, queue: &str, channel: &lapin::Channel, mut consumer: lapin::Consumer, flight: &InFlight) {
        tokio::select! {
            // Stopping: closing the channel returns everything unacked.
            _ = self.cancel.cancelled() => return,
            settled = flight.settled(STOP_GRACE) => if !settled {
                tracing::warn!(queue, "work on a shard handed over is still running; letting go anyway");
            }
        }
        let tag = consumer.tag();
        if let Err(e) = channel.basic_cancel(tag.as_str(), Default::default()).await {
            tracing::warn!(queue, error = %e, "cannot cancel the consumer of a shard no longer owned");
        }
        let mut returned = 0;
        while let Ok(Some(Ok(delivery))) = tokio::time::timeout(Duration::from_secs(1), consumer.next()).await {
            let requeue = BasicNackOptions { requeue: true, ..Default::default() };
            let _ = delivery.acker.nack(requeue).await;
            returned += 1;
        }
        tracing::info!(queue, returned, "inbound shard handed over");
    }

    /// Spawns a task of this generation, unless it is stopping (then the work is dropped
    /// unacked, and redelivered to the next generation).
    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) -> bool {
        let mut tasks = self.tasks.lock().expect("tasks lock");
        if self.cancel.is_cancelled() {
            return false;
        }
        while tasks.try_join_next().is_some() {}
        tasks.spawn(task);
        true
    }

    /// Stops every task of this generation: waits for in-flight attempts, then aborts the rest.
    async fn stop(&self) {
        self.cancel.cancel();
        let mut tasks = std::mem::take(&mut *self.tasks.lock().expect("tasks lock"));
        let drained = tokio::time::timeout(STOP_GRACE, async { while tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!(
                busy = tasks.len(),
                "chats still busy at the end of a generation; aborting them \
                (their messages will be redelivered)"
            );
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
        // Whatever is still unacked goes back to the queue, as it would with the connection.
        if let Some(channel) = self.channel.get() {
            if channel.status().connected() {
                let _ = channel.close(200, "groupwatch stopping").await;
            }
        }
    }

    async fn accept(self: Arc<Self>, delivery: lapin::message::Delivery, flight: Arc<InFlight>) {
        let batch = match inbound::decode_items(&delivery.data) {
            Ok(b) => b,
            Err(e) => {
                // Not ours to interpret, but never dropped silently: park it with the reason.
                let reason = format!("undecodable inbound message: {e}");
                if dead::park(&self.worker.broker, &delivery.data, &reason, None).await.is_ok() {
                    let _ = delivery.acker.ack(BasicAckOptions::default()).await;
                }
                return;
            }
        };
        // Each unreadable item is parked alone, before anything is acked; its neighbours (other
        // callbacks, often other chats) go on. Unacked if parking fails: redelivered whole.
        for item in &batch.unreadable {
            let reason = format!("undecodable inbound item: {}", item.error);
            if dead::park_unreadable(&self.worker.broker, item, &reason).await.is_err() {
                return;
            }
        }
        if batch.events.is_empty() {
            let _ = delivery.acker.ack(BasicAckOptions::default()).await;
            return;
        }
        flight.start();
        let ack =
            Arc::new(DeliveryAck { acker: delivery.acker, remaining: AtomicUsize::new(batch.events.len()), flight });
        let now = now_ms();
        for item in batch.events {
            let lag = (now - item.received_at_ms).max(0) as f64 / 1000.0;
            metrics::histogram!("groupwatch_inbound_lag_seconds", "provider" => item.provider.as_str()).record(lag);
            if !self.worker.tenants.contains(&(item.provider, item.tenant.clone())) {
                let reason = format!("{} tenant {:?} is not configured", item.provider, item.tenant);
                if dead::park_item(&self.worker.broker, &item, &reason).await.is_ok() {
                    ack.done().await;
                }
                continue;
            }
            if item.by_alias {
                // Unacked on failure: the broker redelivers it with the next link.
                if self.forward_by_alias(item).await {
                    ack.done().await;
                }
                continue;
            }
            if item.dedupe && self.worker.recent.contains(&item.key) {
                metrics::counter!("groupwatch_callbacks_deduplicated_total", "provider" => item.provider.as_str())
                    .increment(1);
                tracing::debug!(provider = %item.provider, tenant = %item.tenant, chat_id = %item.chat_id,
                    event_key = %item.key, "notification already processed within the dedupe window");
                ack.done().await;
                continue;
            }
            let key = GroupKey::new(item.provider, item.tenant.clone(), item.chat_id.clone());
            self.dispatch(key, Pending { item, ack: ack.clone() });
        }
    }

    /// Work that named its chat by an alias the front door could not map: map it now and send it
    /// to the chat's own shard (so the chat's actor sees it in order), or park it.
    async fn forward_by_alias(&self, mut item: InboundEvent) -> bool {
        let done = match self.worker.aliases.resolve(item.provider, &item.tenant, &item.chat_id).await {
            Some(chat_id) => {
                item.chat_id = chat_id;
                item.by_alias = false;
                self.worker.inbound.hand_off(item).await.map_err(|e| e.to_string())
            }
            None => {
                let reason = format!(
                    "{} chat alias {:?} is not known: no earlier event named its chat; redrive once one has",
                    item.provider, item.chat_id
                );
                dead::park_item(&self.worker.broker, &item, &reason).await.map_err(|e| e.to_string())
            }
        };
        if let Err(e) = &done {
            tracing::warn!(error = %e, "cannot forward or park work named by an alias; it will be redelivered");
            self.link.mark_broken();
        }
        done.is_ok()
    }

    fn dispatch(self: &Arc<Self>, key: GroupKey, pending: Pending) {
        let mut chats = self.chats.lock().expect("chat map lock");
        let pending = match chats.get(&key) {
            Some(tx) => match tx.send(pending) {
                Ok(()) => return,
                // The actor ended without removing itself (aborted): start a fresh one.
                Err(mpsc::error::SendError(p)) => p,
            },
            None => pending,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        tx.send(pending).ok();
        let generation = self.clone();
        let actor_key = key.clone();
        if self.spawn(async move { generation.chat_actor(actor_key, rx).await }) {
            chats.insert(key, tx);
        }
    }

    /// Removes the chat's actor from the map if nothing is waiting for it; otherwise returns what
    /// arrived. Senders only send under the map lock, so nothing can arrive after the removal.
    fn retire(&self, key: &GroupKey, rx: &mut mpsc::UnboundedReceiver<Pending>) -> Option<Pending> {
        let mut chats = self.chats.lock().expect("chat map lock");
        match rx.try_recv() {
            Ok(p) => Some(p),
            Err(_) => {
                chats.remove(key);
                None
            }
        }
    }

    async fn chat_actor(self: Arc<Self>, key: GroupKey, mut rx: mpsc::UnboundedReceiver<Pending>) {
        let _live = LiveActor::new();
        let pipeline = &self.worker.pipeline;
        let settings = &pipeline.settings;
        let mut pending: Vec<Pending> = Vec::new();
        let mut attempt = 0usize;
        let mut due: Option<Instant> = None;
        let mut sighting: Option<Sighting> = None;
        // A commit the store could not take, and how many pending items it covers.
        let mut unstored: Option<(Box<Prepared>, usize)> = None;
        // A confirmation read of what a fetch showed beyond the reports is scheduled.
        let mut confirm = false;
        // When the last attempt ended: a chat quiet for `coalesce` is fetched at once.
        let mut last_attempt: Option<Instant> = None;
        loop {
            let idle = pending.is_empty() && due.is_none();
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => return,
                msg = rx.recv() => match msg {
                    Some(p) => {
                        // Leading edge: an isolated change is fetched at once; what arrives
                        // while that fetch runs (or soon after) is coalesced into the next one.
                        let now = Instant::now();
                        let quiet = settings.leading_edge
                            && attempt == 0
                            && unstored.is_none()
                            && last_attempt.is_none_or(|t| now.duration_since(t) >= settings.coalesce);
                        let wanted = if quiet { now } else { now + settings.coalesce };
                        due = match due {
                            None => Some(wanted),
                            // A confirmation read scheduled far ahead must not hold new work back.
                            Some(d) if confirm && pending.is_empty() => Some(d.min(wanted)),
                            keep => keep,
                        };
                        pending.push(p);
                    }
                    None => return,
                },
                _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                    let (outcome, covered) = match unstored.take() {
                        Some((prepared, covered)) => (pipeline.store(&key, *prepared, attempt).await, covered),
                        None => {
                            // Whatever arrived while this actor was busy joins this attempt.
                            while let Ok(p) = rx.try_recv() {
                                pending.push(p);
                            }
                            match self.skip_applied(&key, &mut pending).await {
                                Ok(()) => {
                                    let reports: Vec<ChangeReport> =
                                        pending.iter().flat_map(|p| p.item.reports.iter().cloned()).collect();
                                    let items: Vec<String> = pending
                                        .iter()
                                        .filter(|p| p.item.work == Work::Change)
                                        .map(|p| p.item.id.clone())
                                        .collect();
                                    let reconcile = confirm || pending.iter().any(|p| p.item.work == Work::Reconcile);
                                    let work = pipeline::Work { reports: &reports, reconcile, attempt, items: &items };
                                    (pipeline.process(&key, work, &mut sighting).await, pending.len())
                                }
                                Err(outcome) => (outcome, pending.len()),
                            }
                        }
                    };
                    due = None;
                    last_attempt = Some(Instant::now());
                    match outcome {
                        Outcome::Done { leftovers, .. } => {
                            self.finish(&mut pending, covered, true).await;
                            attempt = 0;
                            confirm = leftovers;
                            if leftovers {
                                due = Some(Instant::now() + settings.confirm_delay);
                            }
                        }
                        Outcome::GaveUp => {
                            self.finish(&mut pending, covered, false).await;
                            attempt = 0;
                            confirm = false;
                        }
                        Outcome::RetryAfter(delay) => {
                            attempt += 1;
                            due = Some(Instant::now() + delay);
                        }
                        Outcome::Wait(delay) => due = Some(Instant::now() + delay),
                        Outcome::Unstored(prepared, delay) => {
                            unstored = Some((prepared, covered));
                            due = Some(Instant::now() + delay);
                        }
                        Outcome::Conflict => due = Some(Instant::now()),
                        Outcome::Poison(reason) => {
                            for p in pending.drain(..covered) {
                                let parked = p.item.work == Work::Drain
                                    || dead::park_item(&self.worker.broker, &p.item, &reason).await.is_ok();
                                if !parked {
                                    // Unacked and unparked: the broker redelivers it on the next link.
                                    self.link.mark_broken();
                                    return;
                                }
                                p.ack.done().await;
                            }
                            attempt = 0;
                            confirm = false;
                            sighting = None;
                        }
                        // Dropped without ack, exactly like a crash: the broker redelivers.
                        Outcome::Crashed => return,
                    }
                    if due.is_none() && !pending.is_empty() {
                        due = Some(Instant::now() + settings.coalesce);
                    }
                },
                _ = tokio::time::sleep(self.worker.actor_idle), if idle => match self.retire(&key, &mut rx) {
                    Some(p) => {
                        pending.push(p);
                        due = Some(Instant::now() + settings.coalesce);
                    }
                    None => return,
                },
            }
        }
    }

    /// Acknowledges the pending notifications whose changes are stored already (redelivered
    /// after a crash), and every later copy of one pending twice (forwarded twice): processing
    /// them again could only attribute newer changes to them.
    async fn skip_applied(&self, key: &GroupKey, pending: &mut Vec<Pending>) -> Result<(), Outcome> {
        let ids: Vec<String> =
            pending.iter().filter(|p| p.item.work == Work::Change).map(|p| p.item.id.clone()).collect();
        let applied = self.worker.pipeline.applied(key, &ids).await?;
        let (done, rest) = split_skippable(std::mem::take(pending), &applied, |p| &p.item);
        *pending = rest;
        if done.is_empty() {
            return Ok(());
        }
        metrics::counter!("groupwatch_redeliveries_skipped_total", "provider" => key.provider.as_str())
            .increment(done.len() as u64);
        for p in done {
            p.ack.done().await;
        }
        Ok(())
    }

    /// Acknowledges the first `covered` pending items; `applied`: their changes were stored and
    /// published, so their keys are remembered for the dedupe window.
    async fn finish(&self, pending: &mut Vec<Pending>, covered: usize, applied: bool) {
        let now = now_ms();
        let done: Vec<Pending> = pending.drain(..covered.min(pending.len())).collect();
        if applied {
            self.worker.recent.remember(done.iter().filter(|p| p.item.dedupe).map(|p| p.item.key.as_str()));
        }
        for p in done {
            if p.item.work == Work::Change {
                let latency = (now - p.item.received_at_ms).max(0) as f64 / 1000.0;
                metrics::histogram!("groupwatch_callback_to_publish_seconds", "provider" => p.item.provider.as_str())
                    .record(latency);
            }
            p.ack.done().await;
        }
    }
}

/// Splits `pending` into the changes to skip (already applied, or a later copy of one pending
/// twice) and the rest, in order. A copy forwarded twice can meet its original in the same
/// attempt: the first stands for both, so a stale copy never counts as a second report.
fn split_skippable<T>(pending: Vec<T>, applied: &[String], item: impl Fn(&T) -> &InboundEvent) -> (Vec<T>, Vec<T>) {
    let mut seen = HashSet::new();
    pending.into_iter().partition(|p| {
        let item = item(p);
        item.work == Work::Change && (applied.contains(&item.id) || !seen.insert(item.id.clone()))
    })
}

/// Inside `serve`: every `every`, asks the actors of chats with events stored longer than that
/// and still unpublished to publish them (through their shards, so the chat's one actor does
/// it). Normally the attempt that stored them publishes them; this covers every other path.
pub async fn sweep_outbox(store: Arc<dyn SnapshotStore>, inbound: Inbound, every: Duration, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let before = now_ms() - every.as_millis() as i64;
        let stuck = match store.chats_with_unpublished(before, 1_000).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "outbox sweep: cannot read the store");
                continue;
            }
        };
        let forget_before = now_ms() - APPLIED_RETENTION.as_millis() as i64;
        if let Err(e) = store.prune_applied(forget_before, 1_000).await {
            tracing::warn!(error = %e, "outbox sweep: cannot prune applied items");
        }
        for key in stuck {
            metrics::counter!("groupwatch_outbox_swept_total", "provider" => key.provider.as_str()).increment(1);
            let request = InboundEvent::request(Work::Drain, key.provider, &key.tenant, &key.chat_id, now_ms());
            if let Err(e) = inbound.hand_off(request).await {
                tracing::warn!(chat_id = %key.chat_id, error = %e, "outbox sweep: cannot queue a drain");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_keys_expire_in_order_and_stay_bounded() {
        let recent = RecentKeys::new(Duration::from_secs(60), 3);
        recent.remember(["a", "b"].into_iter());
        assert!(recent.contains("a") && recent.contains("b") && !recent.contains("c"));
        recent.remember(["c", "d"].into_iter());
        assert_eq!(recent.len(), 3, "bounded");
        assert!(!recent.contains("a"), "the oldest went first");
        // Remembering a key again keeps it past its first entry's eviction.
        recent.remember(["b"].into_iter());
        recent.remember(["e"].into_iter());
        assert!(recent.contains("b"));
        let expiring = RecentKeys::new(Duration::from_millis(1), 100);
        expiring.remember(["x"].into_iter());
        std::thread::sleep(Duration::from_millis(5));
        expiring.remember(["y"].into_iter());
        assert!(!expiring.contains("x"));
        assert_eq!(expiring.len(), 1, "expired keys are gone without a scan of the whole map");
    }

    #[test]
    fn an_item_pending_twice_is_processed_once_and_applied_ones_not_at_all() {
        use crate::core::model::Provider;
        let change = |id: &str| InboundEvent {
            id: id.into(),
            ..InboundEvent::request(Work::Change, Provider::Wecom, "t", "c", 1)
        };
        let drain = InboundEvent { id: "d".into(), ..InboundEvent::request(Work::Drain, Provider::Wecom, "t", "c", 1) };
        let pending =
            vec![change("a"), change("b"), change("a"), drain.clone(), drain.clone(), change("c"), change("b")];
        let (skipped, rest) = split_skippable(pending, &["c".to_string()], |e| e);
        let ids = |v: &[InboundEvent]| v.iter().map(|e| e.id.clone()).collect::<Vec<String>>();
        assert_eq!(
            ids(&rest),
            ["a", "b", "d", "d"],
            "the first copy of each change stays, in order; requests are never skipped"
        );
        assert_eq!(ids(&skipped), ["a", "c", "b"]);
    }
}
