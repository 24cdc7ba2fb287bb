use super::*;

const MS: Duration = Duration::from_millis(1);

fn timeouts() -> HostTimeouts {
    HostTimeouts {
        unreachable_after: 1500 * MS,
        fence_timeout: 5000 * MS,
        fence_margin: 500 * MS,
        lost_retention: 60_000 * MS,
    }
}

fn hello(id: &str, boot: &str, cap: u32, templates: &[&str]) -> HostHello {
    HostHello {
        host_id: id.into(),
        boot_id: boot.into(),
        address: format!("http://{id}:50052"),
        capacity: cap,
        templates: templates.iter().map(|s| s.to_string()).collect(),
        running_pods: 0,
        fence_timeout: 5000 * MS,
        draining: false,
    }
}

#[test]
fn hello_outcomes() {
    let mut r = Registry::new(timeouts());
    let t0 = Instant::now();
    let w = SystemTime::now();
    assert_eq!(
        r.on_hello(hello("a", "b1", 4, &["default"]), t0, w),
        HelloOutcome::NewHost
    );
    assert_eq!(
        r.on_hello(hello("a", "b1", 4, &["default"]), t0, w),
        HelloOutcome::SameBoot
    );
    assert_eq!(
        r.on_hello(hello("a", "b2", 4, &["default"]), t0, w),
        HelloOutcome::NewBoot {
            previous_boot: "b1".into()
        }
    );
}

#[test]
fn a_start_the_host_already_counts_is_not_counted_twice() {
    let mut r = Registry::new(timeouts());
    r.on_hello(
        hello("a", "b1", 2, &["default"]),
        Instant::now(),
        SystemTime::now(),
    );
    assert_eq!(r.place("default", &[]), Some("a".into()));
    // The host counts the pod from its reservation: a heartbeat sent
    // while the start is in flight already includes it.
    r.set_running("a", 1);
    assert_eq!(r.get("a").unwrap().load(), 1, "one pod, not two");
    r.start_done("a", Some("p1"));
    assert_eq!(r.get("a").unwrap().load(), 1);
    assert!(r.place("default", &[]).is_some(), "the second slot is free");
    r.start_done("a", None);
    // Central's own count leads until a heartbeat catches up.
    r.set_running("a", 0);
    assert_eq!(r.get("a").unwrap().running(), 1);
    // A pod that died before its start was confirmed is not counted.
    r.exited_on_stream("a", "p2");
    r.start_done("a", Some("p2"));
    r.set_running("a", 1);
    assert_eq!(r.get("a").unwrap().load(), 1);
    // Its end frees it in both views.
    r.exited_on_stream("a", "p1");
    assert_eq!(r.get("a").unwrap().load(), 0);
}

#[test]
fn a_confirmed_stop_frees_its_slot_at_once_and_once() {
    let mut r = Registry::new(timeouts());
    r.on_hello(
        hello("a", "b1", 2, &["default"]),
        Instant::now(),
        SystemTime::now(),
    );
    r.set_running("a", 2);
    // StopPod answered: the slot is free before the exit event arrives.
    r.exited_early("a", "p1");
    assert_eq!(r.get("a").unwrap().running_pods, 1);
    // A heartbeat the host sent before the exit still counts the pod.
    r.set_running("a", 2);
    assert_eq!(r.get("a").unwrap().running_pods, 1);
    assert!(r.place("default", &[]).is_some(), "a free slot to place on");
    r.start_done("a", None);
    // The exit event arrives: not counted a second time...
    r.exited_on_stream("a", "p1");
    assert_eq!(r.get("a").unwrap().running_pods, 1);
    // ...and later heartbeats are taken as they are.
    r.set_running("a", 1);
    assert_eq!(r.get("a").unwrap().running_pods, 1);
    // An exit seen only on the stream frees one slot.
    r.exited_on_stream("a", "p2");
    assert_eq!(r.get("a").unwrap().running_pods, 0);
}

