//! Which host group owns which database, for the routes that name one by
//! `db_id` (`/sessions`, `/memories`, `/metrics`, `/eval-runs`, `/traces`,
//! `/learnings`, `/knowledge`, `/databases/{db_id}/migrate`).
//!
//! The directory is learnt from each host group's `GET /config` (its
//! `databases` and its knowledge instances), fetched through the metadata
//! cache with the gateway's own credential, so a dead host's last good copy
//! keeps its databases reachable by name. `[[dbs]]` entries pin a database
//! to a group whatever the hosts say. A database two groups report, and no
//! pin settles, is ambiguous: requests naming it are refused, and
//! [`Databases::conflicts`] names the groups (the start-up check exits on
//! it).
//!
//! A database reached this way is an [`Upstream`] of kind
//! [`EntryKind::Database`] whose path prefix is empty: the caller's path and
//! query go to the host unchanged, `db_id` included.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::http::{HeaderValue, StatusCode};
use serde_json::Value;

use super::{HostGroup, Upstream, Upstreams};
use crate::client::ClientError;
use crate::config::{EntryConfig, EntryDefaults, EntryKind};
use crate::error::UpstreamError;
use crate::observability::metrics::RouteMetricsCache;
use crate::state::SharedState;

/// Most databases (and knowledge instances) one group may report: the ids
/// come from hosts, and each becomes a map entry.
const MAX_PER_GROUP: usize = 1024;
/// A lookup of an id the directory does not know refreshes it at most this
/// often, so unknown ids cannot make the gateway rebuild it per request.
const MIN_REFRESH: Duration = Duration::from_secs(1);

/// What a database route names, read from its query, path or body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbTarget<'a> {
    /// A sessions, memories, metrics, evals, traces or learnings call:
    /// `db_id` (or none), and whether a `table` was given.
    Db { db_id: Option<&'a str>, table: bool },
    /// A knowledge call: `db_id` and `knowledge_id`, either or none.
    Knowledge {
        db_id: Option<&'a str>,
        knowledge_id: Option<&'a str>,
    },
    /// A call any host answers alike (`GET /traces/filter-schema`).
    Any,
}

/// Why a database route could not be routed: AgentOS's own answers where
/// it has one (`agno/os/utils.py` `get_db`, `get_knowledge_instance`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DbLookupError {
    #[error("No database found with id '{0}'")]
    UnknownDb(String),
    #[error("The db_id query parameter is required when using multiple databases")]
    DbIdRequired,
    #[error("The db_id query parameter is required when passing a table")]
    TableWithoutDbId,
    #[error("No database is configured on this AgentOS")]
    NoDatabase,
    #[error("Knowledge base '{0}' not found")]
    UnknownKnowledge(String),
    #[error("Knowledge instance with db_id '{0}' not found")]
    UnknownKnowledgeDb(String),
    /// Python's `str()` of the id list, as AgentOS formats it.
    #[error(
        "db_id or knowledge_id query parameter is required when using multiple knowledge bases. Available IDs: [{}]",
        .0.iter().map(|id| format!("'{id}'")).collect::<Vec<_>>().join(", ")
    )]
    KnowledgeIdRequired(Vec<String>),
    #[error(
        "No knowledge base is available on this AgentOS. A Knowledge is served over /knowledge only once it has a contents_db: pass Knowledge(..., contents_db=<db>) to AgentOS(knowledge=[...]), or to an agent or team."
    )]
    NoKnowledge,
    /// Beyond AgentOS: two hosts report the database and no `[[dbs]]`
    /// entry says which one owns it.
    #[error("Database '{0}' is reported by more than one host")]
    Ambiguous(String),
    /// Beyond AgentOS: the id is unknown while a host could not be asked,
    /// so it may be that host's.
    #[error("Database '{0}' could not be looked up: a host is unreachable")]
    Unreachable(String),
}

