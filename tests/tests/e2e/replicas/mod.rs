//! Replicas of central-manager on one PostgreSQL database (issue 15): a
//! leader chosen by the lease row, followers that serve every RPC, and
//! failover that neither loses an acknowledged write nor runs a task twice
//! nor touches a running pod.

mod failover;
pub(crate) mod support;
mod watch;
