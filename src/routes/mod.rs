//! The AgentOS HTTP surface the gateway answers, grouped by resource, and the
//! router that hands each request to its handler.
//!
//! The router is a `match` over the path's segments instead of axum's
//! `Router`. The route table is small and fixed, and axum's per-request work
//! (three boxed futures, two extension maps, path parameters as owned
//! strings) was 17 of the 55 heap allocations of a forwarded run (see
//! BENCHMARKS.md). What axum's router answered on its own is kept:
//! 404 and 405 as AgentOS bodies, `Allow` on a 405, HEAD on every GET route,
//! percent-decoded path parameters.
//!
//! Agents, teams and workflows share one set of routes ([`EntryRoute`]),
//! each under its collection, as AgentOS has them.
//!
//! Only the AgentOS surface is here: Prometheus metrics and the hosts' view
//! (`/gateway/upstreams`) name every host and are served on the admin
//! listener ([`crate::admin`]); here they are unknown paths (404).

pub mod config;
pub mod databases;
pub mod entries;
pub mod health;

use std::borrow::Cow;
use std::convert::Infallible;
use std::ops::Range;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use http::Method;
use http::header::{ALLOW, HeaderValue};
use tower::Service;

use crate::config::EntryKind;
use crate::error::GatewayError;
use crate::proxy::Call;
use crate::state::SharedState;

/// Every route the gateway answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Home,
    Health,
    Ready,
    Info,
    Config,
    /// A route under `/agents`, `/teams` or `/workflows`.
    Entry(EntryKind, EntryRoute),
    /// A database route (`/sessions`, ...), by its index in
    /// [`databases`]' table.
    Database(u8),
}

/// The routes of one agent, team or workflow collection, as AgentOS 3.1.10
/// has them. Workflows have no checkpoints, fork or compact; teams no
/// compact, and the router matches neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryRoute {
    /// `GET /agents`
    List,
    /// `GET /agents/{id}`
    Detail,
    /// `POST` (a new run) or `GET` (a session's runs) `/agents/{id}/runs`
    Runs,
    /// `GET /agents/{id}/runs/{run_id}`
    Run,
    Cancel,
    Continue,
    Resume,
    /// `GET .../runs/{run_id}/checkpoints`
    Checkpoints,
    /// `GET .../runs/{run_id}/checkpoints/{message_index}`
    Checkpoint,
    /// `POST /agents/{id}/sessions/{session_id}/fork`
    Fork,
    /// `POST /agents/{id}/sessions/{session_id}/compact`
    Compact,
}

/// Routes that name no entry, before the entry routes in [`Route::index`].
const PLAIN_ROUTES: usize = 5;
/// [`EntryRoute`] variants (`Compact` is the last).
const ENTRY_ROUTES: usize = EntryRoute::Compact as usize + 1;

/// Path templates by kind ([`EntryKind::index`]) and [`EntryRoute`]; a
/// route a kind does not have keeps its template for completeness, but is
/// never matched.
const TEMPLATES: [[&str; ENTRY_ROUTES]; 3] = [
    [
        "/agents",
        "/agents/{id}",
        "/agents/{id}/runs",
        "/agents/{id}/runs/{run_id}",
        "/agents/{id}/runs/{run_id}/cancel",
        "/agents/{id}/runs/{run_id}/continue",
        "/agents/{id}/runs/{run_id}/resume",
        "/agents/{id}/runs/{run_id}/checkpoints",
        "/agents/{id}/runs/{run_id}/checkpoints/{message_index}",
        "/agents/{id}/sessions/{session_id}/fork",
        "/agents/{id}/sessions/{session_id}/compact",
    ],
    [
        "/teams",
        "/teams/{id}",
        "/teams/{id}/runs",
        "/teams/{id}/runs/{run_id}",
        "/teams/{id}/runs/{run_id}/cancel",
        "/teams/{id}/runs/{run_id}/continue",
        "/teams/{id}/runs/{run_id}/resume",
        "/teams/{id}/runs/{run_id}/checkpoints",
        "/teams/{id}/runs/{run_id}/checkpoints/{message_index}",
        "/teams/{id}/sessions/{session_id}/fork",
        "/teams/{id}/sessions/{session_id}/compact",
    ],
    [
        "/workflows",
        "/workflows/{id}",
        "/workflows/{id}/runs",
        "/workflows/{id}/runs/{run_id}",
        "/workflows/{id}/runs/{run_id}/cancel",
        "/workflows/{id}/runs/{run_id}/continue",
        "/workflows/{id}/runs/{run_id}/resume",
        "/workflows/{id}/runs/{run_id}/checkpoints",
        "/workflows/{id}/runs/{run_id}/checkpoints/{message_index}",
        "/workflows/{id}/sessions/{session_id}/fork",
        "/workflows/{id}/sessions/{session_id}/compact",
    ],
];

