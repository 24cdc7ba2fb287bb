//! Dialling TLS: a connector for tonic channels that handshakes with the
//! rustls client config in force when it dials (see [`super`]), so a
//! rotated client certificate or CA is used from the next connection on.
//!
//! Used by central-manager towards pod-hosts (`--pod-host-ca`,
//! `--pod-host-client-cert`, `--pod-host-client-key`) and by any client of
//! the API (tests, the bench, ipactl).

use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use http::Uri;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tonic::transport::{Channel, Endpoint};

use super::{ALPN_H2, certs, key, provider, roots};
use crate::reload::{Reload, Watched};

/// The files of a TLS client.
#[derive(Debug, Clone)]
pub struct ClientTlsFiles {
    /// PEM CA certificates the server's certificate must chain to.
    pub ca: PathBuf,
    /// PEM client certificate chain and key (mutual TLS); both or neither.
    pub identity: Option<(PathBuf, PathBuf)>,
}

/// A TLS client configuration that follows its files.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<Watched<ClientConfig>>,
    ip_server_name: Option<String>,
}

fn client_config(files: &[Vec<u8>]) -> Result<ClientConfig, String> {
    let roots = roots(&files[0], "CA")?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let mut config = match files.get(1..3) {
        Some([cert, k]) => builder
            .with_client_auth_cert(certs(cert, "client certificate")?, key(k, "client key")?)
            .map_err(|e| format!("client certificate and key: {e}"))?,
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("ip_server_name", &self.ip_server_name)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Reads the files now; an error names what is wrong.
    pub fn load(files: &ClientTlsFiles) -> Result<Self, String> {
        let mut paths = vec![files.ca.clone()];
        if let Some((c, k)) = &files.identity {
            paths.push(c.clone());
            paths.push(k.clone());
        }
        let config = Watched::load("TLS client CA, certificate and key", paths, client_config)?;
        Ok(Self {
            config,
            ip_server_name: None,
        })
    }

    /// The name a server dialled by IP address must have in its
    /// certificate (e.g. the `--pod-host-dns` name whose addresses central
    /// dials). Without it, an IP address must be in the certificate.
    pub fn with_ip_server_name(mut self, name: impl Into<String>) -> Self {
        self.ip_server_name = Some(name.into());
        self
    }

    /// For the [`crate::reload::Reloader`].
    pub fn reloadable(&self) -> Arc<dyn Reload> {
        self.config.clone()
    }

    /// A connector for [`Endpoint::connect_with_connector`].
    pub fn connector(&self) -> TlsConnector {
        TlsConnector {
            config: self.config.clone(),
            ip_server_name: self.ip_server_name.clone(),
        }
    }

    /// A channel to `endpoint` (its URI `https://HOST:PORT` or
    /// `http://HOST:PORT`; TLS either way), dialled lazily through this
    /// configuration.
    pub fn channel(&self, endpoint: Endpoint) -> Channel {
        endpoint.connect_with_connector_lazy(self.connector())
    }
}

/// Dials TCP, then TLS with the current config. The server name is the
/// URI's host (or, for an IP address, the configured override).
#[derive(Clone)]
pub struct TlsConnector {
    config: Arc<Watched<ClientConfig>>,
    ip_server_name: Option<String>,
}

impl TlsConnector {
    fn server_name(&self, host: &str) -> io::Result<ServerName<'static>> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = match (host.parse::<IpAddr>(), &self.ip_server_name) {
            (Ok(_), Some(name)) => name.clone(),
            _ => host.to_owned(),
        };
        ServerName::try_from(name)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))
    }
}

/// How long dialling (TCP + handshake) may take when the endpoint sets no
/// connect timeout of its own.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

impl tower_service::Service<Uri> for TlsConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = BoxFuture<'static, io::Result<Self::Response>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "URI without a host"))?
                .to_owned();
            let port = uri.port_u16().unwrap_or(443);
            let name = this.server_name(&host)?;
            let config = this.config.current();
            let dial = async move {
                let addr = host.trim_start_matches('[').trim_end_matches(']');
                let tcp = TcpStream::connect((addr, port)).await?;
                let _ = tcp.set_nodelay(true);
                tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await
            };
            let tls = tokio::time::timeout(DIAL_TIMEOUT, dial)
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS dial timed out"))??;
            Ok(TokioIo::new(tls))
        })
    }
}

/// An [`Endpoint`] for `url` that works with [`TlsConnector`] whatever
/// tonic features other crates turn on: tonic's own connector refuses an
/// `https` URI when it has no TLS config of its own, so the endpoint dials
/// the `http` form (our connector does the TLS) and requests carry the
/// `https` origin.
pub fn tls_endpoint(url: &str) -> Result<Endpoint, String> {
    let uri: Uri = url.parse().map_err(|e| format!("{url:?}: {e}"))?;
    let authority = uri
        .authority()
        .ok_or_else(|| format!("{url:?} has no host"))?
        .clone();
    let dial: Uri = format!("http://{authority}")
        .parse()
        .map_err(|e| format!("{url:?}: {e}"))?;
    let origin: Uri = format!("https://{authority}")
        .parse()
        .map_err(|e| format!("{url:?}: {e}"))?;
    Ok(Endpoint::from(dial).origin(origin))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_dial_http_and_carry_an_https_origin() {
        let e = tls_endpoint("https://pod-host-0:50052").unwrap();
        assert_eq!(e.uri().to_string(), "http://pod-host-0:50052/");
        assert!(tls_endpoint("no host").is_err());
    }
}
