//! Body plumbing of the proxy path: the caller's request body, held so that a
//! connect failure can move the request to another replica (and its
//! failures told apart from the host's), and the host's non-event-stream
//! response body, relayed with the idle timeout.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use tokio::time::{Instant, Sleep, sleep_until};

use super::run_ids::{FormScanner, JsonIdScanner};
use crate::client::ClientError;
use crate::error::UpstreamError;
use crate::state::SharedState;
use crate::upstream::replica::InFlight;

/// The caller's body, not yet handed to any replica. The host's client
/// polls a request body only once the connection is up, so after a connect
/// failure the body is still here and the request can go elsewhere.
#[derive(Clone)]
pub struct HeldBody {
    slot: Arc<Mutex<Option<Body>>>,
    /// The body's size as the caller's framing told it, known before it is
    /// read, so the host is sent a `Content-Length` rather than chunks.
    size: SizeHint,
}

impl HeldBody {
    pub fn new(body: Body) -> Self {
        HeldBody {
            size: body.size_hint(),
            slot: Arc::new(Mutex::new(Some(body))),
        }
    }

    /// Whether no replica has started reading the body.
    pub fn untouched(&self) -> bool {
        self.slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// A request body that takes the caller's body on first read. With
    /// `form`, a urlencoded body is watched as it streams (see [`FormFacts`])
    /// and, with `assign_run_id`, gets `&run_id=<id>` appended when it names
    /// none, so the gateway knows the run's owner before the host answers.
    /// `declared_len` is the body's `Content-Length`, if it keeps one: the
    /// host's client stops reading at that length without asking for the
    /// end, so the facts are settled there.
    pub fn for_attempt(
        &self,
        form: Option<&Arc<FormFacts>>,
        assign_run_id: Option<Arc<str>>,
        declared_len: Option<u64>,
    ) -> AttemptBody {
        // An appended field changes the length: then it is unknown.
        let size = match assign_run_id {
            Some(_) => SizeHint::default(),
            None => self.size,
        };
        AttemptBody {
            source: Source::Held(self.slot.clone()),
            size,
            watch: form.map(|facts| FormWatch {
                scanner: FormScanner::default(),
                seen: 0,
                declared_len,
                ended: false,
                facts: facts.clone(),
                assign_run_id,
            }),
        }
    }
}

/// One attempt's request body: one struct, polled in place, rather than a
/// chain of stream adapters (each of which boxed, per request).
pub struct AttemptBody {
    source: Source,
    /// What the body will add up to, as far as known.
    size: SizeHint,
    watch: Option<FormWatch>,
}

enum Source {
    /// Not read yet: the caller's body is still in the held slot.
    Held(Arc<Mutex<Option<Body>>>),
    Reading(Body),
    /// A body the gateway buffered whole (fan-out calls).
    Full(Bytes),
    Ended,
}

impl AttemptBody {
    /// A body already in memory.
    pub fn full(bytes: Bytes) -> Self {
        AttemptBody {
            size: SizeHint::with_exact(bytes.len() as u64),
            source: Source::Full(bytes),
            watch: None,
        }
    }

    /// No body.
    pub fn empty() -> Self {
        AttemptBody {
            source: Source::Ended,
            size: SizeHint::with_exact(0),
            watch: None,
        }
    }

