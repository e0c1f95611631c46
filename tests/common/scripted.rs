//! A scripted HTTP/1.1 backend: its answer depends on the path, and it records every request's
//! head and raw body bytes as received.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{head_header, read_head};

/// Size of the `/big` response body (a multiple of 64 KiB).
pub const BIG: usize = 32 << 20;

/// A backend whose answer depends on the path, for the framing cases of HTTP/1.1. It counts
/// connections and records each request's head and raw body bytes.
pub struct ScriptedBackend {
    pub addr: std::net::SocketAddr,
    pub connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    pub requests: Recorded,
}

/// Each request's head and raw body bytes, as a backend received them.
pub type Recorded = std::sync::Arc<std::sync::Mutex<Vec<(String, Vec<u8>)>>>;

impl ScriptedBackend {
    pub async fn start() -> ScriptedBackend {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (count, log) = (connections.clone(), requests.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let log = log.clone();
                tokio::spawn(async move {
                    let mut stream = tokio::io::BufReader::new(stream);
                    loop {
                        let head = read_head(&mut stream).await.unwrap_or_default();
                        if head.is_empty() {
                            return;
                        }
                        let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
                        if path == "/big" {
                            // BIG bytes, more than the socket buffers between here and a
                            // client that reads nothing; written from one small buffer.
                            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {BIG}\r\n\r\n");
                            if stream.get_mut().write_all(head.as_bytes()).await.is_err() {
                                return;
                            }
                            let chunk = [b'x'; 64 * 1024];
                            for _ in 0..BIG / chunk.len() {
                                if stream.get_mut().write_all(&chunk).await.is_err() {
                                    return;
                                }
                            }
                            continue;
                        }
                        if path == "/reject" {
                            // Answer at once and read nothing more: a proxy that insists on
                            // sending the whole body first never hears the answer.
                            let _ = stream
                                .get_mut()
                                .write_all(b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntoo big\n")
                                .await;
                            tokio::time::sleep(Duration::from_secs(15)).await;
                            return;
                        }
                        let body = read_raw_body(&mut stream, &head).await;
                        log.lock().unwrap().push((head.clone(), body));
                        let reply: &[u8] = match path.as_str() {
                            "/chunked" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n1;ext=1\r\nd\r\n0\r\nX-Trailer: 1\r\n\r\n",
                            "/close" => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                            "/eof" => b"HTTP/1.1 200 OK\r\n\r\nuntil the end",
                            "/head" => b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n",
                            "/garbage" => b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
                            "/truncated" => b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part",
                            _ => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                        };
                        if stream.get_mut().write_all(reply).await.is_err() {
                            return;
                        }
                        if matches!(path.as_str(), "/close" | "/eof" | "/garbage" | "/truncated") {
                            return;
                        }
                    }
                });
            }
        });
        ScriptedBackend {
            addr,
            connections,
            requests,
        }
    }

    pub fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The body bytes as sent: `Content-Length` bytes, or raw chunked framing up to its end.
pub async fn read_raw_body<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R, head: &str) -> Vec<u8> {
    let mut body = Vec::new();
    if let Some(len) = head_header(head, "content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.resize(len, 0);
        let _ = r.read_exact(&mut body).await;
    } else if head_header(head, "transfer-encoding").is_some() {
        while !body.ends_with(b"\r\n0\r\n\r\n") && !body.starts_with(b"0\r\n\r\n") {
            let mut byte = [0u8; 1];
            if r.read_exact(&mut byte).await.is_err() {
                break;
            }
            body.push(byte[0]);
        }
    }
    body
}
