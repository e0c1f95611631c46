//! Forwarding one HTTP request to a ready upstream, and its response back.
//!
//! The request is rewritten once, in place: origin-form target on the configured upstream (never
//! the host the client named), hop-by-hop headers removed, `X-Forwarded-*` set, `Host` kept.
//! Bodies stream both ways. An upgrade (websocket) that the upstream accepts with 101 becomes a
//! byte tunnel that counts as an open connection of the route.

use std::fmt::Write as _;
use std::net::SocketAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::TokioIo;
use tracing::{debug, warn};

use super::{Body, InFlight, Upstream};
use crate::activity::Activity;
use crate::config::UpstreamProtocol;
use crate::error::Error;
use crate::stall::Stall;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Headers that describe one hop, never forwarded (RFC 9110 §7.6.1, plus common legacy ones).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// What the forwarder needs to know about the route and the client.
pub struct Context<'a> {
    /// Route name, for errors.
    pub route: &'a std::sync::Arc<str>,
    /// The route's activity, so an upgraded connection counts as open.
    pub activity: &'a std::sync::Arc<Activity>,
    /// The client's address, for X-Forwarded-For.
    pub client: SocketAddr,
    /// Whether the client connection is TLS (X-Forwarded-Proto: https).
    pub https: bool,
    /// Marked while the request body waits for the client's next bytes.
    pub body_stall: &'a std::sync::Arc<Stall>,
}

/// Forwards `req` to `upstream` and returns the response to send to the client.
pub async fn forward(
    mut req: Request<hyper::body::Incoming>,
    upstream: &Upstream,
    cx: Context<'_>,
    in_flight: InFlight,
) -> Response<Body> {
    let upgrade = requested_upgrade(&req);
    let extended_connect = upgrade.is_none().then(|| extended_connect(&req)).flatten();
    let client_upgrade =
        (upgrade.is_some() || extended_connect.is_some()).then(|| hyper::upgrade::on(&mut req));
    let upgrade = upgrade.or_else(|| extended_connect.clone());
    rewrite_request(&mut req, upstream, cx.client, cx.https, upgrade.clone());
    let req = match extended_connect {
        // The HTTP/2 stream becomes the tunnel: nothing of it is a request body.
        Some(_) => {
            let (mut parts, _) = req.into_parts();
            as_http1_upgrade(&mut parts);
            Request::from_parts(parts, Body::empty())
        }
        None => req.map(|body| Body::incoming(body, cx.body_stall)),
    };

    let mut resp = match upstream.send(req, client_upgrade.is_some()).await {
        Ok(resp) => resp,
        Err(cause) => {
            let err = Error::Upstream {
                route: cx.route.clone(),
                upstream: upstream.addr,
                cause,
            };
            warn!(route = %cx.route, error = %err, "upstream request failed");
            return err.to_response();
        }
    };

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS
        && let (Some(upgrade), Some(client_upgrade)) = (upgrade, client_upgrade)
    {
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        let tunnel_guard = cx.activity.enter();
        let route = cx.route.clone();
        tokio::spawn(async move {
            let _open = tunnel_guard;
            match tokio::try_join!(client_upgrade, upstream_upgrade) {
                Ok((client, upstream)) => {
                    let mut client = TokioIo::new(client);
                    let mut upstream = TokioIo::new(upstream);
                    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                        Ok((up, down)) => debug!(route = %route, up, down, "tunnel closed"),
                        Err(e) => debug!(route = %route, error = %e, "tunnel ended"),
                    }
                }
                Err(e) => debug!(route = %route, error = %e, "upgrade failed"),
            }
        });
        let (mut parts, _) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        if extended_connect.is_some() {
            // HTTP/2 accepts an extended CONNECT with 200 and no handshake headers (RFC 8441).
            parts.status = StatusCode::OK;
            parts.headers.remove(header::UPGRADE);
            parts.headers.remove(header::SEC_WEBSOCKET_ACCEPT);
        } else {
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(header::UPGRADE, upgrade);
        }
        return Response::from_parts(parts, Body::empty());
    }

    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::UPGRADE);
    Response::from_parts(parts, Body::received(body, Some(in_flight)))
}

