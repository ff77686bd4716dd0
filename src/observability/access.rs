//! The access layer: one log line and the request metrics per request,
//! written when the response body ends (so streams are measured whole), as a
//! tower layer around the router, together with the per-request plumbing
//! that used to be separate layers (request id, sensitive headers, the
//! request span, the body limit). The line names the request's trace and
//! the gateway's span (left by `super::trace`), and a sampled request's span
//! is handed to the OTLP exporter (`super::otlp`) when one is configured.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::header::{self, HeaderValue};
use http_body::{Frame, SizeHint};
use pin_project_lite::pin_project;
use tower::{Layer, Service};
use tracing::Instrument;

use super::metrics::RouteMetrics;
use super::otlp::FinishedRequest;
use super::trace::{TraceContext, TraceIds};
use crate::config::EntryKind;
use crate::error::{FailureCause, GatewayError};
use crate::layers::{HeadFraming, REQUEST_ID};
use crate::proxy::Forwarded;
use crate::routes::Matched;
use crate::state::SharedState;

/// How a response body ended.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    Complete,
    Error,
    ClientGone,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Complete => "complete",
            Outcome::Error => "error",
            Outcome::ClientGone => "client_gone",
        }
    }
}

/// Everything the access line needs, carried until the body ends.
struct AccessRecord {
    start: Instant,
    metrics: Arc<RouteMetrics>,
    method: http::Method,
    /// The request's URI (its path is logged); cloning it shares the bytes.
    uri: http::Uri,
    status: u16,
    request_id: HeaderValue,
    forwarded: Option<Forwarded>,
    /// What failed behind an error answer (the access line says it).
    failure: Option<FailureCause>,
    /// The request's trace and the gateway's span in it.
    trace: Option<TraceIds>,
    /// Set when the request's span is to be exported (sampled, and an
    /// exporter configured).
    export_to: Option<SharedState>,
}

impl AccessRecord {
    fn finish(self, bytes: u64, outcome: Outcome) {
        let elapsed = self.start.elapsed();
        let labels = &self.metrics.labels;
        let host = match (&self.forwarded, &self.failure) {
            (Some(forwarded), _) => forwarded.replica.base_url(),
            (None, Some(failure)) => failure.host.as_str(),
            (None, None) => "",
        };
        let events = self.forwarded.as_ref().map_or(0, Forwarded::events);
        // Milliseconds to the microsecond: finer digits are clock noise.
        let duration_ms = elapsed.as_micros() as f64 / 1000.0;
        // Probes arrive every few seconds from every load balancer; keep them
        // out of the default log level.
        let quiet = matches!(labels.route, "/health" | "/ready");
        let trace_id = self.trace.map(|t| t.trace_id_hex());
        let span_id = self.trace.map(|t| t.span_id_hex());
        let trace_id = trace_id.as_ref().map_or("", |t| t.as_str());
        let span_id = span_id.as_ref().map_or("", |s| s.as_str());
        macro_rules! access {
            ($level:ident $(, $extra:ident = $value:expr)?) => {
                tracing::$level!(
                    target: "access",
                    $($extra = $value,)?
                    request_id = self.request_id.to_str().unwrap_or(""),
                    trace_id,
                    span_id,
                    method = %self.method,
                    path = self.uri.path(),
                    kind = labels.kind,
                    id = %labels.id,
                    host,
                    status = self.status,
                    duration_ms,
                    bytes,
                    events,
                    outcome = outcome.as_str(),
                    "request"
                )
            };
        }
        // A failed request is one line: the access line, at warn, with
        // what failed behind it.
        if let Some(failure) = &self.failure {
            access!(warn, error = failure.cause.as_str());
        } else if quiet {
            access!(debug);
        } else {
            access!(info);
        }
        self.metrics.observe_end(elapsed, self.status);
        self.export(elapsed);
    }

    /// Hands the request's span to the exporter, if it is to be exported.
    fn export(&self, elapsed: Duration) {
        let (Some(state), Some(ids)) = (&self.export_to, self.trace) else {
            return;
        };
        let Some(exporter) = &state.tracing.exporter else {
            return;
        };
        let labels = &self.metrics.labels;
        let upstreams = state.upstreams();
        let kind = EntryKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == labels.kind);
        let upstream = kind.and_then(|kind| upstreams.get(kind, &labels.id));
        let end = std::time::SystemTime::now();
        exporter.export(FinishedRequest {
            ids,
            method: &self.method,
            route: labels.route,
            status: self.status,
            start: end.checked_sub(elapsed).unwrap_or(end),
            end,
            kind: labels.kind,
            id: &labels.id,
            host_group: upstream.as_ref().map(|u| u.config.host_group.as_str()),
            request_id: self.request_id.to_str().unwrap_or(""),
            error: self.failure.as_ref().map(|f| f.cause.as_str()),
        });
    }
}

