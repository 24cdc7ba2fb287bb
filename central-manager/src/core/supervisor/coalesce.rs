//! The `phase_changed` rate limit (API.md Limits): at most [`MAX_PER_WINDOW`]
//! phase changes per pod are recorded in any [`WINDOW`]. A pod alternating
//! phases on fd 3 as fast as it can must not cost one fsync'd event per
//! line.
//!
//! A change over the limit is held as the pod's *pending* change (a newer
//! one replaces it) and recorded when the window has room again, with
//! `coalesced` = how many changes since the previous recorded one were not
//! recorded one by one. So the trail always ends on the pod's latest phase,
//! and the live version (GetTask) still counts every line: only the audit
//! trail is thinned. A pod that ends first has its pending change recorded
//! before its end.
//!
//! Pure: time is an argument.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

/// The sliding window of the limit.
pub const WINDOW: Duration = Duration::from_secs(1);
/// Phase changes recorded per pod per [`WINDOW`].
pub const MAX_PER_WINDOW: usize = 10;

/// Pods tracked before idle ones are swept (bounds memory when pods come
/// and go without ending cleanly).
const SWEEP_ABOVE: usize = 4096;

/// A phase change to record, whatever its payload `P`.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded<P> {
    pub change: P,
    /// Changes since the previous recorded one that were folded into this.
    pub coalesced: u32,
}

#[derive(Debug)]
struct PodWindow<P> {
    /// When the last (up to [`MAX_PER_WINDOW`]) changes were recorded.
    recorded: VecDeque<Instant>,
    pending: Option<P>,
    /// Changes not recorded one by one since the last recorded change.
    skipped: u32,
}

impl<P> PodWindow<P> {
    fn new() -> Self {
        Self {
            recorded: VecDeque::with_capacity(MAX_PER_WINDOW),
            pending: None,
            skipped: 0,
        }
    }

    /// When the window has room again (None: it has room now).
    fn room_at(&self, now: Instant) -> Option<Instant> {
        if self.recorded.len() < MAX_PER_WINDOW {
            return None;
        }
        let oldest = *self.recorded.front()?;
        let at = oldest + WINDOW;
        (at > now).then_some(at)
    }

    fn record(&mut self, now: Instant) {
        if self.recorded.len() == MAX_PER_WINDOW {
            self.recorded.pop_front();
        }
        self.recorded.push_back(now);
    }
}

/// Per-pod rate limiting of phase changes, keyed by pod id (ordered, so
/// [`PhaseCoalescer::due`] releases held changes in a replayable order).
#[derive(Debug)]
pub struct PhaseCoalescer<P> {
    pods: BTreeMap<String, PodWindow<P>>,
}

impl<P> Default for PhaseCoalescer<P> {
    fn default() -> Self {
        Self {
            pods: BTreeMap::new(),
        }
    }
}

impl<P> PhaseCoalescer<P> {
    /// A phase change of `pod_id` at `now`: `Some` to record it now, `None`
    /// when it is held (it will come out of [`Self::due`]).
    pub fn offer(&mut self, pod_id: &str, change: P, now: Instant) -> Option<Recorded<P>> {
        if self.pods.len() > SWEEP_ABOVE {
            self.sweep(now);
        }
        let w = self
            .pods
            .entry(pod_id.to_owned())
            .or_insert_with(PodWindow::new);
        if w.room_at(now).is_some() {
            if w.pending.replace(change).is_some() {
                w.skipped = w.skipped.saturating_add(1);
            }
            return None;
        }
        // Room now: anything still held is superseded by this change.
        if w.pending.take().is_some() {
            w.skipped = w.skipped.saturating_add(1);
        }
        w.record(now);
        Some(Recorded {
            change,
            coalesced: std::mem::take(&mut w.skipped),
        })
    }

    /// Held changes whose pod has room again at `now`, to record now.
    pub fn due(&mut self, now: Instant) -> Vec<Recorded<P>> {
        let mut out = Vec::new();
        for w in self.pods.values_mut() {
            if w.room_at(now).is_none()
                && let Some(change) = w.pending.take()
            {
                w.record(now);
                out.push(Recorded {
                    change,
                    coalesced: std::mem::take(&mut w.skipped),
                });
            }
        }
        out
    }

