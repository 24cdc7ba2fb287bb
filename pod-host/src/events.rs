//! Sequence numbering and the bounded replay buffer of pod events.
//!
//! Every pod event gets the next sequence number of this boot (1, 2, 3…).
//! Events stay in the buffer until central acknowledges them, so a dropped
//! Connect stream loses nothing: the next session replays everything after
//! the last acknowledged sequence.
//!
//! The buffer is bounded ([`EventLog::new`]'s `capacity`). On overflow it
//! drops the oldest event that is not [`Retained::must_keep`] (started and
//! state-changed events: the hello snapshot carries each pod's current
//! state anyway). Exit events are dropped only when the buffer holds nothing
//! else; even then no exit is lost, because an exited pod stays in the pod
//! table, and so in every hello snapshot, until central has acknowledged a
//! sequence at or after its exit event (see `pods`). This module is pure:
//! no clocks, no I/O.

use std::collections::VecDeque;

/// Whether an event must survive buffer overflow as long as anything else
/// can be dropped instead.
pub trait Retained {
    fn must_keep(&self) -> bool;
}

/// Events of one boot with their sequence numbers.
#[derive(Debug)]
pub struct EventLog<E> {
    last_seq: u64,
    acked: u64,
    capacity: usize,
    buf: VecDeque<(u64, E)>,
}

impl<E: Clone + Retained> EventLog<E> {
    /// An empty log holding at most `capacity` unacknowledged events
    /// (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            last_seq: 0,
            acked: 0,
            capacity: capacity.max(1),
            buf: VecDeque::new(),
        }
    }

    /// The highest sequence issued so far (0 before the first event).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The highest sequence acknowledged so far.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Number of buffered (unacknowledged) events.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Appends the event built by `make` from its new sequence number.
    /// Returns the sequence and, if the buffer overflowed, the sequence of
    /// the event dropped to make room.
    pub fn push(&mut self, make: impl FnOnce(u64) -> E) -> (u64, Option<Dropped>) {
        let mut dropped = None;
        if self.buf.len() >= self.capacity {
            let pos = self.buf.iter().position(|(_, e)| !e.must_keep());
            dropped = match pos {
                Some(i) => self
                    .buf
                    .remove(i)
                    .map(|(seq, _)| Dropped { seq, kept: false }),
                None => self
                    .buf
                    .pop_front()
                    .map(|(seq, _)| Dropped { seq, kept: true }),
            };
        }
        self.last_seq += 1;
        let seq = self.last_seq;
        self.buf.push_back((seq, make(seq)));
        (seq, dropped)
    }

    /// Central has durably handled everything up to `seq`. Sequences beyond
    /// what was issued are clamped (a confused peer cannot ack the future).
    /// Returns the new acknowledged sequence.
    pub fn ack(&mut self, seq: u64) -> u64 {
        let seq = seq.min(self.last_seq);
        if seq > self.acked {
            self.acked = seq;
        }
        while self.buf.front().is_some_and(|(s, _)| *s <= self.acked) {
            self.buf.pop_front();
        }
        self.acked
    }

    /// Buffered events with a sequence greater than `seq`, oldest first.
    pub fn after(&self, seq: u64) -> Vec<(u64, E)> {
        let start = self.buf.partition_point(|(s, _)| *s <= seq);
        self.buf.range(start..).cloned().collect()
    }
}

/// An event removed by overflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    pub seq: u64,
    /// It was a must-keep event (nothing else was left to drop).
    pub kept: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Ev {
        State(u64),
        Exit(u64),
    }
    impl Retained for Ev {
        fn must_keep(&self) -> bool {
            matches!(self, Ev::Exit(_))
        }
    }

    fn seqs(v: &[(u64, Ev)]) -> Vec<u64> {
        v.iter().map(|(s, _)| *s).collect()
    }

    #[test]
    fn sequences_start_at_one_and_increase() {
        let mut log = EventLog::new(10);
        assert_eq!(log.last_seq(), 0);
        for i in 1..=5 {
            assert_eq!(log.push(Ev::State).0, i);
        }
        assert_eq!(seqs(&log.after(0)), vec![1, 2, 3, 4, 5]);
        assert_eq!(log.after(3), vec![(4, Ev::State(4)), (5, Ev::State(5))]);
        assert!(log.after(5).is_empty());
    }

    #[test]
    fn ack_drops_handled_events_and_replay_continues_after_it() {
        let mut log = EventLog::new(10);
        for _ in 0..5 {
            log.push(Ev::State);
        }
        assert_eq!(log.ack(3), 3);
        assert_eq!(seqs(&log.after(0)), vec![4, 5]);
        // Acks never go backwards and never past what was issued.
        assert_eq!(log.ack(2), 3);
        assert_eq!(log.ack(99), 5);
        assert!(log.is_empty());
        assert_eq!(log.push(Ev::State).0, 6);
        assert_eq!(seqs(&log.after(log.acked())), vec![6]);
    }

    #[test]
    fn replay_after_reconnect_has_each_exit_exactly_once() {
        let mut log = EventLog::new(100);
        log.push(Ev::State);
        let (exit_seq, _) = log.push(Ev::Exit);
        log.push(Ev::State);
        // First session acked only seq 1, then dropped; the reconnect replays
        // from 1 and the exit appears once.
        log.ack(1);
        let replay = log.after(1);
        assert_eq!(
            replay
                .iter()
                .filter(|(_, e)| matches!(e, Ev::Exit(_)))
                .count(),
            1
        );
        // Once acked it is never replayed again.
        log.ack(exit_seq);
        assert!(
            log.after(exit_seq)
                .iter()
                .all(|(_, e)| !matches!(e, Ev::Exit(_)))
        );
    }

    #[test]
    fn overflow_drops_oldest_droppable_event_first() {
        let mut log = EventLog::new(3);
        log.push(Ev::Exit); // 1
        log.push(Ev::State); // 2
        log.push(Ev::State); // 3
        let (_, dropped) = log.push(Ev::Exit); // 4: drops 2
        assert_eq!(
            dropped,
            Some(Dropped {
                seq: 2,
                kept: false
            })
        );
        assert_eq!(seqs(&log.after(0)), vec![1, 3, 4]);
        let (_, dropped) = log.push(Ev::Exit); // 5: drops 3
        assert_eq!(
            dropped,
            Some(Dropped {
                seq: 3,
                kept: false
            })
        );
        // Only exits left: the oldest exit goes, and the caller is told.
        let (_, dropped) = log.push(Ev::State); // 6
        assert_eq!(dropped, Some(Dropped { seq: 1, kept: true }));
        assert_eq!(log.len(), 3);
        assert_eq!(seqs(&log.after(0)), vec![4, 5, 6]);
    }
}
