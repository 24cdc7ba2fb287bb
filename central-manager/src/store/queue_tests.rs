//! The queue's rows: order, positions, the conditional writes and how the
//! claim and the other transitions treat a queue entry, on SQLite and on
//! PostgreSQL through the store port (listed in [`on_both_backends!`] at
//! the end).

use super::pods::{Cause, PodCommand, PodOutcome, PodRef};
use super::tests::{AnyDb, Backend, create, new_task, on_both_backends};
use super::*;
use crate::core::ports::TaskStore;
use crate::core::ports::queue::{QueueOutcome, QueueWrite};
use crate::domain::{Finish, PodStatus, Priority, TaskId, TaskStatus};
use crate::error::Error;

async fn task(store: &dyn TaskStore, p: Priority, template: &str) -> TaskId {
    let mut t = new_task("queued", "alice");
    t.priority = p;
    t.template = crate::domain::TemplateName::parse(template).unwrap();
    t.queue_timeout_seconds = Some(5);
    create(store, t).await.unwrap().0.task_id
}

async fn write(store: &dyn TaskStore, w: QueueWrite) -> Result<QueueOutcome, Error> {
    match store.write(Command::Queue(w)).await? {
        Outcome::Queue(o) => Ok(o),
        other => panic!("{other:?}"),
    }
}

async fn enqueue(store: &dyn TaskStore, id: TaskId) -> QueueOutcome {
    let w = QueueWrite::Enqueue {
        task_id: id,
        cause: Cause::system(),
        message: "no room".into(),
    };
    write(store, w).await.unwrap()
}

async fn position(store: &dyn TaskStore, id: TaskId) -> u32 {
    let t = store.task(id).await.unwrap().unwrap();
    t.queue.map_or(0, |q| q.position)
}

async fn the_order_is_priority_then_first_queued_per_template(backend: Backend) {
    let db = AnyDb::open(backend).await;
    let store = &*db.store;
    let low = task(store, Priority::Low, "a").await;
    let med1 = task(store, Priority::Medium, "a").await;
    let crit = task(store, Priority::Critical, "a").await;
    let med2 = task(store, Priority::Medium, "a").await;
    let other = task(store, Priority::Low, "b").await;
    for id in [low, med1, crit, med2, other] {
        assert_eq!(
            enqueue(store, id).await,
            QueueOutcome::Queued { already: false }
        );
    }
    // Again: stays where it is.
    assert_eq!(
        enqueue(store, med1).await,
        QueueOutcome::Queued { already: true }
    );
    let t = store.task(med1).await.unwrap().unwrap();
    assert_eq!(t.pod_status, PodStatus::Queued);
    assert_eq!(t.status, TaskStatus::Active);
    for (id, want) in [(crit, 1), (med1, 2), (med2, 3), (low, 4), (other, 1)] {
        assert_eq!(position(store, id).await, want, "{id}");
    }
    let head = store.queue_head("a").await.unwrap().unwrap();
    assert_eq!((head.task_id, head.priority), (crit, Priority::Critical));
    let heads = store.queue_heads().await.unwrap();
    let names: Vec<_> = heads.iter().map(|(t, h)| (t.as_str(), h.task_id)).collect();
    assert_eq!(names, [("a", crit), ("b", other)]);
    let stats = store.queue_stats().await.unwrap();
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
    assert_eq!(store.count_tasks(&f).await.unwrap(), 5);
    let f = crate::domain::TaskFilter {
        pod_status: Some(PodStatus::Stopped),
        ..Default::default()
    };
    assert_eq!(store.count_tasks(&f).await.unwrap(), 0);
    let f = crate::domain::TaskFilter {
        priority: Some(Priority::Medium),
        ..Default::default()
    };
    assert_eq!(store.count_tasks(&f).await.unwrap(), 2);
    db.shutdown().await;
}

