//! The running proxy: accept loops, one hyper connection per client, request dispatch, and
//! shutdown (signal, or `idle_exit`).
//!
//! Connections are served by one worker thread per core, each with its own single-threaded
//! runtime, its own accept loop on every listener and its own upstream connections: a request
//! is read, forwarded and answered without leaving the thread that accepted it, so the hot path
//! never wakes another thread. The backend supervisors, signals and `idle_exit` run on the
//! caller's runtime (the control thread).
//!
//! Data flows one way: a request's host picks a route ([`crate::route`]), the route's gate holds
//! it until the backend is ready ([`crate::hold`]), and the proxy forwards it
//! ([`crate::proxy::http`]). The backend lifecycles run beside this, one task per route. The
//! routes in force are one table ([`routes`]) that a reload replaces whole.
//!
//! Each listener's protocol picks what happens to an accepted connection: `http` is served as
//! HTTP here ([`http`]); `https` first completes a TLS handshake ([`crate::tls`]); `tcp` and
//! `tls-passthrough` are relayed as bytes ([`crate::proxy::tcp`]).

mod drain;
mod http;
mod routes;
mod timeouts;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use arc_swap::ArcSwap;

use crate::activity::Activity;
use crate::admin::ReloadRequest;
use crate::config::{Config, ListenerConfig, Passive, Protocol, ProxyConfig, ProxyProtocol};
use crate::hold::Gate;
use crate::listen::Bound;
use drain::Drain;
use routes::{Routes, Table};

/// Shortest time between two warnings that the connection limit is reached.
const LIMIT_WARNING_EVERY: Duration = Duration::from_secs(60);

/// How long accept waits after an error (out of descriptors, say) before trying again.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Why the proxy stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The shutdown future resolved (a signal).
    Requested,
    /// Every route was stopped, and no connection open, for `idle_exit`.
    Idle,
}

/// One route at run time.
struct Route {
    name: Arc<str>,
    /// In-flight requests and open connections bound to the route.
    activity: Arc<Activity>,
    gate: Gate,
    /// PROXY protocol header for TCP and TLS-passthrough connections to the upstream.
    proxy_protocol: Option<ProxyProtocol>,
    /// Requests that neither wake the backend nor keep it awake.
    passive: Passive,
    /// How long a browser waits for a start before it gets the "starting" page.
    starting_page: Option<Duration>,
}

/// What every connection task shares.
struct App {
    /// The routes, hosts and certificates in force (replaced whole by a reload).
    table: ArcSwap<Table>,
    http: auto::Builder<TokioExecutor>,
    proxy: ProxyConfig,
    /// Open client connections, all listeners together.
    connections: Arc<Activity>,
    /// What the admin listener shows (its routes replaced by a reload).
    view: Arc<crate::admin::View>,
}

