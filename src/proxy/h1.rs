//! HTTP/1.1 to an upstream, spoken by the request's own task.
//!
//! hyper's client drives each connection from a task of its own and passes requests, responses
//! and body chunks to it over channels. For a proxy that forwards one request at a time to an
//! upstream on the same host, that hand-off was the largest part of rouse's own CPU time per
//! request (`perf`, see the README's benchmarks). Here the task that serves the client writes
//! the request head, reads the response head, and then reads the body as the client's
//! connection asks for it: no extra task, no channel, and header values are slices of the bytes
//! read, not copies.
//!
//! The codec is strict where a proxy must be (RFC 9112): a response with both
//! `Transfer-Encoding` and `Content-Length` is delimited by the former and its connection is not
//! reused; differing `Content-Length` values, a malformed chunk, or a head over [`MAX_HEAD`]
//! are errors; a connection is reused only when the response said nothing against it and ended
//! exactly where its framing said.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Frame, SizeHint};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::pool::Idle;

/// The largest response head accepted.
pub const MAX_HEAD: usize = 64 * 1024;
/// The most headers a response head may have.
const MAX_HEADERS: usize = 128;
/// How much is read at a time for a response body: the first read, and the most. Each read
/// that fills its room doubles the next (a large body then moves in few, large reads, as
/// the upstream can deliver it); a read that does not fill it tells tokio the socket is
/// drained, which lets an idle pooled connection be known open without a system call.
const FIRST_READ: usize = 64 * 1024;
const MAX_READ: usize = 512 * 1024;
/// The longest chunk-size line (with extensions) and the largest trailer section accepted.
const MAX_CHUNK_LINE: usize = 4096;

/// One connection to an upstream, with what has been read from it and not used yet.
#[derive(Debug)]
pub struct Conn {
    io: TcpStream,
    buf: BytesMut,
    /// Room made for the next body read; kept across responses, so a connection that carries
    /// large bodies keeps reading them in large pieces.
    read_size: usize,
}

/// Why an exchange failed.
#[derive(Debug)]
pub enum Error {
    /// The connection closed or was reset before any byte of a response arrived.
    NoResponse(io::Error),
    /// Reading or writing failed after the response had begun, or while sending the body.
    Io(io::Error),
    /// The upstream sent something that is not HTTP/1.1.
    Invalid(&'static str),
    /// Reading the request body from the client failed.
    RequestBody(super::BoxError),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::NoResponse(e) => write!(f, "connection closed before a response: {e}"),
            Error::Io(e) => write!(f, "{e}"),
            Error::Invalid(what) => write!(f, "invalid response from the upstream: {what}"),
            Error::RequestBody(e) => write!(f, "reading the request body from the client: {e}"),
        }
    }
}

impl std::error::Error for Error {}

/// How a body is delimited (RFC 9112 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body (HEAD, 1xx, 204, 304, or `Content-Length: 0`).
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the upstream closes the connection.
    Eof,
}

impl Conn {
    /// A connection over `io` with nothing read yet.
    pub fn new(io: TcpStream) -> Conn {
        Conn {
            io,
            buf: BytesMut::new(),
            read_size: FIRST_READ,
        }
    }

    /// Lets go of a large read buffer before the connection waits in a pool.
    pub fn shrink_idle(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 16 * 1024 {
            self.buf = BytesMut::new();
        }
    }