    /// The next chunk, as a stream would give it.
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, CallerBodyError>>> {
        loop {
            let body = match &mut self.source {
                Source::Held(slot) => {
                    let taken = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
                    let Some(body) = taken else {
                        self.source = Source::Ended;
                        return Poll::Ready(Some(Err(CallerBodyError::Taken)));
                    };
                    self.source = Source::Reading(body);
                    continue;
                }
                Source::Reading(body) => body,
                Source::Full(bytes) => {
                    let bytes = std::mem::take(bytes);
                    self.source = Source::Ended;
                    return Poll::Ready(Some(Ok(bytes)));
                }
                Source::Ended => {
                    return Poll::Ready(self.watch.as_mut().and_then(FormWatch::end).map(Ok));
                }
            };
            match ready!(http_body::Body::poll_frame(Pin::new(body), cx)) {
                Some(Ok(frame)) => {
                    // Trailers are not forwarded (AgentOS reads none).
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    if let Some(watch) = &mut self.watch {
                        watch.feed(&data);
                    }
                    return Poll::Ready(Some(Ok(data)));
                }
                Some(Err(error)) => {
                    self.source = Source::Ended;
                    return Poll::Ready(Some(Err(CallerBodyError::of(&error))));
                }
                None => self.source = Source::Ended,
            }
        }
    }
}

impl http_body::Body for AttemptBody {
    type Data = Bytes;
    type Error = CallerBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, CallerBodyError>>> {
        self.get_mut()
            .poll_chunk(cx)
            .map(|chunk| chunk.map(|chunk| chunk.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.source, Source::Ended) && self.watch.as_ref().is_none_or(|w| w.ended)
    }

    fn size_hint(&self) -> SizeHint {
        self.size
    }
}

/// Why the caller's request body failed while it was forwarded: the
/// caller's fault, never counted against the host.
#[derive(Debug, thiserror::Error)]
pub enum CallerBodyError {
    /// Over `server.max_body_bytes`, counted as it arrived.
    #[error("request body is too large")]
    TooLarge,
    /// The caller closed the connection before the body ended.
    #[error("the caller left before its request body ended")]
    HungUp,
    /// The body's framing was broken (a bad chunk size, a bad trailer).
    #[error("malformed request body: {0}")]
    Malformed(String),
    /// Another attempt already took the body; a bug, should it happen.
    #[error("request body already sent to another replica")]
    Taken,
}

impl CallerBodyError {
    /// Classifies a failure of the caller's body as the server read it.
    pub fn of(error: &axum::Error) -> CallerBodyError {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
        let mut reason = error.to_string();
        while let Some(e) = source {
            if e.is::<http_body_util::LengthLimitError>() {
                return CallerBodyError::TooLarge;
            }
            if let Some(hyper) = e.downcast_ref::<hyper::Error>()
                && hyper.is_incomplete_message()
            {
                return CallerBodyError::HungUp;
            }
            reason = e.to_string();
            source = e.source();
        }
        CallerBodyError::Malformed(reason)
    }
}

impl From<&CallerBodyError> for UpstreamError {
    fn from(error: &CallerBodyError) -> UpstreamError {
        match error {
            CallerBodyError::TooLarge => UpstreamError::BodyTooLarge,
            CallerBodyError::HungUp => UpstreamError::RequestBody {
                reason: error.to_string(),
                hung_up: true,
            },
            CallerBodyError::Malformed(_) | CallerBodyError::Taken => UpstreamError::RequestBody {
                reason: error.to_string(),
                hung_up: false,
            },
        }
    }
}

/// What a urlencoded run request said, known once its body was sent. The
/// gateway cancels a run on its own (client gone, stream cut) only when it
/// knows the run is a foreground one: a background run must outlive its
/// client, as AgentOS keeps it running.
#[derive(Debug, Default)]
pub struct FormFacts {
    complete: AtomicBool,
    background: AtomicBool,
}

impl FormFacts {
    /// The whole body went by and it did not ask for a background run.
    pub fn foreground(&self) -> bool {
        self.complete.load(Ordering::Acquire) && !self.background.load(Ordering::Acquire)
    }
}

/// Watches a urlencoded body go by: records what it says in `facts` and,
/// with `assign_run_id`, appends a `run_id` field at the end if none went by.
struct FormWatch {
    scanner: FormScanner,
    seen: u64,
    declared_len: Option<u64>,
    ended: bool,
    facts: Arc<FormFacts>,
    assign_run_id: Option<Arc<str>>,
}

impl FormWatch {
    fn feed(&mut self, chunk: &[u8]) {
        self.scanner.feed(chunk);
        self.seen += chunk.len() as u64;
        if self.declared_len == Some(self.seen) {
            self.settle();
        }
    }

    /// At the body's end: the field to append, if any.
    fn end(&mut self) -> Option<Bytes> {
        if std::mem::replace(&mut self.ended, true) {
            return None;
        }
        self.settle();
        let run_id = self
            .assign_run_id
            .take()
            .filter(|_| !self.scanner.has_run_id())?;
        let separator = if self.seen == 0 { "" } else { "&" };
        Some(Bytes::from(format!("{separator}run_id={run_id}")))
    }

    fn settle(&mut self) {
        if self.facts.complete.load(Ordering::Acquire) {
            return;
        }
        self.scanner.finish();
        let background = self.scanner.background();
        self.facts.background.store(background, Ordering::Release);
        self.facts.complete.store(true, Ordering::Release);
    }
}

/// What a plain response body learns on the way: the run's ids from a JSON
/// answer, recorded as owned by the replica that answered.
pub struct OwnerLearning {
    pub state: SharedState,
    pub workflow: String,
    pub scanner: JsonIdScanner,
}

impl OwnerLearning {
    fn feed(&mut self, chunk: &[u8], in_flight: &InFlight) {
        if self.scanner.ids().run_id.is_some() {
            return;
        }
        self.scanner.feed(chunk);
        if let Some(run_id) = &self.scanner.ids().run_id {
            self.state
                .owners
                .record(&self.workflow, run_id, in_flight.replica());
        }
    }
}

/// A host's non-event-stream response body on its way to the caller,
/// failing when no chunk arrives within `idle` (which aborts the caller's
/// connection: the only honest signal left once the status line is out).
/// The in-flight slot is held until the body ends.
///
/// A body of its own rather than a stream under `tokio::time::timeout`:
/// most answers are already in the read buffer when first polled, and a
/// timeout per chunk read the clock and built a timer for each of them.
/// Here the timer is armed only when the host makes the caller wait, and
/// the end of a sized body is reported without another poll.
pub struct PlainBody<B> {
    host: B,
    idle: Duration,
    /// Armed when a wait starts, reset for each later wait.
    timer: Option<Pin<Box<Sleep>>>,
    waiting: bool,
    /// Released when the body ends.
    in_flight: Option<InFlight>,
    learning: Option<OwnerLearning>,
}

impl<B> PlainBody<B> {
    pub fn new(
        host: B,
        idle: Duration,
        in_flight: InFlight,
        learning: Option<OwnerLearning>,
    ) -> Self {
        PlainBody {
            host,
            idle,
            timer: None,
            waiting: false,
            in_flight: Some(in_flight),
            learning,
        }
    }

