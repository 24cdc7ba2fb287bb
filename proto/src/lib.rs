//! Generated code for the `ipa.v1` gRPC package, shared by central-manager,
//! pod-host and the tests, plus the small conventions every side of the wire
//! must agree on: the error-status shape and time conversions.
//!
//! Proto types stop at each service's api layer; nothing here is a domain
//! type.

pub mod error;
pub mod time;

/// Everything generated from `proto/ipa/v1/*.proto`.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("ipa.v1");
}

/// The encoded `FileDescriptorSet` of all ipa.v1 files, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/ipa_descriptor.bin"));

pub use error::{ErrorReason, reason_of, status};
