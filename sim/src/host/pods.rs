//! The simulated pod-host's pod table: the rules of the real
//! `pod-host/src/pods` (StartPod idempotent on the pod id, older
//! generations refused, a newer generation kills the older pod first,
//! capacity counts live pods, StopPod by generation with a grace period,
//! exits recorded once and kept until acknowledged) over scripted
//! processes.

use std::time::Duration;

use central_manager::domain::Phase;
use central_manager::domain::host::{
    ExitCause, HostCallError, PodEventKind, PodExit, PodSnapshot, Refusal, StartRequest,
    StartedPod, StopRequest,
};
use rand::Rng;
use tokio::time::Instant;

use super::{ProcTimer, SimHost, TaskEntry, Timer};
use crate::net::{ConnId, Reply};
use crate::plan::{Behaviour, PodEnd};

/// Central's call waiting for a pod (a StartPod for its spawn, a StopPod
/// for its exit).
type Waiter = (ConnId, u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    Starting,
    Running,
    Exited,
}

/// One pod.
#[derive(Debug)]
pub(super) struct Pod {
    pub task_id: String,
    pub pod_id: String,
    pub generation: u64,
    pub pid: u32,
    pub state: State,
    pub behaviour: Behaviour,
    pub phase: Option<Phase>,
    pub version: u64,
    pub started_at: i64,
    /// Why the host is ending it (becomes the exit cause).
    pub kill_cause: Option<ExitCause>,
    /// The OS process runs (false before the spawn and after its death).
    pub process_alive: bool,
    /// How the process died, once it has (noticed or not).
    pub death: Option<(Option<i32>, Option<i32>)>,
    pub reported_completed: bool,
    pub exit: Option<PodExit>,
    pub exit_seq: Option<u64>,
    pub archived: bool,
    pub start_waiters: Vec<Waiter>,
    pub stop_waiters: Vec<Waiter>,
    /// Whether it ignores SIGTERM.
    pub stubborn: bool,
}

impl Pod {
    pub fn is_live(&self) -> bool {
        self.state != State::Exited
    }

    /// Its process died while the host was frozen.
    pub fn dead_unnoticed(&self) -> bool {
        self.is_live() && self.death.is_some()
    }

    pub fn snapshot(&self) -> PodSnapshot {
        PodSnapshot {
            task_id: self.task_id.clone(),
            pod_id: self.pod_id.clone(),
            generation: self.generation,
            pid: self.pid,
            alive: self.is_live(),
            phase: self.phase,
            version: self.version,
            started_at: Some(self.started_at),
        }
    }
}

/// The pods' scripts, from the task's metadata (`sim.*` keys).
pub(super) fn behaviour(req: &StartRequest) -> Behaviour {
    let m = &req.metadata;
    let num = |k: &str| m.get(k).and_then(|v| v.parse::<u32>().ok());
    Behaviour {
        life_ms: num("sim.life_ms"),
        end: match m.get("sim.end").map(String::as_str) {
            Some("crash") => PodEnd::Crash,
            Some("complete") => PodEnd::Complete,
            _ => PodEnd::Exit,
        },
        phase_every_ms: num("sim.phase_ms"),
        spawn_fails: m.get("sim.spawn").is_some_and(|v| v == "fail"),
    }
}

fn refused(refusal: Refusal, message: String) -> HostCallError {
    HostCallError::Refused { refusal, message }
}

const PHASES: [Phase; 3] = [Phase::Planning, Phase::Development, Phase::Review];

impl SimHost {
    fn wall_micros() -> i64 {
        // Only shown to central (plausibility-checked there).
        1_700_000_000_000_000
    }

