//! The upstream layer: which host group runs which agent, team or workflow,
//! the replicas of
//! each group ([`replica`]), their health and discovery ([`health`]), which
//! replica owns which run ([`owners`]), and the metadata cache ([`cache`]).
//!
//! Built from the validated [`Config`], at start and again on every reload
//! ([`crate::reload`]), which swaps in a new [`Upstreams`] whole. Between
//! reloads only replica lists (DNS) and health change, each behind its own
//! small lock. A reload hands every host group whose definition did not
//! change its old replicas, so their pools and health carry over.

pub mod cache;
pub mod databases;
pub mod health;
pub mod owners;
pub mod replica;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::client::{AgentOsClient, ClientError};
use crate::config::{Config, EntryConfig, EntryKind, HostGroupConfig, HostSource, Secret};
use crate::error::UpstreamError;
use crate::observability::metrics::RouteMetricsCache;
use crate::proxy::transport::{Transport, TransportSettings, host_tls};
use replica::{Replica, ReplicaSet};

/// One exposed agent, team or workflow and the host group that runs it.
#[derive(Debug)]
pub struct Upstream {
    pub config: EntryConfig,
    /// This entry's request metrics, by route.
    pub metrics: RouteMetricsCache,
    pub group: Arc<HostGroup>,
    /// `/{agents|teams|workflows}/{remote id}` on the host: the prefix every
    /// forwarded call is rewritten to, and where its document is fetched.
    pub upstream_prefix: String,
    /// Changes when a reload changes this entry's definition, so metadata
    /// cached for the old one is never served for the new one.
    pub generation: u64,
}

impl Upstream {
    pub fn kind(&self) -> EntryKind {
        self.config.kind
    }
}

/// Replicas that serve the same workflows.
#[derive(Debug)]
pub struct HostGroup {
    pub config: HostGroupConfig,
    pub replicas: ReplicaSet,
    /// The token for the group's own metadata (`GET /config`): the first
    /// `auth_token` configured for any of its entries.
    pub metadata_token: Option<Secret>,
    /// The shortest `config_ttl` of the group's entries.
    pub config_ttl: Duration,
    /// Whether callers' tokens reach the group: false when any of its
    /// entries has `forward_caller_token = false`, so its shared calls
    /// (`/config`, discovered databases) never carry one.
    pub forwards_caller_token: bool,
    /// Changes when a reload changes the group's definition; see
    /// [`Upstream::generation`].
    pub generation: u64,
    transport: TransportSettings,
}

impl HostGroup {
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// A replica for `url`, with this group's bulkhead and ejection policy.
    pub fn new_replica(&self, url: &url::Url) -> Result<Arc<Replica>, String> {
        let connect_timeout = self.config.connect_timeout;
        let tls = rustls::ClientConfig::clone(&self.transport.tls);
        let client = AgentOsClient::with_tls(url, connect_timeout, tls)
            .map_err(|e| format!("{url}: {e}"))?;
        let transport = Transport::new(url, &self.transport, connect_timeout)
            .map_err(|e| format!("{url}: {e}"))?;
        Ok(Arc::new(Replica::new(
            client,
            transport,
            self.config.max_concurrent_requests,
            self.config.ejection,
        )))
    }

    /// Runs an idempotent call (a metadata `GET`) on one replica, and on the
    /// next one once if the first fails as a host. Results feed the
    /// replicas' passive health.
    pub async fn idempotent<T, F, Fut>(&self, call: F) -> Result<T, UpstreamError>
    where
        F: Fn(AgentOsClient) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let first = self.replicas.pick(&[]).map_err(|e| self.unavailable(e))?;
        let result = call(first.replica().client.clone())
            .await
            .map_err(UpstreamError::from);
        note_health(first.replica(), &result);
        match result {
            Err(error) if is_host_failure(&error) => {
                let Ok(second) = self.replicas.pick(std::slice::from_ref(first.replica())) else {
                    return Err(error);
                };
                drop(first);
                let result = call(second.replica().client.clone())
                    .await
                    .map_err(UpstreamError::from);
                note_health(second.replica(), &result);
                result
            }
            result => result,
        }
    }

    /// The error for "no replica can take this".
    pub fn unavailable(&self, error: replica::PickError) -> UpstreamError {
        UpstreamError::NoReplica {
            group: self.name().to_owned(),
            reason: match error {
                replica::PickError::NoReplicas => "no replicas are known".to_owned(),
                replica::PickError::Saturated => {
                    "every replica is at max_concurrent_requests".to_owned()
                }
            },
            saturated: error == replica::PickError::Saturated,
        }
    }
}

