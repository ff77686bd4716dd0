//! Body plumbing of the proxy path: the caller's request body, held so that a
//! connect failure can move the request to another replica, and the host's
//! non-event-stream response body, relayed with the idle timeout.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use futures::{Stream, StreamExt};

use super::run_ids::{FormScanner, JsonIdScanner};
use crate::client::ClientError;
use crate::state::SharedState;
use crate::upstream::replica::InFlight;

/// The caller's body, not yet handed to any replica. The host's client
/// polls a request body only once the connection is up, so after a connect
/// failure the body is still here and the request can go elsewhere.
#[derive(Clone)]
pub struct HeldBody(Arc<Mutex<Option<Body>>>);

impl HeldBody {
    pub fn new(body: Body) -> Self {
        HeldBody(Arc::new(Mutex::new(Some(body))))
    }

    /// Whether no replica has started reading the body.
    pub fn untouched(&self) -> bool {
        self.0
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
    ) -> reqwest::Body {
        let slot = self.0.clone();
        let taken = futures::stream::once(async move {
            slot.lock().unwrap_or_else(PoisonError::into_inner).take()
        });
        let chunks = taken.flat_map(|body| match body {
            Some(body) => body.into_data_stream().left_stream(),
            None => futures::stream::iter([Err(axum::Error::new(
                "request body already sent to another replica",
            ))])
            .right_stream(),
        });
        match form {
            None => reqwest::Body::wrap_stream(chunks),
            Some(facts) => reqwest::Body::wrap_stream(watch_form(
                chunks,
                facts.clone(),
                assign_run_id,
                declared_len,
            )),
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

/// Passes `chunks` through, records what they say in `facts` and, with
/// `assign_run_id`, appends a `run_id` field if none went by.
fn watch_form(
    chunks: impl Stream<Item = Result<Bytes, axum::Error>> + Send + 'static,
    facts: Arc<FormFacts>,
    assign_run_id: Option<Arc<str>>,
    declared_len: Option<u64>,
) -> impl Stream<Item = Result<Bytes, axum::Error>> + Send + 'static {
    struct Watching<S> {
        chunks: std::pin::Pin<Box<S>>,
        scanner: FormScanner,
        seen: u64,
        declared_len: Option<u64>,
        done: bool,
        facts: Arc<FormFacts>,
        assign_run_id: Option<Arc<str>>,
    }
    impl<S> Watching<S> {
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
    let start = Watching {
        chunks: Box::pin(chunks),
        scanner: FormScanner::default(),
        seen: 0,
        declared_len,
        done: false,
        facts,
        assign_run_id,
    };
    futures::stream::unfold(start, |mut s| async move {
        if s.done {
            return None;
        }
        match s.chunks.next().await {
            Some(Ok(bytes)) => {
                s.scanner.feed(&bytes);
                s.seen += bytes.len() as u64;
                if s.declared_len == Some(s.seen) {
                    s.settle();
                }
                Some((Ok(bytes), s))
            }
            Some(Err(e)) => Some((Err(e), s)),
            None => {
                s.done = true;
                s.settle();
                let run_id = s.assign_run_id.take().filter(|_| !s.scanner.has_run_id())?;
                let separator = if s.seen == 0 { "" } else { "&" };
                let field = format!("{separator}run_id={run_id}");
                Some((Ok(Bytes::from(field)), s))
            }
        }
    })
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
                .upstreams
                .owners
                .record(&self.workflow, run_id, in_flight.replica());
        }
    }
}

/// Streams a non-event-stream body, failing when no chunk arrives within
/// `idle` (which aborts the caller's connection: the only honest signal
/// left once the status line is out). The in-flight slot is held until the
/// body ends.
pub fn plain(
    body: impl Stream<Item = Result<Bytes, ClientError>> + Send + 'static,
    idle: Duration,
    in_flight: InFlight,
    learning: Option<OwnerLearning>,
) -> impl Stream<Item = Result<Bytes, ClientError>> + Send + 'static {
    let start = Some((Box::pin(body), in_flight, learning));
    futures::stream::unfold(start, move |state| async move {
        let (mut body, in_flight, mut learning) = state?;
        let replica = in_flight.replica();
        match tokio::time::timeout(idle, body.next()).await {
            Ok(Some(Ok(chunk))) => {
                if let Some(learning) = learning.as_mut() {
                    learning.feed(&chunk, &in_flight);
                }
                Some((Ok(chunk), Some((body, in_flight, learning))))
            }
            Ok(None) => None,
            Ok(Some(Err(error))) => {
                replica.record_failure(&error.to_string());
                Some((Err(error), None))
            }
            Err(_) => Some((Err(replica.client.idle_timeout_error(idle)), None)),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn watched(parts: &[&'static str]) -> (String, bool) {
        let chunks = futures::stream::iter(
            parts
                .iter()
                .map(|p| Ok::<_, axum::Error>(Bytes::from_static(p.as_bytes())))
                .collect::<Vec<_>>(),
        );
        let facts = Arc::new(FormFacts::default());
        assert!(!facts.foreground(), "unknown until the body is complete");
        let out: Vec<_> = watch_form(chunks, facts.clone(), Some(Arc::from("RID")), None)
            .collect()
            .await;
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
        let mut watched = Box::pin(watch_form(chunks, facts.clone(), None, Some(10)));
        watched.next().await.unwrap().unwrap();
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
}
