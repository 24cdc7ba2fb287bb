//! Everything about pod-hosts as seen from central-manager.
//!
//! Core logic (no I/O of its own, runs unchanged in the simulator): the
//! supervision session of each host over a `Dialer` port ([`session`]),
//! host states and the silence timeouts ([`registry`]), the shared
//! in-memory view used for placement ([`directory`]), validation of what a
//! host says ([`hello`]), one session per endpoint ([`connector`]).
//!
//! Adapters: the `ipa.v1.PodHost` protocol over gRPC ([`grpc`], with the
//! proto ⇄ domain conversions in [`wire`]), DNS discovery ([`discovery`])
//! and the local single-machine pod-host child process ([`local`]).

pub mod connector;
pub mod directory;
pub mod discovery;
pub mod grpc;
pub mod hello;
pub mod local;
pub mod registry;
pub mod session;
pub mod wire;

/// The channel of every pod-host client: each command carries the caller's
/// W3C trace context (when traces are exported), so a StartPod's spans on
/// the pod-host join the caller's trace.
pub type TracedChannel = tonic::service::interceptor::InterceptedService<
    tonic::transport::Channel,
    ipa_common::trace_context::InjectTraceContext,
>;