/// The protocol an HTTP/1.1 client asks to upgrade to, if it does.
fn requested_upgrade<B>(req: &Request<B>) -> Option<HeaderValue> {
    if req.version() != Version::HTTP_11 {
        return None;
    }
    let asks = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| req.headers().get(header::UPGRADE).cloned())
        .flatten()
}

/// The protocol an HTTP/2 extended CONNECT (RFC 8441, e.g. a websocket) asks for, if it is one.
fn extended_connect<B>(req: &Request<B>) -> Option<HeaderValue> {
    if req.method() != http::Method::CONNECT {
        return None;
    }
    let protocol = req.extensions().get::<hyper::ext::Protocol>()?;
    HeaderValue::from_str(protocol.as_str()).ok()
}

/// Rewrites an extended CONNECT into the HTTP/1.1 upgrade request an upstream understands: a
/// GET with `Upgrade`, and for websockets the handshake key HTTP/2 clients do not send.
fn as_http1_upgrade(parts: &mut http::request::Parts) {
    parts.method = http::Method::GET;
    let is_websocket = parts
        .headers
        .get(header::UPGRADE)
        .is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"websocket"));
    if is_websocket && !parts.headers.contains_key(header::SEC_WEBSOCKET_KEY) {
        parts
            .headers
            .insert(header::SEC_WEBSOCKET_KEY, websocket_key());
    }
}

/// A fresh `Sec-WebSocket-Key`: 16 unpredictable bytes, base64.
fn websocket_key() -> HeaderValue {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut bytes = [0u8; 16];
    for half in bytes.chunks_mut(8) {
        // RandomState is seeded from the OS per process; the counter makes each key distinct.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        half.copy_from_slice(&h.finish().to_le_bytes());
    }
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(24);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    HeaderValue::from_str(&out).expect("base64 is a valid header value")
}

/// Turns the client's request into the one the upstream gets (public for the benchmarks).
#[doc(hidden)]
pub fn rewrite_request<B>(
    req: &mut Request<B>,
    upstream: &Upstream,
    client: SocketAddr,
    https: bool,
    upgrade: Option<HeaderValue>,
) {
    // The authority the client asked for (HTTP/2 `:authority`, absolute-form) becomes Host.
    let authority = req.uri().authority().cloned();
    let path = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    // Over HTTP/2 the site travels in `:authority`, taken from the URI; the connection itself
    // always goes to the upstream (see `FixedConnector`).
    let site = match upstream.protocol {
        UpstreamProtocol::H2c | UpstreamProtocol::H2 => authority.clone().or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .and_then(|h| h.parse().ok())
        }),
        UpstreamProtocol::Http1 => None,
    };
    *req.uri_mut() = match upstream.protocol {
        // HTTP/1.1 upstreams get the origin form; the site is in Host.
        UpstreamProtocol::Http1 => Uri::from(path),
        UpstreamProtocol::H2c | UpstreamProtocol::H2 => {
            let mut parts = http::uri::Parts::default();
            parts.scheme = Some(if upstream.protocol == UpstreamProtocol::H2 {
                http::uri::Scheme::HTTPS
            } else {
                http::uri::Scheme::HTTP
            });
            parts.authority = Some(site.unwrap_or_else(|| upstream.authority.clone()));
            parts.path_and_query = Some(path);
            Uri::from_parts(parts).expect("scheme, authority and path make a URI")
        }
    };
    *req.version_mut() = match upstream.protocol {
        UpstreamProtocol::Http1 => Version::HTTP_11,
        UpstreamProtocol::H2c | UpstreamProtocol::H2 => Version::HTTP_2,
    };

    let headers = req.headers_mut();
    strip_hop_by_hop(headers);
    headers.remove(header::UPGRADE);
    if let Some(authority) = authority
        && let Ok(value) = HeaderValue::from_str(authority.as_str())
    {
        headers.insert(header::HOST, value);
    }
    if let Some(host) = headers.get(header::HOST).cloned() {
        headers.insert(X_FORWARDED_HOST.clone(), host);
    }
    // One allocation: the prior chain (if any), then the client's address.
    let mut forwarded_for = String::with_capacity(64);
    if let Some(prior) = headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        forwarded_for.push_str(prior);
        forwarded_for.push_str(", ");
    }
    let _ = write!(forwarded_for, "{}", client.ip().to_canonical());
    if let Ok(value) = HeaderValue::from_maybe_shared(bytes::Bytes::from(forwarded_for)) {
        headers.insert(X_FORWARDED_FOR.clone(), value);
    }
    let proto = if https { "https" } else { "http" };
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    if let Some(upgrade) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, upgrade);
    }
}

