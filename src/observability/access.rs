//! The access layer: one log line and the request metrics per request,
//! written when the response body ends (so streams are measured whole), as a
//! tower middleware around every route.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Frame, SizeHint};
use pin_project_lite::pin_project;

use super::metrics::{RequestLabels, RouteLabels};
use crate::layers::REQUEST_ID;
use crate::proxy::Forwarded;
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
    state: SharedState,
    start: Instant,
    labels: RouteLabels,
    method: http::Method,
    path: String,
    status: u16,
    request_id: String,
    forwarded: Option<Forwarded>,
}

impl AccessRecord {
    fn finish(self, bytes: u64, outcome: Outcome) {
        let elapsed = self.start.elapsed();
        let metrics = &self.state.metrics;
        metrics
            .requests
            .get_or_create(&RequestLabels {
                workflow: self.labels.workflow.clone(),
                route: self.labels.route.clone(),
                status: self.status,
            })
            .inc();
        metrics
            .duration
            .get_or_create(&self.labels)
            .observe(elapsed.as_secs_f64());
        let host = self.forwarded.as_ref().map_or("", |f| f.replica.base_url());
        let events = self.forwarded.as_ref().map_or(0, Forwarded::events);
        let duration_ms = elapsed.as_secs_f64() * 1000.0;
        // Probes arrive every few seconds from every load balancer; keep them
        // out of the default log level.
        let quiet = matches!(
            self.labels.route.as_str(),
            "/health" | "/ready" | "/metrics"
        );
        macro_rules! access {
            ($level:ident) => {
                tracing::$level!(
                    target: "access",
                    request_id = %self.request_id,
                    method = %self.method,
                    path = %self.path,
                    workflow = %self.labels.workflow,
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
        if quiet {
            access!(debug);
        } else {
            access!(info);
        }
    }
}

/// The middleware: notes the start, lets the request through, then wraps the
/// response body so the record is written when it ends.
pub async fn track(State(state): State<SharedState>, request: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let workflow = workflow_label(&state, request.uri().path());
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let request_id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();

    let response = next.run(request).await;

    let forwarded = response.extensions().get::<Forwarded>().cloned();
    let labels = RouteLabels { workflow, route };
    let waited = forwarded.as_ref().map_or(Duration::ZERO, |f| f.waited);
    state.metrics.observe_head(&labels, start.elapsed(), waited);
    let record = AccessRecord {
        state,
        start,
        labels,
        method,
        path,
        status: response.status().as_u16(),
        request_id,
        forwarded,
    };
    response.map(|body| {
        Body::new(TrackedBody {
            inner: body,
            record: Some(record),
            bytes: 0,
        })
    })
}

/// The configured workflow a path names, or "" (unknown ids are not used as
/// label values, so a scanner cannot blow up the metric cardinality).
fn workflow_label(state: &SharedState, path: &str) -> String {
    path.strip_prefix("/workflows/")
        .map(|rest| rest.split('/').next().unwrap_or(""))
        .filter(|id| state.upstreams.get(id).is_some())
        .unwrap_or("")
        .to_owned()
}

pin_project! {
    /// A response body that counts its bytes and writes the access record
    /// when it ends, fails or is dropped early.
    struct TrackedBody {
        #[pin]
        inner: Body,
        record: Option<AccessRecord>,
        bytes: u64,
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
        let frame = ready!(this.inner.poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    *this.bytes += data.len() as u64;
                }
            }
            Some(Err(_)) => {
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
