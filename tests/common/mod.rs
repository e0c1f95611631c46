//! Test harness shared by the integration tests: runs the real `rouse` binary on a socket it
//! inherits the way systemd passes one, real backend processes, and a small HTTP/1.1 client.
//!
//! Every test gets its own [`Sandbox`] (a temporary directory for the config, the log, pid files
//! and start counters) and its own ports, so tests can run in parallel.
//! [`Rouse`] stops the proxy when dropped, and prints its log if the test is failing.

#![allow(dead_code)]

pub mod h2;
pub mod sandbox;
pub mod scripted;
pub mod tls;
use std::fs;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The rouse binary built by cargo for this test run.
pub const ROUSE: &str = env!("CARGO_BIN_EXE_rouse");

/// How long any single client operation may take before the test fails instead of hanging.
pub const IO_DEADLINE: Duration = Duration::from_secs(20);

// === Sandbox ===

/// A private temporary directory for one test.
pub struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        Sandbox {
            dir: tempfile::Builder::new()
                .prefix("rouse-test-")
                .tempdir()
                .expect("tempdir"),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Absolute path of `name` inside the sandbox.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Absolute path of `name` as a string, for pasting into configs and shell scripts.
    pub fn p(&self, name: &str) -> String {
        self.path(name).to_str().expect("utf-8 tempdir").to_string()
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        fs::write(&path, text).expect("write sandbox file");
        path
    }

    /// Contents of `name`, or "" if it does not exist yet.
    pub fn read(&self, name: &str) -> String {
        fs::read_to_string(self.path(name)).unwrap_or_default()
    }

    /// Number of non-empty lines in `name` (0 if it does not exist): backend wrappers append one
    /// line per start, so this counts starts.
    pub fn lines(&self, name: &str) -> usize {
        self.read(name)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count()
    }

    /// The pid on the last line of `name` (wrappers append `$$` on every start).
    pub fn last_pid(&self, name: &str) -> Option<i32> {
        self.read(name)
            .lines()
            .rev()
            .find_map(|l| l.trim().parse().ok())
    }

    pub fn touch(&self, name: &str) {
        fs::write(self.path(name), b"").expect("touch");
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Safety net for failing tests: kill any backend still running whose pid a wrapper wrote
        // into a `*.pids` file (and whose environment names this sandbox, so a reused pid is
        // never hit), so that a failure does not leave processes behind.
        let Ok(entries) = fs::read_dir(self.dir.path()) else {
            return;
        };
        for entry in entries.flatten() {
            if entry.path().extension().is_some_and(|e| e == "pids") {
                let text = fs::read_to_string(entry.path()).unwrap_or_default();
                for pid in text.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    if alive(pid) && environ(pid).contains(self.dir.path().to_str().unwrap_or("\0"))
                    {
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
            }
        }
    }
}

// === Config text helpers ===

/// A TOML basic string.
pub fn q(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A TOML array of strings.
pub fn arr<S: AsRef<str>>(items: &[S]) -> String {
    let parts: Vec<String> = items.iter().map(|s| q(s.as_ref())).collect();
    format!("[{}]", parts.join(", "))
}

/// A shell single-quoted word.
pub fn sq(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `["$ROUSE", "static", "--listen", "127.0.0.1:PORT", "--body", BODY]`.
pub fn static_cmd(port: u16, body: &str) -> Vec<String> {
    vec![
        "$ROUSE".into(),
        "static".into(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--body".into(),
        body.into(),
    ]
}

/// The shell command that replaces the wrapper with `rouse static` (for the tail of a script).
pub fn exec_static(port: u16, body: &str) -> String {
    format!(
        "exec {} static --listen 127.0.0.1:{port} --body {}",
        sq(ROUSE),
        sq(body)
    )
}

/// `["/bin/sh", "-c", SCRIPT, NAME]`.
pub fn sh_cmd(sandbox: &Sandbox, script: &str) -> Vec<String> {
    vec![
        "/bin/sh".into(),
        "-c".into(),
        script.into(),
        sandbox.p("backend"),
    ]
}

/// A wrapper that records each start (its pid, one line, in `pids_file`) and then becomes
/// `rouse static` answering `body`. The pid stays the same across `exec`.
pub fn counted_static(sandbox: &Sandbox, pids_file: &str, port: u16, body: &str) -> Vec<String> {
    let script = format!(
        "echo $$ >> {}; {}",
        sq(&sandbox.p(pids_file)),
        exec_static(port, body)
    );
    sh_cmd(sandbox, &script)
}

/// One `[[route]]` with an exec backend.
pub fn exec_route(
    name: &str,
    hosts: &[&str],
    port: u16,
    command: &[String],
    extra: &str,
) -> String {
    format!(
        "[[route]]\nname = {}\nhosts = {}\nupstream = \"127.0.0.1:{port}\"\n{extra}\n[route.backend]\nkind = \"exec\"\ncommand = {}\n\n",
        q(name),
        arr(hosts),
        arr(command),
    )
}

/// One `[[route]]` whose upstream is always on (kind "none").
pub fn none_route(name: &str, hosts: &[&str], upstream: SocketAddr) -> String {
    format!(
        "[[route]]\nname = {}\nhosts = {}\nupstream = \"{upstream}\"\n\n[route.backend]\nkind = \"none\"\n\n",
        q(name),
        arr(hosts),
    )
}

/// The `[[listener]]` table the harness's inherited socket is matched to.
pub const LISTENER: &str =
    "[[listener]]\nname = \"http\"\nbind = \"127.0.0.1:1\"\nprotocol = \"http\"\n\n";

// === Ports and processes ===

/// A loopback port that was free a moment ago and that no other test of this process was given.
///
/// Drawn below the kernel's ephemeral range: a port from `bind(:0)` can be handed out again at
/// once (two tests running side by side got the same one), and an ephemeral port may be taken
/// as the local end of some client connection before the backend binds it.
pub fn free_port() -> u16 {
    use std::collections::HashSet;
    use std::hash::{BuildHasher, RandomState};
    use std::sync::Mutex;
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let ephemeral_low = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .filter(|&low| low > 12_000)
        .unwrap_or(32_768);
    let random = RandomState::new();
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    for attempt in 0u32.. {
        let draw = random.hash_one((std::process::id(), attempt));
        let port = 10_000 + (draw % u64::from(ephemeral_low - 10_000)) as u16;
        if !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
    unreachable!("no free port below {ephemeral_low}")
}

/// Whether `pid` is a running (not zombie) process.
pub fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => {
            // "pid (comm) S ...": the state follows the last ')'.
            let state = stat
                .rsplit_once(')')
                .map(|(_, rest)| rest.trim_start())
                .unwrap_or("");
            !(state.starts_with('Z') || state.starts_with('X'))
        }
    }
}

/// The command line of `pid` (for messages).
pub fn cmdline(pid: i32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// The environment of `pid` as one string (NULs replaced by spaces).
pub fn environ(pid: i32) -> String {
    fs::read(format!("/proc/{pid}/environ"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// Remove ANSI colour escapes, so log lines can be matched as plain text.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

// === Rouse ===

/// A running `rouse serve`, on a socket it inherited. Stopped (SIGTERM, then SIGKILL) on Drop.
pub struct Rouse {
    child: Option<Child>,
    pid: i32,
    addr: SocketAddr,
    log_path: PathBuf,
    exit: Option<ExitStatus>,
}

impl Rouse {
    /// Write `LISTENER` + `body` as the sandbox's `rouse.toml` and serve it on an inherited socket.
    pub fn serve(sandbox: &Sandbox, body: &str) -> Rouse {
        let config = sandbox.write("rouse.toml", &format!("{LISTENER}{body}"));
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind listener");
        let addr = listener.local_addr().unwrap();
        // std listens with a backlog of 128; systemd uses SOMAXCONN. Match systemd, so that a
        // burst of connections is not slowed by SYN retries before rouse even sees it.
        unsafe { libc::listen(listener.as_raw_fd(), 4096) };
        let child = spawn_inherited(
            &config,
            &sandbox.path("rouse.log"),
            &[listener.as_raw_fd()],
            Some("http"),
        );
        // Our copy of the socket is closed here: if rouse dies, clients get refused, not hung.
        drop(listener);
        Rouse::from_child(child, addr, sandbox.path("rouse.log"))
    }

    pub fn from_child(child: Child, addr: SocketAddr, log_path: PathBuf) -> Rouse {
        let pid = child.id() as i32;
        Rouse {
            child: Some(child),
            pid,
            addr,
            log_path,
            exit: None,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Everything rouse wrote to stderr so far, colour escapes removed.
    pub fn log(&self) -> String {
        strip_ansi(&fs::read_to_string(&self.log_path).unwrap_or_default())
    }

    /// Number of log lines containing every one of `parts`.
    pub fn log_count(&self, parts: &[&str]) -> usize {
        self.log()
            .lines()
            .filter(|l| parts.iter().all(|p| l.contains(p)))
            .count()
    }

    /// Wait until a log line contains every one of `parts`.
    pub async fn wait_log(&self, parts: &[&str], timeout: Duration) -> bool {
        wait_until(timeout, || self.log_count(parts) > 0).await
    }

    pub fn signal(&self, sig: i32) {
        if self.exit.is_none() {
            unsafe { libc::kill(self.pid, sig) };
        }
    }

    /// Wait for rouse to exit by itself, up to `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none()
            && let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            self.exit = Some(status);
        }
        self.exit
    }

    fn blocking_wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.try_exit() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.try_exit()
    }
}

impl Drop for Rouse {
    fn drop(&mut self) {
        if self.try_exit().is_none() {
            // SIGTERM first, so that rouse stops the backends it started.
            unsafe { libc::kill(self.pid, libc::SIGTERM) };
            if self.blocking_wait(Duration::from_secs(5)).is_none() {
                eprintln!(
                    "rouse (pid {}) still running 5s after SIGTERM: killing it (a client connection on \
                     this test's runtime, which this Drop blocks, can cause that)",
                    self.pid
                );
                unsafe { libc::kill(self.pid, libc::SIGKILL) };
                self.blocking_wait(Duration::from_secs(5));
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "----- rouse log ({}) exit={:?} -----\n{}----- end of rouse log -----",
                self.log_path.display(),
                self.exit,
                self.log()
            );
        }
    }
}

/// Start `rouse serve -c CONFIG` with `fds` passed as fds 3.., the way systemd does
/// (LISTEN_FDS, LISTEN_FDNAMES if `names` is given, LISTEN_PID set by `sh` to its own pid,
/// which `exec` keeps). stderr and stdout go to `log`.
pub fn spawn_inherited(config: &Path, log: &Path, fds: &[RawFd], names: Option<&str>) -> Child {
    spawn_inherited_env(config, log, fds, names, &[])
}

/// [`spawn_inherited`] with extra environment variables for rouse.
pub fn spawn_inherited_env(
    config: &Path,
    log: &Path,
    fds: &[RawFd],
    names: Option<&str>,
    env: &[(&str, &str)],
) -> Child {
    assert!(fds.len() <= 8);
    let log_file = fs::File::create(log).expect("create log");
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(r#"LISTEN_PID=$$ exec "$0" "$@""#)
        .arg(ROUSE)
        .arg("serve")
        .arg("-c")
        .arg(config)
        .env_remove("RUST_LOG")
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDNAMES")
        // Backends inherit rouse's environment: this marks them as this test's (see Sandbox).
        .env("ROUSE_TEST_SANDBOX", config.parent().unwrap())
        .env("LISTEN_FDS", fds.len().to_string())
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file);
    if let Some(names) = names {
        cmd.env("LISTEN_FDNAMES", names);
    }
    cmd.envs(env.iter().copied());
    let mut src = [-1 as RawFd; 8];
    src[..fds.len()].copy_from_slice(fds);
    let n = fds.len();
    unsafe {
        cmd.pre_exec(move || {
            // Move every source out of the way first, so that placing one at 3+i can never
            // clobber another still to be placed; dup2 also clears close-on-exec.
            let mut high = [-1 as RawFd; 8];
            for (h, &fd) in high.iter_mut().zip(&src[..n]) {
                *h = libc::fcntl(fd, libc::F_DUPFD, 100);
                if *h < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            for (target, &h) in (3..).zip(&high[..n]) {
                if libc::dup2(h, target) < 0 {
                    return Err(io::Error::last_os_error());
                }
                libc::close(h);
            }
            Ok(())
        });
    }
    cmd.spawn().expect("spawn rouse")
}

/// Whether the program `tool` runs (`tool probe_arg` starts). Without it, the test says so
/// with a `SKIP:` line and should return, except under `CI=true`, where this panics: there
/// nothing may be skipped. `package` is the Debian package to install.
pub fn have_tool(test: &str, tool: &str, probe_arg: &str, package: &str) -> bool {
    if Command::new(tool).arg(probe_arg).output().is_ok() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: {tool} is missing under CI=true: apt-get install {package}"
    );
    eprintln!("SKIP: {test}: {tool} not installed (apt-get install {package})");
    false
}

/// Run `rouse ARGS...` to completion: (exit status, stdout, stderr).
pub fn run_rouse(args: &[&str]) -> (ExitStatus, String, String) {
    let out = Command::new(ROUSE)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run rouse");
    (
        out.status,
        strip_ansi(&String::from_utf8_lossy(&out.stdout)),
        strip_ansi(&String::from_utf8_lossy(&out.stderr)),
    )
}

pub fn describe_exit(status: &ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => format!("{status:?}"),
    }
}

// === Waiting ===

/// Poll `cond` every 10ms until it holds or `timeout` passes; returns whether it held.
pub async fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Wait until the file has a pid on its last line, and return it.
pub async fn wait_pid(sandbox: &Sandbox, file: &str, timeout: Duration) -> i32 {
    assert!(
        wait_until(timeout, || sandbox.last_pid(file).is_some()).await,
        "no pid was written to {file} within {timeout:?}"
    );
    sandbox.last_pid(file).unwrap()
}

// === HTTP/1.1 client ===

/// A response as a client sees it.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// `GET /` with `Host: host` on a fresh connection (`Connection: close`).
pub async fn get(addr: SocketAddr, host: &str) -> Response {
    send(
        addr,
        &format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    )
    .await
}

/// Send `raw` on a fresh connection and read one response; panics (with the error) on I/O
/// failure or after [`IO_DEADLINE`].
pub async fn send(addr: SocketAddr, raw: &str) -> Response {
    match try_send(addr, raw).await {
        Ok(resp) => resp,
        Err(e) => panic!("request to rouse at {addr} failed: {e}\nrequest was:\n{raw}"),
    }
}

pub async fn try_send(addr: SocketAddr, raw: &str) -> io::Result<Response> {
    let mut conn = Conn::connect(addr).await?;
    conn.send(raw).await?;
    conn.read_response().await
}

/// One client connection, for keep-alive and upgrade tests.
pub struct Conn {
    stream: BufReader<TcpStream>,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> io::Result<Conn> {
        let stream = deadline(TcpStream::connect(addr)).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream: BufReader::new(stream),
        })
    }

    pub async fn send(&mut self, raw: &str) -> io::Result<()> {
        self.send_bytes(raw.as_bytes()).await
    }

    pub async fn send_bytes(&mut self, raw: &[u8]) -> io::Result<()> {
        deadline(async {
            self.stream.get_mut().write_all(raw).await?;
            self.stream.get_mut().flush().await
        })
        .await
    }

    /// Read exactly `n` bytes (after an upgrade).
    pub async fn read_exact(&mut self, n: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0; n];
        deadline(self.stream.read_exact(&mut buf)).await?;
        Ok(buf)
    }

    /// Read until the server closes the connection (EOF or reset): how many bytes came.
    pub async fn read_until_closed(&mut self) -> io::Result<usize> {
        deadline(async {
            let mut total = 0;
            let mut buf = vec![0; 64 * 1024];
            loop {
                match self.stream.read(&mut buf).await {
                    Ok(0) => return Ok(total),
                    Ok(n) => total += n,
                    Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(total),
                    Err(e) => return Err(e),
                }
            }
        })
        .await
    }

    /// Read one response: head, then a body framed by Content-Length, chunked encoding, or EOF.
    pub async fn read_response(&mut self) -> io::Result<Response> {
        deadline(self.read_response_inner()).await
    }

    /// Read the answer to a HEAD request: the head only, whatever its Content-Length says.
    pub async fn read_head_response(&mut self) -> io::Result<Response> {
        deadline(self.read_response_head(true)).await
    }

    async fn read_response_inner(&mut self) -> io::Result<Response> {
        self.read_response_head(false).await
    }

    async fn read_response_head(&mut self, head_only: bool) -> io::Result<Response> {
        let status_line = self.line().await?;
        if status_line.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before a response",
            ));
        }
        let mut parts = status_line.splitn(3, ' ');
        let _version = parts.next();
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
        let mut headers = Vec::new();
        loop {
            let line = self.line().await?;
            if line.is_empty() {
                break;
            }
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| bad(format!("bad header {line:?}")))?;
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
        let mut resp = Response {
            status,
            headers,
            body: String::new(),
        };
        if head_only || status < 200 || status == 204 || status == 304 {
            return Ok(resp);
        }
        let mut body = Vec::new();
        if resp
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
        {
            loop {
                let size_line = self.line().await?;
                let size =
                    usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                        .map_err(|_| bad(format!("bad chunk size {size_line:?}")))?;
                if size == 0 {
                    // Trailers, up to an empty line.
                    while !self.line().await?.is_empty() {}
                    break;
                }
                let mut chunk = vec![0; size];
                self.stream.read_exact(&mut chunk).await?;
                body.extend_from_slice(&chunk);
                self.line().await?;
            }
        } else if let Some(len) = resp.header("content-length") {
            let len: usize = len
                .parse()
                .map_err(|_| bad(format!("bad content-length {len:?}")))?;
            body.resize(len, 0);
            self.stream.read_exact(&mut body).await?;
        } else {
            self.stream.read_to_end(&mut body).await?;
        }
        resp.body = String::from_utf8_lossy(&body).into_owned();
        Ok(resp)
    }

    /// One line without its CRLF; "" at EOF.
    async fn line(&mut self) -> io::Result<String> {
        let mut line = String::new();
        self.stream.read_line(&mut line).await?;
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    }
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

