//! HTTP on one client connection (cleartext, or inside TLS): hyper serves it; each request is
//! routed by host, held at its route's gate, and forwarded.
//!
//! On a TLS connection a request must be for a host the connection's certificate was chosen
//! for; anything else is answered 421, so one site's connection never reaches another's.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tracing::{debug, info};

use super::drain::Drain;
use super::timeouts::{Clock, Cut, Limits, Verdict, Watched};
use super::{App, Route};
use crate::activity::ActivityGuard;
use crate::error::Error;
use crate::proxy::{self, Body, InFlight};
use crate::route;
use crate::tls::{Handshake, Tls};

/// One client connection's state.
struct Connection {
    peer: SocketAddr,
    /// The TLS handshake, on an `https` listener, and the certificates it was made with.
    tls: Option<(Handshake, Arc<Tls>)>,
    /// Request heads and in-flight requests, for the header and keep-alive timeouts.
    clock: Arc<Clock>,
    /// The route this connection counts toward: the route of its latest request.
    bound: Mutex<Option<ActivityGuard>>,
    /// The address of that route's activity counter (which a reload keeps for an unchanged
    /// route), to tell cheaply whether a request is for the same route.
    bound_to: AtomicUsize,
}

impl Connection {
    /// Counts this connection toward `route` (and no longer toward the previous one).
    fn bind(&self, route: &Route) {
        let id = Arc::as_ptr(&route.activity) as usize;
        if self.bound_to.load(Ordering::Relaxed) == id {
            return;
        }
        let guard = route.activity.enter();
        *self.bound.lock().expect("bound lock") = Some(guard);
        self.bound_to.store(id, Ordering::Relaxed);
    }
}

/// Serves HTTP/1.1 and HTTP/2 on `io` until the client closes, a timeout of
/// [`timeouts`](super::timeouts) ends it, or rouse drains.
pub(super) async fn serve<I>(
    app: &Arc<App>,
    io: I,
    peer: SocketAddr,
    tls: Option<(Handshake, Arc<Tls>)>,
    drain: &Arc<Drain>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let clock = Arc::new(Clock::new());
    let conn = Arc::new(Connection {
        peer,
        tls,
        clock: clock.clone(),
        bound: Mutex::new(None),
        bound_to: AtomicUsize::new(0),
    });
    let service = {
        let app = app.clone();
        let conn = conn.clone();
        service_fn(move |req| {
            // Called as soon as the head is complete: its clock stops here.
            let request = conn.clock.head_complete();
            let app = app.clone();
            let conn = conn.clone();
            // Boxed: the request's future is large, and hyper moves it; a box moves as a pointer.
            Box::pin(async move { Ok::<_, Infallible>(app.handle(req, &conn, request).await) })
        })
    };
    let limits = Limits {
        header: app.proxy.header_timeout,
        keepalive: app.proxy.keepalive_timeout,
        body: app.proxy.body_timeout,
    };
    let serving = app
        .http
        .serve_connection_with_upgrades(TokioIo::new(Watched::new(io, clock.clone())), service);
    tokio::pin!(serving);
    let first = match clock.check(Instant::now(), limits) {
        Verdict::CheckAt(at) => at,
        Verdict::Close(_) | Verdict::Shutdown => Instant::now(),
    };
    let timer = tokio::time::sleep_until(first);
    tokio::pin!(timer);
    let mut drain = drain.watch();
    // `armed`: the timer has been polled since it was last set, so the task is woken when it
    // fires; until then a wake only needs the cheap `is_elapsed` look.
    let (mut armed, mut closing) = (false, false);
    // Hand-written rather than `select!`: this runs on every wake of the connection, and each
    // of the three checks here costs a load or two when nothing is due.
    let ended = std::future::poll_fn(|cx| {
        loop {
            if let Poll::Ready(result) = serving.as_mut().poll(cx) {
                return Poll::Ready(result.map_err(Ended::Error));
            }
            if closing {
                return Poll::Pending;
            }
            if drain.poll_started(cx) {
                serving.as_mut().graceful_shutdown();
                closing = true;
                continue;
            }
            if armed && !timer.is_elapsed() {
                return Poll::Pending;
            }
            if timer.as_mut().poll(cx).is_pending() {
                armed = true;
                return Poll::Pending;
            }
            armed = false;
            match clock.check(Instant::now(), limits) {
                Verdict::CheckAt(at) => timer.as_mut().reset(at),
                Verdict::Shutdown => {
                    serving.as_mut().graceful_shutdown();
                    closing = true;
                }
                Verdict::Close(cut) => return Poll::Ready(Err(Ended::Cut(cut))),
            }
        }
    })
    .await;
    match ended {
        Ok(()) => {}
        Err(Ended::Cut(cut)) => info!(peer = %peer, reason = cut.reason(), "connection cut"),
        Err(Ended::Error(e)) => debug!(peer = %peer, error = %e, "connection error"),
    }
}

