//! Probes and discovery: `/health` (liveness), `/ready` (readiness), `/` and
//! `/info`, answered the way AgentOS answers them. None of them calls a host.

use axum::Json;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::{Value, json};

use crate::state::SharedState;

/// Liveness, exactly AgentOS's body: the process is up and serving.
pub fn health(state: &SharedState) -> Json<Value> {
    Json(json!({ "status": "ok", "instantiated_at": state.instantiated_at }))
}

/// Readiness: config loaded and not draining. Never depends on a host being
/// up, so one dead host cannot take every gateway replica out of rotation.
pub fn ready(state: &SharedState) -> impl IntoResponse {
    if state.is_draining() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "draining" })),
        )
    } else {
        (
            StatusCode::OK,
            Json(json!({ "status": "ready", "workflows": state.upstreams().workflows().len() })),
        )
    }
}

/// AgentOS's home route.
pub fn home(state: &SharedState) -> Json<Value> {
    let name = state.server.name.as_deref().unwrap_or("AgentOS");
    Json(json!({ "name": name, "health": "/health", "info": "/info" }))
}

/// AgentOS's `/info`: what `agno connect` reads to discover the auth mode.
/// The gateway itself checks no credentials; hosts do.
pub fn info(state: &SharedState) -> Json<Value> {
    Json(json!({
        "os_id": state.server.os_id,
        "name": state.server.name,
        "os_version": env!("CARGO_PKG_VERSION"),
        "agno_version": crate::AGNO_API_VERSION,
        "agent_count": 0,
        "team_count": 0,
        "workflow_count": state.upstreams().workflows().len(),
        "mcp": { "enabled": false, "path": null, "oauth": null, "tool_run_endpoint": false },
        "auth_mode": "none",
        "user_isolation": false,
    }))
}
