//! `ipa.v1.PodHost` messages ⇄ the domain's host messages
//! (`domain::host`). The only place besides [`super::grpc`] that knows the
//! pod-host protocol's proto types. Values a host may get wrong (an
//! unknown enum value, a missing field) become the domain's "unknown"
//! (`ExitCause::Unspecified`, `phase: None`, `PodEventKind::Unknown`) rather
//! than an error: the session and supervisor decide what they mean.

use ipa_proto::time::micros_from_timestamp;
use ipa_proto::v1::{self as pb, central_message, host_message, pod_event};

use crate::domain::Phase;
use crate::domain::host::{
    CentralMessage, ExitCause, Hello, HostMessage, LogChunk, PodEvent, PodEventKind, PodExit,
    PodSnapshot, StartRequest, StopRequest,
};

/// A phase a host reported; `None` for UNSPECIFIED or a value this central
/// does not know (a newer host may know more phases).
pub fn phase(v: i32) -> Option<Phase> {
    crate::api::convert::phase_from_pb(v, "phase")
        .ok()
        .flatten()
}

fn exit_cause(v: i32) -> ExitCause {
    match pb::ExitCause::try_from(v).unwrap_or(pb::ExitCause::Unspecified) {
        pb::ExitCause::Unspecified => ExitCause::Unspecified,
        pb::ExitCause::Exited => ExitCause::Exited,
        pb::ExitCause::Stopped => ExitCause::Stopped,
        pb::ExitCause::Fenced => ExitCause::Fenced,
        pb::ExitCause::SelfFenced => ExitCause::SelfFenced,
        pb::ExitCause::HostShutdown => ExitCause::HostShutdown,
        pb::ExitCause::SpawnFailed => ExitCause::SpawnFailed,
    }
}

/// A pod's exit as the host reported it.
pub fn exit(e: &pb::PodExit) -> PodExit {
    PodExit {
        exit_code: e.exit_code,
        signal: e.signal,
        cause: exit_cause(e.cause),
        reported_completed: e.reported_completed,
        message: e.message.clone(),
    }
}

/// One pod as a host reports it (in a hello or a ListPods answer).
pub fn snapshot(p: &pb::PodInfo) -> PodSnapshot {
    PodSnapshot {
        task_id: p.task_id.clone(),
        pod_id: p.pod_id.clone(),
        generation: p.generation,
        pid: p.pid,
        alive: p.state != pb::PodState::Exited as i32,
        phase: phase(p.phase),
        version: p.version,
        started_at: p.started_at.as_ref().and_then(micros_from_timestamp),
    }
}

fn hello(h: pb::HostHello) -> Hello {
    Hello {
        pods: h.pods.iter().map(snapshot).collect(),
        host_id: h.host_id,
        boot_id: h.boot_id,
        capacity: h.capacity,
        templates: h.templates,
        fence_timeout_ms: h.fence_timeout_ms,
        last_seq: h.last_seq,
        self_fenced: h.self_fenced,
        draining: h.draining,
        host_clock_ms: h.host_clock_ms,
    }
}

fn event(e: pb::PodEvent) -> PodEvent {
    let kind = match e.kind {
        Some(pod_event::Kind::Started(s)) => PodEventKind::Started { pid: s.pid },
        Some(pod_event::Kind::StateChanged(s)) => PodEventKind::StateChanged {
            phase: phase(s.phase),
            message: s.message,
            version: s.version,
        },
        Some(pod_event::Kind::Exited(x)) => PodEventKind::Exited(exit(&x)),
        None => PodEventKind::Unknown,
    };
    PodEvent {
        seq: e.seq,
        task_id: e.task_id,
        pod_id: e.pod_id,
        generation: e.generation,
        kind,
    }
}

/// A message from a host; `None` for one without content (a newer host's
/// message kind this central does not know).
pub fn host_message(m: pb::HostMessage) -> Option<HostMessage> {
    Some(match m.msg? {
        host_message::Msg::Hello(h) => HostMessage::Hello(hello(h)),
        host_message::Msg::Heartbeat(hb) => HostMessage::Heartbeat {
            running_pods: hb.running_pods,
            draining: hb.draining,
            last_seq: hb.last_seq,
            host_clock_ms: hb.host_clock_ms,
        },
        host_message::Msg::PodEvent(e) => HostMessage::PodEvent(event(e)),
    })
}

/// A message to a host, from a central-manager leading at `epoch`.
pub fn central_message(m: CentralMessage, epoch: u64) -> pb::CentralMessage {
    let msg = match m {
        CentralMessage::Hello {
            heartbeat_interval_ms,
            known_boot_id,
            acked_seq,
            central_id,
        } => central_message::Msg::Hello(pb::CentralHello {
            heartbeat_interval_ms,
            known_boot_id,
            acked_seq,
            central_id,
            epoch,
        }),
        CentralMessage::Ping { echo_host_clock_ms } => central_message::Msg::Ping(pb::Ping {
            sent_at: Some(ipa_proto::time::timestamp(std::time::SystemTime::now())),
            echo_host_clock_ms,
        }),
        CentralMessage::Ack(seq) => central_message::Msg::Ack(pb::Ack { seq }),
    };
    pb::CentralMessage { msg: Some(msg) }
}

pub fn start_request(r: StartRequest, epoch: u64) -> pb::HostStartPodRequest {
    pb::HostStartPodRequest {
        task_id: r.task_id,
        pod_id: r.pod_id,
        generation: r.generation,
        template: r.template,
        title: r.title,
        description: r.description,
        metadata: r.metadata.into_iter().collect(),
        correlation_id: r.correlation_id,
        echo_host_clock_ms: r.echo_host_clock_ms,
        host_boot_id: r.host_boot_id,
        epoch,
    }
}

pub fn stop_request(r: StopRequest, epoch: u64) -> pb::HostStopPodRequest {
    pb::HostStopPodRequest {
        task_id: r.task_id,
        pod_id: r.pod_id,
        generation: r.generation,
        grace_ms: r.grace_ms,
        reason: r.reason,
        fence: r.fence,
        epoch,
    }
}

pub fn log_chunk(c: pb::PodLogChunk) -> LogChunk {
    LogChunk {
        data: c.data,
        stream: c.stream,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_values_become_unknown_not_errors() {
        assert_eq!(exit_cause(99), ExitCause::Unspecified);
        assert_eq!(phase(99), None);
        let e = event(pb::PodEvent {
            seq: 3,
            ..Default::default()
        });
        assert_eq!(e.kind, PodEventKind::Unknown);
        assert_eq!(e.seq, 3);
        assert_eq!(host_message(pb::HostMessage { msg: None }), None);
    }

    #[test]
    fn exit_causes_keep_their_protocol_names() {
        for c in [
            pb::ExitCause::Unspecified,
            pb::ExitCause::Exited,
            pb::ExitCause::Stopped,
            pb::ExitCause::Fenced,
            pb::ExitCause::SelfFenced,
            pb::ExitCause::HostShutdown,
            pb::ExitCause::SpawnFailed,
        ] {
            assert_eq!(exit_cause(c as i32).as_str_name(), c.as_str_name());
        }
    }
}
