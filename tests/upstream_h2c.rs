//! `upstream_protocol = "h2c"`: requests reach the upstream over HTTP/2 with prior knowledge,
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
