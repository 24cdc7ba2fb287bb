//! Token authentication over TLS: roles per RPC, `actor_id` bound to the
//! caller, every denial with its exact reason and no effect; the token
//! file reloaded on change and on SIGHUP; grpcurl as an operator uses it.

use ipa_tests::pb;
use ipa_tests::pki::{ClientAuth, sha256_hex};
use ipa_tests::{DEADLINE, wait_for_async};
use tonic::Code;

use super::support::{Pki, central, create, footprint, health, refused, token};

#[tokio::test]
async fn roles_actors_and_every_token_denial() {
    let pki = Pki::new();
    let mut args = pki.tls_args();
    args.extend(["--auth-tokens".into(), pki.tokens.clone().into()]);
    let server = central(pki.path(), args).await;
    let addr = server.addr;
    let mut otto = pki.with_token("otto").client(addr);
    let mut rita = pki.with_token("rita").client(addr);
    let mut ada = pki.with_token("ada").client(addr);

    // An empty actor_id becomes the caller.
    let task = otto
        .create_task(create("mine", ""))
        .await
        .expect("operator creates")
        .into_inner()
        .task
        .unwrap();
    assert_eq!(task.created_by, "otto");
    // Giving one's own name is fine too.
    otto.create_task(create("also mine", "otto"))
        .await
        .expect("own name");
    let before = footprint(&mut ada).await;
    assert_eq!(before.0, 2);

    // No token, an unknown token, a malformed header.
    let mut anonymous = pki.tls_only().client(addr);
    refused(
        anonymous.create_task(create("x", "otto")).await,
        Code::Unauthenticated,
        "UNAUTHENTICATED",
    );
    refused(
        anonymous
            .get_task(pb::GetTaskRequest {
                task_id: task.task_id.clone(),
            })
            .await,
        Code::Unauthenticated,
        "UNAUTHENTICATED",
    );
    let mut unknown = ClientAuth {
        token: Some("not-a-token".into()),
        ..pki.tls_only()
    }
    .client(addr);
    refused(
        unknown.create_task(create("x", "")).await,
        Code::Unauthenticated,
        "UNAUTHENTICATED",
    );
    // The hash from the file is not a token either.
    let mut hash = ClientAuth {
        token: Some(sha256_hex(token("ada"))),
        ..pki.tls_only()
    }
    .client(addr);
    refused(
        hash.list_tasks(pb::ListTasksRequest::default()).await,
        Code::Unauthenticated,
        "UNAUTHENTICATED",
    );

    // A reader reads but cannot write.
    rita.get_task(pb::GetTaskRequest {
        task_id: task.task_id.clone(),
    })
    .await
    .expect("reader reads");
    refused(
        rita.create_task(create("x", "")).await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    refused(
        rita.cancel_task(pb::CancelTaskRequest {
            task_id: task.task_id.clone(),
            reason: "no".into(),
            ..Default::default()
        })
        .await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );

    // An operator acting as someone else, anyone claiming `system`.
    refused(
        otto.create_task(create("x", "olga")).await,
        Code::PermissionDenied,
        "ACTOR_MISMATCH",
    );
    refused(
        otto.complete_task(pb::CompleteTaskRequest {
            task_id: task.task_id.clone(),
            actor_id: "olga".into(),
            ..Default::default()
        })
        .await,
        Code::PermissionDenied,
        "ACTOR_MISMATCH",
    );
    refused(
        otto.create_task(create("x", "system")).await,
        Code::PermissionDenied,
        "ACTOR_MISMATCH",
    );
    refused(
        ada.create_task(create("x", "system")).await,
        Code::PermissionDenied,
        "ACTOR_MISMATCH",
    );

    // None of that changed anything.
    assert_eq!(footprint(&mut ada).await, before);

    // An admin may act for someone; the audit trail says who really did.
    ada.cancel_task(pb::CancelTaskRequest {
        task_id: task.task_id.clone(),
        reason: "on behalf of otto".into(),
        actor_id: "otto".into(),
        ..Default::default()
    })
    .await
    .expect("admin acts for otto");
    let events = rita
        .get_task_events(pb::GetTaskEventsRequest {
            task_id: task.task_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let created = &events[0];
    assert_eq!(
        (created.r#type.as_str(), created.actor_id.as_str()),
        ("task_created", "otto")
    );
    assert!(
        !created.data_json.contains("authenticated_as"),
        "{}",
        created.data_json
    );
    let cancelled = events.last().unwrap();
    assert_eq!(cancelled.r#type, "task_cancelled");
    assert_eq!(cancelled.actor_id, "otto");
    let data: serde_json::Value = serde_json::from_str(&cancelled.data_json).unwrap();
    assert_eq!(data["authenticated_as"], "ada", "{data}");

    // Probes and reflection stay open.
    assert_eq!(health(addr, &pki.tls_only()).await.unwrap(), 1, "SERVING");
    // Who did what is in the logs (the auth span).
    assert!(server.log().contains("principal=otto"), "{}", server.log());
}

/// The token file is re-read when it changes and on SIGHUP, without a
/// restart; a broken edit keeps the old tokens.
#[tokio::test]
async fn token_file_reloads_on_change_and_on_sighup() {
    let pki = Pki::new();
    let server = central(
        pki.path(),
        vec!["--auth-tokens".into(), pki.tokens.clone().into()],
    )
    .await;
    let addr = server.addr;
    let newcomer = ClientAuth::token("tok-nina");
    let reads = |auth: ClientAuth| async move {
        auth.client(addr)
            .list_tasks(pb::ListTasksRequest::default())
            .await
            .map(|_| ())
    };
    refused(
        reads(newcomer.clone()).await,
        Code::Unauthenticated,
        "UNAUTHENTICATED",
    );

    // On change: add nina.
    let mut entries = super::support::TOKENS.to_vec();
    entries.push(("nina", "reader", "tok-nina"));
    std::fs::write(&pki.tokens, ipa_tests::pki::token_file(&entries)).unwrap();
    wait_for_async("nina's token to be accepted", DEADLINE, || {
        let n = newcomer.clone();
        async move { reads(n).await.ok() }
    })
    .await;

    // A broken edit is refused and the tokens in force stay.
    std::fs::write(&pki.tokens, "[[token]]\nprincipal = 3\n").unwrap();
    wait_for_async("the broken file to be reported", DEADLINE, || async {
        server.log().contains("cannot be used").then_some(())
    })
    .await;
    reads(newcomer.clone())
        .await
        .expect("old tokens still in force");

    // On SIGHUP: remove nina again; the signal makes it re-read (and does
    // not stop the server).
    std::fs::write(
        &pki.tokens,
        ipa_tests::pki::token_file(super::support::TOKENS),
    )
    .unwrap();
    server.signal(nix::sys::signal::Signal::SIGHUP);
    wait_for_async("nina's token to be refused", DEADLINE, || {
        let n = newcomer.clone();
        async move { reads(n).await.is_err().then_some(()) }
    })
    .await;
    assert!(server.log().contains("SIGHUP"), "{}", server.log());
    reads(ClientAuth::token(token("rita")))
        .await
        .expect("server still up after SIGHUP");
}

/// What an operator types: grpcurl over TLS with a bearer token.
#[tokio::test]
async fn grpcurl_with_tls_and_a_token() {
    let pki = Pki::new();
    let mut args = pki.tls_args();
    args.extend(["--auth-tokens".into(), pki.tokens.clone().into()]);
    let server = central(pki.path(), args).await;
    let addr = server.addr.to_string();
    let ca = pki.ca_path.display().to_string();
    let grpcurl = |extra: Vec<String>| {
        let mut cmd = tokio::process::Command::new("grpcurl");
        cmd.arg("-cacert").arg(&ca).args(extra).kill_on_drop(true);
        async move {
            cmd.output()
                .await
                .expect("grpcurl (installed by scripts/test)")
        }
    };
    let bearer = format!("authorization: Bearer {}", token("otto"));
    let out = grpcurl(vec![
        "-H".into(),
        bearer.clone(),
        "-d".into(),
        r#"{"title":"from grpcurl"}"#.into(),
        addr.clone(),
        "ipa.v1.CentralManager/CreateTask".into(),
    ])
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("\"createdBy\": \"otto\""), "{stdout}");
    // Listing services needs no token (reflection is open).
    let out = grpcurl(vec![addr.clone(), "list".into()]).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("ipa.v1.CentralManager"));
    // Without a token: the reason, as grpcurl prints it.
    let out = grpcurl(vec![
        "-d".into(),
        r#"{"title":"x"}"#.into(),
        addr.clone(),
        "ipa.v1.CentralManager/CreateTask".into(),
    ])
    .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("UNAUTHENTICATED: no bearer token"),
        "{stderr}"
    );
    // Plaintext against TLS fails in the transport.
    let out = tokio::process::Command::new("grpcurl")
        .args(["-plaintext", "-connect-timeout", "3", &addr, "list"])
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
}
