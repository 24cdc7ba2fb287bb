//! The pod-host ports: the commands central sends one host
//! ([`HostCommands`]: start, stop, logs, by generation) and how a
//! supervision session reaches a host ([`Dialer`] → [`Link`]: the stream
//! of [`HostMessage`]s in, [`CentralMessage`]s out, plus the host's command
//! port over the same connection).
//!
//! Production adapter: `hosts::grpc` (tonic, `ipa.v1.PodHost`). Simulation
//! adapter: the simulator's network and pod-hosts (`sim/`). Both carry the
//! same domain messages, so the session logic (`hosts::session`) and the
//! supervisor run unchanged on either.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use futures::future::BoxFuture;
use tokio::sync::mpsc;

use crate::domain::host::{
    CentralMessage, HostCallError, HostMessage, LogChunk, LogsRequest, PodExit, PodSnapshot,
    StartRequest, StartedPod, StopRequest,
};

/// A host's log stream, relayed as it comes.
pub type HostLogStream = Pin<Box<dyn Stream<Item = Result<LogChunk, HostCallError>> + Send>>;

/// The commands of one pod-host. Callers bound each call with their own
/// timeout (virtual time in the simulator).
pub trait HostCommands: Send + Sync + 'static {
    /// Starts a pod (idempotent on its pod id). `Ok`: it runs or is
    /// starting.
    fn start_pod(&self, req: StartRequest)
    -> BoxFuture<'static, Result<StartedPod, HostCallError>>;

    /// Stops a pod by generation and waits until it is gone: its exit, or
    /// `None` when the host had no exit to report.
    fn stop_pod(
        &self,
        req: StopRequest,
    ) -> BoxFuture<'static, Result<Option<PodExit>, HostCallError>>;

    /// The pods the host holds now (running, starting, or exited with
    /// their exit not yet acknowledged): the same view as a hello's
    /// snapshot, asked for without reconnecting.
    fn list_pods(&self) -> BoxFuture<'static, Result<Vec<PodSnapshot>, HostCallError>>;

    /// A pod's output.
    fn pod_logs(
        &self,
        req: LogsRequest,
    ) -> BoxFuture<'static, Result<HostLogStream, HostCallError>>;
}

/// One open supervision connection to a host.
pub struct Link {
    /// What the host sends, in order; `Err` when the connection failed,
    /// the end of the stream when it closed.
    pub inbound: Pin<Box<dyn Stream<Item = Result<HostMessage, String>> + Send>>,
    /// What central sends (acks, pings). Dropping every sender closes the
    /// stream.
    pub outbound: mpsc::Sender<CentralMessage>,
    /// Commands over the same connection.
    pub commands: Arc<dyn HostCommands>,
}

/// How sessions reach hosts.
pub trait Dialer: Send + Sync + 'static {
    /// Connects to `endpoint` and opens its supervision stream with `first`
    /// (central's hello) as the first message. The host's hello is the
    /// first item of [`Link::inbound`].
    fn open(
        &self,
        endpoint: &str,
        first: CentralMessage,
    ) -> BoxFuture<'static, Result<Link, String>>;
}
