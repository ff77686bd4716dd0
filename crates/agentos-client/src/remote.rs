//! [`Remote`]: one agent, team or workflow on a remote AgentOS (or on the
//! gateway), called the way agno's Python `RemoteAgent`, `RemoteTeam` and
//! `RemoteWorkflow` call it. [`RemoteAgent`], [`RemoteTeam`] and
//! [`RemoteWorkflow`] are this one implementation for each
//! [`Kind`](crate::kind::Kind); what differs between them (the collection
//! path, the continue field, the output and event types, the default
//! timeout) is in [`kind`](crate::kind).
//!
//! Same shape as agno's (`agent/remote.py`, `team/remote.py`,
//! `workflow/remote.py`): `new(base_url, id)` with `timeout` and
//! `config_ttl`; `name`, `description` and `db` from `GET /{kind}s/{id}`
//! and `GET /config`, cached for `config_ttl`; `refresh_config`; `arun`,
//! `continue_run` and `cancel_run`, whose form fields are the ones agno's
//! `AgentOSClient` sends (api notes §1.2–1.3).
//!
//! Where it differs from agno, on purpose:
//! - calls are builders that are awaited: `remote.arun("hi").await` is the
//!   non-streaming run, `.stream()` the typed event stream, `.stream_raw()`
//!   the SSE bytes unchanged;
//! - unknown event types and fields are kept, not dropped;
//! - `cancel_run` returns the error instead of `False`;
//! - a token given to the builder is also sent on metadata calls, so
//!   protected hosts work (agno never sends one there);
//! - metadata fetches are async, and concurrent misses share one fetch.

use std::collections::VecDeque;
use std::fmt;
use std::marker::PhantomData;
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
use super::events::StreamEvent;
use super::kind::{Agent, Kind, Team, Workflow};
use super::remote_db::RemoteDb;
use super::sse::{SseDecoder, SseEvent};
use super::types::{Input, Media, OsConfig};
use super::{AgentOsClient, ClientError, WorkflowEvent, escape};

/// agno's default `timeout` for teams and workflows: 300 s. (Agents: 60 s,
/// see [`Kind::DEFAULT_TIMEOUT`].)
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// agno's default `config_ttl`: 300 s.
pub const DEFAULT_CONFIG_TTL: Duration = Duration::from_secs(300);

/// One agent on an AgentOS host: agno's `RemoteAgent`.
///
/// ```no_run
/// use agentos_client::{RemoteAgent, RunEvent};
/// use futures::StreamExt;
///
/// # async fn demo() -> Result<(), agentos_client::ClientError> {
/// let agent = RemoteAgent::new("http://127.0.0.1:7777", "assistant")?;
/// let output = agent.arun("hello").session_id("s-1").await?;
/// println!("{:?}", output.content);
/// let mut events = agent.arun("tell me more").stream().await?;
/// while let Some(event) = events.next().await {
///     if let RunEvent::Agent(e) = event? {
///         println!("{}: {:?}", e.event, e.content);
///     }
/// }
/// # Ok(())
/// # }
/// ```
pub type RemoteAgent = Remote<Agent>;
/// One team on an AgentOS host: agno's `RemoteTeam`.
pub type RemoteTeam = Remote<Team>;
/// One workflow on an AgentOS host: agno's `RemoteWorkflow`.
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
pub type RemoteWorkflow = Remote<Workflow>;
/// Builds a [`RemoteWorkflow`]; see [`Remote::builder`].
pub type RemoteWorkflowBuilder = RemoteBuilder<Workflow>;

/// One agent, team or workflow on an AgentOS host; use it as
/// [`RemoteAgent`], [`RemoteTeam`] or [`RemoteWorkflow`].
///
/// Cloning is cheap: clones share the connection pool and the config cache.
pub struct Remote<K: Kind> {
    inner: Arc<Inner<K>>,
}

