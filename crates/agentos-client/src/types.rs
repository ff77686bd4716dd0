//! The request and response types of [`Remote`](super::Remote): the run
//! input and media, the run outputs of workflows, agents and teams, and the
//! entry and OS config documents.
//!
//! Response types mirror agno's (`WorkflowRunOutput`, `RunOutput`,
//! `TeamRunOutput`, `WorkflowResponse`, `AgentResponse`, `TeamResponse`,
//! `ConfigResponse`) but keep every field they do not name in `extra`, where
//! agno's `from_dict` drops it.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// A run's input, sent as the `message` form field.
///
/// Strings go as they are; JSON objects and arrays are sent as JSON text, as
/// agno's `serialize_input` does for dicts, lists and pydantic models.
///
/// ```
/// use agentos_client::Input;
/// use serde_json::json;
///
/// assert_eq!(Input::from("hello").as_str(), "hello");
/// assert_eq!(Input::from(json!({"topic": "rust"})).as_str(), r#"{"topic":"rust"}"#);
/// // A JSON string is the string itself, as in Python.
/// assert_eq!(Input::from(json!("hi")).as_str(), "hi");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input(String);

impl Input {
    /// Any serialisable value as JSON text (agno's `model_dump_json()` for a
    /// pydantic model).
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Input, serde_json::Error> {
        serde_json::to_value(value).map(Input::from)
    }

    /// The text sent as `message`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Input {
    fn from(s: &str) -> Self {
        Input(s.to_owned())
    }
}

impl From<String> for Input {
    fn from(s: String) -> Self {
        Input(s)
    }
}

impl From<&String> for Input {
    fn from(s: &String) -> Self {
        Input(s.clone())
    }
}

impl From<Value> for Input {
    fn from(value: Value) -> Self {
        match value {
            Value::String(s) => Input(s),
            other => Input(other.to_string()),
        }
    }
}

/// An image, audio clip, video or file passed to a run: agno's media
/// `to_dict()` shape, sent as a JSON array in the `images`, `audio`, `videos`
/// or `input_files` form field. Give exactly one of `url`, `filepath` (a path
/// on the host) or `content` (base64).
///
/// ```
/// use agentos_client::Media;
///
/// let image = Media::from_url("https://example.com/cat.png").mime_type("image/png");
/// let json = serde_json::to_value(&image).unwrap();
/// assert_eq!(json["url"], "https://example.com/cat.png");
/// assert!(json["id"].is_string()); // agno assigns an id when none is given
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Media {
    /// The media id; the constructors assign a fresh uuid, as agno does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Where the host can fetch it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// A path on the host's file system.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filepath: Option<String>,
    /// The bytes, base64-encoded (or plain text for `text/*` files).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// e.g. `"png"`, `"mp3"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// e.g. `"image/png"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    /// A file's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    /// Other agno media fields (`detail`, `alt_text`, `metadata`, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Media {
    fn new() -> Media {
        Media {
            id: Some(uuid::Uuid::new_v4().to_string()),
            ..Media::default()
        }
    }

    /// Media the host fetches from `url`.
    pub fn from_url(url: impl Into<String>) -> Media {
        Media {
            url: Some(url.into()),
            ..Media::new()
        }
    }

    /// Media at `path` on the host's file system.
    pub fn from_filepath(path: impl Into<String>) -> Media {
        Media {
            filepath: Some(path.into()),
            ..Media::new()
        }
    }

    /// Media sent inline; `content_base64` is the base64 of its bytes.
    pub fn from_base64(content_base64: impl Into<String>) -> Media {
        Media {
            content: Some(content_base64.into()),
            ..Media::new()
        }
    }

    /// Sets the MIME type.
    pub fn mime_type(mut self, mime_type: impl Into<String>) -> Media {
        self.mime_type = Some(mime_type.into());
        self
    }

    /// Sets the format.
    pub fn format(mut self, format: impl Into<String>) -> Media {
        self.format = Some(format.into());
        self
    }

    /// Sets a file's name.
    pub fn filename(mut self, filename: impl Into<String>) -> Media {
        self.filename = Some(filename.into());
        self
    }
}

/// A run's status (agno's `RunStatus`), kept as sent when it is new.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunStatus {
    /// Queued.
    Pending,
    /// Running.
    Running,
    /// Finished (also after a skipped failing step).
    Completed,
    /// Waiting for [`continue_run`](super::RemoteWorkflow::continue_run).
    Paused,
    /// Cancelled.
    Cancelled,
    /// Failed.
    Error,
    /// Regenerated.
    Regenerated,
    /// A status this crate does not know.
    Other(String),
}

