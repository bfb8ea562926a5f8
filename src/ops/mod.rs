//! The ops routes: `/healthz`, `/readyz` and `/metrics`, served on the ops listener
//! (`http.ops_listen`, loopback by default) and, only with `http.ops_on_callback_listener`, on
//! the callback listener too, which faces the internet: metrics name tenants and error rates.
//!
//! Readiness needs a store query, which competes with the workers for the few pooled
//! connections; a probe polled by many clients (or by an attacker) must not multiply it. The
//! store's answer is cached and refreshed at most once a second, by one request at a time; the
//! broker and consumer checks are in-memory flags, read on every request.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use crate::queue::broker::Broker;
use crate::store::SnapshotStore;
use crate::telemetry;
use crate::worker::ShardHealth;

/// How long a store check answers `/readyz` before the next request refreshes it.
pub const READINESS_REFRESH: Duration = Duration::from_secs(1);

/// A store that does not answer within this is reported unreachable (PostgreSQL's pool waits up
/// to 5 s for a connection; a probe should not).
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// A boolean check whose result is reused for `refresh`: concurrent callers wait for the one
/// refresh in flight instead of starting their own.
pub struct CachedCheck {
    refresh: Duration,
    last: tokio::sync::Mutex<Option<(Instant, bool)>>,
    refreshes: AtomicU64,
}

impl CachedCheck {
    pub fn new(refresh: Duration) -> Self {
        Self { refresh, last: tokio::sync::Mutex::new(None), refreshes: AtomicU64::new(0) }
    }

    /// The cached result if younger than `refresh`, else `probe`'s.
    pub async fn get<F: Future<Output = bool>>(&self, probe: impl FnOnce() -> F) -> bool {
        let mut last = self.last.lock().await;
        if let Some((at, ok)) = *last {
            if at.elapsed() < self.refresh {
                return ok;
            }
        }
        self.refreshes.fetch_add(1, Ordering::Relaxed);
        let ok = probe().await;
        // Timed from the end of the probe: refreshes are at least `refresh` apart.
        *last = Some((Instant::now(), ok));
        ok
    }

    /// How many times the probe ran.
    pub fn refreshes(&self) -> u64 {
        self.refreshes.load(Ordering::Relaxed)
    }
}

/// Connections out that must be up for events to reach this process (DingTalk Stream mode: no
/// live connection means DingTalk has nowhere to push), by name (`dingtalk/<tenant>`).
#[derive(Default)]
pub struct Links {
    up: std::sync::Mutex<std::collections::BTreeMap<String, bool>>,
}

impl Links {
    pub fn set(&self, name: &str, up: bool) {
        self.up.lock().expect("links lock").insert(name.to_owned(), up);
    }

    /// The links that are down, sorted.
    pub fn down(&self) -> Vec<String> {
        self.up.lock().expect("links lock").iter().filter(|(_, up)| !**up).map(|(n, _)| n.clone()).collect()
    }
}

/// What `/readyz` looks at.
pub struct Readiness {
    broker: Broker,
    store: Arc<dyn SnapshotStore>,
    /// The worker's consumers, when this process runs one.
    shards: Option<Arc<ShardHealth>>,
    store_check: CachedCheck,
    links: Arc<Links>,
}

impl Readiness {
    pub fn new(broker: Broker, store: Arc<dyn SnapshotStore>, shards: Option<Arc<ShardHealth>>) -> Self {
        Self { broker, store, shards, store_check: CachedCheck::new(READINESS_REFRESH), links: Arc::default() }
    }

    /// The outbound connections readiness waits for.
    pub fn links(&self) -> Arc<Links> {
        self.links.clone()
    }

    /// How many store pings readiness has cost so far.
    pub fn store_pings(&self) -> u64 {
        self.store_check.refreshes()
    }

    /// `Err` names what is missing.
    pub async fn check(&self) -> Result<(), String> {
        if !self.broker.is_connected() {
            return Err("broker unreachable".into());
        }
        let store = self.store.clone();
        let reachable = self
            .store_check
            .get(|| async move { matches!(tokio::time::timeout(PING_TIMEOUT, store.ping()).await, Ok(Ok(()))) })
            .await;
        if !reachable {
            return Err("store unreachable".into());
        }
        if let Some(down) = self.shards.as_ref().map(|s| s.down()).filter(|d| !d.is_empty()) {
            return Err(format!("no consumer on inbound shards {down:?}"));
        }
        let down = self.links.down();
        if !down.is_empty() {
            return Err(format!("no live connection for {down:?}"));
        }
        Ok(())
    }
}

/// `/healthz`, `/readyz` and `/metrics`.
pub fn router(readiness: Arc<Readiness>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(|| async { telemetry::metrics_handle().render() }))
        .with_state(readiness)
}

async fn readyz(State(readiness): State<Arc<Readiness>>) -> impl IntoResponse {
    match readiness.check().await {
        Ok(()) => (StatusCode::OK, "ready".to_owned()),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test]
    async fn concurrent_checks_share_one_probe_and_refresh_once_a_second() {
        let check = Arc::new(CachedCheck::new(Duration::from_millis(300)));
        let probes = Arc::new(AtomicUsize::new(0));
        let ask = |check: Arc<CachedCheck>, probes: Arc<AtomicUsize>| async move {
            check
                .get(|| async move {
                    probes.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    true
                })
                .await
        };
        let all: Vec<_> = (0..64).map(|_| tokio::spawn(ask(check.clone(), probes.clone()))).collect();
        for task in all {
            assert!(task.await.unwrap());
        }
        assert_eq!(probes.load(Ordering::SeqCst), 1, "64 concurrent checks, one probe");
        assert!(ask(check.clone(), probes.clone()).await);
        assert_eq!(probes.load(Ordering::SeqCst), 1, "still fresh");
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert!(ask(check.clone(), probes.clone()).await);
        assert_eq!(probes.load(Ordering::SeqCst), 2, "stale: refreshed once");
        assert_eq!(check.refreshes(), 2);
    }

    #[test]
    fn links_report_the_ones_down() {
        let links = Links::default();
        assert!(links.down().is_empty());
        links.set("dingtalk/b", false);
        links.set("dingtalk/a", false);
        assert_eq!(links.down(), ["dingtalk/a", "dingtalk/b"]);
        links.set("dingtalk/a", true);
        assert_eq!(links.down(), ["dingtalk/b"]);
    }

    #[tokio::test]
    async fn a_failed_probe_is_cached_too() {
        let check = CachedCheck::new(Duration::from_secs(60));
        assert!(!check.get(|| async { false }).await);
        assert!(!check.get(|| async { true }).await, "the failure stands until the refresh");
        assert_eq!(check.refreshes(), 1);
    }
}