impl DbLookupError {
    pub fn status(&self) -> StatusCode {
        match self {
            DbLookupError::UnknownDb(_)
            | DbLookupError::UnknownKnowledge(_)
            | DbLookupError::UnknownKnowledgeDb(_) => StatusCode::NOT_FOUND,
            DbLookupError::DbIdRequired
            | DbLookupError::TableWithoutDbId
            | DbLookupError::NoDatabase
            | DbLookupError::KnowledgeIdRequired(_) => StatusCode::BAD_REQUEST,
            DbLookupError::NoKnowledge | DbLookupError::Unreachable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            DbLookupError::Ambiguous(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// A database two host groups report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub db_id: String,
    /// The groups, in config order.
    pub groups: Vec<String>,
}

/// The directory: every known database and knowledge instance, and where it
/// lives. Rebuilt whole from the hosts' documents; read without locks.
#[derive(Debug, Default)]
pub struct Databases {
    /// Database id → its upstream; pinned ones first, then in the order the
    /// groups and their documents list them.
    by_id: HashMap<String, Arc<Upstream>>,
    /// Database ids in that order (for "the only one").
    ids: Vec<String>,
    /// Knowledge instance id → the upstream of its contents database.
    knowledge: HashMap<String, Arc<Upstream>>,
    /// Knowledge instance ids in order (for AgentOS's "Available IDs").
    knowledge_ids: Vec<String>,
    conflicts: Vec<Conflict>,
    /// Groups whose `/config` could not be had, and of which no copy is
    /// known.
    unreachable: usize,
    /// When this was built; `None` for the empty directory a snapshot
    /// starts with.
    built: Option<Instant>,
}

impl Databases {
    /// Databases reported by more than one group and pinned by none.
    pub fn conflicts(&self) -> &[Conflict] {
        &self.conflicts
    }

    /// Every known database id, pinned ones first.
    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    /// The ids of the databases `group` owns.
    pub fn of_group(&self, group: &HostGroup) -> Vec<&str> {
        self.ids
            .iter()
            .filter(|id| {
                self.by_id
                    .get(*id)
                    .is_some_and(|u| std::ptr::eq(Arc::as_ptr(&u.group), group))
            })
            .map(String::as_str)
            .collect()
    }

    /// Where a call naming `target` goes.
    pub fn route(&self, target: DbTarget<'_>) -> Result<Arc<Upstream>, DbLookupError> {
        match target {
            DbTarget::Db {
                db_id: Some(id), ..
            } => self.database(id),
            DbTarget::Db { db_id: None, table } => {
                if table {
                    return Err(DbLookupError::TableWithoutDbId);
                }
                match self.ids.as_slice() {
                    [] => Err(DbLookupError::NoDatabase),
                    [only] => self.database(only),
                    _ => Err(DbLookupError::DbIdRequired),
                }
            }
            DbTarget::Knowledge {
                knowledge_id: Some(id),
                ..
            } => self
                .knowledge
                .get(id)
                .cloned()
                .ok_or_else(|| DbLookupError::UnknownKnowledge(id.to_owned())),
            DbTarget::Knowledge {
                db_id: Some(id), ..
            } => self.database(id).map_err(|error| match error {
                DbLookupError::UnknownDb(id) => DbLookupError::UnknownKnowledgeDb(id),
                other => other,
            }),
            DbTarget::Knowledge { .. } => {
                let mut owners = self
                    .knowledge_ids
                    .iter()
                    .filter_map(|id| self.knowledge.get(id));
                let Some(first) = owners.next() else {
                    return Err(DbLookupError::NoKnowledge);
                };
                // One host holding every instance resolves the call itself.
                if owners.all(|other| Arc::ptr_eq(&other.group, &first.group)) {
                    Ok(first.clone())
                } else {
                    Err(DbLookupError::KnowledgeIdRequired(
                        self.knowledge_ids.clone(),
                    ))
                }
            }
            DbTarget::Any => self
                .ids
                .first()
                .and_then(|id| self.by_id.get(id))
                .cloned()
                .ok_or(DbLookupError::NoDatabase),
        }
    }

    fn database(&self, id: &str) -> Result<Arc<Upstream>, DbLookupError> {
        if let Some(upstream) = self.by_id.get(id) {
            return Ok(upstream.clone());
        }
        if self.conflicts.iter().any(|c| c.db_id == id) {
            Err(DbLookupError::Ambiguous(id.to_owned()))
        } else if self.unreachable > 0 {
            Err(DbLookupError::Unreachable(id.to_owned()))
        } else {
            Err(DbLookupError::UnknownDb(id.to_owned()))
        }
    }

    /// Whether the lookup of `target` would be worth a refresh first: the
    /// directory is older than `ttl`, or it does not know an id the call
    /// names and was not built within [`MIN_REFRESH`].
    fn stale_for(&self, target: DbTarget<'_>, ttl: Duration) -> bool {
        let Some(built) = self.built else {
            return true;
        };
        let age = built.elapsed();
        if age >= ttl {
            return true;
        }
        let unknown = match target {
            DbTarget::Db {
                db_id: Some(id), ..
            }
            | DbTarget::Knowledge {
                db_id: Some(id),
                knowledge_id: None,
            } => !self.by_id.contains_key(id),
            DbTarget::Knowledge {
                knowledge_id: Some(id),
                ..
            } => !self.knowledge.contains_key(id),
            _ => false,
        };
        unknown && age >= MIN_REFRESH
    }
}

/// The directory of one [`Upstreams`] snapshot.
#[derive(Debug)]
pub struct DatabaseDirectory {
    current: ArcSwap<Databases>,
    /// What discovered databases take: `[server]`'s timeouts.
    defaults: EntryDefaults,
    /// The shortest `config_ttl` of the snapshot's groups: how long a
    /// directory is used before it is rebuilt from the (cached) documents.
    ttl: Duration,
    /// One rebuild at a time: callers that waited for it use its result.
    rebuilding: tokio::sync::Mutex<()>,
}

impl DatabaseDirectory {
    pub fn new(defaults: EntryDefaults, ttl: Duration) -> Self {
        DatabaseDirectory {
            current: ArcSwap::default(),
            defaults,
            ttl,
            rebuilding: tokio::sync::Mutex::new(()),
        }
    }

    /// The directory as last built, without refreshing it.
    pub fn current(&self) -> Arc<Databases> {
        self.current.load_full()
    }
}

/// Routes a database call: from the directory, refreshed first when it is
/// stale or does not know what the call names. `caller` (the caller's
/// `Authorization`) is used to read a group's `/config` only where the
/// gateway's own credential is refused and the group gets callers' tokens
/// anyway.
pub async fn route(
    state: &SharedState,
    upstreams: &Upstreams,
    target: DbTarget<'_>,
    caller: Option<&HeaderValue>,
) -> Result<Arc<Upstream>, DbLookupError> {
    let directory = &upstreams.databases;
    let mut databases = directory.current();
    if databases.stale_for(target, directory.ttl) {
        let seen = databases.built;
        let _rebuilding = directory.rebuilding.lock().await;
        databases = directory.current();
        // Rebuilt while this call waited: that answer is as fresh as any.
        if databases.built == seen {
            // An id the directory does not know is looked for on the hosts
            // themselves, not in their cached documents.
            let unknown = seen.is_some()
                && matches!(
                    databases.route(target),
                    Err(DbLookupError::UnknownDb(_)
                        | DbLookupError::UnknownKnowledge(_)
                        | DbLookupError::UnknownKnowledgeDb(_)
                        | DbLookupError::Unreachable(_))
                );
            databases = rebuild(state, upstreams, caller, unknown).await;
        }
    }
    databases.route(target)
}

/// Rebuilds the directory now (start-up, and the start-up check).
pub async fn refresh(state: &SharedState, upstreams: &Upstreams) -> Arc<Databases> {
    let _rebuilding = upstreams.databases.rebuilding.lock().await;
    rebuild(state, upstreams, None, false).await
}

/// Rebuilds the directory from every group's `/config` (from the cache
/// unless `fetch`), puts it in service and returns it.
async fn rebuild(
    state: &SharedState,
    upstreams: &Upstreams,
    caller: Option<&HeaderValue>,
    fetch: bool,
) -> Arc<Databases> {
    let documents = futures::future::join_all(
        upstreams
            .groups()
            .iter()
            .map(|group| host_document(state, group, caller, fetch)),
    )
    .await;
    let previous = upstreams.databases.current();
    let next = Arc::new(build(upstreams, &previous, &documents));
    if next.conflicts != previous.conflicts {
        for conflict in &next.conflicts {
            tracing::error!(
                db_id = %conflict.db_id,
                host_groups = %conflict.groups.join(", "),
                "database reported by more than one host group; pin it with [[dbs]]"
            );
        }
    }
    upstreams.databases.current.store(next.clone());
    next
}

/// A group's `/config`, as the gateway sees it; `None` when it cannot be
/// had.
async fn host_document(
    state: &SharedState,
    group: &HostGroup,
    caller: Option<&HeaderValue>,
    fetch: bool,
) -> Option<Arc<Value>> {
    let mut result = state.cache.host_config(group, fetch, None).await;
    if let (Err(error), Some(caller)) = (&result, caller)
        && refused(error)
        && group.forwards_caller_token
    {
        result = state.cache.host_config(group, fetch, Some(caller)).await;
    }
    match result {
        Ok(cached) => Some(cached.doc),
        Err(error) => {
            if !refused(&error) {
                state.note_upstream_error(group, &error);
            }
            tracing::warn!(host_group = %group.name(), %error, "host config unavailable; its databases are not known");
            None
        }
    }
}

fn refused(error: &UpstreamError) -> bool {
    matches!(
        error,
        UpstreamError::Host(ClientError::Status { status, .. })
            if matches!(*status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
    )
}

/// The directory for `documents` (one per group, in the snapshot's order).
/// A group without a document keeps what `previous` had of it.
fn build(
    upstreams: &Upstreams,
    previous: &Databases,
    documents: &[Option<Arc<Value>>],
) -> Databases {
    let mut next = Databases {
        built: Some(Instant::now()),
        ..Databases::default()
    };
    for pinned in upstreams.of(EntryKind::Database) {
        next.ids.push(pinned.config.id.clone());
        next.by_id.insert(pinned.config.id.clone(), pinned.clone());
    }
    let pinned = next.ids.len();
    // Who reported what: (db id, group index), in order.
    let mut reported: Vec<(String, usize)> = Vec::new();
    let mut knowledge: Vec<(String, String, usize)> = Vec::new();
    for (at, (group, document)) in upstreams.groups().iter().zip(documents).enumerate() {
        match document {
            Some(doc) => {
                for id in reported_databases(doc).take(MAX_PER_GROUP) {
                    reported.push((id.to_owned(), at));
                }
                for (id, db_id) in knowledge_instances(doc).take(MAX_PER_GROUP) {
                    knowledge.push((id.to_owned(), db_id.to_owned(), at));
                }
            }
            None => {
                next.unreachable += 1;
                // Keep what was known of this group.
                for id in &previous.ids {
                    if let Some(upstream) = previous.by_id.get(id)
                        && Arc::ptr_eq(&upstream.group, group)
                        && upstream.kind() == EntryKind::Database
                        && upstreams.get(EntryKind::Database, id).is_none()
                    {
                        reported.push((id.clone(), at));
                    }
                }
                for id in &previous.knowledge_ids {
                    if let Some(upstream) = previous.knowledge.get(id)
                        && Arc::ptr_eq(&upstream.group, group)
                    {
                        knowledge.push((id.clone(), upstream.config.id.clone(), at));
                    }
                }
            }
        }
    }
    let groups = upstreams.groups();
    for (id, at) in &reported {
        if next.by_id.contains_key(id) {
            let owner = &next.by_id[id];
            let already =
                next.ids[..pinned].contains(id) || Arc::ptr_eq(&owner.group, &groups[*at]);
            if !already {
                conflict(&mut next.conflicts, id, &owner.group, &groups[*at]);
            }
            continue;
        }
        let upstream = previous
            .by_id
            .get(id)
            .filter(|old| Arc::ptr_eq(&old.group, &groups[*at]))
            .cloned()
            .unwrap_or_else(|| {
                Arc::new(discovered(id, &groups[*at], &upstreams.databases.defaults))
            });
        next.ids.push(id.clone());
        next.by_id.insert(id.clone(), upstream);
    }
    // An ambiguous id answers to nobody.
    for conflict in &next.conflicts {
        next.by_id.remove(&conflict.db_id);
        next.ids.retain(|id| id != &conflict.db_id);
    }
    for (id, db_id, at) in knowledge {
        if next.knowledge.contains_key(&id) {
            continue;
        }
        // The instance's database, where it is known to be this group's;
        // else a database entry for the group, named by the instance's db.
        let upstream = match next.by_id.get(&db_id) {
            Some(owner) if Arc::ptr_eq(&owner.group, &groups[at]) => owner.clone(),
            _ => Arc::new(discovered(
                &db_id,
                &groups[at],
                &upstreams.databases.defaults,
            )),
        };
        next.knowledge_ids.push(id.clone());
        next.knowledge.insert(id, upstream);
    }
    next
}

fn conflict(conflicts: &mut Vec<Conflict>, id: &str, first: &HostGroup, second: &HostGroup) {
    if let Some(known) = conflicts.iter_mut().find(|c| c.db_id == id) {
        if !known.groups.iter().any(|g| g == second.name()) {
            known.groups.push(second.name().to_owned());
        }
        return;
    }
    conflicts.push(Conflict {
        db_id: id.to_owned(),
        groups: vec![first.name().to_owned(), second.name().to_owned()],
    });
}

/// The ids in a `ConfigResponse`'s `databases`.
fn reported_databases(doc: &Value) -> impl Iterator<Item = &str> {
    doc.get("databases")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|id| !id.is_empty())
}

/// `(id, db_id)` of a `ConfigResponse`'s `knowledge.knowledge_instances`.
fn knowledge_instances(doc: &Value) -> impl Iterator<Item = (&str, &str)> {
    doc.get("knowledge")
        .and_then(|k| k.get("knowledge_instances"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|instance| {
            let id = instance.get("id")?.as_str()?;
            let db_id = instance.get("db_id")?.as_str()?;
            Some((id, db_id))
        })
}

/// The upstream of a database `group` reports: `[server]`'s timeouts, the
/// group's own token and token policy.
fn discovered(id: &str, group: &Arc<HostGroup>, defaults: &EntryDefaults) -> Upstream {
    Upstream {
        config: EntryConfig {
            kind: EntryKind::Database,
            id: id.to_owned(),
            host_group: group.name().to_owned(),
            remote_id: id.to_owned(),
            timeout: defaults.timeout,
            first_byte_timeout: defaults.first_byte_timeout,
            max_stream_duration: None,
            heartbeat: None,
            cancel_on_disconnect: false,
            config_ttl: group.config_ttl,
            auth_token: group.metadata_token.clone(),
            forward_caller_token: group.forwards_caller_token,
        },
        metrics: RouteMetricsCache::new(EntryKind::Database, Arc::from(id)),
        group: group.clone(),
        upstream_prefix: String::new(),
        generation: group.generation,
    }
}
