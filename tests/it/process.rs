//! The real binary under signals: SIGTERM with callbacks in flight drains and exits 0, SIGKILL in
//! the middle of a burst loses nothing once a new process takes over the same store and
//! exchange, and `serve` without a broker is alive but not ready.
//!
//! The simulator runs in this test process; `groupwatch serve` runs as a child process on a port
//! picked here (a config with port 0 would not tell us which one it got).

use crate::common::serve::{deliver, free_port, serve_config, Serve};
use crate::common::*;
use groupwatch::sim::{self, SimClient, SimServer};
use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const FIRST_JOIN_TIME: i64 = 1700003000;
/// Callbacks of the SIGTERM test whose body is only half sent when the signal arrives.
const HALF_SENT: usize = 3;

/// What the process tests share: the simulator, a SQLite store, an exchange and a tap on it.
struct World {
    dir: tempfile::TempDir,
    sim: SimServer,
    simc: SimClient,
    store_url: String,
    exchange: String,
    conn: lapin::Connection,
}

impl World {
    async fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let sim = sim::spawn(sim_state(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
        let simc = SimClient::new(sim.base_url());
        let store_url = format!("sqlite://{}", dir.path().join("groupwatch.db").display());
        World { dir, sim, simc, store_url, exchange: unique_exchange(), conn: amqp().await }
    }

    /// Starts `groupwatch serve` on the shared store and exchange and waits until it is ready.
    async fn serve(&self, name: &str, port: u16) -> Serve {
        self.serve_with(name, port, Serve::start).await
    }

    async fn serve_with(&self, name: &str, port: u16, start: fn(&Path, &str, &str, u16) -> Serve) -> Serve {
        let config =
            serve_config(&self.exchange, &self.store_url, &self.sim.base_url(), port, &crate::common::amqp_url());
        let mut serve = start(self.dir.path(), name, &config, port);
        serve.wait_status("/readyz", 200, Duration::from_secs(20)).await;
        serve
    }

    async fn finish(self, topology: &groupwatch::queue::broker::Topology) {
        cleanup(&self.conn, topology).await;
        drop(self.sim);
    }
}

/// A callback POST whose headers and first half of the body are sent, the rest held back: a
/// request that is certainly in flight until [`HalfSent::finish`].
struct HalfSent {
    stream: tokio::net::TcpStream,
    rest: Vec<u8>,
}

impl HalfSent {
    async fn start(serve: &Serve, xml: &str) -> HalfSent {
        use tokio::io::AsyncWriteExt;
        let crypt = serve.config.tenant(TENANT).unwrap().crypt().unwrap();
        let signed = sign_event(&crypt, xml.as_bytes(), groupwatch::core::clock::now_ms() / 1000);
        let query: Vec<String> = signed.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let body = signed.body.into_bytes();
        let head = format!(
            "POST /wecom/{TENANT}/callback?{} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: text/xml\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            query.join("&"),
            serve.port,
            body.len()
        );
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", serve.port)).await.unwrap();
        let (first, rest) = body.split_at(body.len() / 2);
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(first).await.unwrap();
        stream.flush().await.unwrap();
        HalfSent { stream, rest: rest.to_vec() }
    }

    /// Sends the rest of the body and returns the status line of the answer.
    async fn finish(mut self) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        self.stream.write_all(&self.rest).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), self.stream.read_to_end(&mut answer))
            .await
            .expect("an answer within 10 s")
            .expect("an answer, not a reset");
        String::from_utf8_lossy(&answer).lines().next().unwrap_or_default().to_owned()
    }
}

