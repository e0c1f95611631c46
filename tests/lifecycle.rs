//! A backend's life as rouse runs it: started on the first request (once, however many wait),
//! failed and timed-out starts, stopped when idle, kept alive by open connections, restarted.

mod common;

use common::*;
use std::time::{Duration, Instant};

#[tokio::test]
async fn cold_start_of_200_concurrent_requests_starts_the_backend_once_and_answers_all() {
    let sb = Sandbox::new();
    let port = free_port();
    let rouse = Rouse::serve(
        &sb,
        &exec_route(
            "cold",
            &["cold.test"],
            port,
            &counted_static(&sb, "cold.pids", port, "warm now"),
            "start_timeout = \"20s\"",
        ),
    );
    let addr = rouse.addr();

    let started = Instant::now();
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            tokio::spawn(async move {
                let resp = try_send(
                    addr,
                    "GET / HTTP/1.1\r\nHost: cold.test\r\nConnection: close\r\n\r\n",
                )
                .await;
                (resp, started.elapsed())
            })
        })
        .collect();
    let mut first = Duration::MAX;
    let mut failures = Vec::new();
    for task in tasks {
        let (resp, elapsed) = task.await.unwrap();
        match resp {
            Ok(r) if r.status == 200 && r.body.trim_end() == "warm now" => {
                first = first.min(elapsed)
            }
            other => failures.push(format!("{other:?}")),
        }
    }
    eprintln!(
        "cold start: first of 200 concurrent responses after {first:?}, all done after {:?}",
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} of 200 requests failed, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    assert_eq!(
        sb.lines("cold.pids"),
        1,
        "the backend was started more than once"
    );
    assert_eq!(rouse.log_count(&["backend starting", "route=cold"]), 1);
    assert_eq!(rouse.log_count(&["backend ready", "route=cold"]), 1);
}

#[tokio::test]
async fn failed_start_answers_502_naming_the_route_and_the_cause_then_retries_on_next_request() {
    let sb = Sandbox::new();
    let port = free_port();
    let script = format!(
        "echo $$ >> {}; echo 'cannot open database' >&2; exit 3",
        sq(&sb.p("broken.pids"))
    );
    let rouse = Rouse::serve(
        &sb,
        &exec_route(
            "broken",
            &["broken.test"],
            port,
            &sh_cmd(&sb, &script),
            "start_timeout = \"20s\"",
        ),
    );

    let asked = Instant::now();
    let resp = get(rouse.addr(), "broken.test").await;
    eprintln!("502 after {:?}", asked.elapsed());
    assert_eq!(resp.status, 502, "{resp:?}");
    let body = resp.body.trim_end();
    assert_eq!(body.lines().count(), 1, "one-line body: {body:?}");
    assert!(body.starts_with("rouse: route \"broken\""), "{body:?}");
    assert!(body.contains("exit status: 3"), "{body:?}");
    assert!(
        body.contains("cannot open database"),
        "the body carries the backend's last stderr line: {body:?}"
    );
    assert_eq!(sb.lines("broken.pids"), 1);
    assert!(
        rouse
            .wait_log(
                &["backend start failed", "route=broken"],
                Duration::from_secs(2)
            )
            .await
    );

    // The failure is not remembered: the next request makes a fresh start.
    let resp = get(rouse.addr(), "broken.test").await;
    assert_eq!(resp.status, 502, "{resp:?}");
    assert_eq!(
        sb.lines("broken.pids"),
        2,
        "the second request must start the backend again"
    );
}

#[tokio::test]
async fn command_that_cannot_be_spawned_answers_502() {
    let sb = Sandbox::new();
    let port = free_port();
    let missing = sb.p("no-such-program");
    let rouse = Rouse::serve(
        &sb,
        &exec_route("ghost", &["ghost.test"], port, &[missing], ""),
    );

    let resp = get(rouse.addr(), "ghost.test").await;
    assert_eq!(resp.status, 502, "{resp:?}");
    assert!(resp.body.starts_with("rouse: route \"ghost\""), "{resp:?}");
    assert_eq!(resp.body.trim_end().lines().count(), 1, "{resp:?}");
}

