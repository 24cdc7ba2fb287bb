//! StartPod / StopPod / ListPods, capacity, generations, logs.

use ipa_proto::ErrorReason;
use ipa_tests::{DEADLINE, pb, wait_for, wait_for_async};
use tonic::Code;

use super::support::{Host, alive, group_members, new_id, reason};

#[tokio::test]
async fn start_list_stop_with_pod_contract_env_and_idempotency() {
    let host = Host::start(&["--stop-grace-ms", "500"]).await;
    let task = new_id();
    let pod_id = new_id();
    let pod = host
        .try_start_pod(&task, &pod_id, 4, "env", &[("k", "v")])
        .await
        .expect("StartPod");
    assert_eq!(pod.state, pb::PodState::Running as i32);
    assert_eq!((pod.task_id.as_str(), pod.generation), (task.as_str(), 4));
    let pid = pod.pid as i32;
    assert!(pid > 0 && alive(pid));
    // Until it reports ready, the script may still be running `cat` (a
    // second member of its group); after that only `exec sleep` is left.
    host.wait_version(&pod_id, 1).await;
    assert_eq!(group_members(pid), vec![pid], "the pod leads its own group");

    // Idempotent on pod_id: same pod, no second process.
    let again = host
        .try_start_pod(&task, &pod_id, 4, "env", &[])
        .await
        .expect("repeat StartPod");
    assert_eq!(again.pid, pod.pid);
    assert_eq!(host.list().await.len(), 1);

    // The pod contract: env vars and the task file.
    let out = wait_for_async("env output", DEADLINE, || async {
        let text: String = host
            .logs(&task, &pod_id, 0)
            .await
            .into_iter()
            .map(|(_, t)| t)
            .collect();
        text.contains("\"metadata\"").then_some(text)
    })
    .await;
    assert!(out.contains(&format!("{task} {pod_id} 4 3")), "{out}");
    let file: serde_json::Value = serde_json::from_str(
        out.lines()
            .find(|l| l.starts_with('{'))
            .expect("task file line"),
    )
    .expect("task file is JSON");
    assert_eq!(file["task_id"], task.as_str());
    assert_eq!(file["title"], "a title");
    assert_eq!(file["description"], "a description");
    assert_eq!(file["metadata"]["k"], "v");

    // StopPod: SIGTERM reaches `sleep`, which dies of it.
    let stopped = host.stop_pod(&task, &pod_id, 4).await.expect("StopPod");
    assert_eq!(stopped.state, pb::PodState::Exited as i32);
    let exit = stopped.exit.expect("exit");
    assert_eq!(exit.cause, pb::ExitCause::Stopped as i32);
    assert_eq!(exit.signal, Some(libc::SIGTERM));
    assert!(!alive(pid));
    // Stopping again returns the same exit; ListPods keeps it (unacked).
    let again = host.stop_pod(&task, "", 4).await.expect("StopPod again");
    assert_eq!(
        again.exit.map(|e| e.cause),
        Some(pb::ExitCause::Stopped as i32)
    );
    let listed = host.pod(&pod_id).await.expect("exited pod still listed");
    assert_eq!(listed.state, pb::PodState::Exited as i32);
}

#[tokio::test]
async fn bad_requests_are_refused_with_their_reason() {
    let host = Host::start(&[]).await;
    let err = host
        .try_start_pod(&new_id(), &new_id(), 1, "no-such-template", &[])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(reason(&err), Some(ErrorReason::InvalidArgument));
    assert!(
        err.message().starts_with("INVALID_ARGUMENT: template"),
        "{}",
        err.message()
    );
    let err = host
        .try_start_pod("not-a-uuid", &new_id(), 1, "sleep", &[])
        .await
        .unwrap_err();
    assert!(
        err.message().starts_with("INVALID_ARGUMENT: task_id"),
        "{}",
        err.message()
    );
    let err = host
        .try_start_pod(&new_id(), "../../etc", 1, "sleep", &[])
        .await
        .unwrap_err();
    assert!(
        err.message().starts_with("INVALID_ARGUMENT: pod_id"),
        "{}",
        err.message()
    );
    let err = host.stop_pod(&new_id(), "", 1).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(reason(&err), Some(ErrorReason::PodNotFound));
    assert!(host.list().await.is_empty());
}

#[tokio::test]
async fn capacity_counts_live_pods() {
    let host = Host::start(&["--capacity", "2", "--stop-grace-ms", "500"]).await;
    let a = host.start_pod(&new_id(), 1, "sleep").await;
    let b = host.start_pod(&new_id(), 1, "sleep").await;
    let err = host
        .try_start_pod(&new_id(), &new_id(), 1, "sleep", &[])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(reason(&err), Some(ErrorReason::NoCapacity));
    // A repeat of an existing pod is not a new pod.
    host.try_start_pod(&a.task_id, &a.pod_id, 1, "sleep", &[])
        .await
        .expect("idempotent repeat at full capacity");
    // An exited pod frees its slot even before it is acknowledged.
    host.stop_pod(&b.task_id, &b.pod_id, 1).await.expect("stop");
    host.start_pod(&new_id(), 1, "sleep").await;
}

