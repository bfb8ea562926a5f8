//! The `groupwatch` binary: command-line parsing and exit codes only; the work is in the library.
//! Exit codes: 0 success, 2 bad usage or bad config, 1 anything else.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

use groupwatch::api::cli::{ReadArgs, ReadError};
use groupwatch::app::Application;
use groupwatch::config::Config;
use groupwatch::core::model::Provider;
use groupwatch::telemetry;
use groupwatch::tools::replay::{ReplayError, Replayer};
use groupwatch::tools::wecom_admin::{self, CommandError, WecomCommand};

#[derive(Parser)]
#[command(name = "groupwatch", version, about = "WeCom customer-group callbacks in, member events on RabbitMQ out")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct ConfigArg {
    /// The TOML configuration file.
    #[arg(long, env = "GROUPWATCH_CONFIG", hide_env_values = true)]
    config: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Run the callback endpoint and the workers until SIGINT/SIGTERM.
    Serve {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Sign (and encrypt) fixture events and POST them to a callback URL, as the vendor would;
    /// or, with --dead-letters, move the dead-letter queue back into the inbound queues.
    Replay {
        #[command(flatten)]
        config: ConfigArg,
        /// The tenant whose callback credentials sign the events.
        #[arg(long, required_unless_present = "dead_letters")]
        tenant: Option<String>,
        /// The tenant's provider (wecom, dingtalk, tim), when several have a tenant of that name.
        #[arg(long, value_parser = parse_provider)]
        provider: Option<Provider>,
        /// The callback URL, e.g. http://127.0.0.1:8080/wecom/acme/callback
        #[arg(long, required_unless_present = "dead_letters")]
        url: Option<String>,
        /// Plaintext event files (WeCom XML, DingTalk or Tencent IM JSON).
        #[arg(required_unless_present = "dead_letters")]
        fixtures: Vec<PathBuf>,
        /// Re-inject every message of {exchange}.dead into the inbound queues.
        #[arg(long, conflicts_with_all = ["tenant", "url", "fixtures"])]
        dead_letters: bool,
    },
    /// List every group and have the running workers reconcile each with its stored snapshot,
    /// publishing what differs.
    Resync {
        #[command(flatten)]
        config: ConfigArg,
        /// Only this provider's tenants (wecom, dingtalk, tim; default: all).
        #[arg(long, value_parser = parse_provider)]
        provider: Option<Provider>,
        /// Only this tenant (default: all).
        #[arg(long)]
        tenant: Option<String>,
        /// Only groups of this owner (repeatable; default: the tenant's `owners`/`owners_file`).
        #[arg(long = "owner")]
        owners: Vec<String>,
        /// Queue the reconcile requests and exit, without waiting for the workers.
        #[arg(long)]
        no_wait: bool,
        /// How long to wait for the workers to reconcile every group (seconds).
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Move the queued work to the shard count now in amqp.inbound_shards, after every instance
    /// on the exchange has stopped; instances with the old count are refused from then on.
    Reshard {
        #[command(flatten)]
        config: ConfigArg,
        /// The shard count the exchange was run with (the old amqp.inbound_shards).
        #[arg(long)]
        from: u16,
    },
    /// The instances sharing the configured store: who is live, who consumes which inbound
    /// shard, each vendor account's token expiry, calls in the last minute and pauses.
    Status {
        #[command(flatten)]
        config: ConfigArg,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Who is in a group now, from the store (what GET /v1/groups/{provider}/{tenant}/{chat_id}
    /// answers).
    Members {
        #[command(flatten)]
        args: ReadArgs,
        /// The chat id.
        chat_id: String,
    },
    /// Which groups a member is in now, from the store's members index (what
    /// GET /v1/members/{provider}/{tenant}/{userid}/groups answers).
    GroupsOf {
        #[command(flatten)]
        args: ReadArgs,
        /// The member's userid (or external userid).
        userid: String,
    },
    /// A WeCom, DingTalk and Tencent IM API simulator for demos and tests.
    Sim {
        #[arg(long, default_value = "127.0.0.1:9090")]
        listen: std::net::SocketAddr,
        /// JSON state file (corps, groups, members); the bundled demo state if omitted.
        #[arg(long)]
        state: Option<PathBuf>,
    },
    /// Administer WeCom customer groups: transfers, join ways, groups by status, statistics
    #[command(subcommand, after_help = WECOM_AFTER_HELP)]
    Wecom(WecomCommand),
    /// The one-command tour: simulator + service on loopback, fixtures replayed, events printed.
    /// Reads no configuration file and no GROUPWATCH__* variable: only the broker URL.
    Demo {
        /// RabbitMQ to use. Its own variable, not GROUPWATCH__AMQP__URL, so that the demo never
        /// picks up a deployment's broker credentials.
        #[arg(
            long,
            env = "GROUPWATCH_DEMO_AMQP_URL",
            hide_env_values = true,
            default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
        )]
        amqp_url: String,
    },
}

const WECOM_AFTER_HELP: &str = "\
Every command takes --config FILE (or GROUPWATCH_CONFIG) and --tenant T, the [[wecom]] tenant
whose secret makes the calls, and prints a table, or JSON with --json.
Input is checked against WeCom's documented limits before anything is called.

Exit codes: 0 done; 1 something failed (each failure listed with WeCom's errcode and message);
2 bad usage or configuration (one line naming the option or key).

Example: hand every group of resigned owners to sam
  groupwatch wecom groups --config gw.toml --tenant acme --status resigned --json \\
    | jq -r '.[].chat_id' \\
    | xargs -r -n 100 groupwatch wecom transfer --config gw.toml --tenant acme --resigned --new-owner sam";

fn parse_provider(s: &str) -> Result<Provider, String> {
    Provider::parse(s).ok_or_else(|| format!("{s:?} is not a provider (wecom, dingtalk, tim)"))
}

enum Failure {
    Usage(String),
    Other(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Other(e.into())
    }
}

fn load_config(arg: &ConfigArg) -> Result<Config, Failure> {
    Config::load(&arg.config, std::env::vars()).map_err(|e| Failure::Usage(e.to_string()))
}

/// With one CPU to run on (`taskset`, or a container's CPU limit, which `available_parallelism`
/// reads), a current-thread runtime skips the work-stealing machinery: about 15% more ingest
/// throughput in `bench/ingest.sh`. With more CPUs, the multi-thread runtime uses them all.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    if std::thread::available_parallelism().is_ok_and(|n| n.get() == 1) {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Runtime::new()
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("groupwatch: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(Failure::Usage(reason)) => {
            eprintln!("groupwatch: {reason}");
            ExitCode::from(2)
        }
        Err(Failure::Other(e)) => {
            eprintln!("groupwatch: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(command: Command) -> Result<ExitCode, Failure> {
    match command {
        Command::Serve { config } => {
            let config = load_config(&config)?;
            telemetry::init_logging(&config.log);
            config.warn_documented_test_keys();
            // Listening for the signals before anything connects: a SIGTERM that arrives while
            // the app starts must stop it cleanly, not kill it.
            let signal = shutdown_signal()?;
            let app = Application::build(config).await?;
            app.run_until(signal).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay { config, dead_letters: true, .. } => {
            let config = load_config(&config)?;
            let s = groupwatch::queue::dead::redrive(&config.amqp).await?;
            println!(
                "re-injected {} events from {} dead letters; {} left in the dead-letter queue (not batches this release reads)",
                s.events, s.messages, s.left
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay { config, tenant, provider, url, fixtures, .. } => {
            let (Some(tenant), Some(url)) = (tenant, url) else {
                return Err(Failure::Usage("replay needs --tenant and --url (or --dead-letters)".into()));
            };
            let config = load_config(&config)?;
            let replayer = Replayer::for_tenant(&config, provider, &tenant, &url).map_err(|e| match e {
                ReplayError::Url(_) => Failure::Usage(format!("--url: {e}")),
                other => Failure::Usage(format!("--tenant: {other}")),
            })?;
            let mut all_ok = true;
            for fixture in &fixtures {
                match replayer.post_file(fixture).await {
                    Ok(status) => {
                        all_ok &= status.is_success();
                        println!("{} {}", fixture.display(), status.as_u16());
                    }
                    Err(e) => {
                        all_ok = false;
                        println!("{} error: {e}", fixture.display());
                    }
                }
            }
            Ok(if all_ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Command::Resync { config, provider, tenant, owners, no_wait, timeout } => {
            let config = load_config(&config)?;
            telemetry::init_logging(&config.log);
            config.warn_documented_test_keys();
            if let Some(t) = &tenant {
                let known = groupwatch::worker::resync::targets(&config)?
                    .iter()
                    .any(|target| &target.tenant == t && provider.is_none_or(|p| p == target.provider));
                if !known {
                    return Err(Failure::Usage(format!("--tenant: {t:?} is not a configured tenant")));
                }
            }
            let tenants: Vec<String> = tenant.into_iter().collect();
            let wait = (!no_wait).then(|| std::time::Duration::from_secs(timeout));
            let mut all_done = true;
            for summary in groupwatch::app::resync_once(&config, provider, &tenants, &owners, wait).await? {
                all_done &= summary.groups_failed == 0;
                println!("{summary}");
            }
            if !all_done {
                eprintln!("groupwatch: some groups were not reconciled in time; is a worker (`serve`) running?");
            }
            Ok(if all_done { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Command::Reshard { config, from } => {
            let config = load_config(&config)?;
            if !(1..=256).contains(&from) {
                return Err(Failure::Usage("--from: must be between 1 and 256".into()));
            }
            use groupwatch::queue::reshard::{reshard, ReshardError};
            match reshard(&config.amqp, from).await {
                Ok(s) => {
                    println!(
                        "resharded {} -> {}: {} items in {} messages moved, {} queues deleted",
                        s.from, s.to, s.items, s.messages, s.deleted_queues
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e @ (ReshardError::WrongFrom { .. } | ReshardError::Consumed { .. })) => {
                    Err(Failure::Usage(e.to_string()))
                }
                Err(e) => Err(Failure::Other(e.into())),
            }
        }
        Command::Status { config, json } => {
            let config = load_config(&config)?;
            let status = groupwatch::tools::status::read(&config).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{status}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Members { args, chat_id } => read(groupwatch::api::cli::members(&args, &chat_id).await),
        Command::GroupsOf { args, userid } => read(groupwatch::api::cli::groups_of(&args, &userid).await),
        Command::Sim { listen, state } => {
            telemetry::init_logging(&Default::default());
            groupwatch::sim::run(listen, state, shutdown_signal()?).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Wecom(command) => match wecom_admin::run(command).await {
            Ok(report) => {
                print!("{}", report.output);
                Ok(if report.all_ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
            }
            Err(CommandError::Usage(reason)) => Err(Failure::Usage(reason)),
            Err(CommandError::Failed(reason)) => Err(Failure::Other(anyhow::anyhow!(reason))),
        },
        Command::Demo { amqp_url } => {
            telemetry::init_logging(&groupwatch::config::LogConfig {
                format: groupwatch::config::LogFormat::Text,
                // lapin reports the demo's own orderly disconnect as an error; it is not one.
                level: "warn,lapin=off".into(),
            });
            groupwatch::tools::demo::run(&amqp_url).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn read(answer: Result<String, ReadError>) -> Result<ExitCode, Failure> {
    match answer {
        Ok(output) => {
            print!("{output}");
            Ok(ExitCode::SUCCESS)
        }
        Err(ReadError::Usage(reason)) => Err(Failure::Usage(reason)),
        Err(ReadError::Failed(reason)) => Err(Failure::Other(anyhow::anyhow!(reason))),
    }
}

/// A future that resolves on SIGINT or SIGTERM. The handlers are installed now, not when the
/// future is first polled.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        Ok(async move {
            tokio::select! {
                _ = int.recv() => {},
                _ = term.recv() => {},
            }
            tracing::info!("shutdown requested");
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async move {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("shutdown requested");
        })
    }
}

// glibc's malloc spent about a tenth of the ingest path's CPU in its free lists.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
