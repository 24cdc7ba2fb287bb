//! When a schedule fires: a cron expression read in an IANA time zone, or
//! a fixed interval. Pure: every answer is computed from an instant the
//! caller passes in (unix micros), never from the clock.
//!
//! Cron expressions are parsed and searched by `croner` (5 fields, or 6
//! with seconds first; `@hourly`-style nicknames too) in a `chrono-tz` zone
//! compiled into the binary. Daylight saving time follows the rules of
//! vixie-cron and the Open Cron Pattern Specification, which croner
//! implements:
//!
//! - a local time **skipped** by a spring-forward (02:30 on the night the
//!   clock jumps from 02:00 to 03:00): a fixed-time expression (`30 2 * * *`)
//!   fires once, at the first instant after the gap (03:00); an expression
//!   with a wildcard or step in its time fields (`*/15 * * * *`) simply
//!   has no fire times inside the gap;
//! - a local time **repeated** by a fall-back (01:30 happens twice): a
//!   fixed-time expression fires once, at the first pass; a wildcard/step
//!   expression fires on both passes, so it keeps its real-time rhythm.
//!
//! So a daily job runs exactly once every day, and a frequent job never
//! pauses for an hour nor doubles up. (Temporal matches wall-clock times
//! literally instead: its 02:30 job does not run on the spring-forward day
//! and its 01:30 job runs twice on the fall-back day. We chose "once a day"
//! because a skipped or doubled nightly run is the surprise users of a task
//! scheduler report as a bug.)
//!
//! Intervals are real time and ignore the zone: fire times are the whole
//! multiples of the interval since the Unix epoch (as Temporal's interval
//! specs with no offset), so every-3600-seconds fires on the hour in UTC and
//! the rhythm survives restarts without storing an anchor.

use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

use crate::error::{Error, Result};

use crate::domain::limits::{MAX_CRON_CHARS, MAX_INTERVAL_SECONDS, MAX_TIMEZONE_CHARS};

const MICROS: i64 = 1_000_000;

/// The times a schedule fires at.
#[derive(Debug, Clone)]
pub enum Timetable {
    /// A cron expression in a time zone.
    Cron {
        /// The expression as the caller wrote it (trimmed).
        expr: String,
        /// Parsed.
        cron: Box<Cron>,
        /// The zone it is read in.
        tz: Tz,
    },
    /// Every `seconds` seconds, aligned to the Unix epoch.
    Interval {
        /// The period, 1 ..= [`MAX_INTERVAL_SECONDS`].
        seconds: u64,
    },
}

impl PartialEq for Timetable {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Cron { expr: a, tz: x, .. }, Self::Cron { expr: b, tz: y, .. }) => {
                a == b && x == y
            }
            (Self::Interval { seconds: a }, Self::Interval { seconds: b }) => a == b,
            _ => false,
        }
    }
}

impl Timetable {
    /// Validates the timing fields of CreateSchedule: exactly one of `cron`
    /// and `interval_seconds`, a parsable expression, a known zone (empty
    /// means UTC). Every problem is INVALID_SCHEDULE, naming what is wrong.
    pub fn parse(cron: &str, interval_seconds: u64, timezone: &str) -> Result<Self> {
        let cron = cron.trim();
        let tz = parse_zone(timezone)?;
        match (cron.is_empty(), interval_seconds) {
            (true, 0) => Err(invalid("set one of cron and interval_seconds")),
            (false, n) if n != 0 => Err(invalid(
                "set only one of cron and interval_seconds, not both",
            )),
            (true, n) if n > MAX_INTERVAL_SECONDS => Err(invalid(format!(
                "interval_seconds {n} is over the limit of {MAX_INTERVAL_SECONDS} (366 days)"
            ))),
            (true, seconds) => {
                if tz != Tz::UTC {
                    return Err(invalid(
                        "timezone applies to cron expressions only; intervals are real time",
                    ));
                }
                Ok(Self::Interval { seconds })
            }
            (false, _) => {
                let parsed = parse_cron(cron)?;
                let t = Self::Cron {
                    expr: cron.to_owned(),
                    cron: Box::new(parsed),
                    tz,
                };
                Ok(t)
            }
        }
    }

    /// A timetable read back from our own database (validated when it was
    /// created).
    pub fn from_db(cron: &str, interval_seconds: u64, timezone: &str) -> Result<Self> {
        Self::parse(cron, interval_seconds, timezone)
            .map_err(|e| Error::Internal(format!("stored schedule does not parse: {e}")))
    }

