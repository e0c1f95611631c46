//! `kind = "systemd"` against a real systemd: units started on the first request, stopped when
//! idle, failures and missing units told to the client, units stopped by hand noticed, groups
//! (`also`) and units shared by two routes.
//!
//! Each test boots its own systemd sandbox (see `common::sandbox`); rouse runs on the host and
//! talks to the sandbox's system bus, and the units run `rouse static` on the host's loopback.

mod common;

use std::time::{Duration, Instant};

use common::sandbox::SystemdSandbox;
use common::*;

/// Long enough for any wait on systemd here, short enough to fail fast.
const WAIT: Duration = Duration::from_secs(10);

/// A unit running `rouse static` on `port`, quick to stop.
fn static_unit(port: u16, body: &str) -> String {
    format!(
        "[Service]\nExecStart=/srv/bin/rouse static --listen 127.0.0.1:{port} --body \"{body}\"\nTimeoutStopSec=2\n"
    )
}

/// One `[[route]]` with a systemd backend on the sandbox's bus.
fn systemd_route(
    sd: &SystemdSandbox,
    name: &str,
    port: u16,
    unit: &str,
    also: &[&str],
    extra: &str,
) -> String {
    format!(
        "[[route]]\nname = {}\nhosts = [{}]\nupstream = \"127.0.0.1:{port}\"\n{extra}\n[route.backend]\nkind = \"systemd\"\nunit = {}\nalso = {}\nbus = {}\n\n",
        q(name),
        q(&format!("{name}.test")),
        q(unit),
        arr(also),
        q(&sd.bus()),
    )
}

/// `web.service` (stopped, serving a body on `port`) in a sandbox, with rouse in front of it as
/// route "web" (host `web.test`). Fields drop in order: rouse stops before its sandbox goes.
struct WebUnit {
    rouse: Rouse,
    port: u16,
    _sb: Sandbox,
    sd: SystemdSandbox,
}

/// Sets up a [`WebUnit`] with `extra` route keys; `None` when the sandbox cannot run here.
fn web_unit_behind_rouse(tag: &str, body: &str, extra: &str) -> Option<WebUnit> {
    let sd = SystemdSandbox::start(tag)?;
    let port = free_port();
    sd.write_unit("web.service", &static_unit(port, body));
    sd.daemon_reload();
    assert_eq!(sd.is_active("web.service"), "inactive");
    let sb = Sandbox::new();
    let rouse = Rouse::serve(
        &sb,
        &systemd_route(&sd, "web", port, "web.service", &[], extra),
    );
    Some(WebUnit {
        rouse,
        port,
        _sb: sb,
        sd,
    })
}

#[tokio::test]
async fn first_request_starts_a_stopped_unit_and_idle_stops_it() {
    let Some(unit) = web_unit_behind_rouse("cold", "hi", "idle_timeout = \"1s\"") else {
        return;
    };
    let WebUnit {
        rouse, port, sd, ..
    } = &unit;
    let started = Instant::now();
    let resp = get(rouse.addr(), "web.test").await;
    let first = started.elapsed();
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(resp.body.trim_end(), "hi");
    eprintln!("systemd cold start: first response through rouse after {first:?}");
    assert_eq!(sd.is_active("web.service"), "active");

    assert!(
        rouse
            .wait_log(&["backend stopped", "route=web"], WAIT)
            .await,
        "the unit was not stopped after idle_timeout"
    );
    assert_eq!(sd.is_active("web.service"), "inactive");

    // For comparison: the same unit started by hand, until it answers (measured in the sandbox).
    let out = sd.sh(&format!(
        "t0=$(date +%s%N); systemctl start web.service; \
         until curl -fs -o /dev/null http://127.0.0.1:{port}/; do sleep 0.001; done; \
         echo $(( ($(date +%s%N) - t0) / 1000 ))"
    ));
    let micros: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    eprintln!(
        "systemd cold start: systemctl start until the unit answers HTTP took {:?}",
        Duration::from_micros(micros)
    );
    let _ = sd.systemctl(&["stop", "web.service"]);
}

