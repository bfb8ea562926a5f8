//! The durable hand-off between the front door and the workers.
//!
//! A verified, parsed notification becomes an [`InboundEvent`]: provider-neutral reports about
//! one chat (vendor shapes never cross the queue). It is published, persistent and confirmed, to
//! the intake queue *before* the vendor gets its answer; the forwarder
//! ([`crate::queue::forward`]) then moves it to its chat's shard queue. Resync and the outbox
//! sweeper queue their requests the same way, so one consumer and one per-chat actor serialise
//! everything that touches a chat.
//!
//! A message body is a versioned batch (`{"v":2,"events":[...]}`): callbacks arriving together
//! share one broker round trip (group commit). Messages without `v` are the WeCom-only format of
//! the previous release, still read (see [`decode`]) so that an upgrade loses nothing queued.

use lapin::BasicProperties;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::core::model::Provider;
use crate::core::report::ChangeReport;
use crate::queue::broker::{Broker, BrokerError, Outgoing};

/// The format of the messages this release writes.
pub const FORMAT: u8 = 2;

/// What a queued item asks the chat's actor to do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Work {
    /// Apply the reports of a notification.
    #[default]
    Change,
    /// Look at the group and publish what differs from the stored snapshot (resync).
    Reconcile,
    /// Publish the chat's stored events that are still unpublished (the outbox sweeper).
    Drain,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundEvent {
    /// Unique per accepted notification or request: a broker redelivery carries the same id, a
    /// vendor's retry (a new request) a new one.
    #[serde(default)]
    pub id: String,
    pub provider: Provider,
    pub tenant: String,
    pub chat_id: String,
    /// When groupwatch accepted the notification or made the request (unix milliseconds).
    pub received_at_ms: i64,
    /// Identifies this notification: equal for a vendor's retries of it, different for distinct
    /// changes even within the same second.
    pub key: String,
    #[serde(default)]
    pub work: Work,
    /// Whether a repeat of `key` within the dedupe window may be skipped: the key names this
    /// change alone (WeCom: one naming members or a version change; two renames in one second
    /// share a key and must both be processed).
    #[serde(default)]
    pub dedupe: bool,
    /// `chat_id` is another name of the chat (DingTalk's `openConversationId`) that the front
    /// door could not map to its id: the worker maps it, or parks the item.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub by_alias: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reports: Vec<ChangeReport>,
}

impl InboundEvent {
    /// A notification's reports about one chat; `dedupe`: see the field.
    pub fn change(
        provider: Provider,
        tenant: &str,
        chat_id: &str,
        key: String,
        dedupe: bool,
        reports: Vec<ChangeReport>,
        received_at_ms: i64,
    ) -> Self {
        Self {
            id: new_id(),
            provider,
            tenant: tenant.to_owned(),
            chat_id: chat_id.to_owned(),
            received_at_ms,
            key,
            work: Work::Change,
            dedupe,
            by_alias: false,
            reports,
        }
    }

    /// A request without reports (reconcile or drain).
    pub fn request(work: Work, provider: Provider, tenant: &str, chat_id: &str, at_ms: i64) -> Self {
        let key = format!("{work:?}:{at_ms}").to_lowercase();
        Self {
            id: new_id(),
            provider,
            tenant: tenant.to_owned(),
            chat_id: chat_id.to_owned(),
            received_at_ms: at_ms,
            key,
            work,
            dedupe: false,
            by_alias: false,
            reports: Vec::new(),
        }
    }
}

fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundBatch {
    pub v: u8,
    pub events: Vec<InboundEvent>,
}

impl InboundBatch {
    pub fn new(events: Vec<InboundEvent>) -> Self {
        Self { v: FORMAT, events }
    }
}

/// [`InboundBatch`] as serialised, borrowing its events.
#[derive(Serialize)]
struct InboundBatchRef<'a> {
    v: u8,
    events: &'a [InboundEvent],
}

/// The body of a message holding `events`, in this release's format.
pub fn encode(events: &[InboundEvent]) -> Vec<u8> {
    serde_json::to_vec(&InboundBatchRef { v: FORMAT, events }).expect("serialisable")
}

