//! Every non-streaming route of the gateway against in-process mock hosts:
//! discovery, forwarding of each per-run call, headers, errors and isolation.

use crate::common::*;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn health_ready_info_and_home_answer_like_agentos() {
    let host = MockHost::start("h1").await;
    let gw = Gateway::start(&workflow("echo", &host.url, "echo")).await;
    let c = client();

    let health = c.get(gw.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let body: serde_json::Value = health.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    assert!(body["instantiated_at"].as_str().unwrap().ends_with('Z'));

    assert_eq!(c.get(gw.url("/ready")).send().await.unwrap().status(), 200);
    let info: serde_json::Value = c
        .get(gw.url("/info"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["workflow_count"], 1);
    assert_eq!(info["auth_mode"], "none");
    // None of the probes touched the host.
    assert!(host.recorded().is_empty());
    assert_eq!(host.workflow_doc_hits() + host.config_hits(), 0);
}

#[tokio::test]
async fn workflow_list_and_detail_use_gateway_ids() {
    let a = MockHost::start("host-a").await;
    let b = MockHost::start("host-b").await;
    let toml = format!(
        "{}{}",
        workflow("shared-a", &a.url, "shared"),
        workflow("shared-b", &b.url, "shared")
    );
    let gw = Gateway::start(&toml).await;
    let c = client();

    let list: serde_json::Value = c
        .get(gw.url("/workflows"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        list,
        json!([
            {"id":"shared-a","name":"shared on host-a","description":"a mock workflow","db_id":"host-a-db","is_factory":false,"is_component":false,"sandboxed":false},
            {"id":"shared-b","name":"shared on host-b","description":"a mock workflow","db_id":"host-b-db","is_factory":false,"is_component":false,"sandboxed":false}
        ])
    );

    let detail = c.get(gw.url("/workflows/shared-b")).send().await.unwrap();
    assert_eq!(detail.status(), 200);
    assert_eq!(detail.headers()["x-gateway-cache"], "hit");
    let doc: serde_json::Value = detail.json().await.unwrap();
    assert_eq!(doc["id"], "shared-b");
    assert_eq!(doc["steps"], json!([{"name":"only","type":"Step"}]));

    // Trailing slashes are ignored, as AgentOS ignores them.
    assert_eq!(
        c.get(gw.url("/workflows/shared-a/"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn unknown_workflow_and_route_get_agentos_404s() {
    let host = MockHost::start("h").await;
    let gw = Gateway::start(&workflow("echo", &host.url, "echo")).await;
    let c = client();
    for (method, path) in [
        ("GET", "/workflows/nope"),
        ("POST", "/workflows/nope/runs"),
        ("POST", "/workflows/nope/runs/r1/cancel"),
        ("GET", "/workflows/nope/runs/r1"),
    ] {
        let r = c
            .request(method.parse().unwrap(), gw.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{method} {path}");
        assert_eq!(
            r.json::<serde_json::Value>().await.unwrap(),
            json!({"detail":"Workflow not found"})
        );
    }
    let r = c.get(gw.url("/no/such/route")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap(),
        json!({"detail":"Not Found"})
    );
    for (method, path, allow) in [
        ("DELETE", "/workflows", "GET, HEAD"),
        ("PUT", "/workflows/echo/runs", "GET, HEAD, POST"),
        ("GET", "/workflows/echo/runs/r1/cancel", "POST"),
    ] {
        let r = c
            .request(method.parse().unwrap(), gw.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405, "{method} {path}");
        assert_eq!(r.headers()["allow"], allow, "{method} {path}");
        assert_eq!(
            r.json::<serde_json::Value>().await.unwrap(),
            json!({"detail":"Method Not Allowed"})
        );
    }
    // HEAD is answered wherever GET is, without a body.
    let r = c.head(gw.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap().is_empty());
    assert!(host.recorded().is_empty());
}

#[tokio::test]
async fn host_404_on_detail_is_passed_back() {
    let host = MockHost::start("h").await;
    let gw = Gateway::start(&workflow("gone", &host.url, "missing")).await;
    let r = client()
        .get(gw.url("/workflows/gone"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap(),
        json!({"detail":"Workflow not found"})
    );
}

#[tokio::test]
async fn config_merges_host_databases_and_lists_workflows() {
    let a = MockHost::start("host-a").await;
    let b = MockHost::start("host-b").await;
    let toml = format!(
        "[server]\nos_id = \"gw\"\nname = \"Gateway\"\ndescription = \"front door\"\n{}{}{}",
        workflow("one", &a.url, "one"),
        workflow("two", &a.url, "two"),
        workflow("three", &b.url, "three")
    );
    let gw = Gateway::start(&toml).await;
    let config: serde_json::Value = client()
        .get(gw.url("/config"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(config["os_id"], "gw");
    assert_eq!(config["name"], "Gateway");
    assert_eq!(config["description"], "front door");
    assert_eq!(config["databases"], json!(["host-a-db", "host-b-db"]));
    let session_dbs: Vec<_> = config["session"]["dbs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["db_id"].clone())
        .collect();
    assert_eq!(session_dbs, vec![json!("host-a-db"), json!("host-b-db")]);
    assert_eq!(
        config["session"]["dbs"][0]["tables"],
        json!(["agno_sessions"])
    );
    let ids: Vec<_> = config["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].clone())
        .collect();
    assert_eq!(ids, vec![json!("one"), json!("two"), json!("three")]);
    assert_eq!(config["workflows"][2]["db_id"], "host-b-db");
    assert!(config["company"].is_null());
    // One /config fetch per host, not per workflow.
    assert_eq!(a.config_hits(), 1);
    assert_eq!(b.config_hits(), 1);
}

#[tokio::test]
async fn a_dead_host_never_fails_the_list_or_config() {
    let live = MockHost::start("live").await;
    let dead = refusing_url().await;
    let toml = format!(
        "{}{}",
        workflow("up", &live.url, "up"),
        workflow("down", &dead, "down")
    );
    let gw = Gateway::start(&toml).await;
    let c = client();
    let list = c.get(gw.url("/workflows")).send().await.unwrap();
    assert_eq!(list.status(), 200);
    let list: serde_json::Value = list.json().await.unwrap();
    assert_eq!(list[0]["name"], "up on live");
    assert_eq!(list[1]["id"], "down");
    let config = c.get(gw.url("/config")).send().await.unwrap();
    assert_eq!(config.status(), 200);
    let config: serde_json::Value = config.json().await.unwrap();
    assert_eq!(config["databases"], json!(["live-db"]));
    assert_eq!(config["workflows"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn non_streaming_run_is_forwarded_with_body_status_and_headers() {
    let host = MockHost::start("h").await;
    let gw = Gateway::start(&workflow("gw-echo", &host.url, "echo-wf")).await;
    let r = client()
        .post(gw.url("/workflows/gw-echo/runs?debug=1"))
        .header("x-mock-status", "202")
        .header("x-request-id", "req-123")
        .form(&[
            ("message", "hello"),
            ("stream", "false"),
            ("session_id", "S1"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(r.headers()["x-host-header"], "kept");
    assert_eq!(r.headers()["x-request-id"], "req-123");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["path"], "/workflows/echo-wf/runs");
    assert_eq!(body["query"], "debug=1");

    let seen = host.last();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.path_and_query, "/workflows/echo-wf/runs?debug=1");
    assert_eq!(&seen.body[..], b"message=hello&stream=false&session_id=S1");
    assert_eq!(
        seen.headers["content-type"],
        "application/x-www-form-urlencoded"
    );
    assert_eq!(seen.headers["x-request-id"], "req-123");
}

#[tokio::test]
async fn every_run_call_reaches_the_owning_host() {
    let a = MockHost::start("a").await;
    let b = MockHost::start("b").await;
    let toml = format!(
        "{}{}",
        workflow("wa", &a.url, "same"),
        workflow("wb", &b.url, "same")
    );
    let gw = Gateway::start(&toml).await;
    let c = client();
    let calls = [
        (
            "POST",
            "/workflows/wb/runs/run-1/cancel?session_id=s",
            "/workflows/same/runs/run-1/cancel?session_id=s",
        ),
        (
            "POST",
            "/workflows/wb/runs/run-1/continue",
            "/workflows/same/runs/run-1/continue",
        ),
        (
            "POST",
            "/workflows/wb/runs/run-1/resume",
            "/workflows/same/runs/run-1/resume",
        ),
        (
            "GET",
            "/workflows/wb/runs/run-1?session_id=s",
            "/workflows/same/runs/run-1?session_id=s",
        ),
        (
            "GET",
            "/workflows/wb/runs?session_id=s&status=COMPLETED",
            "/workflows/same/runs?session_id=s&status=COMPLETED",
        ),
    ];
    for (method, path, upstream) in calls {
        let r = c
            .request(method.parse().unwrap(), gw.url(path))
            .header("x-mock-status", "200")
            .form(&[("last_event_index", "3")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{method} {path}");
        let seen = b.last();
        assert_eq!(seen.method, method);
        assert_eq!(seen.path_and_query, upstream);
        assert_eq!(&seen.body[..], b"last_event_index=3");
    }
    assert!(
        a.recorded().is_empty(),
        "host a must not see host b's calls"
    );
}

#[tokio::test]
async fn host_errors_pass_through_unchanged() {
    let host = MockHost::start("h").await;
    let gw = Gateway::start(&workflow("w", &host.url, "w")).await;
    for status in [401u16, 422, 500] {
        let r = client()
            .post(gw.url("/workflows/w/runs"))
            .header("x-mock-status", status.to_string())
            .form(&[("message", "x"), ("stream", "false")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status);
    }
}

#[tokio::test]
async fn multipart_with_a_file_is_forwarded_byte_for_byte() {
    let host = MockHost::start("h").await;
    let gw = Gateway::start(&workflow("w", &host.url, "w")).await;
    let file: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let form = reqwest::multipart::Form::new()
        .text("message", "describe this")
        .text("stream", "false")
        .part(
            "files",
            reqwest::multipart::Part::bytes(file.clone())
                .file_name("data.bin")
                .mime_str("application/octet-stream")
                .unwrap(),
        );
    let r = client()
        .post(gw.url("/workflows/w/runs"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = host.last();
    let content_type = seen.headers["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("multipart/form-data; boundary="));
    let boundary = content_type.split("boundary=").nth(1).unwrap();
    let body = &seen.body[..];
    assert!(
        body.windows(file.len()).any(|w| w == &file[..]),
        "file bytes arrived intact"
    );
    assert!(
        body.windows(boundary.len())
            .filter(|w| *w == boundary.as_bytes())
            .count()
            >= 3
    );
}

#[tokio::test]
async fn auth_token_is_added_only_when_the_caller_sends_none() {
    let host = MockHost::start("h").await;
    let toml = format!(
        "{}auth_token = \"${{ROUTES_TEST_TOKEN}}\"\n",
        workflow("w", &host.url, "w")
    );
    // SAFETY: set before the gateway reads it; no other test reads this variable.
    unsafe { std::env::set_var("ROUTES_TEST_TOKEN", "host-secret") };
    let gw = Gateway::start(&toml).await;
    let c = client();
    c.post(gw.url("/workflows/w/runs/r/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(host.last().headers["authorization"], "Bearer host-secret");
    c.post(gw.url("/workflows/w/runs/r/cancel"))
        .bearer_auth("caller-token")
        .send()
        .await
        .unwrap();
    assert_eq!(host.last().headers["authorization"], "Bearer caller-token");
}

#[tokio::test]
async fn request_id_is_created_when_missing_and_hop_headers_are_stripped() {
    let host = MockHost::start("h").await;
    let gw = Gateway::start(&workflow("w", &host.url, "w")).await;
    let r = client()
        .post(gw.url("/workflows/w/runs/r/cancel"))
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "secret-hop")
        .header("proxy-authorization", "Basic abc")
        .send()
        .await
        .unwrap();
    let returned = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(returned.len(), 36, "a uuid: {returned}");
    let seen = host.last();
    assert_eq!(seen.headers["x-request-id"].to_str().unwrap(), returned);
    assert!(seen.headers.get("x-hop").is_none());
    assert!(seen.headers.get("proxy-authorization").is_none());
    // The host gets its own Host, not the gateway's.
    let host_authority = host.url.trim_start_matches("http://").trim_end_matches('/');
    assert_eq!(seen.headers["host"], host_authority);
}

#[tokio::test]
async fn refused_host_gets_a_fast_502_and_black_hole_a_504() {
    let dead = refusing_url().await;
    let (hole, _hole) = black_hole().await;
    let live = MockHost::start("live").await;
    let toml = format!(
        "{}{}timeout = 0.3\n{}",
        workflow("dead", &dead, "w"),
        workflow("hole", &hole, "w"),
        workflow("live", &live.url, "w")
    );
    let gw = Gateway::start(&toml).await;
    let c = client();

    let r = c
        .post(gw.url("/workflows/dead/runs"))
        .form(&[("message", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    let detail = r.json::<serde_json::Value>().await.unwrap()["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(detail, "Failed to connect to the host of workflow 'dead'");

    // While a call to the black hole hangs, the live host answers.
    let hanging = tokio::spawn({
        let c = c.clone();
        let url = gw.url("/workflows/hole/runs");
        async move { c.post(url).form(&[("message", "x")]).send().await.unwrap() }
    });
    let r = c
        .post(gw.url("/workflows/live/runs/r/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = hanging.await.unwrap();
    assert_eq!(r.status(), StatusCode::GATEWAY_TIMEOUT);
    let detail = r.json::<serde_json::Value>().await.unwrap()["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        detail,
        "The host of workflow 'hole' did not answer within 0.3 seconds"
    );
}

#[tokio::test]
async fn a_refused_host_is_named_by_its_workflow_not_its_address() {
    let dead = refusing_url().await;
    let port = dead.rsplit(':').next().unwrap().to_owned();
    let gw = Gateway::start(&workflow("echo", &dead, "w")).await;
    let c = client();
    // A forwarded run, a forwarded look-up and a metadata fetch.
    let run = c
        .post(gw.url("/workflows/echo/runs"))
        .form(&[("message", "x")]);
    let look_up = c.get(gw.url("/workflows/echo/runs/r1"));
    let metadata = c.get(gw.url("/workflows/echo"));
    for request in [run, look_up, metadata] {
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
        let body = r.text().await.unwrap();
        assert!(
            !body.contains("127.0.0.1") && !body.contains(&port),
            "{body}"
        );
        let detail = json_of(body.as_bytes())["detail"].clone();
        assert_eq!(detail, "Failed to connect to the host of workflow 'echo'");
    }
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let host = MockHost::start("h").await;
    let toml = format!(
        "[server]\nmax_body_bytes = 1000\n{}",
        workflow("w", &host.url, "w")
    );
    let gw = Gateway::start(&toml).await;
    let big = "x".repeat(5000);
    let r = client()
        .post(gw.url("/workflows/w/runs"))
        .form(&[("message", big.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["detail"],
        "Request body is too large"
    );
    // A streamed (chunked) body over the limit is cut off too.
    let chunks = futures::stream::iter((0..10).map(|_| Ok::<_, std::io::Error>(vec![b'x'; 500])));
    let r = client()
        .post(gw.url("/workflows/w/runs"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
}

#[tokio::test]
async fn cors_preflight_from_the_agentos_ui_is_allowed() {
    let host = MockHost::start("h").await;
    let gw = Gateway::start(&workflow("w", &host.url, "w")).await;
    let r = client()
        .request(reqwest::Method::OPTIONS, gw.url("/workflows"))
        .header("origin", "https://os.agno.com")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://os.agno.com"
    );
    assert_eq!(r.headers()["access-control-allow-credentials"], "true");
    assert_eq!(r.headers()["access-control-max-age"], "600");
    let r = client()
        .request(reqwest::Method::OPTIONS, gw.url("/workflows"))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn cors_headers_only_for_requests_with_an_origin_as_agentos_sends_them() {
    let host = MockHost::start("h").await;
    let gw = Gateway::start(&workflow("w", &host.url, "w")).await;
    // Server-to-server (agno's clients): no CORS headers, only `Vary: Origin`,
    // as Starlette's CORS middleware answers.
    let r = client().get(gw.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("access-control-allow-origin").is_none());
    assert_eq!(r.headers()["vary"], "Origin");
    // From a browser on an allowed origin: the CORS answer.
    let r = client()
        .get(gw.url("/health"))
        .header("origin", "https://os.agno.com")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://os.agno.com"
    );
    assert_eq!(r.headers()["access-control-allow-credentials"], "true");
}