#[tokio::test]
async fn backend_not_ready_by_start_timeout_gets_504_and_is_killed() {
    let sb = Sandbox::new();
    let port = free_port();
    // Never listens on its port.
    let script = format!("echo $$ >> {}; exec sleep 30", sq(&sb.p("slow.pids")));
    let rouse = Rouse::serve(
        &sb,
        &exec_route(
            "slow",
            &["slow.test"],
            port,
            &sh_cmd(&sb, &script),
            "start_timeout = \"300ms\"",
        ),
    );

    let resp = get(rouse.addr(), "slow.test").await;
    assert_eq!(resp.status, 504, "{resp:?}");
    assert_eq!(
        resp.body.trim_end(),
        r#"rouse: route "slow": backend not ready after 300ms"#
    );
    let pid = wait_pid(&sb, "slow.pids", Duration::from_secs(1)).await;
    assert!(
        wait_until(Duration::from_secs(5), || !alive(pid)).await,
        "the backend that missed its start_timeout (pid {pid}, {}) is still running",
        cmdline(pid)
    );

    // The next request makes a fresh start (and times out again).
    let resp = get(rouse.addr(), "slow.test").await;
    assert_eq!(resp.status, 504, "{resp:?}");
    assert_eq!(
        sb.lines("slow.pids"),
        2,
        "the second request must start the backend again"
    );
    let pid2 = sb.last_pid("slow.pids").unwrap();
    assert_ne!(pid, pid2);
    assert!(
        wait_until(Duration::from_secs(5), || !alive(pid2)).await,
        "second backend still running"
    );
}

#[tokio::test]
async fn idle_backend_is_stopped_and_started_again_by_the_next_request() {
    let sb = Sandbox::new();
    let port = free_port();
    let rouse = Rouse::serve(
        &sb,
        &exec_route(
            "idle",
            &["idle.test"],
            port,
            &counted_static(&sb, "idle.pids", port, "hello"),
            "idle_timeout = \"300ms\"",
        ),
    );

    let resp = get(rouse.addr(), "idle.test").await;
    assert_eq!(
        (resp.status, resp.body.trim_end()),
        (200, "hello"),
        "{resp:?}"
    );
    let pid = sb.last_pid("idle.pids").expect("pid written");
    assert!(alive(pid));

    assert!(
        wait_until(Duration::from_secs(5), || !alive(pid)).await,
        "backend (pid {pid}) still running 5s after its last request with idle_timeout 300ms"
    );
    assert!(
        rouse
            .wait_log(&["backend stopped", "route=idle"], Duration::from_secs(2))
            .await,
        "no 'backend stopped' log line"
    );

    let resp = get(rouse.addr(), "idle.test").await;
    assert_eq!(
        (resp.status, resp.body.trim_end()),
        (200, "hello"),
        "{resp:?}"
    );
    assert_eq!(
        sb.lines("idle.pids"),
        2,
        "the next request starts the backend again"
    );
    let pid2 = sb.last_pid("idle.pids").unwrap();
    assert!(alive(pid2));

    // The log line as INTERFACE.md spells it: `backend stopping route=a reason=idle`.
    assert_eq!(
        rouse.log_count(&["backend stopping", "route=idle", "reason=idle"]),
        1,
        "{}",
        rouse.log()
    );
}

#[tokio::test]
async fn open_keepalive_connection_keeps_the_backend_running_until_it_closes() {
    let sb = Sandbox::new();
    let port = free_port();
    let rouse = Rouse::serve(
        &sb,
        &exec_route(
            "ka",
            &["ka.test"],
            port,
            &counted_static(&sb, "ka.pids", port, "still here"),
            "idle_timeout = \"300ms\"",
        ),
    );

    let mut conn = Conn::connect(rouse.addr()).await.unwrap();
    conn.send("GET / HTTP/1.1\r\nHost: ka.test\r\n\r\n")
        .await
        .unwrap();
    let resp = conn.read_response().await.unwrap();
    assert_eq!(
        (resp.status, resp.body.trim_end()),
        (200, "still here"),
        "{resp:?}"
    );
    let pid = sb.last_pid("ka.pids").unwrap();

    // Four idle_timeouts later, with the client connection still open.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        alive(pid),
        "backend stopped while a client connection to its route was open"
    );
    assert_eq!(
        rouse.log_count(&["backend stopping", "route=ka"]),
        0,
        "{}",
        rouse.log()
    );

    conn.send("GET /again HTTP/1.1\r\nHost: ka.test\r\n\r\n")
        .await
        .unwrap();
    let resp = conn.read_response().await.unwrap();
    assert_eq!(
        (resp.status, resp.body.trim_end()),
        (200, "still here"),
        "{resp:?}"
    );
    assert_eq!(sb.lines("ka.pids"), 1, "the same backend answered");

    drop(conn);
    assert!(
        wait_until(Duration::from_secs(5), || !alive(pid)).await,
        "backend still running 5s after the last client connection closed"
    );
    assert!(
        rouse
            .wait_log(&["backend stopped", "route=ka"], Duration::from_secs(2))
            .await
    );
}

