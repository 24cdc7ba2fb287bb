//! The pod table: every pod this host knows, per-task generations, capacity,
//! the event log, the fence clock, and the drain flag, all behind one mutex
//! so a state change and its event (and its sequence number) are one atomic
//! step. Critical sections are short and never await.
//!
//! Lifecycle of an entry: STARTING (slot reserved) → RUNNING (spawned) →
//! EXITED (reaped, exit recorded, exit event issued). An exited pod stays in
//! every snapshot until central acknowledges a sequence at or after its
//! exit event; that, together with the replay buffer (`events`), is why no
//! exit is ever missed: central either replays the exit event or sees the
//! exited pod in the next hello. Acknowledged pods then move to a small
//! archive, kept only so their logs stay readable, and are pruned (files
//! included) when the archive is full.
//!
//! Generations: per task the highest generation any command carried. A
//! StartPod or StopPod with an older one is refused (STALE_GENERATION); a
//! StartPod with a newer one kills the task's older live pod first
//! (EXIT_CAUSE_FENCED). The map keeps one integer per task ever seen on this
//! boot, which is small; it is not pruned because forgetting a generation
//! could let a delayed stale command through.
//!
//! Process handling (spawn, supervision, stop, shutdown) is in [`run`];
//! self-fencing and the loss of the orphan reaper in [`fencing`].

mod dirs;
mod fencing;
mod run;
mod status_reader;
mod stop;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, watch};
use tokio_util::task::TaskTracker;

use crate::config::HostConfig;
use crate::events::{EventLog, Retained};
use crate::fence::Contact;
use crate::logs::LogSink;
use crate::reaper::Reaper;
use crate::spawn::Spawner;
use crate::status::{Phase, StatusUpdate};
use crate::sweep::GroupJournal;

/// Unacknowledged events kept for replay.
pub const EVENT_BUFFER: usize = 10_000;

/// Acknowledged exited pods kept for their logs.
const MAX_ARCHIVED: usize = 256;

/// Exited pods kept unacknowledged (no central acking) before the oldest is
/// archived anyway: bounds memory on a host no central drains, and with the
/// largest `--capacity` keeps the hello snapshot within one message (see
/// `connect`).
pub const MAX_UNACKED_EXITED: usize = 5_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodState {
    Starting,
    Running,
    Exited,
}

/// Why a pod's process ended (`ipa.v1.ExitCause`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCause {
    Exited,
    Stopped,
    Fenced,
    SelfFenced,
    HostShutdown,
    SpawnFailed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodExit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub cause: ExitCause,
    pub reported_completed: bool,
    pub at: SystemTime,
    pub message: String,
}

/// A pod as reported to central.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    pub task_id: String,
    pub pod_id: String,
    pub generation: u64,
    pub template: String,
    /// 0 until spawned.
    pub pid: u32,
    pub state: PodState,
    pub phase: Option<Phase>,
    pub version: u64,
    pub message: String,
    pub started_at: SystemTime,
    pub exit: Option<PodExit>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    Started {
        pid: u32,
        template: String,
    },
    StateChanged {
        phase: Option<Phase>,
        message: String,
        version: u64,
    },
    Exited(PodExit),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodEvent {
    pub seq: u64,
    pub task_id: String,
    pub pod_id: String,
    pub generation: u64,
    pub at: SystemTime,
    pub kind: EventKind,
}

impl Retained for PodEvent {
    fn must_keep(&self) -> bool {
        matches!(self.kind, EventKind::Exited(_))
    }
}

/// A validated StartPod.
#[derive(Debug, Clone)]
pub struct StartSpec {
    pub task_id: String,
    pub pod_id: String,
    pub generation: u64,
    pub template: String,
    pub title: String,
    pub description: String,
    pub metadata: BTreeMap<String, String>,
}

/// A validated StopPod.
#[derive(Debug, Clone)]
pub struct StopSpec {
    pub task_id: String,
    /// `None`: the task's newest pod.
    pub pod_id: Option<String>,
    pub generation: u64,
    /// `None`: the host's `--stop-grace-ms`.
    pub grace: Option<Duration>,
    /// Report as EXIT_CAUSE_FENCED instead of STOPPED.
    pub fence: bool,
}