/// Whether `error` says the replica is unhealthy (as opposed to the request
/// being wrong, or no replica being free): connect failures, timeouts, broken
/// connections and 5xx.
pub fn is_host_failure(error: &UpstreamError) -> bool {
    match error {
        UpstreamError::Host(ClientError::Status { status, .. }) => status.is_server_error(),
        UpstreamError::Host(ClientError::Decode { .. }) => false,
        UpstreamError::Host(_) => true,
        UpstreamError::NoReplica { .. }
        | UpstreamError::BodyTooLarge
        | UpstreamError::RequestBody { .. } => false,
    }
}

fn note_health<T>(replica: &Replica, result: &Result<T, UpstreamError>) {
    match result {
        Err(error) if is_host_failure(error) => replica.record_failure(&error.diagnostic()),
        _ => replica.record_success(),
    }
}

/// All configured agents, teams and workflows, and their host groups: one
/// immutable snapshot of the config, swapped whole by a reload.
#[derive(Debug)]
pub struct Upstreams {
    /// Looked up two or three times a request, with ids from request paths:
    /// foldhash (hashbrown's default, randomly seeded) costs a fraction of
    /// SipHash, and the keys are the config's, so no caller can grow the map.
    /// Ids are unique per kind only: one map per kind, by
    /// [`EntryKind::index`].
    by_id: [HashMap<String, Arc<Upstream>, foldhash::fast::RandomState>; 4],
    ordered: Vec<Arc<Upstream>>,
    groups: Vec<Arc<HostGroup>>,
    /// Which group owns which database (learnt from the hosts).
    pub databases: databases::DatabaseDirectory,
    /// What the host connections were built with; a reload that changes it
    /// builds every replica anew.
    transport_key: TransportKey,
    /// Stops this snapshot's health checks and DNS look-ups.
    pub upkeep: CancellationToken,
}

/// The settings every host connection is built with, as read from the
/// config (the CA file's contents included, so a rotated CA is picked up).
#[derive(Debug, PartialEq)]
struct TransportKey {
    ca_file: Option<(std::path::PathBuf, Option<Vec<u8>>)>,
    any_https: bool,
    pool_idle_timeout: Duration,
    max_head_bytes: usize,
}

/// Source of [`Upstream::generation`] and [`HostGroup::generation`].
static GENERATIONS: AtomicU64 = AtomicU64::new(1);

fn next_generation() -> u64 {
    GENERATIONS.fetch_add(1, Ordering::Relaxed)
}

impl Upstreams {
    /// Builds every group (one pooled client per replica). DNS groups start
    /// empty until `health::spawn` resolves them.
    pub fn new(config: &Config) -> Result<Self, String> {
        Upstreams::build(config, None)
    }