/// Runs the proxy on already-opened listeners until `shutdown` resolves or `idle_exit` fires;
/// then stops accepting, drains, stops every backend it started, and returns. SIGHUP (or
/// `POST /reload` on the admin listener) reloads the config meanwhile (see [`routes`]).
pub async fn run(
    config: Config,
    listeners: Vec<Bound>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<Exit> {
    let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
    // Certificates first: a bad one stops rouse before anything else starts.
    let (mut routes, table) = Routes::start(config.clone()).map_err(invalid)?;
    let (reload_requests, mut reload_asked) = mpsc::channel::<ReloadRequest>(4);
    let connections = Activity::new();
    let app = Arc::new(App {
        view: Arc::new(crate::admin::View {
            routes: ArcSwap::from_pointee(route_views(&table)),
            connections: connections.clone(),
            reload: reload_requests,
        }),
        table: ArcSwap::from_pointee(table),
        http: http_builder(&config.proxy),
        proxy: config.proxy.clone(),
        connections,
    });

    let mut hangup = signal(SignalKind::hangup())?;
    let admin = match config.admin {
        Some(addr) => Some(tokio::spawn(crate::admin::serve(
            admin_listener(addr)?,
            app.view.clone(),
        ))),
        None => None,
    };

    // One drain signal per worker: each connection registers with its worker's, so the
    // registrations of two workers never contend for one lock.
    let drains: Vec<Arc<Drain>> = (0..config.proxy.workers)
        .map(|_| Arc::new(Drain::default()))
        .collect();
    let (exit_workers, workers_exit) = watch::channel(false);
    let sockets: Vec<(ListenerConfig, std::net::TcpListener)> = listeners
        .into_iter()
        .map(|b| (b.config, b.socket))
        .collect();
    let mut workers = Vec::with_capacity(config.proxy.workers);
    for (id, drain) in drains.iter().enumerate() {
        let sockets = sockets
            .iter()
            .map(|(config, socket)| Ok((config.clone(), socket.try_clone()?)))
            .collect::<std::io::Result<Vec<_>>>()?;
        let (app, drain, exit) = (app.clone(), drain.clone(), workers_exit.clone());
        workers.push(
            std::thread::Builder::new()
                .name(format!("rouse-worker-{id}"))
                .spawn(move || worker(id, app, sockets, drain, exit))?,
        );
    }
    // The workers hold their own copies of the sockets.
    drop(sockets);
    crate::notify::notify(&format!(
        "READY=1\nSTATUS=serving {} routes on {} listeners",
        app.table.load().routes.len(),
        config.listeners.len()
    ));

    let status = std::env::var_os("NOTIFY_SOCKET")
        .is_some()
        .then(|| tokio::spawn(report_status(app.clone())));
    let running = routes.running.clone();
    let idle = idle_exit(config.proxy.idle_exit, &app.connections, &running);
    tokio::pin!(idle, shutdown);
    let exit = loop {
        let answer = tokio::select! {
            () = &mut shutdown => break Exit::Requested,
            () = &mut idle => {
                info!(after = %crate::error::fmt_duration(config.proxy.idle_exit.unwrap_or_default()), "idle exit");
                break Exit::Idle;
            }
            Some(()) = hangup.recv() => {
                info!(signal = "SIGHUP", "signal received: reloading the config");
                None
            }
            Some(answer) = reload_asked.recv() => {
                info!("reload asked on the admin listener");
                Some(answer)
            }
        };
        let reloaded = reload(&mut routes, &app).await;
        if let Some(answer) = answer {
            let _ = answer.send(reloaded);
        }
    };

    if let Some(status) = status {
        status.abort();
    }
    // Stop accepting, let in-flight requests finish, then stop the backends.
    info!(open_connections = app.connections.active(), "shutting down");
    crate::notify::notify("STOPPING=1\nSTATUS=shutting down");
    for drain in &drains {
        drain.start();
    }
    let drained = tokio::time::timeout(
        app.proxy.drain_timeout,
        app.connections.idle_for(Duration::ZERO, Instant::now()),
    )
    .await
    .is_ok();
    if !drained {
        warn!(
            open_connections = app.connections.active(),
            "drain timeout: closing what is left"
        );
    }
    routes.exit().await;
    exit_workers.send_replace(true);
    for worker in workers {
        let _ = tokio::task::spawn_blocking(move || worker.join()).await;
    }
    if let Some(admin) = admin {
        admin.abort();
    }
    info!("shutdown complete");
    Ok(exit)
}

/// One reload, logged and told to systemd: the new config in force, or the old one kept.
async fn reload(routes: &mut Routes, app: &App) -> Result<String, String> {
    crate::notify::notify(&format!(
        "RELOADING=1\nMONOTONIC_USEC={}",
        crate::notify::monotonic_usec()
    ));
    let reloaded = routes.reload(app).await;
    match &reloaded {
        Ok(changes) => info!(config = %routes.config().path.display(), %changes, "config reloaded"),
        Err(why) => {
            warn!(error = %why, "config not reloaded: the config in force stays");
        }
    }
    crate::notify::notify(&format!(
        "READY=1\nSTATUS=serving {} routes",
        app.table.load().routes.len()
    ));
    reloaded
}

/// What the admin listener shows of a table's routes.
fn route_views(table: &Table) -> Vec<crate::admin::RouteView> {
    table
        .routes
        .iter()
        .map(|r| crate::admin::RouteView {
            name: r.name.clone(),
            gate: r.gate.clone(),
            activity: r.activity.clone(),
        })
        .collect()
}

/// How often systemd's `STATUS=` line is brought up to date (only sent when it changed).
const STATUS_EVERY: Duration = Duration::from_secs(2);

/// Keeps systemd's status line (`systemctl status`) saying how many routes run, start and
/// hold requests, and how many connections are open.
async fn report_status(app: Arc<App>) {
    let mut last = String::new();
    loop {
        let (mut running, mut starting, mut held) = (0, 0, 0);
        let table = app.table.load_full();
        for route in &table.routes {
            let (state, pending) = route.gate.state();
            match state {
                crate::lifecycle::State::Ready(_) => running += 1,
                crate::lifecycle::State::Starting => starting += 1,
                _ => {}
            }
            held += pending;
        }
        let line = format!(
            "{} routes, {running} running, {starting} starting, {held} held requests, {} open connections",
            table.routes.len(),
            app.connections.active()
        );
        if line != last {
            crate::notify::notify(&format!("STATUS={line}"));
            last = line;
        }
        tokio::time::sleep(STATUS_EVERY).await;
    }
}

/// The admin listener's socket, bound by rouse itself (it is never inherited).
fn admin_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = crate::listen::listen_on(addr)
        .map_err(|e| std::io::Error::new(e.kind(), format!("admin listener {addr}: {e}")))?;
    socket.set_nonblocking(true)?;
    info!(addr = %addr, "admin listening");
    TcpListener::from_std(socket)
}

