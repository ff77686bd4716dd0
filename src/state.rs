//! `AppState`: everything the request handlers share, built once at start-up
//! and passed to axum behind one `Arc`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::config::{Config, ServerConfig};
use crate::upstream::Upstreams;
use crate::upstream::cache::ConfigCache;

/// Shared, read-mostly state of a running gateway.
pub struct AppState {
    pub server: ServerConfig,
    pub upstreams: Upstreams,
    pub cache: ConfigCache,
    /// When the gateway started, reported by `/health` as AgentOS does.
    pub instantiated_at: String,
    draining: AtomicBool,
}

/// The handle handlers receive.
pub type SharedState = Arc<AppState>;

impl AppState {
    /// Builds the state (one pooled client per host) from a validated config.
    pub fn new(config: &Config) -> Result<SharedState, reqwest::Error> {
        Ok(Arc::new(AppState {
            server: config.server.clone(),
            upstreams: Upstreams::new(config)?,
            cache: ConfigCache::new(config.server.config_fetch_timeout),
            instantiated_at: chrono::Utc::now()
                .format("%Y-%m-%dT%H:%M:%S%.6fZ")
                .to_string(),
            draining: AtomicBool::new(false),
        }))
    }

    /// Marks the gateway as shutting down: `/ready` answers 503 from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}
