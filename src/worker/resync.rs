//! Reconciliation. Vendors send no notification for some changes (WeCom: none for changes made
//! through its API), and notifications can be lost, so every group is looked at now and then
//! (`groupwatch resync`, or periodically inside `serve`): the provider's lister names the groups
//! (WeCom `groupchat/list`, Tencent IM `get_appid_group_list`, DingTalk the chats groupwatch
//! knows), and each gets a reconcile request through its inbound shard, so the chat's one actor
//! handles it in order with the chat's notifications (never two writers at once). The actor
//! fetches, judges and diffs as for a notification: changes found this way have
//! `occurred_at: null`, a group seen for the first time becomes a baseline (no events), and
//! nothing is believed that a second read does not confirm.

use indicatif::{ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::core::clock::now_ms;
use crate::core::model::Provider;
use crate::provider::registry::Registry;
use crate::provider::{ApiError, GroupLister};
use crate::queue::inbound::{HandOffError, Inbound, InboundEvent, Work};
use crate::store::SnapshotStore;
use crate::worker::cluster::Membership;

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
    List(#[from] ApiError),
    #[error("queueing the reconcile requests failed: {0}")]
    HandOff(#[from] HandOffError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("no {0} tenant is configured")]
    NoLister(Provider),
}

/// One tenant to reconcile; `owners` narrows WeCom's listing.
#[derive(Debug, Clone)]
pub struct Target {
    pub provider: Provider,
    pub tenant: String,
    pub owners: Vec<String>,
}

/// Every configured tenant, with WeCom's owners (`owners` and `owners_file`, read now).
pub fn targets(config: &Config) -> std::io::Result<Vec<Target>> {
    let mut all = Vec::new();
    for t in &config.wecom {
        all.push(Target { provider: Provider::Wecom, tenant: t.tenant.clone(), owners: t.resync_owners()? });
    }
    for t in &config.dingtalk {
        all.push(Target { provider: Provider::Dingtalk, tenant: t.tenant.clone(), owners: Vec::new() });
    }
    for t in &config.tim {
        all.push(Target { provider: Provider::Tim, tenant: t.tenant.clone(), owners: Vec::new() });
    }
    Ok(all)
}

/// Lists one tenant's groups and queues a reconcile request for each; returns the chat ids.
pub async fn request_tenant(
    lister: &dyn GroupLister,
    inbound: &Inbound,
    target: &Target,
) -> Result<Vec<String>, ResyncError> {
    let chats = lister.list_groups(&target.tenant, &target.owners).await?;
    let at = now_ms();
    let requests = chats.iter().map(|chat| {
        inbound.hand_off(InboundEvent::request(Work::Reconcile, target.provider, &target.tenant, chat, at))
    });
    // Handed off together, they share the group commit.
    for result in futures_util::future::join_all(requests).await {
        result?;
    }
    metrics::counter!("groupwatch_resync_groups_total", "provider" => target.provider.as_str())
        .increment(chats.len() as u64);
    Ok(chats)
}

/// `groupwatch resync` for one tenant: queues the requests, then (with `wait`) follows the store
/// until the workers have reconciled every listed group or the wait is over.
pub async fn resync_tenant(
    registry: &Registry,
    inbound: &Inbound,
    store: &Arc<dyn SnapshotStore>,
    target: &Target,
    wait: Option<Duration>,
) -> Result<Summary, ResyncError> {
    let lister = registry.lister(target.provider).ok_or(ResyncError::NoLister(target.provider))?;
    let started = Instant::now();
    let calls_before = lister.calls();
    let before: HashMap<String, i64> =
        store.progress(target.provider, &target.tenant).await?.into_iter().map(|p| (p.chat_id, p.last_seq)).collect();
    let asked_at = now_ms();
    let chats = request_tenant(lister.as_ref(), inbound, target).await?;
    let mut summary = Summary {
        tenant: target.tenant.clone(),
        api_calls: lister.calls() - calls_before,
        groups_scanned: chats.len(),
        ..Default::default()
    };
    if let Some(wait) = wait {
        let bar = progress_bar(&target.tenant, chats.len());
        let deadline = Instant::now() + wait;
        loop {
            let now: HashMap<String, (i64, i64)> = store
                .progress(target.provider, &target.tenant)
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
/// Each tenant's turn is a lease in the store, so with several instances a tenant is listed once
/// per interval, by whichever instance takes the turn. A turn whose listing or hand-off fails is
/// given back and taken again at the next tick (a quarter interval later), not an interval later.
pub async fn run_periodically(
    registry: Arc<Registry>,
    inbound: Inbound,
    config: Config,
    membership: Arc<Membership>,
    interval: Duration,
    stop: CancellationToken,
) {
    // The first turn comes one interval after start, as with a single instance.
    tokio::select! {
        _ = stop.cancelled() => return,
        _ = tokio::time::sleep(interval) => {}
    }
    // Asking four times per interval keeps a dead holder's turn from slipping by more than a
    // quarter interval.
    let mut ticks = tokio::time::interval((interval / 4).max(Duration::from_millis(200)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let targets = match targets(&config) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read an owners_file; skipping this resync");
                continue;
            }
        };
        for target in targets {
            let Some(lister) = registry.lister(target.provider) else { continue };
            let turn = format!("resync:{}:{}", target.provider, target.tenant);
            if !membership.claim_turn(&turn, interval).await {
                continue;
            }
            match request_tenant(lister.as_ref(), &inbound, &target).await {
                Ok(chats) => tracing::info!(provider = %target.provider, tenant = %target.tenant, groups = chats.len(),
                    "resync requested"),
                Err(e) => {
                    tracing::warn!(provider = %target.provider, tenant = %target.tenant, error = %e,
                        "resync could not be requested; trying again at the next tick");
                    membership.give_back_turn(&turn).await;
                }
            }
        }
    }
}
