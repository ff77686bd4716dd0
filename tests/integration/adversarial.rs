//! The adversarial suite: every byte a caller or a host sends the gateway is
//! untrusted. Runs against the gateway binary (`AGENTOS_GATEWAY_BIN` when
//! set, else the one cargo built) in front of recording raw-TCP hosts
//! (`crate::common::recording`), which keep every byte each host connection got.
//!
//! 1. Callers that try to smuggle a request or desync the host pool: a 400,
//!    the connection closed, and no byte of theirs reaches a host.
//! 2. Bodies that turn out broken once forwarding may have started: never a
//!    2xx, and the host never gets a complete request.
//! 3. Broken hosts: a clean 502 (or a cut, properly framed answer), and the
//!    broken host connection is never used again.
//! 4. Caller errors never count against a replica's health.
//! 5. Connection limits and timeouts (configured short).
//! 6. Property: arbitrary bodies in arbitrary chunkings reach the host as
//!    the caller's exact bytes (in-process gateway).
//!
//! After each attack a canary run must reach the host byte-exact, on a
//! connection that carried nothing else since the attack began. No sleeps:
//! tests wait on sockets and on what the hosts see, each wait bounded.

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::recording::{
    Answer, ConnLog, Framing, Mark, RecordingHost, Tail, decode_chunked, escape,
};
use crate::common::{Gateway, GatewayProcess};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The longest any one wait of this suite may take: a guard against hangs,
/// never a speed requirement.
const BOUND: Duration = Duration::from_secs(10);
/// How long a caller connection may stay open after a complete answer that
/// should have closed it.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// The gateway under test.

/// The gateway binary in front of `hosts` (one workflow `w`, host id `w`,
/// health checks off so that hosts see only what the tests cause).
/// `server` adds `[server]` keys, `workflow` keys of the workflow.
struct Gw {
    _process: GatewayProcess,
    addr: SocketAddr,
}

async fn gateway(hosts: &[&RecordingHost], server: &str, workflow: &str) -> Gw {
    let urls: Vec<String> = hosts.iter().map(|h| format!("\"{}\"", h.url)).collect();
    let toml = format!(
        "health_checks = false\n{server}\n\n[admin]\nlisten = \"\"\n\n[[workflows]]\nid = \"w\"\nworkflow_id = \"w\"\nbase_urls = [{}]\n{workflow}\n",
        urls.join(", ")
    );
    // One serving thread: one host connection pool, so a broken connection
    // put back would be the one the next request takes.
    let process = tokio::task::spawn_blocking(move || {
        GatewayProcess::spawn(
            &toml,
            &[("TOKIO_WORKER_THREADS", "1"), ("RUST_LOG", "info")],
        )
    })
    .await
    .unwrap();
    let addr = process.url.trim_start_matches("http://").parse().unwrap();
    Gw {
        _process: process,
        addr,
    }
}

// ---------------------------------------------------------------------------
// Raw callers.

/// How a caller connection ended.
#[derive(Debug, Clone, PartialEq)]
enum End {
    /// The gateway closed it.
    Eof,
    /// The gateway reset it (also a close).
    Reset(String),
    /// Still open when the wait ended.
    Open,
}

impl End {
    fn closed(&self) -> bool {
        !matches!(self, End::Open)
    }
}

/// What came back on one caller connection.
#[derive(Debug)]
struct Reply {
    bytes: Vec<u8>,
    end: End,
}

impl Reply {
    fn responses(&self) -> (Vec<Resp>, Result<(), String>) {
        parse_responses(&self.bytes, self.end.closed())
    }

    fn describe(&self) -> String {
        format!(
            "caller got {} bytes, connection {:?}: {}",
            self.bytes.len(),
            self.end,
            escape(&self.bytes, 600)
        )
    }
}

/// Writes `request` on a fresh connection (from a task of its own, so a
/// gateway that stops reading cannot block the test) and reads until the
/// gateway closes the connection: at most [`BOUND`], and at most
/// [`CLOSE_GRACE`] after a complete final answer. The caller never
/// half-closes.
async fn exchange(addr: SocketAddr, request: Vec<u8>) -> Reply {
    let stream = TcpStream::connect(addr).await.unwrap();
    read_reply(stream, vec![request], CLOSE_GRACE).await
}

/// Writes `writes` in order and reads until the gateway closes the
/// connection: at most [`BOUND`], and at most `grace` after a complete
/// final answer.
async fn read_reply(stream: TcpStream, writes: Vec<Vec<u8>>, grace: Duration) -> Reply {
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        for bytes in writes {
            if write.write_all(&bytes).await.is_err() {
                break;
            }
        }
        // Kept open (a dropped write half would send FIN).
        std::future::pending::<()>().await;
        drop(write);
    });
    let mut bytes = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut deadline = tokio::time::Instant::now() + BOUND;
    let mut answered = false;
    let end = loop {
        match tokio::time::timeout_at(deadline, read.read(&mut buf)).await {
            Err(_) => break End::Open,
            Ok(Ok(0)) => break End::Eof,
            Ok(Ok(n)) => bytes.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => break End::Reset(e.to_string()),
        }
        if !answered {
            let (responses, _) = parse_responses(&bytes, false);
            if responses.iter().any(|r| r.complete && r.status >= 200) {
                answered = true;
                deadline = deadline.min(tokio::time::Instant::now() + grace);
            }
        }
    };
    writer.abort();
    Reply { bytes, end }
}

/// How a response body was delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RespFraming {
    Bodiless,
    Length(usize),
    Chunked,
    UntilClose,
}

/// One response as the caller got it.
#[derive(Debug, Clone)]
struct Resp {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    framing: RespFraming,
    /// The (decoded) body, as far as it came.
    body: Vec<u8>,
    /// Whether the body ended as its framing says.
    complete: bool,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// Parses the responses in `bytes`; `Err` says what trails them. `eof`:
/// the connection was closed after these bytes.
fn parse_responses(bytes: &[u8], eof: bool) -> (Vec<Resp>, Result<(), String>) {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let mut fields = vec![httparse::EMPTY_HEADER; 256];
        let mut response = httparse::Response::new(&mut fields);
        let len = match response.parse(&bytes[at..]) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => {
                return (
                    out,
                    Err(format!(
                        "an unfinished response head: {}",
                        escape(&bytes[at..], 200)
                    )),
                );
            }
            Err(e) => {
                return (
                    out,
                    Err(format!(
                        "bytes that are no response ({e}): {}",
                        escape(&bytes[at..], 200)
                    )),
                );
            }
        };
        let status = response.code.unwrap_or(0);
        let headers: Vec<(String, Vec<u8>)> = response
            .headers
            .iter()
            .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
            .collect();
        let te = headers
            .iter()
            .find(|(n, _)| n == "transfer-encoding")
            .map(|(_, v)| v.clone());
        let cl = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map(|(_, v)| v.clone());
        let framing = if (100..200).contains(&status) || status == 204 || status == 304 {
            RespFraming::Bodiless
        } else if let Some(te) = te {
            if te.eq_ignore_ascii_case(b"chunked") {
                RespFraming::Chunked
            } else {
                RespFraming::UntilClose
            }
        } else if let Some(cl) = cl {
            match std::str::from_utf8(&cl).ok().and_then(|v| v.parse().ok()) {
                Some(n) => RespFraming::Length(n),
                None => {
                    return (
                        out,
                        Err(format!(
                            "a response with Content-Length {}",
                            escape(&cl, 40)
                        )),
                    );
                }
            }
        } else {
            RespFraming::UntilClose
        };
        at += len;
        let rest = &bytes[at..];
        let (body, complete, used) = match framing {
            RespFraming::Bodiless => (Vec::new(), true, 0),
            RespFraming::Length(n) if rest.len() >= n => (rest[..n].to_vec(), true, n),
            RespFraming::Length(_) => (rest.to_vec(), false, rest.len()),
            RespFraming::UntilClose => (rest.to_vec(), eof, rest.len()),
            RespFraming::Chunked => match decode_chunked(rest) {
                Ok(Some((body, used))) => (body, true, used),
                Ok(None) => (chunked_prefix(rest), false, rest.len()),
                Err(why) => {
                    return (out, Err(format!("a response body with bad chunks: {why}")));
                }
            },
        };
        at += used;
        out.push(Resp {
            status,
            headers,
            framing,
            body,
            complete,
        });
    }
    (out, Ok(()))
}

/// The data of the complete chunks (and the start of the last one) of an
/// unfinished chunked body.
fn chunked_prefix(mut bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(end) = bytes.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let digits = bytes[..end]
            .split(|&b| b == b';')
            .next()
            .unwrap_or_default();
        let Some(size) = std::str::from_utf8(digits)
            .ok()
            .and_then(|d| usize::from_str_radix(d, 16).ok())
        else {
            return out;
        };
        let data = &bytes[end + 2..];
        if size == 0 || data.len() < size + 2 {
            out.extend_from_slice(&data[..data.len().min(size)]);
            return out;
        }
        out.extend_from_slice(&data[..size]);
        bytes = &data[size + 2..];
    }
}

