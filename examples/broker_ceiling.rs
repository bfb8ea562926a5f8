//! The broker's own ceiling: a bare lapin publish loop of persistent, confirmed 1 KiB messages to
//! a durable queue, one at a time and with many in flight. groupwatch's ingest cannot beat these
//! per-message figures without batching, which is why the hand-off is group-committed.
//!
//! `cargo run --release --example broker_ceiling -- [AMQP_URL] [MESSAGES] [BYTES]`

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use std::collections::VecDeque;
use std::time::Instant;

#[tokio::main]
async fn main() -> Result<(), lapin::Error> {
    let args: Vec<String> = std::env::args().collect();
    let url = args.get(1).cloned().unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let messages: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let bytes: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1024);
    let props = ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio);
    let conn = Connection::connect(&url, props).await?;
    let channel = conn.create_channel().await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    let queue = "gwbench.ceiling";
    channel
        .queue_declare(queue, QueueDeclareOptions { durable: true, ..Default::default() }, FieldTable::default())
        .await?;
    let payload = vec![b'x'; bytes];
    let persistent = BasicProperties::default().with_delivery_mode(2);

    for in_flight in [1usize, 16, 256, 1024] {
        let count = if in_flight == 1 { messages / 4 } else { messages };
        let started = Instant::now();
        let mut pending = VecDeque::with_capacity(in_flight);
        for _ in 0..count {
            if pending.len() == in_flight {
                let confirm: lapin::publisher_confirm::PublisherConfirm = pending.pop_front().unwrap();
                confirm.await?;
            }
            let confirm =
                channel.basic_publish("", queue, BasicPublishOptions::default(), &payload, persistent.clone()).await?;
            pending.push_back(confirm);
        }
        for confirm in pending {
            confirm.await?;
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{in_flight:>5} in flight: {count} persistent confirmed {bytes}-byte messages in {secs:.2} s = {:.0} msg/s, {:.2} ms each",
            count as f64 / secs,
            secs * 1000.0 / count as f64 * in_flight as f64
        );
    }
    channel.queue_delete(queue, QueueDeleteOptions::default()).await?;

    // A group-commit flush as the hand-off makes it: 27 callbacks of ~1 KiB (32 connections'
    // worth) split over the shard queues they hash to, published back to back and confirmed
    // together. What one flush costs as it touches more queues, on classic queues v1 and v2.
    let flushes = (messages / 20).max(200);
    for version in [1i32, 2] {
        for touched in [1usize, 4, 14] {
            let queues: Vec<String> = (0..touched).map(|q| format!("gwbench.ceiling.v{version}.{q}")).collect();
            let mut args = FieldTable::default();
            args.insert("x-queue-version".into(), lapin::types::AMQPValue::LongInt(version));
            for q in &queues {
                channel
                    .queue_declare(q, QueueDeclareOptions { durable: true, ..Default::default() }, args.clone())
                    .await?;
            }
            let body = vec![b'x'; 27 * bytes / touched];
            let mut took = Vec::with_capacity(flushes);
            let started = Instant::now();
            for _ in 0..flushes {
                let flush = Instant::now();
                let mut pending = Vec::with_capacity(touched);
                for q in &queues {
                    pending.push(
                        channel.basic_publish("", q, BasicPublishOptions::default(), &body, persistent.clone()).await?,
                    );
                }
                for confirm in pending {
                    confirm.await?;
                }
                took.push(flush.elapsed().as_secs_f64() * 1000.0);
            }
            let secs = started.elapsed().as_secs_f64();
            took.sort_by(f64::total_cmp);
            println!(
                "CQv{version}, a flush of 27 x {bytes} B over {touched:>2} queues: {:.0} flushes/s ({:.0} callbacks/s), p50 {:.2} ms, p99 {:.2} ms",
                flushes as f64 / secs,
                27.0 * flushes as f64 / secs,
                took[flushes / 2],
                took[flushes * 99 / 100]
            );
            for q in &queues {
                channel.queue_delete(q, QueueDeleteOptions::default()).await?;
            }
        }
    }
    conn.close(200, "done").await?;
    Ok(())
}
