//! Deployment rules a schema cannot check: the wiring between objects
//! (selectors, Service ports, the DNS name central-manager resolves), gRPC
//! probes on the port the server listens on, a termination grace longer
//! than the pod-host's stop grace, non-root and read-only containers, and
//! every path the binaries write on a writable volume.

use serde_json::Value;

use super::manifests::{
    CENTRAL, CENTRAL_CONTAINER, POD_HOST, POD_HOST_CONTAINER, Rendered, container, mount_for,
    pod_spec, port_of, selects, setting, strings, var_refs,
};

/// What running pods as other users takes (pod-host/src/isolation.rs):
/// set their uid and gid, hand them their dirs, signal them and clean up
/// after them.
const POD_USER_CAPS: &[&str] = &["CHOWN", "DAC_OVERRIDE", "KILL", "SETGID", "SETUID"];

/// Slack between the pod-host's stop grace and Kubernetes' SIGKILL: time to
/// report the stops to central-manager and exit.
const SHUTDOWN_MARGIN_MS: u64 = 5_000;

/// What every server container must satisfy, whichever it is.
fn check_server_container(r: &Rendered, sts: &Value, name: &str) -> u16 {
    let ctx = format!("{}: {}", r.name, name);
    let c = container(sts, name);
    let pod = pod_spec(sts);

    // Listens on all interfaces on the port the probes and Service use.
    let listen = setting(c, "listen").unwrap_or_else(|| panic!("{ctx}: no --listen"));
    assert!(
        listen.starts_with("0.0.0.0:"),
        "{ctx}: listens on {listen}, not 0.0.0.0"
    );
    let port = port_of(&listen);
    // Probes go to the plaintext health port when the main port needs
    // TLS or certificates the kubelet cannot present.
    let probe_port = setting(c, "health-listen").map_or(port, |h| {
        assert!(h.starts_with("0.0.0.0:"), "{ctx}: health port on {h}");
        port_of(&h)
    });
    if setting(c, "tls-cert").is_some() {
        assert_ne!(
            probe_port, port,
            "{ctx}: TLS without --health-listen: probes cannot pass"
        );
    }
    let ports: Vec<u64> = c["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["containerPort"].as_u64())
        .collect();
    assert_eq!(
        ports,
        vec![u64::from(port)],
        "{ctx}: containerPort vs --listen"
    );
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        assert_eq!(
            c[probe]["grpc"]["port"].as_u64(),
            Some(u64::from(probe_port)),
            "{ctx}: {probe} must be a native gRPC probe on {probe_port}"
        );
        // Service "" is the server's overall health.
        assert!(
            c[probe]["grpc"]["service"]
                .as_str()
                .unwrap_or_default()
                .is_empty(),
            "{ctx}: {probe} checks a named service"
        );
    }

    for kind in ["requests", "limits"] {
        for res in ["cpu", "memory"] {
            assert!(
                c["resources"][kind][res].is_string(),
                "{ctx}: resources.{kind}.{res} missing"
            );
        }
    }

    // Non-root, read-only, no capabilities: unless pods run as users of
    // their own (--pod-user, --pod-uid-range), which needs root and exactly
    // the capabilities to switch users and look after their files.
    let psc = &pod["securityContext"];
    let pods_apart = setting(c, "pod-user").is_some() || setting(c, "pod-uid-range").is_some();
    if pods_apart {
        let added = strings(&c["securityContext"]["capabilities"]["add"]);
        assert!(
            added.iter().all(|a| POD_USER_CAPS.contains(&a.as_str())),
            "{ctx}: capabilities {added:?} beyond what --pod-user needs ({POD_USER_CAPS:?})"
        );
        for needed in ["SETUID", "SETGID"] {
            assert!(
                added.iter().any(|a| a == needed),
                "{ctx}: --pod-user needs {needed}"
            );
        }
    } else {
        assert_eq!(psc["runAsNonRoot"], true, "{ctx}: runAsNonRoot");
        assert!(
            psc["runAsUser"].as_u64().is_some_and(|u| u > 0),
            "{ctx}: numeric non-root runAsUser"
        );
        assert!(
            c["securityContext"]["capabilities"]["add"].is_null(),
            "{ctx}: adds capabilities"
        );
    }
    assert_eq!(
        psc["seccompProfile"]["type"], "RuntimeDefault",
        "{ctx}: seccomp"
    );
    let sc = &c["securityContext"];
    assert_eq!(
        sc["readOnlyRootFilesystem"], true,
        "{ctx}: readOnlyRootFilesystem"
    );
    assert_eq!(
        sc["allowPrivilegeEscalation"], false,
        "{ctx}: allowPrivilegeEscalation"
    );
    assert_eq!(
        strings(&sc["capabilities"]["drop"]),
        vec!["ALL"],
        "{ctx}: drop ALL capabilities"
    );
    // IPA_* env vars are flags: no Service-link variables may sneak in.
    assert_eq!(
        pod["enableServiceLinks"], false,
        "{ctx}: enableServiceLinks"
    );
    assert_eq!(
        pod["automountServiceAccountToken"], false,
        "{ctx}: service account token"
    );
    // Anything may write temp files; the root filesystem is read-only.
    let (m, _) = mount_for(sts, c, "/tmp");
    assert!(m["readOnly"] != true, "{ctx}: /tmp is read-only");

    // The selector picks this pod template and a Service exposes its port.
    assert!(
        selects(
            &sts["spec"]["selector"]["matchLabels"],
            &sts["spec"]["template"]["metadata"]["labels"]
        ),
        "{ctx}: the workload's selector does not match its pods"
    );
    // A StatefulSet names its governing Service; a Deployment's Service
    // carries the Deployment's name.
    let svc = r.get(
        "Service",
        sts["spec"]["serviceName"]
            .as_str()
            .or(sts["metadata"]["name"].as_str())
            .expect("serviceName or name"),
    );
    assert!(
        selects(
            &svc["spec"]["selector"],
            &sts["spec"]["template"]["metadata"]["labels"]
        ),
        "{ctx}: Service {} does not select the pods",
        svc["metadata"]["name"]
    );
    let svc_ports: Vec<&Value> = svc["spec"]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .collect();
    assert_eq!(svc_ports.len(), 1, "{ctx}: one Service port");
    assert_eq!(
        svc_ports[0]["port"].as_u64(),
        Some(u64::from(port)),
        "{ctx}: Service port"
    );
    assert_eq!(
        svc_ports[0]["targetPort"], c["ports"][0]["name"],
        "{ctx}: targetPort"
    );

    check_var_refs(r, c, &ctx);
    port
}