async fn a_claim_takes_the_head_and_a_refused_start_puts_it_back(backend: Backend) {
    let db = AnyDb::open(backend).await;
    let store = &*db.store;
    let a = task(store, Priority::High, "a").await;
    let b = task(store, Priority::High, "a").await;
    enqueue(store, a).await;
    enqueue(store, b).await;
    let claim = PodCommand::Claim {
        task_id: a,
        pod_id: "p1".into(),
        host_id: "h".into(),
        cause: Cause::system(),
        automatic: false,
    };
    let PodOutcome::Claimed(c) = store.pod(claim).await.unwrap() else {
        panic!("claim")
    };
    let entry = c.queued.expect("the claim names the entry it took");
    assert_eq!(position(store, b).await, 1);
    assert_eq!(
        store.task(a).await.unwrap().unwrap().pod_status,
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
        store.pod(second).await,
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
    store.pod(abort).await.unwrap();
    let t = store.task(a).await.unwrap().unwrap();
    assert_eq!(t.pod_status, PodStatus::Queued);
    assert_eq!(t.queue.unwrap().position, 1, "back in its old place");
    assert_eq!(position(store, b).await, 2);
    db.shutdown().await;
}

async fn unqueue_expiry_and_finish_take_a_task_out(backend: Backend) {
    let db = AnyDb::open(backend).await;
    let store = &*db.store;
    let a = task(store, Priority::Medium, "a").await;
    let b = task(store, Priority::Medium, "a").await;
    let c = task(store, Priority::Medium, "a").await;
    for id in [a, b, c] {
        enqueue(store, id).await;
    }
    let unqueue = |id| QueueWrite::Unqueue {
        task_id: id,
        cause: Cause::system(),
        reason: "no".into(),
    };
    assert_eq!(
        write(store, unqueue(a)).await.unwrap(),
        QueueOutcome::Removed
    );
    assert_eq!(
        write(store, unqueue(a)).await.unwrap(),
        QueueOutcome::NotQueued
    );
    let t = store.task(a).await.unwrap().unwrap();
    assert_eq!(
        (t.status, t.pod_status),
        (TaskStatus::Inactive, PodStatus::Stopped)
    );
    // Expiry: only the entry the timer saw, only once due.
    let entry = store.task(b).await.unwrap().unwrap().queue.unwrap();
    let expire = |seq| QueueWrite::Expire { task_id: b, seq };
    assert_eq!(
        write(store, expire(entry.seq + 1)).await.unwrap(),
        QueueOutcome::NotQueued
    );
    assert_eq!(
        write(store, expire(entry.seq)).await.unwrap(),
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
    // Once its timeout has passed (queued 10 s ago): out, once.
    db.exec(&format!(
        "UPDATE tasks SET queued_at = queued_at - 10000000 WHERE task_id = '{b}'"
    ))
    .await;
    assert_eq!(
        write(store, expire(entry.seq)).await.unwrap(),
        QueueOutcome::Removed
    );
    assert_eq!(
        write(store, expire(entry.seq)).await.unwrap(),
        QueueOutcome::NotQueued
    );
    let t = store.task(b).await.unwrap().unwrap();
    assert_eq!(
        (t.status, t.pod_status),
        (TaskStatus::Inactive, PodStatus::Stopped)
    );
    let last = store.events_after(0, Some(b), 100).await.unwrap();
    let kinds: Vec<_> = last.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(kinds, ["task_created", "pod_queued", "queue_expired"]);
    let finish = Command::Finish {
        task_id: c,
        finish: Finish::Cancel,
        actor: crate::domain::ActorId::parse("alice").unwrap(),
        correlation: crate::domain::CorrelationId::parse_or_new("").unwrap(),
        reason: Some("no".into()),
    };
    let Outcome::Finished { stop_pod } = store.write(finish).await.unwrap() else {
        panic!("finish")
    };
    assert!(stop_pod.is_none(), "a queued task has no pod to stop");
    let t = store.task(c).await.unwrap().unwrap();
    assert_eq!(t.pod_status, PodStatus::Stopped);
    assert!(t.queue.is_none());
    assert_eq!(store.queue_head("a").await.unwrap(), None);
    let stats = store.queue_stats().await.unwrap();
    assert!(stats.depth.iter().all(|(_, n)| *n == 0), "{stats:?}");
    db.shutdown().await;
}

async fn positions_from_the_bucket_counts_equal_a_plain_count(backend: Backend) {
    let db = AnyDb::open(backend).await;
    let store = &*db.store;
    let priorities = [
        Priority::Low,
        Priority::Critical,
        Priority::Medium,
        Priority::High,
    ];
    let mut ids = Vec::new();
    for i in 0..40 {
        let id = task(store, priorities[i % 4], if i % 5 == 0 { "b" } else { "a" }).await;
        enqueue(store, id).await;
        ids.push(id);
    }
    // Spread the entries over many buckets and spans (SQLite: 256 and
    // 8,192 sequence numbers; PostgreSQL: buckets of 1,024), the triggers
    // moving their counts, some sharing a bucket, as a long queue's would
    // be; then take a few out of the middle.
    for (i, id) in ids.iter().enumerate() {
        let seq = 500 + (i as i64 / 3) * 3_000 + (i as i64 % 3) * 7;
        db.exec(&format!(
            "UPDATE tasks SET queued_seq = {seq} WHERE task_id = '{id}'"
        ))
        .await;
    }
    for id in [ids[3], ids[17], ids[30]] {
        let w = QueueWrite::Unqueue {
            task_id: id,
            cause: Cause::system(),
            reason: "test".into(),
        };
        assert_eq!(write(store, w).await.unwrap(), QueueOutcome::Removed);
    }
    let mut checked = 0;
    for id in &ids {
        let plain = db
            .query_i64(&format!(
                "SELECT 1 + (SELECT COUNT(*) FROM tasks o WHERE o.template = t.template \
                 AND o.queued_seq IS NOT NULL AND (o.priority > t.priority OR \
                 (o.priority = t.priority AND o.queued_seq < t.queued_seq))) \
                 FROM tasks t WHERE t.task_id = '{id}' AND t.queued_seq IS NOT NULL"
            ))
            .await;
        let got = position(store, *id).await;
        assert_eq!(i64::from(got), plain.unwrap_or(0), "{id}");
        checked += usize::from(plain.is_some());
    }
    assert_eq!(checked, 37);
    // The counts per priority agree as well.
    let stats = store.queue_stats().await.unwrap();
    let total: u64 = stats.depth.iter().map(|(_, n)| n).sum();
    assert_eq!(total, 37);
    db.shutdown().await;
}

/// ListTasks shows each queued task's place, whatever the statement's
/// shape: plain, joined through a metadata filter, and merged with the
/// archive.
async fn list_shows_queue_places_in_every_shape_of_query(backend: Backend) {
    let db = AnyDb::open(backend).await;
    let store = &*db.store;
    let low = task(store, Priority::Low, "a").await;
    let high = task(store, Priority::High, "a").await;
    let med = task(store, Priority::Medium, "a").await;
    let idle = task(store, Priority::Critical, "a").await;
    for id in [low, high, med] {
        enqueue(store, id).await;
    }
    let want = [(low, 3), (high, 1), (med, 2), (idle, 0)];
    for (metadata, archived) in [(false, false), (true, false), (false, true), (true, true)] {
        let mut filter = crate::domain::TaskFilter {
            include_archived: archived,
            ..Default::default()
        };
        if metadata {
            filter.metadata_equals.insert("k".into(), "v".into());
        }
        let q = crate::domain::ListQuery {
            filter,
            limit: 10,
            offset: 0,
            order_by: crate::domain::OrderBy::CreatedAt,
            order: crate::domain::Order::Asc,
        };
        let page = store.list_tasks(&q).await.unwrap();
        let got: Vec<_> = page
            .items
            .iter()
            .map(|t| (t.task_id, t.queue.as_ref().map_or(0, |e| e.position)))
            .collect();
        assert_eq!(got, want, "metadata {metadata}, archived {archived}");
        let mut queued = q.clone();
        queued.filter.pod_status = Some(PodStatus::Queued);
        let page = store.list_tasks(&queued).await.unwrap();
        assert_eq!(
            page.items.len(),
            3,
            "metadata {metadata}, archived {archived}"
        );
    }
    db.shutdown().await;
}

on_both_backends!(
    the_order_is_priority_then_first_queued_per_template,
    a_claim_takes_the_head_and_a_refused_start_puts_it_back,
    unqueue_expiry_and_finish_take_a_task_out,
    positions_from_the_bucket_counts_equal_a_plain_count,
    list_shows_queue_places_in_every_shape_of_query,
);
