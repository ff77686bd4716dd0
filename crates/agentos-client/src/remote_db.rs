//! [`RemoteDb`]: the database of a remote agent, team or workflow, and its
//! session and memory calls, as agno's `RemoteDb` (`remote/base.py`) makes
//! them through `AgentOSClient` (`client/os.py`).
//!
//! Every call sends the database's id as `db_id`, so it reaches this
//! database on a host with several (agno's `RemoteDb` passes only what the
//! caller gives; its `AgentOSClient` calls take `db_id`). `table` is sent
//! only when a call's options set it, as in agno: AgentOS answers 404 for a
//! table that does not exist yet. Query parameters and JSON bodies are
//! agno's, in agno's order, defaults included (`limit=20`, `page=1`, ...).
//!
//! Answers are typed after agno's schemas (`SessionSchema`,
//! `UserMemorySchema`, `PaginatedResponse`, ...), lenient where agno's are
//! unions, and every field they do not name is kept in `extra`.

use std::fmt;
use std::time::Duration;

use http::Method;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::types::{DomainDbs, OsConfig};
use super::{AgentOsClient, ClientError, escape};

/// agno's `AgentOSClient` default `timeout`: 60 s.
const DEFAULT_DB_TIMEOUT: Duration = Duration::from_secs(60);

/// A remote database: its id, its table names from the host's `/config`,
/// and the session and memory calls agno's `RemoteDb` makes.
///
/// Get one from [`Remote::db`](crate::Remote::db) (it shares the remote's
/// connection pool, timeout and token), or build one with
/// [`RemoteDb::new`].
///
/// ```no_run
/// use agentos_client::{RemoteAgent, SessionsQuery, SessionType};
///
/// # async fn demo() -> Result<(), agentos_client::ClientError> {
/// let agent = RemoteAgent::new("http://127.0.0.1:7777", "assistant")?;
/// if let Some(db) = agent.db().await? {
///     let query = SessionsQuery { session_type: Some(SessionType::Agent), ..Default::default() };
///     for session in db.get_sessions(&query).await?.data {
///         println!("{} {}", session.session_id, session.session_name);
///     }
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RemoteDb {
    /// The database id.
    pub id: String,
    /// The sessions table.
    pub session_table_name: Option<String>,
    /// The knowledge table.
    pub knowledge_table_name: Option<String>,
    /// The memories table.
    pub memory_table_name: Option<String>,
    /// The learnings table.
    pub learnings_table_name: Option<String>,
    /// The metrics table.
    pub metrics_table_name: Option<String>,
    /// The evals table.
    pub eval_table_name: Option<String>,
    /// The traces table.
    pub traces_table_name: Option<String>,
    client: AgentOsClient,
    timeout: Duration,
    auth_token: Option<String>,
}

