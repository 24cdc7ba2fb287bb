//! Server-level limits of API.md's "Limits" table that sit around the
//! handlers rather than in them:
//!
//! - [`MessageLimitLayer`]: a request over the 4 MiB decoded-message limit
//!   is answered RESOURCE_EXHAUSTED `MESSAGE_TOO_LARGE` (tonic refuses it
//!   before our handler runs, with OUT_OF_RANGE and its own wording; this
//!   layer gives it the API's code and shape, ErrorInfo included);
//! - [`StreamSlots`]: at most `--max-streams` WatchEvents + GetPodLogs
//!   streams at once, each holding a slot until its stream is dropped.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;
use futures::future::BoxFuture;
use ipa_proto::ErrorReason;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::domain::limits::MAX_MESSAGE_BYTES;
use crate::error::Error;

/// The start of tonic's message for a request over its decode limit.
const TONIC_TOO_LARGE: &str = "Error, decoded message length too large";

/// Rewrites tonic's "decoded message length too large" refusals.
#[derive(Debug, Clone, Copy, Default)]
pub struct MessageLimitLayer;

impl<S> tower_layer::Layer<S> for MessageLimitLayer {
    type Service = MessageLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MessageLimit { inner }
    }
}

/// See [`MessageLimitLayer`].
#[derive(Debug, Clone)]
pub struct MessageLimit<S> {
    inner: S,
}

impl<S, B, RB> tower_service::Service<http::Request<B>> for MessageLimit<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: 'static,
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
            let too_large = resp.extensions().get::<tonic::Status>().is_some_and(|s| {
                s.code() == tonic::Code::OutOfRange && s.message().starts_with(TONIC_TOO_LARGE)
            });
            if !too_large {
                return Ok(resp);
            }
            let status = ipa_proto::status(
                ErrorReason::MessageTooLarge,
                format!("the request is over the limit of {MAX_MESSAGE_BYTES} bytes (4 MiB)"),
            );
            Ok(status.into_http())
        })
    }
}

/// The `--max-streams` budget of open WatchEvents + GetPodLogs streams.
#[derive(Debug, Clone)]
pub struct StreamSlots {
    slots: Arc<Semaphore>,
    max: u32,
}

impl StreamSlots {
    pub fn new(max: u32) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max as usize)),
            max,
        }
    }

    /// A slot for one more stream, or RESOURCE_EXHAUSTED `TOO_MANY_STREAMS`.
    pub fn acquire(&self) -> Result<StreamSlot, Error> {
        self.slots
            .clone()
            .try_acquire_owned()
            .map(StreamSlot)
            .map_err(|_| Error::TooManyStreams(self.max))
    }

    /// Slots free now (for tests).
    pub fn available(&self) -> usize {
        self.slots.available_permits()
    }
}

/// One stream's slot, freed when dropped.
#[derive(Debug)]
pub struct StreamSlot(#[allow(dead_code)] OwnedSemaphorePermit);

/// A response stream that holds its slot until tonic drops it (the call
/// ended, the client went away).
pub struct Slotted<S> {
    inner: S,
    _slot: StreamSlot,
}

impl<S> Slotted<S> {
    pub fn new(inner: S, slot: StreamSlot) -> Self {
        Self { inner, _slot: slot }
    }
}

impl<S: Stream + Unpin> Stream for Slotted<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_and_freed_on_drop() {
        let s = StreamSlots::new(2);
        let a = s.acquire().unwrap();
        let _b = s.acquire().unwrap();
        let e = tonic::Status::from(s.acquire().unwrap_err());
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
        assert!(
            e.message().starts_with("TOO_MANY_STREAMS: "),
            "{}",
            e.message()
        );
        drop(a);
        assert_eq!(s.available(), 1);
        assert!(s.acquire().is_ok());
    }

    /// A service answering every request with one status.
    #[derive(Clone)]
    struct Answer(tonic::Status);

    impl tower_service::Service<http::Request<()>> for Answer {
        type Response = http::Response<tonic::body::Body>;
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            std::future::ready(Ok(self.0.clone().into_http()))
        }
    }

    async fn through_layer(s: tonic::Status) -> tonic::Status {
        use tower_service::Service;
        let mut svc = tower_layer::Layer::layer(&MessageLimitLayer, Answer(s));
        let resp = svc.call(http::Request::new(())).await.unwrap();
        tonic::Status::from_header_map(resp.headers()).expect("status")
    }

    #[tokio::test]
    async fn oversized_request_refusals_become_message_too_large() {
        let s = through_layer(tonic::Status::out_of_range(format!(
            "{TONIC_TOO_LARGE}: found 5000000 bytes, the limit is: 4194304 bytes"
        )))
        .await;
        assert_eq!(s.code(), tonic::Code::ResourceExhausted);
        assert!(
            s.message().starts_with("MESSAGE_TOO_LARGE: "),
            "{}",
            s.message()
        );
        // Any other status passes untouched.
        let s = through_layer(tonic::Status::out_of_range("other")).await;
        assert_eq!(s.code(), tonic::Code::OutOfRange);
    }
}