impl EntryRoute {
    /// Whether AgentOS 3.1.10 has this route for `kind`.
    fn exists_for(self, kind: EntryKind) -> bool {
        match self {
            EntryRoute::Checkpoints | EntryRoute::Checkpoint | EntryRoute::Fork => {
                kind != EntryKind::Workflow
            }
            EntryRoute::Compact => kind == EntryKind::Agent,
            _ => true,
        }
    }
}

/// Which methods a route answers: a set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Methods(u8);

impl Methods {
    pub const NONE: Methods = Methods(0);
    pub const GET: Methods = Methods(1);
    pub const POST: Methods = Methods(2);
    pub const PATCH: Methods = Methods(4);
    pub const DELETE: Methods = Methods(8);

    /// Both sets.
    pub const fn or(self, other: Methods) -> Methods {
        Methods(self.0 | other.0)
    }

    /// HEAD is answered wherever GET is, as Starlette (and axum) do.
    pub fn allow(self, method: &Method) -> bool {
        let bit = match *method {
            Method::GET | Method::HEAD => Methods::GET,
            Method::POST => Methods::POST,
            Method::PATCH => Methods::PATCH,
            Method::DELETE => Methods::DELETE,
            _ => return false,
        };
        self.0 & bit.0 != 0
    }

    fn allow_header(self) -> HeaderValue {
        let mut names = Vec::with_capacity(5);
        for (bit, text) in [
            (Methods::GET, "GET, HEAD"),
            (Methods::POST, "POST"),
            (Methods::PATCH, "PATCH"),
            (Methods::DELETE, "DELETE"),
        ] {
            if self.0 & bit.0 != 0 {
                names.push(text);
            }
        }
        HeaderValue::from_str(&names.join(", ")).unwrap_or(HeaderValue::from_static(""))
    }
}

impl Route {
    /// How many routes there are; [`Route::index`] is below this.
    pub const COUNT: usize = PLAIN_ROUTES + 3 * ENTRY_ROUTES + databases::COUNT;

    /// A dense index, for tables by route.
    pub fn index(self) -> usize {
        match self {
            Route::Home => 0,
            Route::Health => 1,
            Route::Ready => 2,
            Route::Info => 3,
            Route::Config => 4,
            Route::Entry(kind, route) => {
                PLAIN_ROUTES + kind.index() * ENTRY_ROUTES + route as usize
            }
            Route::Database(index) => PLAIN_ROUTES + 3 * ENTRY_ROUTES + usize::from(index),
        }
    }

    /// The path template, the `route` label of metrics and the access log.
    pub fn template(self) -> &'static str {
        match self {
            Route::Home => "/",
            Route::Health => "/health",
            Route::Ready => "/ready",
            Route::Info => "/info",
            Route::Config => "/config",
            Route::Entry(kind, route) => TEMPLATES[kind.index()][route as usize],
            Route::Database(index) => databases::template(usize::from(index)),
        }
    }

    /// The kind of entry the route is about, if any.
    pub fn kind(self) -> Option<EntryKind> {
        match self {
            Route::Entry(kind, _) => Some(kind),
            _ => None,
        }
    }

    fn methods(self) -> Methods {
        match self {
            Route::Home | Route::Health | Route::Ready | Route::Info | Route::Config => {
                Methods::GET
            }
            Route::Entry(_, route) => match route {
                EntryRoute::List
                | EntryRoute::Detail
                | EntryRoute::Run
                | EntryRoute::Checkpoints
                | EntryRoute::Checkpoint => Methods::GET,
                EntryRoute::Runs => Methods::GET.or(Methods::POST),
                EntryRoute::Cancel
                | EntryRoute::Continue
                | EntryRoute::Resume
                | EntryRoute::Fork
                | EntryRoute::Compact => Methods::POST,
            },
            Route::Database(index) => databases::methods(usize::from(index)),
        }
    }
}

/// A matched route and where its parameters sit in the path (still
/// percent-encoded; spans, so the request can move on while they are read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched {
    pub route: Route,
    id: Range<usize>,
    run_id: Range<usize>,
}

