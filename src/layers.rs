//! Cross-cutting concerns as tower layers, applied once around every route:
//! trailing-slash normalisation, CORS, W3C trace context
//! (`observability::trace`: the caller's `traceparent`, the gateway's span
//! id) and the access layer (`observability::access`: request ids, the
//! tracing span, the access log and request metrics, the framing rules of
//! [`HeadFraming`], the request body limit). Handlers never repeat any of
//! this.

use std::convert::Infallible;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::Request;
use axum::response::Response;
use futures::FutureExt;
use futures::future::{Either, Map};
use http::header::{self, HeaderName, HeaderValue};
use tower::{Layer, Service};
use tower_http::cors::{AllowHeaders, AllowMethods, AllowOrigin, Cors, CorsLayer};
use tower_http::normalize_path::{NormalizePath, NormalizePathLayer};

use crate::auth::{Auth, AuthLayer};
use crate::config::ServerConfig;
use crate::observability::access::{Access, AccessLayer};
use crate::observability::trace::{Trace, TraceLayer};
use crate::routes::Routes;
use crate::state::SharedState;

/// `X-Request-Id`: kept when the caller sends one, created otherwise, sent to
/// the host and returned to the caller.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The framing rules of RFC 9112 that hyper leaves to the application,
/// checked before a request is routed; a request that breaks one is
/// answered 400 and its connection closed, and nothing of it reaches a
/// host. (hyper itself refuses the rest: an invalid or conflicting
/// `Content-Length`, `Transfer-Encoding` in HTTP/1.0 or not ending in
/// `chunked`, obs-fold, bare CR, bad chunk sizes. Given both
/// `Content-Length` and `Transfer-Encoding: chunked`, it drops the length,
/// decodes the chunks and closes the connection after the answer, as
/// RFC 9112 §6.1 allows; the gateway re-frames what it forwards, so the
/// host still parses exactly one request.)
///
/// Gathered field by field ([`HeadFraming::note`]) during the access
/// layer's one walk over the head, so no field is looked up twice.
#[derive(Debug, Default)]
pub struct HeadFraming {
    hosts: usize,
    codings: usize,
    chunked: bool,
    /// `Content-Length` as a number (hyper has checked it), if given.
    pub content_length: Option<u64>,
}

impl HeadFraming {
    /// Takes one field of the head into account.
    pub fn note(&mut self, name: &HeaderName, value: &HeaderValue) {
        if name == header::HOST {
            self.hosts += 1;
        } else if name == header::TRANSFER_ENCODING {
            self.codings += 1;
            self.chunked = value.as_bytes().eq_ignore_ascii_case(b"chunked");
        } else if name == header::CONTENT_LENGTH {
            self.content_length = value.to_str().ok().and_then(|v| v.trim().parse().ok());
        }
    }

    /// The verdict for a request of `version` whose fields were noted.
    pub fn check(&self, version: http::Version) -> Result<(), &'static str> {
        if version <= http::Version::HTTP_11 {
            if self.hosts == 0 && version == http::Version::HTTP_11 {
                return Err("Missing Host header");
            }
            if self.hosts > 1 {
                return Err("More than one Host header");
            }
        }
        if self.codings > 1 || (self.codings == 1 && !self.chunked) {
            return Err("Unsupported Transfer-Encoding: only a single `chunked` is accepted");
        }
        Ok(())
    }
}

/// What the listener serves: the routes inside every layer.
pub type App = NormalizePath<OriginGatedCors>;

/// The routes inside the auth layer (so refusals are logged and counted
/// like any answer), inside the access layer, inside the trace layer (which
/// leaves the trace context the access layer logs).
type Logged = Trace<Access<Auth<Routes>>>;

