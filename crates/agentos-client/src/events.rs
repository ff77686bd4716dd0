//! The typed events of a streaming run, decoded from the JSON of each SSE
//! `data:` line: [`WorkflowEvent`] for workflows, [`RunEvent`] for agents
//! and teams (a team's stream carries its members' agent events too), both
//! decoded through [`StreamEvent`].
//!
//! The event name comes from the JSON `"event"` field, as in agno's client
//! (`run/workflow.py` `workflow_run_output_event_from_dict`, `run/agent.py`
//! `run_output_event_from_dict`, `run/team.py`
//! `team_run_output_event_from_dict`); the SSE
//! `event:` line is used only when the JSON has none. Two differences from
//! agno, both on purpose:
//! - nothing is dropped: an event type this crate does not know arrives as
//!   [`WorkflowEvent::Other`] or [`RunEvent::Other`] with its whole JSON,
//!   and every struct keeps the
//!   fields it does not name in `extra`;
//! - `ConditionPaused`, missing from agno's registry, is typed.
//!
//! The structs are lenient on purpose (every field optional, loosely typed
//! where agno's own types are unions) so that a newer host does not turn a
//! known event into a decode error.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The fields every workflow-level event carries (`BaseWorkflowRunOutputEvent`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EventBase {
    /// The event name, e.g. `"StepStarted"`.
    pub event: String,
    /// Epoch seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<i64>,
    /// The workflow's id on the host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow_id: Option<String>,
    /// The workflow's display name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow_name: Option<String>,
    /// The session the run belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// The run's id: the first event tells a client its run id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// The step this event belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_id: Option<String>,
    /// The enclosing step, for steps nested in loops, conditions, ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_step_id: Option<String>,
    /// 0 for the top-level workflow, 1 for a nested one, ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nested_depth: Option<u32>,
    /// The event's position in the run (WebSocket and resumed streams).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_index: Option<u64>,
}

/// A step's position: an index, or a path of indices for nested steps
/// (agno's `Union[int, tuple]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StepIndex {
    /// A top-level step.
    Index(u64),
    /// A nested step: outer index first.
    Path(Vec<u64>),
    /// Any other shape a newer host may send.
    Other(Value),
}

/// `WorkflowStarted` (and any workflow-level event without fields of its own).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkflowStarted {
    /// The common fields.
    #[serde(flatten)]
    pub base: EventBase,
    /// Every other field, as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `WorkflowCompleted`: the run's final content.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkflowCompleted {
    /// The common fields.
    #[serde(flatten)]
    pub base: EventBase,
    /// The workflow's output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<Value>,
    /// `"str"`, or the name of the output's type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// The output of each step.
    pub step_results: Vec<Value>,
    /// Run metadata.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// Durations and token counts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Value>,
    /// Every other field, as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `WorkflowCancelled`. AgentOS still sends `WorkflowCompleted` after it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkflowCancelled {
    /// The common fields.
    #[serde(flatten)]
    pub base: EventBase,
    /// Why, e.g. `"Run R was cancelled"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Usually the reason again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<Value>,
    /// Every other field, as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `WorkflowError`: the run failed (the HTTP status stays 200). Also what the
/// gateway sends when the host behind it dies mid-stream, with `error_type`
/// `remote_server_unavailable_error`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkflowError {
    /// The common fields.
    #[serde(flatten)]
    pub base: EventBase,
    /// The error message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// agno's error type, e.g. `remote_server_unavailable_error`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
    /// agno's error id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_id: Option<String>,
    /// Extra data attached to the error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub additional_data: Option<Value>,
    /// Every other field, as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `WorkflowPaused`: the run waits for [`continue_run`](super::RemoteWorkflow::continue_run).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkflowPaused {
    /// The common fields.
    #[serde(flatten)]
    pub base: EventBase,
    /// The run status, `"PAUSED"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The index of the step that paused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused_step_index: Option<i64>,
    /// The name of the step that paused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused_step_name: Option<String>,
    /// What the pause waits for (confirmation, user input, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pause_kind: Option<Value>,
    /// What has to be resolved; send it back, resolved, to `continue_run`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_requirements: Option<Vec<Value>>,
    /// Content so far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<Value>,
    /// Every other field, as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The shape shared by every step-level workflow event (`StepStarted`,
