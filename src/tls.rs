//! TLS termination for `https` listeners: certificates read from PEM files, picked by the
//! ClientHello's server name (SNI), and read again when the config is reloaded.
//!
//! Every distinct cert/key pair of the config (a route's `tls`, a listener's default) is one
//! *slot*, with its own rustls server config. The SNI picks a slot the way a request's host picks
//! a route ([`HostMap`]: exact name, then the longest wildcard): the route's own certificate, or
//! else the listener's default. A name no route claims gets the default too; without a default
//! the handshake is refused with an alert, so a client is never shown another site's certificate.
//!
//! The ClientHello is read before anything is decided ([`LazyConfigAcceptor`]), so the caller
//! learns the name, and can start the route's backend, while the handshake is still going on.
//!
//! A request on a TLS connection is only for a host that picks the same slot as the handshake
//! did ([`Tls::serves`]): hosts sharing a (wildcard) certificate may share a connection, different
//! sites never do.
//!
//! This module must not route or forward: it maps names to certificates and hands back a stream.

mod load;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use rustls::server::Acceptor;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::{info, warn};

use crate::config::{Config, Protocol, TlsFiles};
use crate::route::{HostMap, normalize_host};

/// Index of a certificate slot in [`Tls::slots`].
type SlotId = usize;

/// A plaintext fatal alert record (TLS 1.2 and 1.3 alike before the ServerHello):
/// content type 21, version 3.3, length 2, level fatal, then the description.
fn alert_record(description: u8) -> [u8; 7] {
    [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, description]
}

/// `unrecognized_name` (RFC 6066): the SNI names nothing this listener has a certificate for.
const ALERT_UNRECOGNIZED_NAME: u8 = 112;
/// `handshake_failure`: no SNI, and the listener has no default certificate.
const ALERT_HANDSHAKE_FAILURE: u8 = 40;

/// What a finished handshake told about the connection.
#[derive(Debug, Clone)]
pub struct Handshake {
    /// The server name the client asked for (SNI), normalised.
    pub sni: Option<String>,
    /// The slot whose certificate the handshake used.
    cert: SlotId,
    /// The default slot of the listener the handshake was made on.
    default: Option<SlotId>,
}

/// Why a certificate could not be loaded, or a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be read.
    #[error("{owner}: cannot read {what} file {}: {source}", path.display())]
    Read {
        /// The route or listener that names the file.
        owner: String,
        /// `certificate` or `key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file is not valid PEM.
    #[error("{owner}: {} is not valid PEM ({reason}): write PEM blocks, as certbot or openssl write them", path.display())]
    Pem {
        /// The route or listener that names the file.
        owner: String,
        /// The file.
        path: PathBuf,
        /// What the PEM parser said.
        reason: String,
    },
    /// The certificate file holds no certificate.
    #[error("{owner}: {} holds no certificate: put the chain there as \"BEGIN CERTIFICATE\" blocks, leaf first", path.display())]
    NoCertificate {
        /// The route or listener that names the file.
        owner: String,
        /// The file.
        path: PathBuf,
    },
    /// The key file holds no private key.
    #[error("{owner}: {} holds no private key: put an unencrypted PKCS#8, RSA or EC private key there as PEM", path.display())]
    NoKey {
        /// The route or listener that names the file.
        owner: String,
        /// The file.
        path: PathBuf,
    },
    /// The private key is of a kind rustls cannot sign with.
    #[error("{owner}: the key in {} cannot be used ({reason}): use an ECDSA (P-256, P-384), Ed25519 or RSA (2048 bits or more) key", path.display())]
    BadKey {
        /// The route or listener that names the file.
        owner: String,
        /// The key file.
        path: PathBuf,
        /// What rustls said.
        reason: String,
    },
    /// The leaf certificate cannot be parsed.
    #[error("{owner}: the first certificate in {} cannot be parsed ({reason}): put the leaf certificate first", path.display())]
    BadCertificate {
        /// The route or listener that names the file.
        owner: String,
        /// The certificate file.
        path: PathBuf,
        /// What rustls said.
        reason: String,
    },
    /// The private key is not the certificate's.
    #[error("{owner}: the key in {} does not match the certificate in {}: give the key the certificate was issued for", key.display(), cert.display())]
    KeyMismatch {
        /// The route or listener that names the files.
        owner: String,
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// An `https` listener would refuse every handshake.
    #[error(
        "listener \"{0}\" is https but has no certificate: give it tls = {{ cert = \"...\", key = \"...\" }}, or give a route one"
    )]
    NoCertificates(String),
    /// rustls refused the protocol settings (not expected with the built-in provider).
    #[error("cannot set up tls: {0}")]
    Setup(rustls::Error),
    /// `accept` was called for a listener that is not `https`.
    #[error("listener \"{0}\" is not an https listener")]
    NotHttps(String),
    /// The client did not finish the handshake in time.
    #[error("handshake not finished within {}", crate::error::fmt_duration(*.0))]
    Timeout(Duration),
    /// The client did not send a usable ClientHello.
    #[error("no valid ClientHello: {0}")]
    ClientHello(std::io::Error),
    /// No certificate for the name the client asked for, and no default: refused with an alert.
    #[error("no certificate for {}: refused", .0.as_deref().map_or("a client without SNI".to_owned(), |s| format!("\"{s}\"")))]
    Refused(Option<String>),
    /// The handshake failed after the ClientHello.
    #[error("handshake failed: {0}")]
    Handshake(std::io::Error),
}

/// One distinct cert/key pair and the server config that serves it.
struct Slot {
    files: TlsFiles,
    config: Arc<ServerConfig>,
}

