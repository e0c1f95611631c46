//! Forwarding to upstreams: the pooled client of a ready backend and the body type rouse answers
//! with.
//!
//! [`http`] rewrites and forwards one request. This file holds what the rest of the crate needs
//! to name: [`Upstream`] (where a ready route forwards to) and [`Body`] (proxied or synthetic).

pub mod http;

use std::cell::Cell;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::activity::ActivityGuard;

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
    pools: Box<[Client<HttpConnector, Incoming>]>,
}

impl Upstream {
    /// Pools of HTTP/1.1 connections to `addr`, one for each of `workers` threads.
    pub fn new(addr: SocketAddr, workers: usize) -> Upstream {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let pools = (0..workers.max(1))
            .map(|_| {
                Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(POOL_IDLE_TIMEOUT)
                    .pool_timer(TokioTimer::new())
                    .timer(TokioTimer::new())
                    .build(connector.clone())
            })
            .collect();
        Upstream {
            addr,
            authority: addr
                .to_string()
                .parse()
                .expect("a socket address is a valid authority"),
            pools,
        }
    }

    /// The calling worker's pool.
    fn client(&self) -> &Client<HttpConnector, Incoming> {
        &self.pools[WORKER_ID.with(Cell::get) % self.pools.len()]
    }

    /// The address requests are forwarded to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
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
