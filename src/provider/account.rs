//! One vendor account's API budget: its access token, its rate limit, its bound on calls in
//! flight and its pause after a "too many calls" answer. Every provider's client keeps one
//! [`Account`] per account (WeCom corp app, DingTalk app, Tencent IM app) and asks it before each
//! call, so the budget rules are written once.
//!
//! Alone, an account keeps all of this in memory. Joined to a [`Shared`] (what `serve` does), the
//! instances on one store spend one budget:
//! - **one token**: the token lives in the store with the time to refresh it; an instance that
//!   needs a new one takes the lease `token:<account>`, fetches and stores it, and the others wait
//!   for it instead of fetching their own (single flight across instances);
//! - **one rate**: each live worker allows itself `per_minute / live workers`, so together they
//!   stay within the configured budget whatever their number;
//! - **one pause**: a pause after a rate-limit answer is written to the store, and every instance
//!   reads the store's pauses at most a second old before calling.

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Semaphore, SemaphorePermit};

use super::ApiError;
use crate::core::clock::now_ms;
use crate::store::coordination::Coordination;

/// How often an instance re-reads the pauses the others stored.
const PAUSE_REFRESH: Duration = Duration::from_secs(1);
/// How often an instance waiting for another's token looks for it.
const TOKEN_POLL: Duration = Duration::from_millis(100);

/// Client-side limits of one account.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Calls per minute for the whole account (all instances together).
    pub per_minute: u32,
    /// Calls in flight per instance.
    pub concurrency: u32,
    /// How long a token fetch may take before another instance fetches in its place.
    pub token_fetch_timeout: Duration,
}

/// Allows a sixth of the per-minute budget as a burst, so a quiet account can absorb a spike.
fn quota(per_minute: u32) -> Quota {
    let per_minute = NonZeroU32::new(per_minute.max(1)).expect("positive");
    Quota::per_minute(per_minute).allow_burst(burst(per_minute.get()))
}

fn burst(per_minute: u32) -> NonZeroU32 {
    NonZeroU32::new((per_minute / 6).max(1)).expect("positive")
}

struct CachedToken {
    value: String,
    /// Epoch milliseconds after which the token is refreshed.
    refresh_at_ms: i64,
}

/// What the instances on one store share; built by the cluster membership.
pub struct Shared {
    store: Arc<dyn Coordination>,
    holder: String,
    live_workers: watch::Receiver<usize>,
    accounts: Mutex<Vec<Weak<Account>>>,
    pauses: tokio::sync::Mutex<(Option<Instant>, HashMap<String, i64>)>,
}

impl Shared {
    pub fn new(store: Arc<dyn Coordination>, holder: String, live_workers: watch::Receiver<usize>) -> Arc<Self> {
        Arc::new(Self {
            store,
            holder,
            live_workers,
            accounts: Mutex::new(Vec::new()),
            pauses: tokio::sync::Mutex::new((None, HashMap::new())),
        })
    }

    /// API calls per account in the last minute, for the heartbeat (and `groupwatch status`).
    pub fn usage(&self) -> BTreeMap<String, u64> {
        let accounts = self.accounts.lock().expect("accounts lock");
        accounts.iter().filter_map(Weak::upgrade).map(|a| (a.key.clone(), a.calls_last_minute())).collect()
    }

    fn live_workers(&self) -> usize {
        (*self.live_workers.borrow()).max(1)
    }

    /// Until when (epoch ms) another instance paused `key`, from a view at most a second old.
    async fn paused_until(&self, key: &str) -> Option<i64> {
        let mut cache = self.pauses.lock().await;
        if cache.0.is_none_or(|at| at.elapsed() >= PAUSE_REFRESH) {
            match self.store.api_pauses(now_ms()).await {
                Ok(rows) => *cache = (Some(Instant::now()), rows.into_iter().collect()),
                // Keep the last view; a store hiccup must not stop the calls.
                Err(e) => tracing::debug!(error = %e, "cannot read the shared API pauses"),
            }
        }
        cache.1.get(key).copied()
    }
}

/// One vendor account's budget. Cheap to share (`Arc`).
pub struct Account {
    key: String,
    budget: Budget,
    /// The limiter for the live worker count it was built for.
    rate: Mutex<(usize, Arc<DefaultDirectRateLimiter>)>,
    in_flight: Semaphore,
    paused_until: Mutex<Option<Instant>>,
    token: tokio::sync::Mutex<Option<CachedToken>>,
    shared: OnceLock<Arc<Shared>>,
    recent: Mutex<VecDeque<Instant>>,
}

