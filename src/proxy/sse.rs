//! The Server-Sent-Events relay: passes the host's event stream through byte
//! for byte, chunk by chunk, and never cuts it silently.
//!
//! The relay looks at each chunk only enough to know two things: whether the
//! bytes sent so far end on an event boundary (a blank line), and the ids in
//! the first event (`run_id`, `session_id`, ...). If the host dies, stalls past
//! the idle timeout, or the stream breaks, the relay closes any half-sent event
//! and appends one well-formed AgentOS `WorkflowError` event carrying those
//! ids, so agno's client ends with an error instead of a truncated stream.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use http::HeaderValue;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::RelayItem;
use crate::client::ClientError;
use crate::error::GatewayError;
use crate::observability::metrics::UpstreamErrorLabels;
use crate::upstream::Upstream;

/// What a relay needs besides the byte stream.
pub struct RelayContext {
    pub upstream: Arc<Upstream>,
    /// Shared with the access log: events relayed so far.
    pub events: Arc<AtomicU64>,
    pub active_streams: Gauge,
    pub upstream_errors: Family<UpstreamErrorLabels, Counter>,
    /// Cancelled when the drain deadline passes: end the stream now.
    pub end_streams: CancellationToken,
    /// Where the host-side cancel of a cut-off run is tracked until done.
    pub background: TaskTracker,
    /// The credentials the run was started with, reused for its cancel.
    pub authorization: Option<HeaderValue>,
}

/// Why the relay ended a stream itself.
enum Cut {
    Upstream(ClientError),
    Shutdown,
}

/// Relays one upstream event stream.
pub struct SseRelay {
    upstream: BoxStream<'static, reqwest::Result<Bytes>>,
    ctx: RelayContext,
    /// Consecutive `\n` at the end of what was sent (`\r` ignored): two or
    /// more means the output ends on an event boundary.
    trailing_newlines: u8,
    bytes_sent: u64,
    ids: Option<EventIds>,
    finished: bool,
}

/// The identifying fields of the stream's first event.
#[derive(Debug, Default, Deserialize)]
struct EventIds {
    workflow_id: Option<String>,
    workflow_name: Option<String>,
    session_id: Option<String>,
    run_id: Option<String>,
}

/// agno's `WorkflowErrorEvent`, with its field order.
#[derive(Serialize)]
struct WorkflowErrorEvent<'a> {
    created_at: u64,
    event: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    workflow_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    workflow_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    run_id: Option<&'a str>,
    nested_depth: u8,
    error: &'a str,
    error_type: &'static str,
    error_id: &'static str,
}

impl SseRelay {
    pub fn new(
        upstream: impl Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
        ctx: RelayContext,
    ) -> Self {
        ctx.active_streams.inc();
        SseRelay {
            upstream: upstream.boxed(),
            ctx,
            trailing_newlines: 2,
            bytes_sent: 0,
            ids: None,
            finished: false,
        }
    }

    fn gateway_id(&self) -> &str {
        &self.ctx.upstream.config.id
    }

