//! `GET /config`: an AgentOS `ConfigResponse` for the gateway itself, with the
//! agents, teams and workflows it exposes and the databases its hosts
//! report, so that `RemoteWorkflow.db` and the AgentOS web UI work through
//! the gateway.

use axum::Json;
use axum::http::{HeaderMap, header};
use serde_json::{Map, Value, json};

use super::entries::{fallback, refuses_caller, wants_fresh, workflow_summaries};
use crate::config::EntryKind;
use crate::state::SharedState;

/// What one host group's `/config` fetch gave.
enum HostConfig {
    Doc(std::sync::Arc<Value>),
    /// The host refused the caller: it adds nothing.
    Refused,
    /// The host is down and no copy is left.
    Down,
}

/// The per-domain database lists of a `ConfigResponse`.
const DB_DOMAINS: &[&str] = &[
    "session", "metrics", "memory", "learning", "evals", "traces",
];

/// The hosts' documents and the workflow list are fetched with the caller's
/// credential (see [`ConfigCache`](crate::upstream::cache::ConfigCache)): a
/// host that refuses the caller adds nothing. Agents and teams are the
/// summaries their host's `/config` lists (AgentOS's
/// `AgentSummaryResponse`, `TeamSummaryResponse`), with the gateway's ids.
pub async fn config(state: &SharedState, headers: &HeaderMap) -> Json<Value> {
    let refresh = wants_fresh(headers);
    let caller = headers.get(header::AUTHORIZATION);
    let upstreams = state.upstreams();
    let host_fetches = upstreams.groups().iter().map(|group| {
        // A group with a `forward_caller_token = false` entry sees its own
        // token (the group's `auth_token`), never the caller's.
        let caller = caller.filter(|_| group.forwards_caller_token);
        async move {
            match state.cache.host_config(group, refresh, caller).await {
                Ok(cached) => HostConfig::Doc(cached.doc),
                Err(error) if refuses_caller(&error) => {
                    tracing::debug!(host_group = %group.name(), %error, "host refused the caller");
                    HostConfig::Refused
                }
                Err(error) => {
                    state.note_upstream_error(group, &error);
                    tracing::warn!(host_group = %group.name(), %error, "host config unavailable");
                    HostConfig::Down
                }
            }
        }
    });
    let (by_group, workflows) = futures::future::join(
        futures::future::join_all(host_fetches),
        workflow_summaries(state, caller),
    )
    .await;
    let [agents, teams] =
        [EntryKind::Agent, EntryKind::Team].map(|kind| entry_summaries(state, kind, &by_group));
    let host_configs: Vec<_> = by_group
        .into_iter()
        .filter_map(|c| match c {
            HostConfig::Doc(doc) => Some(doc),
            HostConfig::Refused | HostConfig::Down => None,
        })
        .collect();

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
    out.insert("agents".into(), Value::Array(agents));
    out.insert("teams".into(), Value::Array(teams));
    out.insert("workflows".into(), Value::Array(workflows));
    out.insert("interfaces".into(), json!([]));
    out.insert("company".into(), Value::Null);
    Json(Value::Object(out))
}

/// The `kind` entries' summaries as their hosts' `/config` lists them (found
/// by the host's id, shown under the gateway's), in config order. A host
/// that refused the caller hides its entries; one that is down, or does not
/// list the entry, leaves the config file's id.
fn entry_summaries(state: &SharedState, kind: EntryKind, by_group: &[HostConfig]) -> Vec<Value> {
    let upstreams = state.upstreams();
    let groups = upstreams.groups();
    upstreams
        .of(kind)
        .filter_map(|upstream| {
            let at = groups
                .iter()
                .position(|g| std::sync::Arc::ptr_eq(g, &upstream.group))?;
            let listed = match by_group.get(at)? {
                HostConfig::Refused => return None,
                HostConfig::Down => None,
                HostConfig::Doc(doc) => {
                    doc.get(kind.plural())
                        .and_then(Value::as_array)
                        .and_then(|items| {
                            items.iter().find(|item| {
                                item.get("id").and_then(Value::as_str)
                                    == Some(upstream.config.remote_id.as_str())
                            })
                        })
                }
            };
            Some(match listed {
                Some(item) => {
                    let mut item = item.clone();
                    if let Some(object) = item.as_object_mut() {
                        object.insert("id".into(), upstream.config.id.clone().into());
                    }
                    item
                }
                None => fallback(upstream),
            })
        })
        .collect()
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
