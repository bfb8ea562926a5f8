//! The Stream-mode WebSocket (`GET /connect?ticket=`): frames, ACKs, pings, disconnects and
//! redelivery.
//!
//! Frames follow protocols-2 A2: `{"specVersion":"1.0","type":…,"headers":{…},"data":"<JSON
//! text>"}`, every header value a string. Policies the notes leave open, as implemented here:
//!
//! - **Delivery.** An event goes to one live connection of its app, chosen at random among those
//!   that subscribed to EVENT and have not been sent a `disconnect` ("通过随机策略选取一个Stream通道
//!   推送", A2.6). With no such connection it waits and goes to the next one that opens.
//! - **Redelivery.** Each delivery arms a timer of `redelivery_delay_ms` (default 60 s, A2.7).
//!   If the event has no `SUCCESS` ACK when it fires (no answer, `LATER`, or a malformed reply),
//!   it is pushed again to a randomly chosen live connection, under the same `eventId` and, by
//!   default, the same `messageId` (`new_message_id_on_redelivery` changes that). After
//!   `max_deliveries` deliveries (0 = unlimited) an un-ACKed event is abandoned.
//! - **ACK.** `SUCCESS` counts only with `code` 200; `LATER` under any code (Go sends 500, Java
//!   200) and `SUCCESS` under another code count as `LATER`. The reply must carry
//!   `headers.messageId` and `headers.contentType` and a `data` string whose JSON has `status`
//!   (`message` optional, nothing else); anything else is malformed and counts as no ACK.
//! - **Ping.** Every `ping_interval_ms` a SYSTEM `ping` with `data` `{"opaque":"…"}`; the answer
//!   must be a reply frame with the same messageId echoing the opaque (A2.5). After
//!   `ping_miss_limit` pings in a row go unanswered, the socket is closed without a frame.
//! - **Disconnect.** A SYSTEM `disconnect` (`{"reason":"connection is expired"}`); no new pushes
//!   go to that connection, and its socket is closed `disconnect_grace_ms` later (default 10 s,
//!   "服务端在静默10s之后会主动断开 tcp 连接"). Clients may ACK it (Go and Python do).
//! - **Tickets.** An unknown, used or expired ticket is refused with HTTP 401 before the
//!   upgrade; how DingTalk refuses one is not documented.

use super::*;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use rand::seq::SliceRandom;
use serde::ser::SerializeMap;

/// The only `contentType` the protocol knows, in frames and in replies. (Times in headers are
/// strings of Unix milliseconds.)
const CONTENT_TYPE: &str = "application/json";

/// Ordered headers, serialised as a JSON object of strings.
struct Headers(Vec<(String, String)>);

impl Serialize for Headers {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in &self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Frame<'a> {
    spec_version: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
    headers: Headers,
    data: &'a str,
}

fn frame(kind: &'static str, headers: Vec<(String, String)>, data: &str) -> String {
    serde_json::to_string(&Frame { spec_version: "1.0", kind, headers: Headers(headers), data }).unwrap_or_default()
}

fn header(key: &str, value: impl Into<String>) -> (String, String) {
    (key.to_owned(), value.into())
}

/// A messageId shaped like DingTalk's (`213d841d_972_1898bb26334_70a7`).
fn message_id(seq: u64) -> String {
    format!("{:08x}_{}_{:x}_{:x}", rand::random::<u32>(), 100 + seq % 900, now_ms(), seq)
}

fn system_frame(topic: &str, message_id: &str, data: &str) -> String {
    let headers = vec![
        header("topic", topic),
        header("messageId", message_id),
        header("contentType", CONTENT_TYPE),
        header("time", now_ms().to_string()),
    ];
    frame("SYSTEM", headers, data)
}

impl EventRecord {
    fn frame(&self, corp_id: &str, unified_app_id: &str) -> String {
        let mut headers = vec![
            header("topic", "*"),
            header("messageId", &self.message_id),
            header("contentType", CONTENT_TYPE),
            header("time", now_ms().to_string()),
            header("eventType", &self.event_type),
            header("eventId", &self.event_id),
            header("eventCorpId", corp_id),
            header("eventBornTime", self.born_ms.to_string()),
            header("eventUnifiedAppId", unified_app_id),
        ];
        for (key, value) in &self.extra_headers {
            match headers.iter_mut().find(|(k, _)| k == key) {
                Some(slot) => slot.1 = value.clone(),
                None => headers.push((key.clone(), value.clone())),
            }
        }
        frame("EVENT", headers, &self.data)
    }
}

