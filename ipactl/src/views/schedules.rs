//! Schedules as `table`/`wide` text.

use comfy_table::Cell;
use ipa_proto::v1 as pb;

use crate::output::Ctx;
use crate::output::fmt;

/// `cron 0 3 * * * (Europe/Paris)` or `every 15m`.
fn timetable(s: &pb::Schedule) -> String {
    if s.cron.is_empty() {
        format!("every {}", fmt::seconds(s.interval_seconds))
    } else {
        let tz = if s.timezone.is_empty() {
            "UTC"
        } else {
            &s.timezone
        };
        format!("cron {} ({tz})", s.cron)
    }
}

/// `schedules list`.
pub fn schedule_list(list: &[pb::Schedule], ctx: &Ctx) -> String {
    if list.is_empty() {
        return "No schedules.".to_owned();
    }
    let mut headers = vec!["NAME", "WHEN", "PAUSED", "NEXT FIRE", "LAST FIRE", "FIRED"];
    if ctx.wide {
        headers.extend(["ID", "OVERLAP", "SKIPPED", "CREATED BY"]);
    }
    let mut t = fmt::table(ctx, &headers);
    for s in list {
        let mut row = vec![
            Cell::new(&s.name),
            Cell::new(timetable(s)),
            Cell::new(if s.paused { "yes" } else { "no" }),
            Cell::new(fmt::time(ctx, s.next_fire_at.as_ref())),
            Cell::new(fmt::time(ctx, s.last_fire_at.as_ref())),
            Cell::new(s.fired_count),
        ];
        if ctx.wide {
            row.extend([
                Cell::new(&s.schedule_id),
                Cell::new(fmt::overlap(s.overlap)),
                Cell::new(s.skipped_count),
                Cell::new(&s.created_by),
            ]);
        }
        t.add_row(row);
    }
    fmt::render(&t)
}

/// `schedules get` (and the answer of create, pause, resume).
pub fn schedule_detail(s: &pb::Schedule, ctx: &Ctx) -> String {
    let task = s.task.clone().unwrap_or_default();
    let mut rows = vec![
        ("ID", Cell::new(&s.schedule_id)),
        ("Name", Cell::new(&s.name)),
        ("When", Cell::new(timetable(s))),
        ("Paused", Cell::new(if s.paused { "yes" } else { "no" })),
        ("Overlap", Cell::new(fmt::overlap(s.overlap))),
        (
            "Catch-up window",
            Cell::new(fmt::seconds(u64::from(s.catchup_window_seconds))),
        ),
        (
            "Next fire",
            Cell::new(fmt::time(ctx, s.next_fire_at.as_ref())),
        ),
        (
            "Last fire",
            Cell::new(fmt::time(ctx, s.last_fire_at.as_ref())),
        ),
        ("Fired", Cell::new(s.fired_count)),
        ("Skipped", Cell::new(s.skipped_count)),
        ("Created by", Cell::new(&s.created_by)),
        ("Created", Cell::new(fmt::time(ctx, s.created_at.as_ref()))),
        ("Task title", Cell::new(&task.title)),
        (
            "Task template",
            Cell::new(if task.template.is_empty() {
                "default"
            } else {
                &task.template
            }),
        ),
        (
            "Task priority",
            Cell::new(if task.priority == pb::Priority::Unspecified as i32 {
                "medium (default)".to_owned()
            } else {
                fmt::priority(task.priority)
            }),
        ),
    ];
    if let Some(t) = task.timeout_seconds {
        rows.push(("Task timeout", Cell::new(fmt::seconds(u64::from(t)))));
    }
    fmt::render(&fmt::detail(ctx, rows))
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
            now: SystemTime::UNIX_EPOCH + Duration::from_secs(1000),
        }
    }

    fn schedule() -> pb::Schedule {
        pb::Schedule {
            schedule_id: "s-1".into(),
            name: "nightly".into(),
            cron: "0 3 * * *".into(),
            timezone: "Europe/Paris".into(),
            next_fire_at: Some(Timestamp {
                seconds: 1000 + 3600 * 5,
                nanos: 0,
            }),
            fired_count: 4,
            overlap: pb::Overlap::CancelPrevious as i32,
            task: Some(pb::ScheduleTask {
                title: "nightly build".into(),
                timeout_seconds: Some(900),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn list_shows_timetable_and_next_fire() {
        let s = schedule_list(&[schedule()], &ctx(false));
        assert!(s.contains("cron 0 3 * * * (Europe/Paris)"), "{s}");
        assert!(s.contains("in 5h"), "{s}");
        let every = pb::Schedule {
            cron: String::new(),
            interval_seconds: 900,
            ..schedule()
        };
        assert!(schedule_list(&[every], &ctx(false)).contains("every 15m"));
        assert!(schedule_list(&[schedule()], &ctx(true)).contains("cancel_previous"));
    }

    #[test]
    fn detail_shows_the_task_template() {
        let s = schedule_detail(&schedule(), &ctx(false));
        assert!(s.contains("nightly build"), "{s}");
        assert!(s.contains("15m"), "{s}");
        assert!(s.contains("medium (default)"), "{s}");
    }
}
