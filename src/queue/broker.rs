//! The one owner of the AMQP connection.
//!
//! A supervisor task connects, declares the topology, enables publisher confirms and hands the
//! live [`Link`] to everyone through a `watch` channel. When the connection dies it clears the
//! link (publishers answer "unavailable" at once, so callbacks get 503 and WeCom retries), backs
//! off and starts over. lapin's own auto-recovery is not used: it is reported not to survive a
//! broker restart.

use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::publisher_confirm::Confirmation;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::config::AmqpConfig;

/// A link that stayed up this long resets the reconnect backoff.
const STABLE_LINK: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("broker is not connected")]
    Unavailable,
    #[error("broker did not confirm within {0:?}")]
    ConfirmTimeout(Duration),
    #[error("broker refused the message (nack)")]
    Nacked,
    #[error("message was unroutable (no queue bound for {0:?})")]
    Unroutable(String),
    #[error("AMQP error: {0}")]
    Amqp(#[from] lapin::Error),
    /// The exchange's shard marker records another `amqp.inbound_shards`: another instance
    /// shards chats differently, and both together would split a chat across queues. Not
    /// retried: it needs an operator.
    #[error(
        "amqp.inbound_shards = {shards} differs from the {} recorded for exchange {exchange:?} (by an instance \
         that ran before): every instance on one exchange must use the same value. Keep the recorded count in \
         amqp.inbound_shards, or stop every instance and run `groupwatch reshard --config FILE --from N` to move \
         the queued work to {shards} shards; the broker said: {reply}",
        recorded.map_or("shard count".to_owned(), |n| format!("{n} shards"))
    )]
    TopologyMismatch { exchange: String, shards: u16, recorded: Option<u16>, reply: String },
}

/// Names of everything groupwatch declares, all under the configured exchange name so two
/// deployments with different exchange names never share a queue.
#[derive(Debug, Clone)]
pub struct Topology {
    pub exchange: String,
    pub declare_default_queues: bool,
    pub inbound_shards: u16,
}

pub const MEMBER_EVENT_TYPES: [&str; 2] = ["member.join", "member.leave"];

impl Topology {
    pub fn from_config(cfg: &AmqpConfig) -> Self {
        Self {
            exchange: cfg.exchange.clone(),
            declare_default_queues: cfg.declare_default_queues,
            inbound_shards: cfg.inbound_shards,
        }
    }

    /// Where the front door hands off: one queue, so that a group commit is one message and one
    /// disk sync at the broker whatever the number of shards. The forwarder
    /// ([`crate::queue::forward`]) moves its items to their chats' shard queues.
    pub fn intake_queue(&self) -> String {
        format!("{}.intake", self.exchange)
    }

    /// Inbound events are sharded by chat so that one consumer owns each chat's order.
    pub fn inbound_queue(&self, shard: u16) -> String {
        format!("{}.inbound.{shard}", self.exchange)
    }

