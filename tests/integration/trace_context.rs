//! W3C trace context through the gateway, as a recording host sees it: the
//! caller's trace continues with the gateway's span as the host's parent,
//! invalid forms start a new trace, every call made for a request carries
//! it; and the OTLP export of the gateway's spans to an in-process
//! collector, which never holds up a request when the collector is down.

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::*;
use agentos_gateway::observability::trace::{TraceContext, parse_traceparent};
use axum::body::Bytes;
use http::{HeaderMap, HeaderValue};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio::sync::mpsc;

const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const CALLER_SPAN: &str = "b7ad6b7169203331";
const CALLER: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

/// A `traceparent` split into (trace id, parent id, flags), checked valid.
fn parts(value: &HeaderValue) -> (String, String, String) {
    let text = value.to_str().unwrap();
    assert!(
        parse_traceparent(text.as_bytes()).is_some(),
        "not a valid traceparent: {text}"
    );
    let fields: Vec<&str> = text.split('-').collect();
    (
        fields[1].to_owned(),
        fields[2].to_owned(),
        fields[3].to_owned(),
    )
}

/// The one `traceparent` a recorded request carried.
fn traceparent_of(recorded: &Recorded) -> HeaderValue {
    let all: Vec<_> = recorded.headers.get_all("traceparent").iter().collect();
    assert_eq!(all.len(), 1, "exactly one traceparent: {all:?}");
    all[0].clone()
}