    /// The relayed body: upstream chunks as they are, then at most one
    /// trailing error event.
    pub fn into_stream(self) -> impl Stream<Item = RelayItem> + Send + 'static {
        futures::stream::unfold(Some(self), |relay| async move {
            let mut relay = relay?;
            let idle = relay.ctx.upstream.config.timeout;
            let next = tokio::select! {
                biased;
                _ = relay.ctx.end_streams.cancelled() => Err(Cut::Shutdown),
                next = tokio::time::timeout(idle, relay.upstream.next()) => match next {
                    Ok(Some(Ok(chunk))) => Ok(Some(chunk)),
                    Ok(None) => Ok(None),
                    Ok(Some(Err(e))) => {
                        Err(Cut::Upstream(relay.ctx.upstream.host.client.classify(&e, idle)))
                    }
                    Err(_) => Err(Cut::Upstream(relay.ctx.upstream.host.client.timeout_error(idle))),
                },
            };
            match next {
                Ok(Some(chunk)) => {
                    relay.observe(&chunk);
                    Some((Ok(chunk), Some(relay)))
                }
                Ok(None) => {
                    relay.finished = true;
                    None
                }
                Err(cut) => Some((Ok(relay.fail(cut)), None)),
            }
        })
    }

    /// Updates the boundary state and picks the ids out of the first event.
    fn observe(&mut self, chunk: &[u8]) {
        self.bytes_sent += chunk.len() as u64;
        let mut newlines = 0u8;
        let mut all_newlines = true;
        for &b in chunk.iter().rev() {
            match b {
                b'\n' => newlines = newlines.saturating_add(1),
                b'\r' => {}
                _ => {
                    all_newlines = false;
                    break;
                }
            }
        }
        self.trailing_newlines = if all_newlines {
            self.trailing_newlines.saturating_add(newlines)
        } else {
            newlines
        };
        // Counting blank-line terminators is enough for AgentOS's framing
        // (LF only, one event per chunk); it is used for logs, not routing.
        self.ctx
            .events
            .fetch_add(count_event_ends(chunk), Ordering::Relaxed);
        if self.ids.is_none() {
            self.ids = first_data_ids(chunk);
        }
    }

    /// Ends the stream with a `WorkflowError` event, closing a half-sent
    /// event first. On shutdown the run is also cancelled on the host, since
    /// nobody will read the rest of it.
    fn fail(&mut self, cut: Cut) -> Bytes {
        self.finished = true;
        let message = match &cut {
            Cut::Upstream(error) => {
                let kind = GatewayError::from(error.clone()).kind();
                self.ctx
                    .upstream_errors
                    .get_or_create(&UpstreamErrorLabels {
                        host: self.ctx.upstream.host.client.base_url().to_owned(),
                        kind: kind.to_owned(),
                    })
                    .inc();
                tracing::warn!(
                    workflow = %self.gateway_id(),
                    events = self.ctx.events.load(Ordering::Relaxed),
                    bytes = self.bytes_sent,
                    %error,
                    "event stream from host ended abnormally; sent WorkflowError"
                );
                error.to_string()
            }
            Cut::Shutdown => {
                tracing::warn!(
                    workflow = %self.gateway_id(),
                    run_id = self.ids.as_ref().and_then(|i| i.run_id.as_deref()),
                    "drain deadline passed; ending the stream and cancelling its run"
                );
                "The gateway is shutting down; the run was cancelled".to_owned()
            }
        };
        let ids = self.ids.take().unwrap_or_default();
        if matches!(cut, Cut::Shutdown)
            && let Some(run_id) = &ids.run_id
        {
            let cancel = cancel_on_host(
                self.ctx.upstream.clone(),
                run_id.clone(),
                ids.session_id.clone(),
                self.ctx.authorization.clone(),
            );
            self.ctx.background.spawn(cancel);
        }
        let event = WorkflowErrorEvent {
            created_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            event: "WorkflowError",
            workflow_id: ids.workflow_id.as_deref(),
            workflow_name: ids.workflow_name.as_deref(),
            session_id: ids.session_id.as_deref(),
            run_id: ids.run_id.as_deref(),
            nested_depth: 0,
            error: &message,
            error_type: "remote_server_unavailable_error",
            error_id: "remote_server_unavailable_error",
        };
        let mut out = BytesMut::with_capacity(256 + message.len());
        match self.trailing_newlines {
            0 => out.extend_from_slice(b"\n\n"),
            1 => out.extend_from_slice(b"\n"),
            _ => {}
        }
        out.extend_from_slice(b"event: WorkflowError\ndata: ");
        // Serialising plain strings and integers cannot fail; an empty data
        // line would still end the event cleanly.
        if let Ok(json) = serde_json::to_vec(&event) {
            out.extend_from_slice(&json);
        }
        out.extend_from_slice(b"\n\n");
        out.freeze()
    }
}

impl Drop for SseRelay {
    fn drop(&mut self) {
        self.ctx.active_streams.dec();
        if !self.finished {
            // The caller went away mid-stream: dropping `upstream` closes the
            // host connection, which AgentOS treats as a cancel.
            tracing::info!(
                workflow = %self.gateway_id(),
                events = self.ctx.events.load(Ordering::Relaxed),
                bytes = self.bytes_sent,
                "client disconnected mid-stream; upstream request dropped"
            );
        }
    }
}

/// `POST .../runs/{run_id}/cancel` on the host that runs the run.
async fn cancel_on_host(
    upstream: Arc<Upstream>,
    run_id: String,
    session_id: Option<String>,
    authorization: Option<HeaderValue>,
) {
    use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
    /// Characters that cannot stand in a path segment or a query value.
    const UNSAFE: &AsciiSet = &CONTROLS
        .add(b' ')
        .add(b'"')
        .add(b'#')
        .add(b'%')
        .add(b'&')
        .add(b'+')
        .add(b'/')
        .add(b'<')
        .add(b'=')
        .add(b'>')
        .add(b'?')
        .add(b'`')
        .add(b'{')
        .add(b'}');
    let client = &upstream.host.client;
    let mut path = format!(
        "{}/runs/{}/cancel",
        upstream.upstream_prefix,
        utf8_percent_encode(&run_id, UNSAFE)
    );
    if let Some(session_id) = &session_id {
        path.push_str("?session_id=");
        path.extend(utf8_percent_encode(session_id, UNSAFE));
    }
    let mut request = client
        .http()
        .post(client.url(&path))
        .header(http::header::CONTENT_LENGTH, "0");
    if let Some(value) = authorization {
        request = request.header(http::header::AUTHORIZATION, value);
    }
    let timeout = upstream.config.timeout.min(Duration::from_secs(10));
    match tokio::time::timeout(timeout, request.send()).await {
        Ok(Ok(response)) if response.status().is_success() => {
            tracing::info!(workflow = %upstream.config.id, %run_id, "run cancelled on host");
        }
        Ok(Ok(response)) => {
            tracing::warn!(workflow = %upstream.config.id, %run_id, status = %response.status(), "host refused the cancel");
        }
        Ok(Err(e)) => {
            tracing::warn!(workflow = %upstream.config.id, %run_id, error = %client.classify(&e, timeout), "cancel failed");
        }
        Err(_) => tracing::warn!(workflow = %upstream.config.id, %run_id, "cancel timed out"),
    }
}