#[tokio::test]
async fn a_unit_that_fails_to_start_answers_502_with_its_result() {
    let Some(sd) = SystemdSandbox::start("fail") else {
        return;
    };
    let port = free_port();
    sd.write_unit(
        "broken.service",
        "[Service]\nExecStart=/bin/sh -c 'echo cannot open database >&2; exit 3'\n",
    );
    sd.daemon_reload();

    let sb = Sandbox::new();
    let rouse = Rouse::serve(
        &sb,
        &systemd_route(&sd, "broken", port, "broken.service", &[], ""),
    );
    let resp = get(rouse.addr(), "broken.test").await;
    assert_eq!(resp.status, 502, "{}", resp.body);
    assert!(
        resp.body
            .contains("unit \"broken.service\" failed: exit-code"),
        "the 502 does not say which unit failed and how: {}",
        resp.body
    );
    assert!(
        resp.body.contains("route \"broken\""),
        "the 502 does not name the route: {}",
        resp.body
    );
    assert_eq!(sd.is_active("broken.service"), "failed");
}

#[tokio::test]
async fn a_unit_that_does_not_exist_answers_502_naming_it_as_not_found() {
    let Some(sd) = SystemdSandbox::start("missing") else {
        return;
    };
    let sb = Sandbox::new();
    let rouse = Rouse::serve(
        &sb,
        &systemd_route(&sd, "ghost", free_port(), "ghost.service", &[], ""),
    );
    let resp = get(rouse.addr(), "ghost.test").await;
    assert_eq!(resp.status, 502, "{}", resp.body);
    assert!(
        resp.body.contains(&format!(
            "unit \"ghost.service\" not found on bus \"{}\"",
            sd.bus()
        )),
        "the 502 does not name the missing unit and its bus: {}",
        resp.body
    );

    // `rouse check` warns about it without starting anything.
    let (status, _, stderr) = run_rouse(&["check", "-c", &sb.p("rouse.toml")]);
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("route \"ghost\": unit \"ghost.service\" not found"),
        "rouse check gave no warning: {stderr}"
    );
}

#[tokio::test]
async fn a_unit_stopped_by_hand_is_noticed_and_started_again_by_the_next_request() {
    let Some(unit) = web_unit_behind_rouse("byhand", "again", "idle_timeout = \"1m\"") else {
        return;
    };
    let WebUnit { rouse, sd, .. } = &unit;
    assert_eq!(get(rouse.addr(), "web.test").await.status, 200);

    let out = sd.systemctl(&["stop", "web.service"]);
    assert!(out.status.success());
    assert!(
        rouse.wait_log(&["backend exited", "route=web"], WAIT).await,
        "rouse did not notice the unit being stopped"
    );
    assert!(
        rouse.log_count(&["unit \"web.service\" is", "stopped outside rouse"]) > 0,
        "the cause does not say the unit was stopped outside rouse"
    );

    let resp = get(rouse.addr(), "web.test").await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(resp.body.trim_end(), "again");
    assert_eq!(sd.is_active("web.service"), "active");
    assert_eq!(rouse.log_count(&["backend ready", "route=web"]), 2);
}

#[tokio::test]
async fn a_group_starts_together_and_stops_together() {
    let Some(sd) = SystemdSandbox::start("group") else {
        return;
    };
    let (port, db_port) = (free_port(), free_port());
    sd.write_unit("blog.service", &static_unit(port, "blog"));
    sd.write_unit("db.service", &static_unit(db_port, "db"));
    sd.daemon_reload();

    let sb = Sandbox::new();
    let rouse = Rouse::serve(
        &sb,
        &systemd_route(
            &sd,
            "blog",
            port,
            "blog.service",
            &["db.service"],
            "idle_timeout = \"1s\"",
        ),
    );
    let resp = get(rouse.addr(), "blog.test").await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(sd.is_active("blog.service"), "active");
    assert_eq!(sd.is_active("db.service"), "active");

    assert!(
        rouse
            .wait_log(&["backend stopped", "route=blog"], WAIT)
            .await
    );
    assert_eq!(sd.is_active("blog.service"), "inactive");
    assert_eq!(sd.is_active("db.service"), "inactive");
}

