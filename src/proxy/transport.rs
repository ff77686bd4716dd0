//! The proxy's own HTTP/1.1 transport to `http://` hosts: pooled keep-alive
//! connections driven by hyper's connection-level client, with no URL parsing,
//! no per-request client, and the response body handed on as hyper's frames
//! (`Bytes`, never copied).
//!
//! Why not the per-host `reqwest::Client` that metadata calls use: on the run
//! path reqwest cost more than everything else the gateway does (URL parsing
//! and re-serialising per request, a spawned task per pooled connection
//! returned, its own body and timeout layers); see BENCHMARKS.md. `https://`
//! hosts still go through reqwest (rustls), which this module never sees.
//!
//! Pooling: idle connections wait in a LIFO stack per host. A connection goes
//! back only once its response body ended cleanly and the answer was not a
//! 5xx (uvicorn closes the connection after an unhandled 500 without saying
//! so). A request that hyper hands back unsent, because a pooled connection
//! turned out closed, is retried on another connection; a request that may
//! have been sent never is.

use std::cell::RefCell;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use http::header::{HOST, HeaderMap, HeaderValue};
use http::{Method, Request, Response, Uri};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::client::{ClientError, UnavailablePhase};

/// Most idle connections kept per host.
const MAX_IDLE: usize = 1024;
/// Read buffer of an upstream connection. Small, because thousands of
/// streams may be open, each holding one; a larger body is simply read in
/// more steps.
const READ_BUF: usize = 4096;

thread_local! {
    /// This thread's pools, by base URL and connect timeout. Per thread
    /// because the gateway serves thread-per-core (see `crate::server`): a
    /// connection is opened, used and pooled by the one thread whose
    /// runtime drives it. Connections to one host are interchangeable,
    /// whichever gateway in the process (tests run several) uses them.
    static POOLS: RefCell<Vec<Arc<Pool>>> = const { RefCell::new(Vec::new()) };
}

/// This thread's pool for the host at `base_url`, or `None` when this
/// transport does not serve it (`https://`, or a URL it cannot split).
pub fn pool(base_url: &str, connect_timeout: Duration) -> Option<Arc<Pool>> {
    POOLS.with(|pools| {
        let mut pools = pools.borrow_mut();
        let found = pools.iter().find(|p| {
            p.connect_timeout == connect_timeout && p.base_url == base_url.trim_end_matches('/')
        });
        if let Some(pool) = found {
            return Some(pool.clone());
        }
        let pool = Arc::new(Pool::new(base_url, connect_timeout)?);
        pools.push(pool.clone());
        Some(pool)
    })
}

/// Keep-alive connections to one host.
pub struct Pool {
    base_url: String,
    /// `host:port`, as connected to and sent in `Host`.
    authority: String,
    host: HeaderValue,
    /// The base URL's path, without a trailing slash ("" for none).
    prefix: String,
    connect_timeout: Duration,
    idle: Mutex<Vec<SendRequest<reqwest::Body>>>,
}

impl Pool {
    fn new(base_url: &str, connect_timeout: Duration) -> Option<Pool> {
        let rest = base_url.strip_prefix("http://")?;
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains('@') {
            return None;
        }
        // `http://host` means port 80; connect needs it spelled out.
        let has_port = authority
            .rsplit_once(':')
            .is_some_and(|(_, port)| !port.contains(']') && port.parse::<u16>().is_ok());
        let connect = if has_port {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        Some(Pool {
            base_url: base_url.trim_end_matches('/').to_owned(),
            host: HeaderValue::from_str(authority).ok()?,
            authority: connect,
            prefix: prefix.to_owned(),
            connect_timeout,
            idle: Mutex::new(Vec::new()),
        })
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<SendRequest<reqwest::Body>>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends one request and returns at its response head.
    pub async fn send(
        self: &Arc<Self>,
        method: &Method,
        path_and_query: &str,
        mut headers: HeaderMap,
        body: Option<reqwest::Body>,
    ) -> Result<Response<HostBody>, ClientError> {
        let uri = if self.prefix.is_empty() {
            Uri::try_from(path_and_query)
        } else {
            Uri::try_from(format!("{}{path_and_query}", self.prefix))
        }
        .map_err(|e| self.transport_error(e.to_string()))?;
        headers.insert(HOST, self.host.clone());
        let mut request = Request::new(body.unwrap_or_else(empty));
        *request.method_mut() = method.clone();
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        loop {
            let (mut sender, reused) = self.checkout().await?;
            match sender.try_send_request(request).await {
                Ok(response) => {
                    let reusable = !response.status().is_server_error();
                    return Ok(response.map(|inner| {
                        HostBody::Pooled(PooledBody {
                            inner,
                            sender: reusable.then_some(sender),
                            pool: self.clone(),
                        })
                    }));
                }
                Err(mut error) => match error.take_message() {
                    // Never sent: a pooled connection closed under us.
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(self.classify(error.error())),
                },
            }
        }
    }

    /// An idle connection ready for a request (`true`), or a new one.
    async fn checkout(&self) -> Result<(SendRequest<reqwest::Body>, bool), ClientError> {
        loop {
            let Some(mut sender) = self.idle().pop() else {
                return self.connect().await.map(|s| (s, false));
            };
            if sender.is_closed() {
                continue;
            }
            // Just returned connections may still be finishing the last
            // message; that takes microseconds.
            if std::future::poll_fn(|cx| sender.poll_ready(cx))
                .await
                .is_ok()
            {
                return Ok((sender, true));
            }
        }
    }

    async fn connect(&self) -> Result<SendRequest<reqwest::Body>, ClientError> {
        let unavailable = |phase| ClientError::RemoteServerUnavailable {
            base_url: self.base_url.clone(),
            phase,
        };
        let stream =
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(&self.authority))
                .await
            {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    return Err(unavailable(UnavailablePhase::Connect {
                        reason: e.to_string(),
                    }));
                }
                Err(_) => {
                    return Err(unavailable(UnavailablePhase::ConnectTimeout {
                        after: self.connect_timeout,
                    }));
                }
            };
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::Builder::new()
            .read_buf_exact_size(Some(READ_BUF))
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| {
                unavailable(UnavailablePhase::Connect {
                    reason: e.to_string(),
                })
            })?;
        tokio::spawn(async move {
            // Ends when the connection closes; errors surface on the request.
            let _ = connection.await;
        });
        Ok(sender)
    }

    fn put_back(&self, sender: SendRequest<reqwest::Body>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle();
        if idle.len() < MAX_IDLE {
            idle.push(sender);
        }
    }

    fn transport_error(&self, reason: String) -> ClientError {
        ClientError::Transport {
            base_url: self.base_url.clone(),
            reason,
        }
    }

    /// Maps a hyper failure: an over-limit request body, or a broken
    /// connection (the innermost message as the reason).
    fn classify(&self, error: &hyper::Error) -> ClientError {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
        let mut reason = error.to_string();
        while let Some(e) = source {
            if e.is::<http_body_util::LengthLimitError>() {
                return ClientError::BodyTooLarge;
            }
            reason = e.to_string();
            source = e.source();
        }
        self.transport_error(reason)
    }
}