impl<K: Kind> Clone for Remote<K> {
    fn clone(&self) -> Self {
        Remote {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<K: Kind> {
    client: AgentOsClient,
    id: String,
    timeout: Duration,
    config_ttl: Duration,
    auth_token: Option<String>,
    /// The entry's document, under the one key `()`.
    config: TtlCache<(), Arc<K::Config>>,
    /// The host's `/config`, under the one key `()`.
    os: TtlCache<(), Arc<OsConfig>>,
}

impl<K: Kind> fmt::Debug for Remote<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(K::TYPE_NAME)
            .field("base_url", &self.inner.client.base_url())
            .field(K::ID_FIELD, &self.inner.id)
            .field("timeout", &self.inner.timeout)
            .field("config_ttl", &self.inner.config_ttl)
            // Never print the token itself.
            .field("auth_token", &self.inner.auth_token.as_ref().map(|_| "***"))
            .finish()
    }
}

/// Builds a [`Remote`]; see [`Remote::builder`].
#[must_use]
pub struct RemoteBuilder<K: Kind> {
    base_url: String,
    id: String,
    timeout: Duration,
    config_ttl: Duration,
    connect_timeout: Option<Duration>,
    auth_token: Option<String>,
    http: Option<reqwest::Client>,
    kind: PhantomData<K>,
}

impl<K: Kind> Clone for RemoteBuilder<K> {
    fn clone(&self) -> Self {
        RemoteBuilder {
            base_url: self.base_url.clone(),
            id: self.id.clone(),
            timeout: self.timeout,
            config_ttl: self.config_ttl,
            connect_timeout: self.connect_timeout,
            auth_token: self.auth_token.clone(),
            http: self.http.clone(),
            kind: PhantomData,
        }
    }
}

impl<K: Kind> fmt::Debug for RemoteBuilder<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(&format!("{}Builder", K::TYPE_NAME))
            .field("base_url", &self.base_url)
            .field(K::ID_FIELD, &self.id)
            .field("timeout", &self.timeout)
            .field("config_ttl", &self.config_ttl)
            .finish_non_exhaustive()
    }
}

impl<K: Kind> RemoteBuilder<K> {
    /// The longest wait for a response head, and for each next body chunk
    /// (an idle gap, reset on every chunk, never a total deadline): agno's
    /// `timeout`. Default [`Kind::DEFAULT_TIMEOUT`] (agno's: 60 s for
    /// agents, 300 s for teams and workflows).
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

    /// Builds the handle. Fails only for a base URL that is not an absolute
    /// `http(s)` URL, or when the HTTP client cannot be built.
    pub fn build(self) -> Result<Remote<K>, ClientError> {
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
        Ok(Remote {
            inner: Arc::new(Inner {
                client: AgentOsClient::from_reqwest(&url, http, connect_timeout),
                id: self.id,
                timeout: self.timeout,
                config_ttl: self.config_ttl,
                auth_token: self.auth_token,
                config: TtlCache::new(1),
                os: TtlCache::new(1),
            }),
        })
    }
}

impl<K: Kind> Remote<K> {
    /// `RemoteAgent(base_url, agent_id)` (or team, or workflow) with agno's
    /// defaults (`timeout` [`Kind::DEFAULT_TIMEOUT`], `config_ttl` 300 s).
    /// A trailing `/` on `base_url` is ignored.
    pub fn new(base_url: impl Into<String>, id: impl Into<String>) -> Result<Self, ClientError> {
        Self::builder(base_url, id).build()
    }

    /// A builder with agno's defaults, for setting `timeout`, `config_ttl`,
    /// a default token or an own HTTP client.
    pub fn builder(base_url: impl Into<String>, id: impl Into<String>) -> RemoteBuilder<K> {
        RemoteBuilder {
            base_url: base_url.into(),
            id: id.into(),
            timeout: K::DEFAULT_TIMEOUT,
            config_ttl: DEFAULT_CONFIG_TTL,
            connect_timeout: None,
            auth_token: None,
            http: None,
            kind: PhantomData,
        }
    }

