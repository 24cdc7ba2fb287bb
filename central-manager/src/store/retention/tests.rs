//! Retention on SQLite and on PostgreSQL (listed in [`on_both_backends!`]
//! at the end): archived tasks keep their events and positions and stay
//! readable; deleted tasks lose row and events and leave a logged deletion;
//! bulk cancel gives each task its own event. (How SQLite plans an archive
//! batch is checked on SQLite alone.)

use std::sync::Arc;

use super::*;
use crate::domain::{EventsQuery, ListQuery, TaskFilter};
use crate::store::tests::{AnyDb, Backend, TestDb, create, new_task, on_both_backends};

/// A store on either backend, seen through the retention port.
struct Db {
    any: AnyDb,
    store: Arc<dyn RetentionStore>,
}

impl Db {
    async fn open(backend: Backend) -> Self {
        let any = AnyDb::open(backend).await;
        let store = any.retention();
        Self { any, store }
    }

    async fn shutdown(self) {
        drop(self.store);
        self.any.shutdown().await;
    }
}

fn actor(a: &str) -> ActorId {
    ActorId::parse(a).unwrap()
}

fn corr() -> CorrelationId {
    CorrelationId::parse_or_new("").unwrap()
}

async fn finish(db: &Db, id: TaskId, how: Finish) {
    db.store
        .write(Command::Finish {
            task_id: id,
            finish: how,
            actor: actor("bob"),
            correlation: corr(),
            reason: (how == Finish::Cancel).then(|| "r".to_owned()),
        })
        .await
        .unwrap();
}

async fn archive_all(db: &Db, before: i64, limit: u32) -> u64 {
    let RetentionOutcome::RunStarted(run_id) = db
        .store
        .retention(RetentionWrite::StartArchiveRun {
            finished_before: before,
            actor: actor("admin"),
            correlation: corr(),
        })
        .await
        .unwrap()
    else {
        panic!("no run id")
    };
    let mut total = 0;
    loop {
        match db
            .store
            .retention(RetentionWrite::ArchiveBatch {
                run_id,
                finished_before: before,
                limit,
            })
            .await
            .unwrap()
        {
            RetentionOutcome::Archived { moved: 0, .. } => return total,
            RetentionOutcome::Archived { moved, .. } => total += moved,
            other => panic!("{other:?}"),
        }
    }
}

fn events_q(id: TaskId, include_archived: bool) -> EventsQuery {
    EventsQuery {
        task_id: id,
        after_version: 0,
        limit: 100,
        include_archived,
    }
}

async fn every_tasks_column_is_archived(backend: Backend) {
    let db = AnyDb::open(backend).await;
    let columns_of = |table: &str| match backend {
        Backend::Sqlite => format!("SELECT COUNT(*) FROM pragma_table_info('{table}') WHERE TRUE"),
        Backend::Postgres => format!(
            "SELECT COUNT(*) FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = '{table}'"
        ),
    };
    let name = match backend {
        Backend::Sqlite => "name",
        Backend::Postgres => "column_name",
    };
    let listed: Vec<&str> = ARCHIVED_TASK_COLUMNS.split(',').map(str::trim).collect();
    let quoted: Vec<String> = listed.iter().map(|c| format!("'{c}'")).collect();
    let unlisted = format!(
        "{} AND {name} NOT IN ({})",
        columns_of("tasks"),
        quoted.join(", ")
    );
    assert_eq!(
        db.query_i64(&unlisted).await,
        Some(0),
        "a tasks column is not archived"
    );
    for c in &listed {
        let has = format!("{} AND {name} = '{c}'", columns_of("tasks_archive"));
        assert_eq!(db.query_i64(&has).await, Some(1), "tasks_archive lacks {c}");
    }
    db.shutdown().await;
}

