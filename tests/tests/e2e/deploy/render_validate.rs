//! Acceptance: every kustomization renders with `kubectl kustomize` and
//! validates offline with `kubernetes-validate --strict` (deploy/check.sh).

use super::manifests::{check_sh, kustomizations};

#[test]
fn every_kustomization_renders_and_validates_strictly_offline() {
    let out = check_sh(&[]);
    println!("{out}");
    for name in kustomizations() {
        assert!(
            out.lines().any(|l| l.starts_with(&format!("ok   {name}:"))),
            "deploy/check.sh did not report {name} as valid:\n{out}"
        );
    }
}
