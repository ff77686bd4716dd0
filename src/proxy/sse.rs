//! The Server-Sent-Events relay: passes the host's event stream through byte
//! for byte, chunk by chunk, and never cuts it silently.
//!
//! The relay looks at each chunk only enough to know whether the bytes sent so
//! far end on an event boundary (a blank line) and to read the ids of the
//! first event (`run_id`, `session_id`, ...), which also tells the gateway
//! which replica owns the run. When the stream cannot go on (the host died,
//! no chunk within `timeout`, `max_stream_duration` reached, the drain
//! deadline passed) the relay closes any half-sent event and appends one
//! well-formed AgentOS error event of the entry's kind (`RunError` for an
//! agent, `TeamRunError` for a team, `WorkflowError`), so agno's client ends with an
//! error instead of a truncated stream; if the host is still there, the run
//! is cancelled on it, since nobody will read the rest. A client that goes
//! away gets its run cancelled too (`cancel_on_disconnect`).
//!
//! With `heartbeat` set, a `: ping` comment is written after that long
//! without output, only at an event boundary; agno's client skips comment
//! lines, and idle load-balancer timeouts no longer kill long model calls.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::time::{Instant, Sleep, sleep_until};
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::RelayItem;
use super::body::FormFacts;
use crate::client::ClientError;
use crate::config::EntryKind;
use crate::error::GatewayError;
use crate::observability::trace::TraceContext;
use crate::state::SharedState;
use crate::upstream::Upstream;
use crate::upstream::replica::InFlight;

/// What a relay needs besides the byte stream.
pub struct RelayContext {
    pub state: SharedState,
    pub upstream: Arc<Upstream>,
    /// The replica's slot, held for as long as the stream is open.
    pub in_flight: InFlight,
    /// Shared with the access log: events relayed so far.
    pub events: Arc<AtomicU64>,
    /// Record the first event's run as owned by this replica.
    pub learn_owner: bool,
    /// The credentials the run was started with, reused for its cancel.
    pub bearer: Option<Arc<str>>,
    /// The request's trace context: the cancel is part of its trace.
    pub trace: Option<TraceContext>,
    /// Set when the gateway may cancel the run itself: it can tell, once the
    /// request body went by, whether the caller started it in the foreground.
    pub cancellable: Option<Arc<FormFacts>>,
}

/// Why the relay ended a stream itself.
enum Cut {
    /// The host broke the connection: the run is gone with it.
    HostFailed(ClientError),
    /// No chunk within `timeout`.
    Idle(ClientError),
    /// `max_stream_duration` reached.
    TooLong(Duration),
    /// The drain deadline passed.
    Shutdown,
}

/// Relays one upstream event stream.
pub struct SseRelay {
    upstream: BoxStream<'static, Result<Bytes, ClientError>>,
    ctx: RelayContext,
    /// The drain deadline; registered once, not once per chunk.
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    /// Fires `timeout` after the last upstream chunk. Timers are moved
    /// lazily: a chunk only notes its time, and a timer that fires early is
    /// re-armed from that note. Resetting both timers on every chunk was a
    /// measurable share of the relay's work per event.
    idle: Pin<Box<Sleep>>,
    last_chunk: Instant,
    /// Fires `heartbeat` after the last byte written, pings included.
    heartbeat: Option<Pin<Box<Sleep>>>,
    last_output: Instant,
    /// Fixed at the start, when `max_stream_duration` is set.
    deadline: Option<Pin<Box<Sleep>>>,
    /// Consecutive `\n` at the end of what was sent (`\r` ignored): two or
    /// more means the output ends on an event boundary.
    trailing_newlines: u8,
    bytes_sent: u64,
    ids: Option<EventIds>,
    finished: bool,
}

/// The identifying fields of the stream's first event (an agent's
/// `RunStarted` names the agent, a team's `TeamRunStarted` the team).
#[derive(Debug, Default, Deserialize)]
struct EventIds {
    agent_id: Option<String>,
    agent_name: Option<String>,
    team_id: Option<String>,
    team_name: Option<String>,
    workflow_id: Option<String>,
    workflow_name: Option<String>,
    session_id: Option<String>,
    run_id: Option<String>,
}

