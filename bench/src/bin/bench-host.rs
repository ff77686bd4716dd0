//! bench-host: a fast fake AgentOS host for the benchmarks. It must never be
//! the bottleneck, so every answer is prebuilt bytes on plain hyper HTTP/1.
//!
//! It answers what agno's `RemoteWorkflow` and the contenders need, in
//! AgentOS's shapes: `GET /health`, `/ready`, `/config`, `/workflows`,
//! `/workflows/{id}`, and `POST /workflows/{id}/runs`:
//! - `stream=false`: a `WorkflowRunOutput`-like JSON document;
//! - `stream=true` (the default, as on AgentOS): an SSE stream of `events`
//!   events `gap_us` apart (form fields, defaults from the command line), each
//!   its own chunk, each stamped with `"sent_ns"` (wall clock, ns) when it is
//!   written, so the client can measure per-event forwarding delay;
//! - workflow `idle`, streamed: one event, then the stream stays open until
//!   the client leaves (or `--idle-max-secs`);
//! - `POST /agents/bench-agent/runs` with `stream=false`: an agent's
//!   `RunOutput`-like JSON document;
//! - `GET /sessions` (database `bench-db`, which `/config` reports): a page
//!   of ten sessions, as AgentOS lists them.
//!
//! Listens on `--listeners` ports (one per contender, so connection churn on
//! one never exhausts ports for another), each with a backlog of 4096, and
//! prints `LISTEN <addr>` for each on stdout.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use agentos_gateway_bench::{IDLE_WORKFLOW, RUN_WORKFLOW, listen, now_ns};
use bytes::Bytes;
use clap::Parser;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;

#[derive(Parser)]
struct Args {
    /// First address to listen on; further listeners take the next ports
    /// (port 0: each gets an ephemeral port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// How many listeners.
    #[arg(long, default_value_t = 1)]
    listeners: usize,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Events per stream when the request does not say.
    #[arg(long, default_value_t = 200)]
    events: u32,
    /// Microseconds between events when the request does not say.
    #[arg(long, default_value_t = 5000)]
    gap_us: u64,
    /// Longest an idle stream is held open.
    #[arg(long, default_value_t = 900)]
    idle_max_secs: u64,
}

#[derive(Clone, Copy)]
struct Defaults {
    events: u32,
    gap: Duration,
    idle_max: Duration,
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    agentos_gateway_bench::raise_nofile();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    let defaults = Defaults {
        events: args.events,
        gap: Duration::from_micros(args.gap_us),
        idle_max: Duration::from_secs(args.idle_max_secs),
    };
    runtime.block_on(async move {
        let mut tasks = Vec::new();
        for i in 0..args.listeners.max(1) {
            let mut addr = args.listen;
            if addr.port() != 0 {
                addr.set_port(addr.port() + u16::try_from(i).unwrap_or(0));
            }
            let listener = listen(addr)?;
            println!("LISTEN {}", listener.local_addr()?);
            tasks.push(tokio::spawn(accept_loop(listener, defaults)));
        }
        // The orchestrator reads the addresses, then this process runs until
        // it is killed.
        use std::io::Write;
        std::io::stdout().flush()?;
        for task in tasks {
            let _ = task.await;
        }
        Ok(())
    })
}

