//! Schedule writes on SQLite and on PostgreSQL (listed in
//! [`on_both_backends!`] at the end): fires and their tasks commit
//! together, each fire time makes at most one task, and the overlap,
//! catch-up, pause and delete rules as the writer applies them.

use super::*;
use crate::domain::schedule::{Overlap, ScheduleName, ScheduleTask, Timetable};
use crate::domain::{
    CorrelationId, Description, EventsQuery, RestartPolicySpec, TaskRecord, TaskStatus,
    TemplateName, Title,
};
use crate::store::tests::{AnyDb, Backend, on_both_backends};

/// A store on either backend, seen through the schedule port.
struct Db {
    any: AnyDb,
    store: std::sync::Arc<dyn ScheduleStore>,
}

impl Db {
    async fn open(backend: Backend) -> Self {
        let any = AnyDb::open(backend).await;
        let store = any.schedules();
        Self { any, store }
    }

    async fn shutdown(self) {
        drop(self.store);
        self.any.shutdown().await;
    }
}

const S: i64 = 1_000_000;
/// A whole minute, so interval fire times are easy to write.
const T0: i64 = 1_700_000_040 * S;

fn new_schedule(name: &str, every: u64, overlap: Overlap) -> NewSchedule {
    NewSchedule {
        name: ScheduleName::parse(name).unwrap(),
        timetable: Timetable::parse("", every, "").unwrap(),
        task: ScheduleTask::new(
            Title::parse("nightly").unwrap(),
            Description::parse("d").unwrap(),
            Metadata::parse([("team".to_owned(), "web".to_owned())].into()).unwrap(),
            TemplateName::parse("").unwrap(),
            RestartPolicySpec::default(),
        )
        .unwrap(),
        overlap,
        catchup_window_seconds: 0,
        paused: false,
        actor: ActorId::parse("alice").unwrap(),
        correlation: CorrelationId::parse_or_new("c-1").unwrap(),
    }
}

async fn create_at(db: &Db, s: NewSchedule, now: i64) -> Result<ScheduleRecord> {
    match db
        .store
        .schedule(ScheduleWrite::Create {
            schedule_id: ScheduleId::new(),
            schedule: Box::new(s),
            now,
        })
        .await?
    {
        ScheduleOutcome::Schedule(s) => Ok(*s),
        other => panic!("{other:?}"),
    }
}

fn fire_cmd(id: ScheduleId, kind: FireKind, now: i64) -> ScheduleWrite {
    ScheduleWrite::Fire(Box::new(Fire {
        schedule_id: id,
        kind,
        now,
        task_id: TaskId::new(),
        actor: ActorId::system(),
        correlation: CorrelationId::parse_or_new("").unwrap(),
        pod_message: String::new(),
    }))
}

async fn fire(db: &Db, id: ScheduleId, kind: FireKind, now: i64) -> FireOutcome {
    match db.store.schedule(fire_cmd(id, kind, now)).await.unwrap() {
        ScheduleOutcome::Fired(o) => o,
        other => panic!("{other:?}"),
    }
}

async fn get(db: &Db, id: ScheduleId) -> ScheduleRecord {
    db.store
        .get_schedule(&ScheduleKey::Id(id))
        .await
        .unwrap()
        .unwrap()
}

fn started(o: FireOutcome) -> TaskRecord {
    match o {
        FireOutcome::Started { task, .. } => *task,
        other => panic!("expected a task, got {other:?}"),
    }
}

async fn complete(db: &Db, id: TaskId) {
    db.store
        .write(Command::Finish {
            task_id: id,
            finish: Finish::Complete,
            actor: ActorId::parse("bob").unwrap(),
            correlation: CorrelationId::parse_or_new("").unwrap(),
            reason: None,
        })
        .await
        .unwrap();
}

