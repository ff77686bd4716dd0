//! The metadata cache: each agent's, team's and workflow's document
//! (`GET /agents/{id}`, ...) and each host's `GET /config`, kept in the client
//! library's [`TtlCache`] with a per-entry TTL (the entry's `config_ttl`),
//! the same cache `RemoteWorkflow` uses.
//!
//! A document is cached under the credential that fetched it: a host may
//! show different callers different things, or refuse some, so one caller's
//! answer is never served to another. A caller who sends `Authorization`
//! has it forwarded unchanged and gets its own entries, keyed by a
//! fingerprint of the header (`Credential::Caller`); a caller who sends
//! none shares the gateway's entries, fetched with the configured token, if
//! any (`Credential::Gateway`).
//!
//! Concurrent misses for one key coalesce into one upstream fetch. Only
//! successes are cached: a refusal (401/403) or any other failure is fetched
//! again next time. Every successful fetch is also remembered as the last
//! good copy for its key, which is served, marked stale, when the host cannot
//! be reached, so a dead host does not blank its workflows out of the UI.

use std::borrow::Cow;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::HeaderValue;
use serde_json::Value;

use super::{HostGroup, Upstream, is_host_failure};
use crate::client::cache::{Lookup, TtlCache};
use crate::config::{EntryKind, Secret};
use crate::error::UpstreamError;

/// Most fresh entries held. Callers' credentials are keys, so callers decide
/// how many there are: the bound is what keeps that in check.
const FRESH_CAPACITY: u64 = 10_000;
/// Most last-good copies held, for the same reason.
const LAST_GOOD_CAPACITY: u64 = 10_000;

/// Whose credential fetched a cached document.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
enum Credential {
    /// The caller sent no `Authorization`: the gateway's configured token
    /// (or none) fetched it.
    Gateway,
    /// The caller's `Authorization` header fetched it; a keyed hash of the
    /// header, so no token is held as a key.
    Caller(u128),
}

/// What a cached document is, by whose credential. The generation changes
/// when a reload changes the entry's definition (another host, another
/// remote id), so an old document never answers for the new one.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
enum CacheKey {
    /// An agent's, team's or workflow's document, by kind, gateway id and
    /// config generation.
    Entry(EntryKind, String, u64, Credential),
    /// A host group's `/config`, by group name.
    HostConfig(String, u64, Credential),
}

/// Where a cached answer came from; sent to callers as `X-Gateway-Cache`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Served from the cache within its TTL.
    Hit,
    /// Fetched from the host for this request.
    Miss,
    /// The host could not be reached; this is the last good copy.
    Stale,
}

impl Freshness {
    pub fn as_str(self) -> &'static str {
        match self {
            Freshness::Hit => "hit",
            Freshness::Miss => "miss",
            Freshness::Stale => "stale",
        }
    }
}

/// A cached document and how fresh it is.
#[derive(Debug, Clone)]
pub struct Cached {
    pub doc: Arc<Value>,
    pub freshness: Freshness,
}

/// Counters for the cache, read by metrics and tests.
#[derive(Debug, Default)]
pub struct CacheStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub stale: AtomicU64,
}

/// 128-bit fingerprints of `Authorization` values: two SipHash instances
/// with independent random keys (per process), so a caller can neither
/// predict nor aim a collision at another caller's entries.
struct Fingerprints([RandomState; 2]);

impl Fingerprints {
    fn new() -> Self {
        Fingerprints([RandomState::new(), RandomState::new()])
    }

    fn of(&self, value: &[u8]) -> u128 {
        let [high, low] = &self.0;
        (u128::from(high.hash_one(value)) << 64) | u128::from(low.hash_one(value))
    }
}

/// The metadata cache shared by all handlers.
pub struct ConfigCache {
    fresh: TtlCache<CacheKey, Arc<Value>>,
    last_good: moka::sync::Cache<CacheKey, Arc<Value>>,
    fingerprints: Fingerprints,
    fetch_timeout: Duration,
    pub stats: CacheStats,
}

impl ConfigCache {
    /// `fetch_timeout` bounds each metadata fetch, whatever the workflow's
    /// run timeout is.
    pub fn new(fetch_timeout: Duration) -> Self {
        ConfigCache {
            fresh: TtlCache::new(FRESH_CAPACITY),
            last_good: moka::sync::Cache::new(LAST_GOOD_CAPACITY),
            fingerprints: Fingerprints::new(),
            fetch_timeout,
            stats: CacheStats::default(),
        }
    }

    /// The entry's document on its host (`GET /agents/{agent_id}`, ...)
    /// with `id` rewritten to the gateway id, as `caller` (the caller's
    /// `Authorization` header, if it sent one) may see it. `refresh` skips
    /// the cache.
    pub async fn entry(
        &self,
        upstream: &Upstream,
        refresh: bool,
        caller: Option<&HeaderValue>,
    ) -> Result<Cached, UpstreamError> {
        // `forward_caller_token = false`: the host sees the workflow's token.
        let caller = caller.filter(|_| upstream.config.forward_caller_token);
        let (credential, authorization) =
            self.credential(caller, upstream.config.auth_token.as_ref());
        let authorization = authorization.as_deref();
        let (path, timeout) = (upstream.upstream_prefix.as_str(), self.fetch_timeout);
        let fetch = async {
            let mut doc = upstream
                .group
                .idempotent(
                    |client| async move { client.get_json(path, timeout, authorization).await },
                )
                .await?;
            if let Some(object) = doc.as_object_mut() {
                object.insert("id".into(), Value::String(upstream.config.id.clone()));
            }
            Ok(Arc::new(doc))
        };
        let key = CacheKey::Entry(
            upstream.kind(),
            upstream.config.id.clone(),
            upstream.generation,
            credential,
        );
        self.get_or_fetch(key, upstream.config.config_ttl, refresh, fetch)
            .await
    }