fn empty() -> reqwest::Body {
    reqwest::Body::from(Bytes::new())
}

/// A host's response body: frames from the pooled connection (the
/// connection returns to the pool when the body ends cleanly), or from
/// reqwest for `https://` hosts.
pub enum HostBody {
    Pooled(PooledBody),
    Reqwest(futures::stream::BoxStream<'static, Result<Bytes, ClientError>>),
}

impl HostBody {
    /// The body's data chunks, as they arrive.
    pub fn into_stream(self) -> impl Stream<Item = Result<Bytes, ClientError>> + Send + 'static {
        http_body_util::BodyDataStream::new(self)
    }
}

pub struct PooledBody {
    inner: Incoming,
    /// Returned to the pool at the clean end of the body.
    sender: Option<SendRequest<reqwest::Body>>,
    pool: Arc<Pool>,
}

impl PooledBody {
    fn release(&mut self) {
        if let Some(sender) = self.sender.take() {
            self.pool.put_back(sender);
        }
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // A body dropped before its end leaves the connection mid-message:
        // dropping the sender with it closes the connection.
        if http_body::Body::is_end_stream(&self.inner) {
            self.release();
        }
    }
}

impl http_body::Body for HostBody {
    type Data = Bytes;
    type Error = ClientError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientError>>> {
        match self.get_mut() {
            HostBody::Pooled(body) => {
                let polled = Pin::new(&mut body.inner).poll_frame(cx);
                match polled {
                    Poll::Ready(Some(Ok(frame))) => {
                        if http_body::Body::is_end_stream(&body.inner) {
                            body.release();
                        }
                        Poll::Ready(Some(Ok(frame)))
                    }
                    Poll::Ready(Some(Err(e))) => {
                        body.sender = None;
                        Poll::Ready(Some(Err(body.pool.classify(&e))))
                    }
                    Poll::Ready(None) => {
                        body.release();
                        Poll::Ready(None)
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
            HostBody::Reqwest(stream) => Pin::new(stream)
                .poll_next(cx)
                .map(|chunk| chunk.map(|c| c.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            HostBody::Pooled(body) => body.inner.is_end_stream(),
            HostBody::Reqwest(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            HostBody::Pooled(body) => body.inner.size_hint(),
            HostBody::Reqwest(_) => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_split_into_authority_and_prefix() {
        let t = Duration::from_secs(1);
        let p = Pool::new("http://127.0.0.1:7777", t).unwrap();
        assert_eq!(
            (p.authority.as_str(), p.prefix.as_str()),
            ("127.0.0.1:7777", "")
        );
        let p = Pool::new("http://agentos.internal/api/v1/", t).unwrap();
        assert_eq!(p.authority, "agentos.internal:80");
        assert_eq!(p.host, "agentos.internal");
        assert_eq!(p.prefix, "/api/v1");
        let p = Pool::new("http://[::1]:8000", t).unwrap();
        assert_eq!(p.authority, "[::1]:8000");
        let p = Pool::new("http://[::1]", t).unwrap();
        assert_eq!(p.authority, "[::1]:80");
        assert!(Pool::new("https://h:1", t).is_none());
        assert!(Pool::new("http://user@h:1", t).is_none());
    }
}
