//! Rules for central-manager as replicas on PostgreSQL (the `replicated`
//! overlay; docs/operations.md "Replicas (PostgreSQL)"): a Deployment of
//! several replicas without a volume, the database URL from a Secret that
//! is not committed with the manifests, a unique replica id, an advertise
//! URL the other replicas can reach, a leader lease whose failover ends
//! well before the pod-hosts fence their pods, a disruption budget and a
//! spread that never take more than one replica at a time, and a
//! NetworkPolicy that lets replicas call each other.

use serde_json::Value;

use super::manifests::{
    CENTRAL, CENTRAL_CONTAINER, POD_HOST, POD_HOST_CONTAINER, Rendered, container, env_entry,
    pod_spec, port_of, repo_root, selects, setting, strings, var_refs,
};
use super::rules::fence_ms;

/// `--leader-lease-ms` when the manifests leave the default.
const DEFAULT_LEASE_MS: u64 = 3000;

/// The kustomizations with central-manager replicas; at least one.
fn replicated() -> Vec<Rendered> {
    let all: Vec<Rendered> = Rendered::all()
        .into_iter()
        .filter(|r| r.replicated())
        .collect();
    assert!(!all.is_empty(), "no overlay runs central-manager replicas");
    all
}

#[test]
fn replicas_are_a_deployment_on_postgresql_without_a_volume() {
    for r in replicated() {
        let ctx = format!("{}: central-manager replicas", r.name);
        let d = r.central();
        let c = container(d, CENTRAL_CONTAINER);
        let replicas = d["spec"]["replicas"].as_u64().unwrap_or(1);
        assert!(
            replicas >= 3,
            "{ctx}: {replicas} replicas; a failover needs a spare"
        );
        assert!(
            pod_spec(d)["volumes"]
                .as_array()
                .into_iter()
                .flatten()
                .all(|v| v["persistentVolumeClaim"].is_null()),
            "{ctx}: state is in PostgreSQL, no volume claim"
        );
        // Never fewer serving replicas than asked for during a rollout.
        assert_eq!(
            d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], 0,
            "{ctx}: a rollout may take a replica away before its successor is ready"
        );

        // The URL comes from a Secret, never from the manifests.
        assert!(
            setting(c, "database-url").is_none()
                && !strings(&c["args"])
                    .iter()
                    .any(|a| a.starts_with("--database-url")),
            "{ctx}: the database URL is written in the manifests"
        );
        let url = env_entry(c, "IPA_DATABASE_URL")
            .unwrap_or_else(|| panic!("{ctx}: no IPA_DATABASE_URL"));
        let key_ref = &url["valueFrom"]["secretKeyRef"];
        let (secret, key) = (
            key_ref["name"]
                .as_str()
                .unwrap_or_else(|| panic!("{ctx}: URL not from a Secret")),
            key_ref["key"].as_str().expect("secretKeyRef key"),
        );
        assert!(
            r.of_kind("Secret").is_empty(),
            "{ctx}: a Secret is rendered with the manifests"
        );
        check_secret_example(&r.name, secret, key);

        // Each replica is named by its pod and reachable at its pod IP on
        // the API port, in the API's scheme.
        let id =
            env_entry(c, "IPA_REPLICA_ID").unwrap_or_else(|| panic!("{ctx}: no IPA_REPLICA_ID"));
        assert_eq!(
            id["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name",
            "{ctx}: replica id is not the pod name"
        );
        let adv = setting(c, "advertise-url").unwrap_or_else(|| panic!("{ctx}: no advertise URL"));
        let scheme = if setting(c, "tls-cert").is_some() {
            "https"
        } else {
            "http"
        };
        let refs = var_refs(&adv);
        assert_eq!(refs.len(), 1, "{ctx}: {adv} names no pod address");
        let ip = env_entry(c, &refs[0]).expect("checked in rules.rs");
        assert_eq!(
            ip["valueFrom"]["fieldRef"]["fieldPath"], "status.podIP",
            "{ctx}: $({}) is not the pod IP",
            refs[0]
        );
        let api = port_of(&setting(c, "listen").expect("--listen"));
        assert_eq!(
            adv,
            format!("{scheme}://$({}):{api}", refs[0]),
            "{ctx}: advertise URL vs the API's scheme and port"
        );
    }
}

