//! The answer to an oversized message, as API.md wants it.
//!
//! tonic refuses a request message over the server's decoding limit (4 MiB
//! on both servers) before any handler runs, but with OUT_OF_RANGE and a
//! bare sentence. API.md's Limits table says RESOURCE_EXHAUSTED, and every
//! error starts with its reason: this layer rewrites exactly that answer
//! (trailers-only, so the status is in the response headers) into
//! `RESOURCE_EXHAUSTED` with reason `MESSAGE_TOO_LARGE`, keeping tonic's
//! detail (the size found and the limit). Anything else passes untouched.

use std::task::{Context, Poll};

use futures::future::BoxFuture;
use ipa_proto::ErrorReason;

/// The start of tonic's message for a request over the decoding limit.
const TONIC_TOO_LARGE: &str = "Error, decoded message length too large";

/// Wraps a gRPC server's routes; see the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct MessageLimitLayer;

impl<S> tower_layer::Layer<S> for MessageLimitLayer {
    type Service = MessageLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MessageLimit { inner }
    }
}

/// The service made by [`MessageLimitLayer`].
#[derive(Debug, Clone)]
pub struct MessageLimit<S> {
    inner: S,
}

/// The rewritten status for a response that is tonic's "too large"
/// refusal, `None` for any other response.
pub fn rewrite(headers: &http::HeaderMap) -> Option<tonic::Status> {
    // tonic's own parser: grpc-message is percent-encoded.
    let status = tonic::Status::from_header_map(headers)?;
    if status.code() != tonic::Code::OutOfRange {
        return None;
    }
    let detail = status.message().strip_prefix(TONIC_TOO_LARGE)?;
    let detail = detail.trim_start_matches(':').trim();
    Some(ipa_proto::status(
        ErrorReason::MessageTooLarge,
        format!("the request message is too large ({detail})"),
    ))
}

impl<S, B, RB> tower_service::Service<http::Request<B>> for MessageLimit<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    RB: Default + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            Ok(match rewrite(resp.headers()) {
                Some(status) => status.into_http(),
                None => resp,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(code: &str, message: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert("grpc-status", code.parse().unwrap());
        h.insert("grpc-message", message.parse().unwrap());
        h
    }

    #[test]
    fn rewrites_only_tonics_too_large_refusal() {
        // As tonic writes it: percent-encoded.
        let h = headers(
            "11",
            "Error,%20decoded%20message%20length%20too%20large:%20found%205242970%20bytes,%20the%20limit%20is:%204194304%20bytes",
        );
        let s = rewrite(&h).expect("rewritten");
        assert_eq!(s.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            s.message(),
            "MESSAGE_TOO_LARGE: the request message is too large (found 5242970 bytes, the limit is: 4194304 bytes)"
        );
        assert_eq!(ipa_proto::reason_of(&s), Some(ErrorReason::MessageTooLarge));
        assert!(rewrite(&headers("11", "INVALID_ARGUMENT: other")).is_none());
        assert!(
            rewrite(&headers(
                "3",
                "Error,%20decoded%20message%20length%20too%20large"
            ))
            .is_none()
        );
        assert!(rewrite(&http::HeaderMap::new()).is_none());
    }
}
