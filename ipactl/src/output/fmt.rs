//! Small formatting pieces the views share: tables, enum values in their
//! short spelling, times (relative in `table`, RFC 3339 in `wide`) and the
//! colours of states.

use std::time::{Duration, SystemTime};

use comfy_table::{Attribute, Cell, Color, ContentArrangement, Table, presets};
use ipa_proto::v1 as pb;
use prost_types::Timestamp;

use super::Ctx;

/// Narrower terminals than this (or an unknown width) get no wrapping:
/// squeezing columns into a few characters helps nobody.
const MIN_WRAP_WIDTH: u16 = 60;

/// The common setup: no borders; styled only when colour is on (that is,
/// on a terminal); in `table` format on a terminal of known width, long
/// cells wrap to fit it. Without colour the terminal is never queried, so a
/// pipe or a file gets the same bytes whatever the environment.
fn base(ctx: &Ctx) -> Table {
    let mut t = Table::new();
    t.load_style(presets::NOTHING);
    if ctx.color {
        t.enforce_styling();
        if !ctx.wide && t.width().is_some_and(|w| w >= MIN_WRAP_WIDTH) {
            t.set_content_arrangement(ContentArrangement::Dynamic);
        }
    } else {
        t.force_no_tty();
    }
    t
}

/// A borderless table with aligned columns (like `kubectl get`), fitted to
/// the terminal's width when printing to one.
pub fn table(ctx: &Ctx, headers: &[&str]) -> Table {
    let mut t = base(ctx);
    t.set_header(headers.iter().map(|h| {
        let c = Cell::new(h);
        if ctx.color {
            c.add_attribute(Attribute::Bold)
        } else {
            c
        }
    }));
    // comfy-table pads every cell by one space on both sides; trim the
    // first column's left padding so rows start at the margin.
    if let Some(col) = t.column_mut(0) {
        col.set_padding((0, 1));
    }
    t
}

/// A two-column key/value table (the detail view of one object).
pub fn detail(ctx: &Ctx, rows: Vec<(&str, Cell)>) -> Table {
    let mut t = base(ctx);
    for (k, v) in rows {
        let key = Cell::new(format!("{k}:"));
        let key = if ctx.color {
            key.add_attribute(Attribute::Bold)
        } else {
            key
        };
        t.add_row(vec![key, v]);
    }
    if let Some(col) = t.column_mut(0) {
        col.set_padding((0, 1));
    }
    t
}