fn count_event_ends(chunk: &[u8]) -> u64 {
    chunk.windows(2).filter(|w| w == b"\n\n").count() as u64
}

/// Parses the ids from the first complete `data: ` line in `chunk`.
fn first_data_ids(chunk: &[u8]) -> Option<EventIds> {
    let mut rest = chunk;
    loop {
        let line_end = rest.iter().position(|&b| b == b'\n')?;
        let line = &rest[..line_end];
        if let Some(json) = line.strip_prefix(b"data: ") {
            return serde_json::from_slice(json).ok();
        }
        rest = &rest[line_end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay() -> SseRelay {
        let config = crate::config::Config::parse(
            std::path::Path::new("t.toml"),
            "[[workflows]]\nid = \"wf\"\nbase_url = \"http://127.0.0.1:9\"\n",
            &|_| None,
        )
        .unwrap();
        let upstreams = crate::upstream::Upstreams::new(&config).unwrap();
        let metrics = crate::observability::metrics::Metrics::new();
        SseRelay::new(
            futures::stream::empty(),
            RelayContext {
                upstream: upstreams.get("wf").unwrap().clone(),
                events: Arc::default(),
                active_streams: metrics.active_streams.clone(),
                upstream_errors: metrics.upstream_errors.clone(),
                end_streams: CancellationToken::new(),
                background: TaskTracker::new(),
                authorization: None,
            },
        )
    }

    fn error() -> ClientError {
        ClientError::Transport {
            base_url: "http://h".into(),
            reason: "connection reset".into(),
        }
    }

    #[test]
    fn error_event_after_a_boundary_is_one_clean_event() {
        let mut r = relay();
        r.observe(b"event: WorkflowStarted\ndata: {\"event\":\"WorkflowStarted\",\"workflow_id\":\"w\",\"session_id\":\"s\",\"run_id\":\"r\"}\n\n");
        let tail = r.fail(Cut::Upstream(error()));
        let text = std::str::from_utf8(&tail).unwrap();
        assert!(text.starts_with("event: WorkflowError\ndata: {"), "{text}");
        assert!(text.ends_with("}\n\n"));
        let data: serde_json::Value =
            serde_json::from_str(text.lines().nth(1).unwrap().strip_prefix("data: ").unwrap())
                .unwrap();
        assert_eq!(data["run_id"], "r");
        assert_eq!(data["session_id"], "s");
        assert_eq!(data["event"], "WorkflowError");
        assert!(data["error"].as_str().unwrap().contains("connection reset"));
    }

    #[test]
    fn error_event_mid_event_closes_the_partial_event_first() {
        let mut r = relay();
        r.observe(b"event: StepProgress\ndata: {\"par");
        let tail = r.fail(Cut::Upstream(error()));
        assert!(tail.starts_with(b"\n\nevent: WorkflowError\n"));
        let mut r = relay();
        r.observe(b"event: StepProgress\ndata: {}\n");
        assert!(
            r.fail(Cut::Upstream(error()))
                .starts_with(b"\nevent: WorkflowError\n")
        );
        let mut r = relay();
        r.observe(b"event: StepProgress\ndata: {}\n");
        r.observe(b"\n");
        assert!(
            r.fail(Cut::Upstream(error()))
                .starts_with(b"event: WorkflowError\n")
        );
    }

    #[test]
    fn ids_come_from_the_first_data_line() {
        let ids = first_data_ids(b"event: X\ndata: {\"run_id\":\"r1\",\"other\":[1]}\n\n").unwrap();
        assert_eq!(ids.run_id.as_deref(), Some("r1"));
        assert!(first_data_ids(b"event: X\ndata: {\"run_id\"").is_none());
    }
}
