//! Forwarding to upstreams: the pooled client of a ready backend and the body type rouse answers
//! with.
//!
//! [`http`] rewrites and forwards one request. This file holds what the rest of the crate needs
//! to name: [`Upstream`] (where a ready route forwards to) and [`Body`] (proxied or synthetic).

pub mod http;
pub mod tcp;

use std::cell::Cell;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::activity::ActivityGuard;
use crate::config::UpstreamProtocol;

/// Idle pooled upstream connections are closed after this.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Upstream connects that take longer than this fail (they are on the same host, usually).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

thread_local! {
    /// Which worker thread this is; selects that worker's connection pool.
    static WORKER_ID: Cell<usize> = const { Cell::new(0) };
}

/// Marks the calling thread as worker `id`, so it uses pool `id` of every [`Upstream`].
pub fn set_worker_id(id: usize) {
    WORKER_ID.with(|w| w.set(id));
}

/// A ready backend's address and its connection pools, one per worker thread.
///
/// Each worker has its own pool so that an upstream connection is only ever driven by the thread
/// that uses it. A new `Upstream` is made each time a backend becomes ready, so connections
/// pooled to a backend that has since stopped are dropped with it, not handed to a new request.
#[derive(Debug)]
pub struct Upstream {
    addr: SocketAddr,
    authority: ::http::uri::Authority,
    protocol: UpstreamProtocol,
    pools: Box<[Client<FixedConnector, Body>]>,
}

impl Upstream {
    /// Pools of connections to `addr` speaking `protocol`, one for each of `workers` threads.
    pub fn new(addr: SocketAddr, workers: usize, protocol: UpstreamProtocol) -> Upstream {
        let pools = (0..workers.max(1))
            .map(|_| {
                Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(POOL_IDLE_TIMEOUT)
                    .pool_timer(TokioTimer::new())
                    .timer(TokioTimer::new())
                    .http2_only(protocol == UpstreamProtocol::H2c)
                    .build(FixedConnector { addr })
            })
            .collect();
        Upstream {
            addr,
            authority: addr
                .to_string()
                .parse()
                .expect("a socket address is a valid authority"),
            protocol,
            pools,
        }
    }

    /// The calling worker's pool.
    fn client(&self) -> &Client<FixedConnector, Body> {
        &self.pools[WORKER_ID.with(Cell::get) % self.pools.len()]
    }

    /// The address requests are forwarded to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Connects to one fixed address, whatever the request's URI names.
///
/// HTTP/2 carries the site in `:authority`, which the client takes from the URI; so the URI keeps
/// the client's host while every connection still goes to the configured upstream.
#[derive(Debug, Clone, Copy)]
pub struct FixedConnector {
    addr: SocketAddr,
}

impl tower_service::Service<::http::Uri> for FixedConnector {
    type Response = TokioIo<TcpStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<TokioIo<TcpStream>>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: ::http::Uri) -> Self::Future {
        let addr = self.addr;
        Box::pin(async move {
            let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
                .await
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
                })??;
            stream.set_nodelay(true)?;
            Ok(TokioIo::new(stream))
        })
    }
}

/// What keeps a forwarded request counted until its response body has been sent.
#[derive(Debug)]
pub struct InFlight {
    /// Counts the request toward its route's activity.
    pub route: ActivityGuard,
    /// Counts the request toward its client connection's activity.
    pub connection: ActivityGuard,
}

/// A response body: streamed from an upstream, or a small synthetic one.
#[derive(Debug)]
pub struct Body {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Full(Option<Bytes>),
    Upstream {
        body: Incoming,
        _in_flight: Option<InFlight>,
    },
}

impl Body {
    /// A complete body.
    pub fn full(bytes: Bytes) -> Body {
        Body {
            kind: Kind::Full((!bytes.is_empty()).then_some(bytes)),
        }
    }

    /// An empty body.
    pub fn empty() -> Body {
        Body {
            kind: Kind::Full(None),
        }
    }

    /// An upstream's body, streamed; `in_flight` is released when it ends or is dropped.
    pub fn upstream(body: Incoming, in_flight: Option<InFlight>) -> Body {
        Body {
            kind: Kind::Upstream {
                body,
                _in_flight: in_flight,
            },
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match &mut self.get_mut().kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Upstream { body, .. } => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Upstream { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Upstream { body, .. } => body.size_hint(),
        }
    }
}
