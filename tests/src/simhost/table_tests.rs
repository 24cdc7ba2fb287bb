//! Unit tests of the simulated host's pod table.

use super::*;

const FENCE: Duration = Duration::from_millis(1000);

fn table(capacity: u32) -> Table {
    Table::new(capacity, &["default".to_owned()], FENCE)
}

fn start_req(task: &str, pod: &str, generation: u64) -> pb::HostStartPodRequest {
    pb::HostStartPodRequest {
        task_id: task.into(),
        pod_id: pod.into(),
        generation,
        ..Default::default()
    }
}

fn id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn reason(s: &Status) -> Option<ErrorReason> {
    ipa_proto::reason_of(s)
}

#[test]
fn start_is_idempotent_and_issues_started_then_a_status_line() {
    let mut t = table(4);
    let now = Instant::now();
    let (task, pod) = (id(), id());
    let a = t.start(start_req(&task, &pod, 1), now).unwrap();
    let b = t.start(start_req(&task, &pod, 1), now).unwrap();
    assert_eq!(a, b);
    let ev = t.events_after(0);
    assert_eq!(ev.len(), 2);
    assert!(matches!(ev[0].kind, Some(Kind::Started(_))));
    assert!(matches!(ev[1].kind, Some(Kind::StateChanged(ref s)) if s.version == 1));
    assert_eq!((ev[0].seq, ev[1].seq), (1, 2));
    assert!(t.start(start_req(&id(), &pod, 1), now).is_err());
}

#[test]
fn generations_fence_older_pods_and_refuse_stale_commands() {
    let mut t = table(4);
    let now = Instant::now();
    let task = id();
    let first = id();
    t.start(start_req(&task, &first, 1), now).unwrap();
    t.start(start_req(&task, &id(), 2), now).unwrap();
    assert_eq!(t.live_pods(), 1);
    let old = t.list().into_iter().find(|p| p.pod_id == first).unwrap();
    assert_eq!(
        old.exit.map(|e| e.cause),
        Some(pb::ExitCause::Fenced as i32)
    );
    let stale = t.start(start_req(&task, &id(), 1), now).unwrap_err();
    assert_eq!(reason(&stale), Some(ErrorReason::StaleGeneration));
    let stop = pb::HostStopPodRequest {
        task_id: task.clone(),
        generation: 1,
        ..Default::default()
    };
    assert_eq!(
        reason(&t.stop(&stop, now).unwrap_err()),
        Some(ErrorReason::StaleGeneration)
    );
    // A StopPod at a newer generation is remembered: an older start
    // arriving late is refused.
    let other = id();
    let stop = pb::HostStopPodRequest {
        task_id: other.clone(),
        generation: 5,
        ..Default::default()
    };
    assert_eq!(
        reason(&t.stop(&stop, now).unwrap_err()),
        Some(ErrorReason::PodNotFound)
    );
    let late = t.start(start_req(&other, &id(), 4), now).unwrap_err();
    assert_eq!(reason(&late), Some(ErrorReason::StaleGeneration));
}

#[test]
fn capacity_counts_live_pods() {
    let mut t = table(2);
    let now = Instant::now();
    t.start(start_req(&id(), &id(), 1), now).unwrap();
    t.start(start_req(&id(), &id(), 1), now).unwrap();
    let full = t.start(start_req(&id(), &id(), 1), now).unwrap_err();
    assert_eq!(reason(&full), Some(ErrorReason::NoCapacity));
    assert_eq!(t.crash(1).len(), 1);
    t.start(start_req(&id(), &id(), 1), now).unwrap();
    assert!(t.start(start_req("nope", &id(), 1), now).is_err());
}

#[test]
fn exits_stay_in_the_snapshot_until_acknowledged_and_replay_resumes() {
    let mut t = table(4);
    let now = Instant::now();
    t.start(start_req(&id(), &id(), 1), now).unwrap();
    assert_eq!(t.crash(5).len(), 1);
    assert_eq!(t.last_seq(), 3);
    let hello = t.hello("h");
    assert_eq!(hello.pods.len(), 1);
    assert_eq!(hello.last_seq, 3);
    // The same boot resumes after what central committed.
    let boot = t.boot_id().to_owned();
    assert_eq!(t.replay_from(&boot, 2), 2);
    assert_eq!(t.events_after(2).len(), 1);
    assert_eq!(t.hello("h").pods.len(), 1, "exit not acknowledged yet");
    t.ack(3);
    assert!(t.events_after(0).is_empty());
    assert!(t.hello("h").pods.is_empty());
    // Another boot (or none) gets the whole buffer; acks past the last
    // sequence are clamped.
    assert_eq!(t.replay_from("other", 99), 0);
    t.ack(1_000);
    assert_eq!(t.last_seq(), 3);
}

#[test]
fn pods_self_fence_at_the_timeout_and_when_noticed_late() {
    let mut t = table(4);
    let t0 = Instant::now();
    assert_eq!(t.fence_deadline(), None);
    t.start(start_req(&id(), &id(), 1), t0).unwrap();
    assert_eq!(t.fence_deadline(), Some(t0 + FENCE));
    t.fence_if_due(t0 + FENCE - Duration::from_millis(1));
    assert_eq!(t.live_pods(), 1);
    t.fence_if_due(t0 + FENCE);
    assert_eq!(t.live_pods(), 0);
    assert_eq!(t.stats().self_fenced, 1);
    assert!(t.hello("h").self_fenced);
    assert!(!t.hello("h").self_fenced, "reported once");

    // A message read after a freeze longer than the timeout fences
    // before it counts as contact.
    let t1 = t0 + 2 * FENCE;
    t.start(start_req(&id(), &id(), 1), t1).unwrap();
    t.contact(t1 + 3 * FENCE);
    assert_eq!(t.live_pods(), 0);
    assert_eq!(t.stats().self_fenced, 2);
}

#[test]
fn stop_ends_the_pod_with_the_requested_cause() {
    let mut t = table(4);
    let now = Instant::now();
    let (task, pod) = (id(), id());
    t.start(start_req(&task, &pod, 3), now).unwrap();
    let r = pb::HostStopPodRequest {
        task_id: task.clone(),
        generation: 3,
        fence: true,
        ..Default::default()
    };
    let info = t.stop(&r, now).unwrap();
    assert_eq!(info.state, pb::PodState::Exited as i32);
    assert_eq!(
        info.exit.map(|e| e.cause),
        Some(pb::ExitCause::Fenced as i32)
    );
    // Stopping an exited pod returns its exit.
    assert_eq!(t.stop(&r, now).unwrap().pod_id, pod);
    assert_eq!(t.stats().killed_by_central, 1);
    assert!(t.logs(&task, "").is_some());
    assert!(t.logs(&id(), "").is_none());
}

#[test]
fn the_buffer_drops_state_events_before_exits() {
    let mut t = table(u32::MAX);
    let now = Instant::now();
    t.start(start_req(&id(), &id(), 1), now).unwrap();
    t.crash(1);
    for _ in 0..EVENT_BUFFER / 2 {
        t.start(start_req(&id(), &id(), 1), now).unwrap();
    }
    assert_eq!(t.events.len(), EVENT_BUFFER);
    assert!(matches!(t.events[0].kind, Some(Kind::Exited(_))));
}
