//! Everything about pod-hosts as seen from central-manager: where they are
//! ([`discovery`], [`connector`]), the supervision stream to each
//! ([`session`]), their states and the silence timeouts ([`registry`]), the
//! shared in-memory view used for placement ([`directory`]), the local
//! single-machine pod-host ([`local`]) and retry pacing ([`backoff`]).

pub mod backoff;
pub mod connector;
pub mod directory;
pub mod discovery;
pub mod hello;
pub mod local;
pub mod registry;
pub mod session;

/// The channel of every pod-host client: each command carries the caller's
/// W3C trace context (when traces are exported), so a StartPod's spans on
/// the pod-host join the caller's trace.
pub type TracedChannel = tonic::service::interceptor::InterceptedService<
    tonic::transport::Channel,
    ipa_common::trace_context::InjectTraceContext,
>;