/// agno's `RunErrorEvent`, `TeamRunErrorEvent` or `WorkflowErrorEvent`, with
/// their field order: only the entry's kind's fields are set. Agents and
/// teams carry the message in `content`, workflows in `error`.
#[derive(Serialize)]
struct ErrorEvent<'a> {
    created_at: u64,
    event: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    agent_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    agent_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    team_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    team_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    workflow_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    workflow_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    run_id: Option<&'a str>,
    nested_depth: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    error_type: &'static str,
    error_id: &'static str,
}

impl<'a> ErrorEvent<'a> {
    /// The error event of `kind`, with the ids of the stream's first event.
    fn new(kind: EntryKind, ids: &'a EventIds, message: &'a str) -> Self {
        let (agent, team, workflow) = (
            kind == EntryKind::Agent,
            kind == EntryKind::Team,
            kind == EntryKind::Workflow,
        );
        let ours = |on: bool, field: &'a Option<String>| field.as_deref().filter(|_| on);
        ErrorEvent {
            created_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            event: error_event_name(kind),
            agent_id: ours(agent, &ids.agent_id),
            agent_name: ours(agent, &ids.agent_name),
            team_id: ours(team, &ids.team_id),
            team_name: ours(team, &ids.team_name),
            workflow_id: ours(workflow, &ids.workflow_id),
            workflow_name: ours(workflow, &ids.workflow_name),
            session_id: ids.session_id.as_deref(),
            run_id: ids.run_id.as_deref(),
            nested_depth: 0,
            content: Some(message).filter(|_| !workflow),
            error: Some(message).filter(|_| workflow),
            error_type: "remote_server_unavailable_error",
            error_id: "remote_server_unavailable_error",
        }
    }
}

/// The name of the error event agno's clients expect from a `kind` stream
/// (an agent's for anything else that streams).
fn error_event_name(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::Agent | EntryKind::Database => "RunError",
        EntryKind::Team => "TeamRunError",
        EntryKind::Workflow => "WorkflowError",
    }
}

const PING: &[u8] = b": ping\n\n";

