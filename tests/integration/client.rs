//! The `RemoteWorkflow` client library against in-process mock AgentOS hosts
//! (and the gateway): the form agno sends, typed and raw streams, unknown
//! events kept, cancel and status errors surfaced, the config cache's TTL,
//! refresh and coalescing counted at the host, and unreachable hosts.
//! It lives in the gateway crate, not in agentos-client, because its mock
//! hosts and the in-process gateway are the gateway's test harness.

use std::time::Duration;

use crate::common::*;
use agentos_gateway::client::{
    ClientError, Media, RemoteWorkflow, RunStatus, UnavailablePhase, WorkflowEvent,
};
use futures::StreamExt;
use serde_json::{Value, json};

/// The form fields of a recorded request body, in order.
fn form(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

fn field(form: &[(String, String)], name: &str) -> Option<String> {
    form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

/// One AgentOS SSE frame for `event` with extra JSON fields.
fn frame(event: &str, fields: Value) -> String {
    let mut data =
        json!({"event": event, "run_id": "r1", "session_id": "s1", "workflow_id": "echo"});
    if let (Some(data), Value::Object(fields)) = (data.as_object_mut(), fields) {
        data.extend(fields);
    }
    format!("event: {event}\ndata: {data}\n\n")
}

/// Collects a stream, failing the test after 10 s (a hang guard).
async fn collect<S: futures::Stream + Unpin>(stream: S) -> Vec<S::Item> {
    tokio::time::timeout(Duration::from_secs(10), stream.collect())
        .await
        .expect("stream did not end within 10 s")
}

#[tokio::test]
async fn a_run_sends_agnos_form_and_returns_the_typed_output() {
    let host = MockHost::start("h").await;
    host.respond_next(
        200,
        json!({"run_id": "R-fixed", "session_id": "S1", "workflow_id": "echo",
               "content": "HELLO!", "content_type": "str", "status": "COMPLETED",
               "step_results": [{"step_name": "upper"}], "brand_new": {"kept": true}}),
    );
    let wf = RemoteWorkflow::new(&host.url, "echo").unwrap();
    let out = wf
        .arun("hello")
        .session_id("S1")
        .user_id("U1")
        .run_id("R-fixed")
        .session_state(json!({"a": 1}))
        .additional_data(json!({"k": "v"}))
        .images([Media::from_url("http://img/1.png")])
        .files([Media::from_url("http://f/a.txt")])
        .stream_events(true)
        .field("custom_flag", true)
        .auth_token("tok-abc")
        .await
        .unwrap();

    assert_eq!(out.run_id.as_deref(), Some("R-fixed"));
    assert_eq!(out.content_str(), Some("HELLO!"));
    assert_eq!(out.status, Some(RunStatus::Completed));
    assert_eq!(out.step_results.len(), 1);
    assert_eq!(out.extra["brand_new"], json!({"kept": true}));

    let sent = host.last();
    assert_eq!(
        (sent.method.as_str(), sent.path_and_query.as_str()),
        ("POST", "/workflows/echo/runs")
    );
    assert_eq!(sent.headers["authorization"], "Bearer tok-abc");
    assert_eq!(
        sent.headers["content-type"],
        "application/x-www-form-urlencoded"
    );
    let f = form(&sent.body);
    let names: Vec<&str> = f.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "message",
            "stream",
            "session_id",
            "user_id",
            "images",
            "input_files",
            "additional_data",
            "run_id",
            "session_state",
            "custom_flag"
        ],
        "agno's order; stream_events only on streaming runs"
    );
    assert_eq!(field(&f, "message").as_deref(), Some("hello"));
    assert_eq!(field(&f, "stream").as_deref(), Some("false"));
    assert_eq!(field(&f, "custom_flag").as_deref(), Some("true"));
    let state: Value = serde_json::from_str(&field(&f, "session_state").unwrap()).unwrap();
    assert_eq!(state, json!({"a": 1}));
    let files: Value = serde_json::from_str(&field(&f, "input_files").unwrap()).unwrap();
    assert_eq!(files[0]["url"], "http://f/a.txt");
}

