//! The SSE path: incremental delivery, byte identity, a host dying
//! mid-stream, the idle timeout, and a client going away.

use crate::common::*;

const STARTED: &str = "event: WorkflowStarted\ndata: {\"created_at\":1,\"event\":\"WorkflowStarted\",\"workflow_id\":\"story\",\"workflow_name\":\"Story\",\"session_id\":\"S-1\",\"run_id\":\"R-1\",\"nested_depth\":0}\n\n";
const PROGRESS: &str = "event: StepProgress\ndata: {\"created_at\":2,\"event\":\"StepProgress\",\"run_id\":\"R-1\",\"content\":\"caf\u{e9} \u{1F600}\"}\n\n";
const FUTURE: &str = "event: EventFromTheFuture\ndata: {\"created_at\":3,\"event\":\"EventFromTheFuture\",\"run_id\":\"R-1\",\"new_field\":[1,2,3]}\n\n";
const COMPLETED: &str = "event: WorkflowCompleted\ndata: {\"created_at\":4,\"event\":\"WorkflowCompleted\",\"run_id\":\"R-1\",\"content\":\"done\"}\n\n";

async fn start_stream(gw: &Gateway, id: &str) -> reqwest::Response {
    let r = client()
        .post(gw.url(&format!("/workflows/{id}/runs")))
        .form(&[("message", "tell me"), ("stream", "true")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r
}

#[tokio::test]
async fn events_are_delivered_as_the_host_emits_them() {
    let host = MockHost::start("h").await;
    let gw = Gateway::start(&workflow("story", &host.url, "story")).await;
    let stream = host.stream();
    let pending = tokio::spawn({
        let url = gw.url("/workflows/story/runs");
        async move {
            client()
                .post(url)
                .form(&[("message", "tell me")])
                .send()
                .await
                .unwrap()
        }
    });
    stream.send(STARTED).await;
    let mut r = pending.await.unwrap();
    assert_eq!(
        r.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    assert_eq!(r.headers()["cache-control"], "no-cache");
    assert_eq!(r.headers()["x-accel-buffering"], "no");
    // The host has not emitted event 2 yet: event 1 must already be here.
    assert_eq!(next_chunk(&mut r).await.unwrap(), STARTED.as_bytes());
    stream.send(PROGRESS).await;
    assert_eq!(next_chunk(&mut r).await.unwrap(), PROGRESS.as_bytes());
    stream.finish();
    assert!(next_chunk(&mut r).await.is_none());
}

#[tokio::test]
async fn bytes_pass_through_unchanged_including_unknown_events_and_split_chunks() {
    let host = MockHost::start("h").await;
    let gw = Gateway::start(&workflow("story", &host.url, "story")).await;
    let stream = host.stream();
    let feeder = tokio::spawn(async move {
        stream.send(STARTED).await;
        // One event split across three chunks, mid-line and mid-UTF-8 char.
        let progress = PROGRESS.as_bytes();
        let cut = PROGRESS.find('\u{e9}').unwrap() + 1;
        stream.send(progress[..10].to_vec()).await;
        stream.send(progress[10..cut].to_vec()).await;
        stream.send(progress[cut..].to_vec()).await;
        stream.send(format!(": a comment\n\n{FUTURE}")).await;
        stream.send(COMPLETED).await;
    });
    let r = start_stream(&gw, "story").await;
    let body = rest(r).await;
    feeder.await.unwrap();
    let expected = format!("{STARTED}{PROGRESS}: a comment\n\n{FUTURE}{COMPLETED}");
    assert_eq!(String::from_utf8(body).unwrap(), expected);
}

#[tokio::test]
async fn host_death_mid_stream_ends_with_one_workflow_error_event() {
    let host = MockHost::start("h").await;
    let gw = Gateway::start(&workflow("story", &host.url, "story")).await;
    let stream = host.stream();
    let pending = tokio::spawn({
        let url = gw.url("/workflows/story/runs");
        async move {
            client()
                .post(url)
                .form(&[("message", "x")])
                .send()
                .await
                .unwrap()
        }
    });
    stream.send(STARTED).await;
    let mut r = pending.await.unwrap();
    assert_eq!(next_chunk(&mut r).await.unwrap(), STARTED.as_bytes());
    stream.die().await;
    let tail = String::from_utf8(rest(r).await).unwrap();
    let mut lines = tail.lines();
    assert_eq!(lines.next(), Some("event: WorkflowError"));
    let data = json_of(
        lines
            .next()
            .unwrap()
            .strip_prefix("data: ")
            .unwrap()
            .as_bytes(),
    );
    assert_eq!(data["event"], "WorkflowError");
    assert_eq!(data["run_id"], "R-1");
    assert_eq!(data["session_id"], "S-1");
    assert_eq!(data["workflow_id"], "story");
    // Named by its workflow: the host's address is for the log only.
    assert_eq!(
        data["error"], "The host of workflow 'story' closed the connection",
        "{data}"
    );
    assert!(tail.ends_with("}\n\n"), "one complete event: {tail:?}");
    assert_eq!(tail.matches("event: ").count(), 1);
}

#[tokio::test]
async fn host_death_mid_event_closes_the_partial_event_first() {
    let host = MockHost::start("h").await;
    let gw = Gateway::start(&workflow("story", &host.url, "story")).await;
    let stream = host.stream();
    let pending = tokio::spawn({
        let url = gw.url("/workflows/story/runs");
        async move {
            client()
                .post(url)
                .form(&[("message", "x")])
                .send()
                .await
                .unwrap()
        }
    });
    stream.send(STARTED).await;
    let mut r = pending.await.unwrap();
    next_chunk(&mut r).await.unwrap();
    stream.send(&PROGRESS.as_bytes()[..30]).await;
    assert_eq!(
        next_chunk(&mut r).await.unwrap(),
        &PROGRESS.as_bytes()[..30]
    );
    stream.die().await;
    let tail = String::from_utf8(rest(r).await).unwrap();
    assert!(
        tail.starts_with("\n\nevent: WorkflowError\ndata: {"),
        "{tail:?}"
    );
    assert!(tail.ends_with("}\n\n"));
}

#[tokio::test]
async fn a_stalled_stream_ends_with_an_error_after_the_idle_timeout() {
    let host = MockHost::start("h").await;
    let toml = format!("{}timeout = 0.5\n", workflow("story", &host.url, "story"));
    let gw = Gateway::start(&toml).await;
    let stream = host.stream();
    stream.send(STARTED).await;
    let r = start_stream(&gw, "story").await;
    // The host never sends more and never closes.
    let body = String::from_utf8(rest(r).await).unwrap();
    assert!(body.starts_with(STARTED));
    let tail = &body[STARTED.len()..];
    assert!(tail.starts_with("event: WorkflowError\n"), "{tail:?}");
    assert!(
        tail.contains("The host of workflow 'story' did not answer within 0.5 seconds"),
        "{tail}"
    );
    assert!(!tail.contains("127.0.0.1"), "no host address: {tail}");
    // The gateway dropped the stalled upstream request.
    stream.upstream_dropped().await;
}

#[tokio::test]
async fn a_stream_that_keeps_flowing_outlives_the_idle_timeout() {
    let host = MockHost::start("h").await;
    let toml = format!("{}timeout = 0.3\n", workflow("story", &host.url, "story"));
    let gw = Gateway::start(&toml).await;
    let stream = host.stream();
    stream.send(STARTED).await;
    let mut r = start_stream(&gw, "story").await;
    next_chunk(&mut r).await.unwrap();
    // Ten events, each sent only after the previous one arrived: the whole
    // exchange may take longer than the timeout, but no single gap does.
    let started = std::time::Instant::now();
    let mut relayed = 0;
    while started.elapsed() < std::time::Duration::from_millis(900) || relayed < 10 {
        stream.send(PROGRESS).await;
        assert_eq!(next_chunk(&mut r).await.unwrap(), PROGRESS.as_bytes());
        relayed += 1;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    stream.send(COMPLETED).await;
    stream.finish();
    let body = String::from_utf8(rest(r).await).unwrap();
    assert_eq!(body, COMPLETED, "no error event once the host completed");
}

#[tokio::test]
async fn client_disconnect_drops_the_upstream_request() {
    let host = MockHost::start("h").await;
    let gw = Gateway::start(&workflow("story", &host.url, "story")).await;
    let stream = host.stream();
    stream.send(STARTED).await;
    let mut r = start_stream(&gw, "story").await;
    next_chunk(&mut r).await.unwrap();
    drop(r);
    // The gateway notices on its next write; the host keeps emitting until the
    // gateway's drop of the upstream request closes the host's side.
    let host_side = async { while stream.offer(PROGRESS).await {} };
    tokio::time::timeout(std::time::Duration::from_secs(10), host_side)
        .await
        .expect("upstream request still open 10 s after the client left");
}
