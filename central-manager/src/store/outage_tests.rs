//! Store tests for what issue 12 hardened: the circuit breaker against a
//! database that cannot be written (a lock held by another connection),
//! ownership checks of host reports, the crash-history window read and a
//! refused automatic restart staying due, and an automatic restart never
//! claimed before it is due.

use std::time::{Duration, Instant};

use sqlx::Connection;

use super::breaker::{OPEN_AFTER, PROBE_MAX};
use super::pods::{Cause, EndReport, PodCommand, PodOutcome, PodRef};
use super::tests::{TestDb, create, new_task};
use super::*;
use crate::domain::Ending;
use crate::domain::{Phase, PodStatus, RestartDefaults, TaskStatus};
use crate::error::Error;

const DEFAULTS: RestartDefaults = crate::domain::RestartPolicy {
    auto_restart: true,
    max_restarts: 3,
    window_seconds: 60,
    initial_backoff_ms: 1000,
    max_backoff_ms: 30_000,
};

/// Another connection holding the write lock until dropped.
struct Lock(sqlx::SqliteConnection);

impl Lock {
    async fn take(db: &TestDb) -> Self {
        let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.path().display()))
            .await
            .unwrap();
        sqlx::query("BEGIN EXCLUSIVE")
            .execute(&mut c)
            .await
            .unwrap();
        Self(c)
    }

    async fn release(mut self) {
        sqlx::query("ROLLBACK").execute(&mut self.0).await.unwrap();
        self.0.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_opens_fails_fast_and_closes_by_itself() {
    let busy = Duration::from_millis(300);
    let db = TestDb::open_with(EventHub::default(), busy).await;
    let (before, _) = create(&db.store, new_task("before", "alice"))
        .await
        .unwrap();
    let lock = Lock::take(&db).await;
    for _ in 0..OPEN_AFTER {
        assert!(!db.store.breaker().is_open());
        let e = create(&db.store, new_task("x", "a")).await.unwrap_err();
        assert!(matches!(e, Error::StoreUnavailable(_)), "{e:?}");
    }
    assert!(
        db.store.breaker().is_open(),
        "open after {OPEN_AFTER} failures"
    );
    // Open: refused without waiting for the busy timeout.
    let start = Instant::now();
    let e = create(&db.store, new_task("x", "a")).await.unwrap_err();
    assert!(matches!(e, Error::StoreUnavailable(_)), "{e:?}");
    assert!(start.elapsed() < busy / 2, "took {:?}", start.elapsed());
    assert!(db.store.ensure_writable().is_err());
    // Reads go on.
    assert!(db.store.task(before.task_id).await.unwrap().is_some());

    lock.release().await;
    let start = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), db.store.breaker().closed())
        .await
        .expect("the prober closes the breaker");
    // The probe delay is capped: back within about PROBE_MAX (+ slack for a
    // loaded machine).
    assert!(
        start.elapsed() < PROBE_MAX + Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    create(&db.store, new_task("after", "alice")).await.unwrap();
    db.shutdown().await;
}

/// Schedule and retention writes go through the same writer: refused at
/// once while the breaker is open, like every other command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_and_retention_writes_fail_fast_while_the_breaker_is_open() {
    use crate::domain::schedule::{ScheduleCommand, ScheduleId};
    use crate::domain::{ActorId, CorrelationId};
    use retention::RetentionWrite;
    use schedules::ScheduleWrite;

    let busy = Duration::from_millis(300);
    let db = TestDb::open_with(EventHub::default(), busy).await;
    let lock = Lock::take(&db).await;
    for _ in 0..OPEN_AFTER {
        let _ = create(&db.store, new_task("x", "a")).await;
    }
    assert!(db.store.breaker().is_open());
    let actor = ActorId::parse("alice").unwrap();
    let correlation = CorrelationId::parse_or_new("").unwrap();
    let start = Instant::now();
    let e = db
        .store
        .schedule(ScheduleWrite::Pause(ScheduleCommand {
            schedule_id: ScheduleId::new(),
            actor: actor.clone(),
            correlation: correlation.clone(),
        }))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::StoreUnavailable(_)), "{e:?}");
    let e = db
        .store
        .retention(RetentionWrite::StartArchiveRun {
            finished_before: 0,
            actor,
            correlation,
        })
        .await
        .unwrap_err();
    assert!(matches!(e, Error::StoreUnavailable(_)), "{e:?}");
    assert!(start.elapsed() < busy / 2, "took {:?}", start.elapsed());
    lock.release().await;
    db.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_cannot_be_written_at_start_opens_the_breaker_at_once() {
    let db = TestDb::open().await;
    let path = db.path();
    let dir = db.shutdown().await;
    // Reopen while another connection holds the lock: the start-up probe
    // fails, so health shows it before any command does.
    let side = {
        let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        sqlx::query("BEGIN EXCLUSIVE")
            .execute(&mut c)
            .await
            .unwrap();
        Lock(c)
    };
    let db = TestDb::open_in(dir, EventHub::default(), Duration::from_millis(100)).await;
    assert!(db.store.breaker().is_open());
    side.release().await;
    tokio::time::timeout(Duration::from_secs(10), db.store.breaker().closed())
        .await
        .expect("closes once writable");
    db.shutdown().await;
}

