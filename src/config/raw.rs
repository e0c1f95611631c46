//! The config file as serde sees it, and its one-way conversion into [`Config`].
//!
//! Values that can be wrong on their own (durations, addresses, hosts) are kept as
//! [`Spanned`] strings here, so that the check that rejects them can point at them.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{
    BackendConfig, BusAddress, Config, ConfigError, ContainerConfig, CreateSpec, Engine,
    ExecConfig, ListenerConfig, OnExit, Passive, Protocol, ProxyConfig, ProxyProtocol, ReadyCheck,
    RouteConfig, Signal, SystemdConfig, TlsFiles, UpstreamProtocol, line_col,
};
use crate::route::HostPattern;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    proxy: Option<Spanned<RawProxy>>,
    #[serde(default, rename = "listener")]
    listeners: Vec<Spanned<RawListener>>,
    #[serde(default, rename = "route")]
    routes: Vec<Spanned<RawRoute>>,
    admin: Option<Spanned<RawAdmin>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    bind: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProxy {
    idle_exit: Option<Spanned<String>>,
    drain_timeout: Option<Spanned<String>>,
    header_timeout: Option<Spanned<String>>,
    keepalive_timeout: Option<Spanned<String>>,
    body_timeout: Option<Spanned<String>>,
    max_header_bytes: Option<Spanned<i64>>,
    max_uri_bytes: Option<Spanned<i64>>,
    max_connections: Option<Spanned<i64>>,
    workers: Option<Spanned<i64>>,
    handshake_timeout: Option<Spanned<String>>,
    on_exit: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListener {
    name: Spanned<String>,
    bind: Spanned<String>,
    #[serde(default)]
    protocol: Option<Spanned<String>>,
    tls: Option<Spanned<RawTls>>,
    route: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: Spanned<String>,
    key: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: Spanned<String>,
    #[serde(default)]
    hosts: Option<Spanned<Vec<Spanned<String>>>>,
    upstream: Spanned<String>,
    idle_timeout: Option<Spanned<String>>,
    start_timeout: Option<Spanned<String>>,
    ready: Option<Spanned<String>>,
    max_pending: Option<Spanned<i64>>,
    backend: Option<Spanned<RawBackend>>,
    tls: Option<Spanned<RawTls>>,
    upstream_protocol: Option<Spanned<String>>,
    upstream_ca: Option<Spanned<String>>,
    proxy_protocol: Option<Spanned<String>>,
    passive_paths: Option<Spanned<Vec<Spanned<String>>>>,
    passive_user_agents: Option<Spanned<Vec<Spanned<String>>>>,
    starting_page: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    kind: Spanned<String>,
    command: Option<Spanned<Vec<String>>>,
    env: Option<Spanned<BTreeMap<String, String>>>,
    working_dir: Option<Spanned<String>>,
    stop_signal: Option<Spanned<String>>,
    stop_timeout: Option<Spanned<String>>,
    unit: Option<Spanned<String>>,
    also: Option<Spanned<Vec<String>>>,
    bus: Option<Spanned<String>>,
    container: Option<Spanned<String>>,
    socket: Option<Spanned<String>>,
    image: Option<Spanned<String>>,
    ports: Option<Spanned<Vec<String>>>,
    volumes: Option<Spanned<Vec<String>>>,
}

impl RawBackend {
    /// The keys this table sets, with where they are.
    fn present(&self) -> Vec<(&'static str, Range<usize>)> {
        fn at<T>(
            key: &'static str,
            v: &Option<Spanned<T>>,
        ) -> Option<(&'static str, Range<usize>)> {
            v.as_ref().map(|v| (key, v.span()))
        }
        [
            at("command", &self.command),
            at("env", &self.env),
            at("working_dir", &self.working_dir),
            at("stop_signal", &self.stop_signal),
            at("stop_timeout", &self.stop_timeout),
            at("unit", &self.unit),
            at("also", &self.also),
            at("bus", &self.bus),
            at("container", &self.container),
            at("socket", &self.socket),
            at("image", &self.image),
            at("ports", &self.ports),
            at("volumes", &self.volumes),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

/// Default for `[route] idle_timeout`.
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Default for `[route] start_timeout`.
const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(30);
/// Default for `[route] max_pending`.
const DEFAULT_MAX_PENDING: usize = 1024;
/// Default for `[route.backend] stop_timeout`.
const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Written as a command's program, stands for the running rouse executable.
const SELF_PROGRAM: &str = "$ROUSE";

/// Builds located errors for one file.
struct Checker<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Checker<'_> {
    fn err(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        let (line, col) = line_col(self.text, span.start);
        ConfigError {
            path: self.path.to_owned(),
            line,
            col,
            message: message.into(),
        }
    }

    fn duration(&self, value: &Spanned<String>, key: &str) -> Result<Duration, ConfigError> {
        parse_duration(value.get_ref()).ok_or_else(|| {
            self.err(
                value.span(),
                format!(
                    "{key} = \"{}\" is not a duration: write a number and a unit, like \"250ms\", \"30s\" or \"5m\"",
                    value.get_ref()
                ),
            )
        })
    }

    fn opt_duration(
        &self,
        value: &Option<Spanned<String>>,
        key: &str,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        value
            .as_ref()
            .map_or(Ok(default), |v| self.duration(v, key))
    }

    fn addr(&self, value: &Spanned<String>, key: &str) -> Result<SocketAddr, ConfigError> {
        value.get_ref().trim().parse().map_err(|_| {
            self.err(
                value.span(),
                format!(
                    "{key} = \"{}\" is not an address: write IP:PORT, like \"127.0.0.1:8080\" or \"[::1]:8080\"",
                    value.get_ref()
                ),
            )
        })
    }

    /// An optional count of at least `min`, or `default`.
    fn opt_at_least(
        &self,
        value: &Option<Spanned<i64>>,
        key: &str,
        min: usize,
        default: usize,
    ) -> Result<usize, ConfigError> {
        let Some(v) = value else { return Ok(default) };
        let n = self.positive(v, key)?;
        if n < min {
            return Err(self.err(v.span(), format!("{key} must be at least {min}")));
        }
        Ok(n)
    }

    fn positive(&self, value: &Spanned<i64>, key: &str) -> Result<usize, ConfigError> {
        usize::try_from(*value.get_ref())
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                self.err(
                    value.span(),
                    format!("{key} must be a positive whole number"),
                )
            })
    }
}

/// Durations are written "250ms", "30s", "5m", "1h"; a bare number is refused as ambiguous.
fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text.is_empty() || text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    humantime::parse_duration(text).ok()
}

