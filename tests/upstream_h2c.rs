//! `upstream_protocol = "h2c"` and `"h2"`: requests reach the upstream over HTTP/2 (prior
//! knowledge, or TLS with the upstream certificate verified),
//! with the client's host as `:authority`, while rouse connects to the configured address.

mod common;

use std::convert::Infallible;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// An HTTP/2-only upstream that answers with the version and authority it received.
async fn h2_upstream() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    let body = format!(
                        "{:?} {} {}",
                        req.version(),
                        req.uri().authority().map_or("-", |a| a.as_str()),
                        req.headers()
                            .get("x-forwarded-host")
                            .and_then(|h| h.to_str().ok())
                            .unwrap_or("-"),
                    );
                    Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(body))))
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn h2c_upstream_gets_http2_with_the_site_as_authority() {
    let sb = Sandbox::new();
    let upstream = h2_upstream().await;
    let route = none_route("h2", &["h2.test"], upstream).replace(
        "[route.backend]",
        "upstream_protocol = \"h2c\"\n[route.backend]",
    );
    let rouse = Rouse::serve(&sb, &route);
    for _ in 0..2 {
        let resp = get(rouse.addr(), "h2.test").await;
        assert_eq!(resp.status, 200, "body: {}", resp.body);
        assert_eq!(resp.body, "HTTP/2.0 h2.test h2.test");
    }
}

/// An HTTP/2 upstream behind TLS (ALPN h2) with a certificate for `h2s.test` from a test CA.
async fn h2_tls_upstream(cert: &common::tls::Cert) -> std::net::SocketAddr {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(&cert.cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&cert.key).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    let body = format!(
                        "{:?} {} {}",
                        req.version(),
                        req.uri().scheme_str().unwrap_or("-"),
                        req.uri().authority().map_or("-", |a| a.as_str()),
                    );
                    Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(body))))
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn h2_upstream_gets_http2_over_tls_verified_against_upstream_ca() {
    let sb = Sandbox::new();
    let ca = common::tls::Ca::new(&sb);
    let cert = ca.issue(&sb, "upstream", &["h2s.test"], common::tls::Key::Ecdsa);
    let upstream = h2_tls_upstream(&cert).await;
    let route = none_route("h2s", &["h2s.test"], upstream).replace(
        "[route.backend]",
        &format!(
            "upstream_protocol = \"h2\"\nupstream_ca = {}\n[route.backend]",
            q(ca.pem.to_str().unwrap())
        ),
    );
    let rouse = Rouse::serve(&sb, &route);
    let resp = get(rouse.addr(), "h2s.test").await;
    assert_eq!(resp.status, 200, "body: {}", resp.body);
    assert_eq!(resp.body, "HTTP/2.0 https h2s.test");
}

#[tokio::test]
async fn h2_upstream_with_an_untrusted_certificate_is_a_502() {
    let sb = Sandbox::new();
    let trusted = common::tls::Ca::new(&sb);
    let other_dir = Sandbox::new();
    let untrusted = common::tls::Ca::new(&other_dir);
    let cert = untrusted.issue(
        &other_dir,
        "upstream",
        &["h2s.test"],
        common::tls::Key::Ecdsa,
    );
    let upstream = h2_tls_upstream(&cert).await;
    let route = none_route("h2s", &["h2s.test"], upstream).replace(
        "[route.backend]",
        &format!(
            "upstream_protocol = \"h2\"\nupstream_ca = {}\n[route.backend]",
            q(trusted.pem.to_str().unwrap())
        ),
    );
    let rouse = Rouse::serve(&sb, &route);
    let resp = get(rouse.addr(), "h2s.test").await;
    assert_eq!(resp.status, 502, "body: {}", resp.body);
    assert!(resp.body.contains("route \"h2s\""), "body: {}", resp.body);
}