impl SseRelay {
    pub fn new(
        upstream: impl Stream<Item = Result<Bytes, ClientError>> + Send + 'static,
        ctx: RelayContext,
    ) -> Self {
        ctx.state.metrics.active_streams.inc();
        let config = &ctx.upstream.config;
        let now = Instant::now();
        SseRelay {
            upstream: upstream.boxed(),
            shutdown: Box::pin(ctx.state.end_streams.clone().cancelled_owned()),
            idle: Box::pin(sleep_until(now + config.timeout)),
            last_chunk: now,
            heartbeat: config.heartbeat.map(|h| Box::pin(sleep_until(now + h))),
            last_output: now,
            deadline: config
                .max_stream_duration
                .map(|d| Box::pin(sleep_until(now + d))),
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

    /// The relayed body: upstream chunks as they are (with pings between
    /// events when configured), then at most one trailing error event.
    pub fn into_stream(self) -> impl Stream<Item = RelayItem> + Send + 'static {
        futures::stream::unfold(Some(self), |relay| async move {
            let mut relay = relay?;
            match relay.next_output().await {
                Ok(Some(chunk)) => Some((Ok(chunk), Some(relay))),
                Ok(None) => {
                    relay.finished = true;
                    None
                }
                Err(cut) => Some((Ok(relay.fail(cut)), None)),
            }
        })
    }

    /// The next bytes to write: an upstream chunk or a ping; `None` at the
    /// clean end of the stream.
    async fn next_output(&mut self) -> Result<Option<Bytes>, Cut> {
        enum Woke {
            Shutdown,
            Deadline,
            Upstream(Option<Result<Bytes, ClientError>>),
            Idle,
            Heartbeat,
        }
        loop {
            let at_boundary = self.trailing_newlines >= 2;
            let woke = tokio::select! {
                biased;
                () = self.shutdown.as_mut() => Woke::Shutdown,
                () = fire(self.deadline.as_mut()) => Woke::Deadline,
                next = self.upstream.next() => Woke::Upstream(next),
                () = self.idle.as_mut() => Woke::Idle,
                () = fire(self.heartbeat.as_mut()), if at_boundary => Woke::Heartbeat,
            };
            let config = &self.ctx.upstream.config;
            let client = &self.ctx.in_flight.replica().client;
            return match woke {
                Woke::Shutdown => Err(Cut::Shutdown),
                Woke::Deadline => Err(Cut::TooLong(config.max_stream_duration.unwrap_or_default())),
                Woke::Upstream(Some(Ok(chunk))) => {
                    let now = Instant::now();
                    self.last_chunk = now;
                    self.last_output = now;
                    self.observe(&chunk);
                    Ok(Some(chunk))
                }
                Woke::Upstream(None) => Ok(None),
                Woke::Upstream(Some(Err(error))) => Err(Cut::HostFailed(error)),
                Woke::Idle => {
                    let due = self.last_chunk + config.timeout;
                    if Instant::now() < due {
                        self.idle.as_mut().reset(due);
                        continue;
                    }
                    Err(Cut::Idle(client.idle_timeout_error(config.timeout)))
                }
                Woke::Heartbeat => {
                    let now = Instant::now();
                    if let (Some(sleep), Some(every)) = (self.heartbeat.as_mut(), config.heartbeat)
                    {
                        let due = self.last_output + every;
                        if now < due {
                            sleep.as_mut().reset(due);
                            continue;
                        }
                        sleep.as_mut().reset(now + every);
                    }
                    self.last_output = now;
                    Ok(Some(Bytes::from_static(PING)))
                }
            };
        }
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
            if self.ctx.learn_owner
                && let Some(run_id) = self.ids.as_ref().and_then(|i| i.run_id.as_deref())
            {
                self.ctx.state.owners.record(
                    self.ctx.upstream.kind(),
                    &self.ctx.upstream.config.id,
                    run_id,
                    self.ctx.in_flight.replica(),
                );
            }
        }
    }

    /// Ends the stream with a `WorkflowError` event, closing a half-sent
    /// event first, and cancels the run on a host that is still there.
    fn fail(&mut self, cut: Cut) -> Bytes {
        self.finished = true;
        let replica = self.ctx.in_flight.replica();
        let (message, cancel) = match &cut {
            Cut::HostFailed(error) | Cut::Idle(error) => {
                replica.record_failure(&error.diagnostic());
                let kind = GatewayError::from(error.clone()).kind();
                self.ctx
                    .state
                    .metrics
                    .upstream_error(replica.base_url(), kind);
                // The caller's message names the workflow; the host's
                // address and the cause go to the log below.
                let upstream = &self.ctx.upstream;
                let told =
                    GatewayError::from(error.clone()).for_entry(upstream.kind(), self.gateway_id());
                (told.to_string(), matches!(cut, Cut::Idle(_)))
            }
            Cut::TooLong(limit) => (
                format!(
                    "The stream reached max_stream_duration ({} seconds); the run was cancelled",
                    limit.as_secs_f64()
                ),
                true,
            ),
            Cut::Shutdown => (
                "The gateway is shutting down; the run was cancelled".to_owned(),
                true,
            ),
        };
        tracing::warn!(
            kind = %self.ctx.upstream.kind(),
            id = %self.gateway_id(),
            replica = %replica.base_url(),
            run_id = self.ids.as_ref().and_then(|i| i.run_id.as_deref()),
            events = self.ctx.events.load(Ordering::Relaxed),
            bytes = self.bytes_sent,
            reason = %message,
            cause = match &cut {
                Cut::HostFailed(error) | Cut::Idle(error) => Some(error.to_string()),
                Cut::TooLong(_) | Cut::Shutdown => None,
            },
            "ending event stream with an error event"
        );
        if cancel {
            self.cancel_run_on_host();
        }
        let ids = self.ids.take().unwrap_or_default();
        let kind = self.ctx.upstream.kind();
        let event = ErrorEvent::new(kind, &ids, &message);
        let mut out = BytesMut::with_capacity(256 + message.len());
        match self.trailing_newlines {
            0 => out.extend_from_slice(b"\n\n"),
            1 => out.extend_from_slice(b"\n"),
            _ => {}
        }
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(error_event_name(kind).as_bytes());
        out.extend_from_slice(b"\ndata: ");
        // Serialising plain strings and integers cannot fail; an empty data
        // line would still end the event cleanly.
        if let Ok(json) = serde_json::to_vec(&event) {
            out.extend_from_slice(&json);
        }
        out.extend_from_slice(b"\n\n");
        out.freeze()
    }

