//! The gateway's TOML configuration: schema, defaults and start-up validation.
//!
//! The file is parsed into a "raw" serde layer that keeps the source position of
//! every value ([`toml::Spanned`]), then validated into the plain [`Config`] the
//! rest of the program uses. Every failure becomes a [`ConfigError`] that names
//! the file, the line and the key, so `agentos-gateway check` can point an
//! operator at the exact mistake.
//!
//! `[[agents]]`, `[[teams]]` and `[[workflows]]` share one schema
//! ([`EntryConfig`], told apart by its [`EntryKind`]); its knobs mirror agno's
//! `RemoteAgent`/`RemoteTeam`/`RemoteWorkflow(base_url, <kind>_id,
//! timeout=300, config_ttl=300)`, with the same defaults.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use url::Url;

mod auth;
pub use auth::{
    AuthConfig, Cidr, DEFAULT_ADMIN_SCOPE, DEFAULT_EXCLUDED_ROUTE_PATHS, JwtConfig, LimitsConfig,
    Rate,
};

/// RemoteWorkflow's default idle timeout, in seconds.
pub const DEFAULT_TIMEOUT_SECS: f64 = 300.0;
/// RemoteWorkflow's default config cache TTL, in seconds.
pub const DEFAULT_CONFIG_TTL_SECS: f64 = 300.0;
/// How long a TCP connect to a host may take before the request fails fast.
pub const DEFAULT_CONNECT_TIMEOUT_SECS: f64 = 5.0;
/// How long a metadata fetch (`GET /config`, `GET /workflows/{id}`) may take,
/// so one slow host never holds up the workflow list.
pub const DEFAULT_CONFIG_FETCH_TIMEOUT_SECS: f64 = 10.0;
/// After SIGTERM, how long new connections are still accepted (while `/ready`
/// already says 503) so load balancers can deregister the pod.
pub const DEFAULT_DRAIN_GRACE_SECS: f64 = 5.0;
/// After the listener closes, how long in-flight requests and streams may
/// run on. Long, because a cut stream cancels the user's run.
pub const DEFAULT_DRAIN_TIMEOUT_SECS: f64 = 300.0;
/// Prefix of the environment variables that override `[server]` keys, e.g.
/// `AGENTOS_GATEWAY_LISTEN` for `server.listen`.
pub const ENV_PREFIX: &str = "AGENTOS_GATEWAY_";
/// Default request body limit: 100 MiB, room for file uploads.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 100 * 1024 * 1024;

/// The browser origins AgentOS allows by default (agno `os/utils.py`), so the
/// AgentOS web UI can call the gateway as it calls an AgentOS.
pub const DEFAULT_CORS_ORIGINS: &[&str] = &[
    "http://localhost:3000",
    "https://agno.com",
    "https://www.agno.com",
    "https://app.agno.com",
    "https://os-stg.agno.com",
    "https://os.agno.com",
];

/// Default seconds between active health checks of each replica.
pub const DEFAULT_HEALTH_CHECK_INTERVAL_SECS: f64 = 5.0;
/// Default seconds between DNS look-ups of a discovered host group.
pub const DEFAULT_DNS_REFRESH_SECS: f64 = 10.0;

/// Where the admin listener (Prometheus `/metrics`, `/gateway/upstreams`)
/// listens by default: Envoy's admin port.
pub const DEFAULT_ADMIN_LISTEN: &str = "0.0.0.0:9901";
/// Pending connections the kernel queues for `accept` (nginx uses 511; a
/// burst of connects beyond the queue waits a second for a SYN retry).
pub const DEFAULT_LISTEN_BACKLOG: u64 = 1024;
/// Caller connections open at once; beyond it a new one is closed at once.
pub const DEFAULT_MAX_CONNECTIONS: u64 = 10_000;
/// Seconds a new connection has to send its first request head.
pub const DEFAULT_HEADER_READ_TIMEOUT_SECS: f64 = 30.0;
/// Seconds an idle caller connection (no request in flight) stays open;
/// nginx's `keepalive_timeout`.
pub const DEFAULT_KEEP_ALIVE_TIMEOUT_SECS: f64 = 75.0;
/// Seconds a write to a caller may wait for the caller to read; nginx's
/// `send_timeout`.
pub const DEFAULT_WRITE_TIMEOUT_SECS: f64 = 60.0;
/// Largest request head (request line and fields), in bytes.
pub const DEFAULT_MAX_HEADER_BYTES: u64 = 32 * 1024;
/// The smallest head limit hyper accepts.
pub const MIN_MAX_HEADER_BYTES: u64 = 8 * 1024;
/// Most fields in one request head.
pub const DEFAULT_MAX_HEADERS: u64 = 100;
/// Most concurrent streams on one HTTP/2 connection.
pub const DEFAULT_H2_MAX_CONCURRENT_STREAMS: u64 = 128;
/// Seconds an idle pooled host connection is kept: below uvicorn's 5 s
/// keep-alive, so the gateway never sends on a connection the host is
/// closing.
pub const DEFAULT_POOL_IDLE_TIMEOUT_SECS: f64 = 4.0;

/// A validated gateway configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub server: ServerConfig,
    pub admin: AdminConfig,
    /// Every host group: the named `[[host_groups]]` and one implicit group
    /// per distinct `base_url`/`base_urls` of an entry.
    pub host_groups: Vec<HostGroupConfig>,
    /// Every `[[agents]]`, `[[teams]]`, `[[workflows]]` and `[[dbs]]`
    /// entry, in that order, each kind in file order.
    pub entries: Vec<EntryConfig>,
    /// `[server]`'s defaults, which databases discovered at run time take.
    pub entry_defaults: EntryDefaults,
    pub tracing: TracingConfig,
    /// `[auth]`: edge authentication and authorization.
    pub auth: AuthConfig,
    /// `[limits]`: per-caller rate limits.
    pub limits: LimitsConfig,
}

/// The `[tracing]` table: W3C trace context and the optional OTLP export.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingConfig {
    /// The OTLP/HTTP collector's base URL (spans go to `/v1/traces` under
    /// it); `None` turns the export off.
    pub otlp_endpoint: Option<Url>,
    /// The `service.name` the spans are exported under.
    pub service_name: String,
    /// Share of new traces (requests without a valid `traceparent`) marked
    /// sampled; a caller's own decision is always passed on.
    pub sample_ratio: f64,
}

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig {
            otlp_endpoint: None,
            service_name: DEFAULT_SERVICE_NAME.to_owned(),
            sample_ratio: 1.0,
        }
    }
}

/// The `service.name` of exported spans by default.
pub const DEFAULT_SERVICE_NAME: &str = "agentos-gateway";

/// Replicas that serve the same workflows, and how they are watched.
#[derive(Debug, Clone, PartialEq)]
pub struct HostGroupConfig {
    pub name: String,
    pub source: HostSource,
    /// How long a TCP connect to one of its replicas may take.
    pub connect_timeout: Duration,
    /// Bulkhead: requests in flight per replica; more get a fast 503.
    pub max_concurrent_requests: Option<usize>,
    /// Seconds between `GET /health` checks of each replica; `None` turns
    /// active checks off.
    pub health_check_interval: Option<Duration>,
    pub ejection: EjectionPolicy,
}

/// Where a host group's replicas come from.
#[derive(Debug, Clone, PartialEq)]
pub enum HostSource {
    /// A fixed list of base URLs.
    Static(Vec<Url>),
    /// Every A/AAAA record of the URL's host name (a Kubernetes headless
    /// Service), re-resolved every `refresh`.
    Dns { url: Url, refresh: Duration },
}

/// When a replica is taken out of rotation by passive checks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EjectionPolicy {
    /// Consecutive connect failures or 5xx answers that eject a replica.
    pub consecutive_failures: u32,
    /// The first ejection's length; each further one doubles it.
    pub base: Duration,
    /// The longest ejection.
    pub max: Duration,
}

impl Default for EjectionPolicy {
    fn default() -> Self {
        EjectionPolicy {
            consecutive_failures: 5,
            base: Duration::from_secs(5),
            max: Duration::from_secs(300),
        }
    }
}

/// The `[server]` table, with defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Reported as `os_id` in `/config` and `/info`.
    pub os_id: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub max_body_bytes: u64,
    pub connect_timeout: Duration,
    pub config_fetch_timeout: Duration,
    pub drain_grace: Duration,
    pub drain_timeout: Duration,
    /// Allowed browser origins; `None` means any origin (`["*"]`).
    pub cors_origins: Option<Vec<String>>,
    pub limits: ConnectionLimits,
    /// How long an idle pooled connection to a host is kept.
    pub pool_idle_timeout: Duration,
    /// Extra PEM root certificates trusted for `https://` hosts, beyond the
    /// system's.
    pub upstream_ca_file: Option<PathBuf>,
}

