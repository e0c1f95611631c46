//! What the upstream receives and what the client gets back through rouse: forwarding headers,
//! hop-by-hop headers, request bodies, upgraded connections, and HTTP/2 clients.

mod common;

use common::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn upstream_gets_forwarding_headers_and_no_hop_by_hop_headers() {
    let sb = Sandbox::new();
    let backend = EchoBackend::start().await;
    let rouse = Rouse::serve(&sb, &none_route("fwd", &["fwd.test"], backend.addr));

    let resp = send(
        rouse.addr(),
        "GET /path/page?q=1 HTTP/1.1\r\nHost: fwd.test\r\nConnection: close, X-Hop\r\nX-Hop: secret\r\n\
         Keep-Alive: timeout=5\r\nX-Custom: kept\r\nUser-Agent: rouse-tests\r\n\r\n",
    )
    .await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let head = &resp.body;
    let first = head.lines().next().unwrap_or("");
    assert_eq!(
        first, "GET /path/page?q=1 HTTP/1.1",
        "request line as the upstream saw it:\n{head}"
    );
    assert_eq!(
        head_header(head, "host").as_deref(),
        Some("fwd.test"),
        "Host preserved:\n{head}"
    );
    assert_eq!(
        head_header(head, "x-forwarded-for").as_deref(),
        Some("127.0.0.1"),
        "{head}"
    );
    assert_eq!(
        head_header(head, "x-forwarded-proto").as_deref(),
        Some("http"),
        "{head}"
    );
    assert_eq!(
        head_header(head, "x-forwarded-host").as_deref(),
        Some("fwd.test"),
        "{head}"
    );
    assert_eq!(
        head_header(head, "x-custom").as_deref(),
        Some("kept"),
        "{head}"
    );
    assert_eq!(
        head_header(head, "user-agent").as_deref(),
        Some("rouse-tests"),
        "{head}"
    );
    assert_eq!(
        head_header(head, "x-hop"),
        None,
        "a header named in Connection is hop-by-hop:\n{head}"
    );
    assert_eq!(
        head_header(head, "keep-alive"),
        None,
        "Keep-Alive is hop-by-hop:\n{head}"
    );
}

#[tokio::test]
async fn forwarded_host_keeps_what_the_client_sent() {
    let sb = Sandbox::new();
    let backend = EchoBackend::start().await;
    let rouse = Rouse::serve(&sb, &none_route("fwd", &["fwd.test"], backend.addr));

    let resp = get(rouse.addr(), "FWD.test:8080").await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let fwd_host = head_header(&resp.body, "x-forwarded-host").unwrap_or_default();
    assert!(
        fwd_host.eq_ignore_ascii_case("fwd.test:8080") || fwd_host.eq_ignore_ascii_case("fwd.test"),
        "{}",
        resp.body
    );
}

#[tokio::test]
async fn request_body_reaches_the_upstream_and_keepalive_connections_are_reused() {
    let sb = Sandbox::new();
    let backend = EchoBackend::start().await;
    let rouse = Rouse::serve(&sb, &none_route("up", &["up.test"], backend.addr));

    let mut conn = Conn::connect(rouse.addr()).await.unwrap();
    for i in 0..3 {
        let body = format!("payload number {i}");
        conn.send(&format!(
            "POST /upload HTTP/1.1\r\nHost: up.test\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ))
        .await
        .unwrap();
        let resp = conn.read_response().await.unwrap();
        assert_eq!(resp.status, 200, "{resp:?}");
        assert!(
            resp.body.starts_with("POST /upload HTTP/1.1\r\n"),
            "{resp:?}"
        );
        assert!(
            resp.body.ends_with(&format!("\r\n\r\n{body}")),
            "body forwarded intact: {resp:?}"
        );
    }
}

/// A backend in the test that switches to protocol "test" and then echoes bytes, upper-cased so
/// that an echo from rouse itself could not pass for it. Returns its address.
async fn upgrade_backend() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut stream = tokio::io::BufReader::new(stream);
                let head = read_head(&mut stream).await.unwrap_or_default();
                let upgrade = head_header(&head, "upgrade").unwrap_or_default();
                let connection = head_header(&head, "connection")
                    .unwrap_or_default()
                    .to_ascii_lowercase();
                if upgrade != "test" || !connection.contains("upgrade") {
                    let msg = format!("no upgrade requested:\n{head}");
                    let resp = format!(
                        "HTTP/1.1 400 Bad Request\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{msg}",
                        msg.len()
                    );
                    let _ = stream.get_mut().write_all(resp.as_bytes()).await;
                    return;
                }
                let switch = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: test\r\n\r\n";
                if stream.get_mut().write_all(switch.as_bytes()).await.is_err() {
                    return;
                }
                let mut buf = [0u8; 1024];
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            let upper = buf[..n].to_ascii_uppercase();
                            if stream.get_mut().write_all(&upper).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    upstream
}

/// Open a connection through rouse and switch it to protocol "test".
async fn upgraded(rouse: &Rouse, host: &str) -> Conn {
    let mut conn = Conn::connect(rouse.addr()).await.unwrap();
    conn.send(&format!(
        "GET /socket HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: test\r\n\r\n"
    ))
    .await
    .unwrap();
    let resp = conn.read_response().await.unwrap();
    assert_eq!(resp.status, 101, "{resp:?}");
    assert_eq!(resp.header("upgrade"), Some("test"), "{resp:?}");
    conn
}

async fn assert_echoes(conn: &mut Conn, msg: &str) {
    conn.send(msg).await.unwrap();
    let echoed = conn.read_exact(msg.len()).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&echoed), msg.to_ascii_uppercase());
}