    /// Sends the run's cancel to the replica that runs it, tracked so the
    /// process waits for it before exiting. Background runs (and runs the
    /// gateway cannot tell apart from them) are left alone.
    fn cancel_run_on_host(&self) {
        if !self
            .ctx
            .cancellable
            .as_ref()
            .is_some_and(|f| f.foreground())
        {
            return;
        }
        let Some(run_id) = self.ids.as_ref().and_then(|i| i.run_id.clone()) else {
            return;
        };
        let session_id = self.ids.as_ref().and_then(|i| i.session_id.clone());
        let upstream = self.ctx.upstream.clone();
        let replica = self.ctx.in_flight.replica().clone();
        let bearer = self.ctx.bearer.clone();
        let mut headers = http::HeaderMap::new();
        if let Some(trace) = &self.ctx.trace {
            trace.apply(&mut headers);
        }
        self.ctx.state.background.spawn(async move {
            // Closed never: the semaphore lives as long as the replica.
            let _slot = replica.gateway_cancels.acquire().await;
            let timeout = upstream
                .config
                .first_byte_timeout
                .min(Duration::from_secs(10));
            let result = replica
                .client
                .cancel_run_at(
                    &upstream.upstream_prefix,
                    &run_id,
                    session_id.as_deref(),
                    bearer.as_deref(),
                    timeout,
                    headers,
                )
                .await;
            let (kind, id) = (upstream.kind(), &upstream.config.id);
            match result {
                Ok(()) => tracing::info!(%kind, %id, %run_id, "run cancelled on its host"),
                Err(error) => {
                    tracing::warn!(%kind, %id, %run_id, %error, "cancel on host failed")
                }
            }
        });
    }
}

impl Drop for SseRelay {
    fn drop(&mut self) {
        self.ctx.state.metrics.active_streams.dec();
        if !self.finished {
            // The caller went away mid-stream: dropping `upstream` closes the
            // host connection, and AgentOS usually cancels on that; the
            // explicit cancel makes sure, even for runs that outlive their
            // connection.
            tracing::info!(
                kind = %self.ctx.upstream.kind(),
                id = %self.gateway_id(),
                events = self.ctx.events.load(Ordering::Relaxed),
                bytes = self.bytes_sent,
                "client disconnected mid-stream; upstream request dropped"
            );
            if self.ctx.upstream.config.cancel_on_disconnect {
                self.cancel_run_on_host();
            }
        }
    }
}

