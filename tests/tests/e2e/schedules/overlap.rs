//! The four overlap policies with tasks that run until stopped (ledger pods
//! that never exit), on a schedule firing every second.

use ipa_tests::pb;

use super::support::{every, ledger_task, micros, scheduled_for, wait_schedule, wait_tasks};
use crate::system::support::{Spec, System};

/// Runs until stopped.
fn long() -> pb::ScheduleTask {
    ledger_task(&[("ledger.alive_ms", "100")])
}

fn running(t: &pb::Task) -> bool {
    t.status() == pb::TaskStatus::Active && t.pod_status() == pb::PodStatus::Running
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_makes_no_task_while_the_previous_runs() {
    let sys = System::start(Spec::relaxed()).await;
    let mut c = sys.client();
    let s = every(&mut c, "skip", 1, pb::Overlap::Skip, long()).await;
    let first = wait_tasks(&c, &s.schedule_id, 1).await.remove(0);
    sys.wait_task(&first.task_id, "running", running).await;
    let after = wait_schedule(&c, &s.schedule_id, "two skips", |s| s.skipped_count >= 2).await;
    assert_eq!(after.fired_count, 1);
    let tasks = wait_tasks(&c, &s.schedule_id, 1).await;
    assert_eq!(tasks.len(), 1, "no second task while the first runs");
    // Once it ends, the next fire starts a new one.
    sys.client()
        .complete_task(pb::CompleteTaskRequest {
            task_id: first.task_id.clone(),
            actor_id: "tester".into(),
            correlation_id: String::new(),
        })
        .await
        .expect("CompleteTask");
    let tasks = wait_tasks(&c, &s.schedule_id, 2).await;
    sys.wait_task(&tasks[1].task_id, "running", running).await;
    sys.assert_no_overlap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffer_one_starts_one_waiting_fire_when_the_previous_ends() {
    let sys = System::start(Spec::relaxed()).await;
    let mut c = sys.client();
    let s = every(&mut c, "buffer", 1, pb::Overlap::BufferOne, long()).await;
    let first = wait_tasks(&c, &s.schedule_id, 1).await.remove(0);
    sys.wait_task(&first.task_id, "running", running).await;
    // One fire waits, the ones after it are dropped.
    wait_schedule(&c, &s.schedule_id, "a dropped fire", |s| {
        s.skipped_count >= 1
    })
    .await;
    assert_eq!(wait_tasks(&c, &s.schedule_id, 1).await.len(), 1);
    let ended = super::support::now_micros();
    sys.client()
        .cancel_task(pb::CancelTaskRequest {
            task_id: first.task_id.clone(),
            reason: "done".into(),
            actor_id: "tester".into(),
            correlation_id: String::new(),
        })
        .await
        .expect("CancelTask");
    let tasks = wait_tasks(&c, &s.schedule_id, 2).await;
    let second = &tasks[1];
    // The buffered fire is one from while the first ran, started after it
    // ended.
    assert!(scheduled_for(second) < ended);
    assert!(scheduled_for(second) > scheduled_for(&tasks[0]));
    assert!(micros(&second.created_at) >= ended);
    sys.wait_task(&second.task_id, "running", running).await;
    sys.assert_no_overlap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_all_runs_fires_side_by_side() {
    let sys = System::start(Spec::relaxed()).await;
    let mut c = sys.client();
    let s = every(&mut c, "all", 1, pb::Overlap::AllowAll, long()).await;
    let tasks = wait_tasks(&c, &s.schedule_id, 3).await;
    for t in &tasks[..3] {
        sys.wait_task(&t.task_id, "running", running).await;
    }
    // All three at once.
    for t in &tasks[..3] {
        assert!(running(&sys.task(&t.task_id).await));
    }
    assert_eq!(
        wait_schedule(&c, &s.schedule_id, "fired", |s| s.fired_count >= 3)
            .await
            .skipped_count,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_previous_cancels_then_starts() {
    let sys = System::start(Spec::relaxed()).await;
    let mut c = sys.client();
    let s = every(&mut c, "cancel", 1, pb::Overlap::CancelPrevious, long()).await;
    let tasks = wait_tasks(&c, &s.schedule_id, 2).await;
    let first = sys
        .wait_task(&tasks[0].task_id, "cancelled", |t| {
            t.status() == pb::TaskStatus::Cancelled
        })
        .await;
    assert_eq!(first.pod_status(), pb::PodStatus::Stopped);
    let cancelled = sys.wait_event(&first.task_id, "task_cancelled").await;
    assert_eq!(cancelled.actor_id, "system");
    assert!(
        cancelled.data_json.contains("CANCEL_PREVIOUS"),
        "{}",
        cancelled.data_json
    );
    // Its pod was stopped (SIGTERM: the ledger pod writes its stop line),
    // not left running.
    ipa_tests::wait_for(
        "the first task's pod stopped cleanly",
        ipa_tests::DEADLINE,
        || {
            let runs = sys.runs_of(&first.task_id);
            (!runs.is_empty() && runs.iter().all(|r| r.stopped_cleanly)).then_some(())
        },
    )
    .await;
    sys.assert_no_overlap();
}
