//! The gateway's integration tests, as one crate: as a crate each, every
//! file linked the whole gateway and its dependencies again.
//! `cargo test --test integration reload::` runs one module.
//!
//! Every module starts real servers on 127.0.0.1 ephemeral ports: mock
//! hosts in-process ([`common`]), the gateway in-process or as the binary
//! (`AGENTOS_GATEWAY_BIN`, else the one cargo built).

mod common;

mod admin;
mod adversarial;
mod agents_teams;
mod auth;
mod cache;
mod cli;
mod client;
mod client_remote;
mod databases;
mod drain;
mod observability;
mod pool;
mod reload;
mod resilience;
mod routes;
mod server;
mod streaming;
mod tls;
mod trace_context;
