//! Test harness: in-process mock AgentOS hosts and an in-process gateway, all
//! on 127.0.0.1 ephemeral ports.
//!
//! A mock host records every request it gets and answers the metadata routes
//! like an AgentOS. Event streams are driven by the test through a channel
//! ([`StreamControl`]): the host emits a chunk only when the test sends it,
//! fails the connection when the test sends an error, and the test learns
//! that the gateway dropped the upstream request when the channel closes.
//! Nothing here synchronises by sleeping.

#![allow(dead_code)]

pub mod recording;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentos_gateway::config::Config;
use agentos_gateway::state::{AppState, SharedState};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

/// One request as the host saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Sends the chunks of one event stream from the host.
pub struct StreamControl {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
}

impl StreamControl {
    /// The host writes `chunk` as one body chunk.
    pub async fn send(&self, chunk: impl Into<Bytes>) {
        self.tx
            .send(Ok(chunk.into()))
            .await
            .expect("the host's stream was dropped");
    }
    /// Like [`send`](Self::send), but says whether the host side was still
    /// there instead of failing.
    pub async fn offer(&self, chunk: impl Into<Bytes>) -> bool {
        self.tx.send(Ok(chunk.into())).await.is_ok()
    }
    /// The host's connection dies mid-body.
    pub async fn die(self) {
        let _ = self
            .tx
            .send(Err(std::io::Error::other("host died mid-stream")))
            .await;
    }
    /// The host ends the stream cleanly.
    pub fn finish(self) {}
    /// Resolves once the host side of the stream is dropped, which is what
    /// happens when the gateway drops its upstream request.
    pub async fn upstream_dropped(&self) {
        self.tx.closed().await
    }
}

#[derive(Default)]
struct HostState {
    /// Canned answers for the fallback route, used first, in order (see
    /// [`MockHost::respond_next`]).
    canned: Mutex<VecDeque<(u16, Value)>>,
    /// The `Authorization` header of each `GET /workflows/{id}`.
    doc_auth: Mutex<Vec<Option<String>>>,
    /// The `Authorization` header of each `GET /config`.
    config_auth: Mutex<Vec<Option<String>>>,
    /// When set, the metadata routes answer 401 unless `Authorization`
    /// carries this token (see [`MockHost::require_token`]).
    required_token: Mutex<Option<String>>,
    recorded: Mutex<Vec<Recorded>>,
    workflow_doc_hits: AtomicUsize,
    config_hits: AtomicUsize,
    /// Streams handed out, in order, to `POST .../runs` with stream=true.
    streams: Mutex<VecDeque<mpsc::Receiver<Result<Bytes, std::io::Error>>>>,
    /// When set, `GET /workflows/{id}` waits for a permit before answering.
    doc_gate: Mutex<Option<Arc<Semaphore>>>,
    os_id: String,
    db_id: String,
    /// When set, the databases `/config` reports (else `db_id` alone).
    databases: Mutex<Option<Vec<String>>>,
    /// The knowledge instances `/config` reports: (id, db_id).
    knowledge: Mutex<Vec<(String, String)>>,
    /// `GET /health` answers 503 while false.
    healthy: std::sync::atomic::AtomicBool,
    health_hits: AtomicUsize,
    /// With `Some(n)`, streaming runs that have no queued [`StreamControl`]
    /// get an automatic stream: a first event, then (after [`MockHost::release`])
    /// `n` more and a completion event, derived from the request's message.
    auto_events: Mutex<Option<usize>>,
    release: tokio::sync::watch::Sender<bool>,
    /// Set by [`MockHost::kill`]: every open stream breaks.
    killed: tokio::sync::watch::Sender<bool>,
}

/// A mock AgentOS host.
pub struct MockHost {
    pub addr: SocketAddr,
    pub url: String,
    state: Arc<HostState>,
    stop: CancellationToken,
    stopped: Arc<tokio::sync::Notify>,
}

