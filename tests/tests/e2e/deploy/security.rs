//! The deployment's trust boundary (docs/security.md): central-manager's
//! API closed to unlabelled pods; the production overlay runs mutual TLS
//! between central-manager and the pod-hosts and tokens for clients, every
//! certificate, key and token from a Secret, the pod-host's key unreadable
//! to its pods, and pods as users of their own.

use serde_json::Value;

use super::manifests::{
    CENTRAL_CONTAINER, POD_HOST, POD_HOST_CONTAINER, Rendered, container, mount_for, port_of,
    selects, setting, strings,
};

/// Only labelled clients (and Prometheus, on the metrics port) may open
/// central-manager's ports.
#[test]
fn central_managers_api_is_closed_to_unlabelled_pods() {
    for r in Rendered::all() {
        let ctx = format!("{}: central-manager NetworkPolicy", r.name);
        let sts = r.central();
        let labels = &sts["spec"]["template"]["metadata"]["labels"];
        let api = u64::from(port_of(
            &setting(container(sts, CENTRAL_CONTAINER), "listen").expect("--listen"),
        ));
        let policies: Vec<&Value> = r
            .of_kind("NetworkPolicy")
            .into_iter()
            .filter(|p| selects(&p["spec"]["podSelector"]["matchLabels"], labels))
            .collect();
        assert_eq!(
            policies.len(),
            1,
            "{ctx}: one policy selects central-manager"
        );
        let spec = &policies[0]["spec"];
        assert!(
            strings(&spec["policyTypes"]).contains(&"Ingress".to_owned()),
            "{ctx}"
        );
        let mut api_rule = false;
        for rule in spec["ingress"].as_array().expect("ingress") {
            let ports: Vec<u64> = rule["ports"]
                .as_array()
                .unwrap_or_else(|| panic!("{ctx}: a rule opens every port"))
                .iter()
                .map(|p| p["port"].as_u64().expect("numeric port"))
                .collect();
            api_rule |= ports.contains(&api);
            assert!(
                ports == vec![api] || ports == vec![9090],
                "{ctx}: opens {ports:?}"
            );
            for peer in rule["from"]
                .as_array()
                .unwrap_or_else(|| panic!("{ctx}: open to all"))
            {
                assert!(peer["ipBlock"].is_null(), "{ctx}: open to an address block");
                assert!(
                    peer["podSelector"]["matchLabels"]
                        .as_object()
                        .is_some_and(|m| !m.is_empty()),
                    "{ctx}: open to every pod"
                );
            }
        }
        assert!(api_rule, "{ctx}: no rule for the API port");
    }
}

/// The Secret volume a setting's file is on.
fn secret_of<'a>(r: &Rendered, sts: &'a Value, c: &'a Value, flag: &str) -> &'a Value {
    let path = setting(c, flag).unwrap_or_else(|| panic!("{}: --{flag} is not set", r.name));
    let (mount, volume) = mount_for(sts, c, &path);
    assert_eq!(
        mount["readOnly"], true,
        "{}: --{flag} on a writable mount",
        r.name
    );
    assert!(
        volume["secret"]["secretName"].is_string(),
        "{}: --{flag} ({path}) is not on a Secret volume",
        r.name
    );
    volume
}

#[test]
fn production_runs_mutual_tls_tokens_and_pods_apart() {
    // The replicated overlay is production with central-manager as
    // replicas: the same trust boundary.
    for name in ["production", "replicated"] {
        production_security(&Rendered::render(name));
    }
}

fn production_security(r: &Rendered) {
    let central = r.central();
    let c = container(central, CENTRAL_CONTAINER);
    for flag in [
        "tls-cert",
        "tls-key",
        "auth-tokens",
        "pod-host-ca",
        "pod-host-client-cert",
        "pod-host-client-key",
    ] {
        secret_of(r, central, c, flag);
    }
    assert!(
        setting(c, "health-listen").is_some(),
        "{}: central probes need the health port",
        r.name
    );

    let host = r.get("StatefulSet", POD_HOST);
    let h = container(host, POD_HOST_CONTAINER);
    for flag in ["tls-cert", "tls-key", "client-ca"] {
        let v = secret_of(r, host, h, flag);
        // Pods run in this container as other users: the key is root's.
        assert_eq!(
            v["secret"]["defaultMode"].as_u64(),
            Some(0o400),
            "{}: pod-host Secret readable beyond root",
            r.name
        );
    }
    let allowed = setting(h, "allowed-client").expect("--allowed-client");
    assert!(
        !allowed.trim().is_empty(),
        "{}: any certificate may call pod-hosts",
        r.name
    );
    assert!(
        setting(h, "pod-uid-range").is_some() || setting(h, "pod-user").is_some(),
        "{}: pods run as the pod-host's user",
        r.name
    );
    // Central dials the pod-hosts by the name their certificate carries.
    let dns = setting(c, "pod-host-dns").expect("--pod-host-dns");
    assert!(
        dns.starts_with(&format!("{POD_HOST}:")),
        "{}: {dns}",
        r.name
    );

    // Root with capabilities is "baseline": the namespace must admit it.
    let ns = &r.of_kind("Namespace")[0]["metadata"]["labels"];
    assert_eq!(
        ns["pod-security.kubernetes.io/enforce"], "baseline",
        "{}: namespace admits the pod-hosts",
        r.name
    );
}
