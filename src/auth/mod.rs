//! Edge authentication, authorization and rate limits: one tower layer,
//! [`AuthLayer`], inside the access layer and around the routes, that
//! answers AgentOS's 401/403 (and the gateway's 429) before anything reaches
//! a host.
//!
//! It behaves as agno's `AuthMiddleware` (agno 3.1.10,
//! `agno/os/middleware/jwt.py`): the same token sources, the same checks in
//! the same order, the same `detail` strings; scope RBAC from
//! `agno/os/scopes.py` ([`scopes`]); `security_key` as `OS_SECURITY_KEY`.
//! What the host then sees (the verified user in the run form, the caller's
//! token or the workflow's own) is decided here too.
//!
//! - [`jwt`]: token verification with PyJWT's rules and messages.
//! - [`scopes`]: AgentOS's route → scope map and scope matching.
//! - [`jwks`]: the keys in force, with `jwks_url` fetched and refreshed.
//! - [`limits`]: per-caller token buckets.
//! - [`identity`]: the verified user and session appended to a run's form.

pub mod identity;
pub mod jwks;
pub mod jwt;
pub mod limits;
pub mod scopes;

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use futures::future::{BoxFuture, Either};
use http::{HeaderValue, Method, StatusCode, header};
use serde_json::{Map, Value};
use tower::{Layer, Service};

use crate::config::{Config, JwtConfig, Secret};
use crate::server::connection::PeerAddr;
use crate::state::SharedState;
use identity::Identity;
use jwt::{Rules, TokenSource};
use limits::Limits;
use scopes::{ScopeMap, Verdict, Visible};

/// agno's service-account token prefix; the gateway has no service accounts.
const SERVICE_ACCOUNT_PREFIX: &str = "agno_pat_";
/// Identities a token may not claim (`is_reserved_principal`).
const RESERVED_PREFIXES: &[&str] = &["sa:", "__oauth__:"];
const SCHEDULER_USER_ID: &str = "__scheduler__";
/// Verified tokens remembered, and for how long at most (a key removed
/// from the JWKS stops verifying its tokens within this).
const VERIFIED_CACHE_CAPACITY: u64 = 10_000;
const VERIFIED_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(60);
/// Largest listing the gateway filters by scope.
const MAX_LISTING_BYTES: usize = 16 * 1024 * 1024;

/// Everything the layer decides with, built once from the config.
pub struct Gate {
    jwt: Option<JwtGate>,
    /// Paths no credential is asked for (`excluded_route_paths`).
    excluded: Vec<Excluded>,
    security_key: Option<Secret>,
    limits: Option<Limits>,
}

struct JwtGate {
    config: JwtConfig,
    /// Tokens verified recently, by token: a repeat skips the signature
    /// check (an RSA verification costs tens of microseconds); `exp` is
    /// checked again on every use.
    verified: moka::sync::Cache<Arc<str>, Arc<Map<String, Value>>>,
    keys: Arc<jwks::Keys>,
    rules: Rules,
    audience: Vec<String>,
    scope_map: ScopeMap,
}

impl Gate {
    pub fn new(config: &Config) -> Gate {
        let jwt = config.auth.jwt.clone().map(|c| JwtGate {
            rules: Rules {
                algorithm: c.algorithm,
                leeway: c.leeway,
                audience_claim: c.audience_claim.clone(),
                issuer: c.issuer.clone(),
            },
            audience: c
                .audience
                .clone()
                .unwrap_or_else(|| vec![config.server.os_id.clone()]),
            scope_map: ScopeMap::new(&c.scope_mappings),
            keys: jwks::Keys::new(c.keys.clone(), c.jwks_url.clone()),
            verified: moka::sync::Cache::builder()
                .max_capacity(VERIFIED_CACHE_CAPACITY)
                .time_to_live(VERIFIED_CACHE_TTL)
                .build(),
            config: c,
        });
        let excluded: Vec<String> = jwt.as_ref().map_or_else(
            || {
                crate::config::DEFAULT_EXCLUDED_ROUTE_PATHS
                    .iter()
                    .map(|p| p.to_string())
                    .collect()
            },
            |j| j.config.excluded_route_paths.clone(),
        );
        let excluded = excluded.into_iter().map(Excluded::new).collect();
        Gate {
            excluded,
            // JWT takes precedence, as in AgentOS.
            security_key: config.auth.security_key.clone().filter(|_| jwt.is_none()),
            jwt,
            limits: Limits::new(&config.limits),
        }
    }

