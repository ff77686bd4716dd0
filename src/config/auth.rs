//! The `[auth]` and `[limits]` tables: edge authentication with AgentOS's
//! `JWTMiddleware` parameters (same names, same defaults), AgentOS's
//! `OS_SECURITY_KEY` as `security_key`, and per-caller rate limits.
//!
//! Validated at start-up like the rest of the file: a bad key, algorithm or
//! rate names the file, line and key, and `check` exits 64.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, Locator, Secret, expand_env};
use crate::auth::jwt::{KeySet, TokenSource};

/// AgentOS's default `excluded_route_paths`, plus the gateway's own
/// readiness probe (`/ready` is not an AgentOS route; Kubernetes probes it).
pub const DEFAULT_EXCLUDED_ROUTE_PATHS: &[&str] = &[
    "/",
    "/health",
    "/info",
    "/docs",
    "/redoc",
    "/openapi.json",
    "/docs/oauth2-redirect",
    "/ready",
];

/// AgentOS's admin scope (`AgentOSScope.ADMIN`).
pub const DEFAULT_ADMIN_SCOPE: &str = "agent_os:admin";

/// Validated `[auth]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuthConfig {
    pub jwt: Option<JwtConfig>,
    /// AgentOS's `OS_SECURITY_KEY`: one shared bearer key. Ignored when
    /// `[auth.jwt]` is set, as AgentOS ignores it in JWT mode.
    pub security_key: Option<Secret>,
}

/// Validated `[auth.jwt]`: `JWTMiddleware`'s parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct JwtConfig {
    pub keys: Arc<KeySet>,
    /// An IdP's JWKS, fetched and refreshed (beyond AgentOS).
    pub jwks_url: Option<crate::auth::jwks::JwksSource>,
    pub algorithm: jsonwebtoken::Algorithm,
    pub token_source: TokenSource,
    pub token_header_key: http::HeaderName,
    pub cookie_name: String,
    pub scopes_claim: String,
    pub user_id_claim: String,
    pub session_id_claim: String,
    pub audience_claim: String,
    /// Expected audiences; `None` means the gateway's `os_id`.
    pub audience: Option<Vec<String>>,
    pub verify_audience: bool,
    pub issuer: Option<String>,
    pub leeway: u64,
    /// Scope RBAC with AgentOS's route → scope map.
    pub authorization: bool,
    pub admin_scope: String,
    pub excluded_route_paths: Vec<String>,
    /// `"METHOD /path"` → scopes, added to (and overriding) AgentOS's map.
    pub scope_mappings: Vec<(String, Vec<String>)>,
}

/// A token bucket: `rate` requests per second on average, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: u32,
}

/// Validated `[limits]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LimitsConfig {
    /// Run calls (`POST .../runs`, `.../continue`) per caller.
    pub run: Option<Rate>,
    /// Every other call per caller.
    pub other: Option<Rate>,
    /// Run limits for one resource (`workflows/<id>`, `agents/<id>`,
    /// `teams/<id>`), instead of `run`.
    pub resources: Vec<(String, Rate)>,
    /// Peers whose `X-Forwarded-For` names the caller.
    pub trusted_proxies: Vec<Cidr>,
    /// Most callers tracked at once per bucket; idle ones are pruned.
    pub max_tracked_callers: usize,
}

impl LimitsConfig {
    pub fn enabled(&self) -> bool {
        self.run.is_some() || self.other.is_some() || !self.resources.is_empty()
    }
}

