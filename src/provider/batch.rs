//! Batching of single-group fetches, for vendors whose API reads many groups per call (Tencent IM's
//! get_group_info: 50).
//!
//! The worker runs one actor per chat, and each asks for its own chat ([`GroupSource::fetch_group`]).
//! [`Batched`] wraps a source and gathers the fetches of one tenant that arrive within `linger` of
//! the first (or until `max` are waiting) into one [`GroupSource::fetch_groups`], then hands each
//! actor its own answer. A burst of callbacks over 60 chats thus costs 2 calls, not 60; a lone
//! fetch waits `linger` at most. Sources that do not batch are not wrapped, so their fetches are
//! unchanged.

use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

use super::{ApiError, GroupSource};
use crate::core::consistency::Consistency;
use crate::core::model::GroupSnapshot;

type Answer = Result<GroupSnapshot, ApiError>;

struct Waiting {
    chat_id: String,
    reply: oneshot::Sender<Answer>,
}

/// A [`GroupSource`] whose single fetches are gathered per tenant into batches.
pub struct Batched {
    /// The `provider` label of the batch-size metric.
    provider: &'static str,
    inner: Arc<dyn GroupSource>,
    max: usize,
    linger: Duration,
    /// Per tenant, the fetches waiting for the next batch.
    queues: Arc<Mutex<HashMap<String, Vec<Waiting>>>>,
}

impl Batched {
    pub fn new(provider: &'static str, inner: Arc<dyn GroupSource>, max: usize, linger: Duration) -> Self {
        Self { provider, inner, max: max.max(1), linger, queues: Default::default() }
    }
}

/// Sends one batch in its own task, so that an actor stopped while waiting cannot cancel the
/// others' fetch.
fn flush(provider: &'static str, inner: Arc<dyn GroupSource>, tenant: String, batch: Vec<Waiting>) {
    if batch.is_empty() {
        return;
    }
    tokio::spawn(async move {
        // One entry per chat, however many actors asked (a retry racing its predecessor).
        let mut ids: Vec<String> = Vec::with_capacity(batch.len());
        for w in &batch {
            if !ids.contains(&w.chat_id) {
                ids.push(w.chat_id.clone());
            }
        }
        metrics::histogram!("groupwatch_fetch_batch_size", "provider" => provider).record(ids.len() as f64);
        let answers = inner.fetch_groups(&tenant, &ids).await;
        let by_id: HashMap<&str, &Answer> = ids.iter().map(String::as_str).zip(answers.iter()).collect();
        for w in batch {
            let answer = by_id
                .get(w.chat_id.as_str())
                .map(|a| (*a).clone())
                .unwrap_or_else(|| Err(ApiError::Transient("the batch answered no entry for this group".into())));
            // The actor may be gone; its answer is simply dropped.
            let _ = w.reply.send(answer);
        }
    });
}

#[async_trait]
impl GroupSource for Batched {
    fn consistency(&self) -> Consistency {
        self.inner.consistency()
    }

    async fn fetch_group(&self, tenant: &str, chat_id: &str) -> Result<GroupSnapshot, ApiError> {
        let (reply, answer) = oneshot::channel();
        let (first, full) = {
            let mut queues = self.queues.lock().expect("batch queues");
            let queue = queues.entry(tenant.to_owned()).or_default();
            queue.push(Waiting { chat_id: chat_id.to_owned(), reply });
            let full = if queue.len() >= self.max { Some(std::mem::take(queue)) } else { None };
            (queue.len() == 1 && full.is_none(), full)
        };
        if let Some(batch) = full {
            flush(self.provider, self.inner.clone(), tenant.to_owned(), batch);
        } else if first {
            // The first fetch of a batch sends it after the linger. A timer may find its batch
            // already sent (full) and send a younger one early: harmless.
            let (provider, inner, queues, linger) =
                (self.provider, self.inner.clone(), self.queues.clone(), self.linger);
            let tenant = tenant.to_owned();
            tokio::spawn(async move {
                tokio::time::sleep(linger).await;
                let batch = queues.lock().expect("batch queues").remove(&tenant).unwrap_or_default();
                flush(provider, inner, tenant, batch);
            });
        }
        answer.await.unwrap_or_else(|_| Err(ApiError::Transient("the batched fetch was dropped".into())))
    }

    async fn fetch_groups(&self, tenant: &str, chat_ids: &[String]) -> Vec<Answer> {
        self.inner.fetch_groups(tenant, chat_ids).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Records the batches it is asked for; chat "gone" answers Gone.
    #[derive(Default)]
    struct Recorder {
        batches: Mutex<Vec<Vec<String>>>,
        calls: AtomicUsize,
    }

    #[async_trait]
    impl GroupSource for Recorder {
        fn consistency(&self) -> Consistency {
            Consistency::NamedMembers
        }

        async fn fetch_group(&self, _: &str, _: &str) -> Answer {
            unreachable!("Batched always asks for batches")
        }

        async fn fetch_groups(&self, tenant: &str, chat_ids: &[String]) -> Vec<Answer> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.batches.lock().unwrap().push(chat_ids.to_vec());
            chat_ids
                .iter()
                .map(|id| match id.as_str() {
                    "gone" => Err(ApiError::Gone { errcode: 10010 }),
                    id => Ok(GroupSnapshot { name: format!("{tenant}/{id}"), ..GroupSnapshot::empty(id) }),
                })
                .collect()
        }
    }

    #[tokio::test]
    async fn concurrent_fetches_share_batches_of_at_most_max() {
        let recorder = Arc::new(Recorder::default());
        let batched = Arc::new(Batched::new("tim", recorder.clone(), 50, Duration::from_millis(20)));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..60 {
            let b = batched.clone();
            tasks.spawn(async move { (i, b.fetch_group("t", &format!("c{i}")).await) });
        }
        tasks.spawn({
            let b = batched.clone();
            async move { (999, b.fetch_group("t", "gone").await) }
        });
        while let Some(joined) = tasks.join_next().await {
            let (i, answer) = joined.unwrap();
            match i {
                999 => assert_eq!(answer.unwrap_err(), ApiError::Gone { errcode: 10010 }),
                i => assert_eq!(answer.unwrap().name, format!("t/c{i}")),
            }
        }
        let batches = recorder.batches.lock().unwrap().clone();
        assert_eq!(batches.iter().map(Vec::len).sum::<usize>(), 61);
        assert!(batches.len() <= 3, "{batches:?}");
        assert!(batches.iter().all(|b| b.len() <= 50));
    }

    #[tokio::test]
    async fn tenants_are_batched_apart_and_a_lone_fetch_waits_only_the_linger() {
        let recorder = Arc::new(Recorder::default());
        let batched = Batched::new("tim", recorder.clone(), 50, Duration::from_millis(10));
        let started = std::time::Instant::now();
        let (a, b) = tokio::join!(batched.fetch_group("t1", "x"), batched.fetch_group("t2", "x"));
        assert_eq!((a.unwrap().name, b.unwrap().name), ("t1/x".to_owned(), "t2/x".to_owned()));
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(recorder.calls.load(Ordering::SeqCst), 2);
    }
}