impl fmt::Debug for RemoteDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteDb")
            .field("id", &self.id)
            .field("base_url", &self.client.base_url())
            .field("session_table_name", &self.session_table_name)
            .field("memory_table_name", &self.memory_table_name)
            // Never print the token itself.
            .field("auth_token", &self.auth_token.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

impl PartialEq for RemoteDb {
    /// The same database on the same host, with the same tables.
    fn eq(&self, other: &Self) -> bool {
        let tables = |db: &RemoteDb| {
            [
                db.session_table_name.clone(),
                db.knowledge_table_name.clone(),
                db.memory_table_name.clone(),
                db.learnings_table_name.clone(),
                db.metrics_table_name.clone(),
                db.eval_table_name.clone(),
                db.traces_table_name.clone(),
            ]
        };
        self.id == other.id
            && self.client.base_url() == other.client.base_url()
            && tables(self) == tables(other)
    }
}

impl RemoteDb {
    /// The database `id` on `client`'s host, without table names, with
    /// agno's `AgentOSClient` timeout (60 s).
    pub fn new(client: AgentOsClient, id: impl Into<String>) -> RemoteDb {
        RemoteDb {
            id: id.into(),
            session_table_name: None,
            knowledge_table_name: None,
            memory_table_name: None,
            learnings_table_name: None,
            metrics_table_name: None,
            eval_table_name: None,
            traces_table_name: None,
            client,
            timeout: DEFAULT_DB_TIMEOUT,
            auth_token: None,
        }
    }

    /// The database `db_id` with the first table of each domain of `config`
    /// naming it, as agno's `RemoteDb.from_config` picks them.
    pub fn from_config(db_id: &str, client: AgentOsClient, config: &OsConfig) -> RemoteDb {
        let table = |domain: &Option<DomainDbs>| {
            domain
                .as_ref()
                .and_then(|d| d.dbs.iter().find(|db| db.db_id == db_id))
                .and_then(|db| db.tables.first().cloned())
        };
        RemoteDb {
            session_table_name: table(&config.session),
            knowledge_table_name: table(&config.knowledge),
            memory_table_name: table(&config.memory),
            learnings_table_name: table(&config.learning),
            metrics_table_name: table(&config.metrics),
            eval_table_name: table(&config.evals),
            traces_table_name: table(&config.traces),
            ..RemoteDb::new(client, db_id)
        }
    }

    /// Each call's timeout (the whole call: head and body).
    pub fn timeout(mut self, timeout: Duration) -> RemoteDb {
        self.timeout = timeout;
        self
    }

    /// A bearer token sent on every call.
    pub fn auth_token(mut self, token: impl Into<String>) -> RemoteDb {
        self.auth_token = Some(token.into());
        self
    }

    /// The host's base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        self.client.base_url()
    }

    /// One call: `method path?query` (with `db_id` after the call's own
    /// parameters, at the place agno's dict puts it) and an optional JSON
    /// body; the JSON answer, or `None` for an empty one.
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: Query,
        body: Option<Value>,
    ) -> Result<Option<Value>, ClientError> {
        let path = match query.encode(&self.id) {
            q if q.is_empty() => path.to_owned(),
            q => format!("{path}?{q}"),
        };
        self.client
            .request_json(
                method,
                &path,
                body.as_ref(),
                self.auth_token.as_deref(),
                self.timeout,
            )
            .await
    }

    /// A call whose answer decodes into `T`.
    async fn typed<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: Query,
        body: Option<Value>,
    ) -> Result<T, ClientError> {
        let answer = self.call(method, path, query, body).await?;
        serde_json::from_value(answer.unwrap_or(Value::Null))
            .map_err(|e| self.client.decode_error(e))
    }

    /// A call whose answer is ignored (deletes answer 204).
    async fn unit(
        &self,
        method: Method,
        path: &str,
        query: Query,
        body: Option<Value>,
    ) -> Result<(), ClientError> {
        self.call(method, path, query, body).await.map(drop)
    }

    // Sessions: agno's `AgentOSClient` session calls, `client/os.py`.

    /// `GET /sessions`: a page of sessions (agno's `get_sessions`).
    pub async fn get_sessions(
        &self,
        query: &SessionsQuery,
    ) -> Result<PaginatedResponse<SessionSchema>, ClientError> {
        let q = Query::default()
            .opt("type", query.session_type.map(SessionType::as_str))
            .put("limit", query.limit)
            .put("page", query.page)
            .put("sort_by", &query.sort_by)
            .put("sort_order", &query.sort_order)
            .db_id()
            .opt("table", query.table.as_deref())
            .opt("user_id", query.user_id.as_deref())
            .opt("session_name", query.session_name.as_deref())
            .opt("component_id", query.component_id.as_deref());
        self.typed(Method::GET, "/sessions", q, None).await
    }

    /// `GET /sessions/{id}`: one session with its chat history (agno's
    /// `get_session`).
    pub async fn get_session(
        &self,
        session_id: &str,
        filter: &SessionFilter,
    ) -> Result<SessionDetailSchema, ClientError> {
        let path = format!("/sessions/{}", escape(session_id));
        self.typed(Method::GET, &path, filter.query(), None).await
    }

    /// `POST /sessions`: creates a session (agno's `create_session`; no
    /// `table`, as there).
    pub async fn create_session(
        &self,
        session: &NewSession,
    ) -> Result<SessionDetailSchema, ClientError> {
        let q = Query::default()
            .put("type", session.session_type.as_str())
            .db_id();
        // agno's `CreateSessionRequest.model_dump()`: every field, nulls too.
        let body = json!({
            "session_id": session.session_id,
            "session_name": session.session_name,
            "session_state": session.session_state,
            "metadata": session.metadata,
            "user_id": session.user_id,
            "agent_id": session.agent_id,
            "team_id": session.team_id,
            "workflow_id": session.workflow_id,
        });
        self.typed(Method::POST, "/sessions", q, Some(body)).await
    }

    /// `POST /sessions/{id}/rename` (agno's `rename_session`).
    pub async fn rename_session(
        &self,
        session_id: &str,
        session_name: &str,
        filter: &SessionFilter,
    ) -> Result<SessionDetailSchema, ClientError> {
        let path = format!("/sessions/{}/rename", escape(session_id));
        let body = json!({ "session_name": session_name });
        self.typed(Method::POST, &path, filter.query(), Some(body))
            .await
    }

    /// `PATCH /sessions/{id}`: only the fields set are sent (agno's
    /// `update_session`).
    pub async fn update_session(
        &self,
        session_id: &str,
        update: &SessionUpdate,
        filter: &SessionFilter,
    ) -> Result<SessionDetailSchema, ClientError> {
        let path = format!("/sessions/{}", escape(session_id));
        let body = to_json(update, &self.client)?;
        self.typed(Method::PATCH, &path, filter.query(), Some(body))
            .await
    }

    /// `DELETE /sessions/{id}` (agno's `delete_session`).
    pub async fn delete_session(
        &self,
        session_id: &str,
        filter: &DbFilter,
    ) -> Result<(), ClientError> {
        let path = format!("/sessions/{}", escape(session_id));
        self.unit(Method::DELETE, &path, filter.query(), None).await
    }

    /// `DELETE /sessions` with the ids and their types in the body (agno's
    /// `delete_sessions`).
    pub async fn delete_sessions(
        &self,
        session_ids: &[String],
        session_types: &[SessionType],
        filter: &DbFilter,
    ) -> Result<(), ClientError> {
        let body = json!({
            "session_ids": session_ids,
            "session_types": session_types,
        });
        self.unit(Method::DELETE, "/sessions", filter.query(), Some(body))
            .await
    }

    /// `GET /sessions/{id}/runs`: the session's runs (agno's
    /// `get_session_runs`).
    pub async fn get_session_runs(
        &self,
        session_id: &str,
        query: &RunsQuery,
    ) -> Result<Vec<SessionRunSchema>, ClientError> {
        let path = format!("/sessions/{}/runs", escape(session_id));
        self.typed(Method::GET, &path, query.query(), None).await
    }

    /// `GET /sessions/{id}/run-previews`: ids, status and truncated input
    /// and output of the session's runs (agno's
    /// `aget_session_run_previews`).
    pub async fn get_session_run_previews(
        &self,
        session_id: &str,
        query: &RunsQuery,
    ) -> Result<Vec<SessionRunPreviewSchema>, ClientError> {
        let path = format!("/sessions/{}/run-previews", escape(session_id));
        self.typed(Method::GET, &path, query.query(), None).await
    }

    /// `GET /sessions/{id}/runs/{run_id}` (agno's `get_session_run`).
    pub async fn get_session_run(
        &self,
        session_id: &str,
        run_id: &str,
        filter: &SessionFilter,
    ) -> Result<SessionRunSchema, ClientError> {
        let path = format!("/sessions/{}/runs/{}", escape(session_id), escape(run_id));
        self.typed(Method::GET, &path, filter.query(), None).await
    }

    // Memories: agno's `AgentOSClient` memory calls, `client/os.py`.

    /// `POST /memories` (agno's `create_memory`).
    pub async fn create_memory(
        &self,
        memory: &MemoryInput,
    ) -> Result<UserMemorySchema, ClientError> {
        let q = Query::default()
            .db_id()
            .opt("table", memory.table.as_deref());
        let body = memory.body(&self.client)?;
        self.typed(Method::POST, "/memories", q, Some(body)).await
    }

    /// `GET /memories/{id}` (agno's `get_memory`).
    pub async fn get_memory(
        &self,
        memory_id: &str,
        filter: &DbFilter,
    ) -> Result<UserMemorySchema, ClientError> {
        let path = format!("/memories/{}", escape(memory_id));
        self.typed(Method::GET, &path, filter.memory_query(), None)
            .await
    }

    /// `GET /memories`: a page of memories (agno's `RemoteDb.get_memories`,
    /// `AgentOSClient.list_memories`).
    pub async fn get_memories(
        &self,
        query: &MemoriesQuery,
    ) -> Result<PaginatedResponse<UserMemorySchema>, ClientError> {
        let mut q = Query::default()
            .put("limit", query.limit)
            .put("page", query.page)
            .put("sort_by", &query.sort_by)
            .put("sort_order", &query.sort_order)
            .db_id()
            .opt("table", query.table.as_deref())
            .opt("user_id", query.user_id.as_deref())
            .opt("agent_id", query.agent_id.as_deref())
            .opt("team_id", query.team_id.as_deref());
        // httpx repeats the key for each item of a list.
        for topic in query.topics.iter().flatten() {
            q = q.put("topics", topic);
        }
        let q = q.opt("search_content", query.search_content.as_deref());
        self.typed(Method::GET, "/memories", q, None).await
    }

    /// `PATCH /memories/{id}` (agno's `update_memory`).
    pub async fn update_memory(
        &self,
        memory_id: &str,
        memory: &MemoryInput,
    ) -> Result<UserMemorySchema, ClientError> {
        let path = format!("/memories/{}", escape(memory_id));
        let q = Query::default()
            .db_id()
            .opt("table", memory.table.as_deref());
        let body = memory.body(&self.client)?;
        self.typed(Method::PATCH, &path, q, Some(body)).await
    }

    /// `DELETE /memories/{id}` (agno's `delete_memory`).
    pub async fn delete_memory(
        &self,
        memory_id: &str,
        filter: &DbFilter,
    ) -> Result<(), ClientError> {
        let path = format!("/memories/{}", escape(memory_id));
        self.unit(Method::DELETE, &path, filter.memory_query(), None)
            .await
    }

    /// `DELETE /memories` with the ids (and `user_id`) in the body (agno's
    /// `delete_memories`).
    pub async fn delete_memories(
        &self,
        memory_ids: &[String],
        filter: &DbFilter,
    ) -> Result<(), ClientError> {
        let q = Query::default()
            .db_id()
            .opt("table", filter.table.as_deref());
        let mut body = json!({ "memory_ids": memory_ids });
        if let (Some(user_id), Some(body)) = (&filter.user_id, body.as_object_mut()) {
            body.insert("user_id".to_owned(), user_id.clone().into());
        }
        self.unit(Method::DELETE, "/memories", q, Some(body)).await
    }

    /// `GET /memory_topics`: every topic in use (agno's `get_memory_topics`).
    pub async fn get_memory_topics(&self, filter: &DbFilter) -> Result<Vec<String>, ClientError> {
        let q = Query::default()
            .opt("user_id", filter.user_id.as_deref())
            .db_id()
            .opt("table", filter.table.as_deref());
        self.typed(Method::GET, "/memory_topics", q, None).await
    }

    /// `GET /user_memory_stats`: memory counts per user (agno's
    /// `get_user_memory_stats`).
    pub async fn get_user_memory_stats(
        &self,
        query: &MemoryStatsQuery,
    ) -> Result<PaginatedResponse<UserStatsSchema>, ClientError> {
        let q = Query::default()
            .opt("user_id", query.user_id.as_deref())
            .put("limit", query.limit)
            .put("page", query.page)
            .db_id()
            .opt("table", query.table.as_deref());
        self.typed(Method::GET, "/user_memory_stats", q, None).await
    }

    /// `POST /optimize-memories`: merges a user's memories with a model
    /// (agno's `optimize_memories`).
    pub async fn optimize_memories(
        &self,
        request: &OptimizeMemories,
    ) -> Result<OptimizeMemoriesResponse, ClientError> {
        let q = Query::default()
            .db_id()
            .opt("table", request.table.as_deref());
        let mut body = json!({ "user_id": request.user_id });
        if let Some(body) = body.as_object_mut() {
            if let Some(model) = &request.model {
                body.insert("model".to_owned(), model.clone().into());
            }
            body.insert("apply".to_owned(), request.apply.into());
        }
        self.typed(Method::POST, "/optimize-memories", q, Some(body))
            .await
    }
}

