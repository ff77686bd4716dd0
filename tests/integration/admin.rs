//! The admin listener: Prometheus metrics and the hosts' view are served on
//! it and nowhere else; the public probes name no host; `[admin] listen = ""`
//! binds nothing; a taken admin port stops the binary with its address; the
//! listener closes silent connections and stops when told.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

async fn get(url: &str) -> (u16, String) {
    let r = client().get(url).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn not_found() -> Value {
    json!({ "detail": "Not Found" })
}

#[tokio::test]
async fn the_public_port_does_not_answer_admin_routes() {
    let host = MockHost::start("h").await;
    let gw = Gateway::start(&workflow("w", &host.url, "w")).await;
    for path in ["/gateway/upstreams", "/gateway/config"] {
        let (status, body) = get(&gw.url(path)).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(json_of(body.as_bytes()), not_found(), "{path}");
        assert!(!body.contains(&host.url), "{path} names the host");
    }
    // `/metrics` is AgentOS's own (its database's metrics), from the host.
    let (status, body) = get(&gw.url("/metrics")).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        !body.contains("# HELP"),
        "Prometheus text on the public port"
    );
    assert_eq!(json_of(body.as_bytes())["path"], "/metrics");
}

#[tokio::test]
async fn the_admin_port_answers_metrics_upstreams_and_probes() {
    let host = MockHost::start("h").await;
    let gw = Gateway::start(&workflow("w", &host.url, "w")).await;

    let r = client().get(gw.admin_url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text"),
    );
    let metrics = r.text().await.unwrap();
    assert!(
        metrics.contains("agentos_gateway_active_streams 0"),
        "{metrics}"
    );

    let (status, body) = get(&gw.admin_url("/gateway/upstreams")).await;
    assert_eq!(status, 200, "{body}");
    let upstreams = json_of(body.as_bytes());
    assert_eq!(
        upstreams["host_groups"][0]["replicas"][0]["base_url"],
        host.url
    );
    assert_eq!(upstreams["host_groups"][0]["workflows"], json!(["w"]));

    // The probes answer the public bodies.
    for path in ["/health", "/ready"] {
        let (public_status, public) = get(&gw.url(path)).await;
        let (status, admin) = get(&gw.admin_url(path)).await;
        assert_eq!(
            (status, json_of(admin.as_bytes())),
            (public_status, json_of(public.as_bytes())),
            "{path}"
        );
        assert_eq!(status, 200, "{path}");
    }

    let (status, body) = get(&gw.admin_url("/workflows")).await;
    assert_eq!((status, json_of(body.as_bytes())), (404, not_found()));
    let r = client()
        .post(gw.admin_url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET, HEAD");
}

#[tokio::test]
async fn the_admin_port_speaks_h2c() {
    let host = MockHost::start("h").await;
    let gw = Gateway::start(&workflow("w", &host.url, "w")).await;
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let r = h2.get(gw.admin_url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert!(r.text().await.unwrap().contains("agentos_gateway_"));
}

#[tokio::test]
async fn the_public_probes_name_no_host() {
    let host = MockHost::start("h").await;
    let gw = Gateway::start(&workflow("w", &host.url, "w")).await;
    let (status, health) = get(&gw.url("/health")).await;
    assert_eq!(status, 200);
    let health = json_of(health.as_bytes());
    let keys: BTreeSet<&str> = health
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, BTreeSet::from(["instantiated_at", "status"]));
    let (_, ready) = get(&gw.url("/ready")).await;
    for body in [health.to_string(), ready] {
        assert!(!body.contains(&host.addr.to_string()), "{body}");
        assert!(!body.contains(&host.addr.port().to_string()), "{body}");
    }
}

/// Reads until the peer closes; fails the test if it has not within 10 s
/// (a guard against hangs, not a synchronisation).
async fn closed_by_peer(mut stream: TcpStream) {
    let mut buf = [0u8; 1024];
    let closed = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), closed)
        .await
        .expect("the admin listener kept the connection open");
}

#[tokio::test]
async fn silent_and_slow_admin_connections_are_closed() {
    let host = MockHost::start("h").await;
    let gw = Gateway::start(&format!(
        "[server]\nheader_read_timeout = 0.2\n{}",
        workflow("w", &host.url, "w")
    ))
    .await;
    let addr = gw.admin.trim_start_matches("http://").to_owned();

    // Connects and never sends a byte.
    let silent = TcpStream::connect(&addr).await.unwrap();
    closed_by_peer(silent).await;

    // Starts a head and never finishes it.
    let mut slow = TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\n").await.unwrap();
    closed_by_peer(slow).await;
}

#[tokio::test]
async fn admin_serve_returns_when_stopped() {
    let host = MockHost::start("h").await;
    let gw = Gateway::start(&workflow("w", &host.url, "w")).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let served = tokio::spawn(agentos_gateway::admin::serve(
        listener,
        gw.state.clone(),
        stop.clone(),
    ));
    // A keep-alive connection stays open, idle, in the client's pool.
    let c = client();
    let r = c.get(format!("http://{addr}/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap();

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), served)
        .await
        .expect("admin::serve did not return after stop")
        .unwrap()
        .unwrap();
    assert!(TcpStream::connect(addr).await.is_err(), "still listening");
}

