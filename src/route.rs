//! Host names: normalising what a client sent, and finding the route that serves it.
//!
//! A lookup costs one hash probe per label of the requested name, whatever the number of routes:
//! the exact table first, then the wildcard table for each parent suffix, longest first, so exact
//! names beat wildcards and the longest wildcard wins.
//!
//! This module knows nothing of backends or forwarding: it maps names to indexes.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::net::Ipv6Addr;

use http::Request;

/// A host a route claims: an exact name, or `*.suffix` (any name ending in `.suffix`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// `blog.example.com`.
    Exact(String),
    /// `*.example.com`, stored as `example.com`.
    Wildcard(String),
}

impl HostPattern {
    /// Parses a host as written in the config; the error says what to write instead.
    pub fn parse(text: &str) -> Result<HostPattern, String> {
        let lower = text.trim().to_ascii_lowercase();
        let lower = lower.strip_suffix('.').unwrap_or(&lower);
        if lower.is_empty() {
            return Err("is empty: write a host name like \"blog.example.com\"".into());
        }
        let (wild, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower),
        };
        if name.contains('*') {
            return Err(
                "a wildcard may only be a whole first label: write \"*.example.com\"".into(),
            );
        }
        if name.contains(':') && !name.starts_with('[') {
            return Err("hosts have no port: write the name alone, like \"example.com\"".into());
        }
        let valid_label = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if let Some(inner) = name.strip_prefix('[') {
            // An IPv6 literal, as a client sends it in brackets. Only a real address: anything
            // else after '[' is a name no request can carry (`normalize_host` ends a bracketed
            // name at its first ']').
            let is_ipv6 = inner
                .strip_suffix(']')
                .is_some_and(|addr| addr.parse::<Ipv6Addr>().is_ok());
            if !is_ipv6 {
                return Err(
                    "is not an IPv6 address in brackets: write one like \"[2001:db8::1]\"".into(),
                );
            }
        } else if !name.split('.').all(valid_label) {
            return Err(
                "is not a valid host name: use letters, digits and '-' in dot-separated labels"
                    .into(),
            );
        }
        Ok(if wild {
            HostPattern::Wildcard(name.to_owned())
        } else {
            HostPattern::Exact(name.to_owned())
        })
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(name) => f.write_str(name),
            HostPattern::Wildcard(suffix) => write!(f, "*.{suffix}"),
        }
    }
}

/// Maps host names to values (route indexes) by exact name and by wildcard suffix.
#[derive(Debug, Clone)]
pub struct HostMap<T> {
    exact: HashMap<String, T>,
    wildcard: HashMap<String, T>,
}

impl<T> Default for HostMap<T> {
    fn default() -> Self {
        HostMap {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
        }
    }
}

impl<T: Copy> HostMap<T> {
    /// Adds a pattern; a pattern given twice keeps the later value (config validation forbids it).
    pub fn insert(&mut self, pattern: &HostPattern, value: T) {
        match pattern {
            HostPattern::Exact(name) => self.exact.insert(name.clone(), value),
            HostPattern::Wildcard(suffix) => self.wildcard.insert(suffix.clone(), value),
        };
    }

    /// Finds the value for an already normalised host name.
    pub fn lookup(&self, host: &str) -> Option<T> {
        if let Some(v) = self.exact.get(host) {
            return Some(*v);
        }
        if self.wildcard.is_empty() {
            return None;
        }
        let mut rest = host;
        while let Some(dot) = rest.find('.') {
            rest = &rest[dot + 1..];
            if let Some(v) = self.wildcard.get(rest) {
                return Some(*v);
            }
        }
        None
    }
}

/// Normalises a host as a client sent it: port and trailing dot stripped, lowercased.
/// Returns `None` for an empty name.
pub fn normalize_host(raw: &str) -> Option<Cow<'_, str>> {
    let raw = raw.trim();
    let name = if raw.starts_with('[') {
        // An IPv6 literal keeps its brackets; only a port after them is removed.
        &raw[..raw.find(']').map_or(raw.len(), |i| i + 1)]
    } else {
        match raw.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => raw,
        }
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return None;
    }
    Some(if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    })
}

/// The host a request is for: the target's authority (absolute-form, HTTP/2 `:authority`) if it
/// has one, else the Host header.
pub fn request_host<B>(req: &Request<B>) -> Option<Cow<'_, str>> {
    if let Some(authority) = req.uri().authority() {
        return normalize_host(authority.as_str());
    }
    let value = req.headers().get(http::header::HOST)?.to_str().ok()?;
    normalize_host(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(patterns: &[&str]) -> HostMap<usize> {
        let mut m = HostMap::default();
        for (i, p) in patterns.iter().enumerate() {
            m.insert(&HostPattern::parse(p).unwrap(), i);
        }
        m
    }

    #[test]
    fn exact_beats_wildcard() {
        let m = map(&["*.example.com", "www.example.com"]);
        assert_eq!(m.lookup("www.example.com"), Some(1));
        assert_eq!(m.lookup("api.example.com"), Some(0));
    }

    #[test]
    fn longest_wildcard_wins() {
        let m = map(&["*.example.com", "*.blog.example.com"]);
        assert_eq!(m.lookup("a.blog.example.com"), Some(1));
        assert_eq!(m.lookup("x.y.blog.example.com"), Some(1));
        assert_eq!(m.lookup("a.shop.example.com"), Some(0));
    }

    #[test]
    fn wildcard_does_not_match_its_bare_suffix() {
        let m = map(&["*.example.com"]);
        assert_eq!(m.lookup("example.com"), None);
        assert_eq!(m.lookup("badexample.com"), None);
    }

    #[test]
    fn normalize_strips_port_dot_and_case() {
        assert_eq!(
            normalize_host("Blog.Example.COM.:8080").unwrap(),
            "blog.example.com"
        );
        assert_eq!(
            normalize_host("blog.example.com").unwrap(),
            "blog.example.com"
        );
        assert_eq!(normalize_host("[::1]:8080").unwrap(), "[::1]");
        assert_eq!(normalize_host(":80"), None);
        assert_eq!(normalize_host(""), None);
    }

    #[test]
    fn wildcard_must_be_a_whole_first_label() {
        assert!(HostPattern::parse("a.*.example.com").is_err());
        assert!(HostPattern::parse("*example.com").is_err());
        assert!(HostPattern::parse("*.").is_err());
        assert!(HostPattern::parse("example.com:80").is_err());
        assert_eq!(
            HostPattern::parse("*.Example.com.").unwrap(),
            HostPattern::Wildcard("example.com".into())
        );
    }

    #[test]
    fn brackets_hold_an_ipv6_address() {
        assert_eq!(
            HostPattern::parse("[::1]").unwrap(),
            HostPattern::Exact("[::1]".into())
        );
        assert_eq!(
            HostPattern::parse("[2001:DB8::1].").unwrap(),
            HostPattern::Exact("[2001:db8::1]".into())
        );
        // Once accepted, yet no request could name them: normalize_host ends a bracketed name
        // at its first ']'.
        assert!(HostPattern::parse("[]]").is_err());
        assert!(HostPattern::parse("[::1]:1]").is_err());
        assert!(HostPattern::parse("[]").is_err());
        assert!(HostPattern::parse("[example.com]").is_err());
        assert!(HostPattern::parse("[::1]:8080").is_err());
    }

    #[test]
    fn absolute_form_authority_beats_host_header() {
        let req = Request::builder()
            .uri("http://Evil.example:81/x")
            .header("host", "blog.example.com")
            .body(())
            .unwrap();
        assert_eq!(request_host(&req).unwrap(), "evil.example");
    }
}
