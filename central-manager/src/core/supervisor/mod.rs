//! Pod supervision, the heart of the core: the in-memory decision loop
//! ([`runner`]: host updates, the silence rules, scheduled restarts), the
//! ordered applier of its database writes ([`host_events`]), how a host's
//! snapshot is squared with the database ([`reconcile`], pure) and the
//! rate limit of recorded phase changes ([`coalesce`], pure). What a pod's
//! end means and the restart policy are domain rules
//! (`domain::ending`, `domain::restart_decision`).

pub mod coalesce;
pub mod host_events;
pub mod reconcile;
pub mod requery;
pub mod runner;
pub mod unsettled;