    /// Whether the upstream has closed this idle connection or sent something unasked.
    ///
    /// Costs no system call when the event loop has seen nothing on the connection since its
    /// last read drained it, which is the usual case; otherwise, or if `strict`, the kernel
    /// is asked.
    pub fn is_closed(&self, strict: bool) -> bool {
        if !self.buf.is_empty() {
            return true;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        if !strict && self.io.poll_read_ready(&mut cx).is_pending() {
            return false;
        }
        let mut probe = [0u8; 1];
        match self.io.try_read(&mut probe) {
            Err(e) => e.kind() != io::ErrorKind::WouldBlock,
            Ok(_) => true,
        }
    }

    /// Writes `head` and then `body`, reads the response head, and returns the response with
    /// a body that reads the rest from this connection.
    ///
    /// The response head is read while the body is being written, so an upstream that answers
    /// early (say, 413 to a large upload) is heard; the connection is then not reused.
    pub async fn exchange(
        mut self,
        head: &[u8],
        body: Option<RequestBody>,
        method: &Method,
    ) -> Result<(Response<()>, ResponseBody), Error> {
        if let Err(e) = self.io.write_all(head).await {
            return Err(Error::NoResponse(e));
        }
        let mut complete = true;
        let parsed = match body {
            None => read_head(&mut self.io, &mut self.buf, method).await,
            Some(body) => {
                let (mut reader, mut writer) = self.io.split();
                let read = read_head(&mut reader, &mut self.buf, method);
                let write = body.write_to(&mut writer);
                tokio::pin!(read, write);
                tokio::select! {
                    biased;
                    parsed = &mut read => {
                        complete = false;
                        parsed
                    }
                    written = &mut write => match written {
                        Ok(()) => read.await,
                        // The client's side failed: nothing more will come to send.
                        Err(e @ Error::RequestBody(_)) => Err(e),
                        // The upstream stopped reading; it may have answered first.
                        Err(e) => {
                            complete = false;
                            read.await.map_err(|_| e)
                        }
                    },
                }
            }
        };
        let (response, framing, keep_alive) = parsed?;
        let state = match framing {
            Framing::Empty => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Chunked(next_size()),
            Framing::Eof => State::Eof,
        };
        let mut body = ResponseBody {
            conn: Some(self),
            state,
            reusable: keep_alive && complete && framing != Framing::Eof,
            pool: None,
        };
        if body.state == State::Done {
            body.finish();
        }
        Ok((response, body))
    }
}

/// A request body to send after the head, as the head's framing says.
pub struct RequestBody {
    body: super::Body,
    chunked: bool,
}

impl RequestBody {
    async fn write_to<W: tokio::io::AsyncWrite + Unpin>(self, w: &mut W) -> Result<(), Error> {
        use http_body_util::BodyExt;
        let RequestBody { mut body, chunked } = self;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(Error::RequestBody)?;
            let Ok(data) = frame.into_data() else {
                continue; // trailers are not forwarded
            };
            if data.is_empty() {
                continue;
            }
            if chunked {
                let size = format!("{:x}\r\n", data.len());
                write_all_vectored(w, &[size.as_bytes(), &data, b"\r\n"]).await?;
            } else {
                w.write_all(&data).await.map_err(Error::Io)?;
            }
        }
        if chunked {
            w.write_all(b"0\r\n\r\n").await.map_err(Error::Io)?;
        }
        w.flush().await.map_err(Error::Io)
    }
}

async fn write_all_vectored<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    parts: &[&[u8]],
) -> Result<(), Error> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut done = 0;
    while done < total {
        let mut skip = done;
        let mut slices = Vec::with_capacity(parts.len());
        for part in parts {
            if skip >= part.len() {
                skip -= part.len();
                continue;
            }
            slices.push(io::IoSlice::new(&part[skip..]));
            skip = 0;
        }
        let n = w.write_vectored(&slices).await.map_err(Error::Io)?;
        if n == 0 {
            return Err(Error::Io(io::ErrorKind::WriteZero.into()));
        }
        done += n;
    }
    Ok(())
}