/// What one caller may hold of the gateway: connections, time and head
/// size. Every timer starts when the resource is taken.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionLimits {
    /// The listen socket's accept queue.
    pub listen_backlog: u32,
    /// Caller connections open at once.
    pub max_connections: usize,
    /// From accept until the first request head is complete.
    pub header_read_timeout: Duration,
    /// An open connection with no request in flight (HTTP/1 and h2).
    pub keep_alive_timeout: Duration,
    /// A write to a caller that does not read.
    pub write_timeout: Duration,
    /// Largest request head, in bytes.
    pub max_header_bytes: usize,
    /// Most fields in a request head.
    pub max_headers: usize,
    /// Most concurrent HTTP/2 streams per connection.
    pub h2_max_concurrent_streams: u32,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            listen_backlog: DEFAULT_LISTEN_BACKLOG as u32,
            max_connections: DEFAULT_MAX_CONNECTIONS as usize,
            header_read_timeout: Duration::from_secs_f64(DEFAULT_HEADER_READ_TIMEOUT_SECS),
            keep_alive_timeout: Duration::from_secs_f64(DEFAULT_KEEP_ALIVE_TIMEOUT_SECS),
            write_timeout: Duration::from_secs_f64(DEFAULT_WRITE_TIMEOUT_SECS),
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES as usize,
            max_headers: DEFAULT_MAX_HEADERS as usize,
            h2_max_concurrent_streams: DEFAULT_H2_MAX_CONCURRENT_STREAMS as u32,
        }
    }
}

/// The `[admin]` table: the operators' listener.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    /// Where Prometheus `/metrics` and `/gateway/upstreams` are served;
    /// `None` (`listen = ""`) turns the admin listener off.
    pub listen: Option<SocketAddr>,
}

/// What an entry exposes: an agent, a team or a workflow. Everything but
/// the paths, ids and wording is the same for the three.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    Agent,
    Team,
    Workflow,
    /// A database a host reports (or `[[dbs]]` pins), reached by `db_id`
    /// through the database routes (`/sessions`, `/memories`, ...).
    Database,
}

impl EntryKind {
    /// The kinds with a collection of their own (`/agents`, ...), in the
    /// order `/config` lists them.
    pub const ALL: [EntryKind; 3] = [EntryKind::Agent, EntryKind::Team, EntryKind::Workflow];

    /// A dense index, for tables by kind.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The label value of metrics and the access log.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Agent => "agent",
            EntryKind::Team => "team",
            EntryKind::Workflow => "workflow",
            EntryKind::Database => "database",
        }
    }

    /// The TOML array and, but for databases, the AgentOS collection
    /// (`/agents`, ...).
    pub fn plural(self) -> &'static str {
        match self {
            EntryKind::Agent => "agents",
            EntryKind::Team => "teams",
            EntryKind::Workflow => "workflows",
            EntryKind::Database => "dbs",
        }
    }

    /// The field naming the id on the host (`agent_id`, ...), in the
    /// config and in the host's documents. A database keeps its id on the
    /// host: callers name it in `db_id`, which is passed on as is.
    pub fn remote_key(self) -> &'static str {
        match self {
            EntryKind::Agent => "agent_id",
            EntryKind::Team => "team_id",
            EntryKind::Workflow => "workflow_id",
            EntryKind::Database => "db_id",
        }
    }

    /// AgentOS's 404 detail for an unknown id of this kind.
    pub fn not_found(self) -> &'static str {
        match self {
            EntryKind::Agent => "Agent not found",
            EntryKind::Team => "Team not found",
            EntryKind::Workflow => "Workflow not found",
            EntryKind::Database => "Database not found",
        }
    }
}

impl std::fmt::Display for EntryKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `[[agents]]`, `[[teams]]` or `[[workflows]]` entry: an agent, team or
/// workflow on a remote AgentOS host.
#[derive(Debug, Clone, PartialEq)]
pub struct EntryConfig {
    pub kind: EntryKind,
    /// The id the gateway exposes (unique per kind).
    pub id: String,
    /// The host group that runs it (see [`Config::host_groups`]).
    pub host_group: String,
    /// Its id on that host (`agent_id`, `team_id` or `workflow_id`).
    pub remote_id: String,
    /// Longest gap between two body chunks (reset on every read); never a
    /// total deadline.
    pub timeout: Duration,
    /// Longest wait for the response head.
    pub first_byte_timeout: Duration,
    /// Optional cap on a whole event stream.
    pub max_stream_duration: Option<Duration>,
    /// Write a `: ping` comment after this long without an event.
    pub heartbeat: Option<Duration>,
    /// Cancel the run on its host when a streaming client disconnects.
    pub cancel_on_disconnect: bool,
    pub config_ttl: Duration,
    /// Sent as `Authorization: Bearer` when the caller sends no Authorization.
    pub auth_token: Option<Secret>,
    /// Whether the caller's `Authorization` reaches the host; when false it
    /// is replaced by `auth_token` (or dropped).
    pub forward_caller_token: bool,
}

/// A credential that never shows up in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read config file: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("environment variable {var} (overrides `{key}`): {message}")]
    Env {
        var: String,
        key: String,
        message: String,
    },
    #[error("{path}:{line}:{column}: `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        key: String,
        message: String,
    },
    #[error(
        "{path}: exposes nothing: add a [[workflows]], [[agents]], [[teams]] or [[dbs]] entry (see config/gateway.example.toml)"
    )]
    NothingExposed { path: PathBuf },
}

// ---------------------------------------------------------------------------
// Raw serde layer: what the TOML file literally says, with source positions.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    host_groups: Vec<Spanned<RawHostGroup>>,
    #[serde(default)]
    agents: Vec<Spanned<RawEntry>>,
    #[serde(default)]
    teams: Vec<Spanned<RawEntry>>,
    #[serde(default)]
    workflows: Vec<Spanned<RawEntry>>,
    #[serde(default)]
    dbs: Vec<Spanned<RawEntry>>,
    #[serde(default)]
    tracing: RawTracing,
    #[serde(default)]
    auth: auth::RawAuth,
    #[serde(default)]
    limits: auth::RawLimits,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTracing {
    otlp_endpoint: Option<Spanned<String>>,
    service_name: Option<Spanned<String>>,
    sample_ratio: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHostGroup {
    name: Spanned<String>,
    base_urls: Option<Spanned<Vec<String>>>,
    dns: Option<Spanned<String>>,
    // Group knobs; unset ones default to `[server]`'s.
    connect_timeout: Option<Spanned<f64>>,
    max_concurrent_requests: Option<Spanned<u64>>,
    health_checks: Option<Spanned<bool>>,
    health_check_interval: Option<Spanned<f64>>,
    eject_after: Option<Spanned<u64>>,
    eject_base: Option<Spanned<f64>>,
    eject_max: Option<Spanned<f64>>,
    dns_refresh: Option<Spanned<f64>>,
    forward_caller_token: Option<Spanned<bool>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<Spanned<String>>,
    os_id: Option<Spanned<String>>,
    name: Option<Spanned<String>>,
    description: Option<Spanned<String>>,
    max_body_bytes: Option<Spanned<u64>>,
    connect_timeout: Option<Spanned<f64>>,
    config_fetch_timeout: Option<Spanned<f64>>,
    drain_grace: Option<Spanned<f64>>,
    drain_timeout: Option<Spanned<f64>>,
    // Defaults for every host group.
    max_concurrent_requests: Option<Spanned<u64>>,
    health_checks: Option<Spanned<bool>>,
    health_check_interval: Option<Spanned<f64>>,
    eject_after: Option<Spanned<u64>>,
    eject_base: Option<Spanned<f64>>,
    eject_max: Option<Spanned<f64>>,
    dns_refresh: Option<Spanned<f64>>,
    // Defaults for every workflow.
    timeout: Option<Spanned<f64>>,
    first_byte_timeout: Option<Spanned<f64>>,
    max_stream_duration: Option<Spanned<f64>>,
    heartbeat: Option<Spanned<f64>>,
    cancel_on_disconnect: Option<Spanned<bool>>,
    config_ttl: Option<Spanned<f64>>,
    #[serde(default)]
    cors: RawCors,
    // Connection limits and the host transport.
    listen_backlog: Option<Spanned<u64>>,
    max_connections: Option<Spanned<u64>>,
    header_read_timeout: Option<Spanned<f64>>,
    keep_alive_timeout: Option<Spanned<f64>>,
    write_timeout: Option<Spanned<f64>>,
    max_header_bytes: Option<Spanned<u64>>,
    max_headers: Option<Spanned<u64>>,
    h2_max_concurrent_streams: Option<Spanned<u64>>,
    pool_idle_timeout: Option<Spanned<f64>>,
    upstream_ca_file: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCors {
    allowed_origins: Option<Spanned<Vec<String>>>,
}

/// One entry of any kind. The three remote-id keys are all accepted by
/// serde; `validate` refuses the two that are not the entry's kind's.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    id: Spanned<String>,
    base_url: Option<Spanned<String>>,
    base_urls: Option<Spanned<Vec<String>>>,
    host_group: Option<Spanned<String>>,
    agent_id: Option<Spanned<String>>,
    team_id: Option<Spanned<String>>,
    workflow_id: Option<Spanned<String>>,
    auth_token: Option<Spanned<String>>,
    // Entry knobs; unset ones default to `[server]`'s.
    timeout: Option<Spanned<f64>>,
    first_byte_timeout: Option<Spanned<f64>>,
    max_stream_duration: Option<Spanned<f64>>,
    heartbeat: Option<Spanned<f64>>,
    cancel_on_disconnect: Option<Spanned<bool>>,
    config_ttl: Option<Spanned<f64>>,
    forward_caller_token: Option<Spanned<bool>>,
}

// ---------------------------------------------------------------------------
// Loading and validation.

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::read(path).map(|(config, _)| config)
    }

    /// Reads and validates the file at `path`, and returns its text too, so
    /// a reload can tell an unchanged file. A file that exposes nothing is
    /// refused: a gateway with nothing behind it is a mistake, not a default.
    pub fn read(path: &Path) -> Result<(Config, String), ConfigError> {
        let source = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Ok((Config::servable(path, &source)?, source))
    }

    /// Validates `source`, the text of the file at `path`, with the
    /// process's environment, as a config to serve: one that exposes
    /// nothing is refused.
    pub fn servable(path: &Path, source: &str) -> Result<Config, ConfigError> {
        let config = Config::parse(path, source, &|name| std::env::var(name).ok())?;
        if config.entries.is_empty() {
            return Err(ConfigError::NothingExposed {
                path: path.to_owned(),
            });
        }
        Ok(config)
    }

    /// Parses `source` (read from `path`, used in messages), resolving
    /// `${VAR}` references with `env`.
    pub fn parse(
        path: &Path,
        source: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let locate = Locator { path, source };
        let raw: RawConfig = toml::from_str(source).map_err(|e| locate.parse_error(&e))?;
        validate(raw, &locate, env)
    }
}

