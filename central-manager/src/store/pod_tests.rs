//! Pod supervision's writes, on SQLite and on PostgreSQL (the tests listed
//! in [`on_both_backends!`] at the end): ownership of host reports, the
//! claim's conditions, starts, ends and the restart policy, phases,
//! unreachable hosts, recoveries and fencing.

use super::pods::{Cause, EndReport, PodCommand, PodOutcome, PodRef};
use super::tests::{AnyDb, Backend, create, new_task, on_both_backends};
use super::*;
use crate::core::ports::TaskStore;
use crate::domain::{Ending, Phase, PodStatus, RestartDefaults, TaskStatus};

pub(super) const DEFAULTS: RestartDefaults = crate::domain::RestartPolicy {
    auto_restart: true,
    max_restarts: 3,
    window_seconds: 60,
    initial_backoff_ms: 1000,
    max_backoff_ms: 30_000,
};

/// A task with a running pod on `host`.
pub(super) async fn running_on(store: &dyn TaskStore, host: &str) -> PodRef {
    running_task(store, host, new_task("t", "alice")).await
}

/// `task` created, with a running pod on `host`.
async fn running_task(store: &dyn TaskStore, host: &str, task: crate::domain::NewTask) -> PodRef {
    let (t, _) = create(store, task).await.unwrap();
    let claim = PodCommand::Claim {
        task_id: t.task_id,
        pod_id: format!("pod-{}", t.task_id),
        host_id: host.into(),
        cause: Cause::system(),
        automatic: false,
    };
    let PodOutcome::Claimed(c) = store.pod(claim).await.unwrap() else {
        panic!("claim")
    };
    let pod = PodRef {
        task_id: t.task_id,
        pod_id: format!("pod-{}", t.task_id),
        generation: c.generation,
    };
    let started = PodCommand::Started {
        pod: pod.clone(),
        pid: 42,
        started_at: 1,
        host_id: host.into(),
        cause: Cause::system(),
    };
    store.pod(started).await.unwrap();
    pod
}

fn exit_report(ending: Ending) -> EndReport {
    EndReport {
        ending,
        detail: serde_json::json!({}),
        message: String::new(),
        last_phase: Some(Phase::Completed),
    }
}

async fn reports_from_a_host_that_does_not_own_the_pod_change_nothing(backend: Backend) {
    let db = AnyDb::open(backend).await;
    let store = &*db.store;
    let pod = running_on(store, "host-a").await;
    let forged_end = PodCommand::Ended {
        pod: pod.clone(),
        host_id: "host-b".into(),
        report: exit_report(Ending::Completed),
        cause: Cause::system(),
        defaults: DEFAULTS,
        jitter: 0.0,
    };
    assert_eq!(store.pod(forged_end).await.unwrap(), PodOutcome::NotOwner);
    let forged_phase = PodCommand::PhaseChanged {
        pod: pod.clone(),
        host_id: "host-b".into(),
        phase: Phase::Review,
        version: 9,
        message: String::new(),
        coalesced: 0,
    };
    assert_eq!(store.pod(forged_phase).await.unwrap(), PodOutcome::NotOwner);
    let forged_recovery = PodCommand::Recovered {
        pod: pod.clone(),
        pid: 1,
        started_at: 1,
        host_id: "host-b".into(),
    };
    assert_eq!(
        store.pod(forged_recovery).await.unwrap(),
        PodOutcome::NotOwner
    );
    // A made-up stale pod of this task on host-b: not recorded.
    let forged_fence = PodCommand::Fenced {
        pod: PodRef {
            pod_id: "made-up".into(),
            ..pod.clone()
        },
        host_id: "host-b".into(),
        reason: "stale".into(),
    };
    assert_eq!(store.pod(forged_fence).await.unwrap(), PodOutcome::NotOwner);
    let t = store.task(pod.task_id).await.unwrap().unwrap();
    assert_eq!(t.status, TaskStatus::Active);
    assert_eq!(t.pod_status, PodStatus::Running);
    assert_eq!(t.phase, Phase::SpecClarification);
    let q = EventsQuery {
        task_id: pod.task_id,
        after_version: 0,
        limit: 100,
        include_archived: false,
    };
    let types: Vec<String> = db
        .store
        .task_events(&q)
        .await
        .unwrap()
        .iter()
        .map(|e| e.event_type.clone())
        .collect();
    assert_eq!(types, ["task_created", "pod_started"]);

    // The owner's own report applies.
    let end = PodCommand::Ended {
        pod: pod.clone(),
        host_id: "host-a".into(),
        report: exit_report(Ending::Completed),
        cause: Cause::system(),
        defaults: DEFAULTS,
        jitter: 0.0,
    };
    assert!(matches!(
        store.pod(end).await.unwrap(),
        PodOutcome::Applied { .. }
    ));
    let t = store.task(pod.task_id).await.unwrap().unwrap();
    assert_eq!(t.status, TaskStatus::Completed);
    db.shutdown().await;
}

