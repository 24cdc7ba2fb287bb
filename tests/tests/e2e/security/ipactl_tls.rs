//! ipactl as an operator uses it against a secured central-manager: TLS
//! with a token (`--ca`, `--token-file`), mutual TLS with a client
//! certificate (`--cert`, `--key`), and the refusals when the trust or the
//! credentials are missing — each with the exit code and the `Error:
//! REASON: sentence` line docs/api.md gives.

use ipa_tests::ipactl::Ipactl;

use super::support::{Pki, central, token};

/// The task in `tasks create -o json` output (proto3 JSON names).
fn created_task(stdout: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(stdout).expect("json");
    v.get("task").cloned().unwrap_or(v)
}

fn https(addr: std::net::SocketAddr) -> Ipactl {
    Ipactl::new(format!("https://{addr}"))
}

#[tokio::test]
async fn ipactl_over_tls_with_a_token_and_with_a_client_certificate() {
    let pki = Pki::new();
    let ca = pki.ca_path.to_string_lossy().into_owned();

    // TLS + tokens.
    let mut args = pki.tls_args();
    args.extend(["--auth-tokens".into(), pki.tokens.clone().into()]);
    let server = central(pki.path(), args).await;
    let token_file = pki.path().join("otto.token");
    std::fs::write(&token_file, format!("{}\n", token("otto"))).unwrap();
    let tf = token_file.to_string_lossy().into_owned();
    let ctl = https(server.addr);

    let created = ctl
        .run(&[
            "--ca",
            &ca,
            "--token-file",
            &tf,
            "tasks",
            "create",
            "over tls",
            "-o",
            "json",
        ])
        .await;
    let task = created_task(created.ok());
    assert_eq!(task["createdBy"], "otto", "{task}");
    let listed = ctl
        .run(&[
            "--ca",
            &ca,
            "--token",
            token("rita"),
            "tasks",
            "list",
            "-o",
            "json",
        ])
        .await;
    assert!(listed.ok().contains("over tls"), "{listed:?}");

    // A reader may not write; no token at all is refused; both name the reason.
    ctl.run(&[
        "--ca",
        &ca,
        "--token",
        token("rita"),
        "tasks",
        "create",
        "x",
    ])
    .await
    .fails_with("PERMISSION_DENIED");
    ctl.run(&["--ca", &ca, "tasks", "list"])
        .await
        .fails_with("UNAUTHENTICATED");
    // Without the CA the server's certificate is not trusted: a transport
    // error, not a hang.
    let untrusted = ctl.run(&["--token", token("otto"), "tasks", "list"]).await;
    assert_ne!(untrusted.code, Some(0), "{untrusted:?}");
    assert!(untrusted.stderr.starts_with("Error: "), "{untrusted:?}");
    drop(server);

    // Mutual TLS: the certificate is the identity.
    let mut args = pki.tls_args();
    args.extend(["--client-ca".into(), pki.ca_path.clone().into()]);
    let server = central(pki.path(), args).await;
    let (cert, key) = pki.client_cert("carol", "carol");
    let (cert, key) = (
        cert.to_string_lossy().into_owned(),
        key.to_string_lossy().into_owned(),
    );
    let ctl = https(server.addr);
    let created = ctl
        .run(&[
            "--ca", &ca, "--cert", &cert, "--key", &key, "tasks", "create", "by cert", "-o", "json",
        ])
        .await;
    let task = created_task(created.ok());
    assert_eq!(task["createdBy"], "carol", "{task}");
    let no_cert = ctl.run(&["--ca", &ca, "tasks", "list"]).await;
    assert_ne!(no_cert.code, Some(0), "{no_cert:?}");
}