/// What a push is made of.
pub(super) struct NewEvent {
    pub event_type: String,
    pub data: String,
    pub event_id: Option<String>,
    pub extra_headers: Vec<(String, String)>,
}

impl Dingtalk {
    /// Records an event and delivers it (or leaves it waiting for a connection); returns its
    /// eventId.
    pub(super) fn push(&mut self, sim: &SharedSim, app_key: &str, event: NewEvent) -> Option<String> {
        let seq = self.next_id();
        let app = self.apps.get_mut(app_key)?;
        let event_id = event.event_id.unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        let record = EventRecord {
            seq,
            event_id: event_id.clone(),
            event_type: event.event_type,
            data: event.data,
            born_ms: now_ms(),
            extra_headers: event.extra_headers,
            message_id: message_id(seq),
            deliveries: 0,
            acked: false,
            last_status: None,
            waiting: false,
            abandoned: false,
        };
        app.message_ids.insert(record.message_id.clone(), seq);
        app.events.push_back(record);
        if app.events.len() > EVENTS_MAX {
            let oldest_settled = app.events.iter().position(|e| !e.is_pending()).unwrap_or(0);
            if let Some(gone) = app.events.remove(oldest_settled) {
                app.message_ids.retain(|_, s| *s != gone.seq);
            }
        }
        self.deliver(sim, app_key, seq);
        Some(event_id)
    }

    /// Sends the event to one live connection of its app; arms the redelivery timer if it is
    /// still un-ACKed. Returns whether a connection took it.
    fn deliver(&mut self, sim: &SharedSim, app_key: &str, seq: u64) -> bool {
        let settings = self.settings.clone();
        let fresh_id = message_id(seq);
        let Some(app) = self.apps.get_mut(app_key) else { return false };
        let Some(event) = app.events.iter_mut().find(|e| e.seq == seq) else { return false };
        if event.deliveries > 0 && settings.new_message_id_on_redelivery {
            event.message_id = fresh_id;
            app.message_ids.insert(event.message_id.clone(), seq);
        }
        let text = event.frame(&app.corp_id, &app.unified_app_id);
        let mut candidates: Vec<u64> = app.conns.iter().filter(|(_, c)| c.takes_events()).map(|(id, _)| *id).collect();
        candidates.shuffle(&mut rand::thread_rng());
        let taken = candidates.into_iter().any(|id| app.conns[&id].tx.send(Outgoing::Frame(text.clone())).is_ok());
        if !taken {
            event.waiting = true;
            return false;
        }
        event.waiting = false;
        event.deliveries += 1;
        if event.deliveries == 1 {
            self.stats.events_pushed += 1;
        } else {
            self.stats.redeliveries += 1;
        }
        if event.is_pending() {
            arm_redelivery(sim, self.stop.clone(), app_key, seq, event.deliveries, ms(settings.redelivery_delay_ms));
        }
        true
    }

    /// A redelivery timer fired: pushes the event again unless it was ACKed, abandoned or
    /// delivered again since.
    fn redelivery_due(&mut self, sim: &SharedSim, app_key: &str, seq: u64, delivery: u32) {
        let max = self.settings.max_deliveries;
        let Some(event) = self.apps.get_mut(app_key).and_then(|a| a.events.iter_mut().find(|e| e.seq == seq)) else {
            return;
        };
        if !event.is_pending() || event.deliveries != delivery {
            return;
        }
        if max > 0 && event.deliveries >= max {
            event.abandoned = true;
            return;
        }
        self.deliver(sim, app_key, seq);
    }

