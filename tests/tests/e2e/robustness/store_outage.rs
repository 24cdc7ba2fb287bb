//! Liveness never depends on the database (issue 12 item 1): central's
//! database on a real filesystem that fills up (a small tmpfs filled with
//! zeros) or a database file made immutable. Throughout: no pod dies, no
//! pod-host leaves READY, reads are served, writes fail fast with
//! EVENT_STORE_UNAVAILABLE and health says NOT_SERVING; afterwards health
//! and writes come back by themselves, what hosts reported meanwhile is
//! applied in order, and nothing acknowledged is lost.

use std::time::{Duration, Instant};

use ipa_proto::ErrorReason;
use ipa_tests::tmpfs::{Tmpfs, is_root, set_immutable};
use ipa_tests::{DEADLINE, pb, wait_for_async};
use nix::sys::signal::Signal;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::observability::support::{free_addr, parse_metrics, scrape, value};
use crate::system::support::{Spec, System, alive, auto_restart};

/// A gauge of central's metrics endpoint.
async fn gauge(addr: std::net::SocketAddr, name: &str) -> f64 {
    value(&parse_metrics(&scrape(addr).await.1), name, &[]).unwrap_or(f64::NAN)
}

/// Health of `service` ("" = the server as a whole).
async fn health(sys: &System, service: &str) -> Option<ServingStatus> {
    let mut h = HealthClient::new(sys.central.channel());
    let r = h
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .ok()?;
    Some(r.into_inner().status())
}

async fn wait_health(sys: &System, want: ServingStatus) -> Duration {
    let start = Instant::now();
    wait_for_async(&format!("health {want:?}"), DEADLINE, || async {
        (health(sys, "ipa.v1.CentralManager").await == Some(want)).then_some(())
    })
    .await;
    start.elapsed()
}

/// Fence deadline (2 s + margin) well inside the 4 s outage, and a host
/// UNREACHABLE only after 1 s of silence: a loaded machine's stalls must
/// not look like the failure under test.
fn outage_spec() -> Spec {
    Spec {
        heartbeat_ms: 100,
        unreachable_ms: 1000,
        central_fence_ms: 2000,
        host_fence_ms: 2000,
        ..Spec::default()
    }
}

fn big_create(i: usize) -> pb::CreateTaskRequest {
    pb::CreateTaskRequest {
        title: format!("outage probe {i}"),
        // 40 KB per write, so a full disk is hit at once.
        description: "😀".repeat(10_000),
        actor_id: "tester".into(),
        ..Default::default()
    }
}

fn is_unavailable(s: &tonic::Status) -> bool {
    ipa_proto::reason_of(s) == Some(ErrorReason::EventStoreUnavailable)
}

/// Every pod-host is READY now.
async fn all_ready(sys: &System) -> Result<(), String> {
    for h in sys.pod_hosts().await {
        if h.state() != pb::PodHostState::Ready {
            return Err(format!("{} is {:?}", h.host_id, h.state()));
        }
    }
    Ok(())
}

