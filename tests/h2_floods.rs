//! HTTP/2 floods written frame by frame: rapid reset (HEADERS then RST_STREAM, thousands of
//! times) and a CONTINUATION flood (a header block that never ends). Each must cost bounded
//! memory and end the attacking connection, while other clients are served.

mod common;

use common::h2::*;
use common::*;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// The resident memory of process `pid`, in KiB.
fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_ends_the_connection_and_costs_bounded_memory() {
    let sb = Sandbox::new();
    let backend = EchoBackend::start().await;
    let rouse = Rouse::serve(&sb, &none_route("a", &["a.test"], backend.addr));
    assert_eq!(get(rouse.addr(), "a.test").await.status, 200);
    let before = rss_kib(rouse.pid());

    let mut stream = TcpStream::connect(rouse.addr()).await.unwrap();
    let mut flood = PREFACE.to_vec();
    flood.extend(frame(SETTINGS, 0, 0, &[]));
    let block = get_block("a.test");
    for i in 0..20_000u32 {
        let id = 2 * i + 1;
        flood.extend(frame(HEADERS, END_HEADERS | END_STREAM, id, &block));
        flood.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes()));
    }
    // rouse may close the connection partway: a failed write is the expected end.
    let _ = stream.write_all(&flood).await;
    assert!(
        saw_goaway(&mut stream).await,
        "no GOAWAY after 20,000 reset streams"
    );

    let forwarded = backend.heads().len();
    assert!(
        forwarded < 2_000,
        "{forwarded} of 20,000 reset streams reached the backend"
    );
    let after = rss_kib(rouse.pid());
    assert!(
        after < before + 32 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    eprintln!("rapid reset: {forwarded} streams forwarded, RSS {before} -> {after} KiB");
    assert_eq!(
        get(rouse.addr(), "a.test").await.status,
        200,
        "another client"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuation_flood_ends_the_connection_and_costs_bounded_memory() {
    let sb = Sandbox::new();
    let backend = EchoBackend::start().await;
    let rouse = Rouse::serve(&sb, &none_route("a", &["a.test"], backend.addr));
    assert_eq!(get(rouse.addr(), "a.test").await.status, 200);
    let before = rss_kib(rouse.pid());

    let mut stream = TcpStream::connect(rouse.addr()).await.unwrap();
    let mut start = PREFACE.to_vec();
    start.extend(frame(SETTINGS, 0, 0, &[]));
    start.extend(frame(HEADERS, END_STREAM, 1, &get_block("a.test")));
    stream.write_all(&start).await.unwrap();
    // Header fields ("x-flood: aaa…", literal without indexing, new name) in 16 KiB
    // CONTINUATION frames, none of them ending the block: 256 MiB if rouse kept reading.
    let mut field = vec![0x00, 0x07];
    field.extend_from_slice(b"x-flood");
    field.extend_from_slice(&[0x7f, 0x81, 0x7f]); // value length 127 + 255 = 382
    field.extend(std::iter::repeat_n(b'a', 382));
    let payload: Vec<u8> = field.iter().copied().cycle().take(16 * 1024).collect();
    let continuation = frame(CONTINUATION, 0, 1, &payload);
    let mut sent = 0usize;
    for _ in 0..16 * 1024 {
        match tokio::time::timeout(Duration::from_secs(5), stream.write_all(&continuation)).await {
            Ok(Ok(())) => sent += continuation.len(),
            // Closed by rouse (reset or broken pipe), or no longer read at all.
            Ok(Err(_)) | Err(_) => break,
        }
    }
    assert!(
        sent < 64 << 20,
        "rouse read {} MiB of a header block that never ends",
        sent >> 20
    );
    let after = rss_kib(rouse.pid());
    assert!(
        after < before + 32 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    eprintln!(
        "continuation flood: {} KiB sent before rouse stopped reading, RSS {before} -> {after} KiB",
        sent >> 10
    );
    assert!(
        backend.heads().len() == 1,
        "the flooding request reached the backend"
    );
    assert_eq!(
        get(rouse.addr(), "a.test").await.status,
        200,
        "another client"
    );
}
