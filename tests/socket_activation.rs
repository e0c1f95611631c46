//! rouse deployed as users deploy it: inside a real systemd (the test sandbox), run by the
//! `.socket` and `.service` units that `rouse units` writes, fronting a systemd unit.
//!
//! The first connection starts rouse (socket activation, `Type=notify`), whose first request
//! starts the backend unit; the unit stops when idle, rouse exits after `idle_exit`, and the
//! socket, still listening, starts rouse again on the next connection.

mod common;

use std::time::{Duration, Instant};

use common::sandbox::SystemdSandbox;
use common::*;

const WAIT: Duration = Duration::from_secs(15);

#[tokio::test]
async fn socket_activated_rouse_starts_the_unit_stops_it_exits_and_wakes_again() {
    let Some(sd) = SystemdSandbox::start("activation") else {
        return;
    };
    let proxy_port = free_port();
    let backend_port = free_port();
    sd.write_unit(
        "web.service",
        &format!(
            "[Service]\nExecStart=/srv/bin/rouse static --listen 127.0.0.1:{backend_port} --body \"hello from web.service\"\nTimeoutStopSec=2\n"
        ),
    );
    // The config lives in the sandbox; the backend is reached on the sandbox's own system bus.
    let config = format!(
        "[proxy]\nidle_exit = \"1s\"\n\n[[listener]]\nname = \"http\"\nbind = \"127.0.0.1:{proxy_port}\"\n\n[[route]]\nname = \"web\"\nhosts = [\"web.test\"]\nupstream = \"127.0.0.1:{backend_port}\"\nidle_timeout = \"500ms\"\n[route.backend]\nkind = \"systemd\"\nunit = \"web.service\"\n"
    );
    let out = sd.sh(&format!(
        "mkdir -p /etc/rouse && cat > /etc/rouse/rouse.toml <<'EOF'\n{config}EOF\n/srv/bin/rouse units -c /etc/rouse/rouse.toml --output /etc/systemd/system --bin /srv/bin/rouse"
    ));
    assert!(
        out.status.success(),
        "rouse units failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    sd.daemon_reload();
    let out = sd.systemctl(&["start", "rouse.socket"]);
    assert!(out.status.success(), "cannot start rouse.socket: {out:?}");
    assert_eq!(
        sd.is_active("rouse.service"),
        "inactive",
        "rouse runs before any connection"
    );

    let addr = format!("127.0.0.1:{proxy_port}").parse().unwrap();
    let started = Instant::now();
    let resp = get(addr, "web.test").await;
    eprintln!(
        "first request through socket-activated rouse and a cold unit: {:?}",
        started.elapsed()
    );
    assert_eq!(resp.status, 200, "body: {}", resp.body);
    assert_eq!(resp.body.trim_end(), "hello from web.service");
    // Type=notify: rouse is `active` only once it has sent READY=1.
    assert_eq!(
        sd.wait_state("rouse.service", &["active"], WAIT).await,
        "active"
    );
    assert_eq!(sd.is_active("web.service"), "active");

    // Idle: the unit stops, then rouse exits cleanly, and the socket keeps listening.
    assert_eq!(
        sd.wait_state("web.service", &["inactive"], WAIT).await,
        "inactive"
    );
    assert_eq!(
        sd.wait_state("rouse.service", &["inactive"], WAIT).await,
        "inactive"
    );
    let result = sd.systemctl(&["show", "-p", "Result", "--value", "rouse.service"]);
    assert_eq!(
        String::from_utf8_lossy(&result.stdout).trim(),
        "success",
        "rouse did not exit 0"
    );
    assert_eq!(sd.is_active("rouse.socket"), "active");

    // The next connection wakes rouse, which starts the unit again.
    let resp = get(addr, "web.test").await;
    assert_eq!(resp.status, 200, "body: {}", resp.body);
    assert_eq!(resp.body.trim_end(), "hello from web.service");
    assert_eq!(
        sd.wait_state("rouse.service", &["active"], WAIT).await,
        "active"
    );
    let starts = sd.sh("journalctl -u rouse.service -o cat | grep -c 'backend ready'");
    assert_eq!(
        String::from_utf8_lossy(&starts.stdout).trim(),
        "2",
        "expected one backend start per rouse run"
    );
}

#[tokio::test]
async fn systemctl_reload_checks_the_config_then_rouse_applies_it() {
    let Some(sd) = SystemdSandbox::start("reload") else {
        return;
    };
    let proxy_port = free_port();
    let backend_port = free_port();
    sd.write_unit(
        "web.service",
        &format!(
            "[Service]\nExecStart=/srv/bin/rouse static --listen 127.0.0.1:{backend_port} --body \"web\"\nTimeoutStopSec=2\n"
        ),
    );
    let config = |hosts: &str| {
        format!(
            "[[listener]]\nname = \"http\"\nbind = \"127.0.0.1:{proxy_port}\"\n\n[[route]]\nname = \"web\"\nhosts = {hosts}\nupstream = \"127.0.0.1:{backend_port}\"\n[route.backend]\nkind = \"systemd\"\nunit = \"web.service\"\n"
        )
    };
    let write = |text: &str| {
        let out = sd.sh(&format!(
            "mkdir -p /etc/rouse && cat > /etc/rouse/rouse.toml <<'EOF'\n{text}EOF\n"
        ));
        assert!(out.status.success(), "{out:?}");
    };
    write(&config("[\"web.test\"]"));
    let out = sd.sh(
        "/srv/bin/rouse units -c /etc/rouse/rouse.toml --output /etc/systemd/system --bin /srv/bin/rouse",
    );
    assert!(out.status.success(), "rouse units failed: {out:?}");
    sd.daemon_reload();
    assert!(sd.systemctl(&["start", "rouse.socket"]).status.success());
    let addr = format!("127.0.0.1:{proxy_port}").parse().unwrap();
    assert_eq!(get(addr, "web.test").await.status, 200);
    assert_eq!(
        sd.wait_state("rouse.service", &["active"], WAIT).await,
        "active"
    );
    let main_pid = || {
        let out = sd.systemctl(&["show", "-p", "MainPID", "--value", "rouse.service"]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let pid = main_pid();

    // A new host for the route: `systemctl reload` checks the file, then rouse applies it.
    write(&config("[\"web.test\", \"www.test\"]"));
    let out = sd.systemctl(&["reload", "rouse.service"]);
    assert!(out.status.success(), "systemctl reload failed: {out:?}");
    let resp = get(addr, "www.test").await;
    assert_eq!((resp.status, resp.body.trim_end()), (200, "web"));
    assert_eq!(main_pid(), pid, "rouse was restarted, not reloaded");
    assert_eq!(sd.is_active("rouse.service"), "active");

    // A broken file: the reload fails at the check, and rouse is not even signalled.
    write(&config("[\"web.test\""));
    let out = sd.systemctl(&["reload", "rouse.service"]);
    assert!(!out.status.success(), "a broken config was reloaded");
    assert_eq!(sd.is_active("rouse.service"), "active");
    assert_eq!(main_pid(), pid);
    assert_eq!(get(addr, "www.test").await.status, 200);
    let journal = sd.sh("journalctl -u rouse.service -o cat");
    let journal = String::from_utf8_lossy(&journal.stdout);
    assert_eq!(journal.matches("config reloaded").count(), 1, "{journal}");
    assert!(!journal.contains("config not reloaded"), "{journal}");
}
