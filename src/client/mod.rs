//! An HTTP client for one AgentOS host: the pooled connection, the timeouts
//! and the mapping from transport failures to [`ClientError`].
//!
//! The gateway keeps one [`AgentOsClient`] per distinct host base URL, so all
//! workflows on a host share one keep-alive pool. Metadata fetches
//! ([`AgentOsClient::get_json`]) and the byte-for-byte proxy path
//! (`crate::proxy`) both go through it, so there is one place that decides what
//! "unreachable" or "timed out" means.

use std::error::Error as _;
use std::time::Duration;

use http::StatusCode;
use url::Url;

/// A failed call to an AgentOS host.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The host refused or reset the TCP connection (agno raises
    /// `RemoteServerUnavailableError` for this).
    #[error("Failed to connect to remote server at {base_url}")]
    Connect { base_url: String },
    /// The TCP connect did not complete within the connect timeout.
    #[error("Connecting to remote server at {base_url} timed out after {after:?}")]
    ConnectTimeout { base_url: String, after: Duration },
    /// No response head, or no next body chunk, within the timeout.
    #[error("Request to remote server at {base_url} timed out after {} seconds", after.as_secs_f64())]
    Timeout { base_url: String, after: Duration },
    /// The connection broke after it was established.
    #[error("Connection to remote server at {base_url} failed: {reason}")]
    Transport { base_url: String, reason: String },
    /// The host answered with a non-2xx status; `detail` is its AgentOS
    /// `detail` text when it sent one, else the raw body.
    #[error("Remote server at {base_url} answered {status}: {detail}")]
    Status {
        base_url: String,
        status: StatusCode,
        detail: String,
    },
    /// A 2xx body that is not the JSON the call expects.
    #[error("Remote server at {base_url} sent an invalid response: {reason}")]
    Decode { base_url: String, reason: String },
    /// The caller's request body went over the configured limit while it was
    /// being streamed upstream.
    #[error("request body is too large")]
    BodyTooLarge,
}

impl ClientError {
    /// True when the host could not be reached at all (connect refused or timed
    /// out): nothing was sent, so any request may be tried elsewhere.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            ClientError::Connect { .. } | ClientError::ConnectTimeout { .. }
        )
    }
}

/// A pooled HTTP client bound to one AgentOS base URL.
#[derive(Debug, Clone)]
pub struct AgentOsClient {
    base_url: String,
    http: reqwest::Client,
    connect_timeout: Duration,
}

impl AgentOsClient {
    /// Builds the client. `connect_timeout` bounds the TCP (and TLS) connect
    /// only; per-call timeouts are given to each call.
    pub fn new(base_url: &Url, connect_timeout: Duration) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            // A proxy passes redirects back to its caller instead of following them.
            .redirect(reqwest::redirect::Policy::none())
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(1024)
            // Environment proxies would silently reroute host traffic.
            .no_proxy()
            .build()?;
        Ok(AgentOsClient {
            base_url: base_url.as_str().trim_end_matches('/').to_owned(),
            http,
            connect_timeout,
        })
    }

    /// The host's base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The underlying pooled client, for the streaming proxy path.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// `base_url` joined with an absolute path (and optional query).
    pub fn url(&self, path_and_query: &str) -> String {
        let mut url = String::with_capacity(self.base_url.len() + path_and_query.len());
        url.push_str(&self.base_url);
        url.push_str(path_and_query);
        url
    }

    /// `GET path` and decode the JSON answer, all within `timeout`.
    pub async fn get_json(
        &self,
        path: &str,
        timeout: Duration,
        bearer: Option<&str>,
    ) -> Result<serde_json::Value, ClientError> {
        let mut request = self.http.get(self.url(path));
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        let call = async {
            let response = request
                .send()
                .await
                .map_err(|e| self.classify(&e, timeout))?;
            let status = response.status();
            let body = response
                .bytes()
                .await
                .map_err(|e| self.classify(&e, timeout))?;
            if !status.is_success() {
                return Err(ClientError::Status {
                    base_url: self.base_url.clone(),
                    status,
                    detail: detail_of(&body),
                });
            }
            serde_json::from_slice(&body).map_err(|e| ClientError::Decode {
                base_url: self.base_url.clone(),
                reason: e.to_string(),
            })
        };
        match tokio::time::timeout(timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(self.timeout_error(timeout)),
        }
    }

    /// The error for "no answer within `after`".
    pub fn timeout_error(&self, after: Duration) -> ClientError {
        ClientError::Timeout {
            base_url: self.base_url.clone(),
            after,
        }
    }

    /// Maps a reqwest failure to the phase it happened in.
    pub fn classify(&self, e: &reqwest::Error, timeout: Duration) -> ClientError {
        let base_url = self.base_url.clone();
        if has_source::<http_body_util::LengthLimitError>(e) {
            return ClientError::BodyTooLarge;
        }
        if e.is_connect() {
            if e.is_timeout() || has_source::<tokio::time::error::Elapsed>(e) {
                return ClientError::ConnectTimeout {
                    base_url,
                    after: self.connect_timeout,
                };
            }
            return ClientError::Connect { base_url };
        }
        if e.is_timeout() {
            return ClientError::Timeout {
                base_url,
                after: timeout,
            };
        }
        ClientError::Transport {
            base_url,
            reason: root_cause(e),
        }
    }
}

/// The AgentOS `detail` string of an error body, or the body itself.
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

fn has_source<E: std::error::Error + 'static>(e: &reqwest::Error) -> bool {
    let mut source = e.source();
    while let Some(s) = source {
        if s.is::<E>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// The innermost message of an error chain: "connection reset by peer"
/// rather than "error sending request".
fn root_cause(e: &reqwest::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message = s.to_string();
        source = s.source();
    }
    message
}
