//! AMQP out: member and group events to the topic exchange, persistent JSON, confirmed, with the
//! event id as `message_id` so consumers can deduplicate.

use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;
use std::time::Instant;

use crate::core::model::GroupEvent;
use crate::queue::broker::{Broker, BrokerError, Outgoing};

#[derive(Clone)]
pub struct Publisher {
    broker: Broker,
}

impl Publisher {
    pub fn new(broker: Broker) -> Self {
        Self { broker }
    }

    /// Publishes the events in order and returns once the broker has confirmed all of them.
    pub async fn publish(&self, events: &[GroupEvent]) -> Result<(), BrokerError> {
        if events.is_empty() {
            return Ok(());
        }
        let exchange = &self.broker.topology().exchange;
        let bodies: Vec<(String, Vec<u8>)> =
            events.iter().map(|e| (e.routing_key(), serde_json::to_vec(e).expect("events serialise"))).collect();
        let now = crate::core::clock::now_ms() as u64 / 1000;
        let messages: Vec<Outgoing> = events
            .iter()
            .zip(&bodies)
            .map(|(e, (routing_key, body))| {
                let mut headers = FieldTable::default();
                headers.insert("chat_id".into(), AMQPValue::LongString(e.chat_id.clone().into()));
                Outgoing {
                    exchange,
                    routing_key,
                    payload: body,
                    properties: BasicProperties::default()
                        .with_content_type("application/json".into())
                        .with_message_id(e.id.clone().into())
                        .with_type(e.event_type.as_str().into())
                        .with_app_id("groupwatch".into())
                        .with_timestamp(now)
                        .with_headers(headers),
                }
            })
            .collect();
        let started = Instant::now();
        let outcome = self.broker.publish_batch(&messages).await?;
        metrics::histogram!("groupwatch_publish_confirm_seconds").record(started.elapsed());
        for e in events {
            metrics::counter!("groupwatch_events_published_total", "type" => e.event_type.as_str()).increment(1);
        }
        for rk in outcome.unroutable {
            metrics::counter!("groupwatch_events_unroutable_total").increment(1);
            tracing::debug!(routing_key = rk, "event confirmed but no queue is bound for it");
        }
        Ok(())
    }
}