/// The certificates of every `https` listener, and which name gets which.
pub struct Tls {
    slots: Vec<Slot>,
    /// Host → the slot of the route claiming it (`None`: the route has no certificate).
    hosts: HostMap<Option<SlotId>>,
    /// `https` listener name → its default slot.
    listeners: HashMap<String, Option<SlotId>>,
}

impl Tls {
    /// Loads every certificate the config names; `None` when no listener is `https`.
    pub fn load(config: &Config) -> Result<Option<Tls>, TlsError> {
        Tls::load_next(config, None)
    }

    /// Loads every certificate the config names, for a reload of the config that `previous`
    /// was loaded from: a pair `previous` also serves that cannot be read now (a renewal
    /// half-written, say) keeps the certificate in use, and is logged; a new pair that cannot
    /// be read is an error. Open connections keep the certificates of their handshake.
    pub fn load_next(config: &Config, previous: Option<&Tls>) -> Result<Option<Tls>, TlsError> {
        if !config
            .listeners
            .iter()
            .any(|l| l.protocol == Protocol::Https)
        {
            return Ok(None);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut slots: Vec<Slot> = Vec::new();
        let mut failed = 0;
        let mut slot_for = |files: &TlsFiles, owner: String| -> Result<SlotId, TlsError> {
            if let Some(id) = slots.iter().position(|s| s.files == *files) {
                return Ok(id);
            }
            let in_use = previous.and_then(|p| p.slots.iter().find(|s| s.files == *files));
            let config = match (load::server_config(files, &owner, &provider), in_use) {
                (Ok(config), _) => config,
                (Err(e), Some(in_use)) => {
                    failed += 1;
                    warn!(error = %e, "certificate not reloaded: keeping the one in use");
                    in_use.config.clone()
                }
                (Err(e), None) => return Err(e),
            };
            slots.push(Slot {
                files: files.clone(),
                config,
            });
            Ok(slots.len() - 1)
        };

        let mut hosts = HostMap::default();
        for route in &config.routes {
            let slot = route
                .tls
                .as_ref()
                .map(|files| slot_for(files, format!("route \"{}\"", route.name)))
                .transpose()?;
            for host in &route.hosts {
                hosts.insert(host, slot);
            }
        }
        let any_route_cert = config.routes.iter().any(|r| r.tls.is_some());
        let mut listeners = HashMap::new();
        for listener in config
            .listeners
            .iter()
            .filter(|l| l.protocol == Protocol::Https)
        {
            let default = listener
                .tls
                .as_ref()
                .map(|files| slot_for(files, format!("listener \"{}\"", listener.name)))
                .transpose()?;
            if default.is_none() && !any_route_cert {
                return Err(TlsError::NoCertificates(listener.name.clone()));
            }
            listeners.insert(listener.name.clone(), default);
        }
        if previous.is_some() {
            info!(
                reloaded = slots.len() - failed,
                failed, "certificates reloaded"
            );
        }
        Ok(Some(Tls {
            slots,
            hosts,
            listeners,
        }))
    }

    /// Completes a handshake on `listener`; `on_sni` is called with the name the ClientHello
    /// asks for as soon as it is read, before the handshake finishes. `timeout` bounds the
    /// whole handshake.
    pub async fn accept(
        &self,
        listener: &str,
        stream: TcpStream,
        timeout: Duration,
        on_sni: impl FnOnce(&str),
    ) -> Result<(TlsStream<TcpStream>, Handshake), TlsError> {
        let default = *self
            .listeners
            .get(listener)
            .ok_or_else(|| TlsError::NotHttps(listener.to_owned()))?;
        tokio::time::timeout(timeout, self.handshake(default, stream, on_sni))
            .await
            .unwrap_or(Err(TlsError::Timeout(timeout)))
    }

    async fn handshake(
        &self,
        default: Option<SlotId>,
        stream: TcpStream,
        on_sni: impl FnOnce(&str),
    ) -> Result<(TlsStream<TcpStream>, Handshake), TlsError> {
        let mut start = LazyConfigAcceptor::new(Acceptor::default(), stream)
            .await
            .map_err(TlsError::ClientHello)?;
        let sni = start
            .client_hello()
            .server_name()
            .and_then(normalize_host)
            .map(|name| name.into_owned());
        if let Some(name) = &sni {
            on_sni(name);
        }
        let Some(cert) = self.select(sni.as_deref(), default) else {
            let alert = if sni.is_some() {
                ALERT_UNRECOGNIZED_NAME
            } else {
                ALERT_HANDSHAKE_FAILURE
            };
            // Best effort: the connection is dropped either way.
            let _ = start.io.write_all(&alert_record(alert)).await;
            let _ = start.io.shutdown().await;
            return Err(TlsError::Refused(sni));
        };
        let stream = start
            .into_stream(self.slots[cert].config.clone())
            .await
            .map_err(TlsError::Handshake)?;
        Ok((stream, Handshake { sni, cert, default }))
    }

    /// Whether a request for `host` may be served on a connection that made `handshake`: only
    /// if `host` would have been given the very certificate that the handshake used.
    pub fn serves(&self, handshake: &Handshake, host: &str) -> bool {
        self.select(Some(host), handshake.default) == Some(handshake.cert)
    }

    /// The slot for a normalised name: its route's certificate, else the listener's default.
    fn select(&self, name: Option<&str>, default: Option<SlotId>) -> Option<SlotId> {
        name.and_then(|name| self.hosts.lookup(name))
            .flatten()
            .or(default)
    }
}

/// Loads every certificate the config names, as `rouse serve` would, and drops them: for
/// `rouse check`.
pub fn check(config: &Config) -> Result<(), TlsError> {
    Tls::load(config).map(drop)
}
