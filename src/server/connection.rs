//! One caller connection, from accept to close: framed by hyper-util's
//! server (HTTP/1.1, or HTTP/2 with prior knowledge), within `[server]`'s
//! connection limits.
//!
//! What hyper does not bound on its own is bounded here, each timer started
//! when its resource is taken:
//! - the first request head must arrive within `header_read_timeout` of
//!   accept (hyper's own head timer then covers every later head and the
//!   idle wait before it, at `keep_alive_timeout`);
//! - a connection with no request in flight, HTTP/1 or h2, is closed after
//!   `keep_alive_timeout` (`Activity` counts its requests);
//! - a write the caller does not take within `write_timeout` fails the
//!   connection ([`WriteTimeout`]), which drops its requests: an event
//!   stream's run is then cancelled on its host like any disconnect;
//! - [`ConnectionSlot`]s cap the connections open at once.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::{Request, Response};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use pin_project_lite::pin_project;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tower::Service;

use crate::config::ConnectionLimits;

/// How connections are served: hyper's settings and the limits above them.
pub struct Settings {
    builder: auto::Builder<TokioExecutor>,
    limits: ConnectionLimits,
    /// Whether each request carries the caller's address ([`PeerAddr`]);
    /// off unless something reads it, so no request pays for it otherwise.
    peer_address: bool,
}

impl Settings {
    pub fn new(limits: &ConnectionLimits) -> Settings {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            // Runs while hyper waits for a head: from the end of one
            // exchange to the next head, so it is also the idle limit.
            .header_read_timeout(limits.keep_alive_timeout)
            .max_buf_size(limits.max_header_bytes)
            .max_headers(limits.max_headers);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(limits.h2_max_concurrent_streams)
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
        Settings {
            builder,
            limits: limits.clone(),
            peer_address: false,
        }
    }

    /// Puts the caller's address in every request's extensions.
    pub fn with_peer_address(mut self, on: bool) -> Settings {
        self.peer_address = on;
        self
    }
}

/// What a connection serves: the app (`crate::layers::App`), or the admin
/// routes.
pub trait ConnectionService:
    Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future: Send + 'static>
    + Clone
    + Send
    + 'static
{
}

impl<S> ConnectionService for S where
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

/// Serves one caller connection until it closes, fails, breaks a limit, or
/// `stop` finds it (a request in flight, stream included, is finished
/// first). The slot is released when it ends.
pub async fn serve<S: ConnectionService>(
    stream: TcpStream,
    app: S,
    settings: Arc<Settings>,
    stop: CancellationToken,
    slot: ConnectionSlot,
) {
    let _slot = slot;
    let _ = stream.set_nodelay(true);
    let limits = &settings.limits;
    let activity = Arc::new(Activity::new());
    let service = TowerToHyperService::new(PerConnection {
        app,
        activity: activity.clone(),
        peer: settings
            .peer_address
            .then(|| stream.peer_addr().ok())
            .flatten(),
    });
    let io = TokioIo::new(WriteTimeout::new(stream, limits.write_timeout));
    let mut connection = pin!(settings.builder.serve_connection(io, service));
    let mut watch = pin!(tokio::time::sleep(limits.header_read_timeout));
    let mut stopping = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "connection ended with an error");
                }
                return;
            }
            () = stop.cancelled(), if !stopping => {
                stopping = true;
                connection.as_mut().graceful_shutdown();
            }
            () = watch.as_mut() => {
                let now = Instant::now();
                let Some(idle_since) = activity.idle_since() else {
                    // Busy: look again once an idle spell could have ended.
                    watch.as_mut().reset(now + limits.keep_alive_timeout);
                    continue;
                };
                let limit = if activity.started() {
                    limits.keep_alive_timeout
                } else {
                    limits.header_read_timeout
                };
                let deadline = idle_since + limit;
                if deadline > now {
                    watch.as_mut().reset(deadline);
                } else if !activity.started() {
                    tracing::debug!("no request head within header_read_timeout; closing");
                    return;
                } else if !stopping {
                    stopping = true;
                    connection.as_mut().graceful_shutdown();
                    watch.as_mut().reset(now + limit);
                } else {
                    // Asked to close and still not closed: the peer holds
                    // it open.
                    return;
                }
            }
        }
    }
}

