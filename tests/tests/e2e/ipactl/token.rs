//! The bearer token on the wire: `--token`, `IPA_TOKEN` and `--token-file`
//! all send `authorization: Bearer TOKEN`, and the actor is then left to
//! the server (empty). Checked against an in-process CentralManager that
//! implements only GetTask and CancelTask (the generated default stubs
//! answer the rest) and records what it received.

use std::sync::{Arc, Mutex};

use ipa_tests::ipactl::Ipactl;
use ipa_tests::pb;
use pb::central_manager_server::{CentralManager, CentralManagerServer};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

#[derive(Default, Clone)]
struct Recorder {
    /// The `authorization` header of each call ("" when absent).
    auth: Arc<Mutex<Vec<String>>>,
    /// The actor_id of each CancelTask.
    actors: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    fn note<T>(&self, req: &Request<T>) {
        let v = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        self.auth.lock().unwrap().push(v);
    }
}

#[tonic::async_trait]
impl CentralManager for Recorder {
    async fn get_task(
        &self,
        req: Request<pb::GetTaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        self.note(&req);
        Ok(Response::new(pb::Task {
            task_id: req.into_inner().task_id,
            title: "recorded".into(),
            ..Default::default()
        }))
    }

    async fn cancel_task(
        &self,
        req: Request<pb::CancelTaskRequest>,
    ) -> Result<Response<pb::CancelTaskResponse>, Status> {
        self.note(&req);
        self.actors.lock().unwrap().push(req.into_inner().actor_id);
        Ok(Response::new(pb::CancelTaskResponse {}))
    }
}

const ID: &str = "0b6f5a4e-8d7c-4b3a-9e21-5f0c7d8e9a10";

#[tokio::test]
async fn the_token_is_sent_as_a_bearer_header() {
    let rec = Recorder::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let server = tokio::spawn({
        let rec = rec.clone();
        let stop = stop.clone();
        async move {
            tonic::transport::Server::builder()
                .add_service(CentralManagerServer::new(rec))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    stop.cancelled_owned(),
                )
                .await
        }
    });

    let ctl = Ipactl::new(addr);
    ctl.run(&["tasks", "get", ID]).await.ok();
    ctl.run(&["--token", "s3cret", "tasks", "get", ID])
        .await
        .ok();
    let mut with_env = ctl.clone();
    with_env.env.push(("IPA_TOKEN".into(), "from-env".into()));
    with_env.run(&["tasks", "get", ID]).await.ok();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "from-file\n").unwrap();
    // The file wins over the environment.
    with_env
        .run(&["--token-file", file.to_str().unwrap(), "tasks", "get", ID])
        .await
        .ok();
    // Without a token the actor is the login name; with one, empty (the
    // server uses the authenticated principal).
    ctl.run(&["tasks", "cancel", ID, "--reason", "r"])
        .await
        .ok();
    ctl.run(&["--token", "t", "tasks", "cancel", ID, "--reason", "r"])
        .await
        .ok();
    // A token a header cannot carry is refused before sending.
    ctl.run(&["--token", "bad\u{7f}", "tasks", "get", ID])
        .await
        .fails_with("INVALID_ARGUMENT");

    assert_eq!(
        *rec.auth.lock().unwrap(),
        [
            "",
            "Bearer s3cret",
            "Bearer from-env",
            "Bearer from-file",
            "",
            "Bearer t"
        ]
    );
    let actors = rec.actors.lock().unwrap().clone();
    assert!(!actors[0].is_empty(), "{actors:?}");
    assert_eq!(actors[1], "");

    // An RPC the fake does not implement: the generated default stub.
    ctl.run(&["pods", "list"]).await.fails_with("UNIMPLEMENTED");

    stop.cancel();
    server.await.unwrap().unwrap();
}
