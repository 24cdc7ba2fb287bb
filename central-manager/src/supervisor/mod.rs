//! Pod supervision: what a pod's end means ([`exit`]), whether to restart
//! ([`restart`]), how a host's snapshot is squared with the database
//! ([`reconcile`]), the rate limit of recorded phase changes
//! ([`coalesce`]), the in-memory decision loop ([`runner`]) and the ordered
//! applier of its database writes ([`host_events`]).

pub mod coalesce;
pub mod exit;
pub mod host_events;
pub mod reconcile;
pub mod restart;
pub mod runner;