/// A non-streamed run with `headers`; returns what the host got.
async fn run_with(gw: &Gateway, host: &MockHost, headers: HeaderMap) -> Recorded {
    let before = host.recorded().len();
    let r = client()
        .post(gw.url("/workflows/w/runs"))
        .headers(headers)
        .form(&[("message", "hi"), ("stream", "false")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    rest(r).await;
    let recorded = host.recorded();
    assert_eq!(recorded.len(), before + 1);
    recorded[before].clone()
}

fn caller_headers(traceparent: &[&str], tracestate: Option<&str>) -> HeaderMap {
    let mut h = HeaderMap::new();
    for value in traceparent {
        h.append("traceparent", HeaderValue::from_str(value).unwrap());
    }
    if let Some(state) = tracestate {
        h.insert("tracestate", HeaderValue::from_str(state).unwrap());
    }
    h
}

async fn single_host(extra: &str) -> (MockHost, Gateway) {
    let host = MockHost::start("h").await;
    let gw = Gateway::start(&format!(
        "{extra}\n[[workflows]]\nid = \"w\"\nbase_url = \"{}\"\n",
        host.url
    ))
    .await;
    (host, gw)
}

#[tokio::test]
async fn a_callers_trace_reaches_the_host_with_the_gateways_span_as_parent() {
    let (host, gw) = single_host("").await;
    let state = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE";
    let got = run_with(&gw, &host, caller_headers(&[CALLER], Some(state))).await;
    let (trace_id, parent, flags) = parts(&traceparent_of(&got));
    assert_eq!(trace_id, TRACE_ID, "same trace");
    assert_ne!(parent, CALLER_SPAN, "the gateway's span, not the caller's");
    assert_eq!(flags, "01", "same flags");
    assert_eq!(
        got.headers["tracestate"], state,
        "tracestate passed on as is"
    );

    // Not sampled stays not sampled.
    let unsampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
    let got = run_with(&gw, &host, caller_headers(&[unsampled], None)).await;
    let (trace_id, _, flags) = parts(&traceparent_of(&got));
    assert_eq!((trace_id.as_str(), flags.as_str()), (TRACE_ID, "00"));
    assert!(got.headers.get("tracestate").is_none());
}

#[tokio::test]
async fn a_request_without_a_traceparent_starts_a_sampled_trace() {
    let (host, gw) = single_host("").await;
    let first = run_with(&gw, &host, HeaderMap::new()).await;
    let second = run_with(&gw, &host, caller_headers(&[], Some("a=1"))).await;
    let (t1, s1, f1) = parts(&traceparent_of(&first));
    let (t2, s2, _) = parts(&traceparent_of(&second));
    assert_eq!(f1, "01", "sampled by default");
    assert_ne!(t1, t2, "a new trace per request");
    assert_ne!(s1, s2);
    assert!(
        second.headers.get("tracestate").is_none(),
        "no tracestate without a traceparent"
    );
}

#[tokio::test]
async fn sample_ratio_zero_marks_new_traces_unsampled_but_keeps_the_callers() {
    let (host, gw) = single_host("[tracing]\nsample_ratio = 0").await;
    let got = run_with(&gw, &host, HeaderMap::new()).await;
    assert_eq!(parts(&traceparent_of(&got)).2, "00");
    let got = run_with(&gw, &host, caller_headers(&[CALLER], None)).await;
    assert_eq!(parts(&traceparent_of(&got)).2, "01", "the caller decided");
}

#[tokio::test]
async fn invalid_traceparents_start_a_new_trace_and_are_never_forwarded() {
    let (host, gw) = single_host("").await;
    let invalid: &[&[&str]] = &[
        &["ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"],
        &["01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"],
        &["00-00000000000000000000000000000000-b7ad6b7169203331-01"],
        &["00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01"],
        &["00-0af7651916cd43dd8448eb211c80319-b7ad6b7169203331-01"],
        &["00-0af7651916cd43dd8448eb211c80319c0-b7ad6b7169203331-01"],
        &["00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01"],
        &["00-0af7651916cd43dd8448eb211c80319c-B7AD6B7169203331-01"],
        &["00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0g"],
        &["00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331"],
        &["garbage"],
        &[CALLER, CALLER],
        &[
            CALLER,
            "00-11111111111111111111111111111111-b7ad6b7169203331-01",
        ],
    ];
    for sent in invalid {
        let got = run_with(&gw, &host, caller_headers(sent, Some("a=1"))).await;
        let forwarded = traceparent_of(&got);
        assert!(
            !sent.contains(&forwarded.to_str().unwrap()),
            "{sent:?} was forwarded as is"
        );
        let (trace_id, _, flags) = parts(&forwarded);
        assert_ne!(trace_id, TRACE_ID, "{sent:?} must start a new trace");
        assert_eq!(flags, "01");
        assert!(
            got.headers.get("tracestate").is_none(),
            "{sent:?}: tracestate of an invalid traceparent is dropped"
        );
    }
}

#[tokio::test]
async fn a_tracestate_over_the_limits_is_dropped_and_the_trace_kept() {
    let (host, gw) = single_host("").await;
    let members: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
    let oversized = format!("a={}", "x".repeat(256)) + "," + &format!("b={}", "y".repeat(256));
    for state in [members.join(","), oversized, "Not A Member".to_owned()] {
        let got = run_with(&gw, &host, caller_headers(&[CALLER], Some(&state))).await;
        assert_eq!(parts(&traceparent_of(&got)).0, TRACE_ID);
        assert!(got.headers.get("tracestate").is_none(), "{state}");
    }
}

#[tokio::test]
async fn the_cancel_fan_out_carries_the_trace_to_every_replica() {
    let hosts = [MockHost::start("a").await, MockHost::start("b").await];
    let gw = Gateway::start(&format!(
        "[[workflows]]\nid = \"w\"\nbase_urls = [\"{}\", \"{}\"]\n",
        hosts[0].url, hosts[1].url
    ))
    .await;
    let r = client()
        .post(gw.url("/workflows/w/runs/elsewhere/cancel"))
        .headers(caller_headers(&[CALLER], Some("a=1")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut spans = Vec::new();
    for host in &hosts {
        eventually("the replica got the cancel", || async {
            !host.recorded().is_empty()
        })
        .await;
        let got = host.recorded()[0].clone();
        let (trace_id, span, _) = parts(&traceparent_of(&got));
        assert_eq!(trace_id, TRACE_ID);
        assert_eq!(got.headers["tracestate"], "a=1");
        spans.push(span);
    }
    assert_eq!(
        spans[0], spans[1],
        "both calls come from the gateway's one span"
    );
    assert_ne!(spans[0], CALLER_SPAN);
}

#[tokio::test]
async fn the_gateways_own_cancel_of_a_cut_stream_carries_the_trace() {
    let (host, gw) = single_host("").await;
    let stream = host.stream();
    stream
        .send("event: WorkflowStarted\ndata: {\"run_id\":\"R-1\",\"session_id\":\"S-1\"}\n\n")
        .await;
    let mut r = client()
        .post(gw.url("/workflows/w/runs"))
        .headers(caller_headers(&[CALLER], None))
        .form(&[("message", "go"), ("stream", "true")])
        .send()
        .await
        .unwrap();
    next_chunk(&mut r).await.unwrap();
    drop(r);
    while stream.offer("event: StepProgress\ndata: {}\n\n").await {}
    eventually("the host got the gateway's cancel", || async {
        host.recorded().len() == 2
    })
    .await;
    let recorded = host.recorded();
    let (run_trace, run_span, _) = parts(&traceparent_of(&recorded[0]));
    assert!(recorded[1].path_and_query.contains("/runs/R-1/cancel"));
    let (cancel_trace, cancel_span, _) = parts(&traceparent_of(&recorded[1]));
    assert_eq!(
        (run_trace.as_str(), cancel_trace.as_str()),
        (TRACE_ID, TRACE_ID)
    );
    assert_eq!(
        cancel_span, run_span,
        "the cancel belongs to the run's request"
    );
}

#[tokio::test]
async fn concurrent_callers_never_get_each_others_trace() {
    let (host, gw) = single_host("").await;
    let calls = (0..32u32).map(|i| {
        let url = gw.url("/workflows/w/runs");
        async move {
            let trace = format!("{:032x}", 0x1000 + i);
            let header = format!("00-{trace}-{CALLER_SPAN}-01");
            let r = client()
                .post(url)
                .header("traceparent", header)
                .form(&[("message", format!("m{i}")), ("stream", "false".to_owned())])
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            rest(r).await;
        }
    });
    futures::future::join_all(calls).await;
    let recorded = host.recorded();
    assert_eq!(recorded.len(), 32);
    let mut spans = std::collections::HashSet::new();
    for got in recorded {
        let body = String::from_utf8_lossy(&got.body).into_owned();
        let i: u32 = body
            .split('&')
            .find_map(|kv| kv.strip_prefix("message=m"))
            .unwrap()
            .parse()
            .unwrap();
        let (trace_id, span, _) = parts(&traceparent_of(&got));
        assert_eq!(trace_id, format!("{:032x}", 0x1000 + i), "request m{i}");
        assert_ne!(span, CALLER_SPAN, "request m{i}: the gateway's span");
        spans.insert(span);
    }
    assert_eq!(spans.len(), 32, "a span of its own per request");
}

mod property {
    use super::*;
    use proptest::prelude::*;

    /// Near-valid forms: a valid header with one byte replaced, cut or
    /// extended, and arbitrary strings of the characters that matter.
    fn candidates() -> impl Strategy<Value = String> {
        prop_oneof![
            (0usize..55, "[ -~]").prop_map(|(at, c)| {
                let mut s = CALLER.to_owned();
                s.replace_range(at..=at, &c);
                s
            }),
            (0usize..56).prop_map(|len| CALLER[..len.min(55)].to_owned()),
            "[0-9a-fA-F]{2}-[0-9a-fA-F]{32}-[0-9a-fA-F]{16}-[0-9a-fA-F]{2}",
            "[0-9a-f-]{0,60}",
            "[ -~]{0,80}",
        ]
    }

    proptest! {
        /// Any value is either taken (and then re-encodes to itself, but
        /// for the reserved flags, which are zeroed) or replaced with a
        /// valid new trace; it never comes out half-parsed.
        #[test]
        fn any_value_is_taken_canonically_or_replaced(value in candidates()) {
            let Ok(header) = HeaderValue::from_str(&value) else {
                return Ok(());
            };
            let mut headers = HeaderMap::new();
            headers.insert("traceparent", header);
            let cx = TraceContext::from_headers(&headers, 1.0);
            let out = cx.ids.traceparent();
            let (trace_id, span_id, flags) = parse_traceparent(out.as_bytes())
                .expect("the forwarded traceparent is always valid");
            prop_assert_eq!(trace_id, cx.ids.trace_id);
            prop_assert_eq!(span_id, cx.ids.span_id);
            match parse_traceparent(value.as_bytes()) {
                Some((caller_trace, caller_span, caller_flags)) => {
                    prop_assert_eq!(&value[..36], &out.to_str().unwrap()[..36]);
                    prop_assert_eq!(trace_id, caller_trace);
                    prop_assert_eq!(cx.ids.parent_id, Some(caller_span));
                    prop_assert_eq!(flags, caller_flags & 0x03);
                    let canonical = format!(
                        "00-{}-{}-{:02x}",
                        cx.ids.trace_id_hex(),
                        &value[36..52],
                        caller_flags
                    );
                    prop_assert_eq!(canonical, value);
                }
                None => {
                    prop_assert_eq!(cx.ids.parent_id, None);
                    prop_assert_ne!(out.to_str().unwrap(), value.as_str());
                    prop_assert_eq!(flags, 0x01);
                }
            }
        }
    }
}

/// An in-process OTLP/HTTP collector: every span posted to `/v1/traces`,
/// decoded, goes to the returned channel.
async fn collector() -> (SocketAddr, mpsc::UnboundedReceiver<Span>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: Bytes| {
            let tx = tx.clone();
            async move {
                let request = ExportTraceServiceRequest::decode(body).unwrap();
                for resource in request.resource_spans {
                    for scope in resource.scope_spans {
                        for span in scope.spans {
                            let _ = tx.send(span);
                        }
                    }
                }
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, rx)
}

/// Exports the gateway's queued spans now rather than at the next batch.
async fn flush(gw: &Gateway) {
    let exporter = gw.state.tracing.exporter.clone().expect("an exporter");
    tokio::task::spawn_blocking(move || exporter.flush())
        .await
        .unwrap();
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn the_gateways_span_reaches_the_collector_under_the_callers_span() {
    let (addr, mut spans) = collector().await;
    let (host, gw) = single_host(&format!("[tracing]\notlp_endpoint = \"http://{addr}\"")).await;
    let got = run_with(&gw, &host, caller_headers(&[CALLER], None)).await;
    let (_, gateway_span, _) = parts(&traceparent_of(&got));
    flush(&gw).await;
    // Whatever the flush missed (the record is written as the body ends)
    // goes with the next batch, within seconds.
    let span = tokio::time::timeout(Duration::from_secs(30), spans.recv())
        .await
        .expect("no span within 30 s")
        .unwrap();
    assert_eq!(hex(&span.trace_id), TRACE_ID);
    assert_eq!(hex(&span.parent_span_id), CALLER_SPAN);
    assert_eq!(hex(&span.span_id), gateway_span, "the host's parent");
    assert_eq!(span.name, "POST /workflows/{id}/runs");
    let attribute = |key: &str| {
        span.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.clone())
            .and_then(|v| v.value)
            .map(|v| format!("{v:?}"))
            .unwrap_or_else(|| panic!("no {key} in {:?}", span.attributes))
    };
    assert!(attribute("http.response.status_code").contains("200"));
    assert!(attribute("http.route").contains("/workflows/{id}/runs"));
    assert!(attribute("http.request.method").contains("POST"));
    assert!(attribute("agentos.workflow.id").contains('w'));
    attribute("agentos.host_group");
}

#[tokio::test]
async fn a_failed_request_is_exported_with_its_cause() {
    let (addr, mut spans) = collector().await;
    let down = refusing_url().await;
    let gw = Gateway::start(&format!(
        "[tracing]\notlp_endpoint = \"http://{addr}\"\n[[workflows]]\nid = \"w\"\nbase_url = \"{down}\"\n"
    ))
    .await;
    let r = client()
        .post(gw.url("/workflows/w/runs"))
        .form(&[("message", "hi"), ("stream", "false")])
        .send()
        .await
        .unwrap();
    assert!(r.status().is_server_error());
    rest(r).await;
    flush(&gw).await;
    let span = tokio::time::timeout(Duration::from_secs(30), spans.recv())
        .await
        .expect("no span within 30 s")
        .unwrap();
    assert!(span.parent_span_id.is_empty(), "a new trace's root");
    assert!(
        span.attributes.iter().any(|kv| kv.key == "error.type"),
        "{:?}",
        span.attributes
    );
    let status = span.status.expect("a status");
    assert_eq!(status.code, 2, "error");
}

#[tokio::test]
async fn a_dead_collector_never_affects_requests() {
    let refusing = refusing_url().await;
    let (silent, _held) = black_hole().await;
    for collector in [refusing, silent] {
        let (host, gw) = single_host(&format!("[tracing]\notlp_endpoint = \"{collector}\"")).await;
        host.auto_stream(2);
        host.release();
        for i in 0..20 {
            let got = run_with(&gw, &host, caller_headers(&[CALLER], None)).await;
            assert_eq!(parts(&traceparent_of(&got)).0, TRACE_ID, "request {i}");
            let r = client()
                .post(gw.url("/workflows/w/runs"))
                .form(&[("message", "s"), ("stream", "true")])
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let body = rest(r).await;
            assert!(!body.is_empty());
        }
    }
}

#[tokio::test]
async fn the_last_spans_are_flushed_when_the_gateway_exits() {
    let (addr, mut spans) = collector().await;
    let host = MockHost::start("h").await;
    let mut gw = GatewayProcess::spawn(
        &format!(
            "drain_grace = 0.1\nhealth_checks = false\n\
             [tracing]\notlp_endpoint = \"http://{addr}\"\nservice_name = \"edge\"\n\
             [[workflows]]\nid = \"w\"\nbase_url = \"{}\"\n",
            host.url
        ),
        &[],
    );
    let r = client()
        .post(gw.url("/workflows/w/runs"))
        .header("traceparent", CALLER)
        .form(&[("message", "hi"), ("stream", "false")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    rest(r).await;
    gw.terminate();
    assert_eq!(gw.exit_code(Duration::from_secs(30)).await, Some(0));
    let span = tokio::time::timeout(Duration::from_secs(10), spans.recv())
        .await
        .expect("the span was not flushed on exit")
        .unwrap();
    assert_eq!(hex(&span.trace_id), TRACE_ID);
    // The access line names the trace and the gateway's span.
    let line = gw
        .log()
        .into_iter()
        .find(|l| l.contains("\"target\":\"access\""))
        .unwrap_or_else(|| panic!("no access line in {:?}", gw.log()));
    assert!(
        line.contains(&format!("\"trace_id\":\"{TRACE_ID}\"")),
        "{line}"
    );
    assert!(
        line.contains(&format!("\"span_id\":\"{}\"", hex(&span.span_id))),
        "{line}"
    );
}
