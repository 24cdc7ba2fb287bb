//! Tests of central-manager alone (no pod-host): the real binary on port 0
//! with a temp database, driven through the generated tonic client (and
//! grpcurl).

mod crash;
mod errors;
mod grpcurl;
mod listing;
mod refusals;
mod rpcs;
mod support;
mod watch;
