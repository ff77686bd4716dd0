//! Two-phase draining of the real binary on SIGTERM: `/ready` turns 503 at
//! once, an open stream completes intact, the process exits 0; a stream still
//! open at the drain deadline ends with an error event and its run is
//! cancelled on the host.

use std::time::Duration;

use crate::common::*;

const STARTED: &str = "event: WorkflowStarted\ndata: {\"event\":\"WorkflowStarted\",\"workflow_id\":\"story\",\"session_id\":\"S-9\",\"run_id\":\"R-9\"}\n\n";
const STEP: &str = "event: StepProgress\ndata: {\"event\":\"StepProgress\",\"run_id\":\"R-9\"}\n\n";
const DONE: &str =
    "event: WorkflowCompleted\ndata: {\"event\":\"WorkflowCompleted\",\"run_id\":\"R-9\"}\n\n";

async fn ready_status(gw: &GatewayProcess) -> Option<u16> {
    client()
        .get(gw.url("/ready"))
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

/// The binary in front of `host`'s workflow `story`, with these drain
/// settings.
fn gateway(host: &MockHost, grace: &str, deadline: &str) -> GatewayProcess {
    let toml = format!(
        "drain_grace = {grace}\ndrain_timeout = {deadline}\n{}",
        workflow("story", &host.url, "story")
    );
    GatewayProcess::spawn(&toml, &[])
}

/// A streamed run through `gw`, open once its first event arrived.
async fn open_stream(gw: &GatewayProcess, host: &MockHost) -> (StreamControl, reqwest::Response) {
    let stream = host.stream();
    stream.send(STARTED).await;
    let mut r = client()
        .post(gw.url("/workflows/story/runs"))
        .form(&[("message", "go")])
        .send()
        .await
        .unwrap();
    assert_eq!(next_chunk(&mut r).await.unwrap(), STARTED.as_bytes());
    (stream, r)
}

#[tokio::test]
async fn sigterm_drains_an_open_stream_then_exits_zero() {
    let host = MockHost::start("h").await;
    let mut gw = gateway(&host, "0.5", "60");
    assert_eq!(ready_status(&gw).await, Some(200));

    let (stream, mut r) = open_stream(&gw, &host).await;

    gw.terminate();
    eventually("/ready answers 503 while draining", || async {
        ready_status(&gw).await == Some(503)
    })
    .await;

    // The stream keeps flowing through the whole drain.
    for _ in 0..5 {
        stream.send(STEP).await;
        assert_eq!(next_chunk(&mut r).await.unwrap(), STEP.as_bytes());
    }
    stream.send(DONE).await;
    stream.finish();
    assert_eq!(String::from_utf8(rest(r).await).unwrap(), DONE);
    assert_eq!(gw.exit_code(Duration::from_secs(20)).await, Some(0));
    assert!(
        host.recorded()
            .iter()
            .all(|r| !r.path_and_query.contains("/cancel"))
    );
}

#[tokio::test]
async fn a_stream_open_at_the_drain_deadline_is_ended_and_its_run_cancelled() {
    let host = MockHost::start("h").await;
    let toml = format!(
        "drain_grace = 0.1\ndrain_timeout = 0.5\n{}",
        workflow("story", &host.url, "story")
    );
    let mut gw = GatewayProcess::spawn(&toml, &[]);
    let stream = host.stream();
    stream.send(STARTED).await;
    let mut r = client()
        .post(gw.url("/workflows/story/runs"))
        .bearer_auth("caller-token")
        .form(&[("message", "go")])
        .send()
        .await
        .unwrap();
    assert_eq!(next_chunk(&mut r).await.unwrap(), STARTED.as_bytes());

    gw.terminate();
    let tail = String::from_utf8(rest(r).await).unwrap();
    assert!(
        tail.starts_with("event: WorkflowError\ndata: {"),
        "{tail:?}"
    );
    let data = json_of(
        tail.lines()
            .nth(1)
            .unwrap()
            .strip_prefix("data: ")
            .unwrap()
            .as_bytes(),
    );
    assert_eq!(data["run_id"], "R-9");
    assert!(data["error"].as_str().unwrap().contains("shutting down"));
    assert_eq!(gw.exit_code(Duration::from_secs(20)).await, Some(0));

    let cancel = host
        .recorded()
        .into_iter()
        .find(|r| r.path_and_query.contains("/cancel"))
        .expect("the run was cancelled on the host before exit");
    assert_eq!(cancel.method, "POST");
    assert_eq!(
        cancel.path_and_query,
        "/workflows/story/runs/R-9/cancel?session_id=S-9"
    );
    assert_eq!(cancel.headers["authorization"], "Bearer caller-token");
    stream.upstream_dropped().await;
}

#[tokio::test]
async fn ctrl_c_with_nothing_in_flight_exits_at_once() {
    let host = MockHost::start("h").await;
    // A grace the test could not wait out: only skipping it passes.
    let mut gw = gateway(&host, "3600", "3600");
    assert_eq!(ready_status(&gw).await, Some(200));
    gw.interrupt();
    assert_eq!(gw.exit_code(Duration::from_secs(60)).await, Some(0));
}

#[tokio::test]
async fn a_second_signal_ends_the_drain_at_once_and_exits_non_zero() {
    let host = MockHost::start("h").await;
    let mut gw = gateway(&host, "3600", "3600");
    let (_stream, r) = open_stream(&gw, &host).await;
    // A stream is in flight: Ctrl-C drains, and /ready says so.
    gw.interrupt();
    let gw_ref = &gw;
    eventually("/ready answers 503 while draining", || async move {
        ready_status(gw_ref).await == Some(503)
    })
    .await;
    gw.terminate();
    let tail = String::from_utf8(rest(r).await).unwrap();
    assert!(
        tail.starts_with("event: WorkflowError\ndata: {"),
        "{tail:?}"
    );
    assert_ne!(gw.exit_code(Duration::from_secs(60)).await, Some(0));
    let cancel = host
        .recorded()
        .into_iter()
        .find(|r| r.path_and_query.contains("/cancel"));
    assert!(cancel.is_some(), "the run was cancelled on its host");
}
