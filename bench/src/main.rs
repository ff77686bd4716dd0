//! `bench`: the orchestrator. Starts the fake host (`bench-host`) and every
//! contender, runs each workload against each contender with `bench-load`,
//! interleaved (round by round, the contender order rotating) so machine drift
//! cancels out, and prints and writes the tables (ratios first; absolute
//! numbers with the machine they came from).
//!
//! Contenders: `direct` (the floor: the client talks to the host), `nginx`
//! (the Debian package as a plain reverse proxy), `agno` (agno's own AgentOS
//! in gateway mode, `bench/agno_gateway.py`) and `agentos-gateway`. A
//! contender that cannot be started is reported as such, never given numbers.
//!
//! Each round has two phases, each on freshly started contenders: (1) start
//! time, idle RSS, then the idle-streams workload; (2) non-streaming runs at
//! two connection counts, then timed SSE streams.
//!
//! A third phase, the `auth` workload (issue 15, [`auth`]), runs the same
//! non-streaming runs through three fresh gateways, `[auth.jwt]` off, HS256
//! and RS256, interleaved, and times cold token verification in-process.
//!
//! `--smoke` runs every workload for a second or two (CI): it checks only that
//! everything ran without errors, never a timing.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod auth;

use agentos_gateway_bench::{
    IdleResult, Percentiles, RunsResult, SseResult, process_tree, raise_nofile, rss_kib_of,
};
use clap::Parser;
use serde::Serialize;

#[derive(Parser, Clone)]
#[command(about = "Side-by-side benchmark: direct, nginx, agno's gateway, agentos-gateway")]
struct Opts {
    /// A seconds-long run of every workload (CI); checks only for errors.
    #[arg(long)]
    smoke: bool,
    /// Rounds; every figure is the median over rounds.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Measured window of each throughput run.
    #[arg(long, default_value_t = 5000)]
    duration_ms: u64,
    /// Warm-up before each throughput window.
    #[arg(long, default_value_t = 1000)]
    warmup_ms: u64,
    /// Connection counts of the non-streaming runs.
    #[arg(long, value_delimiter = ',', default_values_t = [32usize, 256])]
    connections: Vec<usize>,
    /// Timed SSE streams, events per stream and the gap between events.
    #[arg(long, default_value_t = 64)]
    sse_streams: usize,
    #[arg(long, default_value_t = 200)]
    sse_events: u32,
    #[arg(long, default_value_t = 5000)]
    sse_gap_us: u64,
    /// Idle streams held open at once.
    #[arg(long, default_value_t = 10_000)]
    idle_streams: usize,
    /// Deadline for opening all idle streams.
    #[arg(long, default_value_t = 45)]
    idle_open_timeout_secs: u64,
    /// Contenders to run (direct is always run: it is the floor).
    #[arg(long, value_delimiter = ',', default_values_t = ["nginx".to_owned(), "agno".to_owned(), "agentos-gateway".to_owned()])]
    contenders: Vec<String>,
    /// The agentos-gateway binary (default: next to this one).
    #[arg(long)]
    gateway: Option<PathBuf>,
    /// The nginx binary.
    #[arg(long, default_value = "nginx")]
    nginx: String,
    /// A Python with agno installed (default: $BENCH_PYTHON, .venv/bin/python,
    /// python3; the first that imports agno).
    #[arg(long)]
    python: Option<String>,
    /// Workloads to run: runs, sse, idle, auth, surface (for quick looks
    /// while optimising; `auth` needs only the gateway; `surface` skips
    /// agno's gateway, which fronts no agent or database here).
    #[arg(long, value_delimiter = ',', default_values_t = ["runs".to_owned(), "sse".to_owned(), "idle".to_owned(), "auth".to_owned(), "surface".to_owned()])]
    workloads: Vec<String>,
    /// Connections of the `auth` workload's runs.
    #[arg(long, default_value_t = 32)]
    auth_connections: usize,
    /// CPU time of each in-process cold-verification timing (per algorithm
    /// and verifier, every round).
    #[arg(long, default_value_t = 1000)]
    verify_ms: u64,
    /// Where results.md and results.json go.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
}

impl Opts {
    fn smoke_sized(mut self) -> Self {
        self.rounds = 1;
        self.duration_ms = 1000;
        self.warmup_ms = 200;
        self.sse_streams = 8;
        self.sse_events = 20;
        self.idle_streams = 200;
        self.idle_open_timeout_secs = 15;
        self.verify_ms = 100;
        self
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
enum Kind {
    Direct,
    Nginx,
    Agno,
    Gateway,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Direct => "direct",
            Kind::Nginx => "nginx",
            Kind::Agno => "agno gateway",
            Kind::Gateway => "agentos-gateway",
        }
    }
}

/// A started contender.
struct Running {
    kind: Kind,
    addr: SocketAddr,
    child: Option<Child>,
    startup_ms: Option<f64>,
    idle_rss_kib: Option<u64>,
}

impl Running {
    /// The contender's processes (nginx: master and workers).
    fn pids(&self) -> Vec<u32> {
        self.child
            .as_ref()
            .map_or(Vec::new(), |c| process_tree(c.id()))
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling our own child by its id.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Everything measured for one contender in one round.
#[derive(Default, Clone, Serialize)]
struct Measured {
    startup_ms: Option<f64>,
    idle_rss_kib: Option<u64>,
    runs: BTreeMap<usize, RunsResult>,
    /// The `surface` workload: each call of [`SURFACE`] at
    /// `auth_connections`, by its name.
    surface: BTreeMap<String, RunsResult>,
    sse: Option<SseResult>,
    idle: Option<IdleResult>,
    idle_rss_before_kib: Option<u64>,
    idle_rss_held_kib: Option<u64>,
    /// Why the contender or a workload could not run.
    notes: Vec<String>,
}

struct Env {
    opts: Opts,
    bin_dir: PathBuf,
    tmp: PathBuf,
    host_addrs: Vec<SocketAddr>,
    host_pid: u32,
    python: Result<String, String>,
    nginx: Result<String, String>,
    gateway: Result<PathBuf, String>,
    nofile: (u64, u64),
    /// Keys and tokens of the `auth` workload, when it runs.
    auth: Option<Result<auth::Material, String>>,
}

fn main() {
    let mut opts = Opts::parse();
    if opts.smoke {
        opts = opts.smoke_sized();
    }
    match run(opts) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::exit(2);
        }
    }
}

