//! Per-thread shards for the counts every request updates (request metrics,
//! requests in flight per replica), so that two serving threads never write
//! the same cache line.
//!
//! Why: the gateway serves thread-per-core (see `crate::server`), and a
//! request otherwise shares nothing with the other threads, except words
//! that every request writes. Each such write pulls the cache line away
//! from the other core: a fifth of the gateway's own CPU samples landed on
//! atomic instructions, many of them on such shared words (lock words,
//! counters, `Arc` counts). A reader (a scrape, a replica pick) sums the
//! shards.
//!
//! A serving thread claims its shard ([`claim`]); any other thread gets
//! one round-robin on first use. More threads than shards share shards,
//! which stays correct (the shards are atomics), only slower.

use std::cell::Cell;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Most shards per value: beyond this, threads share them.
const MAX_SHARDS: usize = 16;

/// One value per shard, each on cache lines of its own.
#[derive(Debug)]
pub struct Sharded<T> {
    shards: Box<[Padded<T>]>,
}

/// 128 bytes: x86 fetches cache lines in adjacent pairs.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded<T>(T);

impl<T: Default> Default for Sharded<T> {
    fn default() -> Self {
        Sharded {
            shards: (0..shard_count()).map(|_| Padded::default()).collect(),
        }
    }
}

impl<T> Sharded<T> {
    /// This thread's shard, and its index (for [`Sharded::get`] later, from
    /// wherever the matching update runs).
    pub fn local(&self) -> (usize, &T) {
        let index = current() % self.shards.len();
        (index, &self.shards[index].0)
    }

    /// The shard at `index` (as [`Sharded::local`] gave it).
    pub fn get(&self, index: usize) -> &T {
        &self.shards[index % self.shards.len()].0
    }

    /// Every shard, to sum.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.shards.iter().map(|padded| &padded.0)
    }
}

/// One shard per core, up to [`MAX_SHARDS`].
fn shard_count() -> usize {
    static COUNT: OnceLock<usize> = OnceLock::new();
    *COUNT.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(1, usize::from)
            .clamp(1, MAX_SHARDS)
    })
}

thread_local! {
    static INDEX: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Makes this thread use shard `index` (serving thread `index` of N).
pub fn claim(index: usize) {
    INDEX.with(|slot| slot.set(Some(index)));
}

/// This thread's shard index: the claimed one, else one handed out
/// round-robin on first use.
fn current() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    INDEX.with(|slot| match slot.get() {
        Some(index) => index,
        None => {
            let index = NEXT.fetch_add(1, Ordering::Relaxed);
            slot.set(Some(index));
            index
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;

    use super::*;

    #[test]
    fn each_thread_updates_its_own_shard_and_the_sum_is_whole() {
        let counts = Arc::new(Sharded::<AtomicU64>::default());
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let counts = counts.clone();
                std::thread::spawn(move || {
                    claim(i);
                    let (index, shard) = counts.local();
                    assert_eq!(index, i % counts.shards.len());
                    for _ in 0..1000 {
                        shard.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let total: u64 = counts.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        assert_eq!(total, 4000);
        assert_eq!(std::mem::align_of::<Padded<AtomicU64>>(), 128);
    }
}
