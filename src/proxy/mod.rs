//! The one forwarding path every proxied call takes: runs, cancel, continue,
//! resume and run look-ups.
//!
//! The request body is streamed to the host as it arrives; the response body is
//! streamed back as it arrives. Nothing is buffered whole (except the empty or
//! tiny body of a fanned-out call) and nothing is re-encoded. Per-phase
//! timeouts: connect (the client's `connect_timeout`), response head
//! (`first_byte_timeout`) and each gap between body chunks (`timeout`, reset on
//! every read, never a total deadline).
//!
//! Choosing the replica ([`Call`]): a new run goes to a balanced pick and
//! moves to another replica only if its connection failed before anything
//! was sent (a POST that may have reached a host is never retried). A call
//! about a run goes to the replica that owns it; when the owner is unknown,
//! cancel and run look-ups fan out to every replica.

mod body;
pub mod resolve;
pub mod run_ids;
mod sse;
pub mod transport;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, request::Parts};
use tokio::sync::mpsc;
use transport::HostBody;

use crate::error::{GatewayError, UpstreamError};
use crate::observability::trace::TraceContext;
use crate::state::SharedState;
use crate::upstream::replica::{InFlight, Replica};
use crate::upstream::{Upstream, is_host_failure};

pub use sse::SseRelay;

/// A host's answer up to its head, and how long the head took.
type Sent = Result<(http::Response<HostBody>, Duration), UpstreamError>;

/// Attached to every response that came from a host, for the access log and
/// the metrics.
#[derive(Debug, Clone)]
pub struct Forwarded {
    /// The replica that answered.
    pub replica: Arc<Replica>,
    /// Time from sending the request to the host's response head.
    pub waited: Duration,
    /// Events relayed so far (event streams only).
    events: Option<Arc<AtomicU64>>,
}

impl Forwarded {
    pub fn events(&self) -> u64 {
        self.events
            .as_ref()
            .map_or(0, |events| events.load(Ordering::Relaxed))
    }
}

/// What is being forwarded, which decides how the replica is chosen.
#[derive(Debug, Clone)]
pub enum Call {
    /// `POST /runs`: a balanced pick.
    NewRun,
    /// A call about one run. With `fan_out`, an unknown owner means asking
    /// every replica (cancel, run look-up: harmless on a non-owner);
    /// without, one pick (continue: a paused run lives in the shared
    /// database, and continuing it on two replicas would run it twice).
    Run { run_id: String, fan_out: bool },
    /// Reconnecting to a background run's stream: routed like a continue,
    /// and never cancelled by the gateway when the client leaves again.
    Resume { run_id: String },
    /// Anything else (listing a session's runs): any replica.
    Other,
}

/// Largest body a fanned-out call may carry; it is buffered once and sent
/// to every replica.
const FAN_OUT_BODY_LIMIT: usize = 64 * 1024;
/// Attempts for a new run whose connections fail before anything is sent.
const MAX_CONNECT_ATTEMPTS: usize = 3;