fn run(opts: Opts) -> Result<bool, String> {
    let nofile = raise_nofile();
    let bin_dir = std::env::current_exe()
        .map_err(|e| e.to_string())?
        .parent()
        .ok_or("no bin dir")?
        .to_path_buf();
    let tmp = std::env::temp_dir().join(format!("agentos-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).map_err(|e| e.to_string())?;

    let wanted = |name: &str| opts.contenders.iter().any(|c| c == name);
    let mut kinds = vec![Kind::Direct];
    for (name, kind) in [
        ("nginx", Kind::Nginx),
        ("agno", Kind::Agno),
        ("agentos-gateway", Kind::Gateway),
    ] {
        if wanted(name) {
            kinds.push(kind);
        }
    }
    let gateway = opts
        .gateway
        .clone()
        .unwrap_or_else(|| bin_dir.join("agentos-gateway"));
    let gateway = if gateway.exists() {
        Ok(gateway)
    } else {
        Err(format!(
            "{} not found: build it with `cargo build --release`",
            gateway.display()
        ))
    };
    let nginx = find_nginx(&opts.nginx);
    let python = find_python(opts.python.as_deref());

    // The host: one listener per contender.
    let (host, host_addrs) = start_host(&bin_dir, &opts, kinds.len())?;
    let host_pid = host.id();
    let _host = KillOnDrop(host);
    let auth_wanted = opts.workloads.iter().any(|w| w == "auth");
    let auth = auth_wanted.then(|| auth::Material::mint(&tmp.join("auth")));
    let env = Env {
        opts: opts.clone(),
        bin_dir,
        tmp: tmp.clone(),
        host_addrs,
        host_pid,
        python,
        nginx,
        gateway,
        nofile,
        auth,
    };
    eprintln!(
        "bench: {} round(s), contenders: {}",
        opts.rounds,
        kinds
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(", ")
    );

    let mut rounds: Vec<BTreeMap<Kind, Measured>> = Vec::new();
    let mut auth_rounds: Vec<auth::AuthRound> = Vec::new();
    for round in 0..opts.rounds {
        let mut order = kinds.clone();
        order.rotate_left(round % kinds.len());
        eprintln!(
            "bench: round {}/{} ({})",
            round + 1,
            opts.rounds,
            order
                .iter()
                .map(|k| k.name())
                .collect::<Vec<_>>()
                .join(" → ")
        );
        let mut measured: BTreeMap<Kind, Measured> = BTreeMap::new();
        // Phase 1: start, idle RSS, idle streams.
        {
            let mut running = start_all(&env, &order, &mut measured);
            let streams = idle_stream_count(&env);
            let idle_wanted = env.opts.workloads.iter().any(|w| w == "idle");
            for r in running.iter_mut().filter(|_| idle_wanted) {
                let m = measured.entry(r.kind).or_default();
                if streams < env.opts.idle_streams {
                    m.notes.push(format!(
                        "idle streams capped at {streams} of {}: RLIMIT_NOFILE hard limit {} and a one-process proxy needs 2 descriptors per stream",
                        env.opts.idle_streams, env.nofile.1
                    ));
                }
                eprintln!("bench:   idle streams × {streams}: {}", r.kind.name());
                match idle_streams(&env, r, streams) {
                    Ok((result, before, held)) => {
                        m.idle = Some(result);
                        m.idle_rss_before_kib = before;
                        m.idle_rss_held_kib = held;
                    }
                    Err(e) => m.notes.push(format!("idle streams: {e}")),
                }
                // Let connection teardown finish before the next contender.
                std::thread::sleep(Duration::from_millis(500));
            }
            for r in running.iter_mut() {
                r.stop();
            }
        }
        // Phase 2: throughput and SSE on fresh processes.
        {
            let mut scratch = BTreeMap::new();
            let running = start_all(&env, &order, &mut scratch);
            let runs_wanted = env.opts.workloads.iter().any(|w| w == "runs");
            for &connections in env.opts.connections.iter().filter(|_| runs_wanted) {
                for r in &running {
                    eprintln!(
                        "bench:   runs × {connections} connections: {}",
                        r.kind.name()
                    );
                    match runs(&env, r, connections, None) {
                        Ok(result) => {
                            measured
                                .entry(r.kind)
                                .or_default()
                                .runs
                                .insert(connections, result);
                        }
                        Err(e) => measured
                            .entry(r.kind)
                            .or_default()
                            .notes
                            .push(format!("runs × {connections}: {e}")),
                    }
                }
            }
            let surface_wanted = env.opts.workloads.iter().any(|w| w == "surface");
            let connections = env.opts.auth_connections;
            for r in running
                .iter()
                .filter(|r| surface_wanted && r.kind != Kind::Agno)
            {
                for &(name, path, get) in SURFACE {
                    eprintln!(
                        "bench:   {name} × {connections} connections: {}",
                        r.kind.name()
                    );
                    let m = measured.entry(r.kind).or_default();
                    match runs_of(&env, r, connections, None, Some((path, get))) {
                        Ok(result) => {
                            m.surface.insert(name.to_owned(), result);
                        }
                        Err(e) => m.notes.push(format!("{name}: {e}")),
                    }
                }
            }
            let sse_wanted = env.opts.workloads.iter().any(|w| w == "sse");
            for r in running.iter().filter(|_| sse_wanted) {
                eprintln!(
                    "bench:   sse {} × {} events: {}",
                    env.opts.sse_streams,
                    env.opts.sse_events,
                    r.kind.name()
                );
                match sse(&env, r) {
                    Ok(result) => measured.entry(r.kind).or_default().sse = Some(result),
                    Err(e) => measured
                        .entry(r.kind)
                        .or_default()
                        .notes
                        .push(format!("sse: {e}")),
                }
            }
        }
        rounds.push(measured);
        // Phase 3: edge auth, the gateway alone.
        if auth_wanted {
            auth_rounds.push(auth_round(&env, round));
        }
    }

    let machine = machine(&env);
    let mut report = report(&env, &kinds, &rounds, &machine);
    if opts.workloads.iter().any(|w| w == "surface") {
        report.push_str(&surface_report(&kinds, &rounds, opts.auth_connections));
    }
    if auth_wanted {
        report.push_str(&auth::report(&auth_rounds, opts.auth_connections));
    }
    println!("{report}");
    let _ = std::fs::create_dir_all(&opts.out);
    let _ = std::fs::write(opts.out.join("results.md"), &report);
    let json = serde_json::json!({"machine": machine, "rounds": rounds.iter().map(|r| r.iter().map(|(k, m)| (k.name(), m.clone())).collect::<BTreeMap<_, _>>()).collect::<Vec<_>>(), "auth": auth_rounds});
    let _ = std::fs::write(
        opts.out.join("results.json"),
        serde_json::to_string_pretty(&json).unwrap_or_default(),
    );
    eprintln!(
        "bench: wrote {}/results.md and results.json",
        opts.out.display()
    );
    let _ = std::fs::remove_dir_all(&tmp);

    // The smoke checks only that everything ran without errors.
    let mut ok = true;
    for measured in &rounds {
        for (kind, m) in measured {
            let errors = m.runs.values().map(|r| r.errors).sum::<u64>()
                + m.sse.as_ref().map_or(0, |s| s.errors)
                + m.idle.as_ref().map_or(0, |i| i.errors);
            let required = matches!(kind, Kind::Direct | Kind::Gateway);
            let wanted = |w: &str| opts.workloads.iter().any(|x| x == w);
            let missing = (wanted("runs") && m.runs.len() < opts.connections.len())
                || (wanted("sse") && m.sse.is_none())
                || (wanted("idle") && m.idle.is_none());
            if errors > 0 || (required && missing) {
                let level = if required { "error" } else { "warning" };
                eprintln!(
                    "bench: {level}: {}: {errors} errors{}; notes: {:?}",
                    kind.name(),
                    if missing { ", workloads missing" } else { "" },
                    m.notes
                );
                if required {
                    ok = false;
                }
            }
        }
    }
    for (i, round) in auth_rounds.iter().enumerate() {
        if round.errors() > 0 || !round.complete() {
            eprintln!(
                "bench: error: auth round {}: {} errors{}; notes: {:?}",
                i + 1,
                round.errors(),
                if round.complete() {
                    ""
                } else {
                    ", results missing"
                },
                round.notes
            );
            ok = false;
        }
    }
    if ok && opts.smoke {
        println!("bench: smoke: every workload ran for every contender, without errors");
    }
    Ok(ok)
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How many idle streams fit: a one-process proxy holds two descriptors per
/// stream, and no process may exceed the hard `RLIMIT_NOFILE`.
fn idle_stream_count(env: &Env) -> usize {
    const RESERVE: u64 = 40;
    let fit = usize::try_from(env.nofile.0.saturating_sub(RESERVE) / 2).unwrap_or(usize::MAX);
    env.opts.idle_streams.min(fit)
}

fn start_host(
    bin_dir: &Path,
    opts: &Opts,
    listeners: usize,
) -> Result<(Child, Vec<SocketAddr>), String> {
    let mut child = Command::new(bin_dir.join("bench-host"))
        .args([
            "--listeners",
            &listeners.to_string(),
            "--events",
            &opts.sse_events.to_string(),
            "--gap-us",
            &opts.sse_gap_us.to_string(),
        ])
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start bench-host: {e} (build with `cargo build --release -p agentos-gateway-bench`)"))?;
    let stdout = child.stdout.take().ok_or("bench-host stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let mut addrs = Vec::new();
    while addrs.len() < listeners {
        let line = lines
            .next()
            .ok_or("bench-host exited")?
            .map_err(|e| e.to_string())?;
        if let Some(addr) = line.strip_prefix("LISTEN ") {
            addrs.push(addr.parse().map_err(|e| format!("{addr}: {e}"))?);
        }
    }
    Ok((child, addrs))
}

/// Starts every contender in `order`, noting start time and idle RSS; those
/// that cannot start get a note instead.
fn start_all(env: &Env, order: &[Kind], measured: &mut BTreeMap<Kind, Measured>) -> Vec<Running> {
    let mut running = Vec::new();
    for &kind in order {
        let m = measured.entry(kind).or_default();
        match start(env, kind, order) {
            Ok(r) => {
                m.startup_ms = r.startup_ms;
                m.idle_rss_kib = r.idle_rss_kib;
                running.push(r);
            }
            Err(e) => {
                eprintln!("bench:   {} not started: {e}", kind.name());
                m.notes.push(format!("not started: {e}"));
            }
        }
    }
    running
}

fn free_port() -> Result<SocketAddr, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    listener.local_addr().map_err(|e| e.to_string())
}

fn start(env: &Env, kind: Kind, order: &[Kind]) -> Result<Running, String> {
    // Each contender talks to its own host listener.
    let slot = [Kind::Direct, Kind::Nginx, Kind::Agno, Kind::Gateway]
        .iter()
        .filter(|k| order.contains(k))
        .position(|k| *k == kind)
        .unwrap_or(0);
    let host = env.host_addrs[slot.min(env.host_addrs.len() - 1)];
    if kind == Kind::Direct {
        return Ok(Running {
            kind,
            addr: host,
            child: None,
            startup_ms: None,
            idle_rss_kib: None,
        });
    }
    let addr = free_port()?;
    let dir = env.tmp.join(kind.name().replace(' ', "-"));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let (command, ready_path, ready_timeout) = match kind {
        Kind::Gateway => (
            gateway_command(env, &dir, addr, host, "")?,
            "/ready",
            Duration::from_secs(10),
        ),
        Kind::Nginx => {
            let binary = env.nginx.clone()?;
            let conf = dir.join("nginx.conf");
            std::fs::write(&conf, nginx_conf(&dir, addr, host, env.nofile.0))
                .map_err(|e| e.to_string())?;
            let mut c = Command::new(binary);
            c.arg("-p")
                .arg(&dir)
                .arg("-c")
                .arg(&conf)
                .arg("-e")
                .arg("stderr");
            (c, "/ready", Duration::from_secs(10))
        }
        Kind::Agno => {
            let python = env.python.clone()?;
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("agno_gateway.py");
            let mut c = Command::new(python);
            c.arg(script)
                .arg("--port")
                .arg(addr.port().to_string())
                .arg("--host-url")
                .arg(format!("http://{host}"))
                .env("AGNO_TELEMETRY", "false");
            // AgentOS has no /ready; /health is its readiness answer.
            (c, "/health", Duration::from_secs(60))
        }
        Kind::Direct => unreachable!("handled above"),
    };
    launch(kind, addr, &dir, command, ready_path, ready_timeout)
}

/// The gateway's command line and config file in `dir`, with `auth` (an
/// `[auth.jwt]` table, or nothing) before the workflows.
fn gateway_command(
    env: &Env,
    dir: &Path,
    addr: SocketAddr,
    host: SocketAddr,
    auth: &str,
) -> Result<Command, String> {
    let binary = env.gateway.clone()?;
    let config = dir.join("gateway.toml");
    // No admin listener: the bench scrapes nothing, and two runs
    // (or a gateway already on the machine) must not meet on 9901.
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"{addr}\"\nmax_connections = {nofile}\nos_id = \"{os_id}\"\n\n[admin]\nlisten = \"\"\n\n{auth}[[workflows]]\nid = \"bench\"\nbase_url = \"http://{host}\"\n\n[[workflows]]\nid = \"idle\"\nbase_url = \"http://{host}\"\n\n[[agents]]\nid = \"bench-agent\"\nbase_url = \"http://{host}\"\n",
            nofile = env.nofile.0,
            os_id = auth::OS_ID,
        ),
    )
    .map_err(|e| e.to_string())?;
    // The default log level: one access line per request, to
    // stderr.log, as nginx writes its buffered access log.
    let mut c = Command::new(binary);
    c.arg("--config")
        .arg(&config)
        .env_remove("RUST_LOG")
        .env_remove("AGENTOS_GATEWAY_ADMIN_LISTEN");
    Ok(c)
}

/// Spawns `command` (logs into `dir`) and waits until `ready_path` answers
/// 200 on `addr`.
fn launch(
    kind: Kind,
    addr: SocketAddr,
    dir: &Path,
    mut command: Command,
    ready_path: &str,
    ready_timeout: Duration,
) -> Result<Running, String> {
    let log = |name: &str| {
        std::fs::File::create(dir.join(name))
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::null())
    };
    let started = Instant::now();
    let child = command
        .stdin(Stdio::null())
        .stdout(log("stdout.log"))
        .stderr(log("stderr.log"))
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    let mut running = Running {
        kind,
        addr,
        child: Some(child),
        startup_ms: None,
        idle_rss_kib: None,
    };
    loop {
        if http_status(addr, ready_path) == Some(200) {
            break;
        }
        if let Some(Ok(Some(status))) = running.child.as_mut().map(Child::try_wait) {
            let stderr = std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
            return Err(format!(
                "exited with {status}: {}",
                stderr.trim().lines().last().unwrap_or("")
            ));
        }
        if started.elapsed() > ready_timeout {
            return Err(format!("{ready_path} not 200 within {ready_timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    running.startup_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
    // Idle RSS: after start, before any load, once start-up work settled.
    std::thread::sleep(Duration::from_millis(500));
    running.idle_rss_kib = rss_kib_of(&running.pids());
    Ok(running)
}

/// One round of the `auth` workload: three fresh gateways (`[auth.jwt]`
/// off, HS256, RS256) started together, the runs workload through each in
/// an order rotated by `round`, then the in-process verification timings
/// while they sit idle.
fn auth_round(env: &Env, round: usize) -> auth::AuthRound {
    let mut out = auth::AuthRound::default();
    let material = match &env.auth {
        Some(Ok(m)) => m,
        Some(Err(e)) => {
            out.notes.push(format!("keys and tokens: {e}"));
            return out;
        }
        None => return out,
    };
    // The gateway's own host listener: nothing else runs in this phase.
    let Some(&host) = env.host_addrs.last() else {
        out.notes.push("no host listener".into());
        return out;
    };
    let mut order = auth::Variant::ALL;
    order.rotate_left(round % auth::Variant::ALL.len());
    let mut running = Vec::new();
    for &variant in &order {
        let started = free_port().and_then(|addr| {
            let dir = env.tmp.join(variant.slug());
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            let command = gateway_command(env, &dir, addr, host, &material.config_table(variant))?;
            launch(
                Kind::Gateway,
                addr,
                &dir,
                command,
                "/ready",
                Duration::from_secs(10),
            )
        });
        match started {
            Ok(r) => running.push((variant, r)),
            Err(e) => out
                .notes
                .push(format!("{}: not started: {e}", variant.name())),
        }
    }
    let connections = env.opts.auth_connections;
    for (variant, r) in &running {
        eprintln!(
            "bench:   auth: runs × {connections} connections: agentos-gateway, {}",
            variant.name()
        );
        match runs(env, r, connections, material.bearer_file(*variant)) {
            Ok(result) => {
                out.runs.insert(*variant, result);
            }
            Err(e) => out
                .notes
                .push(format!("{}: runs × {connections}: {e}", variant.name())),
        }
    }
    drop(running);
    eprintln!(
        "bench:   auth: cold verification, {} ms of CPU per timing",
        env.opts.verify_ms
    );
    for result in auth::verify_costs(material, Duration::from_millis(env.opts.verify_ms)) {
        match result {
            Ok(v) => out.verify.push(v),
            Err(e) => out.notes.push(format!("verification timing: {e}")),
        }
    }
    out
}

/// nginx as a plain reverse proxy: keep-alive to the host, no response
/// buffering, a buffered access log (the gateway writes its default access
/// log too).
fn nginx_conf(dir: &Path, addr: SocketAddr, host: SocketAddr, nofile: u64) -> String {
    let d = dir.display();
    format!(
        "daemon off;
worker_processes auto;
worker_rlimit_nofile {nofile};
pid {d}/nginx.pid;
error_log stderr warn;
events {{
    worker_connections {nofile};
}}
http {{
    access_log {d}/access.log combined buffer=64k flush=1s;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 1000000;
    upstream agentos {{
        server {host};
        keepalive 1024;
        keepalive_requests 1000000;
    }}
    server {{
        listen {addr} backlog=4096;
        location / {{
            proxy_pass http://agentos;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_buffering off;
            proxy_read_timeout 3600s;
        }}
    }}
}}
"
    )
}

/// The status of `GET path`, or None when nothing answers.
fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 32];
    let n = stream.read(&mut head).ok()?;
    let line = std::str::from_utf8(&head[..n]).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Runs `bench-load` and returns its `RESULT` line, within `limit`.
fn load(env: &Env, r: &Running, args: &[String], limit: Duration) -> Result<String, String> {
    let mut child = Command::new(env.bin_dir.join("bench-load"))
        .arg("--addr")
        .arg(r.addr.to_string())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("bench-load: {e}"))?;
    let lines = read_lines(&mut child)?;
    let result = wait_for(&lines, "RESULT ", limit);
    let _ = child.kill();
    let _ = child.wait();
    result
}

fn read_lines(child: &mut Child) -> Result<mpsc::Receiver<String>, String> {
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Ok(rx)
}

fn wait_for(
    lines: &mpsc::Receiver<String>,
    prefix: &str,
    limit: Duration,
) -> Result<String, String> {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                if let Some(json) = line.strip_prefix(prefix) {
                    return Ok(json.to_owned());
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(format!("no {prefix}within {limit:?}"));
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err("bench-load exited without a result".into());
            }
        }
    }
}

