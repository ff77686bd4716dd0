//! Background upkeep of host groups: active health checks (`GET /health` on
//! every replica every `health_check_interval`) and DNS discovery (every
//! A/AAAA record of a name, re-resolved every `dns_refresh`, which is how a
//! Kubernetes headless Service lists its pods).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::MissedTickBehavior;
use url::Url;

use super::{HostGroup, Upstreams};
use crate::config::HostSource;

/// Starts the checks and look-ups of every group; they stop when the
/// snapshot's `upkeep` token is cancelled (a reload replaced it, or the
/// gateway stops).
pub fn spawn(upstreams: &Upstreams) {
    let stop = &upstreams.upkeep;
    for group in upstreams.groups() {
        if let HostSource::Dns { url, refresh } = &group.config.source {
            tokio::spawn(stop.clone().run_until_cancelled_owned(discover(
                group.clone(),
                url.clone(),
                *refresh,
            )));
        }
        if let Some(interval) = group.config.health_check_interval {
            tokio::spawn(
                stop.clone()
                    .run_until_cancelled_owned(check_forever(group.clone(), interval)),
            );
        }
    }
}

async fn check_forever(group: Arc<HostGroup>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        check_once(&group, interval).await;
    }
}

/// Checks every replica of `group` once, concurrently.
pub async fn check_once(group: &HostGroup, interval: Duration) {
    let replicas = group.replicas.all();
    let checks = replicas.iter().map(|replica| async move {
        let timeout = interval.min(Duration::from_secs(5));
        let result = replica
            .client
            .get_json("/health", timeout, None)
            .await
            .map(drop)
            .map_err(|e| e.to_string());
        replica.record_check(result);
    });
    futures::future::join_all(checks).await;
}

async fn discover(group: Arc<HostGroup>, url: Url, refresh: Duration) {
    let mut ticks = tokio::time::interval(refresh);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        resolve_once(&group, &url).await;
    }
}

/// Resolves `url`'s host and replaces the group's replicas when the set of
/// addresses changed. Replicas that stay keep their pool and health. A failed
/// look-up keeps the last list.
pub async fn resolve_once(group: &HostGroup, url: &Url) {
    let Some(host) = url.host_str() else { return };
    let port = url.port_or_known_default().unwrap_or(80);
    let mut addresses: Vec<SocketAddr> = match tokio::net::lookup_host((host, port)).await {
        Ok(addresses) => addresses.collect(),
        Err(error) => {
            tracing::warn!(group = %group.name(), host, %error, "DNS look-up failed; keeping the last replica list");
            return;
        }
    };
    addresses.sort();
    addresses.dedup();
    let current = group.replicas.all();
    let mut next = Vec::with_capacity(addresses.len());
    for address in &addresses {
        let mut replica_url = url.clone();
        if replica_url.set_ip_host(address.ip()).is_err() {
            continue;
        }
        let base = replica_url.as_str().trim_end_matches('/').to_owned();
        match current.iter().find(|r| r.base_url() == base) {
            Some(existing) => next.push(existing.clone()),
            None => match group.new_replica(&replica_url) {
                Ok(replica) => next.push(replica),
                Err(error) => tracing::error!(%base, %error, "cannot build a client"),
            },
        }
    }
    let changed = next.len() != current.len()
        || next
            .iter()
            .zip(current.iter())
            .any(|(a, b)| !Arc::ptr_eq(a, b));
    if changed {
        tracing::info!(
            group = %group.name(),
            replicas = ?next.iter().map(|r| r.base_url()).collect::<Vec<_>>(),
            "replica list changed"
        );
        group.replicas.replace(next);
    }
}
