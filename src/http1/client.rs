//! One keep-alive HTTP/1.1 connection to a host, driven by the task whose
//! request it carries: the request is written, the response head read, and
//! the response body read by whoever polls it. No connection task, no
//! channel between the request and the socket, and no buffer while the
//! connection waits (an open event stream that is quiet costs the socket and
//! a few words).
//!
//! Pooling and the choice of connection belong to `proxy::transport`; this
//! file only frames messages.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap};
use http::{Method, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::net::TcpStream;

use super::codec::{self, BodyKind, ChunkHead, Decoded, Decoder, FramingError, LAST_CHUNK};

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Framing(#[from] FramingError),
    /// The caller's request body failed while it was being sent.
    #[error("request body: {0}")]
    RequestBody(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// A connection to a host, idle between messages.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    /// Bytes read but not yet taken (empty between messages).
    buf: BytesMut,
}

impl Connection {
    pub fn new(stream: TcpStream) -> Connection {
        Connection {
            stream,
            buf: BytesMut::new(),
        }
    }

    /// Whether the connection can carry another request: the host has not
    /// closed it (or sent anything unasked) while it sat in the pool. Costs
    /// no syscall unless the socket turned readable since its last read.
    pub fn is_reusable(&self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.stream.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Sends one request (`target` is the path and query as the host sees
    /// it) and returns at the response head. `headers` must carry `Host`.
    pub async fn send<B>(
        mut self,
        method: &Method,
        target: &str,
        mut headers: HeaderMap,
        mut body: Option<B>,
    ) -> Result<(http::response::Parts, ResponseBody), SendError>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let chunked = match &body {
            Some(_) if headers.contains_key(header::CONTENT_LENGTH) => false,
            Some(body) => match body.size_hint().exact() {
                Some(len) => {
                    headers.insert(header::CONTENT_LENGTH, len.into());
                    false
                }
                None => {
                    headers.insert(
                        header::TRANSFER_ENCODING,
                        header::HeaderValue::from_static("chunked"),
                    );
                    true
                }
            },
            None => false,
        };
        let mut head = Vec::with_capacity(64 + target.len() + 32 * headers.len());
        head.extend_from_slice(method.as_str().as_bytes());
        head.push(b' ');
        head.extend_from_slice(target.as_bytes());
        head.extend_from_slice(b" HTTP/1.1\r\n");
        codec::encode_headers(&mut head, &headers);
        head.extend_from_slice(b"\r\n");
        codec::recycle_header_map(headers);

        // The body by reference: moved into the write's future, it was stored
        // there three times over (rustc keeps each binding), and that future
        // is copied as it nests into the request's.
        self.write_request(head, body.as_mut(), chunked).await?;
        let (parts, keep_alive) = self.read_head().await?;
        let kind = if *method == Method::HEAD
            || parts.status == StatusCode::NO_CONTENT
            || parts.status == StatusCode::NOT_MODIFIED
        {
            BodyKind::Empty
        } else {
            codec::body_kind(&parts.headers, false)?
        };
        let decoder = Decoder::new(kind);
        let reusable = keep_alive && !decoder.until_close();
        Ok((
            parts,
            ResponseBody {
                connection: Some(self),
                decoder,
                reusable,
            },
        ))
    }

    /// Writes the head and the body.
    async fn write_request<B>(
        &mut self,
        head: Vec<u8>,
        body: Option<&mut B>,
        chunked: bool,
    ) -> Result<(), SendError>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let Some(body) = body else {
            return Ok(codec::write_all(&mut self.stream, &[&head]).await?);
        };
        // The first chunk usually is ready (a form already read whole): it
        // leaves with the head, in one write.
        let mut head = Some(head);
        loop {
            let frame = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await;
            let data = match frame {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => Some(data),
                    Err(_) => continue, // trailers: not forwarded
                },
                Some(Err(e)) => return Err(SendError::RequestBody(e.into())),
                None => None,
            };
            let head_bytes = head.take().unwrap_or_default();
            let end = data.is_none() || body.is_end_stream();
            let data = data.unwrap_or_default();
            let chunk_head = ChunkHead::new(data.len());
            let written = if chunked {
                let framing: &[u8] = if data.is_empty() {
                    &[]
                } else {
                    chunk_head.as_bytes()
                };
                let tail: &[u8] = match (data.is_empty(), end) {
                    (true, true) => LAST_CHUNK,
                    (true, false) => &[],
                    (false, true) => b"\r\n0\r\n\r\n",
                    (false, false) => b"\r\n",
                };
                codec::write_all(&mut self.stream, &[&head_bytes, framing, &data, tail]).await
            } else {
                codec::write_all(&mut self.stream, &[&head_bytes, &data]).await
            };
            written?;
            if end {
                return Ok(());
            }
        }
    }

    /// Reads up to the end of the final response head (skipping `1xx`
    /// interim answers); says whether the connection may be kept.
    async fn read_head(&mut self) -> Result<(http::response::Parts, bool), SendError> {
        loop {
            match self.parse_head()? {
                Some(Head::Final(parts, keep_alive)) => return Ok((parts, keep_alive)),
                Some(Head::Interim) => continue,
                None => {
                    if self.buf.len() >= codec::MAX_HEAD {
                        return Err(FramingError::HeadTooLarge.into());
                    }
                    if std::future::poll_fn(|cx| self.poll_fill(cx)).await? == 0 {
                        return Err(FramingError::Incomplete.into());
                    }
                }
            }
        }
    }

    /// Takes a complete response head off the buffer, if there is one. Kept
    /// out of the `async fn` so the header slots never live in its future.
    fn parse_head(&mut self) -> Result<Option<Head>, FramingError> {
        let mut raw = [const { MaybeUninit::uninit() }; codec::MAX_HEADERS];
        let mut fields = [codec::FieldIndex::default(); codec::MAX_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut response,
            &self.buf,
            &mut raw,
        )?;
        let httparse::Status::Complete(len) = parsed else {
            return Ok(None);
        };
        let status = StatusCode::from_u16(response.code.unwrap_or(0))
            .map_err(|_| FramingError::Header("status".into()))?;
        let version = if response.version == Some(0) {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        let count = codec::index_fields(response.headers, &self.buf, &mut fields);
        // The head gets its own allocation of exactly its size: header
        // values kept for as long as a stream lasts would otherwise keep the
        // whole read buffer alive.
        let head = Bytes::copy_from_slice(&self.buf[..len]);
        self.buf.advance(len);
        if status.is_informational() {
            return Ok(Some(Head::Interim));
        }
        let headers = codec::header_map(&fields[..count], &head)?;
        let keep_alive = keeps_alive(version, &headers);
        let mut parts = http::Response::new(()).into_parts().0;
        parts.status = status;
        parts.version = version;
        parts.headers = headers;
        Ok(Some(Head::Final(parts, keep_alive)))
    }

    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        codec::poll_fill(&mut self.stream, &mut self.buf, cx)
    }
}

/// A response head taken off the buffer.
enum Head {
    /// A `1xx` answer, to be skipped.
    Interim,
    /// The answer, and whether the connection may be kept.
    Final(http::response::Parts, bool),
}

/// Whether a response lets the connection carry another request.
fn keeps_alive(version: Version, headers: &HeaderMap) -> bool {
    match version {
        Version::HTTP_10 => codec::connection_option(headers, "keep-alive"),
        _ => !codec::connection_option(headers, "close"),
    }
}

/// A host's response body, read from the connection as it is polled. Once
/// it ended cleanly, [`ResponseBody::take_connection`] hands the connection
/// back for another request; dropped before that, the connection closes
/// with it.
pub struct ResponseBody {
    connection: Option<Connection>,
    decoder: Decoder,
    reusable: bool,
}

impl ResponseBody {
    /// Never hand the connection back (the host may be in trouble).
    pub fn discard_connection(&mut self) {
        self.reusable = false;
    }

    /// The connection, once the body ended and the connection can carry
    /// another request.
    pub fn take_connection(&mut self) -> Option<Connection> {
        let reusable = self.reusable
            && self.decoder.is_done()
            && self.connection.as_ref().is_some_and(|c| c.buf.is_empty());
        if reusable {
            self.connection.take()
        } else {
            None
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = SendError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, SendError>>> {
        let this = self.get_mut();
        loop {
            let Some(connection) = this.connection.as_mut() else {
                // Ended (or failed) already.
                return Poll::Ready(None);
            };
            let decoded = match this.decoder.decode(&mut connection.buf) {
                Ok(Decoded::NeedMore) => match ready!(connection.poll_fill(cx)) {
                    Ok(0) => this.decoder.decode_eof().map_err(SendError::from),
                    Ok(_) => continue,
                    Err(e) => Err(e.into()),
                },
                other => other.map_err(SendError::from),
            };
            return match decoded {
                Ok(Decoded::Data(data)) => Poll::Ready(Some(Ok(Frame::data(data)))),
                Ok(Decoded::End) => Poll::Ready(None),
                Ok(Decoded::NeedMore) => continue,
                Err(e) => {
                    this.connection = None;
                    Poll::Ready(Some(Err(e)))
                }
            };
        }
    }

    fn is_end_stream(&self) -> bool {
        self.decoder.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A host that answers each request it reads with the next of `answers`
    /// (raw bytes), then closes; it returns every request it read, raw.
    async fn scripted_host(
        answers: Vec<&'static [u8]>,
    ) -> (TcpStream, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let host = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            for answer in answers {
                // Read until the request's end: a blank line, plus a
                // chunked body's last chunk when there is one.
                loop {
                    let mut buf = [0u8; 1024];
                    let n = socket.read(&mut buf).await.unwrap();
                    seen.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&seen);
                    let requests = text.matches("\r\n\r\n").count();
                    let chunked = text.contains("transfer-encoding: chunked");
                    let done = if chunked {
                        text.ends_with("0\r\n\r\n")
                    } else {
                        requests > 0
                    };
                    if n == 0 || done {
                        break;
                    }
                }
                socket.write_all(answer).await.unwrap();
            }
            seen
        });
        (TcpStream::connect(addr).await.unwrap(), host)
    }

    fn get_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, header::HeaderValue::from_static("h"));
        h
    }

    async fn get(connection: Connection) -> (http::response::Parts, Vec<u8>, Option<Connection>) {
        let (head, mut body) = connection
            .send::<http_body_util::Empty<Bytes>>(&Method::GET, "/x", get_headers(), None)
            .await
            .unwrap();
        let mut data = Vec::new();
        while let Some(frame) = body.frame().await {
            data.extend_from_slice(&frame.unwrap().into_data().unwrap());
        }
        let again = body.take_connection();
        (head, data, again)
    }

    #[tokio::test]
    async fn chunked_answers_are_decoded_and_the_connection_reused() {
        let (stream, host) = scripted_host(vec![
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: text/event-stream\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
            b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok",
        ])
        .await;
        let (head, data, again) = get(Connection::new(stream)).await;
        assert_eq!(head.status, 200);
        assert_eq!(head.headers["content-type"], "text/event-stream");
        assert_eq!(data, b"abcde");
        let again = again.expect("a cleanly ended body frees its connection");
        assert!(again.is_reusable());
        let (head, data, _) = get(again).await;
        assert_eq!((head.status.as_u16(), data.as_slice()), (201, &b"ok"[..]));
        let seen = String::from_utf8(host.await.unwrap()).unwrap();
        assert_eq!(seen, "GET /x HTTP/1.1\r\nhost: h\r\n\r\n".repeat(2));
    }

    #[tokio::test]
    async fn closing_answers_free_no_connection() {
        for answer in [
            &b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\nx"[..],
            b"HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\nx",
            b"HTTP/1.1 200 OK\r\n\r\nx",
        ] {
            let (stream, _host) = scripted_host(vec![answer]).await;
            let (_, data, again) = get(Connection::new(stream)).await;
            assert_eq!(data, b"x");
            assert!(again.is_none(), "{}", String::from_utf8_lossy(answer));
        }
    }

    #[tokio::test]
    async fn truncated_bodies_fail_and_closed_connections_are_not_reused() {
        let (stream, _host) = scripted_host(vec![
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nab",
        ])
        .await;
        let (_, mut body) = Connection::new(stream)
            .send::<http_body_util::Empty<Bytes>>(&Method::GET, "/x", get_headers(), None)
            .await
            .unwrap();
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "ab");
        assert!(matches!(
            body.frame().await,
            Some(Err(SendError::Framing(FramingError::Incomplete)))
        ));
        assert!(body.take_connection().is_none());

        let (stream, host) = scripted_host(vec![]).await;
        host.await.unwrap();
        let idle = Connection::new(stream);
        // The host's FIN is there once the host task ended.
        assert!(!idle.is_reusable());
    }

    #[tokio::test]
    async fn streamed_request_bodies_go_out_chunked() {
        let (stream, host) = scripted_host(vec![b"HTTP/1.1 204 No Content\r\n\r\n"]).await;
        let chunks = futures::stream::iter([Ok::<_, std::io::Error>("a=1"), Ok("&b=22")])
            .map(|c| c.map(|s| Frame::data(Bytes::from(s))));
        let body = http_body_util::StreamBody::new(chunks);
        let (head, mut body) = Connection::new(stream)
            .send(&Method::POST, "/runs", get_headers(), Some(body))
            .await
            .unwrap();
        assert_eq!(head.status, 204);
        assert!(body.frame().await.is_none());
        assert!(body.take_connection().is_some());
        let seen = String::from_utf8(host.await.unwrap()).unwrap();
        assert_eq!(
            seen,
            "POST /runs HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n3\r\na=1\r\n5\r\n&b=22\r\n0\r\n\r\n"
        );
    }
}
