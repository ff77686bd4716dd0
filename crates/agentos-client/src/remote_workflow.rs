//! [`RemoteWorkflow`]: one workflow on a remote AgentOS (or on the gateway),
//! called the way agno's Python `RemoteWorkflow` calls it.
//!
//! Same shape as agno's (`workflow/remote.py`): `new(base_url, workflow_id)`
//! with `timeout` and `config_ttl` (both 300 s by default); `name`,
//! `description` and `db` from `GET /workflows/{id}` and `GET /config`,
//! cached for `config_ttl`; `get_workflow_config` (always fresh) and
//! `refresh_config`; `arun`, `continue_run` and `cancel_run`, whose form
//! fields are the ones agno's `AgentOSClient` sends (api notes §1.2–1.3).
//!
//! Where it differs from agno, on purpose:
//! - calls are builders that are awaited: `workflow.arun("hi").await` is the
//!   non-streaming run, `.stream()` the typed event stream, `.stream_raw()`
//!   the SSE bytes unchanged;
//! - unknown event types and fields are kept, not dropped;
//! - `cancel_run` returns the error instead of `False`;
//! - a token given to the builder is also sent on metadata calls, so
//!   protected hosts work (agno never sends one there);
//! - metadata fetches are async, and concurrent misses share one fetch.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, Stream, StreamExt};
use serde_json::Value;
use url::Url;

use super::cache::TtlCache;
use super::sse::{SseDecoder, SseEvent};
use super::types::{Input, Media, OsConfig, RemoteDb, RunOutput, WorkflowConfig};
use super::{AgentOsClient, ClientError, WorkflowEvent, escape, workflow_path};

/// agno's default `timeout`: 300 s.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// agno's default `config_ttl`: 300 s.
pub const DEFAULT_CONFIG_TTL: Duration = Duration::from_secs(300);

/// One workflow on an AgentOS host.
///
/// Cloning is cheap: clones share the connection pool and the config cache.
///
/// ```no_run
/// use std::time::Duration;
/// use agentos_client::RemoteWorkflow;
///
/// # async fn demo() -> Result<(), agentos_client::ClientError> {
/// let workflow = RemoteWorkflow::builder("http://127.0.0.1:7777", "echo")
///     .timeout(Duration::from_secs(60))
///     .config_ttl(Duration::from_secs(30))
///     .build()?;
/// println!("{} is {:?}", workflow.id(), workflow.name().await?);
/// let output = workflow.arun("hello").session_id("s-1").await?;
/// println!("{:?}", output.content);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RemoteWorkflow {
    inner: Arc<Inner>,
}

struct Inner {
    client: AgentOsClient,
    workflow_id: String,
    timeout: Duration,
    config_ttl: Duration,
    auth_token: Option<String>,
    /// The workflow document, under the one key `()`.
    workflow: TtlCache<(), Arc<WorkflowConfig>>,
    /// The host's `/config`, under the one key `()`.
    os: TtlCache<(), Arc<OsConfig>>,
}

impl fmt::Debug for RemoteWorkflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteWorkflow")
            .field("base_url", &self.inner.client.base_url())
            .field("workflow_id", &self.inner.workflow_id)
            .field("timeout", &self.inner.timeout)
            .field("config_ttl", &self.inner.config_ttl)
            // Never print the token itself.
            .field("auth_token", &self.inner.auth_token.as_ref().map(|_| "***"))
            .finish()
    }
}

/// Builds a [`RemoteWorkflow`]; see [`RemoteWorkflow::builder`].
#[derive(Clone)]
#[must_use]
pub struct RemoteWorkflowBuilder {
    base_url: String,
    workflow_id: String,
    timeout: Duration,
    config_ttl: Duration,
    connect_timeout: Option<Duration>,
    auth_token: Option<String>,
    http: Option<reqwest::Client>,
}

impl fmt::Debug for RemoteWorkflowBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteWorkflowBuilder")
            .field("base_url", &self.base_url)
            .field("workflow_id", &self.workflow_id)
            .field("timeout", &self.timeout)
            .field("config_ttl", &self.config_ttl)
            .finish_non_exhaustive()
    }
}