/// Serialises `req`'s head for an HTTP/1.1 upstream (origin-form target, headers as they are)
/// and says how its body must follow: `None` if it has none.
///
/// A body of unknown length (no `Content-Length`, as HTTP/2 clients may send) goes chunked.
pub fn encode_request(req: Request<super::Body>) -> (Vec<u8>, Option<RequestBody>, Method) {
    use http_body::Body as _;
    let (parts, body) = req.into_parts();
    let has_body = !body.is_end_stream();
    let chunked = has_body && !parts.headers.contains_key(header::CONTENT_LENGTH);
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut size = parts.method.as_str().len() + target.len() + 16;
    for (name, value) in &parts.headers {
        size += name.as_str().len() + value.len() + 4;
    }
    let mut head = Vec::with_capacity(size + 32);
    head.extend_from_slice(parts.method.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(target.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    if chunked {
        head.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    head.extend_from_slice(b"\r\n");
    let body = has_body.then_some(RequestBody { body, chunked });
    (head, body, parts.method)
}

/// Reads until a complete final response head is in `buf` (skipping 1xx interim responses),
/// and returns it with its body's framing and whether the connection may be reused after it.
async fn read_head<R: tokio::io::AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut BytesMut,
    method: &Method,
) -> Result<(Response<()>, Framing, bool), Error> {
    use tokio::io::AsyncReadExt;
    let mut received = false;
    loop {
        if !buf.is_empty() {
            match parse_head(buf, method)? {
                Some(Parsed::Interim) => continue,
                Some(Parsed::Final(resp, framing, keep_alive)) => {
                    return Ok((resp, framing, keep_alive));
                }
                None if buf.len() >= MAX_HEAD => {
                    return Err(Error::Invalid("response head too large"));
                }
                None => {}
            }
        }
        buf.reserve(8192);
        match io.read_buf(buf).await {
            Ok(0) if !received => {
                return Err(Error::NoResponse(io::ErrorKind::UnexpectedEof.into()));
            }
            Ok(0) => return Err(Error::Invalid("connection closed inside the response head")),
            Ok(_) => received = true,
            Err(e) if !received => return Err(Error::NoResponse(e)),
            Err(e) => return Err(Error::Io(e)),
        }
    }
}

enum Parsed {
    /// A 1xx response other than 101, consumed.
    Interim,
    Final(Response<()>, Framing, bool),
}

/// Parses one response head from the front of `buf`, consuming it; `None` if incomplete.
fn parse_head(buf: &mut BytesMut, method: &Method) -> Result<Option<Parsed>, Error> {
    // Where each header's name and value lie within the head, so that the values can be
    // slices of the frozen head rather than copies.
    let mut spans = [(0usize, 0usize, 0usize, 0usize); MAX_HEADERS];
    let (len, status, version, count) = {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut headers);
        let len = match resp.parse(&buf[..]) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(Error::Invalid("too many headers"));
            }
            Err(_) => return Err(Error::Invalid("malformed response head")),
        };
        let base = buf.as_ptr() as usize;
        for (span, h) in spans.iter_mut().zip(resp.headers.iter()) {
            let name = h.name.as_ptr() as usize - base;
            let value = h.value.as_ptr() as usize - base;
            *span = (name, name + h.name.len(), value, value + h.value.len());
        }
        let version = match resp.version {
            Some(0) => Version::HTTP_10,
            _ => Version::HTTP_11,
        };
        (len, resp.code.unwrap_or(0), version, resp.headers.len())
    };
    let head = buf.split_to(len).freeze();
    let status =
        StatusCode::from_u16(status).map_err(|_| Error::Invalid("status code out of range"))?;
    if status.is_informational() {
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(Error::Invalid("101 to a request that asked for no upgrade"));
        }
        return Ok(Some(Parsed::Interim));
    }
    let mut headers = HeaderMap::with_capacity(count);
    for &(n0, n1, v0, v1) in &spans[..count] {
        let name = HeaderName::from_bytes(&head[n0..n1])
            .map_err(|_| Error::Invalid("malformed header name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(v0..v1))
            .map_err(|_| Error::Invalid("malformed header value"))?;
        headers.append(name, value);
    }
    let (framing, framing_reusable) = framing(status, method, &headers)?;
    let keep_alive = framing_reusable && keeps_alive(version, &headers);
    let mut resp = Response::new(());
    *resp.status_mut() = status;
    *resp.version_mut() = version;
    *resp.headers_mut() = headers;
    Ok(Some(Parsed::Final(resp, framing, keep_alive)))
}

/// The body's framing, and whether the connection can be reused after it as far as framing
/// goes (RFC 9112 §6.3).
fn framing(
    status: StatusCode,
    method: &Method,
    headers: &HeaderMap,
) -> Result<(Framing, bool), Error> {
    if *method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok((Framing::Empty, true));
    }
    let has_length = headers.contains_key(header::CONTENT_LENGTH);
    if headers.contains_key(header::TRANSFER_ENCODING) {
        let last = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            // An unreadable value is a coding of its own, and not "chunked".
            .flat_map(|v| v.to_str().unwrap_or("?").split(','))
            .map(str::trim)
            .rfind(|c| !c.is_empty());
        return Ok(match last {
            // Both framings present: chunked wins, and the connection is not trusted after.
            Some(c) if c.eq_ignore_ascii_case("chunked") => (Framing::Chunked, !has_length),
            _ => (Framing::Eof, false),
        });
    }
    if has_length {
        let mut length = None;
        for value in headers.get_all(header::CONTENT_LENGTH) {
            let text = value
                .to_str()
                .map_err(|_| Error::Invalid("malformed Content-Length"))?;
            for part in text.split(',') {
                let part = part.trim();
                if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(Error::Invalid("malformed Content-Length"));
                }
                let n: u64 = part
                    .parse()
                    .map_err(|_| Error::Invalid("Content-Length out of range"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(Error::Invalid("differing Content-Length values"));
                }
                length = Some(n);
            }
        }
        return Ok(match length {
            Some(0) => (Framing::Empty, true),
            Some(n) => (Framing::Length(n), true),
            None => (Framing::Eof, false),
        });
    }
    Ok((Framing::Eof, false))
}

