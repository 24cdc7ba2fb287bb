//! The tower layer that authenticates and authorises every call before
//! any service sees it (see the module docs of [`super`]).
//!
//! A refused call is answered here with the API's status (UNAUTHENTICATED
//! or PERMISSION_DENIED, reason-prefixed, ErrorInfo attached) and never
//! reaches a handler, so it changes nothing. An accepted one runs inside an
//! `auth` span carrying the principal and role, so logs and traces say who
//! made it, and carries its [`Caller`] in the request extensions.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::{BoxFuture, Either, Ready, ready};
use ipa_common::tls::PeerInfo;
use tracing::Instrument;

use super::policy::{Access, access};
use super::{Auth, Caller};
use crate::error::Error;

/// Wraps every service of the server; `None` (auth off) passes calls
/// through untouched.
#[derive(Clone, Default)]
pub struct AuthLayer {
    auth: Option<Arc<Auth>>,
}

impl AuthLayer {
    pub fn new(auth: Option<Auth>) -> Self {
        Self {
            auth: auth.map(Arc::new),
        }
    }
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            auth: self.auth.clone(),
        }
    }
}

/// The service made by [`AuthLayer`].
#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    auth: Option<Arc<Auth>>,
}

/// The caller or the refusal of one request.
fn decide(auth: &Auth, req: &http::Request<impl Sized>) -> Result<Option<Caller>, Error> {
    let path = req.uri().path();
    let needed = match access(path) {
        Access::Open => return Ok(None),
        Access::Role(r) => r,
    };
    let caller = auth.authenticate(
        req.headers().get(http::header::AUTHORIZATION),
        req.extensions().get::<PeerInfo>(),
    )?;
    if caller.role < needed {
        let method = path.rsplit('/').next().unwrap_or(path);
        return Err(Error::PermissionDenied(format!(
            "{} (role {}) may not call {method}; it needs the {} role",
            caller.principal,
            caller.role.as_str(),
            needed.as_str()
        )));
    }
    Ok(Some(caller))
}

type Refusal<R, E> = Ready<Result<R, E>>;

impl<S, B, RB> tower_service::Service<http::Request<B>> for AuthService<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    RB: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<
        S::Future,
        Either<Refusal<S::Response, S::Error>, BoxFuture<'static, Result<S::Response, S::Error>>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let Some(auth) = &self.auth else {
            return Either::Left(self.inner.call(req));
        };
        match decide(auth, &req) {
            Ok(None) => Either::Left(self.inner.call(req)),
            Ok(Some(caller)) => {
                let span = tracing::info_span!(
                    "auth",
                    principal = %caller.principal,
                    role = caller.role.as_str()
                );
                req.extensions_mut().insert(caller);
                // The handler's span is created inside `call`.
                let fut = span.in_scope(|| self.inner.call(req));
                Either::Right(Either::Right(Box::pin(fut.instrument(span))))
            }
            Err(e) => {
                tracing::info!(path = %req.uri().path(), error = %e, "call refused");
                let status: tonic::Status = e.into();
                Either::Right(Either::Left(ready(Ok(status.into_http()))))
            }
        }
    }
}

/// The caller of a request, as the layer left it (`None`: auth is off).
pub fn caller<T>(req: &tonic::Request<T>) -> Option<Caller> {
    req.extensions().get::<Caller>().cloned()
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower_service::Service;

    use super::*;
    use crate::auth::token_hash;

    /// A stand-in service that answers 200 with the caller it saw.
    #[derive(Clone)]
    struct Echo;

    impl tower_service::Service<http::Request<()>> for Echo {
        type Response = http::Response<String>;
        type Error = Infallible;
        type Future = Ready<Result<Self::Response, Infallible>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, req: http::Request<()>) -> Self::Future {
            let who = req
                .extensions()
                .get::<Caller>()
                .map_or("-".to_owned(), |c| c.principal.clone());
            ready(Ok(http::Response::new(who)))
        }
    }

    fn service(dir: &std::path::Path) -> AuthService<Echo> {
        let path = dir.join("t.toml");
        let mut text = String::new();
        for (p, r) in [("rita", "reader"), ("otto", "operator"), ("ada", "admin")] {
            text += &format!(
                "[[token]]\nprincipal = \"{p}\"\nrole = \"{r}\"\nsha256 = \"{}\"\n",
                token_hash(p)
            );
        }
        std::fs::write(&path, text).unwrap();
        let auth = Auth::new(Some(Auth::load_tokens(&path).unwrap()), false);
        tower_layer::Layer::layer(&AuthLayer::new(auth), Echo)
    }

    async fn call(
        svc: &mut AuthService<Echo>,
        path: &str,
        token: Option<&str>,
    ) -> (String, String) {
        let mut req = http::Request::builder().uri(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = svc.call(req.body(()).unwrap()).await.unwrap();
        let msg = tonic::Status::from_header_map(resp.headers())
            .map(|s| s.message().to_owned())
            .unwrap_or_default();
        (resp.into_body(), msg)
    }

    #[tokio::test]
    async fn roles_per_method_and_open_probes() {
        let dir = tempfile::tempdir().unwrap();
        let mut svc = service(dir.path());
        let create = "/ipa.v1.CentralManager/CreateTask";
        let get = "/ipa.v1.CentralManager/GetTask";
        let delete = "/ipa.v1.CentralManager/DeleteTask";
        assert_eq!(call(&mut svc, get, Some("rita")).await.0, "rita");
        let (body, msg) = call(&mut svc, create, Some("rita")).await;
        assert_eq!(body, "");
        assert!(
            msg.starts_with("PERMISSION_DENIED: rita (role reader) may not call CreateTask"),
            "{msg}"
        );
        assert_eq!(call(&mut svc, create, Some("otto")).await.0, "otto");
        assert!(
            call(&mut svc, delete, Some("otto"))
                .await
                .1
                .starts_with("PERMISSION_DENIED")
        );
        assert_eq!(call(&mut svc, delete, Some("ada")).await.0, "ada");
        let (_, msg) = call(&mut svc, get, None).await;
        assert!(msg.starts_with("UNAUTHENTICATED: no bearer token"), "{msg}");
        let (_, msg) = call(&mut svc, get, Some("nobody")).await;
        assert_eq!(msg, "UNAUTHENTICATED: unknown token");
        // Probes and reflection need nothing.
        assert_eq!(
            call(&mut svc, "/grpc.health.v1.Health/Check", None).await.0,
            "-"
        );
        assert_eq!(
            call(
                &mut svc,
                "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                None
            )
            .await
            .0,
            "-"
        );
    }

    #[tokio::test]
    async fn auth_off_passes_everything_through() {
        let mut svc = tower_layer::Layer::layer(&AuthLayer::new(None), Echo);
        assert_eq!(
            call(&mut svc, "/ipa.v1.CentralManager/DeleteTask", None)
                .await
                .0,
            "-"
        );
    }
}