/// Turns byte offsets into `file:line:column` errors.
struct Locator<'a> {
    path: &'a Path,
    source: &'a str,
}

impl Locator<'_> {
    fn error(&self, span: Range<usize>, key: &str, message: impl Into<String>) -> ConfigError {
        let offset = span.start.min(self.source.len());
        let before = &self.source[..offset];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        ConfigError::Invalid {
            path: self.path.to_owned(),
            line,
            column,
            key: key.to_owned(),
            message: message.into(),
        }
    }

    fn parse_error(&self, e: &toml::de::Error) -> ConfigError {
        let span = e.span().unwrap_or(0..0);
        let message = &in_user_words(e.message().trim());
        let offset = span.start.min(self.source.len());
        let line_start = self.source[..offset].rfind('\n').map_or(0, |i| i + 1);
        let line = self.source[line_start..]
            .lines()
            .next()
            .unwrap_or("")
            .trim();
        // serde points at a key (unknown field), at a value (wrong type) or
        // at a table header (missing field): name the key in each case.
        let key = if line.starts_with('[') {
            let table = line.trim_matches(['[', ']', ' ']);
            match missing_field(message) {
                Some(field) => format!("{table}.{field}"),
                None => table.to_owned(),
            }
        } else {
            let key = line
                .split('=')
                .next()
                .unwrap_or("")
                .trim()
                .trim_matches('"');
            match self.enclosing_table(line_start) {
                Some(table) => format!("{table}.{key}"),
                None => key.to_owned(),
            }
        };
        // The one number that is not a duration.
        if key == "tracing.sample_ratio" {
            let message = message.replace("a number of seconds", "a number from 0 to 1");
            return self.error(span, &key, message);
        }
        self.error(span, &key, message)
    }

    /// The `[table]` or `[[array]]` header above `offset`, if any.
    fn enclosing_table(&self, offset: usize) -> Option<&str> {
        self.source[..offset]
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| l.starts_with('['))
            .map(|l| l.trim_matches(['[', ']', ' ']))
    }
}

/// serde's type errors in an operator's words: "expected f64" means a
/// number of seconds here (every such key is a duration), "expected u64" a
/// whole number, "a sequence" a list.
fn in_user_words(message: &str) -> String {
    let Some(rest) = message.strip_prefix("invalid type: ") else {
        return message.to_owned();
    };
    let Some((got, expected)) = rest.split_once(", expected ") else {
        return message.to_owned();
    };
    let expected = match expected {
        "f64" => "a number of seconds",
        "u64" => "a whole number",
        "a boolean" => "true or false",
        "a sequence" => "a list, like [\"...\"]",
        "a string" => "text in quotes",
        other => other,
    };
    let got = got
        .strip_prefix("string ")
        .map(|text| format!("the text {text}"))
        .or_else(|| got.strip_prefix("floating point ").map(str::to_owned))
        .or_else(|| got.strip_prefix("integer ").map(str::to_owned))
        .unwrap_or_else(|| got.to_owned());
    format!("expected {expected}, got {got}")
}

fn missing_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
}

/// Where a setting's value came from, for error messages.
enum Origin {
    File(Range<usize>),
    Env(String),
}

/// One setting's value and where it came from.
struct Setting<T> {
    value: T,
    origin: Origin,
}

impl Locator<'_> {
    fn at(&self, origin: &Origin, key: &str, message: impl Into<String>) -> ConfigError {
        match origin {
            Origin::File(span) => self.error(span.clone(), key, message),
            Origin::Env(var) => ConfigError::Env {
                var: var.clone(),
                key: key.to_owned(),
                message: message.into(),
            },
        }
    }
}

/// A value from the file, wrapped with its position.
fn from_file<T: Clone>(value: &Option<Spanned<T>>) -> Option<Setting<T>> {
    value.as_ref().map(|v| Setting {
        value: v.get_ref().clone(),
        origin: Origin::File(v.span()),
    })
}

