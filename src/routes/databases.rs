//! The database routes of AgentOS 3.1.10 (sessions, memories, metrics,
//! evals, traces, learnings, knowledge, migrations): each call goes, path,
//! query and body unchanged, to the host group that owns the database it
//! names (see [`crate::upstream::databases`]).
//!
//! A call names its database in the `db_id` query parameter, as AgentOS
//! reads it; knowledge calls by `knowledge_id` or `db_id`, in the query, the
//! path (`/knowledge/{knowledge_id}/sources`) or, for `POST
//! /knowledge/search`, the JSON body; a migration in its path.

use axum::body::Body;
use axum::http::{HeaderValue, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::Methods;
use crate::config::EntryKind;
use crate::error::GatewayError;
use crate::proxy::{self, Call};
use crate::state::SharedState;
use crate::upstream::databases::{self, DbTarget};
use crate::upstream::{Upstream, Upstreams};
use std::sync::Arc;

/// How a route names its database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Names {
    /// `db_id` (and `table`) in the query.
    Query,
    /// `db_id` and `knowledge_id` in the query.
    KnowledgeQuery,
    /// `knowledge_id` as the second path segment, `db_id` in the query.
    KnowledgePath,
    /// `db_id` and `knowledge_id` in the JSON body.
    KnowledgeBody,
    /// `db_id` as the second path segment.
    MigratePath,
    /// Every database: answered here.
    MigrateAll,
    /// None: any host answers alike.
    Any,
}

const GET: Methods = Methods::GET;
const POST: Methods = Methods::POST;
const PATCH: Methods = Methods::PATCH;
const DELETE: Methods = Methods::DELETE;

/// Every database route, in AgentOS's registration order (the first whose
/// path and method match wins, as in Starlette).
const ROUTES: &[(&str, Methods, Names)] = &[
    ("/sessions", GET.or(POST).or(DELETE), Names::Query),
    (
        "/sessions/{session_id}",
        GET.or(PATCH).or(DELETE),
        Names::Query,
    ),
    ("/sessions/{session_id}/runs", GET, Names::Query),
    ("/sessions/{session_id}/run-previews", GET, Names::Query),
    ("/sessions/{session_id}/runs/{run_id}", GET, Names::Query),
    ("/sessions/{session_id}/rename", POST, Names::Query),
    (
        "/sessions/{session_id}/media/{storage_key}",
        GET,
        Names::Query,
    ),
    ("/memories", GET.or(POST).or(DELETE), Names::Query),
    (
        "/memories/{memory_id}",
        GET.or(PATCH).or(DELETE),
        Names::Query,
    ),
    ("/memory_topics", GET, Names::Query),
    ("/user_memory_stats", GET, Names::Query),
    ("/optimize-memories", POST, Names::Query),
    ("/learnings", GET.or(POST), Names::Query),
    ("/learnings/users", GET, Names::Query),
    ("/learnings/users/{user_id}", DELETE, Names::Query),
    (
        "/learnings/{learning_id}",
        GET.or(PATCH).or(DELETE),
        Names::Query,
    ),
    ("/eval-runs", GET.or(POST).or(DELETE), Names::Query),
    ("/eval-runs/{eval_run_id}", GET.or(PATCH), Names::Query),
    ("/metrics", GET, Names::Query),
    ("/metrics/refresh", POST, Names::Query),
    ("/metrics/refresh/status", GET, Names::Query),
    (
        "/knowledge/content",
        GET.or(POST).or(DELETE),
        Names::KnowledgeQuery,
    ),
    ("/knowledge/remote-content", POST, Names::KnowledgeQuery),
    (
        "/knowledge/content/{content_id}",
        GET.or(PATCH).or(DELETE),
        Names::KnowledgeQuery,
    ),
    (
        "/knowledge/content/{content_id}/refresh",
        POST,
        Names::KnowledgeQuery,
    ),
    (
        "/knowledge/content/{content_id}/status",
        GET,
        Names::KnowledgeQuery,
    ),
    ("/knowledge/search", POST, Names::KnowledgeBody),
    ("/knowledge/config", GET, Names::KnowledgeQuery),
    (
        "/knowledge/{knowledge_id}/sources",
        GET,
        Names::KnowledgePath,
    ),
    (
        "/knowledge/{knowledge_id}/sources/{source_id}/files",
        GET,
        Names::KnowledgePath,
    ),
    ("/traces", GET, Names::Query),
    ("/traces/filter-schema", GET, Names::Any),
    ("/traces/{trace_id}", GET, Names::Query),
    ("/trace_session_stats", GET, Names::Query),
    ("/traces/search", POST, Names::Query),
    ("/databases/all/migrate", POST, Names::MigrateAll),
    ("/databases/{db_id}/migrate", POST, Names::MigratePath),
];

/// How many database routes there are.
pub const COUNT: usize = ROUTES.len();

/// Largest `POST /knowledge/search` body read to find the database it
/// names (a query and a few filters).
const SEARCH_BODY_LIMIT: usize = 1024 * 1024;

