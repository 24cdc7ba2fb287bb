//! Events as `table`/`wide` text: a task's audit trail as one table, and
//! the live feed row by row (fixed column widths, since later rows cannot
//! re-align earlier ones).

use comfy_table::Cell;
use ipa_proto::v1 as pb;

use crate::output::Ctx;
use crate::output::fmt;

/// `tasks events ID`.
pub fn event_table(events: &[pb::Event], ctx: &Ctx) -> String {
    if events.is_empty() {
        return "No events.".to_owned();
    }
    let mut headers = vec!["VERSION", "TIME", "TYPE", "ACTOR", "DATA"];
    if ctx.wide {
        headers.extend(["POSITION", "CORRELATION"]);
    }
    let mut t = fmt::table(ctx, &headers);
    for e in events {
        let mut row = vec![
            Cell::new(e.version),
            Cell::new(fmt::time(ctx, e.occurred_at.as_ref())),
            Cell::new(&e.r#type),
            Cell::new(&e.actor_id),
            Cell::new(data(&e.data_json)),
        ];
        if ctx.wide {
            row.extend([Cell::new(e.position), Cell::new(&e.correlation_id)]);
        }
        t.add_row(row);
    }
    fmt::render(&t)
}

/// An empty data object prints as nothing.
fn data(json: &str) -> &str {
    if json == "{}" { "" } else { json }
}

/// Column widths of the live feed: positions up to 8 digits, a UUID, the
/// longest event type (`restart_scheduled`), a short actor.
const POS_W: usize = 8;
const TASK_W: usize = 36;
const TYPE_W: usize = 17;
const ACTOR_W: usize = 12;

/// The time column: `59s ago` in `table`, full RFC 3339 (micros) in `wide`.
fn time_width(ctx: &Ctx) -> usize {
    if ctx.wide { 27 } else { 8 }
}

/// The header line of `events watch`.
pub fn feed_header(ctx: &Ctx) -> String {
    let tw = time_width(ctx);
    let mut line = format!(
        "{:>POS_W$}  {:<tw$}  {:<TASK_W$}  {:<TYPE_W$}  {:<ACTOR_W$}",
        "POSITION", "TIME", "TASK", "TYPE", "ACTOR"
    );
    if ctx.wide {
        line.push_str(&format!("  {:<TASK_W$}", "CORRELATION"));
    }
    line.push_str("  DATA");
    line
}

/// One line of `events watch`.
pub fn feed_row(e: &pb::Event, ctx: &Ctx) -> String {
    let tw = time_width(ctx);
    let mut line = format!(
        "{:>POS_W$}  {:<tw$}  {:<TASK_W$}  {:<TYPE_W$}  {:<ACTOR_W$}",
        e.position,
        fmt::time(ctx, e.occurred_at.as_ref()),
        e.task_id,
        e.r#type,
        e.actor_id,
    );
    if ctx.wide {
        line.push_str(&format!("  {:<TASK_W$}", e.correlation_id));
    }
    line.push_str("  ");
    line.push_str(data(&e.data_json));
    line.trim_end().to_owned()
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
            now: SystemTime::UNIX_EPOCH + Duration::from_secs(100),
        }
    }

    fn event(pos: u64, ty: &str) -> pb::Event {
        pb::Event {
            position: pos,
            task_id: "0b6f5a4e-8d7c-4b3a-9e21-5f0c7d8e9a10".into(),
            version: 2,
            r#type: ty.into(),
            data_json: r#"{"pid":42}"#.into(),
            actor_id: "alice".into(),
            correlation_id: "c-1".into(),
            occurred_at: Some(Timestamp {
                seconds: 97,
                nanos: 0,
            }),
        }
    }

    #[test]
    fn feed_rows_line_up_with_the_header() {
        for wide in [false, true] {
            let c = ctx(wide);
            let header = feed_header(&c);
            for e in [
                event(7, "pod_started"),
                event(12345678, "restart_scheduled"),
            ] {
                let row = feed_row(&e, &c);
                for (h, v) in [("TASK", e.task_id.as_str()), ("TYPE", e.r#type.as_str())] {
                    assert_eq!(header.find(h), row.find(v), "{header}\n{row}");
                }
                assert_eq!(header.find("DATA"), row.find("{\"pid\""), "{header}\n{row}");
            }
        }
    }

    #[test]
    fn feed_times_relative_in_table_rfc3339_in_wide() {
        assert!(feed_row(&event(1, "x"), &ctx(false)).contains("3s ago"));
        assert!(feed_row(&event(1, "x"), &ctx(true)).contains("1970-01-01T00:01:37Z"));
    }

    #[test]
    fn audit_table_lists_every_event() {
        let s = event_table(
            &[event(1, "task_created"), event(2, "pod_started")],
            &ctx(false),
        );
        assert_eq!(s.lines().count(), 3);
        assert!(s.contains("pod_started") && s.contains("{\"pid\":42}"));
        assert_eq!(event_table(&[], &ctx(false)), "No events.");
    }
}
