//! Observability: Prometheus metrics ([`metrics`]), the per-request access
//! log and request metrics ([`access`]), W3C trace context ([`trace`]) and
//! the optional OTLP export of the gateway's spans ([`otlp`]), the
//! per-request parts applied as tower layers.

pub mod access;
pub mod metrics;
pub mod otlp;
pub mod per_thread;
pub mod trace;