/// `StepCompleted`, `LoopIterationStarted`, `RouterPaused`, ...). Fields an
/// event does not have are `None`; its own fields are in `extra`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StepEvent {
    /// The common fields.
    #[serde(flatten)]
    pub base: EventBase,
    /// The step's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_name: Option<String>,
    /// The step's position.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_index: Option<StepIndex>,
    /// The step's content (`StepCompleted`, `StepProgress`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<Value>,
    /// The step's error (`StepError`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Every other field, as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An event of an agent run (`RunStarted`, `RunContent`, `ToolCallStarted`,
/// ..., `RunCompleted`; agno's `BaseAgentRunEvent`): of a
/// [`RemoteAgent`](crate::RemoteAgent) run, of a team's member, or nested in
/// a workflow step.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AgentEvent {
    /// The event name, e.g. `"RunContent"`.
    pub event: String,
    /// Epoch seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<i64>,
    /// The agent's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// The agent's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_name: Option<String>,
    /// The agent run's id (not the workflow run's: see `workflow_run_id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// The enclosing run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_run_id: Option<String>,
    /// The session.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// The workflow whose step runs the agent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow_id: Option<String>,
    /// The workflow run whose step runs the agent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow_run_id: Option<String>,
    /// The step that runs the agent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_id: Option<String>,
    /// The step's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_name: Option<String>,
    /// The step's position.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_index: Option<StepIndex>,
    /// The content delta (`RunContent`) or final content.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<Value>,
    /// `"str"`, or the name of the content's type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Every other field, as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An event of a team run (`TeamRunStarted`, `TeamRunContent`, ...,
/// `TeamRunCompleted`): of a [`RemoteTeam`](crate::RemoteTeam) run, or
/// nested in a workflow step.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TeamEvent {
    /// The event name, e.g. `"TeamRunContent"`.
    pub event: String,
    /// Epoch seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<i64>,
    /// The team's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team_id: Option<String>,
    /// The team's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team_name: Option<String>,
    /// The team run's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// The session.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// The workflow run whose step runs the team.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow_run_id: Option<String>,
    /// The step's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_name: Option<String>,
    /// The content delta or final content.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<Value>,
    /// Every other field, as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Agent event names (agno's `RunEvent`, but `CustomEvent`, which agents,
/// teams and workflow steps share). In a workflow's stream those without a
/// variant of their own arrive as [`WorkflowEvent::Agent`].
const AGENT_EVENTS: &[&str] = &[
    "RunStarted",
    "RunContent",
    "RunContentCompleted",
    "RunIntermediateContent",
    "RunCompleted",
    "RunError",
    "RunCancelled",
    "RunPaused",
    "RunContinued",
    "ToolCallStarted",
    "ToolCallCompleted",
    "ToolCallError",
    "PreHookStarted",
    "PreHookCompleted",
    "PostHookStarted",
    "PostHookCompleted",
    "ReasoningStarted",
    "ReasoningStep",
    "ReasoningContentDelta",
    "ReasoningCompleted",
    "MemoryUpdateStarted",
    "MemoryUpdateCompleted",
    "SessionSummaryStarted",
    "SessionSummaryCompleted",
    "ParserModelResponseStarted",
    "ParserModelResponseCompleted",
    "OutputModelResponseStarted",
    "OutputModelResponseCompleted",
    "ModelRequestStarted",
    "ModelRequestCompleted",
    "CompressionStarted",
    "CompressionCompleted",
    "CompactionStarted",
    "CompactionCompleted",
    "FollowupsStarted",
    "FollowupsCompleted",
];

