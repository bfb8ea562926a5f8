//! The worker: consumes the inbound shard queues with manual acks and runs one actor per chat.
//!
//! - One actor per chat processes that chat's reports in order, never two at once; different
//!   chats run in parallel. A chat waiting for WeCom to become consistent waits on its own
//!   timer, holding its inbound messages unacked, and blocks nobody else.
//! - Reports arriving within `coalesce` of each other share one fetch.
//! - A message is acked only when every event in it has been published and saved (or parked in
//!   the dead-letter queue). Anything not acked is redelivered after a crash or reconnect.
//! - Each broker connection is one "generation": when the link is lost, every actor of the
//!   generation stops and drops its unacked work, which the broker redelivers to the next one.

pub mod pipeline;
pub mod resync;

use futures_util::StreamExt;
use lapin::acker::Acker;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::core::model::GroupKey;
use crate::core::report::ChangeReport;
use crate::provider::wecom::report_of;
use crate::queue::broker::{Broker, Link};
use crate::queue::inbound::{InboundBatch, InboundEvent};
use crate::worker::pipeline::{Outcome, Pipeline};

/// A chat with nothing to do for this long ends its actor (a new report starts a new one).
const IDLE_ACTOR: Duration = Duration::from_secs(30);

/// Acks an inbound message once every event in it is done.
struct DeliveryAck {
    acker: Acker,
    remaining: AtomicUsize,
}

impl DeliveryAck {
    async fn done(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            // A failed ack means the channel is gone; the broker will redeliver, ids are stable.
            if let Err(e) = self.acker.ack(BasicAckOptions::default()).await {
                tracing::debug!(error = %e, "ack failed; message will be redelivered");
            }
        }
    }
}

struct Pending {
    report: ChangeReport,
    inbound: InboundEvent,
    ack: Arc<DeliveryAck>,
}

pub struct Worker {
    pipeline: Arc<Pipeline>,
    broker: Broker,
    prefetch: u16,
    recent: RecentKeys,
}

/// Keys of callbacks fully processed within the dedupe window: WeCom's retries of them are
/// acked without another fetch. Keys include UpdateDetail, the member versions and the member
/// list, so distinct changes in the same second never collide.
struct RecentKeys {
    window: Duration,
    seen: Mutex<HashMap<String, Instant>>,
}

impl RecentKeys {
    fn contains(&self, key: &str) -> bool {
        let seen = self.seen.lock().expect("recent keys lock");
        seen.get(key).is_some_and(|at| at.elapsed() < self.window)
    }

    fn remember(&self, keys: &[&str]) {
        if self.window.is_zero() {
            return;
        }
        let mut seen = self.seen.lock().expect("recent keys lock");
        let now = Instant::now();
        // Bounded by what one window of traffic can add; expired keys go on the next growth.
        if seen.len() > 10_000 {
            seen.retain(|_, at| at.elapsed() < self.window);
        }
        for k in keys {
            seen.insert((*k).to_owned(), now);
        }
    }
}

/// Everything the actors of one broker connection share.
struct Generation {
    worker: Arc<Worker>,
    link: Link,
    chats: Mutex<HashMap<GroupKey, mpsc::UnboundedSender<Pending>>>,
    tasks: TaskTracker,
    cancel: CancellationToken,
    /// The consuming channel, closed at the end so that the connection closes cleanly.
    channel: std::sync::OnceLock<lapin::Channel>,
}

impl Worker {
    pub fn new(pipeline: Arc<Pipeline>, broker: Broker, prefetch: u16, dedupe_window: Duration) -> Self {
        let recent = RecentKeys { window: dedupe_window, seen: Mutex::new(HashMap::new()) };
        Self { pipeline, broker, prefetch, recent }
    }