// ---------------------------------------------------------------------------
// Requests.

/// `POST /workflows/w/runs` with the framing fields `framing` (each line
/// ending in CRLF) and `body` as it goes on the wire.
fn post(framing: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST /workflows/w/runs HTTP/1.1\r\nHost: gateway.test\r\nContent-Type: application/x-www-form-urlencoded\r\n{framing}\r\n"
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

/// One chunk of a chunked body.
fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// `data` as one chunk and the last chunk.
fn chunked(data: &[u8]) -> Vec<u8> {
    [chunk(data), LAST_CHUNK.to_vec()].concat()
}

/// `len` bytes as 64 KiB chunks and the last chunk.
fn big_chunked(len: usize) -> Vec<u8> {
    let piece = vec![b'a'; 64 * 1024];
    let mut out = Vec::with_capacity(len + len / 1000 + 16);
    let mut left = len;
    while left > 0 {
        let n = left.min(piece.len());
        out.extend_from_slice(&chunk(&piece[..n]));
        left -= n;
    }
    out.extend_from_slice(LAST_CHUNK);
    out
}

/// A run request the caller means: `message=<message>&stream=false`.
fn run_request(message: &str, connection_close: bool) -> Vec<u8> {
    let body = format!("message={message}&stream=false");
    let close = if connection_close {
        "Connection: close\r\n"
    } else {
        ""
    };
    post(
        &format!("Content-Length: {}\r\n{close}", body.len()),
        body.as_bytes(),
    )
}

// ---------------------------------------------------------------------------
// Verdicts.

/// Problems found so far; the test fails with all of them at once.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn add(&mut self, problem: impl Into<String>) {
        self.0.push(problem.into());
    }

    fn check(&mut self, ok: bool, problem: impl FnOnce() -> String) {
        if !ok {
            self.0.push(problem());
        }
    }

    /// Fails the test with every problem, and what the hosts got.
    fn assert_none(self, hosts: &[&RecordingHost]) {
        if self.0.is_empty() {
            return;
        }
        let mut message = String::new();
        for (i, problem) in self.0.iter().enumerate() {
            message.push_str(&format!("{}. {problem}\n", i + 1));
        }
        for host in hosts {
            message.push_str(&host.describe());
            message.push('\n');
        }
        panic!("\n{message}");
    }
}

/// The caller got exactly one answer, with a status in `allowed`, and the
/// gateway closed the connection after it.
fn check_rejected(reply: &Reply, allowed: &[u16], problems: &mut Problems) {
    let (responses, tail) = reply.responses();
    let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
    problems.check(
        responses.len() == 1 && allowed.contains(&responses[0].status) && responses[0].complete,
        || {
            format!(
                "expected one complete {allowed:?} answer, got statuses {statuses:?}; {}",
                reply.describe()
            )
        },
    );
    if let Err(tail) = tail {
        problems.add(format!("the caller's bytes end in {tail}"));
    }
    problems.check(reply.end.closed(), || {
        format!(
            "the gateway kept the caller's connection open after rejecting it; {}",
            reply.describe()
        )
    });
}

/// Where a canary was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Served {
    /// Index of the host in the list given to [`canary`].
    host: usize,
    conn: usize,
}

/// A normal run on a fresh caller connection must reach exactly one host
/// byte-exact (`message=canary-<n>&stream=false`, its Content-Length, plus
/// the `run_id` the gateway appends when there are replicas) as one clean
/// request, on a connection that got nothing else since `marks` (one per
/// host), and its answer must come back to the caller.
async fn canary(
    gw: &Gw,
    hosts: &[&RecordingHost],
    n: usize,
    marks: &[Mark],
    problems: &mut Problems,
) -> Option<Served> {
    let message = format!("canary-{n}");
    let sent = format!("message={message}&stream=false");
    let reply = exchange(gw.addr, run_request(&message, true)).await;
    let (responses, _) = reply.responses();
    let answer = match responses.as_slice() {
        [r] if r.status == 200 && r.complete => r.json(),
        _ => None,
    };
    let Some(answer) = answer else {
        problems.add(format!(
            "canary {n}: expected one complete 200 answer; {}",
            reply.describe()
        ));
        return None;
    };
    let mut found: Vec<(usize, ConnLog, usize)> = Vec::new();
    for (h, host) in hosts.iter().enumerate() {
        for conn in host.connections() {
            for (i, r) in conn.requests.iter().enumerate() {
                if r.body
                    .windows(message.len() + 1)
                    .any(|w| w == format!("{message}&").as_bytes())
                {
                    found.push((h, conn.clone(), i));
                }
            }
        }
    }
    let [(h, conn, index)] = found.as_slice() else {
        problems.add(format!(
            "canary {n}: expected exactly one host request carrying it, found {}",
            found.len()
        ));
        return None;
    };
    let request = &conn.requests[*index];
    let several = hosts.len() > 1;
    let body_ok = if several {
        request
            .body
            .strip_prefix(format!("{sent}&run_id=").as_bytes())
            .is_some_and(|id| id.len() == 36)
    } else {
        request.body == sent.as_bytes()
    };
    problems.check(body_ok, || {
        format!(
            "canary {n}: host body is not the caller's: {}",
            escape(&request.body, 200)
        )
    });
    // The caller's Content-Length, unchanged. With replicas the gateway
    // appends a `run_id`, so the body it sends is its own: then either its
    // own exact length or chunks.
    let length = request.body.len().to_string();
    let own_length = request.framing == Framing::Length(request.body.len() as u64)
        && request.values("content-length") == [length.as_bytes()]
        && request.values("transfer-encoding").is_empty();
    let chunks = request.framing == Framing::Chunked && request.values("content-length").is_empty();
    problems.check(own_length || (several && chunks), || {
        format!(
            "canary {n}: expected one Content-Length: {length} and no Transfer-Encoding, host got {:?}",
            request.framing
        )
    });
    if let Err(why) = crate::common::recording::clean_requests(&conn.bytes) {
        problems.add(format!(
            "canary {n}: host connection {} does not parse cleanly: {why}",
            conn.id
        ));
    }
    // Nothing else on that connection since the attack began: its bytes
    // since the mark are exactly the canary request.
    let before = marks[*h].before(conn.id);
    problems.check(request.span == (before..conn.bytes.len()), || {
        format!(
            "canary {n}: host connection {} carried other bytes since the attack began: {}",
            conn.id,
            escape(&conn.bytes[before..], 400)
        )
    });
    // The caller's answer is the host's answer to this very request.
    let expected = (
        hosts[*h].name().to_owned(),
        conn.id as u64,
        (*index + 1) as u64,
    );
    let got = (
        answer["host"].as_str().unwrap_or_default().to_owned(),
        answer["conn"].as_u64().unwrap_or(u64::MAX),
        answer["request"].as_u64().unwrap_or(u64::MAX),
    );
    problems.check(
        got == expected && answer["path"] == "/workflows/w/runs",
        || format!("canary {n}: the caller got the answer to another request: {answer}"),
    );
    Some(Served {
        host: *h,
        conn: conn.id,
    })
}

// ---------------------------------------------------------------------------
// 1. Caller-side smuggling corpus: 400, closed, nothing reaches a host.

/// Sends `request`; expects one answer in `allowed` (400 unless said
/// otherwise), the connection closed, no byte at any host, then a clean
/// canary. `server` adds `[server]` keys.
async fn rejected(request: Vec<u8>, allowed: &[u16], server: &str) {
    let host = RecordingHost::start("h").await;
    let gw = gateway(&[&host], server, "").await;
    let marks = [host.mark()];
    let reply = exchange(gw.addr, request).await;
    let mut problems = Problems::default();
    check_rejected(&reply, allowed, &mut problems);
    let served = canary(&gw, &[&host], 1, &marks, &mut problems).await;
    // No byte of the rejected request reached the host: since the attack
    // began the host got the canary and nothing else.
    for (conn, bytes) in host.since(&marks[0]) {
        if served.is_some_and(|s| s.conn == conn) {
            continue; // checked by the canary
        }
        problems.add(format!(
            "the rejected request reached the host on connection {conn}: {}",
            escape(&bytes, 400)
        ));
    }
    problems.assert_none(&[&host]);
}

/// A 400 as in [`check_rejected`], with no byte of the request at the host.
fn check_rejected_unforwarded(
    reply: &Reply,
    forwarded: &[(usize, Vec<u8>)],
    problems: &mut Problems,
) {
    check_rejected(reply, &[400], problems);
    for (conn, bytes) in forwarded {
        problems.add(format!(
            "rejected, yet the request reached the host on connection {conn}: {}",
            escape(bytes, 400)
        ));
    }
}