impl Matched {
    /// The route `path` names, if any. A parameter is one non-empty segment.
    pub fn of(path: &str) -> Option<Matched> {
        let at = |route| Matched {
            route,
            id: 0..0,
            run_id: 0..0,
        };
        let (kind, rest) = if let Some(rest) = path.strip_prefix("/workflows/") {
            (EntryKind::Workflow, rest)
        } else if let Some(rest) = path.strip_prefix("/agents/") {
            (EntryKind::Agent, rest)
        } else if let Some(rest) = path.strip_prefix("/teams/") {
            (EntryKind::Team, rest)
        } else {
            return Some(at(match path {
                "/" => Route::Home,
                "/health" => Route::Health,
                "/ready" => Route::Ready,
                "/info" => Route::Info,
                "/config" => Route::Config,
                "/agents" => Route::Entry(EntryKind::Agent, EntryRoute::List),
                "/teams" => Route::Entry(EntryKind::Team, EntryRoute::List),
                "/workflows" => Route::Entry(EntryKind::Workflow, EntryRoute::List),
                _ => {
                    let index = databases::matching(path, None)?;
                    Route::Database(u8::try_from(index).ok()?)
                }
            }));
        };
        let entry = |route: EntryRoute| Route::Entry(kind, route);
        let base = path.len() - rest.len();
        let mut segments = segments(rest);
        let span = |segment: &str, start: usize| start..start + segment.len();
        let id = span(segments.next().filter(|s| !s.is_empty())?, base);
        let Some(collection) = segments.next() else {
            return Some(Matched {
                id,
                ..at(entry(EntryRoute::Detail))
            });
        };
        if collection == "sessions" {
            // `/sessions/{session_id}/fork|compact`: the session id is a
            // host's business, matched but not read.
            segments.next().filter(|s| !s.is_empty())?;
            let route = match (segments.next(), segments.next()) {
                (Some("fork"), None) => EntryRoute::Fork,
                (Some("compact"), None) => EntryRoute::Compact,
                _ => return None,
            };
            return route.exists_for(kind).then(|| Matched {
                id,
                ..at(entry(route))
            });
        }
        if collection != "runs" {
            return None;
        }
        let Some(run_segment) = segments.next() else {
            return Some(Matched {
                id,
                ..at(entry(EntryRoute::Runs))
            });
        };
        if run_segment.is_empty() {
            return None;
        }
        let run_id = span(run_segment, id.end + "/runs/".len());
        let route = match segments.next() {
            None => EntryRoute::Run,
            Some("cancel") => EntryRoute::Cancel,
            Some("continue") => EntryRoute::Continue,
            Some("resume") => EntryRoute::Resume,
            Some("checkpoints") => match segments.next() {
                None => EntryRoute::Checkpoints,
                Some(index) if !index.is_empty() => EntryRoute::Checkpoint,
                Some(_) => return None,
            },
            Some(_) => return None,
        };
        if segments.next().is_some() || !route.exists_for(kind) {
            return None;
        }
        Some(Matched {
            route: entry(route),
            id,
            run_id,
        })
    }

    /// The route `path` names for `method`: as [`Matched::of`], but where
    /// two database routes fit the path, the one that answers `method`
    /// (`POST /traces/search`, not `GET /traces/{trace_id}`).
    pub fn for_request(method: &Method, path: &str) -> Option<Matched> {
        let matched = Matched::of(path)?;
        if let Route::Database(_) = matched.route
            && !matched.route.methods().allow(method)
            && let Some(index) = databases::matching(path, Some(method))
            && let Ok(index) = u8::try_from(index)
        {
            return Some(Matched {
                route: Route::Database(index),
                ..matched
            });
        }
        Some(matched)
    }

    /// The entry id, percent-decoded (invalid UTF-8 replaced, as Starlette
    /// decodes paths); empty for routes without one. `path` is the one
    /// matched.
    pub fn id<'p>(&self, path: &'p str) -> Cow<'p, str> {
        decode(&path[self.id.clone()])
    }

    fn run_id(&self, path: &str) -> String {
        decode(&path[self.run_id.clone()]).into_owned()
    }
}

