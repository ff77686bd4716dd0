//! An in-process, AgentOS-compatible host for the demo, tests and anything
//! else that needs a real-looking AgentOS without Python: the discovery
//! routes, agent, team and workflow runs as JSON or as an event stream in
//! AgentOS's exact framing, background runs, run look-ups, continue,
//! in-process cancel, the sessions of its runs (`GET /sessions`,
//! `/sessions/{id}`, `/sessions/{id}/runs`, by `db_id`), and an optional
//! security key.
//!
//! Nothing needs a model: [`FakeBehavior::Echo`] answers with its input;
//! [`FakeBehavior::SlowStream`] streams `events` progress events (a
//! workflow's `StepProgress`, an agent's `RunContent`, a team's
//! `TeamRunContent`) with a gap between them and honours cancel between
//! events, as AgentOS's cooperative cancel does.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::config::EntryKind;

/// One fake AgentOS.
#[derive(Debug, Clone, Default)]
pub struct FakeHostSpec {
    pub os_id: String,
    pub name: String,
    pub description: Option<String>,
    /// The database its entries report; `/config` lists it.
    pub db_id: Option<String>,
    pub agents: Vec<FakeEntry>,
    pub teams: Vec<FakeEntry>,
    pub workflows: Vec<FakeEntry>,
    /// When set, every route but `/` and `/health` needs
    /// `Authorization: Bearer <key>`, as AgentOS's `OS_SECURITY_KEY`.
    pub security_key: Option<String>,
}

/// One agent, team or workflow of a fake host.
#[derive(Debug, Clone)]
pub struct FakeEntry {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub behavior: FakeBehavior,
}

/// What a fake entry does with its input.
#[derive(Debug, Clone)]
pub enum FakeBehavior {
    /// Answers with the input, echoed (a workflow in one step).
    Echo,
    /// Streams `events` progress events, `gap` apart, stopping early when
    /// the run is cancelled.
    SlowStream { events: usize, gap: Duration },
}

impl FakeHostSpec {
    /// The demo's first host: workflow `echo` and agent `assistant`.
    pub fn demo_echo() -> Self {
        FakeHostSpec {
            os_id: "demo-echo-host".into(),
            name: "Demo echo host".into(),
            description: Some("An embedded AgentOS-compatible demo host".into()),
            db_id: Some("demo-echo-db".into()),
            agents: vec![FakeEntry {
                id: "assistant".into(),
                name: "Assistant".into(),
                description: Some("Answers with what it was told".into()),
                behavior: FakeBehavior::Echo,
            }],
            workflows: vec![FakeEntry {
                id: "echo".into(),
                name: "Echo".into(),
                description: Some("Echoes its input back".into()),
                behavior: FakeBehavior::Echo,
            }],
            ..FakeHostSpec::default()
        }
    }

    /// The demo's second host: workflow `slow-story`, which streams a
    /// short story a word at a time, and team `storytellers`, which does
    /// the same as a team.
    pub fn demo_slow() -> Self {
        let slow = FakeBehavior::SlowStream {
            events: 20,
            gap: Duration::from_millis(250),
        };
        FakeHostSpec {
            os_id: "demo-slow-host".into(),
            name: "Demo story host".into(),
            description: Some("An embedded AgentOS-compatible demo host".into()),
            db_id: Some("demo-slow-db".into()),
            teams: vec![FakeEntry {
                id: "storytellers".into(),
                name: "Storytellers".into(),
                description: Some("Tell a story together, a word at a time".into()),
                behavior: slow.clone(),
            }],
            workflows: vec![FakeEntry {
                id: "slow-story".into(),
                name: "Slow story".into(),
                description: Some("Streams a story a word at a time; try cancelling it".into()),
                behavior: slow,
            }],
            ..FakeHostSpec::default()
        }
    }

    /// The entries of `kind`.
    pub fn entries(&self, kind: EntryKind) -> &[FakeEntry] {
        match kind {
            EntryKind::Agent => &self.agents,
            EntryKind::Team => &self.teams,
            EntryKind::Workflow => &self.workflows,
            EntryKind::Database => &[],
        }
    }
}

/// Words of the slow story, one per progress event.
const STORY: &[&str] = &[
    "Once", "upon", "a", "time", "a", "gateway", "relayed", "every", "event", "the", "moment",
    "it", "arrived,", "byte", "for", "byte,", "and", "nobody", "could", "tell.",
];