fn to_json<T: Serialize>(value: &T, client: &AgentOsClient) -> Result<Value, ClientError> {
    serde_json::to_value(value).map_err(|e| ClientError::Config {
        base_url: client.base_url().to_owned(),
        reason: format!("the request body cannot be encoded: {e}"),
    })
}

/// A query string being built, in agno's parameter order; `db_id` is a
/// placeholder filled with the database's id when the call is made.
#[derive(Default)]
struct Query(Vec<(&'static str, Option<String>)>);

impl Query {
    fn put(mut self, name: &'static str, value: impl ToString) -> Query {
        self.0.push((name, Some(value.to_string())));
        self
    }

    fn opt(self, name: &'static str, value: Option<&str>) -> Query {
        match value {
            Some(value) => self.put(name, value),
            None => self,
        }
    }

    fn db_id(mut self) -> Query {
        self.0.push(("db_id", None));
        self
    }

    /// `name=value&...`, form-encoded as httpx encodes `params`.
    fn encode(&self, db_id: &str) -> String {
        let mut out = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in &self.0 {
            out.append_pair(name, value.as_deref().unwrap_or(db_id));
        }
        out.finish()
    }
}

/// A session's type (agno's `SessionType`; the default, as in agno's
/// `create_session`, is an agent's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionType {
    /// An agent's session.
    #[default]
    Agent,
    /// A team's session.
    Team,
    /// A workflow's session.
    Workflow,
}

impl SessionType {
    /// The wire form: `"agent"`, `"team"` or `"workflow"`.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionType::Agent => "agent",
            SessionType::Team => "team",
            SessionType::Workflow => "workflow",
        }
    }
}

