//! HTTP on one client connection (cleartext, or inside TLS): hyper serves it; each request is
//! routed by host, held at its route's gate, and forwarded.
//!
//! On a TLS connection a request must be for a host the connection's certificate was chosen
//! for; anything else is answered 421, so one site's connection never reaches another's.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::debug;

use super::{App, Route};
use crate::activity::{Activity, ActivityGuard};
use crate::error::Error;
use crate::proxy::{self, Body, InFlight};
use crate::route;
use crate::tls::Handshake;

/// One client connection's state.
struct Connection {
    peer: SocketAddr,
    /// The TLS handshake, on an `https` listener.
    tls: Option<Handshake>,
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

/// Serves HTTP/1.1 and HTTP/2 on `io` until the client closes, the keep-alive timeout passes,
/// or rouse drains.
pub(super) async fn serve<I>(
    app: &Arc<App>,
    io: I,
    peer: SocketAddr,
    tls: Option<Handshake>,
    mut draining: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = Arc::new(Connection {
        peer,
        tls,
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
        .serve_connection_with_upgrades(TokioIo::new(io), service);
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
    /// Routes, holds and forwards one request.
    async fn handle(&self, req: Request<Incoming>, conn: &Connection) -> Response<Body> {
        let index = match route::request_host(&req) {
            None => return Error::NoHost.to_response(),
            Some(host) => {
                if let (Some(tls), Some(certs)) = (&conn.tls, &self.tls)
                    && !certs.serves(tls, &host)
                {
                    return Error::Misdirected {
                        host: host.into_owned(),
                        sni: tls.sni.clone().unwrap_or_default(),
                    }
                    .to_response();
                }
                match self.hosts.lookup(&host) {
                    Some(index) => index,
                    None => return Error::NoRoute(host.into_owned()).to_response(),
                }
            }
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
            https: conn.tls.is_some(),
        };
        proxy::http::forward(req, &upstream, cx, in_flight).await
    }
}