/// One worker thread: accepts on every listener and serves what it accepts, until told to exit.
fn worker(
    id: usize,
    app: Arc<App>,
    sockets: Vec<(ListenerConfig, std::net::TcpListener)>,
    drain: Arc<Drain>,
    mut exit: watch::Receiver<bool>,
) {
    crate::proxy::set_worker_id(id);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            error!(worker = id, error = %e, "cannot start a worker runtime");
            return;
        }
    };
    // This worker's share of `max_connections`, for all its listeners together.
    let (max, workers) = (app.proxy.max_connections, app.proxy.workers);
    // At least one each, so every worker accepts (the limit is then rounded up to `workers`).
    let share = (max / workers + usize::from(id < max % workers)).max(1);
    let limit = Arc::new(Semaphore::new(share));
    runtime.block_on(async move {
        for (position, (config, socket)) in sockets.into_iter().enumerate() {
            match TcpListener::from_std(socket) {
                Ok(listener) => {
                    tokio::spawn(accept_loop(
                        app.clone(),
                        Arc::new((config, position)),
                        listener,
                        drain.clone(),
                        limit.clone(),
                    ));
                }
                Err(e) => error!(worker = id, error = %e, "cannot accept on a listener"),
            }
        }
        let _ = exit.wait_for(|exit| *exit).await;
    });
}

/// Resolves once every backend has been stopped, and no client connection open, for `after`.
async fn idle_exit(after: Option<Duration>, connections: &Activity, running: &Activity) {
    let Some(after) = after else {
        return std::future::pending().await;
    };
    let start = Instant::now();
    loop {
        connections.idle_for(after, start).await;
        running.idle_for(after, start).await;
        let still = |a: &Activity| {
            a.idle_since()
                .is_some_and(|since| since.max(start) + after <= Instant::now())
        };
        if still(connections) && still(running) {
            return;
        }
    }
}

fn http_builder(proxy: &ProxyConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        // The header and keep-alive timeouts are rouse's own (see `timeouts`).
        .header_read_timeout(None)
        .max_buf_size(proxy.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .enable_connect_protocol()
        .max_header_list_size(u32::try_from(proxy.max_header_bytes).unwrap_or(u32::MAX));
    builder
}

/// Accepts on one listener; `listener_config` holds its config and its position among the
/// listeners.
async fn accept_loop(
    app: Arc<App>,
    listener_config: Arc<(ListenerConfig, usize)>,
    listener: TcpListener,
    drain: Arc<Drain>,
    limit: Arc<Semaphore>,
) {
    let mut warned: Option<Instant> = None;
    loop {
        // At the limit, connections wait in the listen queue (then in the client's SYN
        // retries) until one closes, as with nginx's worker_connections.
        let permit = match limit.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                // Once a minute at most: a saturated proxy would say it for every connection.
                if warned.is_none_or(|at| at.elapsed() >= LIMIT_WARNING_EVERY) {
                    warned = Some(Instant::now());
                    warn!(
                    listener = %listener_config.0.name,
                    max_connections = app.proxy.max_connections,
                    "connection limit reached: not accepting until a connection closes"
                    );
                }
                tokio::select! {
                    permit = limit.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => return,
                    },
                    () = drain.wait() => return,
                }
            }
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = drain.wait() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                // Boxed here, so the spawn copies a pointer rather than the whole future.
                tokio::spawn(Box::pin(serve(
                    app.clone(),
                    listener_config.clone(),
                    stream,
                    peer,
                    drain.clone(),
                    permit,
                )));
            }
            Err(e) => {
                warn!(error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
            }
        }
    }
}

