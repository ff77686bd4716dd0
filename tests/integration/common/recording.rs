//! A recording fake AgentOS host on raw TCP, for the adversarial suite.
//!
//! Unlike [`super::MockHost`] (axum, which parses and normalises what it
//! gets), this host keeps every byte each accepted connection received, in
//! order, so a test can say exactly what reached a host and on which
//! connection. It parses requests itself with `httparse` (bodies framed by
//! `Content-Length` or `chunked`, decoded strictly) only to know where one
//! request ends and when to answer, and answers with raw bytes: by default a
//! well-formed `200` JSON answer with a `content-length`, kept alive; a test
//! can queue raw answers for the next runs (the broken-host corpus),
//! including answers that never finish or never stop.
//!
//! Nothing here sleeps: tests wait for what the host sees through
//! [`RecordingHost::wait_until`], which wakes on every change.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// How a request's body was delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (no `Content-Length`, no `Transfer-Encoding`).
    None,
    Length(u64),
    Chunked,
}

/// One complete request as a host connection received it.
#[derive(Debug, Clone)]
pub struct HostRequest {
    pub method: String,
    pub target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    /// Every field in order, names lowercased, values as sent.
    pub headers: Vec<(String, Vec<u8>)>,
    pub framing: Framing,
    /// The decoded body.
    pub body: Vec<u8>,
    /// Where the head lies in the parsed bytes.
    pub head: Range<usize>,
    /// Where the whole request (head and framed body) lies in the parsed
    /// bytes (the connection's bytes for [`ConnLog::requests`]).
    pub span: Range<usize>,
}

impl HostRequest {
    /// Every value of the field `name`.
    pub fn values(&self, name: &str) -> Vec<&[u8]> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
            .collect()
    }

    /// The path, without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// One line for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "{} {} ({:?}, body {} bytes: {})",
            escape(self.method.as_bytes(), 40),
            escape(self.target.as_bytes(), 120),
            self.framing,
            self.body.len(),
            escape(&self.body, 120)
        )
    }
}

/// Why the bytes after the last complete request are not one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tail {
    /// Nothing trails.
    Empty,
    /// The start of a request that has not ended (yet), from this offset.
    Partial(usize),
    /// Bytes from this offset that are no valid request.
    Invalid(usize, String),
}

/// Parses `bytes` into the complete requests at their start, and says what
/// trails them.
pub fn parse_requests(bytes: &[u8]) -> (Vec<HostRequest>, Tail) {
    let mut requests = Vec::new();
    let mut at = 0;
    loop {
        if at == bytes.len() {
            return (requests, Tail::Empty);
        }
        match parse_request(&bytes[at..]) {
            Parsed::Complete(mut request) => {
                request.head = request.head.start + at..request.head.end + at;
                request.span = request.span.start + at..request.span.end + at;
                at = request.span.end;
                requests.push(request);
            }
            Parsed::Partial => return (requests, Tail::Partial(at)),
            Parsed::Invalid(why) => return (requests, Tail::Invalid(at, why)),
        }
    }
}

/// The requests in `bytes`, which must hold complete requests and nothing
/// more; `Err` says what trails.
pub fn clean_requests(bytes: &[u8]) -> Result<Vec<HostRequest>, String> {
    match parse_requests(bytes) {
        (requests, Tail::Empty) => Ok(requests),
        (requests, Tail::Partial(at)) => Err(format!(
            "after {} complete request(s), an unfinished one: {}",
            requests.len(),
            escape(&bytes[at..], 300)
        )),
        (requests, Tail::Invalid(at, why)) => Err(format!(
            "after {} complete request(s), bytes that are no request ({why}): {}",
            requests.len(),
            escape(&bytes[at..], 300)
        )),
    }
}

/// What [`parse_request`] found.
#[derive(Debug)]
pub enum Parsed {
    Complete(HostRequest),
    Partial,
    Invalid(String),
}