async fn create_computes_the_first_fire_and_names_are_unique(backend: Backend) {
    let db = Db::open(backend).await;
    let s = create_at(&db, new_schedule("every-min", 60, Overlap::Skip), T0 + 1)
        .await
        .unwrap();
    assert_eq!(s.next_fire_at, Some(T0 + 60 * S));
    assert_eq!((s.fired_count, s.skipped_count), (0, 0));
    assert_eq!(s.created_by, "alice");
    let again = create_at(&db, new_schedule("every-min", 30, Overlap::Skip), T0).await;
    assert!(matches!(again, Err(Error::NameTaken(n)) if n == "every-min"));
    let by_name = db
        .store
        .get_schedule(&ScheduleKey::Name("every-min".into()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_name, s);
    let mut paused = new_schedule("paused", 60, Overlap::Skip);
    paused.paused = true;
    let p = create_at(&db, paused, T0).await.unwrap();
    assert_eq!(p.next_fire_at, None);
    let trail = db
        .store
        .schedule_events(s.schedule_id, 0, 10)
        .await
        .unwrap();
    assert_eq!(trail.len(), 1);
    assert_eq!(trail[0].event_type, "schedule_created");
    assert_eq!(
        (trail[0].actor_id.as_str(), trail[0].correlation_id.as_str()),
        ("alice", "c-1")
    );
    db.shutdown().await;
}

async fn a_fire_makes_one_task_with_the_schedule_keys_and_advances(backend: Backend) {
    let db = Db::open(backend).await;
    let s = create_at(&db, new_schedule("s", 60, Overlap::AllowAll), T0)
        .await
        .unwrap();
    let at = T0 + 60 * S;
    let task = started(fire(&db, s.schedule_id, FireKind::Due { at }, at + 3_000).await);
    let meta = task.metadata.entries();
    assert_eq!(meta[META_SCHEDULE_ID], s.schedule_id.to_string());
    assert_eq!(meta[META_SCHEDULED_FOR], "2023-11-14T22:15:00Z");
    assert_eq!(meta["team"], "web");
    assert_eq!(task.created_by, "system");
    let after = get(&db, s.schedule_id).await;
    assert_eq!(after.next_fire_at, Some(at + 60 * S));
    assert_eq!(after.last_fire_at, Some(at));
    assert_eq!(after.last_task_id, Some(task.task_id));
    assert_eq!(after.fired_count, 1);

    // The same fire time again (a retry after a crash, a duplicate timer)
    // makes nothing.
    assert_eq!(
        fire(&db, s.schedule_id, FireKind::Due { at }, at + 5_000).await,
        FireOutcome::Stale
    );
    let filter = crate::domain::TaskFilter::default();
    assert_eq!(db.store.count_tasks(&filter).await.unwrap(), 1);
    // The metadata rows were written with the task.
    let sql = format!(
        "SELECT COUNT(*) FROM task_metadata WHERE key = 'ipa.schedule_id' AND value = '{}'",
        s.schedule_id
    );
    assert_eq!(db.any.query_i64(&sql).await, Some(1));
    db.shutdown().await;
}

async fn skip_counts_and_waits_for_the_previous_to_end(backend: Backend) {
    let db = Db::open(backend).await;
    let s = create_at(&db, new_schedule("s", 10, Overlap::Skip), T0)
        .await
        .unwrap();
    let t1 = T0 + 10 * S;
    let first = started(fire(&db, s.schedule_id, FireKind::Due { at: t1 }, t1).await);
    let t2 = t1 + 10 * S;
    assert_eq!(
        fire(&db, s.schedule_id, FireKind::Due { at: t2 }, t2).await,
        FireOutcome::Skipped
    );
    let after = get(&db, s.schedule_id).await;
    assert_eq!((after.fired_count, after.skipped_count), (1, 1));
    assert_eq!(after.next_fire_at, Some(t2 + 10 * S));
    complete(&db, first.task_id).await;
    let t3 = t2 + 10 * S;
    started(fire(&db, s.schedule_id, FireKind::Due { at: t3 }, t3).await);
    db.shutdown().await;
}

async fn buffer_one_keeps_one_fire_for_when_the_previous_ends(backend: Backend) {
    let db = Db::open(backend).await;
    let s = create_at(&db, new_schedule("s", 10, Overlap::BufferOne), T0)
        .await
        .unwrap();
    let t1 = T0 + 10 * S;
    let first = started(fire(&db, s.schedule_id, FireKind::Due { at: t1 }, t1).await);
    let t2 = t1 + 10 * S;
    assert_eq!(
        fire(&db, s.schedule_id, FireKind::Due { at: t2 }, t2).await,
        FireOutcome::Buffered {
            previous: first.task_id
        }
    );
    // A second fire while one waits is dropped.
    let t3 = t2 + 10 * S;
    assert_eq!(
        fire(&db, s.schedule_id, FireKind::Due { at: t3 }, t3).await,
        FireOutcome::Skipped
    );
    // The buffered fire cannot start while the previous runs.
    assert_eq!(
        fire(&db, s.schedule_id, FireKind::Buffered, t3).await,
        FireOutcome::Stale
    );
    complete(&db, first.task_id).await;
    let second = started(fire(&db, s.schedule_id, FireKind::Buffered, t3 + S).await);
    assert_eq!(second.metadata.entries()[META_SCHEDULED_FOR], rfc3339(t2));
    let after = get(&db, s.schedule_id).await;
    assert_eq!((after.fired_count, after.skipped_count), (2, 1));
    assert_eq!(after.buffered_fire_at, None);
    assert_eq!(after.last_task_id, Some(second.task_id));
    db.shutdown().await;
}

async fn a_buffer_superseded_by_the_next_fire_is_a_skip_in_the_trail(backend: Backend) {
    let db = Db::open(backend).await;
    let s = create_at(&db, new_schedule("s", 10, Overlap::BufferOne), T0)
        .await
        .unwrap();
    let id = s.schedule_id;
    let t1 = T0 + 10 * S;
    let first = started(fire(&db, id, FireKind::Due { at: t1 }, t1).await);
    let t2 = t1 + 10 * S;
    assert!(matches!(
        fire(&db, id, FireKind::Due { at: t2 }, t2).await,
        FireOutcome::Buffered { .. }
    ));
    // The previous task ends, but the next timetable fire comes before
    // the buffered one is started: it gives way.
    complete(&db, first.task_id).await;
    let t3 = t2 + 10 * S;
    let third = started(fire(&db, id, FireKind::Due { at: t3 }, t3).await);
    assert_eq!(third.metadata.entries()[META_SCHEDULED_FOR], rfc3339(t3));
    let after = get(&db, id).await;
    assert_eq!((after.fired_count, after.skipped_count), (2, 1));
    assert_eq!(after.buffered_fire_at, None);
    // The skip is in the audit trail, as every skipped fire time is
    // (found by the simulator: the count had no event).
    let skipped: Vec<_> = db
        .store
        .schedule_events(id, 0, 20)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event_type == "schedule_skipped")
        .collect();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    let data: serde_json::Value = serde_json::from_str(&skipped[0].data_json).unwrap();
    assert_eq!(data["reason"], "superseded");
    assert_eq!(data["count"], 1);
    assert_eq!(data["scheduled_for"], rfc3339(t2).as_str());
    db.shutdown().await;
}