/// The example Secret ships next to the overlay, is not one of its
/// resources, and has the key the Deployment reads with a postgres:// URL.
fn check_secret_example(overlay: &str, secret: &str, key: &str) {
    let dir = repo_root().join("deploy/k8s/overlays").join(overlay);
    let path = dir.join("database-secret.example.yaml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{overlay}: {}: {e}", path.display()));
    let kustomization = std::fs::read_to_string(dir.join("kustomization.yaml")).expect("read");
    assert!(
        !kustomization
            .lines()
            .any(|l| l.trim_start().starts_with("- ") && l.contains("database-secret")),
        "{overlay}: the example Secret is a resource"
    );
    assert!(
        text.contains(&format!("name: {secret}\n")),
        "{overlay}: the example is not Secret {secret}"
    );
    let url = text
        .lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("{overlay}: the example has no key {key}"));
    assert!(
        url.starts_with("postgres://"),
        "{overlay}: example URL {url}"
    );
}

#[test]
fn a_failover_ends_well_before_the_pod_hosts_fence_their_pods() {
    for r in replicated() {
        let ctx = format!("{}: central-manager replicas", r.name);
        let d = r.central();
        let c = container(d, CENTRAL_CONTAINER);
        let lease: u64 =
            setting(c, "leader-lease-ms").map_or(DEFAULT_LEASE_MS, |v| v.parse().expect("ms"));
        // A follower takes an expired lease within lease/6 of expiry.
        let failover = lease + lease / 6;
        let host_c = container(r.get("StatefulSet", POD_HOST), POD_HOST_CONTAINER);
        let fence = fence_ms(host_c);
        assert!(
            failover < fence,
            "{ctx}: failover ({failover} ms) does not end before the pod-hosts' fence ({fence} ms)"
        );
        // A SIGTERMed leader releases the lease, finishes its calls and
        // flushes: Kubernetes' SIGKILL must not cut that short.
        let grace_ms = pod_spec(d)["terminationGracePeriodSeconds"]
            .as_u64()
            .unwrap_or(30)
            * 1000;
        assert!(
            grace_ms >= 2 * failover,
            "{ctx}: terminationGracePeriodSeconds ({grace_ms} ms) too short for a handover"
        );
    }
}

#[test]
fn disruptions_take_one_replica_at_a_time_and_replicas_reach_each_other() {
    for r in replicated() {
        let ctx = format!("{}: central-manager replicas", r.name);
        let d = r.central();
        let labels = &d["spec"]["template"]["metadata"]["labels"];
        let pdb = r.get("PodDisruptionBudget", CENTRAL);
        assert!(
            selects(&pdb["spec"]["selector"]["matchLabels"], labels),
            "{ctx}: PDB does not select the replicas"
        );
        assert_eq!(
            pdb["spec"]["maxUnavailable"], 1,
            "{ctx}: PDB maxUnavailable"
        );

        // One replica per node: a node's loss takes at most one.
        let spec = pod_spec(d);
        let spread = spec["topologySpreadConstraints"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|t| {
                t["topologyKey"] == "kubernetes.io/hostname"
                    && t["whenUnsatisfiable"] == "DoNotSchedule"
                    && t["maxSkew"] == 1
                    && selects(&t["labelSelector"]["matchLabels"], labels)
            });
        let anti =
            spec["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|t| {
                    t["topologyKey"] == "kubernetes.io/hostname"
                        && selects(&t["labelSelector"]["matchLabels"], labels)
                });
        assert!(spread || anti, "{ctx}: replicas may share a node");

        // Followers forward to the leader's API port: a rule lets the
        // replicas of this namespace in.
        let api = u64::from(port_of(
            &setting(container(d, CENTRAL_CONTAINER), "listen").expect("--listen"),
        ));
        let policy = r
            .of_kind("NetworkPolicy")
            .into_iter()
            .find(|p| selects(&p["spec"]["podSelector"]["matchLabels"], labels))
            .unwrap_or_else(|| panic!("{ctx}: no NetworkPolicy"));
        let peers_in = |rule: &Value| -> bool {
            let ports_ok = rule["ports"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["port"].as_u64() == Some(api)));
            ports_ok
                && rule["from"].as_array().into_iter().flatten().any(|peer| {
                    peer["namespaceSelector"].is_null()
                        && selects(&peer["podSelector"]["matchLabels"], labels)
                })
        };
        assert!(
            policy["spec"]["ingress"]
                .as_array()
                .into_iter()
                .flatten()
                .any(peers_in),
            "{ctx}: replicas cannot reach each other's API port"
        );
    }
}
