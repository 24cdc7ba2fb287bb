//! The simulated pod-host's pod table: the same rules as the real
//! pod-host's (`pod-host/src/pods`), without processes.
//!
//! - StartPod is idempotent on `pod_id`; a generation older than the newest
//!   the task has carried is refused (STALE_GENERATION); a newer one kills
//!   the task's older live pod first (EXIT_CAUSE_FENCED); capacity counts
//!   live pods (NO_CAPACITY).
//! - StopPod checks the generation the same way and remembers a newer one.
//! - Every state change issues a pod event with the next per-boot sequence
//!   number into a bounded replay buffer; acknowledged events are dropped,
//!   and an exited pod stays in the hello snapshot until its exit event is
//!   acknowledged.
//! - Any message or command from central is contact; when nothing was heard
//!   for the fence timeout the host kills its own pods
//!   (EXIT_CAUSE_SELF_FENCED), also when the gap is only noticed late.
//!
//! A "pod" is an entry: it starts at once (pid from a counter), reports
//! one status line (`PHASE_PLANNING`, version 1, as a pod writing its first
//! line on fd 3 would) and dies when told to ([`Table::crash`]) or killed.
//! Pure: time is an argument, so every rule is unit-tested without sleeping.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use ipa_proto::time::timestamp;
use ipa_proto::v1 as pb;
use ipa_proto::{ErrorReason, status};
use pb::pod_event::Kind;
use tonic::Status;

/// Unacknowledged events kept for replay (the real pod-host's
/// `EVENT_BUFFER`).
pub const EVENT_BUFFER: usize = 10_000;

/// The template a StartPod without one asks for.
pub const DEFAULT_TEMPLATE: &str = "default";

/// Fake pids start here, far above real ones (`pid_max` is at most 2^22),
/// so a simulated pid can never name a process of this machine.
const FIRST_PID: u32 = 10_000_000;

/// Counters of what happened to the pods, for the benchmark's checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Pods alive now.
    pub live: usize,
    /// Pods ever started.
    pub started: u64,
    /// Pods crashed on purpose ([`Table::crash`]).
    pub crashed: u64,
    /// Pods ended by central: StopPod (stopped or fenced) and starts of a
    /// newer generation.
    pub killed_by_central: u64,
    /// Pods killed by the fence timer.
    pub self_fenced: u64,
}

struct Pod {
    info: pb::PodInfo,
    exit_seq: Option<u64>,
}

impl Pod {
    fn is_live(&self) -> bool {
        self.info.state != pb::PodState::Exited as i32
    }
}

struct TaskEntry {
    generation: u64,
    newest_pod: Option<String>,
}

/// Everything one simulated pod-host knows.
pub struct Table {
    boot_id: String,
    /// When the table was made: `host_clock_ms` counts from here.
    born: Instant,
    capacity: u32,
    templates: BTreeSet<String>,
    fence_timeout: Duration,
    pods: HashMap<String, Pod>,
    tasks: HashMap<String, TaskEntry>,
    events: VecDeque<pb::PodEvent>,
    last_seq: u64,
    acked: u64,
    /// Exited pods whose exit is not acknowledged yet, in exit order.
    unacked: VecDeque<String>,
    last_contact: Option<Instant>,
    self_fenced: bool,
    next_pid: u32,
    /// Live pods (kept as a count: heartbeats and starts need it often).
    live: usize,
    stats: SimStats,
}

impl Table {
    pub fn new(capacity: u32, templates: &[String], fence_timeout: Duration) -> Self {
        Self {
            boot_id: uuid::Uuid::new_v4().to_string(),
            born: Instant::now(),
            capacity,
            templates: templates.iter().cloned().collect(),
            fence_timeout,
            pods: HashMap::new(),
            tasks: HashMap::new(),
            events: VecDeque::new(),
            last_seq: 0,
            acked: 0,
            unacked: VecDeque::new(),
            last_contact: None,
            self_fenced: false,
            next_pid: FIRST_PID,
            live: 0,
            stats: SimStats::default(),
        }
    }

    pub fn boot_id(&self) -> &str {
        &self.boot_id
    }

