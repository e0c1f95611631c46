//! Limits on client connections: header_timeout, keepalive_timeout, max_header_bytes.

mod common;

use common::*;
use std::time::Duration;

/// Read until the server answers or closes: Ok(Some(resp)), Ok(None) on a close without an
/// answer; Err if neither happens within `within`.
async fn answer_or_close(conn: &mut Conn, within: Duration) -> Result<Option<Response>, ()> {
    match tokio::time::timeout(within, conn.read_response()).await {
        Err(_) => Err(()),
        Ok(Ok(resp)) => Ok(Some(resp)),
        Ok(Err(_)) => Ok(None),
    }
}

#[tokio::test]
async fn client_that_never_finishes_its_request_head_is_cut_off_after_header_timeout() {
    let sb = Sandbox::new();
    let backend = EchoBackend::start().await;
    let config = "[proxy]\nheader_timeout = \"300ms\"\n\n".to_string()
        + &none_route("a", &["a.test"], backend.addr);
    let rouse = Rouse::serve(&sb, &config);

    let mut conn = Conn::connect(rouse.addr()).await.unwrap();
    conn.send("GET / HTTP/1.1\r\nHost: a.te").await.unwrap();
    match answer_or_close(&mut conn, Duration::from_secs(5)).await {
        Err(()) => {
            panic!("connection with a half-sent head still open 5s later (header_timeout 300ms)")
        }
        Ok(None) => {}
        Ok(Some(resp)) => assert_eq!(resp.status, 408, "{resp:?}"),
    }
    assert!(backend.heads().is_empty());

    // A client that sends its head in time is served.
    let resp = get(rouse.addr(), "a.test").await;
    assert_eq!(resp.status, 200, "{resp:?}");
}

#[tokio::test]
async fn idle_keepalive_connection_is_closed_after_keepalive_timeout_and_the_backend_then_stops() {
    let sb = Sandbox::new();
    let port = free_port();
    let config = "[proxy]\nkeepalive_timeout = \"300ms\"\n\n".to_string()
        + &exec_route(
            "a",
            &["a.test"],
            port,
            &counted_static(&sb, "a.pids", port, "hi"),
            "idle_timeout = \"300ms\"",
        );
    let rouse = Rouse::serve(&sb, &config);

    let mut conn = Conn::connect(rouse.addr()).await.unwrap();
    conn.send("GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .await
        .unwrap();
    let resp = conn.read_response().await.unwrap();
    assert_eq!((resp.status, resp.body.trim_end()), (200, "hi"), "{resp:?}");
    let pid = sb.last_pid("a.pids").unwrap();

    // The client just sits on the connection: rouse closes it...
    match answer_or_close(&mut conn, Duration::from_secs(5)).await {
        Err(()) => {
            panic!("idle keep-alive connection still open 5s later (keepalive_timeout 300ms)")
        }
        Ok(None) => {}
        Ok(Some(resp)) => panic!("unexpected response on an idle connection: {resp:?}"),
    }
    // ...and so the route becomes idle and its backend is stopped, though the client never hung up.
    assert!(
        wait_until(Duration::from_secs(5), || !alive(pid)).await,
        "backend still running after its only client connection was closed for idleness"
    );
}

#[tokio::test]
async fn idle_keepalive_time_is_bounded_by_keepalive_timeout_not_header_timeout() {
    let sb = Sandbox::new();
    let backend = EchoBackend::start().await;
    let config = "[proxy]\nheader_timeout = \"200ms\"\nkeepalive_timeout = \"1500ms\"\n\n"
        .to_string()
        + &none_route("a", &["a.test"], backend.addr);
    let rouse = Rouse::serve(&sb, &config);

    let mut conn = Conn::connect(rouse.addr()).await.unwrap();
    let request = "GET / HTTP/1.1\r\nHost: a.test\r\n\r\n";
    conn.send(request).await.unwrap();
    assert_eq!(conn.read_response().await.unwrap().status, 200);
    // Idle for several header timeouts: the connection is still open and serves the next
    // request (the header clock only runs while a head is arriving).
    tokio::time::sleep(Duration::from_millis(700)).await;
    conn.send(request).await.unwrap();
    let resp = conn.read_response().await.unwrap();
    assert_eq!(resp.status, 200, "{resp:?}");
    // A head that starts now and stalls is cut off at the header timeout, well before the
    // keep-alive timeout would end the connection.
    let started = std::time::Instant::now();
    conn.send("GET / HTTP/1.1\r\nHost: a.").await.unwrap();
    match answer_or_close(&mut conn, Duration::from_secs(5)).await {
        Err(()) => panic!("stalled head still open 5s later (header_timeout 200ms)"),
        Ok(None) => {}
        Ok(Some(resp)) => panic!("unexpected response to a stalled head: {resp:?}"),
    }
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_millis(1200),
        "stalled head closed after {waited:?}: header_timeout is 200ms, keepalive 1500ms"
    );
    assert_eq!(backend.heads().len(), 2);
}

#[tokio::test]
async fn request_head_larger_than_max_header_bytes_is_refused() {
    let sb = Sandbox::new();
    let backend = EchoBackend::start().await;
    let config = "[proxy]\nmax_header_bytes = 8192\n\n".to_string()
        + &none_route("a", &["a.test"], backend.addr);
    let rouse = Rouse::serve(&sb, &config);

    let small = "x".repeat(2000);
    let resp = send(
        rouse.addr(),
        &format!("GET / HTTP/1.1\r\nHost: a.test\r\nX-Small: {small}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(
        resp.status, 200,
        "a 2 KB header is within 8192 bytes: {resp:?}"
    );

    let big = "x".repeat(64 * 1024);
    let mut conn = Conn::connect(rouse.addr()).await.unwrap();
    // The server may close before reading all of it; a write error is an acceptable refusal.
    let _ = conn
        .send(&format!(
            "GET / HTTP/1.1\r\nHost: a.test\r\nX-Big: {big}\r\nConnection: close\r\n\r\n"
        ))
        .await;
    match answer_or_close(&mut conn, Duration::from_secs(5)).await {
        Err(()) => panic!("no answer and no close for a 64 KB header with max_header_bytes 8192"),
        Ok(None) => {}
        Ok(Some(resp)) => assert!(
            matches!(resp.status, 431 | 400),
            "expected 431 (or 400): {resp:?}"
        ),
    }
    assert_eq!(
        backend.heads().len(),
        1,
        "the oversized request must not reach the upstream"
    );
}
