//! The gateway's TOML configuration: schema, defaults and start-up validation.
//!
//! The file is parsed into a "raw" serde layer that keeps the source position of
//! every value ([`toml::Spanned`]), then validated into the plain [`Config`] the
//! rest of the program uses. Every failure becomes a [`ConfigError`] that names
//! the file, the line and the key, so `agentos-gateway check` can point an
//! operator at the exact mistake.
//!
//! The per-workflow knobs mirror agno's `RemoteWorkflow(base_url, workflow_id,
//! timeout=300, config_ttl=300)`, with the same defaults.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use url::Url;

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

/// A validated gateway configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub workflows: Vec<WorkflowConfig>,
}

/// The `[server]` table, with defaults applied.
#[derive(Debug, Clone)]
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
}

/// One `[[workflows]]` entry: a workflow on a remote AgentOS host.
#[derive(Debug, Clone)]
pub struct WorkflowConfig {
    /// The id the gateway exposes.
    pub id: String,
    /// The host's base URL, without a trailing slash.
    pub base_url: Url,
    /// The workflow's id on that host.
    pub workflow_id: String,
    /// Longest wait for the response head or the next body chunk (reset on
    /// every read); never a total deadline.
    pub timeout: Duration,
    pub config_ttl: Duration,
    /// Sent as `Authorization: Bearer` when the caller sends no Authorization.
    pub auth_token: Option<Secret>,
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
}

// ---------------------------------------------------------------------------
// Raw serde layer: what the TOML file literally says, with source positions.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    workflows: Vec<Spanned<RawWorkflow>>,
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
    timeout: Option<Spanned<f64>>,
    config_ttl: Option<Spanned<f64>>,
    drain_grace: Option<Spanned<f64>>,
    drain_timeout: Option<Spanned<f64>>,
    #[serde(default)]
    cors: RawCors,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCors {
    allowed_origins: Option<Spanned<Vec<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkflow {
    id: Spanned<String>,
    base_url: Spanned<String>,
    workflow_id: Option<Spanned<String>>,
    timeout: Option<Spanned<f64>>,
    config_ttl: Option<Spanned<f64>>,
    auth_token: Option<Spanned<String>>,
}

// ---------------------------------------------------------------------------
// Loading and validation.

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let source = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(path, &source, &|name| std::env::var(name).ok())
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
        let message = e.message().trim();
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
    };
    let default_timeout = duration(&s.timeout, "timeout", DEFAULT_TIMEOUT_SECS)?;
    let default_ttl = duration(&s.config_ttl, "config_ttl", DEFAULT_CONFIG_TTL_SECS)?;

    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut workflows = Vec::with_capacity(raw.workflows.len());
    for entry in &raw.workflows {
        let w = entry.get_ref();
        let id = w.id.get_ref();
        if !is_url_safe_id(id) {
            return Err(locate.error(
                w.id.span(),
                "workflows.id",
                format!("`{id}` is not URL-safe: use letters, digits, `-`, `_`, `.` or `~`"),
            ));
        }
        if let Some(first) = seen.insert(id.clone(), w.id.span().start) {
            let first_line = locate.source[..first].matches('\n').count() + 1;
            return Err(locate.error(
                w.id.span(),
                "workflows.id",
                format!("duplicate id `{id}` (first defined on line {first_line})"),
            ));
        }
        let base_url = parse_base_url(w.base_url.get_ref())
            .map_err(|m| locate.error(w.base_url.span(), "workflows.base_url", m))?;
        let workflow_id = match &w.workflow_id {
            None => id.clone(),
            Some(v) if !is_url_safe_id(v.get_ref()) => {
                return Err(locate.error(
                    v.span(),
                    "workflows.workflow_id",
                    format!("`{}` is not URL-safe", v.get_ref()),
                ));
            }
            Some(v) => v.get_ref().clone(),
        };
        let auth_token = match &w.auth_token {
            None => None,
            Some(v) => {
                let token = expand_env(v.get_ref(), env)
                    .map_err(|m| locate.error(v.span(), "workflows.auth_token", m))?;
                if token.is_empty() || http::HeaderValue::from_str(&token).is_err() {
                    return Err(locate.error(
                        v.span(),
                        "workflows.auth_token",
                        "must be a non-empty token of visible ASCII characters",
                    ));
                }
                Some(Secret(token))
            }
        };
        workflows.push(WorkflowConfig {
            id: id.clone(),
            base_url,
            workflow_id,
            timeout: match &w.timeout {
                None => default_timeout,
                v => seconds(
                    from_file(v),
                    DEFAULT_TIMEOUT_SECS,
                    "workflows.timeout",
                    locate,
                )?,
            },
            config_ttl: match &w.config_ttl {
                None => default_ttl,
                v => seconds(
                    from_file(v),
                    DEFAULT_CONFIG_TTL_SECS,
                    "workflows.config_ttl",
                    locate,
                )?,
            },
            auth_token,
        });
    }
    Ok(Config { server, workflows })
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

impl WorkflowConfig {
    /// The host's base URL as a string without a trailing slash.
    pub fn base(&self) -> &str {
        self.base_url.as_str().trim_end_matches('/')
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
        let w = &c.workflows[0];
        assert_eq!(w.workflow_id, "echo");
        assert_eq!(w.timeout, Duration::from_secs(300));
        assert_eq!(w.config_ttl, Duration::from_secs(300));
        assert_eq!(w.base(), "http://h:8000");
        assert_eq!(c.server.listen.to_string(), "0.0.0.0:7777");
        assert_eq!(c.server.connect_timeout, Duration::from_secs(5));
    }

    #[test]
    fn server_defaults_apply_to_workflows_and_env_tokens_expand() {
        let c = parse(
            "[server]\ntimeout = 12.5\nconfig_ttl = 7\n\n[[workflows]]\nid = \"a\"\nbase_url = \"http://h\"\nauth_token = \"${HOST_TOKEN}\"\n[[workflows]]\nid = \"b\"\nbase_url = \"http://h\"\ntimeout = 1\n",
        )
        .unwrap();
        assert_eq!(c.workflows[0].timeout, Duration::from_millis(12500));
        assert_eq!(c.workflows[0].config_ttl, Duration::from_secs(7));
        assert_eq!(
            c.workflows[0].auth_token.as_ref().unwrap().expose(),
            "tok-123"
        );
        assert_eq!(c.workflows[1].timeout, Duration::from_secs(1));
        assert!(!format!("{:?}", c.workflows[0]).contains("tok-123"));
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
            e.starts_with("gw.toml:1:") && e.contains("`workflows.base_url`"),
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
        assert_eq!(c.workflows[0].timeout, Duration::from_secs(42));
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
}
