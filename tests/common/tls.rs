//! TLS for the integration tests: a throw-away CA and certificates made at test time (rcgen, and
//! openssl for RSA keys) in the test's sandbox, rouse served on an `https` listener, and a rustls
//! client that reports which certificate the server presented.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::{IO_DEADLINE, Response, Rouse, Sandbox, q, spawn_inherited};

// === Certificates ===

/// A test certificate authority; its certificate is written to `ca.pem` in the sandbox.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub pem: PathBuf,
}

/// A leaf certificate and its key, as PEM files in the sandbox.
pub struct Cert {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The leaf, as the server should present it.
    pub der: CertificateDer<'static>,
}

/// The kind of key a leaf gets.
#[derive(Clone, Copy, Debug)]
pub enum Key {
    /// ECDSA P-256, written as PKCS#8.
    Ecdsa,
    /// ECDSA P-256, written as SEC1 (`BEGIN EC PRIVATE KEY`).
    EcdsaSec1,
    /// RSA 2048, written as PKCS#1 (`BEGIN RSA PRIVATE KEY`).
    RsaPkcs1,
}

impl Ca {
    pub fn new(sb: &Sandbox) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "rouse test ca");
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let pem = sb.write("ca.pem", &cert.pem());
        Ca {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// Issues an ECDSA certificate for `hosts` shaped like a public CA's: valid for a year
    /// from yesterday, with a CRL distribution point.
    pub fn issue_public(&self, sb: &Sandbox, stem: &str, hosts: &[&str]) -> Cert {
        self.issue_with(sb, stem, hosts, Key::Ecdsa, |params| {
            let now = time::OffsetDateTime::now_utc();
            params.not_before = now - time::Duration::days(1);
            params.not_after = now + time::Duration::days(365);
            params.crl_distribution_points = vec![rcgen::CrlDistributionPoint {
                uris: vec!["http://crl.rouse.test/ca.crl".into()],
            }];
        })
    }

    /// Issues a certificate for `hosts` into `{stem}.crt` and `{stem}.key` (replacing them).
    pub fn issue(&self, sb: &Sandbox, stem: &str, hosts: &[&str], kind: Key) -> Cert {
        self.issue_with(sb, stem, hosts, kind, |_| {})
    }

    fn issue_with(
        &self,
        sb: &Sandbox,
        stem: &str,
        hosts: &[&str],
        kind: Key,
        adjust: impl FnOnce(&mut CertificateParams),
    ) -> Cert {
        let key_path = sb.path(&format!("{stem}.key"));
        let key = match kind {
            Key::Ecdsa | Key::EcdsaSec1 => KeyPair::generate().unwrap(),
            Key::RsaPkcs1 => {
                // ring cannot make RSA keys: openssl does, as PKCS#8, which rcgen reads.
                openssl(&[
                    "genpkey",
                    "-algorithm",
                    "RSA",
                    "-pkeyopt",
                    "rsa_keygen_bits:2048",
                    "-out",
                    key_path.to_str().unwrap(),
                ]);
                KeyPair::from_pem(&std::fs::read_to_string(&key_path).unwrap()).unwrap()
            }
        };
        let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
        let mut params = CertificateParams::new(hosts.clone()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, hosts[0].clone());
        adjust(&mut params);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let cert_path = sb.write(&format!("{stem}.crt"), &cert.pem());
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        match kind {
            Key::Ecdsa => {}
            Key::EcdsaSec1 => convert_key(&key_path, "ec"),
            Key::RsaPkcs1 => convert_key(&key_path, "rsa"),
        }
        Cert {
            cert: cert_path,
            key: key_path,
            der: cert.der().clone(),
        }
    }
}

impl Cert {
    /// `tls = { cert = "...", key = "..." }`.
    pub fn toml(&self) -> String {
        format!(
            "tls = {{ cert = {}, key = {} }}",
            q(self.cert.to_str().unwrap()),
            q(self.key.to_str().unwrap())
        )
    }
}

