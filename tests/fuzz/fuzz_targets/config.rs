//! The config file: `Config::parse` (src/config.rs, src/config/raw.rs) on any UTF-8 text.
//!
//! A rejection names the file it was given and a line and column inside the text (1-based,
//! columns in characters). An accepted config holds what validation promises: at least one
//! listener and one route, unique names, each host claimed by one route, and a route for each
//! `tcp` listener and for no other.

#![no_main]

use std::collections::HashSet;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use rouse::config::{Config, Protocol};

fuzz_target!(|text: &str| {
    let path = Path::new("/etc/rouse/rouse.toml");
    match Config::parse(path, text) {
        Err(e) => {
            assert_eq!(e.path, path);
            let lines: Vec<&str> = text.split('\n').collect();
            assert!(
                e.line >= 1 && e.line <= lines.len() + 1,
                "line {} of {}: {e}",
                e.line,
                lines.len()
            );
            let width = lines.get(e.line - 1).map_or(0, |l| l.chars().count());
            assert!(
                e.col >= 1 && e.col <= width + 1,
                "{}:{} (line has {width} characters): {e}",
                e.line,
                e.col
            );
            assert!(!e.message.is_empty());
        }
        Ok(config) => {
            assert_eq!(config.path, path);
            assert!(!config.listeners.is_empty());
            assert!(!config.routes.is_empty());

            let mut listener_names = HashSet::new();
            for l in &config.listeners {
                assert!(!l.name.is_empty() && !l.name.contains(':'), "{:?}", l.name);
                assert!(listener_names.insert(&l.name), "{:?} twice", l.name);
                match l.route {
                    Some(i) => {
                        assert_eq!(l.protocol, Protocol::Tcp);
                        assert!(i < config.routes.len());
                    }
                    None => assert_ne!(l.protocol, Protocol::Tcp),
                }
                assert!(l.tls.is_none() || l.protocol == Protocol::Https);
            }

            let mut route_names = HashSet::new();
            let mut hosts = HashSet::new();
            for r in &config.routes {
                assert!(route_names.insert(&r.name), "{:?} twice", r.name);
                for h in &r.hosts {
                    assert!(hosts.insert(h), "{h} claimed twice");
                }
            }

            assert_eq!(config.needs_restart_for(&config), None);
        }
    }
});
