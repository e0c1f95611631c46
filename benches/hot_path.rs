//! Micro-benchmarks of the per-request work rouse does before any I/O: finding the route for a
//! host (with 1 and 1,000 routes, exact and wildcard), and rewriting a request for its upstream.
//!
//!     cargo bench --bench hot_path

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use rouse::config::UpstreamProtocol;
use rouse::proxy::Upstream;
use rouse::proxy::http::rewrite_request;
use rouse::route::{HostMap, HostPattern, normalize_host};

fn host_map(routes: usize) -> HostMap<usize> {
    let mut map = HostMap::default();
    for i in 0..routes {
        map.insert(
            &HostPattern::parse(&format!("site{i}.example.com")).unwrap(),
            i,
        );
    }
    map.insert(&HostPattern::parse("*.wild.example.com").unwrap(), routes);
    map
}

fn lookup(c: &mut Criterion) {
    for routes in [1, 1000] {
        let map = host_map(routes);
        let last = format!("site{}.example.com", routes - 1);
        c.bench_function(&format!("lookup/{routes} routes/first"), |b| {
            b.iter(|| map.lookup(black_box("site0.example.com")))
        });
        c.bench_function(&format!("lookup/{routes} routes/last"), |b| {
            b.iter(|| map.lookup(black_box(&last)))
        });
        c.bench_function(&format!("lookup/{routes} routes/wildcard"), |b| {
            b.iter(|| map.lookup(black_box("a.b.wild.example.com")))
        });
    }
    c.bench_function("normalize/Host with port and case", |b| {
        b.iter(|| normalize_host(black_box("Site0.Example.com:8080")).map(|h| h.len()))
    });
}

fn rewrite(c: &mut Criterion) {
    let upstream = Upstream::new(
        "127.0.0.1:9101".parse().unwrap(),
        1,
        UpstreamProtocol::Http1,
        None,
    );
    let client = "10.0.0.7:40000".parse().unwrap();
    c.bench_function("rewrite/typical browser request", |b| {
        b.iter_batched(
            || {
                Request::builder()
                    .uri("/articles/42?page=2")
                    .header("host", "blog.example.com")
                    .header("user-agent", "Mozilla/5.0 (X11; Linux x86_64)")
                    .header("accept", "text/html,application/xhtml+xml")
                    .header("accept-encoding", "gzip, br")
                    .header("connection", "keep-alive")
                    .header("cookie", "session=abc123")
                    .body(())
                    .unwrap()
            },
            |mut req| {
                rewrite_request(&mut req, &upstream, client, false, None);
                req
            },
            criterion::BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, lookup, rewrite);
criterion_main!(benches);
