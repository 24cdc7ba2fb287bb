//! Schedules fire on their timers, start their tasks, and obey pause,
//! resume, trigger and delete; bad requests get the documented reasons.

use ipa_tests::pb;

use super::support::{
    create, every, get, ledger_task, micros, reason, scheduled_for, tasks_of, wait_tasks,
};
use crate::system::support::{Spec, System};

/// Tasks that complete on their own after 100 ms.
fn quick() -> pb::ScheduleTask {
    ledger_task(&[
        ("ledger.exit_after_ms", "100"),
        ("ledger.complete", "true"),
        ("ledger.alive_ms", "50"),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interval_schedule_fires_on_time_and_starts_each_task() {
    let sys = System::start(Spec::relaxed()).await;
    let mut c = sys.client();
    let s = every(&mut c, "every-second", 1, pb::Overlap::AllowAll, quick()).await;
    assert!(s.next_fire_at.is_some());
    assert_eq!(s.created_by, "tester");
    let tasks = wait_tasks(&c, &s.schedule_id, 3).await;
    let mut times: Vec<i64> = tasks.iter().map(scheduled_for).collect();
    times.sort_unstable();
    for pair in times.windows(2) {
        assert_eq!(pair[1] - pair[0], 1_000_000, "consecutive whole seconds");
    }
    for t in &tasks {
        assert_eq!(t.created_by, "system");
        assert_eq!(t.metadata["ipa.schedule_id"], s.schedule_id);
        assert_eq!(t.metadata["ledger.complete"], "true");
        // On time: made within 2 s of its fire time on a loaded CI box
        // (the benchmark measures the real lateness).
        let late = micros(&t.created_at) - scheduled_for(t);
        assert!(
            (0..2_000_000).contains(&late),
            "task made {late} µs after its time"
        );
    }
    // Each fire's task is started and runs to completion.
    for t in &tasks[..3] {
        sys.wait_task(&t.task_id, "completed", |t| {
            t.status() == pb::TaskStatus::Completed
        })
        .await;
    }
    let now = get(&mut c, &s.schedule_id).await;
    assert!(now.fired_count >= 3);
    assert!(micros(&now.next_fire_at) > micros(&now.last_fire_at));
    sys.assert_no_overlap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cron_schedule_in_a_zone_fires_at_its_times() {
    let sys = System::start(Spec::relaxed()).await;
    let mut c = sys.client();
    let s = create(
        &mut c,
        pb::CreateScheduleRequest {
            name: "cron-berlin".into(),
            cron: "*/2 * * * * *".into(),
            timezone: "Europe/Berlin".into(),
            overlap: pb::Overlap::AllowAll as i32,
            task: Some(quick()),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        (s.cron.as_str(), s.timezone.as_str()),
        ("*/2 * * * * *", "Europe/Berlin")
    );
    let tasks = wait_tasks(&c, &s.schedule_id, 2).await;
    for t in &tasks {
        assert_eq!(scheduled_for(t) % 2_000_000, 0, "even seconds only");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_trigger_and_delete() {
    let sys = System::start(Spec::relaxed()).await;
    let mut c = sys.client();
    // Hourly: it will not fire by itself during the test.
    let s = every(&mut c, "hourly", 3600, pb::Overlap::Skip, quick()).await;
    let id = s.schedule_id.clone();
    let cmd = |id: &str| (id.to_owned(), "tester".to_owned());

    // Trigger fires now, by the caller.
    let (sid, actor) = cmd(&id);
    let fired = c
        .trigger_schedule(pb::TriggerScheduleRequest {
            schedule_id: sid,
            actor_id: actor,
            correlation_id: "trig-1".into(),
        })
        .await
        .expect("TriggerSchedule")
        .into_inner();
    assert!(!fired.task_id.is_empty());
    let t = sys.task(&fired.task_id).await;
    assert_eq!(t.created_by, "tester");
    assert_eq!(t.metadata["ipa.schedule_id"], id);
    let created = sys.wait_event(&fired.task_id, "task_created").await;
    assert_eq!(created.correlation_id, "trig-1");
    sys.wait_event(&fired.task_id, "pod_started").await;

    // Pause: no next fire; resume: one after now.
    let paused = c
        .pause_schedule(pb::PauseScheduleRequest {
            schedule_id: id.clone(),
            actor_id: "tester".into(),
            correlation_id: String::new(),
        })
        .await
        .expect("PauseSchedule")
        .into_inner()
        .schedule
        .expect("schedule");
    assert!(paused.paused);
    assert!(paused.next_fire_at.is_none());
    let resumed = c
        .resume_schedule(pb::ResumeScheduleRequest {
            schedule_id: id.clone(),
            actor_id: "tester".into(),
            correlation_id: String::new(),
        })
        .await
        .expect("ResumeSchedule")
        .into_inner()
        .schedule
        .expect("schedule");
    assert!(!resumed.paused);
    assert!(micros(&resumed.next_fire_at) > super::support::now_micros());
    let listed = c
        .list_schedules(pb::ListSchedulesRequest::default())
        .await
        .expect("ListSchedules")
        .into_inner()
        .schedules;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].fired_count, 1);

    // A second trigger while the first task still runs: SKIP makes none.
    sys.wait_task(&fired.task_id, "completed", |t| {
        t.status() == pb::TaskStatus::Completed
    })
    .await;
    let by_name = c
        .get_schedule(pb::GetScheduleRequest {
            name: "hourly".into(),
            ..Default::default()
        })
        .await
        .expect("GetSchedule by name")
        .into_inner();
    assert_eq!(by_name.schedule_id, id);

    c.delete_schedule(pb::DeleteScheduleRequest {
        schedule_id: id.clone(),
        actor_id: "tester".into(),
        correlation_id: String::new(),
    })
    .await
    .expect("DeleteSchedule");
    let gone = c
        .get_schedule(pb::GetScheduleRequest {
            schedule_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&gone), Some("SCHEDULE_NOT_FOUND"));
    // Its task stays.
    assert_eq!(tasks_of(&mut c, &id).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_schedules_are_refused_with_their_reasons() {
    let sys = System::start(Spec::relaxed()).await;
    let mut c = sys.client();
    every(&mut c, "taken", 60, pb::Overlap::Skip, quick()).await;
    let try_create = |req: pb::CreateScheduleRequest| {
        let mut c = c.clone();
        async move {
            c.create_schedule(pb::CreateScheduleRequest {
                actor_id: "tester".into(),
                task: Some(quick()),
                ..req
            })
            .await
            .unwrap_err()
        }
    };
    let e = try_create(pb::CreateScheduleRequest {
        name: "taken".into(),
        interval_seconds: 5,
        ..Default::default()
    })
    .await;
    assert_eq!(
        (e.code(), reason(&e)),
        (tonic::Code::AlreadyExists, Some("ALREADY_EXISTS"))
    );
    for (cron, every, tz) in [
        ("61 * * * *", 0, ""),
        ("* * * *", 0, ""),
        ("", 0, ""),
        ("* * * * *", 60, ""),
        ("* * * * *", 0, "Mars/Base"),
    ] {
        let e = try_create(pb::CreateScheduleRequest {
            name: "bad".into(),
            cron: cron.into(),
            interval_seconds: every,
            timezone: tz.into(),
            ..Default::default()
        })
        .await;
        assert_eq!(
            e.code(),
            tonic::Code::InvalidArgument,
            "{cron:?} {every} {tz:?}"
        );
        assert_eq!(reason(&e), Some("INVALID_SCHEDULE"), "{}", e.message());
    }
    let e = try_create(pb::CreateScheduleRequest {
        name: "x".repeat(129),
        interval_seconds: 5,
        ..Default::default()
    })
    .await;
    assert_eq!(reason(&e), Some("INVALID_ARGUMENT"));
    assert!(e.message().contains("name"), "{}", e.message());
    let e = c
        .trigger_schedule(pb::TriggerScheduleRequest {
            schedule_id: uuid::Uuid::new_v4().to_string(),
            actor_id: "tester".into(),
            correlation_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), reason(&e)),
        (tonic::Code::NotFound, Some("SCHEDULE_NOT_FOUND"))
    );
    let e = c
        .pause_schedule(pb::PauseScheduleRequest {
            schedule_id: uuid::Uuid::new_v4().to_string(),
            actor_id: String::new(),
            correlation_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&e), Some("MISSING_ACTOR_ID"));
}
