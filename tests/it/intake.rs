//! The intake queue and its forwarder (`queue::forward`): every item handed off reaches its chat's
//! shard queue, at least once, in the intake's order per chat, however often the forwarder's
//! broker connection is cut; what is not an inbound batch is parked, and the rest goes on.

use crate::common::proxy::Proxy;
use crate::common::*;
use groupwatch::config::Config;
use groupwatch::core::model::Provider;
use groupwatch::core::report::{ChangeReport, ReportKind};
use groupwatch::queue::broker::Topology;
use groupwatch::queue::inbound::{self, InboundEvent, Work};
use lapin::options::{BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::BasicProperties;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::time::Duration;

const CHATS: usize = 10;

/// Publishes `body` to the intake queue, persistent and confirmed, as the front door does.
async fn to_intake(channel: &lapin::Channel, queue: &str, body: &[u8]) {
    let properties = BasicProperties::default().with_delivery_mode(2);
    let confirm = channel.basic_publish(
        "",
        queue,
        BasicPublishOptions { mandatory: true, ..Default::default() },
        body,
        properties,
    );
    let confirmation = confirm.await.unwrap().await.unwrap();
    assert!(confirmation.is_ack() && confirmation.take_message().is_none(), "the intake took the message");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_intake_reaches_each_chats_shard_in_order_through_broker_cuts() {
    let seed: u64 =
        std::env::var("GROUPWATCH_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    println!("seed {seed} (GROUPWATCH_TEST_SEED to repeat)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let proxy = Proxy::start("127.0.0.1:5672".parse().unwrap()).await;
    let exchange = unique_exchange();
    let store = TestStore::sqlite().await;
    let app = spawn_app(&TestConfig::new(&exchange, &store.url()).amqp_url(&proxy.amqp_url()).toml()).await;
    let conn = amqp().await;
    let channel = conn.create_channel().await.unwrap();
    channel.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let intake = app.topology.intake_queue();

    // 300 messages of 1 to 8 items over 10 chats; an item's `received_at_ms` is its place in the
    // intake's order. The app's connection is cut at random moments meanwhile.
    let mut sent: Vec<InboundEvent> = Vec::new();
    let mut cuts = 0;
    for message in 0..300 {
        let mut items = Vec::new();
        for _ in 0..rng.gen_range(1..=8) {
            let chat = format!("wrINTAKE{}", rng.gen_range(0..CHATS));
            let item = InboundEvent::request(Work::Reconcile, Provider::Wecom, TENANT, &chat, sent.len() as i64 + 1);
            sent.push(item.clone());
            items.push(item);
        }
        to_intake(&channel, &intake, &inbound::encode(&items)).await;
        if message % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(rng.gen_range(0..40))).await;
        }
        if rng.gen_ratio(1, 40) {
            proxy.cut();
            cuts += 1;
            tokio::time::sleep(Duration::from_millis(rng.gen_range(0..300))).await;
            proxy.restore();
        }
    }
    let found = drain_inbound(&conn, &app.topology).await;

    let mut copies: HashMap<&str, usize> = HashMap::new();
    let mut firsts: HashMap<&str, Vec<i64>> = HashMap::new();
    for (queue, item) in &found {
        assert_eq!(
            queue,
            &app.topology.inbound_queue(app.topology.shard_for(&item.chat_id)),
            "{} in its shard",
            item.id
        );
        let n = copies.entry(item.id.as_str()).or_default();
        *n += 1;
        if *n == 1 {
            firsts.entry(item.chat_id.as_str()).or_default().push(item.received_at_ms);
        }
    }
    for item in &sent {
        assert!(
            copies.contains_key(item.id.as_str()),
            "item {} of {} never reached its shard",
            item.received_at_ms,
            item.chat_id
        );
    }
    assert_eq!(copies.len(), sent.len(), "nothing but what was sent");
    for (chat, order) in &firsts {
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{chat}'s items keep the intake's order: {order:?}");
    }
    println!(
        "{} items in 300 intake messages, {cuts} cuts, {} broker connections made: {} copies in the shards, {} duplicates",
        sent.len(),
        proxy.forwarded(),
        found.len(),
        found.len() - sent.len()
    );
    let topology = app.topology.clone();
    app.stop().await;
    cleanup(&conn, &topology).await;
}

#[tokio::test]
async fn a_message_the_forwarder_cannot_read_is_parked_and_the_rest_goes_on() {
    let exchange = unique_exchange();
    let store = TestStore::sqlite().await;
    let app = spawn_app(&TestConfig::new(&exchange, &store.url()).toml()).await;
    let conn = amqp().await;
    let channel = conn.create_channel().await.unwrap();
    channel.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let intake = app.topology.intake_queue();
    let item = InboundEvent::request(Work::Reconcile, Provider::Wecom, TENANT, "wrINTAKEOK", 1);
    to_intake(&channel, &intake, b"{\"not\": \"a batch\"}").await;
    to_intake(&channel, &intake, &inbound::encode(std::slice::from_ref(&item))).await;

    let found = drain_inbound(&conn, &app.topology).await;
    assert_eq!(found.len(), 1, "the readable item was forwarded: {found:?}");
    assert_eq!(found[0].1, item);
    let dead = app.topology.dead_letter_queue();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while queue_len(&conn, &dead).await < 1 {
        assert!(std::time::Instant::now() < deadline, "the unreadable message was not parked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(queue_len(&conn, &dead).await, 1);
    let topology = app.topology.clone();
    app.stop().await;
    cleanup(&conn, &topology).await;
}

/// `queue::forward`'s most intake bytes in one forward.
const MAX_FORWARD_BYTES: usize = 4 << 20;
const ALNUM: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A backlog found at start (after an outage) is forwarded in pieces of at most 4 MiB of intake
/// messages, not in one forward of everything ready: with one shard and the worker off, each
/// forward is one message in `{exchange}.inbound.0`, so the pieces can be counted there. (The
/// first forward takes what has reached the forwarder, often one message; without the cap the
/// next takes all the rest, pieces of [1, 19] items instead of about [1, 10, 9].)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_is_forwarded_in_pieces_of_at_most_4_mib_in_order() {
    const ITEMS: usize = 20;
    const MEMBERS: usize = 13_000;
    let seed: u64 =
        std::env::var("GROUPWATCH_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    println!("seed {seed} (GROUPWATCH_TEST_SEED to repeat)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let exchange = unique_exchange();
    let store = TestStore::sqlite().await;
    let toml = TestConfig::new(&exchange, &store.url()).amqp_value("inbound_shards", 1).toml();
    let topology = Topology::from_config(&Config::from_toml(&toml, std::iter::empty()).unwrap().amqp);
    let conn = amqp().await;
    let channel = conn.create_channel().await.unwrap();
    // The queues as the app declares them, filled before it starts: its forwarder finds a backlog.
    topology.declare(&channel).await.unwrap();
    channel.confirm_select(ConfirmSelectOptions::default()).await.unwrap();

    // One item per intake message, each naming 13,000 random member ids (about 450 KB);
    // `received_at_ms` is the item's place in the intake's order.
    let mut sent: Vec<InboundEvent> = Vec::new();
    let mut smallest = usize::MAX;
    for i in 0..ITEMS {
        let mut noise = vec![0u8; 32 * MEMBERS];
        rng.fill(&mut noise[..]);
        let members = noise.chunks(32).map(|id| id.iter().map(|b| ALNUM[*b as usize % 62] as char).collect()).collect();
        let report = ChangeReport { members, ..ChangeReport::new(ReportKind::MembersJoined, i as i64, &[]) };
        let (key, at) = (format!("big{i}"), i as i64 + 1);
        let item = InboundEvent::change(Provider::Wecom, TENANT, "wrINTAKEBIG", key, false, vec![report], at);
        let body = inbound::encode(std::slice::from_ref(&item));
        smallest = smallest.min(body.len());
        to_intake(&channel, &topology.intake_queue(), &body).await;
        sent.push(item);
    }
    assert!(smallest > 300_000, "each intake message is large on the wire: the smallest is {smallest} bytes");
    // A forward takes another message while it holds fewer than the cap's bytes (`take_ready`),
    // so it holds at most this many.
    let most = MAX_FORWARD_BYTES.div_ceil(smallest);
    assert!(most < ITEMS, "the backlog ({ITEMS} messages of at least {smallest} bytes) exceeds one forward");

    let app = spawn_app(&toml).await;
    let shard = topology.inbound_queue(0);
    let get = conn.create_channel().await.unwrap();
    let mut pieces: Vec<Vec<InboundEvent>> = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while pieces.iter().map(Vec::len).sum::<usize>() < ITEMS {
        let sizes: Vec<usize> = pieces.iter().map(Vec::len).collect();
        assert!(std::time::Instant::now() < deadline, "the shard never held the {ITEMS} items, only {sizes:?}");
        match get.basic_get(&shard, BasicGetOptions { no_ack: true }).await.unwrap() {
            Some(msg) => pieces.push(inbound::decode(&msg.delivery.data).expect("a shard body is a batch").events),
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    // Nothing more comes: no copy, nothing left in the intake.
    assert_eq!(settle_intake(&conn, &topology).await, 0, "no item reached the shard twice");
    let sizes: Vec<usize> = pieces.iter().map(Vec::len).collect();
    println!("{ITEMS} intake messages of {smallest} bytes or more, forwarded in pieces of {sizes:?} items");

    // Compared by place first: a failing comparison of the items themselves would print megabytes.
    let order: Vec<i64> = pieces.iter().flatten().map(|item| item.received_at_ms).collect();
    assert_eq!(order, (1..=ITEMS as i64).collect::<Vec<_>>(), "every item reaches the shard once, in order");
    assert!(pieces.concat() == sent, "the items arrive as they were sent");
    assert!(
        sizes.iter().all(|n| *n <= most),
        "no forward carries more than {MAX_FORWARD_BYTES} bytes' worth ({most} items): {sizes:?}"
    );
    assert!(sizes.len() >= ITEMS.div_ceil(most), "the backlog took several forwards: {sizes:?}");
    app.stop().await;
    cleanup(&conn, &topology).await;
}