impl MockHost {
    /// A host that answers the metadata routes, streams runs from
    /// [`MockHost::stream`] and records everything else, answering it with a
    /// JSON description of the request (status from `x-mock-status`).
    pub async fn start(os_id: &str) -> MockHost {
        let state = Arc::new(HostState {
            os_id: os_id.to_owned(),
            db_id: format!("{os_id}-db"),
            healthy: std::sync::atomic::AtomicBool::new(true),
            ..HostState::default()
        });
        let router = Router::new()
            .route("/health", get(host_health))
            .route("/config", get(host_config))
            .route("/workflows/{id}", get(workflow_doc))
            .fallback(record_and_answer)
            .with_state(state.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let stopped = Arc::new(tokio::sync::Notify::new());
        let (stop2, stopped2) = (stop.clone(), stopped.clone());
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(stop2.cancelled_owned())
                .await
                .unwrap();
            stopped2.notify_waiters();
        });
        MockHost {
            addr,
            url: format!("http://{addr}"),
            state,
            stop,
            stopped,
        }
    }

    /// Queues an event stream for the next streaming run and returns its
    /// control.
    pub fn stream(&self) -> StreamControl {
        let (tx, rx) = mpsc::channel(16);
        self.state.streams.lock().unwrap().push_back(rx);
        StreamControl { tx }
    }

    /// Makes `GET /health` answer 200 (true) or 503 (false).
    pub fn set_healthy(&self, healthy: bool) {
        self.state.healthy.store(healthy, Ordering::SeqCst);
    }

    pub fn health_hits(&self) -> usize {
        self.state.health_hits.load(Ordering::SeqCst)
    }

    /// Streaming runs without a queued [`StreamControl`] stream automatically
    /// (see [`auto_stream_bytes`]).
    pub fn auto_stream(&self, events: usize) {
        *self.state.auto_events.lock().unwrap() = Some(events);
    }

    /// Lets every automatic stream go on past its first event.
    pub fn release(&self) {
        self.state.release.send_replace(true);
    }

    /// Breaks every open stream of this host mid-body, as a crash would.
    pub fn kill(&self) {
        self.state.killed.send_replace(true);
    }

    /// The streaming runs this host received.
    pub fn runs(&self) -> usize {
        self.recorded()
            .iter()
            .filter(|r| r.method == "POST" && r.path_and_query.ends_with("/runs"))
            .count()
    }

    /// Every request recorded by the fallback route.
    pub fn recorded(&self) -> Vec<Recorded> {
        self.state.recorded.lock().unwrap().clone()
    }

    /// The last recorded request.
    pub fn last(&self) -> Recorded {
        self.recorded().pop().expect("the host got no request")
    }

    pub fn workflow_doc_hits(&self) -> usize {
        self.state.workflow_doc_hits.load(Ordering::SeqCst)
    }

    pub fn config_hits(&self) -> usize {
        self.state.config_hits.load(Ordering::SeqCst)
    }

    /// Makes `GET /workflows/{id}` wait until the returned semaphore gets
    /// permits.
    /// The next request the fallback route records is answered with
    /// `status` and the JSON `body` (streaming runs included), before any
    /// other rule applies.
    pub fn respond_next(&self, status: u16, body: Value) {
        self.state.canned.lock().unwrap().push_back((status, body));
    }

    /// The `Authorization` header each `GET /workflows/{id}` carried.
    pub fn workflow_doc_auth(&self) -> Vec<Option<String>> {
        self.state.doc_auth.lock().unwrap().clone()
    }

    /// The `Authorization` header each `GET /config` carried.
    pub fn config_auth(&self) -> Vec<Option<String>> {
        self.state.config_auth.lock().unwrap().clone()
    }

    /// Secures the metadata routes (`GET /config`, `GET /workflows/{id}`):
    /// they answer 401 `{"detail":"Unauthorized"}` unless `Authorization` is
    /// `Bearer <token>`, `bearer <token>` or the bare token, the forms
    /// AgentOS accepts. Refused requests still count as hits.
    pub fn require_token(&self, token: &str) {
        *self.state.required_token.lock().unwrap() = Some(token.to_owned());
    }

    /// The databases `/config` reports from now on.
    pub fn set_databases(&self, ids: &[&str]) {
        *self.state.databases.lock().unwrap() = Some(ids.iter().map(|s| s.to_string()).collect());
    }

    /// The knowledge instances `/config` reports from now on: (id, db_id).
    pub fn set_knowledge(&self, instances: &[(&str, &str)]) {
        *self.state.knowledge.lock().unwrap() = instances
            .iter()
            .map(|(id, db)| (id.to_string(), db.to_string()))
            .collect();
    }

    pub fn gate_workflow_docs(&self) -> Arc<Semaphore> {
        let gate = Arc::new(Semaphore::new(0));
        *self.state.doc_gate.lock().unwrap() = Some(gate.clone());
        gate
    }

    /// Stops the host: its port refuses connections afterwards.
    pub async fn stop(self) {
        let stopped = self.stopped.notified();
        self.stop.cancel();
        stopped.await;
    }
}

