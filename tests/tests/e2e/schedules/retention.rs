//! Archive and delete keep the audit trail consistent: an archived task's
//! events are still readable (and WatchEvents still streams them at their
//! positions, resumable inside the archived range); a deleted task's row
//! and events are gone and the deletion is logged; CancelTasks gives each
//! task its own `task_cancelled` by the caller.

use ipa_tests::pb;

use super::support::{now_micros, reason};
use crate::system::support::{Spec, System};

fn ts(us: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: us.div_euclid(1_000_000),
        nanos: (us.rem_euclid(1_000_000) * 1000) as i32,
    }
}

async fn watch_from(sys: &System, after: u64, n: usize) -> Vec<pb::Event> {
    let mut s = sys
        .client()
        .watch_events(pb::WatchEventsRequest {
            after_position: after,
            task_id: String::new(),
        })
        .await
        .expect("WatchEvents")
        .into_inner();
    let mut out = Vec::new();
    while out.len() < n {
        let e = tokio::time::timeout(ipa_tests::DEADLINE, s.message())
            .await
            .expect("an event in time")
            .expect("stream")
            .expect("event");
        out.push(e);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archived_tasks_stay_readable_and_watchable() {
    let sys = System::start(Spec::relaxed()).await;
    let mut c = sys.client();
    let a = sys.ledger_task(&[("team", "x")]).await;
    let b = sys.ledger_task(&[]).await;
    let open = sys.ledger_task(&[("team", "x")]).await;
    for id in [&a.task_id, &b.task_id] {
        c.complete_task(pb::CompleteTaskRequest {
            task_id: id.clone(),
            actor_id: "tester".into(),
            correlation_id: String::new(),
        })
        .await
        .expect("CompleteTask");
    }
    let before = watch_from(&sys, 0, 5).await;
    let archived = c
        .archive_tasks(pb::ArchiveTasksRequest {
            finished_before: Some(ts(now_micros() + 1_000_000)),
            actor_id: "admin".into(),
            correlation_id: String::new(),
        })
        .await
        .expect("ArchiveTasks")
        .into_inner();
    assert_eq!(archived.count, 2);

    // Gone from the live views...
    let e = c
        .get_task(pb::GetTaskRequest {
            task_id: a.task_id.clone(),
            include_archived: false,
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&e), Some("TASK_NOT_FOUND"));
    let live = c
        .count_tasks(pb::CountTasksRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(live.count, 1);
    // ...readable with include_archived.
    let t = c
        .get_task(pb::GetTaskRequest {
            task_id: a.task_id.clone(),
            include_archived: true,
        })
        .await
        .expect("GetTask include_archived")
        .into_inner();
    assert!(t.archived);
    assert_eq!(t.status(), pb::TaskStatus::Completed);
    let trail = c
        .get_task_events(pb::GetTaskEventsRequest {
            task_id: a.task_id.clone(),
            limit: 100,
            include_archived: true,
            ..Default::default()
        })
        .await
        .expect("GetTaskEvents include_archived")
        .into_inner()
        .events;
    assert_eq!(
        trail.iter().map(|e| e.r#type.as_str()).collect::<Vec<_>>(),
        ["task_created", "task_completed"]
    );
    let team = c
        .list_tasks(pb::ListTasksRequest {
            metadata_equals: [("team".to_owned(), "x".to_owned())].into(),
            include_archived: true,
            ..Default::default()
        })
        .await
        .expect("ListTasks")
        .into_inner()
        .tasks;
    let mut ids: Vec<_> = team.iter().map(|t| t.task_id.clone()).collect();
    ids.sort();
    let mut want = vec![a.task_id.clone(), open.task_id.clone()];
    want.sort();
    assert_eq!(ids, want);

    // WatchEvents: the same events at the same positions, and a resume
    // from inside the archived range gets what follows.
    assert_eq!(watch_from(&sys, 0, 5).await, before);
    assert_eq!(
        watch_from(&sys, before[1].position, 3).await,
        before[2..].to_vec()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_task_is_gone_and_its_deletion_logged() {
    let sys = System::start(Spec::relaxed()).await;
    let mut c = sys.client();
    let t = sys.ledger_task(&[]).await;
    let delete = |reason: &str| pb::DeleteTaskRequest {
        task_id: t.task_id.clone(),
        actor_id: "root".into(),
        reason: reason.into(),
        correlation_id: "del-7".into(),
    };
    let e = c.delete_task(delete("cleanup")).await.unwrap_err();
    assert_eq!(
        (e.code(), reason(&e)),
        (tonic::Code::FailedPrecondition, Some("TASK_NOT_TERMINAL"))
    );
    let e = c.delete_task(delete("")).await.unwrap_err();
    assert_eq!(reason(&e), Some("MISSING_REASON"));
    c.cancel_task(pb::CancelTaskRequest {
        task_id: t.task_id.clone(),
        reason: "obsolete".into(),
        actor_id: "tester".into(),
        correlation_id: String::new(),
    })
    .await
    .expect("CancelTask");
    c.delete_task(delete("personal data"))
        .await
        .expect("DeleteTask");
    for include_archived in [false, true] {
        let e = c
            .get_task(pb::GetTaskRequest {
                task_id: t.task_id.clone(),
                include_archived,
            })
            .await
            .unwrap_err();
        assert_eq!(reason(&e), Some("TASK_NOT_FOUND"));
    }
    let e = c
        .get_task_events(pb::GetTaskEventsRequest {
            task_id: t.task_id.clone(),
            include_archived: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&e), Some("TASK_NOT_FOUND"));
    // The deletions log (read from the database file, as an operator would).
    let db = rusqlite::Connection::open_with_flags(
        sys.dir().join("central.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open the database");
    let (by, why, corr, n): (String, String, String, i64) = db
        .query_row(
            "SELECT deleted_by, reason, correlation_id, events_deleted FROM task_deletions \
             WHERE task_id = ?",
            [&t.task_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .expect("a logged deletion");
    assert_eq!(
        (by.as_str(), why.as_str(), corr.as_str(), n),
        ("root", "personal data", "del-7", 2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_tasks_by_filter_with_a_dry_run_first() {
    let sys = System::start(Spec::relaxed()).await;
    let mut c = sys.client();
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(sys.ledger_task(&[("batch", "b1")]).await.task_id);
    }
    let other = sys.ledger_task(&[("batch", "b2")]).await;
    let req = |dry_run| pb::CancelTasksRequest {
        metadata_equals: [("batch".to_owned(), "b1".to_owned())].into(),
        reason: "batch abandoned".into(),
        dry_run,
        actor_id: "root".into(),
        ..Default::default()
    };
    let dry = c
        .cancel_tasks(req(true))
        .await
        .expect("dry run")
        .into_inner();
    assert_eq!(dry.count, 3);
    let mut got = dry.task_ids.clone();
    got.sort();
    ids.sort();
    assert_eq!(got, ids);
    for id in &ids {
        assert_eq!(sys.task(id).await.status(), pb::TaskStatus::Inactive);
    }
    let done = c
        .cancel_tasks(req(false))
        .await
        .expect("CancelTasks")
        .into_inner();
    assert_eq!(done.count, 3);
    for id in &ids {
        let e = sys.wait_event(id, "task_cancelled").await;
        assert_eq!(e.actor_id, "root");
        assert!(e.data_json.contains("batch abandoned"));
    }
    assert_eq!(
        sys.task(&other.task_id).await.status(),
        pb::TaskStatus::Inactive
    );
    // Nothing left to cancel.
    assert_eq!(
        c.cancel_tasks(req(false)).await.unwrap().into_inner().count,
        0
    );
    let e = c
        .cancel_tasks(pb::CancelTasksRequest {
            reason: String::new(),
            ..req(false)
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&e), Some("MISSING_REASON"));
}

/// `--archive-after-days` archives by itself, as `system`, what finished
/// more than that many days ago, and nothing newer. A day is not waited
/// for: the finish time of one task is moved two days back in the
/// database, and a central restarted with the flag runs its first archive
/// pass at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_after_days_archives_old_tasks_by_itself() {
    let mut spec = Spec::relaxed();
    spec.central_extra = vec!["--archive-after-days".into(), "1".into()];
    let mut sys = System::start(spec).await;
    let mut c = sys.client();
    let old = sys.ledger_task(&[]).await;
    let recent = sys.ledger_task(&[]).await;
    let open = sys.ledger_task(&[]).await;
    for id in [&old.task_id, &recent.task_id] {
        c.complete_task(pb::CompleteTaskRequest {
            task_id: id.clone(),
            actor_id: "tester".into(),
            correlation_id: String::new(),
        })
        .await
        .expect("CompleteTask");
    }
    let db = sys.dir().join("central.db");
    {
        let mut side = open_db(&db).await;
        sqlx::query("UPDATE tasks SET finished_at = ? WHERE task_id = ?")
            .bind(now_micros() - 2 * 24 * 3600 * 1_000_000)
            .bind(&old.task_id)
            .execute(&mut side)
            .await
            .expect("age the task");
    }
    sys.kill_and_restart_central().await;
    let mut c = sys.client();

    let gone = ipa_tests::wait_for_async(
        "the old task archived by --archive-after-days",
        ipa_tests::DEADLINE,
        || {
            let mut c = c.clone();
            let id = old.task_id.clone();
            async move {
                match c
                    .get_task(pb::GetTaskRequest {
                        task_id: id,
                        include_archived: false,
                    })
                    .await
                {
                    Err(e) if reason(&e) == Some("TASK_NOT_FOUND") => Some(e),
                    _ => None,
                }
            }
        },
    )
    .await;
    assert_eq!(reason(&gone), Some("TASK_NOT_FOUND"));
    let t = c
        .get_task(pb::GetTaskRequest {
            task_id: old.task_id.clone(),
            include_archived: true,
        })
        .await
        .expect("GetTask include_archived")
        .into_inner();
    assert!(t.archived);
    // Finished an instant ago, or not finished: left alone.
    for id in [&recent.task_id, &open.task_id] {
        let t = c
            .get_task(pb::GetTaskRequest {
                task_id: id.clone(),
                include_archived: false,
            })
            .await
            .expect("a newer task stays live")
            .into_inner();
        assert!(!t.archived);
    }
    // The run is on record, by central itself.
    let mut side = open_db(&db).await;
    let runs: Vec<(String, i64)> =
        sqlx::query_as("SELECT actor_id, tasks FROM archive_runs WHERE tasks > 0")
            .fetch_all(&mut side)
            .await
            .expect("archive_runs");
    assert_eq!(runs, vec![("system".to_owned(), 1)]);
}

async fn open_db(path: &std::path::Path) -> sqlx::SqliteConnection {
    use sqlx::Connection;
    sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("open central's database")
}