async fn cancel_previous_cancels_as_system_then_starts(backend: Backend) {
    let db = Db::open(backend).await;
    let s = create_at(&db, new_schedule("s", 10, Overlap::CancelPrevious), T0)
        .await
        .unwrap();
    let t1 = T0 + 10 * S;
    let first = started(fire(&db, s.schedule_id, FireKind::Due { at: t1 }, t1).await);
    let t2 = t1 + 10 * S;
    let second = started(fire(&db, s.schedule_id, FireKind::Due { at: t2 }, t2).await);
    let old = db.store.task(first.task_id).await.unwrap().unwrap();
    assert_eq!(old.status, TaskStatus::Cancelled);
    let trail = db
        .store
        .task_events(&EventsQuery {
            task_id: first.task_id,
            after_version: 0,
            limit: 10,
            include_archived: false,
        })
        .await
        .unwrap();
    let last = trail.last().unwrap();
    assert_eq!(last.event_type, "task_cancelled");
    assert_eq!(last.actor_id, "system");
    assert!(
        last.data_json.contains("CANCEL_PREVIOUS"),
        "{}",
        last.data_json
    );
    assert_eq!(
        db.store.task(second.task_id).await.unwrap().unwrap().status,
        TaskStatus::Inactive
    );
    db.shutdown().await;
}