/// The one clean request that one host connection got, with that
/// connection's bytes; a problem otherwise.
fn forwarded_once(
    forwarded: &[(usize, Vec<u8>)],
    problems: &mut Problems,
) -> Option<(crate::common::recording::HostRequest, Vec<u8>)> {
    match forwarded {
        [(_, bytes)] => match crate::common::recording::clean_requests(bytes) {
            Ok(mut requests) if requests.len() == 1 => requests.pop().map(|r| (r, bytes.clone())),
            Ok(requests) => {
                problems.add(format!(
                    "the host got {} requests for one: {}",
                    requests.len(),
                    escape(bytes, 400)
                ));
                None
            }
            Err(why) => {
                problems.add(format!("the host got an unclean request: {why}"));
                None
            }
        },
        other => {
            problems.add(format!(
                "expected one host connection to get the request, {} did",
                other.len()
            ));
            None
        }
    }
}

/// For framings RFC 9112 lets a recipient either reject or normalise: a
/// 400 as in [`rejected`], or the request forwarded as one clean request
/// whose head has only CRLF line ends, one `Content-Length` of `body`'s
/// length, and exactly `body`.
async fn rejected_or_normalised(request: Vec<u8>, body: &[u8]) {
    let host = RecordingHost::start("h").await;
    let gw = gateway(&[&host], "", "").await;
    let marks = [host.mark()];
    let reply = exchange(gw.addr, request).await;
    let (responses, _) = reply.responses();
    let mut problems = Problems::default();
    let forwarded = host.since(&marks[0]);
    if responses.first().is_some_and(|r| r.status == 400) {
        check_rejected_unforwarded(&reply, &forwarded, &mut problems);
    } else {
        problems.check(responses.len() == 1 && responses[0].status == 200, || {
            format!(
                "expected a 400, or a 200 from the host; {}",
                reply.describe()
            )
        });
        if let Some((r, bytes)) = forwarded_once(&forwarded, &mut problems) {
            let head = &bytes[r.head.clone()];
            let crlf_only = head.iter().enumerate().all(|(i, &b)| match b {
                b'\r' => head.get(i + 1) == Some(&b'\n'),
                b'\n' => i > 0 && head[i - 1] == b'\r',
                _ => true,
            });
            problems.check(crlf_only, || {
                format!(
                    "the forwarded head has a bare CR or LF: {}",
                    escape(head, 400)
                )
            });
            let length = body.len().to_string();
            problems.check(
                r.values("content-length") == [length.as_bytes()]
                    && r.values("transfer-encoding").is_empty()
                    && r.body == body,
                || {
                    format!(
                        "the forwarded request is not normalised to one Content-Length: {length}: {}",
                        escape(head, 400)
                    )
                },
            );
        }
    }
    let marks = [host.mark()];
    canary(&gw, &[&host], 1, &marks, &mut problems).await;
    problems.assert_none(&[&host]);
}

/// For a request with both `Content-Length` and `Transfer-Encoding:
/// chunked`. RFC 9112 §6.1 lets a server reject it, or decode the chunks,
/// ignore the length and close the connection after answering; hyper does
/// the latter, and the gateway re-frames what it forwards. Either way no
/// smuggling: a 400 as in [`rejected`], or exactly one answer, the caller's
/// connection closed after it, and the host got exactly one clean request
/// whose body is the decoded chunks (`decoded`), framed by the gateway;
/// then a clean canary.
async fn rejected_or_decoded_as_chunked(request: Vec<u8>, decoded: &[u8]) {
    let host = RecordingHost::start("h").await;
    let gw = gateway(&[&host], "", "").await;
    let marks = [host.mark()];
    let reply = exchange(gw.addr, request).await;
    let (responses, tail) = reply.responses();
    let mut problems = Problems::default();
    let forwarded = host.since(&marks[0]);
    if responses.first().is_some_and(|r| r.status == 400) {
        check_rejected_unforwarded(&reply, &forwarded, &mut problems);
    } else {
        problems.check(
            responses.len() == 1 && responses[0].status == 200 && responses[0].complete,
            || {
                format!(
                    "expected a 400, or one 200 from the host; {}",
                    reply.describe()
                )
            },
        );
        if let Err(tail) = tail {
            problems.add(format!("the caller's bytes end in {tail}"));
        }
        problems.check(reply.end.closed(), || {
            format!(
                "the connection stayed open after a request with both lengths; {}",
                reply.describe()
            )
        });
        if let Some((r, bytes)) = forwarded_once(&forwarded, &mut problems) {
            let framed_once =
                r.values("content-length").len() + r.values("transfer-encoding").len() == 1;
            problems.check(framed_once && r.body == decoded, || {
                format!(
                    "the host did not get exactly the decoded chunks, framed once: {}",
                    escape(&bytes, 400)
                )
            });
        }
    }
    let marks = [host.mark()];
    canary(&gw, &[&host], 1, &marks, &mut problems).await;
    problems.assert_none(&[&host]);
}

/// The request `CL: 0` + chunked hides: a whole second request.
const HIDDEN_REQUEST: &[u8] = b"GET /sessions?type=workflow HTTP/1.1\r\nHost: x\r\n\r\n";

#[tokio::test]
async fn caller_cl0_plus_chunked_hiding_a_second_request_is_rejected() {
    rejected_or_decoded_as_chunked(
        post(
            "Content-Length: 0\r\nTransfer-Encoding: chunked\r\n",
            &chunked(HIDDEN_REQUEST),
        ),
        HIDDEN_REQUEST,
    )
    .await;
}

#[tokio::test]
async fn caller_cl_then_te_is_rejected() {
    rejected_or_decoded_as_chunked(
        post(
            "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
            &chunked(b"message=cl-te"),
        ),
        b"message=cl-te",
    )
    .await;
}

#[tokio::test]
async fn caller_te_then_cl_is_rejected() {
    rejected_or_decoded_as_chunked(
        post(
            "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n",
            &chunked(b"message=te-cl"),
        ),
        b"message=te-cl",
    )
    .await;
}

#[tokio::test]
async fn caller_te_chunked_then_identity_is_rejected() {
    rejected(
        post(
            "Transfer-Encoding: chunked, identity\r\n",
            &chunked(b"message=identity"),
        ),
        &[400, 501],
        "",
    )
    .await;
}

#[tokio::test]
async fn caller_te_xchunked_is_rejected() {
    rejected(
        post(
            "Transfer-Encoding: xchunked\r\n",
            &chunked(b"message=xchunked"),
        ),
        &[400, 501],
        "",
    )
    .await;
}

#[tokio::test]
async fn caller_te_with_space_before_colon_is_rejected() {
    rejected(
        post(
            "Transfer-Encoding : chunked\r\n",
            &chunked(b"message=space"),
        ),
        &[400],
        "",
    )
    .await;
}

#[tokio::test]
async fn caller_te_with_tab_beside_cl_is_rejected() {
    rejected_or_decoded_as_chunked(
        post(
            "Content-Length: 4\r\nTransfer-Encoding:\tchunked\r\n",
            &chunked(b"message=tab"),
        ),
        b"message=tab",
    )
    .await;
}

#[tokio::test]
async fn caller_te_with_vertical_tab_is_rejected() {
    rejected(
        post(
            "Content-Length: 4\r\nTransfer-Encoding:\x0bchunked\r\n",
            &chunked(b"message=vtab"),
        ),
        &[400],
        "",
    )
    .await;
}

#[tokio::test]
async fn caller_two_te_lines_are_rejected() {
    rejected(
        post(
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
            &chunked(b"message=two-te"),
        ),
        &[400, 501],
        "",
    )
    .await;
}

#[tokio::test]
async fn caller_two_different_content_lengths_are_rejected() {
    rejected(
        post("Content-Length: 5\r\nContent-Length: 6\r\n", b"hello!"),
        &[400],
        "",
    )
    .await;
}

#[tokio::test]
async fn caller_content_length_list_is_rejected_or_normalised() {
    rejected_or_normalised(post("Content-Length: 5, 5\r\n", b"hello"), b"hello").await;
}

#[tokio::test]
async fn caller_content_length_with_plus_sign_is_rejected() {
    rejected(post("Content-Length: +5\r\n", b"hello"), &[400], "").await;
}

#[tokio::test]
async fn caller_negative_content_length_is_rejected() {
    rejected(post("Content-Length: -1\r\n", b"hello"), &[400], "").await;
}

#[tokio::test]
async fn caller_thirty_digit_content_length_is_rejected() {
    rejected(
        post(
            "Content-Length: 100000000000000000000000000005\r\n",
            b"hello",
        ),
        &[400, 413],
        "",
    )
    .await;
}

#[tokio::test]
async fn caller_te_in_http10_is_rejected() {
    let mut request = b"POST /workflows/w/runs HTTP/1.0\r\nHost: gateway.test\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    request.extend_from_slice(&chunked(b"message=http10"));
    rejected(request, &[400], "").await;
}

