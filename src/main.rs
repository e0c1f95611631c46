//! The `rouse` command line: parses arguments, sets up logging, and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use rouse::config::{BackendConfig, Config};
use rouse::server::Exit;
use tracing_subscriber::EnvFilter;

// Each request allocates a few small objects; mimalloc's per-thread free lists serve them
// with less work than glibc's malloc (measured with benches/load.sh).
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
            print!("{}", summary(&config));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(path: &std::path::Path) -> anyhow::Result<()> {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(e) => anyhow::bail!("{e}"),
    };
    // Sockets are taken before any thread starts, so no descriptor leaks into a spawned child.
    let listeners = rouse::listen::open(&config.listeners)?;
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
