//! The `agentos-gateway` command: parse the command line, set up logging, and
//! hand over to the library (`serve`, `check` or `demo`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use agentos_gateway::admin::Admin;
use agentos_gateway::config::{Config, EntryKind};
use agentos_gateway::state::{AppState, SharedState};
use agentos_gateway::{demo, reload, server};
use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

/// Exit code for an invalid configuration (EX_USAGE), as linkerd2-proxy uses.
const EXIT_CONFIG: u8 = 64;
/// Exit code when the listener or runtime cannot start.
const EXIT_SERVE: u8 = 1;

/// One AgentOS-compatible front door for workflows on many agno AgentOS hosts.
///
/// With no --config and no command, runs the embedded demo.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// The gateway's TOML config file.
    #[arg(long, short, env = "AGENTOS_GATEWAY_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Log format on stderr; the level comes from RUST_LOG (default info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the configured workflows (the default when --config is given).
    Serve,
    /// Validate the config file and exit: 0 when valid, 64 otherwise.
    Check,
    /// Serve the gateway in front of two embedded demo AgentOS hosts.
    Demo {
        /// Where the demo gateway listens.
        #[arg(long, default_value = "127.0.0.1:7777")]
        listen: SocketAddr,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Held to the end of main: dropping it flushes the last lines.
    let _log_flush = init_logging(cli.log_format);
    let command = match (cli.command, &cli.config) {
        (Some(Command::Demo { .. }), Some(path)) => {
            // The demo serves its own embedded hosts; a config given to it
            // would be silently ignored.
            eprintln!(
                "error: `demo` runs its own embedded hosts and takes no config ({} given): \
                 run `agentos-gateway serve --config {}` to serve it",
                path.display(),
                path.display()
            );
            return ExitCode::from(EXIT_CONFIG);
        }
        (Some(command), _) => command,
        (None, Some(_)) => Command::Serve,
        (None, None) => Command::Demo {
            listen: SocketAddr::from(([127, 0, 0, 1], 7777)),
        },
    };
    match command {
        Command::Check => match load(cli.config.as_ref()) {
            Ok((path, config)) => {
                println!(
                    "{}: ok ({} agents, {} teams, {} workflows, {} pinned databases on {} host groups, listen {}, admin {})",
                    path.display(),
                    config.entries_of(EntryKind::Agent).count(),
                    config.entries_of(EntryKind::Team).count(),
                    config.entries_of(EntryKind::Workflow).count(),
                    config.entries_of(EntryKind::Database).count(),
                    config.host_groups.len(),
                    config.server.listen,
                    config
                        .admin
                        .listen
                        .map_or_else(|| "off".to_owned(), |a| a.to_string())
                );
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Serve => match read(cli.config.as_ref()) {
            Ok((path, config, source)) => run(serve(path, config, source)),
            Err(code) => code,
        },
        Command::Demo { listen } => run(async move { Ok(demo::run(listen).await?) }),
    }
}

fn load(path: Option<&PathBuf>) -> Result<(PathBuf, Config), ExitCode> {
    read(path).map(|(path, config, _)| (path, config))
}

/// The validated config at `path`, and its text.
fn read(path: Option<&PathBuf>) -> Result<(PathBuf, Config, String), ExitCode> {
    let Some(path) = path else {
        eprintln!("error: no config file: pass --config PATH or set AGENTOS_GATEWAY_CONFIG");
        return Err(ExitCode::from(EXIT_CONFIG));
    };
    let (config, source) = Config::read(path).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(EXIT_CONFIG)
    })?;
    Ok((path.clone(), config, source))
}

/// Why serving stopped with an error.
enum Failure {
    /// What the config says cannot be served (exit 64).
    Config(String),
    /// The listener or runtime failed (exit 1).
    Serve(std::io::Error),
}

impl From<std::io::Error> for Failure {
    fn from(error: std::io::Error) -> Self {
        Failure::Serve(error)
    }
}