/// Waits for an optional timer; never fires when there is none.
async fn fire(sleep: Option<&mut Pin<Box<Sleep>>>) {
    match sleep {
        Some(sleep) => sleep.as_mut().await,
        None => std::future::pending().await,
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

    async fn relay() -> SseRelay {
        let config = crate::config::Config::parse(
            std::path::Path::new("t.toml"),
            "[server]\nhealth_checks = false\n[[workflows]]\nid = \"wf\"\nbase_url = \"http://127.0.0.1:9\"\ncancel_on_disconnect = false\n",
            &|_| None,
        )
        .unwrap();
        let state = crate::state::AppState::new(&config).unwrap();
        let upstream = state
            .upstreams()
            .get(EntryKind::Workflow, "wf")
            .unwrap()
            .clone();
        let in_flight = upstream.group.replicas.pick(&[]).unwrap();
        SseRelay::new(
            futures::stream::empty(),
            RelayContext {
                state,
                upstream,
                in_flight,
                events: Arc::default(),
                learn_owner: false,
                bearer: None,
                trace: None,
                cancellable: None,
            },
        )
    }

    fn error() -> Cut {
        Cut::HostFailed(ClientError::Transport {
            base_url: "http://h".into(),
            reason: "connection reset".into(),
        })
    }

    #[tokio::test]
    async fn error_event_after_a_boundary_is_one_clean_event() {
        let mut r = relay().await;
        r.observe(b"event: WorkflowStarted\ndata: {\"event\":\"WorkflowStarted\",\"workflow_id\":\"w\",\"session_id\":\"s\",\"run_id\":\"r\"}\n\n");
        let tail = r.fail(error());
        let text = std::str::from_utf8(&tail).unwrap();
        assert!(text.starts_with("event: WorkflowError\ndata: {"), "{text}");
        assert!(text.ends_with("}\n\n"));
        let data: serde_json::Value =
            serde_json::from_str(text.lines().nth(1).unwrap().strip_prefix("data: ").unwrap())
                .unwrap();
        assert_eq!(data["run_id"], "r");
        assert_eq!(data["session_id"], "s");
        assert_eq!(data["event"], "WorkflowError");
        // Named by the workflow; the cause ("connection reset") and the
        // host's address are for the log.
        let message = data["error"].as_str().unwrap();
        assert!(message.contains("workflow '"), "{message}");
        assert!(!message.contains("http://"), "{message}");
    }

    #[tokio::test]
    async fn error_event_mid_event_closes_the_partial_event_first() {
        let mut r = relay().await;
        r.observe(b"event: StepProgress\ndata: {\"par");
        assert!(r.fail(error()).starts_with(b"\n\nevent: WorkflowError\n"));
        let mut r = relay().await;
        r.observe(b"event: StepProgress\ndata: {}\n");
        assert!(r.fail(error()).starts_with(b"\nevent: WorkflowError\n"));
        let mut r = relay().await;
        r.observe(b"event: StepProgress\ndata: {}\n");
        r.observe(b"\n");
        assert!(r.fail(error()).starts_with(b"event: WorkflowError\n"));
    }

    #[test]
    fn error_events_take_the_kind_s_name_and_fields() {
        let ids = first_data_ids(b"event: RunStarted\ndata: {\"agent_id\":\"a\",\"agent_name\":\"A\",\"workflow_id\":\"outer\",\"run_id\":\"r\"}\n\n").unwrap();
        let event = serde_json::to_value(ErrorEvent::new(EntryKind::Agent, &ids, "gone")).unwrap();
        assert_eq!(event["event"], "RunError");
        assert_eq!(event["agent_id"], "a");
        assert_eq!(event["content"], "gone");
        assert!(event.get("workflow_id").is_none() && event.get("error").is_none());
        let event = serde_json::to_value(ErrorEvent::new(EntryKind::Team, &ids, "gone")).unwrap();
        assert_eq!(event["event"], "TeamRunError");
        assert_eq!(event["run_id"], "r");
        let event =
            serde_json::to_value(ErrorEvent::new(EntryKind::Workflow, &ids, "gone")).unwrap();
        assert_eq!(
            (&event["event"], &event["workflow_id"], &event["error"]),
            (&"WorkflowError".into(), &"outer".into(), &"gone".into())
        );
    }

    #[test]
    fn ids_come_from_the_first_data_line() {
        let ids = first_data_ids(b"event: X\ndata: {\"run_id\":\"r1\",\"other\":[1]}\n\n").unwrap();
        assert_eq!(ids.run_id.as_deref(), Some("r1"));
        assert!(first_data_ids(b"event: X\ndata: {\"run_id\"").is_none());
    }
}
