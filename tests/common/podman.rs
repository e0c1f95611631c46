//! Real podman for the container tests, set up by the tests themselves: a private
//! containers.conf (runc, no default ulimits: what works on a host whose cgroups crun refuses),
//! a test image built from a static busybox, one `podman system service` per test on a socket in
//! its sandbox, and containers named after the test that are removed when it ends.
//!
//! Without podman, runc or a static busybox, [`skip`] prints `SKIP: …` and the test returns;
//! with `CI=true` it fails instead, since CI installs them.

use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::Sandbox;

/// The image every test container runs: busybox with `httpd` and `sh`, serving `/www`.
pub const IMAGE: &str = "localhost/rouse-test-httpd:latest";
/// The body of `/www/index.html` in [`IMAGE`].
pub const INDEX: &str = "hello from rouse-test-httpd";

/// Where the shared setup lives (the containers.conf, the image build and its lock).
fn work_dir() -> PathBuf {
    std::env::temp_dir().join("rouse-test-podman")
}

/// The containers.conf every podman command of the tests uses.
pub fn containers_conf() -> PathBuf {
    static CONF: OnceLock<PathBuf> = OnceLock::new();
    CONF.get_or_init(|| {
        let dir = work_dir();
        fs::create_dir_all(&dir).expect("create podman test dir");
        let path = dir.join("containers.conf");
        // Written beside and renamed, so a test in another process never reads half of it.
        let tmp = dir.join(format!("containers.conf.{}", std::process::id()));
        fs::write(
            &tmp,
            "[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = \"runc\"\n",
        )
        .expect("write containers.conf");
        fs::rename(&tmp, &path).expect("rename containers.conf");
        path
    })
    .clone()
}

/// A `podman` command with the tests' containers.conf.
pub fn podman_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new("podman");
    cmd.args(args)
        .env("CONTAINERS_CONF", containers_conf())
        .stdin(Stdio::null());
    cmd
}

/// Runs podman to completion.
pub fn podman(args: &[&str]) -> Output {
    podman_cmd(args).output().expect("run podman")
}

/// Runs podman and returns its stdout; panics with its stderr if it fails.
pub fn podman_ok(args: &[&str]) -> String {
    let out = podman(args);
    assert!(
        out.status.success(),
        "podman {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

// === Availability ===

fn in_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// A statically linked busybox: the only program in the test image.
fn static_busybox() -> Option<PathBuf> {
    [
        "/bin/busybox",
        "/usr/bin/busybox",
        "/usr/lib/busybox-static/busybox",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| {
        // A dynamic binary names its loader near its start (PT_INTERP).
        fs::read(p).is_ok_and(|b| {
            let head = &b[..b.len().min(4096)];
            !head
                .windows(8)
                .any(|w| w == b"/lib/ld-" || w == b"/ld-linu")
        })
    })
}

/// Why podman cannot be used here, if it cannot.
fn missing() -> Option<String> {
    if !in_path("podman") {
        return Some("podman is not installed (apt-get install podman runc busybox-static)".into());
    }
    if !in_path("runc") {
        return Some("runc is not installed (apt-get install runc)".into());
    }
    if static_busybox().is_none() {
        return Some(
            "no static busybox for the test image (apt-get install busybox-static)".into(),
        );
    }
    None
}

/// True if the test must be skipped: prints why. With `CI=true`, panics instead.
pub fn skip(test: &str) -> bool {
    match missing() {
        None => false,
        Some(reason) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{test}: {reason} (CI=true: podman tests must run)")
        }
        Some(reason) => {
            eprintln!("SKIP: {test}: {reason}");
            true
        }
    }
}

// === The test image ===

/// Builds [`IMAGE`] once; tests in parallel (threads or processes) wait for one build.
pub fn ensure_image() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = work_dir();
        fs::create_dir_all(&dir).expect("create podman test dir");
        let lock = fs::File::create(dir.join("image.lock")).expect("create image lock");
        // SAFETY: flock on a file this function owns; released when `lock` is closed.
        assert_eq!(
            unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) },
            0,
            "flock image lock"
        );
        if podman(&["image", "exists", IMAGE]).status.success() {
            return;
        }
        let build = tempfile::Builder::new()
            .prefix("rootfs-")
            .tempdir_in(&dir)
            .expect("image build dir");
        let root = build.path().join("rootfs");
        fs::create_dir_all(root.join("bin")).unwrap();
        fs::create_dir_all(root.join("www")).unwrap();
        fs::create_dir_all(root.join("tmp")).unwrap();
        fs::copy(
            static_busybox().expect("static busybox"),
            root.join("bin/busybox"),
        )
        .unwrap();
        for applet in ["httpd", "sh", "sleep", "touch", "test"] {
            symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
        fs::write(root.join("www/index.html"), format!("{INDEX}\n")).unwrap();
        let tar = build.path().join("rootfs.tar");
        let status = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .expect("run tar");
        assert!(status.success(), "tar of the test image rootfs failed");
        podman_ok(&["import", tar.to_str().unwrap(), IMAGE]);
    });
}

