//! Ten thousand clients at a cold route at once: each gets an answer (held until the start, or
//! refused with 503 beyond `max_pending`), the backend starts once, and rouse's memory stays
//! bounded.

mod common;

use common::*;
use std::time::Duration;

const CLIENTS: usize = 10_000;

/// Raises this process's descriptor limits to hold `want` sockets (root may raise the hard
/// limit too); returns what it got.
fn raise_nofile(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        let raised = libc::rlimit {
            rlim_cur: want.max(lim.rlim_cur),
            rlim_max: want.max(lim.rlim_max),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

/// Peak resident memory of process `pid` so far, in KiB.
fn peak_rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_clients_at_a_cold_route_all_get_an_answer_with_bounded_memory() {
    // This process holds the clients' sockets, rouse (a child, with the same limits) theirs.
    let limit = raise_nofile(2 * CLIENTS as u64);
    if limit < CLIENTS as u64 + 1000 {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "descriptor limit {limit} is too low for {CLIENTS} clients under CI=true"
        );
        eprintln!("SKIP: descriptor limit {limit} is too low for {CLIENTS} clients (run as root)");
        return;
    }
    let sb = Sandbox::new();
    let port = free_port();
    let script = format!(
        "echo $$ >> {}; sleep 1; {}",
        sq(&sb.p("a.pids")),
        exec_static(port, "hi")
    );
    // rouse inherits the raised limit from this process, like any child.
    let rouse = Rouse::serve(
        &sb,
        &exec_route("a", &["a.test"], port, &sh_cmd(&sb, &script), ""),
    );
    let addr = rouse.addr();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            tokio::spawn(async move {
                tokio::time::timeout(
                    Duration::from_secs(60),
                    try_send(
                        addr,
                        "GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
                    ),
                )
                .await
            })
        })
        .collect();
    let (mut ok, mut refused, mut failed) = (0, 0, Vec::new());
    for client in clients {
        match client.await.unwrap() {
            Ok(Ok(resp)) if resp.status == 200 => ok += 1,
            Ok(Ok(resp)) if resp.status == 503 => {
                assert!(resp.body.contains("too many requests waiting"), "{resp:?}");
                refused += 1;
            }
            Ok(Ok(resp)) => failed.push(format!("status {}", resp.status)),
            Ok(Err(e)) => failed.push(e.to_string()),
            Err(_) => failed.push("no answer in 60 s".into()),
        }
    }
    let peak = peak_rss_kib(rouse.pid());
    eprintln!(
        "{ok} answered 200, {refused} refused with 503, peak RSS {} MiB",
        peak / 1024
    );
    assert!(
        failed.is_empty(),
        "{} of {CLIENTS} clients got no proper answer, e.g. {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(
        ok >= 1024,
        "only {ok} were held and answered (max_pending 1024)"
    );
    assert_eq!(sb.lines("a.pids"), 1, "the backend started more than once");
    assert!(peak < 512 * 1024, "peak RSS {} MiB", peak / 1024);
}