#[test]
fn unreachable_exactly_at_the_timeout_and_not_before() {
    let mut r = Registry::new(timeouts());
    let t0 = Instant::now();
    r.on_hello(hello("a", "b1", 4, &["default"]), t0, SystemTime::now());
    assert!(r.tick(t0 + 1499 * MS).is_empty());
    let tr = r.tick(t0 + 1500 * MS);
    assert_eq!(
        tr,
        vec![Transition {
            host_id: "a".into(),
            from: HostState::Ready,
            to: HostState::Unreachable
        }]
    );
    // Not reported twice.
    assert!(r.tick(t0 + 1600 * MS).is_empty());
}

#[test]
fn lost_at_the_larger_fence_timeout_plus_margin() {
    let mut r = Registry::new(timeouts());
    let t0 = Instant::now();
    let mut h = hello("a", "b1", 4, &["default"]);
    // The host's own fence timeout is longer than ours: it wins.
    h.fence_timeout = 8000 * MS;
    r.on_hello(h, t0, SystemTime::now());
    r.tick(t0 + 2000 * MS);
    assert!(r.tick(t0 + 8499 * MS).is_empty());
    let tr = r.tick(t0 + 8500 * MS);
    assert_eq!(tr[0].to, HostState::Lost);
    assert_eq!(r.get("a").unwrap().running_pods, 0);
}

#[test]
fn contact_heals_unreachable_but_not_lost() {
    let mut r = Registry::new(timeouts());
    let t0 = Instant::now();
    let w = SystemTime::now();
    r.on_hello(hello("a", "b1", 4, &["default"]), t0, w);
    r.tick(t0 + 2000 * MS);
    let tr = r.on_contact("a", t0 + 2100 * MS, w, None).unwrap();
    assert_eq!((tr.from, tr.to), (HostState::Unreachable, HostState::Ready));
    // Silence again until lost.
    r.tick(t0 + 2100 * MS + 5500 * MS);
    assert_eq!(r.get("a").unwrap().state, HostState::Lost);
    assert!(r.on_contact("a", t0 + 9000 * MS, w, None).is_none());
    assert_eq!(r.get("a").unwrap().state, HostState::Lost);
    // A hello brings it back.
    r.on_hello(hello("a", "b1", 4, &["default"]), t0 + 9100 * MS, w);
    assert_eq!(r.get("a").unwrap().state, HostState::Ready);
}

#[test]
fn next_deadline_tracks_the_earliest_rule() {
    let mut r = Registry::new(timeouts());
    let t0 = Instant::now();
    assert_eq!(r.next_deadline(), None);
    r.on_hello(hello("a", "b1", 4, &["default"]), t0, SystemTime::now());
    assert_eq!(r.next_deadline(), Some(t0 + 1500 * MS));
    r.tick(t0 + 1500 * MS);
    assert_eq!(r.next_deadline(), Some(t0 + 5500 * MS));
}

#[test]
fn placement_is_least_loaded_ready_with_template_and_capacity() {
    let mut r = Registry::new(timeouts());
    let t0 = Instant::now();
    let w = SystemTime::now();
    r.on_hello(hello("a", "1", 2, &["default"]), t0, w);
    r.on_hello(hello("b", "1", 2, &["default", "gpu"]), t0, w);
    r.on_hello(hello("c", "1", 8, &["other"]), t0, w);
    assert_eq!(r.place("gpu", &[]).as_deref(), Some("b"));
    // b now has 1/2, a has 0/2: a is less loaded.
    assert_eq!(r.place("default", &[]).as_deref(), Some("a"));
    assert_eq!(r.place("default", &[]).as_deref(), Some("a"));
    // a full, b has one slot left.
    assert_eq!(r.place("default", &[]).as_deref(), Some("b"));
    assert_eq!(r.place("default", &[]), None);
    r.start_done("a", None);
    assert_eq!(r.place("default", &["a"]), None);
    assert_eq!(r.place("default", &[]).as_deref(), Some("a"));
    assert_eq!(r.place("missing", &[]), None);
}

