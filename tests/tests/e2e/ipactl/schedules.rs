//! `schedules …`, `stats` and `tasks delete` through the real ipactl
//! against a real system: what each prints, names resolved to ids, and the
//! reasons of what the server refuses.

use super::support::{System, json};

#[tokio::test]
async fn schedules_stats_and_delete_from_the_command_line() {
    let sys = System::start().await;
    let ctl = &sys.ipactl;

    // An hourly schedule (far from firing by itself) and a cron one.
    let hourly = json(
        ctl.run(&[
            "schedules",
            "create",
            "hourly",
            "--every",
            "1h",
            "--title",
            "from a schedule",
            "-m",
            "demo.step_ms=20",
            "-o",
            "json",
        ])
        .await
        .ok(),
    );
    let hourly_id = hourly["scheduleId"]
        .as_str()
        .expect("scheduleId")
        .to_owned();
    assert_eq!(hourly["schedule"]["name"], "hourly");
    assert_eq!(hourly["schedule"]["intervalSeconds"], "3600");
    assert!(hourly["schedule"]["nextFireAt"].is_string(), "{hourly}");
    let nightly = ctl
        .run(&[
            "schedules",
            "create",
            "nightly",
            "--cron",
            "0 3 * * *",
            "--timezone",
            "Europe/Paris",
            "--title",
            "nightly build",
            "--overlap",
            "allow-all",
        ])
        .await;
    assert!(
        nightly.ok().contains("cron 0 3 * * * (Europe/Paris)"),
        "{}",
        nightly.stdout
    );

    // Refusals carry the server's reason.
    ctl.run(&[
        "schedules",
        "create",
        "hourly",
        "--every",
        "1h",
        "--title",
        "t",
    ])
    .await
    .fails_with("ALREADY_EXISTS");
    ctl.run(&[
        "schedules",
        "create",
        "bad",
        "--cron",
        "61 * * * *",
        "--title",
        "t",
    ])
    .await
    .fails_with("INVALID_SCHEDULE");
    ctl.run(&[
        "schedules",
        "create",
        "bad",
        "--cron",
        "0 3 * * *",
        "--timezone",
        "Mars/Olympus",
        "--title",
        "t",
    ])
    .await
    .fails_with("INVALID_SCHEDULE");
    ctl.run(&["schedules", "get", "missing"])
        .await
        .fails_with("SCHEDULE_NOT_FOUND");

    // The list shows both; get works by name and by id.
    let list = ctl.run(&["schedules", "list"]).await;
    let list = list.ok();
    assert!(list.lines().next().unwrap().contains("NEXT FIRE"), "{list}");
    assert!(
        list.contains("hourly") && list.contains("every 1h"),
        "{list}"
    );
    assert!(list.contains("nightly"), "{list}");
    let by_name = json(
        ctl.run(&["schedules", "get", "nightly", "-o", "json"])
            .await
            .ok(),
    );
    assert_eq!(by_name["timezone"], "Europe/Paris");
    assert_eq!(by_name["overlap"], "OVERLAP_ALLOW_ALL");
    let by_id = json(
        ctl.run(&["schedules", "get", &hourly_id, "-o", "json"])
            .await
            .ok(),
    );
    assert_eq!(by_id["name"], "hourly");

    // Pause drops the next fire time; resume brings it back.
    let paused = json(
        ctl.run(&["schedules", "pause", "nightly", "-o", "json"])
            .await
            .ok(),
    );
    assert_eq!(paused["schedule"]["paused"], true, "{paused}");
    assert!(paused["schedule"]["nextFireAt"].is_null(), "{paused}");
    let resumed = json(
        ctl.run(&["schedules", "resume", "nightly", "-o", "json"])
            .await
            .ok(),
    );
    assert_ne!(resumed["schedule"]["paused"], true, "{resumed}");
    assert!(resumed["schedule"]["nextFireAt"].is_string(), "{resumed}");

    // Trigger fires now: a started task that carries the schedule's id.
    let fired = ctl.run(&["schedules", "trigger", "hourly"]).await;
    let line = fired.ok().trim_end().to_owned();
    let task_id = line
        .strip_prefix("schedule hourly fired: task ")
        .unwrap_or_else(|| panic!("{line}"))
        .to_owned();
    let task = json(
        ctl.run(&["tasks", "get", &task_id, "-o", "json"])
            .await
            .ok(),
    );
    assert_eq!(task["metadata"]["ipa.schedule_id"], hourly_id.as_str());
    assert!(task["metadata"]["ipa.scheduled_for"].is_string(), "{task}");
    ctl.run(&[
        "tasks",
        "wait",
        &task_id,
        "--for",
        "completed",
        "--timeout",
        "60s",
    ])
    .await
    .ok();
    let after = json(
        ctl.run(&["schedules", "get", "hourly", "-o", "json"])
            .await
            .ok(),
    );
    assert_eq!(after["firedCount"], "1", "{after}");

    // Statistics: the one task, completed.
    let stats = json(ctl.run(&["stats", "-o", "json"]).await.ok());
    let all = &stats["groups"][0];
    assert_eq!(all["total"], "1", "{stats}");
    assert_eq!(all["completionRate"], 1.0, "{stats}");
    let by_template = ctl.run(&["stats", "--group-by", "template"]).await;
    let by_template = by_template.ok();
    assert!(
        by_template
            .lines()
            .next()
            .unwrap()
            .contains("P95 TO COMPLETE"),
        "{by_template}"
    );
    assert!(
        by_template.lines().any(|l| l.starts_with("default")),
        "{by_template}"
    );

    // Delete: only terminal tasks; then the task and its events are gone.
    let idle = sys.create("not finished", 1000, false).await;
    ctl.run(&["tasks", "delete", &idle, "--reason", "cleanup"])
        .await
        .fails_with("TASK_NOT_TERMINAL");
    let deleted = ctl
        .run(&["tasks", "delete", &task_id, "--reason", "cleanup"])
        .await;
    assert_eq!(deleted.ok(), format!("deleted task {task_id}\n"));
    ctl.run(&["tasks", "get", &task_id])
        .await
        .fails_with("TASK_NOT_FOUND");
    ctl.run(&["tasks", "events", &task_id])
        .await
        .fails_with("TASK_NOT_FOUND");

    // Deleting the schedule leaves the name free.
    ctl.run(&["schedules", "delete", "hourly"]).await.ok();
    ctl.run(&["schedules", "get", "hourly"])
        .await
        .fails_with("SCHEDULE_NOT_FOUND");
    let list = json(ctl.run(&["schedules", "list", "-o", "json"]).await.ok());
    let names: Vec<&str> = list["schedules"]
        .as_array()
        .expect("schedules")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, ["nightly"]);
}
