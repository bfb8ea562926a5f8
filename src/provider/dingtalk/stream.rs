//! DingTalk Stream mode: groupwatch connects out, so no public URL is needed (protocols-2 A1,
//! A2). One [`StreamClient`] per stream-mode tenant:
//!
//! - **Connect.** `POST {stream_base}/v1.0/gateway/connections/open` with the app's key and
//!   secret and the EVENT `*` subscription gives an endpoint and a one-use ticket; the WebSocket
//!   goes to `endpoint?ticket=…`. A fresh ticket for every connection, and a connection only
//!   while the broker is connected (events DingTalk keeps are better than events answered LATER).
//! - **Frames.** JSON text: `type`, string `headers`, and `data`, itself JSON in a string. SYSTEM
//!   `ping` is answered with its opaque; SYSTEM `disconnect` (DingTalk rotating connections) is
//!   ACKed, a new connection is opened, and only then is the old one let go, once its events in
//!   flight have their ACKs. A dropped socket is reconnected with jittered, growing backoff.
//! - **Events** go through the same mapping as HTTP pushes ([`super::events`]) and the same
//!   durable hand-off as the callback route; each is ACKed `SUCCESS` only once the broker has
//!   confirmed it, and `LATER` (the Go SDK's form, code 500) when it cannot take it, so that
//!   DingTalk pushes it again. Redeliveries of an event already handed off (same `eventId`) are
//!   ACKed without a second hand-off. An event that cannot be read is parked in the dead-letter
//!   queue with its reason before it is ACKed: never dropped silently.
//!
//! `/readyz` is 503 while the tenant has no live connection ([`crate::ops::Links`]).

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use rand::Rng;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use super::config::DingtalkTenant;
use super::events::{self, Envelope};
use crate::config::Secret;
use crate::core::clock::now_ms;
use crate::core::model::Provider;
use crate::ingress::aliases::Aliases;
use crate::ingress::hand_off;
use crate::ops::Links;
use crate::provider::Decoded;
use crate::queue::broker::Broker;
use crate::queue::inbound::Inbound;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// connections/open and the WebSocket handshake must each be done within this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A WebSocket ping after this long without sending one; DingTalk's SDKs ping every 60 s.
const KEEPALIVE: Duration = Duration::from_secs(30);
/// A connection that has heard nothing (not even a pong) for this long is taken as lost.
const SILENCE: Duration = Duration::from_secs(95);
/// A connection that lived this long resets the backoff.
const HEALTHY: Duration = Duration::from_secs(10);
const BACKOFF_CAP: Duration = Duration::from_secs(60);
/// How long a connection being let go waits for its events in flight to be ACKed.
const DRAIN: Duration = Duration::from_secs(10);
/// Event keys remembered as handed off, to ACK a redelivery without handing it off again.
const RECENT_KEYS: usize = 10_000;

/// The name of a tenant's link in `/readyz`.
pub fn link_name(tenant: &str) -> String {
    format!("dingtalk/{tenant}")
}

#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error("connections/open refused the app's clientId/clientSecret (HTTP {0}); check app_key and app_secret")]
    Credentials(u16),
    #[error("connections/open: {0}")]
    Open(String),
    #[error("websocket: {0}")]
    Connect(String),
    #[error("timed out")]
    Timeout,
}

#[derive(Deserialize)]
struct OpenAnswer {
    #[serde(default)]
    endpoint: String,
    #[serde(default)]
    ticket: String,
}

/// A downstream frame. Headers are strings on the wire; numbers are taken too.
#[derive(Deserialize)]
struct Frame {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    headers: HashMap<String, Value>,
    #[serde(default)]
    data: Option<String>,
}

impl Frame {
    fn header(&self, name: &str) -> Option<String> {
        match self.headers.get(name)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }
}

