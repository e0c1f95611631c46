//! A client connection's header and keep-alive timeouts, on one lazily re-armed timer.
//!
//! - `header_timeout`: a request head must be complete this long after its first bytes arrive;
//!   otherwise the connection is closed.
//! - `keepalive_timeout`: a connection with no request in flight, and no request head arriving,
//!   is shut down gracefully after this long.
//! - `body_timeout`: a request body whose next bytes have not come for this long (HTTP/1), or a
//!   connection whose writes have been blocked this long (the client reads nothing): the
//!   connection is closed.
//!
//! hyper's own header timer is armed and disarmed on every request: an allocation, a timer-wheel
//! insert and removal, and at times a wake-up of the worker's event loop. Here the reads only
//! note when a head starts ([`Watched`]), and a single timer per connection fires at most once
//! per `header_timeout`. Each check re-arms it no later than `header_timeout` ahead, so a head
//! that starts after a check is still caught on time.
//!
//! An HTTP/2 connection (its first bytes are the connection preface) has no per-head clock:
//! frames arrive between requests without starting one, and hyper's h2 limits apply.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::activity::{Activity, ActivityGuard};
use crate::stall::Stall;

/// The connection preface of HTTP/2 starts with these bytes; no HTTP/1 method does.
const H2_PREFACE_START: &[u8] = b"PRI ";

/// Why a connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cut {
    /// A request head not complete `header_timeout` after its first bytes.
    Head,
    /// A request body that sent nothing for `body_timeout`.
    Body,
    /// A response the client has not read for `body_timeout`.
    Unread,
}

impl Cut {
    /// For the log line.
    pub(super) fn reason(self) -> &'static str {
        match self {
            Cut::Head => "request head not complete within header_timeout",
            Cut::Body => "request body sent nothing for body_timeout",
            Cut::Unread => "response not read for body_timeout",
        }
    }
}

/// The timeouts that apply to a connection.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub(super) header: Duration,
    pub(super) keepalive: Duration,
    pub(super) body: Duration,
}

/// What a timer check decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// A timeout passed that ends the connection at once.
    Close(Cut),
    /// Idle for `keepalive_timeout`: shut down gracefully.
    Shutdown,
    /// Nothing to do yet: look again at this time.
    CheckAt(Instant),
}

/// The per-connection state the timeouts are decided from.
#[derive(Debug)]
pub(super) struct Clock {
    opened: Instant,
    /// Nanoseconds after `opened`, plus one, at which the first bytes of a request head arrived
    /// that has not been completed yet; 0 when there is none.
    head_since: AtomicU64,
    /// HTTP/2: no per-head clock.
    multiplexed: AtomicBool,
    /// Requests of this connection in flight (their responses not yet fully sent).
    requests: std::sync::Arc<Activity>,
    /// A request body waiting for the client's next bytes.
    pub(super) reading: std::sync::Arc<Stall>,
    /// Writes to the client blocked.
    writing: Stall,
}

impl Clock {
    /// The clock of a connection opened now.
    pub(super) fn new() -> Clock {
        let opened = Instant::now();
        Clock {
            opened,
            head_since: AtomicU64::new(0),
            multiplexed: AtomicBool::new(false),
            requests: Activity::new(),
            reading: std::sync::Arc::new(Stall::new(opened)),
            writing: Stall::new(opened),
        }
    }

    /// A request head is complete: its clock stops, and the request counts as in flight until
    /// the guard is dropped (with the end of its response).
    pub(super) fn head_complete(&self) -> ActivityGuard {
        self.head_since.store(0, Ordering::Relaxed);
        self.requests.enter()
    }

    /// Bytes were read from the client.
    fn on_read(&self, bytes: &[u8], first: bool) {
        if first && bytes.starts_with(H2_PREFACE_START) {
            self.multiplexed.store(true, Ordering::Relaxed);
        }
        if self.head_since.load(Ordering::Relaxed) == 0
            && self.requests.active() == 0
            && !self.multiplexed.load(Ordering::Relaxed)
        {
            let nanos = u64::try_from(self.opened.elapsed().as_nanos()).unwrap_or(u64::MAX - 1);
            self.head_since.store(nanos + 1, Ordering::Relaxed);
        }
    }

    /// A write to the client returned: blocked, or through.
    fn wrote(&self, result: &Poll<io::Result<usize>>) {
        match result {
            Poll::Pending => self.writing.waiting(),
            Poll::Ready(_) => self.writing.progressed(),
        }
    }

