//! The validated configuration: what every other module reads.
//!
//! The TOML file is parsed into the raw serde structs of [`raw`], then checked once, field by
//! field, into [`Config`]. Runtime code never sees an unchecked value. Every rejection carries the
//! file, line and column of the offending value and says what to write instead.
//!
//! This module must not touch sockets or processes: it only reads and checks text.

mod raw;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::route::HostPattern;

/// A config error, located in its file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}:{col}: {message}", path.display())]
pub struct ConfigError {
    /// The config file.
    pub path: PathBuf,
    /// 1-based line of the offending value.
    pub line: usize,
    /// 1-based column of the offending value.
    pub col: usize,
    /// What is wrong, and what to write instead.
    pub message: String,
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it was read from.
    pub path: PathBuf,
    /// Process-wide settings.
    pub proxy: ProxyConfig,
    /// The sockets rouse accepts on.
    pub listeners: Vec<ListenerConfig>,
    /// The sites rouse fronts.
    pub routes: Vec<RouteConfig>,
    /// `[admin] bind`: where `/metrics`, `/status` and `/health` are served (never on a
    /// listener).
    pub admin: Option<SocketAddr>,
}

/// `[proxy]`: settings of the process as a whole.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    /// Exit once every route has been stopped, and no client connection open, this long.
    pub idle_exit: Option<Duration>,
    /// On shutdown, how long in-flight requests may take to finish.
    pub drain_timeout: Duration,
    /// A request head must be complete this long after its first bytes arrive.
    pub header_timeout: Duration,
    /// An idle client connection (no request in flight) is closed after this.
    pub keepalive_timeout: Duration,
    /// Longest a client may keep a request body waiting for its next bytes, or leave a
    /// response unread (its connection's writes blocked).
    pub body_timeout: Duration,
    /// Largest request head accepted, in bytes.
    pub max_header_bytes: usize,
    /// Longest request target (URI) accepted, in bytes.
    pub max_uri_bytes: usize,
    /// Client connections open at once, all listeners together; beyond it rouse stops
    /// accepting until one closes.
    pub max_connections: usize,
    /// Threads serving connections (default: one per core).
    pub workers: usize,
    /// A TLS client must finish its handshake (or a passthrough client send its ClientHello)
    /// within this.
    pub handshake_timeout: Duration,
    /// What becomes of running backends when rouse exits on a signal.
    pub on_exit: OnExit,
}

/// `[proxy] on_exit`: what rouse does with the backends it runs when it exits on a signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnExit {
    /// Stop them (the default).
    Stop,
    /// Leave containers and systemd units running for the next rouse to take over (`exec`
    /// commands are stopped all the same: they cannot outlive rouse).
    Leave,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            idle_exit: None,
            drain_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(60),
            max_header_bytes: 64 * 1024,
            max_uri_bytes: 8 * 1024,
            max_connections: 10_000,
            workers: std::thread::available_parallelism().map_or(1, usize::from),
            handshake_timeout: Duration::from_secs(10),
            on_exit: OnExit::Stop,
        }
    }
}

/// `[[listener]]`: one socket, inherited by name or bound.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    /// Matches the `FileDescriptorName=` of an inherited socket.
    pub name: String,
    /// Where to bind when the socket is not inherited.
    pub bind: SocketAddr,
    /// What is spoken on it.
    pub protocol: Protocol,
    /// For `https`: the certificate for clients whose SNI names no route with its own
    /// (and for clients that send no SNI). Without it, such handshakes are refused.
    pub tls: Option<TlsFiles>,
    /// For `tcp`: the route every connection goes to (an index into `Config::routes`).
    pub route: Option<usize>,
}

/// A certificate chain and its private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key: PathBuf,
}

/// How rouse speaks to a route's upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 (the default).
    #[default]
    Http1,
    /// HTTP/2 over cleartext, with prior knowledge.
    H2c,
    /// HTTP/2 over TLS (ALPN `h2`), the upstream's certificate verified.
    H2,
}

/// The PROXY protocol header rouse sends to a TCP upstream, so it sees the client's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyProtocol {
    /// Version 1: one text line.
    V1,
    /// Version 2: binary.
    V2,
}

/// The protocol of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Cleartext HTTP/1.1, and HTTP/2 with prior knowledge.
    Http,
    /// TLS terminated by rouse (certificate picked by SNI), then HTTP/1.1 or HTTP/2 by ALPN.
    Https,
    /// Raw TCP to one route's upstream.
    Tcp,
    /// TLS passed through untouched to the route its ClientHello's SNI names.
    TlsPassthrough,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Http => "http",
            Protocol::Https => "https",
            Protocol::Tcp => "tcp",
            Protocol::TlsPassthrough => "tls-passthrough",
        })
    }
}

