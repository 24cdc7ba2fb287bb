//! The one integration harness (STYLE 11): start the real `central-manager`
//! and `pod-host` binaries as processes on 127.0.0.1 port 0 with temp dirs,
//! learn their ports from the `listening on ADDR` stdout line, talk to them
//! through generated tonic clients, and stop every process a test started
//! (SIGKILL + reap on drop).
//!
//! Binaries are looked up next to the test executable's `target/<profile>/`
//! directory, so run `cargo build --workspace --bins` first (the README's
//! test command does).
//!
//! Child stderr goes to a log file in the process's temp dir; set `TEST_LOG=1`
//! to see it live instead. When a test panics the log paths are printed.

pub mod cluster;
pub mod ledger;
pub mod process;
pub mod proxy;
pub mod wait;

pub use process::{ServerProcess, bin_path};
pub use proxy::Proxy;
pub use wait::{wait_for, wait_for_async};

pub use ipa_proto::v1 as pb;

/// Generous deadline for conditions in tests: CI is a loaded 2-core machine.
pub const DEADLINE: std::time::Duration = std::time::Duration::from_secs(20);
