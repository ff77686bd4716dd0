//! The admin listener: what operators and their tools read about the
//! gateway, on a port of its own (`[admin] listen`, default `0.0.0.0:9901`,
//! Envoy's admin port) instead of the public one.
//!
//! It owns these routes, and answers 404 `{"detail":"Not Found"}` for any
//! other path:
//! - `GET /metrics`: Prometheus, OpenMetrics text ([`metrics`]);
//! - `GET /gateway/upstreams`: every host group, each replica's URL, health
//!   and last error ([`upstreams`]);
//! - `GET /health` and `GET /ready`: the public bodies, so probes and
//!   sidecars that only know this port can use it too.
//!
//! The first two name every host and the errors they give, which is why
//! they are not on the public listener. Admin traffic is a scrape every few
//! seconds, so this is a plain axum `Router` served by hyper-util's
//! HTTP/1.1-or-h2c connection builder, not the public listener's tuned path.
//! Each connection must start sending within `header_read_timeout`
//! (`[server]`), and an HTTP/1.1 head must be complete within it. An h2c
//! client that stalls inside its 24-byte preface has no timer (hyper-util's
//! protocol sniff keeps none); what bounds it, and any other misbehaving
//! client on this port, is [`MAX_CONNECTIONS`], so they cannot eat the
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
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::error::GatewayError;
use crate::routes::health;
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
/// flight (for at most a few seconds) and returns.
pub async fn serve(
    listener: TcpListener,
    state: SharedState,
    stop: CancellationToken,
) -> io::Result<()> {
    let header_read_timeout = state.server.limits.header_read_timeout;
    let service = TowerToHyperService::new(router(state));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let mut connections = JoinSet::new();
    while let Some(stream) = crate::server::next_connection(&listener, &stop).await {
        while connections.try_join_next().is_some() {}
        if connections.len() >= MAX_CONNECTIONS {
            tracing::warn!(
                limit = MAX_CONNECTIONS,
                "admin connection limit reached; connection closed"
            );
            continue;
        }
        connections.spawn(serve_connection(
            stream,
            builder.clone(),
            service.clone(),
            header_read_timeout,
            stop.clone(),
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

/// Serves one admin connection; on `stop` it finishes the response in
/// flight and closes.
async fn serve_connection(
    stream: TcpStream,
    builder: Arc<auto::Builder<TokioExecutor>>,
    service: TowerToHyperService<Router>,
    header_read_timeout: Duration,
    stop: CancellationToken,
) {
    // hyper's timer covers an HTTP/1.1 head, not the protocol sniff before
    // it: a connection that sends no byte in time is closed here. (A peek,
    // not `readable()`, which may wake on a socket with nothing to read.)
    let mut first = [0u8; 1];
    tokio::select! {
        () = stop.cancelled() => return,
        peeked = tokio::time::timeout(header_read_timeout, stream.peek(&mut first)) => {
            if !matches!(peeked, Ok(Ok(1..))) {
                return;
            }
        }
    }
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "admin connection ended with an error");
    }
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
