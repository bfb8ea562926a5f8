//! The durable hand-off between the HTTP front door and the workers.
//!
//! A verified, parsed callback becomes an [`InboundEvent`] and is published, persistent and
//! confirmed, to the inbound queue of its chat's shard *before* WeCom gets its `success`.
//! The message body is a batch (`{"events": [...]}`): callbacks arriving together share one
//! broker round trip (group commit).

use lapin::BasicProperties;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt::Write;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::core::model::Provider;
use crate::provider::wecom::xml::ChangeExternalChat;
use crate::queue::broker::{Broker, BrokerError, Outgoing};

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

/// [`InboundBatch`] as serialised, borrowing its events.
#[derive(Serialize)]
struct InboundBatchRef<'a> {
    events: &'a [InboundEvent],
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
        // Formatted straight into the hash: no temporary strings per callback. The bytes are
        // those of the fields' `Debug`/`Display` forms, separated by 0x1f; they must not change,
        // or a retry that straddles an upgrade would not be recognised.
        let mut h = HashWriter(Sha256::new());
        let _ = write!(
            h,
            "{}\x1f{tenant}\x1f{}\x1f{:?}\x1f{}\x1f{}\x1f{}\x1f{}\x1f",
            provider.as_str(),
            e.chat_id,
            e.change_type,
            e.update_detail.as_ref().map_or("", |d| d.as_str()),
            e.create_time,
            e.last_mem_ver.as_deref().unwrap_or(""),
            e.cur_mem_ver.as_deref().unwrap_or(""),
        );
        for (i, member) in e.mem_change_list.iter().enumerate() {
            let _ = write!(h, "{}{member}", if i == 0 { "" } else { "," });
        }
        let _ = write!(h, "\x1f");
        hex::encode(&h.0.finalize()[..16])
    }
}

/// Feeds formatted text to a hash.
struct HashWriter(Sha256);

impl std::fmt::Write for HashWriter {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.update(s.as_bytes());
        Ok(())
    }
}

/// Publishes inbound events to their shard's queue, group-committed: callbacks that arrive while
/// earlier flushes await their confirms travel together. A flush holds one message per shard
/// that has events, published back to back and confirmed together, so a burst costs one broker
/// round trip whatever the number of shards. Each callback's answer still waits for the confirm
/// that covers it. At low load a flush is a single event and nothing waits for a linger timer.
#[derive(Clone)]
pub struct Inbound {
    jobs: mpsc::Sender<Job>,
    broker: Broker,
}

/// A failed hand-off, shared by every callback of the batch.
#[derive(Debug, Clone, thiserror::Error)]
#[error(transparent)]
pub struct HandOffError(Arc<BrokerError>);

struct Job {
    event: InboundEvent,
    shard: u16,
    done: oneshot::Sender<Result<(), HandOffError>>,
}

/// Group-commit settings.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    /// Most callbacks in one flush (and so in one inbound message).
    pub max_events: usize,
    /// Flushes awaiting their confirms at once; more arrivals wait and join the next. One is
    /// best on a single broker: RabbitMQ confirms a lone large message sooner than several
    /// small ones in a row, because a classic queue syncs to disk when its mailbox runs empty.
    pub in_flight: usize,
}

impl Default for Batching {
    fn default() -> Self {
        Self { max_events: 512, in_flight: 1 }
    }
}

impl Inbound {
    /// Starts the batcher. It ends when the last `Inbound` clone is dropped.
    pub fn new(broker: Broker, batching: Batching) -> Self {
        let (tx, rx) = mpsc::channel(8 * batching.max_events);
        tokio::spawn(batcher(broker.clone(), rx, batching));
        Self { jobs: tx, broker }
    }

    /// Returns once the broker has confirmed the event is stored in its chat's shard queue.
    pub async fn hand_off(&self, event: InboundEvent) -> Result<(), HandOffError> {
        let shard = self.broker.topology().shard_for(&event.event.chat_id);
        let (done, result) = oneshot::channel();
        let unavailable = || HandOffError(Arc::new(BrokerError::Unavailable));
        self.jobs.send(Job { event, shard, done }).await.map_err(|_| unavailable())?;
        result.await.unwrap_or_else(|_| Err(unavailable()))
    }
}

async fn batcher(broker: Broker, mut jobs: mpsc::Receiver<Job>, batching: Batching) {
    let slots = Arc::new(Semaphore::new(batching.in_flight));
    let mut arrived = Vec::with_capacity(batching.max_events);
    while jobs.recv_many(&mut arrived, batching.max_events).await > 0 {
        // Wait for a free slot; whatever arrives meanwhile joins this flush.
        let slot = slots.clone().acquire_owned().await.expect("semaphore is never closed");
        gather(&mut jobs, &mut arrived, batching.max_events).await;
        let batch = std::mem::replace(&mut arrived, Vec::with_capacity(batching.max_events));
        let broker = broker.clone();
        tokio::spawn(async move {
            flush(&broker, batch).await;
            drop(slot);
        });
    }
}