async fn host_health(State(state): State<Arc<HostState>>) -> Response {
    state.health_hits.fetch_add(1, Ordering::SeqCst);
    if state.healthy.load(Ordering::SeqCst) {
        axum::Json(json!({"status": "ok", "instantiated_at": "2026-01-01T00:00:00Z"}))
            .into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "down").into_response()
    }
}

/// The exact bytes of an automatic stream for `message` with `events`
/// progress events: its first event, and the rest.
pub fn auto_stream_bytes(message: &str, events: usize) -> (String, String) {
    let first = format!(
        "event: WorkflowStarted\ndata: {{\"event\":\"WorkflowStarted\",\"run_id\":\"run-{message}\",\"session_id\":\"s-{message}\"}}\n\n"
    );
    let mut rest = String::new();
    for n in 0..events {
        rest.push_str(&format!(
            "event: StepProgress\ndata: {{\"event\":\"StepProgress\",\"run_id\":\"run-{message}\",\"n\":{n}}}\n\n"
        ));
    }
    rest.push_str(&format!(
        "event: WorkflowCompleted\ndata: {{\"event\":\"WorkflowCompleted\",\"run_id\":\"run-{message}\"}}\n\n"
    ));
    (first, rest)
}

fn auto_stream(
    state: &HostState,
    message: String,
    events: usize,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + use<> {
    let (first, rest) = auto_stream_bytes(&message, events);
    let mut chunks: VecDeque<Bytes> = std::iter::once(first)
        .chain(rest.split_inclusive("\n\n").map(str::to_owned))
        .map(Bytes::from)
        .collect();
    let release = state.release.subscribe();
    let killed = state.killed.subscribe();
    let start = (true, release, killed);
    futures::stream::unfold(
        Some((start, chunks.pop_front(), chunks)),
        |step| async move {
            let ((first, mut release, mut killed), next, mut chunks) = step?;
            if !first {
                // After the first event, wait for the release (or die).
                let go = tokio::select! {
                    biased;
                    _ = killed.wait_for(|dead| *dead) => false,
                    _ = release.wait_for(|go| *go) => true,
                };
                if !go {
                    return Some((Err(std::io::Error::other("host killed")), None));
                }
            }
            let chunk = next?;
            let following = chunks.pop_front();
            Some((
                Ok(chunk),
                Some(((false, release, killed), following, chunks)),
            ))
        },
    )
}

/// The request's `Authorization` header, as text.
fn authorization(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The 401 a secured host answers when `auth` does not carry its token.
fn refusal(state: &HostState, auth: Option<&str>) -> Option<Response> {
    let required = state.required_token.lock().unwrap().clone()?;
    let presented = auth.map(|a| {
        a.strip_prefix("Bearer ")
            .or_else(|| a.strip_prefix("bearer "))
            .unwrap_or(a)
    });
    (presented != Some(required.as_str())).then(|| {
        (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"detail": "Unauthorized"})),
        )
            .into_response()
    })
}

async fn host_config(State(state): State<Arc<HostState>>, headers: HeaderMap) -> Response {
    state.config_hits.fetch_add(1, Ordering::SeqCst);
    let auth = authorization(&headers);
    state.config_auth.lock().unwrap().push(auth.clone());
    if let Some(refused) = refusal(&state, auth.as_deref()) {
        return refused;
    }
    let ids = state
        .databases
        .lock()
        .unwrap()
        .clone()
        .unwrap_or_else(|| vec![state.db_id.clone()]);
    let dbs: Vec<Value> = ids
        .iter()
        .map(|id| json!({"db_id": id, "domain_config": {"display_name": id}, "tables": ["agno_sessions"]}))
        .collect();
    let knowledge: Vec<Value> = state
        .knowledge
        .lock()
        .unwrap()
        .iter()
        .map(|(id, db)| json!({"id": id, "name": id, "db_id": db, "table": "agno_knowledge"}))
        .collect();
    axum::Json(json!({
        "os_id": state.os_id,
        "description": "mock host",
        "available_models": [],
        "databases": ids,
        "session": {"dbs": dbs},
        "metrics": {"dbs": dbs},
        "knowledge": {"dbs": [], "knowledge_instances": knowledge},
        "agents": [], "teams": [], "workflows": [], "interfaces": [], "company": null
    }))
    .into_response()
}

