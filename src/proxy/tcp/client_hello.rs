//! The TLS ClientHello parser behind `tls-passthrough`: finds the server name (SNI) a client
//! asks for, without terminating TLS.
//!
//! It reads TLS records (a ClientHello may be split across TCP segments and across several
//! handshake records), bounded by [`MAX_CLIENT_HELLO`], and walks the message with a bounds-checked
//! cursor. It never answers the client and never changes a byte: what it read is forwarded as is.

use std::time::Duration;

use tokio::net::TcpStream;

/// Largest ClientHello accepted, in bytes of handshake message. Real ones are a few hundred bytes
/// to a few KiB (post-quantum key shares, session tickets); this leaves room and still bounds
/// what one connection can make rouse buffer.
pub const MAX_CLIENT_HELLO: usize = 64 * 1024;

/// Most records a ClientHello may be split into; real clients use one, or a few when it is
/// larger than a record.
const MAX_RECORDS: usize = 64;
/// Most bytes read while waiting for a whole ClientHello: the message, its record headers, and
/// what a client may send right behind it.
const MAX_BUFFERED: usize = MAX_CLIENT_HELLO + 32 * 1024;
/// Largest TLS record fragment (RFC 8446 §5.1: 2^14).
const MAX_RECORD: usize = 16 * 1024;
/// TLS record header: content type, legacy version, length.
const RECORD_HEADER: usize = 5;
/// Handshake header: message type, 24-bit length.
const HANDSHAKE_HEADER: usize = 4;
const CONTENT_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const EXTENSION_SERVER_NAME: u16 = 0;
const NAME_TYPE_HOST_NAME: u8 = 0;
/// Longest DNS name (RFC 1035).
const MAX_HOST_NAME: usize = 253;

/// Why the first bytes of a connection are not a usable ClientHello.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClientHelloError {
    /// The first record is not a TLS handshake record.
    #[error("not a tls handshake record (content type {0}): is the client speaking tls?")]
    NotHandshake(u8),
    /// A record header has a version or length no TLS implementation sends.
    #[error("malformed tls record header")]
    BadRecord,
    /// The first handshake message is not a ClientHello.
    #[error("first handshake message is type {0}, not a ClientHello")]
    NotClientHello(u8),
    /// The ClientHello is larger than [`MAX_CLIENT_HELLO`].
    #[error("ClientHello of {0} bytes is larger than the {max}-byte limit", max = MAX_CLIENT_HELLO)]
    TooLarge(usize),
    /// The ClientHello's fields do not add up.
    #[error("malformed ClientHello: {0}")]
    Malformed(&'static str),
    /// The client closed the connection before sending a whole ClientHello.
    #[error("connection closed before a whole ClientHello")]
    Eof,
    /// The client did not send a whole ClientHello in time.
    #[error("no whole ClientHello within {0:?}")]
    Timeout(Duration),
}

impl From<ClientHelloError> for std::io::Error {
    fn from(e: ClientHelloError) -> Self {
        let kind = match e {
            ClientHelloError::Eof => std::io::ErrorKind::UnexpectedEof,
            ClientHelloError::Timeout(_) => std::io::ErrorKind::TimedOut,
            _ => std::io::ErrorKind::InvalidData,
        };
        std::io::Error::new(kind, e)
    }
}

/// What [`parse`] made of the bytes read so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// The ClientHello is not complete yet: read more.
    Incomplete,
    /// The whole ClientHello was read; the server name it asks for, if any.
    Complete(Option<String>),
}

