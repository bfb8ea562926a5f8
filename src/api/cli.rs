//! `groupwatch members` and `groupwatch groups-of`: the read API's answers on the command line,
//! read from the store named by the configuration (no running `serve` needed). `--json` prints
//! exactly what the HTTP route answers.

use std::path::PathBuf;
use std::sync::Arc;

use crate::api::view::{self, ViewError};
use crate::config::Config;
use crate::core::model::{GroupKey, Provider};
use crate::store::{self, SnapshotStore};
use crate::tools::wecom_admin::table;

#[derive(clap::Args, Debug)]
pub struct ReadArgs {
    /// The TOML configuration file (its store is read).
    #[arg(long, env = "GROUPWATCH_CONFIG", hide_env_values = true)]
    pub config: PathBuf,
    /// The tenant, as in the configuration and the routing keys.
    #[arg(long)]
    pub tenant: String,
    /// wecom, dingtalk or tim.
    #[arg(long, default_value = "wecom")]
    pub provider: String,
    /// Print JSON (as the read API answers) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Why a command failed, by exit code.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Bad option or configuration (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The group is not stored, or the store failed (exit 1).
    #[error("{0}")]
    Failed(String),
}

impl From<ViewError> for ReadError {
    fn from(e: ViewError) -> Self {
        let source = match e {
            ViewError::Unavailable(s) | ViewError::Failed(s) => s,
        };
        ReadError::Failed(source.to_string())
    }
}

async fn open(args: &ReadArgs) -> Result<(Provider, Arc<dyn SnapshotStore>), ReadError> {
    let config = Config::load(&args.config, std::env::vars()).map_err(|e| ReadError::Usage(e.to_string()))?;
    let provider = Provider::parse(&args.provider)
        .ok_or_else(|| ReadError::Usage("--provider: expected wecom, dingtalk or tim".into()))?;
    if provider == Provider::Wecom && config.tenant(&args.tenant).is_none() {
        return Err(ReadError::Usage(format!("--tenant: {:?} is not a configured [[wecom]] tenant", args.tenant)));
    }
    let store = store::connect(config.store.url.expose()).await.map_err(|e| ReadError::Failed(e.to_string()))?;
    Ok((provider, store))
}

/// `groupwatch members CHAT`: the stored snapshot of one group.
pub async fn members(args: &ReadArgs, chat_id: &str) -> Result<String, ReadError> {
    let (provider, store) = open(args).await?;
    let key = GroupKey::new(provider, &args.tenant, chat_id);
    let group = view::group(&store, &key)
        .await?
        .ok_or_else(|| ReadError::Failed(format!("no group {chat_id:?} stored for {provider}/{}", args.tenant)))?;
    if args.json {
        return Ok(serde_json::to_string_pretty(&group).expect("views serialise") + "\n");
    }
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let num = |v: Option<i64>| v.map_or_else(|| "-".into(), |n| n.to_string());
    let head = table(
        &[],
        vec![
            vec!["chat".into(), group.chat_id.clone()],
            vec!["name".into(), group.name.clone()],
            vec!["owner".into(), group.owner.clone()],
            vec!["member_version".into(), opt(&group.member_version)],
            vec!["members".into(), group.member_count.to_string()],
            vec!["last_seq".into(), group.last_seq.to_string()],
            vec!["dismissed".into(), group.dismissed.to_string()],
        ],
    );
    let members = group.member_list().map_err(|e| ReadError::Failed(format!("stored members unreadable: {e}")))?;
    let rows = members
        .iter()
        .map(|m| {
            vec![
                m.userid.clone(),
                num(m.member_type),
                opt(&m.name),
                num(m.join_time),
                num(m.join_scene),
                opt(&m.invitor),
                opt(&m.state),
            ]
        })
        .collect();
    Ok(head + "\n" + &table(&["USERID", "TYPE", "NAME", "JOIN_TIME", "JOIN_SCENE", "INVITOR", "STATE"], rows))
}

/// `groupwatch groups-of USERID`: every group the member is in now.
pub async fn groups_of(args: &ReadArgs, userid: &str) -> Result<String, ReadError> {
    let (provider, store) = open(args).await?;
    let found = view::all_member_groups(&store, provider, &args.tenant, userid).await?;
    if args.json {
        return Ok(serde_json::to_string_pretty(&found).expect("views serialise") + "\n");
    }
    let rows = found
        .groups
        .iter()
        .map(|g| {
            vec![
                g.chat_id.clone(),
                g.name.clone(),
                g.owner.clone(),
                g.join_time.map_or_else(|| "-".into(), |t| t.to_string()),
                g.last_seq.to_string(),
            ]
        })
        .collect();
    Ok(table(&["CHAT_ID", "NAME", "OWNER", "JOIN_TIME", "LAST_SEQ"], rows))
}