/// A task with a running pod on `host`.
async fn running_on(db: &TestDb, host: &str) -> PodRef {
    running_task(db, host, new_task("t", "alice")).await
}

/// `task` created, with a running pod on `host`.
async fn running_task(db: &TestDb, host: &str, task: crate::domain::NewTask) -> PodRef {
    let (t, _) = create(&db.store, task).await.unwrap();
    let claim = PodCommand::Claim {
        task_id: t.task_id,
        pod_id: format!("pod-{}", t.task_id),
        host_id: host.into(),
        cause: Cause::system(),
        automatic: false,
    };
    let PodOutcome::Claimed(c) = db.store.pod(claim).await.unwrap() else {
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
    db.store.pod(started).await.unwrap();
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

#[tokio::test]
async fn reports_from_a_host_that_does_not_own_the_pod_change_nothing() {
    let db = TestDb::open().await;
    let pod = running_on(&db, "host-a").await;
    let forged_end = PodCommand::Ended {
        pod: pod.clone(),
        host_id: "host-b".into(),
        report: exit_report(Ending::Completed),
        cause: Cause::system(),
        defaults: DEFAULTS,
        jitter: 0.0,
    };
    assert_eq!(
        db.store.pod(forged_end).await.unwrap(),
        PodOutcome::NotOwner
    );
    let forged_phase = PodCommand::PhaseChanged {
        pod: pod.clone(),
        host_id: "host-b".into(),
        phase: Phase::Review,
        version: 9,
        message: String::new(),
        coalesced: 0,
    };
    assert_eq!(
        db.store.pod(forged_phase).await.unwrap(),
        PodOutcome::NotOwner
    );
    let forged_recovery = PodCommand::Recovered {
        pod: pod.clone(),
        pid: 1,
        started_at: 1,
        host_id: "host-b".into(),
    };
    assert_eq!(
        db.store.pod(forged_recovery).await.unwrap(),
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
    assert_eq!(
        db.store.pod(forged_fence).await.unwrap(),
        PodOutcome::NotOwner
    );
    let t = db.store.task(pod.task_id).await.unwrap().unwrap();
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
        db.store.pod(end).await.unwrap(),
        PodOutcome::Applied { .. }
    ));
    let t = db.store.task(pod.task_id).await.unwrap().unwrap();
    assert_eq!(t.status, TaskStatus::Completed);
    db.shutdown().await;
}

#[tokio::test]
async fn a_refused_automatic_restart_stays_due() {
    let db = TestDb::open().await;
    let pod = running_on(&db, "host-a").await;
    let retry_at = ipa_proto::time::now_micros() + 1_000_000;
    let abort = PodCommand::AbortStart {
        pod: pod.clone(),
        message: "refused".into(),
        retry_at: Some(retry_at),
        requeue: None,
    };
    // Not STARTING any more (it was started): ignored.
    assert_eq!(db.store.pod(abort).await.unwrap(), PodOutcome::Ignored);
    // A claim that the host then refuses.
    let end = PodCommand::Ended {
        pod: pod.clone(),
        host_id: "host-a".into(),
        report: exit_report(Ending::Stopped),
        cause: Cause::system(),
        defaults: DEFAULTS,
        jitter: 0.0,
    };
    db.store.pod(end).await.unwrap();
    let claim = PodCommand::Claim {
        task_id: pod.task_id,
        pod_id: "second".into(),
        host_id: "host-a".into(),
        cause: Cause::system(),
        automatic: false,
    };
    let PodOutcome::Claimed(c) = db.store.pod(claim).await.unwrap() else {
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
        db.store.pod(abort).await.unwrap(),
        PodOutcome::Applied {
            restart_at: Some(retry_at)
        }
    );
    let t = db.store.task(pod.task_id).await.unwrap().unwrap();
    assert_eq!(t.status, TaskStatus::Inactive);
    assert_eq!(t.next_restart_at, Some(retry_at));
    assert_eq!(
        db.store.scheduled_restarts().await.unwrap(),
        vec![(pod.task_id, retry_at)]
    );
    db.shutdown().await;
}

#[tokio::test]
async fn an_automatic_restart_is_not_claimed_before_it_is_due() {
    // A restart timer left over from an earlier failure (a user's start
    // overtook that restart, then failed itself) must not start the task
    // before the new failure's backoff: its claim is refused until the
    // row's restart is due, whatever timer asks.
    let db = TestDb::open().await;
    let mut task = new_task("t", "alice");
    task.restart_policy.max_restarts = Some(3);
    let pod = running_task(&db, "host-a", task).await;
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
    } = db.store.pod(crash).await.unwrap()
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
    assert_eq!(db.store.pod(early).await.unwrap(), PodOutcome::Ignored);
    let t = db.store.task(pod.task_id).await.unwrap().unwrap();
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
        db.store.pod(user).await.unwrap(),
        PodOutcome::Claimed(_)
    ));
    db.shutdown().await;
}

