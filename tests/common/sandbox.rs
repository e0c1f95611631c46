//! A real systemd for tests, that cannot touch the host's: systemd as PID 1 of a podman
//! container whose root is a throw-away directory under /var/tmp, with the host's /usr
//! bind-mounted read-only and a copy of its /etc.
//!
//! The container shares the host's network, and its /run/dbus is a host directory, so rouse on
//! the host reaches the sandbox's systemd at [`SystemdSandbox::bus`] and the units' processes
//! listen on the host's loopback. The directory holding the `rouse` binary is mounted at
//! `/srv/bin`, so units can run `/srv/bin/rouse static`.
//!
//! Never run systemd as PID 1 of a bare `unshare` namespace instead: its tmpfiles service empties
//! the host's /tmp. runc is used because crun fails on hosts with hybrid cgroups.
//!
//! Without podman or runc (or without root) a test prints `SKIP: ...` and passes, unless
//! `CI=true`, where it fails: CI must run these tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::ROUSE;

/// Units of a host that would start in the sandbox and need what the host has (masked there).
const MASKED: &[&str] = &[
    "postgresql",
    "nftables",
    "podman",
    "podman-restart",
    "podman-auto-update",
    "podman-clean-transient",
    "cni-dhcp",
    "nginx",
    "haproxy",
    "docker",
    "containerd",
    "ssh",
    "cron",
    "systemd-firstboot",
];

/// How long systemd may take to boot in the sandbox (several boot at once in parallel tests).
const BOOT_TIMEOUT: Duration = Duration::from_secs(30);

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A running systemd sandbox; the container and its directories are removed on Drop.
pub struct SystemdSandbox {
    name: String,
    base: PathBuf,
    conf: PathBuf,
}

impl SystemdSandbox {
    /// Boots a sandbox named after `tag`, or returns `None` after printing why it cannot run
    /// here (panics instead when `CI=true`, and whenever podman is there but the boot fails).
    pub fn start(tag: &str) -> Option<SystemdSandbox> {
        if let Err(reason) = prerequisites() {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("systemd tests cannot run: {reason}");
            }
            eprintln!("SKIP: systemd test {tag}: {reason}");
            return None;
        }
        let name = format!(
            "rouse-sd-{}-{tag}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let base = PathBuf::from("/var/tmp").join(&name);
        let sandbox = SystemdSandbox {
            conf: base.join("containers.conf"),
            name,
            base,
        };
        let started = Instant::now();
        sandbox.create_root();
        sandbox.run();
        sandbox.wait_booted();
        eprintln!(
            "sandbox {}: systemd up after {:?}",
            sandbox.name,
            started.elapsed()
        );
        Some(sandbox)
    }

    /// The container's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The sandbox's system bus, as rouse's `bus =` takes it.
    pub fn bus(&self) -> String {
        format!("unix:path={}/system_bus_socket", self.dbus_dir().display())
    }

    /// Writes `/etc/systemd/system/NAME` in the sandbox (call [`Self::daemon_reload`] after).
    pub fn write_unit(&self, name: &str, text: &str) {
        let path = self.root().join("etc/systemd/system").join(name);
        std::fs::write(&path, text)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }

    /// `systemctl daemon-reload` in the sandbox.
    pub fn daemon_reload(&self) {
        let out = self.systemctl(&["daemon-reload"]);
        assert!(out.status.success(), "daemon-reload failed: {}", text(&out));
    }

    /// Runs `systemctl ARGS` in the sandbox.
    pub fn systemctl(&self, args: &[&str]) -> Output {
        self.podman(&[&["exec", &self.name, "systemctl"], args].concat())
    }

    /// Runs `sh -c SCRIPT` in the sandbox.
    pub fn sh(&self, script: &str) -> Output {
        self.podman(&["exec", &self.name, "sh", "-c", script])
    }