async fn allow_all_starts_alongside(backend: Backend) {
    let db = Db::open(backend).await;
    let s = create_at(&db, new_schedule("s", 10, Overlap::AllowAll), T0)
        .await
        .unwrap();
    for k in 1..=3 {
        let at = T0 + k * 10 * S;
        started(fire(&db, s.schedule_id, FireKind::Due { at }, at).await);
    }
    assert_eq!(get(&db, s.schedule_id).await.fired_count, 3);
    db.shutdown().await;
}

async fn missed_fires_are_counted_and_the_schedule_moves_on(backend: Backend) {
    let db = Db::open(backend).await;
    let mut n = new_schedule("s", 10, Overlap::AllowAll);
    n.catchup_window_seconds = 30;
    let s = create_at(&db, n, T0).await.unwrap();
    let t1 = T0 + 10 * S;
    // Down for 100 s: fire times t1 .. t1+60 are older than 30 s.
    let now = t1 + 100 * S;
    assert_eq!(
        fire(&db, s.schedule_id, FireKind::Due { at: t1 }, now).await,
        FireOutcome::Missed { count: 7 }
    );
    let after = get(&db, s.schedule_id).await;
    assert_eq!(after.skipped_count, 7);
    assert_eq!(after.next_fire_at, Some(t1 + 70 * S));
    // The ones inside the window fire, one after the other.
    for k in 7..=10 {
        let at = t1 + k * 10 * S;
        started(fire(&db, s.schedule_id, FireKind::Due { at }, now).await);
    }
    assert_eq!(get(&db, s.schedule_id).await.fired_count, 4);
    db.shutdown().await;
}

async fn pause_stops_fires_and_drops_the_buffer_resume_starts_after_now(backend: Backend) {
    let db = Db::open(backend).await;
    let s = create_at(&db, new_schedule("s", 10, Overlap::BufferOne), T0)
        .await
        .unwrap();
    let id = s.schedule_id;
    let t1 = T0 + 10 * S;
    let first = started(fire(&db, id, FireKind::Due { at: t1 }, t1).await);
    let t2 = t1 + 10 * S;
    assert!(matches!(
        fire(&db, id, FireKind::Due { at: t2 }, t2).await,
        FireOutcome::Buffered { .. }
    ));
    let cmd = ScheduleCommand {
        schedule_id: id,
        actor: ActorId::parse("carol").unwrap(),
        correlation: CorrelationId::parse_or_new("p").unwrap(),
    };
    let paused = match db
        .store
        .schedule(ScheduleWrite::Pause(cmd.clone()))
        .await
        .unwrap()
    {
        ScheduleOutcome::Schedule(s) => *s,
        other => panic!("{other:?}"),
    };
    assert!(paused.paused);
    assert_eq!(paused.next_fire_at, None);
    assert_eq!(paused.buffered_fire_at, None);
    assert_eq!(paused.skipped_count, 1);
    // The timer's fire for the old time is stale now.
    let t3 = t2 + 10 * S;
    assert_eq!(
        fire(&db, id, FireKind::Due { at: t3 }, t3).await,
        FireOutcome::Stale
    );
    // Trigger still works while paused (it is an explicit request; the
    // overlap rules apply).
    complete(&db, first.task_id).await;
    started(fire(&db, id, FireKind::Trigger, t3).await);
    let later = t3 + 1_234 * S + 5;
    let resumed = match db
        .store
        .schedule(ScheduleWrite::Resume { cmd, now: later })
        .await
        .unwrap()
    {
        ScheduleOutcome::Schedule(s) => *s,
        other => panic!("{other:?}"),
    };
    assert!(!resumed.paused);
    assert_eq!(resumed.next_fire_at, Some((later / (10 * S) + 1) * 10 * S));
    let kinds: Vec<_> = db
        .store
        .schedule_events(id, 0, 20)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_type)
        .collect();
    assert_eq!(
        kinds,
        [
            "schedule_created",
            "schedule_fired",
            "schedule_buffered",
            "schedule_skipped",
            "schedule_paused",
            "schedule_fired",
            "schedule_resumed"
        ]
    );
    db.shutdown().await;
}

