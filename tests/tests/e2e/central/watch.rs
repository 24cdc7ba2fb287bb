//! WatchEvents: replay after a position, then live, with concurrent writers
//! and several watchers; resuming from the last seen position gives no gap
//! and no duplicate.

use ipa_tests::{DEADLINE, pb};
use tokio_stream::StreamExt;
use tonic::Streaming;

use super::support::{Central, Client, create};

const WRITERS: usize = 4;
const PER_WRITER: usize = 60;

async fn next(s: &mut Streaming<pb::Event>) -> pb::Event {
    tokio::time::timeout(DEADLINE, s.next())
        .await
        .expect("event within the deadline")
        .expect("stream still open")
        .expect("no error")
}

async fn watch(c: &mut Client, after: u64, task: &str) -> Streaming<pb::Event> {
    c.watch_events(pb::WatchEventsRequest {
        after_position: after,
        task_id: task.into(),
    })
    .await
    .unwrap()
    .into_inner()
}

/// Reads events until one at `last` (inclusive) arrives.
async fn read_until(s: &mut Streaming<pb::Event>, last: u64) -> Vec<pb::Event> {
    let mut out = Vec::new();
    loop {
        let e = next(s).await;
        let p = e.position;
        out.push(e);
        if p >= last {
            return out;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_live_and_resume_without_gap_or_duplicate() {
    let mut c = Central::start().await;
    for i in 0..30 {
        create(&mut c.client, &format!("before {i}")).await;
    }
    let target = create(&mut c.client, "watched").await.task_id;

    // Watchers start before the writers: from the beginning, from the
    // middle, one task only, and one that will disconnect and resume.
    let mut from_zero = watch(&mut c.client, 0, "").await;
    let mut from_mid = watch(&mut c.client, 17, "").await;
    let mut one_task = watch(&mut c.client, 0, &target).await;
    let mut resumer = watch(&mut c.client, 0, "").await;

    let mut joins = Vec::new();
    for w in 0..WRITERS {
        let mut cl = c.client();
        let target = target.clone();
        joins.push(tokio::spawn(async move {
            for i in 0..PER_WRITER {
                let id = create(&mut cl, &format!("w{w}-{i}")).await.task_id;
                if i % 5 == 0 {
                    cl.complete_task(pb::CompleteTaskRequest {
                        task_id: id,
                        actor_id: "w".into(),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                }
            }
            if w == 0 {
                cl.cancel_task(pb::CancelTaskRequest {
                    task_id: target,
                    reason: "r".into(),
                    actor_id: "w".into(),
                    ..Default::default()
                })
                .await
                .unwrap();
            }
        }));
    }

    // The resumer reads a little while writes happen, drops its stream, and
    // resumes from the last position it saw. Meanwhile watchers keep
    // joining mid-write, from the start and from where the resumer is, so
    // commits land between their subscription and their replay.
    let mut resumed: Vec<pb::Event> = Vec::new();
    let mut late = Vec::new();
    for i in 0..60 {
        resumed.push(next(&mut resumer).await);
        if i % 10 == 0 {
            let from = if i % 20 == 0 {
                0
            } else {
                resumed.last().unwrap().position
            };
            late.push((from, watch(&mut c.client, from, "").await));
        }
    }
    drop(resumer);

    for j in joins {
        j.await.unwrap();
    }
    // Ground truth: a fresh replay once everything is committed.
    let total = (31 + WRITERS * PER_WRITER + WRITERS * PER_WRITER / 5 + 1) as u64;
    let truth = read_until(&mut watch(&mut c.client, 0, "").await, total).await;
    let truth_pos: Vec<u64> = truth.iter().map(|e| e.position).collect();
    assert_eq!(
        truth_pos,
        (1..=total).collect::<Vec<_>>(),
        "positions are global and gapless"
    );

    let positions = |v: &[pb::Event]| v.iter().map(|e| e.position).collect::<Vec<_>>();
    assert_eq!(
        positions(&read_until(&mut from_zero, total).await),
        truth_pos
    );
    for (from, mut w) in late {
        let got = if from == total {
            Vec::new()
        } else {
            read_until(&mut w, total).await
        };
        assert_eq!(
            positions(&got),
            truth_pos[from as usize..],
            "watcher from {from}"
        );
    }
    let mid = read_until(&mut from_mid, total).await;
    assert_eq!(positions(&mid), truth_pos[17..]);
    assert_eq!(mid[0], truth[17], "replayed events are the stored events");

    let mut again = watch(&mut c.client, resumed.last().unwrap().position, "").await;
    resumed.extend(read_until(&mut again, total).await);
    assert_eq!(
        positions(&resumed),
        truth_pos,
        "resume: no gap, no duplicate"
    );

    let mine = [next(&mut one_task).await, next(&mut one_task).await];
    let want: Vec<&pb::Event> = truth.iter().filter(|e| e.task_id == target).collect();
    assert_eq!(mine.iter().collect::<Vec<_>>(), want);
    assert_eq!(
        mine.iter().map(|e| e.r#type.as_str()).collect::<Vec<_>>(),
        ["task_created", "task_cancelled"]
    );

    // Per-task versions are 1, 2, … in position order.
    let mut versions = std::collections::HashMap::<&str, u64>::new();
    for e in &truth {
        let v = versions.entry(e.task_id.as_str()).or_default();
        *v += 1;
        assert_eq!(e.version, *v, "{e:?}");
    }
}
