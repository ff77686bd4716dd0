//! The `/agents`, `/teams` and `/workflows` resources, one implementation
//! for the three: the list and detail documents (served from the metadata
//! cache) and every per-run call, forwarded to the owning host.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use crate::client::ClientError;
use crate::config::EntryKind;
use crate::error::{GatewayError, UpstreamError};
use crate::proxy::{self, Call};
use crate::state::SharedState;
use crate::upstream::Upstream;

/// Response header that says whether a metadata answer came from the cache.
pub const CACHE_HEADER: &str = "x-gateway-cache";

/// The fields of AgentOS's `WorkflowSummaryResponse`.
const SUMMARY_FIELDS: &[&str] = &[
    "id",
    "name",
    "description",
    "db_id",
    "is_factory",
    "factory_input_schema",
    "is_component",
    "current_version",
    "stage",
    "sandboxed",
];

/// `GET /agents`, `GET /teams`, `GET /workflows`: every configured entry of
/// `kind` the caller may see, in config order, each fetched with the
/// caller's credential (see
/// [`ConfigCache`](crate::upstream::cache::ConfigCache)). AgentOS lists
/// agents and teams as whole documents (`AgentResponse`) and workflows as
/// summaries. An entry whose host refuses the caller (401/403) is left out,
/// as AgentOS leaves out what a caller may not see. A host that is down
/// never fails the list: its entries come from the caller's last good copy
/// or, failing that, from the config file alone.
pub async fn list(state: &SharedState, kind: EntryKind, headers: &HeaderMap) -> Json<Vec<Value>> {
    let caller = headers.get(header::AUTHORIZATION);
    let upstreams = state.upstreams();
    let fetches = upstreams
        .of(kind)
        .map(|upstream| document_of(state, upstream, caller));
    let docs = futures::future::join_all(fetches)
        .await
        .into_iter()
        .flatten();
    Json(match kind {
        EntryKind::Workflow => docs.map(|doc| summary(&doc)).collect(),
        _ => docs.map(|doc| Value::clone(&doc)).collect(),
    })
}

/// The workflow summaries `caller` may see, fetched concurrently (for
/// `/config`).
pub async fn workflow_summaries(state: &SharedState, caller: Option<&HeaderValue>) -> Vec<Value> {
    let upstreams = state.upstreams();
    let fetches = upstreams
        .of(EntryKind::Workflow)
        .map(|upstream| document_of(state, upstream, caller));
    futures::future::join_all(fetches)
        .await
        .into_iter()
        .flatten()
        .map(|doc| summary(&doc))
        .collect()
}

/// The entry's document as `caller` may see it; `None` when the host
/// refuses the caller; the config file's id alone when the host is down.
async fn document_of(
    state: &SharedState,
    upstream: &Upstream,
    caller: Option<&HeaderValue>,
) -> Option<Arc<Value>> {
    match state.cache.entry(upstream, false, caller).await {
        Ok(cached) => Some(cached.doc),
        Err(error) if refuses_caller(&error) => {
            tracing::debug!(kind = %upstream.kind(), id = %upstream.config.id, %error, "host refused the caller; not listed");
            None
        }
        Err(error) => {
            state.note_upstream_error(&upstream.group, &error);
            tracing::warn!(
                kind = %upstream.kind(),
                id = %upstream.config.id,
                host_group = %upstream.group.name(),
                %error,
                "metadata unavailable; listing it from the config file"
            );
            Some(Arc::new(fallback(upstream)))
        }
    }
}

/// What the gateway can say of an entry whose host is down and of which it
/// has no copy: its id, as its name too, and the defaults AgentOS's
/// summaries have.
pub(super) fn fallback(upstream: &Upstream) -> Value {
    let mut out = Map::new();
    out.insert("id".into(), upstream.config.id.clone().into());
    out.insert("name".into(), upstream.config.id.clone().into());
    if upstream.kind() == EntryKind::Workflow {
        out.insert("is_factory".into(), false.into());
        out.insert("is_component".into(), false.into());
    }
    out.insert("sandboxed".into(), false.into());
    Value::Object(out)
}

