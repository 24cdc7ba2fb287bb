//! The new RPCs behind the one role table (API.md Security): schedule reads
//! and GetStats for readers, schedule mutations for operators, DeleteTask,
//! CancelTasks and ArchiveTasks for admins; `actor_id` bound to the caller,
//! and an admin acting for someone recorded as `authenticated_as`.

use ipa_tests::pb;
use tonic::Code;

use crate::security::support::{Pki, central, refused};

fn schedule(name: &str, actor: &str) -> pb::CreateScheduleRequest {
    pb::CreateScheduleRequest {
        name: name.into(),
        interval_seconds: 3600,
        task: Some(pb::ScheduleTask {
            title: "t".into(),
            ..Default::default()
        }),
        actor_id: actor.into(),
        ..Default::default()
    }
}

fn denied<T: std::fmt::Debug>(r: Result<T, tonic::Status>) {
    refused(r, Code::PermissionDenied, "PERMISSION_DENIED");
}

#[tokio::test]
async fn roles_of_the_schedule_retention_and_stats_rpcs() {
    let pki = Pki::new();
    let mut args = pki.tls_args();
    args.extend(["--auth-tokens".into(), pki.tokens.clone().into()]);
    let server = central(pki.path(), args).await;
    let mut rita = pki.with_token("rita").client(server.addr);
    let mut otto = pki.with_token("otto").client(server.addr);
    let mut ada = pki.with_token("ada").client(server.addr);

    // Operators create and change schedules, as themselves.
    let s = otto
        .create_schedule(schedule("nightly", ""))
        .await
        .expect("operator creates a schedule")
        .into_inner()
        .schedule
        .unwrap();
    assert_eq!(s.created_by, "otto");
    refused(
        otto.create_schedule(schedule("other", "bob")).await,
        Code::PermissionDenied,
        "ACTOR_MISMATCH",
    );
    let fired = otto
        .trigger_schedule(pb::TriggerScheduleRequest {
            schedule_id: s.schedule_id.clone(),
            ..Default::default()
        })
        .await
        .expect("operator triggers")
        .into_inner();
    // Readers read schedules and statistics, and change nothing.
    rita.get_schedule(pb::GetScheduleRequest {
        schedule_id: s.schedule_id.clone(),
        ..Default::default()
    })
    .await
    .expect("reader reads a schedule");
    rita.list_schedules(pb::ListSchedulesRequest::default())
        .await
        .expect("reader lists schedules");
    rita.get_stats(pb::GetStatsRequest::default())
        .await
        .expect("reader reads statistics");
    denied(rita.create_schedule(schedule("r", "")).await);
    denied(
        rita.pause_schedule(pb::PauseScheduleRequest {
            schedule_id: s.schedule_id.clone(),
            ..Default::default()
        })
        .await,
    );
    // Retention is for admins.
    let cancel = |actor: &str| pb::CancelTasksRequest {
        reason: "cleanup".into(),
        actor_id: actor.into(),
        ..Default::default()
    };
    denied(otto.cancel_tasks(cancel("")).await);
    denied(
        otto.archive_tasks(pb::ArchiveTasksRequest {
            finished_before: Some(prost_types::Timestamp::default()),
            ..Default::default()
        })
        .await,
    );
    denied(
        otto.delete_task(pb::DeleteTaskRequest {
            task_id: fired.task_id.clone(),
            reason: "x".into(),
            ..Default::default()
        })
        .await,
    );
    // An admin cancels on behalf of otto: the event says who really did.
    let done = ada
        .cancel_tasks(cancel("otto"))
        .await
        .expect("admin cancels")
        .into_inner();
    assert_eq!(done.task_ids, vec![fired.task_id.clone()]);
    let trail = ada
        .get_task_events(pb::GetTaskEventsRequest {
            task_id: fired.task_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let last = trail.last().unwrap();
    assert_eq!(
        (last.r#type.as_str(), last.actor_id.as_str()),
        ("task_cancelled", "otto")
    );
    assert!(
        last.data_json.contains(r#""authenticated_as":"ada""#),
        "{}",
        last.data_json
    );
    ada.delete_task(pb::DeleteTaskRequest {
        task_id: fired.task_id.clone(),
        reason: "test".into(),
        ..Default::default()
    })
    .await
    .expect("admin deletes");
    let archived = ada
        .archive_tasks(pb::ArchiveTasksRequest {
            finished_before: Some(prost_types::Timestamp::default()),
            ..Default::default()
        })
        .await
        .expect("admin archives")
        .into_inner();
    assert_eq!(archived.count, 0);
}