/// A table as text without trailing spaces on its lines.
pub fn render(t: &Table) -> String {
    t.lines()
        .map(|l| l.trim_end().to_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

/// A cell, coloured when colour is on.
pub fn colored(ctx: &Ctx, text: impl Into<String>, color: Option<Color>) -> Cell {
    let c = Cell::new(text.into());
    match color {
        Some(col) if ctx.color => c.fg(col),
        _ => c,
    }
}

/// `TASK_STATUS_ACTIVE` → `active`: the proto name without its enum's
/// prefix, lower case. Unknown numbers print as numbers.
pub fn short(proto_name: Option<&str>, prefix: &str, raw: i32) -> String {
    match proto_name {
        Some(n) => n.strip_prefix(prefix).unwrap_or(n).to_ascii_lowercase(),
        None => raw.to_string(),
    }
}

pub fn status(v: i32) -> String {
    let n = pb::TaskStatus::try_from(v).ok().map(|s| s.as_str_name());
    short(n, "TASK_STATUS_", v)
}

pub fn phase(v: i32) -> String {
    let n = pb::Phase::try_from(v).ok().map(|s| s.as_str_name());
    short(n, "PHASE_", v)
}

pub fn pod_status(v: i32) -> String {
    let n = pb::PodStatus::try_from(v).ok().map(|s| s.as_str_name());
    short(n, "POD_STATUS_", v)
}

pub fn host_state(v: i32) -> String {
    let n = pb::PodHostState::try_from(v).ok().map(|s| s.as_str_name());
    short(n, "POD_HOST_STATE_", v)
}

pub fn priority(v: i32) -> String {
    let n = pb::Priority::try_from(v).ok().map(|s| s.as_str_name());
    short(n, "PRIORITY_", v)
}

pub fn overlap(v: i32) -> String {
    let n = pb::Overlap::try_from(v).ok().map(|s| s.as_str_name());
    short(n, "OVERLAP_", v)
}

/// The colour of a task status.
pub fn status_color(v: i32) -> Option<Color> {
    match pb::TaskStatus::try_from(v).ok()? {
        pb::TaskStatus::Active => Some(Color::Green),
        pb::TaskStatus::Completed => Some(Color::Blue),
        pb::TaskStatus::Failed => Some(Color::Red),
        pb::TaskStatus::Cancelled => Some(Color::DarkGrey),
        _ => None,
    }
}

/// The colour of a pod status.
pub fn pod_color(v: i32) -> Option<Color> {
    match pb::PodStatus::try_from(v).ok()? {
        pb::PodStatus::Running => Some(Color::Green),
        pb::PodStatus::Starting | pb::PodStatus::Queued => Some(Color::Yellow),
        pb::PodStatus::Unknown => Some(Color::Red),
        _ => None,
    }
}

/// The colour of a pod-host state.
pub fn host_color(v: i32) -> Option<Color> {
    match pb::PodHostState::try_from(v).ok()? {
        pb::PodHostState::Ready => Some(Color::Green),
        pb::PodHostState::Unreachable | pb::PodHostState::Draining => Some(Color::Yellow),
        pb::PodHostState::Lost => Some(Color::Red),
        _ => None,
    }
}

/// A time: relative (`3m ago`, `in 20s`) in `table`, RFC 3339 in `wide`;
/// `-` when unset.
pub fn time(ctx: &Ctx, ts: Option<&Timestamp>) -> String {
    let Some(ts) = ts else {
        return "-".to_owned();
    };
    if ctx.wide {
        rfc3339(ts)
    } else {
        relative(system_time(ts), ctx.now)
    }
}

/// RFC 3339 in UTC with the precision the value has (up to microseconds).
pub fn rfc3339(ts: &Timestamp) -> String {
    let t = system_time(ts);
    if ts.nanos == 0 {
        humantime::format_rfc3339_seconds(t).to_string()
    } else if ts.nanos % 1_000_000 == 0 {
        humantime::format_rfc3339_millis(t).to_string()
    } else {
        humantime::format_rfc3339_micros(t).to_string()
    }
}

fn system_time(ts: &Timestamp) -> SystemTime {
    match ipa_proto::time::micros_from_timestamp(ts) {
        Some(us) => ipa_proto::time::system_time_from_micros(us),
        None => SystemTime::UNIX_EPOCH,
    }
}

/// `t` relative to `now` in one unit: `12s ago`, `5m ago`, `3h ago`,
/// `2d ago`, or `in 40s` for the future.
pub fn relative(t: SystemTime, now: SystemTime) -> String {
    match now.duration_since(t) {
        Ok(d) => format!("{} ago", span(d)),
        Err(e) => {
            let d = e.duration();
            // Clock skew between client and server: a few seconds in the
            // future is "now", not "in 1s".
            if d < Duration::from_secs(2) {
                "0s ago".to_owned()
            } else {
                format!("in {}", span(d))
            }
        }
    }
}

/// A duration in its largest sensible unit (`90s`, `12m`, `5h`, `3d`).
pub fn span(d: Duration) -> String {
    let s = d.as_secs();
    if s < 120 {
        format!("{s}s")
    } else if s < 120 * 60 {
        format!("{}m", s / 60)
    } else if s < 48 * 3600 {
        format!("{}h", s / 3600)
    } else {
        format!("{}d", s / 86_400)
    }
}

/// Seconds as a compact duration (`1h`, `90s`, `15m`).
pub fn seconds(secs: u64) -> String {
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(wide: bool) -> Ctx {
        Ctx {
            wide,
            color: false,
            now: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
        }
    }

    #[test]
    fn relative_times_use_one_unit() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let ago = |s| relative(now - Duration::from_secs(s), now);
        assert_eq!(ago(0), "0s ago");
        assert_eq!(ago(59), "59s ago");
        assert_eq!(ago(119), "119s ago");
        assert_eq!(ago(120), "2m ago");
        assert_eq!(ago(3 * 3600), "3h ago");
        assert_eq!(ago(3 * 86_400), "3d ago");
        assert_eq!(relative(now + Duration::from_secs(30), now), "in 30s");
        assert_eq!(relative(now + Duration::from_millis(900), now), "0s ago");
    }

    #[test]
    fn table_times_are_relative_and_wide_times_rfc3339() {
        let ts = Timestamp {
            seconds: 1_000_000 - 300,
            nanos: 250_000_000,
        };
        assert_eq!(time(&ctx(false), Some(&ts)), "4m ago");
        assert_eq!(time(&ctx(true), Some(&ts)), "1970-01-12T13:41:40.250Z");
        assert_eq!(time(&ctx(true), None), "-");
        let whole = Timestamp {
            seconds: 0,
            nanos: 0,
        };
        assert_eq!(rfc3339(&whole), "1970-01-01T00:00:00Z");
        let micro = Timestamp {
            seconds: 0,
            nanos: 123_456_000,
        };
        assert_eq!(rfc3339(&micro), "1970-01-01T00:00:00.123456Z");
    }

    #[test]
    fn enum_values_print_short() {
        assert_eq!(status(pb::TaskStatus::Active as i32), "active");
        assert_eq!(
            phase(pb::Phase::SpecClarification as i32),
            "spec_clarification"
        );
        assert_eq!(pod_status(pb::PodStatus::Unknown as i32), "unknown");
        assert_eq!(host_state(pb::PodHostState::Lost as i32), "lost");
        assert_eq!(priority(pb::Priority::Critical as i32), "critical");
        assert_eq!(overlap(pb::Overlap::BufferOne as i32), "buffer_one");
        // A value newer than this client still prints.
        assert_eq!(status(99), "99");
    }

    #[test]
    fn tables_without_colour_have_no_escape_codes() {
        let c = ctx(false);
        let mut t = table(&c, &["A", "B"]);
        t.add_row(vec![colored(&c, "active", status_color(2)), Cell::new("x")]);
        let s = render(&t);
        assert!(!s.contains('\u{1b}'), "{s:?}");
        assert_eq!(s.lines().next(), Some("A       B"));
        let mut colored_ctx = c;
        colored_ctx.color = true;
        let mut t = table(&colored_ctx, &["A"]);
        t.add_row(vec![colored(&colored_ctx, "active", status_color(2))]);
        assert!(render(&t).contains('\u{1b}'));
    }
}
