//! central-manager: the IPA task manager's entry point. It serves the task
//! API (`ipa.v1.CentralManager`) over gRPC and owns the event store and the
//! `tasks` table.
//!
//! Layers, outside in:
//! - [`server`]: process assembly, TLS, reflection, health, graceful shutdown;
//! - [`auth`]: who is calling (tokens, client certificates), roles per RPC,
//!   `actor_id` bound to the caller; one tower layer in front of everything;
//! - [`api`]: thin tonic handlers and the proto ⇄ domain conversions;
//! - [`core`]: the task operations ([`core::TaskService`]) and pod operations;
//! - [`hosts`]: pod-hosts: discovery, sessions, states and timeouts, placement;
//! - [`supervisor`]: what pod exits and host loss mean (restart policy,
//!   reconciliation) and the loop that applies it;
//! - [`store`]: SQLite, the single group-committing writer, read queries;
//! - [`watch`]: the live event feed behind WatchEvents;
//! - [`domain`]: validated types and the lifecycle rules (pure);
//! - [`error`]: the one error type; [`config`]: flags and env;
//! - [`metrics`]: the Prometheus metrics (`--metrics-listen`).
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
pub mod supervisor;
pub mod watch;

pub use config::Config;
pub use error::Error;
pub use server::{Application, BoxError, run};
