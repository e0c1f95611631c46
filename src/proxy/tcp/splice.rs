//! Zero-copy relaying on Linux: `splice(2)` moves bytes socket → pipe → socket inside the
//! kernel, so a long transfer never passes through rouse's memory.
//!
//! A [`Pipe`] costs two descriptors and two syscalls to set up, and moves small messages no
//! faster than `read`/`write`; [`super::copy`] therefore switches to it only once a direction
//! shows it carries a bulk transfer.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use tokio::io::Interest;
use tokio::net::TcpStream;

/// Pipe capacity asked for: 256 KiB moves a GiB with a fifth less CPU than the default 64 KiB
/// (measured with benches/tcp.sh). Best effort: the kernel may refuse it.
const CAPACITY: usize = 256 * 1024;
/// Below this capacity (the kernel hands out one-page pipes to a user past
/// `pipe-user-pages-soft`) splice is not worth it: the caller copies instead.
const MIN_CAPACITY: usize = 64 * 1024;

/// A kernel pipe used as the buffer of one direction.
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Bytes asked of one fill: the pipe's capacity, so it is emptied into the destination
    /// before it is filled again.
    capacity: usize,
}

// === impl Pipe ===

impl Pipe {
    /// A non-blocking pipe; fails when out of descriptors or when the kernel only grants a
    /// small one (the caller then copies instead).
    pub fn new() -> io::Result<Pipe> {
        let mut fds: [RawFd; 2] = [-1; 2];
        // SAFETY: `fds` is a valid array of two descriptors for pipe2 to fill.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: fcntl on a descriptor we own; F_SETPIPE_SZ returns the capacity granted.
        let granted =
            match unsafe { libc::fcntl(fds[1], libc::F_SETPIPE_SZ, CAPACITY as libc::c_int) } {
                // SAFETY: as above; F_GETPIPE_SZ only reads the capacity.
                n if n < 0 => unsafe { libc::fcntl(fds[1], libc::F_GETPIPE_SZ) },
                n => n,
            };
        let capacity = usize::try_from(granted).unwrap_or(0);
        if capacity < MIN_CAPACITY {
            return Err(io::Error::other(format!(
                "pipe of {capacity} bytes is too small for splice"
            )));
        }
        Ok(Pipe {
            read,
            write,
            capacity,
        })
    }

    /// Moves bytes from `src` to `dst` until `src` reaches end of stream; returns how many.
    /// Does not shut `dst` down.
    pub async fn pump(&self, src: &TcpStream, dst: &TcpStream) -> io::Result<u64> {
        let mut total = 0u64;
        loop {
            let filled = loop {
                src.readable().await?;
                match src.try_io(Interest::READABLE, || {
                    splice(src.as_raw_fd(), self.write.as_raw_fd(), self.capacity)
                }) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
            };
            if filled == 0 {
                return Ok(total);
            }
            // The pipe is emptied completely before the next fill, so a fill's WouldBlock
            // always means the socket, never a full pipe.
            let mut left = filled;
            while left > 0 {
                dst.writable().await?;
                match dst.try_io(Interest::WRITABLE, || {
                    splice(self.read.as_raw_fd(), dst.as_raw_fd(), left)
                }) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => left -= n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
            }
            total += filled as u64;
        }
    }
}

/// One non-blocking `splice(2)` of up to `len` bytes from `from` to `to`.
fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: plain syscall on descriptors the caller keeps open for the call; null offsets
    // are required for sockets and pipes.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}
