//! `GET /gateway/upstreams` on the admin listener: the gateway's own view of
//! its hosts, for operators: every host group, each replica's health, last
//! error, last check and requests in flight, and which agents, teams,
//! workflows and databases each group serves (databases as last learnt from
//! the hosts; see [`crate::upstream::databases`]), and any database two
//! groups report. Host URLs and their errors are why it is not
//! on the public port.

use axum::Json;
use serde_json::{Value, json};

use crate::config::{EntryKind, HostSource};
use crate::state::SharedState;

pub fn status(state: &SharedState) -> Json<Value> {
    let upstreams = state.upstreams();
    let databases = upstreams.databases.current();
    let groups: Vec<Value> = upstreams
        .groups()
        .iter()
        .map(|group| {
            let source = match &group.config.source {
                HostSource::Static(_) => json!({ "static": true }),
                HostSource::Dns { url, refresh } => {
                    json!({ "dns": url.as_str(), "refresh_seconds": refresh.as_secs_f64() })
                }
            };
            let of_kind = |kind| -> Vec<&str> {
                upstreams
                    .of(kind)
                    .filter(|w| w.group.name() == group.name())
                    .map(|w| w.config.id.as_str())
                    .collect()
            };
            let replicas: Vec<_> = group.replicas.all().iter().map(|r| r.status()).collect();
            json!({
                "name": group.name(),
                "source": source,
                "health_check_interval_seconds": group.config.health_check_interval.map(|d| d.as_secs_f64()),
                "agents": of_kind(EntryKind::Agent),
                "teams": of_kind(EntryKind::Team),
                "workflows": of_kind(EntryKind::Workflow),
                "databases": databases.of_group(group),
                "replicas": replicas,
            })
        })
        .collect();
    let conflicts: Vec<Value> = databases
        .conflicts()
        .iter()
        .map(|c| json!({ "db_id": c.db_id, "host_groups": c.groups }))
        .collect();
    Json(json!({ "host_groups": groups, "database_conflicts": conflicts }))
}