struct HostState {
    spec: FakeHostSpec,
    instantiated_at: String,
    /// Runs by id, for look-ups, continues and background runs.
    runs: Mutex<HashMap<String, Value>>,
    /// Cancel intent, kept even for runs that have not started (AgentOS
    /// stores intent the same way).
    cancelled: Mutex<HashSet<String>>,
}

type Shared = Arc<HostState>;

impl HostState {
    fn entry(&self, kind: EntryKind, id: &str) -> Option<&FakeEntry> {
        self.spec.entries(kind).iter().find(|w| w.id == id)
    }

    fn is_cancelled(&self, run_id: &str) -> bool {
        self.cancelled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(run_id)
    }

    fn store(&self, run: Value) {
        if let Some(id) = run["run_id"].as_str() {
            self.runs
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(id.to_owned(), run);
        }
    }

    fn run(&self, run_id: &str) -> Option<Value> {
        self.runs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(run_id)
            .cloned()
    }
}

/// The kind whose collection `uri` is under.
fn kind_of(uri: &Uri) -> EntryKind {
    let path = uri.path();
    if path.starts_with("/agents") {
        EntryKind::Agent
    } else if path.starts_with("/teams") {
        EntryKind::Team
    } else {
        EntryKind::Workflow
    }
}

/// The fake host as an axum router.
pub fn router(spec: FakeHostSpec) -> Router {
    let state = Arc::new(HostState {
        spec,
        instantiated_at: chrono::Utc::now()
            .format("%Y-%m-%dT%H:%M:%S%.6fZ")
            .to_string(),
        runs: Mutex::default(),
        cancelled: Mutex::default(),
    });
    let mut router = Router::new()
        .route("/", get(home))
        .route("/health", get(health))
        .route("/config", get(config));
    for kind in EntryKind::ALL {
        let p = format!("/{}", kind.plural());
        router = router
            .route(&p, get(list))
            .route(&format!("{p}/{{id}}"), get(entry_detail))
            .route(&format!("{p}/{{id}}/runs"), post(create_run).get(list_runs))
            .route(&format!("{p}/{{id}}/runs/{{run_id}}"), get(get_run))
            .route(
                &format!("{p}/{{id}}/runs/{{run_id}}/cancel"),
                post(cancel_run),
            )
            .route(
                &format!("{p}/{{id}}/runs/{{run_id}}/continue"),
                post(continue_run),
            );
    }
    router
        .route("/sessions", get(list_sessions))
        .route("/sessions/{session_id}", get(session_detail))
        .route("/sessions/{session_id}/runs", get(session_runs))
        .layer(middleware::from_fn_with_state(state.clone(), security_key))
        .with_state(state)
}

/// Serves the fake host on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    spec: FakeHostSpec,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(spec))
        .with_graceful_shutdown(shutdown)
        .await
}

fn detail(status: StatusCode, text: &str) -> Response {
    (status, axum::Json(json!({ "detail": text }))).into_response()
}

fn not_found(kind: EntryKind) -> Response {
    detail(StatusCode::NOT_FOUND, kind.not_found())
}

async fn security_key(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let open = matches!(request.uri().path(), "/" | "/health");
    if let (Some(key), false) = (&state.spec.security_key, open) {
        let sent = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match sent.and_then(|v| v.strip_prefix("Bearer ")) {
            None => return detail(StatusCode::UNAUTHORIZED, "Authorization header required"),
            Some(token) if token != key => {
                return detail(StatusCode::UNAUTHORIZED, "Invalid authentication token");
            }
            Some(_) => {}
        }
    }
    next.run(request).await
}

async fn home(State(state): State<Shared>) -> Response {
    axum::Json(
        json!({"name": state.spec.name, "health": "/health", "info": "/info", "docs": "/docs"}),
    )
    .into_response()
}

async fn health(State(state): State<Shared>) -> Response {
    axum::Json(json!({"status": "ok", "instantiated_at": state.instantiated_at})).into_response()
}

/// The fake model agents and teams report.
const MODEL_ID: &str = "fake-model";
const MODEL_PROVIDER: &str = "Fake";