impl RunStatus {
    /// The wire form, e.g. `"COMPLETED"`.
    pub fn as_str(&self) -> &str {
        match self {
            RunStatus::Pending => "PENDING",
            RunStatus::Running => "RUNNING",
            RunStatus::Completed => "COMPLETED",
            RunStatus::Paused => "PAUSED",
            RunStatus::Cancelled => "CANCELLED",
            RunStatus::Error => "ERROR",
            RunStatus::Regenerated => "REGENERATED",
            RunStatus::Other(s) => s,
        }
    }
}

impl From<String> for RunStatus {
    fn from(s: String) -> Self {
        match s.as_str() {
            "PENDING" => RunStatus::Pending,
            "RUNNING" => RunStatus::Running,
            "COMPLETED" => RunStatus::Completed,
            "PAUSED" => RunStatus::Paused,
            "CANCELLED" => RunStatus::Cancelled,
            "ERROR" => RunStatus::Error,
            "REGENERATED" => RunStatus::Regenerated,
            _ => RunStatus::Other(s),
        }
    }
}

impl Serialize for RunStatus {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for RunStatus {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(RunStatus::from)
    }
}

/// The answer to a non-streaming workflow run (agno's
/// `WorkflowRunOutput.to_dict()`). Agents answer [`AgentRunOutput`], teams
/// [`TeamRunOutput`].
///
/// ```
/// use agentos_client::{RunOutput, RunStatus};
///
/// let out: RunOutput = serde_json::from_str(
///     r#"{"run_id":"r","session_id":"s","content":"HELLO!","status":"COMPLETED","new_field":1}"#,
/// ).unwrap();
/// assert_eq!(out.content_str(), Some("HELLO!"));
/// assert_eq!(out.status, Some(RunStatus::Completed));
/// assert_eq!(out.extra["new_field"], 1);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunOutput {
    /// The run's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// The session's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// The workflow's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow_id: Option<String>,
    /// The workflow's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow_name: Option<String>,
    /// The user the run was for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The input as the host received it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    /// The workflow's output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<Value>,
    /// `"str"`, or the name of the output's type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// `COMPLETED`, `ERROR`, `PAUSED`, ... (an error inside the workflow
    /// shows here; the HTTP status stays 200).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<RunStatus>,
    /// The output of each step.
    pub step_results: Vec<Value>,
    /// Durations and token counts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Value>,
    /// Run metadata.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// Epoch seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<i64>,
    /// For a paused run: what to resolve and send to `continue_run`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_requirements: Option<Vec<Value>>,
    /// For a paused run: the step that paused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused_step_name: Option<String>,
    /// Every other field, as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl RunOutput {
    /// The content when it is a string.
    pub fn content_str(&self) -> Option<&str> {
        self.content.as_ref().and_then(Value::as_str)
    }
}

/// A workflow's `GET /workflows/{id}` document (agno's `WorkflowResponse`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkflowConfig {
    /// The workflow's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Its display name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The id of the database its sessions live in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub db_id: Option<String>,
    /// JSON schema of its input.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_schema: Option<Value>,
    /// Its steps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<Value>>,
    /// Every other field (`workflow_agent`, `is_factory`, ...), as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One database of a domain in `GET /config` (`session`, `memory`, ...).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DbInfo {
    /// The database id.
    pub db_id: String,
    /// Its table names for the domain.
    pub tables: Vec<String>,
    /// Every other field, as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A domain's databases in `GET /config`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DomainDbs {
    /// The domain's databases.
    pub dbs: Vec<DbInfo>,
    /// Every other field, as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An AgentOS's `GET /config` document (agno's `ConfigResponse`), with the
/// parts [`Remote::db`](super::Remote::db) reads typed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OsConfig {
    /// The OS id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os_id: Option<String>,
    /// Its description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Every database id.
    pub databases: Vec<String>,
    /// Session databases.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<DomainDbs>,
    /// Knowledge databases.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub knowledge: Option<DomainDbs>,
    /// Memory databases.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<DomainDbs>,
    /// Learning databases.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub learning: Option<DomainDbs>,
    /// Metrics databases.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<DomainDbs>,
    /// Eval databases.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evals: Option<DomainDbs>,
    /// Trace databases.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traces: Option<DomainDbs>,
    /// Every other field (`agents`, `workflows`, `interfaces`, ...), as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The fields agno's agent and team run outputs share, declared once for
