//! The one error type of the request path, and how it becomes an AgentOS-style
//! `{"detail": "..."}` response; and [`UpstreamError`], what a call the
//! gateway makes to a host group can fail with before it becomes one.
//!
//! Each variant is one failure phase; the variant alone decides the status
//! code, so handlers never pick statuses for failures themselves.
//!
//! A caller's `detail` names the agent, team or workflow whose host failed and how, never
//! the host's address: base URLs, IPs and ports are internal. The upstream
//! variants keep the base URL and the root cause for the log
//! ([`GatewayError::upstream_cause`]).

use std::fmt;
use std::time::Duration;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::client::{ClientError, UnavailablePhase};
use crate::config::EntryKind;
use crate::upstream::databases::DbLookupError;

/// A failed call the gateway made to a host group on a caller's behalf: the
/// host's failure as the client library classifies it, or one of the
/// gateway's own reasons, which the client library never has: no replica could
/// take the call, or the caller's own request body failed on the way.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// The host failed (or answered non-2xx).
    #[error(transparent)]
    Host(#[from] ClientError),
    /// No replica of the host group can take the request right now (the
    /// replica picker's answer; nothing was sent).
    #[error("No replica of host group `{group}` can take the request: {reason}")]
    NoReplica {
        /// The host group's name.
        group: String,
        /// Why no replica was picked.
        reason: String,
        /// Every replica's bulkhead is full (as opposed to none being known).
        saturated: bool,
    },
    /// The caller's request body went over the configured limit while it
    /// was being streamed to the host.
    #[error("request body is too large")]
    BodyTooLarge,
    /// The caller's request body failed while it was sent (broken chunked
    /// framing, or a caller that left mid-upload). The caller's fault, not
    /// the host's.
    #[error("request body failed: {reason}")]
    RequestBody {
        /// What went wrong with the body.
        reason: String,
        /// The caller closed its connection before the body ended.
        hung_up: bool,
    },
}

impl UpstreamError {
    /// True when nothing was sent (the connect failed, or no replica was
    /// picked), so any request, even a non-idempotent run, may be tried
    /// elsewhere.
    pub fn nothing_sent(&self) -> bool {
        match self {
            UpstreamError::Host(error) => error.nothing_sent(),
            UpstreamError::NoReplica { .. } => true,
            UpstreamError::BodyTooLarge | UpstreamError::RequestBody { .. } => false,
        }
    }

    /// The message with its underlying cause, for a replica's `last_error`
    /// and logs (see [`ClientError::diagnostic`]).
    pub fn diagnostic(&self) -> String {
        match self {
            UpstreamError::Host(error) => error.diagnostic(),
            other => other.to_string(),
        }
    }
}

/// Whose host an upstream failure is about, as a caller's `detail` names it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Subject {
    /// Not known where the error was made (the proxy's own conversions).
    #[default]
    Host,
    /// The host of an agent, team or workflow, by gateway id.
    Entry(EntryKind, String),
}

/// `{}` writes "the host of workflow 'x'"; `{:#}` capitalises it, for the
/// start of a sentence.
impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let the = if f.alternate() { "The" } else { "the" };
        match self {
            Subject::Host => write!(f, "{the} host"),
            Subject::Entry(kind, id) => write!(f, "{the} host of {kind} '{id}'"),
        }
    }
}

