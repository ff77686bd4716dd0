//! The proxy's transport to one replica: hyper-util's pooled client over
//! one connector for `http://` and `https://` (rustls), so an `https` host
//! takes the same run path as a plain one.
//!
//! hyper frames both directions. The request is re-framed from the body the
//! gateway decoded, never from what the caller declared: the caller's
//! `Content-Length` is dropped and hyper writes the length the body reports
//! (exact when the caller's was, else chunked). A host answer hyper cannot
//! parse fails the request; [`check_framing`] refuses the answers it parses
//! but whose framing is ambiguous. Either way the connection is dropped
//! unread, which closes it: it is never reused.
//!
//! Pooling is hyper-util's, one pool per replica and serving thread (a
//! replica that DNS discovery removes drops its pools with it). Per thread
//! because the gateway serves thread-per-core (`crate::server`): a pool
//! shared by the threads hands one thread's connections to the other, and
//! every answer then wakes a second thread; BENCHMARKS.md has what that
//! cost. Idle connections are kept for
//! `pool_idle_timeout`, below uvicorn's 5 s keep-alive, so the gateway does
//! not write into a connection the host is closing; when it does anyway and
//! nothing of the request was written, hyper-util sends it again on a fresh
//! connection.

use std::error::Error as _;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use http::header::{self, HeaderMap};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, Uri};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::body::{AttemptBody, CallerBodyError};
use super::resolve::{DnsError, Resolver};
use crate::client::{ClientError, UnavailablePhase, root_cause};
use crate::error::UpstreamError;
use crate::sharded::Sharded;

/// Idle pooled connections kept per replica, at most.
const MAX_IDLE: usize = 1024;

/// TLS settings shared by every host connection: the system's roots plus
/// `server.upstream_ca_file`.
pub type HostTls = Arc<rustls::ClientConfig>;

