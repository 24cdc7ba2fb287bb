//! Tasks and pods as `table`/`wide` text.

use comfy_table::Cell;
use ipa_proto::v1 as pb;

use crate::output::Ctx;
use crate::output::fmt::{self, colored};

/// `tasks list`.
pub fn task_list(tasks: &[pb::Task], ctx: &Ctx) -> String {
    if tasks.is_empty() {
        return "No tasks found.".to_owned();
    }
    let mut headers = vec!["ID", "TITLE", "STATUS", "PHASE", "POD", "UPDATED"];
    if ctx.wide {
        headers.extend(["CREATED", "CREATED BY", "TEMPLATE", "HOST", "RESTARTS"]);
    }
    let mut t = fmt::table(ctx, &headers);
    for task in tasks {
        let mut row = vec![
            Cell::new(&task.task_id),
            Cell::new(&task.title),
            colored(
                ctx,
                fmt::status(task.status),
                fmt::status_color(task.status),
            ),
            Cell::new(fmt::phase(task.phase)),
            colored(
                ctx,
                fmt::pod_status(task.pod_status),
                fmt::pod_color(task.pod_status),
            ),
            Cell::new(fmt::time(ctx, task.updated_at.as_ref())),
        ];
        if ctx.wide {
            row.extend([
                Cell::new(fmt::time(ctx, task.created_at.as_ref())),
                Cell::new(&task.created_by),
                Cell::new(template(task)),
                Cell::new(task.pod.as_ref().map_or("-", |p| p.pod_host.as_str())),
                Cell::new(task.restart_count),
            ]);
        }
        t.add_row(row);
    }
    fmt::render(&t)
}

fn template(task: &pb::Task) -> &str {
    if task.template.is_empty() {
        "default"
    } else {
        &task.template
    }
}

/// `tasks get` (and `create`, `wait`): one task, field by field.
pub fn task_detail(task: &pb::Task, ctx: &Ctx) -> String {
    let mut rows = vec![
        ("ID", Cell::new(&task.task_id)),
        ("Title", Cell::new(&task.title)),
        (
            "Status",
            colored(
                ctx,
                fmt::status(task.status),
                fmt::status_color(task.status),
            ),
        ),
        ("Phase", Cell::new(fmt::phase(task.phase))),
        ("Priority", Cell::new(fmt::priority(task.priority))),
        (
            "Pod",
            colored(ctx, pod_summary(task), fmt::pod_color(task.pod_status)),
        ),
    ];
    if !task.pod_message.is_empty() {
        rows.push(("Pod message", Cell::new(&task.pod_message)));
    }
    if task.queue_position > 0 {
        rows.push((
            "Queue",
            Cell::new(format!(
                "position {} (waiting for {}) since {}",
                task.queue_position,
                task.waiting_for,
                fmt::time(ctx, task.queued_at.as_ref())
            )),
        ));
    }
    if task.queue_position == 0 && !task.waiting_for.is_empty() {
        rows.push((
            "Queue",
            Cell::new(format!("waiting for {}", task.waiting_for)),
        ));
    }
    if let Some(s) = task.queue_timeout_seconds {
        rows.push(("Queue timeout", Cell::new(format!("{s}s"))));
    }
    if !task.depends_on.is_empty() {
        rows.push(("Depends on", Cell::new(task.depends_on.join(", "))));
    }
    if task.next_restart_at.is_some() {
        rows.push((
            "Next restart",
            Cell::new(fmt::time(ctx, task.next_restart_at.as_ref())),
        ));
    }
    rows.extend([
        ("Template", Cell::new(template(task))),
        ("Created by", Cell::new(&task.created_by)),
        (
            "Created",
            Cell::new(fmt::time(ctx, task.created_at.as_ref())),
        ),
        (
            "Updated",
            Cell::new(fmt::time(ctx, task.updated_at.as_ref())),
        ),
        ("Version", Cell::new(task.version)),
        ("Restarts", Cell::new(task.restart_count)),
        (
            "Restart policy",
            Cell::new(restart_policy(task.restart_policy.as_ref())),
        ),
    ]);
    if let Some(s) = task.timeout_seconds {
        rows.push(("Run timeout", Cell::new(format!("{s}s"))));
    }
    if task.deadline.is_some() {
        rows.push((
            "Deadline",
            Cell::new(fmt::time(ctx, task.deadline.as_ref())),
        ));
    }
    if !task.metadata.is_empty() {
        let mut entries: Vec<_> = task.metadata.iter().collect();
        entries.sort();
        let text = entries
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("\n");
        rows.push(("Metadata", Cell::new(text)));
    }
    if !task.description.is_empty() {
        rows.push(("Description", Cell::new(&task.description)));
    }
    fmt::render(&fmt::detail(ctx, rows))
}

/// `running on host-a (pid 42, generation 3)` or the pod status alone.
fn pod_summary(task: &pb::Task) -> String {
    let status = fmt::pod_status(task.pod_status);
    match &task.pod {
        Some(p) => format!(
            "{status} on {} (pid {}, generation {}, pod {})",
            p.pod_host, p.pid, p.generation, p.pod_id
        ),
        None => status,
    }
}