/// `[[route]]`: one site.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    /// Unique name, used in logs and error bodies.
    pub name: String,
    /// Host names (exact or `*.suffix`) that select this route.
    pub hosts: Vec<HostPattern>,
    /// Where requests are forwarded.
    pub upstream: SocketAddr,
    /// The backend is stopped after this long without requests or connections.
    pub idle_timeout: Duration,
    /// A backend not ready this long after its start is given up on (504).
    pub start_timeout: Duration,
    /// How readiness is probed.
    pub ready: ReadyCheck,
    /// Most requests held while the backend starts.
    pub max_pending: usize,
    /// What runs behind the upstream.
    pub backend: BackendConfig,
    /// The certificate served for this route's hosts on `https` listeners.
    pub tls: Option<TlsFiles>,
    /// HTTP/1.1, h2c or h2 (TLS) to the upstream.
    pub upstream_protocol: UpstreamProtocol,
    /// For `h2`: the CA certificate(s) the upstream's certificate must chain to (default: the
    /// system's trust store).
    pub upstream_ca: Option<PathBuf>,
    /// PROXY protocol header sent on TCP and TLS-passthrough connections to the upstream.
    pub proxy_protocol: Option<ProxyProtocol>,
    /// Requests that never wake the backend nor keep it awake (health checks, monitors).
    pub passive: Passive,
    /// Browsers (GET, `Accept: text/html`) kept waiting this long for a start get a small
    /// "starting" page that reloads itself instead.
    pub starting_page: Option<Duration>,
}

impl RouteConfig {
    /// Whether `other` runs the same backend the same way: everything but what only the
    /// proxy side reads (hosts, certificate, passive requests, starting page, PROXY protocol).
    /// A reload keeps such a route's backend, running or not; any other change replaces it.
    pub fn same_backend(&self, other: &RouteConfig) -> bool {
        self.name == other.name
            && self.upstream == other.upstream
            && self.idle_timeout == other.idle_timeout
            && self.start_timeout == other.start_timeout
            && self.ready == other.ready
            && self.max_pending == other.max_pending
            && self.backend == other.backend
            && self.upstream_protocol == other.upstream_protocol
            && self.upstream_ca == other.upstream_ca
    }
}

/// `passive_paths` and `passive_user_agents` of a route: requests answered `503` while the
/// backend is not running, without starting it, and forwarded without counting as activity
/// while it runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Passive {
    /// Exact paths (without the query), or prefixes when they end in `*`.
    pub paths: Vec<String>,
    /// Lowercase substrings of the `User-Agent` header.
    pub user_agents: Vec<String>,
}

impl Passive {
    /// Whether a request with this path and user agent is passive.
    pub fn matches(&self, path: &str, user_agent: Option<&[u8]>) -> bool {
        let path_matches = self.paths.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => path.starts_with(prefix),
            None => path == p,
        });
        path_matches
            || user_agent.is_some_and(|ua| {
                let ua = ua.to_ascii_lowercase();
                self.user_agents
                    .iter()
                    .any(|needle| ua.windows(needle.len()).any(|w| w == needle.as_bytes()))
            })
    }

    /// Whether nothing is passive.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty() && self.user_agents.is_empty()
    }
}

/// How rouse decides that a started backend is ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadyCheck {
    /// A TCP connect to the upstream succeeds.
    Tcp,
    /// `GET path` on the upstream answers 2xx or 3xx.
    Http {
        /// Request path, starting with `/`.
        path: String,
    },
}

impl fmt::Display for ReadyCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadyCheck::Tcp => f.write_str("tcp"),
            ReadyCheck::Http { path } => write!(f, "http:{path}"),
        }
    }
}

/// `[route.backend]`: what runs behind a route.
#[derive(Debug, Clone, PartialEq)]
pub enum BackendConfig {
    /// Always on: never started or stopped by rouse.
    None,
    /// A command rouse runs and stops.
    Exec(ExecConfig),
    /// systemd units, started and stopped over D-Bus.
    Systemd(SystemdConfig),
    /// podman or Docker containers, started and stopped through the engine's API.
    Container(ContainerConfig),
}

/// `kind = "systemd"`: units rouse starts and stops through systemd's D-Bus API.
#[derive(Debug, Clone, PartialEq)]
pub struct SystemdConfig {
    /// The route's unit first, then the units of `also`, each with its type suffix.
    pub units: Vec<String>,
    /// Which bus systemd is reached on.
    pub bus: BusAddress,
}

/// Where a D-Bus bus is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BusAddress {
    /// The system bus (the system's systemd).
    System,
    /// The calling user's session bus (the user's systemd).
    User,
    /// An explicit D-Bus address, like `unix:path=/run/dbus/system_bus_socket`.
    Address(String),
}

impl BusAddress {
    /// Parses `system`, `user` or a D-Bus address (`unix:path=…`, `unix:abstract=…`, `tcp:…`).
    pub fn parse(text: &str) -> Option<BusAddress> {
        match text.trim() {
            "system" => Some(BusAddress::System),
            "user" | "session" => Some(BusAddress::User),
            t if t.contains(':') && t.contains('=') => Some(BusAddress::Address(t.to_owned())),
            _ => None,
        }
    }
}