#[tokio::test]
async fn request_arriving_while_the_backend_stops_is_answered() {
    let sb = Sandbox::new();
    let port = free_port();
    // On SIGTERM (sent to the whole group, so the server itself exits at once) the wrapper takes
    // another 700ms before it exits: a slow shutdown.
    let script = format!(
        "echo $$ >> {pids}; \
         {rouse} static --listen 127.0.0.1:{port} --body racing & child=$!; \
         trap 'sleep 0.7; kill $child 2>/dev/null; exit 0' TERM; \
         wait $child",
        pids = sq(&sb.p("race.pids")),
        rouse = sq(ROUSE),
    );
    let rouse = Rouse::serve(
        &sb,
        &exec_route(
            "race",
            &["race.test"],
            port,
            &sh_cmd(&sb, &script),
            "idle_timeout = \"300ms\"\nstart_timeout = \"10s\"",
        ),
    );

    let resp = get(rouse.addr(), "race.test").await;
    assert_eq!(
        (resp.status, resp.body.trim_end()),
        (200, "racing"),
        "{resp:?}"
    );

    assert!(
        rouse
            .wait_log(&["backend stopping", "route=race"], Duration::from_secs(5))
            .await,
        "backend was not stopped after idle_timeout"
    );
    let raced = rouse.log_count(&["backend stopped", "route=race"]) == 0;
    let resp = get(rouse.addr(), "race.test").await;
    if !raced {
        eprintln!(
            "note: the request was sent only after the stop had finished; the race was not exercised"
        );
    }
    assert_eq!(
        (resp.status, resp.body.trim_end()),
        (200, "racing"),
        "request sent during a stop: {resp:?}"
    );
    assert_eq!(
        sb.lines("race.pids"),
        2,
        "the request during the stop must be served by a fresh start"
    );
}

#[tokio::test]
async fn backend_that_dies_while_ready_is_started_again_by_the_next_request() {
    let sb = Sandbox::new();
    let port = free_port();
    let rouse = Rouse::serve(
        &sb,
        &exec_route(
            "crash",
            &["crash.test"],
            port,
            &counted_static(&sb, "crash.pids", port, "alive"),
            "",
        ),
    );
    let resp = get(rouse.addr(), "crash.test").await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let pid = sb.last_pid("crash.pids").unwrap();

    unsafe { libc::kill(pid, libc::SIGKILL) };
    assert!(
        rouse
            .wait_log(&["backend exited", "route=crash"], Duration::from_secs(5))
            .await,
        "no 'backend exited' line"
    );

    let resp = get(rouse.addr(), "crash.test").await;
    assert_eq!(
        (resp.status, resp.body.trim_end()),
        (200, "alive"),
        "{resp:?}"
    );
    assert_eq!(sb.lines("crash.pids"), 2);
}

#[tokio::test]
async fn http_readiness_holds_requests_until_the_probe_answers_2xx() {
    let sb = Sandbox::new();
    std::fs::create_dir(sb.path("site")).unwrap();
    std::fs::write(sb.path("site/index.html"), "the site\n").unwrap();
    let port = free_port();
    // Listens at once, but /healthz is 404 until the file exists.
    let script = format!(
        "echo $$ >> {}; exec {} static --listen 127.0.0.1:{port} --root {}",
        sq(&sb.p("web.pids")),
        sq(ROUSE),
        sq(&sb.p("site"))
    );
    let rouse = Rouse::serve(
        &sb,
        &exec_route(
            "web",
            &["web.test"],
            port,
            &sh_cmd(&sb, &script),
            "ready = \"http:/healthz\"\nstart_timeout = \"20s\"",
        ),
    );

    let addr = rouse.addr();
    let held = tokio::spawn(async move {
        try_send(
            addr,
            "GET / HTTP/1.1\r\nHost: web.test\r\nConnection: close\r\n\r\n",
        )
        .await
    });
    assert!(
        wait_until(Duration::from_secs(5), || sb.lines("web.pids") == 1).await,
        "backend not started"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !held.is_finished(),
        "request answered while /healthz was still 404: {:?}",
        held.await
    );
    assert_eq!(rouse.log_count(&["backend ready"]), 0, "{}", rouse.log());

    std::fs::write(sb.path("site/healthz"), "ok\n").unwrap();
    let resp = held.await.unwrap().expect("answer once ready");
    assert_eq!(
        (resp.status, resp.body.as_str()),
        (200, "the site\n"),
        "{resp:?}"
    );
    assert_eq!(rouse.log_count(&["backend ready", "route=web"]), 1);
}

