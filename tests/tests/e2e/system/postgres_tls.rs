//! central-manager reaches PostgreSQL over TLS and verifies the server
//! (`?sslmode=verify-full&sslrootcert=CA`), as a managed database needs
//! (docs/operations.md "Replicas (PostgreSQL)"; the replicated Kubernetes
//! overlay mounts the CA at /etc/ipa/database/ca.crt): with the server's
//! CA it starts, serves, and every connection it holds is encrypted; with
//! another CA it refuses the server and does not start.

use std::ffi::OsString;
use std::path::Path;

use ipa_tests::postgres::{FAST, PgServer, SUPERUSER};
use ipa_tests::{DEADLINE, ServerProcess, bin_path, pb};
use nix::sys::signal::Signal;

/// Fails unless `central-manager`'s connections are all TLS (and there is
/// at least one).
const ALL_TLS: &str = "DO $$ BEGIN \
    IF NOT EXISTS (SELECT 1 FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
                   WHERE a.application_name = 'ipa-central-manager' AND s.ssl) \
    THEN RAISE EXCEPTION 'no TLS connection from central-manager'; END IF; \
    IF EXISTS (SELECT 1 FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
               WHERE a.application_name = 'ipa-central-manager' AND NOT s.ssl) \
    THEN RAISE EXCEPTION 'a plaintext connection from central-manager'; END IF; END $$";

#[tokio::test]
async fn central_manager_verifies_a_postgresql_server_over_tls() {
    let ca = ipa_tests::pki::Ca::new("database CA");
    let leaf = ca.leaf(&["localhost"]);
    let (server, name) = tokio::task::spawn_blocking(move || {
        let mut settings = FAST.to_vec();
        settings.push(("ssl", "on"));
        let files = [
            ("server.crt", leaf.cert_pem.as_str()),
            ("server.key", leaf.key_pem.as_str()),
        ];
        let server = PgServer::start_with_files(&settings, &files).expect("start PostgreSQL");
        let url = server.database().expect("create a database");
        let name = url.rsplit('/').next().expect("database name").to_owned();
        (server, name)
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let right_ca = ca.write(dir.path(), "db-ca.crt");
    let other_ca = ipa_tests::pki::Ca::new("another CA").write(dir.path(), "other-ca.crt");
    let url = |ca: &Path| {
        format!(
            "postgres://{SUPERUSER}@localhost:{}/{name}?sslmode=verify-full&sslrootcert={}",
            server.port(),
            ca.display()
        )
    };

    // A server whose certificate the CA did not sign: refused at start.
    let out = tokio::time::timeout(
        DEADLINE,
        tokio::process::Command::new(bin_path("central-manager"))
            .args(["--listen", "127.0.0.1:0", "--database-url", &url(&other_ca)])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("central-manager exits when the database certificate is not trusted")
    .expect("run central-manager");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "started with an untrusted database:\n{stderr}"
    );
    assert!(
        stderr.to_lowercase().contains("certificate"),
        "the error does not say why:\n{stderr}"
    );

    // The right CA: it starts, serves, and talks TLS only.
    let args: Vec<OsString> = ["--listen", "127.0.0.1:0", "--database-url", &url(&right_ca)]
        .iter()
        .map(OsString::from)
        .collect();
    let mut cm = ServerProcess::start("central-manager", &args, &[], None).await;
    let mut client = pb::central_manager_client::CentralManagerClient::new(cm.channel());
    let created = client
        .create_task(pb::CreateTaskRequest {
            title: "over TLS".into(),
            actor_id: "tester".into(),
            ..Default::default()
        })
        .await
        .expect("CreateTask over a TLS database connection")
        .into_inner();
    client
        .get_task(pb::GetTaskRequest {
            task_id: created.task_id.clone(),
            ..Default::default()
        })
        .await
        .expect("GetTask");
    // A quick statement on the server's socket (blocking briefly is fine
    // here: the server under test is another process).
    if let Err(e) = server.psql(&name, ALL_TLS) {
        panic!("{e}\n{}", cm.log());
    }

    cm.signal(Signal::SIGTERM);
    let status = cm.wait_exit(DEADLINE).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        cm.log()
    );
}