impl RemoteWorkflowBuilder {
    /// The longest wait for a response head, and for each next body chunk
    /// (an idle gap, reset on every chunk, never a total deadline): agno's
    /// `timeout`. Default 300 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long `name`, `description` and `db` reuse a fetched document:
    /// agno's `config_ttl`. Default 300 s; zero disables the cache.
    pub fn config_ttl(mut self, config_ttl: Duration) -> Self {
        self.config_ttl = config_ttl;
        self
    }

    /// The longest TCP (and TLS) connect. Default: the `timeout`, as agno's
    /// one float bounds every phase.
    pub fn connect_timeout(mut self, connect_timeout: Duration) -> Self {
        self.connect_timeout = Some(connect_timeout);
        self
    }

    /// A bearer token sent on every call, metadata included, unless a call
    /// gives its own `auth_token`. (agno has only the per-call token and sends
    /// none on metadata calls.)
    pub fn auth_token(mut self, token: impl Into<String>) -> Self {
        self.auth_token = Some(token.into());
        self
    }

    /// Uses this `reqwest::Client` (its TLS, proxy and redirect settings)
    /// instead of building one. `connect_timeout` is then the client's own.
    pub fn http_client(mut self, http: reqwest::Client) -> Self {
        self.http = Some(http);
        self
    }

    /// Builds the workflow handle. Fails only for a base URL that is not an
    /// absolute `http(s)` URL, or when the HTTP client cannot be built.
    pub fn build(self) -> Result<RemoteWorkflow, ClientError> {
        let config_error = |reason: String| ClientError::Config {
            base_url: self.base_url.clone(),
            reason,
        };
        let url = Url::parse(&self.base_url).map_err(|e| config_error(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(config_error(format!(
                "the scheme must be http or https, not {}",
                url.scheme()
            )));
        }
        let connect_timeout = self.connect_timeout.unwrap_or(self.timeout);
        let http = match self.http {
            Some(http) => http,
            None => reqwest::Client::builder()
                .connect_timeout(connect_timeout)
                // agno's httpx client follows redirects.
                .redirect(reqwest::redirect::Policy::limited(10))
                .tcp_nodelay(true)
                .pool_idle_timeout(Duration::from_secs(60))
                // Predictable in tests and services; pass `http_client` for
                // environment proxies.
                .no_proxy()
                .build()
                .map_err(|e| config_error(e.to_string()))?,
        };
        Ok(RemoteWorkflow {
            inner: Arc::new(Inner {
                client: AgentOsClient::from_reqwest(&url, http, connect_timeout),
                workflow_id: self.workflow_id,
                timeout: self.timeout,
                config_ttl: self.config_ttl,
                auth_token: self.auth_token,
                workflow: TtlCache::new(1),
                os: TtlCache::new(1),
            }),
        })
    }
}

impl RemoteWorkflow {
    /// `RemoteWorkflow(base_url, workflow_id)` with agno's defaults
    /// (`timeout` and `config_ttl` 300 s). A trailing `/` on `base_url` is
    /// ignored.
    pub fn new(
        base_url: impl Into<String>,
        workflow_id: impl Into<String>,
    ) -> Result<RemoteWorkflow, ClientError> {
        RemoteWorkflow::builder(base_url, workflow_id).build()
    }

    /// A builder with agno's defaults, for setting `timeout`, `config_ttl`,
    /// a default token or an own HTTP client.
    pub fn builder(
        base_url: impl Into<String>,
        workflow_id: impl Into<String>,
    ) -> RemoteWorkflowBuilder {
        RemoteWorkflowBuilder {
            base_url: base_url.into(),
            workflow_id: workflow_id.into(),
            timeout: DEFAULT_TIMEOUT,
            config_ttl: DEFAULT_CONFIG_TTL,
            connect_timeout: None,
            auth_token: None,
            http: None,
        }
    }

    /// The workflow's id on the host (agno's `id`: always `workflow_id`).
    pub fn id(&self) -> &str {
        &self.inner.workflow_id
    }

    /// The host's base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        self.inner.client.base_url()
    }

    /// The response-head and idle timeout.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// How long metadata is cached.
    pub fn config_ttl(&self) -> Duration {
        self.inner.config_ttl
    }

    /// The underlying per-host client.
    pub fn client(&self) -> &AgentOsClient {
        &self.inner.client
    }

