//! `AppState`: everything the request handlers share, built once at start-up
//! and passed to every handler behind one `Arc`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::client::ClientError;
use crate::config::{Config, ServerConfig};
use crate::error::GatewayError;
use crate::observability::metrics::Metrics;
use crate::upstream::cache::ConfigCache;
use crate::upstream::{HostGroup, Upstreams};

/// Shared, read-mostly state of a running gateway.
pub struct AppState {
    pub server: ServerConfig,
    pub upstreams: Upstreams,
    pub cache: ConfigCache,
    pub metrics: Metrics,
    /// Edge authentication, authorization and rate limits.
    pub auth: Arc<crate::auth::Gate>,
    /// Cancelled when the drain deadline passes: open streams end with an
    /// error event and their runs are cancelled on the host.
    pub end_streams: CancellationToken,
    /// Cancelled by a second shutdown signal: the drain ends at once.
    pub hurry: CancellationToken,
    /// Calls the gateway makes on its own (cancels of cut-off runs); waited
    /// for before the process exits.
    pub background: TaskTracker,
    /// When the gateway started, reported by `/health` as AgentOS does.
    pub instantiated_at: String,
    draining: AtomicBool,
}

/// The handle handlers receive.
pub type SharedState = Arc<AppState>;

impl AppState {
    /// Builds the state (one pooled client per host) from a validated config.
    pub fn new(config: &Config) -> Result<SharedState, String> {
        Ok(Arc::new(AppState {
            server: config.server.clone(),
            upstreams: Upstreams::new(config)?,
            cache: ConfigCache::new(config.server.config_fetch_timeout),
            metrics: Metrics::new(),
            auth: Arc::new(crate::auth::Gate::new(config)),
            end_streams: CancellationToken::new(),
            hurry: CancellationToken::new(),
            background: TaskTracker::new(),
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

    /// Counts a failed metadata or cancel call to `group`.
    pub fn note_upstream_error(&self, group: &HostGroup, error: &ClientError) {
        let kind = GatewayError::from(error.clone()).kind();
        self.metrics.upstream_error(group.name(), kind);
    }

    /// Whether no request is in flight on any host (streams included).
    pub fn nothing_in_flight(&self) -> bool {
        self.upstreams.groups().iter().all(|group| {
            group
                .replicas
                .all()
                .iter()
                .all(|replica| replica.in_flight() == 0)
        })
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}
