//! End-to-end tests: one test binary (STYLE 11) with a module per area.
//! Each test starts the real binaries through `ipa_tests::ServerProcess`.

mod bench_smoke;
mod central;
mod chaos;
mod deploy;
mod docs;
mod hardening;
mod ipactl;
mod observability;
mod pod_host;
mod python_client;
mod replicas;
mod robustness;
mod schedules;
mod security;
mod system;
