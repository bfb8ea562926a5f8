//! The forwarder: moves the intake queue's items to their chats' shard queues.
//!
//! The front door hands every callback off to one intake queue (one message and one disk sync
//! per group commit, see [`crate::queue::inbound`]). Every `serve` instance runs a forwarder; the
//! intake queue's single-active-consumer lets one of them receive at a time, so the intake's
//! order is kept. It takes the messages that are ready (up to `PREFETCH`), regroups their items
//! by shard in arrival order (reading only what routes them; the worker decodes the rest, and
//! parks, alone, an item it cannot read), publishes one message per shard, and acks the intake messages only
//! once the broker has confirmed every copy. An interruption (a crash, a lost connection, a
//! refused publish) leaves them unacked, so the broker gives them again, in order, to whichever
//! forwarder is active: an item may reach its shard twice, never zero times. The first copies
//! keep the intake's order per chat; a second copy may come after newer items, and the worker
//! skips an item whose id it has already applied, or holds already in the same attempt (see
//! `worker::skip_applied`).

use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use crate::ops::Links;
use crate::queue::broker::{Broker, BrokerError, Link, Outgoing};
use crate::queue::dead;
use crate::queue::inbound;

/// Intake messages taken at once (each holds up to `amqp.handoff_max_batch` items).
const PREFETCH: u16 = 256;
/// Most intake bytes in one forward, so that a backlog (after an outage) is forwarded in pieces
/// each confirmed well within `amqp.confirm_timeout_ms`, rather than as one huge forward that
/// times out, is given again whole, and fails the same way each time.
const MAX_FORWARD_BYTES: usize = 4 << 20;
/// Under load, a forward starts at most this often, so that each carries many items per shard:
/// the broker syncs every queue a forward touches, and forwarding whatever was ready at once
/// made it sync all shards for one or two items each, slowing the intake's confirms (and so the
/// callbacks' answers) by a third. After a quiet spell the first item goes at once.
const INTERVAL: Duration = Duration::from_millis(25);
/// Most items in one shard message.
const MAX_ITEMS: usize = 512;
/// Pause before consuming again after a failure.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// The readiness link that is down while this instance cannot consume the intake queue.
pub const LINK: &str = "intake-forwarder";

/// Forwards until `stop`, across broker reconnects. `links` reports whether this instance's
/// consumer is registered (active, or standing by behind another instance's).
pub async fn run(broker: Broker, links: Arc<Links>, stop: CancellationToken) {
    let mut watch = broker.watch();
    loop {
        let link = tokio::select! {
            _ = stop.cancelled() => break,
            l = watch.wait_for(|l| l.is_some()) => match l {
                Ok(l) => l.clone().expect("checked by wait_for"),
                Err(_) => break,
            },
        };
        let ended = forward_while_linked(&broker, &link, &links, &stop).await;
        links.set(LINK, false);
        match ended {
            Ok(()) if stop.is_cancelled() => break,
            Ok(()) => {}
            Err(e) => {
                metrics::counter!("groupwatch_intake_forward_failures_total").increment(1);
                tracing::warn!(error = %e, "intake forwarding interrupted; its unacked messages go back to the intake queue");
            }
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(RETRY_AFTER) => {}
        }
    }
    links.set(LINK, false);
}

#[derive(Debug, thiserror::Error)]
enum ForwardError {
    #[error(transparent)]
    Amqp(#[from] lapin::Error),
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("the intake consumer was cancelled")]
    Cancelled,
}

