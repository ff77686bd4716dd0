//! agentos-client: a Rust client for [agno](https://pypi.org/project/agno/)
//! AgentOS hosts, and for agentos-gateway, which speaks the same API.
//!
//! [`RemoteAgent`], [`RemoteTeam`] and [`RemoteWorkflow`] are the Rust
//! counterparts of agno's Python classes of the same names, with the same
//! shape and defaults (`timeout` 60 s for agents and 300 s for teams and
//! workflows, `config_ttl = 300`): runs, typed and raw event streams, cancel,
//! continue and cached metadata for one entry. They are one implementation,
//! [`Remote`], for each [`kind`]. [`RemoteDb`] is an entry's database, with
//! agno's session and memory calls. Under them, [`AgentOsClient`] is one
//! pooled HTTP client per host, with its timeouts and its error mapping to
//! [`ClientError`]. The crate is client-side only: it depends on reqwest and
//! never on a server framework.
//!
//! agentos-gateway depends on this crate too: its metadata cache calls
//! [`AgentOsClient`] and is a [`cache::TtlCache`], so "unreachable", "timed
//! out", TTL expiry and coalescing mean the same in the gateway and here.
//!
//! Files:
//! - `lib.rs`: [`AgentOsClient`] and the AgentOS paths.
//! - `error.rs`: [`ClientError`] and [`UnavailablePhase`].
//! - [`cache`]: the TTL + coalescing cache.
//! - [`sse`]: the Server-Sent-Events decoder.
//! - `events.rs`: [`WorkflowEvent`] and [`RunEvent`], the typed stream
//!   events.
//! - `types.rs`: [`Input`], [`Media`], the run outputs ([`RunOutput`],
//!   [`AgentRunOutput`], [`TeamRunOutput`]), the entry documents and
//!   [`OsConfig`].
//! - `remote.rs`: [`Remote`]: runs, streams, cancel, continue and cached
//!   metadata for one agent, team or workflow.
//! - [`kind`]: what differs between agents, teams and workflows.
//! - `remote_db.rs`: [`RemoteDb`]: sessions and memories, and their types.
//!
//! ```no_run
//! use agentos_client::{MemoriesQuery, RemoteAgent, RemoteWorkflow};
//!
//! # async fn demo() -> Result<(), agentos_client::ClientError> {
//! let workflow = RemoteWorkflow::new("http://127.0.0.1:7777", "echo")?;
//! let output = workflow.arun("hello").await?;
//! println!("{:?}", output.content);
//!
//! let agent = RemoteAgent::new("http://127.0.0.1:7777", "assistant")?;
//! let output = agent.arun("hello").user_id("u-1").await?;
//! println!("{:?}", output.content);
//! if let Some(db) = agent.db().await? {
//!     let query = MemoriesQuery { user_id: Some("u-1".into()), ..Default::default() };
//!     for memory in db.get_memories(&query).await?.data {
//!         println!("{}", memory.memory);
//!     }
//! }
//! # Ok(())
//! # }
//! ```

pub mod cache;
mod error;
mod events;
pub mod kind;
mod remote;
mod remote_db;
pub mod sse;
mod types;

use std::error::Error as _;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::BoxStream;
use http::{HeaderMap, HeaderValue, header};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use url::Url;

pub use error::{ClientError, UnavailablePhase, detail_of};
pub use events::{
    AgentEvent, EventBase, RunEvent, StepEvent, StepIndex, StreamEvent, TeamEvent,
    WorkflowCancelled, WorkflowCompleted, WorkflowError, WorkflowEvent, WorkflowPaused,
    WorkflowStarted,
};
pub use remote::{
    CancelRequest, ContinueRequest, DEFAULT_CONFIG_TTL, DEFAULT_TIMEOUT, EventStream, RawStream,
    Remote, RemoteAgent, RemoteBuilder, RemoteTeam, RemoteWorkflow, RemoteWorkflowBuilder,
    RunRequest,
};
pub use remote_db::{
    DbFilter, MemoriesQuery, MemoryInput, MemoryStatsQuery, NewSession, OptimizeMemories,
    OptimizeMemoriesResponse, PaginatedResponse, PaginationInfo, RemoteDb, RunsQuery,
    SessionDetailSchema, SessionFilter, SessionRunPreviewSchema, SessionRunSchema, SessionSchema,
    SessionType, SessionUpdate, SessionsQuery, UserMemorySchema, UserStatsSchema,
};
pub use types::{
    AgentConfig, AgentRunOutput, DbInfo, DomainDbs, Input, Media, OsConfig, RunOutput, RunStatus,
    TeamConfig, TeamRunOutput, WorkflowConfig,
};

