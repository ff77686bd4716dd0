//! The proxy's own HTTP/1.1 transport to `http://` hosts: pooled keep-alive
//! connections framed by `crate::http1::client`, with no URL parsing, no
//! per-request client, no connection task, and the response body handed on
//! as `Bytes` slices of the read buffer (never copied).
//!
//! Why not the per-host `reqwest::Client` that metadata calls use, or
//! hyper's connection-level client: on the run path reqwest cost more than
//! everything else the gateway does, and hyper's client still spent a task,
//! a dispatch channel and 20 KiB of buffers per connection; see
//! BENCHMARKS.md. `https://` hosts still go through reqwest (rustls), which
//! this module never sees.
//!
//! Pooling: idle connections wait in a LIFO stack per host. A connection goes
//! back only once its response body ended cleanly and the answer was not a
//! 5xx (uvicorn closes the connection after an unhandled 500 without saying
//! so). One the host closed while it sat idle is noticed at checkout and
//! dropped. A request is never sent twice: if the host closes a connection
//! just as a request goes out, that request fails (as with any HTTP client);
//! the proxy decides whether to try another replica.

use std::cell::RefCell;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use http::header::{HOST, HeaderMap, HeaderValue};
use http::{Method, Response};
use http_body::{Frame, SizeHint};
use tokio::net::TcpStream;

use super::body::AttemptBody;
use crate::client::{ClientError, UnavailablePhase};
use crate::http1::client::{Connection, ResponseBody, SendError};

/// Most idle connections kept per host.
const MAX_IDLE: usize = 1024;

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
    idle: Mutex<Vec<Connection>>,
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

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends one request and returns at its response head.
    pub async fn send(
        self: &Arc<Self>,
        method: &Method,
        path_and_query: &str,
        mut headers: HeaderMap,
        body: Option<AttemptBody>,
    ) -> Result<Response<HostBody>, ClientError> {
        let prefixed;
        let target = if self.prefix.is_empty() {
            path_and_query
        } else {
            prefixed = format!("{}{path_and_query}", self.prefix);
            &prefixed
        };
        headers.insert(HOST, self.host.clone());
        let connection = self.checkout().await?;
        let (head, mut body) = connection
            .send(method, target, headers, body)
            .await
            .map_err(|e| self.classify(&e))?;
        if head.status.is_server_error() {
            body.discard_connection();
        }
        let body = HostBody::Pooled(PooledBody {
            inner: body,
            pool: self.clone(),
        });
        Ok(Response::from_parts(head, body))
    }

    /// An idle connection the host has not closed, or a new one.
    async fn checkout(&self) -> Result<Connection, ClientError> {
        loop {
            let Some(connection) = self.idle().pop() else {
                // Boxed: connecting (name resolution, a timer) makes a big
                // future, which would otherwise be part of every request's
                // (allocated and copied per request) though it rarely runs.
                return Box::pin(self.connect()).await;
            };
            if connection.is_reusable() {
                return Ok(connection);
            }
        }
    }

    async fn connect(&self) -> Result<Connection, ClientError> {
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
        Ok(Connection::new(stream))
    }

    fn put_back(&self, connection: Connection) {
        let mut idle = self.idle();
        if idle.len() < MAX_IDLE {
            idle.push(connection);
        }
    }

    fn transport_error(&self, reason: String) -> ClientError {
        ClientError::Transport {
            base_url: self.base_url.clone(),
            reason,
        }
    }

    /// Maps a failed exchange: an over-limit request body, or a broken
    /// connection or message (the innermost message as the reason).
    fn classify(&self, error: &SendError) -> ClientError {
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
    inner: ResponseBody,
    pool: Arc<Pool>,
}

impl PooledBody {
    /// Returns the connection to the pool if the body ended cleanly.
    fn release(&mut self) {
        if let Some(connection) = self.inner.take_connection() {
            self.pool.put_back(connection);
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
                    Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(body.pool.classify(&e)))),
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