/// Everything that can go wrong while the gateway answers a request.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The route exists but not for this method (FastAPI's default 405 body).
    #[error("Method Not Allowed")]
    MethodNotAllowed,
    /// The path names no configured agent, team or workflow (AgentOS's
    /// details: "Agent not found", "Team not found", "Workflow not found").
    #[error("{}", .0.not_found())]
    NotFound(EntryKind),
    /// No route matches (FastAPI's default 404 body).
    #[error("Not Found")]
    RouteNotFound,
    /// The host refused the connection or reset it before answering.
    #[error("Failed to connect to {subject}")]
    UpstreamConnect {
        subject: Subject,
        base_url: String,
        reason: String,
    },
    /// The TCP connect did not finish within the connect timeout.
    #[error("Connecting to {subject} timed out after {} seconds", after.as_secs_f64())]
    UpstreamUnreachable {
        subject: Subject,
        base_url: String,
        after: Duration,
    },
    /// The host accepted the request but sent no response head in time.
    #[error("{subject:#} did not answer within {} seconds", after.as_secs_f64())]
    UpstreamTimeout {
        subject: Subject,
        base_url: String,
        after: Duration,
    },
    /// The connection broke after it was established, before a response.
    /// `reason` (the root cause) is for the log only.
    #[error("{subject:#} closed the connection")]
    UpstreamBroken {
        subject: Subject,
        base_url: String,
        reason: String,
    },
    /// The host answered a metadata fetch with an error; its status and
    /// detail are passed back as they are.
    #[error("{detail}")]
    UpstreamStatus { status: StatusCode, detail: String },
    /// The host's answer could not be understood. `reason` is for the log
    /// only.
    #[error("{subject:#} sent an invalid response")]
    UpstreamInvalid {
        subject: Subject,
        base_url: String,
        reason: String,
    },
    /// The caller's request broke HTTP's framing rules (a second `Host`, a
    /// transfer coding other than chunked, a broken chunked body).
    #[error("{0}")]
    BadRequest(String),
    /// The caller's request body went over `server.max_body_bytes`.
    #[error("Request body is too large")]
    PayloadTooLarge,
    /// No replica can take the request (all bulkheads full, or none known).
    /// Named by its entry, never by its host group, whose name may be the
    /// hosts' URLs.
    #[error("No replica of {subject} can take the request: {reason}")]
    NoCapacity { subject: Subject, reason: String },
    /// The gateway is shutting down and takes no new runs.
    #[error("Gateway is shutting down")]
    Draining,
    /// A database route names no database the gateway can place.
    #[error(transparent)]
    Database(#[from] DbLookupError),
}

impl GatewayError {
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::NotFound(_) | GatewayError::RouteNotFound => StatusCode::NOT_FOUND,
            GatewayError::UpstreamConnect { .. }
            | GatewayError::UpstreamBroken { .. }
            | GatewayError::UpstreamInvalid { .. } => StatusCode::BAD_GATEWAY,
            GatewayError::UpstreamUnreachable { .. }
            | GatewayError::Draining
            | GatewayError::NoCapacity { .. } => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::UpstreamStatus { status, .. } => *status,
            GatewayError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::BadRequest(_) => StatusCode::BAD_REQUEST,
            GatewayError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            GatewayError::Database(error) => error.status(),
        }
    }

    /// A short, stable label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            GatewayError::NotFound(EntryKind::Agent) => "agent_not_found",
            GatewayError::NotFound(EntryKind::Team) => "team_not_found",
            GatewayError::NotFound(EntryKind::Workflow) => "workflow_not_found",
            GatewayError::NotFound(EntryKind::Database) => "database_not_found",
            GatewayError::RouteNotFound => "route_not_found",
            GatewayError::UpstreamConnect { .. } => "connect",
            GatewayError::UpstreamUnreachable { .. } => "connect_timeout",
            GatewayError::UpstreamTimeout { .. } => "timeout",
            GatewayError::UpstreamBroken { .. } => "broken",
            GatewayError::UpstreamStatus { .. } => "status",
            GatewayError::UpstreamInvalid { .. } => "invalid",
            GatewayError::PayloadTooLarge => "payload_too_large",
            GatewayError::BadRequest(_) => "bad_request",
            GatewayError::Draining => "draining",
            GatewayError::NoCapacity { .. } => "no_capacity",
            GatewayError::MethodNotAllowed => "method_not_allowed",
            GatewayError::Database(DbLookupError::Ambiguous(_)) => "database_ambiguous",
            GatewayError::Database(DbLookupError::Unreachable(_)) => "database_unreachable",
            GatewayError::Database(_) => "database_lookup",
        }
    }

    /// The same error, its `detail` naming the host of the `kind` entry `id`.
    pub fn for_entry(mut self, kind: EntryKind, id: &str) -> GatewayError {
        match &mut self {
            GatewayError::UpstreamConnect { subject, .. }
            | GatewayError::UpstreamUnreachable { subject, .. }
            | GatewayError::UpstreamTimeout { subject, .. }
            | GatewayError::UpstreamBroken { subject, .. }
            | GatewayError::UpstreamInvalid { subject, .. }
            | GatewayError::NoCapacity { subject, .. } => {
                *subject = Subject::Entry(kind, id.to_owned());
            }
            _ => {}
        }
        self
    }

    /// For the log, never for a caller: the base URL of the host that
    /// failed and the root cause, for the variants that have them.
    pub fn upstream_cause(&self) -> Option<(&str, String)> {
        match self {
            GatewayError::UpstreamConnect {
                base_url, reason, ..
            }
            | GatewayError::UpstreamBroken {
                base_url, reason, ..
            }
            | GatewayError::UpstreamInvalid {
                base_url, reason, ..
            } => Some((base_url, reason.clone())),
            GatewayError::UpstreamUnreachable {
                base_url, after, ..
            } => Some((base_url, format!("connect timed out after {after:?}"))),
            GatewayError::UpstreamTimeout {
                base_url, after, ..
            } => Some((base_url, format!("no answer within {after:?}"))),
            _ => None,
        }
    }
}