pub(super) fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let check = Checker { path, text };
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        // toml's message can span several lines with a snippet; the first line is the cause.
        let message = e.message().lines().next().unwrap_or("invalid TOML").trim();
        check.err(span, explain_toml_error(message))
    })?;

    let proxy = match &raw.proxy {
        None => ProxyConfig::default(),
        Some(p) => proxy_config(&check, p.get_ref())?,
    };

    if raw.listeners.is_empty() {
        return Err(check.err(
            0..0,
            "no [[listener]]: add one, e.g. [[listener]] name = \"http\" bind = \"127.0.0.1:8080\"",
        ));
    }
    let base_dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_owned);
    let mut listeners = Vec::with_capacity(raw.listeners.len());
    let mut listener_names: HashMap<String, Range<usize>> = HashMap::new();
    for l in &raw.listeners {
        let l = l.get_ref();
        let name = l.name.get_ref().trim().to_owned();
        if name.is_empty() || name.contains(':') {
            return Err(check.err(
                l.name.span(),
                "listener name must be non-empty and contain no ':' (it is a FileDescriptorName=)",
            ));
        }
        if listener_names.insert(name.clone(), l.name.span()).is_some() {
            return Err(check.err(
                l.name.span(),
                format!("a listener named \"{name}\" is already defined: give each listener its own name"),
            ));
        }
        let protocol = match l.protocol.as_ref().map(|p| p.get_ref().as_str()) {
            None | Some("http") => Protocol::Http,
            Some("https") => Protocol::Https,
            Some("tcp") => Protocol::Tcp,
            Some("tls-passthrough") => Protocol::TlsPassthrough,
            Some(other) => {
                return Err(check.err(
                    l.protocol.as_ref().map_or(0..0, Spanned::span),
                    format!("protocol \"{other}\" is not known: write \"http\", \"https\", \"tcp\" or \"tls-passthrough\""),
                ));
            }
        };
        if let Some(tls) = &l.tls
            && protocol != Protocol::Https
        {
            return Err(check.err(
                tls.span(),
                format!(
                    "tls is only for protocol = \"https\" listeners (this one is \"{protocol}\")"
                ),
            ));
        }
        match (&l.route, protocol) {
            (None, Protocol::Tcp) => {
                return Err(check.err(l.name.span(), format!("listener \"{name}\" has protocol = \"tcp\": name the route it serves, route = \"NAME\"")));
            }
            (Some(r), p) if p != Protocol::Tcp => {
                return Err(check.err(r.span(), format!("route is only for protocol = \"tcp\" listeners (this one is \"{p}\"): its routes are picked by host")));
            }
            _ => {}
        }
        listeners.push(ListenerConfig {
            name,
            bind: check.addr(&l.bind, "bind")?,
            protocol,
            tls: l.tls.as_ref().map(|t| tls_files(t.get_ref(), &base_dir)),
            route: None,
        });
    }

    if raw.routes.is_empty() {
        return Err(check.err(
            0..0,
            "no [[route]]: add at least one, with name, hosts and upstream",
        ));
    }
    let mut routes = Vec::with_capacity(raw.routes.len());
    let mut route_names: HashMap<String, ()> = HashMap::new();
    let mut host_owner: HashMap<HostPattern, String> = HashMap::new();
    for r in &raw.routes {
        let r = r.get_ref();
        let name = r.name.get_ref().trim().to_owned();
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(check.err(
                r.name.span(),
                format!("route name \"{name}\" must be non-empty and use only letters, digits, '-', '_' and '.'"),
            ));
        }
        if route_names.insert(name.clone(), ()).is_some() {
            return Err(check.err(
                r.name.span(),
                format!("a route named \"{name}\" is already defined: route names must be unique"),
            ));
        }
        // A route reached only through a `tcp` listener needs no host.
        let tcp_only = raw.listeners.iter().any(|l| {
            l.get_ref()
                .route
                .as_ref()
                .is_some_and(|n| n.get_ref().trim() == name)
        });
        let no_hosts = Vec::new();
        let raw_hosts = r.hosts.as_ref().map_or(&no_hosts, |h| h.get_ref());
        if raw_hosts.is_empty() && !tcp_only {
            return Err(check.err(
                r.hosts.as_ref().map_or(r.name.span(), Spanned::span),
                "hosts is empty: list at least one host name, like [\"blog.example.com\"]",
            ));
        }
        let mut hosts = Vec::with_capacity(raw_hosts.len());
        for h in raw_hosts {
            let pattern = HostPattern::parse(h.get_ref())
                .map_err(|why| check.err(h.span(), format!("host \"{}\": {why}", h.get_ref())))?;
            if let Some(owner) = host_owner.get(&pattern) {
                return Err(check.err(
                    h.span(),
                    format!("host \"{pattern}\" is already claimed by route \"{owner}\": each host belongs to one route"),
                ));
            }
            host_owner.insert(pattern.clone(), name.clone());
            hosts.push(pattern);
        }
        let ready = match &r.ready {
            None => ReadyCheck::Tcp,
            Some(v) => parse_ready(v.get_ref()).ok_or_else(|| {
                check.err(
                    v.span(),
                    format!(
                        "ready = \"{}\" is not a readiness check: write \"tcp\" or \"http:/path\"",
                        v.get_ref()
                    ),
                )
            })?,
        };
        let backend = match &r.backend {
            None => BackendConfig::None,
            Some(b) => backend_config(&check, b.get_ref(), &base_dir)?,
        };
        let mut passive = Passive::default();
        for p in r.passive_paths.iter().flat_map(|p| p.get_ref()) {
            if !p.get_ref().starts_with('/') {
                return Err(check.err(
                    p.span(),
                    format!("passive path \"{}\" must start with /", p.get_ref()),
                ));
            }
            passive.paths.push(p.get_ref().clone());
        }
        for ua in r.passive_user_agents.iter().flat_map(|u| u.get_ref()) {
            if ua.get_ref().trim().is_empty() {
                return Err(check.err(ua.span(), "passive user agent is empty"));
            }
            passive
                .user_agents
                .push(ua.get_ref().trim().to_ascii_lowercase());
        }
        let starting_page = r
            .starting_page
            .as_ref()
            .map(|v| check.duration(v, "starting_page"))
            .transpose()?;
        routes.push(RouteConfig {
            name,
            hosts,
            passive,
            starting_page,
            upstream: check.addr(&r.upstream, "upstream")?,
            idle_timeout: check.opt_duration(
                &r.idle_timeout,
                "idle_timeout",
                DEFAULT_IDLE_TIMEOUT,
            )?,
            start_timeout: check.opt_duration(
                &r.start_timeout,
                "start_timeout",
                DEFAULT_START_TIMEOUT,
            )?,
            ready,
            max_pending: r
                .max_pending
                .as_ref()
                .map_or(Ok(DEFAULT_MAX_PENDING), |v| {
                    check.positive(v, "max_pending")
                })?,
            backend,
            tls: r.tls.as_ref().map(|t| tls_files(t.get_ref(), &base_dir)),
            upstream_protocol: match &r.upstream_protocol {
                None => UpstreamProtocol::Http1,
                Some(v) => match v.get_ref().as_str() {
                    "http1" | "http/1.1" => UpstreamProtocol::Http1,
                    "h2c" => UpstreamProtocol::H2c,
                    "h2" => UpstreamProtocol::H2,
                    other => {
                        return Err(check.err(
                            v.span(),
                            format!("upstream_protocol = \"{other}\" is not supported: write \"http1\", \"h2c\" or \"h2\""),
                        ));
                    }
                },
            },
            upstream_ca: match &r.upstream_ca {
                None => None,
                Some(ca) if r.upstream_protocol.as_ref().is_some_and(|p| p.get_ref() == "h2") => {
                    Some(base_dir.join(ca.get_ref()))
                }
                Some(ca) => {
                    return Err(check.err(
                        ca.span(),
                        "upstream_ca is only used with upstream_protocol = \"h2\" (HTTP/2 over TLS)",
                    ));
                }
            },
            proxy_protocol: match &r.proxy_protocol {
                None => None,
                Some(v) => Some(match v.get_ref().as_str() {
                    "v1" => ProxyProtocol::V1,
                    "v2" => ProxyProtocol::V2,
                    other => {
                        return Err(check.err(
                            v.span(),
                            format!("proxy_protocol = \"{other}\" is not known: write \"v1\" or \"v2\""),
                        ));
                    }
                }),
            },
        });
    }

    // `tcp` listeners name their route; resolve it now that all routes are known.
    for (listener, raw_listener) in listeners.iter_mut().zip(&raw.listeners) {
        if let Some(r) = &raw_listener.get_ref().route {
            let name = r.get_ref().trim();
            let index = routes
                .iter()
                .position(|route| route.name == name)
                .ok_or_else(|| {
                    check.err(
                        r.span(),
                        format!("route \"{name}\" is not defined: name one of the [[route]] names"),
                    )
                })?;
            listener.route = Some(index);
        }
    }

    let admin = match &raw.admin {
        None => None,
        Some(a) => {
            let bind = &a.get_ref().bind;
            let addr = check.addr(bind, "bind")?;
            if let Some(l) = listeners.iter().find(|l| l.bind == addr) {
                return Err(check.err(
                    bind.span(),
                    format!(
                        "admin bind {addr} is listener \"{}\"'s address: the admin interface needs an address of its own",
                        l.name
                    ),
                ));
            }
            Some(addr)
        }
    };
    Ok(Config {
        path: path.to_owned(),
        proxy,
        listeners,
        routes,
        admin,
    })
}

