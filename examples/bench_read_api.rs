//! Read API benchmark: a store seeded with 100,000 groups of 200 members (and 5 events each),
//! 64 concurrent readers on the four routes while callbacks are processed, and the effect of
//! those readers on callback→publish latency.
//!
//! ```text
//! cargo run --release --example bench_read_api -- sqlite|postgres [--groups N] [--members M]
//!     [--readers R] [--rate PER_READER_PER_S] [--seconds S] [--callbacks PER_S]
//! ```
//!
//! The seeded store is kept between runs (`/tmp/gw-bench-read/gw.db`, or the PostgreSQL
//! database `gw_bench_read` at `GROUPWATCH_BENCH_PG`, default postgres://postgres@127.0.0.1:5432)
//! and seeded again only when its group count differs. Each run measures the pipeline alone,
//! then the same pipeline load with the readers, then alone again; the pipeline's figure
//! "without readers" is the mean of the two runs alone. `--rate 0` makes the readers closed-loop
//! (each sends its next request as soon as the last is answered: the throughput ceiling).
//!
//! SQLite: the bench prints the share of the store file in the page cache when the readers start
//! (from `fincore`). Reads that miss it wait for the disk. The start-up checks scan the members
//! index, so it is normally nearly all of it; after seeding, the kernel is still writing the new
//! file back to disk for a few minutes, and those runs are slow.

use futures_util::StreamExt;
use groupwatch::app::Application;
use groupwatch::config::Config;
use groupwatch::core::model::{EventType, GroupEvent, GroupSummary, Member, Provider};
use groupwatch::sim::{self, SimClient, SimState};
use groupwatch::store::OutboxEvent;
use groupwatch::tools::replay::Replayer;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use rand::Rng;
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CORP: &str = "ww1234567890abcdef";
const TENANT: &str = "bench";
const TOKEN: &str = "bench-read-token-0123456789";
/// Distinct member ids; member m of group g is user (g + 5000 m) mod USERS, so each user is in
/// about groups × members / USERS groups (20 with the defaults).
const USERS: usize = 1_000_000;
const EVENTS_PER_GROUP: i64 = 5;
const SQLITE_FILE: &str = "/tmp/gw-bench-read/gw.db";
const ROUTES: [&str; 4] = ["snapshot", "member-groups", "events", "groups"];

struct Args {
    store: String,
    groups: usize,
    members: usize,
    readers: usize,
    rate: f64,
    seconds: u64,
    callbacks: u64,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        store: String::new(),
        groups: 100_000,
        members: 200,
        readers: 64,
        rate: 20.0,
        seconds: 20,
        callbacks: 40,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| anyhow::anyhow!("{arg} needs a value"));
        match arg.as_str() {
            "--groups" => a.groups = value()?.parse()?,
            "--members" => a.members = value()?.parse()?,
            "--readers" => a.readers = value()?.parse()?,
            "--rate" => a.rate = value()?.parse()?,
            "--seconds" => a.seconds = value()?.parse()?,
            "--callbacks" => a.callbacks = value()?.parse()?,
            "sqlite" | "postgres" => a.store = arg.clone(),
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    anyhow::ensure!(!a.store.is_empty(), "usage: bench_read_api sqlite|postgres [options]");
    anyhow::ensure!(a.members <= 200 && a.members * 5000 <= USERS, "--members at most 200");
    Ok(a)
}

fn seed_chat(g: usize) -> String {
    format!("wrSEED{g:06}")
}

fn seed_user(u: usize) -> String {
    format!("wmU{u:07}")
}

/// Group g's members, sorted by userid as every stored snapshot is.
fn seed_members(g: usize, members: usize) -> Vec<Member> {
    let mut out: Vec<Member> = (0..members)
        .map(|m| Member {
            userid: seed_user((g + 5000 * m) % USERS),
            member_type: Some(2),
            unionid: None,
            join_time: Some(1_600_000_000 + m as i64),
            join_scene: Some(3),
            invitor: Some("abel".into()),
            group_nickname: None,
            name: Some(format!("客户{}", (g + 5000 * m) % USERS)),
            state: None,
            role: None,
        })
        .collect();
    out.sort_by(|a, b| a.userid.cmp(&b.userid));
    out
}

