//! `groupwatch reshard`: changes `amqp.inbound_shards` for a deployment that has work queued.
//!
//! A chat's shard is its hash modulo the count, so two counts on one exchange would put one
//! chat's work in two queues, consumed at once by two instances. The broker records the count
//! (the shard marker, see [`Topology::shards_marker`]) and refuses an instance with another. To
//! change it, every instance stops, then this:
//! 1. checks the marker records `from` and that no consumer is left on any inbound queue or on
//!    the intake queue;
//! 2. records the new count (from then on only instances with the new count start);
//! 3. moves every queued item to its chat's queue under the new count, the intake queue's last
//!    (they are the newest), each source message acked only after the broker confirmed its
//!    items' new copies (an interruption duplicates at worst; the workers skip what they
//!    already applied);
//! 4. deletes the queues the new count no longer has, once empty.
//!
//! Items move queue by queue in order, and all of one chat's items were in one queue, so each
//! chat keeps its order. Run again after an interruption (with the same `--from`): the marker
//! already says the new count, and the moves go on. A chat whose items the interruption split
//! between its old and its new queue may then see them out of order, which the workers handle as
//! they handle a vendor's own reordering (retried notifications arrive late too): the fetch, not
//! the order of notifications, decides what changed.

use lapin::options::{
    BasicAckOptions, BasicGetOptions, ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};
use std::collections::BTreeMap;

use crate::config::AmqpConfig;
use crate::queue::broker::{Broker, BrokerError, Topology};
use crate::queue::inbound;

#[derive(Debug, thiserror::Error)]
pub enum ReshardError {
    #[error("--from {from} is not the shard count recorded for exchange {exchange:?}{}", recorded.map(|n| format!(" ({n})")).unwrap_or_default())]
    WrongFrom { exchange: String, from: u16, recorded: Option<u16> },
    #[error("{queue} still has {consumers} consumer(s): stop every groupwatch instance on this exchange first")]
    Consumed { queue: String, consumers: u32 },
    #[error("{0} holds a message that is not an inbound batch; move it away and run again")]
    Undecodable(String),
    #[error("cannot reach RabbitMQ at amqp.url: {0}")]
    Connect(lapin::Error),
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("AMQP error: {0}")]
    Amqp(#[from] lapin::Error),
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReshardSummary {
    pub from: u16,
    pub to: u16,
    /// Source messages read and acked.
    pub messages: usize,
    /// Items they held, each now in its chat's queue under the new count.
    pub items: usize,
    /// Queues deleted because the new count no longer has them.
    pub deleted_queues: usize,
}

/// Moves the exchange `amqp` names from `from` inbound shards to `amqp.inbound_shards`.
pub async fn reshard(amqp: &AmqpConfig, from: u16) -> Result<ReshardSummary, ReshardError> {
    let to = amqp.inbound_shards;
    let new = Topology::from_config(amqp);
    let old = Topology { inbound_shards: from, ..new.clone() };
    let connection =
        Connection::connect(amqp.url.expose(), ConnectionProperties::default()).await.map_err(ReshardError::Connect)?;
    let channel = connection.create_channel().await?;

    // 1. The recorded count is `from`, or already `to` (a run that was interrupted).
    let recorded = match declare_marker(&connection, &old).await {
        Ok(()) => from,
        Err(BrokerError::TopologyMismatch { recorded, .. }) if recorded == Some(to) => to,
        Err(BrokerError::TopologyMismatch { recorded, .. }) => {
            return Err(ReshardError::WrongFrom { exchange: amqp.exchange.clone(), from, recorded })
        }
        Err(e) => return Err(e.into()),
    };
    let all = from.max(to);
    // The intake too: a forwarder with the old count would route by it.
    for queue in (0..all).map(|shard| new.inbound_queue(shard)).chain([new.intake_queue()]) {
        if let Some((_, consumers)) = passive(&connection, &queue).await? {
            if consumers > 0 {
                return Err(ReshardError::Consumed { queue, consumers });
            }
        }
    }

    // 2. Record the new count; the broker then refuses instances with the old one.
    if recorded != to {
        channel.exchange_delete(&new.shards_marker(), ExchangeDeleteOptions::default()).await?;
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let (broker, task) = Broker::start(amqp, stop.clone());
    let moved = async {
        broker.connected(std::time::Duration::from_secs(10)).await.map_err(|_| BrokerError::Unavailable)?;
        let mut summary = ReshardSummary { from, to, ..Default::default() };
        // 3. Move every item present now, queue by queue; what a queue receives meanwhile (items
        // moved into it) is behind the count taken at the start.
        // The intake last: its items are newer than any a forwarder already moved to a shard.
        for queue in (0..from).map(|shard| old.inbound_queue(shard)).chain([old.intake_queue()]) {
            let Some((waiting, _)) = passive(&connection, &queue).await? else { continue };
            for _ in 0..waiting {
                let Some(message) = channel.basic_get(&queue, BasicGetOptions::default()).await? else { break };
                let batch =
                    inbound::decode(&message.delivery.data).map_err(|_| ReshardError::Undecodable(queue.clone()))?;
                let mut by_shard: BTreeMap<u16, Vec<inbound::InboundEvent>> = BTreeMap::new();
                for item in batch.events {
                    by_shard.entry(new.shard_for(&item.chat_id)).or_default().push(item);
                }
                for (target, items) in by_shard {
                    summary.items += items.len();
                    broker
                        .publish("", &new.inbound_queue(target), &inbound::encode(&items), inbound::properties(&items))
                        .await?;
                }
                message.delivery.acker.ack(BasicAckOptions::default()).await?;
                summary.messages += 1;
            }
        }
        // 4. Shrinking: the queues past the new count are empty now.
        for shard in to..from {
            let queue = old.inbound_queue(shard);
            if passive(&connection, &queue).await?.is_some() {
                channel.queue_delete(&queue, QueueDeleteOptions { if_empty: true, ..Default::default() }).await?;
                summary.deleted_queues += 1;
            }
        }
        Ok::<_, ReshardError>(summary)
    }
    .await;
    stop.cancel();
    let _ = task.await;
    let _ = connection.close(200, "reshard done").await;
    moved
}

/// Declares the marker of `topology` on a channel of its own (a refusal closes the channel).
async fn declare_marker(connection: &Connection, topology: &Topology) -> Result<(), BrokerError> {
    let channel = connection.create_channel().await?;
    let result = topology.declare_marker(&channel).await;
    if result.is_ok() {
        let _ = channel.close(200, "ok").await;
    }
    result
}

/// A queue's (messages, consumers), or `None` when it does not exist; on a channel of its own,
/// since the broker closes the channel of a passive declaration that fails.
async fn passive(connection: &Connection, queue: &str) -> Result<Option<(u32, u32)>, lapin::Error> {
    let channel: Channel = connection.create_channel().await?;
    let options = QueueDeclareOptions { passive: true, ..Default::default() };
    match channel.queue_declare(queue, options, FieldTable::default()).await {
        Ok(q) => {
            let _ = channel.close(200, "ok").await;
            Ok(Some((q.message_count(), q.consumer_count())))
        }
        Err(lapin::Error::ProtocolError(_)) => Ok(None),
        Err(e) => Err(e),
    }
}
