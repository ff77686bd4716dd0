//! agentos-gateway: one front door for many agno AgentOS hosts.
//!
//! It answers the AgentOS HTTP API itself, so agno's clients (RemoteAgent,
//! RemoteTeam, RemoteWorkflow, AgentOSClient, the AgentOS web UI) point at it
//! as they would at an AgentOS.
//!
//! Module map, in the order a request meets them:
//! - [`config`]: the TOML schema (agents, teams and workflows share one entry
//!   schema), defaults and start-up validation.
//! - [`server`]: serving the app on a bound listener (hyper frames every
//!   connection, within the connection limits), and shutdown signals.
//! - [`layers`]: request ids, tracing, trace context, access log, body limit, CORS: tower
//!   layers around every route.
//! - [`auth`]: edge authentication (AgentOS's JWT semantics, `security_key`), scope RBAC and
//!   per-caller rate limits: the innermost layer, refusing before anything reaches a host.
//! - [`observability`]: Prometheus metrics, the access log layer, the W3C trace context
//!   layer and the optional OTLP export of the gateway's spans.
//! - [`routes`]: the router (a `match` on path segments) and the AgentOS surface, one file per
//!   resource (`health`, `config`, `entries`: agents, teams and workflows alike, `databases`:
//!   the routes by `db_id`).
//! - [`proxy`]: the one streaming path every forwarded call takes, with the SSE relay.
//! - [`upstream`]: which host runs which agent, team or workflow, which host owns which
//!   database, run owners, and the moka metadata cache.
//! - [`client`]: the `agentos-client` crate (`crates/agentos-client`), re-exported: the Rust
//!   `RemoteWorkflow` library, and the per-host HTTP client and error mapping the gateway's
//!   metadata calls go through. It has no server-side dependencies of its own.
//! - [`error`]: the one request-path error type and its `{"detail": ...}` body, and
//!   `UpstreamError`: a host's `ClientError` or the gateway's own reasons (no replica free,
//!   the caller's body failed) a call to a host group ends with.
//! - [`state`]: `AppState`, shared by every handler behind one `Arc`.
//! - [`reload`]: SIGHUP and config file changes swap in a new set of workflows and hosts.
//! - [`fakehost`]: an in-process AgentOS-compatible host for the demo, tests and benchmarks.
//! - [`demo`]: `agentos-gateway demo`, the gateway in front of two embedded hosts.
//! - [`admin`]: the operators' listener, on a port of its own: Prometheus `/metrics`,
//!   `/gateway/upstreams` (every host and its last error), and the probes.

pub mod admin;
pub mod auth;
pub use agentos_client as client;
pub mod config;
pub mod demo;
pub mod error;
pub mod fakehost;
pub mod layers;
pub mod observability;
pub mod proxy;
pub mod reload;
pub mod routes;
pub mod server;
pub mod sharded;
pub mod state;
pub mod upstream;

/// The agno release whose AgentOS API the gateway speaks, reported by `/info`.
pub const AGNO_API_VERSION: &str = "3.1.10";
