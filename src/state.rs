//! `AppState`: everything the request handlers share, built once at start-up
//! and passed to every handler behind one `Arc`. The routing snapshot
//! ([`Upstreams`]) inside it is swapped whole by a config reload.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, Guard};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, ServerConfig};
use crate::error::{GatewayError, UpstreamError};
use crate::observability::metrics::Metrics;
use crate::observability::otlp::Tracing;
use crate::reload::ReloadStatus;
use crate::upstream::cache::ConfigCache;
use crate::upstream::owners::RunOwners;
use crate::upstream::{HostGroup, Upstreams, health};

/// Shared, read-mostly state of a running gateway.
pub struct AppState {
    /// Read at start; a reload that changes it is applied at the next
    /// restart (see [`crate::reload`]).
    pub server: ServerConfig,
    /// The agents, teams, workflows and host groups in service; see
    /// [`AppState::upstreams`].
    upstreams: ArcSwap<Upstreams>,
    /// Which replica owns which run. Outlives reloads, so a run started
    /// before one still reaches its replica.
    pub owners: RunOwners,
    /// The last reload's outcome, for the admin listener.
    pub reloads: ReloadStatus,
    /// Whether health checks and DNS look-ups run (from `serve` on); a
    /// swapped-in snapshot starts its own when they do. The lock orders
    /// swaps against the start.
    upkeep_running: Mutex<bool>,
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
    /// Trace context sampling and the OTLP exporter; read at start, like
    /// `server`.
    pub tracing: Tracing,
    draining: AtomicBool,
}

/// The handle handlers receive.
pub type SharedState = Arc<AppState>;

impl AppState {
    /// Builds the state (one pooled client per host) from a validated config.
    pub fn new(config: &Config) -> Result<SharedState, String> {
        Ok(Arc::new(AppState {
            server: config.server.clone(),
            upstreams: ArcSwap::from_pointee(Upstreams::new(config)?),
            owners: RunOwners::new(),
            reloads: ReloadStatus::default(),
            upkeep_running: Mutex::new(false),
            cache: ConfigCache::new(config.server.config_fetch_timeout),
            metrics: Metrics::new(),
            auth: Arc::new(crate::auth::Gate::new(config)),
            end_streams: CancellationToken::new(),
            hurry: CancellationToken::new(),
            background: TaskTracker::new(),
            instantiated_at: chrono::Utc::now()
                .format("%Y-%m-%dT%H:%M:%S%.6fZ")
                .to_string(),
            tracing: Tracing::new(&config.tracing)?,
            draining: AtomicBool::new(false),
        }))
    }

    /// The entries and host groups in service now. A request loads this
    /// once and keeps what it found to its end, so a reload never changes
    /// the host of a request (or stream) already under way.
    pub fn upstreams(&self) -> Guard<Arc<Upstreams>> {
        self.upstreams.load()
    }

    /// Puts `next` in service: new requests see it at once; requests under
    /// way keep the snapshot they loaded. The old snapshot's health checks
    /// and DNS look-ups stop and `next`'s start.
    pub fn replace_upstreams(&self, next: Upstreams) {
        let running = self.upkeep_lock();
        let next = Arc::new(next);
        let old = self.upstreams.swap(next.clone());
        old.upkeep.cancel();
        if *running {
            health::spawn(&next);
        }
    }

    /// Starts the health checks and DNS look-ups of the snapshot in service
    /// (and of every one swapped in later), until [`AppState::stop_upkeep`].
    pub fn start_upkeep(&self) {
        let mut running = self.upkeep_lock();
        if !*running {
            *running = true;
            health::spawn(&self.upstreams.load());
        }
    }

    /// Stops every health check and DNS look-up.
    pub fn stop_upkeep(&self) {
        let mut running = self.upkeep_lock();
        *running = false;
        self.upstreams.load().upkeep.cancel();
    }

    fn upkeep_lock(&self) -> std::sync::MutexGuard<'_, bool> {
        self.upkeep_running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Marks the gateway as shutting down: `/ready` answers 503 from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Counts a failed metadata or cancel call to `group`.
    pub fn note_upstream_error(&self, group: &HostGroup, error: &UpstreamError) {
        let kind = GatewayError::from(error.clone()).kind();
        self.metrics.upstream_error(group.name(), kind);
    }

    /// Whether no request is in flight on any host (streams included).
    pub fn nothing_in_flight(&self) -> bool {
        self.upstreams().groups().iter().all(|group| {
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
