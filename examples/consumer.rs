//! A minimal groupwatch consumer: reads one of the default queues, prints one line per event,
//! deduplicates by event id, and acknowledges each message only after it has been handled.
//!
//! ```text
//! cargo run --example consumer -- --amqp-url amqp://guest:guest@127.0.0.1:5672/%2f \
//!     --queue groupwatch.member.join
//! ```
//!
//! It declares nothing: the queue must already exist (groupwatch declares
//! `{exchange}.member.join` and `{exchange}.member.leave` when `amqp.declare_default_queues` is
//! on). To consume other events, declare and bind your own queue (see `docs/consumers.md`).
//!
//! Delivery is at least once: after a crash, a lost ack or a broker restart the same event can
//! arrive again, always with the same `id`. Ctrl-C (or SIGTERM) stops consuming; messages
//! delivered but not yet acknowledged go back to the queue.

use clap::Parser;
use futures_util::StreamExt;
use groupwatch::core::model::GroupEvent;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(about = "Consume groupwatch events from a queue, print them, ack after handling")]
struct Args {
    /// The broker to connect to.
    #[arg(long, env = "AMQP_URL", default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    amqp_url: String,
    /// The queue to consume. It must exist; this example declares nothing.
    #[arg(long, default_value = "groupwatch.member.join")]
    queue: String,
    /// Unacknowledged messages the broker may send ahead (basic.qos prefetch count).
    #[arg(long, default_value_t = 100)]
    prefetch: u16,
    /// How many event ids to remember for deduplication.
    #[arg(long, default_value_t = 100_000)]
    dedupe_capacity: usize,
    /// How long to remember an event id, in seconds.
    #[arg(long, default_value_t = 24 * 3600)]
    dedupe_ttl_secs: u64,
}

/// Remembers recently handled event ids, bounded in count and in age (oldest forgotten first).
///
/// This is enough for a demo and catches the common case (a redelivery shortly after a
/// reconnect), but it forgets everything on restart and is not shared between instances.
/// A production consumer should record the event `id` under a unique key in its own database,
/// in the same transaction as the effect of handling the event (for example
/// `INSERT INTO handled_events (id) VALUES ($1) ON CONFLICT DO NOTHING`, and skip the event when
/// no row was inserted), so that "handled" and "seen" can never disagree.
struct SeenIds {
    at: HashMap<String, Instant>,
    order: VecDeque<(String, Instant)>,
    capacity: usize,
    ttl: Duration,
}

impl SeenIds {
    fn new(capacity: usize, ttl: Duration) -> Self {
        Self { at: HashMap::new(), order: VecDeque::new(), capacity: capacity.max(1), ttl }
    }

    fn contains(&mut self, id: &str) -> bool {
        self.expire(Instant::now());
        self.at.contains_key(id)
    }

    fn insert(&mut self, id: String) {
        let now = Instant::now();
        self.expire(now);
        self.at.insert(id.clone(), now);
        self.order.push_back((id, now));
        while self.at.len() > self.capacity {
            self.pop_oldest();
        }
    }