    /// Builds the snapshot for `config`, carrying over from `previous` (the
    /// snapshot in service) the replicas of every host group whose
    /// definition is unchanged, with their pools, health and in-flight
    /// counts, and the cache generations of unchanged entries.
    pub fn build(config: &Config, previous: Option<&Upstreams>) -> Result<Self, String> {
        let any_https = config.host_groups.iter().any(|group| match &group.source {
            HostSource::Static(urls) => urls.iter().any(|url| url.scheme() == "https"),
            HostSource::Dns { url, .. } => url.scheme() == "https",
        });
        let ca_file = config.server.upstream_ca_file.as_deref();
        let transport_key = TransportKey {
            ca_file: ca_file.map(|path| (path.to_owned(), std::fs::read(path).ok())),
            any_https,
            pool_idle_timeout: config.server.pool_idle_timeout,
            max_head_bytes: config.server.limits.max_header_bytes,
        };
        let previous = previous.filter(|p| p.transport_key == transport_key);
        let transport = match previous.and_then(|p| p.groups.first()) {
            Some(group) => group.transport.clone(),
            None => TransportSettings {
                tls: host_tls(ca_file, any_https)?,
                pool_idle_timeout: config.server.pool_idle_timeout,
                max_head_bytes: config.server.limits.max_header_bytes,
            },
        };
        let mut groups: Vec<Arc<HostGroup>> = Vec::with_capacity(config.host_groups.len());
        for group_config in &config.host_groups {
            let members = config
                .entries
                .iter()
                .filter(|w| w.host_group == group_config.name);
            let metadata_token = members.clone().find_map(|w| w.auth_token.clone());
            let forwards_caller_token = members.clone().all(|w| w.forward_caller_token);
            let config_ttl = members
                .map(|w| w.config_ttl)
                .min()
                .unwrap_or(Duration::from_secs(300));
            let same = previous
                .and_then(|p| p.groups.iter().find(|g| g.name() == group_config.name))
                .filter(|old| old.config == *group_config);
            let generation = match same {
                Some(old)
                    if old.metadata_token == metadata_token
                        && old.forwards_caller_token == forwards_caller_token =>
                {
                    old.generation
                }
                _ => next_generation(),
            };
            let group = HostGroup {
                config: group_config.clone(),
                replicas: ReplicaSet::default(),
                metadata_token,
                config_ttl,
                forwards_caller_token,
                generation,
                transport: transport.clone(),
            };
            match same {
                Some(old) => group.replicas.replace(old.replicas.all().to_vec()),
                None => {
                    if let HostSource::Static(urls) = &group_config.source {
                        let replicas = urls
                            .iter()
                            .map(|url| group.new_replica(url))
                            .collect::<Result<Vec<_>, _>>()?;
                        group.replicas.replace(replicas);
                    }
                }
            }
            groups.push(Arc::new(group));
        }
        let mut ordered = Vec::with_capacity(config.entries.len());
        for entry in &config.entries {
            let Some(group) = groups.iter().find(|g| g.name() == entry.host_group) else {
                // Config validation guarantees every entry's group exists.
                continue;
            };
            let generation = previous
                .and_then(|p| p.get(entry.kind, &entry.id))
                .filter(|old| old.config == *entry && old.group.generation == group.generation)
                .map_or_else(next_generation, |old| old.generation);
            // A database's calls keep the caller's path (see `databases`).
            let upstream_prefix = match entry.kind {
                EntryKind::Database => String::new(),
                kind => format!("/{}/{}", kind.plural(), entry.remote_id),
            };
            ordered.push(Arc::new(Upstream {
                upstream_prefix,
                metrics: RouteMetricsCache::new(entry.kind, entry.id.as_str().into()),
                config: entry.clone(),
                group: group.clone(),
                generation,
            }));
        }
        let mut by_id: [HashMap<_, _, _>; 4] = Default::default();
        for upstream in &ordered {
            by_id[upstream.kind().index()].insert(upstream.config.id.clone(), upstream.clone());
        }
        let ttl = groups.iter().map(|g| g.config_ttl).min();
        let databases = databases::DatabaseDirectory::new(
            config.entry_defaults.clone(),
            ttl.unwrap_or(config.entry_defaults.config_ttl),
        );
        Ok(Upstreams {
            by_id,
            ordered,
            groups,
            databases,
            transport_key,
            upkeep: CancellationToken::new(),
        })
    }

    /// The entry of `kind` exposed under `id`.
    pub fn get(&self, kind: EntryKind, id: &str) -> Option<&Arc<Upstream>> {
        self.by_id[kind.index()].get(id)
    }

    /// Every entry: agents, teams, workflows, then pinned databases, each
    /// kind in the order of the config file.
    pub fn entries(&self) -> &[Arc<Upstream>] {
        &self.ordered
    }

    /// The entries of one kind, in the order of the config file.
    pub fn of(&self, kind: EntryKind) -> impl Iterator<Item = &Arc<Upstream>> {
        self.ordered.iter().filter(move |u| u.kind() == kind)
    }

    /// Every host group.
    pub fn groups(&self) -> &[Arc<HostGroup>] {
        &self.groups
    }
}
