//! Pipeline benchmark: callbacks → published member events through the simulator with a
//! realistic API latency. Reports events/s, callback-to-publish p50/p99 and groupchat/get calls
//! per callback, for a burst of 500 joins to one chat within 2 s, for 40 chats × 25 joins, for
//! 50 isolated joins (each 600 ms after the previous one was published), and for a burst of 500
//! joins to a chat groupwatch has never seen.
//!
//! `cargo run --release --example bench_pipeline -- [AMQP_URL] [API_LATENCY_MS] [LEADING_EDGE]`
//! (`LEADING_EDGE` is `true`, the default, or `false`: `worker.leading_edge`).

use futures_util::StreamExt;
use groupwatch::app::Application;
use groupwatch::config::Config;
use groupwatch::core::model::GroupEvent;
use groupwatch::sim::{self, SimClient, SimState};
use groupwatch::tools::replay::Replayer;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CORP: &str = "ww1234567890abcdef";

fn callback(chat: &str, userid: &str, time: i64, version: &str) -> String {
    format!(
        "<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>\
         <CreateTime>{time}</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_external_chat]]></Event>\
         <ChatId><![CDATA[{chat}]]></ChatId><ChangeType><![CDATA[update]]></ChangeType>\
         <UpdateDetail><![CDATA[add_member]]></UpdateDetail><JoinScene>3</JoinScene><MemChangeCnt>1</MemChangeCnt>\
         <MemChangeList><Item><![CDATA[{userid}]]></Item></MemChangeList><CurMemVer><![CDATA[{version}]]></CurMemVer></xml>"
    )
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

struct Run {
    sent: Arc<Mutex<HashMap<String, Instant>>>,
    latencies: Arc<Mutex<Vec<f64>>>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let amqp = args.get(1).cloned().unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let latency_ms: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(30);
    let leading_edge: bool = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(true);
    // RUST_LOG=groupwatch=debug shows each fetch and reconciliation.
    groupwatch::telemetry::init_logging(&groupwatch::config::LogConfig {
        format: groupwatch::config::LogFormat::Text,
        level: "error".into(),
    });

    // 0..40 spread, 40 burst, 41 isolated, 42 first seen.
    let chats: Vec<String> = (0..43).map(|i| format!("wrBENCH{i:03}")).collect();
    let groups: Vec<_> = chats
        .iter()
        .map(|c| {
            json!({"chat_id": c, "name": "bench", "owner": "abel", "create_time": 1600000000,
            "member_list": [{"userid": "abel", "type": 1, "join_time": 1600000000, "join_scene": 1}]})
        })
        .collect();
    let state: SimState =
        serde_json::from_value(json!({"corps": [{"corp_id": CORP, "secret": "bench", "groups": groups}]}))?;
    let sim = sim::spawn(state, "127.0.0.1:0".parse()?).await?;
    let simc = SimClient::new(sim.base_url());
    let dir = std::env::temp_dir().join(format!("gwbench-pipeline-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let exchange = format!("gwbench-pipe-{}", std::process::id());
    let toml = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\nops_listen = \"127.0.0.1:0\"\n[amqp]\nurl = \"{amqp}\"\nexchange = \"{exchange}\"\n\
         [store]\nurl = \"sqlite://{}/gw.db\"\n[log]\nlevel = \"warn\"\n\
         [worker]\nleading_edge = {leading_edge}\n\
         [[wecom]]\ntenant = \"bench\"\ncorp_id = \"{CORP}\"\ntoken = \"QDG6eK\"\n\
         encoding_aes_key = \"jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C\"\nsecret = \"bench\"\napi_base = \"{}\"\n\
         allow_documented_test_key = true\n",
        dir.display(),
        sim.base_url()
    );
    let config = Config::from_toml(&toml, std::iter::empty())?;
    let tenant = config.tenant("bench").unwrap().clone();
    let app = Application::build(config).await?;
    app.broker().connected(Duration::from_secs(10)).await.map_err(|_| anyhow::anyhow!("no RabbitMQ"))?;
    let url = format!("http://{}/wecom/bench/callback", app.local_addr().unwrap());
    let topology = app.broker().topology().clone();
    let stop = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(app.run_until(stop.clone().cancelled_owned()));

    let conn = lapin::Connection::connect(&amqp, lapin::ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    let tap = ch
        .queue_declare("", QueueDeclareOptions { exclusive: true, ..Default::default() }, FieldTable::default())
        .await?;
    ch.queue_bind(tap.name().as_str(), &exchange, "#", QueueBindOptions::default(), FieldTable::default()).await?;
    let mut consumer = ch
        .basic_consume(
            tap.name().as_str(),
            "",
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        )
        .await?;
    let run = Run { sent: Default::default(), latencies: Default::default() };
    let (sent, latencies) = (run.sent.clone(), run.latencies.clone());
    tokio::spawn(async move {
        while let Some(Ok(d)) = consumer.next().await {
            let e: GroupEvent = serde_json::from_slice(&d.data).unwrap();
            if let Some(m) = e.member {
                if let Some(t) = sent.lock().unwrap().get(&m.userid) {
                    latencies.lock().unwrap().push(t.elapsed().as_secs_f64());
                }
            }
        }
    });
    simc.fault(json!({"latency_ms": latency_ms})).await?;
    let replayer = Arc::new(Replayer::wecom(&tenant, &url)?);
    println!("simulated WeCom API latency: {latency_ms} ms; worker.leading_edge = {leading_edge}");

    // The chats exist already (a burst hits a known group): one create callback each, then wait.
    // All but the last, which the first-seen burst meets for the first time.
    for chat in &chats[..42] {
        let create = format!(
            "<xml><ToUserName>{CORP}</ToUserName><CreateTime>1600000000</CreateTime><MsgType>event</MsgType>\
             <Event>change_external_chat</Event><ChatId>{chat}</ChatId><ChangeType>create</ChangeType></xml>"
        );
        replayer.post(create.as_bytes()).await?;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    // 1. A burst of 500 joins to one chat within 2 s.
    simc.reset_stats().await?;
    let started = Instant::now();
    for i in 0..500i64 {
        let userid = format!("wmBURST{i:04}");
        let v = simc
            .add_member(
                CORP,
                &chats[40],
                json!({"userid": userid, "type": 2, "join_time": 1700000000 + i, "join_scene": 3}),
            )
            .await?;
        let replayer = replayer.clone();
        let xml = callback(&chats[40], &userid, 1700000000 + i, &v);
        let sent = run.sent.clone();
        tokio::spawn(async move {
            sent.lock().unwrap().insert(userid, Instant::now());
            replayer.post(xml.as_bytes()).await
        });
        tokio::time::sleep_until((started + Duration::from_millis(4 * i as u64)).into()).await;
    }
    report("burst: 500 joins to one chat in 2 s", &run, &simc, 500, started).await?;

    // 2. 40 chats × 25 joins, as fast as they come.
    run.latencies.lock().unwrap().clear();
    simc.reset_stats().await?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for j in 0..25i64 {
        for chat in &chats[..40] {
            let userid = format!("wm{chat}{j:03}");
            let v = simc
                .add_member(
                    CORP,
                    chat,
                    json!({"userid": userid, "type": 2, "join_time": 1700001000 + j, "join_scene": 3}),
                )
                .await?;
            let replayer = replayer.clone();
            let xml = callback(chat, &userid, 1700001000 + j, &v);
            let sent = run.sent.clone();
            tasks.push(tokio::spawn(async move {
                sent.lock().unwrap().insert(userid, Instant::now());
                replayer.post(xml.as_bytes()).await
            }));
        }
    }
    report("spread: 40 chats x 25 joins", &run, &simc, 1000, started).await?;

    // 3. Isolated joins: one at a time, each published before the next is made.
    run.latencies.lock().unwrap().clear();
    simc.reset_stats().await?;
    let started = Instant::now();
    for i in 0..50i64 {
        let userid = format!("wmALONE{i:03}");
        let v = simc
            .add_member(
                CORP,
                &chats[41],
                json!({"userid": userid, "type": 2, "join_time": 1700002000 + i, "join_scene": 3}),
            )
            .await?;
        run.sent.lock().unwrap().insert(userid.clone(), Instant::now());
        replayer.post(callback(&chats[41], &userid, 1700002000 + i, &v).as_bytes()).await?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while run.latencies.lock().unwrap().len() < (i + 1) as usize && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // Isolated: the chat stays quiet for longer than worker.coalesce_ms (500 ms) before the
        // next change, as lone joins are; back to back they would be a slow burst.
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    report("isolated: 50 joins, each 600 ms after the last was published", &run, &simc, 50, started).await?;

    // 4. A burst of 500 joins within 2 s to a chat groupwatch has not seen before.
    run.latencies.lock().unwrap().clear();
    simc.reset_stats().await?;
    let started = Instant::now();
    for i in 0..500i64 {
        let userid = format!("wmFIRST{i:04}");
        let v = simc
            .add_member(
                CORP,
                &chats[42],
                json!({"userid": userid, "type": 2, "join_time": 1700003000 + i, "join_scene": 3}),
            )
            .await?;
        let replayer = replayer.clone();
        let xml = callback(&chats[42], &userid, 1700003000 + i, &v);
        let sent = run.sent.clone();
        tokio::spawn(async move {
            sent.lock().unwrap().insert(userid, Instant::now());
            replayer.post(xml.as_bytes()).await
        });
        tokio::time::sleep_until((started + Duration::from_millis(4 * i as u64)).into()).await;
    }
    report("first seen: 500 joins to a new chat in 2 s", &run, &simc, 500, started).await?;

    stop.cancel();
    let _ = running.await;
    for q in topology.queues() {
        let _ = ch.queue_delete(&q, QueueDeleteOptions::default()).await;
    }
    let _ = ch.exchange_delete(&exchange, Default::default()).await;
    let _ = ch.exchange_delete(&topology.shards_marker(), Default::default()).await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

async fn report(name: &str, run: &Run, simc: &SimClient, expected: usize, started: Instant) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while run.latencies.lock().unwrap().len() < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut l = run.latencies.lock().unwrap().clone();
    l.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let stats = simc.stats().await?;
    println!(
        "{name}: {} of {expected} joins published in {elapsed:.2} s ({:.0} events/s); callback→publish p50 {:.0} ms, p99 {:.0} ms; {} groupchat/get calls ({:.3} per callback)",
        l.len(),
        l.len() as f64 / elapsed,
        percentile(&l, 0.5) * 1000.0,
        percentile(&l, 0.99) * 1000.0,
        stats.groupchat_get,
        stats.groupchat_get as f64 / expected as f64
    );
    Ok(())
}