    /// The workflow's display name, from the cached `GET /workflows/{id}`.
    pub async fn name(&self) -> Result<Option<String>, ClientError> {
        Ok(self.workflow_config().await?.name.clone())
    }

    /// The workflow's description, from the cached `GET /workflows/{id}`.
    pub async fn description(&self) -> Result<Option<String>, ClientError> {
        Ok(self.workflow_config().await?.description.clone())
    }

    /// The workflow's database and its tables, from the cached
    /// `GET /workflows/{id}` (`db_id`) and `GET /config` (table names).
    /// `None` when the workflow has no database.
    pub async fn db(&self) -> Result<Option<RemoteDb>, ClientError> {
        let workflow = self.workflow_config().await?;
        let Some(db_id) = workflow.db_id.as_deref() else {
            return Ok(None);
        };
        let os = self.os_config().await?;
        Ok(Some(RemoteDb::from_config(db_id, &os)))
    }

    /// The workflow document, cached for `config_ttl` (agno's
    /// `_workflow_config`). Concurrent calls on a cold cache share one fetch.
    pub async fn workflow_config(&self) -> Result<Arc<WorkflowConfig>, ClientError> {
        let fetch = async { self.fetch_workflow_config().await.map(Arc::new) };
        self.inner
            .workflow
            .get_or_fetch((), self.inner.config_ttl, fetch)
            .await
            .map(|fetched| fetched.value)
            .map_err(|e| ClientError::clone(&e))
    }

    /// The host's `/config` document, cached for `config_ttl` (agno's
    /// `_config`).
    pub async fn os_config(&self) -> Result<Arc<OsConfig>, ClientError> {
        let fetch = async { self.fetch_os_config().await.map(Arc::new) };
        self.inner
            .os
            .get_or_fetch((), self.inner.config_ttl, fetch)
            .await
            .map(|fetched| fetched.value)
            .map_err(|e| ClientError::clone(&e))
    }

    /// `GET /workflows/{id}`, always fresh, leaving the cache alone (agno's
    /// `get_workflow_config`).
    pub async fn get_workflow_config(&self) -> Result<WorkflowConfig, ClientError> {
        self.fetch_workflow_config().await
    }

    /// Fetches the workflow document and restarts its TTL (agno's
    /// `refresh_config`).
    pub async fn refresh_config(&self) -> Result<Arc<WorkflowConfig>, ClientError> {
        let config = Arc::new(self.fetch_workflow_config().await?);
        self.inner
            .workflow
            .insert((), config.clone(), self.inner.config_ttl)
            .await;
        Ok(config)
    }

    /// Fetches the host's `/config` and restarts its TTL (agno's
    /// `refresh_os_config`).
    pub async fn refresh_os_config(&self) -> Result<Arc<OsConfig>, ClientError> {
        let config = Arc::new(self.fetch_os_config().await?);
        self.inner
            .os
            .insert((), config.clone(), self.inner.config_ttl)
            .await;
        Ok(config)
    }

    async fn fetch_workflow_config(&self) -> Result<WorkflowConfig, ClientError> {
        let inner = &self.inner;
        let authorization = inner.auth_token.as_ref().map(|t| format!("Bearer {t}"));
        let doc = inner
            .client
            .get_workflow(&inner.workflow_id, authorization.as_deref(), inner.timeout)
            .await?;
        serde_json::from_value(doc).map_err(|e| inner.client.decode_error(e))
    }

    async fn fetch_os_config(&self) -> Result<OsConfig, ClientError> {
        let inner = &self.inner;
        let authorization = inner.auth_token.as_ref().map(|t| format!("Bearer {t}"));
        let doc = inner
            .client
            .get_config(authorization.as_deref(), inner.timeout)
            .await?;
        serde_json::from_value(doc).map_err(|e| inner.client.decode_error(e))
    }