/// Consumes the intake queue on a channel of its own until `stop` or until the consumer or the
/// channel fails; a forward under way is finished first (it is bounded by the confirm timeout).
/// The channel is closed on every way out, which returns its unacked messages to the queue.
async fn forward_while_linked(
    broker: &Broker,
    link: &Link,
    links: &Links,
    stop: &CancellationToken,
) -> Result<(), ForwardError> {
    let channel = link.connection.create_channel().await?;
    let result = async {
        channel.basic_qos(PREFETCH, BasicQosOptions::default()).await?;
        let queue = broker.topology().intake_queue();
        let mut consumer =
            channel.basic_consume(&queue, "", BasicConsumeOptions::default(), FieldTable::default()).await?;
        links.set(LINK, true);
        let mut last_start: Option<Instant> = None;
        loop {
            let first = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                next = consumer.next() => match next {
                    Some(delivery) => delivery?,
                    None => return Err(ForwardError::Cancelled),
                },
            };
            let mut ready = vec![first];
            if let Some(at) = last_start {
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    _ = tokio::time::sleep_until((at + INTERVAL).into()) => {}
                }
            }
            last_start = Some(Instant::now());
            // What has already arrived travels with it; a pass of the runtime lets more in.
            take_ready(&mut consumer, &mut ready)?;
            if ready.len() < PREFETCH as usize {
                tokio::task::yield_now().await;
                take_ready(&mut consumer, &mut ready)?;
            }
            forward(broker, &ready).await?;
            let last = ready.last().expect("at least the first");
            last.acker.ack(BasicAckOptions { multiple: true }).await?;
        }
    }
    .await;
    let _ = channel.close(200, "intake forwarder stopping").await;
    if let Err(e) = &result {
        if matches!(e, ForwardError::Amqp(_)) {
            link.mark_broken();
        }
    }
    result
}

fn take_ready(consumer: &mut lapin::Consumer, ready: &mut Vec<Delivery>) -> Result<(), lapin::Error> {
    let mut bytes: usize = ready.iter().map(|d| d.data.len()).sum();
    while ready.len() < PREFETCH as usize && bytes < MAX_FORWARD_BYTES {
        match consumer.next().now_or_never() {
            Some(Some(delivery)) => {
                let delivery = delivery?;
                bytes += delivery.data.len();
                ready.push(delivery);
            }
            _ => break,
        }
    }
    Ok(())
}

/// Publishes the items of `deliveries` to their shard queues, in order, and waits for every
/// confirm. Items are regrouped as they were queued, without decoding their reports: this runs on
/// the front door's runtime, between callbacks. A message that is not an inbound batch (or of a
/// newer format than this release reads) is parked in the dead-letter queue as it came: the
/// intake's order cannot wait behind it.
async fn forward(broker: &Broker, deliveries: &[Delivery]) -> Result<(), BrokerError> {
    let started = Instant::now();
    let topology = broker.topology();
    let mut by_shard: BTreeMap<u16, Vec<inbound::Routed<'_>>> = BTreeMap::new();
    let mut items = 0usize;
    let mut unreadable = Vec::new();
    for delivery in deliveries {
        match inbound::route(&delivery.data) {
            Ok(routed) => {
                for item in routed {
                    items += 1;
                    by_shard.entry(topology.shard_for(&item.chat_id)).or_default().push(item);
                }
            }
            Err(e) => unreadable.push((delivery, e)),
        }
    }
    let mut queues = Vec::new();
    let mut bodies = Vec::new();
    let mut properties = Vec::new();
    for (shard, routed) in &by_shard {
        for chunk in routed.chunks(MAX_ITEMS) {
            queues.push(topology.inbound_queue(*shard));
            bodies.push(inbound::encode_routed(chunk));
            properties.push(inbound::routed_properties(chunk));
        }
    }
    let outgoing: Vec<Outgoing<'_>> = queues
        .iter()
        .zip(&bodies)
        .zip(properties)
        .map(|((queue, body), properties)| Outgoing { exchange: "", routing_key: queue, payload: body, properties })
        .collect();
    broker.publish_to_queues(&outgoing).await?;
    // Parked once the items are safely on, so that a failed forward, given again, does not park
    // them twice.
    for (delivery, e) in unreadable {
        dead::park(broker, &delivery.data, &format!("intake: {e}"), None).await?;
    }
    metrics::counter!("groupwatch_intake_forwarded_total").increment(items as u64);
    metrics::histogram!("groupwatch_intake_forward_seconds").record(started.elapsed());
    Ok(())
}