/// What a HostHello carries besides static configuration.
#[derive(Debug, Clone)]
pub struct HelloSnapshot {
    pub pods: Vec<PodView>,
    pub last_seq: u64,
    pub self_fenced: bool,
    pub draining: bool,
}

struct Pod {
    view: PodView,
    logs: Arc<LogSink>,
    dir: PathBuf,
    /// Who it runs as when not the host (`crate::isolation`); a per-pod
    /// uid returns to the pool when the exit is recorded.
    creds: Option<crate::isolation::Creds>,
    /// Set when the host decided to end the pod; becomes the exit cause.
    kill_cause: Option<ExitCause>,
    reported_completed: bool,
    exit_seq: Option<u64>,
    /// The exit was acknowledged: kept only for its logs.
    archived: bool,
    exited: watch::Sender<bool>,
}

impl Pod {
    fn is_live(&self) -> bool {
        self.view.state != PodState::Exited
    }
}

struct TaskEntry {
    generation: u64,
    newest_pod: Option<String>,
}

struct Table {
    pods: HashMap<String, Pod>,
    tasks: HashMap<String, TaskEntry>,
    events: EventLog<PodEvent>,
    contact: Contact,
    self_fenced: bool,
    draining: bool,
    /// No orphan reaper runs: new pods are refused (see `reaper`).
    unprotected: bool,
    /// Exited, unacknowledged pod ids in exit order.
    unacked: VecDeque<String>,
    /// Acknowledged pod ids kept for logs, oldest first.
    archive: VecDeque<String>,
}

impl Table {
    fn live_pods(&self) -> usize {
        self.pods.values().filter(|p| p.is_live()).count()
    }

    fn push_event(&mut self, pod: &PodView, kind: EventKind) -> u64 {
        let (seq, dropped) = self.events.push(|seq| PodEvent {
            seq,
            task_id: pod.task_id.clone(),
            pod_id: pod.pod_id.clone(),
            generation: pod.generation,
            at: SystemTime::now(),
            kind,
        });
        if let Some(d) = dropped {
            if d.kept {
                tracing::warn!(
                    seq = d.seq,
                    "event buffer full of unacknowledged exits; dropped the oldest (the pod stays in the hello snapshot)"
                );
            } else {
                tracing::debug!(seq = d.seq, "event buffer full; dropped an old state event");
            }
        }
        seq
    }

    /// Marks every live pod not already being killed for self-fencing and
    /// returns the process groups to SIGKILL.
    fn begin_self_fence(&mut self, why: &str) -> Vec<u32> {
        let mut pids = Vec::new();
        for p in self.pods.values_mut().filter(|p| p.is_live()) {
            if p.kill_cause.is_none() {
                p.kill_cause = Some(ExitCause::SelfFenced);
                if p.view.pid > 0 {
                    pids.push(p.view.pid);
                }
            }
        }
        self.self_fenced = true;
        tracing::warn!(pods = pids.len(), "self-fencing: {why}; killing all pods");
        pids
    }
}

/// The supervisor of all pods on this host.
pub struct Supervisor {
    cfg: HostConfig,
    boot_id: String,
    /// The origin of the host clock reported in heartbeats (and echoed
    /// back by central, see `crate::fence`): this boot's start.
    clock0: tokio::time::Instant,
    table: Mutex<Table>,
    seq_tx: watch::Sender<u64>,
    fence_rearm: Notify,
    spawner: Spawner,
    dirs: Arc<dirs::PodDirs>,
    isolation: crate::isolation::Isolation,
    reaper: Option<Arc<Reaper>>,
    /// The record of pod groups a later run sweeps after a crash.
    journal: GroupJournal,
    tracker: TaskTracker,
}

