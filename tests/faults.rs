//! Backends that misbehave after they were ready: they refuse connections for a moment, or
//! for good. The client gets an answer either way, and nothing else is affected.

mod common;

use common::*;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn an_upstream_that_refuses_connections_for_a_moment_is_waited_for() {
    let sb = Sandbox::new();
    let port = free_port();
    let upstream: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let rouse = Rouse::serve(&sb, &none_route("a", &["a.test"], upstream));

    // Nothing listens yet: the request starts while connections are refused, and the
    // upstream comes up 120 ms later.
    let listening = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(120)).await;
        let listener = tokio::net::TcpListener::bind(upstream).await.unwrap();
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut head = tokio::io::BufReader::new(&mut stream);
        read_head(&mut head).await.unwrap();
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nlater")
            .await
            .unwrap();
    });
    let resp = get(rouse.addr(), "a.test").await;
    assert_eq!(
        (resp.status, resp.body.as_str()),
        (200, "later"),
        "{resp:?}"
    );
    listening.await.unwrap();
}

#[tokio::test]
async fn an_upstream_that_keeps_refusing_gets_a_502_that_says_so() {
    let sb = Sandbox::new();
    let backend = EchoBackend::start().await;
    let dead: std::net::SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let rouse = Rouse::serve(
        &sb,
        &(none_route("dead", &["dead.test"], dead) + &none_route("ok", &["ok.test"], backend.addr)),
    );

    let started = Instant::now();
    let resp = get(rouse.addr(), "dead.test").await;
    let took = started.elapsed();
    assert_eq!(resp.status, 502, "{resp:?}");
    assert!(
        resp.body.contains(r#"route "dead""#) && resp.body.contains("refused"),
        "{resp:?}"
    );
    // Tried again briefly, then given up: not at once, and not for long.
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "502 after {took:?}"
    );
    let resp = get(rouse.addr(), "ok.test").await;
    assert_eq!(resp.status, 200, "the other route: {resp:?}");
}
