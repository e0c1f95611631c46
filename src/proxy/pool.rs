//! Pooled HTTP/1.1 connections to one upstream, for one worker thread.
//!
//! Requests go out through [`h1`](super::h1), in the request's own task. Idle connections are
//! kept newest first and handed out again; a connection comes back when its response body has
//! ended cleanly (see [`h1::ResponseBody`]), and one whose body was dropped halfway is closed.
//!
//! A pooled connection may have been closed by the upstream meanwhile. Closes the event loop
//! has already seen are skipped for free; a request that cannot be repeated (it has a body, or
//! its method is not idempotent) also checks with the kernel before it is sent. A repeatable
//! request that finds its pooled connection closed under it, with no byte of a response, is
//! sent once more on a new connection: that is what an upstream's keep-alive timeout looks
//! like, and it never costs the client an error.
//!
//! Upgrade requests (websockets) go through hyper's client on a connection of their own, which
//! becomes the tunnel.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Method, Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tracing::debug;

use super::Body;
use super::h1::{self, Conn};

/// Idle connections kept per worker; more are closed when they come back.
const MAX_IDLE: usize = 512;

/// Pauses before the next try when the upstream refuses a connection: 310 ms in all. A backend
/// that was ready may briefly not be listening (it restarts its listener, or a container's port
/// forwarding catches up); a request waits that out rather than fail at once.
const REFUSED_PAUSES: [Duration; 5] = [
    Duration::from_millis(10),
    Duration::from_millis(20),
    Duration::from_millis(40),
    Duration::from_millis(80),
    Duration::from_millis(160),
];

/// The idle connections of one worker to one upstream.
#[derive(Debug, Clone)]
pub struct Pool {
    addr: SocketAddr,
    idle: Arc<Mutex<Vec<Idle>>>,
    idle_timeout: Duration,
    connect_timeout: Duration,
}

/// A pooled connection and when it became idle.
#[derive(Debug)]
pub struct Idle {
    conn: Conn,
    since: Instant,
}

/// Why a request could not be sent.
#[derive(Debug)]
pub enum SendError {
    /// No connection to the upstream could be made.
    Connect(std::io::Error),
    /// The exchange with the upstream failed.
    Exchange(h1::Error),
    /// The upgrade request failed in hyper's client.
    Upgrade(hyper::Error),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Connect(e) => write!(f, "connect: {e}"),
            SendError::Exchange(e) => write!(f, "{e}"),
            SendError::Upgrade(e) => write!(f, "{}", super::http::error_chain(e)),
        }
    }
}

/// Returns `conn` to `pool` (its response has ended cleanly).
pub fn release(pool: &Mutex<Vec<Idle>>, mut conn: Conn) {
    conn.shrink_idle();
    let since = Instant::now();
    let mut idle = pool.lock().unwrap_or_else(|e| e.into_inner());
    if idle.len() < MAX_IDLE {
        idle.push(Idle { conn, since });
    }
}

impl Pool {
    /// An empty pool of connections to `addr`.
    pub fn new(addr: SocketAddr, idle_timeout: Duration, connect_timeout: Duration) -> Pool {
        Pool {
            addr,
            idle: Arc::default(),
            idle_timeout,
            connect_timeout,
        }
    }

    /// Sends `req` on an idle connection, or a new one, and returns the response; its body
    /// reads from the connection and returns it to this pool at its end.
    pub async fn send(&self, req: Request<Body>) -> Result<Response<h1::ResponseBody>, SendError> {
        let (head, mut body, method) = h1::encode_request(req);
        let repeatable = body.is_none() && is_idempotent(&method);
        let mut reused = self.checkout(!repeatable);
        loop {
            let was_pooled = reused.is_some();
            let conn = match reused.take() {
                Some(conn) => conn,
                None => self.connect().await?,
            };
            match conn.exchange(&head, body.take(), &method).await {
                Ok((resp, mut body)) => {
                    body.return_to(self.idle.clone());
                    return Ok(resp.map(|()| body));
                }
                Err(h1::Error::NoResponse(e)) if was_pooled && repeatable => {
                    debug!(upstream = %self.addr, error = %e, "pooled connection closed under a repeatable request; sending it again on a new one");
                }
                Err(e) => return Err(SendError::Exchange(e)),
            }
        }
    }

    /// Sends an upgrade request on a new connection driven by hyper, which hands over the
    /// connection if the upstream answers 101.
    pub async fn send_upgrade(&self, req: Request<Body>) -> Result<Response<Incoming>, SendError> {
        let stream = self.connect_tcp().await?;
        let (mut tx, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(SendError::Upgrade)?;
        let addr = self.addr;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                debug!(upstream = %addr, error = %e, "upstream connection ended");
            }
        });
        tx.send_request(req).await.map_err(SendError::Upgrade)
    }

    /// The newest idle connection not known to be closed; `strict` asks the kernel too.
    fn checkout(&self, strict: bool) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(Idle { conn, since }) = idle.pop() {
            if since.elapsed() > self.idle_timeout {
                // Everything older is older still.
                idle.clear();
                return None;
            }
            if conn.is_closed(strict) {
                continue;
            }
            return Some(conn);
        }
        None
    }

    async fn connect(&self) -> Result<Conn, SendError> {
        Ok(Conn::new(self.connect_tcp().await?))
    }

    /// Connects to the upstream; a refused connection is tried again a few times, briefly
    /// (see [`REFUSED_PAUSES`]).
    async fn connect_tcp(&self) -> Result<TcpStream, SendError> {
        let mut pauses = REFUSED_PAUSES.iter();
        loop {
            let connected =
                tokio::time::timeout(self.connect_timeout, TcpStream::connect(self.addr)).await;
            let stream = match connected {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    match pauses.next() {
                        Some(pause) => {
                            tokio::time::sleep(*pause).await;
                            continue;
                        }
                        None => return Err(SendError::Connect(e)),
                    }
                }
                Ok(Err(e)) => return Err(SendError::Connect(e)),
                Err(_) => {
                    return Err(SendError::Connect(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "connect timed out",
                    )));
                }
            };
            stream.set_nodelay(true).map_err(SendError::Connect)?;
            return Ok(stream);
        }
    }
}

/// Whether a request with `method` may be sent twice (RFC 9110 §9.2.2).
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}
