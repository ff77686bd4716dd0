//! OTLP export of the gateway's spans (`[tracing] otlp_endpoint`): one
//! server span per sampled request, with the ids the trace layer
//! (`super::trace`) gave it, so the caller's span is its parent and the
//! host's spans are its children.
//!
//! The span is handed, whole, to OpenTelemetry's batch span processor when
//! the access record is written (the response body ended). The processor
//! queues it (at most 2048 spans; past that new ones are dropped) and
//! exports batches from a thread of its own over HTTP/protobuf, so a request
//! never waits on the collector and a dead collector costs nothing but the
//! dropped spans. The spans are built here rather than through an SDK
//! tracer, whose id generator would pick a span id other than the one
//! already sent to the host.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, SpanData, SpanEvents, SpanLinks, SpanProcessor,
};

use super::trace::TraceIds;
use crate::config::TracingConfig;

/// Longest one export to the collector may take, on the processor's thread.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest the shutdown flush may wait for the collector.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// The tracing settings in force: the ratio new traces are sampled at,
/// and the exporter when one is configured.
#[derive(Debug, Clone)]
pub struct Tracing {
    pub sample_ratio: f64,
    pub exporter: Option<Exporter>,
}

impl Tracing {
    /// Starts the exporter when `config` names a collector.
    pub fn new(config: &TracingConfig) -> Result<Tracing, String> {
        let exporter = match &config.otlp_endpoint {
            Some(endpoint) => Some(Exporter::new(endpoint, &config.service_name)?),
            None => None,
        };
        Ok(Tracing {
            sample_ratio: config.sample_ratio,
            exporter,
        })
    }
}

/// The batch span processor over the OTLP/HTTP exporter; clones share it.
#[derive(Clone)]
pub struct Exporter {
    processor: Arc<BatchSpanProcessor>,
    scope: InstrumentationScope,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter").finish_non_exhaustive()
    }
}

/// What a finished request contributes to its span.
#[derive(Debug)]
pub struct FinishedRequest<'a> {
    pub ids: TraceIds,
    pub method: &'a http::Method,
    /// The route template (`/workflows/{id}/runs`); "" when none matched.
    pub route: &'static str,
    pub status: u16,
    pub start: SystemTime,
    pub end: SystemTime,
    /// The kind (`agent`, `team`, `workflow`) and configured id of the
    /// entry the request named; both empty when it named none.
    pub kind: &'a str,
    pub id: &'a str,
    pub host_group: Option<&'a str>,
    pub request_id: &'a str,
    /// What failed behind an error answer.
    pub error: Option<&'a str>,
}

impl Exporter {
    /// An exporter posting to `<endpoint>/v1/traces` as `service_name`.
    pub fn new(endpoint: &url::Url, service_name: &str) -> Result<Exporter, String> {
        let base = endpoint.as_str().trim_end_matches('/');
        let url = if base.ends_with("/v1/traces") {
            base.to_owned()
        } else {
            format!("{base}/v1/traces")
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(url)
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| format!("cannot start the OTLP exporter: {e}"))?;
        // The SDK's defaults: a queue of 2048 spans, a batch every 5 s.
        let mut processor = BatchSpanProcessor::builder(exporter).build();
        let resource = Resource::builder_empty()
            .with_service_name(service_name.to_owned())
            .build();
        processor.set_resource(&resource);
        let scope = InstrumentationScope::builder(env!("CARGO_PKG_NAME"))
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        Ok(Exporter {
            processor: Arc::new(processor),
            scope,
        })
    }

    /// Queues the span of a finished request; never blocks.
    pub fn export(&self, request: FinishedRequest<'_>) {
        let ids = request.ids;
        let route = if request.route.is_empty() {
            "unmatched"
        } else {
            request.route
        };
        let mut attributes = vec![
            KeyValue::new("http.request.method", request.method.as_str().to_owned()),
            KeyValue::new("http.route", route),
            KeyValue::new("http.response.status_code", i64::from(request.status)),
            KeyValue::new("agentos.request_id", request.request_id.to_owned()),
        ];
        if !request.kind.is_empty() {
            // `agentos.agent.id`, `agentos.team.id`, `agentos.workflow.id`.
            attributes.push(KeyValue::new(
                format!("agentos.{}.id", request.kind),
                request.id.to_owned(),
            ));
        }
        if let Some(group) = request.host_group {
            attributes.push(KeyValue::new("agentos.host_group", group.to_owned()));
        }
        let status = match request.error {
            Some(error) => {
                attributes.push(KeyValue::new("error.type", error.to_owned()));
                Status::error(error.to_owned())
            }
            None if request.status >= 500 => Status::error(""),
            None => Status::Unset,
        };
        let span = SpanData {
            span_context: SpanContext::new(
                TraceId::from_bytes(ids.trace_id),
                SpanId::from_bytes(ids.span_id),
                TraceFlags::new(ids.flags),
                false,
                TraceState::NONE,
            ),
            parent_span_id: ids.parent_id.map_or(SpanId::INVALID, SpanId::from_bytes),
            parent_span_is_remote: ids.parent_id.is_some(),
            span_kind: SpanKind::Server,
            name: format!("{} {route}", request.method).into(),
            start_time: request.start,
            end_time: request.end,
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: self.scope.clone(),
        };
        self.processor.on_end(span);
    }

    /// Exports every queued span now (blocks; tests and shutdown).
    pub fn flush(&self) {
        if let Err(error) = self.processor.force_flush() {
            tracing::warn!(%error, "could not export the queued spans");
        }
    }

    /// Exports what is queued and stops the processor's thread (blocks, at
    /// most a few seconds). Called once, as the process exits.
    pub fn shutdown(&self) {
        if let Err(error) = self.processor.shutdown_with_timeout(SHUTDOWN_TIMEOUT) {
            tracing::warn!(%error, "could not export the last spans");
        }
    }
}
