//! `groupwatch demo`: the one-command tour of every vendor. Starts the simulator (WeCom,
//! DingTalk and Tencent Cloud IM) and the service on loopback, plays a short story per vendor
//! and prints the events that came out. Needs only a RabbitMQ.
//!
//! - WeCom: the bundled callback fixtures, signed and encrypted, with the simulator changed to
//!   match each one first.
//! - DingTalk in Stream mode: the service connects out to the simulator's gateway; each change
//!   made in the simulator is pushed as an EVENT frame and ACKed after the hand-off.
//! - Tencent Cloud IM: each change made in the simulator is sent as the signed after-callback to
//!   the service's `/tim/…/callback`.

use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use crate::app::Application;
use crate::config::Config;
use crate::core::model::{EventType, GroupEvent};
use crate::sim::{self, DingtalkPush, SimClient, SimState, TimExitType, TimJoinType, TimNotify};
use crate::tools::replay::Replayer;

const CORP: &str = "ww1234567890abcdef";
const CHAT: &str = "wrOgQhDgAAMYQiS5ol9G7gK9JVAAAA";
const FIXTURE_CREATE: &str = include_str!("../../fixtures/wecom/create.xml");
const FIXTURE_JOIN: &str = include_str!("../../fixtures/wecom/update_add_member.xml");
const FIXTURE_LEAVE: &str = include_str!("../../fixtures/wecom/update_del_member.xml");
const FIXTURE_RENAME: &str = include_str!("../../fixtures/wecom/update_change_name.xml");
const FIXTURE_DISMISS: &str = include_str!("../../fixtures/wecom/dismiss.xml");

// The bundled simulator state's DingTalk app and chat, and Tencent IM app and group.
const DT_APP: &str = "dingdemoappkey00001";
const DT_CHAT: &str = "chat691a41db53b100115bec3603472d78a9";
const TIM_APP: u64 = 1400000000;
const TIM_GROUP: &str = "@TGS#2J4SZEAEL";

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
level = "error"
[[wecom]]
tenant = "acme"
corp_id = "{CORP}"
token = "QDG6eK"
encoding_aes_key = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
secret = "demo-secret"
api_base = "{api_base}"
allow_documented_test_key = true
[[dingtalk]]
tenant = "acme-dt"
app_key = "{DT_APP}"
app_secret = "demo-dingtalk-secret"
mode = "stream"
api_base = "{api_base}"
stream_base = "{api_base}"
[[tim]]
tenant = "acme-im"
sdk_app_id = {TIM_APP}
identifier = "administrator"
secret_key = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
callback_token = "demo-callback-token"
api_base = "{api_base}"
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
    let base = format!("http://{}", app.local_addr().expect("http enabled"));
    let url = format!("{base}/wecom/acme/callback");
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

    let ops = app.ops_addr();
    let stop = CancellationToken::new();
    let running = tokio::spawn(app.run_until(stop.clone().cancelled_owned()));
    let replayer = Replayer::wecom(&tenant, &url)?;
    // Ready once the DingTalk Stream connection is up (and the store answers).
    if let Some(ops) = ops {
        wait_ready(&format!("http://{ops}/readyz")).await?;
    }
    simc.tim_set_callback_url(TIM_APP, Some(&format!("{base}/tim/acme-im/callback"))).await?;

    println!("groupwatch demo: simulator at {}, callbacks at {base}", sim.base_url());
    println!("events go to the topic exchange {exchange:?}\n");
    let mut tour = Tour { consumer, total: 0 };

    println!("WeCom (企业微信): signed, encrypted callbacks to /wecom/acme/callback");
    tour.callback(&replayer, "a customer group is created", FIXTURE_CREATE, 3).await?;
    let newcomer = serde_json::json!({"userid": "wmOgQhDgAAuXFJGwbve4g4iXknfOBBBB", "type": 2,
        "join_time": 1572505599, "join_scene": 3, "group_nickname": "新客户", "name": "李四"});
    let version = simc.add_member(CORP, CHAT, newcomer).await?;
    tour.callback(&replayer, "a customer joins by QR code", &with_version(FIXTURE_JOIN, &version), 1).await?;
    let version = simc.remove_member(CORP, CHAT, "wmOgQhDgAAuXFJGwbve4g4iXknfOAAAA").await?;
    tour.callback(&replayer, "a customer is removed by the owner", &with_version(FIXTURE_LEAVE, &version), 1).await?;
    simc.patch_group(CORP, CHAT, serde_json::json!({"name": "VIP 客服群"})).await?;
    tour.callback(&replayer, "the group is renamed", &with_version(FIXTURE_RENAME, &version), 1).await?;
    simc.dismiss_group(CORP, CHAT).await?;
    tour.callback(&replayer, "the group is dismissed", FIXTURE_DISMISS, 3).await?;

    println!("\nDingTalk (钉钉), Stream mode: events pushed over the WebSocket groupwatch opened");
    let push = Some(DingtalkPush::camel());
    let ids = simc.dingtalk_add_members(DT_APP, DT_CHAT, &["user789"], push.as_ref()).await?;
    tour.pushed("user789 is added to 项目群", &ids, 1).await?;
    let ids = simc.dingtalk_quit(DT_APP, DT_CHAT, "user456", push.as_ref()).await?;
    tour.pushed("user456 quits", &ids, 1).await?;
    let ids =
        simc.dingtalk_patch_chat(DT_APP, DT_CHAT, serde_json::json!({"name": "项目群 2027"}), push.as_ref()).await?;
    tour.pushed("the chat is renamed", &ids, 1).await?;
    let ids = simc.dingtalk_dismiss_chat(DT_APP, DT_CHAT, push.as_ref()).await?;
    // Its members as groupwatch knows them: user789 (and user123, manager4220 once fetched).
    tour.pushed("the chat is disbanded", &ids, 0).await?;
    tour.until_dismiss().await?;

    println!("\nTencent Cloud IM (腾讯云 IM): signed after-callbacks to /tim/acme-im/callback");
    let notify = TimNotify::callback();
    let change = simc
        .tim_add_members(
            TIM_APP,
            TIM_GROUP,
            serde_json::json!([{"Member_Account": "jared"}]),
            TimJoinType::Invited,
            &notify,
        )
        .await?;
    tour.sent("jared is invited into MyFirstGroup", change.callback.as_ref(), 1).await?;
    let change = simc.tim_remove_members(TIM_APP, TIM_GROUP, &["peter"], TimExitType::Kicked, &notify).await?;
    tour.sent("peter is kicked", change.callback.as_ref(), 1).await?;
    let change =
        simc.tim_patch_group(TIM_APP, TIM_GROUP, serde_json::json!({"Name": "MyRenamedGroup"}), &notify).await?;
    tour.sent("the group is renamed", change.callback.as_ref(), 1).await?;
    let change = simc.tim_destroy_group(TIM_APP, TIM_GROUP, &notify).await?;
    tour.sent("the group is destroyed", change.callback.as_ref(), 0).await?;
    tour.until_dismiss().await?;

    let total = tour.total;
    println!(
        "\n{total} events published. A consumer reads them from the durable queues {}.member.join and {}.member.leave,",
        exchange, exchange
    );
    println!("or binds its own queue to routing keys such as wecom.acme.member.*, dingtalk.# or tim.# (see README).");

    stop.cancel();
    running.await??;
    // The demo's exchange and queues are its own: leave the broker as it was.
    for queue in topology.queues() {
        let _ = channel.queue_delete(&queue, QueueDeleteOptions::default()).await;
    }
    let _ = channel.exchange_delete(&exchange, Default::default()).await;
    let _ = channel.exchange_delete(&topology.shards_marker(), Default::default()).await;
    let _ = conn.close(200, "demo done").await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