#[tokio::test]
async fn stop_signal_is_the_one_configured() {
    let sb = Sandbox::new();
    let port = free_port();
    let script = format!(
        "echo $$ >> {pids}; \
         trap 'echo INT >> {sig}; kill $child; exit 0' INT; \
         trap 'echo TERM >> {sig}; kill $child; exit 0' TERM; \
         {rouse} static --listen 127.0.0.1:{port} --body sig & child=$!; \
         while :; do sleep 0.05; done",
        pids = sq(&sb.p("sig.pids")),
        sig = sq(&sb.p("signals")),
        rouse = sq(ROUSE),
    );
    let route = exec_route(
        "sig",
        &["sig.test"],
        port,
        &sh_cmd(&sb, &script),
        "idle_timeout = \"300ms\"",
    ) + "stop_signal = \"SIGINT\"\n";
    let rouse = Rouse::serve(&sb, &route);

    let resp = get(rouse.addr(), "sig.test").await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let pid = sb.last_pid("sig.pids").unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || !alive(pid)).await,
        "backend not stopped"
    );
    assert_eq!(
        sb.read("signals").trim(),
        "INT",
        "the backend should get SIGINT (only)"
    );
    assert!(
        rouse
            .wait_log(&["backend stopped", "route=sig"], Duration::from_secs(2))
            .await
    );
}

#[tokio::test]
async fn backend_ignoring_its_stop_signal_is_killed_after_stop_timeout() {
    let sb = Sandbox::new();
    let port = free_port();
    // The wrapper ignores SIGTERM and would run forever; its server child does exit on SIGTERM.
    let script = format!(
        "echo $$ >> {pids}; trap '' TERM; {rouse} static --listen 127.0.0.1:{port} --body stubborn & \
         while :; do sleep 0.05; done",
        pids = sq(&sb.p("stub.pids")),
        rouse = sq(ROUSE),
    );
    let route = exec_route(
        "stub",
        &["stub.test"],
        port,
        &sh_cmd(&sb, &script),
        "idle_timeout = \"300ms\"",
    ) + "stop_timeout = \"300ms\"\n";
    let rouse = Rouse::serve(&sb, &route);

    let resp = get(rouse.addr(), "stub.test").await;
    assert_eq!(
        (resp.status, resp.body.trim_end()),
        (200, "stubborn"),
        "{resp:?}"
    );
    let pid = sb.last_pid("stub.pids").unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || !alive(pid)).await,
        "backend that ignores SIGTERM still running: stop_timeout 300ms should end in SIGKILL"
    );
    assert!(
        rouse
            .wait_log(&["backend stopped", "route=stub"], Duration::from_secs(2))
            .await
    );

    let resp = get(rouse.addr(), "stub.test").await;
    assert_eq!(
        (resp.status, resp.body.trim_end()),
        (200, "stubborn"),
        "{resp:?}"
    );
    assert_eq!(sb.lines("stub.pids"), 2);
}

#[tokio::test]
async fn every_request_held_during_a_failed_start_gets_502() {
    let sb = Sandbox::new();
    let port = free_port();
    // Fails only after the requests have gathered.
    let script = format!(
        "echo $$ >> {}; while [ ! -e {} ]; do sleep 0.02; done; echo 'config missing' >&2; exit 3",
        sq(&sb.p("fail.pids")),
        sq(&sb.p("go"))
    );
    let rouse = Rouse::serve(
        &sb,
        &exec_route(
            "fail",
            &["fail.test"],
            port,
            &sh_cmd(&sb, &script),
            "start_timeout = \"20s\"",
        ),
    );

    let addr = rouse.addr();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            tokio::spawn(async move {
                try_send(
                    addr,
                    "GET / HTTP/1.1\r\nHost: fail.test\r\nConnection: close\r\n\r\n",
                )
                .await
            })
        })
        .collect();
    assert!(wait_until(Duration::from_secs(5), || sb.lines("fail.pids") == 1).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    sb.touch("go");
    for task in tasks {
        let resp = task.await.unwrap().expect("answer");
        assert_eq!(resp.status, 502, "{resp:?}");
        assert!(resp.body.contains("config missing"), "{resp:?}");
    }
    assert_eq!(sb.lines("fail.pids"), 1, "one start for all held requests");
}