/// Options of [`RemoteDb::get_sessions`]; the default is agno's (20 per
/// page, page 1, newest first).
#[derive(Debug, Clone, PartialEq)]
pub struct SessionsQuery {
    /// Only sessions of this type (`type=`).
    pub session_type: Option<SessionType>,
    /// Only sessions of this agent, team or workflow.
    pub component_id: Option<String>,
    /// Only this user's sessions.
    pub user_id: Option<String>,
    /// Only sessions with this name.
    pub session_name: Option<String>,
    /// Sessions per page (20).
    pub limit: u32,
    /// The page, from 1.
    pub page: u32,
    /// The field to sort by (`created_at`).
    pub sort_by: String,
    /// `asc` or `desc` (`desc`).
    pub sort_order: String,
    /// The sessions table, when not the database's first.
    pub table: Option<String>,
}

impl Default for SessionsQuery {
    fn default() -> Self {
        SessionsQuery {
            session_type: None,
            component_id: None,
            user_id: None,
            session_name: None,
            limit: 20,
            page: 1,
            sort_by: "created_at".to_owned(),
            sort_order: "desc".to_owned(),
            table: None,
        }
    }
}

/// Options of the calls on one session (get, rename, update, one run).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionFilter {
    /// The session's type; AgentOS finds it when not given.
    pub session_type: Option<SessionType>,
    /// The session's user (AgentOS checks it).
    pub user_id: Option<String>,
    /// The sessions table, when not the database's first.
    pub table: Option<String>,
}

