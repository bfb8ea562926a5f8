//! Reconciliation. WeCom sends no callback for changes made through its API, and callbacks can
//! be lost, so every group is looked at now and then (`groupwatch resync`, or periodically inside
//! `serve`): `groupchat/list` names the groups, and each gets a reconcile request through its
//! inbound shard, so the chat's one actor handles it in order with the chat's callbacks (never
//! two writers at once). The actor fetches, judges and diffs as for a callback: changes found this
//! way have `occurred_at: null`, a group seen for the first time becomes a baseline (no events),
//! and nothing is believed that a second read does not confirm.

use indicatif::{ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use crate::config::WecomTenant;
use crate::core::clock::now_ms;
use crate::core::model::Provider;
use crate::provider::wecom::WecomClient;
use crate::provider::FetchError;
use crate::queue::inbound::{HandOffError, Inbound, InboundEvent, Work};
use crate::store::SnapshotStore;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub tenant: String,
    /// Groups whose reconciliation was seen through (or, without waiting, requested).
    pub groups_scanned: usize,
    pub events_published: usize,
    /// Groups not reconciled within the wait (they are looked at again by the next resync).
    pub groups_failed: usize,
    /// API calls made by the listing (the fetches are the workers').
    pub api_calls: u64,
    pub duration: Duration,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "resync {}: {} groups scanned, {} events published, {} failed, {} API calls, {:.1} s",
            self.tenant,
            self.groups_scanned,
            self.events_published,
            self.groups_failed,
            self.api_calls,
            self.duration.as_secs_f64()
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ResyncError {
    #[error("listing the groups failed: {0}")]
    List(#[from] FetchError),
    #[error("queueing the reconcile requests failed: {0}")]
    HandOff(#[from] HandOffError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Lists one tenant's groups (optionally only those of `owners`) and queues a reconcile request
/// for each; returns the chat ids.
pub async fn request_tenant(
    client: &WecomClient,
    inbound: &Inbound,
    tenant: &str,
    owners: &[String],
    page_size: u32,
) -> Result<Vec<String>, ResyncError> {
    let chats = client.list_chats(tenant, owners, page_size).await?;
    let at = now_ms();
    let requests = chats.iter().map(|chat| {
        inbound.hand_off(InboundEvent::request(Work::Reconcile, Provider::Wecom, tenant, &chat.chat_id, at))
    });
    // Handed off together, they share the group commit.
    for result in futures_util::future::join_all(requests).await {
        result?;
    }
    metrics::counter!("groupwatch_resync_groups_total", "provider" => Provider::Wecom.as_str())
        .increment(chats.len() as u64);
    Ok(chats.into_iter().map(|c| c.chat_id).collect())
}

/// `groupwatch resync` for one tenant: queues the requests, then (with `wait`) follows the store
/// until the workers have reconciled every listed group or the wait is over.
pub async fn resync_tenant(
    client: &WecomClient,
    inbound: &Inbound,
    store: &Arc<dyn SnapshotStore>,
    tenant: &str,
    owners: &[String],
    page_size: u32,
    wait: Option<Duration>,
) -> Result<Summary, ResyncError> {
    let started = Instant::now();
    let calls_before = client.calls();
    let before: HashMap<String, i64> =
        store.progress(Provider::Wecom, tenant).await?.into_iter().map(|p| (p.chat_id, p.last_seq)).collect();
    let asked_at = now_ms();
    let chats = request_tenant(client, inbound, tenant, owners, page_size).await?;
    let mut summary = Summary {
        tenant: tenant.to_owned(),
        api_calls: client.calls() - calls_before,
        groups_scanned: chats.len(),
        ..Default::default()
    };
    if let Some(wait) = wait {
        let bar = progress_bar(tenant, chats.len());
        let deadline = Instant::now() + wait;
        loop {
            let now: HashMap<String, (i64, i64)> = store
                .progress(Provider::Wecom, tenant)
                .await?
                .into_iter()
                .map(|p| (p.chat_id, (p.last_seq, p.checked_at_ms)))
                .collect();
            let done: Vec<&String> =
                chats.iter().filter(|c| now.get(*c).is_some_and(|(_, checked)| *checked >= asked_at)).collect();
            summary.groups_scanned = done.len();
            summary.events_published =
                done.iter().map(|c| (now[*c].0 - before.get(*c).copied().unwrap_or(0)).max(0) as usize).sum();
            bar.set_position(done.len() as u64);
            bar.set_message(format!("{} events", summary.events_published));
            if done.len() == chats.len() || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bar.finish_and_clear();
        summary.groups_failed = chats.len() - summary.groups_scanned;
    }
    summary.duration = started.elapsed();
    Ok(summary)
}

fn progress_bar(tenant: &str, len: usize) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:40}] {pos}/{len} groups {msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("resync {tenant}"));
    bar
}

/// Inside `serve`: every `interval`, queues a reconcile request for every group of every tenant.
pub async fn run_periodically(
    client: WecomClient,
    inbound: Inbound,
    tenants: Vec<WecomTenant>,
    page_size: u32,
    interval: Duration,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        for t in &tenants {
            let owners = match t.resync_owners() {
                Ok(o) => o,
                Err(e) => {
                    tracing::warn!(tenant = %t.tenant, error = %e, "cannot read owners_file; skipping this resync");
                    continue;
                }
            };
            match request_tenant(&client, &inbound, &t.tenant, &owners, page_size).await {
                Ok(chats) => tracing::info!(tenant = %t.tenant, groups = chats.len(), "resync requested"),
                Err(e) => tracing::warn!(tenant = %t.tenant, error = %e, "resync could not be requested"),
            }
        }
    }
}
