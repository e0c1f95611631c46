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

/// A backend made of `busybox nc -ll`: one shell handler per connection. `/crash` kills the
/// whole backend before it answers; `/half` sends a head and part of the body, then kills it.
fn crashing_backend(sb: &Sandbox, port: u16) -> Vec<String> {
    let handler = sb.write(
        "handler.sh",
        &format!(
            "#!/bin/sh\nread line\ncase \"$line\" in\n\
             *' /crash '*) kill -9 $(tail -n 1 {pids}) ;;\n\
             *' /half '*) printf 'HTTP/1.1 200 OK\\r\\nContent-Length: 100\\r\\n\\r\\npartial'; kill -9 $(tail -n 1 {pids}) ;;\n\
             *) printf 'HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\nConnection: close\\r\\n\\r\\nok' ;;\n\
             esac\n",
            pids = sq(&sb.p("b.pids"))
        ),
    );
    std::fs::set_permissions(
        &handler,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let script = format!(
        "echo $$ >> {}; exec busybox nc -ll -p {port} -e {}",
        sq(&sb.p("b.pids")),
        sq(handler.to_str().unwrap())
    );
    sh_cmd(sb, &script)
}

#[tokio::test]
async fn a_backend_that_dies_mid_request_costs_that_request_only_and_starts_again() {
    if !have_tool("crash", "busybox", "true", "busybox-static") {
        return;
    }
    let sb = Sandbox::new();
    let port = free_port();
    let rouse = Rouse::serve(
        &sb,
        &exec_route("b", &["b.test"], port, &crashing_backend(&sb, port), ""),
    );

    let resp = get(rouse.addr(), "b.test").await;
    assert_eq!((resp.status, resp.body.as_str()), (200, "ok"), "{resp:?}");
    let first = sb.last_pid("b.pids").unwrap();

    // Dies before answering: a 502 that names the route.
    let resp = send(
        rouse.addr(),
        "GET /crash HTTP/1.1\r\nHost: b.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(resp.status, 502, "{resp:?}");
    assert!(resp.body.contains(r#"route "b""#), "{resp:?}");
    assert!(
        rouse
            .wait_log(&["backend exited", "route=b"], Duration::from_secs(5))
            .await
    );
    assert!(!alive(first));

    // The next request starts it again.
    let resp = get(rouse.addr(), "b.test").await;
    assert_eq!((resp.status, resp.body.as_str()), (200, "ok"), "{resp:?}");
    let second = sb.last_pid("b.pids").unwrap();
    assert_ne!(first, second);

    // Dies halfway through a body: the client never gets it as complete.
    let mut conn = Conn::connect(rouse.addr()).await.unwrap();
    conn.send("GET /half HTTP/1.1\r\nHost: b.test\r\n\r\n")
        .await
        .unwrap();
    match conn.read_response().await {
        Err(_) => {}
        Ok(resp) => assert_ne!(resp.body.len(), 100, "a cut body passed as whole: {resp:?}"),
    }
    assert!(
        wait_until(Duration::from_secs(5), || sb.lines("b.pids") == 2
            && !alive(second)
            && rouse.log_count(&["backend exited", "route=b"]) == 2)
        .await,
        "{}",
        rouse.log()
    );
    let resp = get(rouse.addr(), "b.test").await;
    assert_eq!((resp.status, resp.body.as_str()), (200, "ok"), "{resp:?}");
    assert_eq!(sb.lines("b.pids"), 3, "started a third time");
}