/// Builds the host TLS settings: the system's roots when `system_roots`
/// (some host is `https://`), plus `ca_file`'s. Reading the system's roots
/// takes tens of milliseconds, so it is done once per process, and only
/// when needed: a gateway with plain hosts only starts without it.
pub fn host_tls(ca_file: Option<&Path>, system_roots: bool) -> Result<HostTls, String> {
    static SYSTEM_ROOTS: OnceLock<rustls::RootCertStore> = OnceLock::new();
    let mut roots = if system_roots {
        SYSTEM_ROOTS
            .get_or_init(|| {
                let mut roots = rustls::RootCertStore::empty();
                let found = rustls_native_certs::load_native_certs();
                for error in &found.errors {
                    tracing::warn!(%error, "a system root certificate could not be read");
                }
                roots.add_parsable_certificates(found.certs);
                roots
            })
            .clone()
    } else {
        rustls::RootCertStore::empty()
    };
    if let Some(path) = ca_file {
        use rustls_pki_types::pem::PemObject as _;
        let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        for cert in certs {
            let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// What every replica's transport shares: TLS, and the pool and head
/// limits from `[server]`.
#[derive(Clone)]
pub struct TransportSettings {
    pub tls: HostTls,
    pub pool_idle_timeout: Duration,
    /// Largest host answer head; hyper refuses a bigger one (502).
    pub max_head_bytes: usize,
}

impl std::fmt::Debug for TransportSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransportSettings")
            .field("pool_idle_timeout", &self.pool_idle_timeout)
            .field("max_head_bytes", &self.max_head_bytes)
            .finish_non_exhaustive()
    }
}

/// hyper-util's client, as the transport uses it.
type HostClient = Client<HttpsConnector<HttpConnector<Resolver>>, AttemptBody>;

/// One replica's connections.
pub struct Transport {
    /// One client (and pool) per serving thread, made on first use.
    clients: Sharded<OnceLock<HostClient>>,
    connector: HttpsConnector<HttpConnector<Resolver>>,
    pool_idle_timeout: Duration,
    max_head_bytes: usize,
    scheme: Scheme,
    authority: Authority,
    /// The base URL's path, without a trailing slash ("" for none).
    prefix: String,
    base_url: Arc<str>,
    connect_timeout: Duration,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl Transport {
    /// The transport for the replica at `base_url` (validated by config:
    /// `http(s)://host[:port][/prefix]`).
    pub fn new(
        base_url: &url::Url,
        settings: &TransportSettings,
        connect_timeout: Duration,
    ) -> Result<Transport, String> {
        let mut http = HttpConnector::new_with_resolver(Resolver::default());
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(rustls::ClientConfig::clone(&settings.tls))
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let scheme = Scheme::try_from(base_url.scheme()).map_err(|e| e.to_string())?;
        let host = base_url.host_str().ok_or("no host")?;
        let authority = match base_url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        Ok(Transport {
            clients: Sharded::default(),
            connector,
            pool_idle_timeout: settings.pool_idle_timeout,
            max_head_bytes: settings.max_head_bytes,
            scheme,
            authority: Authority::try_from(authority).map_err(|e| e.to_string())?,
            prefix: base_url.path().trim_end_matches('/').to_owned(),
            base_url: Arc::from(base_url.as_str().trim_end_matches('/')),
            connect_timeout,
        })
    }

    /// This thread's client.
    fn client(&self) -> &HostClient {
        self.clients.local().1.get_or_init(|| {
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(self.pool_idle_timeout)
                .pool_max_idle_per_host(MAX_IDLE)
                .http1_max_buf_size(self.max_head_bytes)
                .pool_timer(TokioTimer::new())
                .timer(TokioTimer::new())
                .build(self.connector.clone())
        })
    }

    /// Sends one request and returns at its response head. `headers` are
    /// forwarded as they are, but for `Host` (the host's own) and
    /// `Content-Length` (hyper writes the body's own).
    pub async fn send(
        &self,
        method: &Method,
        path_and_query: &str,
        mut headers: HeaderMap,
        body: AttemptBody,
    ) -> Result<Response<HostBody>, UpstreamError> {
        let target = if self.prefix.is_empty() {
            PathAndQuery::try_from(path_and_query)
        } else {
            PathAndQuery::try_from(format!("{}{path_and_query}", self.prefix))
        }
        .map_err(|e| self.transport_error(e.to_string()))?;
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(self.scheme.clone());
        uri.authority = Some(self.authority.clone());
        uri.path_and_query = Some(target);
        let uri = Uri::from_parts(uri).map_err(|e| self.transport_error(e.to_string()))?;
        headers.remove(header::HOST);
        headers.remove(header::CONTENT_LENGTH);
        let mut request = Request::new(body);
        *request.method_mut() = method.clone();
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        let response = self
            .client()
            .request(request)
            .await
            .map_err(|e| self.classify(&e))?;
        check_framing(response.headers()).map_err(|reason| ClientError::Decode {
            base_url: self.base_url.to_string(),
            reason: reason.to_owned(),
        })?;
        let base_url = self.base_url.clone();
        Ok(response.map(|inner| HostBody { inner, base_url }))
    }

    fn transport_error(&self, reason: String) -> ClientError {
        ClientError::Transport {
            base_url: self.base_url.to_string(),
            reason,
        }
    }

    /// Maps a failed exchange to its phase: connect (nothing was sent), the
    /// caller's own body failing (the caller's fault, not the host's), or a
    /// broken connection or message.
    fn classify(&self, error: &hyper_util::client::legacy::Error) -> UpstreamError {
        if let Some(caller) = find::<CallerBodyError>(error) {
            return caller.into();
        }
        // A name that did not resolve says so; otherwise the innermost
        // error ("Connection refused") is the informative one.
        let reason = match find::<DnsError>(error) {
            Some(dns) => dns.to_string(),
            None => root_cause(error),
        };
        if error.is_connect() {
            let timed_out = find::<std::io::Error>(error)
                .is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut);
            let phase = if timed_out {
                UnavailablePhase::ConnectTimeout {
                    after: self.connect_timeout,
                }
            } else {
                UnavailablePhase::Connect { reason }
            };
            return ClientError::RemoteServerUnavailable {
                base_url: self.base_url.to_string(),
                phase,
            }
            .into();
        }
        self.transport_error(reason).into()
    }
}

/// Refuses a host answer whose framing is ambiguous (RFC 9112 §6.3): both
/// `Transfer-Encoding` and `Content-Length` (a response-splitting attempt,
/// or a broken host), or a transfer coding other than `chunked` alone,
/// which the gateway could not re-frame faithfully.
pub fn check_framing(headers: &HeaderMap) -> Result<(), &'static str> {
    let mut codings = headers.get_all(header::TRANSFER_ENCODING).iter();
    let Some(coding) = codings.next() else {
        return Ok(());
    };
    if headers.contains_key(header::CONTENT_LENGTH) {
        return Err("both Transfer-Encoding and Content-Length");
    }
    if codings.next().is_some() || !coding.as_bytes().eq_ignore_ascii_case(b"chunked") {
        return Err("a Transfer-Encoding other than chunked");
    }
    Ok(())
}

