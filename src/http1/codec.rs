//! HTTP/1.1 message framing shared by the gateway's server and client sides:
//! how long a body is (RFC 9112 §6.3), decoding `chunked` bodies as they
//! arrive, encoding chunks, heads, and vectored writes.
//!
//! Everything works on `BytesMut` read buffers and hands out `Bytes` slices
//! of them: a body chunk is never copied between the socket it was read from
//! and the socket it is written to.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;

/// Longest request or response head accepted.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in one head.
pub const MAX_HEADERS: usize = 128;
/// Longest chunk-size line (size, extensions) or trailer line accepted.
const MAX_LINE: usize = 4096;

/// A framing error: the message cannot be read, and the connection it came
/// on cannot be used again.
#[derive(Debug, thiserror::Error)]
pub enum FramingError {
    #[error("invalid HTTP head: {0}")]
    Head(#[from] httparse::Error),
    #[error("HTTP head larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("invalid header {0}")]
    Header(String),
    #[error("invalid Content-Length")]
    ContentLength,
    #[error("unsupported Transfer-Encoding")]
    TransferEncoding,
    #[error("invalid chunked encoding: {0}")]
    Chunked(&'static str),
    #[error("connection closed before the message ended")]
    Incomplete,
}

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// No body at all.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Everything until the peer closes (responses only).
    UntilClose,
}

/// The body framing a head declares. Requests without a length have no body
/// (RFC 9112 §6.3 rule 6); responses without one run until close.
pub fn body_kind(headers: &HeaderMap, is_request: bool) -> Result<BodyKind, FramingError> {
    if let Some(te) = headers.get(header::TRANSFER_ENCODING) {
        // A sender that sends both is suspect (smuggling); chunked wins and
        // the length is ignored, as the RFC says.
        let chunked_last = te
            .to_str()
            .ok()
            .and_then(|v| v.rsplit(',').next())
            .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        return match (chunked_last, is_request) {
            (true, _) => Ok(BodyKind::Chunked),
            (false, true) => Err(FramingError::TransferEncoding),
            (false, false) => Ok(BodyKind::UntilClose),
        };
    }
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        // `Content-Length: 5, 5` and repeated equal fields are allowed;
        // different values are not.
        // Bytes, not `str` splitting and parsing: this runs on every
        // message, and the value is a handful of ASCII digits.
        for part in value.as_bytes().split(|&b| b == b',') {
            let part = part.trim_ascii();
            if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
                return Err(FramingError::ContentLength);
            }
            let n = part
                .iter()
                .fold(0u64, |n, &digit| n * 10 + u64::from(digit - b'0'));
            if length.is_some_and(|l| l != n) {
                return Err(FramingError::ContentLength);
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(0) => BodyKind::Empty,
        Some(n) => BodyKind::Length(n),
        None if is_request => BodyKind::Empty,
        None => BodyKind::UntilClose,
    })
}

/// Where one header field lies in the buffer its head was parsed from.
#[derive(Debug, Clone, Copy, Default)]
pub struct FieldIndex {
    name: (u32, u32),
    value: (u32, u32),
}

/// Notes where `raw`'s fields lie in `buf` (which they were parsed from), so
/// that the head can be split off the buffer before the map is built.
pub fn index_fields(raw: &[httparse::Header<'_>], buf: &[u8], out: &mut [FieldIndex]) -> usize {
    let base = buf.as_ptr() as usize;
    // Heads are at most MAX_HEAD bytes, so offsets fit in u32.
    let range = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        (start as u32, (start + s.len()) as u32)
    };
    for (slot, field) in out.iter_mut().zip(raw) {
        *slot = FieldIndex {
            name: range(field.name.as_bytes()),
            value: range(field.value),
        };
    }
    raw.len().min(out.len())
}

/// Fields the gateway adds to a parsed head on its way through (request id,
/// `Host`, `Vary`, `Authorization`): room for them up front saves growing
/// the map (a new index, a rehash, a moved entry list) on most requests.
const ADDED_FIELDS: usize = 4;

