//! bench-load: the load client. One workload per invocation, against one
//! address, printing one `RESULT {json}` line on stdout:
//! - `runs`: closed-loop non-streaming runs on N keep-alive connections
//!   (throughput, latency percentiles, and the CPU time the named processes
//!   used in the measured window, read from `/proc`);
//! - `sse`: N timed event streams; per-event delay = arrival time minus the
//!   host's `sent_ns` stamp;
//! - `idle`: N streams opened and held quiet; prints `HELD {json}` once they
//!   are open, holds them until a line arrives on stdin (or `--hold-secs`),
//!   then closes them.
//!
//! Every loop is bounded in time, and the address must be on loopback.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use agentos_gateway_bench::{
    CpuUse, IdleResult, Percentiles, RunsResult, SseResult, cpu_us, cpu_us_of, now_ns, sent_ns,
};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncBufReadExt;
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};

#[derive(Parser)]
struct Args {
    /// Where to send the load; must be a loopback address.
    #[arg(long)]
    addr: SocketAddr,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    #[command(subcommand)]
    workload: Workload,
}

#[derive(Subcommand)]
enum Workload {
    /// Closed-loop `POST /workflows/bench/runs` with `stream=false` (or
    /// another call: `--path`, `--get`).
    Runs {
        #[arg(long, default_value_t = 32)]
        connections: usize,
        #[arg(long, default_value_t = 1000)]
        warmup_ms: u64,
        #[arg(long, default_value_t = 5000)]
        duration_ms: u64,
        /// Processes whose CPU time counts as the proxy's (comma-separated).
        #[arg(long, value_delimiter = ',')]
        proxy_pids: Vec<u32>,
        #[arg(long)]
        host_pid: Option<u32>,
        /// Bearer tokens, one per line: each request carries the next one
        /// (connection `c`'s `i`-th request takes token `(c + i) % n`), so a
        /// few distinct callers share the load, as in production.
        #[arg(long)]
        bearer_file: Option<std::path::PathBuf>,
        /// The path (and query) called: an agent's runs, say.
        #[arg(long, default_value = RUN_PATH)]
        path: String,
        /// A `GET` without a body instead of the run form (a sessions
        /// listing, say).
        #[arg(long)]
        get: bool,
    },
    /// Timed streams of `POST /workflows/bench/runs` with `stream=true`.
    Sse {
        #[arg(long, default_value_t = 64)]
        streams: usize,
        #[arg(long, default_value_t = 200)]
        events: u32,
        #[arg(long, default_value_t = 5000)]
        gap_us: u64,
        #[arg(long, default_value_t = 60)]
        timeout_secs: u64,
    },
    /// Streams of `POST /workflows/idle/runs`, opened and held.
    Idle {
        #[arg(long, default_value_t = 10_000)]
        streams: usize,
        /// Streams being opened at once.
        #[arg(long, default_value_t = 128)]
        concurrency: usize,
        /// Deadline for opening every stream; the rest count as errors.
        #[arg(long, default_value_t = 60)]
        open_timeout_secs: u64,
        /// Longest hold when no line arrives on stdin.
        #[arg(long, default_value_t = 120)]
        hold_secs: u64,
    },
}

const RUN_PATH: &str = "/workflows/bench/runs";
const IDLE_PATH: &str = "/workflows/idle/runs";
const FORM: &str = "application/x-www-form-urlencoded";

