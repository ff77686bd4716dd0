//! What makes an agent, a team and a workflow differ on the wire: the
//! [`Kind`] trait and its three markers, [`Agent`], [`Team`] and
//! [`Workflow`], plus the calls only one kind has (a workflow's
//! `additional_data`, an agent's `tools` on continue, ...).
//!
//! Everything else is the one implementation in [`Remote`], used as
//! [`RemoteAgent`](crate::RemoteAgent), [`RemoteTeam`](crate::RemoteTeam)
//! and [`RemoteWorkflow`](crate::RemoteWorkflow). The differences, from agno's
//! `client/os.py` and `{agent,team,workflow}/remote.py`:
//!
//! | | agent | team | workflow |
//! |---|---|---|---|
//! | routes under | `/agents/{id}` | `/teams/{id}` | `/workflows/{id}` |
//! | default `timeout` | 60 s | 300 s | 300 s |
//! | continue sends | `tools` | `requirements` | `step_requirements` |
//! | `stream_events` sent | always, when set | always, when set | on streaming runs |
//! | output | [`AgentRunOutput`] | [`TeamRunOutput`] | [`RunOutput`] |
//! | events | [`RunEvent`] | [`RunEvent`] | [`WorkflowEvent`] |

use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::ClientError;
use super::events::{RunEvent, StreamEvent, WorkflowEvent};
use super::remote::{ContinueRequest, Remote, RunRequest};
use super::types::{
    AgentConfig, AgentRunOutput, RunOutput, TeamConfig, TeamRunOutput, WorkflowConfig,
};

mod sealed {
    pub trait Sealed {}
}

/// An agent, a team or a workflow: what [`Remote`] needs to know about the
/// kind of entry it calls. Implemented by [`Agent`], [`Team`] and
/// [`Workflow`] only.
pub trait Kind: sealed::Sealed + Send + Sync + Sized + 'static {
    /// The `GET /{kind}s/{id}` document (agno's `AgentResponse`, ...).
    type Config: DeserializeOwned + Send + Sync + 'static;
    /// A non-streaming run's answer (agno's `RunOutput`, ...).
    type Output: DeserializeOwned + Send + 'static;
    /// One event of a streaming run.
    type Event: StreamEvent;
    /// The collection the entry lives in, e.g. `"/agents"`.
    const COLLECTION: &'static str;
    /// agno's default `timeout` for this kind.
    const DEFAULT_TIMEOUT: Duration;
    /// The form field a continue sends its resolved list in.
    const CONTINUE_FIELD: &'static str;
    /// True when `stream_events` goes on non-streaming runs too.
    const STREAM_EVENTS_ALWAYS: bool;
    /// agno's named `arun` arguments that reach the form, in its order.
    const NAMED_FIELDS: &'static [&'static str];
    /// `"RemoteAgent"`, ..., for `Debug`.
    const TYPE_NAME: &'static str;
    /// `"agent_id"`, ..., for `Debug`.
    const ID_FIELD: &'static str;
    /// The document's `name`.
    fn name(config: &Self::Config) -> Option<&str>;
    /// The document's `description`.
    fn description(config: &Self::Config) -> Option<&str>;
    /// The document's `db_id`.
    fn db_id(config: &Self::Config) -> Option<&str>;
}

/// Agents and teams, which take the same run options.
pub trait AgentOrTeam: Kind {}

/// The agent kind: [`RemoteAgent`](crate::RemoteAgent) is `Remote<Agent>`.
#[derive(Debug, Clone, Copy)]
pub enum Agent {}
/// The team kind: [`RemoteTeam`](crate::RemoteTeam) is `Remote<Team>`.
#[derive(Debug, Clone, Copy)]
pub enum Team {}
/// The workflow kind: [`RemoteWorkflow`](crate::RemoteWorkflow) is
/// `Remote<Workflow>`.
#[derive(Debug, Clone, Copy)]
pub enum Workflow {}