    /// StartPod: the real `reserve` rules, then a spawn that takes a few
    /// milliseconds.
    pub(super) fn start(&mut self, conn: ConnId, id: u64, req: StartRequest) {
        if let Some(p) = self.pods.get(&req.pod_id) {
            let r = if p.task_id != req.task_id {
                Err(refused(
                    Refusal::InvalidArgument,
                    "pod belongs to another task".into(),
                ))
            } else {
                Ok(StartedPod {
                    pid: p.pid,
                    started_at: Some(p.started_at),
                })
            };
            self.net.reply(conn, id, Reply::Start(r));
            return;
        }
        let known = self.tasks.get(&req.task_id).map(|e| e.generation);
        if let Some(known) = known.filter(|k| req.generation < *k) {
            let msg = format!("STALE_GENERATION: generation {} < {known}", req.generation);
            self.net.reply(
                conn,
                id,
                Reply::Start(Err(refused(Refusal::StaleGeneration, msg))),
            );
            return;
        }
        let older: Vec<String> = self
            .pods
            .values()
            .filter(|p| p.is_live() && p.task_id == req.task_id)
            .map(|p| p.pod_id.clone())
            .collect();
        if older.iter().any(|o| {
            self.pods
                .get(o)
                .is_some_and(|p| p.generation >= req.generation)
        }) {
            let msg = "INVALID_ARGUMENT: the task already runs a newer pod".to_owned();
            self.net.reply(
                conn,
                id,
                Reply::Start(Err(refused(Refusal::InvalidArgument, msg))),
            );
            return;
        }
        let live = self.pods.values().filter(|p| p.is_live()).count() - older.len();
        if live >= self.spec.capacity as usize {
            let msg = format!("NO_CAPACITY: all {} slots are taken", self.spec.capacity);
            self.net.reply(
                conn,
                id,
                Reply::Start(Err(refused(Refusal::NoCapacity, msg))),
            );
            return;
        }
        for o in &older {
            if let Some(p) = self.pods.get_mut(o) {
                p.kill_cause.get_or_insert(ExitCause::Fenced);
            }
            self.kill(o, 9);
        }
        self.tasks.insert(
            req.task_id.clone(),
            TaskEntry {
                generation: req.generation,
                newest: Some(req.pod_id.clone()),
            },
        );
        let stubborn = self.rng.random_bool(0.2);
        self.pods.insert(
            req.pod_id.clone(),
            Pod {
                task_id: req.task_id.clone(),
                pod_id: req.pod_id.clone(),
                generation: req.generation,
                pid: 0,
                state: State::Starting,
                behaviour: behaviour(&req),
                phase: None,
                version: 0,
                started_at: Self::wall_micros(),
                kill_cause: None,
                process_alive: false,
                death: None,
                reported_completed: false,
                exit: None,
                exit_seq: None,
                archived: false,
                start_waiters: vec![(conn, id)],
                stop_waiters: Vec::new(),
                stubborn,
            },
        );
        let spawn = Duration::from_micros(self.rng.random_range(500..=5000));
        self.at(Instant::now() + spawn, Timer::Spawned(req.pod_id));
    }

    /// The spawn finished (or failed).
    pub(super) fn spawned(&mut self, pod_id: &str) {
        let Some(p) = self.pods.get_mut(pod_id) else {
            return;
        };
        let waiters = std::mem::take(&mut p.start_waiters);
        if p.behaviour.spawn_fails {
            let task = p.task_id.clone();
            self.pods.remove(pod_id);
            if let Some(e) = self.tasks.get_mut(&task)
                && e.newest.as_deref() == Some(pod_id)
            {
                e.newest = None;
            }
            for (conn, id) in waiters {
                let err = refused(
                    Refusal::SpawnFailed,
                    "cannot start a pod from template \"default\": no such program".into(),
                );
                self.net.reply(conn, id, Reply::Start(Err(err)));
            }
            return;
        }
        if p.kill_cause.is_some() {
            // Stopped or fenced while it was being started.
            p.death = Some((None, None));
            self.notice_exit(pod_id);
            for (conn, id) in waiters {
                let r = Ok(StartedPod {
                    pid: 0,
                    started_at: None,
                });
                self.net.reply(conn, id, Reply::Start(r));
            }
            return;
        }
        self.next_pid += 1;
        let pid = self.next_pid;
        p.pid = pid;
        p.state = State::Running;
        p.process_alive = true;
        let (task, gen_, started_at, b) =
            (p.task_id.clone(), p.generation, p.started_at, p.behaviour);
        self.ledger
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .started(pod_id, &task, self.idx, gen_);
        self.trace.note(format!(
            "host-{} runs pod {pod_id} gen {gen_} of task {task}",
            self.idx
        ));
        self.push_event(&task, pod_id, gen_, PodEventKind::Started { pid });
        for (conn, id) in waiters {
            let r = Ok(StartedPod {
                pid,
                started_at: Some(started_at),
            });
            self.net.reply(conn, id, Reply::Start(r));
        }
        let now = Instant::now();
        if let Some(life) = b.life_ms {
            self.proc_at(
                now + Duration::from_millis(u64::from(life)),
                ProcTimer::NaturalEnd(pod_id.to_owned()),
            );
        }
        if let Some(every) = b.phase_every_ms {
            self.at(
                now + Duration::from_millis(u64::from(every)),
                Timer::Phase(pod_id.to_owned()),
            );
        }
    }