/// Whether the host answered 401 or 403: the caller may not see this, which
/// is an everyday answer rather than a host failure worth a warning.
pub(super) fn refuses_caller(error: &UpstreamError) -> bool {
    matches!(
        error,
        UpstreamError::Host(ClientError::Status { status, .. })
            if matches!(*status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
    )
}

/// A `WorkflowSummaryResponse` cut from a `WorkflowResponse`, nulls omitted as
/// AgentOS omits them.
fn summary(doc: &Value) -> Value {
    let mut out = Map::new();
    for &field in SUMMARY_FIELDS {
        if let Some(value) = doc.get(field).filter(|v| !v.is_null()) {
            out.insert(field.into(), value.clone());
        }
    }
    Value::Object(out)
}

/// `GET /agents/{id}`, `/teams/{id}`, `/workflows/{id}`: the host's
/// document with `id` rewritten to the gateway id, from the cache.
/// `?refresh=true` or `Cache-Control: no-cache` forces a fresh fetch;
/// `?version=N` is passed through uncached.
pub async fn detail(
    state: &SharedState,
    kind: EntryKind,
    id: &str,
    request: Request<Body>,
) -> Result<Response, GatewayError> {
    let upstream = self::upstream(state, kind, id)?;
    let query = request.uri().query().unwrap_or("");
    let mut refresh = wants_fresh(request.headers());
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "version" => return forward_call(state, &upstream, Call::Other, request).await,
            "refresh" => refresh |= matches!(&*value, "true" | "1" | "yes"),
            _ => {}
        }
    }
    let caller = request.headers().get(header::AUTHORIZATION);
    let cached = state
        .cache
        .entry(&upstream, refresh, caller)
        .await
        .map_err(|error| {
            state.note_upstream_error(&upstream.group, &error);
            GatewayError::from(error).for_entry(kind, &upstream.config.id)
        })?;
    let mut response = Json(&*cached.doc).into_response();
    response.headers_mut().insert(
        CACHE_HEADER,
        HeaderValue::from_static(cached.freshness.as_str()),
    );
    Ok(response)
}

/// Every per-run or per-session call (`/agents/{id}/runs...`;
/// `crate::routes` says which `Call` each route is): the path after the
/// gateway id, the query and the body go to the host unchanged under the
/// host's id.
pub async fn forward_call(
    state: &SharedState,
    upstream: &Arc<Upstream>,
    call: Call,
    request: Request<Body>,
) -> Result<Response, GatewayError> {
    let path_and_query = upstream_path(upstream, request.uri());
    proxy::forward(state, upstream, call, &path_and_query, request)
        .await
        // Named by its entry; the host's address and the cause reach
        // the access line through the response (`error::FailureCause`).
        .map_err(|error| error.for_entry(upstream.kind(), &upstream.config.id))
}

/// The configured entry of `kind` with gateway id `id` in the snapshot in
/// service; AgentOS's 404 ("Agent not found", ...) when there is none.
pub fn upstream(
    state: &SharedState,
    kind: EntryKind,
    id: &str,
) -> Result<Arc<Upstream>, GatewayError> {
    state
        .upstreams()
        .get(kind, id)
        .cloned()
        .ok_or(GatewayError::NotFound(kind))
}

/// `/{kind}s/{gateway id}/rest?query` → `{prefix}/rest?query`, keeping the
/// caller's percent-encoding of `rest` byte for byte.
fn upstream_path(upstream: &Upstream, uri: &http::Uri) -> String {
    let prefix = &upstream.upstream_prefix;
    let path = uri.path();
    let after_collection = path
        .strip_prefix('/')
        .and_then(|p| p.strip_prefix(upstream.kind().plural()))
        .and_then(|p| p.strip_prefix('/'))
        .unwrap_or("");
    let rest = after_collection
        .bytes()
        .position(|b| b == b'/')
        .map_or("", |i| &after_collection[i..]);
    let mut out = String::with_capacity(prefix.len() + rest.len() + 64);
    out.push_str(prefix);
    out.push_str(rest);
    if let Some(query) = uri.query() {
        out.push('?');
        out.push_str(query);
    }
    out
}

pub fn wants_fresh(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|d| d.trim().eq_ignore_ascii_case("no-cache"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_rewritten_to_the_host_id() {
        let config = crate::config::Config::parse(
            std::path::Path::new("t.toml"),
            "[[workflows]]\nid = \"gw-id\"\nworkflow_id = \"host-id\"\nbase_url = \"http://h\"\n\
             [[agents]]\nid = \"gw-id\"\nagent_id = \"a\"\nbase_url = \"http://h\"\n",
            &|_| None,
        )
        .unwrap();
        let ups = crate::upstream::Upstreams::new(&config).unwrap();
        let workflow = ups.get(EntryKind::Workflow, "gw-id").unwrap();
        let uri: http::Uri = "/workflows/gw-id/runs/r%2F1/cancel?session_id=s"
            .parse()
            .unwrap();
        assert_eq!(
            upstream_path(workflow, &uri),
            "/workflows/host-id/runs/r%2F1/cancel?session_id=s"
        );
        let agent = ups.get(EntryKind::Agent, "gw-id").unwrap();
        let uri: http::Uri = "/agents/gw-id/sessions/s/fork".parse().unwrap();
        assert_eq!(upstream_path(agent, &uri), "/agents/a/sessions/s/fork");
    }

    #[test]
    fn summary_keeps_summary_fields_and_drops_nulls() {
        let doc = serde_json::json!({"id":"a","name":"A","description":null,"steps":[],"db_id":"d","sandboxed":false});
        assert_eq!(
            summary(&doc),
            serde_json::json!({"id":"a","name":"A","db_id":"d","sandboxed":false})
        );
    }
}
