//! Per-caller rate limits (`[limits]`): `governor` token buckets keyed by
//! caller, one for run calls, one for everything else, and one per resource
//! with its own run limit. A caller is the verified token's `sub`, else the
//! client address (`X-Forwarded-For` believed only from trusted proxies).
//!
//! Keyed state is bounded: idle callers are pruned (`retain_recent`) at most
//! every [`PRUNE_EVERY`], and beyond `max_tracked_callers` new callers share
//! one overflow bucket rather than grow the map.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{Quota, RateLimiter};
use http::HeaderMap;

use crate::config::{Cidr, LimitsConfig, Rate};

/// How often idle callers are dropped from the keyed state.
pub const PRUNE_EVERY: Duration = Duration::from_secs(30);

/// The key every caller beyond `max_tracked_callers` shares.
const OVERFLOW: &str = "\u{0}overflow";

type Keyed =
    RateLimiter<String, governor::state::keyed::DefaultKeyedStateStore<String>, DefaultClock>;

/// One bucket per caller at one rate.
struct Bucket {
    limiter: Keyed,
    last_prune: AtomicU64,
}

impl Bucket {
    fn new(rate: Rate) -> Bucket {
        let period = Duration::from_secs_f64(1.0 / rate.per_second).max(Duration::from_nanos(1));
        let burst = NonZeroU32::new(rate.burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        Bucket {
            limiter: RateLimiter::keyed(quota),
            last_prune: AtomicU64::new(0),
        }
    }

    /// `Err(wait)` when `caller` has no token left.
    fn check(&self, caller: &str, max: usize, started: Instant) -> Result<(), Duration> {
        self.prune(started);
        let key = if self.limiter.len() >= max {
            OVERFLOW
        } else {
            caller
        };
        self.limiter
            .check_key(&key.to_owned())
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    fn prune(&self, started: Instant) {
        let now = started.elapsed().as_secs();
        let last = self.last_prune.load(Ordering::Relaxed);
        if now.saturating_sub(last) < PRUNE_EVERY.as_secs() {
            return;
        }
        if self
            .last_prune
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
    }
}

/// Every bucket of `[limits]`.
pub struct Limits {
    run: Option<Bucket>,
    other: Option<Bucket>,
    resources: Vec<(String, Bucket)>,
    trusted: Vec<Cidr>,
    max: usize,
    started: Instant,
}

impl Limits {
    pub fn new(config: &LimitsConfig) -> Option<Limits> {
        config.enabled().then(|| Limits {
            run: config.run.map(Bucket::new),
            other: config.other.map(Bucket::new),
            resources: config
                .resources
                .iter()
                .map(|(key, rate)| (key.clone(), Bucket::new(*rate)))
                .collect(),
            trusted: config.trusted_proxies.clone(),
            max: config.max_tracked_callers,
            started: Instant::now(),
        })
    }

    /// Takes a token for `caller`: a run call of `resource`
    /// (`workflows/<id>`) when `run` is given, else any other call.
    /// `Err(wait)` is how long until one is free.
    pub fn check(&self, caller: &str, run: Option<&str>) -> Result<(), Duration> {
        let bucket = match run {
            Some(resource) => self
                .resources
                .iter()
                .find(|(key, _)| key == resource)
                .map(|(_, b)| b)
                .or(self.run.as_ref()),
            None => self.other.as_ref(),
        };
        match bucket {
            Some(bucket) => bucket.check(caller, self.max, self.started),
            None => Ok(()),
        }
    }

    /// The client's address: the peer, or, when the peer is a trusted
    /// proxy, the right-most `X-Forwarded-For` entry that is not one.
    pub fn client_ip(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = peer?.ip();
        let trusted = |ip: IpAddr| self.trusted.iter().any(|c| c.contains(ip));
        if !trusted(peer) {
            return Some(peer);
        }
        let mut client = peer;
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        for hop in hops.iter().rev() {
            let Ok(ip) = hop.trim().parse::<IpAddr>() else {
                // A malformed hop: stop at the last address we can vouch for.
                break;
            };
            client = ip;
            if !trusted(ip) {
                break;
            }
        }
        Some(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(run: Option<Rate>, trusted: &[&str]) -> Limits {
        Limits::new(&LimitsConfig {
            run,
            other: None,
            resources: vec![(
                "workflows/slow".into(),
                Rate {
                    per_second: 0.001,
                    burst: 1,
                },
            )],
            trusted_proxies: trusted.iter().map(|c| Cidr::parse(c).unwrap()).collect(),
            max_tracked_callers: 2,
        })
        .unwrap()
    }

    #[test]
    fn buckets_are_per_caller_and_per_resource() {
        let l = limits(
            Some(Rate {
                per_second: 0.001,
                burst: 2,
            }),
            &[],
        );
        assert!(l.check("a", Some("workflows/x")).is_ok());
        assert!(l.check("a", Some("workflows/x")).is_ok());
        let wait = l.check("a", Some("workflows/x")).unwrap_err();
        assert!(wait > Duration::from_secs(1));
        assert!(l.check("b", Some("workflows/x")).is_ok(), "another caller");
        assert!(l.check("a", None).is_ok(), "no limit for other calls");
        assert!(l.check("a", Some("workflows/slow")).is_ok());
        assert!(
            l.check("a", Some("workflows/slow")).is_err(),
            "own override"
        );
    }

    #[test]
    fn callers_beyond_the_cap_share_one_bucket() {
        let l = limits(
            Some(Rate {
                per_second: 0.001,
                burst: 1,
            }),
            &[],
        );
        assert!(l.check("a", Some("w")).is_ok());
        assert!(l.check("b", Some("w")).is_ok());
        assert!(l.check("c", Some("w")).is_ok(), "first overflow caller");
        assert!(
            l.check("d", Some("w")).is_err(),
            "shares the overflow bucket"
        );
    }

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let l = limits(None, &["10.0.0.0/8"]);
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "1.2.3.4, 10.0.0.7".parse().unwrap());
        let peer = |ip: &str| Some(SocketAddr::new(ip.parse().unwrap(), 1));
        assert_eq!(
            l.client_ip(peer("10.0.0.1"), &h),
            Some("1.2.3.4".parse().unwrap())
        );
        assert_eq!(
            l.client_ip(peer("8.8.8.8"), &h),
            Some("8.8.8.8".parse().unwrap())
        );
        assert_eq!(
            l.client_ip(peer("10.0.0.1"), &HeaderMap::new()),
            Some("10.0.0.1".parse().unwrap())
        );
    }
}
