//! Everything about pod-hosts as seen from central-manager: where they are
//! ([`discovery`]), their state and capacity ([`registry`]) and how often to
//! retry them ([`backoff`]).

pub mod backoff;
pub mod discovery;
pub mod local;
pub mod registry;
pub mod session;
