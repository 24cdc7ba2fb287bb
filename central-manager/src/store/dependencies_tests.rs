//! Dependencies in the database: recording, the start check, release into
//! the queue when the last dependency completes, and failure propagation,
//! on SQLite and on PostgreSQL (listed in [`on_both_backends!`] at the
//! end).

use super::pods::{Cause, PodCommand};
use super::tests::{AnyDb, Backend, create, finish_cmd, new_task, on_both_backends};
use super::*;
use crate::core::ports::TaskStore;
use crate::core::ports::queue::{QueueOutcome, QueueWrite};
use crate::domain::{Finish, PodStatus, TaskId, TaskStatus};
use crate::error::Error;

async fn task(store: &dyn TaskStore, deps: &[TaskId]) -> Result<TaskId, Error> {
    let mut t = new_task("dep", "alice");
    t.depends_on = deps.to_vec();
    Ok(create(store, t).await?.0.task_id)
}

async fn enqueue(store: &dyn TaskStore, id: TaskId) -> QueueOutcome {
    let w = QueueWrite::Enqueue {
        task_id: id,
        cause: Cause::system(),
        message: "start".into(),
    };
    match store.write(Command::Queue(w)).await.unwrap() {
        Outcome::Queue(o) => o,
        other => panic!("{other:?}"),
    }
}

async fn get(store: &dyn TaskStore, id: TaskId) -> crate::domain::TaskRecord {
    store.task(id).await.unwrap().unwrap()
}

async fn events_of(store: &dyn TaskStore, id: TaskId) -> Vec<(String, serde_json::Value)> {
    store
        .events_after(0, Some(id), 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.event_type, serde_json::from_str(&e.data_json).unwrap()))
        .collect()
}

fn claim(id: TaskId) -> PodCommand {
    PodCommand::Claim {
        task_id: id,
        pod_id: "p".into(),
        host_id: "h".into(),
        cause: Cause::system(),
        automatic: false,
    }
}

async fn an_unknown_dependency_is_refused_and_nothing_is_created(backend: Backend) {
    let db = AnyDb::open(backend).await;
    let store = &*db.store;
    let a = task(store, &[]).await.unwrap();
    let missing = TaskId::new();
    match task(store, &[a, missing]).await {
        Err(Error::TaskNotFound(id)) => assert_eq!(id, missing),
        other => panic!("{other:?}"),
    }
    // Only `a` exists, with no dependency rows left behind.
    assert_eq!(store.events_after(0, None, 100).await.unwrap().len(), 1);
    let b = task(store, &[a]).await.unwrap();
    assert_eq!(get(store, b).await.depends_on, vec![a]);
    db.shutdown().await;
}

async fn a_start_waits_until_the_last_dependency_completes(backend: Backend) {
    let db = AnyDb::open(backend).await;
    let store = &*db.store;
    let a = task(store, &[]).await.unwrap();
    let b = task(store, &[]).await.unwrap();
    let c = task(store, &[a, b]).await.unwrap();
    // Without queue: the claim is refused, naming a dependency.
    match store.pod(claim(c)).await {
        Err(Error::DependenciesNotMet(t, _)) => assert_eq!(t, c),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        enqueue(store, c).await,
        QueueOutcome::Queued { already: false }
    );
    assert_eq!(
        enqueue(store, c).await,
        QueueOutcome::Queued { already: true }
    );
    let t = get(store, c).await;
    assert_eq!(t.pod_status, PodStatus::Queued);
    assert!(t.queue.is_none(), "not in the capacity queue");
    assert_eq!(queue::waiting_for(&t), "dependencies");
    assert!(store.queue_head("default").await.unwrap().is_none());
    // CountTasks/ListTasks by pod status see it as queued, not stopped.
    let by = |p: PodStatus| crate::domain::TaskFilter {
        pod_status: Some(p),
        ..Default::default()
    };
    assert_eq!(store.count_tasks(&by(PodStatus::Queued)).await.unwrap(), 1);
    assert_eq!(store.count_tasks(&by(PodStatus::Stopped)).await.unwrap(), 2);

    store
        .write(finish_cmd(a, Finish::Complete, None))
        .await
        .unwrap();
    assert!(
        get(store, c).await.waiting_dependencies,
        "b is not completed"
    );
    store
        .write(finish_cmd(b, Finish::Complete, None))
        .await
        .unwrap();
    let t = get(store, c).await;
    assert!(!t.waiting_dependencies);
    assert_eq!(queue::waiting_for(&t), "capacity");
    assert_eq!(
        store.queue_head("default").await.unwrap().unwrap().task_id,
        c
    );
    let queued: Vec<_> = events_of(store, c)
        .await
        .into_iter()
        .filter(|(k, _)| k == "pod_queued")
        .map(|(_, d)| d["waiting_for"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(queued, ["dependencies", "capacity"]);
    assert!(matches!(
        store.pod(claim(c)).await.unwrap(),
        super::pods::PodOutcome::Claimed(_)
    ));
    db.shutdown().await;
}

async fn stop_cancels_the_wait(backend: Backend) {
    let db = AnyDb::open(backend).await;
    let store = &*db.store;
    let a = task(store, &[]).await.unwrap();
    let b = task(store, &[a]).await.unwrap();
    enqueue(store, b).await;
    let w = QueueWrite::Unqueue {
        task_id: b,
        cause: Cause::system(),
        reason: "no".into(),
    };
    let out = store.write(Command::Queue(w)).await.unwrap();
    assert!(
        matches!(out, Outcome::Queue(QueueOutcome::Removed)),
        "{out:?}"
    );
    let t = get(store, b).await;
    assert_eq!(
        (t.status, t.pod_status),
        (TaskStatus::Inactive, PodStatus::Stopped)
    );
    // Completing the dependency no longer starts it.
    store
        .write(finish_cmd(a, Finish::Complete, None))
        .await
        .unwrap();
    assert!(get(store, b).await.queue.is_none());
    db.shutdown().await;
}

async fn a_cancelled_dependency_fails_a_chain_each_naming_its_own(backend: Backend) {
    let db = AnyDb::open(backend).await;
    let store = &*db.store;
    let a = task(store, &[]).await.unwrap();
    let b = task(store, &[a]).await.unwrap();
    let c = task(store, &[b]).await.unwrap();
    enqueue(store, c).await;
    store
        .write(finish_cmd(a, Finish::Cancel, Some("no")))
        .await
        .unwrap();
    for (id, dep) in [(b, a), (c, b)] {
        let t = get(store, id).await;
        assert_eq!(t.status, TaskStatus::Failed, "{id}");
        assert_eq!(t.pod_status, PodStatus::Stopped);
        let failed: Vec<_> = events_of(store, id)
            .await
            .into_iter()
            .filter(|(k, _)| k == "task_failed")
            .map(|(_, d)| d)
            .collect();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0]["reason"], "dependency_failed");
        assert_eq!(failed[0]["dependency"], dep.to_string());
    }
    // A task created on a failed dependency fails at once.
    let d = task(store, &[c]).await.unwrap();
    assert_eq!(get(store, d).await.status, TaskStatus::Failed);
    db.shutdown().await;
}

on_both_backends!(
    an_unknown_dependency_is_refused_and_nothing_is_created,
    a_start_waits_until_the_last_dependency_completes,
    stop_cancels_the_wait,
    a_cancelled_dependency_fails_a_chain_each_naming_its_own,
);