/// Caps the caller connections open at once, and counts them.
#[derive(Clone)]
pub struct ConnectionLimiter {
    slots: Arc<Semaphore>,
    open: Gauge,
}

impl ConnectionLimiter {
    pub fn new(max_connections: usize, open: Gauge) -> ConnectionLimiter {
        ConnectionLimiter {
            slots: Arc::new(Semaphore::new(max_connections)),
            open,
        }
    }

    /// A slot for one more connection, if one is free.
    pub fn try_take(&self) -> Option<ConnectionSlot> {
        let permit = self.slots.clone().try_acquire_owned().ok()?;
        self.open.inc();
        Some(ConnectionSlot {
            _permit: permit,
            open: self.open.clone(),
        })
    }
}

/// One connection's place under `max_connections`; freed on drop.
pub struct ConnectionSlot {
    _permit: OwnedSemaphorePermit,
    open: Gauge,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// What the connection's watcher knows of its requests: how many are in
/// flight, whether one ever started, and since when it has been idle.
struct Activity {
    /// The clock's origin for `idle_since_micros`.
    opened: Instant,
    in_flight: AtomicUsize,
    /// Microseconds after `opened` when the last request ended; `u64::MAX`
    /// before the first one started.
    idle_since_micros: AtomicU64,
}

const NEVER_STARTED: u64 = u64::MAX;

impl Activity {
    fn new() -> Activity {
        Activity {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since_micros: AtomicU64::new(NEVER_STARTED),
        }
    }

    fn started(&self) -> bool {
        self.idle_since_micros.load(Ordering::Relaxed) != NEVER_STARTED
    }

    /// When the connection became idle, or `None` while a request is in
    /// flight.
    fn idle_since(&self) -> Option<Instant> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        match self.idle_since_micros.load(Ordering::Relaxed) {
            NEVER_STARTED => Some(self.opened),
            micros => Some(self.opened + Duration::from_micros(micros)),
        }
    }

    fn begin(self: &Arc<Self>) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        if !self.started() {
            self.idle_since_micros.store(0, Ordering::Relaxed);
        }
        RequestGuard(self.clone())
    }
}

/// One request in flight on its connection, until its response body ends
/// or is dropped.
struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let activity = &self.0;
        let micros = u64::try_from(activity.opened.elapsed().as_micros()).unwrap_or(u64::MAX - 1);
        activity.idle_since_micros.store(micros, Ordering::Relaxed);
        activity.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The app as one connection sees it: hyper's request body handed on as
/// the app's, and every request counted in [`Activity`].
#[derive(Clone)]
struct PerConnection<S> {
    app: S,
    activity: Arc<Activity>,
    peer: Option<std::net::SocketAddr>,
}

/// The caller's TCP peer address, in every request's extensions when
/// [`Settings::with_peer_address`] asks for it (rate limits key on it when
/// no verified token names the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub std::net::SocketAddr);

impl<S: ConnectionService> Service<Request<Incoming>> for PerConnection<S> {
    type Response = Response<GuardedBody>;
    type Error = Infallible;
    type Future = Guarded<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.app.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Incoming>) -> Self::Future {
        let guard = self.activity.begin();
        let mut request = request.map(Body::new);
        if let Some(peer) = self.peer {
            request.extensions_mut().insert(PeerAddr(peer));
        }
        Guarded {
            inner: self.app.call(request),
            guard: Some(guard),
        }
    }
}

pin_project! {
    /// The app's future, holding its request's guard until the response
    /// body takes it.
    struct Guarded<F> {
        #[pin]
        inner: F,
        guard: Option<RequestGuard>,
    }
}

impl<F> Future for Guarded<F>
where
    F: Future<Output = Result<Response<Body>, Infallible>>,
{
    type Output = Result<Response<GuardedBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(response) = ready!(this.inner.poll(cx));
        let guard = this.guard.take();
        Poll::Ready(Ok(response.map(|inner| GuardedBody {
            inner,
            _guard: guard,
        })))
    }
}

pin_project! {
    /// A response body holding its request's guard.
    struct GuardedBody {
        #[pin]
        inner: Body,
        _guard: Option<RequestGuard>,
    }
}

