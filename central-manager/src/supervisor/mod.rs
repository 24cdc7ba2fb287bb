//! Pod supervision policy: what happens after a pod ends.

pub mod restart;
