//! Acceptance: the real binaries start healthy with exactly the command,
//! args and env the rendered manifests give each container.
//!
//! The pod is emulated on loopback, changing only what cannot exist here:
//! - every volume mount becomes a fresh temp dir (a ConfigMap volume gets
//!   the rendered ConfigMap's files), and the mount paths in args, env and
//!   config files are rewritten to it;
//! - the image's bin dir becomes this build's target dir;
//! - `0.0.0.0:PORT` listen addresses become `127.0.0.1:0`;
//! - the pod-host headless Service name becomes `localhost:<the pod-host's
//!   port>`, a name that resolves here;
//! - downward-API env (`fieldRef`) gets what Kubernetes would put there
//!   (the pod IP is 127.0.0.1), and `$(VAR)` in env values is expanded from
//!   the variables before it, as Kubernetes does;
//! - a central-manager whose database URL comes from a Secret (the
//!   replicated overlay: PostgreSQL) gets a fresh database on a private
//!   PostgreSQL server the test starts (tests/pg-harness);
//! - the Secrets the production overlay names get real certificates (one CA
//!   for all, as one cert-manager issuer would) and a token file, with the
//!   volume's `defaultMode`, and the servers are reached the way their
//!   settings say (TLS, a token, the plaintext health port for probes).
//!
//! Anything else the manifests use that this emulation does not know (an
//! unknown Secret or key, another fieldRef) fails the test, and so does
//! a flag the binary rejects (it exits before announcing its address) or an
//! `IPA_*` variable its `--help` does not document (clap ignores unknown
//! variables, so starting alone would not catch a typo).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipa_tests::{DEADLINE, ServerProcess, bin_path, wait_for_async};
use nix::sys::signal::Signal;
use serde_json::Value;
use tempfile::TempDir;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use super::manifests::{
    CENTRAL_CONTAINER, POD_HOST, POD_HOST_CONTAINER, Rendered, container, pod_spec, setting,
    strings, var_refs,
};
use super::secrets::{Secrets, client_auth, logged_health_addr};

/// Env vars the binaries read that are not their own `IPA_*` flags.
fn is_external_env(name: &str) -> bool {
    name == "RUST_LOG" || name.starts_with("OTEL_")
}

/// A container turned into a process invocation on this machine.
struct Invocation {
    bin: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// Env vars that only feed `$(VAR)` in later ones (not flags).
    expansion_only: Vec<String>,
    /// mountPath → temp dir; kept alive with the process.
    mounts: Vec<(String, TempDir)>,
    /// The working dir: stands in for the read-only root filesystem.
    root: TempDir,
    termination_grace: Duration,
}

/// Byte that can continue a path component or host name.
fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')
}

