//! The shared, in-memory state of pod supervision: the host [`Registry`],
//! the live session of each connected host (its command client), the live
//! phase/version of running pods as streamed by their hosts, resume points
//! for reconnects, and stop requests in flight. The database stays the
//! arbiter of every decision; this is what central-manager knows *now* and
//! never writes to disk.
//!
//! One `std::sync::Mutex`; no lock is held across an await.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use tokio::time::Instant;

pub use super::registry::HostState;
use super::registry::{HostTimeouts, Registry};
use super::session::SessionHandle;
use crate::core::bugs::SimBugs;
use crate::core::ports::HostCommands;
use crate::domain::{Cause, Phase, TaskId, TemplateName};
use crate::error::{Error, Result};

/// One pod-host, for ListPodHosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostView {
    /// Host id.
    pub host_id: String,
    /// gRPC address (the endpoint central dials).
    pub address: String,
    /// State.
    pub state: HostState,
    /// Pods it may run at once.
    pub capacity: u32,
    /// Pods it runs now.
    pub running_pods: u32,
    /// Templates it serves.
    pub templates: Vec<String>,
    /// Last message from it, unix micros.
    pub last_heartbeat_at: i64,
    /// Its boot id.
    pub boot_id: String,
    /// An endpoint refused recently for saying hello with this host's id
    /// (empty when none).
    pub conflict_endpoint: String,
}

/// Where a pod was placed: the host and a client for it.
#[derive(Clone)]
pub struct Placement {
    /// The chosen host.
    pub host_id: String,
    /// Its commands (over the session's connection).
    pub client: Arc<dyn HostCommands>,
    /// The boot of the host's session, and its newest clock reading: the
    /// lease a StartPod is issued under (see `session::HostClock`).
    pub boot_id: String,
    pub host_clock: super::session::HostClock,
}

/// The live state of a running pod, from its host's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LivePod {
    /// The host that reported it; the overlay applies only while the
    /// task's row names this host, pod and generation.
    pub host_id: String,
    pub pod_id: String,
    pub generation: u64,
    /// Last reported phase (None before the first report).
    pub phase: Option<Phase>,
    /// Bumped by each accepted status line.
    pub version: u64,
}

/// A stop requested through the API, so the stream's exit event is
/// attributed to its caller.
#[derive(Debug, Clone)]
pub struct PendingStop {
    pub cause: Cause,
    pub reason: String,
    /// How the end is recorded: `Stopped`, or `TimedOut` for a run timeout.
    pub ending: crate::domain::Ending,
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    sessions: BTreeMap<String, SessionHandle>,
    live: BTreeMap<TaskId, LivePod>,
    resume: BTreeMap<String, (String, u64)>,
    pending_stops: BTreeMap<String, PendingStop>,
    /// Pods whose StartPod is on its way to their host.
    starting: BTreeSet<String>,
    /// Reintroduced past bugs (simulator only).
    bugs: SimBugs,
    /// Hosts whose current session's hello has been reconciled with the
    /// database (host id → boot id). Placement waits for it, so a pod
    /// started on the host can never be mistaken for one missing from an
    /// older snapshot.
    reconciled: BTreeMap<String, String>,
}

/// How long a placement waits for a just-connected host's hello to be
/// reconciled before answering NO_POD_HOST.
pub const RECONCILE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Cheap to clone; all clones share the state.
#[derive(Debug, Clone)]
pub struct HostDirectory {
    inner: Arc<Mutex<Inner>>,
    /// Signalled whenever a host's hello has been reconciled.
    reconciled_now: Arc<tokio::sync::Notify>,
    /// Signalled when a host's silence deadlines may have moved earlier
    /// (a hello, an UNREACHABLE host heard from again), so the
    /// supervisor's timer re-arms for them.
    deadlines_moved: Arc<tokio::sync::Notify>,
    /// Signalled when a host may have room for one more pod (a slot freed,
    /// a host became READY or reported fewer pods): wakes the queue's
    /// dispatcher (`core::queue`). One permit is kept while nobody waits,
    /// so no room is missed.
    room: Arc<tokio::sync::Notify>,
}

/// Free slots of `host_id` for placement (0 unless READY).
fn room_of(r: &Registry, host_id: &str) -> u32 {
    r.get(host_id)
        .filter(|h| h.state == HostState::Ready)
        .map_or(0, |h| h.capacity.saturating_sub(h.load()))
}