    pub fn inbound_queues(&self) -> impl Iterator<Item = String> + '_ {
        (0..self.inbound_shards).map(|s| self.inbound_queue(s))
    }

    pub fn shard_for(&self, chat_id: &str) -> u16 {
        // FNV-1a: stable across processes and versions (std's hasher is randomly seeded).
        let mut h: u32 = 0x811c_9dc5;
        for b in chat_id.bytes() {
            h ^= b as u32;
            h = h.wrapping_mul(0x0100_0193);
        }
        (h % self.inbound_shards as u32) as u16
    }

    /// Every queue this topology may declare: the intake, the shards, the dead-letter queue and
    /// the default member queues (for tools and tests that remove what they made).
    pub fn queues(&self) -> Vec<String> {
        let mut queues = vec![self.intake_queue()];
        queues.extend(self.inbound_queues());
        queues.push(self.dead_letter_queue());
        queues.extend(MEMBER_EVENT_TYPES.iter().map(|t| self.default_queue(t)));
        queues
    }

    pub fn default_queue(&self, event_type: &str) -> String {
        format!("{}.{event_type}", self.exchange)
    }

    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dead", self.exchange)
    }

    /// An exchange that only records the shard count, in its `alternate-exchange` argument
    /// (`{exchange}.inbound.shards-N`, an exchange that need not exist: nothing is ever
    /// published to the marker). RabbitMQ compares that argument when an exchange is declared
    /// again and refuses a difference, which makes it a cluster-wide check of the count. Queue
    /// arguments cannot do this: RabbitMQ ignores arguments it does not know (such as an
    /// `x-groupwatch-shards`) when it compares a redeclaration.
    pub fn shards_marker(&self) -> String {
        format!("{}.inbound.shards", self.exchange)
    }

    /// The shard count in the broker's refusal of a marker declaration, which quotes the marker's
    /// current `alternate-exchange` (`'{exchange}.inbound.shards-N'`).
    pub fn recorded_shards(&self, reply: &str) -> Option<u16> {
        let prefix = format!("{}-", self.shards_marker());
        reply
            .match_indices(&prefix)
            .filter_map(|(at, _)| {
                let digits: String = reply[at + prefix.len()..].chars().take_while(char::is_ascii_digit).collect();
                digits.parse().ok()
            })
            .find(|n| *n != self.inbound_shards)
    }

    /// Declares the shard marker with this topology's count; refused (as
    /// [`BrokerError::TopologyMismatch`]) when the broker records another.
    pub async fn declare_marker(&self, channel: &Channel) -> Result<(), BrokerError> {
        let durable_exchange = ExchangeDeclareOptions { durable: true, ..Default::default() };
        let mut marker_args = FieldTable::default();
        let recorded = format!("{}-{}", self.shards_marker(), self.inbound_shards);
        marker_args.insert("alternate-exchange".into(), AMQPValue::LongString(recorded.into()));
        channel
            .exchange_declare(&self.shards_marker(), ExchangeKind::Fanout, durable_exchange, marker_args)
            .await
            .map_err(|e| match e {
                lapin::Error::ProtocolError(ref amqp)
                    if matches!(amqp.kind(), AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED)) =>
                {
                    let reply = amqp.get_message().to_string();
                    BrokerError::TopologyMismatch {
                        exchange: self.exchange.clone(),
                        shards: self.inbound_shards,
                        recorded: self.recorded_shards(&reply),
                        reply,
                    }
                }
                other => other.into(),
            })?;
        Ok(())
    }

    /// Declares the exchange, the intake queue, the inbound shard queues, the dead-letter queue and (optionally) the
    /// default member queues. Idempotent; every instance runs it on every (re)connect.
    pub async fn declare(&self, channel: &Channel) -> Result<(), BrokerError> {
        let durable_exchange = ExchangeDeclareOptions { durable: true, ..Default::default() };
        channel.exchange_declare(&self.exchange, ExchangeKind::Topic, durable_exchange, FieldTable::default()).await?;
        self.declare_marker(channel).await?;
        let durable = QueueDeclareOptions { durable: true, ..Default::default() };
        let mut inbound_args = FieldTable::default();
        // Only one consumer across all instances receives a shard at a time: per-chat order
        // and single processing hold however many instances run.
        inbound_args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        // One forwarder at a time, too: the intake's order is every chat's order.
        channel.queue_declare(&self.intake_queue(), durable, inbound_args.clone()).await?;
        for queue in self.inbound_queues() {
            channel.queue_declare(&queue, durable, inbound_args.clone()).await?;
        }
        channel.queue_declare(&self.dead_letter_queue(), durable, FieldTable::default()).await?;
        if self.declare_default_queues {
            for event_type in MEMBER_EVENT_TYPES {
                let queue = self.default_queue(event_type);
                channel.queue_declare(&queue, durable, FieldTable::default()).await?;
                channel
                    .queue_bind(
                        &queue,
                        &self.exchange,
                        &format!("*.*.{event_type}"),
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await?;
            }
        }
        Ok(())
    }
}

/// A live connection and the confirm-mode channel used for publishing.
#[derive(Clone)]
pub struct Link {
    pub connection: Arc<Connection>,
    pub publish: Channel,
    /// Fired by anyone who sees the link fail, so the supervisor reconnects without waiting for
    /// the heartbeat to notice.
    broken: Arc<Notify>,
}

impl Link {
    pub fn mark_broken(&self) {
        self.broken.notify_one();
    }
}

#[derive(Clone)]
pub struct Broker {
    url: crate::config::Secret,
    /// Shared: a broker is cloned into every flush and worker.
    topology: Arc<Topology>,
    confirm_timeout: Duration,
    link: watch::Receiver<Option<Link>>,
    /// Set once, when the supervisor gives up for a reason no reconnect can fix.
    fatal: watch::Receiver<Option<Arc<str>>>,
}

