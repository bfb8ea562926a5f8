//! The intake queue and its forwarder (`queue::forward`): every item handed off reaches its chat's
//! shard queue, at least once, in the intake's order per chat, however often the forwarder's
//! broker connection is cut; what is not an inbound batch is parked, and the rest goes on.

use crate::common::proxy::Proxy;
use crate::common::*;
use groupwatch::core::model::Provider;
use groupwatch::queue::inbound::{self, InboundEvent, Work};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
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
        to_intake(&channel, &intake, &inbound::message(&items).0).await;
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
    to_intake(&channel, &intake, &inbound::message(std::slice::from_ref(&item)).0).await;

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