impl Supervisor {
    /// `tracker` receives every per-pod task (supervision, pipe readers).
    pub fn new(
        cfg: HostConfig,
        spawner: Spawner,
        reaper: Option<Arc<Reaper>>,
        journal: GroupJournal,
        tracker: TaskTracker,
    ) -> Self {
        Self {
            boot_id: uuid::Uuid::new_v4().to_string(),
            clock0: tokio::time::Instant::now(),
            table: Mutex::new(Table {
                pods: HashMap::new(),
                tasks: HashMap::new(),
                events: EventLog::new(EVENT_BUFFER),
                contact: Contact::new(cfg.fence_timeout),
                self_fenced: false,
                draining: false,
                unprotected: false,
                unacked: VecDeque::new(),
                archive: VecDeque::new(),
            }),
            dirs: Arc::new(dirs::PodDirs::new(
                &cfg.data_dir,
                cfg.pod_identity != crate::isolation::PodIdentity::Host,
            )),
            isolation: crate::isolation::Isolation::new(cfg.pod_identity.clone()),
            cfg,
            seq_tx: watch::channel(0).0,
            fence_rearm: Notify::new(),
            spawner,
            reaper,
            journal,
            tracker,
        }
    }

    /// Locks the data dir down for pods of another user, then starts
    /// making spare pod dirs in the background (see [`dirs`]).
    pub fn prepare_dirs(&self) {
        if let Err(e) = self.isolation.secure_data_dir(&self.cfg.data_dir) {
            tracing::error!(dir = %self.cfg.data_dir.display(), error = %e, "cannot restrict the data dir");
        }
        self.dirs.refill();
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // A panic while holding the lock leaves a consistent-enough table
        // (every step is a few field updates); keep serving.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn config(&self) -> &HostConfig {
        &self.cfg
    }

    pub fn boot_id(&self) -> &str {
        &self.boot_id
    }

    pub fn reaper(&self) -> Option<&Arc<Reaper>> {
        self.reaper.as_ref()
    }

    /// Wakes when a new event was issued (value: the last sequence).
    pub fn subscribe_events(&self) -> watch::Receiver<u64> {
        self.seq_tx.subscribe()
    }

    fn notify_events(&self, t: &Table) {
        self.seq_tx.send_replace(t.events.last_seq());
    }

    /// The hello snapshot; reading it resets the self-fenced flag (it is
    /// reported once per Connect).
    pub fn hello(&self) -> HelloSnapshot {
        let mut t = self.lock();
        let pods = t
            .pods
            .values()
            .filter(|p| !p.archived)
            .map(|p| p.view.clone())
            .collect();
        HelloSnapshot {
            pods,
            last_seq: t.events.last_seq(),
            self_fenced: std::mem::take(&mut t.self_fenced),
            draining: t.draining || t.unprotected,
        }
    }

    /// Every pod not yet acknowledged as exited, sorted by start time.
    pub fn list(&self) -> Vec<PodView> {
        let t = self.lock();
        let mut v: Vec<PodView> = t
            .pods
            .values()
            .filter(|p| !p.archived)
            .map(|p| p.view.clone())
            .collect();
        v.sort_by_key(|p| p.started_at);
        v
    }

    pub fn last_seq(&self) -> u64 {
        self.lock().events.last_seq()
    }

    pub fn live_pods(&self) -> usize {
        self.lock().live_pods()
    }

    /// Whether central should place no pods here: the host is shutting
    /// down, or its pods have no orphan reaper (see `fencing`). Reported
    /// in the hello and every heartbeat.
    pub fn draining(&self) -> bool {
        let t = self.lock();
        t.draining || t.unprotected
    }

    /// Buffered events after `seq`.
    pub fn events_after(&self, seq: u64) -> Vec<PodEvent> {
        self.lock()
            .events
            .after(seq)
            .into_iter()
            .map(|(_, e)| e)
            .collect()
    }

    /// Central acknowledged everything up to `seq`: drop those events and
    /// move pods whose exit is acknowledged to the log archive.
    pub fn ack(&self, seq: u64) {
        let mut doomed = Vec::new();
        {
            let mut t = self.lock();
            let acked = t.events.ack(seq);
            while let Some(id) = t.unacked.front().cloned() {
                let done = t
                    .pods
                    .get(&id)
                    .is_none_or(|p| p.exit_seq.is_some_and(|s| s <= acked));
                if !done {
                    break;
                }
                t.unacked.pop_front();
                archive(&mut t, id, &mut doomed);
            }
        }
        remove_dirs(doomed);
    }