    /// A status line with the next phase.
    pub(super) fn report_phase(&mut self, pod_id: &str) {
        let Some(p) = self
            .pods
            .get_mut(pod_id)
            .filter(|p| p.state == State::Running && p.process_alive)
        else {
            return;
        };
        p.version += 1;
        let phase = PHASES[(p.version as usize) % PHASES.len()];
        p.phase = Some(phase);
        let (task, gen_, version) = (p.task_id.clone(), p.generation, p.version);
        let every = p.behaviour.phase_every_ms.unwrap_or(1000);
        self.push_event(
            &task,
            pod_id,
            gen_,
            PodEventKind::StateChanged {
                phase: Some(phase),
                message: format!("step {version}"),
                version,
            },
        );
        self.at(
            Instant::now() + Duration::from_millis(u64::from(every)),
            Timer::Phase(pod_id.to_owned()),
        );
    }

    /// The process ends on its own (the host may be frozen: it notices
    /// later).
    pub(super) fn natural_end(&mut self, pod_id: &str) {
        let frozen = self.frozen();
        let Some(p) = self.pods.get_mut(pod_id).filter(|p| p.process_alive) else {
            return;
        };
        p.process_alive = false;
        let code = match p.behaviour.end {
            PodEnd::Crash => 1,
            PodEnd::Exit | PodEnd::Complete => 0,
        };
        p.death = Some((Some(code), None));
        if p.behaviour.end == PodEnd::Complete && !frozen {
            // The last status line before the exit.
            p.version += 1;
            p.phase = Some(Phase::Completed);
            p.reported_completed = true;
            let (task, gen_, version) = (p.task_id.clone(), p.generation, p.version);
            self.push_event(
                &task,
                pod_id,
                gen_,
                PodEventKind::StateChanged {
                    phase: Some(Phase::Completed),
                    message: "done".into(),
                    version,
                },
            );
        }
        self.ledger
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .died(pod_id);
        if !self.frozen() {
            self.notice_exit(pod_id);
        }
    }

    /// A SIGTERMed pod exits (the host may be frozen by then: it notices
    /// later).
    pub(super) fn term_exit(&mut self, pod_id: &str) {
        let Some(p) = self.pods.get_mut(pod_id).filter(|p| p.process_alive) else {
            return;
        };
        p.process_alive = false;
        p.death = Some((None, Some(15)));
        self.ledger
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .died(pod_id);
        if !self.frozen() {
            self.notice_exit(pod_id);
        }
    }

    /// The process is killed by `signal` now (the host is running: it
    /// notices at once).
    pub(super) fn kill(&mut self, pod_id: &str, signal: i32) {
        let Some(p) = self.pods.get_mut(pod_id) else {
            return;
        };
        if p.state == State::Starting {
            // Killed by the start path once spawned.
            return;
        }
        if p.process_alive {
            p.process_alive = false;
            p.death = Some((None, Some(signal)));
            self.ledger
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .died(pod_id);
        }
        if p.is_live() && p.death.is_some() {
            self.notice_exit(pod_id);
        }
    }