impl SessionFilter {
    fn query(&self) -> Query {
        Query::default()
            .opt("type", self.session_type.map(SessionType::as_str))
            .opt("user_id", self.user_id.as_deref())
            .db_id()
            .opt("table", self.table.as_deref())
    }
}

/// Options of the calls that take only a user and a table: deletes,
/// [`get_memory`](RemoteDb::get_memory) and
/// [`get_memory_topics`](RemoteDb::get_memory_topics).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DbFilter {
    /// The user whose data it is.
    pub user_id: Option<String>,
    /// The table, when not the database's first.
    pub table: Option<String>,
}

impl DbFilter {
    /// agno's session deletes: `user_id`, `db_id`, `table`.
    fn query(&self) -> Query {
        Query::default()
            .opt("user_id", self.user_id.as_deref())
            .db_id()
            .opt("table", self.table.as_deref())
    }

    /// agno's single-memory calls: `db_id`, `table`, `user_id`.
    fn memory_query(&self) -> Query {
        Query::default()
            .db_id()
            .opt("table", self.table.as_deref())
            .opt("user_id", self.user_id.as_deref())
    }
}

/// Options of [`RemoteDb::get_session_runs`] and
/// [`RemoteDb::get_session_run_previews`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunsQuery {
    /// The session's type; AgentOS finds it when not given.
    pub session_type: Option<SessionType>,
    /// The session's user.
    pub user_id: Option<String>,
    /// Only runs created after this (epoch seconds).
    pub created_after: Option<i64>,
    /// Only runs created before this (epoch seconds).
    pub created_before: Option<i64>,
    /// Only runs with one of these statuses (the key repeated, as httpx
    /// sends a list).
    pub status: Vec<String>,
    /// The sessions table, when not the database's first.
    pub table: Option<String>,
}