#[tokio::test]
async fn caller_obs_fold_is_rejected() {
    rejected(
        post("Content-Length: 5\r\nX-Folded: a\r\n b\r\n", b"hello"),
        &[400],
        "",
    )
    .await;
}

#[tokio::test]
async fn caller_bare_cr_in_head_is_rejected() {
    rejected(
        post("Content-Length: 5\r\nX-Bare: a\rb\r\n", b"hello"),
        &[400],
        "",
    )
    .await;
}

#[tokio::test]
async fn caller_bare_lf_in_head_is_rejected_or_normalised() {
    rejected_or_normalised(
        post("Content-Length: 5\r\nX-Bare: a\nX-After: b\r\n", b"hello"),
        b"hello",
    )
    .await;
}

#[tokio::test]
async fn caller_nul_in_header_value_is_rejected() {
    rejected(
        post("Content-Length: 5\r\nX-Nul: a\0b\r\n", b"hello"),
        &[400],
        "",
    )
    .await;
}

#[tokio::test]
async fn caller_http11_without_host_is_rejected() {
    rejected(
        b"POST /workflows/w/runs HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 5\r\n\r\nhello".to_vec(),
        &[400],
        "",
    )
    .await;
}

#[tokio::test]
async fn caller_two_host_lines_are_rejected() {
    rejected(
        b"POST /workflows/w/runs HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 5\r\n\r\nhello".to_vec(),
        &[400],
        "",
    )
    .await;
}

#[tokio::test]
async fn caller_cl3_with_five_byte_chunked_body_is_rejected() {
    rejected_or_decoded_as_chunked(
        post(
            "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
            &chunked(b"hello"),
        ),
        b"hello",
    )
    .await;
}

#[tokio::test]
async fn caller_cl1_with_three_mib_chunked_body_is_rejected() {
    // The chunks are what counts against the limit, not the declared 1:
    // refused at once, or cut off at the limit with the host never getting
    // a complete request.
    broken_body(
        post(
            "Content-Length: 1\r\nTransfer-Encoding: chunked\r\n",
            &big_chunked(3 << 20),
        ),
        &[400, 413],
        "max_body_bytes = 1048576",
    )
    .await;
}

// ---------------------------------------------------------------------------
// 2. Bodies found broken once forwarding may have begun.

/// Sends `request`, whose body breaks after a valid start. The caller gets
/// a status in `allowed` or a closed connection (never a 2xx), the
/// connection ends, the host never gets a complete request (what it got
/// ends unfinished, and that connection is closed), then a clean canary.
async fn broken_body(request: Vec<u8>, allowed: &[u16], server: &str) {
    let host = RecordingHost::start("h").await;
    let gw = gateway(&[&host], server, "").await;
    let marks = [host.mark()];
    let reply = exchange(gw.addr, request).await;
    let mut problems = Problems::default();
    let (responses, _) = reply.responses();
    let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
    problems.check(
        statuses.is_empty() || (statuses.len() == 1 && allowed.contains(&statuses[0])),
        || {
            format!(
                "expected {allowed:?} or a closed connection, got statuses {statuses:?}; {}",
                reply.describe()
            )
        },
    );
    problems.check(reply.end.closed(), || {
        format!(
            "the caller's connection stayed open after a broken body; {}",
            reply.describe()
        )
    });
    // Whatever reached the host is an unfinished request on a connection
    // the gateway then closed.
    let touched: Vec<usize> = host.since(&marks[0]).iter().map(|(c, _)| *c).collect();
    let settled = host
        .wait_until(BOUND, |conns| {
            touched
                .iter()
                .all(|&c| conns[c].closed || !conns[c].requests.is_empty())
        })
        .await;
    let conns = settled.unwrap_or_else(|conns| conns);
    for &c in &touched {
        let conn = &conns[c];
        problems.check(conn.requests.is_empty(), || {
            format!(
                "the host got a complete request from a broken body on connection {c}: {}",
                conn.requests[0].describe()
            )
        });
        problems.check(conn.closed, || {
            format!("the gateway left host connection {c} open after a broken body")
        });
    }
    canary(&gw, &[&host], 1, &marks, &mut problems).await;
    problems.assert_none(&[&host]);
}

#[tokio::test]
async fn caller_body_bad_chunk_size() {
    let body = [chunk(b"message=bad"), b"zz\r\nhello\r\n0\r\n\r\n".to_vec()].concat();
    broken_body(post("Transfer-Encoding: chunked\r\n", &body), &[400], "").await;
}

#[tokio::test]
async fn caller_body_overflowing_chunk_size() {
    let body = [
        chunk(b"message=big"),
        b"ffffffffffffffffffff\r\nhello\r\n0\r\n\r\n".to_vec(),
    ]
    .concat();
    broken_body(
        post("Transfer-Encoding: chunked\r\n", &body),
        &[400, 413],
        "",
    )
    .await;
}

#[tokio::test]
async fn caller_body_chunk_extension_with_control_characters() {
    let body = [
        chunk(b"message=ext"),
        b"5;ext=\x00\x01\x7f\rX\r\nhello\r\n0\r\n\r\n".to_vec(),
    ]
    .concat();
    broken_body(post("Transfer-Encoding: chunked\r\n", &body), &[400], "").await;
}

#[tokio::test]
async fn caller_body_malformed_trailer() {
    let body = [
        chunk(b"message=trailer"),
        b"0\r\nno colon in this trailer\r\n\r\n".to_vec(),
    ]
    .concat();
    broken_body(post("Transfer-Encoding: chunked\r\n", &body), &[400], "").await;
}

#[tokio::test]
async fn caller_body_chunked_over_max_body_bytes_gets_413() {
    broken_body(
        post("Transfer-Encoding: chunked\r\n", &big_chunked(3 << 20)),
        &[413],
        "max_body_bytes = 1048576",
    )
    .await;
}

// ---------------------------------------------------------------------------
// 3. Broken hosts.

/// What the caller must see of a broken host's answer.
type Expect = fn(&Reply, &mut Problems);

/// One complete 502 with a JSON `{"detail": "..."}` and nothing else.
fn expect_502(reply: &Reply, problems: &mut Problems) {
    expect_json_error(reply, 502, problems);
}

fn expect_504(reply: &Reply, problems: &mut Problems) {
    expect_json_error(reply, 504, problems);
}

fn expect_json_error(reply: &Reply, status: u16, problems: &mut Problems) {
    let (responses, tail) = reply.responses();
    let ok = match responses.as_slice() {
        [r] => {
            r.status == status
                && r.complete
                && r.header("content-type")
                    .is_some_and(|ct| ct.starts_with(b"application/json"))
                && r.json().is_some_and(|j| j["detail"].is_string())
        }
        _ => false,
    };
    problems.check(ok, || {
        format!(
            "expected one complete {status} with a JSON detail; {}",
            reply.describe()
        )
    });
    if let Err(tail) = tail {
        problems.add(format!("the caller's bytes end in {tail}"));
    }
}

/// A relayed answer cut short: one response whose declared framing shows
/// it is unfinished (or, if nothing was relayed yet, a clean 502), then the
/// connection closed; never a second response.
fn expect_cut(reply: &Reply, problems: &mut Problems) {
    let (responses, tail) = reply.responses();
    match responses.as_slice() {
        [r] if r.status == 502 => expect_502(reply, problems),
        [r] => problems.check(
            !r.complete && matches!(r.framing, RespFraming::Length(_) | RespFraming::Chunked),
            || {
                format!(
                    "expected an answer visibly cut short (declared length or chunks, unfinished); {}",
                    reply.describe()
                )
            },
        ),
        _ => problems.add(format!(
            "expected exactly one (cut) response; {}",
            reply.describe()
        )),
    }
    if let Err(tail) = tail {
        problems.add(format!("the caller's bytes end in {tail}"));
    }
    problems.check(reply.end.closed(), || {
        format!(
            "the caller's connection stayed open after a cut answer; {}",
            reply.describe()
        )
    });
}

/// The host answers the caller's run with `answer`. The caller sees what
/// `expect` says; the host connection that answered is never used again
/// (with `broken`) and is closed by the gateway; the next canary reaches
/// the host byte-exact on another connection.
async fn broken_host(
    answer: Answer,
    request: Vec<u8>,
    workflow: &str,
    expect: Expect,
    broken: bool,
) {
    let host = RecordingHost::start("h").await;
    let gw = gateway(&[&host], "", workflow).await;
    host.answer_next(answer);
    let marks = [host.mark()];
    let reply = exchange(gw.addr, request).await;
    let mut problems = Problems::default();
    expect(&reply, &mut problems);
    let first = host
        .connections()
        .iter()
        .find(|c| !c.requests.is_empty())
        .map(|c| c.id);
    let Some(first) = first else {
        problems.add("the caller's run never reached the host".to_owned());
        problems.assert_none(&[&host]);
        return;
    };
    if broken {
        let closed = host.wait_until(BOUND, |conns| conns[first].closed).await;
        problems.check(closed.is_ok(), || {
            format!("the gateway never closed the broken host connection {first}")
        });
    }
    // A broken connection must carry nothing more, so the canary's must
    // have carried nothing since the attack; a sound one may be reused.
    let marks = if broken { marks } else { [host.mark()] };
    let served = canary(&gw, &[&host], 1, &marks, &mut problems).await;
    if broken {
        problems.check(served.is_none_or(|s| s.conn != first), || {
            format!("the canary went out on the broken host connection {first}")
        });
        let conns = host.connections();
        problems.check(
            conns[first].requests.len() == 1 && conns[first].tail() == Tail::Empty,
            || format!("the broken host connection {first} was used again"),
        );
    }
    problems.assert_none(&[&host]);
}

