//! The Server-Sent-Events relay: passes the host's event stream through byte
//! for byte, chunk by chunk, and never cuts it silently.
//!
//! The relay looks at each chunk only enough to know two things: whether the
//! bytes sent so far end on an event boundary (a blank line), and the ids in
//! the first event (`run_id`, `session_id`, ...). If the host dies, stalls past
//! the idle timeout, or the stream breaks, the relay closes any half-sent event
//! and appends one well-formed AgentOS `WorkflowError` event carrying those
//! ids, so agno's client ends with an error instead of a truncated stream.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};

use super::RelayItem;
use crate::client::{AgentOsClient, ClientError};

/// Relays one upstream event stream.
pub struct SseRelay {
    upstream: BoxStream<'static, reqwest::Result<Bytes>>,
    idle: Duration,
    client: AgentOsClient,
    gateway_id: String,
    /// Consecutive `\n` at the end of what was sent (`\r` ignored): two or
    /// more means the output ends on an event boundary.
    trailing_newlines: u8,
    bytes_sent: u64,
    events: u64,
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
        idle: Duration,
        client: AgentOsClient,
        gateway_id: String,
    ) -> Self {
        SseRelay {
            upstream: upstream.boxed(),
            idle,
            client,
            gateway_id,
            trailing_newlines: 2,
            bytes_sent: 0,
            events: 0,
            ids: None,
            finished: false,
        }
    }

    /// The relayed body: upstream chunks as they are, then at most one
    /// trailing error event.
    pub fn into_stream(self) -> impl Stream<Item = RelayItem> + Send + 'static {
        futures::stream::unfold(Some(self), |relay| async move {
            let mut relay = relay?;
            match tokio::time::timeout(relay.idle, relay.upstream.next()).await {
                Ok(Some(Ok(chunk))) => {
                    relay.observe(&chunk);
                    Some((Ok(chunk), Some(relay)))
                }
                Ok(None) => {
                    relay.finished = true;
                    tracing::debug!(
                        workflow = %relay.gateway_id,
                        events = relay.events,
                        bytes = relay.bytes_sent,
                        "event stream completed"
                    );
                    None
                }
                Ok(Some(Err(e))) => {
                    let error = relay.client.classify(&e, relay.idle);
                    Some((Ok(relay.fail(&error)), None))
                }
                Err(_) => {
                    let error = relay.client.timeout_error(relay.idle);
                    Some((Ok(relay.fail(&error)), None))
                }
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
        self.events += count_event_ends(chunk);
        if self.ids.is_none() {
            self.ids = first_data_ids(chunk);
        }
    }

    /// Ends the stream with a `WorkflowError` event, closing a half-sent
    /// event first.
    fn fail(&mut self, error: &ClientError) -> Bytes {
        self.finished = true;
        tracing::warn!(
            workflow = %self.gateway_id,
            events = self.events,
            bytes = self.bytes_sent,
            %error,
            "event stream from host ended abnormally; sent WorkflowError"
        );
        let ids = self.ids.take().unwrap_or_default();
        let message = error.to_string();
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
        if !self.finished {
            // The caller went away mid-stream: dropping `upstream` closes the
            // host connection, which AgentOS treats as a cancel.
            tracing::info!(
                workflow = %self.gateway_id,
                events = self.events,
                bytes = self.bytes_sent,
                "client disconnected mid-stream; upstream request dropped"
            );
        }
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
        let client = AgentOsClient::new(
            &url::Url::parse("http://127.0.0.1:9").unwrap(),
            Duration::from_secs(1),
        )
        .unwrap();
        SseRelay::new(
            futures::stream::empty(),
            Duration::from_secs(1),
            client,
            "wf".into(),
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
        let tail = r.fail(&error());
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
        let tail = r.fail(&error());
        assert!(tail.starts_with(b"\n\nevent: WorkflowError\n"));
        let mut r = relay();
        r.observe(b"event: StepProgress\ndata: {}\n");
        assert!(r.fail(&error()).starts_with(b"\nevent: WorkflowError\n"));
        let mut r = relay();
        r.observe(b"event: StepProgress\ndata: {}\n");
        r.observe(b"\n");
        assert!(r.fail(&error()).starts_with(b"event: WorkflowError\n"));
    }

    #[test]
    fn ids_come_from_the_first_data_line() {
        let ids = first_data_ids(b"event: X\ndata: {\"run_id\":\"r1\",\"other\":[1]}\n\n").unwrap();
        assert_eq!(ids.run_id.as_deref(), Some("r1"));
        assert!(first_data_ids(b"event: X\ndata: {\"run_id\"").is_none());
    }
}