#[tokio::test]
async fn upgrade_is_tunnelled_both_ways() {
    let sb = Sandbox::new();
    let upstream = upgrade_backend().await;
    let rouse = Rouse::serve(&sb, &none_route("ws", &["ws.test"], upstream));

    let mut conn = upgraded(&rouse, "ws.test").await;
    for msg in ["ping", "a second, longer message"] {
        assert_echoes(&mut conn, msg).await;
    }
}

#[tokio::test]
async fn http2_prior_knowledge_requests_are_routed_by_authority() {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let sb = Sandbox::new();
    let one = EchoBackend::start().await;
    let two = EchoBackend::start().await;
    let config =
        none_route("one", &["one.test"], one.addr) + &none_route("two", &["two.test"], two.addr);
    let rouse = Rouse::serve(&sb, &config);

    let stream = tokio::net::TcpStream::connect(rouse.addr()).await.unwrap();
    let (mut sender, conn) = tokio::time::timeout(
        Duration::from_secs(10),
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)),
    )
    .await
    .expect("HTTP/2 handshake timed out")
    .expect("HTTP/2 handshake with rouse");
    let conn = tokio::spawn(conn);

    // Both sites over the one HTTP/2 connection, as a browser coalescing connections would.
    for (uri, backend, name) in [
        ("http://one.test/a", &one, "one.test"),
        ("http://TWO.test:8443/b", &two, "two.test"),
        ("http://one.test/c", &one, "one.test"),
    ] {
        let req = hyper::Request::get(uri)
            .body(Empty::<bytes::Bytes>::new())
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
            .await
            .expect("HTTP/2 request timed out")
            .expect("HTTP/2 request");
        assert_eq!(resp.status(), 200, "{uri}");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let head = String::from_utf8_lossy(&body).into_owned();
        let path = &uri[uri.rfind('/').unwrap()..];
        assert!(
            head.starts_with(&format!("GET {path} ")),
            "{uri} reached the wrong place:\n{head}"
        );
        let seen = backend.heads().last().cloned().unwrap_or_default();
        assert_eq!(seen, head, "{uri} must be answered by {name}'s upstream");
        let host = head_header(&head, "host").unwrap_or_default();
        assert!(
            host.to_ascii_lowercase().starts_with(name),
            "upstream Host for {uri} should be the authority, got {host:?}:\n{head}"
        );
    }
    assert_eq!((one.heads().len(), two.heads().len()), (2, 1));

    // An unknown authority is a 404 over HTTP/2 too.
    let req = hyper::Request::get("http://three.test/")
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 404);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        String::from_utf8_lossy(&body).trim_end(),
        r#"rouse: no route for host "three.test""#
    );

    // Close the connection before rouse is stopped (its Drop blocks this runtime's thread).
    drop(sender);
    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
}

#[tokio::test]
async fn large_response_arrives_intact() {
    let sb = Sandbox::new();
    std::fs::create_dir(sb.path("site")).unwrap();
    let content: String = (0..200_000).map(|i| format!("line {i:08}\n")).collect();
    std::fs::write(sb.path("site/big.txt"), &content).unwrap();
    let port = free_port();
    let command: Vec<String> = vec![
        "$ROUSE".into(),
        "static".into(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--root".into(),
        sb.p("site"),
    ];
    let rouse = Rouse::serve(&sb, &exec_route("big", &["big.test"], port, &command, ""));

    let resp = send(
        rouse.addr(),
        "GET /big.txt HTTP/1.1\r\nHost: big.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(resp.status, 200, "{:?}", resp.headers);
    assert_eq!(resp.body.len(), content.len());
    assert!(resp.body == content, "body differs from the file served");
}

#[tokio::test]
async fn open_upgraded_connection_keeps_the_backend_running() {
    let sb = Sandbox::new();
    let upstream = upgrade_backend().await;
    // The process rouse starts and stops is a stand-in (`sleep`); the server it "runs" is the
    // test's upgrade backend, already listening, so it is ready at once.
    let script = format!("echo $$ >> {}; exec sleep 60", sq(&sb.p("ws.pids")));
    let route = exec_route(
        "ws",
        &["ws.test"],
        upstream.port(),
        &sh_cmd(&sb, &script),
        "idle_timeout = \"300ms\"",
    );
    let rouse = Rouse::serve(&sb, &route);

    let mut conn = upgraded(&rouse, "ws.test").await;
    let pid = wait_pid(&sb, "ws.pids", Duration::from_secs(2)).await;
    assert_echoes(&mut conn, "hello").await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        alive(pid),
        "backend stopped under an open upgraded connection"
    );
    assert_echoes(&mut conn, "still there?").await;

    drop(conn);
    assert!(
        wait_until(Duration::from_secs(5), || !alive(pid)).await,
        "backend still running 5s after the upgraded connection closed"
    );
}