/// AgentOS's summary of an entry (`AgentSummaryResponse`,
/// `TeamSummaryResponse`, `WorkflowSummaryResponse`), nulls omitted.
fn summary(state: &HostState, kind: EntryKind, entry: &FakeEntry) -> Value {
    let mut out = Map::new();
    out.insert("id".into(), entry.id.clone().into());
    out.insert("name".into(), entry.name.clone().into());
    if let Some(description) = &entry.description {
        out.insert("description".into(), description.clone().into());
    }
    if let Some(db_id) = &state.spec.db_id {
        out.insert("db_id".into(), db_id.clone().into());
    }
    match kind {
        EntryKind::Workflow => {
            out.insert("is_factory".into(), false.into());
            out.insert("is_component".into(), false.into());
        }
        _ => {
            if kind == EntryKind::Team {
                out.insert("mode".into(), "coordinate".into());
            }
            out.insert(
                "model".into(),
                json!({"id": MODEL_ID, "provider": MODEL_PROVIDER}),
            );
        }
    }
    out.insert("sandboxed".into(), false.into());
    Value::Object(out)
}

/// AgentOS's whole document of an entry (`AgentResponse`, `TeamResponse`,
/// `WorkflowResponse`), in part.
fn document(state: &HostState, kind: EntryKind, entry: &FakeEntry) -> Value {
    let mut doc = summary(state, kind, entry);
    match kind {
        EntryKind::Workflow => {
            doc["steps"] = json!([{"name": step_name(entry), "type": "Step"}]);
            doc["workflow_agent"] = false.into();
        }
        _ => {
            doc["model"] =
                json!({"name": "FakeModel", "model": MODEL_ID, "provider": MODEL_PROVIDER});
            if kind == EntryKind::Team {
                doc["members"] = json!([]);
            }
        }
    }
    doc
}

async fn config(State(state): State<Shared>) -> Response {
    let dbs = |table: Option<&str>| -> Value {
        match &state.spec.db_id {
            None => json!({"dbs": []}),
            Some(db) => {
                let mut entry = json!({"db_id": db, "domain_config": {"display_name": db}});
                if let Some(table) = table {
                    entry["tables"] = json!([table]);
                }
                json!({"dbs": [entry]})
            }
        }
    };
    let summaries = |kind| -> Vec<Value> {
        state
            .spec
            .entries(kind)
            .iter()
            .map(|w| summary(&state, kind, w))
            .collect()
    };
    axum::Json(json!({
        "os_id": state.spec.os_id,
        "description": state.spec.description,
        "available_models": [],
        "databases": state.spec.db_id.iter().collect::<Vec<_>>(),
        "session": dbs(Some("agno_sessions")),
        "metrics": dbs(Some("agno_metrics")),
        "memory": dbs(Some("agno_memories")),
        "learning": dbs(Some("agno_learnings")),
        "filesystem": {"namespaces": []},
        "knowledge": {"dbs": [], "knowledge_instances": []},
        "evals": dbs(Some("agno_eval_runs")),
        "traces": dbs(None),
        "queue": {"durable": false, "queue_per_session": false},
        "agents": summaries(EntryKind::Agent),
        "teams": summaries(EntryKind::Team),
        "workflows": summaries(EntryKind::Workflow),
        "interfaces": [],
        "company": null,
    }))
    .into_response()
}

/// `GET /agents` and `GET /teams` list whole documents, `GET /workflows`
/// summaries, as AgentOS does.
async fn list(State(state): State<Shared>, uri: Uri) -> Response {
    let kind = kind_of(&uri);
    let list: Vec<Value> = state
        .spec
        .entries(kind)
        .iter()
        .map(|w| match kind {
            EntryKind::Workflow => summary(&state, kind, w),
            _ => document(&state, kind, w),
        })
        .collect();
    axum::Json(list).into_response()
}

async fn entry_detail(State(state): State<Shared>, uri: Uri, Path(id): Path<String>) -> Response {
    let kind = kind_of(&uri);
    match state.entry(kind, &id) {
        Some(entry) => axum::Json(document(&state, kind, entry)).into_response(),
        None => not_found(kind),
    }
}

fn step_name(entry: &FakeEntry) -> &'static str {
    match entry.behavior {
        FakeBehavior::Echo => "echo",
        FakeBehavior::SlowStream { .. } => "tell",
    }
}

/// The form fields of a run request, urlencoded or multipart, as AgentOS
/// accepts them (a JSON body is a 422, as in FastAPI).
async fn form_fields(request: Request) -> Result<HashMap<String, String>, Response> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if content_type.starts_with("multipart/form-data") {
        let mut multipart = Multipart::from_request(request, &())
            .await
            .map_err(IntoResponse::into_response)?;
        let mut fields = HashMap::new();
        while let Ok(Some(field)) = multipart.next_field().await {
            let name = field.name().unwrap_or("").to_owned();
            let is_file = field.file_name().is_some();
            let bytes = field.bytes().await.map_err(IntoResponse::into_response)?;
            if !is_file {
                fields.insert(name, String::from_utf8_lossy(&bytes).into_owned());
            }
        }
        return Ok(fields);
    }
    let body = axum::body::to_bytes(request.into_body(), 16 * 1024 * 1024)
        .await
        .map_err(|_| detail(StatusCode::PAYLOAD_TOO_LARGE, "Request body is too large"))?;
    if content_type.starts_with("application/x-www-form-urlencoded") || body.is_empty() {
        return Ok(url::form_urlencoded::parse(&body).into_owned().collect());
    }
    Ok(HashMap::new())
}