fn main() {
    let args = Args::parse();
    if !args.addr.ip().is_loopback() {
        eprintln!("bench-load: {} is not a loopback address", args.addr);
        std::process::exit(2);
    }
    agentos_gateway_bench::raise_nofile();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench-load: runtime: {e}");
            std::process::exit(1);
        }
    };
    let addr = args.addr;
    let out = runtime.block_on(async move {
        match args.workload {
            Workload::Runs {
                connections,
                warmup_ms,
                duration_ms,
                proxy_pids,
                host_pid,
                bearer_file,
                path,
                get,
            } => match (bearers(bearer_file.as_deref()), path.parse::<http::Uri>()) {
                (Ok(bearers), Ok(path)) => serde_json::to_string(
                    &runs(
                        addr,
                        connections,
                        Duration::from_millis(warmup_ms),
                        Duration::from_millis(duration_ms),
                        &proxy_pids,
                        host_pid,
                        Call { path, get, bearers },
                    )
                    .await,
                ),
                (_, Err(e)) => {
                    eprintln!("bench-load: --path: {e}");
                    std::process::exit(2);
                }
                (Err(e), _) => {
                    eprintln!("bench-load: {e}");
                    std::process::exit(2);
                }
            },
            Workload::Sse {
                streams,
                events,
                gap_us,
                timeout_secs,
            } => serde_json::to_string(
                &sse(
                    addr,
                    streams,
                    events,
                    Duration::from_micros(gap_us),
                    Duration::from_secs(timeout_secs),
                )
                .await,
            ),
            Workload::Idle {
                streams,
                concurrency,
                open_timeout_secs,
                hold_secs,
            } => serde_json::to_string(
                &idle(
                    addr,
                    streams,
                    concurrency,
                    Duration::from_secs(open_timeout_secs),
                    Duration::from_secs(hold_secs),
                )
                .await,
            ),
        }
    });
    match out {
        Ok(json) => println!("RESULT {json}"),
        Err(e) => {
            eprintln!("bench-load: {e}");
            std::process::exit(1);
        }
    }
    // Held connections and stragglers are not waited for.
    runtime.shutdown_background();
}

/// One keep-alive HTTP/1.1 connection.
async fn connect(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

fn post(addr: SocketAddr, path: &'static str, body: Bytes) -> Request<Full<Bytes>> {
    request(addr, http::Method::POST, http::Uri::from_static(path), body)
}

/// What the `runs` workload calls, and with which credentials.
struct Call {
    path: http::Uri,
    /// A bodiless `GET`, else the run form.
    get: bool,
    /// `Authorization` values taken in turn (none: no header).
    bearers: Arc<[HeaderValue]>,
}

fn request(
    addr: SocketAddr,
    method: http::Method,
    path: http::Uri,
    body: Bytes,
) -> Request<Full<Bytes>> {
    let post = method == http::Method::POST;
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = method;
    *request.uri_mut() = path;
    let headers = request.headers_mut();
    if let Ok(host) = HeaderValue::from_str(&addr.to_string()) {
        headers.insert(HOST, host);
    }
    if post {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(FORM));
    }
    request
}

/// The `Authorization` values of `--bearer-file` (none without one).
fn bearers(path: Option<&std::path::Path>) -> Result<Arc<[HeaderValue]>, String> {
    let Some(path) = path else {
        return Ok(Arc::from(Vec::new()));
    };
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|t| {
            HeaderValue::from_str(&format!("Bearer {t}"))
                .map_err(|e| format!("{}: {e}", path.display()))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Arc::from)
}