async fn a_refused_automatic_restart_stays_due(backend: Backend) {
    let db = AnyDb::open(backend).await;
    let store = &*db.store;
    let pod = running_on(store, "host-a").await;
    let retry_at = ipa_proto::time::now_micros() + 1_000_000;
    let abort = PodCommand::AbortStart {
        pod: pod.clone(),
        message: "refused".into(),
        retry_at: Some(retry_at),
        requeue: None,
    };
    // Not STARTING any more (it was started): ignored.
    assert_eq!(store.pod(abort).await.unwrap(), PodOutcome::Ignored);
    // A claim that the host then refuses.
    let end = PodCommand::Ended {
        pod: pod.clone(),
        host_id: "host-a".into(),
        report: exit_report(Ending::Stopped),
        cause: Cause::system(),
        defaults: DEFAULTS,
        jitter: 0.0,
    };
    store.pod(end).await.unwrap();
    let claim = PodCommand::Claim {
        task_id: pod.task_id,
        pod_id: "second".into(),
        host_id: "host-a".into(),
        cause: Cause::system(),
        automatic: false,
    };
    let PodOutcome::Claimed(c) = store.pod(claim).await.unwrap() else {
        panic!("claim")
    };
    let abort = PodCommand::AbortStart {
        pod: PodRef {
            task_id: pod.task_id,
            pod_id: "second".into(),
            generation: c.generation,
        },
        message: "refused".into(),
        retry_at: Some(retry_at),
        requeue: None,
    };
    assert_eq!(
        store.pod(abort).await.unwrap(),
        PodOutcome::Applied {
            restart_at: Some(retry_at)
        }
    );
    let t = store.task(pod.task_id).await.unwrap().unwrap();
    assert_eq!(t.status, TaskStatus::Inactive);
    assert_eq!(t.next_restart_at, Some(retry_at));
    assert_eq!(
        store.scheduled_restarts().await.unwrap(),
        vec![(pod.task_id, retry_at)]
    );
    db.shutdown().await;
}

async fn an_automatic_restart_is_not_claimed_before_it_is_due(backend: Backend) {
    // A restart timer left over from an earlier failure (a user's start
    // overtook that restart, then failed itself) must not start the task
    // before the new failure's backoff: its claim is refused until the
    // row's restart is due, whatever timer asks.
    let db = AnyDb::open(backend).await;
    let store = &*db.store;
    let mut task = new_task("t", "alice");
    task.restart_policy.max_restarts = Some(3);
    let pod = running_task(store, "host-a", task).await;
    let crash = PodCommand::Ended {
        pod: pod.clone(),
        host_id: "host-a".into(),
        report: exit_report(Ending::Crashed),
        cause: Cause::system(),
        defaults: DEFAULTS,
        jitter: 1.0,
    };
    let PodOutcome::Applied {
        restart_at: Some(at),
    } = store.pod(crash).await.unwrap()
    else {
        panic!("a restart is scheduled")
    };
    assert!(at > ipa_proto::time::now_micros(), "due in the future");
    let early = PodCommand::Claim {
        task_id: pod.task_id,
        pod_id: "early".into(),
        host_id: "host-a".into(),
        cause: Cause::system(),
        automatic: true,
    };
    assert_eq!(store.pod(early).await.unwrap(), PodOutcome::Ignored);
    let t = store.task(pod.task_id).await.unwrap().unwrap();
    assert_eq!(t.pod_status, PodStatus::Stopped);
    assert_eq!(t.next_restart_at, Some(at), "still due at its time");
    // A user's start is not held back by the backoff.
    let user = PodCommand::Claim {
        task_id: pod.task_id,
        pod_id: "user".into(),
        host_id: "host-a".into(),
        cause: Cause::system(),
        automatic: false,
    };
    assert!(matches!(
        store.pod(user).await.unwrap(),
        PodOutcome::Claimed(_)
    ));
    db.shutdown().await;
}