/// Team event names (agno's `TeamRunEvent`): all arrive as
/// [`WorkflowEvent::Team`].
const TEAM_EVENTS: &[&str] = &[
    "TeamRunStarted",
    "TeamRunContent",
    "TeamRunIntermediateContent",
    "TeamRunContentCompleted",
    "TeamRunCompleted",
    "TeamRunError",
    "TeamRunCancelled",
    "TeamPreHookStarted",
    "TeamPreHookCompleted",
    "TeamPostHookStarted",
    "TeamPostHookCompleted",
    "TeamToolCallStarted",
    "TeamToolCallCompleted",
    "TeamToolCallError",
    "TeamReasoningStarted",
    "TeamReasoningStep",
    "TeamReasoningContentDelta",
    "TeamReasoningCompleted",
    "TeamMemoryUpdateStarted",
    "TeamMemoryUpdateCompleted",
    "TeamSessionSummaryStarted",
    "TeamSessionSummaryCompleted",
    "TeamParserModelResponseStarted",
    "TeamParserModelResponseCompleted",
    "TeamOutputModelResponseStarted",
    "TeamOutputModelResponseCompleted",
    "TeamModelRequestStarted",
    "TeamModelRequestCompleted",
    "TeamCompressionStarted",
    "TeamCompressionCompleted",
    "TeamFollowupsStarted",
    "TeamFollowupsCompleted",
    "TeamRunPaused",
    "TeamRunContinued",
    "TeamTaskIterationStarted",
    "TeamTaskIterationCompleted",
    "TeamTaskStateUpdated",
    "TeamTaskCreated",
    "TeamTaskUpdated",
];

/// Read access to the ids every event type carries, so
/// [`WorkflowEvent::run_id`] and friends need no per-variant code.
trait Ids {
    fn run_id(&self) -> Option<&str>;
    fn session_id(&self) -> Option<&str>;
}

macro_rules! ids_via_base {
    ($($ty:ty),*) => {$(
        impl Ids for $ty {
            fn run_id(&self) -> Option<&str> {
                self.base.run_id.as_deref()
            }
            fn session_id(&self) -> Option<&str> {
                self.base.session_id.as_deref()
            }
        }
    )*};
}
ids_via_base!(
    WorkflowStarted,
    WorkflowCompleted,
    WorkflowCancelled,
    WorkflowError,
    WorkflowPaused,
    StepEvent
);

macro_rules! ids_direct {
    ($($ty:ty),*) => {$(
        impl Ids for $ty {
            fn run_id(&self) -> Option<&str> {
                self.run_id.as_deref()
            }
            fn session_id(&self) -> Option<&str> {
                self.session_id.as_deref()
            }
        }
    )*};
}
ids_direct!(AgentEvent, TeamEvent);