/// The request at the start of `bytes`.
pub fn parse_request(bytes: &[u8]) -> Parsed {
    let mut fields = vec![httparse::EMPTY_HEADER; 512];
    let mut request = httparse::Request::new(&mut fields);
    let head_len = match request.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(e) => return Parsed::Invalid(format!("head: {e}")),
    };
    let headers: Vec<(String, Vec<u8>)> = request
        .headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
        .collect();
    let te: Vec<&[u8]> = headers
        .iter()
        .filter(|(n, _)| n == "transfer-encoding")
        .map(|(_, v)| v.as_slice())
        .collect();
    let cl: Vec<&[u8]> = headers
        .iter()
        .filter(|(n, _)| n == "content-length")
        .map(|(_, v)| v.as_slice())
        .collect();
    let framing = match (te.is_empty(), cl.is_empty()) {
        (false, false) => {
            return Parsed::Invalid("both Content-Length and Transfer-Encoding".into());
        }
        (false, true) => {
            if te.len() != 1 || !te[0].eq_ignore_ascii_case(b"chunked") {
                return Parsed::Invalid(format!(
                    "Transfer-Encoding other than one `chunked`: {:?}",
                    te.iter().map(|v| escape(v, 40)).collect::<Vec<_>>()
                ));
            }
            Framing::Chunked
        }
        (true, false) => {
            let valid = cl.len() == 1
                && !cl[0].is_empty()
                && cl[0].len() <= 18
                && cl[0].iter().all(u8::is_ascii_digit);
            if !valid {
                return Parsed::Invalid(format!(
                    "Content-Length not one plain number: {:?}",
                    cl.iter().map(|v| escape(v, 40)).collect::<Vec<_>>()
                ));
            }
            Framing::Length(std::str::from_utf8(cl[0]).unwrap().parse().unwrap())
        }
        (true, true) => Framing::None,
    };
    let method = request.method.unwrap_or_default().to_owned();
    let target = request.path.unwrap_or_default().to_owned();
    let version = request.version.unwrap_or(1);
    let rest = &bytes[head_len..];
    let (body, body_len) = match framing {
        Framing::None => (Vec::new(), 0),
        Framing::Length(n) => {
            let n = n as usize;
            if rest.len() < n {
                return Parsed::Partial;
            }
            (rest[..n].to_vec(), n)
        }
        Framing::Chunked => match decode_chunked(rest) {
            Ok(Some(decoded)) => decoded,
            Ok(None) => return Parsed::Partial,
            Err(why) => return Parsed::Invalid(why),
        },
    };
    Parsed::Complete(HostRequest {
        method,
        target,
        version,
        headers,
        framing,
        body,
        head: 0..head_len,
        span: 0..head_len + body_len,
    })
}

/// A CRLF-terminated line at `bytes[at..]`: its content and where the next
/// line starts. `Ok(None)` until the line is complete.
fn line(bytes: &[u8], at: usize) -> Result<Option<(&[u8], usize)>, String> {
    let rest = &bytes[at..];
    match rest.windows(2).position(|w| w == b"\r\n") {
        Some(end) => {
            let content = &rest[..end];
            if content.contains(&b'\r') || content.contains(&b'\n') {
                return Err(format!("bare CR or LF in a line: {}", escape(content, 80)));
            }
            Ok(Some((content, at + end + 2)))
        }
        None if rest.len() > 8192 => Err("line over 8 KiB".into()),
        None if rest.contains(&b'\n') => Err(format!("bare LF: {}", escape(rest, 80))),
        None => Ok(None),
    }
}

/// Decodes a chunked body strictly (RFC 9112 §7.1): the body and the bytes
/// its framing took, `None` while incomplete.
pub fn decode_chunked(bytes: &[u8]) -> Result<Option<(Vec<u8>, usize)>, String> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let Some((size_line, next)) = line(bytes, at)? else {
            return Ok(None);
        };
        let digits = size_line.split(|&b| b == b';').next().unwrap_or_default();
        if digits.is_empty() || digits.len() > 16 || !digits.iter().all(u8::is_ascii_hexdigit) {
            return Err(format!("bad chunk size line: {}", escape(size_line, 80)));
        }
        let size = usize::from_str_radix(std::str::from_utf8(digits).unwrap(), 16)
            .map_err(|e| format!("chunk size: {e}"))?;
        at = next;
        if size == 0 {
            // Trailer fields, then an empty line.
            loop {
                let Some((trailer, next)) = line(bytes, at)? else {
                    return Ok(None);
                };
                at = next;
                if trailer.is_empty() {
                    return Ok(Some((body, at)));
                }
                if !trailer.contains(&b':') {
                    return Err(format!("bad trailer: {}", escape(trailer, 80)));
                }
            }
        }
        if bytes.len() < at + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&bytes[at..at + size]);
        if &bytes[at + size..at + size + 2] != b"\r\n" {
            return Err("chunk data not followed by CRLF".into());
        }
        at += size + 2;
    }
}