fn seed_events(g: usize, members: &[Member]) -> Vec<OutboxEvent> {
    let chat = seed_chat(g);
    let summary = GroupSummary {
        name: format!("group {g}"),
        owner: "abel".into(),
        member_version: Some("v1".into()),
        member_count: members.len(),
    };
    (1..=EVENTS_PER_GROUP)
        .map(|seq| {
            let member = members.get(seq as usize - 1).cloned();
            let event = GroupEvent {
                id: format!("seed-{g}-{seq}"),
                event_type: if seq == 1 { EventType::GroupCreate } else { EventType::MemberJoin },
                provider: Provider::Wecom,
                tenant: TENANT.into(),
                chat_id: chat.clone(),
                seq,
                occurred_at: Some(1_600_000_000),
                group: summary.clone(),
                member: if seq == 1 { None } else { member },
                quit_scene: None,
                changes: None,
            };
            OutboxEvent::of(&event)
        })
        .collect()
}

/// Inserts groups `0..groups` in transactions of 100 groups: snapshots, their members index rows
/// and their events, in the format `commit` writes.
macro_rules! seed_into {
    ($pool:expr, $groups:expr, $members:expr) => {{
        let pool = $pool;
        let now = groupwatch::core::clock::now_ms();
        let started = Instant::now();
        for first in (0..$groups).step_by(100) {
            let last = (first + 100).min($groups);
            let mut tx = pool.begin().await?;
            let mut snapshots = sqlx::QueryBuilder::new(
                "INSERT INTO group_snapshots (provider, tenant, chat_id, name, owner, notice, create_time, \
                 member_version, dismissed, admins, members, updated_at_ms, last_seq, revision, replaced, checked_at_ms) ",
            );
            let all: Vec<(usize, Vec<Member>)> = (first..last).map(|g| (g, seed_members(g, $members))).collect();
            snapshots.push_values(&all, |mut b, (g, members)| {
                b.push_bind("wecom")
                    .push_bind(TENANT)
                    .push_bind(seed_chat(*g))
                    .push_bind(format!("group {g}"))
                    .push_bind("abel")
                    .push_bind("")
                    .push_bind(1_600_000_000i64)
                    .push_bind("v1")
                    .push_bind(false)
                    .push_bind("[]")
                    .push_bind(serde_json::to_string(members).unwrap())
                    .push_bind(now)
                    .push_bind(EVENTS_PER_GROUP)
                    .push_bind(1i64)
                    .push_bind("[]")
                    .push_bind(0i64);
            });
            snapshots.build().execute(&mut *tx).await?;
            let rows: Vec<(usize, &Member)> = all.iter().flat_map(|(g, ms)| ms.iter().map(move |m| (*g, m))).collect();
            for chunk in rows.chunks(1000) {
                let mut index =
                    sqlx::QueryBuilder::new("INSERT INTO group_members (provider, tenant, chat_id, userid, join_time) ");
                index.push_values(chunk, |mut b, (g, m)| {
                    b.push_bind("wecom").push_bind(TENANT).push_bind(seed_chat(*g)).push_bind(&m.userid).push_bind(m.join_time);
                });
                index.build().execute(&mut *tx).await?;
            }
            let events: Vec<(usize, OutboxEvent)> =
                all.iter().flat_map(|(g, ms)| seed_events(*g, ms).into_iter().map(move |e| (*g, e))).collect();
            let mut history = sqlx::QueryBuilder::new(
                "INSERT INTO group_events (provider, tenant, chat_id, seq, id, event_type, routing_key, body, \
                 created_at_ms, published_at_ms) ",
            );
            history.push_values(&events, |mut b, (g, e)| {
                b.push_bind("wecom")
                    .push_bind(TENANT)
                    .push_bind(seed_chat(*g))
                    .push_bind(e.seq)
                    .push_bind(&e.id)
                    .push_bind(&e.event_type)
                    .push_bind(&e.routing_key)
                    .push_bind(&e.body)
                    .push_bind(now)
                    .push_bind(now);
            });
            history.build().execute(&mut *tx).await?;
            tx.commit().await?;
            if last % 10_000 == 0 {
                eprintln!("seeded {last} groups in {:.0} s", started.elapsed().as_secs_f64());
            }
        }
    }};
}