impl http_body::Body for GuardedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project! {
    /// A socket whose writes fail once the peer has not taken any of them
    /// for `timeout` (nginx's `send_timeout`): a caller that stops reading
    /// cannot hold a connection, and a run, forever.
    pub struct WriteTimeout<IO> {
        #[pin]
        io: IO,
        timeout: Duration,
        // Armed when a write first waits; reset when a later one does.
        timer: Option<Pin<Box<Sleep>>>,
        waiting: bool,
    }
}

impl<IO> WriteTimeout<IO> {
    pub fn new(io: IO, timeout: Duration) -> Self {
        WriteTimeout {
            io,
            timeout,
            timer: None,
            waiting: false,
        }
    }
}

/// Polls the write timer of a write that is waiting, arming it when the
/// wait starts; an error once it fired.
fn waited_too_long<T>(
    timer: &mut Option<Pin<Box<Sleep>>>,
    waiting: &mut bool,
    timeout: Duration,
    cx: &mut Context<'_>,
) -> Poll<io::Result<T>> {
    if !*waiting {
        *waiting = true;
        let deadline = Instant::now() + timeout;
        match timer {
            Some(timer) => timer.as_mut().reset(deadline),
            None => *timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
    }
    let fired = timer
        .as_mut()
        .is_some_and(|timer| timer.as_mut().poll(cx).is_ready());
    if fired {
        return Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the caller took nothing written for write_timeout",
        )));
    }
    Poll::Pending
}

impl<IO: AsyncWrite> AsyncWrite for WriteTimeout<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        match this.io.poll_write(cx, buf) {
            Poll::Ready(result) => {
                *this.waiting = false;
                Poll::Ready(result)
            }
            Poll::Pending => waited_too_long(this.timer, this.waiting, *this.timeout, cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        match this.io.poll_write_vectored(cx, bufs) {
            Poll::Ready(result) => {
                *this.waiting = false;
                Poll::Ready(result)
            }
            Poll::Pending => waited_too_long(this.timer, this.waiting, *this.timeout, cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        match this.io.poll_flush(cx) {
            Poll::Ready(result) => {
                *this.waiting = false;
                Poll::Ready(result)
            }
            Poll::Pending => waited_too_long(this.timer, this.waiting, *this.timeout, cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}

impl<IO: AsyncRead> AsyncRead for WriteTimeout<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().io.poll_read(cx, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_write_the_peer_never_takes_times_out() {
        // A pipe with room for 16 bytes whose other end is never read.
        let (near, _far) = tokio::io::duplex(16);
        let mut io = WriteTimeout::new(near, Duration::from_millis(50));
        io.write_all(&[0; 16]).await.unwrap();
        let error = tokio::time::timeout(Duration::from_secs(10), io.write_all(&[0; 16]))
            .await
            .expect("the write timeout ends the wait")
            .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn writes_the_peer_takes_in_time_do_not_time_out() {
        let (near, mut far) = tokio::io::duplex(16);
        let mut io = WriteTimeout::new(near, Duration::from_secs(30));
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut far, &mut all)
                .await
                .unwrap();
            all.len()
        });
        io.write_all(&[1; 1000]).await.unwrap();
        io.shutdown().await.unwrap();
        drop(io);
        assert_eq!(reader.await.unwrap(), 1000);
    }

    #[test]
    fn activity_tracks_idle_spells() {
        let activity = Arc::new(Activity::new());
        assert!(!activity.started());
        assert_eq!(activity.idle_since(), Some(activity.opened));
        let first = activity.begin();
        let second = activity.begin();
        assert!(activity.started() && activity.idle_since().is_none());
        drop(first);
        assert!(activity.idle_since().is_none(), "one still in flight");
        drop(second);
        assert!(activity.idle_since().is_some_and(|t| t >= activity.opened));
    }

    #[test]
    fn the_limiter_refuses_beyond_its_slots_and_frees_them_on_drop() {
        let open = Gauge::default();
        let limiter = ConnectionLimiter::new(2, open.clone());
        let a = limiter.try_take().unwrap();
        let _b = limiter.try_take().unwrap();
        assert!(limiter.try_take().is_none());
        assert_eq!(open.get(), 2);
        drop(a);
        assert_eq!(open.get(), 1);
        assert!(limiter.try_take().is_some());
    }
}