/// Rewrites a PKCS#8 key in its algorithm's traditional form (SEC1 or PKCS#1).
fn convert_key(path: &std::path::Path, alg: &str) {
    let (p, out) = (path.to_str().unwrap(), format!("{}.new", path.display()));
    // `openssl ec` writes SEC1 unless asked otherwise; `openssl rsa` needs -traditional.
    let traditional = if alg == "rsa" {
        &["-traditional"][..]
    } else {
        &[]
    };
    openssl(&[&[alg, "-in", p, "-out", &out][..], traditional].concat());
    std::fs::rename(&out, path).unwrap();
    let text = std::fs::read_to_string(path).unwrap();
    let marker = if alg == "ec" {
        "BEGIN EC PRIVATE KEY"
    } else {
        "BEGIN RSA PRIVATE KEY"
    };
    assert!(text.contains(marker), "openssl wrote {text}");
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// === Rouse on an https listener ===

/// The `[[listener]]` of [`serve_https`]: named "http" like the harness's, but `https`.
pub fn https_listener(default: Option<&Cert>) -> String {
    format!(
        "[[listener]]\nname = \"http\"\nbind = \"127.0.0.1:1\"\nprotocol = \"https\"\n{}\n\n",
        default.map(Cert::toml).unwrap_or_default()
    )
}

/// Serves `https_listener(default)` + `body` on an inherited socket, like [`Rouse::serve`].
pub fn serve_https(sb: &Sandbox, default: Option<&Cert>, body: &str) -> Rouse {
    let config = sb.write("rouse.toml", &format!("{}{body}", https_listener(default)));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind listener");
    let addr = listener.local_addr().unwrap();
    unsafe { libc::listen(listener.as_raw_fd(), 4096) };
    let child = spawn_inherited(
        &config,
        &sb.path("rouse.log"),
        &[listener.as_raw_fd()],
        Some("http"),
    );
    drop(listener);
    Rouse::from_child(child, addr, sb.path("rouse.log"))
}

/// One `[[route]]` to an always-on upstream, with its own certificate.
pub fn tls_route(name: &str, hosts: &[&str], upstream: SocketAddr, cert: &Cert) -> String {
    format!(
        "[[route]]\nname = {}\nhosts = {}\nupstream = \"{upstream}\"\n{}\n\n[route.backend]\nkind = \"none\"\n\n",
        q(name),
        super::arr(hosts),
        cert.toml(),
    )
}

// === Clients ===

/// What a TLS client offers.
#[derive(Clone, Copy)]
pub struct Hello<'a> {
    /// The SNI; `None` sends none.
    pub sni: Option<&'a str>,
    /// ALPN protocols offered.
    pub alpn: &'a [&'a [u8]],
    /// Only TLS 1.2 (else 1.2 and 1.3, preferring 1.3).
    pub tls12_only: bool,
}

impl<'a> Hello<'a> {
    pub fn sni(name: &'a str) -> Hello<'a> {
        Hello {
            sni: Some(name),
            alpn: &[b"http/1.1"],
            tls12_only: false,
        }
    }
}

/// Handshakes with rouse; the server's certificate is accepted whatever it is (tests compare it
/// with [`presented`]).
pub async fn handshake(addr: SocketAddr, hello: Hello<'_>) -> io::Result<TlsStream<TcpStream>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = if hello.tls12_only {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    config.alpn_protocols = hello.alpn.iter().map(|p| p.to_vec()).collect();
    config.enable_sni = hello.sni.is_some();
    let name = ServerName::try_from(hello.sni.unwrap_or("no-sni.invalid").to_owned()).unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    deadline(async {
        let tcp = TcpStream::connect(addr).await?;
        connector.connect(name, tcp).await
    })
    .await
}

/// The leaf certificate the server presented.
pub fn presented(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .expect("a certificate")[0]
        .clone()
}

/// The ALPN protocol the server chose.
pub fn alpn(stream: &TlsStream<TcpStream>) -> Option<Vec<u8>> {
    stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
}

/// The TLS alert the client received, if that is why the handshake failed.
pub fn alert(e: &io::Error) -> Option<rustls::AlertDescription> {
    match e.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::AlertReceived(alert) => Some(*alert),
        _ => None,
    }
}

/// `GET /` for `host` on an open connection (kept open): reads one response.
pub async fn request<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, host: &str) -> Response {
    deadline(request_inner(s, host))
        .await
        .unwrap_or_else(|e| panic!("request for {host} failed: {e}"))
}

async fn request_inner<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    host: &str,
) -> io::Result<Response> {
    s.write_all(format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
        .await?;
    s.flush().await?;
    // Byte by byte, so nothing past this response is consumed.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0];
        if s.read(&mut byte).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, head.clone()))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut resp = Response {
        status,
        headers,
        body: String::new(),
    };
    let len: usize = resp
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no content-length"))?;
    let mut body = vec![0; len];
    s.read_exact(&mut body).await?;
    resp.body = String::from_utf8_lossy(&body).into_owned();
    Ok(resp)
}

/// `curl -sS --cacert CA --resolve HOST:PORT:127.0.0.1 ARGS... https://HOST:PORT/`: (exit
/// code, body, `http_code http_version`, stderr).
pub async fn curl(ca: &Ca, addr: SocketAddr, host: &str, args: &[&str]) -> Curl {
    let out = tokio::process::Command::new("curl")
        .arg("-sS")
        .arg("--max-time")
        .arg(IO_DEADLINE.as_secs().to_string())
        .arg("--cacert")
        .arg(&ca.pem)
        .arg("--resolve")
        .arg(format!("{host}:{}:127.0.0.1", addr.port()))
        .arg("-w")
        .arg("\n%{http_code} %{http_version}")
        .args(args)
        .arg(format!("https://{host}:{}/", addr.port()))
        .output()
        .await
        .expect("run curl");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    Curl {
        ok: out.status.success(),
        body: body.to_owned(),
        status: status.to_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// What [`curl`] saw.
#[derive(Debug)]
pub struct Curl {
    pub ok: bool,
    pub body: String,
    /// `"200 2"`, `"421 1.1"`.
    pub status: String,
    pub stderr: String,
}

async fn deadline<T>(fut: impl std::future::Future<Output = io::Result<T>>) -> io::Result<T> {
    tokio::time::timeout(IO_DEADLINE, fut)
        .await
        .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "no answer in time")))
}

/// Accepts any server certificate (signatures are still checked): the tests look at which
/// certificate was presented, not whether a browser would trust it.
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
