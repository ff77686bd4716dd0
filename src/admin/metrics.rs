//! `GET /metrics` on the admin listener: the Prometheus scrape endpoint.

use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::state::SharedState;

/// The OpenMetrics text exposition of every gateway metric.
pub fn metrics(state: &SharedState) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(&state.cache.stats, &state.upstreams()),
    )
        .into_response()
}