/// Whether the upstream lets the connection be used again.
fn keeps_alive(version: Version, headers: &HeaderMap) -> bool {
    let mut close = false;
    let mut keep_alive = false;
    for value in headers.get_all(header::CONNECTION) {
        for token in value.to_str().unwrap_or("close").split(',') {
            let token = token.trim();
            close |= token.eq_ignore_ascii_case("close");
            keep_alive |= token.eq_ignore_ascii_case("keep-alive");
        }
    }
    !close && (version == Version::HTTP_11 || keep_alive)
}

/// Where the body reader is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length(u64),
    Chunked(Chunked),
    Eof,
    Done,
}

/// Where the chunked decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunked {
    /// In a chunk-size line: the size so far, hex digits seen, bytes of the line seen, and
    /// which part of the line.
    Size {
        value: u64,
        digits: u32,
        line: usize,
        phase: SizePhase,
    },
    /// In a chunk's data.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: trailer lines up to an empty one; bytes of the section seen and
    /// whether the current line is empty so far.
    Trailers { seen: usize, line_empty: bool },
}

/// The parts of a chunk-size line: `1a2b [ ;ext=val ] CRLF`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SizePhase {
    Digits,
    /// Whitespace after the digits.
    Space,
    /// A chunk extension, skipped.
    Ext,
    /// After CR: only LF may follow.
    Cr,
}

/// A response body read from its upstream connection as the client's side asks for it; the
/// connection goes back to its pool when the body has ended cleanly.
#[derive(Debug)]
pub struct ResponseBody {
    conn: Option<Conn>,
    state: State,
    reusable: bool,
    pool: Option<Arc<Mutex<Vec<Idle>>>>,
}

impl ResponseBody {
    /// Sets where the connection goes when the body has ended.
    pub fn return_to(&mut self, pool: Arc<Mutex<Vec<Idle>>>) {
        if self.state == State::Done {
            // Already ended (no body): release now.
            if let Some(conn) = self.conn.take()
                && self.reusable
            {
                super::pool::release(&pool, conn);
            }
            return;
        }
        self.pool = Some(pool);
    }

    /// Ends the body: the connection is pooled if it can be, else closed.
    fn finish(&mut self) {
        self.state = State::Done;
        let Some(conn) = self.conn.take() else {
            return;
        };
        if !self.reusable || !conn.buf.is_empty() {
            return;
        }
        match &self.pool {
            Some(pool) => super::pool::release(pool, conn),
            // Not yet told where: keep it for `return_to`.
            None => self.conn = Some(conn),
        }
    }