/// How long the start-up look at the hosts' databases may take; hosts that
/// have not answered by then are learnt about later.
const DATABASE_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

async fn serve(path: PathBuf, config: Config, source: String) -> Result<(), Failure> {
    let state = AppState::new(&config).map_err(std::io::Error::other)?;
    check_databases(&path, &state).await?;
    state.reloads.started(&path, &config, source);
    let stop_reloads = tokio_util::sync::CancellationToken::new();
    let _stop_reloads_on_return = stop_reloads.clone().drop_guard();
    reload::spawn(state.clone(), path, stop_reloads)?;
    // Stopped when dropped, as this returns.
    let _admin = start_admin(&config, &state).await?;
    let listen = config.server.listen;
    let listener = server::bind(listen, config.server.limits.listen_backlog)
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {listen}: {e}")))?;
    tracing::info!(
        listen = %listener.local_addr()?,
        entries = config.entries.len(),
        "agentos-gateway ready"
    );
    let signals = server::signals(state.hurry.clone());
    let served = server::serve(listener, state.clone(), signals).await;
    // The last spans (the drained requests') go to the collector before
    // the process exits; the flush blocks, so off the runtime's threads.
    if let Some(exporter) = state.tracing.exporter.clone() {
        let _ = tokio::task::spawn_blocking(move || exporter.shutdown()).await;
    }
    Ok(served?)
}

/// Learns which host owns which database, and refuses to start when two
/// hosts report the same one and no `[[dbs]]` entry says whose it is: its
/// calls would otherwise be refused until someone noticed.
async fn check_databases(path: &std::path::Path, state: &SharedState) -> Result<(), Failure> {
    let upstreams = state.upstreams();
    // One host group cannot conflict with itself.
    if upstreams.groups().len() < 2 {
        return Ok(());
    }
    let refresh = agentos_gateway::upstream::databases::refresh(state, &upstreams);
    let Ok(known) = tokio::time::timeout(DATABASE_CHECK_TIMEOUT, refresh).await else {
        tracing::warn!(
            "hosts did not report their databases in time; they are learnt on first use"
        );
        return Ok(());
    };
    let Some(conflict) = known.conflicts().first() else {
        return Ok(());
    };
    let groups = conflict
        .groups
        .iter()
        .map(|g| format!("`{g}`"))
        .collect::<Vec<_>>()
        .join(" and ");
    Err(Failure::Config(format!(
        "{}: database `{}` is reported by host groups {groups}: add a [[dbs]] entry with id = \"{}\" and the host that owns it",
        path.display(),
        conflict.db_id,
        conflict.db_id
    )))
}

/// Binds and spawns the admin listener (`[admin] listen`), or logs that it
/// is off. Bound before the public listener, so its `admin listener ready`
/// line comes before `agentos-gateway ready`.
async fn start_admin(config: &Config, state: &SharedState) -> std::io::Result<Option<Admin>> {
    let Some(addr) = config.admin.listen else {
        tracing::info!("admin listener off ([admin] listen = \"\")");
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot bind the admin listener on {addr}: {e}"),
        )
    })?;
    Admin::spawn(listener, state.clone()).map(Some)
}

fn run(task: impl Future<Output = Result<(), Failure>>) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_SERVE);
        }
    };
    match runtime.block_on(task) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Config(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(Failure::Serve(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_SERVE)
        }
    }
}

/// Logs to stderr through tracing-appender's writer thread: the serving
/// threads hand each line over, and the writer writes whatever has queued
/// up in one `write` (a `BufWriter` flushed once the queue is empty), as
/// nginx buffers its access log. A line per request written straight to
/// stderr cost a syscall per request (BENCHMARKS.md). Past 128k queued
/// lines, new ones are dropped rather than block the serving threads.
fn init_logging(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let stderr = std::io::BufWriter::with_capacity(64 * 1024, std::io::stderr());
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .thread_name("gateway-log")
        .finish(stderr);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    guard
}