impl From<ClientError> for GatewayError {
    /// The subject is [`Subject::Host`] until the caller's context names it
    /// ([`GatewayError::for_entry`]).
    fn from(e: ClientError) -> Self {
        let subject = Subject::Host;
        match e {
            ClientError::RemoteServerUnavailable { base_url, phase } => match phase {
                UnavailablePhase::Connect { reason } => GatewayError::UpstreamConnect {
                    subject,
                    base_url,
                    reason,
                },
                UnavailablePhase::ConnectTimeout { after } => GatewayError::UpstreamUnreachable {
                    subject,
                    base_url,
                    after,
                },
                UnavailablePhase::ResponseTimeout { after }
                | UnavailablePhase::IdleTimeout { after } => GatewayError::UpstreamTimeout {
                    subject,
                    base_url,
                    after,
                },
            },
            ClientError::Transport { base_url, reason } => GatewayError::UpstreamBroken {
                subject,
                base_url,
                reason,
            },
            ClientError::Status { status, detail, .. } => {
                GatewayError::UpstreamStatus { status, detail }
            }
            // A client the gateway built from validated config cannot have a
            // bad base URL; should one appear, it is the upstream side's fault.
            ClientError::Decode { base_url, reason } | ClientError::Config { base_url, reason } => {
                GatewayError::UpstreamInvalid {
                    subject,
                    base_url,
                    reason,
                }
            }
        }
    }
}

impl From<UpstreamError> for GatewayError {
    fn from(e: UpstreamError) -> Self {
        match e {
            UpstreamError::Host(error) => error.into(),
            UpstreamError::BodyTooLarge => GatewayError::PayloadTooLarge,
            UpstreamError::RequestBody { reason, .. } => {
                GatewayError::BadRequest(format!("Invalid request body: {reason}"))
            }
            UpstreamError::NoReplica { reason, .. } => GatewayError::NoCapacity {
                subject: Subject::Host,
                reason,
            },
        }
    }
}