/// Replaces whole path prefixes / names in one pass, so a replacement (a
/// temp dir under /tmp) is never rewritten again by a later rule (`/tmp`).
fn rewrite(s: &str, rules: &[(String, String)]) -> String {
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    'scan: while i < s.len() {
        if i == 0 || !is_name_byte(bytes[i - 1]) {
            for (from, to) in rules {
                let end = i + from.len();
                if s[i..].starts_with(from.as_str())
                    && (end == s.len() || !is_name_byte(bytes[end]))
                {
                    out.push_str(to);
                    i = end;
                    continue 'scan;
                }
            }
        }
        let ch = s[i..].chars().next().expect("char");
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// `0.0.0.0:N` → `127.0.0.1:0`: the port is picked by the kernel and
/// learned from the `listening on` line.
fn loopback_listen(s: &str) -> String {
    match s.find("0.0.0.0:") {
        Some(i) if s[i + 8..].bytes().all(|b| b.is_ascii_digit()) => {
            format!("{}127.0.0.1:0", &s[..i])
        }
        _ => s.to_owned(),
    }
}

impl Invocation {
    /// Builds the invocation of `container_name` in workload `sts` (a
    /// StatefulSet or a Deployment); `extra` adds name rewrites (the
    /// pod-host Service → its address).
    fn from_manifests(
        r: &Rendered,
        sts: &Value,
        container_name: &str,
        extra: &[(String, String)],
        secrets: &Secrets,
    ) -> Self {
        let sts_name = sts["metadata"]["name"].as_str().expect("name");
        let ctx = format!("{}: {sts_name}/{container_name}", r.name);
        let c = container(sts, container_name);
        assert!(c["envFrom"].is_null(), "{ctx}: envFrom is not emulated");

        // The image's binary → ours.
        let command = strings(&c["command"]);
        assert_eq!(
            command.len(),
            1,
            "{ctx}: command must be the binary alone, flags go in args"
        );
        let image_bin = Path::new(&command[0]);
        let bin = image_bin
            .file_name()
            .expect("binary name")
            .to_string_lossy()
            .into_owned();
        let image_bin_dir = image_bin
            .parent()
            .expect("bin dir")
            .to_string_lossy()
            .into_owned();
        let local_bin_dir = bin_path(&bin)
            .parent()
            .expect("target dir")
            .to_string_lossy()
            .into_owned();

        let mut rules: Vec<(String, String)> = extra.to_vec();
        rules.push((image_bin_dir, local_bin_dir));

        // Volumes → temp dirs.
        let volumes: BTreeMap<String, &Value> = pod_spec(sts)["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| (v["name"].as_str().expect("name").to_owned(), v))
            .collect();
        let claims: Vec<String> = sts["spec"]["volumeClaimTemplates"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| v["metadata"]["name"].as_str().expect("name").to_owned())
            .collect();
        let mut mounts = Vec::new();
        let mut config_files = Vec::new();
        for m in c["volumeMounts"].as_array().into_iter().flatten() {
            let name = m["name"].as_str().expect("mount name");
            let path = m["mountPath"]
                .as_str()
                .expect("mountPath")
                .trim_end_matches('/')
                .to_owned();
            assert!(
                m["subPath"].is_null(),
                "{ctx}: subPath mounts are not emulated"
            );
            let dir = tempfile::tempdir().expect("tempdir");
            if let Some(v) = volumes.get(name) {
                if let Some(secret) = v["secret"]["secretName"].as_str() {
                    use std::os::unix::fs::PermissionsExt;
                    assert!(
                        v["secret"]["items"].is_null(),
                        "{ctx}: secret items are not emulated"
                    );
                    let mode = v["secret"]["defaultMode"].as_u64().unwrap_or(0o644) as u32;
                    for (key, text) in secrets.files(secret, &ctx) {
                        let f = dir.path().join(key);
                        std::fs::write(&f, text).expect("write secret");
                        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode))
                            .expect("secret mode");
                    }
                } else if let Some(cm) = v["configMap"]["name"].as_str() {
                    assert!(
                        v["configMap"]["items"].is_null(),
                        "{ctx}: configMap items are not emulated"
                    );
                    let cm = r.get("ConfigMap", cm);
                    for (key, text) in cm["data"].as_object().into_iter().flatten() {
                        config_files.push((
                            dir.path().join(key),
                            text.as_str().expect("data").to_owned(),
                        ));
                    }
                } else {
                    assert!(
                        v["emptyDir"].is_object(),
                        "{ctx}: volume {name} is neither ConfigMap nor emptyDir"
                    );
                }
            } else {
                assert!(
                    claims.iter().any(|c| c == name),
                    "{ctx}: volume {name} is not defined"
                );
            }
            mounts.push((path, dir));
        }
        for (path, dir) in &mounts {
            rules.push((path.clone(), dir.path().to_string_lossy().into_owned()));
        }
        // Longest first: /var/lib/ipa-pod-host before /var/lib/ipa.
        rules.sort_by_key(|(from, _)| std::cmp::Reverse(from.len()));

        // Config files carry paths too (template commands).
        for (file, text) in config_files {
            std::fs::write(&file, rewrite(&text, &rules)).expect("write config");
        }

        let fix = |v: &str| loopback_listen(&rewrite(v, &rules));
        let args = strings(&c["args"]).iter().map(|a| fix(a)).collect();
        // A StatefulSet's pods are NAME-ORDINAL, a Deployment's
        // NAME-TEMPLATEHASH-SUFFIX.
        let pod_name = if sts["kind"] == "Deployment" {
            format!("{sts_name}-7d9c5b8f4-x2k8q")
        } else {
            format!("{sts_name}-0")
        };
        let mut env: Vec<(String, String)> = Vec::new();
        let mut expansion_only = Vec::new();
        for e in c["env"].as_array().into_iter().flatten() {
            let name = e["name"].as_str().expect("env name").to_owned();
            let value = if let Some(v) = e["value"].as_str() {
                let mut v = fix(v);
                for var in var_refs(&v) {
                    let (_, val) = env
                        .iter()
                        .find(|(k, _)| *k == var)
                        .unwrap_or_else(|| panic!("{ctx}: env {name} uses undefined $({var})"));
                    v = v.replace(&format!("$({var})"), val);
                    expansion_only.push(var);
                }
                v
            } else if let Some(field) = e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                match field {
                    "metadata.name" => pod_name.clone(),
                    "metadata.namespace" => r.namespace(),
                    "status.podIP" => "127.0.0.1".to_owned(),
                    other => panic!("{ctx}: env {name} from fieldRef {other} is not emulated"),
                }
            } else if let Some(secret) = e["valueFrom"]["secretKeyRef"]["name"].as_str() {
                let key = e["valueFrom"]["secretKeyRef"]["key"]
                    .as_str()
                    .expect("secretKeyRef key");
                secrets.value(secret, key, &ctx)
            } else {
                panic!("{ctx}: env {name} has a source that is not emulated: {e}");
            };
            env.push((name, value));
        }
        // Only those never read as a flag themselves.
        expansion_only.retain(|v| !v.starts_with("IPA_"));
        let termination_grace = Duration::from_secs(
            pod_spec(sts)["terminationGracePeriodSeconds"]
                .as_u64()
                .unwrap_or(30),
        );
        Self {
            bin,
            args,
            env,
            expansion_only,
            mounts,
            root: tempfile::tempdir().expect("tempdir"),
            termination_grace,
        }
    }

    /// Every `IPA_*` variable and `--flag` used is documented by `--help`.
    fn check_documented(&self) {
        let out = std::process::Command::new(bin_path(&self.bin))
            .arg("--help")
            .output()
            .expect("run --help");
        assert!(out.status.success(), "{} --help failed", self.bin);
        let help = String::from_utf8_lossy(&out.stdout);
        for (name, _) in &self.env {
            if is_external_env(name) || self.expansion_only.contains(name) {
                continue;
            }
            assert!(
                name.starts_with("IPA_"),
                "{}: env {name} is read by nothing",
                self.bin
            );
            assert!(
                help.contains(name.as_str()),
                "{}: --help does not know env {name}",
                self.bin
            );
        }
        for a in &self.args {
            let flag = a.split('=').next().unwrap_or_default();
            if flag.starts_with("--") {
                assert!(
                    help.contains(flag),
                    "{}: --help does not know {flag}",
                    self.bin
                );
            }
        }
    }

    async fn start(&self) -> ServerProcess {
        self.check_documented();
        let args: Vec<OsString> = self.args.iter().map(OsString::from).collect();
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        ServerProcess::start(&self.bin, &args, &env, Some(self.root.path())).await
    }

    /// The temp dir standing in for `mount_path`.
    fn mount(&self, mount_path: &str) -> &Path {
        self.mounts
            .iter()
            .find(|(p, _)| p == mount_path)
            .map(|(_, d)| d.path())
            .unwrap_or_else(|| panic!("no mount {mount_path}"))
    }

    /// The server wrote nothing relative to its working dir: in the
    /// container that is the read-only root filesystem.
    fn assert_root_untouched(&self) {
        let stray: Vec<PathBuf> = std::fs::read_dir(self.root.path())
            .expect("read root")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                // The harness's own stderr capture.
                let n = p.file_name().unwrap_or_default().to_string_lossy();
                !(n.starts_with(&format!("{}-", self.bin)) && n.ends_with(".log"))
            })
            .collect();
        assert!(
            stray.is_empty(),
            "{} wrote outside its volumes: {stray:?}",
            self.bin
        );
    }

    /// Logs are in the format the manifests ask for.
    fn assert_log_format(&self, p: &ServerProcess, c: &Value) {
        let log = p.log();
        let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
        if lines.is_empty() {
            return; // TEST_LOG set, or nothing logged yet.
        }
        let json = setting(c, "log-format").as_deref() == Some("json");
        for l in lines {
            let is_json = serde_json::from_str::<serde_json::Map<String, Value>>(l).is_ok();
            assert_eq!(
                is_json, json,
                "{}: log line in the wrong format: {l}",
                self.bin
            );
        }
    }
}

