//! Tests of pod-host driven directly, central-manager played by the test.
//!
//! Each test starts the real `pod-host` binary on port 0 with a temp data dir
//! and a TOML config of small shell-script templates (see `support`), and
//! talks to it through the generated client.

mod demo;
mod epoch;
mod hygiene;
mod lease;
mod lifecycle;
mod limits;
mod pods;
mod stream;
mod support;