async fn workflow_doc(
    State(state): State<Arc<HostState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let auth = authorization(&headers);
    state.doc_auth.lock().unwrap().push(auth.clone());
    state.workflow_doc_hits.fetch_add(1, Ordering::SeqCst);
    let gate = state.doc_gate.lock().unwrap().clone();
    if let Some(gate) = gate {
        let _permit = gate.acquire().await.unwrap();
    }
    if let Some(refused) = refusal(&state, auth.as_deref()) {
        return refused;
    }
    if id == "missing" {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"detail": "Workflow not found"})),
        )
            .into_response();
    }
    axum::Json(json!({
        "id": id,
        "name": format!("{id} on {}", state.os_id),
        "db_id": state.db_id,
        "description": "a mock workflow",
        "input_schema": null,
        "steps": [{"name": "only", "type": "Step"}],
        "workflow_agent": false,
        "is_factory": false,
        "is_component": false,
        "sandboxed": false
    }))
    .into_response()
}

async fn record_and_answer(State(state): State<Arc<HostState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let recorded = Recorded {
        method: parts.method.to_string(),
        path_and_query: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers: parts.headers.clone(),
        body: body.clone(),
    };
    state.recorded.lock().unwrap().push(recorded);

    let canned = state.canned.lock().unwrap().pop_front();
    if let Some((status, answer)) = canned {
        return Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(answer.to_string()))
            .unwrap();
    }

    let is_run = parts.method == "POST" && parts.uri.path().ends_with("/runs");
    let streaming = is_run && !String::from_utf8_lossy(&body).contains("stream=false");
    if streaming {
        let stream = state.streams.lock().unwrap().pop_front();
        let auto_events = *state.auto_events.lock().unwrap();
        let body = match (stream, auto_events) {
            (Some(rx), _) => Some(Body::from_stream(receiver_stream(rx))),
            (None, Some(events)) => {
                let message = url::form_urlencoded::parse(&body)
                    .find(|(k, _)| k == "message")
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default();
                Some(Body::from_stream(auto_stream(&state, message, events)))
            }
            (None, None) => None,
        };
        if let Some(body) = body {
            return Response::builder()
                .header(header::CONTENT_TYPE, "text/event-stream; charset=utf-8")
                .body(body)
                .unwrap();
        }
    }
    let status = parts
        .headers
        .get("x-mock-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u16>().ok())
        .unwrap_or(200);
    let answer = json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "body_len": body.len(),
    });
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-host-header", "kept")
        .body(Body::from(answer.to_string()))
        .unwrap()
}

fn receiver_stream(
    rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

/// A host that accepts TCP connections and never answers.
pub async fn black_hole() -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (url, task)
}

/// A base URL whose port refuses connections.
pub async fn refusing_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    url
}

/// An in-process gateway, with its admin listener on a port of its own.
pub struct Gateway {
    pub url: String,
    /// The admin listener's base URL.
    pub admin: String,
    pub state: SharedState,
    stop: CancellationToken,
}

impl Gateway {
    /// Starts a gateway from TOML text (its `listen` is ignored).
    pub async fn start(toml: &str) -> Gateway {
        let config = Config::parse(std::path::Path::new("test.toml"), toml, &|name| {
            std::env::var(name).ok()
        })
        .unwrap();
        Gateway::start_with(config).await
    }