/// Reads from `stream` until a whole ClientHello has arrived (or `timeout` passes), and returns
/// its server name and every byte read, to be sent on to the upstream first.
pub async fn read(
    stream: &TcpStream,
    timeout: Duration,
) -> std::io::Result<(Option<String>, Vec<u8>)> {
    let reading = async {
        let mut buf = Vec::with_capacity(2048);
        loop {
            if buf.len() >= MAX_BUFFERED {
                return Err(ClientHelloError::TooLarge(buf.len()).into());
            }
            if buf.len() == buf.capacity() {
                buf.reserve(buf.capacity().min(MAX_BUFFERED - buf.len()));
            }
            stream.readable().await?;
            match stream.try_read_buf(&mut buf) {
                Ok(0) => return Err(ClientHelloError::Eof.into()),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
            if let Parsed::Complete(sni) = parse(&buf)? {
                return Ok((sni, buf));
            }
        }
    };
    tokio::time::timeout(timeout, reading)
        .await
        .map_err(|_| ClientHelloError::Timeout(timeout))?
}

/// Parses the TLS records at the start of `buf` (a connection's first bytes) far enough to
/// find the ClientHello's server name. Bytes after the ClientHello are ignored.
///
/// Called again after every read, so an incomplete ClientHello costs one walk over the record
/// headers (at most [`MAX_RECORDS`]) and no copy; the message is assembled once, when whole.
pub fn parse(buf: &[u8]) -> Result<Parsed, ClientHelloError> {
    // Where each complete record's fragment lies in `buf`.
    let mut fragments: Vec<std::ops::Range<usize>> = Vec::new();
    let mut received = 0;
    // The ClientHello's length, once its handshake header has been seen.
    let mut size = None;
    let mut at = 0;
    loop {
        let Some(header) = buf.get(at..at + RECORD_HEADER) else {
            return Ok(Parsed::Incomplete);
        };
        if header[0] != CONTENT_HANDSHAKE {
            // Only the first record can be something else entirely; a later one is a protocol
            // error (a ClientHello is never interleaved with other content).
            return Err(match fragments.is_empty() {
                true => ClientHelloError::NotHandshake(header[0]),
                false => ClientHelloError::BadRecord,
            });
        }
        let length = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if header[1] != 3 || length == 0 || length > MAX_RECORD {
            return Err(ClientHelloError::BadRecord);
        }
        if fragments.len() == MAX_RECORDS {
            return Err(ClientHelloError::Malformed("split into too many records"));
        }
        let start = at + RECORD_HEADER;
        let fragment = start..buf.len().min(start + length);
        // Check the handshake header as soon as it is there, so that garbage fails early.
        if size.is_none() && received + fragment.len() >= HANDSHAKE_HEADER {
            let mut head = [0u8; HANDSHAKE_HEADER];
            let parts = fragments.iter().chain(std::iter::once(&fragment));
            for (slot, byte) in head.iter_mut().zip(parts.flat_map(|r| &buf[r.clone()])) {
                *slot = *byte;
            }
            if head[0] != HANDSHAKE_CLIENT_HELLO {
                return Err(ClientHelloError::NotClientHello(head[0]));
            }
            let n = u32::from_be_bytes([0, head[1], head[2], head[3]]) as usize;
            if n > MAX_CLIENT_HELLO {
                return Err(ClientHelloError::TooLarge(n));
            }
            size = Some(n);
        }
        if fragment.len() < length {
            return Ok(Parsed::Incomplete);
        }
        received += length;
        at = fragment.end;
        fragments.push(fragment);
        if let Some(size) = size
            && received >= HANDSHAKE_HEADER + size
        {
            let message: Vec<u8> = fragments
                .iter()
                .flat_map(|r| &buf[r.clone()])
                .copied()
                .collect();
            let body = &message[HANDSHAKE_HEADER..HANDSHAKE_HEADER + size];
            return server_name(body).map(Parsed::Complete);
        }
    }
}

/// The host name in a ClientHello body's server_name extension (RFC 6066 §3), if it has one.
fn server_name(body: &[u8]) -> Result<Option<String>, ClientHelloError> {
    use ClientHelloError::Malformed;
    let mut hello = Cursor(body);
    hello
        .take(2 + 32)
        .ok_or(Malformed("truncated version or random"))?;
    let session_id = hello.vec8().ok_or(Malformed("truncated session id"))?;
    if session_id.len() > 32 {
        return Err(Malformed("session id longer than 32 bytes"));
    }
    let suites = hello.vec16().ok_or(Malformed("truncated cipher suites"))?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err(Malformed("bad cipher suite list"));
    }
    let compression = hello
        .vec8()
        .ok_or(Malformed("truncated compression methods"))?;
    if compression.is_empty() {
        return Err(Malformed("no compression method"));
    }
    if hello.0.is_empty() {
        // A ClientHello without extensions (TLS 1.0-era clients): no SNI.
        return Ok(None);
    }
    let mut extensions = Cursor(hello.vec16().ok_or(Malformed("truncated extensions"))?);
    if !hello.0.is_empty() {
        return Err(Malformed("bytes after the extensions"));
    }
    let mut found = None;
    while !extensions.0.is_empty() {
        let kind = extensions.u16().ok_or(Malformed("truncated extension"))?;
        let data = extensions.vec16().ok_or(Malformed("truncated extension"))?;
        if kind != EXTENSION_SERVER_NAME {
            continue;
        }
        if found.is_some() {
            return Err(Malformed("two server_name extensions"));
        }
        found = Some(host_name(data)?);
    }
    Ok(found.flatten())
}

/// The host_name entry of a server_name extension's ServerNameList.
fn host_name(data: &[u8]) -> Result<Option<String>, ClientHelloError> {
    use ClientHelloError::Malformed;
    let mut ext = Cursor(data);
    let mut list = Cursor(ext.vec16().ok_or(Malformed("truncated server name list"))?);
    if !ext.0.is_empty() || list.0.is_empty() {
        return Err(Malformed("bad server name list"));
    }
    let mut host = None;
    while !list.0.is_empty() {
        let kind = list.u8().ok_or(Malformed("truncated server name"))?;
        let name = list.vec16().ok_or(Malformed("truncated server name"))?;
        if kind != NAME_TYPE_HOST_NAME {
            continue;
        }
        if host.is_some() {
            return Err(Malformed("two host names"));
        }
        let valid = !name.is_empty()
            && name.len() <= MAX_HOST_NAME
            && name
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
        if !valid {
            return Err(Malformed("server name is not a host name"));
        }
        // Checked ASCII above, so this cannot fail.
        host = Some(String::from_utf8_lossy(name).into_owned());
    }
    Ok(host)
}

/// A bounds-checked reader over a byte slice: every read returns `None` past the end.
struct Cursor<'a>(&'a [u8]);

// === impl Cursor ===

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a one-byte length prefix.
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }

    /// A vector with a two-byte length prefix.
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
}

#[cfg(test)]
mod tests;