/// The path template of route `index`.
pub fn template(index: usize) -> &'static str {
    ROUTES.get(index).map_or("", |route| route.0)
}

/// The methods route `index` answers.
pub(super) fn methods(index: usize) -> Methods {
    ROUTES.get(index).map_or(Methods::NONE, |route| route.1)
}

/// The first route whose template `path` matches (and, given a method, that
/// answers it).
pub(super) fn matching(path: &str, method: Option<&Method>) -> Option<usize> {
    ROUTES.iter().position(|(template, methods, _)| {
        fits(template, path) && method.is_none_or(|m| methods.allow(m))
    })
}

/// Whether `path` has `template`'s segments, each `{parameter}` one
/// non-empty segment.
fn fits(template: &str, path: &str) -> bool {
    let mut path = super::segments(path);
    let mut template = super::segments(template);
    loop {
        match (template.next(), path.next()) {
            (None, None) => return true,
            (Some(t), Some(p)) if t.starts_with('{') => {
                if p.is_empty() {
                    return false;
                }
            }
            (Some(t), Some(p)) if t == p => {}
            _ => return false,
        }
    }
}

/// The last value of `key` in `query`, as FastAPI reads a scalar query
/// parameter; AgentOS takes an empty one for none.
#[cfg(test)]
fn last_value(query: &str, key: &str) -> Option<String> {
    let [value] = last_values(query, [key]);
    value
}

/// [`last_value`] of each of `keys`, read in one pass over `query`.
fn last_values<const N: usize>(query: &str, keys: [&str; N]) -> [Option<String>; N] {
    let mut values: [Option<String>; N] = std::array::from_fn(|_| None);
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        if let Some(at) = keys.iter().position(|k| *k == key) {
            values[at] = Some(value.into_owned());
        }
    }
    values.map(|value| value.filter(|v| !v.is_empty()))
}

/// Path segment `n` (0: the collection), percent-decoded.
fn path_segment(path: &str, n: usize) -> Option<String> {
    let segment = super::segments(path.strip_prefix('/')?).nth(n)?;
    Some(super::decode(segment).into_owned())
}

/// Forwards the database call `request` (route `index`) to the host group
/// that owns the database it names.
pub async fn forward(
    state: &SharedState,
    index: usize,
    request: Request<Body>,
) -> Result<Response, GatewayError> {
    let Some(&(_, _, names)) = ROUTES.get(index) else {
        return Err(GatewayError::RouteNotFound);
    };
    let query = request.uri().query().unwrap_or("");
    let path = request.uri().path();
    let [in_query_db, in_query_knowledge, in_query_table] =
        last_values(query, ["db_id", "knowledge_id", "table"]);
    let (mut db_id, mut knowledge_id, mut table) = (None, None, false);
    match names {
        Names::Query => (db_id, table) = (in_query_db, in_query_table.is_some()),
        Names::KnowledgeQuery => (db_id, knowledge_id) = (in_query_db, in_query_knowledge),
        Names::KnowledgePath => (db_id, knowledge_id) = (in_query_db, path_segment(path, 1)),
        Names::MigratePath => db_id = path_segment(path, 1),
        Names::KnowledgeBody | Names::Any => {}
        Names::MigrateAll => return Ok(migrate_all(state).await),
    }
    let request = if names == Names::KnowledgeBody {
        let (request, in_body_db, in_body_knowledge) = read_search_body(state, request).await?;
        (db_id, knowledge_id) = (in_body_db, in_body_knowledge);
        request
    } else {
        request
    };
    let target = match names {
        Names::Query | Names::MigratePath => DbTarget::Db {
            db_id: db_id.as_deref(),
            table,
        },
        Names::KnowledgeQuery | Names::KnowledgePath | Names::KnowledgeBody => {
            DbTarget::Knowledge {
                db_id: db_id.as_deref(),
                knowledge_id: knowledge_id.as_deref(),
            }
        }
        Names::MigrateAll | Names::Any => DbTarget::Any,
    };
    let upstreams = state.upstreams();
    let caller = request.headers().get(header::AUTHORIZATION);
    let upstream = databases::route(state, &upstreams, target, caller).await?;
    let path_and_query = match component_on_host(&upstreams, &upstream, index, request.uri()) {
        Some(rewritten) => rewritten,
        None => request
            .uri()
            .path_and_query()
            .map_or_else(String::new, |p| p.as_str().to_owned()),
    };
    proxy::forward(state, &upstream, Call::Other, &path_and_query, request)
        .await
        .map_err(|error| error.for_entry(EntryKind::Database, &upstream.config.id))
}

