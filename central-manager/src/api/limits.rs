//! The stream limit of docs/api.md's "Limits" table, which sits around
//! the handlers rather than in them: [`StreamSlots`] allows at most
//! `--max-streams` WatchEvents + GetPodLogs streams at once, each holding a
//! slot until its stream is dropped. (Oversized requests are answered by
//! `ipa_common::message_limit::MessageLimitLayer`, shared with the
//! pod-host.)

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::Error;

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
}
