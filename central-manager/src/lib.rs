//! central-manager: the IPA task manager's entry point. It serves the task
//! API (`ipa.v1.CentralManager`) over gRPC and owns the event store and the
//! `tasks` table.
//!
//! Layers, outside in:
//! - [`server`]: process assembly, TLS, reflection, health, graceful shutdown;
//! - [`auth`]: who is calling (tokens, client certificates), roles per RPC,
//!   `actor_id` bound to the caller; one tower layer in front of everything;
//! - [`api`]: thin tonic handlers and the proto ⇄ domain conversions;
//! - [`core`]: the supervision core: task and pod operations
//!   ([`core::TaskService`]), `core::supervisor` (what pod exits and host
//!   loss mean, and the loop that applies it), and `core::ports`, the
//!   traits through which it reaches the world (store, pod-hosts, clock,
//!   entropy). Nothing in `core` names a proto or SQL type;
//! - adapters of those ports: [`store`] (SQLite, the single group-committing
//!   writer, read queries; `store::memory` runs the same SQL inline for the
//!   simulator) and [`hosts`] (pod-hosts: discovery, sessions, states and
//!   timeouts, placement; `hosts::grpc` and `hosts::wire` are the only
//!   places the pod-host protocol's proto types appear);
//! - [`watch`]: the live event feed behind WatchEvents;
//! - [`domain`]: validated types and the lifecycle rules (pure), including
//!   the pod-host protocol's messages as domain types (`domain::host`);
//! - [`error`]: the one error type; [`config`]: flags and env;
//! - [`metrics`]: the Prometheus metrics (`--metrics-listen`).
//!
//! The deterministic simulator (`sim/`, the `ipa-sim` crate) runs this
//! core against simulated ports; see docs/architecture.md.
//!
//! Embed it with [`run`]: the caller supplies the listener (port 0 in
//! tests) and the shutdown token.

pub mod api;
pub mod auth;
pub mod config;
pub mod core;
pub mod domain;
pub mod error;
pub mod hosts;
pub mod metrics;
pub mod server;
pub mod store;
pub mod watch;

pub use config::Config;
pub use error::Error;
pub use server::{Application, BoxError, run};
