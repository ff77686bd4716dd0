//! Replicas of a host and how a new run picks one.
//!
//! A [`Replica`] is one AgentOS process (one base URL): its pooled client, the
//! requests in flight on it, an optional bulkhead, and its health. Health has
//! two inputs: active checks (`GET /health` every few seconds, see
//! `upstream::health`) and passive ejection (a streak of connect failures or
//! 5xx answers takes it out for a back-off that doubles on each ejection).
//! When a back-off ends, the replica is admitted again on probation: one more
//! failure ejects it at once, one success clears the record.
//!
//! [`ReplicaSet::pick`] balances new runs by least outstanding requests with
//! power-of-two-choices: two random available replicas, the less busy wins.
//! It spreads load like least-requests without every gateway replica herding
//! onto the same "least busy" host.

use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use std::time::{Instant, SystemTime};

use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::client::AgentOsClient;
use crate::config::EjectionPolicy;
use crate::proxy::transport::Transport;
use crate::sharded::Sharded;

#[derive(Debug, Default)]
struct Health {
    /// The last active check failed (None before the first check).
    check_failed: bool,
    consecutive_failures: u32,
    ejections: u32,
    ejected_until: Option<Instant>,
    last_error: Option<String>,
    last_check: Option<SystemTime>,
}

/// One AgentOS process.
#[derive(Debug)]
pub struct Replica {
    /// For the gateway's own calls: metadata, health checks, cancels.
    pub client: AgentOsClient,
    /// For forwarded calls; holds the replica's connection pool.
    pub transport: Transport,
    /// Requests in flight, counted per thread (a request's end is counted
    /// on the shard its start was).
    in_flight: Sharded<AtomicIsize>,
    bulkhead: Option<Arc<Semaphore>>,
    max_concurrent: Option<usize>,
    policy: EjectionPolicy,
    health: Mutex<Health>,
    /// Whether `health` has a failure streak or an ejection for a success
    /// to clear. Read without the lock, so that the success of every
    /// request on a healthy replica writes nothing all threads share.
    troubled: AtomicBool,
    /// Slots for the cancels the gateway sends on its own (a client left
    /// mid-stream). When a load balancer restarts, thousands of streams end
    /// at once: their cancels queue here instead of opening thousands of
    /// connections to the host in the same instant.
    pub gateway_cancels: Semaphore,
}

/// Cancels the gateway sends to one replica at once, at most.
const GATEWAY_CANCELS_AT_ONCE: usize = 32;

/// Held while a request is in flight on a replica (including its streamed
/// body); releases the bulkhead slot and the in-flight count on drop.
#[derive(Debug)]
pub struct InFlight {
    replica: Arc<Replica>,
    /// The `in_flight` shard this request is counted on.
    shard: usize,
    _permit: Option<OwnedSemaphorePermit>,
}

impl InFlight {
    pub fn replica(&self) -> &Arc<Replica> {
        &self.replica
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.replica
            .in_flight
            .get(self.shard)
            .fetch_sub(1, Ordering::Relaxed);
    }
}

impl Replica {
    pub fn new(
        client: AgentOsClient,
        transport: Transport,
        max_concurrent: Option<usize>,
        policy: EjectionPolicy,
    ) -> Self {
        Replica {
            client,
            transport,
            in_flight: Sharded::default(),
            bulkhead: max_concurrent.map(|n| Arc::new(Semaphore::new(n))),
            max_concurrent,
            policy,
            health: Mutex::new(Health::default()),
            troubled: AtomicBool::new(false),
            gateway_cancels: Semaphore::new(GATEWAY_CANCELS_AT_ONCE),
        }
    }

    pub fn base_url(&self) -> &str {
        self.client.base_url()
    }