    /// The log of a pod (`None`: the task's newest pod), archived ones too.
    pub fn logs(&self, task_id: &str, pod_id: Option<&str>) -> Option<Arc<LogSink>> {
        let t = self.lock();
        let pod_id = match pod_id {
            Some(p) => p.to_owned(),
            None => t.tasks.get(task_id)?.newest_pod.clone()?,
        };
        let pod = t.pods.get(&pod_id).filter(|p| p.view.task_id == task_id)?;
        Some(pod.logs.clone())
    }

    // ----- status -----

    /// Applies an accepted status line of a live pod.
    fn apply_status(&self, pod_id: &str, update: StatusUpdate) {
        let mut t = self.lock();
        let Some(pod) = t.pods.get_mut(pod_id).filter(|p| p.is_live()) else {
            return;
        };
        pod.view.version = pod.view.version.saturating_add(1);
        if let Some(phase) = update.phase {
            pod.view.phase = Some(phase);
            if phase == Phase::Completed {
                pod.reported_completed = true;
            }
        }
        pod.view.message = update.message.clone();
        let view = pod.view.clone();
        t.push_event(
            &view,
            EventKind::StateChanged {
                phase: view.phase,
                message: update.message,
                version: view.version,
            },
        );
        self.notify_events(&t);
    }

    /// Records a pod's end (once) and issues its exit event.
    fn record_exit(&self, pod_id: &str, make: impl FnOnce(Option<ExitCause>, bool) -> PodExit) {
        let mut t = self.lock();
        let Some(pod) = t.pods.get_mut(pod_id).filter(|p| p.is_live()) else {
            return;
        };
        let exit = make(pod.kill_cause, pod.reported_completed);
        if let Some(c) = pod.creds.take() {
            self.isolation.release(&c);
        }
        crate::metrics::pod_ended(&exit);
        pod.view.state = PodState::Exited;
        pod.view.exit = Some(exit.clone());
        let view = pod.view.clone();
        let seq = t.push_event(&view, EventKind::Exited(exit));
        let mut doomed = Vec::new();
        if let Some(pod) = t.pods.get_mut(pod_id) {
            pod.exit_seq = Some(seq);
            pod.exited.send_replace(true);
        }
        t.unacked.push_back(pod_id.to_owned());
        while t.unacked.len() > MAX_UNACKED_EXITED {
            let Some(id) = t.unacked.pop_front() else {
                break;
            };
            tracing::warn!(pod_id = %id, "too many unacknowledged exits; archiving the oldest");
            archive(&mut t, id, &mut doomed);
        }
        self.notify_events(&t);
        drop(t);
        remove_dirs(doomed);
    }
}

/// Moves an exited pod to the log archive, pruning the oldest archived pods.
fn archive(t: &mut Table, id: String, doomed: &mut Vec<PathBuf>) {
    if let Some(p) = t.pods.get_mut(&id) {
        p.archived = true;
        t.archive.push_back(id);
    }
    while t.archive.len() > MAX_ARCHIVED {
        let Some(old) = t.archive.pop_front() else {
            break;
        };
        if let Some(p) = t.pods.remove(&old) {
            doomed.push(p.dir);
        }
    }
}

fn remove_dirs(dirs: Vec<PathBuf>) {
    for d in dirs {
        if let Err(e) = std::fs::remove_dir_all(&d) {
            tracing::debug!(dir = %d.display(), error = %e, "could not remove pruned pod dir");
        }
    }
}

/// Signals whole process groups; a group already gone is not an error.
fn kill_groups(pids: &[u32], sig: nix::sys::signal::Signal) {
    for &pid in pids {
        kill_group(pid, sig);
    }
}

fn kill_group(pid: u32, sig: nix::sys::signal::Signal) {
    let Ok(raw) = i32::try_from(pid) else { return };
    if raw <= 1 {
        return;
    }
    match nix::sys::signal::killpg(nix::unistd::Pid::from_raw(raw), sig) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => tracing::warn!(pgid = raw, signal = %sig, error = %e, "killpg failed"),
    }
}
