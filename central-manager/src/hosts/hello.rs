//! What a pod-host says about itself, validated and clamped before any of
//! it is believed: its hello (host id, capacity, templates, fence timeout,
//! pods) and its heartbeats (running pods). A pod-host is a peer, not a
//! trusted component: a bad value here must cost at most that host's
//! usefulness, never a panic, an overflow or an unbounded allocation.

use std::time::Duration;

use super::registry::HostHello;
use crate::domain::TemplateName;
use crate::domain::host::Hello;
pub use crate::domain::host::{MAX_HOST_TEXT_CHARS, clip};

/// Longest host id accepted (the pod-host defaults to the hostname).
pub const MAX_HOST_ID_CHARS: usize = 255;
/// Largest capacity believed; a bigger one is clamped to it.
pub const MAX_CAPACITY: u32 = 100_000;
/// Most templates kept from one hello; the rest are ignored (logged).
pub const MAX_TEMPLATES: usize = 1024;
/// Largest pod-host fence timeout believed (24 h). Central waits for the
/// larger of its own and the host's before declaring that host's pods lost;
/// a host claiming more is treated as if it said this (pod-host flags stop
/// far below it).
pub const MAX_HOST_FENCE_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Checks a hello and turns it into the registry's view of the host.
/// `Err` is why the hello is refused (the session is closed).
pub fn accept_hello(hello: &Hello, endpoint: &str) -> Result<HostHello, String> {
    let host_id = hello.host_id.as_str();
    if host_id.trim().is_empty() {
        return Err("the hello has an empty host_id".into());
    }
    if host_id.chars().count() > MAX_HOST_ID_CHARS || host_id.chars().any(char::is_control) {
        return Err(format!(
            "host_id must be at most {MAX_HOST_ID_CHARS} printable characters"
        ));
    }
    let mut templates: Vec<String> = hello
        .templates
        .iter()
        .filter(|t| TemplateName::parse(t).is_ok_and(|n| n.as_str() == t.as_str()))
        .take(MAX_TEMPLATES)
        .cloned()
        .collect();
    templates.sort();
    templates.dedup();
    if templates.len() != hello.templates.len() {
        tracing::warn!(%host_id, reported = hello.templates.len(), kept = templates.len(),
            "pod-host reported invalid, duplicate or too many template names; ignored those");
    }
    let running = hello.pods.iter().filter(|p| p.alive).count();
    Ok(HostHello {
        host_id: host_id.to_owned(),
        boot_id: hello.boot_id.clone(),
        address: endpoint.to_owned(),
        capacity: clamp_capacity(hello.capacity),
        templates,
        running_pods: clamp_count(running),
        fence_timeout: clamp_fence_timeout(hello.fence_timeout_ms),
        draining: hello.draining,
    })
}

/// A reported capacity, at most [`MAX_CAPACITY`].
pub fn clamp_capacity(capacity: u32) -> u32 {
    capacity.min(MAX_CAPACITY)
}

/// A reported pod count, at most [`MAX_CAPACITY`].
pub fn clamp_count(n: impl TryInto<u32>) -> u32 {
    n.try_into().unwrap_or(u32::MAX).min(MAX_CAPACITY)
}

/// A reported fence timeout, at most [`MAX_HOST_FENCE_TIMEOUT`].
pub fn clamp_fence_timeout(ms: u32) -> Duration {
    Duration::from_millis(u64::from(ms)).min(MAX_HOST_FENCE_TIMEOUT)
}

/// A host-reported time (unix µs), or `fallback` when it is missing or
/// implausible (before 2000 or more than a day ahead of us): host clocks
/// are not trusted to be sane.
pub fn plausible_time(t: Option<i64>, now_us: i64, fallback: i64) -> i64 {
    const Y2000_US: i64 = 946_684_800_000_000;
    const DAY_US: i64 = 86_400_000_000;
    t.filter(|&us| us >= Y2000_US && us <= now_us.saturating_add(DAY_US))
        .unwrap_or(fallback)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> Hello {
        Hello {
            host_id: "h1".into(),
            boot_id: "b".into(),
            capacity: 4,
            templates: vec!["default".into()],
            fence_timeout_ms: 5000,
            ..Default::default()
        }
    }

    #[test]
    fn a_sane_hello_is_kept_as_is() {
        let h = accept_hello(&hello(), "http://x:1").unwrap();
        assert_eq!(h.host_id, "h1");
        assert_eq!(h.address, "http://x:1");
        assert_eq!(h.capacity, 4);
        assert_eq!(h.templates, vec!["default"]);
        assert_eq!(h.fence_timeout, Duration::from_secs(5));
    }

    #[test]
    fn bad_host_ids_are_refused() {
        for id in ["", "  ", "a\nb", &"x".repeat(MAX_HOST_ID_CHARS + 1)] {
            let mut h = hello();
            h.host_id = id.into();
            assert!(accept_hello(&h, "e").is_err(), "{id:?}");
        }
    }

    #[test]
    fn extreme_values_are_clamped() {
        let mut h = hello();
        h.capacity = u32::MAX;
        h.fence_timeout_ms = u32::MAX;
        h.templates = vec!["ok".into(), "bad name".into(), "ok".into(), "../x".into()];
        h.pods = (0..3)
            .map(|_| crate::domain::host::PodSnapshot {
                task_id: String::new(),
                pod_id: String::new(),
                generation: 1,
                pid: 1,
                alive: true,
                phase: None,
                version: 0,
                started_at: None,
            })
            .collect();
        let a = accept_hello(&h, "e").unwrap();
        assert_eq!(a.capacity, MAX_CAPACITY);
        assert_eq!(a.fence_timeout, MAX_HOST_FENCE_TIMEOUT);
        assert_eq!(a.templates, vec!["ok"]);
        assert_eq!(a.running_pods, 3);
        assert_eq!(clamp_count(usize::MAX), MAX_CAPACITY);
    }

    #[test]
    fn implausible_times_fall_back() {
        let now = 1_800_000_000_000_000;
        let ts = |s: i64| s * 1_000_000;
        assert_eq!(
            plausible_time(Some(ts(1_700_000_000)), now, 7),
            1_700_000_000_000_000
        );
        assert_eq!(plausible_time(Some(ts(5)), now, 7), 7);
        assert_eq!(plausible_time(Some(ts(4_000_000_000)), now, 7), 7);
        assert_eq!(plausible_time(None, now, 7), 7);
    }
}