impl fmt::Display for BusAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BusAddress::System => f.write_str("system"),
            BusAddress::User => f.write_str("user"),
            BusAddress::Address(a) => f.write_str(a),
        }
    }
}

/// Which container engine API a container backend speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Engine {
    /// podman's libpod REST API.
    Podman,
    /// The Docker Engine API (also served by podman's compatibility layer).
    Docker,
}

impl Engine {
    /// The engine's usual API socket: root's, or the user's under `$XDG_RUNTIME_DIR`.
    pub fn default_socket(self) -> PathBuf {
        match self {
            Engine::Docker => PathBuf::from("/var/run/docker.sock"),
            Engine::Podman => {
                // SAFETY: geteuid has no preconditions.
                let root = unsafe { libc::geteuid() } == 0;
                match std::env::var_os("XDG_RUNTIME_DIR") {
                    Some(dir) if !root => PathBuf::from(dir).join("podman/podman.sock"),
                    _ => PathBuf::from("/run/podman/podman.sock"),
                }
            }
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Engine::Podman => "podman",
            Engine::Docker => "docker",
        })
    }
}

/// `kind = "podman"` / `"docker"`: containers rouse starts and stops through the engine's API.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerConfig {
    /// Which API.
    pub engine: Engine,
    /// The route's container first, then those of `also`.
    pub containers: Vec<String>,
    /// The engine's API socket.
    pub socket: PathBuf,
    /// How to create the route's container when it does not exist (when `image` is given).
    pub create: Option<CreateSpec>,
}

/// What `podman create` / `docker create` would be given for a missing container.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CreateSpec {
    /// Image reference.
    pub image: String,
    /// Command and arguments (empty: the image's default).
    pub command: Vec<String>,
    /// Environment variables.
    pub env: BTreeMap<String, String>,
    /// Published ports, `[IP:]HOST:CONTAINER[/PROTO]` as `podman create -p` takes them.
    pub ports: Vec<String>,
    /// Volumes, `HOST:CONTAINER[:OPTIONS]` as `podman create -v` takes them.
    pub volumes: Vec<String>,
}

/// A backend that is a plain command.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecConfig {
    /// Program and arguments; `$ROUSE` as the program is already resolved to rouse itself.
    pub command: Vec<String>,
    /// Variables added to rouse's environment.
    pub env: BTreeMap<String, String>,
    /// Working directory (default: the config file's directory).
    pub working_dir: PathBuf,
    /// Signal sent to the process group to stop it.
    pub stop_signal: Signal,
    /// SIGKILL follows this long after `stop_signal`.
    pub stop_timeout: Duration,
}

/// A signal, by number, with the name it was written as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signal {
    /// The signal number.
    pub number: i32,
    /// Its canonical name (`SIGTERM`).
    pub name: &'static str,
}

impl Signal {
    /// Parses `SIGTERM`, `TERM` or `sigterm`.
    pub fn parse(text: &str) -> Option<Signal> {
        const SIGNALS: &[(&str, i32)] = &[
            ("SIGTERM", libc::SIGTERM),
            ("SIGINT", libc::SIGINT),
            ("SIGQUIT", libc::SIGQUIT),
            ("SIGHUP", libc::SIGHUP),
            ("SIGKILL", libc::SIGKILL),
            ("SIGUSR1", libc::SIGUSR1),
            ("SIGUSR2", libc::SIGUSR2),
            ("SIGWINCH", libc::SIGWINCH),
        ];
        let upper = text.trim().to_ascii_uppercase();
        let full = if upper.starts_with("SIG") {
            upper
        } else {
            format!("SIG{upper}")
        };
        SIGNALS
            .iter()
            .find(|(name, _)| *name == full)
            .map(|&(name, number)| Signal { number, name })
    }
}

impl Config {
    /// Reads and validates the config file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_owned(),
            line: 1,
            col: 1,
            message: format!("cannot read the config file: {e}"),
        })?;
        Config::parse(path, &text)
    }

    /// Validates config `text`, naming `path` in errors and resolving relative paths against it.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        raw::parse(path, text)
    }
}

impl Config {
    /// What differs from `next` in the parts a reload cannot change: `[proxy]`, `[admin]`,
    /// and each listener's name, address and protocol (its sockets are open, perhaps inherited
    /// from systemd). `None` when a reload can apply `next`.
    pub fn needs_restart_for(&self, next: &Config) -> Option<String> {
        if self.proxy != next.proxy {
            return Some("[proxy] changed".into());
        }
        if self.admin != next.admin {
            return Some("[admin] changed".into());
        }
        let sockets = |c: &Config| -> Vec<(String, SocketAddr, Protocol)> {
            c.listeners
                .iter()
                .map(|l| (l.name.clone(), l.bind, l.protocol))
                .collect()
        };
        if sockets(self) != sockets(next) {
            return Some("the listeners changed (name, bind or protocol)".into());
        }
        None
    }
}

/// Turns a byte offset of `text` into a 1-based line and column (columns count characters).
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}