/// Everything one accepted connection received, and how it ended.
#[derive(Debug, Clone, Default)]
pub struct ConnLog {
    /// Accept order, from 0.
    pub id: usize,
    /// Every byte received, in order.
    pub bytes: Vec<u8>,
    /// The complete requests parsed from `bytes`, in order.
    pub requests: Vec<HostRequest>,
    /// Set when the bytes after the last request are no valid request; the
    /// host then stops parsing (but keeps recording).
    pub invalid: Option<String>,
    /// The gateway closed (FIN) or reset the connection.
    pub closed: bool,
    /// A write of an endless answer failed: the gateway went away.
    pub write_failed: bool,
}

impl ConnLog {
    /// What trails the last complete request: `Tail::Empty` when the
    /// connection's bytes are whole requests and nothing else.
    pub fn tail(&self) -> Tail {
        parse_requests(&self.bytes).1
    }

    /// Whether some request started on this connection has not ended.
    pub fn has_partial_request(&self) -> bool {
        matches!(self.tail(), Tail::Partial(_))
    }

    pub fn describe(&self) -> String {
        let mut out = format!(
            "conn {} ({} bytes{}{}):",
            self.id,
            self.bytes.len(),
            if self.closed { ", closed" } else { ", open" },
            if self.write_failed {
                ", answer write failed"
            } else {
                ""
            }
        );
        for r in &self.requests {
            let _ = write!(out, "\n    request: {}", r.describe());
        }
        match self.tail() {
            Tail::Empty => {}
            Tail::Partial(at) => {
                let _ = write!(
                    out,
                    "\n    unfinished request: {}",
                    escape(&self.bytes[at..], 200)
                );
            }
            Tail::Invalid(at, why) => {
                let _ = write!(
                    out,
                    "\n    no request ({why}): {}",
                    escape(&self.bytes[at..], 200)
                );
            }
        }
        out
    }
}

/// How the host answers one request.
#[derive(Debug, Clone)]
pub enum Answer {
    /// The default: `200`, a JSON body naming the host, connection and
    /// request, `content-length`, kept alive.
    Default,
    /// These bytes; the connection then serves the next request.
    Raw(Vec<u8>),
    /// These bytes, then the host closes its side (FIN); it still records
    /// whatever arrives afterwards.
    RawThenClose(Vec<u8>),
    /// These bytes, then nothing ever again on this connection (it stays
    /// open and keeps recording).
    RawThenHang(Vec<u8>),
    /// `head`, then `chunk` written over and over as fast as the gateway
    /// takes it, until a write fails.
    Endless { head: Vec<u8>, chunk: Vec<u8> },
}

struct Shared {
    name: String,
    conns: Mutex<Vec<ConnLog>>,
    /// Answers for the next `POST .../runs` requests, in order.
    script: Mutex<VecDeque<Answer>>,
    /// Bumped on every change to `conns`.
    changes: watch::Sender<u64>,
    stop: CancellationToken,
}

impl Shared {
    fn update(&self, id: usize, f: impl FnOnce(&mut ConnLog)) {
        {
            let mut conns = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut conns[id]);
        }
        self.changes.send_modify(|n| *n += 1);
    }

    fn next_answer(&self, request: &HostRequest) -> Answer {
        if request.method == "POST" && request.path().ends_with("/runs") {
            let scripted = self
                .script
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop_front();
            if let Some(answer) = scripted {
                return answer;
            }
        }
        Answer::Default
    }
}

/// Where every connection's bytes stood at one moment.
#[derive(Debug, Clone)]
pub struct Mark(Vec<usize>);

impl Mark {
    /// How many bytes connection `conn` had received (0 for one accepted
    /// later).
    pub fn before(&self, conn: usize) -> usize {
        self.0.get(conn).copied().unwrap_or(0)
    }
}

/// A raw-TCP fake AgentOS host that records everything.
pub struct RecordingHost {
    pub addr: SocketAddr,
    pub url: String,
    shared: Arc<Shared>,
}