impl Account {
    /// `key` names the account in the store and in `groupwatch status` (e.g. `wecom:<corp>`); it
    /// must not contain a secret.
    pub fn new(key: String, budget: Budget) -> Arc<Self> {
        Arc::new(Self {
            key,
            budget,
            rate: Mutex::new((1, Arc::new(RateLimiter::direct(quota(budget.per_minute))))),
            in_flight: Semaphore::new(budget.concurrency.max(1) as usize),
            paused_until: Mutex::new(None),
            token: tokio::sync::Mutex::new(None),
            shared: OnceLock::new(),
            recent: Mutex::new(VecDeque::new()),
        })
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// Spends the budget together with the other instances of `shared` from now on.
    pub fn join(self: &Arc<Self>, shared: &Arc<Shared>) {
        if self.shared.set(shared.clone()).is_ok() {
            shared.accounts.lock().expect("accounts lock").push(Arc::downgrade(self));
        }
    }

    /// Admission for one logical call (its retries included): fails fast while the account is
    /// paused, so that callers reschedule instead of queueing behind the pause; then waits for a
    /// slot among the calls in flight.
    pub async fn admit(&self) -> Result<SemaphorePermit<'_>, ApiError> {
        self.check_pause().await?;
        Ok(self.in_flight.acquire().await.expect("semaphore is never closed"))
    }

    async fn check_pause(&self) -> Result<(), ApiError> {
        let local = *self.paused_until.lock().expect("pause lock");
        if let Some(until) = local.filter(|u| *u > Instant::now()) {
            return Err(ApiError::RateLimited { errcode: 0, wait: until - Instant::now() });
        }
        if let Some(shared) = self.shared.get() {
            if let Some(until_ms) = shared.paused_until(&self.key).await {
                let left = until_ms - now_ms();
                if left > 0 {
                    return Err(ApiError::RateLimited { errcode: 0, wait: Duration::from_millis(left as u64) });
                }
            }
        }
        Ok(())
    }

    /// Waits for the rate limit, then counts the call. Call once per request sent.
    pub async fn pace(&self) {
        let limiter = self.limiter();
        limiter.until_ready().await;
        let now = Instant::now();
        let mut recent = self.recent.lock().expect("recent lock");
        recent.push_back(now);
        while recent.front().is_some_and(|t| now.duration_since(*t) > Duration::from_secs(60)) {
            recent.pop_front();
        }
    }

    /// This instance's share of the rate: rebuilt when the number of live workers changes.
    fn limiter(&self) -> Arc<DefaultDirectRateLimiter> {
        let workers = self.shared.get().map_or(1, |s| s.live_workers());
        self.limiter_for(workers)
    }

    /// A rebuilt limiter starts empty. A new one would allow its whole burst at once, and a live
    /// count that flaps (a heartbeat late under load: 3, 2, 3 workers) would then allow a burst per
    /// change on every instance, beyond the budget they share.
    fn limiter_for(&self, workers: usize) -> Arc<DefaultDirectRateLimiter> {
        let mut rate = self.rate.lock().expect("rate lock");
        if rate.0 != workers {
            let share = (self.budget.per_minute / workers as u32).max(1);
            tracing::info!(account = %self.key, workers, per_minute = share, "API rate share changed");
            let limiter = RateLimiter::direct(quota(share));
            let _ = limiter.check_n(burst(share));
            *rate = (workers, Arc::new(limiter));
        }
        rate.1.clone()
    }

    /// Calls made by this instance in the last minute.
    pub fn calls_last_minute(&self) -> u64 {
        let now = Instant::now();
        let recent = self.recent.lock().expect("recent lock");
        recent.iter().filter(|t| now.duration_since(**t) <= Duration::from_secs(60)).count() as u64
    }

    /// Pauses the account's calls for `wait` (the vendor said "too many calls"), on every
    /// instance when shared.
    pub async fn pause(&self, wait: Duration) {
        *self.paused_until.lock().expect("pause lock") = Some(Instant::now() + wait);
        metrics::counter!("groupwatch_api_pauses_total", "account" => self.key.clone()).increment(1);
        if self.key.starts_with("wecom:") {
            // The name of earlier releases, which dashboards may still watch.
            metrics::counter!("groupwatch_wecom_api_pauses_total").increment(1);
        }
        tracing::warn!(account = %self.key, pause = ?wait, "vendor rate limit hit; pausing this account's calls");
        if let Some(shared) = self.shared.get() {
            let until = now_ms() + wait.as_millis() as i64;
            if let Err(e) = shared.store.pause_api(&self.key, until).await {
                tracing::warn!(account = %self.key, error = %e, "cannot share the pause; other instances keep calling");
            }
        }
    }