/// The `surface` workload's calls, each closed-loop like the runs: its
/// name, path, and whether it is a bodiless `GET` (else the run form).
const SURFACE: &[(&str, &str, bool)] = &[
    ("workflow run", "/workflows/bench/runs", false),
    ("agent run", "/agents/bench-agent/runs", false),
    (
        "sessions listing",
        "/sessions?type=agent&db_id=bench-db",
        true,
    ),
];

fn runs(
    env: &Env,
    r: &Running,
    connections: usize,
    bearer_file: Option<&Path>,
) -> Result<RunsResult, String> {
    runs_of(env, r, connections, bearer_file, None)
}

/// Closed-loop calls of `call` (path, `GET`), or of the workflow run.
fn runs_of(
    env: &Env,
    r: &Running,
    connections: usize,
    bearer_file: Option<&Path>,
    call: Option<(&str, bool)>,
) -> Result<RunsResult, String> {
    let pids = r.pids();
    let mut args = vec![
        "runs".to_owned(),
        "--connections".into(),
        connections.to_string(),
        "--warmup-ms".into(),
        env.opts.warmup_ms.to_string(),
        "--duration-ms".into(),
        env.opts.duration_ms.to_string(),
        "--host-pid".into(),
        env.host_pid.to_string(),
    ];
    if let Some(path) = bearer_file {
        args.push("--bearer-file".into());
        args.push(path.display().to_string());
    }
    if let Some((path, get)) = call {
        args.push("--path".into());
        args.push(path.to_owned());
        if get {
            args.push("--get".into());
        }
    }
    if !pids.is_empty() {
        args.push("--proxy-pids".into());
        args.push(
            pids.iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(","),
        );
    }
    let limit =
        Duration::from_millis(env.opts.warmup_ms + env.opts.duration_ms) + Duration::from_secs(60);
    let json = load(env, r, &args, limit)?;
    serde_json::from_str(&json).map_err(|e| e.to_string())
}