async fn accept_loop(listener: tokio::net::TcpListener, defaults: Defaults) {
    let sessions = sessions_page();
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                eprintln!("bench-host: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let sessions = sessions.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req| handle(req, defaults, sessions.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

type Body = BoxBody<Bytes, Infallible>;

fn full(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Body> {
    let mut response = Response::new(Full::new(body).boxed());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn json(body: Bytes) -> Response<Body> {
    full(StatusCode::OK, "application/json", body)
}

const HEALTH: &[u8] = br#"{"status":"ok","instantiated_at":"2026-01-01T00:00:00.000000Z"}"#;
const NOT_FOUND: &[u8] = br#"{"detail":"Not Found"}"#;
const WORKFLOW_NOT_FOUND: &[u8] = br#"{"detail":"Workflow not found"}"#;
const CANCELLED: &[u8] = b"{}";
const CONFIG: &[u8] = br#"{"os_id":"bench-host","description":"fake AgentOS host for benchmarks","available_models":[],"databases":["bench-db"],"session":{"dbs":[{"db_id":"bench-db","domain_config":{"display_name":"bench-db"},"tables":["agno_sessions"]}]},"metrics":{"dbs":[]},"memory":{"dbs":[]},"knowledge":{"dbs":[],"knowledge_instances":[]},"evals":{"dbs":[]},"traces":{"dbs":[]},"queue":{"durable":false,"queue_per_session":false},"agents":[],"teams":[],"workflows":[{"id":"bench","name":"Bench","description":"answers at once","is_factory":false,"is_component":false,"sandboxed":false},{"id":"idle","name":"Idle","description":"one event, then quiet","is_factory":false,"is_component":false,"sandboxed":false}],"interfaces":[],"company":null}"#;
const WORKFLOWS: &[u8] = br#"[{"id":"bench","name":"Bench","description":"answers at once","is_factory":false,"is_component":false,"sandboxed":false},{"id":"idle","name":"Idle","description":"one event, then quiet","is_factory":false,"is_component":false,"sandboxed":false}]"#;
const BENCH_DOC: &[u8] = br#"{"id":"bench","name":"Bench","description":"answers at once","steps":[{"name":"echo","type":"Step"}],"workflow_agent":false,"is_factory":false,"is_component":false,"sandboxed":false}"#;
const IDLE_DOC: &[u8] = br#"{"id":"idle","name":"Idle","description":"one event, then quiet","steps":[{"name":"wait","type":"Step"}],"workflow_agent":false,"is_factory":false,"is_component":false,"sandboxed":false}"#;
/// A `WorkflowRunOutput.to_dict()` of a two-step run, about the size of a
/// real small answer.
const RUN_OUTPUT: &[u8] = br#"{"input":"hello","content":"HELLO!","content_type":"str","workflow_id":"bench","workflow_name":"Bench","run_id":"6a1f2c9e-3b7d-4e8a-9c0f-1d2e3f4a5b6c","session_id":"0f9e8d7c-6b5a-4c3d-2e1f-0a9b8c7d6e5f","created_at":1795472363,"status":"COMPLETED","metadata":{},"images":[],"videos":[],"audio":[],"files":[],"step_results":[{"content":"HELLO","step_name":"upper","step_id":"d4f6a8b0-c2e4-4f6a-8b0c-2e4f6a8b0c2e","step_type":"Step","executor_type":"function","executor_name":"upper","success":true,"stop":false,"is_paused":false},{"content":"HELLO!","step_name":"bang","step_id":"e5a7b9c1-d3f5-4a7b-9c1d-3f5a7b9c1d3f","step_type":"Step","executor_type":"function","executor_name":"bang","success":true,"stop":false,"is_paused":false}],"metrics":{"steps":{},"duration":0.0001}}"#;

/// An agent's `RunOutput.to_dict()`, about the size of a real small answer.
const AGENT_RUN_OUTPUT: &[u8] = br#"{"run_id":"7b2e3d0f-4c8e-4f9a-8d1e-2e3f4a5b6c7d","agent_id":"bench-agent","agent_name":"Bench Agent","session_id":"1a0f9e8d-7c6b-4a5d-3e2f-1b0a9c8d7e6f","user_id":"bench-user","content":"echo: hello","content_type":"str","model":"bench-model","model_provider":"Bench","created_at":1795472363,"status":"COMPLETED","input":{"input_content":"hello"},"messages":[{"role":"user","content":"hello","created_at":1795472363},{"role":"assistant","content":"echo: hello","created_at":1795472363}],"metrics":{"input_tokens":1,"output_tokens":2,"total_tokens":3,"duration":0.0001},"metadata":{}}"#;

/// A `GET /sessions` page: ten agent sessions, as AgentOS lists them.
fn sessions_page() -> Bytes {
    let sessions: Vec<String> = (0..10)
        .map(|i| format!(r#"{{"session_id":"bench-session-{i}","session_name":"hello {i}","session_state":{{}},"session_type":"agent","user_id":"bench-user","agent_id":"bench-agent","team_id":null,"workflow_id":null,"session_summary":null,"metrics":{{"input_tokens":1,"output_tokens":2,"total_tokens":3}},"total_tokens":3,"metadata":{{}},"created_at":"2026-11-20T10:00:0{i}Z","updated_at":"2026-11-20T10:00:0{i}Z"}}"#))
        .collect();
    Bytes::from(format!(
        r#"{{"data":[{}],"meta":{{"page":1,"limit":20,"total_pages":1,"total_count":10,"search_time_ms":0.4}}}}"#,
        sessions.join(",")
    ))
}

async fn handle(
    request: Request<Incoming>,
    defaults: Defaults,
    sessions: Bytes,
) -> Result<Response<Body>, Infallible> {
    let path = request.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let response = match (request.method(), segments.as_slice()) {
        (&Method::GET, ["health"] | ["ready"]) => json(Bytes::from_static(HEALTH)),
        (&Method::GET, ["config"]) => json(Bytes::from_static(CONFIG)),
        (&Method::GET, ["workflows"]) => json(Bytes::from_static(WORKFLOWS)),
        (&Method::GET, ["workflows", id]) => match *id {
            RUN_WORKFLOW => json(Bytes::from_static(BENCH_DOC)),
            IDLE_WORKFLOW => json(Bytes::from_static(IDLE_DOC)),
            _ => full(
                StatusCode::NOT_FOUND,
                "application/json",
                Bytes::from_static(WORKFLOW_NOT_FOUND),
            ),
        },
        (&Method::POST, ["workflows", id, "runs"])
            if [RUN_WORKFLOW, IDLE_WORKFLOW].contains(id) =>
        {
            let idle = *id == IDLE_WORKFLOW;
            let form = request
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            run(&form, idle, defaults)
        }
        (&Method::POST, ["workflows", _, "runs", _, "cancel"]) => {
            json(Bytes::from_static(CANCELLED))
        }
        (&Method::POST, ["agents", "bench-agent", "runs"]) => {
            // Read to its end, as a host reads the form.
            let _ = request.into_body().collect().await;
            json(Bytes::from_static(AGENT_RUN_OUTPUT))
        }
        (&Method::GET, ["sessions"]) => json(sessions),
        _ => full(
            StatusCode::NOT_FOUND,
            "application/json",
            Bytes::from_static(NOT_FOUND),
        ),
    };
    Ok(response)
}

/// Answers a run: JSON at once, or a timed or idle event stream.
fn run(form: &[u8], idle: bool, defaults: Defaults) -> Response<Body> {
    let mut stream = true;
    let mut events = defaults.events;
    let mut gap = defaults.gap;
    for pair in form.split(|&b| b == b'&') {
        let mut kv = pair.splitn(2, |&b| b == b'=');
        let (key, value) = (kv.next().unwrap_or(b""), kv.next().unwrap_or(b""));
        let number = || {
            std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
        };
        match key {
            b"stream" => stream = !matches!(value, b"false" | b"False" | b"0"),
            b"events" => events = number().map_or(events, |n| u32::try_from(n).unwrap_or(events)),
            b"gap_us" => gap = number().map_or(gap, Duration::from_micros),
            _ => {}
        }
    }
    if !stream {
        return json(Bytes::from_static(RUN_OUTPUT));
    }
    let (workflow, count) = if idle {
        (IDLE_WORKFLOW, 1)
    } else {
        (RUN_WORKFLOW, events)
    };
    let start = tokio::time::Instant::now();
    let idle_max = defaults.idle_max;
    let frames = futures::stream::unfold(0u32, move |seq| async move {
        if seq >= count {
            if idle && seq == count {
                // Quiet until the client leaves (this future is dropped) or
                // the cap passes.
                tokio::time::sleep(idle_max).await;
            }
            return None;
        }
        tokio::time::sleep_until(start + gap * seq).await;
        Some((Ok(Frame::data(event(workflow, seq))), seq + 1))
    });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(frames)));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    response
}

/// One AgentOS-framed event, stamped now: an agent's `RunContent` inside
/// the workflow run, the most frequent event of a real stream. The stamp is
/// in `content` because agno's client keeps that field (it drops keys an
/// event class does not declare, which would lose a stamp of its own through
/// agno's gateway).
fn event(workflow: &str, seq: u32) -> Bytes {
    let sent = now_ns();
    Bytes::from(format!(
        "event: RunContent\ndata: {{\"created_at\":1795472363,\"event\":\"RunContent\",\"agent_id\":\"bench-agent\",\"agent_name\":\"Bench Agent\",\"run_id\":\"6a1f2c9e-3b7d-4e8a-9c0f-1d2e3f4a5b6c\",\"session_id\":\"0f9e8d7c-6b5a-4c3d-2e1f-0a9b8c7d6e5f\",\"workflow_id\":\"{workflow}\",\"nested_depth\":1,\"content\":\"token {seq} sent_ns:{sent}\",\"content_type\":\"str\"}}\n\n"
    ))
}
