//! The test tools of `scripts/tools` (grpcurl, kubectl, kubernetes-validate,
//! grpcio-tools) live in a virtual environment under `target/tools-venv`,
//! not on the system: tests find them there, so they also run outside
//! `scripts/test` (which puts that venv first on PATH) once it exists.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The venv's bin directory (`IPA_TOOLS_VENV` overrides the venv, as for
/// scripts/tools).
pub fn venv_bin() -> PathBuf {
    std::env::var_os("IPA_TOOLS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/tools-venv"))
        .join("bin")
}

/// `name` from the venv when it is there, else `name` for a PATH lookup.
pub fn tool(name: &str) -> PathBuf {
    let p = venv_bin().join(name);
    if p.exists() { p } else { PathBuf::from(name) }
}

/// PATH with the venv's bin directory first, for shell commands.
pub fn path_with_venv() -> OsString {
    let mut parts = vec![venv_bin()];
    if let Some(p) = std::env::var_os("PATH") {
        parts.extend(std::env::split_paths(&p));
    }
    std::env::join_paths(parts).expect("PATH entries without separators")
}

/// The venv's python, installing the tools first if needed (through
/// scripts/tools, which serialises concurrent installs).
pub fn python() -> PathBuf {
    let out = std::process::Command::new(repo_root().join("scripts/tools"))
        .arg("python")
        .output()
        .expect("run scripts/tools");
    assert!(
        out.status.success(),
        "scripts/tools python failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}
