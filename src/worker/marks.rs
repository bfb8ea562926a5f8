//! Marking published events as published: in the background, every chat's marks in one
//! transaction.
//!
//! An attempt used to mark its own events after the broker's confirm, in a transaction of its
//! own: a second turn at the store's write lock per chat (on SQLite a second fsync), which put
//! every other chat's commit behind it. A mark only saves work: an event left unmarked is
//! published again later, with the same id and `seq`, which consumers already deduplicate. So
//! the attempt only records the mark here, and one task writes all recorded marks in one
//! transaction while the next turn's marks gather: under load the marks of many chats share
//! one write, and a quiet chat's mark is written at once.
//!
//! Until a mark is written, [`Marks::published_through`] tells this process's next attempt at
//! the chat not to publish those events a second time. Marks still unwritten at shutdown are
//! written before the worker stops; a crash loses them, and the outbox sweep publishes those
//! events again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::core::clock::now_ms;
use crate::core::model::GroupKey;
use crate::store::SnapshotStore;

/// The most chats one transaction marks; the rest wait for the next turn.
const MAX_BATCH: usize = 500;
/// How long to wait before writing again after the store refused the marks.
const RETRY_AFTER: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct Marks {
    /// Per chat: its events through this seq are published, the store does not know it yet.
    pending: Mutex<HashMap<GroupKey, i64>>,
    wake: Notify,
}

impl Marks {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The broker confirmed the chat's events through `through_seq`.
    pub fn record(&self, key: &GroupKey, through_seq: i64) {
        let mut pending = self.pending.lock().expect("marks lock");
        let seq = pending.entry(key.clone()).or_insert(through_seq);
        *seq = (*seq).max(through_seq);
        drop(pending);
        self.wake.notify_one();
    }

    /// The seq through which the chat's events are published but perhaps not yet marked.
    pub fn published_through(&self, key: &GroupKey) -> Option<i64> {
        self.pending.lock().expect("marks lock").get(key).copied()
    }

    /// Writes the recorded marks until `stop`, then writes what is left once more.
    pub async fn run(self: Arc<Self>, store: Arc<dyn SnapshotStore>, stop: CancellationToken) {
        loop {
            let written = self.write(store.as_ref()).await;
            if stop.is_cancelled() && written != Ok(MAX_BATCH) {
                return;
            }
            match written {
                // More waiting than one transaction takes: go again at once.
                Ok(n) if n == MAX_BATCH => continue,
                Ok(_) => {
                    tokio::select! {
                        _ = self.wake.notified() => {}
                        _ = stop.cancelled() => {}
                    }
                }
                Err(()) => {
                    tokio::select! {
                        _ = tokio::time::sleep(RETRY_AFTER) => {}
                        _ = stop.cancelled() => {}
                    }
                }
            }
        }
    }

    /// Writes up to `MAX_BATCH` recorded marks in one transaction; returns how many.
    pub async fn write(&self, store: &dyn SnapshotStore) -> Result<usize, ()> {
        let batch: Vec<(GroupKey, i64)> = {
            let pending = self.pending.lock().expect("marks lock");
            pending.iter().take(MAX_BATCH).map(|(k, s)| (k.clone(), *s)).collect()
        };
        if batch.is_empty() {
            return Ok(0);
        }
        if let Err(e) = store.mark_published(&batch, now_ms()).await {
            tracing::warn!(chats = batch.len(), error = %e,
                "cannot mark events published; will try again (until then this instance does not publish them again)");
            return Err(());
        }
        metrics::histogram!("groupwatch_outbox_marks_per_write").record(batch.len() as f64);
        let mut pending = self.pending.lock().expect("marks lock");
        for (key, seq) in &batch {
            // A chat published further since the batch was taken keeps its newer mark.
            if pending.get(key) == Some(seq) {
                pending.remove(key);
            }
        }
        Ok(batch.len())
    }
}