/// The first error of type `E` in `error`'s source chain.
fn find<'a, E: std::error::Error + 'static>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a E> {
    let mut source = Some(error);
    while let Some(e) = source {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found);
        }
        source = e.source();
    }
    None
}

/// A host's response body as hyper decoded it, its errors mapped to
/// [`ClientError`]. Dropped before its end, it closes the connection.
pub struct HostBody {
    inner: Incoming,
    base_url: Arc<str>,
}

impl HostBody {
    /// The body's data chunks, as they arrive.
    pub fn into_stream(self) -> impl Stream<Item = Result<Bytes, ClientError>> + Send + 'static {
        http_body_util::BodyDataStream::new(self)
    }
}

impl http_body::Body for HostBody {
    type Data = Bytes;
    type Error = ClientError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientError>>> {
        let this = self.get_mut();
        Pin::new(&mut this.inner).poll_frame(cx).map_err(|e| {
            let reason = match e.source() {
                Some(source) => format!("{e}: {source}"),
                None => e.to_string(),
            };
            ClientError::Transport {
                base_url: this.base_url.to_string(),
                reason,
            }
        })
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transport(url: &str) -> Transport {
        let settings = TransportSettings {
            tls: host_tls(None, false).unwrap(),
            pool_idle_timeout: Duration::from_secs(1),
            max_head_bytes: 8192,
        };
        let url = url::Url::parse(url).unwrap();
        Transport::new(&url, &settings, Duration::from_secs(1)).unwrap()
    }

    #[test]
    fn base_urls_split_into_authority_and_prefix() {
        let t = transport("http://127.0.0.1:7777");
        assert_eq!(
            (t.authority.as_str(), t.prefix.as_str()),
            ("127.0.0.1:7777", "")
        );
        let t = transport("http://agentos.internal/api/v1/");
        assert_eq!(
            (t.authority.as_str(), t.prefix.as_str()),
            ("agentos.internal", "/api/v1")
        );
        let t = transport("https://[::1]:8000");
        assert_eq!(
            (t.scheme.as_str(), t.authority.as_str()),
            ("https", "[::1]:8000")
        );
    }

    #[test]
    fn ambiguous_answer_framing_is_refused() {
        let mut h = HeaderMap::new();
        assert!(check_framing(&h).is_ok());
        h.insert(header::CONTENT_LENGTH, "5".parse().unwrap());
        assert!(check_framing(&h).is_ok());
        h.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        assert!(check_framing(&h).is_err(), "CL + TE");
        h.remove(header::CONTENT_LENGTH);
        assert!(check_framing(&h).is_ok());
        h.insert(header::TRANSFER_ENCODING, "gzip, chunked".parse().unwrap());
        assert!(check_framing(&h).is_err());
        h.insert(header::TRANSFER_ENCODING, "Chunked".parse().unwrap());
        h.append(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        assert!(check_framing(&h).is_err(), "two TE lines");
    }
}
