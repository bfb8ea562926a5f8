//! The replay cache: which signed callbacks were already accepted.
//!
//! A captured POST stays valid for the whole timestamp window, and each copy would be another
//! durable broker write. The cache remembers `(tenant, msg_signature)` for as long as a request
//! with that signature can pass the timestamp check, so a repeat is answered `success` without a
//! hand-off (which is also what WeCom's own retries of an accepted callback need).
//!
//! Bounded in entries, and so in memory (an entry is a tenant number, a 20-byte digest and an
//! instant, whatever the request); expiry is amortised O(1): entries leave a FIFO queue in the
//! order they came, and when the cache is full the oldest entry goes first.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

type Key = (u32, [u8; 20]);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// Verified, being handed off: a repeat must not be acknowledged yet (the hand-off may fail).
    InFlight,
    Done,
}

struct Entry {
    slot: Slot,
    /// Tells a queue position apart from a later re-insertion of the same key.
    since: Instant,
}

struct Inner {
    entries: HashMap<Key, Entry>,
    /// Insertion order; may hold keys already released (their entries are gone or newer).
    order: VecDeque<(Instant, Key)>,
}

pub struct ReplayCache {
    inner: Mutex<Inner>,
    keep: Duration,
    capacity: usize,
}

/// What the cache says about a verified callback.
pub enum Seen {
    /// First time: go on, and [`Reservation::commit`] once it is handed off.
    New(Reservation),
    /// Accepted before: answer `success` and do nothing.
    Accepted,
    /// The same callback is being handed off right now.
    InFlight,
}

/// A claim on a key while its callback is handed off. Dropped without a commit (the hand-off
/// failed, or the request was refused after all), it frees the key so that a retry can pass.
pub struct Reservation {
    cache: Arc<ReplayCache>,
    key: Key,
    since: Instant,
    committed: bool,
}

impl Reservation {
    pub fn commit(mut self) {
        self.committed = true;
        if let Some(entry) = self.cache.lock().entries.get_mut(&self.key) {
            if entry.since == self.since {
                entry.slot = Slot::Done;
            }
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        let mut inner = self.cache.lock();
        if inner.entries.get(&self.key).is_some_and(|e| e.since == self.since && e.slot == Slot::InFlight) {
            inner.entries.remove(&self.key);
        }
    }
}

impl ReplayCache {
    /// `window` is the timestamp window: a request is accepted while its timestamp is within
    /// `window` of now, either side, so one accepted now may pass again for up to twice that.
    pub fn new(window: Duration, capacity: usize) -> Arc<Self> {
        let capacity = capacity.max(1);
        Arc::new(Self {
            inner: Mutex::new(Inner {
                entries: HashMap::with_capacity(capacity.min(1 << 16)),
                order: VecDeque::with_capacity(capacity.min(1 << 16)),
            }),
            keep: window * 2,
            capacity,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every update leaves the maps consistent; a panic elsewhere must not stop intake.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Looks `(tenant, signature)` up and, if new, reserves it.
    pub fn check(self: &Arc<Self>, tenant: u32, signature: [u8; 20]) -> Seen {
        self.check_at(tenant, signature, Instant::now())
    }

    fn check_at(self: &Arc<Self>, tenant: u32, signature: [u8; 20], now: Instant) -> Seen {
        let key = (tenant, signature);
        let mut inner = self.lock();
        let Inner { entries, order } = &mut *inner;
        while let Some(&(since, old)) = order.front() {
            let expired = now.saturating_duration_since(since) >= self.keep;
            if !expired && order.len() < self.capacity {
                break;
            }
            if !expired {
                metrics::counter!("groupwatch_replay_cache_evictions_total").increment(1);
            }
            order.pop_front();
            if entries.get(&old).is_some_and(|e| e.since == since) {
                entries.remove(&old);
            }
        }
        match entries.get(&key).map(|e| e.slot) {
            Some(Slot::Done) => Seen::Accepted,
            Some(Slot::InFlight) => Seen::InFlight,
            None => {
                entries.insert(key, Entry { slot: Slot::InFlight, since: now });
                order.push_back((now, key));
                Seen::New(Reservation { cache: self.clone(), key, since: now, committed: false })
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.entries.len(), inner.order.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(n: u8) -> [u8; 20] {
        [n; 20]
    }

    #[test]
    fn a_committed_callback_is_a_replay_until_it_expires() {
        let cache = ReplayCache::new(Duration::from_secs(10), 100);
        let t0 = Instant::now();
        let Seen::New(r) = cache.check_at(1, sig(1), t0) else { panic!("first sight") };
        assert!(matches!(cache.check_at(1, sig(1), t0), Seen::InFlight));
        r.commit();
        assert!(matches!(cache.check_at(1, sig(1), t0 + Duration::from_secs(19)), Seen::Accepted));
        // Another tenant with the same signature is another callback.
        assert!(matches!(cache.check_at(2, sig(1), t0), Seen::New(_)));
        // Twice the window later, the timestamp check refuses it anyway: the entry is gone.
        assert!(matches!(cache.check_at(1, sig(1), t0 + Duration::from_secs(20)), Seen::New(_)));
    }

    #[test]
    fn a_failed_hand_off_frees_the_key_for_a_retry() {
        let cache = ReplayCache::new(Duration::from_secs(10), 100);
        let t0 = Instant::now();
        let Seen::New(r) = cache.check_at(1, sig(1), t0) else { panic!() };
        drop(r);
        let Seen::New(r) = cache.check_at(1, sig(1), t0) else { panic!("released") };
        r.commit();
        assert!(matches!(cache.check_at(1, sig(1), t0), Seen::Accepted));
    }

    #[test]
    fn entries_are_bounded_and_the_oldest_go_first() {
        let cache = ReplayCache::new(Duration::from_secs(3600), 50);
        let t0 = Instant::now();
        for n in 0..200u8 {
            if let Seen::New(r) = cache.check_at(1, sig(n), t0) {
                r.commit();
            }
            let (entries, order) = cache.len();
            assert!(entries <= 50 && order <= 50, "{entries} entries, {order} queued");
        }
        assert!(matches!(cache.check_at(1, sig(199), t0), Seen::Accepted), "the newest is kept");
        assert!(matches!(cache.check_at(1, sig(0), t0), Seen::New(_)), "the oldest was evicted");
    }

    #[test]
    fn released_keys_do_not_grow_the_queue_past_the_bound() {
        let cache = ReplayCache::new(Duration::from_secs(3600), 10);
        let t0 = Instant::now();
        for _ in 0..1000 {
            drop(cache.check_at(1, sig(7), t0));
        }
        assert!(cache.len().1 <= 10);
    }
}
