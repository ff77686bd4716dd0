//! The one forwarding path every proxied call takes: runs, cancel, continue,
//! resume and run look-ups.
//!
//! The request body is streamed to the host as it arrives; the response body is
//! streamed back as it arrives. Nothing is buffered whole and nothing is
//! re-encoded. Per-phase timeouts: connect (the client's `connect_timeout`),
//! response head and each gap between body chunks (the workflow's `timeout`,
//! reset on every read, never a total deadline).

mod sse;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request};

use crate::client::ClientError;
use crate::error::GatewayError;
use crate::state::AppState;
use crate::upstream::Upstream;

pub use sse::SseRelay;

/// Attached to every response that came from a host, for the access log and
/// the metrics.
#[derive(Debug, Clone)]
pub struct Forwarded {
    pub upstream: Arc<Upstream>,
    /// Time from sending the request to the host's response head.
    pub waited: Duration,
    /// Events relayed so far (event streams only).
    events: Arc<AtomicU64>,
}

impl Forwarded {
    pub fn events(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }
}

/// Forwards `request` to `upstream`'s host at `path_and_query` and streams the
/// answer back.
pub async fn forward(
    state: &AppState,
    upstream: &Arc<Upstream>,
    path_and_query: &str,
    request: Request<Body>,
) -> Result<Response, GatewayError> {
    let client = &upstream.host.client;
    let timeout = upstream.config.timeout;
    let (parts, body) = request.into_parts();

    let mut headers = forwardable_headers(&parts.headers);
    if !headers.contains_key(header::AUTHORIZATION)
        && let Some(token) = &upstream.config.auth_token
        && let Ok(value) = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
    {
        headers.insert(header::AUTHORIZATION, value);
    }
    let authorization = headers.get(header::AUTHORIZATION).cloned();

    let mut outgoing = client
        .http()
        .request(parts.method.clone(), client.url(path_and_query))
        .headers(headers);
    if has_body(&parts.method, &parts.headers) {
        outgoing = outgoing.body(reqwest::Body::wrap_stream(body.into_data_stream()));
    }

    let sent = Instant::now();
    let result = match tokio::time::timeout(timeout, outgoing.send()).await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(e)) => Err(client.classify(&e, timeout)),
        Err(_) => Err(client.timeout_error(timeout)),
    };
    let response = match result {
        Ok(response) => response,
        Err(error) => {
            let error = GatewayError::from(error);
            if !matches!(error, GatewayError::PayloadTooLarge) {
                state
                    .metrics
                    .upstream_error(client.base_url(), error.kind());
            }
            return Err(error);
        }
    };
    let forwarded = Forwarded {
        upstream: upstream.clone(),
        waited: sent.elapsed(),
        events: Arc::default(),
    };

    let status = response.status();
    let mut headers = forwardable_headers(response.headers());
    let is_event_stream = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/event-stream"));
    let upstream_body = response.bytes_stream();

    let body = if is_event_stream {
        // Tell proxies in front of us not to buffer the stream (agno #10077).
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        headers.insert(
            HeaderName::from_static("x-accel-buffering"),
            HeaderValue::from_static("no"),
        );
        let relay = SseRelay::new(
            upstream_body,
            sse::RelayContext {
                upstream: upstream.clone(),
                events: forwarded.events.clone(),
                active_streams: state.metrics.active_streams.clone(),
                upstream_errors: state.metrics.upstream_errors.clone(),
                end_streams: state.end_streams.clone(),
                background: state.background.clone(),
                authorization,
            },
        );
        Body::from_stream(relay.into_stream())
    } else {
        Body::from_stream(idle_timeout(upstream_body, timeout, client.clone()))
    };

    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response.extensions_mut().insert(forwarded);
    Ok(response)
}

/// Streams `body`, failing when no chunk arrives within `idle`. A failure
/// mid-body aborts the caller's connection, the only honest signal left once
/// the status line has been sent.
fn idle_timeout(
    body: impl Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
    idle: Duration,
    client: crate::client::AgentOsClient,
) -> impl Stream<Item = Result<Bytes, ClientError>> + Send + 'static {
    let body = Box::pin(body);
    futures::stream::unfold(Some(body), move |body| {
        let client = client.clone();
        async move {
            let mut body = body?;
            match tokio::time::timeout(idle, body.next()).await {
                Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some(body))),
                Ok(None) => None,
                Ok(Some(Err(e))) => Some((Err(client.classify(&e, idle)), None)),
                Err(_) => Some((Err(client.timeout_error(idle)), None)),
            }
        }
    })
}

/// Whether the caller sent a body worth streaming upstream.
fn has_body(method: &Method, headers: &HeaderMap) -> bool {
    if headers.contains_key(header::TRANSFER_ENCODING) {
        return true;
    }
    match headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
    {
        Some(len) => len.trim() != "0",
        None => !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS),
    }
}

/// Headers that describe one hop only (RFC 9110 §7.6.1) and must not be
/// forwarded, plus `host` (set for the new hop). `content-length` stays: the
/// body is streamed unchanged, so the length still holds and the host is not
/// forced onto chunked framing.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
    )
}

/// Copies `headers` without hop-by-hop headers, including any that the
/// `Connection` header names.
pub fn forwardable_headers(headers: &HeaderMap) -> HeaderMap {
    let named_by_connection: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    let mut out = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        if is_hop_by_hop(name) || named_by_connection.contains(name) {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

/// The type of a relayed body item: an SSE relay never fails (it ends with
/// an error event instead).
pub type RelayItem = Result<Bytes, Infallible>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-hop"),
        );
        h.insert("x-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::HOST, HeaderValue::from_static("gw"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        h.insert("x-request-id", HeaderValue::from_static("r1"));
        let out = forwardable_headers(&h);
        let names: Vec<_> = out.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["authorization", "x-request-id"]);
    }

    #[test]
    fn body_detection() {
        let mut h = HeaderMap::new();
        assert!(!has_body(&Method::GET, &h));
        assert!(has_body(&Method::POST, &h));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        assert!(!has_body(&Method::POST, &h));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("12"));
        assert!(has_body(&Method::POST, &h));
    }
}