/// Properties of a queued inbound message; one holding a single item carries its key as the
/// message id, for operators reading a queue.
pub fn properties(events: &[InboundEvent]) -> BasicProperties {
    properties_with_id(match events {
        [only] => Some(&only.key),
        _ => None,
    })
}

fn properties_with_id(message_id: Option<&str>) -> BasicProperties {
    let properties = BasicProperties::default().with_content_type("application/json".into());
    match message_id {
        Some(id) => properties.with_message_id(id.into()),
        None => properties,
    }
}

/// An item of a queued message as the forwarder reads it: what routes it, and its JSON as queued.
/// Its reports are not decoded here (most of an item's bytes and of the time to read it); the
/// worker decodes each item, and parks one it cannot read alone (see [`decode_items`]).
#[derive(Debug)]
pub struct Routed<'a> {
    pub chat_id: Cow<'a, str>,
    pub key: Cow<'a, str>,
    /// The item, as JSON in this release's format.
    pub json: Cow<'a, str>,
}

/// Reads the items of a queued message of this release's format (or of the previous one) far
/// enough to route them: the envelope, and each item's `chat_id` and `key`.
pub fn route(body: &[u8]) -> Result<Vec<Routed<'_>>, DecodeError> {
    #[derive(Deserialize)]
    struct Head<'a> {
        #[serde(borrow)]
        chat_id: Cow<'a, str>,
        #[serde(borrow)]
        key: Cow<'a, str>,
    }
    let envelope: RawBatch<'_> = serde_json::from_slice(body)?;
    match envelope.v {
        Some(FORMAT) => envelope
            .events
            .into_iter()
            .map(|item| {
                let head: Head<'_> = serde_json::from_str(item.get())?;
                Ok(Routed { chat_id: head.chat_id, key: head.key, json: Cow::Borrowed(item.get()) })
            })
            .collect(),
        Some(other) => Err(DecodeError::Unknown(other)),
        None => Ok(v1::decode(body)?
            .into_iter()
            .map(|e| Routed {
                json: Cow::Owned(serde_json::to_string(&e).expect("serialisable")),
                chat_id: Cow::Owned(e.chat_id),
                key: Cow::Owned(e.key),
            })
            .collect()),
    }
}

/// The body of a message holding `items`, in this release's format: [`encode`] of the decoded
/// items, without decoding them.
pub fn encode_routed(items: &[Routed<'_>]) -> Vec<u8> {
    batch_of_json(items.iter().map(|i| i.json.as_ref()))
}

/// A message body in this release's format holding `items`, each already JSON.
fn batch_of_json<'a>(items: impl Iterator<Item = &'a str> + Clone) -> Vec<u8> {
    let size = items.clone().map(|i| i.len() + 1).sum::<usize>();
    let mut body = Vec::with_capacity(size + 20);
    body.extend_from_slice(format!("{{\"v\":{FORMAT},\"events\":[").as_bytes());
    for (n, item) in items.enumerate() {
        if n > 0 {
            body.push(b',');
        }
        body.extend_from_slice(item.as_bytes());
    }
    body.extend_from_slice(b"]}");
    body
}

/// A queued message's envelope, its items left as JSON.
#[derive(Deserialize)]
struct RawBatch<'a> {
    v: Option<u8>,
    #[serde(borrow)]
    events: Vec<&'a RawValue>,
}

