//! The metadata cache: each workflow's `GET /workflows/{id}` document and each
//! host's `GET /config`, kept in one moka cache with a per-entry TTL (the
//! workflow's `config_ttl`, as RemoteWorkflow caches them).
//!
//! Concurrent misses for one key coalesce into one upstream fetch (moka's
//! `or_try_insert_with`). Every successful fetch is also remembered as the
//! last good copy, which is served, marked stale, when the host cannot be
//! reached, so a dead host does not blank its workflows out of the UI.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache;
use serde_json::Value;

use super::{Host, Upstream};
use crate::client::ClientError;

#[derive(Debug, Clone, Hash, PartialEq, Eq)]
enum CacheKey {
    /// A workflow's document, by gateway id.
    Workflow(String),
    /// A host's `/config`, by base URL.
    HostConfig(String),
}

#[derive(Clone)]
struct Entry {
    doc: Arc<Value>,
    ttl: Duration,
}

/// Each entry lives for the TTL it was stored with.
struct PerEntryTtl;

impl Expiry<CacheKey, Entry> for PerEntryTtl {
    fn expire_after_create(&self, _: &CacheKey, entry: &Entry, _: Instant) -> Option<Duration> {
        Some(entry.ttl)
    }
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

/// The metadata cache shared by all handlers.
pub struct ConfigCache {
    fresh: Cache<CacheKey, Entry>,
    last_good: Mutex<HashMap<CacheKey, Arc<Value>>>,
    fetch_timeout: Duration,
    pub stats: CacheStats,
}

impl ConfigCache {
    /// `fetch_timeout` bounds each metadata fetch, whatever the workflow's
    /// run timeout is.
    pub fn new(fetch_timeout: Duration) -> Self {
        ConfigCache {
            fresh: Cache::builder()
                .max_capacity(100_000)
                .expire_after(PerEntryTtl)
                .build(),
            last_good: Mutex::new(HashMap::new()),
            fetch_timeout,
            stats: CacheStats::default(),
        }
    }

    /// The workflow's `GET /workflows/{workflow_id}` document with `id`
    /// rewritten to the gateway id. `refresh` skips the cache.
    /// `caller_bearer` is used only when no `auth_token` is configured.
    pub async fn workflow(
        &self,
        upstream: &Upstream,
        refresh: bool,
        caller_bearer: Option<&str>,
    ) -> Result<Cached, ClientError> {
        let bearer = upstream
            .config
            .auth_token
            .as_ref()
            .map(|t| t.expose())
            .or(caller_bearer);
        let fetch = async {
            let mut doc = upstream
                .host
                .client
                .get_json(&upstream.upstream_prefix, self.fetch_timeout, bearer)
                .await?;
            if let Some(object) = doc.as_object_mut() {
                object.insert("id".into(), Value::String(upstream.config.id.clone()));
            }
            Ok(doc)
        };
        let key = CacheKey::Workflow(upstream.config.id.clone());
        self.get_or_fetch(key, upstream.config.config_ttl, refresh, fetch)
            .await
    }

    /// The host's `GET /config`.
    pub async fn host_config(&self, host: &Host, refresh: bool) -> Result<Cached, ClientError> {
        let bearer = host.metadata_token.as_ref().map(|t| t.expose());
        let fetch = host.client.get_json("/config", self.fetch_timeout, bearer);
        let key = CacheKey::HostConfig(host.client.base_url().to_owned());
        self.get_or_fetch(key, host.config_ttl, refresh, fetch)
            .await
    }

    async fn get_or_fetch(
        &self,
        key: CacheKey,
        ttl: Duration,
        refresh: bool,
        fetch: impl Future<Output = Result<Value, ClientError>>,
    ) -> Result<Cached, ClientError> {
        if refresh {
            self.fresh.invalidate(&key).await;
        }
        let result = self
            .fresh
            .entry(key.clone())
            .or_try_insert_with(async {
                fetch.await.map(|doc| Entry {
                    doc: Arc::new(doc),
                    ttl,
                })
            })
            .await;
        match result {
            Ok(entry) => {
                let freshness = if entry.is_fresh() {
                    self.stats.misses.fetch_add(1, Ordering::Relaxed);
                    Freshness::Miss
                } else {
                    self.stats.hits.fetch_add(1, Ordering::Relaxed);
                    Freshness::Hit
                };
                let doc = entry.into_value().doc;
                if freshness == Freshness::Miss {
                    self.remember(key, doc.clone());
                }
                Ok(Cached { doc, freshness })
            }
            Err(error) => {
                let error = ClientError::clone(&error);
                // A host that answers "not found" or "unauthorised" is not
                // down: its answer stands. Only unreachability falls back.
                let host_down = match &error {
                    ClientError::Status { status, .. } => status.is_server_error(),
                    _ => true,
                };
                let stale = host_down.then(|| self.last_good(&key)).flatten();
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

    fn remember(&self, key: CacheKey, doc: Arc<Value>) {
        self.last_good
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, doc);
    }

    fn last_good(&self, key: &CacheKey) -> Option<Arc<Value>> {
        self.last_good
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned()
    }
}