async fn deadline<T>(fut: impl std::future::Future<Output = io::Result<T>>) -> io::Result<T> {
    match tokio::time::timeout(IO_DEADLINE, fut).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no answer within {IO_DEADLINE:?}"),
        )),
    }
}

// === Backends written in the test ===

/// An always-on HTTP/1.1 backend running inside the test: answers every request 200 with the
/// request head it received (and a Content-Length body, if any) as the body, and records them.
pub struct EchoBackend {
    pub addr: SocketAddr,
    pub heads: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    pub connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl EchoBackend {
    pub async fn start() -> EchoBackend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (h, c) = (heads.clone(), connections.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let h = h.clone();
                tokio::spawn(async move {
                    let mut stream = BufReader::new(stream);
                    loop {
                        let Ok(head) = read_head(&mut stream).await else {
                            return;
                        };
                        if head.is_empty() {
                            return;
                        }
                        let len: usize = head_header(&head, "content-length")
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0);
                        let mut body = vec![0; len];
                        if stream.read_exact(&mut body).await.is_err() {
                            return;
                        }
                        let echo = head + &String::from_utf8_lossy(&body);
                        h.lock().unwrap().push(echo.clone());
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{echo}",
                            echo.len()
                        );
                        if stream.get_mut().write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        EchoBackend {
            addr,
            heads,
            connections,
            task,
        }
    }

    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

impl Drop for EchoBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Read a request head (up to and including the empty line); "" at EOF.
pub async fn read_head<R: AsyncBufReadExt + Unpin>(r: &mut R) -> io::Result<String> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            return Ok(String::new());
        }
        head.push_str(&line);
        if line == "\r\n" || line == "\n" {
            return Ok(head);
        }
    }
}

/// The value of header `name` in a raw request/response head (case-insensitive), if present.
pub fn head_header(head: &str, name: &str) -> Option<String> {
    head.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}
pub mod podman;
pub mod tcp;
