//! The gateway's Prometheus metrics, kept in one registry per gateway (no
//! global recorder, so several in-process gateways in tests stay apart) and
//! rendered at `GET /metrics`.
//!
//! Built on `prometheus-client`, the Prometheus project's own Rust client:
//! it gives typed label sets and the exposition format without hand-written
//! encoding. The metrics every request updates use its families with a
//! counter and a histogram of our own, kept per thread ([`per_thread`]).

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use super::per_thread;

use crate::routes::Route;
use crate::upstream::Upstreams;
use crate::upstream::cache::CacheStats;

/// Labels of a finished request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    workflow: Arc<str>,
    route: &'static str,
    status: u16,
}

/// Labels of latency histograms. Shared and static strings, so that the
/// label set built for every request's look-ups copies no string.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub workflow: Arc<str>,
    pub route: &'static str,
}

/// Labels of an upstream failure.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamErrorLabels {
    pub host: String,
    pub kind: String,
}

/// Labels of a replica.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReplicaLabels {
    pub host_group: String,
    pub replica: String,
}

/// Labels of a caller's own error (never counted against a host).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallerErrorLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    result: &'static str,
}

/// Labels of a config reload: `ok` or `error`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

/// One (workflow, route)'s request metrics, resolved once: a family
/// look-up hashes the label strings and takes a lock, four times a request.
pub struct RouteMetrics {
    pub labels: RouteLabels,
    duration: Histogram,
    time_to_first_byte: Histogram,
    overhead: Histogram,
    /// The `requests` family, for statuses other than 200.
    requests: Family<RequestLabels, per_thread::Counter>,
    /// `requests` with status 200, the most common answer; resolved on the
    /// first one, so no zero series appears for a route that never had one.
    ok: OnceLock<per_thread::Counter>,
}

/// The request histograms: per thread, see [`per_thread`].
type Histogram = per_thread::Histogram;

impl RouteMetrics {
    /// Records the latencies up to the response head.
    pub fn observe_head(&self, head: Duration, waited_on_host: Duration) {
        self.time_to_first_byte.observe(head);
        self.overhead.observe(head.saturating_sub(waited_on_host));
    }

    /// Records a request whose response body ended.
    pub fn observe_end(&self, elapsed: Duration, status: u16) {
        self.duration.observe(elapsed);
        let counter = |status| {
            self.requests
                .get_or_create(&RequestLabels {
                    workflow: self.labels.workflow.clone(),
                    route: self.labels.route,
                    status,
                })
                .clone()
        };
        if status == 200 {
            self.ok.get_or_init(|| counter(200)).inc();
        } else {
            counter(status).inc();
        }
    }
}

/// The [`RouteMetrics`] of one workflow label for every route, each
/// resolved on first use. Kept by each workflow's `Upstream` (and by
/// [`Metrics`] for requests that name none), so the hot path finds its
/// handles by index.
pub struct RouteMetricsCache {
    workflow: Arc<str>,
    /// One slot per [`Route`], and one for paths no route matches.
    routes: [OnceLock<Arc<RouteMetrics>>; Route::COUNT + 1],
}

impl std::fmt::Debug for RouteMetricsCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteMetricsCache")
            .field("workflow", &self.workflow)
            .finish_non_exhaustive()
    }
}