#[tokio::test]
async fn older_generations_are_refused_and_newer_ones_fence() {
    let host = Host::start(&["--stop-grace-ms", "500"]).await;
    let task = new_id();
    let a = host.start_pod(&task, 2, "sleep").await;

    let err = host
        .try_start_pod(&task, &new_id(), 1, "sleep", &[])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(reason(&err), Some(ErrorReason::StaleGeneration));
    let err = host.stop_pod(&task, &a.pod_id, 1).await.unwrap_err();
    assert_eq!(reason(&err), Some(ErrorReason::StaleGeneration));
    assert!(alive(a.pid as i32), "a refused command changes nothing");

    // A newer generation kills the older pod first.
    let c = host.start_pod(&task, 3, "sleep").await;
    assert_eq!(c.state, pb::PodState::Running as i32);
    let old = host.pod(&a.pod_id).await.expect("old pod listed");
    assert_eq!(
        old.state,
        pb::PodState::Exited as i32,
        "fenced before the new one started"
    );
    let exit = old.exit.expect("exit");
    assert_eq!(exit.cause, pb::ExitCause::Fenced as i32);
    assert_eq!(exit.signal, Some(libc::SIGKILL));
    assert!(!alive(a.pid as i32));

    // Now generation 2 is stale too, for stop and start.
    let err = host.stop_pod(&task, "", 2).await.unwrap_err();
    assert_eq!(reason(&err), Some(ErrorReason::StaleGeneration));
    let stopped = host.stop_pod(&task, "", 3).await.expect("stop current");
    assert_eq!(stopped.pod_id, c.pod_id);
    // A StopPod carrying a newer generation raises the bar for starts.
    let err = host.stop_pod(&task, "", 5).await;
    assert!(
        err.is_ok(),
        "stopping with a newer generation returns the last pod"
    );
    let err = host
        .try_start_pod(&task, &new_id(), 4, "sleep", &[])
        .await
        .unwrap_err();
    assert_eq!(reason(&err), Some(ErrorReason::StaleGeneration));
}

#[tokio::test]
async fn logs_tail_follow_and_cap() {
    let host = Host::start(&["--log-max-bytes", "16384"]).await;
    let task = new_id();
    let pod = host.start_pod(&task, 1, "chatty").await;
    host.wait_version(&pod.pod_id, 1).await;

    let all = wait_for_async("all output captured", DEADLINE, || async {
        let l = host.logs(&task, &pod.pod_id, 0).await;
        (l.iter().map(|(_, t)| t.lines().count()).sum::<usize>() >= 6).then_some(l)
    })
    .await;
    let text = |l: &[(String, String)], stream: &str| -> String {
        l.iter()
            .filter(|(s, _)| s == stream)
            .map(|(_, t)| t.as_str())
            .collect()
    };
    assert_eq!(text(&all, "stdout"), "out 1\nout 2\nout 3\nout 4\nout 5\n");
    assert_eq!(text(&all, "stderr"), "err 1\n");
    // tail 2: the last two lines of the interleaved output (the order of
    // lines across the two pipes is the order the host read them in).
    let tail = host.logs(&task, &pod.pod_id, 2).await;
    let lines = |l: &[(String, String)]| -> Vec<(String, String)> {
        l.iter()
            .flat_map(|(s, t)| t.lines().map(|line| (s.clone(), line.to_owned())))
            .collect()
    };
    let everything = lines(&all);
    assert_eq!(lines(&tail), everything[everything.len() - 2..].to_vec());

    // Follow with an empty pod_id (the task's newest pod): gets the tail,
    // then live output, and ends when the pod exits.
    let mut follow = host
        .client
        .clone()
        .get_pod_logs(pb::HostGetPodLogsRequest {
            task_id: task.clone(),
            pod_id: String::new(),
            follow: true,
            tail_lines: 1,
        })
        .await
        .expect("follow")
        .into_inner();
    let first = follow.message().await.expect("chunk").expect("tail chunk");
    assert!(!first.data.is_empty());
    super::support::signal(pod.pid as i32, nix::sys::signal::Signal::SIGUSR1);
    let mut got = String::new();
    let ended = tokio::time::timeout(DEADLINE, async {
        while let Some(c) = follow.message().await.expect("chunk") {
            got.push_str(&String::from_utf8_lossy(&c.data));
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "follow must end after the pod exits; got {got:?}"
    );
    assert_eq!(got, "late line\n");

    // Cap: 20,000 lines (~200 KB) through a 16 KiB cap keep the newest.
    let flood = host.start_pod(&new_id(), 1, "flood").await;
    let last = wait_for_async("last flood line", DEADLINE, || async {
        let l = host.logs(&flood.task_id, &flood.pod_id, 1).await;
        l.first().filter(|(_, t)| t == "line 19999\n").cloned()
    })
    .await;
    assert_eq!(last.0, "stdout");
    let dir = host.data_dir.join("pods").join(&flood.pod_id);
    let size: u64 = ["output.log", "output.log.1"]
        .iter()
        .map(|n| std::fs::metadata(dir.join(n)).map_or(0, |m| m.len()))
        .sum();
    assert!(size <= 16384, "retained {size} bytes over a 16 KiB cap");
    let all: String = host
        .logs(&flood.task_id, &flood.pod_id, 0)
        .await
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    assert!(!all.contains("line 0\n") && all.ends_with("line 19999\n"));
    wait_for("output files exist", DEADLINE, || {
        dir.join("output.log.1").exists().then_some(())
    })
    .await;
}