fn sse(env: &Env, r: &Running) -> Result<SseResult, String> {
    let o = &env.opts;
    let timeout =
        Duration::from_micros(o.sse_gap_us * u64::from(o.sse_events)) + Duration::from_secs(30);
    let args = vec![
        "sse".to_owned(),
        "--streams".into(),
        o.sse_streams.to_string(),
        "--events".into(),
        o.sse_events.to_string(),
        "--gap-us".into(),
        o.sse_gap_us.to_string(),
        "--timeout-secs".into(),
        timeout.as_secs().to_string(),
    ];
    let json = load(env, r, &args, timeout + Duration::from_secs(15))?;
    serde_json::from_str(&json).map_err(|e| e.to_string())
}

/// Opens `streams` idle streams through `r`, reads the proxy's RSS while
/// they are held, then lets them go.
fn idle_streams(
    env: &Env,
    r: &Running,
    streams: usize,
) -> Result<(IdleResult, Option<u64>, Option<u64>), String> {
    let pids = r.pids();
    let before = (!pids.is_empty()).then(|| rss_kib_of(&pids)).flatten();
    let open = env.opts.idle_open_timeout_secs;
    let mut child = Command::new(env.bin_dir.join("bench-load"))
        .arg("--addr")
        .arg(r.addr.to_string())
        .args([
            "idle",
            "--streams",
            &streams.to_string(),
            "--open-timeout-secs",
            &open.to_string(),
            "--hold-secs",
            "120",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("bench-load: {e}"))?;
    let stdin: Option<ChildStdin> = child.stdin.take();
    let lines = read_lines(&mut child)?;
    let held = wait_for(&lines, "HELD ", Duration::from_secs(open + 30));
    // Settle, then read RSS with every stream open.
    std::thread::sleep(Duration::from_millis(500));
    let held_rss = (!pids.is_empty()).then(|| rss_kib_of(&pids)).flatten();
    if let Some(mut stdin) = stdin {
        let _ = stdin.write_all(b"release\n");
    }
    let result = held.and_then(|_| wait_for(&lines, "RESULT ", Duration::from_secs(30)));
    let _ = child.kill();
    let _ = child.wait();
    let result: IdleResult = serde_json::from_str(&result?).map_err(|e| e.to_string())?;
    Ok((result, before, held_rss))
}

fn find_nginx(name: &str) -> Result<String, String> {
    let candidates = [name.to_owned(), "/usr/sbin/nginx".to_owned()];
    for c in candidates {
        if Command::new(&c)
            .arg("-v")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            return Ok(c);
        }
    }
    Err("nginx is not installed (`apt-get install -y nginx`)".into())
}