    /// Starts a run with `input` (agno's `arun`). Set options on the
    /// returned [`RunRequest`], then `.await` it for the [`RunOutput`], or
    /// call [`stream`](RunRequest::stream) for typed events or
    /// [`stream_raw`](RunRequest::stream_raw) for the SSE bytes.
    ///
    /// ```no_run
    /// use futures::StreamExt;
    /// use agentos_client::{RemoteWorkflow, WorkflowEvent};
    ///
    /// # async fn demo() -> Result<(), agentos_client::ClientError> {
    /// let workflow = RemoteWorkflow::new("http://127.0.0.1:7777", "slow-story")?;
    /// let mut events = workflow.arun("a dragon").user_id("u-1").stream().await?;
    /// while let Some(event) = events.next().await {
    ///     match event? {
    ///         WorkflowEvent::StepCompleted(step) => println!("{:?}", step.content),
    ///         WorkflowEvent::WorkflowCompleted(done) => println!("done: {:?}", done.content),
    ///         other => println!("{}", other.name()),
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn arun(&self, input: impl Into<Input>) -> RunRequest {
        RunRequest {
            workflow: self.clone(),
            input: input.into(),
            additional_data: None,
            user_id: None,
            run_id: None,
            session_id: None,
            session_state: None,
            images: Vec::new(),
            audio: Vec::new(),
            videos: Vec::new(),
            files: Vec::new(),
            stream_events: None,
            auth_token: None,
            fields: Vec::new(),
        }
    }

    /// Continues a paused run (agno's `acontinue_run`). Give the resolved
    /// [`step_requirements`](ContinueRequest::step_requirements), then
    /// `.await` it or [`stream`](ContinueRequest::stream) it.
    pub fn continue_run(&self, run_id: impl Into<String>) -> ContinueRequest {
        ContinueRequest {
            workflow: self.clone(),
            run_id: run_id.into(),
            step_requirements: Vec::new(),
            session_id: None,
            user_id: None,
            auth_token: None,
            fields: Vec::new(),
        }
    }

    /// Cancels a run (agno's `acancel_run`). `.await` it: `Ok(())` means the
    /// host accepted the cancel (AgentOS stores the intent and the run stops
    /// after its current step); any failure, a refusal included, is the
    /// error. agno returns `False` for every failure instead.
    ///
    /// ```no_run
    /// # use agentos_client::RemoteWorkflow;
    /// # async fn demo(workflow: RemoteWorkflow) {
    /// match workflow.cancel_run("run-1").session_id("s-1").await {
    ///     Ok(()) => println!("cancelled"),
    ///     Err(e) => eprintln!("not cancelled: {e}"),
    /// }
    /// # }
    /// ```
    pub fn cancel_run(&self, run_id: impl Into<String>) -> CancelRequest {
        CancelRequest {
            workflow: self.clone(),
            run_id: run_id.into(),
            session_id: None,
            auth_token: None,
        }
    }

    /// The token for a call: its own, else the builder's.
    fn bearer<'a>(&'a self, own: Option<&'a str>) -> Option<&'a str> {
        own.or(self.inner.auth_token.as_deref())
    }

    /// POSTs `form` to `path` and returns the 2xx response.
    async fn post(
        &self,
        path: &str,
        form: &[(String, String)],
        auth_token: Option<&str>,
    ) -> Result<reqwest::Response, ClientError> {
        let inner = &self.inner;
        inner
            .client
            .post_form(path, form, self.bearer(auth_token), inner.timeout)
            .await
    }

    /// A non-streaming call: the whole JSON answer as a [`RunOutput`].
    async fn post_for_output(
        self,
        path: String,
        form: Vec<(String, String)>,
        auth_token: Option<String>,
    ) -> Result<RunOutput, ClientError> {
        let response = self.post(&path, &form, auth_token.as_deref()).await?;
        let client = &self.inner.client;
        let body = client.read_body(response, self.inner.timeout).await?;
        if body.is_empty() {
            return Err(client.decode_error("the run answered with an empty body"));
        }
        serde_json::from_slice(&body).map_err(|e| client.decode_error(e))
    }

    /// A streaming call: the body as a [`RawStream`].
    async fn post_for_stream(
        self,
        path: String,
        form: Vec<(String, String)>,
        auth_token: Option<String>,
    ) -> Result<RawStream, ClientError> {
        let response = self.post(&path, &form, auth_token.as_deref()).await?;
        let client = &self.inner.client;
        Ok(RawStream {
            base_url: client.base_url().to_owned(),
            inner: client.body_stream(response, self.inner.timeout),
        })
    }
}