    /// Pushes the last `n` events of each app (or of `only`) again, ACKed or not, as DingTalk's
    /// "依然可能出现重复推送" allows. Returns their eventIds.
    pub(super) fn redeliver_last(&mut self, sim: &SharedSim, only: Option<&str>, n: u32) -> Vec<String> {
        let mut targets = Vec::new();
        for (app_key, app) in &self.apps {
            if only.is_some_and(|k| k != app_key) {
                continue;
            }
            let skip = app.events.len().saturating_sub(n as usize);
            targets.extend(app.events.iter().skip(skip).map(|e| (app_key.clone(), e.seq, e.event_id.clone())));
        }
        targets
            .into_iter()
            .filter(|(app_key, seq, _)| self.deliver(sim, app_key, *seq))
            .map(|(_, _, event_id)| event_id)
            .collect()
    }

    /// Sends SYSTEM disconnect to the live connections (of `only`, or all); closes each socket
    /// after the grace period. Returns how many were told.
    pub(super) fn disconnect(&mut self, only: Option<&str>) -> usize {
        let grace = ms(self.settings.disconnect_grace_ms);
        let targets: Vec<(String, u64)> = self
            .apps
            .iter()
            .filter(|(k, _)| only.is_none_or(|o| o == k.as_str()))
            .flat_map(|(k, app)| app.conns.iter().filter(|(_, c)| !c.draining).map(|(id, _)| (k.clone(), *id)))
            .collect();
        let mut told = 0;
        for (app_key, conn_id) in targets {
            let id = message_id(self.next_id());
            let stop = self.stop.clone();
            let Some(conn) = self.apps.get_mut(&app_key).and_then(|a| a.conns.get_mut(&conn_id)) else { continue };
            let text = system_frame("disconnect", &id, r#"{"reason":"connection is expired"}"#);
            if conn.tx.send(Outgoing::Frame(text)).is_err() {
                continue;
            }
            conn.draining = true;
            conn.system_ids.insert(id);
            told += 1;
            let tx = conn.tx.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = tokio::time::sleep(grace) => { let _ = tx.send(Outgoing::Drop); }
                }
            });
        }
        self.stats.disconnects_sent += told as u64;
        told
    }

    /// Closes the live connections (of `only`, or all) without a frame. Returns how many.
    pub(super) fn drop_connections(&mut self, only: Option<&str>) -> usize {
        let mut dropped = 0;
        for (_, app) in self.apps.iter_mut().filter(|(k, _)| only.is_none_or(|o| o == *k)) {
            for conn in app.conns.values_mut() {
                conn.draining = true;
                if conn.tx.send(Outgoing::Drop).is_ok() {
                    dropped += 1;
                }
            }
        }
        dropped
    }

    /// Takes a ticket (it is one-use); `None` if it is unknown, used or expired.
    fn claim_ticket(&mut self, ticket: Option<String>) -> Option<Ticket> {
        let ticket = self.tickets.remove(&ticket?)?;
        (Instant::now() < ticket.expires_at).then_some(ticket)
    }

    fn register(&mut self, sim: &SharedSim, ticket: Ticket, tx: mpsc::UnboundedSender<Outgoing>) -> u64 {
        let id = self.next_id();
        let Some(app) = self.apps.get_mut(&ticket.app_key) else { return id };
        let conn = Conn {
            tx,
            events: ticket.events,
            draining: false,
            pings: HashMap::new(),
            missed_in_row: 0,
            system_ids: HashSet::new(),
        };
        app.conns.insert(id, conn);
        let waiting: Vec<u64> = app.events.iter().filter(|e| e.waiting && e.is_pending()).map(|e| e.seq).collect();
        for seq in waiting {
            self.deliver(sim, &ticket.app_key, seq);
        }
        id
    }

    fn unregister(&mut self, app_key: &str, conn_id: u64) {
        if let Some(app) = self.apps.get_mut(app_key) {
            app.conns.remove(&conn_id);
        }
    }

    /// A ping is due on this connection: the frame to send, or `None` to close it (too many
    /// pings missed, or the connection is gone).
    fn ping(&mut self, app_key: &str, conn_id: u64) -> Option<String> {
        let limit = self.settings.ping_miss_limit;
        let seq = self.next_id();
        let conn = self.apps.get_mut(app_key)?.conns.get_mut(&conn_id)?;
        if !conn.pings.is_empty() {
            self.stats.pings_missed += 1;
            conn.missed_in_row += 1;
            if limit > 0 && conn.missed_in_row >= limit {
                return None;
            }
        }
        // A late answer to an older ping still counts, but only the few latest are remembered.
        if conn.pings.len() >= 8 {
            conn.pings.clear();
        }
        let id = message_id(seq);
        let opaque = uuid::Uuid::new_v4().hyphenated().to_string();
        let data = serde_json::json!({ "opaque": opaque }).to_string();
        conn.pings.insert(id.clone(), opaque);
        self.stats.pings_sent += 1;
        Some(system_frame("ping", &id, &data))
    }

    /// A text frame from a client: an ACK, a ping answer, a disconnect ACK, or noise.
    fn client_frame(&mut self, app_key: &str, conn_id: u64, text: &str) {
        if let Err(reason) = self.take_client_frame(app_key, conn_id, text) {
            tracing::debug!(app_key, %reason, "DingTalk simulator: client frame not taken");
            self.stats.last_frame_error = Some(reason);
        }
    }

    fn take_client_frame(&mut self, app_key: &str, conn_id: u64, text: &str) -> Result<(), String> {
        let Some(app) = self.apps.get_mut(app_key) else { return Ok(()) };
        let reply: Result<Reply, _> = serde_json::from_str(text);
        // Which of our frames does it answer? Look the messageId up leniently first, so that a
        // malformed ACK to a known event counts as a malformed ACK rather than as noise.
        let message_id = match &reply {
            Ok(reply) => reply.headers.get("messageId").cloned(),
            Err(_) => serde_json::from_str::<serde_json::Value>(text)
                .ok()
                .and_then(|v| v.get("headers")?.get("messageId")?.as_str().map(str::to_owned)),
        };
        let Some(message_id) = message_id else {
            self.stats.unknown_frames += 1;
            return Err(format!("a client frame without headers.messageId: {text}"));
        };
        if let Some(conn) = app.conns.get_mut(&conn_id) {
            if let Some(opaque) = conn.pings.get(&message_id).cloned() {
                let reply = reply.map_err(|e| format!("a malformed ping answer ({e}): {text}"))?;
                check_reply_headers(&reply)?;
                let echoed = serde_json::from_str::<serde_json::Value>(&reply.data)
                    .ok()
                    .and_then(|d| d.get("opaque")?.as_str().map(str::to_owned));
                if reply.code != 200 || echoed.as_deref() != Some(opaque.as_str()) {
                    return Err(format!("a ping answer must be code 200 and echo the opaque: {text}"));
                }
                conn.pings.clear();
                conn.missed_in_row = 0;
                self.stats.pongs += 1;
                return Ok(());
            }
            if conn.system_ids.remove(&message_id) {
                return Ok(());
            }
        }
        let Some(seq) = app.message_ids.get(&message_id).copied() else {
            self.stats.unknown_frames += 1;
            return Err(format!("a client frame answering no frame of ours (messageId {message_id}): {text}"));
        };
        let Some(event) = app.events.iter_mut().find(|e| e.seq == seq) else { return Ok(()) };
        let status = reply.map_err(|e| e.to_string()).and_then(|reply| {
            check_reply_headers(&reply)?;
            let data: AckData = serde_json::from_str(&reply.data).map_err(|e| format!("ACK data: {e}"))?;
            match data.status.as_str() {
                "SUCCESS" if reply.code == 200 => Ok("SUCCESS"),
                "SUCCESS" | "LATER" => Ok("LATER"),
                other => Err(format!("ACK status {other:?} is neither SUCCESS nor LATER")),
            }
        });
        match status {
            Ok(status) => {
                if status == "SUCCESS" {
                    event.acked = true;
                    self.stats.acks_success += 1;
                } else {
                    self.stats.acks_later += 1;
                }
                event.last_status = Some(status.to_owned());
                Ok(())
            }
            Err(reason) => {
                self.stats.acks_malformed += 1;
                Err(format!("a malformed ACK ({reason}): {text}"))
            }
        }
    }
}