/// Declares [`WorkflowEvent`] from one table of `Variant(Type) = "Name"`, so
/// the enum, the name lookup and the decoder cannot drift apart.
macro_rules! workflow_events {
    ($( $(#[$doc:meta])* $variant:ident($ty:ty) = $name:literal, )*) => {
        /// One event of a streaming workflow run.
        ///
        /// ```
        /// use agentos_client::WorkflowEvent;
        /// use serde_json::json;
        ///
        /// let started = WorkflowEvent::from_value(json!({
        ///     "event": "WorkflowStarted", "run_id": "r1", "session_id": "s1"
        /// })).unwrap();
        /// assert!(matches!(started, WorkflowEvent::WorkflowStarted(_)));
        /// assert_eq!(started.run_id(), Some("r1"));
        ///
        /// // agno's client drops event types it does not know; this keeps them.
        /// let new = WorkflowEvent::from_value(json!({"event": "BrandNew", "x": 1})).unwrap();
        /// match new {
        ///     WorkflowEvent::Other { event, data } => {
        ///         assert_eq!(event, "BrandNew");
        ///         assert_eq!(data["x"], 1);
        ///     }
        ///     _ => unreachable!(),
        /// }
        /// ```
        #[derive(Debug, Clone, PartialEq)]
        #[non_exhaustive]
        pub enum WorkflowEvent {
            $( $(#[$doc])* $variant($ty), )*
            /// Any other agent event agno knows (`ReasoningStep`,
            /// `MemoryUpdateStarted`, ...); the name is in `event`.
            Agent(AgentEvent),
            /// A team event (`TeamRunContent`, ...); the name is in `event`.
            Team(TeamEvent),
            /// An event type this crate does not know, kept whole.
            Other {
                /// The event name.
                event: String,
                /// The event's JSON, as sent.
                data: Value,
            },
        }

        impl WorkflowEvent {
            /// The event name, e.g. `"StepStarted"`.
            pub fn name(&self) -> &str {
                match self {
                    $( WorkflowEvent::$variant(_) => $name, )*
                    WorkflowEvent::Agent(e) => &e.event,
                    WorkflowEvent::Team(e) => &e.event,
                    WorkflowEvent::Other { event, .. } => event,
                }
            }

            /// The event's `run_id`. For nested agent and team events this is
            /// the agent's or team's run, not the workflow's.
            pub fn run_id(&self) -> Option<&str> {
                match self {
                    $( WorkflowEvent::$variant(e) => Ids::run_id(e), )*
                    WorkflowEvent::Agent(e) => Ids::run_id(e),
                    WorkflowEvent::Team(e) => Ids::run_id(e),
                    WorkflowEvent::Other { data, .. } => data.get("run_id").and_then(Value::as_str),
                }
            }

            /// The event's `session_id`.
            pub fn session_id(&self) -> Option<&str> {
                match self {
                    $( WorkflowEvent::$variant(e) => Ids::session_id(e), )*
                    WorkflowEvent::Agent(e) => Ids::session_id(e),
                    WorkflowEvent::Team(e) => Ids::session_id(e),
                    WorkflowEvent::Other { data, .. } => data.get("session_id").and_then(Value::as_str),
                }
            }

            /// Decodes `value` as the event named `name`.
            fn typed(name: &str, value: Value) -> Result<Self, serde_json::Error> {
                Ok(match name {
                    $( $name => WorkflowEvent::$variant(serde_json::from_value(value)?), )*
                    n if AGENT_EVENTS.contains(&n) => WorkflowEvent::Agent(serde_json::from_value(value)?),
                    n if TEAM_EVENTS.contains(&n) => WorkflowEvent::Team(serde_json::from_value(value)?),
                    _ => WorkflowEvent::Other { event: name.to_owned(), data: value },
                })
            }
        }

        impl Serialize for WorkflowEvent {
            /// Serialises to the event's JSON, `"event"` field included.
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                match self {
                    $( WorkflowEvent::$variant(e) => e.serialize(serializer), )*
                    WorkflowEvent::Agent(e) => e.serialize(serializer),
                    WorkflowEvent::Team(e) => e.serialize(serializer),
                    WorkflowEvent::Other { data, .. } => data.serialize(serializer),
                }
            }
        }
    };
}

workflow_events! {
    /// The run started; carries the run's `run_id` and `session_id`.
    WorkflowStarted(WorkflowStarted) = "WorkflowStarted",
    /// The run finished, with its content (sent after a cancel too).
    WorkflowCompleted(WorkflowCompleted) = "WorkflowCompleted",
    /// The run paused for human input.
    WorkflowPaused(WorkflowPaused) = "WorkflowPaused",
    /// The run was cancelled.
    WorkflowCancelled(WorkflowCancelled) = "WorkflowCancelled",
    /// The run failed.
    WorkflowError(WorkflowError) = "WorkflowError",
    /// A workflow agent started.
    WorkflowAgentStarted(StepEvent) = "WorkflowAgentStarted",
    /// A workflow agent finished.
    WorkflowAgentCompleted(StepEvent) = "WorkflowAgentCompleted",
    /// A step started.
    StepStarted(StepEvent) = "StepStarted",
    /// A step finished, with its content.
    StepCompleted(StepEvent) = "StepCompleted",
    /// A step reported progress (content and `data` in `extra`).
    StepProgress(StepEvent) = "StepProgress",
    /// A step paused for confirmation or input.
    StepPaused(StepEvent) = "StepPaused",
    /// A paused step continued.
    StepContinued(StepEvent) = "StepContinued",
    /// A step's executor (agent or team) paused.
    StepExecutorPaused(StepEvent) = "StepExecutorPaused",
    /// A step's executor continued.
    StepExecutorContinued(StepEvent) = "StepExecutorContinued",
    /// A step's output waits for review.
    StepOutputReview(StepEvent) = "StepOutputReview",
    /// A step failed.
    StepError(StepEvent) = "StepError",
    /// A step's output (`step_output` in `extra`).
    StepOutput(StepEvent) = "StepOutput",
    /// A loop started.
    LoopExecutionStarted(StepEvent) = "LoopExecutionStarted",
    /// A loop iteration started.
    LoopIterationStarted(StepEvent) = "LoopIterationStarted",
    /// A loop iteration finished.
    LoopIterationCompleted(StepEvent) = "LoopIterationCompleted",
    /// A loop finished.
    LoopExecutionCompleted(StepEvent) = "LoopExecutionCompleted",
    /// Parallel steps started.
    ParallelExecutionStarted(StepEvent) = "ParallelExecutionStarted",
    /// Parallel steps finished.
    ParallelExecutionCompleted(StepEvent) = "ParallelExecutionCompleted",
    /// A condition was evaluated.
    ConditionExecutionStarted(StepEvent) = "ConditionExecutionStarted",
    /// A condition's branch finished.
    ConditionExecutionCompleted(StepEvent) = "ConditionExecutionCompleted",
    /// A condition paused (agno's client drops this one).
    ConditionPaused(StepEvent) = "ConditionPaused",
    /// A router chose its steps.
    RouterExecutionStarted(StepEvent) = "RouterExecutionStarted",
    /// A router's steps finished.
    RouterExecutionCompleted(StepEvent) = "RouterExecutionCompleted",
    /// A router paused for a choice.
    RouterPaused(StepEvent) = "RouterPaused",
    /// A group of steps started.
    StepsExecutionStarted(StepEvent) = "StepsExecutionStarted",
    /// A group of steps finished.
    StepsExecutionCompleted(StepEvent) = "StepsExecutionCompleted",
    /// A custom event yielded by a step; all its fields are in `extra`.
    CustomEvent(StepEvent) = "CustomEvent",
    /// A nested agent run started.
    RunStarted(AgentEvent) = "RunStarted",
    /// A nested agent run's content delta.
    RunContent(AgentEvent) = "RunContent",
    /// A nested agent run's content is complete.
    RunContentCompleted(AgentEvent) = "RunContentCompleted",
    /// A nested agent run's intermediate content.
    RunIntermediateContent(AgentEvent) = "RunIntermediateContent",
    /// A nested agent run finished.
    RunCompleted(AgentEvent) = "RunCompleted",
    /// A nested agent run failed.
    RunError(AgentEvent) = "RunError",
    /// A nested agent run was cancelled.
    RunCancelled(AgentEvent) = "RunCancelled",
    /// A nested agent run paused.
    RunPaused(AgentEvent) = "RunPaused",
    /// A nested agent run continued.
    RunContinued(AgentEvent) = "RunContinued",
    /// A nested agent started a tool call.
    ToolCallStarted(AgentEvent) = "ToolCallStarted",
    /// A nested agent's tool call finished.
    ToolCallCompleted(AgentEvent) = "ToolCallCompleted",
    /// A nested agent's tool call failed.
    ToolCallError(AgentEvent) = "ToolCallError",
}

impl WorkflowEvent {
    /// Decodes one event's JSON; the name comes from its `"event"` field
    /// (an object without one becomes [`WorkflowEvent::Other`] named `""`).
    pub fn from_value(value: Value) -> Result<Self, serde_json::Error> {
        let name = value
            .get("event")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        WorkflowEvent::typed(&name, value)
    }

    /// Decodes one SSE event: its data must be JSON. The JSON `"event"` field
    /// names the event, as in agno; the SSE `event:` line is the fallback.
    pub fn from_sse(sse: &super::sse::SseEvent) -> Result<Self, serde_json::Error> {
        let (name, value) = named_json(sse)?;
        WorkflowEvent::typed(&name, value)
    }

    /// True for the events after which AgentOS sends nothing more that
    /// matters: `WorkflowCompleted` and `WorkflowError`. (`WorkflowCancelled`
    /// is followed by a `WorkflowCompleted`.)
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            WorkflowEvent::WorkflowCompleted(_) | WorkflowEvent::WorkflowError(_)
        )
    }
}

/// An event type a stream decodes into: [`WorkflowEvent`] or [`RunEvent`].
pub trait StreamEvent: Sized + Send + 'static {
    /// Decodes one SSE event. Its data must be JSON; the JSON `"event"`
    /// field names the event, as in agno, and the SSE `event:` line is the
    /// fallback.
    fn from_sse(sse: &super::sse::SseEvent) -> Result<Self, serde_json::Error>;
}