/// Appends `name=value` to `form` as agno's client renders a form value:
/// strings as they are, booleans as `true`/`false`, numbers as text, objects
/// and arrays as JSON; `null` drops the field.
fn push_field(form: &mut Vec<(String, String)>, name: &str, value: &Value) {
    let text = match value {
        Value::Null => return,
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        // httpx would repeat the key for a list; JSON is what the AgentOS
        // fields that take lists (media, filters) decode.
        Value::Array(_) | Value::Object(_) => value.to_string(),
    };
    form.push((name.to_owned(), text));
}

/// Appends a media list as the JSON array agno sends, when it is not empty.
fn push_media(form: &mut Vec<(String, String)>, name: &str, media: &[Media]) {
    if media.is_empty() {
        return;
    }
    // Serialising plain strings and JSON values cannot fail.
    if let Ok(json) = serde_json::to_string(media) {
        form.push((name.to_owned(), json));
    }
}

fn push_opt(form: &mut Vec<(String, String)>, name: &str, value: &Option<String>) {
    if let Some(value) = value {
        form.push((name.to_owned(), value.clone()));
    }
}

/// One run, being configured; see [`RemoteWorkflow::arun`].
///
/// `.await` it for the [`RunOutput`] (form field `stream=false`), or call
/// [`stream`](Self::stream) / [`stream_raw`](Self::stream_raw)
/// (`stream=true`).
#[must_use = "a run request does nothing until it is awaited or streamed"]
#[derive(Debug, Clone)]
pub struct RunRequest {
    workflow: RemoteWorkflow,
    input: Input,
    additional_data: Option<Value>,
    user_id: Option<String>,
    run_id: Option<String>,
    session_id: Option<String>,
    session_state: Option<Value>,
    images: Vec<Media>,
    audio: Vec<Media>,
    videos: Vec<Media>,
    files: Vec<Media>,
    stream_events: Option<bool>,
    auth_token: Option<String>,
    fields: Vec<(String, Value)>,
}

impl RunRequest {
    /// Extra data for the run: an object is sent as JSON (AgentOS hands it
    /// to the workflow as that JSON string; see api notes §1.3).
    pub fn additional_data(mut self, data: impl Into<Value>) -> Self {
        self.additional_data = Some(data.into());
        self
    }

    /// The user the run is for.
    pub fn user_id(mut self, user_id: impl Into<String>) -> Self {
        self.user_id = Some(user_id.into());
        self
    }

    /// The run's id; AgentOS honours it, so the caller knows the id before
    /// the first event (useful to cancel).
    pub fn run_id(mut self, run_id: impl Into<String>) -> Self {
        self.run_id = Some(run_id.into());
        self
    }

    /// The session; AgentOS creates one when none is given.
    pub fn session_id(mut self, session_id: impl Into<String>) -> Self {
        self.session_id = Some(session_id.into());
        self
    }

    /// The session state: an object is sent as JSON, which AgentOS decodes.
    pub fn session_state(mut self, state: impl Into<Value>) -> Self {
        self.session_state = Some(state.into());
        self
    }

    /// Images, sent as the JSON array `images`.
    pub fn images(mut self, images: impl IntoIterator<Item = Media>) -> Self {
        self.images.extend(images);
        self
    }

    /// Audio, sent as the JSON array `audio`.
    pub fn audio(mut self, audio: impl IntoIterator<Item = Media>) -> Self {
        self.audio.extend(audio);
        self
    }

    /// Videos, sent as the JSON array `videos`.
    pub fn videos(mut self, videos: impl IntoIterator<Item = Media>) -> Self {
        self.videos.extend(videos);
        self
    }

    /// Files, sent as the JSON array `input_files` (`files` is taken by
    /// multipart uploads on AgentOS's agent and team routes).
    pub fn files(mut self, files: impl IntoIterator<Item = Media>) -> Self {
        self.files.extend(files);
        self
    }

    /// Whether the stream carries step events too (AgentOS default: yes).
    /// Sent on streaming runs only, as agno does.
    pub fn stream_events(mut self, stream_events: bool) -> Self {
        self.stream_events = Some(stream_events);
        self
    }

    /// The bearer token for this call (overrides the builder's).
    pub fn auth_token(mut self, token: impl Into<String>) -> Self {
        self.auth_token = Some(token.into());
        self
    }

