//! The request metrics' own counter and histogram: `prometheus-client`'s
//! types, kept per thread ([`crate::sharded`]) and summed when scraped.
//!
//! Why not `prometheus-client`'s own: its histogram takes a mutex on every
//! observation and its counter is one atomic, both shared by every serving
//! thread; three histograms and a counter per request made those lines
//! bounce between cores on every request. These render the same
//! exposition text.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

use crate::sharded::Sharded;

/// A monotonic counter.
#[derive(Debug, Clone, Default)]
pub struct Counter {
    shards: Arc<Sharded<AtomicU64>>,
}

impl Counter {
    pub fn inc(&self) {
        self.shards.local().1.fetch_add(1, Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.shards.iter().map(|shard| shard.load(Relaxed)).sum()
    }
}

impl TypedMetric for Counter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for Counter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Most finite bucket bounds a [`Histogram`] takes.
const MAX_BOUNDS: usize = 23;

/// A histogram of durations, in seconds.
#[derive(Debug, Clone)]
pub struct Histogram {
    /// Finite upper bounds, ascending; `+Inf` follows implicitly.
    bounds: &'static [f64],
    shards: Arc<Sharded<HistogramShard>>,
}

#[derive(Debug, Default)]
struct HistogramShard {
    count: AtomicU64,
    /// Nanoseconds: durations add up exactly, with a plain atomic add.
    sum_nanos: AtomicU64,
    /// Observations per bucket (not cumulative); the last one used is
    /// `+Inf`.
    buckets: [AtomicU64; MAX_BOUNDS + 1],
}

impl Histogram {
    /// A histogram with `bounds` (ascending, at most `MAX_BOUNDS`; any
    /// beyond are dropped) and `+Inf`.
    pub fn new(bounds: &'static [f64]) -> Histogram {
        debug_assert!(bounds.len() <= MAX_BOUNDS, "too many histogram bounds");
        Histogram {
            bounds: &bounds[..bounds.len().min(MAX_BOUNDS)],
            shards: Arc::default(),
        }
    }

    pub fn observe(&self, value: Duration) {
        let seconds = value.as_secs_f64();
        let bucket = self
            .bounds
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(self.bounds.len());
        let shard = self.shards.local().1;
        shard.count.fetch_add(1, Relaxed);
        let nanos = u64::try_from(value.as_nanos()).unwrap_or(u64::MAX);
        shard.sum_nanos.fetch_add(nanos, Relaxed);
        shard.buckets[bucket].fetch_add(1, Relaxed);
    }

    /// Count, sum in seconds, and `(upper bound, count)` per bucket.
    fn totals(&self) -> (u64, f64, Vec<(f64, u64)>) {
        let mut count = 0;
        let mut sum_nanos = 0u64;
        let mut buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .map(|bound| (bound, 0))
            .collect();
        for shard in self.shards.iter() {
            count += shard.count.load(Relaxed);
            sum_nanos = sum_nanos.wrapping_add(shard.sum_nanos.load(Relaxed));
            for (total, bucket) in buckets.iter_mut().zip(&shard.buckets) {
                total.1 += bucket.load(Relaxed);
            }
        }
        (
            count,
            Duration::from_nanos(sum_nanos).as_secs_f64(),
            buckets,
        )
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (count, sum, buckets) = self.totals();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::registry::Registry;

    use super::*;

    /// Renders like `prometheus-client`'s own types, from the sum of every
    /// thread's shard.
    #[test]
    fn renders_the_sum_of_every_threads_observations() {
        static BOUNDS: [f64; 2] = [0.001, 0.1];
        let histogram = Histogram::new(&BOUNDS);
        let counter = Counter::default();
        let mut registry = Registry::default();
        registry.register("latency", "h", histogram.clone());
        registry.register("hits", "c", counter.clone());
        let threads: Vec<_> = [1u64, 50, 200, 2_000]
            .into_iter()
            .enumerate()
            .map(|(i, ms)| {
                let (histogram, counter) = (histogram.clone(), counter.clone());
                std::thread::spawn(move || {
                    crate::sharded::claim(i);
                    histogram.observe(Duration::from_millis(ms));
                    counter.inc();
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "latency_sum 2.251",
            "latency_count 4",
            "latency_bucket{le=\"0.001\"} 1",
            "latency_bucket{le=\"0.1\"} 2",
            "latency_bucket{le=\"+Inf\"} 4",
            "hits_total 4",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing in:\n{text}"
            );
        }
    }
}
