//! Forwarding one HTTP request to a ready upstream, and its response back.
//!
//! The request is rewritten once, in place: origin-form target on the configured upstream (never
//! the host the client named), hop-by-hop headers removed, `X-Forwarded-*` set, `Host` kept.
//! Bodies stream both ways. An upgrade (websocket) that the upstream accepts with 101 becomes a
//! byte tunnel that counts as an open connection of the route.

use std::net::SocketAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tracing::{debug, warn};

use super::{Body, InFlight, Upstream};
use crate::activity::Activity;
use crate::error::Error;

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
}

/// Forwards `req` to `upstream` and returns the response to send to the client.
pub async fn forward(
    mut req: Request<Incoming>,
    upstream: &Upstream,
    cx: Context<'_>,
    in_flight: InFlight,
) -> Response<Body> {
    let upgrade = requested_upgrade(&req);
    let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
    rewrite_request(&mut req, upstream, cx.client, upgrade.clone());

    let mut resp = match upstream.client().request(req).await {
        Ok(resp) => resp,
        Err(e) => {
            let err = Error::Upstream {
                route: cx.route.clone(),
                upstream: upstream.addr,
                cause: error_chain(&e),
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
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, upgrade);
        return Response::from_parts(parts, Body::empty());
    }

    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::UPGRADE);
    Response::from_parts(parts, Body::upstream(body, Some(in_flight)))
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

/// Turns the client's request into the one the upstream gets.
fn rewrite_request<B>(
    req: &mut Request<B>,
    upstream: &Upstream,
    client: SocketAddr,
    upgrade: Option<HeaderValue>,
) {
    // The authority the client asked for (HTTP/2 `:authority`, absolute-form) becomes Host.
    let authority = req.uri().authority().cloned();
    let path = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(http::uri::Scheme::HTTP);
    parts.authority = Some(upstream.authority.clone());
    parts.path_and_query = Some(path);
    *req.uri_mut() = Uri::from_parts(parts).expect("scheme, authority and path make a URI");
    *req.version_mut() = Version::HTTP_11;

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
    let client_ip = client.ip().to_canonical().to_string();
    let forwarded_for = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prior) => format!("{prior}, {client_ip}"),
        None => client_ip,
    };
    if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
        headers.insert(X_FORWARDED_FOR.clone(), value);
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
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
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in &named {
        headers.remove(name);
    }
}

/// An error and its sources on one line.
fn error_chain(err: &dyn std::error::Error) -> String {
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
        let upstream = Upstream::new("127.0.0.1:9101".parse().unwrap(), 1);
        rewrite_request(&mut req, &upstream, "10.1.2.3:5555".parse().unwrap(), None);
        req
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
        assert_eq!(req.uri().to_string(), "http://127.0.0.1:9101/a?b=c");
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
