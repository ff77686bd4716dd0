//! Which replica owns which run. AgentOS keeps a run's cancel flag and its
//! live event stream in the memory of the process running it, so cancel,
//! continue, resume and run look-ups must reach that same replica.
//!
//! The gateway learns `run_id → replica` from what passes through (the
//! `run_id` it assigns, the first event of a stream, the JSON answer of a
//! non-streamed or background run) and keeps it in a moka cache whose TTL
//! outlives any run. When the owner is unknown (another gateway replica
//! started the run, or this one restarted), callers fan out instead (see
//! `proxy`), which is why no shared store between gateway replicas is needed.

use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;

use super::replica::Replica;
use crate::config::EntryKind;

/// How long an owner is remembered: longer than any run streams or stays
/// paused in practice; an expired entry only costs a fan-out.
const OWNER_TTL: Duration = Duration::from_secs(24 * 3600);
const MAX_RUNS: u64 = 1_000_000;

/// `(kind, gateway id, run_id) → replica`. The kind is part of the key:
/// agent `x` and workflow `x` are different entries, possibly on different
/// hosts.
pub struct RunOwners {
    owners: Cache<(EntryKind, Arc<str>, Arc<str>), Arc<Replica>>,
}

impl std::fmt::Debug for RunOwners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOwners")
            .field("runs", &self.owners.entry_count())
            .finish()
    }
}

impl Default for RunOwners {
    fn default() -> Self {
        RunOwners::new()
    }
}

impl RunOwners {
    pub fn new() -> Self {
        RunOwners {
            owners: Cache::builder()
                .max_capacity(MAX_RUNS)
                .time_to_live(OWNER_TTL)
                .build(),
        }
    }

    /// Remembers that `replica` runs `run_id` of the `kind` entry `id`.
    pub fn record(&self, kind: EntryKind, id: &str, run_id: &str, replica: &Arc<Replica>) {
        self.owners
            .insert((kind, id.into(), run_id.into()), replica.clone());
    }

    /// The replica that runs `run_id` of the `kind` entry `id`, if known.
    pub fn get(&self, kind: EntryKind, id: &str, run_id: &str) -> Option<Arc<Replica>> {
        self.owners.get(&(kind, Arc::from(id), Arc::from(run_id)))
    }
}
