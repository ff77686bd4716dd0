//! The `/workflows` resource: the list and detail documents (served from the
//! metadata cache) and every per-run call, forwarded to the owning host.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use crate::client::ClientError;
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

/// `GET /workflows`: every configured workflow the caller may see, in config
/// order, each fetched with the caller's credential (see
/// [`ConfigCache`](crate::upstream::cache::ConfigCache)). A workflow whose host
/// refuses the caller (401/403) is left out, as AgentOS leaves out what a
/// caller may not see. A host that is down never fails the list: its entries
/// come from the caller's last good copy or, failing that, from the config
/// file alone.
pub async fn list(state: &SharedState, headers: &HeaderMap) -> Json<Vec<Value>> {
    Json(summaries(state, headers.get(header::AUTHORIZATION)).await)
}

/// The summaries of the workflows `caller` may see, fetched concurrently.
pub async fn summaries(state: &SharedState, caller: Option<&HeaderValue>) -> Vec<Value> {
    let upstreams = state.upstreams();
    let fetches = upstreams
        .workflows()
        .iter()
        .map(|upstream| summary_of(state, upstream, caller));
    futures::future::join_all(fetches)
        .await
        .into_iter()
        .flatten()
        .collect()
}

async fn summary_of(
    state: &SharedState,
    upstream: &Upstream,
    caller: Option<&HeaderValue>,
) -> Option<Value> {
    match state.cache.workflow(upstream, false, caller).await {
        Ok(cached) => Some(summary(&cached.doc)),
        Err(error) if refuses_caller(&error) => {
            tracing::debug!(workflow = %upstream.config.id, %error, "host refused the caller; not listed");
            None
        }
        Err(error) => {
            state.note_upstream_error(&upstream.group, &error);
            tracing::warn!(
                workflow = %upstream.config.id,
                host_group = %upstream.group.name(),
                %error,
                "workflow metadata unavailable; listing it from the config file"
            );
            let mut fallback = Map::new();
            fallback.insert("id".into(), upstream.config.id.clone().into());
            fallback.insert("name".into(), upstream.config.id.clone().into());
            fallback.insert("is_factory".into(), false.into());
            fallback.insert("is_component".into(), false.into());
            fallback.insert("sandboxed".into(), false.into());
            Some(Value::Object(fallback))
        }
    }
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

/// `GET /workflows/{id}`: the host's document with `id` rewritten to the
/// gateway id, from the cache. `?refresh=true` or `Cache-Control: no-cache`
/// forces a fresh fetch; `?version=N` is passed through uncached.
pub async fn detail(
    state: &SharedState,
    id: &str,
    request: Request<Body>,
) -> Result<Response, GatewayError> {
    let upstream = self::upstream(state, id)?;
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
        .workflow(&upstream, refresh, caller)
        .await
        .map_err(|error| {
            state.note_upstream_error(&upstream.group, &error);
            GatewayError::from(error).for_workflow(&upstream.config.id)
        })?;
    let mut response = Json(&*cached.doc).into_response();
    response.headers_mut().insert(
        CACHE_HEADER,
        HeaderValue::from_static(cached.freshness.as_str()),
    );
    Ok(response)
}

/// Every per-run call (`/workflows/{id}/runs...`; `crate::routes` says
/// which `Call` each route is): the path after the gateway id, the query and
/// the body go to the host unchanged under the host's workflow id.
pub async fn forward_call(
    state: &SharedState,
    upstream: &Arc<Upstream>,
    call: Call,
    request: Request<Body>,
) -> Result<Response, GatewayError> {
    let path_and_query = upstream_path(&upstream.upstream_prefix, request.uri());
    proxy::forward(state, upstream, call, &path_and_query, request)
        .await
        // Named by its workflow; the host's address and the cause reach
        // the access line through the response (`error::FailureCause`).
        .map_err(|error| error.for_workflow(&upstream.config.id))
}

/// The configured workflow with gateway id `id`.
pub fn upstream(state: &SharedState, id: &str) -> Result<Arc<Upstream>, GatewayError> {
    state
        .upstreams()
        .get(id)
        .cloned()
        .ok_or(GatewayError::WorkflowNotFound)
}

/// `/workflows/{gateway id}/rest?query` → `{prefix}/rest?query`, keeping the
/// caller's percent-encoding of `rest` byte for byte.
fn upstream_path(prefix: &str, uri: &http::Uri) -> String {
    let path = uri.path();
    let after_collection = path.strip_prefix("/workflows/").unwrap_or("");
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
    fn paths_are_rewritten_to_the_host_workflow_id() {
        let uri: http::Uri = "/workflows/gw-id/runs/r%2F1/cancel?session_id=s"
            .parse()
            .unwrap();
        assert_eq!(
            upstream_path("/workflows/host-id", &uri),
            "/workflows/host-id/runs/r%2F1/cancel?session_id=s"
        );
        let uri: http::Uri = "/workflows/gw-id/runs".parse().unwrap();
        assert_eq!(upstream_path("/workflows/h", &uri), "/workflows/h/runs");
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
