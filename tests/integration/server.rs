//! The listener's HTTP framing (hyper's), end to end through the gateway:
//! raw requests on one kept-alive connection, malformed requests, and
//! HTTP/2 with prior knowledge (h2c). The adversarial corpus is in
//! tests/integration/adversarial.rs.

use crate::common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `requests` on one connection (the last one closing it) and
/// returns everything the gateway answered.
async fn exchange(gw: &Gateway, requests: &[u8]) -> String {
    let mut stream = TcpStream::connect(gw.url.trim_start_matches("http://"))
        .await
        .unwrap();
    stream.write_all(requests).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut answer),
    )
    .await
    .expect("the gateway did not close the connection")
    .unwrap();
    String::from_utf8(answer).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let host = MockHost::start("h").await;
    let gw = Gateway::start(&workflow("echo", &host.url, "echo")).await;
    let answer = exchange(
        &gw,
        b"POST /workflows/echo/runs HTTP/1.1\r\nhost: gw\r\n\
          content-type: application/x-www-form-urlencoded\r\ncontent-length: 23\r\n\r\n\
          message=hi&stream=false\
          GET /health HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n\r\n",
    )
    .await;
    let answers: Vec<&str> = answer.split("HTTP/1.1 ").skip(1).collect();
    let [run, health] = answers[..] else {
        panic!("two answers expected: {answer}");
    };
    assert!(run.starts_with("200 OK\r\n"), "{answer}");
    assert!(
        run.contains("\"path\":\"/workflows/echo/runs\""),
        "{answer}"
    );
    assert!(!run.contains("connection:"), "{answer}");
    assert!(health.starts_with("200 OK\r\n"), "{answer}");
    assert!(health.contains("connection: close\r\n"), "{answer}");
    assert!(health.contains("\"status\":\"ok\""), "{answer}");
    assert_eq!(host.last().body, "message=hi&stream=false");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unparsable_head_gets_400_and_a_closed_connection() {
    let gw = Gateway::start("").await;
    // `exchange` reads to the end: the gateway must close.
    let answer = exchange(&gw, b"GET /health HTTP/1.1\r\nhost gw\r\n\r\n").await;
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_host_gets_the_agentos_400_and_a_closed_connection() {
    let gw = Gateway::start("").await;
    let answer = exchange(
        &gw,
        b"GET /health HTTP/1.1\r\nhost: gw\r\nhost: other\r\n\r\nGET /health HTTP/1.1\r\nhost: gw\r\n\r\n",
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer}"
    );
    assert!(answer.contains("connection: close\r\n"), "{answer}");
    assert!(
        answer.ends_with("{\"detail\":\"More than one Host header\"}"),
        "{answer}"
    );
    assert_eq!(
        answer.matches("HTTP/1.1 ").count(),
        1,
        "nothing more is read: {answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_with_prior_knowledge_reaches_the_routes() {
    let host = MockHost::start("h").await;
    let gw = Gateway::start(&workflow("echo", &host.url, "echo")).await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .no_proxy()
        .build()
        .unwrap();
    let health = h2.get(gw.url("/health")).send().await.unwrap();
    assert_eq!(health.version(), reqwest::Version::HTTP_2);
    assert_eq!(health.status(), 200);
    let run = h2
        .post(gw.url("/workflows/echo/runs"))
        .form(&[("message", "over h2"), ("stream", "false")])
        .send()
        .await
        .unwrap();
    assert_eq!(run.status(), 200);
    let body: serde_json::Value = run.json().await.unwrap();
    assert_eq!(body["path"], "/workflows/echo/runs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_max_connections_a_connection_is_closed_at_once_and_counted() {
    let gw = Gateway::start("[server]\nmax_connections = 1\n").await;
    let addr = gw.url.trim_start_matches("http://").to_owned();
    // The first connection is served and kept open.
    let mut first = TcpStream::connect(&addr).await.unwrap();
    first
        .write_all(b"GET /health HTTP/1.1\r\nhost: gw\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0u8; 12];
    first.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");
    // The second is closed without an answer, not left hanging.
    let mut second = TcpStream::connect(&addr).await.unwrap();
    let _ = second
        .write_all(b"GET /health HTTP/1.1\r\nhost: gw\r\n\r\n")
        .await;
    let mut rest = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        second.read_to_end(&mut rest),
    )
    .await
    .expect("the refused connection is closed at once");
    assert!(
        rest.is_empty(),
        "no answer on a refused connection: {read:?}"
    );
    let metrics = scrape(&gw).await;
    assert!(
        metrics.contains("agentos_gateway_refused_connections_total 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("agentos_gateway_open_connections 1\n"),
        "{metrics}"
    );
    drop(first);
}
