//! What rouse tells systemd over `$NOTIFY_SOCKET`: `READY=1`, a `STATUS=` line that follows the
//! routes' states, and `STOPPING=1` on shutdown.

mod common;

use common::*;
use std::time::Duration;
use tokio::net::UnixDatagram;

/// Reads datagrams until one contains `needle`; panics with what came if none does in time.
async fn expect(socket: &UnixDatagram, needle: &str, seen: &mut Vec<String>) -> String {
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = vec![0u8; 4096];
        loop {
            let n = socket.recv(&mut buf).await.unwrap();
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            seen.push(msg.clone());
            if msg.contains(needle) {
                return msg;
            }
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("no notification with {needle:?}; got {seen:?}"))
}

#[tokio::test]
async fn systemd_hears_ready_a_status_that_follows_the_routes_and_stopping() {
    let sb = Sandbox::new();
    let port = free_port();
    let notify_path = sb.path("notify.sock");
    let socket = UnixDatagram::bind(&notify_path).unwrap();
    let config = sb.write(
        "rouse.toml",
        &format!(
            "{LISTENER}{}",
            exec_route(
                "a",
                &["a.test"],
                port,
                &counted_static(&sb, "a.pids", port, "hi"),
                ""
            )
        ),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let child = spawn_inherited_env(
        &config,
        &sb.path("rouse.log"),
        &[std::os::fd::AsRawFd::as_raw_fd(&listener)],
        Some("http"),
        &[("NOTIFY_SOCKET", notify_path.to_str().unwrap())],
    );
    drop(listener);
    let mut rouse = Rouse::from_child(child, addr, sb.path("rouse.log"));

    let mut seen = Vec::new();
    expect(&socket, "READY=1", &mut seen).await;
    expect(&socket, "STATUS=1 routes, 0 running", &mut seen).await;
    let resp = get(rouse.addr(), "a.test").await;
    assert_eq!(resp.status, 200, "{resp:?}");
    expect(&socket, "STATUS=1 routes, 1 running", &mut seen).await;
    rouse.signal(libc::SIGTERM);
    expect(&socket, "STOPPING=1", &mut seen).await;
    assert!(rouse.wait_exit(Duration::from_secs(10)).await.is_some());
}