/// [`AgentRunOutput`] and [`TeamRunOutput`].
macro_rules! run_output {
    ($(#[$doc:meta])* $name:ident { $($(#[$fdoc:meta])* $field:ident: $ty:ty,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        #[serde(default)]
        pub struct $name {
            /// The run's id.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub run_id: Option<String>,
            /// The session's id.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub session_id: Option<String>,
            /// The enclosing run (a team's, for a member's run).
            #[serde(skip_serializing_if = "Option::is_none")]
            pub parent_run_id: Option<String>,
            /// The user the run was for.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub user_id: Option<String>,
            /// The input as the host received it.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub input: Option<Value>,
            /// The output.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub content: Option<Value>,
            /// `"str"`, or the name of the output's type.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub content_type: Option<String>,
            /// The reasoning, when the model reasoned.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub reasoning_content: Option<String>,
            /// The model's id.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub model: Option<String>,
            /// The model's provider.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub model_provider: Option<String>,
            /// The messages of the run.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub messages: Option<Vec<Value>>,
            /// The tool calls made.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub tools: Option<Vec<Value>>,
            /// Durations and token counts.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub metrics: Option<Value>,
            /// Run metadata.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub metadata: Option<Value>,
            /// The session state after the run.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub session_state: Option<Value>,
            /// Epoch seconds.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub created_at: Option<i64>,
            /// `COMPLETED`, `ERROR`, `PAUSED`, ...
            #[serde(skip_serializing_if = "Option::is_none")]
            pub status: Option<RunStatus>,
            /// For a paused run: what to resolve and send to `continue_run`.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub requirements: Option<Vec<Value>>,
            $($(#[$fdoc])* #[serde(skip_serializing_if = "Option::is_none")] pub $field: $ty,)*
            /// Every other field, as sent.
            #[serde(flatten)]
            pub extra: Map<String, Value>,
        }

        impl $name {
            /// The content when it is a string.
            pub fn content_str(&self) -> Option<&str> {
                self.content.as_ref().and_then(Value::as_str)
            }
        }
    };
}

run_output! {
    /// The answer to a non-streaming agent run (agno's `RunOutput.to_dict()`).
    ///
    /// ```
    /// use agentos_client::{AgentRunOutput, RunStatus};
    ///
    /// let out: AgentRunOutput = serde_json::from_str(
    ///     r#"{"run_id":"r","agent_id":"a","content":"hi","status":"PAUSED","requirements":[{"id":"q"}],"new":1}"#,
    /// ).unwrap();
    /// assert_eq!(out.content_str(), Some("hi"));
    /// assert_eq!(out.status, Some(RunStatus::Paused));
    /// assert_eq!(out.extra["new"], 1);
    /// ```
    AgentRunOutput {
        /// The agent's id.
        agent_id: Option<String>,
        /// The agent's name.
        agent_name: Option<String>,
        /// The workflow whose step ran the agent.
        workflow_id: Option<String>,
    }
}

run_output! {
    /// The answer to a non-streaming team run (agno's `TeamRunOutput.to_dict()`).
    TeamRunOutput {
        /// The team's id.
        team_id: Option<String>,
        /// The team's name.
        team_name: Option<String>,
        /// The members' runs (agent or team outputs), as sent.
        member_responses: Option<Vec<Value>>,
    }
}

/// An agent's `GET /agents/{id}` document (agno's `AgentResponse`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AgentConfig {
    /// The agent's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Its display name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Its role.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The id of the database its sessions and memories live in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub db_id: Option<String>,
    /// Its tools: agno sends `{"tools": "<JSON list>"}`; see
    /// [`tool_list`](Self::tool_list).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<Value>,
    /// Its knowledge (`db_id`, `knowledge_table`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub knowledge: Option<Value>,
    /// JSON schema of its input.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_schema: Option<Value>,
    /// Every other field (`model`, `sessions`, `memory`, ...), as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl AgentConfig {
    /// The tool list under `tools.tools` (JSON text, as agno sends it, or
    /// already a list); `None` when absent or not a list.
    pub fn tool_list(&self) -> Option<Vec<Value>> {
        match self.tools.as_ref()?.get("tools")? {
            Value::String(text) => serde_json::from_str(text).ok(),
            Value::Array(list) => Some(list.clone()),
            _ => None,
        }
    }
}

/// A team's `GET /teams/{id}` document (agno's `TeamResponse`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TeamConfig {
    /// The team's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Its display name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Its role.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Its mode (`coordinate`, `route`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// The id of the database its sessions and memories live in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub db_id: Option<String>,
    /// Its members' documents.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<Value>>,
    /// Every other field (`model`, `tools`, `knowledge`, ...), as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}