/// Seeds the store unless it already holds exactly `groups` seeded groups of `members`.
async fn seed(url: &str, groups: usize, members: usize) -> anyhow::Result<()> {
    groupwatch::store::connect(url).await?; // migrations
    let count_sql = "SELECT COUNT(*) FROM group_snapshots WHERE provider = 'wecom' AND tenant = 'bench'";
    let probe_sql =
        "SELECT COUNT(*) FROM group_members WHERE provider = 'wecom' AND tenant = 'bench' AND chat_id = 'wrSEED000000'";
    let clear = [
        "DELETE FROM group_members WHERE tenant = 'bench'",
        "DELETE FROM group_events WHERE tenant = 'bench'",
        "DELETE FROM group_snapshots WHERE tenant = 'bench'",
        "DELETE FROM applied_items WHERE tenant = 'bench'",
    ];
    if url.starts_with("sqlite:") {
        let pool = sqlx::sqlite::SqlitePoolOptions::new().max_connections(1).connect(url).await?;
        let (n, m): (i64, i64) = (
            sqlx::query_scalar(count_sql).fetch_one(&pool).await?,
            sqlx::query_scalar(probe_sql).fetch_one(&pool).await?,
        );
        if n as usize == groups && m as usize == members {
            return Ok(());
        }
        for sql in clear {
            sqlx::query(sql).execute(&pool).await?;
        }
        seed_into!(&pool, groups, members);
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&pool).await?;
        sqlx::query("ANALYZE").execute(&pool).await?;
    } else {
        let pool = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(url).await?;
        let (n, m): (i64, i64) = (
            sqlx::query_scalar(count_sql).fetch_one(&pool).await?,
            sqlx::query_scalar(probe_sql).fetch_one(&pool).await?,
        );
        if n as usize == groups && m as usize == members {
            return Ok(());
        }
        for sql in clear {
            sqlx::query(sql).execute(&pool).await?;
        }
        seed_into!(&pool, groups, members);
        sqlx::query("VACUUM ANALYZE").execute(&pool).await?;
    }
    Ok(())
}

async fn store_url(kind: &str) -> anyhow::Result<String> {
    if kind == "sqlite" {
        std::fs::create_dir_all("/tmp/gw-bench-read")?;
        return Ok(format!("sqlite://{SQLITE_FILE}"));
    }
    use sqlx::Connection;
    let server = std::env::var("GROUPWATCH_BENCH_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let mut admin = sqlx::PgConnection::connect(&format!("{server}/postgres")).await?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'gw_bench_read')")
        .fetch_one(&mut admin)
        .await?;
    if !exists {
        sqlx::query("CREATE DATABASE gw_bench_read").execute(&mut admin).await?;
    }
    Ok(format!("{server}/gw_bench_read"))
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

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn summary(mut v: Vec<f64>) -> (usize, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v.len(), percentile(&v, 0.5) * 1000.0, percentile(&v, 0.99) * 1000.0)
}

/// The pipeline's load: joins to the bench chats through the simulator and signed callbacks, and
/// where their callback→publish latencies are collected.
struct Load {
    simc: SimClient,
    replayer: Arc<Replayer>,
    chats: Vec<String>,
    sent: Arc<Mutex<HashMap<String, Instant>>>,
    latencies: Arc<Mutex<Vec<f64>>>,
    rate: u64,
}

