//! Host connection pools: an idle pooled connection is closed by the
//! gateway after `pool_idle_timeout`, before the host's own keep-alive
//! (uvicorn's 5 s) would close it under a request being sent.

use std::time::Duration;

use crate::common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const ANSWER: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";

/// Reads one request head (the runs below carry no body we need) from
/// `stream`; false at EOF.
async fn read_head(stream: &mut TcpStream) -> bool {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return false,
        }
    }
    true
}

fn config(host: &str, pool_idle_timeout: f64) -> String {
    format!(
        "[server]\nhealth_checks = false\npool_idle_timeout = {pool_idle_timeout}\n{}",
        workflow("w", &format!("http://{host}"), "w")
    )
}

async fn look_up(gw: &Gateway) -> u16 {
    client()
        .get(gw.url("/workflows/w/runs/r1"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_pooled_connection_is_closed_after_pool_idle_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let gw = Gateway::start(&config(&host, 0.3)).await;
    let asked = tokio::spawn(async move { look_up(&gw).await });
    let (mut connection, _) = listener.accept().await.unwrap();
    assert!(read_head(&mut connection).await);
    connection.write_all(ANSWER).await.unwrap();
    assert_eq!(asked.await.unwrap(), 200);
    // The host keeps the connection open; the gateway must close it.
    let mut rest = Vec::new();
    let closed =
        tokio::time::timeout(Duration::from_secs(20), connection.read_to_end(&mut rest)).await;
    assert!(
        matches!(closed, Ok(Ok(0))),
        "the gateway kept its idle connection: {closed:?}"
    );
}