fn proxy_config(check: &Checker<'_>, p: &RawProxy) -> Result<ProxyConfig, ConfigError> {
    let d = ProxyConfig::default();
    Ok(ProxyConfig {
        idle_exit: p
            .idle_exit
            .as_ref()
            .map(|v| check.duration(v, "idle_exit"))
            .transpose()?,
        drain_timeout: check.opt_duration(&p.drain_timeout, "drain_timeout", d.drain_timeout)?,
        header_timeout: check.opt_duration(
            &p.header_timeout,
            "header_timeout",
            d.header_timeout,
        )?,
        keepalive_timeout: check.opt_duration(
            &p.keepalive_timeout,
            "keepalive_timeout",
            d.keepalive_timeout,
        )?,
        body_timeout: check.opt_duration(&p.body_timeout, "body_timeout", d.body_timeout)?,
        max_uri_bytes: check.opt_at_least(
            &p.max_uri_bytes,
            "max_uri_bytes",
            256,
            d.max_uri_bytes,
        )?,
        max_connections: p
            .max_connections
            .as_ref()
            .map_or(Ok(d.max_connections), |v| {
                check.positive(v, "max_connections")
            })?,
        workers: p
            .workers
            .as_ref()
            .map_or(Ok(d.workers), |v| check.positive(v, "workers"))?,
        handshake_timeout: check.opt_duration(
            &p.handshake_timeout,
            "handshake_timeout",
            d.handshake_timeout,
        )?,
        on_exit: match &p.on_exit {
            None => d.on_exit,
            Some(v) => {
                match v.get_ref().as_str() {
                    "stop" => OnExit::Stop,
                    "leave" => OnExit::Leave,
                    other => {
                        return Err(check.err(
                        v.span(),
                        format!("on_exit = \"{other}\" is not an option: write \"stop\" or \"leave\""),
                    ));
                    }
                }
            }
        },
        max_header_bytes: check.opt_at_least(
            &p.max_header_bytes,
            "max_header_bytes",
            1024,
            d.max_header_bytes,
        )?,
    })
}

