//! Tests of the whole system (issue 4 acceptance): one central-manager and
//! two pod-hosts as real processes, pods of the `ledger` test template that
//! record when they ran, and the chaos the failure model of docs/architecture.md
//! covers (pod and host SIGKILL, a partition through a TCP proxy, a frozen
//! host, central SIGKILL under load, SIGTERM of everything). Every test
//! checks the invariant on the ledger: never two running pods of one task.

mod central_restart;
mod clock_procs;
mod crashes;
mod dependencies;
mod discovery;
mod freeze;
mod host_loss;
mod partition;
mod postgres;
mod postgres_tls;
mod queue;
mod races;
mod rpcs;
mod shutdown;
mod simulated_hosts;
pub(crate) mod support;
mod timeouts;
