//! Rendering the kustomizations and looking things up in the result.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The central-manager workload (a StatefulSet on SQLite, a Deployment of
/// replicas on PostgreSQL) and its container.
pub const CENTRAL: &str = "ipa-central-manager";
pub const CENTRAL_CONTAINER: &str = "central-manager";
/// The pod-host StatefulSet, headless Service and container.
pub const POD_HOST: &str = "ipa-pod-host";
pub const POD_HOST_CONTAINER: &str = "pod-host";

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Runs `deploy/check.sh ARGS`, returning its stdout; panics with its
/// output when it fails.
pub fn check_sh(args: &[&str]) -> String {
    let script = repo_root().join("deploy/check.sh");
    let out = Command::new("bash")
        .arg(&script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "deploy/check.sh {args:?} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `base` and every overlay directory, in a stable order.
pub fn kustomizations() -> Vec<String> {
    let dir = repo_root().join("deploy/k8s/overlays");
    let mut overlays: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(Result::ok)
        .filter(|e| e.path().join("kustomization.yaml").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    overlays.sort();
    assert!(!overlays.is_empty(), "no overlays under {}", dir.display());
    let mut all = vec!["base".to_owned()];
    all.extend(overlays);
    all
}

/// One kustomization rendered by `kubectl kustomize`.
pub struct Rendered {
    /// `base` or the overlay's directory name.
    pub name: String,
    /// The rendered objects.
    pub objects: Vec<Value>,
}

impl Rendered {
    /// Renders `name` (see [`kustomizations`]).
    pub fn render(name: &str) -> Self {
        let json = check_sh(&["render-json", name]);
        let objects: Vec<Value> = serde_json::from_str(&json)
            .unwrap_or_else(|e| panic!("{name}: rendered JSON does not parse: {e}"));
        assert!(!objects.is_empty(), "{name}: rendered nothing");
        Self {
            name: name.to_owned(),
            objects,
        }
    }

    /// Every kustomization, rendered.
    pub fn all() -> Vec<Self> {
        kustomizations().iter().map(|n| Self::render(n)).collect()
    }

    /// All objects of `kind`.
    pub fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.objects.iter().filter(|o| o["kind"] == kind).collect()
    }

    /// The one object of `kind` whose name is `name` or, for generated
    /// ConfigMaps, `name-<hash>`.
    pub fn get(&self, kind: &str, name: &str) -> &Value {
        let found: Vec<&Value> = self
            .of_kind(kind)
            .into_iter()
            .filter(|o| {
                let n = o["metadata"]["name"].as_str().unwrap_or_default();
                n == name
            })
            .collect();
        assert_eq!(
            found.len(),
            1,
            "{}: expected one {kind} named {name}, found {}",
            self.name,
            found.len()
        );
        found[0]
    }

    /// The central-manager workload: the one-replica StatefulSet (SQLite)
    /// or the Deployment of replicas (PostgreSQL); exactly one of them.
    pub fn central(&self) -> &Value {
        let found: Vec<&Value> = ["StatefulSet", "Deployment"]
            .iter()
            .flat_map(|k| self.of_kind(k))
            .filter(|o| o["metadata"]["name"] == CENTRAL)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "{}: expected one StatefulSet or Deployment named {CENTRAL}, found {}",
            self.name,
            found.len()
        );
        found[0]
    }

    /// Whether central-manager runs as replicas (a Deployment on
    /// PostgreSQL) rather than the one StatefulSet on SQLite.
    pub fn replicated(&self) -> bool {
        self.central()["kind"] == "Deployment"
    }

    /// The namespace the objects are rendered into (`default` if none).
    pub fn namespace(&self) -> String {
        self.objects
            .iter()
            .find_map(|o| o["metadata"]["namespace"].as_str())
            .unwrap_or("default")
            .to_owned()
    }
}

/// The pod spec of a workload.
pub fn pod_spec(workload: &Value) -> &Value {
    &workload["spec"]["template"]["spec"]
}

/// The container `name` of a workload.
pub fn container<'a>(workload: &'a Value, name: &str) -> &'a Value {
    pod_spec(workload)["containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no container {name} in {}", workload["metadata"]["name"]))
}

/// A JSON array of strings as a vector (missing → empty).
pub fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|s| s.as_str().expect("string").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A JSON object of strings as a map (missing → empty).
pub fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().expect("string").to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// True when every `matchLabels` pair is among `labels`.
pub fn selects(match_labels: &Value, labels: &Value) -> bool {
    let want = string_map(match_labels);
    let have = string_map(labels);
    !want.is_empty() && want.iter().all(|(k, v)| have.get(k) == Some(v))
}

/// The value a container gives the setting `flag` (a long flag name
/// without dashes): `--flag=V` or `--flag V` in its args, else a literal
/// `IPA_FLAG` env value. `None` when the manifests leave the default.
pub fn setting(container: &Value, flag: &str) -> Option<String> {
    let args = strings(&container["args"]);
    let long = format!("--{flag}");
    for (i, a) in args.iter().enumerate() {
        if let Some(v) = a.strip_prefix(&format!("{long}=")) {
            return Some(v.to_owned());
        }
        if *a == long {
            return args.get(i + 1).cloned();
        }
    }
    let env = env_name(flag);
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == env.as_str())
        .and_then(|e| e["value"].as_str())
        .map(str::to_owned)
}

/// The env entry `name` of a container, if it has one.
pub fn env_entry<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
}

/// The names `$(NAME)` refers to in `s` (Kubernetes' dependent env vars).
pub fn var_refs(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find("$(") {
        rest = &rest[i + 2..];
        match rest.find(')') {
            Some(j) => {
                out.push(rest[..j].to_owned());
                rest = &rest[j + 1..];
            }
            None => break,
        }
    }
    out
}

/// `IPA_` + upper-snake flag name (docs/api.md: every flag reads one).
pub fn env_name(flag: &str) -> String {
    format!("IPA_{}", flag.replace('-', "_").to_uppercase())
}

/// The port of a `HOST:PORT` listen address.
pub fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("{addr:?} is not HOST:PORT"))
}

/// The volume mount of `container` whose path contains `path`, with the
/// pod volume it mounts.
pub fn mount_for<'a>(
    workload: &'a Value,
    container: &'a Value,
    path: &str,
) -> (&'a Value, &'a Value) {
    let mount = container["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| {
            let mp = m["mountPath"].as_str().unwrap_or_default();
            path == mp || path.starts_with(&format!("{}/", mp.trim_end_matches('/')))
        })
        .max_by_key(|m| m["mountPath"].as_str().unwrap_or_default().len())
        .unwrap_or_else(|| panic!("{path} is on no volume of {}", container["name"]));
    let name = &mount["name"];
    let volume = pod_spec(workload)["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(
            workload["spec"]["volumeClaimTemplates"]
                .as_array()
                .into_iter()
                .flatten(),
        )
        .find(|v| v["name"] == *name || v["metadata"]["name"] == *name)
        .unwrap_or_else(|| panic!("volume {name} of {path} is not defined"));
    (mount, volume)
}