/// `server.<key>` from `AGENTOS_GATEWAY_<KEY>` when set, else from the file.
fn server_setting<T: Clone>(
    file: &Option<Spanned<T>>,
    key: &str,
    env: &dyn Fn(&str) -> Option<String>,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<Setting<T>>, ConfigError> {
    let var = format!("{ENV_PREFIX}{}", key.replace('.', "_").to_ascii_uppercase());
    match env(&var) {
        None => Ok(from_file(file)),
        Some(raw) => match parse(raw.trim()) {
            Ok(value) => Ok(Some(Setting {
                value,
                origin: Origin::Env(var),
            })),
            Err(message) => Err(ConfigError::Env {
                var,
                key: format!("server.{key}"),
                message,
            }),
        },
    }
}

fn parse_seconds(raw: &str) -> Result<f64, String> {
    raw.parse()
        .map_err(|_| format!("`{raw}` is not a number of seconds"))
}

fn seconds(
    value: Option<Setting<f64>>,
    default: f64,
    key: &str,
    locate: &Locator,
) -> Result<Duration, ConfigError> {
    let Some(v) = value else {
        return Ok(Duration::from_secs_f64(default));
    };
    let secs = v.value;
    if !secs.is_finite() || secs <= 0.0 || secs > 365.0 * 24.0 * 3600.0 {
        return Err(locate.at(
            &v.origin,
            key,
            format!("must be a positive number of seconds, got {secs}"),
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Ids appear in URL paths, so they are limited to the RFC 3986 unreserved set.
fn is_url_safe_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~'))
        && id != "."
        && id != ".."
}

/// Replaces every `${NAME}` with the environment variable's value.
fn expand_env(raw: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| "unterminated `${` reference".to_owned())?;
        let name = &after[..end];
        if name.is_empty() {
            return Err("empty `${}` reference".to_owned());
        }
        let value = env(name).ok_or_else(|| format!("environment variable `{name}` is not set"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn validate(
    raw: RawConfig,
    locate: &Locator,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let s = &raw.server;
    let text = |raw: &str| Ok(raw.to_owned());
    let listen = match server_setting(&s.listen, "listen", env, text)? {
        None => SocketAddr::from(([0, 0, 0, 0], 7777)),
        Some(v) => v.value.parse().map_err(|_| {
            locate.at(
                &v.origin,
                "server.listen",
                format!("`{}` is not an IP:port address", v.value),
            )
        })?,
    };
    let os_id = match server_setting(&s.os_id, "os_id", env, text)? {
        None => "agentos-gateway".to_owned(),
        Some(v) if v.value.trim().is_empty() => {
            return Err(locate.at(&v.origin, "server.os_id", "must not be empty"));
        }
        Some(v) => v.value,
    };
    let name = server_setting(&s.name, "name", env, text)?.map(|v| v.value);
    let description = server_setting(&s.description, "description", env, text)?.map(|v| v.value);
    let max_body_bytes = match server_setting(&s.max_body_bytes, "max_body_bytes", env, |raw| {
        raw.parse()
            .map_err(|_| format!("`{raw}` is not a number of bytes"))
    })? {
        None => DEFAULT_MAX_BODY_BYTES,
        Some(v) if v.value == 0 => {
            return Err(locate.at(&v.origin, "server.max_body_bytes", "must be above 0"));
        }
        Some(v) => v.value,
    };
    let origins = server_setting(
        &s.cors.allowed_origins,
        "cors.allowed_origins",
        env,
        |raw| {
            Ok(raw
                .split(',')
                .map(|o| o.trim().to_owned())
                .filter(|o| !o.is_empty())
                .collect())
        },
    )?;
    let cors_origins = match origins {
        None => Some(DEFAULT_CORS_ORIGINS.iter().map(|o| o.to_string()).collect()),
        Some(v) if v.value.iter().any(|o| o == "*") => None,
        Some(v) => {
            for origin in &v.value {
                if http::HeaderValue::from_str(origin).is_err() || Url::parse(origin).is_err() {
                    return Err(locate.at(
                        &v.origin,
                        "server.cors.allowed_origins",
                        format!("`{origin}` is not an origin like https://app.example.com"),
                    ));
                }
            }
            Some(v.value)
        }
    };
    let duration = |file: &Option<Spanned<f64>>, key: &str, default: f64| {
        let setting = server_setting(file, key, env, parse_seconds)?;
        seconds(setting, default, &format!("server.{key}"), locate)
    };
    let server = ServerConfig {
        listen,
        os_id,
        name,
        description,
        max_body_bytes,
        connect_timeout: duration(
            &s.connect_timeout,
            "connect_timeout",
            DEFAULT_CONNECT_TIMEOUT_SECS,
        )?,
        config_fetch_timeout: duration(
            &s.config_fetch_timeout,
            "config_fetch_timeout",
            DEFAULT_CONFIG_FETCH_TIMEOUT_SECS,
        )?,
        drain_grace: duration(&s.drain_grace, "drain_grace", DEFAULT_DRAIN_GRACE_SECS)?,
        drain_timeout: duration(
            &s.drain_timeout,
            "drain_timeout",
            DEFAULT_DRAIN_TIMEOUT_SECS,
        )?,
        cors_origins,
        limits: limits(s, &duration, env, locate)?,
        pool_idle_timeout: duration(
            &s.pool_idle_timeout,
            "pool_idle_timeout",
            DEFAULT_POOL_IDLE_TIMEOUT_SECS,
        )?,
        upstream_ca_file: upstream_ca_file(s, env, locate)?,
    };
    let admin = admin(&raw.admin, env, locate)?;
    let flag = |file: &Option<Spanned<bool>>, key: &str, default: bool| {
        Ok::<_, ConfigError>(
            server_setting(file, key, env, parse_bool)?.map_or(default, |v| v.value),
        )
    };
    let count = |file: &Option<Spanned<u64>>, key: &str| {
        let setting = server_setting(file, key, env, parse_count)?;
        positive_count(setting, &format!("server.{key}"), locate)
    };
    let optional = |file: &Option<Spanned<f64>>, key: &str| {
        let setting = server_setting(file, key, env, parse_seconds)?;
        optional_seconds(setting, &format!("server.{key}"), locate)
    };
    let group_defaults = GroupDefaults {
        max_concurrent_requests: count(&s.max_concurrent_requests, "max_concurrent_requests")?,
        health_checks: flag(&s.health_checks, "health_checks", true)?,
        health_check_interval: duration(
            &s.health_check_interval,
            "health_check_interval",
            DEFAULT_HEALTH_CHECK_INTERVAL_SECS,
        )?,
        eject_after: count(&s.eject_after, "eject_after")?
            .unwrap_or(EjectionPolicy::default().consecutive_failures as usize),
        eject_base: duration(&s.eject_base, "eject_base", 5.0)?,
        eject_max: duration(&s.eject_max, "eject_max", 300.0)?,
        dns_refresh: duration(&s.dns_refresh, "dns_refresh", DEFAULT_DNS_REFRESH_SECS)?,
    };
    let timeout = duration(&s.timeout, "timeout", DEFAULT_TIMEOUT_SECS)?;
    let entry_defaults = EntryDefaults {
        timeout,
        first_byte_timeout: optional(&s.first_byte_timeout, "first_byte_timeout")?
            .unwrap_or(timeout),
        max_stream_duration: optional(&s.max_stream_duration, "max_stream_duration")?,
        heartbeat: optional(&s.heartbeat, "heartbeat")?,
        cancel_on_disconnect: flag(&s.cancel_on_disconnect, "cancel_on_disconnect", true)?,
        config_ttl: duration(&s.config_ttl, "config_ttl", DEFAULT_CONFIG_TTL_SECS)?,
    };

    let mut host_groups = Vec::new();
    for entry in &raw.host_groups {
        let g = entry.get_ref();
        let name = g.name.get_ref();
        if !is_url_safe_id(name) {
            return Err(locate.error(
                g.name.span(),
                "host_groups.name",
                format!("`{name}` is not URL-safe: use letters, digits, `-`, `_`, `.` or `~`"),
            ));
        }
        if host_groups
            .iter()
            .any(|h: &HostGroupConfig| &h.name == name)
        {
            return Err(locate.error(
                g.name.span(),
                "host_groups.name",
                format!("duplicate host group `{name}`"),
            ));
        }
        let dns_refresh = match &g.dns_refresh {
            None => group_defaults.dns_refresh,
            v => seconds(from_file(v), 0.0, "host_groups.dns_refresh", locate)?,
        };
        let source = match (&g.base_urls, &g.dns) {
            (Some(urls), None) => {
                HostSource::Static(base_url_list(urls, "host_groups.base_urls", locate)?)
            }
            (None, Some(dns)) => HostSource::Dns {
                url: parse_base_url(dns.get_ref())
                    .map_err(|m| locate.error(dns.span(), "host_groups.dns", m))?,
                refresh: dns_refresh,
            },
            _ => {
                return Err(locate.error(
                    entry.span(),
                    "host_groups",
                    format!("host group `{name}` needs exactly one of `base_urls` or `dns`"),
                ));
            }
        };
        let health_checks = g
            .health_checks
            .as_ref()
            .map_or(group_defaults.health_checks, |v| *v.get_ref());
        let interval = match &g.health_check_interval {
            None => group_defaults.health_check_interval,
            v => seconds(
                from_file(v),
                0.0,
                "host_groups.health_check_interval",
                locate,
            )?,
        };
        let ejection = EjectionPolicy {
            consecutive_failures: positive_count(
                from_file(&g.eject_after),
                "host_groups.eject_after",
                locate,
            )?
            .unwrap_or(group_defaults.eject_after) as u32,
            base: match &g.eject_base {
                None => group_defaults.eject_base,
                v => seconds(from_file(v), 0.0, "host_groups.eject_base", locate)?,
            },
            max: match &g.eject_max {
                None => group_defaults.eject_max,
                v => seconds(from_file(v), 0.0, "host_groups.eject_max", locate)?,
            },
        };
        host_groups.push(HostGroupConfig {
            name: name.clone(),
            source,
            connect_timeout: match &g.connect_timeout {
                None => server.connect_timeout,
                v => seconds(from_file(v), 0.0, "host_groups.connect_timeout", locate)?,
            },
            max_concurrent_requests: positive_count(
                from_file(&g.max_concurrent_requests),
                "host_groups.max_concurrent_requests",
                locate,
            )?
            .or(group_defaults.max_concurrent_requests),
            health_check_interval: health_checks.then_some(interval),
            ejection,
        });
    }
    let named_groups = host_groups.len();
    let mut groups = Groups {
        all: host_groups,
        named: named_groups,
        raw: &raw.host_groups,
        defaults: &group_defaults,
        connect_timeout: server.connect_timeout,
    };
    let mut entries = Vec::with_capacity(raw.agents.len() + raw.teams.len() + raw.workflows.len());
    for (kind, table) in [
        (EntryKind::Agent, &raw.agents),
        (EntryKind::Team, &raw.teams),
        (EntryKind::Workflow, &raw.workflows),
        (EntryKind::Database, &raw.dbs),
    ] {
        // Ids are unique per kind: `/agents/x` and `/workflows/x` never meet.
        let mut seen: HashMap<String, usize> = HashMap::new();
        for entry in table {
            entries.push(validate_entry(
                kind,
                entry.get_ref(),
                &mut seen,
                &mut groups,
                &entry_defaults,
                s.first_byte_timeout.is_none(),
                locate,
                env,
            )?);
        }
    }
    let auth = auth::auth(&raw.auth, env, locate)?;
    let ids: Vec<String> = entries
        .iter()
        .filter(|e| e.kind == EntryKind::Workflow)
        .map(|e| e.id.clone())
        .collect();
    let limits = auth::limits(&raw.limits, &ids, locate)?;
    Ok(Config {
        server,
        admin,
        host_groups: groups.all,
        entries,
        entry_defaults,
        tracing: tracing_table(&raw.tracing, locate)?,
        auth,
        limits,
    })
}

/// The host groups as entries are validated: the named ones first, then
/// the implicit ones entries add.
struct Groups<'a> {
    all: Vec<HostGroupConfig>,
    named: usize,
    /// The `[[host_groups]]` as written, for settings entries inherit.
    raw: &'a [Spanned<RawHostGroup>],
    defaults: &'a GroupDefaults,
    connect_timeout: Duration,
}

/// One `[[agents]]`, `[[teams]]` or `[[workflows]]` entry; keys in errors
/// are prefixed with its table (`teams.timeout`).
#[allow(clippy::too_many_arguments)]
fn validate_entry(
    kind: EntryKind,
    w: &RawEntry,
    seen: &mut HashMap<String, usize>,
    groups: &mut Groups,
    d: &EntryDefaults,
    no_server_first_byte_timeout: bool,
    locate: &Locator,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<EntryConfig, ConfigError> {
    let table = kind.plural();
    let key = |name: &str| format!("{table}.{name}");
    let id = w.id.get_ref();
    if !is_url_safe_id(id) {
        return Err(locate.error(
            w.id.span(),
            &key("id"),
            format!("`{id}` is not URL-safe: use letters, digits, `-`, `_`, `.` or `~`"),
        ));
    }
    if let Some(first) = seen.insert(id.clone(), w.id.span().start) {
        let first_line = locate.source[..first].matches('\n').count() + 1;
        return Err(locate.error(
            w.id.span(),
            &key("id"),
            format!("duplicate id `{id}` (first defined on line {first_line})"),
        ));
    }
    let host_group = match (&w.base_url, &w.base_urls, &w.host_group) {
        (Some(url), None, None) => {
            let url = parse_base_url(url.get_ref())
                .map_err(|m| locate.error(url.span(), &key("base_url"), m))?;
            implicit_group(groups, vec![url])
        }
        (None, Some(urls), None) => {
            let urls = base_url_list(urls, &key("base_urls"), locate)?;
            implicit_group(groups, urls)
        }
        (None, None, Some(group)) => {
            if !groups.all[..groups.named]
                .iter()
                .any(|h| &h.name == group.get_ref())
            {
                return Err(locate.error(
                    group.span(),
                    &key("host_group"),
                    format!("no [[host_groups]] entry is named `{}`", group.get_ref()),
                ));
            }
            group.get_ref().clone()
        }
        _ => {
            return Err(locate.error(
                w.id.span(),
                &key("base_url"),
                format!(
                    "{kind} `{id}` needs exactly one of `base_url`, `base_urls` or `host_group`"
                ),
            ));
        }
    };
    if kind == EntryKind::Database {
        // A database is reached by plain request-and-answer calls.
        for (name, set) in [
            (
                "max_stream_duration",
                w.max_stream_duration.as_ref().map(|v| v.span()),
            ),
            ("heartbeat", w.heartbeat.as_ref().map(|v| v.span())),
            (
                "cancel_on_disconnect",
                w.cancel_on_disconnect.as_ref().map(|v| v.span()),
            ),
            ("config_ttl", w.config_ttl.as_ref().map(|v| v.span())),
        ] {
            if let Some(span) = set {
                return Err(locate.error(
                    span,
                    &key(name),
                    format!("`{name}` has no meaning for a database"),
                ));
            }
        }
    }
    let mut remote_id = None;
    for (remote_kind, value) in [
        (EntryKind::Agent, &w.agent_id),
        (EntryKind::Team, &w.team_id),
        (EntryKind::Workflow, &w.workflow_id),
    ] {
        let Some(v) = value else { continue };
        let name = remote_kind.remote_key();
        if kind == EntryKind::Database {
            return Err(locate.error(
                v.span(),
                &key(name),
                format!("unknown field `{name}` in [[dbs]]; a database keeps its id on its host"),
            ));
        }
        if remote_kind != kind {
            return Err(locate.error(
                v.span(),
                &key(name),
                format!(
                    "unknown field `{name}` in [[{table}]]; the id on the host is `{}`",
                    kind.remote_key()
                ),
            ));
        }
        if !is_url_safe_id(v.get_ref()) {
            return Err(locate.error(
                v.span(),
                &key(name),
                format!("`{}` is not URL-safe", v.get_ref()),
            ));
        }
        remote_id = Some(v.get_ref().clone());
    }
    let auth_token = match &w.auth_token {
        None => None,
        Some(v) => {
            let token = expand_env(v.get_ref(), env)
                .map_err(|m| locate.error(v.span(), &key("auth_token"), m))?;
            if !v.get_ref().contains("${") {
                let at = locate.error(v.span(), &key("auth_token"), "");
                tracing::warn!(
                    "{} literal token in the config file; prefer \"${{ENV_VAR}}\" from a Secret",
                    at.to_string().trim_end_matches(' ')
                );
            }
            if token.is_empty() || http::HeaderValue::from_str(&token).is_err() {
                return Err(locate.error(
                    v.span(),
                    &key("auth_token"),
                    "must be a non-empty token of visible ASCII characters",
                ));
            }
            Some(Secret(token))
        }
    };
    let secs = |v: &Option<Spanned<f64>>, name: &str, default: Duration| match v {
        None => Ok(default),
        v => seconds(from_file(v), 0.0, &key(name), locate),
    };
    let maybe_secs = |v: &Option<Spanned<f64>>, name: &str, default: Option<Duration>| match v {
        None => Ok(default),
        v => optional_seconds(from_file(v), &key(name), locate),
    };
    let timeout = secs(&w.timeout, "timeout", d.timeout)?;
    let forward_caller_token = forward_caller_token(w, groups.raw, &host_group);
    Ok(EntryConfig {
        kind,
        id: id.clone(),
        host_group,
        remote_id: remote_id.unwrap_or_else(|| id.clone()),
        timeout,
        first_byte_timeout: secs(
            &w.first_byte_timeout,
            "first_byte_timeout",
            // An entry's own `timeout` bounds its first byte too, unless
            // `[server]` set a first-byte timeout of its own.
            if w.timeout.is_some() && no_server_first_byte_timeout {
                timeout
            } else {
                d.first_byte_timeout
            },
        )?,
        max_stream_duration: maybe_secs(
            &w.max_stream_duration,
            "max_stream_duration",
            d.max_stream_duration,
        )?,
        heartbeat: maybe_secs(&w.heartbeat, "heartbeat", d.heartbeat)?,
        cancel_on_disconnect: w
            .cancel_on_disconnect
            .as_ref()
            .map_or(d.cancel_on_disconnect, |v| *v.get_ref()),
        config_ttl: secs(&w.config_ttl, "config_ttl", d.config_ttl)?,
        auth_token,
        forward_caller_token,
    })
}

/// The `[tracing]` table.
fn tracing_table(raw: &RawTracing, locate: &Locator) -> Result<TracingConfig, ConfigError> {
    let mut config = TracingConfig::default();
    if let Some(v) = &raw.otlp_endpoint {
        let text = v.get_ref().trim();
        if !text.is_empty() {
            let url = Url::parse(text)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
                .ok_or_else(|| {
                    locate.error(
                        v.span(),
                        "tracing.otlp_endpoint",
                        format!(
                            "`{text}` is not a collector URL like http://collector:4318 (\"\" turns the export off)"
                        ),
                    )
                })?;
            config.otlp_endpoint = Some(url);
        }
    }
    if let Some(v) = &raw.service_name {
        if v.get_ref().trim().is_empty() {
            return Err(locate.error(v.span(), "tracing.service_name", "must not be empty"));
        }
        config.service_name = v.get_ref().clone();
    }
    if let Some(v) = &raw.sample_ratio {
        let ratio = *v.get_ref();
        if !(0.0..=1.0).contains(&ratio) {
            return Err(locate.error(
                v.span(),
                "tracing.sample_ratio",
                format!("must be a number from 0 to 1, got {ratio}"),
            ));
        }
        config.sample_ratio = ratio;
    }
    Ok(config)
}

/// An entry's `forward_caller_token`, else its named host group's, else
/// true (the caller's token goes on, as before the setting existed).
fn forward_caller_token(w: &RawEntry, groups: &[Spanned<RawHostGroup>], group: &str) -> bool {
    w.forward_caller_token
        .as_ref()
        .or_else(|| {
            groups
                .iter()
                .find(|g| g.get_ref().name.get_ref() == group)
                .and_then(|g| g.get_ref().forward_caller_token.as_ref())
        })
        .is_none_or(|v| *v.get_ref())
}

/// A `[server]` duration: its key, and its default in seconds.
type ServerDuration<'a> =
    dyn Fn(&Option<Spanned<f64>>, &str, f64) -> Result<Duration, ConfigError> + 'a;

/// The connection limits of `[server]`; `duration` reads a `[server]`
/// duration as `validate` does.
fn limits(
    s: &RawServer,
    duration: &ServerDuration,
    env: &dyn Fn(&str) -> Option<String>,
    locate: &Locator,
) -> Result<ConnectionLimits, ConfigError> {
    let count = |file: &Option<Spanned<u64>>, key: &str, default: u64, range: (u64, u64)| {
        let setting = server_setting(file, key, env, parse_count)?;
        let (min, max) = range;
        match setting {
            None => Ok(default),
            Some(v) if v.value < min || v.value > max => Err(locate.at(
                &v.origin,
                &format!("server.{key}"),
                format!(
                    "must be a whole number from {min} to {max}, got {}",
                    v.value
                ),
            )),
            Some(v) => Ok(v.value),
        }
    };
    Ok(ConnectionLimits {
        listen_backlog: count(
            &s.listen_backlog,
            "listen_backlog",
            DEFAULT_LISTEN_BACKLOG,
            (1, 65_535),
        )? as u32,
        max_connections: count(
            &s.max_connections,
            "max_connections",
            DEFAULT_MAX_CONNECTIONS,
            (1, 10_000_000),
        )? as usize,
        header_read_timeout: duration(
            &s.header_read_timeout,
            "header_read_timeout",
            DEFAULT_HEADER_READ_TIMEOUT_SECS,
        )?,
        keep_alive_timeout: duration(
            &s.keep_alive_timeout,
            "keep_alive_timeout",
            DEFAULT_KEEP_ALIVE_TIMEOUT_SECS,
        )?,
        write_timeout: duration(
            &s.write_timeout,
            "write_timeout",
            DEFAULT_WRITE_TIMEOUT_SECS,
        )?,
        max_header_bytes: count(
            &s.max_header_bytes,
            "max_header_bytes",
            DEFAULT_MAX_HEADER_BYTES,
            (MIN_MAX_HEADER_BYTES, 16 * 1024 * 1024),
        )? as usize,
        max_headers: count(
            &s.max_headers,
            "max_headers",
            DEFAULT_MAX_HEADERS,
            (1, 10_000),
        )? as usize,
        h2_max_concurrent_streams: count(
            &s.h2_max_concurrent_streams,
            "h2_max_concurrent_streams",
            DEFAULT_H2_MAX_CONCURRENT_STREAMS,
            (1, 1_000_000),
        )? as u32,
    })
}

/// `server.upstream_ca_file`: must name a readable file of PEM certificates.
fn upstream_ca_file(
    s: &RawServer,
    env: &dyn Fn(&str) -> Option<String>,
    locate: &Locator,
) -> Result<Option<PathBuf>, ConfigError> {
    let setting = server_setting(&s.upstream_ca_file, "upstream_ca_file", env, |raw| {
        Ok(raw.to_owned())
    })?;
    let Some(v) = setting else {
        return Ok(None);
    };
    let path = PathBuf::from(&v.value);
    match std::fs::read(&path) {
        Ok(pem) if pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") => Ok(Some(path)),
        Ok(_) => Err(locate.at(
            &v.origin,
            "server.upstream_ca_file",
            format!("`{}` holds no PEM certificate", v.value),
        )),
        Err(e) => Err(locate.at(
            &v.origin,
            "server.upstream_ca_file",
            format!("cannot read `{}`: {e}", v.value),
        )),
    }
}

/// The `[admin]` table; `AGENTOS_GATEWAY_ADMIN_LISTEN` overrides its
/// `listen`.
fn admin(
    raw: &RawAdmin,
    env: &dyn Fn(&str) -> Option<String>,
    locate: &Locator,
) -> Result<AdminConfig, ConfigError> {
    let var = format!("{ENV_PREFIX}ADMIN_LISTEN");
    let setting = match env(&var) {
        Some(value) => Some(Setting {
            value: value.trim().to_owned(),
            origin: Origin::Env(var),
        }),
        None => from_file(&raw.listen),
    };
    let listen = match setting {
        None => DEFAULT_ADMIN_LISTEN.parse().ok(),
        Some(v) if v.value.is_empty() => None,
        Some(v) => Some(v.value.parse().map_err(|_| {
            locate.at(
                &v.origin,
                "admin.listen",
                format!(
                    "`{}` is not an IP:port address (\"\" turns the listener off)",
                    v.value
                ),
            )
        })?),
    };
    Ok(AdminConfig { listen })
}

/// `[server]`-level defaults for host groups.
struct GroupDefaults {
    max_concurrent_requests: Option<usize>,
    health_checks: bool,
    health_check_interval: Duration,
    eject_after: usize,
    eject_base: Duration,
    eject_max: Duration,
    dns_refresh: Duration,
}

/// `[server]`-level defaults for agents, teams, workflows and databases.
#[derive(Debug, Clone, PartialEq)]
pub struct EntryDefaults {
    pub timeout: Duration,
    pub first_byte_timeout: Duration,
    pub max_stream_duration: Option<Duration>,
    pub heartbeat: Option<Duration>,
    pub cancel_on_disconnect: bool,
    pub config_ttl: Duration,
}

/// The group for an entry's inline `base_url`/`base_urls`: entries that
/// name the same URLs share it (and so share pooled connections and health),
/// whatever their kind.
fn implicit_group(groups: &mut Groups, urls: Vec<Url>) -> String {
    let name = urls
        .iter()
        .map(|u| u.as_str().trim_end_matches('/'))
        .collect::<Vec<_>>()
        .join(",");
    let exists = groups.all[groups.named..].iter().any(|g| g.name == name);
    if !exists {
        let defaults = groups.defaults;
        groups.all.push(HostGroupConfig {
            name: name.clone(),
            source: HostSource::Static(urls),
            connect_timeout: groups.connect_timeout,
            max_concurrent_requests: defaults.max_concurrent_requests,
            health_check_interval: defaults
                .health_checks
                .then_some(defaults.health_check_interval),
            ejection: EjectionPolicy {
                consecutive_failures: defaults.eject_after as u32,
                base: defaults.eject_base,
                max: defaults.eject_max,
            },
        });
    }
    name
}

fn base_url_list(
    urls: &Spanned<Vec<String>>,
    key: &str,
    locate: &Locator,
) -> Result<Vec<Url>, ConfigError> {
    if urls.get_ref().is_empty() {
        return Err(locate.error(urls.span(), key, "must list at least one URL"));
    }
    let mut out: Vec<Url> = Vec::new();
    for raw in urls.get_ref() {
        let url = parse_base_url(raw).map_err(|m| locate.error(urls.span(), key, m))?;
        if out.contains(&url) {
            return Err(locate.error(urls.span(), key, format!("`{raw}` is listed twice")));
        }
        out.push(url);
    }
    Ok(out)
}

fn parse_bool(raw: &str) -> Result<bool, String> {
    match raw {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(format!("`{raw}` is not true or false")),
    }
}

fn parse_count(raw: &str) -> Result<u64, String> {
    raw.parse()
        .map_err(|_| format!("`{raw}` is not a whole number"))
}

fn positive_count(
    value: Option<Setting<u64>>,
    key: &str,
    locate: &Locator,
) -> Result<Option<usize>, ConfigError> {
    match value {
        None => Ok(None),
        Some(v) if v.value == 0 => Err(locate.at(&v.origin, key, "must be above 0")),
        Some(v) => Ok(Some(usize::try_from(v.value).unwrap_or(usize::MAX))),
    }
}

fn optional_seconds(
    value: Option<Setting<f64>>,
    key: &str,
    locate: &Locator,
) -> Result<Option<Duration>, ConfigError> {
    match value {
        None => Ok(None),
        v => seconds(v, 0.0, key, locate).map(Some),
    }
}

/// Accepts `http(s)://host[:port][/prefix]`, stripping a trailing slash as
/// RemoteWorkflow does.
pub fn parse_base_url(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw.trim_end_matches('/'))
        .map_err(|e| format!("`{raw}` is not a valid URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("`{raw}` must start with http:// or https://"));
    }
    if url.host_str().is_none() {
        return Err(format!("`{raw}` has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("`{raw}` must not have a query or fragment"));
    }
    Ok(url)
}

impl Config {
    /// The host group named `name`.
    pub fn host_group(&self, name: &str) -> Option<&HostGroupConfig> {
        self.host_groups.iter().find(|g| g.name == name)
    }

    /// The entries of one kind, in file order.
    pub fn entries_of(&self, kind: EntryKind) -> impl Iterator<Item = &EntryConfig> {
        self.entries.iter().filter(move |e| e.kind == kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str) -> Result<Config, ConfigError> {
        let env = |name: &str| (name == "HOST_TOKEN").then(|| "tok-123".to_owned());
        Config::parse(Path::new("gw.toml"), src, &env)
    }

    fn err(src: &str) -> String {
        match parse(src) {
            Ok(_) => panic!("expected an error for:\n{src}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn defaults_mirror_remote_workflow() {
        let c = parse("[[workflows]]\nid = \"echo\"\nbase_url = \"http://h:8000/\"\n").unwrap();
        let w = &c.entries[0];
        assert_eq!(w.remote_id, "echo");
        assert_eq!(w.timeout, Duration::from_secs(300));
        assert_eq!(w.config_ttl, Duration::from_secs(300));
        assert_eq!(w.first_byte_timeout, Duration::from_secs(300));
        assert!(w.cancel_on_disconnect && w.heartbeat.is_none() && w.max_stream_duration.is_none());
        assert_eq!(w.host_group, "http://h:8000");
        let group = c.host_group(&w.host_group).unwrap();
        assert!(matches!(&group.source, HostSource::Static(urls) if urls.len() == 1));
        assert_eq!(group.health_check_interval, Some(Duration::from_secs(5)));
        assert_eq!(group.ejection, EjectionPolicy::default());
        assert_eq!(c.server.listen.to_string(), "0.0.0.0:7777");
        assert_eq!(c.server.connect_timeout, Duration::from_secs(5));
    }

    #[test]
    fn replicas_groups_and_their_knobs() {
        let c = parse(
            r#"
[server]
max_concurrent_requests = 50
heartbeat = 15

[[host_groups]]
name = "pool"
base_urls = ["http://a", "http://b"]
health_checks = false
eject_after = 2

[[host_groups]]
name = "k8s"
dns = "http://agentos.ns.svc:7777"

[[workflows]]
id = "x"
host_group = "pool"
[[workflows]]
id = "y"
base_urls = ["http://c", "http://d"]
max_stream_duration = 60
cancel_on_disconnect = false
[[workflows]]
id = "z"
base_urls = ["http://c", "http://d"]
[[workflows]]
id = "k"
host_group = "k8s"
"#,
        )
        .unwrap();
        let pool = c.host_group("pool").unwrap();
        assert_eq!(pool.health_check_interval, None);
        assert_eq!(pool.ejection.consecutive_failures, 2);
        assert_eq!(pool.max_concurrent_requests, Some(50));
        let k8s = c.host_group("k8s").unwrap();
        assert!(
            matches!(&k8s.source, HostSource::Dns { refresh, .. } if *refresh == Duration::from_secs(10))
        );
        // Workflows naming the same URLs share one implicit group.
        assert_eq!(c.entries[1].host_group, c.entries[2].host_group);
        assert_eq!(c.host_groups.len(), 3);
        assert_eq!(
            c.entries[1].max_stream_duration,
            Some(Duration::from_secs(60))
        );
        assert!(!c.entries[1].cancel_on_disconnect);
        assert_eq!(c.entries[0].heartbeat, Some(Duration::from_secs(15)));
    }

    #[test]
    fn host_group_mistakes() {
        let e = err("[[workflows]]\nid = \"a\"\nhost_group = \"nope\"\n");
        assert!(e.starts_with("gw.toml:3:"), "{e}");
        assert!(
            e.contains("no [[host_groups]] entry is named `nope`"),
            "{e}"
        );
        let e =
            err("[[workflows]]\nid = \"a\"\nbase_url = \"http://a\"\nbase_urls = [\"http://b\"]\n");
        assert!(
            e.contains("exactly one of `base_url`, `base_urls` or `host_group`"),
            "{e}"
        );
        let e = err("[[host_groups]]\nname = \"g\"\n");
        assert!(e.starts_with("gw.toml:1:"), "{e}");
        assert!(e.contains("exactly one of `base_urls` or `dns`"), "{e}");
        let e = err("[[host_groups]]\nname = \"g\"\nbase_urls = []\n");
        assert!(e.contains("at least one URL"), "{e}");
        let e = err("[[host_groups]]\nname = \"g\"\nbase_urls = [\"http://a\", \"http://a/\"]\n");
        assert!(e.contains("listed twice"), "{e}");
        let e = err("[server]\nmax_concurrent_requests = 0\n");
        assert!(
            e.contains("server.max_concurrent_requests") && e.contains("above 0"),
            "{e}"
        );
        let e = err("[server]\nheartbeat = 0\n");
        assert!(e.contains("server.heartbeat"), "{e}");
    }

    #[test]
    fn server_defaults_apply_to_workflows_and_env_tokens_expand() {
        let c = parse(
            "[server]\ntimeout = 12.5\nconfig_ttl = 7\n\n[[workflows]]\nid = \"a\"\nbase_url = \"http://h\"\nauth_token = \"${HOST_TOKEN}\"\n[[workflows]]\nid = \"b\"\nbase_url = \"http://h\"\ntimeout = 1\n",
        )
        .unwrap();
        assert_eq!(c.entries[0].timeout, Duration::from_millis(12500));
        assert_eq!(c.entries[0].config_ttl, Duration::from_secs(7));
        assert_eq!(
            c.entries[0].auth_token.as_ref().unwrap().expose(),
            "tok-123"
        );
        assert_eq!(c.entries[1].timeout, Duration::from_secs(1));
        assert!(!format!("{:?}", c.entries[0]).contains("tok-123"));
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let e = err("[server]\nlisten = \"127.0.0.1:1\"\nlisen = \"x\"\n");
        assert!(e.starts_with("gw.toml:3:"), "{e}");
        assert!(e.contains("`server.lisen`"), "{e}");
    }

    #[test]
    fn unknown_workflow_key() {
        let e = err("[[workflows]]\nid = \"a\"\nbase_url = \"http://h\"\ntimeot = 3\n");
        assert!(e.starts_with("gw.toml:4:"), "{e}");
        assert!(e.contains("timeot"), "{e}");
    }

    #[test]
    fn duplicate_ids() {
        let e = err(
            "[[workflows]]\nid = \"a\"\nbase_url = \"http://h\"\n\n[[workflows]]\nid = \"a\"\nbase_url = \"http://g\"\n",
        );
        assert!(e.starts_with("gw.toml:6:"), "{e}");
        assert!(
            e.contains("`workflows.id`") && e.contains("duplicate id `a`"),
            "{e}"
        );
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn agents_and_teams_share_the_workflow_schema() {
        let c = parse(
            "[server]\ntimeout = 9\n\n[[agents]]\nid = \"support\"\nbase_url = \"http://a\"\nagent_id = \"support-agent\"\ncancel_on_disconnect = false\nauth_token = \"${HOST_TOKEN}\"\n\n[[teams]]\nid = \"research\"\nbase_urls = [\"http://a\", \"http://b\"]\nconfig_ttl = 3\n",
        )
        .unwrap();
        let agent = c.entries_of(EntryKind::Agent).next().unwrap();
        assert_eq!(
            (agent.id.as_str(), agent.remote_id.as_str()),
            ("support", "support-agent")
        );
        assert!(!agent.cancel_on_disconnect);
        assert_eq!(agent.timeout, Duration::from_secs(9));
        assert_eq!(agent.auth_token.as_ref().unwrap().expose(), "tok-123");
        let team = c.entries_of(EntryKind::Team).next().unwrap();
        assert_eq!(team.remote_id, "research");
        assert_eq!(team.config_ttl, Duration::from_secs(3));
        assert_eq!(
            c.host_group(&team.host_group).unwrap().name,
            "http://a,http://b"
        );
        assert_eq!(c.entries_of(EntryKind::Workflow).count(), 0);
    }

    #[test]
    fn ids_are_unique_per_kind_only() {
        let c = parse(
            "[[agents]]\nid = \"x\"\nbase_url = \"http://h\"\n[[teams]]\nid = \"x\"\nbase_url = \"http://h\"\n[[workflows]]\nid = \"x\"\nbase_url = \"http://h\"\n",
        )
        .unwrap();
        assert_eq!(c.entries.len(), 3);
        // Entries of every kind naming the same URL share one group.
        assert_eq!(c.host_groups.len(), 1);
        let e = err(
            "[[workflows]]\nid = \"x\"\nbase_url = \"http://h\"\n[[teams]]\nid = \"x\"\nbase_url = \"http://h\"\n[[teams]]\nid = \"x\"\nbase_url = \"http://g\"\n",
        );
        assert!(e.starts_with("gw.toml:8:"), "{e}");
        assert!(
            e.contains("`teams.id`") && e.contains("duplicate id `x` (first defined on line 5)"),
            "{e}"
        );
    }

    #[test]
    fn dbs_pin_a_database_to_a_host() {
        let c = parse(
            "[[workflows]]\nid = \"w\"\nbase_url = \"http://a\"\nauth_token = \"t\"\n\
             [[dbs]]\nid = \"shared\"\nbase_url = \"http://a\"\ntimeout = 5\n",
        )
        .unwrap();
        let db = c.entries_of(EntryKind::Database).next().unwrap();
        assert_eq!(db.id, "shared");
        assert_eq!(db.remote_id, "shared");
        assert_eq!(db.timeout, Duration::from_secs(5));
        // It shares the workflow's host group.
        assert_eq!(c.host_groups.len(), 1);
        assert_eq!(db.host_group, c.entries[0].host_group);
        let db = "[[dbs]]\nid = \"d\"\nbase_url = \"http://h\"\n";
        for (extra, key) in [
            ("agent_id = \"x\"\n", "`dbs.agent_id`"),
            ("heartbeat = 5\n", "`dbs.heartbeat`"),
            (
                "cancel_on_disconnect = false\n",
                "`dbs.cancel_on_disconnect`",
            ),
        ] {
            let e = err(&format!("{db}{extra}"));
            assert!(e.starts_with("gw.toml:4:") && e.contains(key), "{e}");
        }
        let e = err(&format!("{db}{db}"));
        assert!(e.contains("`dbs.id`: duplicate id `d`"), "{e}");
    }

    #[test]
    fn agent_and_team_mistakes_name_their_table() {
        let e = err("[[agents]]\nid = \"a\"\nbase_url = \"http://h\"\nworkflow_id = \"w\"\n");
        assert!(e.starts_with("gw.toml:4:"), "{e}");
        assert!(
            e.contains("`agents.workflow_id`") && e.contains("`agent_id`"),
            "{e}"
        );
        let e = err("[[teams]]\nid = \"t\"\nbase_url = \"http://h\"\ntimeout = 0\n");
        assert!(
            e.starts_with("gw.toml:4:") && e.contains("`teams.timeout`"),
            "{e}"
        );
        let e = err("[[teams]]\nid = \"t\"\nbase_url = \"http://h\"\ntimeot = 1\n");
        assert!(
            e.starts_with("gw.toml:4:") && e.contains("`teams.timeot`"),
            "{e}"
        );
        let e = err("[[agents]]\nid = \"a b\"\nbase_url = \"http://h\"\n");
        assert!(
            e.starts_with("gw.toml:2:") && e.contains("`agents.id`"),
            "{e}"
        );
        let e = err("[[teams]]\nid = \"t\"\nhost_group = \"nope\"\n");
        assert!(
            e.starts_with("gw.toml:3:") && e.contains("`teams.host_group`"),
            "{e}"
        );
    }

    #[test]
    fn bad_url() {
        let e = err("[[workflows]]\nid = \"a\"\nbase_url = \"ftp://h\"\n");
        assert!(
            e.starts_with("gw.toml:3:") && e.contains("workflows.base_url"),
            "{e}"
        );
        let e = err("[[workflows]]\nid = \"a\"\nbase_url = \"not a url\"\n");
        assert!(e.contains("not a valid URL"), "{e}");
    }

    #[test]
    fn id_not_url_safe() {
        let e = err("[[workflows]]\nid = \"a/b\"\nbase_url = \"http://h\"\n");
        assert!(
            e.starts_with("gw.toml:2:") && e.contains("not URL-safe"),
            "{e}"
        );
    }

    #[test]
    fn zero_durations() {
        let e = err("[[workflows]]\nid = \"a\"\nbase_url = \"http://h\"\ntimeout = 0\n");
        assert!(
            e.starts_with("gw.toml:4:") && e.contains("workflows.timeout"),
            "{e}"
        );
        let e = err("[server]\nconnect_timeout = 0\n");
        assert!(
            e.starts_with("gw.toml:2:") && e.contains("server.connect_timeout"),
            "{e}"
        );
        let e = err("[server]\nconfig_ttl = -1\n");
        assert!(e.contains("server.config_ttl"), "{e}");
    }

    #[test]
    fn missing_env_var() {
        let e = err(
            "[[workflows]]\nid = \"a\"\nbase_url = \"http://h\"\nauth_token = \"${NOPE_NOT_SET}\"\n",
        );
        assert!(
            e.starts_with("gw.toml:4:") && e.contains("NOPE_NOT_SET"),
            "{e}"
        );
    }

    #[test]
    fn missing_required_key_and_bad_listen() {
        let e = err("[[workflows]]\nid = \"a\"\n");
        assert!(
            e.starts_with("gw.toml:2:") && e.contains("`workflows.base_url`"),
            "{e}"
        );
        let e = err("[server]\nlisten = \"localhost\"\n");
        assert!(
            e.starts_with("gw.toml:2:") && e.contains("server.listen"),
            "{e}"
        );
    }

    #[test]
    fn server_keys_can_come_from_the_environment() {
        let env = |name: &str| match name {
            "AGENTOS_GATEWAY_LISTEN" => Some("127.0.0.1:9000".to_owned()),
            "AGENTOS_GATEWAY_TIMEOUT" => Some("42".to_owned()),
            "AGENTOS_GATEWAY_CORS_ALLOWED_ORIGINS" => {
                Some("https://a.example, https://b.example".to_owned())
            }
            "AGENTOS_GATEWAY_DRAIN_TIMEOUT" => Some("600".to_owned()),
            _ => None,
        };
        let src = "[server]\nlisten = \"0.0.0.0:1\"\n[[workflows]]\nid = \"a\"\nbase_url = \"http://h\"\n";
        let c = Config::parse(Path::new("gw.toml"), src, &env).unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(c.entries[0].timeout, Duration::from_secs(42));
        assert_eq!(c.server.drain_timeout, Duration::from_secs(600));
        assert_eq!(
            c.server.cors_origins.unwrap(),
            vec![
                "https://a.example".to_owned(),
                "https://b.example".to_owned()
            ]
        );
        let bad = |name: &str| (name == "AGENTOS_GATEWAY_CONNECT_TIMEOUT").then(|| "0".to_owned());
        let e = Config::parse(Path::new("gw.toml"), "", &bad)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("environment variable AGENTOS_GATEWAY_CONNECT_TIMEOUT"),
            "{e}"
        );
        assert!(e.contains("server.connect_timeout"), "{e}");
    }

    #[test]
    fn wrong_type() {
        let e = err("[server]\ntimeout = \"soon\"\n");
        assert!(
            e.starts_with("gw.toml:2:") && e.contains("`server.timeout`"),
            "{e}"
        );
    }

    #[test]
    fn the_tracing_table_is_off_by_default_and_validated() {
        let wf = "[[workflows]]\nid = \"w\"\nbase_url = \"http://h\"\n";
        let c = parse(wf).unwrap();
        assert_eq!(c.tracing, TracingConfig::default());
        assert!(c.tracing.otlp_endpoint.is_none());
        let c = parse(&format!(
            "[tracing]\notlp_endpoint = \"http://collector:4318\"\nservice_name = \"edge\"\nsample_ratio = 0.5\n{wf}"
        ))
        .unwrap();
        assert_eq!(
            c.tracing.otlp_endpoint.as_ref().map(Url::as_str),
            Some("http://collector:4318/")
        );
        assert_eq!(
            (c.tracing.service_name.as_str(), c.tracing.sample_ratio),
            ("edge", 0.5)
        );
        assert!(
            parse(&format!("[tracing]\notlp_endpoint = \"\"\n{wf}"))
                .unwrap()
                .tracing
                .otlp_endpoint
                .is_none()
        );
        let e = err(&format!(
            "[tracing]\notlp_endpoint = \"collector:4318\"\n{wf}"
        ));
        assert!(
            e.starts_with("gw.toml:2:17: `tracing.otlp_endpoint`"),
            "{e}"
        );
        let e = err(&format!("[tracing]\nsample_ratio = 1.5\n{wf}"));
        assert!(
            e.starts_with("gw.toml:2:16: `tracing.sample_ratio`: must be a number from 0 to 1"),
            "{e}"
        );
        let e = err(&format!("[tracing]\nsample_ratio = \"all\"\n{wf}"));
        assert!(e.contains("expected a number from 0 to 1"), "{e}");
        let e = err(&format!("[tracing]\nservice_name = \" \"\n{wf}"));
        assert!(
            e.contains("`tracing.service_name`: must not be empty"),
            "{e}"
        );
        let e = err(&format!("[tracing]\notlp_endpont = \"http://c\"\n{wf}"));
        assert!(e.contains("`tracing.otlp_endpont`: unknown field"), "{e}");
    }
}