/// Wraps `routes` in every layer.
pub fn apply(routes: Routes, state: &SharedState) -> App {
    let server = &state.server;
    let routes = AuthLayer::new(state.clone()).layer(routes);
    let routes = AccessLayer::new(state.clone(), server.max_body_bytes).layer(routes);
    let routes = TraceLayer::new(state.tracing.sample_ratio).layer(routes);
    let gated = OriginGatedCors {
        cors: cors(server).layer(routes.clone()),
        plain: routes,
    };
    NormalizePathLayer::trim_trailing_slash().layer(gated)
}

/// CORS as AgentOS's middleware (Starlette's) applies it: a request with an
/// `Origin` goes through the CORS layer; one without (every server-to-server
/// call: agno's clients, probes) only gets `Vary: Origin`, as AgentOS sends.
/// Skipping the layer for those also skips its per-response header building.
#[derive(Clone)]
pub struct OriginGatedCors {
    cors: Cors<Logged>,
    plain: Logged,
}

type PlainFuture = Map<
    <Logged as Service<Request>>::Future,
    fn(Result<Response, Infallible>) -> Result<Response, Infallible>,
>;

impl Service<Request> for OriginGatedCors {
    type Response = Response;
    type Error = Infallible;
    type Future = Either<<Cors<Logged> as Service<Request>>::Future, PlainFuture>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The router is always ready; both are asked so neither is called unready.
        match Service::<Request>::poll_ready(&mut self.cors, cx) {
            Poll::Ready(Ok(())) => Service::<Request>::poll_ready(&mut self.plain, cx),
            other => other,
        }
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if request.headers().contains_key(header::ORIGIN) {
            return Either::Left(self.cors.call(request));
        }
        let add_vary: fn(Result<Response, Infallible>) -> Result<Response, Infallible> =
            |response| {
                response.map(|mut response| {
                    response
                        .headers_mut()
                        .append(header::VARY, HeaderValue::from_static("Origin"));
                    response
                })
            };
        Either::Right(self.plain.call(request).map(add_vary))
    }
}

/// AgentOS's CORS policy: the configured origins with credentials, every
/// method and header, preflights cached for 600 s.
fn cors(server: &ServerConfig) -> CorsLayer {
    let layer = CorsLayer::new()
        .allow_methods(AllowMethods::mirror_request())
        .allow_headers(AllowHeaders::mirror_request())
        .expose_headers([
            REQUEST_ID,
            HeaderName::from_static(crate::routes::entries::CACHE_HEADER),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// [`HeadFraming`]'s verdict on a whole request.
    fn check_framing(request: &Request) -> Result<(), &'static str> {
        let mut framing = HeadFraming::default();
        for (name, value) in request.headers() {
            framing.note(name, value);
        }
        framing.check(request.version())
    }

    fn request(version: http::Version, headers: &[(&str, &str)]) -> Request {
        let mut builder = http::Request::builder().version(version).uri("/health");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(axum::body::Body::empty()).unwrap()
    }

    #[test]
    fn framing_rules_hyper_leaves_to_the_application() {
        use http::Version;
        let ok = |v, h: &[(&str, &str)]| check_framing(&request(v, h)).is_ok();
        assert!(ok(Version::HTTP_11, &[("host", "gw")]));
        assert!(!ok(Version::HTTP_11, &[]), "HTTP/1.1 needs a Host");
        assert!(ok(Version::HTTP_10, &[]), "HTTP/1.0 may omit it");
        assert!(!ok(Version::HTTP_11, &[("host", "a"), ("host", "b")]));
        assert!(!ok(Version::HTTP_10, &[("host", "a"), ("host", "a")]));
        assert!(ok(Version::HTTP_2, &[]), "h2 names its authority elsewhere");
        let chunked = [("host", "gw"), ("transfer-encoding", "chunked")];
        assert!(ok(Version::HTTP_11, &chunked));
        assert!(!ok(
            Version::HTTP_11,
            &[("host", "gw"), ("transfer-encoding", "gzip, chunked")]
        ));
        assert!(!ok(
            Version::HTTP_11,
            &[
                ("host", "gw"),
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "chunked")
            ]
        ));
    }
}
