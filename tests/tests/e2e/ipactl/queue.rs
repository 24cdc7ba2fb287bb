//! Priorities and the queue through ipactl: `tasks create --start --queue
//! --priority --queue-timeout`, `tasks start --queue`, the `--priority`
//! and `--pod-status` filters of `tasks list|count`, what `tasks get`
//! shows of a queued task, and `tasks stop` unqueueing it.

use super::support::{System, json};

#[tokio::test]
async fn a_task_queued_shown_filtered_and_unqueued_through_ipactl() {
    // One slot on the local pod-host (it inherits IPA_CAPACITY).
    let sys = System::start_with_env(&[("IPA_CAPACITY", "1")]).await;
    let ctl = &sys.ipactl;
    let hosts = json(ctl.run(&["hosts", "list", "-o", "json"]).await.ok());
    assert_eq!(hosts["hosts"][0]["capacity"], 1, "{hosts}");
    let _busy = sys.create("holds the slot", 600_000, true).await;

    let created = ctl
        .run(&[
            "tasks",
            "create",
            "waits",
            "--start",
            "--queue",
            "--priority",
            "high",
            "--queue-timeout",
            "10m",
            "-o",
            "json",
        ])
        .await;
    let t = json(created.ok());
    let task = &t["task"];
    let id = task["taskId"].as_str().expect("taskId").to_owned();
    assert_eq!(task["podStatus"], "POD_STATUS_QUEUED", "{t}");
    assert_eq!(task["status"], "TASK_STATUS_ACTIVE", "{t}");
    assert_eq!(task["priority"], "PRIORITY_HIGH", "{t}");
    assert_eq!(task["queuePosition"], 1, "{t}");
    assert_eq!(task["waitingFor"], "capacity", "{t}");
    assert_eq!(task["queueTimeoutSeconds"], 600, "{t}");

    let table = ctl.run(&["tasks", "get", &id]).await;
    let table = table.ok();
    assert!(
        table.contains("position 1 (waiting for capacity)"),
        "{table}"
    );
    assert!(table.contains("high"), "{table}");

    let started = ctl.run(&["tasks", "start", &id, "--queue"]).await;
    assert!(started.ok().contains("queued task"), "{started:?}");
    let without = ctl.run(&["tasks", "start", &id]).await;
    assert_eq!(without.code, Some(1), "{without:?}");
    assert!(without.stderr.contains("ALREADY_STARTED"), "{without:?}");

    let listed = json(
        ctl.run(&["tasks", "list", "--pod-status", "queued", "-o", "json"])
            .await
            .ok(),
    );
    let ids: Vec<&str> = listed["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .filter_map(|t| t["taskId"].as_str())
        .collect();
    assert_eq!(ids, [id.as_str()], "{listed}");
    let count = ctl.run(&["tasks", "count", "--priority", "high"]).await;
    assert_eq!(count.ok().trim(), "1");
    let count = ctl.run(&["tasks", "count", "--priority", "low"]).await;
    assert_eq!(count.ok().trim(), "0");

    ctl.run(&["tasks", "stop", &id]).await.ok();
    let after = json(ctl.run(&["tasks", "get", &id, "-o", "json"]).await.ok());
    assert_eq!(after["podStatus"], "POD_STATUS_STOPPED", "{after}");
    assert_eq!(after["status"], "TASK_STATUS_INACTIVE", "{after}");
    assert!(after.get("queuePosition").is_none_or(|p| p == 0), "{after}");
}