/// A client's reply frame (ACK, ping answer). Header values must be strings.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Reply {
    code: i64,
    headers: HashMap<String, String>,
    #[serde(default)]
    #[allow(dead_code)]
    message: Option<String>,
    data: String,
}

/// An EVENT ACK's `data`: "响应的 data 中必须包含 status 和 message 字段", `message` being optional
/// in the field table (Java sends it as null).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AckData {
    status: String,
    #[serde(default)]
    #[allow(dead_code)]
    message: Option<String>,
}

/// "推送响应中 headers 必填字段": messageId and contentType (application/json).
fn check_reply_headers(reply: &Reply) -> Result<(), String> {
    match reply.headers.get("contentType").map(String::as_str) {
        Some(CONTENT_TYPE) => Ok(()),
        other => Err(format!("headers.contentType must be {CONTENT_TYPE:?}, not {other:?}")),
    }
}

fn arm_redelivery(sim: &SharedSim, stop: CancellationToken, app_key: &str, seq: u64, delivery: u32, delay: Duration) {
    let sim = sim.clone();
    let app_key = app_key.to_owned();
    tokio::spawn(async move {
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(delay) => {
                let handle = sim.clone();
                sim.dingtalk(|dt| dt.redelivery_due(&handle, &app_key, seq, delivery));
            }
        }
    });
}

