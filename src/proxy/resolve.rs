//! Host name resolution for host connections: the system resolver
//! (hyper-util's `GaiResolver`, getaddrinfo on a blocking thread), with a
//! failure typed as a DNS failure that names the host. A name that does not
//! resolve then reads "DNS look-up of `host` failed" in the log and at
//! `/gateway/upstreams`, not as a bare connect failure.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::{GaiAddrs, GaiResolver, Name};
use tower::Service;

/// The resolver every host connector uses.
#[derive(Clone, Debug)]
pub struct Resolver(GaiResolver);

impl Default for Resolver {
    fn default() -> Self {
        Resolver(GaiResolver::new())
    }
}

/// A host name that did not resolve.
#[derive(Debug, thiserror::Error)]
#[error("DNS look-up of {host} failed: {source}")]
pub struct DnsError {
    pub host: String,
    #[source]
    pub source: std::io::Error,
}

impl Service<Name> for Resolver {
    type Response = GaiAddrs;
    type Error = DnsError;
    type Future = Pin<Box<dyn Future<Output = Result<GaiAddrs, DnsError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), DnsError>> {
        self.0.poll_ready(cx).map_err(|source| DnsError {
            host: String::new(),
            source,
        })
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let host = name.as_str().to_owned();
        let lookup = self.0.call(name);
        Box::pin(async move { lookup.await.map_err(|source| DnsError { host, source }) })
    }
}