// === The API service ===

/// `podman system service` on a socket in the sandbox; killed (by pid) when dropped.
pub struct Service {
    child: Child,
    socket: PathBuf,
}

impl Service {
    /// Starts the service and waits until its socket accepts connections.
    pub fn start(sandbox: &Sandbox) -> Service {
        Service::start_at(sandbox, &sandbox.path("podman.sock"))
    }

    /// Starts the service on `socket` (removing a stale socket file first).
    pub fn start_at(sandbox: &Sandbox, socket: &Path) -> Service {
        let socket = socket.to_owned();
        let _ = fs::remove_file(&socket);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(sandbox.path("podman-service.log"))
            .expect("service log");
        let child = podman_cmd(&[
            "system",
            "service",
            "--time=0",
            &format!("unix://{}", socket.display()),
        ])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawn podman system service");
        let service = Service { child, socket };
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::os::unix::net::UnixStream::connect(&service.socket).is_err() {
            assert!(
                Instant::now() < deadline,
                "podman system service did not listen on {} within 15s:\n{}",
                service.socket.display(),
                sandbox.read("podman-service.log")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        service
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Service {
    /// Stops the service (SIGTERM, then SIGKILL after 5s) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let pid = self.child.id() as i32;
        // SAFETY: signals the service this struct started, by its pid, which is not reaped yet.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop();
    }
}

// === Containers ===

/// Names of this test's containers, removed (`podman rm -f`) when dropped.
pub struct Containers {
    prefix: String,
    names: Vec<String>,
}

impl Containers {
    /// A set of containers whose names start with the test's name and this process's pid.
    pub fn new(test: &str) -> Containers {
        Containers {
            prefix: format!("rouse-{}-{}", test.replace('_', "-"), std::process::id()),
            names: Vec::new(),
        }
    }

    /// A unique name for one of this test's containers (not created yet; removed on Drop).
    pub fn name(&mut self, role: &str) -> String {
        let name = format!("{}-{role}", self.prefix);
        self.names.push(name.clone());
        name
    }

    /// Creates (does not start) a busybox httpd serving [`INDEX`] on `127.0.0.1:port`. It is
    /// given `--stop-timeout 1`: httpd as PID 1 ignores SIGTERM, and waits out the timeout.
    pub fn create_httpd(&mut self, role: &str, port: u16) -> String {
        let name = self.name(role);
        podman_ok(&[
            "create",
            "--name",
            &name,
            "--stop-timeout",
            "1",
            "-p",
            &format!("127.0.0.1:{port}:8080"),
            IMAGE,
            "/bin/httpd",
            "-f",
            "-p",
            "8080",
            "-h",
            "/www",
        ]);
        name
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = podman(&["rm", "-f", "-t", "0", name]);
        }
    }
}

/// Whether the container exists and runs.
pub fn running(name: &str) -> bool {
    let out = podman(&["inspect", "--format", "{{.State.Running}}", name]);
    out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "true"
}

/// Whether a container of that name exists.
pub fn exists(name: &str) -> bool {
    podman(&["container", "exists", name]).status.success()
}

/// Waits until `cond()` holds, checking every 100ms (it usually runs podman); returns whether
/// it did.
pub async fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One `[[route]]` named `route` for host `ROUTE.test`, with a container backend of `kind`
/// (`podman` or `docker`) on `socket`; `extra_route` and `extra_backend` are appended to the
/// route's table and to its backend's. `start_timeout` is 20s unless `extra_route` sets it.
pub fn container_route(
    kind: &str,
    route: &str,
    port: u16,
    socket: &Path,
    container: &str,
    extra_route: &str,
    extra_backend: &str,
) -> String {
    let start_timeout = if extra_route.contains("start_timeout") {
        ""
    } else {
        "start_timeout = \"20s\"\n"
    };
    format!(
        "[[route]]\nname = \"{route}\"\nhosts = [\"{route}.test\"]\nupstream = \"127.0.0.1:{port}\"\n\
         {start_timeout}{extra_route}\n\
         [route.backend]\nkind = \"{kind}\"\ncontainer = \"{container}\"\nsocket = \"unix://{}\"\n{extra_backend}\n\n",
        socket.display()
    )
}