/// [`properties`] of a message holding `items`.
pub fn routed_properties(items: &[Routed<'_>]) -> BasicProperties {
    properties_with_id(match items {
        [only] => Some(&only.key),
        _ => None,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not an inbound batch: {0}")]
    Json(#[from] serde_json::Error),
    #[error("inbound format v{0} is newer than this release reads (v{FORMAT})")]
    Unknown(u8),
}

/// Reads a queued message of this release's format or of the previous one.
pub fn decode(body: &[u8]) -> Result<InboundBatch, DecodeError> {
    #[derive(Deserialize)]
    struct Probe {
        v: Option<u8>,
    }
    match serde_json::from_slice::<Probe>(body)?.v {
        Some(FORMAT) => Ok(serde_json::from_slice(body)?),
        Some(other) => Err(DecodeError::Unknown(other)),
        None => Ok(InboundBatch::new(v1::decode(body)?)),
    }
}

/// A queued message read item by item: what this release reads, and each item it cannot.
#[derive(Debug, Default)]
pub struct Items {
    pub events: Vec<InboundEvent>,
    pub unreadable: Vec<Unreadable>,
}

/// An item of a readable envelope that this release cannot read (a corrupt item, or one a newer
/// release wrote with a kind of work or report this one does not know).
#[derive(Debug)]
pub struct Unreadable {
    /// The item alone, as a message of this release's format: what is parked, and what
    /// `replay --dead-letters` reads once a release that understands it runs.
    pub body: Vec<u8>,
    /// Its chat, when at least that can be read (for the dead letter's headers).
    pub chat_id: Option<String>,
    pub error: serde_json::Error,
}

/// Reads a queued message as [`decode`] does, except that an unreadable item of a readable
/// envelope is set apart instead of failing the whole message: a shard message gathers the items
/// of many callbacks and chats, and one bad item must not hold the others up.
pub fn decode_items(body: &[u8]) -> Result<Items, DecodeError> {
    #[derive(Deserialize)]
    struct Chat {
        chat_id: String,
    }
    let envelope: RawBatch<'_> = serde_json::from_slice(body)?;
    match envelope.v {
        Some(FORMAT) => {
            let mut items = Items::default();
            for item in envelope.events {
                match serde_json::from_str::<InboundEvent>(item.get()) {
                    Ok(event) => items.events.push(event),
                    Err(error) => items.unreadable.push(Unreadable {
                        body: batch_of_json(std::iter::once(item.get())),
                        chat_id: serde_json::from_str::<Chat>(item.get()).ok().map(|c| c.chat_id),
                        error,
                    }),
                }
            }
            Ok(items)
        }
        // Whatever else is read (the previous format) or refused as `decode` does.
        _ => Ok(Items { events: decode(body)?.events, unreadable: Vec::new() }),
    }
}

/// The previous release's format: WeCom callbacks queued as parsed, `{"events": [{provider,
/// tenant, received_at_ms, key, event}]}`. Read for one release, so messages queued before an
/// upgrade are processed after it; remove with the release after.
mod v1 {
    use serde::Deserialize;

    use super::{InboundEvent, Work};
    use crate::core::model::Provider;
    use crate::provider::wecom::xml::ChangeExternalChat;

    #[derive(Deserialize)]
    struct Batch {
        events: Vec<Event>,
    }

    #[derive(Deserialize)]
    struct Event {
        provider: Provider,
        tenant: String,
        received_at_ms: i64,
        key: String,
        event: ChangeExternalChat,
    }

    pub(super) fn decode(body: &[u8]) -> Result<Vec<InboundEvent>, serde_json::Error> {
        let batch: Batch = serde_json::from_slice(body)?;
        Ok(batch
            .events
            .into_iter()
            .map(|e| InboundEvent {
                // The previous release gave items no id; its key names the callback.
                id: e.key.clone(),
                provider: e.provider,
                tenant: e.tenant,
                chat_id: e.event.chat_id.clone(),
                received_at_ms: e.received_at_ms,
                key: e.key,
                work: Work::Change,
                dedupe: crate::provider::wecom::callback::dedupable(&e.event),
                by_alias: false,
                reports: vec![crate::provider::wecom::report_of(&e.event)],
            })
            .collect())
    }
}

/// Publishes inbound events to the intake queue, group-committed: callbacks that arrive while
/// earlier flushes await their confirms travel together, in one message. Each callback's answer
/// waits for the confirm that covers it. At low load a flush is a single event and nothing waits
/// for a linger timer.
///
/// One queue rather than the shard queues directly: RabbitMQ syncs each queue a message touches,
/// so a flush spread over 16 shards cost about four times a flush to one queue (measured with
/// `examples/broker_ceiling`: 1.4 ms against 0.3 ms for 27 callbacks), and the callbacks waited
/// for it.
#[derive(Clone)]
pub struct Inbound {
    jobs: mpsc::Sender<Job>,
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
        tokio::spawn(batcher(broker, rx, batching));
        Self { jobs: tx }
    }

    /// Returns once the broker has confirmed the event is stored in the intake queue.
    pub async fn hand_off(&self, event: InboundEvent) -> Result<(), HandOffError> {
        let (done, result) = oneshot::channel();
        let unavailable = || HandOffError(Arc::new(BrokerError::Unavailable));
        self.jobs.send(Job { event, done }).await.map_err(|_| unavailable())?;
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

/// Publishes `batch` as one message to the intake queue and answers every waiter with the outcome.
async fn flush(broker: &Broker, batch: Vec<Job>) {
    metrics::histogram!("groupwatch_handoff_batch_events").record(batch.len() as f64);
    let started = std::time::Instant::now();
    let (events, waiters): (Vec<InboundEvent>, Vec<_>) = batch.into_iter().map(|j| (j.event, j.done)).unzip();
    let queue = broker.topology().intake_queue();
    let body = encode(&events);
    // The default exchange routes by queue name; `mandatory` turns a missing queue into an
    // error instead of a silent drop.
    let message = Outgoing { exchange: "", routing_key: &queue, payload: &body, properties: properties(&events) };
    let result = broker.publish_to_queues(std::slice::from_ref(&message)).await.map_err(|e| HandOffError(Arc::new(e)));
    let took = started.elapsed();
    metrics::histogram!("groupwatch_handoff_seconds").record(took);
    // Every open callback waits for this confirm, so a slow broker (usually its disk syncing)
    // shows here first; the histogram says how often, the log says when.
    if took >= SLOW_HAND_OFF {
        tracing::warn!(
            took_ms = took.as_millis() as u64,
            events = events.len(),
            "slow hand-off: the broker was slow to confirm"
        );
    }
    for waiter in waiters {
        // The caller may have gone (client disconnected); the event is queued all the same.
        let _ = waiter.send(result.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::report::ReportKind;
    use proptest::prelude::*;

    fn any_event() -> impl Strategy<Value = InboundEvent> {
        let text = || proptest::string::string_regex("(?s).{0,12}").expect("regex");
        let report = (any::<i64>(), 0..8usize, proptest::collection::vec(text(), 0..4), proptest::option::of(text()))
            .prop_map(|(at, kind, members, version)| {
                let kinds = [
                    ReportKind::Create,
                    ReportKind::MembersJoined,
                    ReportKind::MembersLeft,
                    ReportKind::NameChanged,
                    ReportKind::OwnerChanged,
                    ReportKind::NoticeChanged,
                    ReportKind::OtherUpdate,
                    ReportKind::Dismiss,
                ];
                let members: Vec<&str> = members.iter().map(String::as_str).collect();
                ChangeReport { member_version: version, ..ChangeReport::new(kinds[kind].clone(), at, &members) }
            });
        (text(), text(), text(), any::<bool>(), any::<bool>(), proptest::collection::vec(report, 0..3)).prop_map(
            |(tenant, chat_id, key, dedupe, by_alias, reports)| {
                let mut event = InboundEvent::change(Provider::Wecom, &tenant, &chat_id, key, dedupe, reports, 7);
                event.by_alias = by_alias;
                event
            },
        )
    }

    proptest! {
        /// The forwarder regroups items without decoding them: what it writes decodes to the same
        /// items, in the same order, whatever their text holds (quotes, escapes, any Unicode).
        #[test]
        fn routed_items_decode_as_they_were_queued(
            events in proptest::collection::vec(any_event(), 1..6),
            cut in 0..6usize,
        ) {
            let body = encode(&events);
            let routed = route(&body).expect("our own format");
            prop_assert_eq!(routed.len(), events.len());
            for (item, event) in routed.iter().zip(&events) {
                prop_assert_eq!(&item.chat_id, &event.chat_id);
                prop_assert_eq!(&item.key, &event.key);
            }
            prop_assert_eq!(encode_routed(&routed), body.clone(), "items are copied as queued");
            let cut = cut.min(routed.len());
            let (first, second) = routed.split_at(cut);
            let mut again = Vec::new();
            for part in [first, second] {
                if !part.is_empty() {
                    again.extend(decode(&encode_routed(part)).expect("decodable").events);
                }
            }
            prop_assert_eq!(again, events);
        }
    }

    #[test]
    fn a_single_routed_item_carries_its_key_as_message_id() {
        let event = InboundEvent::change(Provider::Wecom, "t", "wr1", "the-key".into(), true, Vec::new(), 7);
        let body = encode(std::slice::from_ref(&event));
        let routed = route(&body).unwrap();
        assert_eq!(routed_properties(&routed), properties(std::slice::from_ref(&event)));
        assert_eq!(routed_properties(&routed).message_id().as_ref().map(|id| id.as_str()), Some("the-key"));
    }

    #[test]
    fn the_previous_format_is_routed_as_this_one() {
        let body = br#"{"events":[{"provider":"wecom","tenant":"t","received_at_ms":5,"key":"k1",
            "event":{"create_time":9,"chat_id":"wrOLD","change_type":"update","update_detail":"add_member","mem_change_list":["u1"]}}]}"#;
        let routed = route(body).expect("the previous format");
        assert_eq!(routed.len(), 1);
        assert_eq!(routed[0].chat_id, "wrOLD");
        let again = decode(&encode_routed(&routed)).expect("decodable").events;
        assert_eq!(again, decode(body).expect("decodable").events);
    }

    proptest! {
        /// One unreadable item among readable ones is set apart alone, as a one-item message of
        /// its own JSON; the others decode as queued, in order.
        #[test]
        fn an_unreadable_item_is_set_apart_and_the_rest_decode(
            events in proptest::collection::vec(any_event(), 0..5),
            at in 0..5usize,
            bad in prop_oneof![
                Just(r#"{"chat_id":"wrBAD","key":"k","provider":"wecom","tenant":"t","received_at_ms":1,"work":"teleport"}"#),
                Just(r#"{"chat_id":"wrBAD","key":"k","provider":"nowhere","tenant":"t","received_at_ms":1}"#),
                Just(r#"{"chat_id":"wrBAD","reports":"not a list"}"#),
                Just(r#"{"key":"no chat"}"#),
                Just("17"),
            ],
        ) {
            let body = encode(&events);
            let mut items: Vec<String> = route(&body).unwrap().into_iter().map(|r| r.json.into_owned()).collect();
            let at = at.min(items.len());
            items.insert(at, bad.to_owned());
            let body = format!("{{\"v\":2,\"events\":[{}]}}", items.join(","));
            let read = decode_items(body.as_bytes()).expect("a readable envelope");
            prop_assert_eq!(&read.events, &events);
            prop_assert_eq!(read.unreadable.len(), 1);
            let parked = &read.unreadable[0];
            prop_assert_eq!(String::from_utf8(parked.body.clone()).unwrap(), format!("{{\"v\":2,\"events\":[{bad}]}}"));
            prop_assert_eq!(parked.chat_id.as_deref(), bad.contains("wrBAD").then_some("wrBAD"));
            prop_assert!(decode(body.as_bytes()).is_err(), "decode refuses the message whole");
        }
    }

    #[test]
    fn decode_items_reads_and_refuses_envelopes_as_decode_does() {
        let old = br#"{"events":[{"provider":"wecom","tenant":"t","received_at_ms":5,"key":"k1",
            "event":{"create_time":9,"chat_id":"wrOLD","change_type":"update","update_detail":"add_member","mem_change_list":["u1"]}}]}"#;
        let read = decode_items(old).expect("the previous format");
        assert_eq!(read.events, decode(old).unwrap().events);
        assert!(read.unreadable.is_empty());
        assert!(matches!(decode_items(br#"{"v":3,"events":[]}"#), Err(DecodeError::Unknown(3))));
        for refused in [&br#"{"not":"a batch"}"#[..], br#"{"v":2}"#, br#"{"v":2,"events":{}}"#, b"[1]", b""] {
            assert!(decode_items(refused).is_err(), "{}", String::from_utf8_lossy(refused));
        }
    }

    #[test]
    fn what_cannot_be_routed_is_refused() {
        assert!(matches!(route(br#"{"v":3,"events":[]}"#), Err(DecodeError::Unknown(3))));
        assert!(route(br#"{"not":"a batch"}"#).is_err());
        assert!(route(br#"{"v":2,"events":[{"key":"k"}]}"#).is_err(), "an item without chat_id");
        assert!(route(br#"{"v":2,"events":[{"chat_id":"c","key":1}]}"#).is_err(), "a key that is not text");
        assert!(route(br#"{"v":2,"events":[1]}"#).is_err());
    }
}
