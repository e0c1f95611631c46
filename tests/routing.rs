//! Routing by Host: which backend answers which name, and what an unknown name gets.

mod common;

use common::*;
use std::time::Duration;

#[tokio::test]
async fn two_routes_on_one_inherited_socket_are_each_answered_by_their_own_backend() {
    let sb = Sandbox::new();
    let (pa, pb) = (free_port(), free_port());
    let config = exec_route("a", &["a.test"], pa, &static_cmd(pa, "site a"), "")
        + &exec_route("b", &["b.test"], pb, &static_cmd(pb, "site b"), "");
    let rouse = Rouse::serve(&sb, &config);

    let a = get(rouse.addr(), "a.test").await;
    let b = get(rouse.addr(), "b.test").await;
    assert_eq!((a.status, a.body.trim_end()), (200, "site a"), "{a:?}");
    assert_eq!((b.status, b.body.trim_end()), (200, "site b"), "{b:?}");
    // Again, now that both are running.
    let a = get(rouse.addr(), "a.test").await;
    assert_eq!((a.status, a.body.trim_end()), (200, "site a"), "{a:?}");
    assert_eq!(rouse.log_count(&["backend starting", "route=a"]), 1);
    assert_eq!(rouse.log_count(&["backend starting", "route=b"]), 1);
}

#[tokio::test]
async fn unknown_host_gets_404_with_a_one_line_body() {
    let sb = Sandbox::new();
    let pa = free_port();
    let rouse = Rouse::serve(
        &sb,
        &exec_route("a", &["a.test"], pa, &static_cmd(pa, "site a"), ""),
    );

    let resp = get(rouse.addr(), "nothing.test").await;
    assert_eq!(resp.status, 404, "{resp:?}");
    assert_eq!(
        resp.body.trim_end(),
        r#"rouse: no route for host "nothing.test""#
    );
    assert_eq!(resp.body.trim_end().lines().count(), 1);

    // HTTP/1.0 allows a request without Host.
    let resp = send(rouse.addr(), "GET / HTTP/1.0\r\n\r\n").await;
    assert_eq!(resp.status, 404, "{resp:?}");
    assert_eq!(resp.body.trim_end(), "rouse: request has no host");

    // Nothing was started for those.
    assert_eq!(rouse.log_count(&["backend starting"]), 0, "{}", rouse.log());
}

#[tokio::test]
async fn host_is_matched_ignoring_case_port_and_trailing_dot() {
    let sb = Sandbox::new();
    let pa = free_port();
    let rouse = Rouse::serve(
        &sb,
        &exec_route("a", &["a.test"], pa, &static_cmd(pa, "site a"), ""),
    );

    for host in ["a.test", "A.Test", "a.test:8080", "a.test.", "A.TEST.:80"] {
        let resp = get(rouse.addr(), host).await;
        assert_eq!(
            (resp.status, resp.body.trim_end()),
            (200, "site a"),
            "Host: {host}: {resp:?}"
        );
    }
    // A name that merely starts with the route's host is another name.
    let resp = get(rouse.addr(), "a.test.evil").await;
    assert_eq!(resp.status, 404, "{resp:?}");
}

#[tokio::test]
async fn exact_host_beats_wildcard_and_wildcard_does_not_match_its_apex() {
    let sb = Sandbox::new();
    let backend = EchoBackend::start().await;
    let other = EchoBackend::start().await;
    // The wildcard is listed first: order in the file must not matter.
    let config = none_route("wild", &["*.example.test"], other.addr)
        + &none_route("exact", &["api.example.test"], backend.addr);
    let rouse = Rouse::serve(&sb, &config);

    let resp = get(rouse.addr(), "api.example.test").await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(
        backend.heads().len(),
        1,
        "the exact route's upstream got the request"
    );
    assert_eq!(other.heads().len(), 0);

    let resp = get(rouse.addr(), "www.example.test").await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(
        other.heads().len(),
        1,
        "the wildcard route's upstream got the request"
    );

    let resp = get(rouse.addr(), "example.test").await;
    assert_eq!(
        resp.status, 404,
        "*.example.test must not match example.test: {resp:?}"
    );
    assert_eq!(
        resp.body.trim_end(),
        r#"rouse: no route for host "example.test""#
    );
}

#[tokio::test]
async fn longest_wildcard_wins() {
    let sb = Sandbox::new();
    let short = EchoBackend::start().await;
    let long = EchoBackend::start().await;
    let config = none_route("short", &["*.example.test"], short.addr)
        + &none_route("long", &["*.deep.example.test"], long.addr);
    let rouse = Rouse::serve(&sb, &config);

    let resp = get(rouse.addr(), "x.deep.example.test").await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(
        (short.heads().len(), long.heads().len()),
        (0, 1),
        "x.deep.example.test goes to *.deep.example.test"
    );

    let resp = get(rouse.addr(), "deep.example.test").await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(
        (short.heads().len(), long.heads().len()),
        (1, 1),
        "deep.example.test goes to *.example.test"
    );

    let resp = get(rouse.addr(), "a.b.deep.example.test").await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!((short.heads().len(), long.heads().len()), (1, 2));
}

/// rouse is not an open forward proxy: an absolute-form target naming another server (a name, or
/// a live address on this machine) never makes rouse connect anywhere but a configured upstream.
#[tokio::test]
async fn absolute_form_target_never_reaches_an_unconfigured_server() {
    let sb = Sandbox::new();
    let backend = EchoBackend::start().await;
    // A server rouse must never connect to.
    let spy = EchoBackend::start().await;
    let rouse = Rouse::serve(&sb, &none_route("a", &["a.test"], backend.addr));

    for target in [
        "http://evil.example/".to_string(),
        format!("http://{}/secret", spy.addr),
    ] {
        let resp = send(
            rouse.addr(),
            &format!("GET {target} HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n"),
        )
        .await;
        // Either rouse routes by the target's authority (no such route: 404), or by Host, in
        // which case the configured upstream answers.
        match resp.status {
            404 => assert!(
                resp.body.starts_with("rouse: no route for host"),
                "{resp:?}"
            ),
            200 => assert!(
                resp.body.starts_with("GET "),
                "answer must come from a.test's upstream: {resp:?}"
            ),
            other => panic!("unexpected status {other} for {target}: {resp:?}"),
        }
    }
    // Give any stray connection a moment to show up.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        spy.connections.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "rouse connected to an unconfigured server"
    );

    // The same with a target naming the route itself reaches the route's upstream.
    let resp = send(
        rouse.addr(),
        "GET http://a.test/page HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let head = backend.heads().last().cloned().unwrap_or_default();
    assert_eq!(
        head_header(&head, "host").as_deref(),
        Some("a.test"),
        "{head}"
    );
}

#[tokio::test]
async fn all_hosts_of_a_route_share_one_backend() {
    let sb = Sandbox::new();
    let port = free_port();
    let rouse = Rouse::serve(
        &sb,
        &exec_route(
            "blog",
            &["blog.test", "www.blog.test", "*.cdn.blog.test"],
            port,
            &counted_static(&sb, "blog.pids", port, "the blog"),
            "",
        ),
    );
    for host in [
        "blog.test",
        "www.blog.test",
        "img.cdn.blog.test",
        "BLOG.test",
    ] {
        let resp = get(rouse.addr(), host).await;
        assert_eq!(
            (resp.status, resp.body.trim_end()),
            (200, "the blog"),
            "Host: {host}: {resp:?}"
        );
    }
    assert_eq!(
        sb.lines("blog.pids"),
        1,
        "one backend for all of the route's hosts"
    );
}