    /// A valid token: the cached one, unless it is due or is `stale` (the vendor refused it).
    /// Otherwise `fetch` gets a new one with its lifetime (already shortened by the caller's
    /// safety margin). Shared, the new token is fetched by one instance and read by the others.
    pub async fn token<F, Fut>(&self, stale: Option<&str>, fetch: F) -> Result<String, ApiError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(String, Duration), ApiError>>,
    {
        let mut slot = self.token.lock().await;
        let usable = |t: &CachedToken| now_ms() < t.refresh_at_ms && stale != Some(t.value.as_str());
        if let Some(t) = slot.as_ref().filter(|t| usable(t)) {
            return Ok(t.value.clone());
        }
        let Some(shared) = self.shared.get() else {
            let (value, lifetime) = fetch().await?;
            *slot = Some(CachedToken { value: value.clone(), refresh_at_ms: now_ms() + lifetime.as_millis() as i64 });
            return Ok(value);
        };
        let lease = format!("token:{}", self.key);
        let lease_for = self.budget.token_fetch_timeout + Duration::from_secs(1);
        let give_up = Instant::now() + lease_for * 2;
        loop {
            match shared.store.api_token(&self.key).await {
                Ok(Some((value, refresh_at_ms))) => {
                    let stored = CachedToken { value, refresh_at_ms };
                    if usable(&stored) {
                        let value = stored.value.clone();
                        *slot = Some(stored);
                        return Ok(value);
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::debug!(account = %self.key, error = %e, "cannot read the shared token"),
            }
            let now = now_ms();
            let leased = shared
                .store
                .try_lease(&lease, &shared.holder, now + lease_for.as_millis() as i64, now)
                .await
                .unwrap_or(false);
            // Past `give_up` the holder of the lease is presumed stuck (or the store is away):
            // fetching one more token costs a call, waiting longer costs the chats.
            if leased || Instant::now() > give_up {
                let fetched = fetch().await;
                let result = match fetched {
                    Ok((value, lifetime)) => {
                        let refresh_at_ms = now_ms() + lifetime.as_millis() as i64;
                        if let Err(e) = shared.store.put_api_token(&self.key, &value, refresh_at_ms).await {
                            tracing::warn!(account = %self.key, error = %e, "cannot share the new token");
                        }
                        *slot = Some(CachedToken { value: value.clone(), refresh_at_ms });
                        Ok(value)
                    }
                    Err(e) => Err(e),
                };
                if leased {
                    let _ = shared.store.release_lease(&lease, &shared.holder).await;
                }
                return result;
            }
            tokio::time::sleep(TOKEN_POLL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget() -> Budget {
        Budget { per_minute: 600, concurrency: 2, token_fetch_timeout: Duration::from_secs(1) }
    }

    #[tokio::test]
    async fn a_token_is_fetched_once_and_again_only_when_refused() {
        let account = Account::new("wecom:corp".into(), budget());
        let fetches = std::sync::atomic::AtomicU32::new(0);
        let fetch = || async {
            let n = fetches.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok((format!("t{n}"), Duration::from_secs(60)))
        };
        assert_eq!(account.token(None, fetch).await.unwrap(), "t0");
        assert_eq!(account.token(None, fetch).await.unwrap(), "t0");
        assert_eq!(account.token(Some("t0"), fetch).await.unwrap(), "t1");
        assert_eq!(fetches.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[test]
    fn a_live_count_that_flaps_allows_no_burst_beyond_the_first() {
        let account = Account::new("wecom:corp".into(), budget());
        let at_once = |workers| {
            let limiter = account.limiter_for(workers);
            (0..1_000).take_while(|_| limiter.check().is_ok()).count()
        };
        assert_eq!(at_once(1), 100, "alone, a sixth of 600 a minute at once");
        // The loop takes well under the 100 ms in which even the whole rate earns one call.
        let after_changes: usize = [3, 2, 3, 2, 3].into_iter().map(at_once).sum();
        assert!(after_changes <= 1, "rebuilt limiters allowed {after_changes} calls at once");
    }

    #[tokio::test]
    async fn a_paused_account_fails_fast_with_the_time_left() {
        let account = Account::new("wecom:corp".into(), budget());
        account.pause(Duration::from_secs(30)).await;
        let admitted = account.admit().await.map(|_| ());
        match admitted {
            Err(ApiError::RateLimited { wait, .. }) => assert!(wait > Duration::from_secs(29)),
            other => panic!("expected a pause, got {other:?}"),
        }
    }
}
