//! Who is calling and what they may do: authentication (bearer tokens from
//! `--auth-tokens`, client certificates from `--client-ca`), roles per RPC,
//! and the binding of `actor_id` to the caller.
//!
//! Everything is decided in one tower layer in front of every service
//! ([`layer::AuthLayer`]): it authenticates the call, checks the method
//! against [`policy`], and hands the handler the [`Caller`] in the
//! request's extensions. Handlers never re-check; the only per-request
//! step left to them is [`actor::bind`], because `actor_id` is inside the
//! message body, which the layer does not decode.
//!
//! With neither tokens nor a client CA, auth is off: no [`Caller`], every
//! method open, `actor_id` required as before.

pub mod actor;
pub mod layer;
pub mod policy;
pub mod tokens;

use std::sync::Arc;

use ipa_common::reload::Watched;
use ipa_common::tls::PeerInfo;

use crate::error::Error;
pub use tokens::{TokenFile, parse as parse_token_file, token_hash};

/// A role, in increasing power: each includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads tasks, events, pods, hosts, logs, statistics.
    Reader,
    /// Reader + every task, pod and schedule mutation.
    Operator,
    /// Operator + deletions and bulk operations, and acting as another
    /// actor.
    Admin,
}

impl Role {
    /// `reader`, `operator`, `admin` (any case).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "reader" => Some(Self::Reader),
            "operator" => Some(Self::Operator),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reader => "reader",
            Self::Operator => "operator",
            Self::Admin => "admin",
        }
    }
}

/// How the caller proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Token,
    Certificate,
}

/// The authenticated caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub principal: String,
    pub role: Role,
    pub via: Via,
}

/// The authentication settings in force.
#[derive(Clone)]
pub struct Auth {
    /// `--auth-tokens`, re-read on change and SIGHUP.
    tokens: Option<Arc<Watched<TokenFile>>>,
    /// `--client-ca` is set: the TLS layer verified a certificate on every
    /// connection.
    certificates: bool,
}

impl Auth {
    /// Auth settings; `None` when auth is off (no tokens, no client CA).
    pub fn new(tokens: Option<Arc<Watched<TokenFile>>>, certificates: bool) -> Option<Self> {
        (tokens.is_some() || certificates).then_some(Self {
            tokens,
            certificates,
        })
    }

    /// Loads `--auth-tokens` for watching.
    pub fn load_tokens(path: &std::path::Path) -> Result<Arc<Watched<TokenFile>>, String> {
        Watched::load("token file", vec![path.to_path_buf()], |files| {
            let text = std::str::from_utf8(&files[0]).map_err(|_| "not UTF-8".to_owned())?;
            parse_token_file(text).map_err(|e| e.to_string())
        })
    }

    /// Who is calling: a bearer token decides when one is sent (it names a
    /// person, where a client certificate may name a shared tool), else the
    /// verified client certificate. UNAUTHENTICATED without either, or for
    /// a token the file does not hold.
    pub fn authenticate(
        &self,
        authorization: Option<&http::HeaderValue>,
        peer: Option<&PeerInfo>,
    ) -> Result<Caller, Error> {
        if let (Some(value), Some(tokens)) = (authorization, &self.tokens) {
            let token = bearer(value).ok_or_else(|| {
                Error::Unauthenticated("the authorization header must be `Bearer <token>`".into())
            })?;
            let file = tokens.current();
            let entry = file
                .lookup(token)
                .ok_or_else(|| Error::Unauthenticated("unknown token".into()))?;
            return Ok(Caller {
                principal: entry.principal.clone(),
                role: entry.role,
                via: Via::Token,
            });
        }
        if let Some(cert) = peer.and_then(|p| p.certificate.as_ref()) {
            let role = self.tokens.as_ref().map_or(Role::Operator, |t| {
                t.current().certificate_role(&cert.principal)
            });
            return Ok(Caller {
                principal: cert.principal.clone(),
                role,
                via: Via::Certificate,
            });
        }
        Err(Error::Unauthenticated(if self.certificates {
            "no bearer token and no client certificate naming a principal".into()
        } else {
            "no bearer token (send `authorization: Bearer <token>`)".into()
        }))
    }
}

/// The token of `Bearer <token>` (scheme in any case, RFC 7235).
fn bearer(value: &http::HeaderValue) -> Option<&str> {
    let v = value.to_str().ok()?.trim();
    let (scheme, token) = v.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipa_common::tls::CertIdentity;

    fn auth(dir: &std::path::Path, certificates: bool) -> Auth {
        let path = dir.join("tokens.toml");
        std::fs::write(
            &path,
            format!(
                "[[token]]\nprincipal = \"alice\"\nrole = \"operator\"\nsha256 = \"{}\"\n\
                 [[certificate]]\nprincipal = \"ci\"\nrole = \"reader\"\n",
                token_hash("tok-a")
            ),
        )
        .unwrap();
        Auth::new(Some(Auth::load_tokens(&path).unwrap()), certificates).unwrap()
    }

    fn header(s: &str) -> http::HeaderValue {
        http::HeaderValue::from_str(s).unwrap()
    }

    fn peer(name: &str) -> PeerInfo {
        PeerInfo {
            remote_addr: None,
            certificate: Some(Arc::new(CertIdentity {
                principal: name.into(),
                names: vec![name.into()],
            })),
        }
    }

    #[test]
    fn off_without_tokens_or_certificates() {
        assert!(Auth::new(None, false).is_none());
        assert!(Auth::new(None, true).is_some());
    }

    #[test]
    fn tokens_then_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let a = auth(dir.path(), true);
        let c = a.authenticate(Some(&header("Bearer tok-a")), None).unwrap();
        assert_eq!(
            (c.principal.as_str(), c.role, c.via),
            ("alice", Role::Operator, Via::Token)
        );
        // Scheme in any case; the token wins over a certificate.
        let c = a
            .authenticate(Some(&header("bearer  tok-a ")), Some(&peer("ci")))
            .unwrap();
        assert_eq!(c.principal, "alice");
        let c = a.authenticate(None, Some(&peer("ci"))).unwrap();
        assert_eq!((c.role, c.via), (Role::Reader, Via::Certificate));
        let c = a.authenticate(None, Some(&peer("someone"))).unwrap();
        assert_eq!(c.role, Role::Operator);
        let unauth = |r: Result<Caller, Error>| {
            assert!(matches!(r, Err(Error::Unauthenticated(_))), "{r:?}")
        };
        unauth(a.authenticate(Some(&header("Bearer nope")), Some(&peer("ci"))));
        unauth(a.authenticate(Some(&header("Basic dG9rLWE=")), None));
        unauth(a.authenticate(Some(&header("Bearer")), None));
        unauth(a.authenticate(None, None));
        unauth(a.authenticate(None, Some(&PeerInfo::default())));
    }

    #[test]
    fn roles_order_and_parse() {
        assert!(Role::Reader < Role::Operator && Role::Operator < Role::Admin);
        for r in [Role::Reader, Role::Operator, Role::Admin] {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert_eq!(Role::parse("ADMIN"), Some(Role::Admin));
        assert_eq!(Role::parse("root"), None);
    }
}