impl RunsQuery {
    fn query(&self) -> Query {
        let mut q = Query::default()
            .opt("type", self.session_type.map(SessionType::as_str))
            .opt("user_id", self.user_id.as_deref());
        if let Some(after) = self.created_after {
            q = q.put("created_after", after);
        }
        if let Some(before) = self.created_before {
            q = q.put("created_before", before);
        }
        for status in &self.status {
            q = q.put("status", status);
        }
        q.db_id().opt("table", self.table.as_deref())
    }
}

/// A session to create; see [`RemoteDb::create_session`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewSession {
    /// Its type (`type=`; agno's default: agent).
    pub session_type: SessionType,
    /// Its id; AgentOS makes one when not given.
    pub session_id: Option<String>,
    /// Its user.
    pub user_id: Option<String>,
    /// Its name.
    pub session_name: Option<String>,
    /// Its initial state.
    pub session_state: Option<Value>,
    /// Its metadata.
    pub metadata: Option<Value>,
    /// The agent, for an agent session.
    pub agent_id: Option<String>,
    /// The team, for a team session.
    pub team_id: Option<String>,
    /// The workflow, for a workflow session.
    pub workflow_id: Option<String>,
}

/// What [`RemoteDb::update_session`] changes; unset fields are not sent.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SessionUpdate {
    /// A new name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_name: Option<String>,
    /// A new state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_state: Option<Value>,
    /// New metadata.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// A new summary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<Value>,
}

/// A memory to create or the new text of one; see
/// [`RemoteDb::create_memory`] and [`RemoteDb::update_memory`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemoryInput {
    /// The memory's text.
    pub memory: String,
    /// The user it belongs to.
    pub user_id: String,
    /// Its topics (not sent when `None`).
    pub topics: Option<Vec<String>>,
    /// The memories table, when not the database's first (`?table=`).
    pub table: Option<String>,
}

impl MemoryInput {
    /// agno's `UserMemoryCreateSchema(...).model_dump(exclude_none=True)`.
    fn body(&self, client: &AgentOsClient) -> Result<Value, ClientError> {
        #[derive(Serialize)]
        struct Body<'a> {
            memory: &'a str,
            user_id: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            topics: Option<&'a [String]>,
        }
        to_json(
            &Body {
                memory: &self.memory,
                user_id: &self.user_id,
                topics: self.topics.as_deref(),
            },
            client,
        )
    }
}