/// A task claimed on `host` (STARTING), its start not yet answered.
async fn starting_on(store: &dyn TaskStore, host: &str) -> PodRef {
    let (t, _) = create(store, new_task("t", "alice")).await.unwrap();
    let claim = PodCommand::Claim {
        task_id: t.task_id,
        pod_id: format!("pod-{}", t.task_id),
        host_id: host.into(),
        cause: Cause::system(),
        automatic: false,
    };
    let PodOutcome::Claimed(c) = store.pod(claim).await.unwrap() else {
        panic!("claim")
    };
    PodRef {
        task_id: t.task_id,
        pod_id: format!("pod-{}", t.task_id),
        generation: c.generation,
    }
}

async fn trail(store: &dyn TaskStore, pod: &PodRef) -> Vec<String> {
    let q = EventsQuery {
        task_id: pod.task_id,
        after_version: 0,
        limit: 100,
        include_archived: false,
    };
    let events = store.task_events(&q).await.unwrap();
    events.iter().map(|e| e.event_type.clone()).collect()
}

/// Found by scripts/chaos: a host that goes silent while a start is in
/// flight turns the STARTING row UNKNOWN; the pod did start, and the trail
/// must say `pod_started` (once) before it says `pod_recovered`.
async fn a_start_answered_while_its_host_is_unreachable_is_still_recorded_as_started(
    backend: Backend,
) {
    let db = AnyDb::open(backend).await;
    let store = &*db.store;
    // The StartPod answer arrives after the host went silent.
    let pod = starting_on(store, "host-a").await;
    let unreachable = PodCommand::HostUnreachable {
        host_id: "host-a".into(),
    };
    store.pod(unreachable.clone()).await.unwrap();
    let started = PodCommand::Started {
        pod: pod.clone(),
        pid: 42,
        started_at: 1,
        host_id: "host-a".into(),
        cause: Cause::system(),
    };
    assert!(matches!(
        store.pod(started.clone()).await.unwrap(),
        PodOutcome::Applied { .. }
    ));
    let t = store.task(pod.task_id).await.unwrap().unwrap();
    assert_eq!(t.pod_status, PodStatus::Unknown, "still silent");
    assert_eq!(store.pod(started).await.unwrap(), PodOutcome::Ignored);
    let recovered = PodCommand::Recovered {
        pod: pod.clone(),
        pid: 42,
        started_at: 1,
        host_id: "host-a".into(),
    };
    store.pod(recovered).await.unwrap();
    assert_eq!(
        trail(store, &pod).await,
        ["task_created", "pod_started", "pod_recovered"]
    );

    // The host comes back before the answer: its snapshot is the first
    // word of the pod, so the recovery records the start.
    let pod = starting_on(store, "host-b").await;
    let unreachable = PodCommand::HostUnreachable {
        host_id: "host-b".into(),
    };
    store.pod(unreachable).await.unwrap();
    let recovered = PodCommand::Recovered {
        pod: pod.clone(),
        pid: 43,
        started_at: 1,
        host_id: "host-b".into(),
    };
    store.pod(recovered).await.unwrap();
    let t = store.task(pod.task_id).await.unwrap().unwrap();
    assert_eq!(t.pod_status, PodStatus::Running);
    assert_eq!(trail(store, &pod).await, ["task_created", "pod_started"]);
    db.shutdown().await;
}

fn report(ending: Ending) -> EndReport {
    EndReport {
        ending,
        detail: serde_json::json!({}),
        message: String::new(),
        last_phase: None,
    }
}

