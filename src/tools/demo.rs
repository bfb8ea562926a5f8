//! `groupwatch demo`: the one-command tour. Starts the WeCom simulator and the service on
//! loopback, plays a short story of callbacks (the bundled fixtures, with the simulator changed
//! to match each one first), and prints the events that came out. Needs only a RabbitMQ.

use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use crate::app::Application;
use crate::config::Config;
use crate::core::model::GroupEvent;
use crate::sim::{self, SimClient, SimState};
use crate::tools::replay::Replayer;

const CORP: &str = "ww1234567890abcdef";
const CHAT: &str = "wrOgQhDgAAMYQiS5ol9G7gK9JVAAAA";
const FIXTURE_CREATE: &str = include_str!("../../fixtures/wecom/create.xml");
const FIXTURE_JOIN: &str = include_str!("../../fixtures/wecom/update_add_member.xml");
const FIXTURE_LEAVE: &str = include_str!("../../fixtures/wecom/update_del_member.xml");
const FIXTURE_RENAME: &str = include_str!("../../fixtures/wecom/update_change_name.xml");
const FIXTURE_DISMISS: &str = include_str!("../../fixtures/wecom/dismiss.xml");

/// Replaces the `CurMemVer` of a fixture with the version the simulator now reports, so that
/// the callback and the API agree as they do in WeCom.
fn with_version(fixture: &str, version: &str) -> String {
    match (fixture.find("<CurMemVer>"), fixture.find("</CurMemVer>")) {
        (Some(start), Some(end)) => {
            format!("{}<CurMemVer><![CDATA[{version}]]>{}", &fixture[..start], &fixture[end..])
        }
        _ => fixture.to_owned(),
    }
}

fn demo_config(amqp_url: &str, exchange: &str, api_base: &str, db: &std::path::Path) -> anyhow::Result<Config> {
    let toml = format!(
        r#"
[http]
listen = "127.0.0.1:0"
ops_listen = "127.0.0.1:0"
[worker]
coalesce_ms = 200
retry_delays_ms = [300, 600, 1200]
[amqp]
url = "{amqp_url}"
exchange = "{exchange}"
[store]
url = "sqlite://{db}"
[log]
level = "warn"
[[wecom]]
tenant = "acme"
corp_id = "{CORP}"
token = "QDG6eK"
encoding_aes_key = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
secret = "demo-secret"
api_base = "{api_base}"
allow_documented_test_key = true
"#,
        db = db.display()
    );
    // No GROUPWATCH__* overrides: in a production environment they would point the demo at the
    // production queues, store and credentials.
    Ok(Config::from_toml(&toml, std::iter::empty())?)
}

fn describe(e: &GroupEvent) -> String {
    let who = e
        .member
        .as_ref()
        .map(|m| format!("{} ({})", m.userid, m.name.as_deref().unwrap_or("?")))
        .or_else(|| e.changes.as_ref().map(|c| format!("changes: {}", c.join(", "))))
        .unwrap_or_else(|| format!("\"{}\"", e.group.name));
    let at = e.occurred_at.map_or_else(|| "null".to_owned(), |t| t.to_string());
    format!("{:<26} {:<44} occurred_at={at:<10} id={}", e.routing_key(), who, e.id)
}