#[test]
fn no_placement_on_unreachable_or_draining_hosts() {
    let mut r = Registry::new(timeouts());
    let t0 = Instant::now();
    let w = SystemTime::now();
    r.on_hello(hello("a", "1", 2, &["default"]), t0, w);
    let mut d = hello("b", "1", 2, &["default"]);
    d.draining = true;
    r.on_hello(d, t0 + 1000 * MS, w);
    r.tick(t0 + 1500 * MS);
    assert_eq!(r.get("a").unwrap().state, HostState::Unreachable);
    assert_eq!(r.get("b").unwrap().state, HostState::Draining);
    assert_eq!(r.place("default", &[]), None);
}

#[test]
fn a_host_id_belongs_to_its_endpoint_until_lost() {
    let mut r = Registry::new(timeouts());
    let t0 = Instant::now();
    let w = SystemTime::now();
    r.on_hello(hello("a", "b1", 4, &["default"]), t0, w);
    let held = "http://a:50052";
    // The same endpoint reconnecting is no conflict.
    assert_eq!(r.conflict("a", held, t0), None);
    // Another endpoint is refused and shown, for a while.
    assert_eq!(r.conflict("a", "http://other:1", t0).as_deref(), Some(held));
    assert_eq!(
        r.get("a").unwrap().conflict_endpoint(t0 + 1000 * MS),
        Some("http://other:1")
    );
    assert_eq!(
        r.get("a")
            .unwrap()
            .conflict_endpoint(t0 + CONFLICT_SHOWN_FOR),
        None
    );
    // A reconnect of the holder keeps what was shown.
    r.on_hello(hello("a", "b1", 4, &["default"]), t0 + 10 * MS, w);
    assert!(r.get("a").unwrap().conflict.is_some());
    // Once LOST, the id is free for another endpoint.
    r.tick(t0 + 10 * MS + 6000 * MS);
    assert_eq!(r.get("a").unwrap().state, HostState::Lost);
    assert_eq!(r.conflict("a", "http://other:1", t0 + 7000 * MS), None);
    // Unknown ids and placeholders (no endpoint yet) are free.
    assert_eq!(r.conflict("nobody", "x", t0), None);
    let mut placeholder = hello("p", "", 0, &[]);
    placeholder.address = String::new();
    r.on_hello(placeholder, t0, w);
    assert_eq!(r.conflict("p", "http://p:1", t0), None);
}

#[test]
fn lost_hosts_are_forgotten_after_the_retention_unless_connected() {
    let mut r = Registry::new(timeouts());
    let t0 = Instant::now();
    let w = SystemTime::now();
    r.on_hello(hello("a", "1", 4, &["default"]), t0, w);
    r.on_hello(hello("b", "1", 4, &["default"]), t0, w);
    let lost_at = t0 + 5500 * MS;
    r.tick(lost_at);
    assert_eq!(r.get("a").unwrap().lost_since, Some(lost_at));
    assert_eq!(r.next_deadline(), Some(lost_at + 60_000 * MS));
    assert!(r.forget_lost(lost_at + 59_999 * MS, |_| false).is_empty());
    let gone = r.forget_lost(lost_at + 60_000 * MS, |id| id == "b");
    assert_eq!(gone, vec!["a".to_string()]);
    assert!(r.get("a").is_none());
    assert!(r.get("b").is_some(), "a connected host is kept");
}

#[test]
fn load_and_counts_saturate() {
    let mut r = Registry::new(timeouts());
    let t0 = Instant::now();
    let cap = crate::hosts::hello::clamp_capacity(u32::MAX);
    let mut h = hello("a", "1", cap, &["default"]);
    h.running_pods = u32::MAX;
    r.on_hello(h, t0, SystemTime::now());
    r.set_running("a", u32::MAX);
    assert_eq!(
        r.get("a").unwrap().running_pods,
        crate::hosts::hello::MAX_CAPACITY
    );
    r.start_done("a", Some("p-new"));
    assert_eq!(r.place("default", &[]), None);
    assert!(r.get("a").unwrap().load() >= r.get("a").unwrap().running_pods);
}