/// Forwards `request` for `upstream` at `path_and_query` on the host and
/// streams the answer back.
pub async fn forward(
    state: &SharedState,
    upstream: &Arc<Upstream>,
    call: Call,
    path_and_query: &str,
    request: Request<Body>,
) -> Result<Response, GatewayError> {
    let (mut parts, body) = request.into_parts();
    let facts = HeadFacts::of(&parts.headers);
    let declared_body = facts.has_body(&parts.method);
    let urlencoded = facts.urlencoded;
    let mut headers = std::mem::take(&mut parts.headers);
    if facts.hop_by_hop {
        strip_hop_by_hop(&mut headers);
    }
    // The gateway's span is the host's parent: its `traceparent` replaces
    // the caller's on every call made for this request (fan-outs clone
    // these headers; the gateway's own cancel takes the context along).
    let trace = parts.extensions.remove::<TraceContext>();
    if let Some(trace) = &trace {
        trace.apply(&mut headers);
    }
    // `forward_caller_token = false`: the caller's Authorization stays
    // here. The entry's `auth_token` goes to the host when the caller sent
    // none (or it stayed here).
    let mut bearer = facts.bearer;
    let mut authorization = facts.authorization;
    if authorization && !upstream.config.forward_caller_token {
        headers.remove(header::AUTHORIZATION);
        (authorization, bearer) = (false, None);
    }
    if !authorization
        && let Some(token) = &upstream.config.auth_token
        && let Ok(value) = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
    {
        headers.insert(header::AUTHORIZATION, value);
        bearer = Some(Arc::from(token.expose()));
    }
    let mut declared_len = facts.content_length;
    let replica_count = upstream.group.replicas.count();
    let several = replica_count > 1;
    let caller = Caller {
        bearer,
        form: (matches!(call, Call::NewRun | Call::Run { .. })
            && parts.method == Method::POST
            && urlencoded)
            .then(Arc::default),
        trace,
    };

    let owned_run = match &call {
        Call::Run { run_id, fan_out } => Some((run_id, *fan_out)),
        Call::Resume { run_id } => Some((run_id, false)),
        Call::NewRun | Call::Other => None,
    };
    if let Some((run_id, fan_out)) = owned_run
        && several
    {
        if let Some(owner) = state
            .owners
            .get(upstream.kind(), &upstream.config.id, run_id)
        {
            let in_flight = owner.begin_unbounded();
            let body = declared_body.then(|| {
                body::HeldBody::new(body).for_attempt(caller.form.as_ref(), None, declared_len)
            });
            let (method, headers) = (&parts.method, headers);
            let sent = send(upstream, method, path_and_query, headers, body, &in_flight).await;
            return finish(state, upstream, &call, &caller, sent, in_flight);
        }
        if fan_out {
            return fan_out_call(state, upstream, &parts, path_and_query, headers, body).await;
        }
    }

    let held = declared_body.then(|| body::HeldBody::new(body));
    let assign_run_id: Option<Arc<str>> = (matches!(call, Call::NewRun) && several && urlencoded)
        .then(|| uuid::Uuid::new_v4().to_string().into());
    if assign_run_id.is_some() {
        // The body grows by the appended field.
        headers.remove(header::CONTENT_LENGTH);
        declared_len = None;
    }
    let idempotent = parts.method == Method::GET;
    let mut failed: Vec<Arc<Replica>> = Vec::new();
    loop {
        let in_flight = upstream
            .group
            .replicas
            .pick(&failed)
            .map_err(|e| GatewayError::from(upstream.group.unavailable(e)))?;
        if let Some(run_id) = &assign_run_id {
            state.owners.record(
                upstream.kind(),
                &upstream.config.id,
                run_id,
                in_flight.replica(),
            );
        }
        let body = held
            .as_ref()
            .map(|h| h.for_attempt(caller.form.as_ref(), assign_run_id.clone(), declared_len));
        let last_attempt = failed.len() + 1 >= MAX_CONNECT_ATTEMPTS.min(replica_count);
        let attempt_headers = if last_attempt {
            std::mem::take(&mut headers)
        } else {
            headers.clone()
        };
        let sent = send(
            upstream,
            &parts.method,
            path_and_query,
            attempt_headers,
            body,
            &in_flight,
        )
        .await;
        let Err(error) = &sent else {
            return finish(state, upstream, &call, &caller, sent, in_flight);
        };
        let nothing_sent = error.nothing_sent() && held.as_ref().is_none_or(|h| h.untouched());
        let may_retry = nothing_sent || (idempotent && is_host_failure(error) && failed.is_empty());
        if !may_retry || last_attempt {
            return finish(state, upstream, &call, &caller, sent, in_flight);
        }
        tracing::warn!(
            workflow = %upstream.config.id,
            replica = %in_flight.replica().base_url(),
            %error,
            "replica failed before the request was sent; trying another"
        );
        note_failure(state, &in_flight, error);
        failed.push(in_flight.replica().clone());
    }
}

/// What the gateway knows about the caller's request, for the cancels it
/// may send on the caller's behalf.
#[derive(Debug, Default)]
struct Caller {
    /// The bearer token the host got, reused for those cancels.
    bearer: Option<Arc<str>>,
    /// What a urlencoded run request said; `None` for anything the gateway
    /// cannot read as it streams (multipart), which it then never cancels.
    form: Option<Arc<body::FormFacts>>,
    /// The request's trace context, for those cancels.
    trace: Option<TraceContext>,
}