/// Takes whatever has arrived, lets the runtime run one pass (requests already read are about
/// to hand off too) and takes theirs. One pass, not "until nothing new arrives": on a
/// current-thread runtime that would hold the flush until every open request had been parsed,
/// leaving the broker idle meanwhile instead of overlapping its confirm with that work.
async fn gather(jobs: &mut mpsc::Receiver<Job>, arrived: &mut Vec<Job>, max: usize) {
    let drain = |jobs: &mut mpsc::Receiver<Job>, arrived: &mut Vec<Job>| {
        while arrived.len() < max {
            match jobs.try_recv() {
                Ok(job) => arrived.push(job),
                Err(_) => break,
            }
        }
    };
    drain(jobs, arrived);
    if arrived.len() < max {
        tokio::task::yield_now().await;
        drain(jobs, arrived);
    }
}

/// A hand-off slower than this is logged.
const SLOW_HAND_OFF: std::time::Duration = std::time::Duration::from_millis(250);

/// The events of one shard in a flush, and the callbacks waiting for them.
struct ShardMessage {
    shard: u16,
    queue: String,
    events: Vec<InboundEvent>,
    waiters: Vec<oneshot::Sender<Result<(), HandOffError>>>,
}

/// Publishes one message per shard present in `batch` and answers every waiter with the outcome
/// of the message that carried its event.
async fn flush(broker: &Broker, batch: Vec<Job>) {
    metrics::histogram!("groupwatch_handoff_batch_events").record(batch.len() as f64);
    let started = std::time::Instant::now();
    let mut messages: Vec<ShardMessage> = Vec::new();
    for Job { event, shard, done } in batch {
        let at = match messages.iter().position(|m| m.shard == shard) {
            Some(at) => at,
            None => {
                let queue = broker.topology().inbound_queue(shard);
                messages.push(ShardMessage { shard, queue, events: Vec::new(), waiters: Vec::new() });
                messages.len() - 1
            }
        };
        messages[at].events.push(event);
        messages[at].waiters.push(done);
    }
    let bodies: Vec<Vec<u8>> = messages
        .iter()
        .map(|m| serde_json::to_vec(&InboundBatchRef { events: &m.events }).expect("serialisable"))
        .collect();
    // The default exchange routes by queue name; `mandatory` turns a missing queue into an
    // error instead of a silent drop.
    let outgoing: Vec<Outgoing<'_>> = messages
        .iter()
        .zip(&bodies)
        .map(|(m, body)| {
            let mut properties = BasicProperties::default().with_content_type("application/json".into());
            if let [only] = m.events.as_slice() {
                properties = properties.with_message_id(only.key.as_str().into());
            }
            Outgoing { exchange: "", routing_key: &m.queue, payload: body, properties }
        })
        .collect();
    let outcome = broker.publish_batch(&outgoing).await.map_err(|e| HandOffError(Arc::new(e)));
    let took = started.elapsed();
    metrics::histogram!("groupwatch_handoff_seconds").record(took);
    // Every open callback waits for this confirm, so a slow broker (usually its disk syncing)
    // shows here first; the histogram says how often, the log says when.
    if took >= SLOW_HAND_OFF {
        let events: usize = messages.iter().map(|m| m.events.len()).sum();
        tracing::warn!(took_ms = took.as_millis() as u64, events, "slow hand-off: the broker was slow to confirm");
    }
    for m in messages {
        let result = match &outcome {
            Err(e) => Err(e.clone()),
            Ok(o) if o.unroutable.contains(&m.queue) => Err(HandOffError(Arc::new(BrokerError::Unroutable(m.queue)))),
            Ok(_) => Ok(()),
        };
        for waiter in m.waiters {
            // The caller may have gone (client disconnected); the event is queued all the same.
            let _ = waiter.send(result.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::wecom::xml::{parse_callback, Callback};

    /// The key as first written, with a temporary string per field: the streaming version must
    /// hash exactly the same bytes.
    fn reference_key(provider: Provider, tenant: &str, e: &ChangeExternalChat) -> String {
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

    #[test]
    fn dedupe_key_hashes_the_same_bytes_as_the_reference() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/wecom");
        let mut checked = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let xml = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            let Ok(Callback::ChangeExternalChat(mut e)) = parse_callback(&xml) else { continue };
            for members in [vec![], vec!["wm1".to_owned()], vec!["wm1".to_owned(), "wm2".to_owned(), "wm3".to_owned()]]
            {
                e.mem_change_list = members;
                assert_eq!(
                    InboundEvent::dedupe_key(Provider::Wecom, "acme", &e),
                    reference_key(Provider::Wecom, "acme", &e)
                );
                checked += 1;
            }
        }
        assert!(checked >= 18, "fixtures checked: {checked}");
    }
}
