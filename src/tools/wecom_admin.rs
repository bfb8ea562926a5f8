//! `groupwatch wecom …`: WeCom customer-group administration from the command line (seed 003).
//! Each command reads one tenant of the configuration, checks its input against WeCom's
//! documented limits before calling anything, prints a table (or `--json`, `--csv` for the
//! statistics), and lists every failure with WeCom's errcode and message.
//!
//! `transfer` also hands an owner-change report for each transferred chat to the inbound queues,
//! so the running workers publish `group.update` \[`owner`\] whether or not WeCom sends a callback
//! (it documents none for changes made through its API).

use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::core::clock::now_ms;
use crate::core::model::Provider;
use crate::core::report::{ChangeReport, ReportKind};
use crate::provider::wecom::admin::{
    status_label, AdminError, DayStat, JoinWayInfo, JoinWayOptions, JoinWaySpec, LocalDay, OwnerStat, StatData,
    StatRange, StatusFilter, TransferKind, TransferOutcome, TransferRequest, OWNER_FILTER_MAX,
};
use crate::provider::wecom::config::WecomTenant;
use crate::provider::wecom::{ApiLimits, WecomAdmin, WecomClient};
use crate::queue::broker::Broker;
use crate::queue::inbound::{Batching, Inbound, InboundEvent};

/// How long `transfer` waits for RabbitMQ before giving up (and transferring nothing).
const BROKER_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Subcommand)]
pub enum WecomCommand {
    /// Hand customer groups to a new owner
    ///
    /// groupchat/onjob_transfer for an owner in service, groupchat/transfer with --resigned.
    /// Chats WeCom refuses are listed with its errcode and message (exit 1). Each transferred
    /// group's owner change is queued for the running workers, which publish group.update
    /// \[owner\]; so RabbitMQ must be reachable (amqp.url) or nothing is transferred.
    Transfer(TransferArgs),
    /// Manage join ways: the QR codes and mini-program buttons that bring customers in
    ///
    /// A join way (「加入群聊」) leads to 1 to 5 customer groups. Its --state comes back on every
    /// member who joins through it, as member.state in their member.join event.
    #[command(subcommand)]
    JoinWay(JoinWayCommand),
    /// List customer groups by follow-up status, e.g. those of resigned owners
    ///
    /// groupchat/list with status_filter. `--status resigned --json` lists what
    /// `transfer --resigned` takes.
    Groups(GroupsArgs),
    /// Customer-group statistics per owner or per day
    ///
    /// groupchat/statistic (--by owner) and groupchat/statistic_group_by_day (--by day). Days
    /// are WeCom's (UTC+8), from 180 days ago to yesterday, at most 30 days apart.
    Stats(StatsArgs),
}

