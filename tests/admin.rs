//! The admin listener: `/metrics`, `/status` and `/health` on an address of their own, and
//! `rouse status` reading it. Never reachable through a public listener.

mod common;

use common::*;
use std::time::Duration;

/// `GET path` on the admin listener.
async fn admin_get(admin: std::net::SocketAddr, path: &str) -> Response {
    send(
        admin,
        &format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"),
    )
    .await
}

/// The value of the metric line starting with `series ` (name and labels).
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn metrics_and_status_count_requests_starts_and_stops_and_rouse_status_prints_them() {
    let sb = Sandbox::new();
    let (port, admin_port) = (free_port(), free_port());
    let admin: std::net::SocketAddr = ([127, 0, 0, 1], admin_port).into();
    let config = format!("[admin]\nbind = \"{admin}\"\n\n")
        + &exec_route(
            "a",
            &["a.test"],
            port,
            &counted_static(&sb, "a.pids", port, "hi"),
            "idle_timeout = \"400ms\"",
        );
    let rouse = Rouse::serve(&sb, &config);
    assert!(
        rouse
            .wait_log(&["admin listening"], Duration::from_secs(5))
            .await
    );

    assert_eq!(admin_get(admin, "/health").await.status, 200);
    for _ in 0..3 {
        let resp = get(rouse.addr(), "a.test").await;
        assert_eq!(resp.status, 200, "{resp:?}");
    }
    assert_eq!(get(rouse.addr(), "nowhere.test").await.status, 404);

    let m = admin_get(admin, "/metrics").await;
    assert_eq!(m.status, 200, "{m:?}");
    assert!(
        m.header("content-type")
            .unwrap_or_default()
            .starts_with("text/plain")
    );
    let text = &m.body;
    assert_eq!(
        metric(text, r#"rouse_requests_total{route="a"}"#),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        metric(text, r#"rouse_responses_total{route="a",class="2xx"}"#),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        metric(text, r#"rouse_backend_starts_total{route="a"}"#),
        Some(1.0)
    );
    assert_eq!(metric(text, r#"rouse_backend_up{route="a"}"#), Some(1.0));
    assert_eq!(
        metric(text, r#"rouse_backend_start_seconds_count{route="a"}"#),
        Some(1.0)
    );
    assert_eq!(
        metric(
            text,
            r#"rouse_backend_start_seconds_bucket{route="a",le="+Inf"}"#
        ),
        Some(1.0)
    );
    assert!(
        text.contains("# TYPE rouse_backend_start_seconds histogram"),
        "{text}"
    );

    let s = admin_get(admin, "/status").await;
    assert_eq!(s.status, 200, "{s:?}");
    let status: serde_json::Value = serde_json::from_str(&s.body).unwrap();
    let a = &status["routes"][0];
    assert_eq!(a["name"], "a");
    assert_eq!(a["state"], "ready");
    assert_eq!(a["requests"], 3);
    assert!(a["last_start_ms"].as_f64().unwrap() > 0.0, "{a}");

    let path = sb.path("rouse.toml");
    let (exit, out, err) = run_rouse(&["status", "-c", path.to_str().unwrap()]);
    assert!(exit.success(), "rouse status failed: {err}");
    let line = out
        .lines()
        .find(|l| l.starts_with("a "))
        .unwrap_or_default();
    assert!(line.contains("ready"), "{out}");
    assert!(out.starts_with("ROUTE"), "{out}");

    // After the idle stop, the counters say so.
    let pid = sb.last_pid("a.pids").unwrap();
    assert!(wait_until(Duration::from_secs(5), || !alive(pid)).await);
    let text = admin_get(admin, "/metrics").await.body;
    assert_eq!(
        metric(&text, r#"rouse_backend_up{route="a"}"#),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, r#"rouse_backend_stops_total{route="a"}"#),
        Some(1.0),
        "{text}"
    );
    assert!(metric(&text, r#"rouse_backend_running_seconds_total{route="a"}"#).unwrap() > 0.0);
}

#[tokio::test]
async fn the_admin_endpoints_are_not_served_on_a_public_listener() {
    let sb = Sandbox::new();
    let backend = EchoBackend::start().await;
    let admin: std::net::SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let config =
        format!("[admin]\nbind = \"{admin}\"\n\n") + &none_route("a", &["a.test"], backend.addr);
    let rouse = Rouse::serve(&sb, &config);
    assert!(
        rouse
            .wait_log(&["admin listening"], Duration::from_secs(5))
            .await
    );

    // Whatever the Host, the public listener routes: to a backend, or to a 404.
    let host = admin.to_string();
    for host in [host.as_str(), "localhost", "admin"] {
        let resp = send(
            rouse.addr(),
            &format!("GET /metrics HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(resp.status, 404, "{host}: {resp:?}");
        assert!(!resp.body.contains("rouse_requests_total"), "{resp:?}");
    }
    let resp = send(
        rouse.addr(),
        "GET /status HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        resp.body.starts_with("GET /status"),
        "forwarded to the site: {resp:?}"
    );
    assert_eq!(admin_get(admin, "/status").await.status, 200);
}

#[tokio::test]
async fn rouse_status_without_an_admin_listener_says_what_to_add() {
    let sb = Sandbox::new();
    let path = sb.write(
        "rouse.toml",
        &format!(
            "{LISTENER}{}",
            none_route("a", &["a.test"], ([127, 0, 0, 1], 9).into())
        ),
    );
    let (exit, _, err) = run_rouse(&["status", "-c", path.to_str().unwrap()]);
    assert!(!exit.success());
    assert!(err.contains("has no [admin] bind"), "{err}");
}
