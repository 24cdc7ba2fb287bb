//! Robustness (issue 12, central side, and issue 11's host ownership): the
//! database failing under a running system, RPCs whose callers give up,
//! duplicate and rogue pod-hosts, and the limits of API.md's Limits table,
//! all against the real binaries.

mod cancelled;
mod limits;
mod ownership;
mod store_outage;
