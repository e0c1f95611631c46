//! Copying bytes both ways between two connected sockets, with half-close: when one side ends
//! its stream, the other side's write half is shut down, and the copy ends when both have.
//!
//! Each direction starts with a small buffer and `read`/`write`, the cheapest path for
//! request/response traffic. A read that fills the whole buffer marks a bulk transfer: on Linux
//! that direction then moves to `splice(2)` ([`super::splice`]) for the rest of the connection.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};
#[cfg(target_os = "linux")]
use tracing::debug;

/// Buffer of one direction before it switches to splice (or for good, without splice).
const BUFFER: usize = 16 * 1024;

/// Copies `a` → `b` and `b` → `a` until both directions have ended; returns the bytes moved
/// each way. An error in either direction ends both.
pub async fn bidirectional(a: &mut TcpStream, b: &mut TcpStream) -> io::Result<(u64, u64)> {
    // The halves' poll_read and poll_write (unlike try_read and try_write) skip the extra
    // syscall that would only return EAGAIN after a short read or write.
    let (mut a_read, mut a_write) = a.split();
    let (mut b_read, mut b_write) = b.split();
    tokio::try_join!(
        one_way(&mut a_read, &mut b_write),
        one_way(&mut b_read, &mut a_write)
    )
}

/// Copies `src` → `dst` until `src` ends, then shuts down `dst`'s write half.
async fn one_way(src: &mut ReadHalf<'_>, dst: &mut WriteHalf<'_>) -> io::Result<u64> {
    let total = match buffered(src, dst, cfg!(target_os = "linux")).await? {
        Stop::Ended(n) => n,
        Stop::Bulk(n) => n + spliced(src, dst).await?,
    };
    match dst.shutdown().await {
        // The peer is gone already: the other direction sees that on its own.
        Err(e) if e.kind() != io::ErrorKind::NotConnected => Err(e),
        _ => Ok(total),
    }
}

/// Why [`buffered`] returned, and how many bytes it had copied.
enum Stop {
    /// `src` reached end of stream.
    Ended(u64),
    /// A read filled the buffer: the direction carries a bulk transfer.
    Bulk(u64),
}

impl Stop {
    fn bytes(&self) -> u64 {
        match *self {
            Stop::Ended(n) | Stop::Bulk(n) => n,
        }
    }
}

/// Copies through a buffer until `src` ends or, if `until_bulk`, until a read fills the buffer.
async fn buffered(
    src: &mut ReadHalf<'_>,
    dst: &mut WriteHalf<'_>,
    until_bulk: bool,
) -> io::Result<Stop> {
    // Not zeroed: read_buf only ever exposes what it read.
    let mut buf = Vec::with_capacity(BUFFER);
    let mut total = 0u64;
    loop {
        buf.clear();
        let n = src.read_buf(&mut buf).await?;
        if n == 0 {
            return Ok(Stop::Ended(total));
        }
        dst.write_all(&buf).await?;
        total += n as u64;
        if until_bulk && n == BUFFER {
            return Ok(Stop::Bulk(total));
        }
    }
}

/// The rest of the stream through a pipe, or through a buffer if no pipe can be had.
#[cfg(target_os = "linux")]
async fn spliced(src: &mut ReadHalf<'_>, dst: &mut WriteHalf<'_>) -> io::Result<u64> {
    match super::splice::Pipe::new() {
        Ok(pipe) => pipe.pump(src.as_ref(), dst.as_ref()).await,
        Err(e) => {
            debug!(error = %e, "no pipe for splice: copying through a buffer");
            Ok(buffered(src, dst, false).await?.bytes())
        }
    }
}

#[cfg(not(target_os = "linux"))]
async fn spliced(src: &mut ReadHalf<'_>, dst: &mut WriteHalf<'_>) -> io::Result<u64> {
    Ok(buffered(src, dst, false).await?.bytes())
}
