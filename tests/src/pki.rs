//! Real certificates for tests and the benchmark, made on the spot with
//! rcgen: a CA, server and client certificates (valid, expired, from
//! another CA), written as PEM files the binaries read; plus clients of
//! the API over TLS with an optional bearer token.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipa_common::bearer::BearerToken;
use ipa_common::tls::{ClientTls, ClientTlsFiles, client::tls_endpoint};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::pb;

/// The name every test server certificate carries; clients dial 127.0.0.1
/// and verify this name.
pub const SERVER_NAME: &str = "localhost";

/// A certificate authority.
pub struct Ca {
    /// Its certificate, PEM.
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its key, PEM.
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
        let key = KeyPair::generate().expect("CA key");
        let cert = p.self_signed(&key).expect("CA certificate");
        Self {
            pem: cert.pem(),
            issuer: Issuer::new(p, key),
        }
    }

    /// Writes the CA certificate to `dir/name`.
    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, &self.pem).expect("write CA");
        p
    }

    fn sign(&self, names: &[&str], expired: bool) -> Leaf {
        let mut p = CertificateParams::default();
        p.subject_alt_names = names
            .iter()
            .map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) if n.contains("://") => SanType::URI((*n).try_into().expect("URI SAN")),
                Err(_) => SanType::DnsName((*n).try_into().expect("DNS SAN")),
            })
            .collect();
        p.distinguished_name.push(DnType::CommonName, names[0]);
        if expired {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().expect("leaf key");
        let cert = p.signed_by(&key, &self.issuer).expect("leaf certificate");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// A valid certificate for `names` (DNS names, URIs or IP addresses;
    /// the first is also the CN).
    pub fn leaf(&self, names: &[&str]) -> Leaf {
        self.sign(names, false)
    }

    /// A certificate for `names` that expired in 2021.
    pub fn expired_leaf(&self, names: &[&str]) -> Leaf {
        self.sign(names, true)
    }
}

impl Leaf {
    /// Writes `dir/NAME.crt` and `dir/NAME.key` (0600) and returns them.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, &self.cert_pem).expect("write cert");
        std::fs::write(&key, &self.key_pem).expect("write key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod key");
        (cert, key)
    }
}

/// A client of the task API with its interceptor (the token, if any).
pub type AuthClient =
    pb::central_manager_client::CentralManagerClient<InterceptedService<Channel, BearerToken>>;

/// How a test client reaches a server.
#[derive(Clone, Default)]
pub struct ClientAuth {
    /// Trust this CA and speak TLS; `None`: plaintext.
    pub ca: Option<PathBuf>,
    /// Present this client certificate and key.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// Send this bearer token.
    pub token: Option<String>,
}

impl ClientAuth {
    /// Plaintext with a token.
    pub fn token(token: &str) -> Self {
        Self {
            token: Some(token.to_owned()),
            ..Self::default()
        }
    }

    /// A channel to `addr`, lazily connected.
    pub fn channel(&self, addr: SocketAddr) -> Channel {
        match &self.ca {
            None => tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .expect("endpoint")
                .connect_timeout(Duration::from_secs(5))
                .connect_lazy(),
            Some(ca) => {
                let tls = ClientTls::load(&ClientTlsFiles {
                    ca: ca.clone(),
                    identity: self.identity.clone(),
                })
                .expect("client TLS files")
                .with_ip_server_name(SERVER_NAME);
                let endpoint = tls_endpoint(&format!("https://{addr}"))
                    .expect("endpoint")
                    .connect_timeout(Duration::from_secs(5));
                tls.channel(endpoint)
            }
        }
    }

    /// A task API client for `addr`.
    pub fn client(&self, addr: SocketAddr) -> AuthClient {
        let token = match &self.token {
            Some(t) => BearerToken::new(t).expect("token"),
            None => BearerToken::none(),
        };
        pb::central_manager_client::CentralManagerClient::with_interceptor(
            self.channel(addr),
            token,
        )
    }
}

/// A token file line set: `(principal, role, token)` → TOML with hashes.
pub fn token_file(entries: &[(&str, &str, &str)]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for (p, r, t) in entries {
        let _ = write!(
            out,
            "[[token]]\nprincipal = \"{p}\"\nrole = \"{r}\"\nsha256 = \"{}\"\n\n",
            sha256_hex(t)
        );
    }
    out
}

/// The hex SHA-256 of a token, as `sha256sum` prints it.
pub fn sha256_hex(token: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}