/// What forwarding needs from the caller's head, read in one pass over its
/// fields (a handful of hashed look-ups cost more than walking them).
#[derive(Debug, Default)]
struct HeadFacts {
    transfer_encoding: bool,
    /// `Content-Length` as a number, if given and valid.
    content_length: Option<u64>,
    /// Whether `Content-Length` is given and says 0.
    empty: Option<bool>,
    urlencoded: bool,
    authorization: bool,
    /// The caller's bearer token.
    bearer: Option<Arc<str>>,
    /// Any hop-by-hop field (to strip before forwarding).
    hop_by_hop: bool,
}

impl HeadFacts {
    fn of(headers: &HeaderMap) -> HeadFacts {
        let mut facts = HeadFacts::default();
        for (name, value) in headers {
            if name == header::CONTENT_LENGTH {
                let text = value.to_str().map(str::trim).unwrap_or_default();
                facts.empty = Some(text == "0");
                facts.content_length = text.parse().ok();
            } else if name == header::CONTENT_TYPE {
                facts.urlencoded = value
                    .as_bytes()
                    .starts_with(b"application/x-www-form-urlencoded");
            } else if name == header::AUTHORIZATION {
                facts.authorization = true;
                facts.bearer = value.to_str().ok().and_then(bearer_token).map(Arc::from);
            } else if is_hop_by_hop(name) {
                facts.hop_by_hop = true;
                facts.transfer_encoding |= name == header::TRANSFER_ENCODING;
            }
        }
        facts
    }

    /// Whether the caller sent a body worth streaming upstream.
    fn has_body(&self, method: &Method) -> bool {
        if self.transfer_encoding {
            return true;
        }
        match self.empty {
            Some(empty) => !empty,
            None => !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS),
        }
    }
}

/// The token of an `Authorization` value in the forms AgentOS accepts:
/// `Bearer x`, with the scheme in any case, or a bare token. Another scheme
/// (`Basic ...`) has none.
fn bearer_token(value: &str) -> Option<&str> {
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
            Some(token.trim()).filter(|t| !t.is_empty())
        }
        Some(_) => None,
        None => Some(value).filter(|v| !v.is_empty()),
    }
}

/// One request to one replica, up to its response head, which must come
/// within the workflow's `first_byte_timeout`.
async fn send(
    upstream: &Upstream,
    method: &Method,
    path_and_query: &str,
    headers: HeaderMap,
    body: Option<body::AttemptBody>,
    in_flight: &InFlight,
) -> Sent {
    let replica = in_flight.replica();
    let timeout = upstream.config.first_byte_timeout;
    let sent = Instant::now();
    let body = body.unwrap_or_else(body::AttemptBody::empty);
    let exchange = replica
        .transport
        .send(method, path_and_query, headers, body);
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(response)) => Ok((response, sent.elapsed())),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(replica.client.timeout_error(timeout).into()),
    }
}

/// Counts a failed attempt: against its replica's health and the upstream
/// metrics when the host failed, as a caller error when the caller's own
/// body did (never against the host).
fn note_failure(state: &SharedState, in_flight: &InFlight, error: &UpstreamError) {
    if note_caller_error(state, error) {
        return;
    }
    if is_host_failure(error) {
        in_flight.replica().record_failure(&error.diagnostic());
    }
    let kind = GatewayError::from(error.clone()).kind();
    state
        .metrics
        .upstream_error(in_flight.replica().base_url(), kind);
}

/// Counts `error` as the caller's own doing, if it is; says whether it was.
fn note_caller_error(state: &SharedState, error: &UpstreamError) -> bool {
    let kind = match error {
        UpstreamError::BodyTooLarge => "body_too_large",
        UpstreamError::RequestBody { hung_up: true, .. } => "hung_up",
        UpstreamError::RequestBody { .. } => "malformed_body",
        _ => return false,
    };
    state.metrics.caller_error(kind);
    true
}

/// Turns one attempt's outcome into the caller's response.
fn finish(
    state: &SharedState,
    upstream: &Arc<Upstream>,
    call: &Call,
    caller: &Caller,
    sent: Sent,
    in_flight: InFlight,
) -> Result<Response, GatewayError> {
    match sent {
        Ok((response, waited)) => Ok(respond(
            state, upstream, call, caller, response, waited, in_flight,
        )),
        Err(error) => {
            note_failure(state, &in_flight, &error);
            Err(error.into())
        }
    }
}