    /// Milliseconds on this host's monotonic clock (`host_clock_ms` of
    /// the hello and heartbeats). Central echoes it back as the lease; the
    /// simulated host does not check the echo (its fence timer runs from
    /// each contact's arrival, as a pod-host's does for an echo of 0).
    pub fn clock_ms(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    pub fn live_pods(&self) -> usize {
        self.live
    }

    pub fn stats(&self) -> SimStats {
        SimStats {
            live: self.live_pods(),
            ..self.stats
        }
    }

    /// The hello: every pod not yet acknowledged as exited. Reading it
    /// resets the self-fenced flag (reported once per Connect).
    pub fn hello(&mut self, host_id: &str) -> pb::HostHello {
        pb::HostHello {
            host_id: host_id.to_owned(),
            boot_id: self.boot_id.clone(),
            capacity: self.capacity,
            templates: self.templates.iter().cloned().collect(),
            pods: self.pods.values().map(|p| p.info.clone()).collect(),
            fence_timeout_ms: u32::try_from(self.fence_timeout.as_millis()).unwrap_or(u32::MAX),
            last_seq: self.last_seq,
            self_fenced: std::mem::take(&mut self.self_fenced),
            draining: false,
            host_clock_ms: self.clock_ms(),
        }
    }

    /// The central's hello: where replay starts. The same boot replays
    /// after its `acked_seq` (everything up to it counts as acknowledged);
    /// another boot gets the whole buffer.
    pub fn replay_from(&mut self, known_boot_id: &str, acked_seq: u64) -> u64 {
        if known_boot_id == self.boot_id {
            let acked = acked_seq.min(self.last_seq);
            self.ack(acked);
            acked
        } else {
            0
        }
    }

    /// Buffered events after `seq`, oldest first.
    pub fn events_after(&self, seq: u64) -> Vec<pb::PodEvent> {
        let start = self.events.partition_point(|e| e.seq <= seq);
        self.events.range(start..).cloned().collect()
    }

    /// Central durably handled everything up to `seq`.
    pub fn ack(&mut self, seq: u64) {
        self.acked = self.acked.max(seq.min(self.last_seq));
        while self.events.front().is_some_and(|e| e.seq <= self.acked) {
            self.events.pop_front();
        }
        while let Some(id) = self.unacked.front() {
            let done = self
                .pods
                .get(id)
                .is_none_or(|p| p.exit_seq.is_some_and(|s| s <= self.acked));
            if !done {
                break;
            }
            if let Some(id) = self.unacked.pop_front() {
                self.pods.remove(&id);
            }
        }
    }

    /// A message or command from central at `now`. A gap that already
    /// reached the fence timeout (noticed late) fences before refreshing.
    pub fn contact(&mut self, now: Instant) {
        let missed = self
            .last_contact
            .is_some_and(|t| now.saturating_duration_since(t) >= self.fence_timeout);
        if missed {
            self.self_fence();
        }
        self.last_contact = Some(self.last_contact.map_or(now, |t| t.max(now)));
    }

    /// When the pods must be killed if nothing more is heard.
    pub fn fence_deadline(&self) -> Option<Instant> {
        self.last_contact
            .filter(|_| self.live > 0)
            .map(|t| t + self.fence_timeout)
    }

    /// The fence timer fired: fence if the deadline really passed.
    pub fn fence_if_due(&mut self, now: Instant) {
        if self.fence_deadline().is_some_and(|d| now >= d) {
            self.self_fence();
        }
    }

    fn self_fence(&mut self) {
        let live: Vec<String> = self.live_ids();
        if live.is_empty() {
            return;
        }
        for id in live {
            self.end(&id, None, Some(9), pb::ExitCause::SelfFenced);
            self.stats.self_fenced += 1;
        }
        self.self_fenced = true;
    }

    fn live_ids(&self) -> Vec<String> {
        self.pods
            .iter()
            .filter(|(_, p)| p.is_live())
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// StartPod.
    pub fn start(
        &mut self,
        r: pb::HostStartPodRequest,
        now: Instant,
    ) -> Result<pb::PodInfo, Status> {
        self.contact(now);
        let task_id = parse_id("task_id", &r.task_id)?;
        let pod_id = parse_id("pod_id", &r.pod_id)?;
        let template = if r.template.is_empty() {
            DEFAULT_TEMPLATE.to_owned()
        } else {
            r.template
        };
        if !self.templates.contains(&template) {
            return Err(invalid(
                "template",
                format!("no template named {template:?}"),
            ));
        }
        if let Some(p) = self.pods.get(&pod_id) {
            if p.info.task_id != task_id {
                return Err(invalid(
                    "pod_id",
                    format!("pod {pod_id} belongs to another task"),
                ));
            }
            return Ok(p.info.clone());
        }
        if let Some(known) = self
            .tasks
            .get(&task_id)
            .map(|e| e.generation)
            .filter(|k| r.generation < *k)
        {
            return Err(status(
                ErrorReason::StaleGeneration,
                format!(
                    "task {task_id}: generation {} is older than generation {known}",
                    r.generation
                ),
            ));
        }
        // At most one pod of a task lives: its newest (every start kills
        // the older one).
        let older = self
            .tasks
            .get(&task_id)
            .and_then(|e| e.newest_pod.as_ref())
            .and_then(|id| self.pods.get(id))
            .filter(|p| p.is_live())
            .map(|p| (p.info.pod_id.clone(), p.info.generation));
        if let Some((id, g)) = &older
            && *g >= r.generation
        {
            return Err(invalid(
                "generation",
                format!("task {task_id} already runs pod {id} at generation {g}"),
            ));
        }
        if self.live - usize::from(older.is_some()) >= self.capacity as usize {
            return Err(status(
                ErrorReason::NoCapacity,
                format!("all {} pod slots are in use", self.capacity),
            ));
        }
        if let Some((id, _)) = older {
            self.end(&id, None, Some(9), pb::ExitCause::Fenced);
            self.stats.killed_by_central += 1;
        }
        self.tasks.insert(
            task_id.clone(),
            TaskEntry {
                generation: r.generation,
                newest_pod: Some(pod_id.clone()),
            },
        );
        let pid = self.next_pid;
        self.next_pid = self.next_pid.wrapping_add(1).max(FIRST_PID);
        let info = pb::PodInfo {
            task_id,
            pod_id: pod_id.clone(),
            generation: r.generation,
            template: template.clone(),
            pid,
            state: pb::PodState::Running as i32,
            phase: pb::Phase::Planning as i32,
            version: 1,
            message: "simulated pod".into(),
            started_at: Some(timestamp(SystemTime::now())),
            exit: None,
        };
        self.pods.insert(
            pod_id,
            Pod {
                info: info.clone(),
                exit_seq: None,
            },
        );
        self.live += 1;
        self.stats.started += 1;
        self.push(&info, Kind::Started(pb::PodStarted { pid, template }));
        self.push(
            &info,
            Kind::StateChanged(pb::PodStateChanged {
                phase: info.phase,
                message: info.message.clone(),
                version: info.version,
            }),
        );
        Ok(info)
    }

    /// StopPod: the simulated pod dies at once on SIGTERM.
    pub fn stop(
        &mut self,
        r: &pb::HostStopPodRequest,
        now: Instant,
    ) -> Result<pb::PodInfo, Status> {
        self.contact(now);
        let task_id = parse_id("task_id", &r.task_id)?;
        let wanted = match r.pod_id.as_str() {
            "" => None,
            p => Some(parse_id("pod_id", p)?),
        };
        let entry = self.tasks.entry(task_id.clone()).or_insert(TaskEntry {
            generation: r.generation,
            newest_pod: None,
        });
        if r.generation < entry.generation {
            return Err(status(
                ErrorReason::StaleGeneration,
                format!(
                    "task {task_id}: generation {} is older than generation {}",
                    r.generation, entry.generation
                ),
            ));
        }
        entry.generation = r.generation;
        let not_found = || {
            status(
                ErrorReason::PodNotFound,
                format!("no pod of task {task_id} on this host"),
            )
        };
        let pod_id = match wanted {
            Some(p) => p,
            None => entry.newest_pod.clone().ok_or_else(not_found)?,
        };
        let pod = self
            .pods
            .get(&pod_id)
            .filter(|p| p.info.task_id == task_id)
            .ok_or_else(not_found)?;
        if pod.is_live() {
            let cause = if r.fence {
                pb::ExitCause::Fenced
            } else {
                pb::ExitCause::Stopped
            };
            self.end(&pod_id, None, Some(15), cause);
            self.stats.killed_by_central += 1;
        }
        self.pods
            .get(&pod_id)
            .map(|p| p.info.clone())
            .ok_or_else(not_found)
    }

    /// Every pod not yet acknowledged as exited.
    pub fn list(&self) -> Vec<pb::PodInfo> {
        let mut v: Vec<pb::PodInfo> = self.pods.values().map(|p| p.info.clone()).collect();
        v.sort_by_key(|p| p.started_at.map(|t| (t.seconds, t.nanos)));
        v
    }

    /// The (simulated) output of a task's pod: one line naming it.
    pub fn logs(&self, task_id: &str, pod_id: &str) -> Option<String> {
        let pod_id = match pod_id {
            "" => self.tasks.get(task_id)?.newest_pod.clone()?,
            p => p.to_owned(),
        };
        let p = self
            .pods
            .get(&pod_id)
            .filter(|p| p.info.task_id == task_id)?;
        Some(format!(
            "simulated pod {} of task {task_id}\n",
            p.info.pod_id
        ))
    }

    /// `n` live pods exit with code 1 (a crash); returns their task ids.
    pub fn crash(&mut self, n: usize) -> Vec<String> {
        let victims: Vec<String> = self.live_ids().into_iter().take(n).collect();
        let mut tasks = Vec::with_capacity(victims.len());
        for id in &victims {
            self.end(id, Some(1), None, pb::ExitCause::Exited);
            self.stats.crashed += 1;
            if let Some(p) = self.pods.get(id) {
                tasks.push(p.info.task_id.clone());
            }
        }
        tasks
    }

    /// Records a pod's end and issues its exit event.
    fn end(&mut self, pod_id: &str, code: Option<i32>, signal: Option<i32>, cause: pb::ExitCause) {
        let Some(pod) = self.pods.get_mut(pod_id).filter(|p| p.is_live()) else {
            return;
        };
        let exit = pb::PodExit {
            exit_code: code,
            signal,
            cause: cause as i32,
            reported_completed: false,
            exited_at: Some(timestamp(SystemTime::now())),
            message: String::new(),
        };
        pod.info.state = pb::PodState::Exited as i32;
        pod.info.exit = Some(exit.clone());
        let info = pod.info.clone();
        self.live -= 1;
        let seq = self.push(&info, Kind::Exited(exit));
        if let Some(p) = self.pods.get_mut(pod_id) {
            p.exit_seq = Some(seq);
        }
        self.unacked.push_back(pod_id.to_owned());
    }

    fn push(&mut self, pod: &pb::PodInfo, kind: Kind) -> u64 {
        if self.events.len() >= EVENT_BUFFER {
            // Drop the oldest event that is not an exit (the snapshot
            // carries every pod's state); an exited pod stays in the
            // snapshot until acknowledged, so even a dropped exit is not lost.
            let pos = self
                .events
                .iter()
                .position(|e| !matches!(e.kind, Some(Kind::Exited(_))))
                .unwrap_or(0);
            self.events.remove(pos);
        }
        self.last_seq += 1;
        self.events.push_back(pb::PodEvent {
            seq: self.last_seq,
            task_id: pod.task_id.clone(),
            pod_id: pod.pod_id.clone(),
            generation: pod.generation,
            at: Some(timestamp(SystemTime::now())),
            kind: Some(kind),
        });
        self.last_seq
    }
}

fn invalid(field: &str, problem: impl std::fmt::Display) -> Status {
    status(ErrorReason::InvalidArgument, format!("{field}: {problem}"))
}

/// A lowercase UUID, or INVALID_ARGUMENT naming `field` (as the real
/// pod-host, whose ids become directory names).
fn parse_id(field: &str, s: &str) -> Result<String, Status> {
    uuid::Uuid::parse_str(s)
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| invalid(field, format!("{s:?} is not a UUID")))
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;
