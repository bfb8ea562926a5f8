//! Reconciliation. WeCom sends no callback for changes made through its API, and callbacks can
//! be lost, so every group is walked now and then (`groupwatch resync`, or periodically inside
//! `serve`): `groupchat/list` → `groupchat/get` → the same diff and publisher as callbacks.
//! Changes found this way have `occurred_at: null`; a group seen for the first time becomes a
//! baseline (no events), so a first resync never floods consumers.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use crate::config::WecomTenant;
use crate::core::model::{GroupKey, Provider};
use crate::provider::wecom::WecomClient;
use crate::provider::FetchError;
use crate::worker::pipeline::{Outcome, Pipeline};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub tenant: String,
    pub groups_scanned: usize,
    pub events_published: usize,
    /// Groups whose fetch failed for good (they are retried by the next resync).
    pub groups_failed: usize,
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

/// Walks one tenant's groups (optionally only those of `owners`) and publishes what differs
/// from the stored snapshots. Stops early, between groups, when `stop` is cancelled.
pub async fn resync_tenant(
    pipeline: &Pipeline,
    client: &WecomClient,
    tenant: &str,
    owners: &[String],
    page_size: u32,
    stop: &CancellationToken,
) -> Result<Summary, FetchError> {
    let started = Instant::now();
    let calls_before = client.calls();
    let chats = client.list_chats(tenant, owners, page_size).await?;
    let bar = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(chats.len() as u64);
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:40}] {pos}/{len} groups {msg}")
                .expect("static template")
                .progress_chars("=> "),
        );
        bar.set_prefix(format!("resync {tenant}"));
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut summary = Summary { tenant: tenant.to_owned(), ..Default::default() };
    for chat in chats {
        if stop.is_cancelled() {
            break;
        }
        let key = GroupKey::new(Provider::Wecom, tenant, chat.chat_id);
        let mut attempt = 0;
        loop {
            match pipeline.process(&key, &[], attempt).await {
                Outcome::Done { events, .. } => {
                    summary.events_published += events;
                    break;
                }
                Outcome::RetryAfter(delay) => {
                    attempt += 1;
                    tokio::time::sleep(delay).await;
                }
                Outcome::Paused(wait) => tokio::time::sleep(wait).await,
                Outcome::Poison(reason) | Outcome::Abandon(reason) => {
                    tracing::warn!(tenant, chat_id = %key.chat_id, reason, "resync could not reconcile this group");
                    summary.groups_failed += 1;
                    break;
                }
                Outcome::Halted => break,
            }
        }
        summary.groups_scanned += 1;
        bar.set_message(format!("{} events", summary.events_published));
        bar.inc(1);
    }
    bar.finish_and_clear();
    summary.api_calls = client.calls() - calls_before;
    summary.duration = started.elapsed();
    metrics::counter!("groupwatch_resync_groups_total").increment(summary.groups_scanned as u64);
    Ok(summary)
}

/// Inside `serve`: one resync of every tenant each `interval`, until `stop`.
pub async fn run_periodically(
    pipeline: std::sync::Arc<Pipeline>,
    client: WecomClient,
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
            match resync_tenant(&pipeline, &client, &t.tenant, &owners, page_size, &stop).await {
                Ok(summary) => tracing::info!(tenant = %t.tenant, "{summary}"),
                Err(e) => tracing::warn!(tenant = %t.tenant, error = %e, "resync could not list the groups"),
            }
        }
    }
}
