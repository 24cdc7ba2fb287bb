//! Starting a whole system for end-to-end tests: pod-hosts with a test
//! template config, and a central-manager pointed at them, all on loopback
//! port 0 with temp dirs and short timeouts.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::{ServerProcess, bin_path};

/// Writes a pod-host TOML config to `dir/pod-host.toml` with templates:
/// `default` (demo-pod), `ledger` (ledger-pod appending to `ledger`), and
/// any `extra` `(name, toml body)` pairs. Returns its path.
pub fn write_host_config(dir: &Path, ledger: &Path, extra: &[(&str, &str)]) -> PathBuf {
    let mut toml = format!(
        "[templates.default]\ncommand = {:?}\n\n[templates.ledger]\ncommand = {:?}\nenv = {{ LEDGER = {:?} }}\n",
        bin_path("demo-pod").display().to_string(),
        bin_path("ledger-pod").display().to_string(),
        ledger.display().to_string(),
    );
    for (name, body) in extra {
        toml.push_str(&format!("\n[templates.{name}]\n{body}\n"));
    }
    let path = dir.join("pod-host.toml");
    std::fs::write(&path, toml).expect("write pod-host config");
    path
}

/// Starts a pod-host named `host_id` with `config`, its data under
/// `dir/<host_id>`, plus `extra` flags (e.g. `--fence-timeout-ms 1000`).
pub async fn start_pod_host(
    dir: &Path,
    host_id: &str,
    config: &Path,
    extra: &[&str],
) -> ServerProcess {
    let data = dir.join(host_id);
    std::fs::create_dir_all(&data).expect("host data dir");
    let mut args: Vec<OsString> = vec![
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--host-id".into(),
        host_id.into(),
        "--config".into(),
        config.into(),
        "--data-dir".into(),
        data.clone().into(),
    ];
    args.extend(extra.iter().map(OsString::from));
    ServerProcess::start("pod-host", &args, &[], Some(&data)).await
}

/// Starts central-manager with its database in `dir/central.db`, the given
/// pod-host URLs and `extra` flags.
pub async fn start_central(dir: &Path, pod_hosts: &[String], extra: &[&str]) -> ServerProcess {
    start_central_at(dir, &dir.join("central.db"), pod_hosts, extra).await
}

/// Like [`start_central`] with the database file at `db` (e.g. on a small
/// filesystem of its own).
pub async fn start_central_at(
    dir: &Path,
    db: &Path,
    pod_hosts: &[String],
    extra: &[&str],
) -> ServerProcess {
    let db = format!("sqlite://{}", db.display());
    start_central_url(dir, &db, pod_hosts, extra).await
}

/// Like [`start_central`] on the database `url` names (`sqlite://…` or
/// `postgres://…`).
pub async fn start_central_url(
    dir: &Path,
    url: &str,
    pod_hosts: &[String],
    extra: &[&str],
) -> ServerProcess {
    let mut args: Vec<OsString> = vec![
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--database-url".into(),
        url.into(),
    ];
    for url in pod_hosts {
        args.push("--pod-host".into());
        args.push(url.into());
    }
    args.extend(extra.iter().map(OsString::from));
    ServerProcess::start("central-manager", &args, &[], Some(dir)).await
}