    /// When [`Self::due`] will next have something.
    pub fn next_due(&self, now: Instant) -> Option<Instant> {
        self.pods
            .values()
            .filter(|w| w.pending.is_some())
            .map(|w| w.room_at(now).unwrap_or(now))
            .min()
    }

    /// The pod ended: forget it, returning its held change (to record
    /// before its end).
    pub fn forget(&mut self, pod_id: &str) -> Option<Recorded<P>> {
        let mut w = self.pods.remove(pod_id)?;
        let change = w.pending.take()?;
        Some(Recorded {
            change,
            coalesced: w.skipped,
        })
    }

    /// Pods tracked (for tests and the sweep).
    pub fn len(&self) -> usize {
        self.pods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    /// Drops pods with nothing held whose window is over.
    fn sweep(&mut self, now: Instant) {
        self.pods.retain(|_, w| {
            w.pending.is_some()
                || w.recorded
                    .back()
                    .is_some_and(|t| now.saturating_duration_since(*t) < WINDOW)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn up_to_the_limit_everything_is_recorded() {
        let mut c = PhaseCoalescer::default();
        let t0 = Instant::now();
        for i in 0..MAX_PER_WINDOW {
            let r = c.offer("p", i, t0 + MS * i as u32).expect("recorded");
            assert_eq!(r.coalesced, 0);
        }
        assert_eq!(c.next_due(t0), None);
    }

    #[test]
    fn over_the_limit_the_latest_change_is_held_and_recorded_when_room() {
        let mut c = PhaseCoalescer::default();
        let t0 = Instant::now();
        for i in 0..MAX_PER_WINDOW {
            c.offer("p", i, t0);
        }
        // Five more within the same second: held, each replacing the last.
        for i in 100..105 {
            assert_eq!(c.offer("p", i, t0 + 10 * MS), None);
        }
        assert_eq!(c.next_due(t0 + 10 * MS), Some(t0 + WINDOW));
        assert!(c.due(t0 + 999 * MS).is_empty());
        let due = c.due(t0 + WINDOW);
        assert_eq!(
            due,
            vec![Recorded {
                change: 104,
                coalesced: 4
            }]
        );
        assert_eq!(c.next_due(t0 + WINDOW), None);
    }

    #[test]
    fn never_more_than_the_limit_in_any_window() {
        let mut c = PhaseCoalescer::default();
        let t0 = Instant::now();
        let mut times = Vec::new();
        // 10 000 changes over 5 s, one every 0.5 ms, flushing as due.
        for i in 0..10_000u32 {
            let now = t0 + Duration::from_micros(500) * i;
            for _ in c.due(now) {
                times.push(now);
            }
            if c.offer("p", i, now).is_some() {
                times.push(now);
            }
        }
        for (i, t) in times.iter().enumerate() {
            let in_window = times[i..].iter().take_while(|u| **u < *t + WINDOW).count();
            assert!(in_window <= MAX_PER_WINDOW, "{in_window} at {i}");
        }
        // And it keeps recording at the limit's pace (about 10/s for 5 s).
        assert!(times.len() >= 45, "{}", times.len());
    }

    #[test]
    fn forget_returns_the_held_change() {
        let mut c = PhaseCoalescer::default();
        let t0 = Instant::now();
        for i in 0..=MAX_PER_WINDOW {
            c.offer("p", i, t0);
        }
        let r = c.forget("p").expect("held change");
        assert_eq!(r.change, MAX_PER_WINDOW);
        assert!(c.is_empty());
        assert_eq!(c.forget("p"), None);
    }

    #[test]
    fn idle_pods_are_swept_when_many() {
        let mut c = PhaseCoalescer::default();
        let t0 = Instant::now();
        for i in 0..=SWEEP_ABOVE {
            c.offer(&format!("p{i}"), 0, t0);
        }
        c.offer("late", 0, t0 + 2 * WINDOW);
        assert_eq!(c.len(), 1);
    }
}