    /// A replica at `url` with default settings, for unit tests.
    #[doc(hidden)]
    pub fn for_tests(
        url: &url::Url,
        max_concurrent: Option<usize>,
        policy: EjectionPolicy,
    ) -> Arc<Replica> {
        let second = std::time::Duration::from_secs(1);
        let settings = crate::proxy::transport::TransportSettings {
            tls: crate::proxy::transport::host_tls(None, false).unwrap_or_else(|e| panic!("{e}")),
            pool_idle_timeout: second,
            max_head_bytes: 8192,
        };
        let transport = Transport::new(url, &settings, second).unwrap_or_else(|e| panic!("{e}"));
        let client = AgentOsClient::new(url, second).unwrap_or_else(|e| panic!("{e}"));
        Arc::new(Replica::new(client, transport, max_concurrent, policy))
    }

    pub fn in_flight(&self) -> usize {
        let total: isize = self
            .in_flight
            .iter()
            .map(|shard| shard.load(Ordering::Relaxed))
            .sum();
        usize::try_from(total).unwrap_or(0)
    }

    /// Counts a request in flight on this thread's shard.
    fn begin(self: &Arc<Self>, permit: Option<OwnedSemaphorePermit>) -> InFlight {
        let (shard, count) = self.in_flight.local();
        count.fetch_add(1, Ordering::Relaxed);
        InFlight {
            replica: self.clone(),
            shard,
            _permit: permit,
        }
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether new requests may be sent here: the last active check passed
    /// and no passive ejection is running.
    pub fn is_available(&self) -> bool {
        let health = self.health();
        !health.check_failed && health.ejected_until.is_none_or(|t| Instant::now() >= t)
    }

    /// Counts a request in flight without taking a bulkhead slot: for calls
    /// about a run the replica already carries (cancel, continue, resume),
    /// which must not be refused because new runs filled the bulkhead.
    pub fn begin_unbounded(self: &Arc<Self>) -> InFlight {
        self.begin(None)
    }

    /// Takes a bulkhead slot and counts the request in flight; `None` when the
    /// bulkhead is full.
    pub fn try_begin(self: &Arc<Self>) -> Option<InFlight> {
        let permit = match &self.bulkhead {
            Some(semaphore) => Some(semaphore.clone().try_acquire_owned().ok()?),
            None => None,
        };
        Some(self.begin(permit))
    }

    /// A request got an answer that is not a host failure.
    pub fn record_success(&self) {
        if !self.troubled.load(Ordering::Relaxed) {
            return;
        }
        let mut health = self.health();
        health.consecutive_failures = 0;
        if health.ejected_until.is_some_and(|t| Instant::now() >= t) {
            health.ejected_until = None;
            health.ejections = 0;
        }
        self.troubled
            .store(health.ejected_until.is_some(), Ordering::Relaxed);
    }

    /// A request failed to connect or got a 5xx; ejects after a streak.
    pub fn record_failure(&self, error: &str) {
        let mut health = self.health();
        self.troubled.store(true, Ordering::Relaxed);
        health.consecutive_failures += 1;
        health.last_error = Some(error.to_owned());
        let now = Instant::now();
        let ejected = health.ejected_until.is_some_and(|t| now < t);
        if !ejected && health.consecutive_failures >= self.policy.consecutive_failures {
            let factor = 1u32 << health.ejections.min(16);
            let length = self.policy.base.saturating_mul(factor).min(self.policy.max);
            health.ejected_until = Some(now + length);
            health.ejections += 1;
            // On probation after the back-off: one more failure ejects again.
            health.consecutive_failures = self.policy.consecutive_failures.saturating_sub(1);
            tracing::warn!(
                replica = %self.base_url(),
                ?length,
                ejections = health.ejections,
                error,
                "replica ejected after repeated failures"
            );
        }
    }

    /// Records an active health check's result. A passing check re-admits an
    /// ejected replica.
    pub fn record_check(&self, result: Result<(), String>) {
        let mut health = self.health();
        health.last_check = Some(SystemTime::now());
        match result {
            Ok(()) => {
                if health.check_failed || health.ejected_until.is_some() {
                    tracing::info!(replica = %self.base_url(), "replica healthy again");
                }
                health.check_failed = false;
                health.ejected_until = None;
                health.consecutive_failures = 0;
                health.ejections = 0;
                self.troubled.store(false, Ordering::Relaxed);
            }
            Err(error) => {
                if !health.check_failed {
                    tracing::warn!(replica = %self.base_url(), %error, "health check failed");
                }
                health.check_failed = true;
                health.last_error = Some(error);
            }
        }
    }

    /// The replica's state for `GET /gateway/upstreams`.
    pub fn status(&self) -> ReplicaStatus {
        let health = self.health();
        let now = Instant::now();
        let ejected_for = health
            .ejected_until
            .filter(|t| *t > now)
            .map(|t| (t - now).as_secs_f64());
        ReplicaStatus {
            base_url: self.base_url().to_owned(),
            healthy: !health.check_failed && ejected_for.is_none(),
            ejected_for_seconds: ejected_for,
            consecutive_failures: health.consecutive_failures,
            last_error: health.last_error.clone(),
            last_check: health
                .last_check
                .map(|t| chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339()),
            in_flight: self.in_flight(),
            max_concurrent_requests: self.max_concurrent,
        }
    }
}

/// One replica's state as the status endpoint reports it.
#[derive(Debug, Serialize)]
pub struct ReplicaStatus {
    pub base_url: String,
    pub healthy: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ejected_for_seconds: Option<f64>,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    pub last_check: Option<String>,
    pub in_flight: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent_requests: Option<usize>,
}

/// Why no replica could take a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PickError {
    /// The set is empty (a DNS name that resolves to nothing).
    NoReplicas,
    /// Every replica's bulkhead is full.
    Saturated,
}

