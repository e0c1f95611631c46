//! Forwarding to upstreams: the connection pools of a ready backend and the body type rouse
//! answers with.
//!
//! [`http`] rewrites and forwards one request. HTTP/1.1 upstreams are spoken to by `h1`, from
//! the request's own task, over connections kept by `pool` (one pool per worker thread); h2c and
//! h2 upstreams, and upgrade requests, go through hyper's client. This file holds what the rest
//! of the crate needs to name: [`Upstream`] (where a ready route forwards to) and [`Body`]
//! (streamed or synthetic).

mod h1;
pub mod http;
mod pool;
pub mod tcp;

use std::cell::Cell;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
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
use crate::stall::Stall;

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

/// The calling thread's worker number (0 on threads that are not workers).
pub fn worker_id() -> usize {
    WORKER_ID.with(Cell::get)
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
    pools: Pools,
}

/// One pool per worker thread.
#[derive(Debug)]
enum Pools {
    /// HTTP/1.1: connections used one request at a time.
    Http1(Box<[pool::Pool]>),
    /// h2c and h2: multiplexed connections.
    Multiplexed(Box<[Client<FixedConnector, Body>]>),
}

impl Upstream {
    /// Pools of connections to `addr` speaking `protocol`, one for each of `workers` threads;
    /// `tls` is the client configuration for `h2` upstreams.
    pub fn new(
        addr: SocketAddr,
        workers: usize,
        protocol: UpstreamProtocol,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Upstream {
        let workers = workers.max(1);
        let pools = match protocol {
            UpstreamProtocol::Http1 => Pools::Http1(
                (0..workers)
                    .map(|_| pool::Pool::new(addr, POOL_IDLE_TIMEOUT, CONNECT_TIMEOUT))
                    .collect(),
            ),
            UpstreamProtocol::H2c | UpstreamProtocol::H2 => {
                let connector = FixedConnector {
                    addr,
                    tls: tls.map(tokio_rustls::TlsConnector::from),
                };
                Pools::Multiplexed(
                    (0..workers)
                        .map(|_| {
                            Client::builder(TokioExecutor::new())
                                .pool_idle_timeout(POOL_IDLE_TIMEOUT)
                                .pool_timer(TokioTimer::new())
                                .timer(TokioTimer::new())
                                .http2_only(true)
                                .build(connector.clone())
                        })
                        .collect(),
                )
            }
        };
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

    /// Sends `req` over one of the calling worker's connections; `upgrade` asks for a
    /// connection of its own that can become a tunnel.
    async fn send(
        &self,
        req: ::http::Request<Body>,
        upgrade: bool,
    ) -> Result<::http::Response<Received>, String> {
        let worker = WORKER_ID.with(Cell::get);
        match &self.pools {
            Pools::Http1(pools) => {
                let pool = &pools[worker % pools.len()];
                if upgrade {
                    pool.send_upgrade(req)
                        .await
                        .map(|resp| resp.map(Received::Hyper))
                        .map_err(|e| e.to_string())
                } else {
                    pool.send(req)
                        .await
                        .map(|resp| resp.map(Received::Inline))
                        .map_err(|e| e.to_string())
                }
            }
            Pools::Multiplexed(clients) => clients[worker % clients.len()]
                .request(req)
                .await
                .map(|resp| resp.map(Received::Hyper))
                .map_err(|e| http::error_chain(&e)),
        }
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
#[derive(Clone)]
pub struct FixedConnector {
    addr: SocketAddr,
    /// For `h2` upstreams: TLS, with the request's host as the server name.
    tls: Option<tokio_rustls::TlsConnector>,
}

impl std::fmt::Debug for FixedConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FixedConnector")
            .field("addr", &self.addr)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl tower_service::Service<::http::Uri> for FixedConnector {
    type Response = TokioIo<UpstreamIo>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<TokioIo<UpstreamIo>>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: ::http::Uri) -> Self::Future {
        let addr = self.addr;
        let tls = self.tls.clone();
        Box::pin(async move {
            let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
                .await
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
                })??;
            stream.set_nodelay(true)?;
            let Some(tls) = tls else {
                return Ok(TokioIo::new(UpstreamIo::Plain(stream)));
            };
            // The upstream's certificate is checked against the site's name, not its address.
            let host = uri
                .host()
                .unwrap_or_default()
                .trim_matches(['[', ']'])
                .to_owned();
            let name = rustls::pki_types::ServerName::try_from(host).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("no TLS name for the upstream: {e}"),
                )
            })?;
            let stream = tokio::time::timeout(CONNECT_TIMEOUT, tls.connect(name, stream))
                .await
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "tls handshake timed out")
                })??;
            Ok(TokioIo::new(UpstreamIo::Tls(Box::new(stream))))
        })
    }
}

