//! Serving: the app (routes plus layers) on an already-bound listener, and the
//! two-phase drain on shutdown. Tests bind `127.0.0.1:0` and call [`serve`]
//! in-process.
//!
//! Why two phases: a load balancer keeps sending new connections for a while
//! after a pod is told to stop, and axum's plain graceful shutdown never
//! finishes while an event stream is open. So on the signal:
//! 1. `/ready` turns 503 at once, and new connections are still accepted for
//!    `drain_grace`, so the load balancer deregisters the pod without errors;
//! 2. the listener closes; in-flight requests and streams run on for up to
//!    `drain_timeout` (a cut stream cancels the user's run);
//! 3. streams still open then end with an AgentOS error event and their runs
//!    are cancelled on the host; the process exits 0.

use std::future::Future;
use std::time::Duration;

use axum::ServiceExt;
use axum::extract::Request;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::state::SharedState;
use crate::{layers, routes, upstream};

/// How long streams cut at the drain deadline get to flush their error event,
/// and cancels of their runs get to reach the hosts.
const FINAL_FLUSH: Duration = Duration::from_secs(10);

/// Serves the gateway on `listener` until `shutdown` resolves, then drains.
pub async fn serve(
    listener: TcpListener,
    state: SharedState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = layers::apply(routes::router(state.clone()), &state);
    let stop_upkeep = CancellationToken::new();
    upstream::health::spawn(&state.upstreams, &stop_upkeep);
    let _stop_upkeep_on_return = stop_upkeep.drop_guard();
    let stop_accepting = CancellationToken::new();
    let server = axum::serve(listener, ServiceExt::<Request>::into_make_service(app))
        .with_graceful_shutdown(stop_accepting.clone().cancelled_owned())
        .into_future();
    tokio::pin!(server);

    tokio::select! {
        result = &mut server => return result,
        () = shutdown => {}
    }
    let (grace, deadline) = (state.server.drain_grace, state.server.drain_timeout);
    state.start_draining();
    tracing::info!(
        ?grace,
        "draining: /ready now answers 503; still accepting connections"
    );
    tokio::select! {
        result = &mut server => return result,
        () = tokio::time::sleep(grace) => {}
    }

    stop_accepting.cancel();
    tracing::info!(
        streams = state.metrics.active_streams.get(),
        ?deadline,
        "listener closed; waiting for in-flight requests and streams"
    );
    let result = tokio::select! {
        result = &mut server => result,
        () = tokio::time::sleep(deadline) => {
            tracing::warn!(
                streams = state.metrics.active_streams.get(),
                "drain deadline passed; ending open streams"
            );
            state.end_streams.cancel();
            match tokio::time::timeout(FINAL_FLUSH, &mut server).await {
                Ok(result) => result,
                Err(_) => {
                    tracing::warn!("connections still open after the final flush; exiting anyway");
                    Ok(())
                }
            }
        }
    };
    state.background.close();
    if tokio::time::timeout(FINAL_FLUSH, state.background.wait())
        .await
        .is_err()
    {
        tracing::warn!("some host-side cancels did not finish before exit");
    }
    tracing::info!("drained; exiting");
    result
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C received; shutting down"),
        () = terminate => tracing::info!("SIGTERM received; shutting down"),
    }
}