impl Load {
    /// `rate` callbacks per second for `seconds`, spread over the chats; returns the
    /// callback→publish latencies.
    async fn run(&self, phase: &str, seconds: u64) -> anyhow::Result<Vec<f64>> {
        let (rate, latencies) = (self.rate, &self.latencies);
        latencies.lock().unwrap().clear();
        let total = rate * seconds;
        let started = Instant::now();
        let mut tasks = Vec::new();
        for i in 0..total {
            let chat = &self.chats[i as usize % self.chats.len()];
            let userid = format!("wm{phase}{i:06}");
            let join_time = 1_700_000_000 + i as i64;
            let v = self
                .simc
                .add_member(CORP, chat, json!({"userid": userid, "type": 2, "join_time": join_time, "join_scene": 3}))
                .await?;
            let xml = callback(chat, &userid, join_time, &v);
            let (replayer, sent) = (self.replayer.clone(), self.sent.clone());
            tasks.push(tokio::spawn(async move {
                sent.lock().unwrap().insert(userid, Instant::now());
                replayer.post(xml.as_bytes()).await
            }));
            tokio::time::sleep_until((started + Duration::from_micros(i * 1_000_000 / rate)).into()).await;
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while latencies.lock().unwrap().len() < total as usize && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let got = latencies.lock().unwrap().clone();
        anyhow::ensure!(got.len() == total as usize, "{phase}: {} of {total} joins published", got.len());
        Ok(got)
    }
}

/// One reader: cycles through the routes on random seeded groups and members.
async fn reader(
    id: usize,
    base: String,
    client: reqwest::Client,
    groups: usize,
    rate: f64,
    until: Instant,
) -> anyhow::Result<[Vec<f64>; 4]> {
    let mut out: [Vec<f64>; 4] = Default::default();
    let interval = (rate > 0.0).then(|| Duration::from_secs_f64(1.0 / rate));
    let mut next = Instant::now() + interval.map(|i| i.mul_f64(id as f64 / 64.0)).unwrap_or_default();
    let mut i = id;
    while Instant::now() < until {
        if interval.is_some() {
            tokio::time::sleep_until(next.into()).await;
        }
        let route = i % ROUTES.len();
        i += 1;
        let (g, u) = {
            let mut rng = rand::thread_rng();
            (rng.gen_range(0..groups), rng.gen_range(0..USERS))
        };
        let path = match route {
            0 => format!("/v1/groups/wecom/{TENANT}/{}", seed_chat(g)),
            1 => format!("/v1/members/wecom/{TENANT}/{}/groups", seed_user(u)),
            2 => format!("/v1/groups/wecom/{TENANT}/{}/events?after_seq=0&limit=100", seed_chat(g)),
            _ => format!("/v1/groups/wecom/{TENANT}?cursor={}&limit=100", seed_chat(g)),
        };
        let started = Instant::now();
        let r = client.get(format!("{base}{path}")).bearer_auth(TOKEN).send().await?;
        anyhow::ensure!(r.status() == 200, "{path}: {}", r.status());
        r.bytes().await?;
        out[route].push(started.elapsed().as_secs_f64());
        if let Some(interval) = interval {
            next += interval;
        }
    }
    Ok(out)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let amqp =
        std::env::var("GROUPWATCH_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    groupwatch::telemetry::init_logging(&groupwatch::config::LogConfig {
        format: groupwatch::config::LogFormat::Text,
        level: "error".into(),
    });
    let url = store_url(&a.store).await?;
    let seeding = Instant::now();
    seed(&url, a.groups, a.members).await?;
    cleanup_bench_chats(&url).await?;
    eprintln!("store ready in {:.0} s", seeding.elapsed().as_secs_f64());