impl sealed::Sealed for Agent {}
impl sealed::Sealed for Team {}
impl sealed::Sealed for Workflow {}
impl AgentOrTeam for Agent {}
impl AgentOrTeam for Team {}

/// `RemoteAgent.arun` and `RemoteTeam.arun` pass these to `run_agent` /
/// `run_team` after the media (`agent/remote.py` `arun`); `run_id` is not
/// one of them and comes with the `**kwargs`.
const AGENT_OR_TEAM_FIELDS: &[&str] = &[
    "session_state",
    "stream_events",
    "retries",
    "knowledge_filters",
    "add_history_to_context",
    "add_dependencies_to_context",
    "add_session_state_to_context",
    "dependencies",
    "metadata",
    "run_id",
];

macro_rules! document_accessors {
    () => {
        fn name(config: &Self::Config) -> Option<&str> {
            config.name.as_deref()
        }
        fn description(config: &Self::Config) -> Option<&str> {
            config.description.as_deref()
        }
        fn db_id(config: &Self::Config) -> Option<&str> {
            config.db_id.as_deref()
        }
    };
}

impl Kind for Agent {
    type Config = AgentConfig;
    type Output = AgentRunOutput;
    type Event = RunEvent;
    const COLLECTION: &'static str = "/agents";
    const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
    const CONTINUE_FIELD: &'static str = "tools";
    const STREAM_EVENTS_ALWAYS: bool = true;
    const NAMED_FIELDS: &'static [&'static str] = AGENT_OR_TEAM_FIELDS;
    const TYPE_NAME: &'static str = "RemoteAgent";
    const ID_FIELD: &'static str = "agent_id";
    document_accessors!();
}

impl Kind for Team {
    type Config = TeamConfig;
    type Output = TeamRunOutput;
    type Event = RunEvent;
    const COLLECTION: &'static str = "/teams";
    const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
    const CONTINUE_FIELD: &'static str = "requirements";
    const STREAM_EVENTS_ALWAYS: bool = true;
    const NAMED_FIELDS: &'static [&'static str] = AGENT_OR_TEAM_FIELDS;
    const TYPE_NAME: &'static str = "RemoteTeam";
    const ID_FIELD: &'static str = "team_id";
    document_accessors!();
}

impl Kind for Workflow {
    type Config = WorkflowConfig;
    type Output = RunOutput;
    type Event = WorkflowEvent;
    const COLLECTION: &'static str = "/workflows";
    const DEFAULT_TIMEOUT: Duration = super::remote::DEFAULT_TIMEOUT;
    const CONTINUE_FIELD: &'static str = "step_requirements";
    const STREAM_EVENTS_ALWAYS: bool = false;
    /// `RemoteWorkflow.arun` passes these to `run_workflow(_stream)`.
    const NAMED_FIELDS: &'static [&'static str] = &[
        "additional_data",
        "run_id",
        "session_state",
        "stream_events",
    ];
    const TYPE_NAME: &'static str = "RemoteWorkflow";
    const ID_FIELD: &'static str = "workflow_id";
    document_accessors!();
}

impl Remote<Workflow> {
    /// The workflow document, cached for `config_ttl` (agno's
    /// `_workflow_config`). Concurrent calls on a cold cache share one fetch.
    pub async fn workflow_config(&self) -> Result<Arc<WorkflowConfig>, ClientError> {
        self.cached_config().await
    }

    /// `GET /workflows/{id}`, always fresh, leaving the cache alone (agno's
    /// `get_workflow_config`).
    pub async fn get_workflow_config(&self) -> Result<WorkflowConfig, ClientError> {
        self.fetch_config().await
    }
}

impl Remote<Agent> {
    /// The agent document, cached for `config_ttl` (agno's `_agent_config`).
    pub async fn agent_config(&self) -> Result<Arc<AgentConfig>, ClientError> {
        self.cached_config().await
    }

    /// `GET /agents/{id}`, always fresh (agno's `get_agent_config`).
    pub async fn get_agent_config(&self) -> Result<AgentConfig, ClientError> {
        self.fetch_config().await
    }