/// Everything but RFC 3986 unreserved characters is escaped in an id put in
/// a path segment or a query value.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The most of an error body kept as its `detail`.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// `/workflows/{workflow_id}`, the id escaped as a path segment.
///
/// ```
/// assert_eq!(agentos_client::workflow_path("a b/c"), "/workflows/a%20b%2Fc");
/// ```
pub fn workflow_path(workflow_id: &str) -> String {
    format!("/workflows/{}", escape(workflow_id))
}

/// The path of an AgentOS's config document.
pub const CONFIG_PATH: &str = "/config";

/// `s` escaped for a path segment or a query value.
fn escape(s: &str) -> impl std::fmt::Display + '_ {
    utf8_percent_encode(s, COMPONENT)
}

/// `{prefix}/runs/{run_id}/cancel[?session_id=...]`: the cancel route
/// agents, teams and workflows share under their path prefix.
pub fn cancel_path(prefix: &str, run_id: &str, session_id: Option<&str>) -> String {
    let mut path = format!("{prefix}/runs/{}/cancel", escape(run_id));
    if let Some(session_id) = session_id {
        path.push_str(&format!("?session_id={}", escape(session_id)));
    }
    path
}

/// A pooled HTTP client bound to one AgentOS base URL.
///
/// Cloning is cheap; clones share the connection pool.
#[derive(Debug, Clone)]
pub struct AgentOsClient {
    base_url: String,
    http: reqwest::Client,
    connect_timeout: Duration,
}

impl AgentOsClient {
    /// Builds the client the gateway uses for a host. `connect_timeout`
    /// bounds the TCP (and TLS) connect only; per-call timeouts are given to
    /// each call. Redirects are not followed (a proxy passes them back) and
    /// environment proxies are ignored.
    pub fn new(base_url: &Url, connect_timeout: Duration) -> Result<Self, reqwest::Error> {
        let http = Self::builder(connect_timeout).build()?;
        Ok(AgentOsClient::from_reqwest(base_url, http, connect_timeout))
    }

    /// As [`AgentOsClient::new`], with the given TLS settings (the
    /// gateway's: the system's roots plus its configured CA file) instead
    /// of the platform's.
    pub fn with_tls(
        base_url: &Url,
        connect_timeout: Duration,
        tls: rustls::ClientConfig,
    ) -> Result<Self, reqwest::Error> {
        let http = Self::builder(connect_timeout)
            .tls_backend_preconfigured(tls)
            .build()?;
        Ok(AgentOsClient::from_reqwest(base_url, http, connect_timeout))
    }

