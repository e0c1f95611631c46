//! Raw HTTP/2 for tests that must send what no well-behaved client would: frames built by
//! hand, a minimal HPACK block, and a reader that looks for GOAWAY.

use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const GOAWAY: u8 = 0x7;
pub const CONTINUATION: u8 = 0x9;
pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut f = vec![len[1], len[2], len[3], kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK block for `GET /` on `host`: static-table entries, and the authority as a literal.
pub fn get_block(host: &str) -> Vec<u8> {
    // :method GET, :scheme http, :path / (static indices 2, 6, 4).
    let mut block = vec![0x82, 0x86, 0x84];
    // :authority (static index 1), literal without indexing, plain string.
    block.push(0x01);
    block.push(u8::try_from(host.len()).unwrap());
    block.extend_from_slice(host.as_bytes());
    block
}

/// Reads frames until a GOAWAY comes (true), or the server closes or 10 s pass (false).
pub async fn saw_goaway(stream: &mut TcpStream) -> bool {
    let mut got = Vec::new();
    let mut at = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        while at + 9 <= got.len() {
            if got[at + 3] == GOAWAY {
                return true;
            }
            let len = usize::from(got[at]) << 16
                | usize::from(got[at + 1]) << 8
                | usize::from(got[at + 2]);
            at += 9 + len;
        }
        let mut buf = [0u8; 16 * 1024];
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => return false,
        }
    }
}
