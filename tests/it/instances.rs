//! Several `groupwatch serve` processes on one exchange and one PostgreSQL store behave as one:
//! callbacks spread round-robin over all of them, each chat is processed by one instance only
//! (RabbitMQ's single-active-consumer on every inbound shard), and SIGKILLing the instance that
//! owns a chat's shard in the middle of a burst loses nothing, invents nothing and publishes
//! duplicates only with equal ids.
//!
//! The simulator runs in this test process; the instances are the real binary, each on its own
//! port. Which instance processes a chat is read from its log ("group reconciled" lines name the
//! chat) and its `/metrics` (`groupwatch_fetches_total`).

use crate::common::serve::{deliver, free_port, serve_config, Serve};
use crate::common::*;
use groupwatch::core::model::{EventType, GroupEvent};
use groupwatch::queue::broker::Topology;
use groupwatch::sim::{self, SimClient, SimServer};
use groupwatch::tools::replay::Replayer;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const INSTANCES: usize = 3;
const FIRST_JOIN_TIME: i64 = 1700005000;

/// The simulator, a fresh PostgreSQL database, one exchange, a tap on it and N instances.
struct Cluster {
    _dir: tempfile::TempDir,
    sim: SimServer,
    simc: SimClient,
    store: TestStore,
    conn: lapin::Connection,
    topology: Topology,
    tap: Tap,
    instances: Vec<Serve>,
    /// One per instance, in the same order; a dead instance's replayer just fails to connect.
    replayers: Arc<Vec<Replayer>>,
}

impl Cluster {
    async fn start(chats: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let sim = sim::spawn(sim_state_with_chats(chats), "127.0.0.1:0".parse().unwrap()).await.unwrap();
        let simc = SimClient::new(sim.base_url());
        let store = TestStore::postgres().await;
        let exchange = unique_exchange();
        let conn = amqp().await;
        let mut instances = Vec::new();
        // Started one after another, each ready before the next: the first one registers first
        // on every shard and is the active consumer; the others wait in line.
        for i in 0..INSTANCES {
            let port = free_port();
            let config = serve_config(&exchange, &store.url(), &sim.base_url(), port, &crate::common::amqp_url());
            instances.push(Serve::start_ready(dir.path(), &format!("instance{i}"), &config, port).await);
        }
        let topology = Topology::from_config(&instances[0].config.amqp);
        let tap = Tap::new(&conn, &exchange).await;
        let replayers = Arc::new(instances.iter().map(Serve::replayer).collect());
        Cluster { _dir: dir, sim, simc, store, conn, topology, tap, instances, replayers }
    }

    /// The instances that have reconciled `chat`, with how many times.
    fn processors(&self, chat: &str) -> Vec<(usize, usize)> {
        (0..self.instances.len()).map(|i| (i, self.instances[i].reconciled(chat))).filter(|(_, n)| *n > 0).collect()
    }

    /// SIGTERMs the survivors (exit 0), deletes the exchange's queues and the database.
    async fn finish(mut self, alive: &[usize]) {
        for i in alive {
            self.instances[*i].terminate().await;
        }
        cleanup(&self.conn, &self.topology).await;
        self.store.drop_database().await;
        drop(self.sim);
    }
}

/// `n` chat ids, `CHAT` first, each on a different inbound shard.
fn chats_on_distinct_shards(topology: &Topology, n: usize) -> Vec<String> {
    let mut chats = vec![CHAT.to_owned()];
    let mut shards = HashSet::from([topology.shard_for(CHAT)]);
    for i in 0.. {
        if chats.len() == n {
            break;
        }
        let candidate = format!("wrOgQhDgAAMYQiS5ol9G7gK9JV{i:04}");
        if shards.insert(topology.shard_for(&candidate)) {
            chats.push(candidate);
        }
    }
    chats
}

/// For each chat: a `group.create` is published, and no event of the chat comes before it.
fn assert_create_first(events: &[GroupEvent], chats: &[String]) {
    for chat in chats {
        let of_chat: Vec<&GroupEvent> = events.iter().filter(|e| &e.chat_id == chat).collect();
        let first = of_chat.first().unwrap_or_else(|| panic!("no events for {chat}"));
        assert_eq!(
            first.event_type,
            EventType::GroupCreate,
            "the first event of {chat} is its group.create: {first:#?}"
        );
    }
}