    /// Records a dead pod's exit: the event, and the answer to every
    /// StopPod waiting for it.
    pub(super) fn notice_exit(&mut self, pod_id: &str) {
        let Some(p) = self.pods.get_mut(pod_id).filter(|p| p.is_live()) else {
            return;
        };
        let (code, signal) = p.death.unwrap_or((None, None));
        let exit = PodExit {
            exit_code: code,
            signal,
            cause: p.kill_cause.unwrap_or(ExitCause::Exited),
            reported_completed: p.reported_completed,
            message: if p.pid == 0 {
                "ended before it was started".into()
            } else {
                String::new()
            },
        };
        p.state = State::Exited;
        p.exit = Some(exit.clone());
        let (task, gen_) = (p.task_id.clone(), p.generation);
        let waiters = std::mem::take(&mut p.stop_waiters);
        let seq = self.push_event(&task, pod_id, gen_, PodEventKind::Exited(exit.clone()));
        if let Some(p) = self.pods.get_mut(pod_id) {
            p.exit_seq = Some(seq);
        }
        for (conn, id) in waiters {
            self.net
                .reply(conn, id, Reply::Stop(Ok(Some(exit.clone()))));
        }
    }

    /// Every live pod not already being killed is killed (SIGKILL) as
    /// self-fenced.
    pub(super) fn self_fence(&mut self, why: &str) {
        let victims: Vec<String> = self
            .pods
            .values_mut()
            .filter(|p| p.is_live() && p.kill_cause.is_none())
            .map(|p| {
                p.kill_cause = Some(ExitCause::SelfFenced);
                p.pod_id.clone()
            })
            .collect();
        if victims.is_empty() {
            return;
        }
        self.self_fenced = true;
        self.trace.note(format!(
            "host-{} self-fences {} pod(s): {why}",
            self.idx,
            victims.len()
        ));
        for v in victims {
            self.kill(&v, 9);
        }
    }

    /// StopPod by generation: SIGTERM, the grace, SIGKILL; answered once
    /// the pod is gone.
    pub(super) fn stop(&mut self, conn: ConnId, id: u64, req: StopRequest) {
        let entry = self.tasks.entry(req.task_id.clone()).or_insert(TaskEntry {
            generation: req.generation,
            newest: None,
        });
        if req.generation < entry.generation {
            let msg = format!(
                "STALE_GENERATION: generation {} < {}",
                req.generation, entry.generation
            );
            self.net.reply(
                conn,
                id,
                Reply::Stop(Err(refused(Refusal::StaleGeneration, msg))),
            );
            return;
        }
        entry.generation = req.generation;
        let Some(p) = self
            .pods
            .get_mut(&req.pod_id)
            .filter(|p| p.task_id == req.task_id)
        else {
            let msg = format!("POD_NOT_FOUND: no pod {} on this host", req.pod_id);
            self.net.reply(
                conn,
                id,
                Reply::Stop(Err(refused(Refusal::PodNotFound, msg))),
            );
            return;
        };
        if !p.is_live() {
            let exit = p.exit.clone();
            self.net.reply(conn, id, Reply::Stop(Ok(exit)));
            return;
        }
        p.kill_cause.get_or_insert(if req.fence {
            ExitCause::Fenced
        } else {
            ExitCause::Stopped
        });
        p.stop_waiters.push((conn, id));
        if p.state == State::Starting {
            return;
        }
        let grace = match req.grace_ms {
            0 => self.timing.stop_grace,
            ms => Duration::from_millis(u64::from(ms)),
        };
        let stubborn = p.stubborn;
        let now = Instant::now();
        if !stubborn {
            let after = Duration::from_micros(self.rng.random_range(100..=20_000)).min(grace);
            self.proc_at(now + after, ProcTimer::TermExit(req.pod_id.clone()));
        }
        self.at(now + grace, Timer::GraceOver(req.pod_id));
    }
}