    let chats: Vec<String> = (0..40).map(|i| format!("wrBENCHREAD{i:03}")).collect();
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
    simc.fault(json!({"latency_ms": 5})).await?;
    let exchange = format!("gwbench-read-{}", std::process::id());
    let toml = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\nops_listen = \"127.0.0.1:0\"\n[api]\ntokens = [\"{TOKEN}\"]\n\
         [worker]\ncoalesce_ms = 20\nconfirm_delay_ms = 200\n\
         [amqp]\nurl = \"{amqp}\"\nexchange = \"{exchange}\"\n[store]\nurl = \"{url}\"\n[log]\nlevel = \"error\"\n\
         [[wecom]]\ntenant = \"{TENANT}\"\ncorp_id = \"{CORP}\"\ntoken = \"QDG6eK\"\n\
         encoding_aes_key = \"jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C\"\nsecret = \"bench\"\napi_base = \"{}\"\n\
         allow_documented_test_key = true\n",
        sim.base_url()
    );
    let config = Config::from_toml(&toml, std::iter::empty())?;
    let tenant = config.tenant(TENANT).unwrap().clone();
    let app = Application::build(config).await?;
    app.broker().connected(Duration::from_secs(10)).await.map_err(|_| anyhow::anyhow!("no RabbitMQ"))?;
    let callback_url = format!("http://{}/wecom/{TENANT}/callback", app.local_addr().unwrap());
    let ops = format!("http://{}", app.ops_addr().unwrap());
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
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Default::default();
    let latencies: Arc<Mutex<Vec<f64>>> = Default::default();
    let (s, l) = (sent.clone(), latencies.clone());
    tokio::spawn(async move {
        while let Some(Ok(d)) = consumer.next().await {
            let e: GroupEvent = serde_json::from_slice(&d.data).unwrap();
            if let Some(t) = e.member.and_then(|m| s.lock().unwrap().remove(&m.userid)) {
                l.lock().unwrap().push(t.elapsed().as_secs_f64());
            }
        }
    });
    let replayer = Arc::new(Replayer::wecom(&tenant, &callback_url)?);
    let load = Load {
        simc: SimClient::new(sim.base_url()),
        replayer: replayer.clone(),
        chats: chats.clone(),
        sent: sent.clone(),
        latencies: latencies.clone(),
        rate: a.callbacks,
    };
    for chat in &chats {
        let create = format!(
            "<xml><ToUserName>{CORP}</ToUserName><CreateTime>1600000000</CreateTime><MsgType>event</MsgType>\
             <Event>change_external_chat</Event><ChatId>{chat}</ChatId><ChangeType>create</ChangeType></xml>"
        );
        replayer.post(create.as_bytes()).await?;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Warm-up: caches, connections, the page cache over the seeded data.
    load.run("W", 3).await?;

    let alone_1 = load.run("A", a.seconds).await?;
    let metrics_client = reqwest::Client::new();
    let scrape = || async { metrics_client.get(format!("{ops}/metrics")).send().await?.text().await };
    let store_before = store_buckets(&scrape().await?);
    let cached = if a.store == "sqlite" { page_cached(SQLITE_FILE) } else { None };
    let cpu_before = cpu_times();
    let until = Instant::now() + Duration::from_secs(a.seconds);
    // The readers run on a runtime of their own, as separate clients would: they do not queue
    // behind the service's tasks on its worker threads, nor it behind theirs.
    let (readers, groups_n, rate, base) = (a.readers, a.groups, a.rate, ops.clone());
    let clients = std::thread::spawn(move || -> anyhow::Result<[Vec<f64>; 4]> {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        runtime.block_on(async move {
            let client = reqwest::Client::builder().pool_max_idle_per_host(readers).build()?;
            let tasks: Vec<_> = (0..readers)
                .map(|id| tokio::spawn(reader(id, base.clone(), client.clone(), groups_n, rate, until)))
                .collect();
            let mut routes: [Vec<f64>; 4] = Default::default();
            for t in tasks {
                for (all, mine) in routes.iter_mut().zip(t.await??) {
                    all.extend(mine);
                }
            }
            Ok(routes)
        })
    });
    let with = load.run("B", a.seconds).await?;
    let routes = tokio::task::spawn_blocking(move || clients.join().expect("the readers' thread")).await??;
    let steal = steal_share(cpu_before, cpu_times());
    let store_after = store_buckets(&scrape().await?);
    let alone_2 = load.run("C", a.seconds).await?;

    let mode = if a.rate > 0.0 { format!("{} req/s each", a.rate) } else { "closed loop".into() };
    println!(
        "{}: {} groups x {} members; {} readers ({mode}) for {} s; {} callbacks/s; CPU stolen by the hypervisor while the readers ran: {}",
        a.store,
        a.groups,
        a.members,
        a.readers,
        a.seconds,
        a.callbacks,
        steal.map_or("unknown".into(), |s| format!("{:.0}%", s * 100.0))
    );
    if a.store == "sqlite" {
        println!(
            "  the page cache held {} of the store file when the readers started",
            cached.map_or("an unknown share (no fincore)".into(), |c| format!("{:.0}%", c * 100.0))
        );
    }
    for (name, mut v) in ROUTES.iter().zip(routes) {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let ms = |p: f64| percentile(&v, p) * 1000.0;
        println!(
            "  {name:<14} {:>7} requests ({:>5.0}/s)  p50 {:>6.2} ms  p90 {:>6.2}  p99 {:>6.2} ms  max {:>6.1}",
            v.len(),
            v.len() as f64 / a.seconds as f64,
            ms(0.5),
            ms(0.9),
            ms(0.99),
            ms(1.0)
        );
    }
    // The same requests timed inside the service, around the store call alone: a tail seen by
    // the clients and not here is the wait for a CPU (threads queued on two cores), not SQL.
    for op in ["snapshot_text", "member_groups", "commit"] {
        let (before, after) = (store_before.get(op), store_after.get(op));
        let Some(after) = after else { continue };
        let delta: Vec<(f64, u64)> = after
            .iter()
            .map(|&(le, n)| (le, n - before.and_then(|b| b.iter().find(|(l, _)| *l == le)).map_or(0, |(_, m)| *m)))
            .collect();
        let total = delta.last().map_or(0, |(_, n)| *n);
        let within = |ms: f64| delta.iter().find(|(le, _)| (*le * 1000.0 - ms).abs() < 1e-9).map_or(0, |(_, n)| *n);
        let p99 = delta.iter().find(|(_, n)| *n as f64 >= total as f64 * 0.99).map(|(le, _)| le * 1000.0);
        println!(
            "  store, {op:<14} {total:>7} calls while the readers ran: within 1 ms {:.1}%, within 5 ms {:.1}%, p99 ≤ {} ms",
            100.0 * within(1.0) as f64 / total.max(1) as f64,
            100.0 * within(5.0) as f64 / total.max(1) as f64,
            p99.map_or("?".into(), |v| format!("{v}"))
        );
    }
    let (_, a1p50, a1p99) = summary(alone_1);
    let (_, a2p50, a2p99) = summary(alone_2);
    let (_, bp50, bp99) = summary(with);
    let (p50, p99) = ((a1p50 + a2p50) / 2.0, (a1p99 + a2p99) / 2.0);
    println!(
        "  callback→publish without readers p50 {p50:.1} ms p99 {p99:.1} ms (runs: p99 {a1p99:.1}, {a2p99:.1}); \
         with readers p50 {bp50:.1} ms p99 {bp99:.1} ms ({:+.1}% p99)",
        (bp99 / p99 - 1.0) * 100.0
    );

    stop.cancel();
    let _ = running.await;
    for q in topology.queues() {
        let _ = ch.queue_delete(&q, QueueDeleteOptions::default()).await;
    }
    let _ = ch.exchange_delete(&exchange, Default::default()).await;
    let _ = ch.exchange_delete(&topology.shards_marker(), Default::default()).await;
    // The bench chats (not the seeded groups) go, so the next run starts them afresh.
    cleanup_bench_chats(&url).await?;
    Ok(())
}