async fn kinds(store: &dyn TaskStore, id: crate::domain::TaskId) -> Vec<String> {
    let events = store.events_after(0, Some(id), 100).await.unwrap();
    events.into_iter().map(|e| e.event_type).collect()
}

/// A crash schedules a restart (claimed automatically once due, counted
/// in `restart_count`); one crash too many in the window fails the task.
async fn crashes_schedule_restarts_until_one_too_many_fails_the_task(backend: Backend) {
    let db = AnyDb::open(backend).await;
    let store = &*db.store;
    let mut task = new_task("t", "alice");
    task.restart_policy.max_restarts = Some(1);
    let pod = running_task(store, "h", task).await;
    let id = pod.task_id;
    let crash = |pod: &PodRef| PodCommand::Ended {
        pod: pod.clone(),
        host_id: "h".into(),
        report: report(Ending::Crashed),
        cause: Cause::system(),
        defaults: DEFAULTS,
        jitter: 0.0,
    };
    let PodOutcome::Applied {
        restart_at: Some(at),
    } = store.pod(crash(&pod)).await.unwrap()
    else {
        panic!("a restart is scheduled")
    };
    let t = store.task(id).await.unwrap().unwrap();
    assert_eq!(
        (t.status, t.pod_status),
        (TaskStatus::Inactive, PodStatus::Stopped)
    );
    assert_eq!(store.scheduled_restarts().await.unwrap(), vec![(id, at)]);
    // The same report again: the row no longer has a live pod.
    assert_eq!(store.pod(crash(&pod)).await.unwrap(), PodOutcome::Ignored);
    // Due now: the automatic claim takes it.
    db.exec(&format!(
        "UPDATE tasks SET next_restart_at = 1 WHERE task_id = '{id}'"
    ))
    .await;
    let restart = PodCommand::Claim {
        task_id: id,
        pod_id: "second".into(),
        host_id: "h".into(),
        cause: Cause::system(),
        automatic: true,
    };
    let PodOutcome::Claimed(c) = store.pod(restart).await.unwrap() else {
        panic!("claim")
    };
    assert_eq!(c.generation, pod.generation + 1);
    let second = PodRef {
        task_id: id,
        pod_id: "second".into(),
        generation: c.generation,
    };
    let t = store.task(id).await.unwrap().unwrap();
    assert_eq!((t.restart_count, t.next_restart_at), (1, None));
    // The second crash (not confirmed started yet) is the one too many.
    assert_eq!(
        store.pod(crash(&second)).await.unwrap(),
        PodOutcome::Applied { restart_at: None }
    );
    let t = store.task(id).await.unwrap().unwrap();
    assert_eq!(t.status, TaskStatus::Failed);
    assert!(store.scheduled_restarts().await.unwrap().is_empty());
    assert_eq!(
        kinds(store, id).await,
        [
            "task_created",
            "pod_started",
            "pod_crashed",
            "restart_scheduled",
            "pod_started",
            "pod_crashed",
            "task_failed"
        ]
    );
    let events = store.events_after(0, Some(id), 100).await.unwrap();
    let failed: serde_json::Value = serde_json::from_str(&events[6].data_json).unwrap();
    assert_eq!(failed["crashes_in_window"], 2);
    // Both crashes are in the history; pruning counts what it removes.
    let prune = PodCommand::PruneCrashes {
        up_to: i64::MAX / 2,
    };
    assert_eq!(
        store.pod(prune.clone()).await.unwrap(),
        PodOutcome::Count(2)
    );
    assert_eq!(store.pod(prune).await.unwrap(), PodOutcome::Count(0));
    db.shutdown().await;
}

