//! Reloading the config (SIGHUP, `rouse reload`): routes added, changed and removed while
//! unchanged routes, their backends and their connections go on; an invalid config, or one
//! that needs a restart, is refused and the old one keeps serving.

mod common;

use common::*;
use std::time::Duration;

/// Replaces the sandbox's config (as `Rouse::serve` wrote it) with `body`.
fn rewrite(sb: &Sandbox, body: &str) {
    sb.write("rouse.toml", &format!("{LISTENER}{body}"));
}

/// One request for `host` on an open keep-alive connection.
async fn ask(conn: &mut Conn, host: &str) -> Response {
    conn.send(&format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n"))
        .await
        .unwrap();
    conn.read_response().await.unwrap()
}

async fn reloaded(rouse: &Rouse, times: usize) -> bool {
    wait_until(Duration::from_secs(10), || {
        rouse.log_count(&["config reloaded"]) + rouse.log_count(&["config not reloaded"]) >= times
    })
    .await
}

#[tokio::test]
async fn a_reload_adds_changes_and_removes_routes_and_leaves_unchanged_ones_running() {
    let sb = Sandbox::new();
    let (keep_port, change_port) = (free_port(), free_port());
    let echo = EchoBackend::start().await;
    let keep = |extra_host: &[&str]| {
        let mut hosts = vec!["keep.test"];
        hosts.extend_from_slice(extra_host);
        exec_route(
            "keep",
            &hosts,
            keep_port,
            &counted_static(&sb, "keep.pids", keep_port, "kept"),
            "",
        )
    };
    let change = |body: &str, pids: &str| {
        exec_route(
            "change",
            &["change.test"],
            change_port,
            &counted_static(&sb, pids, change_port, body),
            "",
        )
    };
    let rouse = Rouse::serve(
        &sb,
        &(keep(&[]) + &change("old", "old.pids") + &none_route("gone", &["gone.test"], echo.addr)),
    );

    // A keep-alive connection to each of the routes that has a backend.
    let mut keep_conn = Conn::connect(rouse.addr()).await.unwrap();
    let resp = ask(&mut keep_conn, "keep.test").await;
    assert_eq!((resp.status, resp.body.trim_end()), (200, "kept"));
    let mut change_conn = Conn::connect(rouse.addr()).await.unwrap();
    let resp = ask(&mut change_conn, "change.test").await;
    assert_eq!((resp.status, resp.body.trim_end()), (200, "old"));
    let old_pid = wait_pid(&sb, "old.pids", Duration::from_secs(5)).await;
    assert_eq!(get(rouse.addr(), "gone.test").await.status, 200);

    // `keep` gains a host (its backend is the same); `change` runs another command; `gone`
    // goes; `added` comes.
    rewrite(
        &sb,
        &(keep(&["alias.test"])
            + &change("new", "new.pids")
            + &none_route("added", &["added.test"], echo.addr)),
    );
    rouse.signal(libc::SIGHUP);
    assert!(reloaded(&rouse, 1).await, "{}", rouse.log());
    assert_eq!(
        rouse.log_count(&[
            "config reloaded",
            "added: added; backend changed: change; removed: gone; 1 kept"
        ]),
        1,
        "{}",
        rouse.log()
    );

    // The unchanged route: same connection, same backend process, and its new host.
    let resp = ask(&mut keep_conn, "keep.test").await;
    assert_eq!((resp.status, resp.body.trim_end()), (200, "kept"));
    let resp = get(rouse.addr(), "alias.test").await;
    assert_eq!((resp.status, resp.body.trim_end()), (200, "kept"));
    assert_eq!(
        sb.lines("keep.pids"),
        1,
        "the unchanged backend was restarted"
    );

    // The changed route: the open connection goes on, its next request reaches the new backend;
    // the old one is stopped.
    let resp = ask(&mut change_conn, "change.test").await;
    assert_eq!((resp.status, resp.body.trim_end()), (200, "new"));
    assert!(
        wait_until(Duration::from_secs(10), || !alive(old_pid)).await,
        "the old backend (pid {old_pid}) still runs\n{}",
        rouse.log()
    );
    assert!(
        rouse
            .wait_log(
                &["backend stopping", "route=change", "reason=reload"],
                Duration::from_secs(5)
            )
            .await,
        "{}",
        rouse.log()
    );

    // Removed and added.
    assert_eq!(get(rouse.addr(), "gone.test").await.status, 404);
    let resp = get(rouse.addr(), "added.test").await;
    assert_eq!(resp.status, 200, "{resp:?}");
}

#[tokio::test]
async fn an_invalid_config_is_refused_with_its_location_and_the_old_one_keeps_serving() {
    let sb = Sandbox::new();
    let echo = EchoBackend::start().await;
    let good = none_route("a", &["a.test"], echo.addr);
    let rouse = Rouse::serve(&sb, &good);
    let mut conn = Conn::connect(rouse.addr()).await.unwrap();
    assert_eq!(ask(&mut conn, "a.test").await.status, 200);

    // A bad value: the upstream of a new route, on the 4th line after what was there.
    let line = format!("{LISTENER}{good}").lines().count() + 4;
    rewrite(
        &sb,
        &(good.clone() + "[[route]]\nname = \"b\"\nhosts = [\"b.test\"]\nupstream = \"nowhere\"\n"),
    );
    rouse.signal(libc::SIGHUP);
    assert!(reloaded(&rouse, 1).await, "{}", rouse.log());
    let location = format!("{}:{line}:", sb.p("rouse.toml"));
    assert!(
        rouse.log_count(&["config not reloaded", &location]) == 1,
        "no refusal naming {location}\n{}",
        rouse.log()
    );

    // A change a reload cannot apply.
    rewrite(&sb, &format!("[proxy]\ndrain_timeout = \"3s\"\n\n{good}"));
    rouse.signal(libc::SIGHUP);
    assert!(reloaded(&rouse, 2).await, "{}", rouse.log());
    assert_eq!(
        rouse.log_count(&["config not reloaded", "[proxy] changed", "restart"]),
        1,
        "{}",
        rouse.log()
    );

    // The old config serves on, on the open connection and on new ones.
    assert_eq!(ask(&mut conn, "a.test").await.status, 200);
    assert_eq!(get(rouse.addr(), "a.test").await.status, 200);
    assert_eq!(get(rouse.addr(), "b.test").await.status, 404);
    assert_eq!(rouse.log_count(&["config reloaded"]), 0);
}

#[tokio::test]
async fn rouse_reload_checks_the_file_then_asks_the_admin_listener() {
    let sb = Sandbox::new();
    let echo = EchoBackend::start().await;
    let admin: std::net::SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let head = format!("[admin]\nbind = \"{admin}\"\n\n");
    let a = none_route("a", &["a.test"], echo.addr);
    let rouse = Rouse::serve(&sb, &(head.clone() + &a));
    assert!(
        rouse
            .wait_log(&["admin listening"], Duration::from_secs(5))
            .await
    );
    let config = sb.p("rouse.toml");

    rewrite(
        &sb,
        &(head.clone() + &a + &none_route("b", &["b.test"], echo.addr)),
    );
    let (status, out, err) = run_rouse(&["reload", "-c", &config]);
    assert!(status.success(), "{}: {out}{err}", describe_exit(&status));
    assert!(out.contains("reloaded: added: b;"), "{out}");
    assert_eq!(get(rouse.addr(), "b.test").await.status, 200);

    // An invalid file is reported by `rouse reload` itself; the running rouse is not asked.
    rewrite(&sb, &(head.clone() + &a + "[[route]]\nname = \"c\"\n"));
    let (status, out, err) = run_rouse(&["reload", "-c", &config]);
    assert!(!status.success(), "{out}{err}");
    assert!(err.contains(&format!("{config}:")), "{err}");
    assert_eq!(rouse.log_count(&["reload asked"]), 1, "{}", rouse.log());

    // Valid on its own but not as a reload: the running rouse refuses, and says why.
    rewrite(&sb, &(head + "[proxy]\nheader_timeout = \"5s\"\n\n" + &a));
    let (status, out, err) = run_rouse(&["reload", "-c", &config]);
    assert!(!status.success(), "{out}{err}");
    assert!(
        err.contains("409") && err.contains("[proxy] changed"),
        "{err}"
    );
    assert_eq!(get(rouse.addr(), "b.test").await.status, 200);
}
