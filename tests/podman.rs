//! `kind = "podman"` against a real podman, through its libpod API on a `podman system service`
//! socket of the test's own: cold start, idle stop, a container killed behind rouse's back,
//! creating a missing container, a missing one that cannot be created, and a group (`also`).
//!
//! Skipped (with a `SKIP:` line) where podman, runc or a static busybox is missing, except
//! under `CI=true`.

mod common;

use std::time::{Duration, Instant};

use common::podman::*;
use common::*;

/// Everything one test needs: its sandbox, the podman service, its containers.
struct Setup {
    sb: Sandbox,
    service: Service,
    containers: Containers,
}

fn setup(test: &str) -> Option<Setup> {
    if skip(test) {
        return None;
    }
    ensure_image();
    let sb = Sandbox::new();
    let service = Service::start(&sb);
    Some(Setup {
        containers: Containers::new(test),
        service,
        sb,
    })
}

/// Waits until `127.0.0.1:port` answers `GET /` with 200; returns how long that took.
async fn wait_http(port: u16, timeout: Duration) -> Option<Duration> {
    let started = Instant::now();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    while started.elapsed() < timeout {
        let req = "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        let answer = tokio::time::timeout(Duration::from_secs(1), try_send(addr, req)).await;
        if let Ok(Ok(resp)) = answer
            && resp.status == 200
        {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

#[tokio::test]
async fn cold_start_of_a_stopped_container_answers_the_first_request() {
    let Some(mut t) = setup("cold_start") else {
        return;
    };
    let port = free_port();
    let name = t.containers.create_httpd("web", port);
    let config = container_route(
        "podman",
        "blog",
        port,
        t.service.socket(),
        &name,
        "idle_timeout = \"1m\"",
        "",
    );
    let rouse = Rouse::serve(&t.sb, &config);
    // Timed from when rouse listens, so that its own start is not counted.
    assert!(
        rouse.wait_log(&["listening"], Duration::from_secs(5)).await,
        "{}",
        rouse.log()
    );

    let started = Instant::now();
    let resp = get(rouse.addr(), "blog.test").await;
    let through_rouse = started.elapsed();
    assert_eq!(
        (resp.status, resp.body.trim_end()),
        (200, INDEX),
        "{resp:?}"
    );
    assert!(running(&name));
    assert!(
        rouse.log_count(&["container started", &name]) == 1,
        "{}",
        rouse.log()
    );
    // rouse stops what it started when it exits.
    drop(rouse);
    assert!(!running(&name), "{name} still runs after rouse exited");

    // For comparison: `podman start` until the port answers, measured the same way.
    let started = Instant::now();
    podman_ok(&["start", &name]);
    let answered = wait_http(port, Duration::from_secs(10)).await;
    let direct = started.elapsed();
    assert!(
        answered.is_some(),
        "{name} did not answer after podman start"
    );
    eprintln!(
        "cold start: first response through rouse {:.0} ms; `podman start` until the port answers {:.0} ms",
        through_rouse.as_secs_f64() * 1000.0,
        direct.as_secs_f64() * 1000.0
    );
}

#[tokio::test]
async fn an_idle_container_is_stopped() {
    let Some(mut t) = setup("idle_stop") else {
        return;
    };
    let port = free_port();
    let name = t.containers.create_httpd("web", port);
    let config = container_route(
        "podman",
        "blog",
        port,
        t.service.socket(),
        &name,
        "idle_timeout = \"1s\"",
        "",
    );
    let rouse = Rouse::serve(&t.sb, &config);

    let resp = get(rouse.addr(), "blog.test").await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(running(&name));
    assert!(
        wait_for(Duration::from_secs(10), || !running(&name)).await,
        "{name} still runs 10s after its last request (idle_timeout 1s)\n{}",
        rouse.log()
    );
    assert!(exists(&name), "the idle stop removed {name}");
    assert!(
        rouse
            .wait_log(&["backend stopped", "route=blog"], Duration::from_secs(5))
            .await,
        "{}",
        rouse.log()
    );

    // And the next request starts it again.
    let resp = get(rouse.addr(), "blog.test").await;
    assert_eq!(resp.status, 200, "{resp:?}");
}

#[tokio::test]
async fn a_container_killed_behind_rouses_back_is_noticed_and_restarted() {
    let Some(mut t) = setup("killed") else { return };
    let port = free_port();
    let name = t.containers.create_httpd("web", port);
    let config = container_route(
        "podman",
        "blog",
        port,
        t.service.socket(),
        &name,
        "idle_timeout = \"1m\"",
        "",
    );
    let rouse = Rouse::serve(&t.sb, &config);

    let resp = get(rouse.addr(), "blog.test").await;
    assert_eq!(resp.status, 200, "{resp:?}");
    podman_ok(&["kill", &name]);
    assert!(
        rouse
            .wait_log(&["backend exited", "route=blog"], Duration::from_secs(10))
            .await,
        "rouse did not notice that {name} was killed\n{}",
        rouse.log()
    );
    let cause = format!("container \"{name}\" exited (code 137)");
    assert_eq!(
        rouse.log_count(&["backend exited", &cause]),
        1,
        "{}",
        rouse.log()
    );

    let resp = get(rouse.addr(), "blog.test").await;
    assert_eq!(
        (resp.status, resp.body.trim_end()),
        (200, INDEX),
        "{resp:?}"
    );
    assert!(running(&name));
    assert_eq!(
        rouse.log_count(&["backend ready", "route=blog"]),
        2,
        "{}",
        rouse.log()
    );
}

#[tokio::test]
async fn a_missing_container_with_an_image_is_created_on_the_first_request() {
    let Some(mut t) = setup("create") else { return };
    let port = free_port();
    let name = t.containers.name("web");
    // sh as PID 1 with a trap stops at once on SIGTERM (httpd alone would wait out the
    // engine's 10s stop timeout).
    let backend = format!(
        "image = \"{IMAGE}\"\ncommand = {}\nports = [\"127.0.0.1:{port}:8080\"]\nenv = {{ GREETING = \"hi\" }}\n",
        arr(&[
            "/bin/sh",
            "-c",
            "trap 'exit 0' TERM; /bin/httpd -f -p 8080 -h /www & wait"
        ])
    );
    let config = container_route(
        "podman",
        "blog",
        port,
        t.service.socket(),
        &name,
        "idle_timeout = \"1m\"",
        &backend,
    );
    assert!(!exists(&name));
    let rouse = Rouse::serve(&t.sb, &config);

    let resp = get(rouse.addr(), "blog.test").await;
    assert_eq!(
        (resp.status, resp.body.trim_end()),
        (200, INDEX),
        "{resp:?}\n{}",
        rouse.log()
    );
    assert!(exists(&name), "{name} was not created");
    assert!(running(&name));
    assert_eq!(
        rouse.log_count(&["container created", &name]),
        1,
        "{}",
        rouse.log()
    );
    let env = podman_ok(&["inspect", "--format", "{{.Config.Env}}", &name]);
    assert!(env.contains("GREETING=hi"), "{env}");
}

#[tokio::test]
async fn a_missing_container_without_an_image_is_a_502_naming_it() {
    let Some(mut t) = setup("missing") else {
        return;
    };
    let port = free_port();
    let name = t.containers.name("nope");
    let config = container_route("podman", "blog", port, t.service.socket(), &name, "", "");
    let rouse = Rouse::serve(&t.sb, &config);

    let resp = get(rouse.addr(), "blog.test").await;
    assert_eq!(resp.status, 502, "{resp:?}");
    assert!(
        resp.body
            .contains(&format!("container \"{name}\" not found")),
        "{resp:?}"
    );
    assert!(!exists(&name));
}

#[tokio::test]
async fn a_group_starts_together_and_stops_together() {
    let Some(mut t) = setup("group") else { return };
    let (port, db_port) = (free_port(), free_port());
    let web = t.containers.create_httpd("web", port);
    let db = t.containers.create_httpd("db", db_port);
    let config = container_route(
        "podman",
        "blog",
        port,
        t.service.socket(),
        &web,
        "idle_timeout = \"1s\"",
        &format!("also = [\"{db}\"]"),
    );
    let rouse = Rouse::serve(&t.sb, &config);

    let resp = get(rouse.addr(), "blog.test").await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(
        running(&web) && running(&db),
        "web running {}, db running {}",
        running(&web),
        running(&db)
    );
    assert!(
        wait_for(Duration::from_secs(10), || !running(&web) && !running(&db)).await,
        "group still running 10s after its last request: web {}, db {}\n{}",
        running(&web),
        running(&db),
        rouse.log()
    );
}

/// `podman create` of an httpd with a healthcheck that passes once `/tmp/ok` exists, which the
/// container's command creates after `delay` (never, if `None`); stops at once on SIGTERM.
fn create_checked(t: &mut Setup, port: u16, delay: Option<&str>, retries: &str) -> String {
    let name = t.containers.name("web");
    let touch = match delay {
        Some(delay) => format!("(sleep {delay}; touch /tmp/ok) & "),
        None => String::new(),
    };
    let script = format!("trap 'exit 0' TERM; {touch}/bin/httpd -f -p 8080 -h /www & wait");
    podman_ok(&[
        "create",
        "--name",
        &name,
        "-p",
        &format!("127.0.0.1:{port}:8080"),
        "--health-cmd",
        "test -e /tmp/ok",
        "--health-interval",
        "1s",
        "--health-retries",
        retries,
        IMAGE,
        "/bin/sh",
        "-c",
        &script,
    ]);
    name
}

#[tokio::test]
async fn a_container_with_a_healthcheck_is_ready_once_healthy() {
    let Some(mut t) = setup("healthy") else {
        return;
    };
    let port = free_port();
    let name = create_checked(&mut t, port, Some("1"), "100");
    let config = container_route(
        "podman",
        "blog",
        port,
        t.service.socket(),
        &name,
        "idle_timeout = \"1m\"",
        "",
    );
    let rouse = Rouse::serve(&t.sb, &config);

    let started = Instant::now();
    let resp = get(rouse.addr(), "blog.test").await;
    assert_eq!(resp.status, 200, "{resp:?}\n{}", rouse.log());
    // httpd answers at once; the healthcheck passes only after a second.
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "answered before the container was healthy"
    );
    assert_eq!(
        rouse.log_count(&["container healthy", &name]),
        1,
        "{}",
        rouse.log()
    );
}

#[tokio::test]
async fn an_unhealthy_container_is_a_502_saying_so() {
    let Some(mut t) = setup("unhealthy") else {
        return;
    };
    let port = free_port();
    let name = create_checked(&mut t, port, None, "1");
    let config = container_route("podman", "blog", port, t.service.socket(), &name, "", "");
    let rouse = Rouse::serve(&t.sb, &config);

    let resp = get(rouse.addr(), "blog.test").await;
    assert_eq!(resp.status, 502, "{resp:?}");
    assert!(
        resp.body
            .contains(&format!("container \"{name}\" is unhealthy")),
        "{resp:?}"
    );
    // The failed start let go of the container it started.
    assert!(
        wait_for(Duration::from_secs(10), || !running(&name)).await,
        "{name} still runs after its start failed\n{}",
        rouse.log()
    );
}

#[tokio::test]
async fn a_start_abandoned_at_start_timeout_stops_the_container() {
    let Some(mut t) = setup("abandoned") else {
        return;
    };
    let port = free_port();
    // Never healthy, and enough retries never to be called unhealthy: the start hangs.
    let name = create_checked(&mut t, port, None, "1000");
    let config = container_route(
        "podman",
        "blog",
        port,
        t.service.socket(),
        &name,
        "start_timeout = \"2s\"",
        "",
    );
    let rouse = Rouse::serve(&t.sb, &config);

    let resp = get(rouse.addr(), "blog.test").await;
    assert_eq!(resp.status, 504, "{resp:?}");
    assert!(
        wait_for(Duration::from_secs(10), || !running(&name)).await,
        "{name} still runs after its start was abandoned\n{}",
        rouse.log()
    );
}

#[tokio::test]
async fn a_container_shared_by_two_routes_runs_until_both_are_idle() {
    let Some(mut t) = setup("shared") else { return };
    let (pa, pb, pdb) = (free_port(), free_port(), free_port());
    let a = t.containers.create_httpd("a", pa);
    let b = t.containers.create_httpd("b", pb);
    let db = t.containers.create_httpd("db", pdb);
    let also = format!("also = [\"{db}\"]");
    let sock = t.service.socket();
    let config = container_route("podman", "a", pa, sock, &a, "idle_timeout = \"1s\"", &also)
        + &container_route("podman", "b", pb, sock, &b, "idle_timeout = \"4s\"", &also);
    let rouse = Rouse::serve(&t.sb, &config);

    for host in ["a.test", "b.test"] {
        let resp = get(rouse.addr(), host).await;
        assert_eq!(resp.status, 200, "{host}: {resp:?}");
    }
    assert!(
        wait_for(Duration::from_secs(10), || !running(&a)).await,
        "{a} still runs 10s after its last request (idle_timeout 1s)"
    );
    assert!(
        running(&db),
        "{db} was stopped while route b still uses it\n{}",
        rouse.log()
    );
    assert!(running(&b));
    assert_eq!(
        rouse.log_count(&["container kept running", &db]),
        1,
        "{}",
        rouse.log()
    );
    assert!(
        wait_for(Duration::from_secs(10), || !running(&b) && !running(&db)).await,
        "b or db still runs after both routes went idle\n{}",
        rouse.log()
    );
}

#[tokio::test]
async fn a_lost_event_stream_falls_back_to_polling() {
    let Some(mut t) = setup("no_events") else {
        return;
    };
    let port = free_port();
    let name = t.containers.create_httpd("web", port);
    let config = container_route(
        "podman",
        "blog",
        port,
        t.service.socket(),
        &name,
        "idle_timeout = \"1m\"",
        "",
    );
    let rouse = Rouse::serve(&t.sb, &config);

    let resp = get(rouse.addr(), "blog.test").await;
    assert_eq!(resp.status, 200, "{resp:?}");
    // The API service goes away (its containers run on) and comes back on the same socket.
    let socket = t.service.socket().to_owned();
    t.service.stop();
    assert!(
        rouse
            .wait_log(&["container event stream"], Duration::from_secs(5))
            .await,
        "{}",
        rouse.log()
    );
    assert!(running(&name), "{name} stopped with the API service");
    t.service = Service::start_at(&t.sb, &socket);
    podman_ok(&["kill", &name]);
    assert!(
        rouse
            .wait_log(&["backend exited", "route=blog"], Duration::from_secs(10))
            .await,
        "rouse did not notice that {name} was killed without its event stream\n{}",
        rouse.log()
    );
}

#[tokio::test]
async fn the_podman_service_going_away_is_a_clear_502_and_its_return_is_picked_up() {
    let Some(mut t) = setup("service_gone") else {
        return;
    };
    let port = free_port();
    let name = t.containers.create_httpd("web", port);
    let config = container_route(
        "podman",
        "blog",
        port,
        t.service.socket(),
        &name,
        "idle_timeout = \"500ms\"",
        "",
    );
    let rouse = Rouse::serve(&t.sb, &config);
    let resp = get(rouse.addr(), "blog.test").await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(
        wait_for(Duration::from_secs(10), || !running(&name)).await,
        "not stopped when idle"
    );

    // The API service goes away while the site sleeps: the next visitor gets a 502 that says
    // what is wrong, at once.
    let socket = t.service.socket().to_owned();
    t.service.stop();
    let asked = Instant::now();
    let resp = get(rouse.addr(), "blog.test").await;
    assert_eq!(resp.status, 502, "{resp:?}");
    assert!(
        resp.body
            .contains(&format!("cannot reach podman at {}", socket.display())),
        "{resp:?}"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "502 after {:?}",
        asked.elapsed()
    );

    // It comes back: so does the site, with no restart of rouse.
    t.service = Service::start_at(&t.sb, &socket);
    let resp = get(rouse.addr(), "blog.test").await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(running(&name));
}

#[tokio::test]
async fn a_request_arriving_while_the_container_stops_is_answered() {
    let Some(mut t) = setup("stop_race") else {
        return;
    };
    let port = free_port();
    let name = t.containers.create_httpd("web", port);
    let config = container_route(
        "podman",
        "blog",
        port,
        t.service.socket(),
        &name,
        "idle_timeout = \"300ms\"",
        "",
    );
    let rouse = Rouse::serve(&t.sb, &config);
    let resp = get(rouse.addr(), "blog.test").await;
    assert_eq!(resp.status, 200, "{resp:?}");

    assert!(
        rouse
            .wait_log(&["backend stopping", "route=blog"], Duration::from_secs(5))
            .await,
        "not stopped after idle_timeout"
    );
    let raced = rouse.log_count(&["backend stopped", "route=blog"]) == 0;
    let resp = get(rouse.addr(), "blog.test").await;
    assert_eq!(resp.status, 200, "request sent during the stop: {resp:?}");
    if !raced {
        eprintln!("note: the stop had finished before the request; the race was not exercised");
    }
    assert_eq!(rouse.log_count(&["backend starting", "route=blog"]), 2);
}

#[tokio::test]
async fn a_container_left_running_is_taken_over_at_start_and_stopped_when_idle() {
    let Some(mut t) = setup("adopt") else {
        return;
    };
    let port = free_port();
    let name = t.containers.create_httpd("web", port);
    // Left running: by hand here, or by a rouse that was killed before it could stop it.
    podman_ok(&["start", &name]);
    assert!(running(&name));
    let config = container_route(
        "podman",
        "blog",
        port,
        t.service.socket(),
        &name,
        "idle_timeout = \"500ms\"",
        "",
    );
    let rouse = Rouse::serve(&t.sb, &config);
    assert!(
        rouse
            .wait_log(
                &["backend already running", "route=blog"],
                Duration::from_secs(10)
            )
            .await,
        "{}",
        rouse.log()
    );
    // No request comes: it is stopped after the idle timeout all the same.
    assert!(
        wait_for(Duration::from_secs(10), || !running(&name)).await,
        "{name} still running 10 s after rouse took it over (idle_timeout 500ms)"
    );
    // And started again on demand.
    let resp = get(rouse.addr(), "blog.test").await;
    assert_eq!(resp.status, 200, "{resp:?}");
}

#[tokio::test]
async fn with_on_exit_leave_a_container_outlives_rouse_and_the_next_rouse_takes_it_over() {
    let Some(mut t) = setup("leave") else {
        return;
    };
    let port = free_port();
    let name = t.containers.create_httpd("web", port);
    let config = "[proxy]\non_exit = \"leave\"\n\n".to_string()
        + &container_route(
            "podman",
            "blog",
            port,
            t.service.socket(),
            &name,
            "idle_timeout = \"1s\"",
            "",
        );
    let mut first = Rouse::serve(&t.sb, &config);
    let resp = get(first.addr(), "blog.test").await;
    assert_eq!(resp.status, 200, "{resp:?}");
    first.signal(libc::SIGTERM);
    let status = first
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("rouse still running");
    assert!(status.success());
    assert!(
        first
            .log()
            .contains("backend left running for the next rouse"),
        "{}",
        first.log()
    );
    assert!(
        running(&name),
        "{name} was stopped although on_exit = \"leave\""
    );
    drop(first);

    // The next rouse takes it over: it serves at once, and stops it when idle.
    let next = Rouse::serve(&t.sb, &config);
    assert!(
        next.wait_log(
            &["backend already running", "route=blog"],
            Duration::from_secs(10)
        )
        .await,
        "{}",
        next.log()
    );
    assert!(
        wait_for(Duration::from_secs(10), || !running(&name)).await,
        "{name} still running after the next rouse's idle timeout"
    );
}

#[tokio::test]
async fn an_unreachable_engine_is_a_502_saying_how_to_start_it() {
    // No podman needed: nothing listens on the socket.
    let sb = Sandbox::new();
    let port = free_port();
    let socket = sb.path("nothing-here.sock");
    let config = container_route("podman", "blog", port, &socket, "blog", "", "");
    let rouse = Rouse::serve(&sb, &config);

    let resp = get(rouse.addr(), "blog.test").await;
    assert_eq!(resp.status, 502, "{resp:?}");
    assert!(
        resp.body
            .contains(&format!("cannot reach podman at {}", socket.display())),
        "{resp:?}"
    );
    assert!(resp.body.contains("podman system service"), "{resp:?}");
}

#[tokio::test]
async fn preflight_warns_of_a_missing_container_and_an_unreachable_engine() {
    use rouse::backend::{Backend, Claims, container::Container};
    use rouse::config::{ContainerConfig, CreateSpec, Engine};
    let Some(mut t) = setup("preflight") else {
        return;
    };
    let present = t.containers.create_httpd("web", free_port());
    let absent = t.containers.name("nope");
    let claims = std::sync::Arc::new(Claims::default());
    let check = |containers: &[&str], socket: &std::path::Path, create: Option<CreateSpec>| {
        let cfg = ContainerConfig {
            engine: Engine::Podman,
            containers: containers.iter().map(|c| c.to_string()).collect(),
            socket: socket.to_owned(),
            create,
        };
        Container::new("blog", cfg, claims.clone())
    };
    let sock = t.service.socket();

    assert_eq!(
        check(&[&present], sock, None).preflight().await,
        Vec::<String>::new()
    );
    let image = Some(CreateSpec {
        image: IMAGE.into(),
        ..CreateSpec::default()
    });
    assert_eq!(
        check(&[&absent], sock, image).preflight().await,
        Vec::<String>::new()
    );
    let warnings = check(&[&present, &absent], sock, None).preflight().await;
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains(&format!("container \"{absent}\" not found")),
        "{warnings:?}"
    );
    let warnings = check(&[&present], &t.sb.path("none.sock"), None)
        .preflight()
        .await;
    assert!(
        warnings.len() == 1 && warnings[0].contains("cannot reach podman"),
        "{warnings:?}"
    );
}
