//! central-manager on a private PostgreSQL server (ipa_tests::postgres).
//! The PostgreSQL store does not have every command yet, and until it does
//! central-manager must refuse to start on it, naming what is missing,
//! and leave the database untouched: never a half-working server.
//! (The store's own conformance tests run on PostgreSQL in
//! central-manager's unit tests.)

use ipa_tests::bin_path;
use sqlx::Connection;

#[tokio::test]
async fn refuses_to_start_on_postgresql_naming_what_is_missing() {
    let (server, url) = tokio::task::spawn_blocking(|| {
        let server = ipa_tests::postgres::shared().expect("starting PostgreSQL");
        let url = server.database().expect("creating a database");
        (server, url)
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(bin_path("central-manager"))
        .args(["--listen", "127.0.0.1:0", "--database-url", &url])
        .current_dir(dir.path())
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .kill_on_drop(true)
        .output()
        .await
        .expect("run central-manager");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it started: {stderr}");
    for missing in ["schedules", "retention", "stats"] {
        assert!(stderr.contains(missing), "{missing:?} not named: {stderr}");
    }
    assert!(stderr.contains("--database-url"), "{stderr}");
    // Nothing was created in the database.
    let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
    let tables: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .fetch_one(&mut c)
    .await
    .unwrap();
    assert_eq!(tables, 0);
    c.close().await.unwrap();
    drop(server);
}
