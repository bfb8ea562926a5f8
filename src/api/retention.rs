//! History retention (`store.history_days`): published events older than that are deleted in
//! the background, a small batch per statement with a pause between batches, so that the
//! workers' commits never wait long behind it (SQLite has one writer) and no transaction runs
//! long. Snapshots are never touched: `last_seq` stays, and numbering goes on. Unpublished events
//! are never deleted, whatever their age: the outbox still owes them to the broker.

use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use crate::core::clock::now_ms;
use crate::store::{SnapshotStore, StoreError};

/// Events deleted per statement.
pub const BATCH: i64 = 500;
/// Pause between two batches of one pass: the workers get the store in between.
const BATCH_PAUSE: Duration = Duration::from_millis(20);
/// How long after start-up the first pass runs, and how often passes run after it.
const FIRST_PASS: Duration = Duration::from_secs(1);
const EVERY: Duration = Duration::from_secs(600);

const DAY_MS: i64 = 86_400_000;

/// One pass: deletes published events stored before `before_ms`, `batch` at a time, until none
/// is left or `stop` is cancelled. Returns how many were deleted.
pub async fn prune(
    store: &Arc<dyn SnapshotStore>,
    before_ms: i64,
    batch: i64,
    stop: &CancellationToken,
) -> Result<u64, StoreError> {
    let mut total = 0;
    loop {
        let deleted = store.prune_history(before_ms, batch).await?;
        total += deleted;
        metrics::counter!("groupwatch_history_pruned_total").increment(deleted);
        if deleted < batch as u64 || stop.is_cancelled() {
            return Ok(total);
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(total),
            _ = tokio::time::sleep(BATCH_PAUSE) => {}
        }
    }
}

/// Runs a pass shortly after start-up and then every ten minutes, keeping `days` of history.
pub async fn run(store: Arc<dyn SnapshotStore>, days: u64, stop: CancellationToken) {
    let mut wait = FIRST_PASS;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = EVERY;
        let before = now_ms() - days as i64 * DAY_MS;
        match prune(&store, before, BATCH, &stop).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, days, "history retention: old events deleted"),
            Err(e) => tracing::warn!(error = %e, "history retention: cannot prune; next pass in ten minutes"),
        }
    }
}