fn backend_config(
    check: &Checker<'_>,
    b: &RawBackend,
    base_dir: &Path,
) -> Result<BackendConfig, ConfigError> {
    let kind = b.kind.get_ref().as_str();
    let allowed: &[&str] = match kind {
        "none" => &[],
        "exec" => &[
            "command",
            "env",
            "working_dir",
            "stop_signal",
            "stop_timeout",
        ],
        "systemd" => &["unit", "also", "bus"],
        "podman" | "docker" => &[
            "container",
            "also",
            "socket",
            "image",
            "command",
            "env",
            "ports",
            "volumes",
        ],
        other => {
            return Err(check.err(
                b.kind.span(),
                format!("backend kind \"{other}\" is not known: write kind = \"exec\", \"systemd\", \"podman\", \"docker\" or \"none\""),
            ));
        }
    };
    if let Some((key, span)) = b
        .present()
        .into_iter()
        .find(|(key, _)| !allowed.contains(key))
    {
        let owners = match key {
            "command" | "env" => "kind = \"exec\", \"podman\" or \"docker\"",
            "working_dir" | "stop_signal" | "stop_timeout" => "kind = \"exec\"",
            "unit" | "bus" => "kind = \"systemd\"",
            "also" => "kind = \"systemd\", \"podman\" or \"docker\"",
            _ => "kind = \"podman\" or \"docker\"",
        };
        return Err(check.err(
            span,
            format!("{key} is not used by kind = \"{kind}\": remove it (it belongs to {owners})"),
        ));
    }
    let env = || {
        b.env
            .as_ref()
            .map(|e| e.get_ref().clone())
            .unwrap_or_default()
    };
    let also = |what: &str| -> Result<Vec<String>, ConfigError> {
        let Some(also) = &b.also else {
            return Ok(Vec::new());
        };
        also.get_ref()
            .iter()
            .map(|name| {
                let name = name.trim();
                if name.is_empty() {
                    Err(check.err(also.span(), format!("also lists an empty {what} name")))
                } else {
                    Ok(name.to_owned())
                }
            })
            .collect()
    };
    match kind {
        "none" => Ok(BackendConfig::None),
        "exec" => exec_config(check, b, base_dir, env()),
        "systemd" => {
            let Some(unit) = &b.unit else {
                return Err(check.err(
                    b.kind.span(),
                    "kind = \"systemd\" needs unit = \"name.service\"",
                ));
            };
            let bus = match &b.bus {
                None => BusAddress::System,
                Some(v) => BusAddress::parse(v.get_ref()).ok_or_else(|| {
                    check.err(
                        v.span(),
                        format!("bus = \"{}\" is not a bus: write \"system\", \"user\" or a D-Bus address like \"unix:path=/run/dbus/system_bus_socket\"", v.get_ref()),
                    )
                })?,
            };
            let unit_name = |name: &str, span: Range<usize>| -> Result<String, ConfigError> {
                let name = name.trim();
                if name.is_empty() || name.contains('/') || name.contains(char::is_whitespace) {
                    return Err(check.err(
                        span,
                        format!("\"{name}\" is not a unit name: write e.g. \"blog.service\""),
                    ));
                }
                // As systemctl does, a name without a type suffix is a service.
                Ok(if name.contains('.') {
                    name.to_owned()
                } else {
                    format!("{name}.service")
                })
            };
            let mut units = vec![unit_name(unit.get_ref(), unit.span())?];
            for name in also("unit")? {
                units.push(unit_name(
                    &name,
                    b.also.as_ref().map_or(0..0, Spanned::span),
                )?);
            }
            Ok(BackendConfig::Systemd(SystemdConfig { units, bus }))
        }
        _ => {
            let engine = if kind == "podman" {
                Engine::Podman
            } else {
                Engine::Docker
            };
            let Some(container) = &b.container else {
                return Err(check.err(
                    b.kind.span(),
                    format!("kind = \"{kind}\" needs container = \"name\""),
                ));
            };
            let socket = match &b.socket {
                None => engine.default_socket(),
                Some(v) => {
                    let path = v.get_ref().strip_prefix("unix://").unwrap_or(v.get_ref());
                    if !path.starts_with('/') {
                        return Err(check.err(
                            v.span(),
                            format!("socket = \"{}\" is not a unix socket: write \"unix:///run/podman/podman.sock\"", v.get_ref()),
                        ));
                    }
                    PathBuf::from(path)
                }
            };
            let mut containers = vec![container.get_ref().trim().to_owned()];
            containers.extend(also("container")?);
            let list = |v: &Option<Spanned<Vec<String>>>| {
                v.as_ref().map(|v| v.get_ref().clone()).unwrap_or_default()
            };
            Ok(BackendConfig::Container(ContainerConfig {
                engine,
                containers,
                socket,
                create: b.image.as_ref().map(|image| CreateSpec {
                    image: image.get_ref().clone(),
                    command: list(&b.command),
                    env: env(),
                    ports: list(&b.ports),
                    volumes: list(&b.volumes),
                }),
            }))
        }
    }
}

