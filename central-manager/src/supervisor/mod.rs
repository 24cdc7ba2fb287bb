//! Pod supervision policy: what a pod's end means ([`exit`]), whether to
//! restart ([`restart`]) and how a host's snapshot is squared with the
//! database ([`reconcile`]).

pub mod exit;
pub mod reconcile;
pub mod restart;
