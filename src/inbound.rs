//! The durable hand-off between the HTTP front door and the workers.
//!
//! A verified, parsed callback becomes an [`InboundEvent`] and is published, persistent and
//! confirmed, to the inbound queue of its chat's shard *before* WeCom gets its `success`.
//! The message body is a batch (`{"events": [...]}`): callbacks arriving together share one
//! broker round trip (group commit).

use lapin::BasicProperties;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::broker::{Broker, BrokerError};
use crate::event::ChangeExternalChat;
use crate::model::Provider;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundEvent {
    pub provider: Provider,
    pub tenant: String,
    /// When groupwatch accepted the callback (unix milliseconds).
    pub received_at_ms: i64,
    /// Identifies this change report: equal for WeCom's retries of one callback, different for
    /// distinct changes even within the same second (see [`InboundEvent::dedupe_key`]).
    pub key: String,
    pub event: ChangeExternalChat,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundBatch {
    pub events: Vec<InboundEvent>,
}

impl InboundEvent {
    pub fn new(provider: Provider, tenant: &str, event: ChangeExternalChat, received_at_ms: i64) -> Self {
        let key = Self::dedupe_key(provider, tenant, &event);
        Self { provider, tenant: tenant.to_owned(), received_at_ms, key, event }
    }

    /// A hash of everything that tells two change reports apart. WeCom's own advice
    /// (FromUserName + CreateTime) would merge distinct changes in one second, so the change
    /// type, detail, member versions and changed members are all part of the key.
    pub fn dedupe_key(provider: Provider, tenant: &str, e: &ChangeExternalChat) -> String {
        let mut h = Sha256::new();
        for part in [
            provider.as_str(),
            tenant,
            &e.chat_id,
            &format!("{:?}", e.change_type),
            e.update_detail.as_ref().map_or("", |d| d.as_str()),
            &e.create_time.to_string(),
            e.last_mem_ver.as_deref().unwrap_or(""),
            e.cur_mem_ver.as_deref().unwrap_or(""),
            &e.mem_change_list.join(","),
        ] {
            h.update(part.as_bytes());
            h.update([0x1f]);
        }
        hex::encode(&h.finalize()[..16])
    }
}

/// Publishes inbound events to their shard's queue, group-committed: callbacks that arrive while
/// a shard's earlier batches await their confirm travel together in one message, confirmed
/// once. Each callback's answer still waits for the confirm that covers it. At low load a batch
/// is a single event and nothing waits for a linger timer.
#[derive(Clone)]
pub struct Inbound {
    shards: Arc<[mpsc::Sender<Job>]>,
}

/// A failed hand-off, shared by every callback of the batch.
#[derive(Debug, Clone, thiserror::Error)]
#[error(transparent)]
pub struct HandOffError(Arc<BrokerError>);

struct Job {
    event: InboundEvent,
    done: oneshot::Sender<Result<(), HandOffError>>,
}

/// Group-commit settings.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    /// Most events in one inbound message.
    pub max_events: usize,
    /// Batches of one shard awaiting their confirm at once; more arrivals wait and join the next.
    pub in_flight: usize,
}

impl Default for Batching {
    fn default() -> Self {
        Self { max_events: 256, in_flight: 4 }
    }
}

impl Inbound {
    /// Starts one batcher per shard. They end when the last `Inbound` clone is dropped.
    pub fn new(broker: Broker, batching: Batching) -> Self {
        let topology = broker.topology().clone();
        let shards: Vec<_> = (0..topology.inbound_shards)
            .map(|shard| {
                let (tx, rx) = mpsc::channel(8 * batching.max_events);
                tokio::spawn(batcher(broker.clone(), topology.inbound_queue(shard), rx, batching));
                tx
            })
            .collect();
        Self { shards: shards.into() }
    }

    /// Returns once the broker has confirmed the event is stored in its inbound queue.
    pub async fn hand_off(&self, event: InboundEvent, shard: u16) -> Result<(), HandOffError> {
        let (done, result) = oneshot::channel();
        let unavailable = || HandOffError(Arc::new(BrokerError::Unavailable));
        self.shards[shard as usize].send(Job { event, done }).await.map_err(|_| unavailable())?;
        result.await.unwrap_or_else(|_| Err(unavailable()))
    }
}

async fn batcher(broker: Broker, queue: String, mut jobs: mpsc::Receiver<Job>, batching: Batching) {
    let queue: Arc<str> = queue.into();
    let slots = Arc::new(Semaphore::new(batching.in_flight));
    while let Some(first) = jobs.recv().await {
        let mut batch = vec![first];
        // Wait for a free slot; whatever arrives meanwhile joins this batch.
        let slot = slots.clone().acquire_owned().await.expect("semaphore is never closed");
        while batch.len() < batching.max_events {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let broker = broker.clone();
        let queue = queue.clone();
        tokio::spawn(async move {
            let (events, waiters): (Vec<_>, Vec<_>) = batch.into_iter().map(|j| (j.event, j.done)).unzip();
            metrics::histogram!("groupwatch_handoff_batch_events").record(events.len() as f64);
            let started = std::time::Instant::now();
            let result = publish_batch(&broker, &queue, events).await.map_err(|e| HandOffError(Arc::new(e)));
            metrics::histogram!("groupwatch_handoff_seconds").record(started.elapsed());
            drop(slot);
            for waiter in waiters {
                // The caller may have gone (client disconnected); the event is queued all the same.
                let _ = waiter.send(result.clone());
            }
        });
    }
}

async fn publish_batch(broker: &Broker, queue: &str, events: Vec<InboundEvent>) -> Result<(), BrokerError> {
    let mut properties = BasicProperties::default().with_content_type("application/json".into());
    if let [only] = events.as_slice() {
        properties = properties.with_message_id(only.key.as_str().into());
    }
    let body = serde_json::to_vec(&InboundBatch { events }).expect("serialisable");
    // The default exchange routes by queue name; `mandatory` turns a missing queue into an
    // error instead of a silent drop.
    broker.publish("", queue, &body, properties).await
}
