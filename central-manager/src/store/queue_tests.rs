//! The queue's rows: order, positions, the conditional writes and how the
//! claim and the other transitions treat a queue entry.

use super::pods::{Cause, PodCommand, PodOutcome, PodRef};
use super::tests::{TestDb, create, new_task};
use super::*;
use crate::core::ports::TaskStore;
use crate::core::ports::queue::{QueueOutcome, QueueWrite};
use crate::domain::{Finish, PodStatus, Priority, TaskId, TaskStatus};
use crate::error::Error;
use rusqlite::OptionalExtension;

async fn task(db: &TestDb, p: Priority, template: &str) -> TaskId {
    let mut t = new_task("queued", "alice");
    t.priority = p;
    t.template = crate::domain::TemplateName::parse(template).unwrap();
    t.queue_timeout_seconds = Some(5);
    create(&db.store, t).await.unwrap().0.task_id
}

async fn write(db: &TestDb, w: QueueWrite) -> Result<QueueOutcome, Error> {
    match db.store.write(Command::Queue(w)).await? {
        Outcome::Queue(o) => Ok(o),
        other => panic!("{other:?}"),
    }
}

async fn enqueue(db: &TestDb, id: TaskId) -> QueueOutcome {
    let w = QueueWrite::Enqueue {
        task_id: id,
        cause: Cause::system(),
        message: "no room".into(),
    };
    write(db, w).await.unwrap()
}

async fn position(db: &TestDb, id: TaskId) -> u32 {
    let t = db.store.task(id).await.unwrap().unwrap();
    t.queue.map_or(0, |q| q.position)
}

#[tokio::test]
async fn the_order_is_priority_then_first_queued_per_template() {
    let db = TestDb::open().await;
    let low = task(&db, Priority::Low, "a").await;
    let med1 = task(&db, Priority::Medium, "a").await;
    let crit = task(&db, Priority::Critical, "a").await;
    let med2 = task(&db, Priority::Medium, "a").await;
    let other = task(&db, Priority::Low, "b").await;
    for id in [low, med1, crit, med2, other] {
        assert_eq!(
            enqueue(&db, id).await,
            QueueOutcome::Queued { already: false }
        );
    }
    // Again: stays where it is.
    assert_eq!(
        enqueue(&db, med1).await,
        QueueOutcome::Queued { already: true }
    );
    let t = db.store.task(med1).await.unwrap().unwrap();
    assert_eq!(t.pod_status, PodStatus::Queued);
    assert_eq!(t.status, TaskStatus::Active);
    for (id, want) in [(crit, 1), (med1, 2), (med2, 3), (low, 4), (other, 1)] {
        assert_eq!(position(&db, id).await, want, "{id}");
    }
    let head = db.store.queue_head("a").await.unwrap().unwrap();
    assert_eq!((head.task_id, head.priority), (crit, Priority::Critical));
    let heads = db.store.queue_heads().await.unwrap();
    let names: Vec<_> = heads.iter().map(|(t, h)| (t.as_str(), h.task_id)).collect();
    assert_eq!(names, [("a", crit), ("b", other)]);
    let stats = db.store.queue_stats().await.unwrap();
    assert_eq!(
        stats.depth,
        [
            (Priority::Low, 2),
            (Priority::Medium, 2),
            (Priority::High, 0),
            (Priority::Critical, 1)
        ]
    );
    assert!(stats.oldest_queued_at.is_some());
    // Filters see QUEUED, and STOPPED excludes queued rows.
    let f = crate::domain::TaskFilter {
        pod_status: Some(PodStatus::Queued),
        ..Default::default()
    };
    assert_eq!(db.store.count_tasks(&f).await.unwrap(), 5);
    let f = crate::domain::TaskFilter {
        pod_status: Some(PodStatus::Stopped),
        ..Default::default()
    };
    assert_eq!(db.store.count_tasks(&f).await.unwrap(), 0);
    let f = crate::domain::TaskFilter {
        priority: Some(Priority::Medium),
        ..Default::default()
    };
    assert_eq!(db.store.count_tasks(&f).await.unwrap(), 2);
}

#[tokio::test]
async fn a_claim_takes_the_head_and_a_refused_start_puts_it_back() {
    let db = TestDb::open().await;
    let a = task(&db, Priority::High, "a").await;
    let b = task(&db, Priority::High, "a").await;
    enqueue(&db, a).await;
    enqueue(&db, b).await;
    let claim = PodCommand::Claim {
        task_id: a,
        pod_id: "p1".into(),
        host_id: "h".into(),
        cause: Cause::system(),
        automatic: false,
    };
    let PodOutcome::Claimed(c) = db.store.pod(claim).await.unwrap() else {
        panic!("claim")
    };
    let entry = c.queued.expect("the claim names the entry it took");
    assert_eq!(position(&db, b).await, 1);
    assert_eq!(
        db.store.task(a).await.unwrap().unwrap().pod_status,
        PodStatus::Starting
    );
    // A second claim (StartPod racing the dispatcher) loses.
    let second = PodCommand::Claim {
        task_id: a,
        pod_id: "p2".into(),
        host_id: "h".into(),
        cause: Cause::system(),
        automatic: false,
    };
    assert!(matches!(
        db.store.pod(second).await,
        Err(Error::AlreadyStarted(_))
    ));
    let abort = PodCommand::AbortStart {
        pod: PodRef {
            task_id: a,
            pod_id: "p1".into(),
            generation: c.generation,
        },
        message: "refused".into(),
        retry_at: None,
        requeue: Some(entry),
    };
    db.store.pod(abort).await.unwrap();
    let t = db.store.task(a).await.unwrap().unwrap();
    assert_eq!(t.pod_status, PodStatus::Queued);
    assert_eq!(t.queue.unwrap().position, 1, "back in its old place");
    assert_eq!(position(&db, b).await, 2);
}