    /// Whether requests must carry the caller's address ([`PeerAddr`]):
    /// rate limits key on it when no verified token names the caller.
    pub fn needs_peer_address(&self) -> bool {
        self.limits.is_some()
    }

    /// Whether the layer has anything to do.
    pub fn active(&self) -> bool {
        self.jwt.is_some() || self.security_key.is_some() || self.limits.is_some()
    }
}

/// One `excluded_route_paths` entry, matched as `fnmatch` matches it.
enum Excluded {
    /// No `*`, `?` or `[`: `fnmatch` matches the text itself only, so a
    /// comparison does (every default path is one; `fnmatch` allocates on
    /// every call, and this runs on every request).
    Literal(String),
    Pattern(String),
}

impl Excluded {
    fn new(pattern: String) -> Excluded {
        if pattern.contains(['*', '?', '[']) {
            Excluded::Pattern(pattern)
        } else {
            Excluded::Literal(pattern)
        }
    }

    fn matches(&self, path: &str) -> bool {
        match self {
            Excluded::Literal(p) => p == path,
            Excluded::Pattern(p) => scopes::fnmatch(p, path),
        }
    }
}

/// Builds [`Auth`] around the routes.
#[derive(Clone)]
pub struct AuthLayer {
    state: SharedState,
}

impl AuthLayer {
    pub fn new(state: SharedState) -> AuthLayer {
        AuthLayer { state }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            state: self.state.clone(),
        }
    }
}

/// The service [`AuthLayer`] builds.
#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    state: SharedState,
}

/// A refusal: status and AgentOS `detail`.
struct Refusal {
    status: StatusCode,
    detail: String,
    retry_after: Option<u64>,
}

impl Refusal {
    fn new(status: StatusCode, detail: impl Into<String>) -> Refusal {
        Refusal {
            status,
            detail: detail.into(),
            retry_after: None,
        }
    }

    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            axum::Json(serde_json::json!({ "detail": self.detail })),
        )
            .into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// What a let-through request carries on: who the caller is, and how a
/// listing answer must be cut down.
#[derive(Default)]
struct Passed {
    identity: Identity,
    listing: Option<Listing>,
}

/// A response-side filter: the listing's items, or `/config`'s lists, cut
/// to the ids the caller's scopes name.
enum Listing {
    /// `GET /workflows` (`/agents`, `/teams`): the array itself.
    Array(Visible),
    /// `GET /config`: its `agents`, `teams` and `workflows` arrays.
    Config(Vec<(&'static str, Visible)>),
}

impl<S> Service<Request> for Auth<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    // The routes' own future when nothing is added, so an open or passing
    // request costs no extra allocation.
    type Future = Either<S::Future, BoxFuture<'static, Result<Response, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        // Checked before the clone: an `Arc` count written per request is a
        // cache line every serving thread contends on.
        if !self.state.auth.active() {
            return Either::Left(self.inner.call(request));
        }
        let gate = self.state.auth.clone();
        // With a `jwks_url`, an unknown `kid` may need the IdP first.
        let remote = gate
            .jwt
            .as_ref()
            .filter(|j| j.config.jwks_url.is_some())
            .map(|j| {
                (
                    j.keys.clone(),
                    j.token(&request).and_then(|t| jwt::unverified_kid(&t)),
                )
            });
        let Some((keys, kid)) = remote else {
            return self.decide(&gate, request);
        };
        // The ready service goes with the future; a clone stays behind.
        let clone = self.clone();
        let mut ready = std::mem::replace(self, clone);
        Either::Right(Box::pin(async move {
            keys.ensure_kid(kid.as_deref()).await;
            ready.decide(&gate, request).await
        }))
    }
}

