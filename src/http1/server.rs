//! The server side of the gateway's HTTP/1.1 framing: one caller connection,
//! from its first byte to its close. It reads request heads, hands each
//! request to the app (any tower service; the listener passes
//! [`crate::layers::App`]), writes the response as its body produces it,
//! and keeps the connection for the next request when RFC 9112 allows.
//! A connection that opens with the HTTP/2 preface (h2c with prior
//! knowledge) is handed to hyper's HTTP/2 server instead.
//!
//! Memory: a connection waiting for a request, or for the next frame of a
//! response, holds no buffer. It waits for the socket to become readable
//! and only then reserves a read buffer; a response head is built in a
//! `Vec` sized to fit and leaves with the body's first frame in one
//! vectored write. What an open connection costs is then its task, whose
//! size is that of the connection's future (about 1.5 KiB): hence its
//! shape, with rare paths boxed and each step's locals in a function of its
//! own, so that the steps share their room.
//!
//! Who owns the read side: the socket is split in two. The write half stays
//! with the connection. The read half and its buffer (`Reader`) stay with
//! it too when the request has no body or its body came whole with the
//! head; otherwise they are lent to the request body, which reads the rest
//! from the socket and sends them back through a oneshot once it reached its
//! end. While a response is under way the connection watches its read side
//! (once it is back) to notice a client that left, and keeps whatever the
//! client sends meanwhile (the next pipelined request). A body the app did
//! not read to its end never comes back: the connection closes after the
//! response instead of being reused.

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::io;
use std::mem::MaybeUninit;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::{Service, ServiceExt as _};

use super::codec::{
    self, BodyKind, ChunkHead, Decoded, Decoder, FramingError, LAST_CHUNK, MAX_HEAD, MAX_HEADERS,
};

/// What a connection serves: the app, or any tower service of its shape.
pub trait AppService:
    Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future: Send + 'static>
    + Clone
    + Send
    + 'static
{
}

impl<S> AppService for S where
    S: Service<
            Request<Body>,
            Response = Response<Body>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// How long a request head may take once its first byte arrived.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Room in a response head beyond its fields: status line, date, framing
/// and connection fields, and the first chunk's size line.
const HEAD_EXTRA: usize = 160;
/// How an HTTP/2 connection with prior knowledge starts (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Serves one caller connection until it closes, fails, or `stop` finds it
/// between requests (a request in flight, stream included, is finished
/// first). An error is for the log only: the caller has been answered as
/// far as that was possible.
// Not an async fn: see the async block below.
#[allow(clippy::manual_async_fn)]
pub fn serve_connection<S>(
    stream: TcpStream,
    mut service: S,
    stop: CancellationToken,
) -> impl Future<Output = io::Result<()>> + Send + 'static
where
    S: AppService,
{
    // An async block, not an async fn, whose future keeps room for its
    // arguments twice (rust-lang/rust#62958): this future's size is what an
    // open connection costs.
    async move {
        let (read, mut write) = stream.into_split();
        let mut reader = Reader {
            io: read,
            buf: BytesMut::new(),
        };
        let mut first = true;
        loop {
            // As in hyper, the app is ready before a request is read (which
            // then is not kept across an await).
            let Ok(app) = service.ready().await;
            let Dispatched {
                response,
                exchange,
                mut read_side,
                mut wants_continue,
            } = match read_head(&mut reader, &stop, first).await {
                Ok(Head::Request(request, kind)) => dispatch(app, request, kind, reader),
                Ok(Head::Closed) => return Ok(()),
                // Boxed: rare, and its future would otherwise take room in
                // every connection's.
                other => return Box::pin(serve_other(other, reader, write, service, stop)).await,
            };
            first = false;
            let waited = {
                let response = pin!(response);
                wait_for_response(response, &mut read_side, &mut wants_continue, &mut write).await?
            };
            let Some(mut response) = waited else {
                // As in hyper: a caller that left cancels its request.
                return Ok(());
            };
            // A request body the app left unread would have to be read past
            // before the next request: the connection closes instead, and
            // says so in the response.
            let body_read = read_side.reclaim();
            let exchange = Exchange {
                keep_alive: exchange.keep_alive && body_read && !stop.is_cancelled(),
                ..exchange
            };
            let reusable =
                write_response(&mut write, &mut read_side, &mut response, exchange).await?;
            match read_side {
                ReadSide::Here(back) if reusable && !stop.is_cancelled() => reader = back,
                _ => return Ok(()),
            }
        }
    }
}

/// A request handed to the app.
struct Dispatched<F> {
    /// The app's response, to come.
    response: F,
    exchange: Exchange,
    read_side: ReadSide,
    /// Learns when the request body wants `100 Continue` sent.
    wants_continue: Option<oneshot::Receiver<()>>,
}

/// Hands `request` to the app with its body. (A function of its own so
/// that the request is not kept in the connection's future once handed
/// over.)
fn dispatch<S>(
    app: &mut S,
    request: Request<()>,
    kind: BodyKind,
    reader: Reader,
) -> Dispatched<S::Future>
where
    S: Service<Request<Body>>,
{
    let fields = Managed::of(request.headers());
    let exchange = Exchange {
        version: request.version(),
        head_only: request.method() == Method::HEAD,
        keep_alive: wants_keep_alive(&request, &fields),
    };
    let expect_continue = expects_continue(&request, &fields);
    let (body, read_side, wants_continue) = request_body(reader, kind, expect_continue);
    Dispatched {
        response: app.call(request.map(|()| body)),
        exchange,
        read_side,
        wants_continue,
    }
}

