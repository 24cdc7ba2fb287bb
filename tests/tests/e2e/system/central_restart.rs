//! SIGKILL of central-manager in the middle of concurrent lifecycle calls,
//! then a restart on the same database: no pod is killed, every
//! acknowledged change is present, active tasks are still ACTIVE with the
//! same pods, and no pod runs that central does not know about.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ipa_tests::{DEADLINE, pb, wait_for};
use tokio::sync::Mutex;

use super::support::{Client, Spec, System, alive, ledger_req};

/// What a task should look like after the restart.
#[derive(Debug, Clone)]
enum Want {
    /// Exists, no pod.
    Inactive,
    /// ACTIVE with exactly this pod.
    Running(pb::Pod),
}

/// Per task: the last acknowledged state, and whether a later call was in
/// flight when central died (then either state is acceptable).
#[derive(Debug, Clone)]
struct Record {
    acked: Want,
    in_flight: Option<&'static str>,
}

type Book = Arc<Mutex<BTreeMap<String, Record>>>;

/// One client's loop: create a running task, stop it, start it again,
/// repeat; every acknowledged step is booked. Stops at the first error.
async fn worker(mut c: Client, book: Book, acks: Arc<AtomicUsize>) {
    loop {
        let Ok(r) = c
            .create_task(ledger_req(&[("ledger.alive_ms", "50")], None, true))
            .await
        else {
            return;
        };
        let t = r.into_inner().task.expect("task");
        let want = match &t.pod {
            Some(p) if t.status() == pb::TaskStatus::Active => Want::Running(p.clone()),
            _ => Want::Inactive,
        };
        let id = t.task_id.clone();
        book.lock().await.insert(
            id.clone(),
            Record {
                acked: want,
                in_flight: None,
            },
        );
        acks.fetch_add(1, Ordering::SeqCst);

        book.lock().await.get_mut(&id).unwrap().in_flight = Some("StopPod");
        let stop = c
            .stop_pod(pb::StopPodRequest {
                task_id: id.clone(),
                actor_id: "load".into(),
                reason: "load".into(),
                correlation_id: String::new(),
            })
            .await;
        if stop.is_err() {
            return;
        }
        *book.lock().await.get_mut(&id).unwrap() = Record {
            acked: Want::Inactive,
            in_flight: None,
        };
        acks.fetch_add(1, Ordering::SeqCst);

        book.lock().await.get_mut(&id).unwrap().in_flight = Some("StartPod");
        let Ok(r) = c
            .start_pod(pb::StartPodRequest {
                task_id: id.clone(),
                actor_id: "load".into(),
                correlation_id: String::new(),
                queue: false,
            })
            .await
        else {
            return;
        };
        let pod = r.into_inner().pod.expect("pod");
        *book.lock().await.get_mut(&id).unwrap() = Record {
            acked: Want::Running(pod),
            in_flight: None,
        };
        acks.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn sigkill_of_central_under_load_keeps_pods_and_acknowledged_changes() {
    // Fence timeouts long enough that the restart on a loaded box is well
    // inside them (pods must survive it).
    let mut sys = System::start(Spec {
        central_fence_ms: 15_000,
        host_fence_ms: 15_000,
        unreachable_ms: 1500,
        ..Spec::default()
    })
    .await;
    let mut steady = Vec::new();
    for _ in 0..4 {
        steady.push(
            sys.running_ledger_task(&[("ledger.alive_ms", "50")], None)
                .await,
        );
    }

    let book: Book = Arc::default();
    let acks = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..6)
        .map(|_| tokio::spawn(worker(sys.client(), book.clone(), acks.clone())))
        .collect();
    // Kill it in the thick of it.
    wait_for("load under way", DEADLINE, || {
        (acks.load(Ordering::SeqCst) >= 30).then_some(())
    })
    .await;
    sys.central.signal(nix::sys::signal::Signal::SIGKILL);
    for w in workers {
        w.await.expect("worker");
    }
    let book = book.lock().await.clone();
    eprintln!(
        "{} acknowledged calls on {} tasks before SIGKILL",
        acks.load(Ordering::SeqCst),
        book.len()
    );
    let mut running: Vec<pb::Pod> = steady.iter().map(|t| t.pod.clone().unwrap()).collect();
    running.extend(book.values().filter_map(|r| match (&r.acked, r.in_flight) {
        (Want::Running(p), None) => Some(p.clone()),
        _ => None,
    }));
    // Central is gone: its pods run on.
    assert!(
        running.iter().all(|p| alive(p.pid)),
        "a pod died with central"
    );

    sys.kill_and_restart_central().await;
    for h in sys.spec.hosts.clone() {
        sys.wait_host_state(h, pb::PodHostState::Ready).await;
    }

    for t in &steady {
        let p = t.pod.as_ref().unwrap();
        let now = sys
            .wait_task(&t.task_id, "still running its pod", |t| {
                t.pod_status() == pb::PodStatus::Running
            })
            .await;
        assert_eq!(now.status(), pb::TaskStatus::Active);
        let np = now.pod.unwrap();
        assert_eq!(
            (np.pod_id.as_str(), np.pid, np.generation),
            (p.pod_id.as_str(), p.pid, p.generation)
        );
    }
    for (id, rec) in &book {
        let now = sys.task(id).await; // exists: the CreateTask was acknowledged
        match (&rec.acked, rec.in_flight) {
            (Want::Running(p), None) => {
                let now = sys
                    .wait_task(id, "acknowledged pod running", |t| {
                        t.pod_status() == pb::PodStatus::Running
                    })
                    .await;
                assert_eq!(now.status(), pb::TaskStatus::Active, "{now:?}");
                assert_eq!(now.pod.unwrap().pod_id, p.pod_id);
            }
            (Want::Inactive, None) => {
                assert_eq!(
                    now.status(),
                    pb::TaskStatus::Inactive,
                    "acked stop lost: {now:?}"
                );
            }
            // A call was in flight: either outcome, but a consistent one.
            (_, Some(_)) => {}
        }
    }
    // No pod was killed: every pod running at the kill still runs, with no
    // stop line in the ledger.
    for p in &running {
        assert!(alive(p.pid), "pod {} was killed", p.pod_id);
        let run = sys
            .runs()
            .into_iter()
            .find(|r| r.pod_id == p.pod_id)
            .unwrap();
        assert!(!run.stopped_cleanly, "pod {} was stopped", p.pod_id);
    }
    // Every live pod is one central knows (an unacknowledged start was
    // adopted or killed), and the set matches ListActivePods.
    let start = std::time::Instant::now();
    let (listed, live) = loop {
        let mut listed: Vec<(String, u32)> = sys
            .active_pods()
            .await
            .iter()
            .map(|a| {
                (
                    a.pod.as_ref().unwrap().pod_id.clone(),
                    a.pod.as_ref().unwrap().pid,
                )
            })
            .collect();
        let mut live: Vec<(String, u32)> = sys
            .runs()
            .into_iter()
            .filter(|r| alive(r.pid))
            .map(|r| (r.pod_id, r.pid))
            .collect();
        listed.sort();
        live.sort();
        if listed == live || start.elapsed() > DEADLINE {
            break (listed, live);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    if listed != live {
        let mut detail = String::new();
        for r in sys.runs().into_iter().filter(|r| alive(r.pid)) {
            if !listed.iter().any(|(id, _)| *id == r.pod_id) {
                let t = sys.task(&r.task_id).await;
                let evs: Vec<String> = sys
                    .events(&r.task_id)
                    .await
                    .into_iter()
                    .map(|e| format!("{} {}", e.r#type, e.data_json))
                    .collect();
                detail.push_str(&format!(
                    "\nunlisted live pod {} gen {} pid {}: task {:?} pod_status {:?} pod {:?}\n  events {evs:#?}",
                    r.pod_id,
                    r.generation,
                    r.pid,
                    t.status(),
                    t.pod_status(),
                    t.pod
                ));
            }
        }
        let live_ids: Vec<&String> = live.iter().map(|(id, _)| id).collect();
        for a in sys.active_pods().await {
            let p = a.pod.as_ref().unwrap();
            if !live_ids.contains(&&p.pod_id) {
                let t = sys.task(&a.task_id).await;
                let evs: Vec<String> = sys
                    .events(&a.task_id)
                    .await
                    .into_iter()
                    .map(|e| format!("{} {} {}", e.r#type, e.actor_id, e.data_json))
                    .collect();
                detail.push_str(&format!(
                    "\nlisted pod that does not run {p:?}: task {:?} pod_status {:?}\n  events {evs:#?}",
                    t.status(),
                    t.pod_status(),
                ));
            }
        }
        panic!("live pods {live:?} != ListActivePods {listed:?}{detail}");
    }
    sys.assert_no_overlap();
}
