//! Catch-up after central-manager was down for several fire times: missed
//! fire times inside the catch-up window fire when it comes back, older
//! ones are skipped and counted.

use ipa_tests::{DEADLINE, pb, wait_for_async};
use nix::sys::signal::Signal;

use super::support::{
    assert_one_task_per_fire_time, every, get, ledger_task, now_micros, scheduled_for, tasks_of,
    until, wait_tasks,
};
use crate::system::support::{Spec, System};

const S: i64 = 1_000_000;

fn quick() -> pb::ScheduleTask {
    ledger_task(&[("ledger.exit_after_ms", "50"), ("ledger.complete", "true")])
}

/// SIGKILLs central, keeps it down for `down` seconds, starts it again;
/// returns (the last fire time made before, when it came back).
async fn outage(sys: &mut System, id: &str, down: i64) -> (i64, i64) {
    sys.central.signal(Signal::SIGKILL);
    sys.central.kill().await;
    let killed = now_micros();
    // The last fire committed before the kill, read from the database
    // (central is down).
    let db = rusqlite::Connection::open_with_flags(
        sys.dir().join("central.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open the database");
    let last: i64 = db
        .query_row(
            "SELECT COALESCE(MAX(scheduled_for), 0) FROM schedule_fires WHERE schedule_id = ?",
            [id],
            |r| r.get(0),
        )
        .expect("last fire");
    drop(db);
    until(killed + down * S).await;
    let back = now_micros();
    sys.start_central_again().await;
    (last.max(0), back)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_fires_inside_the_window_fire_after_a_restart() {
    let mut sys = System::start(Spec::relaxed()).await;
    let mut c = sys.client();
    let mut req = pb::CreateScheduleRequest {
        name: "catch-up".into(),
        interval_seconds: 1,
        overlap: pb::Overlap::AllowAll as i32,
        catchup_window_seconds: 120,
        task: Some(quick()),
        ..Default::default()
    };
    req.actor_id = "tester".into();
    let s = c.create_schedule(req).await.expect("create").into_inner();
    let id = s.schedule_id.clone();
    wait_tasks(&c, &id, 1).await;
    let (last, back) = outage(&mut sys, &id, 4).await;
    // Every second between the last fire before the outage and the
    // restart gets its task.
    let want: Vec<i64> = (1..)
        .map(|k| last + k * S)
        .take_while(|t| *t < back)
        .collect();
    assert!(want.len() >= 3, "the outage covered several fire times");
    let c2 = sys.client();
    let tasks = wait_for_async("a task for every missed fire time", DEADLINE, || {
        let mut c = c2.clone();
        let (id, want) = (id.clone(), want.clone());
        async move {
            let tasks = tasks_of(&mut c, &id).await;
            let have: Vec<i64> = tasks.iter().map(scheduled_for).collect();
            want.iter().all(|t| have.contains(t)).then_some(tasks)
        }
    })
    .await;
    assert_one_task_per_fire_time(&tasks);
    let mut c = sys.client();
    assert_eq!(get(&mut c, &id).await.skipped_count, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_fires_older_than_the_window_are_skipped_and_counted() {
    let mut sys = System::start(Spec::relaxed()).await;
    let mut c = sys.client();
    // Window 0: the 10 s floor applies.
    let s = every(&mut c, "no-catch-up", 1, pb::Overlap::AllowAll, quick()).await;
    let id = s.schedule_id.clone();
    wait_tasks(&c, &id, 1).await;
    let (last, back) = outage(&mut sys, &id, 14).await;
    let c2 = sys.client();
    let (sched, tasks) = wait_for_async("the outage's fires settled", DEADLINE, || {
        let mut c = c2.clone();
        let id = id.clone();
        async move {
            let s = get(&mut c, &id).await;
            let tasks = tasks_of(&mut c, &id).await;
            let caught_up = tasks.iter().any(|t| scheduled_for(t) >= back);
            (s.skipped_count > 0 && caught_up).then_some((s, tasks))
        }
    })
    .await;
    assert_one_task_per_fire_time(&tasks);
    let during: Vec<i64> = tasks
        .iter()
        .map(scheduled_for)
        .filter(|t| *t > last && *t < back)
        .collect();
    // Fire times more than 10 s before the restart (plus slack for the
    // start-up) made no task; the later ones did.
    let oldest_allowed = back - 12 * S;
    assert!(
        during.iter().all(|t| *t >= oldest_allowed),
        "a fire older than the window made a task: {during:?} (back at {back})"
    );
    assert!(!during.is_empty(), "fires inside the window made tasks");
    // Every missed fire time is either a task or counted as skipped.
    let missed = (back - last) / S;
    assert!(
        sched.skipped_count + during.len() as u64 + 1 >= missed as u64,
        "skipped {} + fired {} < missed {missed}",
        sched.skipped_count,
        during.len()
    );
}
