//! `agentos-gateway demo`: two embedded AgentOS-compatible hosts (an echo
//! workflow and agent, and a slow streaming workflow and team) on loopback
//! ephemeral ports, and the
//! gateway in front of them, so list, run, stream and cancel can be tried
//! with curl and no Python. Metrics and the hosts' view are on the admin
//! listener, [`DEMO_ADMIN`] when that port is free.

use std::net::SocketAddr;
use std::path::Path;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::admin::Admin;
use crate::config::{Config, EntryKind};
use crate::fakehost::{self, FakeHostSpec};
use crate::server;
use crate::state::AppState;

/// Where the demo serves the admin routes, if the port is free: the
/// default admin port, on loopback only.
pub const DEMO_ADMIN: &str = "127.0.0.1:9901";

/// Runs the demo until SIGTERM or Ctrl-C (see `server::signals`).
pub async fn run(listen: SocketAddr) -> std::io::Result<()> {
    let stop_hosts = CancellationToken::new();
    let _stop_hosts_on_return = stop_hosts.clone().drop_guard();
    // The demo's config is written as TOML and read by the same parser as a
    // real one, so it gets the same defaults and checks.
    let mut toml = format!(
        "[server]\nlisten = \"{listen}\"\nos_id = \"agentos-gateway-demo\"\n\
         name = \"agentos-gateway demo\"\n\
         description = \"agentos-gateway in front of two embedded demo hosts\"\n\
         drain_grace = 0.1\ndrain_timeout = 5\n"
    );
    for spec in [FakeHostSpec::demo_echo(), FakeHostSpec::demo_slow()] {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        for kind in EntryKind::ALL {
            for entry in spec.entries(kind) {
                toml.push_str(&format!(
                    "\n[[{}]]\nid = \"{}\"\nbase_url = \"{base_url}\"\n",
                    kind.plural(),
                    entry.id
                ));
            }
        }
        tracing::info!(host = %base_url, os_id = %spec.os_id, "demo host started");
        let stop = stop_hosts.clone().cancelled_owned();
        tokio::spawn(async move {
            if let Err(e) = fakehost::serve(listener, spec, stop).await {
                tracing::error!(error = %e, "demo host failed");
            }
        });
    }
    let config =
        Config::parse(Path::new("<demo>"), &toml, &|_| None).map_err(std::io::Error::other)?;
    let state = AppState::new(&config).map_err(std::io::Error::other)?;
    // Stopped when dropped, as this returns.
    let admin = match TcpListener::bind(DEMO_ADMIN).await {
        Ok(listener) => Some(Admin::spawn(listener, state.clone())?),
        Err(e) => {
            tracing::warn!(
                listen = DEMO_ADMIN,
                error = %e,
                "admin listener not started; the demo goes on without /metrics"
            );
            None
        }
    };
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    tracing::info!(listen = %addr, "agentos-gateway ready");
    tracing::info!("demo gateway on http://{addr}: try");
    tracing::info!("  curl -s http://{addr}/workflows");
    tracing::info!(
        "  curl -s -X POST http://{addr}/workflows/echo/runs -d message=hello -d stream=false"
    );
    tracing::info!(
        "  curl -N -X POST http://{addr}/workflows/slow-story/runs -d message=tell -d run_id=r1"
    );
    tracing::info!("  curl -s -X POST http://{addr}/workflows/slow-story/runs/r1/cancel");
    tracing::info!("  curl -s http://{addr}/agents");
    tracing::info!(
        "  curl -s -X POST http://{addr}/agents/assistant/runs -d message=hello -d stream=false"
    );
    tracing::info!("  curl -N -X POST http://{addr}/teams/storytellers/runs -d message=tell");
    if let Some(admin) = &admin {
        tracing::info!("  curl -s http://{}/metrics", admin.addr());
    }
    let signals = server::signals(state.hurry.clone());
    server::serve(listener, state, signals).await
}