fn missing_message() -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        axum::Json(json!({"detail": [{"type": "missing", "loc": ["body", "message"], "msg": "Field required", "input": null}]})),
    )
        .into_response()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One run's identity, shared by its events and its output.
#[derive(Clone)]
struct RunCtx {
    kind: EntryKind,
    entry: FakeEntry,
    run_id: String,
    session_id: String,
    user_id: Option<String>,
    message: String,
    /// A continued run starts with `RunContinued` instead of `RunStarted`.
    continued: bool,
}

impl RunCtx {
    /// An event in AgentOS's field order.
    fn event(&self, name: &str, extra: Value) -> Value {
        let (id_key, name_key) = match self.kind {
            EntryKind::Agent | EntryKind::Database => ("agent_id", "agent_name"),
            EntryKind::Team => ("team_id", "team_name"),
            EntryKind::Workflow => ("workflow_id", "workflow_name"),
        };
        let mut out = Map::new();
        out.insert("created_at".into(), now().into());
        out.insert("event".into(), name.into());
        out.insert(id_key.into(), self.entry.id.clone().into());
        out.insert(name_key.into(), self.entry.name.clone().into());
        out.insert("session_id".into(), self.session_id.clone().into());
        out.insert("run_id".into(), self.run_id.clone().into());
        out.insert("nested_depth".into(), 0.into());
        if let Value::Object(extra) = extra {
            out.extend(extra);
        }
        Value::Object(out)
    }

    /// An agent's event `name` (`RunContent`), or a team's (`TeamRunContent`).
    fn run_event(&self, name: &str, extra: Value) -> Value {
        match self.kind {
            EntryKind::Team => self.event(&format!("Team{name}"), extra),
            _ => self.event(name, extra),
        }
    }

    fn step(&self, name: &str, extra: Value) -> Value {
        let mut fields = json!({"step_name": step_name(&self.entry), "step_index": 0});
        if let (Value::Object(fields), Value::Object(extra)) = (&mut fields, extra) {
            fields.extend(extra);
        }
        self.event(name, fields)
    }

    /// The run's `RunOutput`, `TeamRunOutput` or `WorkflowRunOutput`
    /// `.to_dict()`, in part.
    fn output(&self, content: &str, status: &str) -> Value {
        let prefix = match self.kind {
            EntryKind::Agent | EntryKind::Database => "agent",
            EntryKind::Team => "team",
            EntryKind::Workflow => "workflow",
        };
        let mut out = json!({
            "run_id": self.run_id,
            "session_id": self.session_id,
        });
        out[format!("{prefix}_id")] = self.entry.id.clone().into();
        out[format!("{prefix}_name")] = self.entry.name.clone().into();
        if let Some(user_id) = &self.user_id {
            out["user_id"] = user_id.clone().into();
        }
        out["content"] = content.into();
        out["content_type"] = "str".into();
        out["created_at"] = now().into();
        out["status"] = status.into();
        out["metadata"] = json!({});
        if self.kind == EntryKind::Workflow {
            out["input"] = self.message.clone().into();
            out["step_results"] = json!([{"content": content, "step_name": step_name(&self.entry), "step_type": "Step", "executor_type": "function", "success": true, "stop": false, "is_paused": false}]);
            out["metrics"] = json!({"steps": {}});
        } else {
            out["input"] = json!({"input_content": self.message});
            out["model"] = MODEL_ID.into();
            out["model_provider"] = MODEL_PROVIDER.into();
        }
        out
    }
}

/// Runs the entry, sending each event to `events` (dropped when nobody
/// listens), and returns the final output.
async fn execute(state: &HostState, ctx: &RunCtx, events: Option<&mpsc::Sender<Value>>) -> Value {
    match ctx.kind {
        EntryKind::Workflow => execute_workflow(state, ctx, events).await,
        _ => execute_agent(state, ctx, events).await,
    }
}