struct Tour {
    consumer: lapin::Consumer,
    total: usize,
}

/// How long the tour waits for each event.
const EVENT_WAIT: Duration = Duration::from_secs(15);

impl Tour {
    /// Sends one callback as WeCom would and prints the `expected` events it leads to.
    async fn callback(&mut self, replayer: &Replayer, what: &str, xml: &str, expected: usize) -> anyhow::Result<()> {
        let status = replayer.post(xml.as_bytes()).await?;
        println!("▶ {what}: callback answered {}", status.as_u16());
        self.print(expected).await.map(drop)
    }

    /// A change the simulator pushed over the Stream connection.
    async fn pushed(&mut self, what: &str, event_ids: &[String], expected: usize) -> anyhow::Result<()> {
        println!("▶ {what}: pushed as eventId {}", event_ids.join(", "));
        self.print(expected).await.map(drop)
    }

    /// A change the simulator announced with a signed callback.
    async fn sent(
        &mut self,
        what: &str,
        callback: Option<&sim::TimCallbackReport>,
        expected: usize,
    ) -> anyhow::Result<()> {
        let answer = match callback {
            Some(c) => match (c.status, &c.error) {
                (Some(status), _) => format!("{} answered {status}", c.command),
                (None, Some(error)) => anyhow::bail!("{} was not delivered: {error}", c.command),
                (None, None) => anyhow::bail!("{} got no answer", c.command),
            },
            None => anyhow::bail!("the simulator sent no callback"),
        };
        println!("▶ {what}: {answer}");
        self.print(expected).await.map(drop)
    }

    /// Prints events up to and including the next `group.dismiss`.
    async fn until_dismiss(&mut self) -> anyhow::Result<()> {
        while self.print(1).await? != Some(EventType::GroupDismiss) {}
        Ok(())
    }

    /// Prints the next `n` events; returns the type of the last.
    async fn print(&mut self, n: usize) -> anyhow::Result<Option<EventType>> {
        let mut last = None;
        for _ in 0..n {
            let delivery = match tokio::time::timeout(EVENT_WAIT, self.consumer.next()).await {
                Ok(Some(Ok(d))) => d,
                _ => anyhow::bail!("no event arrived within {} s", EVENT_WAIT.as_secs()),
            };
            let event: GroupEvent = serde_json::from_slice(&delivery.data)?;
            println!("    {}", describe(&event));
            last = Some(event.event_type);
            self.total += 1;
        }
        Ok(last)
    }
}

async fn wait_ready(url: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().no_proxy().build()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if client.get(url).send().await.is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        anyhow::ensure!(std::time::Instant::now() < deadline, "the service did not become ready within 20 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("groupwatch-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
