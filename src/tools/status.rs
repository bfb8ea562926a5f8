//! `groupwatch status`: what the instances sharing a store say about themselves. Read from the
//! store only (the heartbeats, leases, tokens' expiries and pauses), so it works from any host
//! that can reach the store, with no instance's HTTP port.

use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

use crate::config::Config;
use crate::core::clock::now_ms;
use crate::store::coordination::InstanceRow;
use crate::store::{self, SnapshotStore};

#[derive(Debug, Serialize)]
pub struct Status {
    pub instances: Vec<Instance>,
    /// Shard → the live instances consuming it (one, except for a tick while ownership moves).
    pub shards: BTreeMap<u16, Vec<String>>,
    pub accounts: Vec<AccountUse>,
}

#[derive(Debug, Serialize)]
pub struct Instance {
    pub instance_id: String,
    pub host: String,
    pub pid: u32,
    pub worker: bool,
    pub live: bool,
    pub heartbeat_age_ms: i64,
    pub up_ms: i64,
    pub shards: Vec<u16>,
}

#[derive(Debug, Serialize)]
pub struct AccountUse {
    pub account: String,
    /// Milliseconds until the shared token is refreshed (negative: due).
    pub token_refresh_in_ms: Option<i64>,
    /// Calls in the last minute, all live instances together.
    pub calls_last_minute: u64,
    pub budget_per_minute: u32,
    pub paused_for_ms: Option<i64>,
}

/// Reads the cluster's state from the store `config` names.
pub async fn read(config: &Config) -> anyhow::Result<Status> {
    let store = store::connect(config.store.url.expose()).await.map_err(|e| anyhow::anyhow!("store: {e}"))?;
    collect(store.as_ref(), config).await
}

async fn collect(store: &dyn SnapshotStore, config: &Config) -> anyhow::Result<Status> {
    let now = now_ms();
    // The membership's own rule: silent for half a rebalance period is dead.
    let expiry = (config.worker.rebalance_secs * 1000 / 2) as i64;
    let rows: Vec<InstanceRow> = store.instances(0).await?;
    let mut shards: BTreeMap<u16, Vec<String>> = (0..config.amqp.inbound_shards).map(|s| (s, Vec::new())).collect();
    let mut usage: BTreeMap<String, u64> = BTreeMap::new();
    let instances: Vec<Instance> = rows
        .into_iter()
        .map(|r| {
            let live = now - r.heartbeat_at_ms <= expiry;
            if live {
                for s in &r.info.shards {
                    shards.entry(*s).or_default().push(r.instance_id.clone());
                }
                for (account, calls) in &r.info.calls_per_minute {
                    *usage.entry(account.clone()).or_default() += calls;
                }
            }
            Instance {
                instance_id: r.instance_id,
                host: r.info.host,
                pid: r.info.pid,
                worker: r.worker,
                live,
                heartbeat_age_ms: now - r.heartbeat_at_ms,
                up_ms: now - r.started_at_ms,
                shards: r.info.shards,
            }
        })
        .collect();
    let tokens: BTreeMap<String, i64> = store.api_token_expiries().await?.into_iter().collect();
    let pauses: BTreeMap<String, i64> = store.api_pauses(now).await?.into_iter().collect();
    let mut names: Vec<String> = tokens.keys().chain(pauses.keys()).chain(usage.keys()).cloned().collect();
    names.sort();
    names.dedup();
    let accounts = names
        .into_iter()
        .map(|account| AccountUse {
            token_refresh_in_ms: tokens.get(&account).map(|at| at - now),
            calls_last_minute: usage.get(&account).copied().unwrap_or(0),
            budget_per_minute: config.worker.api_rate_per_minute,
            paused_for_ms: pauses.get(&account).map(|until| until - now),
            account,
        })
        .collect();
    Ok(Status { instances, shards, accounts })
}

fn secs(ms: i64) -> String {
    if ms.abs() >= 120_000 {
        format!("{}m{:02}s", ms / 60_000, (ms.abs() / 1000) % 60)
    } else {
        format!("{:.1}s", ms as f64 / 1000.0)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let live = self.instances.iter().filter(|i| i.live).count();
        let mut out = format!("instances: {live} live\n");
        for i in &self.instances {
            let _ = writeln!(
                out,
                "  {:<40} {:<6} {:<7} pid {:<7} heartbeat {} ago, up {}, shards {:?}",
                i.instance_id,
                if i.live { "live" } else { "silent" },
                if i.worker { "worker" } else { "ingress" },
                i.pid,
                secs(i.heartbeat_age_ms),
                secs(i.up_ms),
                i.shards
            );
        }
        let _ = writeln!(out, "shards:");
        for (shard, owners) in &self.shards {
            let who = match owners.len() {
                0 => "(nobody: no live worker owns it)".to_owned(),
                1 => owners[0].clone(),
                _ => format!("{} (moving)", owners.join(", ")),
            };
            let _ = writeln!(out, "  {shard:>3}  {who}");
        }
        let _ = writeln!(out, "vendor accounts:");
        if self.accounts.is_empty() {
            let _ = writeln!(out, "  (none used yet)");
        }
        for a in &self.accounts {
            let token = match a.token_refresh_in_ms {
                Some(ms) if ms > 0 => format!("token refreshed in {}", secs(ms)),
                Some(_) => "token due".to_owned(),
                None => "no shared token".to_owned(),
            };
            let paused = a.paused_for_ms.map(|ms| format!(", paused for {}", secs(ms))).unwrap_or_default();
            let _ = writeln!(
                out,
                "  {:<30} {token}, {} calls in the last minute of {} allowed{paused}",
                a.account, a.calls_last_minute, a.budget_per_minute
            );
        }
        f.write_str(&out)
    }
}