/// An agent's or a team's run: started (or continued), content, completed.
async fn execute_agent(
    state: &HostState,
    ctx: &RunCtx,
    events: Option<&mpsc::Sender<Value>>,
) -> Value {
    let emit = |event: Value| async move {
        match events {
            Some(tx) => tx.send(event).await.is_ok(),
            None => true,
        }
    };
    let first = if ctx.continued {
        "RunContinued"
    } else {
        "RunStarted"
    };
    let model = json!({"model": MODEL_ID, "model_provider": MODEL_PROVIDER});
    emit(ctx.run_event(first, model)).await;
    let content = match &ctx.entry.behavior {
        FakeBehavior::Echo => {
            let content = ctx.message.clone();
            let fields = json!({"content": content, "content_type": "str"});
            emit(ctx.run_event("RunContent", fields)).await;
            content
        }
        FakeBehavior::SlowStream { events: count, gap } => {
            let mut told = Vec::new();
            for i in 0..*count {
                if state.is_cancelled(&ctx.run_id) {
                    let reason = format!("Run {} was cancelled", ctx.run_id);
                    emit(ctx.run_event("RunCancelled", json!({"reason": reason}))).await;
                    return ctx.output(&reason, "CANCELLED");
                }
                let word = STORY[i % STORY.len()];
                told.push(word);
                let fields = json!({"content": word, "content_type": "str"});
                if !emit(ctx.run_event("RunContent", fields)).await {
                    return ctx.output("Operation cancelled by user", "CANCELLED");
                }
                tokio::time::sleep(*gap).await;
            }
            told.join(" ")
        }
    };
    let fields = json!({"content": content, "content_type": "str"});
    emit(ctx.run_event("RunCompleted", fields)).await;
    ctx.output(&content, "COMPLETED")
}

async fn execute_workflow(
    state: &HostState,
    ctx: &RunCtx,
    events: Option<&mpsc::Sender<Value>>,
) -> Value {
    let emit = |event: Value| async move {
        match events {
            Some(tx) => tx.send(event).await.is_ok(),
            None => true,
        }
    };
    emit(ctx.event("WorkflowStarted", json!({}))).await;
    emit(ctx.step("StepStarted", json!({}))).await;
    let content = match &ctx.entry.behavior {
        FakeBehavior::Echo => ctx.message.clone(),
        FakeBehavior::SlowStream { events: count, gap } => {
            let mut told = Vec::new();
            for i in 0..*count {
                if state.is_cancelled(&ctx.run_id) {
                    let reason = format!("Run {} was cancelled", ctx.run_id);
                    emit(ctx.event(
                        "WorkflowCancelled",
                        json!({"reason": reason, "content": reason}),
                    ))
                    .await;
                    let output = ctx.output(&reason, "CANCELLED");
                    emit(ctx.event(
                        "WorkflowCompleted",
                        json!({"content": reason, "content_type": "str"}),
                    ))
                    .await;
                    return output;
                }
                let word = STORY[i % STORY.len()];
                told.push(word);
                // A client that went away ends the run, as AgentOS does.
                if !emit(ctx.step(
                    "StepProgress",
                    json!({"content": word, "progress": i + 1, "total": count}),
                ))
                .await
                {
                    return ctx.output("Operation cancelled by user", "CANCELLED");
                }
                tokio::time::sleep(*gap).await;
            }
            told.join(" ")
        }
    };
    emit(ctx.step(
        "StepOutput",
        json!({"step_output": {"content": content, "success": true}}),
    ))
    .await;
    emit(ctx.step(
        "StepCompleted",
        json!({"content": content, "content_type": "str"}),
    ))
    .await;
    let output = ctx.output(&content, "COMPLETED");
    emit(ctx.event(
        "WorkflowCompleted",
        json!({"content": content, "content_type": "str", "metadata": {}, "step_results": output["step_results"]}),
    ))
    .await;
    output
}

fn sse_frame(event: &Value) -> Bytes {
    let name = event["event"].as_str().unwrap_or("");
    Bytes::from(format!("event: {name}\ndata: {event}\n\n"))
}