const JSON_HEAD: &str = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n";

#[tokio::test]
async fn host_answer_with_both_cl_and_te_gets_502() {
    let answer = format!(
        "{JSON_HEAD}content-length: 5\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    );
    broken_host(
        Answer::Raw(answer.into_bytes()),
        run_request("h1", true),
        "",
        expect_502,
        true,
    )
    .await;
}

#[tokio::test]
async fn host_answer_with_te_gzip_and_cl_gets_502() {
    let answer = format!("{JSON_HEAD}transfer-encoding: gzip\r\ncontent-length: 5\r\n\r\nhello");
    broken_host(
        Answer::Raw(answer.into_bytes()),
        run_request("h2", true),
        "",
        expect_502,
        true,
    )
    .await;
}

#[tokio::test]
async fn host_closing_before_its_content_length_cuts_the_caller() {
    let answer = format!("{JSON_HEAD}content-length: 100\r\n\r\n{{\"partial\":");
    broken_host(
        Answer::RawThenClose(answer.into_bytes()),
        run_request("h3", false),
        "",
        expect_cut,
        true,
    )
    .await;
}

#[tokio::test]
async fn host_interim_answers_before_the_final_one() {
    let answer = format!(
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\n{JSON_HEAD}content-length: 14\r\n\r\n{{\"final\":true}}"
    );
    fn expect_final(reply: &Reply, problems: &mut Problems) {
        let (responses, tail) = reply.responses();
        let finals: Vec<&Resp> = responses.iter().filter(|r| r.status >= 200).collect();
        let interim_ok = responses
            .iter()
            .take_while(|r| r.status < 200)
            .all(|r| matches!(r.status, 100 | 103) && r.body.is_empty());
        problems.check(
            finals.len() == 1
                && finals[0].status == 200
                && finals[0].complete
                && finals[0].body == b"{\"final\":true}"
                && interim_ok
                && responses.last().is_some_and(|r| r.status == 200),
            || format!("expected the final 200 answer; {}", reply.describe()),
        );
        if let Err(tail) = tail {
            problems.add(format!("the caller's bytes end in {tail}"));
        }
    }
    broken_host(
        Answer::Raw(answer.into_bytes()),
        run_request("h5", true),
        "",
        expect_final,
        false,
    )
    .await;
}

/// A bodiless status the host gives a body anyway: the caller gets that
/// status without a body (or a 502), and nothing of the stray body.
fn expect_bodiless(status: u16) -> impl Fn(&Reply, &mut Problems) {
    move |reply, problems| {
        let (responses, tail) = reply.responses();
        match responses.as_slice() {
            [r] if r.status == 502 => expect_502(reply, problems),
            [r] => problems.check(r.status == status && r.body.is_empty(), || {
                format!("expected a bodiless {status}; {}", reply.describe())
            }),
            _ => problems.add(format!(
                "expected exactly one response; {}",
                reply.describe()
            )),
        }
        if let Err(tail) = tail {
            problems.add(format!("the stray body reached the caller: {tail}"));
        }
    }
}

#[tokio::test]
async fn host_204_with_a_body_never_leaks_it() {
    fn expect(reply: &Reply, problems: &mut Problems) {
        expect_bodiless(204)(reply, problems)
    }
    broken_host(
        Answer::Raw(b"HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\nhello".to_vec()),
        run_request("h6", true),
        "",
        expect,
        true,
    )
    .await;
}

#[tokio::test]
async fn host_304_with_a_body_never_leaks_it() {
    fn expect(reply: &Reply, problems: &mut Problems) {
        expect_bodiless(304)(reply, problems)
    }
    broken_host(
        Answer::Raw(b"HTTP/1.1 304 Not Modified\r\ncontent-length: 5\r\n\r\nhello".to_vec()),
        run_request("h7", true),
        "",
        expect,
        true,
    )
    .await;
}

#[tokio::test]
async fn host_invalid_status_line_gets_502() {
    broken_host(
        Answer::Raw(b"HTTP/1.1 2x0 OK\r\ncontent-length: 2\r\n\r\nok".to_vec()),
        run_request("h8", true),
        "",
        expect_502,
        true,
    )
    .await;
}

#[tokio::test]
async fn host_100_kib_header_gets_502() {
    let answer = format!(
        "{JSON_HEAD}x-big: {}\r\ncontent-length: 2\r\n\r\nok",
        "a".repeat(100 * 1024)
    );
    broken_host(
        Answer::Raw(answer.into_bytes()),
        run_request("h9", true),
        "",
        expect_502,
        true,
    )
    .await;
}

#[tokio::test]
async fn host_head_that_never_finishes_gets_504() {
    broken_host(
        Answer::RawThenHang(JSON_HEAD.as_bytes().to_vec()),
        run_request("h10", true),
        "timeout = 1\nfirst_byte_timeout = 1",
        expect_504,
        true,
    )
    .await;
}

#[tokio::test]
async fn host_body_that_never_finishes_cuts_the_caller() {
    let answer = format!("{JSON_HEAD}content-length: 100\r\n\r\n{{\"partial\":");
    broken_host(
        Answer::RawThenHang(answer.into_bytes()),
        run_request("h11", false),
        "timeout = 1\nfirst_byte_timeout = 1",
        expect_cut,
        true,
    )
    .await;
}

const EVENT_1: &str = "event: WorkflowStarted\ndata: {\"event\":\"WorkflowStarted\",\"run_id\":\"r-sse\",\"session_id\":\"s-sse\"}\n\n";
const EVENT_2: &str =
    "event: StepProgress\ndata: {\"event\":\"StepProgress\",\"run_id\":\"r-sse\"}\n\n";

/// [`EVENT_1`] and [`EVENT_2`], then exactly one `WorkflowError` event, in
/// a 200 event stream that ends chunked or with the connection (never
/// framed by a length it cannot keep).
fn expect_events_then_one_error(reply: &Reply, problems: &mut Problems) {
    let (responses, tail) = reply.responses();
    let [r] = responses.as_slice() else {
        problems.add(format!("expected one response; {}", reply.describe()));
        return;
    };
    problems.check(
        r.status == 200
            && r.header("content-type")
                .is_some_and(|ct| ct.starts_with(b"text/event-stream")),
        || format!("expected a 200 event stream; {}", reply.describe()),
    );
    problems.check(
        match r.framing {
            RespFraming::Chunked => r.complete,
            RespFraming::UntilClose => reply.end.closed(),
            _ => false,
        },
        || {
            format!(
                "the event stream must end chunked or with the connection, framed {:?}, complete {}; {}",
                r.framing,
                r.complete,
                reply.describe()
            )
        },
    );
    let body = String::from_utf8_lossy(&r.body);
    let relayed = format!("{EVENT_1}{EVENT_2}");
    let error = body.strip_prefix(&relayed);
    problems.check(
        error.is_some_and(|e| {
            e.starts_with("event: WorkflowError\n")
                && e.ends_with("\n\n")
                && e.matches("event:").count() == 1
        }),
        || {
            format!(
                "expected the events, then exactly one WorkflowError event; body: {}",
                escape(&r.body, 600)
            )
        },
    );
    if let Err(tail) = tail {
        problems.add(format!("the caller's bytes end in {tail}"));
    }
}

#[tokio::test]
async fn host_event_stream_cut_before_its_content_length_ends_with_one_error_event() {
    let answer = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: 4096\r\n\r\n{EVENT_1}{EVENT_2}"
    );
    let body = "message=sse&stream=true";
    let request = post(
        &format!("Content-Length: {}\r\nConnection: close\r\n", body.len()),
        body.as_bytes(),
    );
    broken_host(
        Answer::RawThenClose(answer.into_bytes()),
        request,
        "",
        expect_events_then_one_error,
        true,
    )
    .await;
}

#[tokio::test]
async fn host_bytes_after_its_content_length_reach_no_caller() {
    let host = RecordingHost::start("h").await;
    let gw = gateway(&[&host], "", "").await;
    host.answer_next(Answer::Raw(
        format!(
            "{JSON_HEAD}content-length: 14\r\n\r\n{{\"first\":true}}{JSON_HEAD}content-length: 14\r\n\r\n{{\"smuggled\":1}}"
        )
        .into_bytes(),
    ));
    // Two pipelined requests in one write.
    let pipelined = [run_request("p1", false), run_request("p2", true)].concat();
    let reply = exchange(gw.addr, pipelined).await;
    let mut problems = Problems::default();
    let (responses, tail) = reply.responses();
    problems.check(
        responses.len() == 2
            && responses.iter().all(|r| r.status == 200 && r.complete)
            && responses[0].body == b"{\"first\":true}",
        || {
            format!(
                "expected two answers, the first the host's; {}",
                reply.describe()
            )
        },
    );
    problems.check(!reply.bytes.windows(8).any(|w| w == b"smuggled"), || {
        format!(
            "the host's stray bytes reached the caller; {}",
            reply.describe()
        )
    });
    if let Err(tail) = tail {
        problems.add(format!("the caller's bytes end in {tail}"));
    }
    let requests = host.requests();
    let p1 = requests
        .iter()
        .find(|(_, r)| r.body.starts_with(b"message=p1&"));
    let p2 = requests
        .iter()
        .find(|(_, r)| r.body.starts_with(b"message=p2&"));
    match (p1, p2) {
        (Some((c1, _)), Some((c2, _))) => {
            problems.check(c1 != c2, || {
                format!("the second request went out on the poisoned host connection {c1}")
            });
            if let Some(second) = responses.get(1).and_then(Resp::json) {
                problems.check(second["conn"] == *c2 as u64, || {
                    format!("the second answer is not the host's answer to it: {second}")
                });
            }
            let poisoned = &host.connections()[*c1];
            problems.check(poisoned.requests.len() == 1, || {
                format!("the poisoned host connection {c1} was used again")
            });
        }
        _ => problems.add("the host did not get both requests".to_owned()),
    }
    let served = canary(&gw, &[&host], 1, &[host.mark()], &mut problems).await;
    if let (Some(served), Some((c1, _))) = (served, p1) {
        problems.check(served.conn != *c1, || {
            "the canary went out on the poisoned host connection".to_owned()
        });
    }
    problems.assert_none(&[&host]);
    // Exactly these requests, each connection's bytes whole requests.
    let (c1, c2, c3) = (p1.unwrap().0, p2.unwrap().0, served.unwrap().conn);
    host.assert_received(&[
        (c1, "POST", "/workflows/w/runs", b"message=p1&stream=false"),
        (c2, "POST", "/workflows/w/runs", b"message=p2&stream=false"),
        (
            c3,
            "POST",
            "/workflows/w/runs",
            b"message=canary-1&stream=false",
        ),
    ]);
}

// ---------------------------------------------------------------------------
// 4. Caller errors are not host failures.

/// The connection whose bytes since `mark` start a run request.
fn new_run(conns: &[ConnLog], mark: &Mark) -> Option<usize> {
    conns
        .iter()
        .find(|c| {
            c.bytes[mark.before(c.id).min(c.bytes.len())..].starts_with(b"POST /workflows/w/runs")
        })
        .map(|c| c.id)
}

/// What the caller does wrong.
#[derive(Clone, Copy)]
enum CallerError {
    /// A malformed chunked body, which must get a 400.
    MalformedChunks,
    /// An upload whose caller hangs up mid-body.
    HangUp,
}

async fn caller_error(
    gw: &Gw,
    hosts: [&RecordingHost; 2],
    error: CallerError,
    round: usize,
    problems: &mut Problems,
) {
    if let CallerError::MalformedChunks = error {
        let body = [
            chunk(format!("message=bad-{round}").as_bytes()),
            b"zz\r\n".to_vec(),
        ]
        .concat();
        let request = post("Transfer-Encoding: chunked\r\nConnection: close\r\n", &body);
        let reply = exchange(gw.addr, request).await;
        let (responses, _) = reply.responses();
        let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
        problems.check(statuses == [400], || {
            format!("round {round}, malformed chunked body: expected 400, got {statuses:?}")
        });
        return;
    }
    let marks = [hosts[0].mark(), hosts[1].mark()];
    let mut caller = TcpStream::connect(gw.addr).await.unwrap();
    caller
        .write_all(&post("Content-Length: 1000000\r\n", b""))
        .await
        .unwrap();
    caller.write_all(&vec![b'x'; 64 * 1024]).await.unwrap();
    // Once a host has the start of it, the caller leaves.
    let reached = tokio::select! {
        Ok(conns) = hosts[0].wait_until(BOUND, |conns| new_run(conns, &marks[0]).is_some()) => {
            new_run(&conns, &marks[0]).map(|conn| (0, conn))
        }
        Ok(conns) = hosts[1].wait_until(BOUND, |conns| new_run(conns, &marks[1]).is_some()) => {
            new_run(&conns, &marks[1]).map(|conn| (1, conn))
        }
        else => None,
    };
    drop(caller);
    let Some((h, conn)) = reached else {
        problems.add(format!("round {round}: the upload never reached a host"));
        return;
    };
    let closed = hosts[h].wait_until(BOUND, |conns| conns[conn].closed).await;
    problems.check(closed.is_ok(), || {
        format!(
            "round {round}: the gateway never closed host connection {conn} after the caller left"
        )
    });
}

/// Two replicas, ejected at the first failure for the rest of the test.
/// After each of 12 caller errors canaries must reach both replicas again:
/// had the error been charged to a replica, it would be ejected while the
/// other is not, and every canary would go to the other (the gateway picks
/// at random between healthy replicas, so up to 24 canaries all landing on
/// one by chance has probability 2^-23). Checking after each error, rather
/// than once at the end, matters: once both are ejected the gateway tries
/// both again, and canaries would reach both.
async fn caller_errors_never_eject(error: CallerError) {
    let a = RecordingHost::start("a").await;
    let b = RecordingHost::start("b").await;
    let gw = gateway(
        &[&a, &b],
        "eject_after = 1\neject_base = 300\neject_max = 300",
        "",
    )
    .await;
    let mut problems = Problems::default();
    let mut n = 0;
    for round in 0..12 {
        caller_error(&gw, [&a, &b], error, round, &mut problems).await;
        let mut served = [0usize; 2];
        for _ in 0..24 {
            let marks = [a.mark(), b.mark()];
            if let Some(s) = canary(&gw, &[&a, &b], n, &marks, &mut problems).await {
                served[s.host] += 1;
            }
            n += 1;
            if served[0] > 0 && served[1] > 0 {
                break;
            }
        }
        problems.check(served[0] > 0 && served[1] > 0, || {
            format!(
                "after round {round}'s caller error, canaries were served {served:?} by [a, b]: a replica was ejected for a caller's error"
            )
        });
        if !problems.0.is_empty() {
            break;
        }
    }
    problems.assert_none(&[&a, &b]);
}

#[tokio::test]
async fn caller_malformed_chunks_never_eject_a_replica() {
    caller_errors_never_eject(CallerError::MalformedChunks).await;
}

#[tokio::test]
async fn caller_hang_ups_mid_upload_never_eject_a_replica() {
    caller_errors_never_eject(CallerError::HangUp).await;
}

// ---------------------------------------------------------------------------
// 5. Connection limits and timeouts.

const GET_HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nHost: gateway.test\r\n\r\n";
const GET_HEALTH_AND_CLOSE: &[u8] =
    b"GET /health HTTP/1.1\r\nHost: gateway.test\r\nConnection: close\r\n\r\n";

/// Writes `request` on `stream` and reads until the gateway closes it.
async fn exchange_on(stream: TcpStream, request: &[u8]) -> Reply {
    read_reply(stream, vec![request.to_vec()], CLOSE_GRACE).await
}

/// Reads until the gateway closes `stream` (at most [`BOUND`]), writing
/// `writes` first.
async fn until_closed(stream: TcpStream, writes: Vec<Vec<u8>>) -> Reply {
    read_reply(stream, writes, BOUND).await
}

/// The reply has no successful answer, and the gateway closed the
/// connection.
fn check_closed_unserved(reply: &Reply, what: &str, problems: &mut Problems) {
    let (responses, _) = reply.responses();
    problems.check(responses.iter().all(|r| r.status >= 400), || {
        format!("{what}: the gateway served it; {}", reply.describe())
    });
    problems.check(reply.end.closed(), || {
        format!(
            "{what}: the gateway never closed the connection; {}",
            reply.describe()
        )
    });
}

const SHORT_TIMEOUTS: &str = "header_read_timeout = 1\nkeep_alive_timeout = 1\nwrite_timeout = 1";

#[tokio::test]
async fn limit_a_connection_that_sends_nothing_is_closed() {
    let host = RecordingHost::start("h").await;
    let gw = gateway(&[&host], SHORT_TIMEOUTS, "").await;
    let reply = until_closed(TcpStream::connect(gw.addr).await.unwrap(), vec![]).await;
    let mut problems = Problems::default();
    check_closed_unserved(&reply, "a silent connection", &mut problems);
    problems.assert_none(&[&host]);
}

#[tokio::test]
async fn limit_a_connection_that_stops_mid_head_is_closed() {
    let host = RecordingHost::start("h").await;
    let gw = gateway(&[&host], SHORT_TIMEOUTS, "").await;
    let half = b"POST /workflows/w/runs HTTP/1.1\r\nHost: gateway.test\r\nContent-Le".to_vec();
    let reply = until_closed(TcpStream::connect(gw.addr).await.unwrap(), vec![half]).await;
    let mut problems = Problems::default();
    check_closed_unserved(&reply, "half a head", &mut problems);
    problems.check(host.connections().is_empty(), || {
        "half a head reached the host".to_owned()
    });
    problems.assert_none(&[&host]);
}

#[tokio::test]
async fn limit_an_idle_keep_alive_connection_is_closed() {
    let host = RecordingHost::start("h").await;
    let gw = gateway(&[&host], SHORT_TIMEOUTS, "").await;
    let stream = TcpStream::connect(gw.addr).await.unwrap();
    let reply = until_closed(stream, vec![GET_HEALTH.to_vec()]).await;
    let mut problems = Problems::default();
    let (responses, _) = reply.responses();
    problems.check(
        responses.len() == 1 && responses[0].status == 200 && responses[0].complete,
        || format!("expected one 200 for /health; {}", reply.describe()),
    );
    problems.check(reply.end.closed(), || {
        format!(
            "the idle kept-alive connection was never closed; {}",
            reply.describe()
        )
    });
    problems.assert_none(&[&host]);
}

#[tokio::test]
async fn limit_an_idle_h2c_connection_is_closed() {
    let host = RecordingHost::start("h").await;
    let gw = gateway(&[&host], SHORT_TIMEOUTS, "").await;
    let stream = TcpStream::connect(gw.addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    let mut connection = tokio::spawn(connection);
    let request = http::Request::get(format!("http://{}/health", gw.addr))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = tokio::time::timeout(BOUND, sender.send_request(request))
        .await
        .expect("no h2 answer")
        .unwrap();
    assert_eq!(response.status(), 200);
    let _ = http_body_util::BodyExt::collect(response.into_body()).await;
    // The client keeps its side open (`sender` lives on): only the gateway
    // can end the connection.
    let ended = tokio::time::timeout(BOUND, &mut connection).await;
    assert!(
        ended.is_ok(),
        "the idle h2c connection was still open {BOUND:?} after its last stream"
    );
    drop(sender);
}

#[tokio::test]
async fn limit_a_streaming_caller_that_never_reads_is_cut_off() {
    let host = RecordingHost::start("h").await;
    let gw = gateway(&[&host], SHORT_TIMEOUTS, "").await;
    let started = "event: WorkflowStarted\ndata: {\"event\":\"WorkflowStarted\",\"run_id\":\"r-endless\",\"session_id\":\"s-endless\"}\n\n";
    let event = format!(
        "event: StepProgress\ndata: {{\"event\":\"StepProgress\",\"run_id\":\"r-endless\",\"pad\":\"{}\"}}\n\n",
        "x".repeat(64 * 1024)
    );
    let mut head =
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
            .to_vec();
    head.extend_from_slice(&chunk(started.as_bytes()));
    host.answer_next(Answer::Endless {
        head,
        chunk: chunk(event.as_bytes()),
    });
    // A caller with a small receive window that never reads.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut caller = socket.connect(gw.addr).await.unwrap();
    let body = "message=endless&stream=true";
    caller
        .write_all(&post(
            &format!("Content-Length: {}\r\n", body.len()),
            body.as_bytes(),
        ))
        .await
        .unwrap();
    let mut problems = Problems::default();
    // The gateway gives up on the caller and lets go of the host: the
    // host's connection closes (its writes fail) or the run is cancelled.
    let let_go = host
        .wait_until(BOUND, |conns| {
            conns.first().is_some_and(|c| c.write_failed || c.closed)
                || conns
                    .iter()
                    .flat_map(|c| &c.requests)
                    .any(|r| r.path().ends_with("/cancel"))
        })
        .await;
    problems.check(let_go.is_ok(), || {
        format!("after write_timeout the host was still streaming to a caller that never reads ({BOUND:?})")
    });
    // And the caller's connection is closed: draining it reaches the end.
    let reply = until_closed(caller, vec![]).await;
    problems.check(reply.end.closed(), || {
        format!(
            "the caller's connection was not closed (got {} bytes while draining)",
            reply.bytes.len()
        )
    });
    problems.assert_none(&[&host]);
}

#[tokio::test]
async fn limit_max_connections_closes_the_one_too_many() {
    let host = RecordingHost::start("h").await;
    let gw = gateway(&[&host], "max_connections = 2", "").await;
    let mut problems = Problems::default();
    // Two connections, each served once and kept open.
    let mut open = Vec::new();
    for i in 0..2 {
        let mut stream = TcpStream::connect(gw.addr).await.unwrap();
        stream.write_all(GET_HEALTH).await.unwrap();
        let mut bytes = Vec::new();
        let mut buf = [0u8; 4096];
        let answered = tokio::time::timeout(BOUND, async {
            loop {
                let n = stream.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    return false;
                }
                bytes.extend_from_slice(&buf[..n]);
                let (responses, _) = parse_responses(&bytes, false);
                if responses.iter().any(|r| r.complete && r.status == 200) {
                    return true;
                }
            }
        })
        .await;
        problems.check(answered == Ok(true), || {
            format!("connection {i} of 2 was not served")
        });
        open.push(stream);
    }
    // A third is accepted and closed at once, never served, never left
    // hanging.
    let third = TcpStream::connect(gw.addr).await.unwrap();
    let reply = exchange_on(third, GET_HEALTH_AND_CLOSE).await;
    check_closed_unserved(&reply, "a connection over max_connections", &mut problems);
    // Once one of the two closes, a new connection is served (as soon as
    // the gateway has seen the close: retried until then).
    drop(open.remove(0));
    let deadline = tokio::time::Instant::now() + BOUND;
    let served = loop {
        let stream = TcpStream::connect(gw.addr).await.unwrap();
        let reply = exchange_on(stream, GET_HEALTH_AND_CLOSE).await;
        let (responses, _) = reply.responses();
        if responses.iter().any(|r| r.status == 200) {
            break true;
        }
        if tokio::time::Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    problems.check(served, || {
        "no new connection was served after one of the two closed".to_owned()
    });
    problems.assert_none(&[&host]);
}

#[tokio::test]
async fn limit_a_head_over_max_header_bytes_is_refused() {
    let big = format!("X-Big: {}\r\nContent-Length: 5\r\n", "a".repeat(20_000));
    rejected(post(&big, b"hello"), &[431, 400], "max_header_bytes = 8192").await;
}

#[tokio::test]
async fn limit_more_fields_than_max_headers_is_refused() {
    let mut fields: String = (0..20).map(|i| format!("X-Field-{i}: {i}\r\n")).collect();
    fields.push_str("Content-Length: 5\r\n");
    rejected(post(&fields, b"hello"), &[431, 400], "max_headers = 10").await;
}

// ---------------------------------------------------------------------------
// 6. Property: any body, any chunking, reaches the host byte-exact.

/// One generated case: the body, whether it goes chunked (else with a
/// Content-Length), where its chunks split, the hex case of their sizes,
/// and where the wire bytes are cut into separate writes.
type BodyCase = (
    Vec<u8>,
    bool,
    Vec<proptest::sample::Index>,
    bool,
    Vec<proptest::sample::Index>,
);

/// `points` as sorted, distinct offsets in `0..=len`, with both ends.
fn cuts(points: &[proptest::sample::Index], len: usize) -> Vec<usize> {
    let mut cuts: Vec<usize> = points.iter().map(|i| i.index(len + 1)).collect();
    cuts.extend([0, len]);
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

async fn body_reaches_host(
    gw: SocketAddr,
    host: &RecordingHost,
    case: BodyCase,
) -> Result<(), proptest::test_runner::TestCaseError> {
    use proptest::prop_assert;
    let (body, is_chunked, splits, upper, writes) = case;
    let mut wire = b"POST /workflows/w/runs HTTP/1.1\r\nHost: gateway.test\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n".to_vec();
    if is_chunked {
        wire.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
        for piece in cuts(&splits, body.len()).windows(2) {
            let data = &body[piece[0]..piece[1]];
            let size = if upper {
                format!("{:X}\r\n", data.len())
            } else {
                format!("{:x}\r\n", data.len())
            };
            wire.extend_from_slice(size.as_bytes());
            wire.extend_from_slice(data);
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(LAST_CHUNK);
    } else {
        wire.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
        wire.extend_from_slice(&body);
    }
    let pieces: Vec<Vec<u8>> = cuts(&writes, wire.len())
        .windows(2)
        .map(|w| wire[w[0]..w[1]].to_vec())
        .collect();
    let mark = host.mark();
    let stream = TcpStream::connect(gw).await.unwrap();
    let reply = read_reply(stream, pieces, CLOSE_GRACE).await;
    let (responses, _) = reply.responses();
    prop_assert!(
        responses.len() == 1 && responses[0].status == 200,
        "the caller got {}",
        reply.describe()
    );
    let since = host.since(&mark);
    prop_assert!(
        since.len() == 1,
        "{} host connections got bytes",
        since.len()
    );
    let requests = crate::common::recording::clean_requests(&since[0].1)
        .map_err(proptest::test_runner::TestCaseError::fail)?;
    prop_assert!(
        requests.len() == 1,
        "the host got {} requests",
        requests.len()
    );
    let got = &requests[0];
    prop_assert!(
        got.body == body,
        "the host got {} bytes for the caller's {} (first difference at {:?})",
        got.body.len(),
        body.len(),
        got.body.iter().zip(&body).position(|(a, b)| a != b)
    );
    if !is_chunked && !body.is_empty() {
        let length = body.len().to_string();
        prop_assert!(
            got.values("content-length") == [length.as_bytes()],
            "the caller's Content-Length did not reach the host: {:?}",
            got.framing
        );
    }
    Ok(())
}

#[test]
fn prop_any_body_in_any_chunking_reaches_the_host_byte_exact() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestError, TestRunner};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (host, gateway) = runtime.block_on(async {
        let host = RecordingHost::start("p").await;
        let toml = format!(
            "[server]\nhealth_checks = false\n\n[admin]\nlisten = \"\"\n\n[[workflows]]\nid = \"w\"\nbase_url = \"{}\"\n",
            host.url
        );
        let gateway = Gateway::start(&toml).await;
        (host, gateway)
    });
    let addr: SocketAddr = gateway.url.trim_start_matches("http://").parse().unwrap();
    let strategy = (
        proptest::collection::vec(any::<u8>(), 0..=64 * 1024),
        any::<bool>(),
        proptest::collection::vec(any::<proptest::sample::Index>(), 0..8),
        any::<bool>(),
        proptest::collection::vec(any::<proptest::sample::Index>(), 0..4),
    );
    let mut runner = TestRunner::new(Config {
        cases: 48,
        max_shrink_iters: 64,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&strategy, |case| {
        runtime.block_on(body_reaches_host(addr, &host, case))
    });
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, (body, chunked, splits, upper, writes))) => panic!(
            "{why}\nminimal case: {} body bytes {}, chunked {chunked} at {:?} (upper hex {upper}), writes cut at {:?}",
            body.len(),
            escape(&body, 64),
            cuts(&splits, body.len()),
            writes.len()
        ),
        Err(TestError::Abort(why)) => panic!("aborted: {why}"),
    }
    drop(gateway);
}

// ---------------------------------------------------------------------------
// The harness itself: its parsers and verdicts on known-good and known-bad
// bytes, so that a verdict above is the gateway's doing.

fn reply(bytes: &[u8], end: End) -> Reply {
    Reply {
        bytes: bytes.to_vec(),
        end,
    }
}

fn problems_of(expect: impl Fn(&Reply, &mut Problems), reply: &Reply) -> Vec<String> {
    let mut problems = Problems::default();
    expect(reply, &mut problems);
    problems.0
}

#[test]
fn harness_host_side_parsing_finds_smuggled_and_unfinished_requests() {
    use crate::common::recording::{clean_requests, parse_requests};
    // What a gateway that honours `Content-Length: 0` and forwards the
    // chunked payload raw would send: two requests.
    let smuggled = [
        b"POST /workflows/w/runs HTTP/1.1\r\nhost: h\r\ncontent-length: 0\r\n\r\n".as_slice(),
        HIDDEN_REQUEST,
    ]
    .concat();
    let requests = clean_requests(&smuggled).unwrap();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].target, "/sessions?type=workflow");
    // A chunked request, then the start of the next.
    let wire = [
        post("Transfer-Encoding: chunked\r\n", &chunked(b"message=a")),
        b"POST /x HTTP/1.1\r\nhost: h\r\ncontent-length: 9\r\n\r\nabc".to_vec(),
    ]
    .concat();
    let (requests, tail) = parse_requests(&wire);
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].body, b"message=a");
    assert_eq!(requests[0].framing, Framing::Chunked);
    assert!(matches!(tail, Tail::Partial(_)));
    // Broken framings are no request.
    for bad in [
        post(
            "Transfer-Encoding: chunked\r\n",
            b"zz\r\nhello\r\n0\r\n\r\n",
        ),
        post("Content-Length: 5, 5\r\n", b"hello"),
        post(
            "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
            b"0\r\n\r\n",
        ),
        post(
            "Transfer-Encoding: chunked\r\n",
            b"5;a=\x01\rX\r\nhello\r\n0\r\n\r\n",
        ),
    ] {
        assert!(
            matches!(parse_requests(&bad).1, Tail::Invalid(..)),
            "{}",
            escape(&bad, 200)
        );
    }
}