/// Options of [`RemoteDb::get_memories`]; the default is agno's (20 per
/// page, page 1, most recently updated first).
#[derive(Debug, Clone, PartialEq)]
pub struct MemoriesQuery {
    /// Only this user's memories.
    pub user_id: Option<String>,
    /// Only memories of this agent.
    pub agent_id: Option<String>,
    /// Only memories of this team.
    pub team_id: Option<String>,
    /// Only memories with these topics (the key repeated).
    pub topics: Option<Vec<String>>,
    /// Only memories whose text contains this.
    pub search_content: Option<String>,
    /// Memories per page (20).
    pub limit: u32,
    /// The page, from 1.
    pub page: u32,
    /// The field to sort by (`updated_at`).
    pub sort_by: String,
    /// `asc` or `desc` (`desc`).
    pub sort_order: String,
    /// The memories table, when not the database's first.
    pub table: Option<String>,
}

impl Default for MemoriesQuery {
    fn default() -> Self {
        MemoriesQuery {
            user_id: None,
            agent_id: None,
            team_id: None,
            topics: None,
            search_content: None,
            limit: 20,
            page: 1,
            sort_by: "updated_at".to_owned(),
            sort_order: "desc".to_owned(),
            table: None,
        }
    }
}

/// Options of [`RemoteDb::get_user_memory_stats`]; the default is agno's
/// (20 per page, page 1).
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryStatsQuery {
    /// Only this user's counts.
    pub user_id: Option<String>,
    /// Users per page (20).
    pub limit: u32,
    /// The page, from 1.
    pub page: u32,
    /// The memories table, when not the database's first.
    pub table: Option<String>,
}

impl Default for MemoryStatsQuery {
    fn default() -> Self {
        MemoryStatsQuery {
            user_id: None,
            limit: 20,
            page: 1,
            table: None,
        }
    }
}

/// What [`RemoteDb::optimize_memories`] does.
#[derive(Debug, Clone, PartialEq)]
pub struct OptimizeMemories {
    /// The user whose memories are merged.
    pub user_id: String,
    /// The model to merge them with (the host's default when `None`).
    pub model: Option<String>,
    /// Whether the merged memories replace the old ones (agno: `true`).
    pub apply: bool,
    /// The memories table, when not the database's first.
    pub table: Option<String>,
}

impl OptimizeMemories {
    /// agno's defaults for `user_id`: the host's model, applied.
    pub fn new(user_id: impl Into<String>) -> OptimizeMemories {
        OptimizeMemories {
            user_id: user_id.into(),
            model: None,
            apply: true,
            table: None,
        }
    }
}

/// A page of results (agno's `PaginatedResponse`): `{"data": [...], "meta": {...}}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PaginatedResponse<T> {
    /// The page's items.
    pub data: Vec<T>,
    /// Where the page is.
    pub meta: PaginationInfo,
    /// Every other field, as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A page's position (agno's `PaginationInfo`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PaginationInfo {
    /// The page, from 1.
    pub page: u64,
    /// Items per page.
    pub limit: u64,
    /// How many pages there are.
    pub total_pages: u64,
    /// How many items there are.
    pub total_count: u64,
    /// How long the search took.
    pub search_time_ms: f64,
    /// Every other field, as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One session in a list (agno's `SessionSchema`). Timestamps are as the
/// host sends them (ISO 8601 text from AgentOS).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SessionSchema {
    /// The session's id.
    pub session_id: String,
    /// Its name (AgentOS derives one from the first message).
    pub session_name: String,
    /// `agent`, `team` or `workflow`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_type: Option<String>,
    /// Its user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Its agent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// Its team.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team_id: Option<String>,
    /// Its workflow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow_id: Option<String>,
    /// Its state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_state: Option<Value>,
    /// Its summary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_summary: Option<Value>,
    /// Its metadata.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// Its metrics.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Value>,
    /// Tokens used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_tokens: Option<u64>,
    /// When it was created.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Value>,
    /// When it last changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<Value>,
    /// Every other field, as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One session in full: agno's `AgentSessionDetailSchema`,
