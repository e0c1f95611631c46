//! rouse as a process: how it exits (idle_exit, SIGTERM), what it leaves behind, and what
//! environment its backends get.

mod common;

use common::*;
use std::time::Duration;

#[tokio::test]
async fn idle_exit_exits_0_and_leaves_no_backend_running() {
    let sb = Sandbox::new();
    let port = free_port();
    let config = "[proxy]\nidle_exit = \"500ms\"\n\n".to_string()
        + &exec_route(
            "a",
            &["a.test"],
            port,
            &counted_static(&sb, "a.pids", port, "hi"),
            "idle_timeout = \"300ms\"",
        );
    let mut rouse = Rouse::serve(&sb, &config);

    let resp = get(rouse.addr(), "a.test").await;
    assert_eq!((resp.status, resp.body.trim_end()), (200, "hi"), "{resp:?}");
    let pid = sb.last_pid("a.pids").unwrap();

    let status = rouse.wait_exit(Duration::from_secs(10)).await;
    let status = status.unwrap_or_else(|| {
        panic!("rouse still running 10s after its last request with idle_exit 500ms")
    });
    assert!(
        status.success(),
        "rouse exited with {}",
        describe_exit(&status)
    );
    assert!(!alive(pid), "backend (pid {pid}) outlived rouse");
    assert_eq!(rouse.log_count(&["idle exit"]), 1, "{}", rouse.log());
    // Nothing listens any more.
    assert!(
        try_send(rouse.addr(), "GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
            .await
            .is_err()
    );
}

#[tokio::test]
async fn idle_exit_waits_while_a_backend_runs() {
    let sb = Sandbox::new();
    let port = free_port();
    // The backend would stay up for a minute: rouse must not exit under it.
    let config = "[proxy]\nidle_exit = \"300ms\"\n\n".to_string()
        + &exec_route(
            "a",
            &["a.test"],
            port,
            &counted_static(&sb, "a.pids", port, "hi"),
            "idle_timeout = \"1m\"",
        );
    let mut rouse = Rouse::serve(&sb, &config);

    let resp = get(rouse.addr(), "a.test").await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(
        rouse.wait_exit(Duration::from_millis(1500)).await.is_none(),
        "rouse exited while a backend was running"
    );
    let resp = get(rouse.addr(), "a.test").await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(sb.lines("a.pids"), 1);
}

#[tokio::test]
async fn sigterm_exits_0_and_stops_the_backends_rouse_started() {
    let sb = Sandbox::new();
    let (pa, pb) = (free_port(), free_port());
    let config = exec_route(
        "a",
        &["a.test"],
        pa,
        &counted_static(&sb, "a.pids", pa, "a"),
        "",
    ) + &exec_route(
        "b",
        &["b.test"],
        pb,
        &counted_static(&sb, "b.pids", pb, "b"),
        "",
    );
    let mut rouse = Rouse::serve(&sb, &config);

    for host in ["a.test", "b.test"] {
        let resp = get(rouse.addr(), host).await;
        assert_eq!(resp.status, 200, "{resp:?}");
    }
    let pids = [
        sb.last_pid("a.pids").unwrap(),
        sb.last_pid("b.pids").unwrap(),
    ];
    assert!(pids.iter().all(|&p| alive(p)));

    rouse.signal(libc::SIGTERM);
    let status = rouse
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("rouse still running 10s after SIGTERM");
    assert!(
        status.success(),
        "rouse exited with {}",
        describe_exit(&status)
    );
    for pid in pids {
        assert!(
            !alive(pid),
            "backend (pid {pid}) still running after rouse exited"
        );
    }
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_request_finish() {
    let sb = Sandbox::new();
    // A backend in the test that takes 500ms to answer.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let mut stream = tokio::io::BufReader::new(stream);
                if read_head(&mut stream).await.unwrap_or_default().is_empty() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                let _ = stream
                    .get_mut()
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nslow\n")
                    .await;
            });
        }
    });
    let mut rouse = Rouse::serve(&sb, &none_route("slow", &["slow.test"], upstream));

    let addr = rouse.addr();
    let in_flight = tokio::spawn(async move {
        try_send(
            addr,
            "GET / HTTP/1.1\r\nHost: slow.test\r\nConnection: close\r\n\r\n",
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    rouse.signal(libc::SIGTERM);

    let resp = in_flight
        .await
        .unwrap()
        .expect("in-flight request is answered despite SIGTERM");
    assert_eq!(
        (resp.status, resp.body.trim_end()),
        (200, "slow"),
        "{resp:?}"
    );
    let status = rouse
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("rouse still running 10s after SIGTERM");
    assert!(
        status.success(),
        "rouse exited with {}",
        describe_exit(&status)
    );
}

#[tokio::test]
async fn backend_gets_configured_env_but_no_listen_variables() {
    let sb = Sandbox::new();
    let port = free_port();
    let script = format!(
        "env > {}; echo $$ >> {}; {}",
        sq(&sb.p("env.txt")),
        sq(&sb.p("a.pids")),
        exec_static(port, "hi")
    );
    let extra = "";
    let route = exec_route("a", &["a.test"], port, &sh_cmd(&sb, &script), extra)
        + "env = { GREETING = \"hello from config\" }\n";
    let rouse = Rouse::serve(&sb, &route);

    let resp = get(rouse.addr(), "a.test").await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let env = sb.read("env.txt");
    assert!(!env.is_empty(), "the backend wrote no environment");
    let listen: Vec<&str> = env.lines().filter(|l| l.starts_with("LISTEN_")).collect();
    assert!(
        listen.is_empty(),
        "backend inherited systemd socket variables: {listen:?}"
    );
    assert!(
        env.lines().any(|l| l == "GREETING=hello from config"),
        "configured env missing:\n{env}"
    );
    // The rest of rouse's environment is passed on.
    assert!(
        env.lines().any(|l| l.starts_with("PATH=")),
        "PATH missing:\n{env}"
    );
}

#[tokio::test]
async fn backend_runs_in_the_config_directory_by_default_and_in_working_dir_when_set() {
    let sb = Sandbox::new();
    std::fs::create_dir(sb.path("site")).unwrap();
    let (pa, pb) = (free_port(), free_port());
    let script_a = format!("pwd > {}; {}", sq(&sb.p("a.pwd")), exec_static(pa, "a"));
    let script_b = format!("pwd > {}; {}", sq(&sb.p("b.pwd")), exec_static(pb, "b"));
    let config = exec_route("a", &["a.test"], pa, &sh_cmd(&sb, &script_a), "")
        + &exec_route("b", &["b.test"], pb, &sh_cmd(&sb, &script_b), "")
        + &format!("working_dir = {}\n", q(&sb.p("site")));
    let rouse = Rouse::serve(&sb, &config);

    for host in ["a.test", "b.test"] {
        assert_eq!(get(rouse.addr(), host).await.status, 200);
    }
    let canon = |p: &str| std::fs::canonicalize(p).unwrap();
    assert_eq!(
        canon(sb.read("a.pwd").trim()),
        canon(&sb.p("")),
        "default working directory"
    );
    assert_eq!(
        canon(sb.read("b.pwd").trim()),
        canon(&sb.p("site")),
        "working_dir"
    );
}

#[tokio::test]
async fn idle_exit_waits_for_open_client_connections() {
    let sb = Sandbox::new();
    let backend = EchoBackend::start().await;
    let config = "[proxy]\nidle_exit = \"300ms\"\n\n".to_string()
        + &none_route("a", &["a.test"], backend.addr);
    let mut rouse = Rouse::serve(&sb, &config);

    let mut conn = Conn::connect(rouse.addr()).await.unwrap();
    conn.send("GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(conn.read_response().await.unwrap().status, 200);
    assert!(
        rouse.wait_exit(Duration::from_millis(1200)).await.is_none(),
        "rouse exited under an open client connection"
    );
    conn.send("GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(conn.read_response().await.unwrap().status, 200);

    drop(conn);
    let status = rouse
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("rouse still running 10s after the last connection closed (idle_exit 300ms)");
    assert!(
        status.success(),
        "rouse exited with {}",
        describe_exit(&status)
    );
}

#[tokio::test]
async fn sigint_exits_0_like_sigterm() {
    let sb = Sandbox::new();
    let port = free_port();
    let mut rouse = Rouse::serve(
        &sb,
        &exec_route(
            "a",
            &["a.test"],
            port,
            &counted_static(&sb, "a.pids", port, "a"),
            "",
        ),
    );
    assert_eq!(get(rouse.addr(), "a.test").await.status, 200);
    let pid = sb.last_pid("a.pids").unwrap();

    rouse.signal(libc::SIGINT);
    let status = rouse
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("rouse still running 10s after SIGINT");
    assert!(
        status.success(),
        "rouse exited with {}",
        describe_exit(&status)
    );
    assert!(
        !alive(pid),
        "backend (pid {pid}) still running after rouse exited"
    );
}

#[tokio::test]
async fn backends_do_not_outlive_a_killed_rouse() {
    let sb = Sandbox::new();
    let port = free_port();
    let config = exec_route(
        "a",
        &["a.test"],
        port,
        &counted_static(&sb, "a.pids", port, "hi"),
        "",
    );
    let mut rouse = Rouse::serve(&sb, &config);
    let resp = get(rouse.addr(), "a.test").await;
    assert_eq!((resp.status, resp.body.trim_end()), (200, "hi"), "{resp:?}");
    let pid = sb.last_pid("a.pids").unwrap();

    // No chance to stop anything: SIGKILL.
    rouse.signal(libc::SIGKILL);
    assert!(rouse.wait_exit(Duration::from_secs(5)).await.is_some());
    assert!(
        wait_until(Duration::from_secs(5), || !alive(pid)).await,
        "backend {pid} still running 5 s after rouse was killed"
    );
}

#[tokio::test]
async fn sigterm_sends_http2_clients_a_goaway() {
    use common::h2::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sb = Sandbox::new();
    let backend = EchoBackend::start().await;
    let mut rouse = Rouse::serve(&sb, &none_route("a", &["a.test"], backend.addr));

    let mut stream = tokio::net::TcpStream::connect(rouse.addr()).await.unwrap();
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(SETTINGS, 0, 0, &[]));
    hello.extend(frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        &get_block("a.test"),
    ));
    stream.write_all(&hello).await.unwrap();
    // The request is answered on the connection, which then stays open.
    let mut first = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut first))
        .await
        .unwrap()
        .unwrap();
    assert!(n > 0);
    assert!(wait_until(Duration::from_secs(5), || backend.heads().len() == 1).await);

    rouse.signal(libc::SIGTERM);
    assert!(saw_goaway(&mut stream).await, "no GOAWAY on SIGTERM");
    // A client that got a GOAWAY with nothing in flight closes.
    drop(stream);
    let status = rouse
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("rouse still running");
    assert!(status.success(), "{}", describe_exit(&status));
}
