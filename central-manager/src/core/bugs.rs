//! Past bugs of the core, kept so the simulator can prove it finds them
//! (issue 17 item 5, docs/architecture.md "The supervision core and its
//! simulator"). Every switch is off by default; production wiring never
//! sets one (no flag, no environment variable reads them): only the
//! simulator constructs a [`SimBugs`] with a switch on.

/// Bugs to reintroduce.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimBugs {
    /// Placement ignores starts in flight (fixed in 47f56d4): a host's
    /// load counts only the pods its last heartbeat reported, not the
    /// slots reserved by placements whose StartPod is still on its way, and
    /// a hello reconciled meanwhile declares such a pod lost although its
    /// start is still going to land.
    pub placement_ignores_starts_in_flight: bool,
    /// The dispatcher wakes only when the queue changes, not when room
    /// appears (the missed wake-up a polling-free dispatcher must not
    /// have): queued tasks wait although a host has room.
    pub dispatcher_misses_room: bool,
}