/// `GET /connect?ticket=`: the Stream WebSocket.
pub(super) async fn connect(State(sim): State<SharedSim>, RawQuery(query): RawQuery, ws: WebSocketUpgrade) -> Response {
    let ticket = sim.dingtalk(|dt| {
        let ticket = dt.claim_ticket(query_param(&query, "ticket"));
        if ticket.is_none() {
            dt.stats.tickets_refused += 1;
        }
        ticket
    });
    let Some(ticket) = ticket else {
        return (StatusCode::UNAUTHORIZED, "unknown, used or expired ticket (DingTalk simulator)\n").into_response();
    };
    let app_key = ticket.app_key.clone();
    let (tx, rx) = mpsc::unbounded_channel();
    // Registered before the handshake answer, so that a push right after the client's connect
    // returns already finds the connection (frames queue until the socket is up).
    let handle = sim.clone();
    let conn_id = sim.dingtalk(|dt| dt.register(&handle, ticket, tx));
    let on_fail = (sim.clone(), app_key.clone());
    ws.on_failed_upgrade(move |_| on_fail.0.dingtalk(|dt| dt.unregister(&on_fail.1, conn_id)))
        .on_upgrade(move |socket| serve(sim, app_key, conn_id, socket, rx))
}

async fn serve(
    sim: SharedSim,
    app_key: String,
    conn_id: u64,
    socket: WebSocket,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
) {
    let (stop, settings_changed) = sim.dingtalk(|dt| (dt.stop.clone(), dt.settings_changed.clone()));
    let (mut sink, mut stream) = socket.split();
    let ping_deadline = |sim: &SharedSim| {
        let interval = sim.dingtalk(|dt| dt.settings.ping_interval_ms);
        (interval > 0).then(|| tokio::time::Instant::now() + ms(interval))
    };
    let mut next_ping = ping_deadline(&sim);
    loop {
        let changed = settings_changed.notified();
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = changed => next_ping = ping_deadline(&sim),
            _ = sleep_until(next_ping) => {
                let Some(text) = sim.dingtalk(|dt| dt.ping(&app_key, conn_id)) else { break };
                if sink.send(Message::Text(text.into())).await.is_err() {
                    break;
                }
                next_ping = ping_deadline(&sim);
            }
            out = rx.recv() => match out {
                Some(Outgoing::Frame(text)) => {
                    if sink.send(Message::Text(text.into())).await.is_err() {
                        break;
                    }
                }
                Some(Outgoing::Drop) | None => break,
            },
            incoming = stream.next() => match incoming {
                Some(Ok(Message::Text(text))) => sim.dingtalk(|dt| dt.client_frame(&app_key, conn_id, text.as_str())),
                Some(Ok(Message::Binary(_))) => sim.dingtalk(|dt| {
                    dt.stats.unknown_frames += 1;
                    dt.stats.last_frame_error = Some("a binary frame".into());
                }),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) => {
                    let _ = sink.close().await;
                    break;
                }
                Some(Err(_)) | None => break,
            },
        }
    }
    sim.dingtalk(|dt| dt.unregister(&app_key, conn_id));
    // Dropping both halves closes the TCP connection, without a closing handshake unless the
    // client started one.
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