impl<S> Auth<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    /// Admits or refuses `request` and, when admitted, calls the routes.
    fn decide(&mut self, gate: &Gate, mut request: Request) -> <Self as Service<Request>>::Future {
        let passed = match gate.admit(&mut request) {
            Ok(passed) => passed,
            Err(refusal) => {
                return Either::Right(Box::pin(std::future::ready(Ok(refusal.into_response()))));
            }
        };
        identity::apply(&passed.identity, &mut request);
        let future = self.inner.call(request);
        match passed.listing {
            None => Either::Left(future),
            Some(listing) => Either::Right(Box::pin(async move {
                let response = future.await?;
                Ok(filter_listing(response, &listing).await)
            })),
        }
    }
}

impl Gate {
    /// The whole decision for one request: authenticate, authorize, rate
    /// limit; `Err` is the answer to send instead.
    fn admit(&self, request: &mut Request) -> Result<Passed, Refusal> {
        if request.method() == Method::OPTIONS {
            return Ok(Passed::default());
        }
        let raw_path = request.uri().path().to_owned();
        // Starlette matches on the percent-decoded path.
        let path = percent_encoding::percent_decode_str(&raw_path)
            .decode_utf8_lossy()
            .into_owned();
        let trimmed = path.trim_end_matches('/');
        let excluded = self
            .excluded
            .iter()
            .any(|p| p.matches(&path) || p.matches(trimmed));
        if excluded {
            return Ok(Passed::default());
        }
        let mut passed = Passed::default();
        if let Some(jwt) = &self.jwt {
            passed = jwt.admit(request, &path)?;
        } else if let Some(key) = &self.security_key {
            let token = header_token(request, &header::AUTHORIZATION)
                .ok_or_else(|| unauthorized("Authorization header required"))?;
            if token.starts_with(SERVICE_ACCOUNT_PREFIX) {
                return Err(unauthorized(
                    "Service accounts are not enabled on this AgentOS instance",
                ));
            }
            if !constant_time_eq(token.as_bytes(), key.expose().as_bytes()) {
                tracing::warn!("Invalid authentication token");
                return Err(unauthorized("Invalid authentication token"));
            }
        }
        if let Some(limits) = &self.limits {
            let caller = match &passed.identity.user_id {
                Some(sub) => format!("sub:{sub}"),
                None => {
                    let peer = request.extensions().get::<PeerAddr>().map(|p| p.0);
                    limits
                        .client_ip(peer, request.headers())
                        .map_or_else(|| "unknown".to_owned(), |ip| format!("ip:{ip}"))
                }
            };
            let run = run_resource(request.method(), &path);
            if let Err(wait) = limits.check(&caller, run.as_deref()) {
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                return Err(Refusal {
                    retry_after: Some(secs.max(1)),
                    ..Refusal::new(StatusCode::TOO_MANY_REQUESTS, "Rate limit exceeded")
                });
            }
        }
        Ok(passed)
    }
}

