//! Pod supervision: what a pod's end means ([`exit`]), whether to restart
//! ([`restart`]), how a host's snapshot is squared with the database
//! ([`reconcile`], carried out by [`readopt`]), the rate limit of recorded
//! phase changes ([`coalesce`]), the in-memory decision loop ([`runner`])
//! and the applier of its database writes ([`host_events`]), which writes
//! jobs about different tasks together ([`group`]).

pub mod coalesce;
pub mod exit;
pub mod group;
pub mod host_events;
mod readopt;
pub mod reconcile;
pub mod restart;
pub mod runner;
