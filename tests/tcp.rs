//! `tcp` and `tls-passthrough` listeners end to end: the real binary relaying bytes between real
//! sockets, starting an exec backend on the first connection and stopping it after the last,
//! half-closes, SNI routing without terminating TLS, PROXY protocol headers, a large transfer.

mod common;

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use common::tcp::*;
use common::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// Reads until the peer ends its stream, within [`IO_DEADLINE`].
async fn read_all(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(IO_DEADLINE, stream.read_to_end(&mut out))
        .await
        .expect("peer did not close within the deadline")
        .expect("read");
    out
}

#[tokio::test]
async fn first_connection_starts_the_backend_and_it_stops_after_the_last_one_closes() {
    let sb = Sandbox::new();
    let port = free_port();
    let command = sh_cmd(&sb, &python_echo_script(&sb, "echo.pids", port));
    let rouse = serve(
        &sb,
        "tcp",
        Some("echo"),
        &exec_route(
            "echo",
            &[],
            port,
            &command,
            "idle_timeout = \"300ms\"\nstart_timeout = \"10s\"",
        ),
    );

    let mut client = TcpStream::connect(rouse.addr()).await.unwrap();
    client.write_all(b"ping\n").await.unwrap();
    let mut echoed = [0u8; 5];
    tokio::time::timeout(IO_DEADLINE, client.read_exact(&mut echoed))
        .await
        .expect("no echo within the deadline")
        .unwrap();
    assert_eq!(&echoed, b"ping\n");
    let pid = sb.last_pid("echo.pids").expect("the backend wrote its pid");

    // An open connection is activity: several idle_timeouts pass and the backend stays.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(alive(pid), "backend stopped while a connection was open");
    client.write_all(b"still there\n").await.unwrap();
    client.shutdown().await.unwrap();
    assert_eq!(read_all(&mut client).await, b"still there\nbye\n");
    drop(client);

    assert!(
        wait_until(Duration::from_secs(5), || !alive(pid)).await,
        "backend (pid {pid}) still running 5s after the last connection closed (idle_timeout 300ms)"
    );
    assert!(
        rouse
            .wait_log(&["backend stopped", "route=echo"], Duration::from_secs(2))
            .await,
        "no 'backend stopped' log line"
    );
    assert_eq!(sb.lines("echo.pids"), 1, "started once");

    // The next connection starts it again.
    let mut client = TcpStream::connect(rouse.addr()).await.unwrap();
    client.write_all(b"again").await.unwrap();
    client.shutdown().await.unwrap();
    assert_eq!(read_all(&mut client).await, b"againbye\n");
    assert_eq!(sb.lines("echo.pids"), 2, "started again");
}

#[tokio::test]
async fn client_half_close_still_receives_the_whole_answer() {
    // Answers only once the client has ended its stream: proves rouse passed the FIN on and
    // kept the other direction open.
    let backend = TestBackend::start(|mut stream| async move {
        let mut got = Vec::new();
        if stream.read_to_end(&mut got).await.is_ok() {
            let answer = format!("got {} bytes\n", got.len()).repeat(10_000);
            let _ = stream.write_all(answer.as_bytes()).await;
        }
    })
    .await;
    let sb = Sandbox::new();
    let rouse = serve(
        &sb,
        "tcp",
        Some("b"),
        &tcp_none_route("b", backend.addr, ""),
    );

    let mut client = TcpStream::connect(rouse.addr()).await.unwrap();
    client.write_all(&vec![b'x'; 100_000]).await.unwrap();
    client.shutdown().await.unwrap();
    let answer = read_all(&mut client).await;
    assert_eq!(answer, "got 100000 bytes\n".repeat(10_000).as_bytes());
}