async fn delete_removes_the_schedule_not_its_tasks_or_trail(backend: Backend) {
    let db = Db::open(backend).await;
    let s = create_at(&db, new_schedule("s", 10, Overlap::Skip), T0)
        .await
        .unwrap();
    let t1 = T0 + 10 * S;
    let task = started(fire(&db, s.schedule_id, FireKind::Due { at: t1 }, t1).await);
    let cmd = ScheduleCommand {
        schedule_id: s.schedule_id,
        actor: ActorId::parse("alice").unwrap(),
        correlation: CorrelationId::parse_or_new("").unwrap(),
    };
    assert_eq!(
        db.store
            .schedule(ScheduleWrite::Delete(cmd.clone()))
            .await
            .unwrap(),
        ScheduleOutcome::Deleted
    );
    assert!(
        db.store
            .get_schedule(&ScheduleKey::Id(s.schedule_id))
            .await
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        db.store.schedule(ScheduleWrite::Delete(cmd)).await,
        Err(Error::ScheduleNotFound(_))
    ));
    assert!(db.store.task(task.task_id).await.unwrap().is_some());
    let trail = db
        .store
        .schedule_events(s.schedule_id, 0, 10)
        .await
        .unwrap();
    assert_eq!(trail.last().unwrap().event_type, "schedule_deleted");
    // The name is free again.
    create_at(&db, new_schedule("s", 10, Overlap::Skip), T0)
        .await
        .unwrap();
    db.shutdown().await;
}

async fn fired_tasks_never_started_are_found_for_recovery(backend: Backend) {
    let db = Db::open(backend).await;
    let s = create_at(&db, new_schedule("s", 10, Overlap::AllowAll), T0)
        .await
        .unwrap();
    let at = T0 + 10 * S;
    let task = started(fire(&db, s.schedule_id, FireKind::Due { at }, at).await);
    assert_eq!(
        db.store.unstarted_fires(0).await.unwrap(),
        vec![task.task_id]
    );
    complete(&db, task.task_id).await;
    assert!(db.store.unstarted_fires(0).await.unwrap().is_empty());
    db.shutdown().await;
}

on_both_backends!(
    create_computes_the_first_fire_and_names_are_unique,
    a_fire_makes_one_task_with_the_schedule_keys_and_advances,
    skip_counts_and_waits_for_the_previous_to_end,
    buffer_one_keeps_one_fire_for_when_the_previous_ends,
    a_buffer_superseded_by_the_next_fire_is_a_skip_in_the_trail,
    cancel_previous_cancels_as_system_then_starts,
    allow_all_starts_alongside,
    missed_fires_are_counted_and_the_schedule_moves_on,
    pause_stops_fires_and_drops_the_buffer_resume_starts_after_now,
    delete_removes_the_schedule_not_its_tasks_or_trail,
    fired_tasks_never_started_are_found_for_recovery,
);
