//! [`TtlCache`]: a small async cache where each entry lives for the TTL it
//! was stored with and concurrent misses for one key share one fetch.
//!
//! It is the one cache behind both [`RemoteWorkflow`](super::RemoteWorkflow)'s
//! `name()`/`description()`/`db()` and the agentos-gateway's metadata cache
//! (its `upstream::cache`), so expiry and coalescing behave the same in
//! the library and in the server. It caches successes only, as agno does: a
//! failed fetch is returned to every caller that waited on it and the next
//! lookup tries again.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache;

/// Whether a lookup was served from the cache or fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Served from the cache within its TTL, or handed over by a concurrent
    /// lookup that did the fetch (coalesced).
    Hit,
    /// This lookup ran the fetch.
    Miss,
}

/// A value and where it came from.
#[derive(Debug, Clone)]
pub struct Fetched<V> {
    /// The cached or fetched value.
    pub value: V,
    /// Hit or miss.
    pub lookup: Lookup,
}

#[derive(Clone)]
struct Stamped<V> {
    value: V,
    ttl: Duration,
}

/// Each entry lives for the TTL it was stored with, and a replaced entry gets
/// its new TTL (moka's default would keep the old deadline on update).
struct PerEntryTtl;

impl<K, V> Expiry<K, Stamped<V>> for PerEntryTtl {
    fn expire_after_create(&self, _: &K, entry: &Stamped<V>, _: Instant) -> Option<Duration> {
        Some(entry.ttl)
    }

    fn expire_after_update(
        &self,
        _: &K,
        entry: &Stamped<V>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.ttl)
    }
}

/// A moka cache with a per-entry TTL and coalesced misses.
///
/// Cloning is cheap and clones share the entries.
///
/// ```
/// use std::time::Duration;
/// use agentos_client::cache::{Lookup, TtlCache};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let cache: TtlCache<&str, u32> = TtlCache::new(100);
/// let ttl = Duration::from_secs(60);
/// let first = cache.get_or_fetch("k", ttl, async { Ok::<_, ()>(7) }).await.unwrap();
/// assert_eq!((first.value, first.lookup), (7, Lookup::Miss));
/// // Within the TTL the fetch is not run again.
/// let again = cache.get_or_fetch("k", ttl, async { Ok::<_, ()>(8) }).await.unwrap();
/// assert_eq!((again.value, again.lookup), (7, Lookup::Hit));
/// # });
/// ```
pub struct TtlCache<K, V> {
    entries: Cache<K, Stamped<V>>,
}

impl<K, V> Clone for TtlCache<K, V> {
    fn clone(&self) -> Self {
        TtlCache {
            entries: self.entries.clone(),
        }
    }
}

impl<K, V> fmt::Debug for TtlCache<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TtlCache")
            .field("entries", &self.entries.entry_count())
            .finish()
    }
}

impl<K, V> TtlCache<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// A cache holding at most `max_capacity` entries (least recently used
    /// ones are evicted first).
    pub fn new(max_capacity: u64) -> Self {
        TtlCache {
            entries: Cache::builder()
                .max_capacity(max_capacity)
                .expire_after(PerEntryTtl)
                .build(),
        }
    }

    /// The value under `key`, running `fetch` (and caching its success for
    /// `ttl`) only when there is none. Lookups of one key that arrive while a
    /// fetch runs wait for it instead of starting their own. A failure is not
    /// cached; every waiter gets the same error.
    pub async fn get_or_fetch<E>(
        &self,
        key: K,
        ttl: Duration,
        fetch: impl Future<Output = Result<V, E>>,
    ) -> Result<Fetched<V>, Arc<E>>
    where
        E: Send + Sync + 'static,
    {
        let entry = self
            .entries
            .entry(key)
            .or_try_insert_with(async { fetch.await.map(|value| Stamped { value, ttl }) })
            .await?;
        // moka reports "fresh" only to the lookup whose future ran; waiters
        // that were handed its value count as hits.
        let lookup = if entry.is_fresh() {
            Lookup::Miss
        } else {
            Lookup::Hit
        };
        Ok(Fetched {
            value: entry.into_value().value,
            lookup,
        })
    }

    /// Stores `value` under `key` for `ttl`, replacing any entry and its
    /// deadline.
    pub async fn insert(&self, key: K, value: V, ttl: Duration) {
        self.entries.insert(key, Stamped { value, ttl }).await;
    }

    /// The value under `key` if it has not expired; never fetches.
    pub async fn get(&self, key: &K) -> Option<V> {
        self.entries.get(key).await.map(|entry| entry.value)
    }

    /// Drops the entry under `key`, so the next lookup fetches.
    pub async fn invalidate(&self, key: &K) {
        self.entries.invalidate(key).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A refusal must not be remembered: the metadata cache relies on it so
    /// that a host's 401 is asked again, never turned into a cached answer.
    #[tokio::test]
    async fn failures_are_not_cached() {
        let cache: TtlCache<&str, u32> = TtlCache::new(10);
        let ttl = Duration::from_secs(60);
        let refused = cache.get_or_fetch("k", ttl, async { Err::<u32, _>(401) });
        assert_eq!(*refused.await.unwrap_err(), 401);
        assert_eq!(cache.get(&"k").await, None);
        let fetched = cache
            .get_or_fetch("k", ttl, async { Ok::<_, u16>(7) })
            .await;
        let fetched = fetched.unwrap();
        assert_eq!((fetched.value, fetched.lookup), (7, Lookup::Miss));
    }
}
