//! Body plumbing of the proxy path: the caller's request body, held so that a
//! connect failure can move the request to another replica, and the host's
//! non-event-stream response body, relayed with the idle timeout.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use futures::{Stream, StreamExt};

use super::run_ids::{FormFieldScanner, JsonIdScanner};
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
    /// `assign_run_id`, a urlencoded body that names no `run_id` gets
    /// `&run_id=<id>` appended, so the gateway knows the run's owner before
    /// the host answers.
    pub fn for_attempt(&self, assign_run_id: Option<Arc<str>>) -> reqwest::Body {
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
        match assign_run_id {
            None => reqwest::Body::wrap_stream(chunks),
            Some(run_id) => reqwest::Body::wrap_stream(append_run_id(chunks, run_id)),
        }
    }
}

/// Passes `chunks` through and, if no `run_id` field went by, appends one.
fn append_run_id(
    chunks: impl Stream<Item = Result<Bytes, axum::Error>> + Send + 'static,
    run_id: Arc<str>,
) -> impl Stream<Item = Result<Bytes, axum::Error>> + Send + 'static {
    struct Appending<S> {
        chunks: std::pin::Pin<Box<S>>,
        scanner: FormFieldScanner,
        empty: bool,
        done: bool,
        run_id: Arc<str>,
    }
    let start = Appending {
        chunks: Box::pin(chunks),
        scanner: FormFieldScanner::default(),
        empty: true,
        done: false,
        run_id,
    };
    futures::stream::unfold(start, |mut s| async move {
        if s.done {
            return None;
        }
        match s.chunks.next().await {
            Some(Ok(bytes)) => {
                s.scanner.feed(&bytes);
                s.empty &= bytes.is_empty();
                Some((Ok(bytes), s))
            }
            Some(Err(e)) => Some((Err(e), s)),
            None => {
                s.done = true;
                if s.scanner.found() {
                    return None;
                }
                let separator = if s.empty { "" } else { "&" };
                let field = format!("{separator}run_id={}", s.run_id);
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
    body: impl Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
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
            Ok(Some(Err(e))) => {
                let error = replica.client.classify(&e, idle);
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

    async fn appended(parts: &[&'static str]) -> String {
        let chunks = futures::stream::iter(
            parts
                .iter()
                .map(|p| Ok::<_, axum::Error>(Bytes::from_static(p.as_bytes())))
                .collect::<Vec<_>>(),
        );
        let out: Vec<_> = append_run_id(chunks, Arc::from("RID")).collect().await;
        out.into_iter()
            .map(|c| String::from_utf8(c.unwrap().to_vec()).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn run_id_is_appended_only_when_missing() {
        assert_eq!(
            appended(&["message=hi", "&stream=true"]).await,
            "message=hi&stream=true&run_id=RID"
        );
        assert_eq!(
            appended(&["message=hi&run", "_id=mine"]).await,
            "message=hi&run_id=mine"
        );
        assert_eq!(appended(&[]).await, "run_id=RID");
    }
}
