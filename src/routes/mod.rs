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
//! Only the AgentOS surface is here: Prometheus metrics and the hosts' view
//! (`/gateway/upstreams`) name every host and are served on the admin
//! listener ([`crate::admin`]); here they are unknown paths (404).

pub mod config;
pub mod health;
pub mod workflows;

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
    Workflows,
    Workflow,
    Runs,
    Run,
    Cancel,
    Continue,
    Resume,
}

/// Which methods a route answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Methods {
    Get,
    GetPost,
    Post,
}

impl Route {
    /// How many routes there are (`Resume` is the last variant);
    /// [`Route::index`] is below this.
    pub const COUNT: usize = Route::Resume as usize + 1;

    /// A dense index, for tables by route.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The path template, the `route` label of metrics and the access log.
    pub fn template(self) -> &'static str {
        match self {
            Route::Home => "/",
            Route::Health => "/health",
            Route::Ready => "/ready",
            Route::Info => "/info",
            Route::Config => "/config",
            Route::Workflows => "/workflows",
            Route::Workflow => "/workflows/{id}",
            Route::Runs => "/workflows/{id}/runs",
            Route::Run => "/workflows/{id}/runs/{run_id}",
            Route::Cancel => "/workflows/{id}/runs/{run_id}/cancel",
            Route::Continue => "/workflows/{id}/runs/{run_id}/continue",
            Route::Resume => "/workflows/{id}/runs/{run_id}/resume",
        }
    }

    fn methods(self) -> Methods {
        match self {
            Route::Home
            | Route::Health
            | Route::Ready
            | Route::Info
            | Route::Config
            | Route::Workflows
            | Route::Workflow
            | Route::Run => Methods::Get,
            Route::Runs => Methods::GetPost,
            Route::Cancel | Route::Continue | Route::Resume => Methods::Post,
        }
    }
}

impl Methods {
    /// HEAD is answered wherever GET is, as Starlette (and axum) do.
    fn allow(self, method: &Method) -> bool {
        let get = matches!(*method, Method::GET | Method::HEAD);
        match self {
            Methods::Get => get,
            Methods::GetPost => get || method == Method::POST,
            Methods::Post => method == Method::POST,
        }
    }

    fn allow_header(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Methods::Get => "GET, HEAD",
            Methods::GetPost => "GET, HEAD, POST",
            Methods::Post => "POST",
        })
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
        let Some(rest) = path.strip_prefix("/workflows/") else {
            return Some(at(match path {
                "/" => Route::Home,
                "/health" => Route::Health,
                "/ready" => Route::Ready,
                "/info" => Route::Info,
                "/config" => Route::Config,
                "/workflows" => Route::Workflows,
                _ => return None,
            }));
        };
        let base = path.len() - rest.len();
        let mut segments = segments(rest);
        let span = |segment: &str, start: usize| start..start + segment.len();
        let id = span(segments.next().filter(|s| !s.is_empty())?, base);
        let Some(runs) = segments.next() else {
            return Some(Matched {
                id,
                ..at(Route::Workflow)
            });
        };
        if runs != "runs" {
            return None;
        }
        let Some(run_segment) = segments.next() else {
            return Some(Matched {
                id,
                ..at(Route::Runs)
            });
        };
        if run_segment.is_empty() {
            return None;
        }
        let run_id = span(run_segment, id.end + "/runs/".len());
        let route = match segments.next() {
            None => Route::Run,
            Some("cancel") => Route::Cancel,
            Some("continue") => Route::Continue,
            Some("resume") => Route::Resume,
            Some(_) => return None,
        };
        if segments.next().is_some() {
            return None;
        }
        Some(Matched { route, id, run_id })
    }

    /// The workflow id, percent-decoded (invalid UTF-8 replaced, as Starlette
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
        let Some(matched) = Matched::of(request.uri().path()) else {
            return answered(GatewayError::RouteNotFound.into_response());
        };
        let methods = matched.route.methods();
        if !methods.allow(request.method()) {
            let mut response = GatewayError::MethodNotAllowed.into_response();
            response.headers_mut().insert(ALLOW, methods.allow_header());
            return answered(response);
        }
        let path = request.uri().path();
        let call = match matched.route {
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
            Route::Workflows => {
                return Box::pin(async move {
                    Ok(workflows::list(&state, request.headers())
                        .await
                        .into_response())
                });
            }
            Route::Workflow => {
                let id = matched.id(path).into_owned();
                return Box::pin(async move {
                    Ok(workflows::detail(&state, &id, request)
                        .await
                        .unwrap_or_else(IntoResponse::into_response))
                });
            }
            Route::Runs if request.method() == Method::POST => Call::NewRun,
            Route::Runs => Call::Other,
            // A look-up or a cancel goes to every replica when the run's
            // owner is unknown; continue goes to one.
            Route::Run | Route::Cancel => Call::Run {
                run_id: matched.run_id(path),
                fan_out: true,
            },
            Route::Continue => Call::Run {
                run_id: matched.run_id(path),
                fan_out: false,
            },
            Route::Resume => Call::Resume {
                run_id: matched.run_id(path),
            },
        };
        let upstream = match workflows::upstream(&state, &matched.id(path)) {
            Ok(upstream) => upstream,
            Err(error) => return answered(error.into_response()),
        };
        Box::pin(async move {
            Ok(workflows::forward_call(&state, &upstream, call, request)
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

    #[test]
    fn paths_match_their_routes() {
        assert_eq!(route("/"), Some(Route::Home));
        assert_eq!(route("/info"), Some(Route::Info));
        assert_eq!(route("/workflows"), Some(Route::Workflows));
        assert_eq!(route("/workflows/a"), Some(Route::Workflow));
        assert_eq!(route("/workflows/a/runs"), Some(Route::Runs));
        assert_eq!(route("/workflows/a/runs/r"), Some(Route::Run));
        assert_eq!(route("/workflows/a/runs/r/cancel"), Some(Route::Cancel));
        assert_eq!(route("/workflows/a/runs/r/continue"), Some(Route::Continue));
        assert_eq!(route("/workflows/a/runs/r/resume"), Some(Route::Resume));
    }

    #[test]
    fn empty_or_extra_segments_match_nothing() {
        for path in [
            "",
            "/nope",
            // Admin-listener routes (crate::admin), unknown here.
            "/metrics",
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
        assert!(Route::Runs.methods().allow(&Method::POST));
        assert!(!Route::Cancel.methods().allow(&Method::GET));
        assert!(!Route::Workflows.methods().allow(&Method::DELETE));
    }
}
