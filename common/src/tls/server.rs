//! Serving TLS: a stream of accepted, handshaken connections for
//! `serve_with_incoming`, using the rustls config in force at each
//! handshake (see the module docs of [`super`]).

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, Stream, StreamExt};
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::server::Connected;

use super::{ALPN_H2, CertIdentity, certs, key, provider, roots};
use crate::reload::{Reload, Watched};

/// A client that opens TCP but does not finish the handshake is dropped
/// after this long, so it cannot hold a slot forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in progress at once; accepting pauses beyond that (a flood
/// of slow handshakes must not grow memory without bound).
const MAX_HANDSHAKES: usize = 256;

/// The files of a TLS server: `--tls-cert`, `--tls-key`, `--client-ca`.
#[derive(Debug, Clone)]
pub struct ServerTlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key of the leaf.
    pub key: PathBuf,
    /// PEM CA certificates client certificates must chain to. Set: every
    /// client must present a valid certificate signed by one of them.
    pub client_ca: Option<PathBuf>,
}

/// A TLS server configuration that follows its files.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<Watched<ServerConfig>>,
    requires_client_cert: bool,
}

fn server_config(files: &[Vec<u8>], with_ca: bool) -> Result<ServerConfig, String> {
    let chain = certs(&files[0], "certificate")?;
    let key = key(&files[1], "key")?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = if with_ca {
        let roots = roots(&files[2], "client CA")?;
        let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
            .build()
            .map_err(|e| format!("client CA: {e}"))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("certificate and key: {e}"))?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

impl ServerTls {
    /// Reads the files now; an error names what is wrong.
    pub fn load(files: &ServerTlsFiles) -> Result<Self, String> {
        let mut paths = vec![files.cert.clone(), files.key.clone()];
        let with_ca = files.client_ca.is_some();
        paths.extend(files.client_ca.clone());
        let config = Watched::load("TLS certificate, key and client CA", paths, move |f| {
            server_config(f, with_ca)
        })?;
        Ok(Self {
            config,
            requires_client_cert: with_ca,
        })
    }

    /// Whether clients must present a certificate (`--client-ca`).
    pub fn requires_client_cert(&self) -> bool {
        self.requires_client_cert
    }

    /// For the [`crate::reload::Reloader`].
    pub fn reloadable(&self) -> Arc<dyn Reload> {
        self.config.clone()
    }

    /// Accepts TLS connections on `listener`.
    pub fn incoming(&self, listener: TcpListener) -> TlsIncoming {
        TlsIncoming {
            listener,
            config: self.config.clone(),
            handshakes: FuturesUnordered::new(),
        }
    }
}

/// Who is on the other end of a connection, attached to each of its
/// requests (`request.extensions().get::<PeerInfo>()`).
#[derive(Debug, Clone, Default)]
pub struct PeerInfo {
    /// The client's address.
    pub remote_addr: Option<SocketAddr>,
    /// The verified client certificate's identity; `None` without one.
    pub certificate: Option<Arc<CertIdentity>>,
}

/// A TLS connection after a successful handshake.
pub struct TlsConn {
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    peer: PeerInfo,
}

impl Connected for TlsConn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.peer.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Accepted connections whose handshake succeeded. Handshakes run
/// concurrently inside the stream (no task per connection); a failed one
/// (plaintext client, unknown CA, expired or missing client certificate) is
/// logged and skipped: the client sees the TLS alert.
pub struct TlsIncoming {
    listener: TcpListener,
    config: Arc<Watched<ServerConfig>>,
    handshakes: FuturesUnordered<BoxFuture<'static, Option<TlsConn>>>,
}

async fn handshake(
    tcp: TcpStream,
    remote: SocketAddr,
    config: Arc<ServerConfig>,
) -> Option<TlsConn> {
    // Small messages: without TCP_NODELAY Nagle and delayed ACKs add tens
    // of milliseconds to a call.
    let _ = tcp.set_nodelay(true);
    let accept = tokio_rustls::TlsAcceptor::from(config).accept(tcp);
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::info!(peer = %remote, error = %e, "TLS handshake refused");
            return None;
        }
        Err(_) => {
            tracing::info!(peer = %remote, "TLS handshake timed out");
            return None;
        }
    };
    let certificate = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(CertIdentity::of)
        .map(Arc::new);
    Some(TlsConn {
        stream,
        peer: PeerInfo {
            remote_addr: Some(remote),
            certificate,
        },
    })
}

impl Stream for TlsIncoming {
    type Item = io::Result<TlsConn>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            while self.handshakes.len() < MAX_HANDSHAKES {
                match self.listener.poll_accept(cx) {
                    Poll::Ready(Ok((tcp, remote))) => {
                        let config = self.config.current();
                        self.handshakes
                            .push(Box::pin(handshake(tcp, remote, config)));
                    }
                    // tonic logs it and keeps accepting.
                    Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e))),
                    Poll::Pending => break,
                }
            }
            match self.handshakes.poll_next_unpin(cx) {
                Poll::Ready(Some(Some(conn))) => return Poll::Ready(Some(Ok(conn))),
                // A failed handshake freed a slot: accept again.
                Poll::Ready(Some(None)) => continue,
                // Nothing finished: woken by the listener (polled above
                // whenever there is room) or by a handshake.
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            }
        }
    }
}
