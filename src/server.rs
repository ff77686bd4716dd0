//! Serving: the app (routes plus layers) on an already-bound listener, until
//! a shutdown signal. Tests bind `127.0.0.1:0` and call [`serve`] in-process.

use std::future::Future;

use axum::ServiceExt;
use axum::extract::Request;
use tokio::net::TcpListener;

use crate::state::SharedState;
use crate::{layers, routes};

/// Serves the gateway on `listener` until `shutdown` resolves, then stops
/// accepting and waits for in-flight requests.
pub async fn serve(
    listener: TcpListener,
    state: SharedState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = layers::apply(routes::router(state.clone()), &state.server);
    let shutdown_state = state.clone();
    axum::serve(listener, ServiceExt::<Request>::into_make_service(app))
        .with_graceful_shutdown(async move {
            shutdown.await;
            shutdown_state.start_draining();
        })
        .await
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
        _ = ctrl_c => tracing::info!("Ctrl-C received; shutting down"),
        _ = terminate => tracing::info!("SIGTERM received; shutting down"),
    }
}