/// A connection to an upstream: plain TCP, or TLS for `h2` upstreams.
pub enum UpstreamIo {
    /// Cleartext.
    Plain(TcpStream),
    /// TLS.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl hyper_util::client::legacy::connect::Connection for UpstreamIo {
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        let connected = hyper_util::client::legacy::connect::Connected::new();
        match self {
            UpstreamIo::Tls(tls) if tls.get_ref().1.alpn_protocol() == Some(b"h2") => {
                connected.negotiated_h2()
            }
            _ => connected,
        }
    }
}

impl tokio::io::AsyncRead for UpstreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for UpstreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamIo::Plain(s) => s.is_write_vectored(),
            UpstreamIo::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The TLS client configuration for a route whose upstream speaks `h2`: ALPN `h2`, and the
/// upstream's certificate verified against `upstream_ca` or the system's trust store.
pub fn upstream_tls(
    route: &crate::config::RouteConfig,
) -> Result<Option<Arc<rustls::ClientConfig>>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    if route.upstream_protocol != UpstreamProtocol::H2 {
        return Ok(None);
    }
    let mut roots = rustls::RootCertStore::empty();
    match &route.upstream_ca {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    format!(
                        "route \"{}\": upstream_ca {}: {e}",
                        route.name,
                        path.display()
                    )
                })?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!(
                    "route \"{}\": upstream_ca {} holds no usable CA certificate",
                    route.name,
                    path.display()
                ));
            }
        }
        None => {
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        }
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Some(Arc::new(config)))
}

/// What keeps a forwarded request counted until its response body has been sent.
#[derive(Debug)]
pub struct InFlight {
    /// Counts the request toward its route's activity (not for a passive request).
    pub route: Option<ActivityGuard>,
    /// Counts the request toward its client connection's activity.
    pub connection: ActivityGuard,
}

/// Errors of a streamed body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An upstream's response body as it arrives.
#[derive(Debug)]
pub enum Received {
    /// From hyper's client (h2 upstreams, upgrades).
    Hyper(Incoming),
    /// From an HTTP/1.1 upstream, read by the request's own task.
    Inline(h1::ResponseBody),
}

/// A request or response body: streamed from a peer, or a small synthetic one.
#[derive(Debug)]
pub struct Body {
    kind: Kind,
    _in_flight: Option<InFlight>,
    /// A client's request body: marks how long its next bytes have been awaited.
    stall: Option<Waiting>,
}

/// Clears its stall when the body goes (a wait nobody polls any more is no wait).
#[derive(Debug)]
struct Waiting(Arc<Stall>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.progressed();
    }
}

#[derive(Debug)]
enum Kind {
    Full(Option<Bytes>),
    Incoming(Incoming),
    Inline(h1::ResponseBody),
}

impl Body {
    /// A complete body.
    pub fn full(bytes: Bytes) -> Body {
        Body {
            kind: Kind::Full((!bytes.is_empty()).then_some(bytes)),
            _in_flight: None,
            stall: None,
        }
    }

    /// An empty body.
    pub fn empty() -> Body {
        Body::full(Bytes::new())
    }

    /// A client's request body, streamed to the upstream; `stall` is marked while it waits for
    /// the client.
    pub(crate) fn incoming(body: Incoming, stall: &Arc<Stall>) -> Body {
        let stall = (!http_body::Body::is_end_stream(&body)).then(|| Waiting(stall.clone()));
        Body {
            kind: Kind::Incoming(body),
            _in_flight: None,
            stall,
        }
    }

    /// An upstream's response body, streamed; `in_flight` is released when it ends or is
    /// dropped.
    pub(crate) fn received(body: Received, in_flight: Option<InFlight>) -> Body {
        let kind = match body {
            Received::Hyper(body) => Kind::Incoming(body),
            Received::Inline(body) => Kind::Inline(body),
        };
        Body {
            kind,
            _in_flight: in_flight,
            stall: None,
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match &mut this.kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Incoming(body) => {
                let polled = Pin::new(body).poll_frame(cx).map_err(Into::into);
                if let Some(Waiting(stall)) = &this.stall {
                    match polled {
                        Poll::Pending => stall.waiting(),
                        Poll::Ready(_) => stall.progressed(),
                    }
                }
                polled
            }
            Kind::Inline(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Incoming(body) => body.is_end_stream(),
            Kind::Inline(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Incoming(body) => body.size_hint(),
            Kind::Inline(body) => body.size_hint(),
        }
    }
}