fn exec_config(
    check: &Checker<'_>,
    b: &RawBackend,
    base_dir: &Path,
    env: BTreeMap<String, String>,
) -> Result<BackendConfig, ConfigError> {
    let Some(command) = &b.command else {
        return Err(check.err(
            b.kind.span(),
            "kind = \"exec\" needs command = [\"/path/to/program\", \"arg\", ...]",
        ));
    };
    let mut argv = command.get_ref().clone();
    if argv.first().is_none_or(|p| p.trim().is_empty()) {
        return Err(check.err(
            command.span(),
            "command is empty: its first element is the program to run",
        ));
    }
    if argv[0] == SELF_PROGRAM {
        argv[0] = std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "rouse".to_owned());
    }
    let working_dir = match &b.working_dir {
        None => base_dir.to_owned(),
        Some(d) => base_dir.join(d.get_ref()),
    };
    let stop_signal = match &b.stop_signal {
        None => Signal::parse("SIGTERM").expect("SIGTERM is known"),
        Some(s) => Signal::parse(s.get_ref()).ok_or_else(|| {
            check.err(
                s.span(),
                format!("stop_signal = \"{}\" is not a known signal: write e.g. \"SIGTERM\", \"SIGINT\" or \"SIGQUIT\"", s.get_ref()),
            )
        })?,
    };
    Ok(BackendConfig::Exec(ExecConfig {
        command: argv,
        env,
        working_dir,
        stop_signal,
        stop_timeout: check.opt_duration(&b.stop_timeout, "stop_timeout", DEFAULT_STOP_TIMEOUT)?,
    }))
}

fn tls_files(t: &RawTls, base_dir: &Path) -> TlsFiles {
    TlsFiles {
        cert: base_dir.join(t.cert.get_ref()),
        key: base_dir.join(t.key.get_ref()),
    }
}

fn parse_ready(text: &str) -> Option<ReadyCheck> {
    match text.trim() {
        "tcp" => Some(ReadyCheck::Tcp),
        t => {
            let path = t.strip_prefix("http:")?;
            (path.starts_with('/') && !path.contains(char::is_whitespace)).then(|| {
                ReadyCheck::Http {
                    path: path.to_owned(),
                }
            })
        }
    }
}

/// Adds a hint to the toml parser's messages that users meet most.
fn explain_toml_error(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown field ") {
        // "unknown field `foo`, expected one of `a`, `b`"
        return format!("unknown key {rest}");
    }
    message.to_owned()
}
