//! What a fire does, as pure functions: whether a due fire time is on time
//! or was missed (the catch-up window), and what the overlap policy makes of
//! it while the schedule's previous task still runs. The writer reads the
//! schedule row and the previous task inside its transaction, asks these
//! functions, and applies the answer (store/schedules.rs), so the rules are
//! tested with injected instants and no database.

use super::Timetable;

/// Fires later than their time by less than this count as on time, however
/// small the schedule's catch-up window: a fire held up by a busy machine
/// or a quick restart is late, not missed. (Temporal uses the same floor.)
pub const MIN_CATCHUP_WINDOW_SECONDS: u32 = 10;
/// Most missed fire times one write skips. After a long outage of a
/// frequent schedule the skipping continues in further writes, so no single
/// transaction (which holds the writer) grows with the outage.
pub const MAX_SKIP_STEP: u64 = 10_000;

macro_rules! overlap_enum {
    ($($(#[$m:meta])* $v:ident => $db:literal),+ $(,)?) => {
        /// What a fire does while the schedule's previous task (the last one
        /// it made that is not terminal) still runs; the meanings are
        /// Temporal's schedule overlap policies.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
        pub enum Overlap { $($(#[$m])* $v),+ }

        impl Overlap {
            /// Every policy.
            pub const ALL: &'static [Self] = &[$(Self::$v),+];
            /// The database spelling.
            pub const fn as_db(self) -> &'static str {
                match self { $(Self::$v => $db),+ }
            }
            /// Parses the database spelling.
            pub fn from_db(s: &str) -> crate::error::Result<Self> {
                match s {
                    $($db => Ok(Self::$v),)+
                    other => Err(crate::error::Error::Internal(format!(
                        "bad overlap policy in database: {other:?}"
                    ))),
                }
            }
        }
    };
}

overlap_enum! {
    /// Skip the fire (counted in `skipped_count`). The default.
    #[default]
    Skip => "skip",
    /// Keep at most one fire waiting; it starts when the previous task
    /// ends. Further fires while one waits are skipped.
    BufferOne => "buffer_one",
    /// Start a new task anyway.
    AllowAll => "allow_all",
    /// Cancel the previous task, then start a new one.
    CancelPrevious => "cancel_previous",
}

/// Whether a due fire time still fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lateness {
    /// Within the catch-up window: fire it (overlap rules apply).
    OnTime,
    /// Older than the window: `skipped` fire times (this one and the
    /// following ones that are also too old, at most [`MAX_SKIP_STEP`]) are
    /// skipped and counted, and the schedule continues at `next`.
    Missed {
        /// Fire times skipped by this step.
        skipped: u64,
        /// The next fire time to consider (`None`: the timetable ends).
        next: Option<i64>,
    },
}

/// The catch-up decision for the fire time `due` at `now` (unix micros).
pub fn lateness(timetable: &Timetable, due: i64, now: i64, window_seconds: u32) -> Lateness {
    let window = i64::from(window_seconds.max(MIN_CATCHUP_WINDOW_SECONDS)) * 1_000_000;
    let oldest_on_time = now.saturating_sub(window);
    if due >= oldest_on_time {
        return Lateness::OnTime;
    }
    let (skipped, next) = timetable.count_until(due, oldest_on_time, MAX_SKIP_STEP);
    Lateness::Missed {
        skipped: skipped.max(1),
        next,
    }
}

/// What one fire does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FireAction {
    /// Create and start a task.
    Start,
    /// Cancel the running previous task, then create and start a task.
    CancelPreviousThenStart,
    /// Remember this fire; its task starts when the previous one ends.
    Buffer,
    /// Nothing runs for this fire; `skipped_count` grows by one.
    Skip,
}

/// The overlap decision. `previous_running`: the last task the schedule
/// made exists and is not terminal. `buffered`: a fire is already waiting.
pub fn decide_overlap(overlap: Overlap, previous_running: bool, buffered: bool) -> FireAction {
    if !previous_running {
        return FireAction::Start;
    }
    match overlap {
        Overlap::Skip => FireAction::Skip,
        Overlap::BufferOne if buffered => FireAction::Skip,
        Overlap::BufferOne => FireAction::Buffer,
        Overlap::AllowAll => FireAction::Start,
        Overlap::CancelPrevious => FireAction::CancelPreviousThenStart,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000;

    fn every(seconds: u64) -> Timetable {
        Timetable::Interval { seconds }
    }

    #[test]
    fn on_time_up_to_the_window_both_sides() {
        let t = every(60);
        let due = 1_000 * 60 * S;
        // Window 120 s: 120 s late is on time, one micro more is missed.
        assert_eq!(lateness(&t, due, due, 120), Lateness::OnTime);
        assert_eq!(lateness(&t, due, due + 120 * S, 120), Lateness::OnTime);
        assert_eq!(
            lateness(&t, due, due + 120 * S + 1, 120),
            Lateness::Missed {
                skipped: 1,
                next: Some(due + 60 * S)
            }
        );
    }

    #[test]
    fn small_windows_count_as_the_floor() {
        let t = every(60);
        let due = 1_000 * 60 * S;
        let floor = i64::from(MIN_CATCHUP_WINDOW_SECONDS) * S;
        assert_eq!(lateness(&t, due, due + floor, 0), Lateness::OnTime);
        assert!(matches!(
            lateness(&t, due, due + floor + 1, 0),
            Lateness::Missed { skipped: 1, .. }
        ));
    }

    #[test]
    fn missed_fires_are_skipped_up_to_the_window_then_fire() {
        // Every 10 s, down for 100 s, window 30 s: the fires older than
        // now - 30 s are skipped in one step; the ones after fire.
        let t = every(10);
        let due = 1_000 * 10 * S;
        let now = due + 100 * S;
        assert_eq!(
            lateness(&t, due, now, 30),
            Lateness::Missed {
                skipped: 7,
                next: Some(due + 70 * S)
            }
        );
        assert_eq!(lateness(&t, due + 70 * S, now, 30), Lateness::OnTime);
    }

    #[test]
    fn skipping_is_bounded_per_step() {
        let t = every(1);
        let due = 1_000_000 * S;
        let now = due + (MAX_SKIP_STEP as i64) * 10 * S;
        match lateness(&t, due, now, 0) {
            Lateness::Missed { skipped, next } => {
                assert_eq!(skipped, MAX_SKIP_STEP);
                assert_eq!(next, Some(due + MAX_SKIP_STEP as i64 * S));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn overlap_policies() {
        use FireAction::*;
        for o in Overlap::ALL {
            assert_eq!(decide_overlap(*o, false, false), Start, "{o:?}");
            assert_eq!(decide_overlap(*o, false, true), Start, "{o:?}");
        }
        assert_eq!(decide_overlap(Overlap::Skip, true, false), Skip);
        assert_eq!(decide_overlap(Overlap::BufferOne, true, false), Buffer);
        assert_eq!(decide_overlap(Overlap::BufferOne, true, true), Skip);
        assert_eq!(decide_overlap(Overlap::AllowAll, true, true), Start);
        assert_eq!(
            decide_overlap(Overlap::CancelPrevious, true, false),
            CancelPreviousThenStart
        );
        assert_eq!(Overlap::default(), Overlap::Skip);
        for o in Overlap::ALL {
            assert_eq!(Overlap::from_db(o.as_db()).unwrap(), *o);
        }
    }
}
