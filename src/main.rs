//! The `agentos-gateway` command: parse the command line, set up logging, and
//! hand over to the library (`serve`, `check` or `demo`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use agentos_gateway::admin::Admin;
use agentos_gateway::config::Config;
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
                    "{}: ok ({} workflows on {} host groups, listen {}, admin {})",
                    path.display(),
                    config.workflows.len(),
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
        Command::Demo { listen } => run(demo::run(listen)),
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

async fn serve(path: PathBuf, config: Config, source: String) -> std::io::Result<()> {
    let state = AppState::new(&config).map_err(std::io::Error::other)?;
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
        workflows = config.workflows.len(),
        "agentos-gateway ready"
    );
    let signals = server::signals(state.hurry.clone());
    server::serve(listener, state, signals).await
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

fn run(task: impl Future<Output = std::io::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_SERVE);
        }
    };
    match runtime.block_on(task) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
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