    /// What `systemctl is-active UNIT` says (`active`, `inactive`, `failed`, …).
    pub fn is_active(&self, unit: &str) -> String {
        let out = self.systemctl(&["is-active", unit]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Waits until `systemctl is-active UNIT` says one of `states`; returns the last answer.
    pub async fn wait_state(&self, unit: &str, states: &[&str], timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let now = self.is_active(unit);
            if states.contains(&now.as_str()) || Instant::now() >= deadline {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn root(&self) -> PathBuf {
        self.base.join("root")
    }

    fn dbus_dir(&self) -> PathBuf {
        self.base.join("dbus")
    }

    fn podman(&self, args: &[&str]) -> Output {
        Command::new("podman")
            .args(args)
            .env("CONTAINERS_CONF", &self.conf)
            .stdin(Stdio::null())
            .output()
            .expect("run podman")
    }

    fn create_root(&self) {
        let root = self.root();
        let _ = std::fs::remove_dir_all(&self.base);
        for dir in [
            "usr", "proc", "sys", "dev", "run", "tmp", "var/tmp", "var/log", "var/lib", "root",
            "home", "srv/bin",
        ] {
            std::fs::create_dir_all(root.join(dir)).expect("create sandbox root");
        }
        std::fs::create_dir_all(self.dbus_dir()).expect("create sandbox dbus dir");
        for dir in ["bin", "lib", "lib64", "sbin"] {
            std::os::unix::fs::symlink(format!("usr/{dir}"), root.join(dir))
                .expect("symlink into sandbox root");
        }
        std::fs::write(
            &self.conf,
            "[containers]\ndefault_ulimits = []\n[engine]\nruntime = \"runc\"\n",
        )
        .expect("write containers.conf");
        let copy = Command::new("cp")
            .args(["-a", "/etc"])
            .arg(root.join("etc"))
            .status()
            .expect("run cp");
        assert!(copy.success(), "cannot copy /etc into the sandbox root");
        let _ = std::fs::remove_file(root.join("etc/machine-id"));
        // The sandbox runs only what a test puts there: nothing the host enabled starts in it.
        let system = root.join("etc/systemd/system");
        if let Ok(entries) = std::fs::read_dir(&system) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.ends_with(".wants") || name.ends_with(".requires") {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        for unit in MASKED {
            let link = system.join(format!("{unit}.service"));
            let _ = std::fs::remove_file(&link);
            let _ = std::os::unix::fs::symlink("/dev/null", &link);
        }
    }

    fn run(&self) {
        let bin_dir = Path::new(ROUSE).parent().expect("rouse binary directory");
        let dbus = format!("{}:/run/dbus", self.dbus_dir().display());
        let bin = format!("{}:/srv/bin:ro", bin_dir.display());
        let root = self.root();
        let out = self.podman(&[
            "run",
            "-d",
            "--name",
            &self.name,
            "--systemd=always",
            "--network",
            "host",
            "-v",
            &dbus,
            "-v",
            "/usr:/usr:ro",
            "-v",
            &bin,
            "--rootfs",
            root.to_str().expect("utf-8 path"),
            "/lib/systemd/systemd",
            "--unit=multi-user.target",
        ]);
        assert!(
            out.status.success(),
            "cannot start the systemd sandbox {}: {}",
            self.name,
            text(&out)
        );
    }

    fn wait_booted(&self) {
        let deadline = Instant::now() + BOOT_TIMEOUT;
        let mut last = String::new();
        while Instant::now() < deadline {
            let out = self.systemctl(&["is-system-running"]);
            last = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if (last == "running" || last == "degraded")
                && self.dbus_dir().join("system_bus_socket").exists()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let failed = self.systemctl(&["--failed", "--no-pager"]);
        panic!(
            "systemd in sandbox {} not up after {BOOT_TIMEOUT:?} (last state {last:?}); failed units:\n{}",
            self.name,
            text(&failed)
        );
    }
}

impl Drop for SystemdSandbox {
    fn drop(&mut self) {
        let out = self.podman(&["rm", "-f", "-t", "0", &self.name]);
        if !out.status.success() {
            eprintln!("cannot remove sandbox {}: {}", self.name, text(&out));
        }
        // The bind mounts lived in the container's mount namespace: the host sees plain dirs.
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

/// Why systemd sandboxes cannot run here, if they cannot.
fn prerequisites() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("needs root (rootful podman runs systemd as a container's PID 1)".into());
    }
    for tool in ["podman", "runc"] {
        let found = Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Err(format!(
                "{tool} is not installed (apt-get install podman runc)"
            ));
        }
    }
    if !Path::new("/lib/systemd/systemd").exists() {
        return Err("systemd is not installed on the host (its /usr is the sandbox's)".into());
    }
    Ok(())
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
