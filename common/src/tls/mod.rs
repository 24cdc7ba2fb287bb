//! TLS for both servers and for central-manager's pod-host client: rustls
//! (ring provider; no OpenSSL) over tokio-rustls, with certificates, keys
//! and CAs re-read from disk when they change.
//!
//! tonic's own `ServerTlsConfig`/`ClientTlsConfig` are fixed once built,
//! and cert-manager rotates certificates under a running process. So the
//! server accepts TLS itself ([`server::TlsIncoming`], served through
//! `serve_with_incoming`) with the rustls config in force at each
//! handshake, and the client dials through its own connector
//! ([`client::TlsConnector`]) likewise. A rotation affects new connections;
//! established ones (the Connect stream, its pods' commands) are never
//! dropped for it.
//!
//! The verified client certificate's identity ([`CertIdentity`]) is
//! attached to every request of its connection as [`PeerInfo`] (tonic
//! request extensions), where the authentication layer reads it.

pub mod client;
mod identity;
pub mod server;

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub use client::{ClientTls, ClientTlsFiles, TlsConnector};
pub use identity::CertIdentity;
pub use server::{PeerInfo, ServerTls, ServerTlsFiles, TlsConn, TlsIncoming};

/// ALPN for gRPC: HTTP/2 only.
const ALPN_H2: &[u8] = b"h2";

/// The one crypto provider both sides use (explicit, so nothing depends on
/// a process-wide default being installed).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM file; at least one.
fn certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what}: not PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{what}: no certificate in the file"));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
fn key(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| format!("{what}: no usable private key: {e}"))
}

/// A root store of every certificate in a CA file.
fn roots(pem: &[u8], what: &str) -> Result<Arc<rustls::RootCertStore>, String> {
    let mut store = rustls::RootCertStore::empty();
    for c in certs(pem, what)? {
        store
            .add(c)
            .map_err(|e| format!("{what}: not a usable CA certificate: {e}"))?;
    }
    Ok(Arc::new(store))
}

#[cfg(test)]
pub(crate) mod testing {
    //! Certificates for the unit tests of this module.
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };

    pub struct Ca {
        pub pem: String,
        issuer: Issuer<'static, KeyPair>,
    }

    pub struct Leaf {
        pub cert_pem: String,
        pub key_pem: String,
    }

    impl Ca {
        pub fn new(name: &str) -> Self {
            let mut p = CertificateParams::default();
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.distinguished_name.push(DnType::CommonName, name);
            p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let key = KeyPair::generate().unwrap();
            let cert = p.self_signed(&key).unwrap();
            Self {
                pem: cert.pem(),
                issuer: Issuer::new(p, key),
            }
        }

        pub fn leaf(&self, dns: &str) -> Leaf {
            let mut p = CertificateParams::new(vec![dns.to_owned()]).unwrap();
            p.distinguished_name.push(DnType::CommonName, dns);
            let key = KeyPair::generate().unwrap();
            let cert = p.signed_by(&key, &self.issuer).unwrap();
            Leaf {
                cert_pem: cert.pem(),
                key_pem: key.serialize_pem(),
            }
        }
    }
}

#[cfg(test)]
mod tests;
