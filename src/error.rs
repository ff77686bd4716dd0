//! The one error type of the request path, and how it becomes an AgentOS-style
//! `{"detail": "..."}` response.
//!
//! Each variant is one failure phase; the variant alone decides the status
//! code, so handlers never pick statuses for failures themselves.

use std::time::Duration;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::client::{ClientError, UnavailablePhase};

/// Everything that can go wrong while the gateway answers a request.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The route exists but not for this method (FastAPI's default 405 body).
    #[error("Method Not Allowed")]
    MethodNotAllowed,
    /// The path names no configured workflow (AgentOS says exactly this).
    #[error("Workflow not found")]
    WorkflowNotFound,
    /// No route matches (FastAPI's default 404 body).
    #[error("Not Found")]
    RouteNotFound,
    /// The host refused the connection or reset it before answering.
    #[error("Failed to connect to remote server at {base_url}")]
    UpstreamConnect { base_url: String },
    /// The TCP connect did not finish within the connect timeout.
    #[error("Remote server at {base_url} is unreachable: connect timed out after {after:?}")]
    UpstreamUnreachable { base_url: String, after: Duration },
    /// The host accepted the request but sent no response head in time.
    #[error("Request to remote server at {base_url} timed out after {} seconds", after.as_secs_f64())]
    UpstreamTimeout { base_url: String, after: Duration },
    /// The connection broke after it was established, before a response.
    #[error("Remote server at {base_url} closed the connection: {reason}")]
    UpstreamBroken { base_url: String, reason: String },
    /// The host answered a metadata fetch with an error; its status and
    /// detail are passed back as they are.
    #[error("{detail}")]
    UpstreamStatus { status: StatusCode, detail: String },
    /// The host's answer could not be understood.
    #[error("Remote server at {base_url} sent an invalid response: {reason}")]
    UpstreamInvalid { base_url: String, reason: String },
    /// The caller's request broke HTTP's framing rules (a second `Host`, a
    /// transfer coding other than chunked, a broken chunked body).
    #[error("{0}")]
    BadRequest(String),
    /// The caller's request body went over `server.max_body_bytes`.
    #[error("Request body is too large")]
    PayloadTooLarge,
    /// No replica can take the request (all bulkheads full, or none known).
    #[error("{0}")]
    NoCapacity(String),
    /// The gateway is shutting down and takes no new runs.
    #[error("Gateway is shutting down")]
    Draining,
}

impl GatewayError {
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::WorkflowNotFound | GatewayError::RouteNotFound => StatusCode::NOT_FOUND,
            GatewayError::UpstreamConnect { .. }
            | GatewayError::UpstreamBroken { .. }
            | GatewayError::UpstreamInvalid { .. } => StatusCode::BAD_GATEWAY,
            GatewayError::UpstreamUnreachable { .. }
            | GatewayError::Draining
            | GatewayError::NoCapacity(_) => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::UpstreamStatus { status, .. } => *status,
            GatewayError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::BadRequest(_) => StatusCode::BAD_REQUEST,
            GatewayError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    /// A short, stable label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            GatewayError::WorkflowNotFound => "workflow_not_found",
            GatewayError::RouteNotFound => "route_not_found",
            GatewayError::UpstreamConnect { .. } => "connect",
            GatewayError::UpstreamUnreachable { .. } => "connect_timeout",
            GatewayError::UpstreamTimeout { .. } => "timeout",
            GatewayError::UpstreamBroken { .. } => "broken",
            GatewayError::UpstreamStatus { .. } => "status",
            GatewayError::UpstreamInvalid { .. } => "invalid",
            GatewayError::PayloadTooLarge => "payload_too_large",
            GatewayError::BadRequest(_) => "bad_request",
            GatewayError::Draining => "draining",
            GatewayError::NoCapacity(_) => "no_capacity",
            GatewayError::MethodNotAllowed => "method_not_allowed",
        }
    }
}

impl From<ClientError> for GatewayError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::RemoteServerUnavailable { base_url, phase } => match phase {
                UnavailablePhase::Connect { .. } => GatewayError::UpstreamConnect { base_url },
                UnavailablePhase::ConnectTimeout { after } => {
                    GatewayError::UpstreamUnreachable { base_url, after }
                }
                UnavailablePhase::ResponseTimeout { after }
                | UnavailablePhase::IdleTimeout { after } => {
                    GatewayError::UpstreamTimeout { base_url, after }
                }
            },
            ClientError::Transport { base_url, reason } => {
                GatewayError::UpstreamBroken { base_url, reason }
            }
            ClientError::Status { status, detail, .. } => {
                GatewayError::UpstreamStatus { status, detail }
            }
            // A client the gateway built from validated config cannot have a
            // bad base URL; should one appear, it is the upstream side's fault.
            ClientError::Decode { base_url, reason } | ClientError::Config { base_url, reason } => {
                GatewayError::UpstreamInvalid { base_url, reason }
            }
            ClientError::BodyTooLarge => GatewayError::PayloadTooLarge,
            ClientError::RequestBody { reason, .. } => {
                GatewayError::BadRequest(format!("Invalid request body: {reason}"))
            }
            error @ ClientError::Unavailable { .. } => GatewayError::NoCapacity(error.to_string()),
        }
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (
            status,
            Json(serde_json::json!({ "detail": self.to_string() })),
        )
            .into_response();
        if matches!(self, GatewayError::Draining | GatewayError::NoCapacity(_)) {
            response.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static("1"),
            );
        }
        response
    }
}