    /// Ends the body, with `error` if any.
    fn end(
        &mut self,
        error: Option<ClientError>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientError>>> {
        self.in_flight = None;
        Poll::Ready(error.map(Err))
    }

    /// Polls the idle timer, arming it if this is the start of a wait.
    fn timed_out(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.waiting {
            // A wait starts: the host has `idle` from now.
            let deadline = Instant::now() + self.idle;
            match &mut self.timer {
                Some(timer) => timer.as_mut().reset(deadline),
                None => self.timer = Some(Box::pin(sleep_until(deadline))),
            }
            self.waiting = true;
        }
        (self.timer.as_mut()).is_some_and(|timer| timer.as_mut().poll(cx).is_ready())
    }
}

impl<B> http_body::Body for PlainBody<B>
where
    B: http_body::Body<Data = Bytes, Error = ClientError> + Unpin,
{
    type Data = Bytes;
    type Error = ClientError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientError>>> {
        let this = self.get_mut();
        loop {
            let Some(in_flight) = &this.in_flight else {
                return Poll::Ready(None);
            };
            match Pin::new(&mut this.host).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    this.waiting = false;
                    // Trailers are not relayed (HTTP/1 hosts send none).
                    let Ok(chunk) = frame.into_data() else {
                        continue;
                    };
                    if let Some(learning) = this.learning.as_mut() {
                        learning.feed(&chunk, in_flight);
                    }
                    if this.host.is_end_stream() {
                        this.in_flight = None;
                    }
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                Poll::Ready(Some(Err(error))) => {
                    in_flight.replica().record_failure(&error.diagnostic());
                    return this.end(Some(error));
                }
                Poll::Ready(None) => return this.end(None),
                Poll::Pending => {
                    if !this.timed_out(cx) {
                        return Poll::Pending;
                    }
                    let idle = this.idle;
                    let error = (this.in_flight.as_ref())
                        .map(|in_flight| in_flight.replica().client.idle_timeout_error(idle));
                    return this.end(error);
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.in_flight.is_none() || self.host.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.host.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    /// The body one attempt sends for a caller body of `parts`, and whether
    /// the run was then known to be a foreground one.
    /// Every chunk an attempt gives, as a stream would give them.
    async fn sent_by(attempt: AttemptBody) -> Vec<Result<Bytes, CallerBodyError>> {
        http_body_util::BodyDataStream::new(attempt).collect().await
    }

    async fn watched(parts: &[&'static str]) -> (String, bool) {
        let chunks = futures::stream::iter(
            parts
                .iter()
                .map(|p| Ok::<_, axum::Error>(Bytes::from_static(p.as_bytes())))
                .collect::<Vec<_>>(),
        );
        let facts = Arc::new(FormFacts::default());
        assert!(!facts.foreground(), "unknown until the body is complete");
        let held = HeldBody::new(Body::from_stream(chunks));
        let attempt = held.for_attempt(Some(&facts), Some(Arc::from("RID")), None);
        let out = sent_by(attempt).await;
        let body = out
            .into_iter()
            .map(|c| String::from_utf8(c.unwrap().to_vec()).unwrap())
            .collect();
        (body, facts.foreground())
    }

    #[tokio::test]
    async fn facts_settle_at_the_declared_length_without_the_end() {
        let facts = Arc::new(FormFacts::default());
        let chunks =
            futures::stream::iter([Ok::<_, axum::Error>(Bytes::from_static(b"message=hi"))])
                .chain(futures::stream::pending());
        let held = HeldBody::new(Body::from_stream(chunks));
        let attempt = held.for_attempt(Some(&facts), None, Some(10));
        let mut attempt = http_body_util::BodyDataStream::new(attempt);
        attempt.next().await.unwrap().unwrap();
        assert!(facts.foreground());
    }

    #[tokio::test]
    async fn run_id_is_appended_only_when_missing_and_background_is_noticed() {
        assert_eq!(
            watched(&["message=hi", "&stream=true"]).await,
            ("message=hi&stream=true&run_id=RID".into(), true)
        );
        assert_eq!(
            watched(&["message=hi&run", "_id=mine"]).await,
            ("message=hi&run_id=mine".into(), true)
        );
        assert_eq!(watched(&[]).await, ("run_id=RID".into(), true));
        assert_eq!(
            watched(&["message=hi&backgr", "ound=true"]).await,
            ("message=hi&background=true&run_id=RID".into(), false)
        );
    }

    #[tokio::test]
    async fn a_body_is_sent_by_one_attempt_only() {
        let held = HeldBody::new(Body::from("message=hi"));
        let first = held.for_attempt(None, None, None);
        let second = held.for_attempt(None, None, None);
        assert!(held.untouched(), "nothing is taken until an attempt reads");
        assert_eq!(
            http_body::Body::size_hint(&first).exact(),
            Some(10),
            "the caller's length is known before the body is read"
        );
        let sent = sent_by(first).await;
        assert_eq!(sent.len(), 1);
        assert!(!held.untouched());
        assert!(matches!(
            sent_by(second).await.as_slice(),
            [Err(CallerBodyError::Taken)]
        ));
    }

    fn replica() -> Arc<crate::upstream::replica::Replica> {
        let url = url::Url::parse("http://127.0.0.1:9").unwrap();
        let policy = crate::config::EjectionPolicy {
            consecutive_failures: 5,
            base: Duration::from_secs(1),
            max: Duration::from_secs(1),
        };
        crate::upstream::replica::Replica::for_tests(&url, None, policy)
    }

    /// A plain body fed through the returned sender, with a 100 ms idle
    /// timeout.
    fn plain_body(
        replica: &Arc<crate::upstream::replica::Replica>,
    ) -> (tokio::sync::mpsc::Sender<Bytes>, PlainBody<TestBody>) {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        let chunks = tokio_stream_of(rx).map(to_frame as fn(_) -> _);
        let host = http_body_util::StreamBody::new(chunks);
        let body = PlainBody::new(
            host,
            Duration::from_millis(100),
            replica.begin_unbounded(),
            None,
        );
        (tx, body)
    }

    fn to_frame(chunk: Result<Bytes, ClientError>) -> Result<Frame<Bytes>, ClientError> {
        chunk.map(Frame::data)
    }

    type TestBody = http_body_util::StreamBody<
        futures::stream::Map<
            futures::stream::BoxStream<'static, Result<Bytes, ClientError>>,
            fn(Result<Bytes, ClientError>) -> Result<Frame<Bytes>, ClientError>,
        >,
    >;

    fn tokio_stream_of(
        mut rx: tokio::sync::mpsc::Receiver<Bytes>,
    ) -> futures::stream::BoxStream<'static, Result<Bytes, ClientError>> {
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|c| c.map(Ok))).boxed()
    }

    #[tokio::test]
    async fn a_plain_body_relays_chunks_across_waits_and_releases_its_slot_at_the_end() {
        let replica = replica();
        let (tx, body) = plain_body(&replica);
        let mut frames = http_body_util::BodyStream::new(body);
        assert_eq!(replica.in_flight(), 1);
        tx.send(Bytes::from_static(b"a")).await.unwrap();
        let a = frames.next().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(a, "a");
        // A wait (the timer is armed), then a chunk within the timeout.
        let next = tokio::spawn(async move {
            let b = frames.next().await.unwrap().unwrap().into_data().unwrap();
            (b, frames)
        });
        tokio::task::yield_now().await;
        tx.send(Bytes::from_static(b"b")).await.unwrap();
        let (b, mut frames) = next.await.unwrap();
        assert_eq!(b, "b");
        drop(tx);
        assert!(frames.next().await.is_none());
        assert_eq!(replica.in_flight(), 0, "the slot is released at the end");
    }

    #[tokio::test]
    async fn a_plain_body_that_stalls_fails_after_the_idle_timeout() {
        let replica = replica();
        let (tx, body) = plain_body(&replica);
        let mut frames = http_body_util::BodyStream::new(body);
        tx.send(Bytes::from_static(b"a")).await.unwrap();
        assert!(frames.next().await.unwrap().is_ok());
        // Bounded, so a missing timeout fails instead of hanging the suite.
        let error = tokio::time::timeout(Duration::from_secs(10), frames.next())
            .await
            .expect("the idle timeout ends the body")
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(
                error,
                ClientError::RemoteServerUnavailable {
                    phase: crate::client::UnavailablePhase::IdleTimeout { .. },
                    ..
                }
            ),
            "{error:?}"
        );
        assert_eq!(replica.in_flight(), 0);
        assert!(frames.next().await.is_none(), "nothing after the error");
        drop(tx);
    }
}
