//! Reading one certificate chain and its private key from PEM files, and building the rustls
//! server config that serves them.
//!
//! Every failure names the file and what to put in it. This module reads files and nothing else:
//! which certificate serves which name is decided in [`super`].

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::{CertifiedKey, SingleCertAndKey};

use super::TlsError;
use crate::config::TlsFiles;

/// ALPN protocols offered, preferred first: hyper serves either on the same connection.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Reads `files` (for `owner`, named in errors) and builds a server config that serves them.
pub(super) fn server_config(
    files: &TlsFiles,
    owner: &str,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let key = certified_key(files, owner, provider)?;
    let mut config = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Setup)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(key)));
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    // rouse's order of cipher suites (rustls's: strongest first), not the client's: an old
    // client that lists a weaker suite first still gets the stronger one both support.
    config.ignore_client_order = true;
    Ok(Arc::new(config))
}

/// Reads the chain and the key, and checks that the key is the certificate's.
fn certified_key(
    files: &TlsFiles,
    owner: &str,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let cert_pem = read(&files.cert, owner, "certificate")?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(&files.cert, owner, e))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            owner: owner.to_owned(),
            path: files.cert.clone(),
        });
    }

    let key_pem = read(&files.key, owner, "key")?;
    let key = match PrivateKeyDer::from_pem_slice(&key_pem) {
        Ok(key) => key,
        Err(pem::Error::NoItemsFound) => {
            return Err(TlsError::NoKey {
                owner: owner.to_owned(),
                path: files.key.clone(),
            });
        }
        Err(e) => return Err(pem_error(&files.key, owner, e)),
    };
    let signing_key =
        provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| TlsError::BadKey {
                owner: owner.to_owned(),
                path: files.key.clone(),
                reason: e.to_string(),
            })?;

    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        // A key type whose public half rustls cannot derive is taken on trust.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(certified)
        }
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::KeyMismatch {
            owner: owner.to_owned(),
            cert: files.cert.clone(),
            key: files.key.clone(),
        }),
        Err(e) => Err(TlsError::BadCertificate {
            owner: owner.to_owned(),
            path: files.cert.clone(),
            reason: e.to_string(),
        }),
    }
}

fn read(path: &Path, owner: &str, what: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        owner: owner.to_owned(),
        what,
        path: path.to_owned(),
        source,
    })
}

fn pem_error(path: &Path, owner: &str, e: pem::Error) -> TlsError {
    match e {
        pem::Error::NoItemsFound => TlsError::NoCertificate {
            owner: owner.to_owned(),
            path: path.to_owned(),
        },
        e => TlsError::Pem {
            owner: owner.to_owned(),
            path: path.to_owned(),
            reason: match e {
                pem::Error::MissingSectionEnd { end_marker } => format!(
                    "a block has no \"-----END {}-----\" line",
                    String::from_utf8_lossy(&end_marker)
                ),
                pem::Error::IllegalSectionStart { line } => {
                    format!("bad BEGIN line {:?}", String::from_utf8_lossy(&line))
                }
                e => e.to_string(),
            },
        },
    }
}
