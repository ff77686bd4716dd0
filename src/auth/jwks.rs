//! `jwks_url` (beyond AgentOS, which reads a JWKS file only): an IdP's key
//! set, fetched at start, refreshed every `jwks_refresh`, and refetched when
//! a token names a `kid` the set lacks, at most once per
//! `jwks_min_refetch`. A failed fetch keeps the last good set, so an IdP
//! outage never locks callers out of keys already known.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use url::Url;

use super::jwt::KeySet;

/// How long one fetch of the key set may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest key set accepted.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// Where the remote keys come from and how often they are fetched.
#[derive(Debug, Clone, PartialEq)]
pub struct JwksSource {
    pub url: Url,
    pub refresh: Duration,
    pub min_refetch: Duration,
}

/// The keys in force: the configured ones plus the IdP's latest good set.
pub struct Keys {
    base: Arc<KeySet>,
    current: ArcSwap<KeySet>,
    remote: Option<Remote>,
}

struct Remote {
    source: JwksSource,
    /// When a fetch last started; held while one runs (single flight).
    last_attempt: tokio::sync::Mutex<Option<Instant>>,
}

impl Keys {
    /// Starts the periodic refresh when there is a `jwks_url` and a runtime.
    pub fn new(base: Arc<KeySet>, source: Option<JwksSource>) -> Arc<Keys> {
        let keys = Arc::new(Keys {
            current: ArcSwap::new(base.clone()),
            base,
            remote: source.map(|source| Remote {
                source,
                last_attempt: tokio::sync::Mutex::new(None),
            }),
        });
        if let Some(remote) = &keys.remote
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let weak = Arc::downgrade(&keys);
            runtime.spawn(refresh_forever(weak, remote.source.refresh));
        }
        keys
    }

    /// The keys to verify with now.
    pub fn snapshot(&self) -> Arc<KeySet> {
        self.current.load_full()
    }

    /// Before verifying a token naming `kid`: when the set lacks it, fetch
    /// the IdP's set again, unless that was tried within `min_refetch`.
    pub async fn ensure_kid(&self, kid: Option<&str>) {
        let Some(remote) = &self.remote else {
            return;
        };
        let known = kid.is_none_or(|kid| self.current.load().knows_kid(kid));
        if known && self.current.load().has_jwks() {
            return;
        }
        self.fetch(remote, Some(remote.source.min_refetch)).await;
    }

    /// Fetches the set; with `unless_within`, skips when a fetch started
    /// that recently.
    async fn fetch(&self, remote: &Remote, unless_within: Option<Duration>) {
        let mut last = remote.last_attempt.lock().await;
        if let (Some(within), Some(at)) = (unless_within, *last)
            && at.elapsed() < within
        {
            return;
        }
        *last = Some(Instant::now());
        match fetch_set(&remote.source.url).await {
            Ok(text) => {
                let mut keys = (*self.base).clone();
                match keys.add_jwks(&text) {
                    Ok(n) => {
                        tracing::debug!(url = %remote.source.url, keys = n, "JWKS fetched");
                        self.current.store(Arc::new(keys));
                    }
                    Err(e) => {
                        tracing::warn!(url = %remote.source.url, error = %e, "JWKS unusable; keeping the last good set");
                    }
                }
            }
            Err(e) => {
                tracing::warn!(url = %remote.source.url, error = %e, "JWKS fetch failed; keeping the last good set");
            }
        }
    }
}

async fn refresh_forever(keys: Weak<Keys>, every: Duration) {
    loop {
        let Some(k) = keys.upgrade() else { return };
        if let Some(remote) = &k.remote {
            k.fetch(remote, None).await;
        }
        drop(k);
        tokio::time::sleep(every).await;
    }
}

async fn fetch_set(url: &Url) -> Result<String, String> {
    // A client per fetch: fetches are rare, and a pooled client would tie
    // its connections to whichever serving thread's runtime made them.
    let client = reqwest::Client::builder()
        .timeout(FETCH_TIMEOUT)
        .build()
        .map_err(|e| e.to_string())?;
    let response = client
        .get(url.clone())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("status {}", response.status()));
    }
    let bytes = response.bytes().await.map_err(|e| e.to_string())?;
    if bytes.len() > MAX_JWKS_BYTES {
        return Err("key set too large".into());
    }
    String::from_utf8(bytes.to_vec()).map_err(|e| e.to_string())
}