#[tokio::test]
async fn crash_history_is_read_by_its_key_and_only_for_the_window() {
    let db = TestDb::open().await;
    let pod = running_on(&db, "host-a").await;
    let conn = DbConfig::new(db.path()).open_writer().unwrap();
    let plan: Vec<String> = conn
        .prepare(&format!(
            "EXPLAIN QUERY PLAN {}",
            pod_end::CRASHES_IN_WINDOW
        ))
        .unwrap()
        .query_map(rusqlite::params![pod.task_id.to_string(), 0, 0, 0], |r| {
            r.get::<_, String>(3)
        })
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    let plan = plan.join(" | ");
    assert!(
        plan.contains("USING PRIMARY KEY") && plan.contains("crashed_at>"),
        "{plan}"
    );
    // 2000 old crashes and 5 recent ones: only the window's are read, and
    // at most max_restarts + 1 of them.
    let id = pod.task_id.to_string();
    let now = 10_000_000_000_000i64;
    for i in 0..2000 {
        conn.execute(
            "INSERT INTO crash_history (task_id, crashed_at) VALUES (?, ?)",
            rusqlite::params![id, i],
        )
        .unwrap();
    }
    for i in 1..=5 {
        conn.execute(
            "INSERT INTO crash_history (task_id, crashed_at) VALUES (?, ?)",
            rusqlite::params![id, now - i * 1_000_000],
        )
        .unwrap();
    }
    let policy = crate::domain::RestartPolicy {
        max_restarts: 3,
        window_seconds: 60,
        ..DEFAULTS
    };
    let got = pod_end::crashes_in_window(&conn, &id, &policy, now).unwrap();
    assert_eq!(
        got,
        vec![
            now - 1_000_000,
            now - 2_000_000,
            now - 3_000_000,
            now - 4_000_000
        ]
    );
    drop(conn);
    db.shutdown().await;
}

/// A task claimed on `host` (STARTING), its start not yet answered.
async fn starting_on(db: &TestDb, host: &str) -> PodRef {
    let (t, _) = create(&db.store, new_task("t", "alice")).await.unwrap();
    let claim = PodCommand::Claim {
        task_id: t.task_id,
        pod_id: format!("pod-{}", t.task_id),
        host_id: host.into(),
        cause: Cause::system(),
        automatic: false,
    };
    let PodOutcome::Claimed(c) = db.store.pod(claim).await.unwrap() else {
        panic!("claim")
    };
    PodRef {
        task_id: t.task_id,
        pod_id: format!("pod-{}", t.task_id),
        generation: c.generation,
    }
}

async fn trail(db: &TestDb, pod: &PodRef) -> Vec<String> {
    let q = EventsQuery {
        task_id: pod.task_id,
        after_version: 0,
        limit: 100,
        include_archived: false,
    };
    let events = db.store.task_events(&q).await.unwrap();
    events.iter().map(|e| e.event_type.clone()).collect()
}

/// Found by scripts/chaos: a host that goes silent while a start is in
/// flight turns the STARTING row UNKNOWN; the pod did start, and the trail
/// must say `pod_started` (once) before it says `pod_recovered`.
#[tokio::test]
async fn a_start_answered_while_its_host_is_unreachable_is_still_recorded_as_started() {
    let db = TestDb::open().await;
    // The StartPod answer arrives after the host went silent.
    let pod = starting_on(&db, "host-a").await;
    let unreachable = PodCommand::HostUnreachable {
        host_id: "host-a".into(),
    };
    db.store.pod(unreachable.clone()).await.unwrap();
    let started = PodCommand::Started {
        pod: pod.clone(),
        pid: 42,
        started_at: 1,
        host_id: "host-a".into(),
        cause: Cause::system(),
    };
    assert!(matches!(
        db.store.pod(started.clone()).await.unwrap(),
        PodOutcome::Applied { .. }
    ));
    let t = db.store.task(pod.task_id).await.unwrap().unwrap();
    assert_eq!(t.pod_status, PodStatus::Unknown, "still silent");
    assert_eq!(db.store.pod(started).await.unwrap(), PodOutcome::Ignored);
    let recovered = PodCommand::Recovered {
        pod: pod.clone(),
        pid: 42,
        started_at: 1,
        host_id: "host-a".into(),
    };
    db.store.pod(recovered).await.unwrap();
    assert_eq!(
        trail(&db, &pod).await,
        ["task_created", "pod_started", "pod_recovered"]
    );

    // The host comes back before the answer: its snapshot is the first
    // word of the pod, so the recovery records the start.
    let pod = starting_on(&db, "host-b").await;
    let unreachable = PodCommand::HostUnreachable {
        host_id: "host-b".into(),
    };
    db.store.pod(unreachable).await.unwrap();
    let recovered = PodCommand::Recovered {
        pod: pod.clone(),
        pid: 43,
        started_at: 1,
        host_id: "host-b".into(),
    };
    db.store.pod(recovered).await.unwrap();
    let t = db.store.task(pod.task_id).await.unwrap().unwrap();
    assert_eq!(t.pod_status, PodStatus::Running);
    assert_eq!(trail(&db, &pod).await, ["task_created", "pod_started"]);
    db.shutdown().await;
}