/// What every `wecom` command needs: where the tenant is configured, and how to print.
#[derive(Debug, Args)]
pub struct Target {
    /// The TOML configuration file.
    #[arg(long, env = "GROUPWATCH_CONFIG")]
    pub config: PathBuf,
    /// The `[[wecom]]` tenant whose corp and secret make the calls.
    #[arg(long)]
    pub tenant: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct TransferArgs {
    #[command(flatten)]
    pub target: Target,
    /// The groups' owner has resigned (groupchat/transfer; the groups `groups --status resigned`
    /// lists). Without it the owner is in service (groupchat/onjob_transfer).
    #[arg(long)]
    pub resigned: bool,
    /// The userid of the new owner.
    #[arg(long, value_name = "USERID")]
    pub new_owner: String,
    /// The customer groups to transfer (1 to 100).
    #[arg(value_name = "CHAT", required = true)]
    pub chats: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum JoinWayCommand {
    /// Create a join way for 1 to 5 groups (add_join_way); prints its config_id
    Add {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        spec: JoinWayArgs,
    },
    /// Replace every setting of a join way (update_join_way); options left out are reset
    Update {
        #[command(flatten)]
        target: Target,
        /// The join way's config_id.
        config_id: String,
        #[command(flatten)]
        spec: JoinWayArgs,
    },
    /// Show a join way and its QR code URL (get_join_way)
    Get {
        #[command(flatten)]
        target: Target,
        /// The join way's config_id.
        config_id: String,
    },
    /// Delete a join way (del_join_way)
    Delete {
        #[command(flatten)]
        target: Target,
        /// The join way's config_id.
        config_id: String,
    },
}

#[derive(Debug, Args)]
pub struct JoinWayArgs {
    /// 1: a mini-program button, 2: a QR code.
    #[arg(long, value_parser = clap::value_parser!(i64).range(1..=2))]
    pub scene: i64,
    /// A note for yourself (at most 30 characters).
    #[arg(long)]
    pub remark: Option<String>,
    /// Whether WeCom opens a new group when the last one is full (WeCom's default: 1).
    #[arg(long, value_name = "0|1", value_parser = clap::value_parser!(i64).range(0..=1))]
    pub auto_create_room: Option<i64>,
    /// Name prefix of the groups WeCom opens (at most 40 characters).
    #[arg(long, value_name = "NAME")]
    pub room_base_name: Option<String>,
    /// First number appended to --room-base-name.
    #[arg(long, value_name = "N")]
    pub room_base_id: Option<i64>,
    /// Your channel tag (at most 30 characters): members who join this way carry it as
    /// member.state in their member.join events.
    #[arg(long)]
    pub state: Option<String>,
    /// The customer groups the join way leads to (1 to 5).
    #[arg(value_name = "CHAT", required = true)]
    pub chats: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Status {
    /// The owner resigned: waiting for `transfer --resigned` (status 1).
    Resigned,
    /// Being inherited (status 2).
    Inheriting,
    /// Inherited by a new owner (status 3).
    Inherited,
    /// Every group, whatever its status (no filter).
    All,
}

#[derive(Debug, Args)]
pub struct GroupsArgs {
    #[command(flatten)]
    pub target: Target,
    #[arg(long, value_enum)]
    pub status: Status,
    /// Only groups of this owner (repeatable; default: the tenant's `owners` / `owners_file`,
    /// else every owner the app sees).
    #[arg(long = "owner", value_name = "USERID")]
    pub owners: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatsBy {
    /// One row per group owner over the whole range (groupchat/statistic).
    Owner,
    /// One row per day (groupchat/statistic_group_by_day).
    Day,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    #[command(flatten)]
    pub target: Target,
    #[arg(long, value_enum)]
    pub by: StatsBy,
    /// First day, YYYY-MM-DD (UTC+8).
    #[arg(long, value_parser = parse_day)]
    pub from: LocalDay,
    /// Last day, YYYY-MM-DD (UTC+8), included; at most 30 days after --from, at most yesterday.
    #[arg(long, value_parser = parse_day)]
    pub to: LocalDay,
    /// Only groups of this owner (repeatable; default: the tenant's `owners` / `owners_file`,
    /// else every owner the app sees).
    #[arg(long = "owner", value_name = "USERID")]
    pub owners: Vec<String>,
    /// Print CSV with WeCom's field names instead of a table.
    #[arg(long, conflicts_with = "json")]
    pub csv: bool,
}

fn parse_day(s: &str) -> Result<LocalDay, String> {
    LocalDay::parse(s).ok_or_else(|| format!("{s:?} is not a date such as 2024-06-30"))
}

/// Why a command did not run to the end, by the exit code it deserves.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The configuration, the tenant or the input is wrong (exit 2): nothing was called.
    #[error("{0}")]
    Usage(String),
    /// A call failed as a whole, or the stream could not be reached (exit 1).
    #[error("{0}")]
    Failed(String),
}

/// What a command printed and whether every item succeeded (exit 0) or some failed (exit 1).
#[derive(Debug)]
pub struct Report {
    pub output: String,
    pub all_ok: bool,
}

/// Runs one `wecom` command.
pub async fn run(command: WecomCommand) -> Result<Report, CommandError> {
    match command {
        WecomCommand::Transfer(args) => transfer(args).await,
        WecomCommand::JoinWay(command) => join_way(command).await,
        WecomCommand::Groups(args) => groups(args).await,
        WecomCommand::Stats(args) => stats(args).await,
    }
}

/// The tenant and an admin client over the configured limits.
struct Session {
    config: Config,
    tenant: WecomTenant,
    admin: WecomAdmin,
    json: bool,
}

impl Session {
    fn open(target: &Target) -> Result<Self, CommandError> {
        let config = Config::load(&target.config, std::env::vars()).map_err(|e| CommandError::Usage(e.to_string()))?;
        let tenant = config.tenant(&target.tenant).cloned().ok_or_else(|| {
            CommandError::Usage(format!("--tenant: {:?} is not a configured [[wecom]] tenant", target.tenant))
        })?;
        let client = WecomClient::new(std::slice::from_ref(&tenant), ApiLimits::of(&config.worker));
        Ok(Self { config, tenant, admin: WecomAdmin::new(client), json: target.json })
    }

    /// `--owner`s, else the tenant's configured owners (possibly none: no filter).
    fn owners(&self, given: &[String]) -> Result<Vec<String>, CommandError> {
        if !given.is_empty() {
            return Ok(given.to_vec());
        }
        self.tenant.resync_owners().map_err(|e| CommandError::Usage(format!("wecom owners_file: {e}")))
    }
}

/// Names the option a WeCom field comes from, so the error reads as the command line does.
fn option_of(field: &str) -> &str {
    match field {
        "chat_id_list" => "CHAT",
        "new_owner" => "--new-owner",
        "scene" => "--scene",
        "remark" => "--remark",
        "auto_create_room" => "--auto-create-room",
        "room_base_name" => "--room-base-name",
        "room_base_id" => "--room-base-id",
        "state" => "--state",
        "config_id" => "CONFIG_ID",
        "owner_filter.userid_list" => "--owner",
        "day_begin_time" => "--from",
        "day_end_time" => "--to",
        other => other,
    }
}

fn failed_call(api: &str, e: AdminError) -> CommandError {
    match e {
        AdminError::Invalid { field, reason } => CommandError::Usage(format!("{}: {reason}", option_of(field))),
        AdminError::Api(e) => CommandError::Failed(format!("{api} failed: {e}")),
    }
}

fn json_text(value: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(value).expect("serialisable") + "\n"
}

/// "1 group", "2 groups".
fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

// ---------------------------------------------------------------------------------------------
// transfer
// ---------------------------------------------------------------------------------------------

async fn transfer(args: TransferArgs) -> Result<Report, CommandError> {
    let session = Session::open(&args.target)?;
    let kind = if args.resigned { TransferKind::Resigned } else { TransferKind::OnJob };
    let request = TransferRequest::new(args.chats, args.new_owner).map_err(|e| failed_call(kind.api(), e))?;
    // The broker first: a transfer whose owner change cannot reach the stream would leave the
    // stream behind until the next resync.
    let stop = CancellationToken::new();
    let (broker, broker_task) = Broker::start(&session.config.amqp, stop.child_token());
    if broker.connected(BROKER_WAIT).await.is_err() {
        stop.cancel();
        return Err(CommandError::Failed(
            "cannot reach RabbitMQ at amqp.url; nothing was transferred (the owner changes must reach the stream)"
                .into(),
        ));
    }
    let inbound = Inbound::new(broker.clone(), Batching::default());
    let result = session.admin.transfer(&session.tenant.tenant, kind, &request).await;
    let queued = match &result {
        Ok(outcome) => queue_owner_changes(&inbound, &session.tenant.tenant, &outcome.transferred).await,
        Err(_) => Vec::new(),
    };
    drop(inbound);
    stop.cancel();
    let _ = broker_task.await;
    let outcome = result.map_err(|e| failed_call(kind.api(), e))?;
    Ok(print_transfer(&session, kind, &request, &outcome, &queued))
}

/// Hands an owner-change report per transferred chat to the chat's inbound shard: the workers
/// fetch the group and publish `group.update` [`owner`] as for a callback. Answers each chat's
/// hand-off error, if any.
async fn queue_owner_changes(inbound: &Inbound, tenant: &str, chats: &[String]) -> Vec<(String, Option<String>)> {
    let at_ms = now_ms();
    let hand_offs = chats.iter().map(|chat| {
        let report = ChangeReport::new(ReportKind::OwnerChanged, at_ms / 1000, &[]);
        let key = format!("transfer:{chat}:{at_ms}");
        let event = InboundEvent::change(Provider::Wecom, tenant, chat, key, false, vec![report], at_ms);
        async move { (chat.clone(), inbound.hand_off(event).await.err().map(|e| e.to_string())) }
    });
    futures_util::future::join_all(hand_offs).await
}

fn print_transfer(
    session: &Session,
    kind: TransferKind,
    request: &TransferRequest,
    outcome: &TransferOutcome,
    queued: &[(String, Option<String>)],
) -> Report {
    let unqueued: Vec<(&String, &String)> = queued.iter().filter_map(|(c, e)| e.as_ref().map(|e| (c, e))).collect();
    let all_ok = outcome.failed.is_empty() && unqueued.is_empty();
    if session.json {
        let value = json!({
            "api": kind.api(),
            "new_owner": request.new_owner(),
            "transferred": outcome.transferred,
            "failed": outcome.failed,
            "queued": queued.len() - unqueued.len(),
            "not_queued": unqueued.iter().map(|(c, e)| json!({"chat_id": c, "error": e})).collect::<Vec<_>>(),
        });
        return Report { output: json_text(&value), all_ok };
    }
    let rows = request
        .chat_ids()
        .iter()
        .map(|chat| match outcome.failed.iter().find(|f| &f.chat_id == chat) {
            Some(f) => vec![chat.clone(), "failed".into(), f.errcode.to_string(), f.errmsg.clone()],
            None => vec![chat.clone(), "transferred".into(), String::new(), String::new()],
        })
        .collect();
    let mut output = table(&["CHAT", "RESULT", "ERRCODE", "MESSAGE"], rows);
    let _ = write!(
        output,
        "{} of {} transferred to {} ({})",
        outcome.transferred.len(),
        count(request.chat_ids().len(), "group"),
        request.new_owner(),
        kind.api()
    );
    if !outcome.failed.is_empty() {
        let _ = write!(output, "; {} failed", outcome.failed.len());
    }
    let _ = writeln!(output, ".");
    if !outcome.transferred.is_empty() {
        let _ = writeln!(output, "Owner changes queued for the stream: {}.", queued.len() - unqueued.len());
    }
    for (chat, error) in &unqueued {
        let _ =
            writeln!(output, "Could not queue the owner change of {chat} ({error}); `groupwatch resync` will find it.");
    }
    Report { output, all_ok }
}

// ---------------------------------------------------------------------------------------------
// join-way
// ---------------------------------------------------------------------------------------------

impl JoinWayArgs {
    fn spec(self) -> Result<JoinWaySpec, AdminError> {
        JoinWaySpec::new(
            self.scene,
            self.chats,
            JoinWayOptions {
                remark: self.remark,
                auto_create_room: self.auto_create_room,
                room_base_name: self.room_base_name,
                room_base_id: self.room_base_id,
                state: self.state,
            },
        )
    }
}

async fn join_way(command: JoinWayCommand) -> Result<Report, CommandError> {
    let done = |session: &Session, config_id: &str, what: &str| {
        let output = if session.json {
            json_text(&json!({ "config_id": config_id, what: true }))
        } else {
            format!("join way {config_id} {what}\n")
        };
        Report { output, all_ok: true }
    };
    match command {
        JoinWayCommand::Add { target, spec } => {
            let session = Session::open(&target)?;
            let api = "groupchat/add_join_way";
            let spec = spec.spec().map_err(|e| failed_call(api, e))?;
            let config_id =
                session.admin.add_join_way(&session.tenant.tenant, &spec).await.map_err(|e| failed_call(api, e))?;
            let output = if session.json {
                json_text(&json!({ "config_id": config_id }))
            } else {
                format!("config_id: {config_id}\n")
            };
            Ok(Report { output, all_ok: true })
        }
        JoinWayCommand::Update { target, config_id, spec } => {
            let session = Session::open(&target)?;
            let api = "groupchat/update_join_way";
            let spec = spec.spec().map_err(|e| failed_call(api, e))?;
            session
                .admin
                .update_join_way(&session.tenant.tenant, &config_id, &spec)
                .await
                .map_err(|e| failed_call(api, e))?;
            Ok(done(&session, &config_id, "updated"))
        }
        JoinWayCommand::Get { target, config_id } => {
            let session = Session::open(&target)?;
            let way = session
                .admin
                .get_join_way(&session.tenant.tenant, &config_id)
                .await
                .map_err(|e| failed_call("groupchat/get_join_way", e))?;
            let output = if session.json { json_text(&way) } else { print_join_way(&way) };
            Ok(Report { output, all_ok: true })
        }
        JoinWayCommand::Delete { target, config_id } => {
            let session = Session::open(&target)?;
            session
                .admin
                .delete_join_way(&session.tenant.tenant, &config_id)
                .await
                .map_err(|e| failed_call("groupchat/del_join_way", e))?;
            Ok(done(&session, &config_id, "deleted"))
        }
    }
}

fn print_join_way(way: &JoinWayInfo) -> String {
    let scene = match way.scene {
        1 => "1 (mini-program button)".to_owned(),
        2 => "2 (QR code)".to_owned(),
        other => other.to_string(),
    };
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    let num = |v: Option<i64>| v.map(|n| n.to_string()).unwrap_or_default();
    let rows = vec![
        vec!["config_id".into(), way.config_id.clone()],
        vec!["scene".into(), scene],
        vec!["remark".into(), opt(&way.remark)],
        vec!["auto_create_room".into(), num(way.auto_create_room)],
        vec!["room_base_name".into(), opt(&way.room_base_name)],
        vec!["room_base_id".into(), num(way.room_base_id)],
        vec!["chat_id_list".into(), way.chat_id_list.join(" ")],
        vec!["qr_code".into(), opt(&way.qr_code)],
        vec!["state".into(), opt(&way.state)],
    ];
    table(&[], rows)
}

// ---------------------------------------------------------------------------------------------
// groups
// ---------------------------------------------------------------------------------------------

async fn groups(args: GroupsArgs) -> Result<Report, CommandError> {
    let session = Session::open(&args.target)?;
    let status = match args.status {
        Status::Resigned => StatusFilter::Resigned,
        Status::Inheriting => StatusFilter::Inheriting,
        Status::Inherited => StatusFilter::Inherited,
        Status::All => StatusFilter::All,
    };
    let owners = session.owners(&args.owners)?;
    // WeCom takes 100 owners per call; more are asked in batches.
    let batches: Vec<&[String]> = if owners.is_empty() { vec![&[]] } else { owners.chunks(OWNER_FILTER_MAX).collect() };
    let mut chats = Vec::new();
    for batch in batches {
        let page = session
            .admin
            .list_groups(&session.tenant.tenant, status, batch)
            .await
            .map_err(|e| failed_call("groupchat/list", e))?;
        chats.extend(page);
    }
    let output = if session.json {
        let list: Vec<_> = chats.iter().map(|c| json!({"chat_id": c.chat_id, "status": c.status})).collect();
        json_text(&json!(list))
    } else {
        let what = match args.status {
            Status::All => String::new(),
            _ => format!(" ({})", status_label(status as i64)),
        };
        if chats.is_empty() {
            format!("no groups{what}\n")
        } else {
            let rows = chats
                .iter()
                .map(|c| vec![c.chat_id.clone(), format!("{} {}", c.status, status_label(c.status))])
                .collect();
            let mut out = table(&["CHAT", "STATUS"], rows);
            let _ = writeln!(out, "{}{what}", count(chats.len(), "group"));
            out
        }
    };
    Ok(Report { output, all_ok: true })
}

// ---------------------------------------------------------------------------------------------
// stats
// ---------------------------------------------------------------------------------------------

/// The figures in print order: (WeCom's name, column title).
const STAT_COLUMNS: [(&str, &str); 7] = [
    ("new_chat_cnt", "NEW_GROUPS"),
    ("chat_total", "GROUPS"),
    ("chat_has_msg", "GROUPS_WITH_MSGS"),
    ("new_member_cnt", "NEW_MEMBERS"),
    ("member_total", "MEMBERS"),
    ("member_has_msg", "MEMBERS_WITH_MSGS"),
    ("msg_total", "MESSAGES"),
];

fn stat_values(d: &StatData, trainee: bool) -> Vec<String> {
    let mut values: Vec<String> =
        [d.new_chat_cnt, d.chat_total, d.chat_has_msg, d.new_member_cnt, d.member_total, d.member_has_msg, d.msg_total]
            .iter()
            .map(i64::to_string)
            .collect();
    if trainee {
        values.push(d.migrate_trainee_chat_cnt.map(|n| n.to_string()).unwrap_or_default());
    }
    values
}

async fn stats(args: StatsArgs) -> Result<Report, CommandError> {
    let session = Session::open(&args.target)?;
    let api = match args.by {
        StatsBy::Owner => "groupchat/statistic",
        StatsBy::Day => "groupchat/statistic_group_by_day",
    };
    let range = StatRange::new(args.from, args.to, LocalDay::today()).map_err(|e| failed_call(api, e))?;
    let owners = session.owners(&args.owners)?;
    let batches: Vec<&[String]> = if owners.is_empty() { vec![&[]] } else { owners.chunks(OWNER_FILTER_MAX).collect() };
    let tenant = &session.tenant.tenant;
    // (row key, data): owners, or days whose figures add up across owner batches.
    let mut rows: Vec<(String, Option<i64>, StatData)> = Vec::new();
    match args.by {
        StatsBy::Owner => {
            for batch in batches {
                let items: Vec<OwnerStat> =
                    session.admin.statistic_by_owner(tenant, &range, batch).await.map_err(|e| failed_call(api, e))?;
                rows.extend(items.into_iter().map(|i| (i.owner, None, i.data)));
            }
        }
        StatsBy::Day => {
            let mut days: BTreeMap<i64, StatData> = BTreeMap::new();
            for batch in batches {
                let items: Vec<DayStat> =
                    session.admin.statistic_by_day(tenant, &range, batch).await.map_err(|e| failed_call(api, e))?;
                for item in items {
                    days.entry(item.stat_time).or_default().add(&item.data);
                }
            }
            rows.extend(days.into_iter().map(|(t, d)| (LocalDay::of_unix(t).to_string(), Some(t), d)));
        }
    }
    let trainee = rows.iter().any(|(_, _, d)| d.migrate_trainee_chat_cnt.is_some());
    let output = if session.json {
        let items: Vec<_> = rows
            .iter()
            .map(|(key, t, data)| match args.by {
                StatsBy::Owner => json!({"owner": key, "data": data}),
                StatsBy::Day => json!({"day": key, "stat_time": t, "data": data}),
            })
            .collect();
        let by = if args.by == StatsBy::Owner { "owner" } else { "day" };
        json_text(&json!({"by": by, "from": range.from.to_string(), "to": range.to.to_string(), "items": items}))
    } else if args.csv {
        let mut header: Vec<&str> = match args.by {
            StatsBy::Owner => vec!["owner"],
            StatsBy::Day => vec!["day", "stat_time"],
        };
        header.extend(STAT_COLUMNS.iter().map(|(name, _)| *name));
        if trainee {
            header.push("migrate_trainee_chat_cnt");
        }
        let mut out = header.join(",") + "\n";
        for (key, t, data) in &rows {
            let mut fields = vec![csv_field(key)];
            fields.extend(t.map(|t| t.to_string()));
            fields.extend(stat_values(data, trainee));
            out += &(fields.join(",") + "\n");
        }
        out
    } else {
        let mut header: Vec<&str> = vec![if args.by == StatsBy::Owner { "OWNER" } else { "DAY" }];
        header.extend(STAT_COLUMNS.iter().map(|(_, title)| *title));
        if trainee {
            header.push("MIGRATED_TRAINEE_GROUPS");
        }
        let table_rows = rows
            .iter()
            .map(|(key, _, data)| std::iter::once(key.clone()).chain(stat_values(data, trainee)).collect())
            .collect();
        let mut out = table(&header, table_rows);
        let _ = writeln!(out, "{} to {} (UTC+8), {}", range.from, range.to, count(rows.len(), "row"));
        out
    };
    Ok(Report { output, all_ok: true })
}

/// Quotes a CSV field when it needs it (RFC 4180).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

// ---------------------------------------------------------------------------------------------
// Tables
// ---------------------------------------------------------------------------------------------

/// Columns a terminal gives a character: 2 for the wide CJK, Hangul and full-width ranges.
fn display_width(s: &str) -> usize {
    s.chars()
        .map(|c| match c as u32 {
            0x1100..=0x115F
            | 0x2E80..=0x303E
            | 0x3041..=0x33FF
            | 0x3400..=0x4DBF
            | 0x4E00..=0x9FFF
            | 0xA000..=0xA4CF
            | 0xAC00..=0xD7A3
            | 0xF900..=0xFAFF
            | 0xFE30..=0xFE4F
            | 0xFF00..=0xFF60
            | 0xFFE0..=0xFFE6
            | 0x20000..=0x3FFFD => 2,
            _ => 1,
        })
        .sum()
}

/// Left-aligned columns two spaces apart; no header line when `header` is empty. Trailing
/// blanks are trimmed so that empty last columns leave no whitespace behind.
pub(crate) fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut lines: Vec<Vec<String>> = Vec::new();
    if !header.is_empty() {
        lines.push(header.iter().map(|h| h.to_string()).collect());
    }
    lines.extend(rows);
    let columns = lines.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| lines.iter().filter_map(|l| l.get(i)).map(|c| display_width(c)).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for line in lines {
        let mut text = String::new();
        for (i, cell) in line.iter().enumerate() {
            text += cell;
            if i + 1 < line.len() {
                text += &" ".repeat(widths[i] - display_width(cell) + 2);
            }
        }
        out += text.trim_end();
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_wide_characters() {
        let out = table(&["OWNER", "N"], vec![vec!["张三".into(), "1".into()], vec!["abel".into(), "22".into()]]);
        assert_eq!(out, "OWNER  N\n张三   1\nabel   22\n");
        assert_eq!(table(&[], vec![vec!["a".into(), String::new()]]), "a\n");
    }

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        assert_eq!(csv_field("abel"), "abel");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }

    #[test]
    fn invalid_input_names_the_option() {
        let e = failed_call("groupchat/transfer", AdminError::Invalid { field: "state", reason: "too long".into() });
        assert!(matches!(&e, CommandError::Usage(m) if m == "--state: too long"), "{e:?}");
        let e = failed_call(
            "groupchat/transfer",
            AdminError::Api(crate::provider::ApiError::Permanent {
                errcode: 40058,
                errmsg: "invalid Request Parameter".into(),
            }),
        );
        assert_eq!(e.to_string(), "groupchat/transfer failed: errcode 40058: invalid Request Parameter");
    }
}
