//! Cross-cutting concerns as tower layers, applied once around every route:
//! request ids, tracing spans, the access log and request metrics, the
//! request body limit, CORS and trailing-slash normalisation. Handlers never
//! repeat any of this.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use http::header::{self, HeaderName, HeaderValue};
use tower::Layer;
use tower_http::cors::{AllowHeaders, AllowMethods, AllowOrigin, CorsLayer};
use tower_http::normalize_path::{NormalizePath, NormalizePathLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::config::ServerConfig;
use crate::error::GatewayError;
use crate::observability;
use crate::state::SharedState;

/// `X-Request-Id`: kept when the caller sends one, created otherwise, sent to
/// the host and returned to the caller.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Wraps `routes` in every layer. The result is what the listener serves.
pub fn apply(routes: Router, state: &SharedState) -> NormalizePath<Router> {
    let server = &state.server;
    let routes = routes
        .layer(middleware::from_fn_with_state(
            server.max_body_bytes,
            limit_body,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            observability::access::track,
        ))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request| {
                    let request_id = request
                        .headers()
                        .get(&REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    tracing::info_span!(
                        "request",
                        method = %request.method(),
                        path = %request.uri().path(),
                        request_id,
                    )
                })
                // The access layer writes the per-request line.
                .on_response(DefaultOnResponse::new().level(Level::DEBUG)),
        )
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
            header::COOKIE,
        ]))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
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

/// Refuses a declared length over the limit at once, and caps a streamed
/// body at the limit while it is forwarded.
async fn limit_body(State(limit): State<u64>, request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return GatewayError::PayloadTooLarge.into_response();
    }
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let (parts, body) = request.into_parts();
    let body = Body::new(http_body_util::Limited::new(body, limit));
    next.run(Request::from_parts(parts, body)).await
}
