//! The connection to central-manager: the server URL (plaintext by default,
//! TLS through rustls when the URL is https:// or --ca/--cert/--key are
//! given), the bearer token on every call, the actor of mutating commands
//! and the per-request timeout.

use std::path::Path;
use std::time::Duration;

use ipa_proto::v1::central_manager_client::CentralManagerClient;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Request, Status};

use crate::cli::GlobalArgs;
use crate::error::CliError;

/// The generated client with the token interceptor.
pub type Client = CentralManagerClient<InterceptedService<Channel, BearerToken>>;

/// Adds `authorization: Bearer TOKEN` to every call when a token is set.
#[derive(Clone)]
pub struct BearerToken(Option<AsciiMetadataValue>);

impl Interceptor for BearerToken {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// A client plus what every command needs to build its requests.
pub struct Conn {
    pub client: Client,
    /// The URL in use, for messages.
    pub server: String,
    /// `actor_id` of mutating requests.
    pub actor: String,
    /// `correlation_id` of mutating requests (empty: the server makes one).
    pub correlation: String,
    request_timeout: Duration,
}

impl Conn {
    /// Connects lazily (the first call dials) with the global options.
    pub fn open(g: &GlobalArgs) -> Result<Self, CliError> {
        let tls_wanted = g.ca.is_some() || g.cert.is_some() || g.key.is_some();
        let url = server_url(&g.server, tls_wanted)?;
        let mut endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| CliError::Invalid(format!("--server {:?}: {e}", g.server)))?
            // A dead address fails fast instead of hanging the command.
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        if url.starts_with("https://") {
            endpoint = endpoint
                .tls_config(tls_config(g)?)
                .map_err(|e| CliError::Invalid(format!("TLS settings: {e}")))?;
        }
        let token = token(g)?;
        let authenticated = token.is_some() || g.cert.is_some();
        let client =
            CentralManagerClient::with_interceptor(endpoint.connect_lazy(), BearerToken(token))
                // Log chunks and big lists can exceed tonic's 4 MiB default
                // on the client side; the server bounds what it sends.
                .max_decoding_message_size(16 * 1024 * 1024);
        Ok(Self {
            client,
            server: url,
            actor: g
                .actor
                .clone()
                .unwrap_or_else(|| default_actor(authenticated)),
            correlation: g.correlation_id.clone().unwrap_or_default(),
            request_timeout: g.request_timeout,
        })
    }

    /// A unary request with the --request-timeout deadline.
    pub fn unary<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        r.set_timeout(self.request_timeout);
        r
    }

    /// A streaming request: no deadline, it lasts as long as the stream.
    pub fn stream<T>(&self, msg: T) -> Request<T> {
        Request::new(msg)
    }

    /// The error of `rpc` failing with `status`.
    pub fn err(&self, rpc: &'static str) -> impl FnOnce(Status) -> CliError + '_ {
        move |s| CliError::status(rpc, &self.server, s)
    }
}

/// `HOST:PORT` → `http://HOST:PORT` (or https:// when TLS options are
/// given); URLs with a scheme are kept; `--ca` on an http:// URL is a
/// contradiction and refused.
pub fn server_url(server: &str, tls_wanted: bool) -> Result<String, CliError> {
    let server = server.trim();
    if server.is_empty() {
        return Err(CliError::Invalid("--server is empty".into()));
    }
    if let Some((scheme, _)) = server.split_once("://") {
        return match scheme {
            "https" => Ok(server.to_owned()),
            "http" if tls_wanted => Err(CliError::Invalid(format!(
                "--ca/--cert/--key need TLS but --server is {server}; use https://"
            ))),
            "http" => Ok(server.to_owned()),
            other => Err(CliError::Invalid(format!(
                "--server scheme {other:?} is not http or https"
            ))),
        };
    }
    let scheme = if tls_wanted { "https" } else { "http" };
    Ok(format!("{scheme}://{server}"))
}

fn read(flag: &str, path: &Path) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|e| CliError::Invalid(format!("{flag} {}: {e}", path.display())))
}

fn tls_config(g: &GlobalArgs) -> Result<ClientTlsConfig, CliError> {
    let mut cfg = ClientTlsConfig::new();
    cfg = match &g.ca {
        Some(ca) => cfg.ca_certificate(Certificate::from_pem(read("--ca", ca)?)),
        // No private CA: trust what the system trusts.
        None => cfg.with_native_roots(),
    };
    if let (Some(cert), Some(key)) = (&g.cert, &g.key) {
        cfg = cfg.identity(Identity::from_pem(
            read("--cert", cert)?,
            read("--key", key)?,
        ));
    }
    if let Some(name) = &g.tls_server_name {
        cfg = cfg.domain_name(name.clone());
    }
    Ok(cfg)
}

/// The bearer header value: --token-file wins over --token / IPA_TOKEN.
fn token(g: &GlobalArgs) -> Result<Option<AsciiMetadataValue>, CliError> {
    let raw = match (&g.token_file, &g.token) {
        (Some(path), _) => {
            let bytes = read("--token-file", path)?;
            let text = String::from_utf8(bytes).map_err(|_| {
                CliError::Invalid(format!("--token-file {}: not UTF-8", path.display()))
            })?;
            text.trim().to_owned()
        }
        (None, Some(t)) => t.trim().to_owned(),
        (None, None) => return Ok(None),
    };
    if raw.is_empty() {
        return Err(CliError::Invalid("the token is empty".into()));
    }
    MetadataValue::try_from(format!("Bearer {raw}"))
        .map(Some)
        .map_err(|_| CliError::Invalid("the token has characters a header cannot carry".into()))
}

/// With credentials the server takes the principal as the actor; without,
/// the login name says who did it.
fn default_actor(authenticated: bool) -> String {
    if authenticated {
        return String::new();
    }
    ["USER", "LOGNAME"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .find(|u| !u.is_empty())
        .unwrap_or_else(|| "ipactl".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses_become_urls() {
        assert_eq!(
            server_url("127.0.0.1:50051", false).unwrap(),
            "http://127.0.0.1:50051"
        );
        assert_eq!(
            server_url("cm.example:443", true).unwrap(),
            "https://cm.example:443"
        );
        assert_eq!(server_url("https://cm:1", false).unwrap(), "https://cm:1");
        assert!(server_url("http://cm:1", true).is_err());
        assert!(server_url("ftp://cm:1", false).is_err());
        assert!(server_url(" ", false).is_err());
    }

    #[test]
    fn the_token_interceptor_sets_the_bearer_header() {
        let mut i = BearerToken(Some(MetadataValue::from_static("Bearer abc")));
        let r = i.call(Request::new(())).unwrap();
        assert_eq!(r.metadata().get("authorization").unwrap(), "Bearer abc");
        let mut none = BearerToken(None);
        assert!(
            none.call(Request::new(()))
                .unwrap()
                .metadata()
                .get("authorization")
                .is_none()
        );
    }
}