/// Closed loop on `connections` connections: warm up, then count and time
/// every request that completes inside the window.
async fn runs(
    addr: SocketAddr,
    connections: usize,
    warmup: Duration,
    window: Duration,
    proxy_pids: &[u32],
    host_pid: Option<u32>,
    call: Call,
) -> RunsResult {
    let call = Arc::new(call);
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (phase_tx, phase_rx) = watch::channel(false);
    let body = if call.get {
        Bytes::new()
    } else {
        Bytes::from_static(b"message=hello&stream=false")
    };
    let mut tasks = Vec::with_capacity(connections);
    for connection in 0..connections {
        let (errors, stop, mut phase, body, call) = (
            errors.clone(),
            stop.clone(),
            phase_rx.clone(),
            body.clone(),
            call.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies: Vec<u64> = Vec::with_capacity(64 * 1024);
            let mut next_bearer = connection;
            let mut sender = None;
            let mut failures = 0u32;
            while !stop.load(Ordering::Relaxed) {
                if sender.is_none() {
                    match connect(addr).await {
                        Ok(s) => sender = Some(s),
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            failures += 1;
                            if failures > 100 {
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    }
                }
                let Some(s) = sender.as_mut() else { continue };
                if s.ready().await.is_err() {
                    sender = None;
                    continue;
                }
                let measuring = *phase.borrow_and_update();
                let start = Instant::now();
                let method = if call.get {
                    http::Method::GET
                } else {
                    http::Method::POST
                };
                let mut request = request(addr, method, call.path.clone(), body.clone());
                if !call.bearers.is_empty() {
                    let bearer = call.bearers[next_bearer % call.bearers.len()].clone();
                    next_bearer = next_bearer.wrapping_add(1);
                    request.headers_mut().insert(AUTHORIZATION, bearer);
                }
                let ok = match s.send_request(request).await {
                    Ok(response) => {
                        let status = response.status();
                        let body = response.into_body().collect().await;
                        status == StatusCode::OK && body.is_ok()
                    }
                    Err(_) => {
                        sender = None;
                        false
                    }
                };
                let elapsed = start.elapsed();
                // Only requests that started and ended inside the window count.
                if measuring && !stop.load(Ordering::Relaxed) {
                    if ok {
                        latencies.push(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            latencies
        }));
    }
    tokio::time::sleep(warmup).await;
    let pids_cpu = |pids: &[u32]| {
        if pids.is_empty() {
            None
        } else {
            cpu_us_of(pids)
        }
    };
    let me = std::process::id();
    let (proxy0, host0, client0) = (
        pids_cpu(proxy_pids),
        host_pid.and_then(cpu_us),
        cpu_us(me).unwrap_or(0),
    );
    errors.store(0, Ordering::Relaxed);
    let started = Instant::now();
    let _ = phase_tx.send(true);
    tokio::time::sleep(window).await;
    stop.store(true, Ordering::Relaxed);
    let seconds = started.elapsed().as_secs_f64();
    let (proxy1, host1, client1) = (
        pids_cpu(proxy_pids),
        host_pid.and_then(cpu_us),
        cpu_us(me).unwrap_or(0),
    );
    let mut all = Vec::new();
    // Stragglers stuck on a stalled contender are abandoned after a bound.
    let collect = async {
        for task in tasks {
            if let Ok(l) = task.await {
                all.extend(l);
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(30), collect).await;
    let requests = all.len() as u64;
    RunsResult {
        connections,
        requests,
        errors: errors.load(Ordering::Relaxed),
        seconds,
        rps: requests as f64 / seconds,
        latency: Percentiles::of_ns(&mut all),
        cpu: CpuUse {
            proxy_us: proxy0.zip(proxy1).map(|(a, b)| b.saturating_sub(a)),
            host_us: host0.zip(host1).map(|(a, b)| b.saturating_sub(a)),
            client_us: client1.saturating_sub(client0),
        },
    }
}

/// Splits `buffer` into complete SSE events (ending in a blank line) and
/// calls `each` on them; keeps the incomplete tail.
fn drain_events(buffer: &mut Vec<u8>, mut each: impl FnMut(&[u8])) {
    let mut start = 0;
    while let Some(end) = buffer[start..].windows(2).position(|w| w == b"\n\n") {
        each(&buffer[start..start + end + 2]);
        start += end + 2;
    }
    buffer.drain(..start);
}

/// `streams` timed streams, started spread over one gap so that events of
/// different streams do not all fall on the same instant.
async fn sse(
    addr: SocketAddr,
    streams: usize,
    events: u32,
    gap: Duration,
    timeout: Duration,
) -> SseResult {
    let errors = Arc::new(AtomicU64::new(0));
    let form = Bytes::from(format!(
        "message=hello&stream=true&events={events}&gap_us={}",
        gap.as_micros()
    ));
    let mut tasks = Vec::with_capacity(streams);
    for i in 0..streams {
        let (errors, form) = (errors.clone(), form.clone());
        let offset = gap.mul_f64(i as f64 / streams.max(1) as f64);
        tasks.push(tokio::spawn(async move {
            let mut delays: Vec<u64> = Vec::with_capacity(events as usize);
            tokio::time::sleep(offset).await;
            let one = async {
                let mut sender = connect(addr).await?;
                let response = sender
                    .send_request(post(addr, RUN_PATH, form))
                    .await
                    .map_err(|e| format!("request: {e}"))?;
                if response.status() != StatusCode::OK {
                    return Err(format!("status {}", response.status()));
                }
                let mut body = response.into_body();
                let mut buffer = Vec::with_capacity(1024);
                while let Some(frame) = body.frame().await {
                    let frame = frame.map_err(|e| format!("body: {e}"))?;
                    let arrived = now_ns();
                    if let Some(data) = frame.data_ref() {
                        buffer.extend_from_slice(data);
                        drain_events(&mut buffer, |event| {
                            if let Some(sent) = sent_ns(event) {
                                delays.push(arrived.saturating_sub(sent));
                            }
                        });
                    }
                }
                Ok::<_, String>(())
            };
            match tokio::time::timeout(timeout, one).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    eprintln!("bench-load sse: {e}");
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            if delays.len() < events as usize {
                errors.fetch_add(1, Ordering::Relaxed);
            }
            delays
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        if let Ok(d) = task.await {
            all.extend(d);
        }
    }
    SseResult {
        streams,
        events_expected: streams as u64 * u64::from(events),
        events: all.len() as u64,
        errors: errors.load(Ordering::Relaxed),
        delay: Percentiles::of_ns(&mut all),
    }
}

/// Opens `streams` idle streams (each counts once its first event arrived),
/// reports them held, and holds them until told to let go.
async fn idle(
    addr: SocketAddr,
    streams: usize,
    concurrency: usize,
    open_timeout: Duration,
    hold: Duration,
) -> IdleResult {
    let opening = Arc::new(Semaphore::new(concurrency.max(1)));
    let (release_tx, release_rx) = watch::channel(false);
    let (opened_tx, mut opened_rx) = tokio::sync::mpsc::unbounded_channel::<Result<(), String>>();
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + open_timeout;
    let form = Bytes::from_static(b"message=hello&stream=true");
    for _ in 0..streams {
        let (opening, mut release, opened, form) = (
            opening.clone(),
            release_rx.clone(),
            opened_tx.clone(),
            form.clone(),
        );
        tokio::spawn(async move {
            let open = async {
                let _permit = opening.acquire().await.map_err(|e| e.to_string())?;
                let mut sender = connect(addr).await?;
                let response = sender
                    .send_request(post(addr, IDLE_PATH, form))
                    .await
                    .map_err(|e| format!("request: {e}"))?;
                if response.status() != StatusCode::OK {
                    return Err(format!("status {}", response.status()));
                }
                let mut body = response.into_body();
                match body.frame().await {
                    Some(Ok(_)) => Ok((sender, body)),
                    Some(Err(e)) => Err(format!("body: {e}")),
                    None => Err("stream ended before its first event".to_owned()),
                }
            };
            match tokio::time::timeout_at(deadline, open).await {
                Ok(Ok(held)) => {
                    let _ = opened.send(Ok(()));
                    // Hold the connection and the body until released.
                    let _ = release.wait_for(|r| *r).await;
                    drop(held);
                }
                Ok(Err(e)) => {
                    let _ = opened.send(Err(e));
                }
                Err(_) => {
                    let _ = opened.send(Err("not open before the deadline".to_owned()));
                }
            }
        });
    }
    drop(opened_tx);
    let mut result = IdleResult {
        requested: streams,
        ..IdleResult::default()
    };
    for _ in 0..streams {
        match opened_rx.recv().await {
            Some(Ok(())) => result.held += 1,
            Some(Err(e)) => {
                result.errors += 1;
                if result.sample_errors.len() < 5 && !result.sample_errors.contains(&e) {
                    result.sample_errors.push(e);
                }
            }
            None => break,
        }
    }
    result.open_seconds = started.elapsed().as_secs_f64();
    if let Ok(json) = serde_json::to_string(&result) {
        println!("HELD {json}");
    }
    let mut line = String::new();
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin());
    let _ = tokio::time::timeout(hold, stdin.read_line(&mut line)).await;
    let _ = release_tx.send(true);
    // Give the tasks a moment to drop their connections.
    tokio::time::sleep(Duration::from_millis(100)).await;
    result
}
