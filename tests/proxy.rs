//! What the upstream receives and what the client gets back through rouse: forwarding headers,
//! hop-by-hop headers, request bodies, upgraded connections, HTTP/2 clients, and the HTTP/1.1
//! upstream side: connection reuse, upstreams that close connections, response framing.

mod common;

use common::scripted::*;
use common::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A config with `route` and a single worker thread, so that every client connection draws on
/// the same upstream pool.
fn one_worker(route: &str) -> String {
    format!("[proxy]\nworkers = 1\n\n{route}")
}

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

#[tokio::test]
async fn upstream_connections_are_pooled_across_client_connections() {
    let sb = Sandbox::new();
    let backend = EchoBackend::start().await;
    let rouse = Rouse::serve(
        &sb,
        &one_worker(&none_route("pool", &["pool.test"], backend.addr)),
    );

    for i in 0..20 {
        let resp = send(
            rouse.addr(),
            &format!("GET /{i} HTTP/1.1\r\nHost: pool.test\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(resp.status, 200, "request {i}: {resp:?}");
        assert!(resp.body.starts_with(&format!("GET /{i} HTTP/1.1\r\n")));
    }
    let opened = backend
        .connections
        .load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        opened, 1,
        "20 sequential requests from 20 client connections should share one upstream connection"
    );
}

/// A backend that answers each request on a keep-alive connection (HTTP/1.1, no
/// `Connection: close`) and then closes that connection anyway. Returns its address and the
/// number of connections it accepted.
async fn closing_backend() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut stream = tokio::io::BufReader::new(stream);
                if read_head(&mut stream).await.unwrap_or_default().is_empty() {
                    return;
                }
                let _ = stream
                    .get_mut()
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
                    .await;
                // Dropped here: closed without notice.
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn an_upstream_that_closes_pooled_connections_costs_no_errors() {
    let sb = Sandbox::new();
    let (addr, accepted) = closing_backend().await;
    let rouse = Rouse::serve(
        &sb,
        &one_worker(&none_route("closing", &["closing.test"], addr)),
    );

    // Back to back on one client connection: the next request often reaches rouse before it has
    // seen the upstream's close, and must then go out on a new connection.
    let mut conn = Conn::connect(rouse.addr()).await.unwrap();
    for i in 0..50 {
        conn.send("GET / HTTP/1.1\r\nHost: closing.test\r\n\r\n")
            .await
            .unwrap();
        let resp = conn.read_response().await.unwrap();
        assert_eq!(resp.status, 200, "request {i}: {resp:?}\n{}", rouse.log());
        assert_eq!(resp.body, "ok\n");
    }
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        50,
        "one upstream connection per request, since the upstream closes each"
    );
}

/// A backend that keeps connections alive but, on the second request of a connection, closes it
/// without answering: what a request meets when it arrives just as the upstream's keep-alive
/// timeout closes the connection. Returns its address and the requests it answered.
async fn second_request_closing_backend() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let answered = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = answered.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut stream = tokio::io::BufReader::new(stream);
                let head = read_head(&mut stream).await.unwrap_or_default();
                let Some(line) = head.lines().next() else {
                    return;
                };
                log.lock().unwrap().push(line.to_owned());
                let _ = stream
                    .get_mut()
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
                    .await;
                // The next request is read and dropped with the connection.
                let _ = read_head(&mut stream).await;
            });
        }
    });
    (addr, answered)
}