impl StreamEvent for WorkflowEvent {
    fn from_sse(sse: &super::sse::SseEvent) -> Result<Self, serde_json::Error> {
        WorkflowEvent::from_sse(sse)
    }
}

/// The JSON of an SSE event and its name (the JSON `"event"` field, else the
/// SSE `event:` line).
fn named_json(sse: &super::sse::SseEvent) -> Result<(String, Value), serde_json::Error> {
    let value: Value = serde_json::from_str(&sse.data)?;
    let name = match value.get("event").and_then(Value::as_str) {
        Some(name) => name.to_owned(),
        None => sse.event.clone(),
    };
    Ok((name, value))
}

/// One event of a streaming agent or team run.
///
/// Agent events (agno's `RunEvent`: `RunStarted`, `RunContent`, ...,
/// `RunCompleted`) are [`RunEvent::Agent`], team events (agno's
/// `TeamRunEvent`: `TeamRunStarted`, ...) [`RunEvent::Team`]; a team's
/// stream carries both. The name is in the struct's `event`. An event type
/// agno does not know is kept whole in [`RunEvent::Other`] (agno's client
/// drops it).
///
/// ```
/// use agentos_client::RunEvent;
/// use serde_json::json;
///
/// let content = RunEvent::from_value(json!({
///     "event": "RunContent", "agent_id": "a", "run_id": "r1", "content": "Hel"
/// })).unwrap();
/// assert!(matches!(&content, RunEvent::Agent(e) if e.content == Some(json!("Hel"))));
/// assert_eq!((content.name(), content.run_id()), ("RunContent", Some("r1")));
///
/// let team = RunEvent::from_value(json!({"event": "TeamRunCompleted", "team_id": "t"})).unwrap();
/// assert!(matches!(team, RunEvent::Team(_)));
///
/// let new = RunEvent::from_value(json!({"event": "BrandNew", "x": 1})).unwrap();
/// assert!(matches!(new, RunEvent::Other { ref event, .. } if event == "BrandNew"));
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RunEvent {
    /// An agent event; the name is in `event`.
    Agent(AgentEvent),
    /// A team event; the name is in `event`.
    Team(TeamEvent),
    /// An event type this crate does not know, kept whole.
    Other {
        /// The event name.
        event: String,
        /// The event's JSON, as sent.
        data: Value,
    },
}