/// Streams the host's answer back: an event stream through the SSE relay,
/// anything else through the idle-timeout body.
fn respond(
    state: &SharedState,
    upstream: &Arc<Upstream>,
    call: &Call,
    caller: &Caller,
    response: http::Response<HostBody>,
    waited: Duration,
    in_flight: InFlight,
) -> Response {
    let (mut head, host_body) = response.into_parts();
    let status = head.status;
    let replica = in_flight.replica().clone();
    if status.is_server_error() {
        replica.record_failure(&format!("answered {status}"));
    } else {
        replica.record_success();
    }
    let mut forwarded = Forwarded {
        replica,
        waited,
        events: None,
    };
    let mut headers = std::mem::take(&mut head.headers);
    strip_hop_by_hop(&mut headers);
    if !http_body::Body::is_end_stream(&host_body) {
        // The caller's framing is hyper's to write, from what the body
        // yields (its exact length when the host gave one). An answer
        // without a body (HEAD, 204, 304) keeps the host's length.
        headers.remove(header::CONTENT_LENGTH);
    }
    let is_event_stream = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/event-stream"));
    // Owners are worth learning only where there is a choice of replica:
    // from a new run, and from a continue (which, with `fork=true`, goes on
    // under a new run id on the replica that answered).
    let learn_owner = matches!(call, Call::NewRun | Call::Run { fan_out: false, .. })
        && upstream.group.replicas.count() > 1;

    let body = if is_event_stream {
        // Tell proxies in front of us not to buffer the stream (agno #10077).
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        headers.insert(
            HeaderName::from_static("x-accel-buffering"),
            HeaderValue::from_static("no"),
        );
        let relay = SseRelay::new(
            host_body.into_stream(),
            sse::RelayContext {
                state: state.clone(),
                upstream: upstream.clone(),
                in_flight,
                events: forwarded.events.insert(Arc::default()).clone(),
                learn_owner,
                bearer: caller.bearer.clone(),
                trace: caller.trace.clone(),
                // Only a run the caller started in the foreground is the
                // gateway's to cancel; never a background run or a resume.
                cancellable: match call {
                    Call::NewRun | Call::Run { .. } => caller.form.clone(),
                    Call::Resume { .. } | Call::Other => None,
                },
            },
        );
        Body::from_stream(relay.into_stream())
    } else {
        let learning = learn_owner.then(|| body::OwnerLearning {
            state: state.clone(),
            upstream: upstream.clone(),
            scanner: run_ids::JsonIdScanner::new(),
        });
        Body::new(body::PlainBody::new(
            host_body,
            upstream.config.timeout,
            in_flight,
            learning,
        ))
    };
    let mut out = Response::new(body);
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    out.extensions_mut().insert(forwarded);
    out
}

/// Reads a caller's whole body, up to `limit` bytes; a failure is the
/// caller's (counted as such), never a host's.
pub async fn read_caller_body(
    state: &SharedState,
    body: Body,
    limit: usize,
) -> Result<Bytes, GatewayError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let error = UpstreamError::from(&body::CallerBodyError::of(&e));
        note_caller_error(state, &error);
        GatewayError::from(error)
    })
}