/// What failed behind an error response, for the access line only (the
/// caller's detail never names a host): attached to the response by
/// [`GatewayError`]'s `into_response`, taken off by the access layer.
#[derive(Debug, Clone)]
pub struct FailureCause {
    /// The base URL of the host that failed.
    pub host: String,
    /// The root cause ("Connection refused (os error 111)").
    pub cause: String,
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let status = self.status();
        let cause = self.upstream_cause().map(|(host, cause)| FailureCause {
            host: host.to_owned(),
            cause,
        });
        let mut response = (
            status,
            Json(serde_json::json!({ "detail": self.to_string() })),
        )
            .into_response();
        if matches!(
            self,
            GatewayError::Draining | GatewayError::NoCapacity { .. }
        ) {
            response.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static("1"),
            );
        }
        if let Some(cause) = cause {
            response.extensions_mut().insert(cause);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE_URL: &str = "http://10.0.0.5:7777";

    fn unavailable(phase: UnavailablePhase) -> ClientError {
        ClientError::RemoteServerUnavailable {
            base_url: BASE_URL.to_owned(),
            phase,
        }
    }

    #[test]
    fn details_name_the_workflow_and_never_the_host_address() {
        let after = Duration::from_secs(300);
        let reason = || format!("connection to {BASE_URL} reset");
        let cases = [
            (
                unavailable(UnavailablePhase::Connect { reason: reason() }),
                "Failed to connect to the host of workflow 'echo'",
                StatusCode::BAD_GATEWAY,
                "connect",
            ),
            (
                unavailable(UnavailablePhase::ConnectTimeout {
                    after: Duration::from_secs(2),
                }),
                "Connecting to the host of workflow 'echo' timed out after 2 seconds",
                StatusCode::SERVICE_UNAVAILABLE,
                "connect_timeout",
            ),
            (
                unavailable(UnavailablePhase::ResponseTimeout { after }),
                "The host of workflow 'echo' did not answer within 300 seconds",
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
            ),
            (
                ClientError::Transport {
                    base_url: BASE_URL.to_owned(),
                    reason: reason(),
                },
                "The host of workflow 'echo' closed the connection",
                StatusCode::BAD_GATEWAY,
                "broken",
            ),
            (
                ClientError::Decode {
                    base_url: BASE_URL.to_owned(),
                    reason: reason(),
                },
                "The host of workflow 'echo' sent an invalid response",
                StatusCode::BAD_GATEWAY,
                "invalid",
            ),
        ];
        for (client_error, detail, status, kind) in cases {
            let error = GatewayError::from(client_error).for_entry(EntryKind::Workflow, "echo");
            assert_eq!(error.to_string(), detail);
            assert_eq!((error.status(), error.kind()), (status, kind));
            // The log still learns where and why.
            let (base_url, _) = error.upstream_cause().unwrap();
            assert_eq!(base_url, BASE_URL);
        }
    }

    #[test]
    fn without_a_workflow_the_detail_says_the_host() {
        let error = GatewayError::from(unavailable(UnavailablePhase::IdleTimeout {
            after: Duration::from_millis(1500),
        }));
        assert_eq!(
            error.to_string(),
            "The host did not answer within 1.5 seconds"
        );
        let status = GatewayError::UpstreamStatus {
            status: StatusCode::UNAUTHORIZED,
            detail: "Unauthorized".to_owned(),
        };
        assert_eq!(
            status.for_entry(EntryKind::Workflow, "echo").to_string(),
            "Unauthorized"
        );
    }

    #[test]
    fn the_gateways_own_upstream_errors_are_the_callers_or_no_capacity() {
        let no_replica = UpstreamError::NoReplica {
            group: "g".to_owned(),
            reason: "no replicas are known".to_owned(),
            saturated: false,
        };
        let hung_up = UpstreamError::RequestBody {
            reason: "the caller left".to_owned(),
            hung_up: true,
        };
        let cases = [
            (
                no_replica.clone(),
                "No replica of the host of workflow 'echo' can take the request: no replicas are known",
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (
                UpstreamError::BodyTooLarge,
                "Request body is too large",
                StatusCode::PAYLOAD_TOO_LARGE,
            ),
            (
                hung_up.clone(),
                "Invalid request body: the caller left",
                StatusCode::BAD_REQUEST,
            ),
        ];
        for (upstream_error, detail, status) in cases {
            let error = GatewayError::from(upstream_error).for_entry(EntryKind::Workflow, "echo");
            assert_eq!(
                (error.to_string().as_str(), error.status()),
                (detail, status)
            );
            assert!(error.upstream_cause().is_none(), "no host to log");
        }
        assert!(no_replica.nothing_sent());
        assert!(!hung_up.nothing_sent() && !UpstreamError::BodyTooLarge.nothing_sent());
        // A host's error passes through as it would on its own.
        let refused = unavailable(UnavailablePhase::Connect {
            reason: "refused".to_owned(),
        });
        assert!(UpstreamError::from(refused.clone()).nothing_sent());
        assert_eq!(
            GatewayError::from(UpstreamError::from(refused.clone())).to_string(),
            GatewayError::from(refused).to_string()
        );
    }
}