    /// Any other form field, as agno forwards `**kwargs` (`metadata`,
    /// `dependencies`, flags, ...): strings as they are, booleans as
    /// `true`/`false`, objects and arrays as JSON; `null` is not sent.
    pub fn field(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.fields.push((name.into(), value.into()));
        self
    }

    /// The form fields, in agno's order.
    fn form(&self, stream: bool) -> Vec<(String, String)> {
        let mut form = vec![
            ("message".to_owned(), self.input.as_str().to_owned()),
            ("stream".to_owned(), stream.to_string()),
        ];
        push_opt(&mut form, "session_id", &self.session_id);
        push_opt(&mut form, "user_id", &self.user_id);
        push_media(&mut form, "images", &self.images);
        push_media(&mut form, "audio", &self.audio);
        push_media(&mut form, "videos", &self.videos);
        push_media(&mut form, "input_files", &self.files);
        if let Some(data) = &self.additional_data {
            push_field(&mut form, "additional_data", data);
        }
        push_opt(&mut form, "run_id", &self.run_id);
        if let Some(state) = &self.session_state {
            push_field(&mut form, "session_state", state);
        }
        if stream && let Some(stream_events) = self.stream_events {
            form.push(("stream_events".to_owned(), stream_events.to_string()));
        }
        for (name, value) in &self.fields {
            push_field(&mut form, name, value);
        }
        form
    }

    fn path(&self) -> String {
        format!("{}/runs", workflow_path(&self.workflow.inner.workflow_id))
    }

    /// Runs without streaming and returns the run's output.
    pub async fn send(self) -> Result<RunOutput, ClientError> {
        let (path, form) = (self.path(), self.form(false));
        self.workflow
            .post_for_output(path, form, self.auth_token)
            .await
    }

    /// Runs with streaming and returns the typed events. Fails here when the
    /// host cannot be reached or answers non-2xx; later failures arrive as
    /// the stream's last item.
    pub async fn stream(self) -> Result<EventStream, ClientError> {
        Ok(self.stream_raw().await?.into_events())
    }

    /// Runs with streaming and returns the SSE body as it arrives, byte for
    /// byte.
    pub async fn stream_raw(self) -> Result<RawStream, ClientError> {
        let (path, form) = (self.path(), self.form(true));
        self.workflow
            .post_for_stream(path, form, self.auth_token)
            .await
    }
}

impl IntoFuture for RunRequest {
    type Output = Result<RunOutput, ClientError>;
    type IntoFuture = BoxFuture<'static, Self::Output>;

    /// `workflow.arun(input).await` is the non-streaming run.
    fn into_future(self) -> Self::IntoFuture {
        self.send().boxed()
    }
}

/// Continuing a paused run; see [`RemoteWorkflow::continue_run`].
#[must_use = "a continue request does nothing until it is awaited or streamed"]
#[derive(Debug, Clone)]
pub struct ContinueRequest {
    workflow: RemoteWorkflow,
    run_id: String,
    step_requirements: Vec<Value>,
    session_id: Option<String>,
    user_id: Option<String>,
    auth_token: Option<String>,
    fields: Vec<(String, Value)>,
}

impl ContinueRequest {
    /// The resolved requirements (the paused output's `step_requirements`,
    /// filled in), sent as the JSON string `step_requirements`.
    pub fn step_requirements(mut self, requirements: impl IntoIterator<Item = Value>) -> Self {
        self.step_requirements.extend(requirements);
        self
    }

    /// The run's session.
    pub fn session_id(mut self, session_id: impl Into<String>) -> Self {
        self.session_id = Some(session_id.into());
        self
    }

    /// The user the run is for.
    pub fn user_id(mut self, user_id: impl Into<String>) -> Self {
        self.user_id = Some(user_id.into());
        self
    }

    /// The bearer token for this call (overrides the builder's).
    pub fn auth_token(mut self, token: impl Into<String>) -> Self {
        self.auth_token = Some(token.into());
        self
    }

    /// Any other form field, rendered as in [`RunRequest::field`].
    pub fn field(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.fields.push((name.into(), value.into()));
        self
    }

