//! A tiny HTTP server for demos, tests and benchmarks: `rouse static` (a hidden subcommand).
//!
//! It answers every request with a fixed body, or serves the files of one directory. It exists
//! so that the shipped demo config and the test suite need nothing installed but rouse itself.
//! It is not part of the proxy and the proxy never calls it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tracing::debug;

/// What the server answers with.
#[derive(Debug, Clone)]
pub enum Content {
    /// The same body for every request.
    Body(Bytes),
    /// Files under this directory; `/` is `index.html`.
    Dir(PathBuf),
}

/// Serves `content` on `addr` until the process is ended.
pub async fn serve(addr: SocketAddr, content: Content) -> std::io::Result<()> {
    // The same deep accept queue as rouse's own listeners: a cold route releases every held
    // request at once.
    let listener = crate::listen::listen_on(addr)?;
    listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(listener)?;
    let content = Arc::new(content);
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let content = content.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let content = content.clone();
                async move { Ok::<_, Infallible>(respond(&content, &req).await) }
            });
            if let Err(e) = builder
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(error = %e, "static connection error");
            }
        });
    }
}

async fn respond(content: &Content, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    match content {
        Content::Body(body) => text(StatusCode::OK, body.clone(), "text/plain; charset=utf-8"),
        Content::Dir(root) => match file_path(root, req.uri().path()) {
            None => text(
                StatusCode::NOT_FOUND,
                Bytes::from_static(b"not found\n"),
                "text/plain",
            ),
            Some(path) => match tokio::fs::read(&path).await {
                Ok(bytes) => text(StatusCode::OK, Bytes::from(bytes), content_type(&path)),
                Err(_) => text(
                    StatusCode::NOT_FOUND,
                    Bytes::from_static(b"not found\n"),
                    "text/plain",
                ),
            },
        },
    }
}

fn text(status: StatusCode, body: Bytes, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// Maps a request path into `root`, refusing anything that would leave it.
fn file_path(root: &Path, path: &str) -> Option<PathBuf> {
    let relative = Path::new(path.trim_start_matches('/'));
    if relative
        .components()
        .any(|c| !matches!(c, Component::Normal(_)))
    {
        return None;
    }
    let full = root.join(relative);
    Some(if path.ends_with('/') {
        full.join("index.html")
    } else {
        full
    })
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css",
        Some("js") => "text/javascript",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_never_leave_the_root() {
        let root = Path::new("/srv/site");
        assert_eq!(
            file_path(root, "/"),
            Some(PathBuf::from("/srv/site/index.html"))
        );
        assert_eq!(
            file_path(root, "/a/b.css"),
            Some(PathBuf::from("/srv/site/a/b.css"))
        );
        assert_eq!(file_path(root, "/../etc/passwd"), None);
        assert_eq!(file_path(root, "/a/../../x"), None);
    }
}