#[test]
fn harness_caller_side_parsing_follows_each_framing() {
    let wire = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nHTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhel";
    let (responses, tail) = parse_responses(wire, true);
    assert!(tail.is_ok());
    let seen: Vec<(u16, &[u8], bool)> = responses
        .iter()
        .map(|r| (r.status, r.body.as_slice(), r.complete))
        .collect();
    assert_eq!(
        seen,
        [
            (100, &b""[..], true),
            (200, b"abc", true),
            (204, b"", true),
            (200, b"hel", false)
        ]
    );
    let (responses, _) = parse_responses(b"HTTP/1.1 200 OK\r\n\r\nuntil close", false);
    assert_eq!(responses[0].framing, RespFraming::UntilClose);
    assert!(!responses[0].complete);
    let (_, tail) = parse_responses(
        b"HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\nhello",
        true,
    );
    assert!(tail.is_err(), "a stray body after a 204 is caught");
}

#[test]
fn harness_verdicts_accept_correct_answers_and_catch_wrong_ones() {
    let json_502 = b"HTTP/1.1 502 Bad Gateway\r\ncontent-type: application/json\r\ncontent-length: 16\r\nconnection: close\r\n\r\n{\"detail\":\"bad\"}";
    assert!(problems_of(expect_502, &reply(json_502, End::Eof)).is_empty());
    let html_502 =
        b"HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/html\r\ncontent-length: 3\r\n\r\nbad";
    assert!(!problems_of(expect_502, &reply(html_502, End::Eof)).is_empty());

    let rejected = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
    let verdict = |bytes: &[u8], end| {
        let mut problems = Problems::default();
        check_rejected(&reply(bytes, end), &[400], &mut problems);
        problems.0
    };
    assert!(verdict(rejected, End::Reset("reset".into())).is_empty());
    assert!(!verdict(rejected, End::Open).is_empty());
    assert!(!verdict(b"", End::Eof).is_empty());

    let cut = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"partial\":";
    assert!(problems_of(expect_cut, &reply(cut, End::Eof)).is_empty());
    assert!(!problems_of(expect_cut, &reply(cut, End::Open)).is_empty());
    let close_delimited = b"HTTP/1.1 200 OK\r\n\r\n{\"partial\":";
    assert!(
        !problems_of(expect_cut, &reply(close_delimited, End::Eof)).is_empty(),
        "a close-delimited cut is indistinguishable from a whole answer"
    );

    let error = "event: WorkflowError\ndata: {\"event\":\"WorkflowError\",\"error\":\"cut\"}\n\n";
    let events = format!("{EVENT_1}{EVENT_2}{error}");
    let chunked_stream = [
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
            .to_vec(),
        chunked(events.as_bytes()),
    ]
    .concat();
    assert!(
        problems_of(
            expect_events_then_one_error,
            &reply(&chunked_stream, End::Eof)
        )
        .is_empty()
    );
    let close_stream =
        format!("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n{events}");
    assert!(
        problems_of(
            expect_events_then_one_error,
            &reply(close_stream.as_bytes(), End::Eof)
        )
        .is_empty()
    );
    let length_stream = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: 4096\r\n\r\n{events}"
    );
    assert!(
        !problems_of(
            expect_events_then_one_error,
            &reply(length_stream.as_bytes(), End::Eof)
        )
        .is_empty()
    );
    let two_errors =
        format!("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n{events}{error}");
    assert!(
        !problems_of(
            expect_events_then_one_error,
            &reply(two_errors.as_bytes(), End::Eof)
        )
        .is_empty()
    );

    let bodiless = expect_bodiless(204);
    assert!(
        problems_of(
            &bodiless,
            &reply(b"HTTP/1.1 204 No Content\r\n\r\n", End::Eof)
        )
        .is_empty()
    );
    assert!(
        !problems_of(
            &bodiless,
            &reply(b"HTTP/1.1 204 No Content\r\n\r\nhello", End::Eof)
        )
        .is_empty()
    );
}
