//! AMQP out: a chat's stored events to the topic exchange, persistent JSON, confirmed, in `seq`
//! order, with the event id as `message_id` so consumers can deduplicate.

use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

use crate::core::model::GroupKey;
use crate::queue::broker::{Broker, BrokerError, Outgoing};
use crate::store::OutboxEvent;

/// At most one warning about unroutable events per this long: a missing binding would otherwise
/// log once per event.
const UNROUTABLE_WARN_EVERY_MS: i64 = 60_000;

#[derive(Clone)]
pub struct Publisher {
    broker: Broker,
}

impl Publisher {
    pub fn new(broker: Broker) -> Self {
        Self { broker }
    }

    /// Publishes the chat's events, bodies exactly as stored, in order; returns once the broker
    /// has confirmed all of them.
    pub async fn publish(&self, key: &GroupKey, events: &[OutboxEvent]) -> Result<(), BrokerError> {
        if events.is_empty() {
            return Ok(());
        }
        let exchange = &self.broker.topology().exchange;
        let now = crate::core::clock::now_ms() as u64 / 1000;
        let messages: Vec<Outgoing> = events
            .iter()
            .map(|e| {
                let mut headers = FieldTable::default();
                headers.insert("chat_id".into(), AMQPValue::LongString(key.chat_id.clone().into()));
                headers.insert("seq".into(), AMQPValue::LongLongInt(e.seq));
                Outgoing {
                    exchange,
                    routing_key: &e.routing_key,
                    payload: e.body.as_bytes(),
                    properties: BasicProperties::default()
                        .with_content_type("application/json".into())
                        .with_message_id(e.id.clone().into())
                        .with_type(e.event_type.clone().into())
                        .with_app_id("groupwatch".into())
                        .with_timestamp(now)
                        .with_headers(headers),
                }
            })
            .collect();
        let started = Instant::now();
        let outcome = self.broker.publish_batch(&messages).await?;
        metrics::histogram!("groupwatch_publish_confirm_seconds", "provider" => key.provider.as_str())
            .record(started.elapsed());
        for e in events {
            metrics::counter!("groupwatch_events_published_total", "provider" => key.provider.as_str(),
                "type" => e.event_type.clone())
            .increment(1);
        }
        if !outcome.unroutable.is_empty() {
            metrics::counter!("groupwatch_events_unroutable_total", "provider" => key.provider.as_str())
                .increment(outcome.unroutable.len() as u64);
            warn_unroutable(&outcome.unroutable);
        }
        Ok(())
    }
}

/// Warns that events reached no queue, at most once a minute: the events are confirmed and
/// stored, but no consumer will ever see them.
fn warn_unroutable(routing_keys: &[String]) {
    static LAST_WARNED_MS: AtomicI64 = AtomicI64::new(0);
    let now = crate::core::clock::now_ms();
    let last = LAST_WARNED_MS.load(Ordering::Relaxed);
    if now - last >= UNROUTABLE_WARN_EVERY_MS
        && LAST_WARNED_MS.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    {
        tracing::warn!(routing_key = %routing_keys[0], count = routing_keys.len(),
            "events were published but no queue is bound for their routing key: no consumer will see them \
             (groupwatch_events_unroutable_total counts them; this warning repeats at most once a minute)");
    }
}
