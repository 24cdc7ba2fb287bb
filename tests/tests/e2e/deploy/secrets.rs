//! The Secrets of the production overlays, emulated for
//! `run_from_manifests`: real certificates from one CA (as one cert-manager
//! issuer would make them), a token file and, for central-manager replicas,
//! the URL of a fresh database on a private PostgreSQL server; and how the
//! test then reaches the servers (TLS, a client certificate, a token; the
//! health port).

use std::path::PathBuf;
use std::sync::Arc;

use ipa_tests::postgres::PgServer;

use tempfile::TempDir;

use super::manifests::{CENTRAL, POD_HOST};

/// The Secrets the manifests may mount, made for the test.
pub struct Secrets {
    dir: TempDir,
    ca: ipa_tests::pki::Ca,
    /// An admin token in `ipa-auth-tokens`.
    token: &'static str,
    /// The server and database URL behind `ipa-central-manager-database`.
    database: Option<(Arc<PgServer>, String)>,
}

/// The Secret and key the replicated overlay reads its database URL from.
const DATABASE_SECRET: (&str, &str) = ("ipa-central-manager-database", "url");

impl Secrets {
    /// With `database`, a PostgreSQL server is started (or shared) and a
    /// fresh database made for `ipa-central-manager-database`.
    pub fn new(database: bool) -> Self {
        let database = database.then(|| {
            let server =
                ipa_tests::postgres::shared().expect("start PostgreSQL (tests/pg-harness)");
            let url = server.database().expect("create a database");
            (server, url)
        });
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
            ca: ipa_tests::pki::Ca::new("deploy test CA"),
            token: "deploy-test-admin-token",
            database,
        }
    }

    /// The value of `key` in Secret `name`, for a `secretKeyRef`.
    pub fn value(&self, name: &str, key: &str, ctx: &str) -> String {
        assert_eq!(
            (name, key),
            DATABASE_SECRET,
            "{ctx}: secretKeyRef {name}/{key} is not emulated"
        );
        let (_, url) = self
            .database
            .as_ref()
            .unwrap_or_else(|| panic!("{ctx}: reads a database URL from a Secret"));
        url.clone()
    }

    /// central-manager migrated the schema into the Secret's database.
    pub fn assert_database_migrated(&self, ctx: &str) {
        let (server, url) = self.database.as_ref().expect("a database");
        let name = url.rsplit('/').next().expect("database name");
        server
            .psql(
                name,
                "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM _sqlx_migrations WHERE success) \
                 THEN RAISE EXCEPTION 'no migration applied'; END IF; END $$",
            )
            .unwrap_or_else(|e| panic!("{ctx}: the database was not migrated: {e}"));
    }

    fn ca_path(&self) -> PathBuf {
        self.ca.write(self.dir.path(), "ca.crt")
    }

    /// The files of Secret `name` (key → content).
    pub fn files(&self, name: &str, ctx: &str) -> Vec<(String, String)> {
        let tls = |names: &[&str]| {
            let l = self.ca.leaf(names);
            vec![
                ("tls.crt".to_owned(), l.cert_pem),
                ("tls.key".to_owned(), l.key_pem),
                ("ca.crt".to_owned(), self.ca.pem.clone()),
            ]
        };
        match name {
            "ipa-central-manager-tls" => tls(&["localhost", "127.0.0.1", CENTRAL]),
            // The name the pod-hosts' --allowed-client lists.
            "ipa-central-manager-client-tls" => tls(&[CENTRAL]),
            // Dialled as the rewritten --pod-host-dns name, localhost.
            "ipa-pod-host-tls" => tls(&["localhost", "127.0.0.1", POD_HOST]),
            "ipa-auth-tokens" => vec![(
                "tokens.toml".to_owned(),
                ipa_tests::pki::token_file(&[("deploy-test", "admin", self.token)]),
            )],
            // The replicated overlay's database Secret, also mounted for
            // its CA bundle (the test server speaks no TLS: unused).
            n if n == DATABASE_SECRET.0 => vec![
                (
                    DATABASE_SECRET.1.to_owned(),
                    self.value(n, DATABASE_SECRET.1, ctx),
                ),
                ("ca.crt".to_owned(), self.ca.pem.clone()),
            ],
            other => panic!("{ctx}: Secret {other} is not emulated"),
        }
    }
}

/// How the test reaches a server started from the manifests.
pub fn client_auth(env: &[(String, String)], secrets: &Secrets) -> ipa_tests::pki::ClientAuth {
    let on = |name: &str| env.iter().any(|(k, _)| k == name);
    ipa_tests::pki::ClientAuth {
        ca: on("IPA_TLS_CERT").then(|| secrets.ca_path()),
        identity: on("IPA_CLIENT_CA").then(|| {
            secrets
                .ca
                .leaf(&[CENTRAL])
                .write(secrets.dir.path(), "test-client")
        }),
        token: on("IPA_AUTH_TOKENS").then(|| secrets.token.to_owned()),
    }
}

/// The plaintext health port a server logged (`--health-listen`).
pub fn logged_health_addr(log: &str) -> Option<std::net::SocketAddr> {
    let line = log.lines().find(|l| l.contains("health checks served"))?;
    let at = line.find("addr")? + "addr".len();
    let rest = line[at..].trim_start_matches(['=', '"', ':']);
    let addr: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
        .collect();
    addr.parse().ok()
}
