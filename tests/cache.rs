//! The metadata cache: TTL expiry, coalescing of concurrent misses, forced
//! refresh and stale-on-error, counted at the host.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test]
async fn detail_is_cached_for_config_ttl_then_refetched() {
    let host = MockHost::start("h").await;
    let toml = format!("{}config_ttl = 0.3\n", workflow("w", &host.url, "w"));
    let gw = Gateway::start(&toml).await;
    let c = client();
    let first = c.get(gw.url("/workflows/w")).send().await.unwrap();
    assert_eq!(first.headers()["x-gateway-cache"], "miss");
    for _ in 0..5 {
        let again = c.get(gw.url("/workflows/w")).send().await.unwrap();
        assert_eq!(again.headers()["x-gateway-cache"], "hit");
    }
    assert_eq!(host.workflow_doc_hits(), 1);
    // Waiting out the TTL is the behaviour under test, not synchronisation.
    tokio::time::sleep(Duration::from_millis(450)).await;
    let expired = c.get(gw.url("/workflows/w")).send().await.unwrap();
    assert_eq!(expired.headers()["x-gateway-cache"], "miss");
    assert_eq!(host.workflow_doc_hits(), 2);
}

#[tokio::test]
async fn concurrent_misses_coalesce_into_one_fetch() {
    let host = MockHost::start("h").await;
    let gw = Gateway::start(&workflow("w", &host.url, "w")).await;
    let gate = host.gate_workflow_docs();
    let upstream = gw.state.upstreams.get("w").unwrap().clone();
    // All fifty lookups are polled (and waiting) before the host may answer.
    let lookups =
        futures::future::join_all((0..50).map(|_| gw.state.cache.workflow(&upstream, false, None)));
    let release = async {
        while host.workflow_doc_hits() == 0 {
            tokio::task::yield_now().await;
        }
        gate.add_permits(1000);
    };
    let (results, ()) = tokio::join!(lookups, release);
    assert!(results.iter().all(|r| r.as_ref().unwrap().doc["id"] == "w"));
    assert_eq!(host.workflow_doc_hits(), 1);
}

#[tokio::test]
async fn refresh_forces_a_fetch() {
    let host = MockHost::start("h").await;
    let gw = Gateway::start(&workflow("w", &host.url, "w")).await;
    let c = client();
    c.get(gw.url("/workflows/w")).send().await.unwrap();
    let r = c
        .get(gw.url("/workflows/w?refresh=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-gateway-cache"], "miss");
    let r = c
        .get(gw.url("/workflows/w"))
        .header("cache-control", "no-cache")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-gateway-cache"], "miss");
    assert_eq!(host.workflow_doc_hits(), 3);
}

#[tokio::test]
async fn a_down_host_serves_the_last_good_copy_marked_stale() {
    let host = MockHost::start("h").await;
    let gw = Gateway::start(&workflow("w", &host.url, "w")).await;
    let c = client();
    let fresh: serde_json::Value = c
        .get(gw.url("/workflows/w"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    host.stop().await;
    let r = c
        .get(gw.url("/workflows/w?refresh=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-gateway-cache"], "stale");
    assert_eq!(r.json::<serde_json::Value>().await.unwrap(), fresh);
    // The list keeps the full entry too.
    let list: serde_json::Value = c
        .get(gw.url("/workflows"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list[0]["name"], "w on h");
}

#[tokio::test]
async fn a_down_host_without_a_cached_copy_is_a_502() {
    let dead = refusing_url().await;
    let gw = Gateway::start(&workflow("w", &dead, "w")).await;
    let r = client().get(gw.url("/workflows/w")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    assert!(
        r.json::<serde_json::Value>().await.unwrap()["detail"]
            .as_str()
            .unwrap()
            .starts_with("Failed to connect to remote server at")
    );
}