async fn create_run(
    State(state): State<Shared>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    let kind = kind_of(request.uri());
    let Some(entry) = state.entry(kind, &id).cloned() else {
        return not_found(kind);
    };
    let fields = match form_fields(request).await {
        Ok(fields) => fields,
        Err(response) => return response,
    };
    let Some(message) = fields.get("message").cloned() else {
        return missing_message();
    };
    let new_id = || uuid::Uuid::new_v4().to_string();
    let ctx = RunCtx {
        kind,
        entry,
        run_id: fields.get("run_id").cloned().unwrap_or_else(new_id),
        session_id: fields
            .get("session_id")
            .filter(|s| !s.is_empty())
            .cloned()
            .unwrap_or_else(new_id),
        user_id: fields.get("user_id").cloned(),
        message,
        continued: false,
    };
    respond(state, ctx, &fields).await
}

/// `POST .../runs/{run_id}/continue`: continues a stored run (paused or
/// not) in its session; its answer is what the caller sent in `tools`
/// (agents), `requirements` (teams) or `input`, so a test sees the form
/// arrive as it was sent.
async fn continue_run(
    State(state): State<Shared>,
    Path((id, run_id)): Path<(String, String)>,
    request: Request,
) -> Response {
    let kind = kind_of(request.uri());
    let Some(entry) = state.entry(kind, &id).cloned() else {
        return not_found(kind);
    };
    let fields = match form_fields(request).await {
        Ok(fields) => fields,
        Err(response) => return response,
    };
    let Some(run) = state.run(&run_id) else {
        return detail(StatusCode::NOT_FOUND, "Run not found");
    };
    let said = ["tools", "requirements", "input"]
        .iter()
        .find_map(|k| fields.get(*k).filter(|v| !v.is_empty()))
        .cloned()
        .unwrap_or_default();
    let ctx = RunCtx {
        kind,
        entry: FakeEntry {
            behavior: FakeBehavior::Echo,
            ..entry
        },
        run_id,
        session_id: run["session_id"].as_str().unwrap_or_default().to_owned(),
        user_id: run["user_id"].as_str().map(str::to_owned),
        message: said,
        continued: true,
    };
    respond(state, ctx, &fields).await
}

