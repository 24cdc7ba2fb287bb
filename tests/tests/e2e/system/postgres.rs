//! central-manager on PostgreSQL (`--database-url postgres://…`, a private
//! server of ipa_tests::postgres) with a pod-host: a task goes through
//! create, start, running and complete, its trail and GetStats read back
//! through the API, and its rows are in PostgreSQL (not in a SQLite file
//! somewhere); a schedule fires, its tasks are cancelled in bulk and
//! archived. (The store's conformance tests run on both backends in
//! central-manager's unit tests.)

use ipa_tests::{DEADLINE, pb};
use sqlx::Connection;

use super::support::{Spec, System, ledger_req, wait_all_dead};

#[tokio::test]
async fn a_task_runs_through_create_start_and_complete_on_postgresql() {
    let (server, url) = tokio::task::spawn_blocking(|| {
        let server = ipa_tests::postgres::shared().expect("starting PostgreSQL");
        let url = server.database().expect("creating a database");
        (server, url)
    })
    .await
    .unwrap();
    let sys = System::start(Spec {
        hosts: vec!["host-a"],
        database_url: Some(url.clone()),
        ..Spec::relaxed()
    })
    .await;

    let t = sys.create(ledger_req(&[("run", "pg")], None, false)).await;
    assert_eq!(t.status(), pb::TaskStatus::Inactive, "{t:?}");
    let pod = sys.start_pod(&t.task_id).await.expect("StartPod");
    let running = sys
        .wait_task(&t.task_id, "pod RUNNING", |t| {
            t.pod_status() == pb::PodStatus::Running
        })
        .await;
    assert_eq!(running.status(), pb::TaskStatus::Active, "{running:?}");
    sys.wait_run(&pod.pod_id).await;

    sys.client()
        .complete_task(pb::CompleteTaskRequest {
            task_id: t.task_id.clone(),
            actor_id: "tester".into(),
            correlation_id: String::new(),
        })
        .await
        .expect("CompleteTask");
    let done = sys
        .wait_task(&t.task_id, "COMPLETED with its pod stopped", |t| {
            t.status() == pb::TaskStatus::Completed && t.pod_status() == pb::PodStatus::Stopped
        })
        .await;
    assert_eq!(done.phase(), pb::Phase::Completed, "{done:?}");
    wait_all_dead("the completed task's pod", &[pod.pid], DEADLINE).await;

    let kinds: Vec<String> = sys
        .events(&t.task_id)
        .await
        .into_iter()
        .map(|e| e.r#type)
        .collect();
    let first = |k: &str| kinds.iter().position(|x| x == k);
    for k in ["task_created", "pod_started", "task_completed"] {
        assert!(first(k).is_some(), "no {k}: {kinds:?}");
    }
    assert!(first("pod_started") < first("task_completed"), "{kinds:?}");

    let stats = sys
        .client()
        .get_stats(pb::GetStatsRequest::default())
        .await
        .expect("GetStats")
        .into_inner();
    let total: u64 = stats.groups.iter().map(|g| g.total).sum();
    assert_eq!(total, 1, "{stats:?}");

    // The rows are PostgreSQL's.
    let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
    let status: String = sqlx::query_scalar("SELECT status FROM tasks WHERE task_id = $1")
        .bind(&t.task_id)
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(status, "completed");
    c.close().await.unwrap();
    assert!(!sys.dir().join("central.db").exists());
    sys.assert_no_overlap();
    drop(sys);
    drop(server);
}

/// Schedules, retention and GetStats through central-manager on
/// PostgreSQL: a schedule firing every second makes one task per fire time
/// (each with its own `ipa.scheduled_for`), CancelTasks cancels the open
/// ones, ArchiveTasks moves them to the archive, where they stay readable.
#[tokio::test]
async fn a_schedule_fires_and_its_tasks_are_cancelled_and_archived_on_postgresql() {
    let (server, url) = tokio::task::spawn_blocking(|| {
        let server = ipa_tests::postgres::shared().expect("starting PostgreSQL");
        let url = server.database().expect("creating a database");
        (server, url)
    })
    .await
    .unwrap();
    let sys = System::start(Spec {
        hosts: vec!["host-a"],
        database_url: Some(url),
        ..Spec::relaxed()
    })
    .await;
    let mut c = sys.client();
    let created = c
        .create_schedule(pb::CreateScheduleRequest {
            name: "every-second".into(),
            interval_seconds: 1,
            overlap: pb::Overlap::AllowAll as i32,
            task: Some(pb::ScheduleTask {
                title: "scheduled".into(),
                template: "ledger".into(),
                ..Default::default()
            }),
            actor_id: "tester".into(),
            ..Default::default()
        })
        .await
        .expect("CreateSchedule")
        .into_inner();
    let id = created.schedule_id.clone();
    let mine = || std::collections::HashMap::from([("ipa.schedule_id".to_owned(), id.clone())]);
    let list = |include_archived: bool| pb::ListTasksRequest {
        metadata_equals: mine(),
        include_archived,
        limit: 100,
        ..Default::default()
    };
    let lister = c.clone();
    let fired = ipa_tests::wait_for_async("two fired tasks", DEADLINE, || {
        let mut c = lister.clone();
        let req = list(false);
        async move {
            let tasks = c.list_tasks(req).await.ok()?.into_inner().tasks;
            (tasks.len() >= 2).then_some(tasks)
        }
    })
    .await;
    c.pause_schedule(pb::PauseScheduleRequest {
        schedule_id: id.clone(),
        actor_id: "tester".into(),
        correlation_id: String::new(),
    })
    .await
    .expect("PauseSchedule");
    let tasks = c.list_tasks(list(false)).await.unwrap().into_inner().tasks;
    let times: std::collections::BTreeSet<&str> = tasks
        .iter()
        .map(|t| t.metadata["ipa.scheduled_for"].as_str())
        .collect();
    assert_eq!(
        times.len(),
        tasks.len(),
        "one task per fire time: {tasks:?}"
    );
    assert!(tasks.len() >= fired.len());

    let cancelled = c
        .cancel_tasks(pb::CancelTasksRequest {
            metadata_equals: mine(),
            reason: "end of test".into(),
            actor_id: "tester".into(),
            ..Default::default()
        })
        .await
        .expect("CancelTasks")
        .into_inner();
    assert_eq!(cancelled.count as usize, tasks.len(), "{cancelled:?}");
    for t in &tasks {
        sys.wait_task(&t.task_id, "CANCELLED, pod stopped", |t| {
            t.status() == pb::TaskStatus::Cancelled && t.pod_status() == pb::PodStatus::Stopped
        })
        .await;
    }
    let archived = c
        .archive_tasks(pb::ArchiveTasksRequest {
            finished_before: Some(ipa_proto::time::timestamp(
                std::time::SystemTime::now() + std::time::Duration::from_secs(1),
            )),
            actor_id: "tester".into(),
            correlation_id: String::new(),
        })
        .await
        .expect("ArchiveTasks")
        .into_inner();
    assert_eq!(archived.count as usize, tasks.len());
    assert!(
        c.list_tasks(list(false))
            .await
            .unwrap()
            .into_inner()
            .tasks
            .is_empty()
    );
    let back = c.list_tasks(list(true)).await.unwrap().into_inner().tasks;
    assert_eq!(back.len(), tasks.len());
    assert!(back.iter().all(|t| t.archived), "{back:?}");
    drop(sys);
    drop(server);
}