/// Runs the tour and prints what it does to stdout.
pub async fn run(amqp_url: &str) -> anyhow::Result<()> {
    let sim = sim::spawn(SimState::bundled()?, "127.0.0.1:0".parse()?).await?;
    let simc = SimClient::new(sim.base_url());
    let dir = tempfile_dir()?;
    let exchange = format!("groupwatch-demo-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let config = demo_config(amqp_url, &exchange, &sim.base_url(), &dir.join("demo.db"))?;
    let tenant = config.tenant("acme").expect("demo tenant").clone();
    let app = Application::build(config).await?;
    let url = format!("http://{}/wecom/acme/callback", app.local_addr().expect("http enabled"));
    app.broker()
        .connected(Duration::from_secs(10))
        .await
        .map_err(|_| anyhow::anyhow!("cannot reach RabbitMQ at the configured amqp.url: is it running?"))?;
    let topology = app.broker().topology().clone();

    // A private queue that sees every event the demo publishes.
    let conn = lapin::Connection::connect(amqp_url, lapin::ConnectionProperties::default()).await?;
    let channel = conn.create_channel().await?;
    let tap = channel
        .queue_declare(
            "",
            QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() },
            FieldTable::default(),
        )
        .await?;
    channel.queue_bind(tap.name().as_str(), &exchange, "#", QueueBindOptions::default(), FieldTable::default()).await?;
    let consumer = channel
        .basic_consume(
            tap.name().as_str(),
            "demo",
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        )
        .await?;

    let stop = CancellationToken::new();
    let running = tokio::spawn(app.run_until(stop.clone().cancelled_owned()));
    let replayer = Replayer::wecom(&tenant, &url)?;

    println!("groupwatch demo: simulator at {}, callbacks at {url}", sim.base_url());
    println!("events go to the topic exchange {exchange:?}\n");
    let mut tour = Tour { replayer, consumer, total: 0 };
    tour.step("a customer group is created", FIXTURE_CREATE, 3).await?;
    let newcomer = serde_json::json!({"userid": "wmOgQhDgAAuXFJGwbve4g4iXknfOBBBB", "type": 2,
        "join_time": 1572505599, "join_scene": 3, "group_nickname": "新客户", "name": "李四"});
    let version = simc.add_member(CORP, CHAT, newcomer).await?;
    tour.step("a customer joins by QR code", &with_version(FIXTURE_JOIN, &version), 1).await?;
    let version = simc.remove_member(CORP, CHAT, "wmOgQhDgAAuXFJGwbve4g4iXknfOAAAA").await?;
    tour.step("a customer is removed by the owner", &with_version(FIXTURE_LEAVE, &version), 1).await?;
    simc.patch_group(CORP, CHAT, serde_json::json!({"name": "VIP 客服群"})).await?;
    tour.step("the group is renamed", &with_version(FIXTURE_RENAME, &version), 1).await?;
    simc.dismiss_group(CORP, CHAT).await?;
    tour.step("the group is dismissed", FIXTURE_DISMISS, 3).await?;
    let total = tour.total;
    println!(
        "\n{total} events published. A consumer reads them from the durable queues {}.member.join and {}.member.leave,",
        exchange, exchange
    );
    println!("or binds its own queue to routing keys such as wecom.acme.member.* (see README).");

    stop.cancel();
    running.await??;
    // The demo's exchange and queues are its own: leave the broker as it was.
    for queue in topology.inbound_queues().chain([
        topology.dead_letter_queue(),
        topology.default_queue("member.join"),
        topology.default_queue("member.leave"),
    ]) {
        let _ = channel.queue_delete(&queue, QueueDeleteOptions::default()).await;
    }
    let _ = channel.exchange_delete(&exchange, Default::default()).await;
    let _ = channel.exchange_delete(&topology.shards_marker(), Default::default()).await;
    let _ = conn.close(200, "demo done").await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

struct Tour {
    replayer: Replayer,
    consumer: lapin::Consumer,
    total: usize,
}

impl Tour {
    /// Sends one callback as WeCom would and prints the `expected` events it leads to.
    async fn step(&mut self, what: &str, xml: &str, expected: usize) -> anyhow::Result<()> {
        let status = self.replayer.post(xml.as_bytes()).await?;
        println!("▶ {what}: callback answered {}", status.as_u16());
        for _ in 0..expected {
            let next = tokio::time::timeout(Duration::from_secs(15), self.consumer.next()).await;
            let delivery = match next {
                Ok(Some(Ok(d))) => d,
                _ => anyhow::bail!("no event arrived within 15 s"),
            };
            let event: GroupEvent = serde_json::from_slice(&delivery.data)?;
            println!("    {}", describe(&event));
            self.total += 1;
        }
        Ok(())
    }
}

fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("groupwatch-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
