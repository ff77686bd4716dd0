//! agentos-gateway-bench: the pieces the three benchmark binaries share.
//!
//! - `bench-host` (src/bin/bench-host.rs): a fast fake AgentOS host.
//! - `bench-load` (src/bin/bench-load.rs): the load client, one workload per run,
//!   printing one `RESULT {json}` line.
//! - `bench` (src/main.rs): the orchestrator that starts the host and every
//!   contender, runs the workloads interleaved and writes the tables.
//!
//! This file owns what they agree on: listeners with a large backlog, the
//! clock the host stamps events with, the result records the load client
//! prints, percentiles, and the `/proc` readers (RSS, CPU time, children).

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Backlog of every listener the bench owns (the host; nginx and uvicorn are
/// configured to the same value). The kernel caps it at `net.core.somaxconn`.
pub const BACKLOG: u32 = 4096;

/// The workflow the host answers runs for at once (JSON or a timed stream).
pub const RUN_WORKFLOW: &str = "bench";
/// The workflow whose stream sends one event and then stays open.
pub const IDLE_WORKFLOW: &str = "idle";

/// Binds a TCP listener with [`BACKLOG`] and `SO_REUSEADDR`.
pub fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Wall-clock nanoseconds since the epoch: the host stamps each event with
/// it when it writes the event, and the client subtracts it on arrival
/// (both on one machine, so one clock).
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The `sent_ns:N` stamp in one SSE event (the host writes it inside the
/// event's `content`).
pub fn sent_ns(event: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"sent_ns:";
    let at = event.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let digits = event[at..].iter().take_while(|b| b.is_ascii_digit());
    let mut n: u64 = 0;
    let mut any = false;
    for &d in digits {
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        any = true;
    }
    any.then_some(n)
}

/// Latency percentiles, in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

impl Percentiles {
    /// From samples in nanoseconds (sorted in place).
    pub fn of_ns(samples: &mut [u64]) -> Percentiles {
        if samples.is_empty() {
            return Percentiles::default();
        }
        samples.sort_unstable();
        let at = |q: f64| {
            let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
            samples[i.min(samples.len() - 1)] as f64 / 1000.0
        };
        Percentiles {
            count: samples.len() as u64,
            p50_us: at(0.50),
            p99_us: at(0.99),
            p999_us: at(0.999),
            max_us: samples[samples.len() - 1] as f64 / 1000.0,
        }
    }
}

/// CPU time used by a set of processes over the measured window.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CpuUse {
    /// Microseconds of user + system time, per process group named on the
    /// command line (`proxy`, `host`, `client`).
    pub proxy_us: Option<u64>,
    pub host_us: Option<u64>,
    pub client_us: u64,
}

/// `bench-load runs`: closed-loop non-streaming runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunsResult {
    pub connections: usize,
    pub requests: u64,
    pub errors: u64,
    pub seconds: f64,
    pub rps: f64,
    pub latency: Percentiles,
    pub cpu: CpuUse,
}

/// `bench-load sse`: per-event forwarding delay on timed streams.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SseResult {
    pub streams: usize,
    pub events_expected: u64,
    pub events: u64,
    pub errors: u64,
    /// Arrival time minus the host's send stamp, per event.
    pub delay: Percentiles,
}

/// `bench-load idle`: many open, quiet streams.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IdleResult {
    pub requested: usize,
    pub held: usize,
    pub errors: u64,
    /// Time to open every stream (head and first event received).
    pub open_seconds: f64,
    /// First error messages seen, for the report.
    pub sample_errors: Vec<String>,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the new
/// `(soft, hard)`. Children inherit it.
pub fn raise_nofile() -> (u64, u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return (0, 0);
        }
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
    }
    (limit.rlim_cur, limit.rlim_max)
}

/// Clock ticks per second for `/proc/<pid>/stat` times.
pub fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|t| *t > 0).unwrap_or(100)
}

/// Fields of `/proc/<pid>/stat` after the command name.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    Some(after.split_whitespace().map(str::to_owned).collect())
}

/// User + system CPU time of `pid` (all its threads, live and exited), in
/// microseconds.
pub fn cpu_us(pid: u32) -> Option<u64> {
    let fields = stat_fields(pid)?;
    // utime and stime are fields 14 and 15 of stat; 3rd and later here.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) * 1_000_000 / clock_ticks())
}

/// Sum of [`cpu_us`] over `pids`.
pub fn cpu_us_of(pids: &[u32]) -> Option<u64> {
    pids.iter().map(|&p| cpu_us(p)).sum()
}

/// Resident set size of `pid`, in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Sum of [`rss_kib`] over `pids`.
pub fn rss_kib_of(pids: &[u32]) -> Option<u64> {
    pids.iter().map(|&p| rss_kib(p)).sum()
}

/// `pid` and all its descendants.
pub fn process_tree(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(child) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            if let Some(ppid) = stat_fields(child)
                .and_then(|f| f.get(1).cloned())
                .and_then(|p| p.parse().ok())
            {
                parents.push((child, ppid));
            }
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parents
                .iter()
                .filter(|(_, ppid)| *ppid == parent)
                .map(|(c, _)| *c),
        );
        i += 1;
    }
    tree
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_read_from_the_event() {
        let event =
            b"event: RunContent\ndata: {\"content\":\"token 3 sent_ns:1795472363000000123\"}\n\n";
        assert_eq!(sent_ns(event), Some(1_795_472_363_000_000_123));
        assert_eq!(sent_ns(b"data: {}\n\n"), None);
    }

    #[test]
    fn percentiles_of_a_known_set() {
        let mut samples: Vec<u64> = (1..=1000).map(|i| i * 1000).collect();
        let p = Percentiles::of_ns(&mut samples);
        assert_eq!(p.count, 1000);
        assert!((p.p50_us - 500.0).abs() <= 1.0);
        assert!((p.p99_us - 990.0).abs() <= 1.0);
        assert_eq!(p.max_us, 1000.0);
    }

    #[test]
    fn own_process_is_visible_in_proc() {
        let me = std::process::id();
        assert!(rss_kib(me).unwrap() > 0);
        assert!(cpu_us(me).is_some());
        assert_eq!(process_tree(me)[0], me);
    }
}