/// `TeamSessionDetailSchema` or `WorkflowSessionDetailSchema`, in one type;
/// [`session_type`](Self::session_type) tells which, as agno's client
/// decides it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SessionDetailSchema {
    /// The session's id.
    pub session_id: String,
    /// Its name.
    pub session_name: String,
    /// Its user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Its agent (an agent session).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// Its team (a team session).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team_id: Option<String>,
    /// Its workflow (a workflow session).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow_id: Option<String>,
    /// Its state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_state: Option<Value>,
    /// Its summary (agent and team sessions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_summary: Option<Value>,
    /// Its metadata.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// Its metrics (agent and team sessions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Value>,
    /// Tokens used (agent and team sessions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_tokens: Option<u64>,
    /// The messages so far (agent and team sessions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chat_history: Option<Vec<Value>>,
    /// When it was created.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Value>,
    /// When it last changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<Value>,
    /// Every other field (`agent_data`, `team_data`, `workflow_data`,
    /// `session_data`, ...), as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl SessionDetailSchema {
    /// The session's type, from the id it carries, as agno's client picks
    /// the schema: agent, then team, then workflow.
    pub fn session_type(&self) -> Option<SessionType> {
        if self.agent_id.is_some() {
            Some(SessionType::Agent)
        } else if self.team_id.is_some() {
            Some(SessionType::Team)
        } else if self.workflow_id.is_some() {
            Some(SessionType::Workflow)
        } else {
            None
        }
    }
}

/// One run of a session: agno's `RunSchema`, `TeamRunSchema` or
/// `WorkflowRunSchema`, in one type; [`session_type`](Self::session_type)
/// tells which, as agno's client decides it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SessionRunSchema {
    /// The run's id.
    pub run_id: String,
    /// The enclosing run, for a nested one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_run_id: Option<String>,
    /// The agent that ran it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// The team that ran it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team_id: Option<String>,
    /// The workflow that ran it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow_id: Option<String>,
    /// Its user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// `COMPLETED`, `ERROR`, ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Its input.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_input: Option<Value>,
    /// Its output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<Value>,
    /// Its metrics.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Value>,
    /// Its metadata.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// When it was created.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Value>,
    /// Every other field (`messages`, `events`, `tools`, `step_results`,
    /// ...), as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl SessionRunSchema {
    /// Whose run it is, as agno's client picks the schema: workflow, then
    /// team, else agent.
    pub fn session_type(&self) -> SessionType {
        if self.workflow_id.is_some() {
            SessionType::Workflow
        } else if self.team_id.is_some() {
            SessionType::Team
        } else {
            SessionType::Agent
        }
    }
}

/// A run's preview (agno's `SessionRunPreviewSchema`): input and output cut
/// to 280 characters, no messages, events or metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SessionRunPreviewSchema {
    /// The run's id.
    pub run_id: String,
    /// The enclosing run, for a nested one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_run_id: Option<String>,
    /// The agent that ran it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// The team that ran it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team_id: Option<String>,
    /// The workflow that ran it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow_id: Option<String>,
    /// Its user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Its status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Its input, cut.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_input: Option<String>,
    /// Its output, cut.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_preview: Option<String>,
    /// When it was created.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Value>,
    /// Every other field, as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One memory (agno's `UserMemorySchema`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UserMemorySchema {
    /// The memory's id.
    pub memory_id: String,
    /// Its text.
    pub memory: String,
    /// Its topics.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topics: Option<Vec<String>>,
    /// The agent that made it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// The team that made it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team_id: Option<String>,
    /// Its user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// When it last changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<Value>,
    /// Every other field, as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A user's memory count (agno's `UserStatsSchema`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UserStatsSchema {
    /// The user.
    pub user_id: String,
    /// How many memories they have.
    pub total_memories: u64,
    /// When one last changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_memory_updated_at: Option<Value>,
    /// Every other field, as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// What [`RemoteDb::optimize_memories`] did (agno's
/// `OptimizeMemoriesResponse`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OptimizeMemoriesResponse {
    /// The memories after merging.
    pub memories: Vec<UserMemorySchema>,
    /// How many there were.
    pub memories_before: u64,
    /// How many there are.
    pub memories_after: u64,
    /// Tokens before.
    pub tokens_before: u64,
    /// Tokens after.
    pub tokens_after: u64,
    /// Tokens saved.
    pub tokens_saved: u64,
    /// The reduction, in percent.
    pub reduction_percentage: f64,
    /// Every other field, as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}
