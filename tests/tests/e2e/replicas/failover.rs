//! Failover: the leader is SIGKILLed under load, or cut off from the
//! database; another replica takes over at a newer epoch within the lease,
//! every acknowledged write survives, no task runs twice, and the pods
//! that ran before keep running with their pids.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipa_tests::{DEADLINE, pb, wait_for_async};
use tokio::task::JoinSet;

use super::support::{Cluster, LEASE_MS, alive, exit_code, ledger_task, start_pod, wait_running};

/// Pods running before the failover: after it, the same pod (id,
/// generation, pid) still runs and no event says it was lost or fenced.
async fn assert_untouched(c: &Cluster, via: &str, before: &[(String, pb::Pod)]) {
    let mut client = c.client(via);
    for (task_id, pod) in before {
        let now = wait_running(&mut client, task_id).await;
        assert_eq!(
            (now.pod_id.as_str(), now.generation, now.pid),
            (pod.pod_id.as_str(), pod.generation, pod.pid),
            "task {task_id}'s pod changed across the failover\n{}",
            c.logs()
        );
        assert!(alive(pod.pid), "pod {} (pid {}) died", pod.pod_id, pod.pid);
        let events = client
            .get_task_events(pb::GetTaskEventsRequest {
                task_id: task_id.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .events;
        let bad: Vec<&str> = events
            .iter()
            .map(|e| e.r#type.as_str())
            .filter(|t| {
                matches!(
                    *t,
                    "pod_lost" | "pod_fenced" | "pod_crashed" | "pod_stopped"
                )
            })
            .collect();
        assert!(bad.is_empty(), "task {task_id}: {bad:?}");
    }
}

#[tokio::test]
async fn leader_sigkill_under_load_loses_nothing_and_runs_nothing_twice() {
    let mut c = Cluster::start(&["host-a"]).await;
    c.add_replica("a", false).await;
    let (first, epoch) = c.wait_leader("a", None).await;
    assert_eq!(first, "a");
    c.add_replica("b", false).await;
    c.add_replica("c", false).await;

    // Pods started before the failover, through a follower (forwarded).
    let mut before = Vec::new();
    for i in 0..3 {
        let t = c
            .client("b")
            .create_task(ledger_task(&format!("before-{i}"), ""))
            .await
            .expect("CreateTask")
            .into_inner();
        let pod = start_pod(&c, "b", &t.task_id).await;
        before.push((t.task_id, pod));
    }

    // 16 clients create tasks (and start every fourth) on every replica in
    // turn, each request retried on the next replica until acknowledged;
    // the same request_id makes a retry return the first task.
    let acked: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let started: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|id| (id.to_string(), c.client(id)))
        .collect();
    let mut load = JoinSet::new();
    for w in 0..16usize {
        let (clients, acked, started, stop) = (
            clients.clone(),
            acked.clone(),
            started.clone(),
            stop.clone(),
        );
        load.spawn(async move {
            let mut n = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let req = ledger_task(&format!("w{w}-{n}"), &format!("w{w}-{n}"));
                let mut k = w + n;
                let began = Instant::now();
                let task_id = loop {
                    let (_, mut client) = clients[k % clients.len()].clone();
                    k += 1;
                    match client.create_task(req.clone()).await {
                        Ok(r) => break r.into_inner().task_id,
                        Err(e) if began.elapsed() > DEADLINE => {
                            panic!("CreateTask not acknowledged by any replica: {e}")
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                };
                acked.lock().unwrap().insert(task_id.clone());
                // Every fourth of a worker's first 16 tasks gets a pod:
                // 64 pods at most, so the pods' own work stays small.
                if n.is_multiple_of(4) && n < 16 {
                    for _ in 0..100 {
                        let (_, mut client) = clients[k % clients.len()].clone();
                        k += 1;
                        let r = client
                            .start_pod(pb::StartPodRequest {
                                task_id: task_id.clone(),
                                actor_id: "tester".into(),
                                ..Default::default()
                            })
                            .await;
                        match r {
                            Ok(_) => {
                                started.lock().unwrap().insert(task_id.clone());
                                break;
                            }
                            Err(s) if s.code() == tonic::Code::AlreadyExists => break,
                            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                        }
                    }
                }
                n += 1;
            }
        });
    }

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let killed = Instant::now();
    c.replicas.get_mut("a").unwrap().kill().await;
    let (next, next_epoch) = c.wait_leader("b", Some("a")).await;
    let failover = killed.elapsed();
    assert!(next_epoch > epoch, "epoch {epoch} -> {next_epoch}");
    assert!(
        failover <= Duration::from_secs(5),
        "a new leader after {failover:?}\n{}",
        c.logs()
    );
    // The new leader supervises: a new pod starts through it.
    let t = c
        .client(&next)
        .create_task(ledger_task("after", ""))
        .await
        .expect("CreateTask after failover")
        .into_inner();
    start_pod(&c, &next, &t.task_id).await;

    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    while let Some(r) = load.join_next().await {
        if let Err(e) = r {
            panic!("a client failed: {e}\n{}", c.logs());
        }
    }

    // Every acknowledged task exists; every acknowledged start ran.
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 16, "only {} tasks acknowledged", acked.len());
    let mut client = c.client("c");
    for id in &acked {
        client
            .get_task(pb::GetTaskRequest {
                task_id: id.clone(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("acknowledged task {id} lost: {e}"));
    }
    let started = started.lock().unwrap().clone();
    wait_for_async(
        "a ledger run of every acknowledged start",
        DEADLINE,
        || async {
            let ran: BTreeSet<String> = c.runs().into_iter().map(|r| r.task_id).collect();
            started.is_subset(&ran).then_some(())
        },
    )
    .await;
    assert_untouched(&c, "c", &before).await;
    c.assert_no_overlap();
    eprintln!(
        "failover: {failover:?} ({} tasks, {} starts acknowledged)",
        acked.len(),
        started.len()
    );
}

#[tokio::test]
async fn a_leader_cut_off_from_the_database_steps_down_and_a_newer_epoch_takes_over() {
    let mut c = Cluster::start(&["host-a"]).await;
    c.add_replica("a", true).await;
    let (first, epoch) = c.wait_leader("a", None).await;
    assert_eq!(first, "a");
    c.add_replica("b", false).await;
    let t = c
        .client("b")
        .create_task(ledger_task("cut", ""))
        .await
        .expect("CreateTask")
        .into_inner();
    let pod = start_pod(&c, "b", &t.task_id).await;

    // a can no longer reach the database: it must stop leading on its own
    // (status 3) and b take over at a newer epoch.
    c.proxies["a"].partition();
    let cut = Instant::now();
    let code = exit_code(c.replicas.get_mut("a").unwrap(), DEADLINE).await;
    let stepped_down = cut.elapsed();
    assert_eq!(code, Some(3), "a's exit\n{}", c.logs());
    assert!(
        c.replicas["a"].log().contains("lost the leadership"),
        "{}",
        c.replicas["a"].log()
    );
    let (next, next_epoch) = c.wait_leader("b", Some("a")).await;
    assert_eq!(next, "b");
    assert!(next_epoch > epoch);
    eprintln!("a stepped down {stepped_down:?} after the cut (lease {LEASE_MS} ms)");
    assert_untouched(&c, "b", &[(t.task_id.clone(), pod.clone())]).await;
    // The pod-host has seen b's epoch: a command under a's is refused.
    let mut host = ipa_tests::pb::pod_host_client::PodHostClient::new(c.hosts[0].channel());
    let refused = host
        .stop_pod(pb::HostStopPodRequest {
            task_id: t.task_id.clone(),
            pod_id: pod.pod_id.clone(),
            generation: pod.generation,
            reason: "deposed leader".into(),
            epoch,
            ..Default::default()
        })
        .await
        .expect_err("a command under the deposed leader's epoch");
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(refused.message().starts_with("STALE_EPOCH"), "{refused:?}");
    assert!(alive(pod.pid));
    c.assert_no_overlap();
}