/// `GET /sessions?type=agent&component_id=<gateway id>` (the AgentOS web
/// UI's sessions list) asks the host for the sessions of the entry's id on
/// the host, where the gateway exposes it under another: the path and
/// query with `component_id` rewritten. `None` when nothing is to change.
fn component_on_host(
    upstreams: &Upstreams,
    database: &Upstream,
    index: usize,
    uri: &http::Uri,
) -> Option<String> {
    if ROUTES.get(index)?.0 != "/sessions" {
        return None;
    }
    let query = uri.query()?;
    let [component, kind] = last_values(query, ["component_id", "type"]);
    let component = component?;
    let kind = match kind.as_deref() {
        None | Some("agent") => EntryKind::Agent,
        Some("team") => EntryKind::Team,
        Some("workflow") => EntryKind::Workflow,
        Some(_) => return None,
    };
    let entry = upstreams.get(kind, &component)?;
    if entry.config.remote_id == entry.config.id || !Arc::ptr_eq(&entry.group, &database.group) {
        return None;
    }
    let mut rewritten = url::form_urlencoded::Serializer::new(String::new());
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let value = if key == "component_id" {
            entry.config.remote_id.as_str().into()
        } else {
            value
        };
        rewritten.append_pair(&key, &value);
    }
    Some(format!("{}?{}", uri.path(), rewritten.finish()))
}

/// Reads `POST /knowledge/search`'s body for the `db_id` and
/// `knowledge_id` it names, and gives the request back with the same bytes.
/// A body that is not a JSON object names nothing: the host answers it.
async fn read_search_body(
    state: &SharedState,
    request: Request<Body>,
) -> Result<(Request<Body>, Option<String>, Option<String>), GatewayError> {
    let (parts, body) = request.into_parts();
    let bytes = proxy::read_caller_body(state, body, SEARCH_BODY_LIMIT).await?;
    let named = |doc: &serde_json::Value, key: &str| {
        doc.get(key)
            .and_then(serde_json::Value::as_str)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let (db_id, knowledge_id) = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(doc) => (named(&doc, "db_id"), named(&doc, "knowledge_id")),
        Err(_) => (None, None),
    };
    Ok((
        Request::from_parts(parts, Body::from(bytes)),
        db_id,
        knowledge_id,
    ))
}

/// `POST /databases/all/migrate`: what AgentOS answers when every database
/// it knows is remote (agno's own gateway answers the same). Each database
/// is migrated on its own host, through `/databases/{db_id}/migrate`.
async fn migrate_all(state: &SharedState) -> Response {
    let upstreams = state.upstreams();
    let known = databases::refresh(state, &upstreams).await;
    let skipped = known.ids();
    if !skipped.is_empty() {
        tracing::info!(
            databases = %skipped.join(", "),
            "migrate-all skips remote databases; migrate each through /databases/{{db_id}}/migrate"
        );
    }
    let mut body = json!({"message": "All databases migrated successfully to latest version"});
    if !skipped.is_empty() {
        body["skipped"] = json!(skipped);
    }
    let mut response = (StatusCode::OK, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_match_as_starlette_does() {
        let at = |path: &str, method: &Method| matching(path, Some(method)).map(template);
        assert_eq!(at("/sessions", &Method::GET), Some("/sessions"));
        assert_eq!(
            at("/sessions/s1/runs/r1", &Method::GET),
            Some("/sessions/{session_id}/runs/{run_id}")
        );
        // A fixed segment wins over a parameter registered after it...
        assert_eq!(
            at("/learnings/users", &Method::GET),
            Some("/learnings/users")
        );
        assert_eq!(
            at("/traces/filter-schema", &Method::GET),
            Some("/traces/filter-schema")
        );
        // ...unless it does not answer the method.
        assert_eq!(
            at("/learnings/users", &Method::PATCH),
            Some("/learnings/{learning_id}")
        );
        assert_eq!(
            at("/databases/all/migrate", &Method::POST),
            Some("/databases/all/migrate")
        );
        assert_eq!(
            at("/databases/d1/migrate", &Method::POST),
            Some("/databases/{db_id}/migrate")
        );
        assert_eq!(at("/sessions", &Method::PUT), None);
        for path in [
            "/sessions/",
            "/sessions//runs",
            "/memories/a/b",
            "/knowledge",
            "/metric",
        ] {
            assert_eq!(matching(path, None), None, "{path}");
        }
    }

    #[test]
    fn the_last_value_is_read() {
        assert_eq!(last_value("db_id=a&db_id=b", "db_id").as_deref(), Some("b"));
        assert_eq!(last_value("db_id=a&db_id=", "db_id"), None);
        assert_eq!(last_value("db_id=", "db_id"), None);
        assert_eq!(
            last_value("x=1&db_id=my%20db", "db_id").as_deref(),
            Some("my db")
        );
        assert_eq!(last_value("db_idx=1", "db_id"), None);
    }

    #[test]
    fn path_parameters_are_decoded() {
        assert_eq!(
            path_segment("/databases/a%2Fb/migrate", 1).as_deref(),
            Some("a/b")
        );
        assert_eq!(
            path_segment("/knowledge/k1/sources", 1).as_deref(),
            Some("k1")
        );
    }
}
