//! An `https://` host takes the same run path as a plain one: runs (JSON
//! and event streams) and metadata reach it through rustls, trusting the
//! CA named by `server.upstream_ca_file`, and a host whose certificate is
//! not trusted is refused before anything is sent. Served on the
//! multi-threaded runtime, so connections take the production topology
//! (one serving thread per worker).

use std::sync::Arc;

use crate::common::*;
use tokio::net::TcpListener;

/// A TLS front for `plain` (a mock host): a self-signed certificate for
/// 127.0.0.1, terminating TLS and relaying bytes to the mock host. Returns
/// its `https://` base URL and the certificate in PEM.
async fn tls_front(plain: &MockHost) -> (String, String) {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let pem = cert.cert.pem();
    let key = rustls_pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let backend = plain.addr;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A handshake the client refuses simply ends here.
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let mut plain = tokio::net::TcpStream::connect(backend).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (url, pem)
}

fn config(url: &str, ca_file: Option<&std::path::Path>) -> String {
    let mut toml = String::from("[server]\nhealth_checks = false\n");
    if let Some(path) = ca_file {
        toml.push_str(&format!("upstream_ca_file = \"{}\"\n", path.display()));
    }
    toml + &workflow("secure", url, "wf")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_streams_and_metadata_reach_an_https_host() {
    let host = MockHost::start("tls").await;
    let (url, pem) = tls_front(&host).await;
    let dir = TempDir::new();
    let ca = dir.0.join("ca.pem");
    std::fs::write(&ca, pem).unwrap();
    let gw = Gateway::start(&config(&url, Some(&ca))).await;
    let http = client();

    let run = http
        .post(gw.url("/workflows/secure/runs"))
        .form(&[("message", "over tls"), ("stream", "false")])
        .send()
        .await
        .unwrap();
    assert_eq!(run.status(), 200);
    let recorded = host.last();
    assert_eq!(recorded.path_and_query, "/workflows/wf/runs");
    assert_eq!(recorded.body, "message=over+tls&stream=false");

    let control = host.stream();
    let mut stream = http
        .post(gw.url("/workflows/secure/runs"))
        .form(&[("message", "stream me")])
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let event = "event: WorkflowStarted\ndata: {\"run_id\":\"r1\"}\n\n";
    control.send(event).await;
    assert_eq!(next_chunk(&mut stream).await.unwrap(), event.as_bytes());
    control.finish();
    assert!(rest(stream).await.is_empty());

    let doc = http.get(gw.url("/workflows/secure")).send().await.unwrap();
    assert_eq!(
        doc.status(),
        200,
        "metadata goes through the same TLS settings"
    );
    assert_eq!(json_of(&doc.bytes().await.unwrap())["id"], "secure");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_host_certificate_is_refused_before_anything_is_sent() {
    let host = MockHost::start("tls").await;
    let (url, _pem) = tls_front(&host).await;
    let gw = Gateway::start(&config(&url, None)).await;
    let run = client()
        .post(gw.url("/workflows/secure/runs"))
        .form(&[("message", "secret"), ("stream", "false")])
        .send()
        .await
        .unwrap();
    assert_eq!(run.status(), 502);
    assert_eq!(host.runs(), 0, "nothing reached the host");
    assert!(host.recorded().is_empty());
}