/// The header fields at `fields` in `head`, as a `HeaderMap` whose values
/// are slices of `head` (no copies).
pub fn header_map(fields: &[FieldIndex], head: &Bytes) -> Result<HeaderMap, FramingError> {
    let mut headers = spare_maps::take().unwrap_or_default();
    // No-op for a recycled map of a typical head's size.
    headers.reserve(fields.len() + ADDED_FIELDS);
    for field in fields {
        let (name, value) = (field.name, field.value);
        let name_bytes = head
            .get(name.0 as usize..name.1 as usize)
            .ok_or(FramingError::Header(String::new()))?;
        let bad = || FramingError::Header(String::from_utf8_lossy(name_bytes).into_owned());
        let name = HeaderName::from_bytes(name_bytes).map_err(|_| bad())?;
        let value = HeaderValue::from_maybe_shared(head.slice(value.0 as usize..value.1 as usize))
            .map_err(|_| bad())?;
        headers.append(name, value);
    }
    Ok(headers)
}

/// Header maps of heads already written, kept per thread for the next
/// heads parsed. A map sized for a typical head is two allocations of
/// about 1.2 KiB (past glibc's fast bins), and a forwarded run parsed two
/// heads and freed two maps per request.
mod spare_maps {
    use std::cell::RefCell;

    use http::HeaderMap;

    /// At most this many per thread (~80 KiB).
    const MAX_SPARE: usize = 64;
    /// Maps grown past this (a head with many fields) are freed instead.
    const MAX_CAPACITY: usize = 32;

    thread_local! {
        static SPARE: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
    }

    /// Hands a head's header map back once the head is written, for the
    /// next head this thread parses.
    pub fn put(mut headers: HeaderMap) {
        if headers.capacity() == 0 || headers.capacity() > MAX_CAPACITY {
            return;
        }
        headers.clear();
        SPARE.with(|spare| {
            let mut spare = spare.borrow_mut();
            if spare.len() < MAX_SPARE {
                spare.push(headers);
            }
        });
    }

    pub(super) fn take() -> Option<HeaderMap> {
        SPARE.with(|spare| spare.borrow_mut().pop())
    }
}

/// Whether a `Connection` field of `headers` names `option` (`close`,
/// `keep-alive`), in any case and list position.
pub fn connection_option(headers: &HeaderMap, option: &str) -> bool {
    headers.get_all(header::CONNECTION).iter().any(|value| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .any(|o| o.trim_ascii().eq_ignore_ascii_case(option.as_bytes()))
    })
}

/// Appends `name: value` lines for every field of `headers`.
pub fn encode_headers(out: &mut Vec<u8>, headers: &HeaderMap) {
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// What [`Decoder::decode`] found in the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Body bytes.
    Data(Bytes),
    /// The buffer holds no more of the body; read more.
    NeedMore,
    /// The body ended; what is left in the buffer belongs to the next message.
    End,
}

/// Takes a body out of a connection's read buffer as it arrives.
#[derive(Debug)]
pub struct Decoder {
    state: State,
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// Bytes left of a `Content-Length` body.
    Length(u64),
    /// Expecting a chunk-size line.
    ChunkSize,
    /// Bytes left of the current chunk's data.
    ChunkData(u64),
    /// Expecting the CRLF after a chunk's data.
    ChunkEnd,
    /// After the last chunk: trailer lines until an empty one.
    Trailers,
    UntilClose,
    Done,
}