impl RunEvent {
    /// Decodes one event's JSON; the name comes from its `"event"` field.
    pub fn from_value(value: Value) -> Result<Self, serde_json::Error> {
        let name = value
            .get("event")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        RunEvent::typed(&name, value)
    }

    /// Decodes `value` as the event named `name`. `CustomEvent`, which
    /// agents and teams share, is a team's when it names a team and no
    /// agent.
    fn typed(name: &str, value: Value) -> Result<Self, serde_json::Error> {
        let team_custom = name == "CustomEvent"
            && value.get("team_id").is_some()
            && value.get("agent_id").is_none();
        Ok(if TEAM_EVENTS.contains(&name) || team_custom {
            RunEvent::Team(serde_json::from_value(value)?)
        } else if AGENT_EVENTS.contains(&name) || name == "CustomEvent" {
            RunEvent::Agent(serde_json::from_value(value)?)
        } else {
            RunEvent::Other {
                event: name.to_owned(),
                data: value,
            }
        })
    }

    /// The event name, e.g. `"RunContent"`.
    pub fn name(&self) -> &str {
        match self {
            RunEvent::Agent(e) => &e.event,
            RunEvent::Team(e) => &e.event,
            RunEvent::Other { event, .. } => event,
        }
    }

    /// The event's `run_id` (a member's own run, for a member's event).
    pub fn run_id(&self) -> Option<&str> {
        match self {
            RunEvent::Agent(e) => Ids::run_id(e),
            RunEvent::Team(e) => Ids::run_id(e),
            RunEvent::Other { data, .. } => data.get("run_id").and_then(Value::as_str),
        }
    }

    /// The event's `session_id`.
    pub fn session_id(&self) -> Option<&str> {
        match self {
            RunEvent::Agent(e) => Ids::session_id(e),
            RunEvent::Team(e) => Ids::session_id(e),
            RunEvent::Other { data, .. } => data.get("session_id").and_then(Value::as_str),
        }
    }

    /// The event's `content` (a delta for `RunContent`, the whole output
    /// for `RunCompleted`).
    pub fn content(&self) -> Option<&Value> {
        match self {
            RunEvent::Agent(e) => e.content.as_ref(),
            RunEvent::Team(e) => e.content.as_ref(),
            RunEvent::Other { data, .. } => data.get("content"),
        }
    }
}

