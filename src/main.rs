//! The `rouse` command line: parses arguments, sets up logging, and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use rouse::config::{BackendConfig, Config};
use rouse::server::Exit;
use tracing_subscriber::EnvFilter;

// Each request allocates a few small objects; mimalloc's per-thread free lists serve them
// with less work than glibc's malloc (measured with benches/load.sh). Its `no_thp` feature keeps
// transparent huge pages off: with them, an idle rouse held 8 MiB more (four 2 MiB pages).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A reverse proxy that starts each site's backend on its first request and stops it when idle.
#[derive(Parser)]
#[command(name = "rouse", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Serve {
        /// The config file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Check a config file and print a summary of its listeners and routes.
    Check {
        /// The config file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Print the routes of a running rouse (asks its admin listener, `[admin] bind`).
    Status {
        /// The config file of the running rouse.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Make a running rouse read its config again (asks its admin listener, `[admin] bind`).
    ///
    /// The file is checked here first: an invalid one is reported and the running rouse is
    /// not asked. Without an admin listener, send SIGHUP instead (`systemctl reload rouse`).
    Reload {
        /// The config file of the running rouse.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Write the systemd units that run rouse socket-activated for a config.
    Units {
        /// The config file (the service will run with its absolute path).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// Directory to write the units to.
        #[arg(short, long, value_name = "DIR", default_value = ".")]
        output: PathBuf,
        /// Units for a user's systemd (`systemctl --user`) instead of the system's.
        #[arg(long)]
        user: bool,
        /// Also write Quadlet `.container` files for podman routes that give an image.
        #[arg(long)]
        quadlet: bool,
        /// The rouse executable the service runs (default: this one).
        #[arg(long, value_name = "PATH")]
        bin: Option<PathBuf>,
        /// Where the config will be on the machine the units are for (default: FILE's path).
        #[arg(long, value_name = "PATH")]
        config_path: Option<PathBuf>,
        /// Overwrite files that exist.
        #[arg(long)]
        force: bool,
    },
    /// Serve a fixed body or a directory over HTTP (a demo and test backend).
    #[command(hide = true)]
    Static {
        /// Address to listen on.
        #[arg(long, value_name = "ADDR")]
        listen: std::net::SocketAddr,
        /// Directory to serve files from.
        #[arg(long, value_name = "DIR", conflicts_with = "body")]
        root: Option<PathBuf>,
        /// Text to answer every request with.
        #[arg(long, value_name = "TEXT")]
        body: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Status { config } => match status(&config) {
            Ok(table) => {
                print!("{table}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("rouse status: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Reload { config } => match reload(&config) {
            Ok(changes) => {
                print!("{changes}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("rouse reload: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Units {
            config,
            output,
            user,
            quadlet,
            bin,
            config_path,
            force,
        } => match units(&config, &output, user, quadlet, bin, config_path, force) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("rouse units: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Serve { config } => match serve(&config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("rouse: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Static { listen, root, body } => {
            let content = match (root, body) {
                (Some(dir), _) => rouse::static_site::Content::Dir(dir),
                (None, body) => rouse::static_site::Content::Body(
                    format!(
                        "{}\n",
                        body.unwrap_or_else(|| "hello from rouse static".into())
                    )
                    .into(),
                ),
            };
            match run_static(listen, content) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("rouse static: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

fn check(path: &std::path::Path) -> ExitCode {
    match Config::load(path) {
        Ok(config) => {
            if let Err(e) = rouse::tls::check(&config) {
                eprintln!("{}: {e}", config.path.display());
                return ExitCode::FAILURE;
            }
            print!("{}", summary(&config));
            for warning in preflight(&config) {
                eprintln!("warning: {warning}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Asks the admin listener of the rouse running `path` for `/status` and renders it as a table.
fn status(path: &std::path::Path) -> anyhow::Result<String> {
    let config = Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (addr, status_line, body) = admin_request(path, &config, "GET", "/status")?;
    if !status_line.starts_with("HTTP/1.1 200") {
        anyhow::bail!("{addr} answered {status_line}");
    }
    let status: serde_json::Value =
        serde_json::from_str(&body).with_context(|| format!("{addr}/status is not JSON"))?;
    Ok(status_table(&status))
}

/// Checks the config at `path` as `rouse serve` would, then asks the rouse running it to reload
/// it; returns what changed.
fn reload(path: &std::path::Path) -> anyhow::Result<String> {
    let config = Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    rouse::tls::check(&config)?;
    let (addr, status_line, body) = admin_request(path, &config, "POST", "/reload")?;
    if status_line.starts_with("HTTP/1.1 200") {
        return Ok(body);
    }
    anyhow::bail!("{addr} answered {status_line}: {}", body.trim_end())
}

/// One request to the admin listener named by `config`: its address, status line and body.
fn admin_request(
    path: &std::path::Path,
    config: &Config,
    method: &str,
    target: &str,
) -> anyhow::Result<(std::net::SocketAddr, String, String)> {
    use std::io::{Read, Write};
    let Some(addr) = config.admin else {
        anyhow::bail!(
            "{} has no [admin] bind: add [admin] bind = \"127.0.0.1:9900\" and restart rouse \
             (or send rouse SIGHUP to reload)",
            path.display()
        );
    };
    let timeout = std::time::Duration::from_secs(10);
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("cannot reach the admin listener at {addr}: is rouse running?"))?;
    stream.set_read_timeout(Some(timeout))?;
    write!(
        stream,
        "{method} {target} HTTP/1.1\r\nHost: rouse\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .with_context(|| format!("reading {target} from {addr}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("{addr} sent no HTTP response"))?;
    let status_line = head.lines().next().unwrap_or_default().to_owned();
    Ok((addr, status_line, body.to_owned()))
}

/// The `rouse status` table: one line per route.
fn status_table(status: &serde_json::Value) -> String {
    let seconds = |v: &serde_json::Value| {
        v.as_f64().map_or_else(
            || "-".to_string(),
            |s| rouse::error::fmt_duration(std::time::Duration::from_secs(s as u64)),
        )
    };
    let mut rows = vec![[
        "ROUTE".to_string(),
        "STATE".into(),
        "UPTIME".into(),
        "ACTIVE".into(),
        "HELD".into(),
        "IDLE FOR".into(),
        "LAST START".into(),
        "REQUESTS".into(),
    ]];
    for r in status["routes"].as_array().into_iter().flatten() {
        rows.push([
            r["name"].as_str().unwrap_or_default().to_string(),
            r["state"].as_str().unwrap_or_default().to_string(),
            seconds(&r["uptime_s"]),
            r["active"].to_string(),
            r["held"].to_string(),
            seconds(&r["idle_for_s"]),
            r["last_start_ms"]
                .as_f64()
                .map_or_else(|| "-".to_string(), |ms| format!("{ms:.1}ms")),
            r["requests"].to_string(),
        ]);
    }
    let widths: Vec<usize> = (0..8)
        .map(|i| rows.iter().map(|row| row[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, &w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn serve(path: &std::path::Path) -> anyhow::Result<()> {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(e) => anyhow::bail!("{e}"),
    };
    // Sockets are taken before any thread starts, so no descriptor leaks into a spawned child.
    let listeners = rouse::listen::open(&config.listeners)?;
    match rouse::limits::raise_nofile() {
        Ok((before, after)) => {
            let wanted = u64::try_from(config.proxy.max_connections)
                .unwrap_or(u64::MAX)
                .saturating_mul(2);
            if after < wanted {
                tracing::warn!(
                    limit = after,
                    max_connections = config.proxy.max_connections,
                    "open-file limit below two descriptors per connection: raise LimitNOFILE"
                );
            } else if after > before {
                tracing::debug!(before, after, "open-file limit raised");
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    // The control runtime: supervisors, signals, idle_exit. Connections get worker threads.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let exit = runtime.block_on(rouse::server::run(config, listeners, shutdown_signal()))?;
    let reason = match exit {
        Exit::Requested => "signal",
        Exit::Idle => "idle_exit",
    };
    tracing::info!(reason = %reason, "exiting");
    Ok(())
}

/// Asks each route's backend whether it can be found (a unit on its bus, a container in its
/// engine), without starting anything.
fn preflight(config: &Config) -> Vec<String> {
    const PREFLIGHT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return vec!["cannot start the async runtime to check backends".into()];
    };
    let claims = std::sync::Arc::new(rouse::backend::Claims::default());
    runtime.block_on(async {
        let mut warnings = Vec::new();
        for route in &config.routes {
            let Some(backend) = rouse::backend::for_route(route, &claims) else {
                continue;
            };
            match tokio::time::timeout(PREFLIGHT_TIMEOUT, backend.preflight()).await {
                Ok(found) => warnings.extend(
                    found
                        .into_iter()
                        .map(|w| format!("route \"{}\": {w}", route.name)),
                ),
                Err(_) => warnings.push(format!(
                    "route \"{}\": no answer from its backend's manager within 5s",
                    route.name
                )),
            }
        }
        warnings
    })
}

fn units(
    config_path: &std::path::Path,
    output: &std::path::Path,
    user: bool,
    quadlet: bool,
    bin: Option<PathBuf>,
    installed_config: Option<PathBuf>,
    force: bool,
) -> anyhow::Result<()> {
    let config = match Config::load(config_path) {
        Ok(config) => config,
        Err(e) => anyhow::bail!("{e}"),
    };
    let config_path = match installed_config {
        Some(path) => path,
        None => std::path::absolute(config_path).context("cannot resolve the config path")?,
    };
    let binary = match bin {
        Some(bin) => bin,
        None => std::env::current_exe().context("cannot find the rouse executable: pass --bin")?,
    };
    let scope = if user {
        rouse::units::Scope::User
    } else {
        rouse::units::Scope::System
    };
    let files = rouse::units::render(&config, &binary, &config_path, scope, quadlet);
    std::fs::create_dir_all(output)
        .with_context(|| format!("cannot create {}", output.display()))?;
    // Refuse before writing anything, so a refusal leaves no half-written set.
    if !force {
        let existing: Vec<String> = files
            .iter()
            .map(|f| output.join(&f.name))
            .filter(|p| p.exists())
            .map(|p| p.display().to_string())
            .collect();
        if !existing.is_empty() {
            anyhow::bail!(
                "will not overwrite {}: pass --force to replace",
                existing.join(", ")
            );
        }
    }
    for file in &files {
        let path = output.join(&file.name);
        std::fs::write(&path, &file.text)
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    let (dir, systemctl) = if user {
        ("~/.config/systemd/user/", "systemctl --user")
    } else {
        ("/etc/systemd/system/", "systemctl")
    };
    let sockets: Vec<&str> = files
        .iter()
        .map(|f| f.name.as_str())
        .filter(|n| n.ends_with(".socket"))
        .collect();
    println!("install: copy the .socket and .service files to {dir}, then:");
    println!(
        "  {systemctl} daemon-reload && {systemctl} enable --now {}",
        sockets.join(" ")
    );
    if files.iter().any(|f| f.name.ends_with(".container")) {
        let quadlet_dir = if user {
            "~/.config/containers/systemd/"
        } else {
            "/etc/containers/systemd/"
        };
        println!("and the .container files to {quadlet_dir} (before the daemon-reload)");
    }
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = %name, "signal received");
}

fn run_static(
    addr: std::net::SocketAddr,
    content: rouse::static_site::Content,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            r = rouse::static_site::serve(addr, content) => r.with_context(|| format!("cannot serve on {addr}")),
            _ = term.recv() => Ok(()),
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })
}

/// The one-screen summary `rouse check` prints.
fn summary(config: &Config) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "{}: ok", config.path.display());
    let _ = writeln!(out, "listeners:");
    for l in &config.listeners {
        let _ = writeln!(
            out,
            "  {:<12} {:<6} {} (when not inherited)",
            l.name, l.protocol, l.bind
        );
    }
    let _ = writeln!(out, "routes:");
    for r in &config.routes {
        let hosts: Vec<String> = r.hosts.iter().map(ToString::to_string).collect();
        let backend = match &r.backend {
            BackendConfig::None => "none (always on)".to_owned(),
            BackendConfig::Exec(e) => format!("exec {}", e.command.join(" ")),
            BackendConfig::Systemd(s) => format!("systemd {} (bus {})", s.units.join(" + "), s.bus),
            BackendConfig::Container(c) => format!(
                "{} {} (socket {}){}",
                c.engine,
                c.containers.join(" + "),
                c.socket.display(),
                c.create.as_ref().map_or(String::new(), |spec| format!(
                    ", created from {} if missing",
                    spec.image
                ))
            ),
        };
        let _ = writeln!(
            out,
            "  {:<12} {} -> {}",
            r.name,
            hosts.join(", "),
            r.upstream
        );
        let _ = writeln!(out, "  {:<12} backend: {backend}", "");
        if !matches!(r.backend, BackendConfig::None) {
            let _ = writeln!(
                out,
                "  {:<12} idle_timeout {}, start_timeout {}, ready {}, max_pending {}",
                "",
                rouse::error::fmt_duration(r.idle_timeout),
                rouse::error::fmt_duration(r.start_timeout),
                r.ready,
                r.max_pending
            );
        }
    }
    if let Some(idle) = config.proxy.idle_exit {
        let _ = writeln!(out, "idle_exit: {}", rouse::error::fmt_duration(idle));
    }
    out
}
