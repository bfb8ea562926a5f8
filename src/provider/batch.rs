//! Batching of single-group fetches, for vendors whose API reads many groups per call (Tencent IM's
//! get_group_info: 50).
//!
//! The worker runs one actor per chat, and each asks for its own chat ([`GroupSource::fetch_group`]).
//! [`Batched`] wraps a source and gathers one tenant's fetches into one
//! [`GroupSource::fetch_groups`], then hands each actor its own answer. A batch is sent when no
//! other fetch joined it for `gap`, when its first fetch has waited `max_wait`, or when `max`
//! fetches wait. During a burst (callbacks over 60 chats arriving for a few hundred ms) fetches
//! keep arriving closer than `gap`, so they fill batches of `max`; a lone fetch waits `gap` only.
//! Sources that do not batch are not wrapped, so their fetches are unchanged.

use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{ApiError, GroupSource};
use crate::core::consistency::Consistency;
use crate::core::model::GroupSnapshot;

type Answer = Result<GroupSnapshot, ApiError>;

struct Waiting {
    chat_id: String,
    reply: oneshot::Sender<Answer>,
}

/// One tenant's batch in the making.
struct Queue {
    /// Tells a timer whether the batch it waits for is still this one.
    generation: u64,
    first: Instant,
    last: Instant,
    waiting: Vec<Waiting>,
}

#[derive(Default)]
struct Queues {
    by_tenant: HashMap<String, Queue>,
    generations: u64,
}

/// When to send a batch.
#[derive(Debug, Clone, Copy)]
pub struct BatchPolicy {
    pub max: usize,
    /// Send once no fetch joined for this long...
    pub gap: Duration,
    /// ...or once the first has waited this long.
    pub max_wait: Duration,
}

/// A [`GroupSource`] whose single fetches are gathered per tenant into batches.
pub struct Batched {
    /// The `provider` label of the batch-size metric.
    provider: &'static str,
    inner: Arc<dyn GroupSource>,
    policy: BatchPolicy,
    queues: Arc<Mutex<Queues>>,
}

impl Batched {
    pub fn new(provider: &'static str, inner: Arc<dyn GroupSource>, policy: BatchPolicy) -> Self {
        let policy = BatchPolicy { max: policy.max.max(1), ..policy };
        Self { provider, inner, policy, queues: Default::default() }
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

/// Waits until the tenant's batch `generation` is due, then sends it; returns early if it was
/// sent full meanwhile.
async fn timer(
    provider: &'static str,
    inner: Arc<dyn GroupSource>,
    queues: Arc<Mutex<Queues>>,
    policy: BatchPolicy,
    tenant: String,
    generation: u64,
) {
    loop {
        let due = {
            let mut q = queues.lock().expect("batch queues");
            let Some(queue) = q.by_tenant.get(&tenant).filter(|b| b.generation == generation) else { return };
            let due = (queue.last + policy.gap).min(queue.first + policy.max_wait);
            if Instant::now() >= due {
                let batch = q.by_tenant.remove(&tenant).map(|b| b.waiting).unwrap_or_default();
                drop(q);
                flush(provider, inner, tenant, batch);
                return;
            }
            due
        };
        tokio::time::sleep_until(due).await;
    }
}

#[async_trait]
impl GroupSource for Batched {
    fn consistency(&self) -> Consistency {
        self.inner.consistency()
    }

    async fn fetch_group(&self, tenant: &str, chat_id: &str) -> Result<GroupSnapshot, ApiError> {
        let (reply, answer) = oneshot::channel();
        let now = Instant::now();
        let (started, full) = {
            let mut q = self.queues.lock().expect("batch queues");
            let Queues { by_tenant, generations } = &mut *q;
            let queue = by_tenant.entry(tenant.to_owned()).or_insert_with(|| {
                *generations += 1;
                Queue { generation: *generations, first: now, last: now, waiting: Vec::new() }
            });
            queue.waiting.push(Waiting { chat_id: chat_id.to_owned(), reply });
            queue.last = now;
            let started = (queue.waiting.len() == 1).then_some(queue.generation);
            let full = queue.waiting.len() >= self.policy.max;
            (started, if full { by_tenant.remove(tenant).map(|b| b.waiting) } else { None })
        };
        if let Some(batch) = full {
            flush(self.provider, self.inner.clone(), tenant.to_owned(), batch);
        } else if let Some(generation) = started {
            tokio::spawn(timer(
                self.provider,
                self.inner.clone(),
                self.queues.clone(),
                self.policy,
                tenant.to_owned(),
                generation,
            ));
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

    fn policy(max: usize, gap_ms: u64) -> BatchPolicy {
        BatchPolicy { max, gap: Duration::from_millis(gap_ms), max_wait: Duration::from_millis(gap_ms * 10) }
    }

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
        let batched = Arc::new(Batched::new("tim", recorder.clone(), policy(50, 20)));
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
        let batched = Batched::new("tim", recorder.clone(), policy(50, 10));
        let started = std::time::Instant::now();
        let (a, b) = tokio::join!(batched.fetch_group("t1", "x"), batched.fetch_group("t2", "x"));
        assert_eq!((a.unwrap().name, b.unwrap().name), ("t1/x".to_owned(), "t2/x".to_owned()));
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(recorder.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn fetches_arriving_closer_than_the_gap_share_a_batch_until_max_wait() {
        let recorder = Arc::new(Recorder::default());
        let policy = BatchPolicy { max: 50, gap: Duration::from_millis(30), max_wait: Duration::from_millis(400) };
        let batched = Arc::new(Batched::new("tim", recorder.clone(), policy));
        let mut tasks = tokio::task::JoinSet::new();
        // 20 fetches 10 ms apart: 200 ms in all, never a 30 ms gap: one batch.
        for i in 0..20 {
            let b = batched.clone();
            tasks.spawn(async move { b.fetch_group("t", &format!("c{i}")).await });
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap().unwrap();
        }
        assert_eq!(recorder.calls.load(Ordering::SeqCst), 1, "{:?}", recorder.batches.lock().unwrap());
    }
}
