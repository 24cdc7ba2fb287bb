//! Helpers shared by the central-manager tests.

use std::ffi::OsString;
use std::path::Path;

use ipa_tests::{ServerProcess, pb};
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt;

pub type Client = pb::central_manager_client::CentralManagerClient<Channel>;

/// A running central-manager and a client for it.
pub struct Central {
    pub server: ServerProcess,
    pub client: Client,
}

impl Central {
    /// A fresh central-manager with its own temp dir (database in
    /// `./ipa-data/central.db` there, the default URL).
    pub async fn start() -> Self {
        Self::start_with(None, &[]).await
    }

    /// A central-manager whose working dir (and so database) is `dir`.
    pub async fn start_in(dir: &Path) -> Self {
        Self::start_with(Some(dir), &[]).await
    }

    pub async fn start_with(dir: Option<&Path>, extra: &[&str]) -> Self {
        let mut args: Vec<OsString> = vec!["--listen".into(), "127.0.0.1:0".into()];
        args.extend(extra.iter().map(OsString::from));
        let server = ServerProcess::start("central-manager", &args, &[], dir).await;
        let client = Client::new(server.channel());
        Self { server, client }
    }

    /// A new client on its own connection.
    pub fn client(&self) -> Client {
        Client::new(self.server.channel())
    }

    /// The database file.
    pub fn db_path(&self) -> std::path::PathBuf {
        self.server.dir().join("ipa-data/central.db")
    }
}

/// A valid CreateTask request.
pub fn new_task(title: &str) -> pb::CreateTaskRequest {
    pb::CreateTaskRequest {
        title: title.into(),
        actor_id: "alice".into(),
        ..Default::default()
    }
}

/// Creates a task and returns it.
pub async fn create(client: &mut Client, title: &str) -> pb::Task {
    let r = client
        .create_task(new_task(title))
        .await
        .expect("CreateTask")
        .into_inner();
    let t = r.task.expect("task in response");
    assert_eq!(r.task_id, t.task_id);
    t
}

/// Asserts the API error convention: code, `REASON: ` message prefix,
/// ErrorInfo detail with that reason in domain ipa.v1.
#[track_caller]
pub fn assert_error(s: &Status, code: Code, reason: &str) {
    assert_eq!(s.code(), code, "code of {s:?}");
    assert!(
        s.message().starts_with(&format!("{reason}: ")) && s.message().len() > reason.len() + 2,
        "message {:?} should start with {reason}: and a sentence",
        s.message()
    );
    let info = s
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo detail in {s:?}"));
    assert_eq!(info.reason, reason);
    assert_eq!(info.domain, "ipa.v1");
    assert_eq!(
        ipa_proto::reason_of(s).map(|r| r.as_str()),
        Some(reason),
        "reason_of"
    );
}

/// Opens the server's database file directly (read-write, for
/// inspection and fault injection).
pub async fn open_db(path: &Path) -> sqlx::SqliteConnection {
    use sqlx::Connection;
    let url = format!("sqlite://{}", path.display());
    sqlx::SqliteConnection::connect(&url)
        .await
        .expect("open db")
}
