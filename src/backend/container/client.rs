//! A small HTTP/1.1 client for a container engine's API on a unix socket.
//!
//! One connection per call: connecting to a local socket costs microseconds, and a slow call
//! (a stop that waits for the container) never holds up another. Replies are small JSON
//! documents read whole, except the event stream, whose body is handed back unread.
//! This file knows HTTP and the socket, not what the paths mean (see `api.rs`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

use crate::config::Engine;
use crate::error::fmt_duration;

/// Why a call to the engine failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The socket could not be connected to: no service listens there.
    #[error("cannot reach {engine} at {socket}: {source}: {hint}")]
    Unreachable {
        /// Which API.
        engine: Engine,
        /// The socket path.
        socket: String,
        /// The connect error.
        source: std::io::Error,
        /// What to do about it.
        hint: String,
    },
    /// The connection broke or the reply was not HTTP.
    #[error("{engine} at {socket}: {source}")]
    Http {
        /// Which API.
        engine: Engine,
        /// The socket path.
        socket: String,
        /// hyper's error.
        source: hyper::Error,
    },
    /// No reply in time.
    #[error("{engine} at {socket} did not answer within {}", fmt_duration(*.timeout))]
    Timeout {
        /// Which API.
        engine: Engine,
        /// The socket path.
        socket: String,
        /// How long rouse waited.
        timeout: Duration,
    },
    /// The engine answered with an error status (its message, in its words).
    #[error("{engine} answered {status}: {message}")]
    Status {
        /// Which API.
        engine: Engine,
        /// The HTTP status.
        status: StatusCode,
        /// The engine's `message`, or the body.
        message: String,
    },
    /// The engine answered something that is not the JSON expected.
    #[error("{engine} answered unreadable JSON: {0}", engine = .1)]
    Json(serde_json::Error, Engine),
}

/// A whole reply.
#[derive(Debug)]
pub struct Reply {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body, read whole.
    pub body: Bytes,
}

impl Reply {
    /// The engine's error message: the `message` field of a JSON error, or the body as text.
    pub fn message(&self) -> String {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&self.body).trim().to_owned())
    }
}

/// An engine API reached over a unix socket.
#[derive(Debug)]
pub struct Client {
    engine: Engine,
    socket: PathBuf,
    /// Set once a reply carries `Libpod-Api-Version`: the server is podman, whatever the dialect.
    libpod: AtomicBool,
}

impl Client {
    /// A client for `engine`'s API at `socket`; nothing is connected yet.
    pub fn new(engine: Engine, socket: &Path) -> Client {
        Client {
            engine,
            socket: socket.to_owned(),
            libpod: AtomicBool::new(false),
        }
    }

    /// The engine's socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Whether the server has shown itself to be podman (even when spoken to as Docker).
    pub fn is_libpod(&self) -> bool {
        self.libpod.load(Ordering::Relaxed)
    }

    /// Sends one request and reads the whole reply, within `timeout`.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        timeout: Duration,
    ) -> Result<Reply, ApiError> {
        let call = async {
            let resp = self.send(method, path, body).await?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| self.http_error(e))?
                .to_bytes();
            Ok(Reply { status, body })
        };
        match tokio::time::timeout(timeout, call).await {
            Ok(reply) => reply,
            Err(_) => Err(ApiError::Timeout {
                engine: self.engine,
                socket: self.socket.display().to_string(),
                timeout,
            }),
        }
    }

    /// Sends a GET whose reply is a stream; returns its body once the head has arrived.
    pub async fn stream(&self, path: &str, timeout: Duration) -> Result<Incoming, ApiError> {
        let resp = match tokio::time::timeout(timeout, self.send(Method::GET, path, None)).await {
            Ok(resp) => resp?,
            Err(_) => {
                return Err(ApiError::Timeout {
                    engine: self.engine,
                    socket: self.socket.display().to_string(),
                    timeout,
                });
            }
        };
        let status = resp.status();
        if !status.is_success() {
            let body = resp
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            return Err(self.status_error(&Reply { status, body }));
        }
        Ok(resp.into_body())
    }

    /// The error for a reply with an unexpected status.
    pub fn status_error(&self, reply: &Reply) -> ApiError {
        ApiError::Status {
            engine: self.engine,
            status: reply.status,
            message: reply.message(),
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<http::Response<Incoming>, ApiError> {
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|source| self.unreachable(source))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.http_error(e))?;
        // The connection ends by itself once the reply (or the stream's body) is dropped.
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "localhost");
        let body = match body {
            Some(json) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Bytes::from(json.to_string())
            }
            None => Bytes::new(),
        };
        let req = req.body(Full::new(body)).expect("a valid request");
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| self.http_error(e))?;
        if resp.headers().contains_key("libpod-api-version") {
            self.libpod.store(true, Ordering::Relaxed);
        }
        Ok(resp)
    }

    fn unreachable(&self, source: std::io::Error) -> ApiError {
        let socket = self.socket.display().to_string();
        let hint = match self.engine {
            Engine::Podman => format!(
                "start podman's API service (systemctl enable --now podman.socket, or podman system service --time=0 unix://{socket})"
            ),
            Engine::Docker => format!(
                "start the Docker daemon (systemctl start docker), or serve podman's Docker-compatible API there (podman system service --time=0 unix://{socket})"
            ),
        };
        ApiError::Unreachable {
            engine: self.engine,
            socket,
            source,
            hint,
        }
    }

    fn http_error(&self, source: hyper::Error) -> ApiError {
        ApiError::Http {
            engine: self.engine,
            socket: self.socket.display().to_string(),
            source,
        }
    }
}

/// Percent-encodes `s` for a URL path segment or query value.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn encode_escapes_everything_but_unreserved_characters() {
        assert_eq!(super::encode("a-b_c.d"), "a-b_c.d");
        assert_eq!(super::encode("{\"x\":[1]}"), "%7B%22x%22%3A%5B1%5D%7D");
    }
}