/// Waits for SERVING where the kubelet would ask: the plaintext health
/// port when the server has one, else its main port.
async fn wait_serving(p: &ServerProcess, inv: &Invocation) {
    let what = format!("{} health SERVING", p.name);
    let health_port = inv.env.iter().any(|(k, _)| k == "IPA_HEALTH_LISTEN")
        || inv.args.iter().any(|a| a.starts_with("--health-listen"));
    let channel = if health_port {
        let addr = wait_for_async("the health port in the log", DEADLINE, || async {
            logged_health_addr(&p.log())
        })
        .await;
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect_lazy()
    } else {
        p.channel()
    };
    wait_for_async(&what, DEADLINE, || async {
        let mut client = HealthClient::new(channel.clone());
        let resp = client
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .ok()?;
        (resp.into_inner().status() == ServingStatus::Serving).then_some(())
    })
    .await;
}

async fn sigterm_exits_cleanly(p: &mut ServerProcess, inv: &Invocation) {
    p.signal(Signal::SIGTERM);
    let status = p.wait_exit(inv.termination_grace).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "{} did not exit 0 within terminationGracePeriodSeconds ({:?}) of SIGTERM: {status:?}\n{}",
        p.name,
        inv.termination_grace,
        p.log()
    );
}

/// One kustomization: pod-host, then central-manager pointed at it through
/// the rewritten `--pod-host-dns`; both healthy; both stop on SIGTERM.
async fn run_pair(r: &Rendered) {
    let secrets = Secrets::new(r.replicated());
    let host_sts = r.get("StatefulSet", POD_HOST);
    let host_inv = Invocation::from_manifests(r, host_sts, POD_HOST_CONTAINER, &[], &secrets);
    let mut host = host_inv.start().await;
    wait_serving(&host, &host_inv).await;
    host_inv.assert_log_format(&host, container(host_sts, POD_HOST_CONTAINER));

    // The headless Service's DNS name, short or qualified → a name that
    // resolves to this pod-host.
    let svc = r.get("Service", POD_HOST);
    let port = svc["spec"]["ports"][0]["port"].as_u64().expect("port");
    let ns = r.namespace();
    let to = format!("localhost:{}", host.addr.port());
    let names = [
        format!("{POD_HOST}.{ns}.svc.cluster.local:{port}"),
        format!("{POD_HOST}.{ns}.svc:{port}"),
        format!("{POD_HOST}.{ns}:{port}"),
        format!("{POD_HOST}:{port}"),
    ];
    let extra: Vec<(String, String)> = names.iter().map(|n| (n.clone(), to.clone())).collect();
    let central_w = r.central();
    let central_inv = Invocation::from_manifests(r, central_w, CENTRAL_CONTAINER, &extra, &secrets);
    assert!(
        central_inv
            .args
            .iter()
            .chain(central_inv.env.iter().map(|(_, v)| v))
            .any(|v| v.contains(&to)),
        "{}: central-manager is not pointed at the pod-host Service",
        r.name
    );
    let mut central = central_inv.start().await;
    wait_serving(&central, &central_inv).await;

    // --pod-host-dns resolved the Service name, central-manager opened the
    // Connect stream, and the pod-host is READY under the host id the
    // downward API gave it.
    let want_id = host_inv
        .env
        .iter()
        .find(|(k, _)| k == "IPA_HOST_ID")
        .map(|(_, v)| v.clone());
    let cm = client_auth(&central_inv.env, &secrets).client(central.addr);
    let what = format!(
        "{}: pod-host READY in ListPodHosts via --pod-host-dns",
        r.name
    );
    wait_for_async(&what, DEADLINE, || {
        let mut cm = cm.clone();
        let want_id = want_id.clone();
        async move {
            let hosts = cm
                .list_pod_hosts(ipa_tests::pb::ListPodHostsRequest {})
                .await
                .ok()?
                .into_inner()
                .hosts;
            hosts
                .iter()
                .find(|h| {
                    h.state == ipa_tests::pb::PodHostState::Ready as i32
                        && want_id.as_ref().is_none_or(|w| &h.host_id == w)
                })
                .map(|_| ())
        }
    })
    .await;
    central_inv.assert_log_format(&central, container(central_w, CENTRAL_CONTAINER));
    if r.replicated() {
        // The schema was migrated into the Secret's database.
        secrets.assert_database_migrated(&r.name);
    } else {
        // The database was created on the PersistentVolumeClaim's mount.
        let claim = &central_w["spec"]["volumeClaimTemplates"][0]["metadata"]["name"];
        let claim_path = container(central_w, CENTRAL_CONTAINER)["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["name"] == *claim)
            .and_then(|m| m["mountPath"].as_str())
            .expect("claim mount");
        let db_dir = central_inv.mount(claim_path);
        assert!(
            std::fs::read_dir(db_dir)
                .expect("read db dir")
                .next()
                .is_some(),
            "{}: central-manager wrote nothing to its database volume",
            r.name
        );
    }

    sigterm_exits_cleanly(&mut central, &central_inv).await;
    sigterm_exits_cleanly(&mut host, &host_inv).await;
    central_inv.assert_root_untouched();
    host_inv.assert_root_untouched();
}

#[tokio::test]
async fn every_kustomization_starts_a_healthy_pair_with_its_own_flags_and_env() {
    for r in Rendered::all() {
        println!("starting {} as rendered", r.name);
        run_pair(&r).await;
    }
}

#[test]
fn health_ports_are_read_from_either_log_format() {
    let text = "2026-01-01T00:00:00Z  INFO ipa_common::health: health checks served in plaintext on their own port addr=127.0.0.1:4321";
    let json = r#"{"level":"INFO","fields":{"message":"health checks served in plaintext on their own port","addr":"127.0.0.1:4321"}}"#;
    for log in [text, json] {
        assert_eq!(
            logged_health_addr(log),
            Some("127.0.0.1:4321".parse().unwrap()),
            "{log}"
        );
    }
    assert_eq!(logged_health_addr("nothing here"), None);
}

#[test]
fn rewrite_replaces_whole_components_once() {
    let rules = vec![
        ("/var/lib/ipa-pod-host".to_owned(), "/tmp/a".to_owned()),
        ("/var/lib/ipa".to_owned(), "/tmp/b".to_owned()),
        ("/tmp".to_owned(), "/tmp/c".to_owned()),
    ];
    assert_eq!(
        rewrite("sqlite:///var/lib/ipa/central.db", &rules),
        "sqlite:///tmp/b/central.db"
    );
    assert_eq!(
        rewrite("--data-dir=/var/lib/ipa-pod-host", &rules),
        "--data-dir=/tmp/a"
    );
    assert_eq!(rewrite("/tmpfoo /tmp", &rules), "/tmpfoo /tmp/c");
    assert_eq!(
        loopback_listen("--listen=0.0.0.0:50051"),
        "--listen=127.0.0.1:0"
    );
    assert_eq!(loopback_listen("0.0.0.0:50052"), "127.0.0.1:0");
}
