//! Metrics and logs after real traffic: the Prometheus counters move, and the
//! access log has one line per request without any credential in it.

use crate::common::*;

/// The value of the sample line that starts with `prefix`, if present.
fn sample(metrics: &str, prefix: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn metrics_move_with_traffic() {
    let host = MockHost::start("h").await;
    let dead = refusing_url().await;
    let toml = format!(
        "{}{}",
        workflow("w", &host.url, "w"),
        workflow("down", &dead, "w")
    );
    let gw = Gateway::start(&toml).await;
    let c = client();

    let before = scrape(&gw).await;
    assert_eq!(
        sample(&before, "agentos_gateway_active_streams "),
        Some(0.0)
    );

    c.post(gw.url("/workflows/w/runs"))
        .form(&[("message", "x"), ("stream", "false")])
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    c.get(gw.url("/workflows/w"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    c.get(gw.url("/workflows/w"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let r = c
        .post(gw.url("/workflows/down/runs"))
        .form(&[("message", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    r.bytes().await.unwrap();

    let stream = host.stream();
    stream
        .send("event: WorkflowStarted\ndata: {\"run_id\":\"r\"}\n\n")
        .await;
    let mut s = c
        .post(gw.url("/workflows/w/runs"))
        .form(&[("message", "x")])
        .send()
        .await
        .unwrap();
    next_chunk(&mut s).await.unwrap();
    let during = scrape(&gw).await;
    assert_eq!(
        sample(&during, "agentos_gateway_active_streams "),
        Some(1.0)
    );
    stream.finish();
    rest(s).await;

    let runs = "agentos_gateway_requests_total{kind=\"workflow\",id=\"w\",route=\"/workflows/{id}/runs\",status=\"200\"}";
    let gw_ref = &gw;
    eventually("both runs counted", || async move {
        sample(&scrape(gw_ref).await, runs) == Some(2.0)
    })
    .await;
    let after = scrape(&gw).await;
    assert!(
        after.contains("# TYPE agentos_gateway_requests counter"),
        "{after}"
    );
    assert!(after.contains("# TYPE agentos_gateway_request_duration_seconds histogram"));
    assert!(after.contains("# TYPE agentos_gateway_overhead_seconds histogram"));
    assert_eq!(sample(&after, "agentos_gateway_active_streams "), Some(0.0));
    assert_eq!(
        sample(
            &after,
            "agentos_gateway_requests_total{kind=\"workflow\",id=\"down\",route=\"/workflows/{id}/runs\",status=\"502\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &after,
            &format!("agentos_gateway_upstream_errors_total{{host=\"{dead}\",kind=\"connect\"}}")
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &after,
            "agentos_gateway_config_cache_lookups_total{result=\"miss\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &after,
            "agentos_gateway_config_cache_lookups_total{result=\"hit\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &after,
            "agentos_gateway_request_duration_seconds_count{kind=\"workflow\",id=\"w\",route=\"/workflows/{id}/runs\"}"
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &after,
            "agentos_gateway_time_to_first_byte_seconds_count{kind=\"workflow\",id=\"w\",route=\"/workflows/{id}/runs\"}"
        ),
        Some(2.0)
    );
    assert!(
        sample(
            &after,
            "agentos_gateway_overhead_seconds_sum{kind=\"workflow\",id=\"w\",route=\"/workflows/{id}/runs\"}"
        )
        .unwrap()
            > 0.0
    );
}

#[tokio::test]
async fn access_log_has_one_line_per_request_and_no_credentials() {
    const HOST_SECRET: &str = "planted-host-secret-7f3a";
    const CALLER_SECRET: &str = "planted-caller-secret-91bc";
    let host = MockHost::start("h").await;
    let toml = format!(
        "{}auth_token = \"${{PLANTED_TOKEN}}\"\n",
        workflow("w", &host.url, "w")
    );
    let gw = GatewayProcess::spawn(
        &toml,
        &[("PLANTED_TOKEN", HOST_SECRET), ("RUST_LOG", "trace")],
    );
    let c = client();
    c.post(gw.url("/workflows/w/runs"))
        .header("x-request-id", "req-log-1")
        .form(&[("message", "x"), ("stream", "false")])
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    c.post(gw.url("/workflows/w/runs/r/cancel"))
        .header("x-request-id", "req-log-2")
        .bearer_auth(CALLER_SECRET)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    host.auto_stream(3);
    host.release();
    let streamed = c
        .post(gw.url("/workflows/w/runs"))
        .header("x-request-id", "req-log-3")
        .form(&[("message", "x"), ("stream", "true")])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let streamed_events = streamed.matches("\n\n").count() as u64;
    assert!(streamed_events > 0, "the mock host streams events");
    assert_eq!(
        host.recorded()[0].headers["authorization"],
        format!("Bearer {HOST_SECRET}").as_str()
    );
    assert_eq!(
        host.recorded()[1].headers["authorization"],
        format!("Bearer {CALLER_SECRET}").as_str()
    );

    let access_lines = |log: &[String]| -> Vec<serde_json::Value> {
        log.iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["target"] == "access")
            .collect()
    };
    let gw_ref = &gw;
    eventually("three access lines", || async move {
        access_lines(&gw_ref.log()).len() >= 3
    })
    .await;
    let log = gw.log();
    let lines = access_lines(&log);
    let first = lines
        .iter()
        .find(|e| e["request_id"] == "req-log-1")
        .expect("line for req-log-1");
    assert_eq!(first["id"], "w");
    assert_eq!(first["host"], host.url);
    assert_eq!(first["status"], 200);
    assert_eq!(first["method"], "POST");
    assert!(first["bytes"].as_u64().unwrap() > 0);
    // Milliseconds to the microsecond, not a float's every digit.
    let duration = first["duration_ms"].to_string();
    assert!(
        duration
            .split('.')
            .nth(1)
            .is_none_or(|decimals| decimals.len() <= 3),
        "{duration}"
    );
    assert_eq!(first["events"], 0);
    assert!(lines.iter().any(|e| e["request_id"] == "req-log-2"));
    let stream_line = lines
        .iter()
        .find(|e| e["request_id"] == "req-log-3")
        .expect("line for req-log-3");
    assert_eq!(stream_line["events"], streamed_events, "events relayed");

    let everything = log.join("\n");
    assert!(everything.len() > 1000, "trace logging produced output");
    assert!(
        !everything.contains(HOST_SECRET),
        "host token leaked into logs"
    );
    assert!(
        !everything.contains(CALLER_SECRET),
        "caller token leaked into logs"
    );
}

#[tokio::test]
async fn a_failed_request_is_one_log_line_naming_the_host_and_cause() {
    let refusing = refusing_url().await;
    let gw = GatewayProcess::spawn(&workflow("w", &refusing, "w"), &[]);
    let r = client()
        .post(gw.url("/workflows/w/runs"))
        .header("x-request-id", "req-fail-1")
        .form(&[("message", "x"), ("stream", "false")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let detail = r.text().await.unwrap();
    assert!(!detail.contains(refusing.as_str()), "{detail}");
    let gw_ref = &gw;
    eventually("the access line", || async move {
        gw_ref
            .log()
            .iter()
            .any(|l| l.contains("\"target\":\"access\""))
    })
    .await;
    let about: Vec<serde_json::Value> = gw
        .log()
        .iter()
        .filter(|l| l.contains("req-fail-1"))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        // What an operator sees at the default level.
        .filter(|l| ["INFO", "WARN", "ERROR"].contains(&l["level"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(about.len(), 1, "one line per failed request: {about:#?}");
    let line = &about[0];
    assert_eq!(line["target"], "access");
    assert_eq!(line["level"], "WARN");
    assert_eq!(line["status"], 502);
    assert_eq!(line["host"], refusing.as_str());
    assert!(
        line["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{line}"
    );
}
