//! Task dependencies through ipactl: `tasks create --depends-on ID`
//! (repeatable), what `tasks get` shows of a task waiting for them, the
//! DEPENDENCIES_NOT_MET refusal of `tasks start`, and the start once the
//! last one completes.

use super::support::{System, json};

#[tokio::test]
async fn depends_on_through_ipactl() {
    let sys = System::start().await;
    let ctl = &sys.ipactl;
    let create = |title: &'static str| async move {
        let out = ctl.run(&["tasks", "create", title, "-q"]).await;
        out.ok().trim().to_owned()
    };
    let a = create("first").await;
    let b = create("second").await;

    let created = ctl
        .run(&[
            "tasks",
            "create",
            "after both",
            "--depends-on",
            &a,
            "--depends-on",
            &b,
            "-o",
            "json",
        ])
        .await;
    let t = json(created.ok());
    let id = t["task"]["taskId"].as_str().expect("taskId").to_owned();
    assert_eq!(t["task"]["dependsOn"], serde_json::json!([a, b]), "{t}");

    let refused = ctl.run(&["tasks", "start", &id]).await;
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(
        refused.stderr.contains("DEPENDENCIES_NOT_MET"),
        "{refused:?}"
    );

    let queued = ctl.run(&["tasks", "start", &id, "--queue"]).await;
    assert!(queued.ok().contains("queued task"), "{queued:?}");
    let got = ctl.run(&["tasks", "get", &id]).await;
    let table = got.ok();
    assert!(table.contains("waiting for dependencies"), "{table}");
    assert!(table.contains(&a) && table.contains(&b), "{table}");

    for dep in [&a, &b] {
        ctl.run(&["tasks", "complete", dep]).await.ok();
    }
    let waited = ctl
        .run(&["tasks", "wait", &id, "--for", "running", "--timeout", "60s"])
        .await;
    waited.ok();

    let bad = ctl
        .run(&["tasks", "create", "bad", "--depends-on", "nope"])
        .await;
    assert_eq!(bad.code, Some(1), "{bad:?}");
    assert!(
        bad.stderr.contains("INVALID_ARGUMENT") && bad.stderr.contains("depends_on"),
        "{bad:?}"
    );
}