impl Decoder {
    pub fn new(kind: BodyKind) -> Decoder {
        let state = match kind {
            BodyKind::Empty | BodyKind::Length(0) => State::Done,
            BodyKind::Length(n) => State::Length(n),
            BodyKind::Chunked => State::ChunkSize,
            BodyKind::UntilClose => State::UntilClose,
        };
        Decoder { state }
    }

    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Whether the body runs until the connection closes (which then cannot
    /// be reused).
    pub fn until_close(&self) -> bool {
        matches!(self.state, State::UntilClose)
    }

    /// Bytes of the body not decoded yet, when that is known in advance (a
    /// `Content-Length` body, or one that has ended): a body's exact size
    /// hint.
    pub fn remaining(&self) -> Option<u64> {
        match self.state {
            State::Length(left) => Some(left),
            State::Done => Some(0),
            _ => None,
        }
    }

    /// The next piece of body in `buf`, consuming it (and any framing).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, FramingError> {
        loop {
            match self.state {
                State::Done => return Ok(Decoded::End),
                State::Length(left) | State::ChunkData(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let left = left - take as u64;
                    self.state = match self.state {
                        State::Length(_) if left == 0 => State::Done,
                        State::Length(_) => State::Length(left),
                        _ if left == 0 => State::ChunkEnd,
                        _ => State::ChunkData(left),
                    };
                    return Ok(Decoded::Data(buf.split_to(take).freeze()));
                }
                State::UntilClose => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    return Ok(Decoded::Data(buf.split().freeze()));
                }
                State::ChunkSize => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    let size = chunk_size(&line)?;
                    self.state = if size == 0 {
                        State::Trailers
                    } else {
                        State::ChunkData(size)
                    };
                }
                State::ChunkEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(FramingError::Chunked("missing CRLF after chunk data"));
                    }
                    buf.advance(2);
                    self.state = State::ChunkSize;
                }
                State::Trailers => {
                    // Trailers are read past, not forwarded: nothing in
                    // AgentOS sends or reads them.
                    let Some(line) = take_line(buf)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    if line.is_empty() {
                        self.state = State::Done;
                    }
                }
            }
        }
    }

    /// The peer closed the connection: the end of an until-close body, a
    /// truncated message otherwise.
    pub fn decode_eof(&mut self) -> Result<Decoded, FramingError> {
        match self.state {
            State::UntilClose | State::Done => {
                self.state = State::Done;
                Ok(Decoded::End)
            }
            _ => Err(FramingError::Incomplete),
        }
    }
}

/// One CRLF-terminated line out of `buf`, without its CRLF; `None` until the
/// whole line is there.
fn take_line(buf: &mut BytesMut) -> Result<Option<BytesMut>, FramingError> {
    match buf.windows(2).position(|w| w == b"\r\n") {
        Some(end) => {
            let line = buf.split_to(end);
            buf.advance(2);
            Ok(Some(line))
        }
        None if buf.len() > MAX_LINE => Err(FramingError::Chunked("line too long")),
        None => Ok(None),
    }
}

/// The size on a chunk-size line, extensions ignored.
fn chunk_size(line: &[u8]) -> Result<u64, FramingError> {
    let digits = line
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    if digits.is_empty() || digits.len() > 15 {
        return Err(FramingError::Chunked("bad chunk size"));
    }
    let mut size = 0u64;
    for &b in digits {
        let digit = (b as char)
            .to_digit(16)
            .ok_or(FramingError::Chunked("bad chunk size"))?;
        size = size * 16 + u64::from(digit);
    }
    Ok(size)
}

/// The `<hex size>\r\n` line before a chunk of `len` bytes.
pub struct ChunkHead {
    bytes: [u8; 18],
    len: usize,
}

