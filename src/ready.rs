//! Readiness probes: has a started backend begun to answer?
//!
//! Probes start the moment a start is issued and repeat quickly at first (every millisecond for
//! the first ten), then back off, so a backend ready after 5 ms is used within a millisecond or
//! two of that, and a slow one is not hammered.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep_until, timeout_at};

use crate::config::ReadyCheck;

/// Probes sent at the fastest pace before backing off.
const FAST_PROBES: u32 = 10;
const FAST_INTERVAL: Duration = Duration::from_millis(1);
const MAX_INTERVAL: Duration = Duration::from_millis(50);
/// Longest a single probe may take before it counts as a failure.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Probes `addr` until it is ready; returns false if `deadline` passes first.
pub async fn wait(addr: SocketAddr, check: &ReadyCheck, host: &str, deadline: Instant) -> bool {
    let mut interval = FAST_INTERVAL;
    let mut probes = 0u32;
    loop {
        let attempt_deadline = deadline.min(Instant::now() + PROBE_TIMEOUT);
        if let Ok(true) = timeout_at(attempt_deadline, probe(addr, check, host)).await {
            return true;
        }
        probes += 1;
        if probes > FAST_PROBES {
            interval = (interval * 2).min(MAX_INTERVAL);
        }
        let next = Instant::now() + interval;
        if next >= deadline {
            return false;
        }
        sleep_until(next).await;
    }
}

/// One probe: true if the backend answered as `check` requires.
async fn probe(addr: SocketAddr, check: &ReadyCheck, host: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return false;
    };
    match check {
        ReadyCheck::Tcp => true,
        ReadyCheck::Http { path } => {
            let request = format!(
                "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: rouse-ready-probe\r\nConnection: close\r\n\r\n"
            );
            if stream.write_all(request.as_bytes()).await.is_err() {
                return false;
            }
            // "HTTP/1.1 200" is all that is needed.
            let mut head = [0u8; 12];
            let mut read = 0;
            while read < head.len() {
                match stream.read(&mut head[read..]).await {
                    Ok(0) | Err(_) => return false,
                    Ok(n) => read += n,
                }
            }
            head.starts_with(b"HTTP/1.") && matches!(head[9], b'2' | b'3')
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn answer_with(status_line: &'static str) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(status_line.as_bytes()).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn http_check_accepts_2xx_and_3xx_only() {
        let check = ReadyCheck::Http {
            path: "/healthz".into(),
        };
        for (line, ready) in [
            ("HTTP/1.1 200 OK\r\n\r\n", true),
            ("HTTP/1.1 302 Found\r\n\r\n", true),
            ("HTTP/1.1 503 Service Unavailable\r\n\r\n", false),
        ] {
            let addr = answer_with(line).await;
            assert_eq!(probe(addr, &check, "x").await, ready, "{line}");
        }
    }

    #[tokio::test]
    async fn gives_up_at_the_deadline() {
        // A port nobody listens on: bind, learn it, close it.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let deadline = Instant::now() + Duration::from_millis(100);
        assert!(!wait(addr, &ReadyCheck::Tcp, "x", deadline).await);
        assert!(Instant::now() >= deadline - Duration::from_millis(50));
    }
}
