//! A simulated pod-host, faithful to the real one (`pod-host/`) in what
//! central-manager can observe: one supervision session at a time (a new
//! Connect replaces the old), a hello with a snapshot of every pod
//! (exited-but-unacknowledged ones included), events with a per-boot
//! sequence number kept until acknowledged and replayed after the
//! central's resume point, heartbeats at the interval central asks for,
//! generations per task (older commands refused, a newer start kills the
//! older pod first), capacity, graceful stops with a grace period, and
//! self-fencing and the lease with the real rules (`pod_host::fence`:
//! heartbeats and the hello carry the host's clock, only a ping's or a
//! StartPod's echo of it moves the lease, a StartPod under an expired lease
//! or for another boot is refused with LEASE_EXPIRED, and a message read
//! after the deadline passed unnoticed fences first).
//!
//! Pods are scripted processes (`plan::Behaviour`): they run, report
//! phases, end on their own, or ignore SIGTERM. A frozen host process
//! (SIGSTOP) processes nothing, but its pods keep running and may end; it
//! notices on waking. Its reaper (a process of its own) keeps the lease the
//! host last sent it (`pod_host::reaper`: its fence deadline plus
//! `backstop_delay`, re-sent when it moved by `LEASE_STEP`) and SIGKILLs
//! every pod when that passes; the host reports them as self-fenced on
//! waking. A frozen machine (a stalled VM) stops the pods and the reaper
//! too: nothing runs, ends or is killed until it wakes. A reboot kills every pod at once (no exit is reported: the
//! events die with the process) and comes back with a new boot id.
//!
//! The actor's loop is in this file; the pod table's rules in [`pods`],
//! the fence, the lease and the reaper's backstop in [`fencing`], the
//! supervision session (hello, heartbeats, events and acks) in [`session`].

mod fencing;
mod pods;
mod session;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use central_manager::domain::host::{HostCallError, PodEvent, Refusal};
use pod_host::fence::{Contact, Proof};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::{HostBugs, Timing};
use crate::ledger::Ledger;
use crate::net::{ConnId, HostCall, HostInput, Net, Reply};
use crate::plan::HostSpec;
use crate::trace::Trace;
use pods::Pod;

/// Faults applied to a host from outside.
#[derive(Debug)]
pub enum Control {
    /// The host process (`machine: false`) or its whole machine stops.
    Freeze {
        lasts: Duration,
        machine: bool,
    },
    Reboot(Duration),
}

/// A host-level timer (the host process must be running to act on it).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Heartbeat(ConnId),
    /// A pod's spawn completes.
    Spawned(String),
    /// A pod reports its next phase.
    Phase(String),
    /// A SIGTERMed pod that ignores it is SIGKILLed.
    GraceOver(String),
    /// The reboot is over.
    Up,
}

/// A process-level event (happens whether or not the host runs).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum ProcTimer {
    /// The pod's process ends on its own.
    NaturalEnd(String),
    /// A SIGTERMed pod exits.
    TermExit(String),
}

/// The current session.
struct Session {
    conn: ConnId,
    /// Set by the central's first message.
    hello_seen: bool,
    /// Last event sequence sent on this session.
    cursor: u64,
    heartbeat: Duration,
}

/// Per task: the highest generation any command carried, and its newest
/// pod.
struct TaskEntry {
    generation: u64,
    newest: Option<String>,
}

/// A simulated pod-host.
pub struct SimHost {
    idx: usize,
    host_id: String,
    spec: HostSpec,
    timing: Timing,
    bugs: HostBugs,
    net: Net,
    ledger: Arc<Mutex<Ledger>>,
    trace: Trace,
    rng: StdRng,
    inbox: mpsc::UnboundedReceiver<HostInput>,
    control: mpsc::UnboundedReceiver<Control>,
    // Process state (lost on reboot).
    boot: u32,
    boot_id: String,
    /// This boot's clock origin: heartbeats and the hello carry the time
    /// since (`host_clock_ms`), central echoes it back (the lease).
    clock0: Instant,
    up: bool,
    frozen_until: Option<Instant>,
    /// Since when the whole machine is frozen (pods and reaper stopped).
    machine_frozen_since: Option<Instant>,
    /// The last lease end the host sent its reaper.
    reaper_sent: Option<Instant>,
    /// When the reaper's backstop acts (its copy of that lease, until it
    /// acted on it).
    reaper_end: Option<Instant>,
    pods: BTreeMap<String, Pod>,
    tasks: BTreeMap<String, TaskEntry>,
    /// Unacknowledged events, oldest first.
    log: VecDeque<PodEvent>,
    last_seq: u64,
    contact: Contact,
    self_fenced: bool,
    session: Option<Session>,
    timers: BTreeMap<(Instant, u64), Timer>,
    proc_timers: BTreeMap<(Instant, u64), ProcTimer>,
    timer_seq: u64,
    next_pid: u32,
}