/// The `/`-separated segments of `s`, as `str::split('/')` gives them; a
/// plain byte scan, which on paths this short costs a fraction of the
/// general searcher's set-up.
fn segments(s: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let current = rest?;
        match current.bytes().position(|b| b == b'/') {
            Some(i) => {
                rest = Some(&current[i + 1..]);
                Some(&current[..i])
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

fn decode(segment: &str) -> Cow<'_, str> {
    percent_encoding::percent_decode_str(segment).decode_utf8_lossy()
}

/// The router as a service: every request to its handler, 404 and 405
/// answered here.
#[derive(Clone)]
pub struct Routes {
    state: SharedState,
}

impl Routes {
    pub fn new(state: SharedState) -> Routes {
        Routes { state }
    }
}

impl Service<Request> for Routes {
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    /// Picks the handler here, so each route's future is boxed at its own
    /// size: one future holding every handler's would be as big as the
    /// biggest (the `/config` fan-out, ~15 KB), allocated for every run.
    fn call(&mut self, request: Request) -> Self::Future {
        let state = self.state.clone();
        let Some(matched) = Matched::for_request(request.method(), request.uri().path()) else {
            return answered(GatewayError::RouteNotFound.into_response());
        };
        let methods = matched.route.methods();
        if !methods.allow(request.method()) {
            let mut response = GatewayError::MethodNotAllowed.into_response();
            response.headers_mut().insert(ALLOW, methods.allow_header());
            return answered(response);
        }
        let path = request.uri().path();
        let (kind, route) = match matched.route {
            Route::Home => return answered(health::home(&state).into_response()),
            Route::Health => return answered(health::health(&state).into_response()),
            Route::Ready => return answered(health::ready(&state).into_response()),
            Route::Info => return answered(health::info(&state).into_response()),
            Route::Config => {
                return Box::pin(async move {
                    Ok(config::config(&state, request.headers())
                        .await
                        .into_response())
                });
            }
            Route::Entry(kind, route) => (kind, route),
            Route::Database(index) => {
                return Box::pin(async move {
                    Ok(databases::forward(&state, usize::from(index), request)
                        .await
                        .unwrap_or_else(IntoResponse::into_response))
                });
            }
        };
        let call = match route {
            EntryRoute::List => {
                return Box::pin(async move {
                    Ok(entries::list(&state, kind, request.headers())
                        .await
                        .into_response())
                });
            }
            EntryRoute::Detail => {
                let id = matched.id(path).into_owned();
                return Box::pin(async move {
                    Ok(entries::detail(&state, kind, &id, request)
                        .await
                        .unwrap_or_else(IntoResponse::into_response))
                });
            }
            EntryRoute::Runs if request.method() == Method::POST => Call::NewRun,
            // A session's runs, checkpoints (read from the database), fork
            // and compact: any replica.
            EntryRoute::Runs
            | EntryRoute::Checkpoints
            | EntryRoute::Checkpoint
            | EntryRoute::Fork
            | EntryRoute::Compact => Call::Other,
            // A look-up or a cancel goes to every replica when the run's
            // owner is unknown; continue goes to one.
            EntryRoute::Run | EntryRoute::Cancel => Call::Run {
                run_id: matched.run_id(path),
                fan_out: true,
            },
            EntryRoute::Continue => Call::Run {
                run_id: matched.run_id(path),
                fan_out: false,
            },
            EntryRoute::Resume => Call::Resume {
                run_id: matched.run_id(path),
            },
        };
        let upstream = match entries::upstream(&state, kind, &matched.id(path)) {
            Ok(upstream) => upstream,
            Err(error) => return answered(error.into_response()),
        };
        Box::pin(async move {
            Ok(entries::forward_call(&state, &upstream, call, request)
                .await
                .unwrap_or_else(IntoResponse::into_response))
        })
    }
}

/// A response known without waiting.
fn answered(response: Response) -> BoxFuture<'static, Result<Response, Infallible>> {
    Box::pin(std::future::ready(Ok(response)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(path: &str) -> Option<Route> {
        Matched::of(path).map(|m| m.route)
    }

    fn wf(route: EntryRoute) -> Option<Route> {
        Some(Route::Entry(EntryKind::Workflow, route))
    }

    #[test]
    fn paths_match_their_routes() {
        assert_eq!(route("/"), Some(Route::Home));
        assert_eq!(route("/info"), Some(Route::Info));
        assert_eq!(route("/workflows"), wf(EntryRoute::List));
        assert_eq!(route("/workflows/a"), wf(EntryRoute::Detail));
        assert_eq!(route("/workflows/a/runs"), wf(EntryRoute::Runs));
        assert_eq!(route("/workflows/a/runs/r"), wf(EntryRoute::Run));
        assert_eq!(route("/workflows/a/runs/r/cancel"), wf(EntryRoute::Cancel));
        assert_eq!(
            route("/workflows/a/runs/r/continue"),
            wf(EntryRoute::Continue)
        );
        assert_eq!(route("/workflows/a/runs/r/resume"), wf(EntryRoute::Resume));
    }

    #[test]
    fn agent_and_team_routes_are_agentos_s() {
        let agent = |r| Some(Route::Entry(EntryKind::Agent, r));
        let team = |r| Some(Route::Entry(EntryKind::Team, r));
        assert_eq!(route("/agents"), agent(EntryRoute::List));
        assert_eq!(route("/teams/t"), team(EntryRoute::Detail));
        assert_eq!(route("/agents/a/runs/r/cancel"), agent(EntryRoute::Cancel));
        assert_eq!(
            route("/teams/t/runs/r/checkpoints"),
            team(EntryRoute::Checkpoints)
        );
        assert_eq!(
            route("/agents/a/runs/r/checkpoints/3"),
            agent(EntryRoute::Checkpoint)
        );
        assert_eq!(route("/agents/a/sessions/s/fork"), agent(EntryRoute::Fork));
        assert_eq!(route("/teams/t/sessions/s/fork"), team(EntryRoute::Fork));
        assert_eq!(
            route("/agents/a/sessions/s/compact"),
            agent(EntryRoute::Compact)
        );
        // What AgentOS does not have is not matched.
        for path in [
            "/teams/t/sessions/s/compact",
            "/workflows/w/sessions/s/fork",
            "/workflows/w/runs/r/checkpoints",
            "/agents/a/sessions//fork",
            "/agents/a/sessions/s",
            "/agents/a/runs/r/checkpoints/",
            "/agents/a/runs/r/checkpoints/1/x",
        ] {
            assert_eq!(route(path), None, "{path}");
        }
    }

    #[test]
    fn route_indexes_are_dense_and_templates_match_the_kind() {
        let mut seen = [false; Route::COUNT];
        for kind in EntryKind::ALL {
            for r in [
                EntryRoute::List,
                EntryRoute::Detail,
                EntryRoute::Runs,
                EntryRoute::Run,
                EntryRoute::Cancel,
                EntryRoute::Continue,
                EntryRoute::Resume,
                EntryRoute::Checkpoints,
                EntryRoute::Checkpoint,
                EntryRoute::Fork,
                EntryRoute::Compact,
            ] {
                let route = Route::Entry(kind, r);
                assert!(!seen[route.index()]);
                seen[route.index()] = true;
                assert!(route.template().starts_with(&format!("/{}", kind.plural())));
            }
        }
        for index in 0..databases::COUNT {
            let route = Route::Database(u8::try_from(index).unwrap());
            assert!(!seen[route.index()]);
            seen[route.index()] = true;
            let method = [Method::GET, Method::POST, Method::PATCH, Method::DELETE]
                .into_iter()
                .find(|m| route.methods().allow(m))
                .unwrap();
            assert_eq!(
                Matched::for_request(&method, route.template()).map(|m| m.route),
                Some(route),
                "{}",
                route.template()
            );
        }
        assert_eq!(seen.iter().filter(|s| !**s).count(), PLAIN_ROUTES);
    }

    #[test]
    fn empty_or_extra_segments_match_nothing() {
        for path in [
            "",
            "/nope",
            // Admin-listener routes (crate::admin), unknown here; `/metrics`
            // is AgentOS's own (a database route).
            "/gateway/upstreams",
            "/gateway/config",
            "/health/x",
            "/workflows/",
            "/workflows//runs",
            "/workflows/a/",
            "/workflows/a/run",
            "/workflows/a/runs/",
            "/workflows/a/runs//cancel",
            "/workflows/a/runs/r/stop",
            "/workflows/a/runs/r/cancel/x",
        ] {
            assert_eq!(route(path), None, "{path}");
        }
    }

    #[test]
    fn segments_split_as_str_split_does() {
        for s in ["", "a", "a/b", "/a", "a/", "a//b", "//"] {
            assert_eq!(
                segments(s).collect::<Vec<_>>(),
                s.split('/').collect::<Vec<_>>(),
                "{s:?}"
            );
        }
    }

    #[test]
    fn parameters_are_percent_decoded() {
        let path = "/workflows/my%20flow/runs/r%2F1/cancel";
        let matched = Matched::of(path).unwrap();
        assert_eq!(matched.id(path), "my flow");
        assert_eq!(matched.run_id(path), "r/1");
        let path = "/workflows/%FF";
        assert_eq!(Matched::of(path).unwrap().id(path), "\u{FFFD}");
    }

    #[test]
    fn head_is_answered_where_get_is() {
        assert!(Route::Health.methods().allow(&Method::HEAD));
        let runs = Route::Entry(EntryKind::Agent, EntryRoute::Runs);
        assert!(runs.methods().allow(&Method::POST));
        let cancel = Route::Entry(EntryKind::Team, EntryRoute::Cancel);
        assert!(!cancel.methods().allow(&Method::GET));
        let list = Route::Entry(EntryKind::Workflow, EntryRoute::List);
        assert!(!list.methods().allow(&Method::DELETE));
    }
}
