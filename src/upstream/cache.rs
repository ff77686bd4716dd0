//! The metadata cache: each workflow's `GET /workflows/{id}` document and each
//! host's `GET /config`, kept in the client library's
//! [`TtlCache`] with a per-entry TTL (the
//! workflow's `config_ttl`), the same cache `RemoteWorkflow` uses.
//!
//! Concurrent misses for one key coalesce into one upstream fetch. On top of
//! the library cache, every successful fetch is also remembered as the last
//! good copy, which is served, marked stale, when the host cannot be reached,
//! so a dead host does not blank its workflows out of the UI.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::Value;

use super::{HostGroup, Upstream, is_host_failure};
use crate::client::ClientError;
use crate::client::cache::{Lookup, TtlCache};

#[derive(Debug, Clone, Hash, PartialEq, Eq)]
enum CacheKey {
    /// A workflow's document, by gateway id.
    Workflow(String),
    /// A host group's `/config`, by group name.
    HostConfig(String),
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
    fresh: TtlCache<CacheKey, Arc<Value>>,
    last_good: Mutex<HashMap<CacheKey, Arc<Value>>>,
    fetch_timeout: Duration,
    pub stats: CacheStats,
}

impl ConfigCache {
    /// `fetch_timeout` bounds each metadata fetch, whatever the workflow's
    /// run timeout is.
    pub fn new(fetch_timeout: Duration) -> Self {
        ConfigCache {
            fresh: TtlCache::new(100_000),
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
            .or(caller_bearer)
            .map(|token| format!("Bearer {token}"));
        let bearer = bearer.as_deref();
        let (workflow_id, timeout) = (&upstream.config.workflow_id, self.fetch_timeout);
        let fetch = async {
            let mut doc = upstream
                .group
                .idempotent(|client| async move {
                    client.get_workflow(workflow_id, bearer, timeout).await
                })
                .await?;
            if let Some(object) = doc.as_object_mut() {
                object.insert("id".into(), Value::String(upstream.config.id.clone()));
            }
            Ok(Arc::new(doc))
        };
        let key = CacheKey::Workflow(upstream.config.id.clone());
        self.get_or_fetch(key, upstream.config.config_ttl, refresh, fetch)
            .await
    }

    /// The host group's `GET /config` (from any of its replicas).
    pub async fn host_config(
        &self,
        group: &HostGroup,
        refresh: bool,
    ) -> Result<Cached, ClientError> {
        let bearer = (group.metadata_token.as_ref()).map(|t| format!("Bearer {}", t.expose()));
        let bearer = bearer.as_deref();
        let timeout = self.fetch_timeout;
        let fetch = async {
            let doc =
                group.idempotent(|client| async move { client.get_config(bearer, timeout).await });
            doc.await.map(Arc::new)
        };
        let key = CacheKey::HostConfig(group.name().to_owned());
        self.get_or_fetch(key, group.config_ttl, refresh, fetch)
            .await
    }

    async fn get_or_fetch(
        &self,
        key: CacheKey,
        ttl: Duration,
        refresh: bool,
        fetch: impl Future<Output = Result<Arc<Value>, ClientError>>,
    ) -> Result<Cached, ClientError> {
        if refresh {
            self.fresh.invalidate(&key).await;
        }
        match self.fresh.get_or_fetch(key.clone(), ttl, fetch).await {
            Ok(fetched) => {
                let doc = fetched.value;
                let freshness = match fetched.lookup {
                    Lookup::Miss => {
                        self.stats.misses.fetch_add(1, Ordering::Relaxed);
                        self.remember(key, doc.clone());
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
                let error = ClientError::clone(&error);
                // A host that answers "not found" or "unauthorised" is not
                // down: its answer stands. Only unreachability falls back.
                let host_down =
                    is_host_failure(&error) || matches!(error, ClientError::Unavailable { .. });
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
