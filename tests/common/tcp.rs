//! Helpers for the `tcp` and `tls-passthrough` tests: rouse on a listener of either protocol,
//! byte-level backends running in the test (echo, half-close, PROXY header, TLS), a Python echo
//! server for exec routes, and a TLS client.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::{Rouse, Sandbox, q, spawn_inherited, sq};

/// Rouse serving `body` (routes) on its inherited socket "http", spoken as `protocol` (`"tcp"` or
/// `"tls-passthrough"`), with `route` as the listener's `route` key when given.
pub fn serve(sb: &Sandbox, protocol: &str, route: Option<&str>, body: &str) -> Rouse {
    let route = route
        .map(|r| format!("route = {}\n", q(r)))
        .unwrap_or_default();
    let listener = format!(
        "[[listener]]\nname = \"http\"\nbind = \"127.0.0.1:1\"\nprotocol = {}\n{route}\n",
        q(protocol)
    );
    let config = sb.write("rouse.toml", &format!("{listener}{body}"));
    let socket = std::net::TcpListener::bind("127.0.0.1:0").expect("bind listener");
    let addr = socket.local_addr().unwrap();
    let child = spawn_inherited(
        &config,
        &sb.path("rouse.log"),
        &[std::os::fd::AsRawFd::as_raw_fd(&socket)],
        Some("http"),
    );
    drop(socket);
    Rouse::from_child(child, addr, sb.path("rouse.log"))
}

/// A `[[route]]` with no hosts (reached through a `tcp` listener) and an always-on upstream.
pub fn tcp_none_route(name: &str, upstream: SocketAddr, extra: &str) -> String {
    format!(
        "[[route]]\nname = {}\nupstream = \"{upstream}\"\n{extra}\n[route.backend]\nkind = \"none\"\n\n",
        q(name)
    )
}

/// The real Python interpreter (not a pyenv shim, which costs a bash start each time).
pub fn python() -> &'static str {
    static PYTHON: OnceLock<String> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let out = std::process::Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .expect("python3 is needed for the exec echo backend");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    })
}

/// A `/bin/sh` script that appends its pid to `pids_file` and becomes a Python echo server on
/// `port`: echoes every byte, and when the client ends its stream answers `bye\n` and closes.
pub fn python_echo_script(sb: &Sandbox, pids_file: &str, port: u16) -> String {
    let program = format!(
        r#"
import socket, threading
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", {port}))
s.listen(64)
def serve(c):
    while True:
        d = c.recv(65536)
        if not d:
            break
        c.sendall(d)
    c.sendall(b"bye\n")
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#
    );
    format!(
        "echo $$ >> {}; exec {} -c {}",
        sq(&sb.p(pids_file)),
        sq(python()),
        sq(&program)
    )
}

/// A backend running in the test: accepts connections on 127.0.0.1 and hands each to `handle`.
pub struct TestBackend {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl TestBackend {
    pub async fn start<F, Fut>(handle: F) -> TestBackend
    where
        F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = Arc::new(handle);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(handle(stream));
            }
        });
        TestBackend { addr, task }
    }

    /// Echoes every byte back; shuts down its write side when the client ends its stream.
    pub async fn echo() -> TestBackend {
        TestBackend::start(|mut stream| async move {
            let (mut r, mut w) = stream.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
            let _ = w.shutdown().await;
        })
        .await
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The client address a PROXY protocol header announces, read from `stream` (v1 or v2):
/// `(source, destination)`.
pub async fn read_proxy_header(
    stream: &mut TcpStream,
) -> std::io::Result<(SocketAddr, SocketAddr)> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let mut first = [0u8; 6];
    stream.read_exact(&mut first).await?;
    if &first == b"PROXY " {
        let mut line = Vec::new();
        while !line.ends_with(b"\r\n") {
            line.push(stream.read_u8().await?);
            if line.len() > 107 {
                return Err(bad("v1 line too long"));
            }
        }
        let line = String::from_utf8(line).map_err(|_| bad("v1 not utf-8"))?;
        let parts: Vec<&str> = line.trim_end().split(' ').collect();
        let [family, src, dst, sport, dport] = parts[..] else {
            return Err(bad("v1 has not 5 fields"));
        };
        if family != "TCP4" && family != "TCP6" {
            return Err(bad("v1 family"));
        }
        let addr = |ip: &str, port: &str| -> std::io::Result<SocketAddr> {
            Ok(SocketAddr::new(
                ip.parse().map_err(|_| bad("v1 ip"))?,
                port.parse().map_err(|_| bad("v1 port"))?,
            ))
        };
        return Ok((addr(src, sport)?, addr(dst, dport)?));
    }
    let mut rest = [0u8; 10];
    stream.read_exact(&mut rest).await?;
    let head: Vec<u8> = first.iter().chain(&rest).copied().collect();
    if &head[..12] != b"\r\n\r\n\0\r\nQUIT\n" || head[12] != 0x21 {
        return Err(bad("not a PROXY v2 signature and version/command 0x21"));
    }
    let len = u16::from_be_bytes([head[14], head[15]]) as usize;
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
    match (head[13], len) {
        (0x11, 12) => {
            let ip = |at: usize| {
                std::net::Ipv4Addr::new(body[at], body[at + 1], body[at + 2], body[at + 3])
            };
            Ok(((ip(0), port(8)).into(), (ip(4), port(10)).into()))
        }
        (0x21, 36) => {
            let ip = |at: usize| {
                std::net::Ipv6Addr::from(<[u8; 16]>::try_from(&body[at..at + 16]).unwrap())
            };
            Ok(((ip(0), port(32)).into(), (ip(16), port(34)).into()))
        }
        _ => Err(bad("v2 family/length")),
    }
}

// === TLS ===

/// A certificate for `names`, self-signed: `(cert DER, key DER)`.
pub fn self_signed(
    names: &[&str],
) -> (
    rustls::pki_types::CertificateDer<'static>,
    rustls::pki_types::PrivateKeyDer<'static>,
) {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let certified = rcgen::generate_simple_self_signed(names).unwrap();
    (
        certified.cert.der().clone(),
        rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into()),
    )
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS backend running in the test, with its own certificate for `names`: after the
/// handshake it answers `backend says: NAME` (the SNI it saw) and closes.
pub async fn tls_backend(
    names: &[&str],
) -> (TestBackend, rustls::pki_types::CertificateDer<'static>) {
    let (cert, key) = self_signed(names);
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let backend = TestBackend::start(move |stream| {
        let acceptor = acceptor.clone();
        async move {
            let Ok(mut tls) = acceptor.accept(stream).await else {
                return;
            };
            let sni = tls.get_ref().1.server_name().unwrap_or("-").to_string();
            let _ = tls
                .write_all(format!("backend says: {sni}").as_bytes())
                .await;
            let _ = tls.shutdown().await;
        }
    })
    .await;
    (backend, cert)
}

/// Connects to `addr` with TLS asking for `name`, trusting only `cert`; returns what the server
/// sent until it closed.
pub async fn tls_get(
    addr: SocketAddr,
    name: &str,
    cert: &rustls::pki_types::CertificateDer<'static>,
) -> std::io::Result<String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let server_name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
    let stream = TcpStream::connect(addr).await?;
    let mut tls = connector.connect(server_name, stream).await?;
    let mut out = String::new();
    tls.read_to_string(&mut out).await?;
    Ok(out)
}