impl Broker {
    /// Starts the supervisor. The returned broker is usable at once; until the first connection
    /// succeeds it reports [`BrokerError::Unavailable`].
    pub fn start(cfg: &AmqpConfig, shutdown: CancellationToken) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = watch::channel(None);
        let (fatal_tx, fatal) = watch::channel(None);
        let broker = Self {
            url: cfg.url.clone(),
            topology: Arc::new(Topology::from_config(cfg)),
            confirm_timeout: Duration::from_millis(cfg.confirm_timeout_ms),
            link: rx,
            fatal,
        };
        let task = tokio::spawn(broker.clone().supervise(tx, fatal_tx, shutdown));
        (broker, task)
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    pub fn current(&self) -> Option<Link> {
        self.link.borrow().clone()
    }

    pub fn is_connected(&self) -> bool {
        self.link.borrow().as_ref().is_some_and(|l| l.connection.status().connected())
    }

    /// Resolves, with the reason, if the supervisor gives up for good (see
    /// [`BrokerError::TopologyMismatch`]); never otherwise.
    pub async fn failed(&self) -> Arc<str> {
        let mut fatal = self.fatal.clone();
        let reason = fatal.wait_for(Option::is_some).await.ok().and_then(|r| r.clone());
        match reason {
            Some(reason) => reason,
            None => std::future::pending().await,
        }
    }

    /// A receiver that changes every time the link is replaced or lost.
    pub fn watch(&self) -> watch::Receiver<Option<Link>> {
        self.link.clone()
    }