async fn archived_tasks_keep_events_and_positions_and_stay_readable(backend: Backend) {
    let db = Db::open(backend).await;
    let (old, _) = create(&*db.store, new_task("old", "alice")).await.unwrap();
    let (live, _) = create(&*db.store, new_task("live", "alice")).await.unwrap();
    let (open, _) = create(&*db.store, new_task("open", "alice")).await.unwrap();
    finish(&db, old.task_id, Finish::Complete).await;
    finish(&db, live.task_id, Finish::Cancel).await;
    let before = db.store.events_after(0, None, 100).await.unwrap();
    assert_eq!(before.len(), 5);

    // Everything finished so far, one task per batch.
    let cut = ipa_proto::time::now_micros() + 1;
    assert_eq!(archive_all(&db, cut, 1).await, 2);
    // The open task is not terminal and stays.
    let all = TaskFilter::default();
    assert_eq!(db.store.count_tasks(&all).await.unwrap(), 1);
    let with = TaskFilter {
        include_archived: true,
        ..Default::default()
    };
    assert_eq!(db.store.count_tasks(&with).await.unwrap(), 3);

    // Events: gone from the live view, readable with include_archived, and
    // the global feed is unchanged (same positions, same order).
    let q = events_q(old.task_id, false);
    assert!(db.store.task_events(&q).await.unwrap().is_empty());
    let archived = db
        .store
        .task_events(&events_q(old.task_id, true))
        .await
        .unwrap();
    assert_eq!(archived.len(), 2);
    assert_eq!(db.store.events_after(0, None, 100).await.unwrap(), before);
    // Resuming inside the archived range gets what follows.
    let resume = db
        .store
        .events_after(before[1].position, None, 100)
        .await
        .unwrap();
    assert_eq!(resume, before[2..].to_vec());
    let one = db
        .store
        .events_after(0, Some(old.task_id), 100)
        .await
        .unwrap();
    assert_eq!(one.len(), 2);
    // New events keep counting up after the archived ones.
    finish(&db, open.task_id, Finish::Complete).await;
    let last = db.store.events_after(0, None, 100).await.unwrap();
    assert!(last.last().unwrap().position > before.last().unwrap().position);

    // The task reads back from the archive, flagged.
    assert!(db.store.task(old.task_id).await.unwrap().is_none());
    let t = db
        .store
        .task_or_archived(old.task_id)
        .await
        .unwrap()
        .unwrap();
    assert!(t.archived);
    assert_eq!(t.title.as_str(), "old");
    let page = db
        .store
        .list_tasks(&ListQuery {
            filter: TaskFilter {
                include_archived: true,
                metadata_equals: [("k".to_owned(), "v".to_owned())].into(),
                ..Default::default()
            },
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.items.len(), 3);
    assert_eq!(page.items.iter().filter(|t| t.archived).count(), 2);
    db.shutdown().await;
}

async fn only_terminal_tasks_are_deleted_and_the_deletion_is_logged(backend: Backend) {
    let db = Db::open(backend).await;
    let (t, _) = create(&*db.store, new_task("t", "alice")).await.unwrap();
    let delete = |id| RetentionWrite::DeleteTask {
        task_id: id,
        reason: "GDPR request".into(),
        actor: actor("root"),
        correlation: CorrelationId::parse_or_new("del-1").unwrap(),
    };
    assert!(matches!(
        db.store.retention(delete(t.task_id)).await,
        Err(Error::TaskNotTerminal(_))
    ));
    assert!(matches!(
        db.store.retention(delete(TaskId::new())).await,
        Err(Error::TaskNotFound(_))
    ));
    finish(&db, t.task_id, Finish::Cancel).await;
    assert_eq!(
        db.store.retention(delete(t.task_id)).await.unwrap(),
        RetentionOutcome::Deleted
    );
    assert!(
        db.store
            .task_or_archived(t.task_id)
            .await
            .unwrap()
            .is_none()
    );
    assert!(!db.store.task_exists(t.task_id).await.unwrap());
    assert!(
        db.store
            .events_after(0, Some(t.task_id), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let d = db.store.deletion(t.task_id).await.unwrap().unwrap();
    assert_eq!(d.events_deleted, 2);
    assert_eq!(d.status, TaskStatus::Cancelled);
    assert_eq!(
        (d.deleted_by.as_str(), d.reason.as_str()),
        ("root", "GDPR request")
    );
    assert_eq!(d.correlation_id, "del-1");
    assert!(!d.was_archived);
    let filter = TaskFilter {
        metadata_equals: [("k".to_owned(), "v".to_owned())].into(),
        include_archived: true,
        ..Default::default()
    };
    assert_eq!(db.store.count_tasks(&filter).await.unwrap(), 0);

    // An archived task is deleted from the archive.
    let (a, _) = create(&*db.store, new_task("a", "alice")).await.unwrap();
    finish(&db, a.task_id, Finish::Complete).await;
    archive_all(&db, ipa_proto::time::now_micros() + 1, 10).await;
    db.store.retention(delete(a.task_id)).await.unwrap();
    assert!(
        db.store
            .task_or_archived(a.task_id)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        db.store
            .events_after(0, Some(a.task_id), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        db.store
            .deletion(a.task_id)
            .await
            .unwrap()
            .unwrap()
            .was_archived
    );
    db.shutdown().await;
}

async fn bulk_cancel_selects_open_tasks_and_records_each(backend: Backend) {
    let db = Db::open(backend).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let mut n = new_task(&format!("t{i}"), "alice");
        if i == 2 {
            n.metadata =
                crate::domain::Metadata::parse([("team".into(), "x".into())].into()).unwrap();
        }
        ids.push(create(&*db.store, n).await.unwrap().0.task_id);
    }
    finish(&db, ids[0], Finish::Complete).await;
    let all = db.store.cancellable(&TaskFilter::default()).await.unwrap();
    assert_eq!(all, ids[1..].to_vec());
    let team = TaskFilter {
        metadata_equals: [("team".to_owned(), "x".to_owned())].into(),
        ..Default::default()
    };
    assert_eq!(db.store.cancellable(&team).await.unwrap(), vec![ids[2]]);
    let out = db
        .store
        .retention(RetentionWrite::CancelMany {
            task_ids: ids.clone(),
            reason: "cleanup".into(),
            actor: actor("root"),
            correlation: corr(),
        })
        .await
        .unwrap();
    let RetentionOutcome::Cancelled(done) = out else {
        panic!("{out:?}")
    };
    // The completed one is left alone.
    assert_eq!(
        done.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        ids[1..].to_vec()
    );
    for id in &ids[1..] {
        let trail = db.store.task_events(&events_q(*id, false)).await.unwrap();
        let last = trail.items.last().unwrap();
        assert_eq!(last.event_type, "task_cancelled");
        assert_eq!(last.actor_id, "root");
        assert!(last.data_json.contains("cleanup"));
    }
    db.shutdown().await;
}

/// How SQLite runs `sql`: the EXPLAIN QUERY PLAN details, one a line.
fn plan(c: &Connection, sql: &str) -> String {
    let mut st = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
    let n = st.parameter_count();
    let args: Vec<rusqlite::types::Value> = (0..n).map(|_| "[]".to_owned().into()).collect();
    st.query_map(params_from_iter(args), |r| r.get::<_, String>(3))
        .unwrap()
        .collect::<rusqlite::Result<Vec<_>>>()
        .unwrap()
        .join("\n")
}

/// Each archive batch costs its own size, not the table's: the selection
/// walks `tasks_finished` in order (no sort of every terminal task, which
/// is what made a batch take 158 ms over 100,000 tasks), and every move
/// looks its rows up by key. Checked on a database with many terminal
/// tasks so the planner has a choice to make.
#[tokio::test]
async fn archive_batches_read_by_index_without_sorting_the_table() {
    let db = TestDb::open().await;
    for i in 0..50 {
        let (t, _) = create(&db.store, new_task(&format!("t{i}"), "alice"))
            .await
            .unwrap();
        let cancel = crate::store::tests::finish_cmd(t.task_id, Finish::Cancel, Some("r"));
        db.store.write(cancel).await.unwrap();
    }
    let c = Connection::open(db.path()).unwrap();
    let select = plan(&c, ARCHIVABLE);
    assert!(select.contains("tasks_finished"), "{select}");
    assert!(!select.contains("TEMP B-TREE"), "{select}");
    for sql in batch_statements() {
        let p = plan(&c, &sql);
        for line in p.lines().filter(|l| !l.contains("json_each")) {
            assert!(!line.starts_with("SCAN"), "{sql}\n{p}");
        }
        assert!(p.contains("SEARCH"), "{sql}\n{p}");
    }
    drop(c);
    db.shutdown().await;
}

/// "The tasks of schedule X" page through the metadata index in creation
/// order (newest or oldest first), skipping the others' tasks, with the
/// same order and pages as the tasks' own columns give.
async fn metadata_pages_follow_creation_order(backend: Backend) {
    let db = Db::open(backend).await;
    let mut mine = Vec::new();
    for i in 0..7 {
        let mut n = new_task(&format!("t{i}"), "alice");
        if i % 3 != 1 {
            n.metadata =
                crate::domain::Metadata::parse([("ipa.schedule_id".into(), "x".into())].into())
                    .unwrap();
        }
        let (t, _) = create(&*db.store, n).await.unwrap();
        if i % 3 != 1 {
            mine.push((t.created_at, t.task_id));
        }
    }
    mine.sort();
    let page = |order, limit, offset| {
        let store = db.store.clone();
        async move {
            store
                .list_tasks(&ListQuery {
                    filter: TaskFilter {
                        metadata_equals: [("ipa.schedule_id".to_owned(), "x".to_owned())].into(),
                        ..Default::default()
                    },
                    order_by: crate::domain::OrderBy::CreatedAt,
                    order,
                    limit,
                    offset,
                })
                .await
                .unwrap()
                .items
                .iter()
                .map(|t| t.task_id)
                .collect::<Vec<_>>()
        }
    };
    let asc: Vec<TaskId> = mine.iter().map(|(_, id)| *id).collect();
    let desc: Vec<TaskId> = asc.iter().rev().copied().collect();
    assert_eq!(page(crate::domain::Order::Asc, 10, 0).await, asc);
    assert_eq!(page(crate::domain::Order::Desc, 10, 0).await, desc);
    assert_eq!(
        page(crate::domain::Order::Desc, 2, 1).await,
        desc[1..3].to_vec()
    );
    db.shutdown().await;
}

on_both_backends!(
    every_tasks_column_is_archived,
    archived_tasks_keep_events_and_positions_and_stay_readable,
    only_terminal_tasks_are_deleted_and_the_deletion_is_logged,
    bulk_cancel_selects_open_tasks_and_records_each,
    metadata_pages_follow_creation_order,
);
