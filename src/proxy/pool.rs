//! Pooled HTTP/1.1 connections to one upstream, for one worker thread.
//!
//! hyper's connection API does the HTTP/1.1 work; this file only keeps idle connections and hands
//! them out, newest first. That is all a proxy with one fixed upstream per route needs, and it
//! costs far less per request than a general-purpose client (no pool keyed by URI, no connect
//! racing, no checkout futures). A connection goes back to the pool when its response body has
//! been read to the end (see [`Reuse`]); a body dropped halfway closes it.
//!
//! A pooled connection the upstream has closed meanwhile is noticed before anything is written
//! on it: hyper hands the request back, and it is sent again on another connection, so a stale
//! keep-alive connection never costs a client an error. A request that is safe to repeat, sent on
//! a connection that had been idle for a while, is sent once more on a new connection if the
//! upstream closes under it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tracing::debug;

use super::Body;

/// Idle connections kept per worker; more are closed when they come back.
const MAX_IDLE: usize = 512;

/// A request sent on a connection idle at least this long is kept, when it is safe to repeat,
/// so that it can be sent again if the upstream closed that connection as the request arrived
/// (the usual end of a keep-alive timeout). Busier connections are not worth the copy.
const REPLAY_AFTER_IDLE: Duration = Duration::from_secs(1);

/// The idle connections of one worker to one upstream.
#[derive(Debug, Clone)]
pub struct Pool {
    addr: SocketAddr,
    idle: Arc<Mutex<Vec<Idle>>>,
    idle_timeout: Duration,
    connect_timeout: Duration,
}

#[derive(Debug)]
struct Idle {
    tx: SendRequest<Body>,
    since: Instant,
}

/// Why a request could not be sent.
#[derive(Debug)]
pub enum SendError {
    /// No connection to the upstream could be made.
    Connect(std::io::Error),
    /// The upstream connection failed while the request was under way.
    Http(hyper::Error),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Connect(e) => write!(f, "connect: {e}"),
            SendError::Http(e) => {
                write!(f, "{e}")?;
                let mut source = std::error::Error::source(e);
                while let Some(cause) = source {
                    write!(f, ": {cause}")?;
                    source = cause.source();
                }
                Ok(())
            }
        }
    }
}

/// A connection whose response is being read; back to its pool once the body has ended.
#[derive(Debug)]
pub struct Reuse {
    tx: SendRequest<Body>,
    idle: Arc<Mutex<Vec<Idle>>>,
}

impl Reuse {
    /// Returns the connection to its pool (call once the response body has ended).
    pub fn release(self) {
        if self.tx.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() >= MAX_IDLE {
            return;
        }
        idle.push(Idle {
            tx: self.tx,
            since: now,
        });
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

    /// Sends `req` on an idle connection, or a new one, and returns the response head with the
    /// connection to [`Reuse::release`] when its body has ended.
    ///
    /// `upgrade` requests always get a new connection, which stays theirs: a 101 answer turns it
    /// into the tunnel.
    pub async fn send(
        &self,
        mut req: Request<Body>,
        upgrade: bool,
    ) -> Result<(Response<Incoming>, Option<Reuse>), SendError> {
        if upgrade {
            let mut tx = self.connect(true).await?;
            let resp = tx.send_request(req).await.map_err(SendError::Http)?;
            return Ok((resp, None));
        }
        let mut fresh_only = false;
        loop {
            let pooled = if fresh_only {
                None
            } else {
                self.checkout().await
            };
            let (mut tx, fresh, replay) = match pooled {
                Some((tx, idle_for)) => {
                    let replay = (idle_for >= REPLAY_AFTER_IDLE)
                        .then(|| replayable(&req))
                        .flatten();
                    (tx, false, replay)
                }
                None => (self.connect(false).await?, true, None),
            };
            match tx.try_send_request(req).await {
                Ok(resp) => {
                    let reuse = Reuse {
                        tx,
                        idle: self.idle.clone(),
                    };
                    return Ok((resp, Some(reuse)));
                }
                Err(mut e) => match (e.take_message(), replay) {
                    // Closed before the request was written: try again on another connection.
                    (Some(again), _) if !fresh => {
                        debug!(upstream = %self.addr, "pooled connection was closed, retrying");
                        req = again;
                    }
                    // Closed under a request that is safe to repeat: once more, on a new one.
                    (None, Some(again)) => {
                        debug!(upstream = %self.addr, error = %e.error(), "pooled connection failed, retrying on a new one");
                        req = again;
                        fresh_only = true;
                    }
                    _ => return Err(SendError::Http(e.into_error())),
                },
            }
        }
    }

    /// The newest idle connection that is still open and ready, and how long it was idle.
    async fn checkout(&self) -> Option<(SendRequest<Body>, Duration)> {
        loop {
            let Idle { mut tx, since } = {
                let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                let newest = idle.pop()?;
                if newest.since.elapsed() > self.idle_timeout {
                    // Everything older is older still.
                    idle.clear();
                    return None;
                }
                newest
            };
            if tx.is_closed() {
                continue;
            }
            // Its last response has ended; the connection is ready as soon as hyper has seen
            // that, or it has closed.
            if tx.is_ready() || tx.ready().await.is_ok() {
                return Some((tx, since.elapsed()));
            }
        }
    }

    /// A new connection, driven by a task of its own on this worker.
    async fn connect(&self, upgrades: bool) -> Result<SendRequest<Body>, SendError> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(self.addr))
            .await
            .map_err(|_| {
                SendError::Connect(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connect timed out",
                ))
            })?
            .map_err(SendError::Connect)?;
        stream.set_nodelay(true).map_err(SendError::Connect)?;
        let (tx, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(SendError::Http)?;
        let addr = self.addr;
        if upgrades {
            tokio::spawn(async move {
                if let Err(e) = conn.with_upgrades().await {
                    debug!(upstream = %addr, error = %e, "upstream connection ended");
                }
            });
        } else {
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    debug!(upstream = %addr, error = %e, "upstream connection ended");
                }
            });
        }
        Ok(tx)
    }
}

/// A copy of `req` to send again, if repeating it is safe: an idempotent method (RFC 9110
/// §9.2.2) and no body.
fn replayable(req: &Request<Body>) -> Option<Request<Body>> {
    use http::Method;
    use http_body::Body as _;
    let idempotent = matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    );
    if !idempotent || !req.body().is_end_stream() {
        return None;
    }
    let mut copy = Request::new(Body::empty());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    Some(copy)
}