impl RecordingHost {
    pub async fn start(name: &str) -> RecordingHost {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            conns: Mutex::new(Vec::new()),
            script: Mutex::new(VecDeque::new()),
            changes: watch::Sender::new(0),
            stop: CancellationToken::new(),
        });
        let accepting = shared.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = accepting.stop.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((stream, _)) = accepted else { continue };
                let id = {
                    let mut conns = accepting
                        .conns
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    let id = conns.len();
                    conns.push(ConnLog {
                        id,
                        ..ConnLog::default()
                    });
                    id
                };
                accepting.changes.send_modify(|n| *n += 1);
                let shared = accepting.clone();
                tokio::spawn(async move {
                    let stop = shared.stop.clone();
                    stop.run_until_cancelled(serve(shared, stream, id)).await;
                });
            }
        });
        RecordingHost {
            addr,
            url: format!("http://{addr}"),
            shared,
        }
    }

    /// The next `POST .../runs` not yet answered gets `answer` (queued in
    /// order).
    pub fn answer_next(&self, answer: Answer) {
        self.shared
            .script
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(answer);
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Every connection so far, in accept order.
    pub fn connections(&self) -> Vec<ConnLog> {
        self.shared
            .conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Every complete request so far, with the id of its connection.
    pub fn requests(&self) -> Vec<(usize, HostRequest)> {
        self.connections()
            .into_iter()
            .flat_map(|c| c.requests.into_iter().map(move |r| (c.id, r)))
            .collect()
    }

    /// Where every connection's bytes stand now.
    pub fn mark(&self) -> Mark {
        Mark(self.connections().iter().map(|c| c.bytes.len()).collect())
    }

    /// The bytes each connection received since `mark`, for the
    /// connections that received any (new connections included).
    pub fn since(&self, mark: &Mark) -> Vec<(usize, Vec<u8>)> {
        self.connections()
            .into_iter()
            .filter_map(|c| {
                let before = mark.before(c.id);
                (c.bytes.len() > before).then(|| (c.id, c.bytes[before..].to_vec()))
            })
            .collect()
    }

    /// Asserts that every connection's bytes are whole requests with
    /// nothing trailing, and that they are exactly `expected`, in accept
    /// order then arrival order: (connection, method, target, body).
    pub fn assert_received(&self, expected: &[(usize, &str, &str, &[u8])]) {
        let mut got = Vec::new();
        for conn in self.connections() {
            let requests = clean_requests(&conn.bytes)
                .unwrap_or_else(|why| panic!("connection {}: {why}\n{}", conn.id, self.describe()));
            for r in requests {
                got.push((conn.id, r.method, r.target, r.body));
            }
        }
        let expected: Vec<(usize, String, String, Vec<u8>)> = expected
            .iter()
            .map(|(c, m, t, b)| (*c, m.to_string(), t.to_string(), b.to_vec()))
            .collect();
        assert_eq!(got, expected, "\n{}", self.describe());
    }

    /// Every connection, for failure messages.
    pub fn describe(&self) -> String {
        let conns = self.connections();
        if conns.is_empty() {
            return format!("host {}: no connection", self.shared.name);
        }
        let mut out = format!("host {}:", self.shared.name);
        for c in conns {
            let _ = write!(out, "\n  {}", c.describe());
        }
        out
    }

    /// Waits until `check` holds for the connections (woken by every
    /// change, never by polling), at most `bound`; `Err` with the last
    /// state otherwise.
    pub async fn wait_until(
        &self,
        bound: Duration,
        check: impl Fn(&[ConnLog]) -> bool,
    ) -> Result<Vec<ConnLog>, Vec<ConnLog>> {
        let mut changes = self.shared.changes.subscribe();
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            changes.borrow_and_update();
            let conns = self.connections();
            if check(&conns) {
                return Ok(conns);
            }
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                return Err(self.connections());
            }
        }
    }
}

impl Drop for RecordingHost {
    fn drop(&mut self) {
        self.shared.stop.cancel();
    }
}