/// The replicas behind one host group. The list is replaced whole when DNS
/// discovery sees a change; replicas that stay keep their pool and health.
///
/// An `ArcSwap`, not a `RwLock`: every request reads the list, and a read
/// lock (or an `Arc` clone) writes a word that every serving thread
/// shares; `arc-swap`'s reads write only to the reading thread's own slots.
#[derive(Debug, Default)]
pub struct ReplicaSet {
    replicas: ArcSwap<Vec<Arc<Replica>>>,
}

impl ReplicaSet {
    pub fn new(replicas: Vec<Arc<Replica>>) -> Self {
        ReplicaSet {
            replicas: ArcSwap::from_pointee(replicas),
        }
    }

    /// The current replicas, to keep.
    pub fn all(&self) -> Arc<Vec<Arc<Replica>>> {
        self.replicas.load_full()
    }

    /// How many replicas there are now.
    pub fn count(&self) -> usize {
        self.replicas.load().len()
    }

    /// Replaces the list (DNS discovery).
    pub fn replace(&self, replicas: Vec<Arc<Replica>>) {
        self.replicas.store(Arc::new(replicas));
    }

    /// Picks a replica for a new request, skipping `exclude` (replicas that
    /// already failed this request). Available replicas come first; when none
    /// is available, every replica is a candidate, since trying a replica
    /// that may have recovered beats refusing outright.
    pub fn pick(&self, exclude: &[Arc<Replica>]) -> Result<InFlight, PickError> {
        let all = self.replicas.load();
        // One replica (most workflows): no choice to make, nothing to collect.
        if let [only] = all.as_slice()
            && exclude.is_empty()
        {
            return only.try_begin().ok_or(PickError::Saturated);
        }
        let candidates: Vec<&Arc<Replica>> = all
            .iter()
            .filter(|r| !exclude.iter().any(|e| Arc::ptr_eq(e, r)))
            .collect();
        if candidates.is_empty() {
            return Err(PickError::NoReplicas);
        }
        let available: Vec<&Arc<Replica>> = candidates
            .iter()
            .copied()
            .filter(|r| r.is_available())
            .collect();
        let mut pool = if available.is_empty() {
            candidates
        } else {
            available
        };
        // Power of two choices, then fall back through the rest if both
        // bulkheads are full.
        while !pool.is_empty() {
            let choice = match pool.len() {
                1 => 0,
                n => {
                    let a = fastrand::usize(..n);
                    let mut b = fastrand::usize(..n - 1);
                    if b >= a {
                        b += 1;
                    }
                    if pool[b].in_flight() < pool[a].in_flight() {
                        b
                    } else {
                        a
                    }
                }
            };
            if let Some(in_flight) = pool[choice].try_begin() {
                return Ok(in_flight);
            }
            pool.swap_remove(choice);
        }
        Err(PickError::Saturated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn replica(port: u16, max: Option<usize>) -> Arc<Replica> {
        let url = url::Url::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        let policy = EjectionPolicy {
            consecutive_failures: 2,
            base: Duration::from_millis(50),
            max: Duration::from_secs(1),
        };
        Replica::for_tests(&url, max, policy)
    }

    #[test]
    fn least_outstanding_wins_between_two() {
        let (a, b) = (replica(1, None), replica(2, None));
        let set = ReplicaSet::new(vec![a.clone(), b.clone()]);
        let _busy: Vec<_> = (0..3).map(|_| a.try_begin().unwrap()).collect();
        for _ in 0..20 {
            let picked = set.pick(&[]).unwrap();
            assert!(Arc::ptr_eq(picked.replica(), &b));
        }
    }

    #[test]
    fn bulkhead_full_replicas_are_skipped_then_saturation_is_reported() {
        let (a, b) = (replica(1, Some(1)), replica(2, Some(1)));
        let set = ReplicaSet::new(vec![a, b]);
        let first = set.pick(&[]).unwrap();
        let second = set.pick(&[]).unwrap();
        assert!(!Arc::ptr_eq(first.replica(), second.replica()));
        assert_eq!(set.pick(&[]).unwrap_err(), PickError::Saturated);
        drop(first);
        assert!(set.pick(&[]).is_ok());
    }

    #[test]
    fn a_failure_streak_ejects_with_growing_backoff_and_success_readmits() {
        let (a, b) = (replica(1, None), replica(2, None));
        let set = ReplicaSet::new(vec![a.clone(), b.clone()]);
        a.record_failure("boom");
        assert!(a.is_available());
        a.record_failure("boom");
        assert!(!a.is_available());
        for _ in 0..10 {
            assert!(Arc::ptr_eq(set.pick(&[]).unwrap().replica(), &b));
        }
        // An active check passing re-admits it at once.
        a.record_check(Ok(()));
        assert!(a.is_available());
        assert_eq!(a.status().consecutive_failures, 0);
    }

    #[test]
    fn probation_after_backoff_ejects_on_one_more_failure() {
        let a = replica(1, None);
        a.record_failure("x");
        a.record_failure("x");
        assert!(!a.is_available());
        // Waiting out the 50 ms back-off is the behaviour under test.
        std::thread::sleep(Duration::from_millis(60));
        assert!(a.is_available());
        a.record_failure("again");
        assert!(!a.is_available(), "one failure on probation ejects again");
        let status = a.status();
        assert!(
            status.ejected_for_seconds.unwrap() > 0.06,
            "second back-off is longer"
        );
    }

    #[test]
    fn with_every_replica_down_all_are_still_candidates() {
        let (a, b) = (replica(1, None), replica(2, None));
        a.record_check(Err("down".into()));
        b.record_check(Err("down".into()));
        let set = ReplicaSet::new(vec![a.clone(), b]);
        assert!(set.pick(&[]).is_ok());
        assert!(!Arc::ptr_eq(
            set.pick(std::slice::from_ref(&a)).unwrap().replica(),
            &a
        ));
    }
}
