//! Hostile and malformed clients, sent for real: slow request bodies, responses nobody reads,
//! oversized request targets and header blocks, request smuggling attempts, and more
//! connections than `max_connections`. Each case checks what the client gets, what the backend
//! received, and that other clients are still served.

mod common;

use common::scripted::*;
use common::*;
use std::time::{Duration, Instant};

/// Reads until rouse answers or closes; panics if neither happens within `within`.
async fn answer_or_close(conn: &mut Conn, within: Duration, what: &str) -> Option<Response> {
    match tokio::time::timeout(within, conn.read_response()).await {
        Err(_) => panic!("{what}: still open {within:?} later"),
        Ok(Ok(resp)) => Some(resp),
        Ok(Err(_)) => None,
    }
}

fn scripted_config(extra: &str, backend: &ScriptedBackend) -> String {
    format!(
        "[proxy]\n{extra}\n\n{}",
        none_route("s", &["s.test"], backend.addr)
    )
}

#[tokio::test]
async fn a_request_body_that_stops_arriving_is_cut_off_at_body_timeout() {
    let sb = Sandbox::new();
    let backend = ScriptedBackend::start().await;
    let rouse = Rouse::serve(&sb, &scripted_config("body_timeout = \"400ms\"", &backend));

    let mut slow = Conn::connect(rouse.addr()).await.unwrap();
    slow.send("POST /upload HTTP/1.1\r\nHost: s.test\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let started = Instant::now();
    // Meanwhile another client is served.
    let resp = get(rouse.addr(), "s.test").await;
    assert_eq!(resp.status, 200, "{resp:?}");
    if let Some(resp) = answer_or_close(&mut slow, Duration::from_secs(5), "stalled body").await {
        assert!(resp.status >= 400, "a stalled upload got {resp:?}");
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(350),
        "cut after {waited:?}, before body_timeout (400ms)"
    );
    assert!(
        rouse
            .wait_log(
                &[
                    "connection cut",
                    "request body sent nothing for body_timeout"
                ],
                Duration::from_secs(2)
            )
            .await,
        "no log line naming the cut"
    );
}

#[tokio::test]
async fn a_body_trickled_faster_than_body_timeout_is_not_cut() {
    let sb = Sandbox::new();
    let backend = ScriptedBackend::start().await;
    let rouse = Rouse::serve(&sb, &scripted_config("body_timeout = \"400ms\"", &backend));

    let mut conn = Conn::connect(rouse.addr()).await.unwrap();
    conn.send("POST /upload HTTP/1.1\r\nHost: s.test\r\nContent-Length: 10\r\n\r\n")
        .await
        .unwrap();
    // Ten bytes over two seconds: five times body_timeout, but never a pause that long.
    for byte in b"0123456789" {
        tokio::time::sleep(Duration::from_millis(200)).await;
        conn.send_bytes(&[*byte]).await.unwrap();
    }
    let resp = conn.read_response().await.unwrap();
    assert_eq!((resp.status, resp.body.as_str()), (200, "ok"), "{resp:?}");
    let uploads = backend.requests.lock().unwrap().clone();
    assert_eq!(uploads.last().unwrap().1, b"0123456789");
}

#[tokio::test]
async fn a_client_that_reads_nothing_is_cut_off_at_body_timeout() {
    let sb = Sandbox::new();
    let backend = ScriptedBackend::start().await;
    let rouse = Rouse::serve(&sb, &scripted_config("body_timeout = \"400ms\"", &backend));

    let mut idle = Conn::connect(rouse.addr()).await.unwrap();
    idle.send("GET /big HTTP/1.1\r\nHost: s.test\r\n\r\n")
        .await
        .unwrap();
    // Read nothing for a while: rouse's writes block, and it gives up on the client.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let resp = get(rouse.addr(), "s.test").await;
    assert_eq!(resp.status, 200, "another client: {resp:?}");
    let got = idle.read_until_closed().await.unwrap();
    assert!(
        got < BIG,
        "the whole {BIG}-byte response arrived ({got} bytes): the connection was not cut"
    );
    assert!(
        rouse
            .wait_log(
                &["connection cut", "response not read for body_timeout"],
                Duration::from_secs(2)
            )
            .await,
        "no log line naming the cut"
    );
}

#[tokio::test]
async fn a_request_target_longer_than_max_uri_bytes_gets_414_and_the_connection_closes() {
    let sb = Sandbox::new();
    let backend = ScriptedBackend::start().await;
    let rouse = Rouse::serve(&sb, &scripted_config("max_uri_bytes = 1024", &backend));

    let mut conn = Conn::connect(rouse.addr()).await.unwrap();
    let long = "a".repeat(2000);
    conn.send(&format!("GET /{long} HTTP/1.1\r\nHost: s.test\r\n\r\n"))
        .await
        .unwrap();
    let resp = conn.read_response().await.unwrap();
    assert_eq!(resp.status, 414, "{resp:?}");
    assert!(
        resp.body.contains("longer than max_uri_bytes (1024)"),
        "{resp:?}"
    );
    assert_eq!(conn.read_until_closed().await.unwrap(), 0);
    // At the limit is fine.
    let fits = "b".repeat(1000);
    let resp = send(
        rouse.addr(),
        &format!("GET /{fits} HTTP/1.1\r\nHost: s.test\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(backend.requests.lock().unwrap().len() == 1);
}

#[tokio::test]
async fn too_many_headers_get_431_and_the_connection_closes() {
    let sb = Sandbox::new();
    let backend = ScriptedBackend::start().await;
    let rouse = Rouse::serve(&sb, &scripted_config("", &backend));

    let mut conn = Conn::connect(rouse.addr()).await.unwrap();
    let headers: String = (0..200).map(|i| format!("X-H{i}: {i}\r\n")).collect();
    conn.send(&format!("GET / HTTP/1.1\r\nHost: s.test\r\n{headers}\r\n"))
        .await
        .unwrap();
    let resp = conn.read_response().await.unwrap();
    assert_eq!(resp.status, 431, "{resp:?}");
    assert_eq!(conn.read_until_closed().await.unwrap(), 0);
    assert!(backend.requests.lock().unwrap().is_empty());
}

/// Sends `raw` on a fresh connection; returns the status (None if rouse closed without one).
async fn status_of(rouse: &Rouse, raw: &str) -> Option<u16> {
    let mut conn = Conn::connect(rouse.addr()).await.unwrap();
    conn.send(raw).await.unwrap();
    answer_or_close(&mut conn, Duration::from_secs(5), raw)
        .await
        .map(|r| r.status)
}

#[tokio::test]
async fn ambiguous_request_framing_is_refused_with_400_and_never_reaches_the_backend() {
    let sb = Sandbox::new();
    let backend = ScriptedBackend::start().await;
    let rouse = Rouse::serve(&sb, &scripted_config("", &backend));

    for (what, raw) in [
        (
            "two different Content-Lengths",
            "POST / HTTP/1.1\r\nHost: s.test\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        ),
        (
            "a Transfer-Encoding whose last coding is not chunked",
            "POST / HTTP/1.1\r\nHost: s.test\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        ),
        (
            "Transfer-Encoding in HTTP/1.0",
            "POST / HTTP/1.0\r\nHost: s.test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "an obs-fold header line",
            "GET / HTTP/1.1\r\nHost: s.test\r\nX-Folded: a\r\n  b\r\n\r\n",
        ),
        (
            "a space before the colon",
            "GET / HTTP/1.1\r\nHost: s.test\r\nContent-Length : 0\r\n\r\n",
        ),
        (
            "a malformed Content-Length",
            "POST / HTTP/1.1\r\nHost: s.test\r\nContent-Length: 5x\r\n\r\nhello",
        ),
    ] {
        assert_eq!(status_of(&rouse, raw).await, Some(400), "{what}");
    }
    assert!(
        backend.requests.lock().unwrap().is_empty(),
        "{:?}",
        backend.requests.lock().unwrap()
    );
}

#[tokio::test]
async fn content_length_with_transfer_encoding_reaches_the_backend_as_one_chunked_request() {
    let sb = Sandbox::new();
    let backend = ScriptedBackend::start().await;
    let rouse = Rouse::serve(&sb, &scripted_config("", &backend));

    // The classic CL.TE smuggle: a front end that trusted Content-Length would forward
    // "0\r\n\r\n" as the body and the GET after it as a second request.
    let mut conn = Conn::connect(rouse.addr()).await.unwrap();
    conn.send(
        "POST /upload HTTP/1.1\r\nHost: s.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n\
         5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: s.test\r\n\r\n",
    )
    .await
    .unwrap();
    let resp = conn.read_response().await.unwrap();
    assert_eq!(resp.status, 200, "{resp:?}");
    // The connection is not kept: whatever followed is not read as a request.
    assert_eq!(conn.read_until_closed().await.unwrap(), 0);
    let requests = backend.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let (head, body) = &requests[0];
    assert!(head.starts_with("POST /upload "), "{head}");
    assert_eq!(head_header(head, "content-length"), None, "{head}");
    assert_eq!(
        head_header(head, "transfer-encoding").as_deref(),
        Some("chunked"),
        "{head}"
    );
    assert_eq!(body, b"5\r\nhello\r\n0\r\n\r\n");
}

#[tokio::test]
async fn a_request_with_bare_lf_line_ends_is_forwarded_with_crlf_only() {
    let sb = Sandbox::new();
    let backend = ScriptedBackend::start().await;
    let rouse = Rouse::serve(&sb, &scripted_config("", &backend));

    let mut conn = Conn::connect(rouse.addr()).await.unwrap();
    conn.send("GET /lf HTTP/1.1\nHost: s.test\nX-One: 1\n\n")
        .await
        .unwrap();
    let resp = conn.read_response().await.unwrap();
    assert_eq!(resp.status, 200, "{resp:?}");
    let requests = backend.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let head = &requests[0].0;
    assert!(head.starts_with("GET /lf HTTP/1.1\r\n"), "{head:?}");
    assert!(
        !head.replace("\r\n", "").contains('\n'),
        "a bare LF reached the backend: {head:?}"
    );
    assert_eq!(head_header(head, "x-one").as_deref(), Some("1"));
}

#[tokio::test]
async fn connections_beyond_max_connections_wait_until_one_closes() {
    let sb = Sandbox::new();
    let backend = ScriptedBackend::start().await;
    let rouse = Rouse::serve(
        &sb,
        &scripted_config("workers = 1\nmax_connections = 2", &backend),
    );

    let request = "GET / HTTP/1.1\r\nHost: s.test\r\n\r\n";
    let mut first = Conn::connect(rouse.addr()).await.unwrap();
    let mut second = Conn::connect(rouse.addr()).await.unwrap();
    for conn in [&mut first, &mut second] {
        conn.send(request).await.unwrap();
        assert_eq!(conn.read_response().await.unwrap().status, 200);
    }
    // The third connection is queued by the kernel, not accepted: no answer yet.
    let mut third = Conn::connect(rouse.addr()).await.unwrap();
    third.send(request).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(700), third.read_response())
            .await
            .is_err(),
        "a third connection was served with max_connections = 2"
    );
    assert!(
        rouse
            .wait_log(&["connection limit reached"], Duration::from_secs(2))
            .await
    );
    // One closes: the waiting one is accepted and answered.
    drop(first);
    let resp = third.read_response().await.unwrap();
    assert_eq!(resp.status, 200, "{resp:?}");
    // The ones still open keep working.
    second.send(request).await.unwrap();
    assert_eq!(second.read_response().await.unwrap().status, 200);
}
