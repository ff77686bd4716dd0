//! The admin listener: what operators and their tools read about the
//! gateway, on a port of its own (`[admin] listen`, default `0.0.0.0:9901`,
//! Envoy's admin port) instead of the public one.
//!
//! It owns these routes, and answers 404 `{"detail":"Not Found"}` for any
//! other path:
//! - `GET /metrics`: Prometheus, OpenMetrics text ([`metrics`]);
//! - `GET /gateway/upstreams`: every host group, each replica's URL, health
//!   and last error ([`upstreams`]);
//! - `GET /gateway/config`: the config file in service, when it was loaded,
//!   and the last reload's outcome (with its error), see [`crate::reload`];
//! - `GET /health` and `GET /ready`: the public bodies, so probes and
//!   sidecars that only know this port can use it too.
//!
//! The first three name every host and the errors they give, which is why
//! they are not on the public listener. Admin traffic is a scrape every few
//! seconds, so this is a plain axum `Router` served by hyper-util's
//! HTTP/1.1-or-h2c connection builder, not the public listener's tuned path.
//! Connections are served as the public listener's are
//! (`server::connection`: the first request within `header_read_timeout`,
//! idle ones closed, writes bounded), and at most [`MAX_CONNECTIONS`] are
//! open at once, so a misbehaving client on this port cannot eat the
//! descriptors the public listener needs.

pub mod metrics;
pub mod upstreams;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::HeaderValue;
use axum::http::header::ALLOW;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::config::ConnectionLimits;
use crate::error::GatewayError;
use crate::routes::health;
use crate::server::connection;
use crate::state::SharedState;

/// Admin connections open at once; a new one beyond it is closed at once.
pub const MAX_CONNECTIONS: usize = 64;

/// How long open admin connections get to finish their response once the
/// listener stops; then they are dropped.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The admin routes, as a service over any request body.
pub fn router(state: SharedState) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(state): State<SharedState>| async move { metrics::metrics(&state) }),
        )
        .route(
            "/gateway/upstreams",
            get(|State(state): State<SharedState>| async move { upstreams::status(&state) }),
        )
        .route(
            "/gateway/config",
            get(|State(state): State<SharedState>| async move {
                axum::Json(state.reloads.view())
            }),
        )
        .route(
            "/health",
            get(|State(state): State<SharedState>| async move { health::health(&state) }),
        )
        .route(
            "/ready",
            get(|State(state): State<SharedState>| async move {
                health::ready(&state).into_response()
            }),
        )
        .fallback(|| async { GatewayError::RouteNotFound.into_response() })
        .method_not_allowed_fallback(|| async {
            // Every admin route is GET (axum answers HEAD with it).
            let mut response = GatewayError::MethodNotAllowed.into_response();
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            response
        })
        .with_state(state)
}

/// Serves the admin routes on `listener` until `stop` is cancelled; then
/// closes the listener, lets open connections finish the response in
/// flight (for at most a few seconds) and returns. Each connection is the
/// public listener's (`server::connection`), with its limits and timers,
/// at most [`MAX_CONNECTIONS`] at once.
pub async fn serve(
    listener: TcpListener,
    state: SharedState,
    stop: CancellationToken,
) -> io::Result<()> {
    let limits = ConnectionLimits {
        max_connections: MAX_CONNECTIONS,
        ..state.server.limits.clone()
    };
    let settings = Arc::new(connection::Settings::new(&limits));
    // Counted nowhere: the public listener's gauge is for callers.
    let limiter = connection::ConnectionLimiter::new(MAX_CONNECTIONS, Gauge::default());
    let router = router(state);
    let mut connections = JoinSet::new();
    while let Some(stream) = crate::server::next_connection(&listener, &stop).await {
        while connections.try_join_next().is_some() {}
        let Some(slot) = limiter.try_take() else {
            tracing::warn!(
                limit = MAX_CONNECTIONS,
                "admin connection limit reached; connection closed"
            );
            continue;
        };
        connections.spawn(connection::serve(
            stream,
            router.clone(),
            settings.clone(),
            stop.clone(),
            slot,
        ));
    }
    drop(listener);
    let finished = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(STOP_GRACE, finished).await.is_err() {
        tracing::debug!("admin connections still open after the stop grace; dropped");
    }
    // Dropping the set aborts whatever is left.
    Ok(())
}

/// An admin listener running on its own task; stopped by [`Admin::stop`],
/// or when dropped (without waiting for it).
pub struct Admin {
    addr: SocketAddr,
    stop: CancellationToken,
    task: Option<JoinHandle<io::Result<()>>>,
}

impl Admin {
    /// Spawns [`serve`] on `listener` and logs `admin listener ready` with
    /// the address it listens on.
    pub fn spawn(listener: TcpListener, state: SharedState) -> io::Result<Admin> {
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve(listener, state, stop.clone()));
        tracing::info!(listen = %addr, "admin listener ready");
        Ok(Admin {
            addr,
            stop,
            task: Some(task),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops it and waits until it has.
    pub async fn stop(mut self) {
        self.stop.cancel();
        let Some(task) = self.task.take() else {
            return;
        };
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "admin listener failed"),
            Err(e) => tracing::warn!(error = %e, "admin listener task failed"),
        }
    }
}

impl Drop for Admin {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
