//! What clients see of a sleeping site, beyond being held: health checks and monitors that must
//! not wake it, and browsers that get a "starting" page rather than a blank wait.

mod common;

use common::*;
use std::time::{Duration, Instant};

/// `GET path` with a `User-Agent` (and `Connection: close`), on a connection of its own.
async fn get_as(rouse: &Rouse, path: &str, user_agent: &str) -> Response {
    send(
        rouse.addr(),
        &format!(
            "GET {path} HTTP/1.1\r\nHost: a.test\r\nUser-Agent: {user_agent}\r\nConnection: close\r\n\r\n"
        ),
    )
    .await
}

#[tokio::test]
async fn health_checks_neither_wake_a_sleeping_backend_nor_keep_it_awake() {
    let sb = Sandbox::new();
    let port = free_port();
    let config = exec_route(
        "a",
        &["a.test"],
        port,
        &counted_static(&sb, "a.pids", port, "hi"),
        "idle_timeout = \"500ms\"\npassive_paths = [\"/healthz\", \"/status/*\"]\npassive_user_agents = [\"UptimeRobot\"]",
    );
    let rouse = Rouse::serve(&sb, &config);

    // Asleep: the monitors are answered at once and nothing starts.
    for (path, ua) in [
        ("/healthz", "curl/8.0"),
        ("/status/db", "curl/8.0"),
        (
            "/",
            "Mozilla/5.0 (compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)",
        ),
    ] {
        let resp = get_as(&rouse, path, ua).await;
        assert_eq!(resp.status, 503, "{path} {ua}: {resp:?}");
        assert!(resp.body.contains("asleep"), "{resp:?}");
    }
    assert_eq!(
        sb.lines("a.pids"),
        0,
        "a passive request started the backend"
    );

    // A visitor wakes it.
    let resp = get_as(&rouse, "/", "Mozilla/5.0").await;
    assert_eq!((resp.status, resp.body.trim_end()), (200, "hi"), "{resp:?}");
    let pid = sb.last_pid("a.pids").unwrap();

    // While it runs, health checks are forwarded, but every 100 ms for longer than the idle
    // timeout they do not keep it running.
    let started = Instant::now();
    let mut forwarded = 0;
    while alive(pid) && started.elapsed() < Duration::from_secs(5) {
        let resp = get_as(&rouse, "/healthz", "kube-probe/1.29").await;
        match resp.status {
            200 => forwarded += 1,
            503 => assert!(resp.body.contains("asleep"), "{resp:?}"),
            // The stop may catch a check in flight: passive requests do not hold it off.
            502 => {}
            other => panic!("health check got {other}: {resp:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !alive(pid),
        "health checks kept the backend running for 5 s (idle_timeout 500ms)"
    );
    assert!(
        forwarded > 0,
        "no health check was forwarded while the backend ran"
    );
    assert_eq!(
        sb.lines("a.pids"),
        1,
        "a health check started the backend again"
    );
}

#[tokio::test]
async fn a_browser_kept_waiting_by_a_slow_start_gets_a_page_that_reloads_itself() {
    let sb = Sandbox::new();
    let port = free_port();
    let script = format!("sleep 1.5; {}", exec_static(port, "ready now"));
    let config = exec_route(
        "a",
        &["a.test"],
        port,
        &sh_cmd(&sb, &script),
        "starting_page = \"300ms\"",
    );
    let rouse = Rouse::serve(&sb, &config);
    let addr = rouse.addr();

    // An API client is held through the whole start.
    let api = tokio::spawn(async move {
        send(
            addr,
            "GET /api HTTP/1.1\r\nHost: a.test\r\nAccept: application/json\r\n\r\n",
        )
        .await
    });
    let browser = "GET / HTTP/1.1\r\nHost: a.test\r\nAccept: text/html,application/xhtml+xml,*/*;q=0.8\r\n\r\n";
    let asked = Instant::now();
    let page = send(addr, browser).await;
    let waited = asked.elapsed();
    assert_eq!(page.status, 503, "{page:?}");
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_millis(1200),
        "starting page after {waited:?} (starting_page 300ms, start 1.5 s)"
    );
    assert!(
        page.header("content-type")
            .unwrap_or_default()
            .starts_with("text/html")
    );
    assert!(page.body.contains("http-equiv=\"refresh\""), "{page:?}");
    assert!(page.body.contains("a is starting"), "{page:?}");

    let api = api.await.unwrap();
    assert_eq!(
        (api.status, api.body.trim_end()),
        (200, "ready now"),
        "{api:?}"
    );
    // Once it runs, the browser's reload gets the site.
    let resp = send(addr, browser).await;
    assert_eq!(
        (resp.status, resp.body.trim_end()),
        (200, "ready now"),
        "{resp:?}"
    );
}