/// `$(VAR)` appears only in env values and names a variable defined
/// earlier in the same container: Kubernetes expands nothing else (a
/// wrong or later name would reach the binary literally), and that is
/// what run_from_manifests emulates.
fn check_var_refs(r: &Rendered, c: &Value, ctx: &str) {
    let mut defined: Vec<&str> = Vec::new();
    for e in c["env"].as_array().into_iter().flatten() {
        for var in var_refs(e["value"].as_str().unwrap_or_default()) {
            assert!(
                defined.contains(&var.as_str()),
                "{ctx}: env {} uses $({var}), which is not defined before it",
                e["name"]
            );
        }
        defined.push(e["name"].as_str().expect("env name"));
    }
    for o in &r.objects {
        let mut text = o.clone();
        for c in text["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .into_iter()
            .flatten()
        {
            c["env"] = Value::Null;
        }
        assert!(
            !text.to_string().contains("$("),
            "{}: $(VAR) outside a container's env in {}",
            r.name,
            o["metadata"]["name"]
        );
    }
}

/// The pod-host fence timeout a container sets (5000 ms when it leaves
/// the default).
pub(super) fn fence_ms(c: &Value) -> u64 {
    setting(c, "fence-timeout-ms").map_or(5000, |v| v.parse::<u64>().expect("ms"))
}

#[test]
fn central_manager_finds_the_pod_hosts_and_on_sqlite_is_one_replica_on_a_volume() {
    let mut sqlite = 0;
    for r in Rendered::all() {
        let w = r.central();
        let ctx = format!("{}: central-manager", r.name);
        check_server_container(&r, w, CENTRAL_CONTAINER);
        assert_eq!(
            r.get("Service", CENTRAL)["spec"]["type"],
            "ClusterIP",
            "{ctx}: Service type"
        );
        let c = container(w, CENTRAL_CONTAINER);

        // --pod-host-dns names the pod-host headless Service and its port.
        let dns = setting(c, "pod-host-dns").unwrap_or_else(|| panic!("{ctx}: no --pod-host-dns"));
        let (host, port) = dns
            .rsplit_once(':')
            .unwrap_or_else(|| panic!("{ctx}: {dns} is not NAME:PORT"));
        let svc_name = host.split('.').next().unwrap_or_default();
        let svc = r.get("Service", svc_name);
        assert_eq!(
            svc["spec"]["clusterIP"], "None",
            "{ctx}: {svc_name} is not headless"
        );
        assert_eq!(
            svc["spec"]["ports"][0]["port"].to_string(),
            port,
            "{ctx}: DNS port"
        );
        assert_eq!(
            svc_name, POD_HOST,
            "{ctx}: --pod-host-dns must name the pod-host Service"
        );

        // Central's fence timeout is at least the pod-hosts' (docs/api.md: it
        // waits for the larger anyway; equal values make that explicit).
        let host_c = container(r.get("StatefulSet", POD_HOST), POD_HOST_CONTAINER);
        assert!(
            fence_ms(c) >= fence_ms(host_c),
            "{ctx}: fence timeout below the pod-hosts'"
        );

        if r.replicated() {
            continue; // PostgreSQL replicas: replicas.rs
        }
        sqlite += 1;
        let sts = w;
        assert_eq!(sts["kind"], "StatefulSet", "{ctx}: SQLite in a StatefulSet");
        assert_eq!(sts["spec"]["replicas"], 1, "{ctx}: SQLite has one writer");
        let url = setting(c, "database-url").unwrap_or_else(|| panic!("{ctx}: no --database-url"));
        let path = url
            .strip_prefix("sqlite://")
            .and_then(|p| p.split('?').next())
            .filter(|p| p.starts_with('/'))
            .unwrap_or_else(|| panic!("{ctx}: {url} is not an absolute sqlite:// path"));
        let (m, vol) = mount_for(sts, c, path);
        assert!(
            vol["spec"]["accessModes"].is_array(),
            "{ctx}: the database ({path}) is not on a PersistentVolumeClaim"
        );
        assert!(m["readOnly"] != true, "{ctx}: database volume is read-only");
        assert_eq!(
            sts["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"], "Retain",
            "{ctx}: deleting the StatefulSet must keep the database"
        );
        assert!(
            pod_spec(sts)["securityContext"]["fsGroup"].is_u64(),
            "{ctx}: fsGroup for the volume"
        );
    }
    // base, dev and production stay on SQLite for small installs.
    assert!(sqlite >= 3, "only {sqlite} kustomizations on SQLite");
}

#[test]
fn pod_hosts_are_a_headless_statefulset_with_templates_and_scratch_space() {
    for r in Rendered::all() {
        let sts = r.get("StatefulSet", POD_HOST);
        let ctx = format!("{}: pod-host", r.name);
        let port = check_server_container(&r, sts, POD_HOST_CONTAINER);
        if r.name == "base" {
            assert_eq!(sts["spec"]["replicas"], 3, "{ctx}: base runs 3 pod-hosts");
        }
        let svc = r.get("Service", POD_HOST);
        assert_eq!(svc["spec"]["clusterIP"], "None", "{ctx}: headless Service");
        assert_eq!(
            svc["spec"]["publishNotReadyAddresses"], false,
            "{ctx}: only ready hosts in DNS"
        );
        assert_eq!(
            sts["spec"]["serviceName"], POD_HOST,
            "{ctx}: governing Service"
        );

        let c = container(sts, POD_HOST_CONTAINER);
        // host-id is the pod name, from the downward API.
        let host_id = c["env"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["name"] == "IPA_HOST_ID")
            .unwrap_or_else(|| panic!("{ctx}: no IPA_HOST_ID"));
        assert_eq!(
            host_id["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name",
            "{ctx}: host id"
        );

        // Templates come from a ConfigMap that exists and holds the file.
        let config = setting(c, "config").unwrap_or_else(|| panic!("{ctx}: no --config"));
        let (m, vol) = mount_for(sts, c, &config);
        let cm_name = vol["configMap"]["name"]
            .as_str()
            .unwrap_or_else(|| panic!("{ctx}: {config} is not on a ConfigMap volume"));
        let cm = r.get("ConfigMap", cm_name);
        let key = config
            .strip_prefix(m["mountPath"].as_str().expect("mountPath"))
            .map(|k| k.trim_start_matches('/'))
            .expect("config under its mount");
        let toml = cm["data"][key]
            .as_str()
            .unwrap_or_else(|| panic!("{ctx}: ConfigMap {cm_name} has no key {key}"));
        assert!(
            toml.contains("[templates.default]"),
            "{ctx}: no default template"
        );

        // Pod data and logs on a writable emptyDir: pods die with their host.
        let data = setting(c, "data-dir").unwrap_or_else(|| panic!("{ctx}: no --data-dir"));
        let (m, vol) = mount_for(sts, c, &data);
        assert!(
            vol["emptyDir"].is_object(),
            "{ctx}: data dir is not an emptyDir"
        );
        assert!(m["readOnly"] != true, "{ctx}: data dir is read-only");

        // Kubernetes' SIGKILL must come after the pod-host's own.
        let grace_ms: u64 = setting(c, "stop-grace-ms").map_or(5000, |v| v.parse().expect("ms"));
        let term_ms = pod_spec(sts)["terminationGracePeriodSeconds"]
            .as_u64()
            .unwrap_or(30)
            * 1000;
        assert!(
            term_ms >= grace_ms + SHUTDOWN_MARGIN_MS,
            "{ctx}: terminationGracePeriodSeconds ({term_ms} ms) must exceed stop grace {grace_ms} ms + {SHUTDOWN_MARGIN_MS} ms"
        );

        // At most one pod-host disrupted at a time.
        let pdb = r.get("PodDisruptionBudget", POD_HOST);
        assert!(
            selects(
                &pdb["spec"]["selector"]["matchLabels"],
                &sts["spec"]["template"]["metadata"]["labels"]
            ),
            "{ctx}: PDB does not select the pod-hosts"
        );
        assert_eq!(
            pdb["spec"]["maxUnavailable"], 1,
            "{ctx}: PDB maxUnavailable"
        );

        check_network_policy(&r, port);
    }
}

/// Only central-manager pods may open the pod-host port.
fn check_network_policy(r: &Rendered, port: u16) {
    let ctx = format!("{}: NetworkPolicy", r.name);
    let host_labels = &r.get("StatefulSet", POD_HOST)["spec"]["template"]["metadata"]["labels"];
    let central_labels = &r.central()["spec"]["template"]["metadata"]["labels"];
    let policies: Vec<&Value> = r
        .of_kind("NetworkPolicy")
        .into_iter()
        .filter(|p| selects(&p["spec"]["podSelector"]["matchLabels"], host_labels))
        .collect();
    assert_eq!(
        policies.len(),
        1,
        "{ctx}: one policy must select the pod-hosts"
    );
    let spec = &policies[0]["spec"];
    assert!(
        strings(&spec["policyTypes"]).contains(&"Ingress".to_owned()),
        "{ctx}: Ingress"
    );
    let rules = spec["ingress"].as_array().expect("ingress rules");
    assert!(!rules.is_empty(), "{ctx}: no ingress rule");
    // The metrics port, from the pod-host's IPA_METRICS_LISTEN (if set).
    let host_env = &container(r.get("StatefulSet", POD_HOST), POD_HOST_CONTAINER)["env"];
    let metrics_port: Option<u64> = host_env
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["name"] == "IPA_METRICS_LISTEN")
        .and_then(|e| e["value"].as_str())
        .and_then(|v| v.rsplit(':').next())
        .and_then(|p| p.parse().ok());
    let mut grpc_rule = false;
    for rule in rules {
        let from = rule["from"]
            .as_array()
            .unwrap_or_else(|| panic!("{ctx}: a rule allows every source"));
        let ports: Vec<u64> = rule["ports"]
            .as_array()
            .unwrap_or_else(|| panic!("{ctx}: a rule allows every port"))
            .iter()
            .map(|p| p["port"].as_u64().expect("numeric port"))
            .collect();
        if ports.contains(&u64::from(port)) {
            // The gRPC port: central-manager pods of this namespace only.
            grpc_rule = true;
            assert_eq!(
                ports,
                vec![u64::from(port)],
                "{ctx}: only the pod-host port"
            );
            for peer in from {
                assert!(
                    peer["ipBlock"].is_null() && peer["namespaceSelector"].is_null(),
                    "{ctx}: only pods of this namespace may be peers"
                );
                assert!(
                    selects(&peer["podSelector"]["matchLabels"], central_labels),
                    "{ctx}: a peer other than central-manager is allowed"
                );
                assert!(
                    !selects(&peer["podSelector"]["matchLabels"], host_labels),
                    "{ctx}: pod-hosts may reach each other"
                );
            }
        } else {
            // Any other rule opens the metrics port and nothing else, to
            // selected pods (a scraper), never to address blocks.
            assert_eq!(
                Some(ports.clone()),
                metrics_port.map(|m| vec![m]),
                "{ctx}: a rule opens a port other than the metrics port"
            );
            for peer in from {
                assert!(
                    peer["ipBlock"].is_null(),
                    "{ctx}: metrics open to an address block"
                );
                let labels = &peer["podSelector"]["matchLabels"];
                assert!(
                    labels.as_object().is_some_and(|m| !m.is_empty()),
                    "{ctx}: metrics open to every pod"
                );
                assert!(
                    !selects(labels, host_labels),
                    "{ctx}: pod-hosts may reach each other"
                );
            }
        }
    }
    assert!(grpc_rule, "{ctx}: no rule for the pod-host port");
}