/// The one layer around every route (inside CORS): request id, credential
/// headers marked sensitive, the request span, the body limit, and the
/// access record written when the response body ends.
///
/// One hand-written service instead of a stack of middlewares: each
/// `from_fn` layer boxed a future and cloned the router per request, the
/// generic trace layer wrapped the body a second time, and the UUID request
/// id cost a `getrandom` syscall per request. (BENCHMARKS.md measures this
/// change together with thread-per-core serving.)
#[derive(Clone)]
pub struct AccessLayer {
    state: SharedState,
    max_body_bytes: u64,
}

impl AccessLayer {
    pub fn new(state: SharedState, max_body_bytes: u64) -> Self {
        AccessLayer {
            state,
            max_body_bytes,
        }
    }
}

impl<S> Layer<S> for AccessLayer {
    type Service = Access<S>;

    fn layer(&self, inner: S) -> Access<S> {
        Access {
            inner,
            state: self.state.clone(),
            max_body_bytes: self.max_body_bytes,
        }
    }
}

/// The service [`AccessLayer`] builds.
#[derive(Clone)]
pub struct Access<S> {
    inner: S,
    state: SharedState,
    max_body_bytes: u64,
}

impl<S> Service<Request> for Access<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let start = Instant::now();

        // One pass over the fields: the caller's request id, credentials
        // marked sensitive (kept out of debug output), and the framing
        // facts.
        let mut caller_id = None;
        let mut framing = HeadFraming::default();
        for (name, value) in request.headers_mut().iter_mut() {
            if name == header::AUTHORIZATION || name == header::COOKIE {
                value.set_sensitive(true);
            } else if caller_id.is_none() && name == REQUEST_ID {
                caller_id = Some(value.clone());
            } else {
                framing.note(name, value);
            }
        }
        let request_id = match caller_id {
            Some(id) => id,
            None => {
                let id = new_request_id();
                request.headers_mut().insert(REQUEST_ID, id.clone());
                id
            }
        };
        let trace = request
            .extensions()
            .get::<TraceContext>()
            .map(|context| context.ids);
        let export_to = trace
            .filter(|ids| ids.sampled() && self.state.tracing.exporter.is_some())
            .map(|_| self.state.clone());
        // Events of the request (a cut stream, a failed cancel) carry its
        // request id, and the access line joins that id to the trace.
        let span = tracing::info_span!(
            "request",
            method = %request.method(),
            path = %request.uri().path(),
            request_id = request_id.to_str().unwrap_or(""),
        );
        tracing::debug!(target: ON_REQUEST, parent: &span, "started processing request");

        let metrics = route_metrics(&self.state, request.method(), request.uri().path());
        let method = request.method().clone();
        let uri = request.uri().clone();
        let id_header = request_id.clone();
        // Called here, not in the future below: the inner service was polled
        // ready for this call, and nothing needs cloning into the future.
        let handling = {
            let _entered = span.enter();
            match framing.check(request.version()) {
                Ok(()) => limit_body(request, framing.content_length, self.max_body_bytes)
                    .map(|request| self.inner.call(request)),
                Err(rule) => {
                    self.state.metrics.caller_error("framing");
                    Err(GatewayError::BadRequest(rule.to_owned()))
                }
            }
        };

        let handled = async move {
            let mut response = match handling {
                Ok(handling) => match handling.await {
                    Ok(response) => response,
                    Err(never) => match never {},
                },
                Err(refused) => {
                    let close = matches!(refused, GatewayError::BadRequest(_));
                    let mut response = refused.into_response();
                    if close {
                        // Nothing more is read from a caller whose framing
                        // cannot be trusted.
                        response
                            .headers_mut()
                            .insert(header::CONNECTION, HeaderValue::from_static("close"));
                    }
                    response
                }
            };
            if !response.headers().contains_key(&REQUEST_ID) {
                response.headers_mut().insert(REQUEST_ID, id_header);
            }
            // Taken, not cloned: nothing outside this layer reads it.
            let forwarded = response.extensions_mut().remove::<Forwarded>();
            let waited = forwarded.as_ref().map_or(Duration::ZERO, |f| f.waited);
            metrics.observe_head(start.elapsed(), waited);
            let status = response.status();
            tracing::debug!(
                target: ON_RESPONSE,
                latency = ?start.elapsed(),
                status = status.as_u16(),
                "finished processing request"
            );
            let failure = response.extensions_mut().remove::<FailureCause>();
            let record = AccessRecord {
                start,
                metrics,
                method,
                uri,
                status: status.as_u16(),
                request_id,
                forwarded,
                failure,
                trace,
                export_to,
            };
            let span = tracing::Span::current();
            Ok(response.map(|body| {
                Body::new(TrackedBody {
                    inner: body,
                    record: Some(record),
                    bytes: 0,
                    span,
                })
            }))
        };
        Box::pin(handled.instrument(span))
    }
}

