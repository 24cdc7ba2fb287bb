//! The streaming commands: `events watch` (live, filtered, resumed across a
//! central-manager restart without gaps or repeats) and `tasks logs -f`.

use std::ffi::OsString;

use ipa_tests::ipactl::Ipactl;
use ipa_tests::{DEADLINE, ServerProcess};
use nix::sys::signal::Signal;

use super::support::{System, json};

#[tokio::test]
async fn events_watch_streams_json_lines_as_events_commit() {
    let sys = System::start().await;
    let ctl = &sys.ipactl;
    let mut all = ctl.spawn(&["events", "watch", "-o", "json"]);
    let id = sys.create("watched", 50, true).await;
    let mut only = ctl.spawn(&["events", "watch", "--task", &id]);

    // Every line is one JSON event; positions strictly increase.
    let mut last_pos = 0u64;
    let mut seen = Vec::new();
    while !seen.contains(&"task_completed".to_owned()) {
        let line = all.next_line(DEADLINE).await.expect("watch ended");
        let e = json(&line);
        let pos: u64 = e["position"].as_str().unwrap().parse().unwrap();
        assert!(pos > last_pos, "positions increase: {line}");
        last_pos = pos;
        assert_eq!(e["taskId"], id.as_str());
        seen.push(e["type"].as_str().unwrap().to_owned());
    }
    assert_eq!(seen.first().map(String::as_str), Some("task_created"));

    // The table form: a header, then one aligned row per event.
    let header = only.next_line(DEADLINE).await.expect("header");
    assert!(
        header.contains("POSITION") && header.contains("TYPE"),
        "{header}"
    );
    let row = only
        .line_where("task_completed row", |l| l.contains("task_completed"))
        .await;
    assert_eq!(header.find("TASK"), row.find(&id), "{header}\n{row}");
}

#[tokio::test]
async fn events_watch_resumes_after_a_central_restart_without_gaps_or_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let start = |listen: String| {
        let dir = dir.path().to_path_buf();
        async move {
            let args: Vec<OsString> =
                vec!["--listen".into(), listen.into(), "--local-pod-host".into()];
            ServerProcess::start("central-manager", &args, &[], Some(&dir)).await
        }
    };
    let mut central = start("127.0.0.1:0".into()).await;
    let addr = central.addr;
    let ctl = Ipactl::new(addr);
    let mut watch = ctl.spawn(&["events", "watch", "-o", "json"]);
    let before = ctl.run(&["tasks", "create", "before", "-q"]).await;
    let before = before.ok().trim().to_owned();
    let first = json(&watch.next_line(DEADLINE).await.expect("first event"));
    assert_eq!(first["taskId"], before.as_str());

    // Restart central-manager on the same address; the watcher waits.
    central.signal(Signal::SIGTERM);
    central
        .wait_exit(DEADLINE)
        .await
        .expect("central-manager exits on SIGTERM");
    let central = start(addr.to_string()).await;
    assert_eq!(central.addr, addr);
    let after = ctl.run(&["tasks", "create", "after", "-q"]).await;
    let after = after.ok().trim().to_owned();

    // The next event printed is the new task's creation: nothing repeated
    // from before the restart, nothing skipped.
    let next = json(
        &watch
            .next_line(DEADLINE)
            .await
            .expect("event after restart"),
    );
    assert_eq!(next["taskId"], after.as_str(), "{next}");
    assert_eq!(next["type"], "task_created");
    let p1: u64 = first["position"].as_str().unwrap().parse().unwrap();
    let p2: u64 = next["position"].as_str().unwrap().parse().unwrap();
    assert_eq!(p2, p1 + 1);
}

#[tokio::test]
async fn logs_follow_streams_until_the_pod_ends() {
    let sys = System::start().await;
    let ctl = &sys.ipactl;
    let id = sys.create("chatty", 300, true).await;
    let mut logs = ctl.spawn(&["tasks", "logs", &id, "-f"]);
    let first = logs
        .line_where("the pod's first line", |l| l.contains("demo-pod"))
        .await;
    assert!(first.contains(&id) || first.contains("entering"), "{first}");
    // Later output arrives while following (the review phase comes last).
    logs.line_where("a later phase", |l| l.contains("PHASE_REVIEW"))
        .await;
    // And -f ends by itself once the pod has exited.
    assert_eq!(logs.exit_code().await, Some(0));

    // --tail limits what is sent.
    let tail = ctl.run(&["tasks", "logs", &id, "--tail", "1"]).await;
    assert_eq!(tail.ok().lines().count(), 1, "{}", tail.stdout);
    // JSON: one PodLogChunk per line, data in base64.
    let chunks = ctl.run(&["tasks", "logs", &id, "-o", "json"]).await;
    let first = json(chunks.ok().lines().next().expect("a chunk"));
    assert_eq!(first["stream"], "stdout");
    assert!(first["data"].as_str().is_some_and(|d| !d.is_empty()));
}