/// An address block (`10.0.0.0/8`, `::1/128`; a bare address is one host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(raw: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match raw.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (raw, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("`{raw}` is not an address or CIDR block"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{raw}`: prefix must be 0 to {max}"))?,
        };
        Ok(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuth {
    jwt: Option<Spanned<RawJwt>>,
    security_key: Option<Spanned<String>>,
}

#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJwt {
    verification_keys: Option<Spanned<Vec<String>>>,
    jwks_file: Option<Spanned<String>>,
    jwks_url: Option<Spanned<String>>,
    jwks_refresh: Option<Spanned<f64>>,
    jwks_min_refetch: Option<Spanned<f64>>,
    algorithm: Option<Spanned<String>>,
    token_source: Option<Spanned<String>>,
    token_header_key: Option<Spanned<String>>,
    cookie_name: Option<Spanned<String>>,
    scopes_claim: Option<String>,
    user_id_claim: Option<String>,
    session_id_claim: Option<String>,
    audience_claim: Option<String>,
    audience: Option<Spanned<OneOrMany>>,
    verify_audience: Option<bool>,
    issuer: Option<Spanned<String>>,
    leeway: Option<Spanned<i64>>,
    authorization: Option<bool>,
    admin_scope: Option<Spanned<String>>,
    excluded_route_paths: Option<Vec<String>>,
    scope_mappings: Option<Spanned<BTreeMap<String, Vec<String>>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    run_rate: Option<Spanned<f64>>,
    run_burst: Option<Spanned<u64>>,
    rate: Option<Spanned<f64>>,
    burst: Option<Spanned<u64>>,
    trusted_proxies: Option<Spanned<Vec<String>>>,
    max_tracked_callers: Option<Spanned<u64>>,
    #[serde(default)]
    workflows: BTreeMap<String, Spanned<RawRunRate>>,
    #[serde(default)]
    agents: BTreeMap<String, Spanned<RawRunRate>>,
    #[serde(default)]
    teams: BTreeMap<String, Spanned<RawRunRate>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRunRate {
    run_rate: Spanned<f64>,
    run_burst: Option<Spanned<u64>>,
}

fn secret(
    v: &Spanned<String>,
    key: &str,
    env: &dyn Fn(&str) -> Option<String>,
    locate: &Locator,
) -> Result<String, ConfigError> {
    let value = expand_env(v.get_ref(), env).map_err(|m| locate.error(v.span(), key, m))?;
    if value.trim().is_empty() {
        return Err(locate.error(v.span(), key, "must not be empty"));
    }
    Ok(value)
}

pub(super) fn auth(
    raw: &RawAuth,
    env: &dyn Fn(&str) -> Option<String>,
    locate: &Locator,
) -> Result<AuthConfig, ConfigError> {
    let security_key = match &raw.security_key {
        None => None,
        Some(v) => {
            let key = secret(v, "auth.security_key", env, locate)?;
            if http::HeaderValue::from_str(&key).is_err() {
                return Err(locate.error(
                    v.span(),
                    "auth.security_key",
                    "must be visible ASCII characters",
                ));
            }
            Some(Secret::new(key))
        }
    };
    let jwt = match &raw.jwt {
        None => None,
        Some(j) => Some(jwt(j, env, locate)?),
    };
    if jwt.is_some() && security_key.is_some() {
        tracing::warn!(
            "both [auth.jwt] and auth.security_key are set; as in AgentOS, only JWT is used"
        );
    }
    Ok(AuthConfig { jwt, security_key })
}

fn jwt(
    entry: &Spanned<RawJwt>,
    env: &dyn Fn(&str) -> Option<String>,
    locate: &Locator,
) -> Result<JwtConfig, ConfigError> {
    let j = entry.get_ref();
    let algorithm = match &j.algorithm {
        None => jsonwebtoken::Algorithm::RS256,
        Some(v) => crate::auth::jwt::algorithm(v.get_ref())
            .map_err(|m| locate.error(v.span(), "auth.jwt.algorithm", m))?,
    };
    let mut keys = KeySet::default();
    if let Some(list) = &j.verification_keys {
        for raw in list.get_ref() {
            let key = expand_env(raw, env)
                .map_err(|m| locate.error(list.span(), "auth.jwt.verification_keys", m))?;
            keys.add_static(algorithm, &key)
                .map_err(|m| locate.error(list.span(), "auth.jwt.verification_keys", m))?;
        }
    }
    if let Some(v) = &j.jwks_file {
        let path = expand_env(v.get_ref(), env)
            .map_err(|m| locate.error(v.span(), "auth.jwt.jwks_file", m))?;
        let text = std::fs::read_to_string(&path).map_err(|e| {
            locate.error(
                v.span(),
                "auth.jwt.jwks_file",
                format!("cannot read `{path}`: {e}"),
            )
        })?;
        keys.add_jwks(&text)
            .map_err(|m| locate.error(v.span(), "auth.jwt.jwks_file", format!("`{path}`: {m}")))?;
    }
    let jwks_url = match &j.jwks_url {
        None => None,
        Some(v) => {
            let raw = expand_env(v.get_ref(), env)
                .map_err(|m| locate.error(v.span(), "auth.jwt.jwks_url", m))?;
            let url = url::Url::parse(&raw)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
                .ok_or_else(|| {
                    locate.error(
                        v.span(),
                        "auth.jwt.jwks_url",
                        format!("`{raw}` is not an http(s) URL"),
                    )
                })?;
            let secs = |v: &Option<Spanned<f64>>, key: &str, default: f64| match v {
                None => Ok(std::time::Duration::from_secs_f64(default)),
                v => super::seconds(super::from_file(v), default, key, locate),
            };
            Some(crate::auth::jwks::JwksSource {
                url,
                refresh: secs(&j.jwks_refresh, "auth.jwt.jwks_refresh", 300.0)?,
                min_refetch: secs(&j.jwks_min_refetch, "auth.jwt.jwks_min_refetch", 30.0)?,
            })
        }
    };
    if keys.is_empty() && jwks_url.is_none() {
        return Err(locate.error(
            entry.span(),
            "auth.jwt.verification_keys",
            "at least one verification key, a jwks_file or a jwks_url is required",
        ));
    }
    let token_source = match &j.token_source {
        None => TokenSource::Header,
        Some(v) => match v.get_ref().as_str() {
            "header" => TokenSource::Header,
            "cookie" => TokenSource::Cookie,
            "both" => TokenSource::Both,
            other => {
                return Err(locate.error(
                    v.span(),
                    "auth.jwt.token_source",
                    format!("`{other}` is not one of \"header\", \"cookie\", \"both\""),
                ));
            }
        },
    };
    let token_header_key = match &j.token_header_key {
        None => http::header::AUTHORIZATION,
        Some(v) => http::HeaderName::from_bytes(v.get_ref().as_bytes()).map_err(|_| {
            locate.error(
                v.span(),
                "auth.jwt.token_header_key",
                "is not a header name",
            )
        })?,
    };
    let nonempty = |v: &Option<Spanned<String>>, key: &str, default: &str| match v {
        None => Ok(default.to_owned()),
        Some(v) if v.get_ref().trim().is_empty() => {
            Err(locate.error(v.span(), key, "must not be empty"))
        }
        Some(v) => Ok(v.get_ref().clone()),
    };
    let audience = match &j.audience {
        None => None,
        Some(v) => {
            let list = match v.get_ref().clone() {
                OneOrMany::One(a) => vec![a],
                OneOrMany::Many(list) => list,
            };
            let mut out = Vec::with_capacity(list.len());
            for a in list {
                out.push(
                    expand_env(&a, env)
                        .map_err(|m| locate.error(v.span(), "auth.jwt.audience", m))?,
                );
            }
            // An empty audience is falsy in AgentOS: the os_id applies.
            (!out.is_empty()).then_some(out)
        }
    };
    let issuer = match &j.issuer {
        None => None,
        Some(v) => Some(
            expand_env(v.get_ref(), env)
                .map_err(|m| locate.error(v.span(), "auth.jwt.issuer", m))?,
        )
        .filter(|i| !i.is_empty()),
    };
    let leeway = match &j.leeway {
        None => 10,
        Some(v) if *v.get_ref() < 0 || *v.get_ref() > 86_400 => {
            return Err(locate.error(v.span(), "auth.jwt.leeway", "must be 0 to 86400 seconds"));
        }
        Some(v) => *v.get_ref() as u64,
    };
    let mut scope_mappings = Vec::new();
    if let Some(m) = &j.scope_mappings {
        for (route, scopes) in m.get_ref() {
            let ok = route
                .split_once(' ')
                .is_some_and(|(method, path)| !method.is_empty() && path.starts_with('/'));
            if !ok {
                return Err(locate.error(
                    m.span(),
                    "auth.jwt.scope_mappings",
                    format!("`{route}` is not \"METHOD /path/pattern\""),
                ));
            }
            scope_mappings.push((route.clone(), scopes.clone()));
        }
    }
    Ok(JwtConfig {
        keys: Arc::new(keys),
        jwks_url,
        algorithm,
        token_source,
        token_header_key,
        cookie_name: nonempty(&j.cookie_name, "auth.jwt.cookie_name", "access_token")?,
        scopes_claim: j.scopes_claim.clone().unwrap_or_else(|| "scopes".into()),
        user_id_claim: j.user_id_claim.clone().unwrap_or_else(|| "sub".into()),
        session_id_claim: j
            .session_id_claim
            .clone()
            .unwrap_or_else(|| "session_id".into()),
        audience_claim: j.audience_claim.clone().unwrap_or_else(|| "aud".into()),
        audience,
        verify_audience: j.verify_audience.unwrap_or(false),
        issuer,
        leeway,
        authorization: j.authorization.unwrap_or(false),
        admin_scope: nonempty(&j.admin_scope, "auth.jwt.admin_scope", DEFAULT_ADMIN_SCOPE)?,
        excluded_route_paths: j.excluded_route_paths.clone().unwrap_or_else(|| {
            DEFAULT_EXCLUDED_ROUTE_PATHS
                .iter()
                .map(|p| p.to_string())
                .collect()
        }),
        scope_mappings,
    })
}

fn rate(
    rate: &Spanned<f64>,
    burst: &Option<Spanned<u64>>,
    key: &str,
    locate: &Locator,
) -> Result<Rate, ConfigError> {
    let per_second = *rate.get_ref();
    if !per_second.is_finite() || per_second <= 0.0 || per_second > 1e9 {
        return Err(locate.error(
            rate.span(),
            key,
            format!("must be a positive number of requests per second, got {per_second}"),
        ));
    }
    let burst = match burst {
        None => per_second.ceil().max(1.0) as u32,
        Some(b) if *b.get_ref() == 0 || *b.get_ref() > u64::from(u32::MAX) => {
            return Err(locate.error(b.span(), key, "burst must be above 0"));
        }
        Some(b) => *b.get_ref() as u32,
    };
    Ok(Rate { per_second, burst })
}

pub(super) fn limits(
    raw: &RawLimits,
    workflow_ids: &[String],
    locate: &Locator,
) -> Result<LimitsConfig, ConfigError> {
    let run = match &raw.run_rate {
        None => None,
        Some(r) => Some(rate(r, &raw.run_burst, "limits.run_rate", locate)?),
    };
    let other = match &raw.rate {
        None => None,
        Some(r) => Some(rate(r, &raw.burst, "limits.rate", locate)?),
    };
    let mut resources = Vec::new();
    for (family, map) in [
        ("workflows", &raw.workflows),
        ("agents", &raw.agents),
        ("teams", &raw.teams),
    ] {
        for (id, entry) in map {
            let key = format!("limits.{family}.{id}");
            if family == "workflows" && !workflow_ids.iter().any(|w| w == id) {
                return Err(locate.error(
                    entry.span(),
                    &key,
                    format!("no [[workflows]] entry has id `{id}`"),
                ));
            }
            let r = entry.get_ref();
            resources.push((
                format!("{family}/{id}"),
                rate(&r.run_rate, &r.run_burst, &key, locate)?,
            ));
        }
    }
    let mut trusted_proxies = Vec::new();
    if let Some(list) = &raw.trusted_proxies {
        for p in list.get_ref() {
            trusted_proxies.push(
                Cidr::parse(p)
                    .map_err(|m| locate.error(list.span(), "limits.trusted_proxies", m))?,
            );
        }
    }
    let max_tracked_callers = match &raw.max_tracked_callers {
        None => 100_000,
        Some(v) if *v.get_ref() == 0 => {
            return Err(locate.error(v.span(), "limits.max_tracked_callers", "must be above 0"));
        }
        Some(v) => usize::try_from(*v.get_ref()).unwrap_or(usize::MAX),
    };
    Ok(LimitsConfig {
        run,
        other,
        resources,
        trusted_proxies,
        max_tracked_callers,
    })
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;
    use std::path::Path;

    fn parse(src: &str) -> Result<Config, ConfigError> {
        let env = |name: &str| (name == "JWT_SECRET").then(|| "from-env-secret".to_owned());
        Config::parse(Path::new("gw.toml"), src, &env)
    }

    fn err(src: &str) -> String {
        match parse(src) {
            Ok(_) => panic!("expected an error for:\n{src}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn jwt_defaults_are_agentos_middleware_defaults() {
        let c =
            parse("[auth.jwt]\nalgorithm = \"HS256\"\nverification_keys = [\"${JWT_SECRET}\"]\n")
                .unwrap();
        let j = c.auth.jwt.unwrap();
        assert_eq!(j.token_source, TokenSource::Header);
        assert_eq!(j.cookie_name, "access_token");
        assert_eq!(
            (j.scopes_claim.as_str(), j.user_id_claim.as_str()),
            ("scopes", "sub")
        );
        assert_eq!(j.session_id_claim, "session_id");
        assert!(!j.verify_audience && !j.authorization);
        assert_eq!((j.leeway, j.admin_scope.as_str()), (10, "agent_os:admin"));
        assert!(j.excluded_route_paths.iter().any(|p| p == "/health"));
        assert!(!format!("{j:?}").contains("from-env-secret"));
        assert!(!c.limits.enabled());
    }

    #[test]
    fn auth_and_limit_mistakes_name_file_line_and_key() {
        let e = err("[auth.jwt]\nalgorithm = \"RS257\"\nverification_keys = [\"x\"]\n");
        assert!(
            e.starts_with("gw.toml:2:") && e.contains("auth.jwt.algorithm"),
            "{e}"
        );
        let e = err("[auth.jwt]\nverification_keys = [\"not a pem\"]\n");
        assert!(e.starts_with("gw.toml:2:") && e.contains("PEM"), "{e}");
        let e = err(
            "[auth.jwt]\nalgorithm = \"HS256\"\nverification_keys = [\"-----BEGIN PUBLIC KEY-----\"]\n",
        );
        assert!(e.contains("HMAC"), "{e}");
        let e = err("[auth.jwt]\nalgorithm = \"HS256\"\n");
        assert!(e.contains("at least one verification key"), "{e}");
        let e = err("[auth.jwt]\nalgorithm = \"HS256\"\nverification_keys = [\"${NOPE}\"]\n");
        assert!(e.starts_with("gw.toml:3:") && e.contains("NOPE"), "{e}");
        let e = err(
            "[auth.jwt]\nalgorithm = \"HS256\"\nverification_keys = [\"k\"]\nvalidate = false\n",
        );
        assert!(e.starts_with("gw.toml:4:") && e.contains("validate"), "{e}");
        let e = err("[limits]\nrun_rate = 0\n");
        assert!(
            e.starts_with("gw.toml:2:") && e.contains("limits.run_rate"),
            "{e}"
        );
        let e = err("[limits.workflows.nope]\nrun_rate = 1\n");
        assert!(e.contains("limits.workflows.nope"), "{e}");
        let e = err("[limits]\ntrusted_proxies = [\"10.0.0.0/40\"]\n");
        assert!(e.contains("limits.trusted_proxies"), "{e}");
        let e = err("[auth]\nsecurity_key = \"\"\n");
        assert!(e.contains("auth.security_key"), "{e}");
    }

    #[test]
    fn cidr_blocks() {
        let net = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.0.9".parse().unwrap()));
        let host = Cidr::parse("::1").unwrap();
        assert!(host.contains("::1".parse().unwrap()));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("nope").is_err());
    }
}