/// The TCP ports process `pid` listens on (Linux: its socket descriptors
/// matched against /proc/net/tcp{,6}).
#[cfg(target_os = "linux")]
fn listening_ports(pid: u32) -> BTreeSet<u16> {
    let inodes: BTreeSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_owned(),
            )
        })
        .collect();
    let mut ports = BTreeSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local_address is fields[1] (ADDR:PORT in hex), st fields[3]
            // (0A = LISTEN), inode fields[9].
            if fields.len() > 9 && fields[3] == "0A" && inodes.contains(fields[9]) {
                let port = fields[1].rsplit(':').next().unwrap();
                ports.insert(u16::from_str_radix(port, 16).unwrap());
            }
        }
    }
    ports
}

#[cfg(target_os = "linux")]
fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn the_binary_serves_admin_routes_on_the_admin_port_only() {
    let host = MockHost::start("h").await;
    let gw = GatewayProcess::spawn(&workflow("w", &host.url, "w"), &[]);
    let admin = gw.admin.clone().expect("no admin listener ready line");
    assert_ne!(admin, gw.url);

    for path in ["/gateway/upstreams", "/gateway/config"] {
        let (status, body) = get(&gw.url(path)).await;
        assert_eq!(
            (status, json_of(body.as_bytes())),
            (404, not_found()),
            "{path}"
        );
    }
    let (_, body) = get(&gw.url("/metrics")).await;
    assert!(
        !body.contains("# HELP"),
        "Prometheus text on the public port"
    );
    let (status, metrics) = get(&gw.admin_url("/metrics")).await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("# TYPE agentos_gateway_active_streams gauge"),
        "{metrics}"
    );
    let (status, upstreams) = get(&gw.admin_url("/gateway/upstreams")).await;
    assert_eq!(status, 200);
    assert!(upstreams.contains(&host.url), "{upstreams}");
    let (status, _) = get(&gw.admin_url("/ready")).await;
    assert_eq!(status, 200);

    #[cfg(target_os = "linux")]
    assert_eq!(
        listening_ports(gw.child.id()),
        BTreeSet::from([port_of(&gw.url), port_of(&admin)])
    );
}

#[tokio::test]
async fn an_empty_admin_listen_binds_no_admin_listener() {
    let host = MockHost::start("h").await;
    let toml = format!(
        "{}\n[admin]\nlisten = \"\"\n",
        workflow("w", &host.url, "w")
    );
    let gw = GatewayProcess::spawn(&toml, &[]);
    assert_eq!(gw.admin, None);
    let log = gw.log();
    let messages: Vec<String> = log
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|e| e["message"].as_str().map(str::to_owned))
        .collect();
    assert!(
        messages.iter().any(|m| m.starts_with("admin listener off")),
        "{messages:?}"
    );
    assert!(!messages.iter().any(|m| m == "admin listener ready"));
    let (_, body) = get(&gw.url("/metrics")).await;
    assert!(
        !body.contains("# HELP"),
        "Prometheus text on the public port"
    );

    #[cfg(target_os = "linux")]
    assert_eq!(
        listening_ports(gw.child.id()),
        BTreeSet::from([port_of(&gw.url)])
    );
}

/// Runs the binary to its exit (at most 20 s) and returns its exit code and
/// stderr; a process still running then is killed and fails the test.
fn run_to_exit(mut command: std::process::Command) -> (Option<i32>, String) {
    let child = command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(output) => {
            let output = output.unwrap();
            (
                output.status.code(),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            )
        }
        Err(_) => {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("the gateway did not exit");
        }
    }
}

#[tokio::test]
async fn a_taken_admin_port_is_named_and_exits_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = TempDir::new();
    let path = dir.0.join("gateway.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[[workflows]]\nid = \"w\"\nbase_url = \"http://127.0.0.1:9\"\n",
    )
    .unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_agentos-gateway"));
    command
        .arg("--config")
        .arg(&path)
        .env(ADMIN_LISTEN_VAR, &addr);
    let (code, stderr) = run_to_exit(command);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot bind the admin listener on {addr}")),
        "{stderr}"
    );
    drop(taken);
}

#[tokio::test]
async fn the_demo_goes_on_without_admin_when_its_port_is_taken() {
    // Held here, or by someone else: either way the demo cannot have it.
    let _held = std::net::TcpListener::bind(agentos_gateway::demo::DEMO_ADMIN);
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_agentos-gateway"));
    command
        .args(["--log-format", "json", "demo", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let ready = line.contains("agentos-gateway ready");
            if tx.send(line).is_err() || ready {
                return;
            }
        }
    });
    let mut lines = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(20)) {
        lines.push(line);
        if lines.last().unwrap().contains("agentos-gateway ready") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        lines
            .last()
            .is_some_and(|l| l.contains("agentos-gateway ready")),
        "the demo did not start: {lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("admin listener not started")),
        "{lines:?}"
    );
    assert!(!lines.iter().any(|l| l.contains("admin listener ready")));
}
