//! Parked work: `{exchange}.dead` holds inbound items that could not be processed, with the
//! reason in their headers, and [`redrive`] moves them back to the inbound shards once the cause
//! is fixed. Both directions live here, so the format parked is the format redriven.

use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;

use crate::queue::broker::{Broker, BrokerError};
use crate::queue::inbound::{self, InboundBatch, InboundEvent};

/// Publishes a failed inbound item (or, with `item` absent, an undecodable message as it came)
/// to `{exchange}.dead` with the reason in its headers.
pub async fn park(broker: &Broker, body: &[u8], reason: &str, item: Option<&InboundEvent>) -> Result<(), BrokerError> {
    let names = item.map(|e| (e.provider.as_str(), e.tenant.as_str(), e.chat_id.as_str()));
    publish_dead(broker, body, reason, names.map(|(p, t, _)| (p, t)), names.map(|(_, _, c)| c)).await
}

/// Parks an item this release cannot read, alone, with its chat in the headers when known.
pub async fn park_unreadable(broker: &Broker, item: &inbound::Unreadable, reason: &str) -> Result<(), BrokerError> {
    publish_dead(broker, &item.body, reason, None, item.chat_id.as_deref()).await
}

async fn publish_dead(
    broker: &Broker,
    body: &[u8],
    reason: &str,
    tenant: Option<(&str, &str)>,
    chat_id: Option<&str>,
) -> Result<(), BrokerError> {
    let topology = broker.topology();
    let mut headers = FieldTable::default();
    headers.insert("x-groupwatch-reason".into(), AMQPValue::LongString(reason.to_owned().into()));
    headers.insert("x-groupwatch-failed-at".into(), AMQPValue::LongLongInt(crate::core::clock::now_ms()));
    if let Some((provider, tenant)) = tenant {
        headers.insert("x-groupwatch-provider".into(), AMQPValue::LongString(provider.to_owned().into()));
        headers.insert("x-groupwatch-tenant".into(), AMQPValue::LongString(tenant.to_owned().into()));
    }
    if let Some(chat_id) = chat_id {
        headers.insert("x-groupwatch-chat-id".into(), AMQPValue::LongString(chat_id.to_owned().into()));
    }
    let properties = BasicProperties::default().with_content_type("application/json".into()).with_headers(headers);
    broker.publish("", &topology.dead_letter_queue(), body, properties).await?;
    metrics::counter!("groupwatch_dead_letters_total").increment(1);
    tracing::error!(reason, tenant = tenant.map(|(_, t)| t), chat_id, "work moved to the dead-letter queue");
    Ok(())
}

/// Parks one inbound item in a message of its own.
pub async fn park_item(broker: &Broker, item: &InboundEvent, reason: &str) -> Result<(), BrokerError> {
    let body = serde_json::to_vec(&InboundBatch::new(vec![item.clone()])).expect("serialisable");
    park(broker, &body, reason, Some(item)).await
}

/// What `replay --dead-letters` did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RedriveSummary {
    /// Dead-lettered messages moved back to the inbound queues.
    pub messages: usize,
    /// Items they held.
    pub events: usize,
    /// Messages left in the dead-letter queue because they are not batches this release reads
    /// (such as a parked item that only a newer release understands).
    pub left: usize,
}

/// Moves every message of `{exchange}.dead` back to the inbound queue of its chat's shard, once
/// the cause (a wrong secret, a missing permission, ...) has been fixed. Each message is acked in
/// the dead-letter queue only after the broker confirmed its re-injection, so nothing is lost if
/// this is interrupted. Messages that are not inbound batches (of this release's format or the
/// previous one) stay where they are.
pub async fn redrive(amqp: &crate::config::AmqpConfig) -> anyhow::Result<RedriveSummary> {
    let stop = tokio_util::sync::CancellationToken::new();
    let (broker, task) = Broker::start(amqp, stop.clone());
    let link = broker
        .connected(std::time::Duration::from_secs(10))
        .await
        .map_err(|_| anyhow::anyhow!("cannot reach RabbitMQ at amqp.url"))?;
    let topology = broker.topology().clone();
    let dead = topology.dead_letter_queue();
    let channel = link.connection.create_channel().await?;
    // Bounded by what is there now: messages left behind are requeued and must not loop forever.
    let waiting = channel
        .queue_declare(&dead, QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default())
        .await?
        .message_count();
    let mut summary = RedriveSummary::default();
    for _ in 0..waiting {
        let Some(message) = channel.basic_get(&dead, BasicGetOptions::default()).await? else { break };
        let batch = match inbound::decode(&message.delivery.data) {
            Ok(b) => b,
            Err(_) => {
                summary.left += 1;
                message.delivery.acker.nack(BasicNackOptions { requeue: true, ..Default::default() }).await?;
                continue;
            }
        };
        for event in batch.events {
            let queue = topology.inbound_queue(topology.shard_for(&event.chat_id));
            let properties = BasicProperties::default()
                .with_content_type("application/json".into())
                .with_message_id(event.key.as_str().into());
            let body = serde_json::to_vec(&InboundBatch::new(vec![event]))?;
            broker.publish("", &queue, &body, properties).await?;
            summary.events += 1;
        }
        message.delivery.acker.ack(BasicAckOptions::default()).await?;
        summary.messages += 1;
    }
    stop.cancel();
    let _ = task.await;
    Ok(summary)
}