fn restart_policy(p: Option<&pb::RestartPolicy>) -> String {
    let Some(p) = p else {
        return "server default".to_owned();
    };
    let opt = |v: Option<u32>| v.map_or_else(|| "default".to_owned(), |v| v.to_string());
    format!(
        "auto_restart={}, max_restarts={}, window={}s, backoff={}..{}ms",
        p.auto_restart
            .map_or_else(|| "default".to_owned(), |v| v.to_string()),
        opt(p.max_restarts),
        opt(p.window_seconds),
        opt(p.initial_backoff_ms),
        opt(p.max_backoff_ms),
    )
}

/// `pods list`.
pub fn pod_list(pods: &[pb::ActivePod], ctx: &Ctx) -> String {
    if pods.is_empty() {
        return "No pods running.".to_owned();
    }
    let mut headers = vec!["TASK", "HOST", "PID", "GENERATION", "STARTED"];
    if ctx.wide {
        headers.push("POD");
    }
    let mut t = fmt::table(ctx, &headers);
    for a in pods {
        let Some(p) = &a.pod else { continue };
        let mut row = vec![
            Cell::new(&a.task_id),
            Cell::new(&p.pod_host),
            Cell::new(p.pid),
            Cell::new(p.generation),
            Cell::new(fmt::time(ctx, p.started_at.as_ref())),
        ];
        if ctx.wide {
            row.push(Cell::new(&p.pod_id));
        }
        t.add_row(row);
    }
    fmt::render(&t)
}

/// The answer of `tasks start` / `tasks restart`.
pub fn pod_started(verb: &str, task_id: &str, pod: Option<&pb::Pod>) -> String {
    match pod {
        Some(p) => format!(
            "{verb} task {task_id}: pod {} on {} (pid {}, generation {})",
            p.pod_id, p.pod_host, p.pid, p.generation
        ),
        None => format!("{verb} task {task_id}"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use prost_types::Timestamp;

    use super::*;

    fn ctx(wide: bool) -> Ctx {
        Ctx {
            wide,
            color: false,
            now: SystemTime::UNIX_EPOCH + Duration::from_secs(10_000),
        }
    }

    fn task() -> pb::Task {
        pb::Task {
            task_id: "0b6f5a4e-8d7c-4b3a-9e21-5f0c7d8e9a10".into(),
            title: "Implement login".into(),
            status: pb::TaskStatus::Active as i32,
            phase: pb::Phase::Planning as i32,
            pod_status: pb::PodStatus::Running as i32,
            created_at: Some(Timestamp {
                seconds: 10_000 - 600,
                nanos: 0,
            }),
            updated_at: Some(Timestamp {
                seconds: 10_000 - 5,
                nanos: 0,
            }),
            created_by: "alice".into(),
            pod: Some(pb::Pod {
                pod_id: "p1".into(),
                pod_host: "host-a".into(),
                pid: 42,
                generation: 3,
                started_at: None,
            }),
            metadata: [
                ("b".to_owned(), "2".to_owned()),
                ("a".to_owned(), "1".to_owned()),
            ]
            .into(),
            ..Default::default()
        }
    }

    #[test]
    fn list_table_has_aligned_columns_and_relative_times() {
        let s = task_list(&[task()], &ctx(false));
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines.len(), 2, "{s}");
        let header = lines[0];
        for h in ["ID", "TITLE", "STATUS", "PHASE", "POD", "UPDATED"] {
            assert!(header.contains(h), "{header}");
        }
        assert!(!header.contains("CREATED BY"));
        // Columns line up: each value starts where its header starts.
        let col = |line: &str, text: &str| line.find(text).unwrap();
        assert_eq!(col(header, "STATUS"), col(lines[1], "active"));
        assert_eq!(col(header, "UPDATED"), col(lines[1], "5s ago"));
        assert!(lines[1].contains("planning") && lines[1].contains("running"));
    }

    #[test]
    fn wide_adds_columns_and_rfc3339_times() {
        let s = task_list(&[task()], &ctx(true));
        assert!(s.contains("CREATED BY") && s.contains("host-a") && s.contains("alice"));
        assert!(s.contains("1970-01-01T02:46:35Z"), "{s}");
        assert!(!s.contains(" ago"));
    }

    #[test]
    fn empty_list_says_so() {
        assert_eq!(task_list(&[], &ctx(false)), "No tasks found.");
        assert_eq!(pod_list(&[], &ctx(false)), "No pods running.");
    }

    #[test]
    fn detail_shows_the_pod_and_sorted_metadata() {
        let s = task_detail(&task(), &ctx(false));
        assert!(
            s.contains("running on host-a (pid 42, generation 3, pod p1)"),
            "{s}"
        );
        assert!(s.contains("a=1\n") || s.contains("a=1"), "{s}");
        assert!(s.find("a=1").unwrap() < s.find("b=2").unwrap());
        assert!(s.contains("10m ago"));
        assert!(!s.contains('\u{1b}'));
    }

    #[test]
    fn detail_colours_the_status_when_colour_is_on() {
        let mut c = ctx(false);
        c.color = true;
        let s = task_detail(&task(), &c);
        assert!(s.contains('\u{1b}'));
        assert!(s.contains("active"));
    }
}