/// Three instances, three chats on three shards, 60 joins spread round-robin over the instances;
/// at each of `kill_at` accepted joins the instance currently processing `CHAT` is SIGKILLed.
async fn burst_with_kills(kill_at: &[usize]) {
    const JOINS: usize = 60;
    let started = Instant::now();
    let shards = Topology { exchange: String::new(), declare_default_queues: false, inbound_shards: 4 };
    let chats = chats_on_distinct_shards(&shards, 3);
    let chat_refs: Vec<&str> = chats.iter().map(String::as_str).collect();
    let mut cluster = Cluster::start(&chat_refs).await;
    assert_eq!(cluster.topology.inbound_shards, 4, "the default shard count");
    let none = AtomicUsize::new(0);

    // Each chat is created through a different instance.
    for (j, chat) in chats.iter().enumerate() {
        let xml = callback_xml_for(chat, CHAT_CREATE_TIME, "create", None, &[], None);
        deliver(&cluster.replayers, j % INSTANCES, &xml, &none).await;
    }
    let created: HashSet<Change> = chats.iter().flat_map(|c| expected_changes_create_then_joins_in(c, &[])).collect();
    let mut events = Vec::new();
    collect_until(&cluster.tap, &mut events, &created, Duration::from_secs(20), Duration::ZERO).await;
    // However the creates came in, one instance processed each chat.
    let mut owner = HashMap::new();
    for chat in &chats {
        let processors = cluster.processors(chat);
        assert_eq!(processors.len(), 1, "{chat} created once, by one instance: {processors:?}");
        owner.insert(chat.clone(), processors[0].0);
    }
    println!("owners after create (chat -> instance): {owner:?}");

    // The burst: join i goes to chat i % 3, its callback to instance i % 3.
    let joins: Vec<(String, String, i64)> = (0..JOINS)
        .map(|i| (chats[i % chats.len()].clone(), format!("wmMULTI{i:02}"), FIRST_JOIN_TIME + i as i64))
        .collect();
    let accepted = Arc::new(AtomicUsize::new(0));
    let retries = Arc::new(AtomicUsize::new(0));
    let stream = {
        let (joins, simc, replayers) = (joins.clone(), cluster.simc.clone(), cluster.replayers.clone());
        let (accepted, retries) = (accepted.clone(), retries.clone());
        tokio::spawn(async move {
            for (i, (chat, userid, join_time)) in joins.into_iter().enumerate() {
                let v = simc.add_member(CORP_ID, &chat, external(&userid, join_time)).await.unwrap();
                let xml = callback_xml_for(&chat, join_time + 1, "update", Some("add_member"), &[&userid], Some(&v));
                deliver(&replayers, i % INSTANCES, &xml, &retries).await;
                accepted.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        })
    };

    let mut alive: Vec<usize> = (0..INSTANCES).collect();
    let mut victim = owner[CHAT];
    let mut killed = Vec::new();
    // Reconciliations per instance of every chat at the last kill.
    let mut at_last_kill: Vec<HashMap<String, usize>> = Vec::new();
    for (k, threshold) in kill_at.iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(20);
        while accepted.load(Ordering::SeqCst) < *threshold {
            assert!(Instant::now() < deadline, "the burst is too slow before kill {k}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if k > 0 {
            // The next victim: the survivor that took CHAT over (it reconciles it from now on).
            let before: Vec<usize> = (0..INSTANCES).map(|i| at_last_kill[i][CHAT]).collect();
            let deadline = Instant::now() + Duration::from_secs(20);
            victim = loop {
                let took_over: Vec<usize> =
                    alive.iter().copied().filter(|i| cluster.instances[*i].reconciled(CHAT) > before[*i]).collect();
                assert!(took_over.len() <= 1, "two survivors processed {CHAT}: {took_over:?}");
                if let Some(i) = took_over.first() {
                    break *i;
                }
                assert!(Instant::now() < deadline, "no survivor took {CHAT} over");
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
        }
        at_last_kill = cluster
            .instances
            .iter()
            .map(|s| chats.iter().map(|c| (c.clone(), s.reconciled(c))).collect::<HashMap<_, _>>())
            .collect();
        cluster.instances[victim].kill().await;
        alive.retain(|i| *i != victim);
        killed.push((victim, accepted.load(Ordering::SeqCst)));
    }

    tokio::time::timeout(Duration::from_secs(40), stream).await.expect("the burst finishes").unwrap();
    let mut expected = HashSet::new();
    for chat in &chats {
        let of_chat: Vec<(String, i64)> =
            joins.iter().filter(|(c, _, _)| c == chat).map(|(_, u, t)| (u.clone(), *t)).collect();
        expected.extend(expected_changes_create_then_joins_in(chat, &of_chat));
    }
    assert_eq!(expected.len(), chats.len() * 3 + JOINS);
    collect_until(&cluster.tap, &mut events, &expected, Duration::from_secs(30), Duration::from_secs(2)).await;
    let duplicates = assert_published_exactly(&events, &expected);
    assert_create_first(&events, &chats);

    // After the last kill, each chat was processed by at most one survivor.
    let mut after = HashMap::new();
    for chat in &chats {
        let processed: Vec<usize> =
            alive.iter().copied().filter(|i| cluster.instances[*i].reconciled(chat) > at_last_kill[*i][chat]).collect();
        assert!(processed.len() <= 1, "{chat} processed by several survivors after the last kill: {processed:?}");
        after.insert(chat.clone(), processed);
    }
    let fetches = cluster.simc.stats().await.unwrap().groupchat_get;
    println!(
        "{INSTANCES} instances, {} chats, {JOINS} joins round-robin; killed (instance, joins accepted): {killed:?}; \
         processors after the last kill: {after:?}; {} callback attempts retried elsewhere; {} events, {} distinct, \
         {duplicates} duplicates; {fetches} groupchat/get; total {:?}",
        chats.len(),
        retries.load(Ordering::SeqCst),
        events.len(),
        expected.len(),
        started.elapsed()
    );
    cluster.finish(&alive).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_sigkill_the_active_consumer_mid_burst() {
    burst_with_kills(&[20]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_sigkill_two_active_consumers_one_after_the_other() {
    burst_with_kills(&[15, 35]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_process_a_chat_once() {
    const JOINS: i64 = 50;
    let started = Instant::now();
    let cluster = Cluster::start(&[CHAT]).await;
    let none = AtomicUsize::new(0);
    // Created through the last instance, which is not the active consumer.
    deliver(&cluster.replayers, INSTANCES - 1, &callback_xml(CHAT_CREATE_TIME, "create", None, &[], None), &none).await;
    let mut events = Vec::new();
    let created = expected_changes_create_then_joins(&[]);
    collect_until(&cluster.tap, &mut events, &created, Duration::from_secs(20), Duration::ZERO).await;
    cluster.simc.reset_stats().await.unwrap();
    let mut fetches_before = Vec::new();
    for s in &cluster.instances {
        fetches_before.push(s.fetches().await);
    }

    let joins: Vec<(String, i64)> = (0..JOINS).map(|i| (format!("wmONCE{i:02}"), FIRST_JOIN_TIME + i)).collect();
    let retries = AtomicUsize::new(0);
    let burst_started = Instant::now();
    for (i, (userid, join_time)) in joins.iter().enumerate() {
        let v = cluster.simc.add_member(CORP_ID, CHAT, external(userid, *join_time)).await.unwrap();
        let xml = callback_xml(join_time + 1, "update", Some("add_member"), &[userid], Some(&v));
        deliver(&cluster.replayers, i % INSTANCES, &xml, &retries).await;
    }
    let burst_took = burst_started.elapsed();
    let expected = expected_changes_create_then_joins(&joins);
    collect_until(&cluster.tap, &mut events, &expected, Duration::from_secs(30), Duration::from_secs(1)).await;
    let duplicates = assert_published_exactly(&events, &expected);
    assert_eq!(duplicates, 0, "no crash, no duplicates");
    assert_create_first(&events, &[CHAT.to_owned()]);

    let groupchat_get = cluster.simc.stats().await.unwrap().groupchat_get;
    let mut per_instance = Vec::new();
    for (i, s) in cluster.instances.iter().enumerate() {
        per_instance.push(s.fetches().await - fetches_before[i]);
    }
    let processors = cluster.processors(CHAT);
    assert_eq!(processors.len(), 1, "one instance reconciles the chat: {processors:?}");
    let fetching: Vec<usize> = (0..INSTANCES).filter(|i| per_instance[*i] > 0).collect();
    assert_eq!(fetching, vec![processors[0].0], "only the processing instance fetches: {per_instance:?}");
    assert_eq!(per_instance.iter().sum::<u64>(), groupchat_get, "every groupchat/get is one the instances counted");
    // Coalescing on one consumer: well under one fetch per callback. Three consumers racing on
    // the chat would each fetch for their share and find the others' versions stale.
    assert!(groupchat_get <= JOINS as u64 / 2, "{groupchat_get} groupchat/get for {JOINS} callbacks");
    println!(
        "single processing: {JOINS} joins to one chat round-robin over {INSTANCES} instances in {burst_took:?}; \
         groupchat/get {groupchat_get} (per instance {per_instance:?}); reconciled by instance {} in {} batches; \
         {} events; total {:?}",
        processors[0].0,
        processors[0].1,
        events.len(),
        started.elapsed()
    );
    let alive: Vec<usize> = (0..INSTANCES).collect();
    cluster.finish(&alive).await;
}