    /// Runs until `shutdown`: one generation per broker connection.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
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
                tasks: TaskTracker::new(),
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
        for queue in self.worker.broker.topology().inbound_queues() {
            let consumer =
                channel.basic_consume(&queue, "", BasicConsumeOptions::default(), FieldTable::default()).await?;
            let generation = self.clone();
            self.tasks.spawn(async move {
                let mut consumer = consumer;
                loop {
                    let next = tokio::select! {
                        _ = generation.cancel.cancelled() => break,
                        d = consumer.next() => d,
                    };
                    match next {
                        Some(Ok(delivery)) => generation.clone().accept(delivery).await,
                        Some(Err(e)) => {
                            tracing::warn!(queue, error = %e, "consumer failed");
                            generation.link.mark_broken();
                            break;
                        }
                        None => break,
                    }
                }
            });
        }
        Ok(())
    }

    /// Stops every actor of this generation and waits for in-flight attempts to finish.
    async fn stop(&self) {
        self.cancel.cancel();
        self.tasks.close();
        if tokio::time::timeout(Duration::from_secs(20), self.tasks.wait()).await.is_err() {
            tracing::warn!("some chats were still busy at shutdown; their messages will be redelivered");
        }
        // Whatever is still unacked goes back to the queue, as it would with the connection.
        if let Some(channel) = self.channel.get() {
            if channel.status().connected() {
                let _ = channel.close(200, "groupwatch stopping").await;
            }
        }
    }

    async fn accept(self: Arc<Self>, delivery: lapin::message::Delivery) {
        let batch: InboundBatch = match serde_json::from_slice(&delivery.data) {
            Ok(b) => b,
            Err(e) => {
                // Not ours to interpret, but never dropped silently: park it with the reason.
                let reason = format!("undecodable inbound message: {e}");
                if self.dead_letter_raw(&delivery.data, &reason, None).await {
                    let _ = delivery.acker.ack(BasicAckOptions::default()).await;
                }
                return;
            }
        };
        if batch.events.is_empty() {
            let _ = delivery.acker.ack(BasicAckOptions::default()).await;
            return;
        }
        let ack = Arc::new(DeliveryAck { acker: delivery.acker, remaining: AtomicUsize::new(batch.events.len()) });
        let now = crate::core::clock::now_ms();
        for inbound in batch.events {
            let lag = (now - inbound.received_at_ms).max(0) as f64 / 1000.0;
            metrics::histogram!("groupwatch_inbound_lag_seconds").record(lag);
            if self.worker.recent.contains(&inbound.key) {
                metrics::counter!("groupwatch_callbacks_deduplicated_total").increment(1);
                tracing::debug!(tenant = %inbound.tenant, chat_id = %inbound.event.chat_id, event_key = %inbound.key,
                    "callback already processed within the dedupe window");
                ack.done().await;
                continue;
            }
            let key = GroupKey::new(inbound.provider, inbound.tenant.clone(), inbound.event.chat_id.clone());
            let pending = Pending { report: report_of(&inbound.event), inbound, ack: ack.clone() };
            self.dispatch(key, pending);
        }
    }

    fn dispatch(self: &Arc<Self>, key: GroupKey, pending: Pending) {
        let mut chats = self.chats.lock().expect("chat map lock");
        let pending = match chats.get(&key) {
            Some(tx) => match tx.send(pending) {
                Ok(()) => return,
                // The actor closed its mailbox because it went idle: start a fresh one.
                Err(mpsc::error::SendError(p)) => p,
            },
            None => pending,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        tx.send(pending).ok();
        chats.insert(key.clone(), tx);
        let generation = self.clone();
        self.tasks.spawn(async move { generation.chat_actor(key, rx).await });
    }

    async fn chat_actor(self: Arc<Self>, key: GroupKey, mut rx: mpsc::UnboundedReceiver<Pending>) {
        let pipeline = &self.worker.pipeline;
        let coalesce = pipeline.settings.coalesce;
        let mut pending: Vec<Pending> = Vec::new();
        let mut attempt = 0usize;
        let mut due: Option<Instant> = None;
        loop {
            let idle = pending.is_empty();
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => return,
                msg = rx.recv() => match msg {
                    Some(p) => {
                        due.get_or_insert_with(|| Instant::now() + coalesce);
                        pending.push(p);
                    }
                    None => return,
                },
                _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                    // Whatever arrived while this actor was busy joins this attempt.
                    while let Ok(p) = rx.try_recv() {
                        pending.push(p);
                    }
                    let reports: Vec<ChangeReport> = pending.iter().map(|p| p.report.clone()).collect();
                    let outcome = pipeline.process(&key, &reports, attempt).await;
                    match outcome {
                        Outcome::Done { .. } => {
                            let keys: Vec<&str> = pending.iter().map(|p| p.inbound.key.as_str()).collect();
                            self.worker.recent.remember(&keys);
                            let now = crate::core::clock::now_ms();
                            for p in &pending {
                                let latency = (now - p.inbound.received_at_ms).max(0) as f64 / 1000.0;
                                metrics::histogram!("groupwatch_callback_to_publish_seconds").record(latency);
                            }
                            for p in pending.drain(..) {
                                p.ack.done().await;
                            }
                            attempt = 0;
                            due = None;
                        }
                        Outcome::RetryAfter(delay) => {
                            attempt += 1;
                            due = Some(Instant::now() + delay);
                        }
                        Outcome::Paused(wait) => due = Some(Instant::now() + wait),
                        Outcome::Poison(reason) => {
                            for p in pending.drain(..) {
                                if !self.dead_letter(&p.inbound, &reason).await {
                                    self.link.mark_broken();
                                    return;
                                }
                                p.ack.done().await;
                            }
                            attempt = 0;
                            due = None;
                        }
                        // Dropped without ack, exactly like a crash: the broker redelivers on reconnect.
                        Outcome::Halted => return,
                        Outcome::Abandon(reason) => {
                            tracing::warn!(tenant = %key.tenant, chat_id = %key.chat_id, reason,
                                "dropping unacked work; the broker will redeliver it");
                            self.link.mark_broken();
                            return;
                        }
                    }
                },
                _ = tokio::time::sleep(IDLE_ACTOR), if idle => {
                    rx.close();
                    while let Ok(p) = rx.try_recv() {
                        pending.push(p);
                    }
                    if pending.is_empty() {
                        return;
                    }
                    due = Some(Instant::now() + coalesce);
                }
            }
        }
    }

    async fn dead_letter(&self, inbound: &InboundEvent, reason: &str) -> bool {
        let body = serde_json::to_vec(&InboundBatch { events: vec![inbound.clone()] }).expect("serialisable");
        self.dead_letter_raw(&body, reason, Some(inbound)).await
    }

    /// Publishes a failed inbound message to `{exchange}.dead` with the reason in its headers.
    async fn dead_letter_raw(&self, body: &[u8], reason: &str, inbound: Option<&InboundEvent>) -> bool {
        let topology = self.worker.broker.topology();
        let mut headers = FieldTable::default();
        headers.insert("x-groupwatch-reason".into(), AMQPValue::LongString(reason.to_owned().into()));
        headers.insert("x-groupwatch-failed-at".into(), AMQPValue::LongLongInt(crate::core::clock::now_ms()));
        if let Some(e) = inbound {
            headers.insert("x-groupwatch-tenant".into(), AMQPValue::LongString(e.tenant.clone().into()));
            headers.insert("x-groupwatch-chat-id".into(), AMQPValue::LongString(e.event.chat_id.clone().into()));
        }
        let properties = BasicProperties::default().with_content_type("application/json".into()).with_headers(headers);
        match self.worker.broker.publish("", &topology.dead_letter_queue(), body, properties).await {
            Ok(()) => {
                metrics::counter!("groupwatch_dead_letters_total").increment(1);
                tracing::error!(
                    reason,
                    chat_id = inbound.map(|e| e.event.chat_id.as_str()),
                    "event moved to the dead-letter queue"
                );
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot dead-letter; the message stays unacked");
                false
            }
        }
    }
}