    pub async fn start_with(config: Config) -> Gateway {
        let state = AppState::new(&config).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let stopped = stop.clone().cancelled_owned();
        let shutdown = async move {
            stopped.await;
            agentos_gateway::server::Stop::Drain
        };
        let serve_state = state.clone();
        tokio::spawn(async move {
            agentos_gateway::server::serve(listener, serve_state, shutdown)
                .await
                .unwrap();
        });
        let admin_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = format!("http://{}", admin_listener.local_addr().unwrap());
        tokio::spawn(agentos_gateway::admin::serve(
            admin_listener,
            state.clone(),
            stop.clone(),
        ));
        Gateway {
            url,
            admin,
            state,
            stop,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// `path` on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("{}{path}", self.admin)
    }
}

/// Prometheus text from the gateway's admin listener.
pub async fn scrape(gw: &Gateway) -> String {
    client()
        .get(gw.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A `[[workflows]]` entry.
pub fn workflow(id: &str, base_url: &str, workflow_id: &str) -> String {
    format!(
        "[[workflows]]\nid = \"{id}\"\nbase_url = \"{base_url}\"\nworkflow_id = \"{workflow_id}\"\n"
    )
}

/// A test HTTP client with no pooling surprises.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Reads the next body chunk, failing the test if none arrives in 10 s (a
/// guard against hangs, not a synchronisation).
pub async fn next_chunk(response: &mut reqwest::Response) -> Option<Bytes> {
    tokio::time::timeout(Duration::from_secs(10), response.chunk())
        .await
        .expect("no chunk within 10 s")
        .expect("body error")
}

/// Reads the rest of the body.
pub async fn rest(response: reqwest::Response) -> Vec<u8> {
    tokio::time::timeout(Duration::from_secs(10), response.bytes())
        .await
        .expect("body not finished within 10 s")
        .expect("body error")
        .to_vec()
}

pub fn json_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

/// The environment variable that overrides `[admin] listen`.
pub const ADMIN_LISTEN_VAR: &str = "AGENTOS_GATEWAY_ADMIN_LISTEN";

/// The gateway binary running as a child process, its stderr collected.
pub struct GatewayProcess {
    pub child: std::process::Child,
    pub url: String,
    /// The admin listener's base URL, from its `admin listener ready` line;
    /// `None` when it was turned off.
    pub admin: Option<String>,
    log: Arc<Mutex<Vec<String>>>,
    config_file: std::path::PathBuf,
    _dir: TempDir,
}

/// A temporary directory removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let dir = std::env::temp_dir().join(format!("agw-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The gateway binary that process tests run: `AGENTOS_GATEWAY_BIN` when set
/// (CI points it at the release build), else the one cargo built for the
/// tests.
pub fn gateway_bin() -> std::path::PathBuf {
    std::env::var_os("AGENTOS_GATEWAY_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_agentos-gateway").into())
}

impl GatewayProcess {
    /// Starts `agentos-gateway --config <toml> --log-format json` listening on
    /// an ephemeral port, and waits until it logs its address.
    ///
    /// The admin listener gets an ephemeral port too
    /// (`AGENTOS_GATEWAY_ADMIN_LISTEN=127.0.0.1:0`, so parallel tests never
    /// meet on 9901), unless `toml` has an `[admin]` table, which then
    /// decides; `env` can override either.
    pub fn spawn(toml: &str, env: &[(&str, &str)]) -> GatewayProcess {
        let dir = TempDir::new();
        let path = dir.0.join("gateway.toml");
        std::fs::write(&path, format!("[server]\nlisten = \"127.0.0.1:0\"\n{toml}")).unwrap();
        GatewayProcess::spawn_file(dir, &path, toml.contains("[admin]"), env)
    }

    /// Starts the binary on the config file at `path` (in `dir`, removed
    /// when the process is dropped); see [`GatewayProcess::spawn`].
    pub fn spawn_file(
        dir: TempDir,
        path: &std::path::Path,
        has_admin: bool,
        env: &[(&str, &str)],
    ) -> GatewayProcess {
        use std::io::BufRead;
        let mut command = std::process::Command::new(gateway_bin());
        command
            .args(["--log-format", "json", "--config"])
            .arg(path)
            .env("RUST_LOG", "debug")
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null());
        if has_admin {
            command.env_remove(ADMIN_LISTEN_VAR);
        } else {
            command.env(ADMIN_LISTEN_VAR, "127.0.0.1:0");
        }
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            // The admin line comes first (the binary binds it first).
            let mut admin = None;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Ok(event) = serde_json::from_str::<Value>(&line)
                    && let Some(addr) = event["listen"].as_str()
                {
                    if event["message"] == "admin listener ready" {
                        admin = Some(format!("http://{addr}"));
                    } else if event["message"] == "agentos-gateway ready" {
                        let _ = addr_tx.send((addr.to_owned(), admin.take()));
                    }
                }
                log2.lock().unwrap().push(line);
            }
        });
        let (addr, admin) = addr_rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("gateway did not start: {:?}", log.lock().unwrap()));
        GatewayProcess {
            child,
            url: format!("http://{addr}"),
            admin,
            log,
            config_file: path.to_owned(),
            _dir: dir,
        }
    }

    /// The config file it was started with.
    pub fn config_path(&self) -> &std::path::Path {
        &self.config_file
    }

    /// Sends SIGHUP: reload the config file.
    pub fn hang_up(&self) {
        self.signal("-HUP");
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// `path` on the admin listener; panics when it is off.
    pub fn admin_url(&self, path: &str) -> String {
        let admin = self
            .admin
            .as_deref()
            .expect("the gateway has no admin listener");
        format!("{admin}{path}")
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        self.signal("-TERM");
    }

    /// Ctrl-C, as a terminal sends it.
    pub fn interrupt(&self) {
        self.signal("-INT");
    }

    fn signal(&self, which: &str) {
        let status = std::process::Command::new("kill")
            .args([which, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit (at most `limit`) and returns its code.
    pub async fn exit_code(&mut self, limit: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "gateway did not exit in {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every log line so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` until it holds (at most 10 s): for conditions that another
/// process or task makes true, where there is nothing to wait on directly.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