#[tokio::test]
async fn unqueue_expiry_and_finish_take_a_task_out() {
    let db = TestDb::open().await;
    let a = task(&db, Priority::Medium, "a").await;
    let b = task(&db, Priority::Medium, "a").await;
    let c = task(&db, Priority::Medium, "a").await;
    for id in [a, b, c] {
        enqueue(&db, id).await;
    }
    let unqueue = |id| QueueWrite::Unqueue {
        task_id: id,
        cause: Cause::system(),
        reason: "no".into(),
    };
    assert_eq!(write(&db, unqueue(a)).await.unwrap(), QueueOutcome::Removed);
    assert_eq!(
        write(&db, unqueue(a)).await.unwrap(),
        QueueOutcome::NotQueued
    );
    let t = db.store.task(a).await.unwrap().unwrap();
    assert_eq!(
        (t.status, t.pod_status),
        (TaskStatus::Inactive, PodStatus::Stopped)
    );
    // Expiry: only the entry the timer saw, only once due.
    let entry = db.store.task(b).await.unwrap().unwrap().queue.unwrap();
    let expire = |seq| QueueWrite::Expire { task_id: b, seq };
    assert_eq!(
        write(&db, expire(entry.seq + 1)).await.unwrap(),
        QueueOutcome::NotQueued
    );
    assert_eq!(
        write(&db, expire(entry.seq)).await.unwrap(),
        QueueOutcome::NotQueued,
        "not due before its timeout"
    );
    let timers = db
        .store
        .due_timers(entry.queued_at + 5_000_000, 10)
        .await
        .unwrap();
    assert!(
        timers.iter().any(|t| matches!(t,
            crate::domain::timeout::Timer::QueueExpiry { task_id, seq, .. }
                if *task_id == b && *seq == entry.seq)),
        "{timers:?}"
    );
    let finish = Command::Finish {
        task_id: c,
        finish: Finish::Cancel,
        actor: crate::domain::ActorId::parse("alice").unwrap(),
        correlation: crate::domain::CorrelationId::parse_or_new("").unwrap(),
        reason: Some("no".into()),
    };
    let Outcome::Finished { stop_pod } = db.store.write(finish).await.unwrap() else {
        panic!("finish")
    };
    assert!(stop_pod.is_none(), "a queued task has no pod to stop");
    let t = db.store.task(c).await.unwrap().unwrap();
    assert_eq!(t.pod_status, PodStatus::Stopped);
    assert!(t.queue.is_none());
    assert_eq!(db.store.queue_head("a").await.unwrap().unwrap().task_id, b);
}

#[tokio::test]
async fn positions_from_the_bucket_counts_equal_a_plain_count() {
    let db = TestDb::open().await;
    let priorities = [
        Priority::Low,
        Priority::Critical,
        Priority::Medium,
        Priority::High,
    ];
    let mut ids = Vec::new();
    for i in 0..40 {
        let id = task(&db, priorities[i % 4], if i % 5 == 0 { "b" } else { "a" }).await;
        enqueue(&db, id).await;
        ids.push(id);
    }
    // Spread the entries over many buckets of 1,024 sequence numbers
    // (the triggers move their counts), some sharing a bucket, as a long
    // queue's would be; then take a few out of the middle.
    let conn = rusqlite::Connection::open(db.path()).unwrap();
    for (i, id) in ids.iter().enumerate() {
        let seq = 500 + (i as i64 / 3) * 1_000 + (i as i64 % 3) * 7;
        conn.execute(
            "UPDATE tasks SET queued_seq = ? WHERE task_id = ?",
            rusqlite::params![seq, id.to_string()],
        )
        .unwrap();
    }
    for id in [ids[3], ids[17], ids[30]] {
        let w = QueueWrite::Unqueue {
            task_id: id,
            cause: Cause::system(),
            reason: "test".into(),
        };
        assert_eq!(write(&db, w).await.unwrap(), QueueOutcome::Removed);
    }
    let mut checked = 0;
    for id in &ids {
        let plain: Option<i64> = conn
            .query_row(
                "SELECT 1 + (SELECT COUNT(*) FROM tasks o WHERE o.template = t.template \
                 AND o.queued_seq IS NOT NULL AND (o.priority > t.priority OR \
                 (o.priority = t.priority AND o.queued_seq < t.queued_seq))) \
                 FROM tasks t WHERE t.task_id = ? AND t.queued_seq IS NOT NULL",
                [id.to_string()],
                |r| r.get(0),
            )
            .optional()
            .unwrap();
        let got = position(&db, *id).await;
        assert_eq!(i64::from(got), plain.unwrap_or(0), "{id}");
        checked += usize::from(plain.is_some());
    }
    assert_eq!(checked, 37);
    // The counts per priority agree as well.
    let stats = db.store.queue_stats().await.unwrap();
    let total: u64 = stats.depth.iter().map(|(_, n)| n).sum();
    assert_eq!(total, 37);
}