/// Waits for the app's response to a request, meanwhile sending `100
/// Continue` when the request body asks for it, and watching for the client
/// leaving (then `None`).
async fn wait_for_response<F>(
    mut response: Pin<&mut F>,
    read_side: &mut ReadSide,
    wants_continue: &mut Option<oneshot::Receiver<()>>,
    write: &mut OwnedWriteHalf,
) -> io::Result<Option<Response<Body>>>
where
    F: Future<Output = Result<Response<Body>, Infallible>>,
{
    loop {
        tokio::select! {
            Ok(response) = &mut response => return Ok(Some(response)),
            () = continue_requested(wants_continue) => {
                codec::write_all(write, &[CONTINUE]).await?;
            }
            () = read_side.client_closed() => return Ok(None),
        }
    }
}

/// The read half of the connection and what was read from it but not yet
/// used: the start of a body, or of the next request.
struct Reader {
    io: OwnedReadHalf,
    buf: BytesMut,
}

impl Reader {
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        codec::poll_fill(&mut self.io, &mut self.buf, cx)
    }

    async fn fill(&mut self) -> io::Result<usize> {
        poll_fn(|cx| self.poll_fill(cx)).await
    }
}

/// What waiting for a request found.
// Moved once per request: boxing the request would cost an allocation.
#[allow(clippy::large_enum_variant)]
enum Head {
    Request(Request<()>, BodyKind),
    Http2,
    /// The client closed, or the connection should close: it was idle when
    /// `stop` came, or a head did not complete in time.
    Closed,
}

/// Waits for the next request head and takes it out of the buffer. Only
/// the connection's first bytes may be the HTTP/2 preface.
async fn read_head(
    reader: &mut Reader,
    stop: &CancellationToken,
    first: bool,
) -> Result<Head, FramingError> {
    let mut deadline = None;
    loop {
        let buffered = reader.buf.len();
        if buffered > 0 {
            let preface = &H2_PREFACE[..buffered.min(H2_PREFACE.len())];
            if first && reader.buf.starts_with(preface) {
                if buffered >= H2_PREFACE.len() {
                    return Ok(Head::Http2);
                }
            } else if let Some((request, kind)) = parse_head(&mut reader.buf)? {
                return Ok(Head::Request(request, kind));
            } else if buffered >= MAX_HEAD {
                return Err(FramingError::HeadTooLarge);
            }
            deadline.get_or_insert_with(|| Instant::now() + HEAD_TIMEOUT);
        }
        let filled = tokio::select! {
            biased;
            () = stop.cancelled(), if buffered == 0 => return Ok(Head::Closed),
            () = until(deadline) => {
                tracing::trace!("request head incomplete after {HEAD_TIMEOUT:?}; closing");
                return Ok(Head::Closed);
            }
            filled = reader.fill() => filled,
        };
        match filled {
            Ok(0) => return Ok(Head::Closed),
            Ok(_) => {}
            Err(e) => {
                tracing::trace!(error = %e, "read failed between requests");
                return Ok(Head::Closed);
            }
        }
    }
}

/// Resolves at `deadline`, or never without one.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The request head at the start of `buf`, taken out of it; `None` until
/// the whole head is there.
fn parse_head(buf: &mut BytesMut) -> Result<Option<(Request<()>, BodyKind)>, FramingError> {
    fn invalid<E>(_: E) -> FramingError {
        FramingError::Head(httparse::Error::Token)
    }
    let mut fields = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let len = match parsed.parse_with_uninit_headers(buf, &mut fields)? {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial => return Ok(None),
    };
    let version = match parsed.version {
        Some(0) => Version::HTTP_10,
        Some(1) => Version::HTTP_11,
        _ => return Err(httparse::Error::Version.into()),
    };
    let method =
        Method::from_bytes(parsed.method.unwrap_or_default().as_bytes()).map_err(invalid)?;
    let path = parsed.path.unwrap_or_default();
    let target_start = path.as_ptr() as usize - buf.as_ptr() as usize;
    let target = target_start..target_start + path.len();
    let mut index = [codec::FieldIndex::default(); MAX_HEADERS];
    let count = codec::index_fields(parsed.headers, buf, &mut index);
    // The head gets its own allocation of exactly its size: the app may keep
    // the URI and header values (slices of it) for as long as a stream
    // lasts, and slices of the read buffer would keep all of it alive.
    let head = Bytes::copy_from_slice(&buf[..len]);
    buf.advance(len);
    let uri = Uri::from_maybe_shared(head.slice(target)).map_err(invalid)?;
    let headers = codec::header_map(&index[..count], &head)?;
    let kind = codec::body_kind(&headers, true)?;
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    Ok(Some((request, kind)))
}

/// Which of the fields the server acts on itself a head has, found in one
/// pass over its names: a hash lookup for each would cost more, and most
/// heads have none of them.
#[derive(Default)]
struct Managed {
    connection: bool,
    transfer_encoding: bool,
    content_length: bool,
    expect: bool,
    date: bool,
}

impl Managed {
    fn of(headers: &HeaderMap) -> Managed {
        let mut found = Managed::default();
        for name in headers.keys() {
            let flag = if name == header::CONNECTION {
                &mut found.connection
            } else if name == header::TRANSFER_ENCODING {
                &mut found.transfer_encoding
            } else if name == header::CONTENT_LENGTH {
                &mut found.content_length
            } else if name == header::EXPECT {
                &mut found.expect
            } else if name == header::DATE {
                &mut found.date
            } else {
                continue;
            };
            *flag = true;
        }
        found
    }

    /// Whether a `Connection` field lists `option`.
    fn connection_has(&self, headers: &HeaderMap, option: &str) -> bool {
        self.connection && codec::connection_option(headers, option)
    }
}