impl SimHost {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        idx: usize,
        spec: HostSpec,
        timing: Timing,
        bugs: HostBugs,
        net: Net,
        ledger: Arc<Mutex<Ledger>>,
        trace: Trace,
        seed: u64,
        inbox: mpsc::UnboundedReceiver<HostInput>,
        control: mpsc::UnboundedReceiver<Control>,
    ) -> Self {
        let mut rng = StdRng::seed_from_u64(seed ^ (0x686f_7374 + idx as u64));
        let boot_id = boot_id(&mut rng, idx, 1);
        Self {
            idx,
            host_id: format!("host-{idx}"),
            spec,
            timing,
            bugs,
            net,
            ledger,
            trace,
            rng,
            inbox,
            control,
            boot: 1,
            boot_id,
            clock0: Instant::now(),
            up: true,
            frozen_until: None,
            machine_frozen_since: None,
            reaper_sent: None,
            reaper_end: None,
            pods: BTreeMap::new(),
            tasks: BTreeMap::new(),
            log: VecDeque::new(),
            last_seq: 0,
            contact: Contact::new(spec.fence),
            self_fenced: false,
            session: None,
            timers: BTreeMap::new(),
            proc_timers: BTreeMap::new(),
            timer_seq: 0,
            next_pid: 1000,
        }
    }

    fn frozen(&self) -> bool {
        self.frozen_until.is_some()
    }

    fn at(&mut self, at: Instant, t: Timer) {
        self.timer_seq += 1;
        self.timers.insert((at, self.timer_seq), t);
    }

    fn proc_at(&mut self, at: Instant, t: ProcTimer) {
        self.timer_seq += 1;
        self.proc_timers.insert((at, self.timer_seq), t);
    }

    /// Runs until every sender of its inbox and control is gone.
    pub async fn run(mut self) {
        let far = Instant::now() + Duration::from_secs(24 * 3600);
        loop {
            let host_timer = if self.frozen() {
                None
            } else {
                self.timers.keys().next().map(|k| k.0)
            };
            let fence_at = if self.frozen() || !self.up {
                None
            } else {
                self.fence_deadline()
            };
            // A frozen machine stops its pods and its reaper too.
            let machine_frozen = self.machine_frozen_since.is_some();
            let proc_timer = if machine_frozen {
                None
            } else {
                self.proc_timers.keys().next().map(|k| k.0)
            };
            let backstop_at = if machine_frozen || !self.up || self.bugs.no_backstop {
                None
            } else {
                self.reaper_end
            };
            let wake = self.frozen_until;
            let can_read = self.up && !self.frozen();
            tokio::select! {
                biased;
                c = self.control.recv() => match c {
                    Some(c) => self.on_control(c),
                    None => return,
                },
                _ = tokio::time::sleep_until(proc_timer.unwrap_or(far)), if proc_timer.is_some() => {
                    self.on_proc_timer();
                }
                _ = tokio::time::sleep_until(wake.unwrap_or(far)), if wake.is_some() => self.wake(),
                _ = tokio::time::sleep_until(fence_at.unwrap_or(far)), if fence_at.is_some() => {
                    self.fence_if_due();
                }
                _ = tokio::time::sleep_until(backstop_at.unwrap_or(far)), if backstop_at.is_some() => {
                    self.backstop();
                }
                _ = tokio::time::sleep_until(host_timer.unwrap_or(far)), if host_timer.is_some() => {
                    self.on_timer();
                }
                i = self.inbox.recv(), if can_read => match i {
                    Some(i) => self.on_input(i),
                    None => return,
                },
            }
            self.publish_facts();
            let mut l = self.ledger.lock().unwrap_or_else(|e| e.into_inner());
            l.check_overlap(Instant::now());
        }
    }

    /// Tells the ledger what the checks need about this host.
    fn publish_facts(&self) {
        let mut l = self.ledger.lock().unwrap_or_else(|e| e.into_inner());
        if l.hosts.len() <= self.idx {
            l.hosts.resize(self.idx + 1, Default::default());
        }
        let f = &mut l.hosts[self.idx];
        f.frozen = self.frozen();
        f.machine_frozen = self.machine_frozen_since.is_some();
        f.machine_frozen_ever |= f.machine_frozen;
        f.fence_deadline = self.contact.deadline();
    }

    fn on_control(&mut self, c: Control) {
        match c {
            Control::Freeze { lasts, machine } => {
                if self.up {
                    let now = Instant::now();
                    let until = now + lasts;
                    self.frozen_until = Some(self.frozen_until.map_or(until, |u| u.max(until)));
                    if machine {
                        self.machine_frozen_since.get_or_insert(now);
                    }
                    let what = if machine { "machine" } else { "process" };
                    self.trace.note(format!("host-{} {what} frozen", self.idx));
                }
            }
            Control::Reboot(down) => self.crash(down),
        }
    }

    /// Back from a freeze: what queued up is read (a stale ping among it)
    /// and the fence timer fires, in an order the real host does not fix
    /// either (either may come first after SIGCONT).
    fn wake(&mut self) {
        self.frozen_until = None;
        if let Some(since) = self.machine_frozen_since.take() {
            // The pods were stopped too: what they had left to do is still
            // ahead of them.
            let stopped = Instant::now().saturating_duration_since(since);
            self.proc_timers = std::mem::take(&mut self.proc_timers)
                .into_iter()
                .map(|((at, n), t)| ((at + stopped, n), t))
                .collect();
            // The reaper resumes with it; if the lease ran out meanwhile,
            // its pods die at once (taken here as before the host's own
            // fence, which spares pods already being stopped: the two
            // race on a real machine, and the reaper kills those too).
            if !self.bugs.no_backstop && self.reaper_end.is_some_and(|e| e <= Instant::now()) {
                self.backstop();
            }
        }
        self.trace.note(format!("host-{} woke", self.idx));
        let inbox_first = self.rng.random_bool(0.5);
        if !inbox_first {
            self.fence_if_due();
        }
        while let Ok(i) = self.inbox.try_recv() {
            self.on_input(i);
        }
        self.fence_if_due();
        // Exits that happened while frozen are noticed now.
        let ended: Vec<String> = self
            .pods
            .iter()
            .filter(|(_, p)| p.dead_unnoticed())
            .map(|(id, _)| id.clone())
            .collect();
        for id in ended {
            self.notice_exit(&id);
        }
    }

    fn on_timer(&mut self) {
        let Some(((_, _), t)) = self.timers.pop_first() else {
            return;
        };
        match t {
            Timer::Heartbeat(conn) => self.heartbeat(conn),
            Timer::Spawned(pod) => self.spawned(&pod),
            Timer::Phase(pod) => self.report_phase(&pod),
            Timer::GraceOver(pod) => self.kill(&pod, 9),
            Timer::Up => self.come_up(),
        }
    }

    fn on_proc_timer(&mut self) {
        let Some(((_, _), t)) = self.proc_timers.pop_first() else {
            return;
        };
        match t {
            ProcTimer::NaturalEnd(pod) => self.natural_end(&pod),
            ProcTimer::TermExit(pod) => self.term_exit(&pod),
        }
    }

    fn on_input(&mut self, i: HostInput) {
        match i {
            HostInput::Open { conn } => self.open(conn),
            HostInput::Msg { conn, msg } => self.on_message(conn, msg),
            HostInput::Call { conn, id, call } => match call {
                HostCall::Start(req) => {
                    self.touch(self.proof(req.echo_host_clock_ms));
                    match self.start_lease(&req) {
                        Ok(()) => self.start(conn, id, req),
                        Err(why) => {
                            self.trace
                                .note(format!("host-{} refuses a start: {why}", self.idx));
                            let e = HostCallError::Refused {
                                refusal: Refusal::LeaseExpired,
                                message: format!("LEASE_EXPIRED: {why}"),
                            };
                            self.net.reply(conn, id, Reply::Start(Err(e)));
                        }
                    }
                }
                HostCall::Stop(req) => {
                    self.touch(Proof::Arrival);
                    self.stop(conn, id, req)
                }
                HostCall::List => {
                    // As the real pod-host's ListPods: contact, and what a
                    // hello's snapshot would hold.
                    self.touch(Proof::Arrival);
                    self.trace
                        .note(format!("host-{} lists its pods for central", self.idx));
                    let pods = self.snapshot();
                    self.net.reply(conn, id, Reply::List(pods));
                }
            },
            HostInput::Closed { conn } => {
                if self.session.as_ref().is_some_and(|s| s.conn == conn) {
                    self.session = None;
                }
            }
        }
    }

    // ---- reboot ----

    /// The process dies: every pod with it (no exit reported), every
    /// connection breaks.
    fn crash(&mut self, down: Duration) {
        if !self.up {
            return;
        }
        self.trace.note(format!("host-{} died", self.idx));
        {
            let mut l = self.ledger.lock().unwrap_or_else(|e| e.into_inner());
            for (id, p) in &self.pods {
                if p.process_alive {
                    l.died(id);
                }
            }
        }
        self.net.host_down(self.idx);
        self.up = false;
        self.frozen_until = None;
        self.machine_frozen_since = None;
        self.reaper_sent = None;
        self.reaper_end = None;
        self.pods.clear();
        self.tasks.clear();
        self.log.clear();
        self.last_seq = 0;
        self.contact = Contact::new(self.spec.fence);
        self.self_fenced = false;
        self.session = None;
        self.timers.clear();
        self.proc_timers.clear();
        while self.inbox.try_recv().is_ok() {}
        self.at(Instant::now() + down, Timer::Up);
    }

    fn come_up(&mut self) {
        self.boot += 1;
        self.boot_id = boot_id(&mut self.rng, self.idx, self.boot);
        self.clock0 = Instant::now();
        self.up = true;
        self.net.host_up(self.idx);
        self.trace.note(format!("host-{} up again", self.idx));
    }
}

fn boot_id(rng: &mut StdRng, idx: usize, boot: u32) -> String {
    format!("boot-{idx}-{boot}-{:08x}", rng.random::<u32>())
}
