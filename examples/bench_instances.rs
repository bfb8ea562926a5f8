//! Scale-out benchmark: events/s through the simulator with 1, 2 and 3 `groupwatch serve`
//! processes on one exchange and one PostgreSQL database, 200 chats, a simulated WeCom API
//! latency. Each process is the release binary; callbacks go round-robin to their ports. Reports
//! events/s, callback→publish p50/p99, `groupchat/get` calls and the CPU each process used.
//!
//! `cargo build --release && cargo run --release --example bench_instances -- [INSTANCES...]`
//! (default `1 2 3`). Environment: `AMQP_URL`, `PG_ADMIN_URL`
//! (`postgres://postgres@127.0.0.1:5432/postgres`), `API_LATENCY_MS` (30), `JOINS_PER_CHAT` (10),
//! `GROUPWATCH_BIN` (`target/release/groupwatch`).

use futures_util::StreamExt;
use groupwatch::config::Config;
use groupwatch::core::model::GroupEvent;
use groupwatch::sim::{self, SimClient, SimState};
use groupwatch::tools::replay::Replayer;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use serde_json::json;
use sqlx::Connection;
use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CORP: &str = "ww1234567890abcdef";
const CHATS: usize = 200;

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_owned())
}

fn callback(chat: &str, userid: &str, time: i64, version: &str) -> String {
    format!(
        "<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>\
         <CreateTime>{time}</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_external_chat]]></Event>\
         <ChatId><![CDATA[{chat}]]></ChatId><ChangeType><![CDATA[update]]></ChangeType>\
         <UpdateDetail><![CDATA[add_member]]></UpdateDetail><JoinScene>3</JoinScene><MemChangeCnt>1</MemChangeCnt>\
         <MemChangeList><Item><![CDATA[{userid}]]></Item></MemChangeList><CurMemVer><![CDATA[{version}]]></CurMemVer></xml>"
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// User plus system CPU time of a process so far, in seconds (Linux `/proc`).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds used so far by every process whose command name starts with `prefix`
/// (`beam.smp` is RabbitMQ, `postgres` PostgreSQL's backends).
fn cpu_seconds_named(prefix: &str) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else { return 0.0 };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end().starts_with(prefix))
        })
        .map(cpu_seconds)
        .sum()
}

/// (busy, total) jiffies of the whole machine, from the first line of /proc/stat.
fn machine_jiffies() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<f64> =
        stat.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    let total: f64 = fields.iter().sum();
    // idle and iowait are the 4th and 5th fields.
    let idle = fields.get(3).copied().unwrap_or(0.0) + fields.get(4).copied().unwrap_or(0.0);
    (total - idle, total)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

