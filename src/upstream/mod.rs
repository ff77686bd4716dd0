//! The upstream layer: which host owns which workflow, one pooled client per
//! host, and the cached metadata of each (see [`cache`]).
//!
//! Built once from the validated [`Config`]; read-only afterwards, so request
//! handlers share it without locks.

pub mod cache;

use std::collections::HashMap;
use std::sync::Arc;

use crate::client::AgentOsClient;
use crate::config::{Config, Secret, WorkflowConfig};

/// One exposed workflow and the host that runs it.
#[derive(Debug)]
pub struct Upstream {
    pub config: WorkflowConfig,
    pub host: Arc<Host>,
    /// `/workflows/{workflow_id}` on the host: the prefix every forwarded
    /// workflow call is rewritten to.
    pub upstream_prefix: String,
}

/// One AgentOS host (a distinct base URL).
#[derive(Debug)]
pub struct Host {
    pub client: AgentOsClient,
    /// The token used for the host's own metadata (`GET /config`): the first
    /// `auth_token` configured for any of its workflows.
    pub metadata_token: Option<Secret>,
    /// The shortest `config_ttl` of the host's workflows.
    pub config_ttl: std::time::Duration,
}

/// All configured workflows, by gateway id and in file order.
#[derive(Debug)]
pub struct Upstreams {
    by_id: HashMap<String, Arc<Upstream>>,
    ordered: Vec<Arc<Upstream>>,
    hosts: Vec<Arc<Host>>,
}

impl Upstreams {
    /// Builds one client per distinct base URL.
    pub fn new(config: &Config) -> Result<Self, reqwest::Error> {
        let mut hosts: Vec<Arc<Host>> = Vec::new();
        let mut host_by_url: HashMap<String, usize> = HashMap::new();
        let mut ordered = Vec::with_capacity(config.workflows.len());
        for wf in &config.workflows {
            let index = match host_by_url.get(wf.base()) {
                Some(&i) => i,
                None => {
                    let siblings = config.workflows.iter().filter(|w| w.base() == wf.base());
                    let metadata_token = siblings.clone().find_map(|w| w.auth_token.clone());
                    let config_ttl = siblings
                        .map(|w| w.config_ttl)
                        .min()
                        .unwrap_or(wf.config_ttl);
                    hosts.push(Arc::new(Host {
                        client: AgentOsClient::new(&wf.base_url, config.server.connect_timeout)?,
                        metadata_token,
                        config_ttl,
                    }));
                    host_by_url.insert(wf.base().to_owned(), hosts.len() - 1);
                    hosts.len() - 1
                }
            };
            ordered.push(Arc::new(Upstream {
                upstream_prefix: format!("/workflows/{}", wf.workflow_id),
                config: wf.clone(),
                host: hosts[index].clone(),
            }));
        }
        let by_id = ordered
            .iter()
            .map(|u| (u.config.id.clone(), u.clone()))
            .collect();
        Ok(Upstreams {
            by_id,
            ordered,
            hosts,
        })
    }

    /// The workflow exposed under `id`.
    pub fn get(&self, id: &str) -> Option<&Arc<Upstream>> {
        self.by_id.get(id)
    }

    /// Every workflow, in the order of the config file.
    pub fn workflows(&self) -> &[Arc<Upstream>] {
        &self.ordered
    }

    /// Every distinct host.
    pub fn hosts(&self) -> &[Arc<Host>] {
        &self.hosts
    }
}
