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
//! ([`crate::proxy::http`]). The backend lifecycles run beside this, one task per route.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::activity::{Activity, ActivityGuard};
use crate::config::{Config, ProxyConfig};
use crate::error::Error;
use crate::hold::Gate;
use crate::lifecycle::{Shared, Supervisor};
use crate::listen::Bound;
use crate::proxy::{self, Body, InFlight};
use crate::route::{self, HostMap};

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
}

/// What every connection task shares.
struct App {
    hosts: HostMap<usize>,
    routes: Vec<Route>,
    http: auto::Builder<TokioExecutor>,
    proxy: ProxyConfig,
    /// Open client connections, all listeners together.
    connections: Arc<Activity>,
}

/// Runs the proxy on already-opened listeners until `shutdown` resolves or `idle_exit` fires;
/// then stops accepting, drains, stops every backend it started, and returns.
pub async fn run(
    config: Config,
    listeners: Vec<Bound>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<Exit> {
    let (stop_backends, backends_stop) = watch::channel(false);
    let running = Activity::new();
    let claims = Arc::new(crate::backend::Claims::default());
    let mut supervisors = JoinSet::new();
    let mut hosts = HostMap::default();
    let mut routes = Vec::with_capacity(config.routes.len());
    for (index, rc) in config.routes.iter().enumerate() {
        for host in &rc.hosts {
            hosts.insert(host, index);
        }
        let activity = Activity::new();
        let shared = match crate::backend::for_route(rc, &claims) {
            Some(backend) => {
                let (supervisor, shared) = Supervisor::new(
                    rc,
                    backend,
                    activity.clone(),
                    running.clone(),
                    backends_stop.clone(),
                    config.proxy.workers,
                );
                supervisors.spawn(supervisor.run());
                shared
            }
            None => Shared::always_ready(rc, config.proxy.workers),
        };
        routes.push(Route {
            name: rc.name.as_str().into(),
            activity,
            gate: Gate::new(shared),
        });
    }

    let app = Arc::new(App {
        hosts,
        routes,
        http: http_builder(&config.proxy),
        proxy: config.proxy.clone(),
        connections: Activity::new(),
    });

    let (drain, draining) = watch::channel(false);
    let (exit_workers, workers_exit) = watch::channel(false);
    let sockets: Vec<std::net::TcpListener> = listeners.into_iter().map(|b| b.socket).collect();
    let mut workers = Vec::with_capacity(config.proxy.workers);
    for id in 0..config.proxy.workers {
        let sockets = sockets
            .iter()
            .map(std::net::TcpListener::try_clone)
            .collect::<std::io::Result<Vec<_>>>()?;
        let (app, draining, exit) = (app.clone(), draining.clone(), workers_exit.clone());
        workers.push(
            std::thread::Builder::new()
                .name(format!("rouse-worker-{id}"))
                .spawn(move || worker(id, app, sockets, draining, exit))?,
        );
    }
    // The workers hold their own copies of the sockets.
    drop(sockets);
    crate::notify::notify(&format!(
        "READY=1\nSTATUS=serving {} routes on {} listeners",
        app.routes.len(),
        config.listeners.len()
    ));

    let exit = tokio::select! {
        () = shutdown => Exit::Requested,
        () = idle_exit(config.proxy.idle_exit, &app.connections, &running) => {
            info!(after = %crate::error::fmt_duration(config.proxy.idle_exit.unwrap_or_default()), "idle exit");
            Exit::Idle
        }
    };

    // Stop accepting, let in-flight requests finish, then stop the backends.
    info!(open_connections = app.connections.active(), "shutting down");
    crate::notify::notify("STOPPING=1\nSTATUS=shutting down");
    drain.send_replace(true);
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
    stop_backends.send_replace(true);
    while supervisors.join_next().await.is_some() {}
    exit_workers.send_replace(true);
    for worker in workers {
        let _ = tokio::task::spawn_blocking(move || worker.join()).await;
    }
    info!("shutdown complete");
    Ok(exit)
}

/// One worker thread: accepts on every listener and serves what it accepts, until told to exit.
fn worker(
    id: usize,
    app: Arc<App>,
    sockets: Vec<std::net::TcpListener>,
    draining: watch::Receiver<bool>,
    mut exit: watch::Receiver<bool>,
) {
    proxy::set_worker_id(id);
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
    runtime.block_on(async move {
        for socket in sockets {
            match TcpListener::from_std(socket) {
                Ok(listener) => {
                    tokio::spawn(accept_loop(app.clone(), listener, draining.clone()));
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
        .timer(TokioTimer::new())
        .header_read_timeout(proxy.header_timeout)
        .max_buf_size(proxy.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(proxy.max_header_bytes).unwrap_or(u32::MAX));
    builder
}

async fn accept_loop(app: Arc<App>, listener: TcpListener, mut draining: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = draining.wait_for(|d| *d) => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve_connection(
                    app.clone(),
                    stream,
                    peer,
                    draining.clone(),
                ));
            }
            Err(e) => {
                warn!(error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
            }
        }
    }
}

/// One client connection's state.
struct Connection {
    peer: SocketAddr,
    /// In-flight requests on this connection (for the keep-alive timeout).
    requests: Arc<Activity>,
    /// The route this connection counts toward: the route of its latest request.
    bound: Mutex<Option<ActivityGuard>>,
    bound_index: AtomicUsize,
}

impl Connection {
    /// Counts this connection toward route `index` (and no longer toward the previous one).
    fn bind(&self, index: usize, route: &Route) {
        if self.bound_index.load(Ordering::Relaxed) == index {
            return;
        }
        let guard = route.activity.enter();
        *self.bound.lock().expect("bound lock") = Some(guard);
        self.bound_index.store(index, Ordering::Relaxed);
    }
}

async fn serve_connection(
    app: Arc<App>,
    stream: TcpStream,
    peer: SocketAddr,
    mut draining: watch::Receiver<bool>,
) {
    let _open = app.connections.enter();
    let conn = Arc::new(Connection {
        peer,
        requests: Activity::new(),
        bound: Mutex::new(None),
        bound_index: AtomicUsize::new(usize::MAX),
    });
    let service = {
        let app = app.clone();
        let conn = conn.clone();
        service_fn(move |req| {
            let app = app.clone();
            let conn = conn.clone();
            // Boxed: the request's future is large, and hyper moves it; a box moves as a pointer.
            Box::pin(async move { Ok::<_, Infallible>(app.handle(req, &conn).await) })
        })
    };
    let opened = Instant::now();
    let serving = app
        .http
        .serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(serving);
    let mut closing = false;
    loop {
        tokio::select! {
            result = serving.as_mut() => {
                if let Err(e) = result {
                    debug!(peer = %peer, error = %e, "connection error");
                }
                break;
            }
            _ = draining.wait_for(|d| *d), if !closing => {
                serving.as_mut().graceful_shutdown();
                closing = true;
            }
            () = conn.requests.idle_for(app.proxy.keepalive_timeout, opened), if !closing => {
                serving.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}

impl App {
    async fn handle(&self, req: Request<Incoming>, conn: &Connection) -> Response<Body> {
        let index = match route::request_host(&req) {
            None => return Error::NoHost.to_response(),
            Some(host) => match self.hosts.lookup(&host) {
                Some(index) => index,
                None => return Error::NoRoute(host.into_owned()).to_response(),
            },
        };
        let route = &self.routes[index];
        let in_flight = InFlight {
            connection: conn.requests.enter(),
            route: route.activity.enter(),
        };
        conn.bind(index, route);
        let upstream = match route.gate.acquire().await {
            Ok(upstream) => upstream,
            Err(e) => return e.to_response(),
        };
        let cx = proxy::http::Context {
            route: &route.name,
            activity: &route.activity,
            client: conn.peer,
        };
        proxy::http::forward(req, &upstream, cx, in_flight).await
    }
}
