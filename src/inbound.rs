//! The durable hand-off between the HTTP front door and the workers.
//!
//! A verified, parsed callback becomes an [`InboundEvent`] and is published, persistent and
//! confirmed, to the inbound queue of its chat's shard *before* WeCom gets its `success`.
//! The message body is a batch (`{"events": [...]}`) so that several callbacks can share one
//! broker round trip without changing the format.

use lapin::BasicProperties;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

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

/// Publishes inbound events to their shard's queue.
#[derive(Clone)]
pub struct Inbound {
    broker: Broker,
}

impl Inbound {
    pub fn new(broker: Broker) -> Self {
        Self { broker }
    }

    /// Returns once the broker has confirmed the event is stored in its inbound queue.
    pub async fn hand_off(&self, event: InboundEvent) -> Result<(), BrokerError> {
        let topology = self.broker.topology();
        let queue = topology.inbound_queue(topology.shard_for(&event.event.chat_id));
        let properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_message_id(event.key.as_str().into());
        let body = serde_json::to_vec(&InboundBatch { events: vec![event] }).expect("serialisable");
        // The default exchange routes by queue name; `mandatory` turns a missing queue into an
        // error instead of a silent drop.
        let started = std::time::Instant::now();
        let result = self.broker.publish("", &queue, &body, properties).await;
        metrics::histogram!("groupwatch_handoff_seconds").record(started.elapsed());
        result
    }
}