/// Whether the client is a browser asking for a page (GET or HEAD, `Accept: text/html`).
fn wants_html<B>(req: &Request<B>) -> bool {
    matches!(*req.method(), http::Method::GET | http::Method::HEAD)
        && req
            .headers()
            .get_all(http::header::ACCEPT)
            .iter()
            .any(|v| v.as_bytes().windows(9).any(|w| w == b"text/html"))
}

/// Why a connection ended other than by a clean close.
enum Ended {
    /// A timeout of [`Clock`] cut it.
    Cut(Cut),
    /// hyper gave up on it (a malformed request, an I/O error).
    Error(Box<dyn std::error::Error + Send + Sync>),
}

impl Route {
    /// Whether `req` is one of the route's passive requests (see [`crate::config::Passive`]).
    fn is_passive<B>(&self, req: &Request<B>) -> bool {
        !self.passive.is_empty()
            && self.passive.matches(
                req.uri().path(),
                req.headers()
                    .get(http::header::USER_AGENT)
                    .map(http::HeaderValue::as_bytes),
            )
    }
}

impl App {
    /// What the forwarding needs to know of the route and the connection.
    fn context<'a>(&self, route: &'a Route, conn: &'a Connection) -> proxy::http::Context<'a> {
        proxy::http::Context {
            route: &route.name,
            activity: &route.activity,
            client: conn.peer,
            https: conn.tls.is_some(),
            body_stall: &conn.clock.reading,
        }
    }

    /// Routes, holds and forwards one request.
    async fn handle(
        &self,
        req: Request<Incoming>,
        conn: &Connection,
        request: ActivityGuard,
    ) -> Response<Body> {
        let uri = req.uri();
        let target = uri.path_and_query().map_or(0, |p| p.as_str().len())
            + uri.authority().map_or(0, |a| a.as_str().len());
        if target > self.proxy.max_uri_bytes {
            let mut resp = Error::UriTooLong {
                length: target,
                limit: self.proxy.max_uri_bytes,
            }
            .to_response();
            if req.version() < http::Version::HTTP_2 {
                // Whatever else the client sent on this connection is not worth reading.
                resp.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
            }
            return resp;
        }
        let route = match route::request_host(&req) {
            None => return Error::NoHost.to_response(),
            Some(host) => {
                if let Some((handshake, certs)) = &conn.tls
                    && !certs.serves(handshake, &host)
                {
                    return Error::Misdirected {
                        host: host.into_owned(),
                        sni: handshake.sni.clone().unwrap_or_default(),
                    }
                    .to_response();
                }
                match self.table.load().lookup(&host) {
                    Some(route) => route.clone(),
                    None => return Error::NoRoute(host.into_owned()).to_response(),
                }
            }
        };
        route.gate.stats().request();
        let resp = self.handle_routed(req, conn, request, &route).await;
        route.gate.stats().response(resp.status());
        resp
    }

    /// Holds and forwards a request routed to `route`.
    async fn handle_routed(
        &self,
        req: Request<Incoming>,
        conn: &Connection,
        request: ActivityGuard,
        route: &Route,
    ) -> Response<Body> {
        if route.is_passive(&req) {
            // Never starts the backend, never keeps it awake.
            let Some(upstream) = route.gate.ready() else {
                return Error::Sleeping {
                    route: route.name.clone(),
                }
                .to_response();
            };
            let in_flight = InFlight {
                connection: request,
                route: None,
            };
            return proxy::http::forward(req, &upstream, self.context(route, conn), in_flight)
                .await;
        }
        let in_flight = InFlight {
            connection: request,
            route: Some(route.activity.enter()),
        };
        conn.bind(route);
        let acquired = match route.starting_page {
            Some(after) if route.gate.ready().is_none() && wants_html(&req) => {
                match tokio::time::timeout(after, route.gate.acquire()).await {
                    Ok(acquired) => acquired,
                    // The start goes on; the page reloads itself until it is done.
                    Err(_) => Err(Error::Starting {
                        route: route.name.clone(),
                    }),
                }
            }
            _ => route.gate.acquire().await,
        };
        let upstream = match acquired {
            Ok(upstream) => upstream,
            Err(e) => return e.to_response(),
        };
        let cx = self.context(route, conn);
        proxy::http::forward(req, &upstream, cx, in_flight).await
    }
}
