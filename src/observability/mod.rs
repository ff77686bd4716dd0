//! Observability: Prometheus metrics ([`metrics`]) and the per-request access
//! log and request metrics ([`access`]), applied as a tower layer.

pub mod access;
pub mod metrics;
pub mod per_thread;
