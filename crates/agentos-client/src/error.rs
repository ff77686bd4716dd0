//! [`ClientError`]: every way a call to an AgentOS host can fail, one variant
//! per failure class, shaped after agno's client.
//!
//! agno raises `RemoteServerUnavailableError` when a host cannot be reached or
//! does not answer in time, a raw `HTTPStatusError` for a non-2xx answer, and
//! lets decode and mid-stream transport errors escape unwrapped. Here the same
//! split is one enum: [`ClientError::RemoteServerUnavailable`] (with the phase
//! that failed in [`UnavailablePhase`]), [`ClientError::Status`] (carrying the
//! AgentOS `detail`), [`ClientError::Decode`] and [`ClientError::Transport`].
//! agentos-gateway maps each to a status code in its `error` module; library users
//! match on the variants.

use std::time::Duration;

use http::StatusCode;

/// Which phase of a call found the host unavailable.
///
/// Every phase means "the host did not serve this call", which agno reports as
/// `RemoteServerUnavailableError`; the phase says whether anything was sent
/// (connect phases: nothing was, so any request may be retried elsewhere).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnavailablePhase {
    /// The TCP (or TLS) connect failed: refused, reset, or the name did not
    /// resolve. `reason` is the innermost error message.
    Connect {
        /// The innermost error, e.g. "Connection refused (os error 111)".
        reason: String,
    },
    /// The TCP (or TLS) connect did not finish within the connect timeout.
    ConnectTimeout {
        /// The connect timeout that passed.
        after: Duration,
    },
    /// The request was sent but no response head (or, for a non-streaming
    /// call, no complete answer) arrived within the timeout.
    ResponseTimeout {
        /// The timeout that passed.
        after: Duration,
    },
    /// A response body was being read and no next chunk arrived within the
    /// idle timeout (reset on every chunk; never a total deadline).
    IdleTimeout {
        /// The idle gap that passed.
        after: Duration,
    },
}

/// A failed call to an AgentOS host.
///
/// ```
/// use agentos_client::{ClientError, UnavailablePhase};
///
/// let e = ClientError::RemoteServerUnavailable {
///     base_url: "http://127.0.0.1:7777".into(),
///     phase: UnavailablePhase::Connect { reason: "Connection refused".into() },
/// };
/// // agno's message, word for word.
/// assert_eq!(e.to_string(), "Failed to connect to remote server at http://127.0.0.1:7777");
/// assert!(e.is_remote_server_unavailable() && e.nothing_sent());
/// ```
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The host could not be reached or did not answer in time: agno's
    /// `RemoteServerUnavailableError`, with the same message text.
    #[error("{}", unavailable_message(base_url, phase))]
    RemoteServerUnavailable {
        /// The host's base URL.
        base_url: String,
        /// The phase that failed.
        phase: UnavailablePhase,
    },
    /// The connection broke after it was established (reset mid-body, a
    /// malformed HTTP message). agno lets these escape as raw httpx errors.
    #[error("Connection to remote server at {base_url} failed: {reason}")]
    Transport {
        /// The host's base URL.
        base_url: String,
        /// The innermost error message.
        reason: String,
    },
    /// The host answered with a non-2xx status. `detail` is the AgentOS
    /// `{"detail": ...}` text when the body has one (a non-string detail,
    /// such as FastAPI's 422 list, as compact JSON), else the raw body.
    #[error("Remote server at {base_url} answered {status}: {detail}")]
    Status {
        /// The host's base URL.
        base_url: String,
        /// The HTTP status the host sent.
        status: StatusCode,
        /// The AgentOS `detail`, or the body text.
        detail: String,
    },
    /// A 2xx answer that is not what the call expects (not JSON, or JSON of
    /// the wrong shape, or an event whose data is not JSON).
    #[error("Remote server at {base_url} sent an invalid response: {reason}")]
    Decode {
        /// The host's base URL.
        base_url: String,
        /// What was wrong with it.
        reason: String,
    },
    /// The client could not be built: a base URL that is not an absolute
    /// http(s) URL, or an HTTP client that failed to initialise.
    #[error("Invalid client configuration for {base_url}: {reason}")]
    Config {
        /// The base URL as given.
        base_url: String,
        /// What was wrong.
        reason: String,
    },
}

fn unavailable_message(base_url: &str, phase: &UnavailablePhase) -> String {
    match phase {
        UnavailablePhase::Connect { .. } => {
            format!("Failed to connect to remote server at {base_url}")
        }
        UnavailablePhase::ConnectTimeout { after } => format!(
            "Failed to connect to remote server at {base_url}: connect timed out after {} seconds",
            after.as_secs_f64()
        ),
        UnavailablePhase::ResponseTimeout { after } | UnavailablePhase::IdleTimeout { after } => {
            format!(
                "Request to remote server at {base_url} timed out after {} seconds",
                after.as_secs_f64()
            )
        }
    }
}

impl ClientError {
    /// The message with its underlying cause, for operators and logs: a
    /// connect failure's reason ("DNS look-up of ... failed", "Connection
    /// refused"), which the agno-compatible message leaves out.
    pub fn diagnostic(&self) -> String {
        match self {
            ClientError::RemoteServerUnavailable {
                phase: UnavailablePhase::Connect { reason },
                ..
            } => format!("{self}: {reason}"),
            other => other.to_string(),
        }
    }

    /// True for [`ClientError::RemoteServerUnavailable`]: the cases agno
    /// reports as `RemoteServerUnavailableError` (HTTP 503 in agno).
    pub fn is_remote_server_unavailable(&self) -> bool {
        matches!(self, ClientError::RemoteServerUnavailable { .. })
    }

    /// True when nothing was sent (the connect failed), so any request,
    /// even a non-idempotent run, may be tried elsewhere.
    pub fn nothing_sent(&self) -> bool {
        matches!(
            self,
            ClientError::RemoteServerUnavailable {
                phase: UnavailablePhase::Connect { .. } | UnavailablePhase::ConnectTimeout { .. },
                ..
            }
        )
    }

    /// The HTTP status of a [`ClientError::Status`].
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The AgentOS `detail` of a [`ClientError::Status`].
    pub fn detail(&self) -> Option<&str> {
        match self {
            ClientError::Status { detail, .. } => Some(detail),
            _ => None,
        }
    }

    /// The base URL of the host the call went to.
    pub fn base_url(&self) -> &str {
        match self {
            ClientError::RemoteServerUnavailable { base_url, .. }
            | ClientError::Transport { base_url, .. }
            | ClientError::Status { base_url, .. }
            | ClientError::Decode { base_url, .. }
            | ClientError::Config { base_url, .. } => base_url,
        }
    }
}

/// The AgentOS `detail` string of an error body, or the body itself.
///
/// ```
/// use agentos_client::detail_of;
/// assert_eq!(detail_of(br#"{"detail":"Workflow not found"}"#), "Workflow not found");
/// assert_eq!(detail_of(b"Bad Gateway"), "Bad Gateway");
/// ```
pub fn detail_of(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        detail: serde_json::Value,
    }
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(ErrorBody {
            detail: serde_json::Value::String(s),
        }) => s,
        Ok(ErrorBody { detail }) => detail.to_string(),
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    }
}
