//! The TLS ClientHello parser of `tls-passthrough` (src/proxy/tcp/client_hello.rs).
//!
//! Input: a connection's first bytes. `parse` is called again after every read with all bytes
//! read so far, so it must decide on a prefix what it decides on the whole: for every prefix it
//! says `Incomplete`, or exactly what it says for the whole input. A server name it returns is a
//! host name taken from the ClientHello, and cutting the same handshake message into records of
//! another size changes nothing.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rouse::proxy::tcp::client_hello::{ClientHelloError, MAX_CLIENT_HELLO, Parsed, parse};

/// Prefixes are all tried up to this length, and sampled beyond it.
const ALL_PREFIXES_UP_TO: usize = 512;
/// Most prefixes tried for a longer input (record boundaries come on top).
const SAMPLED_PREFIXES: usize = 64;
/// TLS record header: content type, version, 16-bit length.
const RECORD_HEADER: usize = 5;
/// Largest record fragment a sender may use (RFC 8446 §5.1).
const MAX_RECORD: usize = 16 * 1024;
/// Records a ClientHello may be split into.
const MAX_RECORDS: usize = 64;

fuzz_target!(|data: &[u8]| {
    let whole = parse(data);

    for cut in cuts(data) {
        let part = parse(&data[..cut]);
        assert!(
            part == Ok(Parsed::Incomplete) || part == whole,
            "prefix of {cut} bytes: {part:?}, whole: {whole:?}"
        );
    }

    // Bytes after a whole ClientHello are ignored.
    if let Ok(Parsed::Complete(_)) = &whole {
        let mut longer = data.to_vec();
        longer.extend_from_slice(&[0x16, 3, 1, 0, 1, 0xff]);
        assert_eq!(parse(&longer), whole);
    }

    if let Ok(Parsed::Complete(Some(name))) = &whole {
        assert!(!name.is_empty() && name.len() <= 253, "{name:?}");
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)),
            "{name:?}"
        );
        let payload = fragments(data);
        assert!(
            payload.windows(name.len()).any(|w| w == name.as_bytes()),
            "{name:?} is not in the handshake bytes"
        );
    }

    // The same handshake message in records of another size parses the same.
    if let Ok(Parsed::Complete(_)) = &whole {
        let payload = fragments(data);
        let size = 4
            + (usize::from(payload[1]) << 16
                | usize::from(payload[2]) << 8
                | usize::from(payload[3]));
        assert!(size <= 4 + MAX_CLIENT_HELLO && size <= payload.len());
        let message = &payload[..size];
        let chunk = 1 + usize::from(*data.last().unwrap_or(&0)) * 64 % MAX_RECORD;
        let recut = records(message, chunk);
        let got = parse(&recut);
        if message.len().div_ceil(chunk) > MAX_RECORDS {
            let too_many = ClientHelloError::Malformed("split into too many records");
            assert_eq!(got, Err(too_many), "records of {chunk} bytes");
        } else {
            assert_eq!(got, whole, "records of {chunk} bytes");
        }
    }
});

/// Where to cut `data` for the prefix check.
fn cuts(data: &[u8]) -> Vec<usize> {
    if data.len() <= ALL_PREFIXES_UP_TO {
        return (0..data.len()).collect();
    }
    let mut cuts: Vec<usize> = (0..SAMPLED_PREFIXES)
        .map(|i| i * data.len() / SAMPLED_PREFIXES)
        .collect();
    // Each record boundary, and one byte either side.
    let mut at = 0;
    while at + RECORD_HEADER <= data.len() {
        cuts.extend([at.saturating_sub(1), at, at + 1, at + RECORD_HEADER]);
        at += RECORD_HEADER + usize::from(u16::from_be_bytes([data[at + 3], data[at + 4]]));
    }
    cuts.retain(|&c| c < data.len());
    cuts
}

/// The concatenated fragments of the records at the start of `data` (the whole last one
/// included only if it is complete).
fn fragments(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + RECORD_HEADER <= data.len() {
        let length = usize::from(u16::from_be_bytes([data[at + 3], data[at + 4]]));
        let Some(fragment) = data.get(at + RECORD_HEADER..at + RECORD_HEADER + length) else {
            break;
        };
        out.extend_from_slice(fragment);
        at += RECORD_HEADER + length;
    }
    out
}

/// `message` as handshake records of `chunk` bytes.
fn records(message: &[u8], chunk: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for part in message.chunks(chunk) {
        out.extend_from_slice(&[0x16, 3, 1]);
        out.extend_from_slice(&(part.len() as u16).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}
