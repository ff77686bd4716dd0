//! `GET /config`: an AgentOS `ConfigResponse` for the gateway itself, with the
//! workflows it exposes and the databases its hosts report, so that
//! `RemoteWorkflow.db` and the AgentOS web UI work through the gateway.

use axum::Json;
use axum::http::{HeaderMap, header};
use serde_json::{Map, Value, json};

use super::workflows::{refuses_caller, summaries, wants_fresh};
use crate::state::SharedState;

/// The per-domain database lists of a `ConfigResponse`.
const DB_DOMAINS: &[&str] = &[
    "session", "metrics", "memory", "learning", "evals", "traces",
];

/// The hosts' documents and the workflow list are fetched with the caller's
/// credential (see [`ConfigCache`](crate::upstream::cache::ConfigCache)): a
/// host that refuses the caller adds nothing.
pub async fn config(state: &SharedState, headers: &HeaderMap) -> Json<Value> {
    let refresh = wants_fresh(headers);
    let caller = headers.get(header::AUTHORIZATION);
    let upstreams = state.upstreams();
    let host_fetches = upstreams.groups().iter().map(|group| {
        // A group with a `forward_caller_token = false` workflow sees its
        // own token (the group's `auth_token`), never the caller's.
        let withheld = upstreams
            .workflows()
            .iter()
            .any(|w| !w.config.forward_caller_token && w.group.name() == group.name());
        let caller = caller.filter(|_| !withheld);
        async move {
            match state.cache.host_config(group, refresh, caller).await {
                Ok(cached) => Some(cached.doc),
                Err(error) if refuses_caller(&error) => {
                    tracing::debug!(host_group = %group.name(), %error, "host refused the caller");
                    None
                }
                Err(error) => {
                    state.note_upstream_error(group, &error);
                    tracing::warn!(host_group = %group.name(), %error, "host config unavailable");
                    None
                }
            }
        }
    });
    let (host_configs, workflows) = futures::future::join(
        futures::future::join_all(host_fetches),
        summaries(state, caller),
    )
    .await;
    let host_configs: Vec<_> = host_configs.into_iter().flatten().collect();

    let mut databases: Vec<Value> = Vec::new();
    for cfg in &host_configs {
        for db in cfg
            .get("databases")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if !databases.contains(db) {
                databases.push(db.clone());
            }
        }
    }

    let mut out = Map::new();
    out.insert("os_id".into(), state.server.os_id.clone().into());
    if let Some(name) = &state.server.name {
        out.insert("name".into(), name.clone().into());
    }
    if let Some(description) = &state.server.description {
        out.insert("description".into(), description.clone().into());
    }
    out.insert("available_models".into(), json!([]));
    out.insert("databases".into(), Value::Array(databases));
    for &domain in DB_DOMAINS {
        out.insert(
            domain.into(),
            json!({ "dbs": merged(&host_configs, domain, "dbs") }),
        );
    }
    out.insert(
        "knowledge".into(),
        json!({
            "dbs": merged(&host_configs, "knowledge", "dbs"),
            "knowledge_instances": merged(&host_configs, "knowledge", "knowledge_instances"),
        }),
    );
    out.insert("filesystem".into(), json!({ "namespaces": [] }));
    out.insert(
        "queue".into(),
        json!({ "durable": false, "queue_per_session": false }),
    );
    out.insert("agents".into(), json!([]));
    out.insert("teams".into(), json!([]));
    out.insert("workflows".into(), Value::Array(workflows));
    out.insert("interfaces".into(), json!([]));
    out.insert("company".into(), Value::Null);
    Json(Value::Object(out))
}

/// Concatenates `cfg[domain][list]` across hosts, dropping exact duplicates
/// (hosts sharing one database report the same entry).
fn merged(host_configs: &[std::sync::Arc<Value>], domain: &str, list: &str) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    for cfg in host_configs {
        let items = cfg
            .get(domain)
            .and_then(|d| d.get(list))
            .and_then(Value::as_array);
        for item in items.into_iter().flatten() {
            if !out.contains(item) {
                out.push(item.clone());
            }
        }
    }
    out
}
