//! ListTasks and CountTasks over a few thousand tasks: every filter, both
//! orders and directions, limit/offset rules, and stable pagination.

use std::collections::HashSet;

use ipa_tests::pb;
use prost_types::Timestamp;

use super::support::{Central, Client};

const TASKS: usize = 2400;
const CLIENTS: usize = 16;
const ACTORS: [&str; 3] = ["ann", "ben", "cat"];

fn key(ts: &Option<Timestamp>) -> (i64, i32) {
    let t = (*ts).expect("timestamp");
    (t.seconds, t.nanos)
}

/// Every task, paging with `limit` through ListTasks.
async fn list_all(c: &mut Client, base: pb::ListTasksRequest, limit: u32) -> Vec<pb::Task> {
    let mut out = Vec::new();
    loop {
        let page = c
            .list_tasks(pb::ListTasksRequest {
                limit,
                offset: out.len() as u32,
                ..base.clone()
            })
            .await
            .unwrap()
            .into_inner()
            .tasks;
        let n = page.len();
        assert!(n <= limit as usize);
        out.extend(page);
        if n < limit as usize {
            return out;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagination_filters_and_ordering_over_thousands_of_tasks() {
    let mut c = Central::start().await;
    // Create concurrently from 16 clients; every 7th is completed and every
    // 11th cancelled, so statuses, phases and updated_at vary.
    let mut joins = Vec::new();
    for w in 0..CLIENTS {
        let mut cl = c.client();
        joins.push(tokio::spawn(async move {
            for i in (w..TASKS).step_by(CLIENTS) {
                let t = cl
                    .create_task(pb::CreateTaskRequest {
                        title: format!("task {i}"),
                        actor_id: ACTORS[i % 3].into(),
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .task_id;
                if i % 7 == 0 {
                    cl.complete_task(pb::CompleteTaskRequest {
                        task_id: t,
                        actor_id: "x".into(),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                } else if i % 11 == 0 {
                    cl.cancel_task(pb::CancelTaskRequest {
                        task_id: t,
                        reason: "r".into(),
                        actor_id: "x".into(),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                }
            }
        }));
    }
    for j in joins {
        j.await.unwrap();
    }
    let cl = &mut c.client;

    // Default: limit 100, updated_at descending.
    let first = cl
        .list_tasks(pb::ListTasksRequest::default())
        .await
        .unwrap()
        .into_inner()
        .tasks;
    assert_eq!(first.len(), 100);

    // The whole table, by created_at ascending in pages of 1000 (the max).
    let by_created = list_all(
        cl,
        pb::ListTasksRequest {
            order_by: pb::OrderBy::CreatedAt as i32,
            order: pb::Order::Asc as i32,
            ..Default::default()
        },
        1000,
    )
    .await;
    assert_eq!(by_created.len(), TASKS);
    let ids: HashSet<_> = by_created.iter().map(|t| t.task_id.clone()).collect();
    assert_eq!(ids.len(), TASKS, "no task twice across pages");
    assert!(
        by_created.windows(2).all(
            |w| (key(&w[0].created_at), &w[0].task_id) < (key(&w[1].created_at), &w[1].task_id)
        )
    );

    // updated_at descending in odd-sized pages gives the same set, sorted,
    // and its first page is the default listing.
    let by_updated = list_all(cl, pb::ListTasksRequest::default(), 333).await;
    assert_eq!(by_updated.len(), TASKS);
    assert!(
        by_updated.windows(2).all(
            |w| (key(&w[0].updated_at), &w[0].task_id) > (key(&w[1].updated_at), &w[1].task_id)
        )
    );
    assert_eq!(
        by_updated[..100]
            .iter()
            .map(|t| &t.task_id)
            .collect::<Vec<_>>(),
        first.iter().map(|t| &t.task_id).collect::<Vec<_>>()
    );
    assert_eq!(
        by_updated
            .iter()
            .map(|t| &t.task_id)
            .collect::<HashSet<_>>(),
        ids.iter().collect()
    );
    // Explicit values equal the defaults.
    let explicit = cl
        .list_tasks(pb::ListTasksRequest {
            order_by: pb::OrderBy::UpdatedAt as i32,
            order: pb::Order::Desc as i32,
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .tasks;
    assert_eq!(explicit, first);
    // created_at descending is the reverse of ascending.
    let desc = list_all(
        cl,
        pb::ListTasksRequest {
            order_by: pb::OrderBy::CreatedAt as i32,
            ..Default::default()
        },
        1000,
    )
    .await;
    assert!(
        desc.iter()
            .rev()
            .map(|t| &t.task_id)
            .eq(by_created.iter().map(|t| &t.task_id))
    );

    // Offset past the end is empty.
    let past = cl
        .list_tasks(pb::ListTasksRequest {
            offset: TASKS as u32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .tasks;
    assert!(past.is_empty());

    // Every filter, alone and combined, against the full listing.
    let all = &by_created;
    let cut = all[TASKS / 3].created_at;
    type Expect = Box<dyn Fn(&pb::Task) -> bool>;
    let filters: Vec<(pb::CountTasksRequest, Expect)> = vec![
        (pb::CountTasksRequest::default(), Box::new(|_| true)),
        (
            pb::CountTasksRequest {
                status: pb::TaskStatus::Completed as i32,
                ..Default::default()
            },
            Box::new(|t| t.status == pb::TaskStatus::Completed as i32),
        ),
        (
            pb::CountTasksRequest {
                status: pb::TaskStatus::Inactive as i32,
                ..Default::default()
            },
            Box::new(|t| t.status == pb::TaskStatus::Inactive as i32),
        ),
        (
            pb::CountTasksRequest {
                status: pb::TaskStatus::Active as i32,
                ..Default::default()
            },
            Box::new(|_| false),
        ),
        (
            pb::CountTasksRequest {
                phase: pb::Phase::Cancelled as i32,
                ..Default::default()
            },
            Box::new(|t| t.phase == pb::Phase::Cancelled as i32),
        ),
        (
            pb::CountTasksRequest {
                phase: pb::Phase::SpecClarification as i32,
                ..Default::default()
            },
            Box::new(|t| t.phase == pb::Phase::SpecClarification as i32),
        ),
        (
            pb::CountTasksRequest {
                created_by: "ben".into(),
                ..Default::default()
            },
            Box::new(|t| t.created_by == "ben"),
        ),
        (
            pb::CountTasksRequest {
                created_by: "nobody".into(),
                ..Default::default()
            },
            Box::new(|_| false),
        ),
        (
            pb::CountTasksRequest {
                created_after: cut,
                ..Default::default()
            },
            Box::new({
                let cut = key(&cut);
                move |t| key(&t.created_at) > cut
            }),
        ),
        (
            pb::CountTasksRequest {
                status: pb::TaskStatus::Inactive as i32,
                created_by: "cat".into(),
                created_after: cut,
                ..Default::default()
            },
            Box::new({
                let cut = key(&cut);
                move |t| {
                    t.status == pb::TaskStatus::Inactive as i32
                        && t.created_by == "cat"
                        && key(&t.created_at) > cut
                }
            }),
        ),
    ];
    for (f, pred) in &filters {
        let want: Vec<&String> = all.iter().filter(|t| pred(t)).map(|t| &t.task_id).collect();
        let count = cl.count_tasks(f.clone()).await.unwrap().into_inner().count;
        assert_eq!(count as usize, want.len(), "count {f:?}");
        let listed = list_all(
            cl,
            pb::ListTasksRequest {
                status: f.status,
                phase: f.phase,
                created_after: f.created_after,
                created_by: f.created_by.clone(),
                order_by: pb::OrderBy::CreatedAt as i32,
                order: pb::Order::Asc as i32,
                ..Default::default()
            },
            250,
        )
        .await;
        assert_eq!(
            listed.iter().map(|t| &t.task_id).collect::<Vec<_>>(),
            want,
            "list {f:?}"
        );
    }
    // Sanity of the data set itself.
    let completed = all
        .iter()
        .filter(|t| t.status == pb::TaskStatus::Completed as i32)
        .count();
    assert_eq!(completed, (0..TASKS).filter(|i| i % 7 == 0).count());
}