    fn form(&self, stream: bool) -> Vec<(String, String)> {
        let mut form = vec![
            (
                "step_requirements".to_owned(),
                Value::from(self.step_requirements.clone()).to_string(),
            ),
            ("stream".to_owned(), stream.to_string()),
        ];
        push_opt(&mut form, "session_id", &self.session_id);
        push_opt(&mut form, "user_id", &self.user_id);
        for (name, value) in &self.fields {
            push_field(&mut form, name, value);
        }
        form
    }

    fn path(&self) -> String {
        format!(
            "{}/runs/{}/continue",
            workflow_path(&self.workflow.inner.workflow_id),
            escape(&self.run_id)
        )
    }

    /// Continues without streaming and returns the run's output.
    pub async fn send(self) -> Result<RunOutput, ClientError> {
        let (path, form) = (self.path(), self.form(false));
        self.workflow
            .post_for_output(path, form, self.auth_token)
            .await
    }

    /// Continues with streaming and returns the typed events.
    pub async fn stream(self) -> Result<EventStream, ClientError> {
        Ok(self.stream_raw().await?.into_events())
    }

    /// Continues with streaming and returns the SSE bytes unchanged.
    pub async fn stream_raw(self) -> Result<RawStream, ClientError> {
        let (path, form) = (self.path(), self.form(true));
        self.workflow
            .post_for_stream(path, form, self.auth_token)
            .await
    }
}

impl IntoFuture for ContinueRequest {
    type Output = Result<RunOutput, ClientError>;
    type IntoFuture = BoxFuture<'static, Self::Output>;

    /// `workflow.continue_run(id).await` continues without streaming.
    fn into_future(self) -> Self::IntoFuture {
        self.send().boxed()
    }
}

/// Cancelling a run; see [`RemoteWorkflow::cancel_run`].
#[must_use = "a cancel request does nothing until it is awaited"]
#[derive(Debug, Clone)]
pub struct CancelRequest {
    workflow: RemoteWorkflow,
    run_id: String,
    session_id: Option<String>,
    auth_token: Option<String>,
}

impl CancelRequest {
    /// The run's session, sent as `?session_id=` (AgentOS requires it from
    /// non-admin callers when user isolation is on).
    pub fn session_id(mut self, session_id: impl Into<String>) -> Self {
        self.session_id = Some(session_id.into());
        self
    }

    /// The bearer token for this call (overrides the builder's).
    pub fn auth_token(mut self, token: impl Into<String>) -> Self {
        self.auth_token = Some(token.into());
        self
    }

    /// Sends the cancel.
    pub async fn send(self) -> Result<(), ClientError> {
        let workflow = &self.workflow;
        let inner = &workflow.inner;
        inner
            .client
            .cancel_workflow_run(
                &inner.workflow_id,
                &self.run_id,
                self.session_id.as_deref(),
                workflow.bearer(self.auth_token.as_deref()),
                inner.timeout,
            )
            .await
    }
}

impl IntoFuture for CancelRequest {
    type Output = Result<(), ClientError>;
    type IntoFuture = BoxFuture<'static, Self::Output>;

    /// `workflow.cancel_run(id).await` sends the cancel.
    fn into_future(self) -> Self::IntoFuture {
        self.send().boxed()
    }
}

/// A run's SSE body, byte for byte as the host sent it, chunk by chunk.
///
/// Each gap between chunks is bounded by the workflow's `timeout`; a stall
/// or a broken connection is the last item
/// ([`ClientError::RemoteServerUnavailable`] or [`ClientError::Transport`]).
pub struct RawStream {
    base_url: String,
    inner: BoxStream<'static, Result<Bytes, ClientError>>,
}

impl fmt::Debug for RawStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawStream")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl RawStream {
    /// Wraps any byte stream, e.g. to decode SSE from another source with
    /// [`into_events`](Self::into_events). `base_url` names the source in
    /// decode errors.
    pub fn new(
        base_url: impl Into<String>,
        stream: impl Stream<Item = Result<Bytes, ClientError>> + Send + 'static,
    ) -> RawStream {
        RawStream {
            base_url: base_url.into(),
            inner: stream.boxed(),
        }
    }

    /// Decodes the SSE into typed events.
    pub fn into_events(self) -> EventStream {
        EventStream::new(self)
    }
}

impl Stream for RawStream {
    type Item = Result<Bytes, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}