    /// The cron expression, or "" for an interval.
    pub fn cron(&self) -> &str {
        match self {
            Self::Cron { expr, .. } => expr,
            Self::Interval { .. } => "",
        }
    }

    /// The interval, or 0 for a cron expression.
    pub fn interval_seconds(&self) -> u64 {
        match self {
            Self::Cron { .. } => 0,
            Self::Interval { seconds } => *seconds,
        }
    }

    /// The IANA name of the zone (`UTC` for intervals).
    pub fn timezone(&self) -> &'static str {
        match self {
            Self::Cron { tz, .. } => tz.name(),
            Self::Interval { .. } => Tz::UTC.name(),
        }
    }

    /// The first fire time strictly after `after` (unix micros), or `None`
    /// when there is none (a cron date that never comes, or past the year
    /// 5000 that the search stops at).
    pub fn next_after(&self, after: i64) -> Option<i64> {
        match self {
            Self::Interval { seconds } => {
                let step = i64::try_from(*seconds).ok()?.checked_mul(MICROS)?;
                after.div_euclid(step).checked_add(1)?.checked_mul(step)
            }
            Self::Cron { cron, tz, .. } => {
                // Whole seconds: croner searches at second granularity, and a
                // fire time is always a whole second, so flooring keeps the
                // answer strictly after `after`.
                let secs = after.div_euclid(MICROS);
                let start: DateTime<Tz> = Utc.timestamp_opt(secs, 0).single()?.with_timezone(tz);
                let next = cron.find_next_occurrence(&start, false).ok()?;
                next.timestamp().checked_mul(MICROS)
            }
        }
    }

    /// How many fire times lie in `[from, until)`, counting at most `cap`,
    /// and the first fire time at or after `until` (or after the `cap`-th
    /// counted one when the cap stopped the count). `from` must be a fire
    /// time. Used to skip missed fire times in bounded steps.
    pub fn count_until(&self, from: i64, until: i64, cap: u64) -> (u64, Option<i64>) {
        if from >= until {
            return (0, Some(from));
        }
        if let Self::Interval { seconds } = self {
            // Arithmetic: fire times are from, from + step, …
            let step = (*seconds as i64).saturating_mul(MICROS).max(1);
            let n = ((until - from) + step - 1) / step;
            let n = (n as u64).min(cap);
            return (n, from.checked_add((n as i64).saturating_mul(step)));
        }
        let mut n = 0;
        let mut t = Some(from);
        while let Some(at) = t {
            if at >= until || n >= cap {
                break;
            }
            n += 1;
            t = self.next_after(at);
        }
        (n, t)
    }
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::InvalidSchedule(msg.into())
}

/// An IANA zone name; empty means UTC.
fn parse_zone(s: &str) -> Result<Tz> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(Tz::UTC);
    }
    if s.chars().count() > MAX_TIMEZONE_CHARS {
        return Err(invalid(format!(
            "timezone is longer than {MAX_TIMEZONE_CHARS} characters"
        )));
    }
    Tz::from_str(s).map_err(|_| {
        invalid(format!(
            "timezone {:?} is not an IANA time zone name (e.g. Europe/Berlin, America/New_York, UTC)",
            s.chars().take(MAX_TIMEZONE_CHARS).collect::<String>()
        ))
    })
}