#[tokio::test]
async fn a_unit_shared_by_two_routes_stops_only_when_both_are_idle() {
    let Some(sd) = SystemdSandbox::start("shared") else {
        return;
    };
    let (a_port, b_port, db_port) = (free_port(), free_port(), free_port());
    sd.write_unit("a.service", &static_unit(a_port, "a"));
    sd.write_unit("b.service", &static_unit(b_port, "b"));
    sd.write_unit("db.service", &static_unit(db_port, "db"));
    sd.daemon_reload();

    let sb = Sandbox::new();
    let rouse = Rouse::serve(
        &sb,
        &format!(
            "{}{}",
            systemd_route(
                &sd,
                "a",
                a_port,
                "a.service",
                &["db.service"],
                "idle_timeout = \"1s\""
            ),
            systemd_route(
                &sd,
                "b",
                b_port,
                "b.service",
                &["db.service"],
                "idle_timeout = \"4s\""
            ),
        ),
    );
    let (a, b) = tokio::join!(get(rouse.addr(), "a.test"), get(rouse.addr(), "b.test"));
    assert_eq!((a.status, b.status), (200, 200), "{} / {}", a.body, b.body);
    assert_eq!(sd.is_active("db.service"), "active");

    // Route a goes idle first: its own unit stops, the shared one stays for route b.
    assert!(rouse.wait_log(&["backend stopped", "route=a"], WAIT).await);
    assert_eq!(sd.is_active("a.service"), "inactive");
    assert_eq!(sd.is_active("db.service"), "active");
    assert_eq!(sd.is_active("b.service"), "active");
    assert_eq!(
        rouse.log_count(&[
            "unit left running for another route",
            "route=a",
            "unit=db.service"
        ]),
        1
    );
    // Route b still answers from the running units meanwhile.
    assert_eq!(get(rouse.addr(), "b.test").await.body.trim_end(), "b");

    // Then route b goes idle: now nobody uses db.service.
    assert!(rouse.wait_log(&["backend stopped", "route=b"], WAIT).await);
    assert_eq!(sd.is_active("b.service"), "inactive");
    assert_eq!(sd.is_active("db.service"), "inactive");
}

#[tokio::test]
async fn a_start_given_up_at_start_timeout_leaves_no_unit_running() {
    let Some(sd) = SystemdSandbox::start("timeout") else {
        return;
    };
    let port = free_port();
    // The start job waits for ExecStartPre=, far longer than the route's start_timeout.
    sd.write_unit(
        "slow.service",
        &format!(
            "[Service]\nExecStartPre=/bin/sleep 30\nExecStart=/srv/bin/rouse static --listen 127.0.0.1:{port} --body slow\nTimeoutStopSec=2\n"
        ),
    );
    sd.write_unit("db.service", &static_unit(free_port(), "db"));
    sd.daemon_reload();

    let sb = Sandbox::new();
    let rouse = Rouse::serve(
        &sb,
        &systemd_route(
            &sd,
            "slow",
            port,
            "slow.service",
            &["db.service"],
            "start_timeout = \"500ms\"",
        ),
    );
    let resp = get(rouse.addr(), "slow.test").await;
    assert_eq!(resp.status, 504, "{}", resp.body);
    // The abandoned start is undone: the unit still activating and its group are stopped
    // (systemd counts an ExecStartPre= killed by the stop as a failure).
    let stopped = ["inactive", "failed"];
    let slow = sd.wait_state("slow.service", &stopped, WAIT).await;
    assert!(stopped.contains(&slow.as_str()), "slow.service is {slow}");
    assert_eq!(
        sd.wait_state("db.service", &stopped, WAIT).await,
        "inactive"
    );
}

#[tokio::test]
async fn a_restart_of_dbus_does_not_end_a_running_backend() {
    let Some(unit) = web_unit_behind_rouse("dbus", "still here", "idle_timeout = \"2s\"") else {
        return;
    };
    let WebUnit { rouse, sd, .. } = &unit;
    assert_eq!(get(rouse.addr(), "web.test").await.status, 200);

    let out = sd.systemctl(&["restart", "dbus.service"]);
    assert!(out.status.success());
    assert!(
        rouse
            .wait_log(&["bus connection lost", "route=web"], WAIT)
            .await,
        "rouse did not notice the bus going away"
    );
    let resp = get(rouse.addr(), "web.test").await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(rouse.log_count(&["backend exited"]), 0);

    // The idle stop goes through the new connection.
    assert!(
        rouse
            .wait_log(&["backend stopped", "route=web"], WAIT)
            .await
    );
    assert_eq!(sd.is_active("web.service"), "inactive");
}