    fn head_since(&self) -> Option<Instant> {
        match self.head_since.load(Ordering::Relaxed) {
            0 => None,
            n => Some(self.opened + Duration::from_nanos(n - 1)),
        }
    }

    /// Decides at `now` what the timeouts call for.
    pub(super) fn check(&self, now: Instant, limits: Limits) -> Verdict {
        let multiplexed = self.multiplexed.load(Ordering::Relaxed);
        // The longest the timer may sleep: a head or a stall that begins just after this check
        // must still be caught on time.
        let latest = now
            + limits.body.min(if multiplexed {
                limits.keepalive
            } else {
                limits.header
            });
        let mut next = latest;
        let stalls = [
            (Some(&self.writing), Cut::Unread),
            ((!multiplexed).then_some(&*self.reading), Cut::Body),
        ];
        for (stall, cut) in stalls {
            if let Some(since) = stall.and_then(Stall::since) {
                let at = since + limits.body;
                if at <= now {
                    return Verdict::Close(cut);
                }
                next = next.min(at);
            }
        }
        if !multiplexed && let Some(since) = self.head_since() {
            let at = since + limits.header;
            return if at <= now {
                Verdict::Close(Cut::Head)
            } else {
                Verdict::CheckAt(next.min(at))
            };
        }
        match self.requests.idle_since() {
            Some(idle) => {
                let at = idle.max(self.opened) + limits.keepalive;
                if at <= now {
                    Verdict::Shutdown
                } else {
                    Verdict::CheckAt(next.min(at))
                }
            }
            // Busy: the stalls above are all that can end it.
            None => Verdict::CheckAt(next),
        }
    }
}

/// How much the first read takes at least. The protocol sniffing in front of hyper reads the
/// first 24 bytes only (the length of the HTTP/2 preface); without this the rest of the first
/// request would take a second read system call on every new connection.
const FIRST_READ: usize = 4096;

/// A client stream that tells its [`Clock`] when a request head starts arriving.
pub(super) struct Watched<I> {
    io: I,
    clock: std::sync::Arc<Clock>,
    first: bool,
    /// Bytes of the first read that did not fit the reader's buffer, and how many of them
    /// were handed out.
    ahead: Vec<u8>,
    ahead_pos: usize,
}

