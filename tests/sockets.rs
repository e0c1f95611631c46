//! Where rouse's listening sockets come from: systemd (real `systemd-socket-activate`), the
//! LISTEN_FDS protocol done by hand, or its own `bind`.

mod common;

use common::*;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::Duration;

fn route_a(sb: &Sandbox) -> String {
    let port = free_port();
    exec_route(
        "a",
        &["a.test"],
        port,
        &counted_static(sb, "a.pids", port, "site a"),
        "",
    )
}

/// Connect-and-ask until something answers (for sockets rouse binds itself), up to 10s.
async fn get_when_listening(addr: SocketAddr, host: &str) -> Response {
    let mut last = None;
    for _ in 0..500 {
        match try_send(
            addr,
            &format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
        .await
        {
            Ok(resp) => return resp,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("nothing answered on {addr} within 10s: {last:?}");
}

#[tokio::test]
async fn serves_on_a_socket_passed_by_systemd_socket_activate() {
    let Ok(path) = which("systemd-socket-activate") else {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!(
                "systemd-socket-activate is not installed, and CI=true: install systemd (Debian package 'systemd')"
            );
        }
        eprintln!(
            "SKIP serves_on_a_socket_passed_by_systemd_socket_activate: systemd-socket-activate not found"
        );
        return;
    };
    let sb = Sandbox::new();
    let config = sb.write("rouse.toml", &format!("{LISTENER}{}", route_a(&sb)));
    let port = free_port();
    let log = std::fs::File::create(sb.path("rouse.log")).unwrap();
    let child = Command::new(path)
        .arg(format!("--listen=127.0.0.1:{port}"))
        .arg("--fdname=http")
        .arg(ROUSE)
        .arg("serve")
        .arg("-c")
        .arg(&config)
        .env_remove("RUST_LOG")
        .env("ROUSE_TEST_SANDBOX", sb.dir())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawn systemd-socket-activate");
    // systemd-socket-activate execs rouse in place, so the pid is rouse's.
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let rouse = Rouse::from_child(child, addr, sb.path("rouse.log"));

    let resp = get_when_listening(addr, "a.test").await;
    assert_eq!(
        (resp.status, resp.body.trim_end()),
        (200, "site a"),
        "{resp:?}"
    );
    let resp = get(addr, "b.test").await;
    assert_eq!(resp.status, 404, "{resp:?}");
    drop(rouse);
}

#[tokio::test]
async fn several_inherited_sockets_without_names_are_refused_with_a_clear_message() {
    let sb = Sandbox::new();
    let listeners = "[[listener]]\nname = \"http\"\nbind = \"127.0.0.1:1\"\nprotocol = \"http\"\n\n\
                     [[listener]]\nname = \"other\"\nbind = \"127.0.0.1:2\"\nprotocol = \"http\"\n\n";
    let config = sb.write("rouse.toml", &format!("{listeners}{}", route_a(&sb)));
    let l1 = TcpListener::bind("127.0.0.1:0").unwrap();
    let l2 = TcpListener::bind("127.0.0.1:0").unwrap();
    let child = spawn_inherited(
        &config,
        &sb.path("rouse.log"),
        &[l1.as_raw_fd(), l2.as_raw_fd()],
        None,
    );
    let addr = l1.local_addr().unwrap();
    drop((l1, l2));
    let mut rouse = Rouse::from_child(child, addr, sb.path("rouse.log"));

    let status = rouse
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("rouse kept running with 2 unnamed sockets");
    assert!(
        !status.success(),
        "rouse exited with {}",
        describe_exit(&status)
    );
    let log = rouse.log();
    assert!(
        log.contains("LISTEN_FDNAMES"),
        "the message should say that LISTEN_FDNAMES is needed:\n{log}"
    );
}

#[tokio::test]
async fn one_listener_accepts_one_unnamed_inherited_socket() {
    let sb = Sandbox::new();
    let config = sb.write("rouse.toml", &format!("{LISTENER}{}", route_a(&sb)));
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let child = spawn_inherited(&config, &sb.path("rouse.log"), &[l.as_raw_fd()], None);
    drop(l);
    let rouse = Rouse::from_child(child, addr, sb.path("rouse.log"));

    let resp = get(rouse.addr(), "a.test").await;
    assert_eq!(
        (resp.status, resp.body.trim_end()),
        (200, "site a"),
        "{resp:?}"
    );
}

#[tokio::test]
async fn two_named_inherited_sockets_both_serve() {
    let sb = Sandbox::new();
    // Names in LISTEN_FDNAMES order differ from config order: matching is by name.
    let listeners = "[[listener]]\nname = \"public\"\nbind = \"127.0.0.1:1\"\nprotocol = \"http\"\n\n\
                     [[listener]]\nname = \"internal\"\nbind = \"127.0.0.1:2\"\nprotocol = \"http\"\n\n";
    let config = sb.write("rouse.toml", &format!("{listeners}{}", route_a(&sb)));
    let l1 = TcpListener::bind("127.0.0.1:0").unwrap();
    let l2 = TcpListener::bind("127.0.0.1:0").unwrap();
    let (a1, a2) = (l1.local_addr().unwrap(), l2.local_addr().unwrap());
    let child = spawn_inherited(
        &config,
        &sb.path("rouse.log"),
        &[l1.as_raw_fd(), l2.as_raw_fd()],
        Some("internal:public"),
    );
    drop((l1, l2));
    let rouse = Rouse::from_child(child, a1, sb.path("rouse.log"));

    for addr in [a1, a2] {
        let resp = get(addr, "a.test").await;
        assert_eq!(
            (resp.status, resp.body.trim_end()),
            (200, "site a"),
            "on {addr}: {resp:?}"
        );
    }
    drop(rouse);
}

#[tokio::test]
async fn binds_its_own_socket_when_nothing_is_inherited() {
    let sb = Sandbox::new();
    let port = free_port();
    let listener = format!(
        "[[listener]]\nname = \"http\"\nbind = \"127.0.0.1:{port}\"\nprotocol = \"http\"\n\n"
    );
    let config = sb.write("rouse.toml", &format!("{listener}{}", route_a(&sb)));
    let log = std::fs::File::create(sb.path("rouse.log")).unwrap();
    let child = Command::new(ROUSE)
        .args(["serve", "-c"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDNAMES")
        .env("ROUSE_TEST_SANDBOX", sb.dir())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let rouse = Rouse::from_child(child, addr, sb.path("rouse.log"));

    let resp = get_when_listening(addr, "a.test").await;
    assert_eq!(
        (resp.status, resp.body.trim_end()),
        (200, "site a"),
        "{resp:?}"
    );
    drop(rouse);
}

fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or(())
}

#[tokio::test]
async fn sockets_meant_for_another_process_are_ignored() {
    // LISTEN_PID names another process: rouse must not take fd 3 and binds `bind` instead.
    let sb = Sandbox::new();
    let port = free_port();
    let listener = format!(
        "[[listener]]\nname = \"http\"\nbind = \"127.0.0.1:{port}\"\nprotocol = \"http\"\n\n"
    );
    let config = sb.write("rouse.toml", &format!("{listener}{}", route_a(&sb)));
    let decoy = TcpListener::bind("127.0.0.1:0").unwrap();
    let fd = decoy.as_raw_fd();
    let log = std::fs::File::create(sb.path("rouse.log")).unwrap();
    let mut cmd = Command::new(ROUSE);
    cmd.args(["serve", "-c"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .env("LISTEN_PID", "1")
        .env("LISTEN_FDS", "1")
        .env("LISTEN_FDNAMES", "http")
        .env("ROUSE_TEST_SANDBOX", sb.dir())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let rouse = Rouse::from_child(child, addr, sb.path("rouse.log"));

    let resp = get_when_listening(addr, "a.test").await;
    assert_eq!(
        (resp.status, resp.body.trim_end()),
        (200, "site a"),
        "{resp:?}"
    );
    drop(rouse);
    drop(decoy);
}