fn find_python(given: Option<&str>) -> Result<String, String> {
    let mut candidates: Vec<String> = Vec::new();
    if let Some(p) = given {
        candidates.push(p.to_owned());
    }
    if let Ok(p) = std::env::var("BENCH_PYTHON") {
        candidates.push(p);
    }
    candidates.extend([".venv/bin/python".to_owned(), "python3".to_owned()]);
    for c in &candidates {
        let ok = Command::new(c)
            .args(["-c", "import agno.os, agno.workflow, uvicorn"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Ok(c.clone());
        }
    }
    Err(format!(
        "no Python with agno found (tried {}): `pip install -r bench/requirements.txt` and pass --python",
        candidates.join(", ")
    ))
}

fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    Some(text.trim().to_owned())
}

fn machine(env: &Env) -> BTreeMap<&'static str, String> {
    let mut m = BTreeMap::new();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    m.insert("cpu", model);
    m.insert(
        "nproc",
        std::thread::available_parallelism().map_or("?".into(), |n| n.to_string()),
    );
    m.insert(
        "kernel",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
    );
    let mem = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    m.insert(
        "memory",
        mem.lines()
            .next()
            .unwrap_or("")
            .trim_start_matches("MemTotal:")
            .trim()
            .to_owned(),
    );
    m.insert(
        "nofile",
        format!("{} soft / {} hard", env.nofile.0, env.nofile.1),
    );
    if let Ok(nginx) = &env.nginx {
        m.insert("nginx", command_output(nginx, &["-v"]).unwrap_or_default());
    }
    if let Ok(python) = &env.python {
        m.insert(
            "agno",
            command_output(python, &["-c", "import agno, uvicorn, importlib.metadata as m; print('agno', m.version('agno'), 'uvicorn', uvicorn.__version__)"]).unwrap_or_default(),
        );
    }
    if let Ok(gateway) = &env.gateway {
        m.insert(
            "agentos-gateway",
            command_output(&gateway.display().to_string(), &["--version"]).unwrap_or_default(),
        );
    }
    let o = &env.opts;
    m.insert("command", std::env::args().collect::<Vec<_>>().join(" "));
    m.insert(
        "settings",
        format!(
            "rounds {}, runs {} ms after {} ms warm-up at {:?} connections, sse {} streams × {} events every {} µs, {} idle streams",
            o.rounds, o.duration_ms, o.warmup_ms, o.connections, o.sse_streams, o.sse_events, o.sse_gap_us, idle_stream_count(env)
        ),
    );
    m
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// The median over rounds of `f(round's measurements)`.
fn over_rounds(
    rounds: &[BTreeMap<Kind, Measured>],
    f: impl Fn(&BTreeMap<Kind, Measured>) -> Option<f64>,
) -> Option<f64> {
    median(rounds.iter().filter_map(f).collect())
}

