//! The errors a client can be answered with, and their single mapping to HTTP responses.
//!
//! Every synthetic response rouse sends is built here: one status per error, one line of body
//! that names the route and the cause. Nothing else in the crate picks a status code for an error.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use crate::backend::StartError;
use crate::proxy::Body;

/// Why a request could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request named no host at all (no Host header, no authority).
    #[error("request has no host")]
    NoHost,
    /// The request target is longer than `max_uri_bytes`.
    #[error("request target of {length} bytes is longer than max_uri_bytes ({limit})")]
    UriTooLong {
        /// Bytes in the request target.
        length: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The host matches no configured route.
    #[error("no route for host \"{0}\"")]
    NoRoute(String),
    /// A request on a TLS connection names a host the connection's certificate was not chosen
    /// for.
    #[error(
        "host \"{host}\" is not served on this connection (TLS name \"{sni}\"): open a new connection"
    )]
    Misdirected {
        /// The request's host.
        host: String,
        /// The name the TLS handshake gave.
        sni: String,
    },
    /// Too many requests are already held while the route's backend starts.
    #[error("route \"{route}\": too many requests waiting for the backend to start")]
    TooManyPending {
        /// Route name.
        route: Arc<str>,
    },
    /// The backend failed to start (or was not ready in time).
    #[error("route \"{route}\": {cause}")]
    StartFailed {
        /// Route name.
        route: Arc<str>,
        /// What went wrong; shared by every request held on that start.
        cause: Arc<StartError>,
    },
    /// rouse is shutting down and will not start the backend any more.
    #[error("route \"{route}\": rouse is shutting down")]
    ShuttingDown {
        /// Route name.
        route: Arc<str>,
    },
    /// A passive request (health check, monitor) for a route whose backend is not running.
    #[error("route \"{route}\": the backend is asleep, and this request does not wake it")]
    Sleeping {
        /// Route name.
        route: Arc<str>,
    },
    /// A browser waited `starting_page` for a start: it gets a page that reloads itself.
    #[error("route \"{route}\": starting")]
    Starting {
        /// Route name.
        route: Arc<str>,
    },
    /// The backend was ready but the forwarded request failed.
    #[error("route \"{route}\": upstream {upstream}: {cause}")]
    Upstream {
        /// Route name.
        route: Arc<str>,
        /// The upstream address.
        upstream: std::net::SocketAddr,
        /// The client error, flattened to its message chain.
        cause: String,
    },
}

/// Seconds a client is told to wait before retrying a request refused with 503.
const RETRY_AFTER_SECS: u64 = 1;

impl From<&Error> for StatusCode {
    fn from(err: &Error) -> Self {
        match err {
            Error::NoHost | Error::NoRoute(_) => StatusCode::NOT_FOUND,
            Error::UriTooLong { .. } => StatusCode::URI_TOO_LONG,
            Error::Misdirected { .. } => StatusCode::MISDIRECTED_REQUEST,
            Error::TooManyPending { .. }
            | Error::ShuttingDown { .. }
            | Error::Sleeping { .. }
            | Error::Starting { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Error::StartFailed { cause, .. } => match **cause {
                StartError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
                _ => StatusCode::BAD_GATEWAY,
            },
            Error::Upstream { .. } => StatusCode::BAD_GATEWAY,
        }
    }
}

impl Error {
    /// The response a client gets for this error: its status and a one-line plain-text body.
    pub fn to_response(&self) -> Response<Body> {
        let status = StatusCode::from(self);
        let (body, content_type) = match self {
            Error::Starting { route } => (starting_page(route), "text/html; charset=utf-8"),
            _ => (format!("rouse: {self}\n"), "text/plain; charset=utf-8"),
        };
        let mut resp = Response::new(Body::full(Bytes::from(body)));
        *resp.status_mut() = status;
        let headers = resp.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        if let Error::Starting { .. } = self {
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        resp
    }
}

/// The page a browser gets while its site starts: it says so, and reloads itself every second.
fn starting_page(route: &str) -> String {
    let route: String = route
        .chars()
        .map(|c| match c {
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '&' => "&amp;".to_string(),
            '"' => "&quot;".to_string(),
            c => c.to_string(),
        })
        .collect();
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{RETRY_AFTER_SECS}\">\
         <title>Starting {route}</title></head>\n<body><p>{route} is starting. \
         This page reloads itself.</p></body></html>\n"
    )
}

/// Formats a duration the way the config file writes it ("300ms", "20s").
pub fn fmt_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}