impl ChunkHead {
    pub fn new(len: usize) -> ChunkHead {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut digits = [0u8; 16];
        let mut n = len;
        let mut start = digits.len();
        loop {
            start -= 1;
            digits[start] = HEX[n & 0xf];
            n >>= 4;
            if n == 0 {
                break;
            }
        }
        let mut bytes = [0u8; 18];
        let count = digits.len() - start;
        bytes[..count].copy_from_slice(&digits[start..]);
        bytes[count..count + 2].copy_from_slice(b"\r\n");
        ChunkHead {
            bytes,
            len: count + 2,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// The last chunk and the end of a chunked body (no trailers).
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// What one read reserves: room for a typical head and a small body. Small,
/// because thousands of streams may be open; more is read in more steps.
pub const READ_SIZE: usize = 4096;

/// The socket behind a connection's read side: readiness is asked of it
/// before any buffer is reserved.
pub trait ReadSocket: AsyncRead + Unpin {
    fn socket(&self) -> &TcpStream;
}

impl ReadSocket for TcpStream {
    fn socket(&self) -> &TcpStream {
        self
    }
}

impl ReadSocket for OwnedReadHalf {
    fn socket(&self) -> &TcpStream {
        self.as_ref()
    }
}

/// Reads what the socket has into `buf`: the byte count, 0 at the end of
/// the stream. An empty buffer goes to this thread's spares (see
/// [`spare_buffers`]) before waiting and none is taken until the socket is
/// readable, so a waiting connection (an idle keep-alive, a quiet event
/// stream) holds no buffer.
pub fn poll_fill<R: ReadSocket>(
    io: &mut R,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if buf.is_empty() {
        if buf.capacity() > 0 {
            spare_buffers::put(std::mem::take(buf));
        }
        ready!(io.socket().poll_read_ready(cx))?;
    }
    if buf.capacity() - buf.len() < READ_SIZE / 4 {
        match buf.is_empty().then(spare_buffers::take).flatten() {
            Some(spare) => *buf = spare,
            None => buf.reserve(READ_SIZE),
        }
    }
    // Through `AsyncRead` (not `try_read`): tokio then notes that a short
    // read drained the socket, which saves the next read's EAGAIN.
    tokio_util::io::poll_read_buf(Pin::new(io), cx, buf)
}

/// Read buffers given back by connections that went quiet, for the next
/// connection on this thread that has bytes to read. A busy keep-alive
/// connection gives its buffer back after every request; taking it from
/// here instead of from malloc saves a large allocation and a free per
/// request on each side of the proxy, and the buffer is still warm in cache.
mod spare_buffers {
    use std::cell::{Cell, RefCell};

    use bytes::BytesMut;

    use super::READ_SIZE;

    /// At most this many per thread (256 KiB): enough for the connections
    /// one thread has mid-request at once, small beside 10,000 idle ones.
    const MAX_SPARE: usize = 64;

    thread_local! {
        static SPARE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
        /// The fewest spares this thread had since the last [`trim`]: that
        /// many went unused all along.
        static LOW_WATER: Cell<usize> = const { Cell::new(0) };
    }

    /// Keeps an empty buffer if it owns a whole allocation of at least
    /// [`READ_SIZE`] (no `Bytes` split off it is still alive).
    pub(super) fn put(mut buf: BytesMut) {
        debug_assert!(buf.is_empty());
        if buf.try_reclaim(READ_SIZE) {
            SPARE.with(|spare| {
                let mut spare = spare.borrow_mut();
                if spare.len() < MAX_SPARE {
                    spare.push(buf);
                }
            });
        }
    }

    pub(super) fn take() -> Option<BytesMut> {
        SPARE.with(|spare| {
            let mut spare = spare.borrow_mut();
            let buf = spare.pop();
            LOW_WATER.with(|low| low.set(low.get().min(spare.len())));
            buf
        })
    }

    /// Frees the spares that went unused since the last call (a burst's
    /// buffers once it is over), and returns how many are left.
    pub fn trim() -> usize {
        SPARE.with(|spare| {
            let mut spare = spare.borrow_mut();
            let unused = LOW_WATER.with(Cell::get).min(spare.len());
            let keep = spare.len() - unused;
            spare.truncate(keep);
            LOW_WATER.with(|low| low.set(spare.len()));
            spare.len()
        })
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn trim_frees_only_the_buffers_left_unused() {
            let buffer = || BytesMut::with_capacity(READ_SIZE);
            trim();
            for _ in 0..3 {
                put(buffer());
            }
            // They came back after the last trim: not yet unused for a
            // whole interval.
            assert_eq!(trim(), 3);
            // One is taken and given back: two were never needed.
            let taken = take();
            assert!(taken.is_some());
            put(buffer());
            assert_eq!(trim(), 1);
            assert_eq!(trim(), 0);
        }
    }
}

pub use spare_buffers::trim as trim_spare_buffers;
pub use spare_maps::put as recycle_header_map;

/// Writes all of `parts` (at most [`MAX_PARTS`]) with as few vectored
/// writes as the socket allows: a head and a body chunk usually leave in one
/// syscall.
pub async fn write_all<W: AsyncWrite + Unpin>(io: &mut W, parts: &[&[u8]]) -> io::Result<()> {
    let mut left: [&[u8]; MAX_PARTS] = [&[]; MAX_PARTS];
    let mut count = 0;
    for part in parts.iter().filter(|p| !p.is_empty()) {
        if count == MAX_PARTS {
            return Err(io::Error::other("too many parts for one write"));
        }
        left[count] = part;
        count += 1;
    }
    let mut first = 0;
    while first < count {
        let slices: [IoSlice<'_>; MAX_PARTS] = std::array::from_fn(|i| {
            IoSlice::new(if first + i < count {
                left[first + i]
            } else {
                &[]
            })
        });
        let mut written = io.write_vectored(&slices[..count - first]).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while first < count && written >= left[first].len() {
            written -= left[first].len();
            first += 1;
        }
        if written > 0 {
            left[first] = &left[first][written..];
        }
    }
    Ok(())
}

/// Most parts [`write_all`] takes in one call.
pub const MAX_PARTS: usize = 4;

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(kind: BodyKind, input: &[&[u8]]) -> Result<(Vec<u8>, Vec<u8>), FramingError> {
        let mut decoder = Decoder::new(kind);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in input {
            buf.extend_from_slice(piece);
            loop {
                match decoder.decode(&mut buf)? {
                    Decoded::Data(d) => out.extend_from_slice(&d),
                    Decoded::NeedMore => break,
                    Decoded::End => return Ok((out, buf.to_vec())),
                }
            }
        }
        match decoder.decode_eof()? {
            Decoded::End => Ok((out, buf.to_vec())),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn chunked_bodies_decode_across_any_split() {
        let wire = b"5;ext=1\r\nhello\r\nb\r\n, world!!!!\r\n0\r\nx-trailer: 1\r\n\r\nNEXT";
        // Splits inside the body's framing; "NEXT" arrives with the second piece.
        for split in 0..wire.len() - 4 {
            let (body, rest) = decode_all(BodyKind::Chunked, &[&wire[..split], &wire[split..]])
                .unwrap_or_else(|e| panic!("split {split}: {e}"));
            assert_eq!(body, b"hello, world!!!!");
            assert_eq!(rest, b"NEXT");
        }
    }

    #[test]
    fn length_bodies_stop_at_their_length() {
        let (body, rest) = decode_all(BodyKind::Length(3), &[b"ab", b"cGET"]).unwrap();
        assert_eq!(
            (body.as_slice(), rest.as_slice()),
            (&b"abc"[..], &b"GET"[..])
        );
        assert!(matches!(
            decode_all(BodyKind::Length(9), &[b"abc"]),
            Err(FramingError::Incomplete)
        ));
        let (body, _) = decode_all(BodyKind::UntilClose, &[b"ab", b"c"]).unwrap();
        assert_eq!(body, b"abc");
    }

    #[test]
    fn remaining_counts_down_a_length_body_only() {
        let mut decoder = Decoder::new(BodyKind::Length(5));
        let mut buf = BytesMut::from(&b"abc"[..]);
        assert_eq!(decoder.remaining(), Some(5));
        decoder.decode(&mut buf).unwrap();
        assert_eq!(decoder.remaining(), Some(2));
        assert_eq!(Decoder::new(BodyKind::Chunked).remaining(), None);
        assert_eq!(Decoder::new(BodyKind::Empty).remaining(), Some(0));
    }

    #[test]
    fn malformed_chunks_are_errors() {
        for wire in [&b"zz\r\n"[..], b"3\r\nabcX\r\n", b"\r\n"] {
            assert!(decode_all(BodyKind::Chunked, &[wire]).is_err(), "{wire:?}");
        }
        assert!(matches!(
            decode_all(BodyKind::Chunked, &[b"3\r\nab"]),
            Err(FramingError::Incomplete)
        ));
    }

    #[test]
    fn chunk_heads_are_lowercase_hex() {
        assert_eq!(ChunkHead::new(0).as_bytes(), b"0\r\n");
        assert_eq!(ChunkHead::new(255).as_bytes(), b"ff\r\n");
        assert_eq!(ChunkHead::new(4096).as_bytes(), b"1000\r\n");
    }

    #[test]
    fn body_kinds_follow_rfc_9112() {
        let mut h = HeaderMap::new();
        assert_eq!(body_kind(&h, true).unwrap(), BodyKind::Empty);
        assert_eq!(body_kind(&h, false).unwrap(), BodyKind::UntilClose);
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("12"));
        assert_eq!(body_kind(&h, true).unwrap(), BodyKind::Length(12));
        h.append(header::CONTENT_LENGTH, HeaderValue::from_static("13"));
        assert!(body_kind(&h, true).is_err());
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("+1"));
        assert!(body_kind(&h, true).is_err());
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("gzip, chunked"),
        );
        assert_eq!(body_kind(&h, true).unwrap(), BodyKind::Chunked);
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("gzip"));
        assert!(body_kind(&h, true).is_err());
        assert_eq!(body_kind(&h, false).unwrap(), BodyKind::UntilClose);
    }
}