    /// The host group's `GET /config` (from any of its replicas), as
    /// `caller` may see it; see [`ConfigCache::entry`].
    pub async fn host_config(
        &self,
        group: &HostGroup,
        refresh: bool,
        caller: Option<&HeaderValue>,
    ) -> Result<Cached, UpstreamError> {
        let (credential, authorization) = self.credential(caller, group.metadata_token.as_ref());
        let authorization = authorization.as_deref();
        let timeout = self.fetch_timeout;
        let fetch = async {
            let doc = group.idempotent(|client| async move {
                client.get_config(authorization, timeout).await
            });
            doc.await.map(Arc::new)
        };
        let key = CacheKey::HostConfig(group.name().to_owned(), group.generation, credential);
        self.get_or_fetch(key, group.config_ttl, refresh, fetch)
            .await
    }

    /// Which entries a caller shares and the `Authorization` its fetch
    /// sends: the caller's own header, verbatim, when it sent one; else the
    /// configured token. A header that is not text is keyed as the caller's
    /// but sent as nothing: it must not fall back to the configured token,
    /// and anonymous is the least a host can show.
    fn credential<'a>(
        &self,
        caller: Option<&'a HeaderValue>,
        configured: Option<&Secret>,
    ) -> (Credential, Option<Cow<'a, str>>) {
        match caller {
            Some(value) => (
                Credential::Caller(self.fingerprints.of(value.as_bytes())),
                value.to_str().ok().map(Cow::Borrowed),
            ),
            None => (
                Credential::Gateway,
                configured.map(|token| Cow::Owned(format!("Bearer {}", token.expose()))),
            ),
        }
    }

    async fn get_or_fetch(
        &self,
        key: CacheKey,
        ttl: Duration,
        refresh: bool,
        fetch: impl Future<Output = Result<Arc<Value>, UpstreamError>>,
    ) -> Result<Cached, UpstreamError> {
        if refresh {
            self.fresh.invalidate(&key).await;
        }
        match self.fresh.get_or_fetch(key.clone(), ttl, fetch).await {
            Ok(fetched) => {
                let doc = fetched.value;
                let freshness = match fetched.lookup {
                    Lookup::Miss => {
                        self.stats.misses.fetch_add(1, Ordering::Relaxed);
                        self.last_good.insert(key, doc.clone());
                        Freshness::Miss
                    }
                    Lookup::Hit => {
                        self.stats.hits.fetch_add(1, Ordering::Relaxed);
                        Freshness::Hit
                    }
                };
                Ok(Cached { doc, freshness })
            }
            Err(error) => {
                let error = UpstreamError::clone(&error);
                // A host that answers "not found" or "unauthorised" is not
                // down: its answer stands. Only unreachability falls back.
                let host_down =
                    is_host_failure(&error) || matches!(error, UpstreamError::NoReplica { .. });
                let stale = host_down.then(|| self.last_good.get(&key)).flatten();
                match stale {
                    Some(doc) => {
                        self.stats.stale.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(?key, %error, "host unavailable; serving stale metadata");
                        Ok(Cached {
                            doc,
                            freshness: Freshness::Stale,
                        })
                    }
                    None => Err(error),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_tell_credentials_apart_with_keys_per_cache() {
        let cache = ConfigCache::new(Duration::from_secs(1));
        let value = |s: &'static str| HeaderValue::from_static(s);
        let secret = value("Bearer secret");
        let (a, sent) = cache.credential(Some(&secret), None);
        assert_eq!(sent.as_deref(), Some("Bearer secret"));
        let (again, _) = cache.credential(Some(&value("Bearer secret")), None);
        assert_eq!(a, again);
        for other in ["bearer secret", "secret", "Bearer secret2", ""] {
            assert_ne!(cache.credential(Some(&value(other)), None).0, a, "{other}");
        }
        let Credential::Caller(print) = a else {
            panic!("a caller's header is a caller credential");
        };
        // Keys are random per cache (per process in practice).
        let other = ConfigCache::new(Duration::from_secs(1));
        assert_ne!(other.fingerprints.of(b"Bearer secret"), print);
    }

    #[test]
    fn a_caller_without_credentials_uses_the_configured_token() {
        let cache = ConfigCache::new(Duration::from_secs(1));
        let token = Secret::new("configured");
        let (credential, sent) = cache.credential(None, Some(&token));
        assert_eq!(credential, Credential::Gateway);
        assert_eq!(sent.as_deref(), Some("Bearer configured"));
        assert_eq!(cache.credential(None, None).1, None);
        // A caller's own header, even a wrong one, is never swapped for it.
        let own = HeaderValue::from_static("x");
        let (credential, sent) = cache.credential(Some(&own), Some(&token));
        assert_ne!(credential, Credential::Gateway);
        assert_eq!(sent.as_deref(), Some("x"));
        // Nor is one that is not text.
        let opaque = HeaderValue::from_bytes(b"Bearer \xff").unwrap();
        let (credential, sent) = cache.credential(Some(&opaque), Some(&token));
        assert_ne!(credential, Credential::Gateway);
        assert_eq!(sent, None);
    }
}