impl JwtGate {
    fn admit(&self, request: &Request, path: &str) -> Result<Passed, Refusal> {
        let c = &self.config;
        let Some(token) = self.token(request) else {
            return Err(unauthorized(match c.token_source {
                TokenSource::Header => "Authorization header missing".to_owned(),
                TokenSource::Cookie => format!("JWT cookie '{}' missing", c.cookie_name),
                TokenSource::Both => format!(
                    "JWT token missing from both Authorization header and '{}' cookie",
                    c.cookie_name
                ),
            }));
        };
        if token.starts_with(SERVICE_ACCOUNT_PREFIX) {
            return Err(unauthorized(
                "Service accounts are not enabled on this AgentOS instance",
            ));
        }
        let expected = c.verify_audience.then_some(self.audience.as_slice());
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let token: Arc<str> = Arc::from(token);
        let payload = match self.verified.get(&token) {
            Some(payload) if !jwt::expired(&payload, c.leeway, now) => payload,
            _ => {
                let keys = self.keys.snapshot();
                let payload =
                    jwt::validate(&keys, &self.rules, &token, expected, now).map_err(|e| {
                        self.verified.invalidate(&token);
                        let detail = e.detail();
                        // AgentOS logs the same line; the token itself never is.
                        tracing::warn!("{detail}");
                        unauthorized(detail)
                    })?;
                let payload = Arc::new(payload);
                self.verified.insert(token.clone(), payload.clone());
                payload
            }
        };
        let user_id = payload.get(&c.user_id_claim).filter(|v| !v.is_null());
        if let Some(Value::String(sub)) = user_id
            && (RESERVED_PREFIXES.iter().any(|p| sub.starts_with(p)) || sub == SCHEDULER_USER_ID)
        {
            tracing::warn!("Rejected JWT claiming a reserved principal");
            return Err(unauthorized("Invalid token subject"));
        }
        let scopes: Vec<String> = match payload.get(&c.scopes_claim) {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        let identity = Identity {
            user_id: user_id.map(claim_text),
            session_id: payload
                .get(&c.session_id_claim)
                .filter(|v| !v.is_null())
                .map(claim_text),
        };
        let mut listing = None;
        if c.authorization {
            // HEAD is checked as the GET it mirrors (AgentOS maps no HEAD
            // route, which would let a HEAD through unchecked).
            let method = match *request.method() {
                Method::HEAD => "GET",
                ref m => m.as_str(),
            };
            match scopes::check(&self.scope_map, &scopes, method, path, &c.admin_scope) {
                Verdict::Denied(required) => {
                    tracing::warn!(
                        "Insufficient scopes for {method} {path}. Required: {required:?}, User has: {scopes:?}"
                    );
                    return Err(forbidden(&required));
                }
                Verdict::Allowed { listing: visible } => {
                    listing = self.listing(method, path, &scopes, visible)?;
                }
            }
        }
        Ok(Passed { identity, listing })
    }

    /// The token as `token_source` says to read it.
    fn token(&self, request: &Request) -> Option<String> {
        let c = &self.config;
        match c.token_source {
            TokenSource::Header => header_token(request, &c.token_header_key),
            TokenSource::Cookie => cookie_token(request, &c.cookie_name),
            TokenSource::Both => header_token(request, &c.token_header_key)
                .or_else(|| cookie_token(request, &c.cookie_name)),
        }
    }

    /// How a listing answer must be filtered, or the 403 AgentOS's list
    /// routes answer when the caller may see none of the family.
    fn listing(
        &self,
        method: &str,
        path: &str,
        scopes: &[String],
        visible: Option<Visible>,
    ) -> Result<Option<Listing>, Refusal> {
        let admin = &self.config.admin_scope;
        if method != "GET" {
            return Ok(None);
        }
        if path == "/config" {
            let lists: Vec<(&'static str, Visible)> = ["agents", "teams", "workflows"]
                .into_iter()
                .map(|family| {
                    (
                        family,
                        scopes::accessible_ids(scopes, family, admin, Some("read")),
                    )
                })
                .filter(|(_, v)| *v != Visible::All)
                .collect();
            return Ok((!lists.is_empty()).then_some(Listing::Config(lists)));
        }
        let family = match path {
            "/agents" => "agents",
            "/teams" => "teams",
            "/workflows" => "workflows",
            _ => return Ok(None),
        };
        // Allowed outright: the list routes still ask which ids (read or
        // run) the caller holds.
        let visible =
            visible.unwrap_or_else(|| scopes::accessible_ids(scopes, family, admin, None));
        match visible {
            Visible::All => Ok(None),
            Visible::Only(ids) if ids.is_empty() => {
                Err(forbidden(self.scope_map.required("GET", path)))
            }
            only => Ok(Some(Listing::Array(only))),
        }
    }
}

fn unauthorized(detail: impl Into<String>) -> Refusal {
    Refusal::new(StatusCode::UNAUTHORIZED, detail)
}

fn forbidden(required: &[String]) -> Refusal {
    Refusal::new(StatusCode::FORBIDDEN, scopes::insufficient(required))
}

/// A claim as the host will see it in a form field.
fn claim_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The token in `name`: after `Bearer ` (any case), else the whole value,
/// trimmed; `None` when absent or blank (`_extract_token_from_header`).
fn header_token(request: &Request, name: &http::HeaderName) -> Option<String> {
    let value = request.headers().get(name)?;
    let value = String::from_utf8_lossy(value.as_bytes());
    let token = match value.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case("bearer ") => value[7..].trim(),
        _ => value.trim(),
    };
    (!token.is_empty()).then(|| token.to_owned())
}

/// The cookie `name`, trimmed (`_extract_token_from_cookie`).
fn cookie_token(request: &Request, name: &str) -> Option<String> {
    request
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| k.trim() == name)
        .map(|(_, v)| v.trim().trim_matches('"').trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// Compares in time that depends on the length only (`hmac.compare_digest`).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `workflows/<id>` (or `agents/`, `teams/`) when the request starts or
/// continues a run: those take a run token.
fn run_resource(method: &Method, path: &str) -> Option<String> {
    if method != Method::POST {
        return None;
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments[..] {
        [family, id, "runs"] | [family, id, "runs", _, "continue"]
            if matches!(family, "workflows" | "agents" | "teams") =>
        {
            Some(format!("{family}/{id}"))
        }
        _ => None,
    }
}

/// Cuts a listing answer down to what the caller may see.
async fn filter_listing(response: Response, listing: &Listing) -> Response {
    if !response.status().is_success() {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_LISTING_BYTES).await {
        Ok(bytes) => bytes,
        Err(error) => {
            tracing::warn!(%error, "listing too large to filter by scope");
            return Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
                .into_response();
        }
    };
    let Ok(mut doc) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    let keep = |items: &mut Vec<Value>, visible: &Visible| {
        items.retain(|item| {
            item.get("id")
                .and_then(Value::as_str)
                .is_some_and(|id| visible.allows(id))
        })
    };
    match listing {
        Listing::Array(visible) => {
            if let Value::Array(items) = &mut doc {
                keep(items, visible);
            }
        }
        Listing::Config(lists) => {
            for (family, visible) in lists {
                if let Some(Value::Array(items)) = doc.get_mut(*family) {
                    keep(items, visible);
                }
            }
        }
    }
    let body = serde_json::to_vec(&doc).unwrap_or_default();
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> Request {
        let mut b = http::Request::builder().uri("/x");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(Body::empty()).unwrap()
    }

    #[test]
    fn tokens_are_read_as_agno_reads_them() {
        let auth = &header::AUTHORIZATION;
        assert_eq!(
            header_token(&req(&[("authorization", "Bearer  abc ")]), auth).as_deref(),
            Some("abc")
        );
        assert_eq!(
            header_token(&req(&[("authorization", "bEaReR x")]), auth).as_deref(),
            Some("x")
        );
        assert_eq!(
            header_token(&req(&[("authorization", "abc")]), auth).as_deref(),
            Some("abc")
        );
        assert_eq!(
            header_token(&req(&[("authorization", "Bearer ")]), auth),
            None
        );
        assert_eq!(
            cookie_token(&req(&[("cookie", "a=1; access_token=tok")]), "access_token").as_deref(),
            Some("tok")
        );
    }

    #[test]
    fn excluded_paths_match_as_fnmatch_does() {
        let patterns = [
            "/",
            "/health",
            "/docs*",
            "/x[ab]",
            "/a?c",
            "/docs/oauth2-redirect",
        ];
        let paths = [
            "/",
            "",
            "/health",
            "/health/",
            "/healthz",
            "/docs",
            "/docs/x",
            "/xa",
            "/xc",
            "/abc",
            "/docs/oauth2-redirect",
        ];
        for p in patterns {
            let excluded = Excluded::new(p.to_owned());
            for t in paths {
                assert_eq!(excluded.matches(t), scopes::fnmatch(p, t), "{p} {t}");
            }
        }
    }

    #[test]
    fn run_calls_are_recognised() {
        let post = Method::POST;
        assert_eq!(
            run_resource(&post, "/workflows/w/runs").as_deref(),
            Some("workflows/w")
        );
        assert_eq!(
            run_resource(&post, "/agents/a/runs/r/continue").as_deref(),
            Some("agents/a")
        );
        assert_eq!(run_resource(&post, "/workflows/w/runs/r/cancel"), None);
        assert_eq!(run_resource(&Method::GET, "/workflows/w/runs"), None);
    }
}
