//! The AgentOS HTTP surface the gateway answers, grouped by resource.

pub mod config;
pub mod health;
pub mod metrics;
pub mod upstreams;
pub mod workflows;

use axum::Router;
use axum::routing::{get, post};

use crate::error::GatewayError;
use crate::state::SharedState;

/// All routes, without the cross-cutting layers (see `crate::layers`).
pub fn router(state: SharedState) -> Router {
    use workflows::{continue_run, create_run, list_runs, resume_run, run_call_any_owner};
    Router::new()
        .route("/", get(health::home))
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/info", get(health::info))
        .route("/metrics", get(metrics::metrics))
        .route("/gateway/upstreams", get(upstreams::status))
        .route("/config", get(config::config))
        .route("/workflows", get(workflows::list))
        .route("/workflows/{id}", get(workflows::detail))
        .route("/workflows/{id}/runs", get(list_runs).post(create_run))
        .route("/workflows/{id}/runs/{run_id}", get(run_call_any_owner))
        .route(
            "/workflows/{id}/runs/{run_id}/cancel",
            post(run_call_any_owner),
        )
        .route("/workflows/{id}/runs/{run_id}/continue", post(continue_run))
        .route("/workflows/{id}/runs/{run_id}/resume", post(resume_run))
        .fallback(|| async { GatewayError::RouteNotFound })
        .method_not_allowed_fallback(|| async { GatewayError::MethodNotAllowed })
        .with_state(state)
}