struct Instance {
    child: Child,
    port: u16,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-s", "TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let counts: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let counts = if counts.is_empty() { vec![1, 2, 3] } else { counts };
    let amqp = env_or("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f");
    let pg_admin = env_or("PG_ADMIN_URL", "postgres://postgres@127.0.0.1:5432/postgres");
    let latency_ms: u64 = env_or("API_LATENCY_MS", "30").parse()?;
    let joins_per_chat: usize = env_or("JOINS_PER_CHAT", "10").parse()?;
    let bin = env_or("GROUPWATCH_BIN", concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/groupwatch"));
    anyhow::ensure!(std::path::Path::new(&bin).exists(), "{bin} is missing: cargo build --release first");
    println!(
        "{CHATS} chats x {joins_per_chat} joins, simulated API latency {latency_ms} ms, {} CPUs",
        std::thread::available_parallelism()?
    );
    for n in counts {
        run(n, &bin, &amqp, &pg_admin, latency_ms, joins_per_chat).await?;
    }
    Ok(())
}

async fn run(
    n: usize,
    bin: &str,
    amqp: &str,
    pg_admin: &str,
    latency_ms: u64,
    joins_per_chat: usize,
) -> anyhow::Result<()> {
    let tag = format!("gwbench_inst_{}_{n}", std::process::id());
    let mut admin = sqlx::PgConnection::connect(pg_admin).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {tag}")).execute(&mut admin).await?;
    sqlx::query(&format!("CREATE DATABASE {tag}")).execute(&mut admin).await?;
    let store_url = format!("{}/{tag}", pg_admin.rsplit_once('/').unwrap().0);

    let chats: Vec<String> = (0..CHATS).map(|i| format!("wrSCALE{i:04}")).collect();
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
    let dir = std::env::temp_dir().join(&tag);
    std::fs::create_dir_all(&dir)?;

    let mut instances = Vec::new();
    let mut config = None;
    for i in 0..n {
        let (port, ops_port) = (free_port(), free_port());
        let toml = format!(
            "[http]\nlisten = \"127.0.0.1:{port}\"\nops_listen = \"127.0.0.1:{ops_port}\"\n\
             [amqp]\nurl = \"{amqp}\"\nexchange = \"{tag}\"\n[store]\nurl = \"{store_url}\"\n[log]\nlevel = \"warn\"\n\
             [worker]\napi_rate_per_minute = 100000\n\
             [[wecom]]\ntenant = \"bench\"\ncorp_id = \"{CORP}\"\ntoken = \"QDG6eK\"\n\
             encoding_aes_key = \"jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C\"\nsecret = \"bench\"\napi_base = \"{}\"\n\
             allow_documented_test_key = true\n",
            sim.base_url()
        );
        let path = dir.join(format!("i{i}.toml"));
        std::fs::write(&path, &toml)?;
        config.get_or_insert(Config::from_toml(&toml, std::iter::empty())?);
        let log = std::fs::File::create(dir.join(format!("i{i}.log")))?;
        let child = Command::new(bin)
            .args(["serve", "--config", path.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        instances.push(Instance { child, port });
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = reqwest::get(format!("http://127.0.0.1:{ops_port}/readyz")).await;
            if ready.is_ok_and(|r| r.status() == 200) {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "instance {i} not ready; see {}", dir.display());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Let the shards settle over the instances (a rebalance tick is 2.5 s by default).
    tokio::time::sleep(Duration::from_secs(if n > 1 { 8 } else { 1 })).await;
    let config = config.unwrap();
    let tenant = config.tenant("bench").unwrap().clone();
    let replayers: Vec<Arc<Replayer>> = instances
        .iter()
        .map(|i| Replayer::wecom(&tenant, &format!("http://127.0.0.1:{}/wecom/bench/callback", i.port)).map(Arc::new))
        .collect::<Result<_, _>>()?;

    let conn = lapin::Connection::connect(amqp, lapin::ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    let tap = ch
        .queue_declare("", QueueDeclareOptions { exclusive: true, ..Default::default() }, FieldTable::default())
        .await?;
    ch.queue_bind(tap.name().as_str(), &tag, "#", QueueBindOptions::default(), FieldTable::default()).await?;
    let mut consumer = ch
        .basic_consume(
            tap.name().as_str(),
            "",
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        )
        .await?;
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Default::default();
    let latencies: Arc<Mutex<Vec<f64>>> = Default::default();
    let creates = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    {
        let (sent, latencies, creates) = (sent.clone(), latencies.clone(), creates.clone());
        tokio::spawn(async move {
            while let Some(Ok(d)) = consumer.next().await {
                let Ok(e) = serde_json::from_slice::<GroupEvent>(&d.data) else { continue };
                match e.member {
                    Some(m) => {
                        if let Some(t) = sent.lock().unwrap().get(&m.userid) {
                            latencies.lock().unwrap().push(t.elapsed().as_secs_f64());
                        }
                    }
                    None => {
                        creates.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }
            }
        });
    }

    // The chats become known first (a create each), so the measured phase is steady work.
    for (i, chat) in chats.iter().enumerate() {
        let create = format!(
            "<xml><ToUserName>{CORP}</ToUserName><CreateTime>1600000000</CreateTime><MsgType>event</MsgType>\
             <Event>change_external_chat</Event><ChatId>{chat}</ChatId><ChangeType>create</ChangeType></xml>"
        );
        replayers[i % n].post(create.as_bytes()).await?;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while creates.load(std::sync::atomic::Ordering::SeqCst) < CHATS && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    simc.fault(json!({"latency_ms": latency_ms})).await?;
    simc.reset_stats().await?;

    // The joins: every chat's members are added in the simulator as the callbacks go out,
    // callbacks round-robin over the instances, 64 in flight.
    let total = CHATS * joins_per_chat;
    let mut work = Vec::with_capacity(total);
    for j in 0..joins_per_chat {
        for chat in &chats {
            let userid = format!("wm{chat}{j:03}");
            let join_time = 1700000000 + j as i64;
            let v = simc
                .add_member(CORP, chat, json!({"userid": userid, "type": 2, "join_time": join_time, "join_scene": 3}))
                .await?;
            work.push((callback(chat, &userid, join_time + 1, &v), userid));
        }
    }
    let cpu_before: Vec<f64> = instances.iter().map(|i| cpu_seconds(i.child.id())).collect();
    let (harness_before, machine_before) = (cpu_seconds(std::process::id()), machine_jiffies());
    let (broker_before, pg_before) = (cpu_seconds_named("beam.smp"), cpu_seconds_named("postgres"));
    let started = Instant::now();
    let posts = futures_util::stream::iter(work.into_iter().enumerate().map(|(k, (xml, userid))| {
        let replayer = replayers[k % n].clone();
        let sent = sent.clone();
        async move {
            sent.lock().unwrap().insert(userid, Instant::now());
            replayer.post(xml.as_bytes()).await
        }
    }))
    .buffer_unordered(64)
    .collect::<Vec<_>>()
    .await;
    let refused = posts.iter().filter(|p| !matches!(p, Ok(s) if s.is_success())).count();
    let deadline = Instant::now() + Duration::from_secs(300);
    while latencies.lock().unwrap().len() < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu: Vec<f64> =
        instances.iter().zip(&cpu_before).map(|(i, before)| (cpu_seconds(i.child.id()) - before) / elapsed).collect();
    let harness = (cpu_seconds(std::process::id()) - harness_before) / elapsed;
    let broker = (cpu_seconds_named("beam.smp") - broker_before) / elapsed;
    let pg = (cpu_seconds_named("postgres") - pg_before) / elapsed;
    let machine_after = machine_jiffies();
    let machine = (machine_after.0 - machine_before.0) / (machine_after.1 - machine_before.1).max(1.0);
    let mut l = latencies.lock().unwrap().clone();
    l.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let stats = simc.stats().await?;
    println!(
        "{n} instance(s): {} of {total} joins published in {elapsed:.2} s = {:.0} events/s; callback→publish p50 {:.0} ms, \
         p99 {:.0} ms; {} groupchat/get; CPU per instance {} (of 1 core); this harness (sender, simulator, \
         consumer) {:.0}%; RabbitMQ {:.0}%; PostgreSQL {:.0}%; the machine's {} cores {:.0}% busy; {refused} callbacks refused",
        l.len(),
        l.len() as f64 / elapsed,
        percentile(&l, 0.5) * 1000.0,
        percentile(&l, 0.99) * 1000.0,
        stats.groupchat_get,
        cpu.iter().map(|c| format!("{:.0}%", c * 100.0)).collect::<Vec<_>>().join(" / "),
        harness * 100.0,
        broker * 100.0,
        pg * 100.0,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        machine * 100.0
    );

    drop(instances);
    let topology = groupwatch::queue::broker::Topology::from_config(&config.amqp);
    for q in topology.queues() {
        let _ = ch.queue_delete(&q, QueueDeleteOptions::default()).await;
    }
    let _ = ch.exchange_delete(&tag, Default::default()).await;
    let _ = ch.exchange_delete(&topology.shards_marker(), Default::default()).await;
    let _ = conn.close(200, "done").await;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {tag} WITH (FORCE)")).execute(&mut admin).await?;
    let _ = std::fs::remove_dir_all(&dir);
    drop(sim);
    Ok(())
}