impl StreamEvent for RunEvent {
    fn from_sse(sse: &super::sse::SseEvent) -> Result<Self, serde_json::Error> {
        let (name, value) = named_json(sse)?;
        RunEvent::typed(&name, value)
    }
}

impl Serialize for RunEvent {
    /// Serialises to the event's JSON, `"event"` field included.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            RunEvent::Agent(e) => e.serialize(serializer),
            RunEvent::Team(e) => e.serialize(serializer),
            RunEvent::Other { data, .. } => data.serialize(serializer),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn known_fields_are_typed_and_the_rest_kept() {
        let value = json!({
            "created_at": 1, "event": "StepCompleted", "workflow_id": "w", "run_id": "r",
            "session_id": "s", "nested_depth": 0, "step_name": "upper", "step_index": [1, 0],
            "content": "HELLO", "content_type": "str", "step_response": {"a": 1}
        });
        let event = WorkflowEvent::from_value(value.clone()).unwrap();
        let WorkflowEvent::StepCompleted(step) = &event else {
            panic!("{event:?}")
        };
        assert_eq!(step.step_name.as_deref(), Some("upper"));
        assert_eq!(step.step_index, Some(StepIndex::Path(vec![1, 0])));
        assert_eq!(step.content, Some(json!("HELLO")));
        assert_eq!(step.extra["content_type"], "str");
        assert_eq!(step.extra["step_response"], json!({"a": 1}));
        assert!(!step.extra.contains_key("run_id"));
        // Nothing is lost on the way back out.
        assert_eq!(serde_json::to_value(&event).unwrap(), value);
    }

    #[test]
    fn agent_team_and_unknown_events() {
        let content = WorkflowEvent::from_value(
            json!({"event": "RunContent", "agent_id": "a", "content": "hi"}),
        )
        .unwrap();
        assert!(matches!(&content, WorkflowEvent::RunContent(e) if e.content == Some(json!("hi"))));
        let step = WorkflowEvent::from_value(json!({"event": "ReasoningStep"})).unwrap();
        assert!(matches!(&step, WorkflowEvent::Agent(e) if e.event == "ReasoningStep"));
        let team =
            WorkflowEvent::from_value(json!({"event": "TeamRunContent", "team_id": "t"})).unwrap();
        assert_eq!(team.name(), "TeamRunContent");
        let paused = WorkflowEvent::from_value(json!({"event": "ConditionPaused"})).unwrap();
        assert!(matches!(paused, WorkflowEvent::ConditionPaused(_)));
        let other = WorkflowEvent::from_value(json!({"event": "Future", "run_id": "r"})).unwrap();
        assert_eq!((other.name(), other.run_id()), ("Future", Some("r")));
    }

    #[test]
    fn custom_events_belong_to_whoever_sent_them() {
        let team = RunEvent::from_value(json!({"event": "CustomEvent", "team_id": "t"})).unwrap();
        assert!(matches!(team, RunEvent::Team(_)));
        let member =
            RunEvent::from_value(json!({"event": "CustomEvent", "team_id": "t", "agent_id": "a"}))
                .unwrap();
        assert!(matches!(member, RunEvent::Agent(_)));
        // Every name WorkflowEvent types for nested agents is an agent event.
        for name in [
            "RunStarted",
            "RunCompleted",
            "ToolCallError",
            "ReasoningStep",
        ] {
            let event = RunEvent::from_value(json!({ "event": name })).unwrap();
            assert!(matches!(event, RunEvent::Agent(_)), "{name}");
        }
        let value = json!({"event": "TeamRunContent", "team_id": "t", "delta": "x"});
        let event = RunEvent::from_value(value.clone()).unwrap();
        assert_eq!(serde_json::to_value(&event).unwrap(), value);
    }

    #[test]
    fn the_json_event_field_wins_over_the_sse_line() {
        let sse = crate::sse::SseEvent {
            event: "Wrong".into(),
            data: r#"{"event":"WorkflowStarted"}"#.into(),
            id: None,
            retry: None,
        };
        assert_eq!(
            WorkflowEvent::from_sse(&sse).unwrap().name(),
            "WorkflowStarted"
        );
        let sse = crate::sse::SseEvent {
            data: "{}".into(),
            ..sse
        };
        assert_eq!(WorkflowEvent::from_sse(&sse).unwrap().name(), "Wrong");
    }
}
