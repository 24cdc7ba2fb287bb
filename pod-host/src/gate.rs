//! Who may call this pod-host: with `--client-ca`, only clients whose
//! verified certificate names an `--allowed-client` (any certificate from
//! the CA when none is listed). One tower layer in front of every service,
//! health and reflection included: a pod-host's port is for
//! central-manager alone, and probes use `--health-listen`.
//!
//! The TLS handshake already refused clients without a certificate from
//! the CA (expired, another CA, none); this layer refuses the rest before
//! any handler runs, so a refused call changes nothing, and a refused
//! Connect never replaces central's session.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::{Either, Ready, ready};
use ipa_common::tls::{CertIdentity, PeerInfo};

use crate::error::HostError;

/// The client policy; `None` in the layer means no `--client-ca`.
#[derive(Debug, Clone, Default)]
pub struct ClientPolicy {
    /// `--allowed-client`: names (DNS/URI SANs, else CN) that may call.
    /// Empty: any certificate from the CA.
    pub allowed: Vec<String>,
}

impl ClientPolicy {
    /// The caller's identity if it may call.
    pub fn admit<'a>(&self, peer: Option<&'a PeerInfo>) -> Result<&'a CertIdentity, HostError> {
        let id = peer.and_then(|p| p.certificate.as_deref()).ok_or_else(|| {
            HostError::Unauthenticated(
                "this pod-host requires a client certificate from its --client-ca".into(),
            )
        })?;
        if self.allowed.is_empty() || id.matches_any(&self.allowed) {
            Ok(id)
        } else {
            Err(HostError::PermissionDenied(format!(
                "client certificate {:?} is not an allowed client of this pod-host",
                id.principal
            )))
        }
    }
}

/// Wraps every service; see the module docs.
#[derive(Debug, Clone, Default)]
pub struct GateLayer {
    policy: Option<Arc<ClientPolicy>>,
}

impl GateLayer {
    pub fn new(policy: Option<ClientPolicy>) -> Self {
        Self {
            policy: policy.map(Arc::new),
        }
    }
}

impl<S> tower_layer::Layer<S> for GateLayer {
    type Service = Gate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Gate {
            inner,
            policy: self.policy.clone(),
        }
    }
}

/// The service made by [`GateLayer`].
#[derive(Debug, Clone)]
pub struct Gate<S> {
    inner: S,
    policy: Option<Arc<ClientPolicy>>,
}

impl<S, B, RB> tower_service::Service<http::Request<B>> for Gate<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<RB>>,
    RB: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<S::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let Some(policy) = &self.policy else {
            return Either::Left(self.inner.call(req));
        };
        match policy.admit(req.extensions().get::<PeerInfo>()) {
            Ok(_) => Either::Left(self.inner.call(req)),
            Err(e) => {
                let peer = req
                    .extensions()
                    .get::<PeerInfo>()
                    .and_then(|p| p.remote_addr);
                tracing::warn!(path = %req.uri().path(), ?peer, error = %e, "call refused");
                let status: tonic::Status = e.into();
                Either::Right(ready(Ok(status.into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(names: &[&str]) -> PeerInfo {
        PeerInfo {
            remote_addr: None,
            certificate: Some(Arc::new(CertIdentity {
                principal: names[0].into(),
                names: names.iter().map(|n| n.to_string()).collect(),
            })),
        }
    }

    #[test]
    fn only_allowed_names_pass() {
        let p = ClientPolicy {
            allowed: vec!["central.ipa".into()],
        };
        assert!(p.admit(Some(&peer(&["spiffe://x", "central.ipa"]))).is_ok());
        assert!(matches!(
            p.admit(Some(&peer(&["mallory"]))),
            Err(HostError::PermissionDenied(_))
        ));
        assert!(matches!(p.admit(None), Err(HostError::Unauthenticated(_))));
        assert!(matches!(
            p.admit(Some(&PeerInfo::default())),
            Err(HostError::Unauthenticated(_))
        ));
        let any = ClientPolicy::default();
        assert!(any.admit(Some(&peer(&["anyone"]))).is_ok());
        assert!(any.admit(None).is_err());
    }
}
