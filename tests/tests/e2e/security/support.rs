//! Certificates, token files and servers for the security tests.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ipa_tests::pki::{AuthClient, Ca, ClientAuth, SERVER_NAME, token_file};
use ipa_tests::{ServerProcess, pb};
use tonic::Code;

/// The tokens every test server accepts: `(principal, role, token)`.
pub const TOKENS: &[(&str, &str, &str)] = &[
    ("rita", "reader", "tok-rita-reader"),
    ("otto", "operator", "tok-otto-operator"),
    ("olga", "operator", "tok-olga-operator"),
    ("ada", "admin", "tok-ada-admin"),
];

/// The token of `principal` in [`TOKENS`].
pub fn token(principal: &str) -> &'static str {
    TOKENS
        .iter()
        .find(|(p, _, _)| *p == principal)
        .map(|(_, _, t)| *t)
        .expect("known principal")
}

/// A temp dir with a CA, a server certificate for 127.0.0.1/localhost and
/// the token file.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: Ca,
    pub ca_path: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub tokens: PathBuf,
}

impl Pki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::new("ipa test CA");
        let ca_path = ca.write(dir.path(), "ca.pem");
        let (server_cert, server_key) = ca
            .leaf(&[SERVER_NAME, "127.0.0.1"])
            .write(dir.path(), "server");
        let tokens = dir.path().join("tokens.toml");
        std::fs::write(&tokens, token_file(TOKENS)).expect("token file");
        Self {
            dir,
            ca,
            ca_path,
            server_cert,
            server_key,
            tokens,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A client certificate of this CA for `name`, written as `file`.
    pub fn client_cert(&self, name: &str, file: &str) -> (PathBuf, PathBuf) {
        self.ca.leaf(&[name]).write(self.path(), file)
    }

    /// Over TLS (trusting this CA), with `principal`'s token.
    pub fn with_token(&self, principal: &str) -> ClientAuth {
        ClientAuth {
            ca: Some(self.ca_path.clone()),
            identity: None,
            token: Some(token(principal).to_owned()),
        }
    }

    /// Over TLS, nothing else.
    pub fn tls_only(&self) -> ClientAuth {
        ClientAuth {
            ca: Some(self.ca_path.clone()),
            ..ClientAuth::default()
        }
    }

    /// The server TLS flags.
    pub fn tls_args(&self) -> Vec<OsString> {
        vec![
            "--tls-cert".into(),
            self.server_cert.clone().into(),
            "--tls-key".into(),
            self.server_key.clone().into(),
        ]
    }
}

/// Starts central-manager on 127.0.0.1:0 in `dir` with `args`.
pub async fn central(dir: &Path, args: Vec<OsString>) -> ServerProcess {
    let mut all: Vec<OsString> = vec!["--listen".into(), "127.0.0.1:0".into()];
    all.extend(args);
    ServerProcess::start("central-manager", &all, &[], Some(dir)).await
}

/// The status of a refused call, asserting the API convention.
#[track_caller]
pub fn refused<T: std::fmt::Debug>(r: Result<T, tonic::Status>, code: Code, reason: &str) {
    let s = r.expect_err("the call must be refused");
    assert_eq!(s.code(), code, "{s:?}");
    assert!(
        s.message().starts_with(&format!("{reason}: ")),
        "message {:?} should start with {reason}:",
        s.message()
    );
    assert_eq!(
        ipa_proto::reason_of(&s).map(|r| r.as_str()),
        Some(reason),
        "ErrorInfo of {s:?}"
    );
}

/// A call that failed in the transport (a refused TLS handshake): an
/// error that no server handler produced.
#[track_caller]
pub fn transport_error<T: std::fmt::Debug>(r: Result<T, tonic::Status>) {
    let s = r.expect_err("the connection must fail");
    assert!(
        ipa_proto::reason_of(&s).is_none(),
        "a handshake failure carries no API reason: {s:?}"
    );
    assert!(
        matches!(
            s.code(),
            Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled
        ),
        "{s:?}"
    );
}

pub fn create(title: &str, actor: &str) -> pb::CreateTaskRequest {
    pb::CreateTaskRequest {
        title: title.into(),
        actor_id: actor.into(),
        ..Default::default()
    }
}

/// How many tasks exist and how many events they have (as `ada` sees
/// them): what a refused call must not change.
pub async fn footprint(client: &mut AuthClient) -> (u64, usize) {
    let tasks = client
        .list_tasks(pb::ListTasksRequest {
            limit: 1000,
            ..Default::default()
        })
        .await
        .expect("ListTasks")
        .into_inner()
        .tasks;
    let mut events = 0;
    for t in &tasks {
        events += client
            .get_task_events(pb::GetTaskEventsRequest {
                task_id: t.task_id.clone(),
                limit: 1000,
                ..Default::default()
            })
            .await
            .expect("GetTaskEvents")
            .into_inner()
            .events
            .len();
    }
    (tasks.len() as u64, events)
}

/// `grpc.health.v1.Health/Check` of `service` on `addr`, through `auth`.
pub async fn health(addr: SocketAddr, auth: &ClientAuth) -> Result<i32, tonic::Status> {
    tonic_health::pb::health_client::HealthClient::new(auth.channel(addr))
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .map(|r| r.into_inner().status)
}

/// Whether the process runs as root (pods as other users need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
