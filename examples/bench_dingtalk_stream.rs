//! DingTalk Stream-mode benchmark through the simulator: member joins made in the simulated
//! DingTalk, pushed over the Stream WebSocket, handed off durably, ACKed, fetched with chat/get
//! and published. Reports the rate at which events are ACKed (the intake: frame → parse →
//! broker-confirmed hand-off → ACK) and published (end to end), for `N` joins spread over 40
//! chats, 16 changes in flight.
//!
//! `cargo run --release --example bench_dingtalk_stream -- [AMQP_URL] [N]`

use futures_util::StreamExt;
use groupwatch::app::Application;
use groupwatch::config::Config;
use groupwatch::sim::{self, DingtalkPush, SimClient, SimState};
use lapin::options::{BasicConsumeOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const APP: &str = "dingbenchappkey001";
const CHATS: usize = 40;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let amqp = args.get(1).cloned().unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(2000);
    groupwatch::telemetry::init_logging(&groupwatch::config::LogConfig {
        format: groupwatch::config::LogFormat::Text,
        level: "error".into(),
    });
    let chats: Vec<String> = (0..CHATS).map(|i| format!("chatbench{i:03}")).collect();
    let state: SimState = serde_json::from_value(json!({"corps": [], "dingtalk": [{
        "app_key": APP, "app_secret": "bench", "chats": chats.iter().enumerate().map(|(i, c)| json!({
            "chatid": c, "openConversationId": format!("cidbench{i:03}=="), "name": "bench", "owner": "owner",
            "useridlist": ["owner"]})).collect::<Vec<_>>()}]}))?;
    let sim = sim::spawn(state, "127.0.0.1:0".parse()?).await?;
    let simc = SimClient::new(sim.base_url());
    let dir = std::env::temp_dir().join(format!("gwbench-dingtalk-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let exchange = format!("gwbench-dt-{}", std::process::id());
    let toml = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\nops_listen = \"127.0.0.1:0\"\n[amqp]\nurl = \"{amqp}\"\nexchange = \"{exchange}\"\n\
         declare_default_queues = false\n[store]\nurl = \"sqlite://{}/gw.db\"\n[log]\nlevel = \"error\"\n\
         [[dingtalk]]\ntenant = \"bench\"\napp_key = \"{APP}\"\napp_secret = \"bench\"\napi_base = \"{sim}\"\nstream_base = \"{sim}\"\n",
        dir.display(),
        sim = sim.base_url()
    );
    let config = Config::from_toml(&toml, std::iter::empty())?;
    let app = Application::build(config).await?;
    let readiness = app.readiness();
    let stop = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(app.run_until(stop.clone().cancelled_owned()));
    let deadline = Instant::now() + Duration::from_secs(20);
    while readiness.check().await.is_err() {
        anyhow::ensure!(Instant::now() < deadline, "not ready: {:?}", readiness.check().await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let conn = lapin::Connection::connect(&amqp, lapin::ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    let tap = ch
        .queue_declare("", QueueDeclareOptions { exclusive: true, ..Default::default() }, FieldTable::default())
        .await?;
    ch.queue_bind(tap.name().as_str(), &exchange, "#.member.join", QueueBindOptions::default(), FieldTable::default())
        .await?;
    let mut consumer = ch
        .basic_consume(
            tap.name().as_str(),
            "",
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        )
        .await?;
    let published = Arc::new(AtomicUsize::new(0));
    let counted = published.clone();
    tokio::spawn(async move {
        while let Some(Ok(_)) = consumer.next().await {
            counted.fetch_add(1, Ordering::SeqCst);
        }
    });

    // Each chat's first event makes it known (a baseline): not measured.
    for chat in &chats {
        simc.dingtalk_add_members(APP, chat, &[&format!("{chat}-first")], Some(&DingtalkPush::camel())).await?;
    }
    while published.load(Ordering::SeqCst) < CHATS {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    simc.dingtalk_reset_stats().await?;
    published.store(0, Ordering::SeqCst);

    let started = Instant::now();
    let made = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..16)
        .map(|_| {
            let (simc, chats, made) = (simc.clone(), chats.clone(), made.clone());
            tokio::spawn(async move {
                loop {
                    let i = made.fetch_add(1, Ordering::SeqCst);
                    if i >= n {
                        return;
                    }
                    let chat = &chats[i % CHATS];
                    let user = format!("u{i:06}");
                    let push = DingtalkPush::camel();
                    simc.dingtalk_add_members(APP, chat, &[&user], Some(&push)).await.expect("sim change");
                }
            })
        })
        .collect();
    for w in workers {
        w.await?;
    }
    let pushed_in = started.elapsed();
    let (mut acked_in, mut published_in) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(120);
    while (acked_in.is_none() || published_in.is_none()) && Instant::now() < deadline {
        // The simulator keeps 512 events per app: ACKs of events it already let go count as
        // unknown frames, still ACKs sent after the hand-off.
        let stats = simc.dingtalk_stats().await?;
        if acked_in.is_none() && (stats.acks_success + stats.unknown_frames) as usize >= n {
            acked_in = Some(started.elapsed());
        }
        if published_in.is_none() && published.load(Ordering::SeqCst) >= n {
            published_in = Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (acked_in, published_in) = (acked_in.unwrap_or(deadline - started), published_in.unwrap_or(deadline - started));
    let stats = simc.dingtalk_stats().await?;
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    println!("{n} joins over {CHATS} chats, 16 changes in flight (simulator admin calls):");
    println!("  pushed by the simulator in {:.2} s ({:.0}/s)", pushed_in.as_secs_f64(), rate(pushed_in));
    println!(
        "  ACKed SUCCESS (after the durable hand-off) in {:.2} s: {:.0} events/s; LATER {}, \
         ACKs of events the simulator had let go {}, redeliveries {}",
        acked_in.as_secs_f64(),
        rate(acked_in),
        stats.acks_later,
        stats.unknown_frames,
        stats.redeliveries
    );
    println!(
        "  member.join published: {} in {:.2} s: {:.0} events/s; chat/get calls {} ({:.2} per event)",
        published.load(Ordering::SeqCst),
        published_in.as_secs_f64(),
        published.load(Ordering::SeqCst) as f64 / published_in.as_secs_f64(),
        stats.chat_get,
        stats.chat_get as f64 / n as f64
    );
    stop.cancel();
    let _ = running.await;
    let _ = ch.exchange_delete(&exchange, ExchangeDeleteOptions::default()).await;
    for i in 0..16 {
        let _ = ch.queue_delete(&format!("{exchange}.inbound.{i}"), Default::default()).await;
    }
    let _ = ch.queue_delete(&format!("{exchange}.dead"), Default::default()).await;
    let _ = ch.exchange_delete(&format!("{exchange}.inbound.shards"), ExchangeDeleteOptions::default()).await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