    /// The entry's id on the host (agno's `id`: always the id it was built
    /// with).
    pub fn id(&self) -> &str {
        &self.inner.id
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

    /// `/agents/{id}`, `/teams/{id}` or `/workflows/{id}`, the id escaped.
    fn prefix(&self) -> String {
        format!("{}/{}", K::COLLECTION, escape(&self.inner.id))
    }

    /// The display name, from the cached document.
    pub async fn name(&self) -> Result<Option<String>, ClientError> {
        Ok(K::name(&*self.cached_config().await?).map(str::to_owned))
    }

    /// The description, from the cached document.
    pub async fn description(&self) -> Result<Option<String>, ClientError> {
        Ok(K::description(&*self.cached_config().await?).map(str::to_owned))
    }

    /// The database and its tables, from the cached document (`db_id`) and
    /// `GET /config` (table names), ready for its session and memory calls.
    /// `None` when the entry has no database.
    pub async fn db(&self) -> Result<Option<RemoteDb>, ClientError> {
        let config = self.cached_config().await?;
        let Some(db_id) = K::db_id(&config) else {
            return Ok(None);
        };
        let os = self.os_config().await?;
        let inner = &self.inner;
        let mut db = RemoteDb::from_config(db_id, inner.client.clone(), &os).timeout(inner.timeout);
        if let Some(token) = &inner.auth_token {
            db = db.auth_token(token.clone());
        }
        Ok(Some(db))
    }

    /// The entry's document, cached for `config_ttl` (agno's
    /// `_agent_config`, `_team_config`, `_workflow_config`). Concurrent calls
    /// on a cold cache share one fetch.
    pub(crate) async fn cached_config(&self) -> Result<Arc<K::Config>, ClientError> {
        let fetch = async { self.fetch_config().await.map(Arc::new) };
        self.inner
            .config
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

    /// Fetches the entry's document and restarts its TTL (agno's
    /// `refresh_config`).
    pub async fn refresh_config(&self) -> Result<Arc<K::Config>, ClientError> {
        let config = Arc::new(self.fetch_config().await?);
        self.inner
            .config
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

    /// `GET /{kind}s/{id}`, always fresh, leaving the cache alone.
    pub(crate) async fn fetch_config(&self) -> Result<K::Config, ClientError> {
        let inner = &self.inner;
        let authorization = inner.auth_token.as_ref().map(|t| format!("Bearer {t}"));
        let doc = inner
            .client
            .get_json(&self.prefix(), inner.timeout, authorization.as_deref())
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
    /// returned [`RunRequest`], then `.await` it for the run's output
    /// ([`Kind::Output`]), or call [`stream`](RunRequest::stream) for typed
    /// events or [`stream_raw`](RunRequest::stream_raw) for the SSE bytes.
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
    pub fn arun(&self, input: impl Into<Input>) -> RunRequest<K> {
        RunRequest {
            remote: self.clone(),
            input: input.into(),
            user_id: None,
            session_id: None,
            images: Vec::new(),
            audio: Vec::new(),
            videos: Vec::new(),
            files: Vec::new(),
            stream_events: None,
            auth_token: None,
            named: Vec::new(),
            fields: Vec::new(),
        }
    }

    /// Continues a paused run (agno's `acontinue_run`). Give what was
    /// resolved (a workflow's `step_requirements`, an agent's `tools` or
    /// `requirements`, a team's `requirements`), then `.await` it or
    /// [`stream`](ContinueRequest::stream) it.
    pub fn continue_run(&self, run_id: impl Into<String>) -> ContinueRequest<K> {
        ContinueRequest {
            remote: self.clone(),
            run_id: run_id.into(),
            resolved: Vec::new(),
            session_id: None,
            user_id: None,
            auth_token: None,
            fields: Vec::new(),
        }
    }

    /// Cancels a run (agno's `acancel_run`). `.await` it: `Ok(())` means the
    /// host accepted the cancel (AgentOS stores the intent and the run stops
    /// at its next check); any failure, a refusal included, is the error.
    /// agno returns `False` for every failure instead.
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
    pub fn cancel_run(&self, run_id: impl Into<String>) -> CancelRequest<K> {
        CancelRequest {
            remote: self.clone(),
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

    /// A non-streaming call: the whole JSON answer as the kind's output.
    async fn post_for_output(
        self,
        path: String,
        form: Vec<(String, String)>,
        auth_token: Option<String>,
    ) -> Result<K::Output, ClientError> {
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

/// One run, being configured; see [`Remote::arun`].
///
/// `.await` it for the output (form field `stream=false`), or call
/// [`stream`](Self::stream) / [`stream_raw`](Self::stream_raw)
/// (`stream=true`). Options only one kind has are in
/// [`kind`](crate::kind) (a workflow's `additional_data`; an agent's or
/// team's `metadata`, `dependencies`, `knowledge_filters`, ...).
#[must_use = "a run request does nothing until it is awaited or streamed"]
pub struct RunRequest<K: Kind = Workflow> {
    remote: Remote<K>,
    input: Input,
    user_id: Option<String>,
    session_id: Option<String>,
    images: Vec<Media>,
    audio: Vec<Media>,
    videos: Vec<Media>,
    files: Vec<Media>,
    stream_events: Option<bool>,
    auth_token: Option<String>,
    /// The named arguments of agno's `arun` that go to the form as kwargs,
    /// sent in [`Kind::NAMED_FIELDS`] order.
    named: Vec<(&'static str, Value)>,
    fields: Vec<(String, Value)>,
}

impl<K: Kind> Clone for RunRequest<K> {
    fn clone(&self) -> Self {
        RunRequest {
            remote: self.remote.clone(),
            input: self.input.clone(),
            user_id: self.user_id.clone(),
            session_id: self.session_id.clone(),
            images: self.images.clone(),
            audio: self.audio.clone(),
            videos: self.videos.clone(),
            files: self.files.clone(),
            stream_events: self.stream_events,
            auth_token: self.auth_token.clone(),
            named: self.named.clone(),
            fields: self.fields.clone(),
        }
    }
}

impl<K: Kind> fmt::Debug for RunRequest<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunRequest")
            .field("remote", &self.remote)
            .field("input", &self.input)
            .field("form", &self.form(false))
            .finish_non_exhaustive()
    }
}

impl<K: Kind> RunRequest<K> {
    /// Sets one of agno's named arguments (replacing an earlier value).
    pub(crate) fn named(mut self, name: &'static str, value: Value) -> Self {
        self.named.retain(|(n, _)| *n != name);
        self.named.push((name, value));
        self
    }

    /// The user the run is for.
    pub fn user_id(mut self, user_id: impl Into<String>) -> Self {
        self.user_id = Some(user_id.into());
        self
    }

    /// The run's id; AgentOS honours it, so the caller knows the id before
    /// the first event (useful to cancel).
    pub fn run_id(self, run_id: impl Into<String>) -> Self {
        self.named("run_id", Value::String(run_id.into()))
    }

    /// The session; AgentOS creates one when none is given.
    pub fn session_id(mut self, session_id: impl Into<String>) -> Self {
        self.session_id = Some(session_id.into());
        self
    }

    /// The session state: an object is sent as JSON, which AgentOS decodes.
    pub fn session_state(self, state: impl Into<Value>) -> Self {
        self.named("session_state", state.into())
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

    /// Whether the stream carries every event (AgentOS default: yes for
    /// workflows). agno sends it on a workflow's streaming runs only, and
    /// on every agent and team run it is given for.
    pub fn stream_events(mut self, stream_events: bool) -> Self {
        self.stream_events = Some(stream_events);
        self
    }

    /// The bearer token for this call (overrides the builder's).
    pub fn auth_token(mut self, token: impl Into<String>) -> Self {
        self.auth_token = Some(token.into());
        self
    }

    /// Any other form field, as agno forwards `**kwargs`: strings as they
    /// are, booleans as `true`/`false`, objects and arrays as JSON; `null` is
    /// not sent.
    pub fn field(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.fields.push((name.into(), value.into()));
        self
    }

    /// The form fields, in agno's order: `message`, `stream`, the ids, the
    /// media, the kind's named arguments, then the other fields.
    pub(crate) fn form(&self, stream: bool) -> Vec<(String, String)> {
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
        for name in K::NAMED_FIELDS {
            if *name == "stream_events" {
                if let Some(stream_events) = self.stream_events
                    && (stream || K::STREAM_EVENTS_ALWAYS)
                {
                    form.push(("stream_events".to_owned(), stream_events.to_string()));
                }
            } else if let Some((_, value)) = self.named.iter().find(|(n, _)| n == name) {
                push_field(&mut form, name, value);
            }
        }
        for (name, value) in &self.fields {
            push_field(&mut form, name, value);
        }
        form
    }

    fn path(&self) -> String {
        format!("{}/runs", self.remote.prefix())
    }

    /// Runs without streaming and returns the run's output.
    pub async fn send(self) -> Result<K::Output, ClientError> {
        let (path, form) = (self.path(), self.form(false));
        self.remote
            .post_for_output(path, form, self.auth_token)
            .await
    }

    /// Runs with streaming and returns the typed events. Fails here when the
    /// host cannot be reached or answers non-2xx; later failures arrive as
    /// the stream's last item.
    pub async fn stream(self) -> Result<EventStream<K::Event>, ClientError> {
        Ok(self.stream_raw().await?.into_events_of())
    }

    /// Runs with streaming and returns the SSE body as it arrives, byte for
    /// byte.
    pub async fn stream_raw(self) -> Result<RawStream, ClientError> {
        let (path, form) = (self.path(), self.form(true));
        self.remote
            .post_for_stream(path, form, self.auth_token)
            .await
    }
}

impl<K: Kind> IntoFuture for RunRequest<K> {
    type Output = Result<K::Output, ClientError>;
    type IntoFuture = BoxFuture<'static, Self::Output>;

    /// `remote.arun(input).await` is the non-streaming run.
    fn into_future(self) -> Self::IntoFuture {
        self.send().boxed()
    }
}

/// Continuing a paused run; see [`Remote::continue_run`].
#[must_use = "a continue request does nothing until it is awaited or streamed"]
pub struct ContinueRequest<K: Kind = Workflow> {
    remote: Remote<K>,
    run_id: String,
    /// What was resolved, sent as the JSON list [`Kind::CONTINUE_FIELD`].
    resolved: Vec<Value>,
    session_id: Option<String>,
    user_id: Option<String>,
    auth_token: Option<String>,
    fields: Vec<(String, Value)>,
}

impl<K: Kind> Clone for ContinueRequest<K> {
    fn clone(&self) -> Self {
        ContinueRequest {
            remote: self.remote.clone(),
            run_id: self.run_id.clone(),
            resolved: self.resolved.clone(),
            session_id: self.session_id.clone(),
            user_id: self.user_id.clone(),
            auth_token: self.auth_token.clone(),
            fields: self.fields.clone(),
        }
    }
}

impl<K: Kind> fmt::Debug for ContinueRequest<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContinueRequest")
            .field("remote", &self.remote)
            .field("run_id", &self.run_id)
            .field("form", &self.form(false))
            .finish_non_exhaustive()
    }
}

impl<K: Kind> ContinueRequest<K> {
    /// Adds resolved items to the list sent as [`Kind::CONTINUE_FIELD`].
    pub(crate) fn resolved(mut self, items: impl IntoIterator<Item = Value>) -> Self {
        self.resolved.extend(items);
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

    /// The form fields in agno's order: the resolved list (always sent, `[]`
    /// when empty), `stream`, the ids, the other fields.
    pub(crate) fn form(&self, stream: bool) -> Vec<(String, String)> {
        let mut form = vec![
            (
                K::CONTINUE_FIELD.to_owned(),
                Value::from(self.resolved.clone()).to_string(),
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
            self.remote.prefix(),
            escape(&self.run_id)
        )
    }

    /// Continues without streaming and returns the run's output.
    pub async fn send(self) -> Result<K::Output, ClientError> {
        let (path, form) = (self.path(), self.form(false));
        self.remote
            .post_for_output(path, form, self.auth_token)
            .await
    }

    /// Continues with streaming and returns the typed events.
    pub async fn stream(self) -> Result<EventStream<K::Event>, ClientError> {
        Ok(self.stream_raw().await?.into_events_of())
    }

    /// Continues with streaming and returns the SSE bytes unchanged.
    pub async fn stream_raw(self) -> Result<RawStream, ClientError> {
        let (path, form) = (self.path(), self.form(true));
        self.remote
            .post_for_stream(path, form, self.auth_token)
            .await
    }
}

impl<K: Kind> IntoFuture for ContinueRequest<K> {
    type Output = Result<K::Output, ClientError>;
    type IntoFuture = BoxFuture<'static, Self::Output>;

    /// `remote.continue_run(id).await` continues without streaming.
    fn into_future(self) -> Self::IntoFuture {
        self.send().boxed()
    }
}

/// Cancelling a run; see [`Remote::cancel_run`].
#[must_use = "a cancel request does nothing until it is awaited"]
pub struct CancelRequest<K: Kind = Workflow> {
    remote: Remote<K>,
    run_id: String,
    session_id: Option<String>,
    auth_token: Option<String>,
}

impl<K: Kind> Clone for CancelRequest<K> {
    fn clone(&self) -> Self {
        CancelRequest {
            remote: self.remote.clone(),
            run_id: self.run_id.clone(),
            session_id: self.session_id.clone(),
            auth_token: self.auth_token.clone(),
        }
    }
}

impl<K: Kind> fmt::Debug for CancelRequest<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelRequest")
            .field("remote", &self.remote)
            .field("run_id", &self.run_id)
            .field("session_id", &self.session_id)
            .finish_non_exhaustive()
    }
}

impl<K: Kind> CancelRequest<K> {
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

    /// Sends the cancel: `POST /{kind}s/{id}/runs/{run_id}/cancel`.
    pub async fn send(self) -> Result<(), ClientError> {
        let remote = &self.remote;
        let inner = &remote.inner;
        inner
            .client
            .cancel_run_at(
                &remote.prefix(),
                &self.run_id,
                self.session_id.as_deref(),
                remote.bearer(self.auth_token.as_deref()),
                inner.timeout,
                http::HeaderMap::new(),
            )
            .await
    }
}

impl<K: Kind> IntoFuture for CancelRequest<K> {
    type Output = Result<(), ClientError>;
    type IntoFuture = BoxFuture<'static, Self::Output>;

    /// `remote.cancel_run(id).await` sends the cancel.
    fn into_future(self) -> Self::IntoFuture {
        self.send().boxed()
    }
}

/// A run's SSE body, byte for byte as the host sent it, chunk by chunk.
///
/// Each gap between chunks is bounded by the remote's `timeout`; a stall
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

    /// Decodes the SSE into typed workflow events.
    pub fn into_events(self) -> EventStream {
        EventStream::new(self)
    }

    /// Decodes the SSE into typed events of any kind: [`WorkflowEvent`] or
    /// [`RunEvent`](crate::RunEvent) (agent and team runs).
    pub fn into_events_of<E: StreamEvent>(self) -> EventStream<E> {
        EventStream::new(self)
    }
}

impl Stream for RawStream {
    type Item = Result<Bytes, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}

/// A run's events, typed: [`WorkflowEvent`]s for a workflow,
/// [`RunEvent`](crate::RunEvent)s for an agent or a team.
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
pub struct EventStream<E = WorkflowEvent> {
    inner: BoxStream<'static, Result<E, ClientError>>,
}

impl<E> fmt::Debug for EventStream<E> {
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

impl<E: StreamEvent> EventStream<E> {
    fn new(raw: RawStream) -> EventStream<E> {
        let state = Decoding {
            raw,
            decoder: SseDecoder::default(),
            ready: VecDeque::new(),
            done: false,
        };
        let inner = futures::stream::unfold(state, |mut state| async move {
            loop {
                if let Some(sse) = state.ready.pop_front() {
                    let event = E::from_sse(&sse).map_err(|e| ClientError::Decode {
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

impl<E> Stream for EventStream<E> {
    type Item = Result<E, ClientError>;

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
    fn stream_events_goes_on_every_agent_run_but_only_streamed_workflow_runs() {
        let agent = crate::RemoteAgent::new("http://127.0.0.1:9/", "a").unwrap();
        let form = agent
            .arun("x")
            .stream_events(false)
            .metadata(json!({"m": 1}))
            .form(false);
        let names: Vec<&str> = form.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["message", "stream", "stream_events", "metadata"]);
        let form = workflow().arun("x").stream_events(false).form(false);
        assert!(form.iter().all(|(k, _)| k != "stream_events"));
    }

    #[test]
    fn each_kind_prints_as_agnos_class() {
        let team = crate::RemoteTeam::builder("http://h/", "t")
            .auth_token("secret")
            .build()
            .unwrap();
        let debug = format!("{team:?}");
        assert!(debug.starts_with("RemoteTeam { base_url: \"http://h\", team_id: \"t\""));
        assert!(!debug.contains("secret"), "{debug}");
        assert_eq!(team.timeout(), DEFAULT_TIMEOUT);
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
