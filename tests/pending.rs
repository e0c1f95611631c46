//! Requests held while a backend starts: the max_pending bound, and clients that give up.
//!
//! The backends here start only once the test creates a file `go` in the sandbox, so the test,
//! not the clock, decides how long a start takes.

mod common;

use common::*;
use std::net::SocketAddr;
use std::time::Duration;

/// A backend that waits for `go` to exist, then serves `body` on `port`.
fn gated_backend(sb: &Sandbox, port: u16, body: &str) -> Vec<String> {
    let script = format!(
        "echo $$ >> {pids}; while [ ! -e {go} ]; do sleep 0.02; done; {tail}",
        pids = sq(&sb.p("gated.pids")),
        go = sq(&sb.p("go")),
        tail = exec_static(port, body),
    );
    sh_cmd(sb, &script)
}

fn request(
    addr: SocketAddr,
    host: &'static str,
) -> tokio::task::JoinHandle<std::io::Result<Response>> {
    tokio::spawn(async move {
        try_send(
            addr,
            &format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
        .await
    })
}

#[tokio::test]
async fn requests_beyond_max_pending_get_503_with_retry_after() {
    let sb = Sandbox::new();
    let port = free_port();
    let rouse = Rouse::serve(
        &sb,
        &exec_route(
            "busy",
            &["busy.test"],
            port,
            &gated_backend(&sb, port, "made it"),
            "max_pending = 2\nstart_timeout = \"20s\"",
        ),
    );

    let tasks: Vec<_> = (0..10)
        .map(|_| request(rouse.addr(), "busy.test"))
        .collect();
    // The refused ones are answered while the backend is still starting; then let it start.
    let _ = wait_until(Duration::from_secs(3), || {
        tasks.iter().filter(|t| t.is_finished()).count() >= 8
    })
    .await;
    sb.touch("go");

    let mut ok = 0;
    let mut busy = 0;
    for task in tasks {
        let resp = task.await.unwrap().expect("every request gets an answer");
        match resp.status {
            200 => {
                assert_eq!(resp.body.trim_end(), "made it");
                ok += 1;
            }
            503 => {
                let retry = resp
                    .header("retry-after")
                    .unwrap_or_else(|| panic!("503 without Retry-After: {resp:?}"));
                assert!(
                    retry.parse::<u64>().is_ok(),
                    "Retry-After is a number of seconds: {retry:?}"
                );
                busy += 1;
            }
            other => panic!("unexpected status {other}: {resp:?}"),
        }
    }
    assert_eq!(
        (ok, busy),
        (2, 8),
        "with max_pending = 2, two requests wait and eight are refused"
    );
    assert_eq!(sb.lines("gated.pids"), 1);
}

#[tokio::test]
async fn client_that_disconnects_while_held_no_longer_counts_against_max_pending() {
    let sb = Sandbox::new();
    let port = free_port();
    let rouse = Rouse::serve(
        &sb,
        &exec_route(
            "busy",
            &["busy.test"],
            port,
            &gated_backend(&sb, port, "made it"),
            "max_pending = 2\nstart_timeout = \"20s\"",
        ),
    );

    // Two clients are held, then hang up.
    let mut quitters = Vec::new();
    for _ in 0..2 {
        let mut conn = Conn::connect(rouse.addr()).await.unwrap();
        conn.send("GET / HTTP/1.1\r\nHost: busy.test\r\n\r\n")
            .await
            .unwrap();
        quitters.push(conn);
    }
    assert!(
        rouse
            .wait_log(&["backend starting", "route=busy"], Duration::from_secs(5))
            .await
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(quitters);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Their places are free again: two more are held...
    let mut patient: Vec<_> = (0..2).map(|_| request(rouse.addr(), "busy.test")).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for task in &mut patient {
        if task.is_finished() {
            let resp = task.await.unwrap();
            panic!(
                "a request within max_pending was answered before the backend was ready: {resp:?}"
            );
        }
    }
    // ...and the bound still holds for a third.
    let refused = request(rouse.addr(), "busy.test")
        .await
        .unwrap()
        .expect("answer");
    assert_eq!(refused.status, 503, "{refused:?}");

    sb.touch("go");
    for task in patient {
        let resp = task.await.unwrap().expect("answer");
        assert_eq!(
            (resp.status, resp.body.trim_end()),
            (200, "made it"),
            "{resp:?}"
        );
    }
    assert_eq!(sb.lines("gated.pids"), 1);
}

#[tokio::test]
async fn a_slow_start_does_not_hold_up_other_routes() {
    let sb = Sandbox::new();
    let (slow_port, fast_port) = (free_port(), free_port());
    let config = exec_route(
        "slow",
        &["slow.test"],
        slow_port,
        &gated_backend(&sb, slow_port, "slow"),
        "start_timeout = \"20s\"",
    ) + &exec_route(
        "fast",
        &["fast.test"],
        fast_port,
        &static_cmd(fast_port, "fast"),
        "",
    );
    let rouse = Rouse::serve(&sb, &config);

    let held = request(rouse.addr(), "slow.test");
    assert!(
        rouse
            .wait_log(&["backend starting", "route=slow"], Duration::from_secs(5))
            .await
    );
    let resp = get(rouse.addr(), "fast.test").await;
    assert_eq!(
        (resp.status, resp.body.trim_end()),
        (200, "fast"),
        "{resp:?}"
    );
    assert!(
        !held.is_finished(),
        "slow route answered before its backend could start"
    );

    sb.touch("go");
    let resp = held.await.unwrap().expect("answer");
    assert_eq!(
        (resp.status, resp.body.trim_end()),
        (200, "slow"),
        "{resp:?}"
    );
}