    /// The settings both constructors share.
    fn builder(connect_timeout: Duration) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            // A proxy passes redirects back to its caller instead of following them.
            .redirect(reqwest::redirect::Policy::none())
            .tcp_nodelay(true)
            // Below uvicorn's 5 s keep-alive, as the proxy's own pools.
            .pool_idle_timeout(Duration::from_secs(4))
            .pool_max_idle_per_host(1024)
            // Environment proxies would silently reroute host traffic.
            .no_proxy()
    }

    /// Wraps an existing `reqwest::Client` (its own TLS, proxy and redirect
    /// settings). `connect_timeout` is only reported in errors; the client's
    /// own setting is what applies.
    pub fn from_reqwest(base_url: &Url, http: reqwest::Client, connect_timeout: Duration) -> Self {
        AgentOsClient {
            base_url: base_url.as_str().trim_end_matches('/').to_owned(),
            http,
            connect_timeout,
        }
    }

    /// The host's base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The underlying pooled client, for the streaming proxy path.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// `base_url` joined with an absolute path (and optional query).
    pub fn url(&self, path_and_query: &str) -> String {
        let mut url = String::with_capacity(self.base_url.len() + path_and_query.len());
        url.push_str(&self.base_url);
        url.push_str(path_and_query);
        url
    }

    /// `GET path` and decode the JSON answer, all within `timeout`.
    /// `authorization` is the whole `Authorization` header value
    /// (`"Bearer <token>"`, or whatever form a caller used), sent unchanged.
    pub async fn get_json(
        &self,
        path: &str,
        timeout: Duration,
        authorization: Option<&str>,
    ) -> Result<serde_json::Value, ClientError> {
        let mut request = self.http.get(self.url(path));
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, self.authorization(value)?);
        }
        self.call_json(request, timeout)
            .await?
            .ok_or_else(|| self.decode_error("the host answered with an empty body"))
    }

    /// `method path_and_query` with `body` as JSON (when given), as agno's
    /// `AgentOSClient` makes its session, memory and other database calls;
    /// all within `timeout`. Returns the decoded JSON answer, or `None` for
    /// an empty body (a 204), as agno does. A non-2xx status is a
    /// [`ClientError::Status`] with the host's `detail`.
    pub async fn request_json(
        &self,
        method: http::Method,
        path_and_query: &str,
        body: Option<&serde_json::Value>,
        bearer: Option<&str>,
        timeout: Duration,
    ) -> Result<Option<serde_json::Value>, ClientError> {
        let mut request = self.http.request(method, self.url(path_and_query));
        if let Some(body) = body {
            request = request
                .header(header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        self.call_json(request, timeout).await
    }

    /// Sends `request` and decodes its whole JSON answer (`None` when the
    /// body is empty), all within `timeout`.
    async fn call_json(
        &self,
        request: reqwest::RequestBuilder,
        timeout: Duration,
    ) -> Result<Option<serde_json::Value>, ClientError> {
        self.within(timeout, async {
            let response = self.send(request, timeout).await?;
            let body = response
                .bytes()
                .await
                .map_err(|e| self.classify(&e, timeout))?;
            if body.is_empty() {
                return Ok(None);
            }
            serde_json::from_slice(&body)
                .map(Some)
                .map_err(|e| self.decode_error(e))
        })
        .await
    }

    /// `call`, or the response timeout error when it takes over `timeout`.
    async fn within<T>(
        &self,
        timeout: Duration,
        call: impl Future<Output = Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        match tokio::time::timeout(timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(self.timeout_error(timeout)),
        }
    }

    /// A workflow's `GET /workflows/{workflow_id}` document (agno's
    /// `WorkflowResponse`), all within `timeout`. Unlike agno's client, an
    /// `Authorization` value (e.g. `"Bearer <token>"`) can be sent, so
    /// protected hosts work.
    pub async fn get_workflow(
        &self,
        workflow_id: &str,
        authorization: Option<&str>,
        timeout: Duration,
    ) -> Result<serde_json::Value, ClientError> {
        self.get_json(&workflow_path(workflow_id), timeout, authorization)
            .await
    }

    /// The host's `GET /config` document (agno's `ConfigResponse`), all
    /// within `timeout`, with `authorization` as the whole header value.
    pub async fn get_config(
        &self,
        authorization: Option<&str>,
        timeout: Duration,
    ) -> Result<serde_json::Value, ClientError> {
        self.get_json(CONFIG_PATH, timeout, authorization).await
    }

    /// `value` as a sensitive header value (kept out of debug output, as
    /// reqwest's `bearer_auth` does). A value no header can carry is a
    /// [`ClientError::Config`] here rather than an opaque send failure that
    /// would count against the host's health.
    fn authorization(&self, value: &str) -> Result<HeaderValue, ClientError> {
        let mut value = HeaderValue::from_str(value).map_err(|_| ClientError::Config {
            base_url: self.base_url.clone(),
            reason: "the Authorization value is not a valid header value".to_owned(),
        })?;
        value.set_sensitive(true);
        Ok(value)
    }

    /// `POST path` with a `application/x-www-form-urlencoded` body, as agno
    /// sends runs. Returns once the response head arrived (within
    /// `timeout`) with a 2xx status; any other status is a
    /// [`ClientError::Status`] carrying the host's `detail`.
    pub async fn post_form(
        &self,
        path: &str,
        form: &[(String, String)],
        bearer: Option<&str>,
        timeout: Duration,
    ) -> Result<reqwest::Response, ClientError> {
        let mut request = self.http.post(self.url(path)).form(form);
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        self.send(request, timeout).await
    }

    /// `POST /workflows/{workflow_id}/runs/{run_id}/cancel` (with
    /// `?session_id=` when given), no body, within `timeout`. `Ok` means the
    /// host accepted the cancel; every failure is returned.
    pub async fn cancel_workflow_run(
        &self,
        workflow_id: &str,
        run_id: &str,
        session_id: Option<&str>,
        bearer: Option<&str>,
        timeout: Duration,
    ) -> Result<(), ClientError> {
        let prefix = workflow_path(workflow_id);
        self.cancel_run_at(
            &prefix,
            run_id,
            session_id,
            bearer,
            timeout,
            HeaderMap::new(),
        )
        .await
    }

    /// `POST {prefix}/runs/{run_id}/cancel`: the cancel route agents
    /// (`/agents/{id}`), teams and workflows share, with `headers` added
    /// (a gateway passes its trace context on). `prefix` is a path already
    /// escaped; see [`cancel_workflow_run`](Self::cancel_workflow_run).
    pub async fn cancel_run_at(
        &self,
        prefix: &str,
        run_id: &str,
        session_id: Option<&str>,
        bearer: Option<&str>,
        timeout: Duration,
        headers: HeaderMap,
    ) -> Result<(), ClientError> {
        let path = cancel_path(prefix, run_id, session_id);
        let mut request = self
            .http
            .post(self.url(&path))
            .headers(headers)
            .header(http::header::CONTENT_LENGTH, "0");
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        self.within(timeout, async {
            let response = self.send(request, timeout).await?;
            // Drain the (tiny) body so the connection goes back to the pool.
            response
                .bytes()
                .await
                .map_err(|e| self.classify(&e, timeout))?;
            Ok(())
        })
        .await
    }

    /// Sends `request`, waiting at most `timeout` for the response head; a
    /// non-2xx status becomes [`ClientError::Status`].
    pub async fn send(
        &self,
        request: reqwest::RequestBuilder,
        timeout: Duration,
    ) -> Result<reqwest::Response, ClientError> {
        let response = match tokio::time::timeout(timeout, request.send()).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => return Err(self.classify(&e, timeout)),
            Err(_) => return Err(self.timeout_error(timeout)),
        };
        if response.status().is_success() {
            return Ok(response);
        }
        Err(self.status_error(response, timeout).await)
    }

    /// The [`ClientError::Status`] for a non-2xx `response`, with the
    /// `detail` from (at most 64 KiB of) its body.
    async fn status_error(&self, response: reqwest::Response, timeout: Duration) -> ClientError {
        let status = response.status();
        let mut body = BytesMut::new();
        let mut chunks = response.bytes_stream();
        let read = async {
            while let Some(Ok(chunk)) = chunks.next().await {
                body.extend_from_slice(&chunk);
                if body.len() >= MAX_ERROR_BODY {
                    body.truncate(MAX_ERROR_BODY);
                    break;
                }
            }
        };
        // The status is the answer; a body that stalls or breaks only costs
        // the detail.
        let _ = tokio::time::timeout(timeout, read).await;
        let detail = if body.is_empty() {
            status.canonical_reason().unwrap_or_default().to_owned()
        } else {
            detail_of(&body)
        };
        ClientError::Status {
            base_url: self.base_url.clone(),
            status,
            detail,
        }
    }

    /// The body of `response` as a stream that fails (and then ends) when no
    /// chunk arrives within `idle`, or when the connection breaks.
    pub fn body_stream(
        &self,
        response: reqwest::Response,
        idle: Duration,
    ) -> BoxStream<'static, Result<Bytes, ClientError>> {
        let client = self.clone();
        let body = response.bytes_stream().boxed();
        futures::stream::unfold(Some(body), move |body| {
            let client = client.clone();
            async move {
                let mut body = body?;
                match tokio::time::timeout(idle, body.next()).await {
                    Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some(body))),
                    Ok(None) => None,
                    Ok(Some(Err(e))) => Some((Err(client.classify(&e, idle)), None)),
                    Err(_) => Some((Err(client.idle_timeout_error(idle)), None)),
                }
            }
        })
        .boxed()
    }

    /// The whole body of `response`, each gap between chunks at most `idle`.
    pub async fn read_body(
        &self,
        response: reqwest::Response,
        idle: Duration,
    ) -> Result<Bytes, ClientError> {
        let mut chunks = self.body_stream(response, idle);
        let mut body = BytesMut::new();
        while let Some(chunk) = chunks.next().await {
            body.extend_from_slice(&chunk?);
        }
        Ok(body.freeze())
    }

    /// The error for "no response head within `after`".
    pub fn timeout_error(&self, after: Duration) -> ClientError {
        ClientError::RemoteServerUnavailable {
            base_url: self.base_url.clone(),
            phase: UnavailablePhase::ResponseTimeout { after },
        }
    }

    /// The error for "no next body chunk within `after`".
    pub fn idle_timeout_error(&self, after: Duration) -> ClientError {
        ClientError::RemoteServerUnavailable {
            base_url: self.base_url.clone(),
            phase: UnavailablePhase::IdleTimeout { after },
        }
    }

    /// A [`ClientError::Decode`] for this host.
    pub fn decode_error(&self, reason: impl std::fmt::Display) -> ClientError {
        ClientError::Decode {
            base_url: self.base_url.clone(),
            reason: reason.to_string(),
        }
    }

    /// Maps a reqwest failure to the phase it happened in.
    pub fn classify(&self, e: &reqwest::Error, timeout: Duration) -> ClientError {
        let base_url = self.base_url.clone();
        if e.is_connect() {
            let phase = if e.is_timeout() || has_source::<tokio::time::error::Elapsed>(e) {
                UnavailablePhase::ConnectTimeout {
                    after: self.connect_timeout,
                }
            } else {
                UnavailablePhase::Connect {
                    // A name that does not resolve says so, as the
                    // gateway's own connections do.
                    reason: match (e.is_dns(), e.url().and_then(|url| url.host_str())) {
                        (true, Some(host)) => {
                            format!("DNS look-up of {host} failed: {}", root_cause(e))
                        }
                        _ => root_cause(e),
                    },
                }
            };
            return ClientError::RemoteServerUnavailable { base_url, phase };
        }
        if e.is_timeout() {
            return self.timeout_error(timeout);
        }
        ClientError::Transport {
            base_url,
            reason: root_cause(e),
        }
    }
}

fn has_source<E: std::error::Error + 'static>(e: &reqwest::Error) -> bool {
    let mut source = e.source();
    while let Some(s) = source {
        if s.is::<E>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// The innermost message of an error chain: "connection reset by peer"
/// rather than "error sending request".
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message = s.to_string();
        source = s.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancels_go_to_the_entry_s_own_route() {
        assert_eq!(
            cancel_path("/teams/t", "r 1/x", Some("s-1")),
            "/teams/t/runs/r%201%2Fx/cancel?session_id=s-1"
        );
        assert_eq!(
            cancel_path("/agents/a", "r", None),
            "/agents/a/runs/r/cancel"
        );
    }
}
