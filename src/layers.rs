//! Cross-cutting concerns as tower layers, applied once around every route:
//! trailing-slash normalisation, CORS, and the access layer
//! (`observability::access`: request ids, the tracing span, the access log
//! and request metrics, the request body limit). Handlers never repeat any of
//! this.

use std::time::Duration;

use axum::Router;
use http::header::{self, HeaderName, HeaderValue};
use tower::Layer;
use tower_http::cors::{AllowHeaders, AllowMethods, AllowOrigin, CorsLayer};
use tower_http::normalize_path::{NormalizePath, NormalizePathLayer};

use crate::config::ServerConfig;
use crate::observability;
use crate::state::SharedState;

/// `X-Request-Id`: kept when the caller sends one, created otherwise, sent to
/// the host and returned to the caller.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Wraps `routes` in every layer. The result is what the listener serves.
pub fn apply(routes: Router, state: &SharedState) -> NormalizePath<Router> {
    let server = &state.server;
    let routes = routes
        .layer(observability::access::AccessLayer::new(
            state.clone(),
            server.max_body_bytes,
        ))
        .layer(cors(server));
    NormalizePathLayer::trim_trailing_slash().layer(routes)
}

/// AgentOS's CORS policy: the configured origins with credentials, every
/// method and header, preflights cached for 600 s.
fn cors(server: &ServerConfig) -> CorsLayer {
    let layer = CorsLayer::new()
        .allow_methods(AllowMethods::mirror_request())
        .allow_headers(AllowHeaders::mirror_request())
        .expose_headers([
            REQUEST_ID,
            HeaderName::from_static(crate::routes::workflows::CACHE_HEADER),
            header::CONTENT_TYPE,
        ])
        .max_age(Duration::from_secs(600));
    match &server.cors_origins {
        None => layer.allow_origin(AllowOrigin::any()),
        Some(origins) => layer
            .allow_origin(AllowOrigin::list(
                origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()),
            ))
            .allow_credentials(true),
    }
}
