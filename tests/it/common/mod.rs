//! Test harness: spawns the real application on a random port against the real RabbitMQ,
//! each test with its own exchange name (so its own queues), and cleans up after itself.
#![allow(dead_code)]

pub mod config;
pub mod dingtalk;
pub mod harness;
pub mod proxy;
pub mod scenario;
pub mod serve;
pub mod tim;

#[allow(unused_imports)]
pub use config::TestConfig;
#[allow(unused_imports)]
pub use harness::*;
#[allow(unused_imports)]
pub use scenario::*;

pub(crate) use crate::schema_support;

use groupwatch::app::Application;
use groupwatch::config::Config;
use groupwatch::queue::broker::Topology;
use groupwatch::queue::inbound::{InboundBatch, InboundEvent};
use lapin::options::{BasicGetOptions, ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use std::net::SocketAddr;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const TENANT: &str = "acme";
pub const CORP_ID: &str = "ww1234567890abcdef";
pub const TOKEN: &str = "QDG6eK";
pub const AES_KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";

pub fn amqp_url() -> String {
    std::env::var("GROUPWATCH_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

pub fn unique_exchange() -> String {
    format!("gwtest-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// A config for one test: fresh exchange, random port, worker off unless the test turns it on.
pub fn test_config(exchange: &str, extra_toml: &str) -> String {
    let store = format!("sqlite://{}", std::env::temp_dir().join(format!("{exchange}.db")).display());
    test_config_with_store(exchange, &store, extra_toml)
}

/// [`TestConfig::new`] with raw TOML appended (for tests that add a section of their own).
pub fn test_config_with_store(exchange: &str, store_url: &str, extra_toml: &str) -> String {
    TestConfig::new(exchange, store_url).section(extra_toml).toml()
}

pub struct TestApp {
    /// The callback listener.
    pub addr: SocketAddr,
    /// The ops listener: `/healthz`, `/readyz`, `/metrics`, the read API.
    pub ops: SocketAddr,
    /// What `/readyz` answers from; counts the store pings it costs.
    pub readiness: std::sync::Arc<groupwatch::ops::Readiness>,
    pub config: Config,
    pub topology: Topology,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl TestApp {
    pub fn callback_url(&self, tenant: &str) -> String {
        format!("http://{}/wecom/{tenant}/callback", self.addr)
    }

    /// A URL on the callback listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A URL on the ops listener.
    pub fn ops_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.ops)
    }

    /// Waits until `/readyz` says the broker, the store and every owned shard's consumer are there.
    pub async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            if reqwest::get(self.ops_url("/readyz")).await.is_ok_and(|r| r.status() == 200) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "the app never became ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the app the way SIGTERM would and waits for it to finish.
    pub async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("app stops within 15 s")
            .expect("app task")
            .expect("app exits cleanly");
    }
}

pub async fn spawn_app(config_toml: &str) -> TestApp {
    spawn_app_with(config_toml, true).await
}

/// Starts the app; with `wait_broker`, fails loudly unless RabbitMQ is reachable within 15 s.
pub async fn spawn_app_with(config_toml: &str, wait_broker: bool) -> TestApp {
    spawn(config_toml, wait_broker, Default::default()).await
}

pub async fn spawn_app_hooked(config_toml: &str, hooks: groupwatch::app::Hooks) -> TestApp {
    spawn(config_toml, true, hooks).await
}

async fn spawn(config_toml: &str, wait_broker: bool, hooks: groupwatch::app::Hooks) -> TestApp {
    let config = Config::from_toml(config_toml, std::iter::empty()).expect("valid test config");
    let app = Application::build_with(config.clone(), hooks).await.expect("app builds");
    let addr = app.local_addr().expect("http enabled");
    let ops = app.ops_addr().expect("http enabled");
    let readiness = app.readiness();
    let topology = app.broker().topology().clone();
    if wait_broker {
        app.broker().connected(Duration::from_secs(15)).await.unwrap_or_else(|_| {
            panic!("RabbitMQ at {} is not reachable: start it (rabbitmq-server -detached)", amqp_url())
        });
    }
    let stop = CancellationToken::new();
    let signal = stop.clone().cancelled_owned();
    let task = tokio::spawn(app.run_until(signal));
    let app = TestApp { addr, ops, readiness, config, topology, stop, task };
    if wait_broker && app.config.worker.enabled {
        app.wait_ready().await;
    }
    app
}

/// A separate AMQP connection, as a consumer of groupwatch would have.
pub async fn amqp() -> Connection {
    Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .expect("RabbitMQ must be running for the integration tests")
}

/// Number of messages waiting in a queue.
pub async fn queue_len(conn: &Connection, queue: &str) -> u32 {
    let ch = conn.create_channel().await.unwrap();
    let q = ch
        .queue_declare(queue, QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default())
        .await
        .unwrap_or_else(|e| panic!("queue {queue} should exist: {e}"));
    q.message_count()
}

/// Messages waiting in the inbound shard queues, once the running app's forwarder has moved
/// everything out of the intake queue (see [`settle_intake`]).
pub async fn inbound_len(conn: &Connection, topology: &Topology) -> u32 {
    settle_intake(conn, topology).await
}

async fn shards_len(conn: &Connection, topology: &Topology) -> u32 {
    let mut total = 0;
    for q in topology.inbound_queues() {
        total += queue_len(conn, &q).await;
    }
    total
}

/// Waits until the intake queue is empty and the shard queues have stopped filling (a forward
/// is in flight until its intake messages are acked), and returns what the shards hold. Fails
/// loudly if the intake keeps messages: no forwarder is running.
pub async fn settle_intake(conn: &Connection, topology: &Topology) -> u32 {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (mut last, mut stable) = (u32::MAX, 0);
    loop {
        let intake = queue_len(conn, &topology.intake_queue()).await;
        let shards = shards_len(conn, topology).await;
        if intake == 0 && shards == last {
            stable += 1;
            if stable == 3 {
                return shards;
            }
        } else {
            stable = 0;
        }
        last = shards;
        assert!(
            std::time::Instant::now() < deadline,
            "the intake queue still holds {intake} message(s): no forwarder ran"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Drains every inbound shard queue (once the intake has been forwarded) and returns the events
/// found, acked.
pub async fn drain_inbound(conn: &Connection, topology: &Topology) -> Vec<(String, InboundEvent)> {
    settle_intake(conn, topology).await;
    let ch = conn.create_channel().await.unwrap();
    let mut found = Vec::new();
    for queue in topology.inbound_queues() {
        while let Some(msg) = ch.basic_get(&queue, BasicGetOptions { no_ack: true }).await.unwrap() {
            assert_eq!(msg.delivery.properties.delivery_mode(), &Some(2), "inbound messages are persistent");
            let batch: InboundBatch = serde_json::from_slice(&msg.delivery.data).expect("inbound body is a batch");
            for ev in batch.events {
                found.push((queue.clone(), ev));
            }
        }
    }
    found
}

/// Deletes everything the test's exchange name owns.
pub async fn cleanup(conn: &Connection, topology: &Topology) {
    let ch = conn.create_channel().await.unwrap();
    let mut queues = topology.queues();
    queues.push(format!("{}.test-tap", topology.exchange));
    for q in queues {
        let _ = ch.queue_delete(&q, QueueDeleteOptions::default()).await;
    }
    let _ = ch.exchange_delete(&topology.exchange, ExchangeDeleteOptions::default()).await;
    let _ = ch.exchange_delete(&topology.shards_marker(), ExchangeDeleteOptions::default()).await;
}

/// Where a test's snapshots live: a fresh SQLite file or a fresh PostgreSQL database.
pub enum TestStore {
    Sqlite(tempfile::TempDir),
    Postgres(String),
}

pub const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

impl TestStore {
    pub async fn sqlite() -> Self {
        TestStore::Sqlite(tempfile::tempdir().unwrap())
    }

    /// Creates an empty database; fails loudly if PostgreSQL is not running.
    pub async fn postgres() -> Self {
        use sqlx::Connection;
        let name = format!("gwtest_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let mut conn = sqlx::PgConnection::connect(PG_ADMIN_URL)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {PG_ADMIN_URL} is not reachable ({e}): start it"));
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.unwrap();
        TestStore::Postgres(name)
    }

    pub fn url(&self) -> String {
        match self {
            TestStore::Sqlite(dir) => format!("sqlite://{}", dir.path().join("groupwatch.db").display()),
            TestStore::Postgres(name) => format!("postgres://postgres@127.0.0.1:5432/{name}"),
        }
    }

    /// Runs one statement on the store behind the application's back; returns the rows it
    /// changed.
    pub async fn exec(&self, sql: &str) -> u64 {
        use sqlx::Connection;
        match self {
            TestStore::Sqlite(_) => {
                let mut c = sqlx::SqliteConnection::connect(&self.url()).await.unwrap();
                sqlx::query(sql).execute(&mut c).await.unwrap().rows_affected()
            }
            TestStore::Postgres(_) => {
                let mut c = sqlx::PgConnection::connect(&self.url()).await.unwrap();
                sqlx::query(sql).execute(&mut c).await.unwrap().rows_affected()
            }
        }
    }

    pub async fn drop_database(&self) {
        use sqlx::Connection;
        if let TestStore::Postgres(name) = self {
            let mut conn = sqlx::PgConnection::connect(PG_ADMIN_URL).await.unwrap();
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn).await;
        }
    }
}

/// A queue of the test's own, bound to every routing key of the exchange: sees all events.
pub struct Tap {
    channel: lapin::Channel,
    pub queue: String,
}

impl Tap {
    pub async fn new(conn: &Connection, exchange: &str) -> Tap {
        let channel = conn.create_channel().await.unwrap();
        let queue = format!("{exchange}.test-tap");
        channel
            .queue_declare(&queue, QueueDeclareOptions { durable: false, ..Default::default() }, FieldTable::default())
            .await
            .unwrap();
        channel
            .queue_bind(&queue, exchange, "#", lapin::options::QueueBindOptions::default(), FieldTable::default())
            .await
            .unwrap();
        Tap { channel, queue }
    }

    /// Waits until `n` events arrived (or panics after `timeout`), then checks that no more
    /// arrive within a short grace period.
    pub async fn expect(&self, n: usize, timeout: Duration) -> Vec<groupwatch::core::model::GroupEvent> {
        let events = get_events(&self.channel, &self.queue, n, timeout).await;
        assert_eq!(events.len(), n, "expected {n} events within {timeout:?}, got {}: {events:#?}", events.len());
        let extra = get_events(&self.channel, &self.queue, 1, Duration::from_millis(400)).await;
        assert!(extra.is_empty(), "unexpected extra events: {extra:#?}");
        events
    }

    /// Waits until `n` events arrived (or panics after `timeout`) and returns them as delivered:
    /// the exact body bytes, with the message id and routing key.
    pub async fn expect_raw(&self, n: usize, timeout: Duration) -> Vec<RawEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut out = Vec::new();
        while out.len() < n && tokio::time::Instant::now() < deadline {
            match self.channel.basic_get(&self.queue, BasicGetOptions { no_ack: true }).await.unwrap() {
                Some(msg) => {
                    let body: serde_json::Value = serde_json::from_slice(&msg.delivery.data).unwrap();
                    schema_support::assert_valid_event(&body);
                    let props = &msg.delivery.properties;
                    out.push(RawEvent {
                        message_id: props.message_id().as_ref().map(|s| s.to_string()).unwrap_or_default(),
                        routing_key: msg.delivery.routing_key.to_string(),
                        body: String::from_utf8(msg.delivery.data.clone()).expect("bodies are UTF-8 JSON"),
                    });
                }
                None => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        assert_eq!(out.len(), n, "expected {n} events within {timeout:?}, got {}", out.len());
        out
    }

    /// Takes whatever arrives within `wait`.
    pub async fn collect(&self, wait: Duration) -> Vec<groupwatch::core::model::GroupEvent> {
        get_events(&self.channel, &self.queue, usize::MAX, wait).await
    }
}

/// One event as a consumer received it from RabbitMQ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEvent {
    pub message_id: String,
    pub routing_key: String,
    pub body: String,
}

/// Reads up to `n` events from a queue within `timeout`, checking the AMQP properties.
pub async fn get_events(
    channel: &lapin::Channel,
    queue: &str,
    n: usize,
    timeout: Duration,
) -> Vec<groupwatch::core::model::GroupEvent> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < n && tokio::time::Instant::now() < deadline {
        match channel.basic_get(queue, BasicGetOptions { no_ack: true }).await.unwrap() {
            Some(msg) => {
                let props = &msg.delivery.properties;
                assert_eq!(props.delivery_mode(), &Some(2), "persistent");
                assert_eq!(props.content_type().as_ref().map(|s| s.as_str()), Some("application/json"));
                // Every event any test sees must validate against the published JSON Schema.
                let body: serde_json::Value = serde_json::from_slice(&msg.delivery.data).unwrap();
                schema_support::assert_valid_event(&body);
                let event: groupwatch::core::model::GroupEvent = serde_json::from_value(body).unwrap();
                assert_eq!(props.message_id().as_ref().map(|s| s.as_str()), Some(event.id.as_str()), "id = message_id");
                assert_eq!(msg.delivery.routing_key.as_str(), event.routing_key());
                out.push(event);
            }
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    out
}