#[tokio::test]
async fn a_unit_left_active_is_taken_over_at_start_and_stopped_when_idle() {
    let Some(sd) = SystemdSandbox::start("adopt") else {
        return;
    };
    let port = free_port();
    sd.write_unit("web.service", &static_unit(port, "hi"));
    sd.daemon_reload();
    // Left active: by hand here, or by a rouse that was killed before it could stop it.
    let _ = sd.systemctl(&["start", "web.service"]);
    assert_eq!(sd.is_active("web.service"), "active");
    let sb = Sandbox::new();
    let rouse = Rouse::serve(
        &sb,
        &systemd_route(
            &sd,
            "web",
            port,
            "web.service",
            &[],
            "idle_timeout = \"1s\"",
        ),
    );
    assert!(
        rouse
            .wait_log(&["backend already running", "route=web"], WAIT)
            .await,
        "{}",
        rouse.log()
    );
    // No request: stopped after the idle timeout all the same.
    assert!(
        rouse
            .wait_log(&["backend stopped", "route=web"], WAIT)
            .await,
        "the unit was not stopped after idle_timeout"
    );
    assert_eq!(sd.is_active("web.service"), "inactive");
}

#[tokio::test]
async fn the_bus_going_away_is_a_clear_502_and_its_return_is_picked_up() {
    let Some(unit) = web_unit_behind_rouse("busgone", "back", "idle_timeout = \"1s\"") else {
        return;
    };
    let WebUnit { rouse, sd, .. } = &unit;
    // The unit is stopped; then D-Bus goes away (socket and service both, so nothing
    // restarts it on the next connection).
    let out = sd.systemctl(&["stop", "dbus.socket", "dbus.service"]);
    assert!(out.status.success(), "{out:?}");

    let resp = get(rouse.addr(), "web.test").await;
    assert_eq!(resp.status, 502, "{resp:?}");
    assert!(
        resp.body.contains("route \"web\"") && resp.body.contains(&sd.bus()),
        "the 502 names neither the route nor the bus: {}",
        resp.body
    );
    assert_eq!(sd.is_active("web.service"), "inactive");

    // D-Bus is back: so is the site, without a restart of rouse.
    let out = sd.systemctl(&["start", "dbus.socket", "dbus.service"]);
    assert!(out.status.success(), "{out:?}");
    let resp = get(rouse.addr(), "web.test").await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.body.trim_end(), "back");
    assert!(
        rouse
            .wait_log(&["backend stopped", "route=web"], WAIT)
            .await
    );
    assert_eq!(sd.is_active("web.service"), "inactive");
}

#[tokio::test]
async fn a_request_arriving_while_the_unit_stops_is_answered() {
    let Some(sd) = SystemdSandbox::start("stoprace") else {
        return;
    };
    let port = free_port();
    // A stop that takes a second (ExecStop runs before the main process is signalled), so the
    // request below arrives while it is under way.
    sd.write_unit(
        "web.service",
        &format!("{}ExecStop=/bin/sleep 1\n", static_unit(port, "again")),
    );
    sd.daemon_reload();
    let sb = Sandbox::new();
    let rouse = Rouse::serve(
        &sb,
        &systemd_route(
            &sd,
            "web",
            port,
            "web.service",
            &[],
            "idle_timeout = \"300ms\"",
        ),
    );
    assert_eq!(get(rouse.addr(), "web.test").await.status, 200);
    assert!(
        rouse
            .wait_log(&["backend stopping", "route=web"], WAIT)
            .await,
        "not stopped after idle_timeout"
    );
    let stopping = sd.is_active("web.service");
    let resp = get(rouse.addr(), "web.test").await;
    assert_eq!(resp.status, 200, "request sent during the stop: {resp:?}");
    assert_eq!(resp.body.trim_end(), "again");
    assert_eq!(stopping, "deactivating", "the stop was not under way");
    assert_eq!(rouse.log_count(&["backend starting", "route=web"]), 2);
    drop(rouse);
    let _ = sd.systemctl(&["stop", "web.service"]);
}
