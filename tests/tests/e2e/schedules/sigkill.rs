//! SIGKILL of central-manager in the middle of fires, 20 times over: each
//! fire time still makes at most one task (the fire and its task commit in
//! one transaction, and the fire time is a primary key).

use ipa_tests::pb;
use nix::sys::signal::Signal;

use super::support::{
    assert_one_task_per_fire_time, ledger_task, now_micros, tasks_of, wait_tasks,
};
use crate::system::support::{Spec, System};

const KILLS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_fires_never_makes_two_tasks_for_one_fire_time() {
    let mut sys = System::start(Spec::relaxed()).await;
    let mut c = sys.client();
    // Every second, with a catch-up window: each restart fires a burst of
    // the fire times missed while it was down, which is when fires and
    // kills overlap most.
    let s = c
        .create_schedule(pb::CreateScheduleRequest {
            name: "sigkill".into(),
            interval_seconds: 1,
            overlap: pb::Overlap::AllowAll as i32,
            catchup_window_seconds: 3600,
            task: Some(ledger_task(&[
                ("ledger.exit_after_ms", "20"),
                ("ledger.complete", "true"),
            ])),
            actor_id: "tester".into(),
            ..Default::default()
        })
        .await
        .expect("CreateSchedule")
        .into_inner();
    let id = s.schedule_id;
    wait_tasks(&c, &id, 1).await;
    for round in 0..KILLS {
        // A varying moment inside the next fire's second (the clock's
        // microseconds), so kills land before, during and after fires.
        let delay = (now_micros().rem_euclid(1200)) as u64;
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        sys.central.signal(Signal::SIGKILL);
        sys.central.kill().await;
        sys.start_central_again().await;
        c = sys.client();
        let tasks = tasks_of(&mut c, &id).await;
        assert_one_task_per_fire_time(&tasks);
        eprintln!("round {round}: {} tasks", tasks.len());
    }
    // After the last restart the schedule keeps firing, still one task per
    // fire time.
    let n = tasks_of(&mut c, &id).await.len();
    let tasks = wait_tasks(&c, &id, n + 2).await;
    assert_one_task_per_fire_time(&tasks);
}
