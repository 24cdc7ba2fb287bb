//! Every served command through the real ipactl, in each output format.

use super::support::{System, json, yaml};

#[tokio::test]
async fn a_task_from_create_to_completed_in_every_format() {
    let sys = System::start().await;
    let ctl = &sys.ipactl;

    // Not started: the table shows it inactive, JSON has the proto names.
    let idle = sys.create("ipactl idle", 1000, false).await;
    let got = json(ctl.run(&["tasks", "get", &idle, "-o", "json"]).await.ok());
    assert_eq!(got["taskId"], idle.as_str());
    assert_eq!(got["title"], "ipactl idle");
    assert_eq!(got["status"], "TASK_STATUS_INACTIVE");
    assert_eq!(got["phase"], "PHASE_SPEC_CLARIFICATION");
    assert_eq!(got["metadata"]["demo.step_ms"], "1000");
    // The actor defaults to the login name or "ipactl"; never empty
    // without credentials.
    assert!(!got["createdBy"].as_str().unwrap_or_default().is_empty());
    let created = got["createdAt"].as_str().expect("createdAt");
    assert!(
        created.ends_with('Z') && created.contains('T'),
        "RFC 3339: {created}"
    );

    // Started with --start, waited for until completed.
    let id = sys.create("ipactl run", 100, true).await;
    let waited = ctl
        .run(&[
            "tasks",
            "wait",
            &id,
            "--for",
            "completed",
            "--timeout",
            "60s",
            "-o",
            "json",
        ])
        .await;
    assert_eq!(json(waited.ok())["status"], "TASK_STATUS_COMPLETED");
    // No spinner (or anything else) on stderr in a pipe.
    assert_eq!(waited.stderr, "", "stderr in a pipe");

    // table: aligned columns, relative times; wide: RFC 3339 and more.
    let table = ctl.run(&["tasks", "list"]).await;
    let table = table.ok();
    let header = table.lines().next().expect("header");
    for h in ["ID", "TITLE", "STATUS", "PHASE", "POD", "UPDATED"] {
        assert!(header.contains(h), "{header}");
    }
    let row = table
        .lines()
        .find(|l| l.contains(&id))
        .expect("row of the task");
    assert_eq!(
        header.find("STATUS"),
        row.find("completed"),
        "aligned:\n{table}"
    );
    assert!(row.contains(" ago"), "{row}");
    assert!(
        table
            .lines()
            .any(|l| l.contains(&idle) && l.contains("inactive"))
    );
    assert!(!table.contains('\u{1b}'), "no colour in a pipe");
    let wide = ctl.run(&["tasks", "list", "-o", "wide"]).await;
    let wide_row = wide
        .ok()
        .lines()
        .find(|l| l.contains(&id))
        .expect("wide row")
        .to_owned();
    assert!(wide.ok().lines().next().unwrap().contains("CREATED BY"));
    assert!(!wide_row.contains(" ago") && wide_row.contains('T') && wide_row.contains('Z'));

    // Filters and JSON/YAML of lists.
    let done = json(
        ctl.run(&["tasks", "list", "--status", "completed", "-o", "json"])
            .await
            .ok(),
    );
    let ids: Vec<&str> = done["tasks"]
        .as_array()
        .expect("tasks array")
        .iter()
        .filter_map(|t| t["taskId"].as_str())
        .collect();
    assert_eq!(ids, vec![id.as_str()]);
    let y = yaml(ctl.run(&["tasks", "list", "-o", "yaml"]).await.ok());
    assert_eq!(y["tasks"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        ctl.run(&["tasks", "count", "--status", "inactive"])
            .await
            .ok(),
        "1\n"
    );
    assert_eq!(
        json(ctl.run(&["tasks", "count", "-o", "json"]).await.ok())["count"],
        "2"
    );

    // The audit trail, oldest first, every page.
    let events = json(ctl.run(&["tasks", "events", &id, "-o", "json"]).await.ok());
    let types: Vec<&str> = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert_eq!(types.first(), Some(&"task_created"));
    assert_eq!(types.last(), Some(&"task_completed"));
    assert!(types.contains(&"pod_started"));
    let limited = json(
        ctl.run(&["tasks", "events", &id, "--limit", "2", "-o", "json"])
            .await
            .ok(),
    );
    assert_eq!(limited["events"].as_array().map(Vec::len), Some(2));
    let table = ctl.run(&["tasks", "events", &id]).await;
    assert!(table.ok().contains("task_completed"));

    // Logs of the finished pod, raw.
    let logs = ctl.run(&["tasks", "logs", &id]).await;
    assert!(logs.ok().contains("demo-pod"), "{}", logs.stdout);
}

#[tokio::test]
async fn pods_and_hosts_and_the_lifecycle_commands() {
    let sys = System::start().await;
    let ctl = &sys.ipactl;

    let hosts = json(ctl.run(&["hosts", "list", "-o", "json"]).await.ok());
    let host = &hosts["hosts"][0];
    assert_eq!(host["state"], "POD_HOST_STATE_READY");
    assert!(
        host["templates"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "default")
    );
    let table = ctl.run(&["hosts", "list"]).await;
    assert!(table.ok().contains("ready"));

    // A slow task: start, see its pod, restart, stop, complete.
    let id = sys.create("lifecycle", 60_000, false).await;
    let started = json(ctl.run(&["tasks", "start", &id, "-o", "json"]).await.ok());
    assert_eq!(started["pod"]["generation"], "1");
    ctl.run(&["tasks", "wait", &id, "--for", "running", "--timeout", "60s"])
        .await
        .ok();
    let pods = yaml(ctl.run(&["pods", "list", "-o", "yaml"]).await.ok());
    assert_eq!(pods["pods"][0]["taskId"], id.as_str());
    assert!(ctl.run(&["pods", "list"]).await.ok().contains(&id));

    let restarted = ctl.run(&["tasks", "restart", &id]).await;
    assert!(
        restarted.ok().contains("generation 2"),
        "{}",
        restarted.stdout
    );
    let stopped = ctl.run(&["tasks", "stop", &id, "--reason", "pause"]).await;
    assert!(stopped.ok().contains("stopped"));
    assert_eq!(
        json(ctl.run(&["tasks", "get", &id, "-o", "json"]).await.ok())["podStatus"],
        "POD_STATUS_STOPPED"
    );
    ctl.run(&["tasks", "complete", &id]).await.ok();
    let other = sys.create("to cancel", 1000, false).await;
    ctl.run(&["tasks", "cancel", &other, "--reason", "duplicate"])
        .await
        .ok();
    let cancelled = json(
        ctl.run(&["tasks", "events", &other, "-o", "json"])
            .await
            .ok(),
    );
    let last = cancelled["events"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["type"], "task_cancelled");
    assert!(last["dataJson"].as_str().unwrap().contains("duplicate"));

    // --actor and --correlation-id reach the events.
    let third = sys.create("actor", 1000, false).await;
    ctl.run(&[
        "tasks",
        "cancel",
        &third,
        "--reason",
        "r",
        "--actor",
        "bob",
        "--correlation-id",
        "corr-7",
    ])
    .await
    .ok();
    let ev = json(
        ctl.run(&["tasks", "events", &third, "-o", "json"])
            .await
            .ok(),
    );
    let last = ev["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["actorId"], "bob");
    assert_eq!(last["correlationId"], "corr-7");
}

#[tokio::test]
async fn completion_scripts_for_bash_zsh_and_fish() {
    let ctl = ipa_tests::ipactl::Ipactl::new("127.0.0.1:1");
    for shell in ["bash", "zsh", "fish"] {
        let run = ctl.run(&["completion", shell]).await;
        let script = run.ok();
        for word in ["ipactl", "tasks", "schedules", "completion"] {
            assert!(script.contains(word), "{shell} script lacks {word}");
        }
    }
    // The bash script is valid bash, and completes the subcommands.
    let bash = ctl.run(&["completion", "bash"]).await.stdout;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ipactl.bash");
    std::fs::write(&path, &bash).unwrap();
    let check = format!(
        "source {p} && COMP_WORDS=(ipactl ta) COMP_CWORD=1 COMP_LINE='ipactl ta' COMP_POINT=9 && _ipactl ipactl ta ipactl && printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        p = path.display()
    );
    let out = std::process::Command::new("bash")
        .args(["-c", &check])
        .output()
        .expect("run bash");
    let words = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && words.lines().any(|w| w == "tasks"),
        "bash completion of `ipactl ta`: {words:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
