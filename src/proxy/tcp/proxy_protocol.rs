//! The PROXY protocol header (HAProxy's spec, versions 1 and 2) that tells a TCP upstream the
//! client's address: written once, before any client byte, and nothing else.

use std::net::{IpAddr, SocketAddr};

use crate::config::ProxyProtocol;

/// The version 2 signature: `\r\n\r\n\0\r\nQUIT\n`.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Version 2, command PROXY.
const V2_VERSION_PROXY: u8 = 0x21;
/// TCP over IPv4.
const V2_TCP4: u8 = 0x11;
/// TCP over IPv6.
const V2_TCP6: u8 = 0x21;

/// The header announcing a connection from `source` (the client) to `destination` (the address
/// it connected to).
pub fn header(version: ProxyProtocol, source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let (source, destination) = same_family(source, destination);
    match version {
        ProxyProtocol::V1 => v1(source, destination),
        ProxyProtocol::V2 => v2(source, destination),
    }
}

/// Both addresses in one family, as the header has one: IPv4-mapped IPv6 addresses (a
/// dual-stack listener's IPv4 clients) become IPv4, and if only one side is IPv4 it is mapped
/// to IPv6.
fn same_family(source: SocketAddr, destination: SocketAddr) -> (SocketAddr, SocketAddr) {
    let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    let (source, destination) = (canonical(source), canonical(destination));
    let v6 = |a: SocketAddr| match a.ip() {
        IpAddr::V4(ip) => SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), a.port()),
        IpAddr::V6(_) => a,
    };
    if source.is_ipv4() == destination.is_ipv4() {
        (source, destination)
    } else {
        (v6(source), v6(destination))
    }
}

fn v1(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {family} {} {} {} {}\r\n",
        source.ip(),
        destination.ip(),
        source.port(),
        destination.port()
    )
    .into_bytes()
}

fn v2(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + 36);
    out.extend_from_slice(&V2_SIGNATURE);
    out.push(V2_VERSION_PROXY);
    match (source.ip(), destination.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.push(V2_TCP4);
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        (s, d) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(ip) => ip.to_ipv6_mapped(),
                IpAddr::V6(ip) => ip,
            };
            out.push(V2_TCP6);
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&v6(s).octets());
            out.extend_from_slice(&v6(d).octets());
        }
    }
    out.extend_from_slice(&source.port().to_be_bytes());
    out.extend_from_slice(&destination.port().to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v1_tcp4() {
        let h = header(
            ProxyProtocol::V1,
            addr("10.0.0.1:4000"),
            addr("10.0.0.2:443"),
        );
        assert_eq!(h, b"PROXY TCP4 10.0.0.1 10.0.0.2 4000 443\r\n");
    }

    #[test]
    fn v1_tcp6() {
        let h = header(
            ProxyProtocol::V1,
            addr("[::1]:4000"),
            addr("[2001:db8::2]:443"),
        );
        assert_eq!(h, b"PROXY TCP6 ::1 2001:db8::2 4000 443\r\n");
    }

    #[test]
    fn v1_mapped_ipv4_is_written_as_tcp4() {
        let h = header(
            ProxyProtocol::V1,
            addr("[::ffff:10.0.0.1]:4000"),
            addr("[::ffff:10.0.0.2]:443"),
        );
        assert_eq!(h, b"PROXY TCP4 10.0.0.1 10.0.0.2 4000 443\r\n");
    }

    #[test]
    fn v2_tcp4() {
        let h = header(
            ProxyProtocol::V2,
            addr("10.0.0.1:4000"),
            addr("10.0.0.2:443"),
        );
        let mut want = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
        want.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2, 0x0f, 0xa0, 0x01, 0xbb]);
        assert_eq!(h, want);
    }

    #[test]
    fn v2_tcp6_with_one_ipv4_side_maps_it() {
        let h = header(ProxyProtocol::V2, addr("10.0.0.1:1"), addr("[::1]:2"));
        assert_eq!(&h[12..16], b"\x21\x21\x00\x24");
        assert_eq!(h.len(), 16 + 36);
        assert_eq!(
            &h[16..32],
            &"::ffff:10.0.0.1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets()
        );
        assert_eq!(&h[48..], &[0, 1, 0, 2]);
    }
}