#[tokio::test]
async fn a_safe_request_on_a_connection_closed_under_it_is_sent_again() {
    let sb = Sandbox::new();
    let (addr, answered) = second_request_closing_backend().await;
    let rouse = Rouse::serve(&sb, &one_worker(&none_route("late", &["late.test"], addr)));

    let first = send(
        rouse.addr(),
        "GET /first HTTP/1.1\r\nHost: late.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(first.status, 200, "{first:?}");
    let again = send(
        rouse.addr(),
        "GET /again HTTP/1.1\r\nHost: late.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(again.status, 200, "{again:?}\n{}", rouse.log());
    assert_eq!(again.body, "ok\n");
    assert_eq!(
        *answered.lock().unwrap(),
        ["GET /first HTTP/1.1", "GET /again HTTP/1.1"],
        "the second request was answered on a new connection"
    );

    // A POST is not repeated: the upstream may have acted on it. It gets a 502.
    let post = send(
        rouse.addr(),
        "POST /pay HTTP/1.1\r\nHost: late.test\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
    )
    .await;
    assert_eq!(post.status, 502, "{post:?}");
    assert_eq!(
        answered.lock().unwrap().len(),
        2,
        "the POST was not sent again"
    );
}

#[tokio::test]
async fn chunked_and_close_delimited_responses_arrive_whole() {
    let sb = Sandbox::new();
    let backend = ScriptedBackend::start().await;
    let rouse = Rouse::serve(
        &sb,
        &one_worker(&none_route("s", &["s.test"], backend.addr)),
    );

    let mut conn = Conn::connect(rouse.addr()).await.unwrap();
    for (path, body) in [("/chunked", "abcd"), ("/eof", "until the end"), ("/", "ok")] {
        conn.send(&format!("GET {path} HTTP/1.1\r\nHost: s.test\r\n\r\n"))
            .await
            .unwrap();
        let resp = conn.read_response().await.unwrap();
        assert_eq!(resp.status, 200, "{path}: {resp:?}");
        assert_eq!(resp.body, body, "{path}");
    }
}

#[tokio::test]
async fn upstream_connections_are_reused_only_when_the_response_allows_it() {
    let sb = Sandbox::new();
    let backend = ScriptedBackend::start().await;
    let rouse = Rouse::serve(
        &sb,
        &one_worker(&none_route("s", &["s.test"], backend.addr)),
    );

    let mut conn = Conn::connect(rouse.addr()).await.unwrap();
    let mut ask = async |method: &str, path: &str| {
        conn.send(&format!("{method} {path} HTTP/1.1\r\nHost: s.test\r\n\r\n"))
            .await
            .unwrap();
        let resp = if method == "HEAD" {
            conn.read_head_response().await.unwrap()
        } else {
            conn.read_response().await.unwrap()
        };
        assert_eq!(resp.status, 200, "{method} {path}: {resp:?}");
        resp
    };
    ask("GET", "/").await;
    ask("GET", "/chunked").await;
    ask("GET", "/").await;
    assert_eq!(
        backend.connections(),
        1,
        "plain and chunked responses keep the connection"
    );
    ask("GET", "/close").await;
    ask("GET", "/").await;
    assert_eq!(backend.connections(), 2, "Connection: close was honoured");
    let head = ask("HEAD", "/head").await;
    assert_eq!(head.header("content-length"), Some("10"));
    ask("GET", "/").await;
    assert_eq!(
        backend.connections(),
        2,
        "a HEAD answer has no body, whatever its Content-Length says"
    );
}

#[tokio::test]
async fn a_malformed_or_truncated_response_is_never_passed_off_as_good() {
    let sb = Sandbox::new();
    let backend = ScriptedBackend::start().await;
    let rouse = Rouse::serve(&sb, &none_route("s", &["s.test"], backend.addr));

    let resp = send(
        rouse.addr(),
        "GET /garbage HTTP/1.1\r\nHost: s.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(resp.status, 502, "{resp:?}");
    assert!(
        resp.body.contains("route \"s\"") && resp.body.contains("invalid response"),
        "the 502 says what went wrong: {resp:?}"
    );

    // The head was fine and has gone out; the client must see the body cut short.
    let truncated = try_send(
        rouse.addr(),
        "GET /truncated HTTP/1.1\r\nHost: s.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        truncated.is_err(),
        "a body cut short by the upstream reached the client as complete: {truncated:?}"
    );

    let after = send(
        rouse.addr(),
        "GET / HTTP/1.1\r\nHost: s.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(after.status, 200, "{after:?}");
}

#[tokio::test]
async fn request_bodies_keep_their_length_or_go_chunked() {
    let sb = Sandbox::new();
    let backend = ScriptedBackend::start().await;
    let rouse = Rouse::serve(&sb, &none_route("s", &["s.test"], backend.addr));

    let mut conn = Conn::connect(rouse.addr()).await.unwrap();
    conn.send("POST /len HTTP/1.1\r\nHost: s.test\r\nContent-Length: 5\r\n\r\nhello")
        .await
        .unwrap();
    assert_eq!(conn.read_response().await.unwrap().status, 200);
    conn.send(
        "POST /chunks HTTP/1.1\r\nHost: s.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(conn.read_response().await.unwrap().status, 200);

    let requests = backend.requests.lock().unwrap().clone();
    let (len_head, len_body) = &requests[0];
    assert_eq!(
        head_header(len_head, "content-length").as_deref(),
        Some("5")
    );
    assert_eq!(len_body, b"hello");
    let (chunk_head, chunk_body) = &requests[1];
    assert_eq!(
        head_header(chunk_head, "transfer-encoding").as_deref(),
        Some("chunked"),
        "{chunk_head}"
    );
    assert_eq!(head_header(chunk_head, "content-length"), None);
    let text = String::from_utf8_lossy(chunk_body);
    let data: String = text
        .split("\r\n")
        .collect::<Vec<_>>()
        .chunks(2)
        .filter_map(|pair| pair.get(1).copied())
        .collect();
    assert_eq!(
        data, "abcde",
        "chunked body as the upstream got it: {text:?}"
    );
}

#[tokio::test]
async fn an_early_answer_to_an_upload_reaches_the_client() {
    let sb = Sandbox::new();
    let backend = ScriptedBackend::start().await;
    let rouse = Rouse::serve(&sb, &none_route("s", &["s.test"], backend.addr));

    let stream = tokio::net::TcpStream::connect(rouse.addr()).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    const SIZE: usize = 16 * 1024 * 1024;
    let upload = tokio::spawn(async move {
        let head =
            format!("POST /reject HTTP/1.1\r\nHost: s.test\r\nContent-Length: {SIZE}\r\n\r\n");
        writer.write_all(head.as_bytes()).await?;
        let block = vec![b'x'; 64 * 1024];
        for _ in 0..SIZE / block.len() {
            writer.write_all(&block).await?;
        }
        std::io::Result::Ok(())
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    upload.abort();
    assert!(got.is_ok(), "no answer within 10 s");
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.starts_with("HTTP/1.1 413"),
        "the upstream's early 413 should reach the client, got: {text:?}"
    );
}
