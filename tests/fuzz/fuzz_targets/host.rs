//! Host names: `normalize_host`, `HostPattern::parse` and `HostMap` (src/route.rs).
//!
//! Input: UTF-8 text. The first line is a host as a client sent it; each further line is a host
//! as written in the config. Every pattern that parses goes into one `HostMap` (value: its line),
//! and lookups are checked against a plain model of the documented rules: an exact name beats a
//! wildcard, the longest wildcard wins, a pattern given twice keeps the later value.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rouse::route::{HostMap, HostPattern, normalize_host};

/// More patterns add nothing but time.
const MAX_PATTERNS: usize = 16;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let raw = lines.next().unwrap_or("");

    let mut patterns: Vec<HostPattern> = Vec::new();
    for line in lines.take(MAX_PATTERNS) {
        if let Ok(pattern) = HostPattern::parse(line) {
            check_pattern(&pattern);
            patterns.push(pattern);
        }
    }
    let mut map = HostMap::default();
    for (i, pattern) in patterns.iter().enumerate() {
        map.insert(pattern, i);
    }

    // The client's host.
    let normalized = normalize_host(raw);
    if let Some(name) = &normalized {
        check_normalized(raw, name);
        assert_eq!(map.lookup(name), model_lookup(&patterns, name), "{name:?}");
    }

    // Every name a pattern claims is reachable from what a client may send for it: any case,
    // a trailing dot, a port.
    let bits = raw
        .bytes()
        .fold(0u32, |h, b| h.rotate_left(5) ^ u32::from(b));
    for (i, pattern) in patterns.iter().enumerate() {
        let claimed = match pattern {
            HostPattern::Exact(name) => name.clone(),
            HostPattern::Wildcard(suffix) if !suffix.starts_with('[') => format!("x.{suffix}"),
            HostPattern::Wildcard(_) => continue,
        };
        let sent = as_a_client_may_send(&claimed, bits.rotate_left(i as u32));
        let got = normalize_host(&sent);
        assert_eq!(
            got.as_deref(),
            Some(claimed.as_str()),
            "{pattern:?} sent as {sent:?}"
        );
        let found = map.lookup(&claimed);
        assert!(found.is_some(), "{pattern:?} not found as {claimed:?}");
        assert_eq!(found, model_lookup(&patterns, &claimed), "{claimed:?}");
    }
});

/// What `HostPattern::parse` returns is canonical: lowercase, non-empty, and written back by
/// `Display` as text that parses to the same pattern.
fn check_pattern(pattern: &HostPattern) {
    let (HostPattern::Exact(name) | HostPattern::Wildcard(name)) = pattern;
    assert!(!name.is_empty(), "{pattern:?}");
    assert!(!name.bytes().any(|b| b.is_ascii_uppercase()), "{pattern:?}");
    assert!(!name.ends_with('.'), "{pattern:?}");
    let shown = pattern.to_string();
    assert_eq!(
        HostPattern::parse(&shown).as_ref(),
        Ok(pattern),
        "{shown:?}"
    );
}

/// `normalize_host` only trims, removes a port and a trailing dot (a suffix), and lowercases.
fn check_normalized(raw: &str, name: &str) {
    assert!(!name.is_empty(), "{raw:?}");
    assert!(
        !name.bytes().any(|b| b.is_ascii_uppercase()),
        "{raw:?} -> {name:?}"
    );
    let lowered = raw.trim().to_ascii_lowercase();
    assert!(lowered.starts_with(name), "{raw:?} -> {name:?}");
    // A name that a route could claim is its own normal form.
    if let Ok(HostPattern::Exact(claimed)) = HostPattern::parse(name)
        && claimed == name
    {
        assert_eq!(normalize_host(name).as_deref(), Some(name), "{raw:?}");
    }
}

/// The documented lookup rules, done the slow way. `*.suffix` matches any name ending in
/// `.suffix`, `.suffix` itself included (an empty first label).
fn model_lookup(patterns: &[HostPattern], host: &str) -> Option<usize> {
    let exact = patterns
        .iter()
        .rposition(|p| matches!(p, HostPattern::Exact(name) if name == host));
    if exact.is_some() {
        return exact;
    }
    let mut best: Option<(usize, usize)> = None; // (suffix length, index)
    for (i, p) in patterns.iter().enumerate() {
        if let HostPattern::Wildcard(suffix) = p
            && host.len() > suffix.len()
            && host.ends_with(suffix.as_str())
            && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
            && best.is_none_or(|(len, _)| suffix.len() >= len)
        {
            best = Some((suffix.len(), i));
        }
    }
    best.map(|(_, i)| i)
}

/// `name` with its letters' case flipped, a trailing dot and a port, as `bits` says.
fn as_a_client_may_send(name: &str, bits: u32) -> String {
    let mut sent: String = name
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if bits.rotate_right(i as u32) & 1 == 1 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect();
    if bits & 0x100 != 0 {
        sent.push('.');
    }
    if bits & 0x200 != 0 {
        sent.push_str(":8443");
    } else if bits & 0x400 != 0 {
        sent.push(':');
    }
    if bits & 0x800 != 0 {
        sent.insert(0, ' ');
    }
    sent
}