/// A run's events, typed.
///
/// An event whose data is not JSON (or does not fit its type) is a
/// [`ClientError::Decode`] item and the stream goes on; a stall or broken
/// connection is the last item. The stream ends when the host closes it
/// (AgentOS sends no end marker).
///
/// ```
/// use futures::{StreamExt, stream};
/// use agentos_client::{RawStream, WorkflowEvent};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let sse = "event: WorkflowStarted\ndata: {\"event\":\"WorkflowStarted\",\"run_id\":\"r\"}\n\n";
/// let raw = RawStream::new("test", stream::iter([Ok(sse.into())]));
/// let events: Vec<_> = raw.into_events().collect().await;
/// assert!(matches!(events[0], Ok(WorkflowEvent::WorkflowStarted(_))));
/// # });
/// ```
pub struct EventStream {
    inner: BoxStream<'static, Result<WorkflowEvent, ClientError>>,
}

impl fmt::Debug for EventStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStream").finish_non_exhaustive()
    }
}

/// The decoding state behind an [`EventStream`].
struct Decoding {
    raw: RawStream,
    decoder: SseDecoder,
    ready: VecDeque<SseEvent>,
    done: bool,
}

impl EventStream {
    fn new(raw: RawStream) -> EventStream {
        let state = Decoding {
            raw,
            decoder: SseDecoder::default(),
            ready: VecDeque::new(),
            done: false,
        };
        let inner = futures::stream::unfold(state, |mut state| async move {
            loop {
                if let Some(sse) = state.ready.pop_front() {
                    let event = WorkflowEvent::from_sse(&sse).map_err(|e| ClientError::Decode {
                        base_url: state.raw.base_url.clone(),
                        reason: format!("event {:?}: {e}", sse.event),
                    });
                    return Some((event, state));
                }
                if state.done {
                    return None;
                }
                match state.raw.next().await {
                    Some(Ok(chunk)) => {
                        let events = state.decoder.feed(&chunk);
                        state.ready.extend(events);
                    }
                    Some(Err(error)) => {
                        state.done = true;
                        return Some((Err(error), state));
                    }
                    // An event not closed by a blank line is dropped (see
                    // `sse`).
                    None => state.done = true,
                }
            }
        });
        EventStream {
            inner: inner.boxed(),
        }
    }
}

impl Stream for EventStream {
    type Item = Result<WorkflowEvent, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn workflow() -> RemoteWorkflow {
        RemoteWorkflow::new("http://127.0.0.1:9/", "echo").unwrap()
    }

    #[test]
    fn run_form_matches_agno_field_order_and_encoding() {
        let request = workflow()
            .arun("hello")
            .session_id("S1")
            .user_id("U1")
            .run_id("R-fixed")
            .session_state(json!({"a": 1}))
            .stream_events(true)
            .field("metadata", json!({"m": 2}))
            .field("custom_flag", true)
            .field("dropped", Value::Null);
        let pairs = |form: Vec<(String, String)>| -> Vec<String> {
            form.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
        };
        assert_eq!(
            pairs(request.form(false)),
            [
                "message=hello",
                "stream=false",
                "session_id=S1",
                "user_id=U1",
                "run_id=R-fixed",
                r#"session_state={"a":1}"#,
                r#"metadata={"m":2}"#,
                "custom_flag=true",
            ]
        );
        // stream_events goes on the streaming path only, as in agno.
        assert!(pairs(request.form(true)).contains(&"stream_events=true".to_owned()));
    }

    #[test]
    fn files_are_sent_as_input_files() {
        let form = workflow()
            .arun("x")
            .files([Media::from_url("http://f/a.txt")])
            .form(false);
        let (name, value) = &form[2];
        assert_eq!(name, "input_files");
        let files: Value = serde_json::from_str(value).unwrap();
        assert_eq!(files[0]["url"], "http://f/a.txt");
    }

    #[test]
    fn bad_base_urls_are_config_errors() {
        for url in ["not a url", "ftp://h/"] {
            let error = RemoteWorkflow::new(url, "w").unwrap_err();
            assert!(matches!(error, ClientError::Config { .. }), "{error:?}");
        }
        assert_eq!(workflow().base_url(), "http://127.0.0.1:9");
    }
}