impl RouteMetricsCache {
    pub fn new(workflow: Arc<str>) -> Self {
        RouteMetricsCache {
            workflow,
            routes: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// The handles for `route` (`None`: unmatched) in `metrics`, the one
    /// registry this cache is ever used with.
    pub fn get(&self, metrics: &Metrics, route: Option<Route>) -> Arc<RouteMetrics> {
        let slot = route.map_or(Route::COUNT, Route::index);
        self.routes[slot]
            .get_or_init(|| {
                Arc::new(metrics.route_metrics(RouteLabels {
                    workflow: self.workflow.clone(),
                    route: route.map_or("unmatched", Route::template),
                }))
            })
            .clone()
    }
}

/// Request latencies span sub-millisecond metadata answers to runs that
/// stream for many minutes.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0, 600.0, 1800.0,
];
/// The gateway's own overhead should stay in the tens of microseconds.
const OVERHEAD_BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

fn overhead_histogram() -> Histogram {
    Histogram::new(OVERHEAD_BUCKETS)
}

/// Every metric the gateway exports.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, per_thread::Counter>,
    duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    time_to_first_byte: Family<RouteLabels, Histogram, fn() -> Histogram>,
    overhead: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub active_streams: Gauge,
    /// Handles for requests that name no configured workflow.
    pub unlabelled: RouteMetricsCache,
    pub upstream_errors: Family<UpstreamErrorLabels, Counter>,
    caller_errors: Family<CallerErrorLabels, Counter>,
    /// Caller connections open right now.
    pub open_connections: Gauge,
    /// Connections closed at accept because `max_connections` were open.
    pub refused_connections: Counter,
    cache: Family<CacheLabels, Counter>,
    replica_healthy: Family<ReplicaLabels, Gauge>,
    replica_in_flight: Family<ReplicaLabels, Gauge>,
    config_reloads: Family<ReloadLabels, Counter>,
    /// 1 when the last reload was applied (or none was tried), 0 when the
    /// file on disk is not the config in service.
    config_last_reload_successful: Gauge,
    /// Serialises the scrape-time copies (cache counters, replica state).
    scrape: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("agentos_gateway");
        let requests = Family::<RequestLabels, per_thread::Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by workflow, route and status",
            requests.clone(),
        );
        let duration: Family<RouteLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "request_duration",
            "Time from request to the end of the response body (streams included)",
            Unit::Seconds,
            duration.clone(),
        );
        let time_to_first_byte: Family<RouteLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "time_to_first_byte",
            "Time from request to the response head",
            Unit::Seconds,
            time_to_first_byte.clone(),
        );
        let overhead: Family<RouteLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(overhead_histogram);
        registry.register_with_unit(
            "overhead",
            "Time to the response head minus the time spent waiting on the host",
            Unit::Seconds,
            overhead.clone(),
        );
        let active_streams = Gauge::default();
        registry.register(
            "active_streams",
            "Event streams being relayed right now",
            active_streams.clone(),
        );
        let upstream_errors = Family::<UpstreamErrorLabels, Counter>::default();
        registry.register(
            "upstream_errors",
            "Failed calls to hosts, by host and failure kind",
            upstream_errors.clone(),
        );
        let caller_errors = Family::<CallerErrorLabels, Counter>::default();
        registry.register(
            "caller_errors",
            "Requests that failed by the caller's own doing (bad framing, a body over the \
             limit, a hang-up mid-upload), by kind; never counted against a host",
            caller_errors.clone(),
        );
        let open_connections = Gauge::default();
        registry.register(
            "open_connections",
            "Caller connections open right now",
            open_connections.clone(),
        );
        let refused_connections = Counter::default();
        registry.register(
            "refused_connections",
            "Caller connections closed at accept because max_connections were open",
            refused_connections.clone(),
        );
        let cache = Family::<CacheLabels, Counter>::default();
        registry.register(
            "config_cache_lookups",
            "Metadata cache lookups, by result: hit, miss or stale",
            cache.clone(),
        );
        let replica_healthy = Family::<ReplicaLabels, Gauge>::default();
        registry.register(
            "replica_healthy",
            "1 when a replica takes new runs (passing health checks, not ejected)",
            replica_healthy.clone(),
        );
        let replica_in_flight = Family::<ReplicaLabels, Gauge>::default();
        registry.register(
            "replica_in_flight",
            "Requests in flight on a replica, streams included",
            replica_in_flight.clone(),
        );
        let config_reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Config reloads (SIGHUP or a change of the file), by result: ok or error",
            config_reloads.clone(),
        );
        let config_last_reload_successful = Gauge::default();
        config_last_reload_successful.set(1);
        registry.register(
            "config_last_reload_successful",
            "0 when the last reload failed and the config in service is not the file on disk",
            config_last_reload_successful.clone(),
        );
        Metrics {
            registry,
            config_reloads,
            config_last_reload_successful,
            replica_healthy,
            replica_in_flight,
            requests,
            duration,
            time_to_first_byte,
            overhead,
            active_streams,
            unlabelled: RouteMetricsCache::new(Arc::from("")),
            upstream_errors,
            caller_errors,
            open_connections,
            refused_connections,
            cache,
            scrape: Mutex::new(()),
        }
    }

    /// Counts one failed call to `host`.
    pub fn upstream_error(&self, host: &str, kind: &str) {
        self.upstream_errors
            .get_or_create(&UpstreamErrorLabels {
                host: host.to_owned(),
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// Counts one request that failed by the caller's doing.
    pub fn caller_error(&self, kind: &'static str) {
        self.caller_errors
            .get_or_create(&CallerErrorLabels { kind })
            .inc();
    }

    /// Counts one config reload.
    pub fn config_reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.config_reloads
            .get_or_create(&ReloadLabels { result })
            .inc();
        self.config_last_reload_successful.set(i64::from(ok));
    }

    fn route_metrics(&self, labels: RouteLabels) -> RouteMetrics {
        RouteMetrics {
            duration: self.duration.get_or_create(&labels).clone(),
            time_to_first_byte: self.time_to_first_byte.get_or_create(&labels).clone(),
            overhead: self.overhead.get_or_create(&labels).clone(),
            requests: self.requests.clone(),
            ok: OnceLock::new(),
            labels,
        }
    }

    /// The exposition text, with the cache counters and the replicas' state
    /// brought up to date.
    pub fn render(&self, cache: &CacheStats, upstreams: &Upstreams) -> String {
        use std::sync::atomic::Ordering::Relaxed;
        {
            let _sync = self
                .scrape
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // DNS may have replaced replicas since the last scrape.
            self.replica_healthy.clear();
            self.replica_in_flight.clear();
            for group in upstreams.groups() {
                for replica in group.replicas.all().iter() {
                    let labels = ReplicaLabels {
                        host_group: group.name().to_owned(),
                        replica: replica.base_url().to_owned(),
                    };
                    self.replica_healthy
                        .get_or_create(&labels)
                        .set(i64::from(replica.is_available()));
                    self.replica_in_flight
                        .get_or_create(&labels)
                        .set(i64::try_from(replica.in_flight()).unwrap_or(i64::MAX));
                }
            }
            for (result, total) in [
                ("hit", cache.hits.load(Relaxed)),
                ("miss", cache.misses.load(Relaxed)),
                ("stale", cache.stale.load(Relaxed)),
            ] {
                let counter = self.cache.get_or_create(&CacheLabels { result });
                counter.inc_by(total.saturating_sub(counter.get()));
            }
        }
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