#[tokio::test]
async fn a_stream_yields_typed_events_and_keeps_unknown_ones() {
    let host = MockHost::start("h").await;
    let control = host.stream();
    let wf = RemoteWorkflow::new(&host.url, "echo").unwrap();
    let events = wf.arun("hello").stream_events(true).stream().await.unwrap();
    let sent = form(&host.last().body);
    assert_eq!(field(&sent, "stream").as_deref(), Some("true"));
    assert_eq!(field(&sent, "stream_events").as_deref(), Some("true"));

    control.send(frame("WorkflowStarted", json!({}))).await;
    control
        .send(frame(
            "StepStarted",
            json!({"step_name": "upper", "step_index": 0}),
        ))
        .await;
    // One event split over two chunks, with CRLF line ends and a comment.
    let content =
        frame("RunContent", json!({"agent_id": "a", "content": "HEL"})).replace('\n', "\r\n");
    let (head, tail) = content.split_at(20);
    control.send(format!(": keep-alive\r\n\r\n{head}")).await;
    control.send(tail.to_owned()).await;
    control
        .send(frame("ConditionPaused", json!({"step_name": "cond"})))
        .await;
    control
        .send(frame("BrandNewEvent", json!({"payload": [1, 2]})))
        .await;
    control.send("event: StepOutput\ndata: not json\n\n").await;
    control
        .send(frame("WorkflowCompleted", json!({"content": "HELLO!"})))
        .await;
    control.finish();

    let items = collect(events).await;
    let names: Vec<String> = items
        .iter()
        .map(|item| match item {
            Ok(event) => event.name().to_owned(),
            Err(error) => format!("error: {error}"),
        })
        .collect();
    assert_eq!(names.len(), 7, "{names:?}");
    assert!(
        matches!(&items[0], Ok(WorkflowEvent::WorkflowStarted(e)) if e.base.run_id.as_deref() == Some("r1"))
    );
    assert!(
        matches!(&items[1], Ok(WorkflowEvent::StepStarted(e)) if e.step_name.as_deref() == Some("upper"))
    );
    assert!(
        matches!(&items[2], Ok(WorkflowEvent::RunContent(e)) if e.content == Some(json!("HEL")))
    );
    assert!(matches!(&items[3], Ok(WorkflowEvent::ConditionPaused(_))));
    match &items[4] {
        Ok(WorkflowEvent::Other { event, data }) => {
            assert_eq!(event, "BrandNewEvent");
            assert_eq!(data["payload"], json!([1, 2]));
            assert_eq!(data["run_id"], "r1");
        }
        other => panic!("unknown event not kept: {other:?}"),
    }
    // A bad event is an error item; the stream goes on.
    assert!(matches!(&items[5], Err(ClientError::Decode { .. })));
    match &items[6] {
        Ok(WorkflowEvent::WorkflowCompleted(done)) => {
            assert_eq!(done.content, Some(json!("HELLO!")));
            assert_eq!(done.base.session_id.as_deref(), Some("s1"));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_raw_stream_is_the_hosts_bytes_unchanged() {
    let host = MockHost::start("h").await;
    let control = host.stream();
    let wf = RemoteWorkflow::new(&host.url, "echo").unwrap();
    let raw = wf.arun("hello").stream_raw().await.unwrap();
    let chunks = [
        ": hello\r\n\r\n".to_owned(),
        frame("WorkflowStarted", json!({})),
        "event: Odd\ndata: {\"multi\":\ndata: 1}\n\n".to_owned(),
        "data: unterminated".to_owned(),
    ];
    for chunk in &chunks {
        control.send(chunk.clone()).await;
    }
    control.finish();
    let received: Vec<u8> = collect(raw)
        .await
        .into_iter()
        .flat_map(|chunk| chunk.unwrap().to_vec())
        .collect();
    assert_eq!(received, chunks.concat().into_bytes());
}

#[tokio::test]
async fn a_stalled_stream_ends_with_remote_server_unavailable() {
    let host = MockHost::start("h").await;
    let control = host.stream();
    let wf = RemoteWorkflow::builder(&host.url, "echo")
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let mut events = wf.arun("hello").stream().await.unwrap();
    control.send(frame("WorkflowStarted", json!({}))).await;
    assert!(matches!(
        events.next().await,
        Some(Ok(WorkflowEvent::WorkflowStarted(_)))
    ));
    // The host keeps the connection open and sends nothing more: waiting
    // out the idle timeout is the behaviour under test.
    let error = events.next().await.unwrap().unwrap_err();
    match &error {
        ClientError::RemoteServerUnavailable {
            base_url,
            phase: UnavailablePhase::IdleTimeout { after },
        } => {
            assert_eq!(base_url, &host.url);
            assert_eq!(*after, Duration::from_millis(300));
        }
        other => panic!("{other:?}"),
    }
    assert!(error.to_string().contains("timed out after 0.3 seconds"));
    assert!(events.next().await.is_none());
    drop(control);
}

#[tokio::test]
async fn a_status_error_carries_the_agentos_detail() {
    let host = MockHost::start("h").await;
    let wf = RemoteWorkflow::new(&host.url, "echo").unwrap();
    host.respond_next(401, json!({"detail": "Authorization header required"}));
    let error = wf.arun("hello").await.unwrap_err();
    assert_eq!(error.status(), Some(http::StatusCode::UNAUTHORIZED));
    assert_eq!(error.detail(), Some("Authorization header required"));

    // The same on a stream: the error comes before any event.
    host.respond_next(404, json!({"detail": "Workflow not found"}));
    let error = wf.arun("hello").stream().await.unwrap_err();
    assert!(
        matches!(&error, ClientError::Status { status, detail, .. }
            if *status == 404 && detail == "Workflow not found"),
        "{error:?}"
    );

    // And on metadata.
    let missing = RemoteWorkflow::new(&host.url, "missing").unwrap();
    let error = missing.name().await.unwrap_err();
    assert_eq!(error.detail(), Some("Workflow not found"));
}

#[tokio::test]
async fn cancel_reports_success_and_surfaces_the_hosts_refusal() {
    let host = MockHost::start("h").await;
    let wf = RemoteWorkflow::builder(&host.url, "echo")
        .auth_token("default-token")
        .build()
        .unwrap();
    wf.cancel_run("run/1").session_id("s 1").await.unwrap();
    let sent = host.last();
    assert_eq!(sent.method, "POST");
    assert_eq!(
        sent.path_and_query,
        "/workflows/echo/runs/run%2F1/cancel?session_id=s%201"
    );
    assert!(sent.body.is_empty());
    assert_eq!(sent.headers["authorization"], "Bearer default-token");

    // agno's client returns False here; this returns the host's answer.
    host.respond_next(401, json!({"detail": "Invalid authentication token"}));
    let error = wf.cancel_run("r2").auth_token("wrong").await.unwrap_err();
    assert_eq!(error.status(), Some(http::StatusCode::UNAUTHORIZED));
    assert_eq!(error.detail(), Some("Invalid authentication token"));
    assert_eq!(host.last().headers["authorization"], "Bearer wrong");
}

#[tokio::test]
async fn continue_run_sends_the_step_requirements_as_json() {
    let host = MockHost::start("h").await;
    host.respond_next(
        200,
        json!({"run_id": "r1", "status": "COMPLETED", "content": "ok"}),
    );
    let wf = RemoteWorkflow::new(&host.url, "echo").unwrap();
    let out = wf
        .continue_run("r1")
        .step_requirements([json!({"step_id": "st", "confirmed": true})])
        .session_id("s1")
        .user_id("u1")
        .await
        .unwrap();
    assert_eq!(out.status, Some(RunStatus::Completed));
    let sent = host.last();
    assert_eq!(sent.path_and_query, "/workflows/echo/runs/r1/continue");
    let f = form(&sent.body);
    let requirements: Value =
        serde_json::from_str(&field(&f, "step_requirements").unwrap()).unwrap();
    assert_eq!(requirements, json!([{"step_id": "st", "confirmed": true}]));
    assert_eq!(field(&f, "stream").as_deref(), Some("false"));
    assert_eq!(field(&f, "session_id").as_deref(), Some("s1"));
    assert_eq!(field(&f, "user_id").as_deref(), Some("u1"));
}

#[tokio::test]
async fn metadata_is_cached_for_config_ttl_and_refresh_refetches() {
    let host = MockHost::start("h").await;
    let wf = RemoteWorkflow::builder(&host.url, "echo")
        .config_ttl(Duration::from_millis(300))
        .auth_token("meta-token")
        .build()
        .unwrap();
    assert_eq!(wf.id(), "echo");
    assert_eq!(wf.name().await.unwrap().as_deref(), Some("echo on h"));
    for _ in 0..5 {
        wf.name().await.unwrap();
    }
    assert_eq!(
        wf.description().await.unwrap().as_deref(),
        Some("a mock workflow")
    );
    assert_eq!(host.workflow_doc_hits(), 1);
    // Unlike agno, the builder's token goes on metadata calls too.
    assert_eq!(
        host.workflow_doc_auth(),
        [Some("Bearer meta-token".to_owned())]
    );

    let db = wf.db().await.unwrap().unwrap();
    assert_eq!(db.id, "h-db");
    assert_eq!(db.session_table_name.as_deref(), Some("agno_sessions"));
    assert_eq!(db.memory_table_name, None);
    wf.db().await.unwrap();
    assert_eq!((host.workflow_doc_hits(), host.config_hits()), (1, 1));

    // Waiting out the TTL is the behaviour under test, not synchronisation.
    tokio::time::sleep(Duration::from_millis(450)).await;
    wf.name().await.unwrap();
    assert_eq!(host.workflow_doc_hits(), 2);

    // refresh_config always fetches and restarts the TTL.
    wf.refresh_config().await.unwrap();
    wf.name().await.unwrap();
    assert_eq!(host.workflow_doc_hits(), 3);
    // get_workflow_config always fetches and leaves the cache alone.
    let fresh = wf.get_workflow_config().await.unwrap();
    assert_eq!(fresh.db_id.as_deref(), Some("h-db"));
    assert_eq!(fresh.extra["is_factory"], false);
    wf.name().await.unwrap();
    assert_eq!(host.workflow_doc_hits(), 4);
    wf.refresh_os_config().await.unwrap();
    assert_eq!(host.config_hits(), 2);
}

#[tokio::test]
async fn concurrent_misses_coalesce_into_one_fetch() {
    let host = MockHost::start("h").await;
    let wf = RemoteWorkflow::new(&host.url, "echo").unwrap();
    let gate = host.gate_workflow_docs();
    // All fifty lookups are polled (and waiting) before the host may answer.
    let lookups = futures::future::join_all((0..50).map(|_| wf.name()));
    let release = async {
        while host.workflow_doc_hits() == 0 {
            tokio::task::yield_now().await;
        }
        gate.add_permits(1000);
    };
    let (names, ()) = tokio::join!(lookups, release);
    assert!(
        names
            .iter()
            .all(|n| n.as_ref().unwrap().as_deref() == Some("echo on h"))
    );
    assert_eq!(host.workflow_doc_hits(), 1);
    // Clones share the cache.
    wf.clone().description().await.unwrap();
    assert_eq!(host.workflow_doc_hits(), 1);
}

#[tokio::test]
async fn a_refused_port_is_remote_server_unavailable() {
    let dead = refusing_url().await;
    let wf = RemoteWorkflow::new(&dead, "echo").unwrap();
    let errors = [
        wf.name().await.unwrap_err(),
        wf.arun("hello").await.unwrap_err(),
        wf.arun("hello").stream().await.unwrap_err(),
        wf.cancel_run("r").await.unwrap_err(),
    ];
    for error in errors {
        assert!(
            matches!(
                &error,
                ClientError::RemoteServerUnavailable {
                    base_url,
                    phase: UnavailablePhase::Connect { .. },
                } if base_url == &dead
            ),
            "{error:?}"
        );
        assert!(error.nothing_sent());
        assert_eq!(
            error.to_string(),
            format!("Failed to connect to remote server at {dead}")
        );
    }
}

#[tokio::test]
async fn a_name_that_does_not_resolve_says_dns() {
    // `.invalid` never resolves (RFC 6761).
    let nowhere = "http://no-such-host.invalid:7777";
    let wf = RemoteWorkflow::new(nowhere, "echo").unwrap();
    let error = wf.arun("hello").await.unwrap_err();
    match &error {
        ClientError::RemoteServerUnavailable {
            phase: UnavailablePhase::Connect { reason },
            ..
        } => assert!(
            reason.starts_with("DNS look-up of no-such-host.invalid failed: "),
            "{reason}"
        ),
        other => panic!("{other:?}"),
    }
    assert!(error.nothing_sent());
}

#[tokio::test]
async fn a_host_that_never_answers_times_out() {
    let (url, _hole) = black_hole().await;
    let wf = RemoteWorkflow::builder(&url, "echo")
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    // Waiting out the response timeout is the behaviour under test.
    let error = wf.arun("hello").await.unwrap_err();
    assert!(
        matches!(
            error,
            ClientError::RemoteServerUnavailable {
                phase: UnavailablePhase::ResponseTimeout { .. },
                ..
            }
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn through_the_gateway_a_dead_host_ends_the_stream_with_a_typed_error() {
    let host = MockHost::start("h").await;
    let gw = Gateway::start(&workflow("g-echo", &host.url, "echo")).await;
    let wf = RemoteWorkflow::new(&gw.url, "g-echo").unwrap();
    assert_eq!(wf.name().await.unwrap().as_deref(), Some("echo on h"));
    assert_eq!(
        wf.get_workflow_config().await.unwrap().id.as_deref(),
        Some("g-echo")
    );

    let control = host.stream();
    let mut events = wf.arun("hello").stream().await.unwrap();
    control.send(frame("WorkflowStarted", json!({}))).await;
    assert!(matches!(
        events.next().await,
        Some(Ok(WorkflowEvent::WorkflowStarted(_)))
    ));
    control.die().await;
    let rest = collect(events).await;
    match rest.as_slice() {
        [Ok(WorkflowEvent::WorkflowError(error))] => {
            assert_eq!(
                error.error_type.as_deref(),
                Some("remote_server_unavailable_error")
            );
            assert_eq!(error.base.run_id.as_deref(), Some("r1"));
        }
        other => panic!("{other:?}"),
    }
}
