//! `kind = "docker"` against a real engine speaking the Docker Engine API: podman's
//! compatibility layer, served by the same `podman system service` socket as the podman tests.
//!
//! Skipped (with a `SKIP:` line) where podman, runc or a static busybox is missing, except
//! under `CI=true`.

mod common;

use std::time::Duration;

use common::podman::*;
use common::*;

/// A stopped httpd container behind rouse as route "blog" (`blog.test`), through the Docker
/// API. Fields drop in order: rouse stops before its containers and the API service go.
struct Blog {
    rouse: Rouse,
    name: String,
    _containers: Containers,
    _service: Service,
    _sb: Sandbox,
}

fn blog_behind_rouse(tag: &str, idle_timeout: &str) -> Blog {
    ensure_image();
    let sb = Sandbox::new();
    let service = Service::start(&sb);
    let mut containers = Containers::new(tag);
    let port = free_port();
    let name = containers.create_httpd("web", port);
    let config = container_route(
        "docker",
        "blog",
        port,
        service.socket(),
        &name,
        &format!("idle_timeout = \"{idle_timeout}\""),
        "",
    );
    let rouse = Rouse::serve(&sb, &config);
    Blog {
        rouse,
        name,
        _containers: containers,
        _service: service,
        _sb: sb,
    }
}

#[tokio::test]
async fn docker_api_cold_start_then_idle_stop() {
    if skip("docker_api_cold_start_then_idle_stop") {
        return;
    }
    let Blog { rouse, name, .. } = &blog_behind_rouse("docker", "1s");

    let started = std::time::Instant::now();
    let resp = get(rouse.addr(), "blog.test").await;
    eprintln!(
        "docker API cold start: first response through rouse {:.0} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );
    assert_eq!(
        (resp.status, resp.body.trim_end()),
        (200, INDEX),
        "{resp:?}\n{}",
        rouse.log()
    );
    assert!(
        rouse.log_count(&["container started", name]) == 1,
        "{}",
        rouse.log()
    );

    assert!(
        wait_for(Duration::from_secs(10), || !running(name)).await,
        "{name} still runs 10s after its last request (idle_timeout 1s)\n{}",
        rouse.log()
    );
    assert!(
        rouse
            .wait_log(&["backend stopped", "route=blog"], Duration::from_secs(5))
            .await,
        "{}",
        rouse.log()
    );
}

#[tokio::test]
async fn docker_api_missing_container_with_an_image_is_created() {
    if skip("docker_api_missing_container_with_an_image_is_created") {
        return;
    }
    ensure_image();
    let sb = Sandbox::new();
    let service = Service::start(&sb);
    let mut containers = Containers::new("docker-create");
    let port = free_port();
    let name = containers.name("web");
    let backend = format!(
        "image = \"{IMAGE}\"\ncommand = {}\nports = [\"127.0.0.1:{port}:8080\"]\n",
        arr(&[
            "/bin/sh",
            "-c",
            "trap 'exit 0' TERM; /bin/httpd -f -p 8080 -h /www & wait"
        ])
    );
    let config = container_route(
        "docker",
        "blog",
        port,
        service.socket(),
        &name,
        "idle_timeout = \"1m\"",
        &backend,
    );
    let rouse = Rouse::serve(&sb, &config);

    let resp = get(rouse.addr(), "blog.test").await;
    assert_eq!(
        (resp.status, resp.body.trim_end()),
        (200, INDEX),
        "{resp:?}\n{}",
        rouse.log()
    );
    assert!(exists(&name), "{name} was not created");
}

#[tokio::test]
async fn docker_api_a_request_arriving_while_the_container_stops_is_answered() {
    if skip("docker_api_a_request_arriving_while_the_container_stops_is_answered") {
        return;
    }
    // httpd is the container's PID 1 and ignores SIGTERM: each stop takes the container's
    // stop timeout (1 s), and the request below arrives during it.
    let Blog { rouse, .. } = &blog_behind_rouse("docker-race", "300ms");
    assert_eq!(get(rouse.addr(), "blog.test").await.status, 200);
    assert!(
        rouse
            .wait_log(&["backend stopping", "route=blog"], Duration::from_secs(5))
            .await,
        "not stopped after idle_timeout\n{}",
        rouse.log()
    );
    let raced = rouse.log_count(&["backend stopped", "route=blog"]) == 0;
    let resp = get(rouse.addr(), "blog.test").await;
    assert_eq!(
        (resp.status, resp.body.trim_end()),
        (200, INDEX),
        "request sent during the stop: {resp:?}\n{}",
        rouse.log()
    );
    assert!(
        raced,
        "the stop had ended before the request:\n{}",
        rouse.log()
    );
    assert_eq!(rouse.log_count(&["backend starting", "route=blog"]), 2);
}