/// Whether the client lets the connection carry another request
/// (RFC 9112 §9.3). A request framed both by length and by chunks is
/// suspect (request smuggling): its connection is not reused (§6.1).
fn wants_keep_alive(request: &Request<()>, fields: &Managed) -> bool {
    let headers = request.headers();
    let wanted = match request.version() {
        Version::HTTP_11 => !fields.connection_has(headers, "close"),
        _ => fields.connection_has(headers, "keep-alive"),
    };
    wanted && !(fields.transfer_encoding && fields.content_length)
}

fn expects_continue(request: &Request<()>, fields: &Managed) -> bool {
    fields.expect
        && request.version() == Version::HTTP_11
        && request
            .headers()
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// The request's body, and where the read side is while the app has it.
/// With `expect_continue`, also the receiver that learns when the body is
/// first read, unless the body is already here.
fn request_body(
    mut reader: Reader,
    kind: BodyKind,
    expect_continue: bool,
) -> (Body, ReadSide, Option<oneshot::Receiver<()>>) {
    let whole = match kind {
        BodyKind::Empty => return (Body::empty(), ReadSide::Here(reader), None),
        BodyKind::Length(len) => usize::try_from(len)
            .ok()
            .filter(|&len| len <= reader.buf.len()),
        BodyKind::Chunked | BodyKind::UntilClose => None,
    };
    if let Some(len) = whole {
        // Taking the whole buffer, the usual case, spares sharing it.
        let body = if len == reader.buf.len() {
            std::mem::take(&mut reader.buf)
        } else {
            reader.buf.split_to(len)
        };
        return (Body::from(body.freeze()), ReadSide::Here(reader), None);
    }
    let (back, returned) = oneshot::channel();
    let (wants_continue, continue_wanted) = if expect_continue {
        let (tx, rx) = oneshot::channel();
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let body = RequestBody {
        reader: Some(reader),
        decoder: Decoder::new(kind),
        back: Some(back),
        wants_continue,
    };
    (Body::new(body), ReadSide::Lent(returned), continue_wanted)
}

/// Resolves once the request body was first read and its client waits for
/// `100 Continue`; never otherwise.
async fn continue_requested(wanted: &mut Option<oneshot::Receiver<()>>) {
    if let Some(receiver) = wanted {
        let requested = receiver.await.is_ok();
        *wanted = None;
        if requested {
            return;
        }
    }
    std::future::pending().await
}

/// A request body still arriving: read from the socket as the app polls it.
struct RequestBody {
    /// `None` once the body ended or failed.
    reader: Option<Reader>,
    decoder: Decoder,
    /// Takes the reader back to the connection at the body's end.
    back: Option<oneshot::Sender<Reader>>,
    /// Tells the connection to send `100 Continue`, on the first read.
    wants_continue: Option<oneshot::Sender<()>>,
}

impl RequestBody {
    fn give_back(&mut self) {
        if let (Some(reader), Some(back)) = (self.reader.take(), self.back.take()) {
            let _ = back.send(reader);
        }
    }
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        if let Some(wants_continue) = this.wants_continue.take() {
            let _ = wants_continue.send(());
        }
        let Some(reader) = this.reader.as_mut() else {
            return Poll::Ready(None);
        };
        match ready!(poll_decode(reader, &mut this.decoder, cx)) {
            Ok(Some(data)) => {
                if this.decoder.is_done() {
                    this.give_back();
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Ok(None) => {
                this.give_back();
                Poll::Ready(None)
            }
            Err(e) => {
                // The connection cannot be reused after a broken body.
                this.reader = None;
                this.back = None;
                Poll::Ready(Some(Err(e)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.decoder.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        self.decoder
            .remaining()
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

/// The next piece of body: what the buffer holds, else what the socket
/// brings; `None` at the body's end.
fn poll_decode(
    reader: &mut Reader,
    decoder: &mut Decoder,
    cx: &mut Context<'_>,
) -> Poll<io::Result<Option<Bytes>>> {
    let invalid = |e| io::Error::new(io::ErrorKind::InvalidData, e);
    loop {
        match decoder.decode(&mut reader.buf).map_err(invalid)? {
            Decoded::Data(data) => return Poll::Ready(Ok(Some(data))),
            Decoded::End => return Poll::Ready(Ok(None)),
            Decoded::NeedMore => {}
        }
        if ready!(reader.poll_fill(cx))? == 0 {
            decoder.decode_eof().map_err(invalid)?;
            return Poll::Ready(Ok(None));
        }
    }
}

/// Where the connection's read side is while a request is handled.
enum ReadSide {
    Here(Reader),
    /// Lent to the request body; comes back when the body ends.
    Lent(oneshot::Receiver<Reader>),
    /// Kept by a body that did not end: the connection cannot be reused.
    Gone,
}

impl ReadSide {
    /// Resolves when the client is seen to have closed the connection (or
    /// broken it); never while the read side is away. Bytes the client sends
    /// meanwhile are kept for the next request.
    async fn client_closed(&mut self) {
        loop {
            match self {
                ReadSide::Here(reader) => {
                    if reader.buf.len() >= MAX_HEAD {
                        // Enough of the next request: reading waits for it.
                        std::future::pending::<()>().await;
                    }
                    match reader.fill().await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
                ReadSide::Lent(back) => {
                    *self = match back.await {
                        Ok(reader) => ReadSide::Here(reader),
                        Err(_) => ReadSide::Gone,
                    }
                }
                ReadSide::Gone => std::future::pending().await,
            }
        }
    }

    /// Takes the read side back if the request body has ended; says
    /// whether it is here.
    fn reclaim(&mut self) -> bool {
        if let ReadSide::Lent(back) = self {
            *self = match back.try_recv() {
                Ok(reader) => ReadSide::Here(reader),
                Err(oneshot::error::TryRecvError::Empty) => return false,
                Err(oneshot::error::TryRecvError::Closed) => ReadSide::Gone,
            };
        }
        matches!(self, ReadSide::Here(_))
    }
}

/// What a response's framing depends on in its request.
#[derive(Clone, Copy)]
struct Exchange {
    version: Version,
    head_only: bool,
    /// Whether the client (and the server, not stopping) would keep the
    /// connection.
    keep_alive: bool,
}

/// How a response body is delimited on the wire (RFC 9112 §6).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body may follow the head.
    Bodiless,
    /// Written as it is, its length given by `Content-Length`.
    Raw,
    Chunked,
    /// An HTTP/1.0 client's body of unknown length: it ends with the
    /// connection.
    UntilClose,
}

/// Writes `response` and says whether the connection can carry another
/// request. On an error the caller drops the response at once, body
/// included (a client that left).
async fn write_response(
    io: &mut OwnedWriteHalf,
    read_side: &mut ReadSide,
    response: &mut Response<Body>,
    exchange: Exchange,
) -> io::Result<bool> {
    let fields = Managed::of(response.headers());
    // Connection management is this hop's: the app's fields are read, then
    // replaced by the server's own.
    let app_closes = fields.connection_has(response.headers(), "close");
    if fields.connection {
        response.headers_mut().remove(header::CONNECTION);
    }
    let framing = framing(response, &fields, exchange);
    // After an app's 1xx (a protocol switch: upgrades are not supported)
    // the connection carries nothing more.
    let keep_alive = exchange.keep_alive
        && !app_closes
        && framing != Framing::UntilClose
        && !response.status().is_informational();
    let head = encode_head(response, &fields, exchange.version, framing, keep_alive);
    codec::recycle_header_map(std::mem::take(response.headers_mut()));
    if framing == Framing::Bodiless {
        codec::write_all(io, &[&head]).await?;
    } else {
        let out = BodyWriter {
            io,
            head,
            chunked: framing == Framing::Chunked,
        };
        send_body(out, response.body_mut(), read_side).await?;
    }
    Ok(keep_alive)
}

/// The framing of a response (RFC 9112 §6.3), with a `Content-Length`
/// added when the body knows its size and the app did not say it.
fn framing(response: &mut Response<Body>, fields: &Managed, exchange: Exchange) -> Framing {
    let status = response.status();
    let size = http_body::Body::size_hint(response.body()).exact();
    let headers = response.headers_mut();
    if fields.transfer_encoding {
        // Transfer codings belong to the hop too; the server picks its own.
        headers.remove(header::TRANSFER_ENCODING);
    }
    if status.is_informational() || status == StatusCode::NO_CONTENT {
        if fields.content_length {
            // RFC 9110 §8.6: no Content-Length on these.
            headers.remove(header::CONTENT_LENGTH);
        }
        return Framing::Bodiless;
    }
    if exchange.head_only || status == StatusCode::NOT_MODIFIED {
        // Their Content-Length, if any, is the one a GET would have.
        return Framing::Bodiless;
    }
    // A length the app gives is trusted: a forwarded response carries the
    // host's with a body that streams.
    if fields.content_length {
        return Framing::Raw;
    }
    if let Some(len) = size {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        return Framing::Raw;
    }
    if exchange.version == Version::HTTP_11 {
        Framing::Chunked
    } else {
        Framing::UntilClose
    }
}

/// The response head: status line, `date`, the app's fields, then the
/// server's framing and connection fields.
fn encode_head(
    response: &Response<Body>,
    fields: &Managed,
    version: Version,
    framing: Framing,
    keep_alive: bool,
) -> Vec<u8> {
    let (status, headers) = (response.status(), response.headers());
    let field_bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    let mut head = Vec::with_capacity(field_bytes + HEAD_EXTRA);
    head.extend_from_slice(match version {
        Version::HTTP_10 => b"HTTP/1.0 ",
        _ => b"HTTP/1.1 ",
    });
    head.extend_from_slice(status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    head.extend_from_slice(b"\r\n");
    if !fields.date {
        head.extend_from_slice(b"date: ");
        append_date(&mut head);
        head.extend_from_slice(b"\r\n");
    }
    codec::encode_headers(&mut head, headers);
    if framing == Framing::Chunked {
        head.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    // Only what differs from the version's default is said.
    match (version, keep_alive) {
        (Version::HTTP_11, false) => head.extend_from_slice(b"connection: close\r\n"),
        (Version::HTTP_10, true) => head.extend_from_slice(b"connection: keep-alive\r\n"),
        _ => {}
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// Appends the current time as an HTTP date. Formatting it costs more than
/// the rest of a head, so each thread keeps the text of the current second.
fn append_date(out: &mut Vec<u8>) {
    thread_local! {
        static DATE: std::cell::RefCell<(u64, String)> =
            const { std::cell::RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(cached, text)| {
        if *cached != second {
            use std::fmt::Write as _;
            text.clear();
            let _ = write!(text, "{}", httpdate::HttpDate::from(now));
            *cached = second;
        }
        out.extend_from_slice(text.as_bytes());
    });
}

/// Writes a response body frame by frame; the head goes with the first
/// write.
struct BodyWriter<'a> {
    io: &'a mut OwnedWriteHalf,
    /// Empty once written.
    head: Vec<u8>,
    chunked: bool,
}

impl BodyWriter<'_> {
    /// Writes the head if it has not left yet, then `data` (as one chunk
    /// when chunked) and, with `last`, the end of a chunked body, all in one
    /// vectored write.
    async fn write(&mut self, data: &[u8], last: bool) -> io::Result<()> {
        let mut head = std::mem::take(&mut self.head);
        let chunk_head = (self.chunked && !data.is_empty()).then(|| ChunkHead::new(data.len()));
        let (mut size, crlf): (&[u8], &[u8]) = match &chunk_head {
            Some(chunk_head) => (chunk_head.as_bytes(), b"\r\n"),
            None => (b"", b""),
        };
        if !head.is_empty() {
            // The head has room for it, and the write stays within
            // `codec::MAX_PARTS` parts.
            head.extend_from_slice(size);
            size = b"";
        }
        let end = if self.chunked && last {
            LAST_CHUNK
        } else {
            b""
        };
        codec::write_all(self.io, &[&head, size, data, crlf, end]).await
    }
}

/// Sends the body, each frame as soon as it arrives (an event stream must
/// not wait for a buffer to fill). Trailers are not sent.
async fn send_body(
    mut out: BodyWriter<'_>,
    body: &mut Body,
    read_side: &mut ReadSide,
) -> io::Result<()> {
    loop {
        let data = match next_frame(&mut out, body, read_side).await? {
            None => return out.write(b"", true).await,
            // Cut short: the client sees a body without its end.
            Some(Err(e)) => return Err(io::Error::other(e)),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(_trailers) => continue,
            },
        };
        let last = http_body::Body::is_end_stream(body);
        out.write(&data, last).await?;
        if last {
            return Ok(());
        }
    }
}

/// The body's next frame. A frame that is ready goes out with what is
/// still unsent (the head: a body that is ready, as most are, leaves with
/// its head in one write); before waiting for one, that is sent, and the
/// client is watched meanwhile: one that left ends the wait at once.
async fn next_frame(
    out: &mut BodyWriter<'_>,
    body: &mut Body,
    read_side: &mut ReadSide,
) -> io::Result<Option<Result<Frame<Bytes>, axum::Error>>> {
    let polled = poll_fn(|cx| Poll::Ready(http_body::Body::poll_frame(Pin::new(&mut *body), cx)));
    if let Poll::Ready(frame) = polled.await {
        return Ok(frame);
    }
    out.write(b"", false).await?;
    tokio::select! {
        frame = body.frame() => Ok(frame),
        () = read_side.client_closed() => Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "the client closed the connection mid-response",
        )),
    }
}

/// The rest of a connection whose head was not an HTTP/1.1 request: it is
/// HTTP/2, or it could not be read (and is answered so).
async fn serve_other<S>(
    head: Result<Head, FramingError>,
    reader: Reader,
    mut write: OwnedWriteHalf,
    service: S,
    stop: CancellationToken,
) -> io::Result<()>
where
    S: AppService,
{
    match head {
        Ok(Head::Http2) => serve_h2(reader, write, service, stop).await,
        Err(error) => {
            reject(&mut write, &error).await?;
            Err(io::Error::new(io::ErrorKind::InvalidData, error))
        }
        // The caller serves these itself.
        Ok(Head::Request(..) | Head::Closed) => Ok(()),
    }
}

/// Answers a request that could not be read, and the connection closes.
async fn reject(io: &mut OwnedWriteHalf, error: &FramingError) -> io::Result<()> {
    let (status, detail) = match error {
        FramingError::HeadTooLarge | FramingError::Head(httparse::Error::TooManyHeaders) => (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            r#"{"detail":"Request header fields too large"}"#,
        ),
        FramingError::Head(httparse::Error::Version) => (
            StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            r#"{"detail":"HTTP version not supported"}"#,
        ),
        _ => (
            StatusCode::BAD_REQUEST,
            r#"{"detail":"Invalid HTTP request received."}"#,
        ),
    };
    let mut response = Response::new(Body::from(detail));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let exchange = Exchange {
        version: Version::HTTP_11,
        head_only: false,
        keep_alive: false,
    };
    write_response(io, &mut ReadSide::Gone, &mut response, exchange)
        .await
        .map(drop)
}

/// Serves an h2c connection (its preface already read) with hyper's HTTP/2
/// server, which also keeps its own buffers: HTTP/2 callers are rare here.
async fn serve_h2<S>(
    reader: Reader,
    write: OwnedWriteHalf,
    service: S,
    stop: CancellationToken,
) -> io::Result<()>
where
    S: AppService,
{
    let stream = reader.io.reunite(write).map_err(io::Error::other)?;
    let io = Rewind {
        read: reader.buf.freeze(),
        stream,
    };
    let service = service.map_request(|request: Request<Incoming>| request.map(Body::new));
    let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
    let mut connection = pin!(connection);
    tokio::select! {
        result = connection.as_mut() => return result.map_err(io::Error::other),
        () = stop.cancelled() => connection.as_mut().graceful_shutdown(),
    }
    connection.await.map_err(io::Error::other)
}

/// A socket whose first bytes were already read from it: they are read
/// again first.
struct Rewind {
    read: Bytes,
    stream: TcpStream,
}

impl AsyncRead for Rewind {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.read.is_empty() {
            return Pin::new(&mut this.stream).poll_read(cx, buf);
        }
        let n = this.read.len().min(buf.remaining());
        buf.put_slice(&this.read.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::io::AsyncWriteExt as _;
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;
    use tokio::task::JoinHandle;

    use super::*;
    use tokio::io::AsyncReadExt as _;

    type Answer = futures::future::BoxFuture<'static, Result<Response<Body>, Infallible>>;

    /// A test app: `handle` answers every request.
    fn app(
        handle: impl Fn(Request<Body>) -> Answer + Clone + Send + 'static,
    ) -> impl Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future = Answer>
    + Clone
    + Send
    + 'static {
        tower::service_fn(handle)
    }

    /// Answers `<method> <target> <body>`, after reading the whole body;
    /// `/reject` answers 413 without reading it.
    fn echo()
    -> impl Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future = Answer>
    + Clone
    + Send
    + 'static {
        app(|request: Request<Body>| {
            Box::pin(async move {
                if request.uri().path() == "/reject" {
                    let mut response = Response::new(Body::from("too large"));
                    *response.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
                    return Ok(response);
                }
                let target = request.uri().path_and_query().map_or("", |p| p.as_str());
                let line = format!("{} {target} ", request.method());
                let body = request.into_body().collect().await.unwrap().to_bytes();
                let text = [line.as_bytes(), &body].concat();
                Ok(Response::new(Body::from(text)))
            })
        })
    }

    /// A client connected to `serve_connection` running `service`.
    async fn connect<S>(service: S) -> (Client, CancellationToken, JoinHandle<io::Result<()>>)
    where
        S: AppService,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve_connection(server, service, stop.clone()));
        let client = Client {
            io: client,
            buf: BytesMut::new(),
        };
        (client, stop, task)
    }

    /// A raw HTTP/1.1 client that reads responses with the codec.
    struct Client {
        io: TcpStream,
        buf: BytesMut,
    }

    #[derive(Debug)]
    struct Answered {
        status: u16,
        headers: HeaderMap,
        body: Vec<u8>,
    }

    impl Client {
        async fn send(&mut self, bytes: &[u8]) {
            self.io.write_all(bytes).await.unwrap();
        }

        /// Reads more, failing the test if nothing comes within 10 s (a
        /// guard against hangs, not a synchronisation).
        async fn read(&mut self) -> usize {
            let read = self.io.read_buf(&mut self.buf);
            tokio::time::timeout(Duration::from_secs(10), read)
                .await
                .expect("nothing read within 10 s")
                .unwrap()
        }

        /// Reads exactly `n` bytes.
        async fn bytes(&mut self, n: usize) -> Bytes {
            while self.buf.len() < n {
                assert!(self.read().await > 0, "closed before {n} bytes");
            }
            self.buf.split_to(n).freeze()
        }

        async fn head(&mut self) -> (u16, HeaderMap) {
            loop {
                let mut fields = [httparse::EMPTY_HEADER; 64];
                let mut parsed = httparse::Response::new(&mut fields);
                if let httparse::Status::Complete(len) = parsed.parse(&self.buf).unwrap() {
                    let status = parsed.code.unwrap();
                    let mut index = [codec::FieldIndex::default(); 64];
                    let count = codec::index_fields(parsed.headers, &self.buf, &mut index);
                    let head = self.buf.split_to(len).freeze();
                    let headers = codec::header_map(&index[..count], &head).unwrap();
                    return (status, headers);
                }
                assert!(self.read().await > 0, "closed before a response head");
            }
        }

        async fn body(&mut self, kind: BodyKind) -> Vec<u8> {
            let mut decoder = Decoder::new(kind);
            let mut body = Vec::new();
            loop {
                match decoder.decode(&mut self.buf).unwrap() {
                    Decoded::Data(data) => body.extend_from_slice(&data),
                    Decoded::End => return body,
                    Decoded::NeedMore => {
                        if self.read().await == 0 {
                            decoder.decode_eof().unwrap();
                            return body;
                        }
                    }
                }
            }
        }

        /// The next response; `head_only` for the answer to a HEAD.
        async fn response(&mut self, head_only: bool) -> Answered {
            let (status, headers) = self.head().await;
            let kind = if head_only || matches!(status, 100..=199 | 204 | 304) {
                BodyKind::Empty
            } else {
                codec::body_kind(&headers, false).unwrap()
            };
            let body = self.body(kind).await;
            Answered {
                status,
                headers,
                body,
            }
        }

        /// Whether the server closed the connection (after what was read).
        async fn closed(&mut self) -> bool {
            self.buf.is_empty() && self.read().await == 0
        }
    }

    #[tokio::test]
    async fn pipelined_requests_are_answered_in_order_on_one_connection() {
        let (mut client, _stop, task) = connect(echo()).await;
        client
            .send(
                b"POST /a HTTP/1.1\r\nhost: t\r\ncontent-length: 5\r\n\r\nhello\
                  GET /b?q=1 HTTP/1.1\r\nhost: t\r\n\r\n\
                  GET /c HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
            )
            .await;
        let first = client.response(false).await;
        assert_eq!(first.status, 200);
        assert_eq!(first.body, b"POST /a hello");
        assert_eq!(first.headers["content-length"], "13");
        let date = first.headers["date"].to_str().unwrap();
        assert!(httpdate::parse_http_date(date).is_ok(), "{date}");
        assert!(!first.headers.contains_key("connection"));
        assert_eq!(client.response(false).await.body, b"GET /b?q=1 ");
        let last = client.response(false).await;
        assert_eq!(last.body, b"GET /c ");
        assert_eq!(last.headers["connection"], "close");
        assert!(client.closed().await);
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_chunked_body_split_over_writes_streams_in_and_the_connection_is_reused() {
        let (mut client, _stop, _task) = connect(echo()).await;
        client.io.set_nodelay(true).unwrap();
        client
            .send(b"POST /up HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel")
            .await;
        for piece in [&b"lo\r\n"[..], b"6\r\n wor", b"ld\r\n0\r\n", b"\r\n"] {
            tokio::task::yield_now().await;
            client.send(piece).await;
        }
        assert_eq!(client.response(false).await.body, b"POST /up hello world");
        client.send(b"GET /again HTTP/1.1\r\nhost: t\r\n\r\n").await;
        assert_eq!(client.response(false).await.body, b"GET /again ");
    }

    #[tokio::test]
    async fn expect_100_continue_is_answered_when_the_body_is_first_read() {
        let (mut client, _stop, _task) = connect(echo()).await;
        client
            .send(
                b"PUT /x HTTP/1.1\r\nhost: t\r\nexpect: 100-continue\r\ncontent-length: 4\r\n\r\n",
            )
            .await;
        assert_eq!(client.bytes(CONTINUE.len()).await, CONTINUE);
        client.send(b"body").await;
        assert_eq!(client.response(false).await.body, b"PUT /x body");
        // A handler that answers without reading: no 100, and the body that
        // never came cannot be skipped, so the connection closes.
        client
            .send(b"PUT /reject HTTP/1.1\r\nhost: t\r\nexpect: 100-continue\r\ncontent-length: 4\r\n\r\n")
            .await;
        let rejected = client.response(false).await;
        assert_eq!(rejected.status, 413);
        assert_eq!(rejected.headers["connection"], "close");
        assert!(client.closed().await);
    }

    #[tokio::test]
    async fn head_204_and_304_answers_have_no_body() {
        let service = app(|request: Request<Body>| {
            Box::pin(async move {
                let status = match request.uri().path() {
                    "/204" => StatusCode::NO_CONTENT,
                    "/304" => StatusCode::NOT_MODIFIED,
                    _ => StatusCode::OK,
                };
                // As axum answers a HEAD: the GET's length, no body. This
                // one keeps the body, which must not be sent.
                let mut response = Response::new(Body::from("0123456789"));
                *response.status_mut() = status;
                response
                    .headers_mut()
                    .insert(header::CONTENT_LENGTH, HeaderValue::from_static("10"));
                Ok(response)
            })
        });
        let (mut client, _stop, _task) = connect(service).await;
        client
            .send(
                b"HEAD /x HTTP/1.1\r\nhost: t\r\n\r\n\
                  GET /204 HTTP/1.1\r\nhost: t\r\n\r\n\
                  GET /304 HTTP/1.1\r\nhost: t\r\n\r\n\
                  GET /x HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
            )
            .await;
        let head = client.response(true).await;
        assert_eq!(head.headers["content-length"], "10");
        let no_content = client.response(false).await;
        assert_eq!(no_content.status, 204);
        assert!(!no_content.headers.contains_key("content-length"));
        assert_eq!(client.response(false).await.status, 304);
        assert_eq!(client.response(false).await.body, b"0123456789");
        assert!(client.closed().await);
    }

    #[tokio::test]
    async fn http_1_0_gets_keep_alive_only_when_asked_and_unsized_bodies_until_close() {
        let service = app(|request: Request<Body>| {
            Box::pin(async move {
                let body = match request.uri().path() {
                    "/sized" => Body::from("sized"),
                    _ => Body::from_stream(futures::stream::iter([
                        Ok::<_, Infallible>(Bytes::from("un")),
                        Ok(Bytes::from("sized")),
                    ])),
                };
                Ok(Response::new(body))
            })
        });
        let (mut client, _stop, _task) = connect(service).await;
        client
            .send(b"GET /sized HTTP/1.0\r\nconnection: keep-alive\r\n\r\n")
            .await;
        let (status, headers) = client.head().await;
        assert_eq!(status, 200);
        assert_eq!(headers["connection"], "keep-alive");
        assert_eq!(client.body(BodyKind::Length(5)).await, b"sized");
        client
            .send(b"GET /stream HTTP/1.0\r\nconnection: keep-alive\r\n\r\n")
            .await;
        let (_, headers) = client.head().await;
        assert!(!headers.contains_key("content-length"));
        assert!(!headers.contains_key("transfer-encoding"));
        assert!(!headers.contains_key("connection"));
        assert_eq!(client.body(BodyKind::UntilClose).await, b"unsized");
        assert!(client.closed().await);
    }

    #[tokio::test]
    async fn http_1_1_bodies_without_a_size_are_chunked() {
        let service = app(|_| {
            Box::pin(async {
                let chunks = ["one", "", "two"].map(|c| Ok::<_, Infallible>(Bytes::from(c)));
                Ok(Response::new(Body::from_stream(futures::stream::iter(
                    chunks,
                ))))
            })
        });
        let (mut client, _stop, _task) = connect(service).await;
        client.send(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n").await;
        let (_, headers) = client.head().await;
        assert_eq!(headers["transfer-encoding"], "chunked");
        assert_eq!(
            client
                .bytes(b"3\r\none\r\n3\r\ntwo\r\n0\r\n\r\n".len())
                .await,
            &b"3\r\none\r\n3\r\ntwo\r\n0\r\n\r\n"[..]
        );
    }

    #[tokio::test]
    async fn a_malformed_request_gets_a_400_json_answer_and_the_connection_closes() {
        for request in [
            &b"GET / HTTP/1.1\r\nno colon here\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\ncontent-length: 1x\r\n\r\n",
            b"POST / HTTP/1.1\r\ntransfer-encoding: gzip\r\n\r\n",
            b"GET /\r\n\r\n",
        ] {
            let (mut client, _stop, task) = connect(echo()).await;
            client.send(request).await;
            let answer = client.response(false).await;
            assert_eq!(answer.status, 400, "{request:?}");
            assert_eq!(answer.headers["content-type"], "application/json");
            assert_eq!(answer.headers["connection"], "close");
            assert_eq!(
                answer.body,
                br#"{"detail":"Invalid HTTP request received."}"#
            );
            assert!(client.closed().await);
            assert!(task.await.unwrap().is_err());
        }
    }

    #[tokio::test]
    async fn http_2_in_text_gets_505() {
        let (mut client, _stop, _task) = connect(echo()).await;
        client.send(b"GET / HTTP/2.0\r\nhost: t\r\n\r\n").await;
        assert_eq!(client.response(false).await.status, 505);
        assert!(client.closed().await);
    }

    #[tokio::test]
    async fn an_oversized_head_gets_431() {
        let (mut client, _stop, _task) = connect(echo()).await;
        // Exactly the limit and still no end: the server reads all of it, so
        // it closes without unread bytes (which would reset the connection).
        let mut request = b"GET / HTTP/1.1\r\nx-big: ".to_vec();
        request.resize(MAX_HEAD, b'a');
        client.send(&request).await;
        let answer = client.response(false).await;
        assert_eq!(answer.status, 431);
        assert_eq!(
            answer.body,
            br#"{"detail":"Request header fields too large"}"#
        );
        assert!(client.closed().await);
    }

    /// A response body that signals when it is dropped.
    struct Watched {
        inner: Body,
        dropped: Option<oneshot::Sender<()>>,
    }

    impl http_body::Body for Watched {
        type Data = Bytes;
        type Error = axum::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
            Pin::new(&mut self.inner).poll_frame(cx)
        }
    }

    impl Drop for Watched {
        fn drop(&mut self) {
            if let Some(dropped) = self.dropped.take() {
                let _ = dropped.send(());
            }
        }
    }

    /// An app whose first response streams what the test sends into the
    /// returned sender, its body signalling its drop on the receiver; later
    /// ones are "again".
    #[allow(clippy::type_complexity)]
    fn streaming() -> (
        impl Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future = Answer>
        + Clone
        + Send
        + 'static,
        mpsc::Sender<Bytes>,
        oneshot::Receiver<()>,
    ) {
        let (chunks, incoming) = mpsc::channel::<Bytes>(4);
        let (dropped, body_dropped) = oneshot::channel();
        let chunks_in = futures::stream::unfold(incoming, |mut incoming| async move {
            let chunk = incoming.recv().await?;
            Some((Ok::<_, Infallible>(chunk), incoming))
        });
        let body = Watched {
            inner: Body::from_stream(chunks_in),
            dropped: Some(dropped),
        };
        let body = Arc::new(Mutex::new(Some(body)));
        let service = app(move |_| {
            let body = match body.lock().unwrap().take() {
                Some(body) => Body::new(body),
                None => Body::from("again"),
            };
            Box::pin(async move { Ok(Response::new(body)) })
        });
        (service, chunks, body_dropped)
    }

    #[tokio::test]
    async fn a_client_leaving_mid_stream_drops_the_body_without_waiting_for_a_write() {
        let (service, chunks, body_dropped) = streaming();
        let (mut client, _stop, task) = connect(service).await;
        client
            .send(b"GET /events HTTP/1.1\r\nhost: t\r\n\r\n")
            .await;
        client.head().await;
        chunks.send(Bytes::from("first")).await.unwrap();
        assert_eq!(
            client.bytes(b"5\r\nfirst\r\n".len()).await,
            &b"5\r\nfirst\r\n"[..]
        );
        drop(client);
        // No further chunk is sent: only watching the socket can notice.
        tokio::time::timeout(Duration::from_secs(10), body_dropped)
            .await
            .expect("the body outlived its client")
            .unwrap();
        assert!(task.await.unwrap().is_err());
        assert!(chunks.is_closed());
    }

    #[tokio::test]
    async fn a_request_sent_while_a_response_streams_is_kept_for_after_it() {
        let (service, chunks, _body_dropped) = streaming();
        let (mut client, _stop, _task) = connect(service).await;
        client
            .send(b"GET /events HTTP/1.1\r\nhost: t\r\n\r\n")
            .await;
        client.head().await;
        client.send(b"GET /next HTTP/1.1\r\nhost: t\r\n\r\n").await;
        chunks.send(Bytes::from("event")).await.unwrap();
        assert_eq!(
            client.bytes(b"5\r\nevent\r\n".len()).await,
            &b"5\r\nevent\r\n"[..]
        );
        drop(chunks);
        assert_eq!(client.body(BodyKind::Chunked).await, b"");
        assert_eq!(client.response(false).await.body, b"again");
    }

    #[tokio::test]
    async fn stop_closes_an_idle_connection_at_once() {
        let (mut client, stop, task) = connect(echo()).await;
        client.send(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n").await;
        assert_eq!(client.response(false).await.status, 200);
        stop.cancel();
        assert!(client.closed().await);
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn stop_lets_a_streaming_response_finish_then_closes() {
        let (service, chunks, _body_dropped) = streaming();
        let (mut client, stop, task) = connect(service).await;
        client
            .send(b"GET /events HTTP/1.1\r\nhost: t\r\n\r\n")
            .await;
        let (_, headers) = client.head().await;
        assert_eq!(headers["transfer-encoding"], "chunked");
        stop.cancel();
        chunks.send(Bytes::from("still")).await.unwrap();
        chunks.send(Bytes::from(" here")).await.unwrap();
        drop(chunks);
        assert_eq!(client.body(BodyKind::Chunked).await, b"still here");
        assert!(client.closed().await);
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn h2c_with_prior_knowledge_is_served_by_http2() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let serving = stop.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve_connection(stream, echo(), serving.clone()));
            }
        });
        let client = reqwest::Client::builder()
            .http2_prior_knowledge()
            .no_proxy()
            .build()
            .unwrap();
        let response = client
            .post(format!("http://{addr}/h2"))
            .body("over h2")
            .send()
            .await
            .unwrap();
        assert_eq!(response.version(), http::Version::HTTP_2);
        assert_eq!(response.text().await.unwrap(), "POST /h2 over h2");
        stop.cancel();
    }
}