/// Removes hop-by-hop headers, including those the Connection header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        strip_connection_named(headers);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Removes the headers the Connection header names.
fn strip_connection_named(headers: &mut HeaderMap) {
    // Values are cheap to clone (shared bytes); the clones free `headers` for removal.
    let values: Vec<HeaderValue> = headers
        .get_all(header::CONNECTION)
        .iter()
        .cloned()
        .collect();
    for value in &values {
        let Ok(value) = value.to_str() else { continue };
        for token in value.split(',').map(str::trim) {
            // The common tokens name no header of their own (Keep-Alive is hop-by-hop anyway).
            if token.eq_ignore_ascii_case("keep-alive")
                || token.eq_ignore_ascii_case("close")
                || token.eq_ignore_ascii_case("upgrade")
            {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                headers.remove(name);
            }
        }
    }
}

/// An error and its sources on one line.
pub(super) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(req: Request<()>) -> Request<()> {
        let mut req = req;
        let upstream = Upstream::new(
            "127.0.0.1:9101".parse().unwrap(),
            1,
            UpstreamProtocol::Http1,
            None,
        );
        rewrite_request(
            &mut req,
            &upstream,
            "10.1.2.3:5555".parse().unwrap(),
            false,
            None,
        );
        req
    }

    #[test]
    fn websocket_keys_are_16_bytes_of_base64_and_distinct() {
        let a = websocket_key();
        let b = websocket_key();
        assert_eq!(a.len(), 24);
        assert!(a.to_str().unwrap().ends_with("=="));
        assert_ne!(a, b);
    }

    #[test]
    fn absolute_form_goes_to_the_configured_upstream() {
        let req = rewritten(
            Request::builder()
                .uri("http://evil.example:6666/a?b=c")
                .header("host", "blog.example.com")
                .body(())
                .unwrap(),
        );
        assert_eq!(req.uri().to_string(), "/a?b=c");
        assert_eq!(req.headers()["host"], "evil.example:6666");
    }

    #[test]
    fn hop_by_hop_headers_are_removed_and_forwarded_headers_set() {
        let req = rewritten(
            Request::builder()
                .uri("/x")
                .header("host", "blog.example.com")
                .header("connection", "keep-alive, x-secret")
                .header("x-secret", "1")
                .header("keep-alive", "timeout=5")
                .header("te", "trailers")
                .header("x-forwarded-for", "192.0.2.1")
                .header("x-forwarded-proto", "https")
                .body(())
                .unwrap(),
        );
        let h = req.headers();
        for gone in ["connection", "x-secret", "keep-alive", "te"] {
            assert!(h.get(gone).is_none(), "{gone} was forwarded");
        }
        assert_eq!(h["host"], "blog.example.com");
        assert_eq!(h["x-forwarded-host"], "blog.example.com");
        assert_eq!(h["x-forwarded-for"], "192.0.2.1, 10.1.2.3");
        assert_eq!(h["x-forwarded-proto"], "http");
    }
}