/// A running pod's phases, its host's silence and return, a stale pod of
/// the task fenced there, then its end: each applies once and only to the
/// current pod.
async fn phases_silence_recovery_fencing_and_the_end(backend: Backend) {
    let db = AnyDb::open(backend).await;
    let store = &*db.store;
    let pod = running_on(store, "h").await;
    let other = running_on(store, "other").await;
    let id = pod.task_id;
    let phase = PodCommand::PhaseChanged {
        pod: pod.clone(),
        host_id: "h".into(),
        phase: Phase::Planning,
        version: 2,
        message: "plan".into(),
        coalesced: 3,
    };
    assert_eq!(
        store.pod(phase.clone()).await.unwrap(),
        PodOutcome::Applied { restart_at: None }
    );
    assert_eq!(store.pod(phase).await.unwrap(), PodOutcome::Ignored);
    let t = store.task(id).await.unwrap().unwrap();
    assert_eq!((t.phase, t.live_version), (Phase::Planning, 2));
    let silent = PodCommand::HostUnreachable {
        host_id: "h".into(),
    };
    assert_eq!(
        store.pod(silent.clone()).await.unwrap(),
        PodOutcome::Count(1)
    );
    assert_eq!(store.pod(silent).await.unwrap(), PodOutcome::Count(0));
    assert_eq!(
        store.task(id).await.unwrap().unwrap().pod_status,
        PodStatus::Unknown
    );
    let other_t = store.task(other.task_id).await.unwrap().unwrap();
    assert_eq!(other_t.pod_status, PodStatus::Running, "another host's pod");
    let back = PodCommand::Recovered {
        pod: pod.clone(),
        pid: 43,
        started_at: 2,
        host_id: "h".into(),
    };
    assert_eq!(
        store.pod(back.clone()).await.unwrap(),
        PodOutcome::Applied { restart_at: None }
    );
    assert_eq!(store.pod(back).await.unwrap(), PodOutcome::Ignored);
    let t = store.task(id).await.unwrap().unwrap();
    assert_eq!(t.pod_status, PodStatus::Running);
    assert_eq!(t.pod.as_ref().map(|p| p.pid), Some(43));
    // An old generation of the task, killed on the host the row names.
    let stale = PodRef {
        pod_id: "old".into(),
        generation: 0,
        ..pod.clone()
    };
    let fence = PodCommand::Fenced {
        pod: stale,
        host_id: "h".into(),
        reason: "stale generation".into(),
    };
    assert_eq!(
        store.pod(fence).await.unwrap(),
        PodOutcome::Applied { restart_at: None }
    );
    let end = PodCommand::Ended {
        pod: pod.clone(),
        host_id: "h".into(),
        report: report(Ending::Stopped),
        cause: Cause::system(),
        defaults: DEFAULTS,
        jitter: 0.0,
    };
    assert_eq!(
        store.pod(end).await.unwrap(),
        PodOutcome::Applied { restart_at: None }
    );
    let t = store.task(id).await.unwrap().unwrap();
    assert_eq!(
        (t.status, t.pod_status, t.phase),
        (TaskStatus::Inactive, PodStatus::Stopped, Phase::Planning)
    );
    // A late start confirmation of the ended pod changes nothing.
    let late = PodCommand::Started {
        pod: pod.clone(),
        pid: 42,
        started_at: 1,
        host_id: "h".into(),
        cause: Cause::system(),
    };
    assert_eq!(store.pod(late).await.unwrap(), PodOutcome::Ignored);
    assert_eq!(
        kinds(store, id).await,
        [
            "task_created",
            "pod_started",
            "phase_changed",
            "pod_recovered",
            "pod_fenced",
            "pod_stopped"
        ]
    );
    let events = store.events_after(0, Some(id), 100).await.unwrap();
    let changed: serde_json::Value = serde_json::from_str(&events[2].data_json).unwrap();
    assert_eq!(
        (&changed["from"], &changed["to"], &changed["coalesced"]),
        (
            &serde_json::json!("spec_clarification"),
            &serde_json::json!("planning"),
            &serde_json::json!(3)
        )
    );
    db.shutdown().await;
}

on_both_backends!(
    reports_from_a_host_that_does_not_own_the_pod_change_nothing,
    a_refused_automatic_restart_stays_due,
    an_automatic_restart_is_not_claimed_before_it_is_due,
    a_start_answered_while_its_host_is_unreachable_is_still_recorded_as_started,
    crashes_schedule_restarts_until_one_too_many_fails_the_task,
    phases_silence_recovery_fencing_and_the_end,
);