impl HostDirectory {
    /// An empty directory with the given timing rules.
    pub fn new(timeouts: HostTimeouts) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                registry: Registry::new(timeouts),
                sessions: BTreeMap::new(),
                live: BTreeMap::new(),
                resume: BTreeMap::new(),
                pending_stops: BTreeMap::new(),
                starting: BTreeSet::new(),
                bugs: SimBugs::default(),
                reconciled: BTreeMap::new(),
            })),
            reconciled_now: Arc::new(tokio::sync::Notify::new()),
            deadlines_moved: Arc::new(tokio::sync::Notify::new()),
            room: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Resolves when a host may have room for one more pod.
    pub async fn room_changed(&self) {
        self.room.notified().await
    }

    /// Wakes the dispatcher if `host_id` has more room than `before`.
    fn room_grew(&self, r: &Registry, host_id: &str, before: u32) {
        if room_of(r, host_id) > before {
            self.room.notify_one();
        }
    }

    /// Resolves when a host's silence deadlines may have moved earlier
    /// than the supervisor's timer was set for.
    pub async fn deadlines_moved(&self) {
        self.deadlines_moved.notified().await
    }

    /// Reintroduces past bugs (only the simulator calls this; see
    /// `core::bugs`).
    pub fn with_bugs(self, bugs: SimBugs) -> Self {
        {
            let mut g = self.lock();
            g.bugs = bugs;
            g.registry
                .ignore_reservations(bugs.placement_ignores_starts_in_flight);
        }
        self
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated
        // in a way that matters more than losing them: keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the registry.
    pub fn with_registry<T>(&self, f: impl FnOnce(&mut Registry) -> T) -> T {
        f(&mut self.lock().registry)
    }

    /// Every known pod-host.
    pub fn list(&self) -> Vec<HostView> {
        let now = Instant::now();
        self.lock()
            .registry
            .hosts()
            .map(|h| HostView {
                host_id: h.host_id.clone(),
                address: h.address.clone(),
                state: h.state,
                capacity: h.capacity,
                running_pods: h.running(),
                templates: h.templates.iter().cloned().collect(),
                last_heartbeat_at: ipa_proto::time::unix_micros(h.last_heartbeat_at),
                boot_id: h.boot_id.clone(),
                conflict_endpoint: h.conflict_endpoint(now).unwrap_or_default().to_owned(),
            })
            .collect()
    }

    /// A hello arrived on the session `handle`: refused (`Err` names the
    /// endpoint holding the host id) if another endpoint holds that id,
    /// else recorded with the session, atomically, so two sessions racing
    /// with one host id cannot both be accepted.
    pub fn register_hello(
        &self,
        hello: super::registry::HostHello,
        handle: SessionHandle,
        at: Instant,
        wall: SystemTime,
    ) -> std::result::Result<super::registry::HelloOutcome, String> {
        let mut g = self.lock();
        if let Some(holder) = g.registry.conflict(&hello.host_id, &handle.endpoint, at) {
            return Err(holder);
        }
        let outcome = g.registry.on_hello(hello, at, wall);
        g.reconciled.remove(&handle.host_id);
        g.sessions.insert(handle.host_id.clone(), handle);
        self.deadlines_moved.notify_one();
        Ok(outcome)
    }

    /// The hello of `host_id`'s session on `boot_id` has been reconciled:
    /// pods may be placed there.
    pub fn mark_reconciled(&self, host_id: &str, boot_id: &str) {
        let mut g = self.lock();
        if g.sessions
            .get(host_id)
            .is_some_and(|s| s.boot_id == boot_id)
        {
            g.reconciled.insert(host_id.to_owned(), boot_id.to_owned());
            // Placements waiting for this host may go now.
            self.reconciled_now.notify_waiters();
            self.room.notify_one();
        }
    }

    /// Applies the silence rules at `now` and forgets hosts LOST for longer
    /// than the retention (unless connected).
    pub fn tick(&self, now: Instant) -> (Vec<super::registry::Transition>, Vec<String>) {
        let mut g = self.lock();
        let inner = &mut *g;
        let transitions = inner.registry.tick(now);
        if !transitions.is_empty() {
            self.room.notify_one();
        }
        let sessions = &inner.sessions;
        let forgotten = inner
            .registry
            .forget_lost(now, |id| sessions.contains_key(id));
        (transitions, forgotten)
    }

    /// The current state of a host.
    pub fn state(&self, host_id: &str) -> Option<HostState> {
        self.lock().registry.get(host_id).map(|h| h.state)
    }

    /// Picks a ready pod-host with free capacity serving `template` (least
    /// loaded first) and reserves a slot there; NO_POD_HOST when none.
    ///
    /// A host that just said hello is placeable once its snapshot has been
    /// reconciled with the database (normally milliseconds later). If only
    /// such a host could take the pod, this waits for that, up to
    /// [`RECONCILE_WAIT`], rather than answer NO_POD_HOST for a host that
    /// ListPodHosts already shows READY.
    pub async fn place(&self, template: &TemplateName) -> Result<Placement> {
        let deadline = tokio::time::Instant::now() + RECONCILE_WAIT;
        loop {
            let notified = self.reconciled_now.notified();
            tokio::pin!(notified);
            // Registered before checking, so a reconciliation in between is
            // not missed.
            notified.as_mut().enable();
            match self.try_place(template) {
                Ok(p) => return Ok(p),
                Err(e) if self.awaits_reconcile(template) => {
                    if tokio::time::timeout_at(deadline, notified).await.is_err() {
                        // One last look: the wait may have just missed it.
                        return self.try_place(template).map_err(|_| e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether a connected host that could take a pod of `template` waits
    /// for its hello to be reconciled.
    fn awaits_reconcile(&self, template: &TemplateName) -> bool {
        let g = self.lock();
        g.sessions.iter().any(|(id, s)| {
            g.reconciled.get(id) != Some(&s.boot_id)
                && g.registry.get(id).is_some_and(|h| {
                    h.state == HostState::Ready
                        && h.load() < h.capacity
                        && h.templates.contains(template.as_str())
                })
        })
    }

    fn try_place(&self, template: &TemplateName) -> Result<Placement> {
        let mut g = self.lock();
        let inner = &mut *g;
        let connected: Vec<&str> = inner
            .sessions
            .iter()
            .filter(|(id, s)| inner.reconciled.get(*id) == Some(&s.boot_id))
            .map(|(id, _)| id.as_str())
            .collect();
        let disconnected: Vec<String> = inner
            .registry
            .hosts()
            .filter(|h| !connected.contains(&h.host_id.as_str()))
            .map(|h| h.host_id.clone())
            .collect();
        let exclude: Vec<&str> = disconnected.iter().map(String::as_str).collect();
        let host_id = inner
            .registry
            .place(template.as_str(), &exclude)
            .ok_or_else(|| {
                Error::NoPodHost(format!(
                    "no ready pod-host with free capacity serves template {:?}",
                    template.as_str()
                ))
            })?;
        let session = inner
            .sessions
            .get(&host_id)
            .ok_or_else(|| Error::Internal("placed on a host without a session".into()))?;
        Ok(Placement {
            client: session.commands.clone(),
            boot_id: session.boot_id.clone(),
            host_clock: session.host_clock.clone(),
            host_id,
        })
    }

    /// Ends a reservation made by [`HostDirectory::place`]: the pod
    /// started (named: counted as running until it ends) or not (slot given
    /// back).
    pub fn start_done(&self, host_id: &str, started: Option<&str>) {
        let mut g = self.lock();
        let before = room_of(&g.registry, host_id);
        g.registry.start_done(host_id, started);
        self.room_grew(&g.registry, host_id, before);
    }

    /// The host confirmed in its StopPod reply that the pod ended: its slot
    /// is free at once. Its exit event may still be on the way on the
    /// host's stream (then it is counted as an early exit until it arrives,
    /// see [`super::registry::HostEntry::early_exits`]); if that event came
    /// first, it has already freed the slot.
    pub fn stop_confirmed(&self, task_id: TaskId, pod_id: &str, host_id: &str) {
        let mut g = self.lock();
        let on_stream_yet = g
            .live
            .get(&task_id)
            .is_some_and(|p| p.pod_id == pod_id && p.host_id == host_id);
        if g.live.get(&task_id).is_some_and(|p| p.pod_id == pod_id) {
            g.live.remove(&task_id);
        }
        if on_stream_yet {
            let before = room_of(&g.registry, host_id);
            g.registry.exited_early(host_id, pod_id);
            self.room_grew(&g.registry, host_id, before);
        }
    }

    /// The exit event of a pod arrived on its host's stream.
    pub fn exited_on_stream(&self, task_id: TaskId, pod_id: &str, host_id: &str) {
        let mut g = self.lock();
        if g.live
            .get(&task_id)
            .is_some_and(|p| p.pod_id == pod_id && p.host_id == host_id)
        {
            g.live.remove(&task_id);
        }
        let before = room_of(&g.registry, host_id);
        g.registry.exited_on_stream(host_id, pod_id);
        self.room_grew(&g.registry, host_id, before);
    }

    /// The commands of a connected host.
    pub fn client(&self, host_id: &str) -> Option<Arc<dyn HostCommands>> {
        self.lock()
            .sessions
            .get(host_id)
            .map(|s| s.commands.clone())
    }

    /// Forgets a session if it is still the current one for its host.
    pub fn remove_session(&self, host_id: &str, boot_id: &str, endpoint: &str) {
        let mut g = self.lock();
        let current = g
            .sessions
            .get(host_id)
            .is_some_and(|s| s.boot_id == boot_id && s.endpoint == endpoint);
        if current {
            g.sessions.remove(host_id);
            g.reconciled.remove(host_id);
        }
    }

    /// The boot and last committed sequence central knows for `endpoint`,
    /// sent in the next CentralHello so the host replays only the rest.
    pub fn resume_point(&self, endpoint: &str) -> Option<(String, u64)> {
        self.lock().resume.get(endpoint).cloned()
    }

    /// Acknowledges `seq` to the host's current session and remembers it as
    /// the resume point for its endpoint.
    pub fn ack(&self, host_id: &str, boot_id: &str, seq: u64) {
        let mut g = self.lock();
        let Some(s) = g
            .sessions
            .get(host_id)
            .filter(|s| s.boot_id == boot_id)
            .cloned()
        else {
            return;
        };
        s.ack(seq);
        g.resume
            .insert(s.endpoint.clone(), (boot_id.to_owned(), seq));
    }

    /// Records a contact with a host; returns the state transition if any.
    pub fn contact(
        &self,
        host_id: &str,
        at: Instant,
        wall: SystemTime,
        draining: Option<bool>,
        running: Option<u32>,
    ) -> Option<super::registry::Transition> {
        let mut g = self.lock();
        let before = room_of(&g.registry, host_id);
        if let Some(r) = running {
            g.registry.set_running(host_id, r);
        }
        let t = g.registry.on_contact(host_id, at, wall, draining);
        self.room_grew(&g.registry, host_id, before);
        if t.is_some() {
            // An UNREACHABLE host is READY again: its unreachable deadline
            // is earlier than the fence deadline the timer waits for.
            self.deadlines_moved.notify_one();
        }
        t
    }

    /// Resets the session of `host_id` (if any) for a fresh hello.
    pub fn reset_session(&self, host_id: &str) {
        if let Some(s) = self.lock().sessions.get(host_id) {
            s.reset();
        }
    }

    /// Marks a pod's start as in flight (or done).
    pub fn set_starting(&self, pod_id: &str, starting: bool) {
        let mut g = self.lock();
        if starting {
            g.starting.insert(pod_id.to_owned());
        } else {
            g.starting.remove(pod_id);
        }
    }

    /// Whether a pod's start is in flight.
    pub fn is_starting(&self, pod_id: &str) -> bool {
        let g = self.lock();
        !g.bugs.placement_ignores_starts_in_flight && g.starting.contains(pod_id)
    }

    /// Live phase/version of a task's running pod.
    pub fn live(&self, task_id: TaskId) -> Option<LivePod> {
        self.lock().live.get(&task_id).cloned()
    }

    /// Updates the live state of a pod. Refused (false) when the task's
    /// live entry is the same pod and generation reported by another host:
    /// a host cannot overwrite what the pod's own host reports.
    pub fn set_live(&self, task_id: TaskId, pod: LivePod) -> bool {
        let mut g = self.lock();
        let hijack = g.live.get(&task_id).is_some_and(|l| {
            l.pod_id == pod.pod_id && l.generation == pod.generation && l.host_id != pod.host_id
        });
        if hijack {
            return false;
        }
        g.live.insert(task_id, pod);
        true
    }

    /// Forgets the live state of a task's pod (if it is that pod).
    pub fn clear_live(&self, task_id: TaskId, pod_id: &str) {
        let mut g = self.lock();
        if g.live.get(&task_id).is_some_and(|p| p.pod_id == pod_id) {
            g.live.remove(&task_id);
        }
    }

    /// Like [`Self::clear_live`], only if `host_id` reported that entry.
    pub fn clear_live_of(&self, task_id: TaskId, pod_id: &str, host_id: &str) {
        let mut g = self.lock();
        if g.live
            .get(&task_id)
            .is_some_and(|p| p.pod_id == pod_id && p.host_id == host_id)
        {
            g.live.remove(&task_id);
        }
    }

    /// Notes that an API call is stopping `pod_id`.
    pub fn begin_stop(&self, pod_id: &str, stop: PendingStop) {
        self.lock().pending_stops.insert(pod_id.to_owned(), stop);
    }

    /// Takes the pending stop of `pod_id`, if any.
    pub fn take_stop(&self, pod_id: &str) -> Option<PendingStop> {
        self.lock().pending_stops.remove(pod_id)
    }

    /// The pending stop of `pod_id`, left in place (it is taken once the
    /// pod's end is committed).
    pub fn peek_stop(&self, pod_id: &str) -> Option<PendingStop> {
        self.lock().pending_stops.get(pod_id).cloned()
    }
}