    /// Reads more into the buffer: the count read, 0 at end of stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        use std::future::Future;
        use tokio::io::AsyncReadExt;
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        let room = conn.read_size;
        if conn.buf.is_empty() {
            // The last chunk went out as `Bytes` sharing this buffer: start a new one rather
            // than have `reserve` grow (and copy) the old.
            conn.buf = BytesMut::with_capacity(room);
        } else {
            conn.buf.reserve(room);
        }
        let read = std::pin::pin!(conn.io.read_buf(&mut conn.buf));
        let n = ready!(read.poll(cx))?;
        if n >= room {
            conn.read_size = (room * 2).min(MAX_READ);
        }
        Poll::Ready(Ok(n))
    }

    /// Takes what the buffer holds of the body: data, the end, or `None` for "read more".
    fn decode(&mut self) -> Result<Option<Option<Bytes>>, Error> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(Some(None));
        };
        let buf = &mut conn.buf;
        loop {
            match &mut self.state {
                State::Done => return Ok(Some(None)),
                State::Length(n) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let take = (*n).min(buf.len() as u64) as usize;
                    let data = buf.split_to(take).freeze();
                    *n -= take as u64;
                    if *n == 0 {
                        self.state = State::Done;
                    }
                    return Ok(Some(Some(data)));
                }
                State::Eof => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    return Ok(Some(Some(buf.split().freeze())));
                }
                State::Chunked(chunked) => match decode_chunked(chunked, buf)? {
                    ChunkStep::Data(data) => return Ok(Some(Some(data))),
                    ChunkStep::More => return Ok(None),
                    ChunkStep::End => self.state = State::Done,
                    ChunkStep::Continue => {}
                },
            }
        }
    }
}

enum ChunkStep {
    Data(Bytes),
    /// The buffer is exhausted.
    More,
    /// The last chunk and the trailers have been read.
    End,
    /// The state moved on; decode again.
    Continue,
}

fn decode_chunked(state: &mut Chunked, buf: &mut BytesMut) -> Result<ChunkStep, Error> {
    match state {
        Chunked::Size {
            value,
            digits,
            line,
            phase,
        } => {
            while let Some(&b) = buf.first() {
                buf.advance(1);
                *line += 1;
                if *line > MAX_CHUNK_LINE {
                    return Err(Error::Invalid("chunk-size line too long"));
                }
                let end = match (*phase, b) {
                    (SizePhase::Digits, b) if b.is_ascii_hexdigit() => {
                        *digits += 1;
                        if *digits > 15 {
                            return Err(Error::Invalid("chunk size too large"));
                        }
                        *value = *value * 16 + u64::from((b as char).to_digit(16).unwrap_or(0));
                        false
                    }
                    (SizePhase::Digits, _) if *digits == 0 => {
                        return Err(Error::Invalid("malformed chunk size"));
                    }
                    (SizePhase::Digits | SizePhase::Space, b' ' | b'\t') => {
                        *phase = SizePhase::Space;
                        false
                    }
                    (SizePhase::Digits | SizePhase::Space, b';') => {
                        *phase = SizePhase::Ext;
                        false
                    }
                    (SizePhase::Digits | SizePhase::Space | SizePhase::Ext, b'\r') => {
                        *phase = SizePhase::Cr;
                        false
                    }
                    (_, b'\n') => true,
                    (SizePhase::Ext, _) => false,
                    _ => return Err(Error::Invalid("malformed chunk size")),
                };
                if end {
                    *state = if *value == 0 {
                        Chunked::Trailers {
                            seen: 0,
                            line_empty: true,
                        }
                    } else {
                        Chunked::Data(*value)
                    };
                    return Ok(ChunkStep::Continue);
                }
            }
            Ok(ChunkStep::More)
        }
        Chunked::Data(remaining) => {
            if buf.is_empty() {
                return Ok(ChunkStep::More);
            }
            let take = (*remaining).min(buf.len() as u64) as usize;
            let data = buf.split_to(take).freeze();
            *remaining -= take as u64;
            if *remaining == 0 {
                *state = Chunked::DataEnd;
            }
            Ok(ChunkStep::Data(data))
        }
        Chunked::DataEnd => {
            if buf.len() < 2 {
                // A lone LF is accepted, as most peers do; anything else is not.
                if buf.first() == Some(&b'\n') {
                    buf.advance(1);
                    *state = next_size();
                    return Ok(ChunkStep::Continue);
                }
                if buf.first().is_some_and(|&b| b != b'\r') {
                    return Err(Error::Invalid("chunk not followed by CRLF"));
                }
                return Ok(ChunkStep::More);
            }
            match &buf[..2] {
                b"\r\n" => buf.advance(2),
                [b'\n', _] => buf.advance(1),
                _ => return Err(Error::Invalid("chunk not followed by CRLF")),
            }
            *state = next_size();
            Ok(ChunkStep::Continue)
        }
        Chunked::Trailers { seen, line_empty } => {
            while let Some(&b) = buf.first() {
                buf.advance(1);
                *seen += 1;
                if *seen > MAX_HEAD {
                    return Err(Error::Invalid("trailers too large"));
                }
                match b {
                    b'\n' if *line_empty => return Ok(ChunkStep::End),
                    b'\n' => *line_empty = true,
                    b'\r' => {}
                    _ => *line_empty = false,
                }
            }
            Ok(ChunkStep::More)
        }
    }
}