/// Runs `ctx` as `fields` ask: streamed (the default), as JSON, or in the
/// background.
async fn respond(state: Shared, ctx: RunCtx, fields: &HashMap<String, String>) -> Response {
    let flag = |name: &str, default: bool| {
        fields.get(name).map_or(default, |v| {
            matches!(v.as_str(), "true" | "True" | "1" | "yes" | "on")
        })
    };
    let (stream, background) = (flag("stream", true), flag("background", false));
    if background && !stream {
        let mut pending = ctx.output("", "PENDING");
        pending["content"] = Value::Null;
        state.store(pending);
        let (state, ctx2) = (state.clone(), ctx.clone());
        tokio::spawn(async move {
            let output = execute(&state, &ctx2, None).await;
            state.store(output);
        });
        return (
            StatusCode::ACCEPTED,
            axum::Json(
                json!({"run_id": ctx.run_id, "session_id": ctx.session_id, "status": "PENDING"}),
            ),
        )
            .into_response();
    }
    if !stream {
        let output = execute(&state, &ctx, None).await;
        state.store(output.clone());
        return axum::Json(output).into_response();
    }
    let (tx, rx) = mpsc::channel::<Value>(8);
    tokio::spawn(async move {
        let output = execute(&state, &ctx, Some(&tx)).await;
        state.store(output);
    });
    let frames = futures::stream::unfold(rx, |mut rx| async move {
        let event = rx.recv().await?;
        Some((Ok::<_, std::convert::Infallible>(sse_frame(&event)), rx))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream; charset=utf-8")
        .body(Body::from_stream(frames))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn cancel_run(
    State(state): State<Shared>,
    uri: Uri,
    Path((id, run_id)): Path<(String, String)>,
) -> Response {
    let kind = kind_of(&uri);
    if state.entry(kind, &id).is_none() {
        return not_found(kind);
    }
    state
        .cancelled
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(run_id);
    axum::Json(json!({})).into_response()
}

async fn get_run(
    State(state): State<Shared>,
    uri: Uri,
    Path((id, run_id)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let kind = kind_of(&uri);
    if state.entry(kind, &id).is_none() {
        return not_found(kind);
    }
    if !query.contains_key("session_id") {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            axum::Json(json!({"detail": [{"type": "missing", "loc": ["query", "session_id"], "msg": "Field required", "input": null}]})),
        )
            .into_response();
    }
    match state.run(&run_id) {
        Some(run) if run[kind.remote_key()] == id.as_str() => axum::Json(run).into_response(),
        _ => detail(StatusCode::NOT_FOUND, "Run not found"),
    }
}

async fn list_runs(
    State(state): State<Shared>,
    uri: Uri,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let kind = kind_of(&uri);
    if state.entry(kind, &id).is_none() {
        return not_found(kind);
    }
    let session_id = query.get("session_id");
    let runs = state.runs.lock().unwrap_or_else(PoisonError::into_inner);
    let list: Vec<Value> = runs
        .values()
        .filter(|r| r[kind.remote_key()] == id.as_str())
        .filter(|r| session_id.is_none_or(|s| r["session_id"] == s.as_str()))
        .cloned()
        .collect();
    axum::Json(list).into_response()
}

/// AgentOS's answer to a `db_id` that is not this host's database.
fn unknown_db(state: &HostState, query: &HashMap<String, String>) -> Option<Response> {
    let asked = query.get("db_id").filter(|id| !id.is_empty())?;
    (state.spec.db_id.as_ref() != Some(asked)).then(|| {
        detail(
            StatusCode::NOT_FOUND,
            &format!("No database found with id '{asked}'"),
        )
    })
}

/// The stored runs of `session_id`, oldest first.
fn runs_of(state: &HostState, session_id: &str) -> Vec<Value> {
    let runs = state.runs.lock().unwrap_or_else(PoisonError::into_inner);
    let mut list: Vec<Value> = runs
        .values()
        .filter(|r| r["session_id"] == session_id)
        .cloned()
        .collect();
    list.sort_by_key(|r| r["created_at"].as_u64());
    list
}

/// A session as AgentOS's `SessionSchema` has it, from its runs.
fn session_of(runs: &[Value]) -> Option<Value> {
    let (first, last) = (runs.first()?, runs.last()?);
    let kind = ["agent", "team", "workflow"]
        .into_iter()
        .find(|k| first.get(format!("{k}_id")).is_some())?;
    let component = format!("{kind}_id");
    let mut out = json!({
        "session_id": first["session_id"],
        "session_name": first["input"].get("input_content").unwrap_or(&first["input"]),
        "session_state": {},
        "session_type": kind,
        "user_id": first.get("user_id"),
        "created_at": first["created_at"],
        "updated_at": last["created_at"],
    });
    out[component.as_str()] = first[component.as_str()].clone();
    Some(out)
}

/// `GET /sessions`: the sessions of the stored runs of one type (`agent`
/// by default, as AgentOS), newest first, in AgentOS's page shape.
async fn list_sessions(
    State(state): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Some(refused) = unknown_db(&state, &query) {
        return refused;
    }
    let kind = query.get("type").map_or("agent", String::as_str);
    let ids: HashSet<String> = state
        .runs
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .values()
        .filter_map(|r| r["session_id"].as_str().map(str::to_owned))
        .collect();
    let mut sessions: Vec<Value> = ids
        .iter()
        .filter_map(|id| session_of(&runs_of(&state, id)))
        .filter(|s| s["session_type"] == kind)
        .filter(|s| {
            query
                .get("component_id")
                .is_none_or(|c| s[format!("{kind}_id")] == c.as_str())
        })
        .filter(|s| {
            query
                .get("user_id")
                .is_none_or(|u| s["user_id"] == u.as_str())
        })
        .collect();
    sessions.sort_by_key(|s| std::cmp::Reverse(s["created_at"].as_u64()));
    let total = sessions.len();
    axum::Json(json!({
        "data": sessions,
        "meta": {"page": 1, "limit": total.max(20), "total_pages": 1, "total_count": total, "search_time_ms": 0.0},
    }))
    .into_response()
}

/// `GET /sessions/{session_id}`.
async fn session_detail(
    State(state): State<Shared>,
    Path(session_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Some(refused) = unknown_db(&state, &query) {
        return refused;
    }
    match session_of(&runs_of(&state, &session_id)) {
        Some(session) => axum::Json(session).into_response(),
        None => detail(
            StatusCode::NOT_FOUND,
            &format!("Session with id '{session_id}' not found"),
        ),
    }
}

/// `GET /sessions/{session_id}/runs`: its runs, oldest first.
async fn session_runs(
    State(state): State<Shared>,
    Path(session_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Some(refused) = unknown_db(&state, &query) {
        return refused;
    }
    let runs = runs_of(&state, &session_id);
    if runs.is_empty() {
        return detail(
            StatusCode::NOT_FOUND,
            &format!("Session with ID {session_id} not found"),
        );
    }
    axum::Json(runs).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn start(spec: FakeHostSpec) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(serve(listener, spec, std::future::pending()));
        url
    }

    fn slow(events: usize, gap_ms: u64) -> FakeHostSpec {
        let mut spec = FakeHostSpec::demo_slow();
        spec.workflows[0].behavior = FakeBehavior::SlowStream {
            events,
            gap: Duration::from_millis(gap_ms),
        };
        spec
    }

    #[tokio::test]
    async fn stream_framing_and_lifecycle() {
        let url = start(FakeHostSpec::demo_echo()).await;
        let r = reqwest::Client::new()
            .post(format!("{url}/workflows/echo/runs"))
            .form(&[("message", "hi"), ("session_id", "S"), ("run_id", "R")])
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.headers()["content-type"],
            "text/event-stream; charset=utf-8"
        );
        let body = r.text().await.unwrap();
        let names: Vec<&str> = body
            .lines()
            .filter_map(|l| l.strip_prefix("event: "))
            .collect();
        assert_eq!(
            names,
            [
                "WorkflowStarted",
                "StepStarted",
                "StepOutput",
                "StepCompleted",
                "WorkflowCompleted"
            ]
        );
        let first: Value =
            serde_json::from_str(body.lines().nth(1).unwrap().strip_prefix("data: ").unwrap())
                .unwrap();
        assert_eq!(first["run_id"], "R");
        assert_eq!(first["session_id"], "S");
        assert!(body.contains("\"content\":\"hi\""));
    }

    #[tokio::test]
    async fn cancel_mid_stream_emits_workflow_cancelled() {
        let url = start(slow(1000, 5)).await;
        let http = reqwest::Client::new();
        let mut r = http
            .post(format!("{url}/workflows/slow-story/runs"))
            .form(&[("message", "go"), ("run_id", "R1")])
            .send()
            .await
            .unwrap();
        r.chunk().await.unwrap();
        let c = http
            .post(format!("{url}/workflows/slow-story/runs/R1/cancel"))
            .send()
            .await
            .unwrap();
        assert_eq!(c.text().await.unwrap(), "{}");
        let mut rest = String::new();
        while let Some(chunk) = r.chunk().await.unwrap() {
            rest.push_str(std::str::from_utf8(&chunk).unwrap());
        }
        assert!(rest.contains("event: WorkflowCancelled\n"), "{rest}");
        assert!(rest.trim_end().ends_with('}') && rest.contains("event: WorkflowCompleted\n"));
    }

    #[tokio::test]
    async fn urlencoded_multipart_and_json_bodies() {
        let url = start(FakeHostSpec::demo_echo()).await;
        let http = reqwest::Client::new();
        let form = reqwest::multipart::Form::new()
            .text("message", "from multipart")
            .text("stream", "false")
            .part(
                "files",
                reqwest::multipart::Part::bytes(vec![1, 2, 3]).file_name("a.bin"),
            );
        let out: Value = http
            .post(format!("{url}/workflows/echo/runs"))
            .multipart(form)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(out["content"], "from multipart");
        assert_eq!(out["status"], "COMPLETED");
        let r = http
            .post(format!("{url}/workflows/echo/runs"))
            .json(&json!({"message": "x"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422);
    }

    #[tokio::test]
    async fn background_run_is_polled_to_completion() {
        let url = start(slow(3, 5)).await;
        let http = reqwest::Client::new();
        let r = http
            .post(format!("{url}/workflows/slow-story/runs"))
            .form(&[
                ("message", "go"),
                ("stream", "false"),
                ("background", "true"),
                ("session_id", "S"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let accepted: Value = r.json().await.unwrap();
        let run_id = accepted["run_id"].as_str().unwrap().to_owned();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let run: Value = http
                .get(format!(
                    "{url}/workflows/slow-story/runs/{run_id}?session_id=S"
                ))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if run["status"] == "COMPLETED" {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "never completed: {run}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn security_key_is_enforced() {
        let mut spec = FakeHostSpec::demo_echo();
        spec.security_key = Some("k".into());
        let url = start(spec).await;
        let http = reqwest::Client::new();
        assert_eq!(
            http.get(format!("{url}/health"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
        let r = http.get(format!("{url}/workflows")).send().await.unwrap();
        assert_eq!(r.status(), 401);
        assert_eq!(
            r.json::<Value>().await.unwrap()["detail"],
            "Authorization header required"
        );
        let r = http
            .get(format!("{url}/workflows"))
            .bearer_auth("x")
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.json::<Value>().await.unwrap()["detail"],
            "Invalid authentication token"
        );
        let r = http
            .get(format!("{url}/workflows"))
            .bearer_auth("k")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
}