    fn expire(&mut self, now: Instant) {
        while self.order.front().is_some_and(|(_, t)| now.duration_since(*t) > self.ttl) {
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        if let Some((id, t)) = self.order.pop_front() {
            // Only forget the id if this queue entry is the one that recorded it.
            if self.at.get(&id) == Some(&t) {
                self.at.remove(&id);
            }
        }
    }
}

/// What to do with one delivery once it has been looked at.
enum Outcome {
    Handled,
    Duplicate,
    /// Not a groupwatch event: retrying cannot help, so it is rejected without requeueing (the
    /// broker dead-letters it if the queue has a dead-letter exchange, else drops it).
    Poison(String),
}

fn handle(delivery: &Delivery, seen: &mut SeenIds) -> Outcome {
    let event: GroupEvent = match serde_json::from_slice(&delivery.data) {
        Ok(event) => event,
        Err(e) => return Outcome::Poison(format!("body is not a groupwatch event: {e}")),
    };
    // The AMQP message_id equals the body's id; the body is the authority.
    if seen.contains(&event.id) {
        return Outcome::Duplicate;
    }

    // Your handling goes here. If it fails for a reason that may pass (a database is down),
    // return early without recording the id and nack with requeue instead of acking.
    let member = event.member.as_ref().map_or("-", |m| m.userid.as_str());
    let occurred = event.occurred_at.map_or_else(|| "-".to_owned(), |t| t.to_string());
    println!(
        "{occurred} {kind} {provider}/{tenant} chat={chat} member={member} members_now={count} id={id}{again}",
        kind = event.event_type.as_str(),
        provider = event.provider,
        tenant = event.tenant,
        chat = event.chat_id,
        count = event.group.member_count,
        id = event.id,
        again = if delivery.redelivered { " (redelivered)" } else { "" },
    );

    seen.insert(event.id);
    Outcome::Handled
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("can listen for SIGTERM");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("consumer: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let props = ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio)
        .with_connection_name("groupwatch-example-consumer".into());
    let connection = Connection::connect(&args.amqp_url, props)
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to the broker: {e}"))?;
    let channel = connection.create_channel().await?;
    channel.basic_qos(args.prefetch, BasicQosOptions::default()).await?;

    let tag = format!("groupwatch-example-{}", std::process::id());
    let mut consumer = channel
        .basic_consume(&args.queue, &tag, BasicConsumeOptions::default(), FieldTable::default())
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot consume from {:?} ({e}); is groupwatch running with declare_default_queues, \
                 or did you declare and bind this queue yourself?",
                args.queue
            )
        })?;
    eprintln!("consuming {} (prefetch {}); Ctrl-C to stop", args.queue, args.prefetch);

    let mut seen = SeenIds::new(args.dedupe_capacity, Duration::from_secs(args.dedupe_ttl_secs));
    let (mut handled, mut duplicates) = (0u64, 0u64);
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);

    loop {
        let delivery = tokio::select! {
            _ = &mut shutdown => break,
            next = consumer.next() => match next {
                Some(Ok(delivery)) => delivery,
                Some(Err(e)) => return Err(anyhow::anyhow!("consumer failed: {e}")),
                None => {
                    eprintln!("the broker cancelled the consumer (queue deleted?)");
                    break;
                }
            },
        };
        match handle(&delivery, &mut seen) {
            Outcome::Handled => {
                handled += 1;
                delivery.ack(BasicAckOptions::default()).await?;
            }
            Outcome::Duplicate => {
                duplicates += 1;
                // Already handled: acknowledge so the broker forgets it.
                delivery.ack(BasicAckOptions::default()).await?;
            }
            Outcome::Poison(reason) => {
                eprintln!("rejecting delivery {} on {}: {reason}", delivery.delivery_tag, delivery.routing_key);
                delivery.nack(BasicNackOptions { requeue: false, multiple: false }).await?;
            }
        }
    }

    // Stop deliveries, then close: anything delivered but unacknowledged is requeued by the broker.
    let _ = channel.basic_cancel(&tag, BasicCancelOptions::default()).await;
    let _ = channel.close(200, "consumer stopping").await;
    let _ = connection.close(200, "consumer stopping").await;
    eprintln!("stopped: {handled} handled, {duplicates} duplicates skipped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::SeenIds;
    use std::time::Duration;

    #[test]
    fn seen_ids_are_bounded_by_count_and_age() {
        let mut seen = SeenIds::new(2, Duration::from_secs(60));
        seen.insert("a".into());
        seen.insert("b".into());
        assert!(seen.contains("a") && seen.contains("b"));
        seen.insert("c".into());
        assert!(!seen.contains("a") && seen.contains("b") && seen.contains("c"));

        let mut short = SeenIds::new(10, Duration::ZERO);
        short.insert("a".into());
        std::thread::sleep(Duration::from_millis(2));
        assert!(!short.contains("a"));
    }
}
