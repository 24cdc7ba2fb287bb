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
//! [`simhost`] is a simulated pod-host (the real protocol, no processes)
//! for the scale benchmark and its tests.
//!
//! [`ipactl`] runs the real `ipactl` client against them (to completion,
//! streaming, or in a pseudo-terminal).
//!
//! [`postgres`] starts a private PostgreSQL server (initdb + pg_ctl into a
//! temp dir) for the tests that run central-manager on PostgreSQL.
//!
//! Child stderr goes to a log file in the process's temp dir; set `TEST_LOG=1`
//! to see it live instead. When a test panics the log paths are printed.

pub mod cluster;
pub mod ipactl;
pub mod ledger;
pub mod pki;
pub mod process;
pub mod proxy;
pub mod simhost;
pub mod tmpfs;
pub mod tools;
pub mod wait;

pub use ipa_pg_harness as postgres;
pub use process::{ServerProcess, bin_path};
pub use proxy::Proxy;
pub use wait::{wait_for, wait_for_async};

pub use ipa_proto::v1 as pb;

/// Generous deadline for conditions in tests: CI is a loaded 2-core machine.
pub const DEADLINE: std::time::Duration = std::time::Duration::from_secs(20);

/// Every metric row of the benchmark's table, in order: the `bench` binary
/// labels its rows with these and the smoke test checks they are printed.
pub const BENCH_METRICS: &[&str] = &[
    "CreateTask, 1 client, durable",
    "CreateTask, 64 clients, durable (group commit)",
    "Same writes without group commit (1 txn/write)",
    "GetTask, 1 client",
    "GetTask, 16 clients",
    "ListTasks limit 100, status filter",
    "ListTasks limit 1000, status filter",
    "StartPod, 1 client",
    "StartPod, 32 clients over 2 pod-hosts",
    "Crash detection (SIGKILL → pod_crashed)",
    "Crash → automatic restart running",
    "Pod-host frozen (SIGSTOP) → UNREACHABLE",
    "Concurrent pods across 4 pod-hosts",
    "Pod-host memory per pod",
    "Graceful stop of a pod-host with its pods",
    "Crash loop restart vs supervisord (peer)",
    "CreateTask, 1 client, TLS + token",
    "CreateTask, 64 clients, TLS + token",
    "StartPod, 1 client, TLS + token (mTLS to the pod-host)",
    "Schedule fire lateness (interval schedule)",
    "GetStats, 1 client",
    "CreateTask, 1 client, during ArchiveTasks",
    "ListTasks limit 100, metadata_equals (tasks of one schedule)",
    "Scale: central CPU at rest, 100 pod-hosts / 10,000 pods",
    "Scale: central memory per supervised pod",
    "Scale: central restart → every pod re-adopted (10,000 pods)",
    "Scale: crash storm, 1,000 pods at once → all restarted",
    "Scale: host storm, 10 pod-hosts lost → their pods restarted",
    "Scale: ListActivePods at 10,000 pods",
    "Scale: ListPodHosts at 100 pod-hosts",
    "Scale: WatchEvents, 100 watchers during a crash storm",
    "Scale: real pod-hosts vs simulated (cross-check)",
    "Queue: dispatch latency, a pod's end → the next queued pod_started",
    "Queue: draining 10,000 queued tasks through 2 pod-hosts × 50",
    "Queue: CreateTask/GetTask with 100,000 tasks queued",
    "PostgreSQL: CreateTask, 1 client, durable",
    "PostgreSQL: CreateTask, 64 clients, durable",
    "PostgreSQL: GetTask, 1 client / 16 clients",
    "PostgreSQL: ListTasks limit 100 / 1000, status filter",
    "PostgreSQL: StartPod, 1 client / 32 clients over 2 pod-hosts",
    "PostgreSQL: pgbench 1-row INSERT per transaction, 64 clients",
    "Failover: leader SIGKILL → new leader (lease taken)",
    "Failover: leader SIGKILL → new leader supervising (host READY, StartPod ok)",
    "Failover: pods killed by failovers",
];