    /// Waits until a link is up (or `timeout` passes).
    pub async fn connected(&self, timeout: Duration) -> Result<Link, BrokerError> {
        let mut rx = self.link.clone();
        let wait = async move { rx.wait_for(|l| l.is_some()).await.map(|l| l.clone()) };
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(Some(link))) => Ok(link),
            _ => Err(BrokerError::Unavailable),
        }
    }

    async fn supervise(
        self,
        tx: watch::Sender<Option<Link>>,
        fatal: watch::Sender<Option<Arc<str>>>,
        shutdown: CancellationToken,
    ) {
        let mut backoff = Duration::from_millis(200);
        loop {
            let attempt = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = self.open_link() => r,
            };
            match attempt {
                Ok(link) => {
                    let connected_at = std::time::Instant::now();
                    metrics::gauge!("groupwatch_broker_connected").set(1.0);
                    tracing::info!(exchange = %self.topology.exchange, "connected to the broker");
                    let broken = link.broken.clone();
                    let connection = link.connection.clone();
                    let publish = link.publish.clone();
                    tx.send_replace(Some(link));
                    tokio::select! {
                        _ = shutdown.cancelled() => {
                            tx.send_replace(None);
                            let _ = publish.close(200, "groupwatch shutting down").await;
                            let _ = connection.close(200, "groupwatch shutting down").await;
                            // lapin reads the socket on a thread of its own; one that outlives
                            // the runtime logs an I/O error on a clean exit. Wait for it.
                            match Arc::try_unwrap(connection) {
                                Ok(connection) => {
                                    let io_thread = tokio::task::spawn_blocking(move || connection.run());
                                    let _ = tokio::time::timeout(Duration::from_secs(2), io_thread).await;
                                }
                                Err(_) => tracing::debug!("broker connection still shared at shutdown"),
                            }
                            break;
                        }
                        _ = broken.notified() => {}
                    }
                    tx.send_replace(None);
                    // A link that broke at once (a broker refusing our topology, say) must not
                    // reset the backoff, or the reconnects would spin at the first delay.
                    if connected_at.elapsed() >= STABLE_LINK {
                        backoff = Duration::from_millis(200);
                    }
                    metrics::gauge!("groupwatch_broker_connected").set(0.0);
                    metrics::counter!("groupwatch_broker_reconnects_total").increment(1);
                    tracing::warn!("broker connection lost; reconnecting");
                    let _ = connection.close(320, "reconnecting").await;
                }
                Err(e @ BrokerError::TopologyMismatch { .. }) => {
                    tracing::error!(error = %e, "the broker's queues do not match this instance's configuration");
                    fatal.send_replace(Some(e.to_string().into()));
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "cannot connect to the broker");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
        tx.send_replace(None);
    }

    async fn open_link(&self) -> Result<Link, BrokerError> {
        let props = ConnectionProperties::default()
            .with_executor(tokio_executor_trait::Tokio::current())
            .with_reactor(tokio_reactor_trait::Tokio)
            .with_connection_name("groupwatch".into());
        let connection = Connection::connect(self.url.expose(), props).await?;
        let broken = Arc::new(Notify::new());
        let on_error = broken.clone();
        connection.on_error(move |_| on_error.notify_one());
        let channel = connection.create_channel().await?;
        if let Err(e) = self.topology.declare(&channel).await {
            let _ = connection.close(200, "topology declaration failed").await;
            return Err(e);
        }
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok(Link { connection: Arc::new(connection), publish: channel, broken })
    }

    /// [`Broker::publish_batch`] to our own queues (the default exchange, routed by queue name):
    /// a message that bounced because its queue is gone (deleted by hand, or a broker reset
    /// without definitions) makes the topology be declared again and is sent once more; one
    /// that bounces again is an error.
    pub async fn publish_to_queues(&self, messages: &[Outgoing<'_>]) -> Result<(), BrokerError> {
        let outcome = self.publish_batch(messages).await?;
        if outcome.unroutable.is_empty() {
            return Ok(());
        }
        tracing::error!(queues = ?outcome.unroutable, "a queue is missing; re-declaring the topology");
        metrics::counter!("groupwatch_topology_redeclared_total").increment(1);
        self.redeclare().await?;
        let retry: Vec<Outgoing<'_>> =
            messages.iter().filter(|m| outcome.unroutable.iter().any(|q| q == m.routing_key)).cloned().collect();
        match self.publish_batch(&retry).await?.unroutable.into_iter().next() {
            Some(queue) => Err(BrokerError::Unroutable(queue)),
            None => Ok(()),
        }
    }

    /// Declares the topology again on the live link (a queue was deleted while running).
    pub async fn redeclare(&self) -> Result<(), BrokerError> {
        let link = self.current().ok_or(BrokerError::Unavailable)?;
        self.topology.declare(&link.publish).await.inspect_err(|_| link.mark_broken())
    }

    /// Publishes one persistent message with `mandatory` set and waits for the broker's confirm.
    /// Success means the broker has the message in at least one queue.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        payload: &[u8],
        properties: BasicProperties,
    ) -> Result<(), BrokerError> {
        let outcome = self.publish_batch(&[Outgoing { exchange, routing_key, payload, properties }]).await?;
        match outcome.unroutable.into_iter().next() {
            Some(rk) => Err(BrokerError::Unroutable(rk)),
            None => Ok(()),
        }
    }

    /// Publishes persistent messages in order on the confirm channel, then waits for every
    /// confirm. Unroutable messages (no queue bound) are reported, not failed: for the event
    /// exchange that only means nobody subscribed to that routing key.
    pub async fn publish_batch(&self, messages: &[Outgoing<'_>]) -> Result<BatchOutcome, BrokerError> {
        let link = self.current().ok_or(BrokerError::Unavailable)?;
        let send_all = async {
            let mut confirms = Vec::with_capacity(messages.len());
            // Sent one after another so that messages for one queue keep their order.
            for m in messages {
                let confirm = link
                    .publish
                    .basic_publish(
                        m.exchange,
                        m.routing_key,
                        BasicPublishOptions { mandatory: true, ..Default::default() },
                        m.payload,
                        m.properties.clone().with_delivery_mode(2),
                    )
                    .await?;
                confirms.push(confirm);
            }
            let mut results = Vec::with_capacity(confirms.len());
            for c in confirms {
                results.push(c.await?);
            }
            Ok::<_, lapin::Error>(results)
        };
        let results = match tokio::time::timeout(self.confirm_timeout, send_all).await {
            Err(_) => return Err(BrokerError::ConfirmTimeout(self.confirm_timeout)),
            Ok(Err(e)) => {
                // A channel-level error (e.g. a missing exchange) closes the channel for good.
                link.mark_broken();
                return Err(e.into());
            }
            Ok(Ok(results)) => results,
        };
        let mut outcome = BatchOutcome::default();
        for (m, result) in messages.iter().zip(results) {
            match result {
                Confirmation::Ack(None) => {}
                Confirmation::Ack(Some(_returned)) => outcome.unroutable.push(m.routing_key.to_owned()),
                Confirmation::Nack(_) => return Err(BrokerError::Nacked),
                Confirmation::NotRequested => unreachable!("the publish channel is in confirm mode"),
            }
        }
        Ok(outcome)
    }
}

/// One message for [`Broker::publish_batch`].
#[derive(Clone)]
pub struct Outgoing<'a> {
    pub exchange: &'a str,
    pub routing_key: &'a str,
    pub payload: &'a [u8],
    pub properties: BasicProperties,
}

#[derive(Debug, Default)]
pub struct BatchOutcome {
    /// Routing keys of confirmed messages that no queue was bound for.
    pub unroutable: Vec<String>,
}