fn fmt(v: Option<f64>, digits: usize) -> String {
    v.map_or("—".to_owned(), |v| format!("{v:.digits$}"))
}

fn ratio(v: Option<f64>) -> String {
    v.map_or("—".to_owned(), |v| format!("{v:.2}×"))
}

fn signed(v: Option<f64>, digits: usize) -> String {
    v.map_or("—".to_owned(), |v| format!("{v:+.digits$}"))
}

/// Proxy CPU microseconds per request in one round.
/// `None` for a round in which the contender answered nothing (a stalled
/// proxy): per-request figures do not exist then.
fn cpu_per_request(r: &RunsResult) -> Option<f64> {
    let us = r.cpu.proxy_us?;
    (r.requests > 0).then(|| us as f64 / r.requests as f64)
}

/// A latency of a round with answers (see [`cpu_per_request`]).
fn latency(r: &RunsResult, f: fn(&Percentiles) -> f64) -> Option<f64> {
    (r.requests > 0).then(|| f(&r.latency))
}

/// Bytes of proxy RSS per held idle stream in one round.
fn rss_per_stream(m: &Measured) -> Option<f64> {
    let held = m.idle.as_ref()?.held;
    if held == 0 {
        return None;
    }
    let grew = m.idle_rss_held_kib?.saturating_sub(m.idle_rss_before_kib?);
    Some(grew as f64 * 1024.0 / held as f64)
}

/// The `surface` workload's table: per call and contender, throughput,
/// latency, the proxy's CPU per call and its latency over direct's; then the
/// gateway's CPU per call against its own workflow run's, within each round.
fn surface_report(
    kinds: &[Kind],
    rounds: &[BTreeMap<Kind, Measured>],
    connections: usize,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n## The AgentOS surface: an agent run and a sessions listing ({connections} connections)\n"
    );
    let _ = writeln!(
        out,
        "| call | contender | req/s | p50 µs | p50 over direct µs | proxy CPU µs/call | errors |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    let result = |round: &BTreeMap<Kind, Measured>, k: Kind, name: &str| {
        round.get(&k).and_then(|m| m.surface.get(name)).cloned()
    };
    for &(name, _, _) in SURFACE {
        for &k in kinds.iter().filter(|k| **k != Kind::Agno) {
            let of = |f: &dyn Fn(&RunsResult) -> Option<f64>| {
                over_rounds(rounds, |round| result(round, k, name).as_ref().and_then(f))
            };
            let over_direct = over_rounds(rounds, |round| {
                let mine = result(round, k, name)?;
                let direct = result(round, Kind::Direct, name)?;
                Some(latency(&mine, |p| p.p50_us)? - latency(&direct, |p| p.p50_us)?)
            });
            let errors: u64 = rounds
                .iter()
                .filter_map(|round| result(round, k, name))
                .map(|r| r.errors)
                .sum();
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {} | {} | {} | {errors} |",
                k.name(),
                fmt(of(&|r| Some(r.rps)), 0),
                fmt(of(&|r| latency(r, |p| p.p50_us)), 0),
                if k == Kind::Direct {
                    "—".to_owned()
                } else {
                    signed(over_direct, 0)
                },
                if k == Kind::Direct {
                    "—".to_owned()
                } else {
                    fmt(of(&cpu_per_request), 1)
                },
            );
        }
    }
    let _ = writeln!(
        out,
        "\nThe gateway's CPU per call against its workflow run's, within each round (median):"
    );
    for &(name, _, _) in &SURFACE[1..] {
        let versus = over_rounds(rounds, |round| {
            let call = cpu_per_request(&result(round, Kind::Gateway, name)?)?;
            let run = cpu_per_request(&result(round, Kind::Gateway, SURFACE[0].0)?)?;
            Some(call / run)
        });
        let _ = writeln!(out, "- {name}: {}", ratio(versus));
    }
    out
}