/// `groupwatch_store_seconds` buckets by operation, from the Prometheus text: (upper bound in
/// seconds, cumulative count), in bucket order, `+Inf` last.
fn store_buckets(text: &str) -> HashMap<String, Vec<(f64, u64)>> {
    let mut by_op: HashMap<String, Vec<(f64, u64)>> = HashMap::new();
    for line in text.lines().filter(|l| l.starts_with("groupwatch_store_seconds_bucket{")) {
        let Some((labels, count)) = line.split_once("} ") else { continue };
        let label = |name: &str| {
            labels.split(&format!("{name}=\"")).nth(1).and_then(|rest| rest.split('"').next()).map(str::to_owned)
        };
        let (Some(op), Some(le), Ok(count)) = (label("op"), label("le"), count.trim().parse::<f64>()) else {
            continue;
        };
        let le = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap_or(f64::INFINITY) };
        by_op.entry(op).or_default().push((le, count as u64));
    }
    by_op
}

/// The share of `path` in the page cache, from util-linux's `fincore`.
fn page_cached(path: &str) -> Option<f64> {
    let out = std::process::Command::new("fincore")
        .args(["--bytes", "--noheadings", "--output", "RES,SIZE", path])
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let mut fields = text.split_whitespace().map(|f| f.parse::<f64>());
    let (Some(Ok(resident)), Some(Ok(size))) = (fields.next(), fields.next()) else { return None };
    (size > 0.0).then(|| resident / size)
}

/// The machine's CPU time so far, from `/proc/stat`: (stolen, total), in ticks. On a virtual
/// machine the hypervisor's "steal" is time this machine wanted to run and could not: when it is
/// high, every latency of the run is, whatever the code does.
fn cpu_times() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat.lines().next()?.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is counted in user already).
    Some((*fields.get(7)?, fields.iter().take(8).sum()))
}

fn steal_share(before: Option<(u64, u64)>, after: Option<(u64, u64)>) -> Option<f64> {
    let ((s0, t0), (s1, t1)) = (before?, after?);
    (t1 > t0).then(|| (s1 - s0) as f64 / (t1 - t0) as f64)
}

async fn cleanup_bench_chats(url: &str) -> anyhow::Result<()> {
    let statements = [
        "DELETE FROM group_members WHERE chat_id LIKE 'wrBENCHREAD%'",
        "DELETE FROM group_events WHERE chat_id LIKE 'wrBENCHREAD%'",
        "DELETE FROM group_snapshots WHERE chat_id LIKE 'wrBENCHREAD%'",
        "DELETE FROM applied_items WHERE chat_id LIKE 'wrBENCHREAD%'",
    ];
    if url.starts_with("sqlite:") {
        let pool = sqlx::sqlite::SqlitePoolOptions::new().max_connections(1).connect(url).await?;
        for sql in statements {
            sqlx::query(sql).execute(&pool).await?;
        }
    } else {
        let pool = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(url).await?;
        for sql in statements {
            sqlx::query(sql).execute(&pool).await?;
        }
    }
    Ok(())
}
