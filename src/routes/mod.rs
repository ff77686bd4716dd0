//! The AgentOS HTTP surface the gateway answers, grouped by resource.

pub mod config;
pub mod health;
pub mod metrics;
pub mod workflows;

use axum::Router;
use axum::routing::{get, post};

use crate::error::GatewayError;
use crate::state::SharedState;

/// All routes, without the cross-cutting layers (see `crate::layers`).
pub fn router(state: SharedState) -> Router {
    use workflows::{forward_call, forward_run_call};
    Router::new()
        .route("/", get(health::home))
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/info", get(health::info))
        .route("/metrics", get(metrics::metrics))
        .route("/config", get(config::config))
        .route("/workflows", get(workflows::list))
        .route("/workflows/{id}", get(workflows::detail))
        .route("/workflows/{id}/runs", get(forward_call).post(forward_call))
        .route("/workflows/{id}/runs/{run_id}", get(forward_run_call))
        .route(
            "/workflows/{id}/runs/{run_id}/cancel",
            post(forward_run_call),
        )
        .route(
            "/workflows/{id}/runs/{run_id}/continue",
            post(forward_run_call),
        )
        .route(
            "/workflows/{id}/runs/{run_id}/resume",
            post(forward_run_call),
        )
        .fallback(|| async { GatewayError::RouteNotFound })
        .method_not_allowed_fallback(|| async { GatewayError::MethodNotAllowed })
        .with_state(state)
}