impl<I> Watched<I> {
    pub(super) fn new(io: I, clock: std::sync::Arc<Clock>) -> Watched<I> {
        Watched {
            io,
            clock,
            first: true,
            ahead: Vec::new(),
            ahead_pos: 0,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.ahead_pos < this.ahead.len() {
            let n = buf.remaining().min(this.ahead.len() - this.ahead_pos);
            buf.put_slice(&this.ahead[this.ahead_pos..this.ahead_pos + n]);
            this.ahead_pos += n;
            if this.ahead_pos == this.ahead.len() {
                this.ahead = Vec::new();
                this.ahead_pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        if this.first && buf.remaining() < FIRST_READ {
            let mut ahead = vec![0; FIRST_READ];
            let mut into = ReadBuf::new(&mut ahead);
            std::task::ready!(Pin::new(&mut this.io).poll_read(cx, &mut into))?;
            let n = into.filled().len();
            if n > 0 {
                this.first = false;
                this.clock.on_read(&ahead[..n], true);
                let fits = buf.remaining().min(n);
                buf.put_slice(&ahead[..fits]);
                ahead.truncate(n);
                (this.ahead, this.ahead_pos) = (ahead, fits);
            }
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result
            && buf.filled().len() > before
        {
            let first = std::mem::replace(&mut this.first, false);
            this.clock.on_read(&buf.filled()[before..], first);
        }
        result
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.io).poll_write(cx, buf);
        self.clock.wrote(&written);
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.clock.wrote(&written);
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: Duration = Duration::from_secs(30);
    const KEEPALIVE: Duration = Duration::from_secs(60);
    const LIMITS: Limits = Limits {
        header: HEADER,
        keepalive: KEEPALIVE,
        body: Duration::from_secs(45),
    };

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_is_shut_down_after_keepalive_checking_every_header_timeout() {
        let clock = Clock::new();
        let opened = Instant::now();
        assert_eq!(
            clock.check(opened, LIMITS),
            Verdict::CheckAt(opened + HEADER)
        );
        assert_eq!(
            clock.check(opened + HEADER, LIMITS),
            Verdict::CheckAt(opened + KEEPALIVE)
        );
        assert_eq!(clock.check(opened + KEEPALIVE, LIMITS), Verdict::Shutdown);
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_that_starts_is_timed_from_its_first_bytes_and_stops_when_complete() {
        let clock = Clock::new();
        let opened = Instant::now();
        tokio::time::advance(Duration::from_secs(10)).await;
        clock.on_read(b"GET / HT", true);
        let started = opened + Duration::from_secs(10);
        // The check armed at open (for opened + 30s) finds the head and waits for its deadline.
        assert_eq!(
            clock.check(opened + HEADER, LIMITS),
            Verdict::CheckAt(started + HEADER)
        );
        assert_eq!(
            clock.check(started + HEADER, LIMITS),
            Verdict::Close(Cut::Head)
        );
        // Completed in time instead: the request is in flight, the connection is not idle.
        let request = clock.head_complete();
        let now = started + HEADER;
        assert_eq!(clock.check(now, LIMITS), Verdict::CheckAt(now + HEADER));
        // Bytes read while a request is in flight (its body) start no head clock.
        clock.on_read(b"body", false);
        assert_eq!(clock.head_since(), None);
        drop(request);
    }

    #[tokio::test(start_paused = true)]
    async fn the_keepalive_clock_restarts_when_the_last_response_ends() {
        let clock = Clock::new();
        let opened = Instant::now();
        clock.on_read(b"GET / HTTP/1.1\r\n\r\n", true);
        let request = clock.head_complete();
        tokio::time::advance(Duration::from_secs(50)).await;
        drop(request);
        let done = opened + Duration::from_secs(50);
        let next = opened + KEEPALIVE + HEADER;
        assert_eq!(
            clock.check(opened + KEEPALIVE, LIMITS),
            Verdict::CheckAt(next)
        );
        assert_eq!(
            clock.check(next, LIMITS),
            Verdict::CheckAt(done + KEEPALIVE)
        );
        assert_eq!(clock.check(done + KEEPALIVE, LIMITS), Verdict::Shutdown);
    }

    #[tokio::test]
    async fn the_first_read_takes_the_whole_request_and_hands_it_out_in_small_pieces() {
        use tokio::io::AsyncReadExt;
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let request: Vec<u8> = (0..3000u32).map(|i| b'a' + (i % 26) as u8).collect();
        tokio::io::AsyncWriteExt::write_all(&mut client, &request)
            .await
            .unwrap();
        drop(client);
        let clock = std::sync::Arc::new(Clock::new());
        let mut watched = Watched::new(server, clock.clone());
        let mut got = Vec::new();
        let mut small = [0u8; 24];
        let n = watched.read(&mut small).await.unwrap();
        got.extend_from_slice(&small[..n]);
        // One read from the stream took everything; the reader gets it in its own sizes.
        assert_eq!(watched.ahead.len(), 3000);
        assert!(clock.head_since().is_some());
        watched.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, request);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_request_body_or_unread_response_is_cut_at_body_timeout() {
        let clock = Clock::new();
        let opened = Instant::now();
        clock.on_read(b"POST / HTTP/1.1\r\n\r\n", true);
        let _request = clock.head_complete();
        clock.reading.waiting();
        // Busy, but the stall bounds the next look.
        assert_eq!(
            clock.check(opened, LIMITS),
            Verdict::CheckAt(opened + HEADER)
        );
        assert_eq!(
            clock.check(opened + HEADER, LIMITS),
            Verdict::CheckAt(opened + LIMITS.body)
        );
        assert_eq!(
            clock.check(opened + LIMITS.body, LIMITS),
            Verdict::Close(Cut::Body)
        );
        clock.reading.progressed();
        tokio::time::advance(LIMITS.body).await;
        clock.wrote(&Poll::Pending);
        let now = opened + LIMITS.body;
        assert_eq!(clock.check(now, LIMITS), Verdict::CheckAt(now + HEADER));
        assert_eq!(
            clock.check(now + LIMITS.body, LIMITS),
            Verdict::Close(Cut::Unread)
        );
        clock.wrote(&Poll::Ready(Ok(10)));
        let later = now + LIMITS.body;
        assert_eq!(clock.check(later, LIMITS), Verdict::CheckAt(later + HEADER));
    }

    #[tokio::test(start_paused = true)]
    async fn http2_connections_have_no_head_clock() {
        let clock = Clock::new();
        let opened = Instant::now();
        clock.on_read(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", true);
        clock.on_read(b"\x00\x00\x00\x04", false);
        assert_eq!(clock.head_since(), None);
        assert_eq!(
            clock.check(opened, LIMITS),
            Verdict::CheckAt(opened + LIMITS.body)
        );
    }
}