/// 5 fields (minute hour day-of-month month day-of-week), 6 with seconds
/// first, or a nickname such as `@daily`.
fn parse_cron(s: &str) -> Result<Cron> {
    let n = s.chars().count();
    if n > MAX_CRON_CHARS {
        return Err(invalid(format!(
            "cron is {n} characters long; the limit is {MAX_CRON_CHARS}"
        )));
    }
    let fields = s.split_whitespace().count();
    if !s.starts_with('@') && !(5..=6).contains(&fields) {
        return Err(invalid(format!(
            "cron {s:?} has {fields} fields; write 5 (minute hour day-of-month month \
             day-of-week) or 6 (seconds first)"
        )));
    }
    let cron = CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(s)
        .map_err(|e| invalid(format!("cron {s:?} does not parse: {e}")))?;
    Ok(cron)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unix micros of a local wall time in `tz` (the earlier pass when it
    /// is repeated).
    fn local(tz: Tz, y: i32, mo: u32, d: u32, h: u32, mi: u32) -> i64 {
        tz.with_ymd_and_hms(y, mo, d, h, mi, 0)
            .earliest()
            .expect("a time that exists")
            .timestamp()
            * MICROS
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> i64 {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
            .single()
            .unwrap()
            .timestamp()
            * MICROS
    }

    /// The next `n` fire times after `from`.
    fn fires(t: &Timetable, from: i64, n: usize) -> Vec<i64> {
        let mut out = Vec::new();
        let mut at = from;
        while out.len() < n {
            at = t.next_after(at).expect("a next fire time");
            out.push(at);
        }
        out
    }

    fn berlin() -> Tz {
        chrono_tz::Europe::Berlin
    }

    fn err(r: Result<Timetable>) -> String {
        match r {
            Err(Error::InvalidSchedule(m)) => m,
            other => panic!("expected INVALID_SCHEDULE, got {other:?}"),
        }
    }

    #[test]
    fn exactly_one_of_cron_and_interval() {
        assert!(err(Timetable::parse("", 0, "")).contains("one of"));
        assert!(err(Timetable::parse("* * * * *", 60, "")).contains("not both"));
        assert_eq!(
            Timetable::parse("", 60, "").unwrap(),
            Timetable::Interval { seconds: 60 }
        );
        assert_eq!(
            Timetable::parse("  */5 * * * * ", 0, "").unwrap().cron(),
            "*/5 * * * *"
        );
    }

    #[test]
    fn cron_field_counts_and_syntax() {
        for ok in ["* * * * *", "0 */2 * * * *", "@daily", "30 2 * * MON-FRI"] {
            assert!(Timetable::parse(ok, 0, "").is_ok(), "{ok}");
        }
        for bad in [
            "* * * *",
            "0 0 0 * * * 2030",
            "61 * * * *",
            "* 25 * * *",
            "not cron at all",
            "*/0 * * * *",
        ] {
            err(Timetable::parse(bad, 0, ""));
        }
        let long = format!("{} * * * *", "1,".repeat(70));
        assert!(err(Timetable::parse(&long, 0, "")).contains("limit"));
    }

    #[test]
    fn zones_are_iana_names() {
        let t = Timetable::parse("0 9 * * *", 0, "America/New_York").unwrap();
        assert_eq!(t.timezone(), "America/New_York");
        assert_eq!(
            Timetable::parse("0 9 * * *", 0, "").unwrap().timezone(),
            "UTC"
        );
        assert!(err(Timetable::parse("0 9 * * *", 0, "Mars/Olympus")).contains("IANA"));
        assert!(err(Timetable::parse("0 9 * * *", 0, "europe/berlin")).contains("IANA"));
        assert!(err(Timetable::parse("", 60, "Europe/Berlin")).contains("cron expressions only"));
    }

    #[test]
    fn interval_limits_both_sides() {
        assert!(Timetable::parse("", 1, "").is_ok());
        assert!(Timetable::parse("", MAX_INTERVAL_SECONDS, "").is_ok());
        assert!(err(Timetable::parse("", MAX_INTERVAL_SECONDS + 1, "")).contains("limit"));
    }

    #[test]
    fn intervals_are_epoch_aligned_and_strictly_after() {
        let t = Timetable::Interval { seconds: 60 };
        let base = utc(2026, 1, 1, 10, 0, 0);
        assert_eq!(t.next_after(base), Some(base + 60 * MICROS));
        assert_eq!(t.next_after(base - 1), Some(base));
        assert_eq!(t.next_after(base + 59_999_999), Some(base + 60 * MICROS));
        assert_eq!(t.next_after(base + 1), Some(base + 60 * MICROS));
    }

    /// Europe/Berlin springs forward on 2026-03-29 at 02:00 → 03:00 (CET →
    /// CEST): 02:30 does not exist that night.
    #[test]
    fn spring_forward_fixed_time_fires_once_after_the_gap() {
        let t = Timetable::parse("30 2 * * *", 0, "Europe/Berlin").unwrap();
        let got = fires(&t, local(berlin(), 2026, 3, 27, 12, 0), 3);
        assert_eq!(
            got,
            vec![
                // 2026-03-28 02:30 CET = 01:30 UTC
                utc(2026, 3, 28, 1, 30, 0),
                // 02:30 skipped: the first instant after the gap, 03:00
                // CEST = 01:00 UTC, once.
                utc(2026, 3, 29, 1, 0, 0),
                // 2026-03-30 02:30 CEST = 00:30 UTC
                utc(2026, 3, 30, 0, 30, 0),
            ]
        );
    }

    #[test]
    fn spring_forward_wildcard_has_no_fires_in_the_gap() {
        let t = Timetable::parse("*/30 * * * *", 0, "Europe/Berlin").unwrap();
        let got = fires(&t, local(berlin(), 2026, 3, 29, 1, 0), 3);
        // 01:30 CET, then 03:00 CEST (02:00 and 02:30 never happen): 30
        // real minutes apart throughout.
        assert_eq!(
            got,
            vec![
                utc(2026, 3, 29, 0, 30, 0),
                utc(2026, 3, 29, 1, 0, 0),
                utc(2026, 3, 29, 1, 30, 0),
            ]
        );
    }

    /// Europe/Berlin falls back on 2026-10-25 at 03:00 → 02:00 (CEST →
    /// CET): 02:30 happens twice.
    #[test]
    fn fall_back_fixed_time_fires_once_on_the_first_pass() {
        let t = Timetable::parse("30 2 * * *", 0, "Europe/Berlin").unwrap();
        let got = fires(&t, local(berlin(), 2026, 10, 24, 12, 0), 2);
        assert_eq!(
            got,
            vec![
                // First pass: 02:30 CEST = 00:30 UTC; the second pass (01:30
                // UTC) does not fire.
                utc(2026, 10, 25, 0, 30, 0),
                // Next day 02:30 CET = 01:30 UTC.
                utc(2026, 10, 26, 1, 30, 0),
            ]
        );
    }

    #[test]
    fn fall_back_wildcard_fires_on_both_passes() {
        let t = Timetable::parse("0,30 * * * *", 0, "Europe/Berlin").unwrap();
        // From 01:45 CEST (23:45 UTC).
        let got = fires(&t, utc(2026, 10, 24, 23, 45, 0), 5);
        assert_eq!(
            got,
            vec![
                utc(2026, 10, 25, 0, 0, 0),  // 02:00 CEST
                utc(2026, 10, 25, 0, 30, 0), // 02:30 CEST
                utc(2026, 10, 25, 1, 0, 0),  // 02:00 CET (second pass)
                utc(2026, 10, 25, 1, 30, 0), // 02:30 CET (second pass)
                utc(2026, 10, 25, 2, 0, 0),  // 03:00 CET
            ]
        );
    }

    #[test]
    fn intervals_ignore_daylight_saving() {
        let t = Timetable::parse("", 3600, "").unwrap();
        let got = fires(&t, utc(2026, 3, 28, 23, 30, 0), 4);
        for pair in got.windows(2) {
            assert_eq!(pair[1] - pair[0], 3600 * MICROS);
        }
        assert_eq!(got[0], utc(2026, 3, 29, 0, 0, 0));
    }

    #[test]
    fn six_fields_have_seconds_first() {
        let t = Timetable::parse("*/10 * * * * *", 0, "").unwrap();
        let base = utc(2026, 1, 1, 0, 0, 0);
        assert_eq!(
            fires(&t, base, 2),
            vec![base + 10 * MICROS, base + 20 * MICROS]
        );
        // Sub-second starts still give the next whole fire time after them.
        assert_eq!(t.next_after(base + 9_999_999), Some(base + 10 * MICROS));
    }

    #[test]
    fn a_date_that_never_comes_has_no_next() {
        let t = Timetable::parse("0 0 30 2 *", 0, "").unwrap();
        assert_eq!(t.next_after(utc(2026, 1, 1, 0, 0, 0)), None);
    }

    #[test]
    fn counting_missed_fires_is_bounded() {
        let t = Timetable::Interval { seconds: 10 };
        let from = utc(2026, 1, 1, 0, 0, 0);
        assert_eq!(
            t.count_until(from, from + 35 * MICROS, 100),
            (4, Some(from + 40 * MICROS))
        );
        assert_eq!(
            t.count_until(from, from + 35 * MICROS, 2),
            (2, Some(from + 20 * MICROS))
        );
        assert_eq!(t.count_until(from, from, 5), (0, Some(from)));
        let c = Timetable::parse("*/10 * * * * *", 0, "").unwrap();
        assert_eq!(
            c.count_until(from, from + 35 * MICROS, 100),
            (4, Some(from + 40 * MICROS))
        );
        assert_eq!(
            c.count_until(from, from + 35 * MICROS, 3),
            (3, Some(from + 30 * MICROS))
        );
    }
}