/// The events of every listed task, to check none was lost.
async fn lost_pods(sys: &System, ids: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for id in ids {
        for e in sys.events(id).await {
            if e.r#type == "pod_lost" {
                out.push(format!("{id}: {}", e.data_json));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_kills_no_pod_and_everything_comes_back_by_itself() {
    if !is_root() {
        eprintln!("SKIPPED: mounting a tmpfs needs root (CI runs as root)");
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let fs = Tmpfs::mount(&scratch.path().join("db"), 16).expect("tmpfs");
    // Liveness timeouts well inside the outage: before the fix, an outage
    // longer than the fence deadline made central declare these hosts LOST
    // and kill their pods.
    let metrics = free_addr();
    let sys = System::start(Spec {
        database: Some(fs.path().join("central.db")),
        central_extra: vec!["--metrics-listen".into(), metrics.to_string()],
        ..outage_spec()
    })
    .await;
    assert_eq!(gauge(metrics, "ipa_event_store_writable").await, 1.0);
    let slow = [("ledger.alive_ms", "100")];
    let t1 = sys.running_ledger_task(&slow, None).await; // runs throughout
    let t2 = sys.running_ledger_task(&slow, None).await; // stopped as the disk fills
    let t3 = sys.running_ledger_task(&slow, None).await; // killed during the outage
    let policy = Some(auto_restart(5, 0, 100));
    let t4 = sys.running_ledger_task(&slow, policy).await; // crashes, auto-restart
    // Crashes now; its restart falls due during the outage, so its claim
    // fails at first and must be retried.
    let t5 = sys
        .running_ledger_task(&slow, Some(auto_restart(5, 3000, 3000)))
        .await;
    let pod_of = |t: &pb::Task| t.pod.clone().expect("pod");
    let (p1, p2, p3, p4, p5) = (
        pod_of(&t1),
        pod_of(&t2),
        pod_of(&t3),
        pod_of(&t4),
        pod_of(&t5),
    );
    for p in [&p1, &p2, &p3, &p4, &p5] {
        sys.wait_run(&p.pod_id).await;
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(p5.pid as i32), Signal::SIGKILL).unwrap();
    sys.wait_event(&t5.task_id, "restart_scheduled").await;
    let mut acknowledged: Vec<String> = [&t1, &t2, &t3, &t4, &t5]
        .iter()
        .map(|t| t.task_id.clone())
        .collect();

    // The disk fills up.
    fs.fill().expect("fill the tmpfs");
    let mut client = sys.client();
    let mut first_failure = None;
    for i in 0..200 {
        match client.create_task(big_create(i)).await {
            Ok(r) => acknowledged.push(r.into_inner().task_id),
            Err(s) => {
                assert!(is_unavailable(&s), "{s:?}");
                first_failure = Some(i);
                break;
            }
        }
    }
    assert!(
        first_failure.is_some(),
        "writes kept succeeding on a full disk"
    );
    // A stop while the store fails: whether or not its own commit made it,
    // it must end up recorded as this caller's stop.
    let stop = sys.stop_pod(&t2.task_id).await;
    eprintln!("StopPod during the outage: {stop:?}");
    if let Err(s) = &stop {
        assert!(is_unavailable(s), "{s:?}");
    }

    // Health follows the store; the server as a whole stays SERVING (a
    // liveness probe must not restart central over a full disk).
    wait_health(&sys, ServingStatus::NotServing).await;
    assert_eq!(health(&sys, "").await, Some(ServingStatus::Serving));
    // Writes fail fast.
    let mut took = Vec::new();
    for i in 0..9 {
        let start = Instant::now();
        let e = client.create_task(big_create(1000 + i)).await.unwrap_err();
        took.push(start.elapsed());
        assert!(is_unavailable(&e), "{e:?}");
    }
    took.sort();
    assert!(took[4] < Duration::from_millis(100), "median {:?}", took[4]);

    // Pods end on their hosts while the store is down.
    for p in [&p3, &p4] {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(p.pid as i32), Signal::SIGKILL).unwrap();
    }
    // Several fence timeouts of outage: hosts stay READY, reads go on.
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(4) {
        all_ready(&sys)
            .await
            .expect("hosts stay READY during the outage");
        let t = sys.task(&t1.task_id).await;
        assert_eq!(t.pod_status(), pb::PodStatus::Running);
        assert!(alive(p1.pid), "T1's pod died during the outage");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Visible to operators: the store is down and host reports wait.
    assert_eq!(gauge(metrics, "ipa_event_store_writable").await, 0.0);
    assert!(gauge(metrics, "ipa_supervision_backlog").await >= 2.0);
    let listed = client
        .list_tasks(pb::ListTasksRequest::default())
        .await
        .expect("ListTasks during the outage")
        .into_inner();
    assert!(!listed.tasks.is_empty());

    // The disk drains: health and writes come back by themselves.
    fs.drain().unwrap();
    let back = wait_health(&sys, ServingStatus::Serving).await;
    eprintln!("SERVING again {back:?} after the disk drained");
    assert!(back <= Duration::from_secs(2), "{back:?}");
    let after = client
        .create_task(big_create(9999))
        .await
        .expect("writes work again")
        .into_inner();
    acknowledged.push(after.task_id);

    // What hosts reported meanwhile is applied, in order.
    sys.wait_event(&t3.task_id, "pod_crashed").await;
    sys.wait_task(&t3.task_id, "inactive", |t| {
        t.status() == pb::TaskStatus::Inactive
    })
    .await;
    let crashed = sys.wait_event(&t4.task_id, "pod_crashed").await;
    let scheduled = sys.wait_event(&t4.task_id, "restart_scheduled").await;
    assert!(crashed.version < scheduled.version);
    let t4_now = sys
        .wait_task(&t4.task_id, "restarted", |t| {
            t.pod_status() == pb::PodStatus::Running
                && t.pod.as_ref().is_some_and(|p| p.generation > p4.generation)
        })
        .await;
    sys.wait_run(&t4_now.pod.expect("pod").pod_id).await;
    // The restart that fell due during the outage happened after it.
    sys.wait_task(&t5.task_id, "restarted after the outage", |t| {
        t.pod_status() == pb::PodStatus::Running
            && t.pod.as_ref().is_some_and(|p| p.generation > p5.generation)
    })
    .await;
    // The stop is the caller's, never a loss or a crash, and not undone.
    let stopped = sys.wait_event(&t2.task_id, "pod_stopped").await;
    assert_eq!(stopped.actor_id, "tester", "{stopped:?}");
    assert!(
        stopped.data_json.contains("\"reason\":\"test\""),
        "{}",
        stopped.data_json
    );
    let t2_now = sys.task(&t2.task_id).await;
    assert_eq!(t2_now.status(), pb::TaskStatus::Inactive);
    assert!(!alive(p2.pid));

    // No pod died for the outage; nothing acknowledged is missing.
    let t1_now = sys.task(&t1.task_id).await;
    assert_eq!(t1_now.pod.as_ref().map(|p| &p.pod_id), Some(&p1.pod_id));
    assert!(alive(p1.pid));
    assert_eq!(sys.runs_of(&t1.task_id).len(), 1, "T1 ran once");
    assert_eq!(lost_pods(&sys, &acknowledged).await, Vec::<String>::new());
    for id in &acknowledged {
        let got = client
            .get_task(pb::GetTaskRequest {
                task_id: id.clone(),
            })
            .await;
        assert!(got.is_ok(), "acknowledged task {id} is missing: {got:?}");
    }
    all_ready(&sys).await.unwrap();
    assert_eq!(gauge(metrics, "ipa_event_store_writable").await, 1.0);
    wait_for_async("the supervision backlog drained", DEADLINE, || async {
        (gauge(metrics, "ipa_supervision_backlog").await == 0.0).then_some(())
    })
    .await;
    sys.assert_no_overlap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_database_at_start_keeps_pods_and_recovers_by_itself() {
    if !is_root() {
        eprintln!("SKIPPED: immutable files and tmpfs need root (CI runs as root)");
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let fs = Tmpfs::mount(&scratch.path().join("db"), 64).expect("tmpfs");
    let db = fs.path().join("central.db");
    let mut sys = System::start(Spec {
        database: Some(db.clone()),
        ..outage_spec()
    })
    .await;
    let t1 = sys
        .running_ledger_task(&[("ledger.alive_ms", "100")], None)
        .await;
    let p1 = t1.pod.clone().expect("pod");
    sys.wait_run(&p1.pod_id).await;

    // central-manager dies; its database file is made read-only (immutable:
    // even root cannot open it for writing) before it starts again.
    sys.central.signal(Signal::SIGKILL);
    sys.central.kill().await;
    set_immutable(&db, true).expect("chattr +i");
    sys.start_central_again().await;

    // It serves: reads, the hosts (its pings keep their pods alive), and
    // NOT_SERVING for the task service; writes are refused fast.
    wait_health(&sys, ServingStatus::NotServing).await;
    let t = sys.task(&t1.task_id).await;
    assert_eq!(t.pod.as_ref().map(|p| &p.pod_id), Some(&p1.pod_id));
    for h in ["host-a", "host-b"] {
        sys.wait_host_state(h, pb::PodHostState::Ready).await;
    }
    let mut client = sys.client();
    let e = client.create_task(big_create(1)).await.unwrap_err();
    assert!(is_unavailable(&e), "{e:?}");
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        all_ready(&sys).await.expect("hosts stay READY");
        assert!(
            alive(p1.pid),
            "the pod died while the database was read-only"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    set_immutable(&db, false).expect("chattr -i");
    let back = wait_health(&sys, ServingStatus::Serving).await;
    eprintln!("SERVING again {back:?} after the file became writable");
    assert!(back <= Duration::from_secs(2), "{back:?}");
    client
        .create_task(big_create(2))
        .await
        .expect("writes work again");
    let t = sys.task(&t1.task_id).await;
    assert_eq!(t.pod_status(), pb::PodStatus::Running);
    assert_eq!(t.pod.as_ref().map(|p| &p.pod_id), Some(&p1.pod_id));
    assert!(alive(p1.pid));
    assert_eq!(
        lost_pods(&sys, std::slice::from_ref(&t1.task_id)).await,
        Vec::<String>::new()
    );
    sys.assert_no_overlap();
}