#[tokio::test]
async fn upstream_half_close_leaves_the_client_free_to_send() {
    let received = Arc::new(Mutex::new(None));
    let seen = received.clone();
    let backend = TestBackend::start(move |mut stream| {
        let seen = seen.clone();
        async move {
            let _ = stream.write_all(b"hello, then I stop talking").await;
            let _ = stream.shutdown().await;
            let mut got = Vec::new();
            let _ = stream.read_to_end(&mut got).await;
            *seen.lock().unwrap() = Some(got);
        }
    })
    .await;
    let sb = Sandbox::new();
    let rouse = serve(
        &sb,
        "tcp",
        Some("b"),
        &tcp_none_route("b", backend.addr, ""),
    );

    let mut client = TcpStream::connect(rouse.addr()).await.unwrap();
    assert_eq!(read_all(&mut client).await, b"hello, then I stop talking");
    // The client's direction is still open after the upstream's FIN.
    client
        .write_all(b"but I still have things to say")
        .await
        .unwrap();
    client.shutdown().await.unwrap();
    assert!(
        wait_until(IO_DEADLINE, || received.lock().unwrap().is_some()).await,
        "the backend never saw the client's end of stream"
    );
    assert_eq!(
        received.lock().unwrap().as_deref(),
        Some(&b"but I still have things to say"[..])
    );
}

#[tokio::test]
async fn proxy_protocol_v1_and_v2_tell_the_backend_the_client_address() {
    // Reads the header, answers "SOURCE DESTINATION\n", then echoes.
    let backend = TestBackend::start(|mut stream| async move {
        let answer = match read_proxy_header(&mut stream).await {
            Ok((src, dst)) => format!("{src} {dst}\n"),
            Err(e) => format!("bad header: {e}\n"),
        };
        let _ = stream.write_all(answer.as_bytes()).await;
        let (mut r, mut w) = stream.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
    })
    .await;
    for version in ["v1", "v2"] {
        let sb = Sandbox::new();
        let route = tcp_none_route(
            "pp",
            backend.addr,
            &format!("proxy_protocol = \"{version}\""),
        );
        let rouse = serve(&sb, "tcp", Some("pp"), &route);
        let mut client = TcpStream::connect(rouse.addr()).await.unwrap();
        let me = client.local_addr().unwrap();
        client.write_all(b"payload after the header").await.unwrap();
        client.shutdown().await.unwrap();
        let answer = String::from_utf8(read_all(&mut client).await).unwrap();
        assert_eq!(
            answer,
            format!("{me} {}\npayload after the header", rouse.addr()),
            "PROXY {version}"
        );
    }
}

#[tokio::test]
async fn tls_passthrough_routes_by_sni_and_the_client_sees_the_backends_own_certificate() {
    let (app, app_cert) = tls_backend(&["app.test"]).await;
    let (api, api_cert) = tls_backend(&["api.test"]).await;
    let sb = Sandbox::new();
    let routes = none_route("app", &["app.test"], app.addr)
        + &none_route("api", &["*.api.test", "api.test"], api.addr);
    let rouse = serve(&sb, "tls-passthrough", None, &routes);

    // Each handshake completes against the backend's certificate, which rouse does not have:
    // rouse only passed the bytes on.
    let got = tls_get(rouse.addr(), "app.test", &app_cert).await.unwrap();
    assert_eq!(got, "backend says: app.test");
    let got = tls_get(rouse.addr(), "api.test", &api_cert).await.unwrap();
    assert_eq!(got, "backend says: api.test");

    // A ClientHello trickled in small pieces, several TCP segments apart, still routes.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(app_cert.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let stream = Trickle::new(TcpStream::connect(rouse.addr()).await.unwrap());
    let name = rustls::pki_types::ServerName::try_from("app.test").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, stream)
        .await
        .expect("handshake through rouse with a trickled ClientHello");
    let mut got = String::new();
    tls.read_to_string(&mut got).await.unwrap();
    assert_eq!(got, "backend says: app.test");
}