    /// The agent's role, from the cached document.
    pub async fn role(&self) -> Result<Option<String>, ClientError> {
        Ok(self.cached_config().await?.role.clone())
    }

    /// The agent's tools, from the cached document (agno's `tools`: the
    /// JSON text under `tools.tools`, decoded; `None` when absent or not
    /// JSON).
    pub async fn tools(&self) -> Result<Option<Vec<Value>>, ClientError> {
        Ok(self.cached_config().await?.tool_list())
    }
}

impl Remote<Team> {
    /// The team document, cached for `config_ttl` (agno's `_team_config`).
    pub async fn team_config(&self) -> Result<Arc<TeamConfig>, ClientError> {
        self.cached_config().await
    }

    /// `GET /teams/{id}`, always fresh (agno's `get_team_config`).
    pub async fn get_team_config(&self) -> Result<TeamConfig, ClientError> {
        self.fetch_config().await
    }

    /// The team's role, from the cached document.
    pub async fn role(&self) -> Result<Option<String>, ClientError> {
        Ok(self.cached_config().await?.role.clone())
    }
}

impl RunRequest<Workflow> {
    /// Extra data for the run: an object is sent as JSON (AgentOS hands it
    /// to the workflow as that JSON string; see api notes §1.3).
    pub fn additional_data(self, data: impl Into<Value>) -> Self {
        self.named("additional_data", data.into())
    }
}

impl<K: AgentOrTeam> RunRequest<K> {
    /// How many times the model call is retried.
    pub fn retries(self, retries: u32) -> Self {
        self.named("retries", retries.into())
    }

    /// Filters for the knowledge search, sent as JSON.
    pub fn knowledge_filters(self, filters: impl Into<Value>) -> Self {
        self.named("knowledge_filters", filters.into())
    }

    /// Whether the session's history goes into the context.
    pub fn add_history_to_context(self, add: bool) -> Self {
        self.named("add_history_to_context", add.into())
    }

    /// Whether the dependencies go into the context.
    pub fn add_dependencies_to_context(self, add: bool) -> Self {
        self.named("add_dependencies_to_context", add.into())
    }

    /// Whether the session state goes into the context.
    pub fn add_session_state_to_context(self, add: bool) -> Self {
        self.named("add_session_state_to_context", add.into())
    }

    /// Dependencies for the run, sent as JSON.
    pub fn dependencies(self, dependencies: impl Into<Value>) -> Self {
        self.named("dependencies", dependencies.into())
    }

    /// Run metadata, sent as JSON.
    pub fn metadata(self, metadata: impl Into<Value>) -> Self {
        self.named("metadata", metadata.into())
    }
}

impl ContinueRequest<Workflow> {
    /// The resolved requirements (the paused output's `step_requirements`,
    /// filled in), sent as the JSON string `step_requirements`.
    pub fn step_requirements(self, requirements: impl IntoIterator<Item = Value>) -> Self {
        self.resolved(requirements)
    }
}

impl ContinueRequest<Agent> {
    /// The tool executions, resolved, sent as the JSON string `tools`
    /// (agno's `continue_agent_run(tools=...)`).
    pub fn tools(self, tools: impl IntoIterator<Item = Value>) -> Self {
        self.resolved(tools)
    }

    /// The paused output's `requirements`, resolved: as agno's
    /// `RemoteAgent.acontinue_run`, each one's `tool_execution` is sent in
    /// `tools` and requirements without one are skipped.
    pub fn requirements(self, requirements: impl IntoIterator<Item = Value>) -> Self {
        self.resolved(requirements.into_iter().filter_map(|mut requirement| {
            requirement
                .get_mut("tool_execution")
                .map(Value::take)
                .filter(|tool| !tool.is_null())
        }))
    }
}

impl ContinueRequest<Team> {
    /// The paused output's `requirements`, resolved, sent as the JSON string
    /// `requirements` (agno's `continue_team_run`).
    pub fn requirements(self, requirements: impl IntoIterator<Item = Value>) -> Self {
        self.resolved(requirements)
    }
}