fn report(
    env: &Env,
    kinds: &[Kind],
    rounds: &[BTreeMap<Kind, Measured>],
    machine: &BTreeMap<&'static str, String>,
) -> String {
    let mut out = String::new();
    let o = &env.opts;
    let proxies: Vec<Kind> = kinds
        .iter()
        .copied()
        .filter(|k| *k != Kind::Direct)
        .collect();
    let get =
        |round: &BTreeMap<Kind, Measured>, k: Kind| round.get(&k).cloned().unwrap_or_default();
    let _ = writeln!(out, "# agentos-gateway benchmark results\n");
    let _ = writeln!(
        out,
        "Machine: {} × {} (nproc {}), kernel {}, {}; client, host and proxy share the cores.",
        machine.get("cpu").map_or("?", |s| s.as_str()),
        machine.get("nproc").map_or("?", |s| s.as_str()),
        machine.get("nproc").map_or("?", |s| s.as_str()),
        machine.get("kernel").map_or("?", |s| s.as_str()),
        machine.get("memory").map_or("?", |s| s.as_str()),
    );
    let _ = writeln!(
        out,
        "Command: `{}`",
        machine.get("command").map_or("", |s| s.as_str())
    );
    let _ = writeln!(
        out,
        "Settings: {}.",
        machine.get("settings").map_or("", |s| s.as_str())
    );
    for key in ["agentos-gateway", "nginx", "agno"] {
        if let Some(v) = machine.get(key) {
            let _ = writeln!(out, "{key}: {}", v.replace('\n', " "));
        }
    }
    let _ = writeln!(
        out,
        "\nEvery figure is the median over {} round(s); ratios are taken within a round, then the median.",
        rounds.len()
    );

    for &connections in &o.connections {
        let _ = writeln!(out, "\n## Non-streaming runs, {connections} connections\n");
        let _ = writeln!(
            out,
            "| contender | throughput vs direct | throughput vs nginx | CPU/req vs nginx | added p50 µs | added p99 µs | req/s | p50 µs | p99 µs | p99.9 µs | proxy CPU µs/req | host CPU µs/req | errors |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        for &k in kinds {
            let r = |round: &BTreeMap<Kind, Measured>, k: Kind| {
                get(round, k).runs.get(&connections).cloned()
            };
            let vs = |base: Kind, f: &dyn Fn(&RunsResult) -> Option<f64>| {
                over_rounds(rounds, |round| {
                    let a = f(&r(round, k)?)?;
                    let b = f(&r(round, base)?)?;
                    (b > 0.0).then(|| a / b)
                })
            };
            let diff = |f: fn(&Percentiles) -> f64| {
                over_rounds(rounds, |round| {
                    Some(latency(&r(round, k)?, f)? - latency(&r(round, Kind::Direct)?, f)?)
                })
            };
            let abs = |f: &dyn Fn(&RunsResult) -> Option<f64>| {
                over_rounds(rounds, |round| f(&r(round, k)?))
            };
            let is_proxy = k != Kind::Direct;
            let any = rounds.iter().any(|round| r(round, k).is_some());
            if !any {
                let _ = writeln!(
                    out,
                    "| {} | not run: {} |||||||||||| |",
                    k.name(),
                    notes(rounds, k)
                );
                continue;
            }
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                k.name(),
                ratio(vs(Kind::Direct, &|x| Some(x.rps))),
                if kinds.contains(&Kind::Nginx) {
                    ratio(vs(Kind::Nginx, &|x| Some(x.rps)))
                } else {
                    "—".into()
                },
                if is_proxy && kinds.contains(&Kind::Nginx) {
                    ratio(vs(Kind::Nginx, &cpu_per_request))
                } else {
                    "—".into()
                },
                if is_proxy {
                    signed(diff(|l| l.p50_us), 0)
                } else {
                    "—".into()
                },
                if is_proxy {
                    signed(diff(|l| l.p99_us), 0)
                } else {
                    "—".into()
                },
                fmt(abs(&|x| Some(x.rps)), 0),
                fmt(abs(&|x| latency(x, |l| l.p50_us)), 0),
                fmt(abs(&|x| latency(x, |l| l.p99_us)), 0),
                fmt(abs(&|x| latency(x, |l| l.p999_us)), 0),
                if is_proxy {
                    fmt(abs(&cpu_per_request), 1)
                } else {
                    "—".into()
                },
                fmt(
                    abs(&|x| x.cpu.host_us.map(|us| us as f64 / x.requests.max(1) as f64)),
                    1
                ),
                fmt(abs(&|x| Some(x.errors as f64)), 0),
            );
        }
    }

    let _ = writeln!(
        out,
        "\n## SSE: {} streams × {} events, {} µs apart (per-event delay: arrival minus the host's send stamp)\n",
        o.sse_streams, o.sse_events, o.sse_gap_us
    );
    let _ = writeln!(
        out,
        "| contender | added p50 vs nginx's | added p50 µs | added p99 µs | p50 µs | p99 µs | max µs | events | errors |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    for &k in kinds {
        let s = |round: &BTreeMap<Kind, Measured>, k: Kind| get(round, k).sse;
        if !rounds.iter().any(|round| s(round, k).is_some()) {
            let _ = writeln!(
                out,
                "| {} | not run: {} |||||||| |",
                k.name(),
                notes(rounds, k)
            );
            continue;
        }
        let added = |round: &BTreeMap<Kind, Measured>, k: Kind, f: &dyn Fn(&SseResult) -> f64| {
            Some(f(&s(round, k)?) - f(&s(round, Kind::Direct)?))
        };
        let is_proxy = k != Kind::Direct;
        let vs_nginx = over_rounds(rounds, |round| {
            let a = added(round, k, &|x| x.delay.p50_us)?;
            let b = added(round, Kind::Nginx, &|x| x.delay.p50_us)?;
            (b > 0.0).then(|| a / b)
        });
        let abs =
            |f: &dyn Fn(&SseResult) -> f64| over_rounds(rounds, |round| Some(f(&s(round, k)?)));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            k.name(),
            if is_proxy && kinds.contains(&Kind::Nginx) {
                ratio(vs_nginx)
            } else {
                "—".into()
            },
            if is_proxy {
                signed(
                    over_rounds(rounds, |round| added(round, k, &|x| x.delay.p50_us)),
                    0,
                )
            } else {
                "—".into()
            },
            if is_proxy {
                signed(
                    over_rounds(rounds, |round| added(round, k, &|x| x.delay.p99_us)),
                    0,
                )
            } else {
                "—".into()
            },
            fmt(abs(&|x| x.delay.p50_us), 0),
            fmt(abs(&|x| x.delay.p99_us), 0),
            fmt(abs(&|x| x.delay.max_us), 0),
            fmt(abs(&|x| x.events as f64), 0),
            fmt(abs(&|x| x.errors as f64), 0),
        );
    }

    let streams = idle_stream_count(env);
    let _ = writeln!(
        out,
        "\n## {streams} idle open streams; idle process; start-up\n"
    );
    if streams < o.idle_streams {
        let _ = writeln!(
            out,
            "Idle streams capped at {streams} of the requested {}: the hard RLIMIT_NOFILE here is {}, and a one-process proxy needs two descriptors per stream plus its own.\n",
            o.idle_streams, env.nofile.1
        );
    }
    let _ = writeln!(
        out,
        "| contender | RSS/stream vs nginx | idle RSS vs nginx | RSS per open stream KiB | streams held | errors | open all s | idle RSS MiB | start → ready ms |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    for &k in &proxies {
        let m = |round: &BTreeMap<Kind, Measured>, k: Kind| get(round, k);
        let vs = |f: &dyn Fn(&Measured) -> Option<f64>| {
            over_rounds(rounds, |round| {
                let a = f(&m(round, k))?;
                let b = f(&m(round, Kind::Nginx))?;
                (b > 0.0).then(|| a / b)
            })
        };
        let abs =
            |f: &dyn Fn(&Measured) -> Option<f64>| over_rounds(rounds, |round| f(&m(round, k)));
        let idle_rss = |x: &Measured| x.idle_rss_kib.map(|v| v as f64);
        if !rounds.iter().any(|round| m(round, k).startup_ms.is_some()) {
            let _ = writeln!(
                out,
                "| {} | not run: {} |||||||| |",
                k.name(),
                notes(rounds, k)
            );
            continue;
        }
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            k.name(),
            if kinds.contains(&Kind::Nginx) {
                ratio(vs(&rss_per_stream))
            } else {
                "—".into()
            },
            if kinds.contains(&Kind::Nginx) {
                ratio(vs(&idle_rss))
            } else {
                "—".into()
            },
            fmt(abs(&rss_per_stream).map(|b| b / 1024.0), 1),
            fmt(abs(&|x| x.idle.as_ref().map(|i| i.held as f64)), 0),
            fmt(abs(&|x| x.idle.as_ref().map(|i| i.errors as f64)), 0),
            fmt(abs(&|x| x.idle.as_ref().map(|i| i.open_seconds)), 1),
            fmt(abs(&idle_rss).map(|k| k / 1024.0), 1),
            fmt(abs(&|x| x.startup_ms), 1),
        );
    }
    let direct_idle = over_rounds(rounds, |round| {
        get(round, Kind::Direct).idle.map(|i| i.errors as f64)
    });
    let _ = writeln!(
        out,
        "\n(direct: idle-stream errors {}; the host holds the streams itself.)",
        fmt(direct_idle, 0)
    );

    // Targets are for the full run: a seconds-long smoke states only that
    // every workload ran.
    if kinds.contains(&Kind::Gateway) && !o.smoke {
        let _ = writeln!(out, "\n## Issue 17's targets (agentos-gateway, this run)\n");
        let g = Kind::Gateway;
        let n = Kind::Nginx;
        let check = |ok: Option<bool>| match ok {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "not measured",
        };
        for &c in &o.connections {
            let rps = |round: &BTreeMap<Kind, Measured>, k: Kind| {
                get(round, k).runs.get(&c).map(|r| r.rps)
            };
            let cpu = |round: &BTreeMap<Kind, Measured>, k: Kind| {
                get(round, k).runs.get(&c).and_then(cpu_per_request)
            };
            let t = over_rounds(rounds, |round| Some(rps(round, g)? / rps(round, n)?));
            let u = over_rounds(rounds, |round| Some(cpu(round, g)? / cpu(round, n)?));
            let _ = writeln!(
                out,
                "- throughput ≥ 1.0× nginx at {c} connections: {} ({})",
                check(t.map(|t| t >= 1.0)),
                ratio(t)
            );
            let _ = writeln!(
                out,
                "- CPU per request ≤ nginx's at {c} connections: {} ({})",
                check(u.map(|u| u <= 1.0)),
                ratio(u)
            );
        }
        let added = |round: &BTreeMap<Kind, Measured>, k: Kind, f: fn(&SseResult) -> f64| {
            Some(f(get(round, k).sse.as_ref()?) - f(get(round, Kind::Direct).sse.as_ref()?))
        };
        let p50 = over_rounds(rounds, |round| {
            Some(added(round, g, |x| x.delay.p50_us)? - added(round, n, |x| x.delay.p50_us)?)
        });
        let _ = writeln!(
            out,
            "- SSE added per-event delay p50 ≤ nginx's: {} (gateway minus nginx: {} µs)",
            check(p50.map(|d| d <= 0.0)),
            signed(p50, 0)
        );
        let p99 = over_rounds(rounds, |round| added(round, g, |x| x.delay.p99_us));
        let _ = writeln!(
            out,
            "- SSE added per-event delay p99 ≤ +1 ms: {} ({} µs)",
            check(p99.map(|d| d <= 1000.0)),
            signed(p99, 0)
        );
        let per = over_rounds(rounds, |round| rss_per_stream(&get(round, g)));
        let errs = over_rounds(rounds, |round| {
            get(round, g)
                .idle
                .map(|i| (i.errors + (i.requested - i.held) as u64) as f64)
        });
        let _ = writeln!(
            out,
            "- ≤ 16 KiB RSS per idle open stream, {streams} held, zero errors: {} ({} KiB, {} errors)",
            check(per.zip(errs).map(|(p, e)| p <= 16.0 * 1024.0 && e == 0.0)),
            fmt(per.map(|b| b / 1024.0), 1),
            fmt(errs, 0)
        );
        let idle = over_rounds(rounds, |round| get(round, g).idle_rss_kib.map(|k| k as f64));
        let _ = writeln!(
            out,
            "- idle RSS ≤ 15 MB: {} ({} MiB)",
            check(idle.map(|k| k * 1024.0 <= 15e6)),
            fmt(idle.map(|k| k / 1024.0), 1)
        );
        let ready = over_rounds(rounds, |round| get(round, g).startup_ms);
        let _ = writeln!(
            out,
            "- ready within 100 ms of start: {} ({} ms)",
            check(ready.map(|ms| ms <= 100.0)),
            fmt(ready, 1)
        );
    }
    out
}

fn notes(rounds: &[BTreeMap<Kind, Measured>], k: Kind) -> String {
    rounds
        .iter()
        .filter_map(|r| r.get(&k))
        .flat_map(|m| m.notes.iter().cloned())
        .next()
        .unwrap_or_else(|| "no result".into())
}
