//! Raw TCP relaying for `tcp` and `tls-passthrough` listeners: connect to the route's upstream,
//! optionally announce the client with a PROXY protocol header, then copy bytes both ways.
//!
//! The bytes are never looked at, except the ClientHello of a `tls-passthrough` connection,
//! read (not answered) to find the name it asks for ([`client_hello`]). Starting the backend,
//! waiting for it and counting the connection as activity are the caller's
//! ([`crate::server`]); this module only moves bytes.
//!
//! - [`client_hello`]: the SNI of a ClientHello, read within a timeout.
//! - [`proxy_protocol`]: the PROXY v1/v2 header.
//! - [`copy`]: both directions with half-close, buffered, switching to [`splice`] for bulk.

pub mod client_hello;
mod copy;
pub mod proxy_protocol;
#[cfg(target_os = "linux")]
mod splice;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::trace;

use crate::config::ProxyProtocol;

/// An upstream connect that takes longer than this fails (the backend was just found ready).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads the TLS ClientHello from `stream` without consuming it for the upstream: returns the
/// name it asks for (SNI) and the bytes read, which must be sent on first.
pub async fn read_client_hello(
    stream: &TcpStream,
    timeout: Duration,
) -> std::io::Result<(Option<String>, Vec<u8>)> {
    client_hello::read(stream, timeout).await
}

/// Connects to `upstream`, sends the PROXY header if asked and `initial`, then copies bytes
/// both ways until both sides have closed.
pub async fn relay(
    mut client: TcpStream,
    peer: SocketAddr,
    upstream: SocketAddr,
    proxy_protocol: Option<ProxyProtocol>,
    initial: &[u8],
) -> std::io::Result<()> {
    let mut server = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(upstream))
        .await
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("upstream {upstream} did not accept within {CONNECT_TIMEOUT:?}"),
            )
        })??;
    server.set_nodelay(true)?;
    // The header and the bytes already read go out together, in one segment when they fit.
    let mut first = match proxy_protocol {
        Some(version) => proxy_protocol::header(version, peer, client.local_addr()?),
        None => Vec::new(),
    };
    first.extend_from_slice(initial);
    server.write_all(&first).await?;
    let (up, down) = copy::bidirectional(&mut client, &mut server).await?;
    trace!(peer = %peer, upstream = %upstream, up, down, "tcp relay done");
    Ok(())
}
