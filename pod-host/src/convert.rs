//! Domain → proto conversions (proto types stop at the api layer).

use ipa_proto::time::timestamp;
use ipa_proto::v1 as pb;

use crate::pods::{EventKind, ExitCause, PodEvent, PodExit, PodState, PodView};
use crate::status::Phase;

pub fn phase(p: Option<Phase>) -> pb::Phase {
    match p {
        None => pb::Phase::Unspecified,
        Some(Phase::SpecClarification) => pb::Phase::SpecClarification,
        Some(Phase::Planning) => pb::Phase::Planning,
        Some(Phase::Development) => pb::Phase::Development,
        Some(Phase::Review) => pb::Phase::Review,
        Some(Phase::Completed) => pb::Phase::Completed,
        Some(Phase::Cancelled) => pb::Phase::Cancelled,
    }
}

pub fn state(s: PodState) -> pb::PodState {
    match s {
        PodState::Starting => pb::PodState::Starting,
        PodState::Running => pb::PodState::Running,
        PodState::Exited => pb::PodState::Exited,
    }
}

pub fn cause(c: ExitCause) -> pb::ExitCause {
    match c {
        ExitCause::Exited => pb::ExitCause::Exited,
        ExitCause::Stopped => pb::ExitCause::Stopped,
        ExitCause::Fenced => pb::ExitCause::Fenced,
        ExitCause::SelfFenced => pb::ExitCause::SelfFenced,
        ExitCause::HostShutdown => pb::ExitCause::HostShutdown,
        ExitCause::SpawnFailed => pb::ExitCause::SpawnFailed,
    }
}

pub fn exit(e: &PodExit) -> pb::PodExit {
    pb::PodExit {
        exit_code: e.code,
        signal: e.signal,
        cause: cause(e.cause) as i32,
        reported_completed: e.reported_completed,
        exited_at: Some(timestamp(e.at)),
        message: e.message.clone(),
    }
}

pub fn pod(v: &PodView) -> pb::PodInfo {
    pb::PodInfo {
        task_id: v.task_id.clone(),
        pod_id: v.pod_id.clone(),
        generation: v.generation,
        template: v.template.clone(),
        pid: v.pid,
        state: state(v.state) as i32,
        phase: phase(v.phase) as i32,
        version: v.version,
        message: v.message.clone(),
        started_at: Some(timestamp(v.started_at)),
        exit: v.exit.as_ref().map(exit),
    }
}

pub fn event(e: &PodEvent) -> pb::PodEvent {
    use pb::pod_event::Kind;
    let kind = match &e.kind {
        EventKind::Started { pid, template } => Kind::Started(pb::PodStarted {
            pid: *pid,
            template: template.clone(),
        }),
        EventKind::StateChanged {
            phase: p,
            message,
            version,
        } => Kind::StateChanged(pb::PodStateChanged {
            phase: phase(*p) as i32,
            message: message.clone(),
            version: *version,
        }),
        EventKind::Exited(x) => Kind::Exited(exit(x)),
    };
    pb::PodEvent {
        seq: e.seq,
        task_id: e.task_id.clone(),
        pod_id: e.pod_id.clone(),
        generation: e.generation,
        at: Some(timestamp(e.at)),
        kind: Some(kind),
    }
}