/// The reply to a frame: an ACK, a ping's answer.
fn reply(message_id: &str, code: u16, message: &str, data: &str) -> Message {
    let frame = json!({
        "code": code,
        "headers": {"contentType": "application/json", "messageId": message_id},
        "message": message,
        "data": data,
    });
    Message::Text(frame.to_string().into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ack {
    Success,
    Later,
}

impl Ack {
    fn message(self, message_id: &str) -> Message {
        match self {
            Ack::Success => reply(message_id, 200, "OK", r#"{"status":"SUCCESS","message":"success"}"#),
            Ack::Later => reply(message_id, 500, "later", r#"{"status":"LATER","message":"later"}"#),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Ack::Success => "SUCCESS",
            Ack::Later => "LATER",
        }
    }
}

/// Keys of events handed off lately, oldest first out.
struct Recent {
    order: VecDeque<String>,
    set: HashSet<String>,
}

impl Recent {
    fn contains(&self, key: &str) -> bool {
        self.set.contains(key)
    }

    fn insert(&mut self, key: String) {
        if self.set.insert(key.clone()) {
            self.order.push_back(key);
            if self.order.len() > RECENT_KEYS {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }
}

/// One open connection: the frames in, a writer task for the frames out (ACKs come from the
/// event tasks), and those tasks.
struct Connection {
    frames: SplitStream<Socket>,
    tx: mpsc::UnboundedSender<Message>,
    writer: tokio::task::JoinHandle<()>,
    events: JoinSet<()>,
    opened: Instant,
}

impl Connection {
    /// Lets the connection go: its events in flight are ACKed first, then the socket is closed.
    async fn finish(mut self) {
        let _ = tokio::time::timeout(DRAIN, async { while self.events.join_next().await.is_some() {} }).await;
        drop(self.tx);
        let _ = tokio::time::timeout(Duration::from_secs(2), self.writer).await;
    }
}

async fn write(mut sink: SplitSink<Socket, Message>, mut rx: mpsc::UnboundedReceiver<Message>) {
    while let Some(message) = rx.recv().await {
        if sink.send(message).await.is_err() {
            return;
        }
    }
    // Every sender is gone: close cleanly.
    let _ = sink.close().await;
}

enum Ended {
    Stop,
    /// SYSTEM disconnect: DingTalk wants this connection replaced.
    Replace,
    Lost(String),
}

/// One stream-mode tenant's connection to DingTalk.
pub struct StreamClient {
    tenant: String,
    app_key: String,
    app_secret: Secret,
    open_url: String,
    http: reqwest::Client,
    inbound: Inbound,
    aliases: Arc<Aliases>,
    broker: Broker,
    links: Arc<Links>,
    recent: Mutex<Recent>,
}

impl StreamClient {
    pub fn new(
        tenant: &DingtalkTenant,
        inbound: Inbound,
        aliases: Arc<Aliases>,
        broker: Broker,
        links: Arc<Links>,
    ) -> Arc<Self> {
        let http = reqwest::Client::builder()
            .timeout(CONNECT_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("a TLS backend is compiled in");
        Arc::new(Self {
            tenant: tenant.tenant.clone(),
            app_key: tenant.app_key.clone(),
            app_secret: tenant.app_secret.clone(),
            open_url: format!("{}/v1.0/gateway/connections/open", tenant.stream_base.trim_end_matches('/')),
            http,
            inbound,
            aliases,
            broker,
            links,
            recent: Mutex::new(Recent { order: VecDeque::new(), set: HashSet::new() }),
        })
    }

    fn link(&self) -> String {
        link_name(&self.tenant)
    }

    fn count(&self, what: &'static str) {
        let name = match what {
            "connects" => "groupwatch_dingtalk_stream_connects_total",
            _ => "groupwatch_dingtalk_stream_disconnects_total",
        };
        metrics::counter!(name, "provider" => "dingtalk", "tenant" => self.tenant.clone()).increment(1);
    }

    /// A fresh ticket: (endpoint, ticket).
    async fn open(&self) -> Result<(String, String), StreamError> {
        let body = json!({
            "clientId": self.app_key,
            "clientSecret": self.app_secret.expose(),
            "subscriptions": [{"type": "EVENT", "topic": "*"}],
            "ua": concat!("groupwatch/", env!("CARGO_PKG_VERSION")),
        });
        let resp = self
            .http
            .post(&self.open_url)
            // Without it the gateway may answer XML (the Node SDK's comment).
            .header(reqwest::header::ACCEPT, "application/json")
            .json(&body)
            .send()
            .await
            .map_err(|e| StreamError::Open(e.without_url().to_string()))?;
        let status = resp.status();
        if status == 401 || status == 403 {
            return Err(StreamError::Credentials(status.as_u16()));
        }
        if !status.is_success() {
            return Err(StreamError::Open(format!("HTTP {status}")));
        }
        let answer: OpenAnswer =
            resp.json().await.map_err(|e| StreamError::Open(format!("unexpected answer: {}", e.without_url())))?;
        if answer.endpoint.is_empty() || answer.ticket.is_empty() {
            return Err(StreamError::Open("answer without endpoint or ticket".into()));
        }
        Ok((answer.endpoint, answer.ticket))
    }

    async fn connect(&self) -> Result<Connection, StreamError> {
        let (endpoint, ticket) =
            tokio::time::timeout(CONNECT_TIMEOUT, self.open()).await.map_err(|_| StreamError::Timeout)??;
        let url = format!("{endpoint}?ticket={}", utf8_percent_encode(&ticket, NON_ALPHANUMERIC));
        let (socket, _) = tokio::time::timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(url))
            .await
            .map_err(|_| StreamError::Timeout)?
            .map_err(|e| StreamError::Connect(e.to_string()))?;
        let (sink, frames) = socket.split();
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = tokio::spawn(write(sink, rx));
        Ok(Connection { frames, tx, writer, events: JoinSet::new(), opened: Instant::now() })
    }

    /// Connects, retrying with backoff; `None` once `stop` is cancelled.
    async fn connect_until(&self, stop: &CancellationToken, failures: &mut u32) -> Option<Connection> {
        loop {
            // Events taken while the broker is away could only be answered LATER: leave them
            // with DingTalk until it is back.
            while !self.broker.is_connected() {
                tokio::select! {
                    _ = stop.cancelled() => return None,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
            let attempt = tokio::select! {
                _ = stop.cancelled() => return None,
                attempt = self.connect() => attempt,
            };
            match attempt {
                Ok(conn) => {
                    self.links.set(&self.link(), true);
                    self.count("connects");
                    tracing::info!(provider = "dingtalk", tenant = %self.tenant, "stream connected");
                    return Some(conn);
                }
                Err(e) => {
                    *failures += 1;
                    let wait = backoff(*failures);
                    tracing::warn!(provider = "dingtalk", tenant = %self.tenant, error = %e, retry_in = ?wait, "stream connection failed");
                    tokio::select! {
                        _ = stop.cancelled() => return None,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }

    /// Keeps the tenant connected until `stop`; then lets the last connection finish its events.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut failures = 0u32;
        let mut next: Option<Connection> = None;
        loop {
            let mut conn = match next.take() {
                Some(conn) => conn,
                None => match self.connect_until(&stop, &mut failures).await {
                    Some(conn) => conn,
                    None => break,
                },
            };
            match self.serve(&mut conn, &stop).await {
                Ended::Stop => {
                    conn.finish().await;
                    break;
                }
                Ended::Replace => {
                    self.count("disconnects");
                    tracing::info!(provider = "dingtalk", tenant = %self.tenant, "stream rotated by DingTalk; reconnecting");
                    failures = 0;
                    // The new connection first: the old one stays up (and ready) meanwhile.
                    next = self.connect_until(&stop, &mut failures).await;
                    tokio::spawn(conn.finish());
                    if next.is_none() {
                        break;
                    }
                }
                Ended::Lost(reason) => {
                    self.links.set(&self.link(), false);
                    self.count("disconnects");
                    if conn.opened.elapsed() >= HEALTHY {
                        failures = 0;
                    }
                    let wait = backoff(failures);
                    failures += 1;
                    tracing::warn!(provider = "dingtalk", tenant = %self.tenant, reason, retry_in = ?wait, "stream connection lost");
                    // Events handed off but not ACKed come again, and are ACKed by key then.
                    tokio::spawn(conn.finish());
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
        self.links.set(&self.link(), false);
    }

    async fn serve(self: &Arc<Self>, conn: &mut Connection, stop: &CancellationToken) -> Ended {
        let mut keepalive = tokio::time::interval_at(Instant::now() + KEEPALIVE, KEEPALIVE);
        let mut heard = Instant::now();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Ended::Stop,
                _ = keepalive.tick() => {
                    if heard.elapsed() > SILENCE {
                        return Ended::Lost("nothing heard from DingTalk".into());
                    }
                    let _ = conn.tx.send(Message::Ping(Vec::new().into()));
                }
                Some(_) = conn.events.join_next(), if !conn.events.is_empty() => {}
                incoming = conn.frames.next() => {
                    heard = Instant::now();
                    match incoming {
                        Some(Ok(Message::Text(text))) => {
                            if self.frame(conn, text.as_str()) {
                                return Ended::Replace;
                            }
                        }
                        Some(Ok(Message::Close(_))) => return Ended::Lost("closed by DingTalk".into()),
                        Some(Ok(_)) => {}
                        Some(Err(e)) => return Ended::Lost(e.to_string()),
                        None => return Ended::Lost("connection ended".into()),
                    }
                }
            }
        }
    }

    /// Handles one frame; `true` when DingTalk asks for the connection to be replaced.
    fn frame(self: &Arc<Self>, conn: &mut Connection, text: &str) -> bool {
        let frame: Frame = match serde_json::from_str(text) {
            Ok(frame) => frame,
            Err(e) => {
                self.frames_metric("invalid");
                tracing::warn!(provider = "dingtalk", tenant = %self.tenant, error = %e, "a stream frame that is not JSON; ignored");
                return false;
            }
        };
        let message_id = frame.header("messageId").unwrap_or_default();
        let data = frame.data.clone().unwrap_or_default();
        match frame.kind.as_str() {
            "SYSTEM" => {
                self.frames_metric("SYSTEM");
                match frame.header("topic").as_deref() {
                    Some("ping") => {
                        let _ = conn.tx.send(reply(&message_id, 200, "OK", &data));
                    }
                    Some("disconnect") => {
                        // ACKed before anything else, so DingTalk does not send it again.
                        let _ = conn.tx.send(reply(&message_id, 200, "OK", &data));
                        return true;
                    }
                    other => {
                        tracing::debug!(provider = "dingtalk", tenant = %self.tenant, topic = ?other, "SYSTEM frame ignored")
                    }
                }
            }
            "EVENT" => {
                self.frames_metric("EVENT");
                let client = self.clone();
                let tx = conn.tx.clone();
                let raw = text.to_owned();
                conn.events.spawn(async move {
                    let ack = client.event(&frame, &data, raw).await;
                    metrics::counter!("groupwatch_dingtalk_stream_acks_total", "provider" => "dingtalk",
                        "tenant" => client.tenant.clone(), "status" => ack.as_str())
                    .increment(1);
                    let _ = tx.send(ack.message(&message_id));
                });
            }
            _ => self.frames_metric("other"),
        }
        false
    }

    fn frames_metric(&self, kind: &'static str) {
        metrics::counter!("groupwatch_dingtalk_stream_frames_total", "provider" => "dingtalk",
            "tenant" => self.tenant.clone(), "type" => kind)
        .increment(1);
    }

    /// Hands one EVENT off; the ACK it earns.
    async fn event(&self, frame: &Frame, data: &str, raw: String) -> Ack {
        let event_type = frame.header("eventType");
        let event_id = frame.header("eventId");
        let envelope = Envelope {
            event_type: event_type.as_deref(),
            event_id: event_id.as_deref(),
            born_ms: frame.header("eventBornTime").and_then(|t| t.parse().ok()),
        };
        let decoded = events::object(data).and_then(|object| events::decode(&self.tenant, envelope, &object, now_ms()));
        let change = match decoded {
            Ok(Decoded::Change(change)) => change,
            Ok(Decoded::Ignored { kind }) => {
                metrics::counter!("groupwatch_callbacks_ignored_total", "provider" => "dingtalk", "kind" => kind.clone())
                    .increment(1);
                tracing::debug!(provider = "dingtalk", tenant = %self.tenant, kind, "ignoring an event of another type");
                return Ack::Success;
            }
            Ok(Decoded::Handshake) => return Ack::Success,
            Err(e) => {
                let reason = format!("dingtalk {}: unreadable stream event: {e}", self.tenant);
                return match crate::queue::dead::park(&self.broker, raw.as_bytes(), &reason, None).await {
                    Ok(()) => Ack::Success,
                    Err(_) => Ack::Later,
                };
            }
        };
        if self.recent.lock().expect("recent lock").contains(&change.key) {
            metrics::counter!("groupwatch_callbacks_deduplicated_total", "provider" => "dingtalk").increment(1);
            tracing::debug!(provider = "dingtalk", tenant = %self.tenant, event_id, "redelivered event already handed off");
            return Ack::Success;
        }
        let key = change.key.clone();
        match hand_off(&self.inbound, &self.aliases, Provider::Dingtalk, &self.tenant, change, now_ms()).await {
            Ok(()) => {
                self.recent.lock().expect("recent lock").insert(key);
                Ack::Success
            }
            Err(e) => {
                tracing::warn!(provider = "dingtalk", tenant = %self.tenant, event_id, error = %e,
                    "event could not be handed off; asking DingTalk to push it again");
                Ack::Later
            }
        }
    }
}

/// 0: a short random pause; then 0.5 s doubling up to a minute, each drawn between half and all
/// of it, so that many instances do not reconnect in step.
fn backoff(failures: u32) -> Duration {
    let mut rng = rand::thread_rng();
    if failures == 0 {
        return Duration::from_millis(rng.gen_range(0..300));
    }
    let full = Duration::from_millis(500).saturating_mul(1 << failures.min(8).saturating_sub(1)).min(BACKOFF_CAP);
    full.mul_f64(rng.gen_range(0.5..=1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_a_minute_with_jitter() {
        assert!(backoff(0) < Duration::from_millis(300));
        let first = backoff(1);
        assert!(first >= Duration::from_millis(250) && first <= Duration::from_millis(500), "{first:?}");
        for _ in 0..20 {
            let late = backoff(20);
            assert!(late >= Duration::from_secs(30) && late <= BACKOFF_CAP, "{late:?}");
        }
    }

    #[test]
    fn acks_have_the_documented_shape() {
        let Message::Text(text) = Ack::Success.message("213d841d_972_1898bb26334_70a7") else { panic!() };
        let ack: Value = serde_json::from_str(text.as_str()).unwrap();
        let doc: Value =
            serde_json::from_str(include_str!("../../../fixtures/dingtalk/stream/event_ack.json")).unwrap();
        assert_eq!(ack["code"], doc["code"]);
        assert_eq!(ack["headers"], doc["headers"]);
        let data: Value = serde_json::from_str(ack["data"].as_str().unwrap()).unwrap();
        assert_eq!(data["status"], "SUCCESS");
        let Message::Text(text) = Ack::Later.message("m") else { panic!() };
        let later: Value = serde_json::from_str(text.as_str()).unwrap();
        let doc: Value =
            serde_json::from_str(include_str!("../../../fixtures/dingtalk/stream/event_ack_later.json")).unwrap();
        assert_eq!((later["code"].clone(), later["data"].clone()), (doc["code"].clone(), doc["data"].clone()));
    }

    #[test]
    fn frames_take_string_headers_and_a_data_string() {
        let frame: Frame =
            serde_json::from_str(include_str!("../../../fixtures/dingtalk/stream/chat_quit.frame.json")).unwrap();
        assert_eq!(frame.kind, "EVENT");
        assert_eq!(frame.header("eventType").as_deref(), Some("chat_quit"));
        assert_eq!(frame.header("eventBornTime").as_deref(), Some("1683533823336"));
        assert!(events::object(frame.data.as_deref().unwrap()).is_ok());
        let ping: Frame = serde_json::from_str(include_str!("../../../fixtures/dingtalk/stream/ping.json")).unwrap();
        let Message::Text(pong) = reply(&ping.header("messageId").unwrap(), 200, "OK", ping.data.as_deref().unwrap())
        else {
            panic!()
        };
        let doc: Value = serde_json::from_str(include_str!("../../../fixtures/dingtalk/stream/pong.json")).unwrap();
        assert_eq!(serde_json::from_str::<Value>(pong.as_str()).unwrap(), doc);
    }
}