/// Sends a call about a run whose owner is unknown to every replica and
/// answers with the first success. The calls that lose the race still run to
/// completion in the background, so a cancel reaches the owner wherever it is.
async fn fan_out_call(
    state: &SharedState,
    upstream: &Arc<Upstream>,
    parts: &Parts,
    path_and_query: &str,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, GatewayError> {
    let body = read_caller_body(state, body, FAN_OUT_BODY_LIMIT).await?;
    let replicas = upstream.group.replicas.all();
    let (tx, mut rx) = mpsc::channel(replicas.len().max(1));
    for replica in replicas.iter() {
        let in_flight = replica.begin_unbounded();
        let (tx, upstream, method, path, headers, body) = (
            tx.clone(),
            upstream.clone(),
            parts.method.clone(),
            path_and_query.to_owned(),
            headers.clone(),
            body.clone(),
        );
        state.background.spawn(async move {
            let body = (!body.is_empty()).then(|| body::AttemptBody::full(body));
            let sent = send(&upstream, &method, &path, headers, body, &in_flight).await;
            let _ = tx.send((sent, in_flight)).await;
        });
    }
    drop(tx);
    tracing::debug!(workflow = %upstream.config.id, replicas = replicas.len(), "run owner unknown; fanning out");
    let call = Call::Other;
    let caller = Caller::default();
    let mut fallback = None;
    while let Some((sent, in_flight)) = rx.recv().await {
        match &sent {
            Ok((response, _)) if response.status().is_success() => {
                return finish(state, upstream, &call, &caller, sent, in_flight);
            }
            // A host's own answer (404 Run not found) beats a transport error.
            Ok(_) => {
                if let Some((Err(error), replaced)) = fallback.replace((sent, in_flight)) {
                    note_failure(state, &replaced, &error);
                }
            }
            Err(error) => match fallback {
                None => fallback = Some((sent, in_flight)),
                Some(_) => note_failure(state, &in_flight, error),
            },
        }
    }
    match fallback {
        Some((sent, in_flight)) => finish(state, upstream, &call, &caller, sent, in_flight),
        None => {
            Err(GatewayError::from(upstream.group.unavailable(
                crate::upstream::replica::PickError::NoReplicas,
            )))
        }
    }
}

/// Headers that describe one hop only (RFC 9110 §7.6.1) and must not be
/// forwarded. `content-length` stays: the body is streamed unchanged, so the
/// length still holds and the host is not forced onto chunked framing.
/// `host` stays too: [`send`] replaces it (in place) with the host's own.
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
    )
}

/// Removes hop-by-hop headers from `headers`, including any that the
/// `Connection` header names, keeping the order of the rest. A map without
/// any (most requests and answers) is left as it is: copying every map cost
/// several allocations per request on the hot path.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| is_hop_by_hop(name))
        .cloned()
        .collect();
    if doomed.is_empty() {
        return;
    }
    doomed.extend(
        headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok()),
    );
    let all = std::mem::take(headers);
    headers.reserve(all.len());
    let mut current: Option<HeaderName> = None;
    for (name, value) in all {
        // Iterating a map by value names each header once, then `None` for
        // its further values.
        if let Some(name) = name {
            current = Some(name);
        }
        if let Some(name) = &current
            && !doomed.contains(name)
        {
            headers.append(name.clone(), value);
        }
    }
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
        strip_hop_by_hop(&mut h);
        let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["host", "authorization", "x-request-id"]);
        // Nothing to strip: the map is left alone.
        let before = h.clone();
        strip_hop_by_hop(&mut h);
        assert_eq!(h, before);
    }

    #[test]
    fn body_detection() {
        let has_body = |method, h: &HeaderMap| HeadFacts::of(h).has_body(method);
        let mut h = HeaderMap::new();
        assert!(!has_body(&Method::GET, &h));
        assert!(has_body(&Method::POST, &h));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        assert!(!has_body(&Method::POST, &h));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("12"));
        assert!(has_body(&Method::POST, &h));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        assert!(has_body(&Method::GET, &h));
    }

    #[test]
    fn head_facts_are_read_in_one_pass() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static(" 12 "));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded; charset=utf-8"),
        );
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer tok"),
        );
        let facts = HeadFacts::of(&h);
        assert_eq!(facts.content_length, Some(12));
        assert!(facts.urlencoded && facts.authorization && !facts.hop_by_hop);
        assert_eq!(facts.bearer.as_deref(), Some("tok"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic eA=="),
        );
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        let facts = HeadFacts::of(&h);
        assert!(facts.authorization && facts.bearer.is_none() && facts.hop_by_hop);
    }

    #[test]
    fn bearer_tokens_in_every_form_agentos_accepts() {
        assert_eq!(bearer_token("Bearer tok"), Some("tok"));
        assert_eq!(bearer_token("bearer tok"), Some("tok"));
        assert_eq!(bearer_token("BEARER  tok"), Some("tok"));
        assert_eq!(bearer_token("tok"), Some("tok"));
        assert_eq!(bearer_token("Basic eA=="), None);
        assert_eq!(bearer_token(""), None);
        assert_eq!(bearer_token("Bearer "), None);
    }
}
