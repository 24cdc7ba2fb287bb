//! The security settings of central-manager, loaded at start: the API's
//! TLS, tokens and client certificates, the TLS for dialling pod-hosts and
//! for forwarding to the leader, and everything to re-read when its files
//! change.

use std::sync::Arc;

use ipa_common::reload::Reload;
use ipa_common::tls::{ClientTls, ServerTls};

use super::BoxError;
use crate::auth::Auth;
use crate::config::Config;

/// The security settings of `config`, loaded: the server's TLS, the token
/// file, the TLS for dialling pod-hosts, and everything to re-read.
pub(super) struct Security {
    pub(super) tls: Option<ServerTls>,
    pub(super) auth: Option<Auth>,
    pub(super) pod_host_tls: Option<ClientTls>,
    /// `--replica-ca` (and `--replica-client-cert`/`--replica-client-key`).
    pub(super) replica_tls: Option<ClientTls>,
    pub(super) reload: Vec<Arc<dyn Reload>>,
}

impl Security {
    pub(super) fn load(config: &Config) -> Result<Self, BoxError> {
        let mut reload: Vec<Arc<dyn Reload>> = Vec::new();
        let tls = match config.server_tls() {
            Some(files) => {
                let tls = ServerTls::load(&files)
                    .map_err(|e| format!("--tls-cert/--tls-key/--client-ca: {e}"))?;
                reload.push(tls.reloadable());
                Some(tls)
            }
            None => None,
        };
        let tokens = match &config.auth_tokens {
            Some(path) => {
                let t = Auth::load_tokens(path).map_err(|e| format!("--auth-tokens: {e}"))?;
                tracing::info!(tokens = t.current().len(), file = %path.display(), "token authentication on");
                reload.push(t.clone());
                Some(t)
            }
            None => None,
        };
        let auth = Auth::new(tokens, config.client_ca.is_some());
        let pod_host_tls = match config.pod_host_tls() {
            Some(files) => {
                let mut tls = ClientTls::load(&files).map_err(|e| {
                    format!("--pod-host-ca/--pod-host-client-cert/--pod-host-client-key: {e}")
                })?;
                // Pod-hosts found through DNS are dialled by address; they
                // prove the name they were found under.
                if let Some(name) = config
                    .pod_host_dns
                    .as_deref()
                    .and_then(|d| d.rsplit_once(':').map(|(n, _)| n.to_owned()))
                {
                    tls = tls.with_ip_server_name(name);
                }
                reload.push(tls.reloadable());
                Some(tls)
            }
            None => None,
        };
        let replica_tls = match config.replica_tls() {
            Some(files) => {
                let mut tls = ClientTls::load(&files).map_err(|e| {
                    format!("--replica-ca/--replica-client-cert/--replica-client-key: {e}")
                })?;
                if let Some(name) = &config.replica_tls_name {
                    tls = tls.with_ip_server_name(name.clone());
                }
                reload.push(tls.reloadable());
                Some(tls)
            }
            None => None,
        };
        Ok(Self {
            tls,
            auth,
            pod_host_tls,
            replica_tls,
            reload,
        })
    }
}