#[tokio::test]
async fn tls_passthrough_closes_connections_it_cannot_route() {
    let (app, app_cert) = tls_backend(&["app.test", "unknown.test"]).await;
    let sb = Sandbox::new();
    let body = format!(
        "[proxy]\nhandshake_timeout = \"500ms\"\n\n{}",
        none_route("app", &["app.test"], app.addr)
    );
    let rouse = serve(&sb, "tls-passthrough", None, &body);

    // A name no route has: closed, even though the backend would have accepted it.
    let err = tls_get(rouse.addr(), "unknown.test", &app_cert).await;
    assert!(
        err.is_err(),
        "handshake for an unknown name succeeded: {err:?}"
    );

    // Not TLS at all: closed without an answer.
    let mut client = TcpStream::connect(rouse.addr()).await.unwrap();
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_all(&mut client).await, b"");

    // Silent: closed after handshake_timeout.
    let started = std::time::Instant::now();
    let mut client = TcpStream::connect(rouse.addr()).await.unwrap();
    assert_eq!(read_all(&mut client).await, b"");
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );

    // The known name still works.
    let got = tls_get(rouse.addr(), "app.test", &app_cert).await.unwrap();
    assert_eq!(got, "backend says: app.test");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_megabytes_each_way_arrive_intact() {
    const CHUNK: usize = 64 * 1024;
    const CHUNKS: u64 = 1600; // 100 MiB
    let backend = TestBackend::echo().await;
    let sb = Sandbox::new();
    let rouse = serve(
        &sb,
        "tcp",
        Some("bulk"),
        &tcp_none_route("bulk", backend.addr, ""),
    );

    // Chunk i is a fixed pseudo-random block with i stamped in its first 8 bytes, so that a
    // lost, repeated or reordered chunk shows.
    let mut base = vec![0u8; CHUNK];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for b in base.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let base = Arc::new(base);
    let chunk = |base: &[u8], i: u64, buf: &mut [u8]| {
        buf.copy_from_slice(base);
        buf[..8].copy_from_slice(&i.to_le_bytes());
    };

    let client = TcpStream::connect(rouse.addr()).await.unwrap();
    let (mut r, mut w) = client.into_split();
    let sent = base.clone();
    let writer = tokio::spawn(async move {
        let mut buf = vec![0u8; CHUNK];
        for i in 0..CHUNKS {
            chunk(&sent, i, &mut buf);
            w.write_all(&buf).await.unwrap();
        }
        w.shutdown().await.unwrap();
    });
    let reader = async {
        let (mut got, mut want) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
        for i in 0..CHUNKS {
            r.read_exact(&mut got).await.unwrap();
            chunk(&base, i, &mut want);
            assert!(got == want, "chunk {i} of {CHUNKS} differs");
        }
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "{} bytes too many", rest.len());
    };
    tokio::time::timeout(IO_DEADLINE, reader)
        .await
        .expect("100 MiB did not come back within the deadline");
    writer.await.unwrap();
}

/// A client socket that sends its first bytes a few at a time, each write a separate segment
/// some milliseconds after the last, so the server reads a ClientHello in pieces.
struct Trickle {
    inner: TcpStream,
    sent: usize,
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Trickle {
    const SLOW_BYTES: usize = 400;
    const PIECE: usize = 37;

    fn new(inner: TcpStream) -> Trickle {
        inner.set_nodelay(true).unwrap();
        Trickle {
            inner,
            sent: 0,
            pause: None,
        }
    }
}

impl AsyncRead for Trickle {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Trickle {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.sent >= Self::SLOW_BYTES {
            return Pin::new(&mut self.inner).poll_write(cx, buf);
        }
        if let Some(pause) = self.pause.as_mut() {
            std::task::ready!(pause.as_mut().poll(cx));
            self.pause = None;
        }
        let n = buf.len().min(Self::PIECE);
        let written = std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, &buf[..n]))?;
        self.sent += written;
        self.pause = Some(Box::pin(tokio::time::sleep(Duration::from_millis(5))));
        Poll::Ready(Ok(written))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
