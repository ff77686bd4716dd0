//! The metadata cache: TTL expiry, coalescing of concurrent misses, forced
//! refresh and stale-on-error, counted at the host; and that a document is
//! only ever served to callers with the credential that fetched it.

use std::time::Duration;

use crate::common::*;
use agentos_gateway::config::EntryKind;
use serde_json::Value;

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
    let upstream = gw
        .state
        .upstreams()
        .get(EntryKind::Workflow, "w")
        .unwrap()
        .clone();
    // All fifty lookups are polled (and waiting) before the host may answer.
    let lookups =
        futures::future::join_all((0..50).map(|_| gw.state.cache.entry(&upstream, false, None)));
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
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["detail"],
        "Failed to connect to the host of workflow 'w'"
    );
}

/// `GET path` on the gateway with `authorization` as the header, verbatim.
async fn get(gw: &Gateway, path: &str, authorization: Option<&str>) -> reqwest::Response {
    let mut request = client().get(gw.url(path));
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    request.send().await.unwrap()
}

/// The ids of a `/workflows` list (or a `/config`'s `workflows`).
fn ids(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn a_refused_caller_never_gets_the_cached_document() {
    let host = MockHost::start("h").await;
    host.require_token("secret");
    let gw = Gateway::start(&workflow("w", &host.url, "w")).await;
    let ok = get(&gw, "/workflows/w", Some("Bearer secret")).await;
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.json::<Value>().await.unwrap()["name"], "w on h");
    for _ in 0..2 {
        for authorization in [None, Some("Bearer wrong")] {
            let r = get(&gw, "/workflows/w", authorization).await;
            assert_eq!(r.status(), 401, "{authorization:?}");
            assert!(r.headers().get("x-gateway-cache").is_none());
            let body = r.json::<Value>().await.unwrap();
            assert_eq!(body, serde_json::json!({"detail": "Unauthorized"}));
        }
    }
    // Every refusal was the host's own, fetched anew: refusals are not cached.
    assert_eq!(host.workflow_doc_hits(), 5);
    // The accepted caller's copy is still cached for it.
    let again = get(&gw, "/workflows/w", Some("Bearer secret")).await;
    assert_eq!(again.headers()["x-gateway-cache"], "hit");
    assert_eq!(host.workflow_doc_hits(), 5);
}

#[tokio::test]
async fn the_list_shows_a_workflow_only_to_callers_its_host_accepts() {
    let secured = MockHost::start("h").await;
    secured.require_token("secret");
    let open = MockHost::start("open").await;
    let toml = format!(
        "{}{}",
        workflow("w", &secured.url, "w"),
        workflow("o", &open.url, "o")
    );
    let gw = Gateway::start(&toml).await;
    // The accepted caller lists first, so there is a cached copy to leak.
    let list: Value = get(&gw, "/workflows", Some("Bearer secret"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&list), ["w", "o"]);
    assert_eq!(list[0]["name"], "w on h");
    assert_eq!(list[0]["description"], "a mock workflow");
    assert_eq!(list[0]["db_id"], "h-db");
    for authorization in [None, Some("Bearer wrong")] {
        let r = get(&gw, "/workflows", authorization).await;
        assert_eq!(r.status(), 200);
        let text = r.text().await.unwrap();
        assert!(!text.contains("w on h") && !text.contains("h-db"), "{text}");
        assert_eq!(ids(&serde_json::from_str(&text).unwrap()), ["o"]);
    }
}

#[tokio::test]
async fn the_gateway_config_merges_only_what_the_caller_may_see() {
    let host = MockHost::start("h").await;
    host.require_token("secret");
    let gw = Gateway::start(&workflow("w", &host.url, "w")).await;
    let config: Value = get(&gw, "/config", Some("Bearer secret"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(config["databases"], serde_json::json!(["h-db"]));
    assert_eq!(config["workflows"][0]["name"], "w on h");
    for authorization in [None, Some("Bearer wrong")] {
        let text = get(&gw, "/config", authorization)
            .await
            .text()
            .await
            .unwrap();
        assert!(!text.contains("w on h") && !text.contains("h-db"), "{text}");
        let config: Value = serde_json::from_str(&text).unwrap();
        assert!(ids(&config["workflows"]).is_empty());
    }
    // The host's `/config` refusals were fetched each time too.
    assert_eq!(host.config_hits(), 3);
}

#[tokio::test]
async fn the_callers_authorization_reaches_the_host_byte_for_byte() {
    let host = MockHost::start("h").await;
    host.require_token("secret");
    let gw = Gateway::start(&workflow("w", &host.url, "w")).await;
    let forms = ["bearer secret", "secret", "Bearer secret"];
    for form in forms {
        let r = get(&gw, "/workflows/w", Some(form)).await;
        assert_eq!(r.status(), 200, "{form}");
    }
    let seen = host.workflow_doc_auth();
    assert_eq!(seen, forms.map(|f| Some(f.to_owned())));
    let r = get(&gw, "/config", Some("bearer secret")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(host.config_auth(), [Some("bearer secret".to_owned())]);
}

#[tokio::test]
async fn a_configured_token_serves_callers_without_one_but_not_wrong_ones() {
    let host = MockHost::start("h").await;
    host.require_token("secret");
    let toml = format!("{}auth_token = \"secret\"\n", workflow("w", &host.url, "w"));
    let gw = Gateway::start(&toml).await;
    // No credential of its own: the gateway's token fetches, and its copy is shared.
    for expected in ["miss", "hit"] {
        let r = get(&gw, "/workflows/w", None).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-gateway-cache"], expected);
        assert_eq!(r.json::<Value>().await.unwrap()["name"], "w on h");
    }
    assert_eq!(host.workflow_doc_auth(), [Some("Bearer secret".to_owned())]);
    // A credential of its own, even a wrong one, is what the host judges.
    let r = get(&gw, "/workflows/w", Some("Bearer wrong")).await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        host.workflow_doc_auth().last(),
        Some(&Some("Bearer wrong".to_owned()))
    );
    let list: Value = get(&gw, "/workflows", Some("Bearer wrong"))
        .await
        .json()
        .await
        .unwrap();
    assert!(ids(&list).is_empty(), "{list}");
    let list: Value = get(&gw, "/workflows", None).await.json().await.unwrap();
    assert_eq!(list[0]["name"], "w on h");
}

#[tokio::test]
async fn a_stale_copy_is_served_only_to_the_credential_that_fetched_it() {
    let host = MockHost::start("h").await;
    host.require_token("secret");
    let gw = Gateway::start(&workflow("w", &host.url, "w")).await;
    let fresh: Value = get(&gw, "/workflows/w", Some("Bearer secret"))
        .await
        .json()
        .await
        .unwrap();
    host.stop().await;
    let r = get(&gw, "/workflows/w?refresh=true", Some("Bearer secret")).await;
    assert_eq!(r.headers()["x-gateway-cache"], "stale");
    assert_eq!(r.json::<Value>().await.unwrap(), fresh);
    for authorization in [None, Some("Bearer wrong")] {
        let r = get(&gw, "/workflows/w", authorization).await;
        assert_eq!(r.status(), 502, "{authorization:?}");
        // The list falls back to the config file alone for them.
        let text = get(&gw, "/workflows", authorization)
            .await
            .text()
            .await
            .unwrap();
        assert!(!text.contains("w on h") && !text.contains("h-db"), "{text}");
        let list: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(list[0]["name"], "w");
    }
}