/// Reads one connection: records its bytes, parses requests and hands each
/// to the answering task.
async fn serve(shared: Arc<Shared>, stream: TcpStream, id: usize) {
    let _ = stream.set_nodelay(true);
    let (mut read, write) = stream.into_split();
    let (requests, to_answer) = mpsc::unbounded_channel();
    let answering = shared.clone();
    tokio::spawn(async move {
        let stop = answering.stop.clone();
        stop.run_until_cancelled(answer(answering, id, write, to_answer))
            .await;
    });
    let mut bytes = Vec::new();
    let mut parsed = 0;
    let mut invalid = false;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match read.read(&mut buf).await {
            Ok(0) | Err(_) => {
                shared.update(id, |c| c.closed = true);
                return;
            }
            Ok(n) => n,
        };
        bytes.extend_from_slice(&buf[..n]);
        let mut complete = Vec::new();
        let mut why = None;
        while !invalid && parsed < bytes.len() {
            match parse_request(&bytes[parsed..]) {
                Parsed::Complete(mut request) => {
                    request.head = request.head.start + parsed..request.head.end + parsed;
                    request.span = request.span.start + parsed..request.span.end + parsed;
                    parsed = request.span.end;
                    complete.push(request);
                }
                Parsed::Partial => break,
                Parsed::Invalid(reason) => {
                    invalid = true;
                    why = Some(reason);
                }
            }
        }
        shared.update(id, |c| {
            c.bytes.extend_from_slice(&buf[..n]);
            c.requests.extend(complete.iter().cloned());
            if why.is_some() {
                c.invalid = why;
            }
        });
        for request in complete {
            let _ = requests.send(request);
        }
    }
}

/// Answers a connection's requests in order.
async fn answer(
    shared: Arc<Shared>,
    id: usize,
    mut write: OwnedWriteHalf,
    mut requests: mpsc::UnboundedReceiver<HostRequest>,
) {
    let mut count = 0usize;
    while let Some(request) = requests.recv().await {
        count += 1;
        let bytes = match shared.next_answer(&request) {
            Answer::Default => default_answer(&shared.name, id, count, &request),
            Answer::Raw(bytes) => bytes,
            Answer::RawThenClose(bytes) => {
                let _ = write.write_all(&bytes).await;
                let _ = write.shutdown().await;
                // Keep receiving (the reader records), answer nothing.
                while requests.recv().await.is_some() {}
                return;
            }
            Answer::RawThenHang(bytes) => {
                let _ = write.write_all(&bytes).await;
                while requests.recv().await.is_some() {}
                drop(write);
                return;
            }
            Answer::Endless { head, chunk } => {
                let mut result = write.write_all(&head).await;
                while result.is_ok() {
                    result = write.write_all(&chunk).await;
                }
                shared.update(id, |c| c.write_failed = true);
                while requests.recv().await.is_some() {}
                return;
            }
        };
        if write.write_all(&bytes).await.is_err() {
            return;
        }
    }
}

/// The host's default answer to `request`: metadata routes as an AgentOS
/// answers them, anything else a JSON document naming where it was served.
pub fn default_answer(name: &str, conn: usize, count: usize, request: &HostRequest) -> Vec<u8> {
    let path = request.path();
    let body = if request.method == "GET" && path == "/health" {
        serde_json::json!({"status": "ok", "instantiated_at": "2026-01-01T00:00:00Z"})
    } else if request.method == "GET" && path == "/config" {
        serde_json::json!({
            "os_id": name, "description": "recording host", "available_models": [],
            "databases": [], "session": {"dbs": []}, "metrics": {"dbs": []},
            "knowledge": {"dbs": [], "knowledge_instances": []},
            "agents": [], "teams": [], "workflows": [], "interfaces": [], "company": null
        })
    } else if request.method == "GET" && path.starts_with("/workflows/") && !path.contains("/runs")
    {
        let id = path.trim_start_matches("/workflows/");
        serde_json::json!({
            "id": id, "name": id, "db_id": null, "description": "recording host workflow",
            "input_schema": null, "steps": [], "workflow_agent": false, "is_factory": false,
            "is_component": false, "sandboxed": false
        })
    } else {
        serde_json::json!({
            "host": name,
            "conn": conn,
            "request": count,
            "run_id": format!("run-{name}-{conn}-{count}"),
            "session_id": format!("session-{name}"),
            "status": "COMPLETED",
            "content": "ok",
            "method": request.method,
            "path": request.target,
            "body_len": request.body.len(),
        })
    };
    let body = body.to_string();
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// `bytes` as printable text, at most `max` bytes of it.
pub fn escape(bytes: &[u8], max: usize) -> String {
    let shown = &bytes[..bytes.len().min(max)];
    let mut out: String = shown.escape_ascii().to_string();
    if bytes.len() > max {
        let _ = write!(out, "... ({} bytes in all)", bytes.len());
    }
    out
}