fn join_xml(userid: &str, join_time: i64, version: &str) -> String {
    callback_xml(join_time + 1, "update", Some("add_member"), &[userid], Some(version))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_callbacks_in_flight_exits_0_and_loses_nothing() {
    let started = Instant::now();
    let world = World::new().await;
    // On one CPU, as the ingest benchmark runs it: the current-thread runtime.
    let first = world.serve_with("first", free_port(), Serve::start_on_one_cpu).await;
    assert!(first.log().contains("CurrentThread"), "one CPU, one thread:\n{}", first.log());
    assert!(!first.log().contains('\u{1b}'), "colour escape codes in a log file:\n{}", first.log());
    let topology = groupwatch::queue::broker::Topology::from_config(&first.config.amqp);
    let tap = Tap::new(&world.conn, &world.exchange).await;
    let none = AtomicUsize::new(0);
    deliver(
        std::slice::from_ref(&first.replayer()),
        0,
        &callback_xml(CHAT_CREATE_TIME, "create", None, &[], None),
        &none,
    )
    .await;

    // 20 members join WeCom, then their callbacks arrive.
    let mut joins = Vec::new();
    let mut xmls = Vec::new();
    for i in 0..20 {
        let (userid, join_time) = (format!("wmTERM{i:02}"), FIRST_JOIN_TIME + i);
        let v = world.simc.add_member(CORP_ID, CHAT, external(&userid, join_time)).await.unwrap();
        xmls.push(join_xml(&userid, join_time, &v));
        joins.push((userid, join_time));
    }
    // The first HALF_SENT callbacks are certainly in flight at SIGTERM: their bodies are only
    // half sent. The others are posted all at once, and SIGTERM lands among them.
    let mut half_sent = Vec::new();
    for xml in &xmls[..HALF_SENT] {
        half_sent.push(HalfSent::start(&first, xml).await);
    }
    let replayer = Arc::new(first.replayer());
    let answered = Arc::new(AtomicUsize::new(0));
    let posts: Vec<_> = xmls[HALF_SENT..]
        .iter()
        .cloned()
        .map(|xml| {
            let (replayer, answered) = (replayer.clone(), answered.clone());
            tokio::spawn(async move {
                let status = replayer.post(xml.as_bytes()).await.map(|s| s.as_u16());
                answered.fetch_add(1, Ordering::SeqCst);
                status
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while answered.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "no callback answered");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut first = first;
    first.signal("TERM");
    let in_flight = xmls.len() - answered.load(Ordering::SeqCst);
    // The process keeps serving the requests it has, however slow (within the request timeout).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(first.is_running(), "exited with requests in flight:\n{}", first.log());
    for half in half_sent {
        let status = half.finish().await;
        assert!(status.starts_with("HTTP/1.1 200"), "a callback in flight at SIGTERM answered {status:?}");
    }
    let (status, exit_took) = first.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM: {status}; log:\n{}", first.log());
    // A clean exit closes the broker connection cleanly too: nothing logged at ERROR.
    assert!(!first.log().contains("ERROR"), "errors logged by a graceful shutdown:\n{}", first.log());

    let mut accepted: Vec<usize> = (0..HALF_SENT).collect();
    let mut unanswered = Vec::new();
    for (i, post) in posts.into_iter().enumerate() {
        let i = i + HALF_SENT;
        match post.await.unwrap() {
            Ok(200) => accepted.push(i),
            Ok(other) => panic!("a callback in flight at SIGTERM answered {other}: the drain must finish hand-offs"),
            Err(_) => unanswered.push(i),
        }
    }

    // Every callback answered 200 before the exit is published, by the first process or, from
    // the inbound queue, by a second one on the same store and exchange.
    let mut second = world.serve("second", free_port()).await;
    let all = expected_changes_create_then_joins(&joins);
    let must: HashSet<Change> = expected_changes_create_then_joins(
        &joins.iter().enumerate().filter(|(i, _)| accepted.contains(i)).map(|(_, j)| j.clone()).collect::<Vec<_>>(),
    );
    let mut events = Vec::new();
    collect_until(&tap, &mut events, &must, Duration::from_secs(30), Duration::from_millis(500)).await;
    let seen: HashSet<Change> = events.iter().map(change_of).collect();
    let invented: Vec<_> = seen.difference(&all).collect();
    assert!(invented.is_empty(), "events that no change explains: {invented:?}");

    // WeCom retries the callbacks that got no answer; then everything is there, exactly.
    let retries = AtomicUsize::new(0);
    let replayer = second.replayer();
    for i in &unanswered {
        deliver(std::slice::from_ref(&replayer), 0, &xmls[*i], &retries).await;
    }
    collect_until(&tap, &mut events, &all, Duration::from_secs(30), Duration::from_secs(1)).await;
    let duplicates = assert_published_exactly(&events, &all);
    let second_exit = second.terminate().await;
    println!(
        "sigterm: {in_flight} of {} callbacks in flight at SIGTERM ({HALF_SENT} half sent); exit 0 {exit_took:?} after the last answer; {} answered 200, \
         {} unanswered (retried on the second process); {} events, {duplicates} duplicates; second exit after \
         {second_exit:?}; total {:?}",
        xmls.len(),
        accepted.len(),
        unanswered.len(),
        events.len(),
        started.elapsed()
    );
    world.finish(&topology).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_burst_then_restart_loses_and_invents_nothing() {
    const BURST: i64 = 40;
    const KILL_AFTER: usize = 15;
    let started = Instant::now();
    let world = World::new().await;
    // The restarted process listens on the same port: WeCom knows one callback URL.
    let port = free_port();
    let mut first = world.serve("first", port).await;
    let topology = groupwatch::queue::broker::Topology::from_config(&first.config.amqp);
    let tap = Tap::new(&world.conn, &world.exchange).await;
    let replayer = Arc::new(first.replayer());
    let none = AtomicUsize::new(0);
    deliver(std::slice::from_ref(&replayer), 0, &callback_xml(CHAT_CREATE_TIME, "create", None, &[], None), &none)
        .await;

    let joins: Vec<(String, i64)> = (0..BURST).map(|i| (format!("wmKILL{i:02}"), FIRST_JOIN_TIME + i)).collect();
    let accepted = Arc::new(AtomicUsize::new(0));
    let retries = Arc::new(AtomicUsize::new(0));
    let stream = {
        let (joins, simc, replayer) = (joins.clone(), world.simc.clone(), replayer.clone());
        let (accepted, retries) = (accepted.clone(), retries.clone());
        tokio::spawn(async move {
            for (userid, join_time) in joins {
                let v = simc.add_member(CORP_ID, CHAT, external(&userid, join_time)).await.unwrap();
                deliver(std::slice::from_ref(&replayer), 0, &join_xml(&userid, join_time, &v), &retries).await;
                accepted.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while accepted.load(Ordering::SeqCst) < KILL_AFTER {
        assert!(Instant::now() < deadline, "the burst is too slow before the kill");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    first.signal("KILL");
    let (status, _) = first.wait_exit(Duration::from_secs(5)).await;
    assert_eq!(status.code(), None, "killed by a signal: {status}");
    let accepted_at_kill = accepted.load(Ordering::SeqCst);
    drop(first);
    // Down for a moment: the stream's callbacks get no answer and are retried.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut second = world.serve("second", port).await;

    tokio::time::timeout(Duration::from_secs(45), stream).await.expect("the burst finishes").unwrap();
    let expected = expected_changes_create_then_joins(&joins);
    assert_eq!(expected.len(), 3 + BURST as usize);
    let mut events = Vec::new();
    collect_until(&tap, &mut events, &expected, Duration::from_secs(30), Duration::from_secs(2)).await;
    let duplicates = assert_published_exactly(&events, &expected);
    let second_exit = second.terminate().await;
    println!(
        "sigkill: killed after {accepted_at_kill} of {BURST} joins accepted; {} callback attempts retried; \
         {} events, {} distinct, {duplicates} duplicates; second exit after {second_exit:?}; total {:?}",
        retries.load(Ordering::SeqCst),
        events.len(),
        expected.len(),
        started.elapsed()
    );
    world.finish(&topology).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_without_broker_is_alive_but_not_ready() {
    let world_dir = tempfile::tempdir().unwrap();
    // A port nobody listens on: the broker is unreachable.
    let closed = free_port();
    let exchange = unique_exchange();
    let store_url = format!("sqlite://{}", world_dir.path().join("groupwatch.db").display());
    let port = free_port();
    let broker = format!("amqp://guest:guest@127.0.0.1:{closed}/%2f");
    let config = serve_config(&exchange, &store_url, "http://127.0.0.1:9", port, &broker);
    let mut serve = Serve::start(world_dir.path(), "nobroker", &config, port);
    let started = Instant::now();
    serve.wait_status("/healthz", 200, Duration::from_secs(20)).await;
    // Over a few supervisor retries, never ready; a callback is refused so that WeCom retries.
    while started.elapsed() < Duration::from_secs(2) {
        let readyz = reqwest::get(serve.ops_url("/readyz")).await.unwrap();
        assert_eq!(readyz.status().as_u16(), 503, "not ready without a broker");
        assert_eq!(reqwest::get(serve.ops_url("/healthz")).await.unwrap().status().as_u16(), 200);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let xml = callback_xml(CHAT_CREATE_TIME, "create", None, &[], None);
    assert_eq!(serve.replayer().post(xml.as_bytes()).await.unwrap(), 503, "callback refused without a broker");
    let exit = serve.terminate().await;
    println!("no broker: readyz 503, healthz 200; SIGTERM exit 0 after {exit:?}");
}
