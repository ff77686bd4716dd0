//! `agentos-gateway demo`: two embedded AgentOS-compatible hosts (an echo
//! workflow and a slow streaming one) on loopback ephemeral ports, and the
//! gateway in front of them, so list, run, stream and cancel can be tried
//! with curl and no Python.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ServerConfig, WorkflowConfig};
use crate::fakehost::{self, FakeHostSpec};
use crate::server;
use crate::state::AppState;

/// Runs the demo until `shutdown` resolves.
pub async fn run(
    listen: SocketAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let stop_hosts = CancellationToken::new();
    let mut workflows = Vec::new();
    for spec in [FakeHostSpec::demo_echo(), FakeHostSpec::demo_slow()] {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let base_url = crate::config::parse_base_url(&format!("http://{}", listener.local_addr()?))
            .map_err(std::io::Error::other)?;
        for workflow in &spec.workflows {
            workflows.push(WorkflowConfig {
                id: workflow.id.clone(),
                base_url: base_url.clone(),
                workflow_id: workflow.id.clone(),
                timeout: std::time::Duration::from_secs_f64(crate::config::DEFAULT_TIMEOUT_SECS),
                config_ttl: std::time::Duration::from_secs_f64(
                    crate::config::DEFAULT_CONFIG_TTL_SECS,
                ),
                auth_token: None,
            });
        }
        tracing::info!(host = %base_url, os_id = %spec.os_id, "demo host started");
        let stop = stop_hosts.clone().cancelled_owned();
        tokio::spawn(async move {
            if let Err(e) = fakehost::serve(listener, spec, stop).await {
                tracing::error!(error = %e, "demo host failed");
            }
        });
    }
    let config = Config {
        server: ServerConfig {
            os_id: "agentos-gateway-demo".into(),
            name: Some("agentos-gateway demo".into()),
            description: Some("agentos-gateway in front of two embedded demo hosts".into()),
            ..demo_server(listen)
        },
        workflows,
    };
    let state = AppState::new(&config).map_err(std::io::Error::other)?;
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    tracing::info!("demo gateway on http://{addr}: try");
    tracing::info!("  curl -s http://{addr}/workflows");
    tracing::info!("  curl -s -X POST http://{addr}/workflows/echo/runs -d message=hello -d stream=false");
    tracing::info!("  curl -N -X POST http://{addr}/workflows/slow-story/runs -d message=tell -d run_id=r1");
    tracing::info!("  curl -s -X POST http://{addr}/workflows/slow-story/runs/r1/cancel");
    let result = server::serve(listener, state, shutdown).await;
    stop_hosts.cancel();
    result
}

fn demo_server(listen: SocketAddr) -> ServerConfig {
    use crate::config::*;
    ServerConfig {
        listen,
        os_id: String::new(),
        name: None,
        description: None,
        max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        connect_timeout: std::time::Duration::from_secs_f64(DEFAULT_CONNECT_TIMEOUT_SECS),
        config_fetch_timeout: std::time::Duration::from_secs_f64(
            DEFAULT_CONFIG_FETCH_TIMEOUT_SECS,
        ),
        cors_origins: Some(DEFAULT_CORS_ORIGINS.iter().map(|o| o.to_string()).collect()),
    }
}