/// Targets of the request-lifecycle events, as tower-http's trace layer
/// named them (log filters written for it keep working).
const ON_REQUEST: &str = "tower_http::trace::on_request";
const ON_RESPONSE: &str = "tower_http::trace::on_response";
const ON_FAILURE: &str = "tower_http::trace::on_failure";

/// A fresh `X-Request-Id`: a random (v4) UUID. The ids must be unique, not
/// secret, so a fast thread-local generator replaces the OS's (one
/// `getrandom` syscall per request).
fn new_request_id() -> HeaderValue {
    let uuid = uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes()).into_uuid();
    let mut buf = uuid::Uuid::encode_buffer();
    HeaderValue::from_str(uuid.hyphenated().encode_lower(&mut buf))
        .unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// Refuses a declared length over the limit at once; caps a body without a
/// declared length at the limit while it is forwarded. (A declared length
/// within the limit needs no cap: the server reads exactly that many bytes.)
fn limit_body(
    request: Request,
    declared: Option<u64>,
    limit: u64,
) -> Result<Request, GatewayError> {
    match declared {
        Some(len) if len > limit => Err(GatewayError::PayloadTooLarge),
        Some(_) => Ok(request),
        None => {
            let limit = usize::try_from(limit).unwrap_or(usize::MAX);
            Ok(request.map(|body| Body::new(http_body_util::Limited::new(body, limit))))
        }
    }
}

/// The request metrics of the route `path` matches, labelled with the
/// configured entry it names, or with "" (unknown ids are not used as
/// label values, so a scanner cannot blow up the metric cardinality).
fn route_metrics(state: &SharedState, method: &http::Method, path: &str) -> Arc<RouteMetrics> {
    let matched = Matched::for_request(method, path);
    let route = matched.as_ref().map(|m| m.route);
    // The id as the router decodes it, so a request is labelled with the
    // entry it was routed to.
    let upstreams = state.upstreams();
    let upstream = matched.as_ref().and_then(|m| {
        let kind = m.route.kind()?;
        upstreams.get(kind, &m.id(path))
    });
    let cache = upstream.map_or(&state.metrics.unlabelled, |u| &u.metrics);
    cache.get(&state.metrics, route)
}

pin_project! {
    /// A response body that counts its bytes and writes the access record
    /// when it ends, fails or is dropped early.
    struct TrackedBody {
        #[pin]
        inner: Body,
        record: Option<AccessRecord>,
        bytes: u64,
        // Entered while the body is polled, so a stream's own events carry
        // the request's fields.
        span: tracing::Span,
    }

    impl PinnedDrop for TrackedBody {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(record) = this.record.take() {
                // Hyper stops polling once a sized body is complete, without
                // asking for the end; that is not a client leaving.
                let outcome = if http_body::Body::is_end_stream(&*this.inner) {
                    Outcome::Complete
                } else {
                    Outcome::ClientGone
                };
                record.finish(*this.bytes, outcome);
            }
        }
    }
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.project();
        let _entered = this.span.enter();
        let frame = ready!(this.inner.poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    *this.bytes += data.len() as u64;
                }
            }
            Some(Err(error)) => {
                tracing::error!(target: ON_FAILURE, classification = %error, "response failed");
                if let Some(record) = this.record.take() {
                    record.finish(*this.bytes, Outcome::Error);
                }
            }
            None => {
                if let Some(record) = this.record.take() {
                    record.finish(*this.bytes, Outcome::Complete);
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