fn next_size() -> Chunked {
    Chunked::Size {
        value: 0,
        digits: 0,
        line: 0,
        phase: SizePhase::Digits,
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        loop {
            match this.decode() {
                Err(e) => {
                    this.conn = None;
                    this.state = State::Done;
                    return Poll::Ready(Some(Err(e)));
                }
                Ok(Some(Some(data))) => {
                    if this.state == State::Done {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Some(None)) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(None) => match ready!(this.poll_fill(cx)) {
                    Ok(0) if this.state == State::Eof => {
                        this.reusable = false;
                        this.finish();
                        return Poll::Ready(None);
                    }
                    Ok(0) => {
                        this.conn = None;
                        this.state = State::Done;
                        return Poll::Ready(Some(Err(Error::Io(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "upstream closed the connection inside the body",
                        )))));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        this.conn = None;
                        this.state = State::Done;
                        return Poll::Ready(Some(Err(Error::Io(e))));
                    }
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.state == State::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Done => SizeHint::with_exact(0),
            State::Length(n) => SizeHint::with_exact(n),
            State::Chunked(_) | State::Eof => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str, method: Method) -> Result<(Response<()>, Framing, bool), Error> {
        let mut buf = BytesMut::from(raw.as_bytes());
        loop {
            match parse_head(&mut buf, &method)? {
                Some(Parsed::Final(r, f, k)) => return Ok((r, f, k)),
                Some(Parsed::Interim) => continue,
                None => panic!("incomplete: {raw:?}"),
            }
        }
    }

    #[test]
    fn a_plain_response_is_length_delimited_and_reusable() {
        let (resp, framing, keep) = parse(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\n",
            Method::GET,
        )
        .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-a"], "b");
        assert_eq!(framing, Framing::Length(5));
        assert!(keep);
    }

    #[test]
    fn interim_responses_are_skipped() {
        let (resp, _, _) = parse(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
            Method::POST,
        )
        .unwrap();
        assert_eq!(resp.status(), 201);
    }

    #[test]
    fn transfer_encoding_beats_content_length_and_spoils_the_connection() {
        let (_, framing, keep) = parse(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            Method::GET,
        )
        .unwrap();
        assert_eq!(framing, Framing::Chunked);
        assert!(!keep);
    }

    #[test]
    fn only_a_final_chunked_coding_frames_by_chunks() {
        let (_, framing, keep) = parse(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n",
            Method::GET,
        )
        .unwrap();
        assert_eq!(framing, Framing::Eof);
        assert!(!keep);
        let mut buf =
            BytesMut::from(&b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, \xff\r\n\r\n"[..]);
        match parse_head(&mut buf, &Method::GET) {
            Ok(Some(Parsed::Final(_, framing, _))) => assert_eq!(framing, Framing::Eof),
            Ok(_) => panic!("incomplete"),
            // Refusing the value outright is as good.
            Err(_) => {}
        }
    }

    #[test]
    fn differing_content_lengths_are_refused_and_equal_ones_accepted() {
        assert!(
            parse(
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                Method::GET
            )
            .is_err()
        );
        assert!(
            parse(
                "HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n",
                Method::GET
            )
            .is_err()
        );
        assert!(parse("HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n", Method::GET).is_err());
        let (_, framing, _) = parse(
            "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n",
            Method::GET,
        )
        .unwrap();
        assert_eq!(framing, Framing::Length(5));
    }

    #[test]
    fn bodiless_responses_have_no_body_whatever_they_say() {
        for (raw, method) in [
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n",
                Method::HEAD,
            ),
            ("HTTP/1.1 204 No Content\r\n\r\n", Method::GET),
            (
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
                Method::GET,
            ),
        ] {
            let (_, framing, keep) = parse(raw, method).unwrap();
            assert_eq!(framing, Framing::Empty, "{raw}");
            assert!(keep, "{raw}");
        }
    }

    #[test]
    fn close_and_http10_end_the_connection() {
        let (_, framing, keep) = parse("HTTP/1.1 200 OK\r\n\r\n", Method::GET).unwrap();
        assert_eq!(framing, Framing::Eof);
        assert!(!keep);
        let (_, _, keep) = parse(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n",
            Method::GET,
        )
        .unwrap();
        assert!(!keep);
        let (_, _, keep) =
            parse("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", Method::GET).unwrap();
        assert!(!keep);
        let (_, _, keep) = parse(
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n",
            Method::GET,
        )
        .unwrap();
        assert!(keep);
    }

    #[test]
    fn a_101_without_an_upgrade_request_is_an_error() {
        assert!(parse("HTTP/1.1 101 Switching Protocols\r\n\r\n", Method::GET).is_err());
    }

    #[test]
    fn garbage_is_refused() {
        let mut buf = BytesMut::from(&b"SSH-2.0-OpenSSH\r\n\r\n"[..]);
        assert!(parse_head(&mut buf, &Method::GET).is_err());
    }

    /// Decodes `input` fed in pieces of `step` bytes; the data, or the first error.
    fn dechunk(input: &[u8], step: usize) -> Result<(Vec<u8>, usize), Error> {
        let mut state = next_size();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut fed = 0;
        loop {
            match decode_chunked(&mut state, &mut buf)? {
                ChunkStep::Data(d) => out.extend_from_slice(&d),
                ChunkStep::Continue => {}
                ChunkStep::End => return Ok((out, buf.len())),
                ChunkStep::More => {
                    if fed >= input.len() {
                        return Err(Error::Invalid("ran out"));
                    }
                    let end = (fed + step).min(input.len());
                    buf.extend_from_slice(&input[fed..end]);
                    fed = end;
                }
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_read_sizes() {
        let input = b"5\r\nhello\r\n1;ext=1\r\n \r\nA\r\n0123456789\r\n0\r\nX-Trailer: 1\r\n\r\n";
        for step in [1, 2, 3, 7, 100] {
            let (data, left) = dechunk(input, step).unwrap();
            assert_eq!(data, b"hello 0123456789", "step {step}");
            assert_eq!(left, 0);
        }
    }

    #[test]
    fn malformed_chunks_are_errors() {
        for bad in [
            &b"\r\n"[..],
            b"zz\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"ffffffffffffffff\r\n",
            b"-1\r\n",
            b"5 5\r\nhello\r\n0\r\n\r\n",
            b"5\r\rhello\r\n0\r\n\r\n",
        ] {
            assert!(
                dechunk(bad, 100).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn request_heads_are_origin_form_and_say_chunked_when_the_length_is_unknown() {
        let req = Request::builder()
            .method("GET")
            .uri("/a?b=c")
            .header("host", "x.test")
            .body(super::super::Body::empty())
            .unwrap();
        let (head, body, _) = encode_request(req);
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "GET /a?b=c HTTP/1.1\r\nhost: x.test\r\n\r\n"
        );
        assert!(body.is_none());
        let req = Request::builder()
            .method("POST")
            .uri("/up")
            .body(super::super::Body::full(Bytes::from_static(b"data")))
            .unwrap();
        let (head, body, _) = encode_request(req);
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "POST /up HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        assert!(body.is_some_and(|b| b.chunked));
    }
}