/// Serves one accepted connection as its listener's protocol says.
async fn serve(
    app: Arc<App>,
    listener: Arc<(ListenerConfig, usize)>,
    stream: TcpStream,
    peer: SocketAddr,
    drain: Arc<Drain>,
    _permit: OwnedSemaphorePermit,
) {
    let _open = app.connections.enter();
    let (listener, position) = (&listener.0, listener.1);
    match listener.protocol {
        // Each protocol's future is boxed: the largest (a hyper connection, a TLS stream) would
        // otherwise size this one, and a spawned future is copied whole at least once.
        Protocol::Http => Box::pin(http::serve(&app, stream, peer, None, &drain)).await,
        Protocol::Https => {
            // The certificates in force now serve this connection for its whole life.
            let Some(tls) = app.table.load().tls.clone() else {
                return;
            };
            // The ClientHello names the route: start its backend while the handshake goes on.
            let prewarm = |sni: &str| {
                if let Some(route) = app.table.load().lookup(sni) {
                    route.gate.prewarm();
                }
            };
            let accepted =
                Box::pin(tls.accept(&listener.name, stream, app.proxy.handshake_timeout, prewarm))
                    .await;
            match accepted {
                Ok((stream, handshake)) => {
                    let tls = Some((handshake, tls));
                    Box::pin(http::serve(&app, stream, peer, tls, &drain)).await;
                }
                Err(e) => {
                    debug!(peer = %peer, listener = %listener.name, error = %e, "tls handshake failed")
                }
            }
        }
        Protocol::Tcp => {
            let route = {
                let table = app.table.load();
                let index = table.tcp_routes.get(position).copied().flatten();
                index.map(|index| table.routes[index].clone())
            };
            let Some(route) = route else { return };
            Box::pin(relay(&route, stream, peer, Vec::new())).await;
        }
        Protocol::TlsPassthrough => {
            let hello = Box::pin(crate::proxy::tcp::read_client_hello(
                &stream,
                app.proxy.handshake_timeout,
            ))
            .await;
            let (sni, initial) = match hello {
                Ok(hello) => hello,
                Err(e) => {
                    debug!(peer = %peer, error = %e, "no usable ClientHello");
                    return;
                }
            };
            let route = sni
                .as_deref()
                .and_then(crate::route::normalize_host)
                .and_then(|host| app.table.load().lookup(&host).cloned());
            match route {
                Some(route) => Box::pin(relay(&route, stream, peer, initial)).await,
                None => debug!(peer = %peer, sni = ?sni, "no route for the ClientHello's name"),
            }
        }
    }
}

/// Relays a TCP connection to `route`'s upstream, starting the backend first if needed; the
/// connection counts toward the route's activity while it is open.
async fn relay(route: &Route, stream: TcpStream, peer: SocketAddr, initial: Vec<u8>) {
    let _open = route.activity.enter();
    let upstream = match route.gate.acquire().await {
        Ok(upstream) => upstream,
        Err(e) => {
            warn!(route = %route.name, peer = %peer, error = %e, "tcp connection closed");
            return;
        }
    };
    let relayed = crate::proxy::tcp::relay(
        stream,
        peer,
        upstream.addr(),
        route.proxy_protocol,
        &initial,
    )
    .await;
    if let Err(e) = relayed {
        debug!(route = %route.name, peer = %peer, error = %e, "tcp relay ended");
    }
}
